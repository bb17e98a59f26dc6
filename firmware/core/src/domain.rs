//! Instrument and reporting facts the firmware relies on, each with its source
//! (shared `DOMAIN.md`). Values marked *default* are configurable per site.

/// NAMUR NE 43: a 4–20 mA loop current below this (mA) signals a sensor fault
/// (open loop, failed transmitter), never a value.
pub const NAMUR_FAULT_BELOW_MA: f32 = 3.6;

/// NAMUR NE 43: a loop current above this (mA) signals a sensor fault (short
/// circuit, failed transmitter), never a value.
pub const NAMUR_FAULT_ABOVE_MA: f32 = 21.0;

/// Turbidity probe timing as data loggers apply it (`DOMAIN.md`,
/// Instruments): warm-up, stabilisation, measurement, in seconds. *Default*.
pub const TURBIDITY_TIMING_S: (u32, u32, u32) = (8, 40, 4);

/// Shortest report interval a remote configuration may set, seconds.
pub const REPORT_INTERVAL_MIN_S: u32 = 10;

/// Longest report interval a remote configuration may set, seconds.
pub const REPORT_INTERVAL_MAX_S: u32 = 3600;

/// Report interval before any remote configuration, seconds. *Default*:
/// night-flow analysis needs readings at ≤ 15-minute intervals (`DOMAIN.md`),
/// so the default stays well inside that.
pub const REPORT_INTERVAL_DEFAULT_S: u32 = 300;

/// Litres per pulse of a macro-meter before configuration (`DOMAIN.md`: e.g.
/// 1 L/pulse). *Default*: the K-factor is per meter.
pub const K_FACTOR_DEFAULT_L_PER_PULSE: f32 = 1.0;
