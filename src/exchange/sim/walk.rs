//! The simulated market: one seeded random-walk order book per symbol and its update ids.
//!
//! A model we own, rather than replayed data, serves any symbol at any rate, gives the same book
//! and ids for the same seed, and can answer a REST snapshot that is exactly the state after the
//! latest event: that exactness is what makes the diff stream and the snapshot provably
//! consistent for a client following Binance's local-book procedure.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::generator::{Feed, Header, View, Withhold};
use super::kinds::{
    AggHistory, Beside, Context, Decimal, Fill, Liquidation, MARK_DECIMALS, Mark, Payload,
    QTY_DECIMALS, Top, push_int,
};
use crate::market::stream::Depth;
use crate::market::venue;
/// Largest quantity of one level in lots (25.000): a plausible top-of-book size.
const MAX_LOTS: u64 = 25_000;
/// Price steps a side in the starting book: a bit over the 1000 levels a REST snapshot can
/// hold, so a limit=1000 snapshot is full.
const START_LEVELS: i64 = 1_200;
/// Chance that a price step of the starting book holds a level; the rest are holes.
const START_FILL: f64 = 0.9;
/// Levels a side the walk drifts back towards: inserts win below it, removals above.
const TARGET_LEVELS: usize = 1_080;
/// A side never shrinks below this, so `depth20` is always full and the book always has a top.
const MIN_LEVELS: usize = 50;
/// Most levels one event changes; a diff event carries 1..=this many levels.
const MAX_CHANGES: usize = 12;
/// Near-top changes pick one of this many levels from the best.
const NEAR_LEVELS: usize = 30;
/// A new near-top level goes up to this many ticks behind the best...
const INSERT_SPAN: i64 = 40;
/// ...or up to this many ticks inside the spread (clamped so the book never crosses).
const IMPROVE_SPAN: i64 = 2;
/// Chance that a reshape inserts rather than removes, below and above the target level count.
/// Below it inserts win clearly: trades take levels away at the touch too.
const INSERT_BELOW_TARGET: f64 = 0.7;
const INSERT_ABOVE_TARGET: f64 = 0.4;
/// When that step is taken, an insert tries this many random steps deeper for a free one.
const INSERT_TRIES: usize = 4;
/// Chance that a change touches the near top by rewriting a quantity.
const MODIFY_CHANCE: f64 = 0.55;
/// Chance (cumulative with the above) that it inserts or removes a near-top level; the rest
/// touch a level anywhere in the book.
const RESHAPE_CHANCE: f64 = 0.95;
/// Chance that an event's ids start right after the previous event's (`U == pu + 1`). Otherwise
/// they skip ahead: on Binance USD-M ids are not dense per symbol.
const DENSE_CHANCE: f64 = 0.25;
/// Largest skip between one event's `u` and the next event's `U`.
const MAX_ID_SKIP: u64 = 500;
/// Largest `u - U` of one event (a batch of engine updates).
const MAX_ID_SPAN: u64 = 2_000;
/// `T` trails `E` by 0..=this many ms.
const MAX_TRADE_LAG_MS: u64 = 2;
/// Ids start in 10^12..2·10^12: 13 digits, like real 2024 USD-M ids.
const FIRST_ID: u64 = 1_000_000_000_000;
/// Trade and aggregate ids start in 10^9..2·10^9: 10 digits, like real 2024 BTCUSDT ones.
const FIRST_TRADE_ID: u64 = 1_000_000_000;
/// Chance that a step has taker orders: trades come in bursts, and many steps have none.
const ORDER_CHANCE: f64 = 0.45;
/// Most taker orders in one step.
const MAX_ORDERS: usize = 3;
/// Largest taker order in lots (8.000): mostly less than the best level holds (up to 25.000),
/// sometimes more, so an order sweeps into the next level now and then while the inserts of the
/// walk keep up with the levels trades remove.
const MAX_TAKER_LOTS: u64 = 8_000;
/// Most levels one taker order sweeps.
const MAX_SWEEP: usize = 3;
/// Most maker orders one level fills a taker order against: one trade each.
const MAX_MAKERS: u64 = 4;
/// Mark price updates are due at this interval of wall time.
const MARK_EVERY_MS: u64 = crate::market::kind::MARK_PRICE_EVERY_MS;
/// Index price drifts from the mark by up to this many parts in 10^5 (Binance: a few basis
/// points on liquid symbols).
const MAX_PREMIUM: i64 = 5;
/// Funding rate in 10^-8: Binance's default 0.01 % per 8 h, give or take half.
const FUNDING_RATES: std::ops::RangeInclusive<u64> = 5_000..=15_000;
/// Time between liquidations: "a few per minute at most", and a first one soon after start.
const LIQUIDATION_GAP_MS: std::ops::Range<u64> = 10_000..40_000;
/// A liquidation's limit lies this many ticks beyond its last fill (its bankruptcy price).
const LIQUIDATION_SLIP_TICKS: i64 = 20;
/// `ap` averages about this many of the latest marks.
const MARK_AVERAGE_OVER: u64 = 10;

