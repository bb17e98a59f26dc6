//! [`AlertStore`] on the SQLite store: alerts, pending conditions, night-flow
//! states, limit overrides and notification preferences (schema version 2).

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::sqlite::SqliteStore;
use super::{AlertQuery, AlertStore};
use crate::alerting::engine::{AlertKey, NightFlow, Outcome, Pending, Snapshot};
use crate::alerting::{Alert, AlertState};
use crate::error::{Error, Result};
use crate::limits::{LimitOverride, Limits};
use crate::notify::NotificationPref;

const ALERT_COLUMNS: &str = "id, apr, device, kind, severity, state, opened_at, value, threshold, \
     acknowledged_by, acknowledged_at, acknowledged_comment, resolved_by, resolved_at, \
     resolved_comment, escalated_at, last_notified_at";

fn parse<T: std::str::FromStr<Err = Error>>(i: usize, s: String) -> rusqlite::Result<T> {
    s.parse().map_err(|e: Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn alert_from_row(r: &Row<'_>) -> rusqlite::Result<Alert> {
    Ok(Alert {
        id: r.get(0)?,
        apr: r.get(1)?,
        device: r.get(2)?,
        kind: parse(3, r.get(3)?)?,
        severity: parse(4, r.get(4)?)?,
        state: parse(5, r.get(5)?)?,
        opened_at_ms: r.get(6)?,
        value: r.get(7)?,
        threshold: r.get(8)?,
        acknowledged_by: r.get(9)?,
        acknowledged_at_ms: r.get(10)?,
        acknowledged_comment: r.get(11)?,
        resolved_by: r.get(12)?,
        resolved_at_ms: r.get(13)?,
        resolved_comment: r.get(14)?,
        escalated_at_ms: r.get(15)?,
        last_notified_at_ms: r.get(16)?,
    })
}

fn upsert_alert(conn: &Connection, a: &Alert) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO alerts({ALERT_COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
         ON CONFLICT(id) DO UPDATE SET severity = excluded.severity, state = excluded.state, \
         threshold = excluded.threshold, acknowledged_by = excluded.acknowledged_by, \
         acknowledged_at = excluded.acknowledged_at, \
         acknowledged_comment = excluded.acknowledged_comment, \
         resolved_by = excluded.resolved_by, resolved_at = excluded.resolved_at, \
         resolved_comment = excluded.resolved_comment, escalated_at = excluded.escalated_at, \
         last_notified_at = excluded.last_notified_at"
    ))?
    .execute(params![
        a.id,
        a.apr,
        a.device,
        a.kind.as_str(),
        a.severity.as_str(),
        a.state.as_str(),
        a.opened_at_ms,
        a.value,
        a.threshold,
        a.acknowledged_by,
        a.acknowledged_at_ms,
        a.acknowledged_comment,
        a.resolved_by,
        a.resolved_at_ms,
        a.resolved_comment,
        a.escalated_at_ms,
        a.last_notified_at_ms,
    ])?;
    Ok(())
}

fn overrides(conn: &Connection, apr: Option<&str>) -> Result<Vec<(String, LimitOverride)>> {
    let rows = conn
        .prepare_cached(
            "SELECT apr, key, value, set_by, set_at FROM limit_overrides \
             WHERE (?1 IS NULL OR apr = ?1) ORDER BY apr, key",
        )?
        .query_map([apr], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(apr, key, value, set_by, set_at_ms)| {
            let value = serde_json::from_str(&value).map_err(|e| {
                Error::Invalid(format!("limit override {apr}/{key} is not JSON: {e}"))
            })?;
            Ok((
                apr,
                LimitOverride {
                    key,
                    value,
                    set_by,
                    set_at_ms,
                },
            ))
        })
        .collect()
}

/// The limits of every APR with overrides.
fn limits_by_apr(conn: &Connection) -> Result<Vec<(String, Limits)>> {
    let all = overrides(conn, None)?;
    let mut out: Vec<(String, Limits)> = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let apr = all[i].0.clone();
        let j = all[i..]
            .iter()
            .position(|(a, _)| *a != apr)
            .map_or(all.len(), |n| i + n);
        match Limits::with_overrides(all[i..j].iter().map(|(_, o)| (o.key.as_str(), &o.value))) {
            Ok(l) => out.push((apr, l)),
            Err(e) => {
                tracing::error!(%apr, error = %e, "stored limit overrides are invalid; using the defaults")
            }
        }
        i = j;
    }
    Ok(out)
}

