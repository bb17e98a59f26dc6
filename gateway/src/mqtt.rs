//! The gateway's connection to its MQTT broker, over one of two transports.
//!
//! - **TCP** (or TLS) through rumqttc, to any broker: mosquitto, or the
//!   internal port of an embedded broker in another process.
//! - **In-process**: when `[mqtt]` names the internal address and login of
//!   an [`EmbeddedBroker`](crate::EmbeddedBroker) running in this same
//!   process (the usual site gateway, `apr-gateway run` with `[broker]
//!   listen`, and the demo), the gateway talks to the broker's router over a
//!   rumqttd local link: no socket, no MQTT encoding and decoding, no
//!   PUBACK round trip, and one router wake-up for a whole group of acks
//!   instead of one TCP write each (measured in docs/SCALING.md, "The
//!   in-process link"). `[mqtt] in_process = false` forces TCP.
//!
//! The rest of the gateway sees one [`Connection`] (polled by the uplink
//! loop for [`Event`]s) and one cloneable [`Client`] (subscribe, publish)
//! whatever the transport.
//!
//! In-process, the subscription to the devices' topics is QoS 0: nothing
//! travels over a network between the router and the gateway, and the
//! router's flow control (it stops forwarding while the link's buffer is
//! full, until the link reads it) holds the same as QoS 1's window would.
//! The device's own hop stays QoS 1 (the gate and rumqttd acknowledge the
//! device), and the gateway's `ack` and `config` publishes are QoS 1 as on
//! TCP (CONTRACT §2), so a device receives them at QoS 1.

use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rumqttc::{AsyncClient, EventLoop, Incoming, QoS, SubscribeFilter};
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, Filter, Packet, Publish, RetainForwardRule, Subscribe,
    SubscribeReasonCode, Unsubscribe,
};
use rumqttd::Notification;
use tracing::{debug, warn};

use crate::broker::LocalLinks;
use crate::Error;

/// What polling the connection yields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// A message on a subscribed topic.
    Publish {
        /// The topic, as published.
        topic: Bytes,
        /// The payload.
        payload: Bytes,
    },
    /// (Re)connected: subscribe now.
    Connected {
        /// The broker kept a session (never, with clean sessions).
        session_present: bool,
    },
    /// The broker answered a subscription; `refused` filters were refused.
    Subscribed {
        /// How many filters the broker refused.
        refused: usize,
    },
    /// Anything else (acknowledgments of our publishes, pings).
    Other,
}

/// The polled side of the connection.
pub(crate) struct Connection {
    kind: ConnectionKind,
}

enum ConnectionKind {
    Tcp(Box<EventLoop>),
    Local(LocalConnection),
}

/// The requesting side (subscribe, publish); cheap to clone.
#[derive(Clone)]
pub(crate) struct Client {
    kind: ClientKind,
}

#[derive(Clone)]
enum ClientKind {
    Tcp(AsyncClient),
    Local(Arc<LocalShared>),
}

/// The in-process link's sending half, shared by every [`Client`] clone and
/// replaced when the connection makes a new link.
struct LocalShared {
    tx: tokio::sync::Mutex<Option<LinkTx>>,
    pkid: AtomicU16,
}

impl LocalShared {
    /// The next packet id (1..=65535; the router only echoes it back).
    fn next_pkid(&self) -> u16 {
        loop {
            let id = self.pkid.fetch_add(1, Relaxed);
            if id != 0 {
                return id;
            }
        }
    }
}

struct LocalConnection {
    links: LocalLinks,
    client_id: String,
    rx: Option<LinkRx>,
    shared: Arc<LocalShared>,
}

/// A QoS 1 publish for the router. rumqttd 0.20 keeps a publish's QoS and
/// packet id crate-private and its constructor makes QoS 0 only, so the
/// publish is built through its documented, MQTT-independent serialization
/// (`Publish::serialize` / `deserialize`: header byte, packet id, topic
/// length, topic, payload).
pub(crate) fn qos1_publish(topic: &str, payload: &[u8], retain: bool, pkid: u16) -> Publish {
    let mut b = BytesMut::with_capacity(5 + topic.len() + payload.len());
    b.put_u8(0b0011_0000 | (1 << 1) | u8::from(retain));
    b.put_u16(pkid);
    b.put_u16(u16::try_from(topic.len()).unwrap_or(u16::MAX));
    b.extend_from_slice(topic.as_bytes());
    b.extend_from_slice(payload);
    Publish::deserialize(b.freeze())
}

