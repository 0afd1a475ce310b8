//! `obrec report`: one self-contained HTML page about recordings, for a person to look at. Per
//! symbol and stream (depth, trade, aggTrade, bookTicker, markPrice, forceOrder): events per
//! second and latency p50/p99 over time, the mid price, a timeline of what went wrong (gaps and
//! breaks, reconnects, resyncs, silences, server notices, damage) with every entry listed, and
//! hour-by-hour coverage (complete, gap, missing).
//!
//! This module gathers; [`svg`] draws charts and [`html`] lays out the page, which holds nothing
//! fetched from elsewhere (inline CSS and SVG, no script), so it opens anywhere, offline.
//!
//! Recordings are read as `replay` reads them: files in name order (time order per series), each
//! up to its damage; depth continuity by the [`Chain`], the streams beside the book by their
//! [`Tape`]; every snapshot of a symbol after its first is a resync. The mid price comes from the
//! book rebuilt as `replay --book` rebuilds it (diff depth synced from the snapshot files; partial
//! depth as is) and from bookTicker's best bid and ask.
//!
//! Memory does not grow with the number of events: per series, one bucket per minute that holds
//! events (so at most 60 per hour of data), each a count, a latency histogram of at most a few
//! hundred bins (a handful in practice) and the last mid price; fault entries are listed up to [`MAX_LISTED`] per series and counted beyond.

mod html;
mod svg;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::market::book::Book;
use crate::market::kind::{Check, Kind, Tape};
use crate::market::sequence::{Chain, Verdict};
use crate::offline::book::{Books, RebuildError};
use crate::offline::progress::progress_bar;
use crate::store::line::{DepthLine, is_meta, parse_depth, parse_kind, parse_meta, parse_snapshot};
use crate::store::lines::{LineError, open_lines};
use crate::store::names::{FileKind, classify, expand, no_recordings, part_of};
use crate::store::staged::{create_part, link_no_replace, sync_dir};
use crate::util::clock::latency_us;
use crate::util::shutdown::Shutdown;

/// Fault entries listed per series; the rest are counted. A real recording has far fewer; a file
/// of nothing but breaks would otherwise make a page no browser opens.
pub const MAX_LISTED: usize = 500;
/// Series (symbol and stream) in one report: each is a section of charts, and past a few hundred
/// the page is too long to read and slow to open; report fewer symbols at a time.
pub const MAX_SERIES: usize = 256;
/// How long a stream may go without an event before the report calls it a silence: the
/// recorder's default `--stale-sec`, times the kind's patience (1 for depth, bookTicker and mark
/// price, which push several times a second; 6 for trades, which a thin symbol can lack for a
/// minute; 360 for liquidations, which come hours apart). A silence the recorder sat through is
/// worth seeing even when no id was lost.
pub const SILENCE_BASE: Duration = Duration::from_secs(10);
/// The buckets of the charts.
const NS_PER_MINUTE: u64 = 60_000_000_000;
const NS_PER_HOUR: u64 = 3_600_000_000_000;
/// Latency histogram bins per octave of µs: a percentile is known to within 2^(1/8), 9 %, finer
/// than a chart 150 units tall shows, while a minute's latencies still fill only tens of bins.
const BINS_PER_OCTAVE: f64 = 8.0;
/// Bins up to 2^28 µs (4.5 minutes) either way; longer latencies fall in the last.
const LATENCY_BINS: i16 = 8 * 28;

/// What a report found wrong, read up to, or was stopped by.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Series drawn.
    pub series: usize,
    /// Events read (duplicates aside).
    pub events: u64,
    /// Fault entries, listed or counted.
    pub faults: u64,
    /// Inputs read only up to damage: `<file>: line N: <what> (read up to line N-1)`.
    pub damaged: Vec<String>,
    /// A signal stopped the report: nothing was written.
    pub interrupted: bool,
}

/// The stream of a series: depth (diff or partial, as recorded) or a kind beside the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    Depth,
    Kind(Kind),
}

