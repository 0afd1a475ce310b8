//! The streams beside the book as the sim makes them, and every payload's text.
//!
//! The walk takes trades from its book at the touch; this module groups them into aggregate
//! trades and writes each kind's payload with Binance's key order, 2026 fields included (`ps`
//! right after the symbol, `st` last). A new kind is a field of [`Beside`], the walk's code that
//! fills it, and one arm of [`Beside::render`].

use std::collections::VecDeque;
use std::ops::Range;

use super::generator::Header;
use crate::market::kind::Kind;
use crate::market::venue::Market;

/// `st`, the symbol type since the CM migration: 1 is USD-M, all the sim serves.
const SYMBOL_TYPE: u64 = 1;
/// Decimals of mark, index and settle prices and of funding rates, as Binance prints them
/// ("11794.15000000", "0.00010000").
pub const MARK_DECIMALS: u32 = 8;
/// Funding is settled every 8 hours from midnight UTC: `T` of a mark price is the next one.
const FUNDING_EVERY_MS: u64 = 8 * 3_600_000;

/// One fill of a taker order against one maker order at the touch: one `@trade` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// `t`: dense per symbol.
    pub id: u64,
    /// Price units of the symbol's grid.
    pub price: i64,
    /// Quantity in lots of 0.001.
    pub lots: u64,
    /// `m`: the taker sold, so the buyer was the maker.
    pub buyer_maker: bool,
    /// The taker order within its step: fills of one order at one price aggregate.
    pub order: u32,
}

/// Consecutive fills of one taker order at one price: one `@aggTrade` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    /// `a`: dense per symbol.
    pub id: u64,
    /// Its fills in [`Beside::fills`].
    pub fills: Range<usize>,
    /// Kept off the `@aggTrade` stream by the aggregate gap fault; REST still has it.
    pub withheld: bool,
}

/// What an aggregate trade says, on the stream and in REST alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggItem {
    /// `a`.
    pub id: u64,
    /// `p`, price units of the symbol's grid.
    pub price: u64,
    /// `q`, lots.
    pub lots: u64,
    /// `f` and `l`: the trade ids it covers.
    pub first: u64,
    pub last: u64,
    /// `T`.
    pub trade_ms: u64,
    /// `m`.
    pub buyer_maker: bool,
}

/// Aggregate trades kept for REST `/fapi/v1/aggTrades`, per symbol. At the sim's default 10
/// events/s a symbol makes about 15 aggregates a second, at the tests' 200 events/s about 300:
/// this many cover the last minutes, or at the least half a minute of reconnect, at about 50
/// bytes each.
pub const AGG_HISTORY: usize = 10_000;

/// A symbol's latest [`AGG_HISTORY`] aggregate trades, in id order (ids are dense).
#[derive(Clone, Debug, Default)]
pub struct AggHistory {
    items: VecDeque<AggItem>,
}

impl AggHistory {
    pub fn push(&mut self, item: AggItem) {
        if self.items.len() == AGG_HISTORY {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    /// Appends the REST answer to `fromId=from_id&limit=limit`: a JSON array of up to `limit`
    /// items from `from_id` on, Binance's keys in Binance's order. Ids older than the history
    /// are answered from its oldest; ids not made yet with `[]`, as Binance does.
    pub fn render(&self, from_id: u64, limit: usize, decimals: u32, out: &mut Vec<u8>) {
        out.push(b'[');
        let skip = self
            .items
            .front()
            .map_or(0, |oldest| from_id.saturating_sub(oldest.id));
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        for (i, item) in self.items.iter().skip(skip).take(limit).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"a\":");
            push_int(out, item.id);
            Payload(out)
                .dec("p", item.price, decimals)
                .dec("q", item.lots, QTY_DECIMALS)
                .int("f", item.first)
                .int("l", item.last)
                .int("T", item.trade_ms)
                .bool("m", item.buyer_maker)
                .close();
        }
        out.push(b']');
    }
}

/// Best bid and ask after a step, in price units and lots: one `@bookTicker` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Top {
    pub bid: (i64, u64),
    pub ask: (i64, u64),
}

/// One `@markPrice@1s` event; prices in units of [`MARK_DECIMALS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub mark: u64,
    /// `ap`: the mark price's moving average.
    pub average: u64,
    pub index: u64,
    /// `P`: estimated settle price.
    pub settle: u64,
    /// `r`, in units of 10^-8.
    pub funding_rate: u64,
}

