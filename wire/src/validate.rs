//! Validation of one pack received on `apr/{apr}/{device}/up`, as a pure
//! function: payload + context → accepted readings + refusals.
//!
//! Bad input never stops the pipeline and is never silently dropped (CONTRACT
//! §2). A whole-pack fault (malformed, oversized, spoofed `bn`) refuses every
//! record; a record fault (unknown metric, wrong unit, out of range, time too far
//! in the future, no usable value) refuses that record and keeps the others.

use serde::{Deserialize, Serialize};

use crate::decode::{decode_pack, RecordValue};
use crate::metric::{Metric, ValueKind};
use crate::MAX_PACK_BYTES;

/// Why a pack or a record was refused. The `code` is the `reason` label of the
/// refusal counters in `/metrics` and the quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Not a SenML pack in JSON or CBOR.
    Malformed,
    /// Larger than [`MAX_PACK_BYTES`].
    Oversized,
    /// `bn` names another APR or device than the topic.
    SpoofedBn,
    /// `n` is not a metric of the table.
    UnknownMetric,
    /// `u` is not the metric's unit exactly as written in the table.
    WrongUnit,
    /// The value lies outside the metric's physically possible range.
    OutOfRange,
    /// The time is further in the future than the configured tolerance.
    FutureTime,
    /// The record has no value of the metric's kind (`v` or `vb`).
    MissingValue,
    /// The topic is not a device topic (gateway) or not the device's own (broker gate).
    TopicDenied,
}

impl RefusalReason {
    /// Every reason, for exporting zeroed counters.
    pub const ALL: [RefusalReason; 9] = [
        RefusalReason::Malformed,
        RefusalReason::Oversized,
        RefusalReason::SpoofedBn,
        RefusalReason::UnknownMetric,
        RefusalReason::WrongUnit,
        RefusalReason::OutOfRange,
        RefusalReason::FutureTime,
        RefusalReason::MissingValue,
        RefusalReason::TopicDenied,
    ];

    /// Stable snake_case code.
    pub const fn code(self) -> &'static str {
        match self {
            RefusalReason::Malformed => "malformed",
            RefusalReason::Oversized => "oversized",
            RefusalReason::SpoofedBn => "spoofed_bn",
            RefusalReason::UnknownMetric => "unknown_metric",
            RefusalReason::WrongUnit => "wrong_unit",
            RefusalReason::OutOfRange => "out_of_range",
            RefusalReason::FutureTime => "future_time",
            RefusalReason::MissingValue => "missing_value",
            RefusalReason::TopicDenied => "topic_denied",
        }
    }

    /// What an operator reads, in Spanish (es-CL).
    pub const fn message_es(self) -> &'static str {
        match self {
            RefusalReason::Malformed => "mensaje ilegible: no es un paquete SenML válido",
            RefusalReason::Oversized => "mensaje demasiado grande (máximo 16 KiB)",
            RefusalReason::SpoofedBn => {
                "el nombre del equipo en el mensaje no coincide con el tópico"
            }
            RefusalReason::UnknownMetric => "variable desconocida",
            RefusalReason::WrongUnit => "unidad incorrecta para la variable",
            RefusalReason::OutOfRange => "valor fuera del rango físicamente posible",
            RefusalReason::FutureTime => "hora de la lectura demasiado adelantada",
            RefusalReason::MissingValue => "lectura sin valor",
            RefusalReason::TopicDenied => "tópico no permitido para este equipo",
        }
    }
}

/// A refused pack or record, with a reason a person can read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// The reason code.
    pub reason: RefusalReason,
    /// Index of the record in the pack; `None` when the whole pack was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<usize>,
    /// What exactly was wrong, in English, naming the field and value.
    pub detail: String,
}

/// One accepted reading of a pack (APR and device are the pack's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Metric.
    #[serde(rename = "m")]
    pub metric: Metric,
    /// Device time in milliseconds since the Unix epoch.
    #[serde(rename = "t")]
    pub t_ms: i64,
    /// Value (pump: 1.0 running, 0.0 stopped).
    #[serde(rename = "v")]
    pub value: f64,
}

/// Where and when a pack arrived.
#[derive(Debug, Clone, Copy)]
pub struct PackContext<'a> {
    /// APR id from the topic.
    pub apr: &'a str,
    /// Device id from the topic.
    pub device: &'a str,
    /// Arrival time at the gateway, ms since the Unix epoch.
    pub received_ms: i64,
    /// How far ahead of arrival a reading's time may be, ms.
    pub max_future_ms: i64,
}

