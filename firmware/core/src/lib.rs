//! Sensor firmware core for APR sites.
//!
//! `#![no_std]`, no allocator, generic over embedded-hal 1.0 traits and never
//! naming a chip, so the same code runs on a board and in the host site twin
//! that drives the demo fleet.
//!
//! # Layout
//! - [`identity`]: who the device is (APR id, device id), checked once.
//! - [`report`]: turning a report interval's readings into SenML packs in a
//!   fixed buffer with the shared wire crate, one unique `bt` per pack.
#![no_std]
#![deny(unsafe_code, missing_docs)]

pub mod identity;
pub mod report;

pub use identity::Identity;
pub use report::{Report, ReportError, Sample, SampleValue};
