//! The assessment rules, all of them, in one place: pure functions from the
//! window's KPIs ([`WindowKpis`]), the alerts and the field records to the
//! four components of the programme's technical assistance.
//!
//! Each rule names the site-twin scenario (`firmware/twin/scenarios/`) that
//! exercises it; the acceptance test (`server/tests/assessment_scenarios.rs`)
//! runs every scenario for a simulated month and checks the flagged set.
//! Thresholds come from [`AssessmentLimits`] and [`Limits`]
//! (`crate::limits`, with their sources).
//!
//! | component | code | rule | scenario |
//! | --- | --- | --- | --- |
//! | diagnosis | `data_gap` | a device's longest gap in the window > `data_gap_hours` | `device-silent` (and `link-outage-backlog`, which must *not* flag: its backlog arrives with original times) |
//! | diagnosis | `probe_drift` | the last 3 DPD checks differ from the probe beyond max(0.1 mg/L, 20 %) in the same direction | `chlorine-probe-drift` |
//! | diagnosis | `sensor_fault` | `sensor_fault` or `device_offline` alerts opened in the window | `device-silent` with the alert engine; the `[[instrument_fault]]` event |
//! | diagnosis | `days_without_chlorine` | days in the window without a valid chlorine reading | a silent pump-house device for a whole day |
//! | technology | `chlorine_compliance_low` | chlorine compliance < `chlorine_compliance_min_pct` (by DPD checks when the probe drifts) → dosing equipment / automation of dosing | `chlorinator-empty`, `chlorine-dosing-erratic` |
//! | technology | `leak` | night consumption (production − Δ storage, 02:00–04:00) over mean consumption > `night_consumption_ratio_max`, or above the APR's baseline × factor → macro-metering and leak detection | `leak` |
//! | technology | `turbidity_events` | hours with turbidity ≥ 4 NTU (NCh 409/1) ≥ `turbidity_high_hours` → filtration | `turbidity-event` |
//! | technology | `lab_exceedance` | a lab result above its NCh 409/1 limit → treatment or disinfection | none (manual records) |
//! | engineering | `production_below_peak_demand` | peak-day mean consumption > `capacity_utilisation_max_pct` of capacity, or a day with pump hours ≥ `pump_hours_max` | `production-below-peak-demand` |
//! | engineering | `storage_too_small` | storage < `storage_min_hours` of peak-day demand, or the tank low on ≥ `tank_low_days` days while the pump still rests ≥ `pump_rest_hours_min` h unless the `leak` rule holds (a leak drains the tank at the peaks too: fix it first, then judge the storage) | `storage-too-small` |
//! | engineering | `pressure_low_peak_hour` | pressure below 15 m.c.a. (NCh 691) at a peak hour, with the tank above its low level (so the cause is the network, not an empty tank, which `leak` and the other engineering rules explain), on ≥ `pressure_low_days_pct` of the days | `low-pressure-peak-hour` |
//! | training | `erratic_dosing_practice` | chlorine both above the maximum and below the minimum ≥ `chlorine_sawtooth_pct` each, with a spread ≥ `chlorine_erratic_sd_mg_l` (manual batches) | `chlorine-dosing-erratic` |
//! | training | `alerts_unacknowledged` | alerts in the window left unacknowledged > `unacknowledged_hours` | any raising scenario when nobody acknowledges (the alert engine's escalation) |
//! | training | `dpd_checks_missing` | days with a DPD check < `dpd_days_min_pct` of the window (NCh 409/1: days without a control reading are non-compliance) | every scenario run without the daily DPD checks |
//!
//! Scenarios that flag more than one component do so because each component
//! has its own evidence: `production-below-peak-demand` also drains the
//! tank (all engineering); `chlorine-dosing-erratic`
//! calls for dosing equipment (technology) and for training the operator
//! who pours the batches (training).

use serde::Serialize;
use serde_json::json;

