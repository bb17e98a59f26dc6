//! The device's const configuration block: who it is, where its broker is,
//! its credentials and the wiring facts a build must know.
//!
//! # Provisioning
//!
//! Each board gets its own image. The values below are the defaults of a
//! bench build; a per-device build sets them from the environment, which is
//! read at compile time (`option_env!`) and checked at compile time (a bad
//! id or address fails the build, not the board):
//!
//! ```text
//! APR_ID=los-aromos APR_DEVICE=caseta \
//! APR_MQTT_BROKER=192.168.1.10 APR_MQTT_USER=los-aromos-caseta \
//! APR_MQTT_PASSWORD='…' firmware/board/build.sh
//! ```
//!
//! The gateway's device directory holds the same user and the SHA-256 of the
//! password (`apr_gateway::broker::password_sha256`); the password lives
//! only in the image, which the installer flashes and then protects with
//! flash read-out protection level 1 (README, "Provisioning").
//!
//! Everything a site may want to change later (report interval, K-factor,
//! calibrations) comes from the retained `config` topic instead, so one image
//! serves a device for its life.

/// `option_env!` with a default, usable in a `const`.
macro_rules! env_or {
    ($var:literal, $default:expr) => {
        match option_env!($var) {
            Some(v) => v,
            None => $default,
        }
    };
}

/// APR id (`^[a-z0-9][a-z0-9-]{0,63}$`).
pub const APR_ID: &str = checked_id(env_or!("APR_ID", "los-aromos"));
/// Device id, unique within the APR.
pub const DEVICE_ID: &str = checked_id(env_or!("APR_DEVICE", "caseta"));

/// The site broker (the gateway host), IPv4.
pub const MQTT_BROKER: [u8; 4] = parse_ipv4(env_or!("APR_MQTT_BROKER", "192.168.1.10"));
/// The site broker's port.
pub const MQTT_PORT: u16 = parse_u16(env_or!("APR_MQTT_PORT", "1883"));
/// MQTT username, as in the gateway's device directory.
pub const MQTT_USER: &str = env_or!("APR_MQTT_USER", "los-aromos-caseta");
/// MQTT password.
pub const MQTT_PASSWORD: &str = env_or!("APR_MQTT_PASSWORD", "bench-only-password");
/// SNTP server; `0.0.0.0` means "the one DHCP names, else the broker host".
pub const NTP_SERVER: [u8; 4] = parse_ipv4(env_or!("APR_NTP_SERVER", "0.0.0.0"));

/// The macro-meter's litres per pulse until the retained `config` says
/// otherwise, in millilitres (an integer, so it can be checked at compile
/// time).
pub const K_FACTOR_ML_PER_PULSE: u32 = parse_u32(env_or!("APR_K_FACTOR_ML_PER_PULSE", "10000"));

/// Modbus unit address of the water-quality probe.
pub const PROBE_UNIT: u8 = 1;
/// Probe line speed, baud (8N1).
pub const PROBE_BAUD: u32 = 9_600;

/// Supply voltage divider on the battery sense input: (top + bottom) / bottom
/// (100 kΩ over 10 kΩ: 36 V reads as 3.27 V).
pub const BATTERY_DIVIDER: f32 = 11.0;

const fn checked_id(id: &str) -> &str {
    let b = id.as_bytes();
    assert!(!b.is_empty() && b.len() <= 64, "an id is 1-64 characters");
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let ok = c.is_ascii_lowercase() || c.is_ascii_digit() || (c == b'-' && i > 0);
        assert!(ok, "an id matches ^[a-z0-9][a-z0-9-]{{0,63}}$");
        i += 1;
    }
    id
}

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    assert!(!b.is_empty() && b.len() <= 9, "a number of 1-9 digits");
    let mut v = 0u32;
    let mut i = 0;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "digits only");
        v = v * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    v
}

const fn parse_u16(s: &str) -> u16 {
    let v = parse_u32(s);
    assert!(v > 0 && v <= u16::MAX as u32, "a port is 1-65535");
    v as u16
}

const fn parse_ipv4(s: &str) -> [u8; 4] {
    let b = s.as_bytes();
    let mut out = [0u8; 4];
    let (mut part, mut digits, mut acc, mut i) = (0usize, 0u32, 0u32, 0usize);
    while i <= b.len() {
        if i == b.len() || b[i] == b'.' {
            assert!(
                digits > 0 && acc <= 255 && part < 4,
                "an IPv4 address a.b.c.d"
            );
            out[part] = acc as u8;
            part += 1;
            digits = 0;
            acc = 0;
        } else {
            assert!(
                b[i].is_ascii_digit() && digits < 3,
                "an IPv4 address a.b.c.d"
            );
            acc = acc * 10 + (b[i] - b'0') as u32;
            digits += 1;
        }
        i += 1;
    }
    assert!(part == 4, "an IPv4 address has four parts");
    out
}
