//! `obrec replay`: verify and summarise recordings offline.
//!
//! Files are read in name order (which is time order per symbol), complete and `.part` alike. Each
//! symbol's events go through the same [`Chain`] the recorder uses live, and the same [`Metrics`]
//! build the report, so a replayed report is comparable key for key with the live `metrics.json`.
//! A damaged file, depth or snapshot, is read up to the damage, which is reported with its
//! position. Every snapshot of a symbol after its first is counted as a resync, as live.
//!
//! Files of the streams beside the book (trade, aggTrade, bookTicker, markPrice, forceOrder) are
//! read after the depth files, each (symbol, kind) series in name order, through the same
//! [`Tape`](crate::market::kind::Tape) the recorder runs live; [`kinds`](super::kinds) says
//! what is counted and how backfilled lines close gaps. Meta lines (a `serverShutdown` notice),
//! in any file, are passed over and counted. With `--book`, trades are printed between the books
//! ([`trades`](super::trades)).
//!
//! A replay stops early, between two chunks of lines, when the [`Shutdown`] token is triggered,
//! and with `--book` when the reader of the books goes away; [`ReplayReport::stopped`] says so.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::market::book::Book;
use crate::market::kind::Kind;
use crate::market::sequence::{Chain, Verdict};
use crate::market::stream::is_partial;
use crate::market::symbol::{Symbol, SymbolId};
use crate::metrics::streams::StreamCounters;
use crate::metrics::{Counters, Metrics, Report, ReportClock, SymbolCounters};
use crate::offline::book::{Books, RebuildError};
use crate::offline::console::reader_gone;
use crate::offline::kinds::{KindGap, KindReport, Kinds, Refused};
use crate::offline::progress::progress_bar;
use crate::offline::trades::Trades;
use crate::store::gzip::{CountingReader, MemberDecoder, open_recording};
use crate::store::line::{DepthLine, is_meta, parse_depth, parse_kind, parse_meta, parse_snapshot};
use crate::store::lines::{LineError, LineReader, open_lines};
use crate::store::names::{FileKind, classify};
use crate::util::shutdown::Shutdown;
use crossbeam_channel::{Receiver, Sender};

/// A `pu` mismatch found in a recording.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BreakAt {
    pub file: String,
    pub line: u64,
    pub symbol: String,
    pub expected_pu: u64,
    pub got_pu: u64,
}

/// Where a symbol's events moved to another connection.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ConnChange {
    pub file: String,
    pub line: u64,
    pub symbol: String,
    pub from_conn: u64,
    pub to_conn: u64,
    /// Whether the new connection's first event chained to the old one's last (no data lost).
    pub seamless: bool,
}

/// What became of one file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileReport {
    pub file: String,
    pub lines: u64,
    /// Read to a clean end of gzip data.
    pub complete: bool,
    /// What stopped the read, with its position, when not complete.
    pub error: Option<String>,
}

/// `--json`: the metrics.json schema plus what only a replay can list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReplayReport {
    #[serde(flatten)]
    pub metrics: Report,
    /// The first [`MAX_LISTED`] breaks; every break is counted per symbol in `symbols`.
    pub breaks: Vec<BreakAt>,
    /// Breaks beyond the first [`MAX_LISTED`], counted but not listed.
    #[serde(default)]
    pub breaks_unlisted: u64,
    /// The first [`MAX_LISTED`] connection changes; `continuity.reconnects` counts them all.
    pub connection_changes: Vec<ConnChange>,
    /// Connection changes beyond the first [`MAX_LISTED`], counted but not listed.
    #[serde(default)]
    pub connection_changes_unlisted: u64,
    pub files: Vec<FileReport>,
    /// Per symbol, when its first and last events were received.
    pub receipts: BTreeMap<String, Receipts>,
    /// Per (symbol, kind) series of the streams beside the book, by kind then symbol; absent
    /// when none was read, so a depth-only report is what it always was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<KindReport>,
    /// The first [`MAX_LISTED`] gaps in those series; `kinds` counts them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kind_gaps: Vec<KindGap>,
    /// Gaps beyond the first [`MAX_LISTED`], counted but not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kind_gaps_unlisted: u64,
    /// Meta lines passed over, by what they say (`serverShutdown`). A notice is written to the
    /// file of every stream its connection carried, so this counts it once per file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta_lines: BTreeMap<String, u64>,
    /// Why the replay ended before the end of its input; `None` when it read everything. A
    /// stopped replay never writes its `--json` report, so this is not in the schema.
    #[serde(skip)]
    pub stopped: Option<Stopped>,
}

