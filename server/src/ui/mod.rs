//! The web dashboards: server-rendered HTML for operators, engineers, GORE
//! reviewers and admins, in Spanish (es-CL) by default.
//!
//! This module owns HTTP, sessions, CSRF and data; the `apr-dashboards`
//! crate owns the pages (view models in, HTML out). Handlers read the store
//! through the same traits as the API ([`crate::store`]), decide access with
//! the same [`crate::auth::Scope`], and acknowledge alerts through the same
//! alert service ([`crate::alerting::service::Alerting::acknowledge`]).
//!
//! # Routes
//! | route | who | what |
//! | --- | --- | --- |
//! | `GET /` | anyone | redirects to the login or the role's home |
//! | `GET/POST /login`, `POST /logout` | anyone | sign in (`auth::login`), sign out |
//! | `POST /idioma` | anyone | language switch (`lang` = `es`/`en`); `?lang=en` on any page too |
//! | `GET /static/app.css` | anyone | the stylesheet, cached for a year |
//! | `GET /operador[/{apr}]` | readers of the APR | the APR now, alerts, 7-day charts, DPD form |
//! | `GET /operador/{apr}/alertas[/eventos]` | readers of the APR | alert fragment; its SSE stream |
//! | `POST /operador/{apr}/dpd` | operators of the APR, admins | records a DPD check |
//! | `POST /alertas/{id}/reconocer` | operators of the alert's APR, admins | acknowledge with comment |
//! | `GET /ingenieria[/{apr}]` | engineers, admins | every APR; one APR with the series explorer |
//! | `GET /ingenieria/{apr}/serie.csv`, `indicadores.csv`, `patron.inp` | engineers, admins | exports |
//! | `GET /gore[/informe]` | GORE (its region), engineers and admins (`?region=`) | figures; printable report |
//! | `GET /admin`, `POST /admin/…` | admins | users and tokens, devices, APRs, limits |
//!
//! # Security
//! - Sessions and cookies: see [`session`] (in memory: a restart logs
//!   everyone out).
//! - CSRF: one middleware checks the `csrf_token` field of **every** POST
//!   before any handler runs; a mismatch is the Spanish (or chosen
//!   language's) 403 page.
//! - Errors: every failure is an error page in the user's language with a
//!   reference code; details only in the log. A panic in a handler is caught
//!   by a middleware and becomes the 500 page.
//! - Pages are sent with `Cache-Control: no-store`, a Content-Security-Policy
//!   that allows only the page's own nonce-tagged script, `frame-ancestors
//!   'none'` and `nosniff`.

// Handlers answer `Result<Response, Response>`: the error is the page that
// replaces the one asked for (an error page, a redirect to the login), made
// once per request and returned straight up a shallow stack; boxing it buys
// nothing here.
#![allow(clippy::result_large_err)]

mod admin;
mod db;
mod engineer;
mod gore;
mod operator;
pub mod session;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use apr_dashboards::model::{ErrorKind, ErrorPage, Layout, LoginError, LoginPage, SessionUser};
use apr_dashboards::{paths, Lang};
use axum::body::Body;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Form, Router};
use chrono::{DateTime, FixedOffset, TimeZone, Utc};

use crate::access::{Access, RouteRule, READERS};
use crate::api::AppState;
use crate::auth::{self, apr_access, AprAccess, Principal, Role};
use crate::error::{Error, Result};
use crate::limits::LOCAL_TZ;
use crate::store::{AprRecord, Region};
use session::{Lookup, Session, SessionStore};

/// Largest form body the UI reads, bytes.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Most usernames and addresses the login throttle remembers (the oldest
/// are dropped past it, so a flood of names cannot grow it without bound).
const THROTTLE_ENTRIES: usize = 100_000;

/// The UI's settings: `[ui]` of the configuration, and the SQLite file the
/// UI keeps its field records in (see `db`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// `Secure` on the session cookie whatever the request's scheme.
    pub secure_cookies: bool,
    /// The store's SQLite file, when the server runs on one.
    pub store_path: Option<PathBuf>,
    /// Session expiry, cookies and login throttling (`[ui]`).
    pub config: crate::config::Ui,
}

