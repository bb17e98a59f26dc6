//! Remote configuration from the retained `apr/{apr}/{device}/config` topic
//! (CONTRACT §2), decoded without an allocator, validated whole, then applied
//! whole: a bad configuration is refused with a reason and the running one
//! kept.
//!
//! # Payload
//!
//! ```json
//! {"report_interval_s": 300,
//!  "k_factor_l_per_pulse": 10.0,
//!  "calibration": {"chlorine": [[4.0, 0.0], [20.0, 5.0]],
//!                  "tank_level": [[4.0, 0.0], [20.0, 100.0]]}}
//! ```
//!
//! Every field is optional: a missing one keeps its current value, so the
//! gateway may send only what changes. A calibration is two `[mA, value]`
//! points for one of the 4–20 mA metrics (`chlorine`, `turbidity`,
//! `pressure`, `tank_level`). Unknown fields (thresholds the device does not
//! act on yet, fields of a newer gateway) are ignored, so an older firmware
//! keeps accepting a newer configuration.
//!
//! # Rules
//!
//! - `report_interval_s`: 10–3600 s ([`crate::domain`]).
//! - `k_factor_l_per_pulse`: finite, > 0, ≤ 4000 L/pulse.
//! - calibration points: finite, currents inside 3.6–21 mA, and distinct.

use core::fmt;

use apr_wire::Metric;
use serde::Deserialize;

use crate::analog::{Calibration, CalibrationError, LOOP_METRICS};
use crate::domain::{
    K_FACTOR_DEFAULT_L_PER_PULSE, REPORT_INTERVAL_DEFAULT_S, REPORT_INTERVAL_MAX_S,
    REPORT_INTERVAL_MIN_S,
};
use crate::flow::KFactor;

/// The settings the device runs with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Seconds between reports.
    pub report_interval_s: u32,
    /// The macro-meter's litres per pulse.
    pub k_factor: KFactor,
    /// Calibration of each 4–20 mA metric, in [`LOOP_METRICS`] order.
    calibrations: [Calibration; 4],
}

impl Default for Settings {
    /// The defaults of [`crate::domain`] and each metric's factory span.
    fn default() -> Self {
        let cal = |m| match Calibration::default_for(m) {
            Some(c) => c,
            None => unreachable!("every loop metric has a default span"),
        };
        Settings {
            report_interval_s: REPORT_INTERVAL_DEFAULT_S,
            k_factor: match KFactor::from_litres(K_FACTOR_DEFAULT_L_PER_PULSE) {
                Some(k) => k,
                None => unreachable!("the default K-factor is positive"),
            },
            calibrations: LOOP_METRICS.map(cal),
        }
    }
}

/// Why a configuration was refused (the running one is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not JSON of the expected shape (or a number of the wrong type).
    Malformed,
    /// `report_interval_s` outside 10–3600.
    IntervalOutOfRange(u32),
    /// `k_factor_l_per_pulse` not a positive number of litres (≤ 4000).
    KFactorNotPositive,
    /// A calibration's points do not define a usable line.
    Calibration {
        /// Which metric's calibration.
        metric: Metric,
        /// What is wrong with it.
        error: CalibrationError,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed => f.write_str("configuration is not JSON of the expected shape"),
            Refusal::IntervalOutOfRange(s) => write!(
                f,
                "report_interval_s {s} outside {REPORT_INTERVAL_MIN_S}-{REPORT_INTERVAL_MAX_S}"
            ),
            Refusal::KFactorNotPositive => {
                f.write_str("k_factor_l_per_pulse must be a positive number of litres")
            }
            Refusal::Calibration { metric, error } => {
                write!(f, "calibration of {metric}: {error}")
            }
        }
    }
}

type Points = [[f32; 2]; 2];

#[derive(Deserialize)]
struct WireCalibration {
    chlorine: Option<Points>,
    turbidity: Option<Points>,
    pressure: Option<Points>,
    tank_level: Option<Points>,
}

#[derive(Deserialize)]
struct WireConfig {
    report_interval_s: Option<u32>,
    k_factor_l_per_pulse: Option<f32>,
    calibration: Option<WireCalibration>,
}

impl Settings {
    /// The calibration of a 4–20 mA metric.
    pub fn calibration(&self, metric: Metric) -> Option<Calibration> {
        LOOP_METRICS
            .iter()
            .position(|&m| m == metric)
            .map(|i| self.calibrations[i])
    }

