//! Online backup, consistency check and restore of the embedded store.
//!
//! `backup` copies the live SQLite file while the server keeps ingesting: it
//! uses SQLite's online backup API in a single step, which reads one
//! consistent snapshot under a read transaction (WAL mode lets writers go on
//! meanwhile). Every reading whose batch was acknowledged before the backup
//! began is in that snapshot, because ingest acknowledges only after commit.
//! The copy is written to a temporary file, checked, fsync'd and renamed into
//! place, so a crash never leaves a half-written backup under the final name.
//!
//! `check` is the consistency check a backup must pass before it is trusted:
//! SQLite's `integrity_check` and `foreign_key_check`, a schema version this
//! server knows, every reading belonging to a known series, and the running
//! readings count agreeing with the readings table.
//!
//! `restore` checks the backup, then copies it over the store's file (the
//! server must be stopped), removing stale `-wal` / `-shm` files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};
use crate::store::schema::SCHEMA_VERSION;

/// What a consistency check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consistency {
    /// Schema version (`PRAGMA user_version`).
    pub schema_version: i64,
    /// Readings in the store.
    pub readings: u64,
    /// Series in the store.
    pub series: u64,
    /// APRs in the registry.
    pub aprs: u64,
}

/// What a backup produced.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupReport {
    /// The backup file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its consistency check.
    pub consistency: Consistency,
    /// How long the copy and the check took, seconds.
    pub seconds: f64,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// Copies the store at `db` to `out` while it is in use.
pub fn backup(db: &Path, out: &Path) -> Result<BackupReport> {
    let started = Instant::now();
    if !db.exists() {
        return Err(Error::NotFound(format!(
            "store {} does not exist",
            db.display()
        )));
    }
    let tmp = out.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    {
        let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        src.busy_timeout(std::time::Duration::from_secs(30))?;
        let mut dst = Connection::open(&tmp)?;
        let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
        // One step over every page (-1): one consistent snapshot. A busy or
        // locked source is retried for up to 30 s.
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match b.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                _ if Instant::now() > deadline => {
                    return Err(Error::Unavailable(format!(
                        "backup of {}: the store stayed busy for 30 s",
                        db.display()
                    )))
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }
    let consistency = match check(&tmp) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let f = std::fs::File::open(&tmp).map_err(io(format!("opening {}", tmp.display())))?;
    f.sync_all()
        .map_err(io(format!("syncing {}", tmp.display())))?;
    std::fs::rename(&tmp, out).map_err(io(format!(
        "renaming {} to {}",
        tmp.display(),
        out.display()
    )))?;
    sync_parent(out)?;
    let bytes = std::fs::metadata(out)
        .map_err(io(format!("reading {}", out.display())))?
        .len();
    Ok(BackupReport {
        path: out.to_path_buf(),
        bytes,
        consistency,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn sync_parent(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let d = std::fs::File::open(dir).map_err(io(format!("opening {}", dir.display())))?;
    d.sync_all()
        .map_err(io(format!("syncing {}", dir.display())))
}

/// Checks that the store (or backup) at `path` is consistent.
pub fn check(path: &Path) -> Result<Consistency> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let bad = |m: String| Error::Invalid(format!("{}: {m}", path.display()));
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity != "ok" {
        return Err(bad(format!("integrity check failed: {integrity}")));
    }
    let fk: Option<String> = conn
        .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
        .ok();
    if let Some(table) = fk {
        return Err(bad(format!("foreign key check failed in table {table}")));
    }
    let schema_version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if !(1..=SCHEMA_VERSION).contains(&schema_version) {
        return Err(bad(format!(
            "schema version {schema_version} is not one this server knows (1–{SCHEMA_VERSION})"
        )));
    }
    // From schema version 5 on, new readings wait in `readings_recent`
    // before they move to `readings` (see `store::writer`).
    let tables: &[&str] = if schema_version >= 5 {
        &["readings", "readings_recent"]
    } else {
        &["readings"]
    };
    let mut readings = 0i64;
    for table in tables {
        let orphans: i64 = conn.query_row(
            &format!("SELECT count(*) FROM {table} WHERE series NOT IN (SELECT id FROM series)"),
            [],
            |r| r.get(0),
        )?;
        if orphans != 0 {
            return Err(bad(format!(
                "{orphans} readings in {table} belong to no series"
            )));
        }
        readings += conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })?;
    }
    if schema_version >= 5 {
        let both: i64 = conn.query_row(
            "SELECT count(*) FROM readings_recent n JOIN readings r \
             ON r.series = n.series AND r.t = n.t",
            [],
            |r| r.get(0),
        )?;
        if both != 0 {
            return Err(bad(format!(
                "{both} readings are in both readings and readings_recent"
            )));
        }
    }
    let counted: i64 = conn.query_row(
        "SELECT value FROM counts WHERE name = 'readings'",
        [],
        |r| r.get(0),
    )?;
    if counted != readings {
        return Err(bad(format!(
            "the running readings count ({counted}) disagrees with the readings stored ({readings})"
        )));
    }
    let series: i64 = conn.query_row("SELECT count(*) FROM series", [], |r| r.get(0))?;
    let aprs: i64 = conn.query_row("SELECT count(*) FROM aprs", [], |r| r.get(0))?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Consistency {
        schema_version,
        readings: n(readings),
        series: n(series),
        aprs: n(aprs),
    })
}

/// Replaces the store at `db` with the backup at `from` (the server must be
/// stopped). Refuses an inconsistent backup, and an existing store unless
/// `force`.
pub fn restore(from: &Path, db: &Path, force: bool) -> Result<Consistency> {
    let consistency = check(from)?;
    if db.exists() && !force {
        return Err(Error::Conflict(format!(
            "{} exists; stop the server and pass --force to replace it",
            db.display()
        )));
    }
    let tmp = db.with_extension("restoring");
    std::fs::copy(from, &tmp).map_err(io(format!(
        "copying {} to {}",
        from.display(),
        tmp.display()
    )))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("syncing {}", tmp.display())))?;
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    std::fs::rename(&tmp, db).map_err(io(format!(
        "renaming {} to {}",
        tmp.display(),
        db.display()
    )))?;
    sync_parent(db)?;
    Ok(consistency)
}