impl Settings {
    /// From `[ui]` and the store's file.
    pub fn new(config: &crate::config::Ui, store_path: Option<&Path>) -> Settings {
        Settings {
            secure_cookies: config.secure_cookies,
            store_path: store_path.map(Path::to_path_buf),
            config: config.clone(),
        }
    }
}

/// Failed logins, per account and per source address.
///
/// An account with `lockout_failures` failures is locked for `lockout_s`
/// (even the right password is refused then); a source address with
/// `address_failures` failures (any accounts) within `address_window_s`
/// waits until the window passes. Unknown usernames are counted like
/// known ones, and a locked account answers like a throttled address, so
/// neither tells whether an account exists.
#[derive(Debug)]
pub struct LoginThrottle {
    accounts: Mutex<HashMap<String, Failures>>,
    addresses: Mutex<HashMap<std::net::IpAddr, Failures>>,
    account_max: u32,
    lockout: Duration,
    address_max: u32,
    address_window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    first: Instant,
    count: u32,
    locked_until: Option<Instant>,
}

impl LoginThrottle {
    /// From `[ui]`.
    pub fn new(c: &crate::config::Ui) -> LoginThrottle {
        LoginThrottle {
            accounts: Mutex::default(),
            addresses: Mutex::default(),
            account_max: c.lockout_failures.max(1),
            lockout: Duration::from_secs(c.lockout_s),
            address_max: c.address_failures.max(1),
            address_window: Duration::from_secs(c.address_window_s),
        }
    }

    fn prune<K: Clone + Eq + std::hash::Hash>(
        map: &mut HashMap<K, Failures>,
        window: Duration,
        now: Instant,
    ) {
        map.retain(|_, f| match f.locked_until {
            Some(until) => now < until,
            None => now.saturating_duration_since(f.first) < window,
        });
        if map.len() > THROTTLE_ENTRIES {
            let mut by_age: Vec<(K, Instant)> =
                map.iter().map(|(k, f)| (k.clone(), f.first)).collect();
            by_age.sort_by_key(|(_, t)| *t);
            for (k, _) in by_age.into_iter().take(map.len() - THROTTLE_ENTRIES) {
                map.remove(&k);
            }
        }
    }

    /// Whether a login for `username` from `addr` must be refused now.
    pub fn blocked(&self, username: &str, addr: Option<std::net::IpAddr>, now: Instant) -> bool {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        Self::prune(&mut accounts, self.lockout, now);
        if accounts
            .get(username)
            .is_some_and(|f| f.locked_until.is_some_and(|u| now < u))
        {
            return true;
        }
        drop(accounts);
        let Some(addr) = addr else { return false };
        let mut addresses = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Self::prune(&mut addresses, self.address_window, now);
        addresses
            .get(&addr)
            .is_some_and(|f| f.count >= self.address_max)
    }

    /// Counts a failed login; answers whether the account is now locked.
    pub fn failed(&self, username: &str, addr: Option<std::net::IpAddr>, now: Instant) -> bool {
        let fresh = Failures {
            first: now,
            count: 0,
            locked_until: None,
        };
        let locked = {
            let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
            let f = accounts.entry(username.to_owned()).or_insert(fresh);
            f.count += 1;
            if f.count >= self.account_max {
                f.locked_until = Some(now + self.lockout);
            }
            f.locked_until.is_some()
        };
        if let Some(addr) = addr {
            let mut addresses = self
                .addresses
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            addresses.entry(addr).or_insert(fresh).count += 1;
        }
        locked
    }

    /// Forgets an account's failures after a successful login (the
    /// address's stay counted: they may be other accounts').
    pub fn succeeded(&self, username: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(username);
    }
}

/// What the UI's handlers share.
#[derive(Clone)]
pub(crate) struct Ui {
    inner: Arc<UiShared>,
}

struct UiShared {
    app: AppState,
    sessions: SessionStore,
    db: db::UiDb,
    secure_cookies: bool,
    throttle: LoginThrottle,
    stylesheet_href: String,
    kpis: engineer::KpiCache,
}