/// A symbol's price grid.
#[derive(Clone, Copy, Debug)]
struct Grid {
    /// Decimals shown in prices ("3051.27" → 2); prices are integers in these units.
    decimals: u32,
    /// Minimum price step in price units (BTCUSDT's 0.10 is 10 units at 2 decimals).
    tick: i64,
    /// Starting best bid in price units.
    start: i64,
}

/// Real grids for the two symbols tests use most; any other symbol gets a 4-decimal grid at a
/// price derived from its name, so every symbol looks different but stays reproducible.
fn grid_for(symbol: &str) -> Grid {
    match symbol {
        "BTCUSDT" => Grid {
            decimals: 2,
            tick: 10,
            start: 6_000_000,
        },
        "ETHUSDT" => Grid {
            decimals: 2,
            tick: 1,
            start: 300_000,
        },
        _ => Grid {
            decimals: 4,
            tick: 1,
            start: 10_000 + (fnv1a(symbol.as_bytes()) % 9_990_000) as i64,
        },
    }
}

/// FNV-1a: a stable hash, so a symbol's seed does not depend on the std hasher's version.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Bid,
    Ask,
}

/// Room for a level's text: `["`, two u64 decimals of up to 21 bytes each, `","` and `"]`.
const LEVEL_TEXT: usize = 49;

/// A level's JSON text `["price","qty"]`, rendered when the level changes. Payloads copy it
/// instead of formatting two numbers per level per event: at `--rate max` rendering is the
/// sim's hot path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LevelText {
    bytes: [u8; LEVEL_TEXT],
    len: usize,
    /// The quantity, for trades taken from the level.
    lots: u64,
}

impl LevelText {
    fn new(price: i64, price_decimals: u32, lots: u64) -> LevelText {
        let mut text = LevelText {
            bytes: [0; LEVEL_TEXT],
            len: 0,
            lots,
        };
        for part in [
            &b"[\""[..],
            Decimal::new(price.unsigned_abs(), price_decimals).as_bytes(),
            b"\",\"",
            Decimal::new(lots, QTY_DECIMALS).as_bytes(),
            b"\"]",
        ] {
            text.bytes[text.len..text.len + part.len()].copy_from_slice(part);
            text.len += part.len();
        }
        text
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Price levels of both sides: price units → the level's text, which carries its quantity. A
/// level is present only with a positive quantity.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SimBook {
    /// Price decimals, for the levels' text.
    decimals: u32,
    bids: BTreeMap<i64, LevelText>,
    asks: BTreeMap<i64, LevelText>,
}

impl SimBook {
    fn new(decimals: u32) -> SimBook {
        SimBook {
            decimals,
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
        }
    }

    fn side(&self, side: Side) -> &BTreeMap<i64, LevelText> {
        match side {
            Side::Bid => &self.bids,
            Side::Ask => &self.asks,
        }
    }

    /// The price `rank` levels behind the best (0 = best).
    fn nth_from_best(&self, side: Side, rank: usize) -> Option<i64> {
        match side {
            Side::Bid => self.bids.keys().rev().nth(rank).copied(),
            Side::Ask => self.asks.keys().nth(rank).copied(),
        }
    }

    fn nth_from_best_mut(&mut self, side: Side, rank: usize) -> Option<(i64, &mut LevelText)> {
        let level = match side {
            Side::Bid => self.bids.iter_mut().rev().nth(rank),
            Side::Ask => self.asks.iter_mut().nth(rank),
        };
        level.map(|(&price, level)| (price, level))
    }

    /// Sets a level; zero lots removes it.
    fn set(&mut self, side: Side, price: i64, lots: u64) {
        let levels = match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        };
        if lots == 0 {
            levels.remove(&price);
        } else {
            levels.insert(price, LevelText::new(price, self.decimals, lots));
        }
    }

    /// The best bid and ask with their quantities.
    fn top(&self) -> Option<Top> {
        let (&bid, b) = self.bids.iter().next_back()?;
        let (&ask, a) = self.asks.iter().next()?;
        Some(Top {
            bid: (bid, b.lots),
            ask: (ask, a.lots),
        })
    }

    /// Moves `price` back behind the other side's best so the book cannot cross.
    fn uncrossed(&self, side: Side, price: i64, tick: i64) -> i64 {
        match side {
            Side::Bid => self
                .asks
                .keys()
                .next()
                .map_or(price, |&ask| price.min(ask - tick)),
            Side::Ask => self
                .bids
                .keys()
                .next_back()
                .map_or(price, |&bid| price.max(bid + tick)),
        }
    }
}

/// One symbol's random-walk book, its id sequence and its latest event.
pub struct Market {
    symbol: String,
    /// The Binance market it plays, whose payload shapes and id rule it follows.
    venue: venue::Market,
    grid: Grid,
    book: SimBook,
    rng: SmallRng,
    /// The latest event; before the first one, it describes the starting book.
    header: Header,
    /// Prices the latest event changed, a side each, ascending and without repeats.
    changed: [Vec<i64>; 2],
    /// What the latest event added beside the book.
    beside: Beside,
    /// The next trade's `t` and the next aggregate's `a`.
    next_trade: u64,
    next_aggregate: u64,
    /// Trades made so far, withheld ones included: what the trade gap fault counts.
    trades: u64,
    /// Aggregates made so far, withheld ones included: what the aggregate gap fault counts.
    aggregates: u64,
    /// The latest aggregates, for REST.
    history: AggHistory,
    /// When the next mark price is due (wall ms), and the marks' moving average (`ap`).
    next_mark_ms: u64,
    mark_average: u64,
    /// The earliest time of the next liquidation.
    next_liquidation_ms: u64,
}

