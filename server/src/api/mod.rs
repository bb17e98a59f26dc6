//! The HTTP API (CONTRACT §3), on axum.
//!
//! [`app`] builds the router from one route table, which the OpenAPI test
//! also reads, so a route cannot go undocumented. [`serve`] runs it on a
//! listener and a shutdown signal the caller provides. Every request runs in an
//! `info` span with its method and route template, and is counted by route and
//! status in `apr_http_requests_total`. Errors become JSON in one place
//! (`error`): `{"error":{"code":"...","message":"..."}}`.
//!
//! Store calls are blocking; handlers run them on `spawn_blocking`.

mod alerts;
mod analysis;
mod aprs;
mod audit;
mod error;
mod ingest;
mod ops;
mod principal;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use tracing::Instrument;

use crate::access::{Access, RouteRule, READERS};
use crate::alerting::engine::Liveness;
use crate::alerting::service::{Alerting, Settings};
use crate::auth::Role;
use crate::config::Config;
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::notify::{DispatchContext, Dispatcher, Email, Notifier, Webhook};
use crate::store::{AlertStore, AnalysisStore, Registry, SeriesStore, SqliteStore};

/// The OpenAPI 3.0 document served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What every handler shares: the store, the counters and the settings that
/// matter per request. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    registry: Arc<dyn Registry>,
    series: Arc<dyn SeriesStore>,
    alerts: Arc<dyn AlertStore>,
    analysis: Arc<dyn AnalysisStore>,
    kpi_dirty: Arc<crate::kpi::Dirty>,
    counters: Arc<Counters>,
    max_batch_bytes: usize,
    scrape_token: Option<String>,
    alert_config: crate::config::Alerts,
    notify_config: crate::config::Notify,
    alerting: OnceLock<Arc<Alerting>>,
    ui: crate::ui::Settings,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("max_batch_bytes", &self.inner.max_batch_bytes)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// A state over any registry, series store, alert store and analysis
    /// store. The alert service is not running until
    /// [`AppState::start_alerting`] (which [`serve`] calls).
    pub fn new(
        registry: Arc<dyn Registry>,
        series: Arc<dyn SeriesStore>,
        alerts: Arc<dyn AlertStore>,
        analysis: Arc<dyn AnalysisStore>,
        config: &Config,
    ) -> AppState {
        AppState {
            inner: Arc::new(Shared {
                registry,
                series,
                alerts,
                analysis,
                kpi_dirty: Arc::default(),
                counters: Arc::new(Counters::default()),
                max_batch_bytes: config.ingest.max_batch_bytes,
                scrape_token: config.metrics.scrape_token.clone(),
                alert_config: config.alerts.clone(),
                notify_config: config.notify.clone(),
                alerting: OnceLock::new(),
                ui: crate::ui::Settings::new(&config.ui, None),
            }),
        }
    }

    /// A state over one SQLite store serving as registry, series and alert store.
    pub fn with_sqlite(store: Arc<SqliteStore>, config: &Config) -> AppState {
        let mut state = AppState::new(
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            config,
        );
        if let Some(shared) = Arc::get_mut(&mut state.inner) {
            shared.ui = crate::ui::Settings::new(&config.ui, Some(store.path()));
        }
        state
    }

    /// A state over one SQLite store serving as registry, alert and
    /// analysis store, with the series in `series` (an external engine, see
    /// [`crate::store::VictoriaSeries`]).
    pub fn with_sqlite_and_series(
        store: Arc<SqliteStore>,
        series: Arc<dyn SeriesStore>,
        config: &Config,
    ) -> AppState {
        let mut state = AppState::new(store.clone(), series, store.clone(), store.clone(), config);
        if let Some(shared) = Arc::get_mut(&mut state.inner) {
            shared.ui = crate::ui::Settings::new(&config.ui, Some(store.path()));
        }
        state
    }

    /// The web UI's settings (see [`crate::ui`]).
    pub fn ui_settings(&self) -> &crate::ui::Settings {
        &self.inner.ui
    }

    /// The alert store.
    pub fn alerts(&self) -> &dyn AlertStore {
        &*self.inner.alerts
    }

    /// The analysis store (KPIs, field records, assessments, interventions).
    pub fn analysis(&self) -> &dyn AnalysisStore {
        &*self.inner.analysis
    }

    /// The (APR, local day) pairs whose KPIs are due (see [`crate::kpi`]).
    pub fn kpi_dirty(&self) -> &crate::kpi::Dirty {
        &self.inner.kpi_dirty
    }

    /// The alert service, once started.
    pub fn alerting(&self) -> Option<&Arc<Alerting>> {
        self.inner.alerting.get()
    }

    /// Starts the alert service (engine thread, notification task, tick
    /// task) on the current tokio runtime; does nothing when it runs already.
    pub fn start_alerting(&self) -> Result<()> {
        if self.inner.alerting.get().is_some() {
            return Ok(());
        }
        let n = &self.inner.notify_config;
        let timeout = Duration::from_millis(n.timeout_ms.max(1));
        let mut notifiers: Vec<Arc<dyn Notifier>> = vec![Arc::new(Webhook::new(timeout)?)];
        if let Some(host) = &n.smtp_host {
            notifiers.push(Arc::new(Email::new(
                host,
                n.smtp_port,
                &n.smtp_from,
                timeout,
            )?));
        }
        let dispatcher = Dispatcher::start(
            DispatchContext {
                registry: self.inner.registry.clone(),
                alerts: self.inner.alerts.clone(),
                notifiers,
                counters: self.inner.counters.clone(),
                timeout,
            },
            n.queue,
        );
        let a = &self.inner.alert_config;
        let alerting = Alerting::start(
            self.inner.alerts.clone(),
            Some(dispatcher),
            Settings {
                queue: a.queue,
                notify_max_age_ms: i64::try_from(a.notify_max_age_s.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
            },
        )?;
        if self.inner.alerting.set(Arc::new(alerting)).is_err() {
            return Ok(());
        }
        let weak = Arc::downgrade(&self.inner);
        let every = Duration::from_secs(a.tick_interval_s.max(1));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let state = AppState { inner };
                if let Err(e) = tick(&state).await {
                    tracing::warn!(error = %e, "alert tick failed");
                }
            }
        });
        Ok(())
    }

    /// The registry (for fleet import, users, tokens, devices).
    pub fn registry(&self) -> &dyn Registry {
        &*self.inner.registry
    }

    /// The series store.
    pub fn series(&self) -> &dyn SeriesStore {
        &*self.inner.series
    }

    /// The counters exported on `/metrics`.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }
}

