//! The crate's error type, generic over the error of the I/O seam that failed
//! (I2C bus, serial port, input pin, flash), after eldruin's `ads1x1x`.

use core::fmt;

use crate::analog::LoopFault;

/// Why a driver or the outbox could not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The I/O seam failed: I2C bus, serial port, input pin or flash.
    Bus(E),
    /// No complete answer before the deadline (ADC conversion, Modbus reply).
    Timeout,
    /// A Modbus reply whose CRC16 does not match its bytes.
    Crc,
    /// The Modbus probe answered with an exception response (the code).
    Exception(u8),
    /// A Modbus reply that is well formed but not the answer asked for
    /// (another unit, another function, a wrong byte count).
    Frame,
    /// A 4–20 mA loop current outside NAMUR NE 43's valid band: a sensor
    /// fault, never a value.
    SensorFault(LoopFault),
    /// A pack larger than an outbox record can hold.
    PackTooLarge,
    /// The outbox region does not fit the flash: not sector aligned, fewer
    /// than two sectors, or a write size the outbox does not support.
    FlashLayout,
    /// Bytes read back after a flash write differ from what was written.
    Verify,
}

impl<E> From<LoopFault> for Error<E> {
    fn from(f: LoopFault) -> Self {
        Error::SensorFault(f)
    }
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bus(e) => write!(f, "bus error: {e:?}"),
            Error::Timeout => f.write_str("no answer before the deadline"),
            Error::Crc => f.write_str("reply failed its CRC"),
            Error::Exception(c) => write!(f, "Modbus exception {c:#04x}"),
            Error::Frame => f.write_str("reply is not the answer asked for"),
            Error::SensorFault(fault) => write!(f, "sensor fault: {fault}"),
            Error::PackTooLarge => f.write_str("pack larger than an outbox record"),
            Error::FlashLayout => f.write_str("outbox region does not fit the flash"),
            Error::Verify => f.write_str("flash read-back differs from what was written"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}
