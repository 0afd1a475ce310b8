//! `obrec record`: wires reader groups, the byte-bounded hand-off ([`budget`]) and the writer
//! together, and shuts them down in order.
//!
//! Shutdown (SIGINT, SIGTERM, end of `--run-minutes`) triggers the token; readers notice within a
//! read tick, close their sockets and drop their senders; the writer sees the channel close,
//! drains what is queued, finishes every gzip file and writes the final metrics. With
//! `--symbol all` the universe watch holds a sender too, and the groups it opened are joined
//! with the others.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

mod backfill;
mod budget;
mod compress;
mod console;
mod event;
mod feed;
mod snapshot;
mod universe;
mod writer;

use crate::error::{Error, Result};
use crate::market::kind::{Kind, Route, Selection};
use crate::market::stream::{Depth, Speed, depth_stream};
use crate::market::symbol::{Symbol, SymbolId};
use crate::market::venue::Market;
use crate::metrics::exporter::Exporter;
use crate::metrics::nats::Relay;
use crate::metrics::tap::Tee;
use crate::metrics::{Report, Stats};
use crate::store::conn_numbers::ConnNumbers;
use crate::store::lock::{self, DirLock};
use crate::store::names::{FileKind, book_dir, series};
use crate::store::{salvage, staged};
use crate::util::shutdown::Shutdown;
pub use budget::Budget;
use budget::Inlet;
use console::Console;
use event::{StreamFiles, StreamId, SymbolFiles, Target};
use feed::{Change, FeedConfig, Group, MAX_STREAMS_PER_CONNECTION, Subscription};
use snapshot::Fetcher;
pub use universe::{Universe, load_symbols};
use writer::{Writer, WriterConfig};

/// Everything a recording run needs, validated.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    /// In the order given, without repeats.
    pub symbols: Vec<Symbol>,
    pub depth: Depth,
    pub speed: Speed,
    /// Depth, and the streams beside it.
    pub streams: Selection,
    /// The Binance market recorded: its routes, REST paths and weights, continuity rule.
    pub market: Market,
    /// The `/public` route (depth, bookTicker, trade), or the one URL that serves everything.
    pub endpoint: String,
    /// The `/market` route (aggTrade, markPrice, forceOrder); `None` derives it from
    /// `endpoint` ([`RecordConfig::route_endpoint`]).
    pub market_endpoint: Option<String>,
    pub rest_endpoint: String,
    pub data_dir: PathBuf,
    /// Stop after this long; `None` runs until a signal.
    pub run_for: Option<Duration>,
    pub print_every: Duration,
    pub stale_after: Duration,
    pub ping_every: Duration,
    pub max_conn_age: Duration,
    pub file_period: Duration,
    pub flush_every: Duration,
    /// Bounds of the hand-off from the readers to the writer; past them readers wait.
    pub queue: Budget,
    pub gzip_level: u32,
    /// Serve Prometheus `/metrics` and `/healthz` here.
    pub metrics_addr: Option<String>,
    /// `--tap`: every accepted frame and snapshot is also handed here.
    pub tap: Option<Tee>,
    /// `--symbol all`: `symbols` is the listing at the start, followed live from here.
    pub universe: Option<Universe>,
    /// `--nats`: every line written is also handed here, for the publisher.
    pub nats: Option<Relay>,
}

/// Where Binance serves `market`'s depth streams: USD-M's `/public` route since the 2026 route
/// split, the one path of the others.
pub fn default_endpoint(market: Market) -> String {
    if market.routed() {
        format!("{}/{}", market.ws_endpoint(), Route::Public.path())
    } else {
        market.ws_endpoint().to_string()
    }
}
/// Default `--queue-bytes`: 48 MiB.
pub const DEFAULT_QUEUE_BYTES: usize = 48 << 20;
/// Default `--queue`, in events.
pub const DEFAULT_QUEUE_EVENTS: usize = 1 << 20;
/// Binance closes a connection at 24 h; the replacement opens half an hour before.
const DEFAULT_MAX_CONN_AGE: Duration = Duration::from_secs(23 * 3600 + 1800);

