//! KPIs per APR and local day (America/Santiago), computed from the series
//! and stored in `kpi_daily` (see [`crate::store::AnalysisStore`]).
//!
//! Every formula is a pure function in [`formulas`], documented there with
//! its source (IWA water balance, NCh 409/1, NCh 691). This module gathers a
//! day's readings ([`load_day`]), applies the formulas ([`compute_day`]),
//! and summarises a window of days ([`WindowKpis`]: peak-day factor,
//! capacity utilisation and storage hours on the peak day, chlorine
//! compliance and days without a reading, …) and billed months
//! ([`nrw_by_month`]).
//!
//! # Incremental computation
//! The ingest path marks each (APR, local day) its readings touch as dirty
//! in a small in-memory set ([`Dirty`]); a periodic task takes the set and
//! recomputes those days plus today and yesterday of every APR with devices
//! (so a restart, which loses the set, loses nothing that matters for
//! long: older days touched before the restart are recomputed when the
//! next reading of that day arrives or on demand).

pub mod formulas;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};

use apr_wire::Metric;
use chrono::{Datelike, NaiveDate, TimeZone};
use serde::Serialize;

use crate::error::Result;
use crate::limits::{AssessmentLimits, Limits, LOCAL_TZ};
use crate::store::{AnalysisStore, AprRecord, KpiRow, Point, SeriesQuery, SeriesStore};
use formulas as f;

const H: i64 = 3_600_000;
/// The span of a daily KPI row.
pub const DAILY_WINDOW: &str = "P1D";

/// The daily KPIs, with their units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kpi {
    /// Produced volume (system input), m³.
    ProducedM3,
    /// Consumption (produced − Δ storage), m³.
    ConsumptionM3,
    /// Minimum night flow of production, l/s.
    NightMinFlowLS,
    /// Night consumption (production − Δ storage in the night window), l/s.
    NightConsumptionLS,
    /// Estimated leakage above legitimate night use, l/s.
    LeakageLS,
    /// Continuity of service, hours.
    ContinuityH,
    /// Chlorine compliance, %.
    ChlorineCompliancePct,
    /// Chlorine readings (valid), count.
    ChlorineReadings,
    /// Share of chlorine readings above the maximum, %.
    ChlorineAbovePct,
    /// Share of chlorine readings below the minimum, %.
    ChlorineBelowPct,
    /// Standard deviation of chlorine readings, mg/L.
    ChlorineSdMgL,
    /// Peak-hour factor of consumption.
    PeakHourFactor,
    /// Pump hours.
    PumpHours,
    /// Peak hours with mean pressure below the NCh 691 minimum while the
    /// tank is above its low level (the network's hydraulics, not an empty
    /// tank).
    PressurePeakLowH,
    /// Lowest hourly mean pressure at a peak hour, m.c.a.
    PressurePeakMinMca,
    /// Hours with the mean tank level below its low level.
    TankLowH,
    /// Hours with mean turbidity at or above the critical level.
    TurbidityHighH,
    /// Longest gap in a device's readings, hours.
    LongestGapH,
}

