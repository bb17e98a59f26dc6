//! [`SqliteStore`]: registry and series in one SQLite file (WAL mode).
//!
//! One writer thread owns the only write connection (see `writer`); queries
//! run on a small pool of read connections, which WAL lets read while the
//! writer commits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use apr_wire::ingest::{IngestAck, IngestBatch};
use apr_wire::Metric;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use super::schema;
use super::token_cache::{RegistryStamp, TokenCache, TokenCacheSettings};
use super::writer::{count_recent, Job, RecentLog, Writer, BEFORE_ALL};
use super::{
    AprRecord, Coverage, DeviceRecord, DeviceUpsert, Latest, Point, QuarantineEntry, Region,
    Registry, SeriesQuery, SeriesStore, UserInsert, UserRecord,
};
use crate::auth::Role;
use crate::error::{Error, Result};

/// Registry and series in one embedded SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    jobs: Option<Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    writer_alive: Arc<AtomicBool>,
    readers: Mutex<Vec<Connection>>,
    max_readers: usize,
    readings_total: Arc<AtomicU64>,
    /// Users by bearer token, emptied by every registry write that changes
    /// an account (see `token_cache`).
    tokens: Arc<TokenCache>,
    stamp: Arc<RegistryStamp>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn writer_stopped() -> Error {
    Error::Unavailable("the store's writer has stopped".into())
}

impl SqliteStore {
    /// Opens (creating when missing) the store at `path` and brings its schema
    /// up to date. `read_connections` read connections are kept open.
    pub fn open(path: &Path, read_connections: usize) -> Result<SqliteStore> {
        SqliteStore::open_with(path, read_connections, RecentLog::default())
    }

    /// [`SqliteStore::open`] with a merge policy for `readings_recent` other
    /// than the default (tests use small ones).
    pub fn open_with(path: &Path, read_connections: usize, log: RecentLog) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                what: format!("cannot create the store directory {}", dir.display()),
                source,
            })?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Invalid(format!(
                "store {}: cannot switch to WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA cache_size = -65536;
             PRAGMA mmap_size = 268435456;
             PRAGMA temp_store = MEMORY;",
        )?;
        conn.pragma_update(None, "wal_autocheckpoint", log.checkpoint_pages)?;
        conn.set_prepared_statement_cache_capacity(32);
        schema::migrate(&mut conn)?;
        let readings: i64 = conn.query_row(
            "SELECT value FROM counts WHERE name = 'readings'",
            [],
            |r| r.get(0),
        )?;
        let readings_total = Arc::new(AtomicU64::new(u64::try_from(readings).unwrap_or(0)));
        let recent_rows = count_recent(&conn)?;
        let stamp = Arc::new(RegistryStamp::open(path)?);
        let alive = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            conn,
            series: Default::default(),
            readings_total: readings_total.clone(),
            alive: alive.clone(),
            log,
            recent_rows,
            cursor: BEFORE_ALL,
        };
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| Error::Io {
                what: "cannot start the store's writer thread".into(),
                source,
            })?;
        let store = SqliteStore {
            path: path.to_owned(),
            jobs: Some(tx),
            writer: Some(handle),
            writer_alive: alive,
            readers: Mutex::new(Vec::new()),
            max_readers: read_connections.max(1),
            readings_total,
            tokens: Arc::new(TokenCache::new(TokenCacheSettings::default())),
            stamp,
        };
        let first = store.open_reader()?;
        store.put_reader(first);
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_reader(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA query_only = ON;
             PRAGMA cache_size = -16384;
             PRAGMA mmap_size = 268435456;
             PRAGMA temp_store = MEMORY;",
        )?;
        Ok(conn)
    }

    fn put_reader(&self, conn: Connection) {
        let mut pool = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < self.max_readers {
            pool.push(conn);
        }
    }

    /// Runs `f` on a read connection from the pool.
    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.open_reader()?,
        };
        let out = f(&conn);
        self.put_reader(conn);
        out
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(writer_stopped)?
            .send(job)
            .map_err(|_| writer_stopped())
    }

    /// Returns once the writer has finished everything sent to it before,
    /// including the move of recent readings that follows a write (the
    /// writer answers a write first and moves a chunk after).
    pub fn wait_for_writer(&self) -> Result<()> {
        self.write(|_| Ok(()))
    }

    /// Sets how bearer tokens are cached (the default:
    /// [`TokenCacheSettings::default`]); before the store is shared.
    pub fn with_token_cache(mut self, settings: TokenCacheSettings) -> SqliteStore {
        self.tokens = Arc::new(TokenCache::new(settings));
        self
    }

    /// Token lookups answered from memory since the store was opened.
    pub fn token_cache_hits(&self) -> u64 {
        self.tokens.hits()
    }

    /// Runs `f` in its own write transaction on the writer thread. This is
    /// the only way the registry changes. When the write changed a user, a
    /// user's APRs or a token (the schema's triggers count those in
    /// `counts.accounts_changes`), the token cache of this process is
    /// emptied and the registry stamp rewritten after the commit and before
    /// the caller hears of it, so no process answers from a cache older
    /// than the write.
    pub(super) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let tokens = self.tokens.clone();
        let stamp = self.stamp.clone();
        self.send(Job::Exec(Box::new(move |conn: &mut Connection| {
            let run = || -> Result<(T, bool)> {
                let t = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let before = accounts_changes(&t)?;
                let v = f(&t)?;
                let changed = accounts_changes(&t)? != before;
                t.commit()?;
                Ok((v, changed))
            };
            let out = match run() {
                Ok((v, false)) => Ok(v),
                Ok((v, true)) => {
                    tokens.registry_changed();
                    // A stamp that cannot be written fails the write:
                    // another process could otherwise keep answering from
                    // its cache.
                    stamp.touch().map(|()| v)
                }
                Err(e) => Err(e),
            };
            let _ = tx.send(out);
        })))?;
        rx.recv().map_err(|_| writer_stopped())?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and stop.
        self.jobs.take();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

