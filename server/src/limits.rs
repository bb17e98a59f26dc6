//! The one place for the domain numbers the server acts on, each with its
//! source. Everything else (alert rules, dashboards, KPIs) reads them from
//! here, never from a literal of its own.
//!
//! Numbers come in two kinds, and each doc comment says which:
//! - **standard**: taken from a Chilean standard or the WHO, with the clause
//!   as applied in practice (see `shared/DOMAIN.md`);
//! - **programme default**: a choice of this programme, not a standard; it
//!   is a starting point an engineer is expected to tune per APR.
//!
//! [`Limits::default`] holds the programme-wide values. Each APR may override
//! any of them (`GET/PUT /api/v1/aprs/{id}/limits`, admin only), stored as
//! `(apr, key, value, set_by, set_at)` rows; [`Limits::with_overrides`] lays
//! those over the defaults and [`Limits::check`] refuses a combination that
//! makes no sense (a clear level on the wrong side of its raise level).
//!
//! Hysteresis: every level-based alert has a raise level and a separate clear
//! level, so a value hovering at the limit does not open and close an alert on
//! every reading.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// NAMUR NE 43: a 4–20 mA loop current below this (mA) signals a fault
/// (sensor break, short), not a measurement. **Standard.**
pub const NAMUR_FAULT_LOW_MA: f64 = 3.6;
/// NAMUR NE 43: a loop current above this (mA) signals a fault. **Standard.**
pub const NAMUR_FAULT_HIGH_MA: f64 = 21.0;
/// NCh 691.Of98 (as stated by the SISS): the maximum static pressure in the
/// network, m.c.a. **Standard.** Informative here (no alert yet).
pub const PRESSURE_MAX_STATIC_MCA: f64 = 70.0;
/// The local time zone of every APR in the programme, for peak hours, the
/// night-flow window and local days.
pub const LOCAL_TZ: chrono_tz::Tz = chrono_tz::America::Santiago;

/// NCh 409/1 Of.2005: arsenic, mg/L (since 2007, after a transition at
/// 0.05 and 0.03). **Standard.** Compared with lab results (field records).
pub const ARSENIC_MAX_MG_L: f64 = 0.01;
/// NCh 409/1 Of.2005: nitrate, mg NO₃/L. **Standard.**
pub const NITRATE_MAX_MG_L: f64 = 50.0;
/// NCh 409/1 Of.2005: total coliforms per 100 mL (and E. coli absent).
/// **Standard.**
pub const COLIFORMS_MAX_PER_100ML: f64 = 0.0;

