//! One simulated device on MQTT, with the end-to-end acknowledgment of
//! CONTRACT §2: every pack goes into the outbox before it is published and
//! leaves only when the gateway names its `bt` on `apr/{apr}/{device}/ack`.
//! Packs still unacknowledged after [`DeviceOptions::resend_after`] (and all of
//! them after a reconnect) are published again, oldest first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apr_firmware::{Identity, Report, Sample};
use apr_wire::topic::{topic, Channel};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::Notify;
use tracing::{debug, info_span, warn, Instrument};

use crate::TwinError;

/// How a simulated device connects and behaves.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// APR id.
    pub apr: String,
    /// Device id.
    pub device: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT username.
    pub username: String,
    /// MQTT password.
    pub password: String,
    /// Resend a pack not acknowledged after this long.
    pub resend_after: Duration,
    /// Most packs waiting for acknowledgment before `publish` waits.
    pub max_unacked: usize,
    /// Pack buffer size (a board's RAM budget; 2 KiB by default).
    pub pack_buffer: usize,
    /// MQTT over TLS with this configuration (e.g. trusting the site's CA,
    /// built with `apr_tls::client_config`); `None`: plain MQTT.
    pub tls: Option<rumqttc::TlsConfiguration>,
}

impl DeviceOptions {
    /// Options with the defaults for the other fields.
    pub fn new(apr: &str, device: &str, host: &str, port: u16, user: &str, pass: &str) -> Self {
        DeviceOptions {
            apr: apr.into(),
            device: device.into(),
            host: host.into(),
            port,
            username: user.into(),
            password: pass.into(),
            resend_after: Duration::from_secs(10),
            max_unacked: 512,
            pack_buffer: 2048,
            tls: None,
        }
    }
}

/// Counters of one device (or summed over a fleet).
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Packs published for the first time.
    pub packs_sent: AtomicU64,
    /// Readings in packs published for the first time (a call to
    /// [`SimDevice::publish`] makes as many packs as its pack buffer needs).
    pub readings_sent: AtomicU64,
    /// Packs published again (no ack in time, or after a reconnect).
    pub packs_resent: AtomicU64,
    /// Packs acknowledged by the gateway.
    pub packs_acked: AtomicU64,
    /// Readings in acknowledged packs.
    pub readings_acked: AtomicU64,
    /// Connections lost (each one is retried).
    pub connection_errors: AtomicU64,
    /// Connections established again after a loss.
    pub reconnects: AtomicU64,
}

struct Pending {
    payload: Vec<u8>,
    readings: u64,
    /// `None`: not published yet (it was made while the device was not
    /// subscribed to its `ack` topic).
    sent_at: Option<Instant>,
}

#[derive(Default)]
struct Outbox {
    /// Keyed by `bt` in milliseconds (unique per device and pack).
    packs: BTreeMap<i64, Pending>,
    /// Whether the current connection has (queued) its `ack` subscription.
    /// Like the board, the device publishes packs only then: an ack sent
    /// before the broker has the subscription would be lost and the pack
    /// resent only after `resend_after`.
    subscribed: bool,
}

/// A connected simulated device.
pub struct SimDevice {
    opts: DeviceOptions,
    client: AsyncClient,
    outbox: Arc<Mutex<Outbox>>,
    acked: Arc<Notify>,
    counters: Arc<DeviceCounters>,
    last_bt: f64,
    up_topic: String,
    /// Set by [`SimDevice::disconnect`]: the event loop stops instead of
    /// reconnecting.
    closing: Arc<AtomicBool>,
}

fn bt_key(bt: f64) -> i64 {
    #[allow(clippy::cast_possible_truncation)]
    let k = (bt * 1000.0).round() as i64;
    k
}

