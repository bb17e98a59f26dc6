//! Who may see what: roles, scopes, passwords and API tokens.
//!
//! | role | sees | may |
//! | --- | --- | --- |
//! | `operator` | its APRs | read (later: acknowledge alerts) |
//! | `engineer` | every APR | read |
//! | `gore` | the APRs of its region | read |
//! | `admin` | every APR | everything |
//! | `gateway` | its APRs | only `POST /api/v1/ingest` and `GET /api/v1/gateway/devices` |
//!
//! Passwords are hashed with Argon2id (default parameters). The policy
//! ([`check_password`], applied by `user add`, `user password`, the admin
//! page and every other way a password is set): at least
//! [`MIN_PASSWORD_CHARS`] characters, not only whitespace, not the username
//! (nor containing it, case-insensitively), and not one of
//! [`COMMON_PASSWORDS`] (compared case-insensitively, ignoring spaces).
//! A revoked token ([`crate::store::AccountStore::revoke_token`]) resolves
//! to no one from the next request on. API tokens are `apr_` followed by 32
//! random bytes in hex; only their SHA-256 is stored, so the plain token is
//! shown once, when it is created. The scope decisions ([`Scope`],
//! [`apr_access`]) are pure functions.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::{AprRecord, Registry, UserInsert, UserRecord};

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Passwords refused whatever their length: the most common ones of leaked
/// password lists that reach the minimum length, and local favourites.
pub const COMMON_PASSWORDS: &[&str] = &[
    "1234567890",
    "12345678910",
    "123456789012",
    "0123456789",
    "0987654321",
    "1111111111",
    "1q2w3e4r5t",
    "1qaz2wsx3edc",
    "qwertyuiop",
    "qwerty12345",
    "qwerty123456",
    "asdfghjkl1",
    "password12",
    "password123",
    "password1234",
    "passw0rd123",
    "contraseña",
    "contraseña1",
    "contraseña123",
    "contrasena",
    "contrasena1",
    "contrasena123",
    "iloveyou12",
    "administrador",
    "admin12345",
    "admin123456",
    "administrator",
    "bienvenido",
    "bienvenido1",
    "bienvenido123",
    "welcome123",
    "letmein123",
    "aguapotable",
    "aguapotable1",
    "aguapotable123",
    "aprchile123",
    "chile12345",
    "chile123456",
    "superman123",
    "princesa123",
    "football123",
    "abcdefghij",
    "abc1234567",
    "changeme123",
];

/// Prefix of every API token.
pub const TOKEN_PREFIX: &str = "apr_";

/// What a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs one or a few APRs.
    Operator,
    /// Program engineer: reads every APR.
    Engineer,
    /// Regional government: reads the APRs of its region.
    Gore,
    /// Administers everything.
    Admin,
    /// A site gateway: ingests for its APRs.
    Gateway,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Operator,
        Role::Engineer,
        Role::Gore,
        Role::Admin,
        Role::Gateway,
    ];

    /// The role's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Engineer => "engineer",
            Role::Gore => "gore",
            Role::Admin => "admin",
            Role::Gateway => "gateway",
        }
    }

    /// Whether the role reads the registry and series (every role but `gateway`).
    pub const fn reads(self) -> bool {
        !matches!(self, Role::Gateway)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown role '{s}'; expected one of operator, engineer, gore, admin, gateway"
                ))
            })
    }
}

/// Which APRs a user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every APR (`engineer`, `admin`).
    All,
    /// A set of APRs (`operator`, `gateway`).
    Aprs(BTreeSet<String>),
    /// The APRs of one region (`gore`).
    Region(String),
}

impl Scope {
    /// The scope a role and its stored APRs / region give.
    pub fn of(role: Role, aprs: &[String], region: Option<&str>) -> Scope {
        match role {
            Role::Engineer | Role::Admin => Scope::All,
            Role::Operator | Role::Gateway => Scope::Aprs(aprs.iter().cloned().collect()),
            Role::Gore => Scope::Region(region.unwrap_or_default().to_owned()),
        }
    }

    /// Whether the APR is in scope.
    pub fn allows_apr(&self, apr: &AprRecord) -> bool {
        match self {
            Scope::All => true,
            Scope::Aprs(set) => set.contains(&apr.id),
            Scope::Region(r) => apr.region == *r,
        }
    }

    /// Whether an APR id is in scope, when that can be told from the id alone
    /// (`None` for a region scope, which needs the APR's region).
    pub fn allows_apr_id(&self, id: &str) -> Option<bool> {
        match self {
            Scope::All => Some(true),
            Scope::Aprs(set) => Some(set.contains(id)),
            Scope::Region(_) => None,
        }
    }

