//! The report's drawings, as inline SVG text: line charts over time, a timeline of marks, and a
//! strip of hour cells. Every drawing of a page shares one time axis, so that what happened at
//! one instant lines up down the page. Numbers are written with fixed decimals; text goes
//! through [`escape`].

use std::fmt::Write;

use crate::util::clock::push_iso_millis;

/// Drawing size in SVG units (the page scales them to its width).
const WIDTH: f64 = 960.0;
/// Room left of the plot for the value labels, right of it for the last time label.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const CHART_HEIGHT: f64 = 150.0;
/// Room above the plot for the title, below it for the time labels.
const TOP: f64 = 20.0;
const BOTTOM: f64 = 18.0;
const TIMELINE_HEIGHT: f64 = 44.0;
/// Time labels along an axis: enough to read times off, few enough not to overlap.
const TIME_TICKS: u64 = 6;
const NS_PER_MS: u64 = 1_000_000;

/// The time range every drawing spans, ns since the epoch.
#[derive(Clone, Copy, Debug)]
pub struct Axis {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Axis {
    /// The x of an instant.
    fn x(&self, ns: u64) -> f64 {
        let span = self.end_ns.saturating_sub(self.start_ns).max(1) as f64;
        let at = ns.clamp(self.start_ns, self.end_ns) - self.start_ns;
        LEFT + (WIDTH - LEFT - RIGHT) * at as f64 / span
    }
}

/// One line of a chart: points (time, value) in time order; a point more than `join_ns` after
/// the one before starts a new stroke, so that no line is drawn across a time without data.
pub struct Line<'a> {
    pub label: &'a str,
    pub color: &'a str,
    pub points: Vec<(u64, f64)>,
    pub join_ns: u64,
}

/// A line chart with its title, legend, value range and time labels; with `from_zero` the range
/// takes in zero, so that a level reads as a size (rates) and a sign shows (a latency below zero
/// says the local clock runs behind the exchange's).
pub fn chart(title: &str, unit: &str, axis: &Axis, lines: &[Line], from_zero: bool) -> String {
    let values = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if from_zero {
        (lo, hi) = (lo.min(0.0), hi.max(0.0));
    }
    if hi - lo < f64::EPSILON * hi.abs().max(1.0) {
        // A flat line sits in the middle of a range around it.
        let pad = hi.abs().max(1.0) * 0.01;
        (lo, hi) = (lo - pad, hi + pad);
    }
    let height = TOP + CHART_HEIGHT + BOTTOM;
    let y = |v: f64| TOP + CHART_HEIGHT * (1.0 - (v - lo) / (hi - lo));
    let mut s = open(height, title);
    let _ = write!(
        s,
        r#"<text x="4" y="14" class="title">{}</text>"#,
        escape(title)
    );
    let mut legend_x = WIDTH - RIGHT;
    for line in lines.iter().rev() {
        legend_x -= 10.0 + 8.0 * line.label.len() as f64;
        let _ = write!(
            s,
            r#"<text x="{legend_x:.1}" y="14" class="legend" fill="{}">{}</text>"#,
            line.color,
            escape(line.label)
        );
    }
    for (v, label) in [(hi, value_label(hi, unit)), (lo, value_label(lo, unit))] {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="value">{}</text><line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" class="grid"/>"#,
            LEFT - 4.0,
            y(v) + 4.0,
            escape(&label),
            WIDTH - RIGHT,
            y(v),
            y(v)
        );
    }
    time_labels(&mut s, axis, TOP + CHART_HEIGHT);
    for line in lines {
        let mut last: Option<u64> = None;
        let mut stroke = String::new();
        for &(ns, v) in &line.points {
            if last.is_some_and(|l| ns.saturating_sub(l) > line.join_ns) {
                polyline(&mut s, &stroke, line.color);
                stroke.clear();
            }
            let _ = write!(stroke, "{:.1},{:.1} ", axis.x(ns), y(v));
            last = Some(ns);
        }
        polyline(&mut s, &stroke, line.color);
    }
    s.push_str("</svg>");
    s
}

fn polyline(s: &mut String, points: &str, color: &str) {
    if points.is_empty() {
        return;
    }
    let _ = write!(
        s,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.2"/>"#,
        points.trim_end()
    );
}

/// One mark of a timeline: an instant, or (with `until_ns`) a span.
pub struct Mark<'a> {
    pub at_ns: u64,
    pub until_ns: Option<u64>,
    pub color: &'a str,
    /// What a pointer resting on the mark shows.
    pub label: String,
}

