//! `obrec export` and `obrec import`: recordings to and from hftbacktest's raw feed files.
//!
//! # The hftbacktest raw format
//!
//! What the hftbacktest collector writes and `hftbacktest.data.utils.binancefutures.convert`
//! reads: gzip (any number of members), one symbol per file, conventionally
//! `<symbol>_<YYYYMMDD>.gz` split on the UTC day of receipt, and one message per line:
//!
//! ```text
//! <19 ASCII digits: receive time, ns since the epoch><one space><compact JSON>\n
//! 1723161255030314667 {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":…,"T":…,"s":"BTCUSDT","U":…,"u":…,"pu":…,"b":[…],"a":[…]}}
//! 1723161255319702566 {"lastUpdateId":5123107852948,"E":…,"T":…,"bids":[…],"asks":[…]}
//! ```
//!
//! Stream messages keep their combined-stream envelope; a REST depth snapshot is its raw body;
//! metadata must look like a stream message, `{"stream":"_meta","data":{"e":…}}`, because the
//! converter reads `data.e` of every enveloped line and treats every other line as a snapshot.
//!
//! # Export
//!
//! Each depth line becomes `<recv_ns> {"stream":<recorded stream>,"data":<payload>}` with the
//! payload byte-exact, each snapshot line `<recv_ns> <REST body>`; per symbol they are merged in
//! receive order (depth lines keep their file order; a snapshot goes before the first depth line
//! received after it, or at the same nanosecond). When a symbol's `conn` changes, and at the start
//! of a file whose first line did not come over connection 1, a
//! `{"stream":"_meta","data":{"e":"connection","conn":N}}` line marks it (the converter ignores
//! it; `import` reads it back).
//!
//! # Import
//!
//! Depth events become obrec depth lines (`conn` from the `_meta` lines, else 1;
//! `latency_pipeline_ms` 0.000, since the file does not say), snapshots become snapshot lines;
//! bookTicker, trade and every other stream are counted and left out: an obrec recording holds
//! depth and snapshots only. Importing and exporting again gives back the depth and snapshot lines
//! byte for byte.
//!
//! # Damage and refusal
//!
//! Output goes to `<name>.part` files that are linked into place only when the whole conversion
//! has run, and never over an existing file. An input from which not one line can be read, a
//! line that obrec cannot represent (a depth event without `pu`, several symbols in one
//! hftbacktest file) or an output name that is taken ends the run with [`Error::Invalid`] and
//! nothing written. An input damaged after its first good line (a truncated gzip tail, a cut or
//! corrupt line) is converted up to the damage, which [`Outcome::damaged`] reports.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::cli::{ExportArgs, ImportArgs, parse_symbol};
use crate::error::{Error, Result};
use crate::record::{
    DepthRecord, Frame, FrameError, civil_from_days, encode_line, encode_snapshot_line, parse_frame,
};
use crate::replay::{expand, is_partial, is_snapshot_file};
use crate::writer::{MemberEncoder, compact_utc};

/// Formats `export` writes and `import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// hftbacktest's raw feed files (`<19-digit ns> <json>` per line, gzip, one symbol per
    /// file), read by hftbacktest.data.utils.binancefutures.convert.
    Hftbacktest,
}

/// Uncompressed bytes per gzip member written (the recorder's own choice, for the same reasons).
const MEMBER_BYTES: usize = 1 << 20;
/// Longest line accepted from an input. A 1000-level snapshot is about 40 KB; anything near this
/// is not a recording, and reading it whole could exhaust memory.
const MAX_LINE: usize = 16 << 20;
/// The hftbacktest timestamp's width: ns since the epoch, zero-padded (dates up to 2286).
const NS_DIGITS: usize = 19;
/// The stream name of hftbacktest metadata lines.
const META_STREAM: &str = "_meta";
/// Distinct skipped stream names listed one by one; the rest are counted together.
const MAX_SKIP_KINDS: usize = 32;

/// What a conversion wrote, left out and could not read.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every file written, in name order.
    pub written: Vec<Written>,
    /// Lines left out on purpose, by stream name (`btcusdt@trade`, …) or kind of line.
    pub skipped: BTreeMap<String, u64>,
    /// Inputs read only up to damage: `<file>: <what> (after line N)`.
    pub damaged: Vec<String>,
    /// Things a user should know about the output (it is written nonetheless).
    pub warnings: Vec<String>,
}

/// One output file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    pub depth: u64,
    pub snapshots: u64,
    /// `_meta` lines (export only).
    pub meta: u64,
}

