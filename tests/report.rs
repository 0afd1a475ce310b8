//! `obrec report` over recordings built from the real USD-M fixture's frames (depth, trades,
//! bookTicker and its REST snapshot) with faults put in: the page lists each fault at its time,
//! is well-formed, self-contained, and (where Chromium is installed) renders.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{
    KindEvent, capture_frames, fixture, obrec, run_output, write_depth_file, write_kind_file,
};

/// `2024-08-08T23:54:16.184Z`, as the page writes receipt times.
fn iso(ns: u64) -> String {
    let ms = ns / 1_000_000;
    let (secs, ms) = (ms / 1000, ms % 1000);
    let (y, m, d) = obrec::civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// What was put in, for the checks.
struct Faults {
    /// Receipt of the trade after the one left out, and that trade's id.
    trade_gap: (u64, u64),
    /// Receipt of the first trade on connection 2.
    reconnect_ns: u64,
    /// Receipt of the depth event after the one left out, the `u` it expected and the `pu` it got.
    depth_break: (u64, u64, u64),
    /// Receipt of the second snapshot.
    resync_ns: u64,
    /// Receipt of the `serverShutdown` notice in the depth file.
    notice_ns: u64,
}

/// A recording of the fixture's real frames in `dir`: depth with one event left out (a `pu`
/// break on one connection) and a `serverShutdown` notice after them, its REST snapshot and the
/// same body again later (a resync), trades with one left out (an id gap) and a move to
/// connection 2 two thirds in (a reconnect that lost nothing), and bookTicker as received.
fn faulty_recording(dir: &Path) -> Faults {
    fs::create_dir_all(dir).unwrap();
    let depth = capture_frames("btcusdt@depth@0ms", usize::MAX);
    let cut = depth.len() / 2;
    let events: Vec<(u64, &str, u64)> = depth
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != cut)
        .map(|(_, (ns, data))| (*ns, data.as_str(), 1))
        .collect();
    let depth_file = dir.join("btcusdt_depth_20240808T235415Z.ndjson.gz");
    write_depth_file(&depth_file, &events);
    // The server's notice that it will close the connection, kept at the end of the file, as
    // the recorder keeps it in the file of every stream the connection carried.
    let notice_ns = depth[depth.len() - 1].0 + 1;
    let notice = format!(
        "{{\"meta\":\"serverShutdown\",\"recv_ns\":{notice_ns},\"conn\":1,\"data\":{{\"e\":\"serverShutdown\",\"E\":1723161600000}}}}\n"
    );
    let mut bytes = fs::read(&depth_file).unwrap();
    let mut member = Vec::new();
    obrec::MemberEncoder::new(1).encode(notice.as_bytes(), &mut member);
    bytes.extend_from_slice(&member);
    fs::write(&depth_file, bytes).unwrap();
    let payload = |data: &str| serde_json::from_str::<serde_json::Value>(data).unwrap();
    let depth_break = (
        depth[cut + 1].0,
        payload(&depth[cut - 1].1)["u"].as_u64().unwrap(),
        payload(&depth[cut + 1].1)["pu"].as_u64().unwrap(),
    );

    let (snapshot_ns, body) = snapshot();
    let last_update_id = payload(&body)["lastUpdateId"].as_u64().unwrap();
    let resync_ns = depth[cut + 10].0;
    let mut text = String::new();
    for ns in [snapshot_ns, resync_ns] {
        text.push_str(&format!(
            "{{\"recv_ns\":{ns},\"symbol\":\"BTCUSDT\",\"lastUpdateId\":{last_update_id},\"data\":{body}}}\n"
        ));
    }
    gzip(
        &dir.join("btcusdt_snapshot_20240808T235415Z.ndjson.gz"),
        text.as_bytes(),
    );

    let trades = capture_frames("btcusdt@trade", usize::MAX);
    let (lost, switch) = (trades.len() / 3, trades.len() * 2 / 3);
    let events: Vec<KindEvent> = trades
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != lost)
        .map(|(i, (ns, data))| KindEvent {
            recv_ns: *ns,
            data,
            conn: if i < switch { 1 } else { 2 },
            backfill: false,
        })
        .collect();
    write_kind_file(
        &dir.join("btcusdt_trade_20240808T235415Z.ndjson.gz"),
        obrec::Kind::Trade,
        &events,
        &[],
    );
    let quotes = capture_frames("btcusdt@bookTicker", usize::MAX);
    let events: Vec<KindEvent> = quotes
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
        &events,
        &[],
    );
    Faults {
        trade_gap: (
            trades[lost + 1].0,
            payload(&trades[lost].1)["t"].as_u64().unwrap(),
        ),
        reconnect_ns: trades[switch].0,
        depth_break,
        resync_ns,
        notice_ns,
    }
}

