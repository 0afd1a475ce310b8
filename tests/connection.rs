//! The live connection under misuse, against the real binary: a symbol that never delivers, an
//! endpoint that refuses, and restarts into one data dir.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use obrec::{Rate, Sim, SimConfig};

fn sim(symbols: &[&str]) -> Sim {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            rate: Rate::PerSecond(50.0),
            ..SimConfig::default()
        },
    )
    .unwrap()
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// `obrec replay --json` of a data dir's recordings.
fn replay(data: &Path) -> serde_json::Value {
    let json = data.join("replay.json");
    let out = run_output(
        obrec()
            .arg("replay")
            .arg(data.join("order_book"))
            .arg("--json")
            .arg(&json),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

#[test]
fn a_symbol_that_never_delivers_is_named_and_costs_the_others_no_gap() {
    let sim = sim(&["ETHUSDT"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = record_sim(&sim, dir.path())
        .args(["--symbol", "ETHUSDT,ETHUSTD", "--run-minutes", "0.07"])
        .args([
            "--stale-sec",
            "1",
            "--ping-sec",
            "1",
            "--print-interval",
            "0.5",
        ])
        .args(["--metrics-addr", "127.0.0.1:0", "--flush-ms", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (url, _stdout) = metrics_url(&mut child);
    // Degraded, not unhealthy: the healthy symbol is recorded, and a restart would not help.
    wait_for(Duration::from_secs(10), "a degraded /healthz", || {
        get(&format!("{url}/healthz")).1.starts_with("degraded")
    });
    let (status, body) = get(&format!("{url}/healthz"));
    assert_eq!(status, 200);
    assert!(
        body.starts_with("degraded: ethustd@depth5@100ms silent since 20"),
        "{body}"
    );
    let (_, text) = get(&format!("{url}/metrics"));
    assert!(
        text.contains("obrec_symbol_delivering{symbol=\"ETHUSTD\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("obrec_symbol_delivering{symbol=\"ETHUSDT\"} 1"),
        "{text}"
    );
    let status = wait_with_timeout(&mut child, Duration::from_secs(20)).expect("the run ends");
    assert!(status.success(), "{status}");
    sim.shutdown();

    let stderr = stderr_of(&mut child);
    // Said once the connection is up, before any SUMMARY.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("conn 1 connected to ws://127.0.0.1:")
                && l.ends_with(
                    "/stream?streams=ethusdt@depth5@100ms/ethustd@depth5@100ms (2 streams)"
                )),
        "{stderr}"
    );
    // Named in a warning; then rarely: 1 s, then 2 s, then 4 s windows in a 4 s run.
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("ethustd@depth5@100ms"))
        .count();
    assert!((1..=2).contains(&warnings), "{stderr}");

    let metrics = metrics(&data);
    assert_eq!(metrics["continuity"]["reconnects"], 0, "{metrics}");
    assert_eq!(metrics["symbols"]["ETHUSTD"]["feed"]["state"], "silent");
    assert_eq!(metrics["symbols"]["ETHUSDT"]["feed"]["state"], "delivering");
    let report = replay(&data);
    let eth = &report["symbols"]["ETHUSDT"];
    assert!(eth["messages"].as_u64().unwrap() > 100, "{eth}");
    assert_eq!(eth["reconnect_gaps"], 0, "{eth}");
    assert_eq!(eth["breaks"], 0, "{eth}");
    assert_eq!(report["connection_changes"], serde_json::json!([]));
}

#[test]
fn an_endpoint_that_refuses_ends_the_run_with_exit_1_naming_it() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let ws = format!("ws://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let rest = format!("http://127.0.0.1:{port}");
    let mut child = record_from(
        &ws,
        &rest,
        &dir.path().join("data"),
        &dir.path().join("logs"),
    )
    .args(["--symbol", "ETHUSDT", "--run-minutes", "0.04"])
    .args(["--print-interval", "0.3", "--metrics-addr", "127.0.0.1:0"])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (url, stdout) = metrics_url(&mut child);
    wait_for(Duration::from_secs(2), "an unhealthy /healthz", || {
        get(&format!("{url}/healthz")).0 == 503
    });
    let (_, body) = get(&format!("{url}/healthz"));
    assert!(body.contains("not connected"), "{body}");
    let status = wait_with_timeout(&mut child, Duration::from_secs(20)).expect("the run ends");
    assert_eq!(status.code(), Some(1));
    let stderr = stderr_of(&mut child);
    let stream_url = format!("{ws}/stream?streams=ethusdt@depth5@100ms");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("obrec: ")
            && last.contains(&format!(
                "never connected to {stream_url}: connect failed: "
            ))
            && last.to_lowercase().contains("refused"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("never connected").count(), 1, "{stderr}");
    // Every failed attempt says where and why.
    let attempts: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert!(!attempts.is_empty(), "{stderr}");
    assert!(
        attempts
            .iter()
            .all(|l| l.contains(&stream_url) && l.contains("connect failed")),
        "{stderr}"
    );
    let stdout = stdout.join().unwrap();
    let summaries: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("SUMMARY"))
        .collect();
    assert!(!summaries.is_empty(), "{stdout}");
    assert!(
        summaries.iter().all(|l| l.ends_with("| connected=0/1")),
        "{stdout}"
    );
}

#[test]
fn restarts_into_one_data_dir_are_reconnect_gaps_not_breaks() {
    let sim = sim(&["ETHUSDT"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let record = || {
        let mut cmd = record_sim(&sim, dir.path());
        cmd.args(["--symbol", "ETHUSDT", "--flush-ms", "100"]);
        cmd
    };
    let clean_run = || {
        let out = run_output(record().args(["--run-minutes", "0.02"]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    clean_run();
    // A crash right after recording started must not make the next run reuse its number.
    let mut child = record()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the second run's data", || {
        depth_files(&data)
            .get(1)
            .is_some_and(|f| gunzip_lines(f) > 10)
    });
    signal(&child, "-KILL");
    child.wait().unwrap();
    clean_run();
    sim.shutdown();

    let conns: Vec<u64> = read_lines(&depth_files(&data))
        .iter()
        .map(|l| l.json["conn"].as_u64().unwrap())
        .collect();
    assert!(conns.windows(2).all(|w| w[0] <= w[1]), "{conns:?}");
    assert_eq!((conns[0], conns[conns.len() - 1]), (1, 3));
    // Each restart is a change of connection: a reconnect gap, or seamless when the simulator
    // happened to publish nothing in between; never a break.
    let report = replay(&data);
    assert_eq!(report["continuity"]["breaks"], 0, "{report}");
    let changes: Vec<(u64, u64)> = report["connection_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["from_conn"].as_u64().unwrap(),
                c["to_conn"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(changes, [(1, 2), (2, 3)], "{report}");
}
