//! End-to-end: `obrec record --symbol all` records the simulator's whole listing and follows it
//! live. The sim lists a symbol and delists another mid-run; the real binary subscribes the
//! listing on its live connection and finishes the delisted symbol's files, and the other
//! symbols lose nothing: every frame the sim sent them is in the files, with no reconnect.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use obrec::{Rate, Schedule, SentFrame, Sim, SimConfig};

/// Trading from the start, all run long.
const STEADY: [&str; 2] = ["BTCUSDT", "ETHUSDT"];
/// Listed this long after the sim starts.
const LISTED: (&str, u64) = ("SOLUSDT", 4);
/// Delisted this long after the sim starts.
const DELISTED: (&str, u64) = ("XRPUSDT", 6);

fn sim() -> Sim {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: vec![STEADY[0].into(), STEADY[1].into(), DELISTED.0.into()],
            rate: Rate::PerSecond(20.0),
            record_sent: true,
            listings: Schedule {
                list_after: vec![(LISTED.0.into(), Duration::from_secs(LISTED.1))],
                delist_after: vec![(DELISTED.0.into(), Duration::from_secs(DELISTED.1))],
            },
            ..SimConfig::default()
        },
    )
    .unwrap()
}

/// What the sim sent, by stream name, in order.
fn sent_by_stream(sent: Vec<SentFrame>) -> BTreeMap<String, Vec<SentFrame>> {
    let mut map: BTreeMap<String, Vec<SentFrame>> = BTreeMap::new();
    for frame in sent {
        map.entry(frame.stream.clone()).or_default().push(frame);
    }
    map
}

/// The recorded lines, by stream name, in order.
fn recorded_by_stream(data: &Path) -> BTreeMap<String, Vec<Line>> {
    let mut files = depth_files(data);
    files.extend(kind_files(data, "trade"));
    let mut map: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for line in read_lines(&files) {
        let stream = line.json["stream"].as_str().unwrap().to_string();
        map.entry(stream).or_default().push(line);
    }
    map
}

/// The file names of `symbol` (lower case), finished or not; none before the recorder made its
/// directory.
fn files_of(data: &Path, symbol: &str) -> Vec<String> {
    let names = fs::read_dir(data.join("order_book")).map(|dir| {
        dir.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
    });
    names
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.starts_with(&format!("{symbol}_")))
        .collect()
}

#[test]
fn all_follows_a_listing_and_a_delisting_live_without_a_gap_on_the_others() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    let recorder = record_from(&sim.ws_url(), &sim.rest_url(), &data, &logs)
        .args(["--symbol", "all", "--streams", "depth,trade"])
        .args(["--universe-refresh-sec", "1", "--run-minutes", "0.3"])
        .args([
            "--print-interval",
            "1",
            "--flush-ms",
            "100",
            "--stale-sec",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // While the run goes on: the delisted symbol's files are finished (no `.part` left), the
    // others' are still being written, and the listed symbol has files.
    let xrp = DELISTED.0.to_lowercase();
    let sol = LISTED.0.to_lowercase();
    wait_for(
        Duration::from_secs(12),
        "the delisted symbol's files finished",
        || {
            let files = files_of(&data, &xrp);
            files.iter().any(|f| f.contains("_depth_"))
                && files.iter().all(|f| !f.ends_with(".part"))
        },
    );
    assert!(
        files_of(&data, "btcusdt")
            .iter()
            .any(|f| f.ends_with(".part")),
        "the others are still recording"
    );
    wait_for(Duration::from_secs(5), "the listed symbol's files", || {
        files_of(&data, &sol).iter().any(|f| f.contains("_depth_"))
    });
    let out = recorder.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let sent = sent_by_stream(sim.sent());
    sim.shutdown();

    let recorded = recorded_by_stream(&data);
    for symbol in STEADY.iter().chain([&LISTED.0, &DELISTED.0]) {
        let lower = symbol.to_lowercase();
        for stream in [format!("{lower}@depth5@100ms"), format!("{lower}@trade")] {
            let lines = recorded.get(&stream).map_or(&[][..], Vec::as_slice);
            let frames = sent.get(&stream).map_or(&[][..], Vec::as_slice);
            // Trades come in bursts, not with every event.
            let least = if stream.ends_with("@trade") { 1 } else { 10 };
            assert!(lines.len() >= least, "{stream}: only {} lines", lines.len());
            // Byte for byte, in order, from the first frame sent on: nothing lost on a listing's
            // SUBSCRIBE, nothing on the others.
            for (i, (line, frame)) in lines.iter().zip(frames).enumerate() {
                assert_eq!(line.raw_data(), frame.payload, "{stream}: line {i}");
            }
            // Only the frames in flight at the stop may be missing; none of the delisted symbol.
            let in_flight = if *symbol == DELISTED.0 { 0 } else { 10 };
            assert!(
                frames.len() >= lines.len() && frames.len() - lines.len() <= in_flight,
                "{stream}: {} sent, {} recorded",
                frames.len(),
                lines.len()
            );
            if stream.contains("@depth") {
                // The listed symbol's chain is whole from its first event.
                for pair in lines.windows(2) {
                    assert_eq!(pair[1].json["pu"], pair[0].json["u"], "{stream}");
                }
            }
        }
    }
    // The delisted symbol's files are whole and finished.
    let xrp_files = files_of(&data, &xrp);
    assert!(
        xrp_files.iter().all(|f| f.ends_with(".ndjson.gz")),
        "{xrp_files:?}"
    );

    let m = metrics(&data);
    assert_eq!(
        m["universe"],
        serde_json::json!({"listed": 1, "delisted": 1, "symbols": 3}),
        "{m}"
    );
    assert_eq!(m["continuity"]["reconnects"], 0);
    assert_eq!(m["continuity"]["breaks"], 0);
    assert_eq!(m["connections_open"], 0);
    assert_eq!(m["symbols"][DELISTED.0]["feed"]["state"], "delisted");
    assert_eq!(
        m["streams"][format!("{xrp}@trade")]["feed"]["state"],
        "delisted"
    );
    assert_eq!(m["symbols"][LISTED.0]["breaks"], 0);
    assert_eq!(m["silent_streams"], serde_json::json!([]), "{m}");
    let last_summary = stdout.lines().rfind(|l| l.starts_with("SUMMARY")).unwrap();
    assert!(
        last_summary.contains("| symbols=3 listed=1 delisted=1"),
        "{last_summary}"
    );

    // The log tells of both changes, and never calls the delisted symbol silent.
    let log: String = files_under(&logs)
        .iter()
        .map(|f| fs::read_to_string(logs.join(f)).unwrap())
        .collect();
    assert!(log.contains(&format!("listed: {}", LISTED.0)), "{log}");
    assert!(log.contains(&format!("delisted: {}", DELISTED.0)), "{log}");
    let silent_xrp = log
        .lines()
        .filter(|l| l.contains(&xrp) && (l.contains("silent") || l.contains("delivered nothing")));
    assert_eq!(silent_xrp.count(), 0, "{log}");

    let strict = run_output(
        obrec()
            .args(["replay", "--strict"])
            .arg(data.join("order_book")),
    );
    assert_eq!(
        strict.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&strict.stderr)
    );
}

