//! 4–20 mA instruments (chlorine, turbidity, pressure, tank level) read
//! through an external ADS1115 ADC on I2C, with `ads1x1x`.
//!
//! The path of one reading: the loop current flows through a shunt resistor
//! ([`FrontEnd`]); the ADC measures the voltage across it single-ended; volts
//! over ohms give milliamps; [`check_loop`] applies NAMUR NE 43 (below 3.6 mA or
//! above 21 mA is a sensor fault, reported as [`Error::SensorFault`] and never
//! as a value); a per-channel two-point [`Calibration`] turns milliamps into
//! the metric's engineering unit.
//!
//! The conversion math is pure; [`LoopAdc`] is the thin driver around the
//! ADC. One-shot conversions are polled with a [`DelayNs`] and a bounded number
//! of polls, so a stuck converter is an [`Error::Timeout`], not a hang.

use core::fmt;

use ads1x1x::{channel, ic, mode, Ads1x1x, FullScaleRange, TargetAddr};
use apr_wire::Metric;
use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use crate::domain::{NAMUR_FAULT_ABOVE_MA, NAMUR_FAULT_BELOW_MA};
use crate::error::Error;

/// A loop current NAMUR NE 43 calls a fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoopFault {
    /// Below 3.6 mA: open loop, broken wire, transmitter without power.
    Low {
        /// The measured current, mA.
        ma: f32,
    },
    /// Above 21 mA: short circuit or transmitter failure signal.
    High {
        /// The measured current, mA.
        ma: f32,
    },
}

// NaN never reaches a `LoopFault` (it is classified as `Low`), so the float
// fields compare reflexively.
impl Eq for LoopFault {}

impl fmt::Display for LoopFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoopFault::Low { ma } => write!(f, "loop current {ma:.2} mA below 3.6 mA"),
            LoopFault::High { ma } => write!(f, "loop current {ma:.2} mA above 21 mA"),
        }
    }
}

/// NAMUR NE 43: the current when it is a measurement, the fault otherwise.
/// Not-a-number (a broken conversion) is a low fault.
pub fn check_loop(ma: f32) -> Result<f32, LoopFault> {
    if ma.is_nan() || ma < NAMUR_FAULT_BELOW_MA {
        Err(LoopFault::Low {
            ma: if ma.is_nan() { 0.0 } else { ma },
        })
    } else if ma > NAMUR_FAULT_ABOVE_MA {
        Err(LoopFault::High { ma })
    } else {
        Ok(ma)
    }
}

/// Two-point linear calibration from loop milliamps to a metric's unit:
/// usually 4 mA → range low and 20 mA → range high, adjusted against field
/// checks (a DPD chlorine test, a tank dip).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    ma: (f32, f32),
    value: (f32, f32),
}

/// Why calibration points were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationError {
    /// A point is NaN or infinite.
    NotFinite,
    /// The two points have the same current: no line through them.
    PointsNotDistinct,
    /// A point's current lies outside the NAMUR valid band (3.6–21 mA).
    CurrentOutOfBand,
}

impl fmt::Display for CalibrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CalibrationError::NotFinite => "calibration point is not a finite number",
            CalibrationError::PointsNotDistinct => "calibration points have the same current",
            CalibrationError::CurrentOutOfBand => "calibration current outside 3.6-21 mA",
        })
    }
}

impl Calibration {
    /// The line through `(ma, value)` points `p1` and `p2`.
    pub fn new(p1: (f32, f32), p2: (f32, f32)) -> Result<Self, CalibrationError> {
        let all = [p1.0, p1.1, p2.0, p2.1];
        if all.iter().any(|v| !v.is_finite()) {
            return Err(CalibrationError::NotFinite);
        }
        if (p1.0 - p2.0).abs() < 0.01 {
            return Err(CalibrationError::PointsNotDistinct);
        }
        let band = NAMUR_FAULT_BELOW_MA..=NAMUR_FAULT_ABOVE_MA;
        if !band.contains(&p1.0) || !band.contains(&p2.0) {
            return Err(CalibrationError::CurrentOutOfBand);
        }
        Ok(Calibration {
            ma: (p1.0, p2.0),
            value: (p1.1, p2.1),
        })
    }

