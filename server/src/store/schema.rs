//! The SQLite schema and its migrations.
//!
//! `PRAGMA user_version` holds the schema version. Opening a store runs every
//! migration above it, each in one transaction, so a fresh file gets the whole
//! schema and an existing one is brought up to date; a file from a newer server
//! is refused rather than misread.
//!
//! Readings live in a `WITHOUT ROWID` table keyed by `(series, t)`: one B-tree
//! ordered by series then time, so a time range of one series is one range scan
//! and a reading whose key exists is ignored (`INSERT OR IGNORE`), which is how
//! duplicates are told apart. `series` maps (APR, device, metric index) to a
//! small integer so each reading row is three numbers. New readings land in
//! `readings_recent` (same key, kept small) and move to `readings` in sorted
//! chunks (`store::writer`); queries read both.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// The schema version this server writes.
pub const SCHEMA_VERSION: i64 = 6;

const V1: &str = r"
CREATE TABLE regions(
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE aprs(
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    comuna TEXT NOT NULL,
    region TEXT NOT NULL REFERENCES regions(id),
    beneficiaries INTEGER NOT NULL,
    connections INTEGER NOT NULL,
    source TEXT NOT NULL,
    capacity_l_s REAL NOT NULL,
    storage_m3 REAL NOT NULL,
    gore_contribution_clp INTEGER NOT NULL,
    public_investment_clp INTEGER NOT NULL
);
CREATE TABLE devices(
    apr TEXT NOT NULL REFERENCES aprs(id),
    device TEXT NOT NULL,
    mqtt_username TEXT NOT NULL UNIQUE,
    mqtt_password_sha256 TEXT NOT NULL,
    report_interval_s INTEGER NOT NULL,
    config TEXT NOT NULL,
    last_status TEXT,
    last_status_ms INTEGER,
    last_seen_ms INTEGER,
    PRIMARY KEY(apr, device)
);
CREATE TABLE users(
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_argon2 TEXT,
    region TEXT REFERENCES regions(id)
);
CREATE TABLE user_aprs(
    user INTEGER NOT NULL REFERENCES users(id),
    apr TEXT NOT NULL REFERENCES aprs(id),
    PRIMARY KEY(user, apr)
) WITHOUT ROWID;
CREATE TABLE tokens(
    sha256 TEXT PRIMARY KEY,
    user INTEGER NOT NULL REFERENCES users(id),
    created_ms INTEGER NOT NULL,
    label TEXT
) WITHOUT ROWID;
CREATE TABLE series(
    id INTEGER PRIMARY KEY,
    apr TEXT NOT NULL,
    device TEXT NOT NULL,
    metric INTEGER NOT NULL,
    UNIQUE(apr, device, metric)
);
CREATE TABLE readings(
    series INTEGER NOT NULL,
    t INTEGER NOT NULL,
    v REAL NOT NULL,
    PRIMARY KEY(series, t)
) WITHOUT ROWID;
CREATE TABLE quarantine(
    id INTEGER PRIMARY KEY,
    apr TEXT NOT NULL,
    device TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    record INTEGER,
    detail TEXT NOT NULL,
    raw TEXT
);
CREATE INDEX quarantine_by_apr ON quarantine(apr, received_ms);
CREATE TABLE counts(
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counts(name, value) VALUES ('readings', 0);
";

/// Alerts (see `crate::alerting`): the alerts themselves, kept as history;
/// the pending conditions and night-flow states the engine restarts from;
/// per-APR limit overrides; notification preferences. The partial unique
/// index keeps one alert open per (APR, device, kind).
const V2: &str = r"
CREATE TABLE alerts(
    id INTEGER PRIMARY KEY,
    apr TEXT NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    opened_at INTEGER NOT NULL,
    value REAL NOT NULL,
    threshold REAL NOT NULL,
    acknowledged_by TEXT,
    acknowledged_at INTEGER,
    acknowledged_comment TEXT,
    resolved_by TEXT,
    resolved_at INTEGER,
    resolved_comment TEXT,
    escalated_at INTEGER,
    last_notified_at INTEGER
);
CREATE UNIQUE INDEX alerts_one_open ON alerts(apr, device, kind) WHERE state <> 'resolved';
CREATE INDEX alerts_by_apr ON alerts(apr, opened_at);
CREATE TABLE alert_pending(
    apr TEXT NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY(apr, device, kind)
) WITHOUT ROWID;
CREATE TABLE night_flow(
    apr TEXT NOT NULL,
    device TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY(apr, device)
) WITHOUT ROWID;
CREATE TABLE limit_overrides(
    apr TEXT NOT NULL REFERENCES aprs(id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at INTEGER NOT NULL,
    PRIMARY KEY(apr, key)
) WITHOUT ROWID;
CREATE TABLE notification_prefs(
    id INTEGER PRIMARY KEY,
    user INTEGER NOT NULL REFERENCES users(id),
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    secret TEXT,
    min_severity TEXT NOT NULL,
    aprs TEXT
);
CREATE INDEX notification_prefs_by_user ON notification_prefs(user);
";

/// KPIs, billing, field records, assessments and interventions (see
/// `store::analysis`). `kpi_daily` is keyed by (APR, local day, KPI);
/// `assessments` is append-only (one row per component per computation).
const V3: &str = r#"
CREATE TABLE kpi_daily(
    apr TEXT NOT NULL,
    day TEXT NOT NULL,
    kpi TEXT NOT NULL,
    value REAL NOT NULL,
    "window" TEXT NOT NULL,
    computed_at INTEGER NOT NULL,
    PRIMARY KEY(apr, day, kpi)
) WITHOUT ROWID;
CREATE TABLE billing(
    apr TEXT NOT NULL REFERENCES aprs(id),
    month TEXT NOT NULL,
    billed_m3 REAL NOT NULL,
    imported_by TEXT NOT NULL,
    imported_at INTEGER NOT NULL,
    PRIMARY KEY(apr, month)
) WITHOUT ROWID;
CREATE TABLE field_records(
    id INTEGER PRIMARY KEY,
    apr TEXT NOT NULL REFERENCES aprs(id),
    kind TEXT NOT NULL CHECK (kind IN ('dpd_chlorine', 'lab', 'visit')),
    taken_at INTEGER NOT NULL,
    value REAL,
    parameter TEXT,
    note TEXT,
    recorded_by TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX field_records_by_apr ON field_records(apr, taken_at);
CREATE TABLE assessments(
    id INTEGER PRIMARY KEY,
    apr TEXT NOT NULL,
    computed_at INTEGER NOT NULL,
    component TEXT NOT NULL,
    flagged INTEGER NOT NULL,
    reasons TEXT NOT NULL
);
CREATE INDEX assessments_by_apr ON assessments(apr, computed_at);
CREATE TABLE interventions(
    id INTEGER PRIMARY KEY,
    apr TEXT NOT NULL REFERENCES aprs(id),
    component TEXT NOT NULL,
    description TEXT NOT NULL,
    cost_clp INTEGER NOT NULL,
    funder TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT NOT NULL
);
"#;

/// Accounts and the audit log (see `store::accounts`): a token can be
/// revoked (kept, with the time, so the admin page and the audit show it);
/// `audit` holds one row per write action with who, when (UTC ms), what
/// and the before/after state as JSON.
const V4: &str = r"
ALTER TABLE tokens ADD COLUMN revoked_ms INTEGER;
CREATE TABLE audit(
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    via TEXT NOT NULL CHECK (via IN ('api', 'ui', 'cli')),
    action TEXT NOT NULL,
    apr TEXT,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE INDEX audit_by_time ON audit(at_ms);
CREATE INDEX audit_by_apr ON audit(apr, at_ms);
";

/// New readings (see `store::writer`): the same key as `readings`, kept
/// small so a commit rewrites few pages; the writer moves its rows to
/// `readings` in sorted chunks. A reading is in exactly one of the two, and
/// every query of readings reads both.
const V5: &str = r"
CREATE TABLE readings_recent(
    series INTEGER NOT NULL,
    t INTEGER NOT NULL,
    v REAL NOT NULL,
    PRIMARY KEY(series, t)
) WITHOUT ROWID;
";

/// Accounts changes counted (see `store::token_cache`): every insert,
/// update or delete of a user, a user's APR or a token adds one to
/// `counts.accounts_changes`, so a registry write can tell whether it
/// changed what a bearer token resolves to, whichever code path made it.
const V6: &str = r"
INSERT INTO counts(name, value) VALUES ('accounts_changes', 0);
CREATE TRIGGER users_inserted AFTER INSERT ON users BEGIN
    UPDATE counts SET value = value + 1 WHERE name = 'accounts_changes'; END;
CREATE TRIGGER users_updated AFTER UPDATE ON users BEGIN
    UPDATE counts SET value = value + 1 WHERE name = 'accounts_changes'; END;
CREATE TRIGGER users_deleted AFTER DELETE ON users BEGIN
    UPDATE counts SET value = value + 1 WHERE name = 'accounts_changes'; END;
CREATE TRIGGER user_aprs_inserted AFTER INSERT ON user_aprs BEGIN
    UPDATE counts SET value = value + 1 WHERE name = 'accounts_changes'; END;
CREATE TRIGGER user_aprs_updated AFTER UPDATE ON user_aprs BEGIN
    UPDATE counts SET value = value + 1 WHERE name = 'accounts_changes'; END;
CREATE TRIGGER user_aprs_deleted AFTER DELETE ON user_aprs BEGIN
    UPDATE counts SET value = value + 1 WHERE name = 'accounts_changes'; END;
CREATE TRIGGER tokens_inserted AFTER INSERT ON tokens BEGIN
    UPDATE counts SET value = value + 1 WHERE name = 'accounts_changes'; END;
CREATE TRIGGER tokens_updated AFTER UPDATE ON tokens BEGIN
    UPDATE counts SET value = value + 1 WHERE name = 'accounts_changes'; END;
CREATE TRIGGER tokens_deleted AFTER DELETE ON tokens BEGIN
    UPDATE counts SET value = value + 1 WHERE name = 'accounts_changes'; END;
";

/// Migrations in order; `MIGRATIONS[i]` brings version `i` to `i + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1, V2, V3, V4, V5, V6];

/// Brings the schema of `conn` up to [`SCHEMA_VERSION`].
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::Invalid(format!(
            "the store has schema version {version}, newer than this server's {SCHEMA_VERSION}; \
             run a newer apr-server"
        )));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
