//! Encoding a report interval's readings into SenML packs.
//!
//! A device reports every interval; when the readings do not fit one pack
//! buffer they continue in the next pack. Every pack gets a base time unique
//! for the device (`bt` names the pack on the `ack` topic, CONTRACT §2): the
//! first sample's time, nudged forward by a millisecond when it would repeat the
//! previous pack's.

use apr_wire::encode::{EncodeError, PackEncoder};
use apr_wire::Metric;

use crate::identity::Identity;

/// `x` seconds rounded to the millisecond, half away from zero (`f64::round`
/// is not in `core`). Times beyond ±2^53 ms are returned as they are.
pub(crate) fn round_ms(x: f64) -> f64 {
    let ms = x * 1000.0;
    if !ms.is_finite() || ms.abs() >= 9.0e15 {
        return x;
    }
    let whole = ms as i64;
    let frac = ms - whole as f64;
    let r = if frac >= 0.5 {
        whole + 1
    } else if frac <= -0.5 {
        whole - 1
    } else {
        whole
    };
    r as f64 / 1000.0
}

/// A measured value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleValue {
    /// A numeric value in the metric's unit.
    Number(f64),
    /// A boolean state (pump running).
    Boolean(bool),
}

/// One reading to report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// What was measured.
    pub metric: Metric,
    /// When, seconds since the Unix epoch.
    pub time: f64,
    /// The value.
    pub value: SampleValue,
}

/// Why a report could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportError {
    /// A single sample does not fit an empty pack buffer.
    BufferTooSmall,
    /// A sample is malformed (not finite, wrong kind for its metric).
    Sample(EncodeError),
}

/// Splits samples into packs for one device.
pub struct Report<'a> {
    id: Identity<'a>,
    last_bt: f64,
}

impl<'a> Report<'a> {
    /// A reporter for `id`; `last_bt` is the base time of the last pack this
    /// device sent (0 after a clean start; restored from the outbox otherwise).
    pub fn new(id: Identity<'a>, last_bt: f64) -> Self {
        Report { id, last_bt }
    }

    /// The base time of the last pack encoded.
    pub fn last_bt(&self) -> f64 {
        self.last_bt
    }

    /// Encodes as many of `samples` as fit in `buf` as one pack. Returns the
    /// pack's length, its `bt` and how many samples it holds; call again with
    /// the rest. `samples` must be non-empty.
    pub fn next_pack(
        &mut self,
        buf: &mut [u8],
        samples: &[Sample],
    ) -> Result<(usize, f64, usize), ReportError> {
        let Some(first) = samples.first() else {
            return Err(ReportError::Sample(EncodeError::Empty));
        };
        let mut bt = round_ms(first.time);
        if bt <= self.last_bt {
            bt = self.last_bt + 0.001;
        }
        let mut pack = PackEncoder::new(buf, self.id.apr(), self.id.device(), bt)
            .map_err(|_| ReportError::BufferTooSmall)?;
        let mut taken = 0;
        for s in samples {
            let t = round_ms(s.time - bt);
            let res = match s.value {
                SampleValue::Number(v) => pack.number(s.metric, t, v),
                SampleValue::Boolean(b) => pack.boolean(s.metric, t, b),
            };
            match res {
                Ok(()) => taken += 1,
                Err(EncodeError::Full) if taken > 0 => break,
                Err(EncodeError::Full) => return Err(ReportError::BufferTooSmall),
                Err(e) => return Err(ReportError::Sample(e)),
            }
        }
        let len = pack.finish().map_err(ReportError::Sample)?;
        self.last_bt = bt;
        Ok((len, bt, taken))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(n: usize) -> [Sample; 32] {
        let mut out = [Sample {
            metric: Metric::Flow,
            time: 1_764_064_800.0,
            value: SampleValue::Number(1.0),
        }; 32];
        for (i, s) in out.iter_mut().enumerate().take(n) {
            s.time += 60.0 * i as f64;
        }
        out
    }

    #[test]
    fn splits_readings_over_packs_with_unique_base_times() {
        let id = Identity::new("a", "d").unwrap();
        let mut r = Report::new(id, 0.0);
        let all = samples(32);
        let mut buf = [0u8; 256];
        let mut done = 0;
        let mut bts = [0.0f64; 32];
        let mut packs = 0;
        while done < all.len() {
            let (_len, bt, n) = r.next_pack(&mut buf, &all[done..]).unwrap();
            assert!(n > 0);
            bts[packs] = bt;
            packs += 1;
            done += n;
        }
        assert!(packs > 1);
        for w in bts[..packs].windows(2) {
            assert!(w[1] > w[0]);
        }
    }

    #[test]
    fn a_repeated_first_time_still_gets_a_new_base_time() {
        let id = Identity::new("a", "d").unwrap();
        let mut r = Report::new(id, 0.0);
        let s = samples(1);
        let mut buf = [0u8; 256];
        let (_, bt1, _) = r.next_pack(&mut buf, &s[..1]).unwrap();
        let (_, bt2, _) = r.next_pack(&mut buf, &s[..1]).unwrap();
        assert!(bt2 > bt1);
        assert_eq!(r.last_bt(), bt2);
    }

    #[test]
    fn times_round_to_the_millisecond_half_away_from_zero() {
        assert_eq!(round_ms(1_764_064_800.123_4), 1_764_064_800.123);
        assert_eq!(round_ms(1_764_064_800.123_6), 1_764_064_800.124);
        assert_eq!(round_ms(-0.0016), -0.002);
        assert_eq!(round_ms(60.0), 60.0);
        assert!(round_ms(f64::NAN).is_nan());
    }

    #[test]
    fn a_buffer_too_small_for_one_sample_is_an_error() {
        let id = Identity::new("a", "d").unwrap();
        let mut r = Report::new(id, 0.0);
        let mut buf = [0u8; 16];
        assert_eq!(
            r.next_pack(&mut buf, &samples(1)[..1]),
            Err(ReportError::BufferTooSmall)
        );
    }
}
