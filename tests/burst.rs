//! A burst the socket delivers is recorded whole: the real simulator sends a fixed number of
//! frames as fast as the recorder reads them, into a recorder whose hand-off budget is far too
//! small to hold them, and every frame is in the files, in order, with nothing dropped.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{depth_files, metrics, record_from, spawn_sim, terminate, wait_for};

/// Frames of the burst: enough to fill a 1 MiB budget hundreds of times over.
const FRAMES: u64 = 200_000;
/// Longest the burst may take to be recorded, on a machine shared with builds.
const RECORD_LIMIT: Duration = Duration::from_secs(180);

#[test]
fn an_unpaced_burst_into_a_small_budget_is_recorded_whole() {
    let dir = tempfile::tempdir().unwrap();
    // --stall-after: each connection sends exactly FRAMES data frames, then only answers pings.
    let frames = FRAMES.to_string();
    let (mut sim, port) = spawn_sim(
        dir.path(),
        &[
            "--symbol",
            "ETHUSDT",
            "--rate",
            "max",
            "--stall-after",
            &frames,
        ],
    );
    let data = dir.path().join("data");
    let ws = format!("ws://127.0.0.1:{port}");
    let rest = format!("http://127.0.0.1:{port}");
    let mut recorder = record_from(&ws, &rest, &data, &dir.path().join("logs"))
        .args(["--symbol", "ETHUSDT", "--depth", "10"])
        // A budget a few thousand frames deep, and the slowest compression: the readers must
        // wait for the writer, over and over.
        .args(["--queue-bytes", "1048576", "--gzip-level", "9"])
        // The stalled connection must not be replaced within the test: that would send more.
        .args(["--stale-sec", "600", "--print-interval", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let recorded = || {
        std::fs::read_to_string(data.join("order_book/metrics.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|m| m["total_messages"].as_u64())
    };
    wait_for(RECORD_LIMIT, "the burst to be recorded", || {
        recorded() == Some(FRAMES)
    });
    terminate(&mut recorder, Duration::from_secs(30));
    let _ = sim.kill();
    let _ = sim.wait();

    let m = metrics(&data);
    assert_eq!(m["total_messages"], FRAMES, "{m}");
    assert_eq!(m["log_queue"]["drops"], 0, "{m}");
    assert_eq!(m["continuity"]["reconnects"], 0, "{m}");
    assert_eq!(m["continuity"]["breaks"], 0, "{m}");
    let queue = &m["queue"];
    assert_eq!(queue["budget_bytes"], 1_048_576, "{m}");
    assert!(queue["blocked_ms"].as_u64().unwrap() > 0, "{m}");
    // The budget held: one event may go past it, and frames are under 2 KB.
    assert!(
        queue["peak_bytes"].as_u64().unwrap() <= 1_048_576 + 2048,
        "{m}"
    );
    // Level 9 could not keep up with the burst: the stage sped up rather than let it pile up.
    let members = m["gzip_members"].as_object().unwrap();
    let faster: u64 = members
        .iter()
        .filter(|(level, _)| level.as_str() != "9")
        .map(|(_, n)| n.as_u64().unwrap())
        .sum();
    assert!(faster > 0, "{m}");

    // Every frame is in the files once, in the order sent: each update chains to the previous.
    let mut lines = 0;
    let mut last_u = None;
    for file in depth_files(&data) {
        let reader = BufReader::new(flate2::read::MultiGzDecoder::new(
            File::open(&file).unwrap(),
        ));
        for line in reader.lines() {
            let line: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            let (u, pu) = (line["u"].as_u64().unwrap(), line["pu"].as_u64().unwrap());
            if let Some(last) = last_u {
                assert_eq!(pu, last, "line {lines} of {}", file.display());
            }
            last_u = Some(u);
            lines += 1;
        }
    }
    assert_eq!(lines, FRAMES);
}
