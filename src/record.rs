//! The depth line: what the reader extracts from a frame, and how the writer encodes it.
//!
//! A frame is parsed only as far as the recorder needs (stream name, event type, `E`, `T`, `s`,
//! `U`, `u`, `pu`); the bid and ask arrays are skipped, and the `data` payload travels to the
//! file as the exact bytes received. The record owns the frame's buffer as it came off the socket,
//! so handing it to the writer copies nothing.

use std::ops::Range;
use std::time::Instant;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::sequence::Ids;

/// Index of a symbol in the run's symbol table (the writer's file and metrics slot).
pub type SymbolId = usize;

/// One depth event on its way from a reader to the writer.
#[derive(Debug)]
pub struct DepthRecord {
    pub symbol: SymbolId,
    /// The connection that delivered it (1, 2, … within a run).
    pub conn: u64,
    /// Wall clock at receipt, ns since the Unix epoch.
    pub recv_ns: u64,
    /// The same instant on the monotonic clock, for the pipeline latency.
    pub recv_at: Instant,
    /// `E`, event time in ms.
    pub event_ms: u64,
    /// `T`, transaction time in ms, when the event has one.
    pub trade_ms: Option<u64>,
    pub ids: Ids,
    /// The whole frame text as received.
    pub frame: tungstenite::Utf8Bytes,
    /// Where the `data` payload lies in `frame`.
    pub data: Range<usize>,
}

impl DepthRecord {
    pub fn data(&self) -> &str {
        &self.frame.as_str()[self.data.clone()]
    }
}

/// A REST depth snapshot (diff-depth mode), recorded byte-exact.
#[derive(Debug)]
pub struct SnapshotRecord {
    pub symbol: SymbolId,
    pub recv_ns: u64,
    pub last_update_id: u64,
    pub body: String,
}

/// What a reader hands the writer.
#[derive(Debug)]
pub enum Event {
    Depth(DepthRecord),
    Snapshot(SnapshotRecord),
}

/// A text frame, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Depth(DepthHeader<'a>),
    /// A reply to a control message (`{"result":…,"id":…}` or an error with an id).
    Reply,
    /// Well-formed, but not an event the recorder records (another event type).
    Other {
        stream: &'a str,
    },
}

/// The header fields of a `depthUpdate`, borrowed from the frame.
#[derive(Debug, PartialEq, Eq)]
pub struct DepthHeader<'a> {
    pub stream: &'a str,
    /// Where the `data` payload lies in the frame.
    pub data: Range<usize>,
    pub symbol: &'a str,
    pub event_ms: u64,
    pub trade_ms: Option<u64>,
    pub ids: Ids,
}

/// Why a frame could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame is not a JSON object: {0}")]
    Json(String),
    #[error("frame has neither stream/data nor an id")]
    Shape,
    #[error("depth event lacks a field: {0}")]
    Fields(String),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    stream: Option<&'a str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    /// Replies to control messages carry the request's id (`result` may be null).
    id: Option<IgnoredAny>,
}

/// The event fields, all optional so one pass both tells the event type and reads the header.
#[derive(Deserialize)]
#[allow(non_snake_case)]
struct EventFields<'a> {
    #[serde(borrow)]
    e: Option<&'a str>,
    #[serde(borrow)]
    s: Option<&'a str>,
    E: Option<u64>,
    T: Option<u64>,
    U: Option<u64>,
    u: Option<u64>,
    /// Real frames carry `-1` when there is no previous event.
    pu: Option<i64>,
}

/// Binance's combined-stream layout: exactly these two members, in this order.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Combined<'a> {
    #[serde(borrow)]
    stream: &'a str,
    #[serde(borrow)]
    data: EventFields<'a>,
}

/// Parses the parts of a combined-stream frame the recorder needs.
pub fn parse_frame(text: &str) -> Result<Frame<'_>, FrameError> {
    fast_path(text).map_or_else(|| general_path(text), Ok)
}

