//! When to power, read and power off each instrument, and when to report: a
//! pure state machine with no clock of its own.
//!
//! Data loggers give each instrument a warm-up, a stabilisation and a
//! measurement time (a turbidity probe: 8 s + 40 s + 4 s, `DOMAIN.md`). Each
//! instrument here runs one such cycle per sampling period: [`Action::PowerOn`]
//! at the cycle's start, [`Action::Read`] once warm-up and stabilisation have
//! passed, [`Action::PowerOff`] after the measurement time (the read's driver
//! takes or averages its measurement within it). An instrument whose cycle is
//! as long as its period stays powered and is read once per period. Every
//! report interval the scheduler says [`Action::Report`].
//!
//! The I/O loop asks [`Scheduler::poll`] with the current time until it
//! answers `None`, carries out each action, then sleeps until
//! [`Scheduler::next_due_ms`]. Actions due at the same time come reads first
//! and the report last, so a reading taken at a report boundary is in that
//! report. A device that slept through whole cycles (a brown-out, a long
//! modem session) does not replay them: it starts the current one.

use crate::domain::TURBIDITY_TIMING_S;

/// An instrument's timing within one sampling cycle, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From power on until the instrument is usable.
    pub warm_up_ms: u32,
    /// From usable until its reading has settled.
    pub stabilise_ms: u32,
    /// How long the measurement takes; power goes off after it.
    pub measure_ms: u32,
}

impl Timing {
    /// From seconds.
    pub const fn from_secs(warm_up: u32, stabilise: u32, measure: u32) -> Self {
        Timing {
            warm_up_ms: warm_up * 1000,
            stabilise_ms: stabilise * 1000,
            measure_ms: measure * 1000,
        }
    }

    /// A turbidity probe as data loggers time it: 8 s + 40 s + 4 s.
    pub const TURBIDITY: Timing = Timing::from_secs(
        TURBIDITY_TIMING_S.0,
        TURBIDITY_TIMING_S.1,
        TURBIDITY_TIMING_S.2,
    );

    /// An instrument read at once (a powered 4–20 mA loop, a pulse total).
    pub const IMMEDIATE: Timing = Timing::from_secs(0, 0, 0);

    const fn until_read(&self) -> u64 {
        self.warm_up_ms as u64 + self.stabilise_ms as u64
    }

    const fn cycle(&self) -> u64 {
        self.until_read() + self.measure_ms as u64
    }
}

/// One instrument's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstrumentPlan {
    /// Its timing.
    pub timing: Timing,
    /// One cycle (one reading) per this many milliseconds (> 0).
    pub period_ms: u32,
}

/// What the I/O loop should do now. The index is the instrument's position
/// in the plans given to [`Scheduler::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Switch the instrument's supply on.
    PowerOn(usize),
    /// Take the instrument's reading.
    Read(usize),
    /// Switch the instrument's supply off.
    PowerOff(usize),
    /// Aggregate the interval's readings, encode and queue a pack.
    Report,
}

