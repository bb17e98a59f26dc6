//! The alert state machine: no I/O, no clock of its own.
//!
//! State per (APR, device, kind): an optional *pending* condition (first seen
//! at, and a count for the pack-based sensor fault) and an optional open
//! alert. Per (APR, device) also the night-flow learning state. Inputs:
//!
//! | input | decides |
//! | --- | --- |
//! | [`Engine::on_pack`] | level rules per reading (raise after the minimum duration, clear at the clear level, escalate when a reading calls for a higher severity), the night window's minimum flow, sensor faults |
//! | [`Engine::on_tick`] | offline devices (and back online), escalation of unacknowledged warnings, re-notification of unacknowledged alerts, night windows that ended without a later reading |
//! | [`Engine::acknowledge`], [`Engine::resolve`] | a person's lifecycle step |
//!
//! Every call appends to an [`Outcome`]: the transitions (each with the alert
//! as it is after the transition) and the pending and night-flow states to
//! persist, in order. Applying an outcome to the store and then feeding the
//! same inputs to an engine restored from the store gives the same result.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use apr_wire::Metric;
use chrono::{NaiveDate, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

use super::rules::{self, Verdict};
use super::{Alert, AlertKind, AlertState, Severity};
use crate::error::{Error, Result};
use crate::limits::{Limits, LOCAL_TZ};

/// The readings of one pack that the engine looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct PackEvent {
    /// APR id.
    pub apr: String,
    /// Device id.
    pub device: String,
    /// Metric, time (ms), value.
    pub readings: Vec<(Metric, i64, f64)>,
    /// Records of the pack refused as outside the physical range.
    pub out_of_range: u32,
    /// When the gateway received the pack, ms.
    pub received_ms: i64,
}

/// The verdict of the probe-drift check of an APR after new DPD checks.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeCheck {
    /// APR id.
    pub apr: String,
    /// The device whose chlorine probe was compared.
    pub device: String,
    /// `Some((mean probe − DPD difference, tolerance))` in mg/L when the
    /// probe drifts; `None` when the latest check agrees with it.
    pub drift: Option<(f64, f64)>,
    /// When the latest check was taken, ms.
    pub at_ms: i64,
}

/// What the tick knows about a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Liveness {
    /// APR id.
    pub apr: String,
    /// Device id.
    pub device: String,
    /// Its report interval, seconds.
    pub report_interval_s: u32,
    /// When a pack from it last reached its gateway, ms.
    pub last_seen_ms: Option<i64>,
    /// Its gateway's last word: `online` or `offline`.
    pub last_status: Option<String>,
}

/// A condition seen but not yet held long enough to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// When it was first seen, ms (device time).
    pub since_ms: i64,
    /// How many times in a row (packs, for `sensor_fault`).
    pub count: u32,
}

/// (APR, device, kind).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlertKey {
    /// APR id.
    pub apr: String,
    /// Device id.
    pub device: String,
    /// Kind.
    pub kind: AlertKind,
}

/// The night-flow state of one device, persisted when a night closes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NightFlow {
    /// Minimum night flows of the first nights, l/s (the learned baseline is
    /// their median once there are enough).
    pub learned: Vec<f64>,
    /// The last night evaluated, local date.
    pub last_night: Option<NaiveDate>,
    /// The window in progress (memory only).
    #[serde(skip)]
    current: Option<NightWindow>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct NightWindow {
    date: NaiveDate,
    min: f64,
    count: u32,
}

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// A new alert.
    Raised,
    /// The condition cleared; the alert is resolved.
    Cleared,
    /// Warning to critical (unacknowledged too long, or a worse reading).
    Escalated,
    /// Still open and unacknowledged: tell again.
    Renotified,
    /// A person acknowledged it.
    Acknowledged,
    /// A person resolved it.
    Resolved,
}

impl TransitionKind {
    /// The transition's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Raised => "raised",
            TransitionKind::Cleared => "cleared",
            TransitionKind::Escalated => "escalated",
            TransitionKind::Renotified => "renotified",
            TransitionKind::Acknowledged => "acknowledged",
            TransitionKind::Resolved => "resolved",
        }
    }

    /// Whether people are told about it.
    pub const fn notifies(self) -> bool {
        matches!(
            self,
            TransitionKind::Raised | TransitionKind::Escalated | TransitionKind::Renotified
        )
    }
}

/// One transition and the alert after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// What happened.
    pub kind: TransitionKind,
    /// The alert as it is now.
    pub alert: Alert,
}

/// What one or more inputs changed, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// Alert transitions.
    pub transitions: Vec<Transition>,
    /// Pending conditions to store (`Some`) or forget (`None`).
    pub pending: Vec<(AlertKey, Option<Pending>)>,
    /// Night-flow states to store.
    pub night: Vec<(String, String, NightFlow)>,
}

