//! The trades `replay --book` prints between the books: when trade or aggTrade files are among
//! the inputs, each of their events comes out just before the first book line of its symbol
//! received after it, so trades and top of book read in receipt order, as they reached the
//! recorder. One line per trade:
//!
//! ```text
//! {"symbol":"BTCUSDT","trade":5266583935,"T":1723161256322,"price":"61800.30","qty":"0.006","side":"buy"}
//! ```
//!
//! keyed by the kind's name (`trade` or `aggTrade`) holding its id; `side` is the taker's. Each
//! symbol's trade files are streamed, one open file per kind, never loaded whole. What a reader of
//! trades would not have seen live is left out: duplicates from overlapping connections (the
//! same [`Tape`] replay checks with), backfilled lines (fetched later, REST items rather than
//! stream events) and meta lines. A damaged line ends its file here quietly: the check of the
//! same files reports it.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use serde::Deserialize;

use crate::market::kind::{Check, Kind, KindIds, Tape};
use crate::store::line::{is_meta, parse_kind};
use crate::store::lines::{FileLines, open_lines};
use crate::store::names::{FileKind, classify};

/// The trade cursors of every symbol.
pub(crate) struct Trades {
    /// Per symbol (upper case, as depth lines spell it), one cursor per trade kind.
    symbols: BTreeMap<String, Vec<Cursor>>,
}

/// One symbol's files of one kind, read ahead by one event.
struct Cursor {
    kind: Kind,
    files: Vec<PathBuf>,
    next: usize,
    open: Option<FileLines>,
    /// The next trade: its receipt and its printed line.
    head: Option<(u64, Vec<u8>)>,
    tape: Tape,
}

impl Trades {
    /// Cursors over the trade and aggTrade files of `files` (in name order); none for others.
    pub(crate) fn new(files: &[&PathBuf]) -> Trades {
        let mut symbols: BTreeMap<String, Vec<Cursor>> = BTreeMap::new();
        for path in files {
            let Some((symbol, FileKind::Stream(kind @ (Kind::Trade | Kind::AggTrade)))) =
                classify(path)
            else {
                continue;
            };
            let cursors = symbols.entry(symbol.to_ascii_uppercase()).or_default();
            match cursors.iter_mut().find(|c| c.kind == kind) {
                Some(cursor) => cursor.files.push(path.to_path_buf()),
                None => cursors.push(Cursor {
                    kind,
                    files: vec![path.to_path_buf()],
                    next: 0,
                    open: None,
                    head: None,
                    tape: Tape::new(kind),
                }),
            }
        }
        Trades { symbols }
    }

    /// Writes `symbol`'s trades received at or before `until_ns`, oldest first.
    pub(crate) fn write_until(
        &mut self,
        symbol: &str,
        until_ns: u64,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let Some(cursors) = self.symbols.get_mut(symbol) else {
            return Ok(());
        };
        loop {
            let oldest = cursors
                .iter_mut()
                .filter_map(|c| c.peek().map(|ns| (ns, c)))
                .filter(|(ns, _)| *ns <= until_ns)
                .min_by_key(|(ns, _)| *ns);
            let Some((_, cursor)) = oldest else {
                return Ok(());
            };
            let (_, line) = cursor.head.take().expect("peeked");
            out.write_all(&line)?;
        }
    }

    /// Writes every trade not yet written, symbol by symbol: those received after the last book
    /// line of their symbol, or of a symbol without depth files.
    pub(crate) fn write_rest(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let symbols: Vec<String> = self.symbols.keys().cloned().collect();
        for symbol in symbols {
            self.write_until(&symbol, u64::MAX, out)?;
        }
        Ok(())
    }
}

/// The fields of a trade or aggTrade payload a line prints.
#[derive(Deserialize)]
#[allow(non_snake_case)]
struct TradeFields<'a> {
    p: &'a str,
    q: &'a str,
    /// The buyer is the maker: the taker sold.
    m: bool,
    T: u64,
}

impl Cursor {
    /// The receipt of the next trade, reading it first; `None` once the files are done.
    fn peek(&mut self) -> Option<u64> {
        if self.head.is_none() {
            self.advance();
        }
        self.head.as_ref().map(|(ns, _)| *ns)
    }

    /// Reads the next trade to print into `head`, past files that end or are damaged.
    fn advance(&mut self) {
        loop {
            let Some(lines) = &mut self.open else {
                let Some(path) = self.files.get(self.next) else {
                    return;
                };
                self.next += 1;
                self.open = open_lines(path).ok();
                continue;
            };
            let bytes = match lines.next_line() {
                Ok(Some(line)) if line.terminated => line.bytes,
                _ => {
                    self.open = None;
                    continue;
                }
            };
            if is_meta(bytes) {
                continue;
            }
            let Ok(line) = parse_kind(bytes) else {
                self.open = None;
                continue;
            };
            if line.backfill
                || self.tape.check(line.ids, line.event_ms, line.conn) == Check::Duplicate
            {
                continue;
            }
            let Some(printed) = print(line.symbol, line.ids, line.data) else {
                self.open = None;
                continue;
            };
            self.head = Some((line.recv_ns, printed));
            return;
        }
    }
}

/// The printed line of a trade, `None` when its payload lacks a field.
fn print(symbol: &str, ids: KindIds, data: &str) -> Option<Vec<u8>> {
    let (key, id) = match ids {
        KindIds::Trade { t } => (Kind::Trade, t),
        KindIds::AggTrade { a, .. } => (Kind::AggTrade, a),
        _ => return None,
    };
    let fields: TradeFields = serde_json::from_str(data).ok()?;
    let side = if fields.m { "sell" } else { "buy" };
    let mut num = itoa::Buffer::new();
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"symbol\":\"");
    out.extend_from_slice(symbol.as_bytes());
    out.extend_from_slice(b"\",\"");
    out.extend_from_slice(key.name().as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(num.format(id).as_bytes());
    out.extend_from_slice(b",\"T\":");
    out.extend_from_slice(num.format(fields.T).as_bytes());
    for (name, value) in [("price", fields.p), ("qty", fields.q), ("side", side)] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":\"");
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"}\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trades_print_price_quantity_and_the_takers_side() {
        let data = r#"{"e":"trade","E":1723161256322,"T":1723161256321,"s":"BTCUSDT","t":5266583935,"p":"61800.30","q":"0.006","X":"MARKET","m":false}"#;
        let line = print("BTCUSDT", KindIds::Trade { t: 5266583935 }, data).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"symbol\":\"BTCUSDT\",\"trade\":5266583935,\"T\":1723161256321,\"price\":\"61800.30\",\"qty\":\"0.006\",\"side\":\"buy\"}\n"
        );
        let agg = r#"{"e":"aggTrade","a":7,"p":"1.5","q":"2","f":1,"l":3,"T":9,"m":true}"#;
        let line = print("X", KindIds::AggTrade { a: 7, f: 1, l: 3 }, agg).unwrap();
        assert!(
            String::from_utf8(line)
                .unwrap()
                .contains("\"aggTrade\":7,\"T\":9,")
        );
        assert!(print("X", KindIds::Trade { t: 1 }, "{}").is_none());
    }
}
