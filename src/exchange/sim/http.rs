//! The HTTP side of the port: reading a request head without consuming it, routing WebSocket
//! paths, and answering the REST endpoints (`/fapi/v1/depth`, `/fapi/v1/aggTrades`, `/fapi/v1/time`,
//! or the source's market's own: `/dapi/v1/…` for COIN-M, `/api/v3/…` for spot).
//!
//! One port serves both, like Binance's hosts behind their load balancer: the head is peeked, an
//! upgrade request is left in the socket for tungstenite to read, anything else is answered here
//! and closed (`Connection: close`, one request per connection).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::http::StatusCode;

use super::source::{Refusal, Source};
use crate::market::kind::{self, Kind};
use crate::market::stream::{is_well_formed, parse_depth_stream};
use crate::market::tee::STATE_STREAM;
use crate::market::venue::Market;

/// A request head must arrive within this time, else the connection is dropped.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head accepted; real ones are well under 1 KiB.
const MAX_HEAD: usize = 16 << 10;
/// Pause between peeks while the rest of a head is in flight.
const PEEK_WAIT: Duration = Duration::from_millis(1);
/// Depth levels when `limit` is absent, as on Binance.
const DEFAULT_DEPTH_LIMIT: usize = 500;
/// Aggregate trades when `limit` is absent, and the most one answer holds, as on Binance.
const DEFAULT_AGG_LIMIT: usize = 500;
const MAX_AGG_LIMIT: usize = 1000;

/// The parts of a request head the sim looks at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Whether this is a WebSocket upgrade request.
    pub upgrade: bool,
    /// Bytes of the head, blank line included.
    pub len: usize,
}

/// Where a WebSocket upgrade leads.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// The routed endpoint the path names: which streams the connection is sent.
    pub endpoint: kind::Route,
    /// `/stream` paths wrap each payload as `{"stream":…,"data":…}`; `/ws` paths send it bare.
    pub combined: bool,
    /// Streams named in the URL, subscribed from the start.
    pub streams: Vec<String>,
}

/// An HTTP answer: status and JSON body.
pub(crate) type Reply = (u16, Vec<u8>);

/// Waits until a whole request head is buffered and parses it, leaving the bytes in the socket.
/// `Ok(None)`: not a valid head (answer 400); `Err`: the peer left or was too slow.
pub(crate) fn peek_head(tcp: &TcpStream) -> io::Result<Option<Head>> {
    let mut buf = vec![0; MAX_HEAD];
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut seen = 0;
    loop {
        let n = tcp.peek(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(end) = memchr::memmem::find(&buf[..n], b"\r\n\r\n") {
            return Ok(parse_head(&buf[..end + 4]));
        }
        if n == buf.len() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        if n == seen {
            std::thread::sleep(PEEK_WAIT);
        }
        seen = n;
    }
}

fn parse_head(bytes: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split("\r\n");
    let mut request = lines.next()?.split(' ');
    let (method, target, version) = (request.next()?, request.next()?, request.next()?);
    if request.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    let upgrade = lines
        .filter_map(|l| l.split_once(':'))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("upgrade")
                && value.trim().eq_ignore_ascii_case("websocket")
        });
    Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        upgrade,
        len: bytes.len(),
    })
}

/// Routes an upgrade target: `/stream?streams=a/b`, `/ws/a/b`, `/ws`, `/stream`, each also under
/// `/public` and `/market`.
pub(crate) fn ws_route(target: &str) -> Result<Route, Reply> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let endpoint = kind::Route::of_path(path);
    let path = kind::Route::ALL
        .iter()
        .find_map(|route| {
            path.strip_prefix('/')
                .and_then(|p| p.strip_prefix(route.path()))
                .filter(|rest| rest.starts_with('/'))
        })
        .unwrap_or(path);
    let (combined, list) = match path {
        "/stream" | "/stream/" => (true, param(query, "streams").unwrap_or("")),
        "/ws" | "/ws/" => (false, ""),
        _ => match path.strip_prefix("/ws/") {
            Some(list) => (false, list),
            None => return Err(error(404, -1, "not found")),
        },
    };
    let list = percent_decode(list).ok_or_else(|| error(400, -1, "invalid percent-encoding"))?;
    let streams: Vec<String> = list
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = streams.iter().find(|s| !is_well_formed(s)) {
        return Err(error(400, -1, &format!("invalid stream name `{bad}`")));
    }
    Ok(Route {
        endpoint,
        combined,
        streams,
    })
}

