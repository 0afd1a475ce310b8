//! Tardis' `trades` and `quotes` datasets from the streams recorded beside the book.
//!
//! * `trades` (`exchange,symbol,timestamp,local_timestamp,id,side,price,amount`) from trade
//!   files, one row per trade, `id` its `t`. A symbol without trade files among the inputs gets
//!   its trades from its aggTrade files instead, one row per aggregate, `id` its `a`; when both
//!   are given, the aggTrade files are left out (both would name the same file). `side` is the
//!   taker's: `m` (the buyer is the maker) means `sell`. Backfilled lines (fetched over REST
//!   after the stream lost them) are real trades and are written too, `local_timestamp` being
//!   their receipt.
//! * `quotes` (`exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount`)
//!   from bookTicker files, one row per event: the exchange's best bid and ask, where Tardis
//!   derives its quotes from its book (its `book_ticker` dataset is the exchange's own).
//!
//! `timestamp` is the event time `E` in µs (a backfilled trade has only its trade time `T`),
//! as in Tardis' Binance datasets; `local_timestamp` the receipt in µs. Prices and amounts are
//! the payload's strings, copied. Rows follow the files (name order, which is time order) and
//! the lines in them, which is receipt order; an event a replacement connection delivered again
//! (its [`Tape`] says duplicate) is written once. Meta lines (`serverShutdown`) are passed over.
//! Files are per symbol and UTC day of receipt, as the book datasets.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use serde::Deserialize;

use super::super::export::utc_day;
use super::super::files::{GzLines, OutId};
use super::super::{Outcome, check_stream, check_symbol};
use super::{Dataset, Halt, NS_PER_US, Row, Sink, Times, US_PER_MS, damage};
use crate::error::Result;
use crate::market::kind::{Check, Kind, KindIds, Tape};
use crate::store::line::{KindLine, is_meta, parse_kind};
use crate::store::names::{FileKind, classify};
use crate::util::shutdown::Shutdown;

/// Why lines or files were left out, as the summary names them.
const SKIP_DUPLICATE: &str = "events a replacement connection delivered again";
const SKIP_AGG_FILES: &str = "aggTrade files (their symbol's trade files give its trades)";
const SKIP_OTHER_FILES: &str = "markPrice and forceOrder files (no Tardis dataset from them)";

/// The dataset a kind's events are rows of.
fn dataset_of(kind: Kind) -> Option<Dataset> {
    match kind {
        Kind::Trade | Kind::AggTrade => Some(Dataset::Trades),
        Kind::BookTicker => Some(Dataset::Quotes),
        Kind::MarkPrice | Kind::ForceOrder => None,
    }
}

/// The fields of a trade or aggTrade payload a row needs, as the stream sends them or (a
/// backfilled line) as the REST item spells them.
#[derive(Deserialize)]
struct TradeFields<'a> {
    #[serde(borrow, alias = "price")]
    p: &'a str,
    #[serde(borrow, alias = "qty")]
    q: &'a str,
    #[serde(alias = "isBuyerMaker")]
    m: bool,
}

/// The fields of a bookTicker payload a row needs.
#[allow(non_snake_case)]
#[derive(Deserialize)]
struct QuoteFields<'a> {
    #[serde(borrow)]
    a: &'a str,
    #[serde(borrow)]
    A: &'a str,
    #[serde(borrow)]
    b: &'a str,
    #[serde(borrow)]
    B: &'a str,
}

/// The stream files among `files` written as `trades` and `quotes` rows into `sink`; after
/// each file, `done(path)` (the progress bar).
pub(super) fn write_streams<S: Sink>(
    files: &[PathBuf],
    sink: &mut S,
    outcome: &mut Outcome,
    shutdown: &Shutdown,
    mut done: impl FnMut(&PathBuf),
) -> Result<()> {
    let streams: Vec<(&PathBuf, &str, Kind)> = files
        .iter()
        .filter_map(|p| match classify(p) {
            Some((symbol, FileKind::Stream(kind))) => Some((p, symbol, kind)),
            _ => None,
        })
        .collect();
    let with_trades: BTreeSet<&str> = streams
        .iter()
        .filter(|(_, _, kind)| *kind == Kind::Trade)
        .map(|(_, symbol, _)| *symbol)
        .collect();
    let mut rows = Rows {
        sink,
        days: HashMap::new(),
        tapes: HashMap::new(),
    };
    for (path, symbol, kind) in streams {
        let skip = match dataset_of(kind) {
            None => Some(SKIP_OTHER_FILES),
            Some(_) if kind == Kind::AggTrade && with_trades.contains(symbol) => {
                Some(SKIP_AGG_FILES)
            }
            Some(_) => None,
        };
        if let Some(why) = skip {
            *outcome.skipped.entry(why.to_string()).or_default() += 1;
            done(path);
            continue;
        }
        let mut lines = GzLines::open(path, shutdown)?;
        let mut bytes = Vec::new();
        while lines.next_line(&mut bytes, outcome)? {
            if is_meta(&bytes) {
                continue;
            }
            let written = parse_kind(&bytes)
                .and_then(|line| {
                    check_symbol(line.symbol)?;
                    check_stream(line.stream)?;
                    Ok(line)
                })
                .map_err(Halt::Damage)
                .and_then(|line| rows.event(kind, &line));
            match written {
                Ok(true) => {}
                Ok(false) => *outcome.skipped.entry(SKIP_DUPLICATE.into()).or_default() += 1,
                Err(Halt::Damage(what)) => {
                    lines.bad_line(&what, outcome)?;
                    break;
                }
                Err(Halt::Fail(e)) => return Err(e),
            }
        }
        // Nothing of this input stays only in memory while the next one is read.
        for out in rows.days.values().map(|d| d.out) {
            rows.sink.flush(out)?;
        }
        done(path);
    }
    Ok(())
}