/// The outcome of validating one pack.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackOutcome {
    /// The pack's `bt`, to acknowledge on the `ack` topic.
    pub base_time: Option<f64>,
    /// Accepted readings.
    pub readings: Vec<Reading>,
    /// Refused pack or records.
    pub refusals: Vec<Refusal>,
}

/// SenML times below 2^28 are relative to "now" (RFC 8428 §4.5.3).
const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

/// Validates a pack published on `apr/{ctx.apr}/{ctx.device}/up`.
pub fn validate_pack(payload: &[u8], ctx: &PackContext<'_>) -> PackOutcome {
    let mut out = PackOutcome::default();
    if payload.len() > MAX_PACK_BYTES {
        out.refusals.push(Refusal {
            reason: RefusalReason::Oversized,
            record: None,
            detail: format!(
                "payload of {} bytes exceeds the {} byte limit",
                payload.len(),
                MAX_PACK_BYTES
            ),
        });
        return out;
    }
    let pack = match decode_pack(payload) {
        Ok(p) => p,
        Err(e) => {
            out.refusals.push(Refusal {
                reason: RefusalReason::Malformed,
                record: None,
                detail: e.0,
            });
            return out;
        }
    };
    out.base_time = pack.base_time;
    let expected_bn = format!("urn:apr:{}:{}:", ctx.apr, ctx.device);
    if let Some((i, bn)) = pack.records.iter().enumerate().find_map(|(i, r)| {
        r.base_name
            .as_deref()
            .filter(|bn| *bn != expected_bn)
            .map(|bn| (i, bn))
    }) {
        out.refusals.push(Refusal {
            reason: RefusalReason::SpoofedBn,
            record: None,
            detail: format!(
                "record {i}: bn {bn:?} does not match the topic's {expected_bn:?}; whole pack refused"
            ),
        });
        return out;
    }
    out.readings.reserve(pack.records.len());
    for (i, r) in pack.records.iter().enumerate() {
        match check_record(i, r, ctx) {
            Ok(reading) => out.readings.push(reading),
            Err(refusal) => out.refusals.push(refusal),
        }
    }
    out
}