    /// The settings `json` asks for, on top of these; nothing is changed
    /// here. Use [`Settings::apply`] to adopt them.
    pub fn with_json(&self, json: &[u8]) -> Result<Settings, Refusal> {
        let (wire, _) =
            serde_json_core::from_slice::<WireConfig>(json).map_err(|_| Refusal::Malformed)?;
        let mut next = *self;
        if let Some(s) = wire.report_interval_s {
            if !(REPORT_INTERVAL_MIN_S..=REPORT_INTERVAL_MAX_S).contains(&s) {
                return Err(Refusal::IntervalOutOfRange(s));
            }
            next.report_interval_s = s;
        }
        if let Some(k) = wire.k_factor_l_per_pulse {
            next.k_factor = KFactor::from_litres(k).ok_or(Refusal::KFactorNotPositive)?;
        }
        if let Some(c) = wire.calibration {
            let asked = [c.chlorine, c.turbidity, c.pressure, c.tank_level];
            for (i, points) in asked.into_iter().enumerate() {
                let Some([[ma1, v1], [ma2, v2]]) = points else {
                    continue;
                };
                next.calibrations[i] = Calibration::new((ma1, v1), (ma2, v2)).map_err(|error| {
                    Refusal::Calibration {
                        metric: LOOP_METRICS[i],
                        error,
                    }
                })?;
            }
        }
        Ok(next)
    }

    /// Adopts the configuration in `json` if all of it is valid; otherwise
    /// keeps every current value and says why. Returns whether anything
    /// changed.
    pub fn apply(&mut self, json: &[u8]) -> Result<bool, Refusal> {
        let next = self.with_json(json)?;
        let changed = next != *self;
        *self = next;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_configuration_is_applied() {
        let mut s = Settings::default();
        let json = br#"{"report_interval_s":600,"k_factor_l_per_pulse":10.0,
            "calibration":{"chlorine":[[4.0,0.0],[20.0,2.0]],"tank_level":[[4,0],[20,100]]}}"#;
        assert_eq!(s.apply(json), Ok(true));
        assert_eq!(s.report_interval_s, 600);
        assert_eq!(s.k_factor, KFactor::from_litres(10.0).unwrap());
        let cl = s.calibration(Metric::Chlorine).unwrap();
        assert!((cl.apply(12.0) - 1.0).abs() < 1e-6);
        assert_eq!(s.calibration(Metric::Flow), None);
    }

    #[test]
    fn missing_fields_keep_their_values_and_unknown_ones_are_ignored() {
        let mut s = Settings::default();
        s.apply(br#"{"k_factor_l_per_pulse":2.5}"#).unwrap();
        let json =
            br#"{"report_interval_s":120,"thresholds":{"chlorine_low":0.2,"x":[1,2]},"v":"2"}"#;
        assert_eq!(s.apply(json), Ok(true));
        assert_eq!(s.report_interval_s, 120);
        assert_eq!(s.k_factor, KFactor::from_litres(2.5).unwrap());
        assert_eq!(s.apply(br#"{"report_interval_s":120}"#), Ok(false));
    }

    #[test]
    fn an_interval_outside_10_to_3600_seconds_is_refused_and_the_old_config_kept() {
        let mut s = Settings::default();
        let before = s;
        let json = br#"{"report_interval_s":5,"k_factor_l_per_pulse":3.0}"#;
        assert_eq!(s.apply(json), Err(Refusal::IntervalOutOfRange(5)));
        assert_eq!(
            s.apply(br#"{"report_interval_s":3601}"#),
            Err(Refusal::IntervalOutOfRange(3601))
        );
        assert_eq!(s, before);
        assert!(s.apply(br#"{"report_interval_s":10}"#).is_ok());
        assert!(s.apply(br#"{"report_interval_s":3600}"#).is_ok());
    }

    #[test]
    fn a_k_factor_that_is_not_positive_is_refused() {
        let mut s = Settings::default();
        let before = s;
        for json in [
            &br#"{"k_factor_l_per_pulse":0}"#[..],
            br#"{"k_factor_l_per_pulse":-1.5}"#,
            br#"{"report_interval_s":60,"k_factor_l_per_pulse":0.0}"#,
        ] {
            assert_eq!(s.apply(json), Err(Refusal::KFactorNotPositive));
        }
        assert_eq!(s, before);
    }

    #[test]
    fn calibration_points_with_the_same_current_are_refused_with_the_metric() {
        let mut s = Settings::default();
        let before = s;
        let json = br#"{"report_interval_s":60,"calibration":{"turbidity":[[12,0],[12,100]]}}"#;
        assert_eq!(
            s.apply(json),
            Err(Refusal::Calibration {
                metric: Metric::Turbidity,
                error: CalibrationError::PointsNotDistinct,
            })
        );
        assert_eq!(s, before);
        let reason = std::format!("{}", s.apply(json).unwrap_err());
        assert_eq!(
            reason,
            "calibration of turbidity: calibration points have the same current"
        );
    }

    #[test]
    fn malformed_json_is_refused() {
        let mut s = Settings::default();
        for json in [
            &b"not json"[..],
            br#"{"report_interval_s":"600"}"#,
            br#"{"report_interval_s":60.5}"#,
            br#"{"calibration":{"chlorine":[[4,0]]}}"#,
            br#"{"report_interval_s":600"#,
        ] {
            assert_eq!(s.apply(json), Err(Refusal::Malformed), "{json:?}");
        }
        assert_eq!(s, Settings::default());
    }
}
