//! The four-component assessment of an APR (CONTRACT §3): for diagnosis,
//! technology, engineering and training, whether the evidence flags it and
//! why, each reason with the KPI values, the window and the thresholds
//! behind it.
//!
//! The rules live in one documented place, [`rules`], as pure functions;
//! this module gathers their inputs from the stores (the window's daily
//! KPIs, the alerts, the field records and the probe readings next to each
//! DPD check) and keeps each computation in `assessments`, so a reviewer
//! sees when a flag was raised and cleared. The server recomputes every
//! APR's assessment once a day and on demand.

pub mod rules;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;

use crate::alerting::engine::ProbeCheck;
use crate::alerting::Alert;
use crate::error::Result;
use crate::field::compare_dpd;
use crate::kpi::{local_ms, window_start, Site, WindowKpis};
use crate::limits::{AssessmentLimits, Limits};
use crate::store::{
    AlertQuery, AlertStore, AnalysisStore, AprRecord, AssessmentRow, FieldKind, SeriesQuery,
    SeriesStore,
};
use apr_wire::Metric;
pub use rules::{ComponentResult, Reason, COMPONENTS};

/// A time as the API writes it (RFC 3339, UTC, milliseconds).
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One component as CONTRACT §3 writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentView {
    /// Component name.
    pub component: String,
    /// Flagged.
    pub flagged: bool,
    /// `[{"code","message","evidence"}]`.
    pub reasons: serde_json::Value,
}

/// An assessment as CONTRACT §3 writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    /// APR id.
    pub apr: String,
    /// RFC 3339.
    pub computed_at: String,
    /// The four components, in order.
    pub components: Vec<ComponentView>,
}

impl Assessment {
    /// The stored rows of one computation (any order) as an assessment.
    pub fn from_rows(apr: &str, rows: &[AssessmentRow]) -> Option<Assessment> {
        let at = rows.first()?.computed_at_ms;
        let components = COMPONENTS
            .iter()
            .map(|c| {
                let row = rows.iter().find(|r| r.component == *c);
                ComponentView {
                    component: (*c).to_owned(),
                    flagged: row.is_some_and(|r| r.flagged),
                    reasons: row.map_or(serde_json::json!([]), |r| r.reasons.clone()),
                }
            })
            .collect();
        Some(Assessment {
            apr: apr.to_owned(),
            computed_at: rfc3339_ms(at),
            components,
        })
    }

    /// The flagged components' names.
    pub fn flagged(&self) -> Vec<&str> {
        self.components
            .iter()
            .filter(|c| c.flagged)
            .map(|c| c.component.as_str())
            .collect()
    }
}

/// What an APR's DPD checks of the last [`PROBE_LOOKBACK_DAYS`] say about
/// its chlorine probe now, for the alert engine
/// ([`crate::alerting::engine::Engine::on_probe_check`]), when one of them
/// was recorded at or after `recorded_since` (ms; `i64::MIN`: always).
/// `None` also when no check matches a probe reading or the latest checks
/// neither drift nor agree (a single check off: wait for the next);
/// otherwise the verdict, drifting by
/// [`probe_drift`](crate::field::probe_drift) or agreeing (the latest check
/// within tolerance).
pub fn probe_verdict(
    series: &dyn SeriesStore,
    analysis: &dyn AnalysisStore,
    apr: &str,
    a: &AssessmentLimits,
    now_ms: i64,
    recorded_since: i64,
) -> Result<Option<ProbeCheck>> {
    let field = analysis.field_records(
        apr,
        now_ms - i64::from(PROBE_LOOKBACK_DAYS) * 86_400_000,
        now_ms + 300_000,
    )?;
    let checks: Vec<_> = field
        .iter()
        .filter(|f| f.kind == FieldKind::DpdChlorine)
        .filter_map(|f| Some((f.taken_at_ms, f.value?, f.recorded_at_ms)))
        .collect();
    if !checks.iter().any(|c| c.2 >= recorded_since) {
        return Ok(None);
    }
    let Some(device) = series
        .latest(apr)?
        .into_iter()
        .find(|l| l.metric == Metric::Chlorine)
        .map(|l| l.device)
    else {
        return Ok(None);
    };
    let dpd: Vec<(i64, f64)> = checks.iter().map(|c| (c.0, c.1)).collect();
    let comparisons = dpd_against_probe(series, apr, Some(&device), &dpd, a)?;
    let Some(last) = comparisons.last() else {
        return Ok(None);
    };
    let drift = match crate::field::probe_drift(&comparisons, a) {
        Some(d) => {
            let n = d.checks.len().max(1) as f64;
            let mean = d.checks.iter().map(|c| c.difference_mg_l).sum::<f64>() / n;
            Some((mean, last.tolerance_mg_l))
        }
        None if last.difference_mg_l.abs() <= last.tolerance_mg_l => None,
        None => return Ok(None),
    };
    Ok(Some(ProbeCheck {
        apr: apr.to_owned(),
        device,
        drift,
        at_ms: last.taken_at_ms,
    }))
}

