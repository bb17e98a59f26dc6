//! The authorisation matrix: every route of the API and the web UI × every
//! caller (operator, engineer, gore, admin, gateway, no credentials, bad
//! credentials) × a target in and out of the caller's scope.
//!
//! The routes come from the router's own tables (`apr_server::access::
//! all_routes()`: the API and the UI build their routers only from those
//! tables, and a row cannot be made without an access rule); the expected
//! outcome of each cell comes from the row's rule (`Access::expect`); the
//! answer comes from the real router on a real store. A route added without
//! a concrete request here fails `every_route_has_a_request`; a handler that
//! does not enforce its row's rule fails the matrix; a `.route(` call outside
//! the two table-driven builders fails `routes_are_only_registered_from_the_tables`.
//!
//! How the matrix was shown to fail (2026-11-25, by a script that made
//! the four changes below at once, ran this test and reverted them; each
//! change touches one route, so each route's failing cells are its own):
//! 1. `api/alerts.rs` `lifecycle`: the filter `caller.scope.allows_apr_id(&a.apr)`
//!    on the loaded alert replaced by `|_| true` → `POST /api/v1/alerts/{id}/ack`
//!    and `/resolve` as operator, out of scope: expected Forbidden, got 200.
//! 2. `api/alerts.rs` `put_limits`: the `caller.role != Role::Admin` check
//!    disabled → `PUT /api/v1/aprs/{id}/limits` as operator, engineer and
//!    gore in scope and engineer out of scope: expected Forbidden, got 200.
//! 3. `api/aprs.rs` `readings`: `checked_apr(..)` replaced by a plain
//!    registry lookup → `GET /api/v1/aprs/{id}/readings` as gateway (in and
//!    out of scope), operator and gore out of scope: expected Forbidden, got 200.
//! 4. `ui/operator.rs` `dpd`: `ctx.checked_apr(..)` replaced by a plain
//!    lookup → `POST /operador/{apr}/dpd` as operator out of scope: expected
//!    Forbidden, got 303.
//!
//! The assertion that failed is the last one of `the_matrix_holds`:
//! "11 of 616 cells differ from the rules", listing those 11 cells.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use apr_server::access::{all_routes, Access, Caller, Outcome, RouteRule};
use apr_server::auth::{self, Role};
use apr_server::device;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use common::{batch, fixture, Fixture, GATEWAY, OP_APR, RM_APR, T0};
use http_body_util::BodyExt;
use tower::ServiceExt;

const PASSWORD: &str = "tanque-lleno-77";
const PRESESSION: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// Alerts inserted per APR (each allowed ack/resolve consumes one).
const ALERTS_PER_APR: usize = 40;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Surface {
    Api,
    Ui,
}

struct Session {
    cookie: String,
    csrf: String,
}

struct World {
    f: Fixture,
    app: Router,
    sessions: HashMap<Role, Session>,
    alerts: HashMap<&'static str, Vec<i64>>,
    n: AtomicU32,
}

fn caller_name(c: Caller) -> String {
    match c {
        Caller::Role(r) => r.as_str().to_owned(),
        Caller::Anonymous => "no credentials".into(),
        Caller::BadCredentials => "bad credentials".into(),
    }
}

const CALLERS: [Caller; 7] = [
    Caller::Role(Role::Operator),
    Caller::Role(Role::Engineer),
    Caller::Role(Role::Gore),
    Caller::Role(Role::Admin),
    Caller::Role(Role::Gateway),
    Caller::Anonymous,
    Caller::BadCredentials,
];

fn username(role: Role) -> &'static str {
    match role {
        Role::Admin => "ada",
        Role::Engineer => "eli",
        Role::Operator => "olga",
        Role::Gore => "gabo",
        Role::Gateway => GATEWAY,
    }
}

async fn answer(app: &Router, req: Request<Body>, read_body: bool) -> (StatusCode, String, String) {
    let res = app.clone().oneshot(req).await.expect("router answers");
    let status = res.status();
    let location = res
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = if read_body {
        let b = res.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    } else {
        String::new()
    };
    (status, location, body)
}

fn set_cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|rest| rest.split(';').next())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn csrf_in(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf_token\" value=\"")? + "name=\"csrf_token\" value=\"".len();
    Some(html[at..].split('"').next()?.to_owned())
}

