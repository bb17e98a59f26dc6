//! Accounts and the audit log: login lockout per account and per address
//! (told in Spanish, the same whether the account exists or not), session
//! expiry from `[ui]`, token revocation (API and CLI) taking effect at once,
//! the password policy, one audit entry per write action with its
//! before/after, and no secret in a debug-level log of the whole flow.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apr_server::audit::AuditQuery;
use apr_server::auth::{self, NewUser, Role};
use apr_server::store::UserInsert;
use apr_server::Error;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use common::{batch, fixture, fixture_with, get, post_batch, request, send, OP_APR, RM_APR, T0};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const PASSWORD: &str = "tanque-lleno-77";
const PRESESSION: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

async fn login_as(
    app: &Router,
    user: &str,
    password: &str,
    peer: [u8; 4],
) -> (StatusCode, Option<String>, String) {
    let body = format!("username={user}&password={password}&csrf_token={PRESESSION}");
    let mut req = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, format!("apr_presession={PRESESSION}"))
        .body(Body::from(body))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let cookie = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("apr_session="))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    let b = res.into_body().collect().await.unwrap().to_bytes();
    (status, cookie, String::from_utf8_lossy(&b).into_owned())
}

fn with_password(f: &common::Fixture, user: &str) {
    auth::change_password(f.state.registry(), user, PASSWORD).unwrap();
}

