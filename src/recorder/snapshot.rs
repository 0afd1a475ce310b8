//! The REST fetcher: depth snapshots for diff-depth recording (`--depth 0`) and aggTrade
//! backfills ([`super::backfill`]).
//!
//! One fetcher thread serves every reader group, and runs whenever diff depth or aggTrade is
//! recorded. Groups ask for a symbol's snapshot when their
//! [`BookSync`](crate::market::sequence::BookSync) wants one (after the first event, after a
//! break, when a snapshot was too old), and for the missing ids of an aggTrade gap. The fetcher
//! queues the requests (one snapshot per symbol at a time), keeps the process inside Binance's
//! REST weight budget (one budget, one backoff and one rate-limit pause for both), retries
//! failures with backoff (a backfill gives up after a few attempts), and hands the answers back
//! to the group, which records them: a snapshot's body and its `lastUpdateId` for the book sync,
//! a backfill's records.
//!
//! The fetcher never holds a sender to the writer, so a hung HTTP request cannot delay the
//! writer's shutdown. At shutdown it drops the snapshots still queued and, for at most
//! [`FINISH_GRACE`], serves the backfills the groups ask for while their last frames come in,
//! without waiting for budget or backoff: a gap found in the last second is closed too.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select};
use serde::Deserialize;

use crate::error::FeedError;
use crate::market::symbol::{Symbol, SymbolId};
use crate::market::venue::Market;
use crate::metrics::Stats;
use crate::recorder::backfill::{Backfill, BackfillRequest, MAX_ATTEMPTS, MAX_PAGE_BYTES};
use crate::recorder::event::SnapshotRecord;
use crate::util::backoff::Backoff;
use crate::util::clock::wall_ns;
use crate::util::shutdown::Shutdown;

/// HTTP timeout for one snapshot.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before retrying after the exchange said "too many requests" without a Retry-After.
const RATE_LIMITED_PAUSE: Duration = Duration::from_secs(60);
/// Longest `Retry-After` obeyed: Binance's IP bans (418) last from 2 minutes up to 3 days, so a
/// longer wait is not one the exchange can mean.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);
/// Largest snapshot body read. A `limit=1000` answer is about 80 KB; fifty times that is still
/// a snapshot, anything larger is not, and must not cost its size in memory.
const MAX_SNAPSHOT_BYTES: u64 = 4 << 20;
/// How long requests pause when the exchange's weight counter is near its limit: long enough
/// for its one-minute window to move on.
const NEAR_LIMIT_PAUSE: Duration = Duration::from_secs(10);
/// How long after shutdown backfills are still served: the groups' last frames (a connection's
/// close takes up to a quarter second) and a local REST answer fit well inside it, and a stop is
/// never held up for long.
pub const FINISH_GRACE: Duration = Duration::from_secs(1);

/// A group's request for one symbol's snapshot.
#[derive(Debug)]
pub struct SnapshotRequest {
    pub symbol: SymbolId,
    /// Its name, for the URL and logs: a symbol listed during the run is not among those the
    /// fetcher started with.
    pub name: Symbol,
    /// Where the answer goes.
    pub reply: Sender<SnapshotRecord>,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "lastUpdateId")]
    last_update_id: u64,
}

/// Requests made within the last minute and their weights, to stay inside the weight budget.
struct Budget {
    sent: VecDeque<(Instant, u32)>,
    /// Weight allowed a minute: the market's [`Market::weight_budget`].
    per_minute: u32,
}

impl Budget {
    fn new(per_minute: u32) -> Budget {
        Budget {
            sent: VecDeque::new(),
            per_minute,
        }
    }

    /// How long to wait before a request of `weight` fits in the budget.
    fn wait(&mut self, now: Instant, weight: u32) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.sent.pop_front();
        }
        let spent: u32 = self.sent.iter().map(|(_, w)| w).sum();
        let fits = spent + weight <= self.per_minute;
        match self.sent.front() {
            Some((oldest, _)) if !fits => {
                Duration::from_secs(60).saturating_sub(now.duration_since(*oldest))
            }
            _ => Duration::ZERO,
        }
    }

    fn spend(&mut self, now: Instant, weight: u32) {
        self.sent.push_back((now, weight));
    }
}

/// A queued request.
enum Job {
    Snapshot(SnapshotRequest),
    Backfill(Backfill),
}

