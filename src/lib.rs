//! obrec records Binance USD-M futures order-book streams to gzip NDJSON, proves their
//! continuity, reports live health metrics, and replays recordings offline.
//!
//! # Data flow
//!
//! ```text
//!  exchange ──ws──▶ feed::Group (one thread per ≤200 streams)
//!                     │  record::parse_frame: header only, payload kept byte-exact
//!                     │  sequence::Chain: pu == last u, per symbol
//!                     ▼
//!            bounded crossbeam channel of record::Event (full → counted drop, never a stall)
//!                     ▼
//!                  writer::Writer (one thread): lines, member boundaries, periods
//!                     ├─▶ compress (one thread): deflate, write, fsync + rename
//!                     │     └─▶ <symbol>_depth_<UTC>.ndjson.gz(.part)   complete gzip members
//!                     └─▶ metrics.json + SUMMARY line               metrics::Metrics + Stats
//! ```
//!
//! Data flows one way: readers never wait for the writer, the writer never talks back. The only
//! message going upstream is the compression stage's receipt for each job (bytes written, or the
//! error that ends the run).
//!
//! # Layout
//!
//! * [`cli`] — flags (each also an `OBREC_*` variable), validated while parsing.
//! * [`recorder`] — one recording run: starts readers and writer, shuts them down in order.
//! * [`feed`] — connections, pings, staleness, backoff, make-before-break rollover.
//! * [`record`] — the frame header parser and the depth line encoder.
//! * [`sequence`] — continuity state machines, shared by live recording and replay.
//! * [`salvage`] — finishes `.part` files left by a crash, before recording resumes.
//! * [`snapshot`] — REST depth snapshots for diff depth, inside the weight budget.
//! * [`writer`] — lines per symbol, file periods and names, atomic `metrics.json`.
//! * [`compress`] — gzip members, written in order; files fsynced and renamed.
//! * [`metrics`] — counters, HdrHistogram figures, the report schema and SUMMARY line.
//! * [`replay`] — offline verification and summary of recordings.
//! * [`book`] — the local order book.
//! * [`interop`] — `obrec export` / `obrec import`: hftbacktest's raw feed files.
//! * [`sim`] — a local Binance look-alike with fault injection (`obrec sim`, and every test).
//! * [`serve`] — recordings played back as a live stream behind the sim's front (`obrec serve`).
//! * [`demo`] — sim + record + check, with no network.
//! * [`exporter`] — Prometheus `/metrics` and `/healthz` (`--metrics-addr`).
//! * [`health`] — `obrec health`, a supervisor's check of `metrics.json`.
//! * [`logging`], [`shutdown`], [`error`] — plumbing.

pub mod book;
pub mod cli;
pub mod compress;
pub mod demo;
pub mod error;
pub mod exporter;
pub mod feed;
pub mod health;
pub mod interop;
pub mod logging;
pub mod metrics;
pub mod record;
pub mod recorder;
pub mod replay;
pub mod salvage;
pub mod sequence;
pub mod serve;
pub mod shutdown;
pub mod sim;
pub mod snapshot;
pub mod writer;

pub use error::{Error, FeedError, Result};
