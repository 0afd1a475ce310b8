//! End-to-end: the real `obrec` binary records from the simulator over real sockets, and the
//! files it leaves are read back and compared with what the simulator sent.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use obrec::{Rate, SentFrame, Sim, SimConfig};

fn sim(symbols: &[&str], rate: f64) -> Sim {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            rate: Rate::PerSecond(rate),
            record_sent: true,
            ..SimConfig::default()
        },
    )
    .unwrap()
}

fn sent_by_symbol(sent: &[SentFrame]) -> BTreeMap<String, Vec<&SentFrame>> {
    let mut map: BTreeMap<String, Vec<&SentFrame>> = BTreeMap::new();
    for f in sent {
        map.entry(f.symbol.clone()).or_default().push(f);
    }
    map
}

#[test]
fn every_frame_sent_is_recorded_once_in_order_with_exact_payload() {
    let sim = sim(&["ETHUSDT", "BTCUSDT"], 50.0);
    let dir = tempfile::tempdir().unwrap();
    let out = run_output(obrec().args([
        "record",
        "--symbol",
        "ethusdt,BTCUSDT",
        "--depth",
        "10",
        "--endpoint",
        &sim.ws_url(),
        "--data-dir",
        &dir.path().join("data").to_string_lossy(),
        "--log-dir",
        &dir.path().join("logs").to_string_lossy(),
        "--run-minutes",
        "0.05",
        "--print-interval",
        "1",
        "--flush-ms",
        "100",
    ]));
    let sent = sim.sent();
    sim.shutdown();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("SUMMARY | t=")),
        "{stdout}"
    );

    let data = dir.path().join("data");
    let files = depth_files(&data);
    assert!(
        files.iter().all(|f| f.extension().unwrap() == "gz"),
        "a .part left: {files:?}"
    );
    let lines = read_lines(&files);
    let recorded = lines_by_symbol(&lines);
    let sent = sent_by_symbol(&sent);
    assert_eq!(recorded.keys().collect::<Vec<_>>(), ["BTCUSDT", "ETHUSDT"]);
    for (symbol, lines) in &recorded {
        let sent = &sent[symbol];
        // Everything recorded was sent, in the same order, each exactly once, byte for byte.
        assert!(lines.len() <= sent.len());
        for (line, frame) in lines.iter().zip(sent.iter()) {
            assert_eq!(line.u(), frame.u, "{symbol}: order or loss");
            assert_eq!(
                line.raw_data(),
                frame.payload,
                "{symbol}: payload not byte-exact"
            );
            assert_eq!(line.json["stream"], frame.stream);
            assert_eq!(line.json["conn"], 1);
            assert_eq!(line.json["pu"].as_u64(), Some(frame.pu));
        }
        // Only frames still in flight when the recorder stopped may be missing.
        assert!(
            sent.len() - lines.len() <= 10,
            "{symbol}: {} sent, {} recorded",
            sent.len(),
            lines.len()
        );
        assert!(
            lines.len() >= 100,
            "{symbol}: only {} lines in 3 s at 50/s",
            lines.len()
        );
        for l in lines {
            let e = l.json["E"].as_u64().unwrap();
            let recv_ns = l.json["recv_ns"].as_u64().unwrap();
            let ts_recv = l.json["ts_recv"].as_f64().unwrap();
            assert!((ts_recv - recv_ns as f64 / 1e6).abs() < 0.002);
            let lat = l.json["latency_event_ms"].as_f64().unwrap();
            assert!((lat - (ts_recv - e as f64)).abs() < 0.002);
            assert!(l.json["timestamp"].as_str().unwrap().ends_with('Z'));
            assert_eq!(l.json["data"]["u"], l.json["u"]);
        }
    }
    let m = metrics(&data);
    assert_eq!(m["total_messages"].as_u64().unwrap() as usize, lines.len());
    assert_eq!(m["continuity"]["breaks"], 0);
    assert_eq!(m["continuity"]["reconnects"], 0);
    assert_eq!(m["log_queue"]["drops"], 0);
    for (symbol, lines) in &recorded {
        assert_eq!(
            m["symbols"][symbol]["messages"].as_u64().unwrap() as usize,
            lines.len()
        );
    }
    assert!(m["bytes_written"].as_u64().unwrap() > 0);
}

#[test]
fn sigterm_finishes_every_file_and_exits_zero_quickly() {
    stop_finishes_every_file("-TERM");
}

/// Closing the terminal stops a recording as cleanly as SIGTERM does.
#[test]
fn sighup_stops_a_recording_as_sigterm_does() {
    stop_finishes_every_file("-HUP");
}

