//! The gateway's configuration: a tree of `#[serde(default)]` structs whose
//! `Default` is the documented default, loaded from an optional TOML file with
//! `APR_GATEWAY__SECTION__KEY` environment overrides
//! ([`apr_wire::settings::load`]). [`configfile`] prints a commented template
//! generated from the live defaults, so the template never drifts from the code.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Prefix of the environment overrides (`APR_GATEWAY__SERVER__TOKEN=...`).
pub const ENV_PREFIX: &str = "APR_GATEWAY";

/// The whole gateway configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The gateway's id, as registered at the server (matches its token).
    pub id: String,
    /// The APRs whose devices this gateway serves.
    pub aprs: Vec<String>,
    /// The server batches are posted to.
    pub server: ServerConfig,
    /// The MQTT broker devices publish to.
    pub mqtt: MqttConfig,
    /// Batching and retrying towards the server.
    pub forward: ForwardConfig,
    /// Validation of device packs.
    pub validation: ValidationConfig,
    /// The spool between MQTT and the server.
    pub spool: SpoolConfig,
    /// The devices: config push and liveness.
    pub devices: DevicesConfig,
    /// The `/metrics` listener.
    pub metrics: MetricsConfig,
    /// The embedded MQTT broker for the site's devices (optional).
    pub broker: BrokerConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            id: "gateway".into(),
            aprs: Vec::new(),
            server: ServerConfig::default(),
            mqtt: MqttConfig::default(),
            forward: ForwardConfig::default(),
            validation: ValidationConfig::default(),
            spool: SpoolConfig::default(),
            devices: DevicesConfig::default(),
            metrics: MetricsConfig::default(),
            broker: BrokerConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// Loads the configuration from an optional TOML file and the environment.
    pub fn load(file: Option<&Path>) -> Result<GatewayConfig, Error> {
        Ok(apr_wire::settings::load(file, ENV_PREFIX)?)
    }
}

/// `[server]`: where batches go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Base URL of the server (`{url}/api/v1/ingest`).
    pub url: String,
    /// The gateway's bearer token.
    pub token: String,
    /// PEM CA file the server's certificate must chain to (`https://`
    /// URLs); empty: no HTTPS.
    pub ca_file: String,
    /// PEM client certificate presented to the server (mutual TLS).
    pub client_cert: String,
    /// PEM private key of `client_cert`.
    pub client_key: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            url: "http://127.0.0.1:8080".into(),
            token: String::new(),
            ca_file: String::new(),
            client_cert: String::new(),
            client_key: String::new(),
        }
    }
}

/// `[mqtt]`: the broker the devices publish to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Username (empty: anonymous).
    pub username: String,
    /// Password.
    pub password: String,
    /// MQTT client id (empty: `apr-gateway-{id}`).
    pub client_id: String,
    /// Keep-alive interval, seconds.
    pub keep_alive_s: u16,
    /// PEM CA file: connect with TLS, trusting only this CA; empty: plain MQTT.
    pub ca_file: String,
    /// When host:port and the login are those of an embedded broker in
    /// this same process (`[broker] listen`), talk to it in-process (no
    /// socket); false: always over TCP.
    pub in_process: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            username: String::new(),
            password: String::new(),
            client_id: String::new(),
            keep_alive_s: 30,
            ca_file: String::new(),
            in_process: true,
        }
    }
}

/// `[broker]`: the embedded MQTT broker (rumqttd behind the device gate) that
/// `apr-gateway run` starts for the site's devices when `listen` is set; the
/// gateway then reads from it instead of the broker of `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address devices connect to (`host:port`); empty: no embedded broker.
    pub listen: String,
    /// PEM certificate chain of the MQTT-over-TLS listener (with `tls_key`).
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// Allow plain MQTT on a non-loopback address (refused otherwise).
    pub allow_plaintext: bool,
    /// The device gate hands packets to rumqttd's router in-process (local
    /// links); `false`: a TCP connection per device to rumqttd's internal
    /// port, as before 2026-12-05 (kept to compare; see docs/SCALING.md).
    pub gate_in_process: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            allow_plaintext: false,
            gate_in_process: true,
        }
    }
}

