//! The Binance markets obrec records, as one table: where each one's streams and REST endpoints
//! are, what its requests weigh, how fast a client may talk to it, which stream kinds it
//! publishes, and how its depth ids chain. Everything that differs between markets reads it
//! from here.
//!
//! | | USD-M futures | COIN-M futures | spot |
//! |---|---|---|---|
//! | streams | `fstream`, routed `/public`, `/market` | `dstream`, one route | `stream:9443`, one route |
//! | depth REST | `/fapi/v1/depth`, ≤ 1000 | `/dapi/v1/depth`, ≤ 1000 | `/api/v3/depth`, ≤ 5000 |
//! | continuity | `pu == last u` | `pu == last u` | `U == last u + 1`; partial: `lastUpdateId` rises |
//! | snapshot bridge | `U <= L <= u` | `U <= L <= u` | `U <= L + 1 <= u` |
//! | client messages | 10 a second | 10 a second | 5 a second, pings and pongs included |
//! | server ping | every 3 min, pong within 10 min | same | every 20 s, pong within 1 min |
//!
//! COIN-M quantities are contracts (a BTCUSD contract is 100 USD, the others 10 USD), not base
//! asset: a COIN-M book's sizes are numbers of contracts, as the exchange sends them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::market::kind::Kind;
use crate::market::sequence::Continuity;
use crate::market::stream::Depth;

/// A Binance market.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Market {
    /// USD-M futures (`fapi`/`fstream`): perpetuals (`BTCUSDT`) and quarterlies
    /// (`BTCUSDT_260925`), settled in USDT or USDC.
    #[default]
    UsdM,
    /// COIN-M futures (`dapi`/`dstream`): `BTCUSD_PERP`, `BTCUSD_260925`, settled in the coin;
    /// sizes are contracts.
    CoinM,
    /// Spot (`api`/`stream`): `BTCUSDT`; dense depth ids.
    Spot,
}

/// Request weight of one depth snapshot by its level limit: `(largest limit, weight)` rows, the
/// first row whose limit is at least the one asked for applies.
type WeightTable = &'static [(u32, u32)];

/// Futures depth weights, both futures markets alike (Binance's "Order Book" endpoint pages).
const FUTURES_DEPTH_WEIGHTS: WeightTable = &[(50, 2), (100, 5), (500, 10), (1000, 20)];
/// The limits futures depth snapshots accept; any other is refused (-4021).
const FUTURES_DEPTH_LIMITS: [usize; 7] = [5, 10, 20, 50, 100, 500, 1000];
/// Spot depth weights (`/api/v3/depth`, rest-api.md).
const SPOT_DEPTH_WEIGHTS: WeightTable = &[(100, 5), (500, 25), (1000, 50), (5000, 250)];

/// Binance's ping cadence on futures streams: every 3 minutes, and a connection that does not
/// answer within 10 minutes is closed.
const FUTURES_PING: Duration = Duration::from_secs(180);
const FUTURES_PONG_DEADLINE: Duration = Duration::from_secs(600);
/// Spot pings every 20 seconds and wants the pong within a minute.
const SPOT_PING: Duration = Duration::from_secs(20);
const SPOT_PONG_DEADLINE: Duration = Duration::from_secs(60);

impl Market {
    pub const ALL: [Market; 3] = [Market::UsdM, Market::CoinM, Market::Spot];

