//! hftbacktest raw files from recordings: depth lines in their envelope, snapshots as their body,
//! merged per symbol in receive order, one file per symbol and UTC day.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use super::files::{GzLines, Line, OutId, Staged};
use super::import::split_line;
use super::{NS_DIGITS, Outcome, check_stream, check_symbol};
use crate::error::{Error, Result};
use crate::market::stream::is_partial;
use crate::store::line::{DepthLine, SnapshotLine, is_meta, parse_depth, parse_snapshot};
use crate::store::lines::LineCursor;
use crate::store::names::{FileKind, is_kind};
use crate::store::names::{no_recordings, recordings};
use crate::util::clock::civil_from_days;
use crate::util::shutdown::Shutdown;

/// Where a recorded snapshot waiting for its place among the depth lines is. Its body (tens of
/// KB) is read again from its file when its turn comes, so that a recording with many snapshots
/// costs a few bytes per snapshot, not all of them at once.
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

/// Reads the next depth line of `lines` into `bytes`, passing over meta lines: `None` at the end
/// of the data, or at damage (noted in `outcome`), which ends the reading of the file.
pub(super) fn next_depth<'b>(
    lines: &mut GzLines,
    bytes: &'b mut Vec<u8>,
    outcome: &mut Outcome,
) -> Result<Option<DepthLine<'b>>> {
    loop {
        if !lines.next_line(bytes, outcome)? {
            return Ok(None);
        }
        if !is_meta(bytes) {
            break;
        }
    }
    let line = match parse_depth(bytes) {
        Ok(l) => l,
        Err(e) => {
            lines.bad_line(&not_obrec("depth", bytes, e), outcome)?;
            return Ok(None);
        }
    };
    if let Err(what) = check_symbol(line.symbol)
        .and_then(|_symbol| check_object(line.data))
        .and_then(|()| check_ns(line.recv_ns))
        .and_then(|()| check_stream(line.stream))
    {
        lines.bad_line(&what, outcome)?;
        return Ok(None);
    }
    Ok(Some(line))
}

/// The UTC day of `recv_ns`, in days since the epoch, and its date.
pub(super) fn utc_day(recv_ns: u64) -> (u64, (i64, u32, u32)) {
    let day = recv_ns / NS_PER_DAY;
    (day, civil_from_days(day as i64))
}

/// Nanoseconds in a UTC day (no leap seconds in Unix time).
const NS_PER_DAY: u64 = 86_400_000_000_000;

/// A symbol's current output file.
struct DayFile {
    /// Days since the epoch (UTC) of the file's name.
    day: u64,
    out: OutId,
    /// The connection of the last depth line written to it (1 when none was).
    conn: u64,
}

/// Writes recordings (depth files and snapshot files; a data directory is read as its
/// `order_book/`) as hftbacktest raw files in `out_dir`, one per symbol and UTC day of receipt:
/// `<symbol>_<YYYYMMDD>.gz`. When `shutdown` is triggered, stops and writes nothing
/// ([`Outcome::interrupted`]).
///
/// # Errors
///
/// [`Error::Invalid`](crate::Error::Invalid) for a path that does not exist or holds no depth event, an input not one line
/// of which is an obrec line, or an output file that exists (nothing is written then);
/// [`Error::File`](crate::Error::File) when an output cannot be written.
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
        depth_symbols: BTreeMap::new(),
        partial_streams: BTreeMap::new(),
    };
    let with_snapshots: HashSet<String> = ex.snapshots.symbols().into_iter().collect();
    for path in files.iter().filter(|p| !is_kind(p, FileKind::Snapshot)) {
        ex.depth_file(path)?;
    }
    for symbol in ex.snapshots.symbols() {
        ex.snapshots_until(&symbol, u64::MAX)?;
    }
    let Conversion {
        staged,
        mut outcome,
        depth_symbols,
        partial_streams,
        ..
    } = ex;
    for (symbol, diff_lines) in &depth_symbols {
        if *diff_lines > 0 && !with_snapshots.contains(symbol) {
            outcome.warnings.push(format!(
                "{symbol}: no snapshot among the inputs, so hftbacktest starts from an empty book \
                 (pass the {}_snapshot_* files too, or the directory)",
                symbol.to_ascii_lowercase()
            ));
        }
    }
    for (stream, n) in &partial_streams {
        outcome.warnings.push(format!(
            "{stream}: {n} partial-depth events; hftbacktest applies every depthUpdate as a diff, \
             so levels that left the top N stay in its book (record with --depth 0 for backtests)"
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

struct Conversion {
    shutdown: Shutdown,
    staged: Staged,
    /// Per symbol, the file being written.
    current: HashMap<String, DayFile>,
    snapshots: Snapshots,
    outcome: Outcome,
    /// Scratch for one output line.
    line: Vec<u8>,
    /// Symbols with depth lines, and how many of those came from diff streams.
    depth_symbols: BTreeMap<String, u64>,
    /// Partial-depth streams seen, with their event counts.
    partial_streams: BTreeMap<String, u64>,
}

impl Conversion {
    fn depth_file(&mut self, path: &Path) -> Result<()> {
        let mut lines = GzLines::open(path, &self.shutdown)?;
        let mut bytes = Vec::new();
        while let Some(line) = next_depth(&mut lines, &mut bytes, &mut self.outcome)? {
            self.depth_line(&line)?;
        }
        // Nothing of this input stays only in memory while the next one is read.
        for day in self.current.values() {
            self.staged.flush(day.out)?;
        }
        Ok(())
    }

    fn depth_line(&mut self, line: &DepthLine) -> Result<()> {
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
        self.snapshots_until(line.symbol, line.recv_ns)?;
        let conn = line.conn;
        let out = self.target(line.symbol, line.recv_ns)?;
        let day = self.current.get_mut(line.symbol).expect("target opened it");
        if day.conn != conn {
            day.conn = conn;
            self.line.clear();
            push_ns(&mut self.line, line.recv_ns);
            self.line.extend_from_slice(
                b" {\"stream\":\"_meta\",\"data\":{\"e\":\"connection\",\"conn\":",
            );
            self.line
                .extend_from_slice(itoa::Buffer::new().format(conn).as_bytes());
            self.line.extend_from_slice(b"}}\n");
            self.staged.push(out, &self.line, Line::Meta)?;
        }
        self.line.clear();
        push_ns(&mut self.line, line.recv_ns);
        self.line.extend_from_slice(b" {\"stream\":\"");
        self.line.extend_from_slice(line.stream.as_bytes());
        self.line.extend_from_slice(b"\",\"data\":");
        self.line.extend_from_slice(line.data.as_bytes());
        self.line.extend_from_slice(b"}\n");
        self.staged.push(out, &self.line, Line::Depth)
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
        self.current
            .insert(symbol.to_string(), DayFile { day, out, conn: 1 });
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