impl Default for RecordConfig {
    /// The seed's run: ETHUSDT, partial depth 5 at 100 ms, into `data/`, until a signal. Every
    /// flag of `obrec record` and the demo start from these.
    fn default() -> RecordConfig {
        RecordConfig {
            symbols: vec![Symbol::new("ETHUSDT").expect("a valid symbol")],
            depth: Depth::Partial(5),
            speed: Speed::Ms100,
            streams: Selection::default(),
            market: Market::UsdM,
            endpoint: default_endpoint(Market::UsdM),
            market_endpoint: None,
            rest_endpoint: Market::UsdM.rest_endpoint().into(),
            data_dir: PathBuf::from("data"),
            run_for: None,
            // The seed's SUMMARY interval.
            print_every: Duration::from_secs(10),
            // Twenty of the slowest depth stream's 500 ms pushes: far past a quiet spell.
            stale_after: Duration::from_secs(10),
            // Binance pings every 3 min; our own ping finds a dead peer nine times sooner.
            ping_every: Duration::from_secs(20),
            max_conn_age: DEFAULT_MAX_CONN_AGE,
            // An hour per file, aligned to UTC hours: 720 files per symbol a month.
            file_period: Duration::from_secs(3600),
            // Bounds what a kill can cost: the last second.
            flush_every: Duration::from_secs(1),
            queue: Budget {
                // A fifth of the 256 MB the whole process keeps to: the writer holds up to
                // 48 MiB more (its sinks' lines and the compression stage's), and 500 symbols
                // with every stream peaked at 258 MB in a 10x burst with 64 MiB here (390 MB
                // with 128 MiB). The 1M-frame burst peaks under 30 MiB (scripts/bench.sh burst).
                bytes: DEFAULT_QUEUE_BYTES,
                // Only a safety net: at 200-odd bytes of overhead per event, the byte budget binds
                // long before a million events.
                events: DEFAULT_QUEUE_EVENTS,
            },
            // On real lines 4.97x at 179 MiB/s, against level 6's 5.34x at 65 MiB/s (bench hot).
            gzip_level: 3,
            metrics_addr: None,
            tap: None,
            universe: None,
            nats: None,
        }
    }
}

impl RecordConfig {
    /// `<data-dir>/order_book`.
    pub fn book_dir(&self) -> PathBuf {
        book_dir(&self.data_dir)
    }

