//! Simulated hardware behind the embedded-hal 1.0 and embedded-io traits,
//! so the firmware core's own drivers run unchanged in the twin:
//!
//! - [`SimPin`]: an [`InputPin`]: the macro-meter's reed contact (closed =
//!   low, with the usual pull-up) or the pump contactor's auxiliary contact.
//! - [`SimAds1115`]: an [`I2c`] device speaking the ADS1115's register
//!   protocol as `ads1x1x` uses it: a pointer byte, 16-bit big-endian
//!   registers, a config write with OS set starts a one-shot conversion of the
//!   input its MUX bits name at the gain its PGA bits name, the config's OS
//!   bit reads 0 while converting (one poll here) and 1 when done, and the
//!   conversion register holds the signed result of the loop current through
//!   the shunt. A wrong address is not acknowledged.
//! - [`SimProbePort`]: the serial port of a Modbus RTU water-quality probe
//!   ([`embedded_io`] `Read + Write + ReadReady`): a request is taken at
//!   `flush`, checked (unit, CRC16), and answered with its holding or input
//!   registers, CRC correct; a silent probe does not answer (the driver times
//!   out), an out-of-range register is an exception 0x02.
//! - [`NoDelay`]: the driver's waits take no simulated time.
//!
//! What the wires carry comes from the model through [`Wires`], shared by a
//! device's simulated parts (atomics, so a device can move between threads).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{ErrorType as PinErrorType, InputPin};
use embedded_hal::i2c::{
    ErrorKind, ErrorType as I2cErrorType, I2c, NoAcknowledgeSource, Operation,
};

/// The probe's register map (holding and input alike): IEEE 754 singles,
/// high word first, from register 1: pH (1–2), conductivity µS/cm (3–4),
/// free chlorine mg/l (5–6).
pub const PROBE_REGISTERS: [(u16, usize); 3] = [(1, 0), (3, 1), (5, 2)];

/// The loop currents, contacts and probe values a device's hardware sees.
#[derive(Debug, Default)]
pub struct Wires {
    meter_closed: AtomicBool,
    pump_running: AtomicBool,
    loops: [AtomicU32; 4],
    probe: [AtomicU32; 3],
    probe_silent: AtomicBool,
}

impl Wires {
    /// Shared wires, all idle.
    pub fn new() -> Arc<Wires> {
        Arc::new(Wires::default())
    }

    /// Closes or opens the meter's reed contact.
    pub fn set_meter_closed(&self, closed: bool) {
        self.meter_closed.store(closed, Ordering::Relaxed);
    }

    /// Sets the pump contactor's contact.
    pub fn set_pump_running(&self, running: bool) {
        self.pump_running.store(running, Ordering::Relaxed);
    }

    /// Sets the loop current on ADC input `i` (0–3), mA.
    pub fn set_loop_ma(&self, i: usize, ma: f32) {
        self.loops[i].store(ma.to_bits(), Ordering::Relaxed);
    }

    /// The loop current on ADC input `i`, mA.
    pub fn loop_ma(&self, i: usize) -> f32 {
        f32::from_bits(self.loops[i].load(Ordering::Relaxed))
    }

    /// Sets the probe's values (pH, conductivity, chlorine) and whether it answers.
    pub fn set_probe(&self, values: [f32; 3], answers: bool) {
        for (slot, v) in self.probe.iter().zip(values) {
            slot.store(v.to_bits(), Ordering::Relaxed);
        }
        self.probe_silent.store(!answers, Ordering::Relaxed);
    }

    fn probe_value(&self, k: usize) -> f32 {
        f32::from_bits(self.probe[k].load(Ordering::Relaxed))
    }
}

/// Which contact a [`SimPin`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact {
    /// The meter's reed switch to ground with a pull-up: closed reads low.
    MeterReed,
    /// The pump's auxiliary contact: running reads high.
    Pump,
}

/// A digital input wired to a contact.
#[derive(Debug, Clone)]
pub struct SimPin {
    wires: Arc<Wires>,
    contact: Contact,
}

impl SimPin {
    /// A pin reading `contact`.
    pub fn new(wires: Arc<Wires>, contact: Contact) -> Self {
        SimPin { wires, contact }
    }
}

impl PinErrorType for SimPin {
    type Error = Infallible;
}

impl InputPin for SimPin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(match self.contact {
            Contact::MeterReed => !self.wires.meter_closed.load(Ordering::Relaxed),
            Contact::Pump => self.wires.pump_running.load(Ordering::Relaxed),
        })
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        self.is_high().map(|h| !h)
    }
}

/// Delays that take no simulated time.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDelay;

impl DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

