//! The stats page's charts of the last minutes, drawn as inline SVG text
//! from a [`HistoryView`].
//!
//! Inline SVG because the page must work on a box with no internet and keep
//! a strict Content-Security-Policy (`default-src 'none'`): an inline `<svg>`
//! fetches nothing, needs no script and no font, and its colours are SVG
//! presentation attributes (`fill`, `stroke`), which no CSP directive
//! governs, unlike `style` attributes. Three small charts per node and for
//! the cluster, one point per history bucket, newest on the right, as
//! sparklines (Tufte, "Beautiful Evidence", ch. 2: small, word-sized, many
//! side by side, the same scale of time): renders answered per second, peak
//! renders in flight against the cap (`maxconn`, dashed), and 504s with node
//! failures as stacked bars. The node's states run as a coloured strip under
//! each chart, a change marked as a line across it; any state name is drawn,
//! in a neutral grey when it is none of the known ones.
//!
//! Pure text: the same view gives the same bytes (numbers are rounded to
//! one decimal, which is also what keeps a page of 50 nodes small), names
//! are escaped, and every coordinate stays inside the chart's box.

use std::fmt::Write as _;

use super::history::{Bucket, HistoryView, NodeView, StateMark};
use super::report::escape_html;

/// Width of a chart, in CSS pixels.
pub const WIDTH: f64 = 240.0;
/// Height of a chart's plot, above the state strip.
pub const PLOT: f64 = 40.0;
/// Height of the state strip under the plot.
pub const STRIP: f64 = 5.0;

const RENDERS: &str = "#1f6fb2";
const IN_FLIGHT: &str = "#1f6fb2";
const CAP: &str = "#b00020";
const TIMEOUTS: &str = "#ef6c00";
const FAILURES: &str = "#333333";
/// For a state none of [`STATE_COLOURS`] names.
pub const OTHER_STATE: &str = "#9e9e9e";

/// The colour of each known state.
pub const STATE_COLOURS: [(&str, &str); 5] = [
    ("UP", "#2e9d46"),
    ("GOING DOWN", "#e0a800"),
    ("DOWN", "#c62828"),
    ("COMING UP", "#2f6fd6"),
    ("DRAIN", "#7b4bb7"),
];

/// A state's colour; grey for one not known here.
pub fn state_colour(state: &str) -> &'static str {
    STATE_COLOURS
        .iter()
        .find(|(name, _)| *name == state)
        .map_or(OTHER_STATE, |(_, colour)| colour)
}

/// A number for SVG: one decimal at most, no trailing `.0`; written
/// straight into the page (no string of its own: a page of 50 nodes writes
/// some 60,000 of them).
#[derive(Clone, Copy)]
struct Num(f64);

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenths = (self.0 * 10.0).round() as i64;
        let (whole, tenth) = (tenths / 10, (tenths % 10).abs());
        let sign = if tenths < 0 && whole == 0 { "-" } else { "" };
        if tenth == 0 {
            write!(f, "{sign}{whole}")
        } else {
            write!(f, "{sign}{whole}.{tenth}")
        }
    }
}

fn num(value: f64) -> Num {
    Num(value)
}

/// A scale's top: the smallest of 1, 2, 5 times a power of ten at or above
/// `peak` (and at least 1), so that small counts stay readable.
fn ceiling(peak: f64) -> f64 {
    let peak = peak.max(1.0);
    let power = 10f64.powf(peak.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|top| *top >= peak)
        .unwrap_or(peak)
}

/// How buckets map to the chart's box.
struct Frame {
    step: f64,
    top: f64,
}

impl Frame {
    fn new(buckets: usize, top: f64) -> Self {
        Self {
            step: WIDTH / buckets.max(1) as f64,
            top,
        }
    }

    /// The centre of bucket `i`.
    fn x(&self, i: usize) -> f64 {
        (i as f64 + 0.5) * self.step
    }

    /// A value's height, clamped into the plot.
    fn y(&self, value: f64) -> f64 {
        (PLOT - value / self.top * (PLOT - 1.0)).clamp(0.0, PLOT)
    }
}

