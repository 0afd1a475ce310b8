//! The local order book of one symbol, rebuilt from a REST snapshot and depth events.
//!
//! `obrec replay --book N` prints it and the tests prove it against the exchange's own
//! `bookTicker`, so it has to be exact, and fast enough to replay hours of `@depth@0ms`.
//!
//! * **Exact.** Prices and quantities stay the decimal strings Binance sent (`"61000.10"`,
//!   `"0.000"`, `"4.00000000"`): a float would round them and print something the exchange never
//!   said. A price is ordered by an exact fixed-point key (18 decimals in a `u128`); the text is
//!   kept beside it and written back byte for byte. A quantity is checked the same way and only
//!   ever compared with zero.
//! * **Untrusted input fails, it never panics.** Anything that is not a plain non-negative decimal,
//!   or a payload without its id or sides, is a [`BookError`], and the book is left as it was:
//!   a payload is parsed whole before any level changes.
//! * **Fast, and no allocation per event.** Serde reads the bid and ask arrays straight out of the
//!   payload, borrowing the strings, into a buffer kept between events; a level keeps its texts
//!   inline. A side is a sorted run of levels cut into blocks of at most `BLOCK` levels (see
//!   `Ladder`), and emptied blocks are kept for reuse.
//!
//! Why blocks, measured on the real BTCUSDT `@depth@0ms` recording (`benches/book.rs`: 6,547
//! events of 68 levels on average, against a book that grows from 2,000 to 9,600 levels).
//! Updates do not cluster at the top as much as one would hope: 28 % land within 64 levels of the
//! best, most a few hundred levels deep. One sorted `Vec` (best last) therefore spent its time
//! moving levels and took about 90 ms per pass. A `BTreeMap` and the blocks both take about 52 ms,
//! of which about 25 ms is reading the JSON; but the `BTreeMap` allocates or frees a node about
//! once per event in steady state, the blocks about once per hundred events.
//!
//! The book knows nothing about sequencing: [`crate::market::sequence`] decides which events to apply.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Longest price or quantity text a level keeps. Binance sends at most about a dozen characters
/// (`"431.00000000"`); 23 makes the inline text 24 bytes, so a whole level is one 64-byte cache
/// line.
pub const TEXT_CAP: usize = 23;

/// Decimals of the fixed-point key. Binance's prices have at most 8; 18 leaves room and still lets
/// a `u128` hold integer parts up to 3 * 10^20.
pub const KEY_DECIMALS: usize = 18;

/// Why a price or quantity string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not `digits` or `digits.digits` (signs, exponents, spaces and empty parts are refused).
    #[error("not a plain decimal")]
    Syntax,
    /// More than [`KEY_DECIMALS`] decimals.
    #[error("more than {KEY_DECIMALS} decimals")]
    TooPrecise,
    /// Beyond the key's range.
    #[error("too large")]
    TooLarge,
    /// Longer than [`TEXT_CAP`] characters.
    #[error("longer than {TEXT_CAP} characters")]
    TooLong,
}

/// Why a payload could not be applied. The book is unchanged when this is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    /// Not JSON, or a field of the wrong shape.
    #[error("bad book payload: {0}")]
    Json(String),
    /// A required field is absent.
    #[error("book payload lacks {0:?}")]
    Missing(&'static str),
    #[error("bad price {text:?}: {why}")]
    Price { text: String, why: DecimalError },
    #[error("bad quantity {text:?}: {why}")]
    Qty { text: String, why: DecimalError },
}

/// One level as received: price and quantity text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote<'a> {
    pub price: &'a str,
    pub qty: &'a str,
}

/// The local book of one symbol.
#[derive(Clone, Debug, Default)]
pub struct Book {
    bids: Ladder,
    asks: Ladder,
    /// `lastUpdateId` of the snapshot, then the `u` of the last event applied.
    update_id: Option<u64>,
    /// The changes of the payload being applied, kept so their capacity is reused.
    scratch: Changes,
}

impl Book {
    /// An empty book, waiting for a snapshot.
    pub fn new() -> Book {
        Book::default()
    }

    /// Replaces the whole book with a REST `/fapi/v1/depth` body and returns its `lastUpdateId`.
    ///
    /// # Errors
    ///
    /// A malformed body; the book is then unchanged.
    pub fn reset_from_snapshot(&mut self, rest_body: &str) -> Result<u64, BookError> {
        let id = self.scratch.parse(rest_body, &SNAPSHOT)?;
        self.replace_with_scratch(id);
        Ok(id)
    }

    /// Applies one diff-depth event (`depthUpdate` payload) and returns its `u`.
    ///
    /// Quantities are absolute; a zero quantity removes the level, and removing a level the book
    /// does not hold is normal (it lay beyond the snapshot's depth).
    ///
    /// # Errors
    ///
    /// A malformed payload; the book is then unchanged.
    pub fn apply_diff(&mut self, depth_update_payload: &str) -> Result<u64, BookError> {
        let id = self.scratch.parse(depth_update_payload, &DIFF)?;
        for change in &self.scratch.bids {
            self.bids.apply(*change);
        }
        for change in &self.scratch.asks {
            self.asks.apply(*change);
        }
        self.update_id = Some(id);
        Ok(id)
    }

