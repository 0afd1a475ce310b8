//! hftbacktest raw files from recordings: depth lines and the lines of the streams beside the
//! book in their envelope, snapshots as their body, every series of a symbol merged in receive
//! order, one file per symbol and UTC day.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use super::files::{GzLines, Line, OutId, Staged};
use super::import::split_line;
use super::{Conns, NS_DIGITS, Outcome, check_stream, check_symbol};
use crate::error::{Error, Result};
use crate::market::kind::Route;
use crate::market::stream::is_partial;
use crate::offline::progress::{file_done, progress_bar};
use crate::store::line::{
    DepthLine, KindLine, SnapshotLine, is_meta, parse_depth, parse_kind, parse_snapshot,
};
use crate::store::lines::LineCursor;
use crate::store::names::{FileKind, classify, is_kind};
use crate::store::names::{no_recordings, recordings};
use crate::util::clock::civil_from_days;
use crate::util::shutdown::Shutdown;

/// Where a recorded snapshot waiting for its place among its symbol's event lines is. Its body
/// (tens of KB) is read again from its file when its turn comes, so that a recording with many
/// snapshots costs a few bytes per snapshot, not all of them at once.
pub(super) struct PendingSnapshot {
    pub(super) recv_ns: u64,
    /// Its file, in [`Snapshots::files`].
    file: usize,
    /// Its line number in that file.
    line: u64,
}

/// The recorded snapshots of a conversion's inputs, per symbol in receive order.
pub(super) struct Snapshots {
    /// Per symbol, the snapshots not yet taken, oldest first.
    queues: HashMap<String, VecDeque<PendingSnapshot>>,
    /// The snapshot files [`PendingSnapshot`]s point into.
    files: Vec<PathBuf>,
    /// Where snapshot bodies are read; snapshots are taken in file order unless the files
    /// disagree with their receive times, so this mostly reads each file once.
    cursor: LineCursor,
    /// Scratch for one snapshot line.
    line: Vec<u8>,
}

impl Snapshots {
    /// Checks the snapshot files among `files` and notes where each of their snapshots is.
    pub(super) fn index(
        files: &[PathBuf],
        shutdown: &Shutdown,
        outcome: &mut Outcome,
    ) -> Result<Snapshots> {
        let mut snapshots = Snapshots {
            queues: HashMap::new(),
            files: Vec::new(),
            cursor: LineCursor::new(),
            line: Vec::new(),
        };
        for path in files.iter().filter(|p| is_kind(p, FileKind::Snapshot)) {
            snapshots.index_file(path, shutdown, outcome)?;
        }
        for queue in snapshots.queues.values_mut() {
            // Stable: snapshots received at the same instant keep their order in the files.
            queue.make_contiguous().sort_by_key(|s| s.recv_ns);
        }
        Ok(snapshots)
    }

    fn index_file(
        &mut self,
        path: &Path,
        shutdown: &Shutdown,
        outcome: &mut Outcome,
    ) -> Result<()> {
        let mut lines = GzLines::open(path, shutdown)?;
        let file = self.files.len();
        self.files.push(path.to_path_buf());
        let mut bytes = Vec::new();
        while lines.next_line(&mut bytes, outcome)? {
            let snap = match parse_snapshot(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    lines.bad_line(&not_obrec("snapshot", &bytes, e), outcome)?;
                    break;
                }
            };
            if let Err(what) = check_symbol(snap.symbol)
                .and_then(|_symbol| check_object(snap.data))
                .and_then(|()| check_ns(snap.recv_ns))
            {
                lines.bad_line(&what, outcome)?;
                break;
            }
            self.queues
                .entry(snap.symbol.to_string())
                .or_default()
                .push_back(PendingSnapshot {
                    recv_ns: snap.recv_ns,
                    file,
                    line: lines.line_no,
                });
        }
        Ok(())
    }

    /// The symbols with snapshots not yet taken, in name order.
    pub(super) fn symbols(&self) -> Vec<String> {
        let mut symbols: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(s, _)| s.clone())
            .collect();
        symbols.sort();
        symbols
    }

    /// Takes the symbol's oldest snapshot not yet taken when it was received at or before
    /// `recv_ns`.
    pub(super) fn next_until(&mut self, symbol: &str, recv_ns: u64) -> Option<PendingSnapshot> {
        let queue = self.queues.get_mut(symbol)?;
        if queue.front().is_none_or(|s| s.recv_ns > recv_ns) {
            return None;
        }
        queue.pop_front()
    }

    /// The snapshot at `at`, read again from its file.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the file no longer holds the snapshot checked when it was indexed.
    pub(super) fn read(&mut self, at: &PendingSnapshot) -> Result<SnapshotLine<'_>> {
        let path = &self.files[at.file];
        let changed = |what: String| {
            Error::Invalid(format!(
                "{}: line {}: {what} (the file changed during the export)",
                path.display(),
                at.line
            ))
        };
        self.cursor
            .read(path, at.line, &mut self.line)
            .map_err(changed)?;
        parse_snapshot(&self.line).map_err(changed)
    }
}

