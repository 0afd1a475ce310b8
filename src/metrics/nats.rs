//! The NATS publisher's counters (`obrec record --nats`) and the hand-off that feeds it.
//!
//! The recorder's writer offers each line it wrote to a [`Relay`]; the publisher takes them on its
//! own thread. The hand-off never waits: a full queue (NATS down or slow) loses the line for NATS
//! only, counted in `dropped`, never for the files.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{Receiver, Sender, channel};

use crate::store::relayed::Relayed;

/// Live counters of the publisher, shared by the writer (drops), the publisher (the rest) and
/// the report.
#[derive(Debug, Default)]
pub struct NatsStats {
    /// Lines sent to the server (a retry counts again).
    pub published: AtomicU64,
    /// Lines the stream confirmed, stored or already there.
    pub acked: AtomicU64,
    /// Of those, lines the stream already held under their `Nats-Msg-Id`: another recorder (or
    /// a retry) was first.
    pub duplicates: AtomicU64,
    /// Lines lost for NATS: the hand-off was full, or retries ran out.
    pub dropped: AtomicU64,
    /// Sends that failed or got no confirmation in time, each retried.
    pub retries: AtomicU64,
    /// Lines taken from the hand-off and not yet confirmed: the publisher's backlog.
    pub pending: AtomicU64,
    /// Receipt by the recorder to confirmation by the stream of the latest confirmed line, ms.
    pub lag_ms: AtomicU64,
    /// 1 while the client is connected to a server.
    pub connected: AtomicU64,
}

impl NatsStats {
    pub fn report(&self, queued: usize) -> NatsReport {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NatsReport {
            published: get(&self.published),
            acked: get(&self.acked),
            duplicates: get(&self.duplicates),
            dropped: get(&self.dropped),
            retries: get(&self.retries),
            pending: get(&self.pending) + queued as u64,
            lag_ms: get(&self.lag_ms),
            connected: get(&self.connected) == 1,
        }
    }
}

/// `nats` in `metrics.json`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NatsReport {
    /// Lines sent, retries included.
    pub published: u64,
    /// Lines the stream confirmed.
    pub acked: u64,
    /// Confirmed lines the stream already held: another recorder was first.
    pub duplicates: u64,
    /// Lines lost for NATS (never for the files).
    pub dropped: u64,
    /// Sends that failed or went unconfirmed, each retried.
    pub retries: u64,
    /// Lines waiting in the hand-off or for their confirmation.
    pub pending: u64,
    /// Receipt to confirmation of the latest confirmed line.
    pub lag_ms: u64,
    /// Whether the client is connected to a server now.
    pub connected: bool,
}

/// The writer's end of the hand-off to the publisher.
#[derive(Clone, Debug)]
pub struct Relay {
    /// Bounded: a full hand-off drops rather than waits.
    tx: Sender<Relayed>,
    /// Where a drop is counted.
    stats: Arc<NatsStats>,
}

impl Relay {
    /// A hand-off holding up to `capacity` lines, and the publisher's end of it.
    pub fn new(capacity: usize, stats: Arc<NatsStats>) -> (Relay, Receiver<Relayed>) {
        // Tokio's channel, so the publisher awaits lines where a blocking wait would stall the
        // client's own tasks on its one thread; sending needs no runtime.
        let (tx, rx) = channel(capacity.max(1));
        (Relay { tx, stats }, rx)
    }

    /// Hands `line` over without waiting; a full queue drops it, counted.
    pub fn offer(&self, line: Relayed) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters, with the lines still in the hand-off counted as pending.
    pub fn report(&self) -> NatsReport {
        self.stats
            .report(self.tx.max_capacity() - self.tx.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::symbol::Symbol;
    use crate::store::names::FileKind;
    use crate::store::relayed::{EventKey, Series};

    #[test]
    fn a_full_hand_off_drops_and_counts() {
        let (relay, rx) = Relay::new(1, Arc::default());
        let series = Arc::new(Series {
            symbol: Symbol::new("BTCUSDT").unwrap(),
            kind: FileKind::Depth,
        });
        let line = || Relayed {
            series: Arc::clone(&series),
            key: EventKey::Id(1),
            recv_ns: 1,
            line: b"{}\n".to_vec(),
        };
        relay.offer(line());
        relay.offer(line());
        let report = relay.report();
        assert_eq!((report.dropped, report.pending), (1, 1));
        drop(rx);
        relay.offer(line());
        assert_eq!(relay.report().dropped, 1, "a gone publisher is not a drop");
    }
}
