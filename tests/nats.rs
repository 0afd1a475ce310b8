//! `record --nats` and `obrec archive` on real nats-server processes (Debian's 2.9, JetStream):
//! a three-node cluster on loopback, the real simulator, real recorders killed and restarted,
//! the archive read back and checked against what the recorders wrote.
//!
//! The tests need `nats-server` on the PATH (`.ci/run` installs it) and fail without it;
//! `OBREC_TEST_NO_NATS=1` skips them where it cannot be installed.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    get, gunzip_text, metrics_url, obrec, record_from, run_output, signal, spawn_sim, wait_for,
};

/// Longest wait for anything in these tests: a cluster electing leaders on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether the tests can run: `nats-server` is there, or the run chose to skip them.
fn nats_available() -> bool {
    if std::env::var("OBREC_TEST_NO_NATS").is_ok_and(|v| v == "1") {
        eprintln!("OBREC_TEST_NO_NATS=1: NATS test skipped");
        return false;
    }
    let found = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "nats-server is not installed (apt-get install nats-server), or set OBREC_TEST_NO_NATS=1"
    );
    true
}

/// A free loopback port: bound, then let go for the server to take.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process killed when the test ends, passed or not.
struct Process(Child);

impl Process {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        signal(&self.0, "-TERM");
        common::wait_with_timeout(&mut self.0, PATIENCE).expect("an exit after SIGTERM")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// NATS servers with JetStream, each with its store under the test's directory.
struct Nats {
    /// How each node is started, to start it again after a kill.
    args: Vec<Vec<String>>,
    nodes: Vec<Option<Process>>,
    urls: Vec<String>,
}

impl Nats {
    /// One server, or a cluster of `n` routed to each other.
    fn start(dir: &Path, n: usize) -> Nats {
        let clients: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_urls: Vec<String> = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let args = (0..n)
            .map(|i| {
                let mut a: Vec<String> = vec![
                    "-js".into(),
                    "-a".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    clients[i].to_string(),
                    "-sd".into(),
                    dir.join(format!("node{i}")).display().to_string(),
                    "-n".into(),
                    format!("node{i}"),
                ];
                if n > 1 {
                    a.extend([
                        "--cluster_name".into(),
                        "obrec".into(),
                        "--cluster".into(),
                        route_urls[i].clone(),
                        "--routes".into(),
                        route_urls.join(","),
                    ]);
                }
                a
            })
            .collect();
        let mut nats = Nats {
            args,
            nodes: (0..n).map(|_| None).collect(),
            urls: clients
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect(),
        };
        for i in 0..n {
            nats.start_node(i);
        }
        nats
    }

    fn start_node(&mut self, i: usize) {
        let child = Command::new("nats-server")
            .args(&self.args[i])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.nodes[i] = Some(Process(child));
        let port = self.urls[i].rsplit(':').next().unwrap().to_string();
        wait_for(PATIENCE, "a nats-server listening", || {
            std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok()
        });
    }

    fn kill_node(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill();
        }
    }

    /// `--nats` of every node.
    fn flag(&self) -> String {
        self.urls.join(",")
    }
}

