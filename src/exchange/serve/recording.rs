//! A recording as `obrec serve` plays it: depth files merged into one timeline by receive time
//! (`recv_ns`), and the REST snapshots.
//!
//! Depth files are grouped in lanes, one per symbol (the file name before `_depth`), each read in
//! name order, which is time order; the lanes are merged by `recv_ns`. A player holds one open
//! file per lane, so a long recording is streamed, never loaded whole. Snapshot files are read
//! once at start for an index (per snapshot its receive time and line: a few bytes, where the body
//! is tens of KB), and a REST request reads the one body it answers from its file.
//!
//! Files are untrusted. A line that is not a depth line, a line cut short or damaged gzip data
//! ends that file: everything before it is played, a warning names the file and line (once per
//! file, however many connections play it), and the lane goes on with its next file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::Result;
use crate::exchange::sim::generator::Header;
use crate::exchange::sim::lock;
use crate::market::frame::offset_in;
use crate::market::stream::{Depth, parse_depth_stream, recorded_depth};
use crate::store::line::{parse_depth, parse_snapshot};
use crate::store::lines::{FileLines, LineCursor, LineError, open_lines};
use crate::store::names::{self, FileKind};

/// Whether a depth stream carries diff or partial depth: what a subscription must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `<sym>@depth` and `<sym>@depth@<speed>`.
    Diff,
    /// `<sym>@depth<N>` and `<sym>@depth<N>@<speed>`, whatever N.
    Partial,
}

impl Kind {
    /// The kind of a recorded stream name, whatever its speed suffix (real recordings use the
    /// undocumented `@depth@0ms`); `None` for any other stream.
    pub(crate) fn of_recorded(stream: &str) -> Option<Kind> {
        recorded_depth(stream).map(Kind::of)
    }

    /// The upper-case symbol and the kind a subscription asks for; `None` for a name that is not
    /// a depth stream the front knows (such names are acknowledged and never fed, as on Binance).
    pub(crate) fn of_subscribed(stream: &str) -> Option<(String, Kind)> {
        let (symbol, depth) = parse_depth_stream(stream)?;
        Some((symbol.to_ascii_uppercase(), Kind::of(depth)))
    }

    fn of(depth: Depth) -> Kind {
        match depth {
            Depth::Diff => Kind::Diff,
            Depth::Partial(_) => Kind::Partial,
        }
    }
}

/// One recorded depth event: its line as read, and where its parts are.
pub(crate) struct RecordedEvent {
    line: String,
    symbol: Range<usize>,
    data: Range<usize>,
    /// When the recorder received it, ns since the Unix epoch: the playback clock.
    pub recv_ns: u64,
    pub kind: Kind,
    pub header: Header,
}

impl RecordedEvent {
    /// Parses a depth line; `Ok(None)` for a line of a stream that is not depth.
    fn parse(line: String) -> std::result::Result<Option<RecordedEvent>, String> {
        let d = parse_depth(line.as_bytes())?;
        let Some(kind) = Kind::of_recorded(d.stream) else {
            return Ok(None);
        };
        let header = Header {
            first: d.ids.first,
            last: d.ids.last,
            prev: d.ids.prev,
            event_ms: d.event_ms,
            trade_ms: d.trade_ms.unwrap_or(d.event_ms),
        };
        let (symbol, data) = (offset_in(&line, d.symbol), offset_in(&line, d.data));
        let recv_ns = d.recv_ns;
        Ok(Some(RecordedEvent {
            line,
            symbol,
            data,
            recv_ns,
            kind,
            header,
        }))
    }

    /// As the line spells it: upper case.
    pub(crate) fn symbol(&self) -> &str {
        &self.line[self.symbol.clone()]
    }

    /// The exchange payload exactly as recorded.
    pub(crate) fn payload(&self) -> &[u8] {
        self.line[self.data.clone()].as_bytes()
    }
}

