//! Fault injection: every decision to break the protocol on purpose is made and counted here.
//!
//! The rest of the sim is a faithful exchange that asks this module at four points: when an event
//! is published (depth, trade and aggregate trade gaps), when a stream is subscribed (mutes), when an upgrade
//! arrives (rejections, a dripped handshake), when a REST request is answered (refusals, headers,
//! padding) and, per connection, for each data frame, client ping and timer (closes, resets, EOFs,
//! stalls, junk frames, protocol violations, ignored pings, lifetime, serverShutdown notices). Keeping the decisions together keeps each fault's
//! definition, its CLI flag and its counter in one place.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::burst::Burst;
use super::wire;
use crate::market::venue::Market;

/// Default `--oversized-bytes`: 2 MiB, far above any real depth frame (the largest in the fixtures
/// is ~26 KB) and above the 1 MiB limits clients commonly set.
pub const DEFAULT_OVERSIZED_BYTES: usize = 2 << 20;
/// Default `--reject-status`: what Binance answers during maintenance.
pub const DEFAULT_REJECT_STATUS: u16 = 503;
/// Default `--snapshot-status`: what Binance answers a request it will not serve (a bad symbol or
/// parameter), which no amount of waiting fixes.
pub const DEFAULT_SNAPSHOT_STATUS: u16 = 400;
/// The `--garbage-every` frame: text a client cannot parse and must skip.
const GARBAGE: &str = "}{ not json";
/// The `--binary-every` frame: Binance market streams only ever send text.
const BINARY: &[u8] = &[0x00, 0xde, 0xad, 0xbe, 0xef, 0xff];
/// How long a connection keeps serving after its serverShutdown notice before it closes: enough
/// for a recorder to open its replacement and overlap, short enough that a test waits little.
/// (Binance announced "10 minutes" for spot once, then dropped the figure.)
pub const SERVER_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Which faults to inject. `Default` injects none.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Every Nth event of a symbol is generated but sent to nobody on its depth streams, so every
    /// client sees a `pu` that is not its last `u` (one gap in the shared sequence). The trades
    /// and prices the event brought still flow.
    pub gap_every: Option<u64>,
    /// Send a Close frame instead of a connection's data frame number N+1.
    pub close_after: Option<u64>,
    /// Reset the TCP connection (RST, SO_LINGER 0) instead of data frame number N+1.
    pub reset_after: Option<u64>,
    /// Close the TCP connection without a Close frame instead of data frame number N+1.
    pub eof_after: Option<u64>,
    /// After N data frames, send no data on the connection (pings still answered)...
    pub stall_after: Option<u64>,
    /// ...for this long, then resume with the current event; `None` stalls until the end.
    pub stall_for: Option<Duration>,
    /// After every Nth data frame, send a text frame that is not JSON.
    pub garbage_every: Option<u64>,
    /// After every Nth data frame, send a binary frame.
    pub binary_every: Option<u64>,
    /// After every Nth data frame, send a text frame of `oversized_bytes` bytes.
    pub oversized_every: Option<u64>,
    /// Size of the oversized frames' payload.
    pub oversized_bytes: usize,
    /// Never answer a client's ping with a pong.
    pub ignore_pings: bool,
    /// Close every connection (Close frame, 1001) at this age, like Binance's 24 h cut.
    pub conn_lifetime: Option<Duration>,
    /// Symbols (upper case) whose subscriptions are acknowledged but never get data.
    pub mute: Vec<String>,
    /// Streams whose subscriptions are acknowledged but never get data; the others flow.
    pub mute_streams: Vec<String>,
    /// Every Nth trade of a symbol is made but sent to nobody, on `@trade` and `@aggTrade`
    /// alike: trade ids skip for every client.
    pub trade_gap_every: Option<u64>,
    /// Every Nth aggregate trade of a symbol is sent to nobody on `@aggTrade`, while REST
    /// `/fapi/v1/aggTrades` keeps it: aggregate ids skip for every client, and a backfill from
    /// REST closes the gap, as on Binance when frames are lost on the way.
    pub agg_gap_every: Option<u64>,
    /// At this age each connection gets a `serverShutdown` event, keeps serving for
    /// [`SERVER_SHUTDOWN_GRACE`], then closes (Close frame 1001).
    pub server_shutdown_after: Option<Duration>,
    /// The first N WebSocket upgrade attempts get `reject_status` instead of a handshake.
    pub reject_upgrades: u64,
    /// The HTTP status of rejected upgrades.
    pub reject_status: u16,
    /// The first N depth snapshot requests (`/fapi/v1/depth`) get `snapshot_status`.
    pub reject_snapshots: u64,
    /// The HTTP status of rejected snapshot requests.
    pub snapshot_status: u16,
    /// `Retry-After` (seconds) sent with rejected snapshot requests, as Binance does with 429/418.
    pub retry_after: Option<u64>,
    /// `x-mbx-used-weight-1m` sent with every depth snapshot and aggregate trades answer.
    pub used_weight: Option<u64>,
    /// Depth snapshot bodies are padded with trailing spaces (legal JSON) to at least this size.
    pub snapshot_bytes: Option<usize>,
    /// After every Nth data frame, send a frame that breaks the WebSocket protocol, which a client
    /// must answer by failing the connection.
    pub violation_every: Option<u64>,
    /// Which rule those frames break.
    pub violation: Violation,
    /// Send the upgrade response one byte per this interval: a server that drips its handshake,
    /// or (with a long interval) withholds it.
    pub handshake_drip: Option<Duration>,
    /// A spell of every symbol's events at a multiple of `--rate`.
    pub burst: Option<Burst>,
}

