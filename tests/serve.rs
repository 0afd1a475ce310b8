//! `obrec serve` over real loopback sockets: recordings made by the real recorder from the sim are
//! served and recorded again, byte for byte; the real hftbacktest capture plays to a diff-depth
//! recorder; pacing, subscriptions, REST at the playback position, damaged files and bad paths.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use flate2::Compression;
use flate2::write::GzEncoder;
use obrec::{Pace, Recording, Serve, ServeConfig};
use obrec::{Rate, Sim, SimConfig};
use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Longest wait for anything a server should send; a failure, not a hang, when exceeded.
const WATCHDOG: Duration = Duration::from_secs(10);
/// The real capture: `{"stream":…,"data":…}` lines and, on line 55, the REST snapshot.
const FIXTURE: &str = "tests/data/binance/hftbacktest_usdm_btcusdt_20240808_head1000.ndjson";
/// 2026-11-20T08:18:01Z in ns: where synthetic recordings start.
const BASE_NS: u64 = 1_763_626_681_000_000_000;

// ---- recordings written by the tests ----------------------------------------------------------

/// A depth line in the recorder's format around `payload`, which is kept as is.
fn depth_line(symbol: &str, stream: &str, recv_ns: u64, payload: &str) -> String {
    let d: Value = serde_json::from_str(payload).unwrap();
    let (e, t) = (d["E"].as_u64().unwrap(), d["T"].as_u64().unwrap());
    let ts_recv = recv_ns as f64 / 1e6;
    format!(
        r#"{{"timestamp":"2026-11-20T08:18:01.000Z","symbol":"{symbol}","ts_recv":{ts_recv:.3},"E":{e},"T":{t},"U":{},"u":{},"pu":{},"latency_event_ms":{:.3},"latency_pipeline_ms":0.010,"recv_ns":{recv_ns},"conn":1,"stream":"{stream}","data":{payload}}}"#,
        d["U"],
        d["u"],
        d["pu"],
        ts_recv - e as f64
    )
}

/// A snapshot line in the recorder's format around `body`, which is kept as is.
fn snapshot_line(symbol: &str, recv_ns: u64, body: &str) -> String {
    let d: Value = serde_json::from_str(body).unwrap();
    format!(
        r#"{{"recv_ns":{recv_ns},"symbol":"{symbol}","lastUpdateId":{},"data":{body}}}"#,
        d["lastUpdateId"]
    )
}

/// A synthetic depth payload with the given ids, received at `recv_ns`.
fn payload(symbol: &str, recv_ns: u64, u: u64, pu: u64) -> String {
    let e = recv_ns / 1_000_000 - 1;
    format!(
        r#"{{"e":"depthUpdate","E":{e},"T":{},"s":"{symbol}","U":{},"u":{u},"pu":{pu},"b":[["100.10","1.500"]],"a":[["100.20","0.000"]]}}"#,
        e - 1,
        pu + 1
    )
}

/// Writes `lines` as gzip NDJSON, one gzip member per `per_member` lines, as the recorder does
/// once per flush; returns where each member ends.
fn write_gz(path: &Path, lines: &[String], per_member: usize) -> Vec<usize> {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for chunk in lines.chunks(per_member.max(1)) {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        for line in chunk {
            gz.write_all(line.as_bytes()).unwrap();
            gz.write_all(b"\n").unwrap();
        }
        bytes.extend(gz.finish().unwrap());
        ends.push(bytes.len());
    }
    std::fs::write(path, bytes).unwrap();
    ends
}

/// The `data` of a line in the recorder's format (or a combined frame), as written.
fn raw_data(line: &str) -> &str {
    let start = line.find(",\"data\":").map_or_else(
        || line.find("\"data\":").unwrap() + "\"data\":".len(),
        |i| i + ",\"data\":".len(),
    );
    &line[start..line.len() - 1]
}

// ---- the binaries ------------------------------------------------------------------------------

/// `obrec serve` as a child process, listening.
struct ServeProcess {
    child: Child,
    addr: String,
}

impl ServeProcess {
    fn start(args: &[&str]) -> ServeProcess {
        let mut child = obrec()
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve did not start: {line:?} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ServeProcess {
            addr: addr.to_owned(),
            child,
        }
    }

