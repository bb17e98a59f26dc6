//! Acceptance 6 (issue 3): one simulated APR-week through the twin.
//! `cargo bench -p apr-twin`.
//!
//! - `apr_week_full_path`: model, simulated hardware, every meter pulse
//!   through the core's debouncer, the core's drivers, aggregation, report
//!   encoding, flash outbox, the wire crate's validation (what the scenario
//!   tests run).
//! - `apr_week_history_path`: what the demo's backfill runs per site-week
//!   before MQTT (meter on a hardware counter, readings every 5 minutes).

use apr_twin::board::{Board, BoardOptions, MeterWiring};
use apr_twin::model::{DeviceRole, SiteModel, SiteProfile};
use apr_twin::{observe, RunOptions, Scenario};

fn main() {
    divan::main();
}

fn profile() -> SiteProfile {
    SiteProfile {
        apr: "los-cerrillos".into(),
        beneficiaries: 438,
        capacity_l_s: 1.4,
        storage_m3: 20.0,
    }
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn apr_week_full_path() -> usize {
    let scenario = Scenario::default();
    let obs = observe(&profile(), &scenario, &RunOptions::default()).expect("week");
    obs.deliveries.len()
}

#[divan::bench(sample_count = 20, sample_size = 1)]
fn apr_week_history_path() -> usize {
    let start = RunOptions::default().start;
    let mut model = SiteModel::with_scenario(profile(), &Scenario::default(), 1, start);
    let opts = BoardOptions {
        sample_period_s: 300,
        meter: MeterWiring::HardwareCounter,
        ..BoardOptions::default()
    };
    let mut boards: Vec<Board> = DeviceRole::ALL
        .iter()
        .map(|&r| Board::new(r, opts, start).expect("board"))
        .collect();
    let mut samples = 0;
    let mut t = start + 300.0;
    while t <= start + 7.0 * 86_400.0 {
        model.advance_to(t);
        let s = model.signals();
        for b in &mut boards {
            samples += b.tick(t, &s).map_or(0, <[_]>::len);
        }
        t += 300.0;
    }
    samples
}