/// A WebSocket protocol violation the sim can send (`--violation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Violation {
    /// A text frame that is not UTF-8.
    #[default]
    Utf8,
    /// A data frame with a reserved opcode.
    Opcode,
    /// A masked frame: only clients mask.
    Masked,
    /// A frame with RSV1 set although no extension was agreed.
    Rsv,
    /// A Close frame with code 1005, which must never be sent on the wire.
    CloseCode,
}

impl Violation {
    const NAMES: [(&str, Violation); 5] = [
        ("utf8", Violation::Utf8),
        ("opcode", Violation::Opcode),
        ("masked", Violation::Masked),
        ("rsv", Violation::Rsv),
        ("close-code", Violation::CloseCode),
    ];
}

impl FromStr for Violation {
    type Err = String;

    /// `utf8`, `opcode`, `masked`, `rsv` or `close-code`.
    fn from_str(s: &str) -> Result<Violation, String> {
        Violation::NAMES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|&(_, v)| v)
            .ok_or_else(|| {
                let names: Vec<&str> = Violation::NAMES.iter().map(|(name, _)| *name).collect();
                format!(
                    "unknown violation `{s}`: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            gap_every: None,
            close_after: None,
            reset_after: None,
            eof_after: None,
            stall_after: None,
            stall_for: None,
            garbage_every: None,
            binary_every: None,
            oversized_every: None,
            oversized_bytes: DEFAULT_OVERSIZED_BYTES,
            ignore_pings: false,
            conn_lifetime: None,
            mute: Vec::new(),
            mute_streams: Vec::new(),
            trade_gap_every: None,
            agg_gap_every: None,
            server_shutdown_after: None,
            reject_upgrades: 0,
            reject_status: DEFAULT_REJECT_STATUS,
            reject_snapshots: 0,
            snapshot_status: DEFAULT_SNAPSHOT_STATUS,
            retry_after: None,
            used_weight: None,
            snapshot_bytes: None,
            violation_every: None,
            violation: Violation::default(),
            handshake_drip: None,
            burst: None,
        }
    }
}

/// A kind of injected fault, as counted in [`SimStats`](super::SimStats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An event sent to nobody (`--gap-every`).
    Gap,
    /// A clean close (`--close-after`).
    Close,
    /// A TCP reset (`--reset-after`).
    Reset,
    /// A close without Close frame (`--eof-after`).
    Eof,
    /// A connection that went silent (`--stall-after`).
    Stall,
    /// A non-JSON text frame (`--garbage-every`).
    Garbage,
    /// A binary frame (`--binary-every`).
    Binary,
    /// An oversized frame (`--oversized-every`).
    Oversized,
    /// A client ping left without pong (`--ignore-pings`).
    IgnoredPing,
    /// A connection closed at its age limit (`--conn-lifetime`).
    Lifetime,
    /// A subscription acknowledged but never fed (`--mute`).
    Muted,
    /// A refused WebSocket upgrade (`--reject-upgrades`).
    RejectedUpgrade,
    /// A refused depth snapshot request (`--reject-snapshots`).
    RejectedSnapshot,
    /// A depth snapshot padded to `--snapshot-bytes`.
    PaddedSnapshot,
    /// A frame that breaks the WebSocket protocol (`--violation-every`).
    Violation,
    /// An upgrade answered one byte at a time (`--handshake-drip-sec`).
    DrippedHandshake,
    /// A stream subscription acknowledged but never fed (`--mute-stream`).
    MutedStream,
    /// A trade sent to nobody (`--trade-gap-every`).
    TradeGap,
    /// A `serverShutdown` notice sent (`--server-shutdown-after`).
    ServerShutdown,
    /// An aggregate trade kept off the stream, still in REST (`--agg-gap-every`).
    AggGap,
}