/// Whether a connection on `endpoint` is sent `stream`'s frames: Binance serves depth,
/// bookTicker and trade on `/public` only, aggTrade, mark price and liquidations on `/market`
/// only. A stream refused here is acknowledged and listed like any other, then never sent: the
/// silence a client on the wrong route meets. A tap's state stream is obrec's own, on every
/// route: it speaks of streams of both.
pub(crate) fn delivers(market: Market, endpoint: kind::Route, stream: &str) -> bool {
    if stream == STATE_STREAM {
        return true;
    }
    let route = match parse_depth_stream(stream) {
        Some(_) => Some(kind::Route::Public),
        None => Kind::parse_stream(stream)
            .filter(|&(_, kind)| market.publishes(kind))
            .map(|(_, kind)| kind.route()),
    };
    // A market without routes serves every stream it publishes on any path.
    route.is_some_and(|route| route == endpoint || !market.routed())
}

/// Answers a REST request.
pub(crate) fn rest(head: &Head, source: &dyn Source) -> Reply {
    let (path, query) = head.target.split_once('?').unwrap_or((&head.target, ""));
    let market = source.market();
    let endpoint = match Market::of_rest_path(path) {
        Some((of, endpoint)) if of == market => endpoint,
        _ => {
            let extra = (head.method == "GET").then(|| source.rest(path, query));
            return extra
                .flatten()
                .unwrap_or_else(|| error(404, -1, "not found"));
        }
    };
    if head.method != "GET" {
        return error(405, -1, "method not allowed");
    }
    let answer = match endpoint {
        "time" => Ok((
            200,
            format!(r#"{{"serverTime":{}}}"#, source.time_ms()).into_bytes(),
        )),
        "depth" => depth(query, market, source),
        _ => agg_trades(query, source),
    };
    answer.unwrap_or_else(|reply| reply)
}

/// `/fapi/v1/depth?symbol=&limit=` (or the market's own depth path).
fn depth(query: &str, market: Market, source: &dyn Source) -> Result<Reply, Reply> {
    let symbol = symbol(query)?;
    let limit = match number(query, "limit")? {
        None => DEFAULT_DEPTH_LIMIT,
        Some(limit) if market.serves_depth_limit(limit) => limit,
        Some(limit) => {
            return Err(error(
                400,
                -4021,
                &format!("{limit} is not valid depth limit"),
            ));
        }
    };
    let mut body = Vec::with_capacity(limit * 50);
    source.depth(&symbol, limit, &mut body)?;
    Ok((200, body))
}

/// `/fapi/v1/aggTrades?symbol=&fromId=&limit=`. Binance also serves the latest trades, or those
/// of a time range, without `fromId`; a backfill always names its first id, so the sim asks for
/// it.
fn agg_trades(query: &str, source: &dyn Source) -> Result<Reply, Reply> {
    let symbol = symbol(query)?;
    let from_id = number::<u64>(query, "fromId")?.ok_or_else(|| mandatory("fromId"))?;
    let limit = match number(query, "limit")? {
        None => DEFAULT_AGG_LIMIT,
        Some(limit) if (1..=MAX_AGG_LIMIT).contains(&limit) => limit,
        Some(_) => {
            return Err(error(
                400,
                -1130,
                "Data sent for parameter 'limit' is not valid.",
            ));
        }
    };
    let mut body = Vec::with_capacity(limit * 120);
    match source.agg_trades(&symbol, from_id, limit, &mut body) {
        Ok(()) => Ok((200, body)),
        Err(Refusal::InvalidSymbol) => Err(error(400, -1121, "Invalid symbol.")),
        Err(Refusal::Unavailable) => Err(error(404, -1, "aggregate trades are not served here")),
    }
}

/// The upper-cased `symbol` parameter, which every market endpoint requires.
fn symbol(query: &str) -> Result<String, Reply> {
    param(query, "symbol")
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_uppercase)
        .ok_or_else(|| mandatory("symbol"))
}

/// Binance's -1102 for a required parameter that is missing or empty.
fn mandatory(name: &str) -> Reply {
    error(
        400,
        -1102,
        &format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
    )
}

/// The numeric parameter `name`, if sent and not empty; Binance's -1100 if it is not a number.
fn number<T: std::str::FromStr>(query: &str, name: &str) -> Result<Option<T>, Reply> {
    param(query, name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                error(
                    400,
                    -1100,
                    &format!(
                        "Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
                    ),
                )
            })
        })
        .transpose()
}

/// A Binance-style error body.
pub(crate) fn error(status: u16, code: i64, msg: &str) -> Reply {
    let msg = serde_json::Value::from(msg);
    (
        status,
        format!(r#"{{"code":{code},"msg":{msg}}}"#).into_bytes(),
    )
}

/// Reads the `head_len` bytes of the request head (so closing does not reset the connection
/// under the client), then writes the answer, with `headers` besides the usual ones, and closes
/// the sending side.
pub(crate) fn respond(
    mut tcp: &TcpStream,
    head_len: usize,
    (status, body): Reply,
    headers: &[(&str, u64)],
) -> io::Result<()> {
    io::copy(&mut tcp.take(head_len as u64), &mut io::sink())?;
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes())?;
    tcp.write_all(&body)?;
    tcp.shutdown(std::net::Shutdown::Write)
}

