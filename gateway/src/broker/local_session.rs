//! A device's session carried from the gate to rumqttd's router over an
//! in-process local link, instead of a second TCP connection to the internal
//! port (the gate's `Tcp` hop).
//!
//! Per device the gate then runs two tasks and no socket besides the
//! device's own: the reader judges the device's packets ([`super::gate::judge`],
//! as on the TCP hop) and hands every allowed one to the router in one
//! wake-up per read; the writer encodes what the router sends (CONNACK,
//! PUBACK / SUBACK, QoS 1 forwards of the device's `ack` and `config`) and
//! writes each burst to the device at once.
//!
//! What rumqttd's own connection task did, the session does here:
//! - **Keep-alive**: a device silent for 1.5 × its keep-alive is dropped
//!   (MQTT 3.1.1 §3.1.2.10); the gate answers PINGREQ itself.
//! - **The will**: a link cannot ask the router to fire a will, so the gate
//!   keeps the device's will (already checked to be on its own `status`
//!   topic) and publishes it when the connection ends without DISCONNECT (the
//!   device closed, went silent or broke the protocol). Not when the router
//!   ended the session: that is a takeover by the same client id, whose new
//!   connection is alive.
//! - **Ending**: DISCONNECT, and every other end, reaches the router as a
//!   DISCONNECT on the link, so it drops the session (kept if the device asked
//!   for a persistent one) and its subscriptions at once.

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::Connect;
use rumqttc::mqttbytes::QoS;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet, Protocol, Publish};
use rumqttd::Notification;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{info, warn, Instrument};

use super::directory::DeviceGrant;
use super::gate::{
    judge, next_frame, publish_denied, read_more, subscribe_denied, GateError, GateShared, Verdict,
    CLIENT_QUEUE, CLOSE_GRACE,
};
use super::{LocalLinks, MAX_PACKET_BYTES};

/// PINGRESP, answered by the gate.
const PINGRESP: &[u8] = &[0xD0, 0x00];

/// How the device's side of a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceEnd {
    /// The device sent DISCONNECT: no will.
    Disconnected,
    /// The device closed, went silent past its keep-alive, broke the
    /// protocol or could not be written to: its will is published.
    Lost,
}

/// How the router's side of a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouterEnd {
    /// The router dropped the session (a takeover by the same client id,
    /// or its own disconnect): no will, nothing more to tell it.
    Closed,
    /// The device could not be written to.
    DeviceGone,
}

/// Idle limit for a keep-alive in seconds: 1.5 times it, none for 0.
pub(crate) fn idle_limit(keep_alive_s: u16) -> Option<Duration> {
    (keep_alive_s > 0).then(|| Duration::from_millis(u64::from(keep_alive_s) * 1_500))
}

/// The publish of a device's will (QoS 0 stays 0, QoS 1 and 2 go as QoS 1).
fn will_publish(connect: &Connect) -> Option<Packet> {
    let will = connect.last_will.as_ref()?;
    let publish = match will.qos {
        QoS::AtMostOnce => Publish::new(
            Bytes::copy_from_slice(will.topic.as_bytes()),
            will.message.clone(),
            will.retain,
        ),
        _ => crate::mqtt::qos1_publish(&will.topic, &will.message, will.retain, 1),
    };
    Some(Packet::Publish(publish, None))
}

/// The DISCONNECT that ends a session on the router's side.
fn disconnect() -> Packet {
    Packet::Disconnect(
        Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
        },
        None,
    )
}