/// The DPD checks `dpd` (time, mg/L) of `apr` matched with the chlorine
/// probe's readings (of `device`, or any) within the match window, as
/// [`compare_dpd`] does.
fn dpd_against_probe(
    series: &dyn SeriesStore,
    apr: &str,
    device: Option<&str>,
    dpd: &[(i64, f64)],
    a: &AssessmentLimits,
) -> Result<Vec<crate::field::DpdComparison>> {
    let margin = a.probe_match_minutes * 60_000;
    let mut probe = Vec::new();
    for (t, _) in dpd {
        probe.extend(series.readings(&SeriesQuery {
            apr,
            metric: Metric::Chlorine,
            device,
            from_ms: t - margin,
            to_ms: t + margin,
            step_ms: None,
            limit: 10_000,
        })?);
    }
    probe.sort_by_key(|p| p.t_ms);
    probe.dedup_by_key(|p| p.t_ms);
    Ok(compare_dpd(dpd, &probe, a))
}

/// How far back [`probe_verdict`] looks for DPD checks, days.
pub const PROBE_LOOKBACK_DAYS: u32 = 90;

/// Computes the assessment of `apr` over the window of
/// [`AssessmentLimits::window_days`] local days ending on `last_day`, from
/// the stored daily KPIs (compute them first, see [`crate::kpi::refresh`]).
/// Answers the components and the rows to store.
#[allow(clippy::too_many_arguments)]
pub fn compute(
    series: &dyn SeriesStore,
    alerts: &dyn AlertStore,
    analysis: &dyn AnalysisStore,
    apr: &AprRecord,
    limits: &Limits,
    a: &AssessmentLimits,
    last_day: NaiveDate,
    now_ms: i64,
) -> Result<(Vec<ComponentResult>, Vec<AssessmentRow>)> {
    let first = window_start(last_day, a.window_days);
    let rows = analysis.kpis(&apr.id, &first.to_string(), &last_day.to_string(), None)?;
    let window = WindowKpis::from_rows(&rows, &Site::from(apr), a);
    let (from_ms, to_ms) = (local_ms(first, 0), local_ms(last_day, 24));
    let in_window: Vec<Alert> = alerts
        .alerts(&AlertQuery {
            aprs: Some(vec![apr.id.clone()]),
            limit: 10_000,
            ..AlertQuery::default()
        })?
        .into_iter()
        .filter(|al| (from_ms..to_ms).contains(&al.opened_at_ms))
        .collect();
    let field = analysis.field_records(&apr.id, from_ms, to_ms - 1)?;
    let dpd: Vec<(i64, f64)> = field
        .iter()
        .filter(|f| f.kind == FieldKind::DpdChlorine)
        .filter_map(|f| Some((f.taken_at_ms, f.value?)))
        .collect();
    let comparisons = dpd_against_probe(series, &apr.id, None, &dpd, a)?;
    let days = u32::try_from((last_day - first).num_days() + 1).unwrap_or(1);
    let components = rules::assess(&rules::Inputs {
        window: &window,
        from_ms,
        to_ms,
        days,
        storage_m3: apr.storage_m3,
        capacity_l_s: apr.capacity_l_s,
        limits,
        a,
        alerts: &in_window,
        field: &field,
        dpd: &comparisons,
        now_ms,
    });
    let stored = components
        .iter()
        .map(|c| AssessmentRow {
            apr: apr.id.clone(),
            computed_at_ms: now_ms,
            component: c.component.to_owned(),
            flagged: c.flagged,
            reasons: serde_json::to_value(&c.reasons).unwrap_or_default(),
        })
        .collect();
    Ok((components, stored))
}

/// Flag counts per component over the latest assessments of `aprs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Flagged {
    /// APRs flagged for diagnosis.
    pub diagnosis: u64,
    /// For technology improvements.
    pub technology: u64,
    /// For new engineering designs.
    pub engineering: u64,
    /// For operator training.
    pub training: u64,
}

impl Flagged {
    /// Counts the flagged components of the latest rows whose APR `keep`s.
    pub fn count(latest: &[AssessmentRow], keep: impl Fn(&str) -> bool) -> Flagged {
        let mut f = Flagged::default();
        for r in latest.iter().filter(|r| r.flagged && keep(&r.apr)) {
            match r.component.as_str() {
                "diagnosis" => f.diagnosis += 1,
                "technology" => f.technology += 1,
                "engineering" => f.engineering += 1,
                "training" => f.training += 1,
                _ => {}
            }
        }
        f
    }
}
