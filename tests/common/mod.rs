//! Helpers shared by the end-to-end tests: run the real binary, read the real files back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A file of the real Binance recordings kept in the repository (`tests/data/binance`, see its
/// SOURCES.md).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/binance")
        .join(name)
}

pub fn obrec() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_obrec"));
    // Flags given by a test must not be overridden by the environment of whoever runs it.
    for (key, _) in std::env::vars() {
        if key.starts_with("OBREC_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `obrec record` from the exchange at `ws` (REST at `rest`), writing data and logs where a test
/// can read them back. Callers add the flags the test is about.
pub fn record_from(ws: &str, rest: &str, data: &Path, logs: &Path) -> Command {
    let mut cmd = obrec();
    cmd.args(["record", "--endpoint", ws, "--rest-endpoint", rest])
        .arg("--data-dir")
        .arg(data)
        .arg("--log-dir")
        .arg(logs);
    cmd
}

/// `obrec record` from the simulator, writing `<dir>/data` and `<dir>/logs`.
pub fn record_sim(sim: &obrec::Sim, dir: &Path) -> Command {
    record_from(
        &sim.ws_url(),
        &sim.rest_url(),
        &dir.join("data"),
        &dir.join("logs"),
    )
}

/// A recording's depth line, as read back from a file.
#[derive(Debug, Clone)]
pub struct Line {
    pub file: PathBuf,
    pub text: String,
    pub json: serde_json::Value,
}

impl Line {
    pub fn u(&self) -> u64 {
        self.json["u"].as_u64().unwrap()
    }
    pub fn symbol(&self) -> &str {
        self.json["symbol"].as_str().unwrap()
    }
    /// The raw `data` payload exactly as it stands in the line.
    pub fn raw_data(&self) -> &str {
        let start = self.text.find(",\"data\":").unwrap() + ",\"data\":".len();
        &self.text[start..self.text.len() - 1]
    }
}

/// Depth files under `<data>/order_book`, in name order.
pub fn depth_files(data_dir: &Path) -> Vec<PathBuf> {
    recordings(data_dir, "_depth")
}

/// Snapshot files under `<data>/order_book`, in name order.
pub fn snapshot_files(data_dir: &Path) -> Vec<PathBuf> {
    recordings(data_dir, "_snapshot")
}

/// Recordings under `<data>/order_book` whose names carry `marker`, finished or `.part`.
fn recordings(data_dir: &Path, marker: &str) -> Vec<PathBuf> {
    let dir = data_dir.join("order_book");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        name.contains(marker) && (name.ends_with(".ndjson.gz") || name.ends_with(".ndjson.gz.part"))
    });
    files.sort();
    files
}

/// Every line of the given gzip files, decoded strictly: a corrupt member fails the test.
pub fn read_lines(files: &[PathBuf]) -> Vec<Line> {
    let mut lines = Vec::new();
    for file in files {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(File::open(file).unwrap())
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for l in text.lines() {
            let json =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", file.display()));
            lines.push(Line {
                file: file.clone(),
                text: l.to_string(),
                json,
            });
        }
    }
    lines
}

pub fn lines_by_symbol(lines: &[Line]) -> BTreeMap<String, Vec<Line>> {
    let mut map: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for l in lines {
        map.entry(l.symbol().to_string())
            .or_default()
            .push(l.clone());
    }
    map
}

