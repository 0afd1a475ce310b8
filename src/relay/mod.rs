//! NATS JetStream: the recorder's lines published to a replicated stream (`record --nats`), and
//! the archiver that writes them back into the recorder's files (`obrec archive`).
//!
//! Every line goes to the subject `obrec.<market>.<kind>.<SYMBOL>` of the stream [`STREAM`],
//! under a `Nats-Msg-Id` made of what identifies its exchange event ([`msg_id`]), never of the
//! receipt: the same event published by several recorders is stored once, by the server.
//!
//! The client is asynchronous (`async-nats`); each of these threads runs its own one-thread
//! runtime, so nothing of it reaches the recorder's blocking threads.

pub mod archive;
pub mod publish;

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::error::{Error, Result};
use crate::market::symbol::Symbol;
use crate::market::venue::Market;
use crate::store::names::FileKind;
use crate::store::relayed::{EventKey, Series};

/// The JetStream stream every recorder publishes to and the archiver reads.
pub const STREAM: &str = "OBREC";
/// What every subject starts with; the stream takes everything under it.
const SUBJECT_ROOT: &str = "obrec";
/// How long the stream keeps a line: a week is time enough for an archiver down over a long
/// weekend to catch up, while a day of a whole market (a few GB) stays affordable on each node.
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long the server remembers a `Nats-Msg-Id`: the same event from two live recorders arrives
/// within milliseconds, and a publisher gives up retrying after [`publish::RETRY_FOR`], well
/// inside it. The server's default; a longer one costs the server memory per line.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// JetStream replicates a stream on at most this many servers here: three survive the loss of
/// one with a quorum left.
const MAX_REPLICAS: usize = 3;

/// `obrec.usdm.depth.BTCUSDT`: where a series' lines are published. The market is part of every
/// subject and message id, since a symbol names different instruments on different markets.
pub fn subject(market: Market, series: &Series) -> String {
    format!(
        "{SUBJECT_ROOT}.{market}.{}.{}",
        series.kind.marker(),
        series.symbol
    )
}

/// `obrec.usdm.>`: every subject of one market, what an archiver of that market reads.
pub fn market_subjects(market: Market) -> String {
    format!("{SUBJECT_ROOT}.{market}.>")
}

/// The series a subject of `market` names; `None` for anything else under the stream.
pub fn series_of(market: Market, subject: &str) -> Option<Series> {
    let rest = subject.strip_prefix(SUBJECT_ROOT)?.strip_prefix('.')?;
    let rest = rest.strip_prefix(market.name())?.strip_prefix('.')?;
    let (marker, symbol) = rest.split_once('.')?;
    let kind = FileKind::ALL.into_iter().find(|k| k.marker() == marker)?;
    let symbol = Symbol::new(symbol).ok()?;
    Some(Series { symbol, kind })
}

/// `usdm.BTCUSDT.depth.5123107853551`, or for an event without an id
/// `usdm.BTCUSDT.forceOrder.1723161256184-9f1c2a3b`: the same for every recorder of the event.
pub fn msg_id(market: Market, series: &Series, key: EventKey) -> String {
    let head = format!("{market}.{}.{}", series.symbol, series.kind.marker());
    match key {
        EventKey::Id(id) => format!("{head}.{id}"),
        EventKey::Content { ms, crc } => format!("{head}.{ms}-{crc:08x}"),
    }
}

/// The stream as obrec creates it when missing: limits retention (a line is kept for
/// [`MAX_AGE`], whoever has read it), on disk, replicated on as many of the given servers as
/// JetStream allows, up to [`MAX_REPLICAS`].
fn stream_config(servers: usize) -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{SUBJECT_ROOT}.>")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: servers.clamp(1, MAX_REPLICAS),
        ..stream::Config::default()
    }
}

/// Finds the stream, creating it when missing; an existing stream is used as it is.
async fn ensure_stream(js: &jetstream::Context, servers: usize) -> Result<stream::Stream> {
    js.get_or_create_stream(stream_config(servers))
        .await
        .map_err(|e| Error::Nats(format!("cannot find or create stream {STREAM}: {e}")))
}

/// A one-thread runtime for a relay thread.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Nats(format!("cannot start the client runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_their_series_and_ids_their_event() {
        let series = Series {
            symbol: Symbol::new("BTCUSDT").unwrap(),
            kind: FileKind::Stream(crate::market::kind::Kind::AggTrade),
        };
        assert_eq!(
            subject(Market::UsdM, &series),
            "obrec.usdm.aggTrade.BTCUSDT"
        );
        assert_eq!(
            series_of(Market::UsdM, &subject(Market::UsdM, &series)),
            Some(series.clone())
        );
        assert_eq!(
            series_of(Market::Spot, &subject(Market::UsdM, &series)),
            None
        );
        assert_eq!(series_of(Market::UsdM, "obrec.usdm.nothing.BTCUSDT"), None);
        assert_eq!(series_of(Market::UsdM, "obrec.usdm.depth.../x"), None);
        assert_eq!(
            msg_id(Market::UsdM, &series, EventKey::Id(42)),
            "usdm.BTCUSDT.aggTrade.42"
        );
        assert_eq!(
            msg_id(
                Market::UsdM,
                &series,
                EventKey::Content { ms: 7, crc: 0xab }
            ),
            "usdm.BTCUSDT.aggTrade.7-000000ab"
        );
    }
}
