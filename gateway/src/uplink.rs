//! The MQTT side of the gateway: subscribe to the served APRs' `up` and
//! `status` topics, turn each publish into a validated [`IngestPack`] or a
//! [`DeviceStatus`], and append packs to the spool (waiting while it is full).
//!
//! The decision for one publish is the pure function [`intake`]; the loop
//! around it only polls the MQTT event loop, logs, counts and appends.
//!
//! - Subscriptions are QoS 1 and made again on every CONNACK (clean session).
//! - The incoming packet limit is [`MAX_PACKET_BYTES`], far above the 16 KiB
//!   pack limit: an oversized pack is refused by the validator with reason
//!   `oversized`, it does not break the connection.
//! - A topic that is not a device topic is counted and logged as
//!   `topic_denied`; a pack from an APR this gateway does not serve is
//!   forwarded as a `topic_denied` refusal (quarantine) without readings.
//! - Group commit: the loop hands packs to the [`spooler`] task over a
//!   bounded channel; the spooler appends everything that arrived while its
//!   previous append was syncing as one group ([`Spool::append_batch`]).
//!   With a durable spool it then names the packs on their devices' `ack`
//!   topics at once: they are on disk.
//! - Backpressure: while the spool is full the spooler waits, the channel
//!   fills and the loop stops polling, so the broker holds (or, past its
//!   limits, drops) the publishes. Nothing is
//!   lost for good: a device resends every pack whose `bt` it has not seen on
//!   `ack`. A long stall can outlast the MQTT keep-alive; the client then
//!   reconnects and subscribes again.
//! - Shutdown: unsubscribe, let the forwarder flush, publish the last acks,
//!   send DISCONNECT and read until the broker closes.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apr_wire::ingest::{quarantine_excerpt, DeviceStatus, IngestPack};
use apr_wire::topic::{Channel, DeviceTopic};
use apr_wire::validate::{validate_pack, PackContext, Refusal, RefusalReason};
use rumqttc::{AsyncClient, MqttOptions};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn, Instrument};

use crate::ack::DeviceAck;
use crate::broker::MAX_PACKET_BYTES;
use crate::config::GatewayConfig;
use crate::forward::StatusQueue;
use crate::mqtt::{Client, Connection, Event};
use crate::spool::Spool;
use crate::stats::Counters;

use crate::Error;

/// Capacity of the MQTT client's request channel (acks being published).
const REQUEST_CHANNEL: usize = 10_000;
/// Outgoing QoS 1 publishes (acks) in flight at once.
const INFLIGHT: u16 = 1_024;

/// What one publish becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    /// A pack for the spool (possibly with refusals, possibly without readings).
    Pack(IngestPack),
    /// A device went online or offline.
    Status(DeviceStatus),
    /// A status payload that is neither `online` nor `offline`.
    InvalidStatus {
        /// APR id.
        apr: String,
        /// Device id.
        device: String,
        /// The payload (excerpt).
        payload: String,
    },
    /// The topic is not a device topic: nothing to name in a pack.
    Unroutable {
        /// The topic as received.
        topic: String,
        /// Why it is not a device topic.
        error: String,
    },
    /// A gateway → device channel (`config`, `ack`): not ours to take.
    Ignored,
}

/// `online` → `true`, `offline` → `false` (surrounding whitespace allowed).
pub fn parse_status(payload: &[u8]) -> Option<bool> {
    match payload.trim_ascii() {
        b"online" => Some(true),
        b"offline" => Some(false),
        _ => None,
    }
}

/// The `bt` of a pack refused whole, when one can still be read: devices name
/// packs by `bt`, so even a refused pack is acknowledged and not resent forever.
fn best_effort_bt(payload: &[u8]) -> Option<f64> {
    #[derive(Deserialize)]
    struct Bt {
        bt: Option<f64>,
    }
    if let Ok(p) = apr_wire::decode::decode_pack(payload) {
        return p.base_time;
    }
    serde_json::from_slice::<Vec<Bt>>(payload)
        .ok()
        .and_then(|records| records.into_iter().next())
        .and_then(|first| first.bt)
}

