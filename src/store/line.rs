//! The on-disk line layouts: how a record becomes one line of NDJSON, and how a line is read
//! back. Every writer (the recorder, `import`, salvage) and every reader (`replay`, `serve`,
//! `export`) goes through here, so the layout is written down once.
//!
//! A depth line:
//!
//! ```text
//! {"timestamp":"…","symbol":"ETHUSDT","ts_recv":…,"E":…,"T":…,"U":…,"u":…,"pu":…,
//!  "latency_event_ms":…,"latency_pipeline_ms":…,"recv_ns":…,"conn":…,"stream":"…","data":{…}}
//! ```
//!
//! The seed's keys come first; `data` is the exchange payload byte for byte and comes last, so a
//! reader can find it without parsing it. On spot, whose depth events carry neither `T` nor `pu`,
//! `T` is `null` and `pu` is `U - 1`: spot ids are dense, so that is the `u` the event must
//! follow, and the one chain check proves `U == last u + 1`; the payload shows which market a
//! line is from (a spot `depthUpdate` has no `pu`). Spot's partial book
//! (`{"lastUpdateId":…,"bids":…,"asks":…}`) has no `E`, `T`, `s` or `pu` and one id: its line's
//! `symbol` is its stream's, `E` (and `timestamp`) the receipt time in ms, `T` `null`,
//! `U` = `u` = `lastUpdateId`, and `pu` the previous line's `u` of the symbol (0 for the first):
//! so the one chain check proves the ids strictly increase. Spot's bookTicker has no `E`: its
//! line's `E` (and `timestamp`) is the receipt time in ms. A snapshot line is
//! `{"recv_ns":…,"symbol":"…","lastUpdateId":…,"data":{…REST body as received…}}`.
//!
//! One record, one line: a payload or body holding line breaks (`\n`, `\r`; legal JSON whitespace,
//! which can never stand inside a JSON string) would split its record over several lines, so each
//! such byte is written as a space and the line says so with `"data_respaced":true` just before
//! `data`. The JSON value is unchanged; only its whitespace differs from what was received.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::market::kind::KindIds;
use crate::market::sequence::Ids;
use crate::util::clock::{latency_us, push_iso_millis};

/// One depth event as a line holds it, borrowed: what [`encode_depth`] writes and
/// [`parse_depth`] reads back.
#[derive(Debug, PartialEq)]
pub struct DepthLine<'a> {
    /// Upper case, as payloads spell it.
    pub symbol: &'a str,
    /// The combined-stream name it arrived on.
    pub stream: &'a str,
    /// The `data` payload exactly as received.
    pub data: &'a str,
    /// `E`, event time in ms.
    pub event_ms: u64,
    /// `T`, transaction time in ms, when the event has one.
    pub trade_ms: Option<u64>,
    pub ids: Ids,
    /// `latency_pipeline_ms` in µs: receipt to the compressor; `None` where nobody measured it.
    pub pipeline_us: Option<u64>,
    /// Wall clock at receipt, ns since the Unix epoch.
    pub recv_ns: u64,
    /// The connection that delivered it (numbers rise across the runs into one data dir): a change
    /// marks a reconnect.
    pub conn: u64,
}

impl DepthLine<'_> {
    /// Receipt minus event time in µs; negative when the local clock runs behind the exchange's.
    pub fn event_latency_us(&self) -> i64 {
        latency_us(self.recv_ns, self.event_ms)
    }
}

/// Appends one depth line (with its newline) to `out`.
///
/// Every value is formatted without floating point so the printed milliseconds are exact.
pub fn encode_depth(out: &mut Vec<u8>, line: &DepthLine) {
    let mut num = itoa::Buffer::new();
    push_head(out, line.symbol, line.recv_ns, line.event_ms);
    out.extend_from_slice(b",\"T\":");
    match line.trade_ms {
        Some(t) => out.extend_from_slice(num.format(t).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    push_id(out, "U", line.ids.first);
    push_id(out, "u", line.ids.last);
    push_id(out, "pu", line.ids.prev);
    push_tail(
        out,
        line.event_latency_us(),
        line.pipeline_us,
        line.recv_ns,
        line.conn,
    );
    push_stream_and_data(out, line.stream, false, line.data);
}

/// The keys every event line starts with: `timestamp`, `symbol`, `ts_recv`, `E`.
fn push_head(out: &mut Vec<u8>, symbol: &str, recv_ns: u64, event_ms: u64) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    push_iso_millis(out, event_ms);
    out.extend_from_slice(b"\",\"symbol\":\"");
    out.extend_from_slice(symbol.as_bytes());
    out.extend_from_slice(b"\",\"ts_recv\":");
    push_millis(out, (recv_ns / 1_000) as i64);
    push_id(out, "E", event_ms);
}

/// `,"<key>":<id>`.
fn push_id(out: &mut Vec<u8>, key: &str, id: u64) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
}