impl Written {
    pub fn lines(&self) -> u64 {
        self.depth + self.snapshots + self.meta
    }
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.path.display(),
            count(self.lines(), "line")
        )?;
        let parts: Vec<String> = [
            (self.depth, "depth"),
            (self.snapshots, "snapshot"),
            (self.meta, "meta"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.len() > 1 {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

impl Outcome {
    /// Total lines written.
    pub fn lines(&self) -> u64 {
        self.written.iter().map(Written::lines).sum()
    }

    fn skip(&mut self, kind: &str) {
        if let Some(n) = self.skipped.get_mut(kind) {
            *n += 1;
        } else if self.skipped.len() < MAX_SKIP_KINDS {
            self.skipped.insert(kind.to_string(), 1);
        } else {
            *self.skipped.entry("(other streams)".into()).or_default() += 1;
        }
    }

    /// Prints what was written on stdout, damage and warnings on stderr; true when every input was
    /// read whole.
    fn print(&self, verb: &str, started: Instant) -> bool {
        for w in &self.written {
            println!("{w}");
        }
        if !self.skipped.is_empty() {
            let list: Vec<String> = self
                .skipped
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect();
            println!("skipped: {}", list.join(", "));
        }
        println!(
            "{verb} {} to {} in {:.2} s",
            count(self.lines(), "line"),
            count(self.written.len() as u64, "file"),
            started.elapsed().as_secs_f64()
        );
        for w in &self.warnings {
            eprintln!("warning: {w}");
        }
        for d in &self.damaged {
            eprintln!("{d}");
        }
        self.damaged.is_empty()
    }
}

/// `obrec export`: returns whether every input was read whole.
pub fn run_export(args: &ExportArgs) -> Result<bool> {
    let started = Instant::now();
    let Format::Hftbacktest = args.format;
    let outcome = export(&args.paths, &args.output, args.gzip_level)?;
    Ok(outcome.print("exported", started))
}

/// `obrec import`: returns whether every input was read whole.
pub fn run_import(args: &ImportArgs) -> Result<bool> {
    let started = Instant::now();
    let Format::Hftbacktest = args.format;
    let outcome = import(&args.files, &args.output, args.gzip_level)?;
    Ok(outcome.print("imported", started))
}

// ---------------------------------------------------------------------------------------------
// Export

/// An obrec depth line, as far as the export needs it.
#[derive(Deserialize)]
struct DepthLine<'a> {
    symbol: &'a str,
    stream: &'a str,
    recv_ns: u64,
    conn: Option<u64>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// An obrec snapshot line.
#[derive(Deserialize)]
struct SnapshotLine<'a> {
    recv_ns: u64,
    symbol: &'a str,
    #[serde(rename = "lastUpdateId")]
    _last_update_id: u64,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// A recorded snapshot waiting for its place among the depth lines.
struct PendingSnapshot {
    recv_ns: u64,
    body: String,
}

/// A symbol's current output file.
struct DayFile {
    /// Days since the epoch (UTC) of the file's name.
    day: u64,
    out: OutId,
    /// The connection of the last depth line written to it (1 when none was).
    conn: u64,
}

/// Writes recordings (depth files and snapshot files) as hftbacktest raw files in `out_dir`, one
/// per symbol and UTC day of receipt: `<symbol>_<YYYYMMDD>.gz`.
///
/// # Errors
///
/// [`Error::Invalid`] for a path that does not exist or holds no recording, an input not one line
/// of which is an obrec line, or an output file that exists (nothing is written then);
/// [`Error::File`] when an output cannot be written.
pub fn export(paths: &[PathBuf], out_dir: &Path, gzip_level: u32) -> Result<Outcome> {
    let files = expand(paths)?;
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "no recordings in {}",
            show_paths(paths)
        )));
    }
    let mut ex = Exporter {
        staged: Staged::new(out_dir, gzip_level),
        current: HashMap::new(),
        snapshots: HashMap::new(),
        outcome: Outcome::default(),
        line: Vec::new(),
        depth_symbols: BTreeMap::new(),
        partial_streams: BTreeMap::new(),
    };
    for path in files.iter().filter(|p| is_snapshot_file(p)) {
        ex.load_snapshots(path)?;
    }
    let with_snapshots: HashSet<String> = ex.snapshots.keys().cloned().collect();
    for path in files.iter().filter(|p| !is_snapshot_file(p)) {
        ex.depth_file(path)?;
    }
    let mut symbols: Vec<String> = ex.snapshots.keys().cloned().collect();
    symbols.sort();
    for symbol in symbols {
        ex.snapshots_until(&symbol, u64::MAX)?;
    }
    let Exporter {
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
    outcome.written = staged.commit()?;
    Ok(outcome)
}

