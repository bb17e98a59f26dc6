//! Alerts through the API: lifecycle and rights, limits per APR, a restart
//! that keeps every alert and pending condition, and e-mail to a real SMTP
//! server (Python's aiosmtpd) on loopback.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{json, Value};

const MIN: i64 = 60_000;

async fn put(app: &axum::Router, uri: &str, token: &str, body: Value) -> Answer {
    send(
        app,
        request(
            Method::PUT,
            uri,
            Some(token),
            Some(body.to_string().into_bytes()),
        ),
    )
    .await
}

async fn post(app: &axum::Router, uri: &str, token: &str, body: Option<Value>) -> Answer {
    send(
        app,
        request(
            Method::POST,
            uri,
            Some(token),
            body.map(|b| b.to_string().into_bytes()),
        ),
    )
    .await
}

/// Polls the alert list (as admin) until `pick` finds something.
async fn wait_alert(f: &Fixture, query: &str, pick: impl Fn(&[Value]) -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = get(&f.app, &format!("/api/v1/alerts{query}"), Some(&f.admin)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        if let Some(v) = pick(a.json().as_array().expect("list")) {
            return v;
        }
        assert!(Instant::now() < deadline, "no such alert for {query}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn started(f: &Fixture) {
    f.state.start_alerting().expect("alert service starts");
}

#[tokio::test]
async fn operators_acknowledge_and_resolve_their_alerts_and_others_may_only_read() {
    let f = fixture();
    started(&f);
    let b = batch(
        OP_APR,
        "d1",
        apr_wire::Metric::Chlorine,
        &[(T0, 0.1), (T0 + 11 * MIN, 0.1)],
    );
    assert_eq!(
        post_batch(&f.app, &f.gateway, &b).await.status,
        StatusCode::OK
    );
    let a = wait_alert(&f, "?state=open", |l| l.first().cloned()).await;
    assert_eq!(a["kind"], "chlorine_low");
    assert_eq!(a["apr"], OP_APR);
    assert_eq!(a["device"], "d1");
    assert_eq!(a["value"], 0.1);
    assert_eq!(a["threshold"], 0.2);
    assert_eq!(a["opened_at"], "2025-11-25T10:11:00.000Z");
    let id = a["id"].as_i64().unwrap();

    // Scope: the gore user of biobio sees it; an operator cannot ask for another APR.
    let g = get(&f.app, "/api/v1/alerts", Some(&f.gore)).await;
    assert_eq!(g.json().as_array().unwrap().len(), 1);
    let o = get(
        &f.app,
        &format!("/api/v1/alerts?apr={RM_APR}"),
        Some(&f.operator),
    )
    .await;
    assert_eq!(o.status, StatusCode::FORBIDDEN);
    let s = get(&f.app, "/api/v1/summary", Some(&f.admin)).await;
    assert_eq!(s.json()["open_alerts"], 1);
    let s = get(
        &f.app,
        "/api/v1/summary?region=metropolitana",
        Some(&f.admin),
    )
    .await;
    assert_eq!(s.json()["open_alerts"], 0);

    // Rights: engineers and gore users read but do not acknowledge.
    for t in [&f.engineer, &f.gore] {
        let r = post(&f.app, &format!("/api/v1/alerts/{id}/ack"), t, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    }
    let r = post(
        &f.app,
        &format!("/api/v1/alerts/{id}/ack"),
        &f.operator,
        Some(json!({"comment": "voy con el kit DPD"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let a = r.json();
    assert_eq!(a["state"], "acknowledged");
    assert_eq!(a["acknowledged_by"], "olga");
    assert_eq!(a["acknowledged_comment"], "voy con el kit DPD");
    assert!(a["acknowledged_at"].as_str().unwrap().ends_with('Z'));
    let again = post(
        &f.app,
        &format!("/api/v1/alerts/{id}/ack"),
        &f.operator,
        None,
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    let r = post(
        &f.app,
        &format!("/api/v1/alerts/{id}/resolve"),
        &f.admin,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "resolved");
    assert_eq!(r.json()["resolved_by"], "ada");
    // History: still listed, as resolved.
    let h = get(&f.app, "/api/v1/alerts?state=resolved", Some(&f.operator)).await;
    assert_eq!(h.json()[0]["id"], id);
    let s = get(&f.app, "/api/v1/summary", Some(&f.admin)).await;
    assert_eq!(s.json()["open_alerts"], 0);
    let missing = post(&f.app, "/api/v1/alerts/999999/ack", &f.admin, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = get(&f.app, "/api/v1/alerts?state=closed", Some(&f.admin)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn limits_are_read_by_operators_and_overridden_per_apr_by_admins_only() {
    let f = fixture();
    started(&f);
    let uri = format!("/api/v1/aprs/{OP_APR}/limits");
    let r = get(&f.app, &uri, Some(&f.operator)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["limits"]["chlorine_min_mg_l"], 0.2);
    assert_eq!(r.json()["limits"]["min_duration_s"], 600);
    let r = put(&f.app, &uri, &f.operator, json!({"min_duration_s": 0})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = put(&f.app, &uri, &f.admin, json!({"min_duration_s": 0})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["overrides"][0]["key"], "min_duration_s");
    assert_eq!(r.json()["overrides"][0]["set_by"], "ada");
    for bad in [
        json!({"chlorine_mni": 1}),
        json!({"chlorine_low_clear_mg_l": 0.1}),
    ] {
        let r = put(&f.app, &uri, &f.admin, bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    }
    // With no minimum duration one reading raises; another APR keeps 10 min.
    let b = batch(OP_APR, "d1", apr_wire::Metric::Chlorine, &[(T0, 0.1)]);
    post_batch(&f.app, &f.gateway, &b).await;
    let a = wait_alert(&f, "", |l| l.first().cloned()).await;
    assert_eq!(a["opened_at"], "2025-11-25T10:00:00.000Z");
    let r = put(&f.app, &uri, &f.admin, json!({"min_duration_s": null})).await;
    assert_eq!(r.json()["overrides"], json!([]));
}

#[tokio::test]
async fn an_alert_survives_a_server_restart_in_its_state_and_so_does_a_pending_condition() {
    let Fixture {
        dir,
        state,
        app,
        admin,
        operator,
        gateway,
        ..
    } = fixture();
    let path = dir.path().join("store.sqlite3");
    let f = Fixture {
        dir,
        state,
        app,
        admin,
        engineer: String::new(),
        operator,
        gore: String::new(),
        gateway,
    };
    started(&f);
    let chlorine = batch(
        OP_APR,
        "d1",
        apr_wire::Metric::Chlorine,
        &[(T0, 0.1), (T0 + 11 * MIN, 0.1)],
    );
    post_batch(&f.app, &f.gateway, &chlorine).await;
    let turbid = batch(OP_APR, "d2", apr_wire::Metric::Turbidity, &[(T0, 1.5)]);
    post_batch(&f.app, &f.gateway, &turbid).await;
    let a = wait_alert(&f, "", |l| l.first().cloned()).await;
    let id = a["id"].as_i64().unwrap();
    let r = post(
        &f.app,
        &format!("/api/v1/alerts/{id}/ack"),
        &f.operator,
        Some(json!({"comment": "en camino"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let before = r.json();

    // Stop: drop the state (engine thread drains and stops), keep the files.
    let Fixture {
        dir,
        state,
        app,
        admin,
        operator,
        gateway,
        ..
    } = f;
    drop(app);
    drop(state);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut cfg = apr_server::Config::default();
    cfg.store.path = path;
    let state = apr_server::open(&cfg).unwrap();
    let f = Fixture {
        app: apr_server::app(state.clone()),
        dir,
        state,
        admin,
        engineer: String::new(),
        operator,
        gore: String::new(),
        gateway,
    };
    started(&f);
    let after = wait_alert(&f, "?kind=chlorine_low", |l| l.first().cloned()).await;
    for k in [
        "id",
        "state",
        "acknowledged_by",
        "acknowledged_at",
        "acknowledged_comment",
        "opened_at",
        "value",
    ] {
        assert_eq!(after[k], before[k], "{k}");
    }
    // The turbidity condition seen at T0 is still pending: 11 minutes later
    // it raises at once (a forgotten one would start counting again).
    let turbid = batch(
        OP_APR,
        "d2",
        apr_wire::Metric::Turbidity,
        &[(T0 + 11 * MIN, 1.6)],
    );
    post_batch(&f.app, &f.gateway, &turbid).await;
    let t = wait_alert(&f, "?kind=turbidity_high", |l| l.first().cloned()).await;
    assert_eq!(t["opened_at"], "2025-11-25T10:11:00.000Z");
    assert_eq!(t["state"], "open");
    // And the chlorine alert is not raised twice.
    let c = get(&f.app, "/api/v1/alerts?kind=chlorine_low", Some(&f.admin)).await;
    assert_eq!(c.json().as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn notification_preferences_are_set_by_admins_or_the_user_and_never_show_the_secret() {
    let f = fixture();
    let uri = "/api/v1/users/olga/notifications";
    let prefs = json!([{"channel": "webhook", "address": "http://127.0.0.1:9/hook",
        "secret": "0123456789abcdef", "min_severity": "warning"}]);
    let r = put(&f.app, uri, &f.engineer, prefs.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = put(&f.app, uri, &f.admin, prefs).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = get(&f.app, uri, Some(&f.operator)).await;
    assert_eq!(r.status, StatusCode::OK);
    let p = &r.json()[0];
    assert_eq!(p["channel"], "webhook");
    assert_eq!(p["secret_set"], true);
    assert!(p.get("secret").is_none(), "{p}");
    let r = put(
        &f.app,
        uri,
        &f.operator,
        json!([{"channel": "webhook", "address": "http://x/", "secret": "short"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = put(
        &f.app,
        uri,
        &f.operator,
        json!([{"channel": "email", "address": "nadie"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// Python's aiosmtpd on a free loopback port, writing each message it
/// receives as a JSON line (recipients, decoded subject, body). Killed on drop.
struct SmtpServer {
    port: u16,
    out: std::path::PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

const SMTP_SCRIPT: &str = r#"
import email, json, sys
from email import policy
from aiosmtpd.controller import Controller

class Save:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps({"to": envelope.rcpt_tos, "subject": str(msg["subject"]),
                                "body": msg.get_content()}) + "\n")
        return "250 OK"

c = Controller(Save(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"#;

impl SmtpServer {
    fn start() -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("smtp.py");
        std::fs::File::create(&script)
            .unwrap()
            .write_all(SMTP_SCRIPT.as_bytes())
            .unwrap();
        let out = dir.path().join("messages.jsonl");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "aiosmtpd did not start: install it with `bash tests/setup.sh` \
             (python3 -m pip install aiosmtpd)"
        );
        SmtpServer {
            port,
            out,
            child,
            _dir: dir,
        }
    }

    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_reaches_an_operator_by_email_with_its_apr_and_kind_in_spanish() {
    let smtp = SmtpServer::start();
    let f = fixture_with(|c| {
        c.notify.smtp_host = Some("127.0.0.1".into());
        c.notify.smtp_port = smtp.port;
    });
    started(&f);
    let r = put(
        &f.app,
        "/api/v1/users/olga/notifications",
        &f.admin,
        json!([{"channel": "email", "address": "olga@apr.localhost", "min_severity": "warning"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    put(
        &f.app,
        &format!("/api/v1/aprs/{OP_APR}/limits"),
        &f.admin,
        json!({"min_duration_s": 0}),
    )
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    let b = batch(OP_APR, "caseta", apr_wire::Metric::Chlorine, &[(now, 0.05)]);
    assert_eq!(
        post_batch(&f.app, &f.gateway, &b).await.status,
        StatusCode::OK
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        if let Some(m) = smtp.messages().into_iter().next() {
            break m;
        }
        assert!(Instant::now() < deadline, "no e-mail arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(m["to"], json!(["olga@apr.localhost"]));
    let subject = m["subject"].as_str().unwrap();
    assert!(subject.contains("cloro libre bajo"), "{subject}");
    assert!(subject.contains(&format!("({OP_APR})")), "{subject}");
    assert!(subject.starts_with("[APR] Alerta"), "{subject}");
    let body = m["body"].as_str().unwrap();
    assert!(body.contains("Valor: 0.05"), "{body}");
    // The notifier counts the delivery once the relay has answered the
    // whole exchange, which may be just after the message is in the relay.
    let sent = "apr_notifications_total{channel=\"email\",result=\"sent\"} 1";
    loop {
        let metrics = get(&f.app, "/metrics", None).await.text();
        if metrics.contains(sent) {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn dpd_checks_that_disagree_with_the_probe_raise_a_recalibration_alert_and_an_agreeing_one_clears_it(
) {
    let f = fixture();
    started(&f);
    let now = chrono::Utc::now().timestamp_millis();
    let hours = [4, 3, 2];
    // The probe reads 1.0 mg/L at each check; the DPD kit says 0.5.
    let probe: Vec<(i64, f64)> = hours.iter().map(|h| (now - h * 60 * MIN, 1.0)).collect();
    let b = batch(OP_APR, "caseta", apr_wire::Metric::Chlorine, &probe);
    assert_eq!(
        post_batch(&f.app, &f.gateway, &b).await.status,
        StatusCode::OK
    );
    let uri = format!("/api/v1/aprs/{OP_APR}/field-records");
    let dpd = |t: i64, v: f64| {
        json!({
            "kind": "dpd_chlorine",
            "value": v,
            "taken_at": chrono::DateTime::from_timestamp_millis(t).unwrap().to_rfc3339(),
        })
    };
    let pass = |f: &Fixture| {
        let state = f.state.clone();
        tokio::task::spawn_blocking(move || apr_server::api::refresh_analysis(&state))
    };
    // Two checks off: not yet a drift (three are needed), no alert.
    for (t, _) in &probe[..2] {
        let r = post(&f.app, &uri, &f.operator, Some(dpd(*t, 0.5))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    pass(&f).await.unwrap().unwrap();
    let q = "?kind=chlorine_probe_drift";
    let none = get(&f.app, &format!("/api/v1/alerts{q}"), Some(&f.admin)).await;
    assert_eq!(
        none.json().as_array().map(Vec::len),
        Some(0),
        "{}",
        none.text()
    );
    // The third: the probe drifts high by 0.5 mg/L (tolerance 0.1).
    let r = post(&f.app, &uri, &f.operator, Some(dpd(probe[2].0, 0.5))).await;
    assert_eq!(r.status, StatusCode::OK);
    pass(&f).await.unwrap().unwrap();
    let open = wait_alert(&f, q, |l| l.first().cloned()).await;
    assert_eq!(open["state"], "open");
    assert_eq!(open["device"], "caseta");
    assert_eq!(open["severity"], "warning");
    assert!(
        (open["value"].as_f64().unwrap() - 0.5).abs() < 1e-9,
        "{open}"
    );
    assert!(
        (open["threshold"].as_f64().unwrap() - 0.1).abs() < 1e-9,
        "{open}"
    );
    // Another pass with no new check: still the one alert.
    pass(&f).await.unwrap().unwrap();
    let again = get(&f.app, &format!("/api/v1/alerts{q}"), Some(&f.admin)).await;
    assert_eq!(
        again.json().as_array().map(Vec::len),
        Some(1),
        "{}",
        again.text()
    );
    // After recalibration the next check agrees: the alert clears itself.
    let t = now - 60 * MIN;
    let b = batch(OP_APR, "caseta", apr_wire::Metric::Chlorine, &[(t, 0.52)]);
    assert_eq!(
        post_batch(&f.app, &f.gateway, &b).await.status,
        StatusCode::OK
    );
    let r = post(&f.app, &uri, &f.operator, Some(dpd(t, 0.5))).await;
    assert_eq!(r.status, StatusCode::OK);
    pass(&f).await.unwrap().unwrap();
    let id = open["id"].as_i64().unwrap();
    let resolved = wait_alert(&f, "?state=resolved", |l| {
        l.iter().find(|a| a["id"].as_i64() == Some(id)).cloned()
    })
    .await;
    assert_eq!(resolved["kind"], "chlorine_probe_drift");
}
