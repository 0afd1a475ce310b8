//! Flag values: parsed and checked while the command line is read, so bad input is a usage error
//! (exit 2) before anything is created on disk.

use std::time::Duration;

use clap::Args;

use crate::market::stream::{Depth, is_well_formed};
use crate::market::symbol::Symbol;
use crate::market::venue::Market;

/// `--market`, the same flag on `record`, `sim` and `serve`.
#[derive(Args, Clone, Copy, Debug)]
pub struct MarketFlag {
    /// Binance market: usdm (USD-M futures, perpetual and quarterly: /fapi, routes /public and
    /// /market), coinm (COIN-M futures, sizes in contracts: /dapi, one route) or spot (/api/v3,
    /// one route, dense ids, no markPrice or forceOrder)
    #[arg(
        long,
        env = "OBREC_MARKET",
        value_name = "MARKET",
        default_value = "usdm"
    )]
    pub market: Market,
}

/// Upper-cases and checks a symbol.
pub fn symbol(s: &str) -> Result<Symbol, String> {
    Symbol::new(s).map_err(|e| e.to_string())
}

/// A symbol as the simulator's configuration spells it.
pub fn symbol_text(s: &str) -> Result<String, String> {
    symbol(s).map(|s| s.to_string())
}

/// A stream name as Binance spells it (`ethusdt@trade`), checked for its characters only.
pub fn stream_name(s: &str) -> Result<String, String> {
    if is_well_formed(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("invalid stream name {s:?}"))
    }
}

/// `--quote`: an asset as Binance spells it (`USDT`, `USDC`, `BTC`), upper-cased.
pub fn asset(s: &str) -> Result<String, String> {
    /// Binance's asset names are 2 to 10 characters; a little more leaves room.
    const ASSET_LEN: std::ops::RangeInclusive<usize> = 2..=16;
    let upper = s.trim().to_ascii_uppercase();
    if ASSET_LEN.contains(&upper.len()) && upper.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(upper)
    } else {
        Err(format!(
            "{s:?} is not an asset (2 to 16 ASCII letters and digits, like USDT)"
        ))
    }
}

/// `--symbol-pattern`: a glob over symbol names (`BTC*`, `*USDT`, `???USDT`), upper-cased.
pub fn symbol_pattern(s: &str) -> Result<glob::Pattern, String> {
    glob::Pattern::new(&s.trim().to_ascii_uppercase())
        .map_err(|e| format!("{s:?} is not a pattern: {e}"))
}

/// `SYM:SEC`: a symbol and seconds after the start (`--list-after`, `--delist-after`).
pub fn symbol_after(s: &str) -> Result<(String, Duration), String> {
    let (symbol, secs) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not SYMBOL:SECONDS (e.g. SOLUSDT:5)"))?;
    Ok((symbol_text(symbol)?, span(secs, 1.0, true)?))
}

/// 5, 10 or 20 levels of the partial stream, or 0 for the diff stream.
pub fn depth(s: &str) -> Result<Depth, String> {
    s.trim()
        .parse::<usize>()
        .ok()
        .and_then(Depth::from_levels)
        .ok_or_else(|| {
            format!("{s:?} is not a depth: use 5, 10, 20 (partial) or 0 (diff + snapshots)")
        })
}

/// `--streams`: depth and the kinds beside it.
pub fn streams(s: &str) -> Result<crate::market::kind::Selection, String> {
    s.parse()
}

fn number(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{s:?} is not a number"))
}

/// The longest duration any flag takes: about 31 years, far below `Duration`'s limits, so no
/// conversion can overflow, and far above any run a user means.
const MAX_SECONDS: f64 = 1e9;

