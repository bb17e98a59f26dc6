//! The server's configuration: a tree of sections, each with defaults, read
//! from an optional TOML file with `APR_SERVER__SECTION__KEY` environment
//! overrides (see `apr_wire::settings`). Unknown keys are errors.
//!
//! [`configfile`] prints a commented template built from the live defaults, so
//! the documented defaults cannot drift from the code.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "APR_SERVER";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[http]`
    pub http: Http,
    /// `[store]`
    pub store: Store,
    /// `[ingest]`
    pub ingest: Ingest,
    /// `[metrics]`
    pub metrics: Metrics,
    /// `[alerts]`
    pub alerts: Alerts,
    /// `[notify]`
    pub notify: Notify,
    /// `[ui]`
    pub ui: Ui,
    /// `[series]`
    pub series: Series,
}

/// Which engine holds the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesEngine {
    /// The embedded SQLite store (`[store]`).
    #[default]
    Sqlite,
    /// VictoriaMetrics (or another InfluxDB v2 write API with a
    /// Prometheus-style query API) at `url`; SQLite keeps the rest.
    Victoriametrics,
}

/// `[series]`: where the readings live (see `crate::store::victoria`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Series {
    /// `sqlite` or `victoriametrics`.
    pub engine: SeriesEngine,
    /// Base URL of the engine (a path prefix is kept).
    pub url: String,
    /// InfluxDB organisation of the write API.
    pub org: String,
    /// InfluxDB bucket of the write API (VictoriaMetrics' label `db`).
    pub bucket: String,
    /// API token (`Authorization: Token ..`), when the engine needs one.
    pub token: Option<String>,
    /// Longest one request to the engine may take, ms.
    pub timeout_ms: u64,
    /// Make each write searchable before its ack (`/internal/force_flush`,
    /// then, for series the engine had not seen, a wait until
    /// `/api/v1/series` lists them).
    pub flush_after_write: bool,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            engine: SeriesEngine::Sqlite,
            url: "http://127.0.0.1:8428".into(),
            org: "apr".into(),
            bucket: "apr".into(),
            token: None,
            timeout_ms: 30_000,
            flush_after_write: true,
        }
    }
}

impl Series {
    /// The engine's settings.
    pub fn settings(&self) -> crate::store::VictoriaSettings {
        crate::store::VictoriaSettings {
            url: self.url.clone(),
            org: self.org.clone(),
            bucket: self.bucket.clone(),
            token: self.token.clone(),
            timeout: std::time::Duration::from_millis(self.timeout_ms.max(1)),
            flush_after_write: self.flush_after_write,
        }
    }
}

/// `[ui]`: the web dashboards (see `crate::ui`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ui {
    /// Mark the session cookie `Secure` on every response, not only on
    /// requests that came over HTTPS (set it behind a TLS-terminating proxy
    /// that does not send `X-Forwarded-Proto`).
    pub secure_cookies: bool,
    /// A session unused this many seconds expires.
    pub session_idle_s: u64,
    /// A session expires this many seconds after login, used or not.
    pub session_absolute_s: u64,
    /// Failed logins of one account before it is locked.
    pub lockout_failures: u32,
    /// How long a locked account stays locked, seconds.
    pub lockout_s: u64,
    /// Failed logins from one address (any accounts) within
    /// `address_window_s` before that address must wait.
    pub address_failures: u32,
    /// The window of `address_failures`, seconds.
    pub address_window_s: u64,
}

impl Default for Ui {
    fn default() -> Self {
        Ui {
            secure_cookies: false,
            session_idle_s: 30 * 60,
            session_absolute_s: 12 * 3600,
            lockout_failures: 5,
            lockout_s: 15 * 60,
            address_failures: 20,
            address_window_s: 15 * 60,
        }
    }
}

/// `[alerts]`: the alert engine's loop (thresholds are in `limits`, per APR).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Alerts {
    /// Seconds between liveness / escalation / re-notification ticks.
    pub tick_interval_s: u64,
    /// Inputs queued for the engine before ingest waits for it.
    pub queue: usize,
    /// A raise from a reading older than this many seconds (history being
    /// backfilled) is not notified when raised, only reminded later.
    pub notify_max_age_s: u64,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            tick_interval_s: 10,
            queue: 4096,
            notify_max_age_s: 900,
        }
    }
}

/// `[notify]`: the channels that reach people.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Notify {
    /// SMTP relay host (plain SMTP, no TLS or AUTH); e-mail is off without it.
    pub smtp_host: Option<String>,
    /// SMTP relay port.
    pub smtp_port: u16,
    /// Sender address of alert e-mails.
    pub smtp_from: String,
    /// Longest one delivery may take, ms.
    pub timeout_ms: u64,
    /// Notifications queued for delivery before new ones are dropped (counted).
    pub queue: usize,
}