async fn login(app: &Router, role: Role) -> Session {
    let body = format!(
        "username={}&password={PASSWORD}&csrf_token={PRESESSION}",
        username(role)
    );
    let mut req = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, format!("apr_presession={PRESESSION}"))
        .body(Body::from(body))
        .expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let res = app.clone().oneshot(req).await.expect("login answers");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{role} logs in");
    let cookie = set_cookie_value(res.headers(), "apr_session").expect("session cookie");
    let home = match role {
        Role::Operator => format!("/operador/{OP_APR}"),
        Role::Engineer => "/ingenieria".into(),
        Role::Gore => "/gore".into(),
        _ => "/admin".into(),
    };
    let mut req = Request::get(&home)
        .header(header::COOKIE, format!("apr_session={cookie}"))
        .body(Body::empty())
        .expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let (status, _, html) = answer(app, req, true).await;
    assert_eq!(status, StatusCode::OK, "{role} home {home}");
    let csrf = csrf_in(&html).expect("a CSRF token on the page");
    Session { cookie, csrf }
}

async fn world() -> World {
    let f = fixture();
    let registry = f.state.registry();
    for role in [Role::Admin, Role::Engineer, Role::Operator, Role::Gore] {
        auth::change_password(registry, username(role), PASSWORD).expect("password");
    }
    device::add_device(registry, OP_APR, "caseta", 60).expect("device");
    // Open alerts on an in-scope and an out-of-scope APR, written before the
    // alert service starts (it loads open alerts from the store).
    let conn = rusqlite::Connection::open(f.dir.path().join("store.sqlite3")).expect("store");
    let mut alerts: HashMap<&'static str, Vec<i64>> = HashMap::new();
    for apr in [OP_APR, RM_APR] {
        for i in 0..ALERTS_PER_APR {
            conn.execute(
                "INSERT INTO alerts(apr, device, kind, severity, state, opened_at, value, threshold) \
                 VALUES (?1, ?2, 'chlorine_low', 'critical', 'open', ?3, 0.05, 0.2)",
                rusqlite::params![apr, format!("d{i}"), T0],
            )
            .expect("alert row");
            alerts
                .entry(apr)
                .or_default()
                .push(conn.last_insert_rowid());
        }
    }
    drop(conn);
    f.state.start_alerting().expect("alert service");
    let app = f.app.clone();
    let mut sessions = HashMap::new();
    for role in [Role::Admin, Role::Engineer, Role::Operator, Role::Gore] {
        sessions.insert(role, login(&app, role).await);
    }
    World {
        f,
        app,
        sessions,
        alerts,
        n: AtomicU32::new(0),
    }
}

impl World {
    fn next(&self) -> u32 {
        self.n.fetch_add(1, Ordering::Relaxed)
    }

    fn alert(&mut self, apr: &'static str) -> i64 {
        self.alerts
            .get_mut(apr)
            .and_then(Vec::pop)
            .expect("enough alerts for the matrix")
    }

    /// A throwaway user (for token, disable and revoke targets).
    fn spare_user(&self) -> String {
        let name = format!("spare{}", self.next());
        self.f
            .state
            .registry()
            .insert_user(&apr_server::store::UserInsert {
                username: name.clone(),
                role: Role::Engineer,
                password_argon2: None,
                region: None,
                aprs: vec![],
            })
            .expect("spare user");
        name
    }

    fn spare_token_id(&self) -> String {
        let user = self.spare_user();
        let token =
            auth::create_token(self.f.state.registry(), &user, Some("spare")).expect("token");
        auth::token_id(&token)
    }
}

