//! An MQTT 3.1.1 client session as a state machine with no I/O: it writes
//! the packets to send into the caller's buffer and reads the frames the
//! caller received (the rumqttc `state.rs` shape). `mqttrs` encodes and
//! decodes the packets; SUBSCRIBE is written here (mqttrs wants an older
//! `heapless` for it).
//!
//! Why not a client crate: the site's embedded broker speaks MQTT 3.1.1
//! only and wants a username and password; the maintained `no_std` clients
//! are MQTT 5 only (`minimq`, `rust-mqtt`) or QoS 0 without credentials
//! (`w5500-mqtt`). See README, "MQTT".
//!
//! What the device needs, and all it does:
//! - CONNECT with clean session, username and password, keep-alive
//!   [`KEEP_ALIVE_S`], and the will: `status` = `offline`, retained, QoS 1.
//! - On CONNACK: `status` = `online` retained, SUBSCRIBE to `ack` and
//!   `config` at QoS 1.
//! - `up` at QoS 1 with one packet in flight; the PUBACK only frees the
//!   slot (the outbox releases a pack on the gateway's `ack`, not here).
//! - Incoming QoS 1 PUBLISH is answered with PUBACK once handled.
//! - PINGREQ after half the keep-alive without sending; the session is
//!   dropped when nothing was received for 1.5 × keep-alive, when CONNACK
//!   does not come, or when a PUBACK is overdue.

use core::fmt::Write as _;

use heapless::String;
use mqttrs::{
    decode_slice, encode_slice, Connect, ConnectReturnCode, LastWill, Packet, Pid, Protocol,
    Publish, QoS, QosPid,
};

/// Keep-alive asked of the broker, seconds.
pub const KEEP_ALIVE_S: u16 = 60;
const CONNACK_TIMEOUT_MS: u64 = 10_000;
const PUBACK_TIMEOUT_MS: u64 = 30_000;

/// The device's four topics (CONTRACT §2).
pub struct Topics {
    /// `apr/{apr}/{device}/up`.
    pub up: String<140>,
    /// `apr/{apr}/{device}/status`.
    pub status: String<140>,
    /// `apr/{apr}/{device}/config`.
    pub config: String<140>,
    /// `apr/{apr}/{device}/ack`.
    pub ack: String<140>,
}

impl Topics {
    /// The topics of device `device` of APR `apr` (ids of at most 64
    /// characters, checked by the caller).
    pub fn new(apr: &str, device: &str) -> Self {
        let make = |channel: &str| {
            let mut s = String::new();
            // 4 + 64 + 1 + 64 + 1 + 6 characters fit 140.
            let _ = write!(s, "apr/{apr}/{device}/{channel}");
            s
        };
        Topics {
            up: make("up"),
            status: make("status"),
            config: make("config"),
            ack: make("ack"),
        }
    }
}

/// Login of the device.
pub struct Credentials<'a> {
    /// Client id (the broker keeps one session per id).
    pub client_id: &'a str,
    /// Username.
    pub user: &'a str,
    /// Password.
    pub password: &'a str,
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No session (no TCP connection, or it was dropped).
    Down,
    /// CONNECT sent.
    AwaitConnack,
    /// Connected and subscribed (SUBSCRIBE sent).
    Up,
}

/// A message the gateway sent, borrowed from the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// On `ack`: a JSON array of pack `bt`s.
    Ack(&'a [u8]),
    /// On `config`: the retained configuration.
    Config(&'a [u8]),
    /// Nothing for the application.
    Nothing,
}

/// Why the session must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// The broker refused the login.
    Refused,
    /// CONNACK, PUBACK or any packet did not come in time.
    Timeout,
    /// A packet that does not parse or does not belong here.
    Protocol,
    /// A packet to send does not fit the buffer.
    Encode,
}

/// The session.
pub struct Session {
    phase: Phase,
    next_pid: u16,
    /// Packet id of the `up` publish awaiting PUBACK, and when it was sent.
    inflight: Option<(u16, u64)>,
    since_ms: u64,
    last_tx_ms: u64,
    last_rx_ms: u64,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// No session yet.
    pub const fn new() -> Self {
        Session {
            phase: Phase::Down,
            next_pid: 1,
            inflight: None,
            since_ms: 0,
            last_tx_ms: 0,
            last_rx_ms: 0,
        }
    }

    /// Where the session is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether an `up` publish may go now (connected, nothing in flight).
    pub fn can_publish(&self) -> bool {
        self.phase == Phase::Up && self.inflight.is_none()
    }

