//! Frames as the exchange sends them: the header fields a recorder needs, read in one pass.
//!
//! A frame is parsed only as far as the recorder needs (stream name, event type, `E`, `T`, `s`,
//! the ids of its kind); the bid and ask arrays are skipped, and the `data` payload is located,
//! not copied, so that it can travel to the file as the exact bytes received.
//!
//! Every market's payloads are read, each by its shape: a `depthUpdate` with `pu` chains by it
//! (futures); one without is spot's, whose ids are dense, and reads as `pu = U - 1`
//! ([`Continuity::Dense`]). Spot's `bookTicker` has no `e`, `E` or `T`: it is known by its
//! stream's name, and has no event time. Spot's partial book, `{"lastUpdateId":…,"bids":…,
//! "asks":…}`, has no `e`, `E`, `T` or `s` either: known by its stream's name too, its symbol is
//! the stream's, its one id is `U` and `u` alike ([`Continuity::Increasing`]). COIN-M payloads add
//! `ps`, which is not needed.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::market::kind::{Kind, KindIds};
use crate::market::sequence::{Continuity, Ids};
use crate::market::stream::{Depth, parse_depth_stream};

/// A text frame, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Depth(DepthHeader<'a>),
    /// An event of a stream recorded beside the book.
    Kind(KindHeader<'a>),
    /// `{"e":"serverShutdown",…}`, bare or on a combined stream: the server is about to close
    /// the connection. The range is the payload, kept as a meta line.
    ServerShutdown(Range<usize>),
    /// A reply to a control message (`{"result":…,"id":…}` or an error with an id).
    Reply,
    /// Well-formed, but not an event the recorder records (another event type).
    Other {
        stream: Cow<'a, str>,
    },
}

/// The header fields of a `depthUpdate`, borrowed from the frame.
#[derive(Debug, PartialEq, Eq)]
pub struct DepthHeader<'a> {
    /// Borrowed unless the frame spelled it with JSON escapes.
    pub stream: Cow<'a, str>,
    /// Where the `data` payload lies in the frame.
    pub data: Range<usize>,
    /// The stream's symbol, as the payload spells it (checked against the stream name); for
    /// spot's partial book, which names none, the stream's, in upper case.
    pub symbol: Cow<'a, str>,
    /// `E`; `None` for spot's partial book, which carries no time.
    pub event_ms: Option<u64>,
    pub trade_ms: Option<u64>,
    /// For spot's partial book `U = u = lastUpdateId` and `pu = 0`, until
    /// [`Continuity::chained`] gives it the previous event's id.
    pub ids: Ids,
    /// How the event chains, by its shape: with `pu` (futures), dense (spot, `prev = U - 1`) or
    /// increasing (spot's partial book).
    pub continuity: Continuity,
}

impl DepthHeader<'_> {
    /// The event time lines use: `E`, or the receipt time for spot's partial book.
    pub fn event_ms_or_receipt(&self, recv_ns: u64) -> u64 {
        or_receipt(self.event_ms, recv_ns)
    }
}

/// `event_ms`, or for an event without a time the receipt time in ms, the nearest the recorder
/// can know.
fn or_receipt(event_ms: Option<u64>, recv_ns: u64) -> u64 {
    event_ms.unwrap_or(recv_ns / 1_000_000)
}

/// The header fields of an event beside the book, borrowed from the frame.
#[derive(Debug, PartialEq, Eq)]
pub struct KindHeader<'a> {
    pub stream: Cow<'a, str>,
    pub kind: Kind,
    /// Where the `data` payload lies in the frame.
    pub data: Range<usize>,
    /// The stream's symbol, as the payload spells it (`s`, or `o.s` for a liquidation).
    pub symbol: Cow<'a, str>,
    /// `E`; `None` for spot's bookTicker, which carries no time.
    pub event_ms: Option<u64>,
    pub ids: KindIds,
}

impl KindHeader<'_> {
    /// The event time lines and tapes use: `E`, or for an event without one (spot's bookTicker)
    /// the receipt time in ms, the nearest the recorder can know.
    pub fn event_ms_or_receipt(&self, recv_ns: u64) -> u64 {
        or_receipt(self.event_ms, recv_ns)
    }
}