pub fn metrics(data_dir: &Path) -> serde_json::Value {
    let text = fs::read_to_string(data_dir.join("order_book/metrics.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Waits for `check` to hold, polling; panics with `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Sends SIGTERM and asserts a clean exit within `limit`.
pub fn terminate(child: &mut Child, limit: Duration) {
    signal(child, "-TERM");
    let status = wait_with_timeout(child, limit)
        .unwrap_or_else(|| panic!("no exit within {limit:?} of SIGTERM"));
    assert!(status.success(), "exit status {status}");
}

pub fn run_output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

pub fn gunzip_lines(path: &Path) -> usize {
    BufReader::new(flate2::read::MultiGzDecoder::new(File::open(path).unwrap()))
        .lines()
        .count()
}

/// Reads the `metrics on …` line a recorder started with `--metrics-addr` prints first; returns
/// the base URL, and a thread that drains the rest of its stdout (so the recorder never meets a
/// full pipe) and hands it back.
pub fn metrics_url(child: &mut Child) -> (String, std::thread::JoinHandle<String>) {
    announced(child, "metrics on ", "/metrics")
}

/// The first line of `child`'s stdout, `<prefix><url><suffix>`: the url, and a thread that
/// drains the rest of its stdout (so the process never meets a full pipe) and hands it back.
fn announced(
    child: &mut Child,
    prefix: &str,
    suffix: &str,
) -> (String, std::thread::JoinHandle<String>) {
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("first line: {line}"))
        .trim_end_matches(suffix)
        .to_string();
    let rest = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    (url, rest)
}

/// GET `url`: the status and the body, whatever the status.
pub fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// The first `n` frames of `stream` (e.g. `btcusdt@trade`) in the real hftbacktest capture
/// `hftbacktest_usdm_btcusdt_20240808.gz`: each frame's local receipt (ns) and its `data` payload
/// exactly as captured.
pub fn capture_frames(stream: &str, n: usize) -> Vec<(u64, String)> {
    let file = File::open(fixture("hftbacktest_usdm_btcusdt_20240808.gz")).unwrap();
    let prefix = format!(r#"{{"stream":"{stream}","data":"#);
    BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .map(Result::unwrap)
        .filter_map(|line| {
            let (ns, frame) = line.split_once(' ')?;
            let data = frame.strip_prefix(&prefix)?.strip_suffix('}')?;
            Some((ns.parse().unwrap(), data.to_owned()))
        })
        .take(n)
        .collect()
}

/// A line of a stream beside the book in the recorder's layout around `data`, which is kept as
/// is; the kind's ids (`t`; `a`,`f`,`l`; `u`) are read from it. A backfilled line has `conn` 0.
pub fn kind_line(stream: &str, recv_ns: u64, conn: u64, backfill: bool, data: &str) -> String {
    let d: serde_json::Value = serde_json::from_str(data).unwrap();
    let symbol = d["s"].as_str().unwrap();
    let e = d["E"].as_u64().unwrap();
    let ids: String = ["t", "a", "f", "l", "u"]
        .iter()
        .filter_map(|key| Some(format!(r#","{key}":{}"#, d.get(*key)?.as_u64()?)))
        .collect();
    let ts_recv = recv_ns as f64 / 1e6;
    let mark = if backfill { r#","backfill":true"# } else { "" };
    format!(
        r#"{{"timestamp":"2024-08-09T00:00:00.000Z","symbol":"{symbol}","ts_recv":{ts_recv:.3},"E":{e}{ids},"latency_event_ms":{:.3},"latency_pipeline_ms":0.010,"recv_ns":{recv_ns},"conn":{conn},"stream":"{stream}"{mark},"data":{data}}}"#,
        ts_recv - e as f64
    )
}

/// A `serverShutdown` meta line, as the recorder writes it among a stream's lines.
pub fn shutdown_line(recv_ns: u64, conn: u64) -> String {
    format!(
        r#"{{"meta":"serverShutdown","recv_ns":{recv_ns},"conn":{conn},"data":{{"e":"serverShutdown","E":{}}}}}"#,
        recv_ns / 1_000_000
    )
}

/// Writes `lines` as one gzip member of NDJSON.
pub fn write_ndjson_gz(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for line in lines {
        gz.write_all(line.as_bytes()).unwrap();
        gz.write_all(b"\n").unwrap();
    }
    fs::write(path, gz.finish().unwrap()).unwrap();
}

/// Starts the real `obrec sim` on `127.0.0.1:0` with `args`, writing its port file in `dir`;
/// returns the process and its port once it listens.
pub fn spawn_sim(dir: &Path, args: &[&str]) -> (Child, u16) {
    let port_file = dir.join("port");
    let child = obrec()
        .arg("sim")
        .args(args)
        .arg(format!("--port-file={}", port_file.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = None;
    wait_for(Duration::from_secs(5), "the sim's port file", || {
        port = fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok());
        port.is_some()
    });
    (child, port.unwrap())
}

/// Files of the series `kind` (`trade`, `bookTicker`, …) under `<data>/order_book`, in name order.
pub fn kind_files(data_dir: &Path, kind: &str) -> Vec<PathBuf> {
    recordings(data_dir, &format!("_{kind}_"))
}

/// One event of a kind recording to write: receipt ns, payload, connection.
pub struct KindEvent<'a> {
    pub recv_ns: u64,
    pub data: &'a str,
    pub conn: u64,
    pub backfill: bool,
}

/// Writes `events` of `kind` as an obrec recording at `path` (gzip, one member), each line as
/// the recorder writes it; `meta` lines go in after the event of the given index.
pub fn write_kind_file(
    path: &Path,
    kind: obrec::Kind,
    events: &[KindEvent],
    meta: &[(usize, &str)],
) {
    let mut text = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(e.data).unwrap();
        let id = |k: &str| v[k].as_u64().unwrap();
        let ids = match kind {
            obrec::Kind::Trade => obrec::KindIds::Trade { t: id("t") },
            obrec::Kind::AggTrade => obrec::KindIds::AggTrade {
                a: id("a"),
                f: id("f"),
                l: id("l"),
            },
            obrec::Kind::BookTicker => obrec::KindIds::BookTicker { u: id("u") },
            _ => obrec::KindIds::None,
        };
        let symbol = v["s"].as_str().unwrap();
        let stream = format!("{}@{}", symbol.to_ascii_lowercase(), kind.name());
        obrec::encode_kind(
            &mut text,
            &obrec::KindLine {
                symbol,
                stream: &stream,
                data: e.data,
                event_ms: id("E"),
                ids,
                pipeline_us: Some(50),
                recv_ns: e.recv_ns,
                conn: e.conn,
                backfill: e.backfill,
            },
        );
        for (_, line) in meta.iter().filter(|(at, _)| *at == i) {
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
    }
    let mut out = Vec::new();
    obrec::MemberEncoder::new(1).encode(&text, &mut out);
    fs::write(path, out).unwrap();
}

/// Writes diff-depth payloads as an obrec depth recording at `path`: (receipt ns, payload, conn).
pub fn write_depth_file(path: &Path, events: &[(u64, &str, u64)]) {
    let mut text = Vec::new();
    for &(recv_ns, data, conn) in events {
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        let id = |k: &str| v[k].as_u64().unwrap();
        obrec::encode_depth(
            &mut text,
            &obrec::DepthLine {
                symbol: v["s"].as_str().unwrap(),
                stream: "btcusdt@depth@0ms",
                data,
                event_ms: id("E"),
                trade_ms: v["T"].as_u64(),
                ids: obrec::Ids {
                    first: id("U"),
                    last: id("u"),
                    prev: id("pu"),
                },
                pipeline_us: Some(50),
                recv_ns,
                conn,
            },
        );
    }
    let mut out = Vec::new();
    obrec::MemberEncoder::new(1).encode(&text, &mut out);
    fs::write(path, out).unwrap();
}

/// Reads the `tap on ws://…` line a recorder started with `--tap` prints first; returns the
/// tap's `ws://HOST:PORT`, and a thread that drains the rest of its stdout and hands it back.
pub fn tap_url(child: &mut Child) -> (String, std::thread::JoinHandle<String>) {
    announced(child, "tap on ", "")
}

/// The lines of a gzip text file (a CSV export), each without its newline.
pub fn gunzip_text(path: &Path) -> Vec<String> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(str::to_string).collect()
}

/// The fixture `name` imported as an obrec data directory `<dir>/data`: depth, snapshot, trade
/// and bookTicker files.
pub fn import_fixture(name: &str, dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let out = run_output(
        obrec()
            .args(["import", "--format", "hftbacktest"])
            .arg(fixture(name))
            .arg("-o")
            .arg(&data),
    );
    assert!(out.status.success(), "{out:?}");
    data
}

/// Every file under `dir`, relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