impl Outcome {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.transitions.is_empty() && self.pending.is_empty() && self.night.is_empty()
    }
}

/// The persisted state an engine starts from.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Alerts not resolved.
    pub open: Vec<Alert>,
    /// Pending conditions.
    pub pending: Vec<(AlertKey, Pending)>,
    /// Night-flow states.
    pub night: Vec<(String, String, NightFlow)>,
    /// The id the next alert gets.
    pub next_id: i64,
    /// Per-APR limits (APRs with overrides).
    pub limits: Vec<(String, Limits)>,
}

#[derive(Debug, Clone, Default)]
struct KindState {
    pending: Option<Pending>,
    open: Option<Alert>,
    /// Clean packs in a row while a sensor fault is open (memory only).
    clean: u32,
}

impl KindState {
    fn is_empty(&self) -> bool {
        self.pending.is_none() && self.open.is_none()
    }
}

#[derive(Debug, Clone)]
struct DeviceTrack {
    last_t: [i64; Metric::ALL.len()],
    kinds: BTreeMap<AlertKind, KindState>,
    night: NightFlow,
}

impl Default for DeviceTrack {
    fn default() -> Self {
        DeviceTrack {
            last_t: [i64::MIN; Metric::ALL.len()],
            kinds: BTreeMap::new(),
            night: NightFlow::default(),
        }
    }
}

/// The local date and second of the day of a time in ms (America/Santiago).
pub fn local_day_and_second(t_ms: i64) -> (NaiveDate, u32) {
    let local = Utc
        .timestamp_millis_opt(t_ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&LOCAL_TZ);
    (local.date_naive(), local.num_seconds_from_midnight())
}

/// The alert engine.
#[derive(Debug)]
pub struct Engine {
    defaults: Arc<Limits>,
    limits: HashMap<String, Arc<Limits>>,
    devices: HashMap<String, HashMap<String, DeviceTrack>>,
    next_id: i64,
}

/// What a new alert is made of.
struct NewAlert<'a> {
    apr: &'a str,
    device: &'a str,
    kind: AlertKind,
    severity: Severity,
    opened_at_ms: i64,
    value: f64,
    threshold: f64,
    now_ms: i64,
}

fn track<'a>(
    devices: &'a mut HashMap<String, HashMap<String, DeviceTrack>>,
    apr: &str,
    device: &str,
) -> &'a mut DeviceTrack {
    if !devices.contains_key(apr) {
        devices.insert(apr.to_owned(), HashMap::new());
    }
    let per_apr = devices.get_mut(apr).expect("inserted above");
    if !per_apr.contains_key(device) {
        per_apr.insert(device.to_owned(), DeviceTrack::default());
    }
    per_apr.get_mut(device).expect("inserted above")
}

fn key(apr: &str, device: &str, kind: AlertKind) -> AlertKey {
    AlertKey {
        apr: apr.to_owned(),
        device: device.to_owned(),
        kind,
    }
}

fn new_alert(next_id: &mut i64, n: NewAlert<'_>) -> Alert {
    let id = *next_id;
    *next_id += 1;
    Alert {
        id,
        apr: n.apr.to_owned(),
        device: n.device.to_owned(),
        kind: n.kind,
        severity: n.severity,
        state: AlertState::Open,
        opened_at_ms: n.opened_at_ms,
        value: n.value,
        threshold: n.threshold,
        acknowledged_by: None,
        acknowledged_at_ms: None,
        acknowledged_comment: None,
        resolved_by: None,
        resolved_at_ms: None,
        resolved_comment: None,
        escalated_at_ms: None,
        last_notified_at_ms: Some(n.now_ms),
    }
}

/// Opens an alert in `ks` (unless one is open) and forgets its pending state.
fn open(ks: &mut KindState, next_id: &mut i64, n: NewAlert<'_>, out: &mut Outcome) {
    if ks.open.is_some() {
        return;
    }
    let k = key(n.apr, n.device, n.kind);
    if ks.pending.take().is_some() {
        out.pending.push((k, None));
    }
    let alert = new_alert(next_id, n);
    ks.open = Some(alert.clone());
    ks.clean = 0;
    out.transitions.push(Transition {
        kind: TransitionKind::Raised,
        alert,
    });
}

/// Resolves the open alert of `ks` as cleared by the engine at `at_ms`, and
/// forgets a pending condition.
fn clear(ks: &mut KindState, k: impl FnOnce() -> AlertKey, at_ms: i64, out: &mut Outcome) {
    if ks.pending.take().is_some() {
        out.pending.push((k(), None));
    }
    if let Some(mut a) = ks.open.take() {
        a.state = AlertState::Resolved;
        a.resolved_at_ms = Some(at_ms);
        out.transitions.push(Transition {
            kind: TransitionKind::Cleared,
            alert: a,
        });
    }
    ks.clean = 0;
}

