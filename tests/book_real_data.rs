//! The proof that the book rebuilt from a REST snapshot and diff events is right, on real Binance
//! recordings (`tests/data/binance/SOURCES.md` says where each comes from).
//!
//! The exchange publishes its own best bid and ask in `bookTicker`, stamped with the same update
//! id sequence as the depth events. Whenever a ticker's `u` equals the `u` the book reached after
//! applying an event (or the snapshot's `lastUpdateId`), both describe the same instant, so the
//! book's best levels must equal the ticker's, price and quantity, to the character. The rebuild
//! runs the same machines as `obrec replay` (`Chain`, `BookSync`, `Book`), and the tests pin how
//! many comparisons were made, where the snapshot bridged and that the chain never broke. Leaving
//! one event out must make the comparison fail, which shows that it can.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

use serde::Deserialize;

mod common;

use common::fixture;
use obrec::Book;
use obrec::{BookSync, Chain, Ids, SnapshotStep, Step, Verdict};
use obrec::{Frame, Kind, parse_frame};

/// The one connection every recording came over.
const CONN: u64 = 1;

fn read_text(name: &str) -> String {
    let path = fixture(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if !name.ends_with(".gz") {
        return String::from_utf8(bytes).expect("fixture is UTF-8");
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text
}

/// A depth event on its way through `BookSync`.
#[derive(Debug)]
struct Diff<'a> {
    /// 1-based ordinal among this symbol's depth events, as SOURCES.md counts them.
    event: usize,
    /// 1-based line in the recording.
    line: usize,
    payload: &'a str,
}

/// Best bid and ask as `(price, qty)` text.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Best {
    bid: (String, String),
    ask: (String, String),
}

/// A `bookTicker` event.
#[derive(Debug)]
struct Ticker {
    line: usize,
    u: u64,
    best: Best,
}

#[derive(Deserialize)]
struct TickerFrame<'a> {
    #[serde(borrow)]
    data: TickerData<'a>,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct TickerData<'a> {
    u: u64,
    s: &'a str,
    b: &'a str,
    B: &'a str,
    a: &'a str,
    A: &'a str,
}

/// Reads a `bookTicker` frame: its symbol and the ticker.
fn ticker(line: usize, frame: &str) -> (&str, Ticker) {
    let t: TickerFrame = serde_json::from_str(frame).expect("bookTicker frame");
    let d = t.data;
    let best = Best {
        bid: (d.b.to_owned(), d.B.to_owned()),
        ask: (d.a.to_owned(), d.A.to_owned()),
    };
    (d.s, Ticker { line, u: d.u, best })
}

/// One symbol's book, rebuilt the way `obrec replay` does, with what the checks need.
struct Rebuild<'a> {
    book: Book,
    chain: Chain,
    sync: BookSync<Diff<'a>>,
    /// Depth events seen.
    events: usize,
    /// An event to leave out of the book (it still goes through the chain): the negative checks.
    skip: Option<usize>,
    /// `(event, line)` of every event that bridged a snapshot.
    bridges: Vec<(usize, usize)>,
    /// Chain discontinuities and lost books.
    breaks: usize,
    applied: usize,
    /// Events after which the book was crossed, or had an empty side.
    crossed: Vec<usize>,
    one_sided: Vec<usize>,
    /// The best levels at every update id the book reached.
    best_at: HashMap<u64, Best>,
}

