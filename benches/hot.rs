//! The recorder's per-event costs, one piece at a time, on real Binance frames: the
//! `btcusdt@depth@0ms` events of the hftbacktest recording (`tests/data/binance/SOURCES.md`), in
//! order, so their `pu` chain is the unbroken one Binance sent.
//!
//! * `frame_parse`: the reader's header parse of each frame; also the real futures partial-depth
//!   frames (`@depth20`, `@depth5`) of the crypto-crawler-rs samples, a shorter payload; and the
//!   streams beside the book: the recording's `@trade` and `@bookTicker` frames and cryptofeed's
//!   `@aggTrade` frames (the fixtures hold no real mark price or liquidation frame).
//! * `sequence_check`: the continuity check every event goes through, live and in replay; and the
//!   trade tape over the recording's trades.
//! * `encode_line`: the writer turning a record into its NDJSON line (`encode_depth`).
//! * `gzip_member`: one member's worth of those lines compressed, at levels 1, 3 (the default)
//!   and 6.
//! * `replay`: `obrec replay` on a file of those lines written as the writer writes it: gunzip,
//!   line parse, sequence check and metrics per line.
//!
//! Each prints elements/s (frames, events or lines) and, where bytes pass through, bytes/s in
//! binary units: of frame text for the parse, of line text written for the encoder, of line text
//! read for gzip and replay.

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use criterion::{criterion_group, criterion_main};

use obrec::MEMBER_BYTES;
use obrec::MemberEncoder;
use obrec::replay;
use obrec::{Chain, Ids, Verdict};
use obrec::{Check, Kind, KindIds, Tape};
use obrec::{DepthLine, Frame, encode_depth, parse_frame};

/// The real Binance recordings kept beside the repository.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/binance");

const RECORDING: &str = "hftbacktest_usdm_btcusdt_20240808.gz";

/// Single real messages, among them the only partial-depth frames of the fixtures.
const SAMPLES_FILE: &str = "crypto-crawler-rs_binance_msg_samples.ndjson";

/// cryptofeed's capture of several USD-M streams, among them the only real `@aggTrade` frames.
const CRYPTOFEED_WS: &str = "cryptofeed_binance_futures_ws.ndjson";

/// Samples per benchmark; criterion's default of 100 would spend minutes on whole-file passes.
const SAMPLES: usize = 20;

/// Keeps the eight benchmarks, setup included, well under two minutes.
const MEASUREMENT: Duration = Duration::from_secs(3);
const WARM_UP: Duration = Duration::from_secs(1);

/// One connection delivers every event, as in a recording without reconnects.
const CONN: u64 = 1;

/// The writer reads this off the clock; a fixed figure (the live p50 in the README) makes every
/// pass write the same bytes.
const PIPELINE_US: u64 = 33;

/// Levels for `gzip_member`: the fastest, the default, and the one most tools default to.
const GZIP_LEVELS: [u32; 3] = [1, 3, 6];

/// The level of the recording `scripts/bench.sh` replays, so the two replay figures compare.
const REPLAY_LEVEL: u32 = 1;

/// A depth frame as it came off the socket.
struct Received {
    recv_ns: u64,
    frame: String,
}

fn read_fixture(name: &str, gzipped: bool) -> String {
    let path = PathBuf::from(FIXTURES).join(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::new();
    let read = if gzipped {
        flate2::read::GzDecoder::new(file).read_to_string(&mut text)
    } else {
        std::io::BufReader::new(file).read_to_string(&mut text)
    };
    read.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text
}

/// The recording's diff-depth frames, in order.
fn load_diffs() -> Vec<Received> {
    let text = read_fixture(RECORDING, true);
    // `<recv ns> <message>` per line.
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, message)| matches!(parse_frame(message), Ok(Frame::Depth(_))))
        .map(|(recv_ns, message)| Received {
            recv_ns: recv_ns.parse().expect("receive time in ns"),
            frame: message.to_owned(),
        })
        .collect()
}

/// Partial-depth streams are `<sym>@depth<N>…`, diff streams `<sym>@depth@…`.
fn load_partials() -> Vec<String> {
    read_fixture(SAMPLES_FILE, false)
        .lines()
        .filter(|message| match parse_frame(message) {
            Ok(Frame::Depth(h)) => h
                .stream
                .split_once("@depth")
                .is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit())),
            _ => false,
        })
        .map(str::to_owned)
        .collect()
}

/// The frames of `kind` in `messages`, in order.
fn frames_of<'a>(messages: impl Iterator<Item = &'a str>, kind: Kind) -> Vec<String> {
    messages
        .filter(|message| matches!(parse_frame(message), Ok(Frame::Kind(h)) if h.kind == kind))
        .map(str::to_owned)
        .collect()
}

