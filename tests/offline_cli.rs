//! The offline commands under misuse, over the real binary: output piped into a reader that goes
//! away, signals, a data directory where `order_book/` was meant, inputs with nothing to read, and
//! what `replay` says about what it read.

mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use flate2::Compression;
use flate2::write::GzEncoder;

/// The `n`th event of a chain, as an obrec depth line (partial depth, so `--book` needs no
/// snapshot).
fn depth_line(n: usize) -> String {
    let (first, last, prev) = (2 * n + 1, 2 * n + 2, 2 * n);
    format!(
        r#"{{"timestamp":"2026-11-30T01:36:30.054Z","symbol":"BTCUSDT","ts_recv":1796002590054.626,"E":1796002590054,"T":1796002590054,"U":{first},"u":{last},"pu":{prev},"latency_event_ms":0.626,"latency_pipeline_ms":0.021,"recv_ns":1796002590054626077,"conn":1,"stream":"btcusdt@depth5@100ms","data":{{"e":"depthUpdate","E":1796002590054,"T":1796002590054,"s":"BTCUSDT","U":{first},"u":{last},"pu":{prev},"b":[["60000.00","17.964"],["59999.90","10.678"]],"a":[["60000.10","12.749"],["60000.20","19.800"]]}}}}"#
    )
}
/// One hftbacktest depth line.
const HFT_LINE: &str = r#"1723161255030314667 {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161256299,"T":1723161256298,"s":"BTCUSDT","U":5,"u":7,"pu":4,"b":[["1.0","2"]],"a":[]}}"#;
/// Lines per gzip member of a big input: one member compressed once, written many times.
const MEMBER_LINES: usize = 20_000;
/// Members of a big input (a break where each starts again): 8 M lines, seconds of work for any command even on an idle machine,
/// so that a signal sent after [`SETTLE`] always finds it running.
const BIG_MEMBERS: usize = 400;
/// Time a command is given to start working before it is signalled.
const SETTLE: Duration = Duration::from_millis(400);
/// How soon a command must exit after a signal.
const PROMPT: Duration = Duration::from_secs(2);

/// Writes a gzip member of lines `line(0..MEMBER_LINES)`, `members` times over.
fn repeated_gz(path: &Path, line: impl Fn(usize) -> String, members: usize) {
    let mut body = String::new();
    for n in 0..MEMBER_LINES {
        body.push_str(&line(n));
        body.push('\n');
    }
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(body.as_bytes()).unwrap();
    let member = enc.finish().unwrap();
    let mut out = File::create(path).unwrap();
    for _ in 0..members {
        out.write_all(&member).unwrap();
    }
}

