//! The disk under the recorder fails or goes away, or the recorder is killed over and over: what
//! is left on disk is never false. A file whose write failed stays `.part` and holds whole gzip
//! members only; a restart loop on a full disk adds nothing; a removed data dir ends the run
//! within about a second; SIGKILLs lose only each run's unflushed tail and duplicate nothing.
//!
//! A full disk is a file size limit (`RLIMIT_FSIZE`, set with util-linux's `prlimit` around the
//! real binary): a write past it fails with EFBIG as a write to a full disk fails with ENOSPC, and
//! it needs neither a mount nor any privilege, so it works on every CI machine.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use obrec::{Rate, SentFrame, Sim, SimConfig};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn start_sim(symbols: &[&str], per_symbol: f64) -> Sim {
    Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            rate: Rate::PerSecond(per_symbol),
            record_sent: true,
            ..SimConfig::default()
        },
    )
    .unwrap()
}

/// `cmd` run with no file allowed past `bytes`. The SIGXFSZ that the limit raises is obrec's to
/// handle: it must fail the write (EFBIG), not kill the process.
fn with_file_limit(cmd: &Command, bytes: u64) -> Command {
    let mut limited = Command::new("prlimit");
    limited
        .arg(format!("--fsize={bytes}"))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => limited.env(key, value),
            None => limited.env_remove(key),
        };
    }
    limited
}

/// Every entry of `order_book/` with its size.
fn listing(data: &Path) -> BTreeMap<String, u64> {
    fs::read_dir(data.join("order_book"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, e.metadata().unwrap().len())
        })
        .collect()
}

fn assert_no_temporaries_or_empty_files(data: &Path) {
    for (name, len) in listing(data) {
        assert!(!name.ends_with(".tmp"), "{name} left behind");
        assert!(len > 0, "{name} is empty");
    }
}

/// Standard error without the console's connection lines: the problems reported.
fn problems(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("conn "))
        .map(String::from)
        .collect()
}