fn link_error(e: impl std::fmt::Display) -> Error {
    Error::Link(e.to_string())
}

impl Connection {
    /// A rumqttc connection (made on the first poll).
    pub(crate) fn tcp(client: AsyncClient, eventloop: EventLoop) -> (Connection, Client) {
        (
            Connection {
                kind: ConnectionKind::Tcp(Box::new(eventloop)),
            },
            Client {
                kind: ClientKind::Tcp(client),
            },
        )
    }

    /// An in-process link to an embedded broker's router as `client_id`
    /// (made on the first poll).
    pub(crate) fn local(links: LocalLinks, client_id: String) -> (Connection, Client) {
        let shared = Arc::new(LocalShared {
            tx: tokio::sync::Mutex::new(None),
            pkid: AtomicU16::new(1),
        });
        (
            Connection {
                kind: ConnectionKind::Local(LocalConnection {
                    links,
                    client_id,
                    rx: None,
                    shared: shared.clone(),
                }),
            },
            Client {
                kind: ClientKind::Local(shared),
            },
        )
    }

    /// Whether this is the in-process link.
    pub(crate) fn is_in_process(&self) -> bool {
        matches!(self.kind, ConnectionKind::Local(_))
    }

    /// The next event; connects first if not connected. An error means the
    /// connection is lost: the caller waits and polls again to reconnect.
    /// Cancel-safe only between events on TCP (rumqttc's own rule); the
    /// uplink loop cancels it only to shut down.
    pub(crate) async fn poll(&mut self) -> Result<Event, Error> {
        match &mut self.kind {
            ConnectionKind::Tcp(eventloop) => match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(Incoming::Publish(p))) => Ok(Event::Publish {
                    topic: Bytes::from(p.topic),
                    payload: p.payload,
                }),
                Ok(rumqttc::Event::Incoming(Incoming::ConnAck(ack))) => Ok(Event::Connected {
                    session_present: ack.session_present,
                }),
                Ok(rumqttc::Event::Incoming(Incoming::SubAck(ack))) => Ok(Event::Subscribed {
                    refused: ack
                        .return_codes
                        .iter()
                        .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                        .count(),
                }),
                Ok(_) => Ok(Event::Other),
                Err(e) => Err(link_error(e)),
            },
            ConnectionKind::Local(local) => local.poll().await,
        }
    }

    /// Whether everything requested has left (TCP: no publish queued or
    /// unacknowledged; in-process: handed to the router at once).
    pub(crate) fn is_flushed(&self) -> bool {
        match &self.kind {
            ConnectionKind::Tcp(eventloop) => {
                eventloop.state.inflight() == 0 && eventloop.pending.is_empty()
            }
            ConnectionKind::Local(_) => true,
        }
    }

    /// Says goodbye: TCP sends DISCONNECT and reads until the broker closes
    /// (closing with unread data would reset the connection and could lose
    /// the last acks); in-process sends DISCONNECT to the router (no will)
    /// and drops the link.
    pub(crate) async fn disconnect(&mut self, client: &Client) {
        match (&mut self.kind, &client.kind) {
            (ConnectionKind::Tcp(eventloop), ClientKind::Tcp(client)) => {
                if client.try_disconnect().is_err() {
                    return;
                }
                while eventloop.poll().await.is_ok() {}
            }
            (ConnectionKind::Local(local), _) => local.disconnect().await,
            _ => {}
        }
    }
}

