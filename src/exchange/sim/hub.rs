//! Symbols, subscriptions and the event pump.
//!
//! Each symbol's feed advances on its own thread at the configured rate. Under the symbol's lock
//! an event is generated, its payloads (a depth event, and the trades, best prices, mark price
//! and liquidation it brought) encoded once per (stream, envelope) and queued to every
//! subscriber in the same order. Doing all of that under one lock is what gives the guarantees clients rely on:
//! overlapping connections see identical ids, a new subscriber starts at the next event, no frame
//! follows an UNSUBSCRIBE acknowledgement, and a REST snapshot is exactly the state after the
//! latest event.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError, select};

use super::conn::{Link, Outbound};
use super::faults::Injector;
use super::generator::{Feed, View, Withhold};
use super::http::{self, Reply};
use super::listing::Calendar;
use super::server::Shared;
use super::source::{Refusal, Source};
use super::wire::DataFrame;
use super::{Rate, lock};
use crate::market::venue::Market;
use crate::util::clock::wall_ms;

/// How often a `--rate max` pump with no subscriber looks again: it generates nothing meanwhile,
/// since "as fast as the sockets take" means nothing without a socket.
const IDLE_POLL: Duration = Duration::from_millis(5);
/// A paced pump this far behind schedule (slow box, stopped process) resets its schedule
/// instead of bursting to catch up.
const MAX_LAG: Duration = Duration::from_secs(1);

/// One connection's interest in one stream.
struct Subscriber {
    link: Arc<Link>,
    stream: Arc<str>,
    view: View,
}

struct SymbolState {
    feed: Box<dyn Feed>,
    /// Events generated so far, dropped ones included (the depth gap fault counts them).
    events: u64,
    subscribers: Vec<Subscriber>,
    /// Reused buffer for the rendered payloads of one event.
    scratch: Vec<u8>,
}

struct Symbol {
    /// Upper case, as payloads and REST spell it.
    name: Arc<str>,
    /// Lower case, as stream names spell it.
    lower: String,
    state: Mutex<SymbolState>,
    /// Threads other than the pump waiting for `state`. A max-rate pump relocks the moment it
    /// unlocks, so it lets them in first; otherwise REST and SUBSCRIBE could starve.
    waiting: AtomicUsize,
}

impl Symbol {
    /// Locks the state for a REST request or a subscription change.
    fn lock(&self) -> MutexGuard<'_, SymbolState> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let guard = lock(&self.state);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        guard
    }
}

/// Every served symbol with its feed and subscribers: the sim's [`Source`].
pub(crate) struct Hub {
    symbols: Vec<Symbol>,
    rate: Rate,
    /// Which symbols trade now: the others generate and send nothing.
    calendar: Calendar,
    /// The market the sim plays: its paths, routes and REST endpoints.
    market: Market,
    /// Connections cut because their queue overflowed at a fixed rate.
    slow_clients: AtomicU64,
}

/// What became of one queued frame.
enum Delivery {
    Queued,
    /// The connection is gone or too slow: forget the subscriber.
    Gone,
    /// The sim is stopping.
    Stopping,
}

impl Hub {
    pub(crate) fn new(
        feeds: Vec<Box<dyn Feed>>,
        rate: Rate,
        calendar: Calendar,
        market: Market,
    ) -> Hub {
        let symbols = feeds
            .into_iter()
            .map(|feed| Symbol {
                name: feed.symbol().into(),
                lower: feed.symbol().to_ascii_lowercase(),
                waiting: AtomicUsize::new(0),
                state: Mutex::new(SymbolState {
                    feed,
                    events: 0,
                    subscribers: Vec::new(),
                    scratch: Vec::new(),
                }),
            })
            .collect();
        Hub {
            symbols,
            rate,
            calendar,
            market,
            slow_clients: AtomicU64::new(0),
        }
    }

    fn forget(&self, doomed: impl Fn(&Subscriber) -> bool) {
        for symbol in &self.symbols {
            symbol.lock().subscribers.retain(|s| !doomed(s));
        }
    }
}

impl Source for Hub {
    fn market(&self) -> Market {
        self.market
    }

    /// One pump per symbol.
    fn workers(&self) -> usize {
        self.symbols.len()
    }

    /// Runs symbol `index`'s event loop until the sim stops.
    fn work(&self, index: usize, shared: &Shared) {
        Pump {
            hub: self,
            symbol: &self.symbols[index],
            rate: self.rate,
            injector: &shared.injector,
            stop: &shared.stop,
        }
        .run();
    }

    /// Feeds `stream` to the connection from the next event on. Streams this hub does not
    /// produce (other kinds, other symbols) and muted symbols are simply never fed, which is
    /// what Binance does with a well-formed name it has no data for.
    fn subscribe(&self, shared: &Arc<Shared>, link: &Arc<Link>, streams: &[String]) {
        for stream in streams {
            let Some((symbol, view)) = View::parse(stream) else {
                continue;
            };
            let Some(symbol) = self.symbols.iter().find(|s| s.lower == symbol) else {
                continue;
            };
            if shared.injector.mutes(&symbol.name) {
                continue;
            }
            let subscriber = Subscriber {
                link: Arc::clone(link),
                stream: stream.as_str().into(),
                view,
            };
            symbol.lock().subscribers.push(subscriber);
        }
    }

    fn unsubscribe(&self, conn: u64, stream: &str) {
        self.forget(|s| s.link.id == conn && &*s.stream == stream);
    }

    fn leave(&self, conn: u64) {
        self.forget(|s| s.link.id == conn);
    }

