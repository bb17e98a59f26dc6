//! Page renderers: each a pure function from a view model to an HTML
//! `String`. Templates live in `templates/` (askama, compiled with the crate,
//! HTML-escaped by default); this module prepares what a template shows
//! (translated labels, formatted numbers, rendered charts) so templates stay
//! free of logic.
//!
//! Every POST form carries the hidden `csrf_token` field from the view model
//! (the layout's token, or [`AlertList::csrf_token`] for the fragment). The
//! only GET form, the series explorer, changes nothing and deliberately
//! carries no token: a token in a URL leaks into logs and `Referer`.

mod admin;
mod engineer;
mod gore;
mod operator;

pub use admin::render_admin;
pub use engineer::{render_engineer_apr, render_engineer_overview, sort_rows};
pub use gore::{render_gore, render_gore_report};
pub use operator::{render_alert_list, render_operator, LIVE_ALERTS_JS};

use askama::Template;

use crate::chart::{self, ChartSpec, Series};
use crate::i18n::{Lang, Tr};
use crate::model::{
    ChartView, Component, ComponentFlags, ErrorKind, ErrorPage, Layout, LoginPage, Role,
    SessionUser,
};
use crate::{paths, STYLESHEET};

/// A link in the header's navigation.
pub(crate) struct NavLink {
    pub href: &'static str,
    pub label_id: &'static str,
    pub current: bool,
}

/// What `base.html` needs, derived from a [`Layout`].
pub(crate) struct Frame<'a> {
    pub lang_tag: &'static str,
    pub lang_code: &'static str,
    pub user: Option<&'a SessionUser>,
    pub nav: Vec<NavLink>,
    pub csrf: &'a str,
    pub current_path: &'a str,
    pub css_href: Option<&'a str>,
    pub css_inline: &'static str,
    pub nonce: Option<&'a str>,
    pub home: &'static str,
    pub language_action: &'static str,
    pub logout_action: &'static str,
}

/// The navigation of a role: `(path, message id)`.
pub fn nav_for(role: Role) -> &'static [(&'static str, &'static str)] {
    match role {
        Role::Operator => &[(paths::OPERATOR, "nav-operator")],
        Role::Engineer => &[(paths::ENGINEER, "nav-engineer")],
        Role::Gore => &[(paths::GORE, "nav-gore")],
        Role::Admin => &[
            (paths::ENGINEER, "nav-engineer"),
            (paths::GORE, "nav-gore-programme"),
            (paths::ADMIN, "nav-admin"),
        ],
    }
}

/// A role's home page.
pub fn home_for(role: Role) -> &'static str {
    nav_for(role)[0].0
}

