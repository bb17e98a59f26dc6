//! Counters of the uplink path, kept in atomics by the tasks and read as a
//! [`GatewayStats`] snapshot by the root demo and a future `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use apr_wire::validate::RefusalReason;
use serde::Serialize;

use crate::forward::Mode;
use crate::spool::{SpoolDepth, SpoolHealth};

/// The live counters (shared by the uplink, forwarder and acker tasks).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub packs_received: AtomicU64,
    pub readings_accepted: AtomicU64,
    pub refused: [AtomicU64; RefusalReason::ALL.len()],
    pub statuses_received: AtomicU64,
    pub statuses_invalid: AtomicU64,
    pub batches_forwarded: AtomicU64,
    pub packs_forwarded: AtomicU64,
    pub forward_errors: AtomicU64,
    pub acks_published: AtomicU64,
    pub mqtt_connections: AtomicU64,
    /// The connection is the in-process link ([`crate::mqtt`]).
    pub mqtt_in_process: std::sync::atomic::AtomicBool,
    pub readings_forwarded: AtomicU64,
    /// When the server last stored a batch, ms since the epoch (0: never).
    pub last_delivery_ms: AtomicU64,
    /// The forwarder's [`Mode`] code.
    pub mode: AtomicU64,
    pub configs_published: AtomicU64,
    pub devices_silent: AtomicU64,
}

impl Counters {
    pub fn mode(&self) -> Mode {
        match self.mode.load(Relaxed) {
            1 => Mode::CatchUp,
            2 => Mode::Offline,
            _ => Mode::Live,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode.code(), Relaxed);
    }

    pub fn refuse(&self, reason: RefusalReason) {
        if let Some(i) = RefusalReason::ALL.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Relaxed);
        }
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Relaxed);
    }

    pub fn snapshot(&self, spool: SpoolDepth, health: SpoolHealth) -> GatewayStats {
        GatewayStats {
            packs_received: self.packs_received.load(Relaxed),
            readings_accepted: self.readings_accepted.load(Relaxed),
            refused: RefusalReason::ALL
                .iter()
                .zip(&self.refused)
                .map(|(r, c)| (*r, c.load(Relaxed)))
                .collect(),
            statuses_received: self.statuses_received.load(Relaxed),
            statuses_invalid: self.statuses_invalid.load(Relaxed),
            batches_forwarded: self.batches_forwarded.load(Relaxed),
            packs_forwarded: self.packs_forwarded.load(Relaxed),
            forward_errors: self.forward_errors.load(Relaxed),
            acks_published: self.acks_published.load(Relaxed),
            mqtt_connections: self.mqtt_connections.load(Relaxed),
            mqtt_in_process: self.mqtt_in_process.load(Relaxed),
            readings_forwarded: self.readings_forwarded.load(Relaxed),
            last_delivery_ms: match self.last_delivery_ms.load(Relaxed) {
                0 => None,
                t => i64::try_from(t).ok(),
            },
            mode: self.mode(),
            configs_published: self.configs_published.load(Relaxed),
            devices_silent: self.devices_silent.load(Relaxed),
            spool,
            spool_health: health,
        }
    }
}

/// A snapshot of the gateway's counters (monotonic since start, except `spool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayStats {
    /// Publishes received on `up` topics (including refused ones).
    pub packs_received: u64,
    /// Readings accepted by validation.
    pub readings_accepted: u64,
    /// Refusals (of packs or records) by reason; every reason is present.
    pub refused: BTreeMap<RefusalReason, u64>,
    /// `online` / `offline` statuses received.
    pub statuses_received: u64,
    /// Status payloads that were neither `online` nor `offline`.
    pub statuses_invalid: u64,
    /// Batches the server acknowledged.
    pub batches_forwarded: u64,
    /// Packs in those batches.
    pub packs_forwarded: u64,
    /// Failed attempts to forward a batch (each retry counts).
    pub forward_errors: u64,
    /// `ack` messages published to devices (one per device per batch).
    pub acks_published: u64,
    /// Successful MQTT connections (1 + reconnects).
    pub mqtt_connections: u64,
    /// Whether the MQTT connection is the in-process link to an embedded
    /// broker of this process (no socket), rather than TCP.
    pub mqtt_in_process: bool,
    /// Readings in the batches the server acknowledged.
    pub readings_forwarded: u64,
    /// When the server last stored a batch, ms since the Unix epoch.
    pub last_delivery_ms: Option<i64>,
    /// The forwarder's mode now.
    pub mode: Mode,
    /// Retained `config` messages published to devices.
    pub configs_published: u64,
    /// Times a device was reported offline for being silent.
    pub devices_silent: u64,
    /// What the spool holds now.
    pub spool: SpoolDepth,
    /// The spool's durability, disk use and losses.
    pub spool_health: SpoolHealth,
}

impl GatewayStats {
    /// All refusals, whatever the reason.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// Refusals of one reason.
    pub fn refused(&self, reason: RefusalReason) -> u64 {
        self.refused.get(&reason).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_list_every_refusal_reason_and_count_each_one() {
        let c = Counters::default();
        c.refuse(RefusalReason::Oversized);
        c.refuse(RefusalReason::Oversized);
        c.refuse(RefusalReason::TopicDenied);
        let s = c.snapshot(SpoolDepth::default(), SpoolHealth::default());
        assert_eq!(s.refused.len(), RefusalReason::ALL.len());
        assert_eq!(s.refused(RefusalReason::Oversized), 2);
        assert_eq!(s.refused(RefusalReason::TopicDenied), 1);
        assert_eq!(s.refused_total(), 3);
    }
}