impl Job {
    fn weight(&self, market: Market) -> u32 {
        match self {
            Job::Snapshot(_) => snapshot_weight(market),
            Job::Backfill(_) => market.agg_trades_weight(),
        }
    }
}

/// The weight of the snapshots the fetcher asks for: as deep as the market serves, since a
/// book is only as deep as its snapshot.
fn snapshot_weight(market: Market) -> u32 {
    market.depth_weight(market.max_depth_limit())
}

pub struct Fetcher {
    /// Whose REST paths, weights and budget apply.
    market: Market,
    rest_endpoint: String,
    stats: std::sync::Arc<Stats>,
    agent: ureq::Agent,
}

/// The HTTP client of REST requests: each bounded by [`REQUEST_TIMEOUT`], an error status
/// handed back as an answer so its body can be shown.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(REQUEST_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into()
}

impl Fetcher {
    pub fn new(market: Market, rest_endpoint: String, stats: std::sync::Arc<Stats>) -> Fetcher {
        Fetcher {
            market,
            rest_endpoint,
            stats,
            agent: agent(),
        }
    }

    /// Serves requests until shutdown, then the backfills asked for within [`FINISH_GRACE`];
    /// returns earlier once every group has gone and nothing is queued.
    pub fn run(
        self,
        snapshots: Receiver<SnapshotRequest>,
        backfills: Receiver<BackfillRequest>,
        shutdown: Shutdown,
    ) {
        /// How often an idle fetcher checks the shutdown token.
        const IDLE_TICK: Duration = Duration::from_millis(100);
        let (mut snapshots, mut backfills) = (Some(snapshots), Some(backfills));
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut queued: HashSet<SymbolId> = HashSet::new();
        let mut budget = Budget::new(self.market.weight_budget());
        let mut backoff = Backoff::new();
        // Throttling: the exchange's rate limit or its weight counter said wait.
        let mut not_before = Instant::now();
        // A failed request's backoff: an error, not throttling.
        let mut retry_at = Instant::now();
        // Set at shutdown: until when backfills are still served.
        let mut finish_by: Option<Instant> = None;
        loop {
            if finish_by.is_none() && shutdown.is_triggered() {
                finish_by = Some(Instant::now() + FINISH_GRACE);
                // Nobody will take a snapshot now; the groups may still take backfills.
                queue.retain(|job| matches!(job, Job::Backfill(_)));
                snapshots = None;
            }
            let stopping = finish_by.is_some();
            if finish_by.is_some_and(|t| Instant::now() >= t)
                || (queue.is_empty() && snapshots.is_none() && backfills.is_none())
            {
                give_up(queue, "the recorder stopped");
                return;
            }
            let timeout = if queue.is_empty() {
                IDLE_TICK
            } else {
                Duration::ZERO
            };
            // A channel whose groups have all gone is replaced by one that never delivers.
            let (snap_rx, fill_rx) = (
                snapshots.clone().unwrap_or_else(never),
                backfills.clone().unwrap_or_else(never),
            );
            select! {
                recv(snap_rx) -> req => {
                    match req {
                        Ok(req) if queued.insert(req.symbol) => queue.push_back(Job::Snapshot(req)),
                        Ok(_) => {}
                        Err(_) => snapshots = None,
                    }
                    continue;
                }
                recv(fill_rx) -> req => {
                    match req {
                        Ok(req) => queue.push_back(Job::Backfill(Backfill::new(req))),
                        Err(_) => backfills = None,
                    }
                    continue;
                }
                default(timeout) => {}
            }
            let Some(job) = queue.front_mut() else {
                continue;
            };
            let now = Instant::now();
            let wait = budget
                .wait(now, job.weight(self.market))
                .max(not_before.saturating_duration_since(now))
                .max(retry_at.saturating_duration_since(now));
            if !wait.is_zero() {
                if stopping {
                    give_up(queue, "no REST weight or backoff left before the stop");
                    return;
                }
                let throttled = retry_at <= now;
                match job {
                    Job::Snapshot(req) if throttled => {
                        Stats::bump(&self.stats.symbols[req.symbol].throttled);
                        log::warn!(
                            "snapshot for {} waits {wait:?} for REST weight budget",
                            req.name
                        );
                    }
                    Job::Backfill(b) if throttled => {
                        log::warn!(
                            "{}: backfill waits {wait:?} for REST weight budget",
                            b.name()
                        );
                    }
                    _ => {}
                }
                shutdown.wait_timeout(wait);
                continue;
            }
            budget.spend(now, job.weight(self.market));
            let url = match job {
                Job::Snapshot(req) => format!(
                    "{}{}?symbol={}&limit={}",
                    self.rest_endpoint,
                    self.market.depth_path(),
                    req.name,
                    self.market.max_depth_limit()
                ),
                Job::Backfill(b) => format!(
                    "{}{}?{}",
                    self.rest_endpoint,
                    self.market.agg_trades_path(),
                    b.query()
                ),
            };
            let limit = match job {
                Job::Snapshot(_) => MAX_SNAPSHOT_BYTES,
                Job::Backfill(_) => MAX_PAGE_BYTES,
            };
            let answer = get(&self.agent, &url, limit);
            let taken = match answer {
                Err(Failure::RateLimited(pause)) => {
                    log::warn!(
                        "REST rate limit reached: pausing snapshots for {pause:?}, backfills too"
                    );
                    not_before = later(pause);
                    continue;
                }
                Err(Failure::Other(e)) => Err(e),
                Ok((body, recv_ns, used)) => {
                    if used.is_some_and(|used| near_limit(used, self.market)) {
                        // Others on this IP spend the weight too: let the exchange's window roll.
                        log::warn!(
                            "REST weight used this minute is near the limit: pausing snapshots and backfills"
                        );
                        not_before = later(NEAR_LIMIT_PAUSE);
                    }
                    match job {
                        Job::Snapshot(req) => self.snapshot(req, body, recv_ns).map(|()| true),
                        Job::Backfill(b) => b
                            .take_page(body, recv_ns, Instant::now())
                            .map_err(FeedError::Rest),
                    }
                }
            };
            match taken {
                Ok(done) => {
                    backoff.reset();
                    let job = queue.pop_front().expect("front exists");
                    match job {
                        Job::Snapshot(req) => {
                            queued.remove(&req.symbol);
                        }
                        Job::Backfill(b) if done => b.finish(),
                        // Its next page waits behind the others.
                        job => queue.push_back(job),
                    }
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    retry_at = later(wait);
                    if let Job::Snapshot(req) = job {
                        Stats::bump(&self.stats.symbols[req.symbol].snapshot_errors);
                        log::warn!(
                            "snapshot for {} failed: {e}; retrying in {wait:?}",
                            req.name
                        );
                    }
                    if let Job::Backfill(b) = job {
                        b.attempts += 1;
                        if b.attempts >= MAX_ATTEMPTS {
                            let Some(Job::Backfill(b)) = queue.pop_front() else {
                                unreachable!("the front is this backfill");
                            };
                            b.give_up(&format!("{MAX_ATTEMPTS} attempts failed, the last: {e}"));
                            continue;
                        }
                        log::warn!("{}: backfill failed: {e}; retrying in {wait:?}", b.name());
                    }
                    // Let the other requests go first.
                    queue.rotate_left(1);
                }
            }
        }
    }

