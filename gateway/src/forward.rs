//! The forwarder: spool → batches → server, retried until acknowledged.
//!
//! The loop takes packs from the [`Spool`] as soon as there are any, waits at
//! most `max_batch_delay_ms` (by default 0: not at all; packs arriving while
//! a request is in flight make the next batch) for the batch to fill up to
//! `max_batch_readings`,
//! and hands the [`IngestBatch`] to a [`Sink`] (the real one is [`HttpSink`],
//! `POST {url}/api/v1/ingest`). The same batch is retried until the server
//! acknowledges it, with exponential backoff and jitter ([`backoff`]); a batch
//! the server refuses (4xx other than 408 / 429) is logged at `error` with the
//! server's message and retried at the longest delay, so the gateway never
//! spins and never drops it. Only after the acknowledgment are the packs
//! released from the spool; with an in-memory spool the devices are
//! acknowledged on MQTT then ([`crate::ack`]), with a durable one they were
//! acknowledged when the packs reached the disk.
//!
//! # Modes
//! [`Mode`] is a pure state machine ([`next_mode`]), in the spirit of
//! bytebeamio/uplink's serializer: `live` (the spool holds at most a batch:
//! let each batch fill for `max_batch_delay_ms`), `catch_up` (a backlog:
//! full batches back to back, live data first since [`Spool::next_batch`]
//! hands out the newest packs), `offline` (the last attempt failed: retry
//! the same batch with exponential backoff and jitter).

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apr_wire::ingest::{DeviceStatus, GatewayDevice, IngestAck, IngestBatch};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::{debug, error, info, warn, Instrument};

use crate::ack::{group_acks, DeviceAck};
use crate::config::{ForwardConfig, GatewayConfig};
use crate::spool::Spool;
use crate::stats::Counters;
use crate::Error;

/// Why a batch did not reach the server, or was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The request did not complete (connection refused, reset, timeout).
    #[error("transport: {0}")]
    Transport(String),
    /// The server answered with a status other than success.
    #[error("server answered {status}: {message}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The server's message (body, truncated).
        message: String,
    },
    /// The server answered 200 with a body that is not an `IngestAck`.
    #[error("unreadable acknowledgment: {0}")]
    BadAnswer(String),
    /// The sink could not be built (bad URL, TLS backend...).
    #[error("setup: {0}")]
    Setup(String),
}

impl SinkError {
    /// Whether retrying soon cannot help: the server refused the batch
    /// itself (4xx other than 408 Request Timeout and 429 Too Many Requests).
    pub fn is_refusal(&self) -> bool {
        matches!(self, SinkError::Status { status, .. }
            if (400..500).contains(status) && *status != 408 && *status != 429)
    }
}

/// Where batches go. The real one is [`HttpSink`]; tests use in-process fakes.
pub trait Sink: Send + Sync + 'static {
    /// Delivers a batch; `Ok` only once the receiver has durably stored it.
    fn send(
        &self,
        batch: &IngestBatch,
    ) -> impl Future<Output = Result<IngestAck, SinkError>> + Send;

    /// The devices of the gateway's APRs, for the config push, the liveness
    /// intervals and the embedded broker's directory; `None` if this sink
    /// cannot tell.
    fn devices(
        &self,
    ) -> impl Future<Output = Result<Option<Vec<GatewayDevice>>, SinkError>> + Send {
        async { Ok(None) }
    }
}

/// The forwarder's mode (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Up to date: batches fill for a moment, then go.
    #[default]
    Live,
    /// A backlog drains: full batches back to back, newest first.
    CatchUp,
    /// The server cannot be reached (or refuses): retry with backoff.
    Offline,
}

impl Mode {
    /// The name used in `/metrics` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::CatchUp => "catch_up",
            Mode::Offline => "offline",
        }
    }

    /// Its number in the `apr_gateway_mode` gauge (0 live, 1 catch-up, 2 offline).
    pub fn code(self) -> u64 {
        match self {
            Mode::Live => 0,
            Mode::CatchUp => 1,
            Mode::Offline => 2,
        }
    }
}

