//! `obrec export --format parquet`: the rows of the Tardis export ([`super::tardis`]: the same
//! book rebuild, the same rows) as typed Parquet tables, partitioned as Hive partitions the
//! tables, which duckdb (`read_parquet('out/book_deltas/**/*.parquet', hive_partitioning =
//! true)`) and pyarrow/pandas (`pd.read_parquet('out/book_deltas', filters=…)`) read with the
//! symbol and date as columns:
//!
//! ```text
//! <out>/<dataset>/symbol=<SYMBOL>/date=<YYYY-MM-DD>/part-0.parquet
//! ```
//!
//! | dataset | columns (Tardis CSV equivalent) |
//! |---|---|
//! | `book_deltas` | `local_timestamp`, `timestamp`, `update_id` u64, `is_snapshot` bool, `side` (`bid`/`ask`), `price`, `amount` (`incremental_book_L2`) |
//! | `book_snapshot_25`, `book_snapshot_5` | `local_timestamp`, `timestamp`, per level i from 0: `ask_price_i`, `ask_amount_i`, `bid_price_i`, `bid_amount_i`, null beyond the book (`asks[i].price`, …) |
//! | `trades` | `local_timestamp`, `timestamp`, `id` u64, `side` (`buy`/`sell`, the taker's), `price`, `amount` |
//! | `quotes` | `local_timestamp`, `timestamp`, `ask_amount`, `ask_price`, `bid_price`, `bid_amount` |
//!
//! `local_timestamp` is the receipt, `timestamp` the exchange's `E`, both
//! `timestamp[µs, UTC]`. `update_id` is the id of the book after the row: the event's `u` for a
//! change, and for a snapshot run the id of the book it lists (the REST snapshot's
//! `lastUpdateId`, or at the start of a day the `u` of the event the book is at). `side` is
//! dictionary-encoded text (a pandas category). Rows are in the order of the CSV files, row for
//! row.
//!
//! Prices and amounts are float64, not decimal128: numpy, pandas and duckdb compute on float64
//! natively (a decimal128 column reaches pandas as Python `Decimal` objects), and a decimal's
//! scale is fixed per column while Binance's tick and lot sizes differ per symbol. No value is
//! rounded: every decimal of at most 15 significant digits converts to the float64 whose
//! shortest decimal form is that value again, so `repr(price)` gives back the recorded string
//! but for trailing zeros. The export checks each value and refuses one with more digits
//! (Binance's have far fewer), or one that is not a plain decimal.
//!
//! Column statistics (min/max per row group and per page, with the column and offset indexes)
//! are written, so that readers skip row groups and pages a filter on time, side or price
//! excludes. Pages are zstd-compressed. Files are staged as the CSV files are: `<name>.part`
//! until the whole export has run, never replacing an existing file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, StringDictionaryBuilder, TimestampMicrosecondBuilder,
    UInt64Builder,
};
use arrow_array::types::Int8Type;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::files::{OutId, Staged};
use super::tardis::{Dataset, Date, Row, Sink, export_rows};
use super::{Outcome, Written};
use crate::error::{Error, Result};
use crate::util::shutdown::Shutdown;

/// Rows per row group: about duckdb's own (122 880), small enough that a time filter on a day of
/// a busy symbol (BTCUSDT at the fixture's rate: over 100 million book changes) skips all but a
/// few groups by their statistics, large enough that each column chunk compresses well and the
/// footer stays small.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// A row group also ends at this encoded size: a row of `book_snapshot_25` is 100 numbers, and
/// the writer holds the open row group of every table in memory.
const ROW_GROUP_BYTES: usize = 16 << 20;
/// Rows gathered in column builders before the writer encodes them: keeps the builders of a
/// wide table small (8192 rows of 102 columns are 6.5 MB).
const BATCH_ROWS: usize = 8 * 1024;
/// zstd's own default level, its balance of speed and ratio.
const ZSTD_LEVEL: i32 = 3;
/// The most significant digits a decimal may have for float64 to hold it exactly (`DBL_DIG`).
const MAX_EXACT_DIGITS: usize = 15;
/// Each partition holds one file; the name is the one Spark and pyarrow give a partition's first.
const PART_FILE: &str = "part-0.parquet";
const UTC: &str = "UTC";