struct Exporter {
    staged: Staged,
    /// Per symbol, the file being written.
    current: HashMap<String, DayFile>,
    /// Per symbol, the snapshots not yet written, oldest first.
    snapshots: HashMap<String, VecDeque<PendingSnapshot>>,
    outcome: Outcome,
    /// Scratch for one output line.
    line: Vec<u8>,
    /// Symbols with depth lines, and how many of those came from diff streams.
    depth_symbols: BTreeMap<String, u64>,
    /// Partial-depth streams seen, with their event counts.
    partial_streams: BTreeMap<String, u64>,
}

impl Exporter {
    fn load_snapshots(&mut self, path: &Path) -> Result<()> {
        let mut lines = GzLines::open(path)?;
        let mut loaded: Vec<(String, PendingSnapshot)> = Vec::new();
        let mut bytes = Vec::new();
        while lines.next_line(&mut bytes, &mut self.outcome)? {
            let snap = match serde_json::from_slice::<SnapshotLine>(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    lines.bad_line(&not_obrec("snapshot", &bytes, &e), &mut self.outcome)?;
                    break;
                }
            };
            if let Err(what) = check_symbol(snap.symbol)
                .and_then(|()| check_object(snap.data))
                .and_then(|()| check_ns(snap.recv_ns))
            {
                lines.bad_line(&what, &mut self.outcome)?;
                break;
            }
            loaded.push((
                snap.symbol.to_string(),
                PendingSnapshot {
                    recv_ns: snap.recv_ns,
                    body: snap.data.get().to_string(),
                },
            ));
        }
        for (symbol, snap) in loaded {
            let queue = self.snapshots.entry(symbol).or_default();
            queue.push_back(snap);
            // Stable: snapshots received at the same instant keep their file order.
            queue.make_contiguous().sort_by_key(|s| s.recv_ns);
        }
        Ok(())
    }

    fn depth_file(&mut self, path: &Path) -> Result<()> {
        let mut lines = GzLines::open(path)?;
        let mut bytes = Vec::new();
        while lines.next_line(&mut bytes, &mut self.outcome)? {
            let line = match serde_json::from_slice::<DepthLine>(&bytes) {
                Ok(l) => l,
                Err(e) => {
                    lines.bad_line(&not_obrec("depth", &bytes, &e), &mut self.outcome)?;
                    break;
                }
            };
            if let Err(what) = check_symbol(line.symbol)
                .and_then(|()| check_object(line.data))
                .and_then(|()| check_ns(line.recv_ns))
                .and_then(|()| check_stream(line.stream))
            {
                lines.bad_line(&what, &mut self.outcome)?;
                break;
            }
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
        let conn = line.conn.unwrap_or(1);
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
        self.line.extend_from_slice(line.data.get().as_bytes());
        self.line.extend_from_slice(b"}\n");
        self.staged.push(out, &self.line, Line::Depth)
    }

    /// Writes the symbol's snapshots received at or before `recv_ns`.
    fn snapshots_until(&mut self, symbol: &str, recv_ns: u64) -> Result<()> {
        loop {
            let Some(queue) = self.snapshots.get_mut(symbol) else {
                return Ok(());
            };
            if queue.front().is_none_or(|s| s.recv_ns > recv_ns) {
                return Ok(());
            }
            let snap = queue.pop_front().expect("front exists");
            let out = self.target(symbol, snap.recv_ns)?;
            self.line.clear();
            push_ns(&mut self.line, snap.recv_ns);
            self.line.push(b' ');
            self.line.extend_from_slice(snap.body.as_bytes());
            self.line.push(b'\n');
            self.staged.push(out, &self.line, Line::Snapshot)?;
        }
    }

    /// The output for a line of `symbol` received at `recv_ns`: the current file, or a new one
    /// when the UTC day moved on. A line that arrives late across midnight stays in the newer
    /// file, as the hftbacktest collector's would.
    fn target(&mut self, symbol: &str, recv_ns: u64) -> Result<OutId> {
        let day = recv_ns / 86_400_000_000_000;
        match self.current.get(symbol) {
            Some(current) if current.day >= day => return Ok(current.out),
            Some(current) => self.staged.close(current.out)?,
            None => {}
        }
        let (y, m, d) = civil_from_days(day as i64);
        let name = format!("{}_{y:04}{m:02}{d:02}.gz", symbol.to_ascii_lowercase());
        let out = self.staged.create(&name)?;
        self.current
            .insert(symbol.to_string(), DayFile { day, out, conn: 1 });
        Ok(out)
    }
}

