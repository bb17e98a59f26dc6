//! The site's embedded MQTT broker, with a device gate in front.
//!
//! rumqttd (used as a library) authenticates clients but cannot restrict the
//! topics a client publishes or subscribes to. So the embedded broker is two
//! parts in one process:
//!
//! ```text
//! device ──TCP or TLS──▶ DeviceGate (public address) ──local link (or TCP)──▶ rumqttd's router
//!                                                                               ▲
//! in-process gateway ──── local link (or TCP, internal credentials) ────────────┘
//! ```
//!
//! - **rumqttd**'s router and a listener on a loopback port picked at start
//!   (only the random internal credentials in its `auth` map) are started
//!   here from rumqttd's public `Router` and `Server` (not `rumqttd::Broker`,
//!   which keeps the router's sender private), so [`LocalLinks`] can make
//!   in-process links at any time. A gateway in this process whose `[mqtt]`
//!   is [`EmbeddedBroker::gateway_mqtt_config`] uses such a link (see
//!   `crate::mqtt`); with `in_process = false`, or from another process, it
//!   connects to [`EmbeddedBroker::internal_addr`].
//! - **The gate** ([`gate`]) accepts devices on the public address, checks each
//!   CONNECT against the [`DeviceDirectory`] (username → APR, device, SHA-256 of
//!   the password), and from then on lets a device publish only to its own
//!   `apr/{apr}/{device}/up` and `.../status` and subscribe only to its own
//!   `.../config` and `.../ack` (CONTRACT §2). An admitted device's packets go
//!   to the router over a local link of its own ([`GateHop::InProcess`], the
//!   default; `local_session`): one socket per device, each packet parsed
//!   once, one router wake-up per read. The router then never sees the
//!   device's socket, so the gate answers PINGREQ, drops a device silent for
//!   1.5 × its keep-alive and publishes the device's last will itself when
//!   the device is lost (not after a clean DISCONNECT, nor when a newer
//!   connection took the client id over). [`GateHop::Tcp`] (`[broker]
//!   gate_in_process = false`) is the earlier shape: a second TCP connection
//!   per device to the internal listener, with the login swapped for the
//!   internal one, and rumqttd doing keep-alive and wills.
//! - **TLS** ([`EmbeddedBroker::start_tls`], `[broker] tls_cert`/`tls_key`):
//!   the gate terminates MQTT over TLS (rustls on ring) before the CONNECT
//!   is read; a client that does not complete the handshake (it does not
//!   trust the certificate, or speaks plain MQTT) is counted as refused and
//!   never reaches the login check. Past the gate nothing leaves the process
//!   (or, with the TCP hop, loopback).
//!
//! # Limitations
//! - The gate speaks MQTT 3.1.1 only: an MQTT 5 CONNECT is refused cleanly
//!   (CONNACK with reason 0x84, unsupported protocol version). Devices that
//!   need MQTT 5 can use an external broker such as mosquitto, which the
//!   gateway supports as well.
//! - rumqttd cannot be stopped once started: [`EmbeddedBroker::shutdown`] stops
//!   the gate (devices are disconnected and no new ones get in); the internal
//!   broker thread lives until the process exits.
//! - rumqttd's outgoing QoS 1 window is fixed at 100 packets per connection.

pub mod directory;
pub mod gate;
mod local_session;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rand::distributions::{Alphanumeric, DistString};
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Config, ConnectionSettings, Notification, RouterConfig, ServerSettings};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn, Instrument};

pub use directory::{password_sha256, DeviceDirectory, DeviceGrant};
pub use gate::GateStats;

use crate::config::{BrokerConfig, MqttConfig};
use crate::Error;
use gate::{GateCounters, GateShared};

/// Largest MQTT packet (remaining length) the broker, the gate and the
/// gateway's client accept: far above the 16 KiB pack limit, so an oversized
/// pack reaches the validator and is refused with a reason instead of
/// breaking the connection.
pub const MAX_PACKET_BYTES: usize = 256 * 1024;

