//! Telling people: who wants which alerts, and the channels that reach them.
//!
//! A [`NotificationPref`] (table `notification_prefs`) says: user U wants
//! alerts of at least severity S, of the APRs in its scope (optionally only
//! some of them), on channel C at address A. Each alert transition people
//! are told about (raised, escalated, renotified) goes to every preference
//! that matches, through the [`Notifier`] of its channel:
//!
//! - [`Webhook`]: `POST` of the JSON [`payload`] to the address, signed with
//!   HMAC-SHA256 over the raw body with the preference's secret, in
//!   `X-APR-Signature: sha256=<hex>`. A 2xx answer is delivery. Plain HTTP
//!   only for now (no TLS backend compiled in).
//! - [`Email`]: a plain-text message in Spanish over SMTP (no TLS, no AUTH:
//!   a relay on the local network or loopback), subject like
//!   `[APR] Alerta: cloro libre bajo en APR Los Aromos (los-aromos), equipo caseta`.
//!
//! Delivery runs off the hot path: the alert engine puts transitions on a
//! bounded queue ([`Dispatcher::enqueue`], which never blocks: a full queue
//! drops and counts), and a task delivers each in its own task with a
//! timeout. Every outcome is counted in `apr_notifications_total{channel,result}`
//! and failures are logged; nothing is retried except by the engine's
//! re-notification of alerts still unacknowledged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::alerting::engine::{Transition, TransitionKind};
use crate::alerting::{Alert, Severity};
use crate::auth::Principal;
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::store::{AlertStore, Registry};

/// How a preference reaches its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// HTTP POST of signed JSON.
    Webhook,
    /// E-mail over SMTP.
    Email,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 2] = [Channel::Webhook, Channel::Email];

    /// The channel's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Email => "email",
        }
    }
}

/// One notification preference of one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationPref {
    /// Channel.
    pub channel: Channel,
    /// URL (webhook) or e-mail address.
    pub address: String,
    /// Webhook signing secret (required for webhooks; never shown back).
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    /// Lowest severity notified.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Only these APRs (within the user's scope); all of its scope when absent.
    #[serde(default)]
    pub aprs: Option<Vec<String>>,
}

fn default_min_severity() -> Severity {
    Severity::Warning
}

