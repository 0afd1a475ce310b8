//! A recording as `obrec serve` plays it: depth files and the files of the streams beside the
//! book (trade, aggTrade, bookTicker, markPrice, forceOrder) merged into one timeline by receive
//! time (`recv_ns`), and the REST snapshots.
//!
//! Files are grouped in lanes, one per series (symbol and kind, from the file name), each read in
//! name order, which is time order; the lanes are merged by `recv_ns`. A player holds one open
//! file per lane, so a long recording is streamed, never loaded whole. Snapshot files are read
//! once at start for an index (per snapshot its receive time and line: a few bytes, where the body
//! is tens of KB), and a REST request reads the one body it answers from its file.
//!
//! Only what a live connection carried is played. Meta lines (a `serverShutdown` notice) are
//! skipped: a playback connection has a life of its own, which the recorded server's shutdown
//! does not end, so the notice would only make a client reconnect for nothing (and, written to
//! the file of every stream of its connection, it would come once per stream). Backfilled lines
//! are skipped too: they were fetched over REST after the stream lost them, and hold a REST item,
//! not a frame.
//!
//! Files are untrusted. A line that is not a line of its file's kind, a line cut short or damaged
//! gzip data ends that file: everything before it is played, a warning names the file and line
//! (once per file, however many connections play it), and the lane goes on with its next file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::Result;
use crate::exchange::sim::generator::Header;
use crate::exchange::sim::lock;
use crate::market::frame::offset_in;
use crate::market::kind::{Kind, KindIds};
use crate::market::stream::{Depth, parse_depth_stream, recorded_depth};
use crate::store::line::{is_meta, parse_depth, parse_kind, parse_snapshot};
use crate::store::lines::{FileLines, LineCursor, LineError, open_lines};
use crate::store::names::{self, FileKind};

/// What a subscription must match besides the symbol: diff or partial depth, whatever the
/// speed or levels, or one stream beside the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamKind {
    /// `<sym>@depth` and `<sym>@depth@<speed>`.
    Diff,
    /// `<sym>@depth<N>` and `<sym>@depth<N>@<speed>`, whatever N.
    Partial,
    /// `<sym>@trade`, `<sym>@aggTrade`, `<sym>@bookTicker`, `<sym>@markPrice@1s`,
    /// `<sym>@forceOrder`.
    Beside(Kind),
}

impl StreamKind {
    /// The kind of a recorded depth stream name, whatever its speed suffix (real recordings use
    /// the undocumented `@depth@0ms`); `None` for any other stream.
    pub(crate) fn of_recorded(stream: &str) -> Option<StreamKind> {
        recorded_depth(stream).map(StreamKind::of)
    }

    /// The upper-case symbol and the kind a subscription asks for; `None` for a name that is not
    /// a stream a recording holds (such names are acknowledged and never fed, as on Binance).
    /// The 3 s `@markPrice` stream is one: the recorder takes `@markPrice@1s`.
    pub(crate) fn of_subscribed(stream: &str) -> Option<(String, StreamKind)> {
        if let Some((symbol, depth)) = parse_depth_stream(stream) {
            return Some((symbol.to_ascii_uppercase(), StreamKind::of(depth)));
        }
        let (symbol, kind) = Kind::parse_stream(stream)?;
        let recorded = kind != Kind::MarkPrice || stream.ends_with("@1s");
        recorded.then(|| (symbol.to_ascii_uppercase(), StreamKind::Beside(kind)))
    }

    fn of(depth: Depth) -> StreamKind {
        match depth {
            Depth::Diff => StreamKind::Diff,
            Depth::Partial(_) => StreamKind::Partial,
        }
    }
}

/// One recorded event: its line as read, and where its parts are.
pub(crate) struct RecordedEvent {
    line: String,
    symbol: Range<usize>,
    data: Range<usize>,
    /// When the recorder received it, ns since the Unix epoch: the playback clock.
    pub recv_ns: u64,
    pub kind: StreamKind,
    pub header: Header,
}

