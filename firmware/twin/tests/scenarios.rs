//! Acceptance 5 (issue 3): each scenario of the library, run through the
//! twin for a simulated week (model → simulated hardware → firmware core →
//! packs → the wire crate's validation), leaves its physical signature in
//! the accepted series. Every comparison is against the healthy run with the
//! same seed, so each test fails if the condition does not show.

use std::sync::OnceLock;

use apr_twin::clock::local_time;
use apr_twin::model::{DeviceRole, SiteProfile};
use apr_twin::observe::Point;
use apr_twin::{observe, Observation, RunOptions, Scenario};
use apr_wire::Metric;

/// A demo-fleet APR (Los Cerrillos, Yumbel): 438 people, 1.4 l/s, 20 m³.
fn profile() -> SiteProfile {
    SiteProfile {
        apr: "los-cerrillos".into(),
        beneficiaries: 438,
        capacity_l_s: 1.4,
        storage_m3: 20.0,
    }
}

/// The model's seed: 1, or `APR_TWIN_SEED` to try the signatures on
/// another random week.
fn seed() -> u64 {
    std::env::var("APR_TWIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn run(name: &str) -> Observation {
    let scenario = Scenario::builtin(name).expect("built-in scenario");
    let opts = RunOptions {
        seed: seed(),
        ..RunOptions::default()
    };
    let obs = observe(&profile(), &scenario, &opts).expect("run");
    assert!(
        obs.refusals.is_empty(),
        "{name}: refusals {:?}",
        obs.refusals
    );
    assert_eq!(obs.dropped, 0, "{name}: packs dropped");
    assert_eq!(obs.pending, 0, "{name}: packs left unacknowledged");
    obs
}

fn healthy() -> &'static Observation {
    static H: OnceLock<Observation> = OnceLock::new();
    H.get_or_init(|| run("healthy"))
}

fn days(obs: &Observation, p: &Point) -> f64 {
    (p.t - obs.start) / 86_400.0
}

fn hour(p: &Point) -> f64 {
    local_time(p.t).hour
}

fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = v
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    assert!(n > 0, "mean of nothing");
    s / n as f64
}

fn variance(v: &[f64]) -> f64 {
    let m = mean(v.iter().copied());
    mean(v.iter().map(|x| (x - m) * (x - m)))
}

/// Outflow to the network over 02:00–04:00 local of each night, l/s:
/// production (the totaliser) minus the change in storage (tank level).
fn night_outflows(obs: &Observation) -> Vec<f64> {
    let volume = obs.metric(Metric::Volume);
    let level = obs.metric(Metric::TankLevel);
    let at = |series: &[Point], t: f64| -> Option<f64> {
        series.iter().find(|p| (p.t - t).abs() < 1.0).map(|p| p.v)
    };
    let mut out = Vec::new();
    for night in 1..7 {
        let t2 = obs.start + f64::from(night) * 86_400.0 + 2.0 * 3600.0;
        let t4 = t2 + 7200.0;
        let (Some(v2), Some(v4), Some(l2), Some(l4)) = (
            at(&volume, t2),
            at(&volume, t4),
            at(&level, t2),
            at(&level, t4),
        ) else {
            panic!("no readings at 02:00 and 04:00 of night {night}");
        };
        let served_m3 = (v4 - v2) - (l4 - l2) / 100.0 * obs.storage_m3;
        out.push(served_m3 * 1000.0 / 7200.0);
    }
    out
}

/// Share of pump reports that say running on local weekdays in `days`.
fn pump_duty(obs: &Observation, weekdays: &[u8]) -> f64 {
    let pump = obs.metric(Metric::Pump);
    mean(
        pump.iter()
            .filter(|p| weekdays.contains(&local_time(p.t).weekday))
            .map(|p| p.v),
    )
}

