//! SVG charts of the figures: latency per scenario and the cost of the binaries compared.
//!
//! Hand-written SVG (a few rectangles, lines and labels), so that the pictures need no
//! plotting dependency and diff as text. Every chart is 800×400 with a title, axes with units,
//! and bars for medians with min–max whiskers over the runs.

use std::fmt::Write;

use crate::report::{ScenarioCost, Spread, Summary};

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 400.0;
/// Plot area: below the title and legend, above the axis labels.
const TOP: f64 = 80.0;
const BOTTOM: f64 = 330.0;
/// One colour per binary compared, reused in turn.
const COLOURS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2",
];

/// How a value maps to a height: linear from zero, or by decades.
#[derive(Debug, Clone, Copy)]
enum Axis {
    Linear { max: f64, step: f64 },
    Log { low: i32, high: i32 },
}

impl Axis {
    /// A linear axis from 0 to a round number at or above `max`.
    fn linear(max: f64) -> Axis {
        let max = if max > 0.0 && max.is_finite() {
            max
        } else {
            1.0
        };
        // At most six steps of 1, 2 or 5 times a power of ten.
        let rough = max / 6.0;
        let magnitude = 10f64.powf(rough.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= rough)
            .unwrap_or(10.0 * magnitude);
        Axis::Linear {
            max: (max / step).ceil() * step,
            step,
        }
    }

    /// A log axis whose decades cover every positive value given.
    fn log(values: impl IntoIterator<Item = f64>) -> Axis {
        let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().filter(|v| *v > 0.0 && v.is_finite()) {
            low = low.min(v);
            high = high.max(v);
        }
        if !low.is_finite() {
            return Axis::Log { low: -1, high: 0 };
        }
        // One decade below the smallest value, so that its bar is not a sliver.
        let low = low.log10().floor() as i32 - 1;
        let high = (high.log10().ceil() as i32).max(low + 1);
        Axis::Log { low, high }
    }

    /// The y coordinate of `value` within the plot area (clamped to it).
    fn y(&self, value: f64) -> f64 {
        let share = match *self {
            Axis::Linear { max, .. } => value / max,
            Axis::Log { low, high } => {
                let v = value.max(10f64.powi(low));
                (v.log10() - f64::from(low)) / f64::from(high - low)
            }
        };
        BOTTOM - share.clamp(0.0, 1.0) * (BOTTOM - TOP)
    }

    fn ticks(&self) -> Vec<f64> {
        match *self {
            Axis::Linear { max, step } => {
                let count = (max / step).round() as usize;
                (0..=count).map(|i| i as f64 * step).collect()
            }
            Axis::Log { low, high } => (low..=high).map(|e| 10f64.powi(e)).collect(),
        }
    }
}

/// One bar: its median and whisker, its colour and what its tooltip says.
struct Bar<'a> {
    x: f64,
    width: f64,
    spread: Spread,
    colour: &'a str,
    tooltip: String,
}

/// The latency chart of one scenario: p50, p90, p99 and max in ms on a log axis.
pub fn latency(summary: &Summary) -> String {
    let figures = [
        ("p50", summary.latency_p50_us),
        ("p90", summary.latency_p90_us),
        ("p99", summary.latency_p99_us),
        ("max", summary.latency_max_us),
    ]
    .map(|(name, s)| (name, scale(s, 1e-3)));
    let axis = Axis::log(figures.iter().flat_map(|(_, s)| [s.min, s.max]));
    let mut svg = open(&format!(
        "Latency, scenario {}: push written → reply read",
        summary.scenario
    ));
    subtitle(
        &mut svg,
        &format!("{} ({} runs)", summary.what, summary.runs),
    );
    let (left, right) = (90.0, 770.0);
    y_axis(&mut svg, axis, left, right, "latency (ms, log scale)");
    let slot = (right - left) / figures.len() as f64;
    for (i, (name, spread)) in figures.iter().enumerate() {
        let x = left + slot * i as f64 + slot * 0.25;
        let tooltip = format!("{name}: {}", spread_text(*spread, " ms"));
        let bar = Bar {
            x,
            width: slot * 0.5,
            spread: *spread,
            colour: COLOURS[0],
            tooltip,
        };
        draw_bar(&mut svg, axis, &bar, &format_value(spread.median));
        label(&mut svg, x + slot * 0.25, BOTTOM + 20.0, "middle", 14, name);
    }
    label(
        &mut svg,
        (left + right) / 2.0,
        BOTTOM + 45.0,
        "middle",
        13,
        "percentile of one run's pushes",
    );
    close(svg, "bars: median over the runs; whiskers: min–max")
}

