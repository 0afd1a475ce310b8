"""Reads obrec's Tardis CSV and Parquet exports of a recording with pandas and duckdb, as a
researcher would, and checks them against the recording itself: the same events, the same ids,
the same prices. Run by tests/parquet.rs (an ignored test: pandas, pyarrow and duckdb come from
PyPI): python3 read_exports.py DIR, where DIR holds data/ (the recording), tardis/ and parquet/.
Where the hftbacktest package is installed too, its Tardis converter is run on the CSVs.
"""

import glob
import gzip
import json
import sys

import duckdb
import pandas as pd


def recorded(base, kind):
    """The recording's lines of one kind, in file order."""
    out = []
    for path in sorted(glob.glob(f"{base}/data/order_book/*_{kind}_*.ndjson.gz")):
        with gzip.open(path, "rt") as f:
            out += [json.loads(line) for line in f]
    return out


def main(base):
    trades, quotes = recorded(base, "trade"), recorded(base, "bookTicker")
    l2_csv = glob.glob(f"{base}/tardis/*_incremental_book_L2_*.csv.gz")[0]
    read = {
        "tardis": (
            pd.read_csv(glob.glob(f"{base}/tardis/*_trades_*.csv.gz")[0]),
            pd.read_csv(glob.glob(f"{base}/tardis/*_quotes_*.csv.gz")[0]),
            f"read_csv_auto('{l2_csv}')",
        ),
        "parquet": (
            # The partition column filters as pushed down, as a user would read one symbol.
            pd.read_parquet(f"{base}/parquet/trades", filters=[("symbol", "=", "BTCUSDT")]),
            pd.read_parquet(f"{base}/parquet/quotes"),
            f"read_parquet('{base}/parquet/book_deltas/**/*.parquet', hive_partitioning = true)",
        ),
    }
    rows = {}
    for fmt, (t, q, l2) in read.items():
        assert len(t) == len(trades), (fmt, len(t), len(trades))
        assert len(q) == len(quotes), (fmt, len(q), len(quotes))
        assert list(t["id"]) == [x["t"] for x in trades], fmt
        assert list(t["price"]) == [float(x["data"]["p"]) for x in trades], fmt
        assert list(t["amount"]) == [float(x["data"]["q"]) for x in trades], fmt
        assert list(q["bid_price"]) == [float(x["data"]["b"]) for x in quotes], fmt
        assert list(q["ask_amount"]) == [float(x["data"]["A"]) for x in quotes], fmt
        rows[fmt] = duckdb.sql(f"select count(*) from {l2}").fetchall()[0][0]
        print(f"{fmt}: {len(t)} trades, {len(q)} quotes, {rows[fmt]} book rows")
    assert rows["tardis"] == rows["parquet"], rows
    convert_with_hftbacktest(base, read["tardis"][0])


def convert_with_hftbacktest(base, trades):
    """hftbacktest's own Tardis converter takes the CSVs, and its trade events are the trades."""
    try:
        from hftbacktest.data.utils import tardis
    except ImportError:
        print("hftbacktest not installed: its converter is not run")
        return
    files = sorted(glob.glob(f"{base}/tardis/*_trades_*.csv.gz"))
    files += sorted(glob.glob(f"{base}/tardis/*_incremental_book_L2_*.csv.gz"))
    events = tardis.convert(files)
    # Trade events (2); the converter may repeat an event to order it on both clocks.
    # By exchange time: the converter moves local times it finds ahead of the exchange's (this
    # capture's clock was 1.27 s behind).
    converted = {
        (int(e["exch_ts"]), float(e["px"]), float(e["qty"]))
        for e in events
        if int(e["ev"]) & 0xFF == 2
    }
    rows = set(zip(trades["timestamp"] * 1000, trades["price"], trades["amount"]))
    assert converted == rows, (len(converted), len(rows))
X


if __name__ == "__main__":
    main(sys.argv[1])