/// A symbol's file of one dataset and UTC day.
struct DayFile {
    day: u64,
    out: OutId,
}

struct Rows<'s, S> {
    sink: &'s mut S,
    days: HashMap<(String, Dataset), DayFile>,
    /// Per symbol and kind, the tape that tells a replacement's overlap.
    tapes: HashMap<(String, Kind), Tape>,
}

impl<S: Sink> Rows<'_, S> {
    /// Writes the row of one event; false for an event already written (a duplicate).
    fn event(&mut self, kind: Kind, line: &KindLine) -> std::result::Result<bool, Halt> {
        let fits = matches!(
            (kind, line.ids),
            (Kind::Trade, KindIds::Trade { .. })
                | (Kind::AggTrade, KindIds::AggTrade { .. })
                | (Kind::BookTicker, KindIds::BookTicker { .. })
        );
        if !fits {
            return Err(damage(format!(
                "not a {kind} line (a {kind} file holds only those)"
            )));
        }
        // A backfilled trade fills a gap the tape already passed: it is never a duplicate.
        if !line.backfill {
            let tape = self
                .tapes
                .entry((line.symbol.to_string(), kind))
                .or_insert_with(|| Tape::new(kind));
            if tape.check(line.ids, line.event_ms, line.conn) == Check::Duplicate {
                return Ok(false);
            }
        }
        let times = Times {
            exchange_us: line.event_ms.saturating_mul(US_PER_MS),
            local_us: line.recv_ns / NS_PER_US,
        };
        let (dataset, row) = match line.ids {
            KindIds::Trade { t: id } | KindIds::AggTrade { a: id, .. } => {
                let trade: TradeFields = serde_json::from_str(line.data)
                    .map_err(|e| damage(format!("bad {kind}: {e}")))?;
                let row = Row::Trade {
                    times,
                    id,
                    side: if trade.m { "sell" } else { "buy" },
                    price: trade.p,
                    amount: trade.q,
                };
                (Dataset::Trades, row)
            }
            KindIds::BookTicker { .. } => {
                let quote: QuoteFields = serde_json::from_str(line.data)
                    .map_err(|e| damage(format!("bad {kind}: {e}")))?;
                let row = Row::Quote {
                    times,
                    ask_amount: quote.A,
                    ask_price: quote.a,
                    bid_price: quote.b,
                    bid_amount: quote.B,
                };
                (Dataset::Quotes, row)
            }
            KindIds::None => unreachable!("checked to fit a kind with ids"),
        };
        let out = self.file(line.symbol, dataset, line.recv_ns)?;
        self.sink.row(out, row)?;
        Ok(true)
    }

    /// The symbol's file of `dataset` for a row received at `recv_ns`: the current one, or a
    /// new day's. Rows that arrive late across midnight stay in the newer file.
    fn file(&mut self, symbol: &str, dataset: Dataset, recv_ns: u64) -> Result<OutId> {
        let (day, date) = utc_day(recv_ns);
        let key = (symbol.to_string(), dataset);
        match self.days.get(&key) {
            Some(current) if current.day >= day => return Ok(current.out),
            Some(current) => self.sink.close(current.out)?,
            None => {}
        }
        let out = self.sink.open(dataset, symbol, date)?;
        self.days.insert(key, DayFile { day, out });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backfilled trade is the REST item, whose keys are spelled out; the stream's are letters.
    #[test]
    fn trade_fields_are_read_from_stream_and_rest_payloads() {
        let ws = r#"{"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":5266583935,"p":"61800.30","q":"0.006","X":"MARKET","m":false}"#;
        let rest = r#"{"id":5266583935,"price":"61800.30","qty":"0.006","quoteQty":"370.80","time":1723161256322,"isBuyerMaker":true}"#;
        let ws: TradeFields = serde_json::from_str(ws).unwrap();
        let rest: TradeFields = serde_json::from_str(rest).unwrap();
        assert_eq!((ws.p, ws.q, ws.m), ("61800.30", "0.006", false));
        assert_eq!((rest.p, rest.q, rest.m), ("61800.30", "0.006", true));
    }
}