    /// Where the streams of `route` are read. `--endpoint` is the public route; the market
    /// route is `--market-endpoint` when given, else `--endpoint` with its `/public` route
    /// swapped for `/market` (Binance's own endpoints), else `--endpoint` plus `/market` when it
    /// names no path at all (`obrec sim`, `obrec serve`, which route as Binance does), else
    /// `--endpoint` itself: a proxy that serves every stream on one URL.
    pub fn route_endpoint(&self, route: Route) -> String {
        let public = self.endpoint.trim_end_matches('/');
        if route == Route::Public {
            return public.to_string();
        }
        if let Some(market) = &self.market_endpoint {
            return market.trim_end_matches('/').to_string();
        }
        if let Some(root) = public.strip_suffix("/public") {
            return format!("{root}/market");
        }
        let has_path = public
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains('/'));
        if has_path {
            public.to_string()
        } else {
            format!("{public}/market")
        }
    }

    /// The route a kind's streams are served on: a market without routes serves every kind where
    /// it serves depth.
    fn route_of(&self, kind: Kind) -> Route {
        if self.market.routed() {
            kind.route()
        } else {
            Route::Public
        }
    }

    /// Every subscription of the run, with its route: per symbol its depth stream (when
    /// recorded), then its kinds; streams beside the book numbered in that order.
    fn subscriptions(&self) -> Vec<(Route, Subscription)> {
        let per_symbol = self.streams.kinds.len();
        self.symbols
            .iter()
            .enumerate()
            .flat_map(|(id, symbol)| self.symbol_subscriptions(symbol, id, id * per_symbol))
            .collect()
    }

    /// One symbol's subscriptions, with their routes: its depth stream (when recorded), then its
    /// kinds, numbered from `first_stream`.
    fn symbol_subscriptions(
        &self,
        symbol: &Symbol,
        symbol_id: SymbolId,
        first_stream: StreamId,
    ) -> Vec<(Route, Subscription)> {
        let depth = self.streams.depth.then(|| {
            (
                Route::Public,
                Subscription {
                    symbol: symbol.clone(),
                    target: Target::Depth(symbol_id),
                    kind: None,
                    stream: depth_stream(symbol, self.depth, self.speed),
                },
            )
        });
        let kinds = self.streams.kinds.iter().enumerate().map(|(i, &kind)| {
            (
                self.route_of(kind),
                Subscription {
                    symbol: symbol.clone(),
                    target: Target::Stream(first_stream + i),
                    kind: Some(kind),
                    stream: kind.stream(symbol),
                },
            )
        });
        depth.into_iter().chain(kinds).collect()
    }

    /// Every stream name the run subscribes, for a tap to serve.
    pub fn stream_names(&self) -> Vec<String> {
        self.subscriptions()
            .into_iter()
            .map(|(_, sub)| sub.stream)
            .collect()
    }

    /// The streams beside the book, in stream id order.
    fn stream_files(&self) -> Vec<StreamFiles> {
        self.symbols
            .iter()
            .flat_map(|symbol| self.symbol_stream_files(symbol))
            .collect()
    }

    /// One symbol's streams beside the book, in stream id order.
    fn symbol_stream_files(&self, symbol: &Symbol) -> Vec<StreamFiles> {
        self.streams
            .kinds
            .iter()
            .map(|&kind| StreamFiles {
                symbol: symbol.clone(),
                kind,
                stream: kind.stream(symbol),
            })
            .collect()
    }

    /// How a symbol's depth and snapshots are laid out on disk.
    fn symbol_files(&self, symbol: &Symbol) -> SymbolFiles {
        SymbolFiles {
            symbol: symbol.clone(),
            stream: depth_stream(symbol, self.depth, self.speed),
        }
    }

    /// Creates the output directory, proves it writable and makes this process its only recorder
    /// ([`lock::hold`]), before anything else is written: a refused second recorder must not
    /// even start its log files. The lock is what [`run`] records under.
    pub fn preflight(&self) -> Result<DirLock> {
        let dir = self.book_dir();
        let unusable = |e: std::io::Error| {
            Error::Invalid(format!("data dir {} is not writable: {e}", dir.display()))
        };
        fs::create_dir_all(&dir).map_err(unusable)?;
        let probe = dir.join(".obrec-write-test");
        fs::write(&probe, b"").map_err(unusable)?;
        fs::remove_file(&probe).map_err(unusable)?;
        lock::hold(&dir)
    }
}