    /// Replaces the book with a partial-depth event (`<sym>@depth<N>`) and returns its `u`
    /// (spot's: its `lastUpdateId`). Such an event is the whole top N of the book, so nothing of
    /// the previous book survives.
    ///
    /// # Errors
    ///
    /// A malformed payload; the book is then unchanged.
    pub fn replace_partial(&mut self, partial_payload: &str) -> Result<u64, BookError> {
        // Futures send a `depthUpdate` (`u`, `b`, `a`); spot sends its REST snapshot's shape,
        // the only one of the two that has the word.
        let fields =
            if memchr::memmem::find(partial_payload.as_bytes(), SNAPSHOT.id.as_bytes()).is_some() {
                &SNAPSHOT
            } else {
                &DIFF
            };
        let id = self.scratch.parse(partial_payload, fields)?;
        self.replace_with_scratch(id);
        Ok(id)
    }

    /// Empties the book, for when its sequence is lost.
    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.update_id = None;
    }

    /// `lastUpdateId` of the snapshot, then the `u` of the last event applied.
    pub fn update_id(&self) -> Option<u64> {
        self.update_id
    }

    /// The highest bid.
    pub fn best_bid(&self) -> Option<Quote<'_>> {
        self.bids.best().map(Level::quote)
    }

    /// The lowest ask.
    pub fn best_ask(&self) -> Option<Quote<'_>> {
        self.asks.best().map(Level::quote)
    }

    /// True when both sides exist and the best bid is not below the best ask: a correct book of a
    /// live market never is.
    pub fn is_crossed(&self) -> bool {
        match (self.bids.best(), self.asks.best()) {
            (Some(bid), Some(ask)) => bid.rank >= !ask.rank,
            _ => false,
        }
    }

    /// True when neither side holds a level.
    pub fn is_empty(&self) -> bool {
        self.bids.len == 0 && self.asks.len == 0
    }

    /// Every bid, best (highest) first.
    pub fn bids(&self) -> Levels<'_> {
        self.bids.top(usize::MAX)
    }

    /// Every ask, best (lowest) first.
    pub fn asks(&self) -> Levels<'_> {
        self.asks.top(usize::MAX)
    }

    /// The best `n` levels of each side.
    pub fn top(&self, n: usize) -> Top<'_> {
        Top {
            bids: self.bids.top(n),
            asks: self.asks.top(n),
        }
    }

    /// Appends `"bids":[["p","q"],…],"asks":[["p","q"],…]` with the best `n` levels of each side,
    /// best first, every string exactly as received.
    pub fn write_top_json(&self, n: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"bids\":");
        write_levels(self.bids.top(n), out);
        out.extend_from_slice(b",\"asks\":");
        write_levels(self.asks.top(n), out);
    }

    fn replace_with_scratch(&mut self, id: u64) {
        self.bids.replace(&mut self.scratch.bids);
        self.asks.replace(&mut self.scratch.asks);
        self.update_id = Some(id);
    }
}

/// The best levels of both sides, from [`Book::top`].
#[derive(Clone, Debug)]
pub struct Top<'a> {
    pub bids: Levels<'a>,
    pub asks: Levels<'a>,
}

/// Levels of one side, best first.
#[derive(Clone, Debug)]
pub struct Levels<'a> {
    /// Blocks not yet started, best last.
    blocks: std::slice::Iter<'a, Vec<Level>>,
    /// What is left of the current block, best last.
    block: std::slice::Iter<'a, Level>,
    remaining: usize,
}

impl<'a> Iterator for Levels<'a> {
    type Item = Quote<'a>;