/// The compared binaries side by side: pushes per CPU-second and fpush µs of CPU per push,
/// one group of bars per scenario, one bar per binary.
pub fn compare(binaries: &[(String, Vec<ScenarioCost>)]) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for cost in binaries.iter().flat_map(|(_, costs)| costs) {
        if !scenarios.contains(&cost.scenario.as_str()) {
            scenarios.push(&cost.scenario);
        }
    }
    let mut svg = open("fpush cost per push, binaries compared");
    legend(&mut svg, binaries.iter().map(|(name, _)| name.as_str()));
    let panels = [
        Panel {
            title: "pushes per CPU-second",
            left: 90.0,
            right: 380.0,
            figure: |c| c.pushes_per_cpu_second,
        },
        Panel {
            title: "fpush CPU µs per push",
            left: 490.0,
            right: 780.0,
            figure: |c| c.fpush_cpu_us_per_push,
        },
    ];
    for panel in &panels {
        draw_panel(&mut svg, panel, binaries, &scenarios);
    }
    close(svg, "bars: median over the runs; whiskers: min–max")
}

/// One half of the comparison chart.
struct Panel<'a> {
    title: &'a str,
    left: f64,
    right: f64,
    figure: fn(&ScenarioCost) -> Spread,
}

fn draw_panel(
    svg: &mut String,
    panel: &Panel<'_>,
    binaries: &[(String, Vec<ScenarioCost>)],
    scenarios: &[&str],
) {
    let all = binaries
        .iter()
        .flat_map(|(_, c)| c.iter().map(panel.figure));
    let axis = Axis::linear(all.map(|s| s.max).fold(0.0, f64::max));
    y_axis(svg, axis, panel.left, panel.right, panel.title);
    let slot = (panel.right - panel.left) / scenarios.len().max(1) as f64;
    let width = slot * 0.8 / binaries.len().max(1) as f64;
    for (i, scenario) in scenarios.iter().enumerate() {
        let start = panel.left + slot * i as f64 + slot * 0.1;
        for (j, (name, costs)) in binaries.iter().enumerate() {
            let Some(cost) = costs.iter().find(|c| c.scenario == *scenario) else {
                continue;
            };
            let spread = (panel.figure)(cost);
            let bar = Bar {
                x: start + width * j as f64 + width * 0.05,
                width: width * 0.9,
                spread,
                colour: COLOURS[j % COLOURS.len()],
                tooltip: format!("{name}, {scenario}: {}", spread_text(spread, "")),
            };
            draw_bar(svg, axis, &bar, &format_value(spread.median));
        }
        let middle = start + slot * 0.4;
        label(svg, middle, BOTTOM + 20.0, "middle", 14, scenario);
    }
    let middle = (panel.left + panel.right) / 2.0;
    label(svg, middle, BOTTOM + 45.0, "middle", 13, "scenario");
}

fn scale(s: Spread, factor: f64) -> Spread {
    Spread {
        median: s.median * factor,
        min: s.min * factor,
        max: s.max * factor,
    }
}

/// The document head, a white background and the title.
fn open(title: &str) -> String {
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\">\n\
         <title>{}</title>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        escape(title)
    );
    label(&mut svg, WIDTH / 2.0, 28.0, "middle", 18, title);
    svg
}

fn subtitle(svg: &mut String, text: &str) {
    label(svg, WIDTH / 2.0, 50.0, "middle", 12, text);
}

fn close(mut svg: String, note: &str) -> String {
    label(&mut svg, WIDTH - 10.0, HEIGHT - 10.0, "end", 11, note);
    svg.push_str("</svg>\n");
    svg
}

/// The y axis with its ticks, grid lines and rotated title, and the x axis line.
fn y_axis(svg: &mut String, axis: Axis, left: f64, right: f64, title: &str) {
    for tick in axis.ticks() {
        let y = axis.y(tick);
        let _ = writeln!(
            svg,
            "<line class=\"grid\" x1=\"{left}\" y1=\"{y:.1}\" x2=\"{right}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>"
        );
        label(svg, left - 6.0, y + 4.0, "end", 11, &format_value(tick));
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{TOP}\" x2=\"{left}\" y2=\"{BOTTOM}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{BOTTOM}\" x2=\"{right}\" y2=\"{BOTTOM}\" stroke=\"black\"/>"
    );
    let (x, y) = (left - 58.0, (TOP + BOTTOM) / 2.0);
    let _ = writeln!(
        svg,
        "<text class=\"axis-title\" x=\"{x}\" y=\"{y}\" text-anchor=\"middle\" font-size=\"13\" \
         transform=\"rotate(-90 {x} {y})\">{}</text>",
        escape(title)
    );
}