/// Why a frame could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame is not a JSON object: {0}")]
    Json(String),
    #[error("frame has neither stream/data nor an id")]
    Shape,
    #[error("event lacks a field: {0}")]
    Fields(String),
    #[error("event for {symbol} on stream {stream}")]
    Symbol { symbol: String, stream: String },
    #[error("event out of range: {0}")]
    Range(String),
}

/// The latest event or transaction time accepted, 9999-12-31T23:59:59.999Z: every time up to it
/// prints as an ISO date, and receipt-minus-event latencies stay far inside an `i64` of µs.
pub const MAX_EVENT_MS: u64 = 253_402_300_799_999;

/// The largest update id accepted: Binance's ids are Java longs, so anything above is not an id
/// the exchange sent, and would wrap in any signed arithmetic downstream.
pub const MAX_UPDATE_ID: u64 = i64::MAX as u64;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    stream: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    /// Replies to control messages carry the request's id (`result` may be null).
    id: Option<IgnoredAny>,
    /// A bare event: only `serverShutdown` is expected so.
    #[serde(borrow)]
    e: Option<Cow<'a, str>>,
}

/// The event fields, all optional so one pass both tells the event type and reads the header.
#[derive(Deserialize)]
#[allow(non_snake_case)]
struct EventFields<'a> {
    #[serde(borrow)]
    e: Option<Cow<'a, str>>,
    #[serde(borrow)]
    s: Option<Cow<'a, str>>,
    E: Option<u64>,
    T: Option<u64>,
    U: Option<u64>,
    u: Option<u64>,
    /// Real frames carry `-1` when there is no previous event.
    pu: Option<i64>,
    /// Trade id.
    t: Option<u64>,
    /// aggTrade id; in a depth event the asks, hence raw.
    #[serde(borrow)]
    a: Option<&'a RawValue>,
    /// aggTrade first and last trade ids.
    f: Option<u64>,
    l: Option<u64>,
    /// A liquidation's order, which holds its symbol.
    #[serde(borrow)]
    o: Option<&'a RawValue>,
    /// Spot's partial book: its one id.
    #[serde(rename = "lastUpdateId")]
    last_update_id: Option<u64>,
}

/// The members of a depth payload that tell its market's continuity.
#[derive(Deserialize)]
struct DepthShape {
    pu: Option<IgnoredAny>,
    #[serde(rename = "lastUpdateId")]
    last_update_id: Option<IgnoredAny>,
}

/// How a recorded depth payload chains, by its shape: spot's partial book has a
/// `lastUpdateId` (increasing); a `depthUpdate` without `pu` is spot's diff (dense ids); anything
/// else, futures partial depth and payloads that do not parse included, chains by `pu`. Readers
/// of recordings call it once per symbol, so a recording says its own market.
pub fn depth_continuity(payload: &str) -> Continuity {
    match serde_json::from_str::<DepthShape>(payload) {
        Ok(DepthShape {
            last_update_id: Some(_),
            ..
        }) => Continuity::Increasing,
        Ok(DepthShape { pu: None, .. }) => Continuity::Dense,
        _ => Continuity::PrevId,
    }
}

/// The part of a liquidation's order that names its symbol.
#[derive(Deserialize)]
struct Order<'a> {
    #[serde(borrow)]
    s: Cow<'a, str>,
}

/// The server's notice that it will close the connection.
const SERVER_SHUTDOWN: &str = "serverShutdown";

/// Binance's combined-stream layout: exactly these two members, in this order.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Combined<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
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
    classify(env.stream, offset_in(text, raw), env.data).ok()
}

/// The frame an event on `stream` makes, by its event type.
fn classify<'a>(
    stream: Cow<'a, str>,
    data: Range<usize>,
    f: EventFields<'a>,
) -> Result<Frame<'a>, FrameError> {
    match f.e.as_deref() {
        Some("depthUpdate") => depth_header(stream, data, f).map(Frame::Depth),
        Some(SERVER_SHUTDOWN) => Ok(Frame::ServerShutdown(data)),
        Some(e) => match Kind::of_event(e) {
            Some(kind) => kind_header(stream, kind, data, f).map(Frame::Kind),
            None => Ok(Frame::Other { stream }),
        },
        // Spot's bookTicker and partial book, the events without a type, named by their
        // stream alone.
        None if matches!(Kind::parse_stream(&stream), Some((_, Kind::BookTicker))) => {
            kind_header(stream, Kind::BookTicker, data, f).map(Frame::Kind)
        }
        None if matches!(parse_depth_stream(&stream), Some((_, Depth::Partial(_)))) => {
            partial_header(stream, data, f).map(Frame::Depth)
        }
        None => Ok(Frame::Other { stream }),
    }
}