impl AlertStore for SqliteStore {
    fn load_alerting(&self) -> Result<Snapshot> {
        self.read(|c| {
            let open = c
                .prepare_cached(&format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts WHERE state <> 'resolved' ORDER BY id"
                ))?
                .query_map([], alert_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let pending = c
                .prepare_cached("SELECT apr, device, kind, since_ms, count FROM alert_pending")?
                .query_map([], |r| {
                    Ok((
                        AlertKey {
                            apr: r.get(0)?,
                            device: r.get(1)?,
                            kind: parse(2, r.get(2)?)?,
                        },
                        Pending {
                            since_ms: r.get(3)?,
                            count: r.get(4)?,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let night_rows = c
                .prepare_cached("SELECT apr, device, state FROM night_flow")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?)))?
                .collect::<rusqlite::Result<Vec<(String, String, String)>>>()?;
            let mut night = Vec::with_capacity(night_rows.len());
            for (apr, device, state) in night_rows {
                match serde_json::from_str::<NightFlow>(&state) {
                    Ok(nf) => night.push((apr, device, nf)),
                    Err(e) => tracing::warn!(%apr, %device, error = %e, "night-flow state unreadable; learning again"),
                }
            }
            let next_id: i64 = c.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM alerts", [], |r| {
                r.get(0)
            })?;
            Ok(Snapshot {
                open,
                pending,
                night,
                next_id,
                limits: limits_by_apr(c)?,
            })
        })
    }

    fn apply_alerting(&self, outcome: &Outcome) -> Result<()> {
        let outcome = outcome.clone();
        self.write(move |tx| {
            for t in &outcome.transitions {
                upsert_alert(tx, &t.alert)?;
            }
            let mut set = tx.prepare_cached(
                "INSERT INTO alert_pending(apr, device, kind, since_ms, count) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(apr, device, kind) \
                 DO UPDATE SET since_ms = excluded.since_ms, count = excluded.count",
            )?;
            let mut del = tx.prepare_cached(
                "DELETE FROM alert_pending WHERE apr = ?1 AND device = ?2 AND kind = ?3",
            )?;
            for (k, p) in &outcome.pending {
                match p {
                    Some(p) => set.execute(params![
                        k.apr,
                        k.device,
                        k.kind.as_str(),
                        p.since_ms,
                        p.count
                    ])?,
                    None => del.execute(params![k.apr, k.device, k.kind.as_str()])?,
                };
            }
            let mut night = tx.prepare_cached(
                "INSERT INTO night_flow(apr, device, state) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(apr, device) DO UPDATE SET state = excluded.state",
            )?;
            for (apr, device, nf) in &outcome.night {
                let state = serde_json::to_string(nf)
                    .map_err(|e| Error::Invalid(format!("night-flow state: {e}")))?;
                night.execute(params![apr, device, state])?;
            }
            Ok(())
        })
    }

