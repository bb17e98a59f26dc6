//! KPI, billing, field-record, assessment and intervention routes, and the
//! periodic task that keeps KPIs and assessments current.
//!
//! | route | who |
//! | --- | --- |
//! | `GET /api/v1/aprs/{id}/kpis?from=&to=&kpi=` | readers in scope |
//! | `POST /api/v1/aprs/{id}/billing` (CSV `month,billed_m3`) | operators in scope, engineers, admins |
//! | `GET/POST /api/v1/aprs/{id}/field-records` | readers in scope / operators in scope, engineers, admins |
//! | `GET /api/v1/aprs/{id}/assessment[?refresh=true]` | readers in scope |
//! | `GET /api/v1/aprs/{id}/assessment/history` | readers in scope |
//! | `GET/POST /api/v1/aprs/{id}/interventions` | readers in scope / engineers, admins |

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::aprs::{checked_apr, unique_params};
use super::{audit, blocking, AppState};
use crate::assessment::{self, rfc3339_ms, Assessment, COMPONENTS};
use crate::auth::{Principal, Role};
use crate::error::{Error, Result};
use crate::field;
use crate::kpi::{self, local_day, local_ms, window_start, Kpi, Site, WindowKpis};
use crate::limits::{AssessmentLimits, Limits};
use crate::store::{AprRecord, FieldKind, FieldRecord, InterventionRecord};

/// How often the KPI task runs.
const KPI_EVERY: Duration = Duration::from_secs(300);
/// A stored assessment older than this is recomputed when asked for, ms.
const ASSESSMENT_MAX_AGE_MS: i64 = 24 * 3600 * 1000;
/// The window before and after an intervention, days.
const OUTCOME_DAYS: i64 = 30;

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn require_writer(caller: &Principal, roles: &[Role]) -> Result<()> {
    if roles.contains(&caller.role) {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "a {} may not write here",
            caller.role.as_str()
        )))
    }
}

/// The APR's limits (defaults with its overrides).
fn limits_of(state: &AppState, apr: &str) -> Result<Limits> {
    let overrides = state.inner.alerts.limit_overrides(Some(apr))?;
    Limits::with_overrides(overrides.iter().map(|(_, o)| (o.key.as_str(), &o.value)))
}

/// Recomputes `days` of the KPIs of one APR (blocking).
fn refresh_kpis(state: &AppState, apr: &AprRecord, days: &BTreeSet<NaiveDate>) -> Result<usize> {
    let limits = limits_of(state, &apr.id)?;
    kpi::refresh(
        &*state.inner.series,
        &*state.inner.analysis,
        apr,
        &limits,
        &AssessmentLimits::default(),
        days,
        now_ms(),
    )
}

/// Computes and stores the assessment of one APR over the window ending
/// yesterday (local), after bringing today's and yesterday's KPIs up to
/// date (blocking).
fn assess_now(state: &AppState, apr: &AprRecord) -> Result<Assessment> {
    let now = now_ms();
    let today = local_day(now);
    let yesterday = today.pred_opt().unwrap_or(today);
    refresh_kpis(state, apr, &[yesterday, today].into_iter().collect())?;
    let limits = limits_of(state, &apr.id)?;
    let (_, rows) = assessment::compute(
        &*state.inner.series,
        &*state.inner.alerts,
        &*state.inner.analysis,
        apr,
        &limits,
        &AssessmentLimits::default(),
        yesterday,
        now,
    )?;
    state.inner.analysis.insert_assessment(rows.clone())?;
    Assessment::from_rows(&apr.id, &rows)
        .ok_or_else(|| Error::Invalid("an assessment without components".into()))
}

/// Starts the periodic KPI and assessment task (on the current runtime):
/// first a backfill of days with readings but no KPIs, then every
/// [`KPI_EVERY`] the dirty days plus today and yesterday of every APR with
/// devices, and once per local day every APR's assessment.
pub(super) fn start(state: &AppState) {
    let weak = std::sync::Arc::downgrade(&state.inner);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(KPI_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        let mut assessed_on: Option<NaiveDate> = None;
        loop {
            interval.tick().await;
            let Some(inner) = weak.upgrade() else { break };
            let state = AppState { inner };
            let backfill = std::mem::take(&mut first);
            let last = assessed_on;
            let run = blocking(move || kpi_pass(&state, backfill, last)).await;
            match run {
                Ok(day) => assessed_on = day,
                Err(e) => tracing::warn!(error = %e, "KPI pass failed"),
            }
        }
    });
}

