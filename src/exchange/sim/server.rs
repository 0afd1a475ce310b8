//! The running sim: the listening socket, the threads, and an orderly shutdown.
//!
//! Threads: one accept loop; one handler per accepted socket, which answers REST or becomes a
//! WebSocket connection's reader; one writer per WebSocket connection; whatever the source runs
//! (the sim: one pump per symbol; a playback: one player per connection; the tap: one
//! dispatcher). All handles are kept so that shutdown joins every thread the server started.

use std::io;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown as Direction, SocketAddr, TcpListener, TcpStream,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use log::{debug, warn};

use super::faults::{Faults, Injector};
use super::generator::Feed;
use super::http::{self, HEAD_TIMEOUT};
use super::hub::Hub;
use super::listing::Calendar;
use super::source::Source;
use super::walk::Market;
use super::{SentFrame, SimConfig, SimStats, conn, lock};
use crate::market::venue;
use crate::metrics::tap::TapStats;
use crate::util::clock::wall_ms;

/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// On shutdown, connections get this long to close politely before their sockets are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// How often shutdown looks whether connections are gone.
const SHUTDOWN_POLL: Duration = Duration::from_millis(5);
/// Bound on the connection that wakes the accept loop at shutdown.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// How the front behaves whatever it serves.
#[derive(Clone, Debug)]
pub(crate) struct Front {
    /// Interval of the server's pings on each connection.
    pub ping_interval: Duration,
    pub faults: Faults,
    /// Keep every data frame sent, for [`Sim::sent`].
    pub record_sent: bool,
    /// Frames each connection may have queued ([`conn::OUTBOUND_CAPACITY`] for the sim).
    pub queue: usize,
    /// Where the delivery latency of frames that carry their receipt time goes (the tap's).
    pub delivery: Option<Arc<TapStats>>,
    /// Binance's limits on clients, when enforced.
    pub limits: Option<conn::ClientLimits>,
}

/// State every thread of one server shares.
pub(crate) struct Shared {
    pub(crate) front: Front,
    pub(crate) source: Box<dyn Source>,
    pub(crate) injector: Injector,
    /// Disconnects (nothing is ever sent on it) when the sim stops: threads blocked in a
    /// `select!` or a timed wait wake up at once.
    pub(crate) stop: Receiver<()>,
    stopping: AtomicBool,
    /// Every accepted socket, to cut the ones still open when the shutdown grace is over.
    sockets: Mutex<Vec<Weak<TcpStream>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// WebSocket connections so far; ids are 1..=this.
    connections: AtomicU64,
    rest_requests: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    /// Bytes of those frames, WebSocket headers included.
    pub(crate) bytes_sent: AtomicU64,
    /// Data frames sent, in order (only with `record_sent`).
    pub(crate) sent: Mutex<Vec<SentFrame>>,
}

impl Shared {
    /// Starts a named thread whose handle shutdown joins.
    pub(crate) fn spawn(
        &self,
        name: String,
        work: impl FnOnce() + Send + 'static,
    ) -> io::Result<()> {
        let handle = thread::Builder::new().name(name).spawn(work)?;
        let mut threads = lock(&self.threads);
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
        Ok(())
    }

