//! A site's physical model, stepped through simulated time: [`crate::demand`]
//! asks for water, [`crate::site`] pumps, stores and pressurises it,
//! [`crate::quality`] chlorinates it and tracks turbidity, pH and
//! conductivity, [`crate::events`] brings rain, power cuts and outages, and
//! [`crate::instruments`] turn the truth into what the wires carry
//! ([`Signals`]) for the simulated hardware of [`crate::hardware`].
//!
//! The model steps at most 60 s at a time and never sleeps; it is
//! deterministic per seed. [`SiteModel::samples`] is the old shortcut that
//! skips the drivers (instrument readings straight to samples); the twin's
//! devices read through [`crate::board`] instead.

use apr_firmware::{Sample, SampleValue};
use apr_wire::Metric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::clock::{local_time, LocalTime};
use crate::demand::{peak_hour_factor, Demand};
use crate::events::Events;
use crate::instruments::{FaultKind, Instrument, InstrumentName, FAULT_HIGH_MA, FAULT_LOW_MA};
use crate::quality::Quality;
use crate::scenario::Scenario;
use crate::site::Hydraulics;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum DeviceRole {
    /// The pump house: macro-meter, pump, water quality, supply, radio.
    #[serde(rename = "caseta")]
    PumpHouse,
    /// The tank and network point: level and pressure, supply, radio.
    #[serde(rename = "red")]
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

    /// The role that reports `metric` (battery and radio: the pump house).
    pub fn of_metric(metric: Metric) -> DeviceRole {
        match metric {
            Metric::Pressure | Metric::TankLevel => DeviceRole::Network,
            _ => DeviceRole::PumpHouse,
        }
    }
}

/// What the wires carry now: the input of the simulated hardware.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    /// The macro-meter's register, litres (pulses are its K-factor steps).
    pub meter_l: f64,
    /// The pump contactor's auxiliary contact.
    pub pump_running: bool,
    /// Loop currents, mA: chlorine, turbidity, pressure, tank level.
    pub loops_ma: [f32; 4],
    /// The Modbus probe's pH, conductivity and chlorine registers.
    pub probe: [f32; 3],
    /// Whether the Modbus probe answers.
    pub probe_answers: bool,
    /// Supply voltage, V.
    pub battery_v: f64,
    /// Radio signal, dBm.
    pub rssi_dbm: f64,
}

/// The true state of the site (what instruments try to measure).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truth {
    /// Simulated time, s since the epoch.
    pub time: f64,
    /// Free chlorine in the tank, mg/l.
    pub chlorine_mg_l: f64,
    /// Turbidity in the tank, NTU.
    pub turbidity_ntu: f64,
    /// pH.
    pub ph: f64,
    /// Conductivity, µS/cm.
    pub conductivity_us_cm: f64,
    /// Tank level, %.
    pub tank_level_pct: f64,
    /// Network pressure, m.c.a.
    pub pressure_mca: f64,
    /// Pump running.
    pub pump_running: bool,
    /// Pump flow, l/s.
    pub pump_l_s: f64,
    /// Network demand including the leak, l/s.
    pub asked_l_s: f64,
    /// What the network got, l/s.
    pub served_l_s: f64,
    /// Litres pumped since the start.
    pub produced_l: f64,
    /// Mains power on.
    pub powered: bool,
    /// Link to the gateway up.
    pub link_up: bool,
}

/// The state of one simulated site.
#[derive(Debug)]
pub struct SiteModel {
    profile: SiteProfile,
    scenario: String,
    rng: StdRng,
    start: f64,
    time: f64,
    demand: Demand,
    hydraulics: Hydraulics,
    quality: Quality,
    events: Events,
    /// In [`InstrumentName`] order.
    instruments: [Instrument; 6],
    meter_offset_l: f64,
}

const INSTRUMENTS: [InstrumentName; 6] = [
    InstrumentName::Chlorine,
    InstrumentName::Turbidity,
    InstrumentName::Pressure,
    InstrumentName::TankLevel,
    InstrumentName::Ph,
    InstrumentName::Conductivity,
];

impl SiteModel {
    /// A healthy site at `start` (seconds since the epoch).
    pub fn new(profile: SiteProfile, seed: u64, start: f64) -> Self {
        Self::with_scenario(profile, &Scenario::default(), seed, start)
    }

