//! The streams beside the book offline, over the real binary and real frames: trade and
//! bookTicker events of the hftbacktest capture, wrapped in the recorder's kind lines, checked by
//! `obrec replay` (counts, an injected gap, the backfill that closes it, meta lines), printed
//! between the books by `replay --book`, and played by `obrec serve` byte for byte.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use obrec::{Pace, Recording, Serve, ServeConfig};
use serde_json::Value;
use tungstenite::Message;
use tungstenite::stream::MaybeTlsStream;

/// Trades taken from the capture: dense ids (the capture lost none of its first 2000).
const TRADES: usize = 500;
/// Where a gap is cut into them, and how many trades it takes.
const GAP_AT: usize = 100;
const GAP_LEN: usize = 3;
/// The name of a trade file in a recording.
const TRADE_FILE: &str = "btcusdt_trade_20240808T235416Z.ndjson.gz";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The capture's first [`TRADES`] trades as live lines on connection 1.
fn trade_lines() -> (Vec<(u64, String)>, Vec<String>) {
    let frames = capture_frames("btcusdt@trade", TRADES);
    assert_eq!(frames.len(), TRADES);
    let lines = frames
        .iter()
        .map(|(ns, data)| kind_line("btcusdt@trade", *ns, 1, false, data))
        .collect();
    (frames, lines)
}

/// `obrec replay --json - <paths>`: the exit code, the report and stderr.
fn replay_json(args: &[&str], paths: &[&Path]) -> (Option<i32>, Value, String) {
    let out = run_output(
        obrec()
            .arg("replay")
            .args(args)
            .args(["--json", "-"])
            .args(paths),
    );
    let stderr = text(&out.stderr);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (out.status.code(), report, stderr)
}

fn book_dir(dir: &Path) -> PathBuf {
    let book = dir.join("data/order_book");
    fs::create_dir_all(&book).unwrap();
    book
}

#[test]
fn replay_counts_a_clean_trade_file_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let book = book_dir(dir.path());
    let (frames, lines) = trade_lines();
    write_ndjson_gz(&book.join(TRADE_FILE), &lines);

    let out = run_output(obrec().args(["replay", "--strict"]).arg(&book));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("trade BTCUSDT "))
        .unwrap_or_else(|| panic!("no trade line: {stdout}"));
    assert!(
        line.starts_with(&format!("trade BTCUSDT events={TRADES} first=2024-08-0")),
        "{line}"
    );
    for field in [
        " breaks=0 ",
        " reconnect_gaps=0 ",
        " duplicates=0 ",
        " missing_ids=0 ",
        " open_breaks=0",
    ] {
        assert!(line.contains(field), "{field}: {line}");
    }

    let (code, report, _) = replay_json(&[], &[&book]);
    assert_eq!(code, Some(0));
    let kinds = report["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 1, "{report}");
    let k = &kinds[0];
    assert_eq!(
        (k["symbol"].as_str(), k["kind"].as_str()),
        (Some("BTCUSDT"), Some("trade"))
    );
    assert_eq!(k["events"], TRADES as u64);
    for zero in [
        "breaks",
        "reconnect_gaps",
        "duplicates",
        "gaps",
        "missing_ids",
        "backfilled",
    ] {
        assert_eq!(k[zero], 0, "{zero}: {k}");
    }
    assert_eq!(k["first_ns"], frames[0].0);
    assert_eq!(k["last_ns"], frames[TRADES - 1].0);
    assert!(report.get("kind_gaps").is_none(), "{report}");
    assert_eq!(report["total_messages"], 0, "no depth read");
}

