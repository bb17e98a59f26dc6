//! A simple APR site model, stepped minute by minute.
//!
//! Demand follows a diurnal curve (low at 03:00 local, peaks in the morning and
//! evening) scaled by beneficiaries at 150 L/person/day; a pump at the site's
//! production capacity fills a tank with hysteresis (on below 40 %, off above
//! 95 %); pressure follows the tank head minus friction that grows with demand;
//! water quality is steady with measurement noise. Deterministic per seed.

use apr_firmware::{Sample, SampleValue};
use apr_wire::Metric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a site is, as the registry knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteProfile {
    /// APR id.
    pub apr: String,
    /// People served.
    pub beneficiaries: u32,
    /// Production capacity, l/s.
    pub capacity_l_s: f64,
    /// Storage volume, m³.
    pub storage_m3: f64,
}

/// Which instruments a device carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRole {
    /// The pump house: macro-meter, pump, water quality, supply, radio.
    PumpHouse,
    /// The tank and network point: level and pressure, supply, radio.
    Network,
}

impl DeviceRole {
    /// The device id used for this role in the demo fleet.
    pub const fn device_id(self) -> &'static str {
        match self {
            DeviceRole::PumpHouse => "caseta",
            DeviceRole::Network => "red",
        }
    }

    /// Both roles.
    pub const ALL: [DeviceRole; 2] = [DeviceRole::PumpHouse, DeviceRole::Network];

    /// The metrics this role reports.
    pub const fn metrics(self) -> &'static [Metric] {
        match self {
            DeviceRole::PumpHouse => &[
                Metric::Flow,
                Metric::Volume,
                Metric::Pump,
                Metric::Chlorine,
                Metric::Turbidity,
                Metric::Ph,
                Metric::Conductivity,
                Metric::Battery,
                Metric::Rssi,
            ],
            DeviceRole::Network => &[
                Metric::Pressure,
                Metric::TankLevel,
                Metric::Battery,
                Metric::Rssi,
            ],
        }
    }
}

/// Per-capita allowance used for demand, L/person/day (a demo assumption; the
/// DOH design coefficients are per-APR configuration elsewhere).
const LITRES_PER_PERSON_DAY: f64 = 150.0;
/// Chile mainland standard offset used for the diurnal curve (UTC−4; the model
/// ignores daylight saving, which shifts the curve by an hour in summer).
const LOCAL_OFFSET_S: f64 = -4.0 * 3600.0;

/// The state of one simulated site.
#[derive(Debug)]
pub struct SiteModel {
    profile: SiteProfile,
    rng: StdRng,
    time: f64,
    tank_m3: f64,
    volume_m3: f64,
    pump_on: bool,
    flow_l_s: f64,
    demand_l_s: f64,
}

impl SiteModel {
    /// A site at `start` (seconds since the epoch), tank at 70 %.
    pub fn new(profile: SiteProfile, seed: u64, start: f64) -> Self {
        let storage = profile.storage_m3.max(1.0);
        SiteModel {
            rng: StdRng::seed_from_u64(seed),
            time: start,
            tank_m3: storage * 0.7,
            volume_m3: 1000.0 + (seed % 5000) as f64,
            pump_on: false,
            flow_l_s: 0.0,
            demand_l_s: 0.0,
            profile,
        }
    }

    /// Current simulated time.
    pub fn time(&self) -> f64 {
        self.time
    }

    /// Relative demand at a local hour, mean ≈ 1 over the day.
    pub fn diurnal_factor(local_hour: f64) -> f64 {
        let morning = (-((local_hour - 8.0) / 2.0).powi(2)).exp();
        let evening = (-((local_hour - 20.0) / 2.5).powi(2)).exp();
        0.35 + 1.1 * morning + 0.9 * evening
    }

    /// Advances the model to `until` in steps of at most 60 s.
    pub fn advance_to(&mut self, until: f64) {
        while self.time < until {
            let dt = (until - self.time).min(60.0);
            self.step(dt);
        }
    }

