//! Sequence continuity: pure state machines shared by the live recorder and `obrec replay`.
//!
//! Binance futures depth events carry `U` (first update id), `u` (last) and `pu` (the `u` of the
//! previous event of the same symbol). Ids are one exchange-wide sequence, so they are *not* dense
//! per symbol: continuity is `pu == last u`, never `U == last u + 1`. Spot events carry no `pu`,
//! and their ids are dense per symbol: continuity is `U == last u + 1`, which is `pu == last u`
//! for `pu = U - 1` ([`Continuity::Dense`]), so one [`Chain`] proves both.
//!
//! Two machines live here, both free of I/O so they can be table-tested:
//!
//! * [`Chain`] classifies every event of one symbol: continuous, a break (the exchange lost
//!   something on a healthy connection), a new chain after a reconnect (counted as a reconnect,
//!   not a break), or a duplicate (the same event delivered again by an overlapping connection).
//! * [`BookSync`] is the diff-depth snapshot procedure: buffer events, take a REST snapshot,
//!   drop `u < lastUpdateId`, bridge with `U <= lastUpdateId <= u`, then follow the chain;
//!   after a break, ask for a new snapshot. Spot's procedure (as corrected 2025-11-12) is the same
//!   one step later: drop `u <= lastUpdateId`, bridge with `U <= lastUpdateId + 1 <= u`, fetch
//!   again when `lastUpdateId + 1 < U` of the first event kept ([`Continuity::bridge_id`]).

use std::collections::VecDeque;

/// The update ids of one depth event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    /// `U`: first update id in the event.
    pub first: u64,
    /// `u`: final update id in the event.
    pub last: u64,
    /// `pu`: final update id of the previous event of this symbol.
    pub prev: u64,
}

/// How a market's depth ids chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Continuity {
    /// Futures: each event names the previous one's `u` in `pu`; ids are exchange-wide, not
    /// dense per symbol. A snapshot at `L` is bridged by the event with `U <= L <= u`.
    #[default]
    PrevId,
    /// Spot: no `pu`, ids dense per symbol (`U == last u + 1`). A snapshot at `L` is bridged by
    /// the event with `U <= L + 1 <= u`.
    Dense,
    /// Spot's partial book (`{lastUpdateId,bids,asks}`): one id per event, strictly increasing,
    /// neither dense nor naming its predecessor. [`Continuity::chained`] makes the previous
    /// accepted id its `pu`, so the [`Chain`] proves the increase (and recognises an overlapping
    /// connection's copy) as it proves `pu`; lines keep that `pu`, and readers chain them alike.
    /// Never bridged to a snapshot: each event is the whole top of the book.
    Increasing,
}

impl Continuity {
    /// The id the event that bridges a snapshot at `last_update_id` must hold; events ending
    /// before it are inside the snapshot.
    pub fn bridge_id(self, last_update_id: u64) -> u64 {
        match self {
            Continuity::PrevId | Continuity::Increasing => last_update_id,
            Continuity::Dense => last_update_id.saturating_add(1),
        }
    }

    /// The ids the [`Chain`] checks, given the `u` it accepted last: an increasing event's `pu`
    /// is that `u` (0 before any), so it is continuous exactly when its id is above it; the
    /// other rules' events name their predecessor themselves and pass unchanged.
    pub fn chained(self, ids: Ids, last_u: Option<u64>) -> Ids {
        match self {
            Continuity::Increasing => Ids {
                prev: last_u.unwrap_or_default(),
                ..ids
            },
            Continuity::PrevId | Continuity::Dense => ids,
        }
    }

    /// The `pu` a dense event implies: the `u` of the event it follows, `U - 1`.
    pub fn dense_prev(first: u64) -> u64 {
        first.saturating_sub(1)
    }
}

/// What the chain says about one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The first event seen for this symbol.
    Start,
    /// `pu` equals the previous event's `u`.
    Continuous,
    /// The first event on a new connection does not chain to the last one recorded: data was lost
    /// while no connection was up, or the exchange restarted its ids (`got_pu` below
    /// `expected_pu`). Counted as part of the reconnect, not as a break; a new chain starts.
    Reconnected { expected_pu: u64, got_pu: u64 },
    /// On the same connection `pu` differs from the previous `u`, or `u` went backwards: the
    /// exchange lost or reset something.
    Break { expected_pu: u64, got_pu: u64 },
    /// Another connection already delivered this very event (its `u` is among the last ones
    /// accepted, from another connection): the overlap of a replacement. Skip it.
    Duplicate,
}

