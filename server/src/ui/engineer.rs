//! The engineer's pages and exports.
//!
//! # KPIs
//! The server has no KPI engine yet, so the table and the KPI export carry
//! the few indicators this module computes itself from hourly means of the
//! last 7 days, cached for 5 minutes (see [`Kpis`]): chlorine compliance
//! (share of hourly means within the APR's chlorine limits), days without a
//! chlorine reading, and the minimum night flow (lowest hourly mean in the
//! night window, local time). NRW and continuity stay empty until the KPI
//! engine exists; assessments likewise.
//!
//! # Series explorer
//! Any window: up to 2 days the raw readings are drawn (the chart reduces
//! them min/max per pixel column); beyond, the store's `step` bucketing
//! returns at most [`EXPLORER_BUCKETS`] bucket means, so a year of 1-minute
//! data (525,600 readings) becomes 1,600 points before it leaves SQLite.
//!
//! # Exports
//! - `serie.csv`: the explorer's window, raw readings (RFC 4180, UTC).
//! - `indicadores.csv`: the KPIs above plus daily means of each metric over
//!   30 days (UTC days), as `apr,apr_name,kpi,value,unit,from_utc,to_utc`.
//! - `patron.inp`: the measured 24-hour demand pattern as an EPANET
//!   `[PATTERNS]` section: hourly means of the flow over the last 28 days,
//!   grouped by local hour in America/Santiago (chrono-tz, so both DST
//!   offsets are right), each divided by the daily mean.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use apr_dashboards::export::{self, KpiRecord};
use apr_dashboards::model::{
    AprKpiRow, ComponentFlags, EngineerAprPage, EngineerOverview, ErrorKind, ExportLinks,
    SeriesExplorer, SortKey,
};
use apr_wire::Metric;
use axum::extract::{Path, Query};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDateTime, TimeZone, Timelike};

use super::operator::{chart_of, chart_view, limits_of, view_metric};
use super::{apr_ref, blocking, local, Ctx, Page, Ui};
use crate::auth::Role;
use crate::error::{Error, Result};
use crate::limits::LOCAL_TZ;
use crate::store::{AprRecord, SeriesQuery};

/// Most bucket means the explorer asks the store for.
pub const EXPLORER_BUCKETS: i64 = 1600;
/// Up to this window the explorer draws raw readings.
const RAW_WINDOW_MS: i64 = 2 * 86_400_000;
/// The KPI window.
const KPI_WINDOW_MS: i64 = 7 * 86_400_000;
/// How long computed KPIs are reused.
const KPI_TTL: Duration = Duration::from_secs(300);
/// Most raw readings one CSV export carries.
const MAX_CSV_POINTS: usize = 1_100_000;

/// The explorer's metrics.
const EXPLORER_METRICS: [Metric; 10] = [
    Metric::Chlorine,
    Metric::Turbidity,
    Metric::TankLevel,
    Metric::Flow,
    Metric::Pressure,
    Metric::Ph,
    Metric::Conductivity,
    Metric::Volume,
    Metric::Battery,
    Metric::Rssi,
];

/// The indicators this module computes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Kpis {
    /// Share of hourly chlorine means within the limits, %.
    pub chlorine_compliance_pct: Option<f64>,
    /// Local days of the window without a chlorine reading.
    pub days_without_chlorine: Option<u32>,
    /// Lowest hourly mean flow in the night window, l/s.
    pub min_night_flow_l_s: Option<f64>,
    /// Window start, ms.
    pub from_ms: i64,
    /// Window end, ms.
    pub to_ms: i64,
}

/// Every APR's KPIs, by APR id.
type KpiMap = Arc<HashMap<String, Kpis>>;

/// KPIs of every APR, computed at most every [`KPI_TTL`].
#[derive(Debug, Default)]
pub(crate) struct KpiCache {
    cached: Mutex<Option<(Instant, KpiMap)>>,
}

