//! The instruments between the water and the device: each reads the true
//! value with noise, an offset and a drift that grows with time (a fouling
//! chlorine membrane reads lower and lower), and can fail.
//!
//! A 4–20 mA instrument turns its reading into a loop current over its span
//! (saturating at 3.8 and 20.5 mA, the NAMUR NE 43 measuring band) and
//! signals a failure out of the band: 2.0 mA for a low fault (open loop,
//! dead transmitter), 22.0 mA for a high one. The Modbus probe's quantities
//! fail by the probe not answering.

use serde::Deserialize;

/// An instrument of the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstrumentName {
    /// Amperometric free-chlorine analyser, 4–20 mA.
    Chlorine,
    /// Turbidimeter, 4–20 mA.
    Turbidity,
    /// Network pressure transmitter, 4–20 mA.
    Pressure,
    /// Tank level transmitter, 4–20 mA.
    TankLevel,
    /// The Modbus probe's pH.
    Ph,
    /// The Modbus probe's conductivity.
    Conductivity,
}

/// How an instrument fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Below the NAMUR band (2.0 mA) or, for the probe, no answer.
    Low,
    /// Above the NAMUR band (22.0 mA) or, for the probe, no answer.
    High,
}

/// Loop current of a low fault, mA.
pub const FAULT_LOW_MA: f32 = 2.0;
/// Loop current of a high fault, mA.
pub const FAULT_HIGH_MA: f32 = 22.0;

/// One instrument's errors (`[instruments.<name>]`); absent fields keep the
/// instrument's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstrumentParams {
    /// Standard deviation of the reading's noise, in the metric's unit.
    pub noise: Option<f64>,
    /// Constant offset, in the metric's unit.
    pub offset: Option<f64>,
    /// Gain change per day (−0.08: reads 8 % lower each day).
    pub gain_drift_per_day: Option<f64>,
    /// Offset change per day, in the metric's unit.
    pub offset_drift_per_day: Option<f64>,
}

/// The instruments of a scenario (`[instruments]`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstrumentsParams {
    /// Chlorine analyser.
    pub chlorine: InstrumentParams,
    /// Turbidimeter.
    pub turbidity: InstrumentParams,
    /// Pressure transmitter.
    pub pressure: InstrumentParams,
    /// Tank level transmitter.
    pub tank_level: InstrumentParams,
    /// Probe pH.
    pub ph: InstrumentParams,
    /// Probe conductivity.
    pub conductivity: InstrumentParams,
}

/// An instrument's error model, resolved against its defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Instrument {
    noise: f64,
    offset: f64,
    gain_drift_per_day: f64,
    offset_drift_per_day: f64,
    span: (f64, f64),
}

impl Instrument {
    /// `name`'s model with `params` over its defaults.
    pub fn new(name: InstrumentName, params: &InstrumentParams) -> Self {
        let (noise, span) = match name {
            InstrumentName::Chlorine => (0.01, (0.0, 5.0)),
            InstrumentName::Turbidity => (0.02, (0.0, 100.0)),
            InstrumentName::Pressure => (0.1, (0.0, 100.0)),
            InstrumentName::TankLevel => (0.3, (0.0, 100.0)),
            InstrumentName::Ph => (0.02, (0.0, 14.0)),
            InstrumentName::Conductivity => (2.0, (0.0, 100_000.0)),
        };
        Instrument {
            noise: params.noise.unwrap_or(noise),
            offset: params.offset.unwrap_or(0.0),
            gain_drift_per_day: params.gain_drift_per_day.unwrap_or(0.0),
            offset_drift_per_day: params.offset_drift_per_day.unwrap_or(0.0),
            span,
        }
    }

    /// What the instrument reads for `truth`, `days` after the start, with
    /// `draw` a standard-normal-ish draw. Never below the span's low end.
    pub fn read(&self, truth: f64, days: f64, draw: f64) -> f64 {
        let gain = (1.0 + self.gain_drift_per_day * days).max(0.0);
        let v = truth * gain + self.offset + self.offset_drift_per_day * days + self.noise * draw;
        v.max(self.span.0)
    }

    /// The loop current for a reading, mA, saturating in the NAMUR
    /// measuring band (3.8–20.5 mA).
    pub fn loop_ma(&self, reading: f64) -> f32 {
        let (lo, hi) = self.span;
        let ma = 4.0 + 16.0 * (reading - lo) / (hi - lo);
        ma.clamp(3.8, 20.5) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drifting_gain_reads_lower_each_day() {
        let p = InstrumentParams {
            gain_drift_per_day: Some(-0.1),
            noise: Some(0.0),
            ..InstrumentParams::default()
        };
        let i = Instrument::new(InstrumentName::Chlorine, &p);
        assert!((i.read(1.0, 0.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((i.read(1.0, 5.0, 0.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn loop_currents_span_4_to_20_ma_and_saturate_inside_the_namur_band() {
        let i = Instrument::new(InstrumentName::Chlorine, &InstrumentParams::default());
        assert!((i.loop_ma(2.5) - 12.0).abs() < 1e-6);
        assert_eq!(i.loop_ma(-1.0), 3.8);
        assert_eq!(i.loop_ma(50.0), 20.5);
    }
}