/// A recording opened for playback. Cheap to share: players only read it.
pub struct Recording {
    /// Per lane, its files in name order.
    lanes: Vec<Vec<PathBuf>>,
    /// Per symbol (upper case), where its snapshots are, by receive time.
    snapshots: HashMap<String, Vec<SnapshotAt>>,
    /// The snapshot files the index points into.
    snapshot_files: Vec<PathBuf>,
    /// The first event's `recv_ns`: time zero of every playback.
    start_ns: u64,
    files: usize,
    /// Damaged files already reported.
    warned: Mutex<HashSet<PathBuf>>,
}

/// Where a recorded REST snapshot is.
struct SnapshotAt {
    recv_ns: u64,
    /// Its file, in [`Recording::snapshot_files`].
    file: usize,
    /// Its line number in that file.
    line: u64,
}

impl Recording {
    /// Expands `paths` as `obrec replay` does (files, directories, globs; `.part` included; a
    /// data directory read as its `order_book/`), loads the snapshot files and finds where the
    /// depth events start. Damaged files are reported as warnings, not errors.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a path that does not exist, a pattern that matches nothing, or a
    /// recording without a single depth event (`no recordings in PATH`).
    pub fn open(paths: &[PathBuf]) -> Result<Recording> {
        let files = names::recordings(paths)?;
        let mut recording = Recording {
            lanes: Vec::new(),
            snapshots: HashMap::new(),
            snapshot_files: Vec::new(),
            start_ns: 0,
            files: files.len(),
            warned: Mutex::default(),
        };
        let mut lanes: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for path in files {
            if names::is_kind(&path, FileKind::Snapshot) {
                recording.index_snapshots(path);
            } else {
                lanes.entry(lane_key(&path)).or_default().push(path);
            }
        }
        for snapshots in recording.snapshots.values_mut() {
            snapshots.sort_by_key(|s| s.recv_ns);
        }
        recording.lanes = lanes.into_values().collect();
        let first = recording.timeline().next().map(|e| e.recv_ns);
        recording.start_ns = first.ok_or_else(|| names::no_recordings(paths))?;
        Ok(recording)
    }

    /// The first event's receive time, ns since the Unix epoch.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// Files found (depth and snapshot).
    pub fn files(&self) -> usize {
        self.files
    }

    /// Snapshots loaded, all symbols together.
    pub fn snapshots(&self) -> usize {
        self.snapshots.values().map(Vec::len).sum()
    }

    /// Reads the events from the beginning, in `recv_ns` order across symbols.
    pub(crate) fn timeline(&self) -> Timeline<'_> {
        let mut lanes: Vec<Lane> = self
            .lanes
            .iter()
            .map(|files| Lane {
                files,
                next: 0,
                open: None,
                head: None,
            })
            .collect();
        for lane in &mut lanes {
            lane.advance(self);
        }
        Timeline {
            recording: self,
            lanes,
        }
    }

    /// Appends to `out` the REST body of `symbol`'s snapshot in force at `position_ns`: the
    /// latest received at or before it, else the first one, read from its file.
    ///
    /// # Errors
    /// The recording has no snapshot of `symbol`, or its file no longer holds it.
    pub(crate) fn snapshot_at(
        &self,
        symbol: &str,
        position_ns: u64,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        let no_snapshot = || format!("Invalid symbol: the recording has no snapshot of {symbol}.");
        let snapshots = self.snapshots.get(symbol).ok_or_else(no_snapshot)?;
        let after = snapshots.partition_point(|s| s.recv_ns <= position_ns);
        let at = snapshots
            .get(after.saturating_sub(1))
            .ok_or_else(no_snapshot)?;
        let path = &self.snapshot_files[at.file];
        let unreadable = |what: String| {
            format!(
                "the recorded snapshot of {symbol} cannot be read: {}: line {}: {what}",
                path.display(),
                at.line
            )
        };
        let mut line = Vec::new();
        LineCursor::new()
            .read(path, at.line, &mut line)
            .map_err(unreadable)?;
        let snap = parse_snapshot(&line).map_err(unreadable)?;
        out.extend_from_slice(snap.data.as_bytes());
        Ok(())
    }

    /// Reads a snapshot file for the index: where each snapshot is, not its body.
    fn index_snapshots(&mut self, path: PathBuf) {
        let mut lines = match Lines::open(&path) {
            Ok(lines) => lines,
            Err(what) => return self.warn_once(&path, &what),
        };
        let file = self.snapshot_files.len();
        loop {
            let line = match lines.next() {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(what) => {
                    self.warn_once(&path, &what);
                    break;
                }
            };
            let snap = match parse_snapshot(line.as_bytes()) {
                Ok(snap) => snap,
                Err(e) => {
                    self.warn_once(&path, &format!("line {}: {e}", lines.count()));
                    break;
                }
            };
            self.snapshots
                .entry(snap.symbol.to_ascii_uppercase())
                .or_default()
                .push(SnapshotAt {
                    recv_ns: snap.recv_ns,
                    file,
                    line: lines.count(),
                });
        }
        self.snapshot_files.push(path);
    }

    /// Logs a warning about a damaged file, the first time only.
    fn warn_once(&self, path: &Path, what: &str) {
        if lock(&self.warned).insert(path.to_path_buf()) {
            log::warn!("{}: {what}; what comes before is played", path.display());
        }
    }
}

