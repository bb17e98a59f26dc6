//! Pure exporters for engineers: CSV of a series and of KPI rows, and the
//! measured 24-hour demand pattern as an EPANET `[PATTERNS]` section.
//!
//! # CSV (RFC 4180)
//! Comma-separated, CRLF line ends, a header row; a field containing a comma,
//! a double quote, CR or LF is quoted, with inner quotes doubled. Numbers use
//! `.` for decimals (machine-readable, unlike the pages' Chilean notation)
//! and times are RFC 3339 in UTC (`2025-01-01T03:00:00Z`): a file is
//! unambiguous across the DST change. Long format (one value per row) so files
//! of several APRs concatenate.
//!
//! # EPANET pattern
//! EPANET 2 `.inp` syntax: a `[PATTERNS]` section, a `;ID  Multipliers`
//! comment header, then lines `ID m1 m2 … m6` (six multipliers per line,
//! the ID repeated on each line). The 24 multipliers are the hourly mean flow
//! divided by the daily mean flow (the mean of the 24 hourly means), so they
//! average exactly 1 and the model's base demand stays the mean demand.
//! IDs are at most 31 characters without spaces or `;` (EPANET's limits).

use std::fmt::Write as _;

/// What an export could not do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExportError {
    /// The demand pattern needs every hour of the day.
    #[error("no flow readings in local hour {0}")]
    MissingHour(u8),
    /// A local hour outside 0–23.
    #[error("local hour {0} is not in 0-23")]
    BadHour(u8),
    /// The mean flow is zero (or not finite): no pattern.
    #[error("the daily mean flow is zero")]
    NoFlow,
    /// A CSV field with an unterminated quote or text after a closing quote.
    #[error("malformed CSV at line {0}")]
    Csv(usize),
    /// An EPANET line that does not parse.
    #[error("malformed [PATTERNS] line {0}: {1}")]
    Epanet(usize, String),
}

/// Quotes one CSV field when it needs it (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_field(f));
    }
    out.push_str("\r\n");
}

fn utc(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn num(v: f64) -> String {
    if v.is_finite() {
        // Shortest representation that reads back to the same f64.
        format!("{v}")
    } else {
        String::new()
    }
}

/// The header of [`series_csv`].
pub const SERIES_CSV_HEADER: [&str; 5] = ["apr", "metric", "unit", "time_utc", "value"];

/// CSV of one series: `apr,metric,unit,time_utc,value`, one row per point
/// (NaN points, the chart's gap markers, are left out).
pub fn series_csv(apr: &str, metric: &str, unit: &str, points: &[(i64, f64)]) -> String {
    let mut out = String::with_capacity(64 + points.len() * 48);
    csv_row(&mut out, &SERIES_CSV_HEADER);
    let (apr, metric, unit) = (csv_field(apr), csv_field(metric), csv_field(unit));
    for &(t, v) in points.iter().filter(|p| p.1.is_finite()) {
        let _ = write!(out, "{apr},{metric},{unit},{},{}\r\n", utc(t), num(v));
    }
    out
}

/// One KPI value over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct KpiRecord {
    /// APR id.
    pub apr: String,
    /// APR name.
    pub apr_name: String,
    /// KPI name (`chlorine_compliance`, `min_night_flow`, …).
    pub kpi: String,
    /// Value; empty in the file when not computable.
    pub value: Option<f64>,
    /// Unit.
    pub unit: String,
    /// Window start, unix seconds.
    pub from: i64,
    /// Window end, unix seconds.
    pub to: i64,
}

/// The header of [`kpi_csv`].
pub const KPI_CSV_HEADER: [&str; 7] = [
    "apr", "apr_name", "kpi", "value", "unit", "from_utc", "to_utc",
];

