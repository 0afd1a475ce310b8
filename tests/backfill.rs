//! End-to-end: aggTrade gaps backfilled from REST. The simulator keeps every Nth aggregate trade
//! off the stream (`--agg-gap-every`) while its REST `/fapi/v1/aggTrades` still serves it; the
//! real `obrec` binary records over real sockets, asks REST for what the stream lacked, and the
//! files it leaves hold every aggregate id exactly once, which `obrec replay` confirms.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use obrec::{Fault, Faults, Rate, Sim, SimConfig};

/// Every `--agg-gap-every` of these tests: at 200 events/s about six gaps a second, a
/// backfill request each, well inside the 60 requests a minute the recorder's REST budget allows.
const AGG_GAP_EVERY: u64 = 40;

fn sim(faults: Faults) -> Sim {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: vec!["BTCUSDT".into()],
            rate: Rate::PerSecond(200.0),
            record_sent: true,
            faults,
            ..SimConfig::default()
        },
    )
    .unwrap()
}

/// Records `btcusdt@aggTrade` from `sim` for `minutes` into `dir`; returns the lines written.
fn record(sim: &Sim, dir: &Path, minutes: &str) -> Vec<Line> {
    let out = run_output(record_sim(sim, dir).args([
        "--symbol",
        "BTCUSDT",
        "--streams",
        "aggTrade",
        "--run-minutes",
        minutes,
        "--print-interval",
        "1",
    ]));
    assert!(
        out.status.success(),
        "record failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_lines(&kind_files(&dir.join("data"), "aggTrade"))
}

/// What a recording of aggregate trades holds.
struct Recorded {
    /// `a` of the lines from the stream, and of the backfilled ones.
    streamed: Vec<u64>,
    backfilled: Vec<u64>,
}

/// Checks every line's layout (a backfilled one: `conn` 0, `E` its `T`, `"backfill":true` before
/// `data`) and that stream and backfill together hold every `a` from the first to the last
/// exactly once.
fn check_dense(lines: &[Line]) -> Recorded {
    let (mut streamed, mut backfilled) = (Vec::new(), Vec::new());
    for line in lines.iter().filter(|l| l.json.get("meta").is_none()) {
        let data: serde_json::Value = serde_json::from_str(line.raw_data()).unwrap();
        let a = data["a"].as_u64().unwrap();
        assert_eq!(line.json["a"], data["a"], "{}", line.text);
        assert_eq!((&line.json["f"], &line.json["l"]), (&data["f"], &data["l"]));
        if line.json["backfill"] == true {
            assert!(
                line.text.contains(r#","backfill":true,"data":{"a":"#),
                "{}",
                line.text
            );
            assert_eq!(line.json["conn"], 0);
            assert_eq!(line.json["E"], data["T"], "a backfilled line's E is its T");
            backfilled.push(a);
        } else {
            assert!(line.json.get("backfill").is_none());
            assert_eq!(data["e"], "aggTrade");
            streamed.push(a);
        }
    }
    let all: Vec<u64> = streamed.iter().chain(&backfilled).copied().collect();
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "an aggregate id written twice");
    let (first, last) = (*unique.first().unwrap(), *unique.last().unwrap());
    assert_eq!(
        unique.len() as u64,
        last - first + 1,
        "ids {first}..={last} not dense"
    );
    Recorded {
        streamed,
        backfilled,
    }
}

/// `obrec replay --json` of the recording: every aggTrade gap filled, none open, and `--strict`
/// content. Returns the number of gaps.
fn replay_shows_every_gap_filled(dir: &Path) -> usize {
    let book = dir.join("data/order_book");
    let out = run_output(obrec().args(["replay", "--json", "-"]).arg(&book));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds = report["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 1);
    let k = &kinds[0];
    assert_eq!(
        (
            k["open_breaks"].as_u64(),
            k["missing_after_backfill"].as_u64()
        ),
        (Some(0), Some(0)),
        "{k}"
    );
    let gaps = report["kind_gaps"].as_array().unwrap();
    assert!(gaps.iter().all(|g| g["filled"] == true), "{gaps:?}");
    assert_eq!(k["gaps_filled"].as_u64(), Some(gaps.len() as u64));
    let strict = run_output(obrec().args(["replay", "--strict"]).arg(&book));
    assert_eq!(
        strict.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&strict.stderr)
    );
    gaps.len()
}

#[test]
fn aggregates_withheld_from_the_stream_are_backfilled_once_each() {
    let sim = sim(Faults {
        agg_gap_every: Some(AGG_GAP_EVERY),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let lines = record(&sim, dir.path(), "0.08");
    let sent = sim.sent();
    let withheld = sim.stats().injected(Fault::AggGap);
    sim.shutdown();

    let recorded = check_dense(&lines);
    // What the stream delivered is what the sim sent, and nothing the sim withheld.
    let sent: BTreeSet<u64> = sent
        .iter()
        .filter(|f| f.stream == "btcusdt@aggTrade")
        .map(|f| {
            serde_json::from_str::<serde_json::Value>(&f.payload).unwrap()["a"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        recorded.streamed.iter().copied().collect::<BTreeSet<_>>(),
        sent
    );
    let n = recorded.backfilled.len() as u64;
    assert!(n >= 10, "only {n} aggregates backfilled in 5 s");
    // Every `AGG_GAP_EVERY`th aggregate was withheld, so between the first and the last one
    // recorded that many were backfilled; the sim counts those it withheld before and after too.
    let span = (recorded.streamed.len() + recorded.backfilled.len()) as u64;
    assert!(n.abs_diff(span / AGG_GAP_EVERY) <= 1, "{n} of {span}");
    assert!(withheld >= n, "the sim withheld {withheld}, {n} backfilled");
    let m = metrics(&dir.path().join("data"));
    let stream = &m["streams"]["btcusdt@aggTrade"];
    assert_eq!(stream["backfilled"].as_u64(), Some(n), "{stream}");
    assert_eq!(stream["missing_ids"].as_u64(), Some(n), "{stream}");
    let logs = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    let a = recorded.backfilled[0];
    assert!(
        logs.contains(&format!(
            "btcusdt@aggTrade: backfilled ids {a}..={a} (1) from REST"
        )),
        "{logs}"
    );
    let gaps = replay_shows_every_gap_filled(dir.path());
    assert_eq!(gaps as u64, n, "one gap per withheld aggregate");
    eprintln!(
        "{gaps} gaps, {n} backfilled, {} streamed",
        recorded.streamed.len()
    );
}

#[test]
fn a_gap_across_a_reconnect_is_backfilled_too() {
    let sim = sim(Faults {
        agg_gap_every: Some(AGG_GAP_EVERY),
        // The recorder waits out a backoff before it reconnects: what the sim sends meanwhile is
        // lost to it, and comes back from REST.
        close_after: Some(400),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let lines = record(&sim, dir.path(), "0.08");
    sim.shutdown();
    let recorded = check_dense(&lines);
    let m = metrics(&dir.path().join("data"));
    let stream = &m["streams"]["btcusdt@aggTrade"];
    assert!(stream["reconnect_gaps"].as_u64().unwrap() >= 1, "{stream}");
    assert_eq!(
        stream["backfilled"].as_u64(),
        Some(recorded.backfilled.len() as u64)
    );
    assert!(
        recorded.backfilled.len() as u64 > stream["breaks"].as_u64().unwrap(),
        "a reconnect loses more than one aggregate: {stream}"
    );
    let gaps = replay_shows_every_gap_filled(dir.path());
    eprintln!(
        "{gaps} gaps, {} backfilled, {} streamed, {stream}",
        recorded.backfilled.len(),
        recorded.streamed.len()
    );
}

#[test]
fn rest_serves_recent_aggregates_with_binance_fields_and_errors() {
    let sim = sim(Faults {
        agg_gap_every: Some(2),
        used_weight: Some(40),
        ..Faults::default()
    });
    let rest = sim.rest_url();
    let (status, body) = get(&format!(
        "{rest}/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=0&limit=1"
    ));
    assert_eq!(status, 200, "{body}");
    wait_for(Duration::from_secs(5), "aggregate trades", || {
        let (_, body) = get(&format!(
            "{rest}/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=0&limit=20"
        ));
        body.matches("\"a\":").count() == 20
    });
    let (_, body) = get(&format!(
        "{rest}/fapi/v1/aggTrades?symbol=btcusdt&fromId=0&limit=20"
    ));
    // Binance's keys in Binance's order, each item as the stream's values would print it.
    let raw: Vec<&serde_json::value::RawValue> = serde_json::from_str(&body).unwrap();
    for item in &raw {
        let at: Vec<usize> = ["a", "p", "q", "f", "l", "T", "m"]
            .iter()
            .map(|k| item.get().find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{}", item.get());
    }
    let items: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(items.iter().all(|i| i.as_object().unwrap().len() == 7));
    let first = items[0]["a"].as_u64().unwrap();
    let ids: Vec<u64> = items.iter().map(|i| i["a"].as_u64().unwrap()).collect();
    assert_eq!(
        ids,
        (first..first + 20).collect::<Vec<_>>(),
        "dense, withheld ones included"
    );
    let (_, page) = get(&format!(
        "{rest}/fapi/v1/aggTrades?symbol=BTCUSDT&fromId={}",
        first + 5
    ));
    assert!(
        page.starts_with(&format!("[{{\"a\":{},", first + 5)),
        "{page}"
    );
    let (_, none) = get(&format!(
        "{rest}/fapi/v1/aggTrades?symbol=BTCUSDT&fromId={}",
        u64::MAX
    ));
    assert_eq!(none, "[]");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let weight = agent
        .get(format!("{rest}/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=0"))
        .call()
        .unwrap();
    assert_eq!(
        weight
            .headers()
            .get("x-mbx-used-weight-1m")
            .map(|v| v.to_str().unwrap()),
        Some("40")
    );
    for (query, code) in [
        ("symbol=XYZUSDT&fromId=1", -1121),
        ("fromId=1", -1102),
        ("symbol=BTCUSDT", -1102),
        ("symbol=BTCUSDT&fromId=", -1102),
        ("symbol=BTCUSDT&fromId=x1", -1100),
        ("symbol=BTCUSDT&fromId=1&limit=0", -1130),
        ("symbol=BTCUSDT&fromId=1&limit=1001", -1130),
    ] {
        let (status, body) = get(&format!("{rest}/fapi/v1/aggTrades?{query}"));
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, error["code"].as_i64()),
            (400, Some(code)),
            "{query}: {body}"
        );
        assert!(error["msg"].is_string());
    }
    sim.shutdown();
}

#[test]
fn gaps_rest_cannot_fill_are_given_up_and_replay_shows_them_open() {
    let sim = sim(Faults {
        agg_gap_every: Some(AGG_GAP_EVERY),
        ..Faults::default()
    });
    // A port nobody listens on: every REST request is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rest = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    let out = run_output(record_from(&sim.ws_url(), &rest, &data, &logs).args([
        "--symbol",
        "BTCUSDT",
        "--streams",
        "aggTrade",
        "--run-minutes",
        "0.05",
    ]));
    sim.shutdown();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recorded = count_backfilled(&read_lines(&kind_files(&data, "aggTrade")));
    assert_eq!(recorded, 0, "nothing backfilled");
    let m = metrics(&data);
    let stream = &m["streams"]["btcusdt@aggTrade"];
    assert_eq!(stream["backfilled"].as_u64(), Some(0));
    let missing = stream["missing_ids"].as_u64().unwrap();
    assert!(missing > 0, "{stream}");
    let log = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(log.contains("backfill of ids "), "{log}");
    assert!(log.contains("given up: "), "{log}");
    assert!(log.contains("; the gap stays open"), "{log}");
    let book = data.join("order_book");
    let out = run_output(obrec().args(["replay", "--json", "-"]).arg(&book));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let k = &report["kinds"][0];
    assert_eq!(k["missing_after_backfill"].as_u64(), Some(missing), "{k}");
    assert!(k["open_breaks"].as_u64() > Some(0), "{k}");
    let strict = run_output(obrec().args(["replay", "--strict"]).arg(&book));
    assert_eq!(strict.status.code(), Some(1));
}

/// The number of backfilled lines in `lines`, checking they hold each aggregate id at most once.
fn count_backfilled(lines: &[Line]) -> usize {
    let ids: Vec<u64> = lines
        .iter()
        .map(|l| l.json["a"].as_u64().unwrap())
        .collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an aggregate id written twice");
    lines.iter().filter(|l| l.json["backfill"] == true).count()
}