fn hourly(ui: &Ui, apr: &str, m: Metric, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, f64)>> {
    Ok(ui
        .app()
        .series()
        .readings(&SeriesQuery {
            apr,
            metric: m,
            device: None,
            from_ms,
            to_ms,
            step_ms: Some(3_600_000),
            limit: 100_000,
        })?
        .into_iter()
        .map(|p| (p.t_ms, p.v))
        .collect())
}

/// The KPIs of one APR over `[to_ms - 7 days, to_ms]`.
pub fn kpis_of(ui: &Ui, apr: &str, to_ms: i64) -> Result<Kpis> {
    let from_ms = to_ms - KPI_WINDOW_MS;
    let limits = limits_of(ui, apr)?;
    let cl = hourly(ui, apr, Metric::Chlorine, from_ms, to_ms)?;
    let ok = cl
        .iter()
        .filter(|(_, v)| *v >= limits.chlorine_min_mg_l && *v <= limits.chlorine_max_mg_l)
        .count();
    let mut days_with = std::collections::BTreeSet::new();
    for (t, _) in &cl {
        days_with.insert(local(*t).date_naive());
    }
    let first_day = local(from_ms).date_naive();
    let last_day = local(to_ms).date_naive();
    let days = u32::try_from((last_day - first_day).num_days() + 1).unwrap_or(0);
    let flow = hourly(ui, apr, Metric::Flow, from_ms, to_ms)?;
    let night = limits.night_window;
    let min_night = flow
        .iter()
        .filter(|(t, _)| {
            let h = local(*t).hour();
            h >= u32::from(night.start) && h < u32::from(night.end)
        })
        .map(|(_, v)| *v)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
    Ok(Kpis {
        chlorine_compliance_pct: (!cl.is_empty()).then(|| 100.0 * ok as f64 / cl.len() as f64),
        days_without_chlorine: Some(days.saturating_sub(days_with.len() as u32)),
        min_night_flow_l_s: min_night,
        from_ms,
        to_ms,
    })
}

impl Ui {
    /// Every APR's KPIs (cached).
    pub(crate) fn all_kpis(&self, aprs: &[AprRecord]) -> Result<KpiMap> {
        let cache = &self.inner.kpis;
        {
            let c = cache.cached.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, k)) = &*c {
                if at.elapsed() < KPI_TTL && aprs.iter().all(|a| k.contains_key(&a.id)) {
                    return Ok(k.clone());
                }
            }
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut map = HashMap::new();
        for a in aprs {
            map.insert(a.id.clone(), kpis_of(self, &a.id, now)?);
        }
        let k = Arc::new(map);
        *cache.cached.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), k.clone()));
        Ok(k)
    }
}

fn kpi_row(
    a: &AprRecord,
    regions: &[crate::store::Region],
    k: Option<&Kpis>,
    open: u32,
) -> AprKpiRow {
    AprKpiRow {
        apr: apr_ref(a, regions),
        beneficiaries: a.beneficiaries,
        chlorine_compliance_pct: k.and_then(|k| k.chlorine_compliance_pct),
        days_without_chlorine: k.and_then(|k| k.days_without_chlorine),
        min_night_flow_l_s: k.and_then(|k| k.min_night_flow_l_s),
        nrw_l_conn_day: None,
        continuity_h_day: None,
        open_alerts: open,
        flags: ComponentFlags::default(),
        detail_url: format!("/ingenieria/{}", a.id),
    }
}

fn open_by_apr(ui: &Ui) -> Result<HashMap<String, u32>> {
    Ok(ui
        .app()
        .alerts()
        .open_alerts_by_apr()?
        .into_iter()
        .map(|(a, n)| (a, u32::try_from(n).unwrap_or(u32::MAX)))
        .collect())
}

const ENGINEERING: [Role; 2] = [Role::Engineer, Role::Admin];