impl Market {
    /// A starting book for `symbol` (upper case); the same seed gives the same book and ids.
    pub fn new(symbol: &str, seed: u64, now_ms: u64) -> Market {
        let grid = grid_for(symbol);
        let mut rng = SmallRng::seed_from_u64(seed ^ fnv1a(symbol.as_bytes()));
        let mut book = SimBook::new(grid.decimals);
        let best_bid = grid.start - grid.start % grid.tick;
        for step in 0..START_LEVELS {
            // The first step of each side is always filled: the spread starts at one tick.
            if step == 0 || rng.random_bool(START_FILL) {
                book.set(
                    Side::Bid,
                    best_bid - step * grid.tick,
                    random_lots(&mut rng),
                );
            }
            if step == 0 || rng.random_bool(START_FILL) {
                book.set(
                    Side::Ask,
                    best_bid + (step + 1) * grid.tick,
                    random_lots(&mut rng),
                );
            }
        }
        let id = FIRST_ID + rng.random_range(0..FIRST_ID);
        let header = Header {
            first: id,
            last: id,
            prev: id,
            event_ms: now_ms,
            trade_ms: now_ms,
        };
        let next_trade = FIRST_TRADE_ID + rng.random_range(0..FIRST_TRADE_ID);
        let next_aggregate = FIRST_TRADE_ID + rng.random_range(0..FIRST_TRADE_ID);
        let next_liquidation_ms = now_ms + rng.random_range(LIQUIDATION_GAP_MS);
        Market {
            symbol: symbol.to_owned(),
            venue: venue::Market::UsdM,
            grid,
            book,
            rng,
            header,
            changed: [Vec::new(), Vec::new()],
            beside: Beside::default(),
            next_trade,
            next_aggregate,
            trades: 0,
            aggregates: 0,
            history: AggHistory::default(),
            next_mark_ms: (now_ms / MARK_EVERY_MS + 1) * MARK_EVERY_MS,
            mark_average: 0,
            next_liquidation_ms,
        }
    }

    /// The same market, speaking `venue`'s payloads.
    pub fn speaking(mut self, venue: venue::Market) -> Market {
        self.venue = venue;
        self
    }

    /// Applies one random change to `side`, remembering the price it touched.
    fn change(&mut self, side: Side) {
        let tick = self.grid.tick;
        let len = self.book.side(side).len();
        let roll: f64 = self.rng.random();
        if roll < MODIFY_CHANCE {
            let (rank, lots) = (self.near_rank(len), random_lots(&mut self.rng));
            let decimals = self.grid.decimals;
            if let Some((price, level)) = self.book.nth_from_best_mut(side, rank) {
                *level = LevelText::new(price, decimals, lots);
                self.changed[side as usize].push(price);
            }
            return;
        }
        let (price, lots) = if roll < RESHAPE_CHANCE {
            let insert_chance = if len < TARGET_LEVELS {
                INSERT_BELOW_TARGET
            } else {
                INSERT_ABOVE_TARGET
            };
            if len <= MIN_LEVELS || self.rng.random_bool(insert_chance) {
                let Some(best) = self.book.nth_from_best(side, 0) else {
                    return;
                };
                let ticks = self.rng.random_range(-IMPROVE_SPAN..=INSERT_SPAN);
                let mut price = self
                    .book
                    .uncrossed(side, behind(side, best, ticks * tick), tick);
                // The top fills up: look for a free step deeper, so that an insert usually
                // adds a level and the level count can hold its target.
                for _ in 0..INSERT_TRIES {
                    if !self.book.side(side).contains_key(&price) {
                        break;
                    }
                    price = self.anywhere(side, best, len);
                }
                (price, random_lots(&mut self.rng))
            } else {
                let rank = self.near_rank(len);
                match self.book.nth_from_best(side, rank) {
                    Some(price) => (price, 0),
                    None => return,
                }
            }
        } else {
            // Anywhere in the book, so deep levels change too and the far end gets refilled.
            let Some(best) = self.book.nth_from_best(side, 0) else {
                return;
            };
            let price = self.anywhere(side, best, len);
            let present = self.book.side(side).contains_key(&price);
            let lots = if present && len > MIN_LEVELS && self.rng.random_bool(0.5) {
                0
            } else {
                random_lots(&mut self.rng)
            };
            (price, lots)
        };
        if price <= 0 {
            return;
        }
        self.book.set(side, price, lots);
        self.changed[side as usize].push(price);
    }