/// The numbers behind the KPIs and the four-component assessment
/// (`crate::kpi`, `crate::assessment`). Programme-wide; each says whether
/// it is a standard, a practice or a programme default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssessmentLimits {
    /// Share of the minimum night consumption that is legitimate night use
    /// (the rest is the leakage estimate). **Practice** (IWA): a first
    /// estimate of 10–30 % of MNF; 20 % here.
    pub legitimate_night_use_share: f64,
    /// Night consumption above this share of the day's mean consumption
    /// suggests leakage. **Programme default** (a well-run network's night
    /// flow is about a third of its mean; the healthy twin: ~0.33).
    pub night_consumption_ratio_max: f64,
    /// Chlorine compliance (share of readings within NCh 409/1's range)
    /// below this over the window flags the disinfection, %. **Programme
    /// default** (the standard expects every sample within range).
    pub chlorine_compliance_min_pct: f64,
    /// The spread (standard deviation) of chlorine readings above which
    /// dosing counts as erratic, mg/L. **Programme default** (the healthy
    /// twin's spread is about 0.05 mg/L).
    pub chlorine_erratic_sd_mg_l: f64,
    /// Share of readings both above the maximum and below the minimum
    /// beyond which the pattern is a manual-batch saw-tooth, %.
    /// **Programme default.**
    pub chlorine_sawtooth_pct: f64,
    /// Hours of turbidity at or above the critical level in the window that
    /// call for filtration. **Programme default.**
    pub turbidity_high_hours: f64,
    /// A gap longer than this in a device's series (by reading time) counts
    /// as the device silent, hours. **Programme default.**
    pub data_gap_hours: f64,
    /// Storage below this many hours of peak-day demand is too small.
    /// **Programme default** (DOH tank sizing is *unconfirmed*: per-APR
    /// configuration is the intent).
    pub storage_min_hours: f64,
    /// The peak day's mean consumption above this share of the production
    /// capacity means production cannot keep up, %. **Programme default.**
    pub capacity_utilisation_max_pct: f64,
    /// Pump hours on a day above which the pump cannot keep up. **Programme
    /// default.**
    pub pump_hours_max: f64,
    /// Days in the window with any tank-low hour (while the pump still
    /// rests) that show the storage does not cover the peaks. **Programme
    /// default.**
    pub tank_low_days: u32,
    /// The pump "still rests" on a day when it stops at least this many
    /// hours: then a tank running low at peak hours is the storage's fault,
    /// not production's. **Programme default.**
    pub pump_rest_hours_min: f64,
    /// Share of days with pressure below the NCh 691 minimum at a peak hour
    /// that flags the network, %. **Programme default.**
    pub pressure_low_days_pct: f64,
    /// A DPD check and the probe's reading differ when apart by more than
    /// this, mg/L, or by [`AssessmentLimits::probe_drift_rel`] of the DPD
    /// value, whichever is larger. **Programme default.**
    pub probe_drift_abs_mg_l: f64,
    /// See [`AssessmentLimits::probe_drift_abs_mg_l`]. **Programme default.**
    pub probe_drift_rel: f64,
    /// The last this many DPD checks, all off in the same direction, call
    /// for recalibration. **Programme default.**
    pub probe_drift_checks: usize,
    /// A DPD check is compared with the probe reading nearest in time
    /// within this, minutes. **Programme default.**
    pub probe_match_minutes: i64,
    /// Share of days in the window with a DPD check below which daily
    /// checks are missing, %. **Standard (practice)**: NCh 409/1 counts
    /// days without a control reading as non-compliance.
    pub dpd_days_min_pct: f64,
    /// An alert left unacknowledged longer than this, hours, points at
    /// operator practice. **Programme default.**
    pub unacknowledged_hours: f64,
    /// The assessment window, days. **Programme default.**
    pub window_days: u32,
}

impl Default for AssessmentLimits {
    fn default() -> Self {
        AssessmentLimits {
            legitimate_night_use_share: 0.2,
            night_consumption_ratio_max: 0.45,
            chlorine_compliance_min_pct: 95.0,
            chlorine_erratic_sd_mg_l: 0.4,
            chlorine_sawtooth_pct: 5.0,
            turbidity_high_hours: 1.0,
            data_gap_hours: 2.0,
            storage_min_hours: 4.0,
            capacity_utilisation_max_pct: 95.0,
            pump_hours_max: 22.0,
            tank_low_days: 3,
            pump_rest_hours_min: 4.0,
            pressure_low_days_pct: 20.0,
            probe_drift_abs_mg_l: 0.1,
            probe_drift_rel: 0.2,
            probe_drift_checks: 3,
            probe_match_minutes: 15,
            dpd_days_min_pct: 80.0,
            unacknowledged_hours: 24.0,
            window_days: 30,
        }
    }
}

/// A local-time window `[start_hour, end_hour)`, hours 0–24.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HourWindow {
    /// First hour in the window, local time.
    pub start: u8,
    /// First hour after the window, local time.
    pub end: u8,
}

impl HourWindow {
    /// Whether a local time of day (seconds since local midnight) is inside.
    pub fn contains(&self, local_second_of_day: u32) -> bool {
        let s = u32::from(self.start) * 3600;
        let e = u32::from(self.end) * 3600;
        (s..e).contains(&local_second_of_day)
    }
}