/// `GET /ingenieria?sort=…&dir=asc|desc`: every APR in scope.
pub(super) async fn overview(ctx: Ctx, Query(q): Query<HashMap<String, String>>) -> Response {
    async fn inner(ctx: &Ctx, q: &HashMap<String, String>) -> Page {
        let p = ctx.principal()?.clone();
        ctx.require(&p, &ENGINEERING)?;
        let sort = q
            .get("sort")
            .and_then(|s| SortKey::parse(s))
            .unwrap_or_default();
        let descending = q.get("dir").is_some_and(|d| d == "desc");
        let ui = ctx.ui.clone();
        let rows = blocking(move || {
            let registry = ui.app().registry();
            let regions = registry.regions()?;
            let aprs: Vec<AprRecord> = registry
                .aprs()?
                .into_iter()
                .filter(|a| p.scope.allows_apr(a))
                .collect();
            let kpis = ui.all_kpis(&aprs)?;
            let open = open_by_apr(&ui)?;
            Ok(aprs
                .iter()
                .map(|a| {
                    kpi_row(
                        a,
                        &regions,
                        kpis.get(&a.id),
                        open.get(&a.id).copied().unwrap_or(0),
                    )
                })
                .collect::<Vec<_>>())
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        let now = chrono::Utc::now().timestamp_millis();
        let page = EngineerOverview {
            rows,
            sort,
            descending,
            base_url: apr_dashboards::paths::ENGINEER.to_owned(),
            window_from: local(now - KPI_WINDOW_MS),
            window_to: local(now),
            kpis_csv_url: "/ingenieria/indicadores.csv".to_owned(),
        };
        Ok(ctx.page(apr_dashboards::render_engineer_overview(
            &ctx.layout(),
            &page,
        )))
    }
    inner(&ctx, &q).await.unwrap_or_else(|r| r)
}

/// The explorer's window and metric from the query (local
/// `yyyy-mm-ddTHH:MM` times; default: the last 7 days of chlorine).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Metric.
    pub metric: Metric,
    /// Start, ms.
    pub from_ms: i64,
    /// End, ms.
    pub to_ms: i64,
}

impl Window {
    /// Parses `metric`, `from`, `to`; `None` when malformed or reversed.
    pub fn parse(q: &HashMap<String, String>, now_ms: i64) -> Option<Window> {
        let metric = match q.get("metric") {
            Some(m) => Metric::from_name(m).filter(|m| EXPLORER_METRICS.contains(m))?,
            None => Metric::Chlorine,
        };
        let time = |k: &str| -> Option<Option<i64>> {
            match q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                None => Some(None),
                Some(s) => {
                    let n = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
                        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
                        .ok()?;
                    Some(Some(
                        LOCAL_TZ
                            .from_local_datetime(&n)
                            .earliest()?
                            .timestamp_millis(),
                    ))
                }
            }
        };
        let to_ms = time("to")?.unwrap_or(now_ms);
        let from_ms = time("from")?.unwrap_or(to_ms - KPI_WINDOW_MS);
        (from_ms < to_ms && to_ms - from_ms <= 20 * 365 * 86_400_000).then_some(Window {
            metric,
            from_ms,
            to_ms,
        })
    }

    /// The bucket width the explorer asks for: `None` (raw) up to 2 days,
    /// else the window over [`EXPLORER_BUCKETS`], in whole minutes.
    pub fn step_ms(&self) -> Option<i64> {
        let span = self.to_ms - self.from_ms;
        (span > RAW_WINDOW_MS).then(|| {
            let step = (span + EXPLORER_BUCKETS - 1) / EXPLORER_BUCKETS;
            (step + 59_999) / 60_000 * 60_000
        })
    }

    fn query(&self) -> String {
        format!(
            "metric={}&from={}&to={}",
            self.metric.name(),
            apr_dashboards::format::datetime_input(&local(self.from_ms)),
            apr_dashboards::format::datetime_input(&local(self.to_ms))
        )
    }
}