/// Serves a device already admitted by the gate (its CONNECT read and its
/// grant decided; `buf` holds what it sent after the CONNECT) over a local
/// link to the router.
pub(super) async fn serve<R, W>(
    mut cr: R,
    buf: BytesMut,
    mut cw: W,
    connect: Connect,
    grant: &DeviceGrant,
    links: &LocalLinks,
    shared: &GateShared,
) -> Result<(), GateError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let client_id = connect.client_id.clone();
    let clean = connect.clean_session;
    let session = {
        let links = links.clone();
        let id = client_id.clone();
        // Building a link waits (blocking) for the router's answer.
        match tokio::task::spawn_blocking(move || links.session(&id, clean)).await {
            Ok(made) => made.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    let (mut tx, rx, connack) = match session {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "the embedded broker refused a link");
            super::gate::refuse_unavailable(cw, shared).await;
            return Err(GateError::Link(e));
        }
    };
    let mut out = BytesMut::with_capacity(16);
    encode_notification(connack, &mut out)?;
    cw.write_all(&out).await?;
    shared.counters.connections_accepted.fetch_add(1, Relaxed);
    info!(username = %grant.username, apr = %grant.apr, device = %grant.device, "device connected");

    let (answers, answers_rx) = mpsc::channel::<Bytes>(CLIENT_QUEUE);
    let mut writer = tokio::spawn(to_device(cw, rx, answers_rx).in_current_span());
    let idle = idle_limit(connect.keep_alive);
    let reader = from_device(&mut cr, buf, &mut tx, answers, grant, idle, shared);
    let (device_end, result, router_done) = tokio::select! {
        r = reader => match r {
            Ok(end) => (end, Ok(()), false),
            Err(e) => (DeviceEnd::Lost, Err(e), false),
        },
        w = &mut writer => match w {
            Ok(RouterEnd::DeviceGone) => (DeviceEnd::Lost, Ok(()), false),
            Ok(RouterEnd::Closed) | Err(_) => (DeviceEnd::Disconnected, Ok(()), true),
        },
    };
    if !router_done {
        let mut last = Vec::with_capacity(2);
        if device_end == DeviceEnd::Lost {
            if let Some(will) = will_publish(&connect) {
                info!(username = %grant.username, "connection lost without DISCONNECT: the device's will is published");
                last.push(will);
            }
        }
        last.push(disconnect());
        // The router is gone already if this fails; nothing is left to tell.
        let _ = hand_to_router(&mut tx, &mut last).await;
        // The router drops the session and with it the writer's link.
        if tokio::time::timeout(CLOSE_GRACE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
    info!(username = %grant.username, "device disconnected");
    result
}

/// Device → router: packet by packet through [`judge`], every packet of one
/// read handed over with one wake-up of the router.
async fn from_device<R: AsyncRead + Unpin>(
    cr: &mut R,
    mut buf: BytesMut,
    tx: &mut LinkTx,
    answers: mpsc::Sender<Bytes>,
    grant: &DeviceGrant,
    idle: Option<Duration>,
    shared: &GateShared,
) -> Result<DeviceEnd, GateError> {
    let mut denied_qos2 = HashSet::new();
    let mut batch: Vec<Packet> = Vec::with_capacity(16);
    loop {
        while let Some((frame, fh)) = next_frame(&mut buf)? {
            let answer = match judge(&frame, fh, grant, &mut denied_qos2) {
                Verdict::Forward => {
                    match frame.first().map(|b| b >> 4) {
                        Some(12) => Some(Bytes::from_static(PINGRESP)),
                        Some(14) => {
                            batch.push(disconnect());
                            hand_to_router(tx, &mut batch).await?;
                            return Ok(DeviceEnd::Disconnected);
                        }
                        _ => {
                            let mut packet = BytesMut::from(frame);
                            batch.push(V4.read_mut(&mut packet, MAX_PACKET_BYTES).map_err(
                                |e| GateError::Protocol(format!("malformed packet: {e}")),
                            )?);
                            None
                        }
                    }
                }
                Verdict::DenyPublish { topic, answer } => {
                    publish_denied(shared, grant, &topic);
                    answer
                }
                Verdict::DenySubscribe { filters, answer } => {
                    subscribe_denied(shared, grant, &filters);
                    Some(answer)
                }
                Verdict::Answer(a) => Some(a),
                Verdict::Close(why) => {
                    warn!(username = %grant.username, reason = %why, "connection closed by the gate");
                    hand_to_router(tx, &mut batch).await?;
                    return Err(GateError::Protocol(why));
                }
            };
            if let Some(a) = answer {
                answers.send(a).await.map_err(|_| GateError::QueueClosed)?;
            }
        }
        hand_to_router(tx, &mut batch).await?;
        let more = match idle {
            Some(limit) => match tokio::time::timeout(limit, read_more(cr, &mut buf)).await {
                Ok(more) => more?,
                Err(_) => {
                    warn!(username = %grant.username, "no packet within 1.5 times the keep-alive: connection closed");
                    return Ok(DeviceEnd::Lost);
                }
            },
            None => read_more(cr, &mut buf).await?,
        };
        if !more {
            return Ok(DeviceEnd::Lost);
        }
    }
}

/// Hands `batch` (emptied) to the router: all in its buffer, one wake-up.
async fn hand_to_router(tx: &mut LinkTx, batch: &mut Vec<Packet>) -> Result<(), GateError> {
    let Some(last) = batch.pop() else {
        return Ok(());
    };
    tx.buffer().extend(batch.drain(..));
    tx.send(last)
        .await
        .map(drop)
        .map_err(|e| GateError::Link(e.to_string()))
}

/// Router → device (and the gate's own answers): each burst in one write.
async fn to_device<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: LinkRx,
    mut answers: mpsc::Receiver<Bytes>,
) -> RouterEnd {
    let mut out = BytesMut::with_capacity(4096);
    let mut answers_open = true;
    let end = loop {
        let mut unscheduled = false;
        let mut closed = false;
        tokio::select! {
            biased;
            a = answers.recv(), if answers_open => match a {
                Some(a) => out.extend_from_slice(&a),
                None => answers_open = false,
            },
            n = rx.next() => {
                let mut next = Some(n);
                while let Some(n) = next {
                    match n {
                        Ok(Some(Notification::Unschedule)) => unscheduled = true,
                        // A wake-up with nothing behind it.
                        Ok(None) => break,
                        Ok(Some(Notification::Disconnect(..))) | Err(_) => {
                            // An MQTT 3.1.1 server does not send DISCONNECT: it closes.
                            closed = true;
                            break;
                        }
                        Ok(Some(n)) => {
                            if let Err(e) = encode_notification(n, &mut out) {
                                warn!(error = %e, "a packet for the device could not be encoded; dropped");
                            }
                        }
                    }
                    next = ready_now(rx.next()).await;
                }
            }
        }
        if !out.is_empty() {
            if w.write_all(&out).await.is_err() {
                break RouterEnd::DeviceGone;
            }
            out.clear();
        }
        if closed {
            break RouterEnd::Closed;
        }
        if unscheduled && rx.wake().await.is_err() {
            break RouterEnd::Closed;
        }
    };
    let _ = w.shutdown().await;
    end
}