#[test]
fn replay_finds_an_injected_trade_gap_and_a_backfill_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let book = book_dir(dir.path());
    let (frames, mut lines) = trade_lines();
    lines.drain(GAP_AT..GAP_AT + GAP_LEN);
    let id = |i: usize| {
        serde_json::from_str::<Value>(&frames[i].1).unwrap()["t"]
            .as_u64()
            .unwrap()
    };
    let (from, to) = (id(GAP_AT), id(GAP_AT + GAP_LEN - 1));
    let file = book.join(TRADE_FILE);
    write_ndjson_gz(&file, &lines);

    let (code, report, stderr) = replay_json(&[], &[&book]);
    assert_eq!(code, Some(0), "a break fails only --strict: {stderr}");
    let k = &report["kinds"][0];
    assert_eq!(k["events"], (TRADES - GAP_LEN) as u64);
    assert_eq!(
        (k["breaks"].as_u64(), k["gaps"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(k["missing_ids"], GAP_LEN as u64);
    assert_eq!(k["missing_after_backfill"], GAP_LEN as u64);
    assert_eq!(
        (k["gaps_filled"].as_u64(), k["open_breaks"].as_u64()),
        (Some(0), Some(1))
    );
    let gap = &report["kind_gaps"][0];
    assert_eq!(
        (gap["from"].as_u64(), gap["to"].as_u64()),
        (Some(from), Some(to))
    );
    assert_eq!(gap["line"], GAP_AT as u64 + 1, "the line after the gap");
    assert_eq!(
        (gap["reconnect"].as_bool(), gap["filled"].as_bool()),
        (Some(false), Some(false))
    );
    let listed = format!(
        "break: {} line {} BTCUSDT trade: missing ids {from}..={to}\n",
        file.display(),
        GAP_AT + 1
    );
    assert!(stderr.contains(&listed), "{stderr}");
    let strict = run_output(obrec().args(["replay", "--strict"]).arg(&book));
    assert_eq!(strict.status.code(), Some(1));

    // The recorder fetched the lost trades over REST and appended them, after the live lines,
    // in an order of their own.
    let last_ns = frames[TRADES - 1].0;
    for (n, i) in [GAP_AT + 2, GAP_AT, GAP_AT + 1].into_iter().enumerate() {
        lines.push(kind_line(
            "btcusdt@trade",
            last_ns + 1 + n as u64,
            0,
            true,
            &frames[i].1,
        ));
    }
    write_ndjson_gz(&file, &lines);
    let (code, report, stderr) = replay_json(&["--strict"], &[&book]);
    assert_eq!(code, Some(0), "the gap is closed: {stderr}");
    let k = &report["kinds"][0];
    assert_eq!(
        k["events"],
        (TRADES - GAP_LEN) as u64,
        "backfill is no live event"
    );
    assert_eq!(k["backfilled"], GAP_LEN as u64);
    assert_eq!(k["breaks"], 1, "the break was found");
    assert_eq!(
        (k["gaps_filled"].as_u64(), k["open_breaks"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(k["missing_after_backfill"], 0);
    assert_eq!(report["kind_gaps"][0]["filled"], true);
    assert!(
        stderr.contains(&format!("missing ids {from}..={to}, filled by backfill")),
        "{stderr}"
    );
}

#[test]
fn meta_lines_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let book = book_dir(dir.path());
    let (frames, mut lines) = trade_lines();
    lines.insert(GAP_AT, shutdown_line(frames[GAP_AT].0 - 1, 1));
    write_ndjson_gz(&book.join(TRADE_FILE), &lines);
    let tickers: Vec<String> = capture_frames("btcusdt@bookTicker", 50)
        .iter()
        .map(|(ns, data)| kind_line("btcusdt@bookTicker", *ns, 1, false, data))
        .chain([shutdown_line(frames[GAP_AT].0 - 1, 1)])
        .collect();
    write_ndjson_gz(
        &book.join("btcusdt_bookTicker_20240808T235416Z.ndjson.gz"),
        &tickers,
    );

    let (code, report, stderr) = replay_json(&["--strict"], &[&book]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["meta_lines"]["serverShutdown"], 2, "{report}");
    let kinds = report["kinds"].as_array().unwrap();
    let names: Vec<&str> = kinds.iter().map(|k| k["kind"].as_str().unwrap()).collect();
    assert_eq!(names, ["trade", "bookTicker"], "kind by kind");
    assert_eq!(kinds[0]["events"], TRADES as u64);
    assert_eq!(kinds[1]["events"], 50);
    assert!(kinds.iter().all(|k| k["breaks"] == 0), "{report}");
    assert!(
        report["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["complete"] == true)
    );
    assert!(
        stderr.contains("serverShutdown notices: 2 (lines, one per file"),
        "{stderr}"
    );
}

#[test]
fn replay_book_prints_the_trades_between_the_books() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = run_output(
        obrec()
            .args(["import", "--format", "hftbacktest", "-o"])
            .arg(&data)
            .arg(fixture("hftbacktest_usdm_btcusdt_20240808.gz")),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let book = data.join("order_book");
    // Import keeps the capture's every trade in the trade series, beside depth and snapshots.
    let frames = capture_frames("btcusdt@trade", usize::MAX);
    assert_eq!(frames.len(), 21_313);

    let out = run_output(obrec().args(["replay", "--book", "1"]).arg(&book));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let printed: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let trades: Vec<usize> = (0..printed.len())
        .filter(|&i| printed[i].get("trade").is_some())
        .collect();
    let ids: Vec<u64> = trades
        .iter()
        .map(|&i| printed[i]["trade"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = frames
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["t"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, expected, "every trade once, in receipt order");
    let first: Value = serde_json::from_str(&frames[0].1).unwrap();
    let side = if first["m"] == true { "sell" } else { "buy" };
    assert_eq!(
        stdout.lines().nth(trades[0]).unwrap(),
        format!(
            r#"{{"symbol":"BTCUSDT","trade":{},"T":{},"price":{},"qty":{},"side":"{side}"}}"#,
            first["t"], first["T"], first["p"], first["q"]
        )
    );
    // Interleaved: books between the first and the last trade, and after.
    let (a, b) = (trades[0], trades[TRADES - 1]);
    let books_between = (a..b).filter(|i| printed[*i].get("u").is_some()).count();
    assert!(
        books_between > 10,
        "{books_between} book lines among the trades"
    );
    assert!(printed[b + 1..].iter().any(|l| l.get("u").is_some()));
    assert!(
        printed
            .iter()
            .all(|l| l.get("u").is_some() || l.get("trade").is_some())
    );
}

#[test]
fn serve_plays_trades_and_book_tickers_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let book = book_dir(dir.path());
    let trades = capture_frames("btcusdt@trade", 200);
    let tickers = capture_frames("btcusdt@bookTicker", 300);
    let mut trade_lines: Vec<String> = trades
        .iter()
        .map(|(ns, d)| kind_line("btcusdt@trade", *ns, 1, false, d))
        .collect();
    // Neither is played: the notice (a playback connection outlives it) and the backfill (a
    // REST item, not a frame).
    trade_lines.insert(50, shutdown_line(trades[50].0 - 1, 1));
    trade_lines.push(kind_line(
        "btcusdt@trade",
        trades[199].0 + 1,
        0,
        true,
        &trades[0].1,
    ));
    write_ndjson_gz(&book.join(TRADE_FILE), &trade_lines);
    let ticker_lines: Vec<String> = tickers
        .iter()
        .map(|(ns, d)| kind_line("btcusdt@bookTicker", *ns, 1, false, d))
        .collect();
    write_ndjson_gz(
        &book.join("btcusdt_bookTicker_20240808T235416Z.ndjson.gz"),
        &ticker_lines,
    );

    // What a live client would have read, in receipt order (at equal receipts the bookTicker
    // lane comes first, as lanes go in series name order).
    let mut expected: Vec<(u64, String)> = tickers
        .iter()
        .map(|(ns, d)| {
            (
                *ns,
                format!(r#"{{"stream":"btcusdt@bookTicker","data":{d}}}"#),
            )
        })
        .chain(
            trades
                .iter()
                .map(|(ns, d)| (*ns, format!(r#"{{"stream":"btcusdt@trade","data":{d}}}"#))),
        )
        .collect();
    expected.sort_by_key(|(ns, _)| *ns);

    let recording = Recording::open(&[book]).unwrap();
    let serve = Serve::start(
        "127.0.0.1:0",
        recording,
        ServeConfig {
            pace: Pace::Max,
            ..ServeConfig::default()
        },
    )
    .unwrap();
    let url = format!(
        "{}/public/stream?streams=btcusdt@trade/btcusdt@bookTicker",
        serve.ws_url()
    );
    let (mut ws, _) = tungstenite::connect(&url).unwrap();
    if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let mut received = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => received.push(t.as_str().to_owned()),
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    serve.shutdown();
    let expected: Vec<String> = expected.into_iter().map(|(_, f)| f).collect();
    assert_eq!(received.len(), expected.len());
    for (i, (got, want)) in received.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "frame {i}");
    }
}
