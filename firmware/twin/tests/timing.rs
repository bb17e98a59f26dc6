//! Acceptance 6 (issue 3): how much CPU the twin needs. Prints, never
//! asserts on timing (machines differ); run with
//! `cargo test --release -p apr-twin --test timing -- --nocapture`.
//!
//! - One simulated APR-week through the whole path the scenario tests use
//!   (model, simulated hardware, every meter pulse through the core's
//!   debouncer, the core's drivers, aggregation, report encoding, the flash
//!   outbox, the wire crate's validation at a simulated gateway).
//! - The demo's history: 56 APRs × 30 days as the fleet generates it before
//!   publishing (model, boards with the meter on a hardware counter and
//!   readings every 5 minutes, 15-minute reports, packs of four reports
//!   encoded by the core), without MQTT.
//!
//! CPU time is the thread's (`CLOCK_THREAD_CPUTIME_ID`); each figure is the
//! median of several runs.

use std::time::Duration;

use apr_firmware::{Identity, Report, Sample};
use apr_twin::board::{Board, BoardOptions, MeterWiring};
use apr_twin::model::{DeviceRole, SiteModel, SiteProfile};
use apr_twin::{observe, RunOptions, Scenario};

#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn cpu<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t0 = thread_cpu();
    let out = f();
    (thread_cpu() - t0, out)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fleet() -> Vec<SiteProfile> {
    let csv = include_str!("../../../data/fleet.csv");
    csv.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("id,"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            SiteProfile {
                apr: f[0].to_string(),
                beneficiaries: f[5].parse().expect("beneficiaries"),
                capacity_l_s: f[8].parse().expect("capacity"),
                storage_m3: f[9].parse().expect("storage"),
            }
        })
        .collect()
}

/// The fleet's history generation for one site; returns the packs encoded.
fn history(profile: &SiteProfile, seed: u64, start: f64, days: f64) -> usize {
    let scenario = Scenario::default();
    let mut model = SiteModel::with_scenario(profile.clone(), &scenario, seed, start);
    let opts = BoardOptions {
        sample_period_s: 300,
        report_interval_s: 900,
        meter: MeterWiring::HardwareCounter,
        k_factor_l_per_pulse: 1.0,
    };
    let mut units: Vec<(Board, Vec<Sample>, f64)> = DeviceRole::ALL
        .iter()
        .map(|&r| (Board::new(r, opts, start).expect("board"), Vec::new(), 0.0))
        .collect();
    let mut buf = vec![0u8; 2048];
    let mut packs = 0;
    let end = start + days * 86_400.0;
    let mut t = start + 300.0;
    let mut reports = 0;
    while t <= end {
        model.advance_to(t);
        let signals = model.signals();
        let mut any = false;
        for (board, pending, _) in &mut units {
            if let Some(s) = board.tick(t, &signals) {
                pending.extend_from_slice(s);
                any = true;
            }
        }
        reports += usize::from(any);
        if any && reports % 4 == 0 {
            for (board, pending, last_bt) in &mut units {
                let id = Identity::new(&profile.apr, board.role().device_id()).expect("id");
                let mut report = Report::new(id, *last_bt);
                let mut done = 0;
                while done < pending.len() {
                    let (_, _, n) = report.next_pack(&mut buf, &pending[done..]).expect("pack");
                    done += n;
                    packs += 1;
                }
                *last_bt = report.last_bt();
                pending.clear();
            }
        }
        t += 300.0;
    }
    packs
}

#[test]
fn the_cpu_time_of_an_apr_week_and_of_the_demo_history_is_reported() {
    // Unoptimised builds run each measurement once, on 4 sites for the
    // fleet figure: the figures that count come from `--release`.
    let release = !cfg!(debug_assertions);
    let (runs, fleet_runs, fleet_sites) = if release { (5, 3, 56) } else { (1, 1, 4) };
    let profile = fleet()[0].clone();
    let healthy = Scenario::default();
    let week: Vec<Duration> = (0..runs)
        .map(|i| {
            let opts = RunOptions {
                seed: i,
                ..RunOptions::default()
            };
            let (d, obs) = cpu(|| observe(&profile, &healthy, &opts).expect("week"));
            assert!(obs.refusals.is_empty());
            d
        })
        .collect();
    let history_week: Vec<Duration> = (0..runs)
        .map(|i| cpu(|| history(&profile, i, 1_767_582_000.0, 7.0)).0)
        .collect();
    let mut sites = fleet();
    assert_eq!(sites.len(), 56);
    sites.truncate(fleet_sites);
    let fleet_month: Vec<Duration> = (0..fleet_runs)
        .map(|_| {
            let (d, packs) = cpu(|| {
                sites
                    .iter()
                    .enumerate()
                    .map(|(i, s)| history(s, 2024 + i as u64, 1_767_582_000.0, 30.0))
                    .sum::<usize>()
            });
            assert!(packs > fleet_sites * 2 * 700, "{packs} packs");
            d
        })
        .collect();
    println!(
        "twin CPU time (median of runs): one APR-week, full driver path with flash outbox and gateway validation: {:?} (runs {week:?})",
        median(week.clone())
    );
    println!(
        "twin CPU time (median of runs): one APR-week, history path: {:?} (runs {history_week:?})",
        median(history_week.clone())
    );
    println!(
        "twin CPU time (median of runs): {fleet_sites} APRs x 30 days of history, one thread: {:?} (runs {fleet_month:?}){}",
        median(fleet_month.clone()),
        if release { "" } else { " [debug build: use --release]" }
    );
}