/// CSV of KPI rows: `apr,apr_name,kpi,value,unit,from_utc,to_utc`.
pub fn kpi_csv(rows: &[KpiRecord]) -> String {
    let mut out = String::with_capacity(64 + rows.len() * 96);
    csv_row(&mut out, &KPI_CSV_HEADER);
    for r in rows {
        let value = r.value.map(num).unwrap_or_default();
        let (from, to) = (utc(r.from), utc(r.to));
        csv_row(
            &mut out,
            &[&r.apr, &r.apr_name, &r.kpi, &value, &r.unit, &from, &to],
        );
    }
    out
}

/// Parses RFC 4180 CSV (CRLF or LF line ends) into rows of fields.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, ExportError> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut quoted = false;
    let mut after_quote = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => {
                    quoted = false;
                    after_quote = true;
                }
                c => {
                    if c == '\n' {
                        line += 1;
                    }
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            ',' => {
                row.push(std::mem::take(&mut field));
                after_quote = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                after_quote = false;
                line += 1;
            }
            '"' if field.is_empty() && !after_quote => quoted = true,
            _ if after_quote => return Err(ExportError::Csv(line)),
            c => field.push(c),
        }
    }
    if quoted {
        return Err(ExportError::Csv(line));
    }
    if !field.is_empty() || !row.is_empty() || after_quote {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// The 24 hourly multipliers of the measured demand: the mean flow of each
/// local hour divided by the mean of the 24 hourly means. `points` are
/// `(local hour 0–23, flow)`, typically every reading of some weeks.
pub fn demand_pattern(points: &[(u8, f64)]) -> Result<[f64; 24], ExportError> {
    let mut sum = [0.0f64; 24];
    let mut n = [0u32; 24];
    for &(h, q) in points {
        if h > 23 {
            return Err(ExportError::BadHour(h));
        }
        if q.is_finite() {
            sum[usize::from(h)] += q;
            n[usize::from(h)] += 1;
        }
    }
    let mut means = [0.0f64; 24];
    for h in 0..24 {
        if n[h] == 0 {
            return Err(ExportError::MissingHour(h as u8));
        }
        means[h] = sum[h] / f64::from(n[h]);
    }
    let daily = means.iter().sum::<f64>() / 24.0;
    if !daily.is_finite() || daily <= 0.0 {
        return Err(ExportError::NoFlow);
    }
    Ok(means.map(|m| m / daily))
}

/// Makes `id` a valid EPANET ID: spaces, tabs, `;` and quotes become `_`,
/// at most 31 characters.
pub fn epanet_id(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == ';' || c == '"' {
                '_'
            } else {
                c
            }
        })
        .take(31)
        .collect();
    if clean.is_empty() {
        "1".to_string()
    } else {
        clean
    }
}

