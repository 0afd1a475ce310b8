//! `obrec export` and `obrec import`: recordings to and from hftbacktest's raw feed files, and
//! (export only) to Tardis' normalized CSV datasets (`incremental_book_L2`, `book_snapshot_25`/`_5`,
//! `trades`, `quotes`) and the same rows as Parquet tables ([`parquet`](self::parquet)).
//!
//! # The hftbacktest raw format
//!
//! What the hftbacktest collector writes and `hftbacktest.data.utils.binancefutures.convert`
//! reads: gzip (any number of members), one symbol per file, conventionally
//! `<symbol>_<YYYYMMDD>.gz` split on the UTC day of receipt, and one message per line:
//!
//! ```text
//! <19 ASCII digits: receive time, ns since the epoch><one space><compact JSON>\n
//! 1723161255030314667 {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":…,"T":…,"s":"BTCUSDT","U":…,"u":…,"pu":…,"b":[…],"a":[…]}}
//! 1723161255319702566 {"lastUpdateId":5123107852948,"E":…,"T":…,"bids":[…],"asks":[…]}
//! ```
//!
//! Stream messages keep their combined-stream envelope; a REST depth snapshot is its raw body;
//! metadata must look like a stream message, `{"stream":"_meta","data":{"e":…}}`, because the
//! converter reads `data.e` of every enveloped line and treats every other line as a snapshot.
//!
//! # Export
//!
//! Each depth line and each line of a stream beside the book (trade, aggTrade, bookTicker,
//! markPrice, forceOrder) becomes `<recv_ns> {"stream":<recorded stream>,"data":<payload>}` with
//! the payload byte-exact, each snapshot line `<recv_ns> <REST body>`. Per symbol, every series is
//! merged in receive order as the collector writes one file: a series' lines keep their file
//! order; at the same nanosecond a snapshot comes first, then depth, then the kinds in the order
//! trade, aggTrade, bookTicker, markPrice, forceOrder (obrec's series do not keep the collector's
//! order of two streams' lines received at the same nanosecond; its real files have no such
//! tie). The merge holds one line per series, so its memory does not grow with the recording.
//! When a connection changes, and at the start of a file whose first line did not come over
//! connection 1, a `{"stream":"_meta","data":{"e":"connection","conn":N}}` line marks it (the
//! converter ignores it; `import` reads it back). Since 2026 Binance serves aggTrade, markPrice
//! and forceOrder on another connection than depth (the `/market` route), whose changes are
//! marked apart with `"route":"market"` in the `_meta` data, so two live connections do not mark
//! each other's every line. Left out, with a count: meta lines (a `serverShutdown` notice: not an
//! event, and a collector has no such line), and backfilled lines (`"backfill":true`: fetched
//! over REST after the stream lost them, so no collector ever received them as frames; a warning
//! says so).
//!
//! # Import
//!
//! Depth events become obrec depth lines, events of the streams beside the book lines of their
//! kind's series (`<symbol>_<kind>_<UTC>.ndjson.gz`), each with `conn` from the `_meta` lines of
//! its route, else 1, and `latency_pipeline_ms` 0.000, since the file does not say; snapshots
//! become snapshot lines, on every market: spot's depth events (no `pu`, no `T`) become depth
//! lines whose `pu` is `U - 1` and `T` null, spot's bookTicker (no `e`, `E`, `T`) a bookTicker
//! line whose `E` is its receipt time. Other streams (klines, …), `serverShutdown` notices and exchange error bodies are counted and left out. Importing and
//! exporting again gives back every line of a collector file byte for byte.
//!
//! # Damage and refusal
//!
//! Output goes to `<name>.part` files that are linked into place only when the whole conversion
//! has run, and never over an existing file. An input from which not one line can be read, a
//! line that obrec cannot represent (a depth event without `U` or `u`, several symbols in one
//! hftbacktest file) or an output name that is taken ends the run with [`Error::Invalid`](crate::Error::Invalid) and
//! nothing written. An input damaged after its first good line (a truncated gzip tail, a cut or
//! corrupt line) is converted up to the damage, which [`Outcome::damaged`] reports.

