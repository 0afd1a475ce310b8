//! Stream names: built for subscriptions, parsed wherever a name comes back (the simulator's
//! requests, recorded lines, imported files).
//!
//! Binance's depth streams are `<symbol>@depth<levels>[@<speed>]` for the partial book and
//! `<symbol>@depth[@<speed>]` for the diff stream, with the symbol in lower case.

use std::fmt;
use std::str::FromStr;

use crate::market::symbol::Symbol;

/// Which depth stream: the diff stream, or the top N levels a side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// `<sym>@depth[@speed]`: the levels each event changed; a book needs REST snapshots.
    Diff,
    /// `<sym>@depth<N>[@speed]`: the top N levels a side after each event (5, 10 or 20).
    Partial(usize),
}

impl Depth {
    /// The depths Binance serves: 0 for the diff stream, else 5, 10 or 20 levels.
    pub fn from_levels(levels: usize) -> Option<Depth> {
        match levels {
            0 => Some(Depth::Diff),
            5 | 10 | 20 => Some(Depth::Partial(levels)),
            _ => None,
        }
    }
}

/// Update speed of a depth stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speed {
    /// Unthrottled: every update as it happens, diff stream only (`<sym>@depth@0ms`, what
    /// hftbacktest's collector records). Binance does not list it, and serves it.
    Ms0,
    Ms100,
    /// Binance's default: no suffix on the stream name.
    Ms250,
    Ms500,
}

impl Speed {
    /// Whether Binance serves this speed for `depth`: the partial streams come at 100, 250 or
    /// 500 ms only.
    pub fn serves(self, depth: Depth) -> bool {
        self != Speed::Ms0 || depth == Depth::Diff
    }

    fn suffix(self) -> &'static str {
        match self {
            Speed::Ms0 => "@0ms",
            Speed::Ms100 => "@100ms",
            Speed::Ms250 => "",
            Speed::Ms500 => "@500ms",
        }
    }
}

impl FromStr for Speed {
    type Err = String;

    fn from_str(s: &str) -> Result<Speed, String> {
        match s.trim() {
            "0ms" => Ok(Speed::Ms0),
            "100ms" => Ok(Speed::Ms100),
            "250ms" => Ok(Speed::Ms250),
            "500ms" => Ok(Speed::Ms500),
            _ => Err(format!(
                "{s:?} is not a speed: use 0ms, 100ms, 250ms or 500ms"
            )),
        }
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Speed::Ms0 => "0ms",
            Speed::Ms100 => "100ms",
            Speed::Ms250 => "250ms",
            Speed::Ms500 => "500ms",
        })
    }
}

/// The combined-stream name for a symbol's depth, e.g. `ethusdt@depth5@100ms`.
pub fn depth_stream(symbol: &Symbol, depth: Depth, speed: Speed) -> String {
    let levels = match depth {
        Depth::Diff => String::new(),
        Depth::Partial(n) => n.to_string(),
    };
    format!("{}@depth{levels}{}", symbol.lower(), speed.suffix())
}

/// Splits a depth stream name into its lowercase symbol and depth; `None` for any other stream.
/// Every speed a diff stream may have is accepted, `@0ms` (unthrottled) included.
pub fn parse_depth_stream(name: &str) -> Option<(&str, Depth)> {
    let (symbol, rest) = name.split_once('@')?;
    if symbol.is_empty() || symbol.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let depth = match rest {
        "depth" | "depth@100ms" | "depth@500ms" | "depth@0ms" => Depth::Diff,
        _ => {
            let (levels, speed) = rest.split_once('@').unwrap_or((rest, ""));
            if !matches!(speed, "" | "100ms" | "500ms") {
                return None;
            }
            match levels {
                "depth5" => Depth::Partial(5),
                "depth10" => Depth::Partial(10),
                "depth20" => Depth::Partial(20),
                _ => return None,
            }
        }
    };
    Some((symbol, depth))
}

/// The depth of a recorded stream name, read leniently: any level count and any speed suffix
/// (real captures use the undocumented `@depth@0ms`); `None` for a stream that is not depth.
pub fn recorded_depth(name: &str) -> Option<Depth> {
    let (_, rest) = name.split_once('@')?;
    let rest = rest.strip_prefix("depth")?;
    let levels = rest.split('@').next().unwrap_or_default();
    match rest.bytes().next() {
        None | Some(b'@') => Some(Depth::Diff),
        Some(b) if b.is_ascii_digit() => levels.parse().ok().map(Depth::Partial),
        Some(_) => None,
    }
}

/// Whether a recorded stream is partial depth, whose events are each the whole book.
pub fn is_partial(name: &str) -> bool {
    matches!(recorded_depth(name), Some(Depth::Partial(_)))
}

