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
use crate::metrics::http::{Listener, Response};
use crate::metrics::nats::NatsReport;
use crate::metrics::tap::TapReport;
use crate::metrics::{
    FeedState, LatencyMs, Link, QueueReport, Report, Stats, SymbolReport, UniverseReport, iso_ms,
    streams,
};
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
        let bind_error = |cause| Error::Bind {
            addr: addr.to_string(),
            cause,
        };
        let listener = Listener::bind(addr).map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                listener.serve(&shutdown, |path| answer(path, &stats, stale_after, started))
            })
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

/// The answer to a GET of `path`.
fn answer(path: &str, stats: &Stats, stale_after: Duration, started: Instant) -> Response {
    let text = |status, body| Response {
        status,
        content_type: "text/plain",
        body,
    };
    match path {
        "/metrics" => {
            let latest = stats
                .latest
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: render(latest.as_ref(), stats),
            }
        }
        "/healthz" => match health(stats, stale_after, started.elapsed()) {
            None => match silent_streams(stats) {
                None => text(200, "ok\n".to_string()),
                Some(which) => text(200, format!("degraded: {which}\n")),
            },
            Some(reason) => text(503, format!("{reason}\n")),
        },
        _ => text(404, "not found: try /metrics or /healthz\n".to_string()),
    }
}