/// A bar up to the median, a whisker from min to max, and the median written above.
fn draw_bar(svg: &mut String, axis: Axis, bar: &Bar<'_>, value: &str) {
    let top = axis.y(bar.spread.median);
    let (x, width, colour) = (bar.x, bar.width, bar.colour);
    let _ = writeln!(
        svg,
        "<rect class=\"bar\" x=\"{x:.1}\" y=\"{top:.1}\" width=\"{width:.1}\" height=\"{:.1}\" \
         fill=\"{colour}\"><title>{}</title></rect>",
        BOTTOM - top,
        escape(&bar.tooltip)
    );
    let (low, high) = (axis.y(bar.spread.min), axis.y(bar.spread.max));
    let middle = x + width / 2.0;
    let (cap_left, cap_right) = (middle - width / 4.0, middle + width / 4.0);
    let _ = writeln!(
        svg,
        "<path class=\"whisker\" d=\"M{middle:.1} {low:.1} V{high:.1} M{cap_left:.1} {low:.1} \
         H{cap_right:.1} M{cap_left:.1} {high:.1} H{cap_right:.1}\" stroke=\"black\" fill=\"none\"/>"
    );
    // Small enough for the value to stay within its bar's width (about 0.6 em per digit).
    let size = (width / (0.6 * value.chars().count() as f64)).clamp(7.0, 11.0) as u32;
    label(svg, middle, high.min(top) - 5.0, "middle", size, value);
}

/// One coloured square and name per binary, across the top.
fn legend<'a>(svg: &mut String, names: impl Iterator<Item = &'a str>) {
    let mut x = 90.0;
    for (i, name) in names.enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            svg,
            "<rect class=\"legend\" x=\"{x}\" y=\"42\" width=\"12\" height=\"12\" fill=\"{colour}\"/>"
        );
        label(svg, x + 18.0, 53.0, "start", 12, name);
        x += 30.0 + 7.0 * name.chars().count() as f64;
    }
}

fn label(svg: &mut String, x: f64, y: f64, anchor: &str, size: u32, text: &str) {
    let _ = writeln!(
        svg,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" font-size=\"{size}\">{}</text>",
        escape(text)
    );
}

fn spread_text(s: Spread, unit: &str) -> String {
    format!(
        "{}{unit} (min {}, max {})",
        format_value(s.median),
        format_value(s.min),
        format_value(s.max)
    )
}

