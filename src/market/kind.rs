//! The streams recorded next to the book: trades, aggregate trades, best bid and ask, mark price
//! and liquidations. One table says, for each kind, its name, the route Binance serves it on, its
//! event type, the ids its events carry, and how a missing event shows: the [`Tape`] state machine
//! that the live recorder and `obrec replay` both run.
//!
//! Since 2026-04-23 Binance serves USD-M streams on two routes: `/public` (depth, bookTicker,
//! trade) and `/market` (aggTrade, markPrice, forceOrder and the rest). A stream asked for on the
//! wrong route is acknowledged and then never sent, so the route is part of the kind.

use std::fmt;
use std::str::FromStr;

use crate::market::sequence::{Chain, Ids, Verdict};
use crate::market::symbol::Symbol;

/// A stream kind recorded beside the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `<s>@trade`: every trade, ids `t` dense per symbol.
    Trade,
    /// `<s>@aggTrade`: trades at one price and taker aggregated, ids `a` dense per symbol and
    /// covering trade ids `f..=l`.
    AggTrade,
    /// `<s>@bookTicker`: best bid and ask on every change, `u` rising (the depth update id).
    BookTicker,
    /// `<s>@markPrice@1s`: mark price, index and funding once a second.
    MarkPrice,
    /// `<s>@forceOrder`: liquidations, at most one a second per symbol, often none for hours.
    ForceOrder,
}

/// The routed endpoints of Binance's USD-M stream server since 2026.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// `/public`: high-frequency data (depth, bookTicker, trade). A path without a route is
    /// served as this one.
    Public,
    /// `/market`: regular market data (aggTrade, markPrice, forceOrder, klines, tickers).
    Market,
}

impl Route {
    pub const ALL: [Route; 2] = [Route::Public, Route::Market];

    /// The path segment, `public` or `market`.
    pub fn path(self) -> &'static str {
        match self {
            Route::Public => "public",
            Route::Market => "market",
        }
    }

    /// The route a request path names (`/market/stream`, `/public/ws/…`); a path without one is
    /// served as `/public`, as Binance does.
    pub fn of_path(path: &str) -> Route {
        let first = path.trim_start_matches('/').split('/').next();
        if first == Some(Route::Market.path()) {
            Route::Market
        } else {
            Route::Public
        }
    }
}