impl Fault {
    /// How many kinds there are: the size of a counter array.
    pub const COUNT: usize = 20;
}

/// Injection counters, one per [`Fault`].
#[derive(Debug, Default)]
pub(crate) struct FaultCounters([AtomicU64; Fault::COUNT]);

impl FaultCounters {
    fn add(&self, fault: Fault) {
        self.0[fault as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> [u64; Fault::COUNT] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// The sim-wide fault state: the configuration, the counters and the upgrade attempts so far.
#[derive(Debug)]
pub(crate) struct Injector {
    faults: Faults,
    counters: FaultCounters,
    upgrade_attempts: AtomicU64,
    snapshot_requests: AtomicU64,
    /// Junk frames encoded once: garbage, binary, oversized, violation (empty unless enabled).
    junk: [Vec<u8>; 4],
}

impl Injector {
    pub(crate) fn new(faults: Faults) -> Injector {
        let mut junk = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        wire::push_text(&mut junk[0], GARBAGE);
        wire::push_binary(&mut junk[1], BINARY);
        if faults.oversized_every.is_some() {
            wire::push_text(&mut junk[2], &oversized_text(faults.oversized_bytes));
        }
        wire::push_violation(&mut junk[3], faults.violation);
        Injector {
            faults,
            counters: FaultCounters::default(),
            upgrade_attempts: AtomicU64::new(0),
            snapshot_requests: AtomicU64::new(0),
            junk,
        }
    }

    pub(crate) fn counts(&self) -> [u64; Fault::COUNT] {
        self.counters.snapshot()
    }

    /// The wire bytes of the junk frames `extras` asks for.
    pub(crate) fn junk(&self, extras: &Extras) -> impl Iterator<Item = &[u8]> {
        let wanted = [
            extras.garbage,
            extras.binary,
            extras.oversized,
            extras.violation,
        ];
        self.junk
            .iter()
            .zip(wanted)
            .filter(|(_, on)| *on)
            .map(|(wire, _)| wire.as_slice())
    }

    /// The interval between a symbol's events `elapsed` after the sim started, `usual` outside a
    /// `--burst`.
    pub(crate) fn pace(&self, usual: Duration, elapsed: Duration) -> Duration {
        self.faults
            .burst
            .map_or(usual, |burst| burst.interval(usual, elapsed))
    }

    /// Whether event number `n` (1-based, per symbol) is withheld from everyone.
    pub(crate) fn drops_event(&self, n: u64) -> bool {
        self.hit(every(self.faults.gap_every, n), Fault::Gap)
    }

    /// Whether the symbol's trade number `n` (1-based) is withheld from everyone.
    pub(crate) fn drops_trade(&self, n: u64) -> bool {
        self.hit(every(self.faults.trade_gap_every, n), Fault::TradeGap)
    }

    /// Whether the symbol's aggregate trade number `n` (1-based) is kept off the stream.
    pub(crate) fn drops_aggregate(&self, n: u64) -> bool {
        self.hit(every(self.faults.agg_gap_every, n), Fault::AggGap)
    }

    /// Whether a subscription to `stream` is to be acknowledged and left silent.
    pub(crate) fn mutes_stream(&self, stream: &str) -> bool {
        let muted = self.faults.mute_streams.iter().any(|m| m == stream);
        self.hit(muted, Fault::MutedStream)
    }

    /// Whether a subscription to `symbol` (upper case) is to be acknowledged and left silent.
    pub(crate) fn mutes(&self, symbol: &str) -> bool {
        self.hit(self.faults.mute.iter().any(|m| m == symbol), Fault::Muted)
    }

    /// The status to refuse this upgrade attempt with, if it is one of the first N.
    pub(crate) fn rejects_upgrade(&self) -> Option<u16> {
        let attempt = self.upgrade_attempts.fetch_add(1, Ordering::Relaxed);
        self.hit(
            attempt < self.faults.reject_upgrades,
            Fault::RejectedUpgrade,
        )
        .then_some(self.faults.reject_status)
    }

    /// The status to refuse this REST request with, if it is one of the first N depth snapshots.
    pub(crate) fn rejects_snapshot(&self, target: &str) -> Option<u16> {
        if !matches!(Market::of_rest_path(target), Some((_, "depth"))) {
            return None;
        }
        let request = self.snapshot_requests.fetch_add(1, Ordering::Relaxed);
        self.hit(
            request < self.faults.reject_snapshots,
            Fault::RejectedSnapshot,
        )
        .then_some(self.faults.snapshot_status)
    }

    /// The headers of a depth snapshot or aggregate trades answer: `Retry-After` on a refused
    /// one, the used weight on every one. None for other requests.
    pub(crate) fn rest_headers(&self, target: &str, refused: bool) -> Vec<(&'static str, u64)> {
        if !matches!(
            Market::of_rest_path(target),
            Some((_, "depth" | "aggTrades"))
        ) {
            return Vec::new();
        }
        let retry_after = self.faults.retry_after.filter(|_| refused);
        [
            ("Retry-After", retry_after),
            ("x-mbx-used-weight-1m", self.faults.used_weight),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect()
    }

    /// Pads a depth snapshot body with trailing spaces up to `--snapshot-bytes`.
    pub(crate) fn pad_snapshot(&self, body: &mut Vec<u8>) {
        if let Some(bytes) = self.faults.snapshot_bytes
            && self.hit(body.len() < bytes, Fault::PaddedSnapshot)
        {
            body.resize(bytes, b' ');
        }
    }

    /// How long to wait before each byte of an upgrade response, if it is to be dripped.
    pub(crate) fn drips_handshake(&self) -> Option<Duration> {
        self.faults
            .handshake_drip
            .filter(|_| self.hit(true, Fault::DrippedHandshake))
    }

    /// The per-connection fault state of a connection starting `now`.
    pub(crate) fn for_connection(&self, now: Instant) -> ConnFaults<'_> {
        ConnFaults {
            injector: self,
            sent: 0,
            stall: Stall::NotYet,
            born: now,
            noticed: false,
        }
    }

    fn hit(&self, yes: bool, fault: Fault) -> bool {
        if yes {
            self.counters.add(fault);
        }
        yes
    }
}

/// A JSON text of exactly `bytes` bytes (when that is long enough to hold the JSON at all).
fn oversized_text(bytes: usize) -> String {
    const HEAD: &str = r#"{"e":"oversized","pad":""#;
    const TAIL: &str = r#""}"#;
    match bytes.checked_sub(HEAD.len() + TAIL.len()) {
        Some(pad) => format!("{HEAD}{}{TAIL}", "x".repeat(pad)),
        None => "x".repeat(bytes),
    }
}

/// The `serverShutdown` event, in the combined-stream envelope (stream `!serverShutdown`) when
/// `combined`, bare otherwise.
pub(crate) fn shutdown_notice(combined: bool, event_ms: u64) -> String {
    let event = format!(r#"{{"e":"serverShutdown","E":{event_ms}}}"#);
    if combined {
        format!(r#"{{"stream":"!serverShutdown","data":{event}}}"#)
    } else {
        event
    }
}

/// Whether `n` is a multiple of an enabled period.
fn every(period: Option<u64>, n: u64) -> bool {
    matches!(period, Some(p) if p > 0 && n.is_multiple_of(p))
}

/// What a connection does with its next data frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameFate {
    /// Send it, then these extra frames.
    Send(Extras),
    /// Drop it: the connection is stalled.
    Withhold,
    /// Do not send it: end the connection this way.
    End(Ending),
}

/// Junk frames to send after a data frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Extras {
    pub garbage: bool,
    pub binary: bool,
    pub oversized: bool,
    pub violation: bool,
}

/// How a fault ends a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Close frame 1000, then TCP close.
    Close,
    /// Close frame 1001 at the connection's age limit.
    Lifetime,
    /// TCP reset.
    Reset,
    /// TCP close without a Close frame.
    Eof,
    /// Close frame 1001 once the grace after a serverShutdown notice is over.
    ServerShutdown,
}

/// What a connection's age calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Send the serverShutdown notice and keep serving.
    Notice,
    End(Ending),
}

#[derive(Debug)]
enum Stall {
    NotYet,
    Until(Option<Instant>),
    Over,
}

/// One connection's fault state: how many data frames it has sent and whether it is stalled.
#[derive(Debug)]
pub(crate) struct ConnFaults<'a> {
    injector: &'a Injector,
    sent: u64,
    stall: Stall,
    born: Instant,
    /// Whether the serverShutdown notice was sent.
    noticed: bool,
}