/// Writes recordings (depth, snapshot, trade, aggTrade and bookTicker files; a data directory is
/// read as its `order_book/`) as Parquet tables under `out_dir`, as [`export_rows`] says.
///
/// # Errors
///
/// As [`export_rows`]; also [`Error::Invalid`] for a price or amount that float64 would not hold
/// exactly (nothing is written).
pub fn export_parquet(paths: &[PathBuf], out_dir: &Path, shutdown: &Shutdown) -> Result<Outcome> {
    export_rows(paths, ParquetFiles::new(out_dir)?, shutdown)
}

/// The Parquet tables of one export, staged.
struct ParquetFiles {
    /// Gzip settings unused: Parquet compresses its own pages.
    staged: Staged,
    /// By [`OutId`] (the staged files are this sink's alone, so their ids count from 0).
    tables: Vec<Table>,
    props: WriterProperties,
}

impl ParquetFiles {
    fn new(out_dir: &Path) -> Result<ParquetFiles> {
        let zstd = ZstdLevel::try_new(ZSTD_LEVEL)
            .map_err(|e| Error::Invalid(format!("zstd level {ZSTD_LEVEL}: {e}")))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(zstd))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .set_created_by(format!("obrec {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(ParquetFiles {
            staged: Staged::new(out_dir, 1),
            tables: Vec::new(),
            props,
        })
    }

    /// Hands the gathered rows to the writer, which ends a row group when it is full.
    fn write_batch(&mut self, out: OutId) -> Result<()> {
        let table = &mut self.tables[out];
        let Some(writer) = table.writer.as_mut() else {
            return Ok(());
        };
        if table.rows == 0 {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = table.columns.iter_mut().map(Column::finish).collect();
        table.rows = 0;
        let part = self.staged.part(out);
        let batch = RecordBatch::try_new(table.schema.clone(), columns)
            .map_err(|e| Error::Invalid(format!("{}: {e}", part.display())))?;
        writer.write(&batch).map_err(|e| write_failed(part, e))
    }
}

impl Sink for ParquetFiles {
    fn open(&mut self, dataset: Dataset, symbol: &str, (y, m, d): Date) -> Result<OutId> {
        let name = match dataset {
            Dataset::BookChanges => "book_deltas".to_string(),
            Dataset::BookTop(depth) => format!("book_snapshot_{depth}"),
            Dataset::Trades => "trades".to_string(),
            Dataset::Quotes => "quotes".to_string(),
        };
        let path = format!("{name}/symbol={symbol}/date={y:04}-{m:02}-{d:02}/{PART_FILE}");
        let (out, file) = self.staged.create_raw(&path)?;
        debug_assert_eq!(out, self.tables.len(), "one staged file per table");
        let columns = columns(dataset);
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, kind)| Field::new(name, kind.data_type(), *kind == Kind::MaybeNumber))
            .collect();
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(self.props.clone()))
            .map_err(|e| write_failed(self.staged.part(out), e))?;
        self.tables.push(Table {
            names: columns.iter().map(|(name, _)| name.clone()).collect(),
            columns: columns.iter().map(|(_, kind)| Column::new(*kind)).collect(),
            schema,
            rows: 0,
            writer: Some(writer),
        });
        Ok(out)
    }

    fn row(&mut self, out: OutId, row: Row<'_>) -> Result<()> {
        self.staged.count(out, 1, row.counted_as());
        let table = &mut self.tables[out];
        let mut at = 0;
        cells(row, &mut |cell| {
            table.columns[at].append(cell).map_err(|why| {
                Error::Invalid(format!("parquet export: {}: {why}", table.names[at]))
            })?;
            at += 1;
            Ok(())
        })?;
        debug_assert_eq!(at, table.columns.len(), "a cell per column");
        table.rows += 1;
        if table.rows >= BATCH_ROWS {
            self.write_batch(out)?;
        }
        Ok(())
    }

    fn flush(&mut self, out: OutId) -> Result<()> {
        self.write_batch(out)
    }

    fn close(&mut self, out: OutId) -> Result<()> {
        self.write_batch(out)?;
        if let Some(writer) = self.tables[out].writer.take() {
            writer
                .close()
                .map_err(|e| write_failed(self.staged.part(out), e))?;
        }
        self.staged.close(out)
    }

    fn commit(mut self) -> Result<Vec<Written>> {
        for out in 0..self.tables.len() {
            self.close(out)?;
        }
        self.staged.commit()
    }
}

