//! Tardis' normalized CSV datasets from recordings: `incremental_book_L2`, `book_snapshot_25` and
//! `book_snapshot_5` from depth and snapshot files, and ([`streams`]) `trades` and `quotes` from
//! the trade (or aggTrade) and bookTicker files; gzip CSV per symbol and UTC day of receipt,
//! named as Tardis names its downloads
//! (`binance-futures_incremental_book_L2_2024-08-08_BTCUSDT.csv.gz`,
//! `binance-futures_trades_2024-08-08_BTCUSDT.csv.gz`).
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

mod streams;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Outcome;
use super::export::{PendingSnapshot, Snapshots, next_depth, utc_day};
use super::files::{GzLines, Line, OutId, Staged};
use crate::error::{Error, Result};
use crate::market::book::{Book, Levels};
use crate::market::sequence::{BookSync, Chain, SnapshotStep, Step, Verdict};
use crate::market::stream::is_partial;
use crate::offline::progress::progress_bar;
use crate::store::line::DepthLine;
use crate::store::names::{FileKind, classify};
use crate::store::names::{no_recordings, recordings};
use crate::util::shutdown::Shutdown;

/// Tardis' exchange id for Binance USD-M futures.
const EXCHANGE: &str = "binance-futures";
const L2_HEADER: &str = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount";
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
/// read as its `order_book/`) as Tardis CSV files in `out_dir`, with a progress bar on a
/// terminal (advanced a file at a time). When `shutdown` is triggered, stops and writes nothing
/// ([`Outcome::interrupted`]).
///
/// # Errors
///
/// [`Error::Invalid`] for a path that does not exist or holds no event, an input not one line of
/// which is an obrec line, a recording of depth alone in which no book ever synced, or an output
/// file that exists (nothing is written then); [`Error::File`] when an output cannot be written.
pub fn export_tardis(
    paths: &[PathBuf],
    out_dir: &Path,
    gzip_level: u32,
    shutdown: &Shutdown,
) -> Result<Outcome> {
    let files = recordings(paths)?;
    let mut outcome = Outcome::default();
    let snapshots = Snapshots::index(&files, shutdown, &mut outcome)?;
    let progress = progress_bar(&files);
    let advance = |path: &PathBuf| {
        if let Some(bar) = &progress {
            bar.inc(std::fs::metadata(path).map_or(0, |m| m.len()));
        }
    };
    files
        .iter()
        .filter(|p| classify(p).is_some_and(|(_, kind)| kind == FileKind::Snapshot))
        .for_each(advance);
    let mut ex = Tardis {
        staged: Staged::new(out_dir, gzip_level),
        snapshots,
        outcome,
        symbols: HashMap::new(),
        row: Vec::new(),
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
                ex.staged.flush(out)?;
            }
        }
        advance(path);
    }
    streams::write_streams(&files, &mut ex.staged, &mut ex.outcome, shutdown, advance)?;
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let Tardis {
        staged,
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
    outcome.written = staged.commit()?;
    if outcome.written.is_empty() && outcome.damaged.is_empty() {
        if symbols.is_empty() {
            return Err(no_recordings(paths));
        }
        return Err(Error::Invalid(format!(
            "tardis export: no book synced in {} (a snapshot whose lastUpdateId an event \
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

struct Tardis {
    staged: Staged,
    snapshots: Snapshots,
    outcome: Outcome,
    symbols: HashMap<String, SymbolState>,
    /// Scratch for the rows of one event.
    row: Vec<u8>,
}

/// An event waiting in [`BookSync`] for a snapshot, with its receipt time.
struct Waiting {
    data: String,
    recv_ns: u64,
}

/// When a row happened: `timestamp` (exchange) and `local_timestamp` (receipt), in µs.
#[derive(Clone, Copy)]
struct Times {
    exchange_us: u64,
    local_us: u64,
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
    /// The level cells of the last book snapshot row written, per [`TOP_DEPTHS`].
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

impl Tardis {
    /// Takes one recorded event.
    fn event(&mut self, h: &DepthLine) -> std::result::Result<(), Halt> {
        let state = self.symbols.entry(h.symbol.to_string()).or_default();
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
        self.row.clear();
        let mut rows = 0;
        for (side, levels, before) in [
            ("bid", book.bids(), &before[0]),
            ("ask", book.asks(), &before[1]),
        ] {
            let mut now = Vec::with_capacity(levels.len());
            for q in levels {
                now.push(q.price);
                if !before.iter().any(|(p, a)| p == q.price && a == q.qty) {
                    push_l2_row(&mut self.row, h.symbol, times, false, side, q.price, q.qty);
                    rows += 1;
                }
            }
            // Every level of the previous top N not in this one left it.
            for (price, _) in before.iter().filter(|(p, _)| !now.contains(&p.as_str())) {
                push_l2_row(&mut self.row, h.symbol, times, false, side, price, REMOVED);
                rows += 1;
            }
        }
        self.staged.push_lines(l2, &self.row, rows, Line::Depth)?;
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
        state.book.apply_diff(&event.data).map_err(damage)?;
        state.applied += 1;
        self.row.clear();
        for (side, levels) in [("bid", &changes.b), ("ask", &changes.a)] {
            for (price, amount) in levels {
                push_l2_row(&mut self.row, symbol, times, false, side, price, amount);
            }
        }
        let rows = (changes.b.len() + changes.a.len()) as u64;
        self.staged.push_lines(l2, &self.row, rows, Line::Depth)?;
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
        self.row.clear();
        let mut rows = 0;
        for (side, levels) in [("bid", book.bids()), ("ask", book.asks())] {
            for q in levels {
                push_l2_row(&mut self.row, symbol, times, true, side, q.price, q.qty);
                rows += 1;
            }
        }
        self.staged.push_lines(l2, &self.row, rows, Line::Snapshot)
    }

    /// Writes a book snapshot row for each depth whose top levels changed.
    fn tops(&mut self, symbol: &str, times: Times) -> Result<()> {
        let state = self.symbols.get_mut(symbol).expect("entered before");
        let Some(day) = &state.day else {
            return Ok(());
        };
        for (i, depth) in TOP_DEPTHS.iter().enumerate() {
            let top = state.book.top(*depth);
            self.row.clear();
            push_top_cells(&mut self.row, top.asks, top.bids, *depth);
            if self.row == state.last_top[i] {
                continue;
            }
            std::mem::swap(&mut state.last_top[i], &mut self.row);
            self.row.clear();
            push_prefix(&mut self.row, symbol, times);
            // The cells start with their comma.
            self.row.extend_from_slice(&state.last_top[i]);
            self.row.push(b'\n');
            self.staged.push(day.tops[i], &self.row, Line::Depth)?;
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
        let (day, (y, m, d)) = utc_day(recv_ns);
        let state = self.symbols.get_mut(symbol).expect("entered before");
        let new_day = match &state.day {
            Some(current) if current.day >= day => return Ok(current.l2),
            Some(current) => {
                for out in current.outs() {
                    self.staged.close(out)?;
                }
                true
            }
            None => false,
        };
        let name = |dataset: &str| day_file_name(dataset, (y, m, d), symbol);
        let l2 = self.staged.create(&name("incremental_book_L2"))?;
        self.staged
            .push(l2, format!("{L2_HEADER}\n").as_bytes(), Line::Header)?;
        let mut tops = [0; TOP_DEPTHS.len()];
        for (out, depth) in tops.iter_mut().zip(TOP_DEPTHS) {
            *out = self
                .staged
                .create(&name(&format!("book_snapshot_{depth}")))?;
            self.staged.push(*out, &top_header(depth), Line::Header)?;
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

/// `binance-futures_<dataset>_<YYYY-MM-DD>_<SYMBOL>.csv.gz`, as Tardis names its downloads.
fn day_file_name(dataset: &str, (y, m, d): (i64, u32, u32), symbol: &str) -> String {
    format!("{EXCHANGE}_{dataset}_{y:04}-{m:02}-{d:02}_{symbol}.csv.gz")
}

/// `exchange,symbol,timestamp,local_timestamp`.
fn push_prefix(out: &mut Vec<u8>, symbol: &str, times: Times) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(EXCHANGE.as_bytes());
    out.push(b',');
    out.extend_from_slice(symbol.as_bytes());
    out.push(b',');
    out.extend_from_slice(num.format(times.exchange_us).as_bytes());
    out.push(b',');
    out.extend_from_slice(num.format(times.local_us).as_bytes());
}

/// One `incremental_book_L2` row; price and amount as received (decimal text needs no quoting).
fn push_l2_row(
    out: &mut Vec<u8>,
    symbol: &str,
    times: Times,
    is_snapshot: bool,
    side: &str,
    price: &str,
    amount: &str,
) {
    push_prefix(out, symbol, times);
    out.extend_from_slice(if is_snapshot { b",true," } else { b",false," });
    out.extend_from_slice(side.as_bytes());
    out.push(b',');
    out.extend_from_slice(price.as_bytes());
    out.push(b',');
    out.extend_from_slice(amount.as_bytes());
    out.push(b'\n');
}

/// `,asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,…` for `depth` levels, empty
/// cells where the book has fewer.
fn push_top_cells(out: &mut Vec<u8>, mut asks: Levels<'_>, mut bids: Levels<'_>, depth: usize) {
    for _ in 0..depth {
        for level in [asks.next(), bids.next()] {
            let (price, qty) = level.map_or(("", ""), |q| (q.price, q.qty));
            out.push(b',');
            out.extend_from_slice(price.as_bytes());
            out.push(b',');
            out.extend_from_slice(qty.as_bytes());
        }
    }
}

/// The `book_snapshot_<depth>` header, asks then bids per level as Tardis orders them.
fn top_header(depth: usize) -> Vec<u8> {
    let mut header = String::from("exchange,symbol,timestamp,local_timestamp");
    for i in 0..depth {
        for side in ["asks", "bids"] {
            header.push_str(&format!(",{side}[{i}].price,{side}[{i}].amount"));
        }
    }
    header.push('\n');
    header.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_snapshot_header_interleaves_asks_and_bids_per_level() {
        let header = String::from_utf8(top_header(2)).unwrap();
        assert_eq!(
            header,
            "exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,\
             bids[0].price,bids[0].amount,asks[1].price,asks[1].amount,bids[1].price,\
             bids[1].amount\n"
        );
    }
}