/// A liquidation order filled at the touch: one `@forceOrder` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liquidation {
    pub sell: bool,
    /// `p`: the order's limit, beyond the prices it filled at; price units.
    pub limit: i64,
    /// `ap`: the average fill price, price units (rounded to the grid's decimals).
    pub average: i64,
    /// `q`, `l` and `z`: filled whole in one go, lots.
    pub lots: u64,
}

/// What one step of a symbol's market adds beside the book.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Beside {
    /// Trades sent, in id order (withheld ones are missing).
    pub fills: Vec<Fill>,
    pub aggregates: Vec<Aggregate>,
    /// Set when the step changed the best bid or ask.
    pub top: Option<Top>,
    /// Set on the first step of each second.
    pub mark: Option<Mark>,
    pub liquidation: Option<Liquidation>,
}

/// What every payload of a step shares.
pub struct Context<'a> {
    /// Upper case.
    pub symbol: &'a str,
    /// Price decimals of the symbol's grid.
    pub decimals: u32,
    pub header: &'a Header,
    /// The market, whose payloads differ in shape (spot's bookTicker has no `e`, `E`, `T`).
    pub market: Market,
}

impl Beside {
    /// Empties it for the next step, keeping the vectors' room: at `--rate max` a step then
    /// allocates nothing.
    pub fn clear(&mut self) {
        self.fills.clear();
        self.aggregates.clear();
        self.top = None;
        self.mark = None;
        self.liquidation = None;
    }

    /// Groups the fills into aggregates numbered from `*next_id` on: a run of one taker order at
    /// one price with consecutive trade ids, so a withheld trade ends its run.
    pub fn aggregate(&mut self, next_id: &mut u64) {
        self.aggregates.clear();
        let mut start = 0;
        for i in 1..=self.fills.len() {
            let (a, b) = (self.fills[i - 1], self.fills.get(i));
            let same =
                b.is_some_and(|b| b.order == a.order && b.price == a.price && b.id == a.id + 1);
            if !same {
                self.aggregates.push(Aggregate {
                    id: *next_id,
                    fills: start..i,
                    withheld: false,
                });
                *next_id += 1;
                start = i;
            }
        }
    }

    /// What aggregate `agg` of this step says, its trades done at `trade_ms`.
    pub fn item(&self, agg: &Aggregate, trade_ms: u64) -> AggItem {
        let fills = &self.fills[agg.fills.clone()];
        let (first, last) = (fills[0], fills[fills.len() - 1]);
        AggItem {
            id: agg.id,
            price: first.price.unsigned_abs(),
            lots: fills.iter().map(|f| f.lots).sum(),
            first: first.id,
            last: last.id,
            trade_ms,
            buyer_maker: first.buyer_maker,
        }
    }

