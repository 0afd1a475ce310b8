//! The writer thread: records in, gzip NDJSON files and `metrics.json` out.
//!
//! Each file is a series of complete gzip members. Lines accumulate per symbol in memory and are
//! handed to the [`compress`](super::compress) stage as one member when the buffer is large or
//! `--flush-ms` has passed; it compresses the member and writes it with a single `write`. So at
//! any instant the file on disk is valid gzip up to its last flush: `zcat`, Python's `gzip` and
//! pandas read a live `.part` file, or one left by `kill -9`, without an error. One compressor
//! serves every symbol, which keeps memory flat with hundreds of symbols. A finished file is
//! fsynced, then renamed from `.part` to its final name.
//!
//! The first failure to write ends the run. Files already written are finished, but the file
//! whose write failed keeps its `.part` name, cut back to its whole members, for crash recovery
//! at the next start. Once a second the data directory itself is checked, so that its removal is
//! noticed within that second rather than when a file is next created in it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::error::{Error, Result};
use crate::market::symbol::Symbol;
use crate::metrics::nats::Relay;
use crate::metrics::{Metrics, Report, ReportClock, Stats};
use crate::recorder::budget::Outlet;
use crate::recorder::compress::{self, Done, Job};
use crate::recorder::console::Printer;
use crate::recorder::event::{
    DepthRecord, Event, KindRecord, ListedRecord, MetaRecord, RetiredRecord, SnapshotRecord,
    StreamFiles, SymbolFiles, Target,
};
use crate::store::gzip::MEMBER_BYTES;
use crate::store::line::{
    MetaLine, SnapshotLine, encode_depth, encode_kind, encode_meta, encode_snapshot,
};
use crate::store::names::{FileKind, METRICS_FILE, series};
use crate::store::relayed::{EventKey, Relayed, Series as RelaySeries};
use crate::store::staged::{DirWatch, OpenFile, create_unique, write_atomic};
use crate::util::clock::wall_ns;

/// Longest interval between checks of the flush deadlines.
const MAX_FLUSH_CHECK: Duration = Duration::from_millis(50);
/// Line bytes handed to the compression stage and not yet written. Past this the writer waits
/// for the stage, and the queue in front of it absorbs the burst: a bound on memory, sixteen
/// full members, far more than the stage holds at any rate it keeps up with.
const MAX_IN_FLIGHT: usize = 16 * MEMBER_BYTES;
/// Line bytes held in all sinks together before every sink is handed to the compression stage
/// at once. With hundreds of symbols and streams each holding up to a `--flush-ms` of lines, a
/// burst would otherwise hold more here than the hand-off's budget; past this the writer hands
/// everything on, and waits for the stage past [`MAX_IN_FLIGHT`], so readers wait rather than the
/// writer's memory grow.
const MAX_PENDING: usize = 32 * MEMBER_BYTES;
/// Events taken from the queue in one go before the clocks are looked at.
const RECV_BATCH: usize = 256;
/// A drain at least this large means events arrive faster than one per wake-up is worth.
const BUSY_BATCH: usize = 16;
/// How long a busy writer naps before taking the next batch: short against `--flush-ms`, long
/// against the cost of a wake-up.
const BUSY_NAP: Duration = Duration::from_micros(200);
/// How often the writer looks for files whose period has ended, and has the data directory
/// checked: a directory removed under the run is noticed within this.
const PERIOD_CHECK: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// `<data-dir>/order_book`.
    pub dir: PathBuf,
    pub symbols: Vec<SymbolFiles>,
    /// The streams beside the book, indexed by `StreamId`.
    pub streams: Vec<StreamFiles>,
    /// Length of a data file's period; periods are aligned to UTC midnight.
    pub file_period: Duration,
    /// Most time a received line may sit only in memory.
    pub flush_every: Duration,
    /// SUMMARY and `metrics.json` refresh.
    pub print_every: Duration,
    pub gzip_level: u32,
    /// `--nats`: every line written is also handed here.
    pub relay: Option<Relay>,
}

/// A file series of the run, by the index of its symbol or stream.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Series {
    Depth(usize),
    Snapshot(usize),
    Stream(usize),
}

