//! Every market with the real binary: the real COIN-M and spot captures (hftbacktest's collector,
//! `tests/data/binance/SOURCES.md`) import, replay as one unbroken chain under their market's
//! rule, rebuild books that agree with the exchange's own bookTicker, and export back byte for
//! byte. And live: the real `obrec sim --market coinm|spot|usdm` is recorded by the real
//! `obrec record --market …`, every kind the market publishes, without a break.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs `cmd` to its end and fails the test, showing its output, unless it succeeded; returns
/// its stdout.
fn succeed(cmd: &mut Command) -> String {
    let out = run_output(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `obrec replay --strict` of a data directory's recordings: its summary.
fn replay_strict(data: &Path) -> String {
    succeed(
        obrec()
            .args(["replay", "--strict"])
            .arg(data.join("order_book")),
    )
}

/// Best bid and ask, price and quantity, as the exchange spelled them.
type Best = ((String, String), (String, String));

/// The book's best levels after each event `replay --book 1` applied, by the event's `u`.
fn books_by_u(data: &Path) -> HashMap<u64, Best> {
    let books = succeed(
        obrec()
            .args(["replay", "--book", "1"])
            .arg(data.join("order_book")),
    );
    let level = |side: &serde_json::Value| {
        let l = &side[0];
        (
            l[0].as_str().unwrap().to_string(),
            l[1].as_str().unwrap().to_string(),
        )
    };
    books
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

    let summary = replay_strict(&data);
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
    succeed(
        obrec()
            .args(["export", "--format", "hftbacktest"])
            .arg(data.join("order_book"))
            .arg("-o")
            .arg(&out),
    );
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

/// Records `symbols` of `market` from the real `obrec sim --market` for a few seconds, every
/// kind the market publishes and the diff book with REST snapshots; checks that nothing broke,
/// live and in `replay --strict`, and returns the data directory's metrics.json.
fn record_market(dir: &Path, market: &str, symbols: &str, kinds: &[&str]) -> serde_json::Value {
    let (mut sim, port) = spawn_sim(
        dir,
        &["--market", market, "--symbol", symbols, "--rate", "50"],
    );
    let (ws, rest) = (
        format!("ws://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}"),
    );
    let (data, logs) = (dir.join("data"), dir.join("logs"));
    let streams = format!("depth,{}", kinds.join(","));
    let out = run_output(
        record_from(&ws, &rest, &data, &logs)
            .args(["--market", market, "--symbol", symbols])
            .args([
                "--depth",
                "0",
                "--streams",
                &streams,
                "--run-minutes",
                "0.1",
            ])
            .args(["--print-interval", "1", "--flush-ms", "100"]),
    );
    terminate(&mut sim, Duration::from_secs(5));
    assert!(out.status.success(), "{out:?}");
    let m = metrics(&data);
    assert_eq!(m["continuity"]["breaks"], 0, "{m}");
    assert_eq!(m["silent_streams"], serde_json::json!([]), "{m}");
    for symbol in symbols.split(',') {
        // The live book bridged a snapshot by the market's rule and followed the chain since.
        assert_eq!(
            m["symbols"][symbol]["book"]["synced"], true,
            "{symbol}: {m}"
        );
        let lower = symbol.to_ascii_lowercase();
        for kind in kinds {
            let name = match *kind {
                "markPrice" => format!("{lower}@markPrice@1s"),
                _ => format!("{lower}@{kind}"),
            };
            let report = &m["streams"][&name];
            for counter in ["breaks", "missing_ids", "drops", "duplicates"] {
                assert_eq!(report[counter], 0, "{name}: {counter}");
            }
            // Mark prices come once a second, liquidations may not come in a short run.
            let least = match *kind {
                "forceOrder" => 0,
                "markPrice" => 3,
                _ => 10,
            };
            assert!(
                report["messages"].as_u64() >= Some(least),
                "{name}: {report}"
            );
        }
    }
    let summary = replay_strict(&data);
    for symbol in symbols.split(',') {
        assert!(
            summary.contains(&format!("{symbol} events=")),
            "{symbol}: {summary}"
        );
    }
    assert!(!summary.contains("breaks=1"), "{summary}");
    m
}

/// Whether every line of `kind` came over one connection.
fn connections(data: &Path, kinds: &[&str]) -> std::collections::BTreeSet<u64> {
    kinds
        .iter()
        .flat_map(|kind| read_lines(&kind_files(data, kind)))
        .chain(read_lines(&depth_files(data)))
        .map(|l| l.json["conn"].as_u64().unwrap())
        .collect()
}

/// COIN-M from the sim: a perpetual and a quarterly, every kind, on one route; payloads carry the
/// pair in `ps`, and the book bridges its `/dapi/v1/depth` snapshots.
#[test]
fn coin_m_is_recorded_from_the_sim_with_every_kind_and_no_break() {
    let dir = tempfile::tempdir().unwrap();
    let kinds = ["trade", "aggTrade", "bookTicker", "markPrice", "forceOrder"];
    let m = record_market(dir.path(), "coinm", "BTCUSD_PERP,ETHUSD_260925", &kinds);
    let data = dir.path().join("data");
    assert_eq!(
        connections(&data, &kinds).len(),
        1,
        "one route, one connection"
    );
    let depth = read_lines(&depth_files(&data));
    assert!(depth.iter().any(|l| l.json["data"]["ps"] == "BTCUSD"));
    assert!(depth.iter().any(|l| l.json["data"]["ps"] == "ETHUSD"));
    assert!(read_lines(&snapshot_files(&data)).len() >= 2, "{m}");
}

/// Spot from the sim: dense ids without `pu` or `T`, bookTickers without `e`, `E` or `T`, the
/// kinds spot publishes, `/api/v3/depth` snapshots bridged by spot's rule.
#[test]
fn spot_is_recorded_from_the_sim_with_every_kind_it_publishes_and_no_break() {
    let dir = tempfile::tempdir().unwrap();
    let kinds = ["trade", "aggTrade", "bookTicker"];
    record_market(dir.path(), "spot", "BTCUSDT,ETHUSDT", &kinds);
    let data = dir.path().join("data");
    assert_eq!(connections(&data, &kinds).len(), 1);
    let depth = read_lines(&depth_files(&data));
    for pair in depth.windows(2) {
        let (a, b) = (&pair[0].json, &pair[1].json);
        if a["symbol"] == b["symbol"] {
            assert_eq!(b["U"].as_u64(), a["u"].as_u64().map(|u| u + 1));
        }
    }
    for line in &depth {
        assert!(line.json["data"].get("pu").is_none() && line.json["T"].is_null());
        assert_eq!(
            line.json["pu"].as_u64(),
            line.json["U"].as_u64().map(|u| u - 1)
        );
    }
    let tickers = read_lines(&kind_files(&data, "bookTicker"));
    assert!(tickers.iter().all(|l| l.json["data"].get("e").is_none()));
    assert!(!read_lines(&snapshot_files(&data)).is_empty());
}

/// `obrec record` from the exchange (sim or serve) on `port` of this machine, streams and REST.
fn record_from_port(port: u16, data: &Path, logs: &Path) -> Command {
    let host = format!("127.0.0.1:{port}");
    record_from(
        &format!("ws://{host}"),
        &format!("http://{host}"),
        data,
        logs,
    )
}

/// The raw `data` member of a line or frame that ends with it, as its bytes were.
fn raw_data(text: &str) -> &str {
    let start = text.find(",\"data\":").unwrap() + ",\"data\":".len();
    &text[start..text.len() - 1]
}

/// Spot's partial book from the sim: `{lastUpdateId,bids,asks}`, named only by its stream. Each
/// line takes its symbol from the stream, `E` from the receipt, `U = u = lastUpdateId` and as
/// `pu` the previous line's id, so the chain proves the ids strictly increase; payloads are the
/// sim's bytes exactly; `replay --strict` rebuilds every line's book without a break.
#[test]
fn spot_partial_depth_is_recorded_from_the_sim_byte_exact_and_strictly_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let sent_log = dir.path().join("sent.ndjson");
    let sent_arg = format!("--sent-log={}", sent_log.display());
    let symbols = "BTCUSDT,ETHUSDT";
    let (mut sim, port) = spawn_sim(
        dir.path(),
        &[
            "--market", "spot", "--symbol", symbols, "--rate", "20", &sent_arg,
        ],
    );
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    let out = run_output(
        record_from_port(port, &data, &logs)
            .args(["--market", "spot", "--symbol", symbols])
            .args(["--depth", "10", "--speed", "100ms", "--streams", "depth"])
            .args(["--run-minutes", "0.1", "--flush-ms", "100"]),
    );
    terminate(&mut sim, Duration::from_secs(5));
    assert!(out.status.success(), "{out:?}");
    let m = metrics(&data);
    assert_eq!(m["continuity"]["breaks"], 0, "{m}");
    let sent: std::collections::HashSet<(String, String)> = fs::read_to_string(&sent_log)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["stream"].as_str().unwrap().to_string(),
                raw_data(l).to_string(),
            )
        })
        .collect();
    let depth = read_lines(&depth_files(&data));
    for (symbol, lines) in lines_by_symbol(&depth) {
        assert!(lines.len() >= 10, "{symbol}: {} lines", lines.len());
        let stream = format!("{}@depth10@100ms", symbol.to_ascii_lowercase());
        let mut prev = None;
        for line in &lines {
            let (j, payload) = (&line.json, raw_data(&line.text));
            assert_eq!(j["stream"], stream.as_str());
            assert!(
                sent.contains(&(stream.clone(), payload.to_string())),
                "not sent: {payload}"
            );
            let id = j["data"]["lastUpdateId"].as_u64().unwrap();
            assert_eq!((j["U"].as_u64(), j["u"].as_u64()), (Some(id), Some(id)));
            assert!(j["T"].is_null() && j["E"].as_u64().is_some(), "{j}");
            assert_eq!(j["data"]["bids"].as_array().unwrap().len(), 10);
            if let Some(prev) = prev {
                assert!(id > prev, "{symbol}: {id} after {prev}");
                assert_eq!(j["pu"].as_u64(), Some(prev));
            }
            prev = Some(id);
        }
    }
    let summary = replay_strict(&data);
    for symbol in symbols.split(',') {
        assert!(summary.contains(&format!("{symbol} events=")), "{summary}");
    }
    // Every line's book (by its id, where only one symbol has it) has the top recorded: replay
    // reads spot's shape.
    let books = books_by_u(&data);
    let mut owners: HashMap<u64, usize> = HashMap::new();
    for line in &depth {
        *owners.entry(line.u()).or_default() += 1;
    }
    let unique: Vec<_> = depth.iter().filter(|l| owners[&l.u()] == 1).collect();
    assert!(
        unique.len() >= 10,
        "{} lines with an id of their own",
        unique.len()
    );
    for line in unique {
        let best_bid = &line.json["data"]["bids"][0];
        let ((price, qty), _) = &books[&line.u()];
        assert_eq!(
            (best_bid[0].as_str(), best_bid[1].as_str()),
            (Some(&**price), Some(&**qty))
        );
    }
}

