//! The device gate: a TCP proxy in front of the internal rumqttd that
//! authenticates each device and keeps it to its own topics.
//!
//! Per connection: the first packet must be an MQTT 3.1.1 CONNECT. Its login
//! is checked against the [`DeviceDirectory`]; its will, if any, must be on the
//! device's own `status` topic. The login is then replaced by the internal
//! credentials and the CONNECT goes to rumqttd. After that, broker → client
//! bytes are copied (whole packets, so the gate can interleave its own
//! answers), and client → broker packets are judged one by one
//! ([`judge`], pure): PUBLISH only to the device's own `up` and `status`,
//! SUBSCRIBE only to its own `config` and `ack`. A denied PUBLISH is answered
//! by the gate itself (PUBACK at QoS 1, PUBREC / PUBCOMP at QoS 2) so the
//! client is not stuck; a SUBSCRIBE with any denied filter is answered with a
//! SUBACK of failure codes and not forwarded.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Login, Packet, PubAck, PubComp, PubRec, SubAck, Subscribe,
    SubscribeReasonCode,
};
use rumqttc::mqttbytes::{check, Error as MqttError, FixedHeader};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use super::directory::{DeviceDirectory, DeviceGrant};
use super::{LocalLinks, MAX_PACKET_BYTES};

/// How long a new connection may take to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest packet the broker sends a client (a publish plus its topic).
const MAX_BROKER_PACKET: usize = MAX_PACKET_BYTES + 64 * 1024;
/// Packets queued towards one client.
pub(super) const CLIENT_QUEUE: usize = 64;
/// How long the broker may take to close after the client went away.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The first byte of an MQTT 3.1.1 DISCONNECT.
const DISCONNECT_BYTE: u8 = 0xe0;
/// Read buffer growth step.
const READ_CHUNK: usize = 32 * 1024;

/// Counters of the gate.
#[derive(Debug, Default)]
pub(crate) struct GateCounters {
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_abandoned: AtomicU64,
    pub publishes_denied: AtomicU64,
    pub subscribes_denied: AtomicU64,
    /// Client ids given to clients that sent none (clean sessions only).
    pub anonymous_ids: AtomicU64,
}

/// A snapshot of the gate's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GateStats {
    /// Device connections authenticated and passed to the broker.
    pub connections_accepted: u64,
    /// Connections refused (bad or missing login, foreign will, MQTT 5, not a CONNECT).
    pub connections_refused: u64,
    /// Connections whose client had already closed its side when the gate
    /// got to its CONNECT (it gave up waiting while the connection sat in
    /// the accept queue); not passed on, so they cannot take over the
    /// session of the client's live reconnection.
    pub connections_abandoned: u64,
    /// PUBLISH packets to topics not the device's own (not forwarded).
    pub publishes_denied: u64,
    /// SUBSCRIBE packets with a filter not the device's own (not forwarded).
    pub subscribes_denied: u64,
}

impl GateCounters {
    pub fn snapshot(&self) -> GateStats {
        GateStats {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            connections_abandoned: self.connections_abandoned.load(Relaxed),
            publishes_denied: self.publishes_denied.load(Relaxed),
            subscribes_denied: self.subscribes_denied.load(Relaxed),
        }
    }
}

/// What every gate connection shares.
pub(crate) struct GateShared {
    pub directory: Arc<DeviceDirectory>,
    /// The hop to rumqttd: its router over local links, or (`None`) a TCP
    /// connection per device to `internal_addr`.
    pub local: Option<LocalLinks>,
    pub internal_addr: SocketAddr,
    pub internal_username: String,
    pub internal_password: String,
    pub counters: GateCounters,
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub(super) enum GateError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("client queue closed")]
    QueueClosed,
    #[error("link to the broker's router: {0}")]
    Link(String),
}

impl From<MqttError> for GateError {
    fn from(e: MqttError) -> Self {
        GateError::Protocol(e.to_string())
    }
}

/// The decision on a client's CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnectDecision {
    Accept(Arc<DeviceGrant>),
    Refuse(ConnectReturnCode, &'static str),
}

