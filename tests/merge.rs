//! `obrec merge` over the real binary: two recorders on one simulator, each losing a window of
//! its own, merge into one archive that `replay --strict` passes where neither recorder's own
//! files do; copies written once; the gaps no input covers reported with their ids; misuse.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use flate2::Compression;
use flate2::write::GzEncoder;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `obrec merge INPUTS… -o OUT --json OUT.json`: its output and report.
fn merge(inputs: &[&Path], out: &Path) -> (Output, serde_json::Value) {
    let json = out.with_extension("json");
    let output = run_output(
        obrec()
            .arg("merge")
            .args(inputs)
            .arg("-o")
            .arg(out)
            .arg("--json")
            .arg(&json),
    );
    let report = fs::read_to_string(&json)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(serde_json::Value::Null);
    (output, report)
}

/// `obrec replay --strict DIR`'s exit code, and its `--json` report.
fn replay_strict(dir: &Path) -> (Option<i32>, serde_json::Value) {
    let json = dir.with_extension("replay.json");
    let out = run_output(
        obrec()
            .args(["replay", "--strict"])
            .arg(dir)
            .arg("--json")
            .arg(&json),
    );
    let report = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    (out.status.code(), report)
}

/// `obrec sim` of two symbols at 20 events/s with `faults`, logging what it sends to
/// `<dir>/sent.ndjson`: the process, its port, the log.
fn sim_with(dir: &Path, faults: &[&str]) -> (Child, u16, PathBuf) {
    let sent_log = dir.join("sent.ndjson");
    let mut args = vec![
        "--listen=127.0.0.1:0".to_string(),
        "--symbol=ETHUSDT,BTCUSDT".to_string(),
        "--rate=20".to_string(),
        format!("--sent-log={}", sent_log.display()),
    ];
    args.extend(faults.iter().map(|f| f.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (sim, port) = spawn_sim(dir, &args);
    (sim, port, sent_log)
}

/// A recorder of depth (diff) and trades of both symbols from the sim on `port`, into `dir`.
fn recorder(port: u16, dir: &Path) -> Child {
    obrec()
        .args(["record", "--symbol", "ETHUSDT,BTCUSDT", "--depth", "0"])
        .args(["--streams", "depth,trade", "--flush-ms", "100"])
        .arg(format!("--endpoint=ws://127.0.0.1:{port}"))
        .arg(format!("--rest-endpoint=http://127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for the recorder writing `<dir>/data` to record its first lines: when it is up.
fn connected(dir: &Path) -> Instant {
    let data = dir.join("data");
    wait_for(Duration::from_secs(10), "a recorder's first lines", || {
        !depth_files(&data).is_empty()
    });
    Instant::now()
}

/// An event's id in its stream: depth `u`, trade `t`.
fn id_of(stream: &str, data: &serde_json::Value) -> u64 {
    let key = if stream.ends_with("@trade") { "t" } else { "u" };
    data[key].as_u64().unwrap()
}

/// The raw `data` of an NDJSON line whose `data` comes last.
fn raw_data(line: &str) -> &str {
    let start = line.find(",\"data\":").unwrap() + ",\"data\":".len();
    &line[start..line.len() - 1]
}

/// What the sim sent, per stream: id → (payload as sent, event time).
fn sent_events(sent_log: &Path) -> BTreeMap<String, BTreeMap<u64, (String, u64)>> {
    let mut sent: BTreeMap<String, BTreeMap<u64, (String, u64)>> = BTreeMap::new();
    for line in fs::read_to_string(sent_log).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let stream = v["stream"].as_str().unwrap().to_string();
        let id = id_of(&stream, &v["data"]);
        let e = v["data"]["E"].as_u64().unwrap();
        let data = raw_data(line).to_string();
        let previous = sent
            .entry(stream)
            .or_default()
            .insert(id, (data.clone(), e));
        // Every connection is sent the same bytes for one event.
        assert!(previous.is_none_or(|(p, _)| p == data), "{line}");
    }
    sent
}

/// The event lines of a data directory's depth and trade files, per stream, in file order:
/// (id, payload as recorded).
fn recorded_events(data: &Path) -> BTreeMap<String, Vec<(u64, String)>> {
    let mut files = depth_files(data);
    files.extend(kind_files(data, "trade"));
    let mut recorded: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for line in read_lines(&files) {
        if line.json.get("meta").is_some() {
            continue;
        }
        let stream = line.json["stream"].as_str().unwrap().to_string();
        let id = id_of(&stream, &line.json["data"]);
        recorded
            .entry(stream)
            .or_default()
            .push((id, raw_data(&line.text).to_string()));
    }
    recorded
}

/// The issue's done-when: two recorders on one simulator, each losing a different window (a
/// stalled connection each: frames withheld, then the stream resumes on the same connection, a
/// break; and one recorder killed and restarted), fail `replay --strict` each; their merge
/// passes it, holds every event the simulator sent exactly once with its payload byte for byte,
/// and reports no gap.
#[test]
fn two_recorders_losing_different_windows_merge_into_an_archive_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    // About 145 frames a second reach each connection (depth at 20/s and trades, of two
    // symbols): each connection stalls for 1 s some 7 s after it opens.
    let (mut sim, port, sent_log) = sim_with(dir.path(), &["--stall-after=1000", "--stall-sec=1"]);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut rec_a = recorder(port, &a);
    let a_up = connected(&a);
    // B is up before A's stall, and stalls well after A's is over.
    std::thread::sleep(Duration::from_millis(3500));
    let mut rec_b = recorder(port, &b);
    let b_up = connected(&b);
    assert!(
        b_up - a_up < Duration::from_millis(5500),
        "B connected {:?} after A: too late to cover A's stall on this machine",
        b_up - a_up
    );
    // A is killed after B's stall is over, and back well before its own next stall.
    std::thread::sleep(Duration::from_secs(10));
    rec_a.kill().unwrap();
    rec_a.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut rec_a = recorder(port, &a);
    std::thread::sleep(Duration::from_secs(3));
    let stopped_ms = now_ms();
    signal(&rec_a, "-TERM");
    signal(&rec_b, "-TERM");
    for rec in [&mut rec_a, &mut rec_b] {
        let status = wait_with_timeout(rec, Duration::from_secs(10)).expect("recorder exits");
        assert!(status.success(), "{status}");
    }
    terminate(&mut sim, Duration::from_secs(10));

    let (a_data, b_data) = (a.join("data"), b.join("data"));
    for data in [&a_data, &b_data] {
        let (code, report) = replay_strict(data);
        assert_eq!(code, Some(1), "{}: {report}", data.display());
        assert!(
            report["breaks"].as_array().is_some_and(|b| !b.is_empty()),
            "{}: no depth break: {report}",
            data.display()
        );
    }

    let merged = dir.path().join("merged");
    let (out, report) = merge(&[&a_data, &b_data], &merged);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(report["gaps"].as_array().unwrap().is_empty(), "{stderr}");
    let series = report["series"].as_array().unwrap();
    assert_eq!(
        series.len(),
        6,
        "depth, snapshot, trade of two symbols: {report}"
    );
    for s in series.iter().filter(|s| s["kind"] != "snapshot") {
        let only = s["only"].as_array().unwrap();
        assert!(
            only.iter().all(|n| n.as_u64().unwrap() > 0),
            "each recorder has events the other lacks: {s}"
        );
    }
    let (code, replayed) = replay_strict(&merged);
    assert_eq!(code, Some(0), "{replayed}");

    // Exactly once, as sent, byte for byte; everything sent while a recorder was reading (the
    // last second before they stopped may have been in flight).
    let sent = sent_events(&sent_log);
    let recorded = recorded_events(&merged);
    assert_eq!(
        recorded.keys().collect::<Vec<_>>(),
        sent.keys().collect::<Vec<_>>()
    );
    for (stream, events) in &recorded {
        let sent = &sent[stream];
        for pair in events.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "{stream}: {} then {}",
                pair[0].0,
                pair[1].0
            );
        }
        for (id, data) in events {
            let (sent_data, _) = sent
                .get(id)
                .unwrap_or_else(|| panic!("{stream} {id}: never sent"));
            assert_eq!(data, sent_data, "{stream} {id}");
        }
        let have: BTreeSet<u64> = events.iter().map(|(id, _)| *id).collect();
        let missing: Vec<u64> = sent
            .iter()
            .filter(|(id, (_, e))| !have.contains(id) && *e + 1000 < stopped_ms)
            .map(|(id, _)| *id)
            .collect();
        assert!(
            missing.is_empty(),
            "{stream}: sent, not merged: {missing:?}"
        );
    }
}

/// The imported real capture, split in two copies that each lack a different stretch of every
/// series (and share the rest): the merge gives back the capture line for line, byte for byte.
#[test]
fn overlapping_copies_merge_into_the_whole_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let whole = import_fixture("hftbacktest_usdm_btcusdt_20240808.gz", dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let book = whole.join("order_book");
    let mut names: Vec<PathBuf> = fs::read_dir(&book)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in &names {
        let lines = gunzip_text(path);
        let n = lines.len();
        let name = path.file_name().unwrap();
        for (copy, lacks) in [(&a, n / 5..2 * n / 5), (&b, 3 * n / 5..4 * n / 5)] {
            let kept: Vec<String> = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| n < 2 || !lacks.contains(i))
                .map(|(_, l)| l.clone())
                .collect();
            fs::create_dir_all(copy.join("order_book")).unwrap();
            write_ndjson_gz(&copy.join("order_book").join(name), &kept);
        }
    }
    let merged = dir.path().join("merged");
    let (out, report) = merge(&[&a, &b], &merged);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(report["gaps"], serde_json::json!([]), "{report}");
    for path in &names {
        let got = gunzip_text(&merged.join("order_book").join(path.file_name().unwrap()));
        assert!(got == gunzip_text(path), "{}", path.display());
    }
    for s in report["series"].as_array().unwrap() {
        let events = s["events"].as_u64().unwrap();
        let inputs: u64 = s["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(s["duplicates"].as_u64().unwrap(), inputs - events, "{s}");
        if events > 1 {
            assert!(
                s["only"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|n| n.as_u64().unwrap() > 0),
                "{s}"
            );
        }
    }

    // Identical copies: nothing twice.
    let again = dir.path().join("again");
    let (out, report) = merge(&[&whole, &whole.join("order_book")], &again);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for path in &names {
        let got = gunzip_text(&again.join("order_book").join(path.file_name().unwrap()));
        assert!(got == gunzip_text(path), "{}", path.display());
    }
    for s in report["series"].as_array().unwrap() {
        assert_eq!(s["duplicates"], s["events"], "{s}");
    }
}

/// Events the exchange lost for every connection (the sim's `--gap-every`) are in no input: the
/// merge says so, each gap with the ids around it, and its archive still fails `--strict`.
#[test]
fn gaps_no_input_covers_are_reported_with_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, port, sent_log) = sim_with(dir.path(), &["--gap-every=25"]);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut recs = [recorder(port, &a), recorder(port, &b)];
    std::thread::sleep(Duration::from_secs(4));
    for rec in &mut recs {
        terminate(rec, Duration::from_secs(10));
    }
    terminate(&mut sim, Duration::from_secs(10));

    let merged = dir.path().join("merged");
    let (out, report) = merge(&[&a.join("data"), &b.join("data")], &merged);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let gaps = report["gaps"].as_array().unwrap();
    assert!(gaps.len() >= 2, "{report}");
    let sent = sent_events(&sent_log);
    for gap in gaps {
        assert_eq!(gap["kind"], "depth", "{gap}");
        let symbol = gap["symbol"].as_str().unwrap().to_ascii_lowercase();
        let (from, to) = (gap["from"].as_u64().unwrap(), gap["to"].as_u64().unwrap());
        assert!(from < to, "{gap}");
        // Nothing the sim sent lies in the gap: no input could have covered it.
        let stream = &sent[&format!("{symbol}@depth@100ms")];
        assert_eq!(stream.range(from + 1..=to).count(), 0, "{gap}");
        assert!(
            gap["after_ns"].as_u64() < gap["before_ns"].as_u64(),
            "{gap}"
        );
        let line = format!(
            "gap: {} depth: no input has update ids after u={from} up to pu={to}, between ",
            gap["symbol"].as_str().unwrap()
        );
        assert!(stderr.contains(&line), "{line} not in {stderr}");
    }
    // The merge's gaps are the merged archive's breaks, one for one.
    let (code, replayed) = replay_strict(&merged);
    assert_eq!(code, Some(1), "{replayed}");
    let breaks: BTreeSet<(u64, u64)> = replayed["breaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["expected_pu"].as_u64().unwrap(),
                b["got_pu"].as_u64().unwrap(),
            )
        })
        .collect();
    let reported: BTreeSet<(u64, u64)> = gaps
        .iter()
        .map(|g| (g["from"].as_u64().unwrap(), g["to"].as_u64().unwrap()))
        .collect();
    assert_eq!(reported, breaks);
}