/// The header of a depth event, refused when it could not have come from the exchange: a symbol
/// other than its stream's, a time or id out of range, `U` after `u`.
fn depth_header<'a>(
    stream: Cow<'a, str>,
    data: Range<usize>,
    f: EventFields<'a>,
) -> Result<DepthHeader<'a>, FrameError> {
    let missing = |name: &str| FrameError::Fields(format!("missing {name}"));
    let symbol = f.s.ok_or_else(|| missing("s"))?;
    let event_ms = f.E.ok_or_else(|| missing("E"))?;
    let first = f.U.ok_or_else(|| missing("U"))?;
    let last = f.u.ok_or_else(|| missing("u"))?;
    check_symbol(&stream, &symbol)?;
    check_times(event_ms, f.T)?;
    let range = |what: String| Err(FrameError::Range(what));
    if first > last || last > MAX_UPDATE_ID {
        return range(format!("update ids U={first} u={last}"));
    }
    // Real frames carry `-1` when there is no previous event; the chain reads that as 0.
    let (prev, continuity) = match f.pu {
        None => (Continuity::dense_prev(first), Continuity::Dense),
        Some(-1) => (0, Continuity::PrevId),
        Some(pu) => match u64::try_from(pu) {
            Ok(prev) => (prev, Continuity::PrevId),
            Err(_) => return range(format!("pu={pu}")),
        },
    };
    Ok(DepthHeader {
        stream,
        data,
        symbol,
        event_ms: Some(event_ms),
        trade_ms: f.T,
        ids: Ids { first, last, prev },
        continuity,
    })
}

/// The header of spot's partial book, `{"lastUpdateId":…,"bids":…,"asks":…}`: the symbol is the
/// stream's (the payload names none), the id is both `U` and `u`.
fn partial_header<'a>(
    stream: Cow<'a, str>,
    data: Range<usize>,
    f: EventFields<'a>,
) -> Result<DepthHeader<'a>, FrameError> {
    let id = f
        .last_update_id
        .ok_or_else(|| FrameError::Fields("missing lastUpdateId".into()))?;
    if id > MAX_UPDATE_ID {
        return Err(FrameError::Range(format!("lastUpdateId={id}")));
    }
    let named = stream.split('@').next().unwrap_or_default();
    let symbol = Cow::Owned(named.to_ascii_uppercase());
    Ok(DepthHeader {
        stream,
        data,
        symbol,
        event_ms: None,
        trade_ms: None,
        ids: Ids {
            first: id,
            last: id,
            prev: 0,
        },
        continuity: Continuity::Increasing,
    })
}

/// The header of an event beside the book, refused on the same grounds as a depth event's.
fn kind_header<'a>(
    stream: Cow<'a, str>,
    kind: Kind,
    data: Range<usize>,
    f: EventFields<'a>,
) -> Result<KindHeader<'a>, FrameError> {
    let missing = |name: &str| FrameError::Fields(format!("missing {name}"));
    let symbol = match (kind, f.s, f.o) {
        (Kind::ForceOrder, _, Some(o)) => {
            let order: Order =
                serde_json::from_str(o.get()).map_err(|e| FrameError::Fields(format!("o: {e}")))?;
            order.s
        }
        (_, Some(s), _) => s,
        _ => return Err(missing("s")),
    };
    // Only spot's bookTicker, which has no `e` either, goes without a time.
    let event_ms = match f.E {
        None if kind == Kind::BookTicker && f.e.is_none() => None,
        e => Some(e.ok_or_else(|| missing("E"))?),
    };
    check_symbol(&stream, &symbol)?;
    check_times(event_ms.unwrap_or_default(), f.T)?;
    let id = |value: Option<u64>, name: &str| match value {
        Some(id) if id <= MAX_UPDATE_ID => Ok(id),
        Some(id) => Err(FrameError::Range(format!("{name}={id}"))),
        None => Err(missing(name)),
    };
    let ids = match kind {
        Kind::Trade => KindIds::Trade { t: id(f.t, "t")? },
        Kind::AggTrade => {
            let a = f.a.and_then(|a| a.get().parse::<u64>().ok());
            let (f_id, l) = (id(f.f, "f")?, id(f.l, "l")?);
            if f_id > l {
                return Err(FrameError::Range(format!("trade ids f={f_id} l={l}")));
            }
            KindIds::AggTrade {
                a: id(a, "a")?,
                f: f_id,
                l,
            }
        }
        Kind::BookTicker => KindIds::BookTicker { u: id(f.u, "u")? },
        Kind::MarkPrice | Kind::ForceOrder => KindIds::None,
    };
    Ok(KindHeader {
        stream,
        kind,
        data,
        symbol,
        event_ms,
        ids,
    })
}