impl RecordedEvent {
    /// Parses a line of a depth file (`beside` `None`) or of a stream beside the book;
    /// `Ok(None)` for a line not to play: a meta line, a backfilled one, a depth file's line of
    /// a stream that is not depth.
    fn parse(
        line: String,
        beside: Option<Kind>,
    ) -> std::result::Result<Option<RecordedEvent>, String> {
        if is_meta(line.as_bytes()) {
            return Ok(None);
        }
        let (symbol, data, recv_ns, kind, header) = match beside {
            None => {
                let d = parse_depth(line.as_bytes())?;
                let Some(kind) = StreamKind::of_recorded(d.stream) else {
                    return Ok(None);
                };
                let header = Header {
                    first: d.ids.first,
                    last: d.ids.last,
                    prev: d.ids.prev,
                    event_ms: d.event_ms,
                    trade_ms: d.trade_ms.unwrap_or(d.event_ms),
                };
                (d.symbol, d.data, d.recv_ns, kind, header)
            }
            Some(beside) => {
                let k = parse_kind(line.as_bytes())?;
                if k.backfill {
                    return Ok(None);
                }
                // The kind's own id where the frame record shows a depth event's `u`.
                let id = match k.ids {
                    KindIds::Trade { t } => t,
                    KindIds::AggTrade { a, .. } => a,
                    KindIds::BookTicker { u } => u,
                    KindIds::None => 0,
                };
                let header = Header {
                    first: id,
                    last: id,
                    prev: 0,
                    event_ms: k.event_ms,
                    trade_ms: k.event_ms,
                };
                (
                    k.symbol,
                    k.data,
                    k.recv_ns,
                    StreamKind::Beside(beside),
                    header,
                )
            }
        };
        let (symbol, data) = (offset_in(&line, symbol), offset_in(&line, data));
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
    /// Per lane, the stream beside the book it holds (`None`: depth) and its files in name order.
    lanes: Vec<(Option<Kind>, Vec<PathBuf>)>,
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
    /// events start. Damaged files are reported as warnings, not errors.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a path that does not exist, a pattern that matches nothing, or a
    /// recording without a single event to play (`no recordings in PATH`).
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
        let mut lanes: BTreeMap<String, (Option<Kind>, Vec<PathBuf>)> = BTreeMap::new();
        for path in files {
            if names::is_kind(&path, FileKind::Snapshot) {
                recording.index_snapshots(path);
            } else {
                let (key, beside) = lane_of(&path);
                lanes
                    .entry(key)
                    .or_insert((beside, Vec::new()))
                    .1
                    .push(path);
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

    /// Files found, of every kind.
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
            .map(|(beside, files)| Lane {
                beside: *beside,
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

/// Groups a series' files, and says which stream beside the book they hold:
/// `ethusdt_depth_20261120T080000Z.ndjson.gz` → `ethusdt`, depth;
/// `ethusdt_trade_20261120T080000Z.ndjson.gz` → `ethusdt@trade`, trade. A file named otherwise
/// is a depth lane of its own.
fn lane_of(path: &Path) -> (String, Option<Kind>) {
    match names::classify(path) {
        Some((symbol, FileKind::Stream(kind))) => (format!("{symbol}@{kind}"), Some(kind)),
        Some((symbol, _)) => (symbol.to_owned(), None),
        None => (
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            None,
        ),
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

/// One series' files, read one after the other.
struct Lane<'r> {
    /// The stream beside the book its files hold; `None`: depth.
    beside: Option<Kind>,
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
                Ok(Some(line)) => match RecordedEvent::parse(line, self.beside) {
                    Ok(Some(event)) => {
                        self.head = Some(event);
                        return;
                    }
                    // Not to play: skipped.
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
            ("btcusdt@depth@0ms", Some(StreamKind::Diff)),
            ("btcusdt@depth", Some(StreamKind::Diff)),
            ("ethusdt@depth@100ms", Some(StreamKind::Diff)),
            ("ethusdt@depth@250ms", Some(StreamKind::Diff)),
            ("ethusdt@depth5@100ms", Some(StreamKind::Partial)),
            ("ethusdt@depth20", Some(StreamKind::Partial)),
            ("ethusdt@depth10@500ms", Some(StreamKind::Partial)),
            ("btcusdt@bookTicker", None),
            ("btcusdt@depthx", None),
            ("btcusdt", None),
        ] {
            assert_eq!(StreamKind::of_recorded(stream), kind, "{stream}");
        }
        assert_eq!(
            StreamKind::of_subscribed("btcusdt@depth@100ms"),
            Some(("BTCUSDT".into(), StreamKind::Diff))
        );
        assert_eq!(
            StreamKind::of_subscribed("ethusdt@depth5"),
            Some(("ETHUSDT".into(), StreamKind::Partial))
        );
        assert_eq!(
            StreamKind::of_subscribed("ethusdt@aggTrade"),
            Some(("ETHUSDT".into(), StreamKind::Beside(Kind::AggTrade)))
        );
        assert_eq!(
            StreamKind::of_subscribed("ethusdt@markPrice@1s"),
            Some(("ETHUSDT".into(), StreamKind::Beside(Kind::MarkPrice)))
        );
        for none in ["ETHUSDT@depth", "ethusdt@markPrice", "ethusdt@kline_1m"] {
            assert_eq!(StreamKind::of_subscribed(none), None, "{none}");
        }
    }

    #[test]
    fn lanes_group_a_symbols_files() {
        let key = |name: &str| lane_of(Path::new("/data/order_book").join(name).as_path()).0;
        assert_eq!(key("ethusdt_depth_20261120T080000Z.ndjson.gz"), "ethusdt");
        assert_eq!(
            key("ethusdt_depth_20261120T090000Z.ndjson.gz.part"),
            "ethusdt"
        );
        assert_eq!(key("1000pepeusdt_depth_x.ndjson.gz"), "1000pepeusdt");
        assert_eq!(key("capture.ndjson.gz"), "capture.ndjson.gz");
        let trades = lane_of(Path::new("ethusdt_trade_20261120T080000Z.ndjson.gz"));
        assert_eq!(trades, ("ethusdt@trade".into(), Some(Kind::Trade)));
    }

    #[test]
    fn events_keep_the_payload_byte_for_byte() {
        let line = r#"{"symbol":"BTCUSDT","E":5,"T":4,"U":10,"u":12,"pu":9,"recv_ns":77,"conn":1,"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","u":12,"b":[["1.10","0.000"]]}}"#;
        let event = RecordedEvent::parse(line.to_owned(), None)
            .unwrap()
            .unwrap();
        assert_eq!(event.symbol(), "BTCUSDT");
        assert_eq!(
            event.payload(),
            br#"{"e":"depthUpdate","u":12,"b":[["1.10","0.000"]]}"#
        );
        assert_eq!((event.recv_ns, event.kind), (77, StreamKind::Diff));
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
        assert!(RecordedEvent::parse(other, None).unwrap().is_none());
        for bad in ["", "{}", "[1]", r#"{"symbol":"X"}"#, "not json"] {
            assert!(RecordedEvent::parse(bad.to_owned(), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn kind_lines_play_their_payload_and_skip_meta_and_backfill() {
        let line = r#"{"timestamp":"2024-08-09T00:00:56.322Z","symbol":"BTCUSDT","ts_recv":1723161255088.176,"E":1723161256322,"t":5266583935,"latency_event_ms":-1233.824,"latency_pipeline_ms":null,"recv_ns":1723161255088176367,"conn":1,"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,"t":5266583935,"p":"61800.30"}}"#;
        let event = RecordedEvent::parse(line.to_owned(), Some(Kind::Trade))
            .unwrap()
            .unwrap();
        assert_eq!(event.symbol(), "BTCUSDT");
        assert_eq!(
            event.payload(),
            br#"{"e":"trade","E":1723161256322,"t":5266583935,"p":"61800.30"}"#
        );
        assert_eq!(event.kind, StreamKind::Beside(Kind::Trade));
        assert_eq!(event.header.last, 5266583935);
        let backfill = line.replace(r#","data":"#, r#","backfill":true,"data":"#);
        assert!(
            RecordedEvent::parse(backfill, Some(Kind::Trade))
                .unwrap()
                .is_none()
        );
        let meta =
            r#"{"meta":"serverShutdown","recv_ns":1,"conn":1,"data":{"e":"serverShutdown"}}"#;
        for beside in [None, Some(Kind::Trade)] {
            assert!(
                RecordedEvent::parse(meta.to_owned(), beside)
                    .unwrap()
                    .is_none()
            );
        }
    }
}