/// How many times users, their APRs and tokens have changed (schema V6).
fn accounts_changes(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT value FROM counts WHERE name = 'accounts_changes'")?
        .query_row([], |r| r.get(0))?)
}

const APR_COLUMNS: &str = "id, name, comuna, region, beneficiaries, connections, source, \
     capacity_l_s, storage_m3, gore_contribution_clp, public_investment_clp";

fn apr_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AprRecord> {
    Ok(AprRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        comuna: r.get(2)?,
        region: r.get(3)?,
        beneficiaries: r.get(4)?,
        connections: r.get(5)?,
        source: r.get(6)?,
        capacity_l_s: r.get(7)?,
        storage_m3: r.get(8)?,
        gore_contribution_clp: r.get(9)?,
        public_investment_clp: r.get(10)?,
    })
}

fn apr_exists(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM aprs WHERE id = ?1")?
        .exists([id])?)
}

fn region_exists(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM regions WHERE id = ?1")?
        .exists([id])?)
}

fn check_scope_targets(conn: &Connection, aprs: &[String], region: Option<&str>) -> Result<()> {
    for a in aprs {
        if !apr_exists(conn, a)? {
            return Err(Error::NotFound(format!("APR '{a}' is not in the registry")));
        }
    }
    if let Some(r) = region {
        if !region_exists(conn, r)? {
            return Err(Error::NotFound(format!(
                "region '{r}' is not in the registry"
            )));
        }
    }
    Ok(())
}

fn user_where(conn: &Connection, clause: &str, key: &str) -> Result<Option<UserRecord>> {
    let sql = format!(
        "SELECT u.id, u.username, u.role, u.password_argon2, u.region FROM {clause} LIMIT 1"
    );
    let row = conn
        .prepare_cached(&sql)?
        .query_row([key], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .optional()?;
    let Some((id, username, role, password_argon2, region)) = row else {
        return Ok(None);
    };
    let role: Role = role
        .parse()
        .map_err(|_| Error::Invalid(format!("user '{username}' has an unknown role '{role}'")))?;
    let aprs = conn
        .prepare_cached("SELECT apr FROM user_aprs WHERE user = ?1 ORDER BY apr")?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(Some(UserRecord {
        id,
        username,
        role,
        password_argon2,
        region,
        aprs,
    }))
}

pub(super) fn user_id(conn: &Connection, username: &str) -> Result<i64> {
    conn.prepare_cached("SELECT id FROM users WHERE username = ?1")?
        .query_row([username], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("user '{username}' does not exist")))
}

