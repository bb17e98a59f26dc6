//! A Modbus RTU water-quality probe (pH, conductivity, chlorine) on a serial
//! port, with `rmodbus` for the framing and CRC16.
//!
//! One [`ModbusProbe::read`] is one request/reply: drain stale input, keep the
//! RTU inter-frame silence, send the request, then read the reply against a
//! deadline. The port is an [`embedded_io`] serial port that can say whether
//! a byte is waiting ([`ReadReady`]), so the wait is polled with a
//! [`DelayNs`] and a silent probe is an [`Error::Timeout`] instead of a
//! blocked read. A reply that fails its CRC is [`Error::Crc`], an exception
//! response is [`Error::Exception`] with its code, and a reply from another
//! unit or for another function is [`Error::Frame`]: distinct, so the caller
//! can count noise on the line apart from a probe that refuses a register.
//!
//! Which registers hold what is the probe model's business: the caller
//! describes it with [`ProbeRegister`]s.

use apr_wire::Metric;
use embedded_hal::delay::DelayNs;
use embedded_io::{Read, ReadReady, Write};
use heapless::Vec;
use rmodbus::client::ModbusRequest;
use rmodbus::{guess_response_frame_len, ErrorKind, ModbusProto};

use crate::error::Error;

/// The function a register is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterKind {
    /// Holding registers, function 0x03.
    Holding,
    /// Input registers, function 0x04.
    Input,
}

/// How a value is laid out in the registers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RegisterFormat {
    /// IEEE 754 single in two registers, high word first.
    F32,
    /// IEEE 754 single in two registers, low word first (many probes).
    F32WordSwapped,
    /// One unsigned register times `scale` (e.g. 0.01 for pH × 100).
    U16 {
        /// Multiplier to the metric's unit.
        scale: f32,
    },
    /// One signed register times `scale`.
    I16 {
        /// Multiplier to the metric's unit.
        scale: f32,
    },
}

impl RegisterFormat {
    fn words(self) -> u16 {
        match self {
            RegisterFormat::F32 | RegisterFormat::F32WordSwapped => 2,
            RegisterFormat::U16 { .. } | RegisterFormat::I16 { .. } => 1,
        }
    }

    fn decode(self, w: &[u16]) -> f32 {
        match self {
            RegisterFormat::F32 => f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1])),
            RegisterFormat::F32WordSwapped => {
                f32::from_bits((u32::from(w[1]) << 16) | u32::from(w[0]))
            }
            RegisterFormat::U16 { scale } => f32::from(w[0]) * scale,
            RegisterFormat::I16 { scale } => f32::from(w[0] as i16) * scale,
        }
    }
}

/// Where the probe keeps one quantity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeRegister {
    /// The metric the value is.
    pub metric: Metric,
    /// Holding or input register.
    pub kind: RegisterKind,
    /// Register address (0-based, as on the wire).
    pub address: u16,
    /// Layout of the value.
    pub format: RegisterFormat,
}

/// Line settings of the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Modbus unit (slave) address, 1–247.
    pub unit: u8,
    /// How long to wait for a complete reply, ms.
    pub reply_timeout_ms: u32,
    /// Silence before a request (RTU's 3.5 characters: about 4 ms at
    /// 9600 baud), µs.
    pub silence_us: u32,
    /// Pause between checks for a waiting byte, µs.
    pub poll_us: u32,
}

impl Default for ProbeConfig {
    /// Unit 1, 9600 baud timings, 500 ms to answer. *Default*, per probe.
    fn default() -> Self {
        ProbeConfig {
            unit: 1,
            reply_timeout_ms: 500,
            silence_us: 4_000,
            poll_us: 500,
        }
    }
}

/// A probe on a serial port.
pub struct ModbusProbe<S, D> {
    port: S,
    delay: D,
    config: ProbeConfig,
}

/// Largest RTU frame.
const FRAME: usize = 256;