/// One pass over a frame in Binance's exact layout, `{"stream":"…","data":{…}}`: serde validates
/// the whole frame and reads the header fields, and since `data` is then the last member its raw
/// bytes run from after the prefix to the closing brace. `None` for anything else.
fn fast_path(text: &str) -> Option<Frame<'_>> {
    const PREFIX: &str = "{\"stream\":\"";
    const DATA_KEY: &str = "\",\"data\":";
    let rest = text.strip_prefix(PREFIX)?;
    let stream_len = memchr::memchr(b'"', rest.as_bytes())?;
    let data_start = PREFIX.len() + stream_len + DATA_KEY.len();
    if !text[PREFIX.len() + stream_len..].starts_with(DATA_KEY) {
        return None;
    }
    let env: Combined = serde_json::from_str(text).ok()?;
    let data_end = text.trim_end().len() - 1;
    let raw = text.get(data_start..data_end)?.trim();
    let f = env.data;
    if f.e != Some("depthUpdate") {
        return Some(Frame::Other { stream: env.stream });
    }
    depth_header(env.stream, offset_in(text, raw), f)
        .ok()
        .map(Frame::Depth)
}

fn depth_header<'a>(
    stream: &'a str,
    data: Range<usize>,
    f: EventFields<'a>,
) -> Result<DepthHeader<'a>, FrameError> {
    let missing = |name: &str| FrameError::Fields(format!("missing {name}"));
    Ok(DepthHeader {
        stream,
        data,
        symbol: f.s.ok_or_else(|| missing("s"))?,
        event_ms: f.E.ok_or_else(|| missing("E"))?,
        trade_ms: f.T,
        ids: Ids {
            first: f.U.ok_or_else(|| missing("U"))?,
            last: f.u.ok_or_else(|| missing("u"))?,
            prev: f
                .pu
                .map(|pu| u64::try_from(pu).unwrap_or(0))
                .ok_or_else(|| missing("pu"))?,
        },
    })
}

/// Any other layout: the envelope first, then the payload.
fn general_path(text: &str) -> Result<Frame<'_>, FrameError> {
    let env: Envelope = serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
    let (stream, data) = match (env.stream, env.data) {
        (Some(stream), Some(data)) => (stream, data),
        (None, None) if env.id.is_some() => return Ok(Frame::Reply),
        _ => return Err(FrameError::Shape),
    };
    let raw = data.get();
    let f: EventFields =
        serde_json::from_str(raw).map_err(|e| FrameError::Fields(e.to_string()))?;
    if f.e != Some("depthUpdate") {
        return Ok(Frame::Other { stream });
    }
    depth_header(stream, offset_in(text, raw), f).map(Frame::Depth)
}

/// The byte range of `part`, a slice borrowed from `whole`.
pub fn offset_in(whole: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// Appends one depth line (with its newline) to `out`.
///
/// Keys come in the seed's order first; every value is formatted without floating point so the
/// printed milliseconds are exact.
pub fn encode_line(
    out: &mut Vec<u8>,
    rec: &DepthRecord,
    symbol: &str,
    stream: &str,
    pipeline_ns: u64,
) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"{\"timestamp\":\"");
    push_iso_millis(out, rec.event_ms);
    out.extend_from_slice(b"\",\"symbol\":\"");
    out.extend_from_slice(symbol.as_bytes());
    out.extend_from_slice(b"\",\"ts_recv\":");
    push_millis(out, (rec.recv_ns / 1_000) as i64);
    out.extend_from_slice(b",\"E\":");
    out.extend_from_slice(num.format(rec.event_ms).as_bytes());
    out.extend_from_slice(b",\"T\":");
    match rec.trade_ms {
        Some(t) => out.extend_from_slice(num.format(t).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"U\":");
    out.extend_from_slice(num.format(rec.ids.first).as_bytes());
    out.extend_from_slice(b",\"u\":");
    out.extend_from_slice(num.format(rec.ids.last).as_bytes());
    out.extend_from_slice(b",\"pu\":");
    out.extend_from_slice(num.format(rec.ids.prev).as_bytes());
    out.extend_from_slice(b",\"latency_event_ms\":");
    push_millis(out, event_latency_us(rec));
    out.extend_from_slice(b",\"latency_pipeline_ms\":");
    push_millis(out, (pipeline_ns / 1_000) as i64);
    out.extend_from_slice(b",\"recv_ns\":");
    out.extend_from_slice(num.format(rec.recv_ns).as_bytes());
    out.extend_from_slice(b",\"conn\":");
    out.extend_from_slice(num.format(rec.conn).as_bytes());
    out.extend_from_slice(b",\"stream\":\"");
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    out.extend_from_slice(rec.data().as_bytes());
    out.extend_from_slice(b"}\n");
}