use crate::alerting::{Alert, AlertKind};
use crate::field::{probe_drift, DpdComparison, LAB_PARAMETERS};
use crate::kpi::WindowKpis;
use crate::limits::{AssessmentLimits, Limits};
use crate::store::{FieldKind, FieldRecord};

/// The four components, in CONTRACT §3 order.
pub const COMPONENTS: [&str; 4] = ["diagnosis", "technology", "engineering", "training"];

/// One reason a component is flagged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// Stable code (see the table above).
    pub code: &'static str,
    /// What it means, in Spanish.
    pub message: String,
    /// The KPI values, the window and the thresholds compared.
    pub evidence: serde_json::Value,
}

/// One component's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentResult {
    /// `diagnosis`, `technology`, `engineering` or `training`.
    pub component: &'static str,
    /// Whether any reason holds.
    pub flagged: bool,
    /// The reasons.
    pub reasons: Vec<Reason>,
}

/// Everything the rules look at.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The window's KPIs.
    pub window: &'a WindowKpis,
    /// First instant of the window, ms.
    pub from_ms: i64,
    /// Instant after the window, ms.
    pub to_ms: i64,
    /// Days in the window.
    pub days: u32,
    /// Storage volume, m³ (for evidence).
    pub storage_m3: f64,
    /// Production capacity, l/s (for evidence).
    pub capacity_l_s: f64,
    /// The APR's alert limits.
    pub limits: &'a Limits,
    /// The assessment limits.
    pub a: &'a AssessmentLimits,
    /// Alerts of the APR opened in the window.
    pub alerts: &'a [Alert],
    /// Field records of the APR in the window.
    pub field: &'a [FieldRecord],
    /// DPD checks next to the probe, oldest first.
    pub dpd: &'a [DpdComparison],
    /// Now, ms (for alerts still unacknowledged).
    pub now_ms: i64,
}

fn window_json(i: &Inputs<'_>) -> serde_json::Value {
    json!({
        "from": super::rfc3339_ms(i.from_ms),
        "to": super::rfc3339_ms(i.to_ms),
        "days": i.days,
    })
}

fn r(
    code: &'static str,
    message: String,
    i: &Inputs<'_>,
    mut evidence: serde_json::Value,
) -> Reason {
    if let Some(o) = evidence.as_object_mut() {
        o.insert("window".into(), window_json(i));
    }
    Reason {
        code,
        message,
        evidence,
    }
}