/// A USD-M quarterly contract (`BTCUSDT_260925`) beside a perpetual, every kind from its route.
#[test]
fn a_usd_m_quarterly_is_recorded_from_the_sim_with_every_kind_and_no_break() {
    let dir = tempfile::tempdir().unwrap();
    let kinds = ["trade", "aggTrade", "bookTicker", "markPrice", "forceOrder"];
    record_market(dir.path(), "usdm", "BTCUSDT_260925,ETHUSDT", &kinds);
    let data = dir.path().join("data");
    assert_eq!(connections(&data, &kinds).len(), 2, "two routes");
    let depth = read_lines(&depth_files(&data));
    assert!(
        depth
            .iter()
            .any(|l| l.json["data"]["ps"] == "BTCUSDT" && l.json["symbol"] == "BTCUSDT_260925")
    );
}

/// Each market's REST paths, and only its own; what spot does not publish is refused by
/// `record` with a clear line, before anything starts.
#[test]
fn each_market_answers_on_its_own_paths_and_refuses_what_it_does_not_publish() {
    let dir = tempfile::tempdir().unwrap();
    for (market, own, other) in [
        (
            "spot",
            "/api/v3/depth?symbol=BTCUSDT&limit=5000",
            "/fapi/v1/depth?symbol=BTCUSDT",
        ),
        (
            "coinm",
            "/dapi/v1/depth?symbol=BTCUSDT&limit=1000",
            "/api/v3/depth?symbol=BTCUSDT",
        ),
    ] {
        let sub = dir.path().join(market);
        fs::create_dir_all(&sub).unwrap();
        let (mut sim, port) = spawn_sim(&sub, &["--market", market, "--symbol", "BTCUSDT"]);
        let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
        let (status, body) = get(&url(own));
        assert_eq!(status, 200, "{market} {own}: {body}");
        assert!(body.starts_with("{\"lastUpdateId\":"), "{body:.80}");
        assert_eq!(get(&url(other)).0, 404, "{market} {other}");
        terminate(&mut sim, Duration::from_secs(5));
    }
    let out = run_output(
        record_from(
            "ws://127.0.0.1:9",
            "http://127.0.0.1:9",
            &dir.path().join("d"),
            &dir.path().join("l"),
        )
        .args([
            "--market",
            "spot",
            "--depth",
            "0",
            "--streams",
            "depth,markPrice",
        ]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the spot market publishes no markPrice stream"),
        "{stderr}"
    );
}

/// The payloads of `stream` in the collector file `fixture_name`, in order.
fn capture_payloads(fixture_name: &str, stream: &str) -> Vec<String> {
    let prefix = format!(r#"{{"stream":"{stream}","data":"#);
    gunzip_text(&fixture(fixture_name))
        .iter()
        .filter_map(|line| {
            let (_, frame) = line.split_once(' ')?;
            Some(frame.strip_prefix(&prefix)?.strip_suffix('}')?.to_owned())
        })
        .collect()
}

/// `obrec serve --market` plays each real capture on its market's paths (one route, the
/// market's REST depth path answering the recorded snapshot), and `obrec record --market`
/// records it as captured: depth, trades and bookTickers byte for byte, the book bridged by the
/// market's rule, no break.
#[test]
fn serve_plays_each_markets_capture_on_its_paths_and_record_takes_it_whole() {
    for (fixture_name, market, symbol, speed) in [
        (
            "hftbacktest_spot_btcusdt_20240808.gz",
            "spot",
            "BTCUSDT",
            "100ms",
        ),
        (
            "hftbacktest_cm_ethusd_perp_20240808.gz",
            "coinm",
            "ETHUSD_PERP",
            "0ms",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let imported = import_fixture(fixture_name, dir.path());
        let port_file = dir.path().join("port");
        let mut serve = obrec()
            .args(["serve", "--market", market, "--pace", "50"])
            .arg(imported.join("order_book"))
            .arg(format!("--port-file={}", port_file.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut port = None;
        wait_for(Duration::from_secs(10), "serve's port file", || {
            port = fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok());
            port.is_some()
        });
        let port = port.unwrap();
        let (data, logs) = (dir.path().join("rec"), dir.path().join("logs"));
        // 4.8 s at fifty times the pace: most of the capture, ending before serve does.
        let out = run_output(
            record_from_port(port, &data, &logs)
                .args(["--market", market, "--symbol", symbol, "--depth", "0"])
                .args(["--speed", speed, "--streams", "depth,trade,bookTicker"])
                .args(["--run-minutes", "0.08", "--flush-ms", "100"]),
        );
        terminate(&mut serve, Duration::from_secs(5));
        assert!(out.status.success(), "{market}: {out:?}");
        let m = metrics(&data);
        assert_eq!(m["continuity"]["breaks"], 0, "{market}: {m}");
        assert_eq!(
            m["symbols"][symbol]["book"]["synced"], true,
            "{market}: {m}"
        );
        let lower = symbol.to_ascii_lowercase();
        for (kind, stream) in [
            ("depth", format!("{lower}@depth@{speed}")),
            ("trade", format!("{lower}@trade")),
            ("bookTicker", format!("{lower}@bookTicker")),
        ] {
            let files = if kind == "depth" {
                depth_files(&data)
            } else {
                kind_files(&data, kind)
            };
            let lines = read_lines(&files);
            let recorded: Vec<&str> = lines.iter().map(Line::raw_data).collect();
            let captured = capture_payloads(fixture_name, &stream);
            assert!(
                recorded.len() > 100,
                "{market} {stream}: {}",
                recorded.len()
            );
            assert!(
                recorded.iter().zip(&captured).all(|(r, c)| r == c),
                "{market} {stream}: not the capture, byte for byte, in order"
            );
        }
    }
}
