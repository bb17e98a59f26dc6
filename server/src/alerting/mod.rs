//! Alerts: what is wrong at an APR, decided from the readings, kept as
//! history, and told to the people who look after it.
//!
//! # Layout
//! - [`rules`]: pure verdicts, one reading against the [`crate::limits::Limits`]
//!   of its APR: raise (with a severity and the threshold crossed), clear, or
//!   hold (inside the hysteresis band, or a pressure outside peak hours).
//! - [`engine`]: the state machine. Input: a pack's readings, a liveness tick
//!   (now, and every device's last reading and gateway status), or a person's
//!   acknowledge / resolve, plus the current state of every (APR, device,
//!   kind). Output: transitions (raised, cleared, escalated, renotified,
//!   acknowledged, resolved) and the pending-state changes to persist. No I/O.
//! - [`service`]: the thin loop around the engine: one thread that owns it,
//!   fed through a bounded channel by ingest (after the batch is committed),
//!   by a periodic tick and by the API; it persists each outcome in one store
//!   transaction and then hands notifications to [`crate::notify`].
//!
//! # Invariants
//! - One alert is open (state `open` or `acknowledged`) per (APR, device,
//!   kind); the store enforces it too with a partial unique index.
//! - An alert raises only after its condition held for the APR's
//!   `min_duration_s` of device time (the condition's first sighting is the
//!   persisted *pending* state), and clears only at its clear level.
//! - Everything the engine knows that cannot be recomputed from the next
//!   readings (open alerts, pending conditions, learned night-flow baselines)
//!   is in the store when the outcome that changed it has been applied, so a
//!   restarted server carries on where it stopped. What is kept in memory
//!   only: the last reading time per series (to skip re-delivered readings),
//!   the running minimum of a night window in progress, and the count of
//!   clean packs towards clearing a sensor fault.
//!
//! # Lifecycle
//! `open` → `acknowledged` (who, when, comment; stops escalation and
//! re-notification) → `resolved` (by the engine when the condition clears, or
//! by a person with who/when/comment). Resolved alerts stay listable.

pub mod engine;
pub mod rules;
pub mod service;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Whether the engine looks at readings of this metric (level rules, night
/// flow).
pub fn watches(metric: apr_wire::Metric) -> bool {
    metric == apr_wire::Metric::Flow || !rules::kinds_of(metric).is_empty()
}

/// What an alert is about (CONTRACT §3 `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Free chlorine below the minimum.
    ChlorineLow,
    /// Free chlorine above the maximum.
    ChlorineHigh,
    /// Turbidity at or above the warning or critical level.
    TurbidityHigh,
    /// pH outside its range.
    PhOutOfRange,
    /// Storage tank level low.
    TankLow,
    /// Network pressure below the minimum during peak hours.
    PressureLow,
    /// Minimum night flow above the APR's baseline (a leak).
    NightFlowHigh,
    /// No reading for several intervals, or the gateway says offline.
    DeviceOffline,
    /// Impossible values from a device, pack after pack.
    SensorFault,
    /// The chlorine probe disagrees with the operator's DPD checks, the
    /// same way, check after check: recalibrate it (see
    /// [`crate::field::probe_drift`]).
    ChlorineProbeDrift,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 10] = [
        AlertKind::ChlorineLow,
        AlertKind::ChlorineHigh,
        AlertKind::TurbidityHigh,
        AlertKind::PhOutOfRange,
        AlertKind::TankLow,
        AlertKind::PressureLow,
        AlertKind::NightFlowHigh,
        AlertKind::DeviceOffline,
        AlertKind::SensorFault,
        AlertKind::ChlorineProbeDrift,
    ];

    /// The kind's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::ChlorineLow => "chlorine_low",
            AlertKind::ChlorineHigh => "chlorine_high",
            AlertKind::TurbidityHigh => "turbidity_high",
            AlertKind::PhOutOfRange => "ph_out_of_range",
            AlertKind::TankLow => "tank_low",
            AlertKind::PressureLow => "pressure_low",
            AlertKind::NightFlowHigh => "night_flow_high",
            AlertKind::DeviceOffline => "device_offline",
            AlertKind::SensorFault => "sensor_fault",
            AlertKind::ChlorineProbeDrift => "chlorine_probe_drift",
        }
    }

    /// What the kind means, in Spanish, for operators (notifications).
    pub const fn spanish(self) -> &'static str {
        match self {
            AlertKind::ChlorineLow => "cloro libre bajo",
            AlertKind::ChlorineHigh => "cloro libre alto",
            AlertKind::TurbidityHigh => "turbiedad alta",
            AlertKind::PhOutOfRange => "pH fuera de rango",
            AlertKind::TankLow => "estanque con nivel bajo",
            AlertKind::PressureLow => "presión baja en hora punta",
            AlertKind::NightFlowHigh => "caudal nocturno alto (posible fuga)",
            AlertKind::DeviceOffline => "equipo sin conexión",
            AlertKind::SensorFault => "falla de sensor",
            AlertKind::ChlorineProbeDrift => "sonda de cloro descalibrada: recalibrar",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AlertKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<AlertKind> {
        AlertKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "'{s}' is not an alert kind; one of {}",
                    AlertKind::ALL.map(AlertKind::as_str).join(", ")
                ))
            })
    }
}