/// The keys after an event line's ids: latencies, receipt, connection.
fn push_tail(out: &mut Vec<u8>, event_us: i64, pipeline_us: Option<u64>, recv_ns: u64, conn: u64) {
    out.extend_from_slice(b",\"latency_event_ms\":");
    push_millis(out, event_us);
    out.extend_from_slice(b",\"latency_pipeline_ms\":");
    match pipeline_us {
        Some(us) => push_millis(out, i64::try_from(us).unwrap_or(i64::MAX)),
        None => out.extend_from_slice(b"null"),
    }
    push_id(out, "recv_ns", recv_ns);
    push_id(out, "conn", conn);
}

/// `,"stream":"…"`, the backfill mark, `data` and the line's end.
fn push_stream_and_data(out: &mut Vec<u8>, stream: &str, backfill: bool, data: &str) {
    out.extend_from_slice(b",\"stream\":\"");
    out.extend_from_slice(stream.as_bytes());
    out.push(b'"');
    if backfill {
        out.extend_from_slice(b",\"backfill\":true");
    }
    push_data(out, data);
    out.extend_from_slice(b"}\n");
}

/// Appends `,"data":<data>`, keeping it on one line (see the module docs).
fn push_data(out: &mut Vec<u8>, data: &str) {
    let data = data.as_bytes();
    if memchr::memchr2(b'\n', b'\r', data).is_none() {
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data);
        return;
    }
    out.extend_from_slice(b",\"data_respaced\":true,\"data\":");
    out.extend(data.iter().map(|&b| match b {
        b'\n' | b'\r' => b' ',
        b => b,
    }));
}

/// The fields of a line, for lines not in [`encode_depth`]'s exact layout.
#[derive(Deserialize)]
#[allow(non_snake_case)]
struct DepthFields<'a> {
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
/// Lines in the layout [`encode_depth`] writes — every line obrec writes — are read by a scanner
/// that walks the keys in that order and never looks inside `data`, which is what makes replay
/// run at the speed of decompression: the payload was a parsed frame when it was written and the
/// gzip CRC vouches for its bytes since. Anything else (another key order, escapes, whitespace)
/// goes through a full JSON parse.
pub fn parse_depth(line: &[u8]) -> Result<DepthLine<'_>, String> {
    if let Some(parsed) = scan_depth(line) {
        return Ok(parsed);
    }
    let f: DepthFields =
        serde_json::from_slice(line).map_err(|e| format!("not a depth line: {e}"))?;
    Ok(DepthLine {
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
        pipeline_us: pipeline_us(f.latency_pipeline_ms),
        recv_ns: f.recv_ns,
        conn: f.conn,
    })
}

