//! End-to-end acknowledgment (CONTRACT §2): once the server has durably
//! stored a batch, each device whose packs were in it gets one message on
//! `apr/{apr}/{device}/ack`, a JSON array of those packs' `bt` values.
//!
//! Every pack with a `bt` is acknowledged, including packs refused whole
//! (malformed, spoofed, ...): they were dealt with (quarantined), and a device
//! must not resend junk forever. Packs without a `bt` cannot be named and are
//! not acknowledged.

use std::collections::HashMap;
use std::fmt::Write as _;

use apr_wire::ingest::IngestPack;
use apr_wire::topic::{topic, Channel};
use bytes::Bytes;

/// One `ack` message for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceAck {
    /// `apr/{apr}/{device}/ack`.
    pub topic: String,
    /// The `bt` values, ascending, without duplicates.
    pub bts: Vec<f64>,
}

impl DeviceAck {
    /// The JSON array payload. Integral `bt`s are written as integers
    /// (`1764064800`, not `1764064800.0`) so they read back exactly as a
    /// device wrote them; others in the shortest form that round-trips.
    pub fn payload(&self) -> Bytes {
        let mut s = String::with_capacity(2 + self.bts.len() * 18);
        s.push('[');
        for (i, bt) in self.bts.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            write_bt(&mut s, *bt);
        }
        s.push(']');
        Bytes::from(s)
    }
}

/// Largest integer an `f64` holds exactly.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;

fn write_bt(out: &mut String, bt: f64) {
    if bt.fract() == 0.0 && bt.abs() < EXACT_INTEGER_LIMIT {
        #[allow(clippy::cast_possible_truncation)]
        let whole = bt as i64;
        let _ = write!(out, "{whole}");
    } else {
        out.push_str(
            &serde_json::Number::from_f64(bt).map_or_else(|| "null".into(), |n| n.to_string()),
        );
    }
}

/// Groups the packs of an acknowledged batch into one [`DeviceAck`] per
/// device, in order of first appearance.
pub fn group_acks(packs: &[IngestPack]) -> Vec<DeviceAck> {
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut acks: Vec<DeviceAck> = Vec::new();
    for p in packs {
        let Some(bt) = p.bt.filter(|bt| bt.is_finite()) else {
            continue;
        };
        let i = *index.entry((&p.apr, &p.device)).or_insert_with(|| {
            acks.push(DeviceAck {
                topic: topic(&p.apr, &p.device, Channel::Ack),
                bts: Vec::new(),
            });
            acks.len() - 1
        });
        acks[i].bts.push(bt);
    }
    for a in &mut acks {
        a.bts.sort_by(f64::total_cmp);
        a.bts.dedup();
    }
    acks
}

#[cfg(test)]
mod tests {
    use super::*;
    use apr_wire::validate::{Refusal, RefusalReason};

    fn pack(apr: &str, device: &str, bt: Option<f64>) -> IngestPack {
        IngestPack {
            apr: apr.into(),
            device: device.into(),
            bt,
            received_ms: 0,
            readings: vec![],
            refusals: vec![],
            raw: None,
        }
    }

    #[test]
    fn acks_are_grouped_per_device_in_order_of_appearance() {
        let packs = [
            pack("a1", "d1", Some(30.0)),
            pack("a1", "d2", Some(10.0)),
            pack("a1", "d1", Some(20.0)),
            pack("a2", "d1", Some(5.0)),
        ];
        let acks = group_acks(&packs);
        assert_eq!(acks.len(), 3);
        assert_eq!(acks[0].topic, "apr/a1/d1/ack");
        assert_eq!(acks[0].bts, [20.0, 30.0]);
        assert_eq!(acks[1].topic, "apr/a1/d2/ack");
        assert_eq!(acks[2].topic, "apr/a2/d1/ack");
    }

    #[test]
    fn packs_without_bt_are_not_acked_and_repeats_are_named_once() {
        let mut refused = pack("a1", "d1", Some(7.0));
        refused.refusals.push(Refusal {
            reason: RefusalReason::SpoofedBn,
            record: None,
            detail: "x".into(),
        });
        let packs = [
            pack("a1", "d1", None),
            refused,
            pack("a1", "d1", Some(7.0)),
            pack("a1", "d3", None),
        ];
        let acks = group_acks(&packs);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].bts, [7.0]);
    }

    #[test]
    fn the_payload_writes_integral_bts_as_integers() {
        let a = DeviceAck {
            topic: "t".into(),
            bts: vec![1_764_064_800.0, 1_764_064_800.25],
        };
        assert_eq!(&a.payload()[..], b"[1764064800,1764064800.25]");
        let parsed: Vec<f64> = serde_json::from_slice(&a.payload()).unwrap();
        assert_eq!(parsed, a.bts);
        assert_eq!(
            &DeviceAck {
                topic: "t".into(),
                bts: vec![]
            }
            .payload()[..],
            b"[]"
        );
    }
}
