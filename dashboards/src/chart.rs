//! A small SVG time-series renderer, drawn on the server so a phone on a weak
//! link gets a few kilobytes of vector graphics and no charting script.
//!
//! # What it draws
//! Line charts over a time window: axes with "nice" ticks (values in steps of
//! 1, 2 or 5 × 10ⁿ; times in minutes, hours, days, months or years aligned
//! to local time), a shaded acceptable band (e.g. chlorine 0.2–2.0 mg/L),
//! dashed threshold lines, several series with a legend, and gaps as breaks
//! in the line. The `<svg>` carries `role="img"` with a `<title>` and a
//! `<desc>` (the caller writes both through the message catalogue: this
//! module has no words of its own) and is sized by its `viewBox`, so CSS
//! makes it as wide as the screen.
//!
//! # Gaps
//! A series breaks where a value is NaN, and where two consecutive points are
//! further apart than `max_gap_s` (default: three times the median interval
//! of the series), so a device that was offline for a day shows a hole, not a
//! straight line across it.
//!
//! # Downsampling
//! Each unbroken run is reduced by min/max per pixel column: for every column
//! of the plot the lowest and the highest point (in time order) are kept, so
//! no spike disappears and at most two points per column reach the SVG. A
//! year of 1-minute data (525,600 points) in an 800-px chart becomes at most
//! ~1,500 points in one linear pass; see `benches/chart.rs`.
//!
//! Coordinates are written with one decimal, which is below a pixel at any
//! reasonable zoom and keeps the markup small.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate};

/// One series to draw.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Legend text (escaped here).
    pub name: &'a str,
    /// `(unix seconds, value)` in time order; NaN marks a gap.
    pub points: &'a [(i64, f64)],
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct ChartSpec<'a> {
    /// A prefix for element ids, unique within the page (`c0`, `c1` …).
    pub id: &'a str,
    /// `viewBox` width in px (the drawing is scaled by CSS).
    pub width: u32,
    /// `viewBox` height in px.
    pub height: u32,
    /// Accessible title (escaped here).
    pub title: &'a str,
    /// Accessible description (escaped here).
    pub desc: &'a str,
    /// Unit, written above the value axis (escaped here).
    pub unit: &'a str,
    /// Series.
    pub series: Vec<Series<'a>>,
    /// The time window `[from, to]`, unix seconds; points outside are left out.
    pub from: i64,
    /// End of the window.
    pub to: i64,
    /// Local time's offset from UTC, seconds, for tick placement and labels.
    pub utc_offset_s: i32,
    /// Shaded acceptable band `(low, high)`.
    pub band: Option<(f64, f64)>,
    /// Dashed threshold lines.
    pub thresholds: &'a [f64],
    /// Break a line where points are further apart than this (seconds);
    /// `None`: three times the series' median interval.
    pub max_gap_s: Option<i64>,
    /// Text drawn in the middle when there is nothing to draw (escaped here).
    pub empty_text: &'a str,
}

impl<'a> ChartSpec<'a> {
    /// An 800 × 260 chart of `series` over `[from, to]`, no band, no thresholds.
    pub fn new(id: &'a str, title: &'a str, series: Vec<Series<'a>>, from: i64, to: i64) -> Self {
        ChartSpec {
            id,
            width: 800,
            height: 260,
            title,
            desc: "",
            unit: "",
            series,
            from,
            to,
            utc_offset_s: 0,
            band: None,
            thresholds: &[],
            max_gap_s: None,
            empty_text: "",
        }
    }
}

/// A rendered chart.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedChart {
    /// The `<svg>` element.
    pub svg: String,
    /// Points that reached the SVG, all series together.
    pub points_drawn: usize,
    /// Plot width in px: the number of pixel columns.
    pub columns: usize,
}

/// Colour-blind-safe series colours (Okabe–Ito).
const PALETTE: [&str; 4] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7"];
const MARGIN_LEFT: f64 = 46.0;
const MARGIN_RIGHT: f64 = 10.0;
const MARGIN_TOP: f64 = 22.0;
const MARGIN_BOTTOM: f64 = 22.0;

/// Escapes text for SVG/HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