/// Streams are named `<symbol in lower case>@…`: a payload for another symbol is refused.
fn check_symbol(stream: &str, symbol: &str) -> Result<(), FrameError> {
    let named = stream.split('@').next().unwrap_or_default();
    if named.eq_ignore_ascii_case(symbol) {
        return Ok(());
    }
    Err(FrameError::Symbol {
        symbol: symbol.to_string(),
        stream: stream.to_string(),
    })
}

/// `E` and `T` must print as dates.
fn check_times(event_ms: u64, trade_ms: Option<u64>) -> Result<(), FrameError> {
    match [Some(event_ms), trade_ms]
        .into_iter()
        .flatten()
        .find(|ms| *ms > MAX_EVENT_MS)
    {
        Some(ms) => Err(FrameError::Range(format!(
            "time {ms} is past the year 9999"
        ))),
        None => Ok(()),
    }
}

/// Any other layout: the envelope first, then the payload.
fn general_path(text: &str) -> Result<Frame<'_>, FrameError> {
    let env: Envelope = serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
    let (stream, data) = match (env.stream, env.data) {
        (Some(stream), Some(data)) => (stream, data),
        (None, None) if env.id.is_some() => return Ok(Frame::Reply),
        (None, None) if env.e.as_deref() == Some(SERVER_SHUTDOWN) => {
            return Ok(Frame::ServerShutdown(offset_in(text, text.trim())));
        }
        _ => return Err(FrameError::Shape),
    };
    let raw = data.get();
    let f: EventFields =
        serde_json::from_str(raw).map_err(|e| FrameError::Fields(e.to_string()))?;
    classify(stream, offset_in(text, raw), f)
}