impl NotificationPref {
    /// Checks the address and secret for the channel.
    pub fn check(&self) -> Result<()> {
        match self.channel {
            Channel::Webhook => {
                if !self.address.starts_with("http://") {
                    return Err(Error::InvalidBody(format!(
                        "webhook address '{}' must be an http:// URL (https is not supported yet)",
                        self.address
                    )));
                }
                if self.secret.as_deref().is_none_or(|s| s.len() < 16) {
                    return Err(Error::InvalidBody(
                        "a webhook needs a 'secret' of at least 16 characters to sign with".into(),
                    ));
                }
            }
            Channel::Email => {
                let ok = self
                    .address
                    .split_once('@')
                    .is_some_and(|(u, d)| !u.is_empty() && (d.contains('.') || d == "localhost"));
                if !ok {
                    return Err(Error::InvalidBody(format!(
                        "'{}' is not an e-mail address",
                        self.address
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether this preference wants a notice about `alert`.
    pub fn wants(&self, alert: &Alert) -> bool {
        alert.severity >= self.min_severity
            && self
                .aprs
                .as_ref()
                .is_none_or(|set| set.contains(&alert.apr))
    }
}

/// What a notifier sends.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// What happened.
    pub transition: TransitionKind,
    /// The alert after it.
    pub alert: Alert,
    /// The APR's display name.
    pub apr_name: String,
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(pub String);

/// A boxed future (the trait is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A channel that can reach people.
pub trait Notifier: Send + Sync {
    /// The channel it serves.
    fn channel(&self) -> Channel;
    /// Delivers `notice` to the preference's address.
    fn send<'a>(
        &'a self,
        to: &'a NotificationPref,
        notice: &'a Notice,
    ) -> BoxFuture<'a, std::result::Result<(), NotifyError>>;
}

/// The subject line (Spanish), e.g. `[APR] Alerta: cloro libre bajo en APR
/// Los Aromos (los-aromos), equipo caseta`.
pub fn subject(n: &Notice) -> String {
    let a = &n.alert;
    let prefix = match n.transition {
        TransitionKind::Escalated => "[APR] Escalada — ",
        TransitionKind::Renotified => "[APR] Recordatorio — ",
        _ => "[APR] ",
    };
    format!(
        "{prefix}{}: {} en {} ({}), equipo {}",
        a.severity.spanish(),
        a.kind.spanish(),
        n.apr_name,
        a.apr,
        a.device
    )
}

/// The plain-text body (Spanish).
pub fn body(n: &Notice) -> String {
    let a = &n.alert;
    let local = chrono::DateTime::from_timestamp_millis(a.opened_at_ms)
        .map(|t| {
            t.with_timezone(&crate::limits::LOCAL_TZ)
                .format("%Y-%m-%d %H:%M (hora de Chile)")
                .to_string()
        })
        .unwrap_or_default();
    format!(
        "{}\n\nAPR: {} ({})\nEquipo: {}\nTipo: {} ({})\nSeveridad: {}\nValor: {}\nLímite: {}\nDesde: {}\nAlerta n.º {}\n\n\
         Reconozca la alerta en el panel (POST /api/v1/alerts/{}/ack) para dejar de recibir recordatorios.\n",
        subject(n),
        n.apr_name,
        a.apr,
        a.device,
        a.kind.spanish(),
        a.kind.as_str(),
        a.severity.as_str(),
        a.value,
        a.threshold,
        local,
        a.id,
        a.id
    )
}

/// The webhook's JSON body: `{"event","alert":{...},"apr_name","subject"}`.
pub fn payload(n: &Notice) -> serde_json::Value {
    serde_json::json!({
        "event": n.transition.as_str(),
        "alert": n.alert.to_json(),
        "apr_name": n.apr_name,
        "subject": subject(n),
    })
}

/// `sha256=<hex>` of HMAC-SHA256 of `body` with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Signed JSON over HTTP POST.
#[derive(Debug, Clone)]
pub struct Webhook {
    client: reqwest::Client,
}

impl Webhook {
    /// A webhook notifier with a per-request timeout.
    pub fn new(timeout: Duration) -> Result<Webhook> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the webhook HTTP client: {e}")))?;
        Ok(Webhook { client })
    }
}

impl Notifier for Webhook {
    fn channel(&self) -> Channel {
        Channel::Webhook
    }

    fn send<'a>(
        &'a self,
        to: &'a NotificationPref,
        notice: &'a Notice,
    ) -> BoxFuture<'a, std::result::Result<(), NotifyError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&payload(notice))
                .map_err(|e| NotifyError(format!("cannot encode the payload: {e}")))?;
            let sig = signature(to.secret.as_deref().unwrap_or_default(), &body);
            let resp = self
                .client
                .post(&to.address)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-APR-Signature", sig)
                .body(body)
                .send()
                .await
                .map_err(|e| NotifyError(format!("POST {}: {e}", to.address)))?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(NotifyError(format!(
                    "POST {} answered {}",
                    to.address,
                    resp.status()
                )))
            }
        })
    }
}

/// E-mail over plain SMTP.
pub struct Email {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email").field("from", &self.from).finish()
    }
}

impl Email {
    /// An SMTP notifier for a relay at `host:port`, sending as `from`.
    pub fn new(host: &str, port: u16, from: &str, timeout: Duration) -> Result<Email> {
        let from = from
            .parse()
            .map_err(|e| Error::Config(format!("[notify] smtp_from '{from}': {e}")))?;
        let transport =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(host)
                .port(port)
                .timeout(Some(timeout))
                .build();
        Ok(Email { transport, from })
    }
}

impl Notifier for Email {
    fn channel(&self) -> Channel {
        Channel::Email
    }

    fn send<'a>(
        &'a self,
        to: &'a NotificationPref,
        notice: &'a Notice,
    ) -> BoxFuture<'a, std::result::Result<(), NotifyError>> {
        Box::pin(async move {
            use lettre::AsyncTransport;
            let rcpt = to
                .address
                .parse()
                .map_err(|e| NotifyError(format!("address '{}': {e}", to.address)))?;
            let message = lettre::Message::builder()
                .from(self.from.clone())
                .to(rcpt)
                .subject(subject(notice))
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .body(body(notice))
                .map_err(|e| NotifyError(format!("cannot build the message: {e}")))?;
            self.transport
                .send(message)
                .await
                .map_err(|e| NotifyError(format!("SMTP to {}: {e}", to.address)))?;
            Ok(())
        })
    }
}

/// The notification queue and its delivery task.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    tx: mpsc::Sender<Transition>,
    counters: Arc<Counters>,
}

/// What the delivery task needs.
pub struct DispatchContext {
    /// Users and APRs (scope, names).
    pub registry: Arc<dyn Registry>,
    /// Preferences.
    pub alerts: Arc<dyn AlertStore>,
    /// One notifier per channel configured.
    pub notifiers: Vec<Arc<dyn Notifier>>,
    /// Where outcomes are counted.
    pub counters: Arc<Counters>,
    /// Longest a delivery may take.
    pub timeout: Duration,
}

