//! A fleet of simulated sites: each site's devices first backfill the history
//! window (packs of several report times, as a device with a backlog sends
//! them), wait until the gateway has acknowledged all of it, then report live.
//!
//! Every site runs its scenario's model ([`SiteSpec::scenario`], healthy by
//! default) and its devices read it through the firmware core on simulated
//! hardware ([`Board`]). The history is fast-forwarded: readings every
//! [`FleetOptions::history_sample_s`] (5 min by default, so a 15-minute report
//! is the median of three) with the meter on a hardware counter; live, the
//! devices read every minute (or every live interval, if shorter) with every
//! meter pulse simulated through the core's debouncer. A link outage of the
//! scenario holds the device's reports until the link is back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apr_firmware::Sample;
use tokio::sync::watch;
use tracing::{info, info_span, warn, Instrument};

use crate::board::{Board, BoardOptions, MeterWiring};
use crate::device::{DeviceCounters, DeviceOptions, SimDevice};
use crate::model::{DeviceRole, SiteModel, SiteProfile};
use crate::scenario::Scenario;

/// A device's MQTT login.
#[derive(Debug, Clone)]
pub struct DeviceLogin {
    /// Device role (decides the instruments and the device id).
    pub role: DeviceRole,
    /// Device id.
    pub device: String,
    /// MQTT username.
    pub username: String,
    /// MQTT password.
    pub password: String,
}

/// A site to simulate.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    /// The site's registry data.
    pub profile: SiteProfile,
    /// Its devices.
    pub devices: Vec<DeviceLogin>,
    /// The condition it is in ([`Scenario`]; `None` is healthy). Event days
    /// count from the start of the history window.
    pub scenario: Option<Scenario>,
}

/// How the fleet runs.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// History to backfill before going live.
    pub history: Duration,
    /// Report interval during the history backfill, seconds (≤ 15 min so
    /// night-flow analysis has enough points).
    pub history_step_s: f64,
    /// Report times carried in one history pack.
    pub history_reports_per_pack: usize,
    /// Seconds between instrument readings during the history backfill.
    pub history_sample_s: u32,
    /// Live report interval.
    pub live_interval: Duration,
    /// Seed for the site models.
    pub seed: u64,
    /// MQTT over TLS for every device (see [`DeviceOptions::tls`]).
    pub tls: Option<rumqttc::TlsConfiguration>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            host: "127.0.0.1".into(),
            port: 1883,
            history: Duration::from_secs(30 * 86_400),
            history_step_s: 900.0,
            history_reports_per_pack: 4,
            history_sample_s: 300,
            live_interval: Duration::from_secs(60),
            seed: 2024,
            tls: None,
        }
    }
}

