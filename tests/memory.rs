//! Memory stays bounded whatever the input: the real binary on small gzip files that decompress
//! to what used to cost gigabytes (a huge line, many large snapshots, many symbols), its peak
//! resident memory read from `/proc/<pid>/status` (`VmHWM`) while it runs.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::obrec;
use obrec::MemberEncoder;

/// What every command must stay under on these inputs. The runs below take 15–45 MB; the inputs
/// decompress to 200–330 MB, which the whole-line or whole-file reads held at once.
const BOUND_KB: u64 = 100 << 10;
/// The symbol cap costs about 120 MB of per-symbol state before the refusal: its own bound.
const SYMBOLS_BOUND_KB: u64 = 200 << 10;
/// Longest any of these runs may take.
const WATCHDOG: Duration = Duration::from_secs(60);

/// A depth line of `symbol` (upper case) whose ids chain from `u - 1`.
fn depth_line(symbol: &str, u: u64) -> String {
    let data = format!(
        r#"{{"e":"depthUpdate","E":1763627881000,"T":1763627880999,"s":"{symbol}","U":{u},"u":{u},"pu":{},"b":[["1.0","2"]],"a":[]}}"#,
        u - 1
    );
    format!(
        r#"{{"timestamp":"2025-11-20T08:38:01.000Z","symbol":"{symbol}","ts_recv":1763627881000.123,"E":1763627881000,"T":1763627880999,"U":{u},"u":{u},"pu":{},"latency_event_ms":0.123,"latency_pipeline_ms":0.011,"recv_ns":1763627881000123456,"conn":1,"stream":"{}@depth@100ms","data":{data}}}"#,
        u - 1,
        symbol.to_ascii_lowercase()
    ) + "\n"
}

/// Appends `text` as one gzip member, `times` times: a file of `times × text` that costs one
/// compression and a few KB per copy.
fn members(file: &mut Vec<u8>, text: &[u8], times: usize) {
    let mut member = Vec::new();
    MemberEncoder::new(1).encode(text, &mut member);
    for _ in 0..times {
        file.extend_from_slice(&member);
    }
}