    /// The book after the latest event.
    fn depth(&self, symbol: &str, limit: usize, out: &mut Vec<u8>) -> Result<(), Reply> {
        let Some(symbol) = self.symbols.iter().find(|s| &*s.name == symbol) else {
            return Err(http::error(400, -1121, "Invalid symbol."));
        };
        symbol.lock().feed.snapshot(limit, wall_ms(), out);
        Ok(())
    }

    /// The symbol's latest aggregate trades, those kept off the stream included.
    fn agg_trades(
        &self,
        symbol: &str,
        from_id: u64,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let Some(symbol) = self.symbols.iter().find(|s| &*s.name == symbol) else {
            return Err(Refusal::InvalidSymbol);
        };
        symbol.lock().feed.agg_trades(from_id, limit, out);
        Ok(())
    }

    /// `/fapi/v1/exchangeInfo` (or the market's own): every symbol served, with its status now.
    fn rest(&self, path: &str, _query: &str) -> Option<Reply> {
        (path == self.market.exchange_info_path()).then(|| {
            let names = self.symbols.iter().map(|s| &*s.name);
            (200, self.calendar.exchange_info(names, wall_ms()))
        })
    }

    fn time_ms(&self) -> u64 {
        wall_ms()
    }

    fn slow_clients(&self) -> u64 {
        self.slow_clients.load(Ordering::Relaxed)
    }
}

/// One symbol's event loop and what it needs.
struct Pump<'a> {
    hub: &'a Hub,
    symbol: &'a Symbol,
    rate: Rate,
    injector: &'a Injector,
    stop: &'a Receiver<()>,
}

impl Pump<'_> {
    fn run(&self) {
        let started = Instant::now();
        let mut due = started;
        loop {
            match self.rate.interval() {
                Some(interval) => {
                    due += self.injector.pace(interval, started.elapsed());
                    let now = Instant::now();
                    if now > due + MAX_LAG {
                        due = now;
                    }
                    if self.stop.recv_deadline(due) != Err(RecvTimeoutError::Timeout) {
                        return;
                    }
                }
                None if lock(&self.symbol.state).subscribers.is_empty() => {
                    if self.stop.recv_timeout(IDLE_POLL) != Err(RecvTimeoutError::Timeout) {
                        return;
                    }
                    continue;
                }
                None if self.stop.try_recv() != Err(TryRecvError::Empty) => return,
                None => {}
            }
            // A symbol not listed yet, or delisted, has no events.
            if self.hub.calendar.trades(&self.symbol.name) && !self.publish() {
                return;
            }
            while self.symbol.waiting.load(Ordering::SeqCst) > 0 {
                std::thread::yield_now();
            }
        }
    }

    /// Generates the symbol's next event and queues its frames to every subscriber. False when
    /// stopping.
    fn publish(&self) -> bool {
        let mut guard = lock(&self.symbol.state);
        let state = &mut *guard;
        let withhold = Withhold {
            trade: &|n| self.injector.drops_trade(n),
            aggregate: &|n| self.injector.drops_aggregate(n),
        };
        let header = state.feed.advance(wall_ms(), &withhold);
        state.events += 1;
        let depth_dropped = self.injector.drops_event(state.events);
        if state.subscribers.is_empty() {
            return true;
        }
        // Each view is rendered once and each (stream, envelope) framed once, whatever the
        // number of subscribers.
        state.scratch.clear();
        let mut payloads: Vec<(View, Vec<Range<usize>>)> = Vec::new();
        let mut framed: Vec<(bool, Arc<str>, Vec<Arc<DataFrame>>)> = Vec::new();
        let mut stopping = false;
        state.subscribers.retain(|sub| {
            if stopping || (depth_dropped && matches!(sub.view, View::Depth(_))) {
                return true;
            }
            let combined = sub.link.combined;
            let at = framed
                .iter()
                .position(|(c, stream, _)| *c == combined && *stream == sub.stream);
            let at = at.unwrap_or_else(|| {
                let rendered = payloads.iter().position(|(v, _)| *v == sub.view);
                let rendered = rendered.unwrap_or_else(|| {
                    let mut events = Vec::new();
                    state.feed.render(sub.view, &mut state.scratch, &mut events);
                    payloads.push((sub.view, events));
                    payloads.len() - 1
                });
                let frames = payloads[rendered]
                    .1
                    .iter()
                    .map(|range| {
                        let payload = &state.scratch[range.clone()];
                        let frame = DataFrame::new(
                            &sub.stream,
                            combined,
                            &self.symbol.name,
                            header,
                            payload,
                        );
                        Arc::new(frame)
                    })
                    .collect();
                framed.push((combined, Arc::clone(&sub.stream), frames));
                framed.len() - 1
            });
            for frame in &framed[at].2 {
                match self.deliver(&sub.link, Arc::clone(frame)) {
                    Delivery::Queued => {}
                    Delivery::Gone => return false,
                    Delivery::Stopping => {
                        stopping = true;
                        return true;
                    }
                }
            }
            true
        });
        !stopping
    }

    /// Queues a frame to one connection. At `--rate max` the pump waits for room, so the
    /// slowest subscriber sets the pace; at a fixed rate a full queue means the client is too
    /// slow, and it is dropped the way Binance drops consumers that cannot keep up.
    fn deliver(&self, link: &Link, frame: Arc<DataFrame>) -> Delivery {
        match self.rate {
            Rate::Max => select! {
                send(link.tx, Outbound::Data(frame)) -> sent => match sent {
                    Ok(()) => Delivery::Queued,
                    Err(_) => Delivery::Gone,
                },
                recv(self.stop) -> _ => Delivery::Stopping,
            },
            Rate::PerSecond(_) if link.offer(frame, &self.hub.slow_clients) => Delivery::Queued,
            Rate::PerSecond(_) => Delivery::Gone,
        }
    }
}