/// A line through the values, broken where there is none; a value with
/// none on either side is a dot (a zero-length segment, which a round cap
/// draws), or a fresh node's first point would not show. Points inside a
/// level run are left out: the line through its ends is the same.
fn line(frame: &Frame, values: &[Option<f64>]) -> String {
    let mut d = String::new();
    let y = |i: usize| values.get(i).copied().flatten().map(|v| frame.y(v));
    for i in 0..values.len() {
        let Some(here) = y(i) else { continue };
        let before = i.checked_sub(1).and_then(y);
        let after = y(i + 1);
        if before == Some(here) && after == Some(here) {
            continue;
        }
        let x = num(frame.x(i));
        let command = if before.is_none() { 'M' } else { 'L' };
        let _ = write!(d, "{command}{x} {}", num(here));
        if before.is_none() && after.is_none() {
            let _ = write!(d, "H{x}");
        }
    }
    d
}

/// A level held across runs of buckets (the cap): one horizontal segment
/// per run of equal values, not one point per bucket.
fn steps(frame: &Frame, values: &[Option<f64>]) -> String {
    let mut d = String::new();
    let mut run: Option<(usize, f64)> = None;
    let close = |d: &mut String, start: usize, end: usize, v: f64| {
        let half = frame.step / 2.0;
        let _ = write!(
            d,
            "M{} {}H{}",
            num(frame.x(start) - half),
            num(frame.y(v)),
            num(frame.x(end) + half)
        );
    };
    for (i, value) in values.iter().enumerate() {
        match (run, value) {
            (Some((_, level)), Some(v)) if level == *v => {}
            (Some((start, level)), _) => {
                close(&mut d, start, i - 1, level);
                run = value.map(|v| (i, v));
            }
            (None, _) => run = value.map(|v| (i, v)),
        }
    }
    if let Some((start, level)) = run {
        close(&mut d, start, values.len() - 1, level);
    }
    d
}

/// Bars from `base` (per bucket) up by `values`.
fn bars(frame: &Frame, base: &[f64], values: &[f64]) -> String {
    let mut d = String::new();
    for (i, (b, v)) in base.iter().zip(values).enumerate() {
        if *v > 0.0 {
            let _ = write!(
                d,
                "M{} {}V{}",
                num(frame.x(i)),
                num(frame.y(*b)),
                num(frame.y(b + v))
            );
        }
    }
    d
}

fn path(out: &mut String, d: &str, attributes: &str) {
    if !d.is_empty() {
        let _ = write!(out, "<path d=\"{d}\" fill=\"none\" {attributes}/>");
    }
}

/// The strip of states under the plot and a line at each change.
fn states(out: &mut String, frame: &Frame, marks: &[StateMark], end: f64) {
    for (i, mark) in marks.iter().enumerate() {
        let to = marks.get(i + 1).map_or(end, |next| next.position);
        let (x0, x1) = (mark.position * frame.step, to * frame.step);
        let (x0, x1) = (x0.clamp(0.0, WIDTH), x1.clamp(0.0, WIDTH));
        let colour = state_colour(&mark.state);
        if x1 > x0 {
            let _ = write!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{colour}\"><title>{}</title></rect>",
                num(x0),
                num(PLOT),
                num(x1 - x0),
                num(STRIP),
                escape_html(&mark.state)
            );
        }
        if mark.change {
            change_line(out, x0, colour);
        }
    }
}

fn change_line(out: &mut String, x: f64, colour: &str) {
    let _ = write!(
        out,
        "<path d=\"M{x} 0V{PLOT}\" stroke=\"{colour}\" stroke-width=\"1\" stroke-dasharray=\"2 2\"/>",
        x = num(x.clamp(0.0, WIDTH)),
    );
}

/// One chart: its frame, the state marks, and `body` (its paths).
fn chart(what: &str, of: &str, window: &str, marks: Marks<'_>, body: &str) -> String {
    let label = escape_html(&format!("{what} of {of}, last {window}"));
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"spark\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{label}\"><title>{label}</title>\
         <rect width=\"{w}\" height=\"{p}\" fill=\"#ffffff\" stroke=\"#dddddd\"/>",
        w = num(WIDTH),
        h = num(PLOT + STRIP),
        p = num(PLOT),
    );
    let frame = Frame::new(marks.buckets, 1.0);
    match marks.states {
        Some((node_marks, end)) => states(&mut out, &frame, node_marks, end),
        None => {
            for (position, state) in marks.changes {
                change_line(&mut out, position * frame.step, state_colour(state));
            }
        }
    }
    out.push_str(body);
    out.push_str("</svg>");
    out
}

