//! Sensor firmware core for APR sites.
//!
//! `#![no_std]`, no allocator, generic over embedded-hal 1.0 (and
//! `embedded-io`, `embedded-storage`) traits and never naming a chip, so the
//! same code runs on a board, in the host site twin that drives the demo
//! fleet, and on an emulated Cortex-M3 (`firmware/qemu-selftest`).
//!
//! Decisions are pure state machines ([`scheduler`], [`aggregate`],
//! [`flow::Debouncer`], [`outbox`] over any flash); drivers are thin loops
//! around them, generic over the bus, and fail with one [`Error`] type
//! generic over the bus's error.
//!
//! # Layout
//! - [`identity`]: who the device is (APR id, device id), checked once.
//! - [`domain`]: instrument and reporting facts, with their sources.
//! - [`flow`]: macro-meter pulses, debounce, K-factor, flow over a window,
//!   a totaliser that survives restarts and counter wrap.
//! - [`analog`]: 4–20 mA instruments on an external ADC: shunt → mA, NAMUR
//!   NE 43 faults, two-point calibration.
//! - [`modbus_probe`]: a Modbus RTU water-quality probe with deadlines and
//!   distinct CRC / exception / timeout errors.
//! - [`scheduler`]: when to power, read and power off each instrument, and
//!   when to report.
//! - [`aggregate`]: spike-rejecting median or trimmed mean over an interval.
//! - [`report`]: turning a report interval's readings into SenML packs in a
//!   fixed buffer with the shared wire crate, one unique `bt` per pack.
//! - [`outbox`]: packs in NOR flash until the gateway acks their `bt`; the
//!   on-flash format and its invariants are in its doc.
//! - [`config`]: the retained `config` topic, validated before applied.
//! - [`error`]: the crate's [`Error`].
//! - [`ram_flash`]: a NOR flash in RAM that can lose power mid-write, for
//!   tests, the twin and the self-test.
//! - [`selftest`]: a reading's whole path, checked without hardware.
//! - `crc`: CRC-32 for flash records and saved state.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code, missing_docs)]

pub mod aggregate;
pub mod analog;
pub mod config;
mod crc;
pub mod domain;
pub mod error;
pub mod flow;
pub mod identity;
pub mod modbus_probe;
pub mod outbox;
pub mod ram_flash;
pub mod report;
pub mod scheduler;
pub mod selftest;

pub use error::Error;
pub use identity::Identity;
pub use report::{Report, ReportError, Sample, SampleValue};
