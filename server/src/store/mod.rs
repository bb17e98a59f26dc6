//! Where the server keeps things: the registry (regions, APRs, devices,
//! users, tokens), the series (readings, quarantine), alerts, and what is
//! derived or entered beside them ([`AnalysisStore`]: KPIs, billing, field
//! records, assessments, interventions).
//!
//! Two traits split the two concerns so the series part can later move to a
//! time-series database (InfluxDB, VictoriaMetrics) while the registry stays
//! relational: [`Registry`] and [`SeriesStore`]. Both are `Send + Sync` with
//! blocking methods; async callers run them on `tokio::task::spawn_blocking`.
//! [`SqliteStore`] implements both in one embedded SQLite file.
//!
//! # Readings
//! A reading is keyed by (APR, device, metric, time in ms). Storing a key that
//! exists already is a duplicate, counted and otherwise ignored, which makes
//! ingest idempotent: a gateway that retries a batch after a lost answer
//! stores nothing twice.

mod accounts;
mod alerts;
mod analysis;
pub mod schema;
mod sqlite;
mod token_cache;
pub mod victoria;
mod writer;

pub use accounts::{AccountStore, TokenRecord, TOKEN_ID_CHARS};
pub use analysis::{
    AnalysisStore, AssessmentRow, FieldKind, FieldRecord, InterventionRecord, KpiRow,
};
pub use sqlite::SqliteStore;
pub use token_cache::TokenCacheSettings;
pub use victoria::{VictoriaSeries, VictoriaSettings};
pub use writer::{merge_plan, write_target, RecentLog, Target};

use apr_wire::ingest::{GatewayDevice, IngestAck, IngestBatch};
use apr_wire::Metric;
use serde::{Deserialize, Serialize};

use crate::alerting::engine::{Outcome, Snapshot};
use crate::alerting::{Alert, AlertKind, AlertState};
use crate::auth::Role;
use crate::error::Result;
use crate::limits::LimitOverride;
use crate::notify::NotificationPref;

/// A region (e.g. `biobio`, "Biobío").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// Region id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// A rural drinking-water system (APR) as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AprRecord {
    /// APR id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Comuna (municipality).
    pub comuna: String,
    /// Region id.
    pub region: String,
    /// People served.
    pub beneficiaries: u64,
    /// Household connections.
    pub connections: u64,
    /// Water source (`pozo`, `superficial`, `vertiente`, …).
    pub source: String,
    /// Production capacity, l/s.
    pub capacity_l_s: f64,
    /// Storage volume, m³.
    pub storage_m3: f64,
    /// Regional government (GORE) contribution, CLP.
    pub gore_contribution_clp: u64,
    /// Public investment, CLP.
    pub public_investment_clp: u64,
}

/// A device of an APR as the registry knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    /// APR id.
    pub apr: String,
    /// Device id.
    pub device: String,
    /// MQTT username.
    pub mqtt_username: String,
    /// SHA-256 of the MQTT password, hex.
    pub mqtt_password_sha256: String,
    /// Reporting interval, seconds.
    pub report_interval_s: u32,
    /// The retained `config` for the device.
    pub config: serde_json::Value,
    /// Last status reported by its gateway (`online` / `offline`).
    pub last_status: Option<String>,
    /// When that status was seen, ms since the Unix epoch.
    pub last_status_ms: Option<i64>,
    /// When a pack from the device last reached its gateway, ms.
    pub last_seen_ms: Option<i64>,
}

/// A device is online when its gateway last said so; a device whose gateway
/// never sent a status counts as online while it reported within the last
/// three intervals.
pub fn device_online(
    last_status: Option<&str>,
    last_seen_ms: Option<i64>,
    report_interval_s: u32,
    now_ms: i64,
) -> bool {
    match last_status {
        Some(s) => s == "online",
        None => last_seen_ms
            .is_some_and(|seen| now_ms - seen <= 3 * 1000 * i64::from(report_interval_s.max(1))),
    }
}

impl DeviceRecord {
    /// Whether the device counts as online at `now_ms` (see [`device_online`]).
    pub fn online(&self, now_ms: i64) -> bool {
        device_online(
            self.last_status.as_deref(),
            self.last_seen_ms,
            self.report_interval_s,
            now_ms,
        )
    }