impl Ui {
    fn new(app: AppState) -> Ui {
        let settings = app.ui_settings().clone();
        let version = &auth::sha256_hex(apr_dashboards::STYLESHEET)[..12];
        Ui {
            inner: Arc::new(UiShared {
                sessions: SessionStore::new(
                    Duration::from_secs(settings.config.session_idle_s.max(1)),
                    Duration::from_secs(settings.config.session_absolute_s.max(1)),
                ),
                db: db::UiDb::new(settings.store_path),
                secure_cookies: settings.secure_cookies,
                throttle: LoginThrottle::new(&settings.config),
                stylesheet_href: format!("{}?v={version}", paths::STYLESHEET),
                kpis: engineer::KpiCache::default(),
                app,
            }),
        }
    }

    pub(crate) fn app(&self) -> &AppState {
        &self.inner.app
    }

    pub(crate) fn db(&self) -> &db::UiDb {
        &self.inner.db
    }
}

/// One UI route: method, path, access rule, handler. [`ui_route`] is the
/// only way to make one, so every route has a rule.
struct UiRoute {
    rule: RouteRule,
    handler: MethodRouter<Ui>,
}

fn ui_route(
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<Ui>,
) -> UiRoute {
    UiRoute {
        rule: RouteRule {
            method,
            path,
            access,
        },
        handler,
    }
}

/// The UI's route table (one row per method and path).
fn routes() -> Vec<UiRoute> {
    use Access::{Alert, Apr, Fleet, Public, Region, Roles};
    const WRITERS: &[Role] = &[Role::Operator, Role::Admin];
    const ENGINEERS: &[Role] = &[Role::Engineer, Role::Admin];
    const REVIEWERS: &[Role] = &[Role::Gore, Role::Engineer, Role::Admin];
    const ADMINS: &[Role] = &[Role::Admin];
    let (g, p) = (Method::GET, Method::POST);
    vec![
        ui_route(g.clone(), "/", Public, get(home)),
        ui_route(g.clone(), paths::LOGIN, Public, get(login_form)),
        ui_route(p.clone(), paths::LOGIN, Public, post(login)),
        ui_route(p.clone(), paths::LOGOUT, Public, post(logout)),
        ui_route(p.clone(), paths::LANGUAGE, Public, post(language)),
        ui_route(g.clone(), paths::STYLESHEET, Public, get(stylesheet)),
        ui_route(g.clone(), paths::OPERATOR, Fleet, get(operator::home)),
        ui_route(
            g.clone(),
            "/operador/{apr}",
            Apr(READERS),
            get(operator::page),
        ),
        ui_route(
            g.clone(),
            "/operador/{apr}/alertas",
            Apr(READERS),
            get(operator::fragment),
        ),
        ui_route(
            g.clone(),
            "/operador/{apr}/alertas/eventos",
            Apr(READERS),
            get(operator::events),
        ),
        ui_route(
            p.clone(),
            "/operador/{apr}/dpd",
            Apr(WRITERS),
            post(operator::dpd),
        ),
        ui_route(
            p.clone(),
            "/alertas/{id}/reconocer",
            Alert(WRITERS),
            post(operator::acknowledge),
        ),
        ui_route(
            g.clone(),
            paths::ENGINEER,
            Roles(ENGINEERS),
            get(engineer::overview),
        ),
        ui_route(
            g.clone(),
            "/ingenieria/indicadores.csv",
            Roles(ENGINEERS),
            get(engineer::all_kpis_csv),
        ),
        ui_route(
            g.clone(),
            "/ingenieria/{apr}",
            Apr(ENGINEERS),
            get(engineer::apr_page),
        ),
        ui_route(
            g.clone(),
            "/ingenieria/{apr}/serie.csv",
            Apr(ENGINEERS),
            get(engineer::series_csv),
        ),
        ui_route(
            g.clone(),
            "/ingenieria/{apr}/indicadores.csv",
            Apr(ENGINEERS),
            get(engineer::kpis_csv),
        ),
        ui_route(
            g.clone(),
            "/ingenieria/{apr}/patron.inp",
            Apr(ENGINEERS),
            get(engineer::pattern),
        ),
        ui_route(g.clone(), paths::GORE, Region(REVIEWERS), get(gore::page)),
        ui_route(
            g.clone(),
            "/gore/informe",
            Region(REVIEWERS),
            get(gore::report),
        ),
        ui_route(g, paths::ADMIN, Roles(ADMINS), get(admin::page)),
        ui_route(
            p.clone(),
            "/admin/usuarios",
            Roles(ADMINS),
            post(admin::create_user),
        ),
        ui_route(
            p.clone(),
            "/admin/usuarios/{name}/token",
            Roles(ADMINS),
            post(admin::issue_token),
        ),
        ui_route(
            p.clone(),
            "/admin/usuarios/{name}/desactivar",
            Roles(ADMINS),
            post(admin::disable_user),
        ),
        ui_route(
            p.clone(),
            "/admin/tokens/{id}/revocar",
            Roles(ADMINS),
            post(admin::revoke_token),
        ),
        ui_route(
            p.clone(),
            "/admin/equipos",
            Roles(ADMINS),
            post(admin::create_device),
        ),
        ui_route(
            p.clone(),
            "/admin/equipos/{apr}/{device}/clave",
            Roles(ADMINS),
            post(admin::rotate_device),
        ),
        ui_route(
            p.clone(),
            "/admin/aprs",
            Roles(ADMINS),
            post(admin::upsert_apr),
        ),
        ui_route(
            p.clone(),
            "/admin/umbrales",
            Roles(ADMINS),
            post(admin::set_override),
        ),
        ui_route(
            p.clone(),
            "/admin/umbrales/{apr}/{key}/eliminar",
            Roles(ADMINS),
            post(admin::delete_override),
        ),
        ui_route(
            p,
            "/admin/intervenciones",
            Roles(ADMINS),
            post(admin::create_intervention),
        ),
    ]
}

