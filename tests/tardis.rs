//! `obrec export --format tardis` on the real hftbacktest fixture imported as an obrec
//! recording: the CSV files read back, their rows against the recorded payloads, and the book
//! they rebuild against the one `obrec replay --book` prints.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{depth_files, fixture, obrec, read_lines, run_output, snapshot_files};

const L2_HEADER: &str = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount";
const L2: &str = "binance-futures_incremental_book_L2_2024-08-08_BTCUSDT.csv.gz";
const TOP25: &str = "binance-futures_book_snapshot_25_2024-08-08_BTCUSDT.csv.gz";
const TOP5: &str = "binance-futures_book_snapshot_5_2024-08-08_BTCUSDT.csv.gz";
/// Levels compared with the replayed book.
const DEPTH: usize = 25;

/// The fixture imported as an obrec data directory.
fn imported(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let out = run_output(
        obrec()
            .args(["import", "--format", "hftbacktest"])
            .arg(fixture("hftbacktest_usdm_btcusdt_20240808.gz"))
            .arg("-o")
            .arg(&data),
    );
    assert!(out.status.success(), "{out:?}");
    data
}

fn export(inputs: &[&Path], out: &Path) -> std::process::Output {
    let mut cmd = obrec();
    cmd.args(["export", "--format", "tardis"])
        .args(inputs)
        .arg("-o")
        .arg(out);
    run_output(&mut cmd)
}

/// The CSV lines of a gzip file.
fn csv(path: &Path) -> Vec<String> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.ends_with('\n'), "{}", path.display());
    text.lines().map(str::to_string).collect()
}

struct Row {
    timestamp: u64,
    local: u64,
    snapshot: bool,
    side: String,
    price: String,
    amount: String,
}

fn l2_rows(lines: &[String]) -> Vec<Row> {
    lines
        .iter()
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            assert_eq!(c.len(), 8, "{l}");
            assert_eq!(&c[..2], ["binance-futures", "BTCUSDT"], "{l}");
            assert!(["bid", "ask"].contains(&c[5]), "{l}");
            Row {
                timestamp: c[2].parse().unwrap(),
                local: c[3].parse().unwrap(),
                snapshot: match c[4] {
                    "true" => true,
                    "false" => false,
                    other => panic!("is_snapshot {other}"),
                },
                side: c[5].to_string(),
                price: c[6].to_string(),
                amount: c[7].to_string(),
            }
        })
        .collect()
}

/// A book of price texts, ordered by value.
#[derive(Default)]
struct TestBook {
    bids: BTreeMap<i128, (String, String)>,
    asks: BTreeMap<i128, (String, String)>,
}

/// A decimal text as an integer of 1e-10 units, for ordering.
fn key(price: &str) -> i128 {
    let (int, frac) = price.split_once('.').unwrap_or((price, ""));
    let frac = format!("{frac:0<10}");
    int.parse::<i128>().unwrap() * 10_000_000_000 + frac[..10].parse::<i128>().unwrap()
}

impl TestBook {
    fn set(&mut self, side: &str, price: &str, amount: &str) {
        let ladder = if side == "bid" {
            &mut self.bids
        } else {
            &mut self.asks
        };
        if key(amount) == 0 {
            ladder.remove(&key(price));
        } else {
            ladder.insert(key(price), (price.to_string(), amount.to_string()));
        }
    }

    /// `[[p, q], …]` best first, as `replay --book` prints the sides.
    fn top(&self) -> (serde_json::Value, serde_json::Value) {
        let side = |levels: Vec<&(String, String)>| {
            serde_json::Value::from(
                levels
                    .into_iter()
                    .take(DEPTH)
                    .map(|(p, q)| vec![p.clone(), q.clone()])
                    .collect::<Vec<_>>(),
            )
        };
        (
            side(self.bids.values().rev().collect()),
            side(self.asks.values().collect()),
        )
    }
}

