//! What the UI reads and writes in the SQLite store beside the
//! [`crate::store`] traits, on its own connection to the same file (WAL lets
//! it read while the store's writer commits; its few writes wait for the
//! writer with a busy timeout).
//!
//! # Manual DPD checks
//! An operator's DPD check entered on the operator page is a field record
//! like one posted to `POST /api/v1/aprs/{id}/field-records`: it goes
//! through the store's [`crate::store::AnalysisStore`], where the
//! assessment's probe-drift rule reads it. Early builds kept UI checks in a
//! table of their own, `ui_dpd_checks`; when the UI first opens a store that
//! still has it, its rows are moved into `field_records` (kind
//! `dpd_chlorine`, the place as the note) and the table is dropped, in one
//! transaction.
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

/// Moves DPD checks of the early UI table into the store's field records.
const TAKE_OVER_UI_DPD: &str = "
BEGIN IMMEDIATE;
INSERT INTO field_records(apr, kind, taken_at, value, parameter, note, recorded_by, recorded_at)
    SELECT apr, 'dpd_chlorine', taken_ms, value_mg_l, NULL, NULLIF(place, ''), recorded_by,
           recorded_ms
    FROM ui_dpd_checks ORDER BY id;
DROP TABLE ui_dpd_checks;
COMMIT;
";

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
    /// stores), the admin listings are unavailable.
    pub fn new(path: Option<PathBuf>) -> UiDb {
        UiDb {
            path,
            conn: Mutex::new(None),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let path = self.path.as_ref().ok_or_else(|| {
            Error::Unavailable("the web UI has no SQLite store for its listings".into())
        })?;
        let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.execute_batch(
                "PRAGMA cache_size = -16384; PRAGMA mmap_size = 268435456; \
                 PRAGMA temp_store = MEMORY;",
            )?;
            let legacy: bool = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
                     AND name = 'ui_dpd_checks'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n > 0)?;
            if legacy {
                conn.execute_batch(TAKE_OVER_UI_DPD)?;
            }
            *guard = Some(conn);
        }
        match guard.as_ref() {
            Some(c) => f(c),
            None => Err(Error::Unavailable("the UI store is not open".into())),
        }
    }

    /// Opens the connection (moving early UI DPD checks into the store's
    /// field records, see the module docs) if it is not open yet.
    pub fn ensure_open(&self) -> Result<()> {
        self.with(|_| Ok(()))
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
                    "SELECT (SELECT COUNT(*) FROM series s CROSS JOIN readings r \
                     ON r.series = s.id WHERE s.apr = ?1 AND s.metric = ?2 \
                     AND r.t BETWEEN ?3 AND ?4) + (SELECT COUNT(*) FROM series s \
                     CROSS JOIN readings_recent r ON r.series = s.id \
                     WHERE s.apr = ?1 AND s.metric = ?2 AND r.t BETWEEN ?3 AND ?4)",
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
            // Both tables of readings (see `store::writer`).
            let mut stmt = c.prepare(&format!(
                "SELECT SUM(n), SUM(sv) / SUM(n) FROM ( \
                 SELECT COUNT(*) AS n, SUM(v) AS sv FROM readings WHERE series IN ({list}) \
                 AND t >= ?1 AND t <= ?2 UNION ALL \
                 SELECT COUNT(*), SUM(v) FROM readings_recent WHERE series IN ({list}) \
                 AND t >= ?1 AND t <= ?2)"
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
