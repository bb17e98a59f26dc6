//! The wire format shared by the firmware, the site gateway and the server.
//!
//! Everything that crosses a process boundary is defined here once, after
//! `CONTRACT.md` §2: the metric table (name, unit, physically possible range),
//! the MQTT topic scheme `apr/{apr}/{device}/{up|status|config|ack}`, SenML
//! packs (RFC 8428) and the rules that accept or refuse each record.
//!
//! The crate is `no_std` without an allocator so the firmware core can encode
//! packs into a fixed buffer. The `std` feature adds decoding (JSON and CBOR),
//! validation into owned readings and the gateway → server batch types.
//!
//! # Layout
//! - [`metric`]: the metric table of CONTRACT §2.
//! - [`id`] and [`topic`]: identifier rules and topic parsing.
//! - [`checksum`]: CRC-32 and CRC-16/MODBUS (`no_std`).
//! - [`encode`]: SenML JSON encoder into a caller's buffer (`no_std`).
//! - `decode` (std): SenML JSON / CBOR into records, resolving base fields.
//! - `validate` (std): records of one pack → accepted readings + refusals.
//! - `ingest` (std): the batch a gateway posts to the server, and its answer.
//! - `settings` (std): TOML config files with environment overrides, shared by
//!   every deployable part so they all read config the same way.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code, missing_docs)]

pub mod checksum;
pub mod encode;
pub mod id;
pub mod metric;
pub mod topic;

#[cfg(feature = "std")]
pub mod decode;
#[cfg(feature = "std")]
pub mod ingest;
#[cfg(feature = "std")]
pub mod settings;
#[cfg(feature = "std")]
pub mod validate;

pub use metric::Metric;

/// Largest payload accepted on an `up` topic (CONTRACT §2: oversized is > 16 KiB).
pub const MAX_PACK_BYTES: usize = 16 * 1024;
