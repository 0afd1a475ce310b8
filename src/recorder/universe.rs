//! `--symbol all`: the exchange's whole listing (`exchangeInfo`, status `TRADING`, through the
//! run's filter), recorded and followed live.
//!
//! At the start [`load_symbols`] reads the listing (a few attempts; a listing that cannot be had
//! is a usage error: the run would not know what to record). Then the watch thread reads it again
//! every `--universe-refresh-sec` and compares it with what is recorded:
//!
//! * a new listing gets ids, counters and file series (the writer is told before any of its
//!   events can come), and its streams go to a group of their route with room (at most
//!   [`MAX_STREAMS_PER_CONNECTION`]), which SUBSCRIBEs them on its live connection at its
//!   requests' pace; when every group is full, a new group opens. No other connection is
//!   touched, so no other symbol has a gap.
//! * a symbol no longer trading (or gone from the listing) is handed to its groups, which
//!   UNSUBSCRIBE it, stop judging it for silence and, after its last event, have the writer
//!   finish its files.
//!
//! Each change is logged and counted (`universe` in `metrics.json`, SUMMARY, Prometheus).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::Readers;
use super::event::{Event, ListedRecord};
use super::feed::{Change, MAX_STREAMS_PER_CONNECTION, Subscription};
use super::snapshot::{self, Failure};
use crate::error::{Error, Result};
use crate::market::kind::Route;
use crate::market::listing::{Filter, MAX_LISTING_BYTES, parse_listing};
use crate::market::symbol::Symbol;
use crate::util::backoff::Backoff;
use crate::util::shutdown::Shutdown;

/// Attempts to read the listing at the start before the run is refused: a passing network fault
/// or a 5xx should not cost a start, a wrong URL should not be retried for long.
const LOAD_ATTEMPTS: u32 = 3;

/// What `--symbol all` records, and how it follows the listing.
#[derive(Clone, Debug)]
pub struct Universe {
    /// `--quote`, `--symbol-pattern`.
    pub filter: Filter,
    /// `--universe-refresh-sec`: how often the listing is read again.
    pub refresh: Duration,
    /// The listing's path on the REST endpoint (`Market::exchange_info_path`).
    pub path: String,
}

impl Universe {
    fn url(&self, rest_endpoint: &str) -> String {
        format!("{}{}", rest_endpoint.trim_end_matches('/'), self.path)
    }
}

/// The listing's symbols that trade and pass the filter, read at the start.
///
/// # Errors
/// [`Error::Invalid`] when the listing cannot be read in [`LOAD_ATTEMPTS`] attempts, or no
/// trading symbol passes the filter.
pub fn load_symbols(rest_endpoint: &str, universe: &Universe) -> Result<Vec<Symbol>> {
    let url = universe.url(rest_endpoint);
    let agent = snapshot::agent();
    let mut backoff = Backoff::new();
    let mut attempt = 1;
    let symbols = loop {
        match fetch(&agent, &url, &universe.filter) {
            Ok(symbols) => break symbols,
            Err(e) if attempt >= LOAD_ATTEMPTS => {
                return Err(Error::Invalid(format!(
                    "cannot read the symbol list at {url}: {e}"
                )));
            }
            Err(e) => {
                let wait = backoff.next_delay();
                log::warn!("symbol list at {url}: {e}; retrying in {wait:?}");
                thread::sleep(wait);
                attempt += 1;
            }
        }
    };
    if symbols.is_empty() {
        return Err(Error::Invalid(format!(
            "no trading symbol at {url} matches {}",
            universe.filter
        )));
    }
    Ok(symbols)
}

/// Reads the listing and selects what the filter admits.
fn fetch(agent: &ureq::Agent, url: &str, filter: &Filter) -> Result<Vec<Symbol>, String> {
    let (body, _, _) = snapshot::get(agent, url, MAX_LISTING_BYTES).map_err(|e| match e {
        Failure::RateLimited(pause) => format!("rate limited for {pause:?}"),
        Failure::Other(e) => e.to_string(),
    })?;
    let listing = parse_listing(&body).map_err(|e| e.to_string())?;
    if listing.unusable > 0 {
        log::debug!(
            "{url}: {} listed name(s) cannot be symbols, skipped",
            listing.unusable
        );
    }
    Ok(filter.select(&listing))
}

