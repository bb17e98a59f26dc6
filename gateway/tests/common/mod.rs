//! Shared fixtures: a real embedded broker, device clients, a recording sink.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apr_gateway::{password_sha256, DeviceDirectory, EmbeddedBroker, GateHop, Sink, SinkError};
use apr_wire::ingest::{GatewayDevice, IngestAck, IngestBatch};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Publish, QoS};
use tokio::sync::mpsc;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn device(username: &str, apr: &str, device: &str, password: &str) -> GatewayDevice {
    GatewayDevice {
        apr: apr.into(),
        device: device.into(),
        mqtt_username: username.into(),
        mqtt_password_sha256: password_sha256(password),
        report_interval_s: 60,
        config: serde_json::Value::Null,
    }
}

/// A broker with devices u1 (a1/d1, password p1) and u2 (a1/d2, password p2).
pub async fn broker() -> EmbeddedBroker {
    broker_via(GateHop::InProcess).await
}

/// [`broker`] with the gate's hop to rumqttd chosen.
pub async fn broker_via(hop: GateHop) -> EmbeddedBroker {
    let dir = DeviceDirectory::new(vec![
        device("u1", "a1", "d1", "p1"),
        device("u2", "a1", "d2", "p2"),
        // A username with a `/`, which a client id must not carry.
        device("a1/d3", "a1", "d3", "p3"),
    ]);
    EmbeddedBroker::start_with("127.0.0.1:0".parse().unwrap(), Arc::new(dir), None, hop)
        .await
        .unwrap()
}

/// An MQTT 3.1.1 client whose events arrive on a channel.
pub struct Client {
    pub client: AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<Event, String>>,
}

pub fn connect(addr: SocketAddr, id: &str, login: Option<(&str, &str)>) -> Client {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(512 * 1024, 512 * 1024);
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (client, eventloop) = AsyncClient::new(o, 100);
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(pump(eventloop, tx));
    Client { client, events }
}

async fn pump(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Result<Event, String>>) {
    loop {
        let e = eventloop.poll().await;
        let failed = e.is_err();
        if tx.send(e.map_err(|e| format!("{e:?}"))).is_err() || failed {
            return;
        }
    }
}

impl Client {
    /// The next incoming packet (skipping outgoing events), or an error text.
    pub async fn next_incoming(&mut self, within: Duration) -> Option<Result<Incoming, String>> {
        tokio::time::timeout(within, async {
            loop {
                match self.events.recv().await {
                    Some(Ok(Event::Incoming(i))) => return Some(Ok(i)),
                    Some(Ok(Event::Outgoing(_))) => {}
                    Some(Err(e)) => return Some(Err(e)),
                    None => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits for an incoming packet matching `f`.
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut f: impl FnMut(&Incoming) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_incoming(left).await? {
                Ok(i) => {
                    if let Some(t) = f(&i) {
                        return Some(t);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    pub async fn connected(&mut self) -> Result<(), String> {
        match self.next_incoming(WAIT).await {
            Some(Ok(Incoming::ConnAck(_))) => Ok(()),
            Some(Ok(other)) => Err(format!("{other:?}")),
            Some(Err(e)) => Err(e),
            None => Err("no answer".into()),
        }
    }

    pub async fn subscribed(&mut self, filter: &str) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.wait_for(WAIT, |i| match i {
            Incoming::SubAck(s) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await
        .expect("a SUBACK")
    }

    pub async fn next_publish(&mut self, within: Duration) -> Option<Publish> {
        self.wait_for(within, |i| match i {
            Incoming::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }
}

/// A sink that records batches, failing the first `fail_first` attempts with 503.
#[derive(Clone, Default)]
pub struct RecordingSink {
    pub batches: Arc<Mutex<Vec<IngestBatch>>>,
    pub attempts: Arc<AtomicU32>,
    pub fail_first: Arc<AtomicU32>,
    /// What `devices()` answers (`None`: it cannot tell).
    pub devices: Arc<Mutex<Option<Vec<GatewayDevice>>>>,
}

impl RecordingSink {
    pub fn failing_first(n: u32) -> RecordingSink {
        let s = RecordingSink::default();
        s.fail_first.store(n, SeqCst);
        s
    }

    pub fn batches(&self) -> Vec<IngestBatch> {
        self.batches.lock().unwrap().clone()
    }

    pub fn attempts(&self) -> u32 {
        self.attempts.load(SeqCst)
    }
}

impl Sink for RecordingSink {
    async fn devices(&self) -> Result<Option<Vec<GatewayDevice>>, SinkError> {
        Ok(self.devices.lock().unwrap().clone())
    }

    async fn send(&self, batch: &IngestBatch) -> Result<IngestAck, SinkError> {
        self.attempts.fetch_add(1, SeqCst);
        if self
            .fail_first
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError::Status {
                status: 503,
                message: "store busy".into(),
            });
        }
        self.batches.lock().unwrap().push(batch.clone());
        Ok(IngestAck {
            stored: batch.packs.iter().map(|p| p.readings.len() as u64).sum(),
            duplicates: 0,
            quarantined: batch.packs.iter().map(|p| p.refusals.len() as u64).sum(),
        })
    }
}
