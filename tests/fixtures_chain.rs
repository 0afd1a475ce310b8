//! The continuity machine and the frame parser on real Binance recordings: every USD-M chain in
//! the fixtures is contiguous, so any break reported here is a bug in obrec.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};

mod common;

use common::fixture;
use obrec::{Chain, Verdict};
use obrec::{Frame, parse_frame};

#[derive(Default, Debug, PartialEq)]
struct Tally {
    events: usize,
    continuous: usize,
    breaks: usize,
}

/// Runs every depth event of `lines` through one chain per symbol.
fn tally<'a>(lines: impl Iterator<Item = &'a str>) -> (BTreeMap<String, Tally>, usize) {
    let mut chains: BTreeMap<String, (Chain, Tally)> = BTreeMap::new();
    let mut other = 0;
    for line in lines {
        match parse_frame(line) {
            Ok(Frame::Depth(h)) => {
                let (chain, t) = chains.entry(h.symbol.to_string()).or_default();
                t.events += 1;
                match chain.check(h.ids, 1) {
                    Verdict::Start => {}
                    Verdict::Continuous => t.continuous += 1,
                    v => {
                        t.breaks += 1;
                        eprintln!("{}: {v:?}", h.symbol);
                    }
                }
                assert!(line[h.data.clone()].starts_with("{\"e\":\"depthUpdate\""));
            }
            _ => other += 1,
        }
    }
    (
        chains.into_iter().map(|(s, (_, t))| (s, t)).collect(),
        other,
    )
}

#[test]
fn hftbacktest_usdm_chain_is_contiguous() {
    let file = File::open(fixture("hftbacktest_usdm_btcusdt_20240808.gz")).unwrap();
    let text: Vec<String> = BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map(|l| l.unwrap())
        .collect();
    // Each line is `<recv ns> <message>`.
    let (tally, other) = tally(text.iter().map(|l| l.split_once(' ').unwrap().1));
    assert_eq!(
        tally["BTCUSDT"],
        Tally {
            events: 6551,
            continuous: 6550,
            breaks: 0
        }
    );
    // bookTicker, trade and the REST snapshot.
    assert_eq!(other, 93_954 - 6551);
}

#[test]
fn cryptofeed_usdm_chains_are_contiguous_per_symbol() {
    let text = std::fs::read_to_string(fixture("cryptofeed_binance_futures_ws.ndjson")).unwrap();
    let (tally, _) = tally(text.lines());
    let want = [
        ("AKROUSDT", 189),
        ("CTKUSDT", 185),
        ("KEEPUSDT", 135),
        ("SUSHIUSDT", 255),
    ];
    assert_eq!(tally.len(), want.len());
    for (symbol, events) in want {
        assert_eq!(
            tally[symbol],
            Tally {
                events,
                continuous: events - 1,
                breaks: 0
            },
            "{symbol}"
        );
    }
}

#[test]
fn a_removed_event_is_reported_as_a_break() {
    let text = std::fs::read_to_string(fixture("cryptofeed_binance_futures_ws.ndjson")).unwrap();
    let mut seen = 0;
    // Drop the 10th SUSHIUSDT depth event.
    let lines = text.lines().filter(|l| {
        if l.contains("\"s\":\"SUSHIUSDT\"") && l.contains("depthUpdate") {
            seen += 1;
            seen != 10
        } else {
            true
        }
    });
    let (tally, _) = tally(lines);
    assert_eq!(tally["SUSHIUSDT"].breaks, 1);
    assert_eq!(tally["AKROUSDT"].breaks, 0);
}
