//! Config push and the liveness check.
//!
//! Every `[devices] refresh_s` the gateway asks the server for the devices of
//! its APRs ([`Sink::devices`], `GET /api/v1/gateway/devices`), publishes each
//! device's retained `apr/{apr}/{device}/config` when it differs from what it
//! published last ([`changed_configs`], pure), refreshes the embedded
//! broker's [`DeviceDirectory`] when there is one, and takes the expected
//! report intervals for the liveness check. Every second it runs the check
//! ([`crate::liveness`]) and queues the changes for the server.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use apr_wire::ingest::GatewayDevice;
use apr_wire::topic::{topic, Channel};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::broker::DeviceDirectory;
use crate::config::DevicesConfig;
use crate::forward::{Sink, StatusQueue};
use crate::liveness::Tracker;
use crate::stats::Counters;
use crate::uplink::{flag_set, now_ms};

/// The retained configs to publish: (topic, payload) of each device whose
/// config differs from `published` (topic → payload), which is updated.
pub fn changed_configs(
    devices: &[GatewayDevice],
    published: &mut HashMap<String, String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in devices {
        if d.config.is_null() {
            continue;
        }
        let t = topic(&d.apr, &d.device, Channel::Config);
        let payload = d.config.to_string();
        if published.get(&t) != Some(&payload) {
            published.insert(t.clone(), payload.clone());
            out.push((t, payload));
        }
    }
    out
}

pub(crate) struct DeviceTasks<K> {
    pub config: DevicesConfig,
    pub aprs: Vec<String>,
    pub sink: Arc<K>,
    pub client: crate::mqtt::Client,
    pub directory: Option<Arc<DeviceDirectory>>,
    pub tracker: Arc<Tracker>,
    pub statuses: Arc<StatusQueue>,
    pub counters: Arc<Counters>,
}

impl<K: Sink> DeviceTasks<K> {
    pub async fn run(self, mut closing: watch::Receiver<bool>) {
        let mut published: HashMap<String, String> = HashMap::new();
        let refresh =
            (self.config.refresh_s > 0).then(|| Duration::from_secs(self.config.refresh_s));
        let mut next_refresh = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = flag_set(&mut closing) => return,
                _ = tick.tick() => {}
            }
            if let Some(every) = refresh {
                if tokio::time::Instant::now() >= next_refresh {
                    next_refresh = tokio::time::Instant::now() + every;
                    self.refresh(&mut published).await;
                }
            }
            let (changes, silent) = self.tracker.check(self.config.silent_intervals, now_ms());
            if silent > 0 {
                self.counters.devices_silent.fetch_add(silent, Relaxed);
            }
            for s in changes {
                if s.online {
                    info!(apr = %s.apr, device = %s.device, "device reporting again");
                } else {
                    warn!(apr = %s.apr, device = %s.device, "device silent for {} report intervals: reported offline", self.config.silent_intervals);
                }
                self.statuses.push(s);
            }
        }
    }

    async fn refresh(&self, published: &mut HashMap<String, String>) {
        let devices = match self.sink.devices().await {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                debug!(error = %e, "cannot fetch the devices from the server; keeping what we have");
                return;
            }
        };
        let devices: Vec<GatewayDevice> = devices
            .into_iter()
            .filter(|d| self.aprs.contains(&d.apr))
            .collect();
        self.tracker.set_intervals(&devices);
        if let Some(dir) = &self.directory {
            dir.replace(devices.clone());
        }
        for (t, payload) in changed_configs(&devices, published) {
            match self
                .client
                .publish(t.clone(), bytes::Bytes::from(payload), true)
                .await
            {
                Ok(()) => {
                    self.counters.configs_published.fetch_add(1, Relaxed);
                    debug!(topic = %t, "config published");
                }
                Err(e) => {
                    published.remove(&t);
                    warn!(topic = %t, error = %e, "cannot publish a device config");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(device: &str, config: serde_json::Value) -> GatewayDevice {
        GatewayDevice {
            apr: "a1".into(),
            device: device.into(),
            mqtt_username: String::new(),
            mqtt_password_sha256: String::new(),
            report_interval_s: 60,
            config,
        }
    }

    #[test]
    fn a_config_is_published_once_and_again_only_when_it_changes() {
        let mut published = HashMap::new();
        let a = [
            dev("d1", serde_json::json!({"report_interval_s": 60})),
            dev("d2", serde_json::Value::Null),
        ];
        let first = changed_configs(&a, &mut published);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, "apr/a1/d1/config");
        assert!(changed_configs(&a, &mut published).is_empty());
        let b = [dev("d1", serde_json::json!({"report_interval_s": 30}))];
        assert_eq!(changed_configs(&b, &mut published).len(), 1);
    }
}