/// The median interval between consecutive points, from up to 4,096
/// intervals spread over the series; `None` with fewer than two points.
pub fn median_interval(points: &[(i64, f64)]) -> Option<i64> {
    if points.len() < 2 {
        return None;
    }
    let intervals = points.len() - 1;
    let stride = intervals.div_ceil(4096).max(1);
    let mut dts: Vec<i64> = (0..intervals)
        .step_by(stride)
        .map(|i| points[i + 1].0 - points[i].0)
        .collect();
    let mid = dts.len() / 2;
    Some(*dts.select_nth_unstable(mid).1)
}

/// Splits `points` into unbroken runs: a run ends before a NaN (which is
/// dropped) and between points more than `max_gap_s` apart.
pub fn split_gaps(points: &[(i64, f64)], max_gap_s: i64) -> Vec<&[(i64, f64)]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 0..points.len() {
        if points[i].1.is_nan() {
            if start < i {
                runs.push(&points[start..i]);
            }
            start = i + 1;
        } else if i > start && points[i].0 - points[i - 1].0 > max_gap_s {
            runs.push(&points[start..i]);
            start = i;
        }
    }
    if start < points.len() {
        runs.push(&points[start..]);
    }
    runs
}

/// Min/max downsampling of one unbroken run into `columns` pixel columns
/// over `[from, to]`: per column, the lowest and the highest point, in time
/// order (one point where they coincide). Points outside the window are
/// left out. The result has at most `2 × columns` points and keeps the run's
/// extremes exactly.
pub fn downsample_min_max(
    points: &[(i64, f64)],
    from: i64,
    to: i64,
    columns: usize,
) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    downsample_into(points, from, to, columns, &mut out);
    out
}

fn downsample_into(
    points: &[(i64, f64)],
    from: i64,
    to: i64,
    columns: usize,
    out: &mut Vec<(i64, f64)>,
) {
    if columns == 0 || to <= from {
        return;
    }
    // Fewer points than columns: nothing to reduce.
    let lo = points.partition_point(|p| p.0 < from);
    let hi = points.partition_point(|p| p.0 <= to);
    let points = &points[lo..hi.max(lo)];
    if points.len() <= 2 * columns {
        out.extend(points.iter().filter(|p| !p.1.is_nan()));
        return;
    }
    let scale = columns as f64 / (to - from) as f64;
    let last_col = columns - 1;
    let column_of = |t: i64| (((t - from) as f64 * scale) as usize).min(last_col);
    let mut col = usize::MAX;
    let mut min = (0i64, f64::INFINITY);
    let mut max = (0i64, f64::NEG_INFINITY);
    let flush = |min: (i64, f64), max: (i64, f64), out: &mut Vec<(i64, f64)>| {
        if min.0 == max.0 {
            out.push(min);
        } else if min.0 < max.0 {
            out.push(min);
            out.push(max);
        } else {
            out.push(max);
            out.push(min);
        }
    };
    for &(t, v) in points {
        if v.is_nan() {
            continue;
        }
        let c = column_of(t);
        if c != col {
            if col != usize::MAX {
                flush(min, max, out);
            }
            col = c;
            min = (t, v);
            max = (t, v);
        } else {
            if v < min.1 {
                min = (t, v);
            }
            if v > max.1 {
                max = (t, v);
            }
        }
    }
    if col != usize::MAX {
        flush(min, max, out);
    }
}

/// "Nice" value ticks covering `[lo, hi]`: a step of 1, 2 or 5 × 10ⁿ giving
/// at most `max_ticks` intervals; returns the step and the ticks from the
/// multiple of the step at or below `lo` to the one at or above `hi`.
pub fn nice_ticks(lo: f64, hi: f64, max_ticks: usize) -> (f64, Vec<f64>) {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let raw = (hi - lo) / max_ticks.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    let first = (lo / step).floor();
    let last = (hi / step).ceil();
    let ticks = (first as i64..=last as i64)
        .map(|k| k as f64 * step)
        .collect();
    (step, ticks)
}

/// How a time tick is labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeUnit {
    Minutes,
    Days,
    Months,
    Years,
}