/// Why a line is not an obrec line, with a hint when it is an hftbacktest one.
fn not_obrec(kind: &str, bytes: &[u8], e: &serde_json::Error) -> String {
    if split_line(bytes).is_ok() {
        format!("not an obrec {kind} line but an hftbacktest one (obrec import reads those)")
    } else {
        format!("not an obrec {kind} line ({e})")
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

/// The symbol names files: only what `--symbol` accepts, already upper-case.
fn check_symbol(symbol: &str) -> std::result::Result<(), String> {
    match parse_symbol(symbol) {
        Ok(s) if s == symbol => Ok(()),
        _ => Err(format!("{symbol:?} is not a symbol")),
    }
}

/// Stream names are written between quotes as they are: no quote, backslash or control byte.
fn check_stream(stream: &str) -> std::result::Result<(), String> {
    let ok = !stream.is_empty()
        && stream
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(format!("{stream:?} is not a stream name"))
    }
}

fn check_object(data: &RawValue) -> std::result::Result<(), String> {
    if data.get().starts_with('{') {
        Ok(())
    } else {
        Err("data is not a JSON object".into())
    }
}

// ---------------------------------------------------------------------------------------------
// Import

/// An unenveloped line: a REST snapshot, an exchange error body, or something else.
#[derive(Deserialize)]
struct Unenveloped {
    #[serde(rename = "lastUpdateId")]
    last_update_id: Option<u64>,
    bids: Option<IgnoredAny>,
    asks: Option<IgnoredAny>,
    code: Option<IgnoredAny>,
}

/// A `_meta` line's payload.
#[derive(Deserialize)]
struct Meta<'a> {
    e: Option<&'a str>,
    conn: Option<u64>,
}

/// The event type of a payload that did not parse as a depth event.
#[derive(Deserialize)]
struct EventType<'a> {
    e: Option<&'a str>,
}

/// Converts hftbacktest raw files into obrec depth and snapshot files under
/// `<data_dir>/order_book/`, named like the recorder's after the first line's receipt second.
///
/// # Errors
///
/// [`Error::Invalid`] for a missing input, a directory, an input not one line of which is in the
/// hftbacktest format, a depth event obrec cannot represent (no `pu`: spot), several symbols in
/// one file, or an output file that exists (nothing is written then); [`Error::File`] when an
/// output cannot be written.
pub fn import(paths: &[PathBuf], data_dir: &Path, gzip_level: u32) -> Result<Outcome> {
    if let Some(dir) = paths.iter().find(|p| p.is_dir()) {
        return Err(Error::Invalid(format!(
            "{} is a directory: give hftbacktest files (or a glob pattern)",
            dir.display()
        )));
    }
    let files = expand(paths)?;
    let mut staged = Staged::new(&data_dir.join("order_book"), gzip_level);
    let mut outcome = Outcome::default();
    for path in &files {
        import_file(path, &mut staged, &mut outcome)?;
    }
    outcome.written = staged.commit()?;
    Ok(outcome)
}

/// What one input file has shown so far.
struct FileImport {
    /// The symbol of its depth events.
    symbol: Option<String>,
    /// A symbol named by a stream (`btcusdt@trade`), for a file without depth events.
    stream_symbol: Option<String>,
    depth_out: Option<OutId>,
    conn: u64,
    /// Snapshots in file order: receipt ns, `lastUpdateId`, body.
    snapshots: Vec<(u64, u64, String)>,
}