impl ReplayReport {
    pub fn all_complete(&self) -> bool {
        self.files.iter().all(|f| f.complete)
    }

    /// Whether a break was found that no backfill closed: depth breaks (which nothing closes)
    /// and the open breaks of the streams beside the book. What `--strict` fails on.
    pub fn has_open_breaks(&self) -> bool {
        !self.breaks.is_empty() || self.kinds.iter().any(|k| k.open_breaks > 0)
    }

    /// Whether any event was read, of depth or of a stream beside the book.
    pub fn has_events(&self) -> bool {
        self.metrics.total_messages > 0 || self.kinds.iter().any(|k| k.events + k.backfilled > 0)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The receive times of a symbol's first and last events, ns since the Unix epoch.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Receipts {
    pub first_ns: u64,
    pub last_ns: u64,
}

/// Why a replay ended before the end of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown token was triggered (a signal).
    Interrupted,
    /// The reader of the `--book` lines closed its end (`| head`).
    ReaderGone,
}

/// Verifies and summarises `files` (already expanded and ordered).
pub fn replay(files: &[PathBuf]) -> Result<ReplayReport> {
    replay_with(files, None, &Shutdown::new())
}

/// Like [`replay`], stopping early when `shutdown` is triggered; with `books`, also rebuilds each
/// symbol's book (snapshot files feed the diff streams) and writes one line per event with the top
/// levels, and between them the trades of the trade and aggTrade files among `files`.
///
/// # Errors
/// [`Error::Invalid`] when `books` are asked of diff-depth events without any snapshot of their
/// symbol among `files`; [`Error::Stdout`] when the books cannot be written; a file that cannot be
/// opened.
pub fn replay_with(
    files: &[PathBuf],
    books: Option<BookOutput<'_>>,
    shutdown: &Shutdown,
) -> Result<ReplayReport> {
    // Snapshots first: the books start from them; the streams beside the book last, on their
    // own (their trades reach `--book` through cursors of their own).
    let mut snapshots = Vec::new();
    let mut depth = Vec::new();
    let mut streams = Vec::new();
    for path in files {
        match classify(path) {
            Some((_, FileKind::Snapshot)) => snapshots.push(path),
            Some((_, FileKind::Stream(kind))) => streams.push((path, kind)),
            _ => depth.push(path),
        }
    }
    let stream_files: Vec<&PathBuf> = streams.iter().map(|(path, _)| *path).collect();
    let mut state = State {
        progress: progress_bar(files),
        rebuild: books.map(|out| Rebuild::new(out, Trades::new(&stream_files))),
        shutdown: shutdown.clone(),
        ..State::default()
    };
    let mut reports = Vec::new();
    for path in snapshots {
        reports.extend(state.snapshot_file(path)?);
    }
    for path in depth {
        reports.extend(state.read_file(path, None)?);
    }
    if state.stopped.is_none()
        && let Some(rebuild) = &mut state.rebuild
    {
        let rest = rebuild.trades.write_rest(rebuild.out.writer);
        if let Err(e) = rest.and_then(|()| rebuild.out.writer.flush()) {
            if !reader_gone(&e) {
                return Err(Error::Stdout(e));
            }
            state.stopped = Some(Stopped::ReaderGone);
        }
    }
    for (path, kind) in streams {
        reports.extend(state.read_file(path, Some(kind))?);
    }
    if let Some(bar) = &state.progress {
        bar.finish_and_clear();
    }
    Ok(state.finish(reports))
}

