//! The sim's listing: `GET /fapi/v1/exchangeInfo` in Binance's shape, and symbols that start or
//! stop trading while it runs (`--list-after`, `--delist-after`).
//!
//! A symbol listed later is served from the start but trades only from its time on: before, the
//! listing shows it `PENDING_TRADING` (as Binance does ahead of a listing) and its streams send
//! nothing; after, it is `TRADING` and its events flow from its first. A delisted symbol shows
//! `SETTLING` and its streams fall silent, as on Binance.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::market::listing::TRADING;

/// When symbols start and stop trading, from the sim's start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// `--list-after SYM:SEC`: not trading before.
    pub list_after: Vec<(String, Duration)>,
    /// `--delist-after SYM:SEC`: not trading from then on.
    pub delist_after: Vec<(String, Duration)>,
}

/// Status of a symbol listed later, before its time.
const PENDING: &str = "PENDING_TRADING";
/// Status of a delisted perpetual while Binance settles it.
const SETTLING: &str = "SETTLING";
/// Quote assets recognised at the end of a symbol's name, longest first; a name ending in none
/// of them is taken as quoted in USDT, USD-M's usual.
const QUOTES: [&str; 5] = ["FDUSD", "USDT", "USDC", "BTC", "ETH"];

/// Most symbols `--symbols` generates: one pump thread each, and about four times USD-M's
/// ~550, room for a whole-market bench without a machine's worth of threads.
pub const MAX_GENERATED: usize = 2000;

/// `n` (at most [`MAX_GENERATED`]) distinct USDT symbols for a whole-market run: `AAAUSDT`,
/// `AABUSDT`, … (three-letter bases, like many real ones).
pub fn generated_symbols(n: usize) -> Vec<String> {
    let letter = |i: usize| char::from(b'A' + (i % 26) as u8);
    (0..n.min(MAX_GENERATED))
        .map(|i| format!("{}{}{}USDT", letter(i / 676), letter(i / 26), letter(i)))
        .collect()
}

/// A schedule against the clock of a running sim.
pub(crate) struct Calendar {
    start: Instant,
    schedule: Schedule,
}

impl Calendar {
    pub(crate) fn new(schedule: Schedule) -> Calendar {
        Calendar {
            start: Instant::now(),
            schedule,
        }
    }

    /// `TRADING`, `PENDING_TRADING` or `SETTLING` now.
    fn status(&self, symbol: &str) -> &'static str {
        let age = self.start.elapsed();
        let due = |list: &[(String, Duration)]| {
            list.iter()
                .find(|(s, _)| s == symbol)
                .map(|&(_, after)| age >= after)
        };
        if due(&self.schedule.delist_after) == Some(true) {
            SETTLING
        } else if due(&self.schedule.list_after) == Some(false) {
            PENDING
        } else {
            TRADING
        }
    }

    /// Whether `symbol`'s events are generated and sent now.
    pub(crate) fn trades(&self, symbol: &str) -> bool {
        self.status(symbol) == TRADING
    }

    /// The `exchangeInfo` body listing `symbols` (upper case) with their status now.
    pub(crate) fn exchange_info<'a>(
        &self,
        symbols: impl Iterator<Item = &'a str>,
        now_ms: u64,
    ) -> Vec<u8> {
        let mut body = format!(
            r#"{{"timezone":"UTC","serverTime":{now_ms},"futuresType":"U_MARGINED","rateLimits":[],"exchangeFilters":[],"symbols":["#
        );
        for (i, symbol) in symbols.enumerate() {
            let quote = QUOTES
                .iter()
                .find(|q| symbol.len() > q.len() && symbol.ends_with(*q))
                .copied()
                .unwrap_or("USDT");
            let base = symbol.strip_suffix(quote).unwrap_or(symbol);
            let _ = write!(
                body,
                r#"{}{{"symbol":"{symbol}","pair":"{symbol}","contractType":"PERPETUAL","status":"{}","baseAsset":"{base}","quoteAsset":"{quote}","marginAsset":"{quote}","filters":[]}}"#,
                if i == 0 { "" } else { "," },
                self.status(symbol)
            );
        }
        body.push_str("]}");
        body.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::listing::{Filter, parse_listing};
    use crate::market::symbol::Symbol;

    #[test]
    fn generated_symbols_are_distinct_valid_names() {
        let names = generated_symbols(MAX_GENERATED + 1);
        assert_eq!(names.len(), MAX_GENERATED);
        assert_eq!(names[..3], ["AAAUSDT", "AABUSDT", "AACUSDT"]);
        assert_eq!(names[26], "ABAUSDT");
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert!(names.iter().all(|n| Symbol::exact(n).is_ok()));
    }

    #[test]
    fn the_listing_follows_the_schedule_and_parses_as_binance_s() {
        let calendar = Calendar::new(Schedule {
            list_after: vec![("SOLUSDT".into(), Duration::from_secs(3600))],
            delist_after: vec![("ETHBTC".into(), Duration::ZERO)],
        });
        assert!(calendar.trades("BTCUSDT"));
        assert!(!calendar.trades("SOLUSDT"));
        assert!(!calendar.trades("ETHBTC"));
        let body = calendar.exchange_info(["BTCUSDT", "SOLUSDT", "ETHBTC"].into_iter(), 1);
        let listing = parse_listing(std::str::from_utf8(&body).unwrap()).unwrap();
        let statuses: Vec<(&str, &str, &str)> = listing
            .symbols
            .iter()
            .map(|l| (l.symbol.as_str(), l.status.as_str(), l.quote.as_str()))
            .collect();
        assert_eq!(
            statuses,
            [
                ("BTCUSDT", "TRADING", "USDT"),
                ("SOLUSDT", "PENDING_TRADING", "USDT"),
                ("ETHBTC", "SETTLING", "BTC"),
            ]
        );
        assert_eq!(
            Filter::default().select(&listing),
            [Symbol::new("BTCUSDT").unwrap()]
        );
    }
}
