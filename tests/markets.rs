//! Every market with the real binary: the real COIN-M and spot captures (hftbacktest's collector,
//! `tests/data/binance/SOURCES.md`) import, replay as one unbroken chain under their market's
//! rule, rebuild books that agree with the exchange's own bookTicker, and export back byte for
//! byte.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use common::*;

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

/// Best bid and ask, price and quantity, as the exchange spelled them.
type Best = ((String, String), (String, String));

/// The book's best levels after each event `replay --book 1` applied, by the event's `u`.
fn books_by_u(data: &Path) -> HashMap<u64, Best> {
    let out = run_output(
        obrec()
            .args(["replay", "--book", "1"])
            .arg(data.join("order_book")),
    );
    assert_ok(&out);
    let level = |side: &serde_json::Value| {
        let l = &side[0];
        (
            l[0].as_str().unwrap().to_string(),
            l[1].as_str().unwrap().to_string(),
        )
    };
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("u").is_some())
        .map(|v| {
            (
                v["u"].as_u64().unwrap(),
                (level(&v["bids"]), level(&v["asks"])),
            )
        })
        .collect()
}

/// What the comparison of books and bookTickers found.
#[derive(Debug, PartialEq)]
struct Agreement {
    /// Tickers stamped with a `u` the book reached.
    compared: usize,
    mismatches: Vec<String>,
}

/// Every recorded bookTicker whose `u` the rebuilt book reached, compared with the book there.
fn compare_with_tickers(data: &Path) -> Agreement {
    let books = books_by_u(data);
    let mut agreement = Agreement {
        compared: 0,
        mismatches: Vec::new(),
    };
    for file in kind_files(data, "bookTicker") {
        for line in gunzip_text(&file) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let u = v["u"].as_u64().unwrap();
            let Some(book) = books.get(&u) else {
                continue;
            };
            let d = &v["data"];
            let field = |k: &str| d[k].as_str().unwrap().to_string();
            let ticker = ((field("b"), field("B")), (field("a"), field("A")));
            agreement.compared += 1;
            if *book != ticker {
                agreement
                    .mismatches
                    .push(format!("u={u}: book {book:?}, bookTicker {ticker:?}"));
            }
        }
    }
    agreement
}

/// Imports `fixture`, replays it strictly, checks its books against its bookTickers and exports
/// it back, byte for byte. `events` depth events are expected, `compared` tickers to share a `u`
/// with the book (counted once on the capture and pinned: zero would prove nothing).
fn import_replay_check_export(fixture_name: &str, symbol: &str, events: usize, compared: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = import_fixture(fixture_name, dir.path());

    let replay = run_output(
        obrec()
            .args(["replay", "--strict"])
            .arg(data.join("order_book")),
    );
    assert_ok(&replay);
    let summary = text(&replay.stdout);
    let depth = format!("{} events={events} ", symbol.to_ascii_uppercase());
    assert!(summary.contains(&depth), "{summary}");
    assert!(summary.contains("breaks=0 resyncs=0"), "{summary}");

    let agreement = compare_with_tickers(&data);
    assert_eq!(
        agreement,
        Agreement {
            compared,
            mismatches: Vec::new()
        }
    );

    let out = dir.path().join("out");
    assert_ok(&run_output(
        obrec()
            .args(["export", "--format", "hftbacktest"])
            .arg(data.join("order_book"))
            .arg("-o")
            .arg(&out),
    ));
    let exported = gunzip_text(&out.join(format!("{symbol}_20240808.gz")));
    let original = gunzip_text(&fixture(fixture_name));
    assert_eq!(exported.len(), original.len());
    for (i, (got, want)) in exported.iter().zip(&original).enumerate() {
        assert!(got == want, "line {}: {got:.120} != {want:.120}", i + 1);
    }
}

/// Spot: depth events without `pu` or `T`, chained by `U == last u + 1`, bridged by
/// `U <= lastUpdateId + 1 <= u`; bookTickers without `e`, `E` or `T`.
#[test]
fn the_real_spot_capture_imports_replays_agrees_with_its_tickers_and_exports_back() {
    import_replay_check_export(
        "hftbacktest_spot_btcusdt_20240808.gz",
        "btcusdt",
        3_451,
        SPOT_COMPARISONS,
    );
}

/// COIN-M: `_PERP` symbols, `ps` in every payload, sizes in contracts, the futures rules.
#[test]
fn the_real_coin_m_capture_imports_replays_agrees_with_its_tickers_and_exports_back() {
    import_replay_check_export(
        "hftbacktest_cm_ethusd_perp_20240808.gz",
        "ethusd_perp",
        22_909,
        COIN_M_COMPARISONS,
    );
}

/// Spot tickers that share a `u` with a depth event the book applied, of 28,040: a 100 ms depth
/// event batches many updates, so only one ticker in fifty ends on the same one.
const SPOT_COMPARISONS: usize = 564;
/// COIN-M tickers that share a `u` with an applied depth event, of 15,812 (unthrottled depth).
const COIN_M_COMPARISONS: usize = 1_345;