#[test]
fn the_real_fixture_exports_rows_that_rebuild_the_replayed_book() {
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    let out_dir = dir.path().join("tardis");
    let started = std::time::Instant::now();
    let out = export(&[&data], &out_dir);
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    eprintln!("{stdout}exported in {seconds:.2} s");
    let mut names: Vec<String> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // The imported capture holds trades and bookTicker too: their datasets come beside the book's.
    assert_eq!(
        names,
        [
            TOP25,
            TOP5,
            L2,
            "binance-futures_quotes_2024-08-08_BTCUSDT.csv.gz",
            "binance-futures_trades_2024-08-08_BTCUSDT.csv.gz"
        ]
    );

    let l2 = csv(&out_dir.join(L2));
    assert_eq!(l2[0], L2_HEADER);
    let rows = l2_rows(&l2[1..]);

    // The recording: one snapshot, and the depth events by their (E, receipt) in µs.
    let snapshots = read_lines(&snapshot_files(&data));
    assert_eq!(snapshots.len(), 1);
    let snapshot = &snapshots[0].json;
    let last_update_id = snapshot["lastUpdateId"].as_u64().unwrap();
    let body = &snapshot["data"];
    let snapshot_levels =
        body["bids"].as_array().unwrap().len() + body["asks"].as_array().unwrap().len();
    let events = read_lines(&depth_files(&data));
    let mut by_time: HashMap<(u64, u64), serde_json::Value> = HashMap::new();
    let mut expected_diff_rows = 0;
    let mut skipped = 0;
    for e in &events {
        let payload: serde_json::Value = serde_json::from_str(e.raw_data()).unwrap();
        // The sync rule: an event older than the snapshot cannot change its book.
        if payload["u"].as_u64().unwrap() < last_update_id {
            skipped += 1;
            continue;
        }
        expected_diff_rows +=
            payload["b"].as_array().unwrap().len() + payload["a"].as_array().unwrap().len();
        let at = (
            payload["E"].as_u64().unwrap() * 1000,
            e.json["recv_ns"].as_u64().unwrap() / 1000,
        );
        assert!(
            by_time.insert(at, payload).is_none(),
            "two events at {at:?}"
        );
    }
    assert!(skipped > 0);
    assert!(stdout.contains(&format!(
        "skipped: {skipped} events while their book was not synced"
    )));

    // The snapshot run comes first, then every synced event's levels.
    let run = rows.iter().take_while(|r| r.snapshot).count();
    assert_eq!(run, snapshot_levels);
    assert!(rows[run..].iter().all(|r| !r.snapshot));
    assert_eq!(rows.len() - run, expected_diff_rows);
    assert_eq!(rows[0].timestamp, body["E"].as_u64().unwrap() * 1000);
    assert_eq!(
        rows[0].local,
        snapshots[0].json["recv_ns"].as_u64().unwrap() / 1000
    );

    // `replay --book` prints the book after every applied event, by its `u`.
    let replay = Command::new(env!("CARGO_BIN_EXE_obrec"))
        .args(["replay", "--book", &DEPTH.to_string()])
        .arg(&data)
        .output()
        .unwrap();
    assert!(replay.status.success(), "{replay:?}");
    let replayed: HashMap<u64, serde_json::Value> = String::from_utf8(replay.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            // The imported trades are printed between the books: only books have a `u`.
            Some((v.get("u")?.as_u64().unwrap(), v))
        })
        .collect();

    let mut book = TestBook::default();
    for r in &rows[..run] {
        book.set(&r.side, &r.price, &r.amount);
    }
    let mut compared = 0;
    let mut i = run;
    while i < rows.len() {
        let at = (rows[i].timestamp, rows[i].local);
        let payload = &by_time[&at];
        // The event's rows: its bids then its asks, each text byte for byte as received.
        let mut want = Vec::new();
        for (side, key) in [("bid", "b"), ("ask", "a")] {
            for level in payload[key].as_array().unwrap() {
                want.push((
                    side.to_string(),
                    level[0].as_str().unwrap().to_string(),
                    level[1].as_str().unwrap().to_string(),
                ));
            }
        }
        let got: Vec<(String, String, String)> = rows[i..i + want.len()]
            .iter()
            .map(|r| (r.side.clone(), r.price.clone(), r.amount.clone()))
            .collect();
        assert_eq!(got, want, "event at {at:?}");
        assert!(
            rows[i..i + want.len()]
                .iter()
                .all(|r| (r.timestamp, r.local) == at)
        );
        for (side, price, amount) in &want {
            book.set(side, price, amount);
        }
        i += want.len();
        let printed = &replayed[&payload["u"].as_u64().unwrap()];
        let (bids, asks) = book.top();
        assert_eq!(
            (&bids, &asks),
            (&printed["bids"], &printed["asks"]),
            "{at:?}"
        );
        compared += 1;
    }
    assert!(compared > 6000, "{compared}");

    // The book snapshots: a row each time the top N changed; the last is the final book.
    for (name, depth) in [(TOP25, 25), (TOP5, 5)] {
        let lines = csv(&out_dir.join(name));
        let mut header = "exchange,symbol,timestamp,local_timestamp".to_string();
        for l in 0..depth {
            header.push_str(&format!(
                ",asks[{l}].price,asks[{l}].amount,bids[{l}].price,bids[{l}].amount"
            ));
        }
        assert_eq!(lines[0], header);
        assert!(lines.len() > 1000, "{name}: {}", lines.len());
        let last: Vec<&str> = lines.last().unwrap().split(',').collect();
        assert_eq!(last.len(), 4 + 4 * depth);
        let (bids, asks) = book.top();
        for l in 0..depth {
            assert_eq!(last[4 + 4 * l], asks[l][0].as_str().unwrap(), "{name}");
            assert_eq!(last[5 + 4 * l], asks[l][1].as_str().unwrap(), "{name}");
            assert_eq!(last[6 + 4 * l], bids[l][0].as_str().unwrap(), "{name}");
            assert_eq!(last[7 + 4 * l], bids[l][1].as_str().unwrap(), "{name}");
        }
    }
}

