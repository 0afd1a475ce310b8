//! `obrec export` / `obrec import` with the real binary: the real hftbacktest recordings (USD-M and
//! COIN-M) survive import and export whole, every stream, byte for byte, a fresh recording from
//! the simulator exports one valid hftbacktest file per symbol and imports back, damaged inputs
//! are read up to the damage, bad usage writes nothing, and (ignored unless asked for: they need
//! the Python package) hftbacktest's own converter reads what obrec exports.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::*;
use obrec::{Faults, Rate, Sim, SimConfig};

const FIXTURE: &str = "tests/data/binance/hftbacktest_usdm_btcusdt_20240808.gz";
const COIN_M_FIXTURE: &str = "tests/data/binance/hftbacktest_cm_ethusd_perp_20240808.gz";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

fn export(inputs: &[&Path], out: &Path) -> Output {
    run_output(
        obrec()
            .args(["export", "--format", "hftbacktest"])
            .args(inputs)
            .arg("-o")
            .arg(out),
    )
}

fn import(inputs: &[&Path], data: &Path) -> Output {
    run_output(
        obrec()
            .args(["import", "--format", "hftbacktest"])
            .args(inputs)
            .arg("-o")
            .arg(data),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\n{}\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Every line of a gzip file, strictly (a damaged file fails the test).
fn gunzip(path: &Path) -> Vec<String> {
    let mut s = String::new();
    flate2::read::MultiGzDecoder::new(File::open(path).unwrap())
        .read_to_string(&mut s)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(s.is_empty() || s.ends_with('\n'), "{}", path.display());
    s.lines().map(str::to_string).collect()
}

/// The complete lines of a gzip file up to where it is damaged.
fn gunzip_until_damage(path: &Path) -> Vec<String> {
    let mut reader = BufReader::new(flate2::read::MultiGzDecoder::new(File::open(path).unwrap()));
    let mut lines = Vec::new();
    let mut buf = String::new();
    while let Ok(n) = reader.read_line(&mut buf) {
        if n == 0 || !buf.ends_with('\n') {
            break;
        }
        lines.push(buf.trim_end_matches('\n').to_string());
        buf.clear();
    }
    lines
}

/// Checks the hftbacktest line shape and returns (ns, message).
fn hft_line(line: &str) -> (u64, serde_json::Value) {
    let (ts, json) = line.split_at(19);
    assert!(ts.bytes().all(|b| b.is_ascii_digit()), "{line:.80}");
    let json = json
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("{line:.80}"));
    assert!(!json.starts_with(' '));
    let v = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {line:.80}"));
    (ts.parse().unwrap(), v)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The original lines of `stream`, in file order.
fn lines_of<'a>(lines: &'a [String], stream: &str) -> Vec<&'a String> {
    let prefix = format!("{{\"stream\":\"{stream}\",\"data\":");
    lines
        .iter()
        .filter(|l| l[20..].starts_with(&prefix))
        .collect()
}

/// Each line of an imported series is the import of its original line: receipt time, `conn` 1,
/// `latency_pipeline_ms` 0 (not in the file), stream, symbol, the ids at top level as in the
/// payload, and the payload byte for byte.
fn assert_imported(series: &[Line], originals: &[&String], stream: &str, ids: &[&str]) {
    assert_eq!(series.len(), originals.len(), "{stream}");
    for (line, orig) in series.iter().zip(originals) {
        assert_eq!(
            line.json["recv_ns"].as_u64().unwrap(),
            orig[..19].parse::<u64>().unwrap()
        );
        assert_eq!(line.json["conn"], 1);
        assert_eq!(line.json["latency_pipeline_ms"].as_f64(), Some(0.0));
        assert_eq!(line.json["stream"], stream);
        assert_eq!(
            line.symbol(),
            line.json["data"]["s"].as_str().unwrap(),
            "{stream}"
        );
        for id in ids {
            assert_eq!(line.json[id], line.json["data"][id], "{stream} {id}");
        }
        assert_eq!(
            format!("{{\"stream\":\"{stream}\",\"data\":{}}}", line.raw_data()),
            orig[20..]
        );
    }
}

