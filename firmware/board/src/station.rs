//! The measuring station: the core's scheduler decides, the drivers read,
//! readings aggregate over the report interval, each report becomes SenML
//! packs written to the outbox before they are published, and the
//! gateway's `ack` releases them.
//!
//! # Instruments
//!
//! | # | instrument | how | timing (warm-up + settle + measure) | period |
//! | --- | --- | --- | --- | --- |
//! | 0 | chlorine analyser | 4–20 mA, ADS1115 AIN0 | always powered | 60 s |
//! | 1 | turbidimeter | 4–20 mA, AIN1, switched supply | 8 + 40 + 4 s | 300 s |
//! | 2 | network pressure | 4–20 mA, AIN2 | always powered | 60 s |
//! | 3 | tank level | 4–20 mA, AIN3 | always powered | 60 s |
//! | 4 | pH / conductivity probe | Modbus RTU, switched supply | 10 + 20 + 2 s | 300 s |
//! | 5 | site: flow, pump, supply voltage | pulse total, digital input, MCU ADC | at once | 10 s |
//!
//! # Sending
//!
//! One `up` publish is in flight at a time. A pack just made is *live* and
//! goes first; the rest of the outbox is the *backlog* and follows, oldest
//! first, from the start at each new session. A pack leaves the outbox only
//! when the gateway names its `bt` on `ack`; if the outbox still holds packs
//! already sent and no `ack` came for [`RESEND_AFTER_MS`], everything
//! pending is sent again (the gateway stores a `bt` once and acks it again).
//! The outbox is searched only when something may be unsent (a new pack, a
//! new session, the resend timer), not on every pass of the loop.

use apr_firmware::aggregate::{Aggregate, Method};
use apr_firmware::analog::{AdcInput, LoopAdc, LoopChannel};
use apr_firmware::config::Settings;
use apr_firmware::flow::{CounterWidth, PulseInput, Totaliser};
use apr_firmware::modbus_probe::{ModbusProbe, ProbeRegister, RegisterFormat, RegisterKind};
use apr_firmware::outbox::Outbox;
use apr_firmware::scheduler::{Action, InstrumentPlan, Scheduler, Timing};
use apr_firmware::{Error, Identity, Report, Sample, SampleValue};
use apr_wire::Metric;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{InputPin, OutputPin};
use embedded_hal::i2c::I2c;
use embedded_io::{Read, ReadReady, Write};
use embedded_storage::nor_flash::NorFlash;
use heapless::Deque;

use crate::mqtt::{self, Received};

/// Resend what is unacknowledged after this long without an `ack`.
pub const RESEND_AFTER_MS: u64 = 3 * 60_000;
/// Bytes of one pack (the outbox takes up to ~128 KiB; the gateway 16 KiB).
pub const PACK_BYTES: usize = 1024;

const LOOPS: [(AdcInput, Metric); 4] = [
    (AdcInput::A0, Metric::Chlorine),
    (AdcInput::A1, Metric::Turbidity),
    (AdcInput::A2, Metric::Pressure),
    (AdcInput::A3, Metric::TankLevel),
];
const PROBE: usize = 4;
const SITE: usize = 5;
/// Instrument index → which switched supply it has (0 turbidity, 1 probe).
const SUPPLY: [Option<usize>; 6] = [None, Some(0), None, None, Some(1), None];

const PROBE_REGISTERS: [ProbeRegister; 2] = [
    ProbeRegister {
        metric: Metric::Ph,
        kind: RegisterKind::Holding,
        address: 0x0000,
        format: RegisterFormat::F32WordSwapped,
    },
    ProbeRegister {
        metric: Metric::Conductivity,
        kind: RegisterKind::Holding,
        address: 0x0002,
        format: RegisterFormat::F32WordSwapped,
    },
];

/// The schedule of the table in the module doc.
pub fn plans() -> [InstrumentPlan; 6] {
    let always = |period_s: u32| InstrumentPlan {
        timing: Timing::from_secs(0, 0, period_s),
        period_ms: period_s * 1000,
    };
    [
        always(60),
        InstrumentPlan {
            timing: Timing::TURBIDITY,
            period_ms: 300_000,
        },
        always(60),
        always(60),
        InstrumentPlan {
            timing: Timing::from_secs(10, 20, 2),
            period_ms: 300_000,
        },
        InstrumentPlan {
            timing: Timing::IMMEDIATE,
            period_ms: 10_000,
        },
    ]
}