/// Records, stops the recorder with `signal`, and checks that it exited 0 within 2 s with every
/// file finished and the final metrics counting every line.
fn stop_finishes_every_file(signal_name: &str) {
    let sim = sim(&["ETHUSDT"], 100.0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = record_sim(&sim, dir.path())
        .args([
            "--symbol",
            "ETHUSDT",
            "--print-interval",
            "0.5",
            "--flush-ms",
            "100",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "lines in metrics.json", || {
        std::fs::read_to_string(data.join("order_book/metrics.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|m| m["total_messages"].as_u64() > Some(50))
    });
    // A live .part file is readable as it stands.
    let live = depth_files(&data);
    assert!(live[0].to_string_lossy().ends_with(".part"));
    assert!(gunzip_lines(&live[0]) > 0);

    signal(&child, signal_name);
    let status = wait_with_timeout(&mut child, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no exit within 2 s of {signal_name}"));
    assert!(status.success(), "exit status {status}");
    sim.shutdown();
    let files = depth_files(&data);
    assert_eq!(files.len(), 1);
    assert!(
        files[0].to_string_lossy().ends_with(".ndjson.gz"),
        "{files:?}"
    );
    let lines = read_lines(&files);
    assert_eq!(
        metrics(&data)["total_messages"].as_u64().unwrap() as usize,
        lines.len()
    );
}

#[test]
fn bad_input_exits_2_with_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let logs = dir.path().join("logs");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let cases: &[&[&str]] = &[
        &["--symbol", "../x"],
        &["--symbol", "eth usdt"],
        &["--depth", "7"],
        &["--run-minutes", "-1"],
        &["record", "--stale-sec", "-5"],
        &["--endpoint", "ftp://x"],
    ];
    for args in cases {
        let out = run_output(
            obrec()
                .args(*args)
                .arg("--data-dir")
                .arg(&data)
                .arg("--log-dir")
                .arg(&logs),
        );
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?}: no message");
        assert!(!data.exists() && !logs.exists(), "{args:?} wrote something");
    }
    // A data dir that cannot be created.
    let out = run_output(
        record_from(
            "ws://127.0.0.1:9",
            "http://127.0.0.1:9",
            &blocker.join("sub"),
            &logs,
        )
        .args(["--run-minutes", "0.01"]),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("data dir"), "{stderr}");
    assert!(!logs.exists());
}

#[test]
fn seed_python_snippet_reads_the_output_unchanged() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("python3 not installed: skipped");
        return;
    }
    let sim = sim(&["ETHUSDT"], 50.0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = run_output(record_sim(&sim, dir.path()).args(["--run-minutes", "0.02"]));
    sim.shutdown();
    assert!(out.status.success());
    let file = &depth_files(&data)[0];
    // The seed's analysis snippet, verbatim but for the path.
    let script = format!(
        r#"
import gzip
import json
from pathlib import Path

ndjson_file = Path({path:?})

latencies = []
with gzip.open(ndjson_file, "rt", encoding="utf-8") as f:
    for line in f:
        data = json.loads(line)
        latencies.append(data["latency_event_ms"])

import statistics
print(len(latencies), statistics.mean(latencies), max(latencies))
"#,
        path = file.to_string_lossy()
    );
    let py = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let printed = String::from_utf8_lossy(&py.stdout);
    let n: usize = printed.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(n, read_lines(std::slice::from_ref(file)).len());
    assert!(n > 0);
}

fn log_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn logs_rotate_by_interval_and_by_size_keeping_the_backups_asked_for() {
    let sim = sim(&["ETHUSDT"], 50.0);
    for (mode, extra) in [
        ("interval", ["--rotate-sec", "1"]),
        ("size", ["--max-bytes", "2000"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let out = run_output(
            record_from(
                &sim.ws_url(),
                &sim.rest_url(),
                &dir.path().join("data"),
                &logs,
            )
            .args(["--symbol", "ETHUSDT", "--run-minutes", "0.06"])
            .args([
                "--print-interval",
                "0.2",
                "--rotate",
                mode,
                "--backups",
                "2",
                "--log-level",
                "debug",
            ])
            .args(extra),
        );
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let files = log_files(&logs);
        // It rotated more than twice in 3.6 s, and kept the current file plus --backups.
        assert_eq!(files.len(), 3, "{mode}: {files:?}");
        let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("ethusdt_20"), "{mode}: {name}");
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert!(text.contains("SUMMARY | t="), "{mode}");
        if mode == "size" {
            for f in &files[..files.len() - 1] {
                // A file is rotated once it passes the limit, by at most one line.
                assert!(
                    std::fs::metadata(f).unwrap().len() < 2000 + 1000,
                    "{mode}: {f:?}"
                );
            }
        }
    }
    sim.shutdown();
}