    /// Appends the step's payloads of `kind`, one event each, and their ranges in `out`.
    pub fn render(
        &self,
        kind: Kind,
        cx: &Context,
        out: &mut Vec<u8>,
        events: &mut Vec<Range<usize>>,
    ) {
        let h = cx.header;
        let mut each = |write: &dyn Fn(Payload)| {
            let start = out.len();
            write(Payload::open(out, kind.event_type()));
            events.push(start..out.len());
        };
        match kind {
            Kind::Trade => {
                for fill in &self.fills {
                    each(&|p| {
                        p.int("E", h.event_ms)
                            .int("T", h.trade_ms)
                            .symbol(cx.symbol, cx.market)
                            .int("t", fill.id)
                            .dec("p", fill.price.unsigned_abs(), cx.decimals)
                            .dec("q", fill.lots, QTY_DECIMALS)
                            .text("X", "MARKET")
                            .bool("m", fill.buyer_maker)
                            .end(cx.market);
                    });
                }
            }
            Kind::AggTrade => {
                for agg in self.aggregates.iter().filter(|a| !a.withheld) {
                    let item = self.item(agg, h.trade_ms);
                    each(&|p| {
                        p.int("E", h.event_ms)
                            .int("a", item.id)
                            .symbol(cx.symbol, cx.market)
                            .dec("p", item.price, cx.decimals)
                            .dec("q", item.lots, QTY_DECIMALS)
                            .int("f", item.first)
                            .int("l", item.last)
                            .int("T", item.trade_ms)
                            .bool("m", item.buyer_maker)
                            .end(cx.market);
                    });
                }
            }
            Kind::BookTicker => {
                if let Some(top) = self.top {
                    let start = out.len();
                    // Spot's bookTicker has no event type and no times.
                    let spot = cx.market == Market::Spot;
                    let p = if spot {
                        Payload::untyped(out, "u", h.last)
                    } else {
                        Payload::open(out, kind.event_type()).int("u", h.last)
                    };
                    let p = p
                        .symbol(cx.symbol, cx.market)
                        .dec("b", top.bid.0.unsigned_abs(), cx.decimals)
                        .dec("B", top.bid.1, QTY_DECIMALS)
                        .dec("a", top.ask.0.unsigned_abs(), cx.decimals)
                        .dec("A", top.ask.1, QTY_DECIMALS);
                    if spot {
                        p.end(cx.market);
                    } else {
                        p.int("T", h.trade_ms).int("E", h.event_ms).end(cx.market);
                    }
                    events.push(start..out.len());
                }
            }
            Kind::MarkPrice => {
                if let Some(m) = self.mark {
                    each(&|p| {
                        p.int("E", h.event_ms)
                            .symbol(cx.symbol, cx.market)
                            .dec("p", m.mark, MARK_DECIMALS)
                            .dec("ap", m.average, MARK_DECIMALS)
                            .dec("P", m.settle, MARK_DECIMALS)
                            .dec("i", m.index, MARK_DECIMALS)
                            .dec("r", m.funding_rate, MARK_DECIMALS)
                            .int("T", next_funding_ms(h.event_ms))
                            .end(cx.market);
                    });
                }
            }
            Kind::ForceOrder => {
                if let Some(l) = self.liquidation {
                    each(&|p| {
                        p.int("E", h.event_ms)
                            .object("o", cx.symbol, cx.market)
                            .text("S", if l.sell { "SELL" } else { "BUY" })
                            .text("o", "LIMIT")
                            .text("f", "IOC")
                            .dec("q", l.lots, QTY_DECIMALS)
                            .dec("p", l.limit.unsigned_abs(), cx.decimals)
                            .dec("ap", l.average.unsigned_abs(), cx.decimals)
                            .text("X", "FILLED")
                            .dec("l", l.lots, QTY_DECIMALS)
                            .dec("z", l.lots, QTY_DECIMALS)
                            .int("T", h.trade_ms)
                            .close()
                            .end(cx.market);
                    });
                }
            }
        }
    }
}

/// A payload being written: `{"e":…` first, then `,"key":value` members, `"st"` last.
pub struct Payload<'a>(&'a mut Vec<u8>);

impl<'a> Payload<'a> {
    pub fn open(out: &'a mut Vec<u8>, event: &str) -> Payload<'a> {
        out.extend_from_slice(b"{\"e\":\"");
        out.extend_from_slice(event.as_bytes());
        out.push(b'"');
        Payload(out)
    }

    fn key(self, key: &str) -> Payload<'a> {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
        self
    }

    pub fn int(self, key: &str, value: u64) -> Payload<'a> {
        let p = self.key(key);
        push_int(p.0, value);
        p
    }

    pub fn text(self, key: &str, value: &str) -> Payload<'a> {
        let p = self.key(key);
        p.0.push(b'"');
        p.0.extend_from_slice(value.as_bytes());
        p.0.push(b'"');
        p
    }

    /// `value / 10^decimals` as a JSON string, as Binance prints prices and quantities.
    pub fn dec(self, key: &str, value: u64, decimals: u32) -> Payload<'a> {
        let p = self.key(key);
        p.0.push(b'"');
        p.0.extend_from_slice(Decimal::new(value, decimals).as_bytes());
        p.0.push(b'"');
        p
    }

    fn bool(self, key: &str, value: bool) -> Payload<'a> {
        let p = self.key(key);
        p.0.extend_from_slice(if value { b"true" } else { b"false" });
        p
    }

    /// `s`, and on futures `ps` right after it: the pair, the symbol up to its contract's
    /// suffix (`BTCUSDT` for `BTCUSDT` and `BTCUSDT_260925`, `ETHUSD` for `ETHUSD_PERP`).
    /// Spot payloads have no `ps`.
    pub fn symbol(self, symbol: &str, market: Market) -> Payload<'a> {
        self.text("s", symbol).pair(symbol, market)
    }

    fn pair(self, symbol: &str, market: Market) -> Payload<'a> {
        if market == Market::Spot {
            return self;
        }
        self.text("ps", symbol.split('_').next().unwrap_or(symbol))
    }

    /// Opens a nested object that starts with the symbol (a liquidation's order).
    fn object(self, key: &str, symbol: &str, market: Market) -> Payload<'a> {
        let p = self.key(key);
        p.0.extend_from_slice(b"{\"s\":\"");
        p.0.extend_from_slice(symbol.as_bytes());
        p.0.push(b'"');
        p.pair(symbol, market)
    }

    /// A payload without `e`: spot's bookTicker, which starts with `u`.
    fn untyped(out: &'a mut Vec<u8>, key: &str, value: u64) -> Payload<'a> {
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        push_int(out, value);
        Payload(out)
    }

    fn close(self) -> Payload<'a> {
        self.0.push(b'}');
        self
    }

    /// Appends raw JSON under `key` (the depth levels).
    pub fn raw(self, key: &str, write: impl FnOnce(&mut Vec<u8>)) -> Payload<'a> {
        let p = self.key(key);
        write(p.0);
        p
    }

    /// `st`, last, and the closing brace.
    /// Closes the payload; futures payloads end with `st`, spot's have none.
    pub fn end(self, market: Market) {
        let p = if market == Market::Spot {
            self
        } else {
            self.int("st", SYMBOL_TYPE)
        };
        p.0.push(b'}');
    }
}

