//! The sim exchange over real loopback sockets, driven by a plain tungstenite client and a raw
//! HTTP/1.1 client. Every sim binds 127.0.0.1:0; every read has a timeout, so a broken sim fails
//! a test instead of hanging it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;

use obrec::{Fault, Faults, Rate, Sim, SimConfig};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Bytes, Message, WebSocket};

/// Longest wait for anything the sim should send; a failure, not a hang, when exceeded.
const WATCHDOG: Duration = Duration::from_secs(5);
/// Events per second per symbol in most tests: fast enough to keep tests short.
const FAST: f64 = 200.0;

fn start(config: SimConfig) -> Sim {
    Sim::start("127.0.0.1:0", config).expect("sim starts")
}

fn fast(symbols: &[&str]) -> SimConfig {
    SimConfig {
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        rate: Rate::PerSecond(FAST),
        ..SimConfig::default()
    }
}

fn with_faults(faults: Faults) -> SimConfig {
    SimConfig {
        faults,
        ..fast(&["ETHUSDT"])
    }
}

struct Client {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Client {
    fn try_open(url: &str) -> Result<Client, tungstenite::Error> {
        let (ws, _) = tungstenite::connect(url)?;
        if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
            tcp.set_read_timeout(Some(WATCHDOG)).unwrap();
        }
        Ok(Client { ws })
    }