/// The thresholds and timings of one APR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Free residual chlorine minimum, mg/L: below it `chlorine_low` raises.
    /// **Standard**: NCh 409/1 Of.2005, 0.2–2.0 mg/L at any point of the network.
    pub chlorine_min_mg_l: f64,
    /// `chlorine_low` clears at or above this, mg/L. **Programme default**
    /// (hysteresis band above the standard's 0.2).
    pub chlorine_low_clear_mg_l: f64,
    /// Free residual chlorine maximum, mg/L: above it `chlorine_high` raises.
    /// **Standard**: NCh 409/1 Of.2005.
    pub chlorine_max_mg_l: f64,
    /// `chlorine_high` clears at or below this, mg/L. **Programme default.**
    pub chlorine_high_clear_mg_l: f64,
    /// pH minimum. **Standard**: NCh 409/1 Of.2005, 6.5–8.5.
    pub ph_min: f64,
    /// pH maximum. **Standard**: NCh 409/1 Of.2005.
    pub ph_max: f64,
    /// `ph_out_of_range` clears once pH is this far inside the range.
    /// **Programme default.**
    pub ph_clear_margin: f64,
    /// Turbidity warning level, NTU: at or above it `turbidity_high` raises
    /// as a warning. **Standard (guidance)**: WHO, < 1 NTU for effective
    /// disinfection.
    pub turbidity_warning_ntu: f64,
    /// Turbidity critical level, NTU. **Standard**: NCh 409/1 Of.2005 as
    /// applied by accredited Chilean laboratories (4 NTU; a 2 NTU clause is
    /// unconfirmed).
    pub turbidity_critical_ntu: f64,
    /// `turbidity_high` clears below this, NTU. **Programme default.**
    pub turbidity_clear_ntu: f64,
    /// Minimum service pressure at peak-hour demand, m.c.a.: below it during
    /// [`Limits::peak_hours`] `pressure_low` raises. **Standard**: NCh 691.Of98
    /// (as stated by the SISS), 15 m.c.a.
    pub pressure_min_mca: f64,
    /// `pressure_low` clears at or above this, m.c.a. **Programme default.**
    pub pressure_clear_mca: f64,
    /// The APR's peak hours, local time (America/Santiago). **Programme
    /// default**: 07:00–10:00 and 19:00–22:00, to be set per APR from its
    /// own demand curve.
    pub peak_hours: Vec<HourWindow>,
    /// Tank level below which `tank_low` raises, %. **Programme default**,
    /// not a standard.
    pub tank_low_pct: f64,
    /// `tank_low` clears at or above this, %. **Programme default.**
    pub tank_low_clear_pct: f64,
    /// The night window for the minimum night flow, local time. **Practice**
    /// (IWA): 02:00–04:00.
    pub night_window: HourWindow,
    /// `night_flow_high` raises when a night's minimum flow exceeds the
    /// APR's baseline times this factor. **Programme default.**
    pub night_flow_factor: f64,
    /// The APR's baseline minimum night flow, l/s; `None` to learn it as the
    /// median of the first [`Limits::night_flow_learning_nights`] nights.
    /// **Per APR.**
    pub night_flow_baseline_l_s: Option<f64>,
    /// Nights whose minimum flow make the learned baseline. **Programme default.**
    pub night_flow_learning_nights: u32,
    /// Readings a night window needs for its minimum to count (night-flow
    /// analysis needs readings at ≤ 15-minute intervals: 8 in two hours).
    /// **Practice** (DOMAIN.md, Instruments).
    pub night_flow_min_readings: u32,
    /// A device is offline after this many report intervals without a
    /// reading (or when its gateway says so). **Programme default.**
    pub offline_intervals: u32,
    /// Consecutive packs of a device with a value outside the physical range
    /// (quarantine reason `out_of_range`, e.g. a NAMUR NE 43 loop fault
    /// reported as an impossible value) that raise `sensor_fault`; as many
    /// clean packs clear it. **Programme default.**
    pub sensor_fault_packs: u32,
    /// How long a condition must hold before its alert raises, seconds
    /// (device time). **Programme default.** Offline, night flow and sensor
    /// faults carry their own duration (intervals, the night window, packs).
    pub min_duration_s: u32,
    /// A warning left unacknowledged this long escalates to critical,
    /// seconds. **Programme default.**
    pub escalate_after_s: u32,
    /// An unacknowledged alert is notified again this often, seconds.
    /// **Programme default.**
    pub renotify_every_s: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            chlorine_min_mg_l: 0.2,
            chlorine_low_clear_mg_l: 0.3,
            chlorine_max_mg_l: 2.0,
            chlorine_high_clear_mg_l: 1.8,
            ph_min: 6.5,
            ph_max: 8.5,
            ph_clear_margin: 0.1,
            turbidity_warning_ntu: 1.0,
            turbidity_critical_ntu: 4.0,
            turbidity_clear_ntu: 0.8,
            pressure_min_mca: 15.0,
            pressure_clear_mca: 16.0,
            peak_hours: vec![
                HourWindow { start: 7, end: 10 },
                HourWindow { start: 19, end: 22 },
            ],
            tank_low_pct: 20.0,
            tank_low_clear_pct: 25.0,
            night_window: HourWindow { start: 2, end: 4 },
            night_flow_factor: 1.5,
            night_flow_baseline_l_s: None,
            night_flow_learning_nights: 14,
            night_flow_min_readings: 8,
            offline_intervals: 3,
            sensor_fault_packs: 3,
            min_duration_s: 600,
            escalate_after_s: 3600,
            renotify_every_s: 3600,
        }
    }
}