/// Imports the collector's file `fixture`, checks what each series holds, and exports it back:
/// every line, byte for byte. Returns the imported data directory (in `dir`).
fn round_trip(
    dir: &Path,
    fixture: &Path,
    symbol: &str,
    series: &[(&str, usize)],
    first_secs: &[&str],
) -> PathBuf {
    let original = gunzip(fixture);
    let data = dir.join("data");
    let started = Instant::now();
    let out = import(&[fixture], &data);
    let imported = started.elapsed();
    assert_ok(&out);
    // Every line of the collector's file is one obrec records: nothing is skipped.
    assert!(
        !text(&out.stdout).contains("skipped"),
        "{}",
        text(&out.stdout)
    );
    let ob = data.join("order_book");
    let want: Vec<String> = series
        .iter()
        .zip(first_secs)
        .map(|((kind, _), secs)| format!("{symbol}_{kind}_20240808T{secs}Z.ndjson.gz"))
        .collect();
    let mut got = names(&files_in(&ob));
    got.sort_by_key(|n| want.iter().position(|w| w == n));
    assert_eq!(got, want);
    for &(kind, n) in series {
        let lines = read_lines(&kind_files(&data, kind));
        assert_eq!(lines.len(), n, "{kind}");
        let stream = match kind {
            "depth" => format!("{symbol}@depth@0ms"),
            "snapshot" => continue,
            _ => format!("{symbol}@{kind}"),
        };
        let ids: &[&str] = match kind {
            "depth" => &["U", "u", "pu"],
            "trade" => &["t"],
            _ => &["u"],
        };
        assert_imported(&lines, &lines_of(&original, &stream), &stream, ids);
    }
    let snapshots = gunzip(&kind_files(&data, "snapshot")[0]);
    let rest: Vec<&String> = original
        .iter()
        .filter(|l| l[20..].starts_with("{\"lastUpdateId\""))
        .collect();
    assert_eq!(snapshots.len(), rest.len());
    let v: serde_json::Value = serde_json::from_str(&snapshots[0]).unwrap();
    assert_eq!(
        snapshots[0],
        format!(
            "{{\"recv_ns\":{},\"symbol\":\"{}\",\"lastUpdateId\":{},\"data\":{}}}",
            &rest[0][..19],
            symbol.to_ascii_uppercase(),
            v["lastUpdateId"],
            &rest[0][20..]
        )
    );

    // The imported book is a valid obrec recording: one unbroken chain.
    let replay = run_output(
        obrec()
            .args(["replay", "--strict"])
            .args(kind_files(&data, "depth"))
            .args(kind_files(&data, "snapshot")),
    );
    assert_ok(&replay);
    let stdout = text(&replay.stdout);
    let depth = series[0].1;
    assert!(stdout.contains(&format!("events={depth}")), "{stdout}");
    assert!(stdout.contains("breaks=0"), "{stdout}");

    let exported = dir.join("out");
    let started = Instant::now();
    let out = export(&[&ob], &exported);
    eprintln!(
        "{}: import {:.2} s, export {:.2} s",
        fixture.display(),
        imported.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_ok(&out);
    let files = files_in(&exported);
    assert_eq!(names(&files), [format!("{symbol}_20240808.gz")]);
    let lines = gunzip(&files[0]);
    assert_eq!(lines.len(), original.len());
    for (i, (got, want)) in lines.iter().zip(&original).enumerate() {
        assert!(got == want, "line {}: {got:.120} != {want:.120}", i + 1);
    }
    let counts: Vec<String> = series
        .iter()
        .map(|(kind, n)| match *kind {
            "snapshot" => format!("{n} snapshot"),
            kind => format!("{n} {kind}"),
        })
        .collect();
    let summary = format!("{} lines ({})", original.len(), counts.join(", "));
    assert!(
        text(&out.stdout).contains(&summary),
        "{}",
        text(&out.stdout)
    );
    data
}

/// The whole collector file, depth, snapshot, bookTicker and trades, survives import and export
/// byte for byte, in the collector's order.
#[test]
fn the_real_hftbacktest_recording_survives_import_and_export_byte_for_byte() {
    assert_eq!(gunzip(&fixture()).len(), 93_954);
    let dir = tempfile::tempdir().unwrap();
    round_trip(
        dir.path(),
        &fixture(),
        "btcusdt",
        &[
            ("depth", 6_551),
            ("snapshot", 1),
            ("trade", 21_313),
            ("bookTicker", 66_089),
        ],
        &["235415", "235415", "235415", "235415"],
    );

    // A recording of trades alone exports: the collector's trade lines, nothing else.
    let data = dir.path().join("data");
    let trades_only = dir.path().join("trades");
    let out = export(&[&kind_files(&data, "trade")[0]], &trades_only);
    assert_ok(&out);
    let original = gunzip(&fixture());
    let want: Vec<&String> = lines_of(&original, "btcusdt@trade");
    assert_eq!(
        gunzip(&trades_only.join("btcusdt_20240808.gz")),
        want.into_iter().cloned().collect::<Vec<_>>()
    );
    assert!(
        !text(&out.stderr).contains("snapshot"),
        "{}",
        text(&out.stderr)
    );

    // The Tardis export of the whole directory writes the trades and quotes beside the book.
    let tardis = dir.path().join("tardis");
    let out = run_output(
        obrec()
            .args(["export", "--format", "tardis"])
            .arg(data.join("order_book"))
            .arg("-o")
            .arg(&tardis),
    );
    assert_ok(&out);
    for (dataset, rows) in [("trades", 21_313), ("quotes", 66_089)] {
        let file = tardis.join(format!(
            "binance-futures_{dataset}_2024-08-08_BTCUSDT.csv.gz"
        ));
        // The header, then a row per event.
        assert_eq!(gunzip(&file).len(), rows + 1, "{dataset}");
    }
}

/// COIN-M's symbols carry an underscore (`ETHUSD_PERP`): its real capture imports, replays as one
/// unbroken chain and exports back whole, byte for byte, as the USD-M one does.
#[test]
fn the_real_coin_m_recording_survives_import_and_export_byte_for_byte() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(COIN_M_FIXTURE);
    assert_eq!(gunzip(&fixture).len(), 40_454);
    let dir = tempfile::tempdir().unwrap();
    round_trip(
        dir.path(),
        &fixture,
        "ethusd_perp",
        &[
            ("depth", 22_909),
            ("snapshot", 1),
            ("trade", 1_732),
            ("bookTicker", 15_812),
        ],
        &["235416", "235416", "235417", "235416"],
    );
}