/// The UI's routes and their access rules (see [`crate::access`]).
pub fn route_rules() -> Vec<RouteRule> {
    routes().into_iter().map(|r| r.rule).collect()
}

/// The UI's routes, to merge into the API's router.
pub fn router(state: &AppState) -> Router<AppState> {
    let ui = Ui::new(state.clone());
    let mut by_path: Vec<(&'static str, MethodRouter<Ui>)> = Vec::new();
    for r in routes() {
        match by_path.iter_mut().find(|(p, _)| *p == r.rule.path) {
            Some((_, h)) => *h = std::mem::take(h).merge(r.handler),
            None => by_path.push((r.rule.path, r.handler)),
        }
    }
    let mut router = Router::new();
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    router
        .layer(from_fn_with_state(ui.clone(), csrf_guard))
        .layer(from_fn(catch_panic))
        .with_state(ui)
}

/// Runs a blocking store call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("a store task failed: {e}")))?
}

/// A time as shown: America/Santiago.
pub(crate) fn local(ms: i64) -> DateTime<FixedOffset> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&LOCAL_TZ)
        .fixed_offset()
}

/// America/Santiago's offset from UTC at `ms`, seconds.
pub(crate) fn utc_offset_s(ms: i64) -> i32 {
    local(ms).offset().local_minus_utc()
}

/// The dashboards' role of a principal (gateways have no UI).
pub(crate) fn view_role(role: Role) -> Option<apr_dashboards::Role> {
    match role {
        Role::Operator => Some(apr_dashboards::Role::Operator),
        Role::Engineer => Some(apr_dashboards::Role::Engineer),
        Role::Gore => Some(apr_dashboards::Role::Gore),
        Role::Admin => Some(apr_dashboards::Role::Admin),
        Role::Gateway => None,
    }
}