    fn next(&mut self) -> Option<Quote<'a>> {
        if self.remaining == 0 {
            return None;
        }
        loop {
            if let Some(level) = self.block.next_back() {
                self.remaining -= 1;
                return Some(level.quote());
            }
            self.block = self.blocks.next_back()?.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Levels<'_> {}

fn write_levels(levels: Levels<'_>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, level) in levels.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // The texts passed `parse_decimal`: digits and a dot only, nothing to escape.
        out.extend_from_slice(b"[\"");
        out.extend_from_slice(level.price.as_bytes());
        out.extend_from_slice(b"\",\"");
        out.extend_from_slice(level.qty.as_bytes());
        out.extend_from_slice(b"\"]");
    }
    out.push(b']');
}

/// A decimal string kept inline, so a level owns no heap memory.
#[derive(Clone, Copy)]
struct Text {
    len: u8,
    bytes: [u8; TEXT_CAP],
}

impl Text {
    fn new(text: &str) -> Result<Text, DecimalError> {
        let src = text.as_bytes();
        if src.len() > TEXT_CAP {
            return Err(DecimalError::TooLong);
        }
        let mut bytes = [0; TEXT_CAP];
        bytes[..src.len()].copy_from_slice(src);
        Ok(Text {
            len: src.len() as u8,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        // Copied whole from a `&str`, so always UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One price level. `rank` orders a side so that its best level sorts last: the price key for
/// bids, its bitwise complement for asks.
#[derive(Clone, Copy, Debug)]
struct Level {
    rank: u128,
    price: Text,
    qty: Text,
}

impl Level {
    fn quote(&self) -> Quote<'_> {
        Quote {
            price: self.price.as_str(),
            qty: self.qty.as_str(),
        }
    }
}

/// What one `[price, qty]` pair of a payload does to its side.
#[derive(Clone, Copy, Debug)]
enum Change {
    Set(Level),
    Remove { rank: u128 },
}

impl Change {
    fn rank(&self) -> u128 {
        match self {
            Change::Set(level) => level.rank,
            Change::Remove { rank } => *rank,
        }
    }
}

/// Most levels in one block: an insert or a removal moves at most this many. 64 levels of 64
/// bytes make a 4 KiB block. 16 to 64 measured alike on the bench, 128 a little slower.
const BLOCK: usize = 64;

/// A block left this small by a removal is merged with a neighbour if the two fit in [`MERGED`].
const SPARSE: usize = BLOCK / 4;

/// Most levels a merge may produce, leaving room for inserts before the block splits again.
const MERGED: usize = BLOCK * 3 / 4;

/// Levels per block when a side is built whole from a snapshot: half full, so the inserts that
/// follow rarely split a block at once.
const FILL: usize = BLOCK / 2;

/// One side of the book: levels in ascending `rank` (the best last), cut into blocks.
///
/// A single sorted `Vec` moves every level above an insert or a removal, and on `@depth@0ms` those
/// land a few hundred levels deep (see the module docs). Blocks bound the move; a search is a
/// binary search over the blocks' lowest ranks, then one inside a block.
#[derive(Clone, Debug, Default)]
struct Ladder {
    /// Non-empty blocks of at most [`BLOCK`] levels, in ascending rank.
    blocks: Vec<Vec<Level>>,
    /// `lows[i]` is the rank of `blocks[i][0]`.
    lows: Vec<u128>,
    /// Emptied blocks with their capacity, reused before allocating a new one.
    spare: Vec<Vec<Level>>,
    /// Levels in all blocks.
    len: usize,
}

impl Ladder {
    fn best(&self) -> Option<&Level> {
        self.blocks.last().and_then(|block| block.last())
    }

    /// The block that holds `rank` or would receive it; `None` when there is none.
    fn block_of(&self, rank: u128) -> Option<usize> {
        if self.blocks.is_empty() {
            return None;
        }
        Some(
            self.lows
                .partition_point(|&low| low <= rank)
                .saturating_sub(1),
        )
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Set(level) => self.set(level),
            Change::Remove { rank } => self.remove(rank),
        }
    }

    fn set(&mut self, level: Level) {
        let Some(b) = self.block_of(level.rank) else {
            return self.push_block(level);
        };
        let block = &mut self.blocks[b];
        let i = match block.binary_search_by(|held| held.rank.cmp(&level.rank)) {
            Ok(i) => {
                block[i] = level;
                return;
            }
            Err(i) => i,
        };
        self.len += 1;
        if block.len() < BLOCK {
            block.insert(i, level);
            self.lows[b] = block[0].rank;
            return;
        }
        // Full: its upper half becomes a new block, then the level goes to its half.
        let mut upper = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK));
        upper.extend(block.drain(BLOCK / 2..));
        self.lows.insert(b + 1, upper[0].rank);
        self.blocks.insert(b + 1, upper);
        let (b, i) = if i <= BLOCK / 2 {
            (b, i)
        } else {
            (b + 1, i - BLOCK / 2)
        };
        self.blocks[b].insert(i, level);
        self.lows[b] = self.blocks[b][0].rank;
    }

    fn remove(&mut self, rank: u128) {
        let Some(b) = self.block_of(rank) else {
            return;
        };
        let block = &mut self.blocks[b];
        let Ok(i) = block.binary_search_by(|held| held.rank.cmp(&rank)) else {
            return;
        };
        block.remove(i);
        self.len -= 1;
        match block.first() {
            None => self.drop_block(b),
            Some(low) => {
                self.lows[b] = low.rank;
                if block.len() <= SPARSE {
                    self.merge_around(b);
                }
            }
        }
    }

    /// Merges a sparse block with a neighbour when the two fit in [`MERGED`] levels, so the
    /// remnants a moving market leaves behind do not pile up into many tiny blocks.
    fn merge_around(&mut self, b: usize) {
        let fits = |lower: usize| self.blocks[lower].len() + self.blocks[lower + 1].len() <= MERGED;
        let lower = if b + 1 < self.blocks.len() && fits(b) {
            b
        } else if b > 0 && fits(b - 1) {
            b - 1
        } else {
            return;
        };
        let (low, high) = self.blocks.split_at_mut(lower + 1);
        low[lower].append(&mut high[0]);
        self.drop_block(lower + 1);
    }

    /// Removes block `b`, now empty, and keeps it for reuse.
    fn drop_block(&mut self, b: usize) {
        self.lows.remove(b);
        let empty = self.blocks.remove(b);
        self.spare.push(empty);
    }

    /// Appends a level that ranks above every level held, opening a block after [`FILL`] levels.
    fn push_block(&mut self, level: Level) {
        self.len += 1;
        match self.blocks.last_mut() {
            Some(block) if block.len() < FILL => block.push(level),
            _ => {
                let mut block = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(BLOCK));
                block.push(level);
                self.lows.push(level.rank);
                self.blocks.push(block);
            }
        }
    }

    fn clear(&mut self) {
        for mut block in self.blocks.drain(..) {
            block.clear();
            self.spare.push(block);
        }
        self.lows.clear();
        self.len = 0;
    }

    /// Becomes exactly the levels `changes` sets; for a price given twice, the later one counts.
    /// Sorts `changes`.
    fn replace(&mut self, changes: &mut [Change]) {
        self.clear();
        // Stable, and linear on the sorted or reversed input the exchange sends.
        changes.sort_by_key(Change::rank);
        for (n, change) in changes.iter().enumerate() {
            let superseded = changes
                .get(n + 1)
                .is_some_and(|next| next.rank() == change.rank());
            if let (Change::Set(level), false) = (change, superseded) {
                self.push_block(*level);
            }
        }
    }

