//! The KPI, billing, field-record, assessment and intervention routes
//! through the router, on the demo fleet.

mod common;

use apr_wire::Metric;
use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{json, Value};

async fn post_json(f: &Fixture, uri: &str, token: &str, body: Value) -> Answer {
    send(
        &f.app,
        request(
            Method::POST,
            uri,
            Some(token),
            Some(serde_json::to_vec(&body).unwrap()),
        ),
    )
    .await
}

async fn post_text(f: &Fixture, uri: &str, token: &str, body: &str) -> Answer {
    send(
        &f.app,
        request(
            Method::POST,
            uri,
            Some(token),
            Some(body.as_bytes().to_vec()),
        ),
    )
    .await
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn an_ingested_day_gives_kpis_an_assessment_of_four_components_and_summary_flags() {
    let f = fixture();
    // Chlorine every 15 minutes over the last two hours: out of range.
    let t = now_ms() - 2 * 3_600_000;
    let points: Vec<(i64, f64)> = (0..8).map(|i| (t + i * 900_000, 0.05)).collect();
    let ack = post_batch(
        &f.app,
        &f.gateway,
        &batch(OP_APR, "caseta", Metric::Chlorine, &points),
    )
    .await;
    assert_eq!(ack.status, StatusCode::OK, "{}", ack.text());

    let a = get(
        &f.app,
        &format!("/api/v1/aprs/{OP_APR}/assessment?refresh=true"),
        Some(&f.operator),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = a.json();
    assert_eq!(a["apr"], OP_APR);
    assert!(a["computed_at"].as_str().unwrap().ends_with('Z'));
    let names: Vec<&str> = a["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["diagnosis", "technology", "engineering", "training"]
    );
    // No DPD check recorded: training is flagged, with its evidence.
    let training = &a["components"][3];
    assert_eq!(training["flagged"], true);
    let reason = &training["reasons"][0];
    assert_eq!(reason["code"], "dpd_checks_missing");
    assert_eq!(reason["evidence"]["threshold_pct"], 80.0);
    assert!(reason["evidence"]["window"]["from"].is_string());

    // Today's KPIs were computed on the way.
    let k = get(
        &f.app,
        &format!("/api/v1/aprs/{OP_APR}/kpis?kpi=chlorine_readings"),
        Some(&f.operator),
    )
    .await;
    assert_eq!(k.status, StatusCode::OK, "{}", k.text());
    let k = k.json();
    let total: f64 = k["kpis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .sum();
    assert_eq!(total, 8.0, "{k}");
    assert!(k["kpis"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["kpi"] == "chlorine_readings" && r["window"] == "P1D"));

    // The summary counts the flagged APR for the admin, not for a GORE
    // user of another region.
    let s = get(&f.app, "/api/v1/summary", Some(&f.admin)).await.json();
    assert_eq!(s["flagged"]["training"], 1, "{s}");
    assert_eq!(s["flagged"]["engineering"], 0);
    let s = get(&f.app, "/api/v1/summary?region=biobio", Some(&f.gore))
        .await
        .json();
    assert_eq!(s["flagged"]["training"], 1, "{s}");

    // The history shows when training was raised.
    let h = get(
        &f.app,
        &format!("/api/v1/aprs/{OP_APR}/assessment/history"),
        Some(&f.engineer),
    )
    .await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.text());
    let h = h.json();
    assert_eq!(h["assessments"].as_array().unwrap().len(), 1);
    assert!(h["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["component"] == "training" && c["event"] == "raised"));

    // Outside the caller's scope.
    for uri in [
        format!("/api/v1/aprs/{RM_APR}/kpis"),
        format!("/api/v1/aprs/{RM_APR}/assessment"),
        format!("/api/v1/aprs/{RM_APR}/field-records"),
    ] {
        assert_eq!(
            get(&f.app, &uri, Some(&f.operator)).await.status,
            StatusCode::FORBIDDEN,
            "{uri}"
        );
    }
    let bad = get(
        &f.app,
        &format!("/api/v1/aprs/{OP_APR}/kpis?kpi=nope"),
        Some(&f.operator),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.message().contains("'nope' is not a KPI"),
        "{}",
        bad.message()
    );
}

#[tokio::test]
async fn field_records_are_validated_scoped_and_listed_with_their_limits() {
    let f = fixture();
    let uri = format!("/api/v1/aprs/{OP_APR}/field-records");
    let ten_days_ago = chrono::DateTime::from_timestamp_millis(now_ms() - 10 * 86_400_000)
        .unwrap()
        .to_rfc3339();
    let dpd = post_json(
        &f,
        &uri,
        &f.operator,
        json!({"kind": "dpd_chlorine", "value": 0.6}),
    )
    .await;
    assert_eq!(dpd.status, StatusCode::OK, "{}", dpd.text());
    assert_eq!(dpd.json()["recorded_by"], "olga");
    let lab = post_json(
        &f,
        &uri,
        &f.engineer,
        json!({"kind": "lab", "parameter": "arsenic", "value": 0.02, "taken_at": ten_days_ago}),
    )
    .await;
    assert_eq!(lab.status, StatusCode::OK, "{}", lab.text());
    assert_eq!(lab.json()["limit"], 0.01);
    assert_eq!(lab.json()["exceeds_limit"], true);
    let visit = post_json(
        &f,
        &uri,
        &f.operator,
        json!({"kind": "visit", "note": "Cambio de membrana"}),
    )
    .await;
    assert_eq!(visit.status, StatusCode::OK);

    let unknown = post_json(
        &f,
        &uri,
        &f.operator,
        json!({"kind": "lab", "parameter": "lead", "value": 1.0}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(
        unknown.message().contains("unknown lab parameter 'lead'"),
        "{}",
        unknown.message()
    );
    let no_value = post_json(&f, &uri, &f.operator, json!({"kind": "dpd_chlorine"})).await;
    assert_eq!(no_value.status, StatusCode::BAD_REQUEST);
    // A lab parameter on a DPD check (found by schemathesis): refused.
    let stray = post_json(
        &f,
        &uri,
        &f.operator,
        json!({"kind": "dpd_chlorine", "value": 0.5, "parameter": "total_coliforms"}),
    )
    .await;
    assert_eq!(stray.status, StatusCode::BAD_REQUEST);
    assert!(
        stray
            .message()
            .contains("'parameter' only goes with a lab result"),
        "{}",
        stray.message()
    );
    let gore = post_json(&f, &uri, &f.gore, json!({"kind": "visit", "note": "x"})).await;
    assert_eq!(gore.status, StatusCode::FORBIDDEN);
    let other = post_json(
        &f,
        &format!("/api/v1/aprs/{RM_APR}/field-records"),
        &f.operator,
        json!({"kind": "visit", "note": "x"}),
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);

    let all = get(&f.app, &uri, Some(&f.operator)).await.json();
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    let labs = get(&f.app, &format!("{uri}?kind=lab"), Some(&f.operator))
        .await
        .json();
    assert_eq!(labs.as_array().unwrap().len(), 1);
    assert_eq!(labs[0]["parameter"], "arsenic");
}

#[tokio::test]
async fn billing_csv_errors_name_the_line_and_billed_months_show_in_the_kpis() {
    let f = fixture();
    let uri = format!("/api/v1/aprs/{OP_APR}/billing");
    let bad = post_text(
        &f,
        &uri,
        &f.operator,
        "month,billed_m3\n2025-10,1234.5\n2025-11,mil\n",
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.message().starts_with("line 3:"), "{}", bad.message());
    let ok = post_text(&f, &uri, &f.operator, "month,billed_m3\n2025-10,1234.5\n").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(ok.json()["months"][0]["billed_m3"], 1234.5);
    assert_eq!(
        post_text(&f, &uri, &f.gore, "2025-10,1\n").await.status,
        StatusCode::FORBIDDEN
    );
    let k = get(
        &f.app,
        &format!("/api/v1/aprs/{OP_APR}/kpis?from=2025-10-01&to=2025-10-31"),
        Some(&f.operator),
    )
    .await
    .json();
    let nrw = &k["nrw"][0];
    assert_eq!(nrw["month"], "2025-10");
    assert_eq!(nrw["billed_m3"], 1234.5);
    // No produced volume stored: no NRW figure, the coverage says why.
    assert_eq!(nrw["days_with_data"], 0);
    assert!(nrw["nrw_m3"].is_null());
}

#[tokio::test]
async fn an_intervention_is_returned_with_kpis_before_and_after() {
    let f = fixture();
    let uri = format!("/api/v1/aprs/{OP_APR}/interventions");
    let body = json!({
        "component": "technology",
        "description": "Bomba dosificadora de hipoclorito",
        "cost_clp": 2_500_000,
        "funder": "GORE Biobío",
        "started": "2025-10-01",
        "finished": "2025-10-03",
    });
    assert_eq!(
        post_json(&f, &uri, &f.operator, body.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    let mut wrong = body.clone();
    wrong["component"] = json!("plumbing");
    assert_eq!(
        post_json(&f, &uri, &f.engineer, wrong).await.status,
        StatusCode::BAD_REQUEST
    );
    let created = post_json(&f, &uri, &f.engineer, body).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let list = get(&f.app, &uri, Some(&f.operator)).await.json();
    let i = &list[0];
    assert_eq!(i["cost_clp"], 2_500_000);
    assert_eq!(i["outcome"]["before"]["from"], "2025-09-01");
    assert_eq!(i["outcome"]["after"]["to"], "2025-11-02");
    let kpis = i["outcome"]["kpis"].as_array().unwrap();
    assert!(kpis.iter().any(|k| k["kpi"] == "chlorine_compliance_pct"));
    assert!(kpis
        .iter()
        .all(|k| k.get("before").is_some() && k.get("after").is_some()));
}