#[tokio::test]
async fn an_account_locks_after_five_failures_and_says_so_in_spanish_whether_or_not_it_exists() {
    let f = fixture();
    with_password(&f, "olga");
    for i in 0..4 {
        let (s, _, html) = login_as(&f.app, "olga", "mala-clave-123", [10, 0, 0, 1]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(html.contains("Usuario o contraseña incorrectos"), "{html}");
    }
    // The fifth failure locks the account; from then on even the right
    // password is refused, with the throttle message.
    let (s, _, html) = login_as(&f.app, "olga", "mala-clave-123", [10, 0, 0, 2]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(html.contains("Demasiados intentos"), "{html}");
    let (s, cookie, _) = login_as(&f.app, "olga", PASSWORD, [10, 0, 0, 3]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(cookie.is_none());
    // An account that does not exist answers exactly alike.
    for _ in 0..4 {
        let (s, _, _) = login_as(&f.app, "nadie", "mala-clave-123", [10, 0, 0, 4]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _, html_unknown) = login_as(&f.app, "nadie", "mala-clave-123", [10, 0, 0, 5]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(html_unknown.contains("Demasiados intentos"));
    // Another account is not affected.
    with_password(&f, "eli");
    let (s, cookie, _) = login_as(&f.app, "eli", PASSWORD, [10, 0, 0, 6]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(cookie.is_some());
}

#[tokio::test]
async fn a_locked_account_opens_again_after_the_cool_down() {
    let f = fixture_with(|c| {
        c.ui.lockout_failures = 2;
        c.ui.lockout_s = 1;
    });
    with_password(&f, "olga");
    login_as(&f.app, "olga", "mala-clave-123", [10, 0, 1, 1]).await;
    let (s, _, _) = login_as(&f.app, "olga", "mala-clave-123", [10, 0, 1, 1]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let (s, _, _) = login_as(&f.app, "olga", PASSWORD, [10, 0, 1, 1]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, cookie, _) = login_as(&f.app, "olga", PASSWORD, [10, 0, 1, 1]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(cookie.is_some());
}

#[tokio::test]
async fn one_address_trying_many_accounts_must_wait() {
    let f = fixture_with(|c| c.ui.address_failures = 3);
    with_password(&f, "olga");
    for user in ["a1", "a2", "a3"] {
        let (s, _, _) = login_as(&f.app, user, "mala-clave-123", [10, 0, 2, 1]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _, html) = login_as(&f.app, "olga", PASSWORD, [10, 0, 2, 1]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "the address is throttled");
    assert!(html.contains("Demasiados intentos"));
    let (s, _, _) = login_as(&f.app, "olga", PASSWORD, [10, 0, 2, 2]).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "another address is not");
}

#[tokio::test]
async fn sessions_expire_after_the_configured_idle_time() {
    let f = fixture_with(|c| c.ui.session_idle_s = 1);
    with_password(&f, "eli");
    let (_, cookie, _) = login_as(&f.app, "eli", PASSWORD, [10, 0, 3, 1]).await;
    let cookie = cookie.expect("session");
    let page = |cookie: String| {
        let app = f.app.clone();
        async move {
            let req = Request::get("/ingenieria")
                .header(header::COOKIE, format!("apr_session={cookie}"))
                .body(Body::empty())
                .unwrap();
            let r = app.oneshot(req).await.unwrap();
            let loc = r
                .headers()
                .get(header::LOCATION)
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status(), loc)
        }
    };
    assert_eq!(page(cookie.clone()).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, loc) = page(cookie).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(loc.unwrap_or_default().contains("expired=1"));
}

#[test]
fn the_password_policy_refuses_short_common_and_username_passwords_everywhere() {
    let f = fixture();
    let r = f.state.registry();
    let new = |name: &str, pw: &str| NewUser {
        username: name.into(),
        role: Role::Engineer,
        password: Some(pw.into()),
        aprs: vec![],
        region: None,
    };
    for (name, pw, why) in [
        ("ana", "corta", "characters"),
        ("ana", "Password123", "common"),
        ("ana", "contraseña 123", "common"),
        ("mariela", "mariela-2025", "username"),
    ] {
        match auth::create_user(r, &new(name, pw)) {
            Err(Error::WeakPassword(m)) => assert!(m.contains(why), "{pw}: {m}"),
            other => panic!("{pw}: {other:?}"),
        }
    }
    auth::create_user(r, &new("ana", PASSWORD)).unwrap();
    assert!(matches!(
        auth::change_password(r, "ana", "aguapotable123"),
        Err(Error::WeakPassword(_))
    ));
    assert!(matches!(
        auth::change_password(r, "ana", "ana-la-operadora"),
        Err(Error::WeakPassword(_))
    ));
    auth::change_password(r, "ana", "otra-clave-larga-9").unwrap();
    assert!(auth::login(r, "ana", "otra-clave-larga-9")
        .unwrap()
        .is_some());
    assert!(auth::login(r, "ana", PASSWORD).unwrap().is_none());
}

fn cli(f: &common::Fixture, args: &[&str], password: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_apr-server"));
    cmd.args(args)
        .env(
            "APR_SERVER__STORE__PATH",
            f.dir.path().join("store.sqlite3"),
        )
        .env("RUST_LOG", "debug")
        .stdin(std::process::Stdio::piped());
    match password {
        Some(p) => cmd.env("APR_PASSWORD", p),
        None => cmd.env_remove("APR_PASSWORD"),
    };
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn the_cli_enforces_the_policy_and_revokes_tokens_at_once_with_an_audit_entry() {
    let f = fixture();
    let weak = cli(
        &f,
        &["user", "add", "--username", "rosa", "--role", "engineer"],
        Some("password123"),
    );
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("common"));
    let ok = cli(
        &f,
        &["user", "add", "--username", "rosa", "--role", "engineer"],
        Some(PASSWORD),
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let created = cli(&f, &["token", "create", "--username", "rosa"], None);
    assert!(created.status.success());
    let token = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert_eq!(
        get(&f.app, "/api/v1/aprs", Some(&token)).await.status,
        StatusCode::OK
    );
    let id = auth::token_id(&token);
    let listed = cli(&f, &["token", "list", "--username", "rosa"], None);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains(&id) && listed.contains("live"), "{listed}");
    assert!(!listed.contains(&token));
    let revoked = cli(&f, &["token", "revoke", &id], None);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert_eq!(
        get(&f.app, "/api/v1/aprs", Some(&token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = cli(&f, &["token", "revoke", &id], None);
    assert!(!again.status.success(), "a second revoke is refused");
    let entries = f
        .state
        .registry()
        .audit(&AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["token.revoke", "token.create", "user.create"]);
    let rev = &entries[0];
    assert_eq!(rev.via, "cli");
    assert!(rev.actor.starts_with("cli:"));
    assert_eq!(rev.before.as_ref().unwrap()["revoked_at"], Value::Null);
    assert!(rev.after.as_ref().unwrap()["revoked_at"].is_string());
    assert_eq!(entries[2].after.as_ref().unwrap()["role"], "engineer");
    for e in &entries {
        let text = format!("{:?} {:?}", e.before, e.after);
        assert!(!text.contains(&token) && !text.contains(PASSWORD), "{text}");
    }
    // The CLI's own debug log holds none of the secrets either.
    for out in [&ok, &created, &revoked] {
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!log.contains(&token) && !log.contains(PASSWORD), "{log}");
    }
}

async fn api(
    f: &common::Fixture,
    method: Method,
    uri: &str,
    token: &str,
    body: Option<&str>,
) -> common::Answer {
    let mut req = request(
        method,
        uri,
        Some(token),
        body.map(|b| b.as_bytes().to_vec()),
    );
    if uri.ends_with("/billing") {
        req.headers_mut()
            .insert(header::CONTENT_TYPE, "text/csv".parse().unwrap());
    }
    send(&f.app, req).await
}

fn only_entry(f: &common::Fixture, action: &str) -> apr_server::audit::AuditRecord {
    let e = f
        .state
        .registry()
        .audit(&AuditQuery {
            action: Some(action.into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(e.len(), 1, "{action}: {e:?}");
    e.into_iter().next().unwrap()
}

#[tokio::test]
async fn every_api_write_leaves_one_audit_entry_with_its_before_and_after() {
    let f = fixture();
    // One open alert on the operator's APR, before the alert service starts.
    let conn = rusqlite::Connection::open(f.dir.path().join("store.sqlite3")).unwrap();
    conn.execute(
        "INSERT INTO alerts(apr, device, kind, severity, state, opened_at, value, threshold) \
         VALUES (?1, 'caseta', 'chlorine_low', 'critical', 'open', ?2, 0.05, 0.2)",
        rusqlite::params![OP_APR, T0],
    )
    .unwrap();
    let alert = conn.last_insert_rowid();
    drop(conn);
    f.state.start_alerting().unwrap();

    let a = api(
        &f,
        Method::POST,
        &format!("/api/v1/alerts/{alert}/ack"),
        &f.operator,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let e = only_entry(&f, "alert.acknowledge");
    assert_eq!((e.actor.as_str(), e.via.as_str()), ("olga", "api"));
    assert_eq!(e.apr.as_deref(), Some(OP_APR));
    assert_eq!(e.target, alert.to_string());
    assert_eq!(e.before.as_ref().unwrap()["state"], "open");
    assert_eq!(e.after.as_ref().unwrap()["state"], "acknowledged");
    assert!(e.at.ends_with('Z'), "UTC: {}", e.at);

    let a = api(
        &f,
        Method::POST,
        &format!("/api/v1/alerts/{alert}/resolve"),
        &f.admin,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let e = only_entry(&f, "alert.resolve");
    assert_eq!(e.before.as_ref().unwrap()["state"], "acknowledged");
    assert_eq!(e.after.as_ref().unwrap()["state"], "resolved");

    let uri = format!("/api/v1/aprs/{OP_APR}/limits");
    api(
        &f,
        Method::PUT,
        &uri,
        &f.admin,
        Some(r#"{"chlorine_min_mg_l": 0.3}"#),
    )
    .await;
    api(
        &f,
        Method::PUT,
        &uri,
        &f.admin,
        Some(r#"{"chlorine_min_mg_l": null}"#),
    )
    .await;
    let e = f
        .state
        .registry()
        .audit(&AuditQuery {
            action: Some("limits.set".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e[1].before, Some(json!({})));
    assert_eq!(e[1].after, Some(json!({"chlorine_min_mg_l": 0.3})));
    assert_eq!(e[0].before, Some(json!({"chlorine_min_mg_l": 0.3})));
    assert_eq!(e[0].after, Some(json!({})));

    let billing = format!("/api/v1/aprs/{OP_APR}/billing");
    let a = api(
        &f,
        Method::POST,
        &billing,
        &f.operator,
        Some("month,billed_m3\n2025-10,1234.5\n"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let e = only_entry(&f, "billing.import");
    assert_eq!(e.before, Some(json!({})));
    assert_eq!(e.after, Some(json!({"2025-10": 1234.5})));

    let fr = format!("/api/v1/aprs/{OP_APR}/field-records");
    let a = api(
        &f,
        Method::POST,
        &fr,
        &f.operator,
        Some(r#"{"kind":"dpd_chlorine","value":0.4}"#),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let e = only_entry(&f, "field_record.create");
    assert_eq!(e.before, None);
    assert_eq!(e.after.as_ref().unwrap()["value"], 0.4);
    assert_eq!(e.target, a.json()["id"].to_string());

    let iv = format!("/api/v1/aprs/{OP_APR}/interventions");
    let body = r#"{"component":"technology","description":"dosificadora","cost_clp":900000,
        "funder":"GORE","started":"2025-09-01","finished":"2025-09-02"}"#;
    let a = api(&f, Method::POST, &iv, &f.engineer, Some(body)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let e = only_entry(&f, "intervention.create");
    assert_eq!(e.after.as_ref().unwrap()["cost_clp"], 900000);
    assert_eq!(e.actor, "eli");

    let secret = "webhook-secret-0123456789";
    let prefs = format!(
        r#"[{{"channel":"webhook","address":"http://127.0.0.1:9/hook","secret":"{secret}"}}]"#
    );
    let a = api(
        &f,
        Method::PUT,
        "/api/v1/users/olga/notifications",
        &f.operator,
        Some(&prefs),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let e = only_entry(&f, "notifications.set");
    assert_eq!(e.before, Some(json!([])));
    assert_eq!(e.after.as_ref().unwrap()[0]["secret_set"], true);
    assert!(!format!("{:?}", e.after).contains(secret));

    // Token revocation: 401 from the next request on, one entry.
    let spare = {
        f.state
            .registry()
            .insert_user(&UserInsert {
                username: "spare".into(),
                role: Role::Engineer,
                password_argon2: None,
                region: None,
                aprs: vec![],
            })
            .unwrap();
        auth::create_token(f.state.registry(), "spare", None).unwrap()
    };
    assert_eq!(
        get(&f.app, "/api/v1/aprs", Some(&spare)).await.status,
        StatusCode::OK
    );
    let id = auth::token_id(&spare);
    let a = api(
        &f,
        Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        &f.engineer,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "engineers may not revoke");
    let a = api(
        &f,
        Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        &f.admin,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        get(&f.app, "/api/v1/aprs", Some(&spare)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let a = api(
        &f,
        Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        &f.admin,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    let a = api(&f, Method::DELETE, "/api/v1/tokens/nothex", &f.admin, None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let e = only_entry(&f, "token.revoke");
    assert_eq!(e.target, id);
    assert!(e.after.as_ref().unwrap()["revoked_at"].is_string());

    // Ingest is data, not an action: no entry.
    let b = batch(OP_APR, "caseta", apr_wire::Metric::Chlorine, &[(T0, 0.5)]);
    assert_eq!(
        post_batch(&f.app, &f.gateway, &b).await.status,
        StatusCode::OK
    );

    // Read back: admins everything, GORE its region's APRs, others nothing.
    let all = get(&f.app, "/api/v1/audit", Some(&f.admin)).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.json().as_array().unwrap().len(), 9);
    let gore = get(&f.app, "/api/v1/audit", Some(&f.gore)).await;
    assert_eq!(gore.status, StatusCode::OK);
    let g = gore.json();
    assert!(!g.as_array().unwrap().is_empty());
    assert!(g.as_array().unwrap().iter().all(|e| e["apr"] == OP_APR));
    let out = get(
        &f.app,
        &format!("/api/v1/audit?apr={RM_APR}"),
        Some(&f.gore),
    )
    .await;
    assert_eq!(out.status, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&f.app, "/api/v1/audit", Some(&f.engineer)).await.status,
        StatusCode::FORBIDDEN
    );
    let q = get(
        &f.app,
        "/api/v1/audit?action=limits.set&limit=1",
        Some(&f.admin),
    )
    .await;
    assert_eq!(q.json().as_array().unwrap().len(), 1);
    assert_eq!(
        get(&f.app, "/api/v1/audit?limit=0", Some(&f.admin))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

/// A writer that keeps everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_secret_reaches_a_debug_log_of_a_full_flow() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    // Global, so the store's blocking threads and the alert service log
    // into it too (the other tests of this binary add their lines).
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut secrets: Vec<String> = vec![PASSWORD.into()];
    rt.block_on(async {
        let f = fixture();
        f.state.start_alerting().unwrap();
        secrets.extend([
            f.admin.clone(),
            f.operator.clone(),
            f.gateway.clone(),
            f.gore.clone(),
        ]);
        with_password(&f, "ada");
        with_password(&f, "olga");
        // Logins: good, bad (the typed password is a secret too).
        let wrong = "casi-la-clave-77";
        secrets.push(wrong.into());
        login_as(&f.app, "olga", wrong, [10, 9, 0, 1]).await;
        let (_, admin_cookie, _) = login_as(&f.app, "ada", PASSWORD, [10, 9, 0, 1]).await;
        let admin_cookie = admin_cookie.expect("admin session");
        secrets.push(admin_cookie.clone());
        // The admin page: a device (its MQTT password is shown once), a
        // token, a user with a password.
        let page = Request::get("/admin")
            .header(header::COOKIE, format!("apr_session={admin_cookie}"))
            .body(Body::empty())
            .unwrap();
        let r = f.app.clone().oneshot(page).await.unwrap();
        let html = String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes())
            .into_owned();
        let at = html.find("name=\"csrf_token\" value=\"").unwrap() + 26;
        let csrf = html[at..].split('"').next().unwrap().to_owned();
        secrets.push(csrf.clone());
        for (path, form) in [
            ("/admin/equipos", format!("apr={OP_APR}&device=caseta")),
            ("/admin/usuarios/olga/token", String::new()),
            (
                "/admin/usuarios",
                "username=nuevo&role=engineer&password=otra-clave-larga-9&scope=".to_string(),
            ),
        ] {
            let req = Request::post(path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::COOKIE, format!("apr_session={admin_cookie}"))
                .body(Body::from(format!("{form}&csrf_token={csrf}")))
                .unwrap();
            let r = f.app.clone().oneshot(req).await.unwrap();
            let b = r.into_body().collect().await.unwrap().to_bytes();
            let html = String::from_utf8_lossy(&b);
            if let Some(at) = html.find("<code>") {
                let s = html[at + 6..].split('<').next().unwrap().to_owned();
                if s.len() >= 16 {
                    secrets.push(s);
                }
            }
        }
        secrets.push("otra-clave-larga-9".into());
        // A webhook secret, token use on every kind of route, ingest.
        let hook = "webhook-secret-abcdef0123";
        secrets.push(hook.into());
        let prefs = format!(
            r#"[{{"channel":"webhook","address":"http://127.0.0.1:9/h","secret":"{hook}"}}]"#
        );
        api(
            &f,
            Method::PUT,
            "/api/v1/users/olga/notifications",
            &f.operator,
            Some(&prefs),
        )
        .await;
        get(&f.app, "/api/v1/aprs", Some(&f.operator)).await;
        get(&f.app, &format!("/api/v1/aprs/{RM_APR}"), Some(&f.operator)).await;
        get(&f.app, "/api/v1/aprs", Some("apr_deadbeef-not-a-token")).await;
        let b = batch(OP_APR, "caseta", apr_wire::Metric::Chlorine, &[(T0, 0.05)]);
        post_batch(&f.app, &f.gateway, &b).await;
        get(&f.app, "/api/v1/gateway/devices", Some(&f.gateway)).await;
        get(&f.app, "/api/v1/tokens", Some(&f.admin)).await;
    });
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(log.len() > 1000, "the flow was logged: {} bytes", log.len());
    assert!(
        log.contains("DEBUG") || log.contains("TRACE"),
        "debug level captured"
    );
    secrets.retain(|s| s.len() >= 8);
    assert!(secrets.len() >= 10, "{secrets:?}");
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret is in the log: {s}");
    }
}
