//! `obrec merge`: one archive from the archives of several recorders of the same streams, each
//! with holes of its own (a host reboot, a network blip, a stalled connection).
//!
//! # What is kept
//!
//! Per series (symbol and kind: depth, snapshots, each stream beside the book), the inputs' lines
//! are merged in the order of the exchange's ids: depth `u`, trade `t`, aggTrade `a`, bookTicker
//! `u`, snapshot `lastUpdateId`, mark price and liquidations their event time `E` (with the
//! payload telling apart two events of one millisecond). Copies of one event are written once:
//! where inputs disagree on a depth event, the copy whose `pu` continues the merged chain; else a
//! live copy before a backfilled one, then the earliest receipt. Lines are copied byte for byte,
//! envelope and all, so `conn` stays the connection of the recorder that delivered the line (a
//! change of source reads as a change of connection). Meta lines (`serverShutdown` notices) are
//! kept where they stand in their input, once.
//!
//! A recorder appends backfilled trades and aggregate trades after the gap they close, behind
//! later events; such a line is written where it stands when it closes a gap the merge still
//! has, and left out as a copy otherwise.
//!
//! # What is reported
//!
//! Per series: the events of each input, the events written, those only one input had, the
//! copies left out; and the gaps no input covers, with their ids and the receipts around them,
//! found by the same [`Chain`] and [`Tape`] rules the recorder and replay run.
//!
//! # Output and memory
//!
//! The output is a data directory (`<OUT>/order_book/`, named as the recorder names its files,
//! one file per series and UTC hour) that replay, serve and export read unchanged. It must not
//! exist or be empty; files are written as `.part` and linked to their names only when the whole
//! merge has run, never over an existing file, so a merge stopped by a signal or killed leaves no
//! file under a final name. Series are merged one after the other, each input read file by file:
//! the merge holds per input one open file and one line (at most
//! [`MAX_LINE`](crate::store::lines::MAX_LINE)), one gzip member being written, and per series at
//! most [`MAX_OPEN_GAPS`] gap ranges; its memory does not grow with the length of the inputs.

mod input;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::market::kind::{Check, Kind, Tape};
use crate::market::sequence::{Chain, Verdict};
use crate::market::symbol::Symbol;
use crate::offline::interop::files::{Line, OutId, Staged};
use crate::offline::progress::progress_bar;
use crate::offline::replay::MAX_LISTED;
use crate::store::names::{FileKind, classify, expand, file_name, no_recordings, series};
use crate::util::shutdown::Shutdown;
use input::{Event, Input, Next, Place, Reading};

/// The period of an output file: the recorder's default, so a merged archive's files are the
/// size its inputs' were.
const PERIOD_SECS: u64 = 3600;
/// Identities of the last events written, per series, that a later line of one input is checked
/// against: a recorder writes a copy from an overlapping connection within a few events of the
/// first, as [`Chain`] assumes.
const RECENT: usize = 64;
/// Meta lines remembered to write each once: the inputs' notices of one moment come together.
const RECENT_META: usize = 16;
/// Gap ranges of a series held open for a late backfilled line to close, 24 bytes each: at most
/// 24 MB for a series of nothing but gaps, where a real day holds a handful. Past it a late
/// line is written whatever it is (a copy rather than a loss), and counted.
pub const MAX_OPEN_GAPS: usize = 1 << 20;

/// One series as the merge reports it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SeriesReport {
    /// Upper case, as lines spell it.
    pub symbol: String,
    /// `depth`, `snapshot`, or the kind's name.
    pub kind: String,
    /// Event lines read from each input, in the order the inputs were given.
    pub inputs: Vec<u64>,
    /// Events written that no other input had where the merge reached them (a recorder's
    /// backfilled copy, appended later, does not count).
    pub only: Vec<u64>,
    /// Events written.
    pub events: u64,
    /// Copies of events already written, left out.
    pub duplicates: u64,
    /// Events whose position went back from the last written (an exchange that restarted its
    /// ids, or a late line past [`MAX_OPEN_GAPS`]): written where they stand.
    pub went_back: u64,
    /// Gaps no input covers.
    pub gaps: u64,
    /// Ids those gaps lack (trade and aggTrade; 0 for the others, whose ids are not dense).
    pub missing_ids: u64,
    /// Meta lines written.
    pub meta_lines: u64,
}

