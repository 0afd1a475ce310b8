//! `--metrics-addr`: Prometheus `/metrics` and a `/healthz` check over HTTP.
//!
//! The figures are the writer's latest report (refreshed every `--print-interval`), so
//! `/metrics`, `metrics.json` and the SUMMARY line always agree. `/healthz` is live: it reads the
//! time each reader group last received an event; it also judges the latest report as
//! `obrec health` does with its defaults ([`health::judge`]), so the two agree.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::metrics::health::{self, HealthCheck};
use crate::metrics::{LatencyMs, Report, Stats, SymbolReport};
use crate::util::clock::{wall_ms, wall_ns};
use crate::util::shutdown::Shutdown;

/// The HTTP thread.
pub struct Exporter {
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl Exporter {
    /// Binds `addr` and serves until the token triggers.
    pub fn start(
        addr: &str,
        stats: Arc<Stats>,
        stale_after: Duration,
        shutdown: Shutdown,
    ) -> Result<Exporter> {
        let server = tiny_http::Server::http(addr).map_err(|e| Error::Bind {
            addr: addr.to_string(),
            cause: std::io::Error::other(e.to_string()),
        })?;
        let local = server.server_addr().to_ip().ok_or_else(|| Error::Bind {
            addr: addr.to_string(),
            cause: std::io::Error::other("not an ip address"),
        })?;
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || serve(&server, &stats, stale_after, started, &shutdown))
            .map_err(|e| Error::Spawn("metrics-http", e))?;
        Ok(Exporter {
            addr: local,
            thread,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn join(self) {
        if self.thread.join().is_err() {
            log::error!("the metrics thread panicked");
        }
    }
}

fn serve(
    server: &tiny_http::Server,
    stats: &Stats,
    stale_after: Duration,
    started: Instant,
    shutdown: &Shutdown,
) {
    /// How often an idle server checks the shutdown token.
    const TICK: Duration = Duration::from_millis(100);
    while !shutdown.is_triggered() {
        let request = match server.recv_timeout(TICK) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                log::warn!("metrics server: {e}");
                continue;
            }
        };
        let path = request
            .url()
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string();
        let (status, content_type, body) = match path.as_str() {
            "/metrics" => {
                let latest = stats
                    .latest
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                (
                    200,
                    "text/plain; version=0.0.4",
                    render(latest.as_ref(), stats),
                )
            }
            "/healthz" => match health(stats, stale_after, started.elapsed()) {
                None => (200, "text/plain", "ok\n".to_string()),
                Some(reason) => (503, "text/plain", format!("{reason}\n")),
            },
            _ => (
                404,
                "text/plain",
                "not found: try /metrics or /healthz\n".to_string(),
            ),
        };
        let header =
            tiny_http::Header::from_bytes("Content-Type", content_type).expect("valid header");
        let response = tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header);
        if let Err(e) = request.respond(response) {
            log::debug!("metrics client went away: {e}");
        }
    }
}