/// The frames beside the book, by kind: the recording's trades and book tickers, cryptofeed's
/// aggregate trades.
fn load_kinds() -> Vec<(Kind, Vec<String>)> {
    let recording = read_fixture(RECORDING, true);
    let messages = || {
        recording
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(_, m)| m)
    };
    let cryptofeed = read_fixture(CRYPTOFEED_WS, false);
    vec![
        (Kind::Trade, frames_of(messages(), Kind::Trade)),
        (Kind::BookTicker, frames_of(messages(), Kind::BookTicker)),
        (
            Kind::AggTrade,
            frames_of(cryptofeed.lines(), Kind::AggTrade),
        ),
    ]
}

/// A depth frame with its header read, as a reader hands it to the writer.
struct Record {
    frame: String,
    recv_ns: u64,
    event_ms: u64,
    trade_ms: Option<u64>,
    ids: Ids,
    data: Range<usize>,
}

impl Record {
    fn line<'a>(&'a self, symbol: &'a str, stream: &'a str) -> DepthLine<'a> {
        DepthLine {
            symbol,
            stream,
            data: &self.frame[self.data.clone()],
            event_ms: self.event_ms,
            trade_ms: self.trade_ms,
            ids: self.ids,
            pipeline_us: Some(PIPELINE_US),
            recv_ns: self.recv_ns,
            conn: CONN,
        }
    }
}

fn record(received: &Received) -> Record {
    let Ok(Frame::Depth(h)) = parse_frame(&received.frame) else {
        unreachable!("only depth frames are kept");
    };
    let event_ms = h.event_ms_or_receipt(received.recv_ns);
    let (trade_ms, ids, data) = (h.trade_ms, h.ids, h.data);
    Record {
        frame: received.frame.clone(),
        recv_ns: received.recv_ns,
        event_ms,
        trade_ms,
        ids,
        data,
    }
}

/// The symbol and stream names the writer puts in each line.
fn names(records: &[Record]) -> (String, String) {
    let Ok(Frame::Depth(h)) = parse_frame(&records[0].frame) else {
        unreachable!("only depth frames are kept");
    };
    (h.symbol.into_owned(), h.stream.into_owned())
}

/// The lines as the writer batches them: a member's input ends at the first line that brings it to
/// [`MEMBER_BYTES`].
fn member_inputs(records: &[Record], symbol: &str, stream: &str) -> Vec<Vec<u8>> {
    let mut members = Vec::new();
    let mut pending = Vec::with_capacity(MEMBER_BYTES + (64 << 10));
    for rec in records {
        encode_depth(&mut pending, &rec.line(symbol, stream));
        if pending.len() >= MEMBER_BYTES {
            members.push(std::mem::take(&mut pending));
        }
    }
    if !pending.is_empty() {
        members.push(pending);
    }
    members
}

fn line_count(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    // Iterations are whole passes of up to tens of milliseconds: the same few passes per sample.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(SAMPLES);
    group.measurement_time(MEASUREMENT);
    group.warm_up_time(WARM_UP);
    group
}

fn frame_parse(
    c: &mut Criterion,
    diffs: &[Received],
    partials: &[String],
    kinds: &[(Kind, Vec<String>)],
) {
    let diffs: Vec<&str> = diffs.iter().map(|r| r.frame.as_str()).collect();
    let partials: Vec<&str> = partials.iter().map(String::as_str).collect();
    let mut group = group(c, "frame_parse");
    let beside = kinds
        .iter()
        .map(|(kind, frames)| (kind.name(), frames.iter().map(String::as_str).collect()));
    for (name, frames) in [("depth@0ms", diffs), ("partial", partials)]
        .into_iter()
        .chain(beside)
    {
        group.throughput(Throughput::ElementsAndBytes {
            elements: frames.len() as u64,
            bytes: frames.iter().map(|f| f.len() as u64).sum(),
        });
        group.bench_function(name, |b| {
            b.iter(|| {
                frames
                    .iter()
                    .filter(|f| matches!(parse_frame(f), Ok(Frame::Depth(_) | Frame::Kind(_))))
                    .count()
            })
        });
    }
    group.finish();
}

/// Counts the events that continue the chain, as the reader branches on every verdict.
fn chain_pass(ids: &[Ids]) -> usize {
    let mut chain = Chain::new();
    ids.iter()
        .filter(|&&ids| chain.check(ids, CONN) == Verdict::Continuous)
        .count()
}

fn sequence_check(c: &mut Criterion, records: &[Record]) {
    let ids: Vec<Ids> = records.iter().map(|r| r.ids).collect();
    // Every event after the first chains, so the pass measures the common path only.
    assert_eq!(chain_pass(&ids), ids.len() - 1, "the recording's chain");
    let mut group = group(c, "sequence_check");
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function("chain", |b| b.iter(|| chain_pass(&ids)));
    group.finish();
}