/// Appends one snapshot line (with its newline) to `out`:
/// `{"recv_ns":…,"symbol":"…","lastUpdateId":…,"data":{…REST body as received…}}`.
pub fn encode_snapshot_line(
    out: &mut Vec<u8>,
    recv_ns: u64,
    symbol: &str,
    last_update_id: u64,
    body: &str,
) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"{\"recv_ns\":");
    out.extend_from_slice(num.format(recv_ns).as_bytes());
    out.extend_from_slice(b",\"symbol\":\"");
    out.extend_from_slice(symbol.as_bytes());
    out.extend_from_slice(b"\",\"lastUpdateId\":");
    out.extend_from_slice(num.format(last_update_id).as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(b"}\n");
}

/// A recorded depth line, as replay reads it back: header fields and the raw payload, borrowed.
#[derive(Debug, PartialEq)]
pub struct Line<'a> {
    pub symbol: &'a str,
    pub stream: &'a str,
    /// The `data` payload exactly as recorded.
    pub data: &'a str,
    /// `E`.
    pub event_ms: u64,
    /// `T`, when the event has one.
    pub trade_ms: Option<u64>,
    pub ids: Ids,
    /// `latency_pipeline_ms` in µs, when the line has one.
    pub pipeline_us: Option<u64>,
    pub recv_ns: u64,
    pub conn: u64,
}

/// The fields of a line, for lines not in [`encode_line`]'s exact layout.
#[derive(Deserialize)]
#[allow(non_snake_case)]
struct LineFields<'a> {
    #[serde(borrow)]
    symbol: &'a str,
    #[serde(borrow)]
    stream: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
    E: u64,
    T: Option<u64>,
    U: u64,
    u: u64,
    pu: u64,
    latency_pipeline_ms: Option<f64>,
    recv_ns: u64,
    conn: u64,
}

/// Parses a depth line, with or without its newline.
///
/// Lines in the layout [`encode_line`] writes — every line obrec writes — are read by a scanner
/// that walks the keys in that order and never looks inside `data`, which is what makes replay
/// run at the speed of decompression: the payload was a parsed frame when it was written and the
/// gzip CRC vouches for its bytes since. Anything else (another key order, escapes, whitespace)
/// goes through a full JSON parse.
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, String> {
    if let Some(parsed) = scan_line(line) {
        return Ok(parsed);
    }
    let f: LineFields =
        serde_json::from_slice(line).map_err(|e| format!("not a depth line: {e}"))?;
    Ok(Line {
        symbol: f.symbol,
        stream: f.stream,
        data: f.data.get(),
        event_ms: f.E,
        trade_ms: f.T,
        ids: Ids {
            first: f.U,
            last: f.u,
            prev: f.pu,
        },
        pipeline_us: f
            .latency_pipeline_ms
            .filter(|ms| *ms >= 0.0)
            .map(|ms| (ms * 1e3).round() as u64),
        recv_ns: f.recv_ns,
        conn: f.conn,
    })
}

