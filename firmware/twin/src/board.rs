//! A simulated device: the firmware core's drivers and decisions running on
//! the simulated hardware of [`crate::hardware`], as a board's main loop
//! would run them.
//!
//! Each [`Board::tick`] is one wake-up of the main loop at a simulated time:
//! the model's [`Signals`] are put on the wires, the meter's pulses since the
//! last wake-up are counted, and the core's [`Scheduler`] says which
//! instruments to read and when to report. Readings go into the core's
//! spike-rejecting [`Aggregate`]s (a NAMUR fault or a silent probe is
//! counted, never a value); a report takes each interval's value (median for
//! instruments, mean for flow) and gives the samples to encode.
//!
//! Instruments and their wiring:
//!
//! | role | instrument | hardware | core driver |
//! | --- | --- | --- | --- |
//! | caseta | macro-meter | reed contact on a pin, or a hardware counter | [`PulseInput`] + [`Debouncer`], or [`Totaliser::add_counter_reading`]; [`FlowWindow`] |
//! | caseta | pump | auxiliary contact on a pin | `InputPin` |
//! | caseta | chlorine, turbidity | 4–20 mA on ADS1115 AIN0, AIN1 | [`LoopAdc`] |
//! | caseta | pH, conductivity | Modbus RTU probe, unit 1 | [`ModbusProbe`] |
//! | red | pressure, tank level | 4–20 mA on ADS1115 AIN2, AIN3 | [`LoopAdc`] |
//! | both | supply, radio | the MCU's ADC, the modem | values from the model |
//!
//! The turbidimeter is powered per cycle with the data-logger timing of
//! `DOMAIN.md` (8 s + 40 s + 4 s); the other instruments are read at once.
//! Driver waits (ADC conversion polls, Modbus silences) take no simulated
//! time. Reads happen at the first wake-up at or after the scheduler's due
//! time, so with a 60 s tick the turbidity reading comes up to a minute late.

use std::sync::Arc;

use apr_firmware::aggregate::{Aggregate, Method};
use apr_firmware::analog::{AdcInput, Calibration, FrontEnd, LoopAdc, LoopChannel};
use apr_firmware::flow::{
    ActiveLevel, CounterWidth, Debouncer, FlowWindow, KFactor, PulseInput, Totaliser,
};
use apr_firmware::modbus_probe::{
    ModbusProbe, ProbeConfig, ProbeRegister, RegisterFormat, RegisterKind,
};
use apr_firmware::scheduler::{Action, InstrumentPlan, Scheduler, Timing};
use apr_firmware::{Sample, SampleValue};
use apr_wire::Metric;
use embedded_hal::digital::InputPin;

use crate::hardware::{Contact, NoDelay, SimAds1115, SimPin, SimProbePort, Wires};
use crate::model::{round, DeviceRole, Signals};
use crate::TwinError;

/// How the macro-meter's pulses reach the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterWiring {
    /// The reed contact on a GPIO, polled at every contact change (as an
    /// edge interrupt would wake the loop) and debounced by the core's
    /// [`PulseInput`]. Every pulse is simulated.
    ReedSwitchPolled,
    /// The contact on a 16-bit hardware timer counter read at each wake-up
    /// ([`Totaliser::add_counter_reading`] across its wrap). A real board
    /// option, and the cheap one for fast-forwarded history.
    HardwareCounter,
}

/// How a simulated device samples and reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoardOptions {
    /// Seconds between instrument readings (and main-loop wake-ups).
    pub sample_period_s: u32,
    /// Seconds between reports (10–3600, the core's bounds).
    pub report_interval_s: u32,
    /// Meter wiring.
    pub meter: MeterWiring,
    /// The meter's litres per pulse.
    pub k_factor_l_per_pulse: f64,
}

impl Default for BoardOptions {
    /// Readings each minute, a report each 15 minutes (`DOMAIN.md`: night
    /// flow needs ≤ 15 min), every pulse simulated, 1 L/pulse.
    fn default() -> Self {
        BoardOptions {
            sample_period_s: 60,
            report_interval_s: 900,
            meter: MeterWiring::ReedSwitchPolled,
            k_factor_l_per_pulse: 1.0,
        }
    }
}

/// Debounce of the reed contact, µs.
const DEBOUNCE_US: u32 = 5_000;
/// ADS1115 address with ADDR to ground.
const ADC_ADDRESS: u8 = 0x48;
/// Readings one aggregate holds (an hour of 1-minute readings and more).
const AGG: usize = 64;

const PH_REGISTER: ProbeRegister = ProbeRegister {
    metric: Metric::Ph,
    kind: RegisterKind::Holding,
    address: 1,
    format: RegisterFormat::F32,
};
const CONDUCTIVITY_REGISTER: ProbeRegister = ProbeRegister {
    metric: Metric::Conductivity,
    kind: RegisterKind::Holding,
    address: 3,
    format: RegisterFormat::F32,
};

