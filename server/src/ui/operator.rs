//! The operator's page: the APR now (latest value of each metric coloured
//! against the APR's limits), devices, open alerts with acknowledge and
//! comment, 7-day charts (hourly means), the manual DPD check form; the
//! alert fragment and its server-sent events stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use apr_dashboards::model::{
    AlertList, AlertRow, ChartView, DeviceStatus, DpdCheck, DpdForm, ErrorKind, LiveAlerts,
    OperatorPage, Reading, SeriesView,
};
use apr_dashboards::{Level, Metric as ViewMetric};
use apr_wire::Metric;
use axum::extract::Path;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Form;
use chrono::{NaiveDateTime, TimeZone};

use super::{apr_ref, blocking, local, local_path, utc_offset_s, Ctx, Page, Ui};
use crate::alerting::{Alert, AlertKind, AlertState, Severity};
use crate::auth::{Principal, Role, Scope};
use crate::error::{Error, Result};
use crate::limits::{Limits, LOCAL_TZ, PRESSURE_MAX_STATIC_MCA};
use crate::store::{AlertQuery, AprRecord, FieldKind, FieldRecord, SeriesQuery};

/// The metrics on the operator's page, in order.
const NOW_METRICS: [Metric; 6] = [
    Metric::Chlorine,
    Metric::Turbidity,
    Metric::Ph,
    Metric::TankLevel,
    Metric::Flow,
    Metric::Pressure,
];
/// The 7-day charts.
const CHART_METRICS: [Metric; 5] = [
    Metric::Chlorine,
    Metric::Turbidity,
    Metric::TankLevel,
    Metric::Flow,
    Metric::Pressure,
];
/// A latest value older than this is not "now".
const STALE_AFTER_MS: i64 = 6 * 3600 * 1000;
/// The live stream looks at the alerts this often…
const POLL: Duration = Duration::from_secs(2);
/// …and sends the fragment at least this often.
const REFRESH: Duration = Duration::from_secs(15);

pub(super) fn view_metric(m: Metric) -> Option<ViewMetric> {
    ViewMetric::parse(m.name())
}

/// The limits a metric's value is judged against on the page.
pub(super) fn view_limits(m: Metric, l: &Limits) -> apr_dashboards::Limits {
    let mut v = apr_dashboards::Limits::default();
    match m {
        Metric::Chlorine => {
            v.min = Some(l.chlorine_min_mg_l);
            v.max = Some(l.chlorine_max_mg_l);
        }
        Metric::Turbidity => {
            v.max = Some(l.turbidity_warning_ntu);
            v.critical_max = Some(l.turbidity_critical_ntu);
        }
        Metric::Ph => {
            v.min = Some(l.ph_min);
            v.max = Some(l.ph_max);
        }
        Metric::TankLevel => v.min = Some(l.tank_low_pct),
        Metric::Pressure => {
            v.min = Some(l.pressure_min_mca);
            v.max = Some(PRESSURE_MAX_STATIC_MCA);
        }
        _ => {}
    }
    v
}

fn view_severity(s: Severity) -> apr_dashboards::Severity {
    match s {
        Severity::Info => apr_dashboards::Severity::Info,
        Severity::Warning => apr_dashboards::Severity::Warning,
        Severity::Critical => apr_dashboards::Severity::Critical,
    }
}

/// The metric an alert kind is about.
fn metric_of(kind: AlertKind) -> Option<Metric> {
    match kind {
        AlertKind::ChlorineLow | AlertKind::ChlorineHigh => Some(Metric::Chlorine),
        AlertKind::TurbidityHigh => Some(Metric::Turbidity),
        AlertKind::PhOutOfRange => Some(Metric::Ph),
        AlertKind::TankLow => Some(Metric::TankLevel),
        AlertKind::PressureLow => Some(Metric::Pressure),
        AlertKind::NightFlowHigh => Some(Metric::Flow),
        AlertKind::ChlorineProbeDrift => Some(Metric::Chlorine),
        AlertKind::DeviceOffline | AlertKind::SensorFault => None,
    }
}