/// Counts the trades that follow the previous one on the trade tape.
fn tape_pass(trades: &[(KindIds, u64)]) -> usize {
    let mut tape = Tape::new(Kind::Trade);
    trades
        .iter()
        .filter(|&&(ids, ms)| tape.check(ids, ms, CONN) == Check::Continuous)
        .count()
}

fn tape_check(c: &mut Criterion, trades: &[String]) {
    let ids: Vec<(KindIds, u64)> = trades
        .iter()
        .filter_map(|f| match parse_frame(f) {
            Ok(Frame::Kind(h)) => Some((h.ids, h.event_ms?)),
            _ => None,
        })
        .collect();
    // Trade ids are dense in the recording: every trade after the first follows.
    assert_eq!(tape_pass(&ids), ids.len() - 1, "the recording's trade ids");
    let mut group = group(c, "sequence_check");
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function("trade_tape", |b| b.iter(|| tape_pass(&ids)));
    group.finish();
}

fn encode(c: &mut Criterion, records: &[Record], symbol: &str, stream: &str) {
    let mut out = Vec::new();
    let pass = |out: &mut Vec<u8>| {
        out.clear();
        for rec in records {
            encode_depth(out, &rec.line(symbol, stream));
        }
        out.len()
    };
    let bytes = pass(&mut out) as u64;
    let mut group = group(c, "encode_line");
    group.throughput(Throughput::ElementsAndBytes {
        elements: records.len() as u64,
        bytes,
    });
    group.bench_function("line", |b| b.iter(|| pass(&mut out)));
    group.finish();
}

fn gzip_member(c: &mut Criterion, input: &[u8]) {
    let mut member = Vec::with_capacity(input.len());
    for level in GZIP_LEVELS {
        member.clear();
        MemberEncoder::new(level).encode(input, &mut member);
        println!(
            "gzip_member level {level}: {} line bytes -> {} ({:.2}x)",
            input.len(),
            member.len(),
            input.len() as f64 / member.len() as f64
        );
    }
    let mut group = group(c, "gzip_member");
    group.throughput(Throughput::ElementsAndBytes {
        elements: line_count(input),
        bytes: input.len() as u64,
    });
    for level in GZIP_LEVELS {
        // One compressor for every member, as the writer keeps.
        let mut encoder = MemberEncoder::new(level);
        group.bench_with_input(BenchmarkId::new("level", level), input, |b, input| {
            b.iter(|| {
                member.clear();
                encoder.encode(input, &mut member);
                member.len()
            })
        });
    }
    group.finish();
}

fn replay_file(c: &mut Criterion, members: &[Vec<u8>], dir: &Path) {
    let mut encoder = MemberEncoder::new(REPLAY_LEVEL);
    let mut file = Vec::new();
    for input in members {
        encoder.encode(input, &mut file);
    }
    // Any name but a snapshot file's: replay reads a named file as depth lines.
    let path = dir.join("btcusdt_depth.ndjson.gz");
    std::fs::write(&path, &file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: u64 = members.iter().map(|m| line_count(m)).sum();
    let bytes: u64 = members.iter().map(|m| m.len() as u64).sum();
    let files = [path];
    // A damaged file or a break would make every pass measure an error path instead.
    let report = replay(&files).expect("replay");
    assert!(report.all_complete(), "{:?}", report.files);
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!(report.files[0].lines, lines);
    println!(
        "replay: {lines} lines, {bytes} line bytes in {} members of {} gzip bytes (level {REPLAY_LEVEL})",
        members.len(),
        file.len()
    );
    let mut group = group(c, "replay");
    group.throughput(Throughput::ElementsAndBytes {
        elements: lines,
        bytes,
    });
    group.bench_function("file", |b| {
        b.iter(|| replay(&files).expect("replay").files[0].lines)
    });
    group.finish();
}

fn hot(c: &mut Criterion) {
    let diffs = load_diffs();
    let partials = load_partials();
    let kinds = load_kinds();
    let records: Vec<Record> = diffs.iter().map(record).collect();
    let (symbol, stream) = names(&records);
    let members = member_inputs(&records, &symbol, &stream);
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "{} {stream} frames ({} bytes), {} partial-depth frames, {} members of lines",
        diffs.len(),
        diffs.iter().map(|r| r.frame.len()).sum::<usize>(),
        partials.len(),
        members.len()
    );

    frame_parse(c, &diffs, &partials, &kinds);
    sequence_check(c, &records);
    tape_check(c, &kinds[0].1);
    encode(c, &records, &symbol, &stream);
    gzip_member(c, &members[0]);
    replay_file(c, &members, dir.path());
}

criterion_group!(benches, hot);
criterion_main!(benches);
