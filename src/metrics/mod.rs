//! Health figures: counters the readers bump, histograms the writer fills, and the report they
//! make together (`metrics.json`, the SUMMARY line, `obrec replay --json`).
//!
//! Readers only touch atomics ([`Stats`]), so they never wait on the writer. The writer owns the
//! histograms ([`Metrics`]) because it sees every record that made it into a file; replay feeds
//! the same type from the lines it reads, so live and offline reports are computed identically.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

pub mod exporter;
pub mod health;
pub mod http;
pub mod nats;
pub mod streams;
pub mod tap;
use serde::{Deserialize, Serialize};

use crate::market::sequence::Ids;
use crate::market::symbol::SymbolId;
use streams::{StreamCounters, StreamReport, StreamStats};

/// Counters shared by the reader threads and read by the writer at each refresh.
#[derive(Debug, Default)]
pub struct Stats {
    /// Indexed by symbol id. Append-only: a `--symbol all` run adds the symbols listed while it
    /// runs, and readers index it without a lock.
    pub symbols: boxcar::Vec<SymbolStats>,
    /// The streams beside the book, indexed by the run's stream id; append-only like `symbols`.
    pub streams: boxcar::Vec<StreamStats>,
    /// Connections lost or replaced unplanned (failures and stalls), over all groups.
    pub reconnects: AtomicU64,
    /// The subset of `reconnects` caused by a connection that stopped delivering data.
    pub stale_reconnects: AtomicU64,
    /// Planned replacements before the exchange's 24 h cut (make-before-break).
    pub rollovers: AtomicU64,
    /// Attempts to open a connection that failed.
    pub connect_failures: AtomicU64,
    /// Frames that were not usable: not JSON, binary, oversized, missing fields, unknown stream.
    pub bad_frames: AtomicU64,
    /// Connections currently delivering.
    pub connections_open: AtomicU64,
    /// `serverShutdown` notices received: each started a replacement.
    pub server_shutdowns: AtomicU64,
    /// One per reader group, for `/healthz`; append-only: a listing may need a new group.
    pub groups: boxcar::Vec<GroupHealth>,
    /// The writer's latest report, for `/metrics`. Only the writer and the HTTP thread take it.
    pub latest: Mutex<Option<Report>>,
    /// `--tap` only: the tap's counters.
    pub tap: Option<Arc<tap::TapStats>>,
    /// `--symbol all` only: the listings and delistings followed.
    pub universe: Option<UniverseStats>,
    /// The hand-off from the readers to the writer: how full it is and how long readers waited.
    pub queue: QueueStats,
    /// `--nats` only: the publisher's counters, and its hand-off for the backlog.
    pub nats: Option<nats::Relay>,
}

/// What a `--symbol all` run followed of the exchange's listing.
#[derive(Debug, Default)]
pub struct UniverseStats {
    /// Symbols subscribed after the start because the exchange listed them.
    pub listed: AtomicU64,
    /// Symbols whose files were finished because the exchange stopped trading them.
    pub delisted: AtomicU64,
    /// Symbols recorded now.
    pub symbols: AtomicU64,
}

impl UniverseStats {
    fn report(&self) -> UniverseReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UniverseReport {
            listed: get(&self.listed),
            delisted: get(&self.delisted),
            symbols: get(&self.symbols),
        }
    }
}

/// `universe` in `metrics.json`: `{"listed":1,"delisted":0,"symbols":531}`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UniverseReport {
    pub listed: u64,
    pub delisted: u64,
    pub symbols: u64,
}

/// The byte-bounded hand-off between the readers and the writer, as the readers and the writer
/// account for it: whether a burst reached the budget, and what waiting for room cost.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Bytes of events handed over and not yet taken by the writer.
    pub bytes: AtomicU64,
    /// The most `bytes` has been this run: how close a burst came to the budget.
    pub peak_bytes: AtomicU64,
    /// `--queue-bytes`, for the report to put the two above in proportion.
    pub budget_bytes: AtomicU64,
    /// Time readers spent waiting for room, summed over readers: the price of losing nothing.
    pub blocked_ns: AtomicU64,
}

impl QueueStats {
    fn report(&self) -> QueueReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QueueReport {
            bytes: get(&self.bytes),
            peak_bytes: get(&self.peak_bytes),
            budget_bytes: get(&self.budget_bytes),
            blocked_ms: get(&self.blocked_ns) / 1_000_000,
        }
    }
}