/// Metrics aggregated over an interval, in this order.
const AGGREGATED: [Metric; 8] = [
    Metric::Chlorine,
    Metric::Turbidity,
    Metric::Pressure,
    Metric::TankLevel,
    Metric::Ph,
    Metric::Conductivity,
    Metric::Flow,
    Metric::Battery,
];

fn slot(metric: Metric) -> usize {
    AGGREGATED.iter().position(|&m| m == metric).unwrap_or(0)
}

/// What the station reads that is not on a bus: the pump contact and the
/// supply voltage.
pub trait SiteInputs {
    /// Whether the pump runs (its contactor's auxiliary contact).
    fn pump_running(&mut self) -> Option<bool>;
    /// Supply voltage, V.
    fn supply_volts(&mut self) -> Option<f32>;
}

/// Progress of sending, per MQTT session.
#[derive(Debug, Clone, Copy, Default)]
struct SendCursor {
    session: u32,
    /// The backlog was sent up to this record sequence.
    backlog_sent: Option<u32>,
    /// Everything pending has been sent once: no need to search the outbox
    /// again until something changes.
    backlog_done: bool,
    last_progress_ms: u64,
}

/// Counters for the status LED and a debugger.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Readings that failed (bus, timeout, CRC, NAMUR fault).
    pub faults: u32,
    /// Reports skipped because the time is not known yet.
    pub reports_without_time: u32,
    /// Packs that could not be written to the outbox.
    pub outbox_errors: u32,
    /// Configurations refused.
    pub configs_refused: u32,
}

/// The station.
pub struct Station<I2C, D, S, P, F, SW>
where
    F: NorFlash,
{
    scheduler: Scheduler<6>,
    settings: Settings,
    adc: Option<LoopAdc<I2C, D>>,
    probe: ModbusProbe<S, D>,
    pulses: PulseInput<P>,
    supplies: [SW; 2],
    totaliser: Totaliser,
    aggregates: [Aggregate<32>; 8],
    pump: Option<bool>,
    last_flow_point: Option<(u64, u64)>,
    outbox: Outbox<F>,
    report: Report<'static>,
    /// Packs made since they were last sent live (record sequences).
    live: Deque<u32, 4>,
    cursor: SendCursor,
    pack: [u8; PACK_BYTES],
    /// Counters.
    pub counters: Counters,
}

/// The parts a [`Station`] is built from.
pub struct Parts<I2C, D, S, P, F, SW>
where
    F: NorFlash,
{
    /// The 4–20 mA ADC (`None` if it did not answer at start: its
    /// readings are faults until the next reset).
    pub adc: Option<LoopAdc<I2C, D>>,
    /// The Modbus probe.
    pub probe: ModbusProbe<S, D>,
    /// The macro-meter's pulse input.
    pub pulses: PulseInput<P>,
    /// Switched supplies: turbidimeter, probe.
    pub supplies: [SW; 2],
    /// The totaliser as restored (or new).
    pub totaliser: Totaliser,
    /// The mounted outbox.
    pub outbox: Outbox<F>,
    /// Settings to start with.
    pub settings: Settings,
    /// The device.
    pub identity: Identity<'static>,
}

