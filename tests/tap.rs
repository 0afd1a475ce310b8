//! End-to-end: `obrec record --tap` serves, live, what it records. The real binary records from
//! the simulator; clients written here (tungstenite and plain HTTP, no obrec code) read the tap
//! over real sockets, and what they got is compared with the files afterwards.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::*;
use obrec::{Rate, Sim, SimConfig};

const DEPTH: &str = "btcusdt@depth@100ms";
const TRADE: &str = "btcusdt@trade";

fn sim(rate: f64) -> Sim {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: vec!["BTCUSDT".into()],
            rate: Rate::PerSecond(rate),
            ..SimConfig::default()
        },
    )
    .unwrap()
}

/// Starts `obrec record --tap 127.0.0.1:0` of BTCUSDT against `sim` for `minutes`, with `extra`
/// flags; returns it, the tap's `ws://HOST:PORT` and its drained stdout.
fn record(
    sim: &Sim,
    dir: &Path,
    minutes: &str,
    extra: &[&str],
) -> (Child, String, JoinHandle<String>) {
    let mut child = record_sim(sim, dir)
        .args(["--symbol", "BTCUSDT", "--run-minutes", minutes])
        .args(["--print-interval", "1", "--flush-ms", "100"])
        .args(["--tap", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (url, stdout) = tap_url(&mut child);
    (child, url, stdout)
}

fn finish(mut child: Child, stdout: JoinHandle<String>) {
    let status = wait_with_timeout(&mut child, Duration::from_secs(60)).expect("recorder exits");
    let out = stdout.join().unwrap();
    assert!(status.success(), "{out}");
}

/// Connects to `url`, then reads text frames until the tap closes, each handed to `frames` as
/// it arrives.
fn client(url: String, frames: mpsc::Sender<String>) -> JoinHandle<()> {
    let (mut ws, _) = tungstenite::connect(&url).unwrap();
    thread::spawn(move || {
        while let Ok(msg) = ws.read() {
            if let tungstenite::Message::Text(text) = msg
                && frames.send(text.as_str().to_owned()).is_err()
            {
                return;
            }
        }
    })
}

/// Splits a combined frame into its stream and `data`, checking the envelope byte for byte.
fn envelope(frame: &str) -> (String, String) {
    let rest = frame.strip_prefix(r#"{"stream":""#).expect(frame);
    let (stream, rest) = rest.split_once(r#"","data":"#).expect(frame);
    let data = rest.strip_suffix('}').expect(frame);
    (stream.to_owned(), data.to_owned())
}

/// The recorded `data` of every line of the recording, by stream, in order.
fn recorded(data: &Path) -> BTreeMap<String, Vec<String>> {
    let mut files = depth_files(data);
    files.extend(kind_files(data, "trade"));
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read_lines(&files) {
        if let Some(stream) = line.json["stream"].as_str() {
            map.entry(stream.to_owned())
                .or_default()
                .push(line.raw_data().to_owned());
        }
    }
    map
}

/// A client that subscribed while the recording ran got every frame recorded from its first
/// one to the end, in order, and nothing else; returns how many.
fn assert_got_the_rest(stream: &str, got: &[String], recorded: &[String]) -> usize {
    assert!(!got.is_empty(), "{stream}: nothing received");
    let start = recorded
        .iter()
        .position(|d| *d == got[0])
        .unwrap_or_else(|| panic!("{stream}: first frame never recorded: {}", got[0]));
    assert_eq!(
        got.len(),
        recorded.len() - start,
        "{stream}: frames missing or extra"
    );
    for (i, (g, r)) in got.iter().zip(&recorded[start..]).enumerate() {
        assert_eq!(g, r, "{stream}: frame {i}: order or bytes");
    }
    got.len()
}

/// Frames of `frames` by stream (control replies left out), each checked as a combined frame.
fn by_stream(frames: mpsc::Receiver<String>) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for frame in frames {
        if frame.starts_with(r#"{"stream":"#) {
            let (stream, data) = envelope(&frame);
            map.entry(stream).or_default().push(data);
        }
    }
    map
}

#[test]
fn a_client_gets_every_recorded_frame_byte_for_byte_in_order() {
    let sim = sim(50.0);
    let dir = tempfile::tempdir().unwrap();
    let (child, url, stdout) = record(
        &sim,
        dir.path(),
        "0.1",
        &["--depth", "0", "--streams", "depth,trade"],
    );
    let (tx, rx) = mpsc::channel();
    let reader = client(format!("{url}/stream?streams={DEPTH}/{TRADE}"), tx);
    finish(child, stdout);
    reader.join().unwrap();
    let got = by_stream(rx);
    let files = recorded(&dir.path().join("data"));
    let depth = assert_got_the_rest(DEPTH, &got[DEPTH], &files[DEPTH]);
    let trades = assert_got_the_rest(TRADE, &got[TRADE], &files[TRADE]);
    eprintln!("through the tap: {depth} depth events, {trades} trades");
    assert!(
        depth > 100 && trades > 20,
        "{depth} depth events, {trades} trades"
    );
    assert_eq!(got.len(), 2, "only the streams subscribed");

    let m = metrics(&dir.path().join("data"));
    assert_eq!(m["tap"]["drops"], 0, "{m}");
    assert_eq!(m["tap"]["cuts"], 0, "{m}");
    assert!(m["tap"]["frames_sent"].as_u64().unwrap() >= (depth + trades) as u64 - 50);
    let delivery = &m["tap"]["delivery_ms"];
    eprintln!("delivery latency: {delivery}");
    assert!(delivery["p50"].as_f64().unwrap() > 0.0, "{m}");
    assert!(delivery["p99"].as_f64().unwrap() >= delivery["p50"].as_f64().unwrap());
}

/// A book side kept as Binance's procedure keeps it: absolute quantities by price.
#[derive(Default)]
struct Side(BTreeMap<i64, (String, String)>);

impl Side {
    fn set(&mut self, levels: &serde_json::Value) {
        for level in levels.as_array().unwrap() {
            let (price, qty) = (level[0].as_str().unwrap(), level[1].as_str().unwrap());
            let key = (price.parse::<f64>().unwrap() * 1e8).round() as i64;
            if qty.parse::<f64>().unwrap() == 0.0 {
                self.0.remove(&key);
            } else {
                self.0.insert(key, (price.to_owned(), qty.to_owned()));
            }
        }
    }

    fn top(&self, n: usize, best_high: bool) -> serde_json::Value {
        let levels: Vec<&(String, String)> = if best_high {
            self.0.values().rev().take(n).collect()
        } else {
            self.0.values().take(n).collect()
        };
        serde_json::json!(levels)
    }
}

#[test]
fn a_binance_client_syncs_its_book_from_the_taps_rest_and_stream() {
    let sim = sim(50.0);
    let dir = tempfile::tempdir().unwrap();
    let (child, url, stdout) = record(&sim, dir.path(), "0.1", &["--depth", "0"]);
    let rest = url.replace("ws://", "http://");
    let depth = format!("{rest}/fapi/v1/depth?symbol=BTCUSDT&limit=1000");
    // Until the recorder's first snapshot is bridged, the tap says so.
    let mut unsynced = 0;
    wait_for(Duration::from_secs(10), "the tap's book", || {
        let (status, body) = get(&depth);
        if status == 503 {
            assert!(body.contains("not synced"), "{body}");
            unsynced += 1;
        }
        status == 200
    });
    // Binance's procedure: subscribe and buffer, then snapshot, drop u < lastUpdateId, bridge
    // (U <= lastUpdateId <= u), then pu == the previous u. The snapshot is asked for at once,
    // before any event arrives: the hardest case for the bridge. A raw /ws connection: bare
    // payloads.
    let (tx, rx) = mpsc::channel();
    let reader = client(format!("{url}/ws/{DEPTH}"), tx);
    let (status, body) = get(&depth);
    assert_eq!(status, 200, "{body}");
    let snapshot: serde_json::Value = serde_json::from_str(&body).unwrap();
    let last_update_id = snapshot["lastUpdateId"].as_u64().unwrap();
    assert!(snapshot["E"].as_u64().is_some() && snapshot["T"].as_u64().is_some());
    let (mut bids, mut asks) = (Side::default(), Side::default());
    bids.set(&snapshot["bids"]);
    asks.set(&snapshot["asks"]);
    let mut books: Vec<(u64, serde_json::Value, serde_json::Value)> = Vec::new();
    let mut last_u: Option<u64> = None;
    for text in rx.iter() {
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        let (first_id, u, pu) = (
            event["U"].as_u64().unwrap(),
            event["u"].as_u64().unwrap(),
            event["pu"].as_u64().unwrap(),
        );
        match last_u {
            None if u < last_update_id => continue,
            None => assert!(
                first_id <= last_update_id && last_update_id <= u,
                "no bridge: U={first_id} u={u} lastUpdateId={last_update_id}"
            ),
            Some(last) => assert_eq!(pu, last, "pu after u={last}"),
        }
        bids.set(&event["b"]);
        asks.set(&event["a"]);
        last_u = Some(u);
        books.push((u, bids.top(20, true), asks.top(20, false)));
    }
    finish(child, stdout);
    reader.join().unwrap();

    // The recorder's own book at each u, rebuilt from the files.
    let replay = run_output(
        obrec()
            .args(["replay", "--book", "20"])
            .arg(dir.path().join("data/order_book")),
    );
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let mut truth: HashMap<u64, serde_json::Value> = HashMap::new();
    for line in String::from_utf8(replay.stdout).unwrap().lines() {
        let book: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(u) = book["u"].as_u64() {
            truth.insert(u, book);
        }
    }
    for (u, bids, asks) in &books {
        let want = truth
            .get(u)
            .unwrap_or_else(|| panic!("u={u} not in the replay"));
        assert_eq!(*bids, want["bids"], "bids at u={u}");
        assert_eq!(*asks, want["asks"], "asks at u={u}");
    }
    eprintln!(
        "client book equal to the recorder's at {} update ids ({unsynced} answers 503 first)",
        books.len()
    );
    assert!(books.len() > 100, "{} books", books.len());
}

/// Subscribes to `path` on the tap with a tiny receive window and never reads.
fn stalled_client(url: &str, path: &str) -> tungstenite::WebSocket<TcpStream> {
    let addr: std::net::SocketAddr = url.trim_start_matches("ws://").parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let (ws, _) = tungstenite::client(format!("{url}{path}"), TcpStream::from(socket)).unwrap();
    ws
}

#[test]
fn a_stalled_client_is_cut_while_the_recording_and_another_client_lose_nothing() {
    let sim = sim(400.0);
    let dir = tempfile::tempdir().unwrap();
    let (child, url, stdout) = record(
        &sim,
        dir.path(),
        "0.2",
        &[
            "--depth",
            "0",
            "--streams",
            "depth,trade",
            "--tap-queue",
            "256",
        ],
    );
    let rest = url.replace("ws://", "http://");
    let stalled = stalled_client(&url, &format!("/stream?streams={DEPTH}/{TRADE}"));
    let (tx, rx) = mpsc::channel();
    let reader = client(format!("{url}/stream?streams={DEPTH}/{TRADE}"), tx);
    let mut status = serde_json::Value::Null;
    wait_for(Duration::from_secs(10), "the stalled client cut", || {
        status = serde_json::from_str(&get(&format!("{rest}/status")).1).unwrap();
        status["counters"]["cuts"] == 1 && status["clients"].as_array().unwrap().len() == 1
    });
    eprintln!("status after the cut: {status}");
    assert_eq!(
        status["clients"][0]["streams"],
        serde_json::json!([DEPTH, TRADE])
    );
    finish(child, stdout);
    reader.join().unwrap();
    drop(stalled);

    let got = by_stream(rx);
    let files = recorded(&dir.path().join("data"));
    let depth = assert_got_the_rest(DEPTH, &got[DEPTH], &files[DEPTH]);
    let trades = assert_got_the_rest(TRADE, &got[TRADE], &files[TRADE]);
    eprintln!("the reading client got {depth} depth events and {trades} trades");
    let m = metrics(&dir.path().join("data"));
    assert_eq!(m["tap"]["cuts"], 1, "{m}");
    assert_eq!(m["tap"]["drops"], 0, "{m}");
    assert_eq!(m["log_queue"]["drops"], 0, "{m}");
    assert_eq!(m["continuity"]["breaks"], 0, "{m}");
}

/// Reads until the next text frame; `None` when the connection ends first.
fn next_text(
    ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
) -> Option<String> {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(text)) => return Some(text.as_str().to_owned()),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

#[test]
fn the_tap_holds_clients_to_binances_limits_and_answers_rest_like_binance() {
    let sim = sim(20.0);
    let dir = tempfile::tempdir().unwrap();
    let (child, url, stdout) = record(&sim, dir.path(), "0.1", &["--depth", "5"]);
    let rest = url.replace("ws://", "http://");

    // 1024 streams per connection: a SUBSCRIBE past it is refused, the connection goes on.
    let (mut ws, _) = tungstenite::connect(format!("{url}/ws")).unwrap();
    let many: Vec<String> = (0..1025).map(|i| format!("s{i}usdt@trade")).collect();
    let subscribe = serde_json::json!({"method": "SUBSCRIBE", "params": many, "id": 1});
    ws.send(tungstenite::Message::text(subscribe.to_string()))
        .unwrap();
    let refused: serde_json::Value = serde_json::from_str(&next_text(&mut ws).unwrap()).unwrap();
    assert_eq!(
        (refused["code"].as_i64(), refused["id"].as_u64()),
        (Some(2), Some(1)),
        "{refused}"
    );
    assert!(
        refused["msg"].as_str().unwrap().contains("at most 1024"),
        "{refused}"
    );
    let list = r#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#;
    ws.send(tungstenite::Message::text(list)).unwrap();
    assert_eq!(next_text(&mut ws).unwrap(), r#"{"result":[],"id":2}"#);
    // A URL naming too many is refused at the upgrade.
    let path: Vec<String> = (0..1025).map(|i| format!("s{i}usdt@trade")).collect();
    match tungstenite::connect(format!("{url}/ws/{}", path.join("/"))) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("upgrade of 1025 streams: {:?}", other.map(|_| ())),
    }

    // 10 messages a second: the eleventh closes the connection; ten were answered.
    let (mut flood, _) = tungstenite::connect(format!("{url}/ws")).unwrap();
    for id in 0..11 {
        let list = format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{id}}}"#);
        flood.send(tungstenite::Message::text(list)).unwrap();
    }
    let mut answered = 0;
    while next_text(&mut flood).is_some() {
        answered += 1;
    }
    assert_eq!(answered, 10);

    // REST: the recorded symbols, an unknown one, no book without diff depth, the status.
    let (status, info) = get(&format!("{rest}/fapi/v1/exchangeInfo"));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(status, 200);
    assert_eq!(info["symbols"][0]["symbol"], "BTCUSDT", "{info}");
    assert_eq!(info["symbols"][0]["status"], "TRADING", "{info}");
    let (status, body) = get(&format!("{rest}/fapi/v1/depth?symbol=ETHUSDT"));
    assert_eq!((status, body.contains("-1121")), (400, true), "{body}");
    let (status, body) = get(&format!("{rest}/fapi/v1/depth?symbol=BTCUSDT"));
    assert_eq!((status, body.contains("--depth 0")), (503, true), "{body}");
    let (status, body) = get(&format!("{rest}/status"));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["counters"]["cuts"], 0, "{body}");
    drop(ws);
    finish(child, stdout);
}

