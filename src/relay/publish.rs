//! The publisher thread of `record --nats`: lines from the writer's hand-off to the stream.
//!
//! Sends are pipelined: up to [`MAX_IN_FLIGHT`] lines await their confirmation at once. A line
//! whose send fails or goes unconfirmed is sent again, under the same `Nats-Msg-Id`, so a retry of
//! a line the stream did store is dropped by the server; after [`RETRY_FOR`] it is given up and
//! counted as dropped. No new line is sent while lines wait to be sent again, so each series
//! reaches the stream in order even across a server's failure. NATS down never reaches the recorder: the hand-off fills and drops, the
//! client reconnects on its own, and sending resumes with what the hand-off still holds.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::{ConnectOptions, Event, HeaderMap, header::NATS_MESSAGE_ID};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc::Receiver;

use crate::error::{Error, Result};
use crate::market::venue::Market;
use crate::metrics::nats::NatsStats;
use crate::relay::{ensure_stream, msg_id, runtime, subject};
use crate::store::relayed::Relayed;
use crate::util::clock::wall_ns;

/// Lines sent and not yet confirmed: enough to keep a whole market flowing over a link with tens
/// of milliseconds of round trip, few enough that a reconnect resends little.
const MAX_IN_FLIGHT: usize = 4096;
/// How long a line is retried: half the stream's duplicate window, so that a retry of a line
/// already stored is still recognised as its duplicate.
pub const RETRY_FOR: Duration = Duration::from_secs(60);
/// Wait for a confirmation before the send counts as failed and the line is sent again: a
/// confirmation takes milliseconds, even across hosts, and a line sent again reaches the
/// archiver late ([`archive`](super::archive) holds lines ten seconds for them).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before resending failed lines, and between tries to create the stream: a server that
/// just went away gets a moment to come back or be replaced by another.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// At the end of a run, how long lines still unconfirmed are waited for.
const FINAL_GRACE: Duration = Duration::from_secs(5);

/// Where to publish.
#[derive(Clone, Debug)]
pub struct PublishConfig {
    /// `nats://host:port` of each server; the client fails over between them.
    pub servers: Vec<String>,
    /// The market recorded, named in every subject and message id.
    pub market: Market,
}

/// A line on its way, kept until the stream confirmed it.
struct Pending {
    /// The line and its series, kept for a retry.
    line: Relayed,
    /// `Nats-Msg-Id`, the same on every try.
    id: String,
    /// Where it is published.
    subject: String,
    /// The first try: past [`RETRY_FOR`] the line is given up.
    first_sent: Instant,
}

/// The running publisher.
pub struct Publisher {
    /// Ends on its own once the hand-off closed and its lines were settled.
    thread: JoinHandle<()>,
}

impl Publisher {
    /// Starts the thread, which takes lines from `lines` until every sender is gone.
    pub fn start(
        config: PublishConfig,
        lines: Receiver<Relayed>,
        stats: Arc<NatsStats>,
    ) -> Result<Publisher> {
        let runtime = runtime()?;
        let thread = std::thread::Builder::new()
            .name("nats".into())
            .spawn(move || runtime.block_on(publish(config, lines, stats)))
            .map_err(|e| Error::Spawn("nats", e))?;
        Ok(Publisher { thread })
    }

    /// Waits for the thread, which ends once the recorder dropped its senders and the last lines
    /// were confirmed or given up.
    pub fn join(self) {
        if self.thread.join().is_err() {
            log::error!("the nats thread panicked");
        }
    }
}

