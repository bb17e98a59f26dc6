//! The web UI through `oneshot`: login and sessions, CSRF on every form,
//! scope errors as Spanish pages, escaping, and the series explorer's
//! render time over a year of 1-minute data (ignored by default; run with
//! `cargo test --release -p apr-server --test ui -- --ignored --nocapture`).

mod common;

use std::time::Instant;

use apr_server::auth::{self, NewUser, Role};
use apr_server::store::{AprRecord, Region};
use apr_wire::Metric;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::*;

const PASSWORD: &str = "una clave larga 123";

/// A user with a password (the fixture's users have none).
fn with_password(f: &Fixture, username: &str, role: Role, aprs: &[&str], region: Option<&str>) {
    auth::create_user(
        f.state.registry(),
        &NewUser {
            username: username.into(),
            role,
            password: Some(PASSWORD.into()),
            aprs: aprs.iter().map(|s| (*s).to_owned()).collect(),
            region: region.map(Into::into),
        },
    )
    .unwrap();
}

fn set_cookies(a: &Answer) -> Vec<String> {
    a.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn cookie_value(a: &Answer, name: &str) -> Option<String> {
    set_cookies(a).iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_owned())
    })
}

/// The value of the first hidden `csrf_token` field of a page.
fn csrf_of(html: &str) -> String {
    let i = html
        .find("name=\"csrf_token\" value=\"")
        .expect("a csrf field")
        + 25;
    html[i..i + html[i..].find('"').unwrap()].to_owned()
}

fn page(method: Method, uri: &str, cookie: Option<&str>, form: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    if form.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    b.body(form.map_or_else(Body::empty, |f| Body::from(f.to_owned())))
        .unwrap()
}