/// A number of `unit`-long steps as a duration: finite, at most [`MAX_SECONDS`], above zero
/// unless `zero_ok`.
fn span(s: &str, unit: f64, zero_ok: bool) -> Result<Duration, String> {
    let v = number(s)?;
    let secs = v * unit;
    if v < 0.0 || (v == 0.0 && !zero_ok) {
        let bound = if zero_ok {
            "negative"
        } else {
            "not above zero"
        };
        return Err(format!("{s} is {bound}"));
    }
    if secs > MAX_SECONDS {
        return Err(format!("{s} is too long: at most {MAX_SECONDS:e} seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Minutes, decimals allowed, zero included (`--run-minutes 0` stops at once).
pub fn minutes_or_zero(s: &str) -> Result<Duration, String> {
    span(s, 60.0, true)
}

/// Minutes above zero, decimals allowed.
pub fn minutes(s: &str) -> Result<Duration, String> {
    span(s, 60.0, false)
}

/// Seconds above zero, decimals allowed.
pub fn seconds(s: &str) -> Result<Duration, String> {
    span(s, 1.0, false)
}

/// `23h30m`, `90s`, `1h` (humantime), or plain seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    if number(s).is_ok() {
        return seconds(s);
    }
    let d =
        humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration: {e}"))?;
    if d.is_zero() || d.as_secs_f64() > MAX_SECONDS {
        return Err(format!(
            "{s} is out of range: above zero, at most {MAX_SECONDS:e} seconds"
        ));
    }
    Ok(d)
}

pub fn socket_addr(s: &str) -> Result<String, String> {
    s.trim()
        .parse::<std::net::SocketAddr>()
        .map(|a| a.to_string())
        .map_err(|_| format!("{s:?} is not an address like 127.0.0.1:9464"))
}

/// A WebSocket endpoint: `ws://` or `wss://`, a host, an optional port, an optional path.
pub fn ws_url(s: &str) -> Result<String, String> {
    url(s, &["ws", "wss"]).map(|u| u.trim_end_matches('/').to_string())
}

/// A REST endpoint: `http://` or `https://`, a host, an optional port, an optional path.
pub fn http_url(s: &str) -> Result<String, String> {
    url(s, &["http", "https"]).map(|u| u.trim_end_matches('/').to_string())
}

/// A NATS server: `nats://` or `tls://`, a host, an optional port.
pub fn nats_url(s: &str) -> Result<String, String> {
    url(s, &["nats", "tls"]).map(str::to_string)
}

/// Checks a URL the way the connection will use it, so that a typo is a usage error now rather
/// than a connection failure retried forever.
fn url<'a>(s: &'a str, schemes: &[&str]) -> Result<&'a str, String> {
    let s = s.trim();
    let wanted = || schemes.join(":// or ") + "://";
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!("{s:?} is not a url: expected {}", wanted()));
    };
    if !schemes.contains(&scheme) {
        return Err(format!("{s:?} is not a {} url", wanted()));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let uri = s
        .parse::<tungstenite::http::Uri>()
        .map_err(|e| format!("{s:?} is not a url: {e}"))?;
    let host = uri.host().unwrap_or_default();
    if host.is_empty() || authority.contains('@') {
        return Err(format!("{s:?} has no host"));
    }
    if uri.query().is_some() || rest.contains('#') {
        return Err(format!(
            "{s:?} has a query or fragment: give the endpoint only"
        ));
    }
    // `Uri` accepts any digits after the colon; a port must fit in 16 bits and not be 0.
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(format!("{s:?} has an invalid port {port:?}"));
    }
    Ok(s)
}

/// A log filter: a level (`off`, `error`, `warn`, `info`, `debug`, `trace`), or comma-separated
/// `module=level` parts. A bare word that is not a level is refused: the logging library would
/// take it for a module name and silently log nothing of obrec.
pub fn log_level(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    let parts: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Err("the log level is empty: use error, warn, info, debug or trace".into());
    }
    for part in parts {
        let ok = match part.split_once('=') {
            Some((module, level)) => {
                !module.trim().is_empty()
                    && !module.contains(char::is_whitespace)
                    && is_level(level)
            }
            None => is_level(part),
        };
        if !ok {
            return Err(format!(
                "{part:?} is not a log level: use error, warn, info, debug, trace or module=level"
            ));
        }
    }
    Ok(s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depths_are_the_ones_binance_serves() {
        assert_eq!(depth("0"), Ok(Depth::Diff));
        assert_eq!(depth("20"), Ok(Depth::Partial(20)));
        for bad in ["7", "-5", "x", ""] {
            assert!(depth(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_take_seconds_or_humantime() {
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(
            duration("23h30m"),
            Ok(Duration::from_secs(23 * 3600 + 1800))
        );
        for bad in ["0", "soon", "-1", "1e300", "99999999999h", "NaN", "inf"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(minutes("0.1"), Ok(Duration::from_secs(6)));
        assert_eq!(minutes_or_zero("0"), Ok(Duration::ZERO));
        for bad in ["1e10", "0", "-1", "1e300", "inf", ""] {
            assert!(seconds(bad).is_err(), "{bad}");
            assert!(minutes(bad).is_err(), "{bad}");
        }
        assert!(minutes_or_zero("1e300").is_err());
    }

    #[test]
    fn urls_are_checked_before_use() {
        assert_eq!(
            ws_url("wss://fstream.binance.com/public/"),
            Ok("wss://fstream.binance.com/public".into())
        );
        assert!(ws_url("ws://127.0.0.1:9000").is_ok());
        assert!(ws_url("ws://[::1]:9000/x").is_ok());
        assert!(http_url("https://fapi.binance.com").is_ok());
        for bad in [
            "http://x",
            "wss://",
            "wss:///path",
            "wss://host:99999",
            "wss://host:0",
            "wss://host:port",
            "wss://exa mple.com",
            "wss://host/stream?streams=x",
            "wss://user@host",
            "fstream.binance.com",
        ] {
            assert!(ws_url(bad).is_err(), "{bad}");
        }
        assert!(http_url("wss://x").is_err());
    }

    #[test]
    fn log_levels_are_levels() {
        for good in ["info", "DEBUG", "warn,obrec::recorder=debug", "off"] {
            assert!(log_level(good).is_ok(), "{good}");
        }
        for bad in ["", "infoo", "verbose", "info,x=loud", "=debug"] {
            assert!(log_level(bad).is_err(), "{bad}");
        }
    }
}