impl Dispatcher {
    /// Starts the delivery task (on the current tokio runtime) with a queue
    /// of `queue` transitions.
    pub fn start(ctx: DispatchContext, queue: usize) -> Dispatcher {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let counters = ctx.counters.clone();
        tokio::spawn(deliver_loop(Arc::new(ctx), rx));
        Dispatcher { tx, counters }
    }

    /// Queues a transition for delivery; never blocks (a full queue drops it,
    /// counted as `apr_notifications_total{channel="queue",result="dropped"}`).
    pub fn enqueue(&self, t: Transition) {
        if self.tx.try_send(t).is_err() {
            self.counters.record_notification("queue", "dropped");
            tracing::warn!("notification queue full or closed; a notification was dropped");
        }
    }
}

async fn deliver_loop(ctx: Arc<DispatchContext>, mut rx: mpsc::Receiver<Transition>) {
    while let Some(t) = rx.recv().await {
        let c = ctx.clone();
        let alert = t.alert.clone();
        let found = tokio::task::spawn_blocking(move || -> Result<_> {
            let prefs = c.alerts.notification_prefs(None)?;
            let apr = c.registry.apr(&alert.apr)?;
            let mut wanted = Vec::new();
            for (username, pref) in prefs {
                if !pref.wants(&alert) {
                    continue;
                }
                let Some(user) = c.registry.user(&username)? else {
                    continue;
                };
                let scope_ok = apr
                    .as_ref()
                    .is_some_and(|a| Principal::of(&user).scope.allows_apr(a));
                if scope_ok && user.role.reads() {
                    wanted.push(pref);
                }
            }
            Ok((wanted, apr.map(|a| a.name).unwrap_or_default()))
        })
        .await;
        let (wanted, apr_name) = match found {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read notification preferences");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "notification lookup task failed");
                continue;
            }
        };
        let notice = Arc::new(Notice {
            transition: t.kind,
            alert: t.alert,
            apr_name,
        });
        for pref in wanted {
            let Some(notifier) = ctx
                .notifiers
                .iter()
                .find(|n| n.channel() == pref.channel)
                .cloned()
            else {
                ctx.counters
                    .record_notification(pref.channel.as_str(), "failed");
                tracing::warn!(
                    channel = pref.channel.as_str(),
                    "no notifier configured for this channel"
                );
                continue;
            };
            let notice = notice.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let r = tokio::time::timeout(ctx.timeout, notifier.send(&pref, &notice)).await;
                let channel = pref.channel.as_str();
                match r {
                    Ok(Ok(())) => {
                        ctx.counters.record_notification(channel, "sent");
                        tracing::debug!(channel, address = %pref.address, alert = notice.alert.id, "notified");
                    }
                    Ok(Err(e)) => {
                        ctx.counters.record_notification(channel, "failed");
                        tracing::warn!(channel, alert = notice.alert.id, error = %e, "notification failed");
                    }
                    Err(_) => {
                        ctx.counters.record_notification(channel, "failed");
                        tracing::warn!(channel, alert = notice.alert.id, "notification timed out");
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::{AlertKind, AlertState};

    fn alert() -> Alert {
        Alert {
            id: 3,
            apr: "los-aromos".into(),
            device: "caseta".into(),
            kind: AlertKind::ChlorineLow,
            severity: Severity::Warning,
            state: AlertState::Open,
            opened_at_ms: 1_764_064_800_000,
            value: 0.05,
            threshold: 0.2,
            acknowledged_by: None,
            acknowledged_at_ms: None,
            acknowledged_comment: None,
            resolved_by: None,
            resolved_at_ms: None,
            resolved_comment: None,
            escalated_at_ms: None,
            last_notified_at_ms: None,
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_raw_body_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_subject_names_the_apr_and_the_kind_in_spanish() {
        let n = Notice {
            transition: TransitionKind::Raised,
            alert: alert(),
            apr_name: "APR Los Aromos".into(),
        };
        assert_eq!(
            subject(&n),
            "[APR] Alerta: cloro libre bajo en APR Los Aromos (los-aromos), equipo caseta"
        );
        assert!(body(&n).contains("Valor: 0.05"));
    }

    #[test]
    fn a_preference_filters_by_severity_and_apr() {
        let mut p = NotificationPref {
            channel: Channel::Email,
            address: "op@example.cl".into(),
            secret: None,
            min_severity: Severity::Critical,
            aprs: None,
        };
        assert!(!p.wants(&alert()));
        p.min_severity = Severity::Info;
        assert!(p.wants(&alert()));
        p.aprs = Some(vec!["otra".into()]);
        assert!(!p.wants(&alert()));
        p.check().unwrap();
        p.channel = Channel::Webhook;
        assert!(p.check().is_err());
    }
}
