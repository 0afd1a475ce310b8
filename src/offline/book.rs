//! Books rebuilt from recordings, for `replay --book` and `report`: each symbol's depth events
//! applied to its book, diff events synced from the recorded REST snapshots with Binance's
//! procedure ([`BookSync`]) by the rule of the market the payloads are from (spot bridges one id
//! later than futures), partial events each the whole book.
//!
//! A snapshot is queued when its line is read and taken by the first event of its symbol
//! received after it. Its body (tens of KB) is read again from its file at that moment rather
//! than held from the start, so a recording of thousands of snapshots costs a few bytes for each.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::market::book::Book;
use crate::market::frame::depth_continuity;
use crate::market::sequence::{BookSync, SnapshotStep, Step, Verdict};
use crate::market::stream::is_partial;
use crate::store::line::{DepthLine, SnapshotLine, parse_snapshot};
use crate::store::lines::LineCursor;

/// Why an event could not be taken into its book.
#[derive(Debug)]
pub enum RebuildError {
    /// A payload or snapshot body the book cannot take: damage at the event's line.
    Payload(String),
    /// A snapshot line that read back differently from when it was queued: its file changed
    /// while it was read.
    Unreadable(String),
}

/// A recorded REST snapshot waiting for the event after which it was received.
struct RecordedSnapshot {
    recv_ns: u64,
    last_update_id: u64,
    /// Its file, in [`Books::snapshot_files`].
    file: usize,
    /// Its line in that file.
    line: u64,
}

#[derive(Default)]
struct SymbolBook {
    book: Book,
    sync: BookSync<String>,
    /// The sync follows the market's bridge rule, read from the first diff payload: a symbol's
    /// entry may be made by a snapshot, before any payload says which market it is.
    rule_known: bool,
    /// Snapshots not yet taken, oldest first.
    snapshots: VecDeque<RecordedSnapshot>,
    /// A snapshot of the symbol was ever queued.
    has_snapshots: bool,
}

/// Every symbol's book, and where the snapshot bodies are.
#[derive(Default)]
pub struct Books {
    symbols: HashMap<String, SymbolBook>,
    /// The snapshot files, in the order read, that queued snapshots point into.
    snapshot_files: Vec<PathBuf>,
    /// Where snapshot bodies are read from.
    cursor: LineCursor,
    /// Scratch for one snapshot line.
    snapshot_line: Vec<u8>,
}

impl Books {
    /// Starts on the snapshots of a new file.
    pub fn snapshot_file(&mut self, path: &Path) {
        self.snapshot_files.push(path.to_path_buf());
    }

    /// Queues the snapshot at `line` of the current snapshot file for the first event of its
    /// symbol received after it.
    pub fn snapshot(&mut self, snap: &SnapshotLine<'_>, line: u64) {
        let symbol = self.symbols.entry(snap.symbol.to_string()).or_default();
        symbol.has_snapshots = true;
        let queue = &mut symbol.snapshots;
        queue.push_back(RecordedSnapshot {
            recv_ns: snap.recv_ns,
            last_update_id: snap.last_update_id,
            file: self.snapshot_files.len() - 1,
            line,
        });
        // Files come in time order, so this is the exception; sorting on every push would make
        // a file of many snapshots quadratic.
        let len = queue.len();
        if len > 1 && queue[len - 2].recv_ns > queue[len - 1].recv_ns {
            queue.make_contiguous().sort_by_key(|s| s.recv_ns);
        }
    }

    /// The book of `symbol`, as far as it was rebuilt.
    pub fn book(&self, symbol: &str) -> Option<&Book> {
        self.symbols.get(symbol).map(|s| &s.book)
    }

    /// Whether any snapshot of `symbol` was queued: without one a diff book never syncs.
    pub fn has_snapshots(&self, symbol: &str) -> bool {
        self.symbols.get(symbol).is_some_and(|s| s.has_snapshots)
    }

    /// Takes an event (not a duplicate) into its symbol's book and calls `applied` with the book
    /// after each event applied, that event's `u` and its payload: the event itself once live,
    /// the events a snapshot bridges, or none while the book waits for a snapshot. Returns
    /// whether the book is whole afterwards.
    pub fn event<E: From<RebuildError>>(
        &mut self,
        h: &DepthLine,
        verdict: Verdict,
        mut applied: impl FnMut(&Book, u64, &str) -> Result<(), E>,
    ) -> Result<bool, E> {
        let payload = |e: crate::market::book::BookError| RebuildError::Payload(e.to_string());
        let state = self.symbols.entry(h.symbol.to_string()).or_default();
        if is_partial(h.stream) {
            state.book.replace_partial(h.data).map_err(payload)?;
            applied(&state.book, h.ids.last, h.data)?;
            return Ok(true);
        }
        if !state.rule_known {
            // Nothing was fed to the sync yet: snapshots wait for the first event.
            state.sync = BookSync::with(depth_continuity(h.data));
            state.rule_known = true;
        }
        while state
            .snapshots
            .front()
            .is_some_and(|s| s.recv_ns <= h.recv_ns)
        {
            let snap = state.snapshots.pop_front().expect("front exists");
            let bridged = match state.sync.snapshot(snap.last_update_id) {
                SnapshotStep::Bridged(bridged) => bridged,
                SnapshotStep::Pending => Vec::new(),
                SnapshotStep::TooOld => continue,
            };
            let path = &self.snapshot_files[snap.file];
            let unreadable = |what: String| {
                RebuildError::Unreadable(format!(
                    "{}: line {}: {what} (the file changed while it was read)",
                    path.display(),
                    snap.line
                ))
            };
            self.cursor
                .read(path, snap.line, &mut self.snapshot_line)
                .map_err(unreadable)?;
            let body = parse_snapshot(&self.snapshot_line)
                .map_err(unreadable)?
                .data;
            state.book.reset_from_snapshot(body).map_err(payload)?;
            // Each snapshot's bridge before the next snapshot resets the book.
            apply(&mut state.book, bridged, &mut applied)?;
        }
        if let Step::Apply(events) = state.sync.event(h.ids, verdict, h.data.to_string()) {
            apply(&mut state.book, events, &mut applied)?;
        }
        Ok(state.sync.is_live())
    }
}

/// Applies diff payloads in order, handing the book after each to `applied`.
fn apply<E: From<RebuildError>>(
    book: &mut Book,
    events: Vec<String>,
    applied: &mut impl FnMut(&Book, u64, &str) -> Result<(), E>,
) -> Result<(), E> {
    for data in events {
        let u = book
            .apply_diff(&data)
            .map_err(|e| E::from(RebuildError::Payload(e.to_string())))?;
        applied(book, u, &data)?;
    }
    Ok(())
}
