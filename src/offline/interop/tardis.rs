//! The research datasets from recordings, as rows of Tardis' normalized datasets:
//! `incremental_book_L2`, `book_snapshot_25` and `book_snapshot_5` from depth and snapshot
//! files, and ([`streams`]) `trades` and `quotes` from the trade (or aggTrade) and bookTicker
//! files; per symbol and UTC day of receipt. The rows go to a [`Sink`]: Tardis' gzip CSV files
//! ([`csv`], named as Tardis names its downloads,
//! `binance-futures_incremental_book_L2_2024-08-08_BTCUSDT.csv.gz`) or Parquet tables
//! ([`super::parquet`]); both formats therefore hold the same rows.
//!
//! The book is rebuilt as `obrec replay --book` rebuilds it ([`BookSync`]): a REST snapshot
//! becomes a run of `is_snapshot=true` rows when it bridges the event chain, every event applied
//! after it one row per level change. Events that reach no synced book (before the first bridge,
//! after a break until the next, those a snapshot covers) cannot be expressed as changes of a
//! known book and are counted as skipped. Rows come in the order the book takes them, so the
//! events a snapshot bridges that were received before it (a few at each sync) keep their own
//! receipt time after the snapshot run's later one; Tardis' own files are otherwise ordered by
//! `local_timestamp`, and so are these. Each day file after the first starts with the whole
//! book as a snapshot run, as Tardis' files start at 00:00 UTC, so that every file stands alone.
//! Both book snapshot datasets are written in the same pass (they cost one book walk per event):
//! a row each time the top N changes. Partial-depth events (`--depth 5/10/20`) are each a whole
//! top-N book, which replaces the last: in `incremental_book_L2` the first of a file is a snapshot
//! run and each later one the levels that changed, levels that left the top N with amount 0 (a
//! run of snapshot rows per event would not do: Tardis readers discard their book only when a
//! snapshot row follows a non-snapshot one); in the book snapshots, a depth-20 stream fills 20 of
//! the 25 levels, the rest being empty cells, as in Tardis.

pub(super) mod csv;
mod streams;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::export::{PendingSnapshot, Snapshots, next_depth, utc_day};
use super::files::{GzLines, Line, OutId, Staged};
use super::{Outcome, Written};
use crate::error::{Error, Result};
use crate::market::book::{Book, Levels};
use crate::market::frame::depth_continuity;
use crate::market::sequence::{BookSync, Chain, SnapshotStep, Step, Verdict};
use crate::market::stream::is_partial;
use crate::offline::progress::{file_done, progress_bar};
use crate::store::line::DepthLine;
use crate::store::names::{FileKind, classify};
use crate::store::names::{no_recordings, recordings};
use crate::util::shutdown::Shutdown;

/// The book snapshot datasets' depths: Tardis publishes these two.
const TOP_DEPTHS: [usize; 2] = [25, 5];
const NS_PER_US: u64 = 1_000;
/// The amount of a level that is gone.
const REMOVED: &str = "0";
const US_PER_MS: u64 = 1_000;

/// Why events were left out, as the summary names them.
const SKIP_UNSYNCED: &str = "events while their book was not synced";
const SKIP_COVERED: &str = "events a snapshot covers";

/// Writes recordings (depth, snapshot, trade, aggTrade and bookTicker files; a data directory is
/// read as its `order_book/`) as Tardis CSV files in `out_dir`, as [`export_rows`] says.
///
/// # Errors
///
/// As [`export_rows`].
pub fn export_tardis(
    paths: &[PathBuf],
    out_dir: &Path,
    gzip_level: u32,
    shutdown: &Shutdown,
) -> Result<Outcome> {
    export_rows(
        paths,
        csv::CsvFiles::new(Staged::new(out_dir, gzip_level)),
        shutdown,
    )
}