/// Runs one full pass now (backfill of days without KPIs, today and
/// yesterday, and every APR's assessment), as the periodic task's first pass
/// does; for callers that just wrote a history and want its figures at once.
pub(super) fn pass_now(state: &AppState) -> Result<()> {
    kpi_pass(state, true, None).map(|_| ())
}

/// One pass of the periodic task; answers the day the assessments were
/// last made.
fn kpi_pass(
    state: &AppState,
    backfill: bool,
    assessed_on: Option<NaiveDate>,
) -> Result<Option<NaiveDate>> {
    let now = now_ms();
    let today = local_day(now);
    let mut due = state.inner.kpi_dirty.take();
    let devices = state.inner.registry.devices(None)?;
    let with_devices: BTreeSet<String> = devices.into_iter().map(|d| d.apr).collect();
    for apr in &with_devices {
        let days = due.entry(apr.clone()).or_default();
        days.insert(today);
        days.insert(today.pred_opt().unwrap_or(today));
        if backfill {
            for c in state.inner.series.coverage(apr)? {
                if !kpi::METRICS.contains(&c.metric) {
                    continue;
                }
                let (first, last) = (local_day(c.first_ms), local_day(c.last_ms));
                let first = first.max(last - chrono::Duration::days(400));
                let have: BTreeSet<String> = state
                    .inner
                    .analysis
                    .kpis(
                        apr,
                        &first.to_string(),
                        &last.to_string(),
                        Some(Kpi::ProducedM3.as_str()),
                    )?
                    .into_iter()
                    .map(|r| r.day)
                    .collect();
                let mut d = first;
                while d <= last {
                    if !have.contains(&d.to_string()) {
                        days.insert(d);
                    }
                    d = d.succ_opt().unwrap_or(last + chrono::Duration::days(1));
                }
            }
        }
    }
    for (apr_id, days) in &due {
        if let Some(apr) = state.inner.registry.apr(apr_id)? {
            refresh_kpis(state, &apr, days)?;
        }
    }
    probe_checks(state, backfill, now)?;
    if assessed_on == Some(today) {
        return Ok(assessed_on);
    }
    for apr_id in &with_devices {
        if let Some(apr) = state.inner.registry.apr(apr_id)? {
            assess_now(state, &apr)?;
        }
    }
    Ok(Some(today))
}

