//! The operator's page and its live alert-list fragment.

use askama::Template;

use super::{chart_svg, html, Frame};
use crate::format;
use crate::i18n::{Lang, Tr};
use crate::model::{AlertList, Layout, Limits, Metric, OperatorPage, Reading};

/// The live-refresh script (vanilla, < 2 KB): subscribes to the
/// `data-events` EventSource of `#alerts` and, on any event, fetches
/// `data-fragment` and swaps the list in, unless the operator is typing a
/// comment there (then it refreshes when the focus leaves). No URL is
/// interpolated into the script: both come from escaped `data-` attributes.
pub const LIVE_ALERTS_JS: &str = r#"(function(){var s=document.getElementById("alerts");if(!s||!window.EventSource||!window.fetch)return;var busy=false,pending=false;function refresh(){if(busy)return;if(s.contains(document.activeElement)){pending=true;return}busy=true;fetch(s.getAttribute("data-fragment"),{credentials:"same-origin",headers:{Accept:"text/html"}}).then(function(r){return r.ok?r.text():null}).then(function(h){busy=false;if(h!==null)s.innerHTML=h}).catch(function(){busy=false})}s.addEventListener("focusout",function(){setTimeout(function(){if(pending&&!s.contains(document.activeElement)){pending=false;refresh()}},0)});var es=new EventSource(s.getAttribute("data-events"));es.onmessage=refresh;es.addEventListener("alert",refresh)})();"#;

/// A current value as shown.
pub(crate) struct ReadingTile {
    label: String,
    value: String,
    unit: &'static str,
    level_class: &'static str,
    level_label: String,
    range: String,
}

fn range_text(limits: &Limits, metric: Metric) -> String {
    let d = metric.decimals();
    let unit = metric.unit();
    match (limits.min, limits.max) {
        (Some(a), Some(b)) => format!("{} – {} {unit}", format::dec(a, d), format::dec(b, d)),
        (Some(a), None) => format!("≥ {} {unit}", format::dec(a, d)),
        (None, Some(b)) => format!("≤ {} {unit}", format::dec(b, d)),
        (None, None) => String::new(),
    }
    .trim_end()
    .to_string()
}

fn tile(t: &Tr, r: &Reading) -> ReadingTile {
    ReadingTile {
        label: t.t(r.metric.message_id()),
        value: r
            .value
            .map(|v| format::dec(v, r.metric.decimals()))
            .unwrap_or_else(|| "—".into()),
        unit: r.metric.unit(),
        level_class: r.level.class(),
        level_label: t.t(r.level.message_id()),
        range: range_text(&r.limits, r.metric),
    }
}

#[derive(Template)]
#[template(path = "operator.html")]
struct OperatorTpl<'a> {
    f: Frame<'a>,
    t: Tr,
    p: &'a OperatorPage,
    a: &'a AlertList,
    readings: Vec<ReadingTile>,
    charts: Vec<String>,
    dpd_default_time: String,
    live_js: &'static str,
}

/// The operator's page: their APR now, devices, open alerts with
/// acknowledge forms, 7-day charts, the DPD entry form, and (when
/// `page.live` is set) the live-refresh script.
pub fn render_operator(layout: &Layout, page: &OperatorPage) -> String {
    let t = Tr::new(layout.lang);
    let charts = page
        .charts
        .iter()
        .enumerate()
        .map(|(i, c)| chart_svg(&t, &format!("c{i}"), c, (600, 200), "").svg)
        .collect();
    html(&OperatorTpl {
        f: Frame::new(layout),
        t,
        p: page,
        a: &page.alerts,
        readings: page.readings.iter().map(|r| tile(&t, r)).collect(),
        charts,
        dpd_default_time: format::datetime_input(&page.dpd.default_time),
        live_js: LIVE_ALERTS_JS,
    })
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsTpl<'a> {
    t: Tr,
    a: &'a AlertList,
}

/// The open-alerts fragment alone (what `#alerts` holds), for the live
/// refresh.
pub fn render_alert_list(lang: Lang, alerts: &AlertList) -> String {
    html(&AlertsTpl {
        t: Tr::new(lang),
        a: alerts,
    })
}