/// A reader group as the watch sees it: where its changes go, and how full it is.
pub struct Placed {
    route: Route,
    changes: Sender<Change>,
    /// Streams subscribed on it and not delisted.
    streams: usize,
    /// The streams it started with (symbol, stream name), taken by the watch when it starts.
    initial: Vec<(Symbol, String)>,
}

impl Placed {
    /// A group of the start, reading `streams` (symbol, stream name) on `route`.
    pub fn new(route: Route, changes: Sender<Change>, streams: Vec<(Symbol, String)>) -> Placed {
        Placed {
            route,
            changes,
            streams: streams.len(),
            initial: streams,
        }
    }
}

/// The universe watch thread's handle.
pub struct Watch {
    thread: JoinHandle<Vec<JoinHandle<Result<()>>>>,
}

impl Watch {
    /// Starts following the listing; `groups` are the run's reader groups, in index order.
    ///
    /// # Errors
    /// [`Error::Spawn`] when the thread cannot start.
    pub fn start(universe: &Universe, readers: Readers, mut groups: Vec<Placed>) -> Result<Watch> {
        let mut recorded: BTreeMap<Symbol, Vec<(usize, String)>> = BTreeMap::new();
        for symbol in &readers.config.symbols {
            recorded.insert(symbol.clone(), Vec::new());
        }
        for (index, group) in groups.iter_mut().enumerate() {
            for (symbol, stream) in std::mem::take(&mut group.initial) {
                recorded.entry(symbol).or_default().push((index, stream));
            }
        }
        let follower = Follower {
            url: universe.url(&readers.config.rest_endpoint),
            filter: universe.filter.clone(),
            refresh: universe.refresh,
            shutdown: readers.shutdown.clone(),
            readers,
            groups,
            recorded,
            spawned: Vec::new(),
        };
        let thread = thread::Builder::new()
            .name("universe".into())
            .spawn(move || follower.run())
            .map_err(|e| Error::Spawn("universe", e))?;
        Ok(Watch { thread })
    }

    /// Waits for the watch to stop (at shutdown); returns the reader groups it started.
    pub fn join(self) -> Vec<JoinHandle<Result<()>>> {
        self.thread.join().unwrap_or_else(|_| {
            log::error!("the universe thread panicked");
            Vec::new()
        })
    }
}

/// The watch thread's state.
struct Follower {
    url: String,
    filter: Filter,
    refresh: Duration,
    shutdown: Shutdown,
    readers: Readers,
    groups: Vec<Placed>,
    /// Each recorded symbol's streams: the group that reads each, and its name.
    recorded: BTreeMap<Symbol, Vec<(usize, String)>>,
    /// Groups this thread started, joined with the others at the end.
    spawned: Vec<JoinHandle<Result<()>>>,
}

impl Follower {
    fn run(mut self) -> Vec<JoinHandle<Result<()>>> {
        let agent = snapshot::agent();
        while !self.shutdown.wait_timeout(self.refresh) {
            match fetch(&agent, &self.url, &self.filter) {
                // An empty selection is far likelier a bad answer than a market that closed:
                // nothing is finished on its word.
                Ok(symbols) if symbols.is_empty() => {
                    log::warn!(
                        "symbol list at {}: nothing matches {}; keeping the {} recorded",
                        self.url,
                        self.filter,
                        self.recorded.len()
                    );
                }
                Ok(symbols) => {
                    if !self.follow(symbols) {
                        break;
                    }
                }
                Err(e) => log::warn!("symbol list at {}: {e}; trying again later", self.url),
            }
        }
        self.spawned
    }

    /// Records what `symbols` lists and is not recorded, finishes what is recorded and no longer
    /// listed. False when the run is ending.
    fn follow(&mut self, symbols: Vec<Symbol>) -> bool {
        let gone: Vec<Symbol> = self
            .recorded
            .keys()
            .filter(|s| !symbols.contains(s))
            .cloned()
            .collect();
        for symbol in gone {
            self.delist(&symbol);
        }
        for symbol in symbols {
            if !self.recorded.contains_key(&symbol) && !self.list(symbol) {
                return false;
            }
        }
        true
    }

