//! The core's self-test: one reading's whole path on the device, without any
//! hardware but RAM. Run on the host by `cargo test` and on the target (an
//! emulated Cortex-M3) by `firmware/qemu-selftest`.
//!
//! Pulses → totaliser; readings with a spike → aggregate; a NAMUR fault;
//! samples → a SenML pack; the pack → the outbox on a RAM-backed NOR flash;
//! release by `bt`; remount → only the unreleased pack comes back, byte for
//! byte; a configuration refused and one applied; a turbidity cycle
//! scheduled.

use apr_wire::Metric;

use crate::aggregate::{Aggregate, Method};
use crate::analog::{check_loop, FrontEnd, LoopFault};
use crate::config::{Refusal, Settings};
use crate::flow::{ActiveLevel, CounterWidth, Debouncer, KFactor, Totaliser};
use crate::identity::Identity;
use crate::outbox::Outbox;
use crate::ram_flash::RamFlash;
use crate::report::{Report, Sample, SampleValue};
use crate::scheduler::{Action, InstrumentPlan, Scheduler, Timing};

/// Options of a self-test run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Expect the wrong thing in one check (that a released pack is still
    /// pending after remount), so a harness can prove a failing check fails
    /// the run.
    pub sabotage: bool,
}

/// Runs every check, telling `check` each one's name and whether it passed;
/// returns whether all passed. A check that cannot even run (a flash error)
/// is reported as failed, never skipped.
pub fn run(options: Options, mut check: impl FnMut(&'static str, bool)) -> bool {
    let mut all = true;
    let mut record = |name, ok| {
        all &= ok;
        check(name, ok);
    };

    // Flow: bounced pulses, debounced; a 16-bit counter wrap.
    let mut d = Debouncer::new(5_000, ActiveLevel::Low);
    // The contact rests open, then closes ten times with bounce.
    d.sample(true, 0);
    d.sample(true, 10_000);
    let mut t = 20_000u64;
    for _ in 0..10 {
        for level in [true, false, true, false] {
            d.sample(level, t);
            t += 500;
        }
        d.sample(false, t + 10_000);
        d.sample(true, t + 50_000);
        d.sample(true, t + 60_000);
        t += 100_000;
    }
    let mut total = Totaliser::new(KFactor::ONE_LITRE);
    total.add_counter_reading(65_530, CounterWidth::U16);
    total.add_counter_reading(
        65_530u32.wrapping_add(d.pulses()) & 0xFFFF,
        CounterWidth::U16,
    );
    record(
        "flow: 10 bounced pulses are 10 litres across a counter wrap",
        d.pulses() == 10 && total.microlitres() == 10_000_000,
    );
    let saved = total.save();
    record(
        "flow: the totaliser survives a restart",
        Totaliser::restore(&saved, total.k_factor()) == Ok(total),
    );

    // Aggregate: a spike does not become the interval's value.
    let mut cl: Aggregate<16> = Aggregate::new();
    for v in [0.52f32, 0.50, 0.49, 7.5, 0.51, 0.50, 0.48] {
        cl.push(v);
    }
    let fe = FrontEnd::default();
    let raw_open_loop = 40; // about 0.03 mA: a broken wire
    match check_loop(fe.milliamps(raw_open_loop)) {
        Err(LoopFault::Low { .. }) => cl.push_fault(),
        Ok(v) => cl.push(v),
        Err(LoopFault::High { .. }) => cl.push_fault(),
    }
    let summary = cl.take(Method::Median);
    record(
        "aggregate: the median rejects the spike, the fault is counted",
        summary.is_some_and(|s| s.value == 0.50 && s.samples == 7 && s.faults == 1),
    );
    let chlorine = summary.map_or(f32::NAN, |s| s.value);

    // Encode a pack.
    let Ok(id) = Identity::new("los-aromos", "caseta") else {
        record("identity: the self-test ids are valid", false);
        return false;
    };
    let bt0 = 1_764_064_800.0;
    let samples = [
        Sample {
            metric: Metric::Chlorine,
            time: bt0,
            value: SampleValue::Number(f64::from(chlorine)),
        },
        Sample {
            metric: Metric::Volume,
            time: bt0,
            value: SampleValue::Number(total.volume_m3()),
        },
        Sample {
            metric: Metric::Pump,
            time: bt0 + 60.0,
            value: SampleValue::Boolean(true),
        },
    ];
    let mut report = Report::new(id, 0.0);
    let mut pack1 = [0u8; 384];
    let mut pack2 = [0u8; 384];
    let encoded = report
        .next_pack(&mut pack1, &samples)
        .and_then(|(n1, bt1, _)| {
            let (n2, bt2, _) = report.next_pack(&mut pack2, &samples[..1])?;
            Ok((n1, bt1, n2, bt2))
        });
    let Ok((n1, bt1, n2, bt2)) = encoded else {
        record("report: samples encode as SenML packs", false);
        return false;
    };
    let text = core::str::from_utf8(&pack1[..n1]).unwrap_or("");
    record(
        "report: samples encode as a SenML pack",
        text.starts_with("[{\"bn\":\"urn:apr:los-aromos:caseta:\",\"bt\":1764064800,")
            && text.contains("\"n\":\"chlorine\",\"u\":\"mg/l\",\"v\":0.5}")
            && text.contains("\"n\":\"volume\",\"u\":\"m3\",\"v\":0.01}")
            && text.ends_with("\"t\":60,\"vb\":true}]"),
    );
    record("report: the second pack has a later bt", bt2 > bt1);

    // Outbox: append both, release the first, remount, only the second.
    let flash: RamFlash<4096, 1024, 8> = RamFlash::new();
    let outbox_ok = (|| {
        let (mut ob, _) = Outbox::mount(flash, 0, 4).ok()?;
        ob.append(bt1, &pack1[..n1]).ok()?;
        ob.append(bt2, &pack2[..n2]).ok()?;
        let released = ob.release(bt1).ok()?;
        let (mut ob, mounted) = Outbox::mount(ob.unmount(), 0, 4).ok()?;
        let mut buf = [0u8; 384];
        let mut it = ob.pending();
        let first = it.next(&mut buf).ok()??;
        let same = first.bt == bt2 && buf[..first.len] == pack2[..n2];
        let rest = it.next(&mut buf).ok()?;
        let (want_pending, want_first) = if options.sabotage { (2, bt1) } else { (1, bt2) };
        Some(
            released
                && same
                && first.bt == want_first
                && rest.is_none()
                && mounted.pending == want_pending
                && ob.last_bt() == bt2,
        )
    })();
    record(
        "outbox: after release and remount only the unreleased pack is pending",
        outbox_ok == Some(true),
    );

    // Config: refused whole, or applied whole.
    let mut settings = Settings::default();
    let refused = settings.apply(br#"{"report_interval_s":600,"k_factor_l_per_pulse":-1}"#);
    let applied = settings.apply(br#"{"report_interval_s":600,"k_factor_l_per_pulse":2.5}"#);
    record(
        "config: a bad config is refused, a good one applied",
        refused == Err(Refusal::KFactorNotPositive)
            && applied == Ok(true)
            && settings.report_interval_s == 600,
    );

    // Scheduler: a turbidity cycle.
    let plan = InstrumentPlan {
        timing: Timing::TURBIDITY,
        period_ms: 300_000,
    };
    let mut sch = Scheduler::new([plan], settings.report_interval_s * 1000, 0);
    let mut seen = [None; 4];
    let mut k = 0;
    for now in [0u64, 48_000, 52_000, 600_000] {
        while let Some(a) = sch.poll(now) {
            if k < seen.len() {
                seen[k] = Some((now, a));
            }
            k += 1;
        }
    }
    record(
        "scheduler: power on, read after 48 s, off after 52 s",
        seen[..3]
            == [
                Some((0, Action::PowerOn(0))),
                Some((48_000, Action::Read(0))),
                Some((52_000, Action::PowerOff(0))),
            ],
    );

    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_test_passes_on_the_host() {
        let mut failed = std::vec::Vec::new();
        let ok = run(Options::default(), |name, passed| {
            if !passed {
                failed.push(name);
            }
        });
        assert!(ok, "failed: {failed:?}");
        assert!(failed.is_empty());
    }

    #[test]
    fn a_sabotaged_self_test_fails_exactly_the_outbox_check() {
        let mut failed = std::vec::Vec::new();
        let ok = run(Options { sabotage: true }, |name, passed| {
            if !passed {
                failed.push(name);
            }
        });
        assert!(!ok);
        assert_eq!(
            failed,
            ["outbox: after release and remount only the unreleased pack is pending"]
        );
    }
}