/// Scheduler slots.
const SLOT_LOOPS: usize = 0;
const SLOT_PROBE: usize = 1;
const SLOT_TURBIDITY: usize = 2;

struct Meter {
    wiring: MeterWiring,
    k_l: f64,
    input: PulseInput<SimPin>,
    totaliser: Totaliser,
    window: FlowWindow<4>,
    /// The register (litres) and time at the last wake-up.
    last: Option<(f64, f64)>,
    /// The meter's register when the board was installed, m³.
    installed_m3: f64,
}

impl Meter {
    fn new(wires: &Arc<Wires>, wiring: MeterWiring, k_l: f64, window_s: u32) -> Self {
        let k = KFactor::from_litres(k_l as f32).unwrap_or(KFactor::ONE_LITRE);
        Meter {
            wiring,
            k_l: k.litres(),
            input: PulseInput::new(
                SimPin::new(wires.clone(), Contact::MeterReed),
                Debouncer::new(DEBOUNCE_US, ActiveLevel::Low),
            ),
            totaliser: Totaliser::new(k),
            window: FlowWindow::new(u64::from(window_s) * 1_000_000),
            last: None,
            installed_m3: 0.0,
        }
    }

    fn poll(&mut self, t: f64) {
        let us = (t * 1e6) as u64;
        // The pin is infallible.
        let _ = self.input.poll(us);
    }

    /// Moves the register to `meter_l` at `t`, counting pulses the way the
    /// wiring does.
    fn advance(&mut self, wires: &Wires, t: f64, meter_l: f64) {
        let Some((v0, t0)) = self.last else {
            // First wake-up: the contact's state, the counter's baseline.
            self.installed_m3 = meter_l / 1000.0;
            let half = self.k_l / 2.0;
            wires.set_meter_closed(((meter_l / half).floor() as u64).is_multiple_of(2));
            self.poll(t);
            self.poll(t + 0.01);
            self.count();
            self.last = Some((meter_l, t));
            return;
        };
        match self.wiring {
            MeterWiring::ReedSwitchPolled if meter_l > v0 && t > t0 => {
                // The contact is closed over the first half of each pulse's
                // volume: an edge at each half step of the K-factor.
                let half = self.k_l / 2.0;
                let mut e = (v0 / half).floor() + 1.0;
                while e * half <= meter_l {
                    let te = t0 + (e * half - v0) / (meter_l - v0) * (t - t0);
                    // The old level up to the edge, then the new one.
                    self.poll(te - 1e-6);
                    wires.set_meter_closed((e as u64).is_multiple_of(2));
                    self.poll(te);
                    e += 1.0;
                }
                self.poll(t);
            }
            MeterWiring::ReedSwitchPolled => self.poll(t),
            MeterWiring::HardwareCounter => {}
        }
        self.last = Some((meter_l, t));
        self.count();
    }

    fn count(&mut self) {
        match self.wiring {
            MeterWiring::ReedSwitchPolled => {
                let pulses = self.input.debouncer().pulses();
                self.totaliser
                    .add_counter_reading(pulses, CounterWidth::U32);
            }
            MeterWiring::HardwareCounter => {
                let (v, _) = self.last.unwrap_or((0.0, 0.0));
                let raw = ((v / self.k_l).floor() as u64 & 0xFFFF) as u32;
                self.totaliser.add_counter_reading(raw, CounterWidth::U16);
            }
        }
    }

    fn volume_m3(&self) -> f64 {
        self.installed_m3 + self.totaliser.volume_m3()
    }
}

/// One simulated device running the core.
pub struct Board {
    role: DeviceRole,
    options: BoardOptions,
    wires: Arc<Wires>,
    adc: LoopAdc<SimAds1115, NoDelay>,
    channels: Vec<LoopChannel>,
    turbidity: Option<LoopChannel>,
    probe: Option<ModbusProbe<SimProbePort, NoDelay>>,
    pump: Option<SimPin>,
    meter: Option<Meter>,
    scheduler: Scheduler<3>,
    /// One per metric, by [`Metric::index`].
    aggregates: [Aggregate<AGG>; 11],
    report: Vec<Sample>,
    reports: u64,
}

fn channel(input: AdcInput, metric: Metric) -> LoopChannel {
    LoopChannel {
        input,
        metric,
        calibration: Calibration::default_for(metric)
            .unwrap_or_else(|| unreachable!("{metric} is a 4-20 mA metric")),
    }
}

