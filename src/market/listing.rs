//! The exchange's listing (`GET /fapi/v1/exchangeInfo`): which symbols trade, and which of them
//! a `--symbol all` run records.
//!
//! Only `symbols[].{symbol, status, quoteAsset, contractType}` is read; everything else of the
//! ~1–2 MB body (filters, order types, rate limits) is skipped unparsed. A body that is not the
//! listing's shape is an error, never a panic; an entry whose name cannot be a [`Symbol`] (Binance
//! lists a few non-ASCII ones) is skipped and counted, so one odd listing cannot cost the others.

use serde::Deserialize;

use crate::market::symbol::Symbol;

/// Largest `exchangeInfo` body read. USD-M's is about 1.5 MB for ~550 symbols; eight times that
/// is still a listing, anything larger is not one, and must not cost its size in memory.
pub const MAX_LISTING_BYTES: u64 = 12 << 20;
/// Most entries taken from one body: Binance lists well under a thousand per market, so ten
/// times that bounds what a wrong or hostile answer can make the recorder subscribe.
pub const MAX_LISTED: usize = 10_000;
/// The status of a symbol that trades; every other (`PENDING_TRADING`, `SETTLING`, `CLOSE`,
/// `DELIVERING`, …) is not recorded, or stops being recorded.
pub const TRADING: &str = "TRADING";

/// One symbol of the listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub symbol: Symbol,
    /// `TRADING`, or why it does not trade.
    pub status: String,
    /// What it is quoted in (`USDT`, `USDC`, …), for `--quote`.
    pub quote: String,
    /// `PERPETUAL`, `CURRENT_QUARTER`, …; empty where the market has none (spot).
    pub contract: String,
}

impl Listed {
    pub fn trades(&self) -> bool {
        self.status == TRADING
    }
}

/// A parsed listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// In the exchange's order.
    pub symbols: Vec<Listed>,
    /// Entries whose name is not a valid [`Symbol`]: skipped.
    pub unusable: usize,
}

/// Why a body is not a listing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    #[error("not an exchangeInfo body: {0}")]
    Shape(String),
    #[error("more than {MAX_LISTED} symbols listed")]
    TooMany,
}

#[derive(Deserialize)]
struct Body {
    symbols: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    symbol: String,
    status: String,
    #[serde(rename = "quoteAsset", default)]
    quote_asset: String,
    #[serde(rename = "contractType", default)]
    contract_type: String,
}

/// Parses an `exchangeInfo` body.
pub fn parse_listing(body: &str) -> Result<Listing, ListingError> {
    let body: Body = serde_json::from_str(body).map_err(|e| ListingError::Shape(e.to_string()))?;
    if body.symbols.len() > MAX_LISTED {
        return Err(ListingError::TooMany);
    }
    let mut listing = Listing::default();
    for entry in body.symbols {
        match Symbol::exact(&entry.symbol) {
            Ok(symbol) => listing.symbols.push(Listed {
                symbol,
                status: entry.status,
                quote: entry.quote_asset,
                contract: entry.contract_type,
            }),
            Err(_) => listing.unusable += 1,
        }
    }
    Ok(listing)
}

/// Which trading symbols a `--symbol all` run records: all, or those quoted in `quote` and/or
/// whose name matches `pattern` (a glob such as `*USDT` or `BTC*`).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// `--quote`: upper case.
    pub quote: Option<String>,
    /// `--symbol-pattern`: matched against the upper-case name.
    pub pattern: Option<glob::Pattern>,
}

impl Filter {
    /// Whether `listed` trades and passes the filter.
    pub fn admits(&self, listed: &Listed) -> bool {
        listed.trades()
            && self.quote.as_ref().is_none_or(|q| *q == listed.quote)
            && self
                .pattern
                .as_ref()
                .is_none_or(|p| p.matches(listed.symbol.as_str()))
    }

    /// The symbols of `listing` to record, in the exchange's order.
    pub fn select(&self, listing: &Listing) -> Vec<Symbol> {
        listing
            .symbols
            .iter()
            .filter(|l| self.admits(l))
            .map(|l| l.symbol.clone())
            .collect()
    }
}