/// Time ticks in `[from, to]` aligned to local time (`utc_offset_s`), at
/// most `max_ticks` of them, with their labels: `HH:MM` (a local midnight as
/// `dd-mm`), `dd-mm`, `mm-yyyy` or `yyyy`.
pub fn time_ticks(from: i64, to: i64, utc_offset_s: i32, max_ticks: usize) -> Vec<(i64, String)> {
    const M: i64 = 60;
    const H: i64 = 3600;
    const D: i64 = 86_400;
    let span = (to - from).max(1);
    let max_ticks = max_ticks.max(2) as i64;
    let off = i64::from(utc_offset_s);
    let fixed = [
        M,
        5 * M,
        15 * M,
        30 * M,
        H,
        2 * H,
        3 * H,
        6 * H,
        12 * H,
        D,
        2 * D,
        7 * D,
        14 * D,
    ];
    if let Some(&step) = fixed.iter().find(|s| span / **s <= max_ticks) {
        let unit = if step < D {
            TimeUnit::Minutes
        } else {
            TimeUnit::Days
        };
        let mut t = (from + off).div_euclid(step) * step;
        if step == 7 * D || step == 14 * D {
            t = (from + off).div_euclid(D) * D;
        }
        let mut ticks = Vec::new();
        while t - off <= to {
            if t - off >= from {
                ticks.push((t - off, label(t, unit)));
            }
            t += step;
        }
        return ticks;
    }
    // Months and years: calendar steps.
    let months = [1u32, 2, 3, 6, 12, 24, 60, 120]
        .into_iter()
        .find(|m| span / (i64::from(*m) * 30 * D) < max_ticks)
        .unwrap_or(120);
    let unit = if months >= 12 {
        TimeUnit::Years
    } else {
        TimeUnit::Months
    };
    let start = local_date(from + off);
    let mut y = start.year();
    let mut m0 = start.month0();
    m0 -= m0 % months.min(12);
    if months >= 12 {
        y -= y.rem_euclid(months as i32 / 12);
    }
    let mut ticks = Vec::new();
    while let Some(d) = NaiveDate::from_ymd_opt(y, m0 + 1, 1) {
        let local = d
            .and_hms_opt(0, 0, 0)
            .map(|x| x.and_utc().timestamp())
            .unwrap_or(i64::MAX);
        if local - off > to {
            break;
        }
        if local - off >= from {
            ticks.push((local - off, label(local, unit)));
        }
        let next = m0 + months;
        y += (next / 12) as i32;
        m0 = next % 12;
    }
    ticks
}

fn local_date(local_secs: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp(local_secs, 0)
        .map(|d| d.date_naive())
        .unwrap_or_default()
}

fn label(local_secs: i64, unit: TimeUnit) -> String {
    let Some(d) = chrono::DateTime::from_timestamp(local_secs, 0) else {
        return String::new();
    };
    let fmt = match unit {
        TimeUnit::Minutes if local_secs.rem_euclid(86_400) == 0 => "%d-%m",
        TimeUnit::Minutes => "%H:%M",
        TimeUnit::Days => "%d-%m",
        TimeUnit::Months => "%m-%Y",
        TimeUnit::Years => "%Y",
    };
    d.format(fmt).to_string()
}

fn tenths(v: f64) -> i64 {
    (v * 10.0).round() as i64
}

/// Writes `v` tenths as a compact SVG number: `12.3`, `-.5`, `4`.
fn push_tenths(s: &mut String, v: i64) {
    if v < 0 {
        s.push('-');
    }
    let (int, frac) = (v.unsigned_abs() / 10, v.unsigned_abs() % 10);
    if int > 0 || frac == 0 {
        let _ = write!(s, "{int}");
    }
    if frac > 0 {
        let _ = write!(s, ".{frac}");
    }
}

/// Writes a separator (none before a minus sign) and `v` tenths.
fn push_sep_tenths(s: &mut String, v: i64) {
    if v >= 0 {
        s.push(' ');
    }
    push_tenths(s, v);
}

/// A value label in Chilean notation with as many decimals as the step needs.
fn value_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    crate::format::dec(v, decimals)
}

