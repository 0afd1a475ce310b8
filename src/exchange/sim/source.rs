//! The seam between the exchange front (listener, HTTP, WebSocket connections, control messages,
//! pings, faults) and what it serves.
//!
//! Three sources exist. [`Hub`](super::hub::Hub) is the simulated market: one event sequence per
//! symbol, paced by the sim and shared by every connection (`obrec sim`). `Playback` plays a
//! recording to each connection on its own, from the beginning and at the recording's pace
//! (`obrec serve`). `Fanout` queues what a running recorder accepted to every subscriber, live
//! (`obrec record --tap`). The front is the same code for both: the paths, SUBSCRIBE handling, REST
//! endpoints and shutdown cannot drift apart.

use std::sync::Arc;

use super::conn::Link;
use super::http::Reply;
use super::server::Shared;
use crate::market::venue::Market;

/// What the front asks of whatever produces data frames and REST answers.
///
/// Frames reach a connection through its [`Link`]: `Outbound::Data` in order, then, when the
/// source has nothing more for it, `Outbound::End`.
pub(crate) trait Source: Send + Sync {
    /// The market whose paths, routes and REST endpoints the front speaks.
    fn market(&self) -> Market {
        Market::UsdM
    }

    /// Threads the source runs for the server's whole life (the sim's pumps).
    fn workers(&self) -> usize {
        0
    }

    /// Worker `index`'s loop; returns once `shared.stop` disconnects.
    fn work(&self, _index: usize, _shared: &Shared) {}

    /// Feeds `streams` (well-formed names, not necessarily ones the source produces, none
    /// already subscribed, each one the connection's route delivers and no fault mutes) to the
    /// connection from now on, all from the same event. Called after
    /// the SUBSCRIBE is acknowledged, and with the streams of the URL when a connection opens.
    fn subscribe(&self, shared: &Arc<Shared>, link: &Arc<Link>, streams: &[String]);

    /// Stops feeding `stream` to connection `conn`: no frame of it is queued after this returns.
    fn unsubscribe(&self, conn: u64, stream: &str);

    /// Forgets every subscription of connection `conn`, which has ended.
    fn leave(&self, conn: u64);

    /// Appends the REST depth snapshot body of `symbol` (upper case, at most `limit` levels a
    /// side where the source can cut it); `Err` holds the error to answer instead (-1121 for a
    /// symbol the source does not know).
    fn depth(&self, symbol: &str, limit: usize, out: &mut Vec<u8>) -> Result<(), Reply>;

    /// Answers a GET of a path the front does not serve itself (`query` undecoded); `None`: 404.
    fn rest(&self, _path: &str, _query: &str) -> Option<Reply> {
        None
    }

    /// Appends the REST `/fapi/v1/aggTrades` body of `symbol` (upper case): up to `limit`
    /// aggregate trades from id `from_id` on. Only the sim keeps such a history: a recording is
    /// played in order and a live tap passes frames on, neither looks trades up by id.
    fn agg_trades(&self, _: &str, _: u64, _: usize, _: &mut Vec<u8>) -> Result<(), Refusal> {
        Err(Refusal::Unavailable)
    }

    /// `serverTime` of `/fapi/v1/time`, ms since the Unix epoch.
    fn time_ms(&self) -> u64;

    /// Connections cut for being too slow, for [`SimStats`](super::SimStats).
    fn slow_clients(&self) -> u64 {
        0
    }
}

/// Why a source does not answer a REST request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a symbol it serves: Binance's -1121.
    InvalidSymbol,
    /// It keeps no such data (a recording or a tap has no aggregate trade history by id).
    Unavailable,
}