impl Default for Notify {
    fn default() -> Self {
        Notify {
            smtp_host: None,
            smtp_port: 25,
            smtp_from: "APR alertas <alertas@apr.localhost>".into(),
            timeout_ms: 5000,
            queue: 1024,
        }
    }
}

/// `[http]`: where the API listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// Listen address, `host:port`.
    pub listen: String,
    /// PEM certificate chain for HTTPS (with `tls_key`); empty: plain HTTP.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// PEM CA file: with it, every client must present a certificate this CA
    /// signed (mutual TLS, for site gateways); empty: no client certificates.
    pub client_ca: String,
    /// Allow plain HTTP on a non-loopback address (refused otherwise).
    pub allow_plaintext: bool,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: "127.0.0.1:8080".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            client_ca: String::new(),
            allow_plaintext: false,
        }
    }
}

/// `[store]`: the embedded SQLite store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    /// Database file; created with its schema when missing.
    pub path: PathBuf,
    /// Read connections kept open for queries.
    pub read_connections: usize,
    /// Rows `readings_recent` may hold before chunks move to `readings`
    /// (see `store::writer`).
    pub recent_rows_max: u64,
    /// Rows moved at least per chunk, one chunk after each write.
    pub recent_chunk_rows: u64,
    /// Readings per series from which a group goes straight to `readings`
    /// (0: always, i.e. no `readings_recent`).
    pub direct_per_series: u64,
    /// WAL pages (4 KiB) after which a commit copies them into the database
    /// file.
    pub wal_checkpoint_pages: u32,
    /// Bearer tokens whose users are kept in memory (0: none).
    pub token_cache_entries: usize,
    /// Seconds after which a cached token's user is read again.
    pub token_cache_max_age_s: u64,
}

impl Default for Store {
    fn default() -> Self {
        let log = crate::store::RecentLog::default();
        let tokens = crate::store::TokenCacheSettings::default();
        Store {
            path: PathBuf::from("apr.sqlite3"),
            read_connections: 4,
            recent_rows_max: log.merge_above_rows,
            recent_chunk_rows: log.chunk_rows,
            direct_per_series: log.direct_per_series,
            wal_checkpoint_pages: log.checkpoint_pages,
            token_cache_entries: tokens.entries,
            token_cache_max_age_s: tokens.max_age.as_secs(),
        }
    }
}

impl Store {
    /// The writer's policy for `readings_recent`.
    pub fn recent_log(&self) -> crate::store::RecentLog {
        crate::store::RecentLog {
            merge_above_rows: self.recent_rows_max,
            chunk_rows: self.recent_chunk_rows,
            direct_per_series: self.direct_per_series,
            checkpoint_pages: self.wal_checkpoint_pages,
        }
    }

    /// How bearer tokens are cached.
    pub fn token_cache(&self) -> crate::store::TokenCacheSettings {
        crate::store::TokenCacheSettings {
            entries: self.token_cache_entries,
            max_age: std::time::Duration::from_secs(self.token_cache_max_age_s),
        }
    }
}

/// `[ingest]`: what gateways may post.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ingest {
    /// Largest `POST /api/v1/ingest` body, bytes; larger is answered 413.
    pub max_batch_bytes: usize,
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest {
            max_batch_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[metrics]`: who may scrape `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Bearer token that lets a non-loopback peer scrape `/metrics`; without
    /// it only loopback peers may.
    pub scrape_token: Option<String>,
}

impl Config {
    /// Loads the defaults, overlaid with `file` when given, overlaid with the
    /// `APR_SERVER__…` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        apr_wire::settings::load(file, ENV_PREFIX).map_err(|e| Error::Config(e.0))
    }
}