impl Engine {
    /// An engine with no state and these programme-wide limits.
    pub fn new(defaults: Limits) -> Engine {
        Engine {
            defaults: Arc::new(defaults),
            limits: HashMap::new(),
            devices: HashMap::new(),
            next_id: 1,
        }
    }

    /// An engine that carries on from persisted state.
    pub fn restore(defaults: Limits, snapshot: Snapshot) -> Engine {
        let mut e = Engine::new(defaults);
        e.next_id = snapshot.next_id.max(1);
        for (apr, l) in snapshot.limits {
            e.limits.insert(apr, Arc::new(l));
        }
        for a in snapshot.open {
            let kind = a.kind;
            let t = track(&mut e.devices, &a.apr, &a.device);
            t.kinds.entry(kind).or_default().open = Some(a);
        }
        for (k, p) in snapshot.pending {
            let t = track(&mut e.devices, &k.apr, &k.device);
            t.kinds.entry(k.kind).or_default().pending = Some(p);
        }
        for (apr, device, nf) in snapshot.night {
            track(&mut e.devices, &apr, &device).night = nf;
        }
        e
    }

    /// The limits in force at an APR.
    pub fn limits(&self, apr: &str) -> Arc<Limits> {
        self.limits
            .get(apr)
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
    }

    /// Replaces an APR's limits (`None`: back to the defaults).
    pub fn set_limits(&mut self, apr: &str, limits: Option<Limits>) {
        match limits {
            Some(l) => {
                self.limits.insert(apr.to_owned(), Arc::new(l));
            }
            None => {
                self.limits.remove(apr);
            }
        }
    }

