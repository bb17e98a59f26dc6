//! The APR server: stores what the site gateways send and serves it to
//! operators, engineers and the regional government (CONTRACT §3).
//!
//! A reading arrives in an [`apr_wire::ingest::IngestBatch`] posted by a site
//! gateway to `POST /api/v1/ingest`. The API checks the gateway's token and
//! scope, hands the batch to the store's writer thread, which group-commits it
//! with every other batch waiting (one durable SQLite transaction), and only
//! then answers with an [`apr_wire::ingest::IngestAck`]. Dashboards read it back
//! with `GET /api/v1/aprs/{id}/readings`, raw or as bucket means, limited to the
//! caller's scope. After the commit, the batch's readings go to the alert
//! engine ([`alerting`]), which raises, escalates and clears alerts, stores
//! them, and queues notifications ([`notify`]).
//!
//! # Layout
//! - [`config`]: the configuration tree and its commented template.
//! - [`store`]: the [`store::Registry`] and [`store::SeriesStore`] traits and
//!   [`store::SqliteStore`], which implements both (schema, writer thread,
//!   read pool); [`store::VictoriaSeries`] keeps the series in
//!   VictoriaMetrics instead (`[series] engine = "victoriametrics"`).
//! - [`fleet`]: the fleet registry file (CSV) and its import.
//! - [`auth`]: roles, scopes, passwords and API tokens.
//! - [`device`]: devices and their MQTT credentials.
//! - [`summary`]: program figures over a set of APRs.
//! - [`limits`]: the one place for domain numbers (NCh 409/1, NCh 691, WHO,
//!   NAMUR NE 43, programme defaults), overridable per APR.
//! - [`alerting`]: alert rules, the alert state machine and the service
//!   that runs it after each committed batch and on a periodic tick.
//! - [`notify`]: notification preferences, signed webhooks and SMTP e-mail,
//!   delivered off the hot path.
//! - [`kpi`]: daily KPIs per APR and local day (formulas with their sources
//!   in [`kpi::formulas`]), the window figures and non-revenue water.
//! - [`field`]: manual field records (DPD checks, lab results, visits) and
//!   chlorine-probe drift against the DPD checks.
//! - [`assessment`]: the four-component assessment (rules in
//!   [`assessment::rules`]), kept over time.
//! - [`counters`]: the counters and gauges exported on `/metrics`.
//! - [`listener`]: the `[http]` listener: HTTPS (rustls, optional client
//!   certificates) or plain HTTP on loopback only unless allowed.
//! - [`api`]: the HTTP routes, request tracing and the JSON error mapping.
//! - [`ui`]: the web dashboards (sessions, CSRF, pages, live alerts) over
//!   the `apr-dashboards` view layer.
//! - [`error`]: the crate's one error type.
//!
//! The binary (`main.rs`) is a thin CLI over these: `serve`, `configfile`,
//! `import-fleet`, `user add`, `token create`, `device add`.
#![deny(unsafe_code, missing_docs)]

pub mod access;
pub mod alerting;
pub mod api;
pub mod assessment;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod config;
pub mod counters;
pub mod device;
pub mod error;
pub mod field;
pub mod fleet;
pub mod kpi;
pub mod limits;
pub mod listener;
pub mod notify;
pub mod store;
pub mod summary;
pub mod ui;

use std::sync::Arc;

pub use api::{app, serve, AppState};
pub use config::Config;
pub use error::{Error, Result};

/// Opens the SQLite store named by the configuration and builds the API
/// state over it; with `[series] engine = "victoriametrics"` the series go to
/// that engine (see [`store::VictoriaSeries`]) and SQLite keeps the rest.
pub fn open(config: &Config) -> Result<AppState> {
    let store = Arc::new(
        store::SqliteStore::open_with(
            &config.store.path,
            config.store.read_connections,
            config.store.recent_log(),
        )?
        .with_token_cache(config.store.token_cache()),
    );
    match config.series.engine {
        config::SeriesEngine::Sqlite => Ok(AppState::with_sqlite(store, config)),
        config::SeriesEngine::Victoriametrics => {
            let series = store::VictoriaSeries::open(store.clone(), config.series.settings())?;
            Ok(AppState::with_sqlite_and_series(
                store,
                Arc::new(series),
                config,
            ))
        }
    }
}