/// One stored override of one APR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitOverride {
    /// The [`Limits`] field name.
    pub key: String,
    /// Its value (JSON, as the field takes).
    pub value: serde_json::Value,
    /// Who set it.
    pub set_by: String,
    /// When, ms since the Unix epoch.
    pub set_at_ms: i64,
}

impl Limits {
    /// The names of every field, for error messages.
    pub fn keys() -> Vec<String> {
        match serde_json::to_value(Limits::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The defaults with `overrides` laid over them, checked.
    pub fn with_overrides<'a>(
        overrides: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
    ) -> Result<Limits> {
        let mut value = serde_json::to_value(Limits::default())
            .map_err(|e| Error::Invalid(format!("limits: {e}")))?;
        let map = value
            .as_object_mut()
            .ok_or_else(|| Error::Invalid("limits are not an object".into()))?;
        for (k, v) in overrides {
            if !map.contains_key(k) {
                return Err(Error::InvalidBody(format!(
                    "'{k}' is not a limit; the limits are {}",
                    Limits::keys().join(", ")
                )));
            }
            map.insert(k.to_owned(), v.clone());
        }
        let limits: Limits = serde_json::from_value(value)
            .map_err(|e| Error::InvalidBody(format!("limits: {e}")))?;
        limits.check()?;
        Ok(limits)
    }

    /// Refuses limits whose levels contradict each other.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidBody(m));
        let finite = [
            ("chlorine_min_mg_l", self.chlorine_min_mg_l),
            ("chlorine_low_clear_mg_l", self.chlorine_low_clear_mg_l),
            ("chlorine_max_mg_l", self.chlorine_max_mg_l),
            ("chlorine_high_clear_mg_l", self.chlorine_high_clear_mg_l),
            ("ph_min", self.ph_min),
            ("ph_max", self.ph_max),
            ("ph_clear_margin", self.ph_clear_margin),
            ("turbidity_warning_ntu", self.turbidity_warning_ntu),
            ("turbidity_critical_ntu", self.turbidity_critical_ntu),
            ("turbidity_clear_ntu", self.turbidity_clear_ntu),
            ("pressure_min_mca", self.pressure_min_mca),
            ("pressure_clear_mca", self.pressure_clear_mca),
            ("tank_low_pct", self.tank_low_pct),
            ("tank_low_clear_pct", self.tank_low_clear_pct),
            ("night_flow_factor", self.night_flow_factor),
        ];
        for (k, v) in finite {
            if !v.is_finite() {
                return bad(format!("'{k}' must be a finite number"));
            }
        }
        let order = [
            (
                "chlorine_min_mg_l",
                self.chlorine_min_mg_l,
                "chlorine_low_clear_mg_l",
                self.chlorine_low_clear_mg_l,
            ),
            (
                "chlorine_high_clear_mg_l",
                self.chlorine_high_clear_mg_l,
                "chlorine_max_mg_l",
                self.chlorine_max_mg_l,
            ),
            (
                "chlorine_low_clear_mg_l",
                self.chlorine_low_clear_mg_l,
                "chlorine_high_clear_mg_l",
                self.chlorine_high_clear_mg_l,
            ),
            ("ph_min", self.ph_min, "ph_max", self.ph_max),
            (
                "turbidity_clear_ntu",
                self.turbidity_clear_ntu,
                "turbidity_warning_ntu",
                self.turbidity_warning_ntu,
            ),
            (
                "turbidity_warning_ntu",
                self.turbidity_warning_ntu,
                "turbidity_critical_ntu",
                self.turbidity_critical_ntu,
            ),
            (
                "pressure_min_mca",
                self.pressure_min_mca,
                "pressure_clear_mca",
                self.pressure_clear_mca,
            ),
            (
                "tank_low_pct",
                self.tank_low_pct,
                "tank_low_clear_pct",
                self.tank_low_clear_pct,
            ),
        ];
        for (lo_k, lo, hi_k, hi) in order {
            if lo > hi {
                return bad(format!("'{lo_k}' ({lo}) must not be above '{hi_k}' ({hi})"));
            }
        }
        if self.ph_clear_margin < 0.0 || 2.0 * self.ph_clear_margin > self.ph_max - self.ph_min {
            return bad(format!(
                "'ph_clear_margin' ({}) must be between 0 and half the pH range",
                self.ph_clear_margin
            ));
        }
        for w in self.peak_hours.iter().chain([&self.night_window]) {
            if w.start >= w.end || w.end > 24 {
                return bad(format!(
                    "hour window {}–{} must have 0 ≤ start < end ≤ 24",
                    w.start, w.end
                ));
            }
        }
        if self.night_flow_factor < 1.0 {
            return bad("'night_flow_factor' must be at least 1".into());
        }
        if self
            .night_flow_baseline_l_s
            .is_some_and(|b| b.is_nan() || b < 0.0)
        {
            return bad("'night_flow_baseline_l_s' must be a flow ≥ 0".into());
        }
        if self.offline_intervals == 0 || self.sensor_fault_packs == 0 {
            return bad("'offline_intervals' and 'sensor_fault_packs' must be at least 1".into());
        }
        Ok(())
    }