    /// Stops it with SIGTERM; returns its stderr after checking it exited 0.
    fn stop(mut self) -> String {
        signal(&self.child, "-TERM");
        let status = wait_with_timeout(&mut self.child, WATCHDOG).expect("serve stops on SIGTERM");
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(status.success(), "serve exited {status}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }
}

/// A test that fails before `stop` leaves no server behind.
impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the real recorder against `ws`/`rest` for `minutes`; returns its data dir.
fn record(
    dir: &Path,
    name: &str,
    symbols: &str,
    depth: &str,
    addr: &str,
    minutes: &str,
) -> PathBuf {
    let data = dir.join(name);
    let out = run_output(
        record_from(
            &format!("ws://{addr}"),
            &format!("http://{addr}"),
            &data,
            &dir.join(format!("{name}-logs")),
        )
        .args(["--symbol", symbols, "--depth", depth])
        .args(["--run-minutes", minutes, "--flush-ms", "100"])
        .args(["--stale-sec", "60", "--print-interval", "60"]),
    );
    assert!(
        out.status.success(),
        "record: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

/// Records from the sim, serves that recording at max speed, records it again: the second
/// recording holds the first one's events, in order, byte for byte, with 0 breaks.
fn sim_recording_round_trip(depth: &str) {
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: vec!["ETHUSDT".into(), "BTCUSDT".into()],
            rate: Rate::PerSecond(50.0),
            ..SimConfig::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sim_addr = sim.local_addr().to_string();
    let first = record(
        dir.path(),
        "first",
        "ETHUSDT,BTCUSDT",
        depth,
        &sim_addr,
        "0.04",
    );
    sim.shutdown();

    let serve = ServeProcess::start(&[first.join("order_book").to_str().unwrap(), "--pace", "max"]);
    let second = record(
        dir.path(),
        "second",
        "ETHUSDT,BTCUSDT",
        depth,
        &serve.addr,
        "0.03",
    );
    serve.stop();

    let was = lines_by_symbol(&read_lines(&depth_files(&first)));
    let now = lines_by_symbol(&first_playback(read_lines(&depth_files(&second))));
    assert_eq!(was.keys().collect::<Vec<_>>(), ["BTCUSDT", "ETHUSDT"]);
    assert_eq!(
        was.keys().collect::<Vec<_>>(),
        now.keys().collect::<Vec<_>>()
    );
    for (symbol, was) in &was {
        let now = &now[symbol];
        assert!(
            was.len() >= 60,
            "{symbol}: only {} events recorded",
            was.len()
        );
        assert_eq!(now.len(), was.len(), "{symbol}: events played back");
        for (a, b) in was.iter().zip(now) {
            assert_eq!(b.raw_data(), a.raw_data(), "{symbol}: payload");
            for key in ["U", "u", "pu", "E", "stream"] {
                assert_eq!(b.json[key], a.json[key], "{symbol}: {key}");
            }
        }
    }
    let m = metrics(&second);
    assert_eq!(m["continuity"]["breaks"], 0, "{m}");
    if depth == "0" {
        // Every snapshot the second recorder took is one the first recorded, byte for byte.
        let recorded: Vec<String> = read_lines(&snapshot_files(&first))
            .iter()
            .map(|l| l.raw_data().to_owned())
            .collect();
        let taken = read_lines(&snapshot_files(&second));
        assert!(taken.len() >= 2, "a snapshot per symbol: {}", taken.len());
        for snap in &taken {
            assert!(
                recorded.iter().any(|r| r == snap.raw_data()),
                "{}",
                snap.text
            );
        }
        // The only resyncs are the ones each new playback (a new connection) needs.
        assert_eq!(m["continuity"]["resyncs"], m["reconnect_gaps"], "{m}");
    }
}

/// The lines of the first connection. `serve` plays the recording again to every connection,
/// and a recorder that reconnects after the end records the replay again (ids that go back on a
/// new connection start a new chain): the first playback is the one to compare.
fn first_playback(lines: Vec<Line>) -> Vec<Line> {
    let first = lines.first().map(|l| l.json["conn"].clone());
    lines
        .into_iter()
        .filter(|l| Some(&l.json["conn"]) == first.as_ref())
        .collect()
}

#[test]
fn a_partial_depth_recording_plays_back_byte_for_byte() {
    sim_recording_round_trip("5");
}

#[test]
fn a_diff_depth_recording_plays_back_with_its_snapshots() {
    sim_recording_round_trip("0");
}

#[test]
fn the_real_capture_plays_to_a_diff_depth_recorder() {
    let fixture = std::fs::read_to_string(FIXTURE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("capture/order_book");
    std::fs::create_dir_all(&book).unwrap();
    // Receive times are not in the capture: the event time stands in for them.
    let mut depth = Vec::new();
    let mut payloads = Vec::new();
    let mut snapshot = None;
    for line in fixture.lines() {
        if line.starts_with(r#"{"stream":"btcusdt@depth@0ms","#) {
            let data = raw_data(line);
            let e: Value = serde_json::from_str(data).unwrap();
            let recv_ns = e["E"].as_u64().unwrap() * 1_000_000;
            depth.push(depth_line("BTCUSDT", "btcusdt@depth@0ms", recv_ns, data));
            payloads.push(data.to_owned());
        } else if line.starts_with(r#"{"lastUpdateId""#) {
            let e: Value = serde_json::from_str(line).unwrap();
            snapshot = Some((e["E"].as_u64().unwrap() * 1_000_000, line.to_owned()));
        }
    }
    let (snap_ns, snap_body) = snapshot.expect("the capture has its snapshot");
    assert_eq!(payloads.len(), 95);
    write_gz(
        &book.join("btcusdt_depth_20240808T235416Z.ndjson.gz"),
        &depth,
        20,
    );
    write_gz(
        &book.join("btcusdt_snapshot_20240808T235416Z.ndjson.gz"),
        &[snapshot_line("BTCUSDT", snap_ns, &snap_body)],
        1,
    );

    let port_file = dir.path().join("port");
    let serve = ServeProcess::start(&[
        book.to_str().unwrap(),
        "--pace",
        "max",
        "--port-file",
        port_file.to_str().unwrap(),
    ]);
    // Written just after the line on stdout.
    wait_for(WATCHDOG, "the port file", || port_file.exists());
    let port = std::fs::read_to_string(&port_file).unwrap();
    assert!(serve.addr.ends_with(&format!(":{}", port.trim())), "{port}");
    // REST before any connection plays: the snapshot byte for byte, the recording's start time.
    let (status, body) = http_get(&serve.addr, "/fapi/v1/depth?symbol=BTCUSDT&limit=1000");
    assert_eq!((status, body.as_str()), (200, snap_body.as_str()));
    let first_e: Value = serde_json::from_str(&payloads[0]).unwrap();
    let (status, body) = http_get(&serve.addr, "/fapi/v1/time");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["serverTime"],
        first_e["E"]
    );
    let (status, body) = http_get(&serve.addr, "/fapi/v1/depth?symbol=ETHUSDT");
    assert_eq!(status, 400, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], -1121);

    // The recorder subscribes btcusdt@depth@100ms; the capture holds btcusdt@depth@0ms.
    let data = record(dir.path(), "again", "BTCUSDT", "0", &serve.addr, "0.03");
    serve.stop();
    let lines = first_playback(read_lines(&depth_files(&data)));
    assert_eq!(lines.len(), payloads.len());
    for (line, payload) in lines.iter().zip(&payloads) {
        assert_eq!(line.raw_data(), payload);
        assert_eq!(line.json["stream"], "btcusdt@depth@100ms");
    }
    let snaps = read_lines(&snapshot_files(&data));
    assert!(!snaps.is_empty());
    assert!(snaps.iter().all(|s| s.raw_data() == snap_body));
    let m = metrics(&data);
    assert_eq!(m["continuity"]["breaks"], 0, "{m}");
    assert_eq!(m["continuity"]["resyncs"], m["reconnect_gaps"], "{m}");
}

// ---- a plain client -----------------------------------------------------------------------------

struct Client {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

/// What a client read: data frames with their arrival, then how the connection ended.
struct Received {
    frames: Vec<(Instant, String)>,
    close: Option<(CloseCode, String)>,
}

impl Client {
    fn open(url: &str) -> Client {
        let (ws, _) = tungstenite::connect(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
            tcp.set_read_timeout(Some(WATCHDOG)).unwrap();
        }
        Client { ws }
    }

    fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    /// The next text frame, or `None` once the server closed.
    fn text(&mut self) -> Option<String> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
                Ok(Message::Close(_)) => return None,
                Ok(_) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads data frames until the server closes.
    fn until_closed(&mut self) -> Received {
        let mut frames = Vec::new();
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => frames.push((Instant::now(), t.as_str().to_owned())),
                Ok(Message::Close(frame)) => {
                    let close = frame.map(|f| (f.code, f.reason.as_str().to_owned()));
                    return Received { frames, close };
                }
                Ok(_) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

fn http_get(addr: &str, target: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WATCHDOG)).unwrap();
    write!(tcp, "GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

fn serve(dir: &Path, pace: Pace) -> Serve {
    let recording = Recording::open(&[dir.to_path_buf()]).unwrap();
    let config = ServeConfig {
        pace,
        ..ServeConfig::default()
    };
    Serve::start("127.0.0.1:0", recording, config).unwrap()
}

/// One symbol's synthetic diff events, one every `step_ns`, chained.
fn diff_events(
    symbol: &str,
    stream: &str,
    count: u64,
    start_ns: u64,
    step_ns: u64,
) -> Vec<(u64, String)> {
    (0..count)
        .map(|i| {
            let recv_ns = start_ns + i * step_ns;
            let u = 1_000 + 10 * i;
            (
                recv_ns,
                depth_line(
                    symbol,
                    stream,
                    recv_ns,
                    &payload(symbol, recv_ns, u + 10, u),
                ),
            )
        })
        .collect()
}

fn lines(events: &[(u64, String)]) -> Vec<String> {
    events.iter().map(|(_, l)| l.clone()).collect()
}

#[test]
fn speed_10_plays_ten_times_faster_and_each_connection_from_the_start() {
    // 100 events over 19.8 recorded seconds: about 2 s at speed 10.
    let dir = tempfile::tempdir().unwrap();
    let events = diff_events("ETHUSDT", "ethusdt@depth@100ms", 100, BASE_NS, 200_000_000);
    write_gz(
        &dir.path().join("ethusdt_depth_x.ndjson.gz"),
        &lines(&events),
        25,
    );
    let server = serve(dir.path(), Pace::Speed(10.0));
    let url = format!("{}/stream?streams=ethusdt@depth", server.ws_url());
    let began = Instant::now();
    let early = std::thread::spawn({
        let url = url.clone();
        move || Client::open(&url).until_closed()
    });
    std::thread::sleep(Duration::from_millis(700));
    let late_began = Instant::now();
    let late = Client::open(&url).until_closed();
    let early = early.join().unwrap();
    server.shutdown();

    let want: Vec<String> = events
        .iter()
        .map(|(_, l)| format!(r#"{{"stream":"ethusdt@depth","data":{}}}"#, raw_data(l)))
        .collect();
    for (name, got, start) in [("early", &early, began), ("late", &late, late_began)] {
        let texts: Vec<&String> = got.frames.iter().map(|(_, t)| t).collect();
        assert_eq!(
            texts,
            want.iter().collect::<Vec<_>>(),
            "{name}: every event, in order"
        );
        assert_eq!(
            got.close,
            Some((CloseCode::Normal, "end of recording".into())),
            "{name}"
        );
        let first = got.frames[0].0 - start;
        let middle = got.frames[50].0 - got.frames[0].0;
        let span = got.frames[99].0 - got.frames[0].0;
        eprintln!("{name}: first after {first:?}, event 50 after {middle:?}, all in {span:?}");
        assert!(first < Duration::from_millis(1000), "{name}: {first:?}");
        assert!(
            middle > Duration::from_millis(700) && middle < Duration::from_millis(2000),
            "{name}: {middle:?}"
        );
        assert!(
            span > Duration::from_millis(1500) && span < Duration::from_millis(4000),
            "{name}: {span:?}"
        );
    }
    // Independent clocks: the late connection did not join the early one's playback.
    let lag = late.frames[0].0 - early.frames[0].0;
    assert!(lag > Duration::from_millis(500), "{lag:?}");
}

#[test]
fn subscriptions_match_symbol_and_kind_whatever_the_speed() {
    // ETHUSDT diff and partial, BTCUSDT diff, interleaved over one recorded second.
    let dir = tempfile::tempdir().unwrap();
    let eth_diff = diff_events("ETHUSDT", "ethusdt@depth@0ms", 40, BASE_NS, 25_000_000);
    let eth_partial = diff_events(
        "ETHUSDT",
        "ethusdt@depth5@100ms",
        40,
        BASE_NS + 8_000_000,
        25_000_000,
    );
    let btc_diff = diff_events(
        "BTCUSDT",
        "btcusdt@depth@0ms",
        40,
        BASE_NS + 16_000_000,
        25_000_000,
    );
    // One symbol's diff and partial streams share a file, as when a directory holds two runs.
    let mut eth: Vec<(u64, String)> = eth_diff.iter().chain(&eth_partial).cloned().collect();
    eth.sort();
    write_gz(
        &dir.path().join("ethusdt_depth_a.ndjson.gz"),
        &lines(&eth),
        7,
    );
    write_gz(
        &dir.path().join("btcusdt_depth_a.ndjson.gz"),
        &lines(&btc_diff),
        7,
    );
    let server = serve(dir.path(), Pace::Speed(1.0));

    // Combined: the subscribed name, the recorded payload byte for byte.
    let mut diff = Client::open(&format!(
        "{}/stream?streams=ethusdt@depth@100ms",
        server.ws_url()
    ));
    // Raw, subscribed live: a partial and a diff stream of two symbols.
    let mut raw = Client::open(&format!("{}/ws", server.ws_url()));
    raw.send(r#"{"method":"SUBSCRIBE","params":["ethusdt@depth10","btcusdt@depth"],"id":1}"#);
    assert_eq!(raw.text().unwrap(), r#"{"result":null,"id":1}"#);
    // A partial subscription to a symbol recorded only as diff gets nothing.
    let mut none = Client::open(&format!("{}/ws/btcusdt@depth5@100ms", server.ws_url()));

    // After 10 frames BTCUSDT is dropped: none of it follows the acknowledgement.
    let mut before = Vec::new();
    while before.len() < 10 {
        before.push(raw.text().unwrap());
    }
    raw.send(r#"{"method":"UNSUBSCRIBE","params":["btcusdt@depth"],"id":2}"#);
    loop {
        let text = raw.text().unwrap();
        if text.contains(r#""id":2"#) {
            assert_eq!(text, r#"{"result":null,"id":2}"#);
            break;
        }
        before.push(text);
    }
    let after: Vec<String> = raw
        .until_closed()
        .frames
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let is_btc = |t: &String| t.contains(r#""s":"BTCUSDT""#);
    assert!(before.iter().any(is_btc), "BTCUSDT played before");
    assert!(!after.iter().any(is_btc), "BTCUSDT after its UNSUBSCRIBE");
    assert!(after.len() > 10, "ETHUSDT partial goes on: {}", after.len());
    // In recorded order, raw payloads only; the partial ones are ETHUSDT's partial stream.
    let mut played: Vec<(u64, String)> = eth_partial.iter().chain(&btc_diff).cloned().collect();
    played.sort();
    let played: Vec<String> = played.iter().map(|(_, l)| raw_data(l).to_owned()).collect();
    let all: Vec<String> = before.into_iter().chain(after).collect();
    let mut expected = played.iter();
    for text in &all {
        assert!(
            expected.any(|p| p == text),
            "not a recorded payload, or out of order: {text}"
        );
    }
    let got = diff.until_closed();
    let want: Vec<String> = eth_diff
        .iter()
        .map(|(_, l)| {
            format!(
                r#"{{"stream":"ethusdt@depth@100ms","data":{}}}"#,
                raw_data(l)
            )
        })
        .collect();
    let texts: Vec<String> = got.frames.into_iter().map(|(_, t)| t).collect();
    assert_eq!(texts, want);

    let nothing = none.until_closed();
    assert!(nothing.frames.is_empty(), "{}", nothing.frames.len());
    assert_eq!(nothing.close.unwrap().0, CloseCode::Normal);
    server.shutdown();
}

#[test]
fn rest_answers_the_snapshot_in_force_at_the_playback_position() {
    // Events over one recorded second, played in two; snapshot A before them, B 0.8 s in.
    let dir = tempfile::tempdir().unwrap();
    let events = diff_events("ETHUSDT", "ethusdt@depth@100ms", 100, BASE_NS, 10_000_000);
    write_gz(
        &dir.path().join("ethusdt_depth_a.ndjson.gz"),
        &lines(&events),
        10,
    );
    let a = r#"{"lastUpdateId":900,"E":1,"T":1,"bids":[["1.0","1"]],"asks":[]}"#;
    let b = r#"{"lastUpdateId":1700,"E":2,"T":2,"bids":[["2.0","2"]],"asks":[]}"#;
    let snapshots = [
        snapshot_line("ETHUSDT", BASE_NS - 50_000_000, a),
        snapshot_line("ETHUSDT", BASE_NS + 800_000_000, b),
    ];
    write_gz(
        &dir.path().join("ethusdt_snapshot_a.ndjson.gz"),
        &snapshots,
        1,
    );
    let server = serve(dir.path(), Pace::Speed(0.5));
    let addr = server.local_addr().to_string();
    let depth = || http_get(&addr, "/fapi/v1/depth?symbol=ETHUSDT&limit=5");
    let time = || -> u64 {
        let (_, body) = http_get(&addr, "/fapi/v1/time");
        serde_json::from_str::<Value>(&body).unwrap()["serverTime"]
            .as_u64()
            .unwrap()
    };
    let start_ms = BASE_NS / 1_000_000;
    assert_eq!(depth(), (200, a.to_owned()));
    assert_eq!(time(), start_ms);

    let mut client = Client::open(&format!("{}/ws/ethusdt@depth", server.ws_url()));
    // The recorded receive time of the next event the client reads.
    let played_ms = |client: &mut Client| -> u64 {
        let v: Value = serde_json::from_str(&client.text().unwrap()).unwrap();
        v["E"].as_u64().unwrap() + 1
    };
    while played_ms(&mut client) < start_ms + 200 {}
    assert_eq!(depth(), (200, a.to_owned()), "0.2 s in");
    let now = time();
    assert!(
        (start_ms + 200..start_ms + 800).contains(&now),
        "{}",
        now - start_ms
    );
    while played_ms(&mut client) < start_ms + 850 {}
    assert_eq!(depth(), (200, b.to_owned()), "0.85 s in");
    // A connection that starts over does not take the position back: the furthest one counts.
    let mut again = Client::open(&format!("{}/ws/ethusdt@depth", server.ws_url()));
    assert_eq!(played_ms(&mut again), start_ms);
    assert_eq!(depth(), (200, b.to_owned()), "two connections");
    drop((client, again));
    server.shutdown();
}

#[test]
fn damaged_files_play_up_to_the_damage_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path();
    // ETHUSDT: a file cut inside its third gzip member, then an intact file.
    let eth = diff_events("ETHUSDT", "ethusdt@depth@100ms", 60, BASE_NS, 1_000_000);
    let cut = book.join("ethusdt_depth_1.ndjson.gz.part");
    let members = write_gz(&cut, &lines(&eth[..40]), 10);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..members[1] + 40]).unwrap();
    write_gz(
        &book.join("ethusdt_depth_2.ndjson.gz"),
        &lines(&eth[40..]),
        10,
    );
    // BTCUSDT: garbage on line 6.
    let btc = diff_events("BTCUSDT", "btcusdt@depth@100ms", 10, BASE_NS, 1_000_000);
    let mut btc_lines = lines(&btc);
    btc_lines[5] = "}{ not json".into();
    write_gz(&book.join("btcusdt_depth_1.ndjson.gz"), &btc_lines, 10);

    let serve = ServeProcess::start(&[book.to_str().unwrap(), "--pace", "max"]);
    let url = format!(
        "ws://{}/stream?streams=ethusdt@depth@100ms/btcusdt@depth@100ms",
        serve.addr
    );
    let runs: Vec<Vec<String>> = (0..2)
        .map(|_| {
            let got = Client::open(&url).until_closed();
            got.frames
                .into_iter()
                .map(|(_, t)| raw_data(&t).to_owned())
                .collect()
        })
        .collect();
    let stderr = serve.stop();

    let payloads = |events: &[(u64, String)]| -> Vec<String> {
        events.iter().map(|(_, l)| raw_data(l).to_owned()).collect()
    };
    for got in &runs {
        let eth_got: Vec<&String> = got.iter().filter(|t| t.contains("ETHUSDT")).collect();
        let btc_got: Vec<&String> = got.iter().filter(|t| t.contains("BTCUSDT")).collect();
        // The two whole members, then the intact file.
        let eth_want = payloads(&eth[..20]).into_iter().chain(payloads(&eth[40..]));
        assert_eq!(
            eth_got,
            eth_want.collect::<Vec<_>>().iter().collect::<Vec<_>>()
        );
        assert_eq!(btc_got, payloads(&btc[..5]).iter().collect::<Vec<_>>());
    }
    // One warning per damaged file, however many connections played it.
    let warned = |name: &str| stderr.lines().filter(|l| l.contains(name)).count();
    assert_eq!(warned("ethusdt_depth_1.ndjson.gz.part"), 1, "{stderr}");
    assert_eq!(warned("btcusdt_depth_1.ndjson.gz"), 1, "{stderr}");
    assert!(stderr.contains("line 6: not a depth line"), "{stderr}");
    assert_eq!(warned("ethusdt_depth_2"), 0, "{stderr}");
}

#[test]
fn bad_paths_exit_2_and_help_lists_every_flag() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    for path in [missing.as_path(), dir.path()] {
        let out = run_output(obrec().arg("serve").arg(path));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let out = run_output(obrec().args(["serve", "x", "--pace", "0"]));
    assert_eq!(out.status.code(), Some(2));
    let help = String::from_utf8(run_output(obrec().args(["serve", "--help"])).stdout).unwrap();
    for flag in [
        "--listen",
        "--pace",
        "--port-file",
        "--server-ping-sec",
        "OBREC_PACE",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}

/// The real capture's depth events, repeated into a 190,000-event recording, played at
/// `--pace max` to one plain client: events and MB per second.
#[test]
#[ignore = "benchmark"]
fn max_speed_throughput() {
    let fixture = std::fs::read_to_string(FIXTURE).unwrap();
    let payloads: Vec<&str> = fixture
        .lines()
        .filter(|l| l.starts_with(r#"{"stream":"btcusdt@depth@0ms","#))
        .map(raw_data)
        .collect();
    let repeats = 2000;
    let mut recorded = Vec::with_capacity(payloads.len() * repeats);
    for i in 0..payloads.len() * repeats {
        let recv_ns = BASE_NS + i as u64 * 1_000_000;
        let data = payloads[i % payloads.len()];
        recorded.push(depth_line("BTCUSDT", "btcusdt@depth@0ms", recv_ns, data));
    }
    let dir = tempfile::tempdir().unwrap();
    write_gz(
        &dir.path().join("btcusdt_depth_a.ndjson.gz"),
        &recorded,
        1000,
    );
    let server = serve(dir.path(), Pace::Max);
    let began = Instant::now();
    let got = Client::open(&format!("{}/ws/btcusdt@depth", server.ws_url())).until_closed();
    let secs = began.elapsed().as_secs_f64();
    server.shutdown();
    assert_eq!(got.frames.len(), recorded.len());
    let bytes: usize = got.frames.iter().map(|(_, t)| t.len()).sum();
    println!(
        "max speed: {} events in {secs:.2} s: {:.0} events/s, {:.0} MB/s",
        got.frames.len(),
        got.frames.len() as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}