fn import_file(path: &Path, staged: &mut Staged, outcome: &mut Outcome) -> Result<()> {
    let mut lines = GzLines::open(path)?;
    let mut state = FileImport {
        symbol: None,
        stream_symbol: None,
        depth_out: None,
        conn: 1,
        snapshots: Vec::new(),
    };
    let mut encoded = Vec::new();
    let mut bytes = Vec::new();
    while lines.next_line(&mut bytes, outcome)? {
        let (recv_ns, json) = match split_line(&bytes) {
            Ok(parts) => parts,
            Err(what) => {
                lines.bad_line(&what, outcome)?;
                break;
            }
        };
        let invalid = |what: String| {
            Error::Invalid(format!(
                "{}: line {}: {what}",
                path.display(),
                lines.line_no
            ))
        };
        match parse_frame(json) {
            Ok(Frame::Depth(h)) => {
                if let Err(what) = check_symbol(h.symbol).and_then(|()| check_stream(h.stream)) {
                    return Err(invalid(what));
                }
                match &state.symbol {
                    Some(s) if s != h.symbol => {
                        return Err(invalid(format!(
                            "a {} event in a {s} file: an hftbacktest file holds one symbol",
                            h.symbol
                        )));
                    }
                    Some(_) => {}
                    None => state.symbol = Some(h.symbol.to_string()),
                }
                let out = match state.depth_out {
                    Some(out) => out,
                    None => {
                        let name = obrec_name(h.symbol, "depth", recv_ns);
                        *state.depth_out.insert(staged.create(&name)?)
                    }
                };
                let rec = DepthRecord {
                    symbol: 0,
                    conn: state.conn,
                    recv_ns,
                    recv_at: Instant::now(),
                    event_ms: h.event_ms,
                    trade_ms: h.trade_ms,
                    ids: h.ids,
                    frame: json.to_string().into(),
                    data: h.data.clone(),
                };
                encoded.clear();
                encode_line(&mut encoded, &rec, h.symbol, h.stream, 0);
                staged.push(out, &encoded, Line::Depth)?;
            }
            Ok(Frame::Other { stream }) if stream == META_STREAM => match parse_meta(json) {
                Some(conn) => state.conn = conn,
                None => outcome.skip(META_STREAM),
            },
            Ok(Frame::Other { stream }) => {
                if state.stream_symbol.is_none() {
                    state.stream_symbol = stream_symbol(stream);
                }
                outcome.skip(stream);
            }
            Ok(Frame::Reply) => outcome.skip("(replies)"),
            Err(FrameError::Shape) => match serde_json::from_str::<Unenveloped>(json) {
                Ok(Unenveloped {
                    last_update_id: Some(id),
                    bids: Some(_),
                    asks: Some(_),
                    ..
                }) => state
                    .snapshots
                    .push((recv_ns, id, json.trim_end().to_string())),
                Ok(Unenveloped { code: Some(_), .. }) => outcome.skip("(error bodies)"),
                _ => outcome.skip("(unrecognised)"),
            },
            Err(FrameError::Fields(e)) => {
                if is_depth_update(json) {
                    return Err(invalid(format!(
                        "a depthUpdate obrec cannot import ({e}): obrec records USD-M futures \
                         depth, whose events carry s, E, U, u and pu (spot has no pu)"
                    )));
                }
                outcome.skip(envelope_stream(json).as_deref().unwrap_or("(unrecognised)"));
            }
            Err(FrameError::Json(e)) => {
                lines.bad_line(&format!("not JSON: {e}"), outcome)?;
                break;
            }
        }
    }
    if state.depth_out.is_none() {
        outcome.warnings.push(format!(
            "{}: {}",
            path.display(),
            if lines.line_no == 0 {
                "empty"
            } else {
                "no depth events"
            }
        ));
    }
    if state.snapshots.is_empty() {
        return Ok(());
    }
    let Some(symbol) = state.symbol.or(state.stream_symbol) else {
        return Err(Error::Invalid(format!(
            "{}: snapshots, but no line names the symbol they belong to",
            path.display()
        )));
    };
    let out = staged.create(&obrec_name(&symbol, "snapshot", state.snapshots[0].0))?;
    for (recv_ns, id, body) in &state.snapshots {
        encoded.clear();
        encode_snapshot_line(&mut encoded, *recv_ns, &symbol, *id, body);
        staged.push(out, &encoded, Line::Snapshot)?;
    }
    Ok(())
}

/// `<19 digits> <json>` → (ns, json).
fn split_line(bytes: &[u8]) -> std::result::Result<(u64, &str), String> {
    let shape = || {
        let hint = if bytes.starts_with(b"{") {
            " (an obrec recording? obrec export writes hftbacktest files)"
        } else {
            ""
        };
        format!("not an hftbacktest line: <{NS_DIGITS}-digit ns> <json>{hint}")
    };
    if bytes.len() <= NS_DIGITS + 1
        || !bytes[..NS_DIGITS].iter().all(u8::is_ascii_digit)
        || bytes[NS_DIGITS] != b' '
    {
        return Err(shape());
    }
    let ns = std::str::from_utf8(&bytes[..NS_DIGITS])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| "the timestamp is out of range".to_string())?;
    let json =
        std::str::from_utf8(&bytes[NS_DIGITS + 1..]).map_err(|e| format!("not UTF-8: {e}"))?;
    Ok((ns, json))
}

