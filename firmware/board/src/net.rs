//! The network on the W5500: link, DHCP, SNTP and the MQTT connection to
//! the site broker, all polled from the main loop (no interrupts, no
//! allocator, no async runtime).
//!
//! The W5500 runs TCP/IP in hardware, so the MCU keeps no TCP state: it
//! reads socket status registers and moves bytes. Sockets: 0 MQTT (8 KiB
//! each way, for `ack` batches), 1 DHCP, 2 SNTP (2 KiB each); 3-7 unused.
//!
//! Recovery, from the mildest: a dropped session reconnects with backoff
//! (2 s doubling to 60 s); a broker unreachable for [`CHIP_RESET_AFTER_MS`]
//! resets the W5500 through its reset pin (a wedged chip is the one fault
//! software cannot see); the watchdog covers the rest.

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use w5500_dhcp::Hostname;
use w5500_hl::ll::net::{Eui48Addr, Ipv4Addr, SocketAddrV4};
use w5500_hl::ll::{
    BufferSize, LinkStatus, Registers, Sn, SocketCommand, SocketInterrupt, SocketStatus,
};
use w5500_hl::Tcp as _;

use crate::clock::WallClock;
use crate::mqtt::{self, Credentials, Drop, Phase, Received, Session, Topics};

const MQTT_SN: Sn = Sn::Sn0;
const DHCP_SN: Sn = Sn::Sn1;
const SNTP_SN: Sn = Sn::Sn2;
const MQTT_SRC_PORT: u16 = 49_152;
const SNTP_SRC_PORT: u16 = 49_153;

/// A broker unreachable this long resets the W5500.
pub const CHIP_RESET_AFTER_MS: u64 = 10 * 60_000;
/// SNTP again after this long (the crystal drifts a few seconds a day).
const SNTP_EVERY_MS: u64 = 6 * 3_600_000;
const SNTP_RETRY_MS: u64 = 5_000;
const BACKOFF_MIN_MS: u64 = 2_000;
const BACKOFF_MAX_MS: u64 = 60_000;

/// Bytes of an MQTT frame the device keeps whole (an `ack` of about 250
/// `bt`s); a larger frame is acknowledged and skipped.
const RX_BYTES: usize = 4096;
/// Bytes of the largest packet the device sends (a pack plus topic).
pub const TX_BYTES: usize = 1536;

/// Where the network is, for the status LED and the health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetState {
    /// No Ethernet link.
    NoLink,
    /// Link up, no DHCP lease yet.
    NoAddress,
    /// Address, but no MQTT session.
    Connecting,
    /// MQTT session up.
    Online,
}

/// The W5500 and everything on it.
pub struct Net<W, RST, D> {
    w5500: W,
    reset: RST,
    delay: D,
    mac: Eui48Addr,
    hostname: Hostname<'static>,
    seed: u64,
    dhcp: w5500_dhcp::Client<'static>,
    dhcp_due_ms: u64,
    sntp: Option<w5500_sntp::Client>,
    sntp_sent_ms: Option<u64>,
    sntp_due_ms: u64,
    broker: SocketAddrV4,
    ntp_server: Ipv4Addr,
    session: Session,
    /// Bumped at each new MQTT session, so the caller resends what is
    /// unacknowledged.
    sessions: u32,
    tcp_opened: bool,
    reconnect_at_ms: u64,
    backoff_ms: u64,
    last_online_ms: u64,
    rx: [u8; RX_BYTES],
    rx_len: usize,
    /// Bytes of an oversized frame still to throw away.
    skip: usize,
    tx: [u8; TX_BYTES],
    topics: Topics,
    login: Credentials<'static>,
    link_up: bool,
    link_checked_ms: u64,
}

/// Settings of [`Net::new`].
pub struct NetConfig {
    /// Hardware address (locally administered, from the MCU's unique id).
    pub mac: [u8; 6],
    /// DHCP host name.
    pub hostname: &'static str,
    /// Seed for DHCP transaction ids.
    pub seed: u64,
    /// The broker.
    pub broker: ([u8; 4], u16),
    /// SNTP server, `0.0.0.0` for DHCP's or the broker host.
    pub ntp_server: [u8; 4],
    /// Topics.
    pub topics: Topics,
    /// Login.
    pub login: Credentials<'static>,
}

fn ip(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::new(a[0], a[1], a[2], a[3])
}