/// Encodes what the router sends a connection as MQTT 3.1.1 bytes.
fn encode_notification(n: Notification, out: &mut BytesMut) -> Result<(), GateError> {
    let packet: Option<Packet> = n.into();
    match packet {
        Some(p) => V4
            .write(p, out)
            .map(drop)
            .map_err(|e| GateError::Protocol(format!("cannot encode for the device: {e}"))),
        None => Ok(()),
    }
}

/// The output of `f` if it is ready without waiting.
async fn ready_now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::LastWill;

    #[test]
    fn a_device_is_dropped_after_one_and_a_half_keep_alives_of_silence() {
        assert_eq!(idle_limit(60), Some(Duration::from_secs(90)));
        assert_eq!(idle_limit(1), Some(Duration::from_millis(1_500)));
        assert_eq!(idle_limit(0), None);
    }

    #[test]
    fn a_will_keeps_its_topic_message_and_retain_and_goes_at_most_as_qos1() {
        let mut c = Connect::new("dev-1");
        assert!(will_publish(&c).is_none());
        c.last_will = Some(LastWill::new(
            "apr/a1/d1/status",
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        let Some(Packet::Publish(p, None)) = will_publish(&c) else {
            panic!("a publish");
        };
        assert_eq!(&p.topic[..], b"apr/a1/d1/status");
        assert_eq!(&p.payload[..], b"offline");
        assert!(p.retain);
        let mut out = BytesMut::new();
        V4.write(Packet::Publish(p, None), &mut out).unwrap();
        assert_eq!(out[0], 0b0011_0011, "PUBLISH, QoS 1, retained");

        c.last_will = Some(LastWill::new(
            "apr/a1/d1/status",
            "offline",
            QoS::AtMostOnce,
            false,
        ));
        let Some(Packet::Publish(p, None)) = will_publish(&c) else {
            panic!("a publish");
        };
        let mut out = BytesMut::new();
        V4.write(Packet::Publish(p, None), &mut out).unwrap();
        assert_eq!(out[0], 0b0011_0000, "PUBLISH, QoS 0, not retained");
    }

    #[tokio::test]
    async fn what_is_ready_is_taken_and_what_is_not_is_left() {
        assert_eq!(ready_now(async { 7 }).await, Some(7));
        assert_eq!(ready_now(std::future::pending::<u8>()).await, None);
    }
}