/// When a reader group last received a stream event.
#[derive(Debug, Default)]
pub struct GroupHealth {
    /// Wall clock, ns since the epoch; 0 before the first event.
    pub last_data_ns: AtomicU64,
    /// The group's first stream, to name it in a health message.
    pub first_stream: String,
    /// Whether the group has a connection up.
    pub link: LinkHealth,
    /// How long the group may go without data before it is unhealthy, ms: set by the group from
    /// its streams' kinds (liquidations alone may be silent for an hour); 0 until it starts.
    pub quiet_limit_ms: AtomicU64,
    /// Every stream of the group is judged silent and none ever delivered on its connection:
    /// the exchange acknowledged streams it does not send (a wrong route, unknown symbols).
    /// The streams say so by name; the group is not also called dead.
    pub all_silent: std::sync::atomic::AtomicBool,
}

/// A reader group's connection state: set by the group on each change, read by reports.
#[derive(Debug, Default)]
pub struct LinkHealth(AtomicU8);

impl LinkHealth {
    pub fn set(&self, link: Link) {
        self.0.store(link as u8, Ordering::Relaxed);
    }

    pub fn get(&self) -> Link {
        match self.0.load(Ordering::Relaxed) {
            l if l == Link::Up as u8 => Link::Up,
            l if l == Link::Down as u8 => Link::Down,
            _ => Link::Connecting,
        }
    }
}

/// Whether a reader group has a connection up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Link {
    /// The first attempt is under way.
    #[default]
    Connecting,
    Up,
    /// An attempt failed or the connection was lost, and none is up yet.
    Down,
}

/// Per-symbol counters.
#[derive(Debug, Default)]
pub struct SymbolStats {
    /// Its depth stream's name, to name it when silent.
    pub stream: String,
    /// `pu` mismatches on a live connection: the exchange lost something.
    pub breaks: AtomicU64,
    /// Snapshots taken to resynchronise after a break (diff depth).
    pub resyncs: AtomicU64,
    /// Snapshot requests delayed by the REST weight budget.
    pub throttled: AtomicU64,
    /// Chains restarted on a new connection (data missed while disconnected).
    pub reconnect_gaps: AtomicU64,
    /// Events the writer had no room for: the bounded queue was full.
    pub drops: AtomicU64,
    /// Events delivered twice by overlapping connections and recorded once.
    pub duplicates: AtomicU64,
    /// Snapshot requests that failed (an HTTP error other than 429/418, a network error, a bad
    /// body); rate limits are counted in `throttled`.
    pub snapshot_errors: AtomicU64,
    /// Whether the symbol's stream delivers, as its reader last judged it.
    pub feed: FeedHealth,
    /// Diff depth only: whether the reader's book follows the chain, as its sync procedure says.
    pub book: BookHealth,
}

/// A diff-depth book's sync state: set by the reader that runs the procedure, read by reports.
#[derive(Debug, Default)]
pub struct BookHealth {
    /// 0 until a reader follows the book (partial depth never does); then 1 + synced.
    state: AtomicU8,
    /// Wall clock, ms since the epoch, of the change to `state`.
    since_ms: AtomicU64,
}

impl BookHealth {
    pub fn set(&self, state: BookState) {
        self.since_ms.store(state.since_ms, Ordering::Relaxed);
        self.state
            .store(1 + u8::from(state.synced), Ordering::Relaxed);
    }

    /// `None` for a book nobody follows.
    pub fn get(&self) -> Option<BookState> {
        match self.state.load(Ordering::Relaxed) {
            0 => None,
            s => Some(BookState {
                synced: s == 2,
                since_ms: self.since_ms.load(Ordering::Relaxed),
            }),
        }
    }
}

/// Whether a subscribed stream delivers: set by its reader on each change, read by reports.
#[derive(Debug, Default)]
pub struct FeedHealth {
    state: AtomicU8,
    /// Wall clock, ns since the epoch, of the change to `state`.
    since_ns: AtomicU64,
}

impl FeedHealth {
    pub fn set(&self, state: FeedState, since_ns: u64) {
        self.since_ns.store(since_ns, Ordering::Relaxed);
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn get(&self) -> FeedStatus {
        FeedStatus {
            state: self.state(),
            since_ns: self.since_ns.load(Ordering::Relaxed),
        }
    }

    /// The state alone: what the reader checks on every event, one load.
    pub fn state(&self) -> FeedState {
        match self.state.load(Ordering::Relaxed) {
            s if s == FeedState::Delivering as u8 => FeedState::Delivering,
            s if s == FeedState::Silent as u8 => FeedState::Silent,
            s if s == FeedState::Delisted as u8 => FeedState::Delisted,
            _ => FeedState::Waiting,
        }
    }
}

/// A stream's delivery, as judged by its reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedState {
    /// Not judged yet: no event so far, and its first window has not passed.
    #[default]
    Waiting,
    /// Events arrive.
    Delivering,
    /// Subscribed, and nothing arrived within its window (an unknown or delisted symbol, or a
    /// stream on the wrong route).
    Silent,
    /// The exchange stopped trading the symbol (`--symbol all`): its files are finished and its
    /// silence is expected, not a fault.
    Delisted,
}