impl Board {
    /// A device of `role`, powered on at `t`.
    pub fn new(role: DeviceRole, options: BoardOptions, t: f64) -> Result<Self, TwinError> {
        let wires = Wires::new();
        let adc = LoopAdc::new(
            SimAds1115::new(wires.clone(), ADC_ADDRESS, FrontEnd::default().shunt_ohms),
            ads1x1x::TargetAddr::default(),
            NoDelay,
            FrontEnd::default(),
        )
        .map_err(|e| TwinError::Hardware(format!("ADC setup: {e}")))?;
        let pump_house = role == DeviceRole::PumpHouse;
        let channels = if pump_house {
            vec![channel(AdcInput::A0, Metric::Chlorine)]
        } else {
            vec![
                channel(AdcInput::A2, Metric::Pressure),
                channel(AdcInput::A3, Metric::TankLevel),
            ]
        };
        let period = options.sample_period_s.max(1);
        let mut board = Board {
            role,
            options,
            turbidity: pump_house.then(|| channel(AdcInput::A1, Metric::Turbidity)),
            probe: pump_house.then(|| {
                ModbusProbe::new(
                    SimProbePort::new(wires.clone(), 1),
                    NoDelay,
                    ProbeConfig::default(),
                )
            }),
            pump: pump_house.then(|| SimPin::new(wires.clone(), Contact::Pump)),
            meter: pump_house
                .then(|| Meter::new(&wires, options.meter, options.k_factor_l_per_pulse, period)),
            wires,
            adc,
            channels,
            scheduler: Self::scheduler(&options, t),
            aggregates: std::array::from_fn(|_| Aggregate::new()),
            report: Vec::new(),
            reports: 0,
        };
        board
            .aggregates
            .iter_mut()
            .for_each(|a| *a = Aggregate::new());
        Ok(board)
    }

    fn scheduler(options: &BoardOptions, t: f64) -> Scheduler<3> {
        let period_ms = options.sample_period_s.max(1) * 1000;
        let now = plan(Timing::IMMEDIATE, period_ms);
        Scheduler::new(
            [now, now, plan(Timing::TURBIDITY, period_ms.max(60_000))],
            options.report_interval_s.clamp(10, 3600) * 1000,
            (t * 1000.0) as u64,
        )
    }

    /// The device's role.
    pub fn role(&self) -> DeviceRole {
        self.role
    }

    /// Its options.
    pub fn options(&self) -> BoardOptions {
        self.options
    }

    /// Reports made so far.
    pub fn reports(&self) -> u64 {
        self.reports
    }

    /// A reboot at `t` (after a silent spell, or with new options): the
    /// interval's readings in RAM are lost, the schedule starts again; the
    /// meter's totaliser is kept (saved state).
    pub fn restart(&mut self, options: BoardOptions, t: f64) {
        self.options = options;
        self.scheduler = Self::scheduler(&options, t);
        self.aggregates
            .iter_mut()
            .for_each(|a| *a = Aggregate::new());
    }

    /// One wake-up of the main loop at `t` with `signals` on the wires.
    /// Returns the report's samples when a report fell due.
    pub fn tick(&mut self, t: f64, signals: &Signals) -> Option<&[Sample]> {
        for (i, ma) in signals.loops_ma.iter().enumerate() {
            self.wires.set_loop_ma(i, *ma);
        }
        self.wires.set_pump_running(signals.pump_running);
        self.wires.set_probe(signals.probe, signals.probe_answers);
        if let Some(m) = &mut self.meter {
            m.advance(&self.wires, t, signals.meter_l);
        }
        let now_ms = (t * 1000.0) as u64;
        let mut reported = false;
        while let Some(action) = self.scheduler.poll(now_ms) {
            match action {
                Action::Read(SLOT_LOOPS) => self.read_loops(t),
                Action::Read(SLOT_PROBE) => self.read_probe(),
                Action::Read(SLOT_TURBIDITY) => self.read_turbidity(),
                Action::Report => {
                    self.make_report(t, signals);
                    reported = true;
                }
                // Instrument supplies: nothing to simulate.
                Action::Read(_) | Action::PowerOn(_) | Action::PowerOff(_) => {}
            }
        }
        reported.then_some(self.report.as_slice())
    }

    fn push(&mut self, metric: Metric, reading: Result<f32, ()>) {
        let agg = &mut self.aggregates[usize::from(metric.index())];
        match reading {
            Ok(v) => agg.push(v),
            Err(()) => agg.push_fault(),
        }
    }

    fn read_loops(&mut self, t: f64) {
        for k in 0..self.channels.len() {
            let ch = self.channels[k];
            let r = self.adc.measure(&ch).map_err(|_| ());
            self.push(ch.metric, r);
        }
        if let Some(m) = &mut self.meter {
            m.window.push((t * 1e6) as u64, m.totaliser.microlitres());
            if let Some(q) = m.window.flow_l_s() {
                self.aggregates[usize::from(Metric::Flow.index())].push(q as f32);
            }
        }
    }