impl<W, RST, D> Net<W, RST, D>
where
    W: Registers,
    RST: OutputPin,
    D: DelayNs,
{
    /// The network; [`Net::poll`] brings it up.
    pub fn new(w5500: W, reset: RST, delay: D, cfg: NetConfig) -> Self {
        let m = cfg.mac;
        let mac = Eui48Addr::new(m[0], m[1], m[2], m[3], m[4], m[5]);
        let hostname = Hostname::new(cfg.hostname).unwrap_or(Hostname::new_unwrapped("apr"));
        let mut net = Net {
            w5500,
            reset,
            delay,
            mac,
            hostname,
            seed: cfg.seed,
            dhcp: w5500_dhcp::Client::new(DHCP_SN, cfg.seed, mac, hostname),
            dhcp_due_ms: 0,
            sntp: None,
            sntp_sent_ms: None,
            sntp_due_ms: 0,
            broker: SocketAddrV4::new(ip(cfg.broker.0), cfg.broker.1),
            ntp_server: ip(cfg.ntp_server),
            session: Session::new(),
            sessions: 0,
            tcp_opened: false,
            reconnect_at_ms: 0,
            backoff_ms: BACKOFF_MIN_MS,
            last_online_ms: 0,
            rx: [0; RX_BYTES],
            rx_len: 0,
            skip: 0,
            tx: [0; TX_BYTES],
            topics: cfg.topics,
            login: cfg.login,
            link_up: false,
            link_checked_ms: 0,
        };
        // A chip that does not answer now is reset again by `poll` later.
        let _ = net.reset_chip();
        net
    }

    /// Hardware reset and set-up: MAC, socket buffers, DHCP socket.
    fn reset_chip(&mut self) -> Result<(), W::Error> {
        let _ = self.reset.set_low();
        self.delay.delay_us(600);
        let _ = self.reset.set_high();
        // The PLL locks within 1 ms of reset (datasheet 5.5.1).
        self.delay.delay_ms(2);
        self.session.down();
        self.tcp_opened = false;
        self.rx_len = 0;
        self.skip = 0;
        self.sntp = None;
        self.sntp_sent_ms = None;
        self.sntp_due_ms = 0;
        self.dhcp_due_ms = 0;
        // The chip forgot its address: a new lease from scratch.
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.dhcp = w5500_dhcp::Client::new(DHCP_SN, self.seed, self.mac, self.hostname);
        self.w5500.set_shar(&self.mac)?;
        for (sn, kb) in [
            (Sn::Sn0, BufferSize::KB8),
            (Sn::Sn1, BufferSize::KB2),
            (Sn::Sn2, BufferSize::KB2),
            (Sn::Sn3, BufferSize::KB0),
            (Sn::Sn4, BufferSize::KB0),
            (Sn::Sn5, BufferSize::KB0),
            (Sn::Sn6, BufferSize::KB0),
            (Sn::Sn7, BufferSize::KB0),
        ] {
            self.w5500.set_sn_rxbuf_size(sn, kb)?;
            self.w5500.set_sn_txbuf_size(sn, kb)?;
        }
        self.dhcp.setup_socket(&mut self.w5500)
    }

    /// Where the network is.
    pub fn state(&self) -> NetState {
        if !self.link_up {
            NetState::NoLink
        } else if !self.dhcp.has_lease() {
            NetState::NoAddress
        } else if self.session.phase() == Phase::Up {
            NetState::Online
        } else {
            NetState::Connecting
        }
    }

    /// Number of MQTT sessions so far: a change means a new session.
    pub fn sessions(&self) -> u32 {
        self.sessions
    }

    /// Whether an `up` publish may go now.
    pub fn can_publish(&self) -> bool {
        self.session.can_publish()
    }

    /// Publishes `pack` on `up` at QoS 1; `false` if it could not go (the
    /// session is then dropped and the pack goes again later).
    pub fn publish_up(&mut self, pack: &[u8], now_ms: u64) -> bool {
        if !self.session.can_publish() {
            return false;
        }
        let topic = self.topics.up.clone();
        let sent = match self.session.publish(&topic, pack, &mut self.tx, now_ms) {
            Ok(n) => self.send_tx(n),
            Err(_) => false,
        };
        if !sent {
            self.drop_session(now_ms);
        }
        sent
    }

    /// One pass: link, DHCP, SNTP, MQTT. Messages from the gateway go to
    /// `on_message`.
    pub fn poll(
        &mut self,
        now_ms: u64,
        wall: &mut WallClock,
        on_message: impl FnMut(Received<'_>),
    ) {
        if self.poll_inner(now_ms, wall, on_message).is_err() {
            // The chip did not answer on SPI: start it over.
            self.drop_session(now_ms);
            let _ = self.reset_chip();
        }
        if self.session.phase() == Phase::Up {
            self.last_online_ms = now_ms;
        } else if now_ms.saturating_sub(self.last_online_ms) > CHIP_RESET_AFTER_MS {
            self.last_online_ms = now_ms;
            let _ = self.reset_chip();
        }
    }

    fn poll_inner(
        &mut self,
        now_ms: u64,
        wall: &mut WallClock,
        on_message: impl FnMut(Received<'_>),
    ) -> Result<(), W::Error> {
        if now_ms >= self.link_checked_ms + 500 || !self.link_up {
            self.link_checked_ms = now_ms;
            let up = self.w5500.phycfgr()?.lnk() == LinkStatus::Up;
            if self.link_up && !up {
                self.drop_session(now_ms);
            }
            self.link_up = up;
        }
        if !self.link_up {
            return Ok(());
        }

        // DHCP: poll often until bound (the replies wait in the socket),
        // then when the lease timers say.
        if now_ms >= self.dhcp_due_ms {
            let next_s = self
                .dhcp
                .process(&mut self.w5500, (now_ms / 1000) as u32)
                .unwrap_or(1);
            self.dhcp_due_ms = if self.dhcp.has_lease() {
                now_ms + u64::from(next_s.max(1)) * 1000
            } else {
                now_ms + 250
            };
        }
        if !self.dhcp.has_lease() {
            return Ok(());
        }

        self.poll_sntp(now_ms, wall)?;
        self.poll_mqtt(now_ms, on_message)
    }

    fn poll_sntp(&mut self, now_ms: u64, wall: &mut WallClock) -> Result<(), W::Error> {
        if self.sntp.is_none() {
            let server = if self.ntp_server != Ipv4Addr::UNSPECIFIED {
                self.ntp_server
            } else {
                self.dhcp.ntp().unwrap_or(*self.broker.ip())
            };
            let client =
                w5500_sntp::Client::new(SNTP_SN, SNTP_SRC_PORT, SocketAddrV4::new(server, 123));
            client.setup_socket(&mut self.w5500)?;
            self.sntp = Some(client);
        }
        let Some(sntp) = &self.sntp else {
            return Ok(());
        };
        if let Some(sent) = self.sntp_sent_ms {
            if self.w5500.sn_ir(SNTP_SN)?.recv_raised() {
                if let Ok(reply) = sntp.on_recv_interrupt(&mut self.w5500) {
                    let bits = reply.transmit_timestamp.to_bits();
                    if bits != 0 {
                        // Half the round trip is the usual SNTP correction.
                        let rtt_us = now_ms.saturating_sub(sent) * 1000;
                        wall.set_from_ntp(bits, now_ms * 1000 - rtt_us / 2);
                        self.sntp_sent_ms = None;
                        self.sntp_due_ms = now_ms + SNTP_EVERY_MS;
                    }
                }
            } else if now_ms.saturating_sub(sent) > SNTP_RETRY_MS {
                self.sntp_sent_ms = None;
                self.sntp_due_ms = now_ms;
            }
        } else if now_ms >= self.sntp_due_ms {
            if sntp.request(&mut self.w5500).is_ok() {
                self.sntp_sent_ms = Some(now_ms);
            } else {
                self.sntp_due_ms = now_ms + SNTP_RETRY_MS;
            }
        }
        Ok(())
    }

    fn drop_session(&mut self, now_ms: u64) {
        let _ = self.w5500.set_sn_cr(MQTT_SN, SocketCommand::Close);
        self.session.down();
        self.tcp_opened = false;
        self.rx_len = 0;
        self.skip = 0;
        self.reconnect_at_ms = now_ms + self.backoff_ms;
        self.backoff_ms = (self.backoff_ms * 2).min(BACKOFF_MAX_MS);
    }

    /// Writes `tx[..n]` to the MQTT socket, waiting (bounded) for room.
    fn send_tx(&mut self, n: usize) -> bool {
        let mut at = 0;
        let mut tries = 0u32;
        while at < n {
            match self.w5500.tcp_write(MQTT_SN, &self.tx[at..n]) {
                Ok(0) => {
                    tries += 1;
                    if tries > 1000 {
                        return false;
                    }
                    self.delay.delay_us(500);
                }
                Ok(k) => {
                    at += usize::from(k);
                    // One SEND at a time (datasheet, Sn_CR SEND): wait for
                    // SEND_OK, or a timeout / disconnect, before the next.
                    if !self.wait_send_ok() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// Waits (at most about 1 s) for the MQTT socket's SEND_OK and clears
    /// it; `false` on a TCP timeout, a disconnect or no answer.
    fn wait_send_ok(&mut self) -> bool {
        for _ in 0..2000 {
            let Ok(ir) = self.w5500.sn_ir(MQTT_SN) else {
                return false;
            };
            if ir.sendok_raised() {
                return self
                    .w5500
                    .set_sn_ir(MQTT_SN, SocketInterrupt::SENDOK_MASK)
                    .is_ok();
            }
            if ir.timeout_raised() || ir.discon_raised() {
                return false;
            }
            self.delay.delay_us(500);
        }
        false
    }

    fn poll_mqtt(
        &mut self,
        now_ms: u64,
        mut on_message: impl FnMut(Received<'_>),
    ) -> Result<(), W::Error> {
        let status = self.w5500.sn_sr(MQTT_SN)?;
        match status {
            Ok(SocketStatus::Established) => {}
            Ok(SocketStatus::Closed) | Ok(SocketStatus::CloseWait) | Err(_) => {
                if self.tcp_opened || self.session.phase() != Phase::Down {
                    self.drop_session(now_ms);
                }
                if now_ms >= self.reconnect_at_ms {
                    // Old interrupt flags (a DISCON of the last connection)
                    // must not end the new one.
                    self.w5500.set_sn_ir(MQTT_SN, 0x1F_u8)?;
                    self.w5500
                        .tcp_connect(MQTT_SN, MQTT_SRC_PORT, &self.broker)?;
                    self.tcp_opened = true;
                    // If the handshake fails the socket closes and we come
                    // back here after the backoff.
                    self.reconnect_at_ms = now_ms + self.backoff_ms;
                }
                return Ok(());
            }
            // Handshake or closing in progress.
            Ok(_) => {
                if now_ms > self.reconnect_at_ms + 10_000 {
                    self.drop_session(now_ms);
                }
                return Ok(());
            }
        }

        if self.session.phase() == Phase::Down {
            let n = match self
                .session
                .connect(&self.topics, &self.login, &mut self.tx, now_ms)
            {
                Ok(n) => n,
                Err(_) => return Ok(()),
            };
            if !self.send_tx(n) {
                self.drop_session(now_ms);
            }
            return Ok(());
        }

        // Receive, then handle every whole frame.
        let got = self.w5500.tcp_read(MQTT_SN, &mut self.rx[self.rx_len..])?;
        self.rx_len += usize::from(got);
        loop {
            if self.skip > 0 {
                let k = self.skip.min(self.rx_len);
                self.rx.copy_within(k..self.rx_len, 0);
                self.rx_len -= k;
                self.skip -= k;
                if self.skip > 0 {
                    break;
                }
            }
            let total = match mqtt::frame_len(&self.rx[..self.rx_len]) {
                None => break,
                Some(Err(())) => {
                    self.drop_session(now_ms);
                    return Ok(());
                }
                Some(Ok(t)) => t,
            };
            if total > RX_BYTES {
                // Too large to keep: acknowledge it (if QoS 1) and skip it.
                // Its `bt`s stay unreleased and are resent later.
                match mqtt::publish_pid(&self.rx[..self.rx_len]) {
                    Some(pid) => {
                        if let Some(n) = mqtt::puback(pid, &mut self.tx) {
                            if !self.send_tx(n) {
                                self.drop_session(now_ms);
                                return Ok(());
                            }
                        }
                    }
                    None if self.rx_len < 256 => break,
                    None => {}
                }
                self.skip = total;
                continue;
            }
            if total > self.rx_len {
                break;
            }
            let before = self.session.phase();
            let handled =
                self.session
                    .on_frame(&self.rx[..total], &self.topics, &mut self.tx, now_ms);
            let answer = match handled {
                Ok((received, n)) => {
                    on_message(received);
                    if before == Phase::AwaitConnack && self.session.phase() == Phase::Up {
                        // CONNACK accepted: a new session.
                        self.sessions = self.sessions.wrapping_add(1);
                        self.backoff_ms = BACKOFF_MIN_MS;
                    }
                    n
                }
                Err(Drop::Refused | Drop::Timeout | Drop::Protocol | Drop::Encode) => {
                    self.drop_session(now_ms);
                    return Ok(());
                }
            };
            if answer > 0 && !self.send_tx(answer) {
                self.drop_session(now_ms);
                return Ok(());
            }
            self.rx.copy_within(total..self.rx_len, 0);
            self.rx_len -= total;
        }

        match self.session.tick(&mut self.tx, now_ms) {
            Ok(0) => {}
            Ok(n) => {
                if !self.send_tx(n) {
                    self.drop_session(now_ms);
                }
            }
            Err(_) => self.drop_session(now_ms),
        }
        Ok(())
    }
}

impl<W, RST, D> crate::station::Publisher for Net<W, RST, D>
where
    W: Registers,
    RST: OutputPin,
    D: DelayNs,
{
    fn sessions(&self) -> u32 {
        Net::sessions(self)
    }

    fn can_publish(&self) -> bool {
        Net::can_publish(self)
    }

    fn publish_up(&mut self, pack: &[u8], now_ms: u64) -> bool {
        Net::publish_up(self, pack, now_ms)
    }
}