/// A recorder of the simulator on `port` publishing to `nats`, into `dir`.
fn recorder(port: u16, dir: &Path, nats: &Nats, extra: &[&str]) -> Process {
    let ws = format!("ws://127.0.0.1:{port}");
    let rest = format!("http://127.0.0.1:{port}");
    let child = record_from(&ws, &rest, &dir.join("data"), &dir.join("logs"))
        .args(["--symbol", "BTCUSDT", "--depth", "0", "--speed", "0ms"])
        .args(["--streams", "depth,trade", "--print-interval", "1"])
        .args(["--nats", &nats.flag()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Process(child)
}

/// `obrec archive` of `nats` into `dir`, to be started.
fn archive_command(dir: &Path, nats: &Nats) -> Command {
    let mut command = obrec();
    command
        .args(["archive", "--nats", &nats.flag(), "--print-interval", "1"])
        .arg("--data-dir")
        .arg(dir);
    command
}

/// `obrec archive` of `nats` into `dir`.
fn archiver(dir: &Path, nats: &Nats) -> Process {
    let child = archive_command(dir, nats)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Process(child)
}

/// The archiver's latest report, when there is one.
fn archive_report(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("order_book/archive.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Waits until the running archiver has written `expected` lines in all (`count` reads them
/// back), holds nothing and receives nothing more.
fn wait_archived(dir: &Path, expected: usize) {
    let mut last = None;
    wait_for(PATIENCE, "the archive to hold every event", || {
        std::thread::sleep(Duration::from_millis(500));
        let Some(r) = archive_report(dir) else {
            return false;
        };
        let n = |k: &str| r[k].as_u64().unwrap();
        let settled = n("written") + n("duplicates") + n("bad") == n("received");
        let now = (n("received"), settled);
        let same = last == Some(now);
        last = Some(now);
        same && settled && events(dir).len() >= expected
    });
}

/// One recorded event: the file series, its exchange id, its payload as it stands in the line.
type Event = (String, u64, String);

/// Every event line of the depth, snapshot and trade files under `<dir>/order_book`, file by
/// file in name order (finished or `.part`).
fn events(dir: &Path) -> Vec<Event> {
    let book = dir.join("order_book");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&book)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.to_string_lossy().contains(".ndjson.gz"));
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let series = name.rsplit_once('_').unwrap().0.to_string();
        for line in gunzip_text(&file) {
            let json: serde_json::Value = serde_json::from_str(&line).unwrap();
            let id = ["u", "t", "lastUpdateId"]
                .iter()
                .find_map(|k| json[k].as_u64())
                .unwrap_or_else(|| panic!("no id in {line}"));
            let start = line.find(",\"data\":").unwrap() + ",\"data\":".len();
            out.push((series.clone(), id, line[start..line.len() - 1].to_string()));
        }
    }
    out
}

/// The events of several recordings together, each once: what an archive of them must hold.
fn union(dirs: &[&Path]) -> BTreeMap<(String, u64), String> {
    let mut all = BTreeMap::new();
    for dir in dirs {
        for (series, id, data) in events(dir) {
            let kept = all.entry((series, id)).or_insert_with(|| data.clone());
            assert_eq!(*kept, data, "two recorders disagree on a payload");
        }
    }
    all
}

/// The archive holds exactly `expected`: every event once, payloads byte for byte.
fn assert_archive_is(archive: &Path, expected: &BTreeMap<(String, u64), String>) {
    let archived = events(archive);
    let mut seen = BTreeMap::new();
    for (series, id, data) in archived {
        let key = (series, id);
        assert!(
            seen.insert(key.clone(), data).is_none(),
            "{key:?} archived twice"
        );
    }
    let missing: Vec<_> = expected.keys().filter(|k| !seen.contains_key(*k)).collect();
    assert!(missing.is_empty(), "not archived: {missing:?}");
    let extra: Vec<_> = seen.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(extra.is_empty(), "archived but never recorded: {extra:?}");
    assert_eq!(&seen, expected, "payloads differ");
}

/// `obrec replay --strict` of a data directory: whether it passes, and what it said.
fn strict_replay(dir: &Path) -> (bool, String) {
    let out = run_output(
        obrec()
            .args(["replay", "--strict"])
            .arg(dir.join("order_book")),
    );
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said.into_owned())
}

fn strict_replay_passes(dir: &Path) -> bool {
    strict_replay(dir).0
}

/// What a report says of continuity, all series: breaks, reconnect gaps, missing ids.
type Continuity = (u64, u64, u64);

/// The continuity the archiver's report gives.
fn archive_continuity(report: &serde_json::Value) -> Continuity {
    let n = |k: &str| report[k].as_u64().unwrap();
    (n("breaks"), n("reconnect_gaps"), n("missing_ids"))
}

/// The continuity `obrec replay` finds in a data directory: depth per symbol and the streams
/// beside the book per series, summed.
fn replay_continuity(dir: &Path) -> Continuity {
    let out = run_output(
        obrec()
            .args(["replay", "--json", "-"])
            .arg(dir.join("order_book")),
    );
    assert!(out.status.success(), "replay failed");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sum = |list: &serde_json::Value, key: &str| -> u64 {
        let items: Vec<&serde_json::Value> = match list {
            serde_json::Value::Object(map) => map.values().collect(),
            serde_json::Value::Array(items) => items.iter().collect(),
            _ => Vec::new(),
        };
        items.iter().map(|v| v[key].as_u64().unwrap()).sum()
    };
    let (symbols, kinds) = (&report["symbols"], &report["kinds"]);
    (
        sum(symbols, "breaks") + sum(kinds, "breaks"),
        sum(symbols, "reconnect_gaps") + sum(kinds, "reconnect_gaps"),
        sum(kinds, "missing_ids"),
    )
}

/// Waits until the archiver has a report: the stream is up and being read.
fn wait_stream_up(dir: &Path) {
    wait_for(PATIENCE, "the archiver to write", || {
        archive_report(dir).is_some_and(|r| r["written"].as_u64() > Some(0))
    });
}