/// The byte range of `part`, a slice borrowed from `whole`.
pub fn offset_in(whole: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
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
        assert_eq!(h.event_ms, Some(1723161256184));
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
            parse_frame(r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1}}"#),
            Ok(Frame::Other {
                stream: "btcusdt@kline_1m".into()
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

    /// Real frames of every kind (the hftbacktest and cryptofeed captures; mark price and
    /// liquidation as Binance documents them, with the 2026 `ps` and `st`).
    #[test]
    fn every_kind_is_read_with_its_ids() {
        let cases = [
            (
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":5266583935,"p":"61800.30","q":"0.006","X":"MARKET","m":false}}"#,
                Kind::Trade,
                KindIds::Trade { t: 5266583935 },
            ),
            (
                r#"{"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}}"#,
                Kind::AggTrade,
                KindIds::AggTrade {
                    a: 16599292,
                    f: 23961322,
                    l: 23961322,
                },
            ),
            (
                r#"{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5123107839020,"s":"BTCUSDT","b":"61800.20","B":"2.507","a":"61800.30","A":"2.510","T":1723161256313,"E":1723161256313}}"#,
                Kind::BookTicker,
                KindIds::BookTicker { u: 5123107839020 },
            ),
            (
                r#"{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","ps":"BTCUSDT","p":"11794.15000000","ap":"11794.15000000","i":"11784.62659091","P":"11784.25641265","r":"0.00038167","T":1562306400000,"st":1}}"#,
                Kind::MarkPrice,
                KindIds::None,
            ),
            (
                r#"{"stream":"btcusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"9910","ap":"9910","X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}}"#,
                Kind::ForceOrder,
                KindIds::None,
            ),
        ];
        for (frame, kind, ids) in cases {
            let Ok(Frame::Kind(h)) = parse_frame(frame) else {
                panic!("not read: {frame}")
            };
            assert_eq!((h.kind, h.ids), (kind, ids), "{frame}");
            assert!(frame[h.data.clone()].starts_with(r#"{"e":""#));
            assert_eq!(general_path(frame), Ok(Frame::Kind(h)));
        }
        let wrong = cases[0].0.replace(r#""s":"BTCUSDT""#, r#""s":"ETHUSDT""#);
        assert!(matches!(
            parse_frame(&wrong),
            Err(FrameError::Symbol { .. })
        ));
        let no_id = cases[0].0.replace(r#""t":5266583935,"#, "");
        assert!(matches!(parse_frame(&no_id), Err(FrameError::Fields(_))));
    }

    /// Real spot and COIN-M frames (the hftbacktest captures of 2024-08-08): spot depth chains
    /// densely, its bookTicker is known by its stream and has no time; COIN-M reads as futures.
    #[test]
    fn spot_and_coin_m_frames_are_read_by_their_shape() {
        let spot_depth = r#"{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255308,"s":"BTCUSDT","U":50093239203,"u":50093239207,"b":[["55653.87000000","0.00000000"]],"a":[]}}"#;
        let Ok(Frame::Depth(h)) = parse_frame(spot_depth) else {
            panic!("spot depth not read")
        };
        assert_eq!(
            (h.ids, h.trade_ms, h.continuity),
            (
                Ids {
                    first: 50093239203,
                    last: 50093239207,
                    prev: 50093239202
                },
                None,
                Continuity::Dense
            )
        );
        let spot_ticker = r#"{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT","b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}"#;
        let Ok(Frame::Kind(h)) = parse_frame(spot_ticker) else {
            panic!("spot bookTicker not read")
        };
        assert_eq!(
            (h.kind, h.ids, h.event_ms),
            (
                Kind::BookTicker,
                KindIds::BookTicker { u: 50093239212 },
                None
            )
        );
        assert!(spot_ticker[h.data].starts_with(r#"{"u":50093239212,"#));
        // Without `e`, only a bookTicker stream makes an event; a trade must say what it is.
        let untyped = spot_ticker.replace("@bookTicker", "@trade");
        assert!(matches!(parse_frame(&untyped), Ok(Frame::Other { .. })));
        let coin_m = r#"{"stream":"ethusd_perp@depth@0ms","data":{"e":"depthUpdate","E":1723161257460,"T":1723161257451,"s":"ETHUSD_PERP","ps":"ETHUSD","U":1007198631593,"u":1007198631840,"pu":1007198631578,"b":[],"a":[]}}"#;
        let Ok(Frame::Depth(h)) = parse_frame(coin_m) else {
            panic!("COIN-M depth not read")
        };
        assert_eq!(
            (h.ids.prev, h.continuity, &*h.symbol),
            (1007198631578, Continuity::PrevId, "ETHUSD_PERP")
        );
        let coin_m_ticker = r#"{"stream":"ethusd_perp@bookTicker","data":{"u":1007198631825,"e":"bookTicker","s":"ETHUSD_PERP","ps":"ETHUSD","b":"2682.17","B":"159","a":"2682.18","A":"3794","T":1723161257450,"E":1723161257457}}"#;
        let Ok(Frame::Kind(h)) = parse_frame(coin_m_ticker) else {
            panic!("COIN-M bookTicker not read")
        };
        assert_eq!(h.event_ms, Some(1723161257457));
        let payload = |frame: &str| match parse_frame(frame) {
            Ok(Frame::Depth(h)) => frame[h.data].to_string(),
            _ => panic!("not depth"),
        };
        assert_eq!(depth_continuity(&payload(spot_depth)), Continuity::Dense);
        assert_eq!(depth_continuity(&payload(coin_m)), Continuity::PrevId);
        assert_eq!(depth_continuity("not json"), Continuity::PrevId);
        // A futures bookTicker, typed, still needs its time.
        let untimed = coin_m_ticker.replace(r#","E":1723161257457"#, "");
        assert!(matches!(parse_frame(&untimed), Err(FrameError::Fields(_))));
    }

    /// A real spot partial book (crypto-crawler-rs sample): no type, time or symbol; the symbol
    /// comes from the stream, the one id is `U` and `u`, and the chain rule is `Increasing`.
    #[test]
    fn spot_partial_book_is_read_by_its_stream() {
        let frame = r#"{"stream":"ethusdt@depth20","data":{"lastUpdateId":17044571457,"bids":[["1782.00000000","6.48300000"],["1781.95000000","0.03000000"]],"asks":[["1782.01000000","15.46080000"],["1782.02000000","0.00780000"]]}}"#;
        let Ok(Frame::Depth(h)) = parse_frame(frame) else {
            panic!("spot partial book not read")
        };
        assert_eq!(
            (&*h.symbol, h.event_ms, h.trade_ms, h.continuity),
            ("ETHUSDT", None, None, Continuity::Increasing)
        );
        let id = 17044571457;
        assert_eq!(
            h.ids,
            Ids {
                first: id,
                last: id,
                prev: 0
            }
        );
        assert_eq!(h.event_ms_or_receipt(7_000_000), 7);
        let payload = &frame[h.data.clone()];
        assert!(payload.starts_with(r#"{"lastUpdateId":17044571457,"#) && payload.ends_with("]]}"));
        assert_eq!(depth_continuity(payload), Continuity::Increasing);
        assert_eq!(general_path(frame), Ok(Frame::Depth(h)));
        // On any stream but a partial book's, the same payload is no depth event.
        let diff = frame.replace("@depth20", "@depth@100ms");
        assert!(matches!(parse_frame(&diff), Ok(Frame::Other { .. })));
        for (bad, why) in [
            (
                frame.replace(r#""lastUpdateId":17044571457,"#, ""),
                "lastUpdateId",
            ),
            (
                frame.replace("17044571457", "18446744073709551615"),
                "lastUpdateId=",
            ),
            (frame.replace("17044571457", "-1"), "invalid"),
        ] {
            let e = parse_frame(&bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn server_shutdown_is_recognised_bare_or_enveloped() {
        let bare = r#"{"e":"serverShutdown","E":1790046434001}"#;
        assert_eq!(parse_frame(bare), Ok(Frame::ServerShutdown(0..bare.len())));
        let combined = format!(r#"{{"stream":"!serverShutdown","data":{bare}}}"#);
        let Ok(Frame::ServerShutdown(range)) = parse_frame(&combined) else {
            panic!("not recognised")
        };
        assert_eq!(&combined[range], bare);
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

    /// A payload must be what its stream says it is, in a range the exchange can send: anything
    /// else is a bad frame, never a line under the wrong symbol or a wrapped number.
    #[test]
    fn events_the_exchange_could_not_send_are_refused() {
        let cases = [
            (
                FRAME.replace(r#""s":"BTCUSDT""#, r#""s":"ETHUSDT""#),
                "for ETHUSDT on stream",
            ),
            (
                FRAME.replace("1723161256184", "18446744073709551615"),
                "year 9999",
            ),
            (
                FRAME.replace("1723161256177", "253402300800000"),
                "year 9999",
            ),
            (
                FRAME.replace("5123107853551", "18446744073709551615"),
                "update ids",
            ),
            (
                FRAME.replace("5123107853551", "5123107850000"),
                "update ids",
            ),
            (FRAME.replace("5123107850146", "-7"), "pu=-7"),
        ];
        for (frame, why) in &cases {
            let e = parse_frame(frame).unwrap_err();
            assert!(e.to_string().contains(why), "{frame}: {e}");
        }
    }

    /// JSON escapes are legal anywhere in a string: `s`, `e` and `stream` are decoded, not refused.
    #[test]
    fn escaped_names_are_decoded() {
        let escaped = FRAME
            .replace(r#""s":"BTCUSDT""#, r#""s":"BTC\u0055SDT""#)
            .replace(r#""e":"depthUpdate""#, r#""e":"depth\u0055pdate""#)
            .replace("btcusdt@depth@0ms", r"btcusdt\u0040depth@0ms");
        let Frame::Depth(h) = parse_frame(&escaped).unwrap() else {
            panic!("not depth")
        };
        assert_eq!((&*h.symbol, &*h.stream), ("BTCUSDT", "btcusdt@depth@0ms"));
        assert_eq!(h.ids.last, 5123107853551);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A depth event's fields as the exchange sends them.
        #[derive(Debug, Clone)]
        struct Event {
            symbol: String,
            stream: String,
            event_ms: u64,
            trade_ms: Option<u64>,
            first: u64,
            last: u64,
            pu: i64,
        }

        impl Event {
            fn payload(&self) -> String {
                let trade = self
                    .trade_ms
                    .map(|t| format!(r#""T":{t},"#))
                    .unwrap_or_default();
                format!(
                    r#"{{"e":"depthUpdate","E":{},{trade}"s":"{}","U":{},"u":{},"pu":{},"b":[["1.0","2"]],"a":[]}}"#,
                    self.event_ms, self.symbol, self.first, self.last, self.pu
                )
            }
        }

        fn event() -> impl Strategy<Value = Event> {
            (
                "[A-Z0-9]{2,20}",
                "(@depth|@depth@100ms|@depth20@500ms)",
                0..=MAX_EVENT_MS,
                proptest::option::of(0..=MAX_EVENT_MS),
                (0..=MAX_UPDATE_ID, 0..=MAX_UPDATE_ID),
                -1..=i64::MAX,
            )
                .prop_map(|(symbol, kind, event_ms, trade_ms, (a, b), pu)| Event {
                    stream: format!("{}{kind}", symbol.to_ascii_lowercase()),
                    symbol,
                    event_ms,
                    trade_ms,
                    first: a.min(b),
                    last: a.max(b),
                    pu,
                })
        }

        /// Checks that `text` parses as `e` with its payload at `payload`.
        fn assert_parses(text: &str, e: &Event, payload: &str) -> Result<(), TestCaseError> {
            let Ok(Frame::Depth(h)) = parse_frame(text) else {
                return Err(TestCaseError::fail(format!("not a depth frame: {text}")));
            };
            prop_assert_eq!(&h.stream, &e.stream);
            prop_assert_eq!(&h.symbol, &e.symbol);
            prop_assert_eq!(&text[h.data.clone()], payload);
            prop_assert_eq!((h.event_ms, h.trade_ms), (Some(e.event_ms), e.trade_ms));
            let prev = if e.pu == -1 { 0 } else { e.pu as u64 };
            prop_assert_eq!(
                h.ids,
                Ids {
                    first: e.first,
                    last: e.last,
                    prev
                }
            );
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Valid frames, in Binance's layout (the fast path) and spaced out with their
            /// members swapped (the general path), give back what was put in them.
            #[test]
            fn valid_frames_round_trip(e in event()) {
                let payload = e.payload();
                let exact = format!(r#"{{"stream":"{}","data":{payload}}}"#, e.stream);
                assert_parses(&exact, &e, &payload)?;
                let other = format!(r#"{{ "data" : {payload} , "stream" : "{}" }}"#, e.stream);
                assert_parses(&other, &e, &payload)?;
            }

            /// Any text, and valid frames with one character changed, inserted or removed,
            /// give a frame or an error, never a panic; a depth frame's payload range is
            /// always inside the text.
            #[test]
            fn parse_frame_never_panics(
                text in any::<String>(),
                e in event(),
                at in any::<usize>(),
                c in proptest::char::any(),
                how in 0..3u8,
            ) {
                let _ = parse_frame(&text);
                let mut chars: Vec<char> =
                    format!(r#"{{"stream":"{}","data":{}}}"#, e.stream, e.payload()).chars().collect();
                let i = at % chars.len();
                match how {
                    0 => chars[i] = c,
                    1 => chars.insert(i, c),
                    _ => {
                        chars.remove(i);
                    }
                }
                let mangled: String = chars.into_iter().collect();
                if let Ok(Frame::Depth(h)) = parse_frame(&mangled) {
                    prop_assert!(mangled.get(h.data).is_some());
                }
            }
        }
    }
}
