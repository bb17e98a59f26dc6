//! Bearer tokens resolved from memory: every API request (a site gateway's
//! post above all) names a token, and reading its user from SQLite costs a
//! read transaction whose page cache the writer has just invalidated
//! (docs/SCALING.md: 8.8 % of the central server's CPU at full speed).
//!
//! A cached user is only ever returned while nothing in the registry can
//! have changed since it was read:
//! - every registry write of this process that changes a user, a user's
//!   APRs or a token ([`SqliteStore::write`], the one path by which the
//!   registry changes, tells from the count the schema's triggers keep in
//!   `counts.accounts_changes`) bumps a generation before it answers its
//!   caller, so the next lookup after a revocation returns has an empty
//!   cache; other registry writes (alerts, KPIs, devices, audit) leave it;
//! - such a write of any process (the `apr-server` CLI revoking a token
//!   while the server runs) also writes a fresh random stamp into a small
//!   file beside the database ([`RegistryStamp`], `<db>-registry`), which
//!   each lookup reads (one `pread`);
//! - an entry older than `max_age` is read again, for changes made around
//!   the store (a hand-edited database, a deleted stamp file).
//!
//! A user read while a write was in flight is kept only under the
//! generation and stamp seen before the read, so the next lookup after the
//! write drops it. Unknown or revoked tokens are never cached.
//!
//! [`SqliteStore::write`]: super::SqliteStore

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::UserRecord;
use crate::error::{Error, Result};

/// How many tokens a cache holds and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCacheSettings {
    /// Tokens kept at most (0: no cache, every lookup reads SQLite). When
    /// full, the cache starts again empty.
    pub entries: usize,
    /// A cached user is read again after this long.
    pub max_age: Duration,
}

impl Default for TokenCacheSettings {
    fn default() -> Self {
        TokenCacheSettings {
            entries: 10_000,
            max_age: Duration::from_secs(30),
        }
    }
}

/// The file beside the database whose content changes with every registry
/// write of any process.
#[derive(Debug)]
pub(super) struct RegistryStamp {
    path: PathBuf,
    file: File,
}

impl RegistryStamp {
    /// Opens (creating when missing) the stamp of the database at `db`.
    pub(super) fn open(db: &Path) -> Result<RegistryStamp> {
        let mut name = db.as_os_str().to_owned();
        name.push("-registry");
        let path = PathBuf::from(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| Error::Io {
                what: format!("cannot open the registry stamp {}", path.display()),
                source,
            })?;
        Ok(RegistryStamp { path, file })
    }

    /// The current stamp (0 for a new, empty file).
    pub(super) fn read(&self) -> Result<u64> {
        let mut buf = [0u8; 8];
        let mut filled = 0;
        while filled < buf.len() {
            let n = self
                .file
                .read_at(&mut buf[filled..], filled as u64)
                .map_err(|source| self.io("cannot read", source))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(u64::from_le_bytes(buf))
    }

    /// Marks a registry change: a new random stamp, so that two processes
    /// writing at once never leave the value a reader saw before.
    pub(super) fn touch(&self) -> Result<()> {
        let stamp = rand::random::<u64>() | 1;
        self.file
            .write_all_at(&stamp.to_le_bytes(), 0)
            .map_err(|source| self.io("cannot write", source))
    }

    fn io(&self, verb: &str, source: std::io::Error) -> Error {
        Error::Io {
            what: format!("{verb} the registry stamp {}", self.path.display()),
            source,
        }
    }
}

/// What the registry looked like when the cached entries were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    generation: u64,
    stamp: u64,
}

#[derive(Debug, Default)]
struct Entries {
    version: Option<Version>,
    users: HashMap<String, (UserRecord, Instant)>,
}

/// Users by token hash, valid for one registry [`Version`].
#[derive(Debug)]
pub(super) struct TokenCache {
    settings: TokenCacheSettings,
    generation: AtomicU64,
    entries: Mutex<Entries>,
    hits: AtomicU64,
}

impl TokenCache {
    pub(super) fn new(settings: TokenCacheSettings) -> TokenCache {
        TokenCache {
            settings,
            generation: AtomicU64::new(0),
            entries: Mutex::new(Entries::default()),
            hits: AtomicU64::new(0),
        }
    }

    pub(super) fn settings(&self) -> TokenCacheSettings {
        self.settings
    }