#[test]
fn existing_files_are_never_overwritten_and_refusals_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert_ok(&import(&[&fixture()], &data));
    let ob = data.join("order_book");
    let exported = dir.path().join("out");
    assert_ok(&export(&[&ob], &exported));
    let contents = || -> Vec<(PathBuf, Vec<u8>)> {
        files_in(&ob)
            .into_iter()
            .chain(files_in(&exported))
            .map(|f| {
                let bytes = fs::read(&f).unwrap();
                (f, bytes)
            })
            .collect()
    };
    let before = contents();

    // A second run over the same outputs is refused, in one line, and changes nothing.
    for out in [import(&[&fixture()], &data), export(&[&ob], &exported)] {
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("exists"), "{stderr}");
    }
    assert!(before == contents(), "files changed or were added");

    // Inputs obrec cannot use: exit 2, one line naming the problem, no output directory.
    // A depth event without `U`: nothing obrec can chain.
    let unchainable = format!(
        "{} {}",
        1_723_161_253_937_085_768u64,
        r#"{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255208,"s":"BTCUSDT","u":50093239202,"b":[],"a":[]}}"#
    );
    let depth_file = kind_files(&data, "depth").remove(0);
    let not_gzip = dir.path().join("notes.gz");
    fs::write(&not_gzip, "hello\n").unwrap();
    // Named to sort after the good file: that one is converted first, and must not stay written.
    let late_bad = dir.path().join("zz_btcusdt_20240808.gz");
    write_ndjson_gz(&late_bad, &[unchainable]);
    let fresh = dir.path().join("fresh");
    let cases: Vec<(Output, &str)> = vec![
        (import(&[&late_bad], &fresh), "missing U"),
        (import(&[&depth_file], &fresh), "obrec export"),
        (import(&[&ob], &fresh), "directory"),
        (import(&[&not_gzip], &fresh), "gzip"),
        (import(&[&fixture(), &late_bad], &fresh), "missing U"),
        (export(&[&fixture()], &fresh), "obrec import"),
        (
            export(&[&dir.path().join("missing")], &fresh),
            "no such file",
        ),
        (
            export(&[&dir.path().join("nothing_*.gz")], &fresh),
            "no file matches",
        ),
        (export(&[&not_gzip], &fresh), "gzip"),
        (import(&[&fixture()], &not_gzip), "not a directory"),
        (
            run_output(obrec().args(["export", "-o"]).arg(&fresh).arg(&ob)),
            "--format",
        ),
    ];
    for (out, needle) in cases {
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(needle), "{needle}: {stderr}");
        assert!(!fresh.exists(), "{needle}: something was written");
    }
}