fn check_record(
    i: usize,
    r: &crate::decode::ResolvedRecord,
    ctx: &PackContext<'_>,
) -> Result<Reading, Refusal> {
    let refuse = |reason, detail: String| Refusal {
        reason,
        record: Some(i),
        detail: format!("record {i}: {detail}"),
    };
    let name = r.name.as_deref().unwrap_or("");
    let metric = Metric::from_name(name).ok_or_else(|| {
        refuse(
            RefusalReason::UnknownMetric,
            format!("metric {name:?} is not in the metric table"),
        )
    })?;
    if r.unit.as_deref() != metric.unit() {
        return Err(refuse(
            RefusalReason::WrongUnit,
            match (r.unit.as_deref(), metric.unit()) {
                (Some(u), Some(want)) => format!("unit {u:?} is not {want:?} for {metric}"),
                (None, Some(want)) => format!("no unit; {metric} needs {want:?}"),
                (Some(u), None) => format!("unit {u:?} given; {metric} takes none"),
                (None, None) => String::new(),
            },
        ));
    }
    let value = match (metric.kind(), &r.value) {
        (ValueKind::Number, RecordValue::Number(v)) => *v,
        (ValueKind::Boolean, RecordValue::Boolean(b)) => f64::from(u8::from(*b)),
        (kind, _) => {
            return Err(refuse(
                RefusalReason::MissingValue,
                format!(
                    "{metric} needs a {} value",
                    if kind == ValueKind::Number {
                        "numeric v"
                    } else {
                        "boolean vb"
                    }
                ),
            ))
        }
    };
    if !metric.in_range(value) {
        let (lo, hi) = metric.range();
        return Err(refuse(
            RefusalReason::OutOfRange,
            format!("{metric} = {value} is outside the possible range {lo} – {hi}"),
        ));
    }
    let seconds = if r.time.abs() < RELATIVE_TIME_LIMIT {
        #[allow(clippy::cast_precision_loss)]
        let now = ctx.received_ms as f64 / 1000.0;
        now + r.time
    } else {
        r.time
    };
    if !seconds.is_finite() {
        return Err(refuse(
            RefusalReason::MissingValue,
            "time is not finite".into(),
        ));
    }
    #[allow(clippy::cast_possible_truncation)]
    let t_ms = (seconds * 1000.0).round() as i64;
    if t_ms > ctx.received_ms.saturating_add(ctx.max_future_ms) {
        return Err(refuse(
            RefusalReason::FutureTime,
            format!(
                "time {seconds} is {} s after arrival (tolerance {} s)",
                (t_ms - ctx.received_ms) / 1000,
                ctx.max_future_ms / 1000
            ),
        ));
    }
    Ok(Reading {
        metric,
        t_ms,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_064_800_000;

    fn ctx() -> PackContext<'static> {
        PackContext {
            apr: "a1",
            device: "d1",
            received_ms: NOW,
            max_future_ms: 300_000,
        }
    }

    fn reasons(o: &PackOutcome) -> Vec<&'static str> {
        o.refusals.iter().map(|r| r.reason.code()).collect()
    }

    #[test]
    fn accepts_the_contract_example() {
        let o = validate_pack(
            br#"[{"bn":"urn:apr:a1:d1:","bt":1764064800,"n":"chlorine","u":"mg/l","v":0.12},
               {"n":"turbidity","u":"NTU","v":0.8},{"n":"flow","u":"l/s","v":2.4}]"#,
            &ctx(),
        );
        assert!(o.refusals.is_empty(), "{:?}", o.refusals);
        assert_eq!(o.base_time, Some(1_764_064_800.0));
        assert_eq!(o.readings.len(), 3);
        assert_eq!(o.readings[0].t_ms, NOW);
        assert_eq!(o.readings[2].metric, Metric::Flow);
    }

    #[test]
    fn refuses_bad_records_and_keeps_the_good_ones() {
        let o = validate_pack(
            br#"[{"bn":"urn:apr:a1:d1:","bt":1764064800,"n":"chlorine","u":"mg/l","v":0.5},
               {"n":"temperature","u":"Cel","v":20},
               {"n":"chlorine","u":"mg/L","v":0.5},
               {"n":"ph","u":"pH","v":15},
               {"n":"flow","u":"l/s","t":3600,"v":1},
               {"n":"pump","vb":true},
               {"n":"pump","v":1},
               {"n":"rssi","u":"dBm","v":-70}]"#,
            &ctx(),
        );
        assert_eq!(
            reasons(&o),
            [
                "unknown_metric",
                "wrong_unit",
                "out_of_range",
                "future_time",
                "missing_value"
            ]
        );
        assert_eq!(o.readings.len(), 3);
        assert_eq!(o.refusals[1].record, Some(2));
        assert!(
            o.refusals[1].detail.contains("\"mg/L\""),
            "{}",
            o.refusals[1].detail
        );
        assert_eq!(o.readings[1].value, 1.0);
    }

    #[test]
    fn a_spoofed_base_name_refuses_the_whole_pack() {
        let o = validate_pack(
            br#"[{"bn":"urn:apr:other:d1:","bt":1764064800,"n":"flow","u":"l/s","v":1}]"#,
            &ctx(),
        );
        assert_eq!(reasons(&o), ["spoofed_bn"]);
        assert!(o.readings.is_empty());
        let o = validate_pack(
            br#"[{"bn":"urn:apr:a1:d1:","bt":1764064800,"n":"flow","u":"l/s","v":1},
                 {"bn":"urn:apr:a1:d2:","n":"flow","u":"l/s","v":1}]"#,
            &ctx(),
        );
        assert_eq!(reasons(&o), ["spoofed_bn"]);
        assert!(o.readings.is_empty());
    }

    #[test]
    fn malformed_and_oversized_packs_are_refused_whole() {
        let o = validate_pack(b"{not json", &ctx());
        assert_eq!(reasons(&o), ["malformed"]);
        let big = vec![b' '; MAX_PACK_BYTES + 1];
        let o = validate_pack(&big, &ctx());
        assert_eq!(reasons(&o), ["oversized"]);
        assert!(o.refusals[0].detail.contains("16385"));
    }

    #[test]
    fn small_times_are_relative_to_arrival() {
        let o = validate_pack(br#"[{"n":"flow","u":"l/s","t":-60,"v":1}]"#, &ctx());
        assert_eq!(o.readings[0].t_ms, NOW - 60_000);
        assert_eq!(o.base_time, None);
    }

    #[test]
    fn every_reason_has_a_code_and_a_spanish_message() {
        for r in RefusalReason::ALL {
            assert!(!r.code().is_empty());
            assert!(!r.message_es().is_empty());
        }
    }
}