/// Decides on a client's (MQTT 3.1.1) CONNECT.
pub(crate) fn decide_connect(connect: &Connect, directory: &DeviceDirectory) -> ConnectDecision {
    let Some(login) = &connect.login else {
        return ConnectDecision::Refuse(ConnectReturnCode::NotAuthorized, "anonymous");
    };
    let Some(grant) = directory.authenticate(&login.username, &login.password) else {
        return ConnectDecision::Refuse(
            ConnectReturnCode::BadUserNamePassword,
            "unknown username or wrong password",
        );
    };
    if let Some(will) = &connect.last_will {
        if !grant.is_status_topic(&will.topic) {
            return ConnectDecision::Refuse(
                ConnectReturnCode::NotAuthorized,
                "will not on the device's own status topic",
            );
        }
    }
    if connect.client_id.is_empty() && !connect.clean_session {
        // MQTT 3.1.1 §3.1.3.1: a persistent session needs a client id.
        return ConnectDecision::Refuse(
            ConnectReturnCode::BadClientId,
            "empty client id with a persistent session",
        );
    }
    if connect.client_id.contains(ROUTER_REFUSES_IN_IDS) {
        return ConnectDecision::Refuse(
            ConnectReturnCode::BadClientId,
            "client id with +, $, # or / (the broker cannot take it)",
        );
    }
    ConnectDecision::Accept(grant)
}

/// Characters rumqttd's router refuses in a client id (it drops such a
/// connection without a CONNACK), so the gate refuses them first, clearly.
const ROUTER_REFUSES_IN_IDS: [char; 4] = ['+', '$', '#', '/'];

/// The client id the gate gives the `n`-th clean session of `username`
/// that sent none (MQTT 3.1.1 §3.1.3.1 lets the server assign one):
/// `gate-{username}-{n}` with every character outside `[A-Za-z0-9._-]`
/// (a username like `apr/device` has a `/`) replaced by `_`.
pub(crate) fn assigned_client_id(username: &str, n: u64) -> String {
    let name: String = username
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("gate-{name}-{n}")
}

/// Length of the fixed header of a complete frame.
fn header_len(frame: &[u8]) -> usize {
    1 + frame
        .iter()
        .skip(1)
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(4, |i| i + 1)
}

/// The protocol level of a CONNECT frame (4 = MQTT 3.1.1, 5 = MQTT 5).
fn protocol_level(frame: &[u8]) -> Option<u8> {
    let h = header_len(frame);
    let name_len = usize::from(u16::from_be_bytes([*frame.get(h)?, *frame.get(h + 1)?]));
    frame.get(h + 2 + name_len).copied()
}

fn u16_at(frame: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
}

/// Topic, QoS and packet id of a PUBLISH frame.
fn publish_parts(frame: &[u8]) -> Option<(&[u8], u8, u16)> {
    let h = header_len(frame);
    let qos = (frame.first()? >> 1) & 0b11;
    let len = usize::from(u16_at(frame, h)?);
    let topic = frame.get(h + 2..h + 2 + len)?;
    let pkid = if qos > 0 {
        u16_at(frame, h + 2 + len)?
    } else {
        0
    };
    Some((topic, qos, pkid))
}

fn encode(packet: &Packet) -> Bytes {
    let mut b = BytesMut::with_capacity(packet.size());
    // Only small acknowledgment packets are encoded here; they cannot fail.
    let _ = packet.write(&mut b, usize::MAX);
    b.freeze()
}

/// The gate's verdict on one client → broker packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Pass it to the broker.
    Forward,
    /// A PUBLISH outside the device's topics; `answer` (if any) goes back.
    DenyPublish {
        topic: String,
        answer: Option<Bytes>,
    },
    /// A SUBSCRIBE with a filter outside the device's topics.
    DenySubscribe { filters: Vec<String>, answer: Bytes },
    /// A packet the gate answers itself (PUBREL of a denied QoS 2 publish).
    Answer(Bytes),
    /// A protocol violation: close the connection.
    Close(String),
}

