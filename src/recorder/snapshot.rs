//! REST depth snapshots for diff-depth recording (`--depth 0`).
//!
//! One fetcher thread serves every reader group. Groups ask for a symbol's snapshot when their
//! [`BookSync`](crate::market::sequence::BookSync) wants one (after the first event, after a break, when a
//! snapshot was too old); the fetcher queues the requests (one per symbol at a time), keeps the
//! process inside Binance's REST weight budget, retries failures with backoff, and hands the body
//! back to the group, which records it and feeds its `lastUpdateId` to the book sync.
//!
//! The fetcher never holds a sender to the writer, so a hung HTTP request cannot delay the
//! writer's shutdown.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Deserialize;

use crate::error::FeedError;
use crate::market::symbol::{Symbol, SymbolId};
use crate::metrics::Stats;
use crate::recorder::event::SnapshotRecord;
use crate::util::backoff::Backoff;
use crate::util::clock::wall_ns;
use crate::util::shutdown::Shutdown;

/// Levels asked for: the most Binance serves.
const SNAPSHOT_LIMIT: u32 = 1000;
/// Request weight of `limit=1000`.
const SNAPSHOT_WEIGHT: u32 = 20;
/// Weight this process allows itself per minute: half of Binance's 2400 per IP, leaving room for
/// other clients (or another recorder) on the same address.
pub const WEIGHT_BUDGET_PER_MINUTE: u32 = 1200;
/// The exchange's own per-IP limit, checked against the weight it reports having counted.
const EXCHANGE_WEIGHT_LIMIT: u32 = 2400;
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
/// How long snapshots pause when the exchange's weight counter is near its limit: long enough
/// for its one-minute window to move on.
const NEAR_LIMIT_PAUSE: Duration = Duration::from_secs(10);

/// A group's request for one symbol's snapshot.
#[derive(Debug)]
pub struct SnapshotRequest {
    pub symbol: SymbolId,
    /// Where the answer goes.
    pub reply: Sender<SnapshotRecord>,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "lastUpdateId")]
    last_update_id: u64,
}

/// Requests made within the last minute, to stay inside the weight budget.
struct Budget {
    sent: VecDeque<Instant>,
}

impl Budget {
    /// How long to wait before another request fits in the budget.
    fn wait(&mut self, now: Instant) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.sent.pop_front();
        }
        let fits = (self.sent.len() as u32 + 1) * SNAPSHOT_WEIGHT <= WEIGHT_BUDGET_PER_MINUTE;
        match self.sent.front() {
            Some(oldest) if !fits => {
                Duration::from_secs(60).saturating_sub(now.duration_since(*oldest))
            }
            _ => Duration::ZERO,
        }
    }
}

pub struct Fetcher {
    rest_endpoint: String,
    symbols: Vec<Symbol>,
    stats: std::sync::Arc<Stats>,
    agent: ureq::Agent,
}

impl Fetcher {
    pub fn new(
        rest_endpoint: String,
        symbols: Vec<Symbol>,
        stats: std::sync::Arc<Stats>,
    ) -> Fetcher {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Fetcher {
            rest_endpoint,
            symbols,
            stats,
            agent,
        }
    }