/// One series' current file: a symbol's depth or snapshots, or a stream beside the book.
struct Sink {
    /// The file series, e.g. `ethusdt_depth`.
    series: String,
    /// The same series for the relay, shared by each line handed to it.
    relay_as: Arc<RelaySeries>,
    /// Lines not yet compressed.
    pending: Vec<u8>,
    /// The part of `pending`'s length already added to `Writer::pending`.
    counted: usize,
    /// When the oldest pending line arrived (monotonic, for the flush deadline).
    pending_since: Option<Instant>,
    /// Receipt time of the first line of the current period, which names the file.
    first_ns: u64,
    /// The UTC period of the open file and pending lines.
    period: Option<u64>,
    open: Option<Arc<OpenFile>>,
    /// Its symbol was delisted and its file finished: a line that still comes is not one the
    /// exchange sent while the symbol traded, and must not start a new file.
    retired: bool,
}

impl Sink {
    fn new(symbol: &Symbol, kind: FileKind) -> Sink {
        Sink {
            series: series(symbol, kind),
            relay_as: Arc::new(RelaySeries {
                symbol: symbol.clone(),
                kind,
            }),
            pending: Vec::new(),
            counted: 0,
            pending_since: None,
            first_ns: 0,
            period: None,
            open: None,
            retired: false,
        }
    }
}

/// The writer's end of the compression stage.
struct Stage {
    /// Dropped to tell the stage there is nothing more.
    jobs: Option<Sender<Vec<Job>>>,
    /// Jobs of this turn of the loop, sent together at its end.
    outbox: Vec<Job>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    /// Line bytes sent and not yet reported done.
    in_flight: usize,
    /// Shared with the stage, which checks it; a directory found gone gets no final metrics.
    dir: Arc<DirWatch>,
}

/// Files, the compression stage and metrics: everything the writer thread owns.
pub struct Writer {
    config: WriterConfig,
    /// Every series, in the order they were added ([`Writer::sink_of`]).
    sinks: Vec<Sink>,
    /// Where each series' sink is in `sinks`: a listing adds series while the run goes on.
    sink_index: HashMap<Series, usize>,
    stage: Stage,
    /// Line bytes held in all sinks: past [`MAX_PENDING`] every sink is handed on.
    pending: usize,
    metrics: Metrics,
    stats: Arc<Stats>,
    /// SUMMARY lines go to stdout through it, never blocking the writer.
    printer: Printer,
    started: Instant,
    last_report: Instant,
}