/// One table being written: its rows gathered per column, then encoded by its writer.
struct Table {
    names: Vec<String>,
    columns: Vec<Column>,
    schema: SchemaRef,
    /// Rows in the builders.
    rows: usize,
    /// `None` once closed.
    writer: Option<ArrowWriter<File>>,
}

/// What a column holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Time,
    Id,
    Flag,
    Label,
    Number,
    /// A number or null (a book snapshot's level beyond the book).
    MaybeNumber,
}

impl Kind {
    fn data_type(self) -> DataType {
        match self {
            Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            Kind::Id => DataType::UInt64,
            Kind::Flag => DataType::Boolean,
            Kind::Label => DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)),
            Kind::Number | Kind::MaybeNumber => DataType::Float64,
        }
    }
}

/// A dataset's columns, in order.
fn columns(dataset: Dataset) -> Vec<(String, Kind)> {
    let mut columns = vec![
        ("local_timestamp".to_string(), Kind::Time),
        ("timestamp".to_string(), Kind::Time),
    ];
    let named = |names: &[(&'static str, Kind)]| -> Vec<(String, Kind)> {
        names.iter().map(|(n, k)| (n.to_string(), *k)).collect()
    };
    match dataset {
        Dataset::BookChanges => columns.extend(named(&[
            ("update_id", Kind::Id),
            ("is_snapshot", Kind::Flag),
            ("side", Kind::Label),
            ("price", Kind::Number),
            ("amount", Kind::Number),
        ])),
        Dataset::BookTop(depth) => {
            for i in 0..depth {
                for side in ["ask", "bid"] {
                    for what in ["price", "amount"] {
                        columns.push((format!("{side}_{what}_{i}"), Kind::MaybeNumber));
                    }
                }
            }
        }
        Dataset::Trades => columns.extend(named(&[
            ("id", Kind::Id),
            ("side", Kind::Label),
            ("price", Kind::Number),
            ("amount", Kind::Number),
        ])),
        Dataset::Quotes => columns.extend(named(&[
            ("ask_amount", Kind::Number),
            ("ask_price", Kind::Number),
            ("bid_price", Kind::Number),
            ("bid_amount", Kind::Number),
        ])),
    }
    columns
}

/// A value of a row, in the order of [`columns`].
enum Cell<'a> {
    Time(u64),
    Id(u64),
    Flag(bool),
    Label(&'static str),
    /// A decimal as recorded.
    Number(&'a str),
    /// No level there.
    Empty,
}

/// Gives each cell of `row` to `put`, in column order.
fn cells<'a>(row: Row<'a>, put: &mut impl FnMut(Cell<'a>) -> Result<()>) -> Result<()> {
    let times = match &row {
        Row::Level { times, .. }
        | Row::Top { times, .. }
        | Row::Trade { times, .. }
        | Row::Quote { times, .. } => *times,
    };
    put(Cell::Time(times.local_us))?;
    put(Cell::Time(times.exchange_us))?;
    match row {
        Row::Level {
            update_id,
            is_snapshot,
            side,
            price,
            amount,
            ..
        } => {
            put(Cell::Id(update_id))?;
            put(Cell::Flag(is_snapshot))?;
            put(Cell::Label(side))?;
            put(Cell::Number(price))?;
            put(Cell::Number(amount))
        }
        Row::Top {
            depth,
            mut asks,
            mut bids,
            ..
        } => {
            for _ in 0..depth {
                for level in [asks.next(), bids.next()] {
                    match level {
                        Some(q) => {
                            put(Cell::Number(q.price))?;
                            put(Cell::Number(q.qty))?;
                        }
                        None => {
                            put(Cell::Empty)?;
                            put(Cell::Empty)?;
                        }
                    }
                }
            }
            Ok(())
        }
        Row::Trade {
            id,
            side,
            price,
            amount,
            ..
        } => {
            put(Cell::Id(id))?;
            put(Cell::Label(side))?;
            put(Cell::Number(price))?;
            put(Cell::Number(amount))
        }
        Row::Quote {
            ask_amount,
            ask_price,
            bid_price,
            bid_amount,
            ..
        } => [ask_amount, ask_price, bid_price, bid_amount]
            .into_iter()
            .try_for_each(|n| put(Cell::Number(n))),
    }
}

/// A column's values until they are written.
enum Column {
    Time(TimestampMicrosecondBuilder),
    Id(UInt64Builder),
    Flag(BooleanBuilder),
    Label(StringDictionaryBuilder<Int8Type>),
    Number(Float64Builder),
}

impl Column {
    fn new(kind: Kind) -> Column {
        match kind {
            Kind::Time => Column::Time(TimestampMicrosecondBuilder::new().with_timezone(UTC)),
            Kind::Id => Column::Id(UInt64Builder::new()),
            Kind::Flag => Column::Flag(BooleanBuilder::new()),
            Kind::Label => Column::Label(StringDictionaryBuilder::new()),
            Kind::Number | Kind::MaybeNumber => Column::Number(Float64Builder::new()),
        }
    }

    /// Appends a cell; why it cannot be held.
    fn append(&mut self, cell: Cell<'_>) -> std::result::Result<(), String> {
        match (self, cell) {
            (Column::Time(b), Cell::Time(us)) => {
                let us = i64::try_from(us).map_err(|_| format!("{us} µs: out of range"))?;
                b.append_value(us);
            }
            (Column::Id(b), Cell::Id(id)) => b.append_value(id),
            (Column::Flag(b), Cell::Flag(flag)) => b.append_value(flag),
            // Two labels per column: the Int8 keys never run out.
            (Column::Label(b), Cell::Label(label)) => b.append_value(label),
            (Column::Number(b), Cell::Number(text)) => b.append_value(exact(text)?),
            (Column::Number(b), Cell::Empty) => b.append_null(),
            _ => unreachable!("cells come in the order of the dataset's columns"),
        }
        Ok(())
    }

    /// The values gathered, as an array; the builder starts again empty.
    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Time(b) => Arc::new(b.finish()),
            Column::Id(b) => Arc::new(b.finish()),
            Column::Flag(b) => Arc::new(b.finish()),
            Column::Label(b) => Arc::new(b.finish()),
            Column::Number(b) => Arc::new(b.finish()),
        }
    }
}

