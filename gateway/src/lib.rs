//! The site gateway: device MQTT in, validated batches out to the server,
//! acknowledged end to end (CONTRACT §2).
//!
//! One reading's way through the gateway:
//!
//! 1. A device publishes a SenML pack on `apr/{apr}/{device}/up` (QoS 1) to
//!    the site's broker — the [`broker::EmbeddedBroker`] (rumqttd behind our
//!    device gate) or any MQTT broker such as mosquitto.
//! 2. The [`uplink`] loop receives it, validates it
//!    ([`apr_wire::validate::validate_pack`]) into accepted readings and
//!    refusals (logged, counted, quarantined with a raw excerpt), and hands
//!    the resulting [`apr_wire::ingest::IngestPack`] to the spooler, which
//!    appends what arrived meanwhile as one group to the [`spool`].
//! 3. With the durable [`DiskSpool`] (`[spool] dir`), the group is on disk
//!    (fsync'd) when the append returns, and each device at once gets the
//!    `bt` values of its packs on `apr/{apr}/{device}/ack` ([`ack`]): it may
//!    drop them from its outbox, even while the server is unreachable.
//! 4. The [`forward`]er takes batches from the spool, live data first, and
//!    posts them to the server's `POST /api/v1/ingest` through a
//!    [`forward::Sink`], retrying with backoff and jitter until the server
//!    answers that the batch is durably stored; then the packs are released
//!    from the spool. With the in-memory [`MemorySpool`] the devices are
//!    acknowledged only then.
//!
//! # Layout
//! - [`config`]: the configuration tree and the `configfile` template.
//! - [`uplink`]: MQTT subscription and the per-publish decision ([`uplink::intake`]).
//! - `mqtt`: the connection to the broker, over TCP (rumqttc) or, to an
//!   embedded broker of this process, in-process (a rumqttd local link).
//! - [`spool`]: the [`Spool`] trait at the MQTT / forwarder seam, [`MemorySpool`],
//!   the durable [`DiskSpool`] ([`spool::disk`], its on-disk format) and its
//!   filesystem seam ([`spool::fs`]).
//! - [`forward`]: the [`Sink`] trait, [`HttpSink`], [`forward::backoff`], the
//!   [`forward::Mode`] state machine and the forwarder loop.
//! - [`liveness`]: is a device online (status, will, silence)?
//! - [`devices`]: config push from the server's device list, liveness checks.
//! - [`metrics`]: `/metrics` (Prometheus text) on a tiny listener.
//! - [`status`]: the operator's `status` message, in Spanish or English.
//! - [`ack`]: grouping acknowledged packs into per-device `ack` messages.
//! - [`stats`]: counters and the [`GatewayStats`] snapshot.
//! - [`broker`]: the embedded broker (rumqttd) and its [`DeviceGate`](broker::gate).
//!   With mosquitto instead, `gateway/mosquitto/acl` is the ACL pattern file
//!   that confines each device (username `{apr}/{device}`) to its own topics.
//! - [`Gateway`] / [`GatewayHandle`] / [`run`]: wiring it all together.
#![deny(unsafe_code, missing_docs)]

pub mod ack;
pub mod broker;
pub mod config;
pub mod devices;
mod error;
pub mod forward;
pub mod liveness;
pub mod metrics;
mod mqtt;
pub mod spool;
pub mod stats;
pub mod status;
pub mod uplink;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, Instrument};

pub use broker::{password_sha256, DeviceDirectory, EmbeddedBroker, GateHop, GateStats};
pub use config::{configfile, GatewayConfig};
pub use error::Error;
pub use forward::{HttpSink, Sink, SinkError};
pub use spool::{AnySpool, DiskSpool, MemorySpool, Spool, SpoolDepth, SpoolHealth, SpoolId};
pub use stats::GatewayStats;

use forward::{Forwarder, StatusQueue};
use stats::Counters;
use uplink::Uplink;

/// Entry point to start a gateway with a chosen sink and spool.
#[derive(Debug)]
pub struct Gateway;