    fn delist(&mut self, symbol: &Symbol) {
        let Some(streams) = self.recorded.remove(symbol) else {
            return;
        };
        let mut by_group: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (group, stream) in streams {
            by_group.entry(group).or_default().push(stream);
        }
        for (group, streams) in by_group {
            let placed = &mut self.groups[group];
            placed.streams = placed.streams.saturating_sub(streams.len());
            // A group that has ended needs no change.
            let _ = placed.changes.send(Change::Unsubscribe(streams));
        }
        if let Some(universe) = &self.readers.stats.universe {
            universe.delisted.fetch_add(1, Ordering::Relaxed);
            universe.symbols.fetch_sub(1, Ordering::Relaxed);
        }
        log::warn!("delisted: {symbol} no longer trades; its files are finished");
    }

    /// False when the run is ending.
    fn list(&mut self, symbol: Symbol) -> bool {
        let config = &self.readers.config;
        let stats = &self.readers.stats;
        let files = config.symbol_files(&symbol);
        let symbol_id = stats.add_symbol(files.stream.clone());
        let streams = config.symbol_stream_files(&symbol);
        let first_stream = stats.streams.count();
        for s in &streams {
            stats.add_stream(s.stream.clone(), symbol.to_string(), s.kind);
        }
        let listed = Event::Listed(ListedRecord {
            symbol_id,
            symbol: files,
            first_stream,
            streams,
        });
        // Before any event of it can reach the writer: the groups subscribe after this.
        if !self.send(listed) {
            return false;
        }
        let subs = config.symbol_subscriptions(&symbol, symbol_id, first_stream);
        let mut placed_on = Vec::new();
        for route in Route::ALL {
            let of_route: Vec<Subscription> = subs
                .iter()
                .filter(|(r, _)| *r == route)
                .map(|(_, sub)| sub.clone())
                .collect();
            if of_route.is_empty() {
                continue;
            }
            let names: Vec<String> = of_route.iter().map(|s| s.stream.clone()).collect();
            match self.place(route, of_route) {
                Some(group) => {
                    placed_on.push(group + 1);
                    self.recorded
                        .entry(symbol.clone())
                        .or_default()
                        .extend(names.into_iter().map(|n| (group, n)));
                }
                None => return false,
            }
        }
        self.recorded.entry(symbol.clone()).or_default();
        if let Some(universe) = &self.readers.stats.universe {
            universe.listed.fetch_add(1, Ordering::Relaxed);
            universe.symbols.fetch_add(1, Ordering::Relaxed);
        }
        log::warn!("listed: {symbol} trades now; subscribing it on group(s) {placed_on:?}");
        true
    }

    /// Hands `subs` (one route's) to a group of that route with room, or to a new group; the
    /// group's index, `None` when no group could take them.
    fn place(&mut self, route: Route, subs: Vec<Subscription>) -> Option<usize> {
        let room = self
            .groups
            .iter()
            .position(|g| g.route == route && g.streams + subs.len() <= MAX_STREAMS_PER_CONNECTION);
        if let Some(group) = room {
            let placed = &mut self.groups[group];
            placed.streams += subs.len();
            if placed.changes.send(Change::Subscribe(subs)).is_ok() {
                return Some(group);
            }
            log::error!("group {} has stopped: a listing is not recorded", group + 1);
            return None;
        }
        let stats = &self.readers.stats;
        let index = stats.add_group(subs[0].stream.clone());
        let (changes_tx, changes) = crossbeam_channel::unbounded();
        let streams = subs.len();
        match self.readers.spawn(index, route, subs, Some(changes)) {
            Ok(handle) => {
                self.spawned.push(handle);
                self.groups.push(Placed {
                    route,
                    changes: changes_tx,
                    streams,
                    initial: Vec::new(),
                });
                log::info!(
                    "group {} opened for a listing: the others are full",
                    index + 1
                );
                Some(index)
            }
            Err(e) => {
                log::error!("{e}: a listing is not recorded");
                None
            }
        }
    }

    /// Hands the writer `event`, waiting for room in the hand-off's budget. False once the writer
    /// has gone.
    fn send(&self, event: Event) -> bool {
        self.readers.tx.send(event).is_ok()
    }
}