/// Writes the rows of recordings into `sink`, with a progress bar on a terminal (advanced a
/// file at a time). When `shutdown` is triggered, stops and writes nothing
/// ([`Outcome::interrupted`]).
///
/// # Errors
///
/// [`Error::Invalid`] for a path that does not exist or holds no event, an input not one line of
/// which is an obrec line, a recording of depth alone in which no book ever synced, a row the
/// sink cannot hold, or an output file that exists (nothing is written then); [`Error::File`]
/// when an output cannot be written.
pub(super) fn export_rows<S: Sink>(
    paths: &[PathBuf],
    sink: S,
    shutdown: &Shutdown,
) -> Result<Outcome> {
    let files = recordings(paths)?;
    let mut outcome = Outcome::default();
    let snapshots = Snapshots::index(&files, shutdown, &mut outcome)?;
    let progress = progress_bar(&files);
    let advance = |path: &PathBuf| file_done(progress.as_ref(), path);
    files
        .iter()
        .filter(|p| classify(p).is_some_and(|(_, kind)| kind == FileKind::Snapshot))
        .for_each(advance);
    let mut ex = Tardis {
        sink,
        snapshots,
        outcome,
        symbols: HashMap::new(),
        top_cells: Vec::new(),
    };
    // Snapshots were read by the index; files named as no recording are read as depth.
    let is_depth = |p: &&PathBuf| classify(p).is_none_or(|(_, kind)| kind == FileKind::Depth);
    for path in files.iter().filter(is_depth) {
        let mut lines = GzLines::open(path, shutdown)?;
        let mut bytes = Vec::new();
        while let Some(line) = next_depth(&mut lines, &mut bytes, &mut ex.outcome)? {
            match ex.event(&line) {
                Ok(()) => {}
                Err(Halt::Damage(what)) => {
                    lines.bad_line(&what, &mut ex.outcome)?;
                    break;
                }
                Err(Halt::Fail(e)) => return Err(e),
            }
        }
        // Nothing of this input stays only in memory while the next one is read.
        for day in ex.symbols.values().filter_map(|s| s.day.as_ref()) {
            for out in day.outs() {
                ex.sink.flush(out)?;
            }
        }
        advance(path);
    }
    streams::write_streams(&files, &mut ex.sink, &mut ex.outcome, shutdown, advance)?;
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let Tardis {
        sink,
        mut outcome,
        symbols,
        ..
    } = ex;
    let mut never: Vec<&String> = symbols
        .iter()
        .filter(|(_, s)| s.day.is_none())
        .map(|(name, _)| name)
        .collect();
    never.sort();
    let (covered, unsynced) = symbols.values().fold((0, 0), |(c, u), s| {
        (c + s.covered, u + (s.diff_events - s.applied - s.covered))
    });
    for (kind, n) in [(SKIP_COVERED, covered), (SKIP_UNSYNCED, unsynced)] {
        if n > 0 {
            outcome.skipped.insert(kind.to_string(), n);
        }
    }
    for symbol in never {
        outcome.warnings.push(format!(
            "{symbol}: its book never synced, so nothing of it is written (pass its {}_snapshot_* \
             files too, or the directory)",
            symbol.to_ascii_lowercase()
        ));
    }
    if shutdown.is_triggered() {
        // Dropped uncommitted: every part file goes.
        outcome.interrupted = true;
        return Ok(outcome);
    }
    outcome.written = sink.commit()?;
    if outcome.written.is_empty() && outcome.damaged.is_empty() {
        if symbols.is_empty() {
            return Err(no_recordings(paths));
        }
        return Err(Error::Invalid(format!(
            "export: no book synced in {} (a snapshot whose lastUpdateId an event \
             bridges is needed)",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        )));
    }
    Ok(outcome)
}

/// A dataset of the exports, written per symbol and UTC day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Dataset {
    /// Every change of a level (Tardis' `incremental_book_L2`).
    BookChanges,
    /// The top N levels of each side each time they change (`book_snapshot_<N>`).
    BookTop(usize),
    Trades,
    Quotes,
}

/// A UTC day: year, month, day.
pub(super) type Date = (i64, u32, u32);

/// One row of a dataset. Prices and amounts are the recorded strings.
pub(super) enum Row<'a> {
    /// A level of the book set to `amount` (`0`: gone); snapshot rows list the whole book.
    /// `update_id` is the book's after the row ([`Book::update_id`]): the event's `u`, or for a
    /// snapshot run the REST snapshot's `lastUpdateId` (at the start of a day, the `u` of the
    /// event the book is at).
    Level {
        times: Times,
        update_id: u64,
        is_snapshot: bool,
        /// `bid` or `ask`.
        side: &'static str,
        price: &'a str,
        amount: &'a str,
    },
    /// The best `depth` levels of each side (fewer when the book holds fewer).
    Top {
        times: Times,
        depth: usize,
        asks: Levels<'a>,
        bids: Levels<'a>,
    },
    Trade {
        times: Times,
        /// The trade's `t` (an aggregate's `a`).
        id: u64,
        /// The taker's: `buy` or `sell`.
        side: &'static str,
        price: &'a str,
        amount: &'a str,
    },
    /// The exchange's best bid and ask.
    Quote {
        times: Times,
        ask_amount: &'a str,
        ask_price: &'a str,
        bid_price: &'a str,
        bid_amount: &'a str,
    },
}