/// Most client connections the internal broker takes.
const MAX_CONNECTIONS: usize = 12_000;
/// How long to wait for the internal broker to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The rumqttd configuration of the internal broker.
fn rumqttd_config(listen: SocketAddr, username: &str, password: &str) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PACKET_BYTES,
        max_inflight_count: 1_000,
        auth: Some(HashMap::from([(
            username.to_string(),
            password.to_string(),
        )])),
        external_auth: None,
        dynamic_filters: false,
    };
    let server = ServerSettings {
        name: "internal".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: MAX_CONNECTIONS,
            max_outgoing_packet_count: 1_000,
            // Each subscription filter keeps a log of at most 4 × 16 MiB:
            // room for tens of thousands of packs while a gateway catches up.
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("internal".to_string(), server)])),
        ..Config::default()
    }
}

/// Sets `TCP_NODELAY` on rumqttd's listening socket at `addr`, so that
/// every connection it accepts from now on has it too (Linux copies the
/// option from a listener to the sockets it accepts). rumqttd leaves it
/// off, so each small packet it writes while an earlier one is still
/// unacknowledged waited for the peer's delayed ACK: measured, 25–32 ms on
/// every publish from rumqttd to a gateway at low rates (docs/SCALING.md,
/// M5). Answers whether the listener was found and set.
pub(crate) fn nodelay_for_listener_at(addr: SocketAddr) -> bool {
    on_listener_at(addr, |sock| sock.set_tcp_nodelay(true).is_ok()) == Some(true)
}

/// Runs `f` on the listening socket bound to `addr` among this process's
/// descriptors (rumqttd does not hand its listener out): a socket bound
/// there with no peer. `None` when there is none.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn on_listener_at<R>(addr: SocketAddr, mut f: impl FnMut(socket2::SockRef<'_>) -> R) -> Option<R> {
    use std::os::fd::{BorrowedFd, RawFd};
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    for entry in dir.flatten() {
        let Some(raw) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // Sockets only (the descriptor's link reads `socket:[inode]`).
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor was open when its entry was read, and it is
        // only lent to the socket calls below (getsockname, getpeername and
        // `f`'s getsockopt or setsockopt), never closed or kept. Should
        // another thread close it meanwhile, those calls fail (EBADF) or
        // reach the socket that took its number next, which `f` sees only
        // if it too is a listener bound to `addr`: no memory is involved.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let sock = socket2::SockRef::from(&fd);
        let bound_here = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a == addr);
        if bound_here && sock.peer_addr().is_err() {
            return Some(f(sock));
        }
    }
    None
}

/// Without `/proc/self/fd` the listener cannot be found: rumqttd's
/// connections keep Nagle's algorithm.
#[cfg(not(target_os = "linux"))]
fn on_listener_at<R>(_addr: SocketAddr, _f: impl FnMut(socket2::SockRef<'_>) -> R) -> Option<R> {
    None
}

/// A free loopback port (bound, then released for rumqttd to take).
fn free_loopback_port() -> Result<SocketAddr, Error> {
    let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("cannot find a free loopback port", e))?;
    probe
        .local_addr()
        .map_err(|e| Error::io("cannot find a free loopback port", e))
}