/// The mark price stream's cadence: the `@1s` stream obrec subscribes to.
pub const MARK_PRICE_EVERY_MS: u64 = 1_000;

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Trade,
        Kind::AggTrade,
        Kind::BookTicker,
        Kind::MarkPrice,
        Kind::ForceOrder,
    ];

    /// The name in `--streams`, in file names and in metrics: Binance's own stream suffix.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Trade => "trade",
            Kind::AggTrade => "aggTrade",
            Kind::BookTicker => "bookTicker",
            Kind::MarkPrice => "markPrice",
            Kind::ForceOrder => "forceOrder",
        }
    }

    /// Where Binance serves it.
    pub fn route(self) -> Route {
        match self {
            Kind::Trade | Kind::BookTicker => Route::Public,
            Kind::AggTrade | Kind::MarkPrice | Kind::ForceOrder => Route::Market,
        }
    }

    /// The payload's `e`.
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::MarkPrice => "markPriceUpdate",
            kind => kind.name(),
        }
    }

    /// The kind whose payloads say `"e":<event>`.
    pub fn of_event(event: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.event_type() == event)
    }

    /// The combined-stream name obrec subscribes to, e.g. `btcusdt@markPrice@1s`.
    pub fn stream(self, symbol: &Symbol) -> String {
        let speed = if self == Kind::MarkPrice { "@1s" } else { "" };
        format!("{}@{}{speed}", symbol.lower(), self.name())
    }

    /// Splits a stream name of this family into its lowercase symbol and kind; the 3 s mark price
    /// stream (`@markPrice`, no suffix) is read as mark price too. `None` for any other stream.
    pub fn parse_stream(name: &str) -> Option<(&str, Kind)> {
        let (symbol, rest) = name.split_once('@')?;
        if symbol.is_empty() || symbol.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let kind = match rest {
            "markPrice@1s" => Kind::MarkPrice,
            _ => Kind::ALL.into_iter().find(|k| k.name() == rest)?,
        };
        Some((symbol, kind))
    }

    /// How many times the depth stream's first-frame window this kind gets before a silent
    /// stream is called silent. Depth, bookTicker and mark price push several times a second on
    /// any listed symbol; a thin symbol can go most of a minute without a trade, and five times
    /// the default 10 s still names a trade stream on the wrong route within a minute;
    /// liquidations come hours apart, so silence only ever says "none came" and is judged late.
    pub fn patience(self) -> u32 {
        match self {
            Kind::BookTicker | Kind::MarkPrice => 1,
            Kind::Trade | Kind::AggTrade => 5,
            Kind::ForceOrder => 360,
        }
    }

    /// Whether a missing event shows as a gap. Liquidations carry no ids and no cadence: only
    /// their liveness is known.
    pub fn has_gaps(self) -> bool {
        self != Kind::ForceOrder
    }

    /// Whether a line's ids are this kind's: a line that is not is damage, not an event.
    pub fn fits(self, ids: KindIds) -> bool {
        matches!(
            (self, ids),
            (Kind::Trade, KindIds::Trade { .. })
                | (Kind::AggTrade, KindIds::AggTrade { .. })
                | (Kind::BookTicker, KindIds::BookTicker { .. })
                | (Kind::MarkPrice | Kind::ForceOrder, KindIds::None)
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("{s:?} is not a stream kind: use {}", names.join(", "))
            })
    }
}

/// What `--streams` asks for: depth or not, and the kinds beside it, each once, in the order
/// given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub depth: bool,
    pub kinds: Vec<Kind>,
}

impl Default for Selection {
    /// Depth only: what obrec recorded before it knew other kinds.
    fn default() -> Selection {
        Selection {
            depth: true,
            kinds: Vec::new(),
        }
    }
}

impl FromStr for Selection {
    type Err = String;

    /// `depth,trade,bookTicker`: comma-separated, `depth` for the book (partial or diff, as the
    /// run says), kinds by their names.
    fn from_str(s: &str) -> Result<Selection, String> {
        let mut selection = Selection {
            depth: false,
            kinds: Vec::new(),
        };
        for name in s.split(',').map(str::trim) {
            if name == "depth" {
                selection.depth = true;
                continue;
            }
            let kind: Kind = name.parse().map_err(|e: String| format!("{e}, or depth"))?;
            if !selection.kinds.contains(&kind) {
                selection.kinds.push(kind);
            }
        }
        Ok(selection)
    }
}

/// The ids an event carries at top level: what its line repeats before `latency_event_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindIds {
    /// `t`, the trade id.
    Trade { t: u64 },
    /// `a`, the aggregate id, and `f..=l`, the trade ids it covers.
    AggTrade { a: u64, f: u64, l: u64 },
    /// `u`, the order book update id of the change.
    BookTicker { u: u64 },
    /// Mark price and liquidations: none; the event time is all there is.
    None,
}

/// What the tape says about one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The first event of the stream.
    Start,
    /// Follows the previous event.
    Continuous,
    /// Another connection already delivered this event (a replacement's overlap): skip it.
    Duplicate,
    /// Events are missing between the previous one and this: ids `from..=to` (trade `t`,
    /// aggTrade `a`), or for mark price the milliseconds `from..to` between two events more than
    /// twice the cadence apart. `reconnect`: the two events came on different connections, so
    /// the gap is part of a reconnect, not a break.
    Gap { from: u64, to: u64, reconnect: bool },
    /// aggTrade only: the aggregate ids follow, but the trade ids they cover skip `from..=to`:
    /// trades the exchange lost before aggregating, which no REST call returns.
    Skipped { from: u64, to: u64, reconnect: bool },
    /// The id or time went back (or, for bookTicker, did not rise): the exchange reset it or sent
    /// a bogus one. A new chain starts.
    Back {
        last: u64,
        got: u64,
        reconnect: bool,
    },
}