/// Judges one complete client → broker frame. `denied_qos2` remembers the
/// packet ids of denied QoS 2 publishes, whose PUBREL the gate completes.
pub(super) fn judge(
    frame: &Bytes,
    fixed_header: FixedHeader,
    grant: &DeviceGrant,
    denied_qos2: &mut HashSet<u16>,
) -> Verdict {
    match frame.first().map(|b| b >> 4) {
        Some(3) => {
            let Some((topic, qos, pkid)) = publish_parts(frame) else {
                return Verdict::Close("malformed PUBLISH".into());
            };
            if grant.may_publish(topic) {
                return Verdict::Forward;
            }
            let answer = match qos {
                1 => Some(encode(&Packet::PubAck(PubAck::new(pkid)))),
                2 => {
                    denied_qos2.insert(pkid);
                    Some(encode(&Packet::PubRec(PubRec::new(pkid))))
                }
                _ => None,
            };
            Verdict::DenyPublish {
                topic: String::from_utf8_lossy(topic).into_owned(),
                answer,
            }
        }
        Some(6) => {
            let Some(pkid) = u16_at(frame, header_len(frame)) else {
                return Verdict::Close("malformed PUBREL".into());
            };
            if denied_qos2.remove(&pkid) {
                Verdict::Answer(encode(&Packet::PubComp(PubComp::new(pkid))))
            } else {
                Verdict::Forward
            }
        }
        Some(8) => match Subscribe::read(fixed_header, frame.clone()) {
            Ok(s) if s.filters.iter().all(|f| grant.may_subscribe(&f.path)) => Verdict::Forward,
            Ok(s) => Verdict::DenySubscribe {
                filters: s
                    .filters
                    .iter()
                    .filter(|f| !grant.may_subscribe(&f.path))
                    .map(|f| f.path.clone())
                    .collect(),
                answer: encode(&Packet::SubAck(SubAck::new(
                    s.pkid,
                    vec![SubscribeReasonCode::Failure; s.filters.len()],
                ))),
            },
            Err(e) => Verdict::Close(format!("malformed SUBSCRIBE: {e}")),
        },
        Some(1) => Verdict::Close("second CONNECT".into()),
        _ => Verdict::Forward,
    }
}

