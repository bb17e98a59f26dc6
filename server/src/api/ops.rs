//! Operations routes: health, Prometheus metrics, the OpenAPI document.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;

use super::principal::bearer;
use super::{blocking, AppState, OPENAPI};
use crate::auth::Principal;
use crate::counters::Gauges;
use crate::error::{Error, Result};

/// `GET /healthz`: 200 when the store answers, else 503.
pub(super) async fn healthz(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let registry = state.inner.registry.clone();
    blocking(move || registry.ping())
        .await
        .map_err(|e| Error::Unavailable(format!("the store does not answer: {e}")))?;
    Ok(Json(serde_json::json!({ "status": "ok" })))
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `GET /metrics`: loopback peers, or anyone with the scrape token.
pub(super) async fn metrics(
    State(state): State<AppState>,
    req: Request,
) -> Result<impl IntoResponse> {
    let loopback = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer.ip().to_canonical().is_loopback());
    let token_ok = match (&state.inner.scrape_token, bearer(req.headers())) {
        (Some(want), Some(got)) => same_secret(want, got),
        _ => false,
    };
    if !loopback && !token_ok {
        return Err(Error::Forbidden(
            "/metrics is served to loopback peers, or with 'Authorization: Bearer <scrape_token>'"
                .into(),
        ));
    }
    let registry = state.inner.registry.clone();
    let alerts = state.inner.alerts.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let (devices_online, open_alerts) = blocking(move || {
        let online = registry
            .devices(None)?
            .iter()
            .filter(|d| d.online(now))
            .count() as u64;
        let open = alerts.open_alerts_by_apr()?.iter().map(|(_, n)| n).sum();
        Ok((online, open))
    })
    .await?;
    let text = state.counters().render(Gauges {
        store_readings: state.series().readings_stored(),
        devices_online,
        open_alerts,
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

/// `GET /api/v1/openapi.json`: for any valid token.
pub(super) async fn openapi(_caller: Principal) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