/// A commented TOML template holding the default configuration.
pub fn configfile() -> String {
    let d = Config::default();
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    format!(
        r#"# apr-server configuration. Every key is optional; the values below are the
# defaults. Any key can also be set from the environment:
# {ENV_PREFIX}__HTTP__LISTEN=0.0.0.0:8080 sets [http] listen.

[http]
# Address the API, /healthz and /metrics listen on (host:port).
listen = {listen}
# HTTPS (rustls): PEM certificate chain and its private key. Without them the
# server speaks plain HTTP, which it does only on a loopback address unless
# allow_plaintext = true.
tls_cert = {tls_cert}
tls_key = {tls_key}
# Mutual TLS: a PEM CA file; every client (site gateways, browsers) must then
# present a certificate signed by it. Empty: no client certificates.
client_ca = {client_ca}
# Serve plain HTTP on a non-loopback address (e.g. behind a TLS proxy).
allow_plaintext = {allow_plaintext}

[store]
# SQLite database file (WAL mode); created with its schema when missing.
path = {path}
# Read connections kept open for queries.
read_connections = {read_connections}
# New readings wait in a small table (readings_recent) and move to the main
# one in sorted chunks: a commit then rewrites few pages even when thousands
# of series report every second (docs/SCALING.md). Rows it may hold, rows
# moved at least per chunk, and readings per series from which a write goes
# straight to the main table (0: always).
recent_rows_max = {recent_rows_max}
recent_chunk_rows = {recent_chunk_rows}
direct_per_series = {direct_per_series}
# WAL pages (4 KiB each) after which a commit copies them into the database
# file: a page that many commits rewrite is copied once per checkpoint, so a
# longer WAL writes fewer bytes, at the price of a WAL file that large.
wal_checkpoint_pages = {wal_checkpoint_pages}
# Users of bearer tokens kept in memory (0: every request reads the
# database), each read again after token_cache_max_age_s. Any registry write,
# of this server or of the apr-server CLI, empties the cache at once.
token_cache_entries = {token_cache_entries}
token_cache_max_age_s = {token_cache_max_age_s}

[ingest]
# Largest POST /api/v1/ingest body in bytes; a larger one is answered 413.
max_batch_bytes = {max_batch_bytes}

[metrics]
# Bearer token that lets a non-loopback peer scrape /metrics. Without one,
# only loopback peers may scrape.
# scrape_token = "a long random string"

[alerts]
# Thresholds and timings are per APR: GET/PUT /api/v1/aprs/{{id}}/limits.
# Seconds between ticks (offline devices, escalation, re-notification).
tick_interval_s = {tick_interval_s}
# Inputs queued for the alert engine before ingest waits for it.
queue = {alerts_queue}
# A raise from a reading older than this (s) is not notified at once.
notify_max_age_s = {notify_max_age_s}

[notify]
# SMTP relay for alert e-mails (plain SMTP, no TLS or AUTH); unset: no e-mail.
# smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
smtp_from = {smtp_from}
# Longest one delivery may take, ms.
timeout_ms = {timeout_ms}
# Notifications queued for delivery before new ones are dropped (counted).
queue = {notify_queue}

[series]
# Where the readings live: "sqlite" (the [store] file) or "victoriametrics"
# (written through the InfluxDB v2 write API, read back through the
# Prometheus-style query API; start VictoriaMetrics with
# -dedup.minScrapeInterval=1ms so a re-sent reading is stored once, and
# -search.latencyOffset=0s). The registry, alerts and KPIs stay in SQLite.
engine = {engine}
url = {series_url}
org = {org}
bucket = {bucket}
# token = "an InfluxDB API token"
# Longest one request to the engine may take, ms.
timeout_ms = {series_timeout_ms}
# Call /internal/force_flush after each write, so a batch's readings are
# searchable when it is acknowledged (the KPI task reads them right after).
flush_after_write = {flush_after_write}

[ui]
# Mark the session cookie Secure on every response. Without it the cookie is
# Secure only when the request came over HTTPS (or X-Forwarded-Proto: https).
secure_cookies = {secure_cookies}
# A session unused this long expires; any session expires this long after
# login (seconds).
session_idle_s = {session_idle_s}
session_absolute_s = {session_absolute_s}
# Login throttling: an account is locked for lockout_s after lockout_failures
# failed logins; an address with address_failures failed logins (any
# accounts) within address_window_s waits until the window passes.
lockout_failures = {lockout_failures}
lockout_s = {lockout_s}
address_failures = {address_failures}
address_window_s = {address_window_s}
"#,
        listen = q(&d.http.listen),
        tls_cert = q(&d.http.tls_cert),
        tls_key = q(&d.http.tls_key),
        client_ca = q(&d.http.client_ca),
        allow_plaintext = d.http.allow_plaintext,
        path = q(&d.store.path.to_string_lossy()),
        read_connections = d.store.read_connections,
        recent_rows_max = d.store.recent_rows_max,
        wal_checkpoint_pages = d.store.wal_checkpoint_pages,
        recent_chunk_rows = d.store.recent_chunk_rows,
        direct_per_series = d.store.direct_per_series,
        token_cache_entries = d.store.token_cache_entries,
        token_cache_max_age_s = d.store.token_cache_max_age_s,
        max_batch_bytes = d.ingest.max_batch_bytes,
        tick_interval_s = d.alerts.tick_interval_s,
        alerts_queue = d.alerts.queue,
        notify_max_age_s = d.alerts.notify_max_age_s,
        smtp_port = d.notify.smtp_port,
        smtp_from = q(&d.notify.smtp_from),
        timeout_ms = d.notify.timeout_ms,
        notify_queue = d.notify.queue,
        secure_cookies = d.ui.secure_cookies,
        session_idle_s = d.ui.session_idle_s,
        session_absolute_s = d.ui.session_absolute_s,
        lockout_failures = d.ui.lockout_failures,
        lockout_s = d.ui.lockout_s,
        address_failures = d.ui.address_failures,
        address_window_s = d.ui.address_window_s,
        engine = q(match d.series.engine {
            SeriesEngine::Sqlite => "sqlite",
            SeriesEngine::Victoriametrics => "victoriametrics",
        }),
        series_url = q(&d.series.url),
        org = q(&d.series.org),
        bucket = q(&d.series.bucket),
        series_timeout_ms = d.series.timeout_ms,
        flush_after_write = d.series.flush_after_write,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_back_to_the_defaults() {
        let c: Config =
            apr_wire::settings::load_from(&configfile(), "template", ENV_PREFIX, Vec::new())
                .unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn the_template_names_every_section() {
        let t = configfile();
        for s in [
            "[http]",
            "[store]",
            "[ingest]",
            "[metrics]",
            "scrape_token",
            "[alerts]",
            "[notify]",
            "smtp_host",
            "[ui]",
            "[series]",
        ] {
            assert!(t.contains(s), "{s} missing from\n{t}");
        }
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let e = apr_wire::settings::load_from::<Config>(
            "[store]\npth = \"x\"\n",
            "f.toml",
            ENV_PREFIX,
            Vec::new(),
        )
        .unwrap_err();
        assert!(e.0.contains("pth"), "{e}");
    }

    #[test]
    fn the_series_engine_is_chosen_from_the_environment() {
        let c: Config = apr_wire::settings::load_from(
            "[series]\nurl = \"http://10.0.0.5:8428/tsdb\"\n",
            "f.toml",
            ENV_PREFIX,
            vec![
                (
                    "APR_SERVER__SERIES__ENGINE".into(),
                    "victoriametrics".into(),
                ),
                ("APR_SERVER__SERIES__TOKEN".into(), "t0k".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.series.engine, SeriesEngine::Victoriametrics);
        assert_eq!(c.series.url, "http://10.0.0.5:8428/tsdb");
        assert_eq!(c.series.token.as_deref(), Some("t0k"));
    }

    #[test]
    fn the_scrape_token_is_read_from_the_environment() {
        let c: Config = apr_wire::settings::load_from(
            "",
            "defaults",
            ENV_PREFIX,
            vec![("APR_SERVER__METRICS__SCRAPE_TOKEN".into(), "s3cret".into())],
        )
        .unwrap();
        assert_eq!(c.metrics.scrape_token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn the_token_cache_comes_from_the_file_and_the_environment() {
        let c: Config = apr_wire::settings::load_from(
            "[store]\ntoken_cache_max_age_s = 5\n",
            "server.toml",
            ENV_PREFIX,
            vec![("APR_SERVER__STORE__TOKEN_CACHE_ENTRIES".into(), "0".into())],
        )
        .unwrap();
        let t = c.store.token_cache();
        assert_eq!((t.entries, t.max_age.as_secs()), (0, 5));
        assert_eq!(
            Config::default().store.token_cache(),
            crate::store::TokenCacheSettings::default()
        );
    }

    #[test]
    fn the_recent_readings_policy_comes_from_the_file_and_the_environment() {
        let c: Config = apr_wire::settings::load_from(
            "[store]\nrecent_rows_max = 1000\n",
            "server.toml",
            ENV_PREFIX,
            vec![
                ("APR_SERVER__STORE__DIRECT_PER_SERIES".into(), "0".into()),
                (
                    "APR_SERVER__STORE__WAL_CHECKPOINT_PAGES".into(),
                    "500".into(),
                ),
            ],
        )
        .unwrap();
        let log = c.store.recent_log();
        assert_eq!(
            (
                log.merge_above_rows,
                log.chunk_rows,
                log.direct_per_series,
                log.checkpoint_pages
            ),
            (1000, crate::store::RecentLog::default().chunk_rows, 0, 500)
        );
        let bad = apr_wire::settings::load_from::<Config>(
            "[store]\nrecent_rows_max = -1\n",
            "server.toml",
            ENV_PREFIX,
            Vec::new(),
        );
        assert!(
            bad.is_err_and(|e| e.0.contains("recent_rows_max")),
            "a negative limit names the key"
        );
    }
}
