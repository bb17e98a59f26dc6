//! The host site twin: a physical model of an APR site, simulated hardware
//! behind the embedded-hal traits so the firmware core's own drivers read
//! it, and devices that publish through MQTT exactly as boards will, with
//! the end-to-end acknowledgment of CONTRACT §2.
//!
//! Time is simulated: a model is stepped (at most 60 s at a time) and never
//! sleeps, so a week runs in a fraction of a second. Site conditions come
//! from the scenario library (`scenarios/*.toml`, [`scenario`]).
//!
//! # Layout
//! - [`clock`]: simulated time, America/Santiago local time by rule.
//! - [`demand`]: daily and weekly demand curve scaled by beneficiaries; leaks.
//! - [`site`]: pump capacity, tank mass balance, network pressure.
//! - [`quality`]: chlorine dosing and decay, turbidity, pH, conductivity.
//! - [`instruments`]: noise, offset, drift, NAMUR faults, loop currents.
//! - [`events`]: rain, power cuts, link outages, silent devices, faults.
//! - [`scenario`]: the scenario files, parsed and validated.
//! - [`model`]: the site stepped through time → truth and [`model::Signals`].
//! - [`hardware`]: simulated pins, ADS1115 (I2C) and Modbus probe (serial).
//! - [`board`]: a device: the core's drivers, scheduler and aggregation on
//!   the simulated hardware → report samples.
//! - [`uplink`]: the core's report encoding and flash outbox, delivery with acks.
//! - [`observe`]: a site run without MQTT, through a simulated gateway.
//! - [`device`]: one simulated device on MQTT: outbox, acks, resends.
//! - [`fleet`]: many sites: history first (backfilled), then live reporting.

pub mod board;
pub mod clock;
pub mod demand;
pub mod device;
pub mod events;
pub mod fleet;
pub mod hardware;
pub mod instruments;
pub mod model;
pub mod observe;
pub mod quality;
pub mod scenario;
pub mod site;
pub mod uplink;

pub use observe::{observe, Observation, RunOptions};
pub use scenario::Scenario;

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
    /// A scenario file that does not parse or holds a value out of range.
    #[error("scenario {file}: {reason}")]
    Scenario {
        /// The file (or built-in name).
        file: String,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// Simulated hardware or a core driver failed where it cannot.
    #[error("simulated hardware: {0}")]
    Hardware(String),
}