/// The fast path of [`parse_depth`]; `None` when the line is not in the exact layout.
fn scan_depth(line: &[u8]) -> Option<DepthLine<'_>> {
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
    Some(DepthLine {
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

/// A position in a line for [`scan_depth`].
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

/// One event of a stream beside the book as a line holds it, borrowed: what [`encode_kind`]
/// writes and [`parse_kind`] reads back.
///
/// ```text
/// {"timestamp":"…","symbol":"BTCUSDT","ts_recv":…,"E":…,"t":…,
///  "latency_event_ms":…,"latency_pipeline_ms":…,"recv_ns":…,"conn":…,"stream":"…","data":{…}}
/// ```
///
/// The ids are the kind's (`t`; `a`, `f`, `l`; `u`; none for mark price and liquidations). A
/// line fetched over REST to close a gap says `"backfill":true` before `data`, which then holds
/// the REST item as received, and has `conn` 0.
#[derive(Debug, PartialEq)]
pub struct KindLine<'a> {
    /// Upper case, as payloads spell it.
    pub symbol: &'a str,
    /// The combined-stream name it arrived on (or, backfilled, would have).
    pub stream: &'a str,
    /// The payload exactly as received.
    pub data: &'a str,
    /// `E`, event time in ms (a backfilled trade's `T`).
    pub event_ms: u64,
    pub ids: KindIds,
    /// `latency_pipeline_ms` in µs; `None` where nobody measured it.
    pub pipeline_us: Option<u64>,
    /// Wall clock at receipt, ns since the Unix epoch.
    pub recv_ns: u64,
    /// The connection that delivered it; 0 for a backfilled line.
    pub conn: u64,
    /// Fetched over REST after the stream lost it.
    pub backfill: bool,
}

/// Appends one line of a stream beside the book (with its newline) to `out`.
pub fn encode_kind(out: &mut Vec<u8>, line: &KindLine) {
    push_head(out, line.symbol, line.recv_ns, line.event_ms);
    match line.ids {
        KindIds::Trade { t } => push_id(out, "t", t),
        KindIds::AggTrade { a, f, l } => {
            push_id(out, "a", a);
            push_id(out, "f", f);
            push_id(out, "l", l);
        }
        KindIds::BookTicker { u } => push_id(out, "u", u),
        KindIds::None => {}
    }
    let event_us = latency_us(line.recv_ns, line.event_ms);
    push_tail(out, event_us, line.pipeline_us, line.recv_ns, line.conn);
    push_stream_and_data(out, line.stream, line.backfill, line.data);
}

/// The fields of a line of a stream beside the book.
#[derive(Deserialize)]
#[allow(non_snake_case)]
struct KindFields<'a> {
    #[serde(borrow)]
    symbol: &'a str,
    #[serde(borrow)]
    stream: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
    E: u64,
    t: Option<u64>,
    a: Option<u64>,
    f: Option<u64>,
    l: Option<u64>,
    u: Option<u64>,
    latency_pipeline_ms: Option<f64>,
    recv_ns: u64,
    conn: u64,
    #[serde(default)]
    backfill: bool,
}

/// Parses a line of a stream beside the book, with or without its newline.
pub fn parse_kind(line: &[u8]) -> Result<KindLine<'_>, String> {
    let f: KindFields =
        serde_json::from_slice(line).map_err(|e| format!("not an event line: {e}"))?;
    let ids = match (f.t, f.a, f.f, f.l, f.u) {
        (Some(t), None, None, None, None) => KindIds::Trade { t },
        (None, Some(a), Some(first), Some(l), None) => KindIds::AggTrade { a, f: first, l },
        (None, None, None, None, Some(u)) => KindIds::BookTicker { u },
        (None, None, None, None, None) => KindIds::None,
        _ => return Err("not an event line: ids of more than one kind".into()),
    };
    Ok(KindLine {
        symbol: f.symbol,
        stream: f.stream,
        data: f.data.get(),
        event_ms: f.E,
        ids,
        pipeline_us: pipeline_us(f.latency_pipeline_ms),
        recv_ns: f.recv_ns,
        conn: f.conn,
        backfill: f.backfill,
    })
}

/// `latency_pipeline_ms` as parsed, in µs.
fn pipeline_us(ms: Option<f64>) -> Option<u64> {
    ms.filter(|ms| *ms >= 0.0)
        .map(|ms| (ms * 1e3).round() as u64)
}

/// A line about the recording rather than an event of its stream: the server's notice that it
/// would close the connection (`serverShutdown`), kept where the stream's lines are so a reader
/// sees why the connection changed. Readers of events skip it ([`is_meta`]).
///
/// ```text
/// {"meta":"serverShutdown","recv_ns":…,"conn":…,"data":{…frame payload as received…}}
/// ```
#[derive(Debug, PartialEq, Deserialize)]
pub struct MetaLine<'a> {
    /// What happened: the event type that caused the line.
    #[serde(borrow)]
    pub meta: &'a str,
    pub recv_ns: u64,
    pub conn: u64,
    #[serde(borrow, deserialize_with = "raw_str")]
    pub data: &'a str,
}

/// What every meta line starts with.
const META_PREFIX: &[u8] = b"{\"meta\":";

/// Appends one meta line (with its newline) to `out`.
pub fn encode_meta(out: &mut Vec<u8>, line: &MetaLine) {
    out.extend_from_slice(META_PREFIX);
    out.push(b'"');
    out.extend_from_slice(line.meta.as_bytes());
    out.push(b'"');
    push_id(out, "recv_ns", line.recv_ns);
    push_id(out, "conn", line.conn);
    push_data(out, line.data);
    out.extend_from_slice(b"}\n");
}

/// Whether a line is a [`MetaLine`], which readers of events pass over.
pub fn is_meta(line: &[u8]) -> bool {
    line.starts_with(META_PREFIX)
}