/// The fixture's REST snapshot: receipt ns and body.
fn snapshot() -> (u64, String) {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(
        File::open(fixture("hftbacktest_usdm_btcusdt_20240808.gz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(" {\"lastUpdateId\""))
        .unwrap();
    let (ns, body) = line.split_once(' ').unwrap();
    (ns.parse().unwrap(), body.to_string())
}

fn gzip(path: &Path, text: &[u8]) {
    let mut out = Vec::new();
    obrec::MemberEncoder::new(1).encode(text, &mut out);
    fs::write(path, out).unwrap();
}

fn report(inputs: &[&Path], out: &Path) -> Output {
    run_output(obrec().arg("report").args(inputs).arg("-o").arg(out))
}

/// The page's tags balance: every element that is not void closes, in order. Python's own HTML
/// parser reads it when python3 is there; a Rust count of the elements that hold the page
/// (svg, div, table, p) stands in otherwise.
fn assert_well_formed(page: &Path) {
    let script = "import sys\n\
        from html.parser import HTMLParser\n\
        VOID = {'meta', 'br', 'img', 'hr', 'input', 'link'}\n\
        SVG_EMPTY = {'line', 'rect', 'polyline', 'path', 'circle'}\n\
        class P(HTMLParser):\n\
        \x20   def __init__(self):\n\
        \x20       super().__init__(); self.stack = []; self.count = 0\n\
        \x20   def handle_starttag(self, tag, attrs):\n\
        \x20       if tag not in VOID: self.stack.append(tag); self.count += 1\n\
        \x20   def handle_startendtag(self, tag, attrs):\n\
        \x20       self.count += 1\n\
        \x20   def handle_endtag(self, tag):\n\
        \x20       assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])\n\
        \x20       self.stack.pop()\n\
        p = P(); p.feed(open(sys.argv[1], encoding='utf-8').read()); p.close()\n\
        assert not p.stack, p.stack\n\
        print(p.count)\n";
    match Command::new("python3")
        .args(["-c", script])
        .arg(page)
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "{out:?}");
            eprintln!(
                "html.parser: {} elements, all closed",
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Err(_) => {
            eprintln!("python3 is not installed: counting the page's elements instead");
            let html = fs::read_to_string(page).unwrap();
            for tag in ["svg", "div", "table", "p", "tr", "html", "body"] {
                let opened = html.matches(&format!("<{tag}>")).count()
                    + html.matches(&format!("<{tag} ")).count();
                let closed = html.matches(&format!("</{tag}>")).count();
                assert_eq!(opened, closed, "<{tag}>");
            }
        }
    }
}

#[test]
fn each_fault_put_in_is_listed_at_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let faults = faulty_recording(&rec);
    let page = dir.path().join("report.html");
    let out = report(&[&rec], &page);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("{}: 3 series", page.display())),
        "{stdout}"
    );
    let html = fs::read_to_string(&page).unwrap();

    // Each row as the page writes it, up to where the detail holds what was not put in.
    let row = |kind: &str, ns: u64, detail: &str| {
        format!(
            "<tr class=\"{kind}\"><td>{}</td><td>{kind}</td><td>{detail}",
            iso(ns)
        )
    };
    let (gap_ns, lost) = faults.trade_gap;
    let (break_ns, expected, got) = faults.depth_break;
    let wanted = [
        row(
            "gap",
            gap_ns,
            &format!("trade ids {lost}..={lost} missing (1)</td></tr>"),
        ),
        row(
            "reconnect",
            faults.reconnect_ns,
            "conn 1 → 2: nothing lost</td></tr>",
        ),
        row(
            "gap",
            break_ns,
            &format!("pu break: expected pu={expected}, got pu={got} (u="),
        ),
        row("resync", faults.resync_ns, "snapshot lastUpdateId="),
        row(
            "notice",
            faults.notice_ns,
            "serverShutdown on conn 1</td></tr>",
        ),
    ];
    for want in &wanted {
        assert!(html.contains(want.as_str()), "missing: {want}");
    }
    // Nothing else went wrong: one gap in each of depth and trades, one reconnect, one resync,
    // one notice; the rest of the page is the charts.
    assert_eq!(html.matches("<tr class=\"gap\">").count(), 2);
    assert_eq!(html.matches("<tr class=\"reconnect\">").count(), 1);
    assert_eq!(html.matches("<tr class=\"resync\">").count(), 1);
    assert_eq!(html.matches("<tr class=\"notice\">").count(), 1);
    for section in ["BTCUSDT depth", "BTCUSDT trade", "BTCUSDT bookTicker"] {
        assert!(html.contains(&format!("\">{section}</h2>")), "{section}");
    }
    // The mid price, from the rebuilt book and from bookTicker.
    assert!(html.contains("mid price, from the rebuilt book"));
    assert!(html.contains("mid price, from best bid and ask"));
    // The fixture is six minutes within one hour: the depth and trade hours hold a gap, the
    // bookTicker hour is complete.
    assert_eq!(html.matches("<title>2024-08-08T23 gap</title>").count(), 2);
    assert_eq!(
        html.matches("<title>2024-08-08T23 complete</title>")
            .count(),
        1
    );
    // Self-contained: nothing is fetched, nothing runs.
    for outside in ["<script", "src=", "href=\"http", "@import", "url("] {
        assert!(!html.contains(outside), "{outside}");
    }
    assert_well_formed(&page);
}