    /// Whether the caller may ask about a region: a region scope only about its
    /// own; an APR scope about any (its APRs there are what it sees).
    pub fn allows_region(&self, id: &str) -> bool {
        match self {
            Scope::All | Scope::Aprs(_) => true,
            Scope::Region(r) => r == id,
        }
    }
}

/// The answer to "may this caller see APR `id`?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AprAccess {
    /// Yes, and it exists.
    Allowed,
    /// Outside the caller's scope (or unknown, for a scoped caller: a scoped
    /// caller does not learn whether an APR outside its scope exists).
    Forbidden,
    /// In scope, but no such APR.
    NotFound,
}

/// Decides access to APR `id`, given the registry's record of it if any.
pub fn apr_access(scope: &Scope, id: &str, record: Option<&AprRecord>) -> AprAccess {
    match scope {
        Scope::All => match record {
            Some(_) => AprAccess::Allowed,
            None => AprAccess::NotFound,
        },
        Scope::Aprs(set) if !set.contains(id) => AprAccess::Forbidden,
        Scope::Aprs(_) => match record {
            Some(_) => AprAccess::Allowed,
            None => AprAccess::NotFound,
        },
        Scope::Region(r) => match record {
            Some(a) if a.region == *r => AprAccess::Allowed,
            _ => AprAccess::Forbidden,
        },
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Username.
    pub user: String,
    /// Role.
    pub role: Role,
    /// What it sees.
    pub scope: Scope,
}

impl Principal {
    /// The principal a stored user acts as.
    pub fn of(user: &UserRecord) -> Principal {
        Principal {
            user: user.username.clone(),
            role: user.role,
            scope: Scope::of(user.role, &user.aprs, user.region.as_deref()),
        }
    }
}

/// Checks the password policy for `username`'s password.
pub fn check_password_for(username: &str, password: &str) -> Result<()> {
    check_password(password)?;
    let lower = password.to_lowercase();
    let user = username.to_lowercase();
    if !user.is_empty() && (lower == user || lower.contains(&user)) {
        return Err(Error::WeakPassword(
            "the password must not contain the username".into(),
        ));
    }
    Ok(())
}

/// Checks the password policy (length, whitespace, common passwords); see
/// [`check_password_for`], which also refuses the username.
pub fn check_password(password: &str) -> Result<()> {
    let squeezed: String = password
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    if COMMON_PASSWORDS.iter().any(|c| *c == squeezed) {
        return Err(Error::WeakPassword(
            "the password is one of the most common passwords; choose another".into(),
        ));
    }
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(Error::WeakPassword(format!(
            "password has {n} characters; at least {MIN_PASSWORD_CHARS} are required"
        )));
    }
    if password.trim().is_empty() {
        return Err(Error::WeakPassword("password is only whitespace".into()));
    }
    Ok(())
}

/// Hashes a password with Argon2id (PHC string).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| Error::Invalid(format!("cannot make a password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Invalid(format!("cannot hash the password: {e}")))
}

/// Whether `password` matches a stored PHC string.
pub fn password_matches(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A new random API token.
pub fn generate_token() -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// SHA-256 of a secret, lower-case hex (how tokens and device passwords are stored).
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A user to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Login name: 1 to 64 of `a-z A-Z 0-9 . _ - @`.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Password (checked against the policy); `None` only for gateways, which
    /// use tokens.
    pub password: Option<String>,
    /// APRs, for `operator` and `gateway` (at least one).
    pub aprs: Vec<String>,
    /// Region, for `gore` (required).
    pub region: Option<String>,
}

/// Checks that a username is well formed.
pub fn check_username(username: &str) -> Result<()> {
    let ok = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "username '{username}' must be 1 to 64 characters of a-z, A-Z, 0-9, '.', '_', '-', '@'"
        )))
    }
}

/// Checks that a role gets the scope it needs and nothing it cannot use.
pub fn check_scope(role: Role, aprs: &[String], region: Option<&str>) -> Result<()> {
    match role {
        Role::Operator | Role::Gateway if aprs.is_empty() => Err(Error::Invalid(format!(
            "a {role} user needs at least one APR (--apr)"
        ))),
        Role::Operator | Role::Gateway if region.is_some() => Err(Error::Invalid(format!(
            "a {role} user is scoped by APRs, not by region"
        ))),
        Role::Gore if region.is_none() => Err(Error::Invalid(
            "a gore user needs a region (--region)".into(),
        )),
        Role::Gore if !aprs.is_empty() => Err(Error::Invalid(
            "a gore user is scoped by its region, not by APRs".into(),
        )),
        Role::Engineer | Role::Admin if !aprs.is_empty() || region.is_some() => {
            Err(Error::Invalid(format!(
                "a {role} user sees every APR; give no --apr or --region"
            )))
        }
        _ => Ok(()),
    }
}