/// Breaks and connection changes listed one by one in a report; the rest are counted. Enough to
/// find what went wrong in any real recording, and a bound on memory for a file of nothing but
/// breaks (a 10 GB file of one repeated line holds 16 million).
pub const MAX_LISTED: usize = 1000;
/// Distinct symbols a replay follows. Each costs its chain, counters and latency histograms, about
/// 60 KB, so this bounds a replay of any input to about 120 MB; Binance lists a few hundred USD-M
/// symbols, so a real recording is far below it.
pub const MAX_SYMBOLS: usize = 2048;
/// Series of the streams beside the book a replay follows: every kind of as many symbols. Each
/// costs its tape and figures, about 1.3 KB, so at most about 14 MB.
const MAX_SERIES: usize = MAX_SYMBOLS * Kind::ALL.len();
/// Distinct meta line names counted one by one (`serverShutdown` is the only one written); any
/// other is counted under [`OTHER_META`], so a file of made-up names costs nothing.
const MAX_META_NAMES: usize = 16;
const OTHER_META: &str = "other";

/// Lines between progress bar updates.
const PROGRESS_EVERY: u64 = 1 << 16;
/// Decompressed bytes per chunk: many lines each, so the hand-over between threads is rare and a
/// line split across two chunks (copied once) is the exception.
const READ_BLOCK: usize = 1 << 18;
/// Chunks decompressed ahead of the parser: enough to ride out an uneven pace, a few MB at most.
const CHUNKS_AHEAD: usize = 8;
/// Where `--book` lines go and how deep.
pub struct BookOutput<'a> {
    pub levels: usize,
    pub writer: &'a mut dyn Write,
}

/// Book rebuilding for `--book`.
struct Rebuild<'a> {
    out: BookOutput<'a>,
    books: Books,
    line: Vec<u8>,
    /// The trades printed between the books.
    trades: Trades,
}

impl<'a> Rebuild<'a> {
    fn new(out: BookOutput<'a>, trades: Trades) -> Rebuild<'a> {
        Rebuild {
            out,
            books: Books::default(),
            line: Vec::new(),
            trades,
        }
    }

    /// Prints the symbol's trades received up to the event, applies the event (and any snapshot
    /// received before it) and prints the book after each event applied.
    fn event(&mut self, h: &DepthLine, verdict: Verdict) -> std::result::Result<(), Halt> {
        self.trades
            .write_until(h.symbol, h.recv_ns, self.out.writer)
            .map_err(book_write)?;
        if verdict == Verdict::Duplicate {
            return Ok(());
        }
        if !is_partial(h.stream) && !self.books.has_snapshots(h.symbol) {
            return Err(Halt::Fail(Error::Invalid(format!(
                "{}: diff-depth events (--depth 0) without a snapshot file, so its book cannot be \
                 built: replay the recording's directory, or add its {}_snapshot_* files",
                h.symbol,
                h.symbol.to_ascii_lowercase()
            ))));
        }
        let (out, line) = (&mut self.out, &mut self.line);
        self.books.event(h, verdict, |book, u, data| {
            let event_ms = event_time(data).unwrap_or(h.event_ms);
            print_book(out, line, book, h.symbol, u, event_ms)
        })?;
        Ok(())
    }
}

/// Writes `{"symbol":…,"u":…,"E":…,"bids":[[p,q]…],"asks":[[p,q]…]}`.
fn print_book(
    out: &mut BookOutput<'_>,
    line: &mut Vec<u8>,
    book: &Book,
    symbol: &str,
    u: u64,
    event_ms: u64,
) -> std::result::Result<(), Halt> {
    let mut num = itoa::Buffer::new();
    line.clear();
    line.extend_from_slice(b"{\"symbol\":\"");
    line.extend_from_slice(symbol.as_bytes());
    line.extend_from_slice(b"\",\"u\":");
    line.extend_from_slice(num.format(u).as_bytes());
    line.extend_from_slice(b",\"E\":");
    line.extend_from_slice(num.format(event_ms).as_bytes());
    line.push(b',');
    book.write_top_json(out.levels, line);
    line.extend_from_slice(b"}\n");
    out.writer.write_all(line).map_err(book_write)
}

/// A failed write of the books: the reader went away (the replay stops, quietly), or standard
/// output failed.
fn book_write(e: io::Error) -> Halt {
    if reader_gone(&e) {
        Halt::Stop(Stopped::ReaderGone)
    } else {
        Halt::Fail(Error::Stdout(e))
    }
}

/// Why a line ends the reading of its file.
enum Halt {
    /// The line is unreadable: the file is damaged there.
    Damage(String),
    /// The replay ends here, on purpose.
    Stop(Stopped),
    /// The replay cannot go on.
    Fail(Error),
}

impl From<String> for Halt {
    fn from(what: String) -> Halt {
        Halt::Damage(what)
    }
}

impl From<RebuildError> for Halt {
    fn from(e: RebuildError) -> Halt {
        match e {
            RebuildError::Payload(what) => Halt::Damage(what),
            RebuildError::Unreadable(what) => Halt::Fail(Error::Invalid(what)),
        }
    }
}

/// The event time `E` of a payload.
fn event_time(data: &str) -> Option<u64> {
    #[derive(Deserialize)]
    #[allow(non_snake_case)]
    struct EventTime {
        E: u64,
    }
    serde_json::from_str::<EventTime>(data).ok().map(|e| e.E)
}

struct State<'a> {
    rebuild: Option<Rebuild<'a>>,
    shutdown: Shutdown,
    stopped: Option<Stopped>,
    /// Snapshots read per symbol (upper case), for the resync count.
    snapshots: HashMap<String, u64>,
    /// Per symbol id: its first and last receive times.
    receipts: Vec<Receipts>,
    /// A progress bar over the compressed bytes, on a terminal only.
    progress: Option<indicatif::ProgressBar>,
    /// Compressed bytes of the files already read.
    bytes_before: u64,
    symbols: HashMap<String, SymbolId>,
    chains: Vec<Chain>,
    last_conn: Vec<u64>,
    counters: Vec<SymbolCounters>,
    metrics: Metrics,
    breaks: Vec<BreakAt>,
    breaks_unlisted: u64,
    changes: Vec<ConnChange>,
    changes_unlisted: u64,
    /// Connection changes where the new connection's first event chained to the old one's last.
    rollovers: u64,
    /// Connection changes with a gap.
    reconnects: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    /// The streams beside the book.
    kinds: Kinds,
    meta_lines: BTreeMap<String, u64>,
}