    /// A random step between the best and a bit beyond the deepest level of a `len`-level side.
    fn anywhere(&mut self, side: Side, best: i64, len: usize) -> i64 {
        let ticks = self.rng.random_range(0..=(len + len / 4) as i64);
        behind(side, best, ticks * self.grid.tick)
    }

    /// A rank near the best, biased towards the top like real activity.
    fn near_rank(&mut self, len: usize) -> usize {
        let span = len.clamp(1, NEAR_LEVELS);
        self.rng
            .random_range(0..span)
            .min(self.rng.random_range(0..span))
    }

    /// This step's taker orders, if it has any. The first order made once a liquidation is due
    /// is that liquidation.
    fn trade(&mut self, now_ms: u64, withhold: &dyn Fn(u64) -> bool) {
        if !self.rng.random_bool(ORDER_CHANCE) {
            return;
        }
        for order in 0..self.rng.random_range(1..=MAX_ORDERS) as u32 {
            let side = self.random_side();
            let (lots, notional, last) = self.take(side, order, withhold);
            if lots > 0 && now_ms >= self.next_liquidation_ms && self.beside.liquidation.is_none() {
                self.next_liquidation_ms = now_ms + self.rng.random_range(LIQUIDATION_GAP_MS);
                let slip = LIQUIDATION_SLIP_TICKS * self.grid.tick;
                self.beside.liquidation = Some(Liquidation {
                    sell: side == Side::Bid,
                    limit: behind(side, last, slip).max(self.grid.tick),
                    average: (notional + lots as i64 / 2) / lots as i64,
                    lots,
                });
            }
        }
        self.beside.aggregate(&mut self.next_aggregate);
    }

    /// One taker order against `side` at the touch: each level it reaches fills it against one
    /// to a few maker orders, a trade each, and loses what it filled. Trades for which
    /// `withhold(n)` holds (n counts the symbol's trades) are made but not kept for sending.
    /// Returns the lots filled, lots × price summed, and the last price filled at.
    fn take(&mut self, side: Side, order: u32, withhold: &dyn Fn(u64) -> bool) -> (u64, i64, i64) {
        let mut left = self.rng.random_range(1..=MAX_TAKER_LOTS);
        let (mut filled, mut notional, mut last) = (0, 0, 0);
        for _ in 0..MAX_SWEEP {
            // Stop where a removal could thin the side below its floor.
            if left == 0 || self.book.side(side).len() <= MIN_LEVELS {
                break;
            }
            let Some(price) = self.book.nth_from_best(side, 0) else {
                break;
            };
            let lots = self.book.side(side)[&price].lots;
            let take = left.min(lots);
            let makers = self.rng.random_range(1..=MAX_MAKERS.min(take));
            let mut rest = take;
            for maker in 1..=makers {
                let q = if maker == makers {
                    rest
                } else {
                    self.rng.random_range(1..=rest - (makers - maker))
                };
                rest -= q;
                self.trades += 1;
                let fill = Fill {
                    id: self.next_trade,
                    price,
                    lots: q,
                    buyer_maker: side == Side::Bid,
                    order,
                };
                self.next_trade += 1;
                if !withhold(self.trades) {
                    self.beside.fills.push(fill);
                }
            }
            self.book.set(side, price, lots - take);
            self.changed[side as usize].push(price);
            left -= take;
            filled += take;
            notional += price * take as i64;
            last = price;
        }
        (filled, notional, last)
    }

    /// The mark price from the mid, at the first event of each second of wall time (Binance's
    /// come on whole seconds).
    fn mark(&mut self, now_ms: u64) {
        if now_ms < self.next_mark_ms {
            return;
        }
        self.next_mark_ms = (now_ms / MARK_EVERY_MS + 1) * MARK_EVERY_MS;
        let Some(top) = self.book.top() else {
            return;
        };
        let scale = 10u64.pow(MARK_DECIMALS - self.grid.decimals);
        let mark = (top.bid.0 + top.ask.0).unsigned_abs() * scale / 2;
        let premium = (mark / 100_000) as i64 * self.rng.random_range(-MAX_PREMIUM..=MAX_PREMIUM);
        let index = mark.saturating_add_signed(-premium);
        self.mark_average = match self.mark_average {
            0 => mark,
            average => (average * (MARK_AVERAGE_OVER - 1) + mark) / MARK_AVERAGE_OVER,
        };
        self.beside.mark = Some(Mark {
            mark,
            average: self.mark_average,
            index,
            settle: index,
            funding_rate: self.rng.random_range(FUNDING_RATES),
        });
    }

    fn random_side(&mut self) -> Side {
        if self.rng.random_bool(0.5) {
            Side::Bid
        } else {
            Side::Ask
        }
    }