#[test]
fn all_without_a_listing_is_a_usage_error_and_explicit_symbols_keep_their_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    // Nothing listens on port 1: the listing cannot be read.
    let out = run_output(
        record_from("ws://127.0.0.1:1", "http://127.0.0.1:1", &data, &logs).args([
            "--symbol",
            "all",
            "--run-minutes",
            "0.05",
        ]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("obrec:")).unwrap();
    assert!(
        error.starts_with(
            "obrec: cannot read the symbol list at http://127.0.0.1:1/fapi/v1/exchangeInfo: "
        ),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing is created on a refused start");

    let sim = sim();
    // A filter nothing passes.
    let out = run_output(record_sim(&sim, dir.path()).args([
        "--symbol",
        "all",
        "--quote",
        "EUR",
        "--run-minutes",
        "0.05",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("matches quote EUR"), "{stderr}");
    // A filter without `all`.
    let out =
        run_output(record_sim(&sim, dir.path()).args(["--symbol", "BTCUSDT", "--quote", "USDT"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--symbol all"));
    // A pattern narrows the listing: only ETHUSDT passes, recorded as an explicit run would.
    let out = run_output(record_sim(&sim, dir.path()).args([
        "--symbol",
        "all",
        "--symbol-pattern",
        "eth*",
        "--run-minutes",
        "0.03",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = metrics(&dir.path().join("data"));
    let symbols: Vec<&String> = m["symbols"].as_object().unwrap().keys().collect();
    assert_eq!(symbols, ["ETHUSDT"]);
    assert_eq!(m["universe"]["symbols"], 1);
    sim.shutdown();
}

#[test]
fn all_records_a_whole_market_of_generated_symbols_over_groups_of_at_most_200_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, port) = spawn_sim(dir.path(), &["--symbols", "500", "--rate", "2"]);
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    let out = run_output(
        record_from(
            &format!("ws://127.0.0.1:{port}"),
            &format!("http://127.0.0.1:{port}"),
            &data,
            &logs,
        )
        .args([
            "--symbol",
            "all",
            "--quote",
            "USDT",
            "--run-minutes",
            "0.12",
        ]),
    );
    terminate(&mut sim, Duration::from_secs(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("recording 501 symbol(s) listed as trading (quote USDT)"),
        "{stderr}"
    );
    let m = metrics(&data);
    let symbols = m["symbols"].as_object().unwrap();
    assert_eq!(symbols.len(), 501);
    // 501 depth streams: three groups of at most 200, each its own connection.
    assert_eq!(m["connected"], serde_json::json!({"up": 3, "of": 3}), "{m}");
    let quiet: Vec<&String> = symbols
        .iter()
        .filter(|(_, s)| s["messages"] == 0)
        .map(|(name, _)| name)
        .collect();
    assert!(quiet.is_empty(), "recorded nothing of {quiet:?}");
    assert_eq!(m["continuity"]["breaks"], 0);
    assert_eq!(m["continuity"]["reconnects"], 0);
}
