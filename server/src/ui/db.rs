//! What the UI reads and writes in the SQLite store beside the
//! [`crate::store`] traits, on its own connection to the same file (WAL lets
//! it read while the store's writer commits; its few writes wait for the
//! writer with a busy timeout).
//!
//! # Manual DPD checks
//! An operator's manual free-chlorine check (DPD kit) is a field record the
//! store does not have yet, so the UI keeps it in a table of its own, created
//! with `CREATE TABLE IF NOT EXISTS` when the UI first touches the store
//! (outside the store's numbered migrations; when field records join the
//! store's schema, a migration takes these rows over):
//!
//! ```sql
//! ui_dpd_checks(id, apr, taken_ms, value_mg_l, place, probe_mg_l,
//!               recorded_by, recorded_ms)
//! ```
//!
//! `probe_mg_l` is the probe's chlorine reading closest to `taken_ms`
//! (within 30 minutes) when the check was recorded, for comparison.
//!
//! # Bucket means for long windows
//! The store's `step` query groups by an expression, which makes SQLite
//! sort every reading of the window first (about 150 ms for a year of
//! 1-minute data). The explorer instead asks for each bucket's mean and
//! count with one range scan per bucket on the readings' primary key
//! `(series, t)`, which needs no sort: the same means (buckets start at
//! `floor(t / step) * step`), and the raw count for free.
//!
//! # Read-only listings
//! The admin page lists users and tokens (never a token's secret: only the
//! first 12 hex characters of its SHA-256 as its id), and the series
//! explorer counts the raw readings in its window; the store's traits have
//! neither yet.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use apr_wire::Metric;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};

const INIT: &str = "
CREATE TABLE IF NOT EXISTS ui_dpd_checks(
    id INTEGER PRIMARY KEY,
    apr TEXT NOT NULL,
    taken_ms INTEGER NOT NULL,
    value_mg_l REAL NOT NULL,
    place TEXT NOT NULL,
    probe_mg_l REAL,
    recorded_by TEXT NOT NULL,
    recorded_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ui_dpd_checks_by_apr ON ui_dpd_checks(apr, taken_ms);
";

/// A manual DPD chlorine check.
#[derive(Debug, Clone, PartialEq)]
pub struct DpdRecord {
    /// APR id.
    pub apr: String,
    /// When the sample was taken, ms.
    pub taken_ms: i64,
    /// The kit's reading, mg/L.
    pub value_mg_l: f64,
    /// Where the sample was taken.
    pub place: String,
    /// The probe's reading near that time, mg/L.
    pub probe_mg_l: Option<f64>,
    /// Who recorded it.
    pub recorded_by: String,
    /// When it was recorded, ms.
    pub recorded_ms: i64,
}

/// A user as the admin page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserListing {
    /// Username.
    pub username: String,
    /// Role name.
    pub role: String,
    /// Region of a GORE user.
    pub region: Option<String>,
    /// APRs of an operator or gateway.
    pub aprs: Vec<String>,
}

/// A token as the admin page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenListing {
    /// Owner.
    pub username: String,
    /// First 12 hex characters of the token's SHA-256.
    pub id: String,
    /// Created, ms.
    pub created_ms: i64,
    /// Label.
    pub label: Option<String>,
}

/// The UI's connection to the store file (opened on first use).
#[derive(Debug)]
pub struct UiDb {
    path: Option<PathBuf>,
    conn: Mutex<Option<Connection>>,
}

impl UiDb {
    /// Over the SQLite file at `path`; without one (a server over other
    /// stores), DPD checks and the admin listings are unavailable.
    pub fn new(path: Option<PathBuf>) -> UiDb {
        UiDb {
            path,
            conn: Mutex::new(None),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let path = self.path.as_ref().ok_or_else(|| {
            Error::Unavailable("the web UI has no SQLite store for field records".into())
        })?;
        let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.execute_batch(
                "PRAGMA cache_size = -16384; PRAGMA mmap_size = 268435456; \
                 PRAGMA temp_store = MEMORY;",
            )?;
            conn.execute_batch(INIT)?;
            *guard = Some(conn);
        }
        match guard.as_ref() {
            Some(c) => f(c),
            None => Err(Error::Unavailable("the UI store is not open".into())),
        }
    }