/// Groups a symbol's files: `ethusdt_depth_20261120T080000Z.ndjson.gz` → `ethusdt`. A file
/// named otherwise is a lane of its own.
fn lane_key(path: &Path) -> String {
    match names::classify(path) {
        Some((symbol, _)) => symbol.to_owned(),
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// The events of a recording from the beginning, merged by `recv_ns`.
pub(crate) struct Timeline<'r> {
    recording: &'r Recording,
    lanes: Vec<Lane<'r>>,
}

impl Timeline<'_> {
    /// The next event in `recv_ns` order (ties: lane order); `None` at the end.
    pub(crate) fn next(&mut self) -> Option<RecordedEvent> {
        let mut first: Option<(u64, usize)> = None;
        for (index, lane) in self.lanes.iter().enumerate() {
            if let Some(head) = &lane.head
                && first.is_none_or(|(recv_ns, _)| head.recv_ns < recv_ns)
            {
                first = Some((head.recv_ns, index));
            }
        }
        let lane = &mut self.lanes[first?.1];
        let event = lane.head.take();
        lane.advance(self.recording);
        event
    }
}

/// One symbol's files, read one after the other.
struct Lane<'r> {
    files: &'r [PathBuf],
    /// Index of the next file to open.
    next: usize,
    open: Option<Lines>,
    /// The lane's next event, read ahead for the merge.
    head: Option<RecordedEvent>,
}

impl Lane<'_> {
    /// Reads the lane's next event into `head`, past damaged and unreadable files.
    fn advance(&mut self, recording: &Recording) {
        self.head = None;
        loop {
            let Some(lines) = &mut self.open else {
                let Some(path) = self.files.get(self.next) else {
                    return;
                };
                self.next += 1;
                match Lines::open(path) {
                    Ok(lines) => self.open = Some(lines),
                    Err(what) => recording.warn_once(path, &what),
                }
                continue;
            };
            let damage = match lines.next() {
                Ok(None) => None,
                Ok(Some(line)) => match RecordedEvent::parse(line) {
                    Ok(Some(event)) => {
                        self.head = Some(event);
                        return;
                    }
                    // Another kind of stream: skipped.
                    Ok(None) => continue,
                    Err(what) => Some(format!("line {}: {what}", lines.count())),
                },
                Err(what) => Some(what),
            };
            if let Some(what) = damage {
                recording.warn_once(&lines.path, &what);
            }
            self.open = None;
        }
    }
}

/// The lines of one gzip NDJSON file, with the damage that ends it described.
struct Lines {
    path: PathBuf,
    reader: FileLines,
}

impl Lines {
    fn open(path: &Path) -> std::result::Result<Lines, String> {
        let reader = open_lines(path).map_err(|e| e.to_string())?;
        Ok(Lines {
            path: path.to_path_buf(),
            reader,
        })
    }