    /// The standard span: 4 mA → `low`, 20 mA → `high`.
    pub fn span(low: f32, high: f32) -> Result<Self, CalibrationError> {
        Calibration::new((4.0, low), (20.0, high))
    }

    /// The two points, `(ma, value)`.
    pub fn points(&self) -> [(f32, f32); 2] {
        [(self.ma.0, self.value.0), (self.ma.1, self.value.1)]
    }

    /// The value for a loop current.
    pub fn apply(&self, ma: f32) -> f32 {
        let slope = (self.value.1 - self.value.0) / (self.ma.1 - self.ma.0);
        self.value.0 + (ma - self.ma.0) * slope
    }

    /// The factory span of each 4–20 mA metric, used until the site
    /// configures its own (*default*, per instrument model): chlorine
    /// 0–5 mg/l, turbidity 0–100 NTU, pressure 0–100 m.c.a., tank 0–100 %.
    pub fn default_for(metric: Metric) -> Option<Self> {
        let (lo, hi) = match metric {
            Metric::Chlorine => (0.0, 5.0),
            Metric::Turbidity => (0.0, 100.0),
            Metric::Pressure => (0.0, 100.0),
            Metric::TankLevel => (0.0, 100.0),
            _ => return None,
        };
        Calibration::span(lo, hi).ok()
    }
}

/// The 4–20 mA metrics, in the order the configuration and the
/// [`crate::config::Settings`] keep their calibrations.
pub const LOOP_METRICS: [Metric; 4] = [
    Metric::Chlorine,
    Metric::Turbidity,
    Metric::Pressure,
    Metric::TankLevel,
];

/// One of the ADC's four single-ended inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdcInput {
    /// AIN0.
    A0,
    /// AIN1.
    A1,
    /// AIN2.
    A2,
    /// AIN3.
    A3,
}

/// The analogue front end: shunt resistor and ADC gain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrontEnd {
    /// Shunt resistance, ohms.
    pub shunt_ohms: f32,
    /// ADC full-scale range; the shunt voltage at 21 mA must stay inside it.
    pub range: FullScaleRange,
}

impl Default for FrontEnd {
    /// 150 Ω and ±4.096 V: 21 mA gives 3.15 V, inside both the range and a
    /// 3.3 V supply. *Default*, per board.
    fn default() -> Self {
        FrontEnd {
            shunt_ohms: 150.0,
            range: FullScaleRange::Within4_096V,
        }
    }
}

impl FrontEnd {
    /// Loop current in mA for a raw 16-bit ADC reading.
    pub fn milliamps(&self, raw: i16) -> f32 {
        let full_scale_v = match self.range {
            FullScaleRange::Within6_144V => 6.144,
            FullScaleRange::Within4_096V => 4.096,
            FullScaleRange::Within2_048V => 2.048,
            FullScaleRange::Within1_024V => 1.024,
            FullScaleRange::Within0_512V => 0.512,
            FullScaleRange::Within0_256V => 0.256,
        };
        let volts = f32::from(raw) * full_scale_v / 32768.0;
        volts / self.shunt_ohms * 1000.0
    }
}

/// One instrument on the ADC: which input, what it measures, how to
/// calibrate it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoopChannel {
    /// ADC input.
    pub input: AdcInput,
    /// The metric it measures.
    pub metric: Metric,
    /// mA → engineering unit.
    pub calibration: Calibration,
}

type Adc<I2C> = Ads1x1x<I2C, ic::Ads1115, ic::Resolution16Bit, mode::OneShot>;

/// The 4–20 mA ADC driver: an ADS1115 in one-shot mode behind `front_end`.
pub struct LoopAdc<I2C, D> {
    adc: Adc<I2C>,
    delay: D,
    front_end: FrontEnd,
    max_polls: u16,
}

/// Milliseconds between conversion-ready polls.
const POLL_MS: u32 = 1;