impl Stream {
    /// The series a file's lines belong to (a snapshot file's to its symbol's depth).
    fn of(kind: FileKind) -> Stream {
        match kind {
            FileKind::Stream(kind) => Stream::Kind(kind),
            FileKind::Depth | FileKind::Snapshot => Stream::Depth,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stream::Depth => "depth",
            Stream::Kind(kind) => kind.name(),
        }
    }

    /// See [`SILENCE_BASE`].
    fn silence_ns(self) -> u64 {
        let patience = match self {
            Stream::Depth => 1,
            Stream::Kind(kind) => kind.patience(),
        };
        SILENCE_BASE.as_nanos() as u64 * u64::from(patience)
    }
}

/// What went wrong, by kind; the order is the legend's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Events lost on one connection: an id gap, a `pu` break, ids going back.
    Gap,
    /// The stream moved to another connection.
    Reconnect,
    /// A snapshot after the symbol's first: the book was fetched again.
    Resync,
    /// No event for longer than the stream's silence threshold.
    Silence,
    /// A notice the server sent (`serverShutdown`), kept as a meta line.
    Notice,
    /// The file is damaged here; what follows in it was not read.
    Damage,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Gap,
        FaultKind::Reconnect,
        FaultKind::Resync,
        FaultKind::Silence,
        FaultKind::Notice,
        FaultKind::Damage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Gap => "gap",
            FaultKind::Reconnect => "reconnect",
            FaultKind::Resync => "resync",
            FaultKind::Silence => "silence",
            FaultKind::Notice => "notice",
            FaultKind::Damage => "damage",
        }
    }

    /// Whether an hour holding it is not complete: a reconnect or a resync alone loses nothing,
    /// a notice neither.
    fn spoils_hour(self) -> bool {
        matches!(
            self,
            FaultKind::Gap | FaultKind::Silence | FaultKind::Damage
        )
    }
}

/// One entry of a series' timeline.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    /// When it happened (receipt time), ns since the epoch.
    pub at_ns: u64,
    /// A silence's end: the event that broke it.
    pub until_ns: Option<u64>,
    pub detail: String,
}

/// One minute of a series.
#[derive(Clone, Debug)]
pub struct Minute {
    pub events: u32,
    /// Event latency (receipt minus `E`) as counts per bin, sorted by bin: [`BINS_PER_OCTAVE`]
    /// bins per octave of µs, negative bins for events received before their event time (a
    /// local clock behind the exchange's). Sparse, since a minute's latencies fill a few bins.
    latency: Vec<(i16, u32)>,
    /// The last mid price of the minute.
    pub mid: Option<f64>,
}

impl Minute {
    fn new() -> Minute {
        Minute {
            events: 0,
            latency: Vec::new(),
            mid: None,
        }
    }

    fn observe_latency(&mut self, us: i64) {
        let magnitude = us.unsigned_abs();
        let bin = if magnitude <= 1 {
            0
        } else {
            ((magnitude as f64).log2() * BINS_PER_OCTAVE) as i16
        }
        .min(LATENCY_BINS);
        // Bins are ordered by value: -1 holds (-1, 0] µs, 0 holds [0, 1] µs.
        let bin = if us < 0 { -bin - 1 } else { bin };
        match self.latency.binary_search_by_key(&bin, |&(b, _)| b) {
            Ok(i) => self.latency[i].1 += 1,
            Err(i) => self.latency.insert(i, (bin, 1)),
        }
    }

    /// The `q` quantile of the minute's latencies in ms (the bin's geometric middle); `None`
    /// when none was measured.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().map(|&(_, n)| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        let &(bin, _) = self.latency.iter().find(|&&(_, n)| {
            seen += u64::from(n);
            seen >= rank
        })?;
        let (sign, bin) = if bin < 0 {
            (-1.0, -bin - 1)
        } else {
            (1.0, bin)
        };
        Some(sign * 2f64.powf((f64::from(bin) + 0.5) / BINS_PER_OCTAVE) / 1_000.0)
    }
}

/// How an event stands to the one before it.
enum Seen {
    Follows,
    /// Delivered again by another connection: not counted twice.
    Duplicate,
    /// Events lost on one connection.
    Lost(String),
    /// Events lost across a change of connection.
    LostInReconnect(String),
}