/// Runs every rule; answers the four components in CONTRACT §3 order.
pub fn assess(i: &Inputs<'_>) -> Vec<ComponentResult> {
    let drift = probe_drift(i.dpd, i.a);
    let w = i.window;
    let a = i.a;
    let mut diagnosis = Vec::new();
    let mut technology = Vec::new();
    let mut engineering = Vec::new();
    let mut training = Vec::new();

    // Diagnosis.
    if let Some(g) = w.longest_gap_h.filter(|g| *g > a.data_gap_hours) {
        diagnosis.push(r(
            "data_gap",
            format!(
                "Un equipo estuvo {g:.1} h sin enviar lecturas (día {}): revisar equipo, energía y enlace.",
                w.longest_gap_day.as_deref().unwrap_or("?")
            ),
            i,
            json!({"longest_gap_h": g, "day": w.longest_gap_day, "threshold_h": a.data_gap_hours}),
        ));
    }
    if let Some(d) = &drift {
        diagnosis.push(r(
            "probe_drift",
            format!(
                "La sonda de cloro difiere de los controles DPD ({} de lo medido con DPD en los últimos {} controles): recalibrar la sonda de cloro.",
                if d.direction == "low" { "bajo" } else { "sobre" },
                d.checks.len()
            ),
            i,
            json!({
                "direction": d.direction,
                "checks": d.checks,
                "threshold_abs_mg_l": a.probe_drift_abs_mg_l,
                "threshold_rel": a.probe_drift_rel,
                "checks_required": a.probe_drift_checks,
            }),
        ));
    }
    let faults: Vec<&Alert> = i
        .alerts
        .iter()
        .filter(|al| matches!(al.kind, AlertKind::SensorFault | AlertKind::DeviceOffline))
        .collect();
    if !faults.is_empty() {
        diagnosis.push(r(
            "sensor_fault",
            format!(
                "{} alertas de falla de sensor o equipo sin conexión en la ventana: diagnosticar la instrumentación.",
                faults.len()
            ),
            i,
            json!({
                "alerts": faults.iter().map(|al| json!({"id": al.id, "kind": al.kind.as_str(), "device": al.device, "opened_at": super::rfc3339_ms(al.opened_at_ms)})).collect::<Vec<_>>(),
            }),
        ));
    }
    if w.days_without_chlorine > 0 {
        diagnosis.push(r(
            "days_without_chlorine",
            format!(
                "{} días sin una lectura válida de cloro libre (NCh 409/1 los cuenta como incumplimiento).",
                w.days_without_chlorine
            ),
            i,
            json!({"days_without_chlorine": w.days_without_chlorine, "threshold_days": 0}),
        ));
    }

    // Technology.
    let dpd_compliance = {
        let n = i.dpd.len();
        (n > 0).then(|| {
            100.0
                * i.dpd
                    .iter()
                    .filter(|c| {
                        (i.limits.chlorine_min_mg_l..=i.limits.chlorine_max_mg_l)
                            .contains(&c.dpd_mg_l)
                    })
                    .count() as f64
                / n as f64
        })
    };
    // With a drifting probe, the DPD checks say how the water is.
    let (compliance, basis) = if drift.is_some() {
        (dpd_compliance, "dpd")
    } else {
        (w.chlorine_compliance_pct, "probe")
    };
    if let Some(c) = compliance.filter(|c| *c < a.chlorine_compliance_min_pct) {
        let erratic = w
            .chlorine_sd_mg_l
            .is_some_and(|sd| sd >= a.chlorine_erratic_sd_mg_l);
        technology.push(r(
            "chlorine_compliance_low",
            if erratic {
                format!("Cumplimiento de cloro libre {c:.0} % (< {:.0} %) con dosificación errática: automatizar la dosificación (bomba dosificadora).", a.chlorine_compliance_min_pct)
            } else {
                format!("Cumplimiento de cloro libre {c:.0} % (< {:.0} %): revisar el clorador (vacío o sin dosificar).", a.chlorine_compliance_min_pct)
            },
            i,
            json!({
                "chlorine_compliance_pct": c,
                "basis": basis,
                "chlorine_below_pct": w.chlorine_below_pct,
                "chlorine_above_pct": w.chlorine_above_pct,
                "chlorine_sd_mg_l": w.chlorine_sd_mg_l,
                "threshold_pct": a.chlorine_compliance_min_pct,
                "range_mg_l": [i.limits.chlorine_min_mg_l, i.limits.chlorine_max_mg_l],
            }),
        ));
    }
    let baseline_exceeded = match (i.limits.night_flow_baseline_l_s, w.night_consumption_l_s) {
        (Some(b), Some(n)) => n > b * i.limits.night_flow_factor,
        _ => false,
    };
    let leak = w
        .night_ratio
        .is_some_and(|x| x > a.night_consumption_ratio_max)
        || baseline_exceeded;
    if leak {
        technology.push(r(
            "leak",
            format!(
                "Consumo nocturno {:.2} l/s ({:.0} % del consumo medio): probable fuga; macromedición y detección de fugas.",
                w.night_consumption_l_s.unwrap_or(0.0),
                100.0 * w.night_ratio.unwrap_or(0.0)
            ),
            i,
            json!({
                "night_consumption_l_s": w.night_consumption_l_s,
                "mean_consumption_l_s": w.mean_consumption_l_s,
                "night_ratio": w.night_ratio,
                "leakage_l_s": w.leakage_l_s,
                "threshold_ratio": a.night_consumption_ratio_max,
                "baseline_l_s": i.limits.night_flow_baseline_l_s,
                "baseline_factor": i.limits.night_flow_factor,
            }),
        ));
    }
    if w.turbidity_high_h >= a.turbidity_high_hours {
        technology.push(r(
            "turbidity_events",
            format!(
                "{:.0} h con turbiedad ≥ {} NTU (NCh 409/1): evaluar filtración.",
                w.turbidity_high_h, i.limits.turbidity_critical_ntu
            ),
            i,
            json!({"turbidity_high_h": w.turbidity_high_h, "threshold_h": a.turbidity_high_hours, "critical_ntu": i.limits.turbidity_critical_ntu}),
        ));
    }
    let exceed: Vec<serde_json::Value> = i
        .field
        .iter()
        .filter(|f| f.kind == FieldKind::Lab)
        .filter_map(|f| {
            let p = f.parameter.as_deref()?;
            let (_, limit, unit) = LAB_PARAMETERS.iter().find(|x| x.0 == p)?;
            let v = f.value?;
            (v > *limit).then(|| json!({"parameter": p, "value": v, "limit": limit, "unit": unit, "taken_at": super::rfc3339_ms(f.taken_at_ms)}))
        })
        .collect();
    if !exceed.is_empty() {
        technology.push(r(
            "lab_exceedance",
            format!(
                "{} resultados de laboratorio sobre el límite de la NCh 409/1: evaluar tratamiento o desinfección.",
                exceed.len()
            ),
            i,
            json!({"results": exceed}),
        ));
    }

    // Engineering.
    let cu = w.capacity_utilisation_pct;
    if cu.is_some_and(|c| c > a.capacity_utilisation_max_pct)
        || w.max_pump_hours.is_some_and(|p| p >= a.pump_hours_max)
    {
        engineering.push(r(
            "production_below_peak_demand",
            format!(
                "La producción no cubre la demanda del día punta ({}: {:.0} % de la capacidad, bomba hasta {:.1} h/día): nuevas fuentes o mayor capacidad.",
                w.peak_day.as_deref().unwrap_or("?"),
                cu.unwrap_or(0.0),
                w.max_pump_hours.unwrap_or(0.0)
            ),
            i,
            json!({
                "peak_day": w.peak_day,
                "peak_day_m3": w.peak_day_m3,
                "capacity_l_s": i.capacity_l_s,
                "capacity_utilisation_pct": cu,
                "max_pump_hours": w.max_pump_hours,
                "threshold_pct": a.capacity_utilisation_max_pct,
                "threshold_pump_hours": a.pump_hours_max,
            }),
        ));
    }
    // A leak draws at every hour and drains the tank at the peaks too: the
    // tank running low is then the leak's evidence (fix it first), and only
    // the design criterion (storage hours) judges the storage.
    if w.storage_hours.is_some_and(|h| h < a.storage_min_hours)
        || (w.tank_low_days_pump_resting >= a.tank_low_days && !leak)
    {
        engineering.push(r(
            "storage_too_small",
            format!(
                "El estanque cubre {:.1} h de la demanda del día punta y bajó del nivel mínimo {} días con la bomba en reposo: ampliar el almacenamiento.",
                w.storage_hours.unwrap_or(0.0),
                w.tank_low_days_pump_resting
            ),
            i,
            json!({
                "storage_m3": i.storage_m3,
                "storage_hours": w.storage_hours,
                "peak_day_m3": w.peak_day_m3,
                "tank_low_days_pump_resting": w.tank_low_days_pump_resting,
                "threshold_hours": a.storage_min_hours,
                "threshold_days": a.tank_low_days,
                "pump_rest_hours_min": a.pump_rest_hours_min,
                "tank_low_pct": i.limits.tank_low_pct,
            }),
        ));
    }
    let days = f64::from(w.days.max(1));
    let low_pct = 100.0 * f64::from(w.pressure_low_days) / days;
    if w.pressure_low_days > 0 && low_pct >= a.pressure_low_days_pct {
        engineering.push(r(
            "pressure_low_peak_hour",
            format!(
                "Presión bajo {} m.c.a. en hora punta {} de {} días (NCh 691): revisar cota del estanque y diámetros de la red.",
                i.limits.pressure_min_mca, w.pressure_low_days, w.days
            ),
            i,
            json!({
                "pressure_low_days": w.pressure_low_days,
                "days": w.days,
                "pressure_peak_min_mca": w.pressure_peak_min_mca,
                "continuity_h": w.continuity_h,
                "threshold_mca": i.limits.pressure_min_mca,
                "threshold_days_pct": a.pressure_low_days_pct,
            }),
        ));
    }

    // Training.
    let sawtooth = w
        .chlorine_above_pct
        .is_some_and(|x| x >= a.chlorine_sawtooth_pct)
        && w.chlorine_below_pct
            .is_some_and(|x| x >= a.chlorine_sawtooth_pct)
        && w.chlorine_sd_mg_l
            .is_some_and(|sd| sd >= a.chlorine_erratic_sd_mg_l);
    if sawtooth && drift.is_none() {
        training.push(r(
            "erratic_dosing_practice",
            format!(
                "Cloro libre en diente de sierra ({:.0} % de lecturas sobre {} mg/L y {:.0} % bajo {} mg/L): capacitar al operador en la dosificación.",
                w.chlorine_above_pct.unwrap_or(0.0),
                i.limits.chlorine_max_mg_l,
                w.chlorine_below_pct.unwrap_or(0.0),
                i.limits.chlorine_min_mg_l
            ),
            i,
            json!({
                "chlorine_above_pct": w.chlorine_above_pct,
                "chlorine_below_pct": w.chlorine_below_pct,
                "chlorine_sd_mg_l": w.chlorine_sd_mg_l,
                "threshold_pct": a.chlorine_sawtooth_pct,
                "threshold_sd_mg_l": a.chlorine_erratic_sd_mg_l,
            }),
        ));
    }
    let limit_ms = (a.unacknowledged_hours * 3_600_000.0) as i64;
    let late: Vec<serde_json::Value> = i
        .alerts
        .iter()
        .filter_map(|al| {
            let until = al
                .acknowledged_at_ms
                .or(al.resolved_at_ms)
                .unwrap_or(i.now_ms);
            let waited = until - al.opened_at_ms;
            (waited > limit_ms).then(|| {
                json!({"id": al.id, "kind": al.kind.as_str(), "opened_at": super::rfc3339_ms(al.opened_at_ms), "hours_unacknowledged": waited as f64 / 3_600_000.0})
            })
        })
        .collect();
    if !late.is_empty() {
        training.push(r(
            "alerts_unacknowledged",
            format!(
                "{} alertas quedaron más de {:.0} h sin reconocer: capacitar en la atención de alertas.",
                late.len(),
                a.unacknowledged_hours
            ),
            i,
            json!({"alerts": late, "threshold_h": a.unacknowledged_hours}),
        ));
    }
    let mut dpd_days: Vec<String> = i
        .field
        .iter()
        .filter(|f| f.kind == FieldKind::DpdChlorine)
        .map(|f| crate::kpi::local_day(f.taken_at_ms).to_string())
        .collect();
    dpd_days.sort();
    dpd_days.dedup();
    let dpd_pct = 100.0 * dpd_days.len() as f64 / f64::from(i.days.max(1));
    if dpd_pct < a.dpd_days_min_pct {
        training.push(r(
            "dpd_checks_missing",
            format!(
                "Controles DPD de cloro en {} de {} días ({dpd_pct:.0} %): el control diario es obligatorio (NCh 409/1).",
                dpd_days.len(),
                i.days
            ),
            i,
            json!({"days_with_dpd": dpd_days.len(), "days": i.days, "dpd_days_pct": dpd_pct, "threshold_pct": a.dpd_days_min_pct}),
        ));
    }

    [diagnosis, technology, engineering, training]
        .into_iter()
        .zip(COMPONENTS)
        .map(|(reasons, component)| ComponentResult {
            component,
            flagged: !reasons.is_empty(),
            reasons,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(
        w: &'a WindowKpis,
        l: &'a Limits,
        a: &'a AssessmentLimits,
        field: &'a [FieldRecord],
        dpd: &'a [DpdComparison],
        alerts: &'a [Alert],
    ) -> Inputs<'a> {
        Inputs {
            window: w,
            from_ms: 0,
            to_ms: 30 * 86_400_000,
            days: 30,
            storage_m3: 20.0,
            capacity_l_s: 1.4,
            limits: l,
            a,
            alerts,
            field,
            dpd,
            now_ms: 30 * 86_400_000,
        }
    }

    fn daily_dpd() -> Vec<FieldRecord> {
        (0..30)
            .map(|d| FieldRecord {
                id: d,
                apr: "a".into(),
                kind: FieldKind::DpdChlorine,
                taken_at_ms: d * 86_400_000 + 13 * 3_600_000,
                value: Some(1.0),
                parameter: None,
                note: None,
                recorded_by: "op".into(),
                recorded_at_ms: 0,
            })
            .collect()
    }

    fn healthy() -> WindowKpis {
        WindowKpis {
            days: 30,
            chlorine_compliance_pct: Some(100.0),
            chlorine_sd_mg_l: Some(0.05),
            chlorine_above_pct: Some(0.0),
            chlorine_below_pct: Some(0.0),
            night_ratio: Some(0.33),
            storage_hours: Some(7.0),
            capacity_utilisation_pct: Some(50.0),
            max_pump_hours: Some(12.0),
            longest_gap_h: Some(0.1),
            ..WindowKpis::default()
        }
    }

    fn flagged(c: &[ComponentResult]) -> Vec<&'static str> {
        c.iter()
            .filter(|c| c.flagged)
            .map(|c| c.component)
            .collect()
    }

    #[test]
    fn a_healthy_window_with_daily_dpd_checks_flags_nothing() {
        let (l, a, w, f) = (
            Limits::default(),
            AssessmentLimits::default(),
            healthy(),
            daily_dpd(),
        );
        let c = assess(&inputs(&w, &l, &a, &f, &[], &[]));
        assert_eq!(
            c.iter().map(|c| c.component).collect::<Vec<_>>(),
            COMPONENTS
        );
        assert!(flagged(&c).is_empty(), "{c:#?}");
    }

    #[test]
    fn a_sawtooth_of_chlorine_flags_technology_and_training_with_evidence() {
        let (l, a, f) = (Limits::default(), AssessmentLimits::default(), daily_dpd());
        let w = WindowKpis {
            chlorine_compliance_pct: Some(60.0),
            chlorine_sd_mg_l: Some(0.8),
            chlorine_above_pct: Some(20.0),
            chlorine_below_pct: Some(20.0),
            ..healthy()
        };
        let c = assess(&inputs(&w, &l, &a, &f, &[], &[]));
        assert_eq!(flagged(&c), ["technology", "training"]);
        let e = &c[1].reasons[0].evidence;
        assert_eq!(e["chlorine_compliance_pct"], 60.0);
        assert_eq!(e["threshold_pct"], 95.0);
        assert_eq!(e["window"]["days"], 30);
    }

    #[test]
    fn missing_dpd_checks_and_late_acknowledgements_flag_training() {
        let (l, a, w) = (Limits::default(), AssessmentLimits::default(), healthy());
        let c = assess(&inputs(&w, &l, &a, &[], &[], &[]));
        assert_eq!(flagged(&c), ["training"]);
        assert_eq!(c[3].reasons[0].code, "dpd_checks_missing");
    }
}
