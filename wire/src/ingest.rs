//! What a site gateway sends to the server, and what the server answers.
//!
//! `POST /api/v1/ingest` with the gateway's token carries an [`IngestBatch`].
//! The server answers 200 with an [`IngestAck`] only after the batch is
//! durably committed. Batches are idempotent: readings are keyed by
//! (APR, device, metric, time), so a batch retried after a lost answer stores
//! nothing twice. `GET /api/v1/gateway/devices` gives the gateway the devices of
//! its APRs with their credential hashes and configuration.

use serde::{Deserialize, Serialize};

use crate::validate::{Reading, Refusal, RefusalReason};

/// A batch of packs from one gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestBatch {
    /// The gateway's id (must match its token).
    pub gateway: String,
    /// The gateway's sequence number for this batch (for logs and tracing;
    /// idempotency comes from the reading keys, not from this number).
    pub seq: u64,
    /// Packs as validated at the gateway.
    pub packs: Vec<IngestPack>,
    /// Device status changes seen since the last batch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<DeviceStatus>,
}

/// One device pack, validated at the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestPack {
    /// APR id from the topic.
    pub apr: String,
    /// Device id from the topic.
    pub device: String,
    /// The pack's `bt`, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bt: Option<f64>,
    /// When the gateway received it, ms since the Unix epoch.
    pub received_ms: i64,
    /// Accepted readings.
    pub readings: Vec<Reading>,
    /// Refused pack or records, for the quarantine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<Refusal>,
    /// The payload as received (lossy UTF-8, at most 2 KiB), kept only when
    /// something was refused, so the quarantine shows what came in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// Largest excerpt of a refused payload kept in the quarantine.
pub const QUARANTINE_EXCERPT_BYTES: usize = 2048;

/// The payload excerpt kept for the quarantine.
pub fn quarantine_excerpt(payload: &[u8]) -> String {
    let cut = payload.len().min(QUARANTINE_EXCERPT_BYTES);
    String::from_utf8_lossy(&payload[..cut]).into_owned()
}

/// Why a request body is not an ingest batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError(pub String);

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BatchError {}

/// Decodes the body of `POST /api/v1/ingest` as the server does before it
/// checks the batch against the gateway's scope: JSON into an
/// [`IngestBatch`], then every reading the server cannot store (a value
/// outside its metric's physical range, or not finite) moved to its pack's
/// refusals (see [`quarantine_impossible`]). A pure function, so it can be
/// fuzzed on arbitrary bytes (`fuzz/`, target `ingest_batch`).
pub fn decode_batch(body: &[u8]) -> Result<IngestBatch, BatchError> {
    let mut batch: IngestBatch = serde_json::from_slice(body)
        .map_err(|e| BatchError(format!("the body is not an ingest batch: {e}")))?;
    quarantine_impossible(&mut batch);
    Ok(batch)
}

/// Moves readings that cannot be stored (outside the metric's physical range,
/// or not finite) to the pack's refusals, so they reach the quarantine instead
/// of the series. The gateway refuses these already; this keeps the store
/// clean if one does not.
pub fn quarantine_impossible(batch: &mut IngestBatch) {
    for pack in &mut batch.packs {
        if pack.readings.iter().all(|r| r.metric.in_range(r.value)) {
            continue;
        }
        let mut refused = Vec::new();
        pack.readings.retain(|r| {
            let ok = r.metric.in_range(r.value);
            if !ok {
                let (lo, hi) = r.metric.range();
                refused.push(Refusal {
                    reason: RefusalReason::OutOfRange,
                    record: None,
                    detail: format!(
                        "server: {} = {} at t = {} ms is outside the possible range {lo} – {hi}",
                        r.metric, r.value, r.t_ms
                    ),
                });
            }
            ok
        });
        pack.refusals.extend(refused);
    }
}

/// A device went online or offline (retained status, MQTT will, or silence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// APR id.
    pub apr: String,
    /// Device id.
    pub device: String,
    /// Whether the device is online.
    pub online: bool,
    /// When the gateway saw the change, ms since the Unix epoch.
    pub at_ms: i64,
}

/// The server's answer to a batch, sent only once it is durably stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IngestAck {
    /// Readings newly stored.
    pub stored: u64,
    /// Readings already stored before (a retried or repeated pack).
    pub duplicates: u64,
    /// Refusals recorded in the quarantine.
    pub quarantined: u64,
}

/// A device as the gateway needs it: who may connect and what config to push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayDevice {
    /// APR id.
    pub apr: String,
    /// Device id.
    pub device: String,
    /// MQTT username the device connects with.
    pub mqtt_username: String,
    /// SHA-256 of the device's MQTT password, hex (the password is a random
    /// 128-bit secret, so a fast hash is enough; people's passwords use argon2).
    pub mqtt_password_sha256: String,
    /// How often the device reports, seconds (liveness: silent for a few
    /// intervals means offline).
    pub report_interval_s: u32,
    /// The retained `config` published to the device.
    pub config: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metric;

    #[test]
    fn batches_round_trip_through_json() {
        let b = IngestBatch {
            gateway: "gw".into(),
            seq: 7,
            packs: vec![IngestPack {
                apr: "a".into(),
                device: "d".into(),
                bt: Some(1.5),
                received_ms: 2,
                readings: vec![Reading {
                    metric: Metric::TankLevel,
                    t_ms: 1500,
                    value: 50.0,
                }],
                refusals: vec![],
                raw: None,
            }],
            statuses: vec![],
        };
        let s = serde_json::to_string(&b).unwrap();
        assert!(s.contains("\"m\":\"tank_level\""), "{s}");
        assert_eq!(serde_json::from_str::<IngestBatch>(&s).unwrap(), b);
    }

    #[test]
    fn quarantine_excerpts_are_bounded() {
        assert_eq!(
            quarantine_excerpt(&[b'x'; 5000]).len(),
            QUARANTINE_EXCERPT_BYTES
        );
        assert_eq!(quarantine_excerpt(b"abc"), "abc");
    }

    #[test]
    fn impossible_values_go_to_the_quarantine_not_the_series() {
        let body = br#"{"gateway":"gw","seq":1,"packs":[{"apr":"a","device":"d","received_ms":0,
            "readings":[{"m":"chlorine","t":0,"v":0.5},{"m":"chlorine","t":1,"v":25.0},
                        {"m":"chlorine","t":2,"v":1.0}]}]}"#;
        let b = decode_batch(body).unwrap();
        let p = &b.packs[0];
        assert_eq!(
            p.readings.iter().map(|r| r.value).collect::<Vec<_>>(),
            [0.5, 1.0]
        );
        assert_eq!(p.refusals.len(), 1);
        assert_eq!(p.refusals[0].reason, RefusalReason::OutOfRange);
        assert!(p.refusals[0].detail.contains("25"), "{:?}", p.refusals);

        let mut b = b.clone();
        b.packs[0].readings[0].value = f64::NAN;
        quarantine_impossible(&mut b);
        assert_eq!(b.packs[0].readings.len(), 1);
        assert_eq!(b.packs[0].refusals.len(), 2);
    }

    #[test]
    fn a_body_that_is_not_a_batch_is_an_error_naming_the_problem() {
        let e = decode_batch(b"{\"gateway\":\"gw\",\"seq\":-1,\"packs\":[]}").unwrap_err();
        assert!(e.0.contains("not an ingest batch"), "{e}");
        assert!(decode_batch(b"").is_err());
        assert!(decode_batch(b"[]").is_err());
    }
}