/// Two data directories of the imported capture, for the misuse cases.
fn two_copies(dir: &Path) -> (PathBuf, PathBuf) {
    let a = import_fixture("hftbacktest_usdm_btcusdt_20240808.gz", dir);
    let b = dir.join("b");
    fs::create_dir_all(b.join("order_book")).unwrap();
    for entry in fs::read_dir(a.join("order_book")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, b.join("order_book").join(path.file_name().unwrap())).unwrap();
    }
    (a, b)
}

#[test]
fn an_existing_output_or_an_input_that_is_no_recording_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_copies(dir.path());

    // An output with anything in it is left as it is.
    let out = dir.path().join("out");
    fs::create_dir_all(out.join("order_book")).unwrap();
    let kept = out.join("order_book/btcusdt_depth_20240808T235415Z.ndjson.gz");
    fs::write(&kept, b"mine").unwrap();
    let (output, _) = merge(&[&a, &b], &out);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("exists"), "{stderr}");
    assert_eq!(fs::read(&kept).unwrap(), b"mine");
    assert_eq!(
        files_under(&out),
        ["order_book/btcusdt_depth_20240808T235415Z.ndjson.gz"]
    );

    // An empty directory is fine.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let (output, _) = merge(&[&a, &b], &empty);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));

    // Inputs that are not recordings.
    let nothing = dir.path().join("nothing");
    fs::create_dir(&nothing).unwrap();
    let stray = dir.path().join("capture.ndjson.gz");
    write_ndjson_gz(&stray, &["{}".to_string()]);
    for (input, says) in [
        (&nothing, "no recordings in"),
        (&stray, "not a recording"),
        (&dir.path().join("missing"), "no such file or directory"),
    ] {
        let target = dir.path().join("never");
        let (output, _) = merge(&[&a, input], &target);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{input:?}: {stderr}");
        assert!(stderr.contains(says), "{input:?}: {stderr}");
        assert!(!target.exists(), "{input:?}: {target:?} written");
    }
}