impl<'a> Rebuild<'a> {
    fn new(skip: Option<usize>) -> Rebuild<'a> {
        Rebuild {
            book: Book::new(),
            chain: Chain::new(),
            sync: BookSync::new(),
            events: 0,
            skip,
            bridges: Vec::new(),
            breaks: 0,
            applied: 0,
            crossed: Vec::new(),
            one_sided: Vec::new(),
            best_at: HashMap::new(),
        }
    }

    fn depth(&mut self, line: usize, ids: Ids, payload: &'a str) {
        self.events += 1;
        let diff = Diff {
            event: self.events,
            line,
            payload,
        };
        let verdict = self.chain.check(ids, CONN);
        assert_ne!(verdict, Verdict::Duplicate, "line {line}");
        if verdict.is_discontinuity() {
            self.breaks += 1;
        }
        let was_live = self.sync.is_live();
        match self.sync.event(ids, verdict, diff) {
            Step::Buffered | Step::Covered => {}
            Step::Apply(diffs) => {
                if !was_live {
                    self.bridges.push((diffs[0].event, diffs[0].line));
                }
                diffs.into_iter().for_each(|d| self.apply(d));
            }
            Step::Lost => {
                self.breaks += 1;
                self.book.clear();
            }
        }
    }

    fn snapshot(&mut self, line: usize, body: &str) -> u64 {
        let last_update_id = self.book.reset_from_snapshot(body).expect("snapshot");
        self.record_best();
        match self.sync.snapshot(last_update_id) {
            SnapshotStep::Bridged(diffs) => {
                self.bridges.push((diffs[0].event, diffs[0].line));
                diffs.into_iter().for_each(|d| self.apply(d));
            }
            SnapshotStep::Pending => {}
            SnapshotStep::TooOld => panic!("snapshot at line {line} is older than the buffer"),
        }
        last_update_id
    }

    fn apply(&mut self, diff: Diff<'_>) {
        if self.skip == Some(diff.event) {
            return;
        }
        self.book
            .apply_diff(diff.payload)
            .unwrap_or_else(|e| panic!("line {}: {e}", diff.line));
        self.applied += 1;
        if self.book.is_crossed() {
            self.crossed.push(diff.event);
        }
        if self.book.best_bid().is_none() || self.book.best_ask().is_none() {
            self.one_sided.push(diff.event);
        }
        self.record_best();
    }

    fn record_best(&mut self) {
        let (Some(u), Some(bid), Some(ask)) = (
            self.book.update_id(),
            self.book.best_bid(),
            self.book.best_ask(),
        ) else {
            return;
        };
        let best = Best {
            bid: (bid.price.to_owned(), bid.qty.to_owned()),
            ask: (ask.price.to_owned(), ask.qty.to_owned()),
        };
        self.best_at.insert(u, best);
    }

    /// Compares every ticker stamped with an update id the book reached.
    fn compare(&self, tickers: &[Ticker]) -> Comparison {
        let mut result = Comparison::default();
        for t in tickers {
            let Some(book) = self.best_at.get(&t.u) else {
                continue;
            };
            result.compared += 1;
            if *book != t.best {
                result.mismatches.push(format!(
                    "line {} u={}: book {book:?}, bookTicker {:?}",
                    t.line, t.u, t.best
                ));
            }
        }
        result
    }
}

#[derive(Debug, Default)]
struct Comparison {
    compared: usize,
    mismatches: Vec<String>,
}

// ---- hftbacktest USD-M BTCUSDT: snapshot, @depth@0ms and bookTicker of the same 5.7 minutes ----

const HFT_FILE: &str = "hftbacktest_usdm_btcusdt_20240808.gz";

/// Depth events in the file (SOURCES.md).
const HFT_EVENTS: usize = 6_551;

/// The snapshot bridges at depth event 5, file line 42; events 1-4 are older and dropped.
const HFT_BRIDGE: (usize, usize) = (5, 42);

/// Tickers whose `u` the book reached, counted once on this recording and pinned. Of the 66,089
/// tickers, these are all that share a `u` with a depth event: a ticker is sent whenever the best
/// level changes, a depth event batches many updates, and the two end on the same update in
/// roughly one event of ten.
const HFT_COMPARISONS: usize = 629;

/// The decompressed recording, read once for all tests of this binary.
fn hft_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| read_text(HFT_FILE))
}

fn rebuild_hft(skip: Option<usize>) -> (Rebuild<'static>, Vec<Ticker>) {
    let mut rebuild = Rebuild::new(skip);
    let mut tickers = Vec::new();
    for (i, line) in hft_text().lines().enumerate() {
        let line_no = i + 1;
        // `<recv ns> <message>`; the message has no spaces.
        let (_, message) = line.split_once(' ').expect("two fields");
        if message.starts_with(r#"{"lastUpdateId""#) {
            rebuild.snapshot(line_no, message);
            continue;
        }
        match parse_frame(message).unwrap_or_else(|e| panic!("line {line_no}: {e}")) {
            Frame::Depth(h) => rebuild.depth(line_no, h.ids, &message[h.data]),
            Frame::Kind(h) if h.kind == Kind::BookTicker => {
                let (symbol, t) = ticker(line_no, message);
                assert_eq!(symbol, "BTCUSDT");
                tickers.push(t);
            }
            Frame::Kind(_) | Frame::Other { .. } => {}
            Frame::Reply | Frame::ServerShutdown(_) => panic!("line {line_no}: unexpected control"),
        }
    }
    (rebuild, tickers)
}