    /// A site in `scenario` at `start`; the scenario's event days count
    /// from `start`.
    pub fn with_scenario(profile: SiteProfile, scenario: &Scenario, seed: u64, start: f64) -> Self {
        let demand = Demand::new(scenario.demand.clone(), profile.beneficiaries);
        let mean = demand.mean_l_s();
        let site = &scenario.site;
        let capacity = match site.capacity_vs_mean_demand {
            Some(r) => r * mean,
            None => profile.capacity_l_s,
        } * site.capacity_factor;
        let storage = match site.storage_hours_of_mean_demand {
            Some(h) => h * mean * 3.6,
            None => profile.storage_m3,
        };
        let hydraulics =
            Hydraulics::new(site.clone(), capacity, storage, mean * peak_hour_factor());
        let i = &scenario.instruments;
        let params = [
            i.chlorine,
            i.turbidity,
            i.pressure,
            i.tank_level,
            i.ph,
            i.conductivity,
        ];
        SiteModel {
            rng: StdRng::seed_from_u64(seed),
            start,
            time: start,
            demand,
            hydraulics,
            quality: Quality::new(scenario.chlorination.clone(), scenario.water.clone()),
            events: scenario.events(),
            instruments: std::array::from_fn(|k| Instrument::new(INSTRUMENTS[k], &params[k])),
            meter_offset_l: (1000.0 + (seed % 5000) as f64) * 1000.0,
            scenario: scenario.name.clone(),
            profile,
        }
    }

    /// Current simulated time.
    pub fn time(&self) -> f64 {
        self.time
    }

    /// When the model started (event days count from here).
    pub fn start(&self) -> f64 {
        self.start
    }

    /// The scenario's name.
    pub fn scenario(&self) -> &str {
        &self.scenario
    }

    /// The site's registry data.
    pub fn profile(&self) -> &SiteProfile {
        &self.profile
    }

    /// The scenario's events.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The hydraulics (capacity and storage as the scenario set them).
    pub fn hydraulics(&self) -> &Hydraulics {
        &self.hydraulics
    }

    /// Relative demand at a local hour, mean 1 over the day.
    pub fn diurnal_factor(local_hour: f64) -> f64 {
        crate::demand::diurnal_factor(local_hour)
    }

    /// Advances the model to `until` in steps of at most 60 s.
    pub fn advance_to(&mut self, until: f64) {
        while self.time < until {
            let dt = (until - self.time).min(60.0);
            self.step(dt);
        }
    }

    fn elapsed(&self) -> f64 {
        self.time - self.start
    }

    fn step(&mut self, dt: f64) {
        let elapsed = self.elapsed();
        let local: LocalTime = local_time(self.time);
        let asked = self
            .demand
            .consumption_l_s(local, self.rng.gen_range(-1.0..1.0))
            + self.demand.leak_l_s();
        let powered = self.events.powered(elapsed);
        self.hydraulics
            .step(dt, asked, powered, self.rng.gen_range(-1.0..1.0));
        let (rain_ntu, rain_share) = self.events.rain(elapsed);
        let draws = (self.rng.gen::<f64>(), self.rng.gen::<f64>());
        self.quality.step(
            dt,
            elapsed,
            self.hydraulics.pump_l_s(),
            self.hydraulics.tank_m3(),
            self.hydraulics.storage_m3(),
            rain_ntu,
            rain_share,
            local.hour,
            draws,
        );
        self.time += dt;
    }

    /// The true state now.
    pub fn truth(&self) -> Truth {
        let h = &self.hydraulics;
        let q = &self.quality;
        let elapsed = self.elapsed();
        Truth {
            time: self.time,
            chlorine_mg_l: q.chlorine_mg_l(),
            turbidity_ntu: q.turbidity_ntu(),
            ph: q.ph(),
            conductivity_us_cm: q.conductivity_us_cm(),
            tank_level_pct: h.level_pct(),
            pressure_mca: h.pressure_mca(),
            pump_running: h.pump_running(),
            pump_l_s: h.pump_l_s(),
            asked_l_s: h.asked_l_s(),
            served_l_s: h.served_l_s(),
            produced_l: h.produced_l(),
            powered: self.events.powered(elapsed),
            link_up: self.events.link_up(elapsed),
        }
    }

    /// Whether a device of `role` is running now.
    pub fn device_running(&self, role: DeviceRole) -> bool {
        self.events.device_running(role, self.elapsed())
    }

    /// Whether the link to the gateway is up now.
    pub fn link_up(&self) -> bool {
        self.events.link_up(self.elapsed())
    }

    /// A standard-normal-ish draw (Irwin–Hall of three uniforms).
    fn gauss(&mut self) -> f64 {
        let s: f64 = self.rng.gen::<f64>() + self.rng.gen::<f64>() + self.rng.gen::<f64>();
        (s - 1.5) * 2.0
    }

    fn reading(&mut self, k: usize, truth: f64) -> f64 {
        let days = self.elapsed() / 86_400.0;
        let draw = self.gauss();
        self.instruments[k].read(truth, days, draw)
    }