/// The connection a `{"stream":"_meta","data":{"e":"connection","conn":N}}` line announces.
fn parse_meta(json: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        data: Meta<'a>,
    }
    let env: Envelope = serde_json::from_str(json).ok()?;
    match env.data {
        Meta {
            e: Some("connection"),
            conn: Some(conn),
        } if conn >= 1 => Some(conn),
        _ => None,
    }
}

fn is_depth_update(json: &str) -> bool {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        data: EventType<'a>,
    }
    serde_json::from_str::<Envelope>(json).is_ok_and(|env| env.data.e == Some("depthUpdate"))
}

fn envelope_stream(json: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Envelope {
        stream: String,
    }
    serde_json::from_str::<Envelope>(json)
        .ok()
        .map(|e| e.stream)
}

/// `btcusdt@trade` → `BTCUSDT`, when that is a symbol.
fn stream_symbol(stream: &str) -> Option<String> {
    let (sym, _) = stream.split_once('@')?;
    parse_symbol(sym).ok()
}

/// `<symbol>_<kind>_<YYYYMMDDTHHMMSSZ>.ndjson.gz`, as the recorder names its files.
fn obrec_name(symbol: &str, kind: &str, recv_ns: u64) -> String {
    format!(
        "{}_{kind}_{}.ndjson.gz",
        symbol.to_ascii_lowercase(),
        compact_utc(recv_ns / 1_000_000_000)
    )
}

// ---------------------------------------------------------------------------------------------
// Reading inputs

/// The lines of a gzip file (any number of members), up to the first damage.
struct GzLines {
    path: PathBuf,
    reader: BufReader<flate2::bufread::MultiGzDecoder<BufReader<Counting<File>>>>,
    /// The number of the line last read.
    line_no: u64,
}

impl GzLines {
    fn open(path: &Path) -> Result<GzLines> {
        let file = File::open(path).map_err(|e| Error::file(path, e))?;
        let counted = BufReader::new(Counting {
            inner: file,
            count: 0,
        });
        Ok(GzLines {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(
                1 << 18,
                flate2::bufread::MultiGzDecoder::new(counted),
            ),
            line_no: 0,
        })
    }

    /// Reads the next line into `buf`, without its line ending. False at the end of the data, or
    /// at damage (which goes to `outcome`); an error when the very first line cannot be read.
    fn next_line(&mut self, buf: &mut Vec<u8>, outcome: &mut Outcome) -> Result<bool> {
        buf.clear();
        match read_line(&mut self.reader, buf) {
            Ok(true) => {
                self.line_no += 1;
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => {
                self.line_no += 1;
                let at = self.reader.get_ref().get_ref().get_ref().count;
                let what = match e {
                    LineError::TooLong => format!("line longer than {} MiB", MAX_LINE >> 20),
                    LineError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        format!("truncated gzip data after compressed byte {at}")
                    }
                    LineError::Io(e) => {
                        format!("corrupt gzip data ({e}) after compressed byte {at}")
                    }
                };
                self.bad_line(&what, outcome)?;
                Ok(false)
            }
        }
    }

    /// Records damage at the line last read: refusal ([`Error::Invalid`]) when it is the first,
    /// else a note in `outcome` (the caller stops reading this file).
    fn bad_line(&self, what: &str, outcome: &mut Outcome) -> Result<()> {
        let file = self.path.display();
        let line = self.line_no;
        if line <= 1 {
            return Err(Error::Invalid(format!("{file}: line 1: {what}")));
        }
        outcome.damaged.push(format!(
            "{file}: line {line}: {what} (read up to line {})",
            line - 1
        ));
        Ok(())
    }
}

/// Why a line could not be read.
enum LineError {
    Io(io::Error),
    /// Longer than [`MAX_LINE`].
    TooLong,
}

/// Reads up to and including the next newline into `buf`; false at the end of the data. A line
/// longer than [`MAX_LINE`] is refused, so a hostile input cannot exhaust memory.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::result::Result<bool, LineError> {
    loop {
        let available = reader.fill_buf().map_err(LineError::Io)?;
        if available.is_empty() {
            return Ok(!buf.is_empty());
        }
        let (take, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if buf.len() > MAX_LINE {
            return Err(LineError::TooLong);
        }
        if done {
            return Ok(true);
        }
    }
}

