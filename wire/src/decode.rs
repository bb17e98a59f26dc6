//! SenML decoding (RFC 8428) from JSON or CBOR into resolved records.
//!
//! Base fields (`bn`, `bt`, `bu`, `bv`) apply to their record and every later
//! one until replaced, as RFC 8428 §4.6 says. The format is told by the first
//! byte: a JSON pack starts with `[` (after whitespace), a CBOR pack with an
//! array header (major type 4).

use serde::Deserialize;

/// One SenML record after base fields are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRecord {
    /// The base name in force (`bn`), if any.
    pub base_name: Option<String>,
    /// The record's own name `n` (without the base name).
    pub name: Option<String>,
    /// The unit (`u`, or `bu` in force).
    pub unit: Option<String>,
    /// Absolute time in seconds: `bt` + `t`.
    pub time: f64,
    /// The value.
    pub value: RecordValue,
}

/// The value carried by a record.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordValue {
    /// `v` (plus any `bv`).
    Number(f64),
    /// `vb`.
    Boolean(bool),
    /// `vs` or `vd`: valid SenML, but no metric of ours carries it.
    Other,
    /// No value field at all.
    Missing,
}

/// A decoded pack.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedPack {
    /// The first record's `bt`, the pack's name on the `ack` topic.
    pub base_time: Option<f64>,
    /// The records, in order.
    pub records: Vec<ResolvedRecord>,
}

/// Why a payload is not a SenML pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

#[derive(Debug, Default, Deserialize)]
struct RawRecord {
    bn: Option<String>,
    bt: Option<f64>,
    bu: Option<String>,
    bv: Option<f64>,
    n: Option<String>,
    u: Option<String>,
    v: Option<f64>,
    vb: Option<bool>,
    vs: Option<String>,
    vd: Option<String>,
    t: Option<f64>,
}

/// Decodes a JSON or CBOR SenML pack.
pub fn decode_pack(payload: &[u8]) -> Result<DecodedPack, DecodeError> {
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    let raw = match first {
        None => return Err(DecodeError("empty payload".into())),
        Some(b'[') => serde_json::from_slice::<Vec<RawRecord>>(payload)
            .map_err(|e| DecodeError(format!("not a SenML JSON pack: {e}")))?,
        Some(b) if b >> 5 == 4 => decode_cbor(payload)?,
        Some(_) => {
            return Err(DecodeError(
                "not a SenML pack: expected a JSON array or a CBOR array".into(),
            ))
        }
    };
    Ok(resolve(raw))
}

fn resolve(raw: Vec<RawRecord>) -> DecodedPack {
    let mut base_name: Option<String> = None;
    let mut base_time = 0.0;
    let mut base_unit: Option<String> = None;
    let mut base_value = 0.0;
    let pack_bt = raw.first().and_then(|r| r.bt);
    let mut records = Vec::with_capacity(raw.len());
    for r in raw {
        if let Some(bn) = r.bn {
            base_name = Some(bn);
        }
        if let Some(bt) = r.bt {
            base_time = bt;
        }
        if let Some(bu) = r.bu {
            base_unit = Some(bu);
        }
        if let Some(bv) = r.bv {
            base_value = bv;
        }
        let value = if let Some(v) = r.v {
            RecordValue::Number(base_value + v)
        } else if let Some(vb) = r.vb {
            RecordValue::Boolean(vb)
        } else if r.vs.is_some() || r.vd.is_some() {
            RecordValue::Other
        } else {
            RecordValue::Missing
        };
        records.push(ResolvedRecord {
            base_name: base_name.clone(),
            name: r.n,
            unit: r.u.or_else(|| base_unit.clone()),
            time: base_time + r.t.unwrap_or(0.0),
            value,
        });
    }
    DecodedPack {
        base_time: pack_bt,
        records,
    }
}