impl<I2C: I2c, D: DelayNs> LoopAdc<I2C, D> {
    /// Sets the ADC's gain for `front_end` (one register write). A conversion
    /// not ready after 50 polls of 1 ms (at 128 SPS it takes 8 ms) is a
    /// timeout.
    pub fn new(
        i2c: I2C,
        address: TargetAddr,
        delay: D,
        front_end: FrontEnd,
    ) -> Result<Self, Error<I2C::Error>> {
        let mut adc = Ads1x1x::new_ads1115(i2c, address);
        adc.set_full_scale_range(front_end.range)
            .map_err(ads_error)?;
        Ok(LoopAdc {
            adc,
            delay,
            front_end,
            max_polls: 50,
        })
    }

    /// Gives the bus and the delay back.
    pub fn destroy(self) -> (I2C, D) {
        (self.adc.destroy_ads1115(), self.delay)
    }

    /// The loop current on `input`, mA, without the NAMUR check.
    pub fn read_milliamps(&mut self, input: AdcInput) -> Result<f32, Error<I2C::Error>> {
        let mut polls = 0u16;
        loop {
            let res = match input {
                AdcInput::A0 => self.adc.read(channel::SingleA0),
                AdcInput::A1 => self.adc.read(channel::SingleA1),
                AdcInput::A2 => self.adc.read(channel::SingleA2),
                AdcInput::A3 => self.adc.read(channel::SingleA3),
            };
            match res {
                Ok(raw) => return Ok(self.front_end.milliamps(raw)),
                Err(nb::Error::Other(e)) => return Err(ads_error(e)),
                Err(nb::Error::WouldBlock) if polls >= self.max_polls => {
                    return Err(Error::Timeout)
                }
                Err(nb::Error::WouldBlock) => {
                    polls += 1;
                    self.delay.delay_ms(POLL_MS);
                }
            }
        }
    }

    /// The channel's value in its metric's unit, or the sensor fault.
    pub fn measure(&mut self, ch: &LoopChannel) -> Result<f32, Error<I2C::Error>> {
        let ma = check_loop(self.read_milliamps(ch.input)?)?;
        Ok(ch.calibration.apply(ma))
    }
}