impl Kpi {
    /// Every daily KPI.
    pub const ALL: [Kpi; 18] = [
        Kpi::ProducedM3,
        Kpi::ConsumptionM3,
        Kpi::NightMinFlowLS,
        Kpi::NightConsumptionLS,
        Kpi::LeakageLS,
        Kpi::ContinuityH,
        Kpi::ChlorineCompliancePct,
        Kpi::ChlorineReadings,
        Kpi::ChlorineAbovePct,
        Kpi::ChlorineBelowPct,
        Kpi::ChlorineSdMgL,
        Kpi::PeakHourFactor,
        Kpi::PumpHours,
        Kpi::PressurePeakLowH,
        Kpi::PressurePeakMinMca,
        Kpi::TankLowH,
        Kpi::TurbidityHighH,
        Kpi::LongestGapH,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kpi::ProducedM3 => "produced_m3",
            Kpi::ConsumptionM3 => "consumption_m3",
            Kpi::NightMinFlowLS => "night_min_flow_l_s",
            Kpi::NightConsumptionLS => "night_consumption_l_s",
            Kpi::LeakageLS => "leakage_l_s",
            Kpi::ContinuityH => "continuity_h",
            Kpi::ChlorineCompliancePct => "chlorine_compliance_pct",
            Kpi::ChlorineReadings => "chlorine_readings",
            Kpi::ChlorineAbovePct => "chlorine_above_pct",
            Kpi::ChlorineBelowPct => "chlorine_below_pct",
            Kpi::ChlorineSdMgL => "chlorine_sd_mg_l",
            Kpi::PeakHourFactor => "peak_hour_factor",
            Kpi::PumpHours => "pump_hours",
            Kpi::PressurePeakLowH => "pressure_peak_low_h",
            Kpi::PressurePeakMinMca => "pressure_peak_min_mca",
            Kpi::TankLowH => "tank_low_h",
            Kpi::TurbidityHighH => "turbidity_high_h",
            Kpi::LongestGapH => "longest_gap_h",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Kpi> {
        Kpi::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The UTC time (ms) of a local hour of a local day (hour 24 is the next
/// day's midnight); a local time skipped by a DST change is taken an hour
/// later.
pub fn local_ms(day: NaiveDate, hour: u32) -> i64 {
    let (d, h) = if hour >= 24 {
        (day.succ_opt().unwrap_or(day), hour - 24)
    } else {
        (day, hour)
    };
    let naive = d.and_hms_opt(h, 0, 0).unwrap_or_default();
    match LOCAL_TZ.from_local_datetime(&naive).earliest() {
        Some(t) => t.timestamp_millis(),
        None => LOCAL_TZ
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
            .map_or(0, |t| t.timestamp_millis()),
    }
}

/// The local day of a time, ms.
pub fn local_day(t_ms: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(t_ms)
        .unwrap_or_default()
        .with_timezone(&LOCAL_TZ)
        .date_naive()
}

/// What an APR is, for the formulas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Site {
    /// Storage volume, m³.
    pub storage_m3: f64,
    /// Production capacity, l/s.
    pub capacity_l_s: f64,
    /// Household connections.
    pub connections: u64,
}

impl From<&AprRecord> for Site {
    fn from(a: &AprRecord) -> Site {
        Site {
            storage_m3: a.storage_m3,
            capacity_l_s: a.capacity_l_s,
            connections: a.connections,
        }
    }
}

/// A day's readings, from an hour before local midnight to a few minutes
/// after the next (for the first step of a totaliser and the level at the
/// day's edges).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayInput {
    /// The local day.
    pub day: NaiveDate,
    /// `flow`, l/s.
    pub flow: Vec<Point>,
    /// `volume`, m³ (totaliser).
    pub volume: Vec<Point>,
    /// `pump`, 1/0.
    pub pump: Vec<Point>,
    /// `chlorine`, mg/L.
    pub chlorine: Vec<Point>,
    /// `turbidity`, NTU.
    pub turbidity: Vec<Point>,
    /// `pressure`, m.c.a.
    pub pressure: Vec<Point>,
    /// `tank_level`, %.
    pub tank_level: Vec<Point>,
}

impl DayInput {
    fn series(&self, m: Metric) -> &[Point] {
        match m {
            Metric::Flow => &self.flow,
            Metric::Volume => &self.volume,
            Metric::Pump => &self.pump,
            Metric::Chlorine => &self.chlorine,
            Metric::Turbidity => &self.turbidity,
            Metric::Pressure => &self.pressure,
            Metric::TankLevel => &self.tank_level,
            _ => &[],
        }
    }
}

/// The metrics a day's KPIs read.
pub const METRICS: [Metric; 7] = [
    Metric::Flow,
    Metric::Volume,
    Metric::Pump,
    Metric::Chlorine,
    Metric::Turbidity,
    Metric::Pressure,
    Metric::TankLevel,
];

/// How far around a day edge the tank level is averaged, ms.
const EDGE_MS: i64 = 10 * 60 * 1000;

/// Reads a day's readings of an APR.
pub fn load_day(series: &dyn SeriesStore, apr: &str, day: NaiveDate) -> Result<DayInput> {
    let (start, end) = (local_ms(day, 0), local_ms(day, 24));
    let mut input = DayInput {
        day,
        ..DayInput::default()
    };
    for m in METRICS {
        let points = series.readings(&SeriesQuery {
            apr,
            metric: m,
            device: None,
            from_ms: start - H,
            to_ms: end + EDGE_MS,
            step_ms: None,
            limit: 200_000,
        })?;
        let slot = match m {
            Metric::Flow => &mut input.flow,
            Metric::Volume => &mut input.volume,
            Metric::Pump => &mut input.pump,
            Metric::Chlorine => &mut input.chlorine,
            Metric::Turbidity => &mut input.turbidity,
            Metric::Pressure => &mut input.pressure,
            _ => &mut input.tank_level,
        };
        *slot = points;
    }
    Ok(input)
}

fn within(points: &[Point], from: i64, to: i64) -> Vec<Point> {
    points
        .iter()
        .copied()
        .filter(|p| (from..to).contains(&p.t_ms))
        .collect()
}

/// Produced volume in `[from, to)`: the totaliser, else ∫ flow.
fn produced(input: &DayInput, from: i64, to: i64) -> Option<f64> {
    f::produced_volume_m3(&input.volume, from, to)
        .or_else(|| f::integrated_flow_m3(&within(&input.flow, from - H, to), from, to))
}

/// Consumption in `[from, to)`: produced − Δ storage (produced alone
/// without the tank level at both edges).
fn consumed(input: &DayInput, site: &Site, from: i64, to: i64) -> Option<f64> {
    let p = produced(input, from, to)?;
    match (
        f::level_at(&input.tank_level, from, EDGE_MS),
        f::level_at(&input.tank_level, to, EDGE_MS),
    ) {
        (Some(a), Some(b)) => Some(f::consumption_m3(p, a, b, site.storage_m3)),
        _ => Some(p),
    }
}

/// The daily KPIs of one day (only those its readings allow).
/// `present` names the metrics the APR reports at all, for the longest gap.
pub fn compute_day(
    input: &DayInput,
    site: &Site,
    limits: &Limits,
    a: &AssessmentLimits,
    present: &[Metric],
) -> Vec<(Kpi, f64)> {
    let day = input.day;
    let (start, end) = (local_ms(day, 0), local_ms(day, 24));
    let hours = usize::try_from((end - start + H / 2) / H).unwrap_or(24);
    let mut out = Vec::new();
    if let Some(p) = produced(input, start, end) {
        out.push((Kpi::ProducedM3, p));
    }
    if let Some(c) = consumed(input, site, start, end) {
        out.push((Kpi::ConsumptionM3, c));
    }
    // Night window, local time.
    let (ns, ne) = (
        local_ms(day, u32::from(limits.night_window.start)),
        local_ms(day, u32::from(limits.night_window.end)),
    );
    let min_readings = usize::try_from(limits.night_flow_min_readings).unwrap_or(8);
    if let Some(mnf) = f::minimum_night_flow_l_s(&input.flow, ns, ne, min_readings) {
        out.push((Kpi::NightMinFlowLS, mnf));
    }
    if let Some(c) = consumed(input, site, ns, ne) {
        let night = f::mean_flow_l_s(c, ne - ns).max(0.0);
        out.push((Kpi::NightConsumptionLS, night));
        out.push((
            Kpi::LeakageLS,
            f::leakage_l_s(night, a.legitimate_night_use_share),
        ));
    }
    // Hourly figures.
    let hour_start = |h: usize| start + H * h as i64;
    let hourly_consumption: Vec<f64> = (0..hours)
        .filter_map(|h| consumed(input, site, hour_start(h), hour_start(h + 1)))
        .collect();
    if hourly_consumption.len() == hours {
        if let Some(phf) = f::peak_factor(&hourly_consumption) {
            out.push((Kpi::PeakHourFactor, phf));
        }
    }
    let pressure_h = f::hourly_means(&within(&input.pressure, start, end), start, hours);
    let tank_h = f::hourly_means(&within(&input.tank_level, start, end), start, hours);
    let turb_h = f::hourly_means(&within(&input.turbidity, start, end), start, hours);
    if pressure_h.iter().chain(&tank_h).any(Option::is_some) {
        out.push((
            Kpi::ContinuityH,
            f::continuity_h(
                &pressure_h,
                &tank_h,
                limits.pressure_min_mca,
                limits.tank_low_pct,
            ),
        ));
    }
    let is_peak = |h: usize| {
        let local = chrono::DateTime::from_timestamp_millis(hour_start(h))
            .unwrap_or_default()
            .with_timezone(&LOCAL_TZ);
        limits.is_peak(chrono::Timelike::num_seconds_from_midnight(&local.time()))
    };
    let peak: Vec<usize> = (0..hours).filter(|h| is_peak(*h)).collect();
    let peak_pressures: Vec<f64> = peak.iter().filter_map(|h| pressure_h[*h]).collect();
    if !peak_pressures.is_empty() {
        // Low pressure with the tank above its low level: the network's
        // hydraulics (NCh 691), not an empty tank (counted as tank-low hours).
        out.push((
            Kpi::PressurePeakLowH,
            peak.iter()
                .filter(|h| {
                    pressure_h[**h].is_some_and(|p| p < limits.pressure_min_mca)
                        && !tank_h[**h].is_some_and(|t| t < limits.tank_low_pct)
                })
                .count() as f64,
        ));
        out.push((
            Kpi::PressurePeakMinMca,
            peak_pressures.iter().copied().fold(f64::INFINITY, f64::min),
        ));
    }
    if tank_h.iter().any(Option::is_some) {
        out.push((
            Kpi::TankLowH,
            tank_h
                .iter()
                .flatten()
                .filter(|t| **t < limits.tank_low_pct)
                .count() as f64,
        ));
    }
    if turb_h.iter().any(Option::is_some) {
        out.push((
            Kpi::TurbidityHighH,
            turb_h
                .iter()
                .flatten()
                .filter(|t| **t >= limits.turbidity_critical_ntu)
                .count() as f64,
        ));
    }
    // Chlorine.
    let cl = within(&input.chlorine, start, end);
    out.push((Kpi::ChlorineReadings, cl.len() as f64));
    if let Some(c) =
        f::chlorine_compliance_pct(&cl, limits.chlorine_min_mg_l, limits.chlorine_max_mg_l)
    {
        let n = cl.len() as f64;
        let above = cl.iter().filter(|p| p.v > limits.chlorine_max_mg_l).count() as f64;
        let below = cl.iter().filter(|p| p.v < limits.chlorine_min_mg_l).count() as f64;
        let values: Vec<f64> = cl.iter().map(|p| p.v).collect();
        out.push((Kpi::ChlorineCompliancePct, c));
        out.push((Kpi::ChlorineAbovePct, 100.0 * above / n));
        out.push((Kpi::ChlorineBelowPct, 100.0 * below / n));
        if let Some(sd) = f::std_dev(&values) {
            out.push((Kpi::ChlorineSdMgL, sd));
        }
    }
    if !input.pump.is_empty() {
        out.push((
            Kpi::PumpHours,
            f::pump_hours(&within(&input.pump, start - H, end), start, end),
        ));
    }
    let gap = present
        .iter()
        .map(|m| f::longest_gap_h(input.series(*m), start, end))
        .fold(None, |acc: Option<f64>, g| {
            Some(acc.map_or(g, |a| a.max(g)))
        });
    if let Some(g) = gap {
        out.push((Kpi::LongestGapH, g));
    }
    out
}

/// Recomputes and stores the daily KPIs of `days` of one APR.
pub fn refresh(
    series: &dyn SeriesStore,
    analysis: &dyn AnalysisStore,
    apr: &AprRecord,
    limits: &Limits,
    a: &AssessmentLimits,
    days: &BTreeSet<NaiveDate>,
    now_ms: i64,
) -> Result<usize> {
    let coverage = series.coverage(&apr.id)?;
    // The longest gap is judged on one metric of each device role: flow for
    // the pump house, pressure for the network point.
    let present: Vec<Metric> = [Metric::Flow, Metric::Pressure]
        .into_iter()
        .filter(|m| coverage.iter().any(|c| c.metric == *m))
        .collect();
    let site = Site::from(apr);
    let mut rows = Vec::new();
    for day in days {
        let input = load_day(series, &apr.id, *day)?;
        for (k, v) in compute_day(&input, &site, limits, a, &present) {
            if v.is_finite() {
                rows.push(KpiRow {
                    apr: apr.id.clone(),
                    day: day.to_string(),
                    kpi: k.as_str().into(),
                    value: v,
                    window: DAILY_WINDOW.into(),
                    computed_at_ms: now_ms,
                });
            }
        }
    }
    let n = rows.len();
    analysis.put_kpis(rows)?;
    Ok(n)
}

/// The (APR, local day) pairs whose readings changed since the last flush.
#[derive(Debug, Default)]
pub struct Dirty {
    set: Mutex<BTreeSet<(String, NaiveDate)>>,
}

impl Dirty {
    /// Marks every local day from `from_ms` to `to_ms` of `apr`.
    pub fn mark(&self, apr: &str, from_ms: i64, to_ms: i64) {
        let (mut d, last) = (local_day(from_ms), local_day(to_ms));
        let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        // A batch spans minutes, a backlog days: bounded by a year anyway.
        for _ in 0..366 {
            set.insert((apr.to_owned(), d));
            if d >= last {
                break;
            }
            d = d.succ_opt().unwrap_or(d);
        }
    }

    /// Takes the marked pairs, grouped by APR.
    pub fn take(&self) -> BTreeMap<String, BTreeSet<NaiveDate>> {
        let set = std::mem::take(&mut *self.set.lock().unwrap_or_else(PoisonError::into_inner));
        let mut out: BTreeMap<String, BTreeSet<NaiveDate>> = BTreeMap::new();
        for (apr, d) in set {
            out.entry(apr).or_default().insert(d);
        }
        out
    }
}

/// The window figures over daily KPI rows of one APR.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowKpis {
    /// First day, `YYYY-MM-DD`.
    pub from: Option<String>,
    /// Last day.
    pub to: Option<String>,
    /// Days with any KPI.
    pub days: u32,
    /// The day of the largest consumption.
    pub peak_day: Option<String>,
    /// Its consumption, m³.
    pub peak_day_m3: Option<f64>,
    /// Mean daily consumption, m³.
    pub mean_day_m3: Option<f64>,
    /// Peak-day factor.
    pub peak_day_factor: Option<f64>,
    /// Peak day's mean consumption over the capacity, %.
    pub capacity_utilisation_pct: Option<f64>,
    /// Pump hours on the peak day.
    pub peak_day_pump_hours: Option<f64>,
    /// Most pump hours on a day.
    pub max_pump_hours: Option<f64>,
    /// Storage as hours of peak-day demand.
    pub storage_hours: Option<f64>,
    /// Largest peak-hour factor.
    pub peak_hour_factor: Option<f64>,
    /// Chlorine compliance over every reading of the window, %.
    pub chlorine_compliance_pct: Option<f64>,
    /// Share above the maximum, %.
    pub chlorine_above_pct: Option<f64>,
    /// Share below the minimum, %.
    pub chlorine_below_pct: Option<f64>,
    /// Mean of the daily spreads, mg/L.
    pub chlorine_sd_mg_l: Option<f64>,
    /// Days without a valid chlorine reading.
    pub days_without_chlorine: u32,
    /// Median night consumption, l/s.
    pub night_consumption_l_s: Option<f64>,
    /// Median estimated leakage, l/s.
    pub leakage_l_s: Option<f64>,
    /// Mean consumption flow, l/s.
    pub mean_consumption_l_s: Option<f64>,
    /// Night consumption over mean consumption.
    pub night_ratio: Option<f64>,
    /// Mean continuity, hours/day.
    pub continuity_h: Option<f64>,
    /// Days with less than 24 h of continuity.
    pub intermittent_days: u32,
    /// Days with a peak hour below the minimum pressure.
    pub pressure_low_days: u32,
    /// Lowest peak-hour pressure, m.c.a.
    pub pressure_peak_min_mca: Option<f64>,
    /// Days with a tank-low hour while the pump still rested (see
    /// [`AssessmentLimits::pump_rest_hours_min`]).
    pub tank_low_days_pump_resting: u32,
    /// Hours of turbidity at or above the critical level.
    pub turbidity_high_h: f64,
    /// Longest gap in a device's readings, hours.
    pub longest_gap_h: Option<f64>,
    /// The day of that gap.
    pub longest_gap_day: Option<String>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl WindowKpis {
    /// Summarises daily rows (of one APR) for `site`.
    pub fn from_rows(rows: &[KpiRow], site: &Site, a: &AssessmentLimits) -> WindowKpis {
        let mut by_day: BTreeMap<&str, BTreeMap<Kpi, f64>> = BTreeMap::new();
        for r in rows {
            if let Some(k) = Kpi::parse(&r.kpi) {
                by_day.entry(&r.day).or_default().insert(k, r.value);
            }
        }
        let mut w = WindowKpis {
            from: by_day.keys().next().map(|d| (*d).to_owned()),
            to: by_day.keys().next_back().map(|d| (*d).to_owned()),
            days: by_day.len() as u32,
            ..WindowKpis::default()
        };
        let col = |k: Kpi| -> Vec<(&str, f64)> {
            by_day
                .iter()
                .filter_map(|(d, m)| m.get(&k).map(|v| (*d, *v)))
                .collect()
        };
        let consumption = col(Kpi::ConsumptionM3);
        if let Some((d, peak)) = consumption
            .iter()
            .copied()
            .max_by(|x, y| x.1.total_cmp(&y.1))
        {
            let values: Vec<f64> = consumption.iter().map(|x| x.1).collect();
            w.peak_day = Some(d.to_owned());
            w.peak_day_m3 = Some(peak);
            w.mean_day_m3 = f::mean(values.iter().copied());
            w.peak_day_factor = f::peak_factor(&values);
            w.capacity_utilisation_pct = f::capacity_utilisation_pct(peak, site.capacity_l_s);
            w.storage_hours = f::storage_hours(site.storage_m3, peak);
            w.peak_day_pump_hours = by_day.get(d).and_then(|m| m.get(&Kpi::PumpHours)).copied();
            w.mean_consumption_l_s = w.mean_day_m3.map(|m| f::mean_flow_l_s(m, 86_400_000));
        }
        w.max_pump_hours = col(Kpi::PumpHours)
            .into_iter()
            .map(|x| x.1)
            .reduce(f64::max);
        w.peak_hour_factor = col(Kpi::PeakHourFactor)
            .into_iter()
            .map(|x| x.1)
            .reduce(f64::max);
        // Chlorine, weighted by each day's readings.
        let mut n_total = 0.0;
        let (mut ok, mut above, mut below) = (0.0, 0.0, 0.0);
        for m in by_day.values() {
            let n = m.get(&Kpi::ChlorineReadings).copied().unwrap_or(0.0);
            if n <= 0.0 {
                w.days_without_chlorine += 1;
                continue;
            }
            n_total += n;
            ok += n * m.get(&Kpi::ChlorineCompliancePct).copied().unwrap_or(0.0);
            above += n * m.get(&Kpi::ChlorineAbovePct).copied().unwrap_or(0.0);
            below += n * m.get(&Kpi::ChlorineBelowPct).copied().unwrap_or(0.0);
        }
        if n_total > 0.0 {
            w.chlorine_compliance_pct = Some(ok / n_total);
            w.chlorine_above_pct = Some(above / n_total);
            w.chlorine_below_pct = Some(below / n_total);
        }
        w.chlorine_sd_mg_l = f::mean(col(Kpi::ChlorineSdMgL).into_iter().map(|x| x.1));
        w.night_consumption_l_s = median(
            col(Kpi::NightConsumptionLS)
                .into_iter()
                .map(|x| x.1)
                .collect(),
        );
        w.leakage_l_s = median(col(Kpi::LeakageLS).into_iter().map(|x| x.1).collect());
        w.night_ratio = match (w.night_consumption_l_s, w.mean_consumption_l_s) {
            (Some(n), Some(m)) if m > 0.0 => Some(n / m),
            _ => None,
        };
        let continuity = col(Kpi::ContinuityH);
        w.continuity_h = f::mean(continuity.iter().map(|x| x.1));
        w.intermittent_days = continuity.iter().filter(|x| x.1 < 23.5).count() as u32;
        w.pressure_low_days = col(Kpi::PressurePeakLowH)
            .iter()
            .filter(|x| x.1 > 0.0)
            .count() as u32;
        w.pressure_peak_min_mca = col(Kpi::PressurePeakMinMca)
            .into_iter()
            .map(|x| x.1)
            .reduce(f64::min);
        w.tank_low_days_pump_resting = by_day
            .values()
            .filter(|m| {
                m.get(&Kpi::TankLowH).is_some_and(|h| *h > 0.0)
                    && m.get(&Kpi::PumpHours)
                        .is_some_and(|p| *p <= 24.0 - a.pump_rest_hours_min)
            })
            .count() as u32;
        w.turbidity_high_h = col(Kpi::TurbidityHighH).iter().map(|x| x.1).sum();
        if let Some((d, g)) = col(Kpi::LongestGapH)
            .into_iter()
            .max_by(|x, y| x.1.total_cmp(&y.1))
        {
            w.longest_gap_h = Some(g);
            w.longest_gap_day = Some(d.to_owned());
        }
        w
    }
}

/// Non-revenue water of one billed month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NrwMonth {
    /// `YYYY-MM`.
    pub month: String,
    /// Billed authorised consumption, m³.
    pub billed_m3: f64,
    /// System input (produced) over the days with data, m³.
    pub input_m3: f64,
    /// Days of the month with a produced volume.
    pub days_with_data: u32,
    /// Days in the month.
    pub days_in_month: u32,
    /// Input − billed, m³ (only when every day has data).
    pub nrw_m3: Option<f64>,
    /// NRW per connection and day, litres.
    pub nrw_l_per_connection_day: Option<f64>,
}

fn days_in_month(y: i32, m: u32) -> u32 {
    let first = NaiveDate::from_ymd_opt(y, m, 1);
    let next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    match (first, next) {
        (Some(a), Some(b)) => (b - a).num_days() as u32,
        _ => 30,
    }
}

/// NRW per billed month from the daily produced volumes (IWA water balance,
/// see [`formulas::non_revenue_water_m3`]). A month whose every day has a
/// produced volume gets an NRW; the others show their coverage only.
pub fn nrw_by_month(rows: &[KpiRow], billing: &[(String, f64)], connections: u64) -> Vec<NrwMonth> {
    billing
        .iter()
        .map(|(month, billed)| {
            let (y, m) = month
                .split_once('-')
                .and_then(|(y, m)| Some((y.parse().ok()?, m.parse().ok()?)))
                .unwrap_or((1970, 1));
            let produced: Vec<f64> = rows
                .iter()
                .filter(|r| r.kpi == Kpi::ProducedM3.as_str() && r.day.starts_with(month.as_str()))
                .map(|r| r.value)
                .collect();
            let dim = days_in_month(y, m);
            let input: f64 = produced.iter().sum();
            let complete = produced.len() as u32 >= dim;
            let nrw = complete.then(|| f::non_revenue_water_m3(input, *billed));
            NrwMonth {
                month: month.clone(),
                billed_m3: *billed,
                input_m3: input,
                days_with_data: produced.len() as u32,
                days_in_month: dim,
                nrw_m3: nrw,
                nrw_l_per_connection_day: nrw
                    .and_then(|n| f::nrw_l_per_connection_day(n, connections, f64::from(dim))),
            }
        })
        .collect()
}

/// Parses a billing CSV (`month,billed_m3`, e.g. `2025-10,1234.5`; a header
/// line naming those columns is allowed); errors name the line.
pub fn parse_billing_csv(text: &str) -> std::result::Result<Vec<(String, f64)>, String> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if n == 1
            && cols
                .first()
                .is_some_and(|c| c.eq_ignore_ascii_case("month"))
        {
            continue;
        }
        if cols.len() != 2 {
            return Err(format!(
                "line {n}: expected 2 columns 'month,billed_m3', found {}",
                cols.len()
            ));
        }
        let month = cols[0];
        let valid_month = month.len() == 7
            && month.as_bytes()[4] == b'-'
            && NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").is_ok();
        if !valid_month {
            return Err(format!("line {n}: month '{month}' is not YYYY-MM"));
        }
        let billed: f64 = cols[1].parse().map_err(|_| {
            format!(
                "line {n}: billed_m3 '{}' is not a number (use a dot for decimals)",
                cols[1]
            )
        })?;
        if !billed.is_finite() || billed < 0.0 {
            return Err(format!("line {n}: billed_m3 {billed} must be a volume ≥ 0"));
        }
        if out.iter().any(|(m, _)| m == month) {
            return Err(format!("line {n}: month {month} appears twice"));
        }
        out.push((month.to_owned(), billed));
    }
    if out.is_empty() {
        return Err("the CSV has no month".into());
    }
    Ok(out)
}