    /// Appends the latest event as the depth stream `view` shows it. Spot's has no `T` and no
    /// `pu`: its ids are dense.
    fn render_depth(&self, view: Depth, out: &mut Vec<u8>) {
        let h = &self.header;
        let futures = self.venue != venue::Market::Spot;
        if let (Depth::Partial(n), false) = (view, futures) {
            // Spot's partial book is its REST snapshot's shape: no type, time or symbol.
            return self.push_book(out, n, None);
        }
        let mut head = Payload::open(out, "depthUpdate").int("E", h.event_ms);
        if futures {
            head = head.int("T", h.trade_ms);
        }
        head = head
            .symbol(&self.symbol, self.venue)
            .int("U", h.first)
            .int("u", h.last);
        if futures {
            head = head.int("pu", h.prev);
        }
        match view {
            Depth::Diff => head
                .raw("b", |out| self.push_changes(out, Side::Bid))
                .raw("a", |out| self.push_changes(out, Side::Ask)),
            Depth::Partial(n) => head
                .raw("b", |out| self.push_top(out, Side::Bid, n))
                .raw("a", |out| self.push_top(out, Side::Ask, n)),
        }
        .end(self.venue);
    }

    /// Appends `{"lastUpdateId":…[,"E":…,"T":…],"bids":…,"asks":…}` with the top `limit` levels
    /// a side: a REST snapshot, with its times when `event_ms` is given, or spot's partial book.
    fn push_book(&self, out: &mut Vec<u8>, limit: usize, event_ms: Option<u64>) {
        out.extend_from_slice(b"{\"lastUpdateId\":");
        push_int(out, self.header.last);
        if let Some(event_ms) = event_ms {
            out.extend_from_slice(b",\"E\":");
            push_int(out, event_ms);
            out.extend_from_slice(b",\"T\":");
            push_int(out, self.header.trade_ms);
        }
        out.extend_from_slice(b",\"bids\":");
        self.push_top(out, Side::Bid, limit);
        out.extend_from_slice(b",\"asks\":");
        self.push_top(out, Side::Ask, limit);
        out.push(b'}');
    }

    /// Appends the top `n` levels of `side`, best first.
    fn push_top(&self, out: &mut Vec<u8>, side: Side, n: usize) {
        match side {
            Side::Bid => push_list(
                out,
                self.book.bids.values().rev().take(n).map(Cow::Borrowed),
            ),
            Side::Ask => push_list(out, self.book.asks.values().take(n).map(Cow::Borrowed)),
        }
    }

    /// Appends the latest event's changes on `side` with their quantities now (0 = removed).
    fn push_changes(&self, out: &mut Vec<u8>, side: Side) {
        let levels = self.book.side(side);
        let texts = self.changed[side as usize]
            .iter()
            .map(|p| match levels.get(p) {
                Some(level) => Cow::Borrowed(level),
                None => Cow::Owned(LevelText::new(*p, self.grid.decimals, 0)),
            });
        push_list(out, texts);
    }
}

impl Feed for Market {
    fn symbol(&self) -> &str {
        &self.symbol
    }

    fn advance(&mut self, now_ms: u64, withhold: &Withhold) -> Header {
        let top = self.book.top();
        for prices in &mut self.changed {
            prices.clear();
        }
        self.beside.clear();
        for _ in 0..self.rng.random_range(1..=MAX_CHANGES) {
            let side = self.random_side();
            self.change(side);
        }
        self.trade(now_ms, withhold.trade);
        for prices in &mut self.changed {
            prices.sort_unstable();
            prices.dedup();
        }
        let prev = self.header.last;
        // Spot's ids are dense per symbol; futures' are exchange-wide and skip.
        let skip = if self.venue == venue::Market::Spot || self.rng.random_bool(DENSE_CHANCE) {
            0
        } else {
            self.rng.random_range(1..=MAX_ID_SKIP)
        };
        let first = prev + 1 + skip;
        let last = first + self.rng.random_range(0..=MAX_ID_SPAN);
        let trade_ms = now_ms.saturating_sub(self.rng.random_range(0..=MAX_TRADE_LAG_MS));
        self.header = Header {
            first,
            last,
            prev,
            event_ms: now_ms,
            trade_ms,
        };
        for i in 0..self.beside.aggregates.len() {
            self.aggregates += 1;
            let agg = &mut self.beside.aggregates[i];
            agg.withheld = (withhold.aggregate)(self.aggregates);
            let item = self.beside.item(&self.beside.aggregates[i], trade_ms);
            self.history.push(item);
        }
        if self.book.top() != top {
            self.beside.top = self.book.top();
        }
        self.mark(now_ms);
        self.header
    }

    fn render(&self, view: View, out: &mut Vec<u8>, events: &mut Vec<Range<usize>>) {
        match view {
            View::Depth(depth) => {
                let start = out.len();
                self.render_depth(depth, out);
                events.push(start..out.len());
            }
            View::Kind(kind) => {
                let cx = Context {
                    symbol: &self.symbol,
                    decimals: self.grid.decimals,
                    header: &self.header,
                    market: self.venue,
                };
                self.beside.render(kind, &cx, out, events);
            }
        }
    }

    fn snapshot(&self, limit: usize, now_ms: u64, out: &mut Vec<u8>) {
        // Spot's snapshot has no times.
        let futures = self.venue != venue::Market::Spot;
        self.push_book(out, limit, futures.then_some(now_ms));
    }

    fn agg_trades(&self, from_id: u64, limit: usize, out: &mut Vec<u8>) {
        self.history.render(from_id, limit, self.grid.decimals, out);
    }
}

