//! The Modbus probe's RS-485 line as the `embedded-io` port the core's
//! [`apr_firmware::modbus_probe::ModbusProbe`] reads and writes.
//!
//! The HAL's UART speaks `embedded-hal-nb`; this adapter adds what the core
//! needs on top: a blocking `Read`, a `ReadReady` that answers without
//! losing a byte (it keeps the byte it peeked), and the transceiver's
//! driver-enable pin (MAX3485 DE and /RE tied): high while sending, low
//! again once the last stop bit has left the shift register (`flush` waits
//! for transmission complete), so the probe's answer is not missed.

use embedded_hal::digital::OutputPin;
use embedded_hal_nb::serial;

/// An RS-485 half-duplex port on a UART.
pub struct Rs485<S, DE> {
    uart: S,
    de: DE,
    peeked: Option<u8>,
}

/// A UART line error (overrun, framing, noise, parity) or a pin that could
/// not be driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// The UART reported a line error.
    Uart(serial::ErrorKind),
    /// The driver-enable pin failed.
    DriverEnable,
}

impl core::fmt::Display for LineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LineError::Uart(kind) => write!(f, "UART: {kind:?}"),
            LineError::DriverEnable => f.write_str("RS-485 driver enable pin"),
        }
    }
}

impl core::error::Error for LineError {}

impl embedded_io::Error for LineError {
    fn kind(&self) -> embedded_io::ErrorKind {
        embedded_io::ErrorKind::Other
    }
}

impl<S, DE> Rs485<S, DE>
where
    S: serial::Read<u8> + serial::Write<u8>,
    DE: OutputPin,
{
    /// The port on `uart`, receiving (`de` low).
    pub fn new(uart: S, mut de: DE) -> Self {
        let _ = de.set_low();
        Rs485 {
            uart,
            de,
            peeked: None,
        }
    }

    fn try_byte(&mut self) -> Result<Option<u8>, LineError> {
        if let Some(b) = self.peeked.take() {
            return Ok(Some(b));
        }
        match self.uart.read() {
            Ok(b) => Ok(Some(b)),
            Err(nb::Error::WouldBlock) => Ok(None),
            Err(nb::Error::Other(e)) => Err(LineError::Uart(serial::Error::kind(&e))),
        }
    }
}

impl<S, DE> embedded_io::ErrorType for Rs485<S, DE> {
    type Error = LineError;
}

impl<S, DE> embedded_io::Read for Rs485<S, DE>
where
    S: serial::Read<u8> + serial::Write<u8>,
    DE: OutputPin,
{
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LineError> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Block for the first byte (the core asks `read_ready` first), then
        // take what is already there.
        let first = loop {
            if let Some(b) = self.try_byte()? {
                break b;
            }
        };
        buf[0] = first;
        let mut n = 1;
        while n < buf.len() {
            match self.try_byte()? {
                Some(b) => {
                    buf[n] = b;
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }
}

impl<S, DE> embedded_io::ReadReady for Rs485<S, DE>
where
    S: serial::Read<u8> + serial::Write<u8>,
    DE: OutputPin,
{
    fn read_ready(&mut self) -> Result<bool, LineError> {
        if self.peeked.is_some() {
            return Ok(true);
        }
        self.peeked = self.try_byte()?;
        Ok(self.peeked.is_some())
    }
}

impl<S, DE> embedded_io::Write for Rs485<S, DE>
where
    S: serial::Read<u8> + serial::Write<u8>,
    DE: OutputPin,
{
    fn write(&mut self, buf: &[u8]) -> Result<usize, LineError> {
        self.de.set_high().map_err(|_| LineError::DriverEnable)?;
        for &b in buf {
            nb::block!(self.uart.write(b)).map_err(|e| LineError::Uart(serial::Error::kind(&e)))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), LineError> {
        let sent = nb::block!(self.uart.flush());
        self.de.set_low().map_err(|_| LineError::DriverEnable)?;
        sent.map_err(|e| LineError::Uart(serial::Error::kind(&e)))
    }
}