/// Reads the next line of `lines` into `bytes` and parses it as a `what` line with `parse`,
/// passing over meta lines (counted: not events, and a collector has no such line). `None` at the
/// end of the data, or at damage (noted in `outcome`), which ends the reading of the file.
fn next_event<'b, T>(
    lines: &mut GzLines,
    bytes: &'b mut Vec<u8>,
    outcome: &mut Outcome,
    what: &str,
    parse: fn(&'b [u8]) -> std::result::Result<T, String>,
    check: fn(&T) -> std::result::Result<(), String>,
) -> Result<Option<T>> {
    loop {
        if !lines.next_line(bytes, outcome)? {
            return Ok(None);
        }
        if !is_meta(bytes) {
            break;
        }
        outcome.skip(SKIP_META);
    }
    let bytes: &'b Vec<u8> = bytes;
    let line = match parse(bytes) {
        Ok(l) => l,
        Err(e) => {
            lines.bad_line(&not_obrec(what, bytes, e), outcome)?;
            return Ok(None);
        }
    };
    if let Err(what) = check(&line) {
        lines.bad_line(&what, outcome)?;
        return Ok(None);
    }
    Ok(Some(line))
}

/// Reads the next depth line of `lines` into `bytes`, as [`next_event`].
pub(super) fn next_depth<'b>(
    lines: &mut GzLines,
    bytes: &'b mut Vec<u8>,
    outcome: &mut Outcome,
) -> Result<Option<DepthLine<'b>>> {
    next_event(lines, bytes, outcome, "depth", parse_depth, |l| {
        check_event(l.symbol, l.stream, l.data, l.recv_ns)
    })
}

/// Reads the next line of a stream beside the book, as [`next_event`].
fn next_kind<'b>(
    lines: &mut GzLines,
    bytes: &'b mut Vec<u8>,
    outcome: &mut Outcome,
) -> Result<Option<KindLine<'b>>> {
    next_event(lines, bytes, outcome, "event", parse_kind, |l| {
        check_event(l.symbol, l.stream, l.data, l.recv_ns)
    })
}

/// What an event line must be for its hftbacktest line to be one: names that stay inside their
/// quotes, a payload that is one JSON object, a receipt time that fits the timestamp.
fn check_event(
    symbol: &str,
    stream: &str,
    data: &str,
    recv_ns: u64,
) -> std::result::Result<(), String> {
    check_symbol(symbol)
        .and_then(|_symbol| check_object(data))
        .and_then(|()| check_ns(recv_ns))
        .and_then(|()| check_stream(stream))
}

/// The UTC day of `recv_ns`, in days since the epoch, and its date.
pub(super) fn utc_day(recv_ns: u64) -> (u64, (i64, u32, u32)) {
    let day = recv_ns / NS_PER_DAY;
    (day, civil_from_days(day as i64))
}

/// Nanoseconds in a UTC day (no leap seconds in Unix time).
const NS_PER_DAY: u64 = 86_400_000_000_000;

/// Meta lines left out: not exchange frames (see the module docs).
const SKIP_META: &str = "(meta lines)";
/// Backfilled lines left out: fetched over REST, never received as frames.
const SKIP_BACKFILL: &str = "(backfilled lines)";

