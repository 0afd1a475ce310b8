//! A hostile or broken exchange on the wire, against the real recorder binary: WebSocket protocol
//! violations, a handshake that never finishes, and REST answers with numbers and sizes no real
//! exchange sends. Each is counted or bounded, logged, and never stops the recorder or keeps it
//! from stopping.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use obrec::{Fault, Faults, Rate, Sim, SimConfig};

/// Longest any test here waits for something that should happen within a few seconds.
const WATCHDOG: Duration = Duration::from_secs(30);

fn start_sim(faults: Faults) -> Sim {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            rate: Rate::PerSecond(50.0),
            faults,
            ..SimConfig::default()
        },
    )
    .unwrap()
}

/// Records ETHUSDT from `sim` for `secs` seconds with quick timers, plus `extra` flags.
fn record_for(sim: &Sim, dir: &Path, secs: f64, extra: &[&str]) -> Output {
    run_output(
        record_sim(sim, dir)
            .args([
                "--symbol",
                "ETHUSDT",
                "--run-minutes",
                &(secs / 60.0).to_string(),
            ])
            .args(["--flush-ms", "100", "--print-interval", "1"])
            .args(["--stale-sec", "1", "--ping-sec", "1"])
            .args(extra),
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_success(out: &Output) {
    assert!(out.status.success(), "exit {}: {}", out.status, stderr(out));
}

#[test]
fn protocol_violations_are_counted_as_bad_frames_and_cost_a_reconnect() {
    let kinds = ["utf8", "opcode", "masked", "rsv", "close-code"];
    // Each kind is its own sim and recorder; they run side by side.
    std::thread::scope(|scope| {
        for kind in kinds {
            scope.spawn(move || {
                let sim = start_sim(Faults {
                    violation_every: Some(15),
                    violation: kind.parse().unwrap(),
                    ..Faults::default()
                });
                let dir = tempfile::tempdir().unwrap();
                let out = record_for(&sim, dir.path(), 2.5, &[]);
                let injected = sim.stats().injected(Fault::Violation);
                sim.shutdown();
                assert_success(&out);
                let m = metrics(&dir.path().join("data"));
                let bad = m["bad_frames"].as_u64().unwrap();
                // The last one may have been sent as the recorder stopped reading.
                assert!(
                    bad >= 1 && bad <= injected && bad + 1 >= injected,
                    "{kind}: {bad} bad frames of {injected} sent"
                );
                // The socket cannot be resynchronised after a violation: each costs the connection.
                assert!(
                    m["continuity"]["reconnects"].as_u64().unwrap() >= bad - 1,
                    "{kind}: {m}"
                );
                let log = stderr(&out);
                assert!(log.contains("bad frame on conn 1"), "{kind}: {log}");
                assert!(!read_lines(&depth_files(&dir.path().join("data"))).is_empty());
            });
        }
    });
}

/// Reads a child's stderr on a thread, line by line.
fn stderr_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let pipe = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in pipe.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns every line read so far.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + WATCHDOG;
    while !seen.iter().any(|l| l.contains(needle)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no `{needle}` on stderr; got:\n{}", seen.join("\n")),
        }
    }
}