/// What a chart marks of states: a node's strip, or the cluster's changes
/// (every node's, as lines only).
#[derive(Clone, Copy)]
struct Marks<'a> {
    buckets: usize,
    states: Option<(&'a [StateMark], f64)>,
    changes: &'a [(f64, &'a str)],
}

/// A card's three charts and their captions.
fn card(
    class: &str,
    title: &str,
    state: Option<&str>,
    buckets: &[Bucket],
    marks: Marks<'_>,
    window: &str,
) -> String {
    let n = buckets.len();
    let rates: Vec<Option<f64>> = buckets
        .iter()
        .map(|b| (b.samples > 0).then(|| b.answers_per_second().unwrap_or(0.0)))
        .collect();
    let peak_rate = rates.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
    let now_rate = rates.iter().rev().flatten().next().copied().unwrap_or(0.0);
    let frame = Frame::new(n, ceiling(peak_rate));
    let mut body = String::new();
    path(
        &mut body,
        &line(&frame, &rates),
        &format!("stroke=\"{RENDERS}\" stroke-width=\"1.5\" stroke-linejoin=\"round\" stroke-linecap=\"round\""),
    );
    let renders = chart("renders/s", title, window, marks, &body);

    let seen = |f: fn(&Bucket) -> u32| -> Vec<Option<f64>> {
        buckets
            .iter()
            .map(|b| (b.samples > 0).then(|| f64::from(f(b))))
            .collect()
    };
    let in_flight = seen(|b| b.in_flight_peak);
    let caps = seen(|b| b.maxconn);
    let peak_in_flight = in_flight.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
    let top_cap = caps.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
    let now_in_flight = in_flight
        .iter()
        .rev()
        .flatten()
        .next()
        .copied()
        .unwrap_or(0.0);
    let now_cap = caps.iter().rev().flatten().next().copied().unwrap_or(0.0);
    let frame = Frame::new(n, peak_in_flight.max(top_cap).max(1.0));
    let mut body = String::new();
    path(
        &mut body,
        &steps(&frame, &caps),
        &format!("stroke=\"{CAP}\" stroke-width=\"1\" stroke-dasharray=\"4 2\""),
    );
    path(
        &mut body,
        &line(&frame, &in_flight),
        &format!("stroke=\"{IN_FLIGHT}\" stroke-width=\"1.5\" stroke-linejoin=\"round\" stroke-linecap=\"round\""),
    );
    let load = chart(
        "renders in flight against maxconn",
        title,
        window,
        marks,
        &body,
    );

    let failures: Vec<f64> = buckets.iter().map(|b| f64::from(b.failures)).collect();
    let timeouts: Vec<f64> = buckets
        .iter()
        .map(|b| f64::from(b.render_timeouts))
        .collect();
    let worst = failures
        .iter()
        .zip(&timeouts)
        .fold(0.0f64, |a, (f, t)| a.max(f + t));
    let frame = Frame::new(n, ceiling(worst));
    let width = num((frame.step * 0.8).max(1.0));
    let zeros = vec![0.0; n];
    let mut body = String::new();
    path(
        &mut body,
        &bars(&frame, &zeros, &failures),
        &format!("stroke=\"{FAILURES}\" stroke-width=\"{width}\""),
    );
    path(
        &mut body,
        &bars(&frame, &failures, &timeouts),
        &format!("stroke=\"{TIMEOUTS}\" stroke-width=\"{width}\""),
    );
    let errors = chart("504s and node failures", title, window, marks, &body);

    let state = state.map_or(String::new(), |s| {
        format!(" <span class=\"chart-state\">{}</span>", escape_html(s))
    });
    format!(
        "<div class=\"{class}\"><h3>{title}{state}</h3>\
         <div class=\"caption\">renders/s <b>{now_rate}</b>, peak {peak_rate}</div>{renders}\
         <div class=\"caption\">in flight <b>{now_in_flight}</b>/{now_cap} maxconn, peak {peak_in_flight}</div>{load}\
         <div class=\"caption\">504s <b class=\"timeouts\">{timeouts}</b>, node failures <b class=\"failures\">{failures}</b></div>{errors}\
         </div>\n",
        title = escape_html(title),
        now_rate = num(now_rate),
        peak_rate = num(peak_rate),
        now_in_flight = num(now_in_flight),
        now_cap = num(now_cap),
        peak_in_flight = num(peak_in_flight),
        timeouts = timeouts.iter().sum::<f64>(),
        failures = failures.iter().sum::<f64>(),
    )
}