/// Decides what a publish on `topic` becomes (pure: the clock and the served
/// APRs are passed in).
pub fn intake(
    topic: &str,
    payload: &[u8],
    served: &HashSet<String>,
    received_ms: i64,
    max_future_ms: i64,
) -> Intake {
    let t = match DeviceTopic::parse(topic) {
        Ok(t) => t,
        Err(e) => {
            return Intake::Unroutable {
                topic: topic.to_string(),
                error: e.to_string(),
            }
        }
    };
    if !served.contains(t.apr) {
        return Intake::Pack(IngestPack {
            apr: t.apr.to_string(),
            device: t.device.to_string(),
            bt: None,
            received_ms,
            readings: Vec::new(),
            refusals: vec![Refusal {
                reason: RefusalReason::TopicDenied,
                record: None,
                detail: format!(
                    "APR {:?} is not served by this gateway (topic {topic:?})",
                    t.apr
                ),
            }],
            raw: Some(quarantine_excerpt(payload)),
        });
    }
    match t.channel {
        Channel::Up => {
            let ctx = PackContext {
                apr: t.apr,
                device: t.device,
                received_ms,
                max_future_ms,
            };
            let outcome = validate_pack(payload, &ctx);
            let whole_refused = outcome.refusals.iter().any(|r| r.record.is_none());
            let bt = match outcome.base_time {
                None if whole_refused => best_effort_bt(payload),
                bt => bt,
            };
            let raw = (!outcome.refusals.is_empty()).then(|| quarantine_excerpt(payload));
            Intake::Pack(IngestPack {
                apr: t.apr.to_string(),
                device: t.device.to_string(),
                bt,
                received_ms,
                readings: outcome.readings,
                refusals: outcome.refusals,
                raw,
            })
        }
        Channel::Status => match parse_status(payload) {
            Some(online) => Intake::Status(DeviceStatus {
                apr: t.apr.to_string(),
                device: t.device.to_string(),
                online,
                at_ms: received_ms,
            }),
            None => Intake::InvalidStatus {
                apr: t.apr.to_string(),
                device: t.device.to_string(),
                payload: quarantine_excerpt(&payload[..payload.len().min(64)]),
            },
        },
        Channel::Config | Channel::Ack => Intake::Ignored,
    }
}

/// The subscriptions for the served APRs: `up` and `status` of every
/// device (QoS 1 over TCP; see [`crate::mqtt`] for the in-process link).
pub fn subscriptions(aprs: &[String]) -> Vec<String> {
    aprs.iter()
        .flat_map(|apr| [format!("apr/{apr}/+/up"), format!("apr/{apr}/+/status")])
        .collect()
}