    /// The name in `--market`.
    pub fn name(self) -> &'static str {
        match self {
            Market::UsdM => "usdm",
            Market::CoinM => "coinm",
            Market::Spot => "spot",
        }
    }

    /// The production stream server.
    pub fn ws_endpoint(self) -> &'static str {
        match self {
            Market::UsdM => "wss://fstream.binance.com",
            Market::CoinM => "wss://dstream.binance.com",
            Market::Spot => "wss://stream.binance.com:9443",
        }
    }

    /// The production REST server.
    pub fn rest_endpoint(self) -> &'static str {
        match self {
            Market::UsdM => "https://fapi.binance.com",
            Market::CoinM => "https://dapi.binance.com",
            Market::Spot => "https://api.binance.com",
        }
    }

    /// Whether streams are served on routes (`/public`, `/market`) rather than one path: only
    /// USD-M since 2026-04-23.
    pub fn routed(self) -> bool {
        self == Market::UsdM
    }

    /// The REST prefix of this market's endpoints (`/fapi/v1`).
    fn rest_prefix(self) -> &'static str {
        match self {
            Market::UsdM => "/fapi/v1",
            Market::CoinM => "/dapi/v1",
            Market::Spot => "/api/v3",
        }
    }

    /// The depth snapshot path, `/fapi/v1/depth`.
    pub fn depth_path(self) -> String {
        format!("{}/depth", self.rest_prefix())
    }

    /// The listing's path, `/fapi/v1/exchangeInfo`: which symbols trade (`--symbol all`).
    pub fn exchange_info_path(self) -> String {
        format!("{}/exchangeInfo", self.rest_prefix())
    }

    /// The aggregate trades path, `/fapi/v1/aggTrades`.
    pub fn agg_trades_path(self) -> String {
        format!("{}/aggTrades", self.rest_prefix())
    }

    /// The REST endpoint a request target (path, and query if any) belongs to, and which one
    /// (`depth`, `aggTrades`, `time`), across every market's prefix: `None` for any other path.
    pub fn of_rest_path(target: &str) -> Option<(Market, &str)> {
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        Market::ALL.into_iter().find_map(|m| {
            let endpoint = path.strip_prefix(m.rest_prefix())?.strip_prefix('/')?;
            ["depth", "aggTrades", "time"]
                .contains(&endpoint)
                .then_some((m, endpoint))
        })
    }

    /// The most levels a depth snapshot serves; what the recorder asks for, since a book is only
    /// as deep as its snapshot.
    pub fn max_depth_limit(self) -> u32 {
        self.depth_weights().last().map_or(0, |&(limit, _)| limit)
    }

    /// Whether a depth snapshot of `limit` levels is served: futures take only the limits of
    /// their weight table's steps (5, 10, 20 below 50), spot any limit up to 5000.
    pub fn serves_depth_limit(self, limit: usize) -> bool {
        match self {
            Market::UsdM | Market::CoinM => FUTURES_DEPTH_LIMITS.contains(&limit),
            Market::Spot => (1..=self.max_depth_limit() as usize).contains(&limit),
        }
    }

    fn depth_weights(self) -> WeightTable {
        match self {
            Market::UsdM | Market::CoinM => FUTURES_DEPTH_WEIGHTS,
            Market::Spot => SPOT_DEPTH_WEIGHTS,
        }
    }

    /// The weight of a depth snapshot of `limit` levels (the largest weight above the table).
    pub fn depth_weight(self, limit: u32) -> u32 {
        let table = self.depth_weights();
        table
            .iter()
            .find(|&&(max, _)| limit <= max)
            .or(table.last())
            .map_or(0, |&(_, weight)| weight)
    }

    /// The weight of one aggregate trades page: 20 on futures whatever the limit, 4 on spot.
    pub fn agg_trades_weight(self) -> u32 {
        match self {
            Market::UsdM | Market::CoinM => 20,
            Market::Spot => 4,
        }
    }

    /// The exchange's request weight limit per minute and IP.
    pub fn exchange_weight_limit(self) -> u32 {
        match self {
            Market::UsdM | Market::CoinM => 2400,
            Market::Spot => 6000,
        }
    }

    /// The weight this process allows itself per minute: half the exchange's limit, leaving room
    /// for other clients (or another recorder) on the same address.
    pub fn weight_budget(self) -> u32 {
        self.exchange_weight_limit() / 2
    }

    /// How often the server pings, and how long it waits for the pong.
    pub fn ping(self) -> (Duration, Duration) {
        match self {
            Market::UsdM | Market::CoinM => (FUTURES_PING, FUTURES_PONG_DEADLINE),
            Market::Spot => (SPOT_PING, SPOT_PONG_DEADLINE),
        }
    }

    /// Messages a client may send a second before the server closes the connection; on spot
    /// pings and pongs count too.
    pub const fn inbound_messages_per_sec(self) -> usize {
        match self {
            Market::UsdM | Market::CoinM => 10,
            Market::Spot => 5,
        }
    }

    /// Whether this market publishes `kind`: spot has no mark price and no liquidations.
    pub fn publishes(self, kind: Kind) -> bool {
        self != Market::Spot || !matches!(kind, Kind::MarkPrice | Kind::ForceOrder)
    }

    /// How the events of `depth` chain and bridge a snapshot: futures partial depth is a
    /// `depthUpdate` like the diff stream's, spot's carries only a rising `lastUpdateId`.
    pub fn continuity(self, depth: Depth) -> Continuity {
        match (self, depth) {
            (Market::UsdM | Market::CoinM, _) => Continuity::PrevId,
            (Market::Spot, Depth::Diff) => Continuity::Dense,
            (Market::Spot, Depth::Partial(_)) => Continuity::Increasing,
        }
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Market {
    type Err = String;

    fn from_str(s: &str) -> Result<Market, String> {
        Market::ALL
            .into_iter()
            .find(|m| m.name() == s.trim())
            .ok_or_else(|| format!("{s:?} is not a market: use usdm, coinm or spot"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_binance_tables() {
        let cases = [
            (Market::UsdM, 5, 2),
            (Market::UsdM, 100, 5),
            (Market::UsdM, 500, 10),
            (Market::UsdM, 1000, 20),
            (Market::CoinM, 1000, 20),
            (Market::CoinM, 51, 5),
            (Market::Spot, 100, 5),
            (Market::Spot, 101, 25),
            (Market::Spot, 1000, 50),
            (Market::Spot, 5000, 250),
            (Market::Spot, 9999, 250),
        ];
        for (market, limit, weight) in cases {
            assert_eq!(market.depth_weight(limit), weight, "{market} {limit}");
        }
        assert_eq!(Market::ALL.map(Market::max_depth_limit), [1000, 1000, 5000]);
        assert_eq!(Market::ALL.map(Market::weight_budget), [1200, 1200, 3000]);
    }

    #[test]
    fn paths_names_and_rules() {
        assert_eq!(Market::UsdM.depth_path(), "/fapi/v1/depth");
        assert_eq!(Market::CoinM.agg_trades_path(), "/dapi/v1/aggTrades");
        assert_eq!(Market::Spot.depth_path(), "/api/v3/depth");
        assert_eq!(
            Market::of_rest_path("/api/v3/depth"),
            Some((Market::Spot, "depth"))
        );
        assert_eq!(
            Market::of_rest_path("/dapi/v1/time"),
            Some((Market::CoinM, "time"))
        );
        assert_eq!(Market::of_rest_path("/fapi/v1/depthx"), None);
        assert_eq!(
            Market::of_rest_path("/fapi/v1/depth?symbol=X&limit=5"),
            Some((Market::UsdM, "depth"))
        );
        assert!(Market::Spot.serves_depth_limit(5000) && Market::Spot.serves_depth_limit(7));
        assert!(!Market::Spot.serves_depth_limit(5001) && !Market::Spot.serves_depth_limit(0));
        assert!(Market::CoinM.serves_depth_limit(1000) && !Market::CoinM.serves_depth_limit(7));
        assert_eq!(Market::of_rest_path("/api/v3"), None);
        for market in Market::ALL {
            assert_eq!(market.name().parse(), Ok(market));
        }
        assert!("coin-m".parse::<Market>().is_err());
        assert_eq!(Market::default(), Market::UsdM);
        assert!(Market::UsdM.routed() && !Market::CoinM.routed() && !Market::Spot.routed());
        assert!(Kind::ALL.iter().all(|&k| Market::CoinM.publishes(k)));
        assert!(!Market::Spot.publishes(Kind::MarkPrice) && Market::Spot.publishes(Kind::AggTrade));
        assert_eq!(Market::Spot.inbound_messages_per_sec(), 5);
        assert_eq!(Market::Spot.continuity(Depth::Diff), Continuity::Dense);
        assert_eq!(
            Market::Spot.continuity(Depth::Partial(5)),
            Continuity::Increasing
        );
        assert_eq!(
            Market::CoinM.continuity(Depth::Partial(20)),
            Continuity::PrevId
        );
    }
}
