//! The gateway's one error type.

use std::io;

use crate::forward::SinkError;
use crate::spool::SpoolError;

/// Why the gateway (or its embedded broker) could not start or carry on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file or an environment override is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A socket could not be bound, connected or used.
    #[error("{context}: {source}")]
    Io {
        /// What the gateway was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The embedded MQTT broker could not start.
    #[error("embedded broker: {0}")]
    Broker(String),
    /// The MQTT connection (TCP or the in-process link to the embedded
    /// broker) failed or refused a request.
    #[error("mqtt: {0}")]
    Link(String),
    /// The MQTT client refused a request (its event loop is gone).
    #[error("mqtt client: {0}")]
    Mqtt(#[from] rumqttc::ClientError),
    /// The spool failed.
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    /// The server sink could not be built.
    #[error("server sink: {0}")]
    Sink(#[from] SinkError),
    /// A gateway task panicked or was cancelled.
    #[error("gateway task failed: {0}")]
    Task(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<apr_wire::settings::SettingsError> for Error {
    fn from(e: apr_wire::settings::SettingsError) -> Self {
        Error::Config(e.0)
    }
}