impl Verdict {
    /// True when events before this one cannot be bridged to it.
    pub fn is_discontinuity(self) -> bool {
        matches!(self, Verdict::Reconnected { .. } | Verdict::Break { .. })
    }

    /// True when the ids went back: the exchange reset its sequence, or sent a bogus id before.
    pub fn went_back(self) -> bool {
        match self {
            Verdict::Reconnected {
                expected_pu,
                got_pu,
            }
            | Verdict::Break {
                expected_pu,
                got_pu,
            } => got_pu < expected_pu,
            _ => false,
        }
    }
}

/// How many accepted `u`s a chain remembers to recognise a copy delivered by an overlapping
/// connection. Two connections to the same stream run within a few events of each other; 64
/// events are seconds of even the busiest symbol, at 1 KiB per symbol.
const RECENT: usize = 64;

/// Continuity of one symbol's depth events, across the connections that deliver them.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    last: Option<Last>,
    /// The last [`RECENT`] accepted events: only one of these can be a duplicate. An older or
    /// unknown `u` is never dropped, so a bogus id or an exchange that restarts its ids costs
    /// one discontinuity, not every later event.
    recent: Vec<Last>,
    /// Where the next accepted event goes in `recent` once it is full: the oldest.
    next: usize,
}

#[derive(Clone, Copy, Debug)]
struct Last {
    u: u64,
    conn: u64,
}

impl Chain {
    pub fn new() -> Chain {
        Chain::default()
    }

    /// The `u` of the last accepted event.
    pub fn last_u(&self) -> Option<u64> {
        self.last.map(|l| l.u)
    }

    /// Classifies an event delivered by connection `conn` and, unless it is a duplicate, makes it
    /// the chain's last event.
    pub fn check(&mut self, ids: Ids, conn: u64) -> Verdict {
        let verdict = match self.last {
            None => Verdict::Start,
            Some(last) if ids.last <= last.u && self.delivered_elsewhere(ids.last, conn) => {
                return Verdict::Duplicate;
            }
            Some(last) if ids.prev == last.u && ids.last > last.u => Verdict::Continuous,
            Some(last) if conn != last.conn => Verdict::Reconnected {
                expected_pu: last.u,
                got_pu: ids.prev,
            },
            Some(last) => Verdict::Break {
                expected_pu: last.u,
                got_pu: ids.prev,
            },
        };
        let last = Last { u: ids.last, conn };
        self.last = Some(last);
        // A ring over a plain vector: one store per event, no shifting.
        if self.recent.len() < RECENT {
            self.recent.push(last);
        } else {
            self.recent[self.next] = last;
        }
        self.next = (self.next + 1) % RECENT;
        verdict
    }

    /// True when another connection delivered an event ending at `u` recently.
    fn delivered_elsewhere(&self, u: u64, conn: u64) -> bool {
        self.recent.iter().any(|l| l.u == u && l.conn != conn)
    }
}

/// What to do with a diff event, given the snapshot state.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// No usable snapshot yet: the event is buffered.
    Buffered,
    /// The event is older than the snapshot taken: the snapshot already contains it.
    Covered,
    /// Apply these events to the book, in order (the bridge event and any buffered after it, or
    /// just the current event once live).
    Apply(Vec<T>),
    /// The chain broke: the book is invalid until a new snapshot bridges. The event is buffered.
    Lost,
}

/// What a snapshot did.
#[derive(Debug, PartialEq, Eq)]
pub enum SnapshotStep<T> {
    /// Reset the book to the snapshot, then apply these buffered events in order.
    Bridged(Vec<T>),
    /// Reset the book to the snapshot; no buffered event reaches it yet, the bridge is still to come.
    Pending,
    /// The snapshot is older than every buffered event (`U > lastUpdateId` for the first one
    /// kept): it cannot be bridged. Fetch another.
    TooOld,
}