    /// Every alert not resolved.
    pub fn open_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.devices
            .values()
            .flat_map(|m| m.values())
            .flat_map(|t| t.kinds.values())
            .filter_map(|k| k.open.as_ref())
    }

    /// The pending condition of a key, if any.
    pub fn pending(&self, k: &AlertKey) -> Option<Pending> {
        self.devices
            .get(&k.apr)?
            .get(&k.device)?
            .kinds
            .get(&k.kind)?
            .pending
    }

    /// Feeds one pack's readings; `now_ms` is the wall clock (for the
    /// notification times only).
    pub fn on_pack(&mut self, pack: &PackEvent, now_ms: i64, out: &mut Outcome) {
        let limits = self.limits(&pack.apr);
        let (apr, device) = (pack.apr.as_str(), pack.device.as_str());
        let next_id = &mut self.next_id;
        let t = track(&mut self.devices, apr, device);
        for &(metric, t_ms, v) in &pack.readings {
            let i = usize::from(metric.index());
            if t_ms <= t.last_t[i] {
                continue;
            }
            t.last_t[i] = t_ms;
            if metric == Metric::Flow {
                night_reading(t, apr, device, &limits, t_ms, v, now_ms, next_id, out);
                continue;
            }
            let kinds = rules::kinds_of(metric);
            if kinds.is_empty() {
                continue;
            }
            let second = if metric == Metric::Pressure {
                local_day_and_second(t_ms).1
            } else {
                0
            };
            for &kind in kinds {
                let verdict = rules::level(kind, &limits, v, second);
                level_step(
                    t, apr, device, kind, verdict, t_ms, v, &limits, now_ms, next_id, out,
                );
            }
        }
        if pack.out_of_range > 0 {
            let ks = t.kinds.entry(AlertKind::SensorFault).or_default();
            ks.clean = 0;
            if ks.open.is_none() {
                let p = ks.pending.get_or_insert(Pending {
                    since_ms: pack.received_ms,
                    count: 0,
                });
                p.count += pack.out_of_range.min(1);
                let p = *p;
                if p.count >= limits.sensor_fault_packs {
                    open(
                        ks,
                        next_id,
                        NewAlert {
                            apr,
                            device,
                            kind: AlertKind::SensorFault,
                            severity: Severity::Warning,
                            opened_at_ms: pack.received_ms,
                            value: f64::from(p.count),
                            threshold: f64::from(limits.sensor_fault_packs),
                            now_ms,
                        },
                        out,
                    );
                } else {
                    out.pending
                        .push((key(apr, device, AlertKind::SensorFault), Some(p)));
                }
            }
        } else if !pack.readings.is_empty() {
            if let Some(ks) = t.kinds.get_mut(&AlertKind::SensorFault) {
                if ks.pending.take().is_some() {
                    out.pending
                        .push((key(apr, device, AlertKind::SensorFault), None));
                }
                if ks.open.is_some() {
                    ks.clean += 1;
                    if ks.clean >= limits.sensor_fault_packs {
                        clear(
                            ks,
                            || key(apr, device, AlertKind::SensorFault),
                            pack.received_ms,
                            out,
                        );
                    }
                }
                if ks.is_empty() {
                    t.kinds.remove(&AlertKind::SensorFault);
                }
            }
        }
    }

    /// The periodic tick: liveness of `devices`, escalation, re-notification
    /// and night windows that ended.
    pub fn on_tick(&mut self, now_ms: i64, devices: &[Liveness], out: &mut Outcome) {
        for d in devices {
            let limits = self.limits(&d.apr);
            let verdict = rules::offline(
                d.last_status.as_deref(),
                d.last_seen_ms,
                d.report_interval_s,
                limits.offline_intervals,
                now_ms,
            );
            let next_id = &mut self.next_id;
            match verdict {
                Some(true) => {
                    let t = track(&mut self.devices, &d.apr, &d.device);
                    let ks = t.kinds.entry(AlertKind::DeviceOffline).or_default();
                    let silent_s = d.last_seen_ms.map_or(0.0, |s| (now_ms - s) as f64 / 1000.0);
                    open(
                        ks,
                        next_id,
                        NewAlert {
                            apr: &d.apr,
                            device: &d.device,
                            kind: AlertKind::DeviceOffline,
                            severity: Severity::Warning,
                            opened_at_ms: now_ms,
                            value: silent_s.max(0.0),
                            threshold: f64::from(limits.offline_intervals)
                                * f64::from(d.report_interval_s),
                            now_ms,
                        },
                        out,
                    );
                }
                Some(false) => {
                    if let Some(t) = self
                        .devices
                        .get_mut(&d.apr)
                        .and_then(|m| m.get_mut(&d.device))
                    {
                        if let Some(ks) = t.kinds.get_mut(&AlertKind::DeviceOffline) {
                            clear(
                                ks,
                                || key(&d.apr, &d.device, AlertKind::DeviceOffline),
                                now_ms,
                                out,
                            );
                            t.kinds.remove(&AlertKind::DeviceOffline);
                        }
                    }
                }
                None => {}
            }
        }
        let (today, second) = local_day_and_second(now_ms);
        for (apr, per_apr) in &mut self.devices {
            let limits = self
                .limits
                .get(apr)
                .cloned()
                .unwrap_or_else(|| self.defaults.clone());
            for (device, t) in per_apr.iter_mut() {
                if let Some(w) = t.night.current {
                    let ended = today > w.date
                        || (today == w.date && second >= u32::from(limits.night_window.end) * 3600);
                    if ended {
                        close_night(
                            t,
                            apr,
                            device,
                            &limits,
                            now_ms,
                            now_ms,
                            &mut self.next_id,
                            out,
                        );
                    }
                }
                for ks in t.kinds.values_mut() {
                    let Some(a) = ks.open.as_mut() else { continue };
                    if a.state != AlertState::Open {
                        continue;
                    }
                    let escalate_ms = i64::from(limits.escalate_after_s) * 1000;
                    let renotify_ms = i64::from(limits.renotify_every_s) * 1000;
                    if a.severity == Severity::Warning && now_ms - a.opened_at_ms >= escalate_ms {
                        a.severity = Severity::Critical;
                        a.escalated_at_ms = Some(now_ms);
                        a.last_notified_at_ms = Some(now_ms);
                        out.transitions.push(Transition {
                            kind: TransitionKind::Escalated,
                            alert: a.clone(),
                        });
                    } else if a
                        .last_notified_at_ms
                        .is_some_and(|n| now_ms - n >= renotify_ms)
                    {
                        a.last_notified_at_ms = Some(now_ms);
                        out.transitions.push(Transition {
                            kind: TransitionKind::Renotified,
                            alert: a.clone(),
                        });
                    }
                }
            }
        }
    }

    /// What the operator's latest DPD checks say about an APR's chlorine
    /// probe (`device`), as [`crate::assessment::probe_verdict`] reads
    /// them: a drift opens one `chlorine_probe_drift` alert (warning, so
    /// it escalates and reminds like the others) whose value is the mean
    /// probe − DPD difference and threshold the tolerance; a check back
    /// within tolerance clears it.
    pub fn on_probe_check(&mut self, check: &ProbeCheck, now_ms: i64, out: &mut Outcome) {
        let kind = AlertKind::ChlorineProbeDrift;
        match check.drift {
            Some((difference_mg_l, tolerance_mg_l)) => {
                let t = track(&mut self.devices, &check.apr, &check.device);
                let ks = t.kinds.entry(kind).or_default();
                open(
                    ks,
                    &mut self.next_id,
                    NewAlert {
                        apr: &check.apr,
                        device: &check.device,
                        kind,
                        severity: Severity::Warning,
                        opened_at_ms: check.at_ms,
                        value: difference_mg_l,
                        threshold: tolerance_mg_l,
                        now_ms,
                    },
                    out,
                );
            }
            None => {
                if let Some(t) = self
                    .devices
                    .get_mut(&check.apr)
                    .and_then(|m| m.get_mut(&check.device))
                {
                    if let Some(ks) = t.kinds.get_mut(&kind) {
                        clear(ks, || key(&check.apr, &check.device, kind), now_ms, out);
                        t.kinds.remove(&kind);
                    }
                }
            }
        }
    }

    fn find_open(&mut self, id: i64) -> Option<&mut KindState> {
        self.devices
            .values_mut()
            .flat_map(|m| m.values_mut())
            .flat_map(|t| t.kinds.values_mut())
            .find(|k| k.open.as_ref().is_some_and(|a| a.id == id))
    }

    /// A person acknowledges alert `id`. Errors: not open here (the caller
    /// tells unknown from resolved), or acknowledged already (conflict).
    pub fn acknowledge(
        &mut self,
        id: i64,
        by: &str,
        comment: Option<&str>,
        at_ms: i64,
        out: &mut Outcome,
    ) -> Result<Alert> {
        let ks = self
            .find_open(id)
            .ok_or_else(|| Error::NotFound(format!("alert {id} is not open")))?;
        let a = ks.open.as_mut().expect("found by its open alert");
        if a.state == AlertState::Acknowledged {
            return Err(Error::Conflict(format!(
                "alert {id} was acknowledged already by '{}'",
                a.acknowledged_by.as_deref().unwrap_or("?")
            )));
        }
        a.state = AlertState::Acknowledged;
        a.acknowledged_by = Some(by.to_owned());
        a.acknowledged_at_ms = Some(at_ms);
        a.acknowledged_comment = comment.map(str::to_owned);
        out.transitions.push(Transition {
            kind: TransitionKind::Acknowledged,
            alert: a.clone(),
        });
        Ok(a.clone())
    }

    /// A person resolves alert `id`; if the condition persists, it must hold
    /// for the minimum duration again before a new alert raises.
    pub fn resolve(
        &mut self,
        id: i64,
        by: &str,
        comment: Option<&str>,
        at_ms: i64,
        out: &mut Outcome,
    ) -> Result<Alert> {
        let ks = self
            .find_open(id)
            .ok_or_else(|| Error::NotFound(format!("alert {id} is not open")))?;
        let mut a = ks.open.take().expect("found by its open alert");
        if ks.pending.take().is_some() {
            out.pending.push((key(&a.apr, &a.device, a.kind), None));
        }
        ks.clean = 0;
        a.state = AlertState::Resolved;
        a.resolved_by = Some(by.to_owned());
        a.resolved_at_ms = Some(at_ms);
        a.resolved_comment = comment.map(str::to_owned);
        out.transitions.push(Transition {
            kind: TransitionKind::Resolved,
            alert: a.clone(),
        });
        Ok(a)
    }
}