#[test]
fn hftbacktest_book_matches_every_book_ticker() {
    let (rebuild, tickers) = rebuild_hft(None);
    let result = rebuild.compare(&tickers);
    println!(
        "hftbacktest BTCUSDT: {} events, {} applied, bridge at event {} line {}, {} bookTicker comparisons, {} mismatches",
        rebuild.events,
        rebuild.applied,
        HFT_BRIDGE.0,
        HFT_BRIDGE.1,
        result.compared,
        result.mismatches.len()
    );
    assert_eq!(rebuild.events, HFT_EVENTS);
    assert_eq!(rebuild.bridges, [HFT_BRIDGE]);
    assert_eq!(rebuild.breaks, 0);
    assert_eq!(rebuild.applied, HFT_EVENTS - (HFT_BRIDGE.0 - 1));
    assert_eq!(rebuild.crossed, [0usize; 0], "crossed after these events");
    assert_eq!(
        rebuild.one_sided, [0usize; 0],
        "a side empty after these events"
    );
    assert!(
        result.mismatches.is_empty(),
        "{:#?}",
        &result.mismatches[..result.mismatches.len().min(5)]
    );
    assert_eq!(result.compared, HFT_COMPARISONS);
}

/// An event that moves the best levels for a while: found once by leaving out each early event in
/// turn, most of which leave no trace at any compared update id.
const HFT_TELLING_EVENT: usize = 9;

#[test]
fn hftbacktest_comparison_catches_one_missing_event() {
    let (rebuild, tickers) = rebuild_hft(Some(HFT_TELLING_EVENT));
    let result = rebuild.compare(&tickers);
    println!(
        "hftbacktest BTCUSDT without event {HFT_TELLING_EVENT}: {} of {} comparisons disagree, crossed after {} events",
        result.mismatches.len(),
        result.compared,
        rebuild.crossed.len()
    );
    // The chain machinery saw every event: only the book misses one.
    assert_eq!(rebuild.breaks, 0);
    assert_eq!(rebuild.applied, HFT_EVENTS - HFT_BRIDGE.0);
    assert!(!result.mismatches.is_empty());
    assert!(!rebuild.crossed.is_empty());
}

/// Applying the whole recording to its snapshot may allocate at most this often: the book grows
/// from 2,000 to 9,600 levels on the way, so it needs new blocks, but a level or an event must not
/// cost an allocation. Measured: 202 (a `BTreeMap` per side made about 7,000).
const HFT_MAX_ALLOCATIONS: usize = HFT_EVENTS / 10;

#[test]
fn applying_real_events_barely_allocates() {
    let mut snapshot = None;
    let mut diffs = Vec::new();
    for line in hft_text().lines() {
        let (_, message) = line.split_once(' ').expect("two fields");
        if message.starts_with(r#"{"lastUpdateId""#) {
            snapshot = Some(message);
        } else if let Ok(Frame::Depth(h)) = parse_frame(message) {
            diffs.push((h.ids.last, &message[h.data]));
        }
    }
    let mut book = Book::new();
    let last_update_id = book
        .reset_from_snapshot(snapshot.expect("snapshot"))
        .expect("snapshot");
    let diffs: Vec<&str> = diffs
        .into_iter()
        .filter(|(u, _)| *u >= last_update_id)
        .map(|(_, payload)| payload)
        .collect();
    let before = allocations();
    for diff in &diffs {
        book.apply_diff(diff).expect("diff");
    }
    let made = allocations() - before;
    println!(
        "hftbacktest BTCUSDT: {} events applied with {made} allocations",
        diffs.len()
    );
    assert_eq!(diffs.len(), HFT_EVENTS - (HFT_BRIDGE.0 - 1));
    assert!(made <= HFT_MAX_ALLOCATIONS, "{made} allocations");
}

/// Counts the allocations of each thread, so a test can watch its own while others run.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