/// Parses a meta line.
pub fn parse_meta(line: &[u8]) -> Result<MetaLine<'_>, String> {
    serde_json::from_slice(line).map_err(|e| format!("not a meta line: {e}"))
}

/// One REST snapshot as a line holds it, borrowed.
#[derive(Debug, PartialEq, Deserialize)]
pub struct SnapshotLine<'a> {
    /// Wall clock when the body arrived, ns since the Unix epoch.
    pub recv_ns: u64,
    #[serde(borrow)]
    pub symbol: &'a str,
    /// The snapshot's `lastUpdateId`, also inside `data`; at top level so a reader need not
    /// parse the body to place the snapshot in the event chain.
    #[serde(rename = "lastUpdateId")]
    pub last_update_id: u64,
    /// The REST body exactly as received.
    #[serde(borrow, deserialize_with = "raw_str")]
    pub data: &'a str,
}

fn raw_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'de str, D::Error> {
    <&RawValue>::deserialize(d).map(RawValue::get)
}

/// Appends one snapshot line (with its newline) to `out`.
pub fn encode_snapshot(out: &mut Vec<u8>, line: &SnapshotLine) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"{\"recv_ns\":");
    out.extend_from_slice(num.format(line.recv_ns).as_bytes());
    out.extend_from_slice(b",\"symbol\":\"");
    out.extend_from_slice(line.symbol.as_bytes());
    out.extend_from_slice(b"\",\"lastUpdateId\":");
    out.extend_from_slice(num.format(line.last_update_id).as_bytes());
    push_data(out, line.data);
    out.extend_from_slice(b"}\n");
}