/// One tick of the alert service: every device's liveness and the clock.
async fn tick(state: &AppState) -> Result<()> {
    let Some(alerting) = state.alerting().cloned() else {
        return Ok(());
    };
    let registry = state.inner.registry.clone();
    let devices = blocking(move || registry.devices(None)).await?;
    let liveness = devices
        .into_iter()
        .map(|d| Liveness {
            apr: d.apr,
            device: d.device,
            report_interval_s: d.report_interval_s,
            last_seen_ms: d.last_seen_ms,
            last_status: d.last_status,
        })
        .collect();
    alerting
        .tick(chrono::Utc::now().timestamp_millis(), liveness)
        .await
}

/// Records an audit entry of an API write action by `caller` (see
/// [`crate::audit`]).
async fn audit(
    state: &AppState,
    caller: &crate::auth::Principal,
    action: &str,
    apr: Option<&str>,
    target: impl Into<String>,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<()> {
    let entry = crate::audit::AuditEntry::now(
        &caller.user,
        crate::audit::Via::Api,
        action,
        apr,
        target,
        before,
        after,
    );
    let registry = state.inner.registry.clone();
    blocking(move || crate::audit::record(&*registry, entry)).await
}

/// Runs a blocking store call off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("a store task failed: {e}")))?
}

/// One route of the table: method, path template, access rule, handler.
/// [`route`] is the only way to make one, so every route has a rule.
pub(crate) struct Route {
    pub(crate) rule: RouteRule,
    pub(crate) handler: MethodRouter<AppState>,
}

/// A route of `method` on `path`, used by callers `access` allows.
fn route(
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        rule: RouteRule {
            method,
            path,
            access,
        },
        handler,
    }
}