/// Total length of the complete frames at the start of `buf`.
fn complete_prefix(buf: &[u8], max: usize) -> Result<usize, MqttError> {
    let mut at = 0;
    while at < buf.len() {
        match check(buf[at..].iter(), max) {
            Ok(fh) => at += fh.frame_length(),
            Err(MqttError::InsufficientBytes(_)) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

pub(super) async fn read_more<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<bool, std::io::Error> {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    Ok(r.read_buf(buf).await? > 0)
}

/// Takes the next complete packet off the front of `buf` with its fixed
/// header, or `None` until more bytes arrive.
pub(super) fn next_frame(buf: &mut BytesMut) -> Result<Option<(Bytes, FixedHeader)>, GateError> {
    match check(buf.iter(), MAX_PACKET_BYTES) {
        Ok(fh) => Ok(Some((buf.split_to(fh.frame_length()).freeze(), fh))),
        Err(MqttError::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Counts and logs a publish the gate refused.
pub(super) fn publish_denied(shared: &GateShared, grant: &DeviceGrant, topic: &str) {
    shared.counters.publishes_denied.fetch_add(1, Relaxed);
    warn!(username = %grant.username, %topic, "publish denied: not the device's own up or status topic");
}

/// Counts and logs a subscribe the gate refused.
pub(super) fn subscribe_denied(shared: &GateShared, grant: &DeviceGrant, filters: &[String]) {
    shared.counters.subscribes_denied.fetch_add(1, Relaxed);
    warn!(username = %grant.username, ?filters, "subscribe denied: not the device's own config or ack topic");
}

/// Reads until `buf` starts with a complete packet.
async fn read_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<FixedHeader, GateError> {
    loop {
        match check(buf.iter(), MAX_PACKET_BYTES) {
            Ok(fh) => return Ok(fh),
            Err(MqttError::InsufficientBytes(_)) => {
                if !read_more(r, buf).await? {
                    return Err(GateError::Protocol("closed before CONNECT".into()));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether the client has already closed its side: end of stream right
/// behind what was read (without waiting; any data that is there is
/// appended to `buf`). A client whose connect timed out while its
/// connection waited in the accept queue (a reconnect storm) left its
/// CONNECT behind; passing that on would take over, and so end, the session
/// of the same client's live retry.
async fn client_gone<R: AsyncRead + Unpin>(
    cr: &mut R,
    buf: &mut BytesMut,
) -> Result<bool, std::io::Error> {
    tokio::select! {
        biased;
        more = read_more(cr, buf) => Ok(!more?),
        () = std::future::ready(()) => Ok(false),
    }
}

/// Refuses a connection with a CONNACK and closes it.
async fn refuse<W: AsyncWrite + Unpin>(mut w: W, connack: &[u8], shared: &GateShared) {
    shared.counters.connections_refused.fetch_add(1, Relaxed);
    let _ = w.write_all(connack).await;
    let _ = w.shutdown().await;
}

/// Refuses a connection with CONNACK "server unavailable" (the broker
/// behind the gate cannot take it).
pub(super) async fn refuse_unavailable<W: AsyncWrite + Unpin>(w: W, shared: &GateShared) {
    let connack = encode(&Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::ServiceUnavailable,
        false,
    )));
    refuse(w, &connack, shared).await;
}

/// Serves one plain client connection to the end.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<GateShared>) {
    let span = tracing::info_span!("device_connection", %peer, username = tracing::field::Empty);
    let _ = stream.set_nodelay(true);
    let (cr, cw) = stream.into_split();
    if let Err(e) = serve_inner(cr, cw, &shared).instrument(span.clone()).await {
        span.in_scope(|| debug!(error = %e, "connection ended"));
    }
}

/// Serves one client connection over TLS to the end: the handshake (within
/// the CONNECT timeout; a failure is counted as a refused connection), then
/// the same gate as in the clear.
pub(crate) async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<GateShared>,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    let span = tracing::info_span!("device_connection", %peer, tls = true, username = tracing::field::Empty);
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            shared.counters.connections_refused.fetch_add(1, Relaxed);
            span.in_scope(|| warn!(error = %e, "TLS handshake failed: connection refused"));
            return;
        }
        Err(_) => {
            shared.counters.connections_refused.fetch_add(1, Relaxed);
            span.in_scope(|| warn!("no TLS handshake in time: connection refused"));
            return;
        }
    };
    let (cr, cw) = tokio::io::split(tls);
    if let Err(e) = serve_inner(cr, cw, &shared).instrument(span.clone()).await {
        span.in_scope(|| debug!(error = %e, "connection ended"));
    }
}

async fn serve_inner<R, W>(mut cr: R, cw: W, shared: &GateShared) -> Result<(), GateError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(4096);
    let fh = match tokio::time::timeout(CONNECT_TIMEOUT, read_packet(&mut cr, &mut buf)).await {
        Ok(Ok(fh)) => fh,
        Ok(Err(e)) => {
            shared.counters.connections_refused.fetch_add(1, Relaxed);
            return Err(e);
        }
        Err(_) => {
            shared.counters.connections_refused.fetch_add(1, Relaxed);
            return Err(GateError::Protocol("no CONNECT in time".into()));
        }
    };
    if buf.first().map(|b| b >> 4) != Some(1) {
        shared.counters.connections_refused.fetch_add(1, Relaxed);
        return Err(GateError::Protocol("first packet is not CONNECT".into()));
    }
    match protocol_level(&buf[..fh.frame_length()]) {
        Some(4) => {}
        Some(5) => {
            // MQTT 5 CONNACK: reason 0x84 Unsupported Protocol Version, no properties.
            warn!("MQTT 5 client refused: the embedded broker's gate speaks MQTT 3.1.1 only");
            refuse(cw, &[0x20, 0x03, 0x00, 0x84, 0x00], shared).await;
            return Ok(());
        }
        level => {
            warn!(?level, "unsupported MQTT protocol level refused");
            let connack = encode(&Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::RefusedProtocolVersion,
                false,
            )));
            refuse(cw, &connack, shared).await;
            return Ok(());
        }
    }
    let mut connect = match Packet::read(&mut buf, MAX_PACKET_BYTES)? {
        Packet::Connect(c) => c,
        _ => return Err(GateError::Protocol("first packet is not CONNECT".into())),
    };
    let username = connect
        .login
        .as_ref()
        .map(|l| l.username.clone())
        .unwrap_or_default();
    tracing::Span::current().record("username", username.as_str());
    let grant = match decide_connect(&connect, &shared.directory) {
        ConnectDecision::Accept(g) => g,
        ConnectDecision::Refuse(code, why) => {
            warn!(%username, client_id = %connect.client_id, reason = why, "device connection refused");
            refuse(
                cw,
                &encode(&Packet::ConnAck(ConnAck::new(code, false))),
                shared,
            )
            .await;
            return Ok(());
        }
    };
    if client_gone(&mut cr, &mut buf).await? {
        shared.counters.connections_abandoned.fetch_add(1, Relaxed);
        info!(%username, client_id = %connect.client_id, "the client closed before its CONNECT was handled; not passed on");
        return Ok(());
    }
    if connect.client_id.is_empty() {
        connect.client_id = assigned_client_id(
            &grant.username,
            shared.counters.anonymous_ids.fetch_add(1, Relaxed),
        );
    }
    if let Some(links) = &shared.local {
        return super::local_session::serve(cr, buf, cw, connect, &grant, links, shared).await;
    }
    let broker = match TcpStream::connect(shared.internal_addr).await {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "internal broker unreachable");
            refuse_unavailable(cw, shared).await;
            return Err(e.into());
        }
    };
    let _ = broker.set_nodelay(true);
    shared.counters.connections_accepted.fetch_add(1, Relaxed);
    info!(%username, apr = %grant.apr, device = %grant.device, "device connected");
    connect.login = Some(Login::new(
        shared.internal_username.clone(),
        shared.internal_password.clone(),
    ));
    let (br, mut bw) = broker.into_split();
    bw.write_all(&encode(&Packet::Connect(connect))).await?;

    let (to_client, queue) = mpsc::channel::<Bytes>(CLIENT_QUEUE);
    let writer = tokio::spawn(write_client(cw, queue).in_current_span());
    let client_side = pump_client(cr, buf, &mut bw, to_client.clone(), &grant, shared);
    let broker_side = pump_broker(br, to_client);
    tokio::pin!(broker_side);
    let result = tokio::select! {
        r = client_side => {
            // The client is done (its DISCONNECT passed on, or our FIN sent):
            // let the broker finish (its last packets, its close) rather
            // than resetting it.
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut broker_side).await;
            r
        }
        r = &mut broker_side => r,
    };
    drop(bw);
    let _ = writer.await;
    info!(%username, "device disconnected");
    result
}