    /// Serves requests until shutdown.
    pub fn run(self, requests: Receiver<SnapshotRequest>, shutdown: Shutdown) {
        /// How often an idle fetcher checks the shutdown token.
        const IDLE_TICK: Duration = Duration::from_millis(100);
        let mut queue: VecDeque<SnapshotRequest> = VecDeque::new();
        let mut queued: HashSet<SymbolId> = HashSet::new();
        let mut budget = Budget {
            sent: VecDeque::new(),
        };
        let mut backoff = Backoff::new();
        // Throttling: the exchange's rate limit or its weight counter said wait.
        let mut not_before = Instant::now();
        // A failed request's backoff: an error, not throttling.
        let mut retry_at = Instant::now();
        while !shutdown.is_triggered() {
            let timeout = if queue.is_empty() {
                IDLE_TICK
            } else {
                Duration::ZERO
            };
            match requests.recv_timeout(timeout) {
                Ok(req) => {
                    if queued.insert(req.symbol) {
                        queue.push_back(req);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) if queue.is_empty() => return,
                Err(_) => {}
            }
            let Some(req) = queue.front() else { continue };
            let now = Instant::now();
            let wait = budget
                .wait(now)
                .max(not_before.saturating_duration_since(now));
            if !wait.is_zero() {
                Stats::bump(&self.stats.symbols[req.symbol].throttled);
                log::warn!(
                    "snapshot for {} waits {wait:?} for REST weight budget",
                    self.symbols[req.symbol]
                );
                shutdown.wait_timeout(wait);
                continue;
            }
            let backoff_left = retry_at.saturating_duration_since(now);
            if !backoff_left.is_zero() {
                shutdown.wait_timeout(backoff_left);
                continue;
            }
            budget.sent.push_back(now);
            match self.fetch(req.symbol) {
                Ok((snapshot, used)) => {
                    backoff.reset();
                    if used.is_some_and(near_limit) {
                        // Others on this IP spend the weight too: let the exchange's window roll.
                        log::warn!(
                            "REST weight used this minute is near the limit: pausing snapshots"
                        );
                        not_before = later(NEAR_LIMIT_PAUSE);
                    }
                    let req = queue.pop_front().expect("front exists");
                    queued.remove(&req.symbol);
                    // A group that has gone away no longer needs it.
                    let _ = req.reply.send(snapshot);
                }
                Err(Failure::RateLimited(pause)) => {
                    log::warn!("REST rate limit reached: pausing snapshots for {pause:?}");
                    not_before = later(pause);
                }
                Err(Failure::Other(e)) => {
                    Stats::bump(&self.stats.symbols[req.symbol].snapshot_errors);
                    let wait = backoff.next_delay();
                    log::warn!(
                        "snapshot for {} failed: {e}; retrying in {wait:?}",
                        self.symbols[req.symbol]
                    );
                    retry_at = later(wait);
                    // Let the other symbols go first.
                    queue.rotate_left(1);
                }
            }
        }
    }

    /// Fetches one snapshot; also returns the weight the exchange says this IP used this minute.
    fn fetch(&self, symbol: SymbolId) -> Result<(SnapshotRecord, Option<u64>), Failure> {
        let name = &self.symbols[symbol];
        let url = format!(
            "{}/fapi/v1/depth?symbol={name}&limit={SNAPSHOT_LIMIT}",
            self.rest_endpoint
        );
        let fail = |e: String| Failure::Other(FeedError::Rest(e));
        let mut response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| fail(e.to_string()))?;
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
            .limit(MAX_SNAPSHOT_BYTES)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    fail(format!("body larger than {} MiB", MAX_SNAPSHOT_BYTES >> 20))
                }
                e => fail(format!("reading body: {e}")),
            })?;
        let recv_ns = wall_ns();
        if status != 200 {
            let excerpt: String = body.chars().take(200).collect();
            return Err(fail(format!("http status {status}: {excerpt}")));
        }
        let head: Head =
            serde_json::from_str(&body).map_err(|e| fail(format!("bad snapshot body: {e}")))?;
        log::info!("snapshot {name} lastUpdateId={}", head.last_update_id);
        Ok((
            SnapshotRecord {
                symbol,
                recv_ns,
                last_update_id: head.last_update_id,
                body,
            },
            used,
        ))
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
fn near_limit(used: u64) -> bool {
    let limit = u64::from(EXCHANGE_WEIGHT_LIMIT);
    if used > limit {
        log::warn!(
            "REST x-mbx-used-weight-1m of {used} is over the exchange's limit: taken as {limit}"
        );
    }
    used.min(limit)
        .saturating_add(u64::from(SNAPSHOT_WEIGHT) * 5)
        > limit
}

enum Failure {
    /// HTTP 429/418: wait this long before any request.
    RateLimited(Duration),
    /// Anything else, a 4xx other than 429/418 included (a bad symbol or parameter, which waiting
    /// does not fix): a snapshot error, retried after a backoff.
    Other(FeedError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_sixty_snapshots_a_minute_then_waits_for_the_oldest() {
        let mut b = Budget {
            sent: VecDeque::new(),
        };
        let start = Instant::now();
        let per_minute = WEIGHT_BUDGET_PER_MINUTE / SNAPSHOT_WEIGHT;
        for i in 0..per_minute {
            assert_eq!(b.wait(start), Duration::ZERO, "request {i}");
            b.sent.push_back(start);
        }
        let wait = b.wait(start + Duration::from_secs(15));
        assert_eq!(wait, Duration::from_secs(45));
        assert_eq!(b.wait(start + Duration::from_secs(60)), Duration::ZERO);
    }

    #[test]
    fn numbers_from_the_exchange_are_bounded() {
        assert_eq!(retry_after(30), Duration::from_secs(30));
        assert_eq!(retry_after(u64::MAX), MAX_RETRY_AFTER);
        assert!(later(Duration::MAX) > Instant::now());
        assert!(!near_limit(0) && near_limit(2_301) && near_limit(u64::MAX));
    }
}
