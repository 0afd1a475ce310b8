//! The command line under misuse: values that cannot work are refused before anything is
//! created, and the service environment (scripts/obrec.env) leaves every subcommand working.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The variables scripts/obrec.env sets, as `set -a; . scripts/obrec.env` would export them.
fn service_environment() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/obrec.env");
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `obrec` with the service environment, its directories moved to `dir`.
fn with_service_env(dir: &Path) -> Command {
    let mut cmd = obrec();
    cmd.envs(service_environment())
        .env("OBREC_DATA_DIR", dir.join("data"))
        .env("OBREC_LOG_DIR", dir.join("logs"));
    cmd
}

/// Starts a server command that writes its port to `<dir>/<name>` and returns it with the port.
fn start_server(mut cmd: Command, dir: &Path, name: &str) -> (std::process::Child, u16) {
    let port_file = dir.join(name);
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0", "--port-file"])
        .arg(&port_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = None;
    let start = std::time::Instant::now();
    while port.is_none() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "{name}: exited {status}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{name}: no port");
        port = fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok());
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port.unwrap())
}

fn assert_ran(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_subcommand_works_in_the_service_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let mut sim = with_service_env(dir);
    sim.args(["sim", "--rate", "50"]);
    let (mut sim, port) = start_server(sim, dir, "sim.port");

    let out = run_output(with_service_env(dir).args([
        "record",
        "--endpoint",
        &format!("ws://127.0.0.1:{port}"),
        "--run-minutes",
        "0.03",
    ]));
    assert_ran("record", &out);
    terminate(&mut sim, Duration::from_secs(10));
    // OBREC_SYMBOL names two symbols: the simulator served both and the recorder recorded both.
    let symbols = lines_by_symbol(&read_lines(&depth_files(&dir.join("data"))));
    assert_eq!(
        symbols.keys().collect::<Vec<_>>(),
        ["BTCUSDT", "ETHUSDT"],
        "recorded symbols"
    );

    let book = dir.join("data/order_book");
    assert_ran(
        "replay",
        &run_output(with_service_env(dir).arg("replay").arg(&book)),
    );
    let mut serve = with_service_env(dir);
    serve.arg("serve").arg(&book);
    let (mut serve, _) = start_server(serve, dir, "serve.port");
    terminate(&mut serve, Duration::from_secs(10));
    assert_ran(
        "export",
        &run_output(
            with_service_env(dir)
                .args(["export", "--format", "hftbacktest"])
                .arg(&book)
                .arg("-o")
                .arg(dir.join("export")),
        ),
    );
    let exported: Vec<_> = fs::read_dir(dir.join("export"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_ran(
        "import",
        &run_output(
            with_service_env(dir)
                .args(["import", "--format", "hftbacktest"])
                .args(&exported)
                .arg("-o")
                .arg(dir.join("import")),
        ),
    );
    let health = run_output(
        with_service_env(dir)
            .arg("health")
            .arg("--metrics")
            .arg(book.join("metrics.json")),
    );
    // Healthy or not is the data's business; a usage error is the environment's.
    assert_ne!(
        health.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    assert_ran(
        "demo",
        &run_output(
            with_service_env(dir)
                .args(["demo", "--seconds", "0.5", "--dir"])
                .arg(dir.join("demo")),
        ),
    );
}

/// Each bad value exits 2 with a message naming what is wrong, and leaves the working directory
/// as it was: no data dir, no log dir.
#[test]
fn bad_values_exit_2_before_anything_is_created() {
    let cases: &[(&[&str], &str)] = &[
        (&["--run-minutes", "1e300"], "too long"),
        (&["--file-minutes", "1e300"], "too long"),
        (&["--stale-sec", "inf"], "not a number"),
        (&["--max-conn-age", "1e300"], "too long"),
        (&["--log-level", "infoo"], "not a log level"),
        (&["--endpoint", "ws://127.0.0.1:99999"], "invalid port"),
        (&["--endpoint", "wss://exa mple.com"], "not a url"),
        (&["--rest-endpoint", "https://"], "not a url"),
        (&["--log-dir", "file/logs"], "not a directory"),
        (&["--log-dir", "file"], "not a directory"),
        (&["--data-dir", "file"], "not a directory"),
    ];
    for (flags, why) in cases {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("file"), b"").unwrap();
        let mut cmd = obrec();
        cmd.current_dir(tmp.path()).arg("record").args(*flags);
        // Should a value be accepted after all, the run still ends at once.
        for (flag, value) in [
            ("--endpoint", "ws://127.0.0.1:9"),
            ("--run-minutes", "0.01"),
        ] {
            if !flags.contains(&flag) {
                cmd.args([flag, value]);
            }
        }
        let out = run_output(&mut cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(why), "{flags:?}: {stderr}");
        let mut left: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["file"], "{flags:?} created something");
    }
}