#[test]
fn a_healthy_site_stays_inside_every_standard_all_week() {
    let h = healthy();
    for p in h.metric(Metric::Chlorine) {
        assert!((0.2..=2.0).contains(&p.v), "chlorine {} at {}", p.v, p.t);
    }
    assert!(h.metric(Metric::Turbidity).iter().all(|p| p.v < 1.0));
    assert!(h
        .metric(Metric::Ph)
        .iter()
        .all(|p| (6.5..=8.5).contains(&p.v)));
    let pressure = h.metric(Metric::Pressure);
    assert!(
        pressure.iter().all(|p| p.v >= 15.0),
        "pressure below 15 m.c.a."
    );
    assert!(h.metric(Metric::TankLevel).iter().all(|p| p.v > 10.0));
    let duty = pump_duty(h, &[0, 1, 2, 3, 4, 5, 6]);
    assert!((0.3..0.8).contains(&duty), "pump duty {duty}");
    // Both devices report every 15 minutes and each pack arrives at once.
    assert!(h.metric(Metric::Chlorine).len() >= 7 * 96);
    assert!(pressure.len() >= 7 * 96);
    assert!(h.deliveries.iter().all(|d| d.at - d.bt < 61.0));
}

#[test]
fn a_leak_raises_the_02_to_04_minimum_night_flow_by_the_leaks_flow() {
    let leak = run("leak");
    let leak_l_s = Scenario::builtin("leak").unwrap().demand.leak_l_s;
    let healthy_mnf = night_outflows(healthy())
        .into_iter()
        .fold(f64::MAX, f64::min);
    let leak_mnf = night_outflows(&leak).into_iter().fold(f64::MAX, f64::min);
    let rise = leak_mnf - healthy_mnf;
    assert!(
        (rise - leak_l_s).abs() < 0.3 * leak_l_s,
        "MNF healthy {healthy_mnf:.3} l/s, leak {leak_mnf:.3} l/s: rise {rise:.3} vs {leak_l_s}"
    );
    // Production makes up for it: the mean flow rises by the leak too.
    let f = |o: &Observation| mean(o.metric(Metric::Flow).iter().map(|p| p.v));
    let more = f(&leak) - f(healthy());
    assert!(
        (more - leak_l_s).abs() < 0.3 * leak_l_s,
        "mean flow +{more:.3}"
    );
}

#[test]
fn production_below_peak_day_demand_runs_the_pump_all_day_and_drains_the_tank_on_peak_days() {
    let o = run("production-below-peak-demand");
    // Saturday starts with the tank the weekdays left; by Sunday the pump
    // cannot stop any more.
    let (saturday, sunday) = (pump_duty(&o, &[5]), pump_duty(&o, &[6]));
    let early_week = pump_duty(&o, &[0, 1, 2, 3]);
    assert!(
        sunday > 0.97,
        "Sunday pump duty {sunday} (about 24 h a day)"
    );
    assert!(saturday > 0.8, "Saturday pump duty {saturday}");
    assert!(early_week < 0.9, "early-week pump duty {early_week}");
    let level = o.metric(Metric::TankLevel);
    let at_day = |d: f64| {
        level
            .iter()
            .min_by(|a, b| (days(&o, a) - d).abs().total_cmp(&(days(&o, b) - d).abs()))
            .unwrap()
            .v
    };
    // Saturday 00:00 is day 5, Sunday 20:00 is day 6.83.
    let drained = at_day(5.0) - at_day(6.83);
    assert!(
        drained > 30.0,
        "tank fell only {drained} points over the weekend"
    );
    let dry = level
        .iter()
        .filter(|p| days(&o, p) >= 5.0 && p.v < 2.0)
        .count();
    assert!(dry > 0, "the tank never ran dry on the peak days");
}

#[test]
fn storage_too_small_empties_the_tank_at_peak_hours_although_the_pump_keeps_up_over_the_day() {
    let o = run("storage-too-small");
    let level = o.metric(Metric::TankLevel);
    let mut empty_days = std::collections::BTreeSet::new();
    for p in &level {
        let h = hour(p);
        let peak = (7.0..11.0).contains(&h) || (18.0..23.0).contains(&h);
        if peak && p.v < 2.0 {
            empty_days.insert(days(&o, p) as u32);
        }
    }
    assert!(
        empty_days.len() >= 5,
        "tank empty at peak on days {empty_days:?}"
    );
    let duty = pump_duty(&o, &[0, 1, 2, 3, 4, 5, 6]);
    assert!(
        duty < 0.75,
        "pump duty {duty}: production is not the problem"
    );
    assert!(healthy()
        .metric(Metric::TankLevel)
        .iter()
        .all(|p| p.v > 10.0));
}