/// Runs `child` to its end and returns its exit status and peak resident memory in KB, read from
/// `/proc` every few milliseconds (the peak only grows, so the last reading is the answer up to
/// the last instants).
fn peak_kb(mut child: Child) -> (ExitStatus, u64) {
    let started = Instant::now();
    let mut peak = 0;
    loop {
        peak = peak.max(vm_hwm_kb(child.id()).unwrap_or(0));
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        if started.elapsed() > WATCHDOG {
            let _ = child.kill();
            panic!("still running after {WATCHDOG:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `VmHWM` of a running process, KB; `None` once it has exited.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `obrec ARGS` to its end: exit status, peak KB, stderr.
fn run(args: &[&std::ffi::OsStr]) -> (ExitStatus, u64, String) {
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("stderr");
    let child = obrec()
        .args(args)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let (status, peak) = peak_kb(child);
    eprintln!("obrec {}: peak {peak} KB", args[0].display());
    (status, peak, fs::read_to_string(stderr_path).unwrap())
}

/// Starts `obrec serve PATH`, and returns its peak KB once it listens (the recording opened);
/// `None` in place of the peak when it exits instead, with its stderr.
fn serve_peak_kb(path: &Path) -> (Option<u64>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (port, stderr_path) = (dir.path().join("port"), dir.path().join("stderr"));
    let mut child = obrec()
        .arg("serve")
        .arg(path)
        .args(["--listen", "127.0.0.1:0", "--port-file"])
        .arg(&port)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut peak = 0;
    let listening = loop {
        peak = peak.max(vm_hwm_kb(child.id()).unwrap_or(0));
        if port.exists() {
            peak = peak.max(vm_hwm_kb(child.id()).unwrap_or(0));
            break true;
        }
        if child.try_wait().unwrap().is_some() || started.elapsed() > WATCHDOG {
            break false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("obrec serve: peak {peak} KB when listening");
    let stderr = fs::read_to_string(stderr_path).unwrap();
    (listening.then_some(peak), stderr)
}

/// One 320 MB line (in a 130 KB file) between two good lines: every command reports it as damage
/// at line 2, having read no more of it than the line bound.
#[test]
fn a_huge_line_is_damage_not_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = Vec::new();
    members(&mut file, depth_line("ETHUSDT", 10).as_bytes(), 1);
    members(&mut file, &vec![b'x'; 4 << 20], 80);
    members(&mut file, b"\n", 1);
    members(&mut file, depth_line("ETHUSDT", 11).as_bytes(), 1);
    let depth = dir.path().join("ethusdt_depth_20251120T000000Z.ndjson.gz");
    fs::write(&depth, &file).unwrap();

    let (status, peak, stderr) = run(&["replay".as_ref(), depth.as_os_str()]);
    assert!(peak < BOUND_KB, "replay: {peak} KB");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2: line longer than 16 MiB"),
        "{stderr}"
    );

    let out = dir.path().join("hbt");
    let (status, peak, stderr) = run(&[
        "export".as_ref(),
        "--format".as_ref(),
        "hftbacktest".as_ref(),
        depth.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert!(peak < BOUND_KB, "export: {peak} KB");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2: line longer than 16 MiB"),
        "{stderr}"
    );

    // Serve reads each symbol's first events when it opens the recording.
    let (peak, stderr) = serve_peak_kb(&depth);
    let peak = peak.unwrap_or_else(|| panic!("serve did not start: {stderr}"));
    assert!(peak < BOUND_KB, "serve: {peak} KB");
}

/// 2,000 snapshots of 100 KB each (200 MB, in a 260 KB file): export merges them with the depth
/// lines, import reads them back, replay rebuilds the book from them and serve answers them,
/// without holding them all.
#[test]
fn many_large_snapshots_are_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let levels = vec![r#"["61000.10","1.500"]"#; 5000].join(",");
    let mut text = String::new();
    for i in 0..100 {
        let id = 100 + i;
        text += &format!(
            r#"{{"recv_ns":1763627881000000000,"symbol":"ETHUSDT","lastUpdateId":{id},"data":{{"lastUpdateId":{id},"E":1763627881000,"T":1763627880999,"bids":[{levels}],"asks":[{levels}]}}}}"#
        );
        text.push('\n');
    }
    let mut file = Vec::new();
    members(&mut file, text.as_bytes(), 20);
    fs::write(
        dir.path()
            .join("ethusdt_snapshot_20251120T000000Z.ndjson.gz"),
        &file,
    )
    .unwrap();
    let mut depth = Vec::new();
    members(&mut depth, depth_line("ETHUSDT", 200).as_bytes(), 1);
    fs::write(
        dir.path().join("ethusdt_depth_20251120T000000Z.ndjson.gz"),
        &depth,
    )
    .unwrap();

    let out = dir.path().join("hbt");
    let (status, peak, stderr) = run(&[
        "export".as_ref(),
        "--format".as_ref(),
        "hftbacktest".as_ref(),
        dir.path().as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert!(peak < BOUND_KB, "export: {peak} KB");
    assert_eq!(status.code(), Some(0), "{stderr}");

    // What export wrote is an hftbacktest file of the 2,000 snapshots and the event.
    let imported = dir.path().join("imported");
    let (status, peak, stderr) = run(&[
        "import".as_ref(),
        "--format".as_ref(),
        "hftbacktest".as_ref(),
        out.join("ethusdt_20251120.gz").as_os_str(),
        "-o".as_ref(),
        imported.as_os_str(),
    ]);
    assert!(peak < BOUND_KB, "import: {peak} KB");
    assert_eq!(status.code(), Some(0), "{stderr}");

    let (status, peak, stderr) = run(&[
        "replay".as_ref(),
        "--book".as_ref(),
        "5".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert!(peak < BOUND_KB, "replay --book: {peak} KB");
    assert_eq!(status.code(), Some(0), "{stderr}");

    let (peak, stderr) = serve_peak_kb(dir.path());
    let peak = peak.unwrap_or_else(|| panic!("serve did not start: {stderr}"));
    assert!(peak < BOUND_KB, "serve: {peak} KB");
}

/// 10,000 symbols of one line each: replay refuses past its symbol cap, with a message that says
/// what to do, instead of growing by 60 KB a symbol.
#[test]
fn a_replay_of_too_many_symbols_is_refused_within_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..10_000)
        .map(|i| depth_line(&format!("S{i:05}USDT"), 10))
        .collect();
    let mut file = Vec::new();
    members(&mut file, text.as_bytes(), 1);
    let depth = dir.path().join("many_depth_20251120T000000Z.ndjson.gz");
    fs::write(&depth, &file).unwrap();
    let (status, peak, stderr) = run(&["replay".as_ref(), depth.as_os_str()]);
    assert!(peak < SYMBOLS_BOUND_KB, "replay: {peak} KB");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("more than 2048 symbols (the next is S02048USDT)"),
        "{stderr}"
    );
}
