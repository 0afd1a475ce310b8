//! Flag values: parsed and checked while the command line is read, so bad input is a usage error
//! (exit 2) before anything is created on disk.

use std::time::Duration;

use crate::market::stream::Depth;
use crate::market::symbol::Symbol;

/// Upper-cases and checks a symbol.
pub fn symbol(s: &str) -> Result<Symbol, String> {
    Symbol::new(s).map_err(|e| e.to_string())
}

/// A symbol as the simulator's configuration spells it.
pub fn symbol_text(s: &str) -> Result<String, String> {
    symbol(s).map(|s| s.to_string())
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

fn number(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{s:?} is not a number"))
}

pub fn non_negative(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| {
        if v >= 0.0 {
            Ok(v)
        } else {
            Err(format!("{s} is negative"))
        }
    })
}

pub fn positive(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| {
        if v > 0.0 {
            Ok(v)
        } else {
            Err(format!("{s} must be above zero"))
        }
    })
}

/// A positive number of seconds, decimals allowed, below a billion (about 31 years), which keeps
/// it far from `Duration`'s limits.
pub fn seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(format!(
            "invalid duration `{s}`: expected a positive number of seconds"
        )),
    }
}

/// `23h30m`, `90s`, `1h` (humantime), or plain seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = match positive(s) {
        Ok(secs) => Duration::from_secs_f64(secs),
        Err(_) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?} is not a duration: {e}"))?,
    };
    if d.is_zero() {
        return Err(format!("{s} must be above zero"));
    }
    Ok(d)
}

pub fn socket_addr(s: &str) -> Result<String, String> {
    s.trim()
        .parse::<std::net::SocketAddr>()
        .map(|a| a.to_string())
        .map_err(|_| format!("{s:?} is not an address like 127.0.0.1:9464"))
}

pub fn ws_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if (s.starts_with("wss://") || s.starts_with("ws://")) && s.len() > "wss://".len() {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a ws:// or wss:// url"))
    }
}

pub fn http_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if (s.starts_with("https://") || s.starts_with("http://")) && s.len() > "https://".len() {
        Ok(s.trim_end_matches('/').to_string())
    } else {
        Err(format!("{s:?} is not an http:// or https:// url"))
    }
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
        for bad in ["0", "soon", "-1"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(seconds("1e10").is_err());
    }
}