/// User and system CPU seconds `pid` has used so far (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    /// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
    const TICKS: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
    Some(ticks / TICKS)
}

/// The bench of issue 16: a full-depth stream (`@0ms`) at 10,000 events/s recorded for 20 s,
/// with no tap client and with 10; prints the recorder's CPU and the delivery latency. Run it
/// built for release: `cargo test --release --test tap -- --ignored --nocapture bench`.
#[test]
#[ignore = "a bench: minutes of CPU, run by hand in release"]
fn bench_ten_clients_on_a_full_depth_stream() {
    const RATE: f64 = 10_000.0;
    const SECONDS: f64 = 20.0;
    const STREAM: &str = "btcusdt@depth@0ms";
    for clients in [0, 10] {
        let sim = sim(RATE);
        let dir = tempfile::tempdir().unwrap();
        let minutes = format!("{}", SECONDS / 60.0);
        let (child, url, stdout) = record(
            &sim,
            dir.path(),
            &minutes,
            &["--depth", "0", "--speed", "0ms"],
        );
        let pid = child.id();
        let readers: Vec<JoinHandle<usize>> = (0..clients)
            .map(|_| {
                let (mut ws, _) = tungstenite::connect(format!("{url}/ws/{STREAM}")).unwrap();
                thread::spawn(move || {
                    let mut frames = 0;
                    while let Ok(msg) = ws.read() {
                        frames += usize::from(msg.is_text());
                    }
                    frames
                })
            })
            .collect();
        let mut cpu = 0.0;
        let mut child = child;
        while child.try_wait().unwrap().is_none() {
            cpu = cpu_seconds(pid).unwrap_or(cpu);
            thread::sleep(Duration::from_millis(100));
        }
        let _ = stdout.join();
        let got: Vec<usize> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        let m = metrics(&dir.path().join("data"));
        eprintln!(
            "{clients} clients: recorded {} events ({} dropped), recorder CPU {cpu:.1} s over \
             {SECONDS} s = {:.0}%, each client got {got:?} frames, tap {}",
            m["total_messages"],
            m["log_queue"]["drops"],
            100.0 * cpu / SECONDS,
            m["tap"]
        );
    }
}