/// The float64 of a recorded decimal, which gives the decimal back exactly: refused unless it is
/// a plain decimal (digits, one point, a sign) of at most [`MAX_EXACT_DIGITS`] significant
/// digits.
fn exact(text: &str) -> std::result::Result<f64, String> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let plain = unsigned.bytes().any(|b| b.is_ascii_digit())
        && unsigned.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && unsigned.bytes().filter(|&b| b == b'.').count() <= 1;
    let significant = unsigned
        .trim_matches(|c| c == '0' || c == '.')
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    match text.parse::<f64>() {
        Ok(value) if plain && significant <= MAX_EXACT_DIGITS => Ok(value),
        _ => Err(format!(
            "{text:?}: not a decimal of at most {MAX_EXACT_DIGITS} significant digits, which \
             float64 would not hold exactly"
        )),
    }
}

fn write_failed(part: &Path, e: parquet::errors::ParquetError) -> Error {
    Error::file(part, std::io::Error::other(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_of_up_to_15_digits_are_held_exactly_and_others_refused() {
        for (text, value) in [
            ("61800.30", 61800.3),
            ("0.006", 0.006),
            ("0", 0.0),
            ("100", 100.0),
            ("-1.5", -1.5),
            ("0.000000001234567", 1.234567e-9),
            ("123456789012.345", 123456789012.345),
        ] {
            let got = exact(text).unwrap();
            assert_eq!(got, value, "{text}");
            // The shortest form of the float64 is the decimal again, trailing zeros aside.
            assert_eq!(got.to_string().parse::<f64>().unwrap(), got);
        }
        for bad in [
            "1234567890123.456",
            "0.1000000000000001",
            "1e5",
            "",
            ".",
            "NaN",
            "inf",
            "1.2.3",
            " 1",
        ] {
            assert!(exact(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn book_snapshot_columns_interleave_asks_and_bids_per_level() {
        let names: Vec<String> = columns(Dataset::BookTop(2))
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            names,
            [
                "local_timestamp",
                "timestamp",
                "ask_price_0",
                "ask_amount_0",
                "bid_price_0",
                "bid_amount_0",
                "ask_price_1",
                "ask_amount_1",
                "bid_price_1",
                "bid_amount_1"
            ]
        );
    }
}