/// A gap no input covers.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MergeGap {
    /// Upper case, as lines spell it.
    pub symbol: String,
    /// `depth`, or the kind's name.
    pub kind: String,
    /// Depth: the `u` of the last event before the gap and the `pu` of the first after it;
    /// trade and aggTrade: the missing ids `from..=to`; bookTicker: the `u`s around it; mark
    /// price: the event times (ms) between which events are missing.
    pub from: u64,
    pub to: u64,
    /// Receipt of the last event before the gap and of the first after it, ns since the epoch.
    pub after_ns: u64,
    pub before_ns: u64,
}

impl MergeGap {
    /// What is missing, in the kind's words.
    pub fn missing(&self) -> String {
        let (from, to) = (self.from, self.to);
        match self.kind.as_str() {
            "depth" => format!("update ids after u={from} up to pu={to}"),
            "markPrice" => format!("events between E={from} and E={to}"),
            "bookTicker" => format!("events after u={from}, before u={to}"),
            _ => format!("ids {from}..={to}"),
        }
    }
}

/// What a merge wrote, and found.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct MergeReport {
    /// The inputs, as given.
    pub inputs: Vec<String>,
    /// By symbol, then kind (depth, snapshot, the streams beside the book).
    pub series: Vec<SeriesReport>,
    /// The first [`MAX_LISTED`] gaps; `series` counts them all.
    pub gaps: Vec<MergeGap>,
    /// Gaps beyond the first [`MAX_LISTED`], counted but not listed.
    pub gaps_unlisted: u64,
    /// Inputs read only up to damage: `<file>: line N: <what> (read up to line N-1)`.
    pub damaged: Vec<String>,
    /// The files written, in name order.
    pub files: Vec<PathBuf>,
    /// Bytes read from the inputs, compressed: the figure for throughput.
    pub input_bytes: u64,
    /// A signal stopped the merge: nothing was written.
    #[serde(skip)]
    pub interrupted: bool,
}

impl MergeReport {
    /// Events written, all series together.
    pub fn events(&self) -> u64 {
        self.series.iter().map(|s| s.events).sum()
    }
}

/// Merges the recordings of `inputs` (each a recorder's data directory, its `order_book/`, files
/// or glob patterns) into the new data directory `out`.
///
/// # Errors
/// [`Error::Invalid`] when `out` exists and is not an empty directory, an input holds no
/// recording or names a file that is not one, or one series holds copies of different streams
/// (nothing is written then); [`Error::File`] when a file cannot be read or written.
pub fn merge(
    inputs: &[PathBuf],
    out: &Path,
    gzip_level: u32,
    shutdown: &Shutdown,
) -> Result<MergeReport> {
    refuse_existing(out)?;
    let series = series_of(inputs)?;
    let all_files: Vec<PathBuf> = series
        .values()
        .flat_map(|per_input| per_input.iter().flatten().cloned())
        .collect();
    let mut report = MergeReport {
        inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
        input_bytes: all_files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum(),
        ..MergeReport::default()
    };
    let mut reading = Reading {
        damaged: Vec::new(),
        progress: progress_bar(&all_files),
        shutdown: shutdown.clone(),
    };
    let mut output = Output::new(out, gzip_level);
    for ((symbol, kind_at), per_input) in series {
        let symbol = Symbol::new(&symbol.to_ascii_uppercase())
            .map_err(|e| Error::Invalid(format!("{symbol}: {e}")))?;
        let kind = FileKind::ALL[kind_at];
        let mut merger = SeriesMerge::new(&symbol, kind, per_input);
        merger.run(&mut output, &mut reading)?;
        if shutdown.is_triggered() {
            report.interrupted = true;
            return Ok(report);
        }
        merger.finish(&mut report);
    }
    if let Some(bar) = &reading.progress {
        bar.finish_and_clear();
    }
    report.damaged = reading.damaged;
    report.files = output.commit()?;
    Ok(report)
}