#[test]
fn a_damaged_input_is_converted_up_to_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    // The collector leaves such a file when it is killed: no gzip trailer, a cut last line.
    let cut = dir.path().join("btcusdt_20240808.gz");
    let whole = fs::read(fixture()).unwrap();
    fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let readable = gunzip_until_damage(&cut);
    assert!(readable.len() > 10_000);

    let data = dir.path().join("data");
    let out = import(&[&cut], &data);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("truncated gzip data"), "{stderr}");
    assert!(
        stderr.contains(&format!("read up to line {}", readable.len())),
        "{stderr}"
    );
    let ob = data.join("order_book");
    let exported = dir.path().join("out");
    assert_ok(&export(&[&ob], &exported));
    // Every line up to the damage, of every stream, comes back.
    let lines = gunzip(&exported.join("btcusdt_20240808.gz"));
    assert_eq!(lines, readable);

    // The same for an obrec file cut short (a crash while recording): read up to the cut.
    let depth = kind_files(&data, "depth").remove(0);
    let bytes = fs::read(&depth).unwrap();
    let cut_depth = dir
        .path()
        .join("cut")
        .join("btcusdt_depth_20240808T235415Z.ndjson.gz.part");
    fs::create_dir_all(cut_depth.parent().unwrap()).unwrap();
    fs::write(&cut_depth, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let readable = gunzip_until_damage(&cut_depth);
    let out = export(&[&cut_depth], &dir.path().join("out2"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("truncated gzip data"));
    let lines = gunzip(&dir.path().join("out2/btcusdt_20240808.gz"));
    assert_eq!(lines.len(), readable.len());
    assert!(
        text(&out.stderr).contains("no snapshot among the inputs"),
        "{}",
        text(&out.stderr)
    );
}

/// An obrec line's raw `data` payload (after `,"data":`, before the closing brace).
fn raw_after_data(line: &str) -> &str {
    let start = line.find(",\"data\":").unwrap() + ",\"data\":".len();
    &line[start..line.len() - 1]
}

/// What the export of `depth` and `snapshots` must be, per file name: the oracle restates the
/// contract (merge by receipt, snapshots first at a tie, a `_meta` line where `conn` changes).
fn expected_export(
    depth: &[Line],
    snapshots: &[(String, u64, String)],
) -> BTreeMap<String, Vec<String>> {
    const DAY: u64 = 86_400_000_000_000;
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: BTreeMap<String, (u64, u64)> = BTreeMap::new(); // symbol → (day, conn)
    let mut pending: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for (symbol, ns, body) in snapshots {
        pending
            .entry(symbol.clone())
            .or_default()
            .push((*ns, body.clone()));
    }
    for list in pending.values_mut() {
        list.sort_by_key(|(ns, _)| *ns);
        list.reverse();
    }
    let mut push = |symbol: &str, ns: u64, conn: Option<u64>, line: String| {
        let day = ns / DAY;
        let entry = current.entry(symbol.to_string()).or_insert((day, 1));
        if day > entry.0 {
            *entry = (day, 1);
        }
        let (y, m, d) = obrec::civil_from_days(entry.0 as i64);
        let name = format!("{}_{y:04}{m:02}{d:02}.gz", symbol.to_ascii_lowercase());
        let lines = files.entry(name).or_default();
        if let Some(conn) = conn.filter(|c| *c != entry.1) {
            entry.1 = conn;
            lines.push(format!(
                "{ns:019} {{\"stream\":\"_meta\",\"data\":{{\"e\":\"connection\",\"conn\":{conn}}}}}"
            ));
        }
        lines.push(line);
    };
    for l in depth {
        let ns = l.json["recv_ns"].as_u64().unwrap();
        let list = pending.entry(l.symbol().to_string()).or_default();
        while list.last().is_some_and(|(t, _)| *t <= ns) {
            let (t, body) = list.pop().unwrap();
            push(l.symbol(), t, None, format!("{t:019} {body}"));
        }
        let line = format!(
            "{ns:019} {{\"stream\":\"{}\",\"data\":{}}}",
            l.json["stream"].as_str().unwrap(),
            l.raw_data()
        );
        push(l.symbol(), ns, l.json["conn"].as_u64(), line);
    }
    for (symbol, list) in pending {
        for (t, body) in list.into_iter().rev() {
            push(&symbol, t, None, format!("{t:019} {body}"));
        }
    }
    files
}

/// Records ETHUSDT and BTCUSDT from the simulator into `<dir>/data`, the diff stream with its
/// snapshots, through reconnects and gaps; returns what the simulator sent.
fn record_two_symbols(dir: &Path) -> Vec<obrec::SentFrame> {
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: vec!["ETHUSDT".into(), "BTCUSDT".into()],
            rate: Rate::PerSecond(40.0),
            record_sent: true,
            faults: Faults {
                // Reconnects (new `conn`, a `_meta` line each) and gaps (more snapshots).
                close_after: Some(120),
                gap_every: Some(40),
                ..Faults::default()
            },
            ..SimConfig::default()
        },
    )
    .unwrap();
    let out = run_output(
        record_sim(&sim, dir)
            .args(["--symbol", "ETHUSDT,BTCUSDT", "--depth", "0"])
            .args(["--run-minutes", "0.07", "--flush-ms", "100"]),
    );
    assert_ok(&out);
    let sent = sim.sent();
    sim.shutdown();
    sent
}