/// Hands the alert engine the probe-drift verdict of every APR with a DPD
/// check recorded since the previous pass (two periods back, so a slow pass
/// misses none; the engine opens at most one alert per APR and probe), or
/// of every APR on the first pass after a start.
fn probe_checks(state: &AppState, all: bool, now: i64) -> Result<()> {
    let Some(alerting) = state.alerting() else {
        return Ok(());
    };
    let since = now - 2 * i64::try_from(KPI_EVERY.as_millis()).unwrap_or(i64::MAX / 4);
    for apr in state.inner.registry.aprs()? {
        let apr = apr.id.as_str();
        let verdict = assessment::probe_verdict(
            &*state.inner.series,
            &*state.inner.analysis,
            apr,
            &AssessmentLimits::default(),
            now,
            if all { i64::MIN } else { since },
        );
        match verdict {
            Ok(Some(check)) => {
                tracing::debug!(apr, drift = ?check.drift, "probe check");
                if let Err(e) = alerting.probe_check_blocking(check) {
                    tracing::warn!(apr, error = %e, "probe check not handed to the alerts");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(apr, error = %e, "probe check failed"),
        }
    }
    Ok(())
}

/// A day or a time in a query: `YYYY-MM-DD`, or RFC 3339 (its local day).
fn parse_day(name: &str, v: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .or_else(|_| DateTime::parse_from_rfc3339(v).map(|t| local_day(t.timestamp_millis())))
        .map_err(|_| {
            Error::InvalidQuery(format!(
                "'{name}' must be a day (YYYY-MM-DD) or an RFC 3339 time, not '{v}'"
            ))
        })
}

/// `GET /api/v1/aprs/{id}/kpis?from=&to=&kpi=`: the daily KPIs of the days
/// `from`..=`to` (local days; default the last 30), the window figures and
/// the NRW of billed months.
pub(super) async fn kpis(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>> {
    let Path(id) = path?;
    let Query(pairs) = query?;
    let p = unique_params(&pairs, &["from", "to", "kpi"])?;
    let to = match p.get("to") {
        Some(v) => parse_day("to", v)?,
        None => local_day(now_ms()),
    };
    let from = match p.get("from") {
        Some(v) => parse_day("from", v)?,
        None => window_start(to, AssessmentLimits::default().window_days),
    };
    if from > to {
        return Err(Error::InvalidQuery(format!(
            "'from' ({from}) is after 'to' ({to})"
        )));
    }
    if (to - from).num_days() > 3660 {
        return Err(Error::InvalidQuery(
            "the window may span at most 10 years".into(),
        ));
    }
    let kpi = match p.get("kpi") {
        Some(k) => Some(Kpi::parse(k).ok_or_else(|| {
            Error::InvalidQuery(format!(
                "'{k}' is not a KPI; one of {}",
                Kpi::ALL.map(Kpi::as_str).join(", ")
            ))
        })?),
        None => None,
    };
    let record = checked_apr(&state, &caller, &id).await?;
    let apr = record.clone();
    let st = state.clone();
    let (rows, billing) = blocking(move || {
        let rows = st
            .inner
            .analysis
            .kpis(&apr.id, &from.to_string(), &to.to_string(), None)?;
        let billing = st.inner.analysis.billing(&apr.id)?;
        Ok((rows, billing))
    })
    .await?;
    let a = AssessmentLimits::default();
    let window = WindowKpis::from_rows(&rows, &Site::from(&record), &a);
    let nrw = kpi::nrw_by_month(&rows, &billing, record.connections);
    let days: Vec<Value> = rows
        .iter()
        .filter(|r| kpi.is_none_or(|k| r.kpi == k.as_str()))
        .map(|r| {
            json!({"day": r.day, "kpi": r.kpi, "value": r.value, "window": r.window,
                   "computed_at": rfc3339_ms(r.computed_at_ms)})
        })
        .collect();
    Ok(Json(json!({
        "apr": id,
        "from": from.to_string(),
        "to": to.to_string(),
        "kpis": days,
        "window": window,
        "nrw": nrw,
    })))
}

/// `POST /api/v1/aprs/{id}/billing`: a CSV of monthly billed m³
/// (`month,billed_m3`, e.g. `2025-10,1234.5`).
pub(super) async fn post_billing(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<Value>> {
    let Path(id) = path?;
    require_writer(&caller, &[Role::Operator, Role::Engineer, Role::Admin])?;
    let apr = checked_apr(&state, &caller, &id).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| Error::InvalidBody("the billing CSV must be UTF-8 text".into()))?;
    let months = kpi::parse_billing_csv(text).map_err(Error::InvalidBody)?;
    let st = state.clone();
    let user = caller.user.clone();
    let stored = months.clone();
    let key = apr.id.clone();
    let (before, after) = blocking(move || {
        let view = |rows: Vec<(String, f64)>| {
            json!(rows
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>())
        };
        let before = view(st.inner.analysis.billing(&key)?);
        st.inner
            .analysis
            .put_billing(&key, stored, &user, now_ms())?;
        Ok((before, view(st.inner.analysis.billing(&key)?)))
    })
    .await?;
    audit(
        &state,
        &caller,
        "billing.import",
        Some(&apr.id),
        apr.id.clone(),
        Some(before),
        Some(after),
    )
    .await?;
    Ok(Json(json!({
        "apr": id,
        "months": months.iter().map(|(m, v)| json!({"month": m, "billed_m3": v})).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldRecordIn {
    kind: FieldKind,
    #[serde(default)]
    taken_at: Option<String>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    parameter: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

fn field_view(f: &FieldRecord) -> Value {
    let limit = f.parameter.as_deref().and_then(field::lab_limit);
    json!({
        "id": f.id,
        "apr": f.apr,
        "kind": f.kind,
        "taken_at": rfc3339_ms(f.taken_at_ms),
        "value": f.value,
        "parameter": f.parameter,
        "limit": limit,
        "exceeds_limit": match (f.value, limit) { (Some(v), Some(l)) => Some(v > l), _ => None },
        "note": f.note,
        "recorded_by": f.recorded_by,
        "recorded_at": rfc3339_ms(f.recorded_at_ms),
    })
}

/// `POST /api/v1/aprs/{id}/field-records`: a DPD check, a lab result or a
/// visit.
pub(super) async fn post_field_record(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<Value>> {
    let Path(id) = path?;
    require_writer(&caller, &[Role::Operator, Role::Engineer, Role::Admin])?;
    let apr = checked_apr(&state, &caller, &id).await?;
    let input: FieldRecordIn = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidBody(format!("not a field record: {e}")))?;
    let now = now_ms();
    let taken_at_ms = match &input.taken_at {
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map_err(|_| Error::InvalidBody(format!("'taken_at' is not an RFC 3339 time: '{t}'")))?
            .timestamp_millis(),
        None => now,
    };
    if taken_at_ms > now + 300_000 {
        return Err(Error::InvalidBody("'taken_at' is in the future".into()));
    }
    let mut record = FieldRecord {
        id: 0,
        apr: apr.id.clone(),
        kind: input.kind,
        taken_at_ms,
        value: input.value,
        parameter: input.parameter,
        note: input.note,
        recorded_by: caller.user.clone(),
        recorded_at_ms: now,
    };
    field::validate(&record).map_err(Error::InvalidBody)?;
    let st = state.clone();
    let r = record.clone();
    record.id = blocking(move || st.inner.analysis.insert_field_record(r)).await?;
    let view = field_view(&record);
    audit(
        &state,
        &caller,
        "field_record.create",
        Some(&record.apr),
        record.id.to_string(),
        None,
        Some(view.clone()),
    )
    .await?;
    Ok(Json(view))
}

/// `GET /api/v1/aprs/{id}/field-records?from=&to=&kind=`.
pub(super) async fn list_field_records(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<Value>>> {
    let Path(id) = path?;
    let Query(pairs) = query?;
    let p = unique_params(&pairs, &["from", "to", "kind"])?;
    let to = match p.get("to") {
        Some(v) => local_ms(parse_day("to", v)?, 24),
        None => now_ms() + 300_000,
    };
    let from = match p.get("from") {
        Some(v) => local_ms(parse_day("from", v)?, 0),
        None => to - 90 * 86_400_000,
    };
    let kind = match p.get("kind") {
        Some(k) => Some(FieldKind::parse(k).ok_or_else(|| {
            Error::InvalidQuery(format!(
                "'{k}' is not a kind; one of dpd_chlorine, lab, visit"
            ))
        })?),
        None => None,
    };
    let apr = checked_apr(&state, &caller, &id).await?;
    let st = state.clone();
    let records = blocking(move || st.inner.analysis.field_records(&apr.id, from, to)).await?;
    Ok(Json(
        records
            .iter()
            .filter(|r| kind.is_none_or(|k| r.kind == k))
            .map(field_view)
            .collect(),
    ))
}

/// `GET /api/v1/aprs/{id}/assessment[?refresh=true]` (CONTRACT §3): the
/// latest assessment, computed now when there is none, it is older than a
/// day, or `refresh=true`.
pub(super) async fn assessment(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Assessment>> {
    let Path(id) = path?;
    let Query(pairs) = query?;
    let p = unique_params(&pairs, &["refresh"])?;
    let refresh = match p.get("refresh").copied() {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(Error::InvalidQuery(format!(
                "'refresh' must be true or false, not '{v}'"
            )))
        }
    };
    let apr = checked_apr(&state, &caller, &id).await?;
    let st = state.clone();
    let out = blocking(move || {
        let latest = st.inner.analysis.assessments(Some(&apr.id), 1)?;
        let fresh = latest
            .first()
            .is_some_and(|r| now_ms() - r.computed_at_ms < ASSESSMENT_MAX_AGE_MS);
        if fresh && !refresh {
            if let Some(a) = Assessment::from_rows(&apr.id, &latest) {
                return Ok(a);
            }
        }
        assess_now(&st, &apr)
    })
    .await?;
    Ok(Json(out))
}

/// `GET /api/v1/aprs/{id}/assessment/history?limit=N`: the stored
/// assessments, newest first, and when each component was raised and
/// cleared.
pub(super) async fn assessment_history(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>> {
    let Path(id) = path?;
    let Query(pairs) = query?;
    let p = unique_params(&pairs, &["limit"])?;
    let limit = match p.get("limit") {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| Error::InvalidQuery(format!("'limit' must be 1–1000, not '{v}'")))?,
        None => 100,
    };
    let apr = checked_apr(&state, &caller, &id).await?;
    let st = state.clone();
    let rows = blocking(move || st.inner.analysis.assessments(Some(&apr.id), limit)).await?;
    let mut times: Vec<i64> = rows.iter().map(|r| r.computed_at_ms).collect();
    times.dedup();
    let assessments: Vec<Assessment> = times
        .iter()
        .filter_map(|t| {
            let one: Vec<_> = rows
                .iter()
                .filter(|r| r.computed_at_ms == *t)
                .cloned()
                .collect();
            Assessment::from_rows(&id, &one)
        })
        .collect();
    // Transitions, oldest first.
    let mut changes = Vec::new();
    for c in COMPONENTS {
        let mut was = false;
        for t in times.iter().rev() {
            let now = rows
                .iter()
                .any(|r| r.computed_at_ms == *t && r.component == c && r.flagged);
            if now != was {
                changes.push(json!({
                    "component": c,
                    "event": if now { "raised" } else { "cleared" },
                    "at": rfc3339_ms(*t),
                }));
            }
            was = now;
        }
    }
    Ok(Json(
        json!({"apr": id, "assessments": assessments, "changes": changes}),
    ))
}

/// The KPIs an intervention's outcome compares, from the window figures.
fn outcome_figures(w: &WindowKpis) -> Vec<(&'static str, Option<f64>)> {
    vec![
        ("chlorine_compliance_pct", w.chlorine_compliance_pct),
        (
            "days_without_chlorine",
            Some(f64::from(w.days_without_chlorine)),
        ),
        ("night_consumption_l_s", w.night_consumption_l_s),
        ("leakage_l_s", w.leakage_l_s),
        ("continuity_h", w.continuity_h),
        ("pressure_low_days", Some(f64::from(w.pressure_low_days))),
        ("mean_day_m3", w.mean_day_m3),
        ("storage_hours", w.storage_hours),
        ("capacity_utilisation_pct", w.capacity_utilisation_pct),
        ("turbidity_high_h", Some(w.turbidity_high_h)),
        ("longest_gap_h", w.longest_gap_h),
    ]
}

/// The outcome of an intervention: each KPI over the [`OUTCOME_DAYS`] days
/// before its start and after its end, with the change; never a verdict.
fn outcome(state: &AppState, apr: &AprRecord, i: &InterventionRecord) -> Result<Value> {
    let (Ok(started), Ok(finished)) = (
        NaiveDate::parse_from_str(&i.started, "%Y-%m-%d"),
        NaiveDate::parse_from_str(&i.finished, "%Y-%m-%d"),
    ) else {
        return Ok(Value::Null);
    };
    let a = AssessmentLimits::default();
    let site = Site::from(apr);
    let before_from = started - chrono::Duration::days(OUTCOME_DAYS);
    let before_to = started - chrono::Duration::days(1);
    let after_from = finished + chrono::Duration::days(1);
    let after_to = finished + chrono::Duration::days(OUTCOME_DAYS);
    let load = |f: NaiveDate, t: NaiveDate| -> Result<WindowKpis> {
        let rows = state
            .inner
            .analysis
            .kpis(&apr.id, &f.to_string(), &t.to_string(), None)?;
        Ok(WindowKpis::from_rows(&rows, &site, &a))
    };
    let (before, after) = (load(before_from, before_to)?, load(after_from, after_to)?);
    let kpis: Vec<Value> = outcome_figures(&before)
        .into_iter()
        .zip(outcome_figures(&after))
        .map(|((k, b), (_, af))| {
            json!({"kpi": k, "before": b, "after": af,
                   "change": match (b, af) { (Some(b), Some(af)) => Some(af - b), _ => None }})
        })
        .collect();
    Ok(json!({
        "before": {"from": before_from.to_string(), "to": before_to.to_string(), "days_with_data": before.days},
        "after": {"from": after_from.to_string(), "to": after_to.to_string(), "days_with_data": after.days},
        "kpis": kpis,
    }))
}

fn intervention_view(i: &InterventionRecord, outcome: Value) -> Value {
    let mut v = serde_json::to_value(i).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("outcome".into(), outcome);
    }
    v
}

/// The APR of a stored intervention's JSON.
fn id_apr(v: &Value) -> String {
    v["apr"].as_str().unwrap_or_default().to_owned()
}

/// `POST /api/v1/aprs/{id}/interventions`.
pub(super) async fn post_intervention(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<Value>> {
    let Path(id) = path?;
    require_writer(&caller, &[Role::Engineer, Role::Admin])?;
    let apr = checked_apr(&state, &caller, &id).await?;
    let mut rec: InterventionRecord = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidBody(format!("not an intervention: {e}")))?;
    if !COMPONENTS.contains(&rec.component.as_str()) {
        return Err(Error::InvalidBody(format!(
            "'component' must be one of {}, not '{}'",
            COMPONENTS.join(", "),
            rec.component
        )));
    }
    let parse = |name: &str, v: &str| {
        NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .map_err(|_| Error::InvalidBody(format!("'{name}' must be YYYY-MM-DD, not '{v}'")))
    };
    if parse("started", &rec.started)? > parse("finished", &rec.finished)? {
        return Err(Error::InvalidBody("'started' is after 'finished'".into()));
    }
    if rec.description.trim().is_empty() || rec.funder.trim().is_empty() {
        return Err(Error::InvalidBody(
            "'description' and 'funder' must not be empty".into(),
        ));
    }
    rec.apr = apr.id.clone();
    let st = state.clone();
    let (out, id, stored) = blocking(move || {
        rec.id = st.inner.analysis.insert_intervention(rec.clone())?;
        let o = outcome(&st, &apr, &rec)?;
        Ok((
            intervention_view(&rec, o),
            rec.id,
            serde_json::to_value(&rec).unwrap_or_default(),
        ))
    })
    .await?;
    audit(
        &state,
        &caller,
        "intervention.create",
        Some(&id_apr(&stored)),
        id.to_string(),
        None,
        Some(stored),
    )
    .await?;
    Ok(Json(out))
}

/// `GET /api/v1/aprs/{id}/interventions`: each with its outcome (KPIs
/// before and after).
pub(super) async fn list_interventions(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<Value>>> {
    let Path(id) = path?;
    let apr = checked_apr(&state, &caller, &id).await?;
    let st = state.clone();
    let out = blocking(move || {
        st.inner
            .analysis
            .interventions(&apr.id)?
            .iter()
            .map(|i| Ok(intervention_view(i, outcome(&st, &apr, i)?)))
            .collect::<Result<Vec<_>>>()
    })
    .await?;
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AprRecord, DeviceUpsert, Region};
    use apr_wire::ingest::{IngestBatch, IngestPack};
    use apr_wire::validate::Reading;
    use apr_wire::Metric;

    #[test]
    fn the_first_pass_backfills_days_with_readings_and_assesses_each_apr() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::Config::default();
        cfg.store.path = dir.path().join("s.sqlite3");
        let state = crate::open(&cfg).unwrap();
        let apr = AprRecord {
            id: "a1".into(),
            name: "A1".into(),
            comuna: "Yumbel".into(),
            region: "biobio".into(),
            beneficiaries: 100,
            connections: 30,
            source: "pozo".into(),
            capacity_l_s: 1.0,
            storage_m3: 10.0,
            gore_contribution_clp: 0,
            public_investment_clp: 0,
        };
        let region = Region {
            id: "biobio".into(),
            name: "Biobío".into(),
        };
        state.registry().upsert_fleet(&[region], &[apr]).unwrap();
        state
            .registry()
            .upsert_device(&DeviceUpsert {
                apr: "a1".into(),
                device: "caseta".into(),
                mqtt_username: "a1-caseta".into(),
                mqtt_password_sha256: "00".into(),
                report_interval_s: 900,
                config: json!({}),
            })
            .unwrap();
        // A day ten days ago, written straight to the store (not through
        // the ingest route, so nobody marked it dirty).
        let day = local_day(now_ms()) - chrono::Duration::days(10);
        let start = local_ms(day, 0);
        let readings = (0..96)
            .map(|i| Reading {
                metric: Metric::Chlorine,
                t_ms: start + i * 900_000,
                value: 1.0,
            })
            .collect();
        state
            .series()
            .write_batch(IngestBatch {
                gateway: "gw".into(),
                seq: 1,
                packs: vec![IngestPack {
                    apr: "a1".into(),
                    device: "caseta".into(),
                    bt: None,
                    received_ms: start,
                    readings,
                    refusals: vec![],
                    raw: None,
                }],
                statuses: vec![],
            })
            .unwrap();
        let assessed = kpi_pass(&state, true, None).unwrap();
        assert_eq!(assessed, Some(local_day(now_ms())));
        let rows = state
            .analysis()
            .kpis(
                "a1",
                &day.to_string(),
                &day.to_string(),
                Some("chlorine_readings"),
            )
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].value, 96.0);
        let stored = state.analysis().assessments(Some("a1"), 10).unwrap();
        assert_eq!(stored.len(), 4, "one row per component");
        // The same day again: no second assessment.
        assert_eq!(kpi_pass(&state, false, assessed).unwrap(), assessed);
        assert_eq!(
            state.analysis().assessments(Some("a1"), 10).unwrap().len(),
            4
        );
    }
}
