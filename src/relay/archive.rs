//! `obrec archive`: a durable JetStream consumer that writes the stream back into the recorder's
//! files — the same names, gzip members, `.part` files and crash recovery.
//!
//! A line is confirmed to the server only once the member holding it is on disk (`fsync`): a
//! kill loses nothing, the server sends again what was not confirmed. What it sends again may
//! already be in the files (written, then killed before the confirmation): at start the newest
//! file of each series is read back, and a line whose event is already there is skipped. The
//! same check drops an event that reaches the stream twice, which the server's duplicate window
//! lets through only after two minutes.
//!
//! Several recorders fill each other's holes, so a series' events need not reach the stream in
//! order: a hole one recorder had is filled by the other's lines, which may arrive just after
//! the first's later ones. Lines are held for [`HOLD`] and written in the order of their
//! exchange ids.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, Message};
use futures_util::StreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::market::venue::Market;
use crate::metrics::exporter;
use crate::metrics::http::{Listener, Response};
use crate::relay::{ensure_stream, market_subjects, runtime, series_of};
use crate::store::continuity::{Finding, SeriesCheck};
use crate::store::gzip::MemberEncoder;
use crate::store::lines::{MAX_LINE, open_lines};
use crate::store::lock::DirLock;
use crate::store::names::{classify, series};
use crate::store::relayed::{EventKey, Series};
use crate::store::salvage;
use crate::store::staged::{OpenFile, create_unique, finish, remove_stale_temps, write_atomic};
use crate::util::clock::wall_ns;
use crate::util::shutdown::Shutdown;

/// How long a line waits for the lines of other recorders that belong before it. A line comes
/// late when its publisher had to send it again: a confirmation timed out
/// ([`publish::ACK_TIMEOUT`](super::publish::ACK_TIMEOUT)) while the client moved to another
/// server or the stream elected a new leader, a few seconds on a cluster losing a node. The
/// archive is this much behind the recorders; the memory it costs is this long of the stream.
const HOLD: Duration = Duration::from_secs(10);
/// Lines asked of the server at a time.
const FETCH_BATCH: usize = 2048;
/// How long a fetch waits for lines when the stream has none: also how often held lines are
/// looked at when nothing arrives.
const FETCH_WAIT: Duration = Duration::from_millis(250);
/// Unconfirmed lines the server lets the archiver hold: [`HOLD`] of a whole market many times
/// over, and a bound on the archiver's memory.
const MAX_ACK_PENDING: i64 = 100_000;
/// How long the server waits for a confirmation before it sends a line again: [`HOLD`] plus a
/// write several times over. A line sent again while still held is not written twice.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Events remembered per series to recognise one sent again: more than the server can have
/// unconfirmed.
const REMEMBERED: usize = 2 * MAX_ACK_PENDING as usize;
/// Breaks listed per series in the report, the latest: enough to find them in the files and in
/// the log, which names every one; the rest are counted.
const LATEST_BREAKS: usize = 5;
/// What the archiver's report is written as, beside the files.
pub const REPORT_FILE: &str = "archive.json";

/// What `obrec archive` needs.
#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    /// `nats://host:port` of each server; the client fails over between them.
    pub servers: Vec<String>,
    /// The durable consumer's name: the server keeps its place in the stream under it.
    pub durable: String,
    /// The market archived: only its subjects are read, since a symbol names different
    /// instruments on different markets and their files would share names.
    pub market: Market,
    /// Length of a file's period, aligned to UTC midnight, as the recorder's.
    pub file_period: Duration,
    pub gzip_level: u32,
    /// ARCHIVE line and `archive.json` refresh.
    pub print_every: Duration,
    /// Where Prometheus `/metrics` is served (`--metrics-addr`), if anywhere.
    pub metrics_addr: Option<String>,
}