/// The concrete request of one cell: path, query and body (JSON for the
/// API, a form for the UI), or `None` when the test has no case for the
/// route (a failure of `every_route_has_a_request`).
fn build(
    w: &mut World,
    rule: &RouteRule,
    caller: Caller,
    in_scope: bool,
) -> Option<(String, Option<String>)> {
    let apr = if in_scope { OP_APR } else { RM_APR };
    let me = match caller {
        Caller::Role(r) => username(r),
        _ => "olga",
    };
    let other = if me == "eli" { "olga" } else { "eli" };
    let user = if in_scope { me } else { other };
    let region = if in_scope { "biobio" } else { "metropolitana" };
    let now_local = chrono::Utc::now()
        .with_timezone(&chrono_tz::America::Santiago)
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let n = w.next();
    let json = |v: serde_json::Value| Some(v.to_string());
    let (path, body): (String, Option<String>) = match (rule.method.as_str(), rule.path) {
        ("GET", "/healthz" | "/metrics" | "/api/v1/openapi.json" | "/api/v1/aprs") => {
            (rule.path.into(), None)
        }
        ("GET", "/api/v1/aprs/{id}") => (format!("/api/v1/aprs/{apr}"), None),
        ("GET", "/api/v1/aprs/{id}/readings") => {
            (format!("/api/v1/aprs/{apr}/readings?metric=chlorine"), None)
        }
        ("GET", "/api/v1/aprs/{id}/limits") => (format!("/api/v1/aprs/{apr}/limits"), None),
        ("PUT", "/api/v1/aprs/{id}/limits") => (
            format!("/api/v1/aprs/{apr}/limits"),
            json(serde_json::json!({"chlorine_min_mg_l": 0.3})),
        ),
        ("GET", "/api/v1/aprs/{id}/kpis") => (format!("/api/v1/aprs/{apr}/kpis"), None),
        ("POST", "/api/v1/aprs/{id}/billing") => (
            format!("/api/v1/aprs/{apr}/billing"),
            Some("month,billed_m3\n2025-10,1234.5\n".into()),
        ),
        ("GET", "/api/v1/aprs/{id}/field-records") => {
            (format!("/api/v1/aprs/{apr}/field-records"), None)
        }
        ("POST", "/api/v1/aprs/{id}/field-records") => (
            format!("/api/v1/aprs/{apr}/field-records"),
            json(serde_json::json!({"kind": "dpd_chlorine", "value": 0.5})),
        ),
        ("GET", "/api/v1/aprs/{id}/assessment") => {
            (format!("/api/v1/aprs/{apr}/assessment"), None)
        }
        ("GET", "/api/v1/aprs/{id}/assessment/history") => {
            (format!("/api/v1/aprs/{apr}/assessment/history"), None)
        }
        ("GET", "/api/v1/aprs/{id}/interventions") => {
            (format!("/api/v1/aprs/{apr}/interventions"), None)
        }
        ("POST", "/api/v1/aprs/{id}/interventions") => (
            format!("/api/v1/aprs/{apr}/interventions"),
            json(serde_json::json!({
                "component": "technology", "description": "dosificadora nueva",
                "cost_clp": 1_500_000, "funder": "GORE",
                "started": "2025-09-01", "finished": "2025-09-03"})),
        ),
        ("GET", "/api/v1/summary") => (format!("/api/v1/summary?region={region}"), None),
        ("GET", "/api/v1/alerts") => ("/api/v1/alerts".into(), None),
        ("POST", "/api/v1/alerts/{id}/ack") => {
            (format!("/api/v1/alerts/{}/ack", w.alert(apr)), None)
        }
        ("POST", "/api/v1/alerts/{id}/resolve") => {
            (format!("/api/v1/alerts/{}/resolve", w.alert(apr)), None)
        }
        ("GET", "/api/v1/users/{username}/notifications") => {
            (format!("/api/v1/users/{user}/notifications"), None)
        }
        ("PUT", "/api/v1/users/{username}/notifications") => (
            format!("/api/v1/users/{user}/notifications"),
            Some("[]".into()),
        ),
        ("GET", "/api/v1/audit") => ("/api/v1/audit".into(), None),
        ("GET", "/api/v1/tokens") => ("/api/v1/tokens".into(), None),
        ("DELETE", "/api/v1/tokens/{id}") => {
            (format!("/api/v1/tokens/{}", w.spare_token_id()), None)
        }
        ("POST", "/api/v1/ingest") => {
            let mut b = batch(apr, "caseta", apr_wire::Metric::Chlorine, &[(T0 + i64::from(n), 0.5)]);
            b.seq = u64::from(n) + 1;
            (
                "/api/v1/ingest".into(),
                Some(serde_json::to_string(&b).expect("batch")),
            )
        }
        ("GET", "/api/v1/gateway/devices") => ("/api/v1/gateway/devices".into(), None),
        // The web UI.
        ("GET", "/" | "/login" | "/static/app.css" | "/operador" | "/ingenieria"
            | "/ingenieria/indicadores.csv" | "/admin") => (rule.path.into(), None),
        ("POST", "/login") => (
            "/login".into(),
            Some(format!("username=olga&password={PASSWORD}")),
        ),
        ("POST", "/logout") => ("/logout".into(), Some(String::new())),
        ("POST", "/idioma") => ("/idioma".into(), Some("lang=en&next=/".into())),
        ("GET", "/operador/{apr}") => (format!("/operador/{apr}"), None),
        ("GET", "/operador/{apr}/alertas") => (format!("/operador/{apr}/alertas"), None),
        ("GET", "/operador/{apr}/alertas/eventos") => {
            (format!("/operador/{apr}/alertas/eventos"), None)
        }
        ("POST", "/operador/{apr}/dpd") => (
            format!("/operador/{apr}/dpd"),
            Some(format!("value_mg_l=0.5&taken_at={now_local}&place=red")),
        ),
        ("POST", "/alertas/{id}/reconocer") => (
            format!("/alertas/{}/reconocer", w.alert(apr)),
            Some("comment=visto".into()),
        ),
        ("GET", "/ingenieria/{apr}") => (format!("/ingenieria/{apr}"), None),
        ("GET", "/ingenieria/{apr}/serie.csv") => {
            (format!("/ingenieria/{apr}/serie.csv?metric=chlorine"), None)
        }
        ("GET", "/ingenieria/{apr}/indicadores.csv") => {
            (format!("/ingenieria/{apr}/indicadores.csv"), None)
        }
        ("GET", "/ingenieria/{apr}/patron.inp") => (format!("/ingenieria/{apr}/patron.inp"), None),
        ("GET", "/gore") => (format!("/gore?region={region}"), None),
        ("GET", "/gore/informe") => (format!("/gore/informe?region={region}"), None),
        ("POST", "/admin/usuarios") => (
            "/admin/usuarios".into(),
            Some(format!(
                "username=nuevo{n}&role=engineer&password={PASSWORD}&scope="
            )),
        ),
        ("POST", "/admin/usuarios/{name}/token") => (
            format!("/admin/usuarios/{}/token", w.spare_user()),
            Some(String::new()),
        ),
        ("POST", "/admin/usuarios/{name}/desactivar") => (
            format!("/admin/usuarios/{}/desactivar", w.spare_user()),
            Some(String::new()),
        ),
        ("POST", "/admin/tokens/{id}/revocar") => (
            format!("/admin/tokens/{}/revocar", w.spare_token_id()),
            Some(String::new()),
        ),
        ("POST", "/admin/equipos") => (
            "/admin/equipos".into(),
            Some(format!("apr={OP_APR}&device=nuevo{n}")),
        ),
        ("POST", "/admin/equipos/{apr}/{device}/clave") => (
            format!("/admin/equipos/{OP_APR}/caseta/clave"),
            Some(String::new()),
        ),
        ("POST", "/admin/aprs") => (
            "/admin/aprs".into(),
            Some(format!(
                "id=nueva-{n}&name=APR+Nueva&comuna=Yumbel&region=biobio&beneficiaries=10&connections=3"
            )),
        ),
        ("POST", "/admin/umbrales") => (
            "/admin/umbrales".into(),
            Some(format!("apr={OP_APR}&key=chlorine_min_mg_l&value=0,3")),
        ),
        ("POST", "/admin/umbrales/{apr}/{key}/eliminar") => (
            format!("/admin/umbrales/{OP_APR}/chlorine_min_mg_l/eliminar"),
            Some(String::new()),
        ),
        ("POST", "/admin/intervenciones") => (
            "/admin/intervenciones".into(),
            Some(format!(
                "apr={OP_APR}&component=training&date=2025-10-01&cost_clp=250000&description=curso"
            )),
        ),
        _ => return None,
    };
    Some((path, body))
}