/// The price `by` price units behind `best`: lower for bids, higher for asks (negative = inside).
fn behind(side: Side, best: i64, by: i64) -> i64 {
    match side {
        Side::Bid => best - by,
        Side::Ask => best + by,
    }
}

fn random_lots(rng: &mut SmallRng) -> u64 {
    rng.random_range(1..=MAX_LOTS)
}

/// Appends `[level,level,…]`.
fn push_list<'a>(out: &mut Vec<u8>, texts: impl Iterator<Item = Cow<'a, LevelText>>) {
    out.push(b'[');
    for (i, text) in texts.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(text.as_bytes());
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::kind::Kind;
    use serde_json::Value;

    fn decimal(value: u64, decimals: u32) -> String {
        String::from_utf8(Decimal::new(value, decimals).as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn decimals_have_fixed_digits() {
        assert_eq!(decimal(305_127, 2), "3051.27");
        assert_eq!(decimal(12_345, 3), "12.345");
        assert_eq!(decimal(0, 3), "0.000");
        assert_eq!(decimal(7, 3), "0.007");
        assert_eq!(decimal(6_000_010, 2), "60000.10");
        assert_eq!(decimal(42, 0), "42");
        assert_eq!(decimal(0, 0), "0");
        assert_eq!(decimal(u64::MAX, 19), "1.8446744073709551615");
        assert_eq!(
            LevelText::new(305_127, 2, 0).as_bytes(),
            br#"["3051.27","0.000"]"#
        );
    }

    fn step(market: &mut Market, now_ms: u64) -> Header {
        market.advance(now_ms, &Withhold::NONE)
    }

    /// The latest event's payloads as `view` shows them.
    fn payloads(market: &Market, view: View) -> Vec<Value> {
        let (mut out, mut events) = (Vec::new(), Vec::new());
        market.render(view, &mut out, &mut events);
        events
            .into_iter()
            .map(|range| serde_json::from_slice(&out[range]).unwrap())
            .collect()
    }

    fn rendered(market: &Market, view: Depth) -> Value {
        let mut events = payloads(market, View::Depth(view));
        assert_eq!(events.len(), 1, "one depth event a step");
        events.remove(0)
    }

    /// Parses `[["p","q"],…]` into (price units, lots) with the market's grid.
    fn levels(value: &Value, decimals: u32) -> Vec<(i64, u64)> {
        let units = |s: &str, d: u32| -> u64 {
            let (int, frac) = s.split_once('.').unwrap_or((s, ""));
            assert_eq!(frac.len(), d as usize, "{s} should have {d} decimals");
            format!("{int}{frac}").parse().unwrap()
        };
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    units(l[0].as_str().unwrap(), decimals) as i64,
                    units(l[1].as_str().unwrap(), QTY_DECIMALS),
                )
            })
            .collect()
    }

    #[test]
    fn ids_chain_skip_and_span() {
        let mut market = Market::new("ETHUSDT", 7, 0);
        let mut last = market.header.last;
        let (mut dense, mut skipped) = (0, 0);
        for now in 0..2_000 {
            let h = step(&mut market, now);
            assert_eq!(h.prev, last);
            assert!(h.first > h.prev && h.last >= h.first);
            if h.first == h.prev + 1 {
                dense += 1
            } else {
                skipped += 1
            }
            last = h.last;
        }
        assert!(
            dense > 100 && skipped > 1_000,
            "dense {dense} skipped {skipped}"
        );
    }

    #[test]
    fn book_never_crosses_or_runs_thin() {
        for symbol in ["BTCUSDT", "ETHUSDT", "DOGEUSDT"] {
            let mut market = Market::new(symbol, 3, 0);
            for now in 0..10_000 {
                step(&mut market, now);
                let bid = *market.book.bids.keys().next_back().unwrap();
                let ask = *market.book.asks.keys().next().unwrap();
                assert!(bid < ask, "{symbol} crossed at event {now}: {bid} >= {ask}");
                assert!(
                    market.book.bids.len() >= MIN_LEVELS && market.book.asks.len() >= MIN_LEVELS
                );
            }
            let book = &market.book;
            assert!(
                book.bids
                    .keys()
                    .chain(book.asks.keys())
                    .all(|p| p % market.grid.tick == 0 && *p > 0)
            );
            let sizes = (book.bids.len(), book.asks.len());
            assert!(
                sizes.0 > 500 && sizes.1 > 500 && sizes.0 < 2_000 && sizes.1 < 2_000,
                "{symbol} {sizes:?}"
            );
        }
    }

    #[test]
    fn diffs_rebuild_the_book_exactly() {
        let mut market = Market::new("BTCUSDT", 11, 0);
        let mut book = market.book.clone();
        for now in 0..3_000 {
            step(&mut market, now);
            let diff = rendered(&market, Depth::Diff);
            let changes = [(Side::Bid, &diff["b"]), (Side::Ask, &diff["a"])];
            assert!(
                changes
                    .iter()
                    .any(|(_, l)| !l.as_array().unwrap().is_empty())
            );
            for (side, list) in changes {
                let list = levels(list, 2);
                assert!(
                    list.windows(2).all(|w| w[0].0 < w[1].0),
                    "diff levels ascend without repeats"
                );
                for (price, lots) in list {
                    book.set(side, price, lots);
                }
            }
        }
        assert_eq!(book, market.book);
    }

    #[test]
    fn partial_and_snapshot_show_the_top_in_order() {
        let mut market = Market::new("ETHUSDT", 5, 0);
        step(&mut market, 1_000);
        for n in [5, 10, 20] {
            let p = rendered(&market, Depth::Partial(n));
            let (bids, asks) = (levels(&p["b"], 2), levels(&p["a"], 2));
            assert_eq!((bids.len(), asks.len()), (n, n));
            assert!(
                bids.windows(2).all(|w| w[0].0 > w[1].0)
                    && asks.windows(2).all(|w| w[0].0 < w[1].0)
            );
            assert!(bids[0].0 < asks[0].0);
            assert_eq!(p["u"], market.header.last);
            assert_eq!(p["s"], "ETHUSDT");
        }
        let mut out = Vec::new();
        market.snapshot(1_000, 1_001, &mut out);
        let s: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(s["lastUpdateId"], market.header.last);
        assert_eq!(s["E"], 1_001);
        assert_eq!(levels(&s["bids"], 2).len(), 1_000);
        assert_eq!(levels(&s["asks"], 2).len(), 1_000);
    }

    #[test]
    fn same_seed_same_market() {
        let run = |seed| {
            let mut market = Market::new("BTCUSDT", seed, 0);
            let mut out = Vec::new();
            for now in 0..200 {
                step(&mut market, now);
                for view in [View::Depth(Depth::Diff), View::Kind(Kind::AggTrade)] {
                    market.render(view, &mut out, &mut Vec::new());
                }
            }
            out
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    /// A price or quantity string in units of its decimals.
    fn units(value: &Value) -> i64 {
        value.as_str().unwrap().replace('.', "").parse().unwrap()
    }

    #[test]
    fn trades_are_taken_at_the_touch_and_shown_by_depth() {
        let mut market = Market::new("BTCUSDT", 13, 0);
        let (mut last_t, mut steps_with_trades, mut bursts) = (None, 0, 0);
        for now in 0..3_000 {
            step(&mut market, now);
            let trades = payloads(&market, View::Kind(Kind::Trade));
            let diff = rendered(&market, Depth::Diff);
            let (bid, ask) = (
                *market.book.bids.keys().next_back().unwrap(),
                *market.book.asks.keys().next().unwrap(),
            );
            for trade in &trades {
                let t = trade["t"].as_u64().unwrap();
                assert_eq!(last_t.map_or(t, |l: u64| l + 1), t, "trade ids are dense");
                last_t = Some(t);
                let (price, buyer_maker) = (units(&trade["p"]), trade["m"].as_bool().unwrap());
                assert!(units(&trade["q"]) > 0);
                // A taker sell fills bids from the best down: what is left bids no more.
                let (side, touch_held) = if buyer_maker {
                    (&diff["b"], price >= bid && price < ask)
                } else {
                    (&diff["a"], price <= ask && price > bid)
                };
                assert!(touch_held, "{trade} against {bid}/{ask}");
                assert!(
                    levels(side, 2).iter().any(|(p, _)| *p == price),
                    "the depth diff shows the level the trade took from: {trade}"
                );
                assert_eq!(
                    (trade["E"].as_u64(), trade["s"].as_str()),
                    (Some(now), Some("BTCUSDT"))
                );
            }
            steps_with_trades += usize::from(!trades.is_empty());
            bursts += usize::from(trades.len() > 2);
        }
        assert!(
            (900..2_100).contains(&steps_with_trades) && bursts > 300,
            "trades in {steps_with_trades} steps, bursts in {bursts}"
        );
    }

    #[test]
    fn rest_keeps_the_aggregates_the_stream_withheld_with_the_same_fields() {
        let mut market = Market::new("ETHUSDT", 17, 0);
        let withhold = Withhold {
            trade: &|_| false,
            aggregate: &|n| n.is_multiple_of(3),
        };
        let (mut streamed, mut first) = (Vec::new(), None);
        for now in 0..300 {
            market.advance(now, &withhold);
            for agg in payloads(&market, View::Kind(Kind::AggTrade)) {
                first.get_or_insert(agg["a"].as_u64().unwrap());
                streamed.push(agg);
            }
        }
        let first = first.unwrap();
        let mut body = Vec::new();
        market.agg_trades(first, 1000, &mut body);
        let rest: Vec<Value> = serde_json::from_slice(&body).unwrap();
        let ids: Vec<u64> = rest.iter().map(|i| i["a"].as_u64().unwrap()).collect();
        assert!(
            ids.windows(2).all(|w| w[1] == w[0] + 1),
            "REST ids are dense"
        );
        assert!(streamed.len() * 3 / 2 <= rest.len() + 2, "a third withheld");
        for agg in &streamed {
            let item = &rest[(agg["a"].as_u64().unwrap() - first) as usize];
            for key in ["a", "p", "q", "f", "l", "T", "m"] {
                assert_eq!(item[key], agg[key], "{key} of {agg}");
            }
        }
    }

    #[test]
    fn aggregates_cover_consecutive_trades_and_lose_withheld_ones() {
        for gap_every in [None, Some(5)] {
            let mut market = Market::new("ETHUSDT", 17, 0);
            let withhold = |n: u64| gap_every.is_some_and(|every| n.is_multiple_of(every));
            let (mut last_a, mut last_l, mut last_t) = (None::<u64>, None::<u64>, None::<u64>);
            let (mut trade_skips, mut agg_skips) = (0, 0);
            for now in 0..2_000 {
                market.advance(
                    now,
                    &Withhold {
                        trade: &withhold,
                        aggregate: &|_| false,
                    },
                );
                let trades = payloads(&market, View::Kind(Kind::Trade));
                let by_id: BTreeMap<u64, &Value> = trades
                    .iter()
                    .map(|t| (t["t"].as_u64().unwrap(), t))
                    .collect();
                for t in by_id.keys() {
                    if last_t.is_some_and(|l| *t != l + 1) {
                        trade_skips += 1;
                    }
                    last_t = Some(*t);
                }
                for agg in payloads(&market, View::Kind(Kind::AggTrade)) {
                    let (a, f, l) = (
                        agg["a"].as_u64().unwrap(),
                        agg["f"].as_u64().unwrap(),
                        agg["l"].as_u64().unwrap(),
                    );
                    assert_eq!(last_a.map_or(a, |p| p + 1), a, "aggregate ids are dense");
                    if last_l.is_some_and(|p| f != p + 1) {
                        agg_skips += 1;
                    }
                    let covered: Vec<&Value> = (f..=l).map(|t| by_id[&t]).collect();
                    let lots: i64 = covered.iter().map(|t| units(&t["q"])).sum();
                    assert_eq!(units(&agg["q"]), lots, "{agg}");
                    assert!(
                        covered
                            .iter()
                            .all(|t| t["p"] == agg["p"] && t["m"] == agg["m"])
                    );
                    (last_a, last_l) = (Some(a), Some(l));
                }
            }
            match gap_every {
                None => assert_eq!((trade_skips, agg_skips), (0, 0)),
                Some(_) => assert!(
                    trade_skips > 100 && agg_skips == trade_skips,
                    "trade skips {trade_skips}, aggregate skips {agg_skips}"
                ),
            }
        }
    }

    #[test]
    fn book_tickers_show_each_change_of_the_top() {
        let mut market = Market::new("ETHUSDT", 19, 0);
        let mut tickers = 0;
        for now in 0..2_000 {
            let before = market.book.top();
            let h = step(&mut market, now);
            let ticker = payloads(&market, View::Kind(Kind::BookTicker));
            assert_eq!(ticker.len(), usize::from(market.book.top() != before));
            if let Some(t) = ticker.first() {
                let top = rendered(&market, Depth::Partial(5));
                let (bid, ask) = (levels(&top["b"], 2)[0], levels(&top["a"], 2)[0]);
                assert_eq!(
                    (
                        units(&t["b"]),
                        units(&t["B"]) as u64,
                        units(&t["a"]),
                        units(&t["A"]) as u64
                    ),
                    (bid.0, bid.1, ask.0, ask.1)
                );
                assert_eq!(t["u"], h.last);
                tickers += 1;
            }
        }
        assert!(tickers > 1_000, "{tickers} tickers in 2000 events");
    }

    #[test]
    fn marks_come_once_a_second_and_liquidations_rarely() {
        let mut market = Market::new("BTCUSDT", 23, 1_000_000);
        let (mut marks, mut liquidations) = (Vec::new(), Vec::new());
        for now in (1_000_000..1_120_000).step_by(10) {
            step(&mut market, now);
            for mark in payloads(&market, View::Kind(Kind::MarkPrice)) {
                let p = units(&mark["p"]) / 1_000_000;
                let top = market.book.top().unwrap();
                assert!(top.bid.0 <= p && p <= top.ask.0, "{mark}");
                assert_eq!(mark["T"], 28_800_000);
                marks.push(mark["E"].as_u64().unwrap());
            }
            liquidations.extend(payloads(&market, View::Kind(Kind::ForceOrder)));
        }
        assert_eq!(marks.len(), 119);
        assert_eq!(marks[0], 1_001_000);
        assert!(marks.windows(2).all(|w| w[1] - w[0] == 1_000));
        assert!(
            (2..=12).contains(&liquidations.len()),
            "{}",
            liquidations.len()
        );
        for l in &liquidations {
            let o = &l["o"];
            assert_eq!(
                (o["s"].as_str(), o["X"].as_str()),
                (Some("BTCUSDT"), Some("FILLED"))
            );
            let (limit, average) = (units(&o["p"]), units(&o["ap"]));
            match o["S"].as_str() {
                Some("SELL") => assert!(limit < average, "{l}"),
                _ => assert!(limit > average, "{l}"),
            }
        }
    }
}
