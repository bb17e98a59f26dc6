//! A fleet of simulated sites: each site's devices first backfill the history
//! window (packs of several report times, as a device with a backlog sends
//! them), wait until the gateway has acknowledged all of it, then report live.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apr_firmware::Sample;
use tokio::sync::watch;
use tracing::{info, info_span, warn, Instrument};

use crate::device::{DeviceCounters, DeviceOptions, SimDevice};
use crate::model::{DeviceRole, SiteModel, SiteProfile};

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
    /// Live report interval.
    pub live_interval: Duration,
    /// Seed for the site models.
    pub seed: u64,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            host: "127.0.0.1".into(),
            port: 1883,
            history: Duration::from_secs(30 * 86_400),
            history_step_s: 900.0,
            history_reports_per_pack: 4,
            live_interval: Duration::from_secs(60),
            seed: 2024,
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
    let mut model = SiteModel::new(site.profile.clone(), seed, start);
    let mut devices = Vec::new();
    for d in &site.devices {
        let o = DeviceOptions::new(
            &site.profile.apr,
            &d.device,
            &opts.host,
            opts.port,
            &d.username,
            &d.password,
        );
        match SimDevice::connect(o, progress.counters.clone()) {
            Ok(dev) => devices.push((d.role, dev)),
            Err(e) => {
                warn!(error = %e, "device not started");
            }
        }
    }
    // History backfill.
    let step = opts.history_step_s.max(1.0);
    let per_pack = opts.history_reports_per_pack.max(1);
    let mut buffers: Vec<Vec<Sample>> = devices.iter().map(|_| Vec::new()).collect();
    let mut t = start + step;
    let mut reports = 0usize;
    while t <= now {
        model.advance_to(t);
        for (i, (role, _)) in devices.iter().enumerate() {
            model.samples(*role, &mut buffers[i]);
        }
        reports += 1;
        if reports.is_multiple_of(per_pack) {
            if flush(&mut devices, &mut buffers).await.is_err() {
                return;
            }
            if *shutdown.borrow() {
                return;
            }
        }
        t += step;
    }
    if flush(&mut devices, &mut buffers).await.is_err() {
        return;
    }
    for (_, d) in &devices {
        while d.drain(Duration::from_secs(5)).await > 0 {
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
    let mut tick = tokio::time::interval(opts.live_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                model.advance_to(now_s());
                for (i, (role, _)) in devices.iter().enumerate() {
                    model.samples(*role, &mut buffers[i]);
                }
                if flush(&mut devices, &mut buffers).await.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    for (_, d) in &devices {
        d.drain(Duration::from_secs(2)).await;
        d.disconnect().await;
    }
}

async fn flush(
    devices: &mut [(DeviceRole, SimDevice)],
    buffers: &mut [Vec<Sample>],
) -> Result<(), crate::TwinError> {
    for ((_, dev), buf) in devices.iter_mut().zip(buffers.iter_mut()) {
        if !buf.is_empty() {
            dev.publish(buf).await?;
            buf.clear();
        }
    }
    Ok(())
}