/// What the archiver did: `archive.json` and the ARCHIVE line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArchiveReport {
    /// Since this archiver started: the counts below are this run's.
    pub runtime_seconds: u64,
    /// Lines delivered by the server, sent-again ones included.
    pub received: u64,
    /// Lines written to files.
    pub written: u64,
    /// Lines skipped because their event is already in the files.
    pub duplicates: u64,
    /// Lines written after a later line of their series: they came past [`HOLD`].
    pub late: u64,
    /// Messages under the stream that are not a line of a known series: confirmed, not written.
    pub bad: u64,
    /// Files finished.
    pub files: u64,
    /// Compressed bytes written.
    pub bytes_written: u64,
    /// Events lost on one connection, all series: what `obrec replay` counts as breaks in the
    /// files written.
    pub breaks: u64,
    /// Events lost across a recorder's change of connection, all series.
    pub reconnect_gaps: u64,
    /// Trade and aggregate ids the breaks and reconnect gaps lack, all series.
    pub missing_ids: u64,
    /// Per series written (`btcusdt_depth`): its continuity in the files, this run.
    pub series: BTreeMap<String, SeriesContinuity>,
}

/// One series' continuity in the files, as `obrec replay` judges it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SeriesContinuity {
    /// Events written that the series' rule checks (not snapshots, meta or backfilled lines).
    pub events: u64,
    pub breaks: u64,
    pub reconnect_gaps: u64,
    pub missing_ids: u64,
    /// The latest [`LATEST_BREAKS`] breaks, oldest first.
    pub latest_breaks: VecDeque<BreakIds>,
}

/// Where a break is: for depth the `u` expected as `pu` and the `pu` received; for trade and
/// aggTrade the first and last missing ids; for mark price the event times around the gap.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BreakIds {
    pub from: u64,
    pub to: u64,
}

impl SeriesContinuity {
    /// Counts what one line written says.
    fn count(&mut self, finding: Finding) {
        match finding {
            Finding::Passed => return,
            Finding::Event => {}
            Finding::Break { from, to, missing } => {
                self.breaks += 1;
                self.missing_ids += missing;
                if self.latest_breaks.len() == LATEST_BREAKS {
                    self.latest_breaks.pop_front();
                }
                self.latest_breaks.push_back(BreakIds { from, to });
            }
            Finding::ReconnectGap { missing, .. } => {
                self.reconnect_gaps += 1;
                self.missing_ids += missing;
            }
        }
        self.events += 1;
    }
}

impl ArchiveReport {
    /// The report as Prometheus counters, the totals only: per series figures are in
    /// `archive.json`, and a label per series would grow with the market.
    fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, u64); 10] = [
            (
                "obrec_archive_received_total",
                "Lines delivered by the server.",
                self.received,
            ),
            (
                "obrec_archive_written_total",
                "Lines written to files.",
                self.written,
            ),
            (
                "obrec_archive_duplicates_total",
                "Lines skipped as already in the files.",
                self.duplicates,
            ),
            (
                "obrec_archive_late_total",
                "Lines written after a later line of their series.",
                self.late,
            ),
            (
                "obrec_archive_bad_total",
                "Messages that are no line of a series.",
                self.bad,
            ),
            ("obrec_archive_files_total", "Files finished.", self.files),
            (
                "obrec_archive_bytes_written_total",
                "Compressed bytes written.",
                self.bytes_written,
            ),
            (
                "obrec_archive_breaks_total",
                "Continuity breaks in the lines written, all series.",
                self.breaks,
            ),
            (
                "obrec_archive_reconnect_gaps_total",
                "Gaps across a recorder's change of connection, all series.",
                self.reconnect_gaps,
            ),
            (
                "obrec_archive_missing_ids_total",
                "Trade and aggregate ids the gaps lack, all series.",
                self.missing_ids,
            ),
        ];
        exporter::series(&mut out, "counter", &counters);
        out
    }

    pub fn summary_line(&self) -> String {
        format!(
            "ARCHIVE | t={}s | received={} | written={} | duplicates={} | late={} | breaks={} reconnect_gaps={} missing={} | bad={} | files={} | bytes={}",
            self.runtime_seconds,
            self.received,
            self.written,
            self.duplicates,
            self.late,
            self.breaks,
            self.reconnect_gaps,
            self.missing_ids,
            self.bad,
            self.files,
            self.bytes_written
        )
    }
}