    /// What the device's gateway needs to know about it.
    pub fn to_gateway_device(&self) -> GatewayDevice {
        GatewayDevice {
            apr: self.apr.clone(),
            device: self.device.clone(),
            mqtt_username: self.mqtt_username.clone(),
            mqtt_password_sha256: self.mqtt_password_sha256.clone(),
            report_interval_s: self.report_interval_s,
            config: self.config.clone(),
        }
    }
}

/// A device to create or update; the password is already hashed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceUpsert {
    /// APR id (must be in the registry).
    pub apr: String,
    /// Device id.
    pub device: String,
    /// MQTT username (unique).
    pub mqtt_username: String,
    /// SHA-256 of the MQTT password, hex.
    pub mqtt_password_sha256: String,
    /// Reporting interval, seconds.
    pub report_interval_s: u32,
    /// Retained device config.
    pub config: serde_json::Value,
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Row id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Argon2 PHC string; `None` for gateways, which only use tokens.
    pub password_argon2: Option<String>,
    /// Region of a `gore` user.
    pub region: Option<String>,
    /// APRs of an `operator` or `gateway` user.
    pub aprs: Vec<String>,
}

/// A user to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInsert {
    /// Login name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Argon2 PHC string, if the user logs in with a password.
    pub password_argon2: Option<String>,
    /// Region (for `gore`).
    pub region: Option<String>,
    /// APRs (for `operator` and `gateway`).
    pub aprs: Vec<String>,
}

/// Registry: regions, APRs, devices, users and tokens (and, through
/// [`AccountStore`], token revocation, passwords and the audit log).
pub trait Registry: AccountStore + Send + Sync {
    /// Whether the store answers a trivial query and can write.
    fn ping(&self) -> Result<()>;
    /// Creates or updates regions and APRs in one transaction; answers how
    /// many rows actually changed (0 when the same fleet is imported again).
    fn upsert_fleet(&self, regions: &[Region], aprs: &[AprRecord]) -> Result<usize>;
    /// Every region, by id.
    fn regions(&self) -> Result<Vec<Region>>;
    /// Every APR, by id.
    fn aprs(&self) -> Result<Vec<AprRecord>>;
    /// One APR.
    fn apr(&self, id: &str) -> Result<Option<AprRecord>>;
    /// Creates or updates a device (keyed by APR and device id).
    fn upsert_device(&self, device: &DeviceUpsert) -> Result<()>;
    /// The devices of the given APRs (all devices when `None`), by APR and id.
    fn devices(&self, aprs: Option<&[String]>) -> Result<Vec<DeviceRecord>>;
    /// Creates a user; answers its id. A taken username is a conflict.
    fn insert_user(&self, user: &UserInsert) -> Result<i64>;
    /// Replaces a user's APRs and region.
    fn set_user_scope(&self, username: &str, aprs: &[String], region: Option<&str>) -> Result<()>;
    /// A user by name.
    fn user(&self, username: &str) -> Result<Option<UserRecord>>;
    /// Stores a token's SHA-256 (hex) for a user.
    fn insert_token(
        &self,
        sha256: &str,
        username: &str,
        created_ms: i64,
        label: Option<&str>,
    ) -> Result<()>;
    /// The user a token's SHA-256 (hex) belongs to.
    fn user_by_token(&self, sha256: &str) -> Result<Option<UserRecord>>;
}

/// A readings query on one APR and metric.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesQuery<'a> {
    /// APR id.
    pub apr: &'a str,
    /// Metric.
    pub metric: Metric,
    /// One device only, or every device of the APR.
    pub device: Option<&'a str>,
    /// First time, ms, inclusive.
    pub from_ms: i64,
    /// Last time, ms, inclusive.
    pub to_ms: i64,
    /// Bucket width in ms: one mean per bucket starting at
    /// `floor(t / step) * step`; `None` for the raw readings.
    pub step_ms: Option<i64>,
    /// Most points to return; the caller asks for one more than it accepts to
    /// tell "exactly the limit" from "more".
    pub limit: usize,
}

/// A point of a series: time and value (or bucket start and mean).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Time (or bucket start), ms since the Unix epoch.
    pub t_ms: i64,
    /// Value (or bucket mean).
    pub v: f64,
}