/// Most diff events kept while waiting for a snapshot. A snapshot normally arrives within a second
/// (tens of events at 100 ms); the cap only bounds memory when snapshots are throttled or failing,
/// and dropping the oldest is safe because a later snapshot is newer than them anyway.
pub const MAX_BUFFERED: usize = 8192;

/// The official diff-depth procedure for one symbol, generic over what is buffered with each
/// event (`()` for the recorder, which only needs to know when to fetch; the payload for replay,
/// which rebuilds the book).
#[derive(Debug)]
pub struct BookSync<T> {
    state: SyncState,
    buffer: VecDeque<(Ids, T)>,
    /// The market's bridge rule.
    continuity: Continuity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SyncState {
    /// Waiting for a snapshot; events are buffered.
    NeedSnapshot,
    /// A snapshot was taken; the event holding `bridge` (its [`Continuity::bridge_id`]) has not
    /// come yet.
    Pending { bridge: u64 },
    /// The book follows the chain.
    Live,
}

impl<T> Default for BookSync<T> {
    fn default() -> Self {
        BookSync {
            state: SyncState::NeedSnapshot,
            buffer: VecDeque::new(),
            continuity: Continuity::default(),
        }
    }
}

impl<T> BookSync<T> {
    pub fn new() -> BookSync<T> {
        BookSync::default()
    }

    /// A sync that bridges snapshots by `continuity`'s rule.
    pub fn with(continuity: Continuity) -> BookSync<T> {
        BookSync {
            continuity,
            ..BookSync::default()
        }
    }

    /// True while the book is not following the chain (a snapshot is needed or pending).
    pub fn is_live(&self) -> bool {
        self.state == SyncState::Live
    }

    /// True when a (new) snapshot should be fetched: events have arrived since the book was lost
    /// and no snapshot is pending. Fetching only after the first event arrived is what makes the
    /// procedure work on high-latency links.
    pub fn wants_snapshot(&self) -> bool {
        self.state == SyncState::NeedSnapshot && !self.buffer.is_empty()
    }

    /// Feeds one event and the chain's verdict on it. Duplicates must not be fed.
    pub fn event(&mut self, ids: Ids, verdict: Verdict, item: T) -> Step<T> {
        if verdict.is_discontinuity() {
            let was_usable = self.state != SyncState::NeedSnapshot;
            self.state = SyncState::NeedSnapshot;
            self.buffer.clear();
            self.push(ids, item);
            return if was_usable {
                Step::Lost
            } else {
                Step::Buffered
            };
        }
        match self.state {
            SyncState::Live => Step::Apply(vec![item]),
            SyncState::NeedSnapshot => {
                self.push(ids, item);
                Step::Buffered
            }
            SyncState::Pending { bridge } => {
                if ids.last < bridge {
                    Step::Covered
                } else if ids.first <= bridge {
                    self.state = SyncState::Live;
                    Step::Apply(vec![item])
                } else {
                    // The bridge event was missed: this snapshot can never be reached.
                    self.state = SyncState::NeedSnapshot;
                    self.push(ids, item);
                    Step::Lost
                }
            }
        }
    }

    /// Feeds a REST snapshot's `lastUpdateId`.
    pub fn snapshot(&mut self, last_update_id: u64) -> SnapshotStep<T> {
        let bridge = self.continuity.bridge_id(last_update_id);
        while self
            .buffer
            .front()
            .is_some_and(|(ids, _)| ids.last < bridge)
        {
            self.buffer.pop_front();
        }
        match self.buffer.front() {
            None => {
                self.state = SyncState::Pending { bridge };
                SnapshotStep::Pending
            }
            Some((ids, _)) if ids.first <= bridge => {
                self.state = SyncState::Live;
                SnapshotStep::Bridged(self.buffer.drain(..).map(|(_, item)| item).collect())
            }
            Some(_) => {
                self.state = SyncState::NeedSnapshot;
                SnapshotStep::TooOld
            }
        }
    }

