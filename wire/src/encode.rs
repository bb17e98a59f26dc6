//! SenML JSON encoder into a caller's fixed buffer, for the firmware (no
//! allocator). Records are written whole or not at all: when one does not fit,
//! the buffer is left at the previous record so the pack can still be closed
//! and the record carried into the next pack.
//!
//! The first record carries `bn` = `urn:apr:{apr}:{device}:` and `bt`; later
//! records carry `t` relative to `bt` when it is not zero (CONTRACT §2).

use core::fmt::{self, Write};

use crate::metric::{Metric, ValueKind};

/// Why a pack could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The record (or the closing bracket) does not fit in the buffer.
    Full,
    /// A time or value is NaN or infinite, which JSON cannot carry.
    NotFinite,
    /// A numeric value for a boolean metric or the reverse.
    WrongKind,
    /// `finish` on a pack with no record.
    Empty,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::Full => "pack buffer full",
            EncodeError::NotFinite => "value or time is not finite",
            EncodeError::WrongKind => "value kind does not match the metric",
            EncodeError::Empty => "pack has no record",
        })
    }
}

/// A `fmt::Write` over a byte slice that remembers overflow.
pub struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl<'a> SliceWriter<'a> {
    /// An empty writer over `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceWriter {
            buf,
            len: 0,
            overflow: false,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The written text, or `None` after an overflow.
    pub fn into_str(self) -> Option<&'a str> {
        if self.overflow {
            return None;
        }
        core::str::from_utf8(&self.buf[..self.len]).ok()
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    fn truncate(&mut self, len: usize) {
        self.len = len;
        self.overflow = false;
    }
}

impl Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if self.overflow || end > self.buf.len() {
            self.overflow = true;
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Encodes one SenML pack for `apr/{apr}/{device}/up`.
pub struct PackEncoder<'a> {
    w: SliceWriter<'a>,
    apr: &'a str,
    device: &'a str,
    bt: f64,
    records: usize,
}

impl<'a> PackEncoder<'a> {
    /// Starts a pack with base time `bt` (seconds since the Unix epoch, unique
    /// per device and pack: it is the pack's name on the `ack` topic).
    pub fn new(
        buf: &'a mut [u8],
        apr: &'a str,
        device: &'a str,
        bt: f64,
    ) -> Result<Self, EncodeError> {
        if !bt.is_finite() {
            return Err(EncodeError::NotFinite);
        }
        let mut w = SliceWriter::new(buf);
        w.write_str("[").map_err(|_| EncodeError::Full)?;
        Ok(PackEncoder {
            w,
            apr,
            device,
            bt,
            records: 0,
        })
    }

    /// Records written so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// The pack's base time.
    pub fn base_time(&self) -> f64 {
        self.bt
    }

    /// Adds a numeric reading taken `t` seconds after the base time.
    pub fn number(&mut self, metric: Metric, t: f64, v: f64) -> Result<(), EncodeError> {
        if metric.kind() != ValueKind::Number {
            return Err(EncodeError::WrongKind);
        }
        if !v.is_finite() {
            return Err(EncodeError::NotFinite);
        }
        self.record(metric, t, |w| write!(w, ",\"v\":{v}"))
    }

    /// Adds a boolean reading (the pump state) taken `t` seconds after base time.
    pub fn boolean(&mut self, metric: Metric, t: f64, vb: bool) -> Result<(), EncodeError> {
        if metric.kind() != ValueKind::Boolean {
            return Err(EncodeError::WrongKind);
        }
        self.record(metric, t, |w| write!(w, ",\"vb\":{vb}"))
    }

    fn record(
        &mut self,
        metric: Metric,
        t: f64,
        value: impl FnOnce(&mut SliceWriter<'a>) -> fmt::Result,
    ) -> Result<(), EncodeError> {
        if !t.is_finite() {
            return Err(EncodeError::NotFinite);
        }
        let mark = self.w.len();
        let res = (|| -> fmt::Result {
            let w = &mut self.w;
            if self.records > 0 {
                w.write_str(",")?;
            }
            w.write_str("{")?;
            if self.records == 0 {
                write!(
                    w,
                    "\"bn\":\"urn:apr:{}:{}:\",\"bt\":{},",
                    self.apr, self.device, self.bt
                )?;
            }
            write!(w, "\"n\":\"{}\"", metric.name())?;
            if let Some(u) = metric.unit() {
                write!(w, ",\"u\":\"{u}\"")?;
            }
            if t != 0.0 {
                write!(w, ",\"t\":{t}")?;
            }
            value(w)?;
            w.write_str("}")?;
            // Keep one byte for the closing bracket.
            if w.remaining() < 1 {
                return Err(fmt::Error);
            }
            Ok(())
        })();
        match res {
            Ok(()) => {
                self.records += 1;
                Ok(())
            }
            Err(_) => {
                self.w.truncate(mark);
                Err(EncodeError::Full)
            }
        }
    }

    /// Closes the pack, returning its length in the buffer. One byte is always
    /// kept free for the closing bracket by refusing records that would take it.
    pub fn finish(mut self) -> Result<usize, EncodeError> {
        if self.records == 0 {
            return Err(EncodeError::Empty);
        }
        self.w.write_str("]").map_err(|_| EncodeError::Full)?;
        Ok(self.w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_contract_example_shape() {
        let mut buf = [0u8; 512];
        let mut p = PackEncoder::new(&mut buf, "a1", "d1", 1764064800.0).unwrap();
        p.number(Metric::Chlorine, 0.0, 0.12).unwrap();
        p.number(Metric::Turbidity, 0.0, 0.8).unwrap();
        p.boolean(Metric::Pump, 60.0, true).unwrap();
        let n = p.finish().unwrap();
        let s = core::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(
            s,
            "[{\"bn\":\"urn:apr:a1:d1:\",\"bt\":1764064800,\"n\":\"chlorine\",\"u\":\"mg/l\",\"v\":0.12},\
             {\"n\":\"turbidity\",\"u\":\"NTU\",\"v\":0.8},{\"n\":\"pump\",\"t\":60,\"vb\":true}]"
        );
    }

    #[test]
    fn a_record_that_does_not_fit_leaves_the_pack_closable() {
        let mut buf = [0u8; 120];
        let mut p = PackEncoder::new(&mut buf, "a1", "d1", 1.5).unwrap();
        p.number(Metric::Flow, 0.0, 2.0).unwrap();
        let mut refused = 0;
        for i in 0..10 {
            if p.number(Metric::Flow, f64::from(i), 2.0) == Err(EncodeError::Full) {
                refused += 1;
            }
        }
        assert!(refused > 0);
        let kept = p.records();
        let n = p.finish().unwrap();
        let s = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(s.ends_with("}]"));
        assert_eq!(s.matches("\"n\"").count(), kept);
    }

    #[test]
    fn refuses_non_finite_and_wrong_kinds() {
        let mut buf = [0u8; 256];
        let mut p = PackEncoder::new(&mut buf, "a", "d", 1.0).unwrap();
        assert_eq!(
            p.number(Metric::Flow, 0.0, f64::NAN),
            Err(EncodeError::NotFinite)
        );
        assert_eq!(
            p.number(Metric::Pump, 0.0, 1.0),
            Err(EncodeError::WrongKind)
        );
        assert_eq!(
            p.boolean(Metric::Flow, 0.0, true),
            Err(EncodeError::WrongKind)
        );
        assert_eq!(p.finish(), Err(EncodeError::Empty));
    }
}
