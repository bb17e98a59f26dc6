//! The HTTP API against a real temp-dir SQLite store, through `oneshot`.

mod common;

use std::net::SocketAddr;

use apr_wire::ingest::DeviceStatus;
use apr_wire::validate::{Refusal, RefusalReason};
use apr_wire::Metric;
use axum::extract::ConnectInfo;
use axum::http::{Method, StatusCode};
use common::*;

fn readings_uri(apr: &str, rest: &str) -> String {
    format!("/api/v1/aprs/{apr}/readings?{rest}")
}

const WINDOW: &str = "from=2025-11-25T10:00:00Z&to=2025-11-25T11:00:00Z";

#[tokio::test]
async fn an_operator_token_sees_only_its_apr() {
    let f = fixture();
    let list = get(&f.app, "/api/v1/aprs", Some(&f.operator)).await;
    assert_eq!(list.status, StatusCode::OK);
    let ids: Vec<String> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [OP_APR]);
    let own = get(
        &f.app,
        &readings_uri(OP_APR, "metric=chlorine"),
        Some(&f.operator),
    )
    .await;
    assert_eq!(own.status, StatusCode::OK);
    let other = get(
        &f.app,
        &readings_uri(RM_APR, "metric=chlorine"),
        Some(&f.operator),
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(other.code(), "forbidden");
    assert!(other.message().contains(RM_APR), "{}", other.message());
    let one = get(
        &f.app,
        &format!("/api/v1/aprs/{OTHER_BIOBIO_APR}"),
        Some(&f.operator),
    )
    .await;
    assert_eq!(one.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_scoped_token_cannot_tell_an_unknown_apr_from_a_forbidden_one() {
    let f = fixture();
    for token in [&f.operator, &f.gore] {
        let a = get(
            &f.app,
            &readings_uri("no-such-apr", "metric=ph"),
            Some(token),
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        let a = get(&f.app, "/api/v1/aprs/no-such-apr", Some(token)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
    }
    let a = get(
        &f.app,
        &readings_uri("no-such-apr", "metric=ph"),
        Some(&f.engineer),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "not_found");
}

#[tokio::test]
async fn a_gore_token_sees_only_its_region() {
    let f = fixture();
    let list = get(&f.app, "/api/v1/aprs", Some(&f.gore)).await.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 18);
    assert!(list
        .iter()
        .all(|a| a["region"] == "biobio" && a["region_name"] == "Biobío"));
    let rm = get(&f.app, &format!("/api/v1/aprs/{RM_APR}"), Some(&f.gore)).await;
    assert_eq!(rm.status, StatusCode::FORBIDDEN);
    let own = get(
        &f.app,
        &format!("/api/v1/aprs/{OTHER_BIOBIO_APR}"),
        Some(&f.gore),
    )
    .await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.json()["comuna"], "Quilleco");
    let other_region = get(&f.app, "/api/v1/summary?region=maule", Some(&f.gore)).await;
    assert_eq!(other_region.status, StatusCode::FORBIDDEN);
    let s = get(&f.app, "/api/v1/summary", Some(&f.gore)).await.json();
    let mine = get(&f.app, "/api/v1/summary?region=biobio", Some(&f.admin))
        .await
        .json();
    assert_eq!(s, mine);
    assert_eq!(s["regions"], 1);
}

#[tokio::test]
async fn requests_without_a_known_token_are_401_with_a_bearer_challenge() {
    let f = fixture();
    for token in [None, Some("apr_0000"), Some("not-even-a-token")] {
        for uri in [
            "/api/v1/aprs",
            "/api/v1/summary",
            "/api/v1/openapi.json",
            "/api/v1/gateway/devices",
        ] {
            let a = get(&f.app, uri, token).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri} {token:?}");
            assert_eq!(a.headers["www-authenticate"], "Bearer");
            assert_eq!(a.code(), "unauthenticated");
        }
    }
    let basic = send(
        &f.app,
        axum::http::Request::builder()
            .uri("/api/v1/aprs")
            .header("authorization", "Basic dXNlcjpwYXNz")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    let no_token_ingest = send(
        &f.app,
        request(Method::POST, "/api/v1/ingest", None, Some(b"{}".to_vec())),
    )
    .await;
    assert_eq!(no_token_ingest.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_gateway_token_cannot_read_and_a_reader_token_cannot_ingest() {
    let f = fixture();
    for uri in [
        "/api/v1/aprs".to_owned(),
        format!("/api/v1/aprs/{OP_APR}"),
        readings_uri(OP_APR, "metric=ph"),
        "/api/v1/summary".to_owned(),
    ] {
        let a = get(&f.app, &uri, Some(&f.gateway)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{uri}");
    }
    let b = batch(OP_APR, "d1", Metric::Ph, &[(T0, 7.0)]);
    for token in [&f.admin, &f.operator] {
        assert_eq!(
            post_batch(&f.app, token, &b).await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            get(&f.app, "/api/v1/gateway/devices", Some(token))
                .await
                .status,
            StatusCode::FORBIDDEN
        );
    }
    let doc = get(&f.app, "/api/v1/openapi.json", Some(&f.gateway)).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.json()["openapi"], "3.0.3");
}

#[tokio::test]
async fn readings_come_back_raw_and_as_bucket_means() {
    let f = fixture();
    // 10:00:00 1.0, 10:00:30 2.0, 10:01:10 4.0, 10:02:59 0.5, and one from another device.
    let b = batch(
        OP_APR,
        "d1",
        Metric::Chlorine,
        &[
            (T0, 1.0),
            (T0 + 30_000, 2.0),
            (T0 + 70_000, 4.0),
            (T0 + 179_000, 0.5),
        ],
    );
    let ack = post_batch(&f.app, &f.gateway, &b).await;
    assert_eq!(ack.status, StatusCode::OK, "{}", ack.text());
    assert_eq!(
        ack.json(),
        serde_json::json!({"stored": 4, "duplicates": 0, "quarantined": 0})
    );
    let b2 = batch(OP_APR, "d2", Metric::Chlorine, &[(T0 + 60_000, 3.0)]);
    assert_eq!(
        post_batch(&f.app, &f.gateway, &b2).await.status,
        StatusCode::OK
    );

    let raw = get(
        &f.app,
        &readings_uri(OP_APR, &format!("metric=chlorine&{WINDOW}&device=d1")),
        Some(&f.operator),
    )
    .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text());
    assert_eq!(
        raw.json(),
        serde_json::json!({"apr": OP_APR, "metric": "chlorine", "unit": "mg/l", "points": [
            {"t": "2025-11-25T10:00:00.000Z", "v": 1.0},
            {"t": "2025-11-25T10:00:30.000Z", "v": 2.0},
            {"t": "2025-11-25T10:01:10.000Z", "v": 4.0},
            {"t": "2025-11-25T10:02:59.000Z", "v": 0.5},
        ]})
    );
    let all = get(
        &f.app,
        &readings_uri(OP_APR, &format!("metric=chlorine&{WINDOW}")),
        Some(&f.operator),
    )
    .await
    .json();
    assert_eq!(all["points"].as_array().unwrap().len(), 5);
    assert_eq!(
        all["points"][2],
        serde_json::json!({"t": "2025-11-25T10:01:00.000Z", "v": 3.0})
    );

    // Buckets of 60 s over both devices: [1, 2] -> 1.5; [3 (d2), 4] -> 3.5; [0.5] -> 0.5.
    let stepped = get(
        &f.app,
        &readings_uri(OP_APR, &format!("metric=chlorine&{WINDOW}&step=60")),
        Some(&f.operator),
    )
    .await;
    assert_eq!(stepped.status, StatusCode::OK, "{}", stepped.text());
    assert_eq!(
        stepped.json()["points"],
        serde_json::json!([
            {"t": "2025-11-25T10:00:00.000Z", "v": 1.5},
            {"t": "2025-11-25T10:01:00.000Z", "v": 3.5},
            {"t": "2025-11-25T10:02:00.000Z", "v": 0.5},
        ])
    );
    // Buckets of 2 h start at 10:00 (epoch-aligned), one mean of everything.
    let wide = get(
        &f.app,
        &readings_uri(OP_APR, &format!("metric=chlorine&{WINDOW}&step=7200")),
        Some(&f.operator),
    )
    .await
    .json();
    assert_eq!(
        wide["points"],
        serde_json::json!([{"t": "2025-11-25T10:00:00.000Z", "v": 2.1}])
    );
    // from and to are inclusive.
    let edge = get(
        &f.app,
        &readings_uri(
            OP_APR,
            "metric=chlorine&device=d1&from=2025-11-25T10:00:30Z&to=2025-11-25T10:01:10Z",
        ),
        Some(&f.operator),
    )
    .await
    .json();
    assert_eq!(edge["points"].as_array().unwrap().len(), 2);
    // Other metrics of the APR are empty, with their unit.
    let pump = get(
        &f.app,
        &readings_uri(OP_APR, &format!("metric=pump&{WINDOW}")),
        Some(&f.operator),
    )
    .await
    .json();
    assert_eq!(pump["unit"], "");
    assert_eq!(pump["points"], serde_json::json!([]));
}

#[tokio::test]
async fn bad_readings_parameters_are_400_naming_the_parameter() {
    let f = fixture();
    let cases = [
        ("", "'metric' is required"),
        ("metric=temperature", "'temperature' is not a metric"),
        (
            "metric=ph&from=2024-13-01",
            "query parameter 'from': '2024-13-01' is not an RFC 3339 time",
        ),
        (
            "metric=ph&from=2025-11-25T11:00:00Z&to=2025-11-25T10:00:00Z",
            "'from' is after 'to'",
        ),
        ("metric=ph&step=0", "'step'"),
        ("metric=ph&step=31536001", "'step'"),
    ];
    for (q, want) in cases {
        let a = get(&f.app, &readings_uri(OP_APR, q), Some(&f.operator)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(a.code(), "invalid_query");
        assert!(a.message().contains(want), "{q}: {}", a.message());
    }
}

#[tokio::test]
async fn too_many_raw_points_are_refused_with_a_step_suggestion() {
    let f = fixture();
    let n = 200_001i64;
    let points: Vec<(i64, f64)> = (0..n).map(|i| (T0 + i * 10, 50.0)).collect();
    let mut b = batch(OP_APR, "d1", Metric::TankLevel, &points);
    b.packs[0].received_ms = T0;
    let ack = post_batch(&f.app, &f.gateway, &b).await;
    assert_eq!(ack.json()["stored"], n);
    let a = get(
        &f.app,
        &readings_uri(OP_APR, &format!("metric=tank_level&{WINDOW}")),
        Some(&f.operator),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "too_many_points");
    assert!(a.message().contains("step="), "{}", a.message());
    let ok = get(
        &f.app,
        &readings_uri(OP_APR, &format!("metric=tank_level&{WINDOW}&step=60")),
        Some(&f.operator),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["points"].as_array().unwrap().len(), 34);
}

#[tokio::test]
async fn the_same_batch_twice_stores_nothing_the_second_time() {
    let f = fixture();
    let b = batch(
        OP_APR,
        "d1",
        Metric::Flow,
        &[(T0, 1.0), (T0 + 1000, 2.0), (T0 + 2000, 3.0)],
    );
    let first = post_batch(&f.app, &f.gateway, &b).await.json();
    assert_eq!(
        first,
        serde_json::json!({"stored": 3, "duplicates": 0, "quarantined": 0})
    );
    let second = post_batch(&f.app, &f.gateway, &b).await.json();
    assert_eq!(
        second,
        serde_json::json!({"stored": 0, "duplicates": 3, "quarantined": 0})
    );
    let pts = get(
        &f.app,
        &readings_uri(OP_APR, &format!("metric=flow&{WINDOW}")),
        Some(&f.operator),
    )
    .await
    .json();
    assert_eq!(pts["points"].as_array().unwrap().len(), 3);
    let m = get(&f.app, "/metrics", None).await.text();
    assert!(m.contains("\napr_readings_stored_total 3\n"), "{m}");
    assert!(m.contains("\napr_readings_duplicate_total 3\n"), "{m}");
    assert!(m.contains("\napr_ingest_batches_total 2\n"), "{m}");
    assert!(m.contains("\napr_store_readings 3\n"), "{m}");
}

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn refusals_are_quarantined_and_counted_per_reason() {
    let f = fixture();
    let before = get(&f.app, "/metrics", None).await;
    assert_eq!(before.status, StatusCode::OK);
    assert!(before.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let before = before.text();
    for r in RefusalReason::ALL {
        assert_eq!(
            counter(
                &before,
                &format!("apr_refused_total{{reason=\"{}\"}}", r.code())
            ),
            0
        );
    }
    let mut b = batch(OP_APR, "d1", Metric::Ph, &[(T0, 7.1)]);
    b.packs[0].raw = Some("[{\"n\":\"ph\",\"u\":\"pH\",\"v\":15}]".into());
    b.packs[0].refusals = vec![
        Refusal {
            reason: RefusalReason::OutOfRange,
            record: Some(1),
            detail: "record 1: ph = 15".into(),
        },
        Refusal {
            reason: RefusalReason::WrongUnit,
            record: Some(2),
            detail: "record 2: unit".into(),
        },
        Refusal {
            reason: RefusalReason::WrongUnit,
            record: Some(3),
            detail: "record 3: unit".into(),
        },
    ];
    let ack = post_batch(&f.app, &f.gateway, &b).await.json();
    assert_eq!(
        ack,
        serde_json::json!({"stored": 1, "duplicates": 0, "quarantined": 3})
    );
    let after = get(&f.app, "/metrics", None).await.text();
    assert_eq!(
        counter(&after, "apr_refused_total{reason=\"out_of_range\"}"),
        1
    );
    assert_eq!(
        counter(&after, "apr_refused_total{reason=\"wrong_unit\"}"),
        2
    );
    assert_eq!(
        counter(&after, "apr_refused_total{reason=\"malformed\"}"),
        0
    );
    assert_eq!(
        counter(
            &after,
            "apr_http_requests_total{route=\"/api/v1/ingest\",status=\"200\"}"
        ),
        1
    );
    let q = f.state.series().quarantine(OP_APR, 10).unwrap();
    assert_eq!(q.len(), 3);
    assert!(q
        .iter()
        .all(|e| e.raw.as_deref() == Some("[{\"n\":\"ph\",\"u\":\"pH\",\"v\":15}]")));
    assert_eq!(q.iter().filter(|e| e.reason == "wrong_unit").count(), 2);
}

#[tokio::test]
async fn metrics_are_refused_to_remote_peers_without_the_scrape_token() {
    let f = fixture_with(|c| c.metrics.scrape_token = Some("scrape-me-please".into()));
    let remote = |token: Option<&str>| {
        let mut req = request(Method::GET, "/metrics", token, None);
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 1, 2, 3], 5000))));
        req
    };
    assert_eq!(
        send(&f.app, remote(None)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&f.app, remote(Some("wrong"))).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&f.app, remote(Some("scrape-me-please"))).await.status,
        StatusCode::OK
    );
    let mut ipv6_loopback = request(Method::GET, "/metrics", None, None);
    ipv6_loopback
        .extensions_mut()
        .insert(ConnectInfo("[::1]:5000".parse::<SocketAddr>().unwrap()));
    assert_eq!(send(&f.app, ipv6_loopback).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_demo_fleet_summary_reproduces_the_published_figures() {
    let f = fixture();
    let s = get(&f.app, "/api/v1/summary", Some(&f.admin)).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(
        s.json(),
        serde_json::json!({"aprs": 56, "comunas": 48, "regions": 4, "beneficiaries": 21092,
            "gore_contribution_clp": 5_071_159_500u64, "public_investment_clp": 52_740_058_800u64,
            "open_alerts": 0,
            "flagged": {"diagnosis": 0, "technology": 0, "engineering": 0, "training": 0}})
    );
    let mut sums = [0u64; 6];
    let keys = [
        "aprs",
        "comunas",
        "regions",
        "beneficiaries",
        "gore_contribution_clp",
        "public_investment_clp",
    ];
    for region in ["biobio", "metropolitana", "maule", "atacama"] {
        let r = get(
            &f.app,
            &format!("/api/v1/summary?region={region}"),
            Some(&f.engineer),
        )
        .await
        .json();
        for (sum, key) in sums.iter_mut().zip(keys) {
            *sum += r[key].as_u64().unwrap();
        }
    }
    assert_eq!(sums, [56, 48, 4, 21092, 5_071_159_500, 52_740_058_800]);
    let unknown = get(&f.app, "/api/v1/summary?region=narnia", Some(&f.admin)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let typo = get(&f.app, "/api/v1/summary?regoin=maule", Some(&f.admin)).await;
    assert_eq!(typo.status, StatusCode::BAD_REQUEST);
    let op = get(&f.app, "/api/v1/summary", Some(&f.operator))
        .await
        .json();
    assert_eq!(
        (op["aprs"].as_u64(), op["beneficiaries"].as_u64()),
        (Some(1), Some(438))
    );
}

#[tokio::test]
async fn ingest_refuses_foreign_aprs_oversized_bodies_and_bad_json() {
    let f = fixture_with(|c| c.ingest.max_batch_bytes = 4096);
    let foreign = post_batch(
        &f.app,
        &f.gateway,
        &batch(RM_APR, "d1", Metric::Ph, &[(T0, 7.0)]),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert!(foreign.message().contains(RM_APR), "{}", foreign.message());
    let points: Vec<(i64, f64)> = (0..500).map(|i| (T0 + i, 7.0)).collect();
    let big = post_batch(
        &f.app,
        &f.gateway,
        &batch(OP_APR, "d1", Metric::Ph, &points),
    )
    .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(big.code(), "payload_too_large");
    let bad = send(
        &f.app,
        request(
            Method::POST,
            "/api/v1/ingest",
            Some(&f.gateway),
            Some(b"{\"gateway\":1}".to_vec()),
        ),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.code(), "invalid_body");
    assert!(bad.message().contains("invalid type"), "{}", bad.message());
    let mut spoofed = batch(OP_APR, "d1", Metric::Ph, &[(T0, 7.0)]);
    spoofed.gateway = "someone-else".into();
    assert_eq!(
        post_batch(&f.app, &f.gateway, &spoofed).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn devices_show_their_status_and_last_seen_time() {
    let f = fixture();
    apr_server::device::upsert_device(
        f.state.registry(),
        OP_APR,
        "d1",
        "los-cerrillos.d1",
        "secret-password",
        60,
        serde_json::json!({"report_interval_s": 60}),
    )
    .unwrap();
    let mut b = batch(OP_APR, "d1", Metric::Flow, &[(T0, 1.0)]);
    b.statuses = vec![DeviceStatus {
        apr: OP_APR.into(),
        device: "d1".into(),
        online: true,
        at_ms: T0,
    }];
    assert_eq!(
        post_batch(&f.app, &f.gateway, &b).await.status,
        StatusCode::OK
    );
    let apr = get(&f.app, &format!("/api/v1/aprs/{OP_APR}"), Some(&f.operator))
        .await
        .json();
    assert_eq!(
        apr["devices"],
        serde_json::json!([{"id": "d1", "online": true, "last_seen": "2025-11-25T10:00:00.000Z"}])
    );
    let m = get(&f.app, "/metrics", None).await.text();
    assert_eq!(counter(&m, "apr_devices_online"), 1);
    let devices = get(&f.app, "/api/v1/gateway/devices", Some(&f.gateway))
        .await
        .json();
    assert_eq!(devices.as_array().unwrap().len(), 1);
    assert_eq!(devices[0]["mqtt_username"], "los-cerrillos.d1");
    assert_eq!(
        devices[0]["mqtt_password_sha256"],
        apr_server::auth::sha256_hex("secret-password")
    );
    assert_eq!(devices[0]["config"]["report_interval_s"], 60);
    // An older status does not overwrite a newer one.
    let mut late = batch(OP_APR, "d1", Metric::Flow, &[]);
    late.statuses = vec![DeviceStatus {
        apr: OP_APR.into(),
        device: "d1".into(),
        online: false,
        at_ms: T0 - 1,
    }];
    post_batch(&f.app, &f.gateway, &late).await;
    let apr = get(&f.app, &format!("/api/v1/aprs/{OP_APR}"), Some(&f.admin))
        .await
        .json();
    assert_eq!(apr["devices"][0]["online"], true);
}

#[tokio::test]
async fn health_unknown_routes_and_wrong_methods_answer_json() {
    let f = fixture();
    let h = get(&f.app, "/healthz", None).await;
    assert_eq!(
        (h.status, h.json()),
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    );
    let nf = get(&f.app, "/api/v1/nothing", Some(&f.admin)).await;
    assert_eq!(nf.status, StatusCode::NOT_FOUND);
    assert_eq!(nf.code(), "not_found");
    let wrong = send(
        &f.app,
        request(Method::DELETE, "/api/v1/aprs", Some(&f.admin), None),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.code(), "method_not_allowed");
}

#[tokio::test]
async fn the_apr_list_carries_the_registry_fields() {
    let f = fixture();
    let list = get(&f.app, "/api/v1/aprs", Some(&f.engineer)).await.json();
    assert_eq!(list.as_array().unwrap().len(), 56);
    let a = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == OP_APR)
        .unwrap()
        .clone();
    assert_eq!(
        a,
        serde_json::json!({"id": OP_APR, "name": "APR Los Cerrillos", "comuna": "Yumbel",
            "region": "biobio", "region_name": "Biobío", "beneficiaries": 438, "connections": 137,
            "source": "superficial", "capacity_l_s": 1.4, "storage_m3": 20.0,
            "gore_contribution_clp": 130317500, "public_investment_clp": 883172700, "devices": []})
    );
}

#[tokio::test]
async fn serve_answers_on_a_real_socket_and_stops_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(apr_server::serve(listener, f.state.clone(), async {
        let _ = stopped.await;
    }));
    for (path, want) in [("/healthz", "200 OK"), ("/metrics", "200 OK")] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with(&format!("HTTP/1.1 {want}")),
            "{path}: {out}"
        );
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