/// Counts the compressed bytes read, to say where damage starts.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Writing outputs

type OutId = usize;

#[derive(Clone, Copy)]
enum Line {
    Depth,
    Snapshot,
    Meta,
}

/// Output files of one conversion. Each is written as `<name>.part` (created exclusively and
/// locked, so a recorder's crash recovery leaves it alone) and linked to its name by
/// [`Staged::commit`] without replacing anything; dropped uncommitted, every part file goes, and
/// so do the directories it created.
struct Staged {
    dir: PathBuf,
    encoder: MemberEncoder,
    member: Vec<u8>,
    files: Vec<StagedFile>,
    /// Directories this conversion created, outermost first.
    created_dirs: Vec<PathBuf>,
    committed: bool,
}

struct StagedFile {
    part: PathBuf,
    done: PathBuf,
    /// `None` once closed.
    file: Option<File>,
    pending: Vec<u8>,
    counts: Written,
}

impl Staged {
    fn new(dir: &Path, gzip_level: u32) -> Staged {
        Staged {
            dir: dir.to_path_buf(),
            encoder: MemberEncoder::new(gzip_level),
            member: Vec::new(),
            files: Vec::new(),
            created_dirs: Vec::new(),
            committed: false,
        }
    }

    /// Starts the output `name` in the directory.
    fn create(&mut self, name: &str) -> Result<OutId> {
        self.make_dir()?;
        let done = self.dir.join(name);
        let part = self.dir.join(format!("{name}.part"));
        if done.exists() || self.files.iter().any(|f| f.done == done) {
            return Err(taken(&done));
        }
        let file = match OpenOptions::new().write(true).create_new(true).open(&part) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::Invalid(format!(
                    "{} exists: another conversion is writing it, or one was interrupted \
                     (remove it)",
                    part.display()
                )));
            }
            Err(e) => return Err(Error::file(&part, e)),
        };
        // Registered before anything else can fail, so that the part file is removed.
        self.files.push(StagedFile {
            part: part.clone(),
            done: done.clone(),
            file: None,
            pending: Vec::new(),
            counts: Written {
                path: done,
                ..Written::default()
            },
        });
        file.try_lock()
            .map_err(|e| Error::file(&part, io::Error::other(e.to_string())))?;
        let id = self.files.len() - 1;
        self.files[id].file = Some(file);
        Ok(id)
    }

    fn make_dir(&mut self) -> Result<()> {
        if self.dir.is_dir() {
            return Ok(());
        }
        let mut missing: Vec<PathBuf> = self
            .dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        fs::create_dir_all(&self.dir).map_err(|e| Error::file(&self.dir, e))?;
        self.created_dirs = missing;
        Ok(())
    }

    /// Appends one line (with its newline).
    fn push(&mut self, id: OutId, line: &[u8], kind: Line) -> Result<()> {
        let f = &mut self.files[id];
        f.pending.extend_from_slice(line);
        match kind {
            Line::Depth => f.counts.depth += 1,
            Line::Snapshot => f.counts.snapshots += 1,
            Line::Meta => f.counts.meta += 1,
        }
        if f.pending.len() >= MEMBER_BYTES {
            self.flush(id)?;
        }
        Ok(())
    }

    /// Compresses the pending lines into one gzip member and writes it.
    fn flush(&mut self, id: OutId) -> Result<()> {
        let f = &mut self.files[id];
        let Some(file) = f.file.as_mut() else {
            return Ok(());
        };
        if f.pending.is_empty() {
            return Ok(());
        }
        self.member.clear();
        self.encoder.encode(&f.pending, &mut self.member);
        file.write_all(&self.member)
            .map_err(|e| Error::file(&f.part, e))?;
        f.pending.clear();
        Ok(())
    }

    /// Writes out the file and syncs it.
    fn close(&mut self, id: OutId) -> Result<()> {
        self.flush(id)?;
        let f = &mut self.files[id];
        if let Some(file) = f.file.take() {
            file.sync_all().map_err(|e| Error::file(&f.part, e))?;
        }
        Ok(())
    }

    /// Closes every file and gives each its name, refusing to replace an existing file (then
    /// nothing stays written). Returns the files in name order.
    fn commit(mut self) -> Result<Vec<Written>> {
        for id in 0..self.files.len() {
            self.close(id)?;
        }
        let mut linked: Vec<PathBuf> = Vec::new();
        let mut result = Ok(());
        for f in &self.files {
            if let Err(e) = place(&f.part, &f.done) {
                result = Err(e);
                break;
            }
            linked.push(f.done.clone());
        }
        if let Err(e) = result {
            for done in &linked {
                let _ = fs::remove_file(done);
            }
            return Err(e);
        }
        self.committed = true;
        for f in &self.files {
            let _ = fs::remove_file(&f.part);
        }
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        let mut written: Vec<Written> = self.files.iter().map(|f| f.counts.clone()).collect();
        written.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(written)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for f in &mut self.files {
            drop(f.file.take());
            let _ = fs::remove_file(&f.part);
        }
        for dir in self.created_dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Gives `part` the name `done` unless that name exists: a hard link fails rather than replace.
fn place(part: &Path, done: &Path) -> Result<()> {
    match fs::hard_link(part, done) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(taken(done)),
        // A filesystem without hard links: check, then rename (a narrow race, as good as it gets).
        Err(_) if done.exists() => Err(taken(done)),
        Err(_) => fs::rename(part, done).map_err(|e| Error::file(done, e)),
    }
}