fn surface(rule: &RouteRule) -> Surface {
    if rule.path.starts_with("/api/") || rule.path == "/healthz" || rule.path == "/metrics" {
        Surface::Api
    } else {
        Surface::Ui
    }
}

fn request(
    w: &World,
    rule: &RouteRule,
    caller: Caller,
    in_scope: bool,
    path: &str,
    body: Option<String>,
) -> Request<Body> {
    let mut b = Request::builder().method(rule.method.clone()).uri(path);
    let ui = surface(rule) == Surface::Ui;
    let mut form = body;
    match (ui, caller) {
        (false, Caller::Role(r)) => {
            let t = match r {
                Role::Admin => &w.f.admin,
                Role::Engineer => &w.f.engineer,
                Role::Operator => &w.f.operator,
                Role::Gore => &w.f.gore,
                Role::Gateway => &w.f.gateway,
            };
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        (false, Caller::BadCredentials) => {
            b = b.header(
                header::AUTHORIZATION,
                "Bearer apr_0000000000000000000000000000000000000000000000000000000000000000",
            );
        }
        (true, Caller::Role(Role::Gateway)) => {
            // Gateways have no UI login: the best a gateway can do is send
            // its token, which the UI ignores, with a valid pre-session.
            b = b
                .header(header::AUTHORIZATION, format!("Bearer {}", w.f.gateway))
                .header(header::COOKIE, format!("apr_presession={PRESESSION}"));
            form = form.map(|f| format!("{f}&csrf_token={PRESESSION}"));
        }
        (true, Caller::Role(r)) => {
            let s = &w.sessions[&r];
            b = b.header(header::COOKIE, format!("apr_session={}", s.cookie));
            form = form.map(|f| format!("{f}&csrf_token={}", s.csrf));
        }
        (true, Caller::BadCredentials) => {
            b = b.header(
                header::COOKIE,
                format!(
                    "apr_session=ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff; \
                     apr_presession={PRESESSION}"
                ),
            );
            form = form.map(|f| format!("{f}&csrf_token={PRESESSION}"));
        }
        (true, Caller::Anonymous) => {
            // A valid pre-session (what any visitor of the login page
            // has), so the CSRF guard lets the form through to the handler.
            b = b.header(header::COOKIE, format!("apr_presession={PRESESSION}"));
            form = form.map(|f| format!("{f}&csrf_token={PRESESSION}"));
        }
        (false, Caller::Anonymous) => {}
    }
    if form.is_some() {
        let ct = match (ui, rule.path) {
            (true, _) => "application/x-www-form-urlencoded",
            (false, "/api/v1/aprs/{id}/billing") => "text/csv",
            _ => "application/json",
        };
        b = b.header(header::CONTENT_TYPE, ct);
    }
    let mut req = b
        .body(form.map_or_else(Body::empty, Body::from))
        .expect("request");
    // `/metrics` is open to loopback peers: "out of scope" is a remote one
    // (TEST-NET-1, only a value in the request; nothing is sent there).
    let peer = if rule.access == Access::Scrape && !in_scope {
        SocketAddr::from(([192, 0, 2, 1], 40000))
    } else {
        SocketAddr::from(([127, 0, 0, 1], 40000))
    };
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

/// What the answer says, in the rule's terms (or why it fits none).
fn judge(rule: &RouteRule, status: StatusCode, location: &str) -> Result<Outcome, String> {
    match surface(rule) {
        Surface::Api => match status.as_u16() {
            200..=299 => Ok(Outcome::Allowed),
            401 => Ok(Outcome::Unauthenticated),
            403 => Ok(Outcome::Forbidden),
            s => Err(format!("status {s}")),
        },
        Surface::Ui => match status.as_u16() {
            403 => Ok(Outcome::Forbidden),
            300..=399 if location.starts_with("/login") && rule.access != Access::Public => {
                Ok(Outcome::Unauthenticated)
            }
            200..=399 => Ok(Outcome::Allowed),
            // The handler ran and refused the input (the EPANET pattern of
            // an APR without flow data): past the access check.
            400 => Ok(Outcome::Allowed),
            s => Err(format!("status {s} (location '{location}')")),
        },
    }
}

fn expected(rule: &RouteRule, caller: Caller, in_scope: bool) -> Outcome {
    // A gateway cannot sign in to the UI: it is an anonymous visitor there.
    let caller = match (surface(rule), caller) {
        (Surface::Ui, Caller::Role(Role::Gateway)) => Caller::Anonymous,
        _ => caller,
    };
    rule.access.expect(caller, in_scope)
}

/// Whether `caller`'s scope excludes the out-of-scope APR (whose id must
/// then not appear in a fleet-wide answer).
fn scoped(caller: Caller) -> bool {
    matches!(
        caller,
        Caller::Role(Role::Operator | Role::Gore | Role::Gateway)
    )
}

#[test]
fn every_route_has_a_request() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut w = world().await;
        let missing: Vec<String> = all_routes()
            .iter()
            .filter(|r| build(&mut w, r, Caller::Role(Role::Admin), true).is_none())
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(
            missing.is_empty(),
            "routes without a case in the authorisation matrix (add one to `build`): {missing:?}"
        );
    });
}