/// What happened to the last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The server stored the batch; `waiting` readings are left in the spool.
    Delivered {
        /// Readings waiting in the spool after the batch.
        waiting: u64,
    },
    /// The attempt failed.
    Failed,
}

/// The mode after an attempt: offline on a failure; after a delivery,
/// catch-up while more than a batch (`batch_readings`) is waiting, else live.
pub fn next_mode(_current: Mode, attempt: Attempt, batch_readings: u64) -> Mode {
    match attempt {
        Attempt::Failed => Mode::Offline,
        Attempt::Delivered { waiting } if waiting > batch_readings => Mode::CatchUp,
        Attempt::Delivered { .. } => Mode::Live,
    }
}

/// The server's ingest endpoint over HTTP.
#[derive(Debug, Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    ingest_url: String,
    devices_url: String,
    token: String,
}

/// Longest piece of a server's error body kept in a [`SinkError`].
const MAX_ERROR_BODY: usize = 512;

impl HttpSink {
    /// A sink posting to `{server_url}/api/v1/ingest` with the bearer `token`.
    pub fn new(
        server_url: &str,
        token: &str,
        request_timeout: Duration,
    ) -> Result<HttpSink, SinkError> {
        HttpSink::with_tls(server_url, token, request_timeout, None)
    }

    /// [`HttpSink::new`] over HTTPS with `tls` (trusted CA, and the client
    /// certificate for mutual TLS; see [`apr_tls::client_config`]).
    pub fn with_tls(
        server_url: &str,
        token: &str,
        request_timeout: Duration,
        tls: Option<Arc<apr_tls::rustls::ClientConfig>>,
    ) -> Result<HttpSink, SinkError> {
        let mut builder = reqwest::Client::builder()
            .timeout(request_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            builder = builder
                .use_preconfigured_tls(apr_tls::rustls::ClientConfig::clone(&tls))
                .https_only(true);
        }
        let client = builder
            .build()
            .map_err(|e| SinkError::Setup(error_chain(&e)))?;
        let base = server_url.trim_end_matches('/');
        Ok(HttpSink {
            client,
            ingest_url: format!("{base}/api/v1/ingest"),
            devices_url: format!("{base}/api/v1/gateway/devices"),
            token: token.to_string(),
        })
    }

    /// A sink as configured in `[server]` and `[forward]`.
    pub fn from_config(config: &GatewayConfig) -> Result<HttpSink, SinkError> {
        HttpSink::with_tls(
            &config.server.url,
            &config.server.token,
            Duration::from_millis(config.forward.request_timeout_ms),
            server_tls(&config.server)?,
        )
    }
}

/// The TLS client configuration of `[server]`: `None` without `ca_file`.
pub fn server_tls(
    server: &crate::config::ServerConfig,
) -> Result<Option<Arc<apr_tls::rustls::ClientConfig>>, SinkError> {
    let cert = apr_tls::configured(&server.client_cert);
    let key = apr_tls::configured(&server.client_key);
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(SinkError::Setup(
                "[server] client_cert and client_key go together".into(),
            ))
        }
    };
    match apr_tls::configured(&server.ca_file) {
        Some(ca) => apr_tls::client_config(ca, identity)
            .map(Some)
            .map_err(|e| SinkError::Setup(format!("[server]: {e}"))),
        None if identity.is_some() => Err(SinkError::Setup(
            "[server] client_cert needs ca_file (mutual TLS is HTTPS)".into(),
        )),
        None => Ok(None),
    }
}

