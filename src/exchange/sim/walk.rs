//! The simulated market: one seeded random-walk order book per symbol and its update ids.
//!
//! A model we own, rather than replayed data, serves any symbol at any rate, gives the same book
//! and ids for the same seed, and can answer a REST snapshot that is exactly the state after the
//! latest event: that exactness is what makes the diff stream and the snapshot provably
//! consistent for a client following Binance's local-book procedure.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::generator::{Feed, Header};
use crate::market::stream::Depth;

/// Decimals shown in quantities ("12.345"); quantities are integer lots of 0.001.
const QTY_DECIMALS: u32 = 3;
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
}

impl LevelText {
    fn new(price: i64, price_decimals: u32, lots: u64) -> LevelText {
        let mut text = LevelText {
            bytes: [0; LEVEL_TEXT],
            len: 0,
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
    grid: Grid,
    book: SimBook,
    rng: SmallRng,
    /// The latest event; before the first one, it describes the starting book.
    header: Header,
    /// Prices the latest event changed, a side each, ascending and without repeats.
    changed: [Vec<i64>; 2],
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
        Market {
            symbol: symbol.to_owned(),
            grid,
            book,
            rng,
            header,
            changed: [Vec::new(), Vec::new()],
        }
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
            let insert_chance = if len < TARGET_LEVELS { 0.6 } else { 0.4 };
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

    /// Appends the shared head of a depth payload: everything before `"b":`.
    fn push_event_head(&self, out: &mut Vec<u8>) {
        let h = &self.header;
        out.extend_from_slice(b"{\"e\":\"depthUpdate\",\"E\":");
        push_int(out, h.event_ms);
        out.extend_from_slice(b",\"T\":");
        push_int(out, h.trade_ms);
        out.extend_from_slice(b",\"s\":\"");
        out.extend_from_slice(self.symbol.as_bytes());
        out.extend_from_slice(b"\",\"U\":");
        push_int(out, h.first);
        out.extend_from_slice(b",\"u\":");
        push_int(out, h.last);
        out.extend_from_slice(b",\"pu\":");
        push_int(out, h.prev);
    }

    /// Appends the top `n` levels a side, best first, under the given keys (`,"b":…,"a":…`).
    fn push_top(&self, out: &mut Vec<u8>, n: usize, keys: [&[u8]; 2]) {
        out.extend_from_slice(keys[0]);
        push_list(
            out,
            self.book.bids.values().rev().take(n).map(Cow::Borrowed),
        );
        out.extend_from_slice(keys[1]);
        push_list(out, self.book.asks.values().take(n).map(Cow::Borrowed));
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

    fn advance(&mut self, now_ms: u64) -> Header {
        for prices in &mut self.changed {
            prices.clear();
        }
        for _ in 0..self.rng.random_range(1..=MAX_CHANGES) {
            let side = if self.rng.random_bool(0.5) {
                Side::Bid
            } else {
                Side::Ask
            };
            self.change(side);
        }
        for prices in &mut self.changed {
            prices.sort_unstable();
            prices.dedup();
        }
        let prev = self.header.last;
        let skip = if self.rng.random_bool(DENSE_CHANCE) {
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
        self.header
    }

    fn render(&self, view: Depth, out: &mut Vec<u8>) {
        self.push_event_head(out);
        match view {
            Depth::Diff => {
                out.extend_from_slice(b",\"b\":");
                self.push_changes(out, Side::Bid);
                out.extend_from_slice(b",\"a\":");
                self.push_changes(out, Side::Ask);
            }
            Depth::Partial(n) => self.push_top(out, n, [b",\"b\":", b",\"a\":"]),
        }
        out.push(b'}');
    }

    fn snapshot(&self, limit: usize, now_ms: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"lastUpdateId\":");
        push_int(out, self.header.last);
        out.extend_from_slice(b",\"E\":");
        push_int(out, now_ms);
        out.extend_from_slice(b",\"T\":");
        push_int(out, self.header.trade_ms);
        self.push_top(out, limit, [b",\"bids\":", b",\"asks\":"]);
        out.push(b'}');
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

fn push_int(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
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

/// `value / 10^decimals` in text with exactly `decimals` digits after the point, as Binance
/// prints prices and quantities ("3051.27", "0.000"). Written right to left into a buffer that
/// holds any u64 with up to 19 decimals.
struct Decimal {
    buf: [u8; 21],
    start: usize,
}

impl Decimal {
    fn new(mut value: u64, decimals: u32) -> Decimal {
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

    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn rendered(market: &Market, view: Depth) -> Value {
        let mut out = Vec::new();
        market.render(view, &mut out);
        serde_json::from_slice(&out).unwrap()
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
            let h = market.advance(now);
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
                market.advance(now);
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
            market.advance(now);
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
        market.advance(1_000);
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
                market.advance(now);
                market.render(Depth::Diff, &mut out);
            }
            out
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