#[test]
fn an_empty_chlorinator_takes_free_chlorine_to_zero() {
    let o = run("chlorinator-empty");
    let cl = o.metric(Metric::Chlorine);
    for p in cl.iter().filter(|p| days(&o, p) < 2.0) {
        assert!(
            (0.2..=2.0).contains(&p.v),
            "before: {} at day {}",
            p.v,
            days(&o, p)
        );
    }
    let after: Vec<f64> = cl
        .iter()
        .filter(|p| days(&o, p) > 3.5)
        .map(|p| p.v)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|v| *v < 0.05),
        "max after {:?}",
        after.iter().fold(0.0f64, |a, b| a.max(*b))
    );
}

#[test]
fn erratic_manual_dosing_has_many_times_the_healthy_chlorine_variance() {
    let o = run("chlorine-dosing-erratic");
    let v = |o: &Observation| {
        variance(
            &o.metric(Metric::Chlorine)
                .iter()
                .map(|p| p.v)
                .collect::<Vec<_>>(),
        )
    };
    let (erratic, calm) = (v(&o), v(healthy()));
    assert!(
        erratic > 20.0 * calm,
        "variance {erratic} vs healthy {calm}"
    );
    let cl = o.metric(Metric::Chlorine);
    let out = cl.iter().filter(|p| !(0.2..=2.0).contains(&p.v)).count();
    assert!(
        out * 4 > cl.len(),
        "only {out} of {} outside 0.2-2.0",
        cl.len()
    );
    assert!(cl.iter().any(|p| p.v > 2.0) && cl.iter().any(|p| p.v < 0.2));
}

#[test]
fn rain_raises_turbidity_above_4_ntu_for_hours_then_it_clears() {
    let s = Scenario::builtin("turbidity-event").unwrap();
    let rain_day = s.rain[0].day;
    let o = run("turbidity-event");
    let turb = o.metric(Metric::Turbidity);
    assert!(turb
        .iter()
        .filter(|p| days(&o, p) < rain_day)
        .all(|p| p.v < 1.0));
    let high = turb.iter().filter(|p| p.v > 4.0).count();
    assert!(high >= 12, "only {high} quarter-hours above 4 NTU");
    assert!(turb
        .iter()
        .filter(|p| p.v > 4.0)
        .all(|p| days(&o, p) > rain_day));
    assert!(turb.iter().filter(|p| days(&o, p) > 6.5).all(|p| p.v < 1.0));
    // The rain dilutes the water: conductivity dips.
    let cond = o.metric(Metric::Conductivity);
    let before = mean(cond.iter().filter(|p| days(&o, p) < rain_day).map(|p| p.v));
    let low = cond.iter().map(|p| p.v).fold(f64::MAX, f64::min);
    assert!(low < 0.85 * before, "conductivity {low} vs {before}");
}

#[test]
fn a_drifting_chlorine_probe_diverges_from_the_true_chlorine() {
    let o = run("chlorine-probe-drift");
    let cl = o.metric(Metric::Chlorine);
    let ratio = |from: f64, to: f64| {
        let measured = mean(
            cl.iter()
                .filter(|p| (from..to).contains(&days(&o, p)))
                .map(|p| p.v),
        );
        let truth = mean(
            o.truth
                .iter()
                .filter(|t| (from..to).contains(&((t.time - o.start) / 86_400.0)))
                .map(|t| t.chlorine_mg_l),
        );
        (measured / truth, truth)
    };
    let (first, _) = ratio(0.0, 1.0);
    let (last, truth_last) = ratio(6.0, 7.0);
    assert!(
        (0.9..1.1).contains(&first),
        "first day measured/true {first}"
    );
    assert!(last < 0.65, "last day measured/true {last}");
    assert!(
        (0.2..=2.0).contains(&truth_last),
        "the true residual is healthy: {truth_last}"
    );
}