impl<I2C, D, S, P, F, SW> Station<I2C, D, S, P, F, SW>
where
    I2C: I2c,
    D: DelayNs,
    S: Read + Write + ReadReady,
    P: InputPin,
    F: NorFlash,
    SW: OutputPin,
{
    /// A station starting its schedule at `now_ms`.
    pub fn new(parts: Parts<I2C, D, S, P, F, SW>, now_ms: u64) -> Self {
        let interval_ms = parts.settings.report_interval_s * 1000;
        let last_bt = parts.outbox.last_bt();
        Station {
            scheduler: Scheduler::new(plans(), interval_ms, now_ms),
            settings: parts.settings,
            adc: parts.adc,
            probe: parts.probe,
            pulses: parts.pulses,
            supplies: parts.supplies,
            totaliser: parts.totaliser,
            aggregates: [const { Aggregate::new() }; 8],
            pump: None,
            last_flow_point: None,
            outbox: parts.outbox,
            report: Report::new(parts.identity, last_bt),
            live: Deque::new(),
            cursor: SendCursor::default(),
            pack: [0; PACK_BYTES],
            counters: Counters::default(),
        }
    }

    /// The meter total, to save.
    pub fn totaliser(&self) -> &Totaliser {
        &self.totaliser
    }

    /// Polls the pulse input (every loop pass).
    pub fn poll_pulses(&mut self, now_us: u64) {
        if self.pulses.poll(now_us).is_err() {
            self.counters.faults = self.counters.faults.wrapping_add(1);
        }
    }

    /// Carries out every action due at `now_ms`; `unix_s` is the wall clock
    /// if known, `site` the inputs off the buses. Returns whether a site
    /// reading (and so the totaliser) changed, for the caller to save it.
    pub fn run_due(
        &mut self,
        now_ms: u64,
        unix_s: Option<f64>,
        site: &mut impl SiteInputs,
    ) -> bool {
        let mut site_read = false;
        while let Some(action) = self.scheduler.poll(now_ms) {
            match action {
                Action::PowerOn(i) | Action::PowerOff(i) => {
                    if let Some(s) = SUPPLY[i] {
                        let on = self.scheduler.powered(i);
                        let _ = if on {
                            self.supplies[s].set_high()
                        } else {
                            self.supplies[s].set_low()
                        };
                    }
                }
                Action::Read(i) if i < LOOPS.len() => self.read_loop(i),
                Action::Read(PROBE) => self.read_probe(),
                Action::Read(SITE) => {
                    self.read_site(now_ms, site);
                    site_read = true;
                }
                Action::Read(_) => {}
                Action::Report => self.make_report(unix_s),
            }
        }
        site_read
    }

    fn fault(&mut self, metric: Metric) {
        self.aggregates[slot(metric)].push_fault();
        self.counters.faults = self.counters.faults.wrapping_add(1);
    }

    fn read_loop(&mut self, i: usize) {
        let (input, metric) = LOOPS[i];
        let Some(calibration) = self.settings.calibration(metric) else {
            return;
        };
        let channel = LoopChannel {
            input,
            metric,
            calibration,
        };
        match self.adc.as_mut().map(|adc| adc.measure(&channel)) {
            Some(Ok(v)) => self.aggregates[slot(metric)].push(v),
            Some(Err(_)) | None => self.fault(metric),
        }
    }

    fn read_probe(&mut self) {
        for reg in &PROBE_REGISTERS {
            match self.probe.read(reg) {
                Ok(v) => self.aggregates[slot(reg.metric)].push(v),
                // A silent probe answers nothing else either.
                Err(Error::Timeout) => {
                    self.fault(reg.metric);
                    break;
                }
                Err(_) => self.fault(reg.metric),
            }
        }
    }

    fn read_site(&mut self, now_ms: u64, inputs: &mut impl SiteInputs) {
        self.pump = inputs.pump_running().or(self.pump);
        match inputs.supply_volts() {
            Some(v) => self.aggregates[slot(Metric::Battery)].push(v),
            None => self.fault(Metric::Battery),
        }
        self.totaliser
            .add_counter_reading(self.pulses.debouncer().pulses(), CounterWidth::U32);
        let point = (now_ms, self.totaliser.microlitres());
        if let Some((t0, ul0)) = self.last_flow_point {
            let dt_s = (now_ms - t0) as f32 / 1000.0;
            if dt_s > 0.0 {
                let litres = (point.1 - ul0) as f32 / 1e6;
                self.aggregates[slot(Metric::Flow)].push(litres / dt_s);
            }
        }
        self.last_flow_point = Some(point);
    }

    /// Aggregates the interval, encodes packs and appends them to the
    /// outbox. Without the wall clock the readings stay in the aggregates
    /// for the next report (a pack needs its `bt`).
    fn make_report(&mut self, unix_s: Option<f64>) {
        let Some(now) = unix_s else {
            self.counters.reports_without_time += 1;
            return;
        };
        let mut samples = [Sample {
            metric: Metric::Flow,
            time: now,
            value: SampleValue::Number(0.0),
        }; 10];
        let mut n = 0;
        for (i, metric) in AGGREGATED.iter().enumerate() {
            let method = match metric {
                // A flow or voltage average is what a water balance wants;
                // trimming still drops a pulse burst's spike.
                Metric::Flow | Metric::Battery => Method::TrimmedMean { percent: 10 },
                _ => Method::Median,
            };
            if let Some(s) = self.aggregates[i].take(method) {
                samples[n].metric = *metric;
                samples[n].value = SampleValue::Number(f64::from(s.value));
                n += 1;
            }
        }
        samples[n].metric = Metric::Volume;
        samples[n].value = SampleValue::Number(self.totaliser.volume_m3());
        n += 1;
        if let Some(p) = self.pump {
            samples[n].metric = Metric::Pump;
            samples[n].value = SampleValue::Boolean(p);
            n += 1;
        }
        let mut done = 0;
        while done < n {
            match self.report.next_pack(&mut self.pack, &samples[done..n]) {
                Ok((len, bt, taken)) => {
                    match self.outbox.append(bt, &self.pack[..len]) {
                        Ok(seq) => {
                            if self.live.is_full() {
                                // The oldest goes with the backlog.
                                self.live.pop_front();
                                self.cursor.backlog_done = false;
                            }
                            let _ = self.live.push_back(seq);
                        }
                        Err(_) => self.counters.outbox_errors += 1,
                    }
                    done += taken;
                }
                Err(_) => {
                    self.counters.outbox_errors += 1;
                    break;
                }
            }
        }
    }

    /// A message from the gateway: an `ack` releases packs, a `config` is
    /// validated and applied whole or refused.
    pub fn on_message(&mut self, msg: Received<'_>, now_ms: u64) {
        match msg {
            Received::Ack(payload) => {
                for bt in mqtt::ack_bts(payload) {
                    if let Ok(true) = self.outbox.release(bt) {
                        self.cursor.last_progress_ms = now_ms;
                    }
                }
            }
            Received::Config(json) => match self.settings.apply(json) {
                Ok(true) => {
                    self.totaliser.set_k_factor(self.settings.k_factor);
                    self.scheduler
                        .set_report_interval(self.settings.report_interval_s * 1000, now_ms);
                }
                Ok(false) => {}
                Err(_) => self.counters.configs_refused += 1,
            },
            Received::Nothing => {}
        }
    }

    /// Copies the pending pack `seq` into the pack buffer; its length.
    fn load(&mut self, seq: u32) -> Option<usize> {
        let mut it = self.outbox.pending();
        while let Ok(Some(p)) = it.next(&mut self.pack) {
            if p.seq == seq {
                return Some(p.len);
            }
        }
        None
    }

    /// The oldest pending pack after the backlog cursor, copied into the
    /// pack buffer; its length and sequence.
    fn next_backlog(&mut self) -> Option<(usize, u32)> {
        let after = self.cursor.backlog_sent;
        let mut it = self.outbox.pending();
        while let Ok(Some(p)) = it.next(&mut self.pack) {
            if after.is_none_or(|s| p.seq > s) {
                return Some((p.len, p.seq));
            }
        }
        None
    }

    /// Publishes the next pack if the session can take one now: a pack just
    /// made first, then the backlog, oldest first. A pack can go twice (live,
    /// then again with the backlog if its `ack` is slow); the gateway keeps a
    /// `bt` once.
    pub fn send<N: Publisher>(&mut self, net: &mut N, now_ms: u64) {
        if net.sessions() != self.cursor.session {
            // A new session: everything still pending goes again.
            self.cursor = SendCursor {
                session: net.sessions(),
                backlog_sent: None,
                backlog_done: false,
                last_progress_ms: now_ms,
            };
        }
        if !net.can_publish() {
            return;
        }
        while let Some(&seq) = self.live.front() {
            match self.load(seq) {
                Some(len) => {
                    if net.publish_up(&self.pack[..len], now_ms) {
                        self.live.pop_front();
                    }
                    return;
                }
                // Already acknowledged (or dropped to make room).
                None => {
                    self.live.pop_front();
                }
            }
        }
        if self.cursor.backlog_done {
            if self.outbox.pending_count() > 0
                && now_ms.saturating_sub(self.cursor.last_progress_ms) > RESEND_AFTER_MS
            {
                // Sent, but no `ack` for a while: send it all again.
                self.cursor.backlog_sent = None;
                self.cursor.backlog_done = false;
                self.cursor.last_progress_ms = now_ms;
            }
            return;
        }
        match self.next_backlog() {
            Some((len, seq)) => {
                if net.publish_up(&self.pack[..len], now_ms) {
                    self.cursor.backlog_sent = Some(seq);
                }
            }
            None => self.cursor.backlog_done = true,
        }
    }
}

/// Where packs go: the MQTT session ([`crate::net::Net`]).
pub trait Publisher {
    /// Session count (a change means a new session).
    fn sessions(&self) -> u32;
    /// Whether a publish may go now.
    fn can_publish(&self) -> bool;
    /// Publishes a pack on `up` at QoS 1.
    fn publish_up(&mut self, pack: &[u8], now_ms: u64) -> bool;
}
