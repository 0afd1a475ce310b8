//! The tap's counters (`obrec record --tap`) and the hand-off that feeds it.
//!
//! The recorder's readers offer each accepted frame to a [`Tee`]; the tap's dispatcher takes them
//! on its own thread and fans them out to its clients. The hand-off never waits: a full queue
//! loses the item for the tap only (counted in `drops`), never for the files.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use serde::{Deserialize, Serialize};

use crate::market::tee::Tapped;

/// Live counters of the tap, shared by the recorder (drops), the tap (the rest) and the report.
#[derive(Debug, Default)]
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
}

impl TapStats {
    pub fn report(&self) -> TapReport {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TapReport {
            clients: get(&self.clients),
            frames_sent: get(&self.frames_sent),
            bytes_sent: get(&self.bytes_sent),
            cuts: get(&self.cuts),
            drops: get(&self.drops),
        }
    }
}

/// `tap` in `metrics.json`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TapReport {
    pub clients: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub cuts: u64,
    pub drops: u64,
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
}