/// The fast path of [`parse_line`]; `None` when the line is not in the exact layout.
fn scan_line(line: &[u8]) -> Option<Line<'_>> {
    let mut c = Cursor {
        rest: line.strip_suffix(b"\n").unwrap_or(line),
    };
    c.tag(b"{\"timestamp\":\"")?;
    c.string()?;
    c.tag(b",\"symbol\":\"")?;
    let symbol = c.string()?;
    c.tag(b",\"ts_recv\":")?;
    c.millis()?;
    c.tag(b",\"E\":")?;
    let event_ms = c.integer()?;
    c.tag(b",\"T\":")?;
    let trade_ms = match c.tag(b"null") {
        Some(()) => None,
        None => Some(c.integer()?),
    };
    c.tag(b",\"U\":")?;
    let first = c.integer()?;
    c.tag(b",\"u\":")?;
    let last = c.integer()?;
    c.tag(b",\"pu\":")?;
    let prev = c.integer()?;
    c.tag(b",\"latency_event_ms\":")?;
    c.millis()?;
    c.tag(b",\"latency_pipeline_ms\":")?;
    let pipeline_us = c.millis()?;
    c.tag(b",\"recv_ns\":")?;
    let recv_ns = c.integer()?;
    c.tag(b",\"conn\":")?;
    let conn = c.integer()?;
    c.tag(b",\"stream\":\"")?;
    let stream = c.string()?;
    c.tag(b",\"data\":")?;
    // The payload is an object and the line closes right after it.
    let data = c.rest.strip_suffix(b"}")?;
    if !(data.starts_with(b"{") && data.ends_with(b"}")) {
        return None;
    }
    Some(Line {
        symbol,
        stream,
        data: std::str::from_utf8(data).ok()?,
        event_ms,
        trade_ms,
        ids: Ids { first, last, prev },
        pipeline_us: u64::try_from(pipeline_us).ok(),
        recv_ns,
        conn,
    })
}

/// A position in a line for [`scan_line`].
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn tag(&mut self, tag: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(tag)?;
        Some(())
    }

    /// The rest of a string whose opening quote is consumed, and its closing quote; `None` for
    /// a string with escapes, which the JSON parser decodes instead.
    fn string(&mut self) -> Option<&'a str> {
        let end = memchr::memchr(b'"', self.rest)?;
        let text = &self.rest[..end];
        if text.contains(&b'\\') {
            return None;
        }
        self.rest = &self.rest[end + 1..];
        std::str::from_utf8(text).ok()
    }

    /// An unsigned integer that fits in a u64.
    fn integer(&mut self) -> Option<u64> {
        let mut value: u64 = 0;
        let mut digits = 0;
        for &b in self.rest.iter().take_while(|b| b.is_ascii_digit()) {
            value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            digits += 1;
        }
        if digits == 0 {
            return None;
        }
        self.rest = &self.rest[digits..];
        Some(value)
    }

    /// Milliseconds with exactly three decimals, as [`push_millis`] writes them, in µs.
    fn millis(&mut self) -> Option<i64> {
        let negative = self.tag(b"-").is_some();
        let whole = self.integer()?;
        self.tag(b".")?;
        let [a, b, c, ..] = *self.rest else {
            return None;
        };
        if ![a, b, c].iter().all(u8::is_ascii_digit)
            || self.rest.get(3).is_some_and(u8::is_ascii_digit)
        {
            return None;
        }
        self.rest = &self.rest[3..];
        let frac = u64::from(a - b'0') * 100 + u64::from(b - b'0') * 10 + u64::from(c - b'0');
        let us = i64::try_from(whole.checked_mul(1_000)?.checked_add(frac)?).ok()?;
        Some(if negative { -us } else { us })
    }
}

/// Receipt minus event time in µs; negative when the local clock runs behind the exchange's.
pub fn event_latency_us(rec: &DepthRecord) -> i64 {
    (rec.recv_ns / 1_000) as i64 - (rec.event_ms as i64) * 1_000
}

