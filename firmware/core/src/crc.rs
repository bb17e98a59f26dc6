//! Checksums, from the shared wire crate (one implementation for the
//! firmware's outbox and totaliser, and the gateway's spool).

pub use apr_wire::checksum::{crc32, Crc32};