/// A stream's delivery state and since when it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedStatus {
    pub state: FeedState,
    /// Wall clock, ns since the epoch.
    pub since_ns: u64,
}

impl Stats {
    /// Counters for the symbols whose depth streams are `symbols`, read by groups whose first
    /// streams are `groups`.
    pub fn new(symbols: Vec<String>, groups: Vec<String>) -> Stats {
        let stats = Stats::default();
        for stream in symbols {
            stats.add_symbol(stream);
        }
        for first_stream in groups {
            stats.add_group(first_stream);
        }
        stats
    }

    /// Adds the counters of a symbol whose depth stream is `stream`; returns its id.
    pub fn add_symbol(&self, stream: String) -> SymbolId {
        let stats = SymbolStats {
            stream,
            ..SymbolStats::default()
        };
        stats
            .feed
            .set(FeedState::Waiting, crate::util::clock::wall_ns());
        self.symbols.push(stats)
    }

    /// Adds the health of a reader group whose first stream is `first_stream`; returns its index.
    pub fn add_group(&self, first_stream: String) -> usize {
        self.groups.push(GroupHealth {
            first_stream,
            ..GroupHealth::default()
        })
    }

    /// Adds the counters of a stream beside the book; returns its stream id.
    pub fn add_stream(
        &self,
        stream: String,
        symbol: String,
        kind: crate::market::kind::Kind,
    ) -> usize {
        let started_ns = crate::util::clock::wall_ns();
        self.streams
            .push(StreamStats::new(stream, symbol, kind, started_ns))
    }

    /// Adds the streams beside the book (`stream name, symbol, kind`), in stream id order.
    pub fn with_streams(
        self,
        streams: impl IntoIterator<Item = (String, String, crate::market::kind::Kind)>,
    ) -> Stats {
        for (stream, symbol, kind) in streams {
            self.add_stream(stream, symbol, kind);
        }
        self
    }

    /// Counts the listings followed, with `--symbol all`.
    pub fn with_universe(mut self, symbols: usize) -> Stats {
        let universe = UniverseStats::default();
        universe.symbols.store(symbols as u64, Ordering::Relaxed);
        self.universe = Some(universe);
        self
    }

    /// Reports the tap's counters too, with `--tap`.
    pub fn with_tap(mut self, tap: Option<Arc<tap::TapStats>>) -> Stats {
        self.tap = tap;
        self
    }

    /// Reports the NATS publisher's counters too, with `--nats`.
    pub fn with_nats(mut self, relay: Option<nats::Relay>) -> Stats {
        self.nats = relay;
        self
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy for one report.
    pub fn counters(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            symbols: self
                .symbols
                .iter()
                .map(|(_, s)| SymbolCounters {
                    breaks: get(&s.breaks),
                    resyncs: get(&s.resyncs),
                    throttled: get(&s.throttled),
                    reconnect_gaps: get(&s.reconnect_gaps),
                    drops: get(&s.drops),
                    duplicates: get(&s.duplicates),
                    feed: Some(s.feed.get()),
                    book: s.book.get(),
                    snapshot_errors: get(&s.snapshot_errors),
                })
                .collect(),
            streams: self.streams.iter().map(|(_, s)| s.counters()).collect(),
            silent_streams: self
                .symbols
                .iter()
                .filter(|(_, s)| s.feed.state() == FeedState::Silent)
                .map(|(_, s)| s.stream.clone())
                .chain(
                    self.streams
                        .iter()
                        .filter(|(_, s)| s.feed.state() == FeedState::Silent)
                        .map(|(_, s)| s.stream.clone()),
                )
                .collect(),
            connected: Some(Connected {
                up: self
                    .groups
                    .iter()
                    .filter(|(_, g)| g.link.get() == Link::Up)
                    .count() as u64,
                of: self.groups.count() as u64,
            }),
            reconnects: get(&self.reconnects),
            stale_reconnects: get(&self.stale_reconnects),
            rollovers: get(&self.rollovers),
            connect_failures: get(&self.connect_failures),
            bad_frames: get(&self.bad_frames),
            connections_open: get(&self.connections_open),
            server_shutdowns: get(&self.server_shutdowns),
            tap: self.tap.as_ref().map(|t| t.report()),
            universe: self.universe.as_ref().map(UniverseStats::report),
            queue: Some(self.queue.report()),
            nats: self.nats.as_ref().map(nats::Relay::report),
        }
    }
}