#[allow(clippy::too_many_arguments)]
fn level_step(
    t: &mut DeviceTrack,
    apr: &str,
    device: &str,
    kind: AlertKind,
    verdict: Verdict,
    t_ms: i64,
    v: f64,
    limits: &Limits,
    now_ms: i64,
    next_id: &mut i64,
    out: &mut Outcome,
) {
    match verdict {
        Verdict::Raise {
            severity,
            threshold,
        } => {
            let ks = t.kinds.entry(kind).or_default();
            if let Some(a) = ks.open.as_mut() {
                if severity > a.severity {
                    a.severity = severity;
                    a.threshold = threshold;
                    a.escalated_at_ms = Some(t_ms);
                    a.last_notified_at_ms = Some(now_ms);
                    out.transitions.push(Transition {
                        kind: TransitionKind::Escalated,
                        alert: a.clone(),
                    });
                }
                return;
            }
            let (since, fresh) = match ks.pending {
                Some(p) => (p.since_ms, false),
                None => (t_ms, true),
            };
            if t_ms - since >= i64::from(limits.min_duration_s) * 1000 {
                ks.pending = None;
                if !fresh {
                    out.pending.push((key(apr, device, kind), None));
                }
                open(
                    ks,
                    next_id,
                    NewAlert {
                        apr,
                        device,
                        kind,
                        severity,
                        opened_at_ms: t_ms,
                        value: v,
                        threshold,
                        now_ms,
                    },
                    out,
                );
            } else if fresh {
                let p = Pending {
                    since_ms: t_ms,
                    count: 1,
                };
                ks.pending = Some(p);
                out.pending.push((key(apr, device, kind), Some(p)));
            }
        }
        Verdict::Clear => {
            if let Some(ks) = t.kinds.get_mut(&kind) {
                clear(ks, || key(apr, device, kind), t_ms, out);
                t.kinds.remove(&kind);
            }
        }
        Verdict::Hold => {
            if let Some(ks) = t.kinds.get_mut(&kind) {
                if ks.pending.take().is_some() {
                    out.pending.push((key(apr, device, kind), None));
                }
                if ks.is_empty() {
                    t.kinds.remove(&kind);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn night_reading(
    t: &mut DeviceTrack,
    apr: &str,
    device: &str,
    limits: &Limits,
    t_ms: i64,
    v: f64,
    now_ms: i64,
    next_id: &mut i64,
    out: &mut Outcome,
) {
    let (date, second) = local_day_and_second(t_ms);
    let inside = limits.night_window.contains(second);
    if let Some(w) = t.night.current {
        let ended = date > w.date
            || (date == w.date && second >= u32::from(limits.night_window.end) * 3600);
        if ended {
            close_night(t, apr, device, limits, t_ms, now_ms, next_id, out);
        }
    }
    if !inside || t.night.last_night.is_some_and(|d| d >= date) {
        return;
    }
    match &mut t.night.current {
        Some(w) if w.date == date => {
            w.min = w.min.min(v);
            w.count += 1;
        }
        _ => {
            t.night.current = Some(NightWindow {
                date,
                min: v,
                count: 1,
            });
        }
    }
}

/// Ends the night window in progress: judge its minimum against the
/// baseline, and learn from it while the baseline is being learned.
#[allow(clippy::too_many_arguments)]
fn close_night(
    t: &mut DeviceTrack,
    apr: &str,
    device: &str,
    limits: &Limits,
    at_ms: i64,
    now_ms: i64,
    next_id: &mut i64,
    out: &mut Outcome,
) {
    let Some(w) = t.night.current.take() else {
        return;
    };
    if w.count < limits.night_flow_min_readings {
        return;
    }
    let learning = limits.night_flow_learning_nights as usize;
    let baseline = limits.night_flow_baseline_l_s.or_else(|| {
        (t.night.learned.len() >= learning)
            .then(|| rules::median(&t.night.learned))
            .flatten()
    });
    if let Some(b) = baseline {
        let threshold = b * limits.night_flow_factor;
        let ks = t.kinds.entry(AlertKind::NightFlowHigh).or_default();
        if w.min > threshold {
            open(
                ks,
                next_id,
                NewAlert {
                    apr,
                    device,
                    kind: AlertKind::NightFlowHigh,
                    severity: Severity::Warning,
                    opened_at_ms: at_ms,
                    value: w.min,
                    threshold,
                    now_ms,
                },
                out,
            );
        } else {
            clear(
                ks,
                || key(apr, device, AlertKind::NightFlowHigh),
                at_ms,
                out,
            );
            t.kinds.remove(&AlertKind::NightFlowHigh);
        }
    }
    if limits.night_flow_baseline_l_s.is_none() && t.night.learned.len() < learning {
        t.night.learned.push(w.min);
    }
    t.night.last_night = Some(w.date);
    out.night
        .push((apr.to_owned(), device.to_owned(), t.night.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_064_800_000; // 2025-11-25T10:00:00Z, 07:00 in Santiago
    const MIN: i64 = 60_000;

    fn pack(metric: Metric, t_ms: i64, v: f64) -> PackEvent {
        PackEvent {
            apr: "a1".into(),
            device: "d1".into(),
            readings: vec![(metric, t_ms, v)],
            out_of_range: 0,
            received_ms: t_ms,
        }
    }

    /// Feeds a series of (minutes after T0, value) and returns every transition.
    fn run(engine: &mut Engine, metric: Metric, series: &[(i64, f64)]) -> Vec<Transition> {
        let mut out = Outcome::default();
        for &(m, v) in series {
            engine.on_pack(&pack(metric, T0 + m * MIN, v), T0 + m * MIN, &mut out);
        }
        out.transitions
    }

    fn kinds(ts: &[Transition]) -> Vec<(TransitionKind, AlertKind)> {
        ts.iter().map(|t| (t.kind, t.alert.kind)).collect()
    }

    #[test]
    fn chlorine_low_raises_below_0_2_and_does_not_clear_until_0_3() {
        let mut e = Engine::new(Limits {
            min_duration_s: 0,
            ..Limits::default()
        });
        let ts = run(
            &mut e,
            Metric::Chlorine,
            &[
                (0, 0.5),
                (1, 0.15),
                (2, 0.25),
                (3, 0.18),
                (4, 0.29),
                (5, 0.31),
            ],
        );
        assert_eq!(
            kinds(&ts),
            [
                (TransitionKind::Raised, AlertKind::ChlorineLow),
                (TransitionKind::Cleared, AlertKind::ChlorineLow)
            ]
        );
        assert_eq!(ts[0].alert.value, 0.15);
        assert_eq!(ts[0].alert.threshold, 0.2);
        assert_eq!(ts[1].alert.resolved_at_ms, Some(T0 + 5 * MIN));
    }

    #[test]
    fn a_condition_must_hold_for_the_minimum_duration_before_it_raises() {
        let mut e = Engine::new(Limits::default()); // 10 min
                                                    // Low for 9 minutes, one good reading inside the band resets it,
                                                    // then low again for 10 minutes.
        let ts = run(
            &mut e,
            Metric::Chlorine,
            &[(0, 0.1), (9, 0.1), (10, 0.25), (11, 0.1), (20, 0.1)],
        );
        assert!(ts.is_empty(), "raised too early: {ts:?}");
        let ts = run(&mut e, Metric::Chlorine, &[(21, 0.1)]);
        assert_eq!(
            kinds(&ts),
            [(TransitionKind::Raised, AlertKind::ChlorineLow)]
        );
        assert_eq!(ts[0].alert.opened_at_ms, T0 + 21 * MIN);
    }

    #[test]
    fn one_alert_stays_open_per_apr_device_and_kind_however_many_bad_readings() {
        let mut e = Engine::new(Limits {
            min_duration_s: 0,
            ..Limits::default()
        });
        let series: Vec<(i64, f64)> = (0..50).map(|m| (m, 0.05)).collect();
        let ts = run(&mut e, Metric::Chlorine, &series);
        assert_eq!(ts.len(), 1);
        assert_eq!(e.open_alerts().count(), 1);
        // A second device raises its own.
        let mut out = Outcome::default();
        let mut p = pack(Metric::Chlorine, T0, 0.05);
        p.device = "d2".into();
        e.on_pack(&p, T0, &mut out);
        assert_eq!(out.transitions.len(), 1);
        assert_eq!(e.open_alerts().count(), 2);
        // The same reading delivered again changes nothing.
        let ts = run(&mut e, Metric::Chlorine, &[(10, 0.5)]);
        assert!(ts.is_empty(), "{ts:?}");
    }

    #[test]
    fn an_unacknowledged_warning_escalates_to_critical_and_an_acknowledged_one_does_not() {
        let limits = Limits {
            min_duration_s: 0,
            escalate_after_s: 1800,
            ..Limits::default()
        };
        let mut e = Engine::new(limits.clone());
        run(&mut e, Metric::Chlorine, &[(0, 0.1)]);
        let mut out = Outcome::default();
        e.on_tick(T0 + 29 * MIN, &[], &mut out);
        assert!(out.transitions.is_empty(), "{:?}", out.transitions);
        e.on_tick(T0 + 30 * MIN, &[], &mut out);
        assert_eq!(out.transitions.len(), 1);
        let t = &out.transitions[0];
        assert_eq!(t.kind, TransitionKind::Escalated);
        assert_eq!(t.alert.severity, Severity::Critical);
        assert_eq!(t.alert.escalated_at_ms, Some(T0 + 30 * MIN));
        // Escalates once.
        let mut out = Outcome::default();
        e.on_tick(T0 + 31 * MIN, &[], &mut out);
        assert!(out.transitions.is_empty());

        let mut e = Engine::new(limits);
        let raised = run(&mut e, Metric::Chlorine, &[(0, 0.1)]);
        let mut out = Outcome::default();
        e.acknowledge(raised[0].alert.id, "olga", Some("voy"), T0 + MIN, &mut out)
            .unwrap();
        e.on_tick(T0 + 120 * MIN, &[], &mut out);
        assert_eq!(
            kinds(&out.transitions),
            [(TransitionKind::Acknowledged, AlertKind::ChlorineLow)]
        );
    }

    #[test]
    fn an_unacknowledged_alert_is_renotified_every_interval() {
        let mut e = Engine::new(Limits {
            min_duration_s: 0,
            escalate_after_s: 100_000,
            renotify_every_s: 600,
            ..Limits::default()
        });
        run(&mut e, Metric::TankLevel, &[(0, 10.0)]);
        let mut out = Outcome::default();
        for m in [5, 10, 15, 20] {
            e.on_tick(T0 + m * MIN, &[], &mut out);
        }
        assert_eq!(
            out.transitions.iter().map(|t| t.kind).collect::<Vec<_>>(),
            [TransitionKind::Renotified, TransitionKind::Renotified]
        );
    }

    #[test]
    fn a_worse_reading_escalates_an_open_turbidity_warning_at_once() {
        let mut e = Engine::new(Limits {
            min_duration_s: 0,
            ..Limits::default()
        });
        let ts = run(&mut e, Metric::Turbidity, &[(0, 1.5), (1, 4.5), (2, 5.0)]);
        assert_eq!(
            ts.iter()
                .map(|t| (t.kind, t.alert.severity))
                .collect::<Vec<_>>(),
            [
                (TransitionKind::Raised, Severity::Warning),
                (TransitionKind::Escalated, Severity::Critical)
            ]
        );
        assert_eq!(ts[1].alert.threshold, 4.0);
    }

    #[test]
    fn low_pressure_outside_peak_hours_raises_nothing() {
        let mut e = Engine::new(Limits {
            min_duration_s: 0,
            ..Limits::default()
        });
        // T0 is 07:00 local: peak. 4 hours later (11:00) is not.
        assert_eq!(run(&mut e, Metric::Pressure, &[(0, 12.0)]).len(), 1);
        let mut e = Engine::new(Limits {
            min_duration_s: 0,
            ..Limits::default()
        });
        assert!(run(&mut e, Metric::Pressure, &[(240, 12.0)]).is_empty());
    }

    #[test]
    fn a_device_silent_for_three_intervals_goes_offline_and_comes_back() {
        let mut e = Engine::new(Limits::default());
        let live = |seen: i64, status: Option<&str>| Liveness {
            apr: "a1".into(),
            device: "d1".into(),
            report_interval_s: 60,
            last_seen_ms: Some(seen),
            last_status: status.map(Into::into),
        };
        let mut out = Outcome::default();
        e.on_tick(T0 + 3 * MIN, &[live(T0, None)], &mut out);
        assert!(out.transitions.is_empty());
        e.on_tick(T0 + 3 * MIN + 1, &[live(T0, None)], &mut out);
        e.on_tick(T0 + 4 * MIN, &[live(T0, None)], &mut out);
        assert_eq!(
            kinds(&out.transitions),
            [(TransitionKind::Raised, AlertKind::DeviceOffline)]
        );
        e.on_tick(
            T0 + 5 * MIN,
            &[live(T0 + 5 * MIN, Some("online"))],
            &mut out,
        );
        assert_eq!(out.transitions[1].kind, TransitionKind::Cleared);
        e.on_tick(
            T0 + 6 * MIN,
            &[live(T0 + 6 * MIN, Some("offline"))],
            &mut out,
        );
        assert_eq!(out.transitions[2].kind, TransitionKind::Raised);
    }

    #[test]
    fn repeated_out_of_range_packs_raise_a_sensor_fault_and_clean_packs_clear_it() {
        let mut e = Engine::new(Limits::default());
        let mut out = Outcome::default();
        let mut bad = pack(Metric::Chlorine, T0, 0.5);
        bad.out_of_range = 1;
        for i in 0..3 {
            bad.readings[0].1 = T0 + i;
            e.on_pack(&bad, T0, &mut out);
        }
        assert_eq!(
            kinds(&out.transitions),
            [(TransitionKind::Raised, AlertKind::SensorFault)]
        );
        for i in 0..3 {
            e.on_pack(&pack(Metric::Chlorine, T0 + 10 + i, 0.5), T0, &mut out);
        }
        assert_eq!(out.transitions[1].kind, TransitionKind::Cleared);
    }

    #[test]
    fn night_flow_above_the_learned_baseline_raises_a_leak_alert() {
        let limits = Limits {
            night_flow_learning_nights: 3,
            night_flow_min_readings: 4,
            night_flow_factor: 1.5,
            ..Limits::default()
        };
        let mut e = Engine::new(limits);
        // 02:00 local on 2025-11-25 is 05:00Z.
        let night0 = T0 - 5 * 60 * MIN;
        let mut out = Outcome::default();
        let nights = [1.0, 1.2, 1.1, 1.15, 2.0];
        for (n, mnf) in nights.iter().enumerate() {
            let base = night0 + n as i64 * 24 * 60 * MIN;
            for k in 0..8 {
                let p = pack(
                    Metric::Flow,
                    base + k * 15 * MIN,
                    mnf + 0.5 * (k % 2) as f64,
                );
                e.on_pack(&p, base, &mut out);
            }
            e.on_pack(
                &pack(Metric::Flow, base + 3 * 60 * MIN, 5.0),
                base,
                &mut out,
            );
        }
        // Baseline = median(1.0, 1.2, 1.1) = 1.1; threshold 1.65; night 4
        // (1.15) is fine, night 5 (2.0) is a leak.
        assert_eq!(
            kinds(&out.transitions),
            [(TransitionKind::Raised, AlertKind::NightFlowHigh)]
        );
        let a = &out.transitions[0].alert;
        assert_eq!(a.value, 2.0);
        assert!((a.threshold - 1.65).abs() < 1e-9, "{}", a.threshold);
        assert_eq!(out.night.last().unwrap().2.learned, vec![1.0, 1.2, 1.1]);
    }

    #[test]
    fn an_engine_restored_from_its_outcome_keeps_the_pending_condition() {
        let mut e = Engine::new(Limits::default());
        let mut out = Outcome::default();
        e.on_pack(&pack(Metric::Chlorine, T0, 0.1), T0, &mut out);
        let pending: Vec<_> = out
            .pending
            .iter()
            .filter_map(|(k, p)| p.map(|p| (k.clone(), p)))
            .collect();
        let mut e = Engine::restore(
            Limits::default(),
            Snapshot {
                pending,
                next_id: 7,
                ..Snapshot::default()
            },
        );
        let mut out = Outcome::default();
        e.on_pack(&pack(Metric::Chlorine, T0 + 10 * MIN, 0.1), T0, &mut out);
        assert_eq!(out.transitions.len(), 1);
        assert_eq!(out.transitions[0].alert.id, 7);
    }
}