/// A line waiting for [`HOLD`].
struct Held {
    /// Where it goes in its series ([`EventKey::position`]).
    position: u64,
    /// Arrival order, which breaks ties (a meta line after the event it followed).
    seq: u64,
    key: EventKey,
    arrived: Instant,
    /// When the stream stored it, ns since the Unix epoch (the server's clock).
    stored_ns: u64,
    /// The recorder's receipt time: which file period it goes to.
    recv_ns: u64,
    /// The line, and the handle that confirms it.
    message: Message,
}

/// One series' files and what is known of them.
struct SeriesFiles {
    /// `btcusdt_depth`: what its file names start with.
    name: String,
    /// Events in the files, to skip one sent again.
    seen: HashSet<EventKey>,
    /// The same, oldest first, so the set stays within [`REMEMBERED`].
    seen_order: VecDeque<EventKey>,
    /// Lines waiting for [`HOLD`], in arrival order.
    held: Vec<Held>,
    /// The events of `held`: one sent again meanwhile is left unconfirmed, the held one's
    /// confirmation being the one that counts.
    held_keys: HashSet<EventKey>,
    /// The highest position that arrived: a meta line, without one, goes after it.
    top: u64,
    /// The highest position written: a line below it is late.
    written_top: u64,
    /// The series' continuity rule, fed the lines in the order written, seeded at start from
    /// the newest file so a restart shows no break that is not in the files.
    check: SeriesCheck,
    /// The UTC period of the open file.
    period: Option<u64>,
    open: Option<OpenFile>,
}

impl SeriesFiles {
    fn remember(&mut self, key: EventKey) {
        if self.seen.insert(key) {
            self.seen_order.push_back(key);
            if self.seen_order.len() > REMEMBERED
                && let Some(old) = self.seen_order.pop_front()
            {
                self.seen.remove(&old);
            }
        }
    }
}

/// Files, the encoder and the report: everything the archiver owns.
struct Archive {
    config: ArchiveConfig,
    /// `<data-dir>/order_book`, which the archiver holds the lock of.
    dir: PathBuf,
    /// Every series met so far.
    series: HashMap<Series, SeriesFiles>,
    /// Each series' newest file at start, read back when the series is first seen.
    newest: HashMap<String, PathBuf>,
    /// One compressor for every series, as the recorder's, so memory stays flat with many.
    encoder: MemberEncoder,
    /// Lines of the member being made.
    lines: Vec<u8>,
    /// The member compressed from them, reused.
    member: Vec<u8>,
    /// The next line's arrival number ([`Held::seq`]).
    next_seq: u64,
    /// The latest time the stream stored a line received: catching up on a backlog, a line is
    /// due once lines stored [`HOLD`] after it came, without waiting for the clock.
    latest_stored_ns: u64,
    report: ArchiveReport,
    /// The latest report published, for `/metrics`: what it serves agrees with `archive.json`.
    latest: Arc<Mutex<ArchiveReport>>,
    /// For the report's runtime.
    started: Instant,
}

/// Archives into the directory `lock` holds until the token triggers; returns the final report.
pub fn run(config: ArchiveConfig, lock: &DirLock, shutdown: &Shutdown) -> Result<ArchiveReport> {
    let dir = lock.book_dir().to_path_buf();
    remove_stale_temps(&dir);
    // A kill leaves .part files: finish them, so the files read back below are whole.
    let (parts, _) = survey(&dir)?;
    if let Err(e) = salvage::salvage_dir(&dir, &parts) {
        log::error!("crash recovery stopped: {e}");
    }
    let (_, newest) = survey(&dir)?;
    let latest = Arc::new(Mutex::new(ArchiveReport::default()));
    // Its own token: the server stops once the last report is out, whatever ended the run.
    let serving = Shutdown::new();
    let server = match &config.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, Arc::clone(&latest), &serving)?),
        None => None,
    };
    let mut archive = Archive {
        encoder: MemberEncoder::new(config.gzip_level),
        config,
        dir,
        series: HashMap::new(),
        newest,
        lines: Vec::new(),
        member: Vec::new(),
        next_seq: 0,
        latest_stored_ns: 0,
        report: ArchiveReport::default(),
        latest,
        started: Instant::now(),
    };
    let result = runtime().and_then(|rt| rt.block_on(archive.pump(shutdown)));
    let result = result
        .and_then(|()| archive.close_all())
        .and_then(|()| archive.publish_report());
    serving.trigger();
    if let Some(server) = server
        && server.join().is_err()
    {
        log::error!("the metrics thread panicked");
    }
    result
}