/// An APR as pages name it, with its region's display name.
pub(crate) fn apr_ref(a: &AprRecord, regions: &[Region]) -> apr_dashboards::AprRef {
    apr_dashboards::AprRef {
        id: a.id.clone(),
        name: a.name.clone(),
        comuna: a.comuna.clone(),
        region: regions
            .iter()
            .find(|r| r.id == a.region)
            .map_or_else(|| a.region.clone(), |r| r.name.clone()),
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs.
pub(crate) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A local path to return to after a form (`/x?y`), never another site.
pub(crate) fn local_path(next: Option<&str>) -> Option<String> {
    next.filter(|n| {
        n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && n.len() <= 512
    })
    .map(str::to_owned)
}

/// The request as the UI sees it: language, session, cookies to set.
pub(crate) struct Ctx {
    pub ui: Ui,
    pub lang: Lang,
    set_lang_cookie: bool,
    pub session: Option<Session>,
    expired: bool,
    presession: Option<String>,
    new_presession: Option<String>,
    pub path: String,
    secure: bool,
    nonce: String,
    /// The client's address, when the server knows it.
    peer: Option<std::net::IpAddr>,
}

fn lang_of(parts_query: Option<&str>, headers: &HeaderMap) -> (Lang, bool) {
    let from_query = parts_query.and_then(|q| {
        q.split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == "lang")
            .and_then(|(_, v)| Lang::parse(v))
    });
    match from_query {
        Some(l) => (l, true),
        None => (
            session::cookie(headers, session::LANG_COOKIE)
                .and_then(Lang::parse)
                .unwrap_or_default(),
            false,
        ),
    }
}

fn is_https(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    uri.scheme_str() == Some("https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

impl FromRequestParts<Ui> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        ui: &Ui,
    ) -> std::result::Result<Ctx, Self::Rejection> {
        let (lang, set_lang_cookie) = lang_of(parts.uri.query(), &parts.headers);
        let now = Instant::now();
        let (session, expired) = match session::cookie(&parts.headers, session::SESSION_COOKIE) {
            None => (None, false),
            Some(id) => match ui.inner.sessions.get(id, now) {
                Lookup::Live(s) => (Some(s), false),
                Lookup::Expired => (None, true),
                Lookup::Unknown => (None, true),
            },
        };
        let presession =
            session::cookie(&parts.headers, session::PRESESSION_COOKIE).map(str::to_owned);
        let new_presession =
            (session.is_none() && presession.is_none()).then(session::random_token);
        Ok(Ctx {
            ui: ui.clone(),
            lang,
            set_lang_cookie,
            session,
            expired,
            presession,
            new_presession,
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
            secure: ui.inner.secure_cookies || is_https(&parts.headers, &parts.uri),
            nonce: hex::encode(rand::random::<[u8; 16]>()),
            peer: parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_canonical()),
        })
    }
}

/// A handler's answer: the page, or the response that replaces it (an
/// error page, a redirect to the login).
pub(crate) type Page = std::result::Result<Response, Response>;

impl Ctx {
    /// The CSRF token forms of this response carry.
    fn csrf(&self) -> &str {
        self.session
            .as_ref()
            .map(|s| s.csrf.as_str())
            .or(self.presession.as_deref())
            .or(self.new_presession.as_deref())
            .unwrap_or_default()
    }

    /// The signed-in principal, or a redirect to the login (which says
    /// the session ended when it did).
    pub fn principal(&self) -> std::result::Result<&Principal, Response> {
        match &self.session {
            Some(s) => Ok(&s.principal),
            None => {
                let next: String = self
                    .path
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                let expired = if self.expired { "&expired=1" } else { "" };
                Err(self.finish(
                    Redirect::to(&format!("{}?next={next}{expired}", paths::LOGIN)).into_response(),
                ))
            }
        }
    }

    /// The frame of every page.
    pub fn layout(&self) -> Layout {
        Layout {
            lang: self.lang,
            user: self.session.as_ref().and_then(|s| {
                Some(SessionUser {
                    username: s.principal.user.clone(),
                    role: view_role(s.principal.role)?,
                })
            }),
            csrf_token: self.csrf().to_owned(),
            current_path: self.path.clone(),
            stylesheet_href: Some(self.ui.inner.stylesheet_href.clone()),
            csp_nonce: Some(self.nonce.clone()),
        }
    }

    /// The user's home page.
    pub fn home(&self) -> String {
        self.session
            .as_ref()
            .and_then(|s| view_role(s.principal.role))
            .map_or(paths::LOGIN, apr_dashboards::pages::home_for)
            .to_owned()
    }