/// Two recorders of one simulator whose connections each stall for a second at a different
/// moment (a break in each one's files, where the other has the data) publish to a three-node
/// cluster (R3) that loses a node mid-run: the archive holds every event either recorder has,
/// once, payloads byte-exact, and replays clean where neither recorder's own files do.
#[test]
fn two_recorders_with_their_own_holes_make_one_gap_free_archive_on_a_cluster() {
    if !nats_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(&dir.path().join("nats"), 3);
    // About 180 frames a second per connection (depth and trades): each stalls some 5.5 s after
    // it opened, for 1 s; the second recorder starts 2.5 s after the first, so each stall falls
    // where the other recorder is delivering, with a second to spare for a slow start.
    let (sim, port) = spawn_sim(
        dir.path(),
        &[
            "--rate=50",
            "--symbol=BTCUSDT",
            "--stall-after=1000",
            "--stall-sec=1",
        ],
    );
    let _sim = Process(sim);
    let (a, b, archive) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("archive"),
    );
    let mut archiving = archiver(&archive, &nats);
    let mut first = recorder(port, &a, &nats, &[]);
    std::thread::sleep(Duration::from_millis(2500));
    let mut second = recorder(port, &b, &nats, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    nats.kill_node(1);
    std::thread::sleep(Duration::from_secs(8));
    assert!(first.terminate().success());
    assert!(second.terminate().success());

    let expected = union(&[&a.join("data"), &b.join("data")]);
    wait_archived(&archive, expected.len());
    assert!(archiving.terminate().success());
    assert_archive_is(&archive, &expected);
    assert!(
        !strict_replay_passes(&a.join("data")) && !strict_replay_passes(&b.join("data")),
        "each recorder alone has a break"
    );
    let (passed, said) = strict_replay(&archive);
    assert!(
        passed,
        "the archive has a break: {said}\n{:?}",
        archive_report(&archive)
    );
    let report = archive_report(&archive).unwrap();
    assert_eq!(archive_continuity(&report), replay_continuity(&archive));
    assert_eq!(report["series"]["btcusdt_depth"]["breaks"], 0);
}

/// The archiver killed twice mid-run and restarted: its files hold the recorder's lines exactly,
/// in the same order, nothing lost, nothing twice.
#[test]
fn a_killed_archiver_resumes_without_loss_or_duplicate() {
    if !nats_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"), 1);
    let (sim, port) = spawn_sim(dir.path(), &["--rate=100", "--symbol=BTCUSDT"]);
    let _sim = Process(sim);
    let (rec, archive) = (dir.path().join("rec"), dir.path().join("archive"));
    let mut recording = recorder(port, &rec, &nats, &[]);
    let mut archiving = archiver(&archive, &nats);
    wait_stream_up(&archive);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        archiving.kill();
        std::thread::sleep(Duration::from_millis(500));
        archiving = archiver(&archive, &nats);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(recording.terminate().success());
    let recorded = events(&rec.join("data"));
    wait_archived(&archive, recorded.len());
    assert!(archiving.terminate().success());
    let by_series = |events: Vec<Event>| {
        let mut map: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        for (series, id, data) in events {
            map.entry(series).or_default().push((id, data));
        }
        map
    };
    let (archived, recorded) = (by_series(events(&archive)), by_series(recorded));
    assert_eq!(
        archived.keys().collect::<Vec<_>>(),
        recorded.keys().collect::<Vec<_>>()
    );
    for (series, lines) in &recorded {
        let ids = |lines: &[(u64, String)]| lines.iter().map(|l| l.0).collect::<Vec<_>>();
        assert_eq!(
            ids(&archived[series]),
            ids(lines),
            "{series}: ids, in order"
        );
        assert!(archived[series] == *lines, "{series}: payloads differ");
    }
    assert!(strict_replay_passes(&archive));
    // The last run started on files its predecessors wrote, and took up each series there.
    let report = archive_report(&archive).unwrap();
    assert_eq!(archive_continuity(&report), (0, 0, 0), "{report}");
    assert_eq!(replay_continuity(&archive), (0, 0, 0));
    assert!(report["series"]["btcusdt_trade"]["events"].as_u64() > Some(0));
}

