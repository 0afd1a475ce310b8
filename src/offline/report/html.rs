//! The report page: a summary table, the hour-by-hour coverage of every series, then a section
//! per symbol and stream with its charts, its timeline and the list of its faults. One HTML
//! file with its CSS inline and its drawings inline SVG ([`svg`](super::svg)); no script.

use std::fmt::Write;

use super::svg::{self, Axis, Line, Mark, escape, iso};
use super::{Coverage, FaultKind, Gathered, MAX_LISTED, NS_PER_MINUTE, Series, Stream};

/// Colours: faults by [`FaultKind::ALL`], then coverage, then chart lines.
const FAULT_COLORS: [&str; 6] = [
    "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#000000",
];
const COMPLETE: &str = "#2ca02c";
const GAP: &str = "#d62728";
const MISSING: &str = "#cccccc";
const RATE: &str = "#1f77b4";
const P50: &str = "#2ca02c";
const P99: &str = "#d62728";
const MID: &str = "#333333";
/// Hours a coverage strip shows at most: a quarter of a year, past which cells would be thinner
/// than a pixel; the rest is said to be left out.
const MAX_HOURS: u64 = 24 * 92;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1000px;color:#222}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}h3{font-size:1em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}\
td.n{text-align:right}svg{width:100%;height:auto;display:block;margin-bottom:.5em}\
svg text{font:11px system-ui,sans-serif}svg .title{font-weight:bold}svg .value{text-anchor:end}\
svg .grid{stroke:#ddd}svg .time{fill:#555}.key span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}\
.damaged{color:#b00}";

/// The whole page.
pub fn page(g: &Gathered) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    s.push_str("<title>obrec report</title>\n");
    let _ = writeln!(s, "<style>{STYLE}</style>\n</head>\n<body>");
    s.push_str("<h1>obrec report</h1>\n");
    let Some((first_minute, last_minute)) = g.span_minutes() else {
        s.push_str("<p>No event was read.</p>\n");
        damaged(&mut s, g);
        s.push_str("</body>\n</html>\n");
        return s;
    };
    let axis = Axis {
        start_ns: first_minute * NS_PER_MINUTE,
        end_ns: (last_minute + 1) * NS_PER_MINUTE,
    };
    let _ = writeln!(
        s,
        "<p>{} files from {}; received {} to {} (UTC). Times below are receipt times, buckets a \
         minute each.</p>",
        g.files,
        escape(&g.inputs.join(" ")),
        iso(axis.start_ns),
        iso(axis.end_ns)
    );
    damaged(&mut s, g);
    summary(&mut s, g);
    coverage(&mut s, g, &axis);
    for ((symbol, stream), series) in &g.series {
        section(&mut s, symbol, *stream, series, &axis);
    }
    s.push_str("</body>\n</html>\n");
    s
}

fn damaged(s: &mut String, g: &Gathered) {
    if g.damaged.is_empty() {
        return;
    }
    s.push_str("<h2>Damaged files</h2>\n<ul class=\"damaged\">\n");
    for d in &g.damaged {
        let _ = writeln!(s, "<li>{}</li>", escape(d));
    }
    s.push_str("</ul>\n");
}

fn summary(s: &mut String, g: &Gathered) {
    s.push_str("<h2>Summary</h2>\n<table>\n<tr><th>symbol</th><th>stream</th><th>events</th>");
    for kind in FaultKind::ALL {
        let _ = write!(s, "<th>{}s</th>", kind.name());
    }
    s.push_str("<th>duplicates</th><th>backfilled</th></tr>\n");
    for ((symbol, stream), series) in &g.series {
        let _ = write!(
            s,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td class=\"n\">{}</td>",
            anchor(symbol, *stream),
            escape(symbol),
            stream.name(),
            series.events
        );
        for n in series.counts {
            let _ = write!(s, "<td class=\"n\">{n}</td>");
        }
        let _ = writeln!(
            s,
            "<td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            series.duplicates, series.backfilled
        );
    }
    s.push_str("</table>\n");
}

fn coverage(s: &mut String, g: &Gathered, axis: &Axis) {
    let first_hour = axis.start_ns / (60 * NS_PER_MINUTE);
    let last_hour = (axis.end_ns - 1) / (60 * NS_PER_MINUTE);
    let hours = (last_hour - first_hour + 1).min(MAX_HOURS);
    s.push_str("<h2>Coverage, hour by hour</h2>\n");
    let _ = writeln!(
        s,
        "<p class=\"key\">From {} UTC, one cell an hour:<span style=\"background:{COMPLETE}\"></span>complete\
         <span style=\"background:{GAP}\"></span>gap (events lost, a silence, damage)\
         <span style=\"background:{MISSING}\"></span>missing (no event)</p>",
        iso(first_hour * 60 * NS_PER_MINUTE)
    );
    if last_hour - first_hour + 1 > hours {
        let _ = writeln!(
            s,
            "<p>Only the first {hours} hours are shown; report fewer files at a time to see the rest.</p>"
        );
    }
    for ((symbol, stream), series) in &g.series {
        let cells: Vec<(&str, String)> = (first_hour..first_hour + hours)
            .map(|hour| {
                let (color, what) = match series.coverage(hour) {
                    Coverage::Complete => (COMPLETE, "complete"),
                    Coverage::Gap => (GAP, "gap"),
                    Coverage::Missing => (MISSING, "missing"),
                };
                let label = format!("{} {what}", &iso(hour * 60 * NS_PER_MINUTE)[..13]);
                (color, label)
            })
            .collect();
        s.push_str(&svg::strip(&format!("{symbol} {}", stream.name()), &cells));
        s.push('\n');
    }
}

fn anchor(symbol: &str, stream: Stream) -> String {
    format!("{}-{}", symbol.to_ascii_lowercase(), stream.name())
}

fn section(s: &mut String, symbol: &str, stream: Stream, series: &Series, axis: &Axis) {
    let _ = writeln!(
        s,
        "<h2 id=\"{}\">{} {}</h2>",
        anchor(symbol, stream),
        escape(symbol),
        stream.name()
    );
    let minute = |(m, _): (&u64, _)| *m * NS_PER_MINUTE + NS_PER_MINUTE / 2;
    // A minute without events breaks the lines: the coverage says why.
    let join_ns = NS_PER_MINUTE;
    let rate = Line {
        label: "events/s",
        color: RATE,
        points: series
            .minutes
            .iter()
            .map(|e| (minute(e), f64::from(e.1.events) / 60.0))
            .collect(),
        join_ns,
    };
    s.push_str(&svg::chart(
        "events per second (per-minute mean)",
        "/s",
        axis,
        &[rate],
        true,
    ));
    let quantile = |label, color, q| Line {
        label,
        color,
        points: series
            .minutes
            .iter()
            .filter_map(|e| Some((minute(e), e.1.latency_ms(q)?)))
            .collect(),
        join_ns,
    };
    s.push_str(&svg::chart(
        "latency, receipt minus event time E (per minute)",
        " ms",
        axis,
        &[quantile("p50", P50, 0.5), quantile("p99", P99, 0.99)],
        true,
    ));
    let mids: Vec<(u64, f64)> = series
        .minutes
        .iter()
        .filter_map(|e| Some((minute(e), e.1.mid?)))
        .collect();
    if !mids.is_empty() {
        let source = if stream == Stream::Depth {
            "the rebuilt book"
        } else {
            "best bid and ask"
        };
        s.push_str(&svg::chart(
            &format!("mid price, from {source} (last of each minute)"),
            "",
            axis,
            &[Line {
                label: "mid",
                color: MID,
                points: mids,
                join_ns,
            }],
            false,
        ));
    }
    let color = |kind: FaultKind| {
        let i = FaultKind::ALL.iter().position(|&k| k == kind);
        FAULT_COLORS[i.expect("every kind is listed")]
    };
    let marks: Vec<Mark> = series
        .faults
        .iter()
        .map(|f| Mark {
            at_ns: f.at_ns,
            until_ns: f.until_ns,
            color: color(f.kind),
            label: format!("{} {}: {}", iso(f.at_ns), f.kind.name(), f.detail),
        })
        .collect();
    s.push_str(&svg::timeline("timeline", axis, &marks));
    s.push_str("\n<p class=\"key\">");
    for kind in FaultKind::ALL {
        let _ = write!(
            s,
            "<span style=\"background:{}\"></span>{}",
            color(kind),
            kind.name()
        );
    }
    s.push_str("</p>\n");
    if series.faults.is_empty() {
        s.push_str("<p>Nothing went wrong.</p>\n");
        return;
    }
    let mut faults: Vec<_> = series.faults.iter().collect();
    faults.sort_by_key(|f| f.at_ns);
    s.push_str(
        "<table class=\"faults\">\n<tr><th>received</th><th>what</th><th>detail</th></tr>\n",
    );
    for f in faults {
        let until = f
            .until_ns
            .map_or(String::new(), |u| format!(" to {}", iso(u)));
        let _ = writeln!(
            s,
            "<tr class=\"{0}\"><td>{1}{until}</td><td>{0}</td><td>{2}</td></tr>",
            f.kind.name(),
            iso(f.at_ns),
            escape(&f.detail)
        );
    }
    s.push_str("</table>\n");
    if series.unlisted > 0 {
        let _ = writeln!(
            s,
            "<p>… and {} more (only the first {MAX_LISTED} are listed; the summary counts all).</p>",
            series.unlisted
        );
    }
}