    /// Whether a local time of day (seconds since local midnight) is a peak hour.
    pub fn is_peak(&self, local_second_of_day: u32) -> bool {
        self.peak_hours
            .iter()
            .any(|w| w.contains(local_second_of_day))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_standards_and_pass_their_own_check() {
        let l = Limits::default();
        assert_eq!((l.chlorine_min_mg_l, l.chlorine_max_mg_l), (0.2, 2.0));
        assert_eq!((l.ph_min, l.ph_max), (6.5, 8.5));
        assert_eq!(
            (l.turbidity_warning_ntu, l.turbidity_critical_ntu),
            (1.0, 4.0)
        );
        assert_eq!(l.pressure_min_mca, 15.0);
        l.check().unwrap();
    }

    #[test]
    fn an_override_replaces_one_value_and_an_unknown_key_is_named() {
        let v = serde_json::json!(0.25);
        let l = Limits::with_overrides([("chlorine_min_mg_l", &v)]).unwrap();
        assert_eq!(l.chlorine_min_mg_l, 0.25);
        assert_eq!(l.ph_min, 6.5);
        let e = Limits::with_overrides([("chlorine_mni", &v)]).unwrap_err();
        assert!(
            e.to_string().contains("'chlorine_mni' is not a limit"),
            "{e}"
        );
    }

    #[test]
    fn a_clear_level_on_the_wrong_side_is_refused() {
        let v = serde_json::json!(0.1);
        let e = Limits::with_overrides([("chlorine_low_clear_mg_l", &v)]).unwrap_err();
        assert!(e.to_string().contains("chlorine_low_clear_mg_l"), "{e}");
    }

    #[test]
    fn peak_hours_are_half_open_local_windows() {
        let l = Limits::default();
        assert!(!l.is_peak(7 * 3600 - 1));
        assert!(l.is_peak(7 * 3600));
        assert!(l.is_peak(10 * 3600 - 1));
        assert!(!l.is_peak(10 * 3600));
        assert!(l.is_peak(20 * 3600));
    }
}
