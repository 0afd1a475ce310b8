//! How fast the book follows Binance's busiest diff stream: the real `btcusdt@depth@0ms` events of
//! the hftbacktest recording (`fixtures/binance/SOURCES.md`) after its REST snapshot, applied to
//! the book that snapshot built.
//!
//! `apply_diff` is measured twice over the same work, once counted in events and once in levels
//! (`[price, qty]` pairs), so criterion prints events/s and levels/s (ns per level = 1e9 divided
//! by levels/s). `serde_only` reads the same payloads into `Vec`s of borrowed pairs and applies
//! nothing: what the JSON alone costs.

use std::io::Read;
use std::path::PathBuf;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use serde::Deserialize;

use obrec::Book;
use obrec::{Frame, parse_frame};

/// The real Binance recordings kept beside the repository.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/binance");

const RECORDING: &str = "hftbacktest_usdm_btcusdt_20240808.gz";

/// Samples per benchmark; criterion's default of 100 would spend minutes on whole-recording passes.
const SAMPLES: usize = 30;

/// The REST snapshot and the diff events that follow it, in order.
struct Recording {
    snapshot: String,
    diffs: Vec<String>,
}

fn load() -> Recording {
    let path = PathBuf::from(FIXTURES).join(RECORDING);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut snapshot = None;
    let mut diffs = Vec::new();
    // `<recv ns> <message>` per line.
    for message in text
        .lines()
        .filter_map(|line| line.split_once(' ').map(|(_, m)| m))
    {
        if message.starts_with(r#"{"lastUpdateId""#) {
            snapshot = Some(message.to_owned());
        } else if let Ok(Frame::Depth(h)) = parse_frame(message) {
            diffs.push((h.ids.last, message[h.data].to_owned()));
        }
    }
    let snapshot = snapshot.expect("the recording holds a snapshot");
    let last_update_id = Book::new()
        .reset_from_snapshot(&snapshot)
        .expect("snapshot");
    // The procedure drops events the snapshot already contains.
    let diffs = diffs
        .into_iter()
        .filter(|(u, _)| *u >= last_update_id)
        .map(|(_, payload)| payload)
        .collect();
    Recording { snapshot, diffs }
}

#[derive(Deserialize)]
struct Sides<'a> {
    #[serde(borrow)]
    b: Vec<(&'a str, &'a str)>,
    #[serde(borrow)]
    a: Vec<(&'a str, &'a str)>,
}

fn serde_levels(payload: &str) -> usize {
    let sides: Sides = serde_json::from_str(payload).expect("depth payload");
    sides.b.len() + sides.a.len()
}

fn book(c: &mut Criterion) {
    let recording = load();
    let mut start = Book::new();
    start
        .reset_from_snapshot(&recording.snapshot)
        .expect("snapshot");
    let events = recording.diffs.len() as u64;
    let levels: u64 = recording.diffs.iter().map(|d| serde_levels(d) as u64).sum();
    println!(
        "{events} diff events, {levels} levels ({:.1} per event), book of {}+{} levels at start",
        levels as f64 / events as f64,
        start.bids().len(),
        start.asks().len()
    );

    let apply_all = |book: &mut Book| {
        for diff in &recording.diffs {
            book.apply_diff(diff).expect("diff");
        }
    };
    let mut group = c.benchmark_group("book");
    // A pass over the recording takes tens of milliseconds: the same few passes per sample.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(SAMPLES);
    group.throughput(Throughput::Elements(events));
    group.bench_function("apply_diff/events", |b| {
        b.iter_batched_ref(|| start.clone(), apply_all, BatchSize::LargeInput)
    });
    group.throughput(Throughput::Elements(levels));
    group.bench_function("apply_diff/levels", |b| {
        b.iter_batched_ref(|| start.clone(), apply_all, BatchSize::LargeInput)
    });
    group.bench_function("serde_only/levels", |b| {
        b.iter(|| {
            recording
                .diffs
                .iter()
                .map(|d| serde_levels(d))
                .sum::<usize>()
        })
    });
    let snapshot_levels = (start.bids().len() + start.asks().len()) as u64;
    group.throughput(Throughput::Elements(snapshot_levels));
    group.bench_function("reset_from_snapshot/levels", |b| {
        let mut book = Book::new();
        b.iter(|| {
            book.reset_from_snapshot(&recording.snapshot)
                .expect("snapshot")
        })
    });
    group.finish();
}

criterion_group!(benches, book);
criterion_main!(benches);
