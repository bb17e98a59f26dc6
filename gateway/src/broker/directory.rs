//! Who may connect to the embedded broker: device MQTT usernames with the
//! SHA-256 of their passwords, and what each device may publish and subscribe.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apr_wire::ingest::GatewayDevice;
use apr_wire::topic::{topic, Channel};
use sha2::{Digest, Sha256};
use tracing::warn;

/// What an authenticated device may do: publish its own `up` and `status`,
/// subscribe to its own `config` and `ack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGrant {
    /// The MQTT username the device connected with.
    pub username: String,
    /// APR id.
    pub apr: String,
    /// Device id.
    pub device: String,
    up: String,
    status: String,
    config: String,
    ack: String,
}

impl DeviceGrant {
    /// The grant of one device.
    pub fn new(username: &str, apr: &str, device: &str) -> DeviceGrant {
        DeviceGrant {
            username: username.to_string(),
            apr: apr.to_string(),
            device: device.to_string(),
            up: topic(apr, device, Channel::Up),
            status: topic(apr, device, Channel::Status),
            config: topic(apr, device, Channel::Config),
            ack: topic(apr, device, Channel::Ack),
        }
    }

    /// Whether the device may publish on `topic` (its own `up` or `status`).
    pub fn may_publish(&self, topic: &[u8]) -> bool {
        topic == self.up.as_bytes() || topic == self.status.as_bytes()
    }

    /// Whether `topic` is the device's own `status` (the only allowed will).
    pub fn is_status_topic(&self, topic: &str) -> bool {
        topic == self.status
    }

    /// Whether the device may subscribe to `filter` (its own `config` or `ack`).
    pub fn may_subscribe(&self, filter: &str) -> bool {
        filter == self.config || filter == self.ack
    }
}

/// SHA-256 of a password, hex: the form [`GatewayDevice::mqtt_password_sha256`] takes.
pub fn password_sha256(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

struct Entry {
    grant: Arc<DeviceGrant>,
    password_sha256: [u8; 32],
}

/// The devices allowed on the embedded broker, by MQTT username. Shared by
/// every gate connection; [`DeviceDirectory::replace`] swaps the whole set
/// at runtime (connections already up keep their grant).
#[derive(Default)]
pub struct DeviceDirectory {
    entries: RwLock<HashMap<String, Entry>>,
}

impl std::fmt::Debug for DeviceDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceDirectory")
            .field("devices", &self.len())
            .finish()
    }
}

/// Compares two digests in time independent of where they differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl DeviceDirectory {
    /// A directory of `devices`.
    pub fn new(devices: Vec<GatewayDevice>) -> DeviceDirectory {
        let d = DeviceDirectory::default();
        d.replace(devices);
        d
    }

    /// Replaces every device at once; returns how many were taken (a device
    /// whose ids or hash are invalid is skipped with a warning).
    pub fn replace(&self, devices: Vec<GatewayDevice>) -> usize {
        let mut map = HashMap::with_capacity(devices.len());
        for d in devices {
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(d.mqtt_password_sha256.trim(), &mut digest).is_err() {
                warn!(username = %d.mqtt_username, "device password hash is not 64 hex digits; device skipped");
                continue;
            }
            if !apr_wire::id::is_valid_id(&d.apr) || !apr_wire::id::is_valid_id(&d.device) {
                warn!(apr = %d.apr, device = %d.device, "device ids break the id rule; device skipped");
                continue;
            }
            map.insert(
                d.mqtt_username.clone(),
                Entry {
                    grant: Arc::new(DeviceGrant::new(&d.mqtt_username, &d.apr, &d.device)),
                    password_sha256: digest,
                },
            );
        }
        let n = map.len();
        *self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = map;
        n
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there is no device.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The grant of the device `username`, if `password` is its password.
    /// The comparison is constant-time, and an unknown username costs the
    /// same hash as a known one.
    pub fn authenticate(&self, username: &str, password: &str) -> Option<Arc<DeviceGrant>> {
        let presented: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let entries = self.read();
        match entries.get(username) {
            Some(e) if same_digest(&presented, &e.password_sha256) => Some(e.grant.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(username: &str, apr: &str, device: &str, password: &str) -> GatewayDevice {
        GatewayDevice {
            apr: apr.into(),
            device: device.into(),
            mqtt_username: username.into(),
            mqtt_password_sha256: password_sha256(password),
            report_interval_s: 60,
            config: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_device_authenticates_only_with_its_own_password() {
        let d = DeviceDirectory::new(vec![
            device("u1", "a1", "d1", "secret-1"),
            device("u2", "a1", "d2", "secret-2"),
        ]);
        assert_eq!(d.len(), 2);
        let g = d.authenticate("u1", "secret-1").unwrap();
        assert_eq!((g.apr.as_str(), g.device.as_str()), ("a1", "d1"));
        assert!(d.authenticate("u1", "secret-2").is_none());
        assert!(d.authenticate("u3", "secret-1").is_none());
        assert!(d.authenticate("", "").is_none());
    }

    #[test]
    fn replacing_the_directory_revokes_old_devices() {
        let d = DeviceDirectory::new(vec![device("u1", "a1", "d1", "p")]);
        assert_eq!(d.replace(vec![device("u2", "a1", "d2", "q")]), 1);
        assert!(d.authenticate("u1", "p").is_none());
        assert!(d.authenticate("u2", "q").is_some());
    }

    #[test]
    fn devices_with_a_bad_hash_or_bad_ids_are_skipped() {
        let mut bad_hash = device("u1", "a1", "d1", "p");
        bad_hash.mqtt_password_sha256 = "xyz".into();
        let bad_id = device("u2", "A1", "d1", "p");
        let d = DeviceDirectory::new(vec![bad_hash, bad_id, device("u3", "a1", "d3", "p")]);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_grant_allows_only_the_devices_own_topics() {
        let g = DeviceGrant::new("u", "a1", "d1");
        assert!(g.may_publish(b"apr/a1/d1/up"));
        assert!(g.may_publish(b"apr/a1/d1/status"));
        assert!(!g.may_publish(b"apr/a1/d2/up"));
        assert!(!g.may_publish(b"apr/a1/d1/ack"));
        assert!(!g.may_publish(b"apr/a1/+/up"));
        assert!(g.may_subscribe("apr/a1/d1/ack"));
        assert!(g.may_subscribe("apr/a1/d1/config"));
        assert!(!g.may_subscribe("apr/a1/d2/ack"));
        assert!(!g.may_subscribe("apr/a1/+/ack"));
        assert!(!g.may_subscribe("#"));
        assert!(g.is_status_topic("apr/a1/d1/status"));
    }
}