    /// What the wires carry now (draws the instruments' noise).
    pub fn signals(&mut self) -> Signals {
        let t = self.truth();
        let elapsed = self.elapsed();
        let truths = [
            t.chlorine_mg_l,
            t.turbidity_ntu,
            t.pressure_mca,
            t.tank_level_pct,
        ];
        let mut loops_ma = [0f32; 4];
        for (k, truth) in truths.into_iter().enumerate() {
            let reading = self.reading(k, truth);
            loops_ma[k] = match self.events.fault(INSTRUMENTS[k], elapsed) {
                Some(FaultKind::Low) => FAULT_LOW_MA,
                Some(FaultKind::High) => FAULT_HIGH_MA,
                None => self.instruments[k].loop_ma(reading),
            };
        }
        let ph = self.reading(4, t.ph).min(14.0);
        let conductivity = self.reading(5, t.conductivity_us_cm);
        let probe_chlorine = self.reading(0, t.chlorine_mg_l);
        let probe_answers = self.events.fault(InstrumentName::Ph, elapsed).is_none()
            && self
                .events
                .fault(InstrumentName::Conductivity, elapsed)
                .is_none();
        let hours_on_battery = self.events.hours_on_battery(elapsed);
        let battery_v = if t.powered {
            13.5 + 0.03 * self.gauss()
        } else {
            (12.8 - 0.03 * hours_on_battery).max(10.5) + 0.02 * self.gauss()
        };
        let rssi_dbm = if t.link_up {
            -78.0 + 3.0 * self.gauss()
        } else {
            -113.0 + 2.0 * self.gauss()
        };
        Signals {
            meter_l: self.meter_offset_l + t.produced_l,
            pump_running: t.pump_running,
            loops_ma,
            probe: [ph as f32, conductivity as f32, probe_chlorine as f32],
            probe_answers,
            battery_v: battery_v.clamp(0.0, 60.0),
            rssi_dbm: rssi_dbm.clamp(-150.0, 0.0),
        }
    }

    /// The shortcut that skips the drivers: the samples a device of `role`
    /// would report now, straight from the instruments' readings (faulted
    /// loops left out). The twin's devices use [`crate::board::Board`].
    pub fn samples(&mut self, role: DeviceRole, out: &mut Vec<Sample>) {
        let t = self.time;
        let s = self.signals();
        let truth = self.truth();
        let span = |ma: f32, hi: f64| -> Option<f64> {
            apr_firmware::analog::check_loop(ma)
                .ok()
                .map(|ma| (f64::from(ma) - 4.0) / 16.0 * hi)
        };
        for &metric in role.metrics() {
            let value = match metric {
                Metric::Flow => Some(SampleValue::Number(round(truth.pump_l_s, 3))),
                Metric::Volume => Some(SampleValue::Number(round(s.meter_l / 1000.0, 3))),
                Metric::Pump => Some(SampleValue::Boolean(s.pump_running)),
                Metric::Chlorine => {
                    span(s.loops_ma[0], 5.0).map(|v| SampleValue::Number(round(v, 3)))
                }
                Metric::Turbidity => {
                    span(s.loops_ma[1], 100.0).map(|v| SampleValue::Number(round(v, 2)))
                }
                Metric::Pressure => {
                    span(s.loops_ma[2], 100.0).map(|v| SampleValue::Number(round(v, 2)))
                }
                Metric::TankLevel => span(s.loops_ma[3], 100.0)
                    .map(|v| SampleValue::Number(round(v.clamp(0.0, 100.0), 1))),
                Metric::Ph => s
                    .probe_answers
                    .then(|| SampleValue::Number(round(f64::from(s.probe[0]), 2))),
                Metric::Conductivity => s
                    .probe_answers
                    .then(|| SampleValue::Number(round(f64::from(s.probe[1]), 1))),
                Metric::Battery => Some(SampleValue::Number(round(s.battery_v, 2))),
                Metric::Rssi => Some(SampleValue::Number(s.rssi_dbm.round())),
            };
            if let Some(value) = value {
                out.push(Sample {
                    metric,
                    time: t,
                    value,
                });
            }
        }
    }
}

/// `v` rounded to `digits` decimals (what a device formats).
pub fn round(v: f64, digits: i32) -> f64 {
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
            pump_runs += usize::from(m.truth().pump_running);
        }
        assert!(pump_runs > 0 && pump_runs < 24 * 60, "{pump_runs}");
        let level = m.truth().tank_level_pct;
        assert!((20.0..=100.0).contains(&level), "{level}");
    }

    #[test]
    fn the_meter_register_only_grows() {
        let mut m = SiteModel::new(profile(), 3, 1_764_000_000.0);
        let mut last = 0.0;
        for i in 0..500 {
            m.advance_to(1_764_000_000.0 + f64::from(i) * 300.0);
            let v = m.signals().meter_l;
            assert!(v >= last);
            last = v;
        }
    }
}
