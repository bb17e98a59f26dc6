//! The engineer's pages: every APR with KPIs and flags (sorted on the
//! server through query links), and one APR's assessment, KPI history,
//! series explorer and exports.

use std::cmp::Ordering;

use askama::Template;

use super::{chart_svg, flag_views, html, quantity_label, FlagView, Frame};
use crate::format;
use crate::i18n::Tr;
use crate::model::{AprKpiRow, EngineerAprPage, EngineerOverview, Layout, SortKey};

/// `rows` in the order of `key` (ties by name); values that are missing
/// sort last in either direction.
pub fn sort_rows(rows: &[AprKpiRow], key: SortKey, descending: bool) -> Vec<&AprKpiRow> {
    fn opt(a: Option<f64>, b: Option<f64>, desc: bool) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) => {
                let o = a.partial_cmp(&b).unwrap_or(Ordering::Equal);
                if desc {
                    o.reverse()
                } else {
                    o
                }
            }
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
    fn dir(o: Ordering, desc: bool) -> Ordering {
        if desc {
            o.reverse()
        } else {
            o
        }
    }
    let name = |r: &AprKpiRow| r.apr.name.to_lowercase();
    let mut out: Vec<&AprKpiRow> = rows.iter().collect();
    out.sort_by(|a, b| {
        let primary = match key {
            SortKey::Name => dir(name(a).cmp(&name(b)), descending),
            SortKey::Comuna => dir(
                a.apr
                    .comuna
                    .to_lowercase()
                    .cmp(&b.apr.comuna.to_lowercase()),
                descending,
            ),
            SortKey::Region => dir(
                a.apr
                    .region
                    .to_lowercase()
                    .cmp(&b.apr.region.to_lowercase()),
                descending,
            ),
            SortKey::Beneficiaries => dir(a.beneficiaries.cmp(&b.beneficiaries), descending),
            SortKey::ChlorineCompliance => opt(
                a.chlorine_compliance_pct,
                b.chlorine_compliance_pct,
                descending,
            ),
            SortKey::NightFlow => opt(a.min_night_flow_l_s, b.min_night_flow_l_s, descending),
            SortKey::Nrw => opt(a.nrw_l_conn_day, b.nrw_l_conn_day, descending),
            SortKey::Continuity => opt(a.continuity_h_day, b.continuity_h_day, descending),
            SortKey::OpenAlerts => dir(a.open_alerts.cmp(&b.open_alerts), descending),
            SortKey::Flags => dir(a.flags.count().cmp(&b.flags.count()), descending),
        };
        primary.then_with(|| name(a).cmp(&name(b)))
    });
    out
}

pub(crate) struct Header {
    label_id: &'static str,
    href: String,
    aria_sort: Option<&'static str>,
    ascending: bool,
    numeric: bool,
}

pub(crate) struct OverviewRow<'a> {
    row: &'a AprKpiRow,
    flags: Vec<FlagView>,
}

#[derive(Template)]
#[template(path = "engineer.html")]
struct OverviewTpl<'a> {
    f: Frame<'a>,
    t: Tr,
    p: &'a EngineerOverview,
    headers: Vec<Header>,
    rows: Vec<OverviewRow<'a>>,
}

/// The engineer's table of every APR, sorted by `page.sort`; each column
/// header links to `?sort=…&dir=…` (the current column toggles direction).
pub fn render_engineer_overview(layout: &Layout, page: &EngineerOverview) -> String {
    let t = Tr::new(layout.lang);
    let headers = SortKey::ALL
        .iter()
        .map(|k| {
            let current = *k == page.sort;
            let desc_next = if current { !page.descending } else { false };
            Header {
                label_id: k.message_id(),
                href: format!(
                    "{}?sort={}&dir={}",
                    page.base_url,
                    k.as_str(),
                    if desc_next { "desc" } else { "asc" }
                ),
                aria_sort: current.then_some(if page.descending {
                    "descending"
                } else {
                    "ascending"
                }),
                ascending: !page.descending,
                numeric: !matches!(
                    k,
                    SortKey::Name | SortKey::Comuna | SortKey::Region | SortKey::Flags
                ),
            }
        })
        .collect();
    let rows = sort_rows(&page.rows, page.sort, page.descending)
        .into_iter()
        .map(|row| OverviewRow {
            row,
            flags: flag_views(&t, &row.flags),
        })
        .collect();
    html(&OverviewTpl {
        f: Frame::new(layout),
        t,
        p: page,
        headers,
        rows,
    })
}

pub(crate) struct MetricOption {
    value: &'static str,
    label: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "engineer_apr.html")]
struct AprTpl<'a> {
    f: Frame<'a>,
    t: Tr,
    p: &'a EngineerAprPage,
    kpi_charts: Vec<String>,
    metric_options: Vec<MetricOption>,
    explorer_from: String,
    explorer_to: String,
    explorer_chart: String,
    explorer_caption: String,
}

/// One APR for the engineer: KPIs, the assessment with its evidence, KPI
/// history charts, the series explorer (downsampled to the chart's pixel
/// columns, so a year of 1-minute data draws in milliseconds) and export links.
pub fn render_engineer_apr(layout: &Layout, page: &EngineerAprPage) -> String {
    let t = Tr::new(layout.lang);
    let kpi_charts = page
        .kpi_charts
        .iter()
        .enumerate()
        .map(|(i, c)| chart_svg(&t, &format!("k{i}"), c, (600, 200), "").svg)
        .collect();
    let ex = &page.explorer;
    let rendered = chart_svg(&t, "ex", &ex.chart, (800, 300), "");
    let explorer_caption = t.tn(
        "explorer-caption",
        &[
            (
                "raw",
                format::int(i64::try_from(ex.raw_points).unwrap_or(i64::MAX)),
            ),
            ("drawn", format::int(rendered.points_drawn as i64)),
        ],
    );
    let metric_options = ex
        .metrics
        .iter()
        .map(|m| MetricOption {
            value: m.as_str(),
            label: quantity_label(&t, m.as_str()),
            selected: *m == ex.metric,
        })
        .collect();
    html(&AprTpl {
        f: Frame::new(layout),
        t,
        p: page,
        kpi_charts,
        metric_options,
        explorer_from: format::datetime_input(&ex.from),
        explorer_to: format::datetime_input(&ex.to),
        explorer_chart: rendered.svg,
        explorer_caption,
    })
}