/// Serves `/metrics` from the latest report on `addr`, on a thread of its own, until `serving`
/// triggers; says where on standard output, first.
fn serve_metrics(
    addr: &str,
    latest: Arc<Mutex<ArchiveReport>>,
    serving: &Shutdown,
) -> Result<std::thread::JoinHandle<()>> {
    let bind_error = |cause| Error::Bind {
        addr: addr.to_string(),
        cause,
    };
    let listener = Listener::bind(addr).map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    println!("metrics on http://{local}/metrics");
    log::info!("metrics on http://{local}/metrics");
    let serving = serving.clone();
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            listener.serve(&serving, |path| match path {
                "/metrics" => Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body: latest.lock().unwrap_or_else(|e| e.into_inner()).render(),
                },
                _ => Response {
                    status: 404,
                    content_type: "text/plain",
                    body: "not found: try /metrics\n".to_string(),
                },
            })
        })
        .map_err(|e| Error::Spawn("metrics-http", e))
}

/// The series of the `.part` files in `dir`, and each series' newest finished file.
fn survey(dir: &Path) -> Result<(Vec<String>, HashMap<String, PathBuf>)> {
    let mut parts = Vec::new();
    let mut newest: HashMap<String, PathBuf> = HashMap::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::file(dir, e))? {
        let path = entry.map_err(|e| Error::file(dir, e))?.path();
        let Some((symbol, kind)) = classify(&path) else {
            continue;
        };
        let name = format!("{symbol}_{}", kind.marker());
        if path.extension().is_some_and(|e| e == "part") {
            parts.push(name);
        } else if newest.get(&name).is_none_or(|n| *n < path) {
            newest.insert(name, path);
        }
    }
    Ok((parts, newest))
}