/// Plain counter values: from [`Stats`] live, or computed by replay.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub symbols: Vec<SymbolCounters>,
    pub streams: Vec<StreamCounters>,
    /// Live runs only: subscribed streams judged silent, by name.
    pub silent_streams: Vec<String>,
    pub reconnects: u64,
    pub stale_reconnects: u64,
    pub rollovers: u64,
    pub connect_failures: u64,
    pub bad_frames: u64,
    pub connections_open: u64,
    pub server_shutdowns: u64,
    /// Live runs only.
    pub connected: Option<Connected>,
    /// Live runs with `--tap` only.
    pub tap: Option<tap::TapReport>,
    /// Live `--symbol all` runs only.
    pub universe: Option<UniverseReport>,
    /// Live runs only.
    pub queue: Option<QueueReport>,
    /// Live runs with `--nats` only.
    pub nats: Option<nats::NatsReport>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SymbolCounters {
    pub breaks: u64,
    pub resyncs: u64,
    pub throttled: u64,
    pub reconnect_gaps: u64,
    pub drops: u64,
    pub duplicates: u64,
    /// Live runs only.
    pub feed: Option<FeedStatus>,
    /// Live diff-depth runs only.
    pub book: Option<BookState>,
    pub snapshot_errors: u64,
}

/// Highest latency the histograms resolve, in µs (one hour): anything later is clamped, and a
/// feed that late is broken whatever the exact figure.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Widest `u - U` tracked: a diff event spanning more ids than this is clamped.
const MAX_SPAN: u64 = 1 << 40;
/// Significant digits for run-wide histograms (0.1 % error).
const SIGFIG: u8 = 3;
/// Significant digits for per-symbol histograms: 1 % error keeps 300 symbols' histograms small.
const SYMBOL_SIGFIG: u8 = 2;

/// Latency and span figures of one population of events (a run, a window, a symbol).
struct Figures {
    count: u64,
    latency_us: Histogram<u64>,
    /// Exact extremes and sum in µs, negative when the local clock runs behind the exchange's;
    /// the histogram itself records negative latencies as 0.
    min_us: i64,
    max_us: i64,
    sum_us: i128,
    span: Histogram<u64>,
}

impl Figures {
    fn new(sigfig: u8) -> Figures {
        let hist =
            |max| Histogram::new_with_bounds(1, max, sigfig).expect("valid histogram bounds");
        Figures {
            count: 0,
            latency_us: hist(MAX_LATENCY_US),
            min_us: i64::MAX,
            max_us: i64::MIN,
            sum_us: 0,
            span: hist(MAX_SPAN),
        }
    }

    fn observe(&mut self, latency_us: i64, span: u64) {
        self.count += 1;
        self.latency_us
            .saturating_record(latency_us.clamp(0, MAX_LATENCY_US as i64) as u64);
        self.min_us = self.min_us.min(latency_us);
        self.max_us = self.max_us.max(latency_us);
        self.sum_us += i128::from(latency_us);
        self.span.saturating_record(span.min(MAX_SPAN));
    }

    fn reset(&mut self) {
        self.count = 0;
        self.latency_us.reset();
        self.span.reset();
        self.min_us = i64::MAX;
        self.max_us = i64::MIN;
        self.sum_us = 0;
    }

    fn latency(&self) -> LatencyMs {
        let ms = |us: i64| us as f64 / 1_000.0;
        let pct = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1_000.0;
        if self.count == 0 {
            return LatencyMs::default();
        }
        LatencyMs {
            avg_ms: round3(self.sum_us as f64 / self.count as f64 / 1_000.0),
            min_ms: ms(self.min_us),
            max_ms: ms(self.max_us),
            p50: pct(0.50),
            p95: pct(0.95),
            p99: pct(0.99),
        }
    }