/// The engineer's page of one APR, as a view model.
pub fn apr_view(ui: &Ui, apr: &AprRecord, w: &Window) -> Result<EngineerAprPage> {
    let registry = ui.app().registry();
    let regions = registry.regions()?;
    let now = chrono::Utc::now().timestamp_millis();
    let kpis = kpis_of(ui, &apr.id, now)?;
    let open = open_by_apr(ui)?.get(&apr.id).copied().unwrap_or(0);
    // Long windows: bucket means by range scans (see `db`), counted on
    // the way; short ones: raw readings, counted apart.
    let bucketed = match w.step_ms() {
        Some(step) => ui
            .db()
            .bucket_means(&apr.id, w.metric, w.from_ms, w.to_ms, step)
            .ok()
            // Nothing in SQLite: the series may live in the external engine
            // (`[series] engine`), so ask the series store instead.
            .filter(|(_, n)| *n > 0),
        None => None,
    };
    let (chart, raw_points) = match bucketed {
        Some((points, n)) => (
            chart_of(
                w.metric,
                &limits_of(ui, &apr.id)?,
                points,
                w.from_ms,
                w.to_ms,
            ),
            n,
        ),
        None => {
            let chart = chart_view(ui, &apr.id, w.metric, w.from_ms, w.to_ms, w.step_ms())?;
            let n = match ui.db().count_points(&apr.id, w.metric, w.from_ms, w.to_ms) {
                Ok(n) if n > 0 => n,
                _ => chart.series.iter().map(|s| s.points.len() as u64).sum(),
            };
            (chart, n)
        }
    };
    let q = w.query();
    Ok(EngineerAprPage {
        apr: apr_ref(apr, &regions),
        kpis: kpi_row(apr, &regions, Some(&kpis), open),
        assessment: None,
        kpi_charts: Vec::new(),
        explorer: SeriesExplorer {
            action: format!("/ingenieria/{}", apr.id),
            metrics: EXPLORER_METRICS
                .iter()
                .filter_map(|m| view_metric(*m))
                .collect(),
            metric: view_metric(w.metric).unwrap_or(apr_dashboards::Metric::Chlorine),
            from: local(w.from_ms),
            to: local(w.to_ms),
            chart,
            raw_points,
        },
        exports: ExportLinks {
            series_csv: format!("/ingenieria/{}/serie.csv?{q}", apr.id),
            kpis_csv: format!("/ingenieria/{}/indicadores.csv", apr.id),
            epanet_pattern: format!("/ingenieria/{}/patron.inp", apr.id),
        },
        back_url: apr_dashboards::paths::ENGINEER.to_owned(),
    })
}

async fn engineering_apr(ctx: &Ctx, id: &str) -> std::result::Result<AprRecord, Response> {
    let p = ctx.principal()?;
    ctx.require(p, &ENGINEERING)?;
    ctx.checked_apr(p, id).await
}

/// `GET /ingenieria/{apr}?metric=…&from=…&to=…`.
pub(super) async fn apr_page(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    async fn inner(ctx: &Ctx, id: &str, q: &HashMap<String, String>) -> Page {
        let apr = engineering_apr(ctx, id).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let w = Window::parse(q, now).ok_or_else(|| ctx.error(ErrorKind::BadRequest))?;
        let ui = ctx.ui.clone();
        let page = blocking(move || apr_view(&ui, &apr, &w))
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(ctx.page(apr_dashboards::render_engineer_apr(&ctx.layout(), &page)))
    }
    inner(&ctx, &id, &q).await.unwrap_or_else(|r| r)
}