impl<S, D> ModbusProbe<S, D>
where
    S: Read + Write + ReadReady,
    D: DelayNs,
{
    /// A probe on `port`.
    pub fn new(port: S, delay: D, config: ProbeConfig) -> Self {
        ModbusProbe {
            port,
            delay,
            config,
        }
    }

    /// Gives the port and the delay back.
    pub fn destroy(self) -> (S, D) {
        (self.port, self.delay)
    }

    /// Reads one quantity, in its metric's unit.
    pub fn read(&mut self, reg: &ProbeRegister) -> Result<f32, Error<S::Error>> {
        let count = reg.format.words();
        let mut req = ModbusRequest::new(self.config.unit, ModbusProto::Rtu);
        let mut frame: Vec<u8, FRAME> = Vec::new();
        let made = match reg.kind {
            RegisterKind::Holding => req.generate_get_holdings(reg.address, count, &mut frame),
            RegisterKind::Input => req.generate_get_inputs(reg.address, count, &mut frame),
        };
        made.map_err(|_| Error::Frame)?;

        self.drain()?;
        self.delay.delay_us(self.config.silence_us);
        self.port.write_all(&frame).map_err(Error::Bus)?;
        self.port.flush().map_err(Error::Bus)?;

        let mut reply = [0u8; FRAME];
        let mut waited_us = 0u32;
        let budget_us = self.config.reply_timeout_ms.saturating_mul(1000);
        // Unit, function, byte count (or exception code): enough to know the
        // frame's length.
        self.read_exact(&mut reply[..3], &mut waited_us, budget_us)?;
        let len = usize::from(
            guess_response_frame_len(&reply[..3], ModbusProto::Rtu).map_err(|_| Error::Frame)?,
        );
        if !(5..=FRAME).contains(&len) {
            return Err(Error::Frame);
        }
        self.read_exact(&mut reply[3..len], &mut waited_us, budget_us)?;
        let reply = &reply[..len];

        // CRC first, then unit and function (an exception is the function
        // with its high bit set), then the byte count: `parse_u16` assumes
        // at least one data byte.
        match req.parse_ok(reply) {
            Ok(()) => {}
            Err(ErrorKind::FrameCRCError) => return Err(Error::Crc),
            Err(_) if reply[0] == self.config.unit && reply[1] & 0x80 != 0 => {
                return Err(Error::Exception(reply[2]))
            }
            Err(_) => return Err(Error::Frame),
        }
        if usize::from(reply[2]) != 2 * usize::from(count) {
            return Err(Error::Frame);
        }
        let mut words: Vec<u16, 2> = Vec::new();
        req.parse_u16(reply, &mut words).map_err(|_| Error::Frame)?;
        if words.len() != usize::from(count) {
            return Err(Error::Frame);
        }
        Ok(reg.format.decode(&words))
    }

    /// Discards bytes left on the line by an earlier, abandoned reply.
    fn drain(&mut self) -> Result<(), Error<S::Error>> {
        let mut sink = [0u8; 16];
        for _ in 0..FRAME / sink.len() {
            if !self.port.read_ready().map_err(Error::Bus)? {
                return Ok(());
            }
            self.port.read(&mut sink).map_err(Error::Bus)?;
        }
        Ok(())
    }

    fn read_exact(
        &mut self,
        buf: &mut [u8],
        waited_us: &mut u32,
        budget_us: u32,
    ) -> Result<(), Error<S::Error>> {
        let mut got = 0;
        while got < buf.len() {
            if self.port.read_ready().map_err(Error::Bus)? {
                let n = self.port.read(&mut buf[got..]).map_err(Error::Bus)?;
                got += n;
                continue;
            }
            if *waited_us >= budget_us {
                return Err(Error::Timeout);
            }
            self.delay.delay_us(self.config.poll_us);
            *waited_us = waited_us.saturating_add(self.config.poll_us);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use std::collections::VecDeque;
    use std::vec;
    use std::vec::Vec as StdVec;

    /// A serial port scripted like `embedded-hal-mock`'s buses: each step is
    /// the exact request expected from the driver, then the bytes the probe
    /// answers (which may be none: a silent probe). Checks at `done` that
    /// every step happened. (`embedded-hal-mock` 0.11 mocks only the
    /// `embedded-hal-nb` serial traits, not `embedded-io`.)
    struct ScriptedPort {
        steps: VecDeque<(StdVec<u8>, StdVec<u8>)>,
        written: StdVec<u8>,
        rx: VecDeque<u8>,
    }

    impl ScriptedPort {
        fn new(steps: &[(StdVec<u8>, StdVec<u8>)]) -> Self {
            ScriptedPort {
                steps: steps.iter().cloned().collect(),
                written: StdVec::new(),
                rx: VecDeque::new(),
            }
        }

        fn done(&self) {
            assert!(self.steps.is_empty(), "steps left: {:?}", self.steps);
            assert!(
                self.written.is_empty(),
                "unexpected bytes: {:?}",
                self.written
            );
        }
    }

    impl embedded_io::ErrorType for ScriptedPort {
        type Error = embedded_io::ErrorKind;
    }

    impl Read for ScriptedPort {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let mut n = 0;
            while n < buf.len() {
                match self.rx.pop_front() {
                    Some(b) => buf[n] = b,
                    None => break,
                }
                n += 1;
            }
            Ok(n)
        }
    }

    impl ReadReady for ScriptedPort {
        fn read_ready(&mut self) -> Result<bool, Self::Error> {
            Ok(!self.rx.is_empty())
        }
    }

    impl Write for ScriptedPort {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> Result<(), Self::Error> {
            let (expect, reply) = self.steps.pop_front().expect("no step left for a request");
            assert_eq!(self.written, expect, "request bytes");
            self.written.clear();
            self.rx.extend(reply);
            Ok(())
        }
    }

    /// CRC16/MODBUS, written out here so the tests do not trust the code under
    /// test for their expected frames.
    fn crc16(bytes: &[u8]) -> u16 {
        let mut crc = 0xFFFFu16;
        for &b in bytes {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xA001
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    fn framed(body: &[u8]) -> StdVec<u8> {
        let mut f = body.to_vec();
        f.extend(crc16(body).to_le_bytes());
        f
    }

    const PH: ProbeRegister = ProbeRegister {
        metric: Metric::Ph,
        kind: RegisterKind::Holding,
        address: 0x0001,
        format: RegisterFormat::F32,
    };

    fn ph_request() -> StdVec<u8> {
        framed(&[0x01, 0x03, 0x00, 0x01, 0x00, 0x02])
    }

    fn probe(steps: &[(StdVec<u8>, StdVec<u8>)]) -> ModbusProbe<ScriptedPort, NoopDelay> {
        ModbusProbe::new(
            ScriptedPort::new(steps),
            NoopDelay::new(),
            ProbeConfig::default(),
        )
    }

    #[test]
    fn the_request_frame_is_the_known_good_one() {
        // Read 2 holding registers at 0x0001 from unit 1: a frame quoted in
        // Modbus tutorials, CRC bytes 0x95 0xCB.
        assert_eq!(
            ph_request(),
            vec![0x01, 0x03, 0x00, 0x01, 0x00, 0x02, 0x95, 0xCB]
        );
    }

    #[test]
    fn a_good_reply_reads_as_the_value() {
        let v = 7.25f32.to_bits().to_be_bytes();
        let reply = framed(&[0x01, 0x03, 0x04, v[0], v[1], v[2], v[3]]);
        let mut p = probe(&[(ph_request(), reply)]);
        assert_eq!(p.read(&PH), Ok(7.25));
        p.destroy().0.done();
    }

    #[test]
    fn scaled_and_word_swapped_registers_decode() {
        let cond = ProbeRegister {
            metric: Metric::Conductivity,
            kind: RegisterKind::Input,
            address: 0x0010,
            format: RegisterFormat::U16 { scale: 0.1 },
        };
        let cl = ProbeRegister {
            metric: Metric::Chlorine,
            kind: RegisterKind::Holding,
            address: 0x0020,
            format: RegisterFormat::F32WordSwapped,
        };
        let b = 0.45f32.to_bits();
        let (hi, lo) = ((b >> 16) as u16, b as u16);
        let steps = [
            (
                framed(&[0x01, 0x04, 0x00, 0x10, 0x00, 0x01]),
                framed(&[0x01, 0x04, 0x02, 0x10, 0x68]),
            ),
            (
                framed(&[0x01, 0x03, 0x00, 0x20, 0x00, 0x02]),
                framed(&[
                    0x01,
                    0x03,
                    0x04,
                    (lo >> 8) as u8,
                    lo as u8,
                    (hi >> 8) as u8,
                    hi as u8,
                ]),
            ),
        ];
        let mut p = probe(&steps);
        assert!((p.read(&cond).unwrap() - 420.0).abs() < 1e-3);
        assert_eq!(p.read(&cl), Ok(0.45));
        p.destroy().0.done();
    }

    #[test]
    fn a_reply_with_a_bad_crc_is_a_crc_error() {
        let v = 7.25f32.to_bits().to_be_bytes();
        let mut reply = framed(&[0x01, 0x03, 0x04, v[0], v[1], v[2], v[3]]);
        let last = reply.len() - 1;
        reply[last] ^= 0xFF;
        let mut p = probe(&[(ph_request(), reply)]);
        assert_eq!(p.read(&PH), Err(Error::Crc));
        p.destroy().0.done();
    }

    #[test]
    fn a_silent_probe_is_a_timeout() {
        let mut p = probe(&[(ph_request(), vec![])]);
        assert_eq!(p.read(&PH), Err(Error::Timeout));
        p.destroy().0.done();
    }

    #[test]
    fn a_reply_cut_short_is_a_timeout() {
        let v = 7.25f32.to_bits().to_be_bytes();
        let mut reply = framed(&[0x01, 0x03, 0x04, v[0], v[1], v[2], v[3]]);
        reply.truncate(5);
        let mut p = probe(&[(ph_request(), reply)]);
        assert_eq!(p.read(&PH), Err(Error::Timeout));
        p.destroy().0.done();
    }

    #[test]
    fn an_exception_response_carries_its_code() {
        // Illegal data address.
        let reply = framed(&[0x01, 0x83, 0x02]);
        let mut p = probe(&[(ph_request(), reply)]);
        assert_eq!(p.read(&PH), Err(Error::Exception(0x02)));
        p.destroy().0.done();
    }

    #[test]
    fn a_reply_from_another_unit_is_a_frame_error() {
        let v = 7.25f32.to_bits().to_be_bytes();
        let reply = framed(&[0x02, 0x03, 0x04, v[0], v[1], v[2], v[3]]);
        let mut p = probe(&[(ph_request(), reply)]);
        assert_eq!(p.read(&PH), Err(Error::Frame));
        p.destroy().0.done();
    }

    #[test]
    fn a_reply_with_the_wrong_byte_count_is_a_frame_error() {
        // One register's worth of data where two were asked for.
        let reply = framed(&[0x01, 0x03, 0x02, 0x40, 0xE8]);
        let mut p = probe(&[(ph_request(), reply)]);
        assert_eq!(p.read(&PH), Err(Error::Frame));
        p.destroy().0.done();
    }

    #[test]
    fn stale_bytes_from_an_abandoned_reply_are_drained_before_a_request() {
        let v = 7.0f32.to_bits().to_be_bytes();
        let good = framed(&[0x01, 0x03, 0x04, v[0], v[1], v[2], v[3]]);
        // The first reply arrives only partly (timeout), its rest later.
        let mut first = good.clone();
        first.truncate(4);
        let mut p = probe(&[(ph_request(), first), (ph_request(), good)]);
        assert_eq!(p.read(&PH), Err(Error::Timeout));
        p.port.rx.extend([0xAA, 0xBB]);
        assert_eq!(p.read(&PH), Ok(7.0));
        p.destroy().0.done();
    }
}