/// A damaged input is merged up to its damage, which is named; the other input fills in.
#[test]
fn a_damaged_input_is_merged_up_to_the_damage_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_copies(dir.path());
    let name = "btcusdt_depth_20240808T235415Z.ndjson.gz";
    let damaged = b.join("order_book").join(name);
    let bytes = fs::read(&damaged).unwrap();
    fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    let merged = dir.path().join("merged");
    let (out, report) = merge(&[&a, &b], &merged);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&damaged.display().to_string()), "{stderr}");
    assert_eq!(report["damaged"].as_array().unwrap().len(), 1, "{report}");
    let whole = gunzip_text(&a.join("order_book").join(name));
    assert!(gunzip_text(&merged.join("order_book").join(name)) == whole);

    // Damaged alone: what it holds before the damage, and not a line more.
    let alone = dir.path().join("alone");
    let (out, _) = merge(&[&b], &alone);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let got = gunzip_text(&alone.join("order_book").join(name));
    assert!(!got.is_empty() && got.len() < whole.len());
    assert!(got[..] == whole[..got.len()]);
}

/// Lines per member of the big input below.
const MEMBER_LINES: u64 = 20_000;

/// A signal stops a merge at work: exit 130, and no file under the output.
#[test]
fn a_signal_stops_a_merge_leaving_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("data/order_book");
    fs::create_dir_all(&book).unwrap();
    // One member of a depth chain written 400 times: 8 M lines, seconds of work anywhere.
    let mut body = String::new();
    for n in 0..MEMBER_LINES {
        let (u, pu) = (2 * n + 2, 2 * n);
        body.push_str(&format!(
            r#"{{"timestamp":"2026-11-30T01:36:30.054Z","symbol":"BTCUSDT","ts_recv":1796002590054.626,"E":1796002590054,"T":1796002590054,"U":{u},"u":{u},"pu":{pu},"latency_event_ms":0.626,"latency_pipeline_ms":0.021,"recv_ns":1796002590054626077,"conn":1,"stream":"btcusdt@depth5@100ms","data":{{"e":"depthUpdate","E":1796002590054,"s":"BTCUSDT","U":{u},"u":{u},"pu":{pu},"b":[],"a":[]}}}}"#
        ));
        body.push('\n');
    }
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    std::io::Write::write_all(&mut enc, body.as_bytes()).unwrap();
    let member = enc.finish().unwrap();
    fs::write(
        book.join("btcusdt_depth_20261130T013630Z.ndjson.gz"),
        member.repeat(400),
    )
    .unwrap();

    let out = dir.path().join("merged");
    let mut child = obrec()
        .arg("merge")
        .arg(dir.path().join("data"))
        .arg("-o")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        child.try_wait().unwrap().is_none(),
        "done before the signal"
    );
    signal(&child, "-INT");
    let status = wait_with_timeout(&mut child, Duration::from_secs(2));
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "{}",
        text(&output.stderr)
    );
    assert!(text(&output.stderr).contains("interrupted"));
    assert!(!out.exists(), "{:?}", files_under(&out));
}