impl Archive {
    async fn pump(&mut self, shutdown: &Shutdown) -> Result<()> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .event_callback(|event| async move { log::info!("nats: {event}") })
            .connect(self.config.servers.as_slice())
            .await
            .map_err(|e| Error::Nats(format!("cannot connect: {e}")))?;
        let js = jetstream::new(client);
        let stream = loop {
            match ensure_stream(&js, self.config.servers.len()).await {
                Ok(stream) => break stream,
                Err(e) if shutdown.is_triggered() => return Err(e),
                Err(e) => {
                    log::warn!("{e}");
                    tokio::time::sleep(FETCH_WAIT).await;
                }
            }
        };
        let durable = self.config.durable.clone();
        let deliver = loop {
            match resume_point(&stream, &durable).await {
                Ok(deliver) => break deliver,
                Err(e) if shutdown.is_triggered() => return Err(e),
                Err(e) => {
                    log::warn!("{e}");
                    tokio::time::sleep(FETCH_WAIT).await;
                }
            }
        };
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    deliver_policy: deliver,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: MAX_ACK_PENDING,
                    filter_subject: market_subjects(self.config.market),
                    ..pull::Config::default()
                },
            )
            .await
            .map_err(|e| Error::Nats(format!("cannot open consumer {durable}: {e}")))?;
        log::info!(
            "archiving stream {} as {durable}",
            stream.cached_info().config.name
        );
        let mut next_report = Instant::now() + self.config.print_every;
        while !shutdown.is_triggered() {
            match consumer
                .fetch()
                .max_messages(FETCH_BATCH)
                .expires(FETCH_WAIT)
                .messages()
                .await
            {
                Ok(mut batch) => {
                    while let Some(message) = batch.next().await {
                        match message {
                            Ok(message) => self.take(message).await,
                            Err(e) => log::warn!("nats: fetch: {e}"),
                        }
                    }
                }
                Err(e) => {
                    log::warn!("nats: fetch: {e}");
                    tokio::time::sleep(FETCH_WAIT).await;
                }
            }
            self.write_held(Instant::now().checked_sub(HOLD)).await?;
            if Instant::now() >= next_report {
                self.close_finished_periods()?;
                self.publish_report()?;
                next_report = Instant::now() + self.config.print_every;
            }
        }
        // Everything held is written and confirmed before the files are finished.
        self.write_held(None).await
    }

    /// Holds one delivered line, or confirms at once one that is not to be written.
    async fn take(&mut self, message: Message) {
        self.report.received += 1;
        let payload = &message.payload;
        let one_line = payload.len() <= MAX_LINE
            && payload.last() == Some(&b'\n')
            && memchr::memchr(b'\n', payload) == Some(payload.len() - 1);
        let known = series_of(self.config.market, message.subject.as_str())
            .filter(|_| one_line)
            .and_then(|s| EventKey::of_line(s.kind, payload).map(|k| (s, k)));
        let Some((series, (key, recv_ns))) = known else {
            self.report.bad += 1;
            log::warn!(
                "skipped a message on {} that is no line of a series",
                message.subject
            );
            confirm(&message).await;
            return;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let stored_ns = message.info().map_or(0, |i| {
            u64::try_from(i.published.unix_timestamp_nanos()).unwrap_or(0)
        });
        self.latest_stored_ns = self.latest_stored_ns.max(stored_ns);
        let files = self.files_of(series);
        if files.seen.contains(&key) {
            self.report.duplicates += 1;
            confirm(&message).await;
            return;
        }
        if !files.held_keys.insert(key) {
            self.report.duplicates += 1;
            return;
        }
        let position = match key {
            EventKey::Content { ms: 0, .. } => files.top,
            _ => key.position(),
        };
        files.top = files.top.max(position);
        files.held.push(Held {
            position,
            seq,
            key,
            arrived: Instant::now(),
            stored_ns,
            recv_ns,
            message,
        });
    }

    /// The series' files, reading back its newest file's events when it is first seen.
    fn files_of(&mut self, key: Series) -> &mut SeriesFiles {
        let name = series(&key.symbol, key.kind);
        let kind = key.kind;
        let newest = self.newest.get(&name).cloned();
        self.series.entry(key).or_insert_with(|| {
            let mut files = SeriesFiles {
                name,
                seen: HashSet::new(),
                seen_order: VecDeque::new(),
                held: Vec::new(),
                held_keys: HashSet::new(),
                top: 0,
                written_top: 0,
                check: SeriesCheck::new(kind),
                period: None,
                open: None,
            };
            if let Some(path) = newest {
                for key in read_back(&path, kind, &mut files.check) {
                    files.top = files.top.max(key.position());
                    files.remember(key);
                }
                files.written_top = files.top;
            }
            files
        })
    }
}

impl Archive {
    /// Writes the held lines that arrived before `cutoff`, or that the stream stored [`HOLD`]
    /// before the latest line received (all with `None`), each series' in the order of their
    /// positions, makes them durable, then confirms them.
    async fn write_held(&mut self, cutoff: Option<Instant>) -> Result<()> {
        let stored_by = self.latest_stored_ns.saturating_sub(HOLD.as_nanos() as u64);
        let mut written = Vec::new();
        let keys: Vec<Series> = self.series.keys().cloned().collect();
        for key in keys {
            let mut files = self.series.remove(&key).expect("a listed series");
            let due: Vec<Held>;
            (due, files.held) = std::mem::take(&mut files.held)
                .into_iter()
                .partition(|h| cutoff.is_none_or(|c| h.arrived <= c) || h.stored_ns <= stored_by);
            let result = self.write_series(&mut files, due, &mut written);
            self.series.insert(key, files);
            result?;
        }
        for message in &written {
            confirm(message).await;
        }
        Ok(())
    }

