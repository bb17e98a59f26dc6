//! The loop around the [`Engine`]: one thread owns it and takes its inputs
//! from a bounded channel, in order.
//!
//! - Ingest sends each committed batch's readings ([`Alerting::submit`]); the
//!   ingest handler awaits only room in the channel, never the evaluation,
//!   so a slow engine slows ingest down (back-pressure) but cannot lose a
//!   committed reading's evaluation while the server runs.
//! - A tick task sends the wall clock and every device's liveness every
//!   `[alerts] tick_interval_s`.
//! - The analysis pass sends the probe-drift verdict of an APR that has new
//!   DPD checks.
//! - The API sends acknowledgements, resolutions and limit changes and waits
//!   for the answer, which comes only after the store has the change.
//!
//! The thread drains what is queued, runs it through the engine, writes the
//! whole outcome in one store transaction, answers the API callers, and hands
//! the transitions people are told about to the notification queue (which
//! drops, counted, rather than block). If the write fails, the engine is
//! rebuilt from the store, so memory never runs ahead of what is durable.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::engine::{Engine, Liveness, Outcome, PackEvent, ProbeCheck, TransitionKind};
use super::Alert;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::notify::Dispatcher;
use crate::store::AlertStore;

/// Most inputs run through the engine before one store write.
const MAX_INPUTS_PER_ROUND: usize = 256;

enum Input {
    Packs(Vec<PackEvent>),
    Tick {
        now_ms: i64,
        devices: Vec<Liveness>,
    },
    Ack {
        id: i64,
        by: String,
        comment: Option<String>,
        reply: oneshot::Sender<Result<Alert>>,
    },
    Resolve {
        id: i64,
        by: String,
        comment: Option<String>,
        reply: oneshot::Sender<Result<Alert>>,
    },
    Limits {
        apr: String,
        limits: Option<Limits>,
        reply: oneshot::Sender<()>,
    },
    Probe(ProbeCheck),
}

/// Settings of the alert service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Inputs the channel holds before senders wait.
    pub queue: usize,
    /// A raise whose reading is older than this (ms) is not notified when
    /// raised (history being backfilled); it is reminded like any other
    /// unacknowledged alert.
    pub notify_max_age_ms: i64,
}

/// A handle on the running alert service. Dropping every handle stops the
/// thread once it has drained its queue.
#[derive(Debug)]
pub struct Alerting {
    tx: mpsc::Sender<Input>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn stopped() -> Error {
    Error::Unavailable("the alert service has stopped".into())
}

impl Alerting {
    /// Loads the persisted state and starts the engine thread.
    pub fn start(
        store: Arc<dyn AlertStore>,
        dispatcher: Option<Dispatcher>,
        settings: Settings,
    ) -> Result<Alerting> {
        let engine = Engine::restore(Limits::default(), store.load_alerting()?);
        tracing::info!(open = engine.open_alerts().count(), "alert engine restored");
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let thread = std::thread::Builder::new()
            .name("alert-engine".into())
            .spawn(move || run(engine, rx, store, dispatcher, settings))
            .map_err(|source| Error::Io {
                what: "cannot start the alert engine thread".into(),
                source,
            })?;
        Ok(Alerting {
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    async fn send(&self, input: Input) -> Result<()> {
        self.tx.send(input).await.map_err(|_| stopped())
    }

    /// Hands committed readings to the engine (waits for room only).
    pub async fn submit(&self, packs: Vec<PackEvent>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        self.send(Input::Packs(packs)).await
    }

    /// The periodic tick.
    pub async fn tick(&self, now_ms: i64, devices: Vec<Liveness>) -> Result<()> {
        self.send(Input::Tick { now_ms, devices }).await
    }

    /// The probe-drift verdict after new DPD checks, from a blocking
    /// thread (the analysis pass); waits for room only.
    pub fn probe_check_blocking(&self, check: ProbeCheck) -> Result<()> {
        self.tx
            .blocking_send(Input::Probe(check))
            .map_err(|_| stopped())
    }

    /// Acknowledges an open alert; answers it once stored.
    pub async fn acknowledge(&self, id: i64, by: &str, comment: Option<String>) -> Result<Alert> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Ack {
            id,
            by: by.to_owned(),
            comment,
            reply,
        })
        .await?;
        rx.await.map_err(|_| stopped())?
    }

    /// Resolves an open alert; answers it once stored.
    pub async fn resolve(&self, id: i64, by: &str, comment: Option<String>) -> Result<Alert> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Resolve {
            id,
            by: by.to_owned(),
            comment,
            reply,
        })
        .await?;
        rx.await.map_err(|_| stopped())?
    }

