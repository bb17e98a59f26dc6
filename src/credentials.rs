//! The demo logins (CONTRACT §1 `--credentials-out` format), generated once
//! per data dir and kept there so a restarted demo keeps its logins.

use std::path::Path;

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Every demo login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    /// People (and their API tokens).
    pub users: Vec<UserLogin>,
    /// Devices an MQTT client may publish as.
    pub devices: Vec<DeviceLogin>,
    /// Gateway tokens (not part of the contract's file, kept in the data dir).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewayLogin>,
}

/// A person's login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserLogin {
    /// `operator`, `engineer`, `gore` or `admin`.
    pub role: String,
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
    /// API token.
    pub token: String,
    /// Operator's APRs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aprs: Option<Vec<String>>,
    /// GORE reviewer's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// A device's MQTT login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceLogin {
    /// APR id.
    pub apr: String,
    /// Device id.
    pub device: String,
    /// MQTT username (`{apr}/{device}`, so a mosquitto ACL pattern `apr/%u/up` fits).
    pub mqtt_username: String,
    /// MQTT password.
    pub mqtt_password: String,
}

/// A site gateway's identity and token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayLogin {
    /// Gateway id.
    pub gateway: String,
    /// The APR it serves.
    pub apr: String,
    /// Its API token.
    pub token: String,
}

impl Credentials {
    /// The user with `role`, if any.
    pub fn user(&self, role: &str) -> Option<&UserLogin> {
        self.users.iter().find(|u| u.role == role)
    }

    /// Reads credentials written by [`Credentials::save`].
    pub fn load(path: &Path) -> std::io::Result<Credentials> {
        let text = std::fs::read(path)?;
        serde_json::from_slice(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// Writes all credentials (gateways included), readable by the owner only.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_private(
            path,
            &serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )
    }

    /// Writes the CONTRACT §1 file: users and devices.
    pub fn save_contract(&self, path: &Path) -> std::io::Result<()> {
        let public = Credentials {
            users: self.users.clone(),
            devices: self.devices.clone(),
            gateways: Vec::new(),
        };
        write_private(
            path,
            &serde_json::to_vec_pretty(&public).map_err(std::io::Error::other)?,
        )
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A random secret of `len` letters and digits.
pub fn secret(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