#[test]
fn a_fresh_recording_exports_one_valid_file_per_symbol_and_imports_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sent = record_two_symbols(dir.path());

    let ob = data.join("order_book");
    let depth = read_lines(&depth_files(&data));
    let snapshot_files: Vec<PathBuf> = files_in(&ob)
        .into_iter()
        .filter(|f| names(std::slice::from_ref(f))[0].contains("_snapshot_"))
        .collect();
    let snapshot_lines: Vec<String> = snapshot_files.iter().flat_map(|f| gunzip(f)).collect();
    let snapshots: Vec<(String, u64, String)> = snapshot_lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["symbol"].as_str().unwrap().to_string(),
                v["recv_ns"].as_u64().unwrap(),
                raw_after_data(l).to_string(),
            )
        })
        .collect();
    for symbol in ["ETHUSDT", "BTCUSDT"] {
        let conns: BTreeSet<u64> = depth
            .iter()
            .filter(|l| l.symbol() == symbol)
            .map(|l| l.json["conn"].as_u64().unwrap())
            .collect();
        assert!(
            conns.len() >= 2,
            "{symbol}: no reconnect to export: {conns:?}"
        );
        let snaps = snapshots.iter().filter(|s| s.0 == symbol).count();
        assert!(snaps >= 2, "{symbol}: {snaps} snapshots");
    }

    let exported = dir.path().join("out");
    let out = export(&[&ob], &exported);
    assert_ok(&out);
    let files = files_in(&exported);
    let want = expected_export(&depth, &snapshots);
    assert_eq!(names(&files), want.keys().cloned().collect::<Vec<_>>());
    // One file per symbol, unless the recording crossed midnight UTC.
    let symbols: BTreeSet<String> = names(&files)
        .iter()
        .map(|n| n.split('_').next().unwrap().to_string())
        .collect();
    assert_eq!(
        symbols,
        BTreeSet::from(["btcusdt".into(), "ethusdt".into()])
    );
    let days: BTreeSet<u64> = depth
        .iter()
        .map(|l| l.json["recv_ns"].as_u64().unwrap() / 86_400_000_000_000)
        .chain(snapshots.iter().map(|s| s.1 / 86_400_000_000_000))
        .collect();
    if days.len() == 1 {
        assert_eq!(files.len(), 2, "{files:?}");
    }

    // What the simulator sent, by (symbol, u): the exported payloads must be these bytes.
    let sent_payload: BTreeMap<(String, u64), &str> = sent
        .iter()
        .map(|f| ((f.symbol.clone(), f.u), f.payload.as_str()))
        .collect();
    let mut meta = 0;
    for file in &files {
        let lines = gunzip(file);
        let name = names(std::slice::from_ref(file))[0].clone();
        let symbol = name.split('_').next().unwrap().to_ascii_uppercase();
        for line in &lines {
            let (_, v) = hft_line(line);
            match v["stream"].as_str() {
                Some("_meta") => {
                    meta += 1;
                    assert_eq!(v["data"]["e"], "connection");
                }
                Some(stream) => {
                    assert!(stream.starts_with(&symbol.to_ascii_lowercase()), "{stream}");
                    let data = &line
                        [20 + format!("{{\"stream\":\"{stream}\",\"data\":").len()..line.len() - 1];
                    let u = v["data"]["u"].as_u64().unwrap();
                    assert_eq!(Some(&data), sent_payload.get(&(symbol.clone(), u)));
                }
                None => assert!(v["lastUpdateId"].is_u64() && v["bids"].is_array()),
            }
        }
        assert_eq!(&lines, &want[&name], "{name}");
    }
    assert!(meta >= 2, "{meta} _meta lines");
    // Receipt order within a connection: the merge did not move depth lines.
    assert_eq!(
        want.values().map(Vec::len).sum::<usize>(),
        depth.len() + snapshots.len() + meta
    );

    // Back again: the same recording, but for latency_pipeline_ms (not in the format).
    let data2 = dir.path().join("data2");
    let inputs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    assert_ok(&import(&inputs, &data2));
    let depth2 = read_lines(&depth_files(&data2));
    assert_eq!(depth2.len(), depth.len());
    let mut by_symbol: BTreeMap<&str, Vec<&Line>> = BTreeMap::new();
    for l in &depth {
        by_symbol.entry(l.symbol()).or_default().push(l);
    }
    let mut by_symbol2: BTreeMap<&str, Vec<&Line>> = BTreeMap::new();
    for l in &depth2 {
        by_symbol2.entry(l.symbol()).or_default().push(l);
    }
    for (symbol, lines) in &by_symbol {
        for (a, b) in lines.iter().zip(&by_symbol2[symbol]) {
            let mut a_json = a.json.clone();
            a_json["latency_pipeline_ms"] = serde_json::json!(0.0);
            assert_eq!(a_json, b.json, "{symbol}");
            assert_eq!(a.raw_data(), b.raw_data());
        }
    }
    let mut snapshot_lines2: Vec<String> = files_in(&data2.join("order_book"))
        .iter()
        .filter(|f| names(std::slice::from_ref(f))[0].contains("_snapshot_"))
        .flat_map(|f| gunzip(f))
        .collect();
    let mut snapshot_lines = snapshot_lines;
    snapshot_lines.sort();
    snapshot_lines2.sort();
    assert_eq!(snapshot_lines, snapshot_lines2);

    // And replay finds the same continuity in both.
    let report = |dir: &Path| -> serde_json::Value {
        let json = dir.join("report.json");
        let out = run_output(
            obrec()
                .arg("replay")
                .arg(dir.join("order_book"))
                .arg("--json")
                .arg(&json),
        );
        assert_ok(&out);
        serde_json::from_str(&fs::read_to_string(json).unwrap()).unwrap()
    };
    let (r1, r2) = (report(&data), report(&data2));
    assert_eq!(r1["continuity"], r2["continuity"]);
    assert_eq!(
        r1["breaks"].as_array().unwrap().len(),
        r2["breaks"].as_array().unwrap().len()
    );
    assert_eq!(
        r1["connection_changes"].as_array().unwrap().len(),
        r2["connection_changes"].as_array().unwrap().len()
    );
}