/// Refuses an output that exists, unless it is an empty directory.
fn refuse_existing(out: &Path) -> Result<()> {
    let empty_dir = match std::fs::read_dir(out) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => false,
    };
    if empty_dir {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{} exists: merge writes a new archive, never into an existing one (choose another -o)",
        out.display()
    )))
}

/// The files of each series (symbol as names spell it, index in [`FileKind::ALL`]), per input.
type SeriesFiles = BTreeMap<(String, usize), Vec<Vec<PathBuf>>>;

/// Groups every input's recordings by series.
///
/// # Errors
/// [`Error::Invalid`] for an input without a recording, or a file named otherwise.
fn series_of(inputs: &[PathBuf]) -> Result<SeriesFiles> {
    let mut series = SeriesFiles::new();
    for (at, input) in inputs.iter().enumerate() {
        let files = expand(std::slice::from_ref(input))?;
        if files.is_empty() {
            return Err(no_recordings(std::slice::from_ref(input)));
        }
        for file in files {
            let Some((symbol, kind)) = classify(&file) else {
                return Err(Error::Invalid(format!(
                    "{}: not a recording (named <symbol>_<kind>_<UTC start>.ndjson.gz)",
                    file.display()
                )));
            };
            let kind_at = FileKind::ALL
                .iter()
                .position(|k| *k == kind)
                .expect("every kind is listed");
            let per_input = series
                .entry((symbol.to_string(), kind_at))
                .or_insert_with(|| vec![Vec::new(); inputs.len()]);
            per_input[at].push(file);
        }
    }
    Ok(series)
}

/// The output archive: each series' lines go to its file of the UTC hour they were received in.
struct Output {
    /// Every file of the merge, as `.part` until the whole merge has run.
    staged: Staged,
    /// The file being written, and the hour it holds.
    open: Option<(OutId, u64)>,
    /// The series being written: what its files are named after.
    series: String,
    /// What the series' event lines count as in the files' figures.
    line: Line,
}

impl Output {
    fn new(out: &Path, gzip_level: u32) -> Output {
        Output {
            staged: Staged::new(&crate::store::names::book_dir(out), gzip_level),
            open: None,
            series: String::new(),
            line: Line::Depth,
        }
    }

    /// Starts a series: its lines go to files of their own.
    fn start(&mut self, series: String, kind: FileKind) -> Result<()> {
        self.close()?;
        self.series = series;
        self.line = match kind {
            FileKind::Depth => Line::Depth,
            FileKind::Snapshot => Line::Snapshot,
            FileKind::Stream(kind) => Line::Kind(kind),
        };
        Ok(())
    }

    /// Writes a line received at `recv_ns`, in the file of its hour; a line received before the
    /// open file's hour (another host's clock) stays in that file, so names keep time order.
    fn write(&mut self, bytes: &[u8], recv_ns: u64, line: Line) -> Result<()> {
        let secs = recv_ns / 1_000_000_000;
        let hour = secs / PERIOD_SECS;
        let id = match self.open {
            Some((id, open)) if open >= hour => id,
            _ => {
                self.close()?;
                let name = file_name(&self.series, secs);
                let id = self.staged.create(&name)?;
                self.open = Some((id, hour));
                id
            }
        };
        self.staged.push(id, bytes, line)
    }

    fn close(&mut self) -> Result<()> {
        match self.open.take() {
            Some((id, _)) => self.staged.close(id),
            None => Ok(()),
        }
    }

    /// Gives every file its name; the files in name order.
    fn commit(mut self) -> Result<Vec<PathBuf>> {
        self.close()?;
        Ok(self.staged.commit()?.into_iter().map(|w| w.path).collect())
    }
}

/// What the merged lines of a series are checked with.
enum Continuity {
    Depth(Chain),
    Kind(Tape),
    /// Snapshots and liquidations: no rule says one is missing.
    None,
}

/// A gap still open: the ids of trades and aggregate trades a late backfilled line may close.
#[derive(Clone, Copy)]
struct Open {
    /// The last missing id.
    to: u64,
    /// Receipts around the gap, for its report.
    after_ns: u64,
    before_ns: u64,
}