    /// Lines read so far.
    fn count(&self) -> u64 {
        self.reader.line_no()
    }

    /// The next whole line, without its newline; `Ok(None)` at a clean end.
    fn next(&mut self) -> std::result::Result<Option<String>, String> {
        let before = self.reader.line_no();
        match self.reader.next_line() {
            Ok(None) => Ok(None),
            Ok(Some(line)) if !line.terminated => Err(format!("line {} is cut short", before + 1)),
            Ok(Some(line)) => String::from_utf8(line.bytes.to_vec())
                .map(Some)
                .map_err(|_| format!("line {} is not UTF-8", before + 1)),
            Err(e @ LineError::TooLong) => {
                Err(format!("line {}: {}", before + 1, e.describe(None)))
            }
            Err(e) => Err(format!("{} after line {before}", e.describe(None))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_streams_are_diff_or_partial_whatever_their_speed() {
        for (stream, kind) in [
            ("btcusdt@depth@0ms", Some(Kind::Diff)),
            ("btcusdt@depth", Some(Kind::Diff)),
            ("ethusdt@depth@100ms", Some(Kind::Diff)),
            ("ethusdt@depth@250ms", Some(Kind::Diff)),
            ("ethusdt@depth5@100ms", Some(Kind::Partial)),
            ("ethusdt@depth20", Some(Kind::Partial)),
            ("ethusdt@depth10@500ms", Some(Kind::Partial)),
            ("btcusdt@bookTicker", None),
            ("btcusdt@depthx", None),
            ("btcusdt", None),
        ] {
            assert_eq!(Kind::of_recorded(stream), kind, "{stream}");
        }
        assert_eq!(
            Kind::of_subscribed("btcusdt@depth@100ms"),
            Some(("BTCUSDT".into(), Kind::Diff))
        );
        assert_eq!(
            Kind::of_subscribed("ethusdt@depth5"),
            Some(("ETHUSDT".into(), Kind::Partial))
        );
        assert_eq!(Kind::of_subscribed("ethusdt@aggTrade"), None);
        assert_eq!(Kind::of_subscribed("ETHUSDT@depth"), None);
    }

    #[test]
    fn lanes_group_a_symbols_files() {
        let key = |name: &str| lane_key(Path::new("/data/order_book").join(name).as_path());
        assert_eq!(key("ethusdt_depth_20261120T080000Z.ndjson.gz"), "ethusdt");
        assert_eq!(
            key("ethusdt_depth_20261120T090000Z.ndjson.gz.part"),
            "ethusdt"
        );
        assert_eq!(key("1000pepeusdt_depth_x.ndjson.gz"), "1000pepeusdt");
        assert_eq!(key("capture.ndjson.gz"), "capture.ndjson.gz");
    }

    #[test]
    fn events_keep_the_payload_byte_for_byte() {
        let line = r#"{"symbol":"BTCUSDT","E":5,"T":4,"U":10,"u":12,"pu":9,"recv_ns":77,"conn":1,"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","u":12,"b":[["1.10","0.000"]]}}"#;
        let event = RecordedEvent::parse(line.to_owned()).unwrap().unwrap();
        assert_eq!(event.symbol(), "BTCUSDT");
        assert_eq!(
            event.payload(),
            br#"{"e":"depthUpdate","u":12,"b":[["1.10","0.000"]]}"#
        );
        assert_eq!((event.recv_ns, event.kind), (77, Kind::Diff));
        assert_eq!(
            (
                event.header.first,
                event.header.last,
                event.header.prev,
                event.header.event_ms,
                event.header.trade_ms
            ),
            (10, 12, 9, 5, 4)
        );
        let other = line.replace("btcusdt@depth@0ms", "btcusdt@bookTicker");
        assert!(RecordedEvent::parse(other).unwrap().is_none());
        for bad in ["", "{}", "[1]", r#"{"symbol":"X"}"#, "not json"] {
            assert!(RecordedEvent::parse(bad.to_owned()).is_err(), "{bad}");
        }
    }
}