fn taken(done: &Path) -> Error {
    Error::Invalid(format!(
        "{} exists: obrec never overwrites a file (remove it, or choose another -o)",
        done.display()
    ))
}

/// `1 line`, `2 lines`.
fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

fn show_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(" ")
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

    #[test]
    fn lines_split_at_the_nineteenth_digit() {
        assert_eq!(
            split_line(b"1723161255030314667 {\"a\":1}"),
            Ok((1_723_161_255_030_314_667, "{\"a\":1}"))
        );
        for bad in [
            &b""[..],
            b"1723161255030314667",
            b"1723161255030314667 ",
            b"1723161255030314 {\"a\":1}",
            b"172316125503031466x {}",
            b"1723161255030314667\t{}",
            b"17231612550303146670 {}",
            b"{\"stream\":\"x\",\"data\":{}}",
            b"1723161255030314667 \xff\xfe",
        ] {
            assert!(
                split_line(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn meta_lines_announce_connections_and_nothing_else() {
        assert_eq!(
            parse_meta(r#"{"stream":"_meta","data":{"e":"connection","conn":3}}"#),
            Some(3)
        );
        for other in [
            r#"{"stream":"_meta","data":{"e":"connection","conn":0}}"#,
            r#"{"stream":"_meta","data":{"e":"gap","conn":2}}"#,
            r#"{"stream":"_meta","data":{"e":"connection","conn":-1}}"#,
            r#"{"stream":"_meta","data":{"e":"connection"}}"#,
            r#"{"stream":"_meta","data":5}"#,
        ] {
            assert_eq!(parse_meta(other), None, "{other}");
        }
    }

    #[test]
    fn symbols_and_streams_that_would_escape_are_refused() {
        assert!(check_symbol("BTCUSDT").is_ok());
        for bad in ["btcusdt", "../x", "", "BTC USDT", "A"] {
            assert!(check_symbol(bad).is_err(), "{bad}");
        }
        assert!(check_stream("btcusdt@depth@0ms").is_ok());
        for bad in ["", "a\"b", "a\\b", "a b", "a\u{1}"] {
            assert!(check_stream(bad).is_err(), "{bad:?}");
        }
        assert_eq!(stream_symbol("btcusdt@trade").as_deref(), Some("BTCUSDT"));
        assert_eq!(stream_symbol("../x@trade"), None);
        assert_eq!(stream_symbol("_meta"), None);
    }

    #[test]
    fn names_follow_each_tool() {
        assert_eq!(
            obrec_name("BTCUSDT", "depth", 1_723_161_255_030_314_667),
            "btcusdt_depth_20240808T235415Z.ndjson.gz"
        );
    }

    #[test]
    fn long_lines_are_refused_not_buffered() {
        let long = vec![b'x'; MAX_LINE + 2];
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut &long[..], &mut buf),
            Err(LineError::TooLong)
        ));
        let mut buf = Vec::new();
        let mut two = &b"a\nb"[..];
        assert!(matches!(read_line(&mut two, &mut buf), Ok(true)));
        assert_eq!(buf, b"a\n");
        buf.clear();
        assert!(matches!(read_line(&mut two, &mut buf), Ok(true)));
        assert_eq!(buf, b"b");
        buf.clear();
        assert!(matches!(read_line(&mut two, &mut buf), Ok(false)));
    }
}
