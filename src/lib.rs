//! obrec records Binance order-book streams, and the trades, best bid/ask, mark prices and
//! liquidations beside them, to gzip NDJSON, proves their continuity, reports live health
//! metrics, and replays recordings offline.
//!
//! # Layers
//!
//! Each folder is a layer; a module uses only the layers below it (`tests/layers.rs` checks this
//! from the `use crate::…` lines):
//!
//! ```text
//! main ─▶ cli ─▶ demo ─▶ recorder │ offline │ exchange │ relay ─▶ metrics ─▶ store ─▶ market ─▶ util, error
//! ```
//!
//! * `util` — the clock, retry backoff, shutdown, logging. Knows nothing of markets or files.
//! * `market` — Binance's vocabulary, pure: symbols, stream names, the stream kinds beside the book
//!   and their routes, frame parsing, the continuity state machines, the order book, the
//!   listing (`exchangeInfo`) and its filter.
//! * `store` — the on-disk format, in one home: line layouts (encode, scan, parse), file names and
//!   which files a command reads, CRC-checked gzip members, the bounded line reader, staged `.part`
//!   files, the data-dir lock, connection numbers, crash recovery, a file series' continuity read
//!   line by line (`store::continuity`, the rule replay applies, run by `obrec archive`).
//! * `metrics` — counters and HdrHistogram figures, the report (`metrics.json`, SUMMARY), the
//!   Prometheus exporter, `obrec health`.
//! * `recorder` — the live pipeline: connections, REST snapshots and backfills, the writer, the
//!   compression stage, the console, the universe watch (`--symbol all`).
//! * `offline` — `replay` (and the books it rebuilds, shared with `report`), `report` (one HTML
//!   page), `export` (hftbacktest, Tardis CSV, Parquet), `import`, `merge` (one archive from
//!   several recorders' archives).
//! * `exchange` — the Binance-compatible front, behind it the simulator, a recording, or a
//!   running recorder's accepted frames, live (`record --tap`, `exchange::tap`). The hand-off
//!   types are in `market::tee` and `metrics::tap`, so the recorder and the exchange need not
//!   know each other; the cli wires them.
//! * `relay` — NATS JetStream: the publisher of `record --nats` (each line written, to a
//!   replicated stream, de-duplicated across recorders by `Nats-Msg-Id`) and `obrec archive`,
//!   which writes the stream back into the recorder's files, checking each series' continuity
//!   as replay does (`archive.json`, `--metrics-addr`). The hand-off types are in
//!   `store::relayed` and `metrics::nats`, so the recorder need not know NATS.
//! * `demo` — sim, record and check in one command.
//! * `cli` — the only module that knows clap: flags into the plain configs above.
//!
//! # Threads and channels of a recording
//!
//! ```text
//!  exchange ──ws──▶ recorder::feed::Group (one thread per route and ≤200 streams)
//!                     │  market::frame::parse_frame: header only, payload kept byte-exact
//!                     │  market::sequence::Chain: pu == last u, per symbol (depth; spot: pu = U - 1)
//!                     │  market::kind::Tape: dense ids, rising ids, cadence (beside the book)
//!                     ▼
//!            recorder::budget: channel of recorder::event::Event bounded by bytes
//!                     │  (--queue-bytes; spent → the reader waits, TCP holds the exchange back)
//!                     ▼
//!                  recorder::writer::Writer (one thread): store::line encodes, member
//!                     │  boundaries, file periods
//!                     ├─▶ recorder::compress (one thread): deflate (faster while behind),
//!                     │     write, fsync + rename
//!                     │     └─▶ <symbol>_<kind>_<UTC>.ndjson.gz(.part)  complete gzip members
//!                     └─▶ metrics.json + SUMMARY line               metrics::Metrics + Stats
//!                              │ bounded channel of lines (full → dropped, the log keeps them)
//!                              ▼
//!                           recorder::console (one thread): stdout; a closed pipe ends printing
//!  recorder::snapshot::Fetcher (one thread, --depth 0 or aggTrade): REST snapshots and aggTrade
//!     backfills (recorder::backfill) back to the groups, which send them on to the writer
//!  recorder::universe::Watch (one thread, --symbol all): exchangeInfo every
//!     --universe-refresh-sec; a listing's files ──▶ the writer (event::ListedRecord, before any
//!     of its events), its streams ──▶ a group with room (feed::Change, SUBSCRIBE on the live
//!     connection) or a new group; a delisting ──▶ its groups: UNSUBSCRIBE, and after its last
//!     event event::RetiredRecord ──▶ the writer, which finishes its files
//!  metrics::exporter (one thread, --metrics-addr): /metrics, /healthz; polls, never blocks on a client
//!  recorder::feed::Group ──tee: bounded 65,536 (full → tap.drops)──▶ exchange::tap dispatcher
//!     (one thread, --tap): live book + fan-out under one lock ──▶ a bounded queue per client
//!     (full → the client is cut, tap.cuts) ──▶ the front's writer thread per client
//!  recorder::writer ──each line written: bounded 65,536 (full → nats.dropped)──▶ relay::publish
//!     (one thread, --nats, its own one-thread tokio runtime): pipelined JetStream publishes,
//!     retried under the same Nats-Msg-Id, confirmations counted in metrics.json's `nats`
//! ```
//!
//! Data flows one way: readers wait for the writer only when the hand-off's byte budget is
//! spent (losing nothing, in bounded memory), the writer never talks back. The only
//! message going upstream is the compression stage's receipt for each batch (bytes written, or the
//! error that ends the run). Shutdown is the [`Shutdown`] token: readers see it, drop their
//! senders, and the writer, seeing its channel close, finishes every file.
//!
//! # Where to add things
//!
//! * A stream kind beside the book: a row of the table in `market/kind.rs` (name, route, event
//!   type, ids, completeness rule), its ids in `market/frame.rs` and `store/line.rs`, its payload
//!   in the simulator's `exchange/sim/kinds.rs`; file names, connection groups, metrics, replay,
//!   serve and export take it from there.
//! * A market: a row of the table in `market/venue.rs` (name, endpoints, routes or not, REST
//!   paths, depth limits and weights, budget, ping cadence, message limit, the kinds it publishes,
//!   its continuity rule); its payload shapes in `market/frame.rs` (read) and the simulator's
//!   `exchange/sim/walk.rs` and `kinds.rs` (written). `record --market`, the REST fetcher, the
//!   feed's book sync, `sim`/`serve --market` and the offline readers take it from there; a new
//!   continuity rule is a variant of `market::sequence::Continuity`. USD-M, COIN-M (sizes in
//!   contracts) and spot are in the table.
//! * A command: its flags in `cli/`, its work in the layer it belongs to.
//!
//! # Public API
//!
//! Modules are private; what `main`, the tests and the benches use is re-exported here.

// Everything here is safe Rust; this keeps it so, on input from the network and from files.
#![forbid(unsafe_code)]

mod cli;
mod demo;
mod error;
mod exchange;
mod market;
mod metrics;
mod offline;
mod recorder;
mod relay;
mod store;
mod util;

pub use cli::run;
pub use error::Error;
pub use exchange::serve::{Pace, Recording, Serve, ServeConfig};
pub use exchange::sim::{Fault, Faults, Rate, Schedule, SentFrame, Sim, SimConfig, SimStats};
pub use market::book::{Book, Levels};
pub use market::frame::{Frame, parse_frame};
pub use market::kind::{Check, Kind, KindIds, Tape};
pub use market::sequence::{BookSync, Chain, Ids, SnapshotStep, Step, Verdict};
pub use offline::replay::replay;
pub use store::gzip::{MEMBER_BYTES, MemberEncoder};
pub use store::line::{DepthLine, KindLine, encode_depth, encode_kind};
pub use util::clock::civil_from_days;
