//! The hand-off between the reader groups and the writer, bounded by the bytes it holds rather
//! than by a count of events, and lossless: a reader that finds the budget spent waits for the
//! writer instead of dropping the event.
//!
//! Each event is charged when a reader hands it over ([`Event::cost`]: its frame's bytes and a
//! fixed overhead) and released once the writer has encoded it. While a reader waits, its socket
//! goes unread: TCP flow control then holds the exchange's sends back in the kernel buffers of
//! both ends, so a burst the socket delivers is recorded whole, late rather than lost, in memory
//! bounded by the budget. A wait that lasts (a disk stalled for minutes) ends with Binance
//! cutting the client that stopped reading; the group reconnects and the chain reports the
//! reconnect gap as for any lost connection, never a silent loss.
//!
//! A waiting reader looks at the shutdown token every [`WAIT_SLICE`] and never waits forever:
//! once the token triggers, the event in its hands is admitted past the budget (a stopping reader
//! hands over that one and the backfills it still waits for, so the overshoot is small), and once
//! the writer has gone ([`Outlet`] dropped) it is told so at once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::metrics::Stats;
use crate::recorder::event::Event;
use crate::util::shutdown::Shutdown;

/// How long a waiting reader sleeps before it looks at the shutdown token again: a signal handler
/// can only set the token's flag, not wake this wait.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// The bounds of the hand-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Bytes of events in flight (their [`Event::cost`]): what bounds the process's memory.
    pub bytes: usize,
    /// Events in flight: a safety cap behind `bytes`, which the fixed per-event overhead already
    /// makes bind first for any realistic frame.
    pub events: usize,
}

/// The writer has gone: nothing more can be recorded.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

/// What is in flight, under the lock.
#[derive(Debug, Default)]
struct InFlight {
    /// Sum of the costs of the events handed over and not yet released.
    bytes: usize,
    /// Events handed over and not yet released.
    events: usize,
    /// Readers waiting for room: a release wakes them only when there are some, which keeps the
    /// writer's releases free of system calls in the common case.
    waiting: usize,
    /// The writer has gone; waiting readers give up.
    closed: bool,
}

/// The shared account of bytes in flight between the readers and the writer.
struct ByteBudget {
    /// The bounds, fixed for the run.
    limit: Budget,
    /// What is in flight now.
    state: Mutex<InFlight>,
    /// Signalled when the writer releases room or goes away, for readers waiting.
    freed: Condvar,
    /// Where the figures are published for `metrics.json` and `/metrics`.
    stats: Arc<Stats>,
}

impl ByteBudget {
    fn lock(&self) -> MutexGuard<'_, InFlight> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an event of `cost` fits now. An event alone in flight always fits, even one larger
    /// than the budget: otherwise it could never be admitted.
    fn fits(&self, state: &InFlight, cost: usize) -> bool {
        state.events == 0
            || (state.bytes + cost <= self.limit.bytes && state.events < self.limit.events)
    }