impl Check {
    /// True for a discontinuity on one connection: the exchange lost something.
    pub fn is_break(self) -> bool {
        matches!(
            self,
            Check::Gap {
                reconnect: false,
                ..
            } | Check::Skipped {
                reconnect: false,
                ..
            } | Check::Back {
                reconnect: false,
                ..
            }
        )
    }

    /// True for a discontinuity across a change of connection.
    pub fn is_reconnect_gap(self) -> bool {
        matches!(
            self,
            Check::Gap {
                reconnect: true,
                ..
            } | Check::Skipped {
                reconnect: true,
                ..
            } | Check::Back {
                reconnect: true,
                ..
            }
        )
    }

    /// How many ids a gap lacks: trade or aggregate ids (0 for time gaps, which have no count).
    pub fn missing_ids(self, kind: Kind) -> u64 {
        match self {
            Check::Gap { from, to, .. } if kind != Kind::MarkPrice => to - from + 1,
            Check::Skipped { from, to, .. } => to - from + 1,
            _ => 0,
        }
    }
}

impl fmt::Display for Check {
    /// What was lost, for a log line or a notice: `ids 12..=13 missing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Check::Start => f.write_str("first event"),
            Check::Continuous => f.write_str("follows"),
            Check::Duplicate => f.write_str("delivered twice"),
            Check::Gap { from, to, .. } => write!(f, "ids {from}..={to} missing"),
            Check::Skipped { from, to, .. } => {
                write!(
                    f,
                    "trade ids {from}..={to} missing under aggregates that follow"
                )
            }
            Check::Back { last, got, .. } => write!(f, "went back from {last} to {got}"),
        }
    }
}

/// Completeness of one stream beside the book, across the connections that deliver it.
///
/// Every rule is the depth [`Chain`] over ids built for the kind, so duplicates from overlapping
/// connections and reconnect gaps are told apart the same way for every stream: trade `t == prev
/// t + 1`; aggTrade `a == prev a + 1` and `f == prev l + 1`; bookTicker `u` strictly rising;
/// mark price no more than twice its cadence between events; liquidations rising in time, with no
/// gap rule.
#[derive(Clone, Debug)]
pub struct Tape {
    kind: Kind,
    chain: Chain,
    /// aggTrade: the `l` of the last accepted event, for the `f == prev l + 1` rule.
    last_l: Option<u64>,
}

impl Tape {
    pub fn new(kind: Kind) -> Tape {
        Tape {
            kind,
            chain: Chain::new(),
            last_l: None,
        }
    }

    /// Classifies an event delivered by `conn`, and (unless a duplicate) makes it the last one.
    pub fn check(&mut self, ids: KindIds, event_ms: u64, conn: u64) -> Check {
        let last = self.chain.last_u();
        // The position on the chain, and what "the previous one" must be for it to follow.
        let (pos, follows) = match (self.kind, ids) {
            (Kind::Trade, KindIds::Trade { t }) => (t, t.checked_sub(1)),
            (Kind::AggTrade, KindIds::AggTrade { a, .. }) => (a, a.checked_sub(1)),
            (Kind::BookTicker, KindIds::BookTicker { u }) => (u, last.filter(|&l| u > l)),
            (Kind::MarkPrice, _) => (
                event_ms,
                last.filter(|&l| event_ms > l && event_ms - l <= 2 * MARK_PRICE_EVERY_MS),
            ),
            _ => (event_ms, last.filter(|&l| event_ms > l)),
        };
        // `prev` that cannot equal the last position unless the rule holds.
        let prev = follows.unwrap_or(u64::MAX);
        let verdict = self.chain.check(
            Ids {
                first: pos,
                last: pos,
                prev,
            },
            conn,
        );
        let reconnect = matches!(verdict, Verdict::Reconnected { .. });
        let check = match (verdict, last) {
            (Verdict::Start, _) => Check::Start,
            (Verdict::Continuous, _) => self.trades_follow(ids),
            (Verdict::Duplicate, _) => return Check::Duplicate,
            (_, Some(last)) if pos <= last => Check::Back {
                last,
                got: pos,
                reconnect,
            },
            (_, Some(last)) if self.kind == Kind::MarkPrice => Check::Gap {
                from: last,
                to: pos,
                reconnect,
            },
            (_, Some(last)) => Check::Gap {
                from: last + 1,
                to: pos - 1,
                reconnect,
            },
            (_, None) => Check::Start,
        };
        if let KindIds::AggTrade { l, .. } = ids {
            self.last_l = Some(l);
        }
        check
    }

