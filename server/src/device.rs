//! Devices and their MQTT credentials.
//!
//! A device's MQTT password is a random 128-bit secret, so the registry keeps
//! only its SHA-256 (a slow hash buys nothing for a random secret); the gateway
//! gets the hash to check the device's `CONNECT`.

use apr_wire::id::is_valid_id;

use crate::auth::sha256_hex;
use crate::error::{Error, Result};
use crate::store::{DeviceUpsert, Registry};

/// Reporting interval given to a device when none is said, seconds.
pub const DEFAULT_REPORT_INTERVAL_S: u32 = 60;

/// MQTT credentials of a device, shown once when created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceCredentials {
    /// MQTT username.
    pub mqtt_username: String,
    /// MQTT password (plain; only its SHA-256 is stored).
    pub mqtt_password: String,
}

/// The `config` pushed to a device when the caller gives none.
pub fn default_config(report_interval_s: u32) -> serde_json::Value {
    serde_json::json!({ "report_interval_s": report_interval_s })
}

/// The MQTT username of a device: `{apr}/{device}`, so a mosquitto ACL pattern
/// (`pattern write apr/%u/up`, see `gateway/mosquitto/acl`) confines it to its subtree.
pub fn mqtt_username(apr: &str, device: &str) -> String {
    format!("{apr}/{device}")
}

/// A fresh random MQTT password (128 bits, hex).
pub fn generate_password() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Creates or updates a device with the given credentials; the password is
/// stored as its SHA-256.
pub fn upsert_device<R: Registry + ?Sized>(
    registry: &R,
    apr: &str,
    device: &str,
    mqtt_username: &str,
    mqtt_password: &str,
    report_interval_s: u32,
    config: serde_json::Value,
) -> Result<()> {
    for (what, id) in [("APR", apr), ("device", device)] {
        if !is_valid_id(id) {
            return Err(Error::Invalid(format!(
                "{what} id '{id}' must match ^[a-z0-9][a-z0-9-]{{0,63}}$"
            )));
        }
    }
    if mqtt_username.is_empty() || mqtt_password.is_empty() {
        return Err(Error::Invalid(format!(
            "device '{device}' of APR '{apr}': MQTT username and password must not be empty"
        )));
    }
    if report_interval_s == 0 {
        return Err(Error::Invalid(format!(
            "device '{device}' of APR '{apr}': report interval must be at least 1 s"
        )));
    }
    registry.upsert_device(&DeviceUpsert {
        apr: apr.to_owned(),
        device: device.to_owned(),
        mqtt_username: mqtt_username.to_owned(),
        mqtt_password_sha256: sha256_hex(mqtt_password),
        report_interval_s,
        config,
    })
}

/// Creates (or re-keys) a device with generated credentials and the default
/// config; answers the credentials.
pub fn add_device<R: Registry + ?Sized>(
    registry: &R,
    apr: &str,
    device: &str,
    report_interval_s: u32,
) -> Result<DeviceCredentials> {
    let creds = DeviceCredentials {
        mqtt_username: mqtt_username(apr, device),
        mqtt_password: generate_password(),
    };
    upsert_device(
        registry,
        apr,
        device,
        &creds.mqtt_username,
        &creds.mqtt_password,
        report_interval_s,
        default_config(report_interval_s),
    )?;
    Ok(creds)
}

/// A device as the audit log shows it (never its password or hash).
pub fn audit_view<R: Registry + ?Sized>(
    registry: &R,
    apr: &str,
    device: &str,
) -> crate::error::Result<Option<serde_json::Value>> {
    Ok(registry
        .devices(Some(&[apr.to_owned()]))?
        .into_iter()
        .find(|d| d.device == device)
        .map(|d| {
            serde_json::json!({
                "apr": d.apr,
                "device": d.device,
                "mqtt_username": d.mqtt_username,
                "report_interval_s": d.report_interval_s,
            })
        }))
}
