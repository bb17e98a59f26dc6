//! Registry and series routes: APRs, readings, program summary.
//!
//! Times in answers are RFC 3339 in UTC with millisecond precision, always
//! written the same way: `2025-11-25T10:00:00.000Z`. Times in queries may be
//! any RFC 3339 time (any offset, any precision down to the millisecond).

use std::collections::HashMap;

use apr_wire::id::is_valid_id;
use apr_wire::Metric;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::principal::require_reader;
use super::{blocking, AppState};
use crate::auth::{apr_access, AprAccess, Principal};
use crate::error::{Error, Result};
use crate::store::{AprRecord, DeviceRecord, SeriesQuery};
use crate::summary::{summarize, Summary};

/// Most raw points one readings answer carries.
pub const MAX_POINTS: usize = 200_000;
/// Largest `step`, seconds (365 days).
pub const MAX_STEP_S: u64 = 31_536_000;
/// Default window when `from` is not given.
const DEFAULT_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// A time as the API writes it.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or(if ms < 0 {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Serialize)]
struct DeviceView {
    id: String,
    online: bool,
    last_seen: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct AprView {
    #[serde(flatten)]
    apr: AprRecord,
    region_name: String,
    devices: Vec<DeviceView>,
}

fn view(
    apr: AprRecord,
    regions: &HashMap<String, String>,
    devices: &[DeviceRecord],
    now: i64,
) -> AprView {
    AprView {
        region_name: regions.get(&apr.region).cloned().unwrap_or_default(),
        devices: devices
            .iter()
            .filter(|d| d.apr == apr.id)
            .map(|d| DeviceView {
                id: d.device.clone(),
                online: d.online(now),
                last_seen: d.last_seen_ms.map(rfc3339_ms),
            })
            .collect(),
        apr,
    }
}

type Loaded = (Vec<AprRecord>, HashMap<String, String>, Vec<DeviceRecord>);

pub(super) async fn load(state: &AppState, one: Option<String>) -> Result<Loaded> {
    let registry = state.inner.registry.clone();
    blocking(move || {
        let aprs = match &one {
            Some(id) => registry.apr(id)?.into_iter().collect(),
            None => registry.aprs()?,
        };
        let regions = registry
            .regions()?
            .into_iter()
            .map(|r| (r.id, r.name))
            .collect();
        let ids: Vec<String> = aprs.iter().map(|a: &AprRecord| a.id.clone()).collect();
        let devices = registry.devices(Some(&ids))?;
        Ok((aprs, regions, devices))
    })
    .await
}

/// `GET /api/v1/aprs`: the APRs in the caller's scope.
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Principal,
) -> Result<Json<Vec<AprView>>> {
    require_reader(&caller)?;
    let (aprs, regions, devices) = load(&state, None).await?;
    let now = Utc::now().timestamp_millis();
    Ok(Json(
        aprs.into_iter()
            .filter(|a| caller.scope.allows_apr(a))
            .map(|a| view(a, &regions, &devices, now))
            .collect(),
    ))
}

/// Loads one APR after checking the caller may see it.
pub(super) async fn checked_apr(
    state: &AppState,
    caller: &Principal,
    id: &str,
) -> Result<AprRecord> {
    require_reader(caller)?;
    // A scoped caller learns nothing about APRs outside its scope, not even
    // whether they exist, so the scope decides before the lookup when it can.
    if caller.scope.allows_apr_id(id) == Some(false) {
        return Err(forbidden_apr(id));
    }
    let registry = state.inner.registry.clone();
    let key = id.to_owned();
    let record = blocking(move || registry.apr(&key)).await?;
    match apr_access(&caller.scope, id, record.as_ref()) {
        AprAccess::Allowed => record.ok_or_else(|| not_found_apr(id)),
        AprAccess::Forbidden => Err(forbidden_apr(id)),
        AprAccess::NotFound => Err(not_found_apr(id)),
    }
}

pub(super) fn forbidden_apr(id: &str) -> Error {
    Error::Forbidden(format!("APR '{id}' is outside this token's scope"))
}

fn not_found_apr(id: &str) -> Error {
    Error::NotFound(format!("APR '{id}' does not exist"))
}

/// `GET /api/v1/aprs/{id}`.
pub(super) async fn one(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<AprView>> {
    let Path(id) = path?;
    let apr = checked_apr(&state, &caller, &id).await?;
    let (_, regions, devices) = load(&state, Some(apr.id.clone())).await?;
    Ok(Json(view(
        apr,
        &regions,
        &devices,
        Utc::now().timestamp_millis(),
    )))
}

/// The parameters of a readings query, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadingsParams {
    pub metric: Metric,
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_s: Option<u64>,
    pub device: Option<String>,
}

fn metric_list() -> String {
    Metric::ALL.map(Metric::name).join(", ")
}