fn node_card(node: &NodeView, window: &str) -> String {
    let marks = Marks {
        buckets: node.buckets.len(),
        states: Some((&node.states, node.end)),
        changes: &[],
    };
    let state = node.states.last().map(|m| m.state.as_str());
    card("card", &node.name, state, &node.buckets, marks, window)
}

/// "10 min", "90 s": the window as captions say it.
fn window_words(view: &HistoryView) -> String {
    let s = view.settings.window.as_secs();
    if s >= 60 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// The charts section of the stats page: a legend, the cluster's card, then
/// one per node. Empty before the first sample.
pub fn section(view: &HistoryView) -> String {
    if view.cluster.is_empty() {
        return String::new();
    }
    let window = window_words(view);
    let mut changes: Vec<(f64, &str)> = view
        .nodes
        .iter()
        .flat_map(|n| n.states.iter().filter(|m| m.change))
        .map(|m| (m.position, m.state.as_str()))
        .collect();
    changes.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
    let mut legend = String::new();
    for (name, colour) in STATE_COLOURS.iter().chain([&("other", OTHER_STATE)]) {
        let _ = write!(
            legend,
            "<span class=\"key\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\" \
             aria-hidden=\"true\"><rect width=\"10\" height=\"10\" fill=\"{colour}\"/></svg> {name}</span>"
        );
    }
    let mut out = format!(
        "<section id=\"charts\"><h2>Last {window}</h2>\
         <p class=\"legend\">one point per {bucket} s, newest on the right; \
         the strip under each chart is the node's state, a dashed line a change: {legend}</p>\
         <div class=\"cards\">\n",
        bucket = view.settings.bucket.as_secs(),
    );
    let cluster = Marks {
        buckets: view.cluster.len(),
        states: None,
        changes: &changes,
    };
    out.push_str(&card(
        "card cluster",
        "the cluster",
        None,
        &view.cluster,
        cluster,
        &window,
    ));
    for node in &view.nodes {
        out.push_str(&node_card(node, &window));
    }
    out.push_str("</div></section>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::history::tests::snapshot;
    use crate::core::history::{History, HistorySettings};
    use crate::core::node::{NodeCounters, NodeSnapshot};
    use std::time::Duration;
    use tokio::time::Instant;

    fn node(
        url: &str,
        state: &'static str,
        answers: u64,
        failures: u64,
        in_flight: usize,
    ) -> NodeSnapshot {
        let counters = NodeCounters {
            responses: [answers, 0, 0, answers / 10],
            render_timeouts: answers / 10,
            failures,
            ..NodeCounters::default()
        };
        snapshot(url, state, counters, in_flight, 5)
    }

    /// Ten minutes of two nodes, one with a hostile name that goes DOWN,
    /// DRAIN and an unknown state, then back.
    fn view() -> HistoryView {
        let t0 = Instant::now();
        let mut h = History::new(HistorySettings::DEFAULT, t0);
        let evil = "http://x:***@evil:8050/<script>alert(\"&'\")</script>";
        for s in 0..700u64 {
            let state = match s {
                300..=320 => "DOWN",
                321..=340 => "DRAIN",
                341..=350 => "MAINTENANCE",
                _ => "UP",
            };
            h.record(
                t0 + Duration::from_secs(s),
                &[
                    node("http://a:8050", "UP", s * 3, s / 50, (s % 7) as usize),
                    node(evil, state, s * 2, s / 30, 9),
                ],
            );
        }
        h.view()
    }

    fn svgs(html: &str) -> Vec<&str> {
        html.match_indices("<svg")
            .map(|(start, _)| {
                let end = html[start..].find("</svg>").unwrap() + start + "</svg>".len();
                &html[start..end]
            })
            .collect()
    }

    #[test]
    fn every_chart_is_well_formed_xml_with_its_points_in_the_box() {
        let html = section(&view());
        let charts = svgs(&html);
        // A legend of 6 keys, then 3 charts for the cluster and each node.
        assert_eq!(charts.len(), 6 + 3 * 3);
        for svg in charts {
            let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
            let root = doc.root_element();
            assert_eq!(root.tag_name().name(), "svg");
            let width: f64 = root.attribute("width").unwrap().parse().unwrap();
            let height: f64 = root.attribute("height").unwrap().parse().unwrap();
            for element in doc.descendants().filter(|n| n.is_element()) {
                assert!(
                    element.attribute("style").is_none(),
                    "CSP: no style attributes"
                );
                if let Some(d) = element.attribute("d") {
                    let numbers = d
                        .split(|c: char| c.is_ascii_alphabetic() || c == ' ')
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse::<f64>().unwrap());
                    // Every path here is made of x y pairs and single H
                    // (x) or V (y) values: check each against its axis.
                    let mut axis = Vec::new();
                    for c in d.chars() {
                        match c {
                            'M' | 'L' => axis.extend(['x', 'y']),
                            'H' => axis.push('x'),
                            'V' => axis.push('y'),
                            _ => {}
                        }
                    }
                    let numbers: Vec<f64> = numbers.collect();
                    assert_eq!(numbers.len(), axis.len(), "{d}");
                    for (value, axis) in numbers.iter().zip(axis) {
                        let limit = if axis == 'x' { width } else { PLOT };
                        assert!((0.0..=limit).contains(value), "{axis}={value} in {d}");
                    }
                }
                for (attribute, limit) in [
                    ("x", width),
                    ("y", height),
                    ("width", width),
                    ("height", height),
                ] {
                    if let Some(v) = element.attribute(attribute) {
                        let v: f64 = v.parse().unwrap();
                        assert!((0.0..=limit).contains(&v), "{attribute}={v}");
                    }
                }
            }
        }
    }

    #[test]
    fn names_and_states_are_escaped() {
        let html = section(&view());
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(&quot;&amp;'&quot;)&lt;/script&gt;"));
        for svg in svgs(&html).into_iter().skip(6 + 3 + 3) {
            let doc = roxmltree::Document::parse(svg).unwrap();
            let title = doc.descendants().find(|n| n.has_tag_name("title")).unwrap();
            assert!(title
                .text()
                .unwrap()
                .contains("<script>alert(\"&'\")</script>"));
        }
    }

    #[test]
    fn states_have_their_colours_and_others_a_neutral_one() {
        let html = section(&view());
        for state in ["DOWN", "DRAIN", "UP"] {
            let mark = format!("fill=\"{}\"><title>{state}</title>", state_colour(state));
            assert!(html.contains(&mark), "{state}");
        }
        assert!(html.contains(&format!(
            "fill=\"{OTHER_STATE}\"><title>MAINTENANCE</title>"
        )));
        // The changes into DOWN, DRAIN, MAINTENANCE and back to UP, on the
        // node's three charts and the cluster's three.
        let dashed = html.matches("stroke-dasharray=\"2 2\"").count();
        assert_eq!(dashed, 4 * 3 * 2);
        assert_eq!(state_colour("no such state"), OTHER_STATE);
    }

    #[test]
    fn the_same_history_draws_the_same_bytes_and_stays_small() {
        let (a, b) = (section(&view()), section(&view()));
        assert_eq!(a, b);
        // Two nodes and the cluster over ten full minutes.
        assert!(a.len() < 30_000, "{}", a.len());
    }

    #[test]
    fn a_cap_held_across_the_window_is_one_segment() {
        let frame = Frame::new(4, 10.0);
        let d = steps(&frame, &[Some(5.0), Some(5.0), None, Some(8.0)]);
        assert_eq!(d, "M0 20.5H120M180 8.8H240");
        assert_eq!(
            line(&frame, &[Some(0.0), None, Some(10.0), Some(5.0)]),
            "M30 40H30M150 1L210 20.5"
        );
        let level = [Some(1.0), Some(1.0), Some(1.0), Some(2.0)];
        assert_eq!(line(&frame, &level), "M30 36.1L150 36.1L210 32.2");
    }

    #[test]
    fn scales_round_up_to_one_two_five() {
        assert_eq!(
            [0.0, 0.4, 1.0, 1.5, 3.0, 7.0, 12.0, 250.0].map(ceiling),
            [1.0, 1.0, 1.0, 2.0, 5.0, 10.0, 20.0, 500.0]
        );
        assert_eq!(num(2.0).to_string(), "2");
        assert_eq!(num(2.26).to_string(), "2.3");
        assert_eq!(num(0.04).to_string(), "0");
        assert_eq!(num(-0.26).to_string(), "-0.3");
        assert_eq!(num(-1.5).to_string(), "-1.5");
    }

    #[test]
    fn no_chart_before_the_first_sample() {
        let h = History::new(HistorySettings::DEFAULT, Instant::now());
        assert_eq!(section(&h.view()), "");
    }
}
