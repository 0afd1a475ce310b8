//! `obrec replay`: verify and summarise recordings offline.
//!
//! Files are read in name order (which is time order per symbol), complete and `.part` alike. Each
//! symbol's events go through the same [`Chain`] the recorder uses live, and the same [`Metrics`]
//! build the report, so a replayed report is comparable key for key with the live `metrics.json`.
//! A damaged file, depth or snapshot, is read up to the damage, which is reported with its
//! position. Every snapshot of a symbol after its first is counted as a resync, as live.
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
use crate::market::sequence::{BookSync, Chain, SnapshotStep, Step, Verdict};
use crate::market::stream::is_partial;
use crate::market::symbol::SymbolId;
use crate::metrics::{Counters, Metrics, Report, ReportClock, SymbolCounters};
use crate::offline::console::reader_gone;
use crate::store::gzip::{CountingReader, MemberDecoder, describe, open_recording};
use crate::store::line::{DepthLine, SnapshotLine, parse_depth, parse_snapshot};
use crate::store::names::{FileKind, is_kind};
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
    pub breaks: Vec<BreakAt>,
    pub connection_changes: Vec<ConnChange>,
    pub files: Vec<FileReport>,
    /// Per symbol, when its first and last events were received.
    pub receipts: BTreeMap<String, Receipts>,
    /// Why the replay ended before the end of its input; `None` when it read everything. A
    /// stopped replay never writes its `--json` report, so this is not in the schema.
    #[serde(skip)]
    pub stopped: Option<Stopped>,
}

impl ReplayReport {
    pub fn all_complete(&self) -> bool {
        self.files.iter().all(|f| f.complete)
    }
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
/// levels.
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
    let mut state = State {
        progress: progress_bar(files),
        rebuild: books.map(Rebuild::new),
        shutdown: shutdown.clone(),
        ..State::default()
    };
    let mut reports = Vec::new();
    // Snapshots first: the books start from them.
    let (snapshots, depth): (Vec<&PathBuf>, Vec<&PathBuf>) =
        files.iter().partition(|p| is_kind(p, FileKind::Snapshot));
    for path in snapshots {
        reports.extend(state.snapshot_file(path)?);
    }
    for path in depth {
        reports.extend(state.read_file(path)?);
    }
    if let Some(bar) = &state.progress {
        bar.finish_and_clear();
    }
    if state.stopped.is_none()
        && let Some(rebuild) = &mut state.rebuild
        && let Err(e) = rebuild.out.writer.flush()
    {
        if !reader_gone(&e) {
            return Err(Error::Stdout(e));
        }
        state.stopped = Some(Stopped::ReaderGone);
    }
    Ok(state.finish(reports))
}

/// Lines between progress bar updates.
const PROGRESS_EVERY: u64 = 1 << 16;
/// Decompressed bytes per chunk: many lines each, so the hand-over between threads is rare and a
/// line split across two chunks (copied once) is the exception.
const READ_BLOCK: usize = 1 << 18;
/// Chunks decompressed ahead of the parser: enough to ride out an uneven pace, a few MB at most.
const CHUNKS_AHEAD: usize = 8;
/// Below this much compressed data a replay is over before a bar would help.
const PROGRESS_MIN_BYTES: u64 = 32 << 20;

/// A bar over the files' compressed bytes, only when stderr is a terminal and the job is long.
fn progress_bar(files: &[PathBuf]) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    let total: u64 = files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    if !io::stderr().is_terminal() || total < PROGRESS_MIN_BYTES {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .expect("valid template");
    bar.set_style(style);
    Some(bar)
}

/// Where `--book` lines go and how deep.
pub struct BookOutput<'a> {
    pub levels: usize,
    pub writer: &'a mut dyn Write,
}

/// A recorded REST snapshot.
struct RecordedSnapshot {
    recv_ns: u64,
    last_update_id: u64,
    body: String,
}

/// Book rebuilding for `--book`.
struct Rebuild<'a> {
    out: BookOutput<'a>,
    /// Per symbol: snapshots not yet applied, oldest first.
    snapshots: HashMap<String, std::collections::VecDeque<RecordedSnapshot>>,
    books: HashMap<String, SymbolBook>,
    line: Vec<u8>,
}

#[derive(Default)]
struct SymbolBook {
    book: Book,
    sync: BookSync<String>,
}