    fn read_turbidity(&mut self) {
        if let Some(ch) = self.turbidity {
            let r = self.adc.measure(&ch).map_err(|_| ());
            self.push(ch.metric, r);
        }
    }

    fn read_probe(&mut self) {
        let Some(probe) = &mut self.probe else {
            return;
        };
        let ph = probe.read(&PH_REGISTER).map_err(|_| ());
        let cond = probe.read(&CONDUCTIVITY_REGISTER).map_err(|_| ());
        self.push(Metric::Ph, ph);
        self.push(Metric::Conductivity, cond);
    }

    fn make_report(&mut self, t: f64, signals: &Signals) {
        self.report.clear();
        self.reports += 1;
        for &metric in self.role.metrics() {
            let agg = &mut self.aggregates[usize::from(metric.index())];
            let value = match metric {
                Metric::Flow => agg
                    .take(Method::TrimmedMean { percent: 0 })
                    .map(|s| SampleValue::Number(round(f64::from(s.value).max(0.0), 3))),
                Metric::Volume => self
                    .meter
                    .as_ref()
                    .map(|m| SampleValue::Number(round(m.volume_m3(), 3))),
                Metric::Pump => self
                    .pump
                    .as_mut()
                    .and_then(|p| p.is_high().ok())
                    .map(SampleValue::Boolean),
                Metric::Battery => Some(SampleValue::Number(round(signals.battery_v, 2))),
                Metric::Rssi => Some(SampleValue::Number(signals.rssi_dbm.round())),
                _ => agg.take(Method::Median).map(|s| {
                    let (lo, hi) = metric.range();
                    let digits = match metric {
                        Metric::Chlorine => 3,
                        Metric::Conductivity | Metric::TankLevel => 1,
                        _ => 2,
                    };
                    SampleValue::Number(round(f64::from(s.value), digits).clamp(lo, hi))
                }),
            };
            if let Some(value) = value {
                self.report.push(Sample {
                    metric,
                    time: t,
                    value,
                });
            }
        }
    }
}

fn plan(timing: Timing, period_ms: u32) -> InstrumentPlan {
    InstrumentPlan { timing, period_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(meter_l: f64) -> Signals {
        Signals {
            meter_l,
            pump_running: true,
            loops_ma: [8.0, 4.16, 12.0, 2.0],
            probe: [7.2, 410.0, 0.8],
            probe_answers: true,
            battery_v: 13.4,
            rssi_dbm: -80.0,
        }
    }

    #[test]
    fn the_polled_reed_switch_counts_every_litre_through_the_core_debouncer() {
        let opts = BoardOptions {
            report_interval_s: 600,
            ..BoardOptions::default()
        };
        let mut b = Board::new(DeviceRole::PumpHouse, opts, 0.0).unwrap();
        let mut report = Vec::new();
        for i in 0..=10 {
            let t = f64::from(i) * 60.0;
            // 1.5 l/s from a register at 5000.2 L.
            if let Some(r) = b.tick(t, &signals(5000.2 + 1.5 * t)) {
                report = r.to_vec();
            }
        }
        let get = |m: Metric| report.iter().find(|s| s.metric == m).map(|s| s.value);
        // 900 L in 10 minutes, counted pulse by pulse (±1 at the ends).
        let Some(SampleValue::Number(vol)) = get(Metric::Volume) else {
            panic!("{report:?}")
        };
        assert!((vol - 5.9002).abs() < 0.0021, "{vol}");
        let Some(SampleValue::Number(flow)) = get(Metric::Flow) else {
            panic!()
        };
        assert!((flow - 1.5).abs() < 0.05, "{flow}");
        let Some(SampleValue::Number(cl)) = get(Metric::Chlorine) else {
            panic!()
        };
        assert!((cl - 1.25).abs() < 0.002, "{cl}");
        let Some(SampleValue::Number(ph)) = get(Metric::Ph) else {
            panic!()
        };
        assert!((ph - 7.2).abs() < 1e-6, "{ph}");
        assert_eq!(get(Metric::Pump), Some(SampleValue::Boolean(true)));
        assert!(get(Metric::Turbidity).is_some());
    }

    #[test]
    fn a_namur_fault_is_never_reported_as_a_value() {
        let mut b = Board::new(DeviceRole::Network, BoardOptions::default(), 0.0).unwrap();
        let mut report = Vec::new();
        for i in 0..=15 {
            if let Some(r) = b.tick(f64::from(i) * 60.0, &signals(0.0)) {
                report = r.to_vec();
            }
        }
        // AIN3 (tank level) carries 2 mA: left out; pressure at 12 mA is 50 m.
        assert!(
            report.iter().all(|s| s.metric != Metric::TankLevel),
            "{report:?}"
        );
        let p = report
            .iter()
            .find(|s| s.metric == Metric::Pressure)
            .unwrap();
        assert_eq!(p.value, SampleValue::Number(50.0));
    }
}