impl std::fmt::Display for Filter {
    /// `quote USDT, pattern BTC*`, or `every symbol`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .quote
            .iter()
            .map(|q| format!("quote {q}"))
            .chain(self.pattern.iter().map(|p| format!("pattern {p}")))
            .collect();
        if parts.is_empty() {
            f.write_str("every symbol")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of Binance's answer, two entries cut from a real one, with the fields obrec
    /// skips left in.
    const REAL_SHAPED: &str = r#"{"timezone":"UTC","serverTime":1764480000000,"futuresType":"U_MARGINED",
        "rateLimits":[{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":2400}],
        "exchangeFilters":[],"assets":[{"asset":"USDT","marginAvailable":true,"autoAssetExchange":"-10000"}],
        "symbols":[
          {"symbol":"BTCUSDT","pair":"BTCUSDT","contractType":"PERPETUAL","deliveryDate":4133404800000,
           "onboardDate":1569398400000,"status":"TRADING","maintMarginPercent":"2.5000","requiredMarginPercent":"5.0000",
           "baseAsset":"BTC","quoteAsset":"USDT","marginAsset":"USDT","pricePrecision":2,"quantityPrecision":3,
           "filters":[{"filterType":"PRICE_FILTER","maxPrice":"4529764","minPrice":"556.80","tickSize":"0.10"}],
           "orderTypes":["LIMIT","MARKET"],"timeInForce":["GTC","IOC"],"permissionSets":["GRID","COPY"]},
          {"symbol":"ETHBTC","pair":"ETHBTC","contractType":"PERPETUAL","status":"SETTLING",
           "baseAsset":"ETH","quoteAsset":"BTC","filters":[]},
          {"symbol":"ETHUSDC","pair":"ETHUSDC","contractType":"PERPETUAL","status":"TRADING",
           "baseAsset":"ETH","quoteAsset":"USDC"},
          {"symbol":"币安人生USDT","pair":"币安人生USDT","contractType":"PERPETUAL","status":"TRADING",
           "baseAsset":"币安人生","quoteAsset":"USDT"},
          {"symbol":"BTCUSDT_260327","contractType":"CURRENT_QUARTER","status":"TRADING","quoteAsset":"USDT"}
        ]}"#;

    #[test]
    fn a_real_shaped_body_lists_its_symbols_and_skips_unusable_names() {
        let listing = parse_listing(REAL_SHAPED).unwrap();
        let names: Vec<&str> = listing.symbols.iter().map(|l| l.symbol.as_str()).collect();
        assert_eq!(names, ["BTCUSDT", "ETHBTC", "ETHUSDC", "BTCUSDT_260327"]);
        assert_eq!(listing.unusable, 1);
        assert_eq!(listing.symbols[0].quote, "USDT");
        assert_eq!(listing.symbols[0].contract, "PERPETUAL");
        assert!(!listing.symbols[1].trades());
        let all = Filter::default();
        assert_eq!(
            all.select(&listing),
            ["BTCUSDT", "ETHUSDC", "BTCUSDT_260327"].map(|s| Symbol::new(s).unwrap())
        );
        let usdt = Filter {
            quote: Some("USDT".into()),
            pattern: None,
        };
        assert_eq!(usdt.select(&listing).len(), 2);
        let perpetual_usdt = Filter {
            pattern: Some(glob::Pattern::new("*USDT").unwrap()),
            ..usdt
        };
        assert_eq!(
            perpetual_usdt.select(&listing),
            [Symbol::new("BTCUSDT").unwrap()]
        );
        assert_eq!(perpetual_usdt.to_string(), "quote USDT, pattern *USDT");
        assert_eq!(all.to_string(), "every symbol");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let deep = "[".repeat(100_000);
        let bad = [
            "",
            "null",
            "not json",
            "{}",
            r#"{"symbols":{}}"#,
            r#"{"symbols":[{"symbol":"BTCUSDT"}]}"#,
            r#"{"symbols":[{"symbol":7,"status":"TRADING"}]}"#,
            r#"{"symbols":[{"symbol":"BTCUSDT","status":"TRADING"}"#,
            "\u{0}\u{ffff}",
            deep.as_str(),
        ];
        for body in bad {
            assert!(
                matches!(parse_listing(body), Err(ListingError::Shape(_))),
                "{body:.40}"
            );
        }
        // Lowercase names are not Binance's spelling: skipped, not folded into another symbol.
        let odd = r#"{"symbols":[{"symbol":"btcusdt","status":"TRADING"},{"symbol":"","status":"TRADING"}]}"#;
        assert_eq!(
            parse_listing(odd).unwrap(),
            Listing {
                symbols: vec![],
                unusable: 2
            }
        );
        let entry = r#"{"symbol":"BTCUSDT","status":"TRADING"}"#;
        let many = format!(
            r#"{{"symbols":[{}]}}"#,
            vec![entry; MAX_LISTED + 1].join(",")
        );
        assert_eq!(parse_listing(&many), Err(ListingError::TooMany));
    }
}