    /// Counts a new WebSocket connection and returns its id.
    pub(crate) fn new_connection(&self) -> u64 {
        self.connections.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn track(&self, tcp: &Arc<TcpStream>) {
        let mut sockets = lock(&self.sockets);
        sockets.retain(|s| s.strong_count() > 0);
        sockets.push(Arc::downgrade(tcp));
    }

    fn open_sockets(&self) -> Vec<Arc<TcpStream>> {
        lock(&self.sockets)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

/// A running sim exchange. Dropping it shuts it down like [`Sim::shutdown`].
pub struct Sim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Dropped to stop every thread; `None` once stopped.
    stop: Option<Sender<()>>,
    accept: Option<JoinHandle<()>>,
    /// The source's own threads (the sim's pumps).
    workers: Vec<JoinHandle<()>>,
}

impl Sim {
    /// Binds `listen` (e.g. `127.0.0.1:0`), starts serving the simulated market and returns at
    /// once.
    ///
    /// # Errors
    /// An invalid configuration (`InvalidInput`), or the bind failing.
    pub fn start(listen: &str, config: SimConfig) -> io::Result<Sim> {
        let config = config.validated()?;
        let now = wall_ms();
        let feeds = config
            .symbols
            .iter()
            .map(|s| {
                Box::new(Market::new(s, config.seed, now).speaking(config.market)) as Box<dyn Feed>
            })
            .collect();
        let front = Front {
            ping_interval: config.ping_interval,
            faults: config.faults,
            record_sent: config.record_sent,
            queue: conn::OUTBOUND_CAPACITY,
            delivery: None,
            limits: None,
        };
        let calendar = Calendar::new(config.listings);
        Sim::serve(
            listen,
            front,
            Box::new(Hub::new(feeds, config.rate, calendar, config.market)),
        )
    }

    /// Serves `source` behind the front (paths, control messages, REST, pings, faults): the
    /// simulated market, or a recording's playback.
    pub(crate) fn serve(listen: &str, front: Front, source: Box<dyn Source>) -> io::Result<Sim> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = bounded(0);
        let shared = Arc::new(Shared {
            source,
            injector: Injector::new(front.faults.clone()),
            front,
            stop: stop_rx,
            stopping: AtomicBool::new(false),
            sockets: Mutex::default(),
            threads: Mutex::default(),
            connections: AtomicU64::new(0),
            rest_requests: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            sent: Mutex::default(),
        });
        let mut sim = Sim {
            shared: Arc::clone(&shared),
            addr,
            stop: Some(stop),
            accept: None,
            workers: Vec::new(),
        };
        for index in 0..shared.source.workers() {
            let shared = Arc::clone(&shared);
            let work = move || shared.source.work(index, &shared);
            sim.workers.push(
                thread::Builder::new()
                    .name(format!("sim-work-{index}"))
                    .spawn(work)?,
            );
        }
        let accept = move || accept_loop(&shared, &listener);
        sim.accept = Some(
            thread::Builder::new()
                .name("sim-accept".into())
                .spawn(accept)?,
        );
        Ok(sim)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://HOST:PORT`, to which a client appends `/stream?streams=…` or `/ws/…`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", reachable(self.addr))
    }

    /// `http://HOST:PORT`, to which a client appends `/fapi/v1/depth?…`.
    pub fn rest_url(&self) -> String {
        format!("http://{}", reachable(self.addr))
    }

    /// Every data frame sent so far, in send order; empty unless `record_sent` is set.
    pub fn sent(&self) -> Vec<SentFrame> {
        lock(&self.shared.sent).clone()
    }

    /// Takes the frames recorded so far, for streaming them to a file.
    pub(crate) fn take_sent(&self) -> Vec<SentFrame> {
        std::mem::take(&mut *lock(&self.shared.sent))
    }

    pub fn stats(&self) -> SimStats {
        SimStats {
            connections: self.shared.connections.load(Ordering::Relaxed),
            rest_requests: self.shared.rest_requests.load(Ordering::Relaxed),
            frames_sent: self.shared.frames_sent.load(Ordering::Relaxed),
            slow_clients: self.shared.source.slow_clients(),
            faults: self.shared.injector.counts(),
        }
    }

    /// Stops accepting, closes every connection (Close 1001 where it can) and joins all threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// The shutdown itself; does nothing the second time.
    pub(crate) fn stop(&mut self) {
        let Some(stop) = self.stop.take() else { return };
        self.shared.stopping.store(true, Ordering::SeqCst);
        drop(stop);
        if let Err(e) = TcpStream::connect_timeout(&reachable(self.addr), WAKE_TIMEOUT) {
            warn!("sim: cannot wake the accept loop: {e}");
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !self.shared.open_sockets().is_empty() && Instant::now() < deadline {
            thread::sleep(SHUTDOWN_POLL);
        }
        for tcp in self.shared.open_sockets() {
            let _ = tcp.shutdown(Direction::Both);
        }
        loop {
            let threads = std::mem::take(&mut *lock(&self.shared.threads));
            if threads.is_empty() {
                break;
            }
            for thread in threads {
                let _ = thread.join();
            }
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        debug!("sim: stopped, {:?}", self.stats());
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The address a local client dials: loopback when bound to the unspecified address.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    for tcp in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match tcp {
            Ok(tcp) => {
                let conn = Arc::clone(shared);
                if let Err(e) = shared.spawn("sim-conn".into(), move || handle(&conn, tcp)) {
                    warn!("sim: cannot start a connection thread: {e}");
                }
            }
            Err(e) => {
                warn!("sim: accept failed: {e}");
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// Serves one accepted socket: a REST request, or a WebSocket connection until it ends.
fn handle(shared: &Arc<Shared>, tcp: TcpStream) {
    if let Err(e) = tcp
        .set_nodelay(true)
        .and_then(|()| tcp.set_read_timeout(Some(HEAD_TIMEOUT)))
    {
        debug!("sim: socket setup failed: {e}");
        return;
    }
    let tcp = Arc::new(tcp);
    shared.track(&tcp);
    let head = match http::peek_head(&tcp) {
        Ok(Some(head)) => head,
        Ok(None) => {
            let _ = http::respond(&tcp, 0, http::error(400, -1, "malformed request"), &[]);
            return;
        }
        Err(e) => {
            debug!("sim: no request: {e}");
            return;
        }
    };
    let mut headers = Vec::new();
    let reply = if !head.upgrade {
        shared.rest_requests.fetch_add(1, Ordering::Relaxed);
        let refused = shared.injector.rejects_snapshot(&head.target);
        headers = shared
            .injector
            .rest_headers(&head.target, refused.is_some());
        match refused {
            Some(status) => http::error(status, -1, "snapshot refused (fault injection)"),
            None => {
                let (status, mut body) = http::rest(&head, &*shared.source);
                if status == 200
                    && matches!(
                        venue::Market::of_rest_path(&head.target),
                        Some((_, "depth"))
                    )
                {
                    shared.injector.pad_snapshot(&mut body);
                }
                (status, body)
            }
        }
    } else {
        match http::ws_route(&head.target) {
            Err(reply) => reply,
            Ok(_) if shared.stopping.load(Ordering::SeqCst) => {
                http::error(503, -1, "shutting down")
            }
            Ok(route)
                if shared
                    .front
                    .limits
                    .is_some_and(|l| route.streams.len() > l.streams) =>
            {
                http::error(400, -1, "too many streams in the URL")
            }
            Ok(route) => match shared.injector.rejects_upgrade() {
                Some(status) => http::error(status, -1, "upgrade rejected (fault injection)"),
                None => return conn::serve(shared, tcp, route),
            },
        }
    };
    if let Err(e) = http::respond(&tcp, head.len, reply, &headers) {
        debug!("sim: answering {}: {e}", head.target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_dial_loopback_when_bound_to_any_address() {
        let dial = |addr: &str| reachable(addr.parse().unwrap()).to_string();
        assert_eq!(dial("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(dial("[::]:8080"), "[::1]:8080");
        assert_eq!(dial("127.0.0.2:8080"), "127.0.0.2:8080");
    }
}
