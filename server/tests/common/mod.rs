//! Shared test fixture: a temp-dir store with the demo fleet, one user of
//! each role with a token, and `oneshot` request helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use apr_server::auth::{self, Role};
use apr_server::store::UserInsert;
use apr_server::{app, fleet, AppState, Config};
use apr_wire::ingest::{IngestBatch, IngestPack};
use apr_wire::validate::Reading;
use apr_wire::Metric;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// An APR of region `biobio` (the operator's and the gateway's).
pub const OP_APR: &str = "los-cerrillos";
/// Another APR of region `biobio`.
pub const OTHER_BIOBIO_APR: &str = "el-tranque";
/// An APR of region `metropolitana`.
pub const RM_APR: &str = "la-vega";
/// The gateway's id (its username).
pub const GATEWAY: &str = "gw-los-cerrillos";

pub fn fleet_csv() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/fleet.csv"))
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    pub app: Router,
    pub admin: String,
    pub engineer: String,
    pub operator: String,
    pub gore: String,
    pub gateway: String,
}

fn user(
    state: &AppState,
    username: &str,
    role: Role,
    aprs: &[&str],
    region: Option<&str>,
) -> String {
    // Inserted directly (no password) to keep the tests free of Argon2 cost;
    // the password path has its own test.
    state
        .registry()
        .insert_user(&UserInsert {
            username: username.into(),
            role,
            password_argon2: None,
            region: region.map(Into::into),
            aprs: aprs.iter().map(|s| (*s).to_owned()).collect(),
        })
        .unwrap();
    auth::create_token(state.registry(), username, Some("test")).unwrap()
}

pub fn fixture_with(config: impl FnOnce(&mut Config)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.store.path = dir.path().join("store.sqlite3");
    config(&mut cfg);
    let state = apr_server::open(&cfg).unwrap();
    fleet::import_file(state.registry(), &fleet_csv()).unwrap();
    let admin = user(&state, "ada", Role::Admin, &[], None);
    let engineer = user(&state, "eli", Role::Engineer, &[], None);
    let operator = user(&state, "olga", Role::Operator, &[OP_APR], None);
    let gore = user(&state, "gabo", Role::Gore, &[], Some("biobio"));
    let gateway = user(&state, GATEWAY, Role::Gateway, &[OP_APR], None);
    Fixture {
        app: app(state.clone()),
        dir,
        state,
        admin,
        engineer,
        operator,
        gore,
        gateway,
    }
}

pub fn fixture() -> Fixture {
    fixture_with(|_| {})
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error code of a JSON error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

pub fn request(
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let mut req = b.body(body.map_or_else(Body::empty, Body::from)).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    req
}

pub async fn get(app: &Router, uri: &str, token: Option<&str>) -> Answer {
    send(app, request(Method::GET, uri, token, None)).await
}

pub async fn post_batch(app: &Router, token: &str, batch: &IngestBatch) -> Answer {
    send(
        app,
        request(
            Method::POST,
            "/api/v1/ingest",
            Some(token),
            Some(serde_json::to_vec(batch).unwrap()),
        ),
    )
    .await
}

/// A batch of one pack of `metric` readings at the given (ms, value) pairs.
pub fn batch(apr: &str, device: &str, metric: Metric, points: &[(i64, f64)]) -> IngestBatch {
    IngestBatch {
        gateway: GATEWAY.into(),
        seq: 1,
        packs: vec![IngestPack {
            apr: apr.into(),
            device: device.into(),
            bt: points.first().map(|p| p.0 as f64 / 1000.0),
            received_ms: points.last().map_or(0, |p| p.0),
            readings: points
                .iter()
                .map(|&(t_ms, value)| Reading {
                    metric,
                    t_ms,
                    value,
                })
                .collect(),
            refusals: vec![],
            raw: None,
        }],
        statuses: vec![],
    }
}

/// 2025-11-25T10:00:00Z in ms.
pub const T0: i64 = 1_764_064_800_000;