/// The exchange loses depth events and trades: the archiver, stopped and started again midway,
/// reports over its two runs the breaks and missing ids `obrec replay` finds in its files, each
/// once, lists the latest with their ids, and serves its totals on `/metrics`.
#[test]
fn the_archiver_reports_the_breaks_replay_finds_in_its_files_across_a_restart() {
    if !nats_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"), 1);
    // About one depth break and a few lost trades a second.
    let (sim, port) = spawn_sim(
        dir.path(),
        &[
            "--rate=100",
            "--symbol=BTCUSDT",
            "--gap-every=100",
            "--trade-gap-every=30",
        ],
    );
    let _sim = Process(sim);
    let (rec, archive) = (dir.path().join("rec"), dir.path().join("archive"));
    let mut recording = recorder(port, &rec, &nats, &[]);
    let mut archiving = archiver(&archive, &nats);
    wait_stream_up(&archive);
    std::thread::sleep(Duration::from_secs(2));
    assert!(archiving.terminate().success());
    let first = archive_continuity(&archive_report(&archive).unwrap());
    let mut child = archive_command(&archive, &nats)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (url, _rest) = metrics_url(&mut child);
    archiving = Process(child);
    std::thread::sleep(Duration::from_secs(2));
    assert!(recording.terminate().success());
    wait_archived(&archive, events(&rec.join("data")).len());
    let (status, scraped) = get(&format!("{url}/metrics"));
    assert_eq!(status, 200);
    assert!(archiving.terminate().success());
    let report = archive_report(&archive).unwrap();
    let second = archive_continuity(&report);
    let both = (first.0 + second.0, first.1 + second.1, first.2 + second.2);
    assert_eq!(
        both,
        replay_continuity(&archive),
        "{first:?} then {second:?}"
    );
    assert_eq!(
        both,
        replay_continuity(&rec.join("data")),
        "the recorder's own"
    );
    assert!(first.0 > 0 && second.0 > 0, "{first:?} then {second:?}");
    assert!(both.2 > 0, "no trade id missing");
    let latest = report["series"]["btcusdt_depth"]["latest_breaks"]
        .as_array()
        .unwrap();
    assert!(!latest.is_empty() && latest[0]["to"].as_u64() > latest[0]["from"].as_u64());
    let counter = |name: &str| -> u64 {
        let line = scraped.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.unwrap_or_else(|| panic!("no {name} in {scraped}"))[name.len() + 1..]
            .parse()
            .unwrap()
    };
    assert_eq!(counter("obrec_archive_breaks_total"), second.0);
    assert_eq!(counter("obrec_archive_missing_ids_total"), second.2);
    assert_eq!(
        counter("obrec_archive_written_total"),
        report["written"].as_u64().unwrap()
    );
}

/// NATS stops under a running recorder and comes back: the files are whole, the lines the
/// hand-off could not hold are counted as dropped, publishing resumes, and the archive holds
/// the rest.
#[test]
fn nats_down_costs_the_files_nothing_and_publishing_resumes() {
    if !nats_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(&dir.path().join("nats"), 1);
    let (sim, port) = spawn_sim(dir.path(), &["--rate=100", "--symbol=BTCUSDT"]);
    let _sim = Process(sim);
    let (rec, archive) = (dir.path().join("rec"), dir.path().join("archive"));
    let mut recording = recorder(port, &rec, &nats, &["--nats-queue", "50"]);
    let metrics = |key: &str| -> u64 {
        let path = rec.join("data/order_book/metrics.json");
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|m| m["nats"][key].as_u64())
            .unwrap_or(0)
    };
    wait_for(PATIENCE, "lines confirmed", || metrics("acked") > 0);
    nats.kill_node(0);
    let down = Instant::now();
    wait_for(PATIENCE, "drops while NATS is down", || {
        metrics("dropped") > 0
    });
    std::thread::sleep(Duration::from_secs(2).saturating_sub(down.elapsed()));
    let acked_before = metrics("acked");
    nats.start_node(0);
    wait_for(PATIENCE, "publishing to resume", || {
        metrics("acked") > acked_before + 100
    });
    assert!(recording.terminate().success());
    assert!(
        strict_replay_passes(&rec.join("data")),
        "the files lost data"
    );

    let recorded = union(&[&rec.join("data")]);
    let dropped = metrics("dropped") as usize;
    let mut archiving = archiver(&archive, &nats);
    wait_archived(&archive, recorded.len() - dropped);
    assert!(archiving.terminate().success());
    let archived = events(&archive);
    assert!(
        archived.len() >= recorded.len() - dropped,
        "more lost than dropped"
    );
    for (series, id, data) in &archived {
        assert_eq!(recorded.get(&(series.clone(), *id)), Some(data));
    }
    let distinct: std::collections::BTreeSet<_> =
        archived.iter().map(|(s, id, _)| (s, id)).collect();
    assert_eq!(distinct.len(), archived.len(), "an event archived twice");
}