impl Writer {
    /// Prepares the files' bookkeeping and starts the compression thread.
    pub fn new(config: WriterConfig, stats: Arc<Stats>, printer: Printer) -> Result<Writer> {
        let metrics = Metrics::new(
            config
                .symbols
                .iter()
                .map(|s| s.symbol.to_string())
                .collect(),
        );
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done) = crossbeam_channel::unbounded();
        let level = config.gzip_level;
        let dir = Arc::new(DirWatch::new(&config.dir)?);
        let watch = Arc::clone(&dir);
        let thread = std::thread::Builder::new()
            .name("compress".into())
            .spawn(move || compress::run(level, &watch, jobs_rx, done_tx))
            .map_err(|e| Error::Spawn("compress", e))?;
        let now = Instant::now();
        let (symbols, streams) = (config.symbols.clone(), config.streams.clone());
        let mut writer = Writer {
            config: WriterConfig {
                symbols: Vec::new(),
                streams: Vec::new(),
                ..config
            },
            sinks: Vec::new(),
            sink_index: HashMap::new(),
            stage: Stage {
                jobs: Some(jobs),
                outbox: Vec::new(),
                done,
                thread: Some(thread),
                in_flight: 0,
                dir,
            },
            pending: 0,
            metrics,
            stats,
            printer,
            started: now,
            last_report: now,
        };
        for symbol in symbols {
            writer.add_symbol(symbol);
        }
        for stream in streams {
            writer.add_stream(stream);
        }
        Ok(writer)
    }

    /// Adds the series of a symbol's depth and snapshots, under the next symbol id.
    fn add_symbol(&mut self, files: SymbolFiles) {
        let id = self.config.symbols.len();
        for (kind, of) in [
            (FileKind::Depth, Series::Depth(id)),
            (FileKind::Snapshot, Series::Snapshot(id)),
        ] {
            self.sink_index.insert(of, self.sinks.len());
            self.sinks.push(Sink::new(&files.symbol, kind));
        }
        self.config.symbols.push(files);
    }

    /// Adds the series of a stream beside the book, under the next stream id.
    fn add_stream(&mut self, files: StreamFiles) {
        let id = self.config.streams.len();
        self.sink_index.insert(Series::Stream(id), self.sinks.len());
        self.sinks
            .push(Sink::new(&files.symbol, FileKind::Stream(files.kind)));
        self.config.streams.push(files);
    }

    /// Runs until every sender is gone, then finishes every file and writes the final metrics.
    ///
    /// On a file error the run ends: the error is returned after a best effort to finish the other
    /// files and write final metrics, so a supervisor restart starts from intact files. Failures
    /// after the first are logged; the first is left to the caller to report, once.
    pub fn run(mut self, rx: Outlet) -> Result<Report> {
        let mut errors = Vec::new();
        errors.extend(self.pump(&rx).err());
        // Stop the readers' sends from piling up while files are finished.
        drop(rx);
        if !self.stage.dir.is_lost() {
            self.close_all(&mut errors);
        }
        self.drain_stage(&mut errors);
        // The stage is gone, so the final figures include every byte it wrote.
        let report = self.report();
        if !self.stage.dir.is_lost() {
            let path = self.config.dir.join(METRICS_FILE);
            errors.extend(write_atomic(&path, &report.1).err());
        }
        let mut errors = errors.into_iter();
        match errors.next() {
            Some(first) => {
                errors.for_each(|e| log::error!("{e}"));
                Err(first)
            }
            None => Ok(report.0),
        }
    }

    fn pump(&mut self, outlet: &Outlet) -> Result<()> {
        let rx = outlet.receiver();
        let check_every =
            (self.config.flush_every / 10).clamp(Duration::from_millis(1), MAX_FLUSH_CHECK);
        let mut next_check = Instant::now() + check_every;
        let mut next_period_check = Instant::now() + PERIOD_CHECK;
        let mut next_report = Instant::now() + self.config.print_every;
        let mut busy = false;
        loop {
            let timeout = next_check
                .min(next_report)
                .saturating_duration_since(Instant::now());
            if busy && !timeout.is_zero() {
                // Under load, napping beats being woken for every event: a wake-up costs both
                // threads a context switch, a nap lets a batch pile up.
                std::thread::sleep(BUSY_NAP.min(timeout));
            }
            let mut taken = 0;
            match rx.recv_timeout(if busy { Duration::ZERO } else { timeout }) {
                Ok(event) => {
                    self.metrics.observe_queue_depth(rx.len());
                    let mut cost = event.cost();
                    self.handle(event)?;
                    taken = 1;
                    // Take what else is queued before looking at the clocks.
                    for event in rx.try_iter().take(RECV_BATCH) {
                        cost += event.cost();
                        self.handle(event)?;
                        taken += 1;
                    }
                    // Once a batch, not once an event: the budget's lock is shared with readers.
                    outlet.release(cost, taken);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            busy = taken >= BUSY_BATCH;
            while let Ok(done) = self.stage.done.try_recv() {
                self.settle(done)?;
            }
            let now = Instant::now();
            if now >= next_check {
                self.flush_due(now, check_every)?;
                next_check = now + check_every;
            }
            if now >= next_period_check {
                self.close_finished_periods()?;
                self.queue(Job::CheckDir)?;
                next_period_check = now + PERIOD_CHECK;
            }
            if now >= next_report {
                let (report, body) = self.report();
                // A rename can wait seconds on a disk busy with writeback: the stage does it.
                let path = self.config.dir.join(METRICS_FILE);
                self.queue(Job::Replace { path, body })?;
                self.printer.print(report.summary_line());
                log::info!("{}", report.summary_line());
                next_report += self.config.print_every;
                if next_report < now {
                    next_report = now + self.config.print_every;
                }
            }
            self.dispatch()?;
        }
    }

    fn handle(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Depth(rec) => self.depth_line(&rec),
            Event::Snapshot(snap) => self.snapshot_line(&snap),
            Event::Kind(rec) => self.kind_line(&rec),
            Event::Meta(meta) => self.meta_lines(&meta),
            Event::Listed(listed) => {
                self.listed(listed);
                Ok(())
            }
            Event::Retired(retired) => self.retired(&retired),
        }
    }

    /// Takes a symbol listed during the run, under the ids the run gave it.
    fn listed(&mut self, listed: ListedRecord) {
        if listed.symbol_id != self.config.symbols.len()
            || listed.first_stream != self.config.streams.len()
        {
            // Ids are given by one thread in the order it sends listings: a mismatch is a bug,
            // and a symbol recorded under another's name would be worse than one not recorded.
            log::error!(
                "listing of {} out of order (symbol id {}, stream id {}): not recorded",
                listed.symbol.symbol,
                listed.symbol_id,
                listed.first_stream
            );
            return;
        }
        let name = listed.symbol.symbol.to_string();
        self.add_symbol(listed.symbol);
        self.metrics.add_symbol(name);
        for stream in listed.streams {
            self.add_stream(stream);
        }
    }

    /// Finishes the files of a delisted symbol's streams, for good.
    fn retired(&mut self, retired: &RetiredRecord) -> Result<()> {
        let series = retired.targets.iter().flat_map(|target| match *target {
            Target::Depth(symbol) => vec![Series::Depth(symbol), Series::Snapshot(symbol)],
            Target::Stream(stream) => vec![Series::Stream(stream)],
        });
        let sinks: Vec<usize> = series.filter_map(|s| self.sink_of(s)).collect();
        for sink in sinks {
            let written = self.sinks[sink].open.is_some() || !self.sinks[sink].pending.is_empty();
            self.finish(sink)?;
            self.sinks[sink].retired = true;
            if written {
                log::info!("{}: delisted, its file finished", self.sinks[sink].series);
            }
        }
        Ok(())
    }

    /// Where a series' sink is in `sinks`; `None` for an index the run does not have, or a
    /// series whose symbol was delisted.
    fn sink_of(&self, series: Series) -> Option<usize> {
        self.sink_index
            .get(&series)
            .copied()
            .filter(|&sink| !self.sinks[sink].retired)
    }

    /// Makes ready to take a line for `sink`: the file of the receipt time's period.
    fn before_line(&mut self, sink: usize, recv_ns: u64) -> Result<()> {
        let period = self.period_of(recv_ns);
        self.enter_period(sink, period, recv_ns)
    }

    /// A line was added to `sink`: starts its flush clock, and hands a member's worth on, or
    /// every sink's lines when all of them together hold [`MAX_PENDING`].
    fn after_line(&mut self, sink: usize) -> Result<()> {
        let taken = &mut self.sinks[sink];
        taken.pending_since.get_or_insert_with(Instant::now);
        self.pending += taken.pending.len() - taken.counted;
        taken.counted = taken.pending.len();
        if taken.pending.len() >= MEMBER_BYTES {
            self.emit(sink)?;
        }
        if self.pending >= MAX_PENDING {
            for sink in 0..self.sinks.len() {
                self.emit(sink)?;
            }
        }
        Ok(())
    }

    fn depth_line(&mut self, rec: &DepthRecord) -> Result<()> {
        let Some(sink) = self.sink_of(Series::Depth(rec.symbol)) else {
            return Ok(());
        };
        self.before_line(sink, rec.recv_ns)?;
        let pipeline_ns = rec.recv_at.elapsed().as_nanos() as u64;
        let spec = &self.config.symbols[rec.symbol];
        let line = rec.line(spec.symbol.as_str(), &spec.stream, pipeline_ns / 1_000);
        let start = self.sinks[sink].pending.len();
        encode_depth(&mut self.sinks[sink].pending, &line);
        self.relay(sink, start, rec.recv_ns, || EventKey::of_depth(rec.ids));
        self.metrics.observe_pipeline(pipeline_ns);
        self.metrics
            .observe(rec.symbol, rec.recv_ns, rec.event_ms, rec.ids);
        self.after_line(sink)
    }

    fn kind_line(&mut self, rec: &KindRecord) -> Result<()> {
        let Some(sink) = self.sink_of(Series::Stream(rec.stream)) else {
            return Ok(());
        };
        self.before_line(sink, rec.recv_ns)?;
        let pipeline_ns = rec.recv_at.elapsed().as_nanos() as u64;
        let spec = &self.config.streams[rec.stream];
        let line = rec.line(spec.symbol.as_str(), &spec.stream, pipeline_ns / 1_000);
        let start = self.sinks[sink].pending.len();
        encode_kind(&mut self.sinks[sink].pending, &line);
        self.relay(sink, start, rec.recv_ns, || {
            EventKey::of_kind(rec.ids, rec.event_ms, line.data)
        });
        self.metrics.observe_pipeline(pipeline_ns);
        if rec.backfill {
            Stats::bump(&self.stats.streams[rec.stream].backfilled);
        }
        self.after_line(sink)
    }

    /// A connection notice goes to the file of every stream the connection carried.
    fn meta_lines(&mut self, meta: &MetaRecord) -> Result<()> {
        let line = MetaLine {
            meta: meta.meta,
            recv_ns: meta.recv_ns,
            conn: meta.conn,
            data: &meta.frame.as_str()[meta.data.clone()],
        };
        for target in &meta.targets {
            let series = match *target {
                Target::Depth(symbol) => Series::Depth(symbol),
                Target::Stream(stream) => Series::Stream(stream),
            };
            if let Some(sink) = self.sink_of(series) {
                self.before_line(sink, meta.recv_ns)?;
                let start = self.sinks[sink].pending.len();
                encode_meta(&mut self.sinks[sink].pending, &line);
                self.relay(sink, start, meta.recv_ns, || EventKey::of_meta(line.data));
                self.after_line(sink)?;
            }
        }
        Ok(())
    }

    fn snapshot_line(&mut self, snap: &SnapshotRecord) -> Result<()> {
        let Some(sink) = self.sink_of(Series::Snapshot(snap.symbol)) else {
            return Ok(());
        };
        self.before_line(sink, snap.recv_ns)?;
        let spec = &self.config.symbols[snap.symbol];
        let line = SnapshotLine {
            recv_ns: snap.recv_ns,
            symbol: spec.symbol.as_str(),
            last_update_id: snap.last_update_id,
            data: &snap.body,
        };
        let start = self.sinks[sink].pending.len();
        encode_snapshot(&mut self.sinks[sink].pending, &line);
        self.relay(sink, start, snap.recv_ns, || {
            EventKey::of_snapshot(snap.last_update_id)
        });
        // Snapshots are rare and a replay needs them with their events: write at once.
        self.emit(sink)
    }

    /// With `--nats`, hands the line written to `sink` from `start` on to the relay; without,
    /// costs nothing, not even the key.
    fn relay(&self, sink: usize, start: usize, recv_ns: u64, key: impl FnOnce() -> EventKey) {
        if let Some(relay) = &self.config.relay {
            let sink = &self.sinks[sink];
            relay.offer(Relayed {
                series: Arc::clone(&sink.relay_as),
                key: key(),
                recv_ns,
                line: sink.pending[start..].to_vec(),
            });
        }
    }

    fn period_of(&self, recv_ns: u64) -> u64 {
        recv_ns / self.config.file_period.as_nanos().max(1) as u64
    }

    /// Makes `period` the sink's current one, finishing the file of an earlier period first.
    fn enter_period(&mut self, sink: usize, period: u64, recv_ns: u64) -> Result<()> {
        match self.sinks[sink].period {
            Some(current) if current >= period => return Ok(()),
            Some(_) => self.finish(sink)?,
            None => {}
        }
        let entered = &mut self.sinks[sink];
        entered.period = Some(period);
        entered.first_ns = recv_ns;
        Ok(())
    }

    /// Hands the pending lines to the compression stage as one member of the sink's file, opening
    /// the file on its first member.
    fn emit(&mut self, sink: usize) -> Result<()> {
        if self.sinks[sink].pending.is_empty() {
            return Ok(());
        }
        let file = match &self.sinks[sink].open {
            Some(open) => Arc::clone(open),
            None => {
                let opened = Arc::new(self.open_file(sink)?);
                self.sinks[sink].open = Some(Arc::clone(&opened));
                opened
            }
        };
        let sink = &mut self.sinks[sink];
        // A busy symbol fills the next member to the same size: one allocation per member.
        let next = Vec::with_capacity(sink.pending.len() + sink.pending.len() / 8);
        let lines = std::mem::replace(&mut sink.pending, next);
        sink.pending_since = None;
        self.pending -= sink.counted;
        sink.counted = 0;
        self.queue(Job::Member { file, lines })
    }

    /// Adds a job to this turn's batch; past [`MAX_IN_FLIGHT`], sends it and waits for the stage.
    fn queue(&mut self, job: Job) -> Result<()> {
        if let Job::Member { lines, .. } = &job {
            self.stage.in_flight += lines.len();
        }
        self.stage.outbox.push(job);
        if self.stage.in_flight <= MAX_IN_FLIGHT {
            return Ok(());
        }
        self.dispatch()?;
        while self.stage.in_flight > MAX_IN_FLIGHT {
            match self.stage.done.recv() {
                Ok(done) => self.settle(done)?,
                Err(_) => return Err(self.stage_gone()),
            }
        }
        Ok(())
    }

    /// Sends this turn's jobs to the stage as one batch.
    fn dispatch(&mut self) -> Result<()> {
        if self.stage.outbox.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.stage.outbox);
        match self.stage.jobs.as_ref().map(|jobs| jobs.send(batch)) {
            Some(Ok(())) => Ok(()),
            _ => Err(self.stage_gone()),
        }
    }

    /// Accounts for a batch the stage has done.
    fn settle(&mut self, done: Done) -> Result<()> {
        self.stage.in_flight -= done.lines;
        self.metrics.add_bytes_written(done.written);
        for (level, &members) in done.members_by_level.iter().enumerate() {
            self.metrics.add_members(level as u32, members);
        }
        done.result
    }

    fn stage_gone(&self) -> Error {
        Error::Thread("compress")
    }

    /// Lets the stage finish every job sent, then waits for it to end. Carries on past errors so
    /// that the report counts every byte written; adds them to `errors`.
    fn drain_stage(&mut self, errors: &mut Vec<Error>) {
        errors.extend(self.dispatch().err());
        self.stage.jobs = None;
        while let Ok(done) = self.stage.done.recv() {
            errors.extend(self.settle(done).err());
        }
        if let Some(thread) = self.stage.thread.take()
            && thread.join().is_err()
        {
            errors.push(self.stage_gone());
        }
    }

    /// Opens the file for the sink's current period, named after the period start or, when the
    /// data starts later (a new run, a quiet symbol), after its first line.
    fn open_file(&mut self, sink: usize) -> Result<OpenFile> {
        let period_secs = self.config.file_period.as_secs().max(1);
        let dir = self.config.dir.clone();
        let sink = &self.sinks[sink];
        let period_start = sink.period.unwrap_or_default() * period_secs;
        let first_line = sink.first_ns / 1_000_000_000;
        let open = create_unique(&dir, &sink.series, period_start.max(first_line))?;
        log::info!("opened {}", open.part.display());
        Ok(open)
    }

    /// Writes the sinks whose oldest pending line is about to be `--flush-ms` old.
    fn flush_due(&mut self, now: Instant, check_every: Duration) -> Result<()> {
        let age = self.config.flush_every.saturating_sub(check_every);
        for sink in 0..self.sinks.len() {
            let due = self.sinks[sink]
                .pending_since
                .is_some_and(|since| now.saturating_duration_since(since) >= age);
            if due {
                self.emit(sink)?;
            }
        }
        Ok(())
    }

    /// Finishes files of periods that are over, so a quiet symbol's file does not stay `.part`.
    fn close_finished_periods(&mut self) -> Result<()> {
        let current = self.period_of(wall_ns());
        for sink in 0..self.sinks.len() {
            if self.sinks[sink].period.is_some_and(|p| p < current) {
                self.finish(sink)?;
            }
        }
        Ok(())
    }

    /// Sends the pending lines, then has the stage fsync the file and rename it to its final
    /// name; the sink has no period until its next line.
    fn finish(&mut self, sink: usize) -> Result<()> {
        self.emit(sink)?;
        let finished = &mut self.sinks[sink];
        finished.period = None;
        match finished.open.take() {
            Some(open) => self.queue(Job::Finish(open)),
            None => Ok(()),
        }
    }

    /// Writes out everything pending and finishes every file, carrying on past errors so one bad
    /// file does not cost the others; adds them to `errors`.
    fn close_all(&mut self, errors: &mut Vec<Error>) {
        for sink in 0..self.sinks.len() {
            errors.extend(self.finish(sink).err());
        }
    }

    /// Builds the report, publishes it to the exporter and returns it with `metrics.json`'s body.
    fn report(&mut self) -> (Report, Vec<u8>) {
        let now = Instant::now();
        let clock = ReportClock {
            now: SystemTime::now(),
            runtime_secs: now.duration_since(self.started).as_secs_f64(),
            window_secs: now.duration_since(self.last_report).as_secs_f64(),
        };
        self.last_report = now;
        let report = self.metrics.report(&clock, &self.stats.counters());
        let body = serde_json::to_vec_pretty(&report).expect("report serialises");
        *self.stats.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        (report, body)
    }
}
