//! Diff depth (`--depth 0`) end to end: the recorder syncs from REST snapshots through injected
//! gaps, and the book `obrec replay --book` rebuilds from the files equals the simulator's own
//! book at every event. The simulator's own book is observed through a partial-depth
//! subscription (top 20) that a plain client holds open during the recording: both streams carry
//! the same update ids.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use obrec::{Fault, Faults, Rate, Sim, SimConfig};

#[test]
fn rebuilt_books_match_the_simulators_book_through_gaps_and_resyncs() {
    let faults = Faults {
        gap_every: Some(30),
        ..Faults::default()
    };
    let m = record_and_compare(faults);
    // Every break was healed by a new snapshot, on the same connection.
    assert_eq!(m["continuity"]["resyncs"], m["continuity"]["breaks"]);
    assert_eq!(m["continuity"]["reconnects"], 0);
}

#[test]
fn rebuilt_books_match_the_simulators_book_through_reconnects() {
    let faults = Faults {
        gap_every: Some(30),
        close_after: Some(150),
        ..Faults::default()
    };
    let m = record_and_compare(faults);
    assert!(m["continuity"]["reconnects"].as_u64().unwrap() >= 1, "{m}");
    // A reconnect loses the book like a break does: it is resynced too.
    let breaks = m["continuity"]["breaks"].as_u64().unwrap();
    let resyncs = m["continuity"]["resyncs"].as_u64().unwrap();
    assert!(resyncs > breaks, "{resyncs} resyncs, {breaks} breaks");
}

/// Records both symbols' diff depth from a simulator with `faults`, rebuilds the books with
/// `obrec replay --book 20` and compares them with the simulator's; returns metrics.json.
fn record_and_compare(faults: Faults) -> serde_json::Value {
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: vec!["ETHUSDT".into(), "BTCUSDT".into()],
            rate: Rate::PerSecond(40.0),
            record_sent: true,
            faults,
            ..SimConfig::default()
        },
    )
    .unwrap();
    // The observer: top 20 of both books at every event.
    let url = format!(
        "{}/stream?streams=ethusdt@depth20@100ms/btcusdt@depth20@100ms",
        sim.ws_url()
    );
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    // Keeps the subscription read (reconnecting when the simulator closes it) until the recorder
    // is done; the frames themselves are taken from sim.sent().
    let watcher = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let (mut observer, _) = tungstenite::connect(&url).unwrap();
            if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = observer.get_mut() {
                tcp.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
            }
            while !stop.load(Ordering::Relaxed) {
                match observer.read() {
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = run_output(
        record_sim(&sim, dir.path())
            .args(["--symbol", "ETHUSDT,BTCUSDT", "--depth", "0"])
            .args(["--run-minutes", "0.06", "--flush-ms", "100"]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gaps = sim.stats().injected(Fault::Gap);
    let sent = sim.sent();
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    sim.shutdown();

    let m = metrics(&data);
    let breaks = m["continuity"]["breaks"].as_u64().unwrap();
    assert!(
        breaks >= 2 && breaks <= gaps,
        "{breaks} breaks, {gaps} gaps"
    );

    // The simulator's top 20 at each (symbol, u).
    let mut truth: HashMap<(String, u64), serde_json::Value> = HashMap::new();
    for f in sent.iter().filter(|f| f.stream.contains("@depth20")) {
        let v: serde_json::Value = serde_json::from_str(&f.payload).unwrap();
        truth.insert((f.symbol.clone(), f.u), v);
    }
    let replay = run_output(
        obrec()
            .args(["replay", "--book", "20"])
            .arg(data.join("order_book")),
    );
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let books = String::from_utf8(replay.stdout).unwrap();
    let mut compared: HashMap<String, usize> = HashMap::new();
    for line in books.lines() {
        let book: serde_json::Value = serde_json::from_str(line).unwrap();
        let symbol = book["symbol"].as_str().unwrap().to_string();
        let u = book["u"].as_u64().unwrap();
        let Some(want) = truth.get(&(symbol.clone(), u)) else {
            continue;
        };
        assert_eq!(book["bids"], want["b"], "{symbol} u={u} bids");
        assert_eq!(book["asks"], want["a"], "{symbol} u={u} asks");
        *compared.entry(symbol).or_default() += 1;
    }
    eprintln!("books compared with the simulator: {compared:?}");
    for symbol in ["ETHUSDT", "BTCUSDT"] {
        assert!(
            compared.get(symbol).copied().unwrap_or(0) > 100,
            "{compared:?}"
        );
    }
    m
}

/// `--speed 0ms` subscribes the unthrottled diff stream hftbacktest's collector records, and the
/// recording of it replays whole; a partial stream has no such speed.
#[test]
fn the_unthrottled_diff_stream_is_recorded_under_its_name() {
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: vec!["BTCUSDT".into()],
            rate: Rate::PerSecond(100.0),
            ..SimConfig::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run_output(record_sim(&sim, dir.path()).args([
        "--symbol",
        "BTCUSDT",
        "--depth",
        "0",
        "--speed",
        "0ms",
        "--run-minutes",
        "0.03",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = read_lines(&depth_files(&dir.path().join("data")));
    assert!(lines.len() > 50, "{} lines", lines.len());
    assert!(
        lines
            .iter()
            .all(|l| l.json["stream"] == "btcusdt@depth@0ms")
    );
    let replay = run_output(
        obrec()
            .args(["replay", "--strict"])
            .arg(dir.path().join("data")),
    );
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stdout)
    );

    let refused = run_output(record_sim(&sim, dir.path()).args(["--depth", "5", "--speed", "0ms"]));
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("diff stream only"));
}
