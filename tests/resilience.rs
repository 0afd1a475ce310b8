//! Every way a feed fails, injected by the simulator, against the real recorder binary. After
//! each run the files are checked against what the simulator sent: no duplicate, no reordering,
//! no loss outside the time a connection was actually down, and the counters in metrics.json
//! match what was injected.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use obrec::{Fault, Faults, Rate, SentFrame, Sim, SimConfig};

struct Run {
    _dir: tempfile::TempDir,
    sent: Vec<SentFrame>,
    lines: Vec<Line>,
    metrics: serde_json::Value,
    stats: obrec::SimStats,
    /// Wall clock when the recorder exited, ns.
    ended_ns: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn start_sim(symbols: &[&str], rate: Rate, faults: Faults) -> Sim {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            rate,
            record_sent: true,
            faults,
            ..SimConfig::default()
        },
    )
    .unwrap()
}

/// Records `secs` seconds from a simulator with `faults`, with quick timers.
fn record(faults: Faults, secs: f64, extra: &[&str]) -> Run {
    let sim = start_sim(&["ETHUSDT", "BTCUSDT"], Rate::PerSecond(50.0), faults);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = run_output(
        record_sim(&sim, dir.path())
            .args(["--symbol", "ETHUSDT,BTCUSDT", "--depth", "5"])
            .args([
                "--run-minutes",
                &(secs / 60.0).to_string(),
                "--flush-ms",
                "100",
                "--print-interval",
                "1",
            ])
            .args(["--stale-sec", "1"])
            .args(if extra.contains(&"--ping-sec") {
                &[][..]
            } else {
                &["--ping-sec", "1"][..]
            })
            .args(extra),
    );
    let ended_ns = now_ns();
    let sent = sim.sent();
    let stats = sim.stats();
    sim.shutdown();
    assert!(
        out.status.success(),
        "recorder failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = read_lines(&depth_files(&data));
    let metrics = metrics(&data);
    Run {
        _dir: dir,
        sent,
        lines,
        metrics,
        stats,
        ended_ns,
    }
}

/// Frames sent this close to the recorder's exit may still have been in flight.
const IN_FLIGHT: Duration = Duration::from_millis(500);

impl Run {
    fn count(&self, key: &str) -> u64 {
        self.metrics[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in metrics"))
    }
    fn continuity(&self, key: &str) -> u64 {
        self.metrics["continuity"][key].as_u64().unwrap()
    }

    /// Recorded lines are unique and ordered per symbol, each a frame the simulator sent, with the
    /// same payload; and every frame sent is recorded unless `excused` says it may be missing.
    fn assert_exactly_once(&self, excused: impl Fn(&SentFrame) -> bool) {
        let mut sent: HashMap<(String, u64), &SentFrame> = HashMap::new();
        for f in &self.sent {
            sent.entry((f.symbol.clone(), f.u)).or_insert(f);
        }
        let by_symbol = lines_by_symbol(&self.lines);
        for (symbol, lines) in &by_symbol {
            for pair in lines.windows(2) {
                assert!(
                    pair[0].u() < pair[1].u(),
                    "{symbol}: u {} then {}",
                    pair[0].u(),
                    pair[1].u()
                );
            }
            for l in lines {
                let frame = sent
                    .get(&(symbol.clone(), l.u()))
                    .unwrap_or_else(|| panic!("{symbol} u={} was never sent", l.u()));
                assert_eq!(l.raw_data(), frame.payload);
            }
        }
        let recorded: std::collections::HashSet<(String, u64)> = self
            .lines
            .iter()
            .map(|l| (l.symbol().to_string(), l.u()))
            .collect();
        let cutoff = self.ended_ns - IN_FLIGHT.as_nanos() as u64;
        let missing: Vec<&SentFrame> = sent
            .values()
            .filter(|f| {
                f.sent_ns < cutoff && !recorded.contains(&(f.symbol.clone(), f.u)) && !excused(f)
            })
            .copied()
            .collect();
        assert!(
            missing.is_empty(),
            "{} sent frames not recorded, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        assert_eq!(self.count("total_messages") as usize, self.lines.len());
        assert!(self.lines.len() > 50, "only {} lines", self.lines.len());
    }

    /// Connection ids (recorder's) seen in the files.
    fn conns(&self) -> BTreeMap<u64, usize> {
        let mut m = BTreeMap::new();
        for l in &self.lines {
            *m.entry(l.json["conn"].as_u64().unwrap()).or_default() += 1;
        }
        m
    }
}

fn faults() -> Faults {
    Faults::default()
}

#[test]
fn clean_closes_reconnect_and_lose_nothing() {
    let run = record(
        Faults {
            close_after: Some(40),
            ..faults()
        },
        3.0,
        &[],
    );
    let closes = run.stats.injected(Fault::Close);
    assert!(closes >= 2, "{closes} closes");
    let reconnects = run.continuity("reconnects");
    assert!(
        reconnects + 1 >= closes && reconnects <= closes,
        "{reconnects} reconnects for {closes} closes"
    );
    assert_eq!(run.continuity("breaks"), 0, "a reconnect is not a break");
    // Events the simulator generated while no connection was up were sent to nobody; every
    // frame that was sent arrived.
    run.assert_exactly_once(|_| false);
    assert!(run.conns().len() >= 2);
}

#[test]
fn eof_without_close_frame_reconnects() {
    let run = record(
        Faults {
            eof_after: Some(40),
            ..faults()
        },
        3.0,
        &[],
    );
    assert!(run.stats.injected(Fault::Eof) >= 2);
    assert!(run.continuity("reconnects") >= 1);
    run.assert_exactly_once(|_| false);
}

#[test]
fn tcp_resets_reconnect_and_lose_at_most_what_was_in_the_socket() {
    let run = record(
        Faults {
            reset_after: Some(40),
            ..faults()
        },
        3.0,
        &[],
    );
    assert!(run.stats.injected(Fault::Reset) >= 2);
    assert!(run.continuity("reconnects") >= 1);
    // An RST discards what the kernel had not handed over yet: excuse the last frames of each
    // connection before its reset, nothing else.
    let mut last_of_conn: HashMap<u64, u64> = HashMap::new();
    for f in &run.sent {
        let e = last_of_conn.entry(f.conn).or_default();
        *e = (*e).max(f.sent_ns);
    }
    run.assert_exactly_once(|f| last_of_conn[&f.conn] - f.sent_ns < 50_000_000);
}

#[test]
fn a_stalled_connection_is_replaced() {
    let run = record(
        Faults {
            stall_after: Some(30),
            ..faults()
        },
        4.0,
        &[],
    );
    assert!(run.stats.injected(Fault::Stall) >= 1);
    assert!(run.count("stale_reconnects") >= 1);
    assert!(run.continuity("reconnects") >= run.count("stale_reconnects"));
    run.assert_exactly_once(|_| false);
}

#[test]
fn garbage_and_binary_frames_are_counted_and_the_stream_goes_on() {
    let run = record(
        Faults {
            garbage_every: Some(7),
            binary_every: Some(11),
            ..faults()
        },
        2.0,
        &[],
    );
    let injected = run.stats.injected(Fault::Garbage) + run.stats.injected(Fault::Binary);
    assert!(injected > 10);
    // Frames injected after the recorder stopped reading were never seen.
    let bad = run.count("bad_frames");
    assert!(
        bad <= injected && bad + 4 >= injected,
        "{bad} bad frames of {injected}"
    );
    assert_eq!(run.continuity("reconnects"), 0);
    run.assert_exactly_once(|_| false);
}

#[test]
fn oversized_frames_are_refused_without_unbounded_memory() {
    let run = record(
        Faults {
            oversized_every: Some(60),
            oversized_bytes: 4 << 20,
            ..faults()
        },
        3.0,
        &[],
    );
    assert!(run.stats.injected(Fault::Oversized) >= 1);
    assert!(run.count("bad_frames") >= 1);
    // The connection cannot be resynchronised after a refused frame: it is replaced, and what the
    // simulator sent behind the oversized frame (after data frame 60 of a connection) is lost with it.
    assert!(run.continuity("reconnects") >= 1);
    let mut nth: HashMap<(u64, String, u64), usize> = HashMap::new();
    let mut per_conn: HashMap<u64, usize> = HashMap::new();
    for f in &run.sent {
        let n = per_conn.entry(f.conn).or_default();
        *n += 1;
        nth.insert((f.conn, f.symbol.clone(), f.u), *n);
    }
    run.assert_exactly_once(|f| nth[&(f.conn, f.symbol.clone(), f.u)] > 60);
}

#[test]
fn missing_pongs_replace_the_connection() {
    let run = record(
        Faults {
            ignore_pings: true,
            ..faults()
        },
        3.5,
        &["--ping-sec", "0.5"],
    );
    assert!(run.stats.injected(Fault::IgnoredPing) >= 1);
    assert!(run.continuity("reconnects") >= 1);
    run.assert_exactly_once(|_| false);
}

#[test]
fn the_exchange_cut_at_connection_age_is_survived() {
    let run = record(
        Faults {
            conn_lifetime: Some(Duration::from_millis(800)),
            ..faults()
        },
        3.0,
        &[],
    );
    assert!(run.stats.injected(Fault::Lifetime) >= 2);
    assert!(run.continuity("reconnects") >= 2);
    run.assert_exactly_once(|_| false);
}

#[test]
fn make_before_break_switches_without_gap_or_duplicate() {
    let run = record(faults(), 4.0, &["--max-conn-age", "1"]);
    assert!(run.count("rollovers") >= 2, "{}", run.metrics);
    assert_eq!(run.continuity("reconnects"), 0);
    assert_eq!(run.count("reconnect_gaps"), 0);
    assert_eq!(run.continuity("breaks"), 0);
    assert!(run.conns().len() >= 3, "{:?}", run.conns());
    // Nothing excused: the old connection stays up until the new one delivers.
    run.assert_exactly_once(|_| false);
    // The file's pu chain holds across every switch.
    for (symbol, lines) in lines_by_symbol(&run.lines) {
        for pair in lines.windows(2) {
            assert_eq!(
                pair[1].json["pu"], pair[0].json["u"],
                "{symbol}: chain broken across a switch"
            );
        }
    }
}

#[test]
fn refused_upgrades_are_retried_with_backoff() {
    let run = record(
        Faults {
            reject_upgrades: 3,
            reject_status: 503,
            ..faults()
        },
        3.0,
        &[],
    );
    assert_eq!(run.stats.injected(Fault::RejectedUpgrade), 3);
    assert_eq!(run.count("connect_failures"), 3);
    run.assert_exactly_once(|_| false);
}

#[test]
fn exchange_gaps_are_breaks_not_reconnects() {
    let run = record(
        Faults {
            gap_every: Some(20),
            ..faults()
        },
        2.5,
        &[],
    );
    let gaps = run.stats.injected(Fault::Gap);
    assert!(gaps >= 4);
    let breaks = run.continuity("breaks");
    // Gaps generated after the recorder stopped are not seen.
    assert!(
        breaks <= gaps && breaks + 2 >= gaps,
        "{breaks} breaks for {gaps} gaps"
    );
    assert_eq!(run.continuity("reconnects"), 0);
    run.assert_exactly_once(|_| false);
    // The file itself shows each gap.
    let shown: usize = lines_by_symbol(&run.lines)
        .values()
        .map(|lines| {
            lines
                .windows(2)
                .filter(|p| p[1].json["pu"] != p[0].json["u"])
                .count()
        })
        .sum();
    assert_eq!(shown as u64, breaks);
}

#[test]
fn sigkill_leaves_readable_part_files_that_the_next_run_finishes() {
    let sim = start_sim(&["ETHUSDT"], Rate::PerSecond(100.0), faults());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spawn = || {
        record_sim(&sim, dir.path())
            .args(["--symbol", "ETHUSDT", "--flush-ms", "200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    wait_for(Duration::from_secs(20), "data on disk", || {
        depth_files(&data)
            .first()
            .is_some_and(|f| gunzip_lines(f) > 100)
    });
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-KILL");
    child.wait().unwrap();
    let killed_at = now_ns();
    let parts = depth_files(&data);
    assert_eq!(parts.len(), 1);
    assert!(parts[0].to_string_lossy().ends_with(".part"));
    // A plain gzip reader reads it, and it holds everything received up to one flush before the
    // kill (the simulator sent to one connection only).
    let before = read_lines(&parts);
    let sent = sim.sent();
    let due = sent
        .iter()
        .filter(|f| f.sent_ns + 400_000_000 < killed_at)
        .count();
    assert!(
        before.len() >= due,
        "{} lines on disk, {due} sent more than a flush before the kill",
        before.len()
    );
    let part_bytes = std::fs::read(&parts[0]).unwrap();

    // The next run finishes the .part before recording; nothing is overwritten.
    let mut child = spawn();
    wait_for(Duration::from_secs(20), "a second file", || {
        depth_files(&data).len() >= 2
    });
    terminate(&mut child, Duration::from_secs(5));
    sim.shutdown();
    let files = depth_files(&data);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files.iter().all(|f| f.extension().unwrap() == "gz"),
        "{files:?}"
    );
    assert_eq!(
        std::fs::read(&files[0]).unwrap(),
        part_bytes,
        "an intact .part is renamed, not rewritten"
    );
    let all = read_lines(&files);
    assert!(all.len() > before.len());
    assert_eq!(read_lines(&files[..1]).len(), before.len());
    check_no_overlap(&data);
}

fn check_no_overlap(data: &Path) {
    let files = depth_files(data);
    let first = read_lines(&files[..1]);
    let second = read_lines(&files[1..]);
    assert!(first.last().unwrap().u() < second.first().unwrap().u());
}

#[test]
fn a_stream_that_never_delivers_is_subscribed_again_without_costing_a_reconnect() {
    let run = record(
        Faults {
            mute: vec!["BTCUSDT".into()],
            ..faults()
        },
        4.0,
        &[],
    );
    // Subscribed at connect, then again after windows of 1 s and 2 s: not once a second.
    let subscriptions = run.stats.injected(Fault::Muted);
    assert!(
        (2..=3).contains(&subscriptions),
        "{subscriptions} subscriptions"
    );
    assert_eq!(run.continuity("reconnects"), 0);
    assert_eq!(run.metrics["symbols"]["BTCUSDT"]["feed"]["state"], "silent");
    assert!(!lines_by_symbol(&run.lines).contains_key("BTCUSDT"));
    // ETHUSDT kept its one connection: nothing lost, no gap.
    run.assert_exactly_once(|_| false);
    assert_eq!(run.conns().len(), 1, "{:?}", run.conns());
}

#[test]
fn a_data_dir_that_goes_away_ends_the_run_with_exit_1_and_intact_files() {
    let sim = start_sim(&["ETHUSDT"], Rate::PerSecond(100.0), faults());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = record_sim(&sim, dir.path())
        .args(["--symbol", "ETHUSDT", "--flush-ms", "100"])
        .args(["--file-minutes", "0.02", "--print-interval", "0.5"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "a finished file", || {
        depth_files(&data)
            .iter()
            .any(|f| f.extension().unwrap() == "gz")
    });
    let moved = dir.path().join("moved");
    std::fs::rename(data.join("order_book"), &moved).unwrap();
    let status =
        wait_with_timeout(&mut child, Duration::from_secs(10)).expect("the recorder stops");
    sim.shutdown();
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.lines().any(|l| l.starts_with("obrec: ")), "{stderr}");
    // What was written before is whole: finished files decode completely, and so does the .part.
    let mut files: Vec<_> = std::fs::read_dir(&moved)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.retain(|p| p.to_string_lossy().contains("_depth_"));
    files.sort();
    assert!(!read_lines(&files).is_empty());
}
