//! Water demand of an APR's network: a daily curve (low at night, a morning
//! and an evening peak) times a weekly curve (more at weekends), scaled by
//! beneficiaries and a per-capita allowance, with slow random variation, plus
//! a leak as a constant flow at every hour.
//!
//! The per-capita allowance and the peak factors are per-APR configuration
//! (`DOMAIN.md`: the DOH design coefficients are *unconfirmed*); the defaults
//! here are demo assumptions: 150 L/person/day, a peak hour about 2.3 times
//! the day's mean, a night (02:00–04:00) minimum about a third of it.

use serde::Deserialize;

use crate::clock::LocalTime;

/// Demand parameters of a scenario (`[demand]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemandParams {
    /// Per-capita allowance, litres per person per day (*default*, demo).
    pub litres_per_person_day: f64,
    /// Multiplies the whole curve (a hot week: > 1).
    pub seasonal_factor: f64,
    /// Multiplies Saturday and Sunday (before the week is normalised, so
    /// the weekly mean stays that of the allowance × seasonal factor).
    pub weekend_factor: f64,
    /// A leak: water lost at every hour, l/s.
    pub leak_l_s: f64,
    /// Relative spread of the slow random variation (0.05 = ±5 %).
    pub variation: f64,
}

impl Default for DemandParams {
    fn default() -> Self {
        DemandParams {
            litres_per_person_day: 150.0,
            seasonal_factor: 1.0,
            weekend_factor: 1.0,
            leak_l_s: 0.0,
            variation: 0.05,
        }
    }
}

const BASE: f64 = 0.15;
/// (centre hour, height, width in hours) of the morning and evening peaks.
const PEAKS: [(f64, f64, f64); 2] = [(8.0, 1.0, 2.5), (20.0, 0.9, 2.5)];

fn raw_curve(hour: f64) -> f64 {
    let mut v = BASE;
    for (centre, height, width) in PEAKS {
        // Periodic over the day: the evening peak spills past midnight.
        for shift in [-24.0, 0.0, 24.0] {
            let x = (hour - centre - shift) / width;
            v += height * (-x * x).exp();
        }
    }
    v
}

fn curve_mean() -> f64 {
    static MEAN: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *MEAN.get_or_init(|| {
        (0..1440)
            .map(|m| raw_curve(f64::from(m) / 60.0))
            .sum::<f64>()
            / 1440.0
    })
}

/// Relative demand at a local hour, mean 1 over the day.
pub fn diurnal_factor(local_hour: f64) -> f64 {
    raw_curve(local_hour) / curve_mean()
}

/// The highest [`diurnal_factor`] of the day (the peak-hour factor).
pub fn peak_hour_factor() -> f64 {
    diurnal_factor(PEAKS[0].0)
}

/// Relative demand of a weekday (Monday = 0), mean 1 over the week.
pub fn weekly_factor(weekday: u8, weekend_factor: f64) -> f64 {
    let raw = |d: u8| if d >= 5 { 1.07 * weekend_factor } else { 0.97 };
    let mean = (0..7).map(raw).sum::<f64>() / 7.0;
    raw(weekday) / mean
}

/// The demand of one site.
#[derive(Debug, Clone)]
pub struct Demand {
    params: DemandParams,
    mean_l_s: f64,
    /// Slow random variation, an AR(1) around 0.
    wobble: f64,
}

impl Demand {
    /// The demand of `beneficiaries` people.
    pub fn new(params: DemandParams, beneficiaries: u32) -> Self {
        let mean_l_s = f64::from(beneficiaries) * params.litres_per_person_day / 86_400.0
            * params.seasonal_factor;
        Demand {
            params,
            mean_l_s,
            wobble: 0.0,
        }
    }

    /// Mean consumption over a week (leak excluded), l/s.
    pub fn mean_l_s(&self) -> f64 {
        self.mean_l_s
    }

    /// The leak, l/s.
    pub fn leak_l_s(&self) -> f64 {
        self.params.leak_l_s
    }

    /// Consumption (leak excluded) at `local`, l/s; `noise` is a uniform
    /// draw in −1..1 that moves the slow variation (one per minute).
    pub fn consumption_l_s(&mut self, local: LocalTime, noise: f64) -> f64 {
        // AR(1) with a time constant of about an hour at one step a minute.
        self.wobble = 0.985 * self.wobble + 0.17 * noise * self.params.variation;
        let f =
            diurnal_factor(local.hour) * weekly_factor(local.weekday, self.params.weekend_factor);
        (self.mean_l_s * f * (1.0 + self.wobble)).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_curve_has_mean_one_a_low_night_and_a_morning_peak() {
        let mean = (0..1440)
            .map(|m| diurnal_factor(f64::from(m) / 60.0))
            .sum::<f64>()
            / 1440.0;
        assert!((mean - 1.0).abs() < 1e-9);
        assert!(diurnal_factor(3.0) < 0.45, "{}", diurnal_factor(3.0));
        assert!(
            (1.8..3.0).contains(&peak_hour_factor()),
            "{}",
            peak_hour_factor()
        );
    }

    #[test]
    fn the_weekly_curve_has_mean_one_and_weekends_above_weekdays() {
        let mean = (0..7).map(|d| weekly_factor(d, 1.3)).sum::<f64>() / 7.0;
        assert!((mean - 1.0).abs() < 1e-12);
        assert!(weekly_factor(6, 1.3) > 1.2 * weekly_factor(2, 1.3));
    }
}