const REG_CONVERSION: u8 = 0;
const REG_CONFIG: u8 = 1;
const OS: u16 = 0x8000;

/// An ADS1115 on I2C whose four single-ended inputs measure loop currents
/// across a shunt.
#[derive(Debug)]
pub struct SimAds1115 {
    wires: Arc<Wires>,
    address: u8,
    shunt_ohms: f32,
    pointer: u8,
    config: u16,
    conversion: i16,
    thresholds: [u16; 2],
    busy_polls: u8,
    conversions: u64,
}

impl SimAds1115 {
    /// An ADS1115 at `address` (0x48 with ADDR to ground) with `shunt_ohms`
    /// on each input, in its power-on state.
    pub fn new(wires: Arc<Wires>, address: u8, shunt_ohms: f32) -> Self {
        SimAds1115 {
            wires,
            address,
            shunt_ohms,
            pointer: 0,
            config: 0x8583 & !OS,
            conversion: 0,
            thresholds: [0x8000, 0x7FFF],
            busy_polls: 0,
            conversions: 0,
        }
    }

    /// Conversions carried out.
    pub fn conversions(&self) -> u64 {
        self.conversions
    }

    fn full_scale_v(config: u16) -> f32 {
        match (config >> 9) & 0b111 {
            0 => 6.144,
            1 => 4.096,
            2 => 2.048,
            3 => 1.024,
            4 => 0.512,
            _ => 0.256,
        }
    }

    fn write_register(&mut self, reg: u8, value: u16) {
        match reg {
            REG_CONFIG => {
                self.config = value & !OS;
                if value & OS != 0 {
                    self.convert();
                }
            }
            2 | 3 => self.thresholds[usize::from(reg - 2)] = value,
            _ => {}
        }
    }

    fn convert(&mut self) {
        let mux = (self.config >> 12) & 0b111;
        // Single-ended AINx is MUX 100 + x; differential inputs read 0 here.
        let volts = if mux >= 4 {
            self.wires.loop_ma(usize::from(mux - 4)) / 1000.0 * self.shunt_ohms
        } else {
            0.0
        };
        let counts = (volts / Self::full_scale_v(self.config) * 32768.0).round();
        self.conversion = counts.clamp(-32768.0, 32767.0) as i16;
        self.busy_polls = 1;
        self.conversions += 1;
    }

    fn read_register(&mut self) -> u16 {
        match self.pointer {
            REG_CONVERSION => self.conversion as u16,
            REG_CONFIG if self.busy_polls > 0 => {
                self.busy_polls -= 1;
                self.config
            }
            REG_CONFIG => self.config | OS,
            r => self.thresholds[usize::from(r - 2)],
        }
    }
}

impl I2cErrorType for SimAds1115 {
    type Error = ErrorKind;
}

impl I2c for SimAds1115 {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), ErrorKind> {
        if address != self.address {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        for op in operations {
            match op {
                Operation::Write(bytes) => {
                    let Some((&pointer, data)) = bytes.split_first() else {
                        continue;
                    };
                    self.pointer = pointer & 0b11;
                    if data.len() >= 2 {
                        self.write_register(self.pointer, u16::from_be_bytes([data[0], data[1]]));
                    }
                }
                Operation::Read(buf) => {
                    let v = self.read_register().to_be_bytes();
                    for (i, b) in buf.iter_mut().enumerate() {
                        *b = v.get(i).copied().unwrap_or(0xFF);
                    }
                }
            }
        }
        Ok(())
    }
}

/// CRC16/MODBUS (the shared implementation).
pub use apr_wire::checksum::crc16_modbus as crc16;

/// The serial line to a Modbus RTU probe.
#[derive(Debug)]
pub struct SimProbePort {
    wires: Arc<Wires>,
    unit: u8,
    tx: Vec<u8>,
    rx: VecDeque<u8>,
    requests: u64,
}

impl SimProbePort {
    /// A probe at Modbus unit `unit`.
    pub fn new(wires: Arc<Wires>, unit: u8) -> Self {
        SimProbePort {
            wires,
            unit,
            tx: Vec::new(),
            rx: VecDeque::new(),
            requests: 0,
        }
    }