/// Signs in through the login form; answers the session cookie and the
/// session's CSRF token (read from the landing page).
async fn sign_in(f: &Fixture, username: &str) -> (String, String) {
    let form = send(&f.app, page(Method::GET, "/login", None, None)).await;
    assert_eq!(form.status, StatusCode::OK);
    let pre = cookie_value(&form, "apr_presession").expect("a pre-session cookie");
    let csrf = csrf_of(&form.text());
    assert_eq!(csrf, pre);
    let body = format!("csrf_token={csrf}&username={username}&password=una+clave+larga+123");
    let r = send(
        &f.app,
        page(
            Method::POST,
            "/login",
            Some(&format!("apr_presession={pre}")),
            Some(&body),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("apr_session="))
        .expect("a session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    let session = format!("apr_session={}", cookie_value(&r, "apr_session").unwrap());
    let to = r.headers[header::LOCATION].to_str().unwrap().to_owned();
    let home = send(&f.app, page(Method::GET, &to, Some(&session), None)).await;
    assert_eq!(home.status, StatusCode::OK, "{to}: {}", home.text());
    (session, csrf_of(&home.text()))
}

#[tokio::test]
async fn an_operator_signs_in_and_lands_on_their_apr_in_spanish() {
    let f = fixture();
    with_password(&f, "opa", Role::Operator, &[OP_APR], None);
    let (session, _) = sign_in(&f, "opa").await;
    let home = send(&f.app, page(Method::GET, "/operador", Some(&session), None)).await;
    let html = home.text();
    assert!(html.contains("<html lang=\"es-CL\">"), "{html}");
    assert!(html.contains("Los Cerrillos"), "{html}");
    assert_eq!(home.headers[header::CACHE_CONTROL], "no-store");
    let root = send(&f.app, page(Method::GET, "/", Some(&session), None)).await;
    assert_eq!(root.status, StatusCode::SEE_OTHER);
    assert_eq!(root.headers[header::LOCATION], "/operador");
}

#[tokio::test]
async fn a_wrong_password_shows_the_form_again_without_saying_which_part_was_wrong() {
    let f = fixture();
    with_password(&f, "opa", Role::Operator, &[OP_APR], None);
    let form = send(&f.app, page(Method::GET, "/login", None, None)).await;
    let pre = cookie_value(&form, "apr_presession").unwrap();
    let r = send(
        &f.app,
        page(
            Method::POST,
            "/login",
            Some(&format!("apr_presession={pre}")),
            Some(&format!(
                "csrf_token={pre}&username=opa&password=otra+clave+larga"
            )),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(cookie_value(&r, "apr_session").is_none());
}

#[tokio::test]
async fn a_form_post_without_the_csrf_token_is_refused_with_403() {
    let f = fixture();
    with_password(&f, "opa", Role::Operator, &[OP_APR], None);
    let (session, csrf) = sign_in(&f, "opa").await;
    for body in [
        "comment=ok".to_owned(),
        "csrf_token=0000&comment=ok".to_owned(),
    ] {
        let r = send(
            &f.app,
            page(
                Method::POST,
                "/alertas/1/reconocer",
                Some(&session),
                Some(&body),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.text().contains("El formulario expiró"), "{}", r.text());
    }
    // The login form needs its pre-session token too.
    let r = send(
        &f.app,
        page(
            Method::POST,
            "/login",
            None,
            Some("username=opa&password=x"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // With the token, logout works and ends the session.
    let r = send(
        &f.app,
        page(
            Method::POST,
            "/logout",
            Some(&session),
            Some(&format!("csrf_token={csrf}")),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let after = send(&f.app, page(Method::GET, "/operador", Some(&session), None)).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert!(after.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .starts_with("/login?next=/operador"));
}

#[tokio::test]
async fn an_operator_opening_another_aprs_page_gets_the_spanish_403_page() {
    let f = fixture();
    with_password(&f, "opa", Role::Operator, &[OP_APR], None);
    let (session, _) = sign_in(&f, "opa").await;
    for uri in [
        format!("/operador/{RM_APR}"),
        "/operador/no-such-apr".to_owned(),
        format!("/ingenieria/{OP_APR}"),
        "/admin".to_owned(),
    ] {
        let r = send(&f.app, page(Method::GET, &uri, Some(&session), None)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}");
        let html = r.text();
        assert!(html.contains("No tiene acceso"), "{uri}: {html}");
        assert!(
            !html.contains("panicked") && !html.contains("src/"),
            "{html}"
        );
    }
    let en = send(
        &f.app,
        page(
            Method::GET,
            &format!("/operador/{RM_APR}?lang=en"),
            Some(&session),
            None,
        ),
    )
    .await;
    assert_eq!(en.status, StatusCode::FORBIDDEN);
    assert!(en.text().contains("<html lang=\"en\">"));
    assert!(cookie_value(&en, "apr_lang").as_deref() == Some("en"));
}

#[tokio::test]
async fn the_session_cookie_is_secure_over_https_and_when_configured() {
    let f = fixture_with(|c| c.ui.secure_cookies = true);
    with_password(&f, "opa", Role::Operator, &[OP_APR], None);
    let form = send(&f.app, page(Method::GET, "/login", None, None)).await;
    assert!(set_cookies(&form).iter().all(|c| c.contains("; Secure")));
    let plain = fixture();
    let mut req = page(Method::GET, "/login", None, None);
    req.headers_mut()
        .insert("x-forwarded-proto", "https".parse().unwrap());
    let r = send(&plain.app, req).await;
    assert!(set_cookies(&r).iter().all(|c| c.contains("; Secure")));
    let r = send(&plain.app, page(Method::GET, "/login", None, None)).await;
    assert!(set_cookies(&r).iter().all(|c| !c.contains("Secure")));
}

#[tokio::test]
async fn the_stylesheet_is_served_with_a_year_of_cache() {
    let f = fixture();
    let r = send(&f.app, page(Method::GET, "/static/app.css", None, None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("max-age=31536000"));
    let login = send(&f.app, page(Method::GET, "/login", None, None)).await;
    assert!(login.text().contains("href=\"/static/app.css?v="));
}

#[tokio::test]
async fn an_apr_name_with_markup_is_shown_as_text() {
    let f = fixture();
    let mut apr: AprRecord = f.state.registry().apr(OP_APR).unwrap().unwrap();
    apr.name = "<script>alert(1)</script> & <b>x</b>".into();
    let region = Region {
        id: apr.region.clone(),
        name: "Biobío".into(),
    };
    f.state.registry().upsert_fleet(&[region], &[apr]).unwrap();
    with_password(&f, "ing", Role::Engineer, &[], None);
    let (session, _) = sign_in(&f, "ing").await;
    for uri in ["/ingenieria".to_owned(), format!("/operador/{OP_APR}")] {
        let html = send(&f.app, page(Method::GET, &uri, Some(&session), None))
            .await
            .text();
        assert!(!html.contains("<script>alert(1)"), "{uri}");
        assert!(!html.contains("<b>x</b>"), "{uri}");
        assert!(
            html.contains("&#60;script&#62;alert(1)") || html.contains("&lt;script&gt;alert(1)"),
            "{uri}: the name is not escaped"
        );
    }
}

#[tokio::test]
async fn the_gore_page_shows_the_programme_figures_for_an_admin() {
    let f = fixture();
    with_password(&f, "adm", Role::Admin, &[], None);
    let (session, _) = sign_in(&f, "adm").await;
    let html = send(&f.app, page(Method::GET, "/gore", Some(&session), None))
        .await
        .text();
    for fig in ["21.092", "$ 5.071.159.500", "$ 52.740.058.800"] {
        assert!(html.contains(fig), "{fig} missing");
    }
}

/// Median of the explorer's server time (request in, HTML out: the store's
/// bucket query, the raw count, the chart and the page) over a year of
/// 1-minute chlorine readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "inserts 525,600 readings; run in release with --ignored"]
async fn the_series_explorer_draws_a_year_of_one_minute_data_quickly() {
    let f = fixture();
    let year_ms = 365 * 86_400_000i64;
    let end = T0;
    let start = end - year_ms;
    let points: Vec<(i64, f64)> = (0..525_600i64)
        .map(|i| (start + i * 60_000, 0.5 + 0.3 * ((i as f64) / 1440.0).sin()))
        .collect();
    for chunk in points.chunks(100_000) {
        f.state
            .series()
            .write_batch(batch(OP_APR, "caseta", Metric::Chlorine, chunk))
            .unwrap();
    }
    with_password(&f, "ing", Role::Engineer, &[], None);
    let (session, _) = sign_in(&f, "ing").await;
    let from = chrono::DateTime::from_timestamp_millis(start)
        .unwrap()
        .with_timezone(&chrono_tz::America::Santiago)
        .format("%Y-%m-%dT%H:%M");
    let to = chrono::DateTime::from_timestamp_millis(end)
        .unwrap()
        .with_timezone(&chrono_tz::America::Santiago)
        .format("%Y-%m-%dT%H:%M");
    let uri = format!("/ingenieria/{OP_APR}?metric=chlorine&from={from}&to={to}");
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..21 {
        let t = Instant::now();
        let r = send(&f.app, page(Method::GET, &uri, Some(&session), None)).await;
        times.push(t.elapsed());
        assert_eq!(r.status, StatusCode::OK);
        size = r.body.len();
        assert!(
            r.text().contains("525.600"),
            "the caption counts every raw reading"
        );
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "explorer, one year of 1-minute data: median {:.1} ms (min {:.1}, max {:.1}), page {size} bytes",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
}

#[tokio::test]
async fn a_dpd_check_entered_on_the_operator_page_is_a_field_record_the_assessment_reads() {
    let f = fixture();
    // A check an early build kept in the UI's own table: taken over into
    // the field records when the UI opens the store.
    let legacy_ms = chrono::Utc::now().timestamp_millis() - 86_400_000;
    rusqlite::Connection::open(f.dir.path().join("store.sqlite3"))
        .unwrap()
        .execute_batch(&format!(
            "CREATE TABLE ui_dpd_checks(id INTEGER PRIMARY KEY, apr TEXT NOT NULL, \
             taken_ms INTEGER NOT NULL, value_mg_l REAL NOT NULL, place TEXT NOT NULL, \
             probe_mg_l REAL, recorded_by TEXT NOT NULL, recorded_ms INTEGER NOT NULL); \
             INSERT INTO ui_dpd_checks VALUES (1, '{OP_APR}', {legacy_ms}, 0.3, 'pila', 0.9, \
             'olga', {legacy_ms});"
        ))
        .unwrap();
    with_password(&f, "opa", Role::Operator, &[OP_APR], None);
    let (session, csrf) = sign_in(&f, "opa").await;
    let now = chrono::Utc::now().with_timezone(&chrono_tz::America::Santiago);
    let taken = now.format("%Y-%m-%dT%H:%M").to_string();
    let post = |body: String| {
        page(
            Method::POST,
            &format!("/operador/{OP_APR}/dpd"),
            Some(&session),
            Some(&body),
        )
    };
    // Out of range, or no time: refused, nothing stored.
    for bad in [
        format!("csrf_token={csrf}&value_mg_l=99&taken_at={taken}&place=red"),
        format!("csrf_token={csrf}&value_mg_l=0.6&taken_at=ayer&place=red"),
    ] {
        let r = send(&f.app, post(bad.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text());
    }
    let uri = format!("/api/v1/aprs/{OP_APR}/field-records?kind=dpd_chlorine");
    let listed = get(&f.app, &uri, Some(&f.operator)).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert_eq!(
        listed.json().as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text()
    );

    let r = send(
        &f.app,
        post(format!(
            "csrf_token={csrf}&value_mg_l=0,45&taken_at={taken}&place=Casa+del+final+de+red"
        )),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    // The API lists it as a field record, recorded by the operator.
    let listed = get(&f.app, &uri, Some(&f.operator)).await.json();
    let rows = listed.as_array().expect("a list");
    assert_eq!(rows.len(), 2, "{listed}");
    // Oldest first: the taken-over check, then the new one.
    assert_eq!(rows[0]["value"], 0.3);
    assert_eq!(rows[0]["note"], "pila");
    assert_eq!(rows[0]["recorded_by"], "olga");
    assert_eq!(rows[1]["kind"], "dpd_chlorine");
    assert_eq!(rows[1]["value"], 0.45);
    assert_eq!(rows[1]["note"], "Casa del final de red");
    assert_eq!(rows[1]["recorded_by"], "opa");
    // The operator page shows it among the recent checks.
    let home = send(
        &f.app,
        page(
            Method::GET,
            &format!("/operador/{OP_APR}"),
            Some(&session),
            None,
        ),
    )
    .await;
    assert!(home.text().contains("0,45"), "{}", home.text());
}
