//! Accounts beside the registry's users (schema version 4): listing and
//! revoking API tokens, changing or clearing a password, and the audit log.

use rusqlite::{params, Connection};

use super::sqlite::user_id;
use super::SqliteStore;
use crate::audit::{AuditEntry, AuditQuery, AuditRecord};
use crate::error::{Error, Result};

/// Characters of a token's SHA-256 (hex) that name it: enough to tell
/// tokens apart, not enough to help guess one.
pub const TOKEN_ID_CHARS: usize = 12;

/// An API token as stored (its hash stays in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The first [`TOKEN_ID_CHARS`] hex characters of its SHA-256.
    pub id: String,
    /// Whose.
    pub username: String,
    /// Created, UTC ms.
    pub created_ms: i64,
    /// Label given at creation.
    pub label: Option<String>,
    /// Revoked, UTC ms.
    pub revoked_ms: Option<i64>,
}

/// Tokens, passwords and the audit log.
pub trait AccountStore: Send + Sync {
    /// Tokens of one user (all users when `None`), oldest first.
    fn tokens(&self, username: Option<&str>) -> Result<Vec<TokenRecord>>;
    /// The token with this id, if any.
    fn token(&self, id: &str) -> Result<Option<TokenRecord>>;
    /// Revokes the token with this id (see [`TokenRecord::id`]); answers it
    /// as it was before. Unknown id: not found; revoked already: conflict.
    fn revoke_token(&self, id: &str, at_ms: i64) -> Result<TokenRecord>;
    /// Revokes every live token of a user; answers how many.
    fn revoke_user_tokens(&self, username: &str, at_ms: i64) -> Result<usize>;
    /// Sets (or, with `None`, clears) a user's password hash.
    fn set_password(&self, username: &str, password_argon2: Option<&str>) -> Result<()>;
    /// Appends an audit entry; answers its id.
    fn record_audit(&self, entry: &AuditEntry) -> Result<i64>;
    /// Audit entries, newest first.
    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>>;
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let sha: String = r.get(0)?;
    Ok(TokenRecord {
        id: sha.chars().take(TOKEN_ID_CHARS).collect(),
        username: r.get(1)?,
        created_ms: r.get(2)?,
        label: r.get(3)?,
        revoked_ms: r.get(4)?,
    })
}

const TOKEN_SELECT: &str = "SELECT t.sha256, u.username, t.created_ms, t.label, t.revoked_ms \
     FROM tokens t JOIN users u ON u.id = t.user";

fn token_by_id(c: &Connection, id: &str) -> Result<Option<(String, TokenRecord)>> {
    if id.len() != TOKEN_ID_CHARS || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidQuery(format!(
            "a token id is {TOKEN_ID_CHARS} hex characters, not '{id}'"
        )));
    }
    let like = format!("{}%", id.to_ascii_lowercase());
    let mut stmt = c.prepare_cached(&format!(
        "{TOKEN_SELECT} WHERE t.sha256 LIKE ?1 ORDER BY t.created_ms"
    ))?;
    let rows: Vec<(String, TokenRecord)> = stmt
        .query_map([like], |r| Ok((r.get::<_, String>(0)?, token_row(r)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if rows.len() > 1 {
        return Err(Error::Conflict(format!(
            "{} tokens share the id '{id}'; revoke them by user",
            rows.len()
        )));
    }
    Ok(rows.into_iter().next())
}

fn json_col(v: Option<String>, i: usize) -> rusqlite::Result<Option<serde_json::Value>> {
    v.map(|s| {
        serde_json::from_str(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

impl AccountStore for SqliteStore {
    fn tokens(&self, username: Option<&str>) -> Result<Vec<TokenRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "{TOKEN_SELECT} WHERE ?1 IS NULL OR u.username = ?1 ORDER BY t.created_ms, t.sha256"
            ))?;
            let rows = stmt
                .query_map([username], token_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.read(|c| Ok(token_by_id(c, id)?.map(|(_, t)| t)))
    }

    fn revoke_token(&self, id: &str, at_ms: i64) -> Result<TokenRecord> {
        let id = id.to_owned();
        self.write(move |tx| {
            let (sha, t) = token_by_id(tx, &id)?
                .ok_or_else(|| Error::NotFound(format!("no token has the id '{id}'")))?;
            if t.revoked_ms.is_some() {
                return Err(Error::Conflict(format!("token '{id}' is revoked already")));
            }
            tx.prepare_cached("UPDATE tokens SET revoked_ms = ?2 WHERE sha256 = ?1")?
                .execute(params![sha, at_ms])?;
            Ok(t)
        })
    }

    fn revoke_user_tokens(&self, username: &str, at_ms: i64) -> Result<usize> {
        let username = username.to_owned();
        self.write(move |tx| {
            let uid = user_id(tx, &username)?;
            let n = tx
                .prepare_cached(
                    "UPDATE tokens SET revoked_ms = ?2 WHERE user = ?1 AND revoked_ms IS NULL",
                )?
                .execute(params![uid, at_ms])?;
            Ok(n)
        })
    }

    fn set_password(&self, username: &str, password_argon2: Option<&str>) -> Result<()> {
        let username = username.to_owned();
        let phc = password_argon2.map(str::to_owned);
        self.write(move |tx| {
            let uid = user_id(tx, &username)?;
            tx.prepare_cached("UPDATE users SET password_argon2 = ?2 WHERE id = ?1")?
                .execute(params![uid, phc])?;
            Ok(())
        })
    }

    fn record_audit(&self, entry: &AuditEntry) -> Result<i64> {
        let e = entry.clone();
        let before = e.before.as_ref().map(ToString::to_string);
        let after = e.after.as_ref().map(ToString::to_string);
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO audit(at_ms, actor, via, action, apr, target, before, after) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                e.at_ms,
                e.actor,
                e.via.as_str(),
                e.action,
                e.apr,
                e.target,
                before,
                after
            ])?;
            Ok(tx.last_insert_rowid())
        })
    }

    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let aprs = q
            .aprs
            .as_ref()
            .map(|a| serde_json::to_string(a).unwrap_or_else(|_| "[]".into()));
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, at_ms, actor, via, action, apr, target, before, after FROM audit \
                 WHERE (?1 IS NULL OR apr IN (SELECT value FROM json_each(?1))) \
                 AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR actor = ?3) \
                 AND (?4 IS NULL OR at_ms >= ?4) \
                 ORDER BY id DESC LIMIT ?5",
            )?;
            let rows = stmt
                .query_map(params![aprs, q.action, q.actor, q.since_ms, limit], |r| {
                    Ok(AuditRecord {
                        id: r.get(0)?,
                        at: crate::alerting::rfc3339_ms(r.get(1)?),
                        actor: r.get(2)?,
                        via: r.get(3)?,
                        action: r.get(4)?,
                        apr: r.get(5)?,
                        target: r.get(6)?,
                        before: json_col(r.get(7)?, 7)?,
                        after: json_col(r.get(8)?, 8)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}