impl ConnFaults<'_> {
    /// Decides the fate of the connection's next data frame.
    pub(crate) fn next_frame(&mut self, now: Instant) -> FrameFate {
        let (f, inj) = (&self.injector.faults, self.injector);
        let reached = |limit: Option<u64>| limit == Some(self.sent);
        for (limit, ending, fault) in [
            (f.close_after, Ending::Close, Fault::Close),
            (f.reset_after, Ending::Reset, Fault::Reset),
            (f.eof_after, Ending::Eof, Fault::Eof),
        ] {
            if inj.hit(reached(limit), fault) {
                return FrameFate::End(ending);
            }
        }
        if matches!(self.stall, Stall::NotYet) && inj.hit(reached(f.stall_after), Fault::Stall) {
            self.stall = Stall::Until(f.stall_for.map(|d| now + d));
        }
        if let Stall::Until(until) = self.stall {
            if until.is_none_or(|t| now < t) {
                return FrameFate::Withhold;
            }
            self.stall = Stall::Over;
        }
        self.sent += 1;
        FrameFate::Send(Extras {
            garbage: inj.hit(every(f.garbage_every, self.sent), Fault::Garbage),
            binary: inj.hit(every(f.binary_every, self.sent), Fault::Binary),
            oversized: inj.hit(every(f.oversized_every, self.sent), Fault::Oversized),
            violation: inj.hit(every(f.violation_every, self.sent), Fault::Violation),
        })
    }

    /// Whether to answer a client ping.
    pub(crate) fn answers_ping(&self) -> bool {
        !self
            .injector
            .hit(self.injector.faults.ignore_pings, Fault::IgnoredPing)
    }

    /// When the connection's age next calls for something: its lifetime, its serverShutdown
    /// notice, or its close after the notice.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let f = &self.injector.faults;
        let grace = if self.noticed {
            SERVER_SHUTDOWN_GRACE
        } else {
            Duration::ZERO
        };
        let lifetime = f.conn_lifetime.map(|d| self.born + d);
        let shutdown = f.server_shutdown_after.map(|d| self.born + d + grace);
        match (lifetime, shutdown) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Counts and returns what the deadline reached at `now` asks for.
    pub(crate) fn expire(&mut self, now: Instant) -> Expiry {
        let f = &self.injector.faults;
        if f.conn_lifetime.is_some_and(|d| now >= self.born + d) {
            self.injector.hit(true, Fault::Lifetime);
            return Expiry::End(Ending::Lifetime);
        }
        if self.noticed {
            return Expiry::End(Ending::ServerShutdown);
        }
        self.noticed = true;
        self.injector.hit(true, Fault::ServerShutdown);
        Expiry::Notice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sends(v: &FrameFate) -> bool {
        matches!(v, FrameFate::Send(_))
    }

    #[test]
    fn endings_happen_instead_of_frame_n_plus_one() {
        for (faults, ending, fault) in [
            (
                Faults {
                    close_after: Some(3),
                    ..Faults::default()
                },
                Ending::Close,
                Fault::Close,
            ),
            (
                Faults {
                    reset_after: Some(3),
                    ..Faults::default()
                },
                Ending::Reset,
                Fault::Reset,
            ),
            (
                Faults {
                    eof_after: Some(3),
                    ..Faults::default()
                },
                Ending::Eof,
                Fault::Eof,
            ),
        ] {
            let inj = Injector::new(faults);
            let mut conn = inj.for_connection(Instant::now());
            for _ in 0..3 {
                assert!(sends(&conn.next_frame(Instant::now())));
            }
            assert_eq!(conn.next_frame(Instant::now()), FrameFate::End(ending));
            assert_eq!(inj.counts()[fault as usize], 1);
        }
    }

    #[test]
    fn a_stall_withholds_then_resumes() {
        let inj = Injector::new(Faults {
            stall_after: Some(2),
            stall_for: Some(Duration::from_secs(10)),
            ..Faults::default()
        });
        let t0 = Instant::now();
        let mut conn = inj.for_connection(t0);
        assert!(sends(&conn.next_frame(t0)) && sends(&conn.next_frame(t0)));
        assert_eq!(conn.next_frame(t0), FrameFate::Withhold);
        assert_eq!(
            conn.next_frame(t0 + Duration::from_secs(9)),
            FrameFate::Withhold
        );
        assert!(sends(&conn.next_frame(t0 + Duration::from_secs(10))));
        assert!(sends(&conn.next_frame(t0 + Duration::from_secs(11))));
        assert_eq!(inj.counts()[Fault::Stall as usize], 1);
    }

    #[test]
    fn a_stall_without_duration_lasts() {
        let inj = Injector::new(Faults {
            stall_after: Some(0),
            ..Faults::default()
        });
        let t0 = Instant::now();
        let mut conn = inj.for_connection(t0);
        assert_eq!(conn.next_frame(t0), FrameFate::Withhold);
        assert_eq!(
            conn.next_frame(t0 + Duration::from_secs(86_400)),
            FrameFate::Withhold
        );
    }

    #[test]
    fn junk_follows_every_nth_frame() {
        let inj = Injector::new(Faults {
            garbage_every: Some(2),
            binary_every: Some(3),
            ..Faults::default()
        });
        let mut conn = inj.for_connection(Instant::now());
        let extras: Vec<_> = (0..6)
            .map(|_| match conn.next_frame(Instant::now()) {
                FrameFate::Send(e) => (e.garbage, e.binary, e.oversized, e.violation),
                other => panic!("{other:?}"),
            })
            .collect();
        let want = [
            (false, false, false, false),
            (true, false, false, false),
            (false, true, false, false),
        ];
        assert_eq!(extras[..3], want);
        assert_eq!(extras[5], (true, true, false, false));
        assert_eq!(inj.counts()[Fault::Garbage as usize], 3);
        assert_eq!(inj.counts()[Fault::Binary as usize], 2);
    }

    #[test]
    fn oversized_frames_have_the_asked_size() {
        for bytes in [0, 5, 100, DEFAULT_OVERSIZED_BYTES] {
            assert_eq!(oversized_text(bytes).len(), bytes);
        }
        assert!(serde_json::from_str::<serde_json::Value>(&oversized_text(100)).is_ok());
        let inj = Injector::new(Faults {
            oversized_every: Some(1),
            oversized_bytes: 1_000,
            ..Faults::default()
        });
        let all = Extras {
            garbage: true,
            binary: true,
            oversized: true,
            violation: false,
        };
        let sizes: Vec<usize> = inj.junk(&all).map(<[u8]>::len).collect();
        assert_eq!(sizes, [2 + GARBAGE.len(), 2 + BINARY.len(), 4 + 1_000]);
    }

    #[test]
    fn sim_wide_faults() {
        let inj = Injector::new(Faults {
            gap_every: Some(4),
            mute: vec!["BTCUSDT".into()],
            reject_upgrades: 2,
            reject_status: 429,
            ..Faults::default()
        });
        let gaps: Vec<u64> = (1..=12).filter(|&n| inj.drops_event(n)).collect();
        assert_eq!(gaps, [4, 8, 12]);
        assert!(inj.mutes("BTCUSDT") && !inj.mutes("ETHUSDT"));
        assert_eq!(
            [
                inj.rejects_upgrade(),
                inj.rejects_upgrade(),
                inj.rejects_upgrade()
            ],
            [Some(429), Some(429), None]
        );
        let counts = inj.counts();
        assert_eq!(
            (counts[Fault::Gap as usize], counts[Fault::Muted as usize]),
            (3, 1)
        );
        assert_eq!(counts[Fault::RejectedUpgrade as usize], 2);
    }

    #[test]
    fn trade_gaps_and_muted_streams() {
        let inj = Injector::new(Faults {
            trade_gap_every: Some(3),
            agg_gap_every: Some(4),
            mute_streams: vec!["ethusdt@trade".into()],
            ..Faults::default()
        });
        let gaps: Vec<u64> = (1..=7).filter(|&n| inj.drops_trade(n)).collect();
        assert_eq!(gaps, [3, 6]);
        let agg_gaps: Vec<u64> = (1..=9).filter(|&n| inj.drops_aggregate(n)).collect();
        assert_eq!(agg_gaps, [4, 8]);
        assert_eq!(inj.counts()[Fault::AggGap as usize], 2);
        assert!(inj.mutes_stream("ethusdt@trade") && !inj.mutes_stream("ethusdt@aggTrade"));
        let counts = inj.counts();
        assert_eq!(
            (
                counts[Fault::TradeGap as usize],
                counts[Fault::MutedStream as usize]
            ),
            (2, 1)
        );
    }

    #[test]
    fn a_shutdown_notice_comes_before_the_close_and_the_lifetime_wins() {
        let after = Duration::from_secs(5);
        let inj = Injector::new(Faults {
            server_shutdown_after: Some(after),
            ..Faults::default()
        });
        let t0 = Instant::now();
        let mut conn = inj.for_connection(t0);
        assert_eq!(conn.deadline(), Some(t0 + after));
        assert_eq!(conn.expire(t0 + after), Expiry::Notice);
        assert_eq!(conn.deadline(), Some(t0 + after + SERVER_SHUTDOWN_GRACE));
        assert_eq!(
            conn.expire(t0 + after + SERVER_SHUTDOWN_GRACE),
            Expiry::End(Ending::ServerShutdown)
        );
        assert_eq!(inj.counts()[Fault::ServerShutdown as usize], 1);

        let inj = Injector::new(Faults {
            server_shutdown_after: Some(after),
            conn_lifetime: Some(Duration::from_secs(1)),
            ..Faults::default()
        });
        let mut conn = inj.for_connection(t0);
        assert_eq!(conn.deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            conn.expire(t0 + Duration::from_secs(1)),
            Expiry::End(Ending::Lifetime)
        );
        assert_eq!(
            shutdown_notice(true, 7),
            r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":7}}"#
        );
        assert_eq!(shutdown_notice(false, 7), r#"{"e":"serverShutdown","E":7}"#);
    }

    #[test]
    fn every_fault_has_a_counter() {
        assert_eq!(Fault::AggGap as usize + 1, Fault::COUNT);
    }

    #[test]
    fn only_the_first_snapshot_requests_are_refused() {
        let inj = Injector::new(Faults {
            reject_snapshots: 1,
            ..Faults::default()
        });
        assert_eq!(inj.rejects_snapshot("/fapi/v1/time"), None);
        let depth = "/fapi/v1/depth?symbol=ETHUSDT&limit=1000";
        assert_eq!(inj.rejects_snapshot(depth), Some(DEFAULT_SNAPSHOT_STATUS));
        assert_eq!(inj.rejects_snapshot(depth), None);
        assert_eq!(inj.counts()[Fault::RejectedSnapshot as usize], 1);
    }

    #[test]
    fn snapshot_answers_carry_the_asked_headers_and_size() {
        let inj = Injector::new(Faults {
            retry_after: Some(u64::MAX),
            used_weight: Some(7),
            snapshot_bytes: Some(100),
            ..Faults::default()
        });
        let depth = "/fapi/v1/depth?symbol=ETHUSDT&limit=1000";
        assert_eq!(
            inj.rest_headers(depth, true),
            [("Retry-After", u64::MAX), ("x-mbx-used-weight-1m", 7)]
        );
        assert_eq!(
            inj.rest_headers(depth, false),
            [("x-mbx-used-weight-1m", 7)]
        );
        assert_eq!(
            inj.rest_headers("/fapi/v1/aggTrades?symbol=ETHUSDT&fromId=1", false),
            [("x-mbx-used-weight-1m", 7)]
        );
        assert!(inj.rest_headers("/fapi/v1/time", true).is_empty());
        let mut body = b"{}".to_vec();
        inj.pad_snapshot(&mut body);
        assert_eq!((body.len(), &body[..3]), (100, &b"{} "[..]));
        assert_eq!(inj.counts()[Fault::PaddedSnapshot as usize], 1);
    }

    #[test]
    fn violations_parse_by_name() {
        for (name, v) in Violation::NAMES {
            assert_eq!(name.parse(), Ok(v));
        }
        assert!("utf-8".parse::<Violation>().is_err());
    }

    #[test]
    fn no_faults_by_default() {
        let inj = Injector::new(Faults::default());
        let mut conn = inj.for_connection(Instant::now());
        assert!(
            (0..1_000)
                .all(|_| conn.next_frame(Instant::now()) == FrameFate::Send(Extras::default()))
        );
        assert!(conn.answers_ping() && conn.deadline().is_none());
        assert!(
            !(1..1_000).any(|n| inj.drops_event(n) || inj.drops_trade(n) || inj.drops_aggregate(n))
        );
        assert!(inj.rejects_upgrade().is_none() && !inj.mutes_stream("ethusdt@trade"));
        assert!(inj.drips_handshake().is_none());
        assert!(
            inj.rest_headers("/fapi/v1/depth?symbol=ETHUSDT", true)
                .is_empty()
        );
        assert_eq!(inj.counts(), [0; Fault::COUNT]);
    }
}