impl<'a> Rebuild<'a> {
    fn new(out: BookOutput<'a>) -> Rebuild<'a> {
        Rebuild {
            out,
            snapshots: HashMap::new(),
            books: HashMap::new(),
            line: Vec::new(),
        }
    }

    /// Queues a snapshot for the event after which it was received.
    fn snapshot(&mut self, snap: &SnapshotLine<'_>) {
        let queue = self.snapshots.entry(snap.symbol.to_string()).or_default();
        queue.push_back(RecordedSnapshot {
            recv_ns: snap.recv_ns,
            last_update_id: snap.last_update_id,
            body: snap.data.to_string(),
        });
        queue.make_contiguous().sort_by_key(|s| s.recv_ns);
    }

    /// Applies one recorded event (and any snapshot received before it) and prints the book.
    fn event(&mut self, h: &DepthLine, verdict: Verdict) -> std::result::Result<(), Halt> {
        if verdict == Verdict::Duplicate {
            return Ok(());
        }
        let state = self.books.entry(h.symbol.to_string()).or_default();
        if is_partial(h.stream) {
            state
                .book
                .replace_partial(h.data)
                .map_err(|e| e.to_string())?;
            return print_book(
                &mut self.out,
                &mut self.line,
                &state.book,
                h.symbol,
                h.ids.last,
                h.event_ms,
            );
        }
        let Some(queue) = self.snapshots.get_mut(h.symbol) else {
            return Err(Halt::Fail(Error::Invalid(format!(
                "{}: diff-depth events (--depth 0) without a snapshot file, so its book cannot be \
                 built: replay the recording's directory, or add its {}_snapshot_* files",
                h.symbol,
                h.symbol.to_ascii_lowercase()
            ))));
        };
        let mut applied = Vec::new();
        while queue.front().is_some_and(|s| s.recv_ns <= h.recv_ns) {
            let snap = queue.pop_front().expect("front exists");
            match state.sync.snapshot(snap.last_update_id) {
                SnapshotStep::Bridged(events) => {
                    state
                        .book
                        .reset_from_snapshot(&snap.body)
                        .map_err(|e| e.to_string())?;
                    applied.extend(events);
                }
                SnapshotStep::Pending => {
                    state
                        .book
                        .reset_from_snapshot(&snap.body)
                        .map_err(|e| e.to_string())?;
                }
                SnapshotStep::TooOld => {}
            }
        }
        if let Step::Apply(events) = state.sync.event(h.ids, verdict, h.data.to_string()) {
            applied.extend(events);
        }
        for data in applied {
            let u = state.book.apply_diff(&data).map_err(|e| e.to_string())?;
            let event_ms = event_time(&data).unwrap_or(h.event_ms);
            print_book(
                &mut self.out,
                &mut self.line,
                &state.book,
                h.symbol,
                u,
                event_ms,
            )?;
        }
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

/// Partial-depth streams are named `<sym>@depth<N>…`; diff streams `<sym>@depth` or `<sym>@depth@…`.
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
    changes: Vec<ConnChange>,
    first_ns: Option<u64>,
    last_ns: u64,
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
            changes: Vec::new(),
            first_ns: None,
            last_ns: 0,
        }
    }
}