impl<'a> Frame<'a> {
    pub(crate) fn new(l: &'a Layout) -> Frame<'a> {
        let nav = l
            .user
            .as_ref()
            .map(|u| {
                nav_for(u.role)
                    .iter()
                    .map(|(href, label_id)| NavLink {
                        href,
                        label_id,
                        current: l.current_path.starts_with(href),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Frame {
            lang_tag: l.lang.tag(),
            lang_code: l.lang.code(),
            user: l.user.as_ref(),
            nav,
            csrf: &l.csrf_token,
            current_path: &l.current_path,
            css_href: l.stylesheet_href.as_deref(),
            css_inline: STYLESHEET,
            nonce: l.csp_nonce.as_deref(),
            home: l
                .user
                .as_ref()
                .map(|u| home_for(u.role))
                .unwrap_or(paths::LOGIN),
            language_action: paths::LANGUAGE,
            logout_action: paths::LOGOUT,
        }
    }
}

/// Renders a template; a failure (only possible from a `Display` impl) gives
/// a minimal page rather than a panic in a handler.
pub(crate) fn html(t: &impl Template) -> String {
    t.render()
        .unwrap_or_else(|_| "<!doctype html><title>Error</title><p>Error</p>".to_string())
}

/// The label of a chart's quantity: a metric, else a KPI, else as given.
pub(crate) fn quantity_label(t: &Tr, quantity: &str) -> String {
    let metric = t.code("metric", quantity, "");
    if !metric.is_empty() {
        return metric;
    }
    t.code("kpi", quantity, quantity)
}

/// Renders a [`ChartView`] as SVG with a translated title and description.
/// `context` (an APR's name) prefixes the title when not empty.
pub(crate) fn chart_svg(
    t: &Tr,
    id: &str,
    cv: &ChartView,
    size: (u32, u32),
    context: &str,
) -> chart::RenderedChart {
    let label = quantity_label(t, &cv.quantity);
    let title = if context.is_empty() {
        if cv.unit.is_empty() {
            label.clone()
        } else {
            format!("{label} ({})", cv.unit)
        }
    } else {
        format!("{context} · {label}")
    };
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for s in &cv.series {
        for p in s
            .points
            .iter()
            .filter(|p| p.1.is_finite() && p.0 >= cv.from && p.0 <= cv.to)
        {
            lo = lo.min(p.1);
            hi = hi.max(p.1);
        }
    }
    let local = |ts: i64| {
        chrono::FixedOffset::east_opt(cv.utc_offset_s)
            .and_then(|o| chrono::DateTime::from_timestamp(ts, 0).map(|d| d.with_timezone(&o)))
            .map(|d| crate::format::datetime(&d))
            .unwrap_or_default()
    };
    let desc = if lo.is_finite() {
        t.tn(
            "chart-desc",
            &[
                ("from", local(cv.from)),
                ("to", local(cv.to)),
                ("min", crate::format::dec(lo, 2)),
                ("max", crate::format::dec(hi, 2)),
                ("unit", cv.unit.clone()),
            ],
        )
    } else {
        t.t("chart-no-data")
    };
    let empty = t.t("chart-no-data");
    let series = cv
        .series
        .iter()
        .map(|s| Series {
            name: &s.name,
            points: &s.points,
        })
        .collect();
    let mut spec = ChartSpec::new(id, &title, series, cv.from, cv.to);
    spec.width = size.0;
    spec.height = size.1;
    spec.desc = &desc;
    spec.unit = &cv.unit;
    spec.utc_offset_s = cv.utc_offset_s;
    spec.band = cv.band;
    spec.thresholds = &cv.thresholds;
    spec.empty_text = &empty;
    chart::render(&spec)
}

/// A flagged component as shown: its abbreviation (the page's legend
/// spells them out). Unflagged components are not listed.
pub(crate) struct FlagView {
    pub short: String,
}

pub(crate) fn flag_views(t: &Tr, flags: &ComponentFlags) -> Vec<FlagView> {
    Component::ALL
        .iter()
        .filter(|c| flags.get(**c))
        .map(|c| FlagView {
            short: t.t(format!("{}-short", c.message_id())),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginTpl<'a> {
    f: Frame<'a>,
    t: Tr,
    p: &'a LoginPage,
}

/// The login page.
pub fn render_login(layout: &Layout, page: &LoginPage) -> String {
    html(&LoginTpl {
        f: Frame::new(layout),
        t: Tr::new(layout.lang),
        p: page,
    })
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorTpl<'a> {
    f: Frame<'a>,
    t: Tr,
    p: &'a ErrorPage,
    detail_id: String,
}

/// The error page: a title and an explanation in the user's language, never
/// a stack trace. The HTTP status is [`ErrorKind::status`].
pub fn render_error(layout: &Layout, page: &ErrorPage) -> String {
    html(&ErrorTpl {
        f: Frame::new(layout),
        t: Tr::new(layout.lang),
        p: page,
        detail_id: format!("{}-detail", page.kind.message_id()),
    })
}

/// A minimal error page for when no session or layout can be had (e.g. a
/// failure before the session is read): Spanish, no header links.
pub fn render_error_plain(kind: ErrorKind) -> String {
    let layout = Layout::new(Lang::EsCl, None, "", "/");
    render_error(
        &layout,
        &ErrorPage {
            kind,
            request_id: None,
            home_url: "/".into(),
        },
    )
}