#[test]
fn a_damaged_depth_file_is_exported_up_to_the_damage_and_exits_1() {
    const GOOD: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    let depth = depth_files(&data).remove(0);
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(File::open(&depth).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(GOOD, "{\"recv_ns\":17231612");
    let mut gz = flate2::write::GzEncoder::new(File::create(&depth).unwrap(), Default::default());
    gz.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    gz.finish().unwrap();

    let out_dir = dir.path().join("tardis");
    let out = export(&[&data], &out_dir);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("line {}", GOOD + 1))
            && stderr.contains(&format!("read up to line {GOOD}")),
        "{stderr}"
    );
    let rows = l2_rows(&csv(&out_dir.join(L2))[1..]);
    let last_local = rows.last().unwrap().local;
    let last_good: serde_json::Value = serde_json::from_str(lines[GOOD - 1]).unwrap();
    assert_eq!(last_local, last_good["recv_ns"].as_u64().unwrap() / 1000);
}

#[test]
fn depth_without_its_snapshots_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    let depth = depth_files(&data).remove(0);
    let out_dir = dir.path().join("tardis");
    let out = export(&[&depth], &out_dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no book synced"), "{stderr}");
    assert!(!out_dir.exists());

    // An existing output is never replaced.
    assert!(export(&[&data], &out_dir).status.success());
    let again = export(&[&data], &out_dir);
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
}

