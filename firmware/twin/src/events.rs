//! What happens to a site from outside: rain, power cuts, link outages, a
//! device that goes silent, an instrument that fails. Each is a window of
//! simulated time given in days (fractional) after the run's start.

use serde::Deserialize;

use crate::instruments::{FaultKind, InstrumentName};
use crate::model::DeviceRole;

/// A window of time: from `day` days after the start, for `hours`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start, days after the run's start.
    pub day: f64,
    /// Length, hours.
    pub hours: f64,
}

impl Window {
    fn start_s(&self) -> f64 {
        self.day * 86_400.0
    }

    fn end_s(&self) -> f64 {
        self.start_s() + self.hours * 3600.0
    }

    /// Whether `elapsed_s` after the start is inside the window.
    pub fn contains(&self, elapsed_s: f64) -> bool {
        elapsed_s >= self.start_s() && elapsed_s < self.end_s()
    }
}

/// A device that takes no reading and sends nothing (hung, brown-out,
/// unplugged), then restarts.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceWindow {
    /// Which device (`caseta` or `red`); every device when absent.
    pub device: Option<DeviceRole>,
    /// Start, days after the run's start.
    pub day: f64,
    /// Length, hours.
    pub hours: f64,
}

/// Rain over the catchment: the raw water's turbidity climbs during the
/// rain and recovers exponentially after it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rain {
    /// Start, days after the run's start.
    pub day: f64,
    /// How long it rains, hours.
    pub hours: f64,
    /// Turbidity the rain adds to the raw water at its height, NTU.
    pub turbidity_peak_ntu: f64,
    /// Time constant of the recovery after the rain, hours.
    #[serde(default = "default_recovery_h")]
    pub recovery_h: f64,
}

fn default_recovery_h() -> f64 {
    8.0
}

impl Rain {
    /// Share (0–1) of the peak at `elapsed_s` after the start: a one-hour
    /// ramp when the rain starts, then the recovery once it stops.
    pub fn share(&self, elapsed_s: f64) -> f64 {
        let start = self.day * 86_400.0;
        let end = start + self.hours * 3600.0;
        if elapsed_s < start {
            0.0
        } else if elapsed_s < end {
            ((elapsed_s - start) / 3600.0).min(1.0)
        } else {
            let ramp = ((end - start) / 3600.0).min(1.0);
            ramp * (-(elapsed_s - end) / (self.recovery_h.max(0.1) * 3600.0)).exp()
        }
    }
}

/// An instrument fault: a 4–20 mA loop driven out of the NAMUR band, or
/// (for the Modbus probe's quantities) a probe that stops answering.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentFault {
    /// Which instrument.
    pub instrument: InstrumentName,
    /// Start, days after the run's start.
    pub day: f64,
    /// Length, hours.
    pub hours: f64,
    /// How it fails.
    pub kind: FaultKind,
}

/// Every event of a scenario, asked by elapsed time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Events {
    /// Rain events.
    pub rain: Vec<Rain>,
    /// Mains power cuts: the pump stops, devices run on battery.
    pub power_cut: Vec<Window>,
    /// Link outages: devices keep measuring, packs wait in their outbox.
    pub link_outage: Vec<Window>,
    /// Silent devices.
    pub device_silent: Vec<DeviceWindow>,
    /// Instrument faults.
    pub instrument_fault: Vec<InstrumentFault>,
}

impl Events {
    /// Whether mains power is on.
    pub fn powered(&self, elapsed_s: f64) -> bool {
        !self.power_cut.iter().any(|w| w.contains(elapsed_s))
    }

    /// Hours into the current power cut (0 with mains on).
    pub fn hours_on_battery(&self, elapsed_s: f64) -> f64 {
        self.power_cut
            .iter()
            .filter(|w| w.contains(elapsed_s))
            .map(|w| (elapsed_s - w.start_s()) / 3600.0)
            .fold(0.0, f64::max)
    }

    /// Whether the link to the gateway is up.
    pub fn link_up(&self, elapsed_s: f64) -> bool {
        !self.link_outage.iter().any(|w| w.contains(elapsed_s))
    }

    /// Whether a device of `role` is running.
    pub fn device_running(&self, role: DeviceRole, elapsed_s: f64) -> bool {
        !self.device_silent.iter().any(|w| {
            w.device.is_none_or(|d| d == role)
                && Window {
                    day: w.day,
                    hours: w.hours,
                }
                .contains(elapsed_s)
        })
    }

    /// Turbidity rain adds to the raw water, NTU, and the rain's share of
    /// the water (0–1, for dilution).
    pub fn rain(&self, elapsed_s: f64) -> (f64, f64) {
        let mut ntu = 0.0;
        let mut share: f64 = 0.0;
        for r in &self.rain {
            let s = r.share(elapsed_s);
            ntu += s * r.turbidity_peak_ntu;
            share = share.max(s);
        }
        (ntu, share)
    }

    /// The fault of an instrument now, if any.
    pub fn fault(&self, instrument: InstrumentName, elapsed_s: f64) -> Option<FaultKind> {
        self.instrument_fault
            .iter()
            .find(|f| {
                f.instrument == instrument
                    && Window {
                        day: f.day,
                        hours: f.hours,
                    }
                    .contains(elapsed_s)
            })
            .map(|f| f.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rain_turbidity_ramps_up_then_recovers_exponentially() {
        let r = Rain {
            day: 1.0,
            hours: 3.0,
            turbidity_peak_ntu: 20.0,
            recovery_h: 5.0,
        };
        assert_eq!(r.share(86_400.0 - 1.0), 0.0);
        assert!((r.share(86_400.0 + 1800.0) - 0.5).abs() < 1e-9);
        assert_eq!(r.share(86_400.0 + 2.0 * 3600.0), 1.0);
        let after = r.share(86_400.0 + 8.0 * 3600.0);
        assert!((after - (-1.0f64).exp()).abs() < 1e-9);
    }
}