impl Row<'_> {
    /// What the row counts as in the summary: snapshot rows apart, every other row as a depth
    /// line is counted.
    pub(super) fn counted_as(&self) -> Line {
        match self {
            Row::Level {
                is_snapshot: true, ..
            } => Line::Snapshot,
            _ => Line::Depth,
        }
    }
}

/// Where the rows go: one format's files, staged until [`Sink::commit`].
pub(super) trait Sink {
    /// Starts the symbol's output of `dataset` for the day `date`.
    fn open(&mut self, dataset: Dataset, symbol: &str, date: Date) -> Result<OutId>;
    fn row(&mut self, out: OutId, row: Row<'_>) -> Result<()>;
    /// An input was read whole: nothing of it should stay only in memory.
    fn flush(&mut self, out: OutId) -> Result<()>;
    /// The output gets no more rows.
    fn close(&mut self, out: OutId) -> Result<()>;
    /// Gives every output its name, as [`Staged::commit`] does.
    fn commit(self) -> Result<Vec<Written>>;
}

struct Tardis<S> {
    sink: S,
    snapshots: Snapshots,
    outcome: Outcome,
    symbols: HashMap<String, SymbolState>,
    /// Scratch for the cells of a book snapshot row, compared with the last.
    top_cells: Vec<u8>,
}

/// An event waiting in [`BookSync`] for a snapshot, with its receipt time.
struct Waiting {
    data: String,
    recv_ns: u64,
}

/// When a row happened: `timestamp` (exchange) and `local_timestamp` (receipt), in µs.
#[derive(Clone, Copy)]
pub(super) struct Times {
    pub(super) exchange_us: u64,
    pub(super) local_us: u64,
}

#[derive(Default)]
struct SymbolState {
    chain: Chain,
    sync: BookSync<Waiting>,
    book: Book,
    /// A snapshot taken into the book whose rows wait for the event that bridges it.
    unwritten_snapshot: Option<Times>,
    day: Option<DayFiles>,
    /// Diff events taken (duplicates aside), those applied to a synced book, and those a
    /// snapshot covered: the rest reached no synced book.
    diff_events: u64,
    applied: u64,
    covered: u64,
    /// The level cells of the last book snapshot row written, per [`TOP_DEPTHS`], as the CSV
    /// writes them: the row is written again only when they change.
    last_top: [Vec<u8>; TOP_DEPTHS.len()],
}

/// A symbol's files of one UTC day.
struct DayFiles {
    day: u64,
    l2: OutId,
    tops: [OutId; TOP_DEPTHS.len()],
}

impl DayFiles {
    fn outs(&self) -> impl Iterator<Item = OutId> + '_ {
        std::iter::once(self.l2).chain(self.tops.iter().copied())
    }
}

/// The fields of a payload the rows need, strings borrowed as received.
#[derive(Deserialize)]
struct Changes<'a> {
    #[serde(rename = "E")]
    event_ms: u64,
    #[serde(borrow, default)]
    b: Vec<(&'a str, &'a str)>,
    #[serde(borrow, default)]
    a: Vec<(&'a str, &'a str)>,
}

/// A REST snapshot's event time (USD-M bodies carry `E`).
#[derive(Deserialize)]
struct SnapshotTime {
    #[serde(rename = "E")]
    event_ms: Option<u64>,
}

/// Why an event ends the reading of its file.
enum Halt {
    /// The line cannot be converted: the file is damaged there.
    Damage(String),
    /// The conversion cannot go on.
    Fail(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Halt {
        Halt::Fail(e)
    }
}

fn damage(what: impl std::fmt::Display) -> Halt {
    Halt::Damage(what.to_string())
}

impl<S: Sink> Tardis<S> {
    /// Takes one recorded event.
    fn event(&mut self, h: &DepthLine) -> std::result::Result<(), Halt> {
        let state = self
            .symbols
            .entry(h.symbol.to_string())
            .or_insert_with(|| SymbolState {
                sync: BookSync::with(depth_continuity(h.data)),
                ..SymbolState::default()
            });
        if is_partial(h.stream) {
            return self.partial(h);
        }
        let verdict = state.chain.check(h.ids, h.conn);
        if verdict == Verdict::Duplicate {
            return Ok(());
        }
        state.diff_events += 1;
        let mut applied = Vec::new();
        while let Some(snap) = self.snapshots.next_until(h.symbol, h.recv_ns) {
            applied.extend(self.take_snapshot(h.symbol, &snap)?);
        }
        let state = self.symbols.get_mut(h.symbol).expect("entered above");
        let waiting = Waiting {
            data: h.data.to_string(),
            recv_ns: h.recv_ns,
        };
        match state.sync.event(h.ids, verdict, waiting) {
            Step::Apply(events) => applied.extend(events),
            Step::Covered => state.covered += 1,
            Step::Lost => state.unwritten_snapshot = None,
            Step::Buffered => {}
        }
        for event in applied {
            self.diff(h.symbol, &event)?;
        }
        Ok(())
    }

