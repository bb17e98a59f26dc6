//! The hydraulics of an APR: a well pump of fixed capacity filling an
//! elevated storage tank through the macro-meter, the tank feeding the
//! network, and the network pressure at the monitored point.
//!
//! - **Pump**: on below `pump_on_pct` of the tank, off above `pump_off_pct`
//!   (level switches), never during a power cut. Its flow is the site's
//!   capacity with a little wobble.
//! - **Tank mass balance**: `dV/dt = Q_pump − Q_served`. While the tank has
//!   water the network gets what it asks for; an empty tank serves only what
//!   the pump brings in, and the rest is supply cut (intermittent service).
//! - **Pressure** at the network point: the tank's head (its elevation above
//!   the point plus the water height in it) minus friction that grows with
//!   the square of the flow, `friction_m_at_peak` at the nominal peak-hour
//!   flow (`DOMAIN.md`, NCh 691: 15 m.c.a. minimum at peak hour). An empty
//!   tank leaves the network at a fraction of that head.

use serde::Deserialize;

/// Site parameters of a scenario (`[site]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteParams {
    /// Multiplies the registry's production capacity.
    pub capacity_factor: f64,
    /// When set, the capacity is this multiple of the mean demand (l/s over
    /// l/s) instead of the registry's: makes a scenario portable across sites.
    pub capacity_vs_mean_demand: Option<f64>,
    /// When set, the storage is this many hours of mean demand instead of
    /// the registry's volume.
    pub storage_hours_of_mean_demand: Option<f64>,
    /// Tank bottom above the monitored network point, m.
    pub tank_elevation_m: f64,
    /// Water height of a full tank, m.
    pub tank_height_m: f64,
    /// Friction loss to the network point at the nominal peak-hour flow, m.
    pub friction_m_at_peak: f64,
    /// Level that starts the pump, %.
    pub pump_on_pct: f64,
    /// Level that stops the pump, %.
    pub pump_off_pct: f64,
    /// The macro-meter's litres per pulse.
    pub k_factor_l_per_pulse: f64,
    /// Tank level at the start, %.
    pub initial_level_pct: f64,
}

impl Default for SiteParams {
    fn default() -> Self {
        SiteParams {
            capacity_factor: 1.0,
            capacity_vs_mean_demand: None,
            storage_hours_of_mean_demand: None,
            tank_elevation_m: 22.0,
            tank_height_m: 3.0,
            friction_m_at_peak: 5.0,
            pump_on_pct: 40.0,
            pump_off_pct: 95.0,
            k_factor_l_per_pulse: 1.0,
            initial_level_pct: 70.0,
        }
    }
}

/// The hydraulic state of a site.
#[derive(Debug, Clone)]
pub struct Hydraulics {
    params: SiteParams,
    capacity_l_s: f64,
    storage_m3: f64,
    peak_l_s: f64,
    tank_m3: f64,
    pump_on: bool,
    pump_l_s: f64,
    asked_l_s: f64,
    served_l_s: f64,
    produced_l: f64,
}

impl Hydraulics {
    /// A site of `capacity_l_s` and `storage_m3` (already scenario-adjusted),
    /// whose network's nominal peak-hour flow is `peak_l_s`.
    pub fn new(params: SiteParams, capacity_l_s: f64, storage_m3: f64, peak_l_s: f64) -> Self {
        let storage_m3 = storage_m3.max(0.5);
        Hydraulics {
            tank_m3: storage_m3 * (params.initial_level_pct / 100.0).clamp(0.0, 1.0),
            params,
            capacity_l_s,
            storage_m3,
            peak_l_s: peak_l_s.max(1e-6),
            pump_on: false,
            pump_l_s: 0.0,
            asked_l_s: 0.0,
            served_l_s: 0.0,
            produced_l: 0.0,
        }
    }