async fn publish(config: PublishConfig, mut lines: Receiver<Relayed>, stats: Arc<NatsStats>) {
    let events = Arc::clone(&stats);
    let connecting = ConnectOptions::new()
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let events = Arc::clone(&events);
            async move {
                match event {
                    Event::Connected => events.connected.store(1, Ordering::Relaxed),
                    Event::Disconnected | Event::Closed => {
                        events.connected.store(0, Ordering::Relaxed)
                    }
                    _ => {}
                }
                log::info!("nats: {event}");
            }
        })
        .connect(config.servers.as_slice())
        .await;
    let client = match connecting {
        Ok(client) => client,
        Err(e) => {
            log::error!("nats: cannot connect to {}: {e}", config.servers.join(","));
            return;
        }
    };
    let js = jetstream::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .max_ack_inflight(MAX_IN_FLIGHT)
        .build(client);
    // Lines wait in the hand-off (and are dropped when it is full) until the stream is there.
    while let Err(e) = ensure_stream(&js, config.servers.len()).await {
        log::warn!("{e}");
        if lines.is_closed() && lines.is_empty() {
            return;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    let mut in_flight = FuturesUnordered::new();
    let mut retry: VecDeque<Pending> = VecDeque::new();
    let mut closed = false;
    let mut grace_ends = None;
    loop {
        if closed && in_flight.is_empty() && retry.is_empty() {
            break;
        }
        if grace_ends.is_some_and(|end| Instant::now() >= end) {
            let lost = in_flight.len() + retry.len();
            stats.dropped.fetch_add(lost as u64, Ordering::Relaxed);
            log::warn!("nats: {lost} line(s) unconfirmed at the end of the run");
            break;
        }
        // Lines to send again go before any new one, so that the stream gets a series in order
        // after an outage; meanwhile new lines wait in the hand-off.
        let take_new = in_flight.len() < MAX_IN_FLIGHT && retry.is_empty() && !closed;
        tokio::select! {
            biased;
            Some((pending, acked)) = in_flight.next(), if !in_flight.is_empty() => {
                settle(&stats, pending, acked, &mut retry);
            }
            _ = tokio::time::sleep(RETRY_PAUSE), if !retry.is_empty() => {
                while in_flight.len() < MAX_IN_FLIGHT && let Some(pending) = retry.pop_front() {
                    send(&js, &stats, pending, &in_flight, &mut retry).await;
                }
            }
            line = lines.recv(), if take_new => match line {
                Some(line) => {
                    let id = msg_id(config.market, &line.series, line.key);
                    let subject = subject(config.market, &line.series);
                    let pending = Pending { line, id, subject, first_sent: Instant::now() };
                    send(&js, &stats, pending, &in_flight, &mut retry).await;
                }
                None => {
                    closed = true;
                    grace_ends = Some(Instant::now() + FINAL_GRACE);
                }
            },
            _ = tokio::time::sleep(FINAL_GRACE), if closed => {}
        }
    }
}

/// The future of one line's confirmation, with the line, for [`settle`].
type Confirmation = std::pin::Pin<
    Box<
        dyn Future<
            Output = (
                Pending,
                std::result::Result<jetstream::publish::PublishAck, String>,
            ),
        >,
    >,
>;

/// Sends one line; a send that fails at once goes to `retry`.
async fn send(
    js: &jetstream::Context,
    stats: &NatsStats,
    pending: Pending,
    in_flight: &FuturesUnordered<Confirmation>,
    retry: &mut VecDeque<Pending>,
) {
    let mut headers = HeaderMap::new();
    headers.insert(NATS_MESSAGE_ID, pending.id.as_str());
    let payload = bytes::Bytes::copy_from_slice(&pending.line.line);
    stats.published.fetch_add(1, Ordering::Relaxed);
    stats.pending.fetch_add(1, Ordering::Relaxed);
    match js
        .publish_with_headers(pending.subject.clone(), headers, payload)
        .await
    {
        Ok(ack) => in_flight.push(confirm(pending, ack)),
        Err(e) => {
            log::debug!("nats: send of {} failed: {e}", pending.id);
            stats.pending.fetch_sub(1, Ordering::Relaxed);
            stats.retries.fetch_add(1, Ordering::Relaxed);
            retry.push_back(pending);
        }
    }
}

fn confirm(pending: Pending, ack: PublishAckFuture) -> Confirmation {
    Box::pin(async move {
        let acked = ack.await.map_err(|e| e.to_string());
        (pending, acked)
    })
}

/// Counts a confirmation, or puts the line back for a retry while it is young enough.
fn settle(
    stats: &NatsStats,
    pending: Pending,
    acked: std::result::Result<jetstream::publish::PublishAck, String>,
    retry: &mut VecDeque<Pending>,
) {
    stats.pending.fetch_sub(1, Ordering::Relaxed);
    match acked {
        Ok(ack) => {
            stats.acked.fetch_add(1, Ordering::Relaxed);
            if ack.duplicate {
                stats.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            let lag_ms = wall_ns().saturating_sub(pending.line.recv_ns) / 1_000_000;
            stats.lag_ms.store(lag_ms, Ordering::Relaxed);
        }
        Err(e) if pending.first_sent.elapsed() < RETRY_FOR => {
            log::debug!("nats: {} unconfirmed, sent again: {e}", pending.id);
            stats.retries.fetch_add(1, Ordering::Relaxed);
            retry.push_back(pending);
        }
        Err(e) => {
            log::warn!("nats: {} given up after {RETRY_FOR:?}: {e}", pending.id);
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