impl SimDevice {
    /// Connects (in the background; rumqttc reconnects by itself) and starts
    /// the event loop that handles acks and resends.
    pub fn connect(opts: DeviceOptions, counters: Arc<DeviceCounters>) -> Result<Self, TwinError> {
        Identity::new(&opts.apr, &opts.device).map_err(|_| TwinError::Identity {
            apr: opts.apr.clone(),
            device: opts.device.clone(),
        })?;
        let client_id = format!("{}.{}", opts.apr, opts.device);
        let mut mqtt = MqttOptions::new(client_id, opts.host.clone(), opts.port);
        mqtt.set_credentials(opts.username.clone(), opts.password.clone());
        mqtt.set_keep_alive(Duration::from_secs(30));
        mqtt.set_inflight(200);
        mqtt.set_clean_session(true);
        if let Some(tls) = &opts.tls {
            mqtt.set_transport(rumqttc::Transport::tls_with_config(tls.clone()));
        }
        let status = topic(&opts.apr, &opts.device, Channel::Status);
        mqtt.set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true));
        let (client, mut eventloop) = AsyncClient::new(mqtt, 1024);
        // Each pack goes out at once, not held behind an unacknowledged one
        // (Nagle's algorithm against the broker's delayed ACK).
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let outbox = Arc::new(Mutex::new(Outbox::default()));
        let acked = Arc::new(Notify::new());
        let closing = Arc::new(AtomicBool::new(false));
        let ack_topic = topic(&opts.apr, &opts.device, Channel::Ack);
        let up_topic = topic(&opts.apr, &opts.device, Channel::Up);
        {
            let client = client.clone();
            let outbox = outbox.clone();
            let acked = acked.clone();
            let counters = counters.clone();
            let up_topic = up_topic.clone();
            let closing = closing.clone();
            let resend_after = opts.resend_after;
            let span = info_span!("device", apr = %opts.apr, device = %opts.device);
            // The resend timer runs in its own task: `EventLoop::poll` must
            // never be cancelled (a poll dropped while connecting leaves a
            // half-open socket whose late CONNECT takes over, and so kills,
            // the device's live session), so nothing is `select!`ed with it.
            let resender = {
                let (client, outbox, counters, up_topic, closing) = (
                    client.clone(),
                    outbox.clone(),
                    counters.clone(),
                    up_topic.clone(),
                    closing.clone(),
                );
                tokio::spawn(
                    async move {
                        let period = (resend_after / 2).max(Duration::from_millis(10));
                        let mut tick =
                            tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                        while !closing.load(Ordering::Relaxed) {
                            tick.tick().await;
                            resend(&client, &outbox, &up_topic, &counters, resend_after).await;
                        }
                    }
                    .instrument(span.clone()),
                )
            };
            tokio::spawn(
                async move {
                    let mut connected_before = false;
                    loop {
                        match eventloop.poll().await {
                            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                                debug!("connected");
                                // Subscribing, `online` and then the packs made
                                // meanwhile (after a reconnect: every
                                // unacknowledged pack, oldest first) go from
                                // another task: this one drains the client's
                                // request channel and must not wait for room
                                // in it.
                                let due = if connected_before {
                                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                                    Due::All
                                } else {
                                    Due::OlderThan(Duration::MAX)
                                };
                                let (client, outbox, counters, up_topic, ack_topic, status) = (
                                    client.clone(),
                                    outbox.clone(),
                                    counters.clone(),
                                    up_topic.clone(),
                                    ack_topic.clone(),
                                    status.clone(),
                                );
                                tokio::spawn(
                                    async move {
                                        if client
                                            .subscribe(&ack_topic, QoS::AtLeastOnce)
                                            .await
                                            .is_err()
                                            || client
                                                .publish(&status, QoS::AtLeastOnce, true, "online")
                                                .await
                                                .is_err()
                                        {
                                            return;
                                        }
                                        on_subscribed(&client, &outbox, &up_topic, &counters, due)
                                            .await;
                                    }
                                    .in_current_span(),
                                );
                                connected_before = true;
                            }
                            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack_topic => {
                                handle_ack(&p.payload, &outbox, &counters);
                                acked.notify_waiters();
                            }
                            Ok(_) => {}
                            Err(rumqttc::ConnectionError::RequestsDone) => break,
                            // After our own DISCONNECT: done, no reconnection.
                            Err(_) if closing.load(Ordering::Relaxed) => break,
                            Err(e) => {
                                // Packs made from now on wait in the outbox for
                                // the next connection's subscription.
                                if let Ok(mut ob) = outbox.lock() {
                                    ob.subscribed = false;
                                }
                                counters.connection_errors.fetch_add(1, Ordering::Relaxed);
                                debug!(error = %e, "connection lost; retrying");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    }
                    resender.abort();
                }
                .instrument(span),
            );
        }
        Ok(SimDevice {
            opts,
            client,
            outbox,
            acked,
            counters,
            last_bt: 0.0,
            up_topic,
            closing,
        })
    }

    /// Encodes `samples` with the firmware core into as many packs as needed,
    /// puts each in the outbox and publishes it. Waits while the outbox is full.
    pub async fn publish(&mut self, samples: &[Sample]) -> Result<usize, TwinError> {
        let id =
            Identity::new(&self.opts.apr, &self.opts.device).map_err(|_| TwinError::Identity {
                apr: self.opts.apr.clone(),
                device: self.opts.device.clone(),
            })?;
        let mut report = Report::new(id, self.last_bt);
        let mut buf = vec![0u8; self.opts.pack_buffer];
        let mut done = 0;
        let mut packs = 0;
        while done < samples.len() {
            self.wait_for_room().await;
            let (len, bt, n) =
                report
                    .next_pack(&mut buf, &samples[done..])
                    .map_err(|e| TwinError::Encode {
                        apr: self.opts.apr.clone(),
                        device: self.opts.device.clone(),
                        reason: format!("{e:?}"),
                    })?;
            let payload = buf[..len].to_vec();
            let publish_now = match self.outbox.lock() {
                Ok(mut ob) => {
                    let subscribed = ob.subscribed;
                    ob.packs.insert(
                        bt_key(bt),
                        Pending {
                            payload: payload.clone(),
                            readings: n as u64,
                            sent_at: subscribed.then(Instant::now),
                        },
                    );
                    subscribed
                }
                Err(_) => true,
            };
            if publish_now {
                self.client
                    .publish(&self.up_topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .map_err(|_| TwinError::ClientStopped(self.up_topic.clone()))?;
            }
            self.counters.packs_sent.fetch_add(1, Ordering::Relaxed);
            self.counters
                .readings_sent
                .fetch_add(n as u64, Ordering::Relaxed);
            done += n;
            packs += 1;
        }
        self.last_bt = report.last_bt();
        Ok(packs)
    }

    async fn wait_for_room(&self) {
        loop {
            let notified = self.acked.notified();
            if self.unacked() < self.opts.max_unacked {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    /// Packs waiting for the gateway's acknowledgment.
    pub fn unacked(&self) -> usize {
        self.outbox.lock().map(|o| o.packs.len()).unwrap_or(0)
    }

    /// Waits until every pack is acknowledged, or `timeout` passes; returns
    /// the number still unacknowledged.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.acked.notified();
            let left = self.unacked();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// Disconnects cleanly (publishing `offline` first, retained).
    pub async fn disconnect(&self) {
        let status = topic(&self.opts.apr, &self.opts.device, Channel::Status);
        let _ = self
            .client
            .publish(status, QoS::AtLeastOnce, true, "offline")
            .await;
        self.closing.store(true, Ordering::Relaxed);
        let _ = self.client.disconnect().await;
    }
}

fn handle_ack(payload: &[u8], outbox: &Mutex<Outbox>, counters: &DeviceCounters) {
    let bts: Vec<f64> = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "ignoring an ack that is not a JSON array of numbers");
            return;
        }
    };
    let Ok(mut ob) = outbox.lock() else { return };
    for bt in bts {
        if let Some(p) = ob.packs.remove(&bt_key(bt)) {
            counters.packs_acked.fetch_add(1, Ordering::Relaxed);
            counters
                .readings_acked
                .fetch_add(p.readings, Ordering::Relaxed);
        }
    }
}