    fn alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>> {
        let aprs = q
            .aprs
            .as_ref()
            .map(|a| serde_json::to_string(a).unwrap_or_else(|_| "[]".into()));
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        self.read(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts \
                 WHERE (?1 IS NULL OR apr IN (SELECT value FROM json_each(?1))) \
                 AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR kind = ?3) \
                 AND (?4 IS NULL OR device = ?4) \
                 ORDER BY opened_at DESC, id DESC LIMIT ?5"
            ))?
            .query_map(
                params![
                    aprs,
                    q.state.map(AlertState::as_str),
                    q.kind.map(|k| k.as_str()),
                    q.device,
                    limit
                ],
                alert_from_row,
            )?
            .collect::<rusqlite::Result<_>>()?)
        })
    }

    fn alert(&self, id: i64) -> Result<Option<Alert>> {
        self.read(|c| {
            Ok(
                c.prepare_cached(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"))?
                    .query_row([id], alert_from_row)
                    .optional()?,
            )
        })
    }

    fn open_alerts_by_apr(&self) -> Result<Vec<(String, u64)>> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT apr, COUNT(*) FROM alerts WHERE state <> 'resolved' GROUP BY apr",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
        })
    }

    fn limit_overrides(&self, apr: Option<&str>) -> Result<Vec<(String, LimitOverride)>> {
        self.read(|c| overrides(c, apr))
    }

    fn set_limit_overrides(
        &self,
        apr: &str,
        changes: &[(String, Option<serde_json::Value>)],
        by: &str,
        at_ms: i64,
    ) -> Result<()> {
        let apr = apr.to_owned();
        let changes = changes.to_vec();
        let by = by.to_owned();
        self.write(move |tx| {
            let mut set = tx.prepare_cached(
                "INSERT INTO limit_overrides(apr, key, value, set_by, set_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(apr, key) DO UPDATE SET \
                 value = excluded.value, set_by = excluded.set_by, set_at = excluded.set_at",
            )?;
            let mut del =
                tx.prepare_cached("DELETE FROM limit_overrides WHERE apr = ?1 AND key = ?2")?;
            for (key, value) in &changes {
                match value {
                    Some(v) => set.execute(params![apr, key, v.to_string(), by, at_ms])?,
                    None => del.execute(params![apr, key])?,
                };
            }
            Ok(())
        })
    }

    fn notification_prefs(
        &self,
        username: Option<&str>,
    ) -> Result<Vec<(String, NotificationPref)>> {
        let rows = self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT u.username, p.channel, p.address, p.secret, p.min_severity, p.aprs \
                 FROM notification_prefs p JOIN users u ON u.id = p.user \
                 WHERE (?1 IS NULL OR u.username = ?1) ORDER BY u.username, p.id",
            )?
            .query_map([username], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        rows.into_iter()
            .map(|(user, channel, address, secret, min_severity, aprs)| {
                let channel = serde_json::from_value(serde_json::Value::String(channel))
                    .map_err(|e| Error::Invalid(format!("stored channel: {e}")))?;
                let aprs = aprs
                    .map(|a| serde_json::from_str(&a))
                    .transpose()
                    .map_err(|e| Error::Invalid(format!("stored APR filter: {e}")))?;
                Ok((
                    user,
                    NotificationPref {
                        channel,
                        address,
                        secret,
                        min_severity: min_severity.parse()?,
                        aprs,
                    },
                ))
            })
            .collect()
    }

    fn set_notification_prefs(&self, username: &str, prefs: &[NotificationPref]) -> Result<()> {
        let username = username.to_owned();
        let prefs = prefs.to_vec();
        self.write(move |tx| {
            let id: i64 = tx
                .prepare_cached("SELECT id FROM users WHERE username = ?1")?
                .query_row([&username], |r| r.get(0))
                .optional()?
                .ok_or_else(|| Error::NotFound(format!("user '{username}' does not exist")))?;
            tx.prepare_cached("DELETE FROM notification_prefs WHERE user = ?1")?
                .execute([id])?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO notification_prefs(user, channel, address, secret, min_severity, aprs) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for p in &prefs {
                let aprs = p
                    .aprs
                    .as_ref()
                    .map(|a| serde_json::to_string(a).unwrap_or_else(|_| "[]".into()));
                ins.execute(params![
                    id,
                    p.channel.as_str(),
                    p.address,
                    p.secret,
                    p.min_severity.as_str(),
                    aprs
                ])?;
            }
            Ok(())
        })
    }
}
