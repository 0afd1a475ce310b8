//! One symbol's simulated events, and depth stream names.
//!
//! The sim's hub only needs, per symbol: the next event's ids, that event's payload as each depth
//! stream shows it, and a REST snapshot consistent with the latest event. The random-walk market
//! provides that. (A recording's playback is not a `Feed`: each of its connections plays from
//! the beginning at its own pace, so it is a `Source` of its own.)

/// The ids and times of one event, shared by every stream of its symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// `U`: first update id in the event.
    pub first: u64,
    /// `u`: final update id in the event.
    pub last: u64,
    /// `pu`: the previous event's `u`.
    pub prev: u64,
    /// `E`: event time, wall-clock ms.
    pub event_ms: u64,
    /// `T`: transaction time, ms, a little before `E`.
    pub trade_ms: u64,
}

/// How a depth stream shows an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// `<sym>@depth[@speed]`: the levels the event changed, absolute quantities.
    Diff,
    /// `<sym>@depth<N>[@speed]`: the top N levels a side after the event.
    Partial(usize),
}

/// One symbol's source of depth events.
pub trait Feed: Send {
    /// The symbol in upper case, as payloads spell it.
    fn symbol(&self) -> &str;

    /// Moves to the next event and returns its header; `now_ms` is the wall clock.
    fn advance(&mut self, now_ms: u64) -> Header;

    /// Appends the latest event's payload as `view` shows it (the exchange's `data` JSON).
    fn render(&self, view: View, out: &mut Vec<u8>);

    /// Appends a REST depth snapshot body of at most `limit` levels a side: the exact state
    /// after the latest event, with that event's `u` as `lastUpdateId`.
    fn snapshot(&self, limit: usize, now_ms: u64, out: &mut Vec<u8>);
}

/// Longest stream name accepted in a request; real names are under 40 bytes.
const MAX_STREAM_NAME: usize = 100;

/// Whether `name` looks like a Binance stream name. Well-formed names are accepted even when
/// nothing will ever be sent on them, as Binance does; only malformed ones are request errors.
pub fn is_well_formed(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STREAM_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@_!-.".contains(&b))
}

/// Splits a depth stream name into its lowercase symbol and view; `None` for any other stream.
pub fn parse_stream(name: &str) -> Option<(&str, View)> {
    let (symbol, rest) = name.split_once('@')?;
    if symbol.is_empty() || symbol.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let view = match rest {
        "depth" | "depth@100ms" | "depth@500ms" | "depth@0ms" => View::Diff,
        _ => {
            let (levels, speed) = rest.split_once('@').unwrap_or((rest, ""));
            if !matches!(speed, "" | "100ms" | "500ms") {
                return None;
            }
            match levels {
                "depth5" => View::Partial(5),
                "depth10" => View::Partial(10),
                "depth20" => View::Partial(20),
                _ => return None,
            }
        }
    };
    Some((symbol, view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_stream_names_parse_to_views() {
        let cases = [
            ("ethusdt@depth", Some(("ethusdt", View::Diff))),
            ("ethusdt@depth@100ms", Some(("ethusdt", View::Diff))),
            ("ethusdt@depth@500ms", Some(("ethusdt", View::Diff))),
            ("btcusdt@depth@0ms", Some(("btcusdt", View::Diff))),
            ("ethusdt@depth5", Some(("ethusdt", View::Partial(5)))),
            (
                "ethusdt@depth10@100ms",
                Some(("ethusdt", View::Partial(10))),
            ),
            (
                "ethusdt@depth20@500ms",
                Some(("ethusdt", View::Partial(20))),
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
            assert_eq!(parse_stream(name), want, "{name}");
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
            long.as_str(),
        ] {
            assert!(!is_well_formed(bad), "{bad}");
        }
    }
}