impl State<'_> {
    fn symbol(&mut self, name: &str) -> SymbolId {
        if let Some(&id) = self.symbols.get(name) {
            return id;
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
        id
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
        let file = open_recording(path)?;
        let name = path.display().to_string();
        let reader = BufReader::new(MemberDecoder::new(BufReader::new(file)));
        let mut count = 0;
        for line in reader.lines() {
            if self.must_stop() {
                return Ok(None);
            }
            let line = match line {
                Ok(l) => l,
                Err(e) => return Ok(Some(damaged(name, count, &describe(&e)))),
            };
            let snap = match parse_snapshot(line.as_bytes()) {
                Ok(snap) => snap,
                Err(what) => return self.halted(Halt::Damage(what), name, count + 1),
            };
            count += 1;
            *self
                .snapshots
                .entry(snap.symbol.to_ascii_uppercase())
                .or_default() += 1;
            if let Some(rebuild) = &mut self.rebuild {
                rebuild.snapshot(&snap);
            }
        }
        Ok(Some(FileReport {
            file: name,
            lines: count,
            complete: true,
            error: None,
        }))
    }

    /// Reads a depth file; `None` when the replay stopped in it.
    fn read_file(&mut self, path: &Path) -> Result<Option<FileReport>> {
        if self.must_stop() {
            return Ok(None);
        }
        let report = self.read_lines(path);
        self.bytes_before += std::fs::metadata(path).map_or(0, |m| m.len());
        if let Some(bar) = &self.progress {
            bar.set_position(self.bytes_before);
        }
        report
    }

    /// Reads a file's lines while another thread decompresses it: inflating is over half the
    /// work, so on two cores the two halves overlap.
    fn read_lines(&mut self, path: &Path) -> Result<Option<FileReport>> {
        let file = open_recording(path)?;
        let name = path.display().to_string();
        let (chunks_tx, chunks) = crossbeam_channel::bounded(CHUNKS_AHEAD);
        let (spare, spare_rx) = crossbeam_channel::bounded(CHUNKS_AHEAD + 2);
        std::thread::scope(|scope| {
            scope.spawn(move || inflate(file, &chunks_tx, &spare_rx));
            let report = self.parse_chunks(name, &chunks, &spare);
            // Stops the decompression thread if the lines ended early.
            drop(chunks);
            report
        })
    }

    fn parse_chunks(
        &mut self,
        name: String,
        chunks: &Receiver<Chunk>,
        spare: &Sender<Vec<u8>>,
    ) -> Result<Option<FileReport>> {
        // The start of a line whose end is in the next chunk.
        let mut carry = Vec::new();
        let mut line_no = 0u64;
        for chunk in chunks {
            if self.must_stop() {
                return Ok(None);
            }
            let (bytes, compressed_at) = match chunk {
                Chunk::Data {
                    bytes,
                    compressed_at,
                } => (bytes, compressed_at),
                Chunk::Failed {
                    error,
                    compressed_at,
                } => {
                    let what =
                        format!("{} after compressed byte {compressed_at}", describe(&error));
                    return Ok(Some(damaged(name, line_no, &what)));
                }
            };
            let mut start = 0;
            if !carry.is_empty() {
                let Some(len) = memchr::memchr(b'\n', &bytes) else {
                    carry.extend_from_slice(&bytes);
                    continue;
                };
                carry.extend_from_slice(&bytes[..=len]);
                start = len + 1;
                line_no += 1;
                if let Err(halt) = self.line(&carry, &name, line_no) {
                    return self.halted(halt, name, line_no);
                }
                carry.clear();
            }
            while let Some(len) = memchr::memchr(b'\n', &bytes[start..]) {
                let line = &bytes[start..start + len + 1];
                start += len + 1;
                line_no += 1;
                if line_no.is_multiple_of(PROGRESS_EVERY)
                    && let Some(bar) = &self.progress
                {
                    bar.set_position(self.bytes_before + compressed_at);
                }
                if let Err(halt) = self.line(line, &name, line_no) {
                    return self.halted(halt, name, line_no);
                }
            }
            carry.extend_from_slice(&bytes[start..]);
            let _ = spare.try_send(bytes);
        }
        if !carry.is_empty() {
            return Ok(Some(damaged(name, line_no, "last line is cut short")));
        }
        Ok(Some(FileReport {
            file: name,
            lines: line_no,
            complete: true,
            error: None,
        }))
    }

    fn line(&mut self, bytes: &[u8], file: &str, line_no: u64) -> std::result::Result<(), Halt> {
        let h = parse_depth(bytes)?;
        let id = self.symbol(h.symbol);
        let ids = h.ids;
        let verdict = self.chains[id].check(ids, h.conn);
        match verdict {
            Verdict::Break {
                expected_pu,
                got_pu,
            } => {
                self.counters[id].breaks += 1;
                self.breaks.push(BreakAt {
                    file: file.to_string(),
                    line: line_no,
                    symbol: h.symbol.to_string(),
                    expected_pu,
                    got_pu,
                });
            }
            Verdict::Reconnected { .. } => self.counters[id].reconnect_gaps += 1,
            Verdict::Duplicate => self.counters[id].duplicates += 1,
            Verdict::Start | Verdict::Continuous => {}
        }
        let previous_conn = std::mem::replace(&mut self.last_conn[id], h.conn);
        if previous_conn != 0 && previous_conn != h.conn {
            self.changes.push(ConnChange {
                file: file.to_string(),
                line: line_no,
                symbol: h.symbol.to_string(),
                from_conn: previous_conn,
                to_conn: h.conn,
                seamless: verdict == Verdict::Continuous,
            });
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
        let counters = Counters {
            symbols: self.counters,
            reconnects: self.changes.iter().filter(|c| !c.seamless).count() as u64,
            rollovers: self.changes.iter().filter(|c| c.seamless).count() as u64,
            ..Counters::default()
        };
        ReplayReport {
            metrics: self.metrics.peek(&clock, &counters),
            breaks: self.breaks,
            connection_changes: self.changes,
            files,
            receipts,
            stopped: self.stopped,
        }
    }
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