impl HttpSink {
    /// The devices of the gateway's APRs with their credential hashes and
    /// configuration (`GET {url}/api/v1/gateway/devices`), to fill the
    /// embedded broker's [`DeviceDirectory`](crate::DeviceDirectory).
    pub async fn fetch_devices(&self) -> Result<Vec<GatewayDevice>, SinkError> {
        let response = self
            .client
            .get(&self.devices_url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| SinkError::Transport(error_chain(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| SinkError::Transport(error_chain(&e)))?;
        if !status.is_success() {
            return Err(SinkError::Status {
                status: status.as_u16(),
                message: truncate(String::from_utf8_lossy(&body).trim()),
            });
        }
        serde_json::from_slice(&body).map_err(|e| SinkError::BadAnswer(e.to_string()))
    }
}

/// A server message cut to [`MAX_ERROR_BODY`] bytes.
fn truncate(text: &str) -> String {
    let mut message = text.to_string();
    if message.len() > MAX_ERROR_BODY {
        let mut cut = MAX_ERROR_BODY;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

impl Sink for HttpSink {
    async fn devices(&self) -> Result<Option<Vec<GatewayDevice>>, SinkError> {
        self.fetch_devices().await.map(Some)
    }

    async fn send(&self, batch: &IngestBatch) -> Result<IngestAck, SinkError> {
        let body = serde_json::to_vec(batch).map_err(|e| SinkError::Setup(e.to_string()))?;
        let response = self
            .client
            .post(&self.ingest_url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| SinkError::Transport(error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            let bytes = response
                .bytes()
                .await
                .map_err(|e| SinkError::Transport(error_chain(&e)))?;
            return serde_json::from_slice(&bytes).map_err(|e| SinkError::BadAnswer(e.to_string()));
        }
        let text = response.text().await.unwrap_or_default();
        Err(SinkError::Status {
            status: status.as_u16(),
            message: truncate(text.trim()),
        })
    }
}

/// The delay before retry number `attempt` (1 for the first retry):
/// exponential from `min`, capped at `max`, with "equal jitter" — half the
/// delay fixed, half scaled by `jitter_sample` in `[0, 1]` — and never below
/// `min`. Pure, so tests pass the sample.
pub fn backoff(attempt: u32, min: Duration, max: Duration, jitter_sample: f64) -> Duration {
    let max = max.max(min);
    let doublings = attempt.saturating_sub(1).min(31);
    let base = min.saturating_mul(1u32 << doublings).min(max);
    let sample = if jitter_sample.is_finite() {
        jitter_sample.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let half = base / 2;
    (half + half.mul_f64(sample)).clamp(min, max)
}

/// Device statuses waiting for the next batch.
#[derive(Debug, Default)]
pub(crate) struct StatusQueue {
    queue: Mutex<Vec<DeviceStatus>>,
    pushed: Notify,
}

impl StatusQueue {
    pub fn push(&self, status: DeviceStatus) {
        self.lock().push(status);
        self.pushed.notify_one();
    }

    pub fn take(&self) -> Vec<DeviceStatus> {
        std::mem::take(&mut *self.lock())
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DeviceStatus>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Everything the forwarder loop needs.
pub(crate) struct Forwarder<S, K> {
    pub gateway_id: String,
    pub config: ForwardConfig,
    pub spool: Arc<S>,
    pub sink: Arc<K>,
    pub statuses: Arc<StatusQueue>,
    pub counters: Arc<Counters>,
    pub acks: mpsc::UnboundedSender<Vec<DeviceAck>>,
    /// Turns true when the gateway shuts down: drain for `shutdown_flush_ms`.
    pub closing: watch::Receiver<bool>,
}

/// What stopped a wait of the forwarder.
enum Wake {
    Work,
    Closing,
    Expired,
}

impl<S: Spool, K: Sink> Forwarder<S, K> {
    fn has_work(&self) -> bool {
        self.spool.waiting_readings() > 0 || !self.statuses.is_empty()
    }

    fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Waits until there is something to send, the gateway closes, or `until`.
    async fn wait_for_work(&mut self, until: Option<Instant>) -> Wake {
        loop {
            let appended = self.spool.appended();
            let pushed = self.statuses.pushed.notified();
            if self.has_work() {
                return Wake::Work;
            }
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                _ = appended => {}
                _ = pushed => {}
                _ = self.closing.changed(), if !*self.closing.borrow() => return Wake::Closing,
                _ = tokio::time::sleep_until(until.unwrap_or(far)) => {
                    if until.is_some() { return Wake::Expired; }
                }
            }
        }
    }

    /// Runs until the gateway closes and the spool is flushed (or the flush
    /// time is up).
    pub async fn run(mut self) -> Result<(), Error> {
        let mut seq: u64 = 0;
        let mut drain_until: Option<Instant> = None;
        loop {
            if self.is_closing() && drain_until.is_none() {
                drain_until =
                    Some(Instant::now() + Duration::from_millis(self.config.shutdown_flush_ms));
                info!(spool = ?self.spool.depth(), "shutting down: flushing the spool to the server");
            }
            if drain_until.is_some() && !self.has_work() {
                break;
            }
            match self.wait_for_work(drain_until).await {
                Wake::Work => {}
                Wake::Closing => continue,
                Wake::Expired => break,
            }
            // Live: let the batch fill for a moment, unless it is full already.
            let fill_until = Instant::now() + self.config.batch_delay();
            while !self.config.batch_delay().is_zero()
                && self.counters.mode() == Mode::Live
                && !self.is_closing()
                && self.spool.waiting_readings() < self.config.max_batch_readings as u64
            {
                let appended = self.spool.appended();
                tokio::select! {
                    _ = appended => {}
                    _ = tokio::time::sleep_until(fill_until) => break,
                    _ = self.closing.changed() => {}
                }
            }
            let taken = self
                .spool
                .next_batch(self.config.max_batch_readings)
                .await?;
            let (ids, packs): (Vec<u64>, Vec<_>) = taken.into_iter().unzip();
            seq += 1;
            let batch = IngestBatch {
                gateway: self.gateway_id.clone(),
                seq,
                packs,
                statuses: self.statuses.take(),
            };
            let readings: usize = batch.packs.iter().map(|p| p.readings.len()).sum();
            let span = tracing::debug_span!("batch", seq, packs = batch.packs.len(), readings);
            let delivered = self
                .deliver(&batch, drain_until)
                .instrument(span.clone())
                .await;
            if !delivered {
                warn!(
                    seq,
                    packs = batch.packs.len(),
                    "shutdown flush time is up; batch not acknowledged (devices will resend)"
                );
                break;
            }
            self.spool.release(&ids).await?;
            Counters::add(&self.counters.batches_forwarded, 1);
            Counters::add(&self.counters.packs_forwarded, batch.packs.len());
            Counters::add(&self.counters.readings_forwarded, readings);
            self.counters
                .last_delivery_ms
                .store(crate::uplink::now_ms().max(0) as u64, Relaxed);
            let mode = next_mode(
                self.counters.mode(),
                Attempt::Delivered {
                    waiting: self.spool.waiting_readings(),
                },
                self.config.max_batch_readings as u64,
            );
            self.counters.set_mode(mode);
            if !self.spool.durable() {
                let acks = group_acks(&batch.packs);
                span.in_scope(|| debug!(devices = acks.len(), "batch acknowledged"));
                if !acks.is_empty() && self.acks.send(acks).is_err() {
                    warn!("the acknowledgment publisher is gone; devices will resend");
                }
            }
        }
        if drain_until.is_some() {
            info!(spool = ?self.spool.depth(), "forwarder stopped");
        }
        Ok(())
    }

    /// Sends one batch until acknowledged. `false` when the flush time of a
    /// shutdown ran out first.
    async fn deliver(&mut self, batch: &IngestBatch, mut drain_until: Option<Instant>) -> bool {
        let mut attempt: u32 = 0;
        loop {
            let sent = match drain_until {
                Some(until) => tokio::time::timeout_at(until, self.sink.send(batch))
                    .await
                    .unwrap_or_else(|_| {
                        Err(SinkError::Transport("shutdown flush time is up".into()))
                    }),
                None => self.sink.send(batch).await,
            };
            let e = match sent {
                Ok(ack) => {
                    debug!(
                        stored = ack.stored,
                        duplicates = ack.duplicates,
                        quarantined = ack.quarantined,
                        attempts = attempt + 1,
                        "server acknowledged"
                    );
                    return true;
                }
                Err(e) => e,
            };
            self.counters.forward_errors.fetch_add(1, Relaxed);
            let was = self.counters.mode();
            let mode = next_mode(was, Attempt::Failed, self.config.max_batch_readings as u64);
            if was != mode {
                warn!(error = %e, "the server cannot be reached; the spool keeps the packs (mode offline)");
            }
            self.counters.set_mode(mode);
            attempt = attempt.saturating_add(1);
            let delay = if e.is_refusal() {
                error!(error = %e, seq = batch.seq, "the server refused the batch; retrying at the longest delay");
                self.config.backoff_max()
            } else {
                let d = backoff(
                    attempt,
                    self.config.backoff_min(),
                    self.config.backoff_max(),
                    rand::random::<f64>(),
                );
                warn!(error = %e, seq = batch.seq, attempt, retry_in_ms = d.as_millis() as u64, "forwarding failed; will retry");
                d
            };
            let wake = Instant::now() + delay;
            loop {
                if let Some(until) = drain_until {
                    if wake >= until {
                        tokio::time::sleep_until(until).await;
                        return false;
                    }
                    tokio::time::sleep_until(wake).await;
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    _ = self.closing.changed() => {
                        if *self.closing.borrow() {
                            drain_until = Some(Instant::now() + Duration::from_millis(self.config.shutdown_flush_ms));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_failure_goes_offline_and_a_delivery_returns_to_live_or_catch_up() {
        assert_eq!(next_mode(Mode::Live, Attempt::Failed, 100), Mode::Offline);
        assert_eq!(
            next_mode(Mode::Offline, Attempt::Delivered { waiting: 5_000 }, 100),
            Mode::CatchUp
        );
        assert_eq!(
            next_mode(Mode::CatchUp, Attempt::Delivered { waiting: 100 }, 100),
            Mode::Live
        );
        assert_eq!(
            next_mode(Mode::Offline, Attempt::Delivered { waiting: 0 }, 100),
            Mode::Live
        );
    }

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_the_maximum() {
        let (min, max) = (100 * MS, 10_000 * MS);
        let top: Vec<u128> = (1..=10)
            .map(|a| backoff(a, min, max, 1.0).as_millis())
            .collect();
        assert_eq!(
            top,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(backoff(u32::MAX, min, max, 0.5), 7_500 * MS);
    }

    #[test]
    fn backoff_jitter_stays_between_half_the_delay_and_the_delay() {
        let (min, max) = (100 * MS, 10_000 * MS);
        assert_eq!(backoff(4, min, max, 0.0), 400 * MS);
        assert_eq!(backoff(4, min, max, 0.5), 600 * MS);
        assert_eq!(
            backoff(1, min, max, 0.0),
            100 * MS,
            "never below the minimum"
        );
        assert_eq!(backoff(3, min, max, f64::NAN), 200 * MS);
        assert_eq!(backoff(0, min, max, 2.0), 100 * MS);
        assert_eq!(
            backoff(3, 500 * MS, 100 * MS, 0.0),
            500 * MS,
            "a max below min is min"
        );
    }

    #[test]
    fn only_client_errors_other_than_timeout_and_rate_limit_are_refusals() {
        let s = |status| SinkError::Status {
            status,
            message: String::new(),
        };
        assert!(s(400).is_refusal());
        assert!(s(401).is_refusal());
        assert!(s(403).is_refusal());
        assert!(!s(408).is_refusal());
        assert!(!s(429).is_refusal());
        assert!(!s(500).is_refusal());
        assert!(!s(503).is_refusal());
        assert!(!SinkError::Transport("x".into()).is_refusal());
    }
}