/// Records into the directory `lock` holds (from [`RecordConfig::preflight`]) until the token
/// triggers or `run_for` passes; returns the final report.
pub fn run(config: &RecordConfig, lock: &DirLock, shutdown: &Shutdown) -> Result<Report> {
    let dir = lock.book_dir().to_path_buf();
    staged::remove_stale_temps(&dir);
    let files: Vec<SymbolFiles> = config
        .symbols
        .iter()
        .map(|s| config.symbol_files(s))
        .collect();
    let streams = config.stream_files();
    let own: Vec<String> = config
        .symbols
        .iter()
        .flat_map(|s| [series(s, FileKind::Depth), series(s, FileKind::Snapshot)])
        .chain(
            streams
                .iter()
                .map(|s| series(&s.symbol, FileKind::Stream(s.kind))),
        )
        .collect();
    // A crash leaves .part files: finish them before new ones are started.
    if let Err(e) = salvage::salvage_dir(&dir, &own) {
        log::error!("crash recovery stopped: {e}");
    }
    // One connection group per route and up to MAX_STREAMS_PER_CONNECTION streams.
    let subs = config.subscriptions();
    let groups: Vec<(Route, Vec<Subscription>)> = Route::ALL
        .into_iter()
        .flat_map(|route| {
            let of_route: Vec<Subscription> = subs
                .iter()
                .filter(|(r, _)| *r == route)
                .map(|(_, sub)| sub.clone())
                .collect();
            of_route
                .chunks(MAX_STREAMS_PER_CONNECTION)
                .map(|chunk| (route, chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    let labels = groups
        .iter()
        .map(|(_, subs)| subs[0].stream.clone())
        .collect();
    let names = files.iter().map(|f| f.stream.clone()).collect();
    let mut stats = Stats::new(names, labels)
        .with_streams(
            streams
                .iter()
                .map(|s| (s.stream.clone(), s.symbol.to_string(), s.kind)),
        )
        .with_tap(config.tap.as_ref().map(|tee| Arc::clone(tee.stats())))
        .with_nats(config.nats.clone());
    if config.universe.is_some() {
        stats = stats.with_universe(config.symbols.len());
    }
    let stats = Arc::new(stats);
    let console = Console::start()?;
    let exporter = match &config.metrics_addr {
        Some(addr) => {
            let exporter = Exporter::start(
                addr,
                Arc::clone(&stats),
                config.stale_after,
                shutdown.clone(),
            )?;
            console.printer().print(format!(
                "metrics on http://{}/metrics",
                exporter.local_addr()
            ));
            log::info!("metrics on http://{}/metrics", exporter.local_addr());
            Some(exporter)
        }
        None => None,
    };
    let (tx, rx) = budget::handoff(config.queue, Arc::clone(&stats), shutdown.clone());

    let writer = Writer::new(
        WriterConfig {
            dir,
            symbols: files,
            streams,
            file_period: config.file_period,
            flush_every: config.flush_every,
            print_every: config.print_every,
            gzip_level: config.gzip_level,
            relay: config.nats.clone(),
        },
        Arc::clone(&stats),
        console.printer().clone(),
    )?;
    let writer = thread::Builder::new()
        .name("writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| Error::Spawn("writer", e))?;

    let numbers = Arc::new(ConnNumbers::open(&config.book_dir())?);
    // Diff depth needs REST snapshots and aggTrade gaps are backfilled from REST: one fetcher
    // thread serves every group.
    let snapshots = config.depth == Depth::Diff && config.streams.depth;
    let backfills = config.streams.kinds.contains(&Kind::AggTrade);
    let (snapshot_tx, snapshot_rx) = crossbeam_channel::unbounded();
    let (backfill_tx, backfill_rx) = crossbeam_channel::unbounded();
    let fetcher = if snapshots || backfills {
        let worker = Fetcher::new(
            config.market,
            config.rest_endpoint.clone(),
            Arc::clone(&stats),
        );
        let token = shutdown.clone();
        let handle = thread::Builder::new()
            .name("rest".into())
            .spawn(move || worker.run(snapshot_rx, backfill_rx, token))
            .map_err(|e| Error::Spawn("rest", e))?;
        Some(handle)
    } else {
        None
    };
    let spawner = Readers {
        config: config.clone(),
        numbers,
        tx,
        stats: Arc::clone(&stats),
        shutdown: shutdown.clone(),
        snapshots: snapshots.then_some(snapshot_tx),
        backfills: backfills.then_some(backfill_tx),
    };
    let mut readers = Vec::new();
    let mut placed = Vec::new();
    for (n, (route, chunk)) in groups.into_iter().enumerate() {
        let (changes_tx, changes) = crossbeam_channel::unbounded();
        let streams: Vec<(Symbol, String)> = chunk
            .iter()
            .map(|s| (s.symbol.clone(), s.stream.clone()))
            .collect();
        let changes = config.universe.is_some().then_some(changes);
        match spawner.spawn(n, route, chunk, changes) {
            Ok(handle) => readers.push(handle),
            Err(e) => {
                shutdown.trigger();
                log::error!("{e}");
                break;
            }
        }
        placed.push(universe::Placed::new(route, changes_tx, streams));
    }
    // The groups (and, with `--symbol all`, the universe watch) hold the only senders to the
    // writer and the fetcher: once they have all gone, the writer and the fetcher end.
    let watch = match &config.universe {
        Some(universe) => match universe::Watch::start(universe, spawner, placed) {
            Ok(watch) => Some(watch),
            Err(e) => {
                shutdown.trigger();
                log::error!("{e}");
                None
            }
        },
        None => {
            drop(spawner);
            None
        }
    };
    let readers_count = readers.len();
    log::info!(
        "recording {} symbol(s) over {} connection group(s) to {}",
        config.symbols.len(),
        readers_count,
        config.book_dir().display()
    );

    wait(config.run_for, shutdown, &writer, fetcher.as_ref());
    shutdown.trigger();
    if let Some(watch) = watch {
        readers.extend(watch.join());
    }
    let mut never_connected = None;
    for reader in readers {
        match reader.join() {
            Ok(Ok(())) => {}
            // Each failed attempt was logged already; main prints this once.
            Ok(Err(e)) => {
                never_connected.get_or_insert(e);
            }
            Err(_) => log::error!("a reader thread panicked"),
        }
    }
    if let Some(exporter) = exporter {
        exporter.join();
    }
    // Without the fetcher a diff-depth run cannot sync its books, nor an aggTrade run close its
    // gaps: a fetcher that died ends the run with exit 1, for the supervisor to restart it.
    let fetcher_died = fetcher.is_some_and(|f| f.join().is_err());
    if fetcher_died {
        log::error!("the REST thread panicked");
    }
    let report = writer.join().unwrap_or(Err(Error::Thread("writer")));
    // The supervisor restarts us on exit 1; the log file says why, and so does main, once, on
    // stderr (which a warning would reach too).
    let report = report.inspect_err(|e| log::info!("writer stopped: {e}"));
    if let Ok(report) = &report {
        console.printer().print(report.summary_line());
        log::info!("final {}", report.summary_line());
    }
    console.finish();
    let report = report?;
    if fetcher_died {
        return Err(Error::Thread("rest"));
    }
    never_connected.map_or(Ok(report), Err)
}

/// What starting a reader group takes: shared by the start of the run and, with `--symbol all`,
/// the universe watch, which opens a group when a listing finds the others full.
struct Readers {
    config: RecordConfig,
    /// Numbers the groups' connections.
    numbers: Arc<ConnNumbers>,
    /// To the writer.
    tx: Inlet,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    /// Diff depth: where the groups ask for snapshots.
    snapshots: Option<crossbeam_channel::Sender<snapshot::SnapshotRequest>>,
    /// aggTrade: where the groups ask for backfills.
    backfills: Option<crossbeam_channel::Sender<backfill::BackfillRequest>>,
}

impl Readers {
    /// Starts the thread of group `index` (its slot in `Stats::groups`), reading `subs` on
    /// `route`; with `changes`, the group follows listings and delistings.
    fn spawn(
        &self,
        index: usize,
        route: Route,
        subs: Vec<Subscription>,
        changes: Option<crossbeam_channel::Receiver<Change>>,
    ) -> Result<thread::JoinHandle<Result<()>>> {
        let feed = FeedConfig {
            endpoint: self.config.route_endpoint(route),
            continuity: self.config.market.continuity(self.config.depth),
            stale_after: self.config.stale_after,
            ping_every: self.config.ping_every,
            max_conn_age: self.config.max_conn_age,
            numbers: Arc::clone(&self.numbers),
            change_gap: feed::change_gap(self.config.market),
        };
        let mut group = Group::new(
            index,
            feed,
            subs,
            self.tx.clone(),
            Arc::clone(&self.stats),
            self.shutdown.clone(),
        );
        if let Some(requests) = &self.snapshots {
            group = group.with_snapshots(requests.clone());
        }
        if let Some(requests) = &self.backfills {
            group = group.with_backfills(requests.clone());
        }
        if let Some(tee) = &self.config.tap {
            group = group.with_tee(tee.clone());
        }
        if let Some(changes) = changes {
            group = group.with_changes(changes);
        }
        thread::Builder::new()
            .name(format!("reader-{}", index + 1))
            .spawn(move || group.run())
            .map_err(|e| Error::Spawn("reader", e))
    }
}

/// Returns when the token triggers, `run_for` passes, or the writer or the REST fetcher stopped
/// on its own (a file error, a panic).
fn wait(
    run_for: Option<Duration>,
    shutdown: &Shutdown,
    writer: &thread::JoinHandle<Result<Report>>,
    fetcher: Option<&thread::JoinHandle<()>>,
) {
    /// How often the writer thread is checked for an early end.
    const CHECK: Duration = Duration::from_millis(200);
    let deadline = run_for.map(|d| Instant::now() + d);
    loop {
        let slice = deadline.map_or(CHECK, |d| {
            d.saturating_duration_since(Instant::now()).min(CHECK)
        });
        if shutdown.wait_timeout(slice)
            || writer.is_finished()
            || fetcher.is_some_and(thread::JoinHandle::is_finished)
        {
            return;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            log::info!("run time reached");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_is_read_where_binance_serves_it() {
        let with = |endpoint: &str, market: Option<&str>| RecordConfig {
            endpoint: endpoint.into(),
            market_endpoint: market.map(String::from),
            ..RecordConfig::default()
        };
        let cases = [
            // Binance's own endpoints: the routes side by side.
            (
                with(&default_endpoint(Market::UsdM), None),
                "wss://fstream.binance.com/public",
                "wss://fstream.binance.com/market",
            ),
            // The sim and serve at their root route as Binance does.
            (
                with("ws://127.0.0.1:9000", None),
                "ws://127.0.0.1:9000",
                "ws://127.0.0.1:9000/market",
            ),
            (
                with("ws://127.0.0.1:9000/", None),
                "ws://127.0.0.1:9000",
                "ws://127.0.0.1:9000/market",
            ),
            // A proxy that serves every stream on one URL.
            (
                with("ws://proxy:8080/binance", None),
                "ws://proxy:8080/binance",
                "ws://proxy:8080/binance",
            ),
            (
                with("ws://a/public", Some("ws://b/market/")),
                "ws://a/public",
                "ws://b/market",
            ),
        ];
        for (config, public, market) in cases {
            assert_eq!(config.route_endpoint(Route::Public), public);
            assert_eq!(config.route_endpoint(Route::Market), market, "{config:?}");
        }
    }

    #[test]
    fn subscriptions_put_each_kind_on_its_route_and_number_the_streams() {
        let config = RecordConfig {
            symbols: vec![
                Symbol::new("BTCUSDT").unwrap(),
                Symbol::new("ETHUSDT").unwrap(),
            ],
            streams: "depth,aggTrade,trade".parse().unwrap(),
            ..RecordConfig::default()
        };
        let subs: Vec<(Route, String, Target)> = config
            .subscriptions()
            .into_iter()
            .map(|(route, s)| (route, s.stream, s.target))
            .collect();
        assert_eq!(
            subs,
            [
                (
                    Route::Public,
                    "btcusdt@depth5@100ms".into(),
                    Target::Depth(0)
                ),
                (Route::Market, "btcusdt@aggTrade".into(), Target::Stream(0)),
                (Route::Public, "btcusdt@trade".into(), Target::Stream(1)),
                (
                    Route::Public,
                    "ethusdt@depth5@100ms".into(),
                    Target::Depth(1)
                ),
                (Route::Market, "ethusdt@aggTrade".into(), Target::Stream(2)),
                (Route::Public, "ethusdt@trade".into(), Target::Stream(3)),
            ]
        );
        let files = config.stream_files();
        assert_eq!(files.len(), 4);
        assert_eq!(files[3].stream, "ethusdt@trade");
    }
}