/// A `[PATTERNS]` section for `id` with `multipliers`, six per line, four
/// decimals; `comment` (one line, e.g. the APR and window) goes after the
/// header as an EPANET comment.
pub fn epanet_patterns(id: &str, comment: &str, multipliers: &[f64]) -> String {
    let id = epanet_id(id);
    let mut out = String::from("[PATTERNS]\r\n;ID              \tMultipliers\r\n");
    let comment: String = comment
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    if !comment.is_empty() {
        let _ = write!(out, ";{comment}\r\n");
    }
    for chunk in multipliers.chunks(6) {
        let _ = write!(out, "{id:<16}");
        for m in chunk {
            let _ = write!(out, "\t{m:.4}");
        }
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

/// Parses the `[PATTERNS]` section of an EPANET `.inp` text into
/// `(id, multipliers)` in order of first appearance.
pub fn parse_epanet_patterns(inp: &str) -> Result<Vec<(String, Vec<f64>)>, ExportError> {
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    let mut inside = false;
    for (i, raw) in inp.lines().enumerate() {
        let line = raw.split(';').next().unwrap_or("").trim();
        if line.starts_with('[') {
            inside = line.eq_ignore_ascii_case("[PATTERNS]");
            continue;
        }
        if !inside || line.is_empty() {
            continue;
        }
        let mut tokens = line.split_whitespace();
        let id = tokens.next().unwrap_or_default().to_string();
        let values = tokens
            .map(|t| {
                t.parse::<f64>()
                    .map_err(|_| ExportError::Epanet(i + 1, t.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        match out.iter_mut().find(|(k, _)| *k == id) {
            Some((_, v)) => v.extend(values),
            None => out.push((id, values)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_csv_round_trips_through_the_parser() {
        let points = [
            (1_735_700_400, 0.35),
            (1_735_701_300, f64::NAN),
            (1_735_702_200, 1.0 / 3.0),
        ];
        let text = series_csv("los-aromos", "chlorine", "mg/l", &points);
        let rows = parse_csv(&text).unwrap();
        assert_eq!(rows[0], SERIES_CSV_HEADER);
        assert_eq!(rows.len(), 3, "NaN gap markers are not exported");
        assert_eq!(
            rows[1],
            [
                "los-aromos",
                "chlorine",
                "mg/l",
                "2025-01-01T03:00:00Z",
                "0.35"
            ]
        );
        assert_eq!(rows[2][4].parse::<f64>().unwrap(), 1.0 / 3.0);
    }

    #[test]
    fn kpi_csv_quotes_commas_quotes_and_newlines() {
        let rows = [KpiRecord {
            apr: "a-1".into(),
            apr_name: "El \"Sauce\", sector\nnorte".into(),
            kpi: "chlorine_compliance".into(),
            value: Some(97.5),
            unit: "%".into(),
            from: 0,
            to: 86_400,
        }];
        let text = kpi_csv(&rows);
        assert!(
            text.contains("\"El \"\"Sauce\"\", sector\nnorte\""),
            "{text}"
        );
        let parsed = parse_csv(&text).unwrap();
        assert_eq!(parsed[1][1], rows[0].apr_name);
        assert_eq!(parsed[1][3], "97.5");
        assert_eq!(parsed[1][6], "1970-01-02T00:00:00Z");
        assert!(parse_csv("a,\"b\"c\r\n").is_err());
        assert!(parse_csv("a,\"b\r\n").is_err());
    }

    #[test]
    fn the_demand_pattern_averages_one_and_round_trips_through_epanet() {
        // Two days of 15-minute readings, peak at 08:00 and 20:00, low at night.
        let mut points = Vec::new();
        for _day in 0..2 {
            for q in 0..96u32 {
                let h = (q / 4) as u8;
                let flow = match h {
                    0..=5 => 0.8,
                    8 | 20 => 3.6,
                    _ => 2.0,
                };
                points.push((h, flow));
            }
        }
        let m = demand_pattern(&points).unwrap();
        let mean = m.iter().sum::<f64>() / 24.0;
        assert!((mean - 1.0).abs() < 1e-12);
        assert!(m[8] > 1.5 && m[3] < 0.5);
        let text = epanet_patterns("APR los aromos", "Los Aromos; 01-01-2025 a 31-01-2025", &m);
        assert!(text.starts_with("[PATTERNS]\r\n;ID"));
        let inp = format!("[TITLE]\r\nx\r\n{text}[END]\r\n");
        let parsed = parse_epanet_patterns(&inp).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, "APR_los_aromos");
        assert_eq!(parsed[0].1.len(), 24);
        for (a, b) in parsed[0].1.iter().zip(m.iter()) {
            assert!((a - b).abs() < 5e-5, "{a} vs {b}");
        }
        assert_eq!(
            text.lines().filter(|l| l.starts_with("APR_")).count(),
            4,
            "six per line"
        );
    }

    #[test]
    fn the_demand_pattern_needs_every_hour_and_some_flow() {
        let points: Vec<(u8, f64)> = (0..23).map(|h| (h, 1.0)).collect();
        assert_eq!(demand_pattern(&points), Err(ExportError::MissingHour(23)));
        let zeros: Vec<(u8, f64)> = (0..24).map(|h| (h, 0.0)).collect();
        assert_eq!(demand_pattern(&zeros), Err(ExportError::NoFlow));
        assert_eq!(demand_pattern(&[(24, 1.0)]), Err(ExportError::BadHour(24)));
        assert!(parse_epanet_patterns("[PATTERNS]\n1 0.5 x\n").is_err());
    }
}