/// Renders `spec` as an `<svg>` element.
pub fn render(spec: &ChartSpec) -> RenderedChart {
    let w = f64::from(spec.width.max(120));
    let h = f64::from(spec.height.max(80));
    let plot_w = w - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = h - MARGIN_TOP - MARGIN_BOTTOM;
    let columns = plot_w.floor() as usize;
    let (from, to) = (spec.from, spec.to.max(spec.from + 1));

    // 1. Break and reduce every series.
    let mut runs: Vec<Vec<Vec<(i64, f64)>>> = Vec::with_capacity(spec.series.len());
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut points_drawn = 0;
    for s in &spec.series {
        let gap = spec
            .max_gap_s
            .or_else(|| median_interval(s.points).map(|m| 3 * m.max(1)))
            .unwrap_or(i64::MAX);
        let mut series_runs = Vec::new();
        for run in split_gaps(s.points, gap) {
            let mut out = Vec::new();
            downsample_into(run, from, to, columns, &mut out);
            for p in &out {
                lo = lo.min(p.1);
                hi = hi.max(p.1);
            }
            points_drawn += out.len();
            if !out.is_empty() {
                series_runs.push(out);
            }
        }
        runs.push(series_runs);
    }
    let has_data = points_drawn > 0;
    for v in spec
        .thresholds
        .iter()
        .copied()
        .chain(spec.band.into_iter().flat_map(|(a, b)| [a, b]))
    {
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let max_y_ticks = ((plot_h / 28.0) as usize).max(2);
    let (step, yticks) = nice_ticks(lo, hi, max_y_ticks);
    let y0 = *yticks.first().unwrap_or(&lo);
    let y1 = yticks
        .last()
        .copied()
        .filter(|v| *v > y0)
        .unwrap_or(y0 + 1.0);

    let x_of = |t: i64| MARGIN_LEFT + (t - from) as f64 * plot_w / (to - from) as f64;
    let y_of = |v: f64| MARGIN_TOP + plot_h - (v - y0) * plot_h / (y1 - y0);

    // 2. Write.
    let mut s = String::with_capacity(2048 + points_drawn * 12);
    let id = escape(spec.id);
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="{id}-t {id}-d" font-size="11" font-family="sans-serif"><title id="{id}-t">{}</title><desc id="{id}-d">{}</desc>"#,
        escape(spec.title),
        escape(spec.desc),
    );
    let (px0, px1, py0, py1) = (
        MARGIN_LEFT,
        MARGIN_LEFT + plot_w,
        MARGIN_TOP,
        MARGIN_TOP + plot_h,
    );
    if let Some((a, b)) = spec.band {
        let (ya, yb) = (
            y_of(a.min(b)).clamp(py0, py1),
            y_of(a.max(b)).clamp(py0, py1),
        );
        let _ = write!(
            s,
            r##"<rect x="{px0:.1}" y="{yb:.1}" width="{plot_w:.1}" height="{:.1}" fill="#009E73" fill-opacity=".13"/>"##,
            ya - yb
        );
    }
    // Value grid and labels.
    s.push_str(r##"<g stroke="#ddd">"##);
    for v in &yticks {
        let y = y_of(*v);
        let _ = write!(s, r#"<path d="M{px0:.1} {y:.1}H{px1:.1}"/>"#);
    }
    s.push_str(r##"</g><g fill="#444" text-anchor="end">"##);
    for v in &yticks {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            px0 - 4.0,
            y_of(*v) + 4.0,
            value_label(*v, step)
        );
    }
    s.push_str("</g>");
    if !spec.unit.is_empty() {
        let _ = write!(
            s,
            r##"<text x="4" y="12" fill="#444">{}</text>"##,
            escape(spec.unit)
        );
    }
    // Time ticks.
    let max_x_ticks = ((plot_w / 64.0) as usize).max(2);
    let xticks = time_ticks(from, to, spec.utc_offset_s, max_x_ticks);
    s.push_str(r##"<g stroke="#bbb">"##);
    for (t, _) in &xticks {
        let x = x_of(*t);
        let _ = write!(s, r#"<path d="M{x:.1} {py1:.1}v4"/>"#);
    }
    s.push_str(r##"</g><g fill="#444" text-anchor="middle">"##);
    for (t, text) in &xticks {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{text}</text>"#,
            x_of(*t),
            py1 + 16.0
        );
    }
    let _ = write!(
        s,
        r##"</g><path d="M{px0:.1} {py0:.1}V{py1:.1}H{px1:.1}" fill="none" stroke="#888"/>"##
    );
    // Thresholds.
    for v in spec.thresholds.iter().filter(|v| v.is_finite()) {
        let y = y_of(*v);
        let _ = write!(
            s,
            r##"<path d="M{px0:.1} {y:.1}H{px1:.1}" stroke="#b00" stroke-dasharray="5 4"/>"##
        );
    }
    // Series.
    for (i, series_runs) in runs.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let _ = write!(
            s,
            r#"<path fill="none" stroke="{colour}" stroke-width="1.5" stroke-linejoin="round" stroke-linecap="round" d=""#
        );
        // Absolute start of each run, then relative moves in tenths of a
        // pixel computed between rounded absolute positions (no drift).
        for run in series_runs {
            let (mut px, mut py) = (0i64, 0i64);
            for (k, (t, v)) in run.iter().enumerate() {
                let (x, y) = (tenths(x_of(*t)), tenths(y_of(*v)));
                if k == 0 {
                    s.push('M');
                    push_tenths(&mut s, x);
                    push_sep_tenths(&mut s, y);
                    s.push('l');
                } else {
                    if k > 1 {
                        push_sep_tenths(&mut s, x - px);
                    } else {
                        push_tenths(&mut s, x - px);
                    }
                    push_sep_tenths(&mut s, y - py);
                }
                (px, py) = (x, y);
            }
            if run.len() == 1 {
                s.push('0');
                s.push(' ');
                s.push('0');
            }
        }
        s.push_str(r#""/>"#);
    }
    // Legend, when more than one series.
    if spec.series.len() > 1 {
        let mut x = px0;
        for (i, series) in spec.series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let _ = write!(
                s,
                r#"<path d="M{x:.1} 10h14" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="14">{}</text>"#,
                x + 18.0,
                escape(series.name)
            );
            x += 30.0 + 6.5 * series.name.chars().count() as f64;
        }
    }
    if !has_data && !spec.empty_text.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666">{}</text>"##,
            px0 + plot_w / 2.0,
            py0 + plot_h / 2.0,
            escape(spec.empty_text)
        );
    }
    s.push_str("</svg>");
    RenderedChart {
        svg: s,
        points_drawn,
        columns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute_series(n: usize) -> Vec<(i64, f64)> {
        (0..n)
            .map(|i| {
                let t = 1_704_067_200 + 60 * i as i64;
                (t, 1.0 + (i as f64 / 300.0).sin() * 0.5)
            })
            .collect()
    }

    #[test]
    fn downsampling_keeps_the_extremes_and_at_most_two_points_per_column() {
        let mut pts = minute_series(525_600);
        pts[123_457].1 = 9.75; // a spike
        pts[400_001].1 = -3.5; // a dip
        let (from, to) = (pts[0].0, pts[pts.len() - 1].0);
        let out = downsample_min_max(&pts, from, to, 744);
        assert!(out.len() <= 2 * 744, "{} points", out.len());
        assert!(out.contains(&pts[123_457]), "spike lost");
        assert!(out.contains(&pts[400_001]), "dip lost");
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "not in time order");
        let (lo, hi) = out
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1), h.max(p.1)));
        assert_eq!((lo, hi), (-3.5, 9.75));
    }

    #[test]
    fn short_series_are_drawn_point_for_point() {
        let pts = minute_series(100);
        assert_eq!(downsample_min_max(&pts, pts[0].0, pts[99].0, 700), pts);
    }

    #[test]
    fn gaps_and_nan_break_the_line() {
        let mut pts = minute_series(10);
        pts[3].1 = f64::NAN;
        pts[7].0 += 3600; // an hour of silence before point 7
        for p in pts.iter_mut().skip(8) {
            p.0 += 3600;
        }
        let runs = split_gaps(&pts, 180);
        let lens: Vec<usize> = runs.iter().map(|r| r.len()).collect();
        assert_eq!(lens, vec![3, 3, 3]);
        let spec = ChartSpec::new(
            "g",
            "gaps",
            vec![Series {
                name: "x",
                points: &pts,
            }],
            pts[0].0,
            pts[9].0,
        );
        let svg = render(&spec).svg;
        let series_path = svg.split("stroke-linecap=\"round\" d=\"").nth(1).unwrap();
        let d = series_path.split('"').next().unwrap();
        assert_eq!(d.matches('M').count(), 3, "three runs in {d}");
    }

    /// Absolute positions of a series path written by `render`.
    fn path_points(d: &str) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for sub in d.split('M').filter(|x| !x.is_empty()) {
            let (start, rel) = sub.split_once('l').unwrap();
            let nums = |t: &str| -> Vec<f64> {
                let t = t.replace('-', " -");
                t.split_whitespace()
                    .map(|n| n.parse::<f64>().unwrap())
                    .collect()
            };
            let st = nums(start);
            let (mut x, mut y) = (st[0], st[1]);
            out.push((x, y));
            for pair in nums(rel).chunks(2) {
                x += pair[0];
                y += pair[1];
                out.push((x, y));
            }
        }
        out
    }

    #[test]
    fn relative_path_coordinates_do_not_drift() {
        let pts: Vec<(i64, f64)> = (0..5000)
            .map(|i| (i * 60, ((i * 37) % 101) as f64 / 7.0))
            .collect();
        let spec = ChartSpec::new(
            "d",
            "drift",
            vec![Series {
                name: "x",
                points: &pts,
            }],
            0,
            4999 * 60,
        );
        let svg = render(&spec).svg;
        let d = svg
            .split("stroke-linecap=\"round\" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let drawn = path_points(d);
        let plot_w = 800.0 - MARGIN_LEFT - MARGIN_RIGHT;
        let expected = downsample_min_max(&pts, 0, 4999 * 60, plot_w as usize);
        assert_eq!(drawn.len(), expected.len());
        for (d, e) in drawn.iter().zip(&expected) {
            let x = MARGIN_LEFT + e.0 as f64 * plot_w / (4999.0 * 60.0);
            assert!((d.0 - x).abs() < 0.051, "drawn x {} vs {x}", d.0);
        }
        assert!(drawn
            .iter()
            .all(|p| p.1 >= MARGIN_TOP - 0.05 && p.1 <= 260.0 - MARGIN_BOTTOM + 0.05));
        let mut s = String::new();
        for v in [123, -5, 0, 10, -120, 7] {
            push_sep_tenths(&mut s, v);
        }
        assert_eq!(s, " 12.3-.5 0 1-12 .7");
    }

    #[test]
    fn value_ticks_are_round_numbers_covering_the_range() {
        let (step, ticks) = nice_ticks(0.13, 2.4, 5);
        assert_eq!(step, 0.5);
        assert_eq!(ticks.first().copied(), Some(0.0));
        assert_eq!(ticks.last().copied(), Some(2.5));
    }

    #[test]
    fn time_ticks_follow_local_hours_days_and_months() {
        let off = -3 * 3600;
        // 2025-01-01 00:00 local = 03:00 UTC.
        let t0 = 1_735_700_400;
        let day = time_ticks(t0, t0 + 86_400, off, 8);
        assert_eq!(day.first().map(|t| t.1.as_str()), Some("01-01"));
        assert_eq!(day.get(1).map(|t| t.1.as_str()), Some("03:00"));
        let week = time_ticks(t0, t0 + 7 * 86_400, off, 10);
        assert_eq!(
            week.iter().map(|t| t.1.as_str()).collect::<Vec<_>>()[..3],
            ["01-01", "02-01", "03-01"]
        );
        let year = time_ticks(t0, t0 + 365 * 86_400, off, 11);
        assert!(year.iter().any(|t| t.1 == "03-2025"), "{year:?}");
        assert!(year
            .iter()
            .all(|(t, _)| (t + i64::from(off)).rem_euclid(86_400) == 0));
    }

    #[test]
    fn labels_and_titles_are_escaped() {
        let pts = minute_series(5);
        let mut spec = ChartSpec::new(
            "x\"",
            "<script>alert(1)</script>",
            vec![
                Series {
                    name: "<b>",
                    points: &pts,
                },
                Series {
                    name: "b&c",
                    points: &pts,
                },
            ],
            pts[0].0,
            pts[4].0,
        );
        spec.unit = "<u>";
        let svg = render(&spec).svg;
        assert!(!svg.contains("<script>") && !svg.contains("<b>") && !svg.contains("<u>"));
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(svg.contains("b&amp;c"));
    }

    #[test]
    fn a_band_and_thresholds_are_drawn_and_included_in_the_range() {
        let pts: Vec<(i64, f64)> = (0..50).map(|i| (i * 900, 0.5)).collect();
        let mut spec = ChartSpec::new(
            "b",
            "cloro",
            vec![Series {
                name: "caseta",
                points: &pts,
            }],
            0,
            49 * 900,
        );
        spec.band = Some((0.2, 2.0));
        spec.thresholds = &[0.2, 2.0];
        let svg = render(&spec).svg;
        assert!(svg.contains("fill-opacity=\".13\""));
        assert_eq!(svg.matches("stroke-dasharray").count(), 2);
        assert!(
            svg.contains(">2,0<") || svg.contains(">2<"),
            "2.0 is on the scale"
        );
    }
}