/// A symbol's current output file.
struct DayFile {
    /// Days since the epoch (UTC) of the file's name.
    day: u64,
    out: OutId,
    /// The connections of the last lines written to it, per route.
    conns: Conns,
}

/// Writes recordings (depth, snapshot and stream files; a data directory is read as its
/// `order_book/`) as hftbacktest raw files in `out_dir`, one per symbol and UTC day of receipt:
/// `<symbol>_<YYYYMMDD>.gz`. When `shutdown` is triggered, stops and writes nothing
/// ([`Outcome::interrupted`]).
///
/// # Errors
///
/// [`Error::Invalid`](crate::Error::Invalid) for a path that does not exist or holds no event, an
/// input not one line of which is an obrec line, or an output file that exists (nothing is
/// written then); [`Error::File`](crate::Error::File) when an output cannot be written.
pub fn export(
    paths: &[PathBuf],
    out_dir: &Path,
    gzip_level: u32,
    shutdown: &Shutdown,
) -> Result<Outcome> {
    let files = recordings(paths)?;
    let mut outcome = Outcome::default();
    let snapshots = Snapshots::index(&files, shutdown, &mut outcome)?;
    let mut ex = Conversion {
        shutdown: shutdown.clone(),
        staged: Staged::new(out_dir, gzip_level),
        current: HashMap::new(),
        snapshots,
        outcome,
        line: Vec::new(),
        tally: DepthTally::default(),
    };
    let with_snapshots: HashSet<String> = ex.snapshots.symbols().into_iter().collect();
    let progress = progress_bar(&files);
    for merge in merges(&files) {
        let read: Vec<PathBuf> = merge.iter().flat_map(|(_, f)| f.clone()).collect();
        ex.merge(merge)?;
        read.iter().for_each(|f| file_done(progress.as_ref(), f));
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    for symbol in ex.snapshots.symbols() {
        ex.snapshots_until(&symbol, u64::MAX)?;
    }
    let Conversion {
        staged,
        mut outcome,
        tally,
        ..
    } = ex;
    for (symbol, diff_lines) in &tally.depth_symbols {
        if *diff_lines > 0 && !with_snapshots.contains(symbol) {
            outcome.warnings.push(format!(
                "{symbol}: no snapshot among the inputs, so hftbacktest starts from an empty book \
                 (pass the {}_snapshot_* files too, or the directory)",
                symbol.to_ascii_lowercase()
            ));
        }
    }
    for (stream, n) in &tally.partial_streams {
        outcome.warnings.push(format!(
            "{stream}: {n} partial-depth events; hftbacktest applies every depthUpdate as a diff, \
             so levels that left the top N stay in its book (record with --depth 0 for backtests)"
        ));
    }
    if let Some(n) = outcome.skipped.get(SKIP_BACKFILL) {
        outcome.warnings.push(format!(
            "{n} backfilled lines left out: obrec fetched them over REST after their stream lost \
             them, so the collector's files never hold them"
        ));
    }
    if shutdown.is_triggered() {
        // Dropped uncommitted: every part file goes.
        outcome.interrupted = true;
        return Ok(outcome);
    }
    outcome.written = staged.commit()?;
    if outcome.written.is_empty() && outcome.damaged.is_empty() {
        return Err(no_recordings(paths));
    }
    Ok(outcome)
}

/// The series of one merge, in the order they go at equal receive times.
type Merge = Vec<(FileKind, Vec<PathBuf>)>;

/// Groups the event inputs (all but snapshot files) into merges: per symbol its series, each with
/// its files in name order (time order within a series), ranked as [`FileKind::ALL`] (depth
/// first); a file whose name is not obrec's is a depth series of its own, as [`recordings`] reads
/// it.
fn merges(files: &[PathBuf]) -> Vec<Merge> {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Key<'a> {
        Symbol(&'a str),
        Alone(&'a Path),
    }
    let mut groups: BTreeMap<Key, BTreeMap<usize, (FileKind, Vec<PathBuf>)>> = BTreeMap::new();
    for path in files {
        let (key, kind) = match classify(path) {
            Some((_, FileKind::Snapshot)) => continue,
            Some((symbol, kind)) => (Key::Symbol(symbol), kind),
            None => (Key::Alone(path), FileKind::Depth),
        };
        let rank = FileKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        groups
            .entry(key)
            .or_default()
            .entry(rank)
            .or_insert_with(|| (kind, Vec::new()))
            .1
            .push(path.clone());
    }
    groups
        .into_values()
        .map(|series| series.into_values().collect())
        .collect()
}

/// The series whose line goes next, given each series' next receive time: the earliest, the
/// first series at a tie (so a series' own lines, and the ranks of [`merges`], keep their order).
fn earliest(heads: impl Iterator<Item = Option<u64>>) -> Option<usize> {
    heads
        .enumerate()
        .filter_map(|(i, ns)| Some((ns?, i)))
        .min()
        .map(|(_, i)| i)
}

/// One series of a merge: its files read in turn, one line ahead.
struct Series {
    kind: FileKind,
    files: std::vec::IntoIter<PathBuf>,
    lines: Option<GzLines>,
    /// Scratch for the line read.
    bytes: Vec<u8>,
    /// The next line to write; `None` once the series is read.
    head: Option<Head>,
}

/// A line of a series, as it goes to the hftbacktest file.
struct Head {
    recv_ns: u64,
    /// Upper case, as lines spell it: which output it goes to.
    symbol: String,
    route: Route,
    conn: u64,
    line: Line,
    /// `<recv_ns> {"stream":…,"data":…}\n`.
    text: Vec<u8>,
}

impl Head {
    fn new(
        symbol: &str,
        stream: &str,
        data: &str,
        recv_ns: u64,
        (route, conn): (Route, u64),
        line: Line,
    ) -> Head {
        let mut text = Vec::with_capacity(NS_DIGITS + stream.len() + data.len() + 24);
        push_ns(&mut text, recv_ns);
        text.extend_from_slice(b" {\"stream\":\"");
        text.extend_from_slice(stream.as_bytes());
        text.extend_from_slice(b"\",\"data\":");
        text.extend_from_slice(data.as_bytes());
        text.extend_from_slice(b"}\n");
        Head {
            recv_ns,
            symbol: symbol.to_string(),
            route,
            conn,
            line,
            text,
        }
    }
}

impl Series {
    /// Reads the next line to write into [`Series::head`]: from the current file, else from the
    /// next one (a damaged file is read up to its damage, as [`GzLines`] reads it).
    fn advance(
        &mut self,
        shutdown: &Shutdown,
        outcome: &mut Outcome,
        tally: &mut DepthTally,
    ) -> Result<()> {
        self.head = None;
        loop {
            let lines = match &mut self.lines {
                Some(lines) => lines,
                None => match self.files.next() {
                    Some(path) => self.lines.insert(GzLines::open(&path, shutdown)?),
                    None => return Ok(()),
                },
            };
            let head = match self.kind {
                FileKind::Stream(kind) => match next_kind(lines, &mut self.bytes, outcome)? {
                    Some(l) if l.backfill => {
                        outcome.skip(SKIP_BACKFILL);
                        continue;
                    }
                    Some(l) => Some(Head::new(
                        l.symbol,
                        l.stream,
                        l.data,
                        l.recv_ns,
                        (kind.route(), l.conn),
                        Line::Kind(kind),
                    )),
                    None => None,
                },
                // Snapshot files are merged apart ([`Snapshots`]), never as a series.
                FileKind::Depth | FileKind::Snapshot => {
                    next_depth(lines, &mut self.bytes, outcome)?.map(|l| {
                        tally.count(&l);
                        // Depth comes over `/public` (see `market::kind::Route`).
                        let conn = (Route::Public, l.conn);
                        Head::new(l.symbol, l.stream, l.data, l.recv_ns, conn, Line::Depth)
                    })
                }
            };
            match head {
                Some(head) => {
                    self.head = Some(head);
                    return Ok(());
                }
                None => self.lines = None,
            }
        }
    }
}

/// What the depth lines exported were, for the warnings.
#[derive(Default)]
struct DepthTally {
    /// Symbols with depth lines, and how many of those came from diff streams.
    depth_symbols: BTreeMap<String, u64>,
    /// Partial-depth streams seen, with their event counts.
    partial_streams: BTreeMap<String, u64>,
}

impl DepthTally {
    fn count(&mut self, line: &DepthLine) {
        let diff = u64::from(!is_partial(line.stream));
        *self
            .depth_symbols
            .entry(line.symbol.to_string())
            .or_default() += diff;
        if diff == 0 {
            *self
                .partial_streams
                .entry(line.stream.to_string())
                .or_default() += 1;
        }
    }
}

struct Conversion {
    shutdown: Shutdown,
    staged: Staged,
    /// Per symbol, the file being written.
    current: HashMap<String, DayFile>,
    snapshots: Snapshots,
    outcome: Outcome,
    /// Scratch for one output line.
    line: Vec<u8>,
    tally: DepthTally,
}

impl Conversion {
    /// Writes the lines of `merge`'s series in receive order, the symbol's snapshots among them.
    fn merge(&mut self, merge: Merge) -> Result<()> {
        let mut series: Vec<Series> = merge
            .into_iter()
            .map(|(kind, files)| Series {
                kind,
                files: files.into_iter(),
                lines: None,
                bytes: Vec::new(),
                head: None,
            })
            .collect();
        for s in &mut series {
            s.advance(&self.shutdown, &mut self.outcome, &mut self.tally)?;
        }
        while let Some(i) = earliest(series.iter().map(|s| s.head.as_ref().map(|h| h.recv_ns))) {
            let head = series[i].head.take().expect("earliest has a head");
            self.event(&head)?;
            series[i].advance(&self.shutdown, &mut self.outcome, &mut self.tally)?;
        }
        // Nothing of these inputs stays only in memory while the next ones are read.
        for day in self.current.values() {
            self.staged.flush(day.out)?;
        }
        Ok(())
    }

    /// Writes one event line, after the snapshots received before it and, when its route's
    /// connection changed, a `_meta` line.
    fn event(&mut self, head: &Head) -> Result<()> {
        self.snapshots_until(&head.symbol, head.recv_ns)?;
        let out = self.target(&head.symbol, head.recv_ns)?;
        let day = self
            .current
            .get_mut(&head.symbol)
            .expect("target opened it");
        if day.conns.set(head.route, head.conn) {
            self.line.clear();
            push_ns(&mut self.line, head.recv_ns);
            self.line.extend_from_slice(
                b" {\"stream\":\"_meta\",\"data\":{\"e\":\"connection\",\"conn\":",
            );
            self.line
                .extend_from_slice(itoa::Buffer::new().format(head.conn).as_bytes());
            if head.route != Route::Public {
                self.line.extend_from_slice(b",\"route\":\"");
                self.line.extend_from_slice(head.route.path().as_bytes());
                self.line.push(b'"');
            }
            self.line.extend_from_slice(b"}}\n");
            self.staged.push(out, &self.line, Line::Meta)?;
        }
        self.staged.push(out, &head.text, head.line)
    }

    /// Writes the symbol's snapshots received at or before `recv_ns`.
    fn snapshots_until(&mut self, symbol: &str, recv_ns: u64) -> Result<()> {
        while let Some(snap) = self.snapshots.next_until(symbol, recv_ns) {
            let out = self.target(symbol, snap.recv_ns)?;
            self.line.clear();
            push_ns(&mut self.line, snap.recv_ns);
            self.line.push(b' ');
            let body = self.snapshots.read(&snap)?.data;
            self.line.extend_from_slice(body.as_bytes());
            self.line.push(b'\n');
            self.staged.push(out, &self.line, Line::Snapshot)?;
        }
        Ok(())
    }

    /// The output for a line of `symbol` received at `recv_ns`: the current file, or a new one
    /// when the UTC day moved on. A line that arrives late across midnight stays in the newer
    /// file, as the hftbacktest collector's would.
    fn target(&mut self, symbol: &str, recv_ns: u64) -> Result<OutId> {
        let (day, (y, m, d)) = utc_day(recv_ns);
        match self.current.get(symbol) {
            Some(current) if current.day >= day => return Ok(current.out),
            Some(current) => self.staged.close(current.out)?,
            None => {}
        }
        let name = format!("{}_{y:04}{m:02}{d:02}.gz", symbol.to_ascii_lowercase());
        let out = self.staged.create(&name)?;
        self.current.insert(
            symbol.to_string(),
            DayFile {
                day,
                out,
                conns: Conns::new(),
            },
        );
        Ok(out)
    }
}

/// Why a line is not an obrec line, with a hint when it is an hftbacktest one.
fn not_obrec(kind: &str, bytes: &[u8], e: String) -> String {
    if split_line(bytes).is_ok() {
        format!("not an obrec {kind} line but an hftbacktest one (obrec import reads those)")
    } else {
        e.to_string()
    }
}

/// Writes `ns` as the 19-digit hftbacktest timestamp.
fn push_ns(out: &mut Vec<u8>, ns: u64) {
    let mut num = itoa::Buffer::new();
    let digits = num.format(ns);
    out.extend(std::iter::repeat_n(
        b'0',
        NS_DIGITS.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits.as_bytes());
}

fn check_ns(ns: u64) -> std::result::Result<(), String> {
    if ns < 10u64.pow(NS_DIGITS as u32) {
        Ok(())
    } else {
        Err(format!("recv_ns {ns} does not fit in {NS_DIGITS} digits"))
    }
}

/// The payload must be one JSON object: the line scanner locates `data` without parsing it, and
/// an export must not pass on a payload that a converter would choke on.
fn check_object(data: &str) -> std::result::Result<(), String> {
    let valid =
        data.starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok();
    if valid {
        Ok(())
    } else {
        Err("data is not a JSON object".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::kind::Kind;

    #[test]
    fn each_symbol_is_one_merge_of_its_series_depth_first() {
        let files: Vec<PathBuf> = [
            "d/btcusdt_bookTicker_20240808T000000Z.ndjson.gz",
            "d/btcusdt_depth_20240808T000000Z.ndjson.gz",
            "d/btcusdt_depth_20240808T010000Z.ndjson.gz.part",
            "d/btcusdt_snapshot_20240808T000000Z.ndjson.gz",
            "d/btcusdt_trade_20240808T000000Z.ndjson.gz",
            "d/capture.gz",
            "d/ethusdt_aggTrade_20240808T000000Z.ndjson.gz",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        let shown: Vec<Vec<(FileKind, usize)>> = merges(&files)
            .into_iter()
            .map(|m| m.into_iter().map(|(k, f)| (k, f.len())).collect())
            .collect();
        assert_eq!(
            shown,
            [
                vec![
                    (FileKind::Depth, 2),
                    (FileKind::Stream(Kind::Trade), 1),
                    (FileKind::Stream(Kind::BookTicker), 1)
                ],
                vec![(FileKind::Stream(Kind::AggTrade), 1)],
                // Not an obrec name: read as depth, alone.
                vec![(FileKind::Depth, 1)],
            ]
        );
    }

    #[test]
    fn the_earliest_line_goes_first_and_the_first_series_at_a_tie() {
        assert_eq!(earliest([Some(5), Some(3), Some(4)].into_iter()), Some(1));
        assert_eq!(earliest([Some(5), None, Some(5)].into_iter()), Some(0));
        assert_eq!(earliest([None, Some(7), Some(7)].into_iter()), Some(1));
        assert_eq!(earliest([None, None].into_iter()), None);
    }

    #[test]
    fn timestamps_are_nineteen_digits() {
        for (ns, want) in [
            (1_723_161_255_030_314_667, "1723161255030314667"),
            (999_999_999_999_999_999, "0999999999999999999"),
            (0, "0000000000000000000"),
        ] {
            let mut out = Vec::new();
            push_ns(&mut out, ns);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        assert!(check_ns(9_999_999_999_999_999_999).is_ok());
        assert!(check_ns(10_000_000_000_000_000_000).is_err());
    }
}
