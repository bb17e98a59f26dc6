//! Gateway routes: `POST /api/v1/ingest` and `GET /api/v1/gateway/devices`.
//!
//! A batch is answered 200 with its [`IngestAck`] only after the store has
//! durably committed it; any error means "not stored, send again", and since
//! readings are keyed by (APR, device, metric, time) sending again is safe.

use apr_wire::id::is_valid_id;
use apr_wire::ingest::{decode_batch, GatewayDevice, IngestAck, IngestBatch};
use apr_wire::validate::RefusalReason;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use apr_wire::Metric;

use super::principal::require_gateway;
use super::{blocking, AppState};
use crate::alerting::{self, engine::PackEvent};
use crate::auth::{Principal, Scope};
use crate::counters::{reason_index, RefusalCounts};
use crate::error::{Error, Result};

/// Checks a batch against the gateway's identity and scope.
fn check_batch(caller: &Principal, batch: &IngestBatch) -> Result<()> {
    if batch.gateway != caller.user {
        return Err(Error::Forbidden(format!(
            "the batch names gateway '{}' but the token belongs to '{}'",
            batch.gateway, caller.user
        )));
    }
    let in_scope = |apr: &str| caller.scope.allows_apr_id(apr) == Some(true);
    let places = batch
        .packs
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("pack {i}"), p.apr.as_str(), p.device.as_str()))
        .chain(
            batch
                .statuses
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("status {i}"), s.apr.as_str(), s.device.as_str())),
        );
    for (place, apr, device) in places {
        if !in_scope(apr) {
            return Err(Error::Forbidden(format!(
                "{place}: APR '{apr}' is outside gateway '{}''s scope",
                caller.user
            )));
        }
        if !is_valid_id(device) {
            return Err(Error::InvalidBody(format!(
                "{place}: device '{device}' of APR '{apr}' is not a valid device id"
            )));
        }
    }
    Ok(())
}

/// `POST /api/v1/ingest`.
pub(super) async fn ingest(
    State(state): State<AppState>,
    caller: Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestAck>> {
    require_gateway(&caller, "/api/v1/ingest")?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge(format!(
                "the request body exceeds the {} byte limit ([ingest] max_batch_bytes); \
                 send smaller batches",
                state.inner.max_batch_bytes
            ))
        } else {
            Error::InvalidBody(format!("cannot read the request body: {}", r.body_text()))
        }
    })?;
    // Decoding and the server's own range check are one pure function of
    // the wire crate (fuzzed in fuzz/, target ingest_batch).
    let batch = decode_batch(&body).map_err(|e| Error::InvalidBody(e.0))?;
    drop(body);
    check_batch(&caller, &batch)?;
    let mut refused: RefusalCounts = Default::default();
    for r in batch.packs.iter().flat_map(|p| &p.refusals) {
        refused[reason_index(r.reason)] += 1;
    }
    let (gateway, seq) = (batch.gateway.clone(), batch.seq);
    let alerting = state.alerting().cloned();
    let events = alerting.as_ref().map(|_| pack_events(&batch));
    let touched: Vec<(String, i64, i64)> = batch
        .packs
        .iter()
        .filter_map(|p| {
            let first = p.readings.iter().map(|r| r.t_ms).min()?;
            let last = p.readings.iter().map(|r| r.t_ms).max()?;
            Some((p.apr.clone(), first, last))
        })
        .collect();
    let series = state.inner.series.clone();
    let ack = blocking(move || series.write_batch(batch)).await?;
    // The KPIs of the days these readings fall on are due (see `crate::kpi`).
    for (apr, first, last) in &touched {
        state.kpi_dirty().mark(apr, *first, *last);
    }
    state.counters().record_ingest(&ack, &refused);
    // After the commit: the engine sees only stored readings. Awaits room in
    // its queue, not the evaluation.
    if let (Some(a), Some(events)) = (alerting, events) {
        if let Err(e) = a.submit(events).await {
            tracing::warn!(error = %e, "readings not handed to the alert engine");
        }
    }
    tracing::debug!(%gateway, seq, stored = ack.stored, duplicates = ack.duplicates, quarantined = ack.quarantined, "batch stored");
    Ok(Json(ack))
}

/// The readings and refusals of a batch the alert engine looks at.
fn pack_events(batch: &IngestBatch) -> Vec<PackEvent> {
    batch
        .packs
        .iter()
        .filter_map(|p| {
            let readings: Vec<(Metric, i64, f64)> = p
                .readings
                .iter()
                .filter(|r| alerting::watches(r.metric))
                .map(|r| (r.metric, r.t_ms, r.value))
                .collect();
            let out_of_range = p
                .refusals
                .iter()
                .filter(|r| r.reason == RefusalReason::OutOfRange)
                .count();
            (!readings.is_empty() || out_of_range > 0).then(|| PackEvent {
                apr: p.apr.clone(),
                device: p.device.clone(),
                readings,
                out_of_range: u32::try_from(out_of_range).unwrap_or(u32::MAX),
                received_ms: p.received_ms,
            })
        })
        .collect()
}

/// `GET /api/v1/gateway/devices`: the devices of the gateway's APRs.
pub(super) async fn gateway_devices(
    State(state): State<AppState>,
    caller: Principal,
) -> Result<Json<Vec<GatewayDevice>>> {
    require_gateway(&caller, "/api/v1/gateway/devices")?;
    let aprs: Vec<String> = match &caller.scope {
        Scope::Aprs(set) => set.iter().cloned().collect(),
        Scope::All | Scope::Region(_) => Vec::new(),
    };
    let registry = state.inner.registry.clone();
    let devices = blocking(move || registry.devices(Some(&aprs))).await?;
    Ok(Json(
        devices.iter().map(|d| d.to_gateway_device()).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apr_wire::ingest::IngestPack;
    use apr_wire::validate::Reading;

    fn gateway(aprs: &[&str]) -> Principal {
        Principal {
            user: "gw-1".into(),
            role: crate::auth::Role::Gateway,
            scope: Scope::Aprs(aprs.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn batch(apr: &str, values: &[f64]) -> IngestBatch {
        IngestBatch {
            gateway: "gw-1".into(),
            seq: 1,
            packs: vec![IngestPack {
                apr: apr.into(),
                device: "d1".into(),
                bt: None,
                received_ms: 0,
                readings: values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Reading {
                        metric: Metric::Chlorine,
                        t_ms: i as i64,
                        value: *v,
                    })
                    .collect(),
                refusals: vec![],
                raw: None,
            }],
            statuses: vec![],
        }
    }

    #[test]
    fn a_pack_outside_the_gateway_scope_is_refused_naming_the_apr() {
        let e = check_batch(&gateway(&["a1"]), &batch("a2", &[1.0])).unwrap_err();
        assert!(
            matches!(&e, Error::Forbidden(m) if m.contains("'a2'")),
            "{e}"
        );
        assert!(check_batch(&gateway(&["a1"]), &batch("a1", &[1.0])).is_ok());
        let mut b = batch("a1", &[1.0]);
        b.gateway = "gw-2".into();
        assert!(matches!(
            check_batch(&gateway(&["a1"]), &b),
            Err(Error::Forbidden(_))
        ));
    }
}