#[test]
fn pressure_falls_below_15_mca_at_the_morning_peak_hour_but_not_at_night() {
    let o = run("low-pressure-peak-hour");
    let p = o.metric(Metric::Pressure);
    let mut low_mornings = std::collections::BTreeSet::new();
    for q in &p {
        if (7.0..9.5).contains(&hour(q)) && q.v < 15.0 {
            low_mornings.insert(days(&o, q) as u32);
        }
    }
    assert!(
        low_mornings.len() >= 5,
        "low at peak on days {low_mornings:?}"
    );
    assert!(p
        .iter()
        .filter(|q| (2.0..4.0).contains(&hour(q)))
        .all(|q| q.v >= 15.0));
    let healthy_peak = healthy().metric(Metric::Pressure);
    assert!(healthy_peak
        .iter()
        .filter(|q| (7.0..9.5).contains(&hour(q)))
        .all(|q| q.v >= 15.0));
}

fn longest_gap_h(series: &[Point]) -> f64 {
    series
        .windows(2)
        .map(|w| w[1].t - w[0].t)
        .fold(0.0, f64::max)
        / 3600.0
}

#[test]
fn a_silent_device_leaves_a_gap_of_hours_in_its_series_only() {
    let o = run("device-silent");
    for m in DeviceRole::PumpHouse.metrics() {
        let gap = longest_gap_h(o.series.get(&(DeviceRole::PumpHouse, *m)).expect("series"));
        assert!((8.5..10.0).contains(&gap), "{m}: longest gap {gap} h");
    }
    for m in DeviceRole::Network.metrics() {
        let gap = longest_gap_h(o.series.get(&(DeviceRole::Network, *m)).expect("series"));
        assert!(gap <= 0.25 + 1e-6, "{m}: network gap {gap} h");
    }
    assert!(longest_gap_h(&healthy().metric(Metric::Chlorine)) <= 0.25 + 1e-6);
}

#[test]
fn after_a_long_link_outage_the_whole_backlog_is_delivered_with_its_original_times() {
    let s = Scenario::builtin("link-outage-backlog").unwrap();
    let (from, to) = (
        s.link_outage[0].day,
        s.link_outage[0].day + s.link_outage[0].hours / 24.0,
    );
    let o = run("link-outage-backlog");
    let day = |t: f64| (t - o.start) / 86_400.0;
    // Nothing arrives during the outage.
    assert!(o
        .deliveries
        .iter()
        .all(|d| !(from..to).contains(&day(d.at))));
    // Then the backlog: packs from the outage arrive together, at its end.
    // (20 h of 15-minute packs from two devices, the last hour's not counted.)
    let late: Vec<_> = o
        .deliveries
        .iter()
        .filter(|d| d.at - d.bt > 3600.0)
        .collect();
    assert!(late.len() >= 2 * 75, "only {} packs came late", late.len());
    assert!(late.iter().all(|d| (day(d.at) - to).abs() < 0.01));
    let oldest = late.iter().map(|d| d.at - d.bt).fold(0.0, f64::max) / 3600.0;
    assert!(oldest > 19.5, "oldest pack {oldest} h late");
    // Every report of the week is there once, with its time.
    for (role, metric) in [
        (DeviceRole::PumpHouse, Metric::Chlorine),
        (DeviceRole::Network, Metric::Pressure),
    ] {
        let mut times: Vec<f64> = o.series[&(role, metric)].iter().map(|p| p.t).collect();
        let n = times.len();
        times.sort_by(f64::total_cmp);
        times.dedup();
        assert_eq!(times.len(), n, "{metric}: duplicates");
        assert_eq!(
            n,
            healthy().series[&(role, metric)].len(),
            "{metric}: readings lost"
        );
    }
    // The radio saw no coverage.
    let rssi = o.metric(Metric::Rssi);
    assert!(rssi
        .iter()
        .filter(|p| (from + 0.02..to).contains(&day(p.t)))
        .all(|p| p.v < -100.0));
}