    /// Takes a partial-depth event: the whole top N, so the book is replaced. Its rows are what
    /// changed from the previous top N (levels that left it as amount 0), so that a reader's
    /// book is the event's; the first event of a file is a snapshot run.
    fn partial(&mut self, h: &DepthLine) -> std::result::Result<(), Halt> {
        let state = self.symbols.get_mut(h.symbol).expect("entered before");
        let owned = |levels: Levels<'_>| -> Vec<(String, String)> {
            levels
                .map(|q| (q.price.to_string(), q.qty.to_string()))
                .collect()
        };
        let before = [owned(state.book.bids()), owned(state.book.asks())];
        state.book.replace_partial(h.data).map_err(damage)?;
        let times = Times {
            exchange_us: h.event_ms.saturating_mul(US_PER_MS),
            local_us: h.recv_ns / NS_PER_US,
        };
        let (day, _) = utc_day(h.recv_ns);
        if state.day.as_ref().is_none_or(|d| d.day < day) {
            return Ok(self.whole_book(h.symbol, h.recv_ns, times)?);
        }
        let l2 = self.l2_file(h.symbol, h.recv_ns, times, false)?;
        let book = &self.symbols[h.symbol].book;
        let update_id = book.update_id().unwrap_or_default();
        for (side, levels, before) in [
            ("bid", book.bids(), &before[0]),
            ("ask", book.asks(), &before[1]),
        ] {
            let level = |price, amount| Row::Level {
                times,
                update_id,
                is_snapshot: false,
                side,
                price,
                amount,
            };
            let mut now = Vec::with_capacity(levels.len());
            for q in levels {
                now.push(q.price);
                if !before.iter().any(|(p, a)| p == q.price && a == q.qty) {
                    self.sink.row(l2, level(q.price, q.qty))?;
                }
            }
            // Every level of the previous top N not in this one left it.
            for (price, _) in before.iter().filter(|(p, _)| !now.contains(&p.as_str())) {
                self.sink.row(l2, level(price, REMOVED))?;
            }
        }
        Ok(self.tops(h.symbol, times)?)
    }

    /// Offers a recorded snapshot to the symbol's sync and, unless it is too old to be used,
    /// takes it into the book: the events it bridges are returned.
    fn take_snapshot(&mut self, symbol: &str, snap: &PendingSnapshot) -> Result<Vec<Waiting>> {
        let line = self.snapshots.read(snap)?;
        let state = self.symbols.get_mut(symbol).expect("entered before");
        let events = match state.sync.snapshot(line.last_update_id) {
            SnapshotStep::Bridged(events) => events,
            SnapshotStep::Pending => Vec::new(),
            SnapshotStep::TooOld => return Ok(Vec::new()),
        };
        let bad = |what: String| {
            Error::Invalid(format!(
                "{symbol}: snapshot received at {} ns: {what}",
                line.recv_ns
            ))
        };
        state
            .book
            .reset_from_snapshot(line.data)
            .map_err(|e| bad(e.to_string()))?;
        let exchange_ms = serde_json::from_str::<SnapshotTime>(line.data)
            .map_err(|e| bad(e.to_string()))?
            .event_ms;
        let local_us = line.recv_ns / NS_PER_US;
        state.unwritten_snapshot = Some(Times {
            // A body without `E` (not USD-M) is dated by its receipt.
            exchange_us: exchange_ms.map_or(local_us, |ms| ms.saturating_mul(US_PER_MS)),
            local_us,
        });
        Ok(events)
    }