/// Writes a µs quantity as milliseconds with exactly three decimals (`-0.250`, `79.000`).
fn push_millis(out: &mut Vec<u8>, us: i64) {
    if us < 0 {
        out.push(b'-');
    }
    let us = us.unsigned_abs();
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(num.format(us / 1_000).as_bytes());
    let frac = us % 1_000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// Writes ms since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn push_iso_millis(out: &mut Vec<u8>, ms: u64) {
    let secs = ms / 1_000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    let fields = [
        (month as u64, b'-'),
        (day as u64, b'T'),
        (sod / 3_600, b':'),
        (sod / 60 % 60, b':'),
        (sod % 60, b'.'),
    ];
    out.extend_from_slice(itoa::Buffer::new().format(year).as_bytes());
    out.push(b'-');
    for (value, sep) in fields {
        out.extend_from_slice(&[b'0' + (value / 10) as u8, b'0' + (value % 10) as u8, sep]);
    }
    let milli = ms % 1_000;
    out.extend_from_slice(&[
        b'0' + (milli / 100) as u8,
        b'0' + (milli / 10 % 10) as u8,
        b'0' + (milli % 10) as u8,
        b'Z',
    ]);
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Counts in 400-year eras starting on March 1st, so leap days fall at the end of a year.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: &str = r#"{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161256184,"T":1723161256177,"s":"BTCUSDT","U":5123107850310,"u":5123107853551,"pu":5123107850146,"b":[["61000.10","1.5"]],"a":[]}}"#;

    #[test]
    fn parses_header_and_locates_raw_data() {
        let Frame::Depth(h) = parse_frame(FRAME).unwrap() else {
            panic!("not depth")
        };
        assert_eq!(h.stream, "btcusdt@depth@0ms");
        assert_eq!(h.symbol, "BTCUSDT");
        assert_eq!(h.event_ms, 1723161256184);
        assert_eq!(h.trade_ms, Some(1723161256177));
        assert_eq!(
            h.ids,
            Ids {
                first: 5123107850310,
                last: 5123107853551,
                prev: 5123107850146
            }
        );
        assert!(FRAME[h.data.clone()].starts_with(r#"{"e":"depthUpdate""#));
        assert!(FRAME[h.data.clone()].ends_with(r#""a":[]}"#));
    }

    #[test]
    fn classifies_replies_other_events_and_garbage() {
        assert_eq!(parse_frame(r#"{"result":null,"id":1}"#), Ok(Frame::Reply));
        assert_eq!(
            parse_frame(r#"{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":1}}"#),
            Ok(Frame::Other {
                stream: "btcusdt@bookTicker"
            })
        );
        for bad in [
            "",
            "not json",
            "[1,2]",
            r#"{"stream":"x"}"#,
            r#"{"stream":"x","data":{"e":"depthUpdate","E":1}}"#,
            r#"{"stream":"x","data":{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"pu":"1"}}"#,
            &FRAME[..FRAME.len() - 1],
        ] {
            assert!(parse_frame(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn both_paths_agree_on_every_layout() {
        let layouts = [
            FRAME.to_string(),
            format!("{FRAME}  \n"),
            FRAME.replacen("}}", "} }", 1),
            // Members swapped, or an extra member: only the general path applies.
            FRAME
                .replacen(r#"{"stream":"btcusdt@depth@0ms","data":"#, r#"{"data":"#, 1)
                .replacen("}}", r#"},"stream":"btcusdt@depth@0ms"}"#, 1),
            FRAME.replacen("}}", r#"},"x":{}}"#, 1),
        ];
        for text in &layouts {
            let general = general_path(text).unwrap();
            assert_eq!(parse_frame(text).unwrap(), general, "{text}");
            let Frame::Depth(h) = general else { panic!() };
            assert!(text[h.data].ends_with(r#""a":[]}"#), "{text}");
        }
        assert!(fast_path(&layouts[3]).is_none());
        assert!(fast_path(&layouts[4]).is_none());
        assert!(fast_path(&layouts[1]).is_some());
    }

    #[test]
    fn a_missing_previous_event_is_pu_minus_one() {
        // A real COIN-M depth5 frame (crypto-crawler-rs sample).
        let frame = r#"{"stream":"x@depth5","data":{"e":"depthUpdate","E":1,"T":1,"s":"X","U":5,"u":9,"pu":-1,"b":[],"a":[]}}"#;
        let Ok(Frame::Depth(h)) = parse_frame(frame) else {
            panic!("rejected")
        };
        assert_eq!(h.ids.prev, 0);
    }

    #[test]
    fn iso_dates_match_known_instants() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_763_627_881_000, "2025-11-20T08:38:01.000Z"),
            (1_723_161_256_184, "2024-08-08T23:54:16.184Z"),
            (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
        ] {
            let mut out = Vec::new();
            push_iso_millis(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn millis_have_three_exact_decimals() {
        for (us, want) in [
            (0, "0.000"),
            (123, "0.123"),
            (79_000, "79.000"),
            (-250, "-0.250"),
            (-1_270_456, "-1270.456"),
        ] {
            let mut out = Vec::new();
            push_millis(&mut out, us);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn encoded_line_is_json_with_seed_keys_first_and_raw_data() {
        let Frame::Depth(h) = parse_frame(FRAME).unwrap() else {
            panic!()
        };
        let rec = DepthRecord {
            symbol: 0,
            conn: 1,
            recv_ns: 1_723_161_256_185_123_456,
            recv_at: Instant::now(),
            event_ms: h.event_ms,
            trade_ms: h.trade_ms,
            ids: h.ids,
            frame: FRAME.into(),
            data: h.data,
        };
        let mut out = Vec::new();
        encode_line(&mut out, &rec, "BTCUSDT", "btcusdt@depth@0ms", 11_000);
        let line = std::str::from_utf8(&out).unwrap();
        assert!(line.ends_with("}}\n"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let order = [
            "timestamp",
            "symbol",
            "ts_recv",
            "E",
            "T",
            "U",
            "u",
            "pu",
            "latency_event_ms",
            "latency_pipeline_ms",
            "recv_ns",
            "conn",
            "stream",
            "data",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{line}");
        assert_eq!(v["timestamp"], "2024-08-08T23:54:16.184Z");
        assert_eq!(v["latency_event_ms"].as_f64(), Some(1.123));
        assert_eq!(v["latency_pipeline_ms"].as_f64(), Some(0.011));
        assert_eq!(v["conn"], 1);
        assert!(line.contains(&format!(",\"data\":{}}}", &FRAME[rec.data.clone()])));
    }

    /// The scanner and the JSON parser read the same fields from a line the encoder wrote, and
    /// every variation the scanner does not know falls through to the parser, not to an error.
    #[test]
    fn line_scanner_agrees_with_the_json_parser() {
        let Frame::Depth(h) = parse_frame(FRAME).unwrap() else {
            panic!()
        };
        let mut out = Vec::new();
        for (recv_ns, trade_ms) in [
            (1_723_161_256_185_123_456, h.trade_ms),
            // Receipt before the event time: a negative latency; and no `T`.
            (1_723_161_256_100_000_000, None),
        ] {
            let rec = DepthRecord {
                symbol: 0,
                conn: 7,
                recv_ns,
                recv_at: Instant::now(),
                event_ms: h.event_ms,
                trade_ms,
                ids: h.ids,
                frame: FRAME.into(),
                data: h.data.clone(),
            };
            out.clear();
            encode_line(&mut out, &rec, "BTCUSDT", "btcusdt@depth@0ms", 1_234_567);
            let scanned = scan_line(&out).expect("the encoder's layout");
            let f: LineFields = serde_json::from_slice(&out).unwrap();
            assert_eq!(scanned, parse_line(&out).unwrap());
            assert_eq!(scanned.data, f.data.get());
            assert_eq!(scanned.data, &FRAME[h.data.clone()]);
            assert_eq!((scanned.symbol, scanned.stream), (f.symbol, f.stream));
            assert_eq!(scanned.event_ms, f.E);
            assert_eq!(scanned.trade_ms, trade_ms);
            assert_eq!(scanned.trade_ms, f.T);
            assert_eq!(scanned.ids, h.ids);
            assert_eq!(scanned.pipeline_us, Some(1_234));
            assert_eq!((scanned.recv_ns, scanned.conn), (recv_ns, 7));
        }
        let line = std::str::from_utf8(&out).unwrap().trim_end().to_string();
        let variants = [
            line.replace(",\"conn\":7", ",\"conn\": 7"),
            line.replace(".184Z\"", ".184\\u005a\""),
            line.replace(
                "\"latency_pipeline_ms\":1.234",
                "\"latency_pipeline_ms\":1.2345",
            ),
            line.replace(
                "\"latency_pipeline_ms\":1.234",
                "\"latency_pipeline_ms\":null",
            ),
        ];
        for variant in &variants {
            assert_ne!(variant, &line);
            assert!(scan_line(variant.as_bytes()).is_none(), "{variant}");
            let parsed = parse_line(variant.as_bytes()).unwrap();
            assert_eq!(parsed.symbol, "BTCUSDT");
            assert_eq!(parsed.ids, h.ids);
        }
        for bad in [&line[..line.len() - 1], "", "{}", "not json"] {
            assert!(parse_line(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
