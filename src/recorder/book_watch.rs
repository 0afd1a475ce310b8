//! Whether each diff-depth book is synced, for `metrics.json` and `/metrics`.
//!
//! The writer sees every recorded event and snapshot in the order its reader handled them, so it
//! follows the same procedure ([`BookSync`]) on them and knows what a user of the files wants to
//! know: from when on the recording rebuilds a valid book, and since when it does not.

use crate::market::sequence::{BookSync, Chain, Ids, Verdict};
use crate::metrics::BookState;

/// One symbol's book sync, seen from the recorded lines.
pub struct BookWatch {
    chain: Chain,
    sync: BookSync<()>,
    state: BookState,
}

impl BookWatch {
    /// A book not synced since `start_ms`, the run's start.
    pub fn new(start_ms: u64) -> BookWatch {
        BookWatch {
            chain: Chain::new(),
            sync: BookSync::new(),
            state: BookState {
                synced: false,
                since_ms: start_ms,
            },
        }
    }

    pub fn event(&mut self, ids: Ids, conn: u64, recv_ns: u64) {
        let verdict = self.chain.check(ids, conn);
        if verdict == Verdict::Duplicate {
            return;
        }
        self.sync.event(ids, verdict, ());
        self.settle(recv_ns);
    }

    pub fn snapshot(&mut self, last_update_id: u64, recv_ns: u64) {
        self.sync.snapshot(last_update_id);
        self.settle(recv_ns);
    }

    pub fn state(&self) -> BookState {
        self.state
    }

    fn settle(&mut self, recv_ns: u64) {
        if self.sync.is_live() != self.state.synced {
            self.state = BookState {
                synced: self.sync.is_live(),
                since_ms: recv_ns / 1_000_000,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(first: u64, last: u64, prev: u64) -> Ids {
        Ids { first, last, prev }
    }

    #[test]
    fn synced_from_the_bridging_event_until_a_break() {
        let mut book = BookWatch::new(1_000);
        book.event(ids(100, 110, 90), 1, 2_000_000_000);
        assert_eq!(
            book.state(),
            BookState {
                synced: false,
                since_ms: 1_000
            }
        );
        // A snapshot inside the buffered event bridges at once.
        book.snapshot(105, 3_000_000_000);
        assert_eq!(
            book.state(),
            BookState {
                synced: true,
                since_ms: 3_000
            }
        );
        book.event(ids(111, 120, 110), 1, 4_000_000_000);
        assert!(book.state().synced);
        book.event(ids(130, 140, 125), 1, 5_000_000_000);
        assert_eq!(
            book.state(),
            BookState {
                synced: false,
                since_ms: 5_000
            }
        );
    }
}