    /// Called by every registry write of this process, after its commit
    /// and before its caller hears of it.
    pub(super) fn registry_changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Lookups answered from memory so far.
    pub(super) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The user of the token whose SHA-256 is `sha256`: from memory when
    /// read under the registry version now current (`stamp` is the
    /// [`RegistryStamp`] read just now) and younger than `max_age`, else
    /// from `load`.
    pub(super) fn lookup(
        &self,
        sha256: &str,
        stamp: u64,
        now: Instant,
        load: impl FnOnce() -> Result<Option<UserRecord>>,
    ) -> Result<Option<UserRecord>> {
        if self.settings.entries == 0 {
            return load();
        }
        let seen = Version {
            generation: self.generation.load(Ordering::SeqCst),
            stamp,
        };
        {
            let mut e = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if e.version != Some(seen) {
                e.users.clear();
                e.version = Some(seen);
            }
            if let Some((user, at)) = e.users.get(sha256) {
                if now.saturating_duration_since(*at) < self.settings.max_age {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(user.clone()));
                }
            }
        }
        let loaded = load()?;
        if let Some(user) = &loaded {
            let mut e = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            // Kept only if no other lookup has seen a newer version since:
            // if the registry changed while `load` ran, the next lookup sees
            // a version other than `seen` and drops this entry.
            if e.version == Some(seen) {
                if e.users.len() >= self.settings.entries {
                    e.users.clear();
                }
                e.users.insert(sha256.to_owned(), (user.clone(), now));
            }
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use std::cell::Cell;

    fn user(name: &str) -> UserRecord {
        UserRecord {
            id: 1,
            username: name.into(),
            role: Role::Gateway,
            password_argon2: None,
            region: None,
            aprs: vec!["apr-1".into()],
        }
    }

    fn cache(entries: usize) -> TokenCache {
        TokenCache::new(TokenCacheSettings {
            entries,
            max_age: Duration::from_secs(30),
        })
    }

    /// Looks `hash` up, answering a miss with `answer`; returns the
    /// username seen and whether `load` ran.
    fn look(
        c: &TokenCache,
        hash: &str,
        stamp: u64,
        now: Instant,
        answer: Option<&str>,
    ) -> (Option<String>, bool) {
        let loaded = Cell::new(false);
        let got = c
            .lookup(hash, stamp, now, || {
                loaded.set(true);
                Ok(answer.map(user))
            })
            .unwrap();
        (got.map(|u| u.username), loaded.get())
    }

    #[test]
    fn a_known_token_is_read_once_then_answered_from_memory() {
        let c = cache(10);
        let t = Instant::now();
        assert_eq!(look(&c, "h1", 7, t, Some("gw")), (Some("gw".into()), true));
        // The store would now say "unknown": the cache still answers.
        assert_eq!(look(&c, "h1", 7, t, None), (Some("gw".into()), false));
        assert_eq!(c.hits(), 1);
    }

    #[test]
    fn a_write_of_this_process_empties_the_cache_for_the_next_lookup() {
        let c = cache(10);
        let t = Instant::now();
        look(&c, "h1", 7, t, Some("gw"));
        c.registry_changed();
        assert_eq!(look(&c, "h1", 7, t, None), (None, true), "revoked");
    }

    #[test]
    fn a_new_stamp_written_by_another_process_empties_the_cache() {
        let c = cache(10);
        let t = Instant::now();
        look(&c, "h1", 7, t, Some("gw"));
        assert_eq!(look(&c, "h1", 8, t, None), (None, true));
    }

    #[test]
    fn an_entry_older_than_max_age_is_read_again() {
        let c = cache(10);
        let t = Instant::now();
        look(&c, "h1", 7, t, Some("gw"));
        let later = t + Duration::from_secs(29);
        assert_eq!(look(&c, "h1", 7, later, None), (Some("gw".into()), false));
        let expired = t + Duration::from_secs(30);
        assert_eq!(look(&c, "h1", 7, expired, None), (None, true));
    }

    #[test]
    fn unknown_tokens_are_not_cached() {
        let c = cache(10);
        let t = Instant::now();
        assert_eq!(look(&c, "h1", 7, t, None), (None, true));
        assert_eq!(look(&c, "h1", 7, t, Some("gw")), (Some("gw".into()), true));
    }

    #[test]
    fn a_user_read_while_the_registry_changed_is_dropped_at_the_next_lookup() {
        let c = cache(10);
        let t = Instant::now();
        // The write commits (and bumps the generation) while `load` reads
        // the old row.
        let got = c
            .lookup("h1", 7, t, || {
                c.registry_changed();
                Ok(Some(user("stale")))
            })
            .unwrap();
        assert_eq!(got.map(|u| u.username).as_deref(), Some("stale"));
        assert_eq!(look(&c, "h1", 7, t, None), (None, true));
    }

    #[test]
    fn a_full_cache_starts_again_and_size_zero_turns_it_off() {
        let c = cache(2);
        let t = Instant::now();
        look(&c, "h1", 7, t, Some("a"));
        look(&c, "h2", 7, t, Some("b"));
        look(&c, "h3", 7, t, Some("c"));
        assert_eq!(look(&c, "h3", 7, t, None), (Some("c".into()), false));
        assert_eq!(
            look(&c, "h1", 7, t, None),
            (None, true),
            "dropped when full"
        );
        let off = cache(0);
        look(&off, "h1", 7, t, Some("a"));
        assert_eq!(look(&off, "h1", 7, t, None), (None, true));
    }

    #[test]
    fn the_stamp_changes_with_every_touch_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("apr.sqlite3");
        let s = RegistryStamp::open(&db).unwrap();
        assert_eq!(s.read().unwrap(), 0, "a new stamp reads 0");
        s.touch().unwrap();
        let first = s.read().unwrap();
        assert_ne!(first, 0);
        let other = RegistryStamp::open(&db).unwrap();
        assert_eq!(other.read().unwrap(), first, "the same file");
        other.touch().unwrap();
        assert_ne!(s.read().unwrap(), first, "seen through the first handle");
        assert!(dir.path().join("apr.sqlite3-registry").exists());
    }

    #[test]
    fn a_stamp_that_cannot_be_created_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("missing-dir").join("apr.sqlite3");
        let err = RegistryStamp::open(&db).unwrap_err().to_string();
        assert!(
            err.contains("registry stamp") && err.contains("missing-dir"),
            "{err}"
        );
    }
}