pub(super) fn unique_params<'a>(
    pairs: &'a [(String, String)],
    allowed: &[&str],
) -> Result<HashMap<&'a str, &'a str>> {
    let mut map = HashMap::new();
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(Error::InvalidQuery(format!(
                "query parameter '{k}' is not known; this route takes {}",
                allowed.join(", ")
            )));
        }
        if map.insert(k.as_str(), v.as_str()).is_some() {
            return Err(Error::InvalidQuery(format!(
                "query parameter '{k}' is given twice"
            )));
        }
    }
    Ok(map)
}

/// The `limit` query parameter: `default` when absent, else a whole number
/// from 1 to `max`.
pub(super) fn limit_param(p: &HashMap<&str, &str>, default: usize, max: usize) -> Result<usize> {
    match p.get("limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                Error::InvalidQuery(format!(
                    "query parameter 'limit': '{v}' is not a whole number from 1 to {max}"
                ))
            }),
    }
}

fn parse_time(name: &str, value: &str) -> Result<i64> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            Error::InvalidQuery(format!(
                "query parameter '{name}': '{value}' is not an RFC 3339 time \
                 (like 2025-11-25T10:00:00Z)"
            ))
        })
}

/// Checks the query string of a readings request; `now_ms` fills the defaults.
pub(crate) fn parse_readings_params(
    pairs: &[(String, String)],
    now_ms: i64,
) -> Result<ReadingsParams> {
    let p = unique_params(pairs, &["metric", "from", "to", "step", "device"])?;
    let metric = match p.get("metric") {
        None => {
            return Err(Error::InvalidQuery(format!(
                "query parameter 'metric' is required; one of {}",
                metric_list()
            )))
        }
        Some(m) => Metric::from_name(m).ok_or_else(|| {
            Error::InvalidQuery(format!(
                "query parameter 'metric': '{m}' is not a metric; one of {}",
                metric_list()
            ))
        })?,
    };
    let to_ms = p.get("to").map(|v| parse_time("to", v)).transpose()?;
    let from_ms = p.get("from").map(|v| parse_time("from", v)).transpose()?;
    let to_ms = to_ms.unwrap_or(now_ms);
    let from_ms = from_ms.unwrap_or(to_ms.saturating_sub(DEFAULT_WINDOW_MS));
    if from_ms > to_ms {
        return Err(Error::InvalidQuery(format!(
            "query parameters 'from' ({}) and 'to' ({}): 'from' is after 'to'",
            rfc3339_ms(from_ms),
            rfc3339_ms(to_ms)
        )));
    }
    let step_s = p
        .get("step")
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|s| (1..=MAX_STEP_S).contains(s))
                .ok_or_else(|| {
                    Error::InvalidQuery(format!(
                        "query parameter 'step': '{v}' is not a whole number of seconds \
                         from 1 to {MAX_STEP_S}"
                    ))
                })
        })
        .transpose()?;
    let device = p
        .get("device")
        .map(|d| {
            if is_valid_id(d) {
                Ok((*d).to_owned())
            } else {
                Err(Error::InvalidQuery(format!(
                    "query parameter 'device': '{d}' is not a device id"
                )))
            }
        })
        .transpose()?;
    Ok(ReadingsParams {
        metric,
        from_ms,
        to_ms,
        step_s,
        device,
    })
}

#[derive(Debug, Serialize)]
pub(super) struct PointView {
    t: String,
    v: f64,
}

#[derive(Debug, Serialize)]
pub(super) struct ReadingsView {
    apr: String,
    metric: Metric,
    unit: &'static str,
    points: Vec<PointView>,
}

