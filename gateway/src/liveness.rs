//! Device liveness: is a device online?
//!
//! Two sources: the device's retained `status` (and its MQTT will, which the
//! broker publishes as `offline` when the connection dies), and silence: a
//! device that stays connected but sends nothing for `silent_intervals` of
//! its expected report interval (`report_interval_s` from the server's
//! device list) counts as offline. The decision is the pure [`is_online`];
//! the [`Tracker`] keeps what was seen and, on every check, reports each
//! change of the decision as a [`DeviceStatus`] for the next batch, so the
//! server stores the device's last status and can raise `device_offline`.

use std::collections::HashMap;
use std::sync::Mutex;

use apr_wire::ingest::{DeviceStatus, GatewayDevice};

/// What the gateway has seen of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// The last `status` (`true` online) and when it arrived, ms.
    pub status: Option<(bool, i64)>,
    /// When the last pack arrived, ms.
    pub last_pack_ms: Option<i64>,
}

/// Whether a device counts as online at `now_ms`; `None` if nothing was
/// ever seen of it.
///
/// - An `offline` status (or will) makes it offline until a pack arrives
///   after it.
/// - With an expected report interval, a device whose last sign of life
///   (pack or `online` status) is older than `silent_intervals` intervals is
///   offline.
/// - Otherwise it is online.
pub fn is_online(
    seen: &Seen,
    report_interval_s: Option<u32>,
    silent_intervals: u32,
    now_ms: i64,
) -> Option<bool> {
    let online_since = seen.status.filter(|(online, _)| *online).map(|(_, at)| at);
    let last_sign = match (online_since, seen.last_pack_ms) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    if let Some((false, at)) = seen.status {
        if seen.last_pack_ms.is_none_or(|p| p <= at) {
            return Some(false);
        }
    }
    let last_sign = last_sign?;
    match report_interval_s {
        Some(interval) if interval > 0 && silent_intervals > 0 => {
            let allowed = i64::from(interval) * 1000 * i64::from(silent_intervals);
            Some(now_ms - last_sign <= allowed)
        }
        _ => Some(true),
    }
}

#[derive(Debug, Default)]
struct Device {
    seen: Seen,
    interval_s: Option<u32>,
    /// What the server was last told (by a status message or by us).
    told: Option<bool>,
}

/// What was seen of every device, and what the server was told.
#[derive(Debug, Default)]
pub struct Tracker {
    devices: Mutex<HashMap<(String, String), Device>>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Device>> {
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A pack arrived from the device.
    pub fn heard(&self, apr: &str, device: &str, at_ms: i64) {
        let mut d = self.lock();
        let e = d.entry((apr.to_string(), device.to_string())).or_default();
        e.seen.last_pack_ms = Some(e.seen.last_pack_ms.map_or(at_ms, |t| t.max(at_ms)));
    }

    /// A status (or will) arrived; it goes to the server as it is.
    pub fn status(&self, apr: &str, device: &str, online: bool, at_ms: i64) {
        let mut d = self.lock();
        let e = d.entry((apr.to_string(), device.to_string())).or_default();
        e.seen.status = Some((online, at_ms));
        e.told = Some(online);
    }

    /// The expected report intervals, from the server's device list.
    pub fn set_intervals(&self, devices: &[GatewayDevice]) {
        let mut d = self.lock();
        for g in devices {
            d.entry((g.apr.clone(), g.device.clone()))
                .or_default()
                .interval_s = Some(g.report_interval_s);
        }
    }

    /// The changes of the decision since the last check, to send to the
    /// server; and how many of them are devices going silent.
    pub fn check(&self, silent_intervals: u32, now_ms: i64) -> (Vec<DeviceStatus>, u64) {
        let mut changes = Vec::new();
        let mut silent = 0;
        for ((apr, device), d) in self.lock().iter_mut() {
            let Some(online) = is_online(&d.seen, d.interval_s, silent_intervals, now_ms) else {
                continue;
            };
            if d.told == Some(online) {
                continue;
            }
            // A device never told about and online needs no message.
            if d.told.is_none() && online {
                d.told = Some(true);
                continue;
            }
            if !online {
                silent += 1;
            }
            d.told = Some(online);
            changes.push(DeviceStatus {
                apr: apr.clone(),
                device: device.clone(),
                online,
                at_ms: now_ms,
            });
        }
        (changes, silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn a_device_heard_within_its_intervals_is_online_and_silent_past_them_offline() {
        let seen = Seen {
            status: Some((true, 0)),
            last_pack_ms: Some(10 * MIN),
        };
        assert_eq!(is_online(&seen, Some(60), 3, 13 * MIN), Some(true));
        assert_eq!(is_online(&seen, Some(60), 3, 13 * MIN + 1), Some(false));
        assert_eq!(is_online(&seen, None, 3, 1000 * MIN), Some(true));
    }

    #[test]
    fn an_offline_status_or_will_holds_until_a_later_pack() {
        let mut seen = Seen {
            status: Some((false, 5 * MIN)),
            last_pack_ms: Some(4 * MIN),
        };
        assert_eq!(is_online(&seen, Some(60), 3, 5 * MIN), Some(false));
        seen.last_pack_ms = Some(6 * MIN);
        assert_eq!(is_online(&seen, Some(60), 3, 6 * MIN), Some(true));
        assert_eq!(is_online(&Seen::default(), Some(60), 3, 0), None);
    }

    #[test]
    fn the_tracker_reports_a_silent_device_once_and_its_return() {
        let t = Tracker::default();
        t.set_intervals(&[GatewayDevice {
            apr: "a1".into(),
            device: "d1".into(),
            mqtt_username: String::new(),
            mqtt_password_sha256: String::new(),
            report_interval_s: 60,
            config: serde_json::Value::Null,
        }]);
        t.heard("a1", "d1", 0);
        assert!(t.check(3, MIN).0.is_empty());
        let (changes, silent) = t.check(3, 4 * MIN);
        assert_eq!(silent, 1);
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].online);
        assert!(t.check(3, 5 * MIN).0.is_empty(), "reported once");
        t.heard("a1", "d1", 6 * MIN);
        let (changes, silent) = t.check(3, 6 * MIN);
        assert_eq!((changes.len(), silent), (1, 0));
        assert!(changes[0].online);
    }
}