/// Reads a file with hftbacktest's converter; prints counts of the exchange-side rows by kind and,
/// with `original`, whether every row (depth, snapshot and trade, both timestamps) equals the
/// original's.
const CONVERT_CHECK: &str = r#"
import json, sys
import numpy as np
from hftbacktest.data.utils import binancefutures
from hftbacktest.types import (EXCH_EVENT, LOCAL_EVENT, TRADE_EVENT, DEPTH_EVENT,
                               DEPTH_CLEAR_EVENT, DEPTH_SNAPSHOT_EVENT)

def convert(path):
    return binancefutures.convert(path, buffer_size=5_000_000)

data = convert(sys.argv[1])
rows = data[(data['ev'] & EXCH_EVENT) != 0]
kind = rows['ev'] & 0xff
out = {
    "rows": int(len(data)),
    "exch_rows": int(len(rows)),
    "local_rows": int(((data['ev'] & LOCAL_EVENT) != 0).sum()),
    "depth": int((kind == DEPTH_EVENT).sum()),
    "clear": int((kind == DEPTH_CLEAR_EVENT).sum()),
    "snapshot": int((kind == DEPTH_SNAPSHOT_EVENT).sum()),
    "trade": int((kind == TRADE_EVENT).sum()),
}
if len(sys.argv) > 2:
    # Bytes, not ==: a NaN in a row would make equal arrays differ.
    orig = convert(sys.argv[2])
    same = data.dtype == orig.dtype and data.tobytes() == orig.tobytes()
    out["same_rows_as_original"] = bool(same)
