//! The root crate: ties the deployable parts together for the demo, and hosts
//! the end-to-end tests (`tests/`) and the load tool (`tests/load/`).
//!
//! # Layout
//! - [`demo`]: the whole stack in one process on embedded defaults.
//! - [`credentials`]: the demo logins, persisted in the data dir and written
//!   with `--credentials-out` in the CONTRACT §1 format.

pub mod credentials;
pub mod demo;