    fn open(url: &str) -> Client {
        Client::try_open(url).unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    fn set_timeout(&self, timeout: Duration) {
        if let MaybeTlsStream::Plain(tcp) = self.ws.get_ref() {
            tcp.set_read_timeout(Some(timeout)).unwrap();
        }
    }

    fn read(&mut self) -> Message {
        self.ws.read().unwrap_or_else(|e| panic!("read: {e}"))
    }

    /// The next text frame, skipping pings and pongs.
    fn text(&mut self) -> String {
        loop {
            match self.read() {
                Message::Text(t) => return t.as_str().to_owned(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    fn json(&mut self) -> Value {
        serde_json::from_str(&self.text()).unwrap()
    }

    /// The next data frame, skipping anything else.
    fn event(&mut self) -> Value {
        loop {
            let v = self.json();
            if v.get("e").is_some() || v.get("stream").is_some() {
                return v;
            }
        }
    }

    fn events(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.event()).collect()
    }

    fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    /// The next control reply, skipping data frames.
    fn reply(&mut self) -> Value {
        loop {
            let v = self.json();
            if v.get("id").is_some() || v.get("code").is_some() {
                return v;
            }
        }
    }

    /// Reads until the connection fails, counting data frames; returns the count and the error.
    fn drain(&mut self) -> (usize, tungstenite::Error) {
        let mut frames = 0;
        loop {
            match self.ws.read() {
                Ok(Message::Text(_)) => frames += 1,
                Ok(_) => {}
                Err(e) => return (frames, e),
            }
        }
    }
}

/// `{"stream":…,"data":…}` → data; a raw payload as is.
fn data(v: &Value) -> &Value {
    v.get("data").unwrap_or(v)
}

fn ids(v: &Value) -> (u64, u64, u64) {
    let d = data(v);
    (
        d["U"].as_u64().unwrap(),
        d["u"].as_u64().unwrap(),
        d["pu"].as_u64().unwrap(),
    )
}

/// A price level parsed from `["3051.27","12.345"]`: fixed decimals, so the digits order it.
fn level(l: &Value) -> (i64, String, String) {
    let (price, qty) = (l[0].as_str().unwrap(), l[1].as_str().unwrap());
    let (int, frac) = price.split_once('.').expect("decimal price");
    assert!(
        frac.len() == 2 && qty.split_once('.').expect("decimal qty").1.len() == 3,
        "{l}"
    );
    (
        format!("{int}{frac}").parse().unwrap(),
        price.to_owned(),
        qty.to_owned(),
    )
}

fn levels(list: &Value) -> Vec<(i64, String, String)> {
    list.as_array().unwrap().iter().map(level).collect()
}

/// A raw HTTP/1.1 GET: (status, head, body).
fn http_get(sim: &Sim, target: &str) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(sim.local_addr()).unwrap();
    tcp.set_read_timeout(Some(WATCHDOG)).unwrap();
    write!(tcp, "GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

fn rest_json(sim: &Sim, target: &str) -> Value {
    let (status, _, body) = http_get(sim, target);
    assert_eq!(status, 200, "{target}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn upgrade_status(url: &str) -> u16 {
    match Client::try_open(url) {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{url}: {e}"),
        Ok(_) => 101,
    }
}

#[test]
fn combined_stream_wraps_every_stream_of_an_event() {
    let sim = start(fast(&["ETHUSDT"]));
    let mut c = Client::open(&format!(
        "{}/stream?streams=ethusdt@depth5@100ms/ethusdt@depth@100ms",
        sim.ws_url()
    ));
    let frames = c.events(40);
    let mut by_stream: HashMap<&str, Vec<u64>> = HashMap::new();
    for f in &frames {
        let d = &f["data"];
        assert_eq!(
            (d["e"].as_str(), d["s"].as_str()),
            (Some("depthUpdate"), Some("ETHUSDT")),
            "{f}"
        );
        let (e, t) = (d["E"].as_u64().unwrap(), d["T"].as_u64().unwrap());
        assert!(e >= t && e - t <= 2, "T trails E by 0-2 ms: {f}");
        by_stream
            .entry(f["stream"].as_str().unwrap())
            .or_default()
            .push(ids(f).1);
    }
    assert_eq!(by_stream.len(), 2, "both streams arrive");
    let (partial, diff) = (
        &by_stream["ethusdt@depth5@100ms"],
        &by_stream["ethusdt@depth@100ms"],
    );
    let common = partial.iter().filter(|u| diff.contains(u)).count();
    assert!(
        common >= 15,
        "each event is on both streams with the same u ({common} shared)"
    );
}

#[test]
fn raw_paths_and_route_prefixes() {
    let sim = start(fast(&["ETHUSDT", "BTCUSDT"]));
    for prefix in ["", "/public"] {
        let mut raw = Client::open(&format!("{}{prefix}/ws/ethusdt@depth10", sim.ws_url()));
        let payload = raw.event();
        assert!(
            payload.get("stream").is_none(),
            "raw payloads are bare: {payload}"
        );
        assert_eq!(levels(&payload["b"]).len(), 10);

        let mut combined = Client::open(&format!(
            "{}{prefix}/stream?streams=btcusdt@depth@100ms",
            sim.ws_url()
        ));
        let frame = combined.event();
        assert_eq!(
            (frame["stream"].as_str(), frame["data"]["s"].as_str()),
            (Some("btcusdt@depth@100ms"), Some("BTCUSDT"))
        );
    }
    let mut two = Client::open(&format!(
        "{}/ws/ethusdt@depth5/btcusdt@depth5",
        sim.ws_url()
    ));
    let symbols: Vec<String> = two
        .events(20)
        .iter()
        .map(|p| p["s"].as_str().unwrap().to_owned())
        .collect();
    assert!(symbols.iter().any(|s| s == "ETHUSDT") && symbols.iter().any(|s| s == "BTCUSDT"));
}

#[test]
fn unknown_paths_are_404() {
    let sim = start(fast(&["ETHUSDT"]));
    for path in ["/", "/nope", "/private/ws", "/api/v3/depth?symbol=ETHUSDT"] {
        assert_eq!(http_get(&sim, path).0, 404, "{path}");
    }
    for path in ["/nope", "/streams?streams=ethusdt@depth", "/fapi/v1/depth"] {
        assert_eq!(
            upgrade_status(&format!("{}{path}", sim.ws_url())),
            404,
            "{path}"
        );
    }
    assert_eq!(
        upgrade_status(&format!("{}/ws/eth%20usdt@depth", sim.ws_url())),
        400
    );
}

#[test]
fn subscribe_list_and_unsubscribe() {
    let sim = start(fast(&["ETHUSDT", "BTCUSDT"]));
    let mut c = Client::open(&format!("{}/stream", sim.ws_url()));
    c.set_timeout(Duration::from_millis(200));
    match c.ws.read() {
        Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("nothing is sent before a subscription, got {other:?}"),
    }
    c.set_timeout(WATCHDOG);

    c.send(r#"{"method":"SUBSCRIBE","params":["ethusdt@depth5","ethusdt@aggTrade"],"id":1}"#);
    assert_eq!(
        c.text(),
        r#"{"result":null,"id":1}"#,
        "the ACK comes before any data"
    );
    assert_eq!(c.event()["stream"], "ethusdt@depth5");

    c.send(r#"{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":2}"#);
    assert_eq!(c.reply(), json!({"result": null, "id": 2}));
    c.send(r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#);
    let all =
        json!({"result": ["ethusdt@depth5", "ethusdt@aggTrade", "btcusdt@depth@100ms"], "id": 3});
    assert_eq!(c.reply(), all);

    c.send(r#"{"method":"UNSUBSCRIBE","params":["ethusdt@depth5"],"id":4}"#);
    assert_eq!(c.reply(), json!({"result": null, "id": 4}));
    let after: Vec<Value> = c.events(30);
    assert!(
        after.iter().all(|f| f["stream"] == "btcusdt@depth@100ms"),
        "nothing of a stream follows its UNSUBSCRIBE ACK"
    );
    c.send(r#"{"method":"LIST_SUBSCRIPTIONS","id":5}"#);
    assert_eq!(
        c.reply(),
        json!({"result": ["ethusdt@aggTrade", "btcusdt@depth@100ms"], "id": 5})
    );
}

#[test]
fn control_errors_follow_binance_and_keep_the_connection() {
    let sim = start(fast(&["ETHUSDT"]));
    let mut c = Client::open(&format!("{}/ws", sim.ws_url()));
    c.send("{not json");
    let e = c.reply();
    assert_eq!(e["code"], 3);
    assert!(
        e["msg"].as_str().unwrap().starts_with("Invalid JSON: "),
        "{e}"
    );

    c.send(r#"{"method":"FETCH","id":7}"#);
    let e = c.reply();
    assert_eq!(
        (e["code"].as_i64(), e["id"].as_u64()),
        (Some(2), Some(7)),
        "{e}"
    );
    assert!(
        e["msg"].as_str().unwrap().starts_with("Invalid request: "),
        "{e}"
    );

    c.send(r#"{"method":"SUBSCRIBE","params":["eth usdt@depth"],"id":8}"#);
    assert_eq!(c.reply()["code"], 2);
    c.send(r#"{"method":"SUBSCRIBE","params":"ethusdt@depth","id":9}"#);
    assert_eq!(c.reply()["code"], 2);

    // A well-formed name the sim has no data for is acknowledged and stays silent.
    c.send(r#"{"method":"SUBSCRIBE","params":["ethusdt@aggTrade","xrpusdt@depth","ethusdt@depth5"],"id":10}"#);
    assert_eq!(c.reply(), json!({"result": null, "id": 10}));
    let frames = c.events(20);
    assert!(
        frames.iter().all(|p| levels(&p["b"]).len() == 5),
        "only ethusdt@depth5 sends"
    );
}

#[test]
fn two_connections_receive_identical_events() {
    let sim = start(fast(&["ETHUSDT"]));
    let url = format!("{}/ws/ethusdt@depth@100ms", sim.ws_url());
    let (mut a, mut b) = (Client::open(&url), Client::open(&url));
    let texts = |c: &mut Client| -> BTreeMap<u64, String> {
        (0..40)
            .map(|_| c.text())
            .map(|t| (ids(&serde_json::from_str(&t).unwrap()).1, t))
            .collect()
    };
    let (ta, tb) = (texts(&mut a), texts(&mut b));
    let common: Vec<u64> = ta.keys().filter(|u| tb.contains_key(u)).copied().collect();
    assert!(
        common.len() >= 30,
        "the connections overlap ({} shared events)",
        common.len()
    );
    for u in common {
        assert_eq!(
            ta[&u], tb[&u],
            "event u={u} is byte-identical on both connections"
        );
    }
}

#[test]
fn ids_chain_per_stream_and_are_not_dense() {
    let sim = start(fast(&["ETHUSDT", "BTCUSDT"]));
    let streams = "ethusdt@depth@100ms/btcusdt@depth@100ms/ethusdt@depth20@100ms/btcusdt@depth5";
    let mut c = Client::open(&format!("{}/stream?streams={streams}", sim.ws_url()));
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut u_by_symbol: HashMap<String, Vec<u64>> = HashMap::new();
    let (mut skips, mut checked) = (0, 0);
    for f in c.events(400) {
        let (first, u, pu) = ids(&f);
        assert!(u >= first && first > pu, "{f}");
        if first > pu + 1 {
            skips += 1;
        }
        if let Some(prev) = last.insert(f["stream"].as_str().unwrap().to_owned(), u) {
            assert_eq!(pu, prev, "pu is the previous u of the stream: {f}");
            checked += 1;
        }
        u_by_symbol
            .entry(f["data"]["s"].as_str().unwrap().to_owned())
            .or_default()
            .push(u);
    }
    assert!(
        checked > 350 && skips > 100,
        "checked {checked}, skipping ids {skips}"
    );
    // One sequence per symbol: the partial and diff streams of a symbol share their ids.
    for us in u_by_symbol.values() {
        let distinct: std::collections::BTreeSet<_> = us.iter().collect();
        assert!(
            distinct.len() * 2 <= us.len() + 2,
            "both streams show the same events"
        );
    }
}

#[test]
fn partial_depth_has_n_sorted_uncrossed_levels() {
    let sim = start(fast(&["ETHUSDT", "BTCUSDT"]));
    for n in [5, 10, 20] {
        let mut c = Client::open(&format!(
            "{}/ws/ethusdt@depth{n}@100ms/btcusdt@depth{n}@500ms",
            sim.ws_url()
        ));
        for p in c.events(10) {
            let (bids, asks) = (levels(&p["b"]), levels(&p["a"]));
            assert_eq!((bids.len(), asks.len()), (n, n), "{p}");
            assert!(
                bids.windows(2).all(|w| w[0].0 > w[1].0),
                "bids best first: {p}"
            );
            assert!(
                asks.windows(2).all(|w| w[0].0 < w[1].0),
                "asks best first: {p}"
            );
            assert!(bids[0].0 < asks[0].0, "not crossed: {p}");
        }
    }
}

/// A local book kept with Binance's procedure.
#[derive(Default)]
struct LocalBook {
    sides: [BTreeMap<i64, (String, String)>; 2],
}

impl LocalBook {
    fn from_snapshot(s: &Value) -> LocalBook {
        let mut book = LocalBook::default();
        book.apply(&s["bids"], &s["asks"]);
        book
    }

    fn apply(&mut self, bids: &Value, asks: &Value) {
        for (side, list) in self.sides.iter_mut().zip([bids, asks]) {
            for (key, price, qty) in levels(list) {
                if qty.bytes().all(|b| b == b'0' || b == b'.') {
                    side.remove(&key);
                } else {
                    side.insert(key, (price, qty));
                }
            }
        }
    }

    /// The top `n` levels a side as `[[price, qty], …]`, best first.
    fn top(&self, n: usize) -> (Value, Value) {
        let list = |it: &mut dyn Iterator<Item = &(String, String)>| {
            json!(it.take(n).map(|(p, q)| json!([p, q])).collect::<Vec<_>>())
        };
        (
            list(&mut self.sides[0].values().rev()),
            list(&mut self.sides[1].values()),
        )
    }
}

#[test]
fn snapshot_plus_diffs_rebuild_the_next_snapshot() {
    let sim = start(fast(&["ETHUSDT"]));
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth@100ms", sim.ws_url()));
    // 1-2: open the stream and buffer; 3: the snapshot once something is buffered.
    let mut buffered = VecDeque::from([c.event()]);
    let snap = rest_json(&sim, "/fapi/v1/depth?symbol=ETHUSDT&limit=1000");
    assert_eq!(
        (levels(&snap["bids"]).len(), levels(&snap["asks"]).len()),
        (1000, 1000)
    );
    let last_update_id = snap["lastUpdateId"].as_u64().unwrap();
    let mut book = LocalBook::from_snapshot(&snap);
    let mut next = || buffered.pop_front().unwrap_or_else(|| c.event());
    // 4: drop events before the snapshot; 5: the first one applied straddles it.
    let mut last_u = loop {
        let event = next();
        let (first, u, _) = ids(&event);
        if u < last_update_id {
            continue;
        }
        assert!(
            first <= last_update_id && last_update_id <= u,
            "{event} vs {last_update_id}"
        );
        book.apply(&event["b"], &event["a"]);
        break u;
    };
    // 6: then each pu is the previous u.
    let mut apply = |event: Value, last_u: &mut u64| {
        let (_, u, pu) = ids(&event);
        assert_eq!(pu, *last_u);
        book.apply(&event["b"], &event["a"]);
        *last_u = u;
    };
    for _ in 0..30 {
        apply(next(), &mut last_u);
    }
    let later = rest_json(&sim, "/fapi/v1/depth?symbol=ETHUSDT&limit=100");
    let later_id = later["lastUpdateId"].as_u64().unwrap();
    while last_u < later_id {
        apply(next(), &mut last_u);
    }
    assert_eq!(
        last_u, later_id,
        "the snapshot's lastUpdateId is an event's u"
    );
    assert_eq!(
        book.top(100),
        (later["bids"].clone(), later["asks"].clone())
    );
}

#[test]
fn rest_endpoints_and_errors() {
    let sim = start(fast(&["ETHUSDT", "BTCUSDT"]));
    assert_eq!(sim.rest_url(), format!("http://{}", sim.local_addr()));
    let (status, head, body) = http_get(&sim, "/fapi/v1/time");
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: application/json") && head.contains("Connection: close"),
        "{head}"
    );
    let server_ms = serde_json::from_str::<Value>(&body).unwrap()["serverTime"]
        .as_u64()
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(server_ms.abs_diff(now_ms) < 5_000);

    for (target, levels_a_side) in [
        ("symbol=BTCUSDT&limit=5", 5),
        ("symbol=ethusdt&limit=50", 50),
        ("symbol=ETHUSDT", 500),
    ] {
        let snap = rest_json(&sim, &format!("/fapi/v1/depth?{target}"));
        let (bids, asks) = (levels(&snap["bids"]), levels(&snap["asks"]));
        assert_eq!(
            (bids.len(), asks.len()),
            (levels_a_side, levels_a_side),
            "{target}"
        );
        assert!(bids.windows(2).all(|w| w[0].0 > w[1].0) && bids[0].0 < asks[0].0);
        assert!(
            snap["lastUpdateId"].as_u64().unwrap() > 0
                && snap["E"].as_u64().unwrap() >= snap["T"].as_u64().unwrap()
        );
    }
    for (target, body) in [
        (
            "symbol=ETHUSDT&limit=7",
            r#"{"code":-4021,"msg":"7 is not valid depth limit"}"#,
        ),
        (
            "symbol=XRPUSDT&limit=5",
            r#"{"code":-1121,"msg":"Invalid symbol."}"#,
        ),
    ] {
        let (status, _, got) = http_get(&sim, &format!("/fapi/v1/depth?{target}"));
        assert_eq!((status, got.as_str()), (400, body));
    }
    let (status, _, body) = http_get(&sim, "/fapi/v1/depth?limit=5");
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap()["code"].as_i64()
        ),
        (400, Some(-1102))
    );
    assert_eq!(sim.stats().rest_requests, 7);
}

#[test]
fn server_pings_carry_a_payload_and_client_pings_get_pongs() {
    let sim = start(SimConfig {
        ping_interval: Duration::from_millis(100),
        ..fast(&["ETHUSDT"])
    });
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth5", sim.ws_url()));
    let ping = loop {
        if let Message::Ping(payload) = c.read() {
            break payload;
        }
    };
    assert!(
        !ping.is_empty() && ping.iter().all(u8::is_ascii_digit),
        "{ping:?}"
    );
    c.ws.send(Message::Ping(Bytes::from_static(b"hello")))
        .unwrap();
    let pong = loop {
        if let Message::Pong(payload) = c.read() {
            break payload;
        }
    };
    assert_eq!(&pong[..], b"hello");
}

#[test]
fn ignored_pings_get_no_pong() {
    let sim = start(with_faults(Faults {
        ignore_pings: true,
        ..Faults::default()
    }));
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth5", sim.ws_url()));
    c.ws.send(Message::Ping(Bytes::from_static(b"hello")))
        .unwrap();
    for _ in 0..40 {
        match c.read() {
            Message::Pong(_) => panic!("a pong despite --ignore-pings"),
            Message::Text(_) | Message::Ping(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sim.stats().injected(Fault::IgnoredPing), 1);
}

#[test]
fn gaps_break_the_pu_chain_for_everyone() {
    let sim = start(with_faults(Faults {
        gap_every: Some(5),
        ..Faults::default()
    }));
    let url = format!("{}/ws/ethusdt@depth@100ms", sim.ws_url());
    let (mut a, mut b) = (Client::open(&url), Client::open(&url));
    let breaks = |c: &mut Client| -> Vec<u64> {
        let events: Vec<_> = c.events(41).iter().map(ids).collect();
        events
            .windows(2)
            .filter(|w| w[1].2 != w[0].1)
            .map(|w| w[1].1)
            .collect()
    };
    let (ga, gb) = (breaks(&mut a), breaks(&mut b));
    assert!(
        (8..=11).contains(&ga.len()),
        "one event in five is dropped: {} breaks in 40",
        ga.len()
    );
    assert!(
        ga.iter().filter(|u| gb.contains(u)).count() >= 5,
        "the same events are missing on both connections"
    );
    assert!(sim.stats().injected(Fault::Gap) >= 10);
}

#[test]
fn close_after_sends_n_frames_then_a_close_frame() {
    let sim = start(with_faults(Faults {
        close_after: Some(3),
        ..Faults::default()
    }));
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth5", sim.ws_url()));
    c.events(3);
    match c.read() {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a Close frame, got {other:?}"),
    }
    let (frames, end) = c.drain();
    assert_eq!(frames, 0);
    assert!(matches!(end, tungstenite::Error::ConnectionClosed), "{end}");
    assert_eq!(sim.stats().injected(Fault::Close), 1);
}

#[test]
fn reset_after_ends_with_a_tcp_reset() {
    let sim = start(with_faults(Faults {
        reset_after: Some(3),
        ..Faults::default()
    }));
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth5", sim.ws_url()));
    let (frames, end) = c.drain();
    assert!(frames <= 3);
    assert!(
        matches!(&end, tungstenite::Error::Io(e) if e.kind() == ErrorKind::ConnectionReset),
        "{end}"
    );
    assert_eq!(sim.stats().injected(Fault::Reset), 1);
}

#[test]
fn eof_after_closes_without_a_close_frame() {
    let sim = start(with_faults(Faults {
        eof_after: Some(3),
        ..Faults::default()
    }));
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth5", sim.ws_url()));
    let (frames, end) = c.drain();
    assert_eq!(frames, 3);
    use tungstenite::error::ProtocolError::ResetWithoutClosingHandshake;
    assert!(
        matches!(
            end,
            tungstenite::Error::Protocol(ResetWithoutClosingHandshake)
        ),
        "{end}"
    );
    assert_eq!(sim.stats().injected(Fault::Eof), 1);
}

#[test]
fn a_stall_silences_data_but_answers_pings() {
    let stall = Duration::from_millis(600);
    let sim = start(with_faults(Faults {
        stall_after: Some(3),
        stall_for: Some(stall),
        ..Faults::default()
    }));
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth@100ms", sim.ws_url()));
    let last_u = ids(&c.events(3)[2]).1;
    let stalled_at = Instant::now();
    c.ws.send(Message::Ping(Bytes::from_static(b"alive?")))
        .unwrap();
    let pong = loop {
        match c.read() {
            Message::Pong(p) => break p,
            Message::Ping(_) => {}
            other => panic!("only a pong while stalled, got {other:?}"),
        }
    };
    assert_eq!(&pong[..], b"alive?");
    let resumed = c.event();
    assert!(
        stalled_at.elapsed() >= stall - Duration::from_millis(100),
        "resumed after {:?}",
        stalled_at.elapsed()
    );
    assert_ne!(ids(&resumed).2, last_u, "events during the stall are lost");
    assert_eq!(sim.stats().injected(Fault::Stall), 1);
}

#[test]
fn junk_frames_follow_every_nth_data_frame() {
    let faults = Faults {
        garbage_every: Some(2),
        binary_every: Some(3),
        oversized_every: Some(4),
        oversized_bytes: 100_000,
        ..Faults::default()
    };
    let sim = start(with_faults(faults));
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth5", sim.ws_url()));
    let mut kinds = String::new();
    while kinds.matches('D').count() < 7 {
        kinds.push(match c.read() {
            Message::Text(t) if t.len() == 100_000 => 'O',
            Message::Text(t) => match serde_json::from_str::<Value>(t.as_str()) {
                Ok(v) if v["e"] == "depthUpdate" => 'D',
                Ok(v) => panic!("unexpected JSON {v}"),
                Err(_) => 'G',
            },
            Message::Binary(_) => 'B',
            Message::Ping(_) => continue,
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(kinds, "DDGDBDGODDGBD");
    // Counted when decided: the writer may be a few frames ahead of what was read.
    let stats = sim.stats();
    let counts = [Fault::Garbage, Fault::Binary, Fault::Oversized].map(|f| stats.injected(f));
    assert!(
        counts[0] >= 3 && counts[1] >= 2 && counts[2] >= 1,
        "{counts:?}"
    );
}

#[test]
fn connections_close_at_their_lifetime() {
    let lifetime = Duration::from_millis(300);
    let sim = start(with_faults(Faults {
        conn_lifetime: Some(lifetime),
        ..Faults::default()
    }));
    let opened = Instant::now();
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth5", sim.ws_url()));
    let close = loop {
        match c.read() {
            Message::Close(frame) => break frame,
            Message::Text(_) | Message::Ping(_) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    assert!(
        opened.elapsed() >= lifetime && opened.elapsed() < lifetime * 5,
        "{:?}",
        opened.elapsed()
    );
    assert_eq!(sim.stats().injected(Fault::Lifetime), 1);
}

#[test]
fn muted_symbols_are_acknowledged_and_silent() {
    let faults = Faults {
        mute: vec!["BTCUSDT".into()],
        ..Faults::default()
    };
    let sim = start(SimConfig {
        faults,
        ..fast(&["ETHUSDT", "BTCUSDT"])
    });
    let mut c = Client::open(&format!(
        "{}/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms",
        sim.ws_url()
    ));
    c.send(r#"{"method":"SUBSCRIBE","params":["btcusdt@depth5"],"id":1}"#);
    assert_eq!(c.reply(), json!({"result": null, "id": 1}));
    assert!(c.events(30).iter().all(|f| f["data"]["s"] == "ETHUSDT"));
    assert_eq!(sim.stats().injected(Fault::Muted), 2);
}

#[test]
fn the_first_upgrades_are_rejected() {
    let faults = Faults {
        reject_upgrades: 2,
        reject_status: 429,
        ..Faults::default()
    };
    let sim = start(with_faults(faults));
    let url = format!("{}/ws/ethusdt@depth5", sim.ws_url());
    assert_eq!([upgrade_status(&url), upgrade_status(&url)], [429, 429]);
    Client::open(&url).event();
    let stats = sim.stats();
    assert_eq!(
        (stats.injected(Fault::RejectedUpgrade), stats.connections),
        (2, 1)
    );
}

#[test]
fn sent_frames_match_what_the_client_received() {
    let sim = start(SimConfig {
        record_sent: true,
        ..fast(&["ETHUSDT"])
    });
    let mut c = Client::open(&format!(
        "{}/stream?streams=ethusdt@depth5/ethusdt@depth",
        sim.ws_url()
    ));
    let mut received: Vec<String> = (0..20).map(|_| c.text()).collect();
    // Close, and keep everything that was in flight: then sent and received are complete.
    c.ws.close(None).unwrap();
    loop {
        match c.ws.read() {
            Ok(Message::Text(t)) => received.push(t.as_str().to_owned()),
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let sent = sim.sent();
    assert_eq!(sent.len(), received.len());
    for (text, s) in received.iter().zip(&sent) {
        assert_eq!(
            *text,
            format!(r#"{{"stream":"{}","data":{}}}"#, s.stream, s.payload)
        );
        let payload: Value = serde_json::from_str(&s.payload).unwrap();
        assert_eq!(
            (s.conn, s.symbol.as_str(), s.u, s.pu),
            (1, "ETHUSDT", ids(&payload).1, ids(&payload).2)
        );
    }
    assert!(sent.windows(2).all(|w| w[0].sent_ns <= w[1].sent_ns));
    assert_eq!(sim.stats().frames_sent, sent.len() as u64);
}

#[test]
fn max_rate_streams_an_unbroken_chain() {
    let sim = start(SimConfig {
        rate: Rate::Max,
        ..SimConfig::default()
    });
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth@0ms", sim.ws_url()));
    let events: Vec<_> = c.events(5_000).iter().map(ids).collect();
    assert!(
        events.windows(2).all(|w| w[1].2 == w[0].1),
        "pu == previous u at max rate"
    );
}

#[test]
fn max_rate_leaves_room_for_rest_and_subscriptions() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let sim = start(SimConfig {
        rate: Rate::Max,
        ..SimConfig::default()
    });
    let url = format!("{}/ws/ethusdt@depth@0ms", sim.ws_url());
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut c = Client::open(&url);
            let mut frames = 0;
            while !done.load(Ordering::Relaxed) {
                c.event();
                frames += 1;
            }
            frames
        })
    };
    let mut other = Client::open(&format!("{}/ws", sim.ws_url()));
    while sim.stats().frames_sent < 1_000 {
        std::thread::sleep(Duration::from_millis(1));
    }
    for id in 1..=5 {
        let began = Instant::now();
        let snap = rest_json(&sim, "/fapi/v1/depth?symbol=ETHUSDT&limit=1000");
        assert_eq!(levels(&snap["bids"]).len(), 1000);
        other.send(&format!(
            r#"{{"method":"SUBSCRIBE","params":["ethusdt@depth5"],"id":{id}}}"#
        ));
        assert_eq!(other.text(), format!(r#"{{"result":null,"id":{id}}}"#));
        other.event();
        other.send(&format!(
            r#"{{"method":"UNSUBSCRIBE","params":["ethusdt@depth5"],"id":{id}}}"#
        ));
        assert_eq!(other.reply()["id"], id);
        assert!(
            began.elapsed() < Duration::from_millis(500),
            "starved for {:?}",
            began.elapsed()
        );
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 1_000, "the stream kept flowing");
}

#[test]
fn a_client_close_is_answered_with_a_close() {
    let sim = start(fast(&["ETHUSDT"]));
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth5", sim.ws_url()));
    c.event();
    c.ws.close(None).unwrap();
    let (_, end) = c.drain();
    assert!(
        matches!(end, tungstenite::Error::ConnectionClosed),
        "a clean close handshake, got {end}"
    );
}

#[test]
fn a_client_that_stops_reading_is_cut_at_a_fixed_rate() {
    let sim = start(SimConfig {
        rate: Rate::PerSecond(50_000.0),
        ..SimConfig::default()
    });
    // depth20 frames are ~1 KB: the queue and the socket buffers fill within a second or two.
    let _lazy = Client::open(&format!("{}/ws/ethusdt@depth20", sim.ws_url()));
    let began = Instant::now();
    while sim.stats().slow_clients == 0 {
        assert!(
            began.elapsed() < WATCHDOG,
            "a client that reads nothing is never cut"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut fresh = Client::open(&format!("{}/ws/ethusdt@depth5", sim.ws_url()));
    fresh.events(10);
}

#[test]
fn shutdown_closes_connections_and_the_port() {
    let sim = start(fast(&["ETHUSDT"]));
    let addr = sim.local_addr();
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth5", sim.ws_url()));
    c.event();
    let began = Instant::now();
    sim.shutdown();
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        began.elapsed()
    );
    let close = loop {
        match c.read() {
            Message::Close(frame) => break frame,
            _ => continue,
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens after shutdown"
    );
}

#[test]
fn obrec_sim_serves_until_sigterm_and_logs_what_it_sent() {
    let dir = tempfile::tempdir().unwrap();
    let sent_log = dir.path().join("sent.ndjson");
    let sent_arg = format!("--sent-log={}", sent_log.display());
    let (mut child, port) =
        common::spawn_sim(dir.path(), &["--rate=200", "--symbol=ethusdt", &sent_arg]);
    let mut c = Client::open(&format!("ws://127.0.0.1:{port}/ws/ethusdt@depth5"));
    let received: Vec<String> = (0..10).map(|_| c.text()).collect();
    common::terminate(&mut child, WATCHDOG);
    let logged: Vec<Value> = std::fs::read_to_string(&sent_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(logged.len() >= 10);
    for (text, line) in received.iter().zip(&logged) {
        assert_eq!(
            (line["conn"].as_u64(), line["stream"].as_str()),
            (Some(1), Some("ethusdt@depth5"))
        );
        assert_eq!(line["data"], serde_json::from_str::<Value>(text).unwrap());
    }
}

/// A combined frame's stream, its payload as text, and the payload parsed.
fn split(text: &str) -> (String, String, Value) {
    let v: Value = serde_json::from_str(text).unwrap();
    let stream = v["stream"].as_str().unwrap().to_owned();
    let start = text.find(",\"data\":").unwrap() + ",\"data\":".len();
    let payload = text[start..text.len() - 1].to_owned();
    (stream, payload, v["data"].clone())
}

/// Reads a combined-stream connection until `done` holds for what it got by stream, or `limit`
/// passes; asserts the 2026 fields on every payload: `ps` right after the symbol, `"st":1` last.
fn collect(
    c: &mut Client,
    limit: Duration,
    mut done: impl FnMut(&HashMap<String, Vec<Value>>) -> bool,
) -> HashMap<String, Vec<Value>> {
    let began = Instant::now();
    let mut got: HashMap<String, Vec<Value>> = HashMap::new();
    while !done(&got) && began.elapsed() < limit {
        let (stream, payload, data) = split(&c.text());
        let symbol = data["s"].as_str().or(data["o"]["s"].as_str()).unwrap();
        assert!(
            payload.contains(&format!(r#""s":"{symbol}","ps":"{symbol}""#))
                && payload.ends_with(r#","st":1}"#),
            "2026 fields: {payload}"
        );
        got.entry(stream).or_default().push(data);
    }
    got
}

fn ids_of(events: &[Value], key: &str) -> Vec<u64> {
    events.iter().map(|e| e[key].as_u64().unwrap()).collect()
}

#[test]
fn every_kind_arrives_on_its_route_with_rising_ids() {
    let sim = start(fast(&["BTCUSDT"]));
    let public = "btcusdt@depth@100ms/btcusdt@trade/btcusdt@bookTicker";
    let market = "btcusdt@aggTrade/btcusdt@markPrice@1s/btcusdt@forceOrder";
    let mut p = Client::open(&format!("{}/public/stream?streams={public}", sim.ws_url()));
    let mut m = Client::open(&format!("{}/market/stream?streams={market}", sim.ws_url()));
    let got = collect(&mut p, WATCHDOG, |got| {
        ["btcusdt@trade", "btcusdt@bookTicker"]
            .iter()
            .all(|s| got.get(*s).is_some_and(|e| e.len() >= 200))
    });
    let trades = &got["btcusdt@trade"];
    let t = ids_of(trades, "t");
    assert!(
        t.windows(2).all(|w| w[1] == w[0] + 1),
        "trade ids are dense"
    );
    assert!(
        trades
            .iter()
            .all(|e| e["e"] == "trade" && e["X"] == "MARKET" && e["m"].is_boolean())
    );
    let tickers = &got["btcusdt@bookTicker"];
    let u = ids_of(tickers, "u");
    assert!(u.windows(2).all(|w| w[1] > w[0]), "bookTicker u rises");
    let depth_u: BTreeSet<u64> = ids_of(&got["btcusdt@depth@100ms"], "u")
        .into_iter()
        .collect();
    assert!(
        u.iter().filter(|u| depth_u.contains(u)).count() >= u.len() - 1,
        "each bookTicker is a depth event's change"
    );
    for e in tickers {
        let (bid, ask) = (
            level(&json!([e["b"], e["B"]])).0,
            level(&json!([e["a"], e["A"]])).0,
        );
        assert!(bid < ask, "{e}");
    }

    let got = collect(&mut m, WATCHDOG, |got| {
        got.get("btcusdt@markPrice@1s")
            .is_some_and(|e| e.len() >= 3)
    });
    let aggs = &got["btcusdt@aggTrade"];
    assert!(aggs.len() >= 50, "{} aggTrades", aggs.len());
    assert!(
        ids_of(aggs, "a").windows(2).all(|w| w[1] == w[0] + 1),
        "a is dense"
    );
    let (f, l) = (ids_of(aggs, "f"), ids_of(aggs, "l"));
    assert!(
        (1..aggs.len()).all(|i| f[i] == l[i - 1] + 1 && f[i] <= l[i]),
        "aggregates cover consecutive trade ids"
    );
    // One at the first event of each second: its time wanders with the events' (and, on a
    // loaded machine, the pump's lateness), never past the recorder's rule of twice the cadence.
    let marks = ids_of(&got["btcusdt@markPrice@1s"], "E");
    assert!(
        marks
            .windows(2)
            .all(|w| (1..2_000).contains(&(w[1] - w[0]))),
        "a mark price a second: {marks:?}"
    );
    let mean = (marks[marks.len() - 1] - marks[0]) / (marks.len() as u64 - 1);
    assert!(
        (900..1_100).contains(&mean),
        "a mark price a second: {marks:?}"
    );
    for e in got.get("btcusdt@forceOrder").into_iter().flatten() {
        assert_eq!(
            (e["e"].as_str(), e["o"]["X"].as_str()),
            (Some("forceOrder"), Some("FILLED"))
        );
    }
}

#[test]
fn a_stream_on_the_wrong_route_is_acknowledged_and_silent() {
    let sim = start(fast(&["BTCUSDT"]));
    let mut c = Client::open(&format!(
        "{}/public/stream?streams=btcusdt@aggTrade/btcusdt@trade",
        sim.ws_url()
    ));
    c.send(
        r#"{"method":"SUBSCRIBE","params":["btcusdt@markPrice@1s","btcusdt@bookTicker"],"id":1}"#,
    );
    assert_eq!(c.reply(), json!({"result": null, "id": 1}));
    c.send(r#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#);
    let listed = json!({"result": ["btcusdt@aggTrade", "btcusdt@trade",
        "btcusdt@markPrice@1s", "btcusdt@bookTicker"], "id": 2});
    assert_eq!(c.reply(), listed);
    // Over more than a mark price's second: only the /public streams ever arrive.
    let got = collect(&mut c, Duration::from_millis(1_500), |_| false);
    let mut streams: Vec<&str> = got.keys().map(String::as_str).collect();
    streams.sort_unstable();
    assert_eq!(streams, ["btcusdt@bookTicker", "btcusdt@trade"]);
    assert!(got["btcusdt@trade"].len() >= 50);

    // A path without a route is /public; /market sends none of the /public kinds.
    let mut raw = Client::open(&format!(
        "{}/ws/btcusdt@aggTrade/btcusdt@trade",
        sim.ws_url()
    ));
    assert!(raw.events(100).iter().all(|e| e["e"] == "trade"));
    let mut market = Client::open(&format!(
        "{}/market/ws/btcusdt@depth5/btcusdt@trade/btcusdt@aggTrade",
        sim.ws_url()
    ));
    assert!(market.events(50).iter().all(|e| e["e"] == "aggTrade"));
}

#[test]
fn a_muted_stream_is_acknowledged_and_silent_while_the_others_flow() {
    let sim = start(SimConfig {
        faults: Faults {
            mute_streams: vec!["btcusdt@trade".into()],
            ..Faults::default()
        },
        ..fast(&["BTCUSDT"])
    });
    let mut c = Client::open(&format!("{}/public/stream", sim.ws_url()));
    c.send(r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"],"id":1}"#);
    assert_eq!(c.reply(), json!({"result": null, "id": 1}));
    let got = collect(&mut c, WATCHDOG, |got| {
        got.get("btcusdt@bookTicker")
            .is_some_and(|e| e.len() >= 200)
    });
    assert_eq!(got.len(), 1, "only bookTicker flows: {:?}", got.keys());
    assert_eq!(sim.stats().injected(Fault::MutedStream), 1);
}

#[test]
fn trade_gaps_skip_ids_on_trade_and_aggtrade_for_every_client() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = common::spawn_sim(
        dir.path(),
        &["--rate=200", "--symbol=btcusdt", "--trade-gap-every=4"],
    );
    let url = |path: &str| format!("ws://127.0.0.1:{port}{path}");
    let trades = url("/public/stream?streams=btcusdt@trade");
    let (mut a, mut b) = (Client::open(&trades), Client::open(&trades));
    let mut m = Client::open(&url("/market/stream?streams=btcusdt@aggTrade"));
    let skipped = |c: &mut Client| -> Vec<u64> {
        let got = collect(c, WATCHDOG, |got| {
            got.values().next().is_some_and(|e| e.len() >= 200)
        });
        let t = ids_of(got.values().next().unwrap(), "t");
        assert!(
            t.windows(2).all(|w| w[1] - w[0] <= 2),
            "one trade in four is missing"
        );
        t.windows(2)
            .filter(|w| w[1] != w[0] + 1)
            .map(|w| w[0] + 1)
            .collect()
    };
    let (ga, gb) = (skipped(&mut a), skipped(&mut b));
    // 200 trades received of about 267 made: one gap after every three.
    assert!(
        (60..=72).contains(&ga.len()),
        "{} gaps in 200 trades",
        ga.len()
    );
    assert!(
        ga.iter().filter(|t| gb.contains(t)).count() >= 20,
        "the same trades are missing on both connections"
    );
    let got = collect(&mut m, WATCHDOG, |got| {
        got.values().next().is_some_and(|e| e.len() >= 100)
    });
    let aggs = got.values().next().unwrap();
    assert!(ids_of(aggs, "a").windows(2).all(|w| w[1] == w[0] + 1));
    let (f, l) = (ids_of(aggs, "f"), ids_of(aggs, "l"));
    let lost: Vec<u64> = (1..aggs.len())
        .filter(|&i| f[i] != l[i - 1] + 1)
        .map(|i| l[i - 1] + 1)
        .collect();
    assert!(
        lost.iter().filter(|t| ga.contains(t)).count() >= 10,
        "aggTrade loses the trades @trade skipped: {lost:?}"
    );
    assert!(
        (1..aggs.len()).all(|i| f[i] <= l[i - 1] + 2),
        "only the withheld trade is missing between aggregates"
    );
    common::terminate(&mut child, WATCHDOG);
}

#[test]
fn server_shutdown_is_announced_then_the_connection_closes() {
    /// The sim's grace between the notice and the close (`--server-shutdown-after`'s help).
    const GRACE: Duration = Duration::from_secs(2);
    let sim = start(with_faults(Faults {
        server_shutdown_after: Some(Duration::from_millis(300)),
        ..Faults::default()
    }));
    let mut combined = Client::open(&format!("{}/stream?streams=ethusdt@depth5", sim.ws_url()));
    let mut raw = Client::open(&format!("{}/ws/ethusdt@depth5", sim.ws_url()));
    let notice = loop {
        let v = combined.event();
        if v["stream"] == "!serverShutdown" {
            break v;
        }
    };
    let noticed = Instant::now();
    assert_eq!(notice["data"]["e"], "serverShutdown");
    assert!(notice["data"]["E"].as_u64().is_some());
    let mut frames = 0;
    let close = loop {
        match combined.read() {
            Message::Text(_) => frames += 1,
            Message::Close(frame) => break frame,
            _ => {}
        }
    };
    assert!(
        frames >= 100,
        "the connection keeps serving for its grace: {frames} frames"
    );
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    assert!(
        noticed.elapsed() >= GRACE - Duration::from_millis(100) && noticed.elapsed() < GRACE * 2,
        "{:?}",
        noticed.elapsed()
    );
    let bare = loop {
        let v = raw.event();
        if v["e"] == "serverShutdown" {
            break v;
        }
    };
    assert!(
        bare.get("stream").is_none() && bare["E"].as_u64().is_some(),
        "{bare}"
    );
    assert_eq!(sim.stats().injected(Fault::ServerShutdown), 2);
}

/// Max-rate throughput to one connection. Run with
/// `cargo test --release --test sim -- --ignored --nocapture max_rate_throughput`.
#[test]
#[ignore = "benchmark"]
fn max_rate_throughput() {
    let sim = start(SimConfig {
        rate: Rate::Max,
        ..SimConfig::default()
    });
    let mut c = Client::open(&format!("{}/ws/ethusdt@depth10", sim.ws_url()));
    let warmup = Instant::now();
    while warmup.elapsed() < Duration::from_millis(500) {
        c.text();
    }
    let (began, mut frames, mut bytes) = (Instant::now(), 0u64, 0u64);
    while began.elapsed() < Duration::from_secs(3) {
        if let Message::Text(t) = c.read() {
            frames += 1;
            bytes += t.len() as u64;
        }
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "max rate: {:.0} frames/s, {:.0} MB/s, mean frame {} B",
        frames as f64 / secs,
        bytes as f64 / secs / 1e6,
        bytes / frames
    );
}