    /// Records a DPD check.
    pub fn add_dpd(&self, r: &DpdRecord) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO ui_dpd_checks(apr, taken_ms, value_mg_l, place, probe_mg_l, \
                 recorded_by, recorded_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    r.apr,
                    r.taken_ms,
                    r.value_mg_l,
                    r.place,
                    r.probe_mg_l,
                    r.recorded_by,
                    r.recorded_ms
                ],
            )?;
            Ok(())
        })
    }

    /// The latest DPD checks of an APR, newest sample first.
    pub fn recent_dpd(&self, apr: &str, limit: usize) -> Result<Vec<DpdRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT apr, taken_ms, value_mg_l, place, probe_mg_l, recorded_by, recorded_ms \
                 FROM ui_dpd_checks WHERE apr = ?1 ORDER BY taken_ms DESC, id DESC LIMIT ?2",
            )?
            .query_map(params![apr, limit], |r| {
                Ok(DpdRecord {
                    apr: r.get(0)?,
                    taken_ms: r.get(1)?,
                    value_mg_l: r.get(2)?,
                    place: r.get(3)?,
                    probe_mg_l: r.get(4)?,
                    recorded_by: r.get(5)?,
                    recorded_ms: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Every user but gateways, by name.
    pub fn users(&self) -> Result<Vec<UserListing>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT u.username, u.role, u.region, \
                 (SELECT group_concat(apr, ',') FROM user_aprs WHERE user = u.id) \
                 FROM users u WHERE u.role <> 'gateway' ORDER BY u.username",
            )?
            .query_map([], |r| {
                let aprs: Option<String> = r.get(3)?;
                Ok(UserListing {
                    username: r.get(0)?,
                    role: r.get(1)?,
                    region: r.get(2)?,
                    aprs: aprs
                        .map(|a| a.split(',').map(str::to_owned).collect())
                        .unwrap_or_default(),
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Every token of users other than gateways, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenListing>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT u.username, t.sha256, t.created_ms, t.label FROM tokens t \
                 JOIN users u ON u.id = t.user WHERE u.role <> 'gateway' ORDER BY t.created_ms",
            )?
            .query_map([], |r| {
                let sha: String = r.get(1)?;
                Ok(TokenListing {
                    username: r.get(0)?,
                    id: sha.chars().take(12).collect(),
                    created_ms: r.get(2)?,
                    label: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Raw readings of an APR's metric (every device) in `[from_ms, to_ms]`.
    pub fn count_points(&self, apr: &str, metric: Metric, from_ms: i64, to_ms: i64) -> Result<u64> {
        self.with(|c| {
            let n: Option<i64> = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM series s CROSS JOIN readings r ON r.series = s.id \
                     WHERE s.apr = ?1 AND s.metric = ?2 AND r.t BETWEEN ?3 AND ?4",
                )?
                .query_row(
                    params![apr, i64::from(metric.index()), from_ms, to_ms],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
        })
    }

    /// Bucket means of an APR's metric (every device) over
    /// `[from_ms, to_ms]`, buckets of `step_ms` starting at
    /// `floor(t / step) * step`, and the number of raw readings.
    pub fn bucket_means(
        &self,
        apr: &str,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<(Vec<(i64, f64)>, u64)> {
        let step = step_ms.max(1);
        self.with(|c| {
            let ids: Vec<i64> = c
                .prepare_cached("SELECT id FROM series WHERE apr = ?1 AND metric = ?2")?
                .query_map(params![apr, i64::from(metric.index())], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if ids.is_empty() {
                return Ok((Vec::new(), 0));
            }
            let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            let mut stmt = c.prepare(&format!(
                "SELECT COUNT(*), AVG(v) FROM readings WHERE series IN ({list}) \
                 AND t >= ?1 AND t <= ?2"
            ))?;
            let mut out = Vec::new();
            let mut total = 0u64;
            let mut b = from_ms.div_euclid(step) * step;
            while b <= to_ms {
                let (lo, hi) = (b.max(from_ms), (b + step - 1).min(to_ms));
                let (n, mean): (i64, Option<f64>) =
                    stmt.query_row(params![lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?;
                if let (true, Some(m)) = (n > 0, mean) {
                    out.push((b, m));
                    total += u64::try_from(n).unwrap_or(0);
                }
                b += step;
            }
            Ok((out, total))
        })
    }
}