impl Default for State<'_> {
    fn default() -> Self {
        State {
            rebuild: None,
            shutdown: Shutdown::new(),
            stopped: None,
            snapshots: HashMap::new(),
            receipts: Vec::new(),
            progress: None,
            bytes_before: 0,
            symbols: HashMap::new(),
            chains: Vec::new(),
            last_conn: Vec::new(),
            counters: Vec::new(),
            metrics: Metrics::new(Vec::new()),
            breaks: Vec::new(),
            breaks_unlisted: 0,
            changes: Vec::new(),
            changes_unlisted: 0,
            rollovers: 0,
            reconnects: 0,
            first_ns: None,
            last_ns: 0,
            kinds: Kinds::new(MAX_LISTED),
            meta_lines: BTreeMap::new(),
        }
    }
}

impl State<'_> {
    /// The id of a symbol, new or known.
    ///
    /// # Errors
    /// [`Error::Invalid`] past [`MAX_SYMBOLS`] symbols.
    fn symbol(&mut self, name: &str) -> std::result::Result<SymbolId, Halt> {
        if let Some(&id) = self.symbols.get(name) {
            return Ok(id);
        }
        if self.symbols.len() == MAX_SYMBOLS {
            return Err(too_many_symbols(name));
        }
        let id = self.metrics.add_symbol(name.to_string());
        self.symbols.insert(name.to_string(), id);
        self.chains.push(Chain::new());
        self.last_conn.push(0);
        self.counters.push(SymbolCounters::default());
        self.receipts.push(Receipts {
            first_ns: u64::MAX,
            last_ns: 0,
        });
        Ok(id)
    }

    /// Whether the replay must stop; remembers a signal as the reason.
    fn must_stop(&mut self) -> bool {
        if self.stopped.is_none() && self.shutdown.is_triggered() {
            self.stopped = Some(Stopped::Interrupted);
        }
        self.stopped.is_some()
    }

    /// What a halted read leaves: the damaged file's report, or none when the replay stopped.
    fn halted(&mut self, halt: Halt, name: String, line_no: u64) -> Result<Option<FileReport>> {
        match halt {
            Halt::Damage(what) => Ok(Some(damaged(
                name,
                line_no.saturating_sub(1),
                &format!("line {line_no}: {what}"),
            ))),
            Halt::Stop(why) => {
                self.stopped = Some(why);
                Ok(None)
            }
            Halt::Fail(e) => Err(e),
        }
    }

    /// Checks a snapshot file line by line, and hands its snapshots to the book rebuild.
    fn snapshot_file(&mut self, path: &Path) -> Result<Option<FileReport>> {
        if self.must_stop() {
            return Ok(None);
        }
        let mut lines = open_lines(path)?;
        let name = path.display().to_string();
        if let Some(rebuild) = &mut self.rebuild {
            rebuild.books.snapshot_file(path);
        }
        loop {
            if self.must_stop() {
                return Ok(None);
            }
            let count = lines.line_no();
            let line = match lines.next_line() {
                Ok(Some(line)) => line.bytes,
                Ok(None) => break,
                Err(e @ LineError::TooLong) => {
                    return self.halted(Halt::Damage(e.describe(None)), name, count + 1);
                }
                Err(e) => return Ok(Some(damaged(name, count, &e.describe(None)))),
            };
            let snap = match parse_snapshot(line) {
                Ok(snap) => snap,
                Err(what) => return self.halted(Halt::Damage(what), name, count + 1),
            };
            let symbol = snap.symbol.to_ascii_uppercase();
            if self.snapshots.len() == MAX_SYMBOLS && !self.snapshots.contains_key(&symbol) {
                return self.halted(too_many_symbols(&symbol), name, count + 1);
            }
            *self.snapshots.entry(symbol).or_default() += 1;
            if let Some(rebuild) = &mut self.rebuild {
                rebuild.books.snapshot(&snap, count + 1);
            }
        }
        Ok(Some(FileReport {
            file: name,
            lines: lines.line_no(),
            complete: true,
            error: None,
        }))
    }

    /// Reads a depth file (`kind` `None`) or a file of a stream beside the book; `None` when the
    /// replay stopped in it.
    fn read_file(&mut self, path: &Path, kind: Option<Kind>) -> Result<Option<FileReport>> {
        if self.must_stop() {
            return Ok(None);
        }
        let report = self.read_lines(path, kind);
        self.bytes_before += std::fs::metadata(path).map_or(0, |m| m.len());
        if let Some(bar) = &self.progress {
            bar.set_position(self.bytes_before);
        }
        report
    }

    /// Reads a file's lines while another thread decompresses it: inflating is over half the
    /// work, so on two cores the two halves overlap.
    fn read_lines(&mut self, path: &Path, kind: Option<Kind>) -> Result<Option<FileReport>> {
        let file = open_recording(path)?;
        let name = path.display().to_string();
        let (chunks_tx, chunks) = crossbeam_channel::bounded(CHUNKS_AHEAD);
        let (spare, spare_rx) = crossbeam_channel::bounded(CHUNKS_AHEAD + 2);
        std::thread::scope(|scope| {
            scope.spawn(move || inflate(file, &chunks_tx, &spare_rx));
            let report = self.parse_chunks(name, kind, &chunks, &spare);
            // Stops the decompression thread if the lines ended early.
            drop(chunks);
            report
        })
    }

    fn parse_chunks(
        &mut self,
        name: String,
        kind: Option<Kind>,
        chunks: &Receiver<Chunk>,
        spare: &Sender<Vec<u8>>,
    ) -> Result<Option<FileReport>> {
        let mut lines = LineReader::new(Chunks {
            chunks,
            spare,
            bytes: Vec::new(),
            at: 0,
            compressed_at: 0,
        });
        loop {
            if self.must_stop() {
                return Ok(None);
            }
            let line_no = lines.line_no() + 1;
            if line_no.is_multiple_of(PROGRESS_EVERY)
                && let Some(bar) = &self.progress
            {
                bar.set_position(self.bytes_before + lines.get_ref().compressed_at);
            }
            let line = match lines.next_line() {
                Ok(Some(line)) if line.terminated => line.bytes,
                Ok(Some(_)) => {
                    return Ok(Some(damaged(name, line_no - 1, "last line is cut short")));
                }
                Ok(None) => break,
                Err(e @ LineError::TooLong) => {
                    return self.halted(Halt::Damage(e.describe(None)), name, line_no);
                }
                Err(e) => {
                    let what = e.describe(Some(lines.get_ref().compressed_at));
                    return Ok(Some(damaged(name, line_no - 1, &what)));
                }
            };
            if let Err(halt) = self.line(line, kind, &name, line_no) {
                return self.halted(halt, name, line_no);
            }
        }
        Ok(Some(FileReport {
            file: name,
            lines: lines.line_no(),
            complete: true,
            error: None,
        }))
    }

    /// Takes one line of a depth file (`kind` `None`) or of a stream beside the book.
    fn line(
        &mut self,
        bytes: &[u8],
        kind: Option<Kind>,
        file: &str,
        line_no: u64,
    ) -> std::result::Result<(), Halt> {
        if is_meta(bytes) {
            return self.meta_line(bytes);
        }
        let Some(kind) = kind else {
            return self.depth_line(bytes, file, line_no);
        };
        let line = parse_kind(bytes)?;
        self.kinds
            .line(kind, &line, file, line_no, MAX_SERIES)
            .map_err(|refused| match refused {
                Refused::Damage(what) => Halt::Damage(what),
                Refused::TooMany => Halt::Fail(Error::Invalid(format!(
                    "more than {MAX_SERIES} series of streams beside the book (the next is {} \
                     {kind}): replay fewer symbols at a time",
                    line.symbol
                ))),
            })
    }

    /// Counts a meta line, which says nothing about the events around it.
    fn meta_line(&mut self, bytes: &[u8]) -> std::result::Result<(), Halt> {
        let meta = parse_meta(bytes)?;
        let known =
            self.meta_lines.len() < MAX_META_NAMES || self.meta_lines.contains_key(meta.meta);
        let name = if known { meta.meta } else { OTHER_META };
        *self.meta_lines.entry(name.to_string()).or_default() += 1;
        Ok(())
    }

    fn depth_line(
        &mut self,
        bytes: &[u8],
        file: &str,
        line_no: u64,
    ) -> std::result::Result<(), Halt> {
        let h = parse_depth(bytes)?;
        let id = self.symbol(h.symbol)?;
        let ids = h.ids;
        let verdict = self.chains[id].check(ids, h.conn);
        match verdict {
            Verdict::Break {
                expected_pu,
                got_pu,
            } => {
                self.counters[id].breaks += 1;
                if self.breaks.len() == MAX_LISTED {
                    self.breaks_unlisted += 1;
                } else {
                    self.breaks.push(BreakAt {
                        file: file.to_string(),
                        line: line_no,
                        symbol: h.symbol.to_string(),
                        expected_pu,
                        got_pu,
                    });
                }
            }
            Verdict::Reconnected { .. } => self.counters[id].reconnect_gaps += 1,
            Verdict::Duplicate => self.counters[id].duplicates += 1,
            Verdict::Start | Verdict::Continuous => {}
        }
        let previous_conn = std::mem::replace(&mut self.last_conn[id], h.conn);
        if previous_conn != 0 && previous_conn != h.conn {
            let seamless = verdict == Verdict::Continuous;
            if seamless {
                self.rollovers += 1;
            } else {
                self.reconnects += 1;
            }
            if self.changes.len() == MAX_LISTED {
                self.changes_unlisted += 1;
            } else {
                self.changes.push(ConnChange {
                    file: file.to_string(),
                    line: line_no,
                    symbol: h.symbol.to_string(),
                    from_conn: previous_conn,
                    to_conn: h.conn,
                    seamless,
                });
            }
        }
        if let Some(rebuild) = &mut self.rebuild {
            rebuild.event(&h, verdict)?;
        }
        let receipts = &mut self.receipts[id];
        receipts.first_ns = receipts.first_ns.min(h.recv_ns);
        receipts.last_ns = receipts.last_ns.max(h.recv_ns);
        self.first_ns = Some(self.first_ns.map_or(h.recv_ns, |t| t.min(h.recv_ns)));
        self.last_ns = self.last_ns.max(h.recv_ns);
        self.metrics.observe(id, h.recv_ns, h.event_ms, ids);
        if let Some(us) = h.pipeline_us {
            self.metrics.observe_pipeline(us * 1_000);
        }
        Ok(())
    }

    fn finish(mut self, files: Vec<FileReport>) -> ReplayReport {
        let mut receipts = BTreeMap::new();
        for (symbol, &id) in &self.symbols {
            let taken = self.snapshots.get(symbol).copied().unwrap_or(0);
            // The first snapshot starts the book; each later one restarts it, as a live resync.
            self.counters[id].resyncs = taken.saturating_sub(1);
            receipts.insert(symbol.clone(), self.receipts[id]);
        }
        let span_ns = self
            .last_ns
            .saturating_sub(self.first_ns.unwrap_or(self.last_ns));
        let clock = ReportClock {
            now: UNIX_EPOCH + Duration::from_nanos(self.last_ns),
            runtime_secs: span_ns as f64 / 1e9,
            window_secs: span_ns as f64 / 1e9,
        };
        let kinds = self.kinds.finish();
        let counters = Counters {
            symbols: self.counters,
            // The same figures as the recorder's `streams`, so SUMMARY reads alike.
            streams: kinds.series.iter().filter_map(stream_counters).collect(),
            reconnects: self.reconnects,
            rollovers: self.rollovers,
            ..Counters::default()
        };
        ReplayReport {
            metrics: self.metrics.peek(&clock, &counters),
            breaks: self.breaks,
            breaks_unlisted: self.breaks_unlisted,
            connection_changes: self.changes,
            connection_changes_unlisted: self.changes_unlisted,
            files,
            receipts,
            kinds: kinds.series,
            kind_gaps: kinds.gaps,
            kind_gaps_unlisted: kinds.gaps_unlisted,
            meta_lines: self.meta_lines,
            stopped: self.stopped,
        }
    }
}