impl Registry for SqliteStore {
    fn ping(&self) -> Result<()> {
        if !self.writer_alive.load(Ordering::SeqCst) {
            return Err(writer_stopped());
        }
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))?;
        Ok(())
    }

    fn upsert_fleet(&self, regions: &[Region], aprs: &[AprRecord]) -> Result<usize> {
        let regions = regions.to_vec();
        let aprs = aprs.to_vec();
        self.write(move |tx| {
            let mut changed = 0;
            let mut region = tx.prepare_cached(
                "INSERT INTO regions(id, name) VALUES (?1, ?2) \
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name \
                 WHERE name IS NOT excluded.name",
            )?;
            for r in &regions {
                changed += region.execute(params![r.id, r.name])?;
            }
            let mut apr = tx.prepare_cached(&format!(
                "INSERT INTO aprs({APR_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name, comuna = excluded.comuna, \
                 region = excluded.region, beneficiaries = excluded.beneficiaries, \
                 connections = excluded.connections, source = excluded.source, \
                 capacity_l_s = excluded.capacity_l_s, storage_m3 = excluded.storage_m3, \
                 gore_contribution_clp = excluded.gore_contribution_clp, \
                 public_investment_clp = excluded.public_investment_clp \
                 WHERE (name, comuna, region, beneficiaries, connections, source, capacity_l_s, \
                        storage_m3, gore_contribution_clp, public_investment_clp) \
                 IS NOT (excluded.name, excluded.comuna, excluded.region, excluded.beneficiaries, \
                        excluded.connections, excluded.source, excluded.capacity_l_s, \
                        excluded.storage_m3, excluded.gore_contribution_clp, \
                        excluded.public_investment_clp)"
            ))?;
            for a in &aprs {
                changed += apr.execute(params![
                    a.id,
                    a.name,
                    a.comuna,
                    a.region,
                    a.beneficiaries,
                    a.connections,
                    a.source,
                    a.capacity_l_s,
                    a.storage_m3,
                    a.gore_contribution_clp,
                    a.public_investment_clp,
                ])?;
            }
            Ok(changed)
        })
    }

    fn regions(&self) -> Result<Vec<Region>> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT id, name FROM regions ORDER BY id")?
                    .query_map([], |r| {
                        Ok(Region {
                            id: r.get(0)?,
                            name: r.get(1)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?,
            )
        })
    }

    fn aprs(&self) -> Result<Vec<AprRecord>> {
        self.read(|c| {
            Ok(
                c.prepare_cached(&format!("SELECT {APR_COLUMNS} FROM aprs ORDER BY id"))?
                    .query_map([], apr_from_row)?
                    .collect::<rusqlite::Result<_>>()?,
            )
        })
    }

    fn apr(&self, id: &str) -> Result<Option<AprRecord>> {
        self.read(|c| {
            Ok(
                c.prepare_cached(&format!("SELECT {APR_COLUMNS} FROM aprs WHERE id = ?1"))?
                    .query_row([id], apr_from_row)
                    .optional()?,
            )
        })
    }

    fn upsert_device(&self, device: &DeviceUpsert) -> Result<()> {
        let d = device.clone();
        self.write(move |tx| {
            if !apr_exists(tx, &d.apr)? {
                return Err(Error::NotFound(format!(
                    "APR '{}' is not in the registry",
                    d.apr
                )));
            }
            let holder: Option<(String, String)> = tx
                .prepare_cached("SELECT apr, device FROM devices WHERE mqtt_username = ?1")?
                .query_row([&d.mqtt_username], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((apr, device)) = holder.filter(|(a, dv)| *a != d.apr || *dv != d.device) {
                return Err(Error::Conflict(format!(
                    "MQTT username '{}' is taken by device '{device}' of APR '{apr}'",
                    d.mqtt_username
                )));
            }
            tx.prepare_cached(
                "INSERT INTO devices(apr, device, mqtt_username, mqtt_password_sha256, \
                 report_interval_s, config) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(apr, device) DO UPDATE SET mqtt_username = excluded.mqtt_username, \
                 mqtt_password_sha256 = excluded.mqtt_password_sha256, \
                 report_interval_s = excluded.report_interval_s, config = excluded.config",
            )?
            .execute(params![
                d.apr,
                d.device,
                d.mqtt_username,
                d.mqtt_password_sha256,
                d.report_interval_s,
                d.config.to_string(),
            ])?;
            Ok(())
        })
    }

    fn devices(&self, aprs: Option<&[String]>) -> Result<Vec<DeviceRecord>> {
        let all = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT apr, device, mqtt_username, mqtt_password_sha256, report_interval_s, \
                 config, last_status, last_status_ms, last_seen_ms FROM devices ORDER BY apr, device",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    DeviceRecord {
                        apr: r.get(0)?,
                        device: r.get(1)?,
                        mqtt_username: r.get(2)?,
                        mqtt_password_sha256: r.get(3)?,
                        report_interval_s: r.get(4)?,
                        config: serde_json::Value::Null,
                        last_status: r.get(6)?,
                        last_status_ms: r.get(7)?,
                        last_seen_ms: r.get(8)?,
                    },
                    r.get::<_, String>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (mut d, config) = row?;
                d.config = serde_json::from_str(&config).map_err(|e| {
                    Error::Invalid(format!(
                        "device '{}' of APR '{}' has a stored config that is not JSON: {e}",
                        d.device, d.apr
                    ))
                })?;
                out.push(d);
            }
            Ok(out)
        })?;
        Ok(match aprs {
            None => all,
            Some(set) => all.into_iter().filter(|d| set.contains(&d.apr)).collect(),
        })
    }

    fn insert_user(&self, user: &UserInsert) -> Result<i64> {
        let u = user.clone();
        self.write(move |tx| {
            if tx
                .prepare_cached("SELECT 1 FROM users WHERE username = ?1")?
                .exists([&u.username])?
            {
                return Err(Error::Conflict(format!("user '{}' exists already", u.username)));
            }
            check_scope_targets(tx, &u.aprs, u.region.as_deref())?;
            tx.prepare_cached(
                "INSERT INTO users(username, role, password_argon2, region) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![u.username, u.role.as_str(), u.password_argon2, u.region])?;
            let id = tx.last_insert_rowid();
            let mut ins = tx.prepare_cached("INSERT OR IGNORE INTO user_aprs(user, apr) VALUES (?1, ?2)")?;
            for a in &u.aprs {
                ins.execute(params![id, a])?;
            }
            Ok(id)
        })
    }

    fn set_user_scope(&self, username: &str, aprs: &[String], region: Option<&str>) -> Result<()> {
        let username = username.to_owned();
        let aprs = aprs.to_vec();
        let region = region.map(str::to_owned);
        self.write(move |tx| {
            let id = user_id(tx, &username)?;
            check_scope_targets(tx, &aprs, region.as_deref())?;
            tx.prepare_cached("DELETE FROM user_aprs WHERE user = ?1")?
                .execute([id])?;
            let mut ins =
                tx.prepare_cached("INSERT OR IGNORE INTO user_aprs(user, apr) VALUES (?1, ?2)")?;
            for a in &aprs {
                ins.execute(params![id, a])?;
            }
            tx.prepare_cached("UPDATE users SET region = ?2 WHERE id = ?1")?
                .execute(params![id, region])?;
            Ok(())
        })
    }

    fn user(&self, username: &str) -> Result<Option<UserRecord>> {
        self.read(|c| user_where(c, "users u WHERE u.username = ?1", username))
    }

    fn insert_token(
        &self,
        sha256: &str,
        username: &str,
        created_ms: i64,
        label: Option<&str>,
    ) -> Result<()> {
        let sha256 = sha256.to_owned();
        let username = username.to_owned();
        let label = label.map(str::to_owned);
        self.write(move |tx| {
            let id = user_id(tx, &username)?;
            tx.prepare_cached(
                "INSERT INTO tokens(sha256, user, created_ms, label) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![sha256, id, created_ms, label])?;
            Ok(())
        })
    }

    fn user_by_token(&self, sha256: &str) -> Result<Option<UserRecord>> {
        let load = || {
            self.read(|c| {
                user_where(
                    c,
                    "tokens t JOIN users u ON u.id = t.user \
                     WHERE t.sha256 = ?1 AND t.revoked_ms IS NULL",
                    sha256,
                )
            })
        };
        if self.tokens.settings().entries == 0 {
            return load();
        }
        let stamp = self.stamp.read()?;
        self.tokens
            .lookup(sha256, stamp, std::time::Instant::now(), load)
    }
}

// Readings live in two tables (`readings` and the small `readings_recent`,
// see `writer`); a row is in exactly one, and each query reads both arms in
// one statement (one snapshot, so a chunk moved meanwhile is seen once).
const RAW_QUERY: &str = "SELECT t, v FROM ( \
     SELECT r.t AS t, r.v AS v FROM series s CROSS JOIN readings r ON r.series = s.id \
     WHERE s.apr = ?1 AND s.metric = ?2 AND (?3 IS NULL OR s.device = ?3) \
     AND r.t >= ?4 AND r.t <= ?5 \
     UNION ALL \
     SELECT r.t, r.v FROM series s CROSS JOIN readings_recent r ON r.series = s.id \
     WHERE s.apr = ?1 AND s.metric = ?2 AND (?3 IS NULL OR s.device = ?3) \
     AND r.t >= ?4 AND r.t <= ?5) ORDER BY t LIMIT ?6";
/// Buckets start at the floor of `t / step` times `step`, for negative times
/// too; the mean is the sum over both tables by the count over both.
const BUCKET_QUERY: &str = "SELECT bucket, SUM(sv) / SUM(n) FROM ( \
     SELECT r.t - (((r.t % ?6) + ?6) % ?6) AS bucket, SUM(r.v) AS sv, COUNT(*) AS n \
     FROM series s CROSS JOIN readings r ON r.series = s.id \
     WHERE s.apr = ?1 AND s.metric = ?2 AND (?3 IS NULL OR s.device = ?3) \
     AND r.t >= ?4 AND r.t <= ?5 GROUP BY bucket \
     UNION ALL \
     SELECT r.t - (((r.t % ?6) + ?6) % ?6), SUM(r.v), COUNT(*) \
     FROM series s CROSS JOIN readings_recent r ON r.series = s.id \
     WHERE s.apr = ?1 AND s.metric = ?2 AND (?3 IS NULL OR s.device = ?3) \
     AND r.t >= ?4 AND r.t <= ?5 GROUP BY 1) \
     GROUP BY bucket ORDER BY bucket LIMIT ?7";
/// Each series' newest reading in each table; the newer of the two wins.
const LATEST_QUERY: &str = "SELECT s.device, s.metric, r.t, r.v FROM series s \
     CROSS JOIN readings r ON r.series = s.id WHERE s.apr = ?1 \
     AND r.t = (SELECT MAX(t) FROM readings WHERE series = s.id) \
     UNION ALL \
     SELECT s.device, s.metric, r.t, r.v FROM series s \
     CROSS JOIN readings_recent r ON r.series = s.id WHERE s.apr = ?1 \
     AND r.t = (SELECT MAX(t) FROM readings_recent WHERE series = s.id)";
const COVERAGE_QUERY: &str = "SELECT metric, MIN(lo), MAX(hi), SUM(n) FROM ( \
     SELECT s.metric AS metric, MIN(r.t) AS lo, MAX(r.t) AS hi, COUNT(*) AS n \
     FROM series s CROSS JOIN readings r ON r.series = s.id WHERE s.apr = ?1 GROUP BY s.metric \
     UNION ALL \
     SELECT s.metric, MIN(r.t), MAX(r.t), COUNT(*) \
     FROM series s CROSS JOIN readings_recent r ON r.series = s.id WHERE s.apr = ?1 GROUP BY s.metric) \
     GROUP BY metric ORDER BY metric";

impl SeriesStore for SqliteStore {
    fn write_batch(&self, batch: IngestBatch) -> Result<IngestAck> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Job::Ingest { batch, reply: tx })?;
        rx.recv().map_err(|_| writer_stopped())?
    }

    fn readings(&self, q: &SeriesQuery<'_>) -> Result<Vec<Point>> {
        let metric = i64::from(q.metric.index());
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        self.read(|c| {
            let point = |r: &rusqlite::Row<'_>| {
                Ok(Point {
                    t_ms: r.get(0)?,
                    v: r.get(1)?,
                })
            };
            let points = match q.step_ms {
                None => c
                    .prepare_cached(RAW_QUERY)?
                    .query_map(
                        params![q.apr, metric, q.device, q.from_ms, q.to_ms, limit],
                        point,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                Some(step) => c
                    .prepare_cached(BUCKET_QUERY)?
                    .query_map(
                        params![
                            q.apr,
                            metric,
                            q.device,
                            q.from_ms,
                            q.to_ms,
                            step.max(1),
                            limit
                        ],
                        point,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(points)
        })
    }

    fn latest(&self, apr: &str) -> Result<Vec<Latest>> {
        let rows = self.read(|c| {
            Ok(c.prepare_cached(LATEST_QUERY)?
                .query_map([apr], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, u8>(1)?,
                        r.get(2)?,
                        r.get(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<(String, u8, i64, f64)>>>()?)
        })?;
        // By metric, then device; of a series' two candidates the newer.
        let mut newest: BTreeMap<(u8, String), (i64, f64)> = BTreeMap::new();
        for (device, m, t_ms, v) in rows {
            let e = newest.entry((m, device)).or_insert((t_ms, v));
            if t_ms > e.0 {
                *e = (t_ms, v);
            }
        }
        Ok(newest
            .into_iter()
            .filter_map(|((m, device), (t_ms, v))| {
                Metric::from_index(m).map(|metric| Latest {
                    device,
                    metric,
                    t_ms,
                    v,
                })
            })
            .collect())
    }

    fn coverage(&self, apr: &str) -> Result<Vec<Coverage>> {
        let rows = self.read(|c| {
            Ok(c.prepare_cached(COVERAGE_QUERY)?
                .query_map([apr], |r| {
                    Ok((r.get::<_, u8>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<rusqlite::Result<Vec<(u8, i64, i64, u64)>>>()?)
        })?;
        let mut by_metric = BTreeMap::new();
        for (m, first_ms, last_ms, count) in rows {
            if let Some(metric) = Metric::from_index(m) {
                by_metric.insert(
                    m,
                    Coverage {
                        metric,
                        first_ms,
                        last_ms,
                        count,
                    },
                );
            }
        }
        Ok(by_metric.into_values().collect())
    }

    fn quarantine(&self, apr: &str, limit: usize) -> Result<Vec<QuarantineEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT apr, device, received_ms, reason, record, detail, raw FROM quarantine \
                 WHERE apr = ?1 ORDER BY received_ms DESC, id DESC LIMIT ?2",
            )?
            .query_map(params![apr, limit], |r| {
                Ok(QuarantineEntry {
                    apr: r.get(0)?,
                    device: r.get(1)?,
                    received_ms: r.get(2)?,
                    reason: r.get(3)?,
                    record: r.get(4)?,
                    detail: r.get(5)?,
                    raw: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
        })
    }

    fn readings_stored(&self) -> u64 {
        self.readings_total.load(Ordering::Relaxed)
    }
}
