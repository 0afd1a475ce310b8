//! End-to-end: the real `obrec` binary records every stream kind beside the book from the
//! simulator, each from the route the simulator (like Binance) serves it on, and the files are
//! read back and compared with what the simulator sent.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use obrec::{Faults, Rate, SentFrame, Sim, SimConfig};

const KINDS: [&str; 5] = ["trade", "aggTrade", "bookTicker", "markPrice", "forceOrder"];

fn sim(faults: Faults) -> Sim {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
            rate: Rate::PerSecond(50.0),
            record_sent: true,
            faults,
            ..SimConfig::default()
        },
    )
    .unwrap()
}

/// Runs `obrec record` against `sim` with `extra` flags for `minutes`; returns its stdout.
fn record(sim: &Sim, data: &Path, logs: &Path, minutes: &str, extra: &[&str]) -> String {
    let out = run_output(
        record_from(&sim.ws_url(), &sim.rest_url(), data, logs)
            .args(["--symbol", "BTCUSDT,ETHUSDT", "--run-minutes", minutes])
            .args(["--print-interval", "1", "--flush-ms", "100"])
            .args(extra),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What the sim sent, by stream name, in order.
fn sent_by_stream(sent: Vec<SentFrame>) -> BTreeMap<String, Vec<SentFrame>> {
    let mut map: BTreeMap<String, Vec<SentFrame>> = BTreeMap::new();
    for frame in sent {
        map.entry(frame.stream.clone()).or_default().push(frame);
    }
    map
}

/// The lines of the files of `kind`, by stream name, in order.
fn recorded_by_stream(data: &Path, kind: &str) -> BTreeMap<String, Vec<Line>> {
    let mut map: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for line in read_lines(&kind_files(data, kind)) {
        let stream = line.json["stream"].as_str().unwrap().to_string();
        map.entry(stream).or_default().push(line);
    }
    map
}

/// Every recorded line of `stream` is the frame sent at its place, byte for byte, and only the
/// frames in flight at the stop are missing.
fn assert_recorded_as_sent(stream: &str, lines: &[Line], sent: &[SentFrame]) {
    assert!(
        lines.len() <= sent.len(),
        "{stream}: more recorded than sent"
    );
    for (line, frame) in lines.iter().zip(sent) {
        assert_eq!(
            line.raw_data(),
            frame.payload,
            "{stream}: order, loss or bytes"
        );
    }
    assert!(
        sent.len() - lines.len() <= 10,
        "{stream}: {} sent, {} recorded",
        sent.len(),
        lines.len()
    );
}

#[test]
fn every_kind_is_recorded_once_byte_exact_from_its_route() {
    let sim = sim(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    let streams = format!("depth,{}", KINDS.join(","));
    let stdout = record(&sim, &data, &logs, "0.06", &["--streams", &streams]);
    let sent = sent_by_stream(sim.sent());
    sim.shutdown();

    let m = metrics(&data);
    for kind in KINDS {
        let recorded = recorded_by_stream(&data, kind);
        for symbol in ["btcusdt", "ethusdt"] {
            let name = match kind {
                "markPrice" => format!("{symbol}@markPrice@1s"),
                _ => format!("{symbol}@{kind}"),
            };
            let lines = recorded.get(&name).map_or(&[][..], Vec::as_slice);
            let frames = sent.get(&name).map_or(&[][..], Vec::as_slice);
            assert_recorded_as_sent(&name, lines, frames);
            if kind != "forceOrder" {
                assert!(lines.len() >= 3, "{name}: only {} lines", lines.len());
            }
            let report = &m["streams"][&name];
            assert_eq!(
                report["messages"].as_u64(),
                Some(lines.len() as u64),
                "{name}"
            );
            for counter in [
                "breaks",
                "reconnect_gaps",
                "missing_ids",
                "drops",
                "duplicates",
            ] {
                assert_eq!(report[counter], 0, "{name}: {counter}");
            }
            // Liquidations may not come in a short run: such a stream is still waiting.
            let want = if lines.is_empty() {
                "waiting"
            } else {
                "delivering"
            };
            assert_eq!(report["feed"]["state"], want, "{name}");
            for line in lines {
                // The envelope of a depth line, with the kind's ids at top level.
                assert_eq!(line.json["symbol"], symbol.to_uppercase());
                assert_eq!(line.json["E"], line.json["data"]["E"]);
                let ids: &[&str] = match kind {
                    "trade" => &["t"],
                    "aggTrade" => &["a", "f", "l"],
                    "bookTicker" => &["u"],
                    _ => &[],
                };
                for id in ids {
                    assert_eq!(line.json[id], line.json["data"][id], "{name}: {id}");
                }
                for absent in ["U", "pu", "backfill"] {
                    assert!(line.json.get(absent).is_none(), "{name}: {absent}");
                }
            }
        }
    }
    // Depth is recorded as before, beside them.
    assert!(read_lines(&depth_files(&data)).len() > 100);
    assert_eq!(m["continuity"]["breaks"], 0);
    assert_eq!(m["silent_streams"], serde_json::json!([]));
    // Two routes, two connections: each stream on the one Binance serves it on.
    let conns: std::collections::BTreeSet<u64> = KINDS
        .iter()
        .flat_map(|kind| read_lines(&kind_files(&data, kind)))
        .map(|l| l.json["conn"].as_u64().unwrap())
        .collect();
    assert_eq!(conns.len(), 2, "{conns:?}");
    let summary = stdout.lines().rfind(|l| l.starts_with("SUMMARY")).unwrap();
    for field in [
        "| trade=",
        " missing=0 | aggTrade=",
        "| bookTicker=",
        "| markPrice=",
        "| forceOrder=",
    ] {
        assert!(summary.contains(field), "{field}: {summary}");
    }
}

/// The done-when of the stream kinds: a stream asked for on the wrong route is named within a
/// minute (here within its window of 5 × 1 s) while the streams beside it lose nothing.
#[test]
fn a_stream_on_the_wrong_route_is_named_while_the_others_lose_nothing() {
    let sim = sim(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    let public = format!("{}/public", sim.ws_url());
    let mut child = record_from(&sim.ws_url(), &sim.rest_url(), &data, &logs)
        .args(["--symbol", "BTCUSDT", "--streams", "depth,trade,aggTrade"])
        .args(["--market-endpoint", &public, "--stale-sec", "1"])
        .args(["--print-interval", "1", "--flush-ms", "100"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (base, _stdout) = metrics_url(&mut child);
    let healthz = format!("{base}/healthz");
    wait_for(
        Duration::from_secs(15),
        "/healthz naming the silent stream",
        || {
            let (status, body) = get(&healthz);
            status == 200 && body.starts_with("degraded: btcusdt@aggTrade silent since")
        },
    );
    let (_, prometheus) = get(&format!("{base}/metrics"));
    assert!(
        prometheus.contains("obrec_stream_delivering{symbol=\"BTCUSDT\",kind=\"aggTrade\"} 0"),
        "{prometheus}"
    );
    assert!(prometheus.contains("obrec_stream_delivering{symbol=\"BTCUSDT\",kind=\"trade\"} 1"));
    terminate(&mut child, Duration::from_secs(10));
    let sent = sent_by_stream(sim.sent());
    sim.shutdown();

    let log = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(
        log.contains("no stream delivered in 5s: btcusdt@aggTrade (wrong route"),
        "{log}"
    );
    let m = metrics(&data);
    assert_eq!(m["silent_streams"], serde_json::json!(["btcusdt@aggTrade"]));
    assert_eq!(m["streams"]["btcusdt@aggTrade"]["messages"], 0);
    // The other streams kept their connection and lost nothing.
    assert_eq!(m["symbols"]["BTCUSDT"]["reconnect_gaps"], 0);
    assert_eq!(m["continuity"]["breaks"], 0);
    assert_eq!(m["streams"]["btcusdt@trade"]["breaks"], 0);
    assert_eq!(m["streams"]["btcusdt@trade"]["reconnect_gaps"], 0);
    let trades = recorded_by_stream(&data, "trade");
    assert_recorded_as_sent(
        "btcusdt@trade",
        &trades["btcusdt@trade"],
        &sent["btcusdt@trade"],
    );
    assert!(
        !sent.contains_key("btcusdt@aggTrade"),
        "the sim sent aggTrade on /public"
    );
}

/// Trades the exchange lost are counted with their ids, as breaks of the trade stream; the
/// aggregates that follow over them say which trade ids they skip.
#[test]
fn trades_the_exchange_lost_are_breaks_with_their_ids() {
    let sim = sim(Faults {
        trade_gap_every: Some(7),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    let stdout = record(&sim, &data, &logs, "0.05", &["--streams", "trade,aggTrade"]);
    sim.shutdown();
    let m = metrics(&data);
    for symbol in ["btcusdt", "ethusdt"] {
        let lines = &recorded_by_stream(&data, "trade")[&format!("{symbol}@trade")];
        let ids: Vec<u64> = lines
            .iter()
            .map(|l| l.json["t"].as_u64().unwrap())
            .collect();
        let skipped: u64 = ids.windows(2).map(|w| w[1] - w[0] - 1).sum();
        let gaps = ids.windows(2).filter(|w| w[1] != w[0] + 1).count() as u64;
        assert!(gaps > 0, "{symbol}: no gap in {} trades", ids.len());
        let trade = &m["streams"][&format!("{symbol}@trade")];
        assert_eq!(trade["breaks"].as_u64(), Some(gaps), "{symbol}");
        assert_eq!(trade["missing_ids"].as_u64(), Some(skipped), "{symbol}");
        let agg = &m["streams"][&format!("{symbol}@aggTrade")];
        assert!(agg["breaks"].as_u64().unwrap() > 0, "{symbol}: {agg}");
    }
    assert!(stdout.contains(" missing="), "{stdout}");
    // The recorder never takes a gap in a stream for a depth break.
    assert_eq!(m["continuity"]["breaks"], 0);
}

/// Binance's `serverShutdown` notice: the recorder opens the replacement at once, keeps the
/// notice in every stream's file, and loses nothing in the switch.
#[test]
fn a_server_shutdown_notice_starts_the_replacement_and_loses_nothing() {
    let sim = sim(Faults {
        server_shutdown_after: Some(Duration::from_secs(1)),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    record(
        &sim,
        &data,
        &logs,
        "0.05",
        &["--streams", "depth,trade,bookTicker"],
    );
    sim.shutdown();
    let m = metrics(&data);
    assert!(m["server_shutdowns"].as_u64().unwrap() >= 1, "{m}");
    assert_eq!(m["continuity"]["breaks"], 0);
    assert_eq!(
        m["continuity"]["reconnects"], 0,
        "a planned switch, not a loss"
    );
    assert!(m["rollovers"].as_u64().unwrap() >= 1);
    for (kind, id) in [("trade", "t"), ("bookTicker", "u")] {
        let texts: Vec<String> = kind_files(&data, kind)
            .iter()
            .flat_map(|f| {
                let mut text = String::new();
                std::io::Read::read_to_string(
                    &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(f).unwrap()),
                    &mut text,
                )
                .unwrap();
                text.lines().map(String::from).collect::<Vec<_>>()
            })
            .collect();
        assert!(
            texts
                .iter()
                .any(|l| l.starts_with(r#"{"meta":"serverShutdown","#)),
            "{kind}: no meta line"
        );
        for symbol in ["BTCUSDT", "ETHUSDT"] {
            let ids: Vec<u64> = texts
                .iter()
                .filter(|l| !l.starts_with(r#"{"meta""#))
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|v| v["symbol"] == symbol)
                .map(|v| v[id].as_u64().unwrap())
                .collect();
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "{kind} {symbol}: order"
            );
            if kind == "trade" {
                assert!(
                    ids.windows(2).all(|w| w[1] == w[0] + 1),
                    "{symbol}: trade lost"
                );
            }
            let name = format!("{}@{kind}", symbol.to_lowercase());
            assert_eq!(m["streams"][&name]["breaks"], 0, "{name}");
            assert_eq!(m["streams"][&name]["reconnect_gaps"], 0, "{name}");
        }
    }
}

/// The done-when of the stream kinds, against an exchange that is not the simulator: `obrec
/// serve` plays the real capture (depth at 0 ms, trades, bookTicker, 93,953 frames) on its
/// routes, and the recorder records every frame once, byte for byte, with no break in any kind.
#[test]
fn the_real_capture_served_on_its_routes_is_recorded_whole() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let imported = dir.path().join("imported");
    let out = run_output(
        obrec()
            .args(["import", "--format", "hftbacktest", "-o"])
            .arg(&imported)
            .arg(fixture("hftbacktest_usdm_btcusdt_20240808.gz")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Fifty times the recorded pace: the 5.7 minutes in 7 s, 13,000 frames a second.
    let serve = obrec::Serve::start(
        "127.0.0.1:0",
        obrec::Recording::open(&[imported.join("order_book")]).unwrap(),
        obrec::ServeConfig {
            pace: obrec::Pace::Speed(50.0),
            ..obrec::ServeConfig::default()
        },
    )
    .unwrap();
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    let mut child = record_from(&serve.ws_url(), &serve.rest_url(), &data, &logs)
        .args(["--symbol", "BTCUSDT", "--depth", "0", "--speed", "0ms"])
        .args(["--streams", "depth,trade,bookTicker", "--flush-ms", "100"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Serve closes the connection after the last frame; stop before the reconnect plays the
    // capture again.
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains("lost (") {
            break;
        }
    }
    terminate(&mut child, Duration::from_secs(10));
    serve.shutdown();

    let m = metrics(&data);
    assert_eq!(m["continuity"]["breaks"], 0);
    assert_eq!(m["log_queue"]["drops"], 0);
    for (kind, stream, count) in [
        ("trade", "btcusdt@trade", 21_313),
        ("bookTicker", "btcusdt@bookTicker", 66_089),
    ] {
        let frames = capture_frames(stream, usize::MAX);
        assert_eq!(frames.len(), count);
        let lines = read_lines(&kind_files(&data, kind));
        let recorded: Vec<&str> = lines
            .iter()
            .filter(|l| l.json["conn"] == 1)
            .map(Line::raw_data)
            .collect();
        let sent: Vec<&str> = frames.iter().map(|(_, d)| d.as_str()).collect();
        assert!(
            recorded == sent,
            "{stream}: not every frame once, byte for byte, in order"
        );
        let report = &m["streams"][stream];
        assert_eq!(report["breaks"], 0, "{stream}");
        assert_eq!(report["missing_ids"], 0, "{stream}");
    }
    let depth = read_lines(&depth_files(&data));
    let depth: Vec<&str> = depth
        .iter()
        .filter(|l| l.json["conn"] == 1)
        .map(Line::raw_data)
        .collect();
    let sent = capture_frames("btcusdt@depth@0ms", usize::MAX);
    assert_eq!(depth.len(), 6_551);
    assert!(
        depth
            .iter()
            .zip(&sent)
            .all(|(line, (_, data))| line == data),
        "depth not byte for byte"
    );
}
