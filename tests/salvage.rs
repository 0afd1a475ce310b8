//! Crash recovery and checked reading over the real binary: what a damaged `.part` file becomes
//! when `obrec record` starts, and what `obrec replay` reads from a member altered under its CRC.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use obrec::{DepthLine, Ids, MemberEncoder, Rate, Sim, SimConfig};

/// A name older than anything the recorder will write, so it sorts first.
const PART: &str = "ethusdt_depth_20200101T000000Z.ndjson.gz.part";

fn depth_line(i: u64) -> String {
    let data = format!(
        r#"{{"e":"depthUpdate","E":{t},"T":{t},"s":"ETHUSDT","U":{i},"u":{i},"pu":{p},"b":[],"a":[]}}"#,
        t = 1_600_000_000_000 + i,
        p = i.saturating_sub(1),
    );
    let mut line = Vec::new();
    obrec::encode_depth(
        &mut line,
        &DepthLine {
            symbol: "ETHUSDT",
            stream: "ethusdt@depth@100ms",
            data: &data,
            event_ms: 1_600_000_000_000 + i,
            trade_ms: Some(1_600_000_000_000 + i),
            ids: Ids {
                first: i,
                last: i,
                prev: i.saturating_sub(1),
            },
            pipeline_us: None,
            recv_ns: 1_600_000_000_000_000_000 + i,
            conn: 1,
        },
    );
    String::from_utf8(line).unwrap()
}

/// Three gzip members of 1000 lines each.
fn three_members() -> (Vec<Vec<u8>>, Vec<Vec<String>>) {
    let mut enc = MemberEncoder::new(1);
    let groups: Vec<Vec<String>> = (0..3)
        .map(|m| (m * 1000..(m + 1) * 1000).map(depth_line).collect())
        .collect();
    let members = groups
        .iter()
        .map(|g| {
            let mut out = Vec::new();
            enc.encode(g.concat().as_bytes(), &mut out);
            out
        })
        .collect();
    (members, groups)
}

fn gzip_test(path: &Path) -> bool {
    Command::new("gzip")
        .arg("-t")
        .arg(path)
        .status()
        .unwrap()
        .success()
}

/// One flipped bit in the CRC of the middle member: recovery keeps the members before and after
/// it, keeps the damaged member aside, and the finished file passes `gzip -t`.
#[test]
fn record_recovers_every_intact_member_of_a_damaged_part() {
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: vec!["ETHUSDT".into()],
            rate: Rate::PerSecond(20.0),
            ..SimConfig::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("data/order_book");
    fs::create_dir_all(&book).unwrap();
    let (members, lines) = three_members();
    let mut bad = members[1].clone();
    let at = bad.len() - 7;
    bad[at] ^= 0x10;
    let part = book.join(PART);
    fs::write(&part, [&members[0][..], &bad, &members[2]].concat()).unwrap();

    let out = run_output(record_sim(&sim, dir.path()).args([
        "--symbol",
        "ETHUSDT",
        "--run-minutes",
        "0.01",
        "--flush-ms",
        "100",
    ]));
    sim.shutdown();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let finished = part.with_extension("");
    assert!(!part.exists());
    assert!(
        gzip_test(&finished),
        "gzip -t rejects {}",
        finished.display()
    );
    let kept: Vec<String> = read_lines(std::slice::from_ref(&finished))
        .into_iter()
        .map(|l| l.text + "\n")
        .collect();
    let want = [&lines[0][..], &lines[2]].concat();
    assert_eq!(kept.len(), want.len(), "lines kept");
    assert!(kept == want, "the intact members' lines, in order");
    let damaged = book.join("ethusdt_depth_20200101T000000Z.ndjson.gz.damaged");
    assert_eq!(fs::read(damaged).unwrap(), bad);
}

/// A member re-compressed from altered text under its original trailer inflates cleanly; replay
/// counts none of its lines and reports the damage where that member starts.
#[test]
fn replay_reports_an_altered_member_at_its_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let (members, lines) = three_members();
    let mut enc = MemberEncoder::new(1);
    let mut forged = Vec::new();
    let altered = lines[1].concat().replace("\"b\":[]", "\"b\":{}");
    enc.encode(altered.as_bytes(), &mut forged);
    let trailer = forged.len() - 8;
    forged[trailer..].copy_from_slice(&members[1][members[1].len() - 8..]);
    let file = dir.path().join("ethusdt_depth_20200101T000000Z.ndjson.gz");
    fs::write(&file, [&members[0][..], &forged, &members[2]].concat()).unwrap();

    let out = run_output(obrec().arg("replay").arg(&file));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("crc mismatch") && stderr.contains("(after line 1000)"),
        "{stderr}"
    );
}

/// A FIFO named like a recording would block a reader forever: every reader refuses it with a
/// message and goes on.
#[test]
fn readers_refuse_a_fifo_named_like_a_recording() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("order_book");
    std::fs::create_dir_all(&book).unwrap();
    let fifo = book.join("ethusdt_depth_20261120T080000Z.ndjson.gz");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for args in [
        &["replay"][..],
        &["export", "--format", "hftbacktest", "-o", "out"],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let mut cmd = obrec();
        cmd.args(&args[..1])
            .arg(&book)
            .args(&args[1..])
            .current_dir(dir.path());
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_with_timeout(&mut child, std::time::Duration::from_secs(10));
        if status.is_none() {
            child.kill().unwrap();
            panic!("{args:?} blocked on a FIFO");
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains("not a regular file"), "{args:?}: {stderr}");
    }
}