/// Thousands separated above 1,000; more decimals the smaller the value.
fn format_value(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        return if v < 0.0 { format!("-{out}") } else { out };
    }
    let decimals = match v.abs() {
        a if a >= 100.0 || a == 0.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 0.1 => 2,
        a => (-a.log10().floor()) as usize + 1,
    };
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use quick_xml::events::Event;

    use super::*;

    /// One element of a parsed chart: its attributes and the text directly inside it.
    #[derive(Debug)]
    struct Node {
        name: String,
        attrs: HashMap<String, String>,
        text: String,
    }

    impl Node {
        fn number(&self, key: &str) -> f64 {
            self.attrs[key].parse().expect("a number")
        }
    }

    /// Parses the whole document (failing on anything not well-formed) into its elements.
    fn parse(svg: &str) -> Vec<Node> {
        let mut reader = quick_xml::Reader::from_str(svg);
        let (mut nodes, mut open, mut roots) = (Vec::new(), Vec::new(), 0);
        loop {
            let event = reader.read_event().expect("well-formed XML");
            let (start, empty) = match &event {
                Event::Start(s) => (Some(s.clone()), false),
                Event::Empty(s) => (Some(s.clone()), true),
                _ => (None, false),
            };
            if let Some(start) = start {
                roots += usize::from(open.is_empty());
                let attrs = start
                    .attributes()
                    .map(|a| {
                        let a = a.expect("an attribute");
                        let key = String::from_utf8(a.key.as_ref().to_vec()).expect("UTF-8");
                        (key, a.unescape_value().expect("a value").into_owned())
                    })
                    .collect();
                let name = String::from_utf8(start.name().as_ref().to_vec()).expect("UTF-8");
                let text = String::new();
                nodes.push(Node { name, attrs, text });
                if !empty {
                    open.push(nodes.len() - 1);
                }
                continue;
            }
            match event {
                Event::Text(t) => {
                    let text = t.decode().expect("UTF-8");
                    match open.last() {
                        Some(top) => nodes[*top].text.push_str(&text),
                        None => assert!(text.trim().is_empty(), "text outside the root"),
                    }
                }
                Event::GeneralRef(r) => {
                    let top = *open.last().expect("reference inside an element");
                    let name = r.decode().expect("UTF-8");
                    let resolved = quick_xml::escape::resolve_predefined_entity(&name);
                    nodes[top]
                        .text
                        .push_str(resolved.expect("a predefined entity"));
                }
                Event::End(_) => {
                    open.pop();
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert!(open.is_empty(), "unclosed elements");
        assert_eq!(roots, 1, "one root element");
        assert_eq!(nodes[0].name, "svg");
        nodes
    }

    fn texts(nodes: &[Node]) -> Vec<&str> {
        nodes
            .iter()
            .filter(|n| n.name == "text")
            .map(|n| n.text.as_str())
            .collect()
    }

    /// The bars in document order, each with the tooltip that follows it.
    fn bars(nodes: &[Node]) -> Vec<(&Node, &str)> {
        nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.attrs.get("class").map(String::as_str) == Some("bar"))
            .map(|(i, n)| (n, nodes[i + 1].text.as_str()))
            .collect()
    }

    fn spread(median: f64, min: f64, max: f64) -> Spread {
        Spread { median, min, max }
    }

    fn latency_summary(what: &str) -> Summary {
        let mut s = Summary::of(what, Vec::new());
        s.scenario = "d".into();
        s.runs = 3;
        s.latency_p50_us = spread(100.0, 90.0, 120.0);
        s.latency_p90_us = spread(1_000.0, 900.0, 1_100.0);
        s.latency_p99_us = spread(10_000.0, 5_000.0, 20_000.0);
        s.latency_max_us = spread(100_000.0, 50_000.0, 200_000.0);
        s
    }

    #[test]
    fn latency_chart_is_an_800_by_400_svg_with_title_and_axes_with_units() {
        let nodes = parse(&latency(&latency_summary("2,000 pushes/s")));
        assert_eq!(nodes[0].attrs["width"], "800");
        assert_eq!(nodes[0].attrs["height"], "400");
        let texts = texts(&nodes);
        assert!(texts.contains(&"Latency, scenario d: push written → reply read"));
        assert!(texts.contains(&"2,000 pushes/s (3 runs)"));
        assert!(texts.contains(&"latency (ms, log scale)"));
        assert!(texts.contains(&"percentile of one run's pushes"));
        for name in ["p50", "p90", "p99", "max"] {
            assert!(texts.contains(&name), "{name} labelled");
        }
    }

    #[test]
    fn latency_bars_stand_at_the_medians_in_ms_on_a_log_axis() {
        let nodes = parse(&latency(&latency_summary("x")));
        let bars = bars(&nodes);
        let tooltips: Vec<&str> = bars.iter().map(|(_, t)| *t).collect();
        assert_eq!(
            tooltips,
            [
                "p50: 0.1 ms (min 0.09, max 0.12)",
                "p90: 1 ms (min 0.9, max 1.1)",
                "p99: 10 ms (min 5, max 20)",
                "max: 100 ms (min 50, max 200)"
            ]
        );
        // The medians are a decade apart, so each bar is one decade taller than the last.
        let heights: Vec<f64> = bars.iter().map(|(b, _)| b.number("height")).collect();
        let decade = heights[1] - heights[0];
        assert!(decade > 20.0, "{heights:?}");
        for pair in heights.windows(2) {
            assert!((pair[1] - pair[0] - decade).abs() < 0.2, "{heights:?}");
        }
        for (bar, _) in &bars {
            assert!((bar.number("y") + bar.number("height") - BOTTOM).abs() < 0.2);
        }
        let texts = texts(&nodes);
        for value in ["0.1", "1", "10", "100"] {
            assert!(texts.contains(&value), "median {value} written");
        }
    }

    #[test]
    fn whiskers_run_from_min_to_max_around_the_median() {
        let nodes = parse(&latency(&latency_summary("x")));
        let axis = Axis::log([0.09, 200.0]);
        let whisker = nodes
            .iter()
            .find(|n| n.attrs.get("class").map(String::as_str) == Some("whisker"))
            .expect("a whisker");
        let (low, high) = (axis.y(0.09), axis.y(0.12));
        let expected = format!("V{high:.1}");
        assert!(
            whisker.attrs["d"].contains(&format!(" {low:.1} ")),
            "{whisker:?}"
        );
        assert!(whisker.attrs["d"].contains(&expected), "{whisker:?}");
        assert!(high < axis.y(0.1) && axis.y(0.1) < low);
    }

    #[test]
    fn text_from_the_scenario_is_escaped() {
        let nodes = parse(&latency(&latency_summary("a <b> & \"c\" 'd'")));
        assert!(texts(&nodes).contains(&"a <b> & \"c\" 'd' (3 runs)"));
    }

    fn cost(scenario: &str, per_cpu_second: f64, us_per_push: f64) -> ScenarioCost {
        ScenarioCost {
            scenario: scenario.into(),
            pushes_per_cpu_second: spread(per_cpu_second, per_cpu_second * 0.9, per_cpu_second),
            fpush_cpu_us_per_push: spread(us_per_push, us_per_push, us_per_push * 1.1),
        }
    }

    fn two_binaries() -> Vec<(String, Vec<ScenarioCost>)> {
        vec![
            (
                "old".into(),
                vec![cost("a", 80_000.0, 12.5), cost("d", 40_000.0, 25.0)],
            ),
            ("new".into(), vec![cost("a", 120_000.0, 8.0)]),
        ]
    }

    #[test]
    fn compare_chart_names_the_binaries_scenarios_and_both_units() {
        let nodes = parse(&compare(&two_binaries()));
        assert_eq!(nodes[0].attrs["width"], "800");
        let texts = texts(&nodes);
        for expected in [
            "fpush cost per push, binaries compared",
            "old",
            "new",
            "pushes per CPU-second",
            "fpush CPU µs per push",
            "a",
            "d",
            "scenario",
        ] {
            assert!(texts.contains(&expected), "{expected} written");
        }
        let legend = nodes
            .iter()
            .filter(|n| n.attrs.get("class").map(String::as_str) == Some("legend"));
        assert_eq!(legend.count(), 2);
    }

    #[test]
    fn compare_bars_are_grouped_per_scenario_with_heights_in_proportion() {
        let nodes = parse(&compare(&two_binaries()));
        let bars = bars(&nodes);
        let tooltips: Vec<&str> = bars.iter().map(|(_, t)| *t).collect();
        assert_eq!(
            tooltips,
            [
                "old, a: 80,000 (min 72,000, max 80,000)",
                "new, a: 120,000 (min 108,000, max 120,000)",
                "old, d: 40,000 (min 36,000, max 40,000)",
                "old, a: 12.5 (min 12.5, max 13.8)",
                "new, a: 8 (min 8, max 8.8)",
                "old, d: 25 (min 25, max 27.5)",
            ]
        );
        let height = |i: usize| bars[i].0.number("height");
        assert!((height(1) / height(0) - 1.5).abs() < 0.01);
        assert!((height(2) / height(0) - 0.5).abs() < 0.01);
        assert!((height(5) / height(4) - 25.0 / 8.0).abs() < 0.01);
        // Side by side: the right panel's bars all start right of the left panel's.
        let x = |i: usize| bars[i].0.number("x");
        assert!(x(0) < x(1) && x(1) < x(2) && x(2) < x(3));
        assert_eq!(bars[0].0.attrs["fill"], COLOURS[0]);
        assert_eq!(bars[1].0.attrs["fill"], COLOURS[1]);
    }

    #[test]
    fn linear_axes_end_on_a_round_number_above_the_largest_value() {
        let Axis::Linear { max, step } = Axis::linear(114_943.0) else {
            unreachable!("linear")
        };
        assert_eq!((max, step), (120_000.0, 20_000.0));
        let Axis::Linear { max, .. } = Axis::linear(0.0) else {
            unreachable!("linear")
        };
        assert_eq!(max, 1.0);
    }

    #[test]
    fn values_are_written_with_separators_and_few_decimals() {
        assert_eq!(format_value(114_943.0), "114,943");
        assert_eq!(format_value(1_000.0), "1,000");
        assert_eq!(format_value(250.4), "250");
        assert_eq!(format_value(12.73), "12.7");
        assert_eq!(format_value(8.0), "8");
        assert_eq!(format_value(0.21), "0.21");
        assert_eq!(format_value(0.011), "0.011");
        assert_eq!(format_value(0.0), "0");
    }
}