/// Creates a user after checking its name, password and scope; answers its id.
pub fn create_user<R: Registry + ?Sized>(registry: &R, user: &NewUser) -> Result<i64> {
    check_username(&user.username)?;
    check_scope(user.role, &user.aprs, user.region.as_deref())?;
    for a in &user.aprs {
        if !apr_wire::id::is_valid_id(a) {
            return Err(Error::Invalid(format!("'{a}' is not a valid APR id")));
        }
    }
    let password_argon2 = match (&user.password, user.role) {
        (Some(p), _) => {
            check_password_for(&user.username, p)?;
            Some(hash_password(p)?)
        }
        (None, Role::Gateway) => None,
        (None, role) => {
            return Err(Error::WeakPassword(format!(
                "a {role} user needs a password"
            )));
        }
    };
    registry.insert_user(&UserInsert {
        username: user.username.clone(),
        role: user.role,
        password_argon2,
        region: user.region.clone(),
        aprs: user.aprs.clone(),
    })
}

/// Replaces a user's APRs and region (checked against its role).
pub fn set_scope<R: Registry + ?Sized>(
    registry: &R,
    username: &str,
    aprs: &[String],
    region: Option<&str>,
) -> Result<()> {
    let user = registry
        .user(username)?
        .ok_or_else(|| Error::NotFound(format!("user '{username}' does not exist")))?;
    check_scope(user.role, aprs, region)?;
    registry.set_user_scope(username, aprs, region)
}

/// Sets a new password for an existing user after checking the policy.
pub fn change_password<R: Registry + ?Sized>(
    registry: &R,
    username: &str,
    password: &str,
) -> Result<()> {
    let user = registry
        .user(username)?
        .ok_or_else(|| Error::NotFound(format!("user '{username}' does not exist")))?;
    if user.role == Role::Gateway {
        return Err(Error::Invalid("gateways use tokens, not passwords".into()));
    }
    check_password_for(username, password)?;
    registry.set_password(username, Some(&hash_password(password)?))
}

/// Disables a user: clears its password and revokes every token it has;
/// answers the user as it was.
pub fn disable_user<R: Registry + ?Sized>(registry: &R, username: &str) -> Result<UserRecord> {
    let user = registry
        .user(username)?
        .ok_or_else(|| Error::NotFound(format!("user '{username}' does not exist")))?;
    registry.set_password(username, None)?;
    registry.revoke_user_tokens(username, chrono::Utc::now().timestamp_millis())?;
    tracing::info!(%username, "user disabled");
    Ok(user)
}

/// The id of a token: the first characters of its SHA-256 (what the admin
/// page, `token list` and `token revoke` use).
pub fn token_id(token: &str) -> String {
    sha256_hex(token)[..crate::store::TOKEN_ID_CHARS].to_owned()
}

/// Creates an API token for a user; answers the plain token, which is not
/// stored and cannot be shown again.
pub fn create_token<R: Registry + ?Sized>(
    registry: &R,
    username: &str,
    label: Option<&str>,
) -> Result<String> {
    let token = generate_token();
    registry.insert_token(
        &sha256_hex(&token),
        username,
        chrono::Utc::now().timestamp_millis(),
        label,
    )?;
    Ok(token)
}

/// The principal whose password this is, or `None` (unknown user, wrong
/// password, or a user without a password).
pub fn login<R: Registry + ?Sized>(
    registry: &R,
    username: &str,
    password: &str,
) -> Result<Option<Principal>> {
    let Some(user) = registry.user(username)? else {
        // The same Argon2 work as for a known user, so the answer's timing
        // does not tell whether the account exists.
        let _ = password_matches(dummy_hash(), password);
        return Ok(None);
    };
    if user.password_argon2.is_none() {
        let _ = password_matches(dummy_hash(), password);
    }
    let ok = user
        .password_argon2
        .as_deref()
        .is_some_and(|phc| password_matches(phc, password));
    Ok(ok.then(|| Principal::of(&user)))
}

/// A hash of a random password, verified against when there is no user
/// (or no password) so that a refusal takes as long either way.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&generate_token()).unwrap_or_default())
}