/// `None` when every reader group received data within `stale_after` and the latest report is
/// inside `obrec health`'s default thresholds.
pub fn health(stats: &Stats, stale_after: Duration, uptime: Duration) -> Option<String> {
    let now = wall_ns();
    let mut problems = Vec::new();
    let others_deliver = stats
        .groups
        .iter()
        .any(|(_, g)| g.last_data_ns.load(Ordering::Relaxed) != 0);
    for (i, group) in stats.groups.iter() {
        let last = group.last_data_ns.load(Ordering::Relaxed);
        let silent = Duration::from_nanos(now.saturating_sub(last));
        let name = format!("connection group {} ({}…)", i + 1, group.first_stream);
        let connection = (group.link.get() == Link::Down).then(|| "not connected".into());
        let stale_after = match group.quiet_limit_ms.load(Ordering::Relaxed) {
            0 => stale_after,
            ms => Duration::from_millis(ms),
        };
        // A group whose streams the exchange acknowledged and never sends (a wrong route) is
        // named stream by stream in the degraded answer, as long as something else records;
        // a recorder that records nothing at all is unhealthy whatever the reason.
        let named_elsewhere = group.all_silent.load(Ordering::Relaxed) && others_deliver;
        let data = if named_elsewhere {
            None
        } else if last == 0 && uptime >= stale_after.saturating_mul(2) {
            // Twice over: the group's reader judges its streams one limit after its connect.
            Some("no data since start".into())
        } else if last != 0 && silent >= stale_after {
            Some(format!("no data for {:.1} s", silent.as_secs_f64()))
        } else {
            None
        };
        let why: Vec<String> = connection.into_iter().chain(data).collect();
        if !why.is_empty() {
            problems.push(format!("{name}: {}", why.join(", ")));
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

/// The streams judged silent while others deliver, e.g. `ethustd@depth5@100ms silent since
/// 2026-…Z`, depth and beside the book.
///
/// Degraded, not unhealthy: the recorder records what exists, and a restart (what a supervisor
/// does on 503) cannot make an unknown symbol or a wrong route deliver but would cost the others
/// a gap.
pub fn silent_streams(stats: &Stats) -> Option<String> {
    let depth = stats.symbols.iter().map(|(_, s)| (&s.stream, s.feed.get()));
    let beside = stats.streams.iter().map(|(_, s)| (&s.stream, s.feed.get()));
    let silent: Vec<String> = depth
        .chain(beside)
        .filter(|(_, feed)| feed.state == FeedState::Silent)
        .map(|(stream, feed)| {
            format!(
                "{stream} silent since {}",
                iso_ms(feed.since_ns / 1_000_000)
            )
        })
        .collect();
    (!silent.is_empty()).then(|| silent.join(", "))
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
    let counters: [(&str, &str, u64); 10] = [
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
        (
            "obrec_server_shutdowns_total",
            "serverShutdown notices, each answered by an early replacement.",
            r.server_shutdowns,
        ),
    ];
    series(&mut out, "counter", &counters);
    if let Some(tap) = r.tap {
        tap_metrics(&mut out, tap);
    }
    if let Some(universe) = r.universe {
        universe_metrics(&mut out, universe);
    }
    if let Some(queue) = r.queue {
        queue_metrics(&mut out, queue);
    }
    if !r.gzip_members.is_empty() {
        metric(
            &mut out,
            "obrec_gzip_members_total",
            "counter",
            "gzip members written, by level: below --gzip-level while compression fell behind.",
        );
        for (level, members) in &r.gzip_members {
            let _ = writeln!(
                out,
                "obrec_gzip_members_total{{level=\"{level}\"}} {members}"
            );
        }
    }
    if let Some(nats) = r.nats {
        nats_metrics(&mut out, nats);
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
    streams::render(&mut out, &r.streams);
    metric(
        &mut out,
        "obrec_event_latency_milliseconds",
        "summary",
        "Receipt minus exchange event time E, over the run (includes clock offset).",
    );
    for (symbol, s) in &r.symbols {
        latency_summary(&mut out, symbol, &s.latency_ms, s.messages);
    }
    metric(
        &mut out,
        "obrec_symbol_delivering",
        "gauge",
        "1 while the symbol's stream delivers, 0 while waiting for it or silent.",
    );
    for (symbol, s) in &r.symbols {
        let on = s
            .feed
            .as_ref()
            .is_some_and(|f| f.state == FeedState::Delivering);
        let _ = writeln!(
            out,
            "obrec_symbol_delivering{{symbol=\"{symbol}\"}} {}",
            u8::from(on)
        );
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

/// The `obrec_universe_*` series of a recorder with `--symbol all`.
fn universe_metrics(out: &mut String, universe: UniverseReport) {
    metric(
        out,
        "obrec_universe_symbols",
        "gauge",
        "Symbols recorded now (--symbol all).",
    );
    let _ = writeln!(out, "obrec_universe_symbols {}", universe.symbols);
    let counters = [
        (
            "obrec_universe_listed_total",
            "Symbols the exchange listed during the run, subscribed live.",
            universe.listed,
        ),
        (
            "obrec_universe_delisted_total",
            "Symbols the exchange stopped trading during the run, their files finished.",
            universe.delisted,
        ),
    ];
    series(out, "counter", &counters);
}

/// One unlabelled series for each `(name, help, value)`, all of type `kind`.
pub fn series(out: &mut String, kind: &str, rows: &[(&str, &str, u64)]) {
    for &(name, help, value) in rows {
        metric(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// The hand-off from the readers to the writer: how full, and what waiting for room cost.
fn queue_metrics(out: &mut String, queue: QueueReport) {
    let gauges = [
        (
            "obrec_queue_bytes",
            "Bytes of events between the readers and the writer.",
            queue.bytes,
        ),
        (
            "obrec_queue_peak_bytes",
            "The most bytes between the readers and the writer this run.",
            queue.peak_bytes,
        ),
        (
            "obrec_queue_budget_bytes",
            "--queue-bytes: past it the readers wait for the writer.",
            queue.budget_bytes,
        ),
    ];
    series(out, "gauge", &gauges);
    metric(
        out,
        "obrec_queue_blocked_seconds_total",
        "counter",
        "Time readers waited for room, summed over readers.",
    );
    let blocked = queue.blocked_ms as f64 / 1e3;
    let _ = writeln!(out, "obrec_queue_blocked_seconds_total {blocked}");
}

/// The `obrec_tap_*` series of a recorder with `--tap`.
fn tap_metrics(out: &mut String, tap: TapReport) {
    metric(out, "obrec_tap_clients", "gauge", "Tap clients connected.");
    let _ = writeln!(out, "obrec_tap_clients {}", tap.clients);
    let counters = [
        (
            "obrec_tap_frames_sent_total",
            "Frames written to tap clients.",
            tap.frames_sent,
        ),
        (
            "obrec_tap_bytes_sent_total",
            "Bytes written to tap clients.",
            tap.bytes_sent,
        ),
        (
            "obrec_tap_cuts_total",
            "Tap clients cut for falling behind.",
            tap.cuts,
        ),
        (
            "obrec_tap_drops_total",
            "Frames the tap lost on its full hand-off queue (the files did not).",
            tap.drops,
        ),
    ];
    series(out, "counter", &counters);
    metric(
        out,
        "obrec_tap_delivery_milliseconds",
        "summary",
        "Receipt to written to a tap client's socket, over the run.",
    );
    let delivery = tap.delivery_ms;
    for (q, v) in [
        ("0.5", delivery.p50),
        ("0.99", delivery.p99),
        ("1", delivery.max),
    ] {
        let _ = writeln!(
            out,
            "obrec_tap_delivery_milliseconds{{quantile=\"{q}\"}} {v}"
        );
    }
}

/// The `obrec_nats_*` series of a recorder with `--nats`.
fn nats_metrics(out: &mut String, nats: NatsReport) {
    for (name, kind, help, value) in [
        (
            "obrec_nats_published_total",
            "counter",
            "Lines sent to the JetStream stream, retries included.",
            nats.published,
        ),
        (
            "obrec_nats_acked_total",
            "counter",
            "Lines the stream confirmed.",
            nats.acked,
        ),
        (
            "obrec_nats_duplicates_total",
            "counter",
            "Confirmed lines the stream already held under their Nats-Msg-Id.",
            nats.duplicates,
        ),
        (
            "obrec_nats_dropped_total",
            "counter",
            "Lines lost for NATS on a full hand-off or after the last retry (the files kept them).",
            nats.dropped,
        ),
        (
            "obrec_nats_retries_total",
            "counter",
            "Sends that failed or went unconfirmed, each retried.",
            nats.retries,
        ),
        (
            "obrec_nats_pending",
            "gauge",
            "Lines waiting to be sent or confirmed.",
            nats.pending,
        ),
        (
            "obrec_nats_lag_milliseconds",
            "gauge",
            "Receipt to confirmation of the latest confirmed line.",
            nats.lag_ms,
        ),
        (
            "obrec_nats_connected",
            "gauge",
            "1 while connected to a NATS server.",
            u64::from(nats.connected),
        ),
    ] {
        metric(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tap::Delivery;

    /// Each of `lines` is a whole line of `out`.
    fn assert_has_lines(out: &str, lines: &[&str]) {
        for line in lines {
            assert!(out.lines().any(|l| l == *line), "{line} in\n{out}");
        }
    }

    #[test]
    fn tap_series_are_named_obrec_tap() {
        let mut out = String::new();
        let tap = TapReport {
            clients: 3,
            frames_sent: 10,
            bytes_sent: 2_000,
            cuts: 1,
            drops: 2,
            delivery_ms: Delivery {
                p50: 0.25,
                p99: 1.5,
                max: 4.0,
            },
        };
        tap_metrics(&mut out, tap);
        assert_has_lines(
            &out,
            &[
                "# TYPE obrec_tap_clients gauge",
                "obrec_tap_clients 3",
                "obrec_tap_frames_sent_total 10",
                "obrec_tap_bytes_sent_total 2000",
                "obrec_tap_cuts_total 1",
                "obrec_tap_drops_total 2",
                "obrec_tap_delivery_milliseconds{quantile=\"0.99\"} 1.5",
            ],
        );
    }

    #[test]
    fn universe_series_count_listings_and_delistings() {
        let mut out = String::new();
        let universe = UniverseReport {
            listed: 2,
            delisted: 1,
            symbols: 531,
        };
        universe_metrics(&mut out, universe);
        assert_has_lines(
            &out,
            &[
                "# TYPE obrec_universe_symbols gauge",
                "obrec_universe_symbols 531",
                "# TYPE obrec_universe_listed_total counter",
                "obrec_universe_listed_total 2",
                "obrec_universe_delisted_total 1",
            ],
        );
    }

    #[test]
    fn queue_series_show_the_budget_and_the_wait_in_seconds() {
        let mut out = String::new();
        let queue = QueueReport {
            bytes: 10,
            peak_bytes: 20,
            budget_bytes: 30,
            blocked_ms: 1_500,
        };
        queue_metrics(&mut out, queue);
        for line in [
            "# TYPE obrec_queue_bytes gauge",
            "obrec_queue_bytes 10",
            "obrec_queue_peak_bytes 20",
            "obrec_queue_budget_bytes 30",
            "# TYPE obrec_queue_blocked_seconds_total counter",
            "obrec_queue_blocked_seconds_total 1.5",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        }
    }
}