/// Longest stream name accepted in a request; real names are under 40 bytes.
const MAX_STREAM_NAME: usize = 100;

/// Whether `name` looks like a Binance stream name. Well-formed names are accepted even when
/// nothing will ever be sent on them, as Binance does; only malformed ones are request errors.
/// Such a name is also safe to write between quotes in a line as it is.
pub fn is_well_formed(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STREAM_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@_!-.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_binance() {
        let sym = |s: &str| Symbol::new(s).unwrap();
        assert_eq!(
            depth_stream(&sym("ETHUSDT"), Depth::Partial(5), Speed::Ms100),
            "ethusdt@depth5@100ms"
        );
        assert_eq!(
            depth_stream(&sym("BTCUSDT"), Depth::Partial(20), Speed::Ms250),
            "btcusdt@depth20"
        );
        assert_eq!(
            depth_stream(&sym("BTCUSDT"), Depth::Diff, Speed::Ms500),
            "btcusdt@depth@500ms"
        );
        assert_eq!(
            depth_stream(&sym("BTCUSDT"), Depth::Diff, Speed::Ms0),
            "btcusdt@depth@0ms"
        );
        assert!(Speed::Ms0.serves(Depth::Diff) && !Speed::Ms0.serves(Depth::Partial(5)));
        assert_eq!("0ms".parse::<Speed>(), Ok(Speed::Ms0));
    }

    #[test]
    fn built_names_parse_back() {
        let symbol = Symbol::new("ETHUSDT").unwrap();
        for depth in [
            Depth::Diff,
            Depth::Partial(5),
            Depth::Partial(10),
            Depth::Partial(20),
        ] {
            for speed in [Speed::Ms0, Speed::Ms100, Speed::Ms250, Speed::Ms500] {
                if !speed.serves(depth) {
                    continue;
                }
                let name = depth_stream(&symbol, depth, speed);
                assert_eq!(
                    parse_depth_stream(&name),
                    Some(("ethusdt", depth)),
                    "{name}"
                );
                assert!(is_well_formed(&name));
                assert_eq!(is_partial(&name), depth != Depth::Diff);
            }
        }
    }

    #[test]
    fn depth_stream_names_parse_to_depths() {
        let cases = [
            ("ethusdt@depth", Some(("ethusdt", Depth::Diff))),
            ("ethusdt@depth@100ms", Some(("ethusdt", Depth::Diff))),
            ("ethusdt@depth@500ms", Some(("ethusdt", Depth::Diff))),
            ("btcusdt@depth@0ms", Some(("btcusdt", Depth::Diff))),
            ("ethusdt@depth5", Some(("ethusdt", Depth::Partial(5)))),
            (
                "ethusdt@depth10@100ms",
                Some(("ethusdt", Depth::Partial(10))),
            ),
            (
                "ethusdt@depth20@500ms",
                Some(("ethusdt", Depth::Partial(20))),
            ),
            ("ethusdt@depth@250ms", None),
            ("ethusdt@depth7", None),
            ("ethusdt@depth5@0ms", None),
            ("ethusdt@aggTrade", None),
            ("ETHUSDT@depth", None),
            ("@depth", None),
            ("ethusdt", None),
        ];
        for (name, want) in cases {
            assert_eq!(parse_depth_stream(name), want, "{name}");
        }
    }

    #[test]
    fn recorded_names_are_read_whatever_their_speed() {
        for (name, want) in [
            ("btcusdt@depth@0ms", Some(Depth::Diff)),
            ("btcusdt@depth@1000ms", Some(Depth::Diff)),
            ("btcusdt@depth", Some(Depth::Diff)),
            ("btcusdt@depth5@0ms", Some(Depth::Partial(5))),
            ("btcusdt@depth7", Some(Depth::Partial(7))),
            ("btcusdt@depthx", None),
            ("btcusdt@bookTicker", None),
            ("btcusdt", None),
        ] {
            assert_eq!(recorded_depth(name), want, "{name}");
        }
    }

    #[test]
    fn well_formed_names_include_unknown_streams_but_not_junk() {
        for ok in [
            "ethusdt@aggTrade",
            "!bookTicker",
            "btcusdt@kline_1m",
            "x@depth@100ms",
        ] {
            assert!(is_well_formed(ok), "{ok}");
        }
        let long = "a".repeat(MAX_STREAM_NAME + 1);
        for bad in [
            "",
            "eth usdt@depth",
            "ethusdt/depth",
            "ethusdt@dépth",
            "x\"y",
            long.as_str(),
        ] {
            assert!(!is_well_formed(bad), "{bad}");
        }
    }
}