/// The value of `key` in a query string, undecoded.
fn param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        pair.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

/// Decodes `%XX` escapes (clients may send `@` as `%40` and `/` as `%2F`); `None` if malformed.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(target: &str) -> Result<Route, u16> {
        ws_route(target).map_err(|(status, _)| status)
    }

    fn streams(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_endpoint_delivers_its_kinds_only() {
        use crate::market::venue;
        use kind::Route::{Market, Public};
        for (stream, route) in [
            ("ethusdt@depth", Some(Public)),
            ("ethusdt@depth5@100ms", Some(Public)),
            ("ethusdt@bookTicker", Some(Public)),
            ("ethusdt@trade", Some(Public)),
            ("ethusdt@aggTrade", Some(Market)),
            ("ethusdt@markPrice@1s", Some(Market)),
            ("ethusdt@markPrice", Some(Market)),
            ("ethusdt@forceOrder", Some(Market)),
            ("ethusdt@kline_1m", None),
            ("!serverShutdown", None),
        ] {
            for endpoint in kind::Route::ALL {
                assert_eq!(
                    delivers(venue::Market::UsdM, endpoint, stream),
                    route == Some(endpoint),
                    "{stream} on {endpoint:?}"
                );
                // Markets without routes serve what they publish on any path.
                assert_eq!(
                    delivers(venue::Market::CoinM, endpoint, stream),
                    route.is_some()
                );
                let spot_publishes = route.is_some()
                    && !stream.contains("@markPrice")
                    && !stream.contains("@forceOrder");
                assert_eq!(
                    delivers(venue::Market::Spot, endpoint, stream),
                    spot_publishes,
                    "spot: {stream}"
                );
            }
        }
    }

    #[test]
    fn websocket_paths_route_as_on_binance() {
        let both = streams(&["ethusdt@depth", "btcusdt@depth5@100ms"]);
        for (prefix, endpoint) in [
            ("", kind::Route::Public),
            ("/public", kind::Route::Public),
            ("/market", kind::Route::Market),
        ] {
            let combined = route(&format!(
                "{prefix}/stream?streams=ethusdt@depth/btcusdt@depth5@100ms"
            ));
            assert_eq!(
                combined,
                Ok(Route {
                    endpoint,
                    combined: true,
                    streams: both.clone()
                }),
                "{prefix}"
            );
            let raw = route(&format!("{prefix}/ws/ethusdt@depth/btcusdt@depth5@100ms"));
            assert_eq!(
                raw,
                Ok(Route {
                    endpoint,
                    combined: false,
                    streams: both.clone()
                }),
                "{prefix}"
            );
            assert_eq!(
                route(&format!("{prefix}/ws")),
                Ok(Route {
                    endpoint,
                    combined: false,
                    streams: vec![]
                })
            );
            assert_eq!(
                route(&format!("{prefix}/stream")),
                Ok(Route {
                    endpoint,
                    combined: true,
                    streams: vec![]
                })
            );
        }
        let encoded =
            route("/stream?streams=ethusdt%40depth%2Fbtcusdt%40depth5%40100ms&timeUnit=ms");
        assert_eq!(
            encoded,
            Ok(Route {
                endpoint: kind::Route::Public,
                combined: true,
                streams: both
            })
        );
        for missing in [
            "/",
            "/foo",
            "/publicws",
            "/public",
            "/private/ws",
            "/streams",
            "/fapi/v1/depth",
        ] {
            assert_eq!(route(missing), Err(404), "{missing}");
        }
        assert_eq!(route("/ws/eth usdt@depth"), Err(400));
        assert_eq!(route("/stream?streams=%zz"), Err(400));
    }

    #[test]
    fn heads_parse_and_spot_upgrades() {
        let get = b"GET /fapi/v1/time HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = parse_head(get).unwrap();
        assert_eq!(
            (
                head.method.as_str(),
                head.target.as_str(),
                head.upgrade,
                head.len
            ),
            ("GET", "/fapi/v1/time", false, get.len())
        );
        let ws = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nupgrade:  WebSocket \r\n\r\n";
        assert!(parse_head(ws).unwrap().upgrade);
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / SPDY\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn query_params() {
        assert_eq!(param("symbol=ETHUSDT&limit=5", "limit"), Some("5"));
        assert_eq!(param("symbol=ETHUSDT&limit=5", "symbol"), Some("ETHUSDT"));
        assert_eq!(param("symbolx=1", "symbol"), None);
        assert_eq!(param("", "symbol"), None);
    }
}