    /// Tells the engine an APR's limits changed (`None`: the defaults).
    pub async fn set_limits(&self, apr: &str, limits: Option<Limits>) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Limits {
            apr: apr.to_owned(),
            limits,
            reply,
        })
        .await?;
        rx.await.map_err(|_| stopped())
    }

    /// Stops the engine thread after it drained its queue (closing the
    /// channel needs every clone of the sender gone; this only waits).
    pub fn join(self) {
        let Alerting { tx, thread } = self;
        drop(tx);
        let handle = thread.into_inner().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn run(
    mut engine: Engine,
    mut rx: mpsc::Receiver<Input>,
    store: Arc<dyn AlertStore>,
    dispatcher: Option<Dispatcher>,
    settings: Settings,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut inputs = vec![first];
        while inputs.len() < MAX_INPUTS_PER_ROUND {
            match rx.try_recv() {
                Ok(i) => inputs.push(i),
                Err(_) => break,
            }
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut out = Outcome::default();
        let mut replies = Vec::new();
        let mut limit_replies = Vec::new();
        for input in inputs {
            match input {
                Input::Packs(packs) => {
                    for p in &packs {
                        engine.on_pack(p, now_ms, &mut out);
                    }
                }
                Input::Tick { now_ms, devices } => engine.on_tick(now_ms, &devices, &mut out),
                Input::Ack {
                    id,
                    by,
                    comment,
                    reply,
                } => {
                    let r = engine.acknowledge(id, &by, comment.as_deref(), now_ms, &mut out);
                    replies.push((reply, r));
                }
                Input::Resolve {
                    id,
                    by,
                    comment,
                    reply,
                } => {
                    let r = engine.resolve(id, &by, comment.as_deref(), now_ms, &mut out);
                    replies.push((reply, r));
                }
                Input::Limits { apr, limits, reply } => {
                    engine.set_limits(&apr, limits);
                    limit_replies.push(reply);
                }
                Input::Probe(check) => engine.on_probe_check(&check, now_ms, &mut out),
            }
        }
        let mut stored = true;
        if !out.is_empty() {
            if let Err(e) = store.apply_alerting(&out) {
                stored = false;
                tracing::error!(error = %e, "cannot store alert changes; reloading the engine");
                match store.load_alerting() {
                    Ok(s) => engine = Engine::restore(Limits::default(), s),
                    Err(e) => tracing::error!(error = %e, "cannot reload the alert engine"),
                }
            }
        }
        for (reply, r) in replies {
            let r = if stored {
                r
            } else {
                Err(Error::Unavailable(
                    "the alert change could not be stored; try again".into(),
                ))
            };
            let _ = reply.send(r);
        }
        for reply in limit_replies {
            let _ = reply.send(());
        }
        if !stored {
            continue;
        }
        for t in &out.transitions {
            tracing::info!(
                id = t.alert.id,
                apr = %t.alert.apr,
                device = %t.alert.device,
                kind = %t.alert.kind,
                severity = t.alert.severity.as_str(),
                transition = t.kind.as_str(),
                "alert"
            );
        }
        if let Some(d) = &dispatcher {
            for t in out.transitions {
                let stale = t.kind == TransitionKind::Raised
                    && now_ms - t.alert.opened_at_ms > settings.notify_max_age_ms;
                if t.kind.notifies() && !stale {
                    d.enqueue(t);
                }
            }
        }
    }
}