#[test]
fn routes_are_only_registered_from_the_tables() {
    // Every `.route(` call of the server's sources, outside test modules.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("src dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("source");
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for (i, line) in code.lines().enumerate() {
                    if line.contains(".route(")
                        || line.contains(".route_service(")
                        || line.contains(".nest(")
                    {
                        found.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                    }
                }
            }
        }
    }
    found.sort();
    assert_eq!(
        found.len(),
        2,
        "routes must be registered only by the table-driven builders of api/mod.rs and \
         ui/mod.rs (each row carries its access rule); found: {found:#?}"
    );
    assert!(
        found
            .iter()
            .all(|l| l.contains("router.route(path, handler)")),
        "{found:#?}"
    );
}

#[test]
fn the_matrix_holds() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut w = world().await;
        let routes = all_routes();
        let mut cells = 0;
        let mut failures = Vec::new();
        for rule in &routes {
            let scopes: &[bool] = if rule.access.scoped() {
                &[true, false]
            } else {
                &[true]
            };
            for &in_scope in scopes {
                for caller in CALLERS {
                    let Some((path, body)) = build(&mut w, rule, caller, in_scope) else {
                        failures.push(format!("{} {}: no request", rule.method, rule.path));
                        continue;
                    };
                    let req = request(&w, rule, caller, in_scope, &path, body);
                    // The live alert stream never ends: read its status only.
                    let read = !path.ends_with("/eventos");
                    let (status, location, text) = answer(&w.app, req, read).await;
                    cells += 1;
                    // Signing in or out ends the caller's session: sign in again.
                    if rule.method == Method::POST && matches!(rule.path, "/login" | "/logout") {
                        if let Caller::Role(r) = caller {
                            if r != Role::Gateway {
                                let s = login(&w.app, r).await;
                                w.sessions.insert(r, s);
                            }
                        }
                    }
                    let want = expected(rule, caller, in_scope);
                    let cell = format!(
                        "{} {} as {} ({}): ",
                        rule.method,
                        path,
                        caller_name(caller),
                        if in_scope { "in scope" } else { "out of scope" }
                    );
                    match judge(rule, status, &location) {
                        Ok(got) if got == want => {}
                        Ok(got) => failures.push(format!(
                            "{cell}expected {want:?}, got {got:?} ({status}) {}",
                            text.chars().take(160).collect::<String>()
                        )),
                        Err(e) => failures.push(format!(
                            "{cell}expected {want:?}, got {e} {}",
                            text.chars().take(160).collect::<String>()
                        )),
                    }
                    // Fleet-wide answers hold nothing outside the scope.
                    if want == Outcome::Allowed
                        && rule.access == Access::Fleet
                        && scoped(caller)
                        && text.contains(RM_APR)
                    {
                        failures.push(format!(
                            "{cell}the answer names {RM_APR}, outside the scope"
                        ));
                    }
                }
            }
        }
        println!(
            "authorisation matrix: {} routes, {cells} cells",
            routes.len()
        );
        assert!(cells >= routes.len() * CALLERS.len());
        assert!(
            failures.is_empty(),
            "{} of {cells} cells differ from the rules:\n{}",
            failures.len(),
            failures.join("\n")
        );
    });
}

#[test]
fn a_route_without_a_scope_check_would_be_caught() {
    // The judge itself: a 200 where the rule says 403 is a failure.
    let rule = RouteRule {
        method: Method::PUT,
        path: "/api/v1/aprs/{id}/limits",
        access: Access::Apr(&[Role::Admin]),
    };
    let want = expected(&rule, Caller::Role(Role::Operator), true);
    assert_eq!(want, Outcome::Forbidden);
    assert_eq!(judge(&rule, StatusCode::OK, ""), Ok(Outcome::Allowed));
    assert_ne!(judge(&rule, StatusCode::OK, "").ok(), Some(want));
}