    fn top(&self, n: usize) -> Levels<'_> {
        Levels {
            blocks: self.blocks.iter(),
            block: [].iter(),
            remaining: n.min(self.len),
        }
    }
}

/// Parses a plain non-negative decimal into an exact fixed-point key with [`KEY_DECIMALS`]
/// decimals.
fn parse_decimal(text: &str) -> Result<u128, DecimalError> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() || (frac.is_empty() && int.len() != text.len()) {
        return Err(DecimalError::Syntax);
    }
    if frac.len() > KEY_DECIMALS {
        return Err(DecimalError::TooPrecise);
    }
    let scale = POW10[KEY_DECIMALS - frac.len()];
    let mut digits = int.bytes().chain(frac.bytes());
    // Up to 19 digits fit a u64, and times `scale` (at most 10^18) they fit the key: the common
    // case, with no overflow checks.
    let mut value: u64 = 0;
    for byte in digits.by_ref().take(U64_DIGITS) {
        value = value * 10 + u64::from(digit(byte)?);
    }
    let mut value = u128::from(value);
    for byte in digits {
        let digit = u128::from(digit(byte)?);
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(digit))
            .ok_or(DecimalError::TooLarge)?;
    }
    value.checked_mul(scale).ok_or(DecimalError::TooLarge)
}

/// Digits that always fit a `u64`.
const U64_DIGITS: usize = 19;

/// `POW10[n]` is 10^n, for scaling a key.
const POW10: [u128; KEY_DECIMALS + 1] = {
    let mut table = [1; KEY_DECIMALS + 1];
    let mut n = 1;
    while n <= KEY_DECIMALS {
        table[n] = table[n - 1] * 10;
        n += 1;
    }
    table
};

fn digit(byte: u8) -> Result<u8, DecimalError> {
    let digit = byte.wrapping_sub(b'0');
    if digit > 9 {
        return Err(DecimalError::Syntax);
    }
    Ok(digit)
}

/// Reads one `[price, qty]` pair.
fn change(price: &str, qty: &str, ask: bool) -> Result<Change, BookError> {
    let bad_price = |why| BookError::Price {
        text: price.to_owned(),
        why,
    };
    let bad_qty = |why| BookError::Qty {
        text: qty.to_owned(),
        why,
    };
    let key = parse_decimal(price).map_err(bad_price)?;
    let rank = if ask { !key } else { key };
    if parse_decimal(qty).map_err(bad_qty)? == 0 {
        return Ok(Change::Remove { rank });
    }
    Ok(Change::Set(Level {
        rank,
        price: Text::new(price).map_err(bad_price)?,
        qty: Text::new(qty).map_err(bad_qty)?,
    }))
}

/// The names of the fields the book reads in one kind of payload.
struct Fields {
    id: &'static str,
    bids: &'static str,
    asks: &'static str,
}

/// A `depthUpdate` payload, diff or partial.
const DIFF: Fields = Fields {
    id: "u",
    bids: "b",
    asks: "a",
};

/// A REST depth body.
const SNAPSHOT: Fields = Fields {
    id: "lastUpdateId",
    bids: "bids",
    asks: "asks",
};

/// The parsed changes of one payload.
#[derive(Clone, Debug, Default)]
struct Changes {
    bids: Vec<Change>,
    asks: Vec<Change>,
}

impl Changes {
    /// Reads the id and both sides of `text` into `self` and returns the id.
    fn parse(&mut self, text: &str, fields: &Fields) -> Result<u64, BookError> {
        self.bids.clear();
        self.asks.clear();
        let mut refused = None;
        let mut de = serde_json::Deserializer::from_str(text);
        let seed = PayloadSeed {
            fields,
            changes: self,
            refused: &mut refused,
        };
        let found = seed
            .deserialize(&mut de)
            .and_then(|found| de.end().map(|()| found))
            .map_err(|e| {
                refused
                    .take()
                    .unwrap_or_else(|| BookError::Json(e.to_string()))
            })?;
        if !found.bids {
            return Err(BookError::Missing(fields.bids));
        }
        if !found.asks {
            return Err(BookError::Missing(fields.asks));
        }
        found.id.ok_or(BookError::Missing(fields.id))
    }
}

/// What a payload contained besides its levels.
struct Found {
    id: Option<u64>,
    bids: bool,
    asks: bool,
}

/// Deserializes a payload object, pushing its levels into [`Changes`]. A refused decimal is kept
/// in `refused`, typed, while serde unwinds with an opaque error.
struct PayloadSeed<'s> {
    fields: &'s Fields,
    changes: &'s mut Changes,
    refused: &'s mut Option<BookError>,
}

impl<'de> DeserializeSeed<'de> for PayloadSeed<'_> {
    type Value = Found;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Found, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PayloadSeed<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a depth object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut found = Found {
            id: None,
            bids: false,
            asks: false,
        };
        while let Some(key) = map.next_key_seed(KeySeed(self.fields))? {
            match key {
                Key::Id => found.id = Some(map.next_value()?),
                Key::Bids => {
                    found.bids = true;
                    map.next_value_seed(SideSeed {
                        out: &mut self.changes.bids,
                        ask: false,
                        refused: self.refused,
                    })?;
                }
                Key::Asks => {
                    found.asks = true;
                    map.next_value_seed(SideSeed {
                        out: &mut self.changes.asks,
                        ask: true,
                        refused: self.refused,
                    })?;
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

enum Key {
    Id,
    Bids,
    Asks,
    Other,
}

/// Names a payload key without allocating, escaped or not.
struct KeySeed<'s>(&'s Fields);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            k if k == self.0.id => Key::Id,
            k if k == self.0.bids => Key::Bids,
            k if k == self.0.asks => Key::Asks,
            _ => Key::Other,
        })
    }
}

