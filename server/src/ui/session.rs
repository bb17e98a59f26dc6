//! Sessions, cookies and CSRF tokens of the web UI.
//!
//! # Sessions
//! A session is created by a successful login and kept **in memory** in a
//! [`SessionStore`]: a random 256-bit id (64 hex characters) in the
//! `apr_session` cookie, the caller's [`Principal`], and the session's CSRF
//! token. A session ends after [`IDLE`] without a request, after
//! [`ABSOLUTE`] in any case, or at logout. The store keys sessions by the
//! SHA-256 of their id, so a lookup's timing says nothing about stored ids.
//!
//! A restart of the server logs everyone out (the store is not persisted;
//! a persistent session table is a later step). The role and scope are the
//! ones at login time: an admin's change of a user's scope takes effect at
//! the user's next login.
//!
//! # Cookies
//! `apr_session` is `HttpOnly; SameSite=Strict; Path=/`, plus `Secure` when
//! the request came over HTTPS (or `X-Forwarded-Proto: https`) or
//! `[ui] secure_cookies` says so. It carries no `Max-Age`: the browser drops
//! it when it closes and the server decides expiry. Before login, the
//! `apr_presession` cookie holds a random token that the login and language
//! forms must echo (double-submit), so those forms are protected too.
//!
//! # CSRF
//! Every POST of the UI carries a hidden `csrf_token` field. It must equal
//! the session's token (or, without a session, the pre-session cookie's);
//! the comparison takes the same time wherever the strings differ.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::auth::{sha256_hex, Principal};

/// The session cookie.
pub const SESSION_COOKIE: &str = "apr_session";
/// The pre-session cookie (CSRF token of the login and language forms).
pub const PRESESSION_COOKIE: &str = "apr_presession";
/// The language cookie (`es` / `en`).
pub const LANG_COOKIE: &str = "apr_lang";
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login, active or not.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);

/// A random 256-bit value as 64 hex characters (session ids, CSRF tokens).
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Whether two strings are equal, in a time that depends only on their
/// lengths.
pub fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A signed-in user's session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// The id (the cookie's value).
    pub id: String,
    /// Who.
    pub principal: Principal,
    /// The token every POST of this session carries.
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// What a session lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// A live session (its idle clock restarted).
    Live(Session),
    /// The session existed but timed out (it is now gone).
    Expired,
    /// No such session (never was, logged out, or the server restarted).
    Unknown,
}

/// The sessions of one server, in memory.
#[derive(Debug)]
pub struct SessionStore {
    sessions: Mutex<HashMap<String, Session>>,
    idle: Duration,
    absolute: Duration,
}

impl Default for SessionStore {
    fn default() -> Self {
        SessionStore::new(IDLE, ABSOLUTE)
    }
}

impl SessionStore {
    /// A store whose sessions end after `idle` without use or `absolute`
    /// after creation.
    pub fn new(idle: Duration, absolute: Duration) -> SessionStore {
        SessionStore {
            sessions: Mutex::new(HashMap::new()),
            idle,
            absolute,
        }
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.last_seen) < self.idle
            && now.saturating_duration_since(s.created) < self.absolute
    }

    /// Starts a session for `principal` (and drops every expired one).
    pub fn create(&self, principal: Principal, now: Instant) -> Session {
        let s = Session {
            id: random_token(),
            principal,
            csrf: random_token(),
            created: now,
            last_seen: now,
        };
        let mut map = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, v| self.live(v, now));
        map.insert(sha256_hex(&s.id), s.clone());
        s
    }

    /// The session with this id, its idle clock restarted when live.
    pub fn get(&self, id: &str, now: Instant) -> Lookup {
        let key = sha256_hex(id);
        let mut map = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(&key) {
            None => Lookup::Unknown,
            Some(s) if self.live(s, now) => {
                s.last_seen = now;
                Lookup::Live(s.clone())
            }
            Some(_) => {
                map.remove(&key);
                Lookup::Expired
            }
        }
    }

    /// Whether the session is live, without restarting its idle clock
    /// (the live alert stream must not keep a session alive on its own).
    pub fn peek(&self, id: &str, now: Instant) -> bool {
        let map = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&sha256_hex(id)).is_some_and(|s| self.live(s, now))
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        let mut map = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(&sha256_hex(id));
    }

    /// Live sessions (for tests and logs).
    pub fn len(&self, now: Instant) -> usize {
        let map = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().filter(|s| self.live(s, now)).count()
    }

    /// Whether no session is live.
    pub fn is_empty(&self, now: Instant) -> bool {
        self.len(now) == 0
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Strict; Path=/`, `Secure` when
/// asked, and `Max-Age` when given (0 deletes the cookie).
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age_s: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(a) = max_age_s {
        c.push_str(&format!("; Max-Age={a}"));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, Scope};

    fn alice() -> Principal {
        Principal {
            user: "alice".into(),
            role: Role::Engineer,
            scope: Scope::All,
        }
    }

    #[test]
    fn a_session_id_and_its_csrf_token_are_256_random_bits() {
        let store = SessionStore::default();
        let now = Instant::now();
        let a = store.create(alice(), now);
        let b = store.create(alice(), now);
        assert_eq!(a.id.len(), 64);
        assert!(a.id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, a.id);
        assert_eq!(store.len(now), 2);
    }

    #[test]
    fn a_session_ends_after_thirty_idle_minutes_but_use_keeps_it_alive() {
        let store = SessionStore::default();
        let t0 = Instant::now();
        let s = store.create(alice(), t0);
        let t1 = t0 + Duration::from_secs(29 * 60);
        assert!(matches!(store.get(&s.id, t1), Lookup::Live(_)));
        let t2 = t1 + Duration::from_secs(29 * 60);
        assert!(matches!(store.get(&s.id, t2), Lookup::Live(_)));
        let t3 = t2 + Duration::from_secs(30 * 60);
        assert_eq!(store.get(&s.id, t3), Lookup::Expired);
        assert_eq!(store.get(&s.id, t3), Lookup::Unknown);
    }

    #[test]
    fn a_session_ends_twelve_hours_after_login_even_when_used() {
        let store = SessionStore::default();
        let t0 = Instant::now();
        let s = store.create(alice(), t0);
        let mut t = t0;
        while t + Duration::from_secs(20 * 60) < t0 + ABSOLUTE {
            t += Duration::from_secs(20 * 60);
            assert!(matches!(store.get(&s.id, t), Lookup::Live(_)), "{t:?}");
        }
        t += Duration::from_secs(20 * 60);
        assert_eq!(store.get(&s.id, t), Lookup::Expired);
    }

    #[test]
    fn logout_removes_the_session_and_peeking_does_not_keep_it_alive() {
        let store = SessionStore::default();
        let t0 = Instant::now();
        let s = store.create(alice(), t0);
        assert!(store.peek(&s.id, t0 + Duration::from_secs(20 * 60)));
        assert!(!store.peek(&s.id, t0 + Duration::from_secs(31 * 60)));
        let s2 = store.create(alice(), t0);
        store.remove(&s2.id);
        assert_eq!(store.get(&s2.id, t0), Lookup::Unknown);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", "a"));
    }

    #[test]
    fn cookies_are_read_from_any_cookie_header_and_written_strict() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; apr_session=xyz".parse().unwrap());
        h.append("cookie", "apr_lang=en".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, LANG_COOKIE), Some("en"));
        assert_eq!(cookie(&h, "b"), None);
        assert_eq!(
            set_cookie(SESSION_COOKIE, "v", true, None),
            "apr_session=v; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(set_cookie("x", "", false, Some(0)).ends_with("Max-Age=0"));
    }
}
