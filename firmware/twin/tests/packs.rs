//! Acceptance 4 (issue 3): packs produced by the firmware core decode with
//! the wire crate and are accepted by the gateway's validation unchanged:
//! same metric, time within 1 ms, the same value to the last ULPs of an
//! `f64`, no refusals. Property tests
//! over random readings, through the twin's uplink (the core's `Report`
//! and flash `Outbox`), and over random wire signals through a whole
//! simulated board.

use apr_firmware::{Sample, SampleValue};
use apr_twin::board::{Board, BoardOptions, MeterWiring};
use apr_twin::model::{DeviceRole, Signals};
use apr_twin::uplink::Uplink;
use apr_wire::validate::{validate_pack, PackContext};
use apr_wire::Metric;
use proptest::prelude::*;

fn sample() -> impl Strategy<Value = (usize, f64, f64, bool)> {
    (
        0..Metric::ALL.len(),
        0.0f64..1.0,
        0.0f64..3600.0,
        any::<bool>(),
    )
}

/// A reading of metric `m` at fraction `f` of its physical range (volume up
/// to 10⁹ m³).
fn value(m: Metric, f: f64) -> f64 {
    let (lo, hi) = m.range();
    let hi = hi.min(1e9);
    (lo + f * (hi - lo)).clamp(lo, hi)
}

/// Sends `samples` through an uplink and validates every pack like the
/// gateway; returns the accepted readings and the refusals.
fn through_the_core(samples: &[Sample]) -> (Vec<apr_wire::validate::Reading>, Vec<String>) {
    let mut uplink = Uplink::new("los-aromos", "caseta").unwrap();
    uplink.queue(samples).unwrap();
    let latest = samples.iter().map(|s| s.time).fold(0.0, f64::max);
    let mut readings = Vec::new();
    let mut refusals = Vec::new();
    uplink
        .deliver(|bt, payload| {
            let ctx = PackContext {
                apr: "los-aromos",
                device: "caseta",
                received_ms: (latest * 1000.0) as i64 + 1000,
                max_future_ms: 60_000,
            };
            let out = validate_pack(payload, &ctx);
            readings.extend(out.readings);
            refusals.extend(out.refusals.into_iter().map(|r| r.detail));
            // The gateway names the pack by its `bt` as it decoded it: compare
            // to the millisecond, as the device's outbox does.
            out.base_time
                .is_some_and(|b| (b * 1000.0).round() == (bt * 1000.0).round())
        })
        .unwrap();
    assert_eq!(uplink.pending(), 0, "every pack acknowledged and released");
    (readings, refusals)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn packs_from_the_core_are_accepted_unchanged(
        base in 1_600_000_000.0f64..2_000_000_000.0,
        raw in prop::collection::vec(sample(), 1..120),
    ) {
        let samples: Vec<Sample> = raw
            .iter()
            .map(|&(i, f, dt, b)| {
                let metric = Metric::ALL[i];
                let value = if metric == Metric::Pump {
                    SampleValue::Boolean(b)
                } else {
                    SampleValue::Number(value(metric, f))
                };
                Sample { metric, time: base + dt, value }
            })
            .collect();
        let (readings, refusals) = through_the_core(&samples);
        prop_assert!(refusals.is_empty(), "refused: {:?}", refusals);
        prop_assert_eq!(readings.len(), samples.len());
        for (s, r) in samples.iter().zip(&readings) {
            prop_assert_eq!(s.metric, r.metric);
            let t_ms = s.time * 1000.0;
            prop_assert!((r.t_ms as f64 - t_ms).abs() <= 1.0, "{} vs {}", r.t_ms, t_ms);
            let want = match s.value {
                SampleValue::Number(v) => v,
                SampleValue::Boolean(b) => f64::from(u8::from(b)),
            };
            // The encoder writes the shortest decimal that round-trips; the
            // gateway's JSON parser (serde_json without `float_roundtrip`)
            // may land one or two ULPs away from it.
            prop_assert!(
                (r.value - want).abs() <= 4.0 * f64::EPSILON * want.abs(),
                "{} vs {}", r.value, want
            );
        }
    }

    #[test]
    fn a_board_reading_any_wire_signals_reports_only_acceptable_readings(
        loops in prop::array::uniform4(0.0f32..25.0),
        probe in (0.0f32..14.0, 0.0f32..100_000.0, 0.0f32..20.0),
        answers in any::<bool>(),
        flow in 0.0f64..30.0,
        battery in 0.0f64..60.0,
        rssi in -150.0f64..0.0,
        wiring in prop_oneof![Just(MeterWiring::ReedSwitchPolled), Just(MeterWiring::HardwareCounter)],
    ) {
        let start = 1_767_582_000.0;
        let opts = BoardOptions { report_interval_s: 300, meter: wiring, ..BoardOptions::default() };
        for role in DeviceRole::ALL {
            let mut board = Board::new(role, opts, start).unwrap();
            let mut samples = Vec::new();
            for i in 0..=10 {
                let t = start + f64::from(i) * 60.0;
                let signals = Signals {
                    meter_l: 1e6 + flow * (t - start),
                    pump_running: flow > 0.5,
                    loops_ma: loops,
                    probe: [probe.0, probe.1, probe.2],
                    probe_answers: answers,
                    battery_v: battery,
                    rssi_dbm: rssi,
                };
                if let Some(r) = board.tick(t, &signals) {
                    samples.extend_from_slice(r);
                }
            }
            prop_assert!(!samples.is_empty());
            let (readings, refusals) = through_the_core(&samples);
            prop_assert!(refusals.is_empty(), "refused: {:?}", refusals);
            prop_assert_eq!(readings.len(), samples.len());
        }
    }
}