/// Whether the internal broker accepts the internal login (a full
/// CONNECT / CONNACK / DISCONNECT, so rumqttd logs no broken connection).
///
/// After its DISCONNECT the probe waits for rumqttd to close the socket
/// rather than closing first: rumqttd 0.20's remote link, on seeing the
/// client's close before the router's drop, sends the router a second
/// disconnect for its connection id, which by then the router may have
/// handed to the next connection (a gateway, a device), and that
/// connection is dropped (`tests/broker.rs` failed so about 1 run in 30).
async fn probe(addr: SocketAddr, username: &str, password: &str) -> bool {
    use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut connect = Connect::new("embedded-broker-probe");
        connect.set_login(username, password);
        let mut out = bytes::BytesMut::new();
        Packet::Connect(connect).write(&mut out, usize::MAX).ok()?;
        s.write_all(&out).await.ok()?;
        let mut answer = bytes::BytesMut::with_capacity(16);
        loop {
            if s.read_buf(&mut answer).await.ok()? == 0 {
                return None;
            }
            match Packet::read(&mut answer, 1024) {
                Ok(Packet::ConnAck(ack)) => {
                    let accepted = ack.code == ConnectReturnCode::Success;
                    if accepted && s.write_all(&[0xe0, 0x00]).await.is_ok() {
                        let mut rest = [0u8; 64];
                        let closed =
                            async { while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {} };
                        let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
                    }
                    return Some(accepted);
                }
                Ok(_) => return None,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// How the gate passes a device's packets to rumqttd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GateHop {
    /// Over a local link to rumqttd's router in this process
    /// ([`local_session`]): no second socket per device, no re-encoding.
    #[default]
    InProcess,
    /// Over a TCP connection per device to rumqttd's internal port, bytes
    /// copied as they come (the gate before 2026-12-05; kept to compare).
    Tcp,
}

/// The running embedded broker (see the module doc).
pub struct EmbeddedBroker {
    public_addr: SocketAddr,
    internal_addr: SocketAddr,
    internal_username: String,
    internal_password: String,
    shared: Arc<GateShared>,
    stop: watch::Sender<bool>,
    gate: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("public_addr", &self.public_addr)
            .field("internal_addr", &self.internal_addr)
            .finish_non_exhaustive()
    }
}

impl EmbeddedBroker {
    /// Starts rumqttd on a loopback port and the device gate on
    /// `public_listen` (port 0 picks a free one), plain MQTT. Returns once
    /// both accept.
    pub async fn start(
        public_listen: SocketAddr,
        directory: Arc<DeviceDirectory>,
    ) -> Result<EmbeddedBroker, Error> {
        EmbeddedBroker::start_tls(public_listen, directory, None).await
    }

    /// [`EmbeddedBroker::start`]; with `tls`, devices connect with MQTT over
    /// TLS (see [`apr_tls::server_config`]) and plain MQTT is not accepted.
    pub async fn start_tls(
        public_listen: SocketAddr,
        directory: Arc<DeviceDirectory>,
        tls: Option<Arc<apr_tls::rustls::ServerConfig>>,
    ) -> Result<EmbeddedBroker, Error> {
        EmbeddedBroker::start_with(public_listen, directory, tls, GateHop::InProcess).await
    }

    /// [`EmbeddedBroker::start_tls`], with the gate's `hop` to rumqttd
    /// chosen (`[broker] gate_in_process`).
    pub async fn start_with(
        public_listen: SocketAddr,
        directory: Arc<DeviceDirectory>,
        tls: Option<Arc<apr_tls::rustls::ServerConfig>>,
        hop: GateHop,
    ) -> Result<EmbeddedBroker, Error> {
        let internal_addr = free_loopback_port()?;
        let internal_username = format!(
            "internal-{}",
            Alphanumeric.sample_string(&mut rand::thread_rng(), 8)
        );
        let internal_password = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
        let config = rumqttd_config(internal_addr, &internal_username, &internal_password);
        // The router and the internal listener are started here rather than
        // through `rumqttd::Broker`, which keeps the router's sender private:
        // with it, in-process gateways get local links at any time
        // ([`LocalLinks`]).
        let router_tx = rumqttd::Router::new(config.id, config.router.clone()).spawn();
        let links = {
            let router_tx = router_tx.clone();
            LocalLinks::new(
                move |client_id: &str, clean_session: bool| {
                    rumqttd::local::LinkBuilder::new(client_id, router_tx.clone())
                        .clean_session(clean_session)
                        .build()
                        .map_err(|e| {
                            Error::Link(format!("cannot link to the embedded broker: {e}"))
                        })
                },
                internal_username.clone(),
                internal_password.clone(),
            )
        };
        let server_settings = config
            .v4
            .as_ref()
            .and_then(|v4| v4.get("internal"))
            .cloned()
            .ok_or_else(|| Error::Broker("no internal listener configured".into()))?;
        let thread = std::thread::Builder::new()
            .name("rumqttd".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        error!(error = %e, "cannot start the embedded MQTT broker's runtime");
                        return;
                    }
                };
                let mut server =
                    rumqttd::Server::new(server_settings, router_tx, rumqttd::protocol::v4::V4);
                runtime.block_on(async move {
                    if let Err(e) = server.start(rumqttd::LinkType::Remote).await {
                        error!(error = %e, "embedded MQTT broker stopped");
                    }
                });
            })
            .map_err(|e| Error::io("cannot start the broker thread", e))?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if probe(internal_addr, &internal_username, &internal_password).await {
                break;
            }
            if thread.is_finished() || tokio::time::Instant::now() > deadline {
                return Err(Error::Broker(format!(
                    "the internal broker did not listen on {internal_addr}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !nodelay_for_listener_at(internal_addr) {
            warn!(%internal_addr, "cannot set TCP_NODELAY on the internal broker's listener; its packets may wait up to 40 ms for delayed ACKs");
        }
        let listener = TcpListener::bind(public_listen)
            .await
            .map_err(|e| Error::io(format!("cannot listen for MQTT on {public_listen}"), e))?;
        let public_addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the MQTT listen address", e))?;
        let shared = Arc::new(GateShared {
            directory,
            local: match hop {
                GateHop::InProcess => Some(links.clone()),
                GateHop::Tcp => None,
            },
            internal_addr,
            internal_username: internal_username.clone(),
            internal_password: internal_password.clone(),
            counters: GateCounters::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let tls_on = tls.is_some();
        let gate = tokio::spawn(
            accept_devices(
                listener,
                shared.clone(),
                tls.map(tokio_rustls::TlsAcceptor::from),
                stopped,
            )
            .instrument(tracing::info_span!("device_gate", %public_addr)),
        );
        info!(%public_addr, %internal_addr, tls = tls_on, ?hop, "embedded MQTT broker listening");
        register_in_process(internal_addr, links);
        Ok(EmbeddedBroker {
            public_addr,
            internal_addr,
            internal_username,
            internal_password,
            shared,
            stop,
            gate: Some(gate),
        })
    }

    /// Starts the broker of `[broker]` with an empty device directory (the
    /// gateway fills it from the server), or `None` when `listen` is empty.
    /// Without `tls_cert`/`tls_key` the listener is plain MQTT, refused on a
    /// non-loopback address unless `allow_plaintext`.
    pub async fn from_config(config: &BrokerConfig) -> Result<Option<EmbeddedBroker>, Error> {
        if config.listen.trim().is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = config.listen.trim().parse().map_err(|_| {
            Error::Config(format!(
                "[broker] listen {:?} is not host:port",
                config.listen
            ))
        })?;
        let tls = match (
            apr_tls::configured(&config.tls_cert),
            apr_tls::configured(&config.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(
                apr_tls::server_config(cert, key, None, &[])
                    .map_err(|e| Error::Config(format!("[broker]: {e}")))?,
            ),
            (None, None) => {
                apr_tls::check_plaintext(
                    addr,
                    config.allow_plaintext,
                    "[broker] listen",
                    "[broker] tls_cert and tls_key",
                    "[broker] allow_plaintext",
                )
                .map_err(|e| Error::Config(e.to_string()))?;
                None
            }
            _ => {
                return Err(Error::Config(
                    "[broker] tls_cert and tls_key go together: set both or neither".into(),
                ))
            }
        };
        let directory = Arc::new(DeviceDirectory::new(Vec::new()));
        let hop = if config.gate_in_process {
            GateHop::InProcess
        } else {
            GateHop::Tcp
        };
        EmbeddedBroker::start_with(addr, directory, tls, hop)
            .await
            .map(Some)
    }

    /// How the gate passes device packets to rumqttd.
    pub fn hop(&self) -> GateHop {
        if self.shared.local.is_some() {
            GateHop::InProcess
        } else {
            GateHop::Tcp
        }
    }

    /// The address devices connect to (through the gate).
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// The internal rumqttd address (loopback), for in-process gateways.
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal_addr
    }

    /// Makes in-process links to the internal broker (what an in-process
    /// gateway uses; see [`LocalLinks`]).
    pub fn local_links(&self) -> Option<LocalLinks> {
        in_process_brokers()
            .lock()
            .ok()?
            .get(&self.internal_addr)
            .cloned()
    }

    /// The internal broker's username.
    pub fn internal_username(&self) -> &str {
        &self.internal_username
    }

    /// The internal broker's password.
    pub fn internal_password(&self) -> &str {
        &self.internal_password
    }

    /// `[mqtt]` settings for an in-process gateway: the internal address and
    /// credentials, with `client_id`.
    pub fn gateway_mqtt_config(&self, client_id: &str) -> MqttConfig {
        MqttConfig {
            host: self.internal_addr.ip().to_string(),
            port: self.internal_addr.port(),
            username: self.internal_username.clone(),
            password: self.internal_password.clone(),
            client_id: client_id.to_string(),
            ..MqttConfig::default()
        }
    }

    /// The devices allowed in (replace them with [`DeviceDirectory::replace`]).
    pub fn directory(&self) -> &Arc<DeviceDirectory> {
        &self.shared.directory
    }

    /// The gate's counters.
    pub fn stats(&self) -> GateStats {
        self.shared.counters.snapshot()
    }

    /// Stops the gate: the public listener closes and device connections are
    /// dropped. (The internal broker lives until the process exits.)
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(gate) = self.gate.take() {
            let _ = gate.await;
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        unregister_in_process(self.internal_addr);
    }
}

/// Makes one in-process link, as a client id.
type MakeLink = dyn Fn(&str, bool) -> Result<(LinkTx, LinkRx, Notification), Error> + Send + Sync;

/// Makes in-process links to an embedded broker's router (rumqttd local
/// links): what an in-process gateway uses instead of a TCP connection to
/// the internal port ([`crate::mqtt`]). Cheap to clone.
#[derive(Clone)]
pub struct LocalLinks {
    make: Arc<MakeLink>,
    username: String,
    password: String,
}

impl std::fmt::Debug for LocalLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLinks").finish_non_exhaustive()
    }
}

impl LocalLinks {
    fn new(
        make: impl Fn(&str, bool) -> Result<(LinkTx, LinkRx, Notification), Error>
            + Send
            + Sync
            + 'static,
        username: String,
        password: String,
    ) -> LocalLinks {
        LocalLinks {
            make: Arc::new(make),
            username,
            password,
        }
    }

    /// A new link as `client_id` (a clean session; an existing link or
    /// connection with that id is closed by the router). Blocks until the
    /// router answers: call it off the async workers.
    pub fn link(&self, client_id: &str) -> Result<(LinkTx, LinkRx), Error> {
        (self.make)(client_id, true).map(|(tx, rx, _connack)| (tx, rx))
    }

    /// A device's session as `client_id` (clean or persistent, as its
    /// CONNECT asked), with the router's CONNACK. Blocks like [`Self::link`].
    pub(crate) fn session(
        &self,
        client_id: &str,
        clean_session: bool,
    ) -> Result<(LinkTx, LinkRx, Notification), Error> {
        (self.make)(client_id, clean_session)
    }

    /// Whether `username`/`password` are the internal login (what a TCP
    /// connection to the internal port would have to present).
    fn accepts(&self, username: &str, password: &str) -> bool {
        self.username == username && self.password == password
    }
}

/// The embedded brokers running in this process, by internal address.
fn in_process_brokers() -> &'static Mutex<HashMap<SocketAddr, LocalLinks>> {
    static BROKERS: OnceLock<Mutex<HashMap<SocketAddr, LocalLinks>>> = OnceLock::new();
    BROKERS.get_or_init(Default::default)
}