/// Reads one side's `[[price, qty], …]` array into `out`.
struct SideSeed<'s> {
    out: &'s mut Vec<Change>,
    ask: bool,
    refused: &'s mut Option<BookError>,
}

impl<'de> DeserializeSeed<'de> for SideSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SideSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of [price, quantity] string pairs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some((price, qty)) = seq.next_element::<(&'de str, &'de str)>()? {
            match change(price, qty, self.ask) {
                Ok(change) => self.out.push(change),
                Err(refused) => {
                    let message = refused.to_string();
                    *self.refused = Some(refused);
                    return Err(de::Error::custom(message));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(u: u64, bids: &str, asks: &str) -> String {
        format!(
            r#"{{"e":"depthUpdate","E":1,"T":1,"s":"BTCUSDT","U":{u},"u":{u},"pu":0,"b":[{bids}],"a":[{asks}]}}"#
        )
    }

    fn side(levels: Levels<'_>) -> Vec<(String, String)> {
        levels
            .map(|q| (q.price.to_owned(), q.qty.to_owned()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(p, q)| (p.to_string(), q.to_string()))
            .collect()
    }

    const SNAP: &str = r#"{"lastUpdateId":100,"E":1,"T":1,"bids":[["100.0","1"],["99.5","2"],["99","3"]],"asks":[["100.5","4"],["101","5"]]}"#;

    fn snapped() -> Book {
        let mut book = Book::new();
        assert_eq!(book.reset_from_snapshot(SNAP), Ok(100));
        book
    }

    #[test]
    fn snapshot_orders_sides_best_first() {
        let book = snapped();
        assert_eq!(book.update_id(), Some(100));
        assert_eq!(
            book.best_bid(),
            Some(Quote {
                price: "100.0",
                qty: "1"
            })
        );
        assert_eq!(
            book.best_ask(),
            Some(Quote {
                price: "100.5",
                qty: "4"
            })
        );
        assert_eq!(
            side(book.bids()),
            pairs(&[("100.0", "1"), ("99.5", "2"), ("99", "3")])
        );
        assert_eq!(side(book.asks()), pairs(&[("100.5", "4"), ("101", "5")]));
        assert!(!book.is_crossed());
    }

    #[test]
    fn snapshot_replaces_everything_and_accepts_any_order() {
        let mut book = snapped();
        let id = book
            .reset_from_snapshot(r#"{"asks":[["7","1"],["5","2"],["6","0"]],"bids":[["1","1"],["3","1"],["2","1"]],"lastUpdateId":7}"#)
            .unwrap();
        assert_eq!(id, 7);
        assert_eq!(
            side(book.bids()),
            pairs(&[("3", "1"), ("2", "1"), ("1", "1")])
        );
        // The zero level is not a level.
        assert_eq!(side(book.asks()), pairs(&[("5", "2"), ("7", "1")]));
    }

    #[test]
    fn snapshot_with_a_price_twice_keeps_the_later() {
        let mut book = Book::new();
        book.reset_from_snapshot(r#"{"lastUpdateId":1,"bids":[["5.0","1"],["5","2"]],"asks":[]}"#)
            .unwrap();
        assert_eq!(side(book.bids()), pairs(&[("5", "2")]));
    }

    #[test]
    fn diff_sets_replaces_and_removes() {
        let mut book = snapped();
        let u = book
            .apply_diff(&diff(
                101,
                r#"["99.5","7"],["99.75","1.5"],["99","0"]"#,
                r#"["100.5","0.000"]"#,
            ))
            .unwrap();
        assert_eq!(u, 101);
        assert_eq!(book.update_id(), Some(101));
        assert_eq!(
            side(book.bids()),
            pairs(&[("100.0", "1"), ("99.75", "1.5"), ("99.5", "7")])
        );
        assert_eq!(side(book.asks()), pairs(&[("101", "5")]));
    }

    #[test]
    fn removing_an_unknown_level_is_normal() {
        let mut book = snapped();
        let before = side(book.bids());
        book.apply_diff(&diff(
            101,
            r#"["42","0"],["1000","0"],["99.25","0"]"#,
            r#"["5","0"]"#,
        ))
        .unwrap();
        assert_eq!(side(book.bids()), before);
        assert_eq!(book.asks().len(), 2);
        assert_eq!(Book::new().apply_diff(&diff(1, r#"["1","0"]"#, "")), Ok(1));
    }

    #[test]
    fn any_spelling_of_zero_removes() {
        for zero in ["0", "0.0", "0.000", "0.00000000", "000", "00.00"] {
            let mut book = snapped();
            book.apply_diff(&diff(101, &format!(r#"["100.0","{zero}"]"#), ""))
                .unwrap();
            assert_eq!(
                book.best_bid().map(|q| q.price),
                Some("99.5"),
                "zero {zero:?}"
            );
        }
        // Not zero, however small.
        let mut book = snapped();
        book.apply_diff(&diff(101, r#"["100.0","0.00000001"]"#, ""))
            .unwrap();
        assert_eq!(
            book.best_bid(),
            Some(Quote {
                price: "100.0",
                qty: "0.00000001"
            })
        );
    }

    #[test]
    fn prices_order_by_value_whatever_their_decimals() {
        let mut book = Book::new();
        let bids = r#"["9.99999999","1"],["10","2"],["10.1","3"],["10.05","4"],["1.000000000000000001","5"],["100000000000000000000","6"]"#;
        let asks = r#"["0.5","1"],["0.49999999","2"],["0.500000001","3"],["5.0000","4"]"#;
        book.apply_diff(&diff(1, bids, asks)).unwrap();
        let prices = |levels: Levels<'_>| levels.map(|q| q.price.to_owned()).collect::<Vec<_>>();
        assert_eq!(
            prices(book.bids()),
            [
                "100000000000000000000",
                "10.1",
                "10.05",
                "10",
                "9.99999999",
                "1.000000000000000001"
            ]
        );
        assert_eq!(
            prices(book.asks()),
            ["0.49999999", "0.5", "0.500000001", "5.0000"]
        );
        // The same value in another spelling is the same level; the latest text is kept.
        book.apply_diff(&diff(2, r#"["10.10","8"]"#, r#"["5","0"]"#))
            .unwrap();
        assert_eq!(
            book.bids().nth(1),
            Some(Quote {
                price: "10.10",
                qty: "8"
            })
        );
        assert_eq!(book.asks().len(), 3);
    }

    #[test]
    fn a_price_given_twice_in_one_event_ends_with_the_later() {
        let mut book = snapped();
        book.apply_diff(&diff(
            101,
            r#"["98","1"],["98","0"],["97","1"],["97","2"]"#,
            "",
        ))
        .unwrap();
        assert_eq!(
            side(book.bids()).last(),
            Some(&("97".to_owned(), "2".to_owned()))
        );
        assert!(!book.bids().any(|q| q.price == "98"));
    }

    #[test]
    fn partial_replaces_rather_than_merges() {
        let mut book = snapped();
        let u = book
            .replace_partial(&diff(
                200,
                r#"["98.0","1"],["97.5","2"]"#,
                r#"["98.5","3"]"#,
            ))
            .unwrap();
        assert_eq!(u, 200);
        assert_eq!(book.update_id(), Some(200));
        assert_eq!(side(book.bids()), pairs(&[("98.0", "1"), ("97.5", "2")]));
        assert_eq!(side(book.asks()), pairs(&[("98.5", "3")]));
        // Spot's partial book is its snapshot's shape.
        let spot =
            r#"{"lastUpdateId":201,"bids":[["98.1","4"]],"asks":[["98.4","5"],["98.6","6"]]}"#;
        assert_eq!(book.replace_partial(spot), Ok(201));
        assert_eq!(side(book.bids()), pairs(&[("98.1", "4")]));
        assert_eq!(side(book.asks()), pairs(&[("98.4", "5"), ("98.6", "6")]));
    }

    #[test]
    fn crossed_only_when_bid_reaches_ask() {
        let mut book = snapped();
        book.apply_diff(&diff(101, r#"["100.49","1"]"#, ""))
            .unwrap();
        assert!(!book.is_crossed());
        book.apply_diff(&diff(102, r#"["100.50","1"]"#, ""))
            .unwrap();
        assert!(book.is_crossed(), "bid equal to ask");
        book.apply_diff(&diff(
            103,
            r#"["100.50","0"]"#,
            r#"["100.5","0"],["101","0"]"#,
        ))
        .unwrap();
        assert!(!book.is_crossed(), "one side empty");
        assert!(!Book::new().is_crossed());
    }

    #[test]
    fn malformed_input_is_refused_and_leaves_the_book_alone() {
        use DecimalError::*;
        let good = snapped();
        // (bad level, on the ask side?, refused price?, why): each payload carries a good bid
        // before the bad level, which must not be applied either.
        let cases = [
            (r#"["1e5","1"]"#, false, true, Syntax),
            (r#"["-1","1"]"#, false, true, Syntax),
            (r#"["","1"]"#, false, true, Syntax),
            (r#"[".5","1"]"#, true, true, Syntax),
            (r#"["5.","1"]"#, false, true, Syntax),
            (r#"["1.2.3","1"]"#, false, true, Syntax),
            (r#"[" 1","1"]"#, true, true, Syntax),
            (r#"["NaN","1"]"#, false, true, Syntax),
            (r#"["٣","1"]"#, false, true, Syntax),
            (r#"["0.0000000000000000001","1"]"#, false, true, TooPrecise),
            (r#"["1.00000000000000000000","1"]"#, true, true, TooPrecise),
            (r#"["999999999999999999999","1"]"#, false, true, TooLarge),
            (r#"["12345678901.1234567890123","1"]"#, false, true, TooLong),
            (r#"["1","-0"]"#, true, false, Syntax),
            (r#"["1","1,5"]"#, false, false, Syntax),
            (
                r#"["1","0.10000000000000000000000"]"#,
                true,
                false,
                TooPrecise,
            ),
            (r#"["1","1000000000000000000000"]"#, false, false, TooLarge),
            (r#"["1","12345678901234567890.123"]"#, true, false, TooLong),
        ];
        for (level, ask, price, why) in cases {
            let (bids, asks) = if ask {
                (r#"["99.9","1"]"#.to_owned(), level.to_owned())
            } else {
                (format!(r#"["99.9","1"],{level}"#), String::new())
            };
            let payload = diff(101, &bids, &asks);
            let pair: (String, String) = serde_json::from_str(level).unwrap();
            let want = if price {
                BookError::Price { text: pair.0, why }
            } else {
                BookError::Qty { text: pair.1, why }
            };
            let mut book = good.clone();
            assert_eq!(book.apply_diff(&payload), Err(want), "{payload}");
            assert_eq!(side(book.bids()), side(good.bids()), "{payload}");
            assert_eq!(side(book.asks()), side(good.asks()), "{payload}");
            assert_eq!(book.update_id(), Some(100));
        }
    }

    #[test]
    fn malformed_payloads_are_typed_errors() {
        let mut book = snapped();
        let json = |text: &str| matches!(book.clone().apply_diff(text), Err(BookError::Json(_)));
        for text in [
            "",
            "null",
            "[]",
            r#"{"u":1,"b":[],"a":[]"#,
            r#"{"u":1,"b":[],"a":[]} x"#,
            r#"{"u":-1,"b":[],"a":[]}"#,
            r#"{"u":"1","b":[],"a":[]}"#,
            r#"{"u":1,"b":{},"a":[]}"#,
            r#"{"u":1,"b":[["1"]],"a":[]}"#,
            r#"{"u":1,"b":[["1","2","3"]],"a":[]}"#,
            r#"{"u":1,"b":[[1,2]],"a":[]}"#,
            r#"{"u":1,"b":[["\u0031","2"]],"a":[]}"#,
        ] {
            assert!(json(text), "{text:?}");
        }
        assert_eq!(
            book.apply_diff(r#"{"b":[],"a":[]}"#),
            Err(BookError::Missing("u"))
        );
        assert_eq!(
            book.apply_diff(r#"{"u":1,"a":[]}"#),
            Err(BookError::Missing("b"))
        );
        assert_eq!(
            book.apply_diff(r#"{"u":1,"b":[]}"#),
            Err(BookError::Missing("a"))
        );
        assert_eq!(
            book.reset_from_snapshot(r#"{"u":1,"b":[],"a":[]}"#),
            Err(BookError::Missing("bids"))
        );
        assert_eq!(
            book.replace_partial(r#"{"u":1,"bids":[],"asks":[]}"#),
            Err(BookError::Missing("b"))
        );
        assert_eq!(
            book.replace_partial(r#"{"lastUpdateId":1,"b":[],"a":[]}"#),
            Err(BookError::Missing("bids"))
        );
        // Escaped keys and unknown fields are fine.
        assert_eq!(
            book.apply_diff(r#"{"\u0075":101,"new":{"x":[1]},"b":[],"a":[]}"#),
            Ok(101)
        );
        assert_eq!(book.bids().len(), 3);
    }

    #[test]
    fn top_and_json_give_the_best_levels_as_received() {
        let book = snapped();
        let top = book.top(2);
        assert_eq!(side(top.bids), pairs(&[("100.0", "1"), ("99.5", "2")]));
        assert_eq!(side(top.asks), pairs(&[("100.5", "4"), ("101", "5")]));
        let mut out = b"{".to_vec();
        book.write_top_json(2, &mut out);
        out.push(b'}');
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            r#"{"bids":[["100.0","1"],["99.5","2"]],"asks":[["100.5","4"],["101","5"]]}"#
        );
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
        let mut empty = Vec::new();
        Book::new().write_top_json(5, &mut empty);
        assert_eq!(empty, br#""bids":[],"asks":[]"#);
    }

    #[test]
    fn clear_forgets_levels_and_id() {
        let mut book = snapped();
        assert!(!book.is_empty());
        book.clear();
        assert!(book.is_empty());
        assert_eq!(book.update_id(), None);
        assert_eq!(book.best_bid(), None);
    }

    /// Checks the ladder's invariants and returns its ranks, best last.
    fn ranks(ladder: &Ladder) -> Vec<u128> {
        assert_eq!(ladder.lows.len(), ladder.blocks.len());
        for (block, low) in ladder.blocks.iter().zip(&ladder.lows) {
            assert!(!block.is_empty() && block.len() <= BLOCK);
            assert_eq!(block[0].rank, *low);
        }
        let ranks: Vec<u128> = ladder.blocks.iter().flatten().map(|l| l.rank).collect();
        assert!(
            ranks.windows(2).all(|w| w[0] < w[1]),
            "not strictly ascending"
        );
        assert_eq!(ranks.len(), ladder.len);
        ranks
    }

    #[test]
    fn ladder_agrees_with_a_btree_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let text = Text::new("1").unwrap();
        let level = |rank| Level {
            rank,
            price: text,
            qty: text,
        };
        let mut ladder = Ladder::default();
        let mut model = std::collections::BTreeSet::new();
        // Ranks from a narrow range, so blocks fill, split, thin out, merge, empty and get
        // reused: phases that mostly insert, then balance, then mostly remove, and now and then
        // a snapshot replaces everything.
        for round in 0..60 {
            let insert_share = [0.8, 0.5, 0.1][round % 3];
            for _ in 0..2_000 {
                let rank = rng.random_range(0..3 * BLOCK as u128 * 10);
                if rng.random_bool(insert_share) {
                    ladder.apply(Change::Set(level(rank)));
                    model.insert(rank);
                } else {
                    ladder.apply(Change::Remove { rank });
                    model.remove(&rank);
                }
            }
            assert_eq!(ranks(&ladder), model.iter().copied().collect::<Vec<_>>());
            let best = ladder.best().map(|l| l.rank);
            assert_eq!(best, model.last().copied());
            if round % 5 == 4 {
                let mut changes: Vec<Change> = (0..rng.random_range(0..500))
                    .map(|_| Change::Set(level(rng.random_range(0..100_000))))
                    .collect();
                model = changes.iter().map(Change::rank).collect();
                ladder.replace(&mut changes);
                assert_eq!(ranks(&ladder), model.iter().copied().collect::<Vec<_>>());
            }
        }
        assert!(!ladder.spare.is_empty(), "emptied blocks are kept");
    }

    #[test]
    fn a_level_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Level>(), 64);
    }

    #[test]
    fn errors_read_well() {
        let e = BookError::Price {
            text: "1e5".to_owned(),
            why: DecimalError::Syntax,
        };
        assert_eq!(e.to_string(), r#"bad price "1e5": not a plain decimal"#);
        assert_eq!(
            DecimalError::TooPrecise.to_string(),
            "more than 18 decimals"
        );
        assert_eq!(
            DecimalError::TooLong.to_string(),
            "longer than 23 characters"
        );
        assert_eq!(
            BookError::Missing("u").to_string(),
            r#"book payload lacks "u""#
        );
    }

    #[test]
    fn decimal_keys_are_exact() {
        assert_eq!(parse_decimal("0"), Ok(0));
        assert_eq!(parse_decimal("1"), Ok(10u128.pow(18)));
        assert_eq!(parse_decimal("61000.10"), parse_decimal("61000.1"));
        assert_eq!(parse_decimal("0.000000000000000001"), Ok(1));
        assert_eq!(
            parse_decimal("340282366920938463463.374607431768211455"),
            Ok(u128::MAX)
        );
        assert_eq!(
            parse_decimal("340282366920938463463.374607431768211456"),
            Err(DecimalError::TooLarge)
        );
        assert_eq!(
            parse_decimal("340282366920938463463"),
            Ok(340282366920938463463 * 10u128.pow(18))
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        /// One level change: price in cents, and a quantity (zero removes).
        type Change = (u32, u32);

        /// A price as the exchange spells it: two decimals.
        fn price(cents: u32) -> String {
            format!("{}.{:02}", cents / 100, cents % 100)
        }

        /// A quantity, zero spelled as the exchange does (`0`, `0.000`).
        fn qty(q: u32) -> String {
            match q {
                0 => "0.000".into(),
                q => format!("{q}"),
            }
        }

        fn levels(changes: &[Change]) -> String {
            let all: Vec<String> = changes
                .iter()
                .map(|&(p, q)| format!(r#"["{}","{}"]"#, price(p), qty(q)))
                .collect();
            all.join(",")
        }

        /// The model: price in cents to quantity text; a zero removes.
        fn apply(model: &mut BTreeMap<u32, String>, changes: &[Change]) {
            for &(p, q) in changes {
                if q == 0 {
                    model.remove(&p);
                } else {
                    model.insert(p, qty(q));
                }
            }
        }

        fn expected<'a>(
            model: impl Iterator<Item = (&'a u32, &'a String)>,
        ) -> Vec<(String, String)> {
            model.map(|(p, q)| (price(*p), q.clone())).collect()
        }

        /// Changes over a narrow band of prices, so that levels are set, replaced and removed
        /// again and again; a third of them removals.
        fn changes() -> impl Strategy<Value = Vec<Change>> {
            proptest::collection::vec((9_900..10_100u32, prop_oneof![Just(0u32), 1..50u32]), 0..20)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// A snapshot, then random diff events, sometimes another snapshot: after each, both
            /// sides are the model's levels, best first, with the texts last received.
            #[test]
            fn random_updates_match_a_btreemap_model(
                steps in proptest::collection::vec((changes(), changes(), proptest::bool::weighted(0.05)), 1..60),
            ) {
                let mut book = Book::new();
                let (mut bids, mut asks) = (BTreeMap::new(), BTreeMap::new());
                book.reset_from_snapshot(r#"{"lastUpdateId":1,"bids":[],"asks":[]}"#).unwrap();
                for (u, (b, a, snapshot)) in (2u64..).zip(&steps) {
                    if *snapshot {
                        let nonzero = |c: &Vec<Change>| -> Vec<Change> {
                            c.iter().copied().filter(|&(_, q)| q > 0).collect()
                        };
                        let (b, a) = (nonzero(b), nonzero(a));
                        let body = format!(
                            r#"{{"lastUpdateId":{u},"E":1,"T":1,"bids":[{}],"asks":[{}]}}"#,
                            levels(&b),
                            levels(&a)
                        );
                        prop_assert_eq!(book.reset_from_snapshot(&body), Ok(u));
                        bids.clear();
                        asks.clear();
                        apply(&mut bids, &b);
                        apply(&mut asks, &a);
                    } else {
                        prop_assert_eq!(book.apply_diff(&diff(u, &levels(b), &levels(a))), Ok(u));
                        apply(&mut bids, b);
                        apply(&mut asks, a);
                    }
                    prop_assert_eq!(side(book.bids()), expected(bids.iter().rev()));
                    prop_assert_eq!(side(book.asks()), expected(asks.iter()));
                    prop_assert_eq!(book.update_id(), Some(u));
                }
            }
        }
    }
}