fn count_allocation() {
    // A thread being torn down has no counter left; its allocations do not matter here.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on unchanged to the system allocator; counting touches only a
// const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller's guarantees for `layout` are the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

// ---- cryptofeed USD-M: 4 symbols on one connection, 4 REST snapshots ----

const CRYPTOFEED_WS: &str = "cryptofeed_binance_futures_ws.ndjson";
const CRYPTOFEED_REST: &str = "cryptofeed_binance_futures_rest_depth.ndjson";

/// One symbol of the cryptofeed recording, as SOURCES.md describes it.
struct Expected {
    symbol: &'static str,
    /// `lastUpdateId` of its snapshot; the REST file holds the snapshots in this table's order.
    last_update_id: u64,
    events: usize,
    /// `(depth event of this symbol, line in the ws file)` of the bridge.
    bridge: (usize, usize),
    /// Tickers compared, counted once and pinned.
    comparisons: usize,
    /// The first event whose omission the comparison notices (found by leaving out each in turn).
    telling_event: usize,
}

const CRYPTOFEED: [Expected; 4] = [
    Expected {
        symbol: "SUSHIUSDT",
        last_update_id: 600_859_605_926,
        events: 255,
        bridge: (4, 12),
        comparisons: 12,
        telling_event: 25,
    },
    Expected {
        symbol: "AKROUSDT",
        last_update_id: 600_859_605_486,
        events: 189,
        bridge: (2, 10),
        comparisons: 7,
        telling_event: 10,
    },
    Expected {
        symbol: "KEEPUSDT",
        last_update_id: 600_859_619_434,
        events: 135,
        bridge: (4, 30),
        comparisons: 13,
        telling_event: 43,
    },
    Expected {
        symbol: "CTKUSDT",
        last_update_id: 600_859_618_836,
        events: 185,
        bridge: (6, 28),
        comparisons: 18,
        telling_event: 26,
    },
];

#[derive(Deserialize)]
struct Timed {
    data: EventTime,
}

#[derive(Deserialize)]
struct EventTime {
    #[serde(rename = "E")]
    event_ms: u64,
}

#[derive(Deserialize)]
struct SnapshotTime {
    #[serde(rename = "E")]
    output_ms: u64,
}

/// Rebuilds every symbol's book. The recording does not say when each snapshot arrived, so each
/// is fed just before the first message stamped later than its own `E`.
fn rebuild_cryptofeed<'a>(
    ws: &'a str,
    rest: &'a str,
    skip: Option<(&str, usize)>,
) -> HashMap<&'static str, (Rebuild<'a>, Vec<Ticker>)> {
    let mut symbols: HashMap<&'static str, (Rebuild<'a>, Vec<Ticker>)> = CRYPTOFEED
        .iter()
        .map(|x| {
            let skip = skip.filter(|(s, _)| *s == x.symbol).map(|(_, event)| event);
            (x.symbol, (Rebuild::new(skip), Vec::new()))
        })
        .collect();
    let mut snapshots: Vec<(&'static str, u64, usize, &str)> = rest
        .lines()
        .zip(&CRYPTOFEED)
        .enumerate()
        .map(|(i, (body, x))| {
            let t: SnapshotTime = serde_json::from_str(body).expect("snapshot E");
            (x.symbol, t.output_ms, i + 1, body)
        })
        .collect();
    assert_eq!(snapshots.len(), CRYPTOFEED.len());
    let mut feed_snapshots = |symbols: &mut HashMap<_, (Rebuild<'a>, _)>, now_ms: u64| {
        snapshots.retain(|&(symbol, output_ms, line, body)| {
            if output_ms >= now_ms {
                return true;
            }
            let (rebuild, _) = symbols.get_mut(symbol).expect("known symbol");
            let id = rebuild.snapshot(line, body);
            let x = CRYPTOFEED
                .iter()
                .find(|x| x.symbol == symbol)
                .expect("known symbol");
            assert_eq!(id, x.last_update_id, "{symbol}: REST line {line}");
            false
        });
    };
    for (i, message) in ws.lines().enumerate() {
        let line_no = i + 1;
        let t: Timed = serde_json::from_str(message).expect("event time");
        feed_snapshots(&mut symbols, t.data.event_ms);
        match parse_frame(message).unwrap_or_else(|e| panic!("line {line_no}: {e}")) {
            Frame::Depth(h) => {
                let (rebuild, _) = symbols.get_mut(&*h.symbol).expect("known symbol");
                rebuild.depth(line_no, h.ids, &message[h.data]);
            }
            Frame::Kind(h) if h.kind == Kind::BookTicker => {
                let (symbol, t) = ticker(line_no, message);
                symbols.get_mut(symbol).expect("known symbol").1.push(t);
            }
            Frame::Kind(_) | Frame::Other { .. } => {}
            Frame::Reply | Frame::ServerShutdown(_) => panic!("line {line_no}: unexpected control"),
        }
    }
    feed_snapshots(&mut symbols, u64::MAX);
    symbols
}

