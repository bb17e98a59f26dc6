//! The GORE page and its printable report (same body; the report has no
//! header or forms, and the stylesheet's print rules lay it out on A4).

use askama::Template;

use super::{chart_svg, flag_views, html, quantity_label, FlagView, Frame};
use crate::format;
use crate::i18n::Tr;
use crate::model::{Component, GoreAprRow, GorePage, InterventionView, Layout};

pub(crate) struct GoreRow<'a> {
    row: &'a GoreAprRow,
    flags: Vec<FlagView>,
}

pub(crate) struct OutcomeView {
    label: String,
    before: String,
    after: String,
    change: String,
    class: &'static str,
}

pub(crate) struct InterventionHtml<'a> {
    v: &'a InterventionView,
    outcomes: Vec<OutcomeView>,
    chart: Option<String>,
}

#[derive(Template)]
#[template(path = "gore.html")]
struct GoreTpl<'a> {
    f: Frame<'a>,
    t: Tr,
    p: &'a GorePage,
    flagged: Vec<(String, u64)>,
    rows: Vec<GoreRow<'a>>,
    interventions: Vec<InterventionHtml<'a>>,
}

#[derive(Template)]
#[template(path = "gore_report.html")]
struct GoreReportTpl<'a> {
    f: Frame<'a>,
    t: Tr,
    p: &'a GorePage,
    flagged: Vec<(String, u64)>,
    rows: Vec<GoreRow<'a>>,
    interventions: Vec<InterventionHtml<'a>>,
}

type Prepared<'a> = (
    Vec<(String, u64)>,
    Vec<GoreRow<'a>>,
    Vec<InterventionHtml<'a>>,
);

fn prepare<'a>(t: &Tr, page: &'a GorePage) -> Prepared<'a> {
    let flagged = Component::ALL
        .iter()
        .zip(page.summary.flagged)
        .map(|(c, n)| (t.t(c.message_id()), n))
        .collect();
    let rows = page
        .aprs
        .iter()
        .map(|row| GoreRow {
            row,
            flags: flag_views(t, &row.flags),
        })
        .collect();
    let interventions = page
        .interventions
        .iter()
        .enumerate()
        .map(|(i, v)| InterventionHtml {
            v,
            outcomes: v
                .outcomes
                .iter()
                .map(|o| {
                    let (change, class) = match o.improved() {
                        Some(true) => (t.t("outcome-better"), "better"),
                        Some(false) => (t.t("outcome-worse"), "worse"),
                        None => (t.t("outcome-same"), ""),
                    };
                    let show = |x: Option<f64>| {
                        x.map(|x| {
                            format!("{} {}", format::dec(x, 2), o.unit)
                                .trim_end()
                                .to_string()
                        })
                        .unwrap_or_else(|| "—".into())
                    };
                    OutcomeView {
                        label: quantity_label(t, &o.kpi),
                        before: show(o.before),
                        after: show(o.after),
                        change,
                        class,
                    }
                })
                .collect(),
            chart: v
                .chart
                .as_ref()
                .map(|c| chart_svg(t, &format!("iv{i}"), c, (480, 160), &v.apr.name).svg),
        })
        .collect();
    (flagged, rows, interventions)
}

/// The GORE reviewer's page: the region's (or, for admins, the
/// programme's) figures, flagged components, APRs, and interventions with
/// before/after outcomes and small charts.
pub fn render_gore(layout: &Layout, page: &GorePage) -> String {
    let t = Tr::new(layout.lang);
    let (flagged, rows, interventions) = prepare(&t, page);
    html(&GoreTpl {
        f: Frame::new(layout),
        t,
        p: page,
        flagged,
        rows,
        interventions,
    })
}

/// The printable report: the same content without navigation or forms,
/// for the browser's "print to PDF".
pub fn render_gore_report(layout: &Layout, page: &GorePage) -> String {
    let t = Tr::new(layout.lang);
    let (flagged, rows, interventions) = prepare(&t, page);
    html(&GoreReportTpl {
        f: Frame::new(layout),
        t,
        p: page,
        flagged,
        rows,
        interventions,
    })
}