/// Parses a snapshot line, with or without its newline.
pub fn parse_snapshot(line: &[u8]) -> Result<SnapshotLine<'_>, String> {
    serde_json::from_slice(line).map_err(|e| format!("not a snapshot line: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = r#"{"e":"depthUpdate","E":1723161256184,"T":1723161256177,"s":"BTCUSDT","U":5123107850310,"u":5123107853551,"pu":5123107850146,"b":[["61000.10","1.5"]],"a":[]}"#;
    const IDS: Ids = Ids {
        first: 5123107850310,
        last: 5123107853551,
        prev: 5123107850146,
    };

    fn depth(
        recv_ns: u64,
        trade_ms: Option<u64>,
        conn: u64,
        pipeline_us: u64,
    ) -> DepthLine<'static> {
        DepthLine {
            symbol: "BTCUSDT",
            stream: "btcusdt@depth@0ms",
            data: DATA,
            event_ms: 1723161256184,
            trade_ms,
            ids: IDS,
            pipeline_us: Some(pipeline_us),
            recv_ns,
            conn,
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
        let mut out = Vec::new();
        encode_depth(
            &mut out,
            &depth(1_723_161_256_185_123_456, Some(1723161256177), 1, 11),
        );
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
        assert!(line.contains(&format!(",\"data\":{DATA}}}")));
    }

    /// The scanner and the JSON parser read the same fields from a line the encoder wrote, and
    /// every variation the scanner does not know falls through to the parser, not to an error.
    #[test]
    fn line_scanner_agrees_with_the_json_parser() {
        let mut out = Vec::new();
        for (recv_ns, trade_ms) in [
            (1_723_161_256_185_123_456, Some(1723161256177)),
            // Receipt before the event time: a negative latency; and no `T`.
            (1_723_161_256_100_000_000, None),
        ] {
            let written = depth(recv_ns, trade_ms, 7, 1_234);
            out.clear();
            encode_depth(&mut out, &written);
            let scanned = scan_depth(&out).expect("the encoder's layout");
            let f: DepthFields = serde_json::from_slice(&out).unwrap();
            assert_eq!(scanned, written);
            assert_eq!(scanned, parse_depth(&out).unwrap());
            assert_eq!(scanned.data, f.data.get());
            assert_eq!((scanned.symbol, scanned.stream), (f.symbol, f.stream));
            assert_eq!(scanned.event_ms, f.E);
            assert_eq!(scanned.trade_ms, f.T);
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
            assert!(scan_depth(variant.as_bytes()).is_none(), "{variant}");
            let parsed = parse_depth(variant.as_bytes()).unwrap();
            assert_eq!(parsed.symbol, "BTCUSDT");
            assert_eq!(parsed.ids, IDS);
        }
        for bad in [&line[..line.len() - 1], "", "{}", "not json"] {
            assert!(parse_depth(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn kind_lines_round_trip_with_their_ids() {
        let data = r#"{"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}"#;
        for (ids, keys) in [
            (KindIds::Trade { t: 7 }, ",\"t\":7,"),
            (
                KindIds::AggTrade { a: 1, f: 2, l: 3 },
                ",\"a\":1,\"f\":2,\"l\":3,",
            ),
            (KindIds::BookTicker { u: 9 }, ",\"u\":9,"),
            (KindIds::None, ",\"E\":1626992741575,\"latency_event_ms\""),
        ] {
            for backfill in [false, true] {
                let line = KindLine {
                    symbol: "CTKUSDT",
                    stream: "ctkusdt@aggTrade",
                    data,
                    event_ms: 1626992741575,
                    ids,
                    pipeline_us: Some(12),
                    recv_ns: 1_626_992_741_600_000_000,
                    conn: 3,
                    backfill,
                };
                let mut out = Vec::new();
                encode_kind(&mut out, &line);
                let text = std::str::from_utf8(&out).unwrap();
                assert!(text.contains(keys), "{text}");
                assert!(text.ends_with(&format!("\"data\":{data}}}\n")), "{text}");
                assert_eq!(text.contains("\"backfill\":true"), backfill);
                assert!(!is_meta(&out));
                assert_eq!(parse_kind(&out), Ok(line));
            }
        }
    }

    #[test]
    fn meta_lines_are_told_apart_and_round_trip() {
        let line = MetaLine {
            meta: "serverShutdown",
            recv_ns: 5,
            conn: 2,
            data: r#"{"e":"serverShutdown","E":1}"#,
        };
        let mut out = Vec::new();
        encode_meta(&mut out, &line);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{\"meta\":\"serverShutdown\",\"recv_ns\":5,\"conn\":2,\"data\":{\"e\":\"serverShutdown\",\"E\":1}}\n"
        );
        assert!(is_meta(&out));
        assert_eq!(parse_meta(&out), Ok(line));
        assert!(parse_depth(&out).is_err() && parse_kind(&out).is_err());
    }

    #[test]
    fn a_line_without_a_pipeline_figure_says_null() {
        let mut written = depth(1_723_161_256_185_000_000, None, 1, 0);
        written.pipeline_us = None;
        let mut out = Vec::new();
        encode_depth(&mut out, &written);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["latency_pipeline_ms"].is_null());
        assert_eq!(parse_depth(&out).unwrap(), written);
    }

    #[test]
    fn snapshot_lines_round_trip_with_the_body_byte_exact() {
        let body = r#"{"lastUpdateId":5123107852948,"E":1,"T":1,"bids":[["1.0","2"]],"asks":[]}"#;
        let written = SnapshotLine {
            recv_ns: 1_723_161_256_185_123_456,
            symbol: "BTCUSDT",
            last_update_id: 5123107852948,
            data: body,
        };
        let mut out = Vec::new();
        encode_snapshot(&mut out, &written);
        assert!(out.ends_with(b"}\n"));
        assert_eq!(parse_snapshot(&out).unwrap(), written);
        assert!(parse_snapshot(b"{\"recv_ns\":1}").is_err());
    }

    /// Line breaks are legal JSON whitespace in a payload or a REST body; each record still
    /// takes exactly one line, with the same JSON value, and says it was respaced.
    #[test]
    fn line_breaks_in_a_payload_or_body_keep_one_record_per_line() {
        let pretty = "{\r\n  \"e\":\"depthUpdate\",\n\"E\":1,\"b\":[],\"a\":[]\n}";
        let value: serde_json::Value = serde_json::from_str(pretty).unwrap();
        let mut written = depth(1_723_161_256_185_000_000, None, 1, 0);
        written.data = pretty;
        let mut out = Vec::new();
        encode_depth(&mut out, &written);
        encode_snapshot(
            &mut out,
            &SnapshotLine {
                recv_ns: 1,
                symbol: "BTCUSDT",
                last_update_id: 7,
                data: pretty,
            },
        );
        let text = std::str::from_utf8(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(!text.contains('\r'));
        let event = parse_depth(lines[0].as_bytes()).unwrap();
        let snapshot = parse_snapshot(lines[1].as_bytes()).unwrap();
        for (line, data) in [(lines[0], event.data), (lines[1], snapshot.data)] {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["data_respaced"], true, "{line}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(data).unwrap(),
                value
            );
        }
        assert_eq!((event.ids, snapshot.last_update_id), (IDS, 7));
        // A payload without line breaks is written byte for byte, unflagged.
        out.clear();
        encode_depth(&mut out, &depth(1_723_161_256_185_000_000, None, 1, 0));
        assert!(!std::str::from_utf8(&out).unwrap().contains("data_respaced"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Owned parts of a depth line, for the strategy.
        #[derive(Debug, Clone)]
        struct Parts {
            symbol: String,
            stream: String,
            data: String,
            event_ms: u64,
            trade_ms: Option<u64>,
            ids: Ids,
            pipeline_us: Option<u64>,
            recv_ns: u64,
            conn: u64,
        }

        impl Parts {
            fn line(&self) -> DepthLine<'_> {
                DepthLine {
                    symbol: &self.symbol,
                    stream: &self.stream,
                    data: &self.data,
                    event_ms: self.event_ms,
                    trade_ms: self.trade_ms,
                    ids: self.ids,
                    pipeline_us: self.pipeline_us,
                    recv_ns: self.recv_ns,
                    conn: self.conn,
                }
            }
        }

        /// Depth lines as the recorder and import write them: times up to the year 9999, ids
        /// up to Binance's, any payload object (escapes and all).
        fn parts() -> impl Strategy<Value = Parts> {
            let times = (
                0..=253_402_300_799_999u64,
                proptest::option::of(0..=253_402_300_799_999u64),
            );
            let ids = (
                0..=i64::MAX as u64,
                0..=i64::MAX as u64,
                0..=i64::MAX as u64,
            )
                .prop_map(|(first, last, prev)| Ids { first, last, prev });
            (
                "[A-Z0-9]{2,20}",
                "(@depth|@depth5@100ms|@depth@0ms)",
                proptest::collection::vec("[ -~\u{e9}\u{2028}]{0,12}", 0..4),
                times,
                ids,
                // Pipeline latencies up to a day (the serde path reads them as float ms), or
                // none measured (written as null, which only the serde path reads).
                proptest::option::of(0..86_400_000_000u64),
                any::<u64>(),
                1..=u64::from(u32::MAX),
            )
                .prop_map(
                    |(
                        symbol,
                        kind,
                        texts,
                        (event_ms, trade_ms),
                        ids,
                        pipeline_us,
                        recv_ns,
                        conn,
                    )| {
                        let stream = format!("{}{kind}", symbol.to_ascii_lowercase());
                        let data = serde_json::json!({"e": "depthUpdate", "s": symbol, "b": texts})
                            .to_string();
                        Parts {
                            symbol,
                            stream,
                            data,
                            event_ms,
                            trade_ms,
                            ids,
                            pipeline_us,
                            recv_ns,
                            conn,
                        }
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// What is encoded is parsed back field for field, by the scanner whenever a
            /// pipeline latency was measured, as it is on every line the recorder and import
            /// write.
            #[test]
            fn encoded_lines_parse_back(p in parts()) {
                let mut out = Vec::new();
                encode_depth(&mut out, &p.line());
                prop_assert_eq!(out.last(), Some(&b'\n'));
                prop_assert_eq!(scan_depth(&out).is_some(), p.pipeline_us.is_some());
                prop_assert_eq!(parse_depth(&out).unwrap(), p.line());
            }

            /// The scanner and the full JSON parse agree on every line the scanner reads: a
            /// space after the opening brace sends the same line down the serde path.
            #[test]
            fn the_scanner_agrees_with_serde(p in parts()) {
                let mut out = Vec::new();
                encode_depth(&mut out, &p.line());
                let Some(scanned) = scan_depth(&out) else {
                    return Ok(());
                };
                let spaced = [&b"{ "[..], &out[1..]].concat();
                prop_assert!(scan_depth(&spaced).is_none());
                prop_assert_eq!(parse_depth(&spaced).unwrap(), scanned);
            }

            /// Arbitrary bytes, and encoded lines with a byte changed, are parsed or refused,
            /// never a panic. (The scanner may accept a changed payload: it never looks inside
            /// `data`, whose bytes the gzip CRC vouches for.)
            #[test]
            fn mangled_lines_never_panic(p in parts(), at in any::<usize>(), byte in any::<u8>(), junk in proptest::collection::vec(any::<u8>(), 0..200)) {
                let _ = parse_depth(&junk);
                let _ = parse_snapshot(&junk);
                let mut out = Vec::new();
                encode_depth(&mut out, &p.line());
                let i = at % out.len();
                out[i] = byte;
                let _ = parse_depth(&out);
            }
        }
    }
}