#[test]
fn pandas_reads_the_incremental_file() {
    let has_pandas = Command::new("python3")
        .args(["-c", "import pandas"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pandas {
        eprintln!("skipped: python3 with pandas is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    let out_dir = dir.path().join("tardis");
    assert!(export(&[&data], &out_dir).status.success());
    let script = "import sys, pandas as pd\n\
        df = pd.read_csv(sys.argv[1], dtype={'price': str, 'amount': str})\n\
        assert list(df.columns) == ['exchange','symbol','timestamp','local_timestamp','is_snapshot','side','price','amount']\n\
        assert df['is_snapshot'].dtype == bool\n\
        print(len(df))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(out_dir.join(L2))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rows: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(rows + 1, csv(&out_dir.join(L2)).len());
}

/// Copies the recording at `data` to `dest`, each depth line rewritten by `edit` (dropped when it
/// returns false); snapshot files are copied when `snapshots`.
fn rewrite(
    data: &Path,
    dest: &Path,
    snapshots: bool,
    mut edit: impl FnMut(usize, &mut serde_json::Value) -> bool,
) {
    let dir = dest.join("order_book");
    fs::create_dir_all(&dir).unwrap();
    if snapshots {
        for f in snapshot_files(data) {
            fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
    for f in depth_files(data) {
        let mut body = String::new();
        for (i, line) in read_lines(std::slice::from_ref(&f)).into_iter().enumerate() {
            let mut json = line.json;
            if edit(i, &mut json) {
                body.push_str(&json.to_string());
                body.push('\n');
            }
        }
        let mut gz = flate2::write::GzEncoder::new(
            File::create(dir.join(f.file_name().unwrap())).unwrap(),
            Default::default(),
        );
        gz.write_all(body.as_bytes()).unwrap();
        gz.finish().unwrap();
    }
}

/// The books `replay --book N` prints, in order.
fn replayed(data: &Path, depth: usize) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_obrec"))
        .args(["replay", "--book", &depth.to_string()])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        // The imported trades are printed between the books: only books have a `u`.
        .filter(|v| v.get("u").is_some())
        .collect()
}

#[test]
fn a_second_day_starts_with_the_whole_book() {
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    let shifted = dir.path().join("shifted");
    // The second half of the events arrive a day later.
    const DAY_NS: u64 = 86_400_000_000_000;
    rewrite(&data, &shifted, true, |i, json| {
        if i >= 3000 {
            json["recv_ns"] = (json["recv_ns"].as_u64().unwrap() + DAY_NS).into();
        }
        true
    });
    let out_dir = dir.path().join("tardis");
    let out = export(&[&shifted], &out_dir);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 6);
    let second = csv(&out_dir.join(L2.replace("2024-08-08", "2024-08-09")));
    assert_eq!(second[0], L2_HEADER);
    let rows = l2_rows(&second[1..]);
    assert!(rows[0].snapshot && rows.iter().any(|r| !r.snapshot));
    // The day's file alone rebuilds the final book.
    let mut book = TestBook::default();
    for r in &rows {
        book.set(&r.side, &r.price, &r.amount);
    }
    let last = replayed(&shifted, DEPTH).pop().unwrap();
    assert_eq!(book.top(), (last["bids"].clone(), last["asks"].clone()));
    for name in [TOP25, TOP5] {
        let top = csv(&out_dir.join(name.replace("2024-08-08", "2024-08-09")));
        assert!(top.len() > 1, "{name}");
    }
}

#[test]
fn partial_depth_events_become_changes_of_the_top_n() {
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    // A depth-20 recording: each applied event's replayed top 20 as its payload.
    let books: HashMap<u64, serde_json::Value> = replayed(&data, N)
        .into_iter()
        .map(|b| (b["u"].as_u64().unwrap(), b))
        .collect();
    let partial = dir.path().join("partial");
    let mut payloads = Vec::new();
    rewrite(&data, &partial, false, |_, json| {
        let Some(book) = books.get(&json["u"].as_u64().unwrap()) else {
            return false;
        };
        json["stream"] = "btcusdt@depth20@100ms".into();
        let data = &mut json["data"];
        data["b"] = book["bids"].clone();
        data["a"] = book["asks"].clone();
        payloads.push(json.clone());
        true
    });
    let out_dir = dir.path().join("tardis");
    let out = export(&[&partial], &out_dir);
    assert!(out.status.success(), "{out:?}");
    let rows = l2_rows(&csv(&out_dir.join(L2))[1..]);
    let run = rows.iter().take_while(|r| r.snapshot).count();
    assert_eq!(run, 2 * N);
    assert!(rows[run..].iter().all(|r| !r.snapshot));
    // Applying each event's rows gives that event's top 20.
    let mut book = TestBook::default();
    let mut i = 0;
    for p in &payloads {
        let at = (
            p["E"].as_u64().unwrap() * 1000,
            p["recv_ns"].as_u64().unwrap() / 1000,
        );
        while i < rows.len() && (rows[i].timestamp, rows[i].local) == at {
            book.set(&rows[i].side, &rows[i].price, &rows[i].amount);
            i += 1;
        }
        assert_eq!(
            book.top(),
            (p["data"]["b"].clone(), p["data"]["a"].clone()),
            "{at:?}"
        );
    }
    assert_eq!(i, rows.len());
    // Twenty levels fill 20 of the 25 book snapshot levels; the rest are empty cells.
    let last = csv(&out_dir.join(TOP25)).pop().unwrap();
    let cells: Vec<&str> = last.split(',').collect();
    assert!(cells[4..4 + 4 * N].iter().all(|c| !c.is_empty()));
    assert!(cells[4 + 4 * N..].iter().all(|c| c.is_empty()));
}

const TRADES: &str = "binance-futures_trades_2024-08-08_BTCUSDT.csv.gz";
const QUOTES: &str = "binance-futures_quotes_2024-08-08_BTCUSDT.csv.gz";
const TRADES_HEADER: &str = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount";
const QUOTES_HEADER: &str =
    "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount";

/// Frames as received: (recv_ns, payload).
type Frames = Vec<(u64, String)>;

/// The fixture's real trade and bookTicker frames as an obrec recording, with what a live one
/// holds beside them: a replacement connection that delivers its predecessor's last trades again,
/// a trade the stream lost that came back over REST (a backfilled line, later), and a
/// `serverShutdown` meta line. Returns the trade frames as each should be written, in receipt
/// order, and the bookTicker frames.
fn stream_recording(dir: &Path) -> (Frames, Frames) {
    use common::{KindEvent, capture_frames, write_kind_file};
    fs::create_dir_all(dir).unwrap();
    let trades = capture_frames("btcusdt@trade", usize::MAX);
    let quotes = capture_frames("btcusdt@bookTicker", usize::MAX);
    let (switch, overlap, lost) = (trades.len() / 2, 3, 100);
    let mut events = Vec::new();
    let mut expected = Vec::new();
    for (i, (ns, data)) in trades.iter().enumerate() {
        if i == lost {
            continue;
        }
        let conn = if i < switch { 1 } else { 2 };
        if i == switch {
            // The replacement's first frames are the last ones of the old connection.
            for (ns0, data0) in &trades[switch - overlap..switch] {
                events.push(KindEvent {
                    recv_ns: *ns0 + 1,
                    data: data0,
                    conn: 2,
                    backfill: false,
                });
            }
        }
        events.push(KindEvent {
            recv_ns: *ns,
            data,
            conn,
            backfill: false,
        });
        expected.push((*ns, data.clone()));
    }
    // The backfill comes a little after the gap was seen.
    let lost_data = &trades[lost].1;
    let backfill_at = lost + 5;
    let backfill_ns = trades[backfill_at].0 + 1;
    let rest_item = {
        let v: serde_json::Value = serde_json::from_str(lost_data).unwrap();
        serde_json::json!({"e":"trade","E":v["T"],"T":v["T"],"s":v["s"],"t":v["t"],"p":v["p"],"q":v["q"],"m":v["m"]})
            .to_string()
    };
    events.insert(
        backfill_at,
        KindEvent {
            recv_ns: backfill_ns,
            data: &rest_item,
            conn: 0,
            backfill: true,
        },
    );
    // Both lists lack the lost trade before it: the backfill goes at the same index in each.
    expected.insert(backfill_at, (backfill_ns, rest_item.clone()));
    let shutdown_meta = r#"{"meta":"serverShutdown","recv_ns":1723161256000000000,"conn":1,"data":{"e":"serverShutdown","E":1723161256000}}"#;
    write_kind_file(
        &dir.join("btcusdt_trade_20240808T235415Z.ndjson.gz"),
        obrec::Kind::Trade,
        &events,
        &[(10, shutdown_meta)],
    );
    let quote_events: Vec<KindEvent> = quotes
        .iter()
        .map(|(ns, data)| KindEvent {
            recv_ns: *ns,
            data,
            conn: 1,
            backfill: false,
        })
        .collect();
    write_kind_file(
        &dir.join("btcusdt_bookTicker_20240808T235415Z.ndjson.gz"),
        obrec::Kind::BookTicker,
        &quote_events,
        &[],
    );
    (expected, quotes)
}

/// A row's cells, checked for the exchange and symbol.
fn cells(line: &str, n: usize) -> Vec<String> {
    let c: Vec<String> = line.split(',').map(str::to_string).collect();
    assert_eq!(c.len(), n, "{line}");
    assert_eq!(&c[..2], ["binance-futures", "BTCUSDT"], "{line}");
    c
}

#[test]
fn trades_and_quotes_are_the_recorded_frames_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let (trades, quotes) = stream_recording(&rec);
    let out_dir = dir.path().join("tardis");
    let out = export(&[&rec], &out_dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("skipped: 3 events a replacement connection delivered again"),
        "{stdout}"
    );
    let mut names: Vec<String> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [QUOTES, TRADES]);

    let rows = csv(&out_dir.join(TRADES));
    assert_eq!(rows[0], TRADES_HEADER);
    assert_eq!(
        rows.len() - 1,
        trades.len(),
        "one row per trade, the backfilled one too"
    );
    for (row, (ns, data)) in rows[1..].iter().zip(&trades) {
        let c = cells(row, 8);
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        let side = if v["m"].as_bool().unwrap() {
            "sell"
        } else {
            "buy"
        };
        let want = [
            (v["E"].as_u64().unwrap() * 1000).to_string(),
            (ns / 1000).to_string(),
            v["t"].to_string(),
            side.to_string(),
            v["p"].as_str().unwrap().to_string(),
            v["q"].as_str().unwrap().to_string(),
        ];
        assert_eq!(&c[2..], want, "{row}");
    }
    // Both sides are there: a taker buys and sells on any real day.
    assert!(rows.iter().any(|r| r.contains(",buy,")) && rows.iter().any(|r| r.contains(",sell,")));

    let rows = csv(&out_dir.join(QUOTES));
    assert_eq!(rows[0], QUOTES_HEADER);
    assert_eq!(rows.len() - 1, quotes.len());
    for (row, (ns, data)) in rows[1..].iter().zip(&quotes) {
        let c = cells(row, 8);
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        let want = [
            (v["E"].as_u64().unwrap() * 1000).to_string(),
            (ns / 1000).to_string(),
            s("A"),
            s("a"),
            s("b"),
            s("B"),
        ];
        assert_eq!(&c[2..], want, "{row}");
    }

    // Python's own csv and gzip read the same rows and the same price texts.
    let script = "import csv, gzip, sys\n\
        for path in sys.argv[1:]:\n\
        \x20   with gzip.open(path, 'rt', newline='') as f:\n\
        \x20       rows = list(csv.DictReader(f))\n\
        \x20   key = 'price' if 'price' in rows[0] else 'ask_price'\n\
        \x20   print(len(rows), rows[0][key], rows[-1][key], ','.join(rows[0].keys()))\n";
    let Ok(py) = Command::new("python3")
        .args(["-c", script])
        .arg(out_dir.join(TRADES))
        .arg(out_dir.join(QUOTES))
        .output()
    else {
        eprintln!("python3 is not installed: the Python check is skipped");
        return;
    };
    assert!(py.status.success(), "{py:?}");
    let price = |data: &str, key: &str| {
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        v[key].as_str().unwrap().to_string()
    };
    let want = format!(
        "{} {} {} {TRADES_HEADER}\n{} {} {} {QUOTES_HEADER}\n",
        trades.len(),
        price(&trades[0].1, "p"),
        price(&trades[trades.len() - 1].1, "p"),
        quotes.len(),
        price(&quotes[0].1, "a"),
        price(&quotes[quotes.len() - 1].1, "a"),
    );
    assert_eq!(String::from_utf8_lossy(&py.stdout), want);
}

#[test]
fn aggregate_trades_stand_in_only_for_a_symbol_without_trade_files() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    stream_recording(&rec);
    // Aggregates of the real trades: one per trade, `a` and `f..=l` from `t`.
    let aggs: Vec<(u64, String)> = common::capture_frames("btcusdt@trade", usize::MAX)
        .into_iter()
        .take(50)
        .map(|(ns, data)| {
            let v: serde_json::Value = serde_json::from_str(&data).unwrap();
            let t = v["t"].as_u64().unwrap();
            let agg = serde_json::json!({"e":"aggTrade","E":v["E"],"a":t - 5_000_000_000,"s":"BTCUSDT","p":v["p"],"q":v["q"],"f":t,"l":t,"T":v["T"],"m":v["m"]});
            (ns, agg.to_string())
        })
        .collect();
    let events: Vec<common::KindEvent> = aggs
        .iter()
        .map(|(ns, data)| common::KindEvent {
            recv_ns: *ns,
            data,
            conn: 1,
            backfill: false,
        })
        .collect();
    let agg_file = rec.join("btcusdt_aggTrade_20240808T235415Z.ndjson.gz");
    common::write_kind_file(&agg_file, obrec::Kind::AggTrade, &events, &[]);

    // With the trade file given, the aggregates are left out, and said to be.
    let out_dir = dir.path().join("both");
    let out = export(&[&rec], &out_dir);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 aggTrade files (their symbol's trade files give its trades)"),
        "{stdout}"
    );
    assert!(csv(&out_dir.join(TRADES)).len() > aggs.len() + 1);

    // Alone, they are the trades, `id` their `a`.
    let out_dir = dir.path().join("agg");
    let out = export(&[&agg_file], &out_dir);
    assert!(out.status.success(), "{out:?}");
    let rows = csv(&out_dir.join(TRADES));
    assert_eq!(rows.len() - 1, aggs.len());
    for (row, (_, data)) in rows[1..].iter().zip(&aggs) {
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        let c = cells(row, 8);
        assert_eq!(c[4], v["a"].to_string());
        assert_eq!(c[6], v["p"].as_str().unwrap());
    }
}

/// The recorder keeps a `serverShutdown` notice in the depth file of the connection it came on;
/// the book datasets pass over it as every reader of events does.
#[test]
fn a_notice_among_depth_lines_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    let plain = dir.path().join("plain");
    assert!(export(&[&data], &plain).status.success());
    let depth = &depth_files(&data)[0];
    let mut bytes = fs::read(depth).unwrap();
    let notice = b"{\"meta\":\"serverShutdown\",\"recv_ns\":1723161599900000000,\"conn\":1,\"data\":{\"e\":\"serverShutdown\",\"E\":1723161600000}}\n";
    let mut member = Vec::new();
    obrec::MemberEncoder::new(1).encode(notice, &mut member);
    bytes.extend_from_slice(&member);
    fs::write(depth, bytes).unwrap();
    let noticed = dir.path().join("noticed");
    let out = export(&[&data], &noticed);
    assert!(out.status.success(), "{out:?}");
    for name in [L2, TOP25, TOP5] {
        assert_eq!(csv(&noticed.join(name)), csv(&plain.join(name)), "{name}");
    }
}