/// A write past the limit ends the run with exit 1 and one line; the file keeps its `.part` name
/// and holds every whole member written before, readable to its last byte; the next run finishes
/// it unchanged.
#[test]
fn a_file_whose_write_failed_stays_part_and_whole() {
    /// Several members at this rate and flush, then a failure, well inside the run.
    const LIMIT: u64 = 16 * 1024;
    let sim = start_sim(&["ETHUSDT"], 500.0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut record = record_sim(&sim, dir.path());
    record.args([
        "--symbol",
        "ETHUSDT",
        "--flush-ms",
        "100",
        "--run-minutes",
        "0.5",
    ]);
    let out = run_output(&mut with_file_limit(&record, LIMIT));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let files = depth_files(&data);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().ends_with(".part"), "{files:?}");
    let kept = fs::read(&files[0]).unwrap();
    assert!(kept.len() as u64 <= LIMIT);
    let lines = read_lines(&files);
    assert!(lines.len() > 50, "{} lines", lines.len());
    assert_no_temporaries_or_empty_files(&data);
    let stderr = problems(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(
        stderr[0].starts_with("obrec: recording failed: ")
            && stderr[0].contains(".ndjson.gz.part: File too large"),
        "{stderr:?}"
    );

    // Recovery at the next start gives it its final name, byte for byte.
    let out = run_output(record_sim(&sim, dir.path()).args([
        "--symbol",
        "ETHUSDT",
        "--run-minutes",
        "0.02",
    ]));
    sim.shutdown();
    assert!(out.status.success(), "{out:?}");
    let files = depth_files(&data);
    assert!(
        files.iter().all(|f| f.extension().unwrap() == "gz"),
        "{files:?}"
    );
    assert_eq!(fs::read(&files[0]).unwrap(), kept);
}

/// With no room for even one member, each start fails the same way and leaves the directory as
/// it found it: no empty data file, no temporary.
#[test]
fn a_restart_loop_on_a_full_disk_creates_nothing() {
    /// Room for the lock and the connection numbers, not for a member of 50 lines, nor for
    /// metrics.json.
    const LIMIT: u64 = 512;
    let sim = start_sim(&["ETHUSDT", "BTCUSDT"], 500.0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut record = record_sim(&sim, dir.path());
    record.args(["--symbol", "ETHUSDT,BTCUSDT", "--flush-ms", "100"]);
    record.args(["--run-minutes", "0.5", "--log-level", "off"]);
    let mut after = Vec::new();
    for _ in 0..3 {
        let out = run_output(&mut with_file_limit(&record, LIMIT));
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = problems(&String::from_utf8_lossy(&out.stderr));
        assert_eq!(stderr.len(), 1, "{stderr:?}");
        assert!(stderr[0].contains("File too large"), "{stderr:?}");
        assert_no_temporaries_or_empty_files(&data);
        after.push(listing(&data));
    }
    sim.shutdown();
    assert!(depth_files(&data).is_empty(), "{:?}", after[0]);
    assert_eq!(after[0], after[2], "a restart added or changed files");
}

/// `rm -rf order_book` under a running recorder: the next check (once a second) ends the run,
/// long before the next metrics refresh (10 s by default), with exit 1 and one line saying why.
#[test]
fn a_data_dir_removed_under_the_recorder_ends_the_run_within_a_second() {
    let sim = start_sim(&["ETHUSDT"], 100.0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = record_sim(&sim, dir.path())
        .args(["--symbol", "ETHUSDT", "--flush-ms", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "data on disk", || {
        depth_files(&data)
            .first()
            .is_some_and(|f| fs::metadata(f).is_ok_and(|m| m.len() > 0))
    });
    let book = data.join("order_book");
    fs::remove_dir_all(&book).unwrap();
    let removed = Instant::now();
    let status =
        wait_with_timeout(&mut child, Duration::from_secs(10)).expect("the recorder stops");
    let took = removed.elapsed();
    sim.shutdown();
    assert_eq!(status.code(), Some(1));
    // A check a second, the readers' read tick, and the shutdown.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(
        problems(&stderr),
        [format!(
            "obrec: recording failed: {}: moved or removed while recording",
            book.display()
        )]
    );
    assert!(!book.exists(), "nothing is recreated");
}

/// One killed run.
struct Killed {
    killed_ns: u64,
}

/// The crash loop, scaled down: runs into one data dir killed with SIGKILL at varied
/// moments, then one clean run. Every line is valid, no `u` is recorded twice, `replay --strict`
/// sees each restart as a reconnect, and every frame sent but not recorded was sent within the
/// last flush (plus the pipeline) before a kill.
#[test]
fn sigkill_loop_loses_only_each_runs_unflushed_tail() {
    const KILLS: u64 = 5;
    const FLUSH_MS: u64 = 200;
    /// Beyond the flush: the frames in the socket and the queue, and the stage's write.
    const PIPELINE_MS: u64 = 300;
    let sim = start_sim(&["ETHUSDT", "BTCUSDT"], 250.0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spawn = || {
        record_sim(&sim, dir.path())
            .args(["--symbol", "ETHUSDT,BTCUSDT", "--flush-ms"])
            .arg(FLUSH_MS.to_string())
            .args(["--print-interval", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut killed = Vec::new();
    for k in 0..KILLS {
        let sent_before = sim.sent().len();
        let mut child = spawn();
        wait_for(Duration::from_secs(20), "the run to connect", || {
            sim.sent().len() > sent_before
        });
        // Kills at varied points of the flush cycle, each after at least three flushes.
        std::thread::sleep(Duration::from_millis(600 + 150 * k));
        let killed_ns = now_ns();
        signal(&child, "-KILL");
        child.wait().unwrap();
        killed.push(Killed { killed_ns });
    }
    let mut child = spawn();
    let sent_before = sim.sent().len();
    wait_for(Duration::from_secs(20), "the last run to connect", || {
        sim.sent().len() > sent_before
    });
    std::thread::sleep(Duration::from_millis(500));
    terminate(&mut child, Duration::from_secs(10));
    let ended_ns = now_ns();
    let sent = sim.sent();
    sim.shutdown();

    let files = depth_files(&data);
    assert!(
        files.iter().all(|f| f.extension().unwrap() == "gz"),
        "every part recovered: {files:?}"
    );
    assert_no_temporaries_or_empty_files(&data);
    let lines = read_lines(&files);
    let mut recorded = HashSet::new();
    for l in &lines {
        assert!(
            recorded.insert((l.symbol().to_string(), l.u())),
            "{} u={} recorded twice",
            l.symbol(),
            l.u()
        );
    }
    let missing: Vec<&SentFrame> = sent
        .iter()
        .filter(|f| !recorded.contains(&(f.symbol.clone(), f.u)))
        .collect();
    let tail_ns = (FLUSH_MS + PIPELINE_MS) * 1_000_000;
    for f in &missing {
        // Sent at most a tail before a kill (or the end), and not after it: the socket of a
        // killed run closes at once.
        let near = |end_ns: u64| f.sent_ns + tail_ns >= end_ns && f.sent_ns <= end_ns + tail_ns;
        let excused = killed.iter().any(|k| near(k.killed_ns)) || near(ended_ns);
        assert!(
            excused,
            "{} u={} sent {} ms before the next kill, not recorded",
            f.symbol,
            f.u,
            killed
                .iter()
                .find(|k| k.killed_ns > f.sent_ns)
                .map_or(0, |k| (k.killed_ns - f.sent_ns) / 1_000_000)
        );
    }
    assert!(
        lines.len() > sent.len() / 2,
        "{} of {}",
        lines.len(),
        sent.len()
    );

    let out = run_output(obrec().arg("replay").arg("--strict").arg(&data));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for symbol in ["ETHUSDT", "BTCUSDT"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(symbol))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains(" breaks=0 "), "{line}");
        let gaps: u64 = line
            .split(" reconnect_gaps=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert_eq!(gaps, KILLS, "{line}");
    }
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` when this machine does not let the test mount one (not root, or in a container).
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        out.status.success().then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The same on a disk that is really full (ENOSPC, metrics.json and connections.json included),
/// where the machine allows mounting a small tmpfs; skipped otherwise.
#[test]
fn a_full_tmpfs_leaves_whole_files_and_restarts_add_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_tmpfs) = Tmpfs::mount(&data, "64k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root outside a container)");
        return;
    };
    let sim = start_sim(&["ETHUSDT", "BTCUSDT"], 1000.0);
    let mut record = record_sim(&sim, dir.path());
    record.args(["--symbol", "ETHUSDT,BTCUSDT", "--flush-ms", "100"]);
    record.args(["--run-minutes", "0.5", "--print-interval", "1"]);
    let mut names = Vec::new();
    for _ in 0..3 {
        let out = run_output(&mut record);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = problems(&String::from_utf8_lossy(&out.stderr));
        assert!(
            stderr
                .iter()
                .any(|l| l.starts_with("obrec: recording failed: ")
                    && l.ends_with("No space left on device (os error 28)")),
            "{stderr:?}"
        );
        assert_no_temporaries_or_empty_files(&data);
        // Whatever holds data is whole to its last byte.
        assert!(!read_lines(&depth_files(&data)).is_empty());
        names.push(listing(&data).into_keys().collect::<Vec<_>>());
    }
    sim.shutdown();
    // The first restart finishes the part the full disk left; after that nothing changes.
    assert_eq!(names[1], names[2], "a restart added files");
}