/// Writes queued packets to the client until every sender is gone.
async fn write_client<W: AsyncWrite + Unpin>(mut w: W, mut queue: mpsc::Receiver<Bytes>) {
    let mut chunks = Vec::with_capacity(CLIENT_QUEUE);
    while queue.recv_many(&mut chunks, CLIENT_QUEUE).await > 0 {
        for c in chunks.drain(..) {
            if w.write_all(&c).await.is_err() {
                return;
            }
        }
    }
    let _ = w.shutdown().await;
}

/// Broker → client: whole packets, as they come.
async fn pump_broker(
    mut br: tokio::net::tcp::OwnedReadHalf,
    to_client: mpsc::Sender<Bytes>,
) -> Result<(), GateError> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if !read_more(&mut br, &mut buf).await? {
            return Ok(());
        }
        let n = complete_prefix(&buf, MAX_BROKER_PACKET)?;
        if n > 0 {
            to_client
                .send(buf.split_to(n).freeze())
                .await
                .map_err(|_| GateError::QueueClosed)?;
        }
    }
}

/// Client → broker: packet by packet, through [`judge`]. Ends after a
/// DISCONNECT is passed on without closing `bw`: rumqttd closes first.
/// (rumqttd 0.20's remote link, seeing our close before its router drops
/// the session, sends the router a second disconnect for a connection id
/// the router may already have given to another device.) Ends with a FIN
/// on `bw` when the client closes without one.
async fn pump_client<R: AsyncRead + Unpin>(
    mut cr: R,
    mut buf: BytesMut,
    bw: &mut tokio::net::tcp::OwnedWriteHalf,
    to_client: mpsc::Sender<Bytes>,
    grant: &DeviceGrant,
    shared: &GateShared,
) -> Result<(), GateError> {
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut denied_qos2 = HashSet::new();
    loop {
        while let Some((frame, fh)) = next_frame(&mut buf)? {
            match judge(&frame, fh, grant, &mut denied_qos2) {
                Verdict::Forward if frame.first() == Some(&DISCONNECT_BYTE) => {
                    out.extend_from_slice(&frame);
                    bw.write_all(&out).await?;
                    return Ok(());
                }
                Verdict::Forward => out.extend_from_slice(&frame),
                Verdict::DenyPublish { topic, answer } => {
                    publish_denied(shared, grant, &topic);
                    if let Some(a) = answer {
                        to_client
                            .send(a)
                            .await
                            .map_err(|_| GateError::QueueClosed)?;
                    }
                }
                Verdict::DenySubscribe { filters, answer } => {
                    subscribe_denied(shared, grant, &filters);
                    to_client
                        .send(answer)
                        .await
                        .map_err(|_| GateError::QueueClosed)?;
                }
                Verdict::Answer(a) => to_client
                    .send(a)
                    .await
                    .map_err(|_| GateError::QueueClosed)?,
                Verdict::Close(why) => {
                    warn!(username = %grant.username, reason = %why, "connection closed by the gate");
                    return Err(GateError::Protocol(why));
                }
            }
        }
        if !out.is_empty() {
            bw.write_all(&out).await?;
            out.clear();
        }
        if !read_more(&mut cr, &mut buf).await? {
            bw.shutdown().await?;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::{LastWill, PubRel, Publish};
    use rumqttc::mqttbytes::QoS;

    fn frame(p: &Packet) -> (Bytes, FixedHeader) {
        let b = encode(p);
        let fh = check(b.iter(), usize::MAX).unwrap();
        (b, fh)
    }

    fn publish(topic: &str, qos: QoS, pkid: u16) -> Packet {
        let mut p = Publish::new(topic, qos, b"x".to_vec());
        p.pkid = pkid;
        Packet::Publish(p)
    }

    #[test]
    fn publishes_to_the_devices_own_topics_are_forwarded() {
        let g = DeviceGrant::new("u", "a1", "d1");
        let mut q2 = HashSet::new();
        for t in ["apr/a1/d1/up", "apr/a1/d1/status"] {
            let (f, fh) = frame(&publish(t, QoS::AtLeastOnce, 7));
            assert_eq!(judge(&f, fh, &g, &mut q2), Verdict::Forward);
        }
    }

    #[test]
    fn a_denied_qos1_publish_is_answered_with_a_puback_by_the_gate() {
        let g = DeviceGrant::new("u", "a1", "d1");
        let mut q2 = HashSet::new();
        let (f, fh) = frame(&publish("apr/a1/d2/up", QoS::AtLeastOnce, 7));
        assert_eq!(
            judge(&f, fh, &g, &mut q2),
            Verdict::DenyPublish {
                topic: "apr/a1/d2/up".into(),
                answer: Some(encode(&Packet::PubAck(PubAck::new(7))))
            }
        );
        let (f, fh) = frame(&publish("apr/a1/d1/ack", QoS::AtMostOnce, 0));
        assert!(matches!(
            judge(&f, fh, &g, &mut q2),
            Verdict::DenyPublish { answer: None, .. }
        ));
    }

    #[test]
    fn a_denied_qos2_publish_is_completed_by_the_gate() {
        let g = DeviceGrant::new("u", "a1", "d1");
        let mut q2 = HashSet::new();
        let (f, fh) = frame(&publish("x/y", QoS::ExactlyOnce, 9));
        assert!(matches!(
            judge(&f, fh, &g, &mut q2),
            Verdict::DenyPublish {
                answer: Some(_),
                ..
            }
        ));
        let (f, fh) = frame(&Packet::PubRel(PubRel::new(9)));
        assert_eq!(
            judge(&f, fh, &g, &mut q2),
            Verdict::Answer(encode(&Packet::PubComp(PubComp::new(9))))
        );
        let (f, fh) = frame(&Packet::PubRel(PubRel::new(9)));
        assert_eq!(
            judge(&f, fh, &g, &mut q2),
            Verdict::Forward,
            "a PUBREL of a forwarded publish goes to the broker"
        );
    }

    #[test]
    fn a_subscribe_with_any_foreign_filter_is_denied_whole() {
        let g = DeviceGrant::new("u", "a1", "d1");
        let mut q2 = HashSet::new();
        let mut s = Subscribe::new("apr/a1/d1/ack", QoS::AtLeastOnce);
        s.pkid = 3;
        let (f, fh) = frame(&Packet::Subscribe(s.clone()));
        assert_eq!(judge(&f, fh, &g, &mut q2), Verdict::Forward);
        s.add("apr/a1/d2/ack".into(), QoS::AtLeastOnce);
        let (f, fh) = frame(&Packet::Subscribe(s));
        assert_eq!(
            judge(&f, fh, &g, &mut q2),
            Verdict::DenySubscribe {
                filters: vec!["apr/a1/d2/ack".into()],
                answer: encode(&Packet::SubAck(SubAck::new(
                    3,
                    vec![SubscribeReasonCode::Failure; 2]
                )))
            }
        );
    }

    /// A directory with device a1/d1, username u1, password `pw`.
    fn one_device() -> DeviceDirectory {
        DeviceDirectory::new(vec![apr_wire::ingest::GatewayDevice {
            apr: "a1".into(),
            device: "d1".into(),
            mqtt_username: "u1".into(),
            mqtt_password_sha256: super::super::password_sha256("pw"),
            report_interval_s: 60,
            config: serde_json::Value::Null,
        }])
    }

    #[test]
    fn connects_need_the_right_login_and_an_own_will() {
        let dir = one_device();
        let mut c = Connect::new("c");
        assert_eq!(
            decide_connect(&c, &dir),
            ConnectDecision::Refuse(ConnectReturnCode::NotAuthorized, "anonymous")
        );
        c.set_login("u1", "nope");
        assert!(matches!(
            decide_connect(&c, &dir),
            ConnectDecision::Refuse(ConnectReturnCode::BadUserNamePassword, _)
        ));
        c.set_login("u1", "pw");
        assert!(matches!(
            decide_connect(&c, &dir),
            ConnectDecision::Accept(_)
        ));
        c.last_will = Some(LastWill::new(
            "apr/a1/d1/status",
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        assert!(matches!(
            decide_connect(&c, &dir),
            ConnectDecision::Accept(_)
        ));
        c.last_will = Some(LastWill::new(
            "apr/a1/d2/status",
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        assert!(matches!(
            decide_connect(&c, &dir),
            ConnectDecision::Refuse(ConnectReturnCode::NotAuthorized, _)
        ));
    }

    #[test]
    fn client_ids_the_broker_cannot_take_are_refused_and_empty_ones_assigned() {
        let dir = one_device();
        let mut c = Connect::new("");
        c.set_login("u1", "pw");
        assert!(matches!(
            decide_connect(&c, &dir),
            ConnectDecision::Accept(_)
        ));
        c.clean_session = false;
        assert!(matches!(
            decide_connect(&c, &dir),
            ConnectDecision::Refuse(ConnectReturnCode::BadClientId, _)
        ));
        for id in ["a/b", "a+b", "a#", "$sys"] {
            c.client_id = id.into();
            c.clean_session = true;
            assert!(
                matches!(
                    decide_connect(&c, &dir),
                    ConnectDecision::Refuse(ConnectReturnCode::BadClientId, _)
                ),
                "{id}"
            );
        }
        c.client_id = "caseta-1.b_2".into();
        assert!(matches!(
            decide_connect(&c, &dir),
            ConnectDecision::Accept(_)
        ));
        assert_eq!(
            assigned_client_id("el-alamo/caseta", 3),
            "gate-el-alamo_caseta-3"
        );
        assert_eq!(assigned_client_id("u1", 0), "gate-u1-0");
        assert_eq!(assigned_client_id("ñ+#$ x", 1), "gate-_____x-1");
    }

    /// A client that gave up on a connection (its connect timeout) while it
    /// waited in the accept queue leaves a CONNECT and an end of stream
    /// behind. Passed on, that CONNECT would make the broker drop the session
    /// of the same client's live retry (same client id).
    #[tokio::test]
    async fn a_connect_from_a_client_that_already_closed_is_not_passed_on() {
        use tokio::io::AsyncWriteExt as _;
        let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shared = Arc::new(GateShared {
            directory: Arc::new(one_device()),
            local: None,
            internal_addr: internal.local_addr().unwrap(),
            internal_username: "internal".into(),
            internal_password: "secret".into(),
            counters: GateCounters::default(),
        });
        let mut c = Connect::new("a1.d1");
        c.set_login("u1", "pw");
        let connect = encode(&Packet::Connect(c));

        // Abandoned: the CONNECT, then the end of stream.
        let (mut client, gate_side) = tokio::io::duplex(4096);
        client.write_all(&connect).await.unwrap();
        client.shutdown().await.unwrap();
        let (cr, cw) = tokio::io::split(gate_side);
        tokio::time::timeout(Duration::from_secs(5), serve_inner(cr, cw, &shared))
            .await
            .expect("the gate ends an abandoned connection at once")
            .unwrap();
        assert_eq!(shared.counters.connections_abandoned.load(Relaxed), 1);
        assert_eq!(shared.counters.connections_accepted.load(Relaxed), 0);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), internal.accept())
                .await
                .is_err(),
            "the broker must not see the abandoned CONNECT"
        );

        // Live: the same CONNECT on an open connection is passed on, with the
        // internal login.
        let (mut client, gate_side) = tokio::io::duplex(4096);
        client.write_all(&connect).await.unwrap();
        let (cr, cw) = tokio::io::split(gate_side);
        let gate = {
            let shared = shared.clone();
            tokio::spawn(async move { serve_inner(cr, cw, &shared).await })
        };
        let (mut broker_side, _) = tokio::time::timeout(Duration::from_secs(5), internal.accept())
            .await
            .expect("the gate connects to the broker")
            .unwrap();
        let mut got = BytesMut::new();
        let fh = read_packet(&mut broker_side, &mut got).await.unwrap();
        let _ = fh;
        match Packet::read(&mut got, MAX_PACKET_BYTES).unwrap() {
            Packet::Connect(c) => {
                assert_eq!(c.client_id, "a1.d1");
                assert_eq!(c.login.map(|l| l.username).as_deref(), Some("internal"));
            }
            other => panic!("expected the CONNECT, got {other:?}"),
        }
        assert_eq!(shared.counters.connections_accepted.load(Relaxed), 1);
        assert_eq!(shared.counters.connections_abandoned.load(Relaxed), 1);
        gate.abort();
    }

    #[test]
    fn frames_are_split_only_at_packet_boundaries() {
        let (a, _) = frame(&publish("apr/a1/d1/ack", QoS::AtLeastOnce, 1));
        let (b, _) = frame(&Packet::PingResp);
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        assert_eq!(complete_prefix(&all, usize::MAX).unwrap(), all.len());
        assert_eq!(
            complete_prefix(&all[..all.len() - 1], usize::MAX).unwrap(),
            a.len()
        );
        assert_eq!(complete_prefix(&all[..3], usize::MAX).unwrap(), 0);
    }

    #[test]
    fn the_protocol_level_is_read_from_the_connect_frame() {
        let (f, _) = frame(&Packet::Connect(Connect::new("c")));
        assert_eq!(protocol_level(&f), Some(4));
        let mut v5 = f.to_vec();
        let at = header_len(&v5) + 6;
        v5[at] = 5;
        assert_eq!(protocol_level(&v5), Some(5));
    }
}