    /// Adds the cookies this request sets.
    fn finish(&self, mut r: Response) -> Response {
        let h = r.headers_mut();
        let mut cookies = Vec::new();
        if self.set_lang_cookie {
            cookies.push(session::set_cookie(
                session::LANG_COOKIE,
                self.lang.code(),
                self.secure,
                Some(365 * 86_400),
            ));
        }
        if let Some(t) = &self.new_presession {
            cookies.push(session::set_cookie(
                session::PRESESSION_COOKIE,
                t,
                self.secure,
                Some(12 * 3600),
            ));
        }
        for c in cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                h.append(header::SET_COOKIE, v);
            }
        }
        r
    }

    /// An HTML response with the UI's headers.
    pub fn html(&self, status: StatusCode, body: String) -> Response {
        let mut r = (status, body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'nonce-{n}'; \
             script-src 'nonce-{n}'; connect-src 'self'; frame-ancestors 'none'; \
             form-action 'self'; base-uri 'none'",
            n = self.nonce
        )) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        self.finish(r)
    }

    /// A page (200).
    pub fn page(&self, body: String) -> Response {
        self.html(StatusCode::OK, body)
    }

    /// The error page of `kind`, in the user's language.
    pub fn error(&self, kind: ErrorKind) -> Response {
        self.error_with_id(kind, None)
    }

    fn error_with_id(&self, kind: ErrorKind, request_id: Option<String>) -> Response {
        let body = apr_dashboards::render_error(
            &self.layout(),
            &ErrorPage {
                kind,
                request_id,
                home_url: self.home(),
            },
        );
        self.html(
            StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
    }

    /// The error page for a server error: 403/404/400 as they are, anything
    /// else a 500 with a reference code that is also in the log.
    pub fn fail(&self, e: Error) -> Response {
        let kind = match &e {
            Error::Forbidden(_) | Error::Unauthenticated(_) => ErrorKind::Forbidden,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Invalid(_)
            | Error::InvalidQuery(_)
            | Error::InvalidBody(_)
            | Error::WeakPassword(_)
            | Error::Conflict(_)
            | Error::TooManyPoints(_) => ErrorKind::BadRequest,
            _ => ErrorKind::Internal,
        };
        if kind == ErrorKind::Internal {
            let id = hex::encode(rand::random::<[u8; 4]>());
            tracing::error!(reference = %id, error = %e, path = %self.path, "UI request failed");
            self.error_with_id(kind, Some(id))
        } else {
            tracing::info!(error = %e, path = %self.path, "UI request refused");
            self.error(kind)
        }
    }

    /// A 303 to `to` (after a form).
    pub fn see_other(&self, to: &str) -> Response {
        self.finish(Redirect::to(to).into_response())
    }

    /// The APR `id` after checking the principal may see it (a scoped
    /// caller cannot tell an APR outside its scope from none).
    pub async fn checked_apr(
        &self,
        p: &Principal,
        id: &str,
    ) -> std::result::Result<AprRecord, Response> {
        if p.scope.allows_apr_id(id) == Some(false) {
            return Err(self.error(ErrorKind::Forbidden));
        }
        let registry = self.ui.clone();
        let key = id.to_owned();
        let record = blocking(move || registry.app().registry().apr(&key))
            .await
            .map_err(|e| self.fail(e))?;
        match apr_access(&p.scope, id, record.as_ref()) {
            AprAccess::Allowed => record.ok_or_else(|| self.error(ErrorKind::NotFound)),
            AprAccess::Forbidden => Err(self.error(ErrorKind::Forbidden)),
            AprAccess::NotFound => Err(self.error(ErrorKind::NotFound)),
        }
    }

    /// Refuses every role but `roles`.
    pub fn require(&self, p: &Principal, roles: &[Role]) -> std::result::Result<(), Response> {
        if roles.contains(&p.role) {
            Ok(())
        } else {
            Err(self.error(ErrorKind::Forbidden))
        }
    }
}