    fn push(&mut self, ids: Ids, item: T) {
        if self.buffer.len() == MAX_BUFFERED {
            self.buffer.pop_front();
        }
        self.buffer.push_back((ids, item));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(first: u64, last: u64, prev: u64) -> Ids {
        Ids { first, last, prev }
    }

    #[test]
    fn chain_table() {
        use Verdict::*;
        // (U, u, pu, conn, expected verdict) applied in order to one chain.
        let table: &[(u64, u64, u64, u64, Verdict)] = &[
            (100, 110, 90, 1, Start),
            // ids are not dense: U jumps past pu + 1, still continuous.
            (115, 120, 110, 1, Continuous),
            (121, 121, 120, 1, Continuous),
            // pu mismatch on the same connection is a break.
            (
                130,
                140,
                125,
                1,
                Break {
                    expected_pu: 121,
                    got_pu: 125,
                },
            ),
            (141, 150, 140, 1, Continuous),
            // a second, overlapping connection delivers events already seen.
            (141, 150, 140, 2, Duplicate),
            (151, 160, 150, 2, Continuous),
            (151, 160, 150, 1, Duplicate),
            (161, 170, 160, 1, Continuous),
            // a new connection after an outage: not a break.
            (
                200,
                210,
                190,
                3,
                Reconnected {
                    expected_pu: 170,
                    got_pu: 190,
                },
            ),
            (211, 220, 210, 3, Continuous),
            // u going backwards on one connection (a sequence reset) is a break.
            (
                5,
                9,
                3,
                3,
                Break {
                    expected_pu: 220,
                    got_pu: 3,
                },
            ),
            (10, 12, 9, 3, Continuous),
            // the exchange restarted its ids while no connection was up: a new chain, not a
            // run of duplicates.
            (
                1,
                3,
                0,
                4,
                Reconnected {
                    expected_pu: 12,
                    got_pu: 0,
                },
            ),
            (4, 6, 3, 4, Continuous),
            // an older event another connection never delivered is not a duplicate either.
            (
                2,
                5,
                1,
                5,
                Reconnected {
                    expected_pu: 6,
                    got_pu: 1,
                },
            ),
        ];
        let mut chain = Chain::new();
        for (i, &(first, last, prev, conn, want)) in table.iter().enumerate() {
            let got = chain.check(ids(first, last, prev), conn);
            assert_eq!(got, want, "row {i}");
        }
        assert_eq!(chain.last_u(), Some(5));
    }

    /// Spot partial depth: each event's one id must rise; equal or lower on the same connection
    /// is a break, a copy from an overlapping connection a duplicate, and a higher id on a new
    /// connection simply continues (each event is the whole top of the book).
    #[test]
    fn increasing_ids_table() {
        use Verdict::*;
        // The chain's own `pu` is the last id, so a break names it twice (the line keeps `u`).
        let not_above = |last| Break {
            expected_pu: last,
            got_pu: last,
        };
        // (lastUpdateId, conn, expected verdict) applied in order to one chain.
        let table = [
            (160, 1, Start),
            (161, 1, Continuous),
            // Not dense: any rise is continuous.
            (175, 1, Continuous),
            // The same id again on the same connection: not strictly increasing.
            (175, 1, not_above(175)),
            // Lower on the same connection.
            (170, 1, not_above(175)),
            (180, 1, Continuous),
            // A replacement connection overlaps: its copy of 180 is a duplicate, its next
            // event continues, and the old connection's copy of that one is a duplicate too.
            (180, 2, Duplicate),
            (190, 2, Continuous),
            (190, 1, Duplicate),
            (200, 1, Continuous),
            // Lower on another connection that never delivered it: a new chain.
            (
                150,
                3,
                Reconnected {
                    expected_pu: 200,
                    got_pu: 200,
                },
            ),
            (151, 3, Continuous),
        ];
        let mut chain = Chain::new();
        for (i, (id, conn, want)) in table.into_iter().enumerate() {
            let ids = Continuity::Increasing.chained(ids(id, id, 0), chain.last_u());
            assert_eq!(chain.check(ids, conn), want, "row {i}");
        }
        // The other rules' events keep the `pu` they carry.
        let futures = ids(5, 9, 4);
        assert_eq!(Continuity::PrevId.chained(futures, Some(1)), futures);
        assert_eq!(Continuity::Dense.chained(futures, Some(1)), futures);
    }

    /// One bogus id before a reconnect used to make every later event a "duplicate".
    #[test]
    fn a_bogus_id_costs_one_discontinuity_not_the_rest_of_the_run() {
        let mut chain = Chain::new();
        chain.check(ids(1, 5, 0), 1);
        let bogus = chain.check(ids(6, i64::MAX as u64, 5), 1);
        assert_eq!(bogus, Verdict::Continuous);
        let mut prev = 5;
        for (n, u) in (10..210).step_by(5).enumerate() {
            let verdict = chain.check(ids(prev + 1, u, prev), 2);
            assert_ne!(verdict, Verdict::Duplicate, "event {n}");
            if n == 0 {
                assert!(verdict.went_back(), "{verdict:?}");
            } else {
                assert_eq!(verdict, Verdict::Continuous, "event {n}");
            }
            prev = u;
        }
    }

    #[test]
    fn memory_of_recent_events_is_bounded() {
        let mut chain = Chain::new();
        for u in 1..1000 {
            chain.check(ids(u, u, u - 1), 1);
        }
        assert_eq!(chain.recent.len(), RECENT);
        // A copy of the newest event is a duplicate; a copy of one long gone is not.
        assert_eq!(chain.check(ids(999, 999, 998), 2), Verdict::Duplicate);
        assert!(chain.check(ids(10, 10, 9), 2).went_back());
    }

    #[test]
    fn repeated_event_on_same_connection_is_a_break_not_a_duplicate() {
        let mut chain = Chain::new();
        chain.check(ids(1, 5, 0), 1);
        assert_eq!(
            chain.check(ids(1, 5, 0), 1),
            Verdict::Break {
                expected_pu: 5,
                got_pu: 0
            }
        );
    }

    #[test]
    fn snapshot_bridges_buffered_events() {
        let mut sync = BookSync::new();
        assert!(!sync.wants_snapshot(), "no snapshot before the first event");
        let events = [
            ids(10, 20, 5),
            ids(21, 30, 20),
            ids(31, 40, 30),
            ids(45, 50, 40),
        ];
        for (n, e) in events.iter().enumerate() {
            let verdict = if n == 0 {
                Verdict::Start
            } else {
                Verdict::Continuous
            };
            assert_eq!(sync.event(*e, verdict, n), Step::Buffered);
        }
        assert!(sync.wants_snapshot());
        // lastUpdateId 35 lies in event 2 (31..=40): events 0 and 1 are dropped.
        assert_eq!(sync.snapshot(35), SnapshotStep::Bridged(vec![2, 3]));
        assert!(sync.is_live());
        assert_eq!(
            sync.event(ids(51, 60, 50), Verdict::Continuous, 4),
            Step::Apply(vec![4])
        );
    }

    #[test]
    fn snapshot_bridge_boundaries_are_inclusive() {
        for l in [31, 40] {
            let mut sync = BookSync::new();
            sync.event(ids(31, 40, 30), Verdict::Start, ());
            assert_eq!(sync.snapshot(l), SnapshotStep::Bridged(vec![()]), "L={l}");
        }
    }

    /// Both bridge rules on one event `U=31, u=40`, for snapshots on either side of it: what
    /// the snapshot does to the buffered event (futures: `U <= L <= u`, drop `u < L`; spot:
    /// `U <= L + 1 <= u`, drop `u <= L`, fetch again when `L + 1 < U`).
    #[test]
    fn bridge_rules_by_market() {
        use Continuity::{Dense, PrevId};
        use SnapshotStep::{Bridged, Pending, TooOld};
        let table: &[(Continuity, u64, SnapshotStep<()>)] = &[
            (PrevId, 29, TooOld),
            (PrevId, 30, TooOld),
            (PrevId, 31, Bridged(vec![()])),
            (PrevId, 40, Bridged(vec![()])),
            (PrevId, 41, Pending),
            (Dense, 29, TooOld),
            (Dense, 30, Bridged(vec![()])),
            (Dense, 39, Bridged(vec![()])),
            (Dense, 40, Pending),
            (Dense, 41, Pending),
        ];
        for (rule, l, want) in table {
            let mut sync = BookSync::with(*rule);
            sync.event(ids(31, 40, 30), Verdict::Start, ());
            assert_eq!(&sync.snapshot(*l), want, "{rule:?} L={l}");
        }
        // Pending on spot: the event ending at L is covered, the one holding L + 1 bridges.
        let mut sync = BookSync::with(Dense);
        sync.event(ids(1, 9, 0), Verdict::Start, 'a');
        assert_eq!(sync.snapshot(20), SnapshotStep::Pending);
        assert_eq!(
            sync.event(ids(10, 20, 9), Verdict::Continuous, 'b'),
            Step::Covered
        );
        assert_eq!(
            sync.event(ids(21, 25, 20), Verdict::Continuous, 'c'),
            Step::Apply(vec!['c'])
        );
        assert_eq!(Continuity::dense_prev(21), 20);
        assert_eq!(Continuity::dense_prev(0), 0);
    }

    #[test]
    fn snapshot_older_than_buffer_is_refetched() {
        let mut sync = BookSync::new();
        sync.event(ids(31, 40, 30), Verdict::Start, ());
        assert_eq!(sync.snapshot(25), SnapshotStep::TooOld);
        assert!(sync.wants_snapshot());
        assert_eq!(sync.snapshot(33), SnapshotStep::Bridged(vec![()]));
    }

    #[test]
    fn snapshot_newer_than_buffer_waits_for_the_bridge() {
        let mut sync = BookSync::new();
        sync.event(ids(10, 20, 5), Verdict::Start, 'a');
        assert_eq!(sync.snapshot(25), SnapshotStep::Pending);
        assert!(!sync.wants_snapshot());
        // u < L: already inside the snapshot.
        assert_eq!(
            sync.event(ids(21, 24, 20), Verdict::Continuous, 'b'),
            Step::Covered
        );
        assert_eq!(
            sync.event(ids(25, 30, 24), Verdict::Continuous, 'c'),
            Step::Apply(vec!['c'])
        );
        assert!(sync.is_live());
    }

    #[test]
    fn missed_bridge_while_pending_asks_again() {
        let mut sync = BookSync::new();
        sync.event(ids(10, 20, 5), Verdict::Start, ());
        assert_eq!(sync.snapshot(25), SnapshotStep::Pending);
        assert_eq!(
            sync.event(ids(28, 30, 26), Verdict::Continuous, ()),
            Step::Lost
        );
        assert!(sync.wants_snapshot());
    }

    #[test]
    fn break_while_live_loses_the_book_and_resyncs() {
        let mut sync = BookSync::new();
        sync.event(ids(10, 20, 5), Verdict::Start, 0);
        assert_eq!(sync.snapshot(15), SnapshotStep::Bridged(vec![0]));
        let gap = Verdict::Break {
            expected_pu: 20,
            got_pu: 25,
        };
        assert_eq!(sync.event(ids(26, 30, 25), gap, 1), Step::Lost);
        assert!(!sync.is_live());
        assert!(sync.wants_snapshot());
        assert_eq!(sync.snapshot(27), SnapshotStep::Bridged(vec![1]));
    }

    #[test]
    fn break_before_any_snapshot_discards_the_stale_buffer() {
        let mut sync = BookSync::new();
        sync.event(ids(10, 20, 5), Verdict::Start, 0);
        let gap = Verdict::Reconnected {
            expected_pu: 20,
            got_pu: 90,
        };
        assert_eq!(sync.event(ids(95, 100, 90), gap, 1), Step::Buffered);
        assert_eq!(sync.snapshot(97), SnapshotStep::Bridged(vec![1]));
    }

    #[test]
    fn buffer_is_bounded() {
        let mut sync = BookSync::new();
        for n in 0..(MAX_BUFFERED as u64 + 10) {
            sync.event(ids(n * 10 + 1, n * 10 + 10, n * 10), Verdict::Continuous, n);
        }
        assert_eq!(sync.buffer.len(), MAX_BUFFERED);
        assert_eq!(sync.buffer.front().map(|(_, n)| *n), Some(10));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// What happens next to one symbol's stream.
        #[derive(Clone, Debug)]
        enum Op {
            /// An event of `len` updates; `gap`: its `pu` is not the last `u`; `reconnect`: it
            /// comes over a new connection.
            Event {
                len: u64,
                gap: bool,
                reconnect: bool,
            },
            /// A REST snapshot whose `lastUpdateId` is `offset` from the last `u` sent.
            Snapshot { offset: i64 },
        }

        fn ops() -> impl Strategy<Value = Vec<Op>> {
            let op = prop_oneof![
                8 => (1..5u64, proptest::bool::weighted(0.1), proptest::bool::weighted(0.05))
                    .prop_map(|(len, gap, reconnect)| Op::Event { len, gap, reconnect }),
                1 => (-12..12i64).prop_map(|offset| Op::Snapshot { offset }),
            ];
            proptest::collection::vec(op, 1..200)
        }

        /// What a book has applied since its last snapshot.
        struct Applied {
            /// The snapshot's bridge id, until the first event is applied on it.
            base: Option<u64>,
            last: Option<u64>,
        }

        impl Applied {
            /// Checks that `ids` may follow what was applied: the first event bridges the
            /// snapshot (`U <= bridge <= u`, the bridge id of the market's rule), each later
            /// one chains (`pu == last u`).
            fn apply(&mut self, ids: Ids) -> Result<(), TestCaseError> {
                match (self.last, self.base) {
                    (Some(last), _) => prop_assert_eq!(ids.prev, last, "out of order: {:?}", ids),
                    (None, Some(base)) => prop_assert!(
                        ids.first <= base && base <= ids.last,
                        "{:?} does not bridge snapshot {}",
                        ids,
                        base
                    ),
                    (None, None) => {
                        return Err(TestCaseError::fail("applied before any snapshot"));
                    }
                }
                self.last = Some(ids.last);
                Ok(())
            }

            fn reset(&mut self, base: u64) {
                (self.base, self.last) = (Some(base), None);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Events from three connections, with ids from a narrow range so that they collide
            /// often: an event is called a duplicate only when another connection delivered an
            /// event with the same `u` before, which was kept.
            #[test]
            fn chain_drops_only_what_another_connection_delivered(
                events in proptest::collection::vec((0..40u64, 0..40u64, 1..=3u64), 1..300),
            ) {
                let mut chain = Chain::new();
                let mut kept: Vec<(u64, u64)> = Vec::new();
                for (u, pu, conn) in events {
                    let verdict = chain.check(Ids { first: u, last: u, prev: pu }, conn);
                    if verdict == Verdict::Duplicate {
                        prop_assert!(
                            kept.iter().any(|&(k, c)| k == u && c != conn),
                            "u={} from conn {} dropped; kept: {:?}", u, conn, kept
                        );
                    } else {
                        kept.push((u, conn));
                    }
                }
            }

            /// Streams with gaps, reconnects and snapshots of every age, checked by [`Chain`]
            /// and synced by [`BookSync`]: every event applied bridges its snapshot or chains to
            /// the one applied before it.
            #[test]
            fn book_sync_never_applies_out_of_order(ops in ops(), dense in any::<bool>()) {
                let rule = if dense { Continuity::Dense } else { Continuity::PrevId };
                let (mut chain, mut sync) = (Chain::new(), BookSync::with(rule));
                let mut applied = Applied { base: None, last: None };
                let (mut last_u, mut conn) = (1_000u64, 1u64);
                for op in ops {
                    match op {
                        Op::Event { len, gap, reconnect } => {
                            conn += u64::from(reconnect);
                            let prev = if gap { last_u + 3 } else { last_u };
                            let ids = Ids { first: last_u + 1, last: last_u + len, prev };
                            last_u += len;
                            let verdict = chain.check(ids, conn);
                            if verdict == Verdict::Duplicate {
                                continue;
                            }
                            match sync.event(ids, verdict, ids) {
                                Step::Apply(events) => {
                                    for e in events {
                                        applied.apply(e)?;
                                    }
                                }
                                // Nothing may be applied until the next snapshot.
                                Step::Lost => (applied.base, applied.last) = (None, None),
                                Step::Buffered | Step::Covered => {}
                            }
                        }
                        Op::Snapshot { offset } => {
                            let id = last_u.saturating_add_signed(offset);
                            match sync.snapshot(id) {
                                SnapshotStep::Bridged(events) => {
                                    applied.reset(rule.bridge_id(id));
                                    for e in events {
                                        applied.apply(e)?;
                                    }
                                }
                                SnapshotStep::Pending => applied.reset(rule.bridge_id(id)),
                                SnapshotStep::TooOld => {}
                            }
                        }
                    }
                }
            }
        }
    }
}