    fn step(&mut self, dt: f64) {
        let local_hour = ((self.time + LOCAL_OFFSET_S).rem_euclid(86_400.0)) / 3600.0;
        let mean_demand = f64::from(self.profile.beneficiaries) * LITRES_PER_PERSON_DAY / 86_400.0;
        self.demand_l_s =
            mean_demand * Self::diurnal_factor(local_hour) * self.rng.gen_range(0.9..1.1);
        let storage = self.profile.storage_m3.max(1.0);
        let level = self.tank_m3 / storage;
        if level < 0.4 {
            self.pump_on = true;
        } else if level > 0.95 {
            self.pump_on = false;
        }
        self.flow_l_s = if self.pump_on {
            self.profile.capacity_l_s * self.rng.gen_range(0.95..1.0)
        } else {
            0.0
        };
        self.tank_m3 =
            (self.tank_m3 + (self.flow_l_s - self.demand_l_s) * dt / 1000.0).clamp(0.0, storage);
        self.volume_m3 += self.flow_l_s * dt / 1000.0;
        self.time += dt;
    }

    /// The samples a device of `role` takes now.
    pub fn samples(&mut self, role: DeviceRole, out: &mut Vec<Sample>) {
        let t = self.time;
        let storage = self.profile.storage_m3.max(1.0);
        let level_pct = 100.0 * self.tank_m3 / storage;
        for &metric in role.metrics() {
            let value = match metric {
                Metric::Flow => SampleValue::Number(round(self.flow_l_s, 3)),
                Metric::Volume => SampleValue::Number(round(self.volume_m3, 3)),
                Metric::Pump => SampleValue::Boolean(self.pump_on),
                Metric::Chlorine => SampleValue::Number(round(self.noise(0.55, 0.05), 3)),
                Metric::Turbidity => SampleValue::Number(round(self.noise(0.35, 0.05), 3)),
                Metric::Ph => SampleValue::Number(round(self.noise(7.3, 0.05), 2)),
                Metric::Conductivity => SampleValue::Number(round(self.noise(420.0, 8.0), 1)),
                Metric::Pressure => {
                    let mean_demand =
                        f64::from(self.profile.beneficiaries) * LITRES_PER_PERSON_DAY / 86_400.0;
                    let load = self.demand_l_s / mean_demand.max(1e-6);
                    let p = 18.0 + 0.12 * level_pct - 2.5 * load * load;
                    SampleValue::Number(round(p + self.noise(0.0, 0.2), 2))
                }
                Metric::TankLevel => SampleValue::Number(round(level_pct, 2)),
                Metric::Battery => SampleValue::Number(round(self.noise(12.7, 0.05), 2)),
                Metric::Rssi => SampleValue::Number(self.noise(-78.0, 3.0).round()),
            };
            out.push(Sample {
                metric,
                time: t,
                value,
            });
        }
    }

    fn noise(&mut self, mean: f64, spread: f64) -> f64 {
        mean + self.rng.gen_range(-spread..=spread)
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> SiteProfile {
        SiteProfile {
            apr: "a".into(),
            beneficiaries: 400,
            capacity_l_s: 1.6,
            storage_m3: 25.0,
        }
    }

    #[test]
    fn every_sample_is_inside_its_metric_range() {
        let mut m = SiteModel::new(profile(), 7, 1_764_000_000.0);
        let mut out = Vec::new();
        for i in 0..(7 * 24 * 4) {
            m.advance_to(1_764_000_000.0 + f64::from(i) * 900.0);
            for role in DeviceRole::ALL {
                m.samples(role, &mut out);
            }
        }
        for s in &out {
            if let SampleValue::Number(v) = s.value {
                assert!(s.metric.in_range(v), "{:?} {v}", s.metric);
            }
        }
    }

    #[test]
    fn night_demand_is_below_the_daily_mean_and_the_tank_refills() {
        assert!(SiteModel::diurnal_factor(3.0) < 0.5);
        assert!(SiteModel::diurnal_factor(8.0) > 1.3);
        let mut m = SiteModel::new(profile(), 1, 1_764_000_000.0);
        let mut pump_runs = 0;
        for i in 0..(24 * 60) {
            m.advance_to(1_764_000_000.0 + f64::from(i) * 60.0);
            pump_runs += usize::from(m.pump_on);
        }
        assert!(pump_runs > 0 && pump_runs < 24 * 60, "{pump_runs}");
        let level = m.tank_m3 / 25.0;
        assert!((0.2..=1.0).contains(&level), "{level}");
    }

    #[test]
    fn the_totaliser_only_grows() {
        let mut m = SiteModel::new(profile(), 3, 1_764_000_000.0);
        let mut last = 0.0;
        for i in 0..500 {
            m.advance_to(1_764_000_000.0 + f64::from(i) * 300.0);
            assert!(m.volume_m3 >= last);
            last = m.volume_m3;
        }
    }
}