    /// Advances `dt` seconds: the network asks `asked_l_s`; the pump may run
    /// when `powered`; `wobble` in −1..1 varies the pump's flow a little.
    pub fn step(&mut self, dt: f64, asked_l_s: f64, powered: bool, wobble: f64) {
        let level = self.level_pct();
        if level < self.params.pump_on_pct {
            self.pump_on = true;
        } else if level > self.params.pump_off_pct {
            self.pump_on = false;
        }
        let running = self.pump_on && powered;
        self.pump_l_s = if running {
            self.capacity_l_s * (0.975 + 0.02 * wobble)
        } else {
            0.0
        };
        self.asked_l_s = asked_l_s;
        let available_m3 = self.tank_m3 + self.pump_l_s * dt / 1000.0;
        let asked_m3 = asked_l_s * dt / 1000.0;
        let served_m3 = asked_m3.min(available_m3);
        self.served_l_s = served_m3 * 1000.0 / dt;
        self.tank_m3 = (available_m3 - served_m3).min(self.storage_m3);
        self.produced_l += self.pump_l_s * dt;
    }

    /// Tank level, %.
    pub fn level_pct(&self) -> f64 {
        100.0 * self.tank_m3 / self.storage_m3
    }

    /// Water in the tank, m³.
    pub fn tank_m3(&self) -> f64 {
        self.tank_m3
    }

    /// Storage volume, m³.
    pub fn storage_m3(&self) -> f64 {
        self.storage_m3
    }

    /// Production capacity, l/s.
    pub fn capacity_l_s(&self) -> f64 {
        self.capacity_l_s
    }

    /// Whether the pump is running.
    pub fn pump_running(&self) -> bool {
        self.pump_l_s > 0.0
    }

    /// Pump flow through the macro-meter, l/s.
    pub fn pump_l_s(&self) -> f64 {
        self.pump_l_s
    }

    /// What the network asked for in the last step, l/s.
    pub fn asked_l_s(&self) -> f64 {
        self.asked_l_s
    }

    /// What the network got, l/s.
    pub fn served_l_s(&self) -> f64 {
        self.served_l_s
    }

    /// Litres through the macro-meter since the start.
    pub fn produced_l(&self) -> f64 {
        self.produced_l
    }

    /// Pressure at the network point, m.c.a.
    pub fn pressure_mca(&self) -> f64 {
        let p = &self.params;
        let head = p.tank_elevation_m + p.tank_height_m * self.tank_m3 / self.storage_m3;
        let q = self.served_l_s / self.peak_l_s;
        let flowing = head - p.friction_m_at_peak * q * q;
        if self.asked_l_s > 1e-9 && self.served_l_s < 0.999 * self.asked_l_s {
            // Supply cut: the network drains, pressure falls with what is served.
            (flowing * self.served_l_s / self.asked_l_s).max(0.0)
        } else {
            flowing.max(0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tank_balance_is_inflow_minus_outflow_and_an_empty_tank_serves_only_inflow() {
        let mut h = Hydraulics::new(SiteParams::default(), 1.0, 10.0, 2.0);
        let before = h.tank_m3();
        // Pump off at 70 %; 0.5 l/s for 1000 s is 0.5 m³.
        h.step(1000.0, 0.5, true, 0.0);
        assert!((before - h.tank_m3() - 0.5).abs() < 1e-9);
        for _ in 0..100 {
            h.step(60.0, 5.0, false, 0.0);
        }
        assert_eq!(h.tank_m3(), 0.0);
        assert_eq!(h.served_l_s(), 0.0);
        assert_eq!(h.pressure_mca(), 0.0);
    }

    #[test]
    fn pressure_falls_with_the_square_of_the_flow() {
        let mut h = Hydraulics::new(SiteParams::default(), 0.0, 10.0, 2.0);
        h.step(1.0, 0.0, true, 0.0);
        let still = h.pressure_mca();
        h.step(1.0, 2.0, true, 0.0);
        let peak = h.pressure_mca();
        assert!((still - peak - 5.0).abs() < 0.01, "{still} {peak}");
    }
}