    /// Requests answered or ignored so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    fn answer(&mut self) {
        let req = std::mem::take(&mut self.tx);
        self.requests += 1;
        if req.len() != 8 || req[0] != self.unit || self.wires.probe_silent.load(Ordering::Relaxed)
        {
            return;
        }
        if crc16(&req[..6]).to_le_bytes() != [req[6], req[7]] {
            return;
        }
        let function = req[1];
        let mut reply = vec![self.unit];
        if function != 0x03 && function != 0x04 {
            reply.extend([function | 0x80, 0x01]);
        } else {
            let address = u16::from_be_bytes([req[2], req[3]]);
            let count = u16::from_be_bytes([req[4], req[5]]);
            let mut words = [0u16; 7];
            for (reg, k) in PROBE_REGISTERS {
                let bits = self.wires.probe_value(k).to_bits();
                words[usize::from(reg)] = (bits >> 16) as u16;
                words[usize::from(reg) + 1] = bits as u16;
            }
            let end = usize::from(address) + usize::from(count);
            if count == 0 || end > words.len() {
                reply.extend([function | 0x80, 0x02]);
            } else {
                reply.extend([function, (2 * count) as u8]);
                for w in &words[usize::from(address)..end] {
                    reply.extend(w.to_be_bytes());
                }
            }
        }
        let crc = crc16(&reply);
        reply.extend(crc.to_le_bytes());
        self.rx.extend(reply);
    }
}

impl embedded_io::ErrorType for SimProbePort {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for SimProbePort {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let mut n = 0;
        while n < buf.len() {
            let Some(b) = self.rx.pop_front() else { break };
            buf[n] = b;
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for SimProbePort {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.rx.is_empty())
    }
}

impl embedded_io::Write for SimProbePort {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.tx.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        if !self.tx.is_empty() {
            self.answer();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apr_firmware::analog::{AdcInput, Calibration, FrontEnd, LoopAdc, LoopChannel};
    use apr_firmware::modbus_probe::{
        ModbusProbe, ProbeConfig, ProbeRegister, RegisterFormat, RegisterKind,
    };
    use apr_firmware::Error;
    use apr_wire::Metric;

    fn adc(wires: &Arc<Wires>) -> LoopAdc<SimAds1115, NoDelay> {
        LoopAdc::new(
            SimAds1115::new(wires.clone(), 0x48, 150.0),
            ads1x1x::TargetAddr::default(),
            NoDelay,
            FrontEnd::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_core_adc_driver_reads_loop_currents_through_the_simulated_ads1115() {
        let wires = Wires::new();
        wires.set_loop_ma(0, 12.0);
        wires.set_loop_ma(3, 2.0);
        let mut adc = adc(&wires);
        let ch = |input, metric| LoopChannel {
            input,
            metric,
            calibration: Calibration::span(0.0, 5.0).unwrap(),
        };
        let v = adc.measure(&ch(AdcInput::A0, Metric::Chlorine)).unwrap();
        assert!((v - 2.5).abs() < 0.001, "{v}");
        assert!(matches!(
            adc.measure(&ch(AdcInput::A3, Metric::TankLevel)),
            Err(Error::SensorFault(_))
        ));
        // The gain setup writes the config with OS set, which (as on the
        // chip) starts a conversion too.
        let (i2c, _) = adc.destroy();
        assert_eq!(i2c.conversions(), 3);
    }

    #[test]
    fn a_wrong_i2c_address_is_not_acknowledged() {
        let mut dev = SimAds1115::new(Wires::new(), 0x48, 150.0);
        let mut buf = [0u8; 2];
        assert_eq!(
            dev.write_read(0x49, &[1], &mut buf),
            Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))
        );
    }

    const PH: ProbeRegister = ProbeRegister {
        metric: Metric::Ph,
        kind: RegisterKind::Holding,
        address: 1,
        format: RegisterFormat::F32,
    };

    #[test]
    fn the_core_modbus_driver_reads_the_simulated_probe_and_times_out_when_it_is_silent() {
        let wires = Wires::new();
        wires.set_probe([7.25, 420.0, 0.5], true);
        let port = SimProbePort::new(wires.clone(), 1);
        let mut probe = ModbusProbe::new(port, NoDelay, ProbeConfig::default());
        assert_eq!(probe.read(&PH), Ok(7.25));
        let cond = ProbeRegister {
            metric: Metric::Conductivity,
            kind: RegisterKind::Input,
            address: 3,
            format: RegisterFormat::F32,
        };
        assert_eq!(probe.read(&cond), Ok(420.0));
        let beyond = ProbeRegister { address: 6, ..PH };
        assert_eq!(probe.read(&beyond), Err(Error::Exception(2)));
        wires.set_probe([7.25, 420.0, 0.5], false);
        assert_eq!(probe.read(&PH), Err(Error::Timeout));
    }

    #[test]
    fn the_known_good_request_frame_checks_out() {
        assert_eq!(
            crc16(&[0x01, 0x03, 0x00, 0x01, 0x00, 0x02]).to_le_bytes(),
            [0x95, 0xCB]
        );
    }
}
