//! Running a site through the twin without MQTT: the model, the simulated
//! hardware and the firmware core ([`Board`] → [`Uplink`]) for a stretch of
//! simulated time, with a simulated gateway that validates every pack with
//! the wire crate, keeps the accepted readings and acknowledges the pack.
//! What comes out ([`Observation`]) is what the server would have stored,
//! plus the model's truth for comparison. The scenario tests and the
//! benchmark use it.

use std::collections::BTreeMap;

use apr_wire::validate::{validate_pack, PackContext};
use apr_wire::Metric;

use crate::board::{Board, BoardOptions};
use crate::clock::{days_from_civil, DAY_S};
use crate::model::{DeviceRole, SiteModel, SiteProfile, Truth};
use crate::scenario::Scenario;
use crate::uplink::Uplink;
use crate::TwinError;

/// How long and how to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunOptions {
    /// Simulated days.
    pub days: f64,
    /// Seed of the model.
    pub seed: u64,
    /// Start, seconds since the epoch.
    pub start: f64,
    /// The devices' sampling and reporting.
    pub board: BoardOptions,
}

impl Default for RunOptions {
    /// A week from Monday 5 January 2026, 00:00 in Santiago (summer time,
    /// UTC−3), seed 1, the default board.
    fn default() -> Self {
        RunOptions {
            days: 7.0,
            seed: 1,
            start: days_from_civil(2026, 1, 5) as f64 * DAY_S + 3.0 * 3600.0,
            board: BoardOptions::default(),
        }
    }
}

/// A reading as the gateway accepted it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Reading time, s since the epoch.
    pub t: f64,
    /// Value (pump: 1 running, 0 stopped).
    pub v: f64,
}

/// A pack's arrival at the gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    /// Which device sent it.
    pub role: DeviceRole,
    /// The pack's `bt`.
    pub bt: f64,
    /// When it arrived, s since the epoch.
    pub at: f64,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The scenario's name.
    pub scenario: String,
    /// Accepted readings per device and metric, in arrival order.
    pub series: BTreeMap<(DeviceRole, Metric), Vec<Point>>,
    /// The model's truth at every report interval.
    pub truth: Vec<Truth>,
    /// Every pack's arrival.
    pub deliveries: Vec<Delivery>,
    /// Refusals by the gateway (reasons); a correct twin has none.
    pub refusals: Vec<String>,
    /// Packs still in an outbox at the end.
    pub pending: u32,
    /// Packs dropped from a full outbox.
    pub dropped: u32,
    /// The site's storage as the scenario set it, m³.
    pub storage_m3: f64,
    /// The site's production capacity as the scenario set it, l/s.
    pub capacity_l_s: f64,
    /// Start of the run.
    pub start: f64,
}

impl Observation {
    /// The readings of `metric` from the device that reports it
    /// ([`DeviceRole::of_metric`]), sorted by time.
    pub fn metric(&self, metric: Metric) -> Vec<Point> {
        let mut v = self
            .series
            .get(&(DeviceRole::of_metric(metric), metric))
            .cloned()
            .unwrap_or_default();
        v.sort_by(|a, b| a.t.total_cmp(&b.t));
        v
    }
}

/// Runs `profile` in `scenario` as `opts` says.
pub fn observe(
    profile: &SiteProfile,
    scenario: &Scenario,
    opts: &RunOptions,
) -> Result<Observation, TwinError> {
    let mut model = SiteModel::with_scenario(profile.clone(), scenario, opts.seed, opts.start);
    let mut devices = Vec::new();
    for role in DeviceRole::ALL {
        devices.push((
            role,
            Board::new(role, opts.board, opts.start)?,
            Uplink::new(&profile.apr, role.device_id())?,
            true,
        ));
    }
    let mut obs = Observation {
        scenario: scenario.name.clone(),
        series: BTreeMap::new(),
        truth: Vec::new(),
        deliveries: Vec::new(),
        refusals: Vec::new(),
        pending: 0,
        dropped: 0,
        storage_m3: model.hydraulics().storage_m3(),
        capacity_l_s: model.hydraulics().capacity_l_s(),
        start: opts.start,
    };
    let step = f64::from(opts.board.sample_period_s.max(1));
    let truth_every = f64::from(opts.board.report_interval_s.max(1));
    let end = opts.start + opts.days * DAY_S;
    let mut t = opts.start;
    let mut next_truth = opts.start;
    while t <= end {
        model.advance_to(t);
        if t >= next_truth {
            obs.truth.push(model.truth());
            next_truth += truth_every;
        }
        let signals = model.signals();
        let link_up = model.link_up();
        for (role, board, uplink, running) in &mut devices {
            if !model.device_running(*role) {
                *running = false;
                continue;
            }
            if !*running {
                board.restart(board.options(), t);
                *running = true;
            }
            if let Some(samples) = board.tick(t, &signals) {
                uplink.queue(samples)?;
            }
            if !link_up {
                uplink.hold();
                continue;
            }
            let (role, apr) = (*role, profile.apr.as_str());
            let series = &mut obs.series;
            let deliveries = &mut obs.deliveries;
            let refusals = &mut obs.refusals;
            uplink.deliver(|bt, payload| {
                let ctx = PackContext {
                    apr,
                    device: role.device_id(),
                    received_ms: (t * 1000.0) as i64,
                    max_future_ms: 60_000,
                };
                let out = validate_pack(payload, &ctx);
                for r in out.readings {
                    series.entry((role, r.metric)).or_default().push(Point {
                        t: r.t_ms as f64 / 1000.0,
                        v: r.value,
                    });
                }
                refusals.extend(out.refusals.into_iter().map(|r| r.detail));
                deliveries.push(Delivery { role, bt, at: t });
                // The gateway names the pack by its `bt` as it decoded it: compare
                // to the millisecond, as the device's outbox does.
                out.base_time
                    .is_some_and(|b| (b * 1000.0).round() == (bt * 1000.0).round())
            })?;
        }
        t += step;
    }
    for (_, _, uplink, _) in &devices {
        obs.pending += uplink.pending();
        obs.dropped += uplink.dropped();
    }
    Ok(obs)
}