#[test]
fn a_handshake_that_never_finishes_is_a_connect_failure_and_sigterm_stops_the_reader() {
    // 1 byte a second: a 130-byte upgrade response would take two minutes.
    let sim = start_sim(Faults {
        handshake_drip: Some(Duration::from_secs(1)),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut child = record_sim(&sim, dir.path())
        .args(["--symbol", "ETHUSDT"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let started = Instant::now();
    let url = format!("{}/stream?streams=ethusdt@depth5@100ms", sim.ws_url());
    wait_for_line(&lines, "handshake failed: no answer within 10s", &mut seen);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let failure = seen
        .iter()
        .find(|l| l.contains("no answer within"))
        .unwrap();
    assert!(failure.contains(&url), "{failure}");
    // The retry comes after a backoff and is dripped too: SIGTERM lands inside its handshake.
    std::thread::sleep(Duration::from_secs(1));
    assert!(sim.stats().injected(Fault::DrippedHandshake) >= 2);
    signal(&child, "-TERM");
    let stopping = Instant::now();
    let status = wait_with_timeout(&mut child, WATCHDOG).expect("the recorder stops");
    assert!(
        stopping.elapsed() < Duration::from_millis(1500),
        "{:?}",
        stopping.elapsed()
    );
    // Nothing was ever recorded: the run says so, with the cause.
    assert_eq!(status.code(), Some(1));
    let rest: Vec<String> = lines.iter().collect();
    let last = rest.join("\n");
    assert!(
        last.contains(&format!(
            "never connected to {url}: handshake failed: no answer within 10s"
        )),
        "{last}"
    );
    assert!(
        metrics(&dir.path().join("data"))["connect_failures"]
            .as_u64()
            .unwrap()
            >= 1
    );
    sim.shutdown();
}

#[test]
fn sigterm_stops_a_recorder_whose_tcp_connect_is_never_answered() {
    // A listener that never accepts, with its queue full: the kernel drops further SYNs, so a
    // connect waits as it would on a host that has gone.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let filler: Vec<_> = (0..2)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
        })
        .collect();
    assert!(!filler.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let (ws, rest) = (format!("ws://{addr}"), format!("http://{addr}"));
    let mut child = record_from(
        &ws,
        &rest,
        &dir.path().join("data"),
        &dir.path().join("logs"),
    )
    .args(["--symbol", "ETHUSDT"])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let lines = stderr_lines(&mut child);
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, "-TERM");
    let stopping = Instant::now();
    let status = wait_with_timeout(&mut child, WATCHDOG).expect("the recorder stops");
    assert!(
        stopping.elapsed() < Duration::from_millis(1500),
        "{:?}",
        stopping.elapsed()
    );
    let log: Vec<String> = lines.iter().collect();
    let log = log.join("\n");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("never connected to ws://"), "{log}");
    assert!(log.contains("stopped while connecting"), "{log}");
}

#[test]
fn a_huge_retry_after_is_bounded_and_the_snapshot_thread_lives() {
    let sim = start_sim(Faults {
        reject_snapshots: 1,
        snapshot_status: 429,
        retry_after: Some(u64::MAX),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = record_for(&sim, dir.path(), 2.0, &["--depth", "0"]);
    sim.shutdown();
    assert_success(&out);
    let log = stderr(&out);
    assert!(
        log.contains("Retry-After of 18446744073709551615 s is longer than any Binance ban"),
        "{log}"
    );
    assert!(log.contains("pausing snapshots for 259200s"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let m = metrics(&dir.path().join("data"));
    assert!(
        m["symbols"]["ETHUSDT"]["throttled_snapshots"]
            .as_u64()
            .unwrap()
            >= 1,
        "{m}"
    );
}

#[test]
fn a_used_weight_past_the_limit_pauses_snapshots_with_a_warning() {
    let sim = start_sim(Faults {
        used_weight: Some(u64::MAX),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = record_for(&sim, dir.path(), 2.0, &["--depth", "0"]);
    sim.shutdown();
    assert_success(&out);
    let log = stderr(&out);
    assert!(
        log.contains("x-mbx-used-weight-1m of 18446744073709551615 is over the exchange's limit"),
        "{log}"
    );
    assert!(log.contains("near the limit: pausing snapshots"), "{log}");
    // The snapshot that carried it was good, and was recorded.
    let snapshots = snapshot_lines(&dir.path().join("data"));
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
}

#[test]
fn a_snapshot_body_past_the_limit_is_an_error_not_a_record() {
    let sim = start_sim(Faults {
        snapshot_bytes: Some(5 << 20),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = record_for(&sim, dir.path(), 2.0, &["--depth", "0"]);
    let padded = sim.stats().injected(Fault::PaddedSnapshot);
    sim.shutdown();
    assert_success(&out);
    let log = stderr(&out);
    assert!(log.contains("body larger than 4 MiB"), "{log}");
    let m = metrics(&dir.path().join("data"));
    let errors = m["symbols"]["ETHUSDT"]["snapshot_errors"].as_u64().unwrap();
    assert!(
        errors >= 1 && errors <= padded,
        "{errors} errors of {padded} sent"
    );
    assert!(snapshot_lines(&dir.path().join("data")).is_empty());
}

/// Every line of the snapshot files under `<data>/order_book`.
fn snapshot_lines(data: &Path) -> Vec<String> {
    read_lines(&snapshot_files(data))
        .into_iter()
        .map(|l| l.text)
        .collect()
}