#[test]
fn cryptofeed_books_match_their_book_tickers() {
    let (ws, rest) = (read_text(CRYPTOFEED_WS), read_text(CRYPTOFEED_REST));
    let symbols = rebuild_cryptofeed(&ws, &rest, None);
    for x in &CRYPTOFEED {
        let (rebuild, tickers) = &symbols[x.symbol];
        let result = rebuild.compare(tickers);
        println!(
            "cryptofeed {}: {} events, {} applied, bridge at event {} line {}, {} bookTickers, {} comparisons, {} mismatches",
            x.symbol,
            rebuild.events,
            rebuild.applied,
            x.bridge.0,
            x.bridge.1,
            tickers.len(),
            result.compared,
            result.mismatches.len()
        );
        assert_eq!(rebuild.events, x.events, "{}", x.symbol);
        assert_eq!(rebuild.bridges, [x.bridge], "{}", x.symbol);
        assert_eq!(rebuild.breaks, 0, "{}", x.symbol);
        assert_eq!(rebuild.applied, x.events - (x.bridge.0 - 1), "{}", x.symbol);
        assert_eq!(
            rebuild.crossed, [0usize; 0],
            "{}: crossed after these events",
            x.symbol
        );
        assert_eq!(
            rebuild.one_sided, [0usize; 0],
            "{}: a side empty after these events",
            x.symbol
        );
        assert!(
            result.mismatches.is_empty(),
            "{}: {:#?}",
            x.symbol,
            result.mismatches
        );
        assert_eq!(result.compared, x.comparisons, "{}", x.symbol);
    }
}

#[test]
fn cryptofeed_comparisons_catch_one_missing_event() {
    let (ws, rest) = (read_text(CRYPTOFEED_WS), read_text(CRYPTOFEED_REST));
    for x in &CRYPTOFEED {
        let symbols = rebuild_cryptofeed(&ws, &rest, Some((x.symbol, x.telling_event)));
        let (rebuild, tickers) = &symbols[x.symbol];
        let result = rebuild.compare(tickers);
        println!(
            "cryptofeed {} without event {}: {} of {} comparisons disagree",
            x.symbol,
            x.telling_event,
            result.mismatches.len(),
            result.compared
        );
        assert_eq!(rebuild.breaks, 0, "{}", x.symbol);
        assert!(!result.mismatches.is_empty(), "{}", x.symbol);
    }
}

// ---- crypto-crawler-rs: single real frames of other shapes ----

const CRAWLER: &str = "crypto-crawler-rs_binance_msg_samples.ndjson";

/// Lines holding futures partial-depth events (`depthUpdate` on `@depth5` / `@depth20`), USD-M and
/// COIN-M; line 15 has `"pu":-1` and an empty bid side.
const CRAWLER_PARTIALS: [usize; 8] = [12, 13, 14, 15, 16, 29, 30, 31];

/// Lines holding REST depth snapshots: spot, COIN-M (with extra fields) and USD-M.
const CRAWLER_SNAPSHOTS: [usize; 5] = [22, 23, 24, 25, 26];

/// An envelope's payload, as received.
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

/// `[[price, qty], …]` as text.
fn pairs(levels: &serde_json::Value) -> Vec<(String, String)> {
    serde_json::from_value(levels.clone()).expect("[[price, qty], …]")
}

fn held(levels: obrec::Levels<'_>) -> Vec<(String, String)> {
    levels
        .map(|q| (q.price.to_owned(), q.qty.to_owned()))
        .collect()
}

#[test]
fn real_snapshots_and_partial_frames_become_the_whole_book() {
    let text = read_text(CRAWLER);
    let lines: Vec<&str> = text.lines().collect();
    let mut book = Book::new();
    for line in CRAWLER_SNAPSHOTS {
        let body: serde_json::Value = serde_json::from_str(lines[line - 1]).expect("json");
        let id = book.reset_from_snapshot(lines[line - 1]).expect("snapshot");
        assert_eq!(Some(id), body["lastUpdateId"].as_u64(), "line {line}");
        assert_eq!(held(book.bids()), pairs(&body["bids"]), "line {line}");
        assert_eq!(held(book.asks()), pairs(&body["asks"]), "line {line}");
        assert!(!book.is_crossed(), "line {line}");
    }
    for line in CRAWLER_PARTIALS {
        let frame: serde_json::Value = serde_json::from_str(lines[line - 1]).expect("json");
        let raw: RawFrame = serde_json::from_str(lines[line - 1]).expect("envelope");
        // Whatever the book held before, a partial event is all of it afterwards.
        let id = book.replace_partial(raw.data.get()).expect("partial");
        assert_eq!(Some(id), frame["data"]["u"].as_u64(), "line {line}");
        assert_eq!(held(book.bids()), pairs(&frame["data"]["b"]), "line {line}");
        assert_eq!(held(book.asks()), pairs(&frame["data"]["a"]), "line {line}");
        assert!(!book.is_crossed(), "line {line}");
    }
}