/// A timeline: a tick per mark (a bar per span), in the mark's colour, with its label as tooltip.
pub fn timeline(title: &str, axis: &Axis, marks: &[Mark]) -> String {
    let height = TIMELINE_HEIGHT + BOTTOM;
    let mut s = open(height, title);
    let _ = write!(
        s,
        r#"<text x="4" y="14" class="title">{}</text><line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" class="grid"/>"#,
        escape(title),
        WIDTH - RIGHT,
        TIMELINE_HEIGHT - 4.0,
        TIMELINE_HEIGHT - 4.0
    );
    for mark in marks {
        let x = axis.x(mark.at_ns);
        let width = mark
            .until_ns
            .map_or(2.0, |until| (axis.x(until) - x).max(2.0));
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="20" width="{width:.1}" height="20" fill="{}" opacity="0.8"><title>{}</title></rect>"#,
            x - 1.0,
            mark.color,
            escape(&mark.label)
        );
    }
    time_labels(&mut s, axis, TIMELINE_HEIGHT);
    s.push_str("</svg>");
    s
}

/// A strip of cells (one per hour), each coloured and labelled (tooltip), titled on its left;
/// strips with as many cells line up.
pub fn strip(title: &str, cells: &[(&str, String)]) -> String {
    let height = 34.0;
    let mut s = open(height, title);
    let _ = write!(
        s,
        r#"<text x="4" y="20" class="label">{}</text>"#,
        escape(title)
    );
    let width = (WIDTH - LEFT * 2.0 - RIGHT) / cells.len().max(1) as f64;
    for (i, (color, label)) in cells.iter().enumerate() {
        let _ = write!(
            s,
            r#"<rect x="{:.2}" y="6" width="{:.2}" height="20" fill="{color}" stroke="white" stroke-width="0.5"><title>{}</title></rect>"#,
            LEFT * 2.0 + width * i as f64,
            width,
            escape(label)
        );
    }
    s.push_str("</svg>");
    s
}

/// The opening tag of a drawing `height` units tall, its title for assistive tools.
fn open(height: f64, title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0}" role="img" aria-label="{}">"#,
        escape(title)
    )
}

/// UTC time labels under a plot whose bottom is at `y`.
fn time_labels(s: &mut String, axis: &Axis, y: f64) {
    let span = axis.end_ns.saturating_sub(axis.start_ns);
    for i in 0..=TIME_TICKS {
        let ns = axis.start_ns + span / TIME_TICKS * i;
        let anchor = match i {
            0 => "start",
            TIME_TICKS => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="time" text-anchor="{anchor}">{}</text>"#,
            axis.x(ns),
            y + 13.0,
            short_time(ns, span)
        );
    }
}

/// `08-08 23:54` for spans of more than a day, else `23:54:16`.
fn short_time(ns: u64, span_ns: u64) -> String {
    let iso = iso(ns);
    // `2024-08-08T23:54:16.184Z`
    if span_ns > 86_400 * 1_000_000_000 {
        format!("{} {}", &iso[5..10], &iso[11..16])
    } else {
        iso[11..19].to_string()
    }
}

/// `2024-08-08T23:54:16.184Z`.
pub fn iso(ns: u64) -> String {
    let mut out = Vec::new();
    push_iso_millis(&mut out, ns / NS_PER_MS);
    String::from_utf8_lossy(&out).into_owned()
}

/// A value with three significant figures or so, and its unit.
fn value_label(v: f64, unit: &str) -> String {
    let digits = if v == 0.0 || v.abs() >= 100.0 {
        0
    } else if v.abs() >= 1.0 {
        1
    } else {
        3
    };
    format!("{v:.digits$}{unit}")
}

/// Text made safe inside an element or an attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_fall_inside_the_plot_and_text_is_escaped() {
        let axis = Axis {
            start_ns: 1_000,
            end_ns: 2_000,
        };
        assert_eq!(axis.x(1_000), LEFT);
        assert_eq!(axis.x(2_000), WIDTH - RIGHT);
        assert_eq!(axis.x(5), LEFT, "clamped");
        let svg = chart(
            "a<b",
            " ms",
            &axis,
            &[Line {
                label: "p50",
                color: "#000",
                points: vec![(1_000, 1.0), (1_100, 3.0), (1_900, 2.0)],
                join_ns: 200,
            }],
            true,
        );
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        // The point 800 ns after the one before starts a new stroke.
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(escape(r#"<"&'>"#), "&lt;&quot;&amp;&#39;&gt;");
    }
}