fn ads_error<E>(e: ads1x1x::Error<E>) -> Error<E> {
    match e {
        ads1x1x::Error::I2C(e) => Error::Bus(e),
        // Only threshold setters refuse input data; none is used here.
        ads1x1x::Error::InvalidInputData => Error::Frame,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as I2cTrans};
    use std::vec;
    use std::vec::Vec;

    const ADDR: u8 = 0b100_1000;
    const CONFIG: u8 = 0x01;
    const CONVERSION: u8 = 0x00;
    /// Power-on config 0x8583 with the gain set to ±4.096 V (PGA = 001).
    const CFG_4V: u16 = 0x8383;
    const OS: u16 = 0x8000;
    /// Single-ended AIN0 (MUX = 100).
    const MUX_A0: u16 = 0x4000;

    fn be(v: u16) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    /// The exact bus traffic of a one-shot read of AIN0 returning `raw`:
    /// busy check, start conversion, one not-ready poll, ready poll, result.
    fn read_a0(raw: i16) -> Vec<I2cTrans> {
        let cfg = (CFG_4V & !0x7000) | MUX_A0;
        let mut w = vec![CONFIG];
        w.extend(be(cfg | OS));
        vec![
            I2cTrans::write_read(ADDR, vec![CONFIG], be(CFG_4V)),
            I2cTrans::write(ADDR, w),
            I2cTrans::write_read(ADDR, vec![CONFIG], be(cfg & !OS)),
            I2cTrans::write_read(ADDR, vec![CONFIG], be(cfg | OS)),
            I2cTrans::write_read(ADDR, vec![CONVERSION], be(raw as u16)),
        ]
    }

    fn setup(reads: Vec<I2cTrans>) -> LoopAdc<I2cMock, NoopDelay> {
        let mut all = vec![I2cTrans::write(ADDR, {
            let mut w = vec![CONFIG];
            w.extend(be(CFG_4V));
            w
        })];
        all.extend(reads);
        LoopAdc::new(
            I2cMock::new(&all),
            TargetAddr::default(),
            NoopDelay::new(),
            FrontEnd::default(),
        )
        .unwrap()
    }

    /// The raw count for `ma` through 150 Ω at ±4.096 V.
    fn raw_for(ma: f32) -> i16 {
        (ma / 1000.0 * 150.0 / 4.096 * 32768.0).round() as i16
    }

    fn chlorine() -> LoopChannel {
        LoopChannel {
            input: AdcInput::A0,
            metric: Metric::Chlorine,
            calibration: Calibration::span(0.0, 5.0).unwrap(),
        }
    }

    #[test]
    fn a_12_ma_loop_reads_as_mid_span_chlorine() {
        let mut adc = setup(read_a0(raw_for(12.0)));
        let v = adc.measure(&chlorine()).unwrap();
        assert!((v - 2.5).abs() < 0.002, "{v}");
        adc.destroy().0.done();
    }

    #[test]
    fn an_open_loop_below_3_6_ma_is_a_sensor_fault_not_a_value() {
        let mut adc = setup(read_a0(raw_for(3.5)));
        match adc.measure(&chlorine()) {
            Err(Error::SensorFault(LoopFault::Low { ma })) => assert!((ma - 3.5).abs() < 0.01),
            other => panic!("{other:?}"),
        }
        adc.destroy().0.done();
    }

    #[test]
    fn a_negative_reading_from_a_broken_wire_is_a_low_fault() {
        let mut adc = setup(read_a0(-12));
        assert!(matches!(
            adc.measure(&chlorine()),
            Err(Error::SensorFault(LoopFault::Low { .. }))
        ));
        adc.destroy().0.done();
    }

    #[test]
    fn a_loop_above_21_ma_is_a_sensor_fault_not_a_value() {
        let mut adc = setup(read_a0(raw_for(21.5)));
        assert!(matches!(
            adc.measure(&chlorine()),
            Err(Error::SensorFault(LoopFault::High { .. }))
        ));
        adc.destroy().0.done();
    }

    #[test]
    fn an_i2c_error_is_a_bus_error() {
        let mut t = read_a0(raw_for(12.0));
        t.truncate(1);
        t[0] = I2cTrans::write_read(ADDR, vec![CONFIG], be(CFG_4V)).with_error(
            ErrorKind::NoAcknowledge(embedded_hal::i2c::NoAcknowledgeSource::Address),
        );
        let mut adc = setup(t);
        assert!(matches!(adc.measure(&chlorine()), Err(Error::Bus(_))));
        adc.destroy().0.done();
    }

    #[test]
    fn a_conversion_that_never_completes_is_a_timeout() {
        let cfg = (CFG_4V & !0x7000) | MUX_A0;
        let mut t = read_a0(0);
        t.truncate(2);
        for _ in 0..50 {
            t.push(I2cTrans::write_read(ADDR, vec![CONFIG], be(cfg & !OS)));
        }
        let mut adc = setup(t);
        assert_eq!(adc.measure(&chlorine()), Err(Error::Timeout));
        adc.destroy().0.done();
    }

    #[test]
    fn namur_limits_are_inclusive_of_the_valid_band() {
        assert_eq!(check_loop(3.6), Ok(3.6));
        assert_eq!(check_loop(21.0), Ok(21.0));
        assert!(check_loop(3.59).is_err());
        assert!(check_loop(21.01).is_err());
        assert!(check_loop(f32::NAN).is_err());
    }

    #[test]
    fn two_point_calibration_is_the_line_through_its_points() {
        let c = Calibration::new((5.0, 0.2), (15.0, 1.2)).unwrap();
        assert!((c.apply(10.0) - 0.7).abs() < 1e-6);
        assert!((c.apply(4.0) - 0.1).abs() < 1e-6);
        assert_eq!(
            Calibration::new((8.0, 0.0), (8.0, 1.0)),
            Err(CalibrationError::PointsNotDistinct)
        );
        assert_eq!(
            Calibration::new((0.0, 0.0), (20.0, 1.0)),
            Err(CalibrationError::CurrentOutOfBand)
        );
        assert_eq!(
            Calibration::new((4.0, f32::INFINITY), (20.0, 1.0)),
            Err(CalibrationError::NotFinite)
        );
    }
}