/// CBOR SenML uses integer labels (RFC 8428 §6).
fn decode_cbor(payload: &[u8]) -> Result<Vec<RawRecord>, DecodeError> {
    use ciborium::value::Value;
    let value: Value = ciborium::de::from_reader(payload)
        .map_err(|e| DecodeError(format!("not a SenML CBOR pack: {e}")))?;
    let Value::Array(items) = value else {
        return Err(DecodeError("not a SenML CBOR pack: not an array".into()));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::Map(fields) = item else {
            return Err(DecodeError(format!("CBOR record {i} is not a map")));
        };
        let mut r = RawRecord::default();
        for (k, v) in fields {
            let label = match &k {
                Value::Integer(n) => i64::try_from(i128::from(*n)).ok(),
                _ => None,
            };
            let text_label = match &k {
                Value::Text(s) => Some(s.as_str()),
                _ => None,
            };
            let field = match (label, text_label) {
                (Some(-2), _) | (_, Some("bn")) => "bn",
                (Some(-3), _) | (_, Some("bt")) => "bt",
                (Some(-4), _) | (_, Some("bu")) => "bu",
                (Some(-5), _) | (_, Some("bv")) => "bv",
                (Some(0), _) | (_, Some("n")) => "n",
                (Some(1), _) | (_, Some("u")) => "u",
                (Some(2), _) | (_, Some("v")) => "v",
                (Some(3), _) | (_, Some("vs")) => "vs",
                (Some(4), _) | (_, Some("vb")) => "vb",
                (Some(6), _) | (_, Some("t")) => "t",
                (Some(8), _) | (_, Some("vd")) => "vd",
                _ => continue,
            };
            let bad = || DecodeError(format!("CBOR record {i}: field {field} has the wrong type"));
            match field {
                "bn" => r.bn = Some(cbor_text(v).ok_or_else(bad)?),
                "bu" => r.bu = Some(cbor_text(v).ok_or_else(bad)?),
                "n" => r.n = Some(cbor_text(v).ok_or_else(bad)?),
                "u" => r.u = Some(cbor_text(v).ok_or_else(bad)?),
                "vs" => r.vs = Some(cbor_text(v).ok_or_else(bad)?),
                "vd" => r.vd = Some(String::new()),
                "bt" => r.bt = Some(cbor_number(&v).ok_or_else(bad)?),
                "bv" => r.bv = Some(cbor_number(&v).ok_or_else(bad)?),
                "v" => r.v = Some(cbor_number(&v).ok_or_else(bad)?),
                "t" => r.t = Some(cbor_number(&v).ok_or_else(bad)?),
                "vb" => match v {
                    Value::Bool(b) => r.vb = Some(b),
                    _ => return Err(bad()),
                },
                _ => {}
            }
        }
        out.push(r);
    }
    Ok(out)
}

fn cbor_text(v: ciborium::value::Value) -> Option<String> {
    match v {
        ciborium::value::Value::Text(s) => Some(s),
        _ => None,
    }
}

fn cbor_number(v: &ciborium::value::Value) -> Option<f64> {
    match v {
        ciborium::value::Value::Float(f) => Some(*f),
        #[allow(clippy::cast_precision_loss)]
        ciborium::value::Value::Integer(n) => Some(i128::from(*n) as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_base_fields_to_later_records() {
        let p = decode_pack(
            br#"[{"bn":"urn:apr:a:d:","bt":100,"bu":"l/s","n":"flow","v":1},
                 {"n":"flow","t":60,"v":2},{"n":"pump","vb":false}]"#,
        )
        .unwrap();
        assert_eq!(p.base_time, Some(100.0));
        assert_eq!(p.records.len(), 3);
        assert_eq!(p.records[1].time, 160.0);
        assert_eq!(p.records[1].unit.as_deref(), Some("l/s"));
        assert_eq!(p.records[1].base_name.as_deref(), Some("urn:apr:a:d:"));
        assert_eq!(p.records[2].value, RecordValue::Boolean(false));
    }

    #[test]
    fn decodes_cbor_with_integer_labels() {
        use ciborium::value::Value;
        let pack = Value::Array(vec![Value::Map(vec![
            (
                Value::Integer((-2).into()),
                Value::Text("urn:apr:a:d:".into()),
            ),
            (Value::Integer((-3).into()), Value::Float(1000.5)),
            (Value::Integer(0.into()), Value::Text("chlorine".into())),
            (Value::Integer(1.into()), Value::Text("mg/l".into())),
            (Value::Integer(2.into()), Value::Float(0.4)),
        ])]);
        let mut buf = Vec::new();
        ciborium::ser::into_writer(&pack, &mut buf).unwrap();
        let p = decode_pack(&buf).unwrap();
        assert_eq!(p.base_time, Some(1000.5));
        assert_eq!(p.records[0].name.as_deref(), Some("chlorine"));
        assert_eq!(p.records[0].value, RecordValue::Number(0.4));
    }

    #[test]
    fn malformed_payloads_say_what_is_wrong() {
        assert!(decode_pack(b"").unwrap_err().0.contains("empty"));
        assert!(decode_pack(b"{\"n\":1}")
            .unwrap_err()
            .0
            .contains("not a SenML"));
        assert!(decode_pack(b"[{\"v\":\"x\"}]")
            .unwrap_err()
            .0
            .contains("JSON"));
        assert!(decode_pack(b"[1,2").is_err());
    }
}
