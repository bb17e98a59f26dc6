//! The crate's one error type. Every failure says what went wrong and where
//! (which parameter, which line of which file, which APR), because the message
//! reaches a person: an operator at the CLI or a dashboard developer reading a
//! JSON error. The HTTP status and the stable `code` of each variant are mapped
//! in one place, `api::error`.

use std::fmt;

/// Anything that can go wrong in the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query parameter is missing, unknown or has a bad value.
    #[error("{0}")]
    InvalidQuery(String),
    /// A request body is not what the route takes.
    #[error("{0}")]
    InvalidBody(String),
    /// A raw readings query would return too many points.
    #[error("{0}")]
    TooManyPoints(String),
    /// A value given to a library function or the CLI is not acceptable
    /// (an id that breaks the id rule, an unknown role, a missing scope).
    #[error("{0}")]
    Invalid(String),
    /// A password that does not meet the policy.
    #[error("{0}")]
    WeakPassword(String),
    /// No credentials, or credentials that name nobody.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials, but the thing asked for is outside the caller's scope
    /// or role.
    #[error("{0}")]
    Forbidden(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but does not take this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The thing to create exists already.
    #[error("{0}")]
    Conflict(String),
    /// A request body larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A fleet file that cannot be imported.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// A configuration that cannot be loaded.
    #[error("configuration: {0}")]
    Config(String),
    /// The embedded store failed.
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The server cannot serve now (the store's writer stopped, a task died).
    #[error("{0}")]
    Unavailable(String),
}

/// A line of a fleet file that cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetError {
    /// The file (or other origin) the line came from.
    pub origin: String,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column number and the column's name, when one column is at fault.
    pub column: Option<(usize, &'static str)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.origin, self.line)?;
        if let Some((n, name)) = self.column {
            write!(f, ", column {n} ({name})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for FleetError {}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