fn alert_unit(kind: AlertKind) -> String {
    match (kind, metric_of(kind).and_then(view_metric)) {
        (AlertKind::DeviceOffline, _) => "s".into(),
        (_, Some(m)) => m.unit().into(),
        _ => String::new(),
    }
}

/// The APR's limits: the defaults with its overrides.
pub(super) fn limits_of(ui: &Ui, apr: &str) -> Result<Limits> {
    let overrides = ui.app().alerts().limit_overrides(Some(apr))?;
    Limits::with_overrides(overrides.iter().map(|(_, o)| (o.key.as_str(), &o.value)))
}

/// The open (not yet acknowledged) alerts of an APR, most severe and
/// newest first.
fn open_alerts(ui: &Ui, apr: &str) -> Result<Vec<Alert>> {
    let mut alerts = ui.app().alerts().alerts(&AlertQuery {
        aprs: Some(vec![apr.to_owned()]),
        state: Some(AlertState::Open),
        limit: 200,
        ..AlertQuery::default()
    })?;
    alerts.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.opened_at_ms.cmp(&a.opened_at_ms))
    });
    Ok(alerts)
}

fn alert_list(alerts: &[Alert], csrf: &str, back: &str) -> AlertList {
    AlertList {
        alerts: alerts
            .iter()
            .map(|a| AlertRow {
                id: a.id.to_string(),
                kind: a.kind.as_str().to_owned(),
                severity: view_severity(a.severity),
                device: a.device.clone(),
                opened_at: local(a.opened_at_ms),
                value: Some(a.value).filter(|v| v.is_finite()),
                threshold: Some(a.threshold).filter(|v| v.is_finite()),
                unit: alert_unit(a.kind),
                ack_action: format!("/alertas/{}/reconocer?next={}", a.id, back),
            })
            .collect(),
        csrf_token: csrf.to_owned(),
    }
}

fn chart(
    ui: &Ui,
    apr: &str,
    m: Metric,
    limits: &Limits,
    from_ms: i64,
    to_ms: i64,
    step_ms: Option<i64>,
) -> Result<ChartView> {
    let points = ui.app().series().readings(&SeriesQuery {
        apr,
        metric: m,
        device: None,
        from_ms,
        to_ms,
        step_ms,
        limit: 250_000,
    })?;
    Ok(chart_of(
        m,
        limits,
        points.iter().map(|p| (p.t_ms, p.v)).collect(),
        from_ms,
        to_ms,
    ))
}

/// A chart of `points` (ms, value) of metric `m` with its limits drawn.
pub(super) fn chart_of(
    m: Metric,
    limits: &Limits,
    points: Vec<(i64, f64)>,
    from_ms: i64,
    to_ms: i64,
) -> ChartView {
    let lim = view_limits(m, limits);
    let band = match (lim.min, lim.max) {
        (Some(a), Some(b)) if m != Metric::Pressure => Some((a, b)),
        _ => None,
    };
    let thresholds = match m {
        Metric::Turbidity => vec![limits.turbidity_warning_ntu, limits.turbidity_critical_ntu],
        Metric::TankLevel => vec![limits.tank_low_pct],
        Metric::Pressure => vec![limits.pressure_min_mca],
        _ => Vec::new(),
    };
    ChartView {
        quantity: m.name().to_owned(),
        unit: view_metric(m)
            .map(|v| v.unit().to_owned())
            .unwrap_or_default(),
        series: vec![SeriesView {
            name: m.name().to_owned(),
            points: points
                .into_iter()
                .map(|(t, v)| (t.div_euclid(1000), v))
                .collect(),
        }],
        from: from_ms.div_euclid(1000),
        to: to_ms.div_euclid(1000),
        utc_offset_s: utc_offset_s(to_ms),
        band,
        thresholds,
    }
}

