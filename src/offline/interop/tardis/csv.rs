//! Tardis' gzip CSV files: the [`Sink`] of `obrec export --format tardis`. One file per dataset,
//! symbol and UTC day, named as Tardis names its downloads, with Tardis' exact headers; prices
//! and amounts as received (decimal text needs no quoting).

use super::super::Written;
use super::super::files::{Line, OutId, Staged};
use super::{Dataset, Date, Row, Sink, Times};
use crate::error::Result;
use crate::market::book::Levels;

/// Tardis' exchange id for Binance USD-M futures.
const EXCHANGE: &str = "binance-futures";
const L2_HEADER: &str = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount";
const TRADES_HEADER: &str = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount";
const QUOTES_HEADER: &str =
    "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount";

/// The CSV files of one export, staged.
pub(in super::super) struct CsvFiles {
    staged: Staged,
    /// The symbol of each output, by [`OutId`] (the staged files are this sink's alone, so
    /// their ids count from 0 in the order they were opened).
    symbols: Vec<String>,
    /// Scratch for one row.
    row: Vec<u8>,
}

impl CsvFiles {
    pub(in super::super) fn new(staged: Staged) -> CsvFiles {
        CsvFiles {
            staged,
            symbols: Vec::new(),
            row: Vec::new(),
        }
    }
}

impl Sink for CsvFiles {
    fn open(&mut self, dataset: Dataset, symbol: &str, (y, m, d): Date) -> Result<OutId> {
        let name = match dataset {
            Dataset::BookChanges => "incremental_book_L2".to_string(),
            Dataset::BookTop(depth) => format!("book_snapshot_{depth}"),
            Dataset::Trades => "trades".to_string(),
            Dataset::Quotes => "quotes".to_string(),
        };
        let out = self.staged.create(&format!(
            "{EXCHANGE}_{name}_{y:04}-{m:02}-{d:02}_{symbol}.csv.gz"
        ))?;
        debug_assert_eq!(out, self.symbols.len(), "one staged file per output");
        self.symbols.push(symbol.to_string());
        let header = match dataset {
            Dataset::BookChanges => format!("{L2_HEADER}\n").into_bytes(),
            Dataset::BookTop(depth) => top_header(depth),
            Dataset::Trades => format!("{TRADES_HEADER}\n").into_bytes(),
            Dataset::Quotes => format!("{QUOTES_HEADER}\n").into_bytes(),
        };
        self.staged.push(out, &header, Line::Header)?;
        Ok(out)
    }

    fn row(&mut self, out: OutId, row: Row<'_>) -> Result<()> {
        let counted_as = row.counted_as();
        let r = &mut self.row;
        r.clear();
        let symbol = &self.symbols[out];
        match row {
            Row::Level {
                times,
                is_snapshot,
                side,
                price,
                amount,
                ..
            } => {
                push_prefix(r, symbol, times);
                r.extend_from_slice(if is_snapshot { b",true" } else { b",false" });
                push_cells(r, [side, price, amount]);
            }
            Row::Top {
                times,
                depth,
                asks,
                bids,
            } => {
                push_prefix(r, symbol, times);
                push_top_cells(r, asks, bids, depth);
            }
            Row::Trade {
                times,
                id,
                side,
                price,
                amount,
            } => {
                push_prefix(r, symbol, times);
                push_cells(r, [itoa::Buffer::new().format(id), side, price, amount]);
            }
            Row::Quote {
                times,
                ask_amount,
                ask_price,
                bid_price,
                bid_amount,
            } => {
                push_prefix(r, symbol, times);
                push_cells(r, [ask_amount, ask_price, bid_price, bid_amount]);
            }
        }
        r.push(b'\n');
        self.staged.push(out, &self.row, counted_as)
    }

    fn flush(&mut self, out: OutId) -> Result<()> {
        self.staged.flush(out)
    }

    fn close(&mut self, out: OutId) -> Result<()> {
        self.staged.close(out)
    }

    fn commit(self) -> Result<Vec<Written>> {
        self.staged.commit()
    }
}

/// `exchange,symbol,timestamp,local_timestamp`.
fn push_prefix(out: &mut Vec<u8>, symbol: &str, times: Times) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(EXCHANGE.as_bytes());
    out.push(b',');
    out.extend_from_slice(symbol.as_bytes());
    out.push(b',');
    out.extend_from_slice(num.format(times.exchange_us).as_bytes());
    out.push(b',');
    out.extend_from_slice(num.format(times.local_us).as_bytes());
}

/// `,cell,cell,…`.
fn push_cells<const N: usize>(out: &mut Vec<u8>, cells: [&str; N]) {
    for cell in cells {
        out.push(b',');
        out.extend_from_slice(cell.as_bytes());
    }
}

/// `,asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,…` for `depth` levels, empty
/// cells where the book has fewer.
pub(super) fn push_top_cells(
    out: &mut Vec<u8>,
    mut asks: Levels<'_>,
    mut bids: Levels<'_>,
    depth: usize,
) {
    for _ in 0..depth {
        for level in [asks.next(), bids.next()] {
            let (price, qty) = level.map_or(("", ""), |q| (q.price, q.qty));
            push_cells(out, [price, qty]);
        }
    }
}

/// The `book_snapshot_<depth>` header, asks then bids per level as Tardis orders them.
fn top_header(depth: usize) -> Vec<u8> {
    let mut header = String::from("exchange,symbol,timestamp,local_timestamp");
    for i in 0..depth {
        for side in ["asks", "bids"] {
            header.push_str(&format!(",{side}[{i}].price,{side}[{i}].amount"));
        }
    }
    header.push('\n');
    header.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_snapshot_header_interleaves_asks_and_bids_per_level() {
        let header = String::from_utf8(top_header(2)).unwrap();
        assert_eq!(
            header,
            "exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,\
             bids[0].price,bids[0].amount,asks[1].price,asks[1].amount,bids[1].price,\
             bids[1].amount\n"
        );
    }
}