    /// Hands a snapshot body back to the group that asked.
    fn snapshot(&self, req: &SnapshotRequest, body: String, recv_ns: u64) -> Result<(), FeedError> {
        let head: Head = serde_json::from_str(&body)
            .map_err(|e| FeedError::Rest(format!("bad snapshot body: {e}")))?;
        log::info!("snapshot {} lastUpdateId={}", req.name, head.last_update_id);
        // A group that has gone away no longer needs it.
        let _ = req.reply.send(SnapshotRecord {
            symbol: req.symbol,
            recv_ns,
            last_update_id: head.last_update_id,
            body,
        });
        Ok(())
    }
}

/// GETs `url`: the body of a 200 answer (at most `limit` bytes, as received), when it was
/// received, and the weight the exchange says this IP used this minute.
pub fn get(
    agent: &ureq::Agent,
    url: &str,
    limit: u64,
) -> Result<(String, u64, Option<u64>), Failure> {
    let fail = |e: String| Failure::Other(FeedError::Rest(e));
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if status == 429 || status == 418 {
        let pause = header("retry-after").map_or(RATE_LIMITED_PAUSE, retry_after);
        return Err(Failure::RateLimited(pause));
    }
    let used = header("x-mbx-used-weight-1m");
    // Not lossy: the body is recorded byte for byte, or not at all.
    let body = response
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_string()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => {
                fail(format!("body larger than {} MiB", limit >> 20))
            }
            e => fail(format!("reading body: {e}")),
        })?;
    let recv_ns = wall_ns();
    if status != 200 {
        let excerpt: String = body.chars().take(200).collect();
        return Err(fail(format!("http status {status}: {excerpt}")));
    }
    Ok((body, recv_ns, used))
}