mod export;
pub(super) mod files;
mod import;
mod parquet;
mod tardis;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::market::kind::{Kind, Route};
use crate::market::stream::is_well_formed;
use crate::market::symbol::Symbol;
use crate::offline::console::{Console, warn};

pub use export::export;
pub use import::import;
pub use parquet::export_parquet;
pub use tardis::export_tardis;

/// The hftbacktest timestamp's width: ns since the epoch, zero-padded (dates up to 2286).
pub(crate) const NS_DIGITS: usize = 19;
/// The stream name of hftbacktest metadata lines.
const META_STREAM: &str = "_meta";
/// Distinct skipped stream names listed one by one; the rest are counted together.
const MAX_SKIP_KINDS: usize = 32;

/// What a conversion wrote, left out and could not read.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every file written, in name order.
    pub written: Vec<Written>,
    /// Lines left out on purpose, by stream name (`btcusdt@kline_1m`, …) or kind of line
    /// (`(meta lines)`, …).
    pub skipped: BTreeMap<String, u64>,
    /// Inputs read only up to damage: `<file>: line N: <what> (read up to line N-1)`.
    pub damaged: Vec<String>,
    /// Things a user should know about the output (it is written nonetheless).
    pub warnings: Vec<String>,
    /// A signal stopped the conversion: nothing was written.
    pub interrupted: bool,
}

/// One output file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    pub depth: u64,
    pub snapshots: u64,
    /// Lines of the streams beside the book, per kind.
    pub kinds: BTreeMap<Kind, u64>,
    /// `_meta` lines (export only).
    pub meta: u64,
}