/// Everything the page shows of one symbol's stream.
#[derive(Debug)]
pub struct Series {
    /// Minutes since the epoch that hold events.
    pub minutes: BTreeMap<u64, Minute>,
    /// The first [`MAX_LISTED`] faults, in the order found.
    pub faults: Vec<Fault>,
    /// Faults beyond those.
    pub unlisted: u64,
    /// Per [`FaultKind::ALL`], every fault found.
    pub counts: [u64; FaultKind::ALL.len()],
    pub events: u64,
    pub duplicates: u64,
    pub backfilled: u64,
    /// Hours since the epoch in which something lost data (a gap, a silence's ends, damage).
    pub spoiled_hours: BTreeSet<u64>,
    silence_ns: u64,
    last_ns: Option<u64>,
    /// The connection of the last event (0: none yet).
    last_conn: u64,
}

impl Series {
    fn new(stream: Stream) -> Series {
        Series {
            minutes: BTreeMap::new(),
            faults: Vec::new(),
            unlisted: 0,
            counts: [0; FaultKind::ALL.len()],
            events: 0,
            duplicates: 0,
            backfilled: 0,
            spoiled_hours: BTreeSet::new(),
            silence_ns: stream.silence_ns(),
            last_ns: None,
            last_conn: 0,
        }
    }

    fn fault(&mut self, fault: Fault) {
        let i = FaultKind::ALL.iter().position(|&k| k == fault.kind);
        self.counts[i.expect("every kind is listed")] += 1;
        if fault.kind.spoils_hour() {
            self.spoiled_hours.insert(fault.at_ns / NS_PER_HOUR);
            if let Some(until) = fault.until_ns {
                self.spoiled_hours.insert(until / NS_PER_HOUR);
            }
        }
        if self.faults.len() < MAX_LISTED {
            self.faults.push(fault);
        } else {
            self.unlisted += 1;
        }
    }

    /// Takes one event received at `recv_ns` over `conn` (0: backfilled over REST).
    fn event(&mut self, recv_ns: u64, latency_us: Option<i64>, conn: u64, seen: Seen) {
        let fault = |kind, detail| Fault {
            kind,
            at_ns: recv_ns,
            until_ns: None,
            detail,
        };
        if let Seen::Duplicate = seen {
            self.duplicates += 1;
            return;
        }
        if conn == 0 {
            self.backfilled += 1;
        } else {
            if self.last_conn != 0 && conn != self.last_conn {
                let how = match &seen {
                    Seen::LostInReconnect(what) => format!("lost {what}"),
                    _ => "nothing lost".to_string(),
                };
                let detail = format!("conn {} → {conn}: {how}", self.last_conn);
                self.fault(fault(FaultKind::Reconnect, detail));
            }
            self.last_conn = conn;
        }
        match seen {
            Seen::Lost(what) => self.fault(fault(FaultKind::Gap, what)),
            // A reconnect that lost events spoils its hour as a gap does.
            Seen::LostInReconnect(_) => {
                self.spoiled_hours.insert(recv_ns / NS_PER_HOUR);
            }
            Seen::Follows | Seen::Duplicate => {}
        }
        if let Some(last) = self.last_ns
            && recv_ns.saturating_sub(last) > self.silence_ns
        {
            let secs = (recv_ns - last) as f64 / 1e9;
            self.fault(Fault {
                kind: FaultKind::Silence,
                at_ns: last,
                until_ns: Some(recv_ns),
                detail: format!("no event for {secs:.1} s"),
            });
        }
        self.last_ns = Some(self.last_ns.map_or(recv_ns, |l| l.max(recv_ns)));
        self.events += 1;
        let minute = self.minute(recv_ns);
        minute.events += 1;
        if let Some(us) = latency_us {
            minute.observe_latency(us);
        }
    }

    fn minute(&mut self, recv_ns: u64) -> &mut Minute {
        self.minutes
            .entry(recv_ns / NS_PER_MINUTE)
            .or_insert_with(Minute::new)
    }