print("RESULT " + json.dumps(out))
"#;

/// A Python with the hftbacktest package: `$OBREC_TEST_PYTHON`, else `python3`. The tests that
/// need it are `#[ignore]`d (the package comes from PyPI, which a test run may not reach); run them
/// with `cargo test --release --test interop -- --ignored` once `pip install hftbacktest` is done.
fn python_with_hftbacktest() -> String {
    let candidates = std::env::var("OBREC_TEST_PYTHON")
        .into_iter()
        .chain(["python3".to_string()]);
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", "import hftbacktest.data.utils.binancefutures"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return python;
        }
    }
    panic!(
        "no Python with the hftbacktest package: pip install hftbacktest, \
         or set OBREC_TEST_PYTHON to such a python"
    );
}

fn hftbacktest_convert(python: &str, file: &Path, original: Option<&Path>) -> serde_json::Value {
    let out = Command::new(python)
        .args(["-c", CONVERT_CHECK])
        .arg(file)
        .args(original)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {stdout}\n{}",
        file.display(),
        text(&out.stderr)
    );
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("{stdout}"));
    eprintln!("hftbacktest converter on {}: {result}", file.display());
    serde_json::from_str(result).unwrap()
}

#[test]
#[ignore = "needs the hftbacktest Python package (pip install hftbacktest)"]
fn hftbacktests_converter_reads_the_export_as_it_reads_the_original() {
    let python = python_with_hftbacktest();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert_ok(&import(&[&fixture()], &data));
    let exported = dir.path().join("out");
    assert_ok(&export(&[&data.join("order_book")], &exported));
    let result = hftbacktest_convert(
        &python,
        &exported.join("btcusdt_20240808.gz"),
        Some(&fixture()),
    );
    assert_eq!(result["same_rows_as_original"], true, "{result}");
    // Trades are exported too: one row each.
    assert_eq!(result["trade"], 21_313, "{result}");
    // One snapshot of 1000 levels a side: two clears and 2000 levels.
    assert_eq!(result["clear"], 2);
    assert_eq!(result["snapshot"], 2000);
    assert!(result["depth"].as_u64().unwrap() > 100_000, "{result}");
}

#[test]
#[ignore = "needs the hftbacktest Python package (pip install hftbacktest)"]
fn hftbacktests_converter_reads_every_row_of_a_fresh_recordings_export() {
    let python = python_with_hftbacktest();
    let dir = tempfile::tempdir().unwrap();
    record_two_symbols(dir.path());
    let exported = dir.path().join("out");
    assert_ok(&export(&[&dir.path().join("data/order_book")], &exported));
    let files = files_in(&exported);
    assert!(!files.is_empty());
    for file in &files {
        let (mut depth_rows, mut snapshot_rows, mut clears) = (0, 0, 0);
        for line in &gunzip(file) {
            let (_, v) = hft_line(line);
            if v["data"]["e"] == "depthUpdate" {
                depth_rows += v["data"]["b"].as_array().unwrap().len()
                    + v["data"]["a"].as_array().unwrap().len();
            } else if v["lastUpdateId"].is_u64() {
                for side in ["bids", "asks"] {
                    let n = v[side].as_array().unwrap().len();
                    snapshot_rows += n;
                    clears += usize::from(n > 0);
                }
            }
        }
        let result = hftbacktest_convert(&python, file, None);
        assert_eq!(result["depth"], depth_rows, "{result}");
        assert_eq!(result["snapshot"], snapshot_rows, "{result}");
        assert_eq!(result["clear"], clears, "{result}");
        assert_eq!(result["trade"], 0);
    }
}