fn register_in_process(addr: SocketAddr, links: LocalLinks) {
    if let Ok(mut b) = in_process_brokers().lock() {
        b.insert(addr, links);
    }
}

fn unregister_in_process(addr: SocketAddr) {
    if let Ok(mut b) = in_process_brokers().lock() {
        b.remove(&addr);
    }
}

/// The embedded broker of this process that `[mqtt]` names, if any: its
/// internal address (as an IP literal and port) and its internal login,
/// without TLS. Anything else is reached over TCP.
pub(crate) fn in_process_broker(mqtt: &MqttConfig) -> Option<LocalLinks> {
    if !mqtt.in_process || apr_tls::configured(&mqtt.ca_file).is_some() {
        return None;
    }
    let ip: std::net::IpAddr = mqtt.host.trim().parse().ok()?;
    let addr = SocketAddr::new(ip, mqtt.port);
    let links = in_process_brokers().lock().ok()?.get(&addr).cloned()?;
    links
        .accepts(&mqtt.username, &mqtt.password)
        .then_some(links)
}

async fn accept_devices(
    listener: TcpListener,
    shared: Arc<GateShared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = crate::uplink::flag_set(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match &tls {
                    Some(acceptor) => {
                        connections.spawn(gate::serve_tls(stream, peer, shared.clone(), acceptor.clone()));
                    }
                    None => {
                        connections.spawn(gate::serve(stream, peer, shared.clone()));
                    }
                },
                Err(e) => {
                    error!(error = %e, "cannot accept a device connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
    info!("device gate stopped");
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_listener_found_by_its_address_passes_nodelay_to_what_it_accepts_next() {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let _early = std::net::TcpStream::connect(addr).unwrap();
        let (before, _) = listener.accept().unwrap();
        assert!(!before.nodelay().unwrap(), "off by default");
        assert!(nodelay_for_listener_at(addr));
        // An accepted socket is bound to the same address but has a peer:
        // it is not taken for the listener.
        assert!(!before.nodelay().unwrap());
        let _late = std::net::TcpStream::connect(addr).unwrap();
        let (after, _) = listener.accept().unwrap();
        assert!(after.nodelay().unwrap(), "inherited from the listener");
        drop(listener);
        assert!(!nodelay_for_listener_at(addr), "no listener there any more");
    }

    #[tokio::test]
    async fn only_the_internal_address_and_login_of_a_live_in_process_broker_are_reached_in_process(
    ) {
        let broker = EmbeddedBroker::start(
            (Ipv4Addr::LOCALHOST, 0).into(),
            Arc::new(DeviceDirectory::new(Vec::new())),
        )
        .await
        .unwrap();
        let m = broker.gateway_mqtt_config("gw");
        assert!(in_process_broker(&m).is_some());
        let off = MqttConfig {
            in_process: false,
            ..m.clone()
        };
        assert!(in_process_broker(&off).is_none(), "turned off");
        let wrong = MqttConfig {
            password: "not-it".into(),
            ..m.clone()
        };
        assert!(
            in_process_broker(&wrong).is_none(),
            "a wrong login goes to TCP and is refused there"
        );
        let public = MqttConfig {
            port: broker.public_addr().port(),
            ..m.clone()
        };
        assert!(in_process_broker(&public).is_none(), "the gate's address");
        let named = MqttConfig {
            host: "localhost".into(),
            ..m.clone()
        };
        assert!(in_process_broker(&named).is_none(), "IP literals only");
        let tls = MqttConfig {
            ca_file: "/etc/ssl/ca.pem".into(),
            ..m.clone()
        };
        assert!(in_process_broker(&tls).is_none(), "TLS means a socket");
        assert!(broker.local_links().is_some());
        broker.shutdown().await;
        assert!(in_process_broker(&m).is_none(), "gone with the broker");
    }

    /// A scripted broker: accepts one probe, answers its CONNECT with
    /// CONNACK `code`, and reports whether the probe closed within 300 ms of
    /// its DISCONNECT (it must not: rumqttd closes first, see [`probe`]).
    async fn probe_against(code: u8) -> (bool, Option<bool>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let broker = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut connect = [0u8; 64];
            let n = s.read(&mut connect).await.unwrap();
            assert_eq!(connect[0], 0x10, "a CONNECT first: {:?}", &connect[..n]);
            s.write_all(&[0x20, 0x02, 0x00, code]).await.unwrap();
            let mut disconnect = [0u8; 2];
            if code != 0 {
                return None;
            }
            s.read_exact(&mut disconnect).await.unwrap();
            assert_eq!(disconnect, [0xe0, 0x00]);
            let closed = tokio::time::timeout(Duration::from_millis(300), s.read(&mut connect))
                .await
                .is_ok();
            Some(closed)
        });
        let accepted = probe(addr, "u", "p").await;
        (accepted, broker.await.unwrap())
    }

    #[tokio::test]
    async fn the_probe_waits_for_the_broker_to_close_after_its_disconnect() {
        let (accepted, probe_closed_first) = probe_against(0).await;
        assert!(accepted);
        assert_eq!(probe_closed_first, Some(false), "the broker closes first");
        let (accepted, _) = probe_against(5).await;
        assert!(!accepted, "a refused login is not a ready broker");
    }

    #[tokio::test]
    async fn the_internal_broker_listens_with_nodelay() {
        let broker = EmbeddedBroker::start(
            (Ipv4Addr::LOCALHOST, 0).into(),
            Arc::new(DeviceDirectory::new(Vec::new())),
        )
        .await
        .unwrap();
        let nodelay = on_listener_at(broker.internal_addr(), |s| s.tcp_nodelay().ok());
        assert_eq!(nodelay, Some(Some(true)));
    }

    #[tokio::test]
    async fn the_gates_hop_comes_from_the_configuration() {
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".into(),
            ..Default::default()
        };
        let b = EmbeddedBroker::from_config(&config).await.unwrap().unwrap();
        assert_eq!(b.hop(), GateHop::InProcess, "the default");
        config.gate_in_process = false;
        let b = EmbeddedBroker::from_config(&config).await.unwrap().unwrap();
        assert_eq!(b.hop(), GateHop::Tcp);
    }
}
