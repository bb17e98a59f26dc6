//! The audit log: one entry per write action, with who, when (UTC), what
//! (action, APR, target) and the state before and after as JSON.
//!
//! | action | target | before / after |
//! | --- | --- | --- |
//! | `alert.acknowledge`, `alert.resolve` | alert id | the alert |
//! | `limits.set` | APR | the APR's overrides (`{key: value}`) |
//! | `billing.import` | APR | the APR's billed months (`{month: m³}`) |
//! | `field_record.create` | record id | — / the record |
//! | `intervention.create` | intervention id | — / the intervention |
//! | `notifications.set` | username | the preferences, secrets as `secret_set` |
//! | `user.create`, `user.disable`, `user.password` | username | role and scope (never a password or hash) |
//! | `token.create`, `token.revoke` | token id | id, user, label, revoked time (never the token) |
//! | `device.create`, `device.rotate` | `apr/device` | MQTT username, interval (never the password) |
//! | `apr.upsert`, `fleet.import` | APR / file | the APR record / counts |
//!
//! Entries are written by the API, the UI and the CLI after the action
//! succeeded (`via` says which). Secrets never enter the log: callers build
//! the before/after values from the functions here, which leave them out.

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::Result;
use crate::store::{Registry, TokenRecord, UserRecord};

/// Through what an action came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The HTTP API.
    Api,
    /// The web UI.
    Ui,
    /// The `apr-server` command line.
    Cli,
}

impl Via {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::Ui => "ui",
            Via::Cli => "cli",
        }
    }
}

/// One entry to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// When, UTC ms.
    pub at_ms: i64,
    /// Who: a username, or `cli:<os user>` for the command line.
    pub actor: String,
    /// Through what.
    pub via: Via,
    /// What (`alert.acknowledge`, ...).
    pub action: String,
    /// The APR concerned, if any.
    pub apr: Option<String>,
    /// The object acted on (alert id, username, token id, ...).
    pub target: String,
    /// State before (`None`: it did not exist).
    pub before: Option<Value>,
    /// State after (`None`: it no longer exists).
    pub after: Option<Value>,
}

impl AuditEntry {
    /// An entry stamped now.
    pub fn now(
        actor: &str,
        via: Via,
        action: &str,
        apr: Option<&str>,
        target: impl Into<String>,
        before: Option<Value>,
        after: Option<Value>,
    ) -> AuditEntry {
        AuditEntry {
            at_ms: chrono::Utc::now().timestamp_millis(),
            actor: actor.to_owned(),
            via,
            action: action.to_owned(),
            apr: apr.map(str::to_owned),
            target: target.into(),
            before,
            after,
        }
    }
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Row id (increasing).
    pub id: i64,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// Who.
    pub actor: String,
    /// Through what (`api`, `ui`, `cli`).
    pub via: String,
    /// What.
    pub action: String,
    /// The APR concerned.
    pub apr: Option<String>,
    /// The object.
    pub target: String,
    /// Before.
    pub before: Option<Value>,
    /// After.
    pub after: Option<Value>,
}

/// Which entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only entries about these APRs (`None`: all entries, with or without
    /// an APR).
    pub aprs: Option<Vec<String>>,
    /// Only this action.
    pub action: Option<String>,
    /// Only entries by this actor.
    pub actor: Option<String>,
    /// Only entries at or after this time, UTC ms.
    pub since_ms: Option<i64>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// A user as the audit shows it: role and scope, never the password hash.
pub fn user_view(u: &UserRecord) -> Value {
    json!({
        "username": u.username,
        "role": u.role,
        "region": u.region,
        "aprs": u.aprs,
        "password_set": u.password_argon2.is_some(),
    })
}

/// A token as the audit shows it: its id, never the token or its hash.
pub fn token_view(t: &TokenRecord) -> Value {
    json!({
        "id": t.id,
        "username": t.username,
        "label": t.label,
        "created_at": crate::alerting::rfc3339_ms(t.created_ms),
        "revoked_at": t.revoked_ms.map(crate::alerting::rfc3339_ms),
    })
}

/// Records an entry; a failure is an error of the action that made it (the
/// action is done, but the caller learns that its trace is missing).
pub fn record<R: Registry + ?Sized>(registry: &R, entry: AuditEntry) -> Result<()> {
    tracing::debug!(action = %entry.action, target = %entry.target, actor = %entry.actor, "audit");
    registry.record_audit(&entry).map(|_| ())
}

/// The actor name of a command-line action: `cli:` and the OS user.
pub fn cli_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}