/// The route table (one row per method and path).
pub(crate) fn routes(max_batch_bytes: usize) -> Vec<Route> {
    use Access::{Alert, Apr, Authenticated, Fleet, Gateway, GatewayOwn, Public, Region, Roles};
    const WRITERS: &[Role] = &[Role::Operator, Role::Engineer, Role::Admin];
    const ALERT_WRITERS: &[Role] = &[Role::Operator, Role::Admin];
    const ENGINEERS: &[Role] = &[Role::Engineer, Role::Admin];
    const ADMINS: &[Role] = &[Role::Admin];
    const AUDIT_READERS: &[Role] = &[Role::Admin, Role::Gore];
    let (g, p, u, d) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    vec![
        route(g.clone(), "/healthz", Public, get(ops::healthz)),
        route(g.clone(), "/metrics", Access::Scrape, get(ops::metrics)),
        route(
            g.clone(),
            "/api/v1/openapi.json",
            Authenticated,
            get(ops::openapi),
        ),
        route(g.clone(), "/api/v1/aprs", Fleet, get(aprs::list)),
        route(g.clone(), "/api/v1/aprs/{id}", Apr(READERS), get(aprs::one)),
        route(
            g.clone(),
            "/api/v1/aprs/{id}/readings",
            Apr(READERS),
            get(aprs::readings),
        ),
        route(
            g.clone(),
            "/api/v1/aprs/{id}/limits",
            Apr(READERS),
            get(alerts::get_limits),
        ),
        route(
            u.clone(),
            "/api/v1/aprs/{id}/limits",
            Apr(ADMINS),
            put(alerts::put_limits),
        ),
        route(
            g.clone(),
            "/api/v1/aprs/{id}/kpis",
            Apr(READERS),
            get(analysis::kpis),
        ),
        route(
            p.clone(),
            "/api/v1/aprs/{id}/billing",
            Apr(WRITERS),
            post(analysis::post_billing),
        ),
        route(
            g.clone(),
            "/api/v1/aprs/{id}/field-records",
            Apr(READERS),
            get(analysis::list_field_records),
        ),
        route(
            p.clone(),
            "/api/v1/aprs/{id}/field-records",
            Apr(WRITERS),
            post(analysis::post_field_record),
        ),
        route(
            g.clone(),
            "/api/v1/aprs/{id}/assessment",
            Apr(READERS),
            get(analysis::assessment),
        ),
        route(
            g.clone(),
            "/api/v1/aprs/{id}/assessment/history",
            Apr(READERS),
            get(analysis::assessment_history),
        ),
        route(
            g.clone(),
            "/api/v1/aprs/{id}/interventions",
            Apr(READERS),
            get(analysis::list_interventions),
        ),
        route(
            p.clone(),
            "/api/v1/aprs/{id}/interventions",
            Apr(ENGINEERS),
            post(analysis::post_intervention),
        ),
        route(
            g.clone(),
            "/api/v1/summary",
            Region(READERS),
            get(aprs::summary),
        ),
        route(g.clone(), "/api/v1/alerts", Fleet, get(alerts::list)),
        route(
            p.clone(),
            "/api/v1/alerts/{id}/ack",
            Alert(ALERT_WRITERS),
            post(alerts::acknowledge),
        ),
        route(
            p.clone(),
            "/api/v1/alerts/{id}/resolve",
            Alert(ALERT_WRITERS),
            post(alerts::resolve),
        ),
        route(
            g.clone(),
            "/api/v1/users/{username}/notifications",
            Access::SelfOrAdmin,
            get(alerts::get_notifications),
        ),
        route(
            u,
            "/api/v1/users/{username}/notifications",
            Access::SelfOrAdmin,
            put(alerts::put_notifications),
        ),
        route(
            g.clone(),
            "/api/v1/audit",
            Roles(AUDIT_READERS),
            get(audit::list),
        ),
        route(
            g.clone(),
            "/api/v1/tokens",
            Roles(ADMINS),
            get(audit::tokens),
        ),
        route(
            d,
            "/api/v1/tokens/{id}",
            Roles(ADMINS),
            delete(audit::revoke_token),
        ),
        route(
            p,
            "/api/v1/ingest",
            Gateway,
            post(ingest::ingest).layer(DefaultBodyLimit::max(max_batch_bytes)),
        ),
        route(
            g,
            "/api/v1/gateway/devices",
            GatewayOwn,
            get(ingest::gateway_devices),
        ),
    ]
}

/// The API's routes and their access rules (see [`crate::access`]).
pub fn route_rules() -> Vec<RouteRule> {
    routes(1).into_iter().map(|r| r.rule).collect()
}

/// Computes KPIs and assessments now for every day that has readings but no
/// KPIs yet (blocking; run it off the async runtime). The periodic task does
/// the same every few minutes; the demo calls this once its history is in.
pub fn refresh_analysis(state: &AppState) -> Result<()> {
    analysis::pass_now(state)
}

/// The router with every route, the JSON fallbacks and the request tracing.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    // The table has one row per method; a path's methods are merged into
    // one method router.
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for r in routes(state.inner.max_batch_bytes) {
        match by_path.iter_mut().find(|(p, _)| *p == r.rule.path) {
            Some((_, h)) => *h = std::mem::take(h).merge(r.handler),
            None => by_path.push((r.rule.path, r.handler)),
        }
    }
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    router = router.merge(crate::ui::router(&state));
    router
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), trace_request))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then lets
/// the requests in flight finish.
/// `listener` is a `tokio::net::TcpListener` or, for HTTPS, a
/// [`crate::listener::TlsListener`].
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    use axum::serve::ListenerExt;
    let addr = axum::serve::Listener::local_addr(&listener).ok();
    state.start_alerting()?;
    analysis::start(&state);
    tracing::info!(?addr, "serving HTTP");
    // `tap_io` (a no-op) gives any listener the `ConnectInfo<SocketAddr>`
    // that the `/metrics` loopback check reads.
    axum::serve(
        listener.tap_io(|_| {}),
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(|source| Error::Io {
        what: format!("HTTP server on {addr:?} failed"),
        source,
    })
}

/// Opens an `info` span per request (method, route template), records the
/// status and latency on it, and counts the request.
async fn trace_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        route = %route,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    let start = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    span.record("status", status);
    span.record("latency_ms", latency_ms);
    span.in_scope(|| tracing::info!("answered"));
    state.counters().record_http(&route, status);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_document_and_back() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let paths = doc["paths"].as_object().expect("paths");
        let table = route_rules();
        for RouteRule { path, method, .. } in &table {
            let op = &paths
                .get(*path)
                .unwrap_or_else(|| panic!("{path} is not documented"))
                [method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{method} {path} is not documented");
            assert!(
                op["responses"].is_object(),
                "{method} {path} has no responses"
            );
        }
        for (path, ops) in paths {
            for method in ops.as_object().expect("operations").keys() {
                assert!(
                    table
                        .iter()
                        .any(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(method)),
                    "{method} {path} is documented but not routed"
                );
            }
        }
    }
}