    fn batch_span(&self) -> BatchSpan {
        BatchSpan {
            p95: self.span.value_at_quantile(0.95),
            max: self.span.max(),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

pub(crate) fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (count as f64 / secs * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// The writer's (or replay's) view of everything recorded so far.
pub struct Metrics {
    symbols: Vec<String>,
    total: Figures,
    window: Figures,
    per_symbol: Vec<Figures>,
    pipeline_ns: Histogram<u64>,
    queue_depth: Histogram<u64>,
    bytes_written: u64,
    /// gzip members written, by the level they were compressed at: shows how often the
    /// compression stage fell behind and sped up.
    members_by_level: BTreeMap<u32, u64>,
    /// Receipt time (ns since epoch) of the newest event.
    last_recv_ns: Option<u64>,
    /// Report intervals in which something went wrong, oldest first: what `obrec health` and
    /// `/healthz` judge a recent window on.
    incidents: VecDeque<Incidents>,
    /// Continuity totals at the last report, to tell what the next interval added.
    reported: Incidents,
}

/// How far back incidents are kept: the longest `obrec health --window`.
pub const INCIDENT_SPAN: Duration = Duration::from_secs(24 * 3600);
/// Most incident intervals kept, which bounds metrics.json. Only a window holding more intervals
/// with incidents than this can lose count, and that many is far past any threshold.
const MAX_INCIDENTS: usize = 1000;

/// Highest pipeline latency resolved, in ns (10 s).
const MAX_PIPELINE_NS: u64 = 10_000_000_000;

impl Metrics {
    pub fn new(symbols: Vec<String>) -> Metrics {
        let per_symbol = symbols
            .iter()
            .map(|_| Figures::new(SYMBOL_SIGFIG))
            .collect();
        Metrics {
            symbols,
            total: Figures::new(SIGFIG),
            window: Figures::new(SIGFIG),
            per_symbol,
            pipeline_ns: Histogram::new_with_bounds(1, MAX_PIPELINE_NS, SIGFIG)
                .expect("valid bounds"),
            queue_depth: Histogram::new_with_bounds(1, 1 << 32, SIGFIG).expect("valid bounds"),
            bytes_written: 0,
            members_by_level: BTreeMap::new(),
            last_recv_ns: None,
            incidents: VecDeque::new(),
            reported: Incidents::default(),
        }
    }

    /// Adds a symbol discovered on the way (replay) and returns its id.
    pub fn add_symbol(&mut self, name: String) -> SymbolId {
        self.symbols.push(name);
        self.per_symbol.push(Figures::new(SYMBOL_SIGFIG));
        self.symbols.len() - 1
    }

    /// Counts one recorded event.
    pub fn observe(&mut self, symbol: SymbolId, recv_ns: u64, event_ms: u64, ids: Ids) {
        let latency_us = crate::util::clock::latency_us(recv_ns, event_ms);
        let span = ids.last.saturating_sub(ids.first);
        self.total.observe(latency_us, span);
        self.window.observe(latency_us, span);
        if let Some(figures) = self.per_symbol.get_mut(symbol) {
            figures.observe(latency_us, span);
        }
        self.last_recv_ns = Some(self.last_recv_ns.map_or(recv_ns, |t| t.max(recv_ns)));
    }

    pub fn observe_pipeline(&mut self, ns: u64) {
        self.pipeline_ns
            .saturating_record(ns.clamp(1, MAX_PIPELINE_NS));
    }

    pub fn observe_queue_depth(&mut self, depth: usize) {
        self.queue_depth.saturating_record(depth as u64);
    }

    pub fn add_bytes_written(&mut self, n: u64) {
        self.bytes_written += n;
    }

    /// Counts `n` members written at gzip `level`.
    pub fn add_members(&mut self, level: u32, n: u64) {
        if n > 0 {
            *self.members_by_level.entry(level).or_default() += n;
        }
    }

    /// Builds the report and starts a new window.
    pub fn report(&mut self, clock: &ReportClock, counters: &Counters) -> Report {
        self.note_incidents(clock, counters);
        let report = self.peek(clock, counters);
        self.window.reset();
        report
    }

    /// Keeps what went wrong since the last report, stamped with this report's time.
    fn note_incidents(&mut self, clock: &ReportClock, counters: &Counters) {
        let sum = |f: fn(&SymbolCounters) -> u64| counters.symbols.iter().map(f).sum::<u64>();
        let at_ms = unix_ms(clock.now);
        let stream_breaks: u64 = counters.streams.iter().map(|s| s.breaks).sum();
        let now = Incidents {
            at_ms,
            breaks: sum(|c| c.breaks) + stream_breaks,
            resyncs: sum(|c| c.resyncs),
            reconnects: counters.reconnects,
            drops: sum(|c| c.drops),
        };
        let last = std::mem::replace(&mut self.reported, now);
        let added = Incidents {
            at_ms,
            breaks: now.breaks.saturating_sub(last.breaks),
            resyncs: now.resyncs.saturating_sub(last.resyncs),
            reconnects: now.reconnects.saturating_sub(last.reconnects),
            drops: now.drops.saturating_sub(last.drops),
        };
        if added.breaks + added.resyncs + added.reconnects + added.drops > 0 {
            self.incidents.push_back(added);
        }
        let oldest = at_ms.saturating_sub(INCIDENT_SPAN.as_millis() as u64);
        while self.incidents.front().is_some_and(|i| i.at_ms < oldest)
            || self.incidents.len() > MAX_INCIDENTS
        {
            self.incidents.pop_front();
        }
    }

    /// Builds the report without touching the window.
    pub fn peek(&self, clock: &ReportClock, counters: &Counters) -> Report {
        let sum = |f: fn(&SymbolCounters) -> u64| counters.symbols.iter().map(f).sum::<u64>();
        let symbols = self
            .symbols
            .iter()
            .zip(&self.per_symbol)
            .enumerate()
            .map(|(i, (name, figures))| {
                let c = counters.symbols.get(i).copied().unwrap_or_default();
                let report = SymbolReport {
                    messages: figures.count,
                    recv_rate: rate(figures.count, clock.runtime_secs),
                    latency_ms: figures.latency(),
                    batch_span: figures.batch_span(),
                    breaks: c.breaks,
                    resyncs: c.resyncs,
                    reconnect_gaps: c.reconnect_gaps,
                    drops: c.drops,
                    duplicates: c.duplicates,
                    throttled_snapshots: c.throttled,
                    feed: c.feed.map(|f| FeedReport {
                        state: f.state,
                        since: iso_ms(f.since_ns / 1_000_000),
                    }),
                    snapshot_errors: c.snapshot_errors,
                    book: c.book,
                };
                (name.clone(), report)
            })
            .collect();
        let window_latency = self.window.latency();
        Report {
            timestamp: iso_now(clock.now),
            window_sec: clock.window_secs,
            runtime_seconds: round3(clock.runtime_secs),
            total_messages: self.total.count,
            recv_rate: rate(self.total.count, clock.runtime_secs),
            latency_ms: self.total.latency(),
            continuity: Continuity {
                breaks: sum(|c| c.breaks),
                resyncs: sum(|c| c.resyncs),
                reconnects: counters.reconnects,
            },
            batch_span: self.total.batch_span(),
            log_queue: LogQueue {
                depth_p95: self.queue_depth.value_at_quantile(0.95),
                depth_max: self.queue_depth.max(),
                drops: sum(|c| c.drops),
            },
            symbol: self.symbols.join(","),
            window: Window {
                messages: self.window.count,
                recv_rate: rate(self.window.count, clock.window_secs),
                p50: window_latency.p50,
                p95: window_latency.p95,
                p99: window_latency.p99,
                max_ms: window_latency.max_ms,
            },
            symbols,
            pipeline_us: Pipeline {
                p50: self.pipeline_ns.value_at_quantile(0.50) as f64 / 1_000.0,
                p99: self.pipeline_ns.value_at_quantile(0.99) as f64 / 1_000.0,
                max: self.pipeline_ns.max() as f64 / 1_000.0,
            },
            bytes_written: self.bytes_written,
            gzip_members: self.members_by_level.clone(),
            queue: counters.queue,
            stale_reconnects: counters.stale_reconnects,
            last_message_age_ms: self.last_recv_ns.map(|t| {
                let now_ns = clock
                    .now
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64;
                round3(now_ns.saturating_sub(t) as f64 / 1e6)
            }),
            version: env!("CARGO_PKG_VERSION").to_string(),
            bad_frames: counters.bad_frames,
            duplicates: sum(|c| c.duplicates),
            reconnect_gaps: sum(|c| c.reconnect_gaps),
            rollovers: counters.rollovers,
            connect_failures: counters.connect_failures,
            connections_open: counters.connections_open,
            throttled_snapshots: sum(|c| c.throttled),
            connected: counters.connected,
            snapshot_errors: sum(|c| c.snapshot_errors),
            incidents: self.incidents.iter().copied().collect(),
            streams: streams::reports(&counters.streams, clock.runtime_secs),
            silent_streams: counters.silent_streams.clone(),
            server_shutdowns: counters.server_shutdowns,
            tap: counters.tap,
            universe: counters.universe,
            nats: counters.nats,
        }
    }
}

/// When a report is made and what span it covers.
pub struct ReportClock {
    pub now: SystemTime,
    pub runtime_secs: f64,
    pub window_secs: f64,
}

/// `metrics.json`: the seed's schema key for key, then obrec's additions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub timestamp: String,
    pub window_sec: f64,
    pub runtime_seconds: f64,
    pub total_messages: u64,
    pub recv_rate: f64,
    pub latency_ms: LatencyMs,
    pub continuity: Continuity,
    pub batch_span: BatchSpan,
    pub log_queue: LogQueue,
    pub symbol: String,
    pub window: Window,
    pub symbols: BTreeMap<String, SymbolReport>,
    pub pipeline_us: Pipeline,
    pub bytes_written: u64,
    pub stale_reconnects: u64,
    /// Age of the newest recorded event; null before the first one.
    pub last_message_age_ms: Option<f64>,
    pub version: String,
    pub bad_frames: u64,
    pub duplicates: u64,
    pub reconnect_gaps: u64,
    pub rollovers: u64,
    pub connect_failures: u64,
    pub connections_open: u64,
    pub throttled_snapshots: u64,
    /// Live runs only: how many connection groups have a connection up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<Connected>,
    /// Failed snapshot requests (not rate limits); absent from files of older versions.
    #[serde(default)]
    pub snapshot_errors: u64,
    /// Report intervals of the last 24 h with breaks, resyncs, reconnects or drops, oldest first.
    #[serde(default)]
    pub incidents: Vec<Incidents>,
    /// The streams beside the book, by stream name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub streams: BTreeMap<String, StreamReport>,
    /// Live runs only: subscribed streams that deliver nothing, depth and beside the book.
    #[serde(default)]
    pub silent_streams: Vec<String>,
    /// `serverShutdown` notices received, each answered by an early replacement.
    #[serde(default)]
    pub server_shutdowns: u64,
    /// Live runs with `--tap` only: its clients, what reached them, cuts and drops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<tap::TapReport>,
    /// Live `--symbol all` runs only: listings and delistings followed, symbols recorded now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub universe: Option<UniverseReport>,
    /// Live runs only: gzip members written, by level (`{"3": 1200, "1": 40}`); a level below
    /// `--gzip-level` means the compression stage fell behind and sped up.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gzip_members: BTreeMap<u32, u64>,
    /// Live runs only: the hand-off from the readers to the writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueReport>,
    /// Live runs with `--nats` only: what reached the stream, duplicates, drops, the backlog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<nats::NatsReport>,
}

/// `queue` in `metrics.json`: the byte-bounded hand-off from the readers to the writer.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueReport {
    /// Bytes in flight at the report.
    pub bytes: u64,
    /// The most bytes in flight this run.
    pub peak_bytes: u64,
    /// `--queue-bytes`.
    pub budget_bytes: u64,
    /// Time readers spent waiting for room, summed over readers, in ms.
    pub blocked_ms: u64,
}

/// Connection groups with a connection up, of all groups.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Connected {
    pub up: u64,
    pub of: u64,
}

/// What went wrong in one report interval: counts added since the previous report.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Incidents {
    /// The report that counted them, ms since the Unix epoch: they happened within one print
    /// interval before.
    pub at_ms: u64,
    /// Depth breaks and breaks of the streams beside the book.
    pub breaks: u64,
    pub resyncs: u64,
    pub reconnects: u64,
    pub drops: u64,
}

