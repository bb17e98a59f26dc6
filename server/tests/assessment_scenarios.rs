//! Acceptance 1 of issue 5: each scenario of the site twin's library, run
//! for a simulated month through `apr_twin::observe`, stored through the
//! same ingest path as the server's (`SeriesStore::write_batch`), with the
//! operator's daily DPD check taken from the twin's true chlorine at 10:00,
//! flags exactly the components the table below expects, each with
//! evidence; the healthy scenario flags none.
//!
//! A simulated month takes a few seconds per scenario even in a debug
//! build, so these run in every `cargo test`. `APR_TWIN_SEED=n` tries
//! another month of the same scenarios.

use std::collections::BTreeSet;
use std::sync::Arc;

use apr_server::assessment::{self, rules::ComponentResult};
use apr_server::kpi::{self, local_day, local_ms, WindowKpis};
use apr_server::limits::{AssessmentLimits, Limits};
use apr_server::store::{
    AnalysisStore, AprRecord, FieldKind, FieldRecord, Region, Registry, SeriesStore, SqliteStore,
};
use apr_twin::model::{DeviceRole, SiteProfile};
use apr_twin::{observe, RunOptions, Scenario};
use apr_wire::ingest::{IngestBatch, IngestPack};
use apr_wire::validate::Reading;

/// Scenario → the components it must flag (and no other).
const EXPECTED: [(&str, &[&str]); 11] = [
    ("healthy", &[]),
    ("leak", &["technology"]),
    ("production-below-peak-demand", &["engineering"]),
    ("storage-too-small", &["engineering"]),
    ("chlorinator-empty", &["technology"]),
    ("chlorine-dosing-erratic", &["technology", "training"]),
    ("turbidity-event", &["technology"]),
    ("chlorine-probe-drift", &["diagnosis"]),
    ("low-pressure-peak-hour", &["engineering"]),
    ("device-silent", &["diagnosis"]),
    ("link-outage-backlog", &[]),
];

const DAYS: u32 = 30;
const APR: &str = "los-cerrillos";

/// A demo-fleet APR (Los Cerrillos, Yumbel): 438 people, 1.4 l/s, 20 m³.
fn profile() -> SiteProfile {
    SiteProfile {
        apr: APR.into(),
        beneficiaries: 438,
        capacity_l_s: 1.4,
        storage_m3: 20.0,
    }
}

struct Outcome {
    components: Vec<ComponentResult>,
    window: WindowKpis,
}