/// A series' figures as the recorder counts them for `metrics.json`, under the stream name the
/// recorder subscribes to.
fn stream_counters(report: &KindReport) -> Option<StreamCounters> {
    let kind: Kind = report.kind.parse().ok()?;
    let symbol = Symbol::exact(&report.symbol).ok()?;
    Some(StreamCounters {
        stream: kind.stream(&symbol),
        symbol: report.symbol.clone(),
        kind,
        events: report.events - report.duplicates,
        breaks: report.breaks,
        reconnect_gaps: report.reconnect_gaps,
        missing: report.missing_ids,
        duplicates: report.duplicates,
        drops: 0,
        backfilled: report.backfilled,
        feed: None,
    })
}

/// The refusal of a replay past [`MAX_SYMBOLS`] symbols, at `name`.
fn too_many_symbols(name: &str) -> Halt {
    Halt::Fail(Error::Invalid(format!(
        "more than {MAX_SYMBOLS} symbols (the next is {name}): replay at most {MAX_SYMBOLS} at a \
         time, for instance one pattern per symbol ('{}_*')",
        name.to_ascii_lowercase()
    )))
}

fn damaged(file: String, lines: u64, what: &str) -> FileReport {
    FileReport {
        file,
        lines,
        complete: false,
        error: Some(format!("{what} (after line {lines})")),
    }
}