impl LocalConnection {
    async fn poll(&mut self) -> Result<Event, Error> {
        let Some(rx) = self.rx.as_mut() else {
            let links = self.links.clone();
            let id = self.client_id.clone();
            // Building a link waits (blocking) for the router's answer.
            let (tx, rx) = tokio::task::spawn_blocking(move || links.link(&id))
                .await
                .map_err(|e| Error::Task(e.to_string()))??;
            *self.shared.tx.lock().await = Some(tx);
            self.rx = Some(rx);
            debug!(client_id = %self.client_id, "in-process link to the embedded broker made");
            return Ok(Event::Connected {
                session_present: false,
            });
        };
        let notification = loop {
            match rx.next().await {
                Ok(Some(n)) => break n,
                Ok(None) => continue,
                Err(e) => return Err(self.lost(e).await),
            }
        };
        match notification {
            Notification::Forward(f) => Ok(Event::Publish {
                topic: f.publish.topic,
                payload: f.publish.payload,
            }),
            n @ Notification::DeviceAck(_) => match Option::<Packet>::from(n) {
                Some(Packet::SubAck(ack, _)) => Ok(Event::Subscribed {
                    refused: ack
                        .return_codes
                        .iter()
                        .filter(|c| {
                            !matches!(
                                c,
                                SubscribeReasonCode::Success(_)
                                    | SubscribeReasonCode::QoS0
                                    | SubscribeReasonCode::QoS1
                                    | SubscribeReasonCode::QoS2
                            )
                        })
                        .count(),
                }),
                _ => Ok(Event::Other),
            },
            Notification::Unschedule => {
                // The router paused this link because its buffer filled:
                // what it holds has been taken, ask for more.
                if let Err(e) = rx.wake().await {
                    return Err(self.lost(e).await);
                }
                Ok(Event::Other)
            }
            Notification::Disconnect(..) => {
                self.drop_link().await;
                Err(link_error(
                    "the embedded broker closed the in-process link (another client took its id?)",
                ))
            }
            _ => Ok(Event::Other),
        }
    }

    /// The router failed the link: drop it (the next poll makes a new one)
    /// and say why.
    async fn lost(&mut self, e: impl std::fmt::Display) -> Error {
        self.drop_link().await;
        link_error(format!("the embedded broker's router: {e}"))
    }

    async fn drop_link(&mut self) {
        self.rx = None;
        *self.shared.tx.lock().await = None;
    }

    async fn disconnect(&mut self) {
        if let Some(mut tx) = self.shared.tx.lock().await.take() {
            let bye = Packet::Disconnect(
                Disconnect {
                    reason_code: DisconnectReasonCode::NormalDisconnection,
                },
                None,
            );
            if tx.send(bye).await.is_err() {
                debug!("the embedded broker's router is gone");
            }
        }
        self.rx = None;
    }
}

impl Client {
    /// Subscribes to `paths` (QoS 1 on TCP, QoS 0 in-process: see the
    /// module doc). The answer comes as [`Event::Subscribed`].
    pub(crate) async fn subscribe(&self, paths: &[String]) -> Result<(), Error> {
        match &self.kind {
            ClientKind::Tcp(c) => {
                let filters = paths
                    .iter()
                    .map(|p| SubscribeFilter::new(p.clone(), QoS::AtLeastOnce));
                Ok(c.subscribe_many(filters).await?)
            }
            ClientKind::Local(shared) => {
                let filters = paths
                    .iter()
                    .map(|p| Filter {
                        path: p.clone(),
                        qos: rumqttd::protocol::QoS::AtMostOnce,
                        nolocal: false,
                        preserve_retain: false,
                        // As for an MQTT 3.1.1 SUBSCRIBE: the retained
                        // statuses come with every subscription.
                        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                    })
                    .collect();
                let pkid = shared.next_pkid();
                let mut tx = shared.tx.lock().await;
                let tx = tx.as_mut().ok_or_else(|| link_error("not connected"))?;
                tx.send(Packet::Subscribe(Subscribe { pkid, filters }, None))
                    .await
                    .map_err(link_error)?;
                Ok(())
            }
        }
    }