impl Gateway {
    /// Starts a gateway: connects to the MQTT broker of `config.mqtt`,
    /// subscribes to the served APRs and forwards to `sink` through `spool`.
    /// Returns at once; the MQTT connection is made in the background
    /// ([`GatewayHandle::wait_ready`] waits for the subscription).
    pub async fn start<K: Sink, S: Spool>(
        config: GatewayConfig,
        sink: K,
        spool: S,
    ) -> Result<GatewayHandle, Error> {
        Gateway::start_with(config, sink, spool, None).await
    }

    /// [`Gateway::start`], also refreshing `directory` (the embedded
    /// broker's, when this gateway is its only one) from the server's device
    /// list every `[devices] refresh_s`.
    pub async fn start_with<K: Sink, S: Spool>(
        config: GatewayConfig,
        sink: K,
        spool: S,
        directory: Option<Arc<DeviceDirectory>>,
    ) -> Result<GatewayHandle, Error> {
        if let Some(bad) = config.aprs.iter().find(|a| !apr_wire::id::is_valid_id(a)) {
            return Err(Error::Config(format!(
                "aprs: {bad:?} is not an APR id (^[a-z0-9][a-z0-9-]{{0,63}}$)"
            )));
        }
        let spool = Arc::new(spool);
        let counters = Arc::new(Counters::default());
        let statuses = Arc::new(StatusQueue::default());
        let (closing_tx, closing) = watch::channel(false);
        let (ready_tx, ready) = watch::channel(false);
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let (acks_done_tx, acks_done) = oneshot::channel();
        let (connection, client) = uplink::mqtt_client(&config)?;
        let span = tracing::info_span!("gateway", id = %config.id);
        let (packs_tx, packs_rx) = mpsc::channel(uplink::SPOOLER_CHANNEL);
        let tracker = Arc::new(liveness::Tracker::default());
        let sink = Arc::new(sink);

        let uplink = Uplink {
            client: client.clone(),
            connection,
            filters: uplink::subscriptions(&config.aprs),
            served: config.aprs.iter().cloned().collect::<HashSet<_>>(),
            max_future_ms: i64::from(config.validation.max_future_s) * 1000,
            packs: Some(packs_tx),
            statuses: statuses.clone(),
            counters: counters.clone(),
            liveness: tracker.clone(),
            ready: ready_tx,
        };
        let device_tasks = devices::DeviceTasks {
            config: config.devices.clone(),
            aprs: config.aprs.clone(),
            sink: sink.clone(),
            client: client.clone(),
            directory,
            tracker,
            statuses: statuses.clone(),
            counters: counters.clone(),
        };
        let forwarder = Forwarder {
            gateway_id: config.id.clone(),
            config: config.forward.clone(),
            spool: spool.clone(),
            sink,
            statuses,
            counters: counters.clone(),
            acks: acks_tx.clone(),
            closing: closing.clone(),
        };
        info!(
            parent: &span,
            aprs = config.aprs.len(),
            mqtt = %format!("{}:{}", config.mqtt.host, config.mqtt.port),
            server = %config.server.url,
            "gateway starting"
        );
        let spooler_task = tokio::spawn(
            uplink::spooler(spool.clone(), packs_rx, acks_tx).instrument(span.clone()),
        );
        let devices_task = tokio::spawn(device_tasks.run(closing.clone()).instrument(span.clone()));
        let uplink_task = tokio::spawn(uplink.run(closing, acks_done).instrument(span.clone()));
        let forward_task = tokio::spawn(forwarder.run().instrument(span.clone()));
        let ack_task = tokio::spawn(
            uplink::publish_acks(client, acks_rx, counters.clone(), acks_done_tx).instrument(span),
        );
        let depth_spool = spool.clone();
        Ok(GatewayHandle {
            counters,
            depth: Arc::new(move || (depth_spool.depth(), depth_spool.health())),
            ready,
            closing: closing_tx,
            uplink: uplink_task,
            forward: forward_task,
            ack: ack_task,
            spooler: spooler_task,
            devices: devices_task,
        })
    }

    /// Starts a gateway as configured: [`HttpSink`] to `[server]` and the
    /// spool of `[spool]` ([`DiskSpool`] in `dir`, else [`MemorySpool`]).
    pub async fn start_http(config: GatewayConfig) -> Result<GatewayHandle, Error> {
        Gateway::start_http_with(config, None).await
    }