fn run(name: &str) -> Outcome {
    let scenario = Scenario::builtin(name).expect("built-in scenario");
    let opts = RunOptions {
        days: f64::from(DAYS),
        seed: std::env::var("APR_TWIN_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
        ..RunOptions::default()
    };
    let obs = observe(&profile(), &scenario, &opts).expect("twin run");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("apr.db"), 2).expect("store"));
    let apr = AprRecord {
        id: APR.into(),
        name: "Los Cerrillos".into(),
        comuna: "Yumbel".into(),
        region: "biobio".into(),
        beneficiaries: 438,
        connections: 137,
        source: "pozo".into(),
        // The site as built (the scenario may change it).
        capacity_l_s: obs.capacity_l_s,
        storage_m3: obs.storage_m3,
        gore_contribution_clp: 0,
        public_investment_clp: 0,
    };
    store
        .upsert_fleet(
            &[Region {
                id: "biobio".into(),
                name: "Biobío".into(),
            }],
            std::slice::from_ref(&apr),
        )
        .expect("fleet");
    // The readings, a batch per device and simulated day, as a gateway
    // would send them.
    let mut seq = 0;
    for role in DeviceRole::ALL {
        let mut readings: Vec<Reading> = obs
            .series
            .iter()
            .filter(|((r, _), _)| *r == role)
            .flat_map(|((_, m), pts)| {
                pts.iter().map(|p| Reading {
                    metric: *m,
                    t_ms: (p.t * 1000.0).round() as i64,
                    value: p.v,
                })
            })
            .collect();
        readings.sort_by_key(|r| r.t_ms);
        for chunk in readings.chunks(20_000) {
            seq += 1;
            let ack = store
                .write_batch(IngestBatch {
                    gateway: "gw-test".into(),
                    seq,
                    packs: vec![IngestPack {
                        apr: APR.into(),
                        device: role.device_id().into(),
                        bt: None,
                        received_ms: chunk.last().map_or(0, |r| r.t_ms),
                        readings: chunk.to_vec(),
                        refusals: vec![],
                        raw: None,
                    }],
                    statuses: vec![],
                })
                .expect("write");
            assert_eq!(ack.duplicates, 0, "{name}: duplicates");
        }
    }
    // The operator's daily DPD check at 10:00 local: the true residual.
    let first = local_day((obs.start * 1000.0) as i64);
    let days: BTreeSet<_> = (0..DAYS)
        .map(|d| first + chrono::Duration::days(i64::from(d)))
        .collect();
    for day in &days {
        let t = local_ms(*day, 10);
        let Some(truth) = obs
            .truth
            .iter()
            .min_by_key(|tr| ((tr.time * 1000.0) as i64 - t).abs())
        else {
            continue;
        };
        store
            .insert_field_record(FieldRecord {
                id: 0,
                apr: APR.into(),
                kind: FieldKind::DpdChlorine,
                taken_at_ms: t,
                value: Some((truth.chlorine_mg_l * 100.0).round() / 100.0),
                parameter: None,
                note: None,
                recorded_by: "operador".into(),
                recorded_at_ms: t,
            })
            .expect("dpd");
    }
    let (limits, a) = (Limits::default(), AssessmentLimits::default());
    let now = local_ms(*days.last().expect("days"), 24);
    kpi::refresh(&*store, &*store, &apr, &limits, &a, &days, now).expect("kpis");
    let (components, rows) = assessment::compute(
        &*store,
        &*store,
        &*store,
        &apr,
        &limits,
        &a,
        *days.last().expect("days"),
        now,
    )
    .expect("assessment");
    store.insert_assessment(rows).expect("stored");
    let kpi_rows = store
        .kpis(
            APR,
            &first.to_string(),
            &days.last().expect("days").to_string(),
            None,
        )
        .expect("rows");
    Outcome {
        components,
        window: WindowKpis::from_rows(&kpi_rows, &kpi::Site::from(&apr), &a),
    }
}

fn check(name: &str) {
    let expected = EXPECTED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
        .expect("in the table");
    let out = run(name);
    let flagged: Vec<&str> = out
        .components
        .iter()
        .filter(|c| c.flagged)
        .map(|c| c.component)
        .collect();
    let reasons: Vec<String> = out
        .components
        .iter()
        .flat_map(|c| {
            c.reasons
                .iter()
                .map(move |r| format!("{}:{} {}", c.component, r.code, r.evidence))
        })
        .collect();
    eprintln!(
        "{name}: flagged {flagged:?}, reasons {reasons:?}\n  window {:?}",
        out.window
    );
    assert_eq!(
        flagged, expected,
        "{name}: reasons {reasons:?}\nwindow {:#?}",
        out.window
    );
    for c in out.components.iter().filter(|c| c.flagged) {
        for r in &c.reasons {
            assert!(!r.message.is_empty(), "{name}: {} has no message", r.code);
            let e = r.evidence.as_object().expect("evidence is an object");
            assert!(e.len() >= 2, "{name}: {} has no evidence: {e:?}", r.code);
            assert_eq!(e["window"]["days"], DAYS, "{name}: {} window", r.code);
        }
    }
}

#[test]
fn the_table_covers_every_scenario_of_the_library() {
    let library: BTreeSet<&str> = Scenario::builtin_names().collect();
    let table: BTreeSet<&str> = EXPECTED.iter().map(|(n, _)| *n).collect();
    assert_eq!(library, table);
}

macro_rules! scenario_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check($name);
            }
        )*
    };
}

scenario_tests! {
    healthy_flags_nothing => "healthy",
    leak_flags_technology => "leak",
    production_below_peak_demand_flags_engineering => "production-below-peak-demand",
    storage_too_small_flags_engineering => "storage-too-small",
    chlorinator_empty_flags_technology => "chlorinator-empty",
    chlorine_dosing_erratic_flags_technology_and_training => "chlorine-dosing-erratic",
    turbidity_event_flags_technology => "turbidity-event",
    chlorine_probe_drift_flags_diagnosis => "chlorine-probe-drift",
    low_pressure_peak_hour_flags_engineering => "low-pressure-peak-hour",
    device_silent_flags_diagnosis => "device-silent",
    link_outage_backlog_flags_nothing => "link-outage-backlog",
}