/// Checks the `csrf_token` field of every POST against the session's token
/// (or, without a session, the pre-session cookie) before any handler.
async fn csrf_guard(State(ui): State<Ui>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let now = Instant::now();
    let (lang, _) = lang_of(parts.uri.query(), &parts.headers);
    let session_cookie = session::cookie(&parts.headers, session::SESSION_COOKIE);
    let session = session_cookie.and_then(|id| match ui.inner.sessions.get(id, now) {
        Lookup::Live(s) => Some(s),
        _ => None,
    });
    if session.is_none() && session_cookie.is_some() && parts.uri.path() != paths::LOGIN {
        // The session ended while the form was open: sign in again.
        return Redirect::to(&format!("{}?expired=1", paths::LOGIN)).into_response();
    }
    let expected = session
        .as_ref()
        .map(|s| s.csrf.clone())
        .or_else(|| session::cookie(&parts.headers, session::PRESESSION_COOKIE).map(str::to_owned));
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => return plain_error(lang, ErrorKind::BadRequest),
    };
    let given = form_pairs(&bytes)
        .into_iter()
        .find(|(k, _)| k == "csrf_token")
        .map(|(_, v)| v);
    let ok = matches!((&expected, &given), (Some(e), Some(g)) if !e.is_empty() && session::same_token(e, g));
    if !ok {
        tracing::warn!(path = %parts.uri.path(), "form refused: missing or wrong CSRF token");
        let layout = Layout {
            lang,
            user: session.as_ref().and_then(|s| {
                Some(SessionUser {
                    username: s.principal.user.clone(),
                    role: view_role(s.principal.role)?,
                })
            }),
            csrf_token: expected.unwrap_or_default(),
            current_path: parts.uri.path().to_owned(),
            stylesheet_href: Some(ui.inner.stylesheet_href.clone()),
            csp_nonce: None,
        };
        let home = session
            .as_ref()
            .and_then(|s| view_role(s.principal.role))
            .map_or(paths::LOGIN, apr_dashboards::pages::home_for);
        let body = apr_dashboards::render_error(
            &layout,
            &ErrorPage {
                kind: ErrorKind::CsrfRejected,
                request_id: None,
                home_url: home.to_owned(),
            },
        );
        return html_response(StatusCode::FORBIDDEN, body);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn plain_error(lang: Lang, kind: ErrorKind) -> Response {
    let layout = Layout::new(lang, None, "", "/");
    let body = apr_dashboards::render_error(
        &layout,
        &ErrorPage {
            kind,
            request_id: None,
            home_url: "/".into(),
        },
    );
    html_response(
        StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}

/// Runs the handler as its own task, so that a panic in it becomes the 500
/// page (and a log line), not a dropped connection.
async fn catch_panic(req: Request, next: Next) -> Response {
    let (lang, _) = lang_of(req.uri().query(), req.headers());
    let path = req.uri().path().to_owned();
    match tokio::spawn(next.run(req)).await {
        Ok(r) => r,
        Err(e) => {
            let id = hex::encode(rand::random::<[u8; 4]>());
            tracing::error!(reference = %id, %path, error = %e, "UI handler panicked");
            let layout = Layout::new(lang, None, "", "/");
            let body = apr_dashboards::render_error(
                &layout,
                &ErrorPage {
                    kind: ErrorKind::Internal,
                    request_id: Some(id),
                    home_url: "/".into(),
                },
            );
            html_response(StatusCode::INTERNAL_SERVER_ERROR, body)
        }
    }
}

/// `GET /`: the login, or the role's home.
async fn home(ctx: Ctx) -> Response {
    if ctx.session.is_some() {
        ctx.see_other(&ctx.home())
    } else {
        ctx.see_other(paths::LOGIN)
    }
}

/// `GET /static/app.css`: the stylesheet, cached for a year (its URL
/// carries a hash of its content).
async fn stylesheet() -> Response {
    let mut r = apr_dashboards::STYLESHEET.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    r
}

fn login_page(
    ctx: &Ctx,
    status: StatusCode,
    username: &str,
    next: Option<String>,
    error: Option<LoginError>,
) -> Response {
    let body = apr_dashboards::render_login(
        &ctx.layout(),
        &LoginPage {
            action: paths::LOGIN.to_owned(),
            username: username.to_owned(),
            next,
            error,
        },
    );
    ctx.html(status, body)
}

/// `GET /login[?next=…][&expired=1]`.
async fn login_form(ctx: Ctx, Query(q): Query<HashMap<String, String>>) -> Response {
    if ctx.session.is_some() {
        return ctx.see_other(&ctx.home());
    }
    let next = local_path(q.get("next").map(String::as_str));
    let error = (q.contains_key("expired") || ctx.expired).then_some(LoginError::SessionExpired);
    login_page(&ctx, StatusCode::OK, "", next, error)
}

/// `POST /login`: `username`, `password`, `next` (and `csrf_token`,
/// checked by the guard against the pre-session cookie).
async fn login(ctx: Ctx, Form(form): Form<HashMap<String, String>>) -> Response {
    let username = form
        .get("username")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let next = local_path(form.get("next").map(String::as_str));
    let now = Instant::now();
    let throttle = &ctx.ui.inner.throttle;
    let throttled = |ctx: &Ctx, next| {
        login_page(
            ctx,
            StatusCode::TOO_MANY_REQUESTS,
            &username,
            next,
            Some(LoginError::TooManyAttempts),
        )
    };
    if throttle.blocked(&username, ctx.peer, now) {
        tracing::info!(%username, peer = ?ctx.peer, "UI login throttled");
        return throttled(&ctx, next);
    }
    let ui = ctx.ui.clone();
    let (name, pass) = (username.clone(), password);
    let found = blocking(move || auth::login(ui.app().registry(), &name, &pass)).await;
    let principal = match found {
        Ok(Some(p)) if view_role(p.role).is_some() => p,
        Ok(_) => {
            let locked = throttle.failed(&username, ctx.peer, now);
            tracing::info!(%username, peer = ?ctx.peer, locked, "UI login refused");
            if locked {
                return throttled(&ctx, next);
            }
            return login_page(
                &ctx,
                StatusCode::UNAUTHORIZED,
                &username,
                next,
                Some(LoginError::BadCredentials),
            );
        }
        Err(e) => return ctx.fail(e),
    };
    if let Some(old) = &ctx.session {
        ctx.ui.inner.sessions.remove(&old.id);
    }
    throttle.succeeded(&username);
    let role = view_role(principal.role);
    let s = ctx.ui.inner.sessions.create(principal, now);
    tracing::info!(%username, "UI login");
    let to = next.unwrap_or_else(|| {
        role.map_or(paths::LOGIN, apr_dashboards::pages::home_for)
            .to_owned()
    });
    let mut r = ctx.see_other(&to);
    for c in [
        session::set_cookie(session::SESSION_COOKIE, &s.id, ctx.secure, None),
        session::set_cookie(session::PRESESSION_COOKIE, "", ctx.secure, Some(0)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// `POST /logout`.
async fn logout(ctx: Ctx) -> Response {
    if let Some(s) = &ctx.session {
        ctx.ui.inner.sessions.remove(&s.id);
    }
    let mut r = Redirect::to(paths::LOGIN).into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        session::SESSION_COOKIE,
        "",
        ctx.secure,
        Some(0),
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `POST /idioma`: `lang` (`es` / `en`) and `next`.
async fn language(ctx: Ctx, Form(form): Form<HashMap<String, String>>) -> Response {
    let lang = form
        .get("lang")
        .and_then(|l| Lang::parse(l))
        .unwrap_or_default();
    let to = local_path(form.get("next").map(String::as_str)).unwrap_or_else(|| "/".into());
    let mut r = Redirect::to(&to).into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        session::LANG_COOKIE,
        lang.code(),
        ctx.secure,
        Some(365 * 86_400),
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_plus_and_percent() {
        let p = form_pairs(b"a=1+2&b=%3Cb%3Ex&c=&csrf_token=ab%2");
        assert_eq!(p[0], ("a".into(), "1 2".into()));
        assert_eq!(p[1], ("b".into(), "<b>x".into()));
        assert_eq!(p[2], ("c".into(), String::new()));
        assert_eq!(p[3], ("csrf_token".into(), "ab%2".into()));
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_the_500_page_in_spanish() {
        use tower::ServiceExt;
        async fn boom() -> &'static str {
            panic!("a bug")
        }
        let app: Router = Router::new()
            .route("/x", get(boom))
            .layer(from_fn(catch_panic));
        let r = app
            .oneshot(Request::builder().uri("/x").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let html = String::from_utf8_lossy(&body);
        assert!(html.contains("Error del servidor"), "{html}");
        assert!(!html.contains("a bug"), "{html}");
    }

    #[test]
    fn only_local_paths_are_followed_after_a_form() {
        assert_eq!(local_path(Some("/operador")), Some("/operador".into()));
        assert_eq!(local_path(Some("//evil.example/")), None);
        assert_eq!(local_path(Some("https://evil.example/")), None);
        assert_eq!(local_path(Some("/\\evil")), None);
        assert_eq!(local_path(None), None);
    }
}