/// Which packs [`resend`] publishes.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// Published before and not acknowledged for this long.
    OlderThan(Duration),
    /// Every pack in the outbox (after a reconnect: the new session knows
    /// none of them).
    All,
}

/// Marks the device subscribed (the `ack` subscription is queued ahead of
/// everything published from now on) and publishes what is due: packs never
/// published, and with [`Due::All`] every other one too.
async fn on_subscribed(
    client: &AsyncClient,
    outbox: &Mutex<Outbox>,
    up_topic: &str,
    counters: &DeviceCounters,
    due: Due,
) {
    if let Ok(mut ob) = outbox.lock() {
        ob.subscribed = true;
    }
    publish_due(client, outbox, up_topic, counters, due, usize::MAX).await;
}

/// Resends packs unacknowledged for `older_than` (at most 256 a call).
async fn resend(
    client: &AsyncClient,
    outbox: &Mutex<Outbox>,
    up_topic: &str,
    counters: &DeviceCounters,
    older_than: Duration,
) {
    publish_due(
        client,
        outbox,
        up_topic,
        counters,
        Due::OlderThan(older_than),
        256,
    )
    .await;
}

/// The payloads to publish now (each with "first time?"), marked as sent at
/// `now`: nothing while the device is not subscribed; packs never published;
/// and those `due` names, oldest first, at most `most` in all.
fn take_due(ob: &mut Outbox, due: Due, most: usize, now: Instant) -> Vec<(Vec<u8>, bool)> {
    if !ob.subscribed {
        return Vec::new();
    }
    ob.packs
        .values_mut()
        .filter(|p| match (due, p.sent_at) {
            (_, None) | (Due::All, _) => true,
            (Due::OlderThan(age), Some(at)) => now.duration_since(at) >= age,
        })
        .take(most)
        .map(|p| {
            let first = p.sent_at.is_none();
            p.sent_at = Some(now);
            (p.payload.clone(), first)
        })
        .collect()
}