/// The latest reading of one device and metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// Device id.
    pub device: String,
    /// Metric.
    pub metric: Metric,
    /// Time, ms.
    pub t_ms: i64,
    /// Value.
    pub v: f64,
}

/// What is stored of one metric of an APR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    /// Metric.
    pub metric: Metric,
    /// Earliest reading, ms.
    pub first_ms: i64,
    /// Latest reading, ms.
    pub last_ms: i64,
    /// Number of readings.
    pub count: u64,
}

/// A quarantined refusal as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// APR id.
    pub apr: String,
    /// Device id.
    pub device: String,
    /// When the gateway received the pack, ms.
    pub received_ms: i64,
    /// Refusal reason code.
    pub reason: String,
    /// Record index, when one record was refused.
    pub record: Option<u64>,
    /// What was wrong.
    pub detail: String,
    /// Excerpt of the payload.
    pub raw: Option<String>,
}

/// Series: readings and the quarantine.
pub trait SeriesStore: Send + Sync {
    /// Stores a batch durably: readings (duplicates counted, not stored
    /// twice), one quarantine row per refusal, and the devices' last-seen
    /// times and statuses. Returns once committed.
    fn write_batch(&self, batch: IngestBatch) -> Result<IngestAck>;
    /// Raw readings or bucket means, by time.
    fn readings(&self, query: &SeriesQuery<'_>) -> Result<Vec<Point>>;
    /// The latest reading of each device and metric of an APR, by metric and device.
    fn latest(&self, apr: &str) -> Result<Vec<Latest>>;
    /// Earliest, latest and count of the readings of each metric of an APR.
    fn coverage(&self, apr: &str) -> Result<Vec<Coverage>>;
    /// The most recent quarantine rows of an APR, newest first.
    fn quarantine(&self, apr: &str, limit: usize) -> Result<Vec<QuarantineEntry>>;
    /// Readings stored in total (kept as a running count, not counted).
    fn readings_stored(&self) -> u64;
}

/// Which alerts to list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertQuery {
    /// Only these APRs (`None`: every APR).
    pub aprs: Option<Vec<String>>,
    /// Only this state.
    pub state: Option<AlertState>,
    /// Only this kind.
    pub kind: Option<AlertKind>,
    /// Only this device.
    pub device: Option<String>,
    /// Most alerts, newest first.
    pub limit: usize,
}

/// Alerts, their engine's state, per-APR limits and notification preferences.
pub trait AlertStore: Send + Sync {
    /// What the alert engine restarts from.
    fn load_alerting(&self) -> Result<Snapshot>;
    /// Stores an engine outcome in one transaction.
    fn apply_alerting(&self, outcome: &Outcome) -> Result<()>;
    /// Alerts, newest first.
    fn alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>>;
    /// One alert.
    fn alert(&self, id: i64) -> Result<Option<Alert>>;
    /// Alerts not resolved, counted per APR.
    fn open_alerts_by_apr(&self) -> Result<Vec<(String, u64)>>;
    /// The limit overrides of one APR (all APRs when `None`), by APR and key.
    fn limit_overrides(&self, apr: Option<&str>) -> Result<Vec<(String, LimitOverride)>>;
    /// Sets (`Some`) or removes (`None`) overrides of one APR in one
    /// transaction.
    fn set_limit_overrides(
        &self,
        apr: &str,
        changes: &[(String, Option<serde_json::Value>)],
        by: &str,
        at_ms: i64,
    ) -> Result<()>;
    /// Notification preferences of one user (every user when `None`), as
    /// (username, preference).
    fn notification_prefs(&self, username: Option<&str>)
        -> Result<Vec<(String, NotificationPref)>>;
    /// Replaces a user's notification preferences.
    fn set_notification_prefs(&self, username: &str, prefs: &[NotificationPref]) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_online_when_its_gateway_says_so() {
        assert!(device_online(Some("online"), None, 60, 0));
        assert!(!device_online(Some("offline"), Some(1_000), 60, 1_000));
    }

    #[test]
    fn without_a_status_a_device_is_online_for_three_intervals() {
        assert!(device_online(None, Some(0), 60, 180_000));
        assert!(!device_online(None, Some(0), 60, 180_001));
        assert!(!device_online(None, None, 60, 0));
    }
}
