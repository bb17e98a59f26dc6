//! The host site twin: simulated APR sites whose devices run the firmware
//! core's reporting and publish through MQTT exactly as boards will, with the
//! end-to-end acknowledgment of CONTRACT §2 (a pack stays in the device's
//! outbox until the gateway names its `bt` on `ack`).
//!
//! The site model here is deliberately simple (diurnal demand scaled by
//! beneficiaries, a pump filling a tank, steady water quality with noise); the
//! physical twin with scenarios replaces [`model`] behind the same interface.
//!
//! # Layout
//! - [`model`]: a site's physical state stepped through time → samples per device role.
//! - [`device`]: one simulated device: MQTT connection, outbox, acks, resends.
//! - [`fleet`]: many sites: history first (backfilled), then live reporting.

pub mod device;
pub mod fleet;
pub mod model;

/// Errors of the site twin.
#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    /// An id that cannot be a topic level.
    #[error("invalid identity {apr}/{device}")]
    Identity {
        /// APR id.
        apr: String,
        /// Device id.
        device: String,
    },
    /// A pack could not be encoded.
    #[error("cannot encode a pack for {apr}/{device}: {reason}")]
    Encode {
        /// APR id.
        apr: String,
        /// Device id.
        device: String,
        /// What went wrong.
        reason: String,
    },
    /// The MQTT client's request queue is closed.
    #[error("MQTT client for {0} stopped")]
    ClientStopped(String),
}