    /// Appends `due` to the series' files in position order, one member per file and call, and
    /// syncs them; the messages written go to `written`.
    fn write_series(
        &mut self,
        files: &mut SeriesFiles,
        mut due: Vec<Held>,
        written: &mut Vec<Message>,
    ) -> Result<()> {
        due.sort_by_key(|h| (h.position, h.seq));
        for held in due {
            let period = held.recv_ns / self.config.file_period.as_nanos().max(1) as u64;
            if files.period.is_some_and(|p| p != period) {
                self.end_file(files)?;
            }
            if files.open.is_none() {
                let period_secs = self.config.file_period.as_secs().max(1);
                let start = (period * period_secs).max(held.recv_ns / 1_000_000_000);
                files.open = Some(create_unique(&self.dir, &files.name, start)?);
                files.period = Some(period);
            }
            if held.position < files.written_top {
                self.report.late += 1;
            }
            files.written_top = files.written_top.max(held.position);
            self.check(files, &held.message.payload);
            files.held_keys.remove(&held.key);
            files.remember(held.key);
            self.lines.extend_from_slice(&held.message.payload);
            self.report.written += 1;
            written.push(held.message);
        }
        self.append(files)
    }

    /// Runs a line being written through its series' rule and counts what it finds; a break is
    /// logged once, with its ids.
    fn check(&mut self, files: &mut SeriesFiles, line: &[u8]) {
        let finding = files.check.line(line);
        if finding == Finding::Passed {
            return;
        }
        let series = self.report.series.entry(files.name.clone()).or_default();
        series.count(finding);
        match finding {
            Finding::Break { from, to, missing } => {
                log::warn!(
                    "{}: continuity break between ids {from} and {to} ({missing} ids missing)",
                    files.name
                );
                self.report.breaks += 1;
                self.report.missing_ids += missing;
            }
            Finding::ReconnectGap { missing, .. } => {
                self.report.reconnect_gaps += 1;
                self.report.missing_ids += missing;
            }
            Finding::Passed | Finding::Event => {}
        }
    }