/// The merge of one series.
struct SeriesMerge {
    /// Upper case, for the report and messages.
    symbol: String,
    /// What the series' lines are: how they are read, ordered and checked.
    kind: FileKind,
    /// What its output files are named after (`btcusdt_depth`).
    name: String,
    /// Each input's lines of the series, in the order the inputs were given.
    inputs: Vec<Input>,
    /// The rule that finds the gaps in the merged lines.
    continuity: Continuity,
    /// The identity of the last event written in order, and the identities of the last
    /// [`RECENT`] written.
    last: Option<(u64, u32)>,
    recent: VecDeque<(u64, u32)>,
    /// CRC-32s of the last meta lines written.
    recent_meta: VecDeque<u32>,
    /// Receipt of the last event written in order: where the next gap starts.
    last_recv_ns: u64,
    /// The first depth stream written: copies of another stream are refused.
    stream: Option<Vec<u8>>,
    /// Trade and aggTrade gaps by first missing id, until the end of the series.
    open_gaps: BTreeMap<u64, Open>,
    /// Gaps found by other rules, final when found.
    gaps: Vec<MergeGap>,
    /// The series' figures, filled in as it is merged.
    report: SeriesReport,
}

impl SeriesMerge {
    fn new(symbol: &Symbol, kind: FileKind, per_input: Vec<Vec<PathBuf>>) -> SeriesMerge {
        let kind_name = match kind {
            FileKind::Depth => "depth".to_string(),
            FileKind::Snapshot => "snapshot".to_string(),
            FileKind::Stream(kind) => kind.name().to_string(),
        };
        let continuity = match kind {
            FileKind::Depth => Continuity::Depth(Chain::new()),
            FileKind::Stream(kind) if kind.has_gaps() => Continuity::Kind(Tape::new(kind)),
            _ => Continuity::None,
        };
        let n = per_input.len();
        SeriesMerge {
            symbol: symbol.as_str().to_string(),
            kind,
            name: series(symbol, kind),
            inputs: per_input
                .into_iter()
                .map(|files| Input::new(kind, files))
                .collect(),
            continuity,
            last: None,
            recent: VecDeque::with_capacity(RECENT),
            recent_meta: VecDeque::with_capacity(RECENT_META),
            last_recv_ns: 0,
            stream: None,
            open_gaps: BTreeMap::new(),
            gaps: Vec::new(),
            report: SeriesReport {
                symbol: symbol.as_str().to_string(),
                kind: kind_name,
                inputs: vec![0; n],
                only: vec![0; n],
                events: 0,
                duplicates: 0,
                went_back: 0,
                gaps: 0,
                missing_ids: 0,
                meta_lines: 0,
            },
        }
    }

    /// Whether the series' ids are dense (trade `t`, aggTrade `a`): a gap is a set of ids a
    /// late line can fall into.
    fn dense(&self) -> bool {
        matches!(self.kind, FileKind::Stream(Kind::Trade | Kind::AggTrade))
    }

    /// Merges the series into `out`, until its inputs end or the merge is stopped.
    fn run(&mut self, out: &mut Output, reading: &mut Reading) -> Result<()> {
        out.start(self.name.clone(), self.kind)?;
        for at in 0..self.inputs.len() {
            self.advance(at, out, reading)?;
        }
        let mut candidates = Vec::with_capacity(self.inputs.len());
        loop {
            if reading.shutdown.is_triggered() {
                return Ok(());
            }
            let Some(min) = self
                .inputs
                .iter()
                .filter_map(|i| i.head.as_ref())
                .map(Event::identity)
                .min()
            else {
                break;
            };
            candidates.clear();
            candidates.extend((0..self.inputs.len()).filter(|&at| {
                self.inputs[at]
                    .head
                    .as_ref()
                    .is_some_and(|e| e.identity() == min)
            }));
            let chosen = self.choose(&candidates);
            if self.take(chosen, min, out)? {
                if let [only] = candidates[..] {
                    self.report.only[only] += 1;
                }
                self.report.duplicates += candidates.len() as u64 - 1;
            } else {
                self.report.duplicates += candidates.len() as u64;
            }
            for &at in &candidates {
                self.advance(at, out, reading)?;
            }
        }
        out.close()
    }

