//! Pure verdicts: one reading against its APR's limits.
//!
//! Every level rule has a raise level and a separate clear level (hysteresis,
//! see [`crate::limits`]); between the two the verdict is [`Verdict::Hold`]:
//! an open alert stays open and a pending condition starts over.

use apr_wire::Metric;

use super::{AlertKind, Severity};
use crate::limits::Limits;

/// What one reading says about one kind of alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The condition holds: raise (or keep) an alert of this severity; the
    /// threshold is the limit crossed.
    Raise {
        /// Severity the reading calls for.
        severity: Severity,
        /// The limit crossed.
        threshold: f64,
    },
    /// Back to normal: clear an open alert, forget a pending condition.
    Clear,
    /// Neither: keep an open alert, but a pending condition starts over.
    Hold,
}

/// The level-based alert kinds a metric feeds.
pub fn kinds_of(metric: Metric) -> &'static [AlertKind] {
    match metric {
        Metric::Chlorine => &[AlertKind::ChlorineLow, AlertKind::ChlorineHigh],
        Metric::Turbidity => &[AlertKind::TurbidityHigh],
        Metric::Ph => &[AlertKind::PhOutOfRange],
        Metric::TankLevel => &[AlertKind::TankLow],
        Metric::Pressure => &[AlertKind::PressureLow],
        _ => &[],
    }
}

fn raise(severity: Severity, threshold: f64) -> Verdict {
    Verdict::Raise {
        severity,
        threshold,
    }
}

/// The verdict of value `v` for `kind`, at `local_second_of_day` (seconds
/// since local midnight, America/Santiago; matters for peak hours only).
pub fn level(kind: AlertKind, limits: &Limits, v: f64, local_second_of_day: u32) -> Verdict {
    let l = limits;
    match kind {
        AlertKind::ChlorineLow if v < l.chlorine_min_mg_l => {
            raise(Severity::Warning, l.chlorine_min_mg_l)
        }
        AlertKind::ChlorineLow if v >= l.chlorine_low_clear_mg_l => Verdict::Clear,
        AlertKind::ChlorineHigh if v > l.chlorine_max_mg_l => {
            raise(Severity::Warning, l.chlorine_max_mg_l)
        }
        AlertKind::ChlorineHigh if v <= l.chlorine_high_clear_mg_l => Verdict::Clear,
        AlertKind::TurbidityHigh if v >= l.turbidity_critical_ntu => {
            raise(Severity::Critical, l.turbidity_critical_ntu)
        }
        AlertKind::TurbidityHigh if v >= l.turbidity_warning_ntu => {
            raise(Severity::Warning, l.turbidity_warning_ntu)
        }
        AlertKind::TurbidityHigh if v < l.turbidity_clear_ntu => Verdict::Clear,
        AlertKind::PhOutOfRange if v < l.ph_min => raise(Severity::Warning, l.ph_min),
        AlertKind::PhOutOfRange if v > l.ph_max => raise(Severity::Warning, l.ph_max),
        AlertKind::PhOutOfRange
            if v >= l.ph_min + l.ph_clear_margin && v <= l.ph_max - l.ph_clear_margin =>
        {
            Verdict::Clear
        }
        AlertKind::TankLow if v < l.tank_low_pct => raise(Severity::Warning, l.tank_low_pct),
        AlertKind::TankLow if v >= l.tank_low_clear_pct => Verdict::Clear,
        AlertKind::PressureLow if v >= l.pressure_clear_mca => Verdict::Clear,
        AlertKind::PressureLow if v < l.pressure_min_mca && l.is_peak(local_second_of_day) => {
            raise(Severity::Warning, l.pressure_min_mca)
        }
        _ => Verdict::Hold,
    }
}

/// Whether a device counts as offline at `now_ms`: its gateway said so, or
/// no reading arrived for `intervals` report intervals. A device never seen
/// and without a status is not judged.
pub fn offline(
    last_status: Option<&str>,
    last_seen_ms: Option<i64>,
    report_interval_s: u32,
    intervals: u32,
    now_ms: i64,
) -> Option<bool> {
    let silent = last_seen_ms.map(|seen| {
        now_ms - seen > i64::from(intervals) * 1000 * i64::from(report_interval_s.max(1))
    });
    match (last_status, silent) {
        (Some("offline"), _) => Some(true),
        (_, Some(s)) => Some(s),
        (Some(_), None) => None,
        (None, None) => None,
    }
}

/// The median of a non-empty list (the learned night-flow baseline).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: u32 = 12 * 3600;
    const EIGHT: u32 = 8 * 3600;

    #[test]
    fn chlorine_raises_below_the_minimum_and_clears_only_at_the_clear_level() {
        let l = Limits::default();
        let k = AlertKind::ChlorineLow;
        assert!(matches!(level(k, &l, 0.19, NOON), Verdict::Raise { .. }));
        assert_eq!(level(k, &l, 0.2, NOON), Verdict::Hold);
        assert_eq!(level(k, &l, 0.29, NOON), Verdict::Hold);
        assert_eq!(level(k, &l, 0.3, NOON), Verdict::Clear);
    }

    #[test]
    fn turbidity_is_a_warning_from_one_ntu_and_critical_from_four() {
        let l = Limits::default();
        let k = AlertKind::TurbidityHigh;
        assert_eq!(
            level(k, &l, 1.0, NOON),
            Verdict::Raise {
                severity: Severity::Warning,
                threshold: 1.0
            }
        );
        assert_eq!(
            level(k, &l, 4.0, NOON),
            Verdict::Raise {
                severity: Severity::Critical,
                threshold: 4.0
            }
        );
        assert_eq!(level(k, &l, 0.9, NOON), Verdict::Hold);
        assert_eq!(level(k, &l, 0.5, NOON), Verdict::Clear);
    }

    #[test]
    fn low_pressure_raises_only_in_peak_hours_but_clears_any_time() {
        let l = Limits::default();
        let k = AlertKind::PressureLow;
        assert!(matches!(level(k, &l, 12.0, EIGHT), Verdict::Raise { .. }));
        assert_eq!(level(k, &l, 12.0, NOON), Verdict::Hold);
        assert_eq!(level(k, &l, 16.5, NOON), Verdict::Clear);
    }

    #[test]
    fn ph_clears_inside_the_margin_only() {
        let l = Limits::default();
        let k = AlertKind::PhOutOfRange;
        assert!(matches!(level(k, &l, 8.6, NOON), Verdict::Raise { .. }));
        assert!(matches!(level(k, &l, 6.4, NOON), Verdict::Raise { .. }));
        assert_eq!(level(k, &l, 8.45, NOON), Verdict::Hold);
        assert_eq!(level(k, &l, 7.0, NOON), Verdict::Clear);
    }

    #[test]
    fn a_device_is_offline_when_its_gateway_says_so_or_after_n_silent_intervals() {
        assert_eq!(offline(Some("offline"), Some(0), 60, 3, 1), Some(true));
        assert_eq!(offline(None, Some(0), 60, 3, 180_000), Some(false));
        assert_eq!(offline(None, Some(0), 60, 3, 180_001), Some(true));
        assert_eq!(offline(Some("online"), Some(0), 60, 3, 10), Some(false));
        assert_eq!(offline(None, None, 60, 3, 10), None);
    }

    #[test]
    fn the_median_of_an_even_list_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