    /// Unsubscribes from `paths` without waiting (shutdown).
    pub(crate) async fn unsubscribe(&self, paths: &[String]) {
        match &self.kind {
            ClientKind::Tcp(c) => {
                for p in paths {
                    let _ = c.try_unsubscribe(p.clone());
                }
            }
            ClientKind::Local(shared) => {
                let pkid = shared.next_pkid();
                if let Some(tx) = shared.tx.lock().await.as_mut() {
                    let u = Unsubscribe {
                        pkid,
                        filters: paths.to_vec(),
                    };
                    if tx.send(Packet::Unsubscribe(u, None)).await.is_err() {
                        debug!("the embedded broker's router is gone");
                    }
                }
            }
        }
    }

    /// Publishes one message at QoS 1.
    pub(crate) async fn publish(
        &self,
        topic: String,
        payload: Bytes,
        retain: bool,
    ) -> Result<(), Error> {
        match &self.kind {
            ClientKind::Tcp(c) => Ok(c
                .publish_bytes(topic, QoS::AtLeastOnce, retain, payload)
                .await?),
            ClientKind::Local(shared) => {
                let p = qos1_publish(&topic, &payload, retain, shared.next_pkid());
                let mut tx = shared.tx.lock().await;
                let tx = tx.as_mut().ok_or_else(|| link_error("not connected"))?;
                tx.send(Packet::Publish(p, None))
                    .await
                    .map_err(link_error)?;
                Ok(())
            }
        }
    }

    /// Publishes `messages` at QoS 1, not retained, in order; answers how
    /// many were handed over. In-process the whole group reaches the router
    /// with one wake-up.
    pub(crate) async fn publish_all(&self, messages: Vec<(String, Bytes)>) -> usize {
        match &self.kind {
            ClientKind::Tcp(c) => {
                let mut sent = 0;
                for (topic, payload) in messages {
                    match c
                        .publish_bytes(topic.clone(), QoS::AtLeastOnce, false, payload)
                        .await
                    {
                        Ok(()) => sent += 1,
                        Err(e) => {
                            warn!(error = %e, %topic, "cannot publish an ack; the device will resend")
                        }
                    }
                }
                sent
            }
            ClientKind::Local(shared) => {
                let n = messages.len();
                let mut packets: Vec<Packet> = messages
                    .iter()
                    .map(|(t, p)| {
                        Packet::Publish(qos1_publish(t, p, false, shared.next_pkid()), None)
                    })
                    .collect();
                let Some(last) = packets.pop() else {
                    return 0;
                };
                let mut tx = shared.tx.lock().await;
                let Some(tx) = tx.as_mut() else {
                    warn!(
                        acks = n,
                        "not connected to the embedded broker: acks not published; the devices will resend"
                    );
                    return 0;
                };
                tx.buffer().extend(packets);
                // The last one notifies the router of the whole group.
                match tx.send(last).await {
                    Ok(_) => n,
                    Err(e) => {
                        warn!(error = %e, acks = n, "cannot publish acks; the devices will resend");
                        0
                    }
                }
            }
        }
    }
}

/// How long [`Connection::disconnect`] may take on TCP.
pub(crate) const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qos1_publish_for_the_router_keeps_topic_payload_retain_and_id() {
        let p = qos1_publish("apr/a1/d1/ack", b"[1764064800]", false, 7);
        assert_eq!(&p.topic[..], b"apr/a1/d1/ack");
        assert_eq!(&p.payload[..], b"[1764064800]");
        assert!(!p.retain);
        let wire = p.serialize();
        assert_eq!(wire[0] & 0b0110, 0b0010, "QoS 1");
        assert_eq!(u16::from_be_bytes([wire[1], wire[2]]), 7);
        let r = qos1_publish("apr/a1/d1/config", b"{}", true, 65535);
        assert!(r.retain);
        assert_eq!(r.serialize()[0] & 0b0111, 0b0011, "QoS 1, retained");
    }

    #[test]
    fn packet_ids_skip_zero_when_they_wrap() {
        let s = LocalShared {
            tx: tokio::sync::Mutex::new(None),
            pkid: AtomicU16::new(u16::MAX),
        };
        assert_eq!(s.next_pkid(), u16::MAX);
        assert_eq!(s.next_pkid(), 1);
    }
}