    /// Of copies of one event, the one to keep: the one continuing the depth chain, a live one,
    /// the earliest received, the first input's.
    fn choose(&self, candidates: &[usize]) -> usize {
        let last_u = match &self.continuity {
            Continuity::Depth(chain) => chain.last_u(),
            _ => None,
        };
        *candidates
            .iter()
            .min_by_key(|&&at| {
                let e = self.inputs[at]
                    .head
                    .as_ref()
                    .expect("a candidate has a head");
                let continues = matches!(e.place, Place::Depth(ids) if Some(ids.prev) == last_u);
                (!continues, e.backfill, e.recv_ns, at)
            })
            .expect("at least one candidate")
    }

    /// Writes the head of input `at`, whose identity is `identity`, unless it is a copy of an
    /// event written already; true when written.
    fn take(&mut self, at: usize, identity: (u64, u32), out: &mut Output) -> Result<bool> {
        if self.recent.contains(&identity) {
            return Ok(false);
        }
        // Behind the merged events: a late backfilled line closing a gap, a copy, or ids that
        // went back.
        let behind = self.last.is_some_and(|last| identity.0 < last.0);
        if behind && self.dense() && self.open_gaps.len() < MAX_OPEN_GAPS {
            if !self.close_gap(identity.0) {
                return Ok(false);
            }
        } else {
            if behind {
                self.report.went_back += 1;
            }
            self.check(at);
            self.last = Some(identity);
        }
        let event = self.inputs[at]
            .head
            .as_ref()
            .expect("a candidate has a head");
        if let Place::Depth(_) = event.place {
            match &self.stream {
                None => self.stream = Some(event.stream().to_vec()),
                Some(first) if first != event.stream() => {
                    return Err(Error::Invalid(format!(
                        "{} depth: the inputs hold different streams ({} and {}): merge copies \
                         of one stream only",
                        self.symbol,
                        String::from_utf8_lossy(first),
                        String::from_utf8_lossy(event.stream())
                    )));
                }
                Some(_) => {}
            }
        }
        let line = out.line;
        out.write(&event.bytes, event.recv_ns, line)?;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(identity);
        self.report.events += 1;
        Ok(true)
    }