async fn publish_due(
    client: &AsyncClient,
    outbox: &Mutex<Outbox>,
    up_topic: &str,
    counters: &DeviceCounters,
    due: Due,
    most: usize,
) {
    let due = match outbox.lock() {
        Ok(mut ob) => take_due(&mut ob, due, most, Instant::now()),
        Err(_) => return,
    };
    for (payload, first) in due {
        if client
            .publish(up_topic, QoS::AtLeastOnce, false, payload)
            .await
            .is_err()
        {
            return;
        }
        if !first {
            counters.packs_resent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readings_are_counted_per_pack_when_one_call_makes_several() {
        // No broker listens: before the ack subscription packs wait in the
        // outbox, which is all this needs.
        let mut o = DeviceOptions::new("a1", "d1", "127.0.0.1", 1, "a1/d1", "pw");
        o.pack_buffer = 512;
        let c = Arc::new(DeviceCounters::default());
        let mut dev = SimDevice::connect(o, c.clone()).expect("device");
        let samples: Vec<Sample> = (0..100)
            .map(|k| Sample {
                metric: apr_wire::Metric::Chlorine,
                time: 1_700_000_000.0 + f64::from(k),
                value: apr_firmware::SampleValue::Number(0.5),
            })
            .collect();
        let packs = dev.publish(&samples).await.expect("publish");
        assert!(
            packs > 1,
            "100 readings in a 512-byte buffer: {packs} pack(s)"
        );
        assert_eq!(c.packs_sent.load(Ordering::Relaxed), packs as u64);
        assert_eq!(c.readings_sent.load(Ordering::Relaxed), 100);
        assert_eq!(dev.unacked(), packs);
    }

    #[test]
    fn acks_release_exactly_the_named_packs() {
        let ob = Mutex::new(Outbox::default());
        for (bt, n) in [(100.5, 3u64), (160.0, 2)] {
            ob.lock().unwrap().packs.insert(
                bt_key(bt),
                Pending {
                    payload: vec![],
                    readings: n,
                    sent_at: Some(Instant::now()),
                },
            );
        }
        let c = DeviceCounters::default();
        handle_ack(b"[100.5, 999]", &ob, &c);
        assert_eq!(ob.lock().unwrap().packs.len(), 1);
        assert_eq!(c.packs_acked.load(Ordering::Relaxed), 1);
        assert_eq!(c.readings_acked.load(Ordering::Relaxed), 3);
        handle_ack(b"not json", &ob, &c);
        assert_eq!(ob.lock().unwrap().packs.len(), 1);
    }

    #[test]
    fn packs_wait_for_the_ack_subscription_and_resends_take_only_what_is_due() {
        let t0 = Instant::now();
        let mut ob = Outbox::default();
        for (k, sent_at) in [
            (1, None),
            (2, Some(t0)),
            (3, Some(t0 + Duration::from_secs(9))),
        ] {
            ob.packs.insert(
                k,
                Pending {
                    payload: vec![k as u8],
                    readings: 1,
                    sent_at,
                },
            );
        }
        let now = t0 + Duration::from_secs(10);
        // Not subscribed: nothing goes, whatever is due.
        assert!(take_due(&mut ob, Due::All, usize::MAX, now).is_empty());
        ob.subscribed = true;
        // First subscription: only the pack never published.
        let first = take_due(&mut ob, Due::OlderThan(Duration::MAX), usize::MAX, now);
        assert_eq!(first, vec![(vec![1], true)]);
        // The resend timer: only what waited at least `older_than`.
        let old = take_due(
            &mut ob,
            Due::OlderThan(Duration::from_secs(5)),
            usize::MAX,
            now,
        );
        assert_eq!(old, vec![(vec![2], false)]);
        // After a reconnect: everything, oldest first, as resends; `most` caps it.
        let all = take_due(&mut ob, Due::All, 2, now);
        assert_eq!(all, vec![(vec![1], false), (vec![2], false)]);
    }
}