impl Report {
    /// The incidents counted by reports after `since_ms`, added up (`at_ms` is `since_ms`).
    pub fn incidents_since(&self, since_ms: u64) -> Incidents {
        self.incidents.iter().filter(|i| i.at_ms > since_ms).fold(
            Incidents {
                at_ms: since_ms,
                ..Incidents::default()
            },
            |sum, i| Incidents {
                at_ms: since_ms,
                breaks: sum.breaks + i.breaks,
                resyncs: sum.resyncs + i.resyncs,
                reconnects: sum.reconnects + i.reconnects,
                drops: sum.drops + i.drops,
            },
        )
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyMs {
    pub avg_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Continuity {
    pub breaks: u64,
    pub resyncs: u64,
    pub reconnects: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchSpan {
    pub p95: u64,
    pub max: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogQueue {
    pub depth_p95: u64,
    pub depth_max: u64,
    pub drops: u64,
}

/// The last print interval only.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Window {
    pub messages: u64,
    pub recv_rate: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SymbolReport {
    pub messages: u64,
    pub recv_rate: f64,
    pub latency_ms: LatencyMs,
    pub batch_span: BatchSpan,
    pub breaks: u64,
    pub resyncs: u64,
    pub reconnect_gaps: u64,
    pub drops: u64,
    pub duplicates: u64,
    pub throttled_snapshots: u64,
    /// Live runs only: whether the stream delivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<FeedReport>,
    #[serde(default)]
    pub snapshot_errors: u64,
    /// Diff depth only: whether the book is synced, and since when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub book: Option<BookState>,
}

/// A symbol's delivery in `metrics.json`: `{"state":"silent","since":"2026-…Z"}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FeedReport {
    pub state: FeedState,
    pub since: String,
}

/// Whether a diff-depth book follows the chain from a REST snapshot (`synced`), or waits for one
/// (before the first, after a break or a reconnect), and since when.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BookState {
    pub synced: bool,
    /// When the state began, ms since the Unix epoch (receipt time of the event or snapshot that
    /// changed it; the run's start before either).
    pub since_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Pipeline {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Report {
    /// The seed's one-line SUMMARY; while a connection group is down it ends in
    /// `| connected=0/1`.
    pub fn summary_line(&self) -> String {
        let mut line = format!(
            "SUMMARY | t={:.0}s | msgs={} | rate={:.2}/s | p50={:.1} p95={:.1} p99={:.1} | breaks={} resyncs={} reconnects={} | batch_span_p95={} max={} | log_q_p95={} max={} drops={}",
            self.runtime_seconds,
            self.total_messages,
            self.recv_rate,
            self.latency_ms.p50,
            self.latency_ms.p95,
            self.latency_ms.p99,
            self.continuity.breaks,
            self.continuity.resyncs,
            self.continuity.reconnects,
            self.batch_span.p95,
            self.batch_span.max,
            self.log_queue.depth_p95,
            self.log_queue.depth_max,
            self.log_queue.drops,
        );
        streams::summary_fields(&mut line, &self.streams);
        if let Some(u) = self.universe {
            let _ = write!(
                line,
                " | symbols={} listed={} delisted={}",
                u.symbols, u.listed, u.delisted
            );
        }
        if let Some(c) = self.connected
            && c.up < c.of
        {
            let _ = write!(line, " | connected={}/{}", c.up, c.of);
        }
        line
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// `now` as `2026-11-20T08:38:01.509Z`.
fn iso_now(now: SystemTime) -> String {
    iso_ms(unix_ms(now))
}

/// `ms` since the epoch as `2026-11-20T08:38:01.509Z`.
pub fn iso_ms(ms: u64) -> String {
    let mut out = Vec::with_capacity(24);
    crate::util::clock::push_iso_millis(&mut out, ms);
    String::from_utf8(out).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_book_nobody_follows_has_no_state() {
        let book = BookHealth::default();
        assert_eq!(book.get(), None);
        for synced in [false, true, false] {
            let state = BookState {
                synced,
                since_ms: 7,
            };
            book.set(state);
            assert_eq!(book.get(), Some(state));
        }
    }

    fn clock(runtime: f64) -> ReportClock {
        ReportClock {
            now: UNIX_EPOCH + Duration::from_secs(1_763_627_881),
            runtime_secs: runtime,
            window_secs: 10.0,
        }
    }

    #[test]
    fn report_matches_observations_and_seed_summary_format() {
        let mut m = Metrics::new(vec!["ETHUSDT".into(), "BTCUSDT".into()]);
        let e = 1_763_627_880_000u64;
        // Latencies 79, 80, 81 ms for ETHUSDT and -5 ms (clock behind) for BTCUSDT.
        for (sym, lat_ms, span) in [(0, 79, 100), (0, 80, 200), (0, 81, 795), (1, -5, 1536)] {
            let recv_ns = ((e as i64 + lat_ms) * 1_000_000) as u64;
            m.observe(
                sym,
                recv_ns,
                e,
                Ids {
                    first: 1_000,
                    last: 1_000 + span,
                    prev: 999,
                },
            );
        }
        m.observe_queue_depth(2);
        m.observe_queue_depth(7);
        let mut counters = Counters {
            symbols: vec![SymbolCounters::default(); 2],
            ..Counters::default()
        };
        counters.symbols[1].breaks = 1;
        counters.symbols[0].drops = 3;
        counters.reconnects = 2;
        let r = m.report(&clock(2.0), &counters);
        assert_eq!(r.total_messages, 4);
        assert_eq!(r.recv_rate, 2.0);
        assert_eq!(r.latency_ms.min_ms, -5.0);
        assert_eq!(r.latency_ms.max_ms, 81.0);
        assert_eq!(r.latency_ms.avg_ms, 58.75);
        assert_eq!(
            r.continuity,
            Continuity {
                breaks: 1,
                resyncs: 0,
                reconnects: 2
            }
        );
        assert_eq!(r.batch_span.max, 1536);
        assert_eq!(r.log_queue.drops, 3);
        assert_eq!(r.symbols["ETHUSDT"].messages, 3);
        assert_eq!(r.symbols["BTCUSDT"].breaks, 1);
        assert_eq!(r.symbol, "ETHUSDT,BTCUSDT");
        assert_eq!(r.window.messages, 4);
        assert!(
            r.summary_line()
                .starts_with("SUMMARY | t=2s | msgs=4 | rate=2.00/s | p50="),
            "{}",
            r.summary_line()
        );
        assert!(r.summary_line().ends_with("| breaks=1 resyncs=0 reconnects=2 | batch_span_p95=1536 max=1536 | log_q_p95=7 max=7 drops=3"));
        // The next report's window is empty.
        assert_eq!(m.report(&clock(3.0), &counters).window.messages, 0);
    }

    #[test]
    fn summary_says_when_a_connection_group_is_down() {
        let m = Metrics::new(vec!["ETHUSDT".into()]);
        let line = |up| {
            let counters = Counters {
                connected: Some(Connected { up, of: 2 }),
                ..Counters::default()
            };
            m.peek(&clock(1.0), &counters).summary_line()
        };
        assert!(line(1).ends_with("drops=0 | connected=1/2"), "{}", line(1));
        assert!(line(2).ends_with("drops=0"), "{}", line(2));
    }

    #[test]
    fn report_serialises_seed_keys_in_seed_order() {
        let mut m = Metrics::new(vec!["ETHUSDT".into()]);
        let r = m.report(&clock(1.0), &Counters::default());
        let text = serde_json::to_string(&r).unwrap();
        let keys = [
            "timestamp",
            "window_sec",
            "runtime_seconds",
            "total_messages",
            "recv_rate",
            "latency_ms",
            "continuity",
            "batch_span",
            "log_queue",
            "symbol",
        ];
        let pos: Vec<usize> = keys
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.contains("\"last_message_age_ms\":null"));
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }
}