    /// An aggTrade whose aggregate id follows: `Skipped` when the trade ids it covers do not
    /// follow the previous one's, else continuous. Never a reconnect gap: the aggregates
    /// themselves follow, whichever connection brought them.
    fn trades_follow(&self, ids: KindIds) -> Check {
        match (ids, self.last_l) {
            (KindIds::AggTrade { f, .. }, Some(l)) if f > l + 1 => Check::Skipped {
                from: l + 1,
                to: f - 1,
                reconnect: false,
            },
            _ => Check::Continuous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_routes_and_streams_follow_binance() {
        let btc = Symbol::new("BTCUSDT").unwrap();
        let cases = [
            (Kind::Trade, "btcusdt@trade", Route::Public, "trade"),
            (
                Kind::AggTrade,
                "btcusdt@aggTrade",
                Route::Market,
                "aggTrade",
            ),
            (
                Kind::BookTicker,
                "btcusdt@bookTicker",
                Route::Public,
                "bookTicker",
            ),
            (
                Kind::MarkPrice,
                "btcusdt@markPrice@1s",
                Route::Market,
                "markPriceUpdate",
            ),
            (
                Kind::ForceOrder,
                "btcusdt@forceOrder",
                Route::Market,
                "forceOrder",
            ),
        ];
        for (kind, stream, route, event) in cases {
            assert_eq!(kind.stream(&btc), stream);
            assert_eq!(kind.route(), route);
            assert_eq!(Kind::of_event(event), Some(kind));
            assert_eq!(Kind::parse_stream(stream), Some(("btcusdt", kind)));
            assert_eq!(kind.name().parse::<Kind>(), Ok(kind));
        }
        assert_eq!(
            Kind::parse_stream("btcusdt@markPrice"),
            Some(("btcusdt", Kind::MarkPrice))
        );
        for other in [
            "btcusdt@depth",
            "BTCUSDT@trade",
            "@trade",
            "btcusdt@kline_1m",
        ] {
            assert_eq!(Kind::parse_stream(other), None, "{other}");
        }
        assert!("depth".parse::<Kind>().is_err());
        assert!("Trade".parse::<Kind>().is_err());
    }

    #[test]
    fn selections_name_depth_and_kinds_once() {
        assert_eq!(
            "depth, trade,bookTicker,trade".parse::<Selection>(),
            Ok(Selection {
                depth: true,
                kinds: vec![Kind::Trade, Kind::BookTicker]
            })
        );
        assert_eq!(
            "aggTrade".parse::<Selection>(),
            Ok(Selection {
                depth: false,
                kinds: vec![Kind::AggTrade]
            })
        );
        for bad in ["", "depth,", "trades", "depth5"] {
            let e = bad.parse::<Selection>().unwrap_err();
            assert!(e.contains("or depth"), "{bad}: {e}");
        }
    }

    #[test]
    fn routes_are_read_from_paths() {
        for (path, route) in [
            ("/market/stream", Route::Market),
            ("/market/ws/btcusdt@aggTrade", Route::Market),
            ("/public/stream", Route::Public),
            ("/stream", Route::Public),
            ("/ws/btcusdt@trade", Route::Public),
            ("/", Route::Public),
            ("/marketx/stream", Route::Public),
        ] {
            assert_eq!(Route::of_path(path), route, "{path}");
        }
    }

    fn run(kind: Kind, events: &[(KindIds, u64, u64)]) -> Vec<Check> {
        let mut tape = Tape::new(kind);
        events
            .iter()
            .map(|&(ids, ms, conn)| tape.check(ids, ms, conn))
            .collect()
    }

    #[test]
    fn trades_are_dense() {
        let t = |t| (KindIds::Trade { t }, 0, 1);
        let on = |t, conn| (KindIds::Trade { t }, 0, conn);
        assert_eq!(
            run(Kind::Trade, &[t(10), t(11), t(14), t(15)]),
            [
                Check::Start,
                Check::Continuous,
                Check::Gap {
                    from: 12,
                    to: 13,
                    reconnect: false
                },
                Check::Continuous
            ]
        );
        // A replacement's overlap, then a reconnect that lost trade 13.
        assert_eq!(
            run(
                Kind::Trade,
                &[t(10), t(11), on(11, 2), on(12, 2), on(14, 3)]
            ),
            [
                Check::Start,
                Check::Continuous,
                Check::Duplicate,
                Check::Continuous,
                Check::Gap {
                    from: 13,
                    to: 13,
                    reconnect: true
                }
            ]
        );
        let back = run(Kind::Trade, &[t(10), t(5), t(6)]);
        assert_eq!(
            back[1],
            Check::Back {
                last: 10,
                got: 5,
                reconnect: false
            }
        );
        assert_eq!(back[2], Check::Continuous, "a new chain starts");
        assert_eq!(
            Check::Gap {
                from: 12,
                to: 13,
                reconnect: false
            }
            .missing_ids(Kind::Trade),
            2
        );
    }

    #[test]
    fn aggregate_trades_chain_both_ids() {
        let agg = |a, f, l| (KindIds::AggTrade { a, f, l }, 0, 1);
        let checks = run(
            Kind::AggTrade,
            &[
                agg(100, 1000, 1002),
                agg(101, 1003, 1003),
                // `a` follows, trade ids do not: 1004..=1005 lost inside the exchange.
                agg(102, 1006, 1006),
                // `a` skips 103..=104.
                agg(105, 1010, 1011),
            ],
        );
        assert_eq!(checks[1], Check::Continuous);
        assert_eq!(
            checks[2],
            Check::Skipped {
                from: 1004,
                to: 1005,
                reconnect: false
            }
        );
        assert_eq!(checks[2].missing_ids(Kind::AggTrade), 2);
        assert_eq!(
            checks[3],
            Check::Gap {
                from: 103,
                to: 104,
                reconnect: false
            }
        );
    }

    #[test]
    fn book_tickers_rise_and_mark_prices_keep_their_cadence() {
        let bt = |u| (KindIds::BookTicker { u }, 0, 1);
        assert_eq!(
            run(Kind::BookTicker, &[bt(5), bt(90), bt(90), bt(91)]),
            [
                Check::Start,
                Check::Continuous,
                Check::Back {
                    last: 90,
                    got: 90,
                    reconnect: false
                },
                Check::Continuous
            ]
        );
        let mp = |ms| (KindIds::None, ms, 1);
        assert_eq!(
            run(
                Kind::MarkPrice,
                &[mp(1_000), mp(2_000), mp(4_000), mp(7_000)]
            ),
            [
                Check::Start,
                Check::Continuous,
                Check::Continuous,
                Check::Gap {
                    from: 4_000,
                    to: 7_000,
                    reconnect: false
                }
            ]
        );
        let fo = |ms| (KindIds::None, ms, 1);
        assert_eq!(
            run(Kind::ForceOrder, &[fo(1), fo(900_000), fo(900_001)]),
            [Check::Start, Check::Continuous, Check::Continuous]
        );
    }
}