/// The first day of the window of `days` days ending on `last`.
pub fn window_start(last: NaiveDate, days: u32) -> NaiveDate {
    last - chrono::Duration::days(i64::from(days.max(1)) - 1)
}

/// Whether a day is a weekend day (for reports).
pub fn is_weekend(day: NaiveDate) -> bool {
    day.weekday().number_from_monday() >= 6
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 1, 6).unwrap()
    }

    fn site() -> Site {
        Site {
            storage_m3: 20.0,
            capacity_l_s: 2.0,
            connections: 100,
        }
    }

    /// A hand-made day: production 1 l/s all day (totaliser +0.06 m³ each
    /// minute), tank level constant 50 %, pressure 20 m.c.a. except 12
    /// m.c.a. from 07:00 to 09:00, chlorine 1.0 mg/L except 0.1 in the
    /// first 10 % of the readings, pump on from 00:00 to 12:00.
    fn input() -> DayInput {
        let d = day();
        let (s, e) = (local_ms(d, 0), local_ms(d, 24));
        let mut i = DayInput {
            day: d,
            ..DayInput::default()
        };
        let mut t = s - H;
        let mut vol = 1000.0;
        while t < e + EDGE_MS {
            let p = |v| Point { t_ms: t, v };
            i.flow.push(p(1.0));
            i.volume.push(p(vol));
            vol += 0.06;
            i.tank_level.push(p(50.0));
            let local_h = (t - s).div_euclid(H);
            i.pressure.push(p(if (7..9).contains(&local_h) {
                12.0
            } else {
                20.0
            }));
            t += M;
        }
        for k in 0..96 {
            let tk = s + k * 15 * M;
            i.chlorine.push(Point {
                t_ms: tk,
                v: if k < 10 { 0.1 } else { 1.0 },
            });
            i.pump.push(Point {
                t_ms: tk,
                v: if tk < s + 12 * H { 1.0 } else { 0.0 },
            });
        }
        i.turbidity.push(Point {
            t_ms: s + 14 * H,
            v: 5.0,
        });
        i
    }

    fn kpis() -> BTreeMap<Kpi, f64> {
        compute_day(
            &input(),
            &site(),
            &Limits::default(),
            &AssessmentLimits::default(),
            &[Metric::Flow, Metric::Pressure],
        )
        .into_iter()
        .collect()
    }

    fn close(k: &BTreeMap<Kpi, f64>, kpi: Kpi, want: f64) {
        let got = k.get(&kpi).unwrap_or_else(|| panic!("{kpi:?} missing"));
        assert!((got - want).abs() < 1e-6, "{kpi:?}: {got} != {want}");
    }

    #[test]
    fn a_hand_made_day_gives_the_hand_computed_kpis() {
        let k = kpis();
        // 1,440 minutes × 0.06 m³ = 86.4 m³; the tank does not change.
        close(&k, Kpi::ProducedM3, 86.4);
        close(&k, Kpi::ConsumptionM3, 86.4);
        // Night: production 1 l/s, no change in storage.
        close(&k, Kpi::NightMinFlowLS, 1.0);
        close(&k, Kpi::NightConsumptionLS, 1.0);
        close(&k, Kpi::LeakageLS, 0.8);
        // 07:00 and 08:00 below 15 m.c.a.: 22 h of continuity, both peak.
        close(&k, Kpi::ContinuityH, 22.0);
        close(&k, Kpi::PressurePeakLowH, 2.0);
        close(&k, Kpi::PressurePeakMinMca, 12.0);
        close(&k, Kpi::ChlorineReadings, 96.0);
        close(&k, Kpi::ChlorineCompliancePct, 100.0 * 86.0 / 96.0);
        close(&k, Kpi::ChlorineBelowPct, 100.0 * 10.0 / 96.0);
        close(&k, Kpi::ChlorineAbovePct, 0.0);
        close(&k, Kpi::PeakHourFactor, 1.0);
        close(&k, Kpi::PumpHours, 12.0);
        close(&k, Kpi::TankLowH, 0.0);
        close(&k, Kpi::TurbidityHighH, 1.0);
        // Readings every minute: the longest gap is a minute.
        close(&k, Kpi::LongestGapH, 1.0 / 60.0);
    }

    #[test]
    fn a_window_gives_peak_day_capacity_and_storage_figures() {
        let row = |day: &str, kpi: Kpi, value: f64| KpiRow {
            apr: "a".into(),
            day: day.into(),
            kpi: kpi.as_str().into(),
            value,
            window: DAILY_WINDOW.into(),
            computed_at_ms: 0,
        };
        let rows = vec![
            row("2026-01-05", Kpi::ConsumptionM3, 60.0),
            row("2026-01-06", Kpi::ConsumptionM3, 80.0),
            row("2026-01-07", Kpi::ConsumptionM3, 100.0),
            row("2026-01-07", Kpi::PumpHours, 20.0),
            row("2026-01-05", Kpi::ChlorineReadings, 100.0),
            row("2026-01-05", Kpi::ChlorineCompliancePct, 90.0),
            row("2026-01-06", Kpi::ChlorineReadings, 300.0),
            row("2026-01-06", Kpi::ChlorineCompliancePct, 50.0),
            row("2026-01-07", Kpi::ChlorineReadings, 0.0),
        ];
        let w = WindowKpis::from_rows(&rows, &site(), &AssessmentLimits::default());
        assert_eq!(w.peak_day.as_deref(), Some("2026-01-07"));
        assert_eq!(w.peak_day_factor, Some(1.25));
        // 100 m³/day = 1.1574 l/s over 2 l/s.
        let cu = w.capacity_utilisation_pct.unwrap();
        assert!((cu - 100.0 * 100.0 / 86.4 / 2.0).abs() < 1e-9, "{cu}");
        // 20 m³ / (100/24 m³/h) = 4.8 h.
        assert!((w.storage_hours.unwrap() - 4.8).abs() < 1e-9);
        assert_eq!(w.peak_day_pump_hours, Some(20.0));
        // (100×90 + 300×50) / 400 = 60 %.
        assert_eq!(w.chlorine_compliance_pct, Some(60.0));
        assert_eq!(w.days_without_chlorine, 1);
    }

    #[test]
    fn nrw_needs_every_day_of_the_month() {
        let rows: Vec<KpiRow> = (1..=31)
            .map(|d| KpiRow {
                apr: "a".into(),
                day: format!("2025-10-{d:02}"),
                kpi: Kpi::ProducedM3.as_str().into(),
                value: 100.0,
                window: DAILY_WINDOW.into(),
                computed_at_ms: 0,
            })
            .collect();
        let billing = vec![("2025-10".into(), 2480.0), ("2025-11".into(), 1000.0)];
        let n = nrw_by_month(&rows, &billing, 100);
        // 3,100 − 2,480 = 620 m³ = 200 L/connection/day.
        assert_eq!(n[0].nrw_m3, Some(620.0));
        assert!((n[0].nrw_l_per_connection_day.unwrap() - 200.0).abs() < 1e-9);
        assert_eq!((n[1].days_with_data, n[1].nrw_m3), (0, None));
    }

    #[test]
    fn the_billing_csv_is_parsed_and_errors_name_the_line() {
        let ok = parse_billing_csv("month,billed_m3\n2025-10,1234.5\n2025-11, 1000\n").unwrap();
        assert_eq!(
            ok,
            vec![("2025-10".into(), 1234.5), ("2025-11".into(), 1000.0)]
        );
        let e = parse_billing_csv("2025-10,1234.5\n2025-13,1\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse_billing_csv("2025-10,12,34\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("2 columns"), "{e}");
        let e = parse_billing_csv("2025-10,1\n2025-11,abc\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("not a number"), "{e}");
    }

    #[test]
    fn dirty_days_are_marked_per_local_day() {
        let d = Dirty::default();
        // 2026-01-06 23:00 local (UTC−3) to 01:00 the next day.
        let t = local_ms(day(), 23);
        d.mark("a", t, t + 2 * H);
        let taken = d.take();
        assert_eq!(taken["a"].len(), 2);
        assert!(d.take().is_empty());
    }
}