/// Decimals shown in quantities ("12.345"); quantities are integer lots of 0.001.
pub const QTY_DECIMALS: u32 = 3;

/// The next funding time after `ms`.
fn next_funding_ms(ms: u64) -> u64 {
    (ms / FUNDING_EVERY_MS + 1) * FUNDING_EVERY_MS
}

pub fn push_int(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// `value / 10^decimals` in text with exactly `decimals` digits after the point, as Binance
/// prints prices and quantities ("3051.27", "0.000"). Written right to left into a buffer that
/// holds any u64 with up to 19 decimals.
pub struct Decimal {
    buf: [u8; 21],
    start: usize,
}

impl Decimal {
    pub fn new(mut value: u64, decimals: u32) -> Decimal {
        let mut buf = [0; 21];
        let (mut start, mut digits) = (buf.len(), 0);
        loop {
            if digits == decimals && digits > 0 {
                start -= 1;
                buf[start] = b'.';
            }
            start -= 1;
            buf[start] = b'0' + (value % 10) as u8;
            value /= 10;
            digits += 1;
            if value == 0 && digits > decimals {
                return Decimal { buf, start };
            }
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(id: u64, price: i64, order: u32) -> Fill {
        Fill {
            id,
            price,
            lots: 1_500,
            buyer_maker: true,
            order,
        }
    }

    #[test]
    fn aggregates_are_runs_of_one_order_at_one_price() {
        let mut beside = Beside {
            // Order 0 sweeps two levels; order 1 hits the same price; trade 15 was withheld.
            fills: vec![
                fill(10, 500, 0),
                fill(11, 500, 0),
                fill(12, 490, 0),
                fill(13, 490, 1),
                fill(14, 490, 1),
                fill(16, 490, 1),
            ],
            ..Beside::default()
        };
        let mut next = 7;
        beside.aggregate(&mut next);
        let runs: Vec<(u64, Range<usize>)> = beside
            .aggregates
            .iter()
            .map(|a| (a.id, a.fills.clone()))
            .collect();
        assert_eq!(runs, [(7, 0..2), (8, 2..3), (9, 3..5), (10, 5..6)]);
        assert_eq!(next, 11);
        beside.fills.clear();
        beside.aggregate(&mut next);
        assert!(beside.aggregates.is_empty());
        assert_eq!(next, 11);
    }

    #[test]
    fn agg_history_answers_from_an_id_within_its_bound() {
        let item = |id| AggItem {
            id,
            price: 6_180_030,
            lots: 1_500,
            first: 10 * id,
            last: 10 * id + 1,
            trade_ms: 1_723_161_256_320,
            buyer_maker: id % 2 == 0,
        };
        let mut history = AggHistory::default();
        for id in 100..100 + AGG_HISTORY as u64 + 5 {
            history.push(item(id));
        }
        let answer = |from, limit| {
            let mut out = Vec::new();
            history.render(from, limit, 2, &mut out);
            String::from_utf8(out).unwrap()
        };
        // Binance's REST keys, in Binance's order.
        assert_eq!(
            answer(106, 2),
            r#"[{"a":106,"p":"61800.30","q":"1.500","f":1060,"l":1061,"T":1723161256320,"m":true},{"a":107,"p":"61800.30","q":"1.500","f":1070,"l":1071,"T":1723161256320,"m":false}]"#
        );
        // The five oldest were forgotten: the answer starts at the oldest kept.
        assert!(answer(0, 1).starts_with(r#"[{"a":105,"#));
        assert_eq!(answer(100 + AGG_HISTORY as u64 + 5, 10), "[]");
        assert_eq!(answer(u64::MAX, 10), "[]");
    }

    fn render(beside: &Beside, kind: Kind) -> Vec<String> {
        let header = Header {
            first: 90,
            last: 99,
            prev: 80,
            event_ms: 1_723_161_256_322,
            trade_ms: 1_723_161_256_320,
        };
        let cx = Context {
            symbol: "BTCUSDT",
            decimals: 2,
            header: &header,
            market: Market::UsdM,
        };
        let (mut out, mut events) = (Vec::new(), Vec::new());
        beside.render(kind, &cx, &mut out, &mut events);
        events
            .into_iter()
            .map(|r| String::from_utf8(out[r].to_vec()).unwrap())
            .collect()
    }

    /// Binance's layouts (tests/data/binance, 2024), with `ps` after the symbol and `st` last.
    #[test]
    fn payloads_keep_binance_key_order() {
        let mut beside = Beside {
            fills: vec![
                fill(5_266_583_935, 6_180_030, 0),
                fill(5_266_583_936, 6_180_030, 0),
            ],
            top: Some(Top {
                bid: (6_180_020, 2_507),
                ask: (6_180_030, 2_510),
            }),
            mark: Some(Mark {
                mark: 6_180_025_000_000,
                average: 6_180_000_000_000,
                index: 6_179_900_000_000,
                settle: 6_179_900_000_000,
                funding_rate: 10_000,
            }),
            liquidation: Some(Liquidation {
                sell: true,
                limit: 6_179_800,
                average: 6_180_010,
                lots: 3_000,
            }),
            ..Beside::default()
        };
        beside.aggregate(&mut 2_300_000_000);
        let e = r#""E":1723161256322"#;
        assert_eq!(
            render(&beside, Kind::Trade),
            [
                format!(
                    r#"{{"e":"trade",{e},"T":1723161256320,"s":"BTCUSDT","ps":"BTCUSDT","t":5266583935,"p":"61800.30","q":"1.500","X":"MARKET","m":true,"st":1}}"#
                ),
                format!(
                    r#"{{"e":"trade",{e},"T":1723161256320,"s":"BTCUSDT","ps":"BTCUSDT","t":5266583936,"p":"61800.30","q":"1.500","X":"MARKET","m":true,"st":1}}"#
                ),
            ]
        );
        assert_eq!(
            render(&beside, Kind::AggTrade),
            [format!(
                r#"{{"e":"aggTrade",{e},"a":2300000000,"s":"BTCUSDT","ps":"BTCUSDT","p":"61800.30","q":"3.000","f":5266583935,"l":5266583936,"T":1723161256320,"m":true,"st":1}}"#
            )]
        );
        assert_eq!(
            render(&beside, Kind::BookTicker),
            [format!(
                r#"{{"e":"bookTicker","u":99,"s":"BTCUSDT","ps":"BTCUSDT","b":"61800.20","B":"2.507","a":"61800.30","A":"2.510","T":1723161256320,{e},"st":1}}"#
            )]
        );
        assert_eq!(
            render(&beside, Kind::MarkPrice),
            [format!(
                r#"{{"e":"markPriceUpdate",{e},"s":"BTCUSDT","ps":"BTCUSDT","p":"61800.25000000","ap":"61800.00000000","P":"61799.00000000","i":"61799.00000000","r":"0.00010000","T":1723161600000,"st":1}}"#
            )]
        );
        assert_eq!(
            render(&beside, Kind::ForceOrder),
            [format!(
                r#"{{"e":"forceOrder",{e},"o":{{"s":"BTCUSDT","ps":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"3.000","p":"61798.00","ap":"61800.10","X":"FILLED","l":"3.000","z":"3.000","T":1723161256320}},"st":1}}"#
            )]
        );
        let quiet = Beside::default();
        assert!(Kind::ALL.iter().all(|&k| render(&quiet, k).is_empty()));
    }
}