impl Action {
    /// Order among actions due at the same time.
    const fn rank(self) -> u8 {
        match self {
            Action::Read(_) => 0,
            Action::PowerOff(_) => 1,
            Action::PowerOn(_) => 2,
            Action::Report => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Off, waiting for the cycle's start.
    Off,
    /// Powered, waiting to read.
    Settling,
    /// Read, waiting for the measurement time to end.
    Measuring,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    plan: InstrumentPlan,
    cycle_start: u64,
    phase: Phase,
    /// Stays powered: its cycle fills its period.
    always_on: bool,
}

/// The sampling and reporting schedule of one device.
#[derive(Debug, Clone)]
pub struct Scheduler<const N: usize> {
    slots: [Slot; N],
    interval_ms: u64,
    last_report_ms: u64,
    next_report_ms: u64,
}

impl<const N: usize> Scheduler<N> {
    /// A schedule starting at `now_ms`: every instrument starts its first
    /// cycle now, the first report is one interval from now.
    pub fn new(plans: [InstrumentPlan; N], report_interval_ms: u32, now_ms: u64) -> Self {
        let slots = plans.map(|plan| Slot {
            plan: InstrumentPlan {
                timing: plan.timing,
                period_ms: plan.period_ms.max(1),
            },
            cycle_start: now_ms,
            phase: Phase::Off,
            always_on: plan.timing.cycle() >= u64::from(plan.period_ms.max(1)),
        });
        let interval_ms = u64::from(report_interval_ms.max(1));
        Scheduler {
            slots,
            interval_ms,
            last_report_ms: now_ms,
            next_report_ms: now_ms + interval_ms,
        }
    }

    /// The report interval, ms.
    pub fn report_interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// A new report interval (from a remote configuration): the next report
    /// comes one new interval after the last one, or now if that has passed.
    pub fn set_report_interval(&mut self, report_interval_ms: u32, now_ms: u64) {
        self.interval_ms = u64::from(report_interval_ms.max(1));
        self.next_report_ms = (self.last_report_ms + self.interval_ms).max(now_ms);
    }

    /// Whether instrument `i` should be powered now.
    pub fn powered(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.phase != Phase::Off)
    }

    fn slot_next(s: &Slot, i: usize) -> (u64, Action) {
        match s.phase {
            Phase::Off => (s.cycle_start, Action::PowerOn(i)),
            Phase::Settling => (s.cycle_start + s.plan.timing.until_read(), Action::Read(i)),
            Phase::Measuring => (s.cycle_start + s.plan.timing.cycle(), Action::PowerOff(i)),
        }
    }

    fn earliest(&self) -> (u64, Action) {
        let mut best = (self.next_report_ms, Action::Report);
        for (i, s) in self.slots.iter().enumerate() {
            let cand = Self::slot_next(s, i);
            if (cand.0, cand.1.rank()) < (best.0, best.1.rank()) {
                best = cand;
            }
        }
        best
    }

    /// When the next action falls due, ms.
    pub fn next_due_ms(&self) -> u64 {
        self.earliest().0
    }

    /// The next action due at `now_ms`, if any; call again until `None`.
    pub fn poll(&mut self, now_ms: u64) -> Option<Action> {
        let (due, action) = self.earliest();
        if due > now_ms {
            return None;
        }
        match action {
            Action::Report => {
                self.last_report_ms = now_ms;
                let mut next = self.next_report_ms + self.interval_ms;
                if next <= now_ms {
                    // Slept through whole intervals: one report, then back
                    // on the interval's grid.
                    let missed = (now_ms - next) / self.interval_ms + 1;
                    next += missed * self.interval_ms;
                }
                self.next_report_ms = next;
            }
            Action::PowerOn(i) => {
                let s = &mut self.slots[i];
                let period = u64::from(s.plan.period_ms);
                if now_ms >= s.cycle_start + period {
                    // Skip whole missed cycles: start the current one now.
                    s.cycle_start = now_ms;
                }
                s.phase = Phase::Settling;
            }
            Action::Read(i) => {
                let s = &mut self.slots[i];
                if s.always_on {
                    let period = u64::from(s.plan.period_ms);
                    let first_read = s.cycle_start + s.plan.timing.until_read();
                    // Next read one period on (skipping missed ones); the
                    // supply stays on.
                    let mut next = first_read + period;
                    if next <= now_ms {
                        next += ((now_ms - next) / period + 1) * period;
                    }
                    s.cycle_start = next - s.plan.timing.until_read();
                } else {
                    s.phase = Phase::Measuring;
                }
            }
            Action::PowerOff(i) => {
                let s = &mut self.slots[i];
                s.cycle_start += u64::from(s.plan.period_ms);
                s.phase = Phase::Off;
            }
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const S: u64 = 1000;

    /// Every action with its time, stepping a simulated clock by 1 s up to
    /// `until_s` (the way a loop that wakes each second would see them).
    fn run<const N: usize>(
        sch: &mut Scheduler<N>,
        from_s: u64,
        until_s: u64,
    ) -> Vec<(u64, Action)> {
        let mut out = Vec::new();
        for t in from_s..=until_s {
            while let Some(a) = sch.poll(t * S) {
                out.push((t, a));
            }
        }
        out
    }

    fn turbidity_every(period_s: u32) -> InstrumentPlan {
        InstrumentPlan {
            timing: Timing::TURBIDITY,
            period_ms: period_s * 1000,
        }
    }

    #[test]
    fn a_turbidity_probe_is_read_after_warm_up_and_stabilisation_then_powered_off() {
        let mut sch = Scheduler::new([turbidity_every(300)], 600_000, 0);
        let got = run(&mut sch, 0, 360);
        assert_eq!(
            got,
            [
                (0, Action::PowerOn(0)),
                (48, Action::Read(0)),
                (52, Action::PowerOff(0)),
                (300, Action::PowerOn(0)),
                (348, Action::Read(0)),
                (352, Action::PowerOff(0)),
            ]
        );
        assert!(!sch.powered(0));
    }

    #[test]
    fn the_instrument_is_powered_between_power_on_and_power_off() {
        let mut sch = Scheduler::new([turbidity_every(300)], 600_000, 0);
        assert_eq!(sch.poll(0), Some(Action::PowerOn(0)));
        assert!(sch.powered(0));
        assert_eq!(sch.poll(47 * S), None);
        assert_eq!(sch.next_due_ms(), 48 * S);
        assert_eq!(sch.poll(48 * S), Some(Action::Read(0)));
        assert!(sch.powered(0));
        assert_eq!(sch.poll(52 * S), Some(Action::PowerOff(0)));
        assert!(!sch.powered(0));
    }

    #[test]
    fn reports_come_every_interval_after_the_reads_due_with_them() {
        let plans = [InstrumentPlan {
            timing: Timing::IMMEDIATE,
            period_ms: 60_000,
        }];
        let mut sch = Scheduler::new(plans, 120_000, 0);
        let got = run(&mut sch, 0, 240);
        let reports: Vec<u64> = got
            .iter()
            .filter(|(_, a)| *a == Action::Report)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(reports, [120, 240]);
        // At 120 s the instrument's cycle comes before the report.
        let at_120: Vec<Action> = got
            .iter()
            .filter(|(t, _)| *t == 120)
            .map(|(_, a)| *a)
            .collect();
        assert_eq!(
            at_120,
            [
                Action::PowerOn(0),
                Action::Read(0),
                Action::PowerOff(0),
                Action::Report
            ]
        );
    }

    #[test]
    fn an_instrument_whose_cycle_fills_its_period_stays_powered() {
        // 52 s cycle every 30 s: never switched off, read every 30 s.
        let mut sch = Scheduler::new([turbidity_every(30)], 3_600_000, 0);
        let got = run(&mut sch, 0, 130);
        assert_eq!(
            got,
            [
                (0, Action::PowerOn(0)),
                (48, Action::Read(0)),
                (78, Action::Read(0)),
                (108, Action::Read(0)),
            ]
        );
        assert!(sch.powered(0));
    }

    #[test]
    fn a_device_that_slept_through_cycles_does_not_replay_them() {
        let mut sch = Scheduler::new([turbidity_every(300)], 600_000, 0);
        run(&mut sch, 0, 60);
        // Asleep from 60 s to 2000 s: one power-on now, one report, then back
        // on the report grid.
        let mut got = Vec::new();
        while let Some(a) = sch.poll(2000 * S) {
            got.push(a);
        }
        assert_eq!(got, [Action::PowerOn(0), Action::Report]);
        assert_eq!(sch.next_due_ms(), 2048 * S);
        let later = run(&mut sch, 2001, 2400);
        assert_eq!(
            later,
            [
                (2048, Action::Read(0)),
                (2052, Action::PowerOff(0)),
                (2300, Action::PowerOn(0)),
                (2348, Action::Read(0)),
                (2352, Action::PowerOff(0)),
                (2400, Action::Report),
            ]
        );
    }

    #[test]
    fn a_shorter_report_interval_applies_from_the_last_report() {
        let plans: [InstrumentPlan; 0] = [];
        let mut sch = Scheduler::new(plans, 600_000, 0);
        assert_eq!(run(&mut sch, 0, 600), [(600, Action::Report)]);
        sch.set_report_interval(60_000, 610 * S);
        assert_eq!(sch.report_interval_ms(), 60_000);
        assert_eq!(
            run(&mut sch, 610, 780),
            [
                (660, Action::Report),
                (720, Action::Report),
                (780, Action::Report)
            ]
        );
        // Shorter still, with the new point already past: report now.
        sch.set_report_interval(30_000, 900 * S);
        assert_eq!(sch.poll(900 * S), Some(Action::Report));
    }

    #[test]
    fn two_instruments_due_together_are_served_in_order() {
        let p = InstrumentPlan {
            timing: Timing::from_secs(0, 5, 1),
            period_ms: 60_000,
        };
        let mut sch = Scheduler::new([p, p], 600_000, 0);
        let got = run(&mut sch, 0, 6);
        assert_eq!(
            got,
            [
                (0, Action::PowerOn(0)),
                (0, Action::PowerOn(1)),
                (5, Action::Read(0)),
                (5, Action::Read(1)),
                (6, Action::PowerOff(0)),
                (6, Action::PowerOff(1)),
            ]
        );
    }
}