pub(super) fn chart_view(
    ui: &Ui,
    apr: &str,
    m: Metric,
    from_ms: i64,
    to_ms: i64,
    step_ms: Option<i64>,
) -> Result<ChartView> {
    let limits = limits_of(ui, apr)?;
    chart(ui, apr, m, &limits, from_ms, to_ms, step_ms)
}

/// Everything the operator's page shows of one APR.
fn build(ui: &Ui, p: &Principal, apr: &AprRecord, csrf: &str) -> Result<OperatorPage> {
    let now = chrono::Utc::now().timestamp_millis();
    let registry = ui.app().registry();
    let regions = registry.regions()?;
    let limits = limits_of(ui, &apr.id)?;
    let latest = ui.app().series().latest(&apr.id)?;
    let alerts = open_alerts(ui, &apr.id)?;
    let worst: HashMap<Metric, Severity> = alerts
        .iter()
        .filter_map(|a| Some((metric_of(a.kind)?, a.severity)))
        .fold(HashMap::new(), |mut m, (k, s)| {
            let e = m.entry(k).or_insert(s);
            *e = (*e).max(s);
            m
        });
    let readings = NOW_METRICS
        .iter()
        .filter_map(|m| {
            let vm = view_metric(*m)?;
            let newest = latest
                .iter()
                .filter(|l| l.metric == *m && now - l.t_ms <= STALE_AFTER_MS)
                .max_by_key(|l| l.t_ms);
            let lim = view_limits(*m, &limits);
            let value = newest.map(|l| l.v);
            let mut level = Level::classify(value, &lim);
            if value.is_some() {
                match worst.get(m) {
                    Some(Severity::Critical) => level = Level::Critical,
                    Some(Severity::Warning) if level == Level::Ok => level = Level::Warning,
                    _ => {}
                }
            }
            Some(Reading {
                metric: vm,
                value,
                at: newest.map(|l| local(l.t_ms)),
                limits: lim,
                level,
            })
        })
        .collect();
    let devices = registry
        .devices(Some(std::slice::from_ref(&apr.id)))?
        .into_iter()
        .map(|d| {
            let of = |m: Metric| {
                latest
                    .iter()
                    .find(|l| l.device == d.device && l.metric == m)
                    .map(|l| l.v)
            };
            DeviceStatus {
                online: d.online(now),
                last_seen: d.last_seen_ms.map(local),
                battery_v: of(Metric::Battery),
                rssi_dbm: of(Metric::Rssi),
                outbox: None,
                device: d.device,
            }
        })
        .collect();
    let week = 7 * 86_400_000;
    let charts = CHART_METRICS
        .iter()
        .map(|m| chart(ui, &apr.id, *m, &limits, now - week, now, Some(3_600_000)))
        .collect::<Result<Vec<_>>>()?;
    let recent = match recent_dpd(ui, &apr.id, now) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, apr = %apr.id, "DPD checks unavailable");
            Vec::new()
        }
    };
    let page_path = format!("/operador/{}", apr.id);
    let other_aprs = match &p.scope {
        Scope::Aprs(set) if set.len() > 1 => set
            .iter()
            .filter(|a| **a != apr.id)
            .filter_map(|a| {
                let r = registry.apr(a).ok()??;
                Some((format!("/operador/{}", r.id), r.name))
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(OperatorPage {
        apr: apr_ref(apr, &regions),
        last_reading_at: latest.iter().map(|l| l.t_ms).max().map(local),
        readings,
        devices,
        alerts: alert_list(&alerts, csrf, &page_path),
        charts,
        dpd: DpdForm {
            action: format!("/operador/{}/dpd", apr.id),
            default_time: local(now),
            recent: recent
                .into_iter()
                .map(|(r, probe)| DpdCheck {
                    at: local(r.taken_at_ms),
                    dpd_mg_l: r.value.unwrap_or(f64::NAN),
                    probe_mg_l: probe,
                    by: r.recorded_by,
                })
                .collect(),
        },
        live: Some(LiveAlerts {
            events_url: format!("/operador/{}/alertas/eventos", apr.id),
            fragment_url: format!("/operador/{}/alertas", apr.id),
        }),
        other_aprs,
    })
}

async fn render(ctx: &Ctx, apr: AprRecord) -> Page {
    let p = ctx.principal()?.clone();
    let (ui, csrf) = (ctx.ui.clone(), ctx.layout().csrf_token);
    let page = blocking(move || build(&ui, &p, &apr, &csrf))
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(ctx.page(apr_dashboards::render_operator(&ctx.layout(), &page)))
}

/// `GET /operador`: an operator's (first) APR; other roles go home.
pub(super) async fn home(ctx: Ctx) -> Response {
    async fn inner(ctx: &Ctx) -> Page {
        let p = ctx.principal()?;
        let first = match &p.scope {
            Scope::Aprs(set) => set.iter().next().cloned(),
            _ => None,
        };
        let Some(id) = first else {
            return Ok(ctx.see_other(&ctx.home()));
        };
        let apr = ctx.checked_apr(p, &id).await?;
        render(ctx, apr).await
    }
    inner(&ctx).await.unwrap_or_else(|r| r)
}

/// `GET /operador/{apr}`.
pub(super) async fn page(ctx: Ctx, Path(id): Path<String>) -> Response {
    async fn inner(ctx: &Ctx, id: &str) -> Page {
        let p = ctx.principal()?;
        let apr = ctx.checked_apr(p, id).await?;
        render(ctx, apr).await
    }
    inner(&ctx, &id).await.unwrap_or_else(|r| r)
}

async fn fragment_html(
    ui: &Ui,
    ctx_lang: apr_dashboards::Lang,
    apr: &str,
    csrf: &str,
) -> Result<String> {
    let (ui, key, csrf) = (ui.clone(), apr.to_owned(), csrf.to_owned());
    blocking(move || {
        let alerts = open_alerts(&ui, &key)?;
        let list = alert_list(&alerts, &csrf, &format!("/operador/{key}"));
        Ok(apr_dashboards::render_alert_list(ctx_lang, &list))
    })
    .await
}

/// `GET /operador/{apr}/alertas`: the open-alerts fragment.
pub(super) async fn fragment(ctx: Ctx, Path(id): Path<String>) -> Response {
    async fn inner(ctx: &Ctx, id: &str) -> Page {
        let p = ctx.principal()?;
        let apr = ctx.checked_apr(p, id).await?;
        let html = fragment_html(&ctx.ui, ctx.lang, &apr.id, &ctx.layout().csrf_token)
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(ctx.page(html))
    }
    inner(&ctx, &id).await.unwrap_or_else(|r| r)
}

/// What changes the alert list: ids, states and severities.
fn fingerprint(alerts: &[Alert]) -> Vec<(i64, Severity)> {
    alerts.iter().map(|a| (a.id, a.severity)).collect()
}

struct Live {
    ui: Ui,
    lang: apr_dashboards::Lang,
    apr: String,
    session: String,
    csrf: String,
    last: Vec<(i64, Severity)>,
    sent: Instant,
}

/// `GET /operador/{apr}/alertas/eventos`: server-sent events. An `alert`
/// event carrying the re-rendered fragment goes out when the open alerts
/// change (looked at every 2 s) and at least every 15 s; the stream ends
/// with the session.
pub(super) async fn events(ctx: Ctx, Path(id): Path<String>) -> Response {
    async fn inner(ctx: &Ctx, id: &str) -> Page {
        let p = ctx.principal()?;
        let apr = ctx.checked_apr(p, id).await?;
        let (ui, key) = (ctx.ui.clone(), apr.id.clone());
        let first = blocking(move || open_alerts(&ui, &key))
            .await
            .map_err(|e| ctx.fail(e))?;
        let live = Live {
            ui: ctx.ui.clone(),
            lang: ctx.lang,
            apr: apr.id,
            session: ctx
                .session
                .as_ref()
                .map(|s| s.id.clone())
                .unwrap_or_default(),
            csrf: ctx.layout().csrf_token,
            last: fingerprint(&first),
            sent: Instant::now(),
        };
        let stream = futures_util::stream::unfold(live, |mut st| async move {
            loop {
                tokio::time::sleep(POLL).await;
                if !st.ui.inner.sessions.peek(&st.session, Instant::now()) {
                    return None;
                }
                let (ui, key) = (st.ui.clone(), st.apr.clone());
                let Ok(alerts) = blocking(move || open_alerts(&ui, &key)).await else {
                    continue;
                };
                let now = fingerprint(&alerts);
                if now == st.last && st.sent.elapsed() < REFRESH {
                    continue;
                }
                st.last = now;
                st.sent = Instant::now();
                let list = alert_list(&alerts, &st.csrf, &format!("/operador/{}", st.apr));
                let html = apr_dashboards::render_alert_list(st.lang, &list).replace('\r', "");
                let event = Event::default().event("alert").data(html);
                return Some((Ok::<_, Infallible>(event), st));
            }
        });
        let mut r = Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response();
        r.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
        Ok(r)
    }
    inner(&ctx, &id).await.unwrap_or_else(|r| r)
}

/// `POST /alertas/{id}/reconocer?next=…`: `comment`. The same checks and
/// the same alert service call as `POST /api/v1/alerts/{id}/ack`.
pub(super) async fn acknowledge(
    ctx: Ctx,
    Path(id): Path<i64>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    async fn inner(ctx: &Ctx, id: i64, next: Option<String>, comment: Option<String>) -> Page {
        let p = ctx.principal()?.clone();
        ctx.require(&p, &[Role::Operator, Role::Admin])?;
        let comment = comment
            .map(|c| c.trim().chars().take(2000).collect::<String>())
            .filter(|c| !c.is_empty());
        let ui = ctx.ui.clone();
        let alert = blocking(move || ui.app().alerts().alert(id))
            .await
            .map_err(|e| ctx.fail(e))?;
        let Some(alert) = alert.filter(|a| p.scope.allows_apr_id(&a.apr) == Some(true)) else {
            return Err(ctx.error(if p.role == Role::Admin {
                ErrorKind::NotFound
            } else {
                ErrorKind::Forbidden
            }));
        };
        let back = next.unwrap_or_else(|| format!("/operador/{}", alert.apr));
        if alert.state != AlertState::Open {
            // Already acknowledged (by someone else, or a second click) or
            // resolved: nothing to do, show the current list.
            return Ok(ctx.see_other(&back));
        }
        let alerting = ctx.ui.app().alerting().cloned().ok_or_else(|| {
            ctx.fail(Error::Unavailable(
                "the alert service is not running".into(),
            ))
        })?;
        match alerting.acknowledge(id, &p.user, comment).await {
            Ok(after) => {
                let (before, after) = (alert.to_json(), after.to_json());
                let entry = crate::audit::AuditEntry::now(
                    &p.user,
                    crate::audit::Via::Ui,
                    "alert.acknowledge",
                    Some(&alert.apr),
                    id.to_string(),
                    Some(before),
                    Some(after),
                );
                let ui_audit = ctx.ui.clone();
                blocking(move || crate::audit::record(ui_audit.app().registry(), entry))
                    .await
                    .map_err(|e| ctx.fail(e))?;
                Ok(ctx.see_other(&back))
            }
            Err(Error::NotFound(_)) | Err(Error::Conflict(_)) => Ok(ctx.see_other(&back)),
            Err(e) => Err(ctx.fail(e)),
        }
    }
    let next = local_path(q.get("next").map(String::as_str));
    inner(&ctx, id, next, form.get("comment").cloned())
        .await
        .unwrap_or_else(|r| r)
}

/// Parses a decimal with `.` or `,`.
fn decimal(s: &str) -> Option<f64> {
    s.trim()
        .replace(',', ".")
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

/// The latest five DPD checks of an APR (the last 90 days), newest first,
/// each with the probe's chlorine reading closest to it within 30 minutes.
fn recent_dpd(ui: &Ui, apr: &str, now: i64) -> Result<Vec<(FieldRecord, Option<f64>)>> {
    ui.db().ensure_open()?;
    let mut checks: Vec<FieldRecord> = ui
        .app()
        .analysis()
        .field_records(apr, now - 90 * 86_400_000, now + 600_000)?
        .into_iter()
        .filter(|r| r.kind == FieldKind::DpdChlorine && r.value.is_some())
        .collect();
    checks.sort_by_key(|r| std::cmp::Reverse((r.taken_at_ms, r.id)));
    checks.truncate(5);
    checks
        .into_iter()
        .map(|r| {
            let near = ui.app().series().readings(&SeriesQuery {
                apr,
                metric: Metric::Chlorine,
                device: None,
                from_ms: r.taken_at_ms - 30 * 60_000,
                to_ms: r.taken_at_ms + 30 * 60_000,
                step_ms: None,
                limit: 10_000,
            })?;
            let probe = near
                .iter()
                .min_by_key(|pt| (pt.t_ms - r.taken_at_ms).abs())
                .map(|pt| pt.v);
            Ok((r, probe))
        })
        .collect()
}

/// `POST /operador/{apr}/dpd`: `value_mg_l`, `taken_at` (local
/// `yyyy-mm-ddTHH:MM`), `place`.
pub(super) async fn dpd(
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    async fn inner(ctx: &Ctx, id: &str, form: &HashMap<String, String>) -> Page {
        let p = ctx.principal()?.clone();
        ctx.require(&p, &[Role::Operator, Role::Admin])?;
        let apr = ctx.checked_apr(&p, id).await?;
        let bad = || ctx.error(ErrorKind::BadRequest);
        let value = form
            .get("value_mg_l")
            .and_then(|v| decimal(v))
            .filter(|v| Metric::Chlorine.in_range(*v))
            .ok_or_else(bad)?;
        let naive = form
            .get("taken_at")
            .and_then(|t| NaiveDateTime::parse_from_str(t.trim(), "%Y-%m-%dT%H:%M").ok())
            .ok_or_else(bad)?;
        let taken = LOCAL_TZ
            .from_local_datetime(&naive)
            .earliest()
            .ok_or_else(bad)?
            .timestamp_millis();
        let now = chrono::Utc::now().timestamp_millis();
        if taken > now + 10 * 60_000 || taken < now - 31 * 86_400_000 {
            return Err(bad());
        }
        let place: String = form
            .get("place")
            .map(|s| s.trim().chars().take(100).collect())
            .unwrap_or_default();
        let ui = ctx.ui.clone();
        let record = FieldRecord {
            id: 0,
            apr: apr.id.clone(),
            kind: FieldKind::DpdChlorine,
            taken_at_ms: taken,
            value: Some(value),
            parameter: None,
            note: (!place.is_empty()).then_some(place),
            recorded_by: p.user.clone(),
            recorded_at_ms: now,
        };
        crate::field::validate(&record).map_err(|e| {
            tracing::info!(error = %e, "DPD check refused");
            bad()
        })?;
        let user = p.user.clone();
        blocking(move || {
            let mut record = record;
            record.id = ui.app().analysis().insert_field_record(record.clone())?;
            let after = Some(serde_json::json!({
                "id": record.id,
                "apr": record.apr,
                "kind": record.kind,
                "taken_at": crate::alerting::rfc3339_ms(record.taken_at_ms),
                "value": record.value,
                "note": record.note,
                "recorded_by": record.recorded_by,
            }));
            let entry = crate::audit::AuditEntry::now(
                &user,
                crate::audit::Via::Ui,
                "field_record.create",
                Some(&record.apr),
                record.id.to_string(),
                None,
                after,
            );
            crate::audit::record(ui.app().registry(), entry)
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        Ok(ctx.see_other(&format!("/operador/{}#dpd", apr.id)))
    }
    inner(&ctx, &id, &form).await.unwrap_or_else(|r| r)
}
