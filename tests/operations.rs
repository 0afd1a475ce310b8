//! Operations: Prometheus `/metrics`, `/healthz` and `obrec health`, against a real recorder.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use obrec::{Faults, Rate, Sim, SimConfig};

fn sim(faults: Faults) -> Sim {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: vec!["ETHUSDT".into(), "BTCUSDT".into()],
            rate: Rate::PerSecond(50.0),
            faults,
            ..SimConfig::default()
        },
    )
    .unwrap()
}

/// Starts a recorder with `--metrics-addr 127.0.0.1:0`; returns it and its metrics base URL.
fn recorder(sim: &Sim, dir: &std::path::Path) -> (Child, String) {
    let mut child = record_sim(sim, dir)
        .args(["--symbol", "ETHUSDT,BTCUSDT"])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--print-interval",
            "0.3",
            "--stale-sec",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (url, _stdout) = metrics_url(&mut child);
    (child, url)
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn prometheus_scrape_and_health_checks_follow_the_recorder() {
    let sim = sim(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = recorder(&sim, dir.path());
    let metrics_json = dir.path().join("data/order_book/metrics.json");
    wait_for(Duration::from_secs(20), "recorded events", || {
        let (_, text) = get(&format!("{url}/metrics"));
        text.contains("obrec_symbol_messages_total{symbol=\"BTCUSDT\"}")
            && sample(&text, "obrec_messages_total") > 20.0
    });
    let (status, text) = get(&format!("{url}/metrics"));
    assert_eq!(status, 200);
    for series in [
        "obrec_connections_open",
        "obrec_breaks_total",
        "obrec_drops_total",
        "obrec_event_latency_milliseconds{symbol=\"ETHUSDT\",quantile=\"0.99\"}",
        "obrec_event_latency_milliseconds_count{symbol=\"ETHUSDT\"}",
        "obrec_symbol_messages_total{symbol=\"ETHUSDT\"}",
    ] {
        sample(&text, series);
    }
    assert_eq!(sample(&text, "obrec_connections_open"), 1.0);
    assert!(text.contains("# TYPE obrec_messages_total counter"));
    assert_eq!(get(&format!("{url}/healthz")), (200, "ok\n".to_string()));
    assert_eq!(get(&format!("{url}/nope")).0, 404);

    let health = |extra: &[&str]| {
        run_output(
            obrec()
                .args(["health", "--metrics"])
                .arg(&metrics_json)
                .args(extra),
        )
    };
    let out = health(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = health(&["--max-p99", "0.0001"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("p99"));

    terminate(&mut child, Duration::from_secs(5));
    sim.shutdown();
    // A recorder that stopped writing its metrics is unhealthy.
    std::thread::sleep(Duration::from_millis(1100));
    let out = health(&["--max-age", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("old"));
    let out = run_output(
        obrec()
            .args(["health", "--metrics"])
            .arg(dir.path().join("missing.json")),
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn healthz_reports_a_feed_that_delivers_nothing() {
    let sim = sim(Faults {
        mute: vec!["ETHUSDT".into(), "BTCUSDT".into()],
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = recorder(&sim, dir.path());
    wait_for(Duration::from_secs(10), "an unhealthy /healthz", || {
        get(&format!("{url}/healthz")).0 == 503
    });
    let (_, body) = get(&format!("{url}/healthz"));
    assert!(body.contains("no data since start"), "{body}");
    terminate(&mut child, Duration::from_secs(5));
    sim.shutdown();
}

/// Threads of a running process, from /proc.
fn threads(child: &Child) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Hundreds of idle connections to the operations endpoint neither cost a thread each nor keep
/// a health check from being answered.
#[test]
fn idle_connections_cannot_starve_the_operations_endpoint() {
    let sim = sim(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = recorder(&sim, dir.path());
    wait_for(Duration::from_secs(20), "a healthy recorder", || {
        get(&format!("{url}/healthz")).0 == 200
    });
    let before = threads(&child);
    let addr = url.trim_start_matches("http://");
    let idle: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let start = std::time::Instant::now();
    assert_eq!(get(&format!("{url}/healthz")), (200, "ok\n".to_string()));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let during = threads(&child);
    // The recorder starts a thread or two of its own meanwhile; one per client would be 300.
    assert!(
        during < before + 10,
        "threads {before} before, {during} with idle clients"
    );
    drop(idle);
    terminate(&mut child, Duration::from_secs(10));
}