/// Decompressed bytes on their way from the decompression thread to the line parser.
enum Chunk {
    Data {
        bytes: Vec<u8>,
        /// Compressed bytes read so far, for the progress bar.
        compressed_at: u64,
    },
    /// The file is damaged here; nothing follows.
    Failed {
        error: io::Error,
        compressed_at: u64,
    },
}

/// The decompression thread's chunks read as one stream, for the line reader; a spent chunk's
/// buffer goes back to that thread for reuse.
struct Chunks<'a> {
    chunks: &'a Receiver<Chunk>,
    spare: &'a Sender<Vec<u8>>,
    bytes: Vec<u8>,
    /// Bytes of `bytes` already consumed.
    at: usize,
    /// Compressed bytes read when the current chunk was made.
    compressed_at: u64,
}

impl Read for Chunks<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Chunks<'_> {
    /// The rest of the current chunk, or the next one; empty at the end. The damage that ends
    /// the file comes out once, as an error; the stream ends after it.
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.at == self.bytes.len() {
            let _ = self.spare.try_send(std::mem::take(&mut self.bytes));
            self.at = 0;
            match self.chunks.recv() {
                Ok(Chunk::Data {
                    bytes,
                    compressed_at,
                }) => {
                    self.bytes = bytes;
                    self.compressed_at = compressed_at;
                }
                Ok(Chunk::Failed {
                    error,
                    compressed_at,
                }) => {
                    self.compressed_at = compressed_at;
                    return Err(error);
                }
                // The decompression thread is done: the end of the data.
                Err(_) => {}
            }
        }
        Ok(&self.bytes[self.at..])
    }

    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.bytes.len());
    }
}