/// `None` when every reader group received data within `stale_after` and the latest report is
/// inside `obrec health`'s default thresholds.
pub fn health(stats: &Stats, stale_after: Duration, uptime: Duration) -> Option<String> {
    let now = wall_ns();
    let mut problems = Vec::new();
    for (i, group) in stats.groups.iter().enumerate() {
        let last = group.last_data_ns.load(Ordering::Relaxed);
        let silent = Duration::from_nanos(now.saturating_sub(last));
        let name = format!("connection group {} ({}…)", i + 1, group.first_symbol);
        if last == 0 && uptime >= stale_after {
            problems.push(format!("{name}: no data since start"));
        } else if last != 0 && silent >= stale_after {
            problems.push(format!("{name}: no data for {:.1} s", silent.as_secs_f64()));
        }
    }
    let latest = stats.latest.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = latest
        .as_ref()
        .and_then(|r| health::judge(&HealthCheck::default(), r, wall_ms()))
    {
        problems.push(reason);
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// The Prometheus text exposition of a report.
pub fn render(report: Option<&Report>, stats: &Stats) -> String {
    let mut out = String::new();
    let live = stats.connections_open.load(Ordering::Relaxed);
    metric(
        &mut out,
        "obrec_connections_open",
        "gauge",
        "Connections currently open.",
    );
    let _ = writeln!(out, "obrec_connections_open {live}");
    let Some(r) = report else {
        return out;
    };
    let counters: [(&str, &str, u64); 9] = [
        (
            "obrec_messages_total",
            "Depth events recorded.",
            r.total_messages,
        ),
        (
            "obrec_reconnects_total",
            "Connections lost or replaced unplanned.",
            r.continuity.reconnects,
        ),
        (
            "obrec_stale_reconnects_total",
            "Connections replaced for silence.",
            r.stale_reconnects,
        ),
        (
            "obrec_rollovers_total",
            "Planned make-before-break replacements.",
            r.rollovers,
        ),
        (
            "obrec_connect_failures_total",
            "Failed connection attempts.",
            r.connect_failures,
        ),
        (
            "obrec_bad_frames_total",
            "Unusable frames received.",
            r.bad_frames,
        ),
        (
            "obrec_bytes_written_total",
            "Compressed bytes written.",
            r.bytes_written,
        ),
        (
            "obrec_breaks_total",
            "Continuity breaks, all symbols.",
            r.continuity.breaks,
        ),
        (
            "obrec_drops_total",
            "Events dropped on a full queue, all symbols.",
            r.log_queue.drops,
        ),
    ];
    for (name, help, value) in counters {
        metric(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    metric(
        &mut out,
        "obrec_runtime_seconds",
        "gauge",
        "Seconds since the recorder started.",
    );
    let _ = writeln!(out, "obrec_runtime_seconds {}", r.runtime_seconds);
    metric(
        &mut out,
        "obrec_recv_rate",
        "gauge",
        "Events per second over the last interval.",
    );
    let _ = writeln!(out, "obrec_recv_rate {}", r.window.recv_rate);
    if let Some(age) = r.last_message_age_ms {
        metric(
            &mut out,
            "obrec_last_message_age_seconds",
            "gauge",
            "Age of the newest recorded event.",
        );
        let _ = writeln!(out, "obrec_last_message_age_seconds {}", age / 1000.0);
    }
    metric(
        &mut out,
        "obrec_queue_depth",
        "gauge",
        "Reader-to-writer queue depth: p95 and max over the run.",
    );
    let _ = writeln!(
        out,
        "obrec_queue_depth{{stat=\"p95\"}} {}",
        r.log_queue.depth_p95
    );
    let _ = writeln!(
        out,
        "obrec_queue_depth{{stat=\"max\"}} {}",
        r.log_queue.depth_max
    );
    metric(
        &mut out,
        "obrec_pipeline_microseconds",
        "summary",
        "Receipt to compressor, over the run.",
    );
    for (q, v) in [
        ("0.5", r.pipeline_us.p50),
        ("0.99", r.pipeline_us.p99),
        ("1", r.pipeline_us.max),
    ] {
        let _ = writeln!(out, "obrec_pipeline_microseconds{{quantile=\"{q}\"}} {v}");
    }

    let per_symbol: [(&str, &str, SymbolFigure); 8] = [
        (
            "obrec_symbol_messages_total",
            "Depth events recorded per symbol.",
            |s| s.messages,
        ),
        (
            "obrec_symbol_breaks_total",
            "Continuity breaks per symbol.",
            |s| s.breaks,
        ),
        (
            "obrec_symbol_resyncs_total",
            "Snapshot resyncs per symbol.",
            |s| s.resyncs,
        ),
        (
            "obrec_symbol_reconnect_gaps_total",
            "Chains restarted on a new connection.",
            |s| s.reconnect_gaps,
        ),
        (
            "obrec_symbol_drops_total",
            "Events dropped on a full queue.",
            |s| s.drops,
        ),
        (
            "obrec_symbol_duplicates_total",
            "Events delivered twice and recorded once.",
            |s| s.duplicates,
        ),
        (
            "obrec_symbol_throttled_snapshots_total",
            "Snapshots delayed by the REST budget.",
            |s| s.throttled_snapshots,
        ),
        (
            "obrec_symbol_snapshot_errors_total",
            "Snapshot requests that failed (not rate limits).",
            |s| s.snapshot_errors,
        ),
    ];
    for (name, help, get) in per_symbol {
        metric(&mut out, name, "counter", help);
        for (symbol, s) in &r.symbols {
            let _ = writeln!(out, "{name}{{symbol=\"{symbol}\"}} {}", get(s));
        }
    }
    book_states(&mut out, r);
    metric(
        &mut out,
        "obrec_event_latency_milliseconds",
        "summary",
        "Receipt minus exchange event time E, over the run (includes clock offset).",
    );
    for (symbol, s) in &r.symbols {
        latency_summary(&mut out, symbol, &s.latency_ms, s.messages);
    }
    out
}

/// Diff depth: whether each book is synced, and since when.
fn book_states(out: &mut String, r: &Report) {
    let books: Vec<_> = r
        .symbols
        .iter()
        .filter_map(|(symbol, s)| s.book.map(|b| (symbol, b)))
        .collect();
    if books.is_empty() {
        return;
    }
    metric(
        out,
        "obrec_symbol_book_synced",
        "gauge",
        "1 while the diff-depth book follows the chain from a snapshot, else 0.",
    );
    for (symbol, b) in &books {
        let _ = writeln!(
            out,
            "obrec_symbol_book_synced{{symbol=\"{symbol}\"}} {}",
            u8::from(b.synced)
        );
    }
    metric(
        out,
        "obrec_symbol_book_since_seconds",
        "gauge",
        "Unix time at which the book became synced, or stopped being synced.",
    );
    for (symbol, b) in &books {
        let _ = writeln!(
            out,
            "obrec_symbol_book_since_seconds{{symbol=\"{symbol}\"}} {}",
            b.since_ms as f64 / 1000.0
        );
    }
}

/// Reads one counter of a symbol's report.
type SymbolFigure = fn(&SymbolReport) -> u64;

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn latency_summary(out: &mut String, symbol: &str, l: &LatencyMs, count: u64) {
    let name = "obrec_event_latency_milliseconds";
    for (q, v) in [("0.5", l.p50), ("0.95", l.p95), ("0.99", l.p99)] {
        let _ = writeln!(out, "{name}{{symbol=\"{symbol}\",quantile=\"{q}\"}} {v}");
    }
    let _ = writeln!(
        out,
        "{name}_sum{{symbol=\"{symbol}\"}} {}",
        l.avg_ms * count as f64
    );
    let _ = writeln!(out, "{name}_count{{symbol=\"{symbol}\"}} {count}");
}