/// The principal a bearer token belongs to, or `None`.
pub fn resolve_token<R: Registry + ?Sized>(registry: &R, token: &str) -> Result<Option<Principal>> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 256 {
        return Ok(None);
    }
    Ok(registry
        .user_by_token(&sha256_hex(token))?
        .map(|u| Principal::of(&u)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apr(id: &str, region: &str) -> AprRecord {
        AprRecord {
            id: id.into(),
            name: id.into(),
            comuna: "c".into(),
            region: region.into(),
            beneficiaries: 1,
            connections: 1,
            source: "pozo".into(),
            capacity_l_s: 1.0,
            storage_m3: 1.0,
            gore_contribution_clp: 1,
            public_investment_clp: 1,
        }
    }

    fn aprs(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_operator_sees_only_its_aprs() {
        let s = Scope::of(Role::Operator, &aprs(&["a"]), None);
        assert!(s.allows_apr(&apr("a", "r1")));
        assert!(!s.allows_apr(&apr("b", "r1")));
        assert_eq!(s.allows_apr_id("b"), Some(false));
    }

    #[test]
    fn a_gore_user_sees_only_its_region() {
        let s = Scope::of(Role::Gore, &[], Some("r1"));
        assert!(s.allows_apr(&apr("a", "r1")));
        assert!(!s.allows_apr(&apr("b", "r2")));
        assert!(s.allows_region("r1"));
        assert!(!s.allows_region("r2"));
        assert_eq!(s.allows_apr_id("a"), None);
    }

    #[test]
    fn engineers_and_admins_see_everything() {
        for role in [Role::Engineer, Role::Admin] {
            let s = Scope::of(role, &aprs(&["ignored"]), Some("ignored"));
            assert_eq!(s, Scope::All);
            assert!(s.allows_region("any"));
        }
    }

    #[test]
    fn scoped_callers_cannot_tell_unknown_aprs_from_forbidden_ones() {
        let op = Scope::of(Role::Operator, &aprs(&["a"]), None);
        assert_eq!(apr_access(&op, "zzz", None), AprAccess::Forbidden);
        assert_eq!(apr_access(&op, "a", None), AprAccess::NotFound);
        assert_eq!(
            apr_access(&op, "a", Some(&apr("a", "r"))),
            AprAccess::Allowed
        );
        let gore = Scope::of(Role::Gore, &[], Some("r1"));
        assert_eq!(apr_access(&gore, "zzz", None), AprAccess::Forbidden);
        assert_eq!(
            apr_access(&gore, "b", Some(&apr("b", "r2"))),
            AprAccess::Forbidden
        );
        assert_eq!(apr_access(&Scope::All, "zzz", None), AprAccess::NotFound);
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(matches!(
            check_password("123456789"),
            Err(Error::WeakPassword(_))
        ));
        assert!(matches!(
            check_password("          "),
            Err(Error::WeakPassword(_))
        ));
        assert!(check_password("correct horse").is_ok());
    }

    #[test]
    fn common_passwords_and_the_username_are_refused() {
        for p in ["password123", "Contraseña 123", "QWERTYUIOP", "1234567890"] {
            assert!(
                matches!(check_password(p), Err(Error::WeakPassword(m)) if m.contains("common")),
                "{p}"
            );
        }
        assert!(matches!(
            check_password_for("olga.perez", "olga.perez2025!"),
            Err(Error::WeakPassword(m)) if m.contains("username")
        ));
        assert!(matches!(
            check_password_for("olga.perez", "OLGA.PEREZ"),
            Err(Error::WeakPassword(_))
        ));
        assert!(check_password_for("olga.perez", "tanque-lleno-7").is_ok());
    }

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(password_matches(&h, "correct horse battery"));
        assert!(!password_matches(&h, "correct horse battery!"));
        assert!(!password_matches("not a phc string", "x"));
    }

    #[test]
    fn tokens_are_prefixed_random_hex() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert!(a.starts_with("apr_"));
        assert_eq!(sha256_hex(&a).len(), 64);
    }

    #[test]
    fn roles_need_the_scope_they_use() {
        assert!(check_scope(Role::Operator, &[], None).is_err());
        assert!(check_scope(Role::Gore, &[], None).is_err());
        assert!(check_scope(Role::Gore, &[], Some("r")).is_ok());
        assert!(check_scope(Role::Admin, &aprs(&["a"]), None).is_err());
        assert!(check_scope(Role::Gateway, &aprs(&["a"]), None).is_ok());
        assert_eq!("gore".parse::<Role>().unwrap(), Role::Gore);
        assert!("root".parse::<Role>().is_err());
    }
}