    /// Forgets the session (the TCP connection is gone).
    pub fn down(&mut self) {
        self.phase = Phase::Down;
        self.inflight = None;
    }

    fn pid(&mut self) -> Pid {
        let pid = Pid::try_from(self.next_pid).unwrap_or_default();
        self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
        pid
    }

    /// Writes CONNECT (with the will) into `out`; the session awaits CONNACK.
    pub fn connect(
        &mut self,
        topics: &Topics,
        login: &Credentials<'_>,
        out: &mut [u8],
        now_ms: u64,
    ) -> Result<usize, Drop> {
        let packet = Packet::Connect(Connect {
            protocol: Protocol::MQTT311,
            keep_alive: KEEP_ALIVE_S,
            client_id: login.client_id,
            clean_session: true,
            last_will: Some(LastWill {
                topic: &topics.status,
                message: b"offline",
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
            username: Some(login.user),
            password: Some(login.password.as_bytes()),
        });
        let n = encode_slice(&packet, out).map_err(|_| Drop::Encode)?;
        self.phase = Phase::AwaitConnack;
        self.inflight = None;
        self.since_ms = now_ms;
        self.last_tx_ms = now_ms;
        self.last_rx_ms = now_ms;
        Ok(n)
    }

    /// Writes a QoS 1 publish of `payload` on `topic` into `out` and takes
    /// the in-flight slot. Only when [`Session::can_publish`].
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        out: &mut [u8],
        now_ms: u64,
    ) -> Result<usize, Drop> {
        let pid = self.pid();
        let packet = Packet::Publish(Publish {
            dup: false,
            qospid: QosPid::AtLeastOnce(pid),
            retain: false,
            topic_name: topic,
            payload,
        });
        let n = encode_slice(&packet, out).map_err(|_| Drop::Encode)?;
        self.inflight = Some((pid.get(), now_ms));
        self.last_tx_ms = now_ms;
        Ok(n)
    }

    /// What to send on CONNACK: `status` = `online` (retained) and one
    /// SUBSCRIBE for `ack` and `config` at QoS 1.
    fn on_connected(&mut self, topics: &Topics, out: &mut [u8]) -> Result<usize, Drop> {
        let online = Packet::Publish(Publish {
            dup: false,
            qospid: QosPid::AtMostOnce,
            retain: true,
            topic_name: &topics.status,
            payload: b"online",
        });
        let n = encode_slice(&online, out).map_err(|_| Drop::Encode)?;
        let pid = self.pid().get();
        let m = encode_subscribe(pid, &[&topics.ack, &topics.config], &mut out[n..])
            .ok_or(Drop::Encode)?;
        Ok(n + m)
    }

    /// Timers: writes a PINGREQ into `out` when one is due (returns its
    /// length, 0 if none), or says why the session must be dropped.
    pub fn tick(&mut self, out: &mut [u8], now_ms: u64) -> Result<usize, Drop> {
        let keep_alive_ms = u64::from(KEEP_ALIVE_S) * 1000;
        match self.phase {
            Phase::Down => Ok(0),
            Phase::AwaitConnack if now_ms.saturating_sub(self.since_ms) > CONNACK_TIMEOUT_MS => {
                Err(Drop::Timeout)
            }
            Phase::AwaitConnack => Ok(0),
            Phase::Up => {
                if now_ms.saturating_sub(self.last_rx_ms) > keep_alive_ms * 3 / 2 {
                    return Err(Drop::Timeout);
                }
                if let Some((_, sent)) = self.inflight {
                    if now_ms.saturating_sub(sent) > PUBACK_TIMEOUT_MS {
                        return Err(Drop::Timeout);
                    }
                }
                if now_ms.saturating_sub(self.last_tx_ms) >= keep_alive_ms / 2 {
                    self.last_tx_ms = now_ms;
                    return encode_slice(&Packet::Pingreq, out).map_err(|_| Drop::Encode);
                }
                Ok(0)
            }
        }
    }

    /// Handles one whole frame (see [`frame_len`]); writes any answer
    /// (PUBACK, the post-CONNACK packets) into `out` and returns its length
    /// with what the frame carried for the application.
    pub fn on_frame<'a>(
        &mut self,
        frame: &'a [u8],
        topics: &Topics,
        out: &mut [u8],
        now_ms: u64,
    ) -> Result<(Received<'a>, usize), Drop> {
        self.last_rx_ms = now_ms;
        let packet = match decode_slice(frame) {
            Ok(Some(p)) => p,
            Ok(None) | Err(_) => return Err(Drop::Protocol),
        };
        match (self.phase, packet) {
            (Phase::AwaitConnack, Packet::Connack(c)) => {
                if c.code != ConnectReturnCode::Accepted {
                    return Err(Drop::Refused);
                }
                self.phase = Phase::Up;
                let n = self.on_connected(topics, out)?;
                self.last_tx_ms = now_ms;
                Ok((Received::Nothing, n))
            }
            (Phase::AwaitConnack, _) => Err(Drop::Protocol),
            (Phase::Up, Packet::Puback(pid)) => {
                if self.inflight.is_some_and(|(p, _)| p == pid.get()) {
                    self.inflight = None;
                }
                Ok((Received::Nothing, 0))
            }
            (Phase::Up, Packet::Publish(p)) => {
                let what = if p.topic_name == topics.ack.as_str() {
                    Received::Ack(p.payload)
                } else if p.topic_name == topics.config.as_str() {
                    Received::Config(p.payload)
                } else {
                    Received::Nothing
                };
                let n = match p.qospid {
                    QosPid::AtMostOnce => 0,
                    QosPid::AtLeastOnce(pid) => {
                        self.last_tx_ms = now_ms;
                        encode_slice(&Packet::Puback(pid), out).map_err(|_| Drop::Encode)?
                    }
                    // Not subscribed at QoS 2; a broker must not send it.
                    QosPid::ExactlyOnce(_) => return Err(Drop::Protocol),
                };
                Ok((what, n))
            }
            (Phase::Up, Packet::Suback(_) | Packet::Pingresp) => Ok((Received::Nothing, 0)),
            (Phase::Up, _) => Err(Drop::Protocol),
            (Phase::Down, _) => Ok((Received::Nothing, 0)),
        }
    }
}