    /// Runs the head of input `at`, written in order, through the series' continuity rule, and
    /// notes the gap before it.
    fn check(&mut self, at: usize) {
        let event = self.inputs[at]
            .head
            .as_ref()
            .expect("a candidate has a head");
        let after_ns = std::mem::replace(&mut self.last_recv_ns, event.recv_ns);
        let before_ns = event.recv_ns;
        // One connection for the whole series: every discontinuity is a gap, whichever recorder
        // delivered the events around it.
        let gap = match (&mut self.continuity, event.place) {
            (Continuity::Depth(chain), Place::Depth(ids)) => match chain.check(ids, 0) {
                Verdict::Break {
                    expected_pu,
                    got_pu,
                } => Some((expected_pu, got_pu)),
                _ => None,
            },
            (Continuity::Kind(tape), Place::Kind { ids, event_ms }) => {
                match tape.check(ids, event_ms, 0) {
                    Check::Gap { from, to, .. } | Check::Skipped { from, to, .. } => {
                        Some((from, to))
                    }
                    Check::Back { last, got, .. } => Some((last, got)),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((from, to)) = gap else {
            return;
        };
        if self.dense() && from <= to && self.open_gaps.len() < MAX_OPEN_GAPS {
            let open = Open {
                to,
                after_ns,
                before_ns,
            };
            self.open_gaps.insert(from, open);
        } else {
            self.gaps.push(MergeGap {
                symbol: self.symbol.clone(),
                kind: self.report.kind.clone(),
                from,
                to,
                after_ns,
                before_ns,
            });
        }
    }

    /// Takes `id` out of the open gap holding it; false when no open gap holds it (a copy).
    fn close_gap(&mut self, id: u64) -> bool {
        let Some((&from, &open)) = self.open_gaps.range(..=id).next_back() else {
            return false;
        };
        if open.to < id {
            return false;
        }
        self.open_gaps.remove(&from);
        if from < id {
            self.open_gaps.insert(from, Open { to: id - 1, ..open });
        }
        if id < open.to {
            self.open_gaps.insert(id + 1, open);
        }
        true
    }

    /// Reads input `at` on to its next event, writing the meta lines on the way.
    fn advance(&mut self, at: usize, out: &mut Output, reading: &mut Reading) -> Result<()> {
        loop {
            match self.inputs[at].advance(reading)? {
                Next::Event => {
                    self.report.inputs[at] += 1;
                    return Ok(());
                }
                Next::End => return Ok(()),
                Next::Meta => {
                    let input = &self.inputs[at];
                    let crc = crc32fast::hash(&input.meta);
                    if self.recent_meta.contains(&crc) {
                        continue;
                    }
                    if self.recent_meta.len() == RECENT_META {
                        self.recent_meta.pop_front();
                    }
                    self.recent_meta.push_back(crc);
                    out.write(&input.meta, input.meta_recv_ns, Line::Meta)?;
                    self.report.meta_lines += 1;
                }
            }
        }
    }

    /// Adds the series' figures and gaps to `report`.
    fn finish(self, report: &mut MergeReport) {
        let dense = self.dense();
        let mut gaps = self.gaps;
        gaps.extend(self.open_gaps.into_iter().map(|(from, open)| MergeGap {
            symbol: self.symbol.clone(),
            kind: self.report.kind.clone(),
            from,
            to: open.to,
            after_ns: open.after_ns,
            before_ns: open.before_ns,
        }));
        gaps.sort_by_key(|g| g.after_ns);
        let mut series = self.report;
        series.gaps = gaps.len() as u64;
        if dense {
            series.missing_ids = gaps.iter().map(|g| g.to - g.from + 1).sum();
        }
        for gap in gaps {
            if report.gaps.len() < MAX_LISTED {
                report.gaps.push(gap);
            } else {
                report.gaps_unlisted += 1;
            }
        }
        report.series.push(series);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::kind::KindIds;
    use crate::market::sequence::Ids;
    use crate::store::gzip::MemberEncoder;
    use crate::store::line::{DepthLine, KindLine, encode_depth, encode_kind};
    use std::io::Read;

    /// 2026-11-30T00:00:00Z, in ns: every line below is received within its hour.
    const T0: u64 = 1_796_000_000_000_000_000;

    /// An aggTrade line: aggregate `a` covering trade `a`, received at `T0 + a` ms.
    fn agg(a: u64, backfill: bool) -> Vec<u8> {
        let data = format!(r#"{{"e":"aggTrade","E":1,"a":{a},"s":"BTCUSDT","f":{a},"l":{a}}}"#);
        let mut out = Vec::new();
        let line = KindLine {
            symbol: "BTCUSDT",
            stream: "btcusdt@aggTrade",
            data: &data,
            event_ms: 1,
            ids: KindIds::AggTrade { a, f: a, l: a },
            pipeline_us: Some(1),
            recv_ns: T0 + a * 1_000_000,
            conn: u64::from(!backfill),
            backfill,
        };
        encode_kind(&mut out, &line);
        out
    }

    /// A depth line `u` after `pu`, received at `recv_ms` past `T0`.
    fn depth(u: u64, pu: u64, recv_ms: u64) -> Vec<u8> {
        let data = format!(r#"{{"e":"depthUpdate","s":"BTCUSDT","U":{u},"u":{u},"pu":{pu}}}"#);
        let mut out = Vec::new();
        let line = DepthLine {
            symbol: "BTCUSDT",
            stream: "btcusdt@depth@0ms",
            data: &data,
            event_ms: 1,
            trade_ms: None,
            ids: Ids {
                first: u,
                last: u,
                prev: pu,
            },
            pipeline_us: Some(1),
            recv_ns: T0 + recv_ms * 1_000_000,
            conn: 1,
        };
        encode_depth(&mut out, &line);
        out
    }

    /// Writes `lines` as the recording `name` of the data directory `dir`.
    fn write(dir: &Path, name: &str, lines: &[Vec<u8>]) -> PathBuf {
        let book = crate::store::names::book_dir(dir);
        std::fs::create_dir_all(&book).unwrap();
        let mut file = Vec::new();
        MemberEncoder::new(1).encode(&lines.concat(), &mut file);
        std::fs::write(book.join(name), file).unwrap();
        dir.to_path_buf()
    }

    /// The text of an output file.
    fn read(path: &Path) -> Vec<u8> {
        let mut text = Vec::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut text)
            .unwrap();
        text
    }

    const AGG: &str = "btcusdt_aggTrade_20261130T000000Z.ndjson.gz";

    /// A recorder appends the backfill of a gap behind later events: written where it stands
    /// when no other input had the events live, left out as a copy when one did; what no input
    /// has stays a gap.
    #[test]
    fn late_backfilled_lines_close_gaps_or_are_copies() {
        let dir = tempfile::tempdir().unwrap();
        let late: Vec<Vec<u8>> = [1, 2, 3, 7, 8]
            .iter()
            .map(|&a| agg(a, false))
            .chain([agg(4, true), agg(6, true)])
            .chain([agg(9, false)])
            .collect();
        let a = write(&dir.path().join("a"), AGG, &late);
        let live: Vec<Vec<u8>> = (1..=9).map(|a| agg(a, false)).collect();
        let b = write(&dir.path().join("b"), AGG, &live);
        let lacking: Vec<Vec<u8>> = [1, 2, 3, 7, 8, 9].iter().map(|&a| agg(a, false)).collect();
        let c = write(&dir.path().join("c"), AGG, &lacking);

        let out = dir.path().join("ab");
        let report = merge(&[a.clone(), b], &out, 1, &Shutdown::new()).unwrap();
        assert_eq!(read(&report.files[0]), live.concat());
        // When the merge reached 4..=6, only b had them: a's come later, as copies.
        assert_eq!(report.series[0].only, [0, 3]);
        assert_eq!(report.series[0].duplicates, 8);
        assert!(report.gaps.is_empty());

        let out = dir.path().join("ac");
        let report = merge(&[c, a], &out, 1, &Shutdown::new()).unwrap();
        assert_eq!(read(&report.files[0]), late.concat());
        assert_eq!(report.series[0].only, [0, 2]);
        let gaps: Vec<(u64, u64)> = report.gaps.iter().map(|g| (g.from, g.to)).collect();
        assert_eq!(gaps, [(5, 5)]);
        assert_eq!(report.series[0].missing_ids, 1);
        let gap = &report.gaps[0];
        assert_eq!(
            (gap.after_ns, gap.before_ns),
            (T0 + 3_000_000, T0 + 7_000_000)
        );
    }

    /// Where copies of a depth event disagree, the one that continues the merged chain is kept;
    /// of equal copies, the earliest received.
    #[test]
    fn the_unbroken_chain_and_the_earliest_receipt_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let name = "btcusdt_depth_20261130T000000Z.ndjson.gz";
        let a = write(
            &dir.path().join("a"),
            name,
            &[depth(10, 5, 2), depth(20, 10, 5), depth(30, 25, 9)],
        );
        let b = write(
            &dir.path().join("b"),
            name,
            &[depth(10, 5, 1), depth(30, 20, 8), depth(40, 30, 12)],
        );
        let out = dir.path().join("out");
        let report = merge(&[a, b], &out, 1, &Shutdown::new()).unwrap();
        let want = [
            depth(10, 5, 1),
            depth(20, 10, 5),
            depth(30, 20, 8),
            depth(40, 30, 12),
        ];
        assert_eq!(read(&report.files[0]), want.concat());
        let s = &report.series[0];
        assert_eq!((s.events, s.duplicates, s.gaps), (4, 2, 0));
        assert_eq!(s.only, [1, 1]);
    }

    #[test]
    fn open_gaps_split_around_the_ids_that_close_them() {
        let mut merger = SeriesMerge::new(
            &Symbol::new("BTCUSDT").unwrap(),
            FileKind::Stream(Kind::Trade),
            Vec::new(),
        );
        let open = Open {
            to: 10,
            after_ns: 1,
            before_ns: 2,
        };
        merger.open_gaps.insert(5, open);
        assert!(!merger.close_gap(4) && !merger.close_gap(11));
        assert!(merger.close_gap(7) && merger.close_gap(5) && merger.close_gap(10));
        assert!(!merger.close_gap(7));
        let left: Vec<(u64, u64)> = merger.open_gaps.iter().map(|(&f, o)| (f, o.to)).collect();
        assert_eq!(left, [(6, 6), (8, 9)]);
    }
}