/// `<dir>/data` with one depth file of `members` members in its `order_book/`.
fn data_dir(dir: &Path, members: usize) -> PathBuf {
    let data = dir.join("data");
    fs::create_dir_all(data.join("order_book")).unwrap();
    repeated_gz(
        &data.join("order_book/btcusdt_depth_20261130T013630Z.ndjson.gz"),
        depth_line,
        members,
    );
    data
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Spawns `cmd` with stdout and stderr piped.
fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`, then collects what it printed.
fn finish_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    let status = wait_with_timeout(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        status.is_some(),
        "{what}: still running {:?} after it was asked to stop; stderr: {}",
        start.elapsed(),
        text(&out.stderr)
    );
    out
}

/// Signals a command at work; it must stop promptly, cut short: exit 130.
fn interrupt(cmd: &mut Command, sig: &str) -> Output {
    let mut child = spawn(cmd);
    std::thread::sleep(SETTLE);
    assert!(
        child.try_wait().unwrap().is_none(),
        "done before the signal: the input is too small to test with"
    );
    signal(&child, sig);
    let out = finish_within(child, PROMPT, sig);
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("interrupted"),
        "{}",
        text(&out.stderr)
    );
    out
}

/// Every regular file under `dir`, however deep.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Runs `cmd` with its stdout closed before it prints: it must not panic, and must end as it
/// would have with a reader.
fn with_stdout_closed(cmd: &mut Command) -> Output {
    let mut child = spawn(cmd);
    drop(child.stdout.take());
    let out = finish_within(child, Duration::from_secs(20), "a closed stdout");
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    out
}

#[test]
fn a_reader_that_goes_away_ends_the_books_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), BIG_MEMBERS);
    let mut child = spawn(obrec().args(["replay", "--book", "5"]).arg(&data));
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with(r#"{"symbol":"BTCUSDT""#), "{first}");
    // `| head -1`: the reader has its line and goes away.
    let out = finish_within(child, PROMPT, "replay --book into a closed pipe");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "quietly");
}

#[test]
fn a_closed_stdout_never_panics_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), 1);

    let out = with_stdout_closed(obrec().arg("replay").arg(&data));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = with_stdout_closed(obrec().args(["replay", "--json", "-"]).arg(&data));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let exported = dir.path().join("exported");
    let out = with_stdout_closed(
        obrec()
            .args(["export", "--format", "hftbacktest", "-o"])
            .arg(&exported)
            .arg(&data),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        files_under(&exported).len(),
        1,
        "the work is done all the same"
    );

    let out = with_stdout_closed(
        obrec()
            .args(["import", "--format", "hftbacktest", "-o"])
            .arg(dir.path().join("imported"))
            .arg(files_under(&exported).remove(0)),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // The demo prints its own lines and the recorder's SUMMARY lines: neither may fail it.
    let demo = dir.path().join("demo");
    let out = with_stdout_closed(obrec().args(["demo", "--seconds", "1", "--dir"]).arg(&demo));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = with_stdout_closed(
        obrec()
            .args(["health", "--max-age", "1e9", "--metrics"])
            .arg(demo.join("data/order_book/metrics.json")),
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "a verdict, not a crash: {}",
        text(&out.stderr)
    );
}

#[test]
fn a_signal_stops_replay_with_130_and_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), BIG_MEMBERS);
    let report = dir.path().join("report.json");
    let out = interrupt(
        obrec().arg("replay").arg(&data).arg("--json").arg(&report),
        "-INT",
    );
    assert!(
        text(&out.stdout).contains("SUMMARY"),
        "what was read is summarised"
    );
    assert!(!report.exists(), "an interrupted replay writes no report");
    assert_eq!(files_under(dir.path()).len(), 1, "only the input");
}

#[test]
fn a_signal_stops_export_and_import_leaving_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), BIG_MEMBERS);
    let exported = dir.path().join("exported");
    interrupt(
        obrec()
            .args(["export", "--format", "hftbacktest", "-o"])
            .arg(&exported)
            .arg(&data),
        "-TERM",
    );
    assert_eq!(files_under(&exported), Vec::<PathBuf>::new());

    let hft = dir.path().join("btcusdt_20240808.gz");
    repeated_gz(&hft, |_| HFT_LINE.to_string(), BIG_MEMBERS);
    let imported = dir.path().join("imported");
    interrupt(
        obrec()
            .args(["import", "--format", "hftbacktest", "-o"])
            .arg(&imported)
            .arg(&hft),
        "-INT",
    );
    assert_eq!(files_under(&imported), Vec::<PathBuf>::new());
}

#[test]
fn a_signal_stops_the_demo_unchecked() {
    let dir = tempfile::tempdir().unwrap();
    let out = interrupt(
        obrec()
            .args(["demo", "--seconds", "60", "--dir"])
            .arg(dir.path()),
        "-INT",
    );
    assert!(!text(&out.stdout).contains("recorded"), "no check was made");
    // The recording itself is finished, as any recording stopped by a signal.
    let files = depth_files(&dir.path().join("data"));
    assert!(!files.is_empty());
    assert!(
        files
            .iter()
            .all(|f| !f.to_string_lossy().ends_with(".part"))
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), BIG_MEMBERS);
    // Books into a pipe nobody reads: replay is stuck in a write, where no flag is looked at.
    let mut child = spawn(obrec().args(["replay", "--book", "5"]).arg(&data));
    std::thread::sleep(SETTLE);
    signal(&child, "-TERM");
    std::thread::sleep(SETTLE);
    assert!(
        child.try_wait().unwrap().is_none(),
        "a stalled reader holds up the first stop"
    );
    signal(&child, "-TERM");
    let out = finish_within(child, PROMPT, "a second SIGTERM");
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out.stderr));
}

#[test]
fn a_data_directory_is_read_as_its_order_book() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), 1);
    let out = run_output(obrec().arg("replay").arg(&data));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("msgs={MEMBER_LINES}")),
        "{}",
        text(&out.stdout)
    );

    let out = run_output(obrec().args(["replay", "--book", "2"]).arg(&data));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), MEMBER_LINES);

    let exported = dir.path().join("exported");
    let out = run_output(
        obrec()
            .args(["export", "--format", "hftbacktest", "-o"])
            .arg(&exported)
            .arg(&data),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(files_under(&exported).len(), 1);

    let port_file = dir.path().join("port");
    let mut serve = obrec()
        .arg("serve")
        .arg(&data)
        .arg("--port-file")
        .arg(&port_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "serve's port file", || {
        port_file.exists() || serve.try_wait().unwrap().is_some()
    });
    assert!(port_file.exists(), "serve did not start");
    terminate(&mut serve, PROMPT);
}

#[test]
fn inputs_without_depth_events_exit_2_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    // A depth file of no lines: a recorder that never received anything.
    let nothing = dir.path().join("nothing");
    fs::create_dir(&nothing).unwrap();
    GzEncoder::new(
        File::create(nothing.join("btcusdt_depth_20261130T013630Z.ndjson.gz")).unwrap(),
        Compression::fast(),
    )
    .finish()
    .unwrap();
    for input in [&empty, &nothing] {
        for args in [
            &["replay"][..],
            &["replay", "--book", "5"],
            &["export", "--format", "hftbacktest", "-o", "unused"],
            &["serve", "--listen", "127.0.0.1:0"],
        ] {
            let out = run_output(obrec().args(args).arg(input).current_dir(dir.path()));
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {input:?}: {stderr}");
            assert_eq!(
                stderr.trim_end(),
                format!("obrec: no recordings in {}", input.display()),
                "{args:?}"
            );
        }
    }
    assert!(!dir.path().join("unused").exists());
}

/// The hftbacktest fixture imported into `<dir>/data`: a diff-depth recording with its snapshot.
fn imported_fixture(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let out = run_output(
        obrec()
            .args(["import", "--format", "hftbacktest", "-o"])
            .arg(&data)
            .arg(fixture("hftbacktest_usdm_btcusdt_20240808.gz")),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    data
}

#[test]
fn books_of_diff_events_need_their_snapshot_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = imported_fixture(dir.path());
    let depth_only = depth_files(&data);
    let out = run_output(obrec().args(["replay", "--book", "5"]).args(&depth_only));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("BTCUSDT") && stderr.contains("btcusdt_snapshot_"),
        "{stderr}"
    );
    // With the directory, the snapshots come along.
    let out = run_output(obrec().args(["replay", "--book", "5"]).arg(&data));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).lines().count() > 1_000);
}

#[test]
fn a_damaged_snapshot_file_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let data = imported_fixture(dir.path());
    let snapshot = files_under(&data)
        .into_iter()
        .find(|f| f.to_string_lossy().contains("_snapshot_"))
        .expect("a snapshot file");
    let whole = fs::read(&snapshot).unwrap();
    fs::write(&snapshot, &whole[..whole.len() - 9]).unwrap();
    let out = run_output(obrec().arg("replay").arg(&data));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: truncated gzip data", snapshot.display())),
        "{stderr}"
    );
}

#[test]
fn replay_prints_a_line_per_symbol_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let data = imported_fixture(dir.path());
    let out = run_output(obrec().arg("replay").arg(&data));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // The depth symbol, then each stream beside the book, then the summary.
    assert_eq!(lines.len(), 4, "{stdout}");
    let symbol = lines[0];
    assert!(
        symbol.starts_with("BTCUSDT events=6551 first=2024-08-0"),
        "{symbol}"
    );
    for field in ["last=2024-08-0", "Z breaks=0 resyncs=", " reconnect_gaps=0"] {
        assert!(symbol.contains(field), "{field}: {symbol}");
    }
    assert!(
        lines[1].starts_with("trade BTCUSDT events=21313 ") && lines[1].contains(" breaks=0 "),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("bookTicker BTCUSDT events=66089 ") && lines[2].contains(" breaks=0 "),
        "{}",
        lines[2]
    );
    assert!(lines[3].starts_with("SUMMARY | t="), "{}", lines[3]);
    assert!(lines[3].contains("| msgs=6551 |"), "{}", lines[3]);
    // The streams beside the book read as in the recorder's SUMMARY.
    assert!(
        lines[3]
            .ends_with("| trade=21313 breaks=0 missing=0 | bookTicker=66089 breaks=0 | files=4"),
        "{}",
        lines[3]
    );

    // --json - : the report on stdout, the summary beside the errors.
    let out = run_output(obrec().args(["replay", "--json", "-"]).arg(&data));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["total_messages"], 6551);
    assert_eq!(report["files"].as_array().unwrap().len(), 4);
    assert_eq!(report["kinds"][0]["events"], 21313);
    assert_eq!(report["kinds"][1]["events"], 66089);
    assert!(text(&out.stderr).contains("SUMMARY | t="));
}

/// A recording with more breaks than replay lists: the first ones in detail, the rest counted,
/// and `--strict` still fails on them.
#[test]
fn replay_lists_the_first_breaks_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("data/order_book");
    fs::create_dir_all(&book).unwrap();
    // Every other event of a chain: each line's pu misses the previous line's u.
    repeated_gz(
        &book.join("btcusdt_depth_20261130T013630Z.ndjson.gz"),
        |n| depth_line(2 * n),
        1,
    );
    let out = run_output(obrec().arg("replay").arg(&book));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let listed = stderr.lines().filter(|l| l.starts_with("break: ")).count();
    let unlisted = MEMBER_LINES - 1 - listed;
    assert!(listed > 0 && unlisted > 0, "{listed} listed");
    assert!(
        stderr.contains(&format!("… and {unlisted} more breaks")),
        "{}",
        stderr.lines().last().unwrap_or_default()
    );
    assert!(text(&out.stdout).contains(&format!("breaks={}", MEMBER_LINES - 1)));
    let strict = run_output(obrec().args(["replay", "--strict"]).arg(&book));
    assert_eq!(strict.status.code(), Some(1));
}