/// The length of the frame at the start of `buf` (fixed header included),
/// once its header is complete: `None` while more bytes are needed,
/// `Some(Err(()))` for a malformed length.
pub fn frame_len(buf: &[u8]) -> Option<Result<usize, ()>> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        remaining |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some(Ok(1 + i + 1 + remaining));
        }
    }
    Some(Err(()))
}

/// The packet id of a QoS 1 PUBLISH frame from its first bytes (enough to
/// acknowledge a frame too large to keep): `None` if not there yet or not
/// a QoS 1 publish.
pub fn publish_pid(head: &[u8]) -> Option<u16> {
    let first = *head.first()?;
    if first >> 4 != 3 || (first >> 1) & 3 != 1 {
        return None;
    }
    let mut at = 1;
    while head.get(at)? & 0x80 != 0 {
        at += 1;
    }
    at += 1;
    let topic_len = usize::from(u16::from_be_bytes([*head.get(at)?, *head.get(at + 1)?]));
    let p = at + 2 + topic_len;
    Some(u16::from_be_bytes([*head.get(p)?, *head.get(p + 1)?]))
}

/// Writes a PUBACK for `pid` into `out`.
pub fn puback(pid: u16, out: &mut [u8]) -> Option<usize> {
    let pid = Pid::try_from(pid).ok()?;
    encode_slice(&Packet::Puback(pid), out).ok()
}

/// SUBSCRIBE (MQTT 3.1.1 §3.8) for `filters` at QoS 1.
fn encode_subscribe(pid: u16, filters: &[&str], out: &mut [u8]) -> Option<usize> {
    let remaining: usize = 2 + filters.iter().map(|f| 2 + f.len() + 1).sum::<usize>();
    if remaining > 127 * 128 {
        return None;
    }
    let mut at = 0;
    let mut put = |bytes: &[u8]| -> Option<()> {
        out.get_mut(at..at + bytes.len())?.copy_from_slice(bytes);
        at += bytes.len();
        Some(())
    };
    put(&[0x82])?;
    if remaining < 128 {
        put(&[remaining as u8])?;
    } else {
        put(&[(remaining % 128) as u8 | 0x80, (remaining / 128) as u8])?;
    }
    put(&pid.to_be_bytes())?;
    for f in filters {
        put(&(f.len() as u16).to_be_bytes())?;
        put(f.as_bytes())?;
        put(&[1])?;
    }
    Some(at)
}

/// The `bt`s of an `ack` payload (`[1764064800,1764065100.5]`), one by one;
/// anything that is not a number is skipped.
pub fn ack_bts(payload: &[u8]) -> impl Iterator<Item = f64> + '_ {
    let text = core::str::from_utf8(payload).unwrap_or("");
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or("");
    inner
        .split(',')
        .filter_map(|s| s.trim().parse::<f64>().ok())
        .filter(|bt| bt.is_finite())
}
