//! obrec recordings from hftbacktest raw files: depth events become depth lines, events of the
//! streams beside the book lines of their kind's series, REST snapshots snapshot lines; every
//! other stream is counted and left out.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::files::{GzLines, Line, OutId, Staged};
use super::{Conns, META_STREAM, NS_DIGITS, Outcome, check_stream, check_symbol};
use crate::error::{Error, Result};
use crate::market::frame::{Frame, FrameError, parse_frame};
use crate::market::kind::Route;
use crate::market::symbol::Symbol;
use crate::offline::progress::{file_done, progress_bar};
use crate::store::line::{
    DepthLine, KindLine, SnapshotLine, encode_depth, encode_kind, encode_snapshot,
};
use crate::store::lines::LineCursor;
use crate::store::names::{self, FileKind, book_dir, expand};
use crate::util::shutdown::Shutdown;

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
    /// Absent for `/public`, the route of depth, so files exported before streams beside the book
    /// read as they did.
    route: Option<&'a str>,
}

/// The event type of a payload that did not parse as a depth event.
#[derive(Deserialize)]
struct EventType<'a> {
    e: Option<&'a str>,
}

/// Converts hftbacktest raw files into obrec recordings under `<data_dir>/order_book/` (depth,
/// snapshot and one series per stream kind beside the book), named like the recorder's after the
/// first line's receipt second.
/// When `shutdown` is triggered, stops and writes nothing ([`Outcome::interrupted`]).
///
/// # Errors
///
/// [`Error::Invalid`] for a missing input, a directory, an input not one line of which is in the
/// hftbacktest format, a depth event obrec cannot represent (without `s`, `E`, `U` or `u`),
/// several symbols in one file, or an output file that exists (nothing is written then); [`Error::File`] when an
/// output cannot be written.
pub fn import(
    paths: &[PathBuf],
    data_dir: &Path,
    gzip_level: u32,
    shutdown: &Shutdown,
) -> Result<Outcome> {
    if let Some(dir) = paths.iter().find(|p| p.is_dir()) {
        return Err(Error::Invalid(format!(
            "{} is a directory: give hftbacktest files (or a glob pattern)",
            dir.display()
        )));
    }
    let files = expand(paths)?;
    let mut staged = Staged::new(&book_dir(data_dir), gzip_level);
    let mut outcome = Outcome::default();
    let progress = progress_bar(&files);
    for path in &files {
        import_file(path, &mut staged, &mut outcome, shutdown)?;
        file_done(progress.as_ref(), path);
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    if shutdown.is_triggered() {
        // Dropped uncommitted: every part file goes.
        outcome.interrupted = true;
        return Ok(outcome);
    }
    outcome.written = staged.commit()?;
    Ok(outcome)
}

/// What one input file has shown so far.
struct FileImport {
    /// The symbol of its events.
    symbol: Option<Symbol>,
    /// A symbol named by a stream obrec does not record (`btcusdt@kline_1m`), for a file with
    /// snapshots but no events.
    stream_symbol: Option<Symbol>,
    /// The series written so far, with their outputs.
    outs: Vec<(FileKind, OutId)>,
    /// The connections the latest `_meta` lines announced.
    conns: Conns,
    /// Snapshots in file order: receipt ns, `lastUpdateId` and line number. Written at the end,
    /// when the symbol they belong to is known, with their bodies read again from the file: a
    /// body is tens of KB, and a file may hold any number.
    snapshots: Vec<(u64, u64, u64)>,
    /// Scratch for one output line.
    encoded: Vec<u8>,
    /// The last depth event's `u`: spot's partial book names no predecessor, its line's `pu` is
    /// this, as the recorder writes it.
    last_depth_u: Option<u64>,
}

/// Why a line stops the import of its file.
enum Stop {
    /// The file holds what obrec cannot represent: the run is refused.
    Refuse(String),
    /// The line is unreadable: the file is imported up to it.
    Damage(String),
    /// An output could not be written.
    Fail(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Fail(e)
    }
}

fn import_file(
    path: &Path,
    staged: &mut Staged,
    outcome: &mut Outcome,
    shutdown: &Shutdown,
) -> Result<()> {
    let mut lines = GzLines::open(path, shutdown)?;
    let mut state = FileImport {
        symbol: None,
        stream_symbol: None,
        outs: Vec::new(),
        conns: Conns::new(),
        snapshots: Vec::new(),
        encoded: Vec::new(),
        last_depth_u: None,
    };
    let mut bytes = Vec::new();
    while lines.next_line(&mut bytes, outcome)? {
        let result = split_line(&bytes)
            .map_err(Stop::Damage)
            .and_then(|(recv_ns, json)| state.line(recv_ns, json, lines.line_no, staged, outcome));
        match result {
            Ok(()) => {}
            Err(Stop::Damage(what)) => {
                lines.bad_line(&what, outcome)?;
                break;
            }
            Err(Stop::Refuse(what)) => {
                return Err(Error::Invalid(format!(
                    "{}: line {}: {what}",
                    path.display(),
                    lines.line_no
                )));
            }
            Err(Stop::Fail(e)) => return Err(e),
        }
    }
    if state.outs.is_empty() {
        let what = if lines.line_no == 0 {
            "empty"
        } else {
            "no events obrec records"
        };
        outcome.warnings.push(format!("{}: {what}", path.display()));
    }
    state.write_snapshots(path, staged)
}

impl FileImport {
    /// Imports line `line_no`, `<recv_ns> <json>`.
    fn line(
        &mut self,
        recv_ns: u64,
        json: &str,
        line_no: u64,
        staged: &mut Staged,
        outcome: &mut Outcome,
    ) -> std::result::Result<(), Stop> {
        match parse_frame(json) {
            Ok(Frame::Depth(h)) => {
                let out = self.out(&h.symbol, &h.stream, FileKind::Depth, recv_ns, staged)?;
                let ids = h.continuity.chained(h.ids, self.last_depth_u);
                self.last_depth_u = Some(ids.last);
                let line = DepthLine {
                    symbol: &h.symbol,
                    stream: &h.stream,
                    data: &json[h.data.clone()],
                    event_ms: h.event_ms_or_receipt(recv_ns),
                    trade_ms: h.trade_ms,
                    ids,
                    // The pipeline latency is not in the file: 0.
                    pipeline_us: Some(0),
                    recv_ns,
                    conn: self.conns.get(Route::Public),
                };
                self.encoded.clear();
                encode_depth(&mut self.encoded, &line);
                staged.push(out, &self.encoded, Line::Depth)?;
            }
            Ok(Frame::Kind(h)) => {
                let file_kind = FileKind::Stream(h.kind);
                let out = self.out(&h.symbol, &h.stream, file_kind, recv_ns, staged)?;
                let line = KindLine {
                    symbol: &h.symbol,
                    stream: &h.stream,
                    data: &json[h.data.clone()],
                    event_ms: h.event_ms_or_receipt(recv_ns),
                    ids: h.ids,
                    // As for depth: not in the file.
                    pipeline_us: Some(0),
                    recv_ns,
                    conn: self.conns.get(h.kind.route()),
                    backfill: false,
                };
                self.encoded.clear();
                encode_kind(&mut self.encoded, &line);
                staged.push(out, &self.encoded, Line::Kind(h.kind))?;
            }
            Ok(Frame::Other { stream }) if stream == META_STREAM => match parse_meta(json) {
                Some((route, conn)) => {
                    self.conns.set(route, conn);
                }
                None => outcome.skip(META_STREAM),
            },
            Ok(Frame::Other { stream }) => {
                if self.stream_symbol.is_none() {
                    self.stream_symbol = stream_symbol(&stream);
                }
                outcome.skip(&stream);
            }
            Ok(Frame::ServerShutdown(_)) => outcome.skip("(serverShutdown)"),
            Ok(Frame::Reply) => outcome.skip("(replies)"),
            Err(FrameError::Shape) => match serde_json::from_str::<Unenveloped>(json) {
                Ok(Unenveloped {
                    last_update_id: Some(id),
                    bids: Some(_),
                    asks: Some(_),
                    ..
                }) => self.snapshots.push((recv_ns, id, line_no)),
                Ok(Unenveloped { code: Some(_), .. }) => outcome.skip("(error bodies)"),
                _ => outcome.skip("(unrecognised)"),
            },
            Err(FrameError::Fields(e)) if is_depth_update(json) => {
                return Err(Stop::Refuse(format!(
                    "a depthUpdate obrec cannot import ({e}): obrec records depth events \
                     that carry s, E, U and u (and pu on futures)"
                )));
            }
            Err(FrameError::Fields(_)) => {
                outcome.skip(envelope_stream(json).as_deref().unwrap_or("(unrecognised)"));
            }
            Err(FrameError::Json(e)) => return Err(Stop::Damage(format!("not JSON: {e}"))),
            // An event the exchange could not have sent: the file is not what it claims to be.
            Err(e @ (FrameError::Symbol { .. } | FrameError::Range(_))) => {
                return Err(Stop::Refuse(e.to_string()));
            }
        }
        Ok(())
    }

    /// The output of an event of `symbol` on `stream` for the series `kind`, created at its first
    /// line. Refused when the names would escape their quotes or the file, or when the file
    /// changes symbol: obrec's series, like the collector's files, hold one symbol.
    fn out(
        &mut self,
        symbol: &str,
        stream: &str,
        kind: FileKind,
        recv_ns: u64,
        staged: &mut Staged,
    ) -> std::result::Result<OutId, Stop> {
        let checked = check_symbol(symbol)
            .and_then(|checked| check_stream(stream).map(|()| checked))
            .map_err(Stop::Refuse)?;
        match &self.symbol {
            Some(s) if *s != checked => {
                return Err(Stop::Refuse(format!(
                    "a {symbol} event in a {s} file: an hftbacktest file holds one symbol"
                )));
            }
            Some(_) => {}
            None => self.symbol = Some(checked.clone()),
        }
        if let Some(&(_, out)) = self.outs.iter().find(|(k, _)| *k == kind) {
            return Ok(out);
        }
        let out = staged.create(&obrec_name(&checked, kind, recv_ns))?;
        self.outs.push((kind, out));
        Ok(out)
    }

    /// Writes the file's snapshots, for the symbol its lines named.
    fn write_snapshots(mut self, path: &Path, staged: &mut Staged) -> Result<()> {
        let Some(&(first_ns, _, _)) = self.snapshots.first() else {
            return Ok(());
        };
        let Some(symbol) = self.symbol.or(self.stream_symbol) else {
            return Err(Error::Invalid(format!(
                "{}: snapshots, but no line names the symbol they belong to",
                path.display()
            )));
        };
        let out = staged.create(&obrec_name(&symbol, FileKind::Snapshot, first_ns))?;
        let (mut cursor, mut read) = (LineCursor::new(), Vec::new());
        for &(recv_ns, id, line_no) in &self.snapshots {
            let changed = |what: String| {
                Error::Invalid(format!(
                    "{}: line {line_no}: {what} (the file changed during the import)",
                    path.display()
                ))
            };
            cursor.read(path, line_no, &mut read).map_err(changed)?;
            let (_, json) = split_line(&read).map_err(changed)?;
            let line = SnapshotLine {
                recv_ns,
                symbol: symbol.as_str(),
                last_update_id: id,
                data: json.trim_end(),
            };
            self.encoded.clear();
            encode_snapshot(&mut self.encoded, &line);
            staged.push(out, &self.encoded, Line::Snapshot)?;
        }
        Ok(())
    }
}

/// `<19 digits> <json>` → (ns, json).
pub(super) fn split_line(bytes: &[u8]) -> std::result::Result<(u64, &str), String> {
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

/// The route and connection a `{"stream":"_meta","data":{"e":"connection","conn":N}}` line
/// announces (`"route":"market"` in `data` for the `/market` connection).
fn parse_meta(json: &str) -> Option<(Route, u64)> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        data: Meta<'a>,
    }
    let env: Envelope = serde_json::from_str(json).ok()?;
    let Meta {
        e: Some("connection"),
        conn: Some(conn @ 1..),
        route,
    } = env.data
    else {
        return None;
    };
    let route = match route {
        None => Route::Public,
        Some(path) => Route::ALL.into_iter().find(|r| r.path() == path)?,
    };
    Some((route, conn))
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
fn stream_symbol(stream: &str) -> Option<Symbol> {
    let (sym, _) = stream.split_once('@')?;
    Symbol::new(sym).ok()
}

/// The name the recorder would give the file, after its first line's receipt second.
fn obrec_name(symbol: &Symbol, kind: FileKind, recv_ns: u64) -> String {
    names::file_name(&names::series(symbol, kind), recv_ns / 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Some((Route::Public, 3))
        );
        assert_eq!(
            parse_meta(r#"{"stream":"_meta","data":{"e":"connection","conn":4,"route":"market"}}"#),
            Some((Route::Market, 4))
        );
        assert_eq!(
            parse_meta(r#"{"stream":"_meta","data":{"e":"connection","conn":5,"route":"public"}}"#),
            Some((Route::Public, 5))
        );
        for other in [
            r#"{"stream":"_meta","data":{"e":"connection","conn":2,"route":"spot"}}"#,
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
    fn symbols_come_from_streams_only_when_they_are_symbols() {
        assert_eq!(
            stream_symbol("btcusdt@trade").as_ref().map(Symbol::as_str),
            Some("BTCUSDT")
        );
        assert_eq!(stream_symbol("../x@trade"), None);
        assert_eq!(stream_symbol("_meta"), None);
    }

    #[test]
    fn names_follow_each_tool() {
        assert_eq!(
            obrec_name(
                &Symbol::new("BTCUSDT").unwrap(),
                FileKind::Depth,
                1_723_161_255_030_314_667
            ),
            "btcusdt_depth_20240808T235415Z.ndjson.gz"
        );
    }
}
