//! Operations under misuse: a stdout nobody reads, two recorders on one data dir, REST snapshots
//! refused, health judged over a recent window.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

use common::*;
use obrec::{Fault, Faults, Rate, Sim, SimConfig};

fn sim(symbols: &[&str], faults: Faults) -> Sim {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            rate: Rate::PerSecond(50.0),
            faults,
            ..SimConfig::default()
        },
    )
    .unwrap()
}

/// A recorder that is killed if the test fails before it stops it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn part_files(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("order_book"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect()
}

fn total_messages(data: &Path) -> u64 {
    std::fs::read_to_string(data.join("order_book/metrics.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|m| m["total_messages"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_closed_stdout_stops_the_printing_not_the_recording() {
    let sim = sim(&["ETHUSDT"], Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let mut child = Running(
        record_sim(&sim, dir.path())
            .args(["--run-minutes", "0.05", "--print-interval", "0.2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // `| head -1`: one line read, then the pipe is closed.
    let mut first = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("SUMMARY"), "{first}");
    let status = wait_with_timeout(&mut child.0, Duration::from_secs(20)).expect("an exit");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let data = dir.path().join("data");
    assert_eq!(part_files(&data), Vec::<String>::new());
    let lines = read_lines(&depth_files(&data));
    assert!(lines.len() > 50, "{} lines", lines.len());
    assert_eq!(metrics(&data)["total_messages"], lines.len());
    sim.shutdown();
}

#[test]
fn a_stdout_nobody_reads_never_stalls_the_recording() {
    let sim = sim(&["ETHUSDT"], Faults::default());
    let dir = tempfile::tempdir().unwrap();
    // A SUMMARY line every 5 ms fills a 64 KiB pipe in under two seconds.
    let mut child = Running(
        record_sim(&sim, dir.path())
            .args(["--print-interval", "0.005"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _unread: ChildStdout = child.0.stdout.take().unwrap();
    let data = dir.path().join("data");
    std::thread::sleep(Duration::from_secs(3));
    let before = total_messages(&data);
    assert!(before > 0);
    wait_for(Duration::from_secs(10), "more events counted", || {
        total_messages(&data) > before + 50
    });
    terminate(&mut child.0, Duration::from_secs(5));
    assert_eq!(part_files(&data), Vec::<String>::new());
    sim.shutdown();
}

#[test]
fn a_second_recorder_on_one_data_dir_is_refused_and_a_killed_ones_lock_is_no_obstacle() {
    let sim = sim(&["ETHUSDT"], Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let record = |logs: &str| {
        let mut cmd = record_from(
            &sim.ws_url(),
            &sim.rest_url(),
            &data,
            &dir.path().join(logs),
        );
        cmd.args(["--print-interval", "0.2"]);
        cmd
    };
    let mut first = Running(
        record("logs1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        Duration::from_secs(10),
        "the first recorder's metrics",
        || total_messages(&data) > 0,
    );
    let second = run_output(record("logs2").args(["--run-minutes", "0.05"]));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.0.id())),
        "{stderr}"
    );
    assert!(!dir.path().join("logs2").exists(), "the refused run logged");

    // kill -9 leaves the lock file behind, but not the lock.
    signal(&first.0, "-KILL");
    first.0.wait().unwrap();
    assert!(data.join("order_book/.lock").exists());
    let third = run_output(record("logs3").args(["--run-minutes", "0.03"]));
    assert!(
        third.status.success(),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    sim.shutdown();
}

#[test]
fn log_pruning_never_deletes_another_recorders_files() {
    let sim = sim(&["ETHUSDT"], Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    // Two data dirs, one log dir, the same first symbol; each keeps no backup and rotates every
    // second, so each prunes often.
    let record = |data: &str, minutes: &str| {
        let mut cmd = record_from(
            &sim.ws_url(),
            &sim.rest_url(),
            &dir.path().join(data),
            &logs,
        );
        cmd.args(["--run-minutes", minutes, "--print-interval", "0.2"])
            .args(["--rotate-sec", "1", "--backups", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    };
    let mut long = Running(record("a", "0.1").spawn().unwrap());
    std::thread::sleep(Duration::from_secs(1));
    assert!(run_output(&mut record("b", "0.03")).status.success());
    let status = wait_with_timeout(&mut long.0, Duration::from_secs(20)).expect("an exit");
    assert!(status.success());
    // Each process kept its own current file, which ends with its final SUMMARY.
    let finals = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .filter(|text| text.contains("final SUMMARY"))
        .count();
    assert_eq!(finals, 2);
    sim.shutdown();
}

#[test]
fn a_refused_snapshot_is_an_error_not_throttling_and_the_book_says_when_it_synced() {
    let sim = sim(
        &["ETHUSDT"],
        Faults {
            reject_snapshots: 2,
            snapshot_status: 400,
            ..Faults::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut child = Running(
        record_sim(&sim, dir.path())
            .args(["--depth", "0", "--print-interval", "0.2"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (url, _stdout) = metrics_url(&mut child.0);
    let data = dir.path().join("data");
    wait_for(Duration::from_secs(20), "a synced book", || {
        total_messages(&data) > 0 && metrics(&data)["symbols"]["ETHUSDT"]["book"]["synced"] == true
    });
    let m = metrics(&data);
    let eth = &m["symbols"]["ETHUSDT"];
    assert_eq!(eth["snapshot_errors"], 2, "{eth}");
    assert_eq!(eth["throttled_snapshots"], 0, "{eth}");
    assert_eq!(m["snapshot_errors"], 2);
    let since = eth["book"]["since_ms"].as_u64().unwrap();
    assert!(since > started_ms && since <= started_ms + 20_000, "{eth}");
    let (_, text) = get(&format!("{url}/metrics"));
    assert!(
        text.contains("obrec_symbol_book_synced{symbol=\"ETHUSDT\"} 1"),
        "{text}"
    );
    assert!(text.contains("obrec_symbol_snapshot_errors_total{symbol=\"ETHUSDT\"} 2"));
    assert_eq!(sim.stats().injected(Fault::RejectedSnapshot), 2);
    terminate(&mut child.0, Duration::from_secs(5));
    let log: String = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(log.contains("http status 400"), "{log}");
    sim.shutdown();
}

fn health(metrics_json: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = run_output(
        obrec()
            .args(["health", "--metrics"])
            .arg(metrics_json)
            .args(extra),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn health_judges_reconnects_over_a_recent_window() {
    let first = sim(&["ETHUSDT"], Faults::default());
    let addr = first.local_addr();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Running(
        record_sim(&first, dir.path())
            .args(["--print-interval", "0.2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let data = dir.path().join("data");
    wait_for(Duration::from_secs(10), "recorded events", || {
        total_messages(&data) > 0
    });
    // The exchange restarts once, early: one reconnect, then a clean run.
    first.shutdown();
    let second = Sim::start(
        &addr.to_string(),
        SimConfig {
            symbols: vec!["ETHUSDT".into()],
            rate: Rate::PerSecond(50.0),
            ..SimConfig::default()
        },
    )
    .unwrap();
    wait_for(Duration::from_secs(10), "the reconnect", || {
        metrics(&data)["continuity"]["reconnects"] == 1
    });
    std::thread::sleep(Duration::from_secs(3));
    let metrics_json = data.join("order_book/metrics.json");
    let (code, out) = health(&metrics_json, &["--window", "2s", "--max-reconnects", "0"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = health(&metrics_json, &["--window", "1h", "--max-reconnects", "0"]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.trim(), "unhealthy: 1 reconnects in the last 1h (max 0)");
    let (code, _) = health(&metrics_json, &["--window", "25h"]);
    assert_eq!(code, Some(2));
    terminate(&mut child.0, Duration::from_secs(5));
    second.shutdown();
}

#[test]
fn healthz_and_obrec_health_agree_on_breaks() {
    let sim = sim(
        &["ETHUSDT"],
        Faults {
            gap_every: Some(20),
            ..Faults::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut child = Running(
        record_sim(&sim, dir.path())
            .args(["--print-interval", "0.2"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (url, _stdout) = metrics_url(&mut child.0);
    let data = dir.path().join("data");
    wait_for(Duration::from_secs(10), "a break reported", || {
        total_messages(&data) > 0 && metrics(&data)["continuity"]["breaks"].as_u64() > Some(0)
    });
    let (status, body) = get(&format!("{url}/healthz"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("breaks in the last 15m (max 0)"), "{body}");
    let (code, out) = health(&data.join("order_book/metrics.json"), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("breaks in the last 15m (max 0)"), "{out}");
    terminate(&mut child.0, Duration::from_secs(5));
    sim.shutdown();
}