    /// Appends the lines gathered for the series' open file as one member, and syncs it.
    fn append(&mut self, files: &SeriesFiles) -> Result<()> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let Some(open) = &files.open else {
            return Ok(());
        };
        self.member.clear();
        self.encoder.encode(&self.lines, &mut self.member);
        self.lines.clear();
        open.append(&self.member)?;
        self.report.bytes_written += self.member.len() as u64;
        open.sync()
    }

    /// Writes what is gathered for the open file, then finishes it under its final name.
    fn end_file(&mut self, files: &mut SeriesFiles) -> Result<()> {
        self.append(files)?;
        files.period = None;
        if let Some(open) = files.open.take() {
            finish(&open)?;
            self.report.files += 1;
        }
        Ok(())
    }

    /// Finishes the files whose period is over, so a quiet series' file does not stay `.part`.
    fn close_finished_periods(&mut self) -> Result<()> {
        let current = wall_ns() / self.config.file_period.as_nanos().max(1) as u64;
        let keys: Vec<Series> = self.series.keys().cloned().collect();
        for key in keys {
            let mut files = self.series.remove(&key).expect("a listed series");
            let result = if files.period.is_some_and(|p| p < current) && files.held.is_empty() {
                self.end_file(&mut files)
            } else {
                Ok(())
            };
            self.series.insert(key, files);
            result?;
        }
        Ok(())
    }

    /// Finishes every file, carrying on past a failure so one bad file costs no other.
    fn close_all(&mut self) -> Result<()> {
        let mut first = Ok(());
        let keys: Vec<Series> = self.series.keys().cloned().collect();
        for key in keys {
            let mut files = self.series.remove(&key).expect("a listed series");
            let result = self.end_file(&mut files);
            if let Err(e) = result {
                log::error!("{e}");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Prints the ARCHIVE line and replaces `archive.json`.
    fn publish_report(&mut self) -> Result<ArchiveReport> {
        self.report.runtime_seconds = self.started.elapsed().as_secs();
        let line = self.report.summary_line();
        println!("{line}");
        log::info!("{line}");
        let body = serde_json::to_vec_pretty(&self.report).expect("report serialises");
        write_atomic(&self.dir.join(REPORT_FILE), &body)?;
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = self.report.clone();
        Ok(self.report.clone())
    }
}

/// Where the durable consumer `durable` takes up the stream: at the start for a new one; else
/// right after the last line its predecessor confirmed with every line before it, the consumer
/// being made anew there. The server would send the predecessor's unconfirmed lines again only
/// after [`ACK_WAIT`], behind newer ones; made anew, it sends them first, in stream order, and
/// those already in the files are skipped.
async fn resume_point(stream: &jetstream::stream::Stream, durable: &str) -> Result<DeliverPolicy> {
    let failed = |e: &dyn std::fmt::Display| Error::Nats(format!("consumer {durable}: {e}"));
    let floor = match stream.consumer_info(durable).await {
        Ok(info) => info.ack_floor.stream_sequence,
        Err(e) if is_not_found(e.kind()) => return Ok(DeliverPolicy::All),
        Err(e) => return Err(failed(&e)),
    };
    stream
        .delete_consumer(durable)
        .await
        .map_err(|e| failed(&e))?;
    log::info!("consumer {durable} resumes after stream sequence {floor}");
    Ok(DeliverPolicy::ByStartSequence {
        start_sequence: floor + 1,
    })
}

fn is_not_found(kind: ConsumerInfoErrorKind) -> bool {
    match kind {
        ConsumerInfoErrorKind::NotFound => true,
        ConsumerInfoErrorKind::JetStream(e) => e.error_code() == ErrorCode::CONSUMER_NOT_FOUND,
        _ => false,
    }
}

/// The events in a file the archiver wrote before, to skip them when they are sent again, its
/// lines run through `check` so the series' rule takes up where the file ends; a damaged end
/// stops the reading, and what was read counts.
fn read_back(
    path: &Path,
    kind: crate::store::names::FileKind,
    check: &mut SeriesCheck,
) -> Vec<EventKey> {
    let mut keys = Vec::new();
    let Ok(mut lines) = open_lines(path) else {
        return keys;
    };
    while let Ok(Some(line)) = lines.next_line() {
        // What the file holds was reported by the run that wrote it.
        let _ = check.line(line.bytes);
        if let Some((key, _)) = EventKey::of_line(kind, line.bytes) {
            keys.push(key);
        }
    }
    keys
}

/// Confirms a line to the server; a lost confirmation only means the line is sent again, and
/// skipped then as already written.
async fn confirm(message: &Message) {
    if let Err(e) = message.ack().await {
        log::debug!("nats: confirmation lost: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::kind::Kind;
    use crate::store::continuity::tests::trade_on;
    use crate::store::gzip::MemberEncoder;
    use crate::store::names::FileKind;

    fn trade(t: u64) -> Vec<u8> {
        trade_on(t, 1)
    }

    /// A file read back at start leaves the series' rule where the file ends: the next trade
    /// follows, and one past a hole is a break with the ids the hole lacks, never a new start.
    #[test]
    fn a_file_read_back_seeds_its_series_rule() {
        let dir = tempfile::tempdir().unwrap();
        let text: Vec<u8> = (10..=14).flat_map(trade).collect();
        let mut file = Vec::new();
        MemberEncoder::new(1).encode(&text, &mut file);
        let path = dir.path().join("btcusdt_trade_20251120T000000Z.ndjson.gz");
        fs::write(&path, file).unwrap();
        let kind = FileKind::Stream(Kind::Trade);

        let mut check = SeriesCheck::new(kind);
        let keys = read_back(&path, kind, &mut check);
        assert_eq!(keys.len(), 5);
        let mut gapped = check.clone();
        assert_eq!(check.line(&trade(15)), Finding::Event);
        assert_eq!(
            gapped.line(&trade(17)),
            Finding::Break {
                from: 15,
                to: 16,
                missing: 2
            }
        );
    }
}