    /// Applies one synced diff event and writes its rows, after the rows of the snapshot it
    /// bridges, if any.
    fn diff(&mut self, symbol: &str, event: &Waiting) -> std::result::Result<(), Halt> {
        let changes: Changes = serde_json::from_str(&event.data)
            .map_err(|e| damage(format!("bad depthUpdate: {e}")))?;
        let times = Times {
            exchange_us: changes.event_ms.saturating_mul(US_PER_MS),
            local_us: event.recv_ns / NS_PER_US,
        };
        let state = self.symbols.get_mut(symbol).expect("entered before");
        if let Some(at) = state.unwritten_snapshot.take() {
            // The snapshot is the book before this event: its rows come first.
            self.whole_book(symbol, event.recv_ns, at)?;
        }
        let l2 = self.l2_file(symbol, event.recv_ns, times, false)?;
        let state = self.symbols.get_mut(symbol).expect("entered before");
        let update_id = state.book.apply_diff(&event.data).map_err(damage)?;
        state.applied += 1;
        for (side, levels) in [("bid", &changes.b), ("ask", &changes.a)] {
            for (price, amount) in levels {
                let row = Row::Level {
                    times,
                    update_id,
                    is_snapshot: false,
                    side,
                    price,
                    amount,
                };
                self.sink.row(l2, row)?;
            }
        }
        Ok(self.tops(symbol, times)?)
    }

    /// Writes the whole book as a snapshot run, and the book snapshot rows.
    fn whole_book(&mut self, symbol: &str, recv_ns: u64, times: Times) -> Result<()> {
        let l2 = self.l2_file(symbol, recv_ns, times, true)?;
        self.snapshot_run(symbol, l2, times)?;
        self.tops(symbol, times)
    }

    fn snapshot_run(&mut self, symbol: &str, l2: OutId, times: Times) -> Result<()> {
        let book = &self.symbols[symbol].book;
        let update_id = book.update_id().unwrap_or_default();
        for (side, levels) in [("bid", book.bids()), ("ask", book.asks())] {
            for q in levels {
                let row = Row::Level {
                    times,
                    update_id,
                    is_snapshot: true,
                    side,
                    price: q.price,
                    amount: q.qty,
                };
                self.sink.row(l2, row)?;
            }
        }
        Ok(())
    }

    /// Writes a book snapshot row for each depth whose top levels changed.
    fn tops(&mut self, symbol: &str, times: Times) -> Result<()> {
        let state = self.symbols.get_mut(symbol).expect("entered before");
        let Some(day) = &state.day else {
            return Ok(());
        };
        for (i, depth) in TOP_DEPTHS.into_iter().enumerate() {
            let top = state.book.top(depth);
            self.top_cells.clear();
            csv::push_top_cells(
                &mut self.top_cells,
                top.asks.clone(),
                top.bids.clone(),
                depth,
            );
            if self.top_cells == state.last_top[i] {
                continue;
            }
            std::mem::swap(&mut state.last_top[i], &mut self.top_cells);
            let row = Row::Top {
                times,
                depth,
                asks: top.asks,
                bids: top.bids,
            };
            self.sink.row(day.tops[i], row)?;
        }
        Ok(())
    }

    /// The symbol's `incremental_book_L2` file for rows received at `recv_ns`: the current one,
    /// or a new day's (with its book snapshot files), which starts with the whole synced book
    /// unless `whole_book_follows`. Rows that arrive late across midnight stay in the newer file.
    fn l2_file(
        &mut self,
        symbol: &str,
        recv_ns: u64,
        times: Times,
        whole_book_follows: bool,
    ) -> Result<OutId> {
        let (day, date) = utc_day(recv_ns);
        let state = self.symbols.get_mut(symbol).expect("entered before");
        let new_day = match &state.day {
            Some(current) if current.day >= day => return Ok(current.l2),
            Some(current) => {
                for out in current.outs() {
                    self.sink.close(out)?;
                }
                true
            }
            None => false,
        };
        let l2 = self.sink.open(Dataset::BookChanges, symbol, date)?;
        let mut tops = [0; TOP_DEPTHS.len()];
        for (out, depth) in tops.iter_mut().zip(TOP_DEPTHS) {
            *out = self.sink.open(Dataset::BookTop(depth), symbol, date)?;
        }
        let state = self.symbols.get_mut(symbol).expect("entered before");
        state.day = Some(DayFiles { day, l2, tops });
        // A new day's book snapshot files start with a row too.
        state.last_top.iter_mut().for_each(Vec::clear);
        if new_day && !whole_book_follows && state.sync.is_live() {
            self.snapshot_run(symbol, l2, times)?;
        }
        Ok(l2)
    }
}