    fn mid(&mut self, recv_ns: u64, mid: f64) {
        self.minute(recv_ns).mid = Some(mid);
    }

    /// The hour's coverage: missing without an event, gap when something was lost in it.
    pub fn coverage(&self, hour: u64) -> Coverage {
        let minutes = hour * 60..(hour + 1) * 60;
        if self.minutes.range(minutes).next().is_none() {
            Coverage::Missing
        } else if self.spoiled_hours.contains(&hour) {
            Coverage::Gap
        } else {
            Coverage::Complete
        }
    }
}

/// An hour of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    Complete,
    Gap,
    Missing,
}

/// What the page is drawn from.
pub struct Gathered {
    /// By symbol (upper case) and stream.
    pub series: BTreeMap<(String, Stream), Series>,
    pub damaged: Vec<String>,
    pub inputs: Vec<String>,
    pub files: usize,
}

impl Gathered {
    /// The first and last minutes with an event, over every series.
    pub fn span_minutes(&self) -> Option<(u64, u64)> {
        let firsts = self.series.values().filter_map(|s| s.minutes.keys().next());
        let lasts = self
            .series
            .values()
            .filter_map(|s| s.minutes.keys().next_back());
        Some((*firsts.min()?, *lasts.max()?))
    }
}

/// Reads `paths` (files, directories, patterns, as `replay`) and writes the page to `out`, which
/// must not exist. A progress bar shows on a terminal. When `shutdown` is triggered, stops and
/// writes nothing ([`Outcome::interrupted`]).
///
/// # Errors
/// [`Error::Invalid`] for an output that exists, a path that does not, inputs without a
/// recording, an input whose first line is not an obrec line, or too many series;
/// [`Error::File`] when the page cannot be written.
pub fn report(paths: &[PathBuf], out: &Path, shutdown: &Shutdown) -> Result<Outcome> {
    if out.exists() {
        return Err(taken(out));
    }
    let files = expand(paths)?;
    if files.is_empty() {
        return Err(no_recordings(paths));
    }
    let mut gather = Gather::default();
    let progress = progress_bar(&files);
    // Snapshots first: resyncs are counted from them, and the books start from them.
    let (snapshots, events): (Vec<&PathBuf>, Vec<&PathBuf>) = files
        .iter()
        .partition(|p| classify(p).is_some_and(|(_, k)| k == FileKind::Snapshot));
    for path in snapshots.into_iter().chain(events) {
        if shutdown.is_triggered() {
            return Ok(Outcome {
                interrupted: true,
                ..Outcome::default()
            });
        }
        gather.file(path)?;
        if let Some(bar) = &progress {
            bar.inc(fs::metadata(path).map_or(0, |m| m.len()));
        }
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let gathered = Gathered {
        series: gather.series,
        damaged: gather.damaged,
        inputs: paths.iter().map(|p| p.display().to_string()).collect(),
        files: files.len(),
    };
    if gathered.series.values().all(|s| s.events == 0) && gathered.damaged.is_empty() {
        return Err(no_recordings(paths));
    }
    let page = html::page(&gathered);
    write_new(out, page.as_bytes())?;
    Ok(Outcome {
        series: gathered.series.len(),
        events: gathered.series.values().map(|s| s.events).sum(),
        faults: gathered
            .series
            .values()
            .map(|s| s.counts.iter().sum::<u64>())
            .sum(),
        damaged: gathered.damaged,
        interrupted: false,
    })
}

fn taken(out: &Path) -> Error {
    Error::Invalid(format!(
        "{} exists: remove it or choose another -o",
        out.display()
    ))
}

/// Writes `body` as `out` whole or not at all, never replacing a file: staged as `<out>.part`,
/// synced, then linked to its name.
fn write_new(out: &Path, body: &[u8]) -> Result<()> {
    let part = part_of(out);
    let Some(mut file) = create_part(&part)? else {
        return Err(Error::Invalid(format!(
            "{} exists: another report is writing it, or one was interrupted (remove it)",
            part.display()
        )));
    };
    let written = file
        .write_all(body)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::file(&part, e))
        .and_then(|()| link_no_replace(&part, out));
    let _ = fs::remove_file(&part);
    if !written? {
        return Err(taken(out));
    }
    if let Some(dir) = out.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Why a line ends the reading of its file.
enum Halt {
    /// The line cannot be read: the file is damaged there.
    Damage(String),
    /// The report cannot go on.
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

#[derive(Default)]
struct Gather {
    series: BTreeMap<(String, Stream), Series>,
    chains: HashMap<String, Chain>,
    tapes: HashMap<(String, Kind), Tape>,
    /// The books, for the mid price.
    books: Books,
    /// Snapshots read per symbol, for the resyncs.
    snapshots_seen: HashMap<String, u64>,
    damaged: Vec<String>,
}

/// A bookTicker payload's best bid and ask.
#[derive(Deserialize)]
struct BestPrices<'a> {
    b: &'a str,
    a: &'a str,
}

impl Gather {
    /// The series of `symbol`'s `stream`, made on first use.
    fn series(&mut self, symbol: &str, stream: Stream) -> std::result::Result<&mut Series, Halt> {
        let key = (symbol.to_string(), stream);
        if !self.series.contains_key(&key) && self.series.len() == MAX_SERIES {
            return Err(Halt::Fail(Error::Invalid(format!(
                "more than {MAX_SERIES} series (the next is {symbol} {}): report fewer symbols \
                 at a time, for instance one pattern per symbol ('{}_*')",
                stream.name(),
                symbol.to_ascii_lowercase()
            ))));
        }
        Ok(self
            .series
            .entry(key)
            .or_insert_with(|| Series::new(stream)))
    }

    /// Reads one file, by its kind, up to its damage.
    fn file(&mut self, path: &Path) -> Result<()> {
        let named = classify(path);
        // A file named as no recording is read as depth, as replay reads it.
        let kind = named.map_or(FileKind::Depth, |(_, k)| k);
        if kind == FileKind::Snapshot {
            self.books.snapshot_file(path);
        }
        let mut lines = open_lines(path)?;
        let damage = loop {
            let line_no = lines.line_no() + 1;
            let bytes = match lines.next_line() {
                Ok(Some(line)) if line.terminated => line.bytes,
                Ok(Some(_)) => break Some((line_no, "last line is cut short".to_string())),
                Ok(None) => break None,
                Err(e @ LineError::TooLong) => break Some((line_no, e.describe(None))),
                Err(e) => {
                    let at = lines.compressed_at();
                    break Some((line_no, e.describe(Some(at))));
                }
            };
            let taken = match kind {
                FileKind::Snapshot => self.snapshot(bytes, line_no),
                // A notice goes to the file of every stream its connection carried.
                _ if is_meta(bytes) => self.meta(bytes, kind, named),
                FileKind::Depth => parse_depth(bytes)
                    .map_err(Halt::Damage)
                    .and_then(|line| self.depth(&line)),
                FileKind::Stream(kind) => self.kind_line(bytes, kind),
            };
            match taken {
                Ok(()) => {}
                Err(Halt::Damage(what)) => break Some((line_no, what)),
                Err(Halt::Fail(e)) => return Err(e),
            }
        };
        let Some((line_no, what)) = damage else {
            return Ok(());
        };
        let file = path.display();
        if line_no <= 1 {
            return Err(Error::Invalid(format!("{file}: line 1: {what}")));
        }
        self.damaged.push(format!(
            "{file}: line {line_no}: {what} (read up to line {})",
            line_no - 1
        ));
        // The damage shows on the timeline of the file's series, after its last event.
        if let Some((symbol, kind)) = named
            && let Ok(series) = self.series(&symbol.to_ascii_uppercase(), Stream::of(kind))
        {
            let at_ns = series.last_ns.unwrap_or(0);
            series.fault(Fault {
                kind: FaultKind::Damage,
                at_ns,
                until_ns: None,
                detail: format!("{file}: line {line_no}: {what}"),
            });
        }
        Ok(())
    }

    fn snapshot(&mut self, bytes: &[u8], line: u64) -> std::result::Result<(), Halt> {
        let snap = parse_snapshot(bytes)?;
        let symbol = snap.symbol.to_ascii_uppercase();
        let seen = self.snapshots_seen.entry(symbol.clone()).or_default();
        *seen += 1;
        let resync = *seen > 1;
        let detail = format!("snapshot lastUpdateId={}", snap.last_update_id);
        let at_ns = snap.recv_ns;
        let series = self.series(&symbol, Stream::Depth)?;
        if resync {
            series.fault(Fault {
                kind: FaultKind::Resync,
                at_ns,
                until_ns: None,
                detail,
            });
        }
        self.books.snapshot(&snap, line);
        Ok(())
    }

    fn depth(&mut self, h: &DepthLine) -> std::result::Result<(), Halt> {
        let verdict = self
            .chains
            .entry(h.symbol.to_string())
            .or_default()
            .check(h.ids, h.conn);
        let seen = match verdict {
            Verdict::Duplicate => Seen::Duplicate,
            Verdict::Break {
                expected_pu,
                got_pu,
            } => Seen::Lost(format!(
                "pu break: expected pu={expected_pu}, got pu={got_pu} (u={})",
                h.ids.last
            )),
            Verdict::Reconnected {
                expected_pu,
                got_pu,
            } => Seen::LostInReconnect(format!(
                "the events between u={expected_pu} and pu={got_pu}"
            )),
            Verdict::Start | Verdict::Continuous => Seen::Follows,
        };
        let latency = Some(h.event_latency_us());
        self.series(h.symbol, Stream::Depth)?
            .event(h.recv_ns, latency, h.conn, seen);
        if verdict == Verdict::Duplicate {
            return Ok(());
        }
        if let Some(mid) = self.book_mid(h, verdict)? {
            self.series(h.symbol, Stream::Depth)?.mid(h.recv_ns, mid);
        }
        Ok(())
    }

    /// Takes a depth event into its symbol's book: the mid price after it, when the book is
    /// whole (a partial-depth event always; a diff event once a snapshot bridged the chain).
    fn book_mid(
        &mut self,
        h: &DepthLine,
        verdict: Verdict,
    ) -> std::result::Result<Option<f64>, Halt> {
        let whole = self.books.event(h, verdict, |_, _, _| Ok::<(), Halt>(()))?;
        Ok(self.books.book(h.symbol).filter(|_| whole).and_then(mid))
    }

    /// A meta line: a notice on the timeline of the file's series (named by the file, since the
    /// line names no symbol; a file named otherwise has no series to show it on).
    fn meta(
        &mut self,
        bytes: &[u8],
        kind: FileKind,
        named: Option<(&str, FileKind)>,
    ) -> std::result::Result<(), Halt> {
        let meta = parse_meta(bytes)?;
        let Some((symbol, _)) = named else {
            return Ok(());
        };
        let detail = format!("{} on conn {}", meta.meta, meta.conn);
        self.series(&symbol.to_ascii_uppercase(), Stream::of(kind))?
            .fault(Fault {
                kind: FaultKind::Notice,
                at_ns: meta.recv_ns,
                until_ns: None,
                detail,
            });
        Ok(())
    }

    fn kind_line(&mut self, bytes: &[u8], kind: Kind) -> std::result::Result<(), Halt> {
        let line = parse_kind(bytes)?;
        // A backfilled line fills a gap the tape already passed; it has no stream latency.
        let (seen, latency) = if line.backfill {
            (Seen::Follows, None)
        } else {
            let check = self
                .tapes
                .entry((line.symbol.to_string(), kind))
                .or_insert_with(|| Tape::new(kind))
                .check(line.ids, line.event_ms, line.conn);
            (
                seen_of(check, kind),
                Some(latency_us(line.recv_ns, line.event_ms)),
            )
        };
        let duplicate = matches!(seen, Seen::Duplicate);
        let series = self.series(line.symbol, Stream::Kind(kind))?;
        series.event(line.recv_ns, latency, line.conn, seen);
        if kind == Kind::BookTicker && !duplicate {
            let best: BestPrices =
                serde_json::from_str(line.data).map_err(|e| format!("bad bookTicker: {e}"))?;
            if let (Ok(b), Ok(a)) = (best.b.parse::<f64>(), best.a.parse::<f64>()) {
                series.mid(line.recv_ns, (a + b) / 2.0);
            }
        }
        Ok(())
    }
}

/// The tape's word on an event, as the timeline tells it.
fn seen_of(check: Check, kind: Kind) -> Seen {
    let what = match check {
        Check::Start | Check::Continuous => return Seen::Follows,
        Check::Duplicate => return Seen::Duplicate,
        Check::Gap { from, to, .. } if kind == Kind::MarkPrice => {
            format!("no mark price between E={from} and E={to}")
        }
        Check::Gap { from, to, .. } => format!(
            "{kind} ids {from}..={to} missing ({})",
            check.missing_ids(kind)
        ),
        Check::Skipped { from, to, .. } => format!(
            "trade ids {from}..={to} missing under aggregates that follow ({})",
            check.missing_ids(kind)
        ),
        Check::Back { last, got, .. } => format!("{kind} id went back from {last} to {got}"),
    };
    if check.is_reconnect_gap() {
        Seen::LostInReconnect(what)
    } else {
        Seen::Lost(what)
    }
}

/// The mid price of a book with both sides.
fn mid(book: &Book) -> Option<f64> {
    let bid: f64 = book.best_bid()?.price.parse().ok()?;
    let ask: f64 = book.best_ask()?.price.parse().ok()?;
    Some((bid + ask) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_are_within_a_bin() {
        let mut m = Minute::new();
        for us in 1..=1000 {
            m.observe_latency(us * 100);
        }
        // True p50 50 ms, p99 99 ms; a bin is 9 % wide.
        let p50 = m.latency_ms(0.5).unwrap();
        let p99 = m.latency_ms(0.99).unwrap();
        assert!((50.0 / 1.09..=50.0 * 1.09).contains(&p50), "{p50}");
        assert!((99.0 / 1.09..=99.0 * 1.09).contains(&p99), "{p99}");
        assert_eq!(Minute::new().latency_ms(0.5), None);
        m.observe_latency(i64::MAX);
        m.observe_latency(i64::MIN);
        // A clock behind the exchange's: latencies below zero, ordered as numbers.
        let mut behind = Minute::new();
        for us in [-1_200_000, -1_100_000, -1_000_000, 5_000] {
            behind.observe_latency(us);
        }
        let p50 = behind.latency_ms(0.5).unwrap();
        assert!((-1_100.0 * 1.09..=-1_100.0 / 1.09).contains(&p50), "{p50}");
        assert!(behind.latency_ms(1.0).unwrap() > 0.0);
        assert!(behind.latency_ms(0.0).unwrap() < -1_100.0);
    }

    #[test]
    fn hours_are_complete_gap_or_missing() {
        let mut s = Series::new(Stream::Depth);
        let hour = 480_000;
        let at = |minute: u64| (hour * 60 + minute) * NS_PER_MINUTE;
        let within_silence = SILENCE_BASE.as_nanos() as u64 - 1;
        s.event(at(0), Some(1_000), 1, Seen::Follows);
        s.event(at(0) + within_silence, Some(1_000), 1, Seen::Follows);
        assert_eq!(s.coverage(hour), Coverage::Complete);
        assert_eq!(s.coverage(hour + 1), Coverage::Missing);
        // The silence from minute 0 to minute 61 spoils both its hours.
        s.event(at(61), Some(1_000), 1, Seen::Follows);
        assert_eq!(s.counts[3], 1);
        assert_eq!(s.coverage(hour), Coverage::Gap);
        assert_eq!(s.coverage(hour + 1), Coverage::Gap);
        // A seamless reconnect is listed and spoils nothing.
        s.event(at(61) + 1, Some(1_000), 2, Seen::Follows);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.faults.last().unwrap().detail, "conn 1 → 2: nothing lost");
        assert_eq!(s.coverage(hour + 2), Coverage::Missing);
        assert_eq!(s.minutes.len(), 2);
    }
}