/// Decompresses `file` into chunks until its end, its damage, or the parser hanging up.
fn inflate(file: File, chunks: &Sender<Chunk>, spare: &Receiver<Vec<u8>>) {
    let mut decoder = MemberDecoder::new(BufReader::new(CountingReader::new(file)));
    loop {
        let mut bytes = spare.try_recv().unwrap_or_default();
        bytes.resize(READ_BLOCK, 0);
        let mut filled = 0;
        let mut ended = false;
        let mut failed = None;
        while filled < bytes.len() {
            match decoder.read(&mut bytes[filled..]) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        bytes.truncate(filled);
        let compressed_at = decoder.get_ref().get_ref().count();
        if filled > 0
            && chunks
                .send(Chunk::Data {
                    bytes,
                    compressed_at,
                })
                .is_err()
        {
            return;
        }
        if let Some(error) = failed {
            let _ = chunks.send(Chunk::Failed {
                error,
                compressed_at,
            });
            return;
        }
        if ended {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::sequence::Ids;
    use crate::store::gzip::MemberEncoder;
    use crate::store::line::encode_depth;

    /// A file of nothing but breaks and connection changes: each is counted, the first
    /// [`MAX_LISTED`] of each are listed, and the rest only counted.
    #[test]
    fn breaks_and_connection_changes_are_counted_and_listed_up_to_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let events = 3 * MAX_LISTED as u64;
        let mut text = Vec::new();
        for i in 0..events {
            let u = 100 + 10 * i;
            let data = format!(r#"{{"e":"depthUpdate","s":"ETHUSDT","U":{u},"u":{u},"pu":1}}"#);
            // Pairs of events on one connection: the second of each pair is a break.
            let line = DepthLine {
                symbol: "ETHUSDT",
                stream: "ethusdt@depth",
                data: &data,
                event_ms: 1_763_627_881_000,
                trade_ms: None,
                ids: Ids {
                    first: u,
                    last: u,
                    prev: 1,
                },
                pipeline_us: None,
                recv_ns: 1_763_627_881_000_000_000 + i,
                conn: 1 + i / 2,
            };
            encode_depth(&mut text, &line);
        }
        let mut file = Vec::new();
        MemberEncoder::new(1).encode(&text, &mut file);
        let path = dir.path().join("ethusdt_depth_20251120T000000Z.ndjson.gz");
        std::fs::write(&path, file).unwrap();

        let report = replay(&[path]).unwrap();
        let pairs = events / 2;
        assert_eq!(report.metrics.symbols["ETHUSDT"].breaks, pairs);
        assert_eq!(report.breaks.len(), MAX_LISTED);
        assert_eq!(report.breaks_unlisted, pairs - MAX_LISTED as u64);
        assert_eq!(report.breaks[0].line, 2);
        assert_eq!(report.connection_changes.len(), MAX_LISTED);
        assert_eq!(
            report.connection_changes_unlisted,
            pairs - 1 - MAX_LISTED as u64
        );
        assert_eq!(report.metrics.continuity.reconnects, pairs - 1);
    }

    /// Snapshot files are held to the same symbol cap as depth files: each symbol seen costs
    /// its counts, and a book with `--book`.
    #[test]
    fn snapshots_of_too_many_symbols_are_refused() {
        use crate::store::line::{SnapshotLine, encode_snapshot};
        let dir = tempfile::tempdir().unwrap();
        let mut text = Vec::new();
        for i in 0..=MAX_SYMBOLS {
            let symbol = format!("S{i:05}USDT");
            let line = SnapshotLine {
                recv_ns: 1_763_627_881_000_000_000,
                symbol: &symbol,
                last_update_id: 7,
                data: r#"{"lastUpdateId":7,"bids":[],"asks":[]}"#,
            };
            encode_snapshot(&mut text, &line);
        }
        let mut file = Vec::new();
        MemberEncoder::new(1).encode(&text, &mut file);
        let path = dir.path().join("many_snapshot_20251120T000000Z.ndjson.gz");
        std::fs::write(&path, file).unwrap();
        let Err(Error::Invalid(what)) = replay(&[path]) else {
            panic!("not refused");
        };
        assert!(
            what.starts_with("more than 2048 symbols (the next is S02048USDT)"),
            "{what}"
        );
    }
}