/// The MQTT client options from `[mqtt]` (with `ca_file`: MQTT over TLS,
/// trusting only that CA).
pub fn mqtt_options(config: &GatewayConfig) -> Result<MqttOptions, Error> {
    let m = &config.mqtt;
    let client_id = if m.client_id.is_empty() {
        format!("apr-gateway-{}", config.id)
    } else {
        m.client_id.clone()
    };
    let mut o = MqttOptions::new(client_id, m.host.clone(), m.port);
    o.set_keep_alive(Duration::from_secs(u64::from(m.keep_alive_s.max(5))));
    if !m.username.is_empty() {
        o.set_credentials(m.username.clone(), m.password.clone());
    }
    // Oversized packs (> 16 KiB) must reach the validator to be refused with a
    // reason, not kill the connection.
    o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    o.set_inflight(INFLIGHT);
    o.set_clean_session(true);
    if let Some(ca) = apr_tls::configured(&m.ca_file) {
        let tls =
            apr_tls::client_config(ca, None).map_err(|e| Error::Config(format!("[mqtt]: {e}")))?;
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    Ok(o)
}

/// The connection to the broker of `[mqtt]`: in-process when it is an
/// embedded broker of this process (and `in_process` is on), else rumqttc
/// over TCP or TLS.
pub(crate) fn mqtt_client(config: &GatewayConfig) -> Result<(Connection, Client), Error> {
    let options = mqtt_options(config)?;
    if let Some(links) = crate::broker::in_process_broker(&config.mqtt) {
        return Ok(Connection::local(links, options.client_id()));
    }
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CHANNEL);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    Ok(Connection::tcp(client, eventloop))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Resolves when the watched flag is true (or its sender is gone).
pub(crate) async fn flag_set(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// The MQTT loop.
pub(crate) struct Uplink {
    pub client: Client,
    pub connection: Connection,
    pub filters: Vec<String>,
    pub served: HashSet<String>,
    pub max_future_ms: i64,
    /// To the spooler; `None` once closing.
    pub packs: Option<mpsc::Sender<IngestPack>>,
    pub statuses: Arc<StatusQueue>,
    pub counters: Arc<Counters>,
    /// Packs and statuses seen, for the liveness check.
    pub liveness: Arc<crate::liveness::Tracker>,
    /// True while subscribed (after a SUBACK, until the connection drops).
    pub ready: watch::Sender<bool>,
}

/// Most packs appended as one group.
const MAX_GROUP_PACKS: usize = 2_048;
/// Capacity of the channel from the MQTT loop to the spooler, in packs.
pub(crate) const SPOOLER_CHANNEL: usize = 4_096;

/// Appends packs to the spool in groups (one sync per group for a durable
/// spool) and, if the spool is durable, acknowledges them to their devices.
/// Ends when the MQTT loop closes its side and the channel is drained.
pub(crate) async fn spooler<S: Spool>(
    spool: Arc<S>,
    mut packs: mpsc::Receiver<IngestPack>,
    acks: mpsc::UnboundedSender<Vec<DeviceAck>>,
) -> Result<(), Error> {
    let durable = spool.durable();
    let mut group = Vec::with_capacity(64);
    loop {
        if packs.recv_many(&mut group, MAX_GROUP_PACKS).await == 0 {
            return Ok(());
        }
        let acked = durable.then(|| crate::ack::group_acks(&group));
        let n = group.len();
        let span = tracing::debug_span!("spool", packs = n);
        spool
            .append_batch(std::mem::take(&mut group))
            .instrument(span)
            .await?;
        if let Some(acked) = acked {
            if !acked.is_empty() && acks.send(acked).is_err() {
                debug!("the acknowledgment publisher is gone; devices will resend");
            }
        }
    }
}

impl Uplink {
    /// Runs until `closing`, then keeps the connection up until `acks_done`
    /// (the acknowledgments of the final flush are out) and disconnects.
    pub async fn run(
        mut self,
        mut closing: watch::Receiver<bool>,
        acks_done: oneshot::Receiver<()>,
    ) -> Result<(), Error> {
        let mut failures: u32 = 0;
        loop {
            let event = tokio::select! {
                biased;
                _ = flag_set(&mut closing) => break,
                e = self.connection.poll() => e,
            };
            match event {
                Ok(Event::Publish { topic, payload }) => {
                    failures = 0;
                    let topic = String::from_utf8_lossy(&topic);
                    if let Some(pack) = self.take(&topic, &payload) {
                        let Some(packs) = self.packs.clone() else {
                            break;
                        };
                        tokio::select! {
                            biased;
                            sent = packs.send(pack) => {
                                if sent.is_err() {
                                    return Err(Error::Task("the spooler stopped".into()));
                                }
                            }
                            _ = flag_set(&mut closing) => {
                                debug!("shutdown while the spool was full; the pack is not acknowledged and will be resent");
                                break;
                            }
                        }
                    }
                }
                Ok(Event::Connected { session_present }) => {
                    failures = 0;
                    self.counters.mqtt_connections.fetch_add(1, Relaxed);
                    let in_process = self.connection.is_in_process();
                    self.counters.mqtt_in_process.store(in_process, Relaxed);
                    info!(session_present, in_process, "connected to the MQTT broker");
                    self.subscribe();
                }
                Ok(Event::Subscribed { refused }) => {
                    if refused > 0 {
                        error!(refused, "the broker refused subscriptions; check the gateway's MQTT permissions");
                    }
                    self.ready.send_replace(true);
                }
                Ok(Event::Other) => {}
                Err(e) => {
                    self.ready.send_replace(false);
                    failures = failures.saturating_add(1);
                    let delay = crate::forward::backoff(
                        failures,
                        Duration::from_millis(200),
                        Duration::from_secs(5),
                        rand::random::<f64>(),
                    );
                    warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = flag_set(&mut closing) => break,
                    }
                }
            }
        }
        self.close(acks_done).await;
        Ok(())
    }

    fn subscribe(&self) {
        if self.filters.is_empty() {
            warn!("no APRs configured: the gateway subscribes to nothing");
            self.ready.send_replace(true);
            return;
        }
        let client = self.client.clone();
        let filters = self.filters.clone();
        tokio::spawn(async move {
            if let Err(e) = client.subscribe(&filters).await {
                error!(error = %e, "cannot subscribe");
            }
        });
    }

    /// Stops taking publishes, keeps the connection for the final acks, then
    /// disconnects cleanly.
    async fn close(mut self, mut acks_done: oneshot::Receiver<()>) {
        // The spooler appends what it has, acknowledges it and ends.
        self.packs = None;
        self.client.unsubscribe(&self.filters).await;
        let mut dropped = 0u64;
        let connected = *self.ready.borrow();
        if connected {
            loop {
                tokio::select! {
                    _ = &mut acks_done => break,
                    e = self.connection.poll() => match e {
                        Ok(Event::Publish { .. }) => dropped += 1,
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        } else {
            let _ = acks_done.await;
        }
        if dropped > 0 {
            info!(dropped, "publishes arriving during shutdown were not taken (not acknowledged; devices resend)");
        }
        if connected {
            // The acks are queued in the client; let them out and be
            // acknowledged by the broker, then say goodbye and read until the
            // broker closes (closing with unread data would reset the
            // connection and could lose the last acks).
            let connection = &mut self.connection;
            let client = &self.client;
            let goodbye = async {
                // Let the queued acks out (and be acknowledged), then say
                // goodbye.
                while !connection.is_flushed() {
                    if connection.poll().await.is_err() {
                        return;
                    }
                }
                connection.disconnect(client).await;
            };
            if tokio::time::timeout(crate::mqtt::GOODBYE_TIMEOUT, goodbye)
                .await
                .is_err()
            {
                warn!("the MQTT broker did not close the connection in time");
            }
        }
        self.ready.send_replace(false);
        info!("disconnected from the MQTT broker");
    }

    /// Decides, logs and counts one publish; returns the pack to spool.
    fn take(&self, topic: &str, payload: &[u8]) -> Option<IngestPack> {
        let received_ms = now_ms();
        match intake(
            topic,
            payload,
            &self.served,
            received_ms,
            self.max_future_ms,
        ) {
            Intake::Pack(pack) => {
                self.liveness.heard(&pack.apr, &pack.device, received_ms);
                let span = tracing::debug_span!("pack", apr = %pack.apr, device = %pack.device, bt = ?pack.bt);
                let _enter = span.enter();
                self.counters.packs_received.fetch_add(1, Relaxed);
                Counters::add(&self.counters.readings_accepted, pack.readings.len());
                for r in &pack.refusals {
                    self.counters.refuse(r.reason);
                    warn!(
                        apr = %pack.apr,
                        device = %pack.device,
                        bt = ?pack.bt,
                        reason = r.reason.code(),
                        record = ?r.record,
                        detail = %r.detail,
                        "refused"
                    );
                }
                debug!(readings = pack.readings.len(), "pack taken");
                Some(pack)
            }
            Intake::Status(status) => {
                self.counters.statuses_received.fetch_add(1, Relaxed);
                self.liveness
                    .status(&status.apr, &status.device, status.online, received_ms);
                debug!(apr = %status.apr, device = %status.device, online = status.online, "device status");
                self.statuses.push(status);
                None
            }
            Intake::InvalidStatus {
                apr,
                device,
                payload,
            } => {
                self.counters.statuses_invalid.fetch_add(1, Relaxed);
                warn!(%apr, %device, %payload, "status payload is neither online nor offline; ignored");
                None
            }
            Intake::Unroutable { topic, error } => {
                self.counters.packs_received.fetch_add(1, Relaxed);
                self.counters.refuse(RefusalReason::TopicDenied);
                warn!(%topic, %error, reason = RefusalReason::TopicDenied.code(), "refused: not a device topic");
                None
            }
            Intake::Ignored => {
                debug!(%topic, "not a device → gateway topic; ignored");
                None
            }
        }
    }
}

/// Publishes the acknowledgments the forwarder hands over (each group at
/// once: in-process, one router wake-up per group), until the forwarder is
/// gone; then reports on `done`.
pub(crate) async fn publish_acks(
    client: Client,
    mut acks: mpsc::UnboundedReceiver<Vec<DeviceAck>>,
    counters: Arc<Counters>,
    done: oneshot::Sender<()>,
) {
    while let Some(batch) = acks.recv().await {
        let span = tracing::debug_span!("ack", devices = batch.len());
        let messages: Vec<(String, bytes::Bytes)> = batch
            .into_iter()
            .map(|ack| {
                let payload = ack.payload();
                (ack.topic, payload)
            })
            .collect();
        let sent = client.publish_all(messages).instrument(span).await;
        Counters::add(&counters.acks_published, sent);
    }
    let _ = done.send(());
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_064_800_000;

    fn served() -> HashSet<String> {
        ["a1".to_string()].into()
    }

    fn pack_of(i: Intake) -> IngestPack {
        match i {
            Intake::Pack(p) => p,
            other => panic!("expected a pack, got {other:?}"),
        }
    }

    #[test]
    fn status_payloads_are_online_or_offline() {
        assert_eq!(parse_status(b"online"), Some(true));
        assert_eq!(parse_status(b" offline\n"), Some(false));
        assert_eq!(parse_status(b"Online"), None);
        assert_eq!(parse_status(b""), None);
        assert_eq!(parse_status(b"{\"online\":true}"), None);
    }

    #[test]
    fn a_status_publish_becomes_a_device_status() {
        let i = intake("apr/a1/d1/status", b"offline", &served(), NOW, 300_000);
        assert_eq!(
            i,
            Intake::Status(DeviceStatus {
                apr: "a1".into(),
                device: "d1".into(),
                online: false,
                at_ms: NOW
            })
        );
        assert!(matches!(
            intake("apr/a1/d1/status", b"maybe", &served(), NOW, 300_000),
            Intake::InvalidStatus { .. }
        ));
    }

    #[test]
    fn a_valid_pack_keeps_its_readings_and_no_raw_excerpt() {
        let p = pack_of(intake(
            "apr/a1/d1/up",
            br#"[{"bt":1764064800,"n":"flow","u":"l/s","v":2.4}]"#,
            &served(),
            NOW,
            300_000,
        ));
        assert_eq!(p.bt, Some(1_764_064_800.0));
        assert_eq!(p.readings.len(), 1);
        assert!(p.refusals.is_empty());
        assert_eq!(p.raw, None);
        assert_eq!(p.received_ms, NOW);
    }

    #[test]
    fn a_pack_from_an_apr_not_served_is_refused_as_topic_denied() {
        let p = pack_of(intake("apr/zz/d1/up", b"[]", &served(), NOW, 300_000));
        assert_eq!(p.apr, "zz");
        assert_eq!(p.refusals[0].reason, RefusalReason::TopicDenied);
        assert!(p.raw.is_some());
        assert!(matches!(
            intake("apr/a1/BAD/up", b"[]", &served(), NOW, 300_000),
            Intake::Unroutable { .. }
        ));
        assert_eq!(
            intake("apr/a1/d1/ack", b"[]", &served(), NOW, 300_000),
            Intake::Ignored
        );
    }

    #[test]
    fn packs_refused_whole_keep_a_readable_bt_so_they_are_acknowledged() {
        // Valid JSON, but `v` is a string: not a SenML pack to the decoder.
        let p = pack_of(intake(
            "apr/a1/d1/up",
            br#"[{"bt":1764064801,"n":"flow","u":"l/s","v":"x"}]"#,
            &served(),
            NOW,
            300_000,
        ));
        assert_eq!(p.refusals[0].reason, RefusalReason::Malformed);
        assert_eq!(p.bt, Some(1_764_064_801.0));
        let mut big = br#"[{"bt":1764064802,"n":"flow","u":"l/s","v":1}"#.to_vec();
        while big.len() <= apr_wire::MAX_PACK_BYTES {
            big.extend_from_slice(br#",{"n":"flow","u":"l/s","v":1}"#);
        }
        big.push(b']');
        let p = pack_of(intake("apr/a1/d1/up", &big, &served(), NOW, 300_000));
        assert_eq!(p.refusals[0].reason, RefusalReason::Oversized);
        assert_eq!(p.bt, Some(1_764_064_802.0));
        assert!(p.readings.is_empty());
        assert_eq!(
            p.raw.as_deref().map(str::len),
            Some(apr_wire::ingest::QUARANTINE_EXCERPT_BYTES)
        );
        let p = pack_of(intake("apr/a1/d1/up", b"{garbage", &served(), NOW, 300_000));
        assert_eq!(p.bt, None);
        assert_eq!(p.raw.as_deref(), Some("{garbage"));
    }

    #[test]
    fn subscriptions_cover_up_and_status_of_every_served_apr() {
        let f = subscriptions(&["a1".into(), "a2".into()]);
        assert_eq!(
            f,
            [
                "apr/a1/+/up",
                "apr/a1/+/status",
                "apr/a2/+/up",
                "apr/a2/+/status"
            ]
        );
    }
}