/// `[forward]`: batching and retrying towards the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Most readings in one batch.
    pub max_batch_readings: usize,
    /// Longest wait for a batch to fill once data is there, milliseconds.
    /// 0 (the default): send at once; batches still form while the previous
    /// request is in flight, so a busy gateway sends full batches and an idle
    /// one adds no delay to the reading's path (and to the alert it raises).
    pub max_batch_delay_ms: u64,
    /// First retry delay after a failed batch, milliseconds.
    pub backoff_min_ms: u64,
    /// Longest retry delay, milliseconds (also the delay after a refused batch).
    pub backoff_max_ms: u64,
    /// Timeout of one request to the server, milliseconds.
    pub request_timeout_ms: u64,
    /// On shutdown, how long to keep flushing the spool to the server, milliseconds.
    pub shutdown_flush_ms: u64,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            max_batch_readings: 20_000,
            max_batch_delay_ms: 0,
            backoff_min_ms: 100,
            backoff_max_ms: 30_000,
            request_timeout_ms: 10_000,
            shutdown_flush_ms: 5_000,
        }
    }
}

impl ForwardConfig {
    pub(crate) fn batch_delay(&self) -> Duration {
        Duration::from_millis(self.max_batch_delay_ms)
    }
    pub(crate) fn backoff_min(&self) -> Duration {
        Duration::from_millis(self.backoff_min_ms)
    }
    pub(crate) fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms.max(self.backoff_min_ms))
    }
}

/// `[validation]`: rules applied to device packs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// How far ahead of arrival a reading's time may be, seconds.
    pub max_future_s: u32,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig { max_future_s: 300 }
    }
}

/// What a full spool does (`[spool] when_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Stop taking packs from MQTT until there is room: the broker holds
    /// them, devices keep them in their outboxes. Nothing is dropped.
    #[default]
    Block,
    /// Drop the oldest packs held, counting every dropped reading.
    DropOldest,
}

/// `[spool]`: the store between MQTT and the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the durable spool; empty: in memory (lost on restart,
    /// devices are then acknowledged only once the server stored a pack).
    pub dir: String,
    /// Most bytes held (on disk: segments and ledger; in memory: approximate).
    pub max_bytes: u64,
    /// What to do when full: `block` or `drop_oldest` (disk spool).
    pub when_full: WhenFull,
    /// Size at which a segment file is closed and a new one started (disk spool).
    pub segment_bytes: u64,
    /// Most packs held (in-memory spool).
    pub max_packs: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: String::new(),
            max_bytes: 256 * 1024 * 1024,
            when_full: WhenFull::Block,
            segment_bytes: 4 * 1024 * 1024,
            max_packs: 500_000,
        }
    }
}

/// `[devices]`: configuration push and liveness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// How often to fetch the devices from the server and publish changed
    /// retained `config`s, seconds (0: never).
    pub refresh_s: u64,
    /// A device silent for this many report intervals counts as offline.
    pub silent_intervals: u32,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            refresh_s: 300,
            silent_intervals: 3,
        }
    }
}

/// `[metrics]`: the gateway's own `/metrics` (Prometheus text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address (`host:port`); empty: no listener.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9184".into(),
        }
    }
}

/// A TOML value as written in a file.
fn v<T: Serialize>(value: &T) -> String {
    toml::Value::try_from(value).map_or_else(|_| "\"\"".into(), |v| v.to_string())
}