/// How bad it is (CONTRACT §3 `severity`), ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    /// The severity's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// In Spanish, for notifications.
    pub const fn spanish(self) -> &'static str {
        match self {
            Severity::Info => "Aviso",
            Severity::Warning => "Alerta",
            Severity::Critical => "Alerta crítica",
        }
    }
}

impl FromStr for Severity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Severity> {
        Severity::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "'{s}' is not a severity; one of info, warning, critical"
                ))
            })
    }
}

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Raised, nobody acknowledged it yet.
    Open,
    /// Someone said they are on it.
    Acknowledged,
    /// Over: the condition cleared, or someone closed it.
    Resolved,
}

impl AlertState {
    /// Every state.
    pub const ALL: [AlertState; 3] = [
        AlertState::Open,
        AlertState::Acknowledged,
        AlertState::Resolved,
    ];

    /// The state's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }
}

impl FromStr for AlertState {
    type Err = Error;
    fn from_str(s: &str) -> Result<AlertState> {
        AlertState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "'{s}' is not an alert state; one of open, acknowledged, resolved"
                ))
            })
    }
}

/// One alert, as stored. Times are ms since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Id, unique for ever.
    pub id: i64,
    /// APR id.
    pub apr: String,
    /// Device id.
    pub device: String,
    /// Kind.
    pub kind: AlertKind,
    /// Severity now (escalation raises it).
    pub severity: Severity,
    /// Lifecycle state.
    pub state: AlertState,
    /// When it was raised (device time of the reading that raised it; wall
    /// time for offline alerts).
    pub opened_at_ms: i64,
    /// The value that raised it (unit of the metric; for `device_offline`
    /// the seconds since the last reading, for `sensor_fault` the faulty packs).
    pub value: f64,
    /// The limit it crossed, same unit.
    pub threshold: f64,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_at_ms: Option<i64>,
    /// What they said.
    pub acknowledged_comment: Option<String>,
    /// Who resolved it (`None` when the condition cleared by itself).
    pub resolved_by: Option<String>,
    /// When.
    pub resolved_at_ms: Option<i64>,
    /// What they said.
    pub resolved_comment: Option<String>,
    /// When it was escalated to critical.
    pub escalated_at_ms: Option<i64>,
    /// When its notification was last due (raise, escalation, reminder).
    pub last_notified_at_ms: Option<i64>,
}

impl Alert {
    /// Whether it is still open (`open` or `acknowledged`).
    pub fn is_active(&self) -> bool {
        self.state != AlertState::Resolved
    }
}

/// A time as the API writes it (RFC 3339, UTC, milliseconds).
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Alert {
    /// The alert as the API and webhooks show it (CONTRACT §3): times in
    /// RFC 3339, absent ones `null`.
    pub fn to_json(&self) -> serde_json::Value {
        let t = |v: Option<i64>| v.map(rfc3339_ms);
        serde_json::json!({
            "id": self.id,
            "apr": self.apr,
            "device": self.device,
            "kind": self.kind,
            "severity": self.severity,
            "state": self.state,
            "opened_at": rfc3339_ms(self.opened_at_ms),
            "value": self.value,
            "threshold": self.threshold,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": t(self.acknowledged_at_ms),
            "acknowledged_comment": self.acknowledged_comment,
            "resolved_by": self.resolved_by,
            "resolved_at": t(self.resolved_at_ms),
            "resolved_comment": self.resolved_comment,
            "escalated_at": t(self.escalated_at_ms),
            "last_notified_at": t(self.last_notified_at_ms),
        })
    }
}