/// Hands the backfills still queued back with what they fetched, saying why they stop short.
fn give_up(queue: VecDeque<Job>, why: &str) {
    for job in queue {
        if let Job::Backfill(b) = job {
            b.give_up(why);
        }
    }
}

/// `now + wait`, or as late as can be said: a wait comes from the exchange and may be any size.
fn later(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .or_else(|| now.checked_add(MAX_RETRY_AFTER))
        .unwrap_or(now)
}

/// The pause a `Retry-After` of `secs` asks for, at most [`MAX_RETRY_AFTER`].
fn retry_after(secs: u64) -> Duration {
    let asked = Duration::from_secs(secs);
    if asked > MAX_RETRY_AFTER {
        log::warn!(
            "REST Retry-After of {secs} s is longer than any Binance ban: waiting {MAX_RETRY_AFTER:?}"
        );
    }
    asked.min(MAX_RETRY_AFTER)
}

/// Whether the weight the exchange says this IP used leaves less than five snapshots' room.
/// A count above the exchange's limit (never sent by Binance with a served request) is taken as
/// the limit, with a warning.
fn near_limit(used: u64, market: Market) -> bool {
    let limit = u64::from(market.exchange_weight_limit());
    if used > limit {
        log::warn!(
            "REST x-mbx-used-weight-1m of {used} is over the exchange's limit: taken as {limit}"
        );
    }
    used.min(limit)
        .saturating_add(u64::from(snapshot_weight(market)) * 5)
        > limit
}

pub enum Failure {
    /// HTTP 429/418: wait this long before any request.
    RateLimited(Duration),
    /// Anything else, a 4xx other than 429/418 included (a bad symbol or parameter, which waiting
    /// does not fix): retried after a backoff (a backfill a few times only).
    Other(FeedError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT_WEIGHT: u32 = 20;
    const PAGE_WEIGHT: u32 = 20;

    #[test]
    fn budget_allows_sixty_snapshots_a_minute_then_waits_for_the_oldest() {
        let market = Market::UsdM;
        assert_eq!(snapshot_weight(market), SNAPSHOT_WEIGHT);
        assert_eq!(market.agg_trades_weight(), PAGE_WEIGHT);
        let mut b = Budget::new(market.weight_budget());
        let start = Instant::now();
        let per_minute = market.weight_budget() / SNAPSHOT_WEIGHT;
        assert_eq!(per_minute, 60);
        for i in 0..per_minute {
            // Snapshots and backfill pages share the budget.
            let weight = [SNAPSHOT_WEIGHT, PAGE_WEIGHT][i as usize % 2];
            assert_eq!(b.wait(start, weight), Duration::ZERO, "request {i}");
            b.spend(start, weight);
        }
        let wait = b.wait(start + Duration::from_secs(15), PAGE_WEIGHT);
        assert_eq!(wait, Duration::from_secs(45));
        assert_eq!(
            b.wait(start + Duration::from_secs(60), SNAPSHOT_WEIGHT),
            Duration::ZERO
        );
    }

    #[test]
    fn numbers_from_the_exchange_are_bounded() {
        assert_eq!(retry_after(30), Duration::from_secs(30));
        assert_eq!(retry_after(u64::MAX), MAX_RETRY_AFTER);
        assert!(later(Duration::MAX) > Instant::now());
        let usdm = Market::UsdM;
        assert!(!near_limit(0, usdm) && near_limit(2_301, usdm) && near_limit(u64::MAX, usdm));
        // Spot's limit is 6000 and its 5000-level snapshot weighs 250: five of them is 1250.
        assert!(!near_limit(4_750, Market::Spot) && near_limit(4_751, Market::Spot));
        assert_eq!(
            Budget::new(Market::Spot.weight_budget()).per_minute / snapshot_weight(Market::Spot),
            12
        );
    }
}