/// The commented configuration template, from the live defaults.
pub fn configfile() -> String {
    let c = GatewayConfig::default();
    format!(
        r#"# apr-gateway configuration. Every key is optional; shown are the defaults.
# Any key can be overridden from the environment:
# {ENV_PREFIX}__SERVER__TOKEN=... sets [server] token.

# The gateway's id, as registered at the server (must match its token).
id = {id}

# The APRs whose devices this gateway serves; it subscribes to
# apr/{{apr}}/+/up and apr/{{apr}}/+/status for each.
aprs = {aprs}

[server]
# Base URL of the server; batches go to {{url}}/api/v1/ingest.
url = {url}
# The gateway's bearer token.
token = {token}
# HTTPS: the PEM CA file the server's certificate must chain to (only this CA
# is trusted); use an https:// url with it.
ca_file = {server_ca_file}
# Mutual TLS: the PEM certificate and key this gateway presents, when the
# server requires client certificates ([http] client_ca there).
client_cert = {client_cert}
client_key = {client_key}

[mqtt]
# The broker the devices publish to.
host = {host}
port = {port}
# Credentials (empty: anonymous).
username = {username}
password = {password}
# MQTT client id (empty: apr-gateway-{{id}}).
client_id = {client_id}
# Keep-alive interval, seconds.
keep_alive_s = {keep_alive_s}
# MQTT over TLS: the PEM CA file the broker's certificate must chain to.
# Empty: plain MQTT.
ca_file = {mqtt_ca_file}
# With [broker] listen, the gateway reaches its own embedded broker
# in-process (no socket, fewer wake-ups per pack); false: over TCP.
in_process = {mqtt_in_process}

[forward]
# Most readings in one batch to the server.
max_batch_readings = {max_batch_readings}
# Longest wait for a batch to fill once data is there, milliseconds.
max_batch_delay_ms = {max_batch_delay_ms}
# Retry delays after a failed batch (exponential with jitter), milliseconds.
backoff_min_ms = {backoff_min_ms}
backoff_max_ms = {backoff_max_ms}
# Timeout of one request to the server, milliseconds.
request_timeout_ms = {request_timeout_ms}
# On shutdown, how long to keep flushing to the server, milliseconds.
shutdown_flush_ms = {shutdown_flush_ms}

[validation]
# How far ahead of arrival a reading's time may be, seconds.
max_future_s = {max_future_s}

[spool]
# The store between MQTT and the server. With a directory it is durable:
# length-prefixed, CRC-checked records in fsync'd segment files plus a ledger,
# and devices are acknowledged as soon as a pack is on disk. Empty: in memory,
# and devices are acknowledged only once the server stored the pack.
dir = {dir}
# Most bytes held (on disk: segments and ledger).
max_bytes = {max_bytes}
# When full: "block" (stop reading MQTT; devices keep their packs) or
# "drop_oldest" (drop the oldest packs; every dropped reading is counted).
when_full = {when_full}
# A segment file is closed at this size (disk spool).
segment_bytes = {segment_bytes}
# Most packs held (in-memory spool).
max_packs = {max_packs}

[devices]
# How often to fetch the devices from the server and publish each device's
# retained config when it changed, seconds (0: never).
refresh_s = {refresh_s}
# A device silent for this many report intervals is reported offline.
silent_intervals = {silent_intervals}

[metrics]
# Listen address of the gateway's /metrics (Prometheus text), read by
# `apr-gateway status`; empty: no listener.
listen = {listen}

[broker]
# An embedded MQTT broker for the site's devices (rumqttd behind the device
# gate: each device logs in with its own credentials, fetched from the server,
# and may use only its own topics). Address devices connect to; empty: none,
# the gateway reads from the broker of [mqtt] (e.g. mosquitto).
listen = {broker_listen}
# MQTT over TLS (rustls): PEM certificate chain and private key. Without them
# the broker speaks plain MQTT, which it does only on a loopback address
# unless allow_plaintext = true.
tls_cert = {broker_tls_cert}
tls_key = {broker_tls_key}
allow_plaintext = {broker_allow_plaintext}
# The device gate reaches the broker's router in-process; false: over TCP.
gate_in_process = {broker_gate_in_process}
"#,
        id = v(&c.id),
        aprs = v(&c.aprs),
        url = v(&c.server.url),
        token = v(&c.server.token),
        server_ca_file = v(&c.server.ca_file),
        client_cert = v(&c.server.client_cert),
        client_key = v(&c.server.client_key),
        host = v(&c.mqtt.host),
        port = v(&c.mqtt.port),
        username = v(&c.mqtt.username),
        password = v(&c.mqtt.password),
        client_id = v(&c.mqtt.client_id),
        keep_alive_s = v(&c.mqtt.keep_alive_s),
        mqtt_ca_file = v(&c.mqtt.ca_file),
        mqtt_in_process = v(&c.mqtt.in_process),
        max_batch_readings = v(&c.forward.max_batch_readings),
        max_batch_delay_ms = v(&c.forward.max_batch_delay_ms),
        backoff_min_ms = v(&c.forward.backoff_min_ms),
        backoff_max_ms = v(&c.forward.backoff_max_ms),
        request_timeout_ms = v(&c.forward.request_timeout_ms),
        shutdown_flush_ms = v(&c.forward.shutdown_flush_ms),
        max_future_s = v(&c.validation.max_future_s),
        dir = v(&c.spool.dir),
        max_packs = v(&c.spool.max_packs),
        max_bytes = v(&c.spool.max_bytes),
        when_full = v(&c.spool.when_full),
        segment_bytes = v(&c.spool.segment_bytes),
        refresh_s = v(&c.devices.refresh_s),
        silent_intervals = v(&c.devices.silent_intervals),
        listen = v(&c.metrics.listen),
        broker_listen = v(&c.broker.listen),
        broker_tls_cert = v(&c.broker.tls_cert),
        broker_tls_key = v(&c.broker.tls_key),
        broker_allow_plaintext = v(&c.broker.allow_plaintext),
        broker_gate_in_process = v(&c.broker.gate_in_process),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in t {
            let path = format!("{prefix}{k}");
            match v {
                toml::Value::Table(sub) => keys(sub, &format!("{path}."), out),
                _ => out.push(path),
            }
        }
    }

    #[test]
    fn the_template_parses_back_to_the_defaults() {
        let text = configfile();
        let parsed: GatewayConfig =
            apr_wire::settings::load_from(&text, "template", ENV_PREFIX, Vec::new()).unwrap();
        assert_eq!(parsed, GatewayConfig::default());
    }

    #[test]
    fn the_template_names_every_key() {
        let mut in_template = Vec::new();
        keys(
            &configfile().parse::<toml::Table>().unwrap(),
            "",
            &mut in_template,
        );
        let mut in_defaults = Vec::new();
        keys(
            &toml::Table::try_from(GatewayConfig::default()).unwrap(),
            "",
            &mut in_defaults,
        );
        in_template.sort();
        in_defaults.sort();
        assert_eq!(in_template, in_defaults);
    }

    #[test]
    fn environment_overrides_reach_nested_keys() {
        let c: GatewayConfig = apr_wire::settings::load_from(
            "aprs = [\"a1\"]\n",
            "f.toml",
            ENV_PREFIX,
            vec![
                ("APR_GATEWAY__SERVER__TOKEN".into(), "secret".into()),
                (
                    "APR_GATEWAY__FORWARD__MAX_BATCH_READINGS".into(),
                    "7".into(),
                ),
            ],
        )
        .unwrap();
        assert_eq!(c.aprs, ["a1"]);
        assert_eq!(c.server.token, "secret");
        assert_eq!(c.forward.max_batch_readings, 7);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = apr_wire::settings::load_from::<GatewayConfig>(
            "[forward]\nmax_batch = 1\n",
            "f.toml",
            ENV_PREFIX,
            Vec::new(),
        )
        .unwrap_err();
        assert!(e.0.contains("max_batch"), "{e}");
    }
}