    /// [`Gateway::start_http`], refreshing `directory` as in
    /// [`Gateway::start_with`].
    pub async fn start_http_with(
        config: GatewayConfig,
        directory: Option<Arc<DeviceDirectory>>,
    ) -> Result<GatewayHandle, Error> {
        let sink = HttpSink::from_config(&config)?;
        let spool_config = config.spool.clone();
        let spool = tokio::task::spawn_blocking(move || AnySpool::from_config(&spool_config))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        Gateway::start_with(config, sink, spool, directory).await
    }
}

/// A running gateway.
pub struct GatewayHandle {
    counters: Arc<Counters>,
    depth: Arc<dyn Fn() -> (SpoolDepth, SpoolHealth) + Send + Sync>,
    ready: watch::Receiver<bool>,
    closing: watch::Sender<bool>,
    uplink: JoinHandle<Result<(), Error>>,
    forward: JoinHandle<Result<(), Error>>,
    ack: JoinHandle<()>,
    spooler: JoinHandle<Result<(), Error>>,
    devices: JoinHandle<()>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, Error> {
    r.map_err(|e| Error::Task(e.to_string()))
}

impl GatewayHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> GatewayStats {
        let (depth, health) = (self.depth)();
        self.counters.snapshot(depth, health)
    }

    /// A function that renders the current `/metrics` page (for
    /// [`metrics::serve`]).
    pub fn metrics_page(&self) -> Arc<dyn Fn() -> String + Send + Sync> {
        let counters = self.counters.clone();
        let depth = self.depth.clone();
        Arc::new(move || {
            let (d, h) = depth();
            metrics::render(&counters.snapshot(d, h), uplink::now_ms())
        })
    }

    /// Whether the gateway is connected and subscribed right now.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the gateway is connected and subscribed; `false` on timeout.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.ready.clone();
        tokio::time::timeout(timeout, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Shuts down: stops taking publishes, flushes the spool to the server for
    /// at most `forward.shutdown_flush_ms`, publishes the last acks and
    /// disconnects from MQTT.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.closing.send_replace(true);
        let forwarded = joined(self.forward.await)?;
        let uplinked = joined(self.uplink.await)?;
        let spooled = joined(self.spooler.await)?;
        joined(self.ack.await)?;
        joined(self.devices.await)?;
        let (depth, health) = (self.depth)();
        info!(stats = ?self.counters.snapshot(depth, health), "gateway stopped");
        forwarded.and(uplinked).and(spooled)
    }
}

/// Runs a gateway as configured (the embedded broker of `[broker]` if set,
/// else the MQTT broker of `[mqtt]`; [`HttpSink`] to `[server]`, the spool of
/// `[spool]`, `/metrics` on `[metrics] listen`) until `shutdown` resolves,
/// then shuts it down cleanly.
pub async fn run(
    mut config: GatewayConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let broker = EmbeddedBroker::from_config(&config.broker).await?;
    if let Some(b) = &broker {
        // The gateway reads the embedded broker (in-process unless
        // `[mqtt] in_process = false`, then on its internal port); devices
        // come in through the gate, with the logins the server hands out.
        let in_process = config.mqtt.in_process;
        config.mqtt = b.gateway_mqtt_config(&format!("apr-gateway-{}", config.id));
        config.mqtt.in_process = in_process;
    }
    let directory = broker.as_ref().map(|b| b.directory().clone());
    let listener = if config.metrics.listen.is_empty() {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(&config.metrics.listen)
                .await
                .map_err(|e| {
                    Error::io(format!("binding /metrics on {}", config.metrics.listen), e)
                })?,
        )
    };
    let handle = Gateway::start_http_with(config, directory).await?;
    let (stop_metrics, metrics_stopped) = oneshot::channel::<()>();
    if let Some(listener) = listener {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "serving /metrics");
        }
        tokio::spawn(metrics::serve(
            listener,
            handle.metrics_page(),
            async move {
                let _ = metrics_stopped.await;
            },
        ));
    }
    shutdown.await;
    let _ = stop_metrics.send(());
    let result = handle.shutdown().await;
    if let Some(b) = broker {
        b.shutdown().await;
    }
    result
}