/// Item 3: a client that subscribes to `obrec@state` is told, in band and in order with the
/// frames, of each break and resync of the recorded streams, so it knows when its book must be
/// rebuilt; the notices match the recorder's own counts.
#[test]
fn clients_who_ask_get_the_recorders_state_in_band() {
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: vec!["BTCUSDT".into()],
            rate: Rate::PerSecond(50.0),
            faults: obrec::Faults {
                gap_every: Some(40),
                ..obrec::Faults::default()
            },
            ..SimConfig::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (child, url, stdout) = record(&sim, dir.path(), "0.08", &["--depth", "0"]);
    let (tx, rx) = mpsc::channel();
    let reader = client(format!("{url}/stream?streams={DEPTH}/obrec@state"), tx);
    finish(child, stdout);
    reader.join().unwrap();
    let frames: Vec<String> = rx.into_iter().collect();
    let notices: Vec<serde_json::Value> = frames
        .iter()
        .filter_map(|f| f.strip_prefix(r#"{"stream":"obrec@state","data":"#))
        .map(|d| serde_json::from_str(d.strip_suffix('}').unwrap()).unwrap())
        .collect();
    let count = |state: &str| notices.iter().filter(|n| n["state"] == state).count() as u64;
    let m = metrics(&dir.path().join("data"));
    let breaks = m["continuity"]["breaks"].as_u64().unwrap();
    assert!(breaks >= 3, "{m}");
    assert_eq!(count("break"), breaks, "{notices:?}");
    assert_eq!(
        count("resync"),
        m["continuity"]["resyncs"].as_u64().unwrap()
    );
    for n in &notices {
        assert_eq!(n["e"], "obrecState");
        assert_eq!(n["stream"], DEPTH);
        assert!(
            n["E"].as_u64().unwrap() > 0 && n["detail"].is_string(),
            "{n}"
        );
    }
    // In order with the frames: each break is told just before the event that broke the chain.
    let first_break = frames
        .iter()
        .position(|f| f.contains(r#""state":"break""#))
        .unwrap();
    let (_, data) = envelope(&frames[first_break + 1]);
    let event: serde_json::Value = serde_json::from_str(&data).unwrap();
    let detail = notices.iter().find(|n| n["state"] == "break").unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains(&format!("got pu={}", event["pu"])),
        "{detail} before {data}"
    );
}

/// Item 4: the example consumer, run as a user runs it, computes the imbalance live from the tap
/// (skipped with a note where there is no python3).
#[test]
fn the_example_prints_the_imbalance_live() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("python3 not found: the example is not run");
        return;
    }
    let sim = sim(50.0);
    let dir = tempfile::tempdir().unwrap();
    let (child, url, stdout) = record(&sim, dir.path(), "0.06", &["--streams", "bookTicker"]);
    let example = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ofi.py"))
        .args([url.as_str(), "btcusdt"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child, stdout);
    // The tap closes its connections when the recording ends, which ends the example.
    let out = example.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = printed
        .lines()
        .filter(|l| l.contains(" BTCUSDT ofi="))
        .collect();
    assert!(
        lines.len() >= 2,
        "{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let busy = lines
        .iter()
        .filter(|l| !l.contains(" updates=0 ") && !l.ends_with("mid=nan"))
        .count();
    assert!(busy >= 1, "no second with updates and a mid: {printed}");
}