impl Written {
    pub fn lines(&self) -> u64 {
        self.depth + self.snapshots + self.kinds.values().sum::<u64>() + self.meta
    }
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.path.display(),
            count(self.lines(), "line")
        )?;
        let kinds = self.kinds.iter().map(|(kind, n)| (*n, kind.name()));
        let parts: Vec<String> = [(self.depth, "depth"), (self.snapshots, "snapshot")]
            .into_iter()
            .chain(kinds)
            .chain([(self.meta, "meta")])
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        if parts.len() > 1 {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

impl Outcome {
    /// Total lines written.
    pub fn lines(&self) -> u64 {
        self.written.iter().map(Written::lines).sum()
    }

    fn skip(&mut self, kind: &str) {
        if let Some(n) = self.skipped.get_mut(kind) {
            *n += 1;
        } else if self.skipped.len() < MAX_SKIP_KINDS {
            self.skipped.insert(kind.to_string(), 1);
        } else {
            *self.skipped.entry("(other streams)".into()).or_default() += 1;
        }
    }

    /// Prints what was written on stdout, damage and warnings on stderr; true when every input was
    /// read whole.
    ///
    /// # Errors
    /// [`Error::Stdout`](crate::Error::Stdout) when standard output fails (a reader that goes away
    /// only ends the printing).
    pub fn print(&self, verb: &str, started: Instant) -> crate::error::Result<bool> {
        let mut out = Console::new();
        for w in &self.written {
            out.line(format_args!("{w}"))?;
        }
        if !self.skipped.is_empty() {
            let list: Vec<String> = self
                .skipped
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect();
            out.line(format_args!("skipped: {}", list.join(", ")))?;
        }
        out.line(format_args!(
            "{verb} {} to {} in {:.2} s",
            count(self.lines(), "line"),
            count(self.written.len() as u64, "file"),
            started.elapsed().as_secs_f64()
        ))?;
        for w in &self.warnings {
            warn(format_args!("warning: {w}"));
        }
        for d in &self.damaged {
            warn(format_args!("{d}"));
        }
        Ok(self.damaged.is_empty())
    }
}

/// The symbol names files: only what `--symbol` accepts, already upper-case.
fn check_symbol(symbol: &str) -> std::result::Result<Symbol, String> {
    Symbol::exact(symbol).map_err(|e| e.to_string())
}

/// Stream names are written between quotes as they are.
fn check_stream(stream: &str) -> std::result::Result<(), String> {
    if is_well_formed(stream) {
        Ok(())
    } else {
        Err(format!("{stream:?} is not a stream name"))
    }
}

/// The connection of each route as `_meta` lines mark it: 1 until a line says otherwise, as the
/// collector's files, which have no such lines, are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Conns([u64; 2]);

impl Conns {
    fn new() -> Conns {
        Conns([1; 2])
    }

    fn slot(route: Route) -> usize {
        match route {
            Route::Public => 0,
            Route::Market => 1,
        }
    }

    fn get(self, route: Route) -> u64 {
        self.0[Conns::slot(route)]
    }

    /// Sets the route's connection; true when it changed.
    fn set(&mut self, route: Route, conn: u64) -> bool {
        let slot = &mut self.0[Conns::slot(route)];
        std::mem::replace(slot, conn) != conn
    }
}

/// `1 line`, `2 lines`.
fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::io::Read;
    use std::path::Path;

    use serde::de::IgnoredAny;

    use super::*;
    use crate::error::Error;
    use crate::store::gzip::MemberEncoder;
    use crate::util::shutdown::Shutdown;

    #[test]
    fn symbols_and_streams_that_would_escape_are_refused() {
        assert!(check_symbol("BTCUSDT").is_ok());
        for bad in ["btcusdt", "../x", "", "BTC USDT", "A"] {
            assert!(check_symbol(bad).is_err(), "{bad}");
        }
        assert!(check_stream("btcusdt@depth@0ms").is_ok());
        for bad in ["", "a\"b", "a\\b", "a b", "a\u{1}"] {
            assert!(check_stream(bad).is_err(), "{bad:?}");
        }
    }

    /// Writes `lines` as a gzip file.
    fn gz(path: &Path, lines: &[Vec<u8>]) {
        let mut body = Vec::new();
        for l in lines {
            body.extend_from_slice(l);
            body.push(b'\n');
        }
        let mut out = Vec::new();
        MemberEncoder::new(1).encode(&body, &mut out);
        fs::write(path, out).unwrap();
    }

    /// Every line of every gzip file in `dir` is JSON after `skip` bytes.
    fn assert_outputs_parse(dir: &Path, skip: usize) {
        for entry in fs::read_dir(dir).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_outputs_parse(&path, skip);
                continue;
            }
            assert!(!path.to_string_lossy().ends_with(".part"), "{path:?} left");
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(File::open(&path).unwrap())
                .read_to_string(&mut text)
                .unwrap();
            for line in text.lines() {
                serde_json::from_str::<IgnoredAny>(&line[skip..])
                    .unwrap_or_else(|e| panic!("{e}: {line}"));
            }
        }
    }

    /// Mutates `line`: cut, a byte replaced, inserted or removed (bytes JSON and the format care
    /// about, and invalid UTF-8).
    fn mutate(line: &[u8], rng: &mut impl rand::Rng) -> Vec<u8> {
        const BYTES: &[u8] = b"\"{}[]:,. 0189-e\\\xff\x00\r";
        let mut m = line.to_vec();
        let at = rng.random_range(0..m.len());
        let byte = BYTES[rng.random_range(0..BYTES.len())];
        match rng.random_range(0..4) {
            0 => m.truncate(at),
            1 => m[at] = byte,
            2 => m.insert(at, byte),
            _ => {
                m.remove(at);
            }
        }
        m
    }

    /// Every line of the gzip files `paths`.
    fn gunzip(paths: impl IntoIterator<Item = PathBuf>) -> Vec<String> {
        let mut text = String::new();
        for path in paths {
            flate2::read::MultiGzDecoder::new(File::open(path).unwrap())
                .read_to_string(&mut text)
                .unwrap();
        }
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn series_merge_in_receipt_order_with_connections_per_route_and_no_meta_or_backfill() {
        use crate::market::kind::KindIds;
        use crate::market::sequence::Ids;
        use crate::store::line::{
            DepthLine, KindLine, MetaLine, SnapshotLine, encode_depth, encode_kind, encode_meta,
            encode_snapshot, parse_kind,
        };
        const B: u64 = 1_723_161_255_000_000_000;
        let dir = tempfile::tempdir().unwrap();
        let book = dir.path().join("order_book");
        fs::create_dir(&book).unwrap();
        let depth_data = |u: u64| {
            format!(
                r#"{{"e":"depthUpdate","E":1723161256299,"T":1723161256298,"s":"BTCUSDT","U":{u},"u":{u},"pu":{},"b":[],"a":[]}}"#,
                u - 1
            )
        };
        let mut depth = Vec::new();
        for (u, ns, conn) in [(10, B + 1, 1), (11, B + 4, 1), (12, B + 6, 3)] {
            if u == 12 {
                // The notice that ended connection 1: left out of the export.
                let data = r#"{"e":"serverShutdown","E":1723161256300}"#;
                let line = MetaLine {
                    meta: "serverShutdown",
                    recv_ns: B + 5,
                    conn: 1,
                    data,
                };
                encode_meta(&mut depth, &line);
            }
            let data = depth_data(u);
            let line = DepthLine {
                symbol: "BTCUSDT",
                stream: "btcusdt@depth@0ms",
                data: &data,
                event_ms: 1723161256299,
                trade_ms: Some(1723161256298),
                ids: Ids {
                    first: u,
                    last: u,
                    prev: u - 1,
                },
                pipeline_us: Some(7),
                recv_ns: ns,
                conn,
            };
            encode_depth(&mut depth, &line);
        }
        let kind_lines = |kind: Kind, events: &[(u64, u64, u64, bool)]| {
            let mut out = Vec::new();
            for &(id, ns, conn, backfill) in events {
                let (data, ids) = match kind {
                    Kind::Trade => (
                        format!(
                            r#"{{"e":"trade","E":1723161256299,"T":1723161256298,"s":"BTCUSDT","t":{id},"p":"1.0","q":"2","X":"MARKET","m":true}}"#
                        ),
                        KindIds::Trade { t: id },
                    ),
                    _ => (
                        format!(
                            r#"{{"e":"aggTrade","E":1723161256299,"a":{id},"s":"BTCUSDT","p":"1.0","q":"2","f":{id},"l":{id},"T":1723161256298,"m":true}}"#
                        ),
                        KindIds::AggTrade {
                            a: id,
                            f: id,
                            l: id,
                        },
                    ),
                };
                let stream = format!("btcusdt@{}", kind.name());
                let line = KindLine {
                    symbol: "BTCUSDT",
                    stream: &stream,
                    data: &data,
                    event_ms: 1723161256299,
                    ids,
                    pipeline_us: Some(7),
                    recv_ns: ns,
                    conn,
                    backfill,
                };
                encode_kind(&mut out, &line);
            }
            out
        };
        // Trade 2 was backfilled; aggTrade comes over `/market`, connection 2.
        let trades = kind_lines(
            Kind::Trade,
            &[
                (1, B + 1, 1, false),
                (2, B + 2, 0, true),
                (3, B + 4, 1, false),
                (4, B + 6, 3, false),
            ],
        );
        let aggs = kind_lines(
            Kind::AggTrade,
            &[(7, B + 3, 2, false), (8, B + 7, 2, false)],
        );
        let body = r#"{"lastUpdateId":10,"E":1723161256299,"T":1723161256298,"bids":[],"asks":[]}"#;
        let mut snapshot = Vec::new();
        let line = SnapshotLine {
            recv_ns: B + 4,
            symbol: "BTCUSDT",
            last_update_id: 10,
            data: body,
        };
        encode_snapshot(&mut snapshot, &line);
        for (name, bytes) in [
            ("btcusdt_depth_20240808T235415Z.ndjson.gz", &depth),
            ("btcusdt_trade_20240808T235415Z.ndjson.gz", &trades),
            ("btcusdt_aggTrade_20240808T235415Z.ndjson.gz", &aggs),
            ("btcusdt_snapshot_20240808T235415Z.ndjson.gz", &snapshot),
        ] {
            let lines: Vec<Vec<u8>> = bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            gz(&book.join(name), &lines);
        }

        let out = dir.path().join("out");
        let outcome = export(std::slice::from_ref(&book), &out, 1, &Shutdown::new()).unwrap();
        let ns = |n: u64| format!("{:019}", B + n);
        let ev = |n: u64, stream: &str, data: &str| {
            format!("{} {{\"stream\":\"{stream}\",\"data\":{data}}}", ns(n))
        };
        let trade =
            |id: u64| String::from_utf8(kind_lines(Kind::Trade, &[(id, 0, 1, false)])).unwrap();
        let agg =
            |id: u64| String::from_utf8(kind_lines(Kind::AggTrade, &[(id, 0, 1, false)])).unwrap();
        let data_of =
            |line: String| line[line.find(",\"data\":").unwrap() + 8..line.len() - 2].to_string();
        let meta = |n: u64, tail: &str| ev(n, "_meta", &format!(r#"{{"e":"connection",{tail}}}"#));
        let want = [
            ev(1, "btcusdt@depth@0ms", &depth_data(10)),
            ev(1, "btcusdt@trade", &data_of(trade(1))),
            meta(3, r#""conn":2,"route":"market""#),
            ev(3, "btcusdt@aggTrade", &data_of(agg(7))),
            format!("{} {body}", ns(4)),
            ev(4, "btcusdt@depth@0ms", &depth_data(11)),
            ev(4, "btcusdt@trade", &data_of(trade(3))),
            meta(6, r#""conn":3"#),
            ev(6, "btcusdt@depth@0ms", &depth_data(12)),
            ev(6, "btcusdt@trade", &data_of(trade(4))),
            ev(7, "btcusdt@aggTrade", &data_of(agg(8))),
        ];
        let got = gunzip([out.join("btcusdt_20240808.gz")]);
        assert_eq!(got, want);
        assert_eq!(outcome.skipped.get("(meta lines)"), Some(&1));
        assert_eq!(outcome.skipped.get("(backfilled lines)"), Some(&1));
        assert!(
            outcome.warnings.iter().any(|w| w.contains("backfilled")),
            "{:?}",
            outcome.warnings
        );
        let w = &outcome.written[0];
        assert_eq!((w.depth, w.snapshots, w.meta), (3, 1, 2));
        assert_eq!(
            w.kinds,
            BTreeMap::from([(Kind::Trade, 3), (Kind::AggTrade, 2)])
        );

        // Imported back, each line has its connection again, whatever its route.
        let data = dir.path().join("data");
        import(
            &[out.join("btcusdt_20240808.gz")],
            &data,
            1,
            &Shutdown::new(),
        )
        .unwrap();
        let conns = |kind: &str| -> Vec<u64> {
            let path = data.join(format!(
                "order_book/btcusdt_{kind}_20240808T235415Z.ndjson.gz"
            ));
            gunzip([path])
                .iter()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["conn"].as_u64().unwrap()
                })
                .collect()
        };
        assert_eq!(conns("depth"), [1, 1, 3]);
        assert_eq!(conns("trade"), [1, 1, 3]);
        assert_eq!(conns("aggTrade"), [2, 2]);
        let agg_line =
            &gunzip([data.join("order_book/btcusdt_aggTrade_20240808T235415Z.ndjson.gz")])[0];
        assert_eq!(
            parse_kind(agg_line.as_bytes()).unwrap().ids,
            KindIds::AggTrade { a: 7, f: 7, l: 7 }
        );
    }

    #[test]
    fn hostile_inputs_are_refused_or_read_to_the_damage_never_a_panic() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let ns = b"1723161255030314667 ";
        let hft: Vec<Vec<u8>> = [
            r#"{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161256299,"T":1723161256298,"s":"BTCUSDT","U":5,"u":7,"pu":4,"b":[["1.0","2"]],"a":[]}}"#,
            r#"{"lastUpdateId":6,"E":1723161256299,"T":1723161256298,"bids":[["1.0","2"]],"asks":[["1.1","3"]]}"#,
            r#"{"stream":"_meta","data":{"e":"connection","conn":2}}"#,
            r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256300,"T":1723161256299,"s":"BTCUSDT","t":9,"p":"1.0","q":"2","X":"MARKET","m":true}}"#,
            r#"{"stream":"btcusdt@trade","data":{"e":"trade","T":1,"p":"1.0","q":"2","X":"MARKET","m":true}}"#,
            r#"{"code":-1003,"msg":"Too many requests; banned"}"#,
        ]
        .iter()
        .map(|j| [&ns[..], j.as_bytes()].concat())
        .collect();
        // Good obrec lines: the import of the good hftbacktest lines.
        let good = dir.path().join("good.gz");
        gz(&good, &hft);
        let data = dir.path().join("good_data");
        let outcome = import(std::slice::from_ref(&good), &data, 1, &Shutdown::new()).unwrap();
        assert_eq!(outcome.lines(), 3);
        // Each obrec line with the name of its file: depth, snapshot, trade.
        let mut obrec_lines = Vec::new();
        let mut names = Vec::new();
        for w in &outcome.written {
            for line in gunzip([w.path.clone()]) {
                obrec_lines.push(line.into_bytes());
                names.push(w.path.file_name().unwrap().to_owned());
            }
        }

        let mut rng = rand::rngs::SmallRng::seed_from_u64(20240808);
        let (mut refused, mut damaged, mut fine) = (0, 0, 0);
        for round in 0..900 {
            let case = dir.path().join(format!("case{round}"));
            fs::create_dir(&case).unwrap();
            let out = case.join("out");
            // Alone, the mutated line is line 1; after a good line, it is damage.
            let lead = round % 2 == 0;
            let result = if round % 3 == 0 {
                let which = rng.random_range(0..obrec_lines.len());
                let mut lines = vec![mutate(&obrec_lines[which], &mut rng)];
                if lead {
                    lines.insert(0, obrec_lines[which].clone());
                }
                let input = case.join(&names[which]);
                gz(&input, &lines);
                let r = export(&[input], &out, 1, &Shutdown::new());
                assert_outputs_parse(&out, NS_DIGITS + 1);
                r
            } else {
                let mut lines = vec![mutate(&hft[rng.random_range(0..hft.len())], &mut rng)];
                if lead {
                    lines.insert(0, hft[0].clone());
                }
                let input = case.join("btcusdt_20240808.gz");
                gz(&input, &lines);
                let r = import(&[input], &out, 1, &Shutdown::new());
                assert_outputs_parse(&out, 0);
                r
            };
            match result {
                Err(Error::Invalid(_)) => refused += 1,
                Err(e) => panic!("round {round}: {e}"),
                Ok(o) if o.damaged.is_empty() => fine += 1,
                Ok(_) => damaged += 1,
            }
        }
        eprintln!("refused {refused}, damaged {damaged}, fine {fine}");
        // The mutations reach every outcome.
        assert!(
            refused > 100 && damaged > 100 && fine > 100,
            "{refused} {damaged} {fine}"
        );
    }
}