fn download(body: String, content_type: &'static str, filename: &str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// `GET /ingenieria/{apr}/serie.csv?metric=…&from=…&to=…`: raw readings.
pub(super) async fn series_csv(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    async fn inner(ctx: &Ctx, id: &str, q: &HashMap<String, String>) -> Page {
        let apr = engineering_apr(ctx, id).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let w = Window::parse(q, now).ok_or_else(|| ctx.error(ErrorKind::BadRequest))?;
        let ui = ctx.ui.clone();
        let key = apr.id.clone();
        let points = blocking(move || {
            ui.app().series().readings(&SeriesQuery {
                apr: &key,
                metric: w.metric,
                device: None,
                from_ms: w.from_ms,
                to_ms: w.to_ms,
                step_ms: None,
                limit: MAX_CSV_POINTS + 1,
            })
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        if points.len() > MAX_CSV_POINTS {
            return Err(ctx.error(ErrorKind::BadRequest));
        }
        let pts: Vec<(i64, f64)> = points
            .iter()
            .map(|p| (p.t_ms.div_euclid(1000), p.v))
            .collect();
        let unit = w.metric.unit().unwrap_or("");
        Ok(download(
            export::series_csv(&apr.id, w.metric.name(), unit, &pts),
            "text/csv; charset=utf-8",
            &format!("{}-{}.csv", apr.id, w.metric.name()),
        ))
    }
    inner(&ctx, &id, &q).await.unwrap_or_else(|r| r)
}

fn kpi_records(a: &AprRecord, k: &Kpis) -> Vec<KpiRecord> {
    let rec = |kpi: &str, value: Option<f64>, unit: &str| KpiRecord {
        apr: a.id.clone(),
        apr_name: a.name.clone(),
        kpi: kpi.to_owned(),
        value,
        unit: unit.to_owned(),
        from: k.from_ms.div_euclid(1000),
        to: k.to_ms.div_euclid(1000),
    };
    vec![
        rec("chlorine_compliance", k.chlorine_compliance_pct, "%"),
        rec(
            "days_without_chlorine",
            k.days_without_chlorine.map(f64::from),
            "d",
        ),
        rec("min_night_flow", k.min_night_flow_l_s, "l/s"),
    ]
}

/// `GET /ingenieria/{apr}/indicadores.csv`: KPIs and 30 daily means per metric.
pub(super) async fn kpis_csv(ctx: Ctx, Path(id): Path<String>) -> Response {
    async fn inner(ctx: &Ctx, id: &str) -> Page {
        let apr = engineering_apr(ctx, id).await?;
        let ui = ctx.ui.clone();
        let a = apr.clone();
        let rows = blocking(move || {
            let now = chrono::Utc::now().timestamp_millis();
            let mut rows = kpi_records(&a, &kpis_of(&ui, &a.id, now)?);
            let day = 86_400_000;
            let from = (now - 30 * day).div_euclid(day) * day;
            for m in [
                Metric::Chlorine,
                Metric::Turbidity,
                Metric::Ph,
                Metric::Flow,
                Metric::Pressure,
                Metric::TankLevel,
            ] {
                let daily = ui.app().series().readings(&SeriesQuery {
                    apr: &a.id,
                    metric: m,
                    device: None,
                    from_ms: from,
                    to_ms: now,
                    step_ms: Some(day),
                    limit: 1000,
                })?;
                rows.extend(daily.into_iter().map(|p| KpiRecord {
                    apr: a.id.clone(),
                    apr_name: a.name.clone(),
                    kpi: format!("{}_daily_mean", m.name()),
                    value: Some(p.v),
                    unit: m.unit().unwrap_or("").to_owned(),
                    from: p.t_ms.div_euclid(1000),
                    to: (p.t_ms + day).div_euclid(1000),
                }));
            }
            Ok(rows)
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        Ok(download(
            export::kpi_csv(&rows),
            "text/csv; charset=utf-8",
            &format!("{}-indicadores.csv", apr.id),
        ))
    }
    inner(&ctx, &id).await.unwrap_or_else(|r| r)
}

/// `GET /ingenieria/indicadores.csv`: the KPIs of every APR in scope.
pub(super) async fn all_kpis_csv(ctx: Ctx) -> Response {
    async fn inner(ctx: &Ctx) -> Page {
        let p = ctx.principal()?.clone();
        ctx.require(&p, &ENGINEERING)?;
        let ui = ctx.ui.clone();
        let rows = blocking(move || {
            let aprs: Vec<AprRecord> = ui
                .app()
                .registry()
                .aprs()?
                .into_iter()
                .filter(|a| p.scope.allows_apr(a))
                .collect();
            let kpis = ui.all_kpis(&aprs)?;
            Ok(aprs
                .iter()
                .filter_map(|a| Some(kpi_records(a, kpis.get(&a.id)?)))
                .flatten()
                .collect::<Vec<_>>())
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        Ok(download(
            export::kpi_csv(&rows),
            "text/csv; charset=utf-8",
            "indicadores.csv",
        ))
    }
    inner(&ctx).await.unwrap_or_else(|r| r)
}

/// The 24 multipliers of the measured demand over `[from_ms, to_ms]`.
pub fn demand_pattern(ui: &Ui, apr: &str, from_ms: i64, to_ms: i64) -> Result<[f64; 24]> {
    let hourly = hourly(ui, apr, Metric::Flow, from_ms, to_ms)?;
    let by_local_hour: Vec<(u8, f64)> = hourly
        .iter()
        .map(|(t, v)| (local(*t).hour() as u8, *v))
        .collect();
    export::demand_pattern(&by_local_hour).map_err(|e| Error::Invalid(e.to_string()))
}

/// `GET /ingenieria/{apr}/patron.inp`: the EPANET `[PATTERNS]` section.
pub(super) async fn pattern(ctx: Ctx, Path(id): Path<String>) -> Response {
    async fn inner(ctx: &Ctx, id: &str) -> Page {
        let apr = engineering_apr(ctx, id).await?;
        let ui = ctx.ui.clone();
        let key = apr.id.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let from = now - 28 * 86_400_000;
        let m = blocking(move || demand_pattern(&ui, &key, from, now))
            .await
            .map_err(|e| ctx.fail(e))?;
        let comment = format!(
            "APR {} ({}): demanda medida, medias horarias America/Santiago, {} a {}",
            apr.name,
            apr.id,
            apr_dashboards::format::datetime(&local(from)),
            apr_dashboards::format::datetime(&local(now)),
        );
        Ok(download(
            export::epanet_patterns(&apr.id, &comment, &m),
            "text/plain; charset=utf-8",
            &format!("{}-patron.inp", apr.id),
        ))
    }
    inner(&ctx, &id).await.unwrap_or_else(|r| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn a_year_window_asks_for_at_most_1600_bucket_means() {
        let now = 1_764_064_800_000;
        let w = Window::parse(&q(&[]), now).unwrap();
        assert_eq!(w.metric, Metric::Chlorine);
        assert_eq!(w.to_ms - w.from_ms, KPI_WINDOW_MS);
        let year = Window {
            metric: Metric::Flow,
            from_ms: now - 365 * 86_400_000,
            to_ms: now,
        };
        let step = year.step_ms().unwrap();
        assert!((year.to_ms - year.from_ms) / step <= EXPLORER_BUCKETS);
        assert_eq!(step % 60_000, 0);
        let day = Window {
            metric: Metric::Flow,
            from_ms: now - 86_400_000,
            to_ms: now,
        };
        assert_eq!(day.step_ms(), None);
    }

    #[test]
    fn explorer_times_are_local_and_must_be_in_order() {
        let now = 1_764_064_800_000;
        let w = Window::parse(
            &q(&[
                ("metric", "flow"),
                ("from", "2025-01-01T00:00"),
                ("to", "2025-01-02T00:00"),
            ]),
            now,
        )
        .unwrap();
        // January: Santiago is UTC-3.
        assert_eq!(w.from_ms, 1_735_700_400_000);
        assert!(Window::parse(
            &q(&[("from", "2025-01-02T00:00"), ("to", "2025-01-01T00:00")]),
            now
        )
        .is_none());
        assert!(Window::parse(&q(&[("metric", "pump")]), now).is_none());
        assert!(Window::parse(&q(&[("from", "ayer")]), now).is_none());
    }
}