/// `GET /api/v1/aprs/{id}/readings`.
pub(super) async fn readings(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ReadingsView>> {
    let Path(id) = path?;
    let Query(pairs) = query?;
    let params = parse_readings_params(&pairs, Utc::now().timestamp_millis())?;
    let apr = checked_apr(&state, &caller, &id).await?;
    let series = state.inner.series.clone();
    let q = params.clone();
    let apr_id = apr.id.clone();
    let points = blocking(move || {
        series.readings(&SeriesQuery {
            apr: &apr_id,
            metric: q.metric,
            device: q.device.as_deref(),
            from_ms: q.from_ms,
            to_ms: q.to_ms,
            step_ms: q.step_s.map(|s| (s * 1000) as i64),
            limit: MAX_POINTS + 1,
        })
    })
    .await?;
    if points.len() > MAX_POINTS {
        let span_s = (params.to_ms - params.from_ms) / 1000;
        let hint = (span_s / 1000).max(60);
        return Err(Error::TooManyPoints(match params.step_s {
            None => format!(
                "more than {MAX_POINTS} points between {} and {}; pass step=<seconds> for \
                 bucket means (e.g. step={hint}) or a shorter from/to window",
                rfc3339_ms(params.from_ms),
                rfc3339_ms(params.to_ms)
            ),
            Some(step) => format!(
                "more than {MAX_POINTS} buckets of {step} s between {} and {}; pass a larger \
                 step (e.g. step={hint}) or a shorter from/to window",
                rfc3339_ms(params.from_ms),
                rfc3339_ms(params.to_ms)
            ),
        }));
    }
    Ok(Json(ReadingsView {
        apr: apr.id,
        metric: params.metric,
        unit: params.metric.display_unit(),
        points: points
            .into_iter()
            .map(|p| PointView {
                t: rfc3339_ms(p.t_ms),
                v: p.v,
            })
            .collect(),
    }))
}

/// `GET /api/v1/summary[?region=ID]`.
pub(super) async fn summary(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Summary>> {
    require_reader(&caller)?;
    let Query(pairs) = query?;
    let p = unique_params(&pairs, &["region"])?;
    let region = p.get("region").map(|r| (*r).to_owned());
    if let Some(r) = &region {
        if !caller.scope.allows_region(r) {
            return Err(Error::Forbidden(format!(
                "region '{r}' is outside this token's scope"
            )));
        }
    }
    let (aprs, regions, _) = load(&state, None).await?;
    if let Some(r) = &region {
        if !regions.contains_key(r) {
            return Err(Error::NotFound(format!("region '{r}' does not exist")));
        }
    }
    let alerts = state.inner.alerts.clone();
    let open: HashMap<String, u64> = blocking(move || alerts.open_alerts_by_apr())
        .await?
        .into_iter()
        .collect();
    let in_view: Vec<&AprRecord> = aprs
        .iter()
        .filter(|a| caller.scope.allows_apr(a) && region.as_ref().is_none_or(|r| a.region == *r))
        .collect();
    let mut s = summarize(in_view.iter().copied());
    s.open_alerts = in_view
        .iter()
        .map(|a| open.get(&a.id).copied().unwrap_or(0))
        .sum();
    let analysis = state.inner.analysis.clone();
    let latest = blocking(move || analysis.latest_assessments()).await?;
    let ids: std::collections::HashSet<&str> = in_view.iter().map(|a| a.id.as_str()).collect();
    s.flagged = crate::assessment::Flagged::count(&latest, |apr| ids.contains(apr));
    Ok(Json(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_064_800_000; // 2025-11-25T10:00:00Z

    fn q(pairs: &[(&str, &str)]) -> Result<ReadingsParams> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| ((*a).into(), (*b).into()))
            .collect();
        parse_readings_params(&v, NOW)
    }

    fn message(r: Result<ReadingsParams>) -> String {
        match r {
            Err(Error::InvalidQuery(m)) => m,
            other => panic!("expected an invalid query, got {other:?}"),
        }
    }

    #[test]
    fn the_window_defaults_to_the_last_day() {
        let p = q(&[("metric", "chlorine")]).unwrap();
        assert_eq!((p.from_ms, p.to_ms), (NOW - 86_400_000, NOW));
        assert_eq!(p.step_s, None);
    }

    #[test]
    fn a_bad_time_names_the_parameter_and_the_value() {
        let m = message(q(&[("metric", "ph"), ("from", "2024-13-01")]));
        assert!(
            m.starts_with("query parameter 'from': '2024-13-01' is not an RFC 3339 time"),
            "{m}"
        );
    }

    #[test]
    fn metric_is_required_and_must_be_known() {
        assert!(message(q(&[])).contains("'metric' is required"));
        let m = message(q(&[("metric", "temperature")]));
        assert!(
            m.contains("'temperature' is not a metric") && m.contains("tank_level"),
            "{m}"
        );
    }

    #[test]
    fn from_after_to_is_refused() {
        let m = message(q(&[
            ("metric", "ph"),
            ("from", "2025-11-25T11:00:00Z"),
            ("to", "2025-11-25T10:00:00+00:00"),
        ]));
        assert!(m.contains("'from' is after 'to'"), "{m}");
    }

    #[test]
    fn step_must_be_a_positive_whole_number_of_seconds_up_to_a_year() {
        for bad in ["0", "-1", "1.5", "x", "31536001"] {
            let m = message(q(&[("metric", "ph"), ("step", bad)]));
            assert!(m.contains("'step'"), "{bad}: {m}");
        }
        assert_eq!(
            q(&[("metric", "ph"), ("step", "31536000")]).unwrap().step_s,
            Some(31_536_000)
        );
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert!(message(q(&[("metric", "ph"), ("stpe", "60")])).contains("'stpe' is not known"));
        assert!(message(q(&[("metric", "ph"), ("metric", "ph")])).contains("given twice"));
        assert!(message(q(&[("metric", "ph"), ("device", "Bad Id")])).contains("'device'"));
    }

    #[test]
    fn times_are_written_in_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(NOW), "2025-11-25T10:00:00.000Z");
        assert_eq!(rfc3339_ms(NOW + 1), "2025-11-25T10:00:00.001Z");
        let p = q(&[("metric", "ph"), ("to", "2025-11-25T07:00:00-03:00")]).unwrap();
        assert_eq!(p.to_ms, NOW);
    }
}