#[test]
fn a_damaged_file_is_shown_up_to_the_damage_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    faulty_recording(&rec);
    let trades = rec.join("btcusdt_trade_20240808T235415Z.ndjson.gz");
    let lines = common::gunzip_lines(&trades);
    // A member holding a line that is no obrec line, after the good ones.
    let mut bytes = fs::read(&trades).unwrap();
    let mut member = Vec::new();
    obrec::MemberEncoder::new(1).encode(b"{\"not\":\"a line\"}\n", &mut member);
    bytes.extend_from_slice(&member);
    fs::write(&trades, bytes).unwrap();
    let page = dir.path().join("report.html");
    let out = report(&[&rec], &page);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let damage = format!("line {}: not an event line", lines + 1);
    assert!(stderr.contains(&damage), "{stderr}");
    assert!(
        stderr.contains(&format!("(read up to line {lines})")),
        "{stderr}"
    );
    let html = fs::read_to_string(&page).unwrap();
    assert!(html.contains("<h2>Damaged files</h2>"));
    assert!(html.contains("<tr class=\"damage\">"));
    assert_well_formed(&page);
}

#[test]
fn bad_input_and_a_taken_output_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    faulty_recording(&rec);
    let page = dir.path().join("report.html");
    fs::write(&page, "mine").unwrap();
    let out = report(&[&rec], &page);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("report.html exists: remove it or choose another -o"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&page).unwrap(), "mine");

    let fresh = dir.path().join("fresh.html");
    let text = dir.path().join("btcusdt_depth_x.ndjson.gz");
    gzip(&text, b"hello\n");
    let missing = dir.path().join("missing");
    for (input, says) in [
        (&missing, "no such file or directory"),
        (&text, "line 1: not a depth line"),
    ] {
        let out = report(&[input], &fresh);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!fresh.exists());
    }
    let leftovers: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Chromium draws the page: the picture a person would see. Skipped (with a note) where no
/// Chromium is installed; CI installs it.
#[test]
fn chromium_renders_the_report() {
    let Some(browser) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        eprintln!("skipped: no chromium or chromium-browser on PATH");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    faulty_recording(&rec);
    let page = dir.path().join("report.html");
    assert!(report(&[&rec], &page).status.success());
    let png = dir.path().join("report.png");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--window-size=1100,4000",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let bytes = fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // A blank page compresses to almost nothing; charts do not.
    assert!(bytes.len() > 20_000, "{} bytes", bytes.len());
}
