//! The tap's counters (`obrec record --tap`) and the hand-off that feeds it.
//!
//! The recorder's readers offer each accepted frame to a [`Tee`]; the tap's dispatcher takes them
//! on its own thread and fans them out to its clients. The hand-off never waits: a full queue
//! loses the item for the tap only (counted in `drops`), never for the files.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::market::tee::Tapped;

/// Longest delivery latency told apart; longer ones count as this (a minute: a client that far
/// behind is cut long before).
const MAX_DELIVERY_NS: u64 = 60_000_000_000;
/// Significant figures of the latency histogram.
const SIGFIG: u8 = 3;

/// Live counters of the tap, shared by the recorder (drops), the tap (the rest) and the report.
#[derive(Debug)]
pub struct TapStats {
    /// Connections open now.
    pub clients: AtomicU64,
    /// Data frames written to client sockets, all clients together.
    pub frames_sent: AtomicU64,
    /// Bytes of those frames, WebSocket headers included.
    pub bytes_sent: AtomicU64,
    /// Clients cut because their queue overflowed.
    pub cuts: AtomicU64,
    /// Items the recorder could not hand to the tap because its queue was full.
    pub drops: AtomicU64,
    /// Receipt by the recorder to written to a client's socket, ns, every frame of every client.
    delivery_ns: Mutex<Histogram<u64>>,
}

impl Default for TapStats {
    fn default() -> TapStats {
        TapStats {
            clients: AtomicU64::default(),
            frames_sent: AtomicU64::default(),
            bytes_sent: AtomicU64::default(),
            cuts: AtomicU64::default(),
            drops: AtomicU64::default(),
            delivery_ns: Mutex::new(
                Histogram::new_with_bounds(1, MAX_DELIVERY_NS, SIGFIG).expect("valid bounds"),
            ),
        }
    }
}

impl TapStats {
    /// Records the delivery latency of frames received at `received`, written just now.
    pub fn delivered(&self, received: impl IntoIterator<Item = Instant>) {
        let now = Instant::now();
        let mut histogram = self
            .delivery_ns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for at in received {
            let ns = now.saturating_duration_since(at).as_nanos();
            histogram.saturating_record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
        }
    }

    pub fn report(&self) -> TapReport {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let histogram = self
            .delivery_ns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ms = |ns: u64| super::round3(Duration::from_nanos(ns).as_secs_f64() * 1e3);
        TapReport {
            clients: get(&self.clients),
            frames_sent: get(&self.frames_sent),
            bytes_sent: get(&self.bytes_sent),
            cuts: get(&self.cuts),
            drops: get(&self.drops),
            delivery_ms: Delivery {
                p50: ms(histogram.value_at_quantile(0.50)),
                p99: ms(histogram.value_at_quantile(0.99)),
                max: ms(histogram.max()),
            },
        }
    }
}

/// Delivery latency over the run, ms: receipt by the recorder to written to a client's socket.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// `tap` in `metrics.json`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TapReport {
    pub clients: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub cuts: u64,
    pub drops: u64,
    pub delivery_ms: Delivery,
}

/// The recorder's end of the hand-off to the tap.
#[derive(Clone, Debug)]
pub struct Tee {
    tx: Sender<Tapped>,
    stats: Arc<TapStats>,
}

impl Tee {
    /// A hand-off holding up to `capacity` items, and the tap's end of it.
    pub fn new(capacity: usize, stats: Arc<TapStats>) -> (Tee, Receiver<Tapped>) {
        let (tx, rx) = bounded(capacity);
        (Tee { tx, stats }, rx)
    }

    /// Hands `item` over without waiting; a full queue drops it, counted.
    pub fn offer(&self, item: Tapped) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(item) {
            self.stats.drops.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> &Arc<TapStats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_hand_off_drops_and_counts() {
        let (tee, rx) = Tee::new(1, Arc::default());
        let snapshot = || Tapped::Snapshot {
            stream: "btcusdt@depth".into(),
            last_update_id: 1,
            body: "{}".into(),
        };
        tee.offer(snapshot());
        tee.offer(snapshot());
        assert_eq!(tee.stats().report().drops, 1);
        assert_eq!(rx.len(), 1);
        drop(rx);
        tee.offer(snapshot());
        assert_eq!(tee.stats().report().drops, 1, "a gone tap is not a drop");
    }

    #[test]
    fn delivery_latency_is_reported_in_ms() {
        let stats = TapStats::default();
        let received = Instant::now() - Duration::from_millis(5);
        stats.delivered([received; 10]);
        let delivery = stats.report().delivery_ms;
        assert!(
            delivery.p50 >= 5.0 && delivery.p50 < 1_000.0,
            "{delivery:?}"
        );
        assert!(delivery.p99 >= delivery.p50 && delivery.max >= delivery.p99);
    }
}