    /// Charges `cost`, first waiting for room while the token has not triggered.
    fn acquire(&self, cost: usize, shutdown: &Shutdown) -> Result<(), Closed> {
        let mut state = self.lock();
        if !self.fits(&state, cost) {
            let started = Instant::now();
            state.waiting += 1;
            while !state.closed && !self.fits(&state, cost) && !shutdown.is_triggered() {
                state = match self.freed.wait_timeout(state, WAIT_SLICE) {
                    Ok((state, _)) => state,
                    Err(e) => e.into_inner().0,
                };
            }
            state.waiting -= 1;
            let waited = started.elapsed().as_nanos() as u64;
            self.stats
                .queue
                .blocked_ns
                .fetch_add(waited, Ordering::Relaxed);
        }
        if state.closed {
            return Err(Closed);
        }
        state.bytes += cost;
        state.events += 1;
        let queue = &self.stats.queue;
        queue.bytes.store(state.bytes as u64, Ordering::Relaxed);
        queue
            .peak_bytes
            .fetch_max(state.bytes as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Returns `bytes` over `events` to the budget and wakes the readers waiting for it.
    fn release(&self, bytes: usize, events: usize) {
        let mut state = self.lock();
        state.bytes = state.bytes.saturating_sub(bytes);
        state.events = state.events.saturating_sub(events);
        self.stats
            .queue
            .bytes
            .store(state.bytes as u64, Ordering::Relaxed);
        if state.waiting > 0 {
            self.freed.notify_all();
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.freed.notify_all();
    }
}

/// Makes the hand-off: a reader's end for each group to clone, and the writer's end.
pub fn handoff(limit: Budget, stats: Arc<Stats>, shutdown: Shutdown) -> (Inlet, Outlet) {
    stats
        .queue
        .budget_bytes
        .store(limit.bytes as u64, Ordering::Relaxed);
    let budget = Arc::new(ByteBudget {
        limit,
        state: Mutex::new(InFlight::default()),
        freed: Condvar::new(),
        stats,
    });
    // Unbounded as a channel: the budget is the bound, counting events as well as bytes.
    let (tx, rx) = crossbeam_channel::unbounded();
    let inlet = Inlet {
        tx,
        budget: Arc::clone(&budget),
        shutdown,
    };
    (inlet, Outlet { rx, budget })
}

/// A reader's end of the hand-off.
#[derive(Clone)]
pub struct Inlet {
    /// The channel to the writer.
    tx: Sender<Event>,
    /// The account every send is charged to.
    budget: Arc<ByteBudget>,
    /// Ends a wait for room: a stopping reader hands over what it holds and stops reading.
    shutdown: Shutdown,
}

impl Inlet {
    /// Hands `event` to the writer, waiting while the budget is spent. Fails only once the writer
    /// has gone.
    pub fn send(&self, event: Event) -> Result<(), Closed> {
        let cost = event.cost();
        self.budget.acquire(cost, &self.shutdown)?;
        self.tx.send(event).map_err(|_| {
            self.budget.release(cost, 1);
            Closed
        })
    }
}

/// The writer's end of the hand-off. Dropping it tells waiting readers the writer has gone.
pub struct Outlet {
    /// The channel from the readers.
    rx: Receiver<Event>,
    /// The account the writer's releases go to.
    budget: Arc<ByteBudget>,
}

impl Outlet {
    pub fn receiver(&self) -> &Receiver<Event> {
        &self.rx
    }

    /// The writer is done with `events` events that cost `bytes` in all.
    pub fn release(&self, bytes: usize, events: usize) {
        if events > 0 {
            self.budget.release(bytes, events);
        }
    }
}

impl Drop for Outlet {
    fn drop(&mut self) {
        self.budget.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::event::SnapshotRecord;

    /// An event whose cost is `body` bytes more than an empty one's.
    fn event(body: usize) -> Event {
        Event::Snapshot(SnapshotRecord {
            symbol: 0,
            recv_ns: 0,
            last_update_id: 0,
            body: "x".repeat(body),
        })
    }

    fn pair(bytes: usize, events: usize) -> (Inlet, Outlet, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let (inlet, outlet) = handoff(
            Budget { bytes, events },
            Arc::clone(&stats),
            Shutdown::new(),
        );
        (inlet, outlet, stats)
    }

    /// Whether a send of `event` returns within a few wait slices.
    fn sends_at_once(inlet: &Inlet, event: Event) -> bool {
        let inlet = inlet.clone();
        let sender = std::thread::spawn(move || inlet.send(event));
        let deadline = Instant::now() + 4 * WAIT_SLICE;
        while !sender.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let finished = sender.is_finished();
        if finished {
            assert_eq!(sender.join().unwrap(), Ok(()));
        }
        finished
    }

    #[test]
    fn what_fits_is_admitted_and_what_does_not_waits() {
        let unit = event(0).cost();
        // (budget bytes, budget events, costs already in flight, cost offered, admitted at once)
        let cases = [
            (10 * unit, 100, vec![], unit, true),
            (10 * unit, 100, vec![9 * unit], unit, true),
            (10 * unit, 100, vec![9 * unit], unit + 1, false),
            // Alone, an event larger than the whole budget still goes: it could never fit.
            (unit, 100, vec![], 5 * unit, true),
            (unit, 100, vec![unit], unit, false),
            // The count cap binds on its own.
            (100 * unit, 2, vec![unit, unit], unit, false),
            (100 * unit, 3, vec![unit, unit], unit, true),
        ];
        for (bytes, events, held, offered, admitted) in cases {
            let (inlet, _outlet, _) = pair(bytes, events);
            for cost in held {
                inlet.send(event(cost - unit)).unwrap();
            }
            let shown = format!("{bytes} {events} {offered}");
            assert_eq!(
                sends_at_once(&inlet, event(offered - unit)),
                admitted,
                "{shown}"
            );
        }
    }

    #[test]
    fn a_waiting_reader_goes_on_once_the_writer_releases_and_its_wait_is_counted() {
        let unit = event(0).cost();
        let (inlet, outlet, stats) = pair(2 * unit, 100);
        inlet.send(event(0)).unwrap();
        inlet.send(event(0)).unwrap();
        let waiting = inlet.clone();
        let sender = std::thread::spawn(move || waiting.send(event(0)));
        std::thread::sleep(2 * WAIT_SLICE);
        assert!(!sender.is_finished(), "the budget is spent");
        let taken = outlet.receiver().recv().unwrap();
        outlet.release(taken.cost(), 1);
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert!(stats.queue.blocked_ns.load(Ordering::Relaxed) > 0);
        assert_eq!(
            stats.queue.peak_bytes.load(Ordering::Relaxed),
            2 * unit as u64
        );
        assert_eq!(stats.queue.bytes.load(Ordering::Relaxed), 2 * unit as u64);
        assert_eq!(
            stats.queue.budget_bytes.load(Ordering::Relaxed),
            2 * unit as u64
        );
        // Nothing was lost on the way: all three are in the channel or taken.
        assert_eq!(outlet.receiver().len(), 2);
    }

    #[test]
    fn shutdown_admits_a_waiting_reader_past_the_budget() {
        let stats = Arc::new(Stats::default());
        let shutdown = Shutdown::new();
        let (inlet, outlet) = handoff(
            Budget {
                bytes: 1,
                events: 100,
            },
            stats,
            shutdown.clone(),
        );
        inlet.send(event(0)).unwrap();
        let sender = std::thread::spawn(move || inlet.send(event(0)));
        std::thread::sleep(2 * WAIT_SLICE);
        assert!(!sender.is_finished());
        shutdown.trigger();
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert_eq!(outlet.receiver().len(), 2, "the held event is recorded");
    }

    #[test]
    fn a_writer_gone_ends_the_wait() {
        let (inlet, outlet, _) = pair(1, 100);
        inlet.send(event(0)).unwrap();
        let waiting = inlet.clone();
        let sender = std::thread::spawn(move || waiting.send(event(0)));
        std::thread::sleep(2 * WAIT_SLICE);
        drop(outlet);
        assert_eq!(sender.join().unwrap(), Err(Closed));
        assert_eq!(inlet.send(event(0)), Err(Closed));
    }
}
