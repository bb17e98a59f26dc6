//! Time on the board: a monotonic microsecond clock and a busy-wait delay,
//! both from the Cortex-M cycle counter (DWT CYCCNT), and the wall clock
//! (Unix seconds) once SNTP has answered.
//!
//! CYCCNT is 32 bits and wraps every 2³² cycles (44.7 s at 96 MHz);
//! [`Monotonic::now_us`] extends it to 64 bits, which holds as long as it is
//! called at least once per wrap. The main loop calls it every pass, and a
//! pass that took longer than the watchdog period (8 s) resets the chip.

use cortex_m::peripheral::DWT;
use embedded_hal::delay::DelayNs;

/// Microseconds since boot.
pub struct Monotonic {
    cycles_per_us: u32,
    last: u32,
    cycles: u64,
}

impl Monotonic {
    /// A clock over a cycle counter running at `sysclk_hz` (a whole number
    /// of MHz). The cycle counter must be enabled.
    pub fn new(sysclk_hz: u32) -> Self {
        Monotonic {
            cycles_per_us: sysclk_hz / 1_000_000,
            last: DWT::cycle_count(),
            cycles: 0,
        }
    }

    /// Microseconds since [`Monotonic::new`].
    pub fn now_us(&mut self) -> u64 {
        let now = DWT::cycle_count();
        self.cycles += u64::from(now.wrapping_sub(self.last));
        self.last = now;
        self.cycles / u64::from(self.cycles_per_us)
    }
}

/// A busy-wait delay on the cycle counter; `Copy`, so every driver can own
/// one.
#[derive(Debug, Clone, Copy)]
pub struct CycleDelay {
    cycles_per_us: u32,
}

impl CycleDelay {
    /// A delay for a core clock of `sysclk_hz`.
    pub fn new(sysclk_hz: u32) -> Self {
        CycleDelay {
            cycles_per_us: sysclk_hz / 1_000_000,
        }
    }

    fn wait_cycles(cycles: u32) {
        let start = DWT::cycle_count();
        while DWT::cycle_count().wrapping_sub(start) < cycles {}
    }
}

impl DelayNs for CycleDelay {
    fn delay_ns(&mut self, ns: u32) {
        // Whole microseconds, rounded up; chunks of 1 s keep the product in
        // range.
        let mut us = ns.div_ceil(1_000);
        while us > 0 {
            let step = us.min(1_000_000);
            Self::wait_cycles(step * self.cycles_per_us);
            us -= step;
        }
    }
}

/// Unix time, once known: an SNTP answer pinned to the monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock {
    sync: Option<(f64, u64)>,
}

/// Seconds from the NTP era (1900) to the Unix epoch (1970).
const NTP_TO_UNIX_S: i64 = 2_208_988_800;

impl WallClock {
    /// Pins an NTP timestamp (64-bit fixed point, seconds since 1900 in the
    /// high half) received at monotonic `at_us`.
    pub fn set_from_ntp(&mut self, ntp_bits: u64, at_us: u64) {
        let secs = (ntp_bits >> 32) as u32;
        // RFC 4330 §3: with the top bit clear the time is in era 1 (2036-).
        let secs = if secs & 0x8000_0000 != 0 {
            i64::from(secs)
        } else {
            i64::from(secs) + (1i64 << 32)
        };
        let frac = (ntp_bits & 0xFFFF_FFFF) as f64 / 4_294_967_296.0;
        let unix = (secs - NTP_TO_UNIX_S) as f64 + frac;
        self.sync = Some((unix, at_us));
    }

    /// Unix seconds at monotonic `now_us`, if SNTP has answered.
    pub fn unix_s(&self, now_us: u64) -> Option<f64> {
        self.sync
            .map(|(unix, at)| unix + now_us.saturating_sub(at) as f64 / 1e6)
    }
}
