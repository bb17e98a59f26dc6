//! Runs every built-in scenario for a simulated week and prints, per metric,
//! the count, minimum, mean and maximum of the accepted readings: a quick
//! look at what the acceptance tests assert on.
//! `cargo run --release -p apr-twin --example scenario_summary`

use apr_twin::model::SiteProfile;
use apr_twin::{observe, RunOptions, Scenario};
use apr_wire::Metric;

fn main() -> Result<(), apr_twin::TwinError> {
    let profile = SiteProfile {
        apr: "los-cerrillos".into(),
        beneficiaries: 438,
        capacity_l_s: 1.4,
        storage_m3: 20.0,
    };
    for s in Scenario::library()? {
        let started = std::time::Instant::now();
        let obs = observe(&profile, &s, &RunOptions::default())?;
        print!("{:30} {:>6.0?}", s.name, started.elapsed());
        for m in [
            Metric::Flow,
            Metric::Chlorine,
            Metric::Turbidity,
            Metric::Pressure,
            Metric::TankLevel,
        ] {
            let p = obs.metric(m);
            let (lo, hi) = p
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.v), b.max(p.v)));
            let mean = p.iter().map(|p| p.v).sum::<f64>() / p.len().max(1) as f64;
            print!("  {} {} [{lo:.2} {mean:.2} {hi:.2}]", m.name(), p.len());
        }
        println!("  refused {}", obs.refusals.len());
    }
    Ok(())
}