/// Progress of a running fleet.
#[derive(Debug, Default)]
pub struct FleetProgress {
    /// Device counters summed over the fleet.
    pub counters: Arc<DeviceCounters>,
    /// Sites whose history is fully acknowledged.
    pub sites_history_done: AtomicUsize,
    /// Sites in the fleet.
    pub sites: AtomicUsize,
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs every site until `shutdown` turns true. Returns when all sites stopped.
pub async fn run_fleet(
    sites: Vec<SiteSpec>,
    opts: FleetOptions,
    progress: Arc<FleetProgress>,
    shutdown: watch::Receiver<bool>,
) {
    progress.sites.store(sites.len(), Ordering::Relaxed);
    let mut tasks = Vec::new();
    for (i, site) in sites.into_iter().enumerate() {
        let opts = opts.clone();
        let progress = progress.clone();
        let shutdown = shutdown.clone();
        let span = info_span!("site", apr = %site.profile.apr);
        tasks.push(tokio::spawn(
            run_site(
                site,
                opts.seed.wrapping_add(i as u64),
                opts,
                progress,
                shutdown,
            )
            .instrument(span),
        ));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn run_site(
    site: SiteSpec,
    seed: u64,
    opts: FleetOptions,
    progress: Arc<FleetProgress>,
    mut shutdown: watch::Receiver<bool>,
) {
    let now = now_s();
    let start = now - opts.history.as_secs_f64();
    let scenario = site.scenario.clone().unwrap_or_default();
    let mut model = SiteModel::with_scenario(site.profile.clone(), &scenario, seed, start);
    let step = opts.history_step_s.max(1.0);
    let history_board = BoardOptions {
        sample_period_s: opts.history_sample_s.clamp(1, 3600),
        report_interval_s: (step as u32).max(1),
        meter: MeterWiring::HardwareCounter,
        k_factor_l_per_pulse: scenario.site.k_factor_l_per_pulse,
    };
    let live_s = u32::try_from(opts.live_interval.as_secs().max(1)).unwrap_or(60);
    let live_board = BoardOptions {
        sample_period_s: live_s.min(60),
        report_interval_s: live_s,
        meter: MeterWiring::ReedSwitchPolled,
        ..history_board
    };
    let mut devices = Vec::new();
    for d in &site.devices {
        let mut o = DeviceOptions::new(
            &site.profile.apr,
            &d.device,
            &opts.host,
            opts.port,
            &d.username,
            &d.password,
        );
        o.tls = opts.tls.clone();
        let board = match Board::new(d.role, history_board, start) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "device not started");
                continue;
            }
        };
        match SimDevice::connect(o, progress.counters.clone()) {
            Ok(dev) => devices.push(Unit {
                board,
                device: dev,
                buffer: Vec::new(),
                running: true,
            }),
            Err(e) => {
                warn!(error = %e, "device not started");
            }
        }
    }
    // History backfill.
    let per_pack = opts.history_reports_per_pack.max(1);
    let sample = f64::from(history_board.sample_period_s);
    let mut t = start + sample;
    let mut reports = 0usize;
    while t <= now {
        model.advance_to(t);
        if tick_all(&mut model, &mut devices, t) {
            reports += 1;
            if reports.is_multiple_of(per_pack) && model.link_up() {
                if flush(&mut devices).await.is_err() {
                    return;
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        }
        t += sample;
    }
    if flush(&mut devices).await.is_err() {
        return;
    }
    for u in &devices {
        while u.device.drain(Duration::from_secs(5)).await > 0 {
            if *shutdown.borrow() {
                return;
            }
        }
    }
    let done = progress.sites_history_done.fetch_add(1, Ordering::Relaxed) + 1;
    if done == progress.sites.load(Ordering::Relaxed) {
        info!("history of every site acknowledged; fleet is live");
    }
    // Live reporting.
    for u in &mut devices {
        u.board.restart(live_board, now_s());
    }
    let mut tick = tokio::time::interval(
        Duration::from_secs(u64::from(live_board.sample_period_s))
            .min(opts.live_interval)
            .max(Duration::from_millis(10)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let t = now_s();
                model.advance_to(t);
                tick_all(&mut model, &mut devices, t);
                if model.link_up() && flush(&mut devices).await.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    for u in &devices {
        u.device.drain(Duration::from_secs(2)).await;
        u.device.disconnect().await;
    }
}

/// One device of a site: its board, its MQTT side and the reports waiting.
struct Unit {
    board: Board,
    device: SimDevice,
    buffer: Vec<Sample>,
    running: bool,
}

/// Wakes every running device at `t`; returns whether any reported.
fn tick_all(model: &mut SiteModel, devices: &mut [Unit], t: f64) -> bool {
    let signals = model.signals();
    let mut reported = false;
    for u in devices {
        let role = u.board.role();
        if !model.device_running(role) {
            u.running = false;
            continue;
        }
        if !u.running {
            u.board.restart(u.board.options(), t);
            u.running = true;
        }
        if let Some(samples) = u.board.tick(t, &signals) {
            u.buffer.extend_from_slice(samples);
            reported = true;
        }
    }
    reported
}

async fn flush(devices: &mut [Unit]) -> Result<(), crate::TwinError> {
    for u in devices {
        if !u.buffer.is_empty() {
            u.device.publish(&u.buffer).await?;
            u.buffer.clear();
        }
    }
    Ok(())
}
