//! Production flow at the macro-meter: volt-free pulses (reed switch or open
//! collector) counted with debounce, a per-meter K-factor in litres per pulse,
//! the instantaneous flow over a sliding window, and a totaliser that survives
//! restarts and hardware counter wrap-around.
//!
//! The counting is a pure state machine, [`Debouncer`], fed with
//! `(level, time)` samples from a polling loop or with the edges an interrupt
//! saw; [`PulseInput`] is the thin poll loop around an
//! [`embedded_hal::digital::InputPin`]. Boards that count pulses in a hardware
//! timer instead hand its raw count to [`Totaliser::add_counter_reading`],
//! which takes the counter's width so a wrap is one step forward, not a jump
//! back.
//!
//! Volumes are kept in integer microlitres: a K-factor of 1 L/pulse is
//! 1 000 000 µL per pulse, so a totaliser never drifts by float rounding, and
//! a `u64` holds 18 million m³.

use embedded_hal::digital::InputPin;

use crate::crc::crc32;
use crate::error::Error;

/// Which stable level means the contact is closed (a pulse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveLevel {
    /// Closed contact pulls the input low (reed switch or open collector with
    /// a pull-up, the usual wiring).
    Low,
    /// Closed contact drives the input high.
    High,
}

/// Debounces a pulse input: a level counts only once it has held for the
/// debounce time, and a pulse is the stable level going from open to closed.
///
/// Times are microseconds on any monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Debouncer {
    debounce_us: u64,
    active: ActiveLevel,
    /// The last level that held for the debounce time (`None` at start).
    stable: Option<bool>,
    /// The level seen last and since when.
    candidate: Option<(bool, u64)>,
    pulses: u32,
}

impl Debouncer {
    /// A debouncer accepting a level after `debounce_us` microseconds.
    pub const fn new(debounce_us: u32, active: ActiveLevel) -> Self {
        Debouncer {
            debounce_us: debounce_us as u64,
            active,
            stable: None,
            candidate: None,
            pulses: 0,
        }
    }

    /// Feeds the input's level (`true` = high) read at `time_us`. Returns
    /// whether this sample completed a pulse.
    pub fn sample(&mut self, is_high: bool, time_us: u64) -> bool {
        match self.candidate {
            Some((level, _)) if level == is_high => {}
            _ => self.candidate = Some((is_high, time_us)),
        }
        self.settle(time_us)
    }

    /// Feeds an edge an interrupt saw: the input went to `is_high` at
    /// `time_us`. The new level counts once [`Debouncer::tick`] (or a later
    /// edge or sample) finds it held for the debounce time.
    pub fn edge(&mut self, is_high: bool, time_us: u64) -> bool {
        self.sample(is_high, time_us)
    }

    /// Tells the debouncer that time has reached `time_us` with no new edge.
    /// Returns whether this completed a pulse.
    pub fn tick(&mut self, time_us: u64) -> bool {
        self.settle(time_us)
    }

    fn settle(&mut self, now_us: u64) -> bool {
        let Some((level, since)) = self.candidate else {
            return false;
        };
        if now_us.saturating_sub(since) < self.debounce_us || self.stable == Some(level) {
            return false;
        }
        let was = self.stable.replace(level);
        let closed = level == (self.active == ActiveLevel::High);
        // The first stable level after start is a state, not a transition.
        if was.is_some() && closed {
            self.pulses = self.pulses.wrapping_add(1);
            return true;
        }
        false
    }

    /// Pulses counted so far (wraps at `u32::MAX`, like a hardware counter:
    /// read it with [`Totaliser::add_counter_reading`] and
    /// [`CounterWidth::U32`]).
    pub const fn pulses(&self) -> u32 {
        self.pulses
    }

    /// Whether the contact is closed, once a level has held.
    pub fn closed(&self) -> Option<bool> {
        self.stable
            .map(|level| level == (self.active == ActiveLevel::High))
    }
}

/// A pulse input polled from a main loop: reads the pin and feeds a
/// [`Debouncer`].
pub struct PulseInput<P> {
    pin: P,
    debouncer: Debouncer,
}

impl<P: InputPin> PulseInput<P> {
    /// Wraps `pin`.
    pub fn new(pin: P, debouncer: Debouncer) -> Self {
        PulseInput { pin, debouncer }
    }

    /// Reads the pin at `time_us`; returns whether a pulse completed.
    pub fn poll(&mut self, time_us: u64) -> Result<bool, Error<P::Error>> {
        let high = self.pin.is_high().map_err(Error::Bus)?;
        Ok(self.debouncer.sample(high, time_us))
    }

    /// The debouncer (pulse count, contact state).
    pub fn debouncer(&self) -> &Debouncer {
        &self.debouncer
    }

    /// Gives the pin back.
    pub fn destroy(self) -> P {
        self.pin
    }
}

/// Litres per pulse of one meter, held as integer microlitres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KFactor {
    ul_per_pulse: u32,
}

impl KFactor {
    /// One litre per pulse.
    pub const ONE_LITRE: KFactor = KFactor {
        ul_per_pulse: 1_000_000,
    };

    /// From litres per pulse; `None` unless finite, > 0 and ≤ 4000 L/pulse
    /// (and at least 1 µL once rounded).
    pub fn from_litres(l_per_pulse: f32) -> Option<Self> {
        if !l_per_pulse.is_finite() || l_per_pulse <= 0.0 || l_per_pulse > 4000.0 {
            return None;
        }
        let ul = (f64::from(l_per_pulse) * 1e6 + 0.5) as u32;
        (ul > 0).then_some(KFactor { ul_per_pulse: ul })
    }

    /// Microlitres per pulse.
    pub const fn microlitres(self) -> u32 {
        self.ul_per_pulse
    }

    /// Litres per pulse.
    pub fn litres(self) -> f64 {
        f64::from(self.ul_per_pulse) / 1e6
    }
}

/// Width of a hardware pulse counter, so a wrap reads as a step forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterWidth {
    mask: u32,
}

impl CounterWidth {
    /// A 16-bit timer counter.
    pub const U16: CounterWidth = CounterWidth { mask: 0xFFFF };
    /// A 32-bit counter (or [`Debouncer::pulses`]).
    pub const U32: CounterWidth = CounterWidth { mask: u32::MAX };

    /// A counter of `bits` bits (1–32).
    pub const fn bits(bits: u8) -> Option<Self> {
        match bits {
            1..=31 => Some(CounterWidth {
                mask: (1u32 << bits) - 1,
            }),
            32 => Some(CounterWidth::U32),
            _ => None,
        }
    }
}

/// A saved totaliser state that does not check out (torn write, other
/// version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptState;

/// The meter's running total, in integer microlitres.
///
/// Saved state ([`Totaliser::save`], [`SAVED_STATE_LEN`] bytes): version `1`,
/// a flag byte (bit 0: a hardware counter reading is held), two zero bytes,
/// the total in µL (`u64` LE), the last hardware counter reading (`u32` LE)
/// and a CRC-32 of the 16 bytes before it (LE). Save it to two alternating
/// slots so a torn write leaves the other one readable.
///
/// After [`Totaliser::restore`] the last counter reading is the saved one:
/// right for a counter that kept counting (external counter, backup domain);
/// a board whose counter restarts from zero calls
/// [`Totaliser::rebase_counter`] with its first reading instead. Pulses
/// between the last save and a power cut are lost unless the counter kept
/// them: save at each report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totaliser {
    total_ul: u64,
    k: KFactor,
    counter_last: Option<u32>,
}

/// Bytes of a saved [`Totaliser`] state.
pub const SAVED_STATE_LEN: usize = 20;

impl Totaliser {
    /// A totaliser at zero for a meter of K-factor `k`.
    pub const fn new(k: KFactor) -> Self {
        Totaliser {
            total_ul: 0,
            k,
            counter_last: None,
        }
    }

    /// The meter's K-factor.
    pub const fn k_factor(&self) -> KFactor {
        self.k
    }

    /// Changes the K-factor for the pulses to come; the total so far stays.
    pub fn set_k_factor(&mut self, k: KFactor) {
        self.k = k;
    }

    /// Adds `pulses` counted pulses.
    pub fn add_pulses(&mut self, pulses: u32) {
        self.total_ul = self
            .total_ul
            .saturating_add(u64::from(pulses) * u64::from(self.k.ul_per_pulse));
    }

    /// Adds the pulses a hardware counter (or [`Debouncer::pulses`]) counted
    /// since its previous reading, across a wrap of a `width` counter. The
    /// first reading only sets the baseline. Returns the pulses added.
    pub fn add_counter_reading(&mut self, raw: u32, width: CounterWidth) -> u32 {
        let raw = raw & width.mask;
        let delta = match self.counter_last {
            Some(last) => raw.wrapping_sub(last) & width.mask,
            None => 0,
        };
        self.counter_last = Some(raw);
        self.add_pulses(delta);
        delta
    }

    /// Makes `raw` the counter's baseline without adding pulses (the counter
    /// restarted from zero with the board).
    pub fn rebase_counter(&mut self, raw: u32) {
        self.counter_last = Some(raw);
    }

    /// The total, microlitres.
    pub const fn microlitres(&self) -> u64 {
        self.total_ul
    }

    /// The total in m³ (the `volume` metric).
    pub fn volume_m3(&self) -> f64 {
        self.total_ul as f64 / 1e9
    }

    /// The state to save.
    pub fn save(&self) -> [u8; SAVED_STATE_LEN] {
        let mut out = [0u8; SAVED_STATE_LEN];
        out[0] = 1;
        out[1] = u8::from(self.counter_last.is_some());
        out[4..12].copy_from_slice(&self.total_ul.to_le_bytes());
        out[12..16].copy_from_slice(&self.counter_last.unwrap_or(0).to_le_bytes());
        let crc = crc32(&out[..16]);
        out[16..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// A totaliser from a saved state, for a meter of K-factor `k`.
    pub fn restore(saved: &[u8], k: KFactor) -> Result<Self, CorruptState> {
        if saved.len() < SAVED_STATE_LEN || saved[0] != 1 || saved[1] > 1 {
            return Err(CorruptState);
        }
        let crc = u32::from_le_bytes([saved[16], saved[17], saved[18], saved[19]]);
        if crc != crc32(&saved[..16]) {
            return Err(CorruptState);
        }
        let mut total = [0u8; 8];
        total.copy_from_slice(&saved[4..12]);
        let counter = u32::from_le_bytes([saved[12], saved[13], saved[14], saved[15]]);
        Ok(Totaliser {
            total_ul: u64::from_le_bytes(total),
            k,
            counter_last: (saved[1] == 1).then_some(counter),
        })
    }
}

/// Instantaneous flow over a sliding window, from totaliser snapshots.
///
/// Push a snapshot whenever convenient (each poll, each pulse); one every
/// `window / N` is kept in the ring, so the ring always spans about the
/// window however often snapshots come.
#[derive(Debug, Clone)]
pub struct FlowWindow<const N: usize> {
    window_us: u64,
    ring: [(u64, u64); N],
    len: usize,
    next: usize,
    latest: Option<(u64, u64)>,
}

impl<const N: usize> FlowWindow<N> {
    /// A window of `window_us` microseconds.
    pub const fn new(window_us: u64) -> Self {
        FlowWindow {
            window_us,
            ring: [(0, 0); N],
            len: 0,
            next: 0,
            latest: None,
        }
    }

    /// Records the totaliser's microlitres at `time_us`.
    pub fn push(&mut self, time_us: u64, total_ul: u64) {
        self.latest = Some((time_us, total_ul));
        if N == 0 {
            return;
        }
        let spacing = self.window_us / N as u64;
        let newest = (self.next + N - 1) % N;
        if self.len > 0 && time_us < self.ring[newest].0.saturating_add(spacing) {
            return;
        }
        self.ring[self.next] = (time_us, total_ul);
        self.next = (self.next + 1) % N;
        self.len = (self.len + 1).min(N);
    }

    /// Flow in l/s between the oldest kept snapshot inside the window and the
    /// latest one; `None` until two snapshots span some time.
    pub fn flow_l_s(&self) -> Option<f64> {
        let (t1, v1) = self.latest?;
        let start = t1.saturating_sub(self.window_us);
        let oldest = (self.next + N - self.len) % N.max(1);
        let (t0, v0) = (0..self.len)
            .map(|i| self.ring[(oldest + i) % N])
            .find(|&(t, _)| t >= start && t < t1)?;
        // µL per µs is L per s.
        Some(v1.saturating_sub(v0) as f64 / (t1 - t0) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTransaction};
    use embedded_hal_mock::eh1::MockError;

    const MS: u64 = 1000;

    fn reed() -> Debouncer {
        Debouncer::new(5_000, ActiveLevel::Low)
    }

    #[test]
    fn contact_bounce_shorter_than_the_debounce_time_counts_one_pulse() {
        let mut d = reed();
        let mut t = 0;
        d.sample(true, t);
        t += 10 * MS;
        d.sample(true, t);
        // Closing bounces: low/high/low within 3 ms, then holds low.
        for (i, level) in [false, true, false, true, false].into_iter().enumerate() {
            d.sample(level, t + i as u64 * 600);
        }
        t += 3 * MS;
        for k in 0..10 {
            d.sample(false, t + k * MS);
        }
        assert_eq!(d.pulses(), 1);
        assert_eq!(d.closed(), Some(true));
        // Opening bounces, then holds high: no pulse.
        t += 20 * MS;
        for (i, level) in [true, false, true].into_iter().enumerate() {
            d.sample(level, t + i as u64 * 500);
        }
        d.sample(true, t + 20 * MS);
        assert_eq!(d.pulses(), 1);
        assert_eq!(d.closed(), Some(false));
    }

    #[test]
    fn a_glitch_shorter_than_the_debounce_time_is_not_a_pulse() {
        let mut d = reed();
        d.sample(true, 0);
        d.sample(true, 10 * MS);
        d.sample(false, 11 * MS);
        d.sample(true, 13 * MS);
        d.sample(true, 30 * MS);
        assert_eq!(d.pulses(), 0);
    }

    #[test]
    fn a_contact_already_closed_at_start_is_not_a_pulse() {
        let mut d = reed();
        d.sample(false, 0);
        d.sample(false, 10 * MS);
        assert_eq!(d.closed(), Some(true));
        assert_eq!(d.pulses(), 0);
        d.sample(true, 20 * MS);
        d.sample(true, 30 * MS);
        d.sample(false, 40 * MS);
        assert!(d.tick(50 * MS));
        assert_eq!(d.pulses(), 1);
    }

    #[test]
    fn edges_from_an_interrupt_count_once_the_level_has_held() {
        let mut d = Debouncer::new(5_000, ActiveLevel::High);
        d.edge(false, 0);
        assert!(!d.tick(6 * MS));
        // Rising edge with bounce, then quiet.
        d.edge(true, 100 * MS);
        d.edge(false, 100 * MS + 200);
        d.edge(true, 100 * MS + 400);
        assert!(!d.tick(103 * MS));
        assert!(d.tick(106 * MS));
        assert!(!d.tick(200 * MS));
        assert_eq!(d.pulses(), 1);
    }

    #[test]
    fn the_poll_loop_reads_the_pin_and_debounces() {
        // Open, open, closed (bounce: open), closed, closed, open, open.
        let levels = [
            State::High,
            State::High,
            State::Low,
            State::High,
            State::Low,
            State::Low,
            State::High,
            State::High,
        ];
        let expectations: [PinTransaction; 8] = levels.map(PinTransaction::get);
        let pin = PinMock::new(&expectations);
        let mut input = PulseInput::new(pin, reed());
        let times = [0, 10, 20, 21, 22, 30, 40, 50].map(|ms| ms * MS);
        let mut pulses = 0;
        for t in times {
            pulses += u32::from(input.poll(t).unwrap());
        }
        assert_eq!(pulses, 1);
        assert_eq!(input.debouncer().pulses(), 1);
        input.destroy().done();
    }

    #[test]
    fn a_pin_error_is_a_bus_error() {
        let pin =
            PinMock::new(&[PinTransaction::get(State::High)
                .with_error(MockError::Io(std::io::ErrorKind::Other))]);
        let mut input = PulseInput::new(pin, reed());
        assert!(matches!(input.poll(0), Err(Error::Bus(_))));
        input.destroy().done();
    }

    #[test]
    fn the_k_factor_turns_pulses_into_cubic_metres() {
        let mut t = Totaliser::new(KFactor::from_litres(2.5).unwrap());
        t.add_pulses(400);
        assert_eq!(t.microlitres(), 1_000_000_000);
        assert!((t.volume_m3() - 1.0).abs() < 1e-12);
        assert_eq!(KFactor::from_litres(0.0), None);
        assert_eq!(KFactor::from_litres(-1.0), None);
        assert_eq!(KFactor::from_litres(f32::NAN), None);
    }

    #[test]
    fn a_16_bit_counter_wrap_is_a_step_forward() {
        let mut t = Totaliser::new(KFactor::from_litres(1.0).unwrap());
        assert_eq!(t.add_counter_reading(65_530, CounterWidth::U16), 0);
        assert_eq!(t.add_counter_reading(4, CounterWidth::U16), 10);
        assert_eq!(t.add_counter_reading(4, CounterWidth::U16), 0);
        assert_eq!(t.microlitres(), 10_000_000);
    }

    #[test]
    fn a_32_bit_counter_wrap_is_a_step_forward() {
        let mut t = Totaliser::new(KFactor::from_litres(1.0).unwrap());
        t.add_counter_reading(u32::MAX - 1, CounterWidth::U32);
        assert_eq!(t.add_counter_reading(3, CounterWidth::U32), 5);
        let w24 = CounterWidth::bits(24).unwrap();
        let mut u = Totaliser::new(KFactor::from_litres(1.0).unwrap());
        u.add_counter_reading(0xFF_FFFF, w24);
        assert_eq!(u.add_counter_reading(1, w24), 2);
    }

    #[test]
    fn the_totaliser_survives_a_restart() {
        let k = KFactor::from_litres(1.0).unwrap();
        let mut before = Totaliser::new(k);
        before.add_counter_reading(65_000, CounterWidth::U16);
        before.add_counter_reading(65_500, CounterWidth::U16);
        let saved = before.save();
        let mut after = Totaliser::restore(&saved, k).unwrap();
        assert_eq!(after, before);
        // The counter kept counting across the restart, and wrapped.
        assert_eq!(after.add_counter_reading(100, CounterWidth::U16), 136);
        assert_eq!(after.microlitres(), 636_000_000);
        // A board whose counter restarted at zero rebases instead.
        let mut rebased = Totaliser::restore(&saved, k).unwrap();
        rebased.rebase_counter(0);
        assert_eq!(rebased.add_counter_reading(7, CounterWidth::U16), 7);
    }

    #[test]
    fn a_torn_saved_state_is_refused() {
        let k = KFactor::from_litres(1.0).unwrap();
        let mut t = Totaliser::new(k);
        t.add_pulses(12);
        let mut saved = t.save();
        saved[6] ^= 0x10;
        assert_eq!(Totaliser::restore(&saved, k), Err(CorruptState));
        assert_eq!(Totaliser::restore(&[0xFF; 20], k), Err(CorruptState));
        assert_eq!(Totaliser::restore(&saved[..10], k), Err(CorruptState));
    }

    #[test]
    fn flow_is_the_volume_over_the_window() {
        let mut w: FlowWindow<8> = FlowWindow::new(60_000_000);
        assert_eq!(w.flow_l_s(), None);
        // 2 l/s: 2 000 000 µL per second, snapshots each second for 3 minutes.
        for s in 0..=180u64 {
            w.push(s * 1_000_000, s * 2_000_000);
        }
        let f = w.flow_l_s().unwrap();
        assert!((f - 2.0).abs() < 1e-9, "{f}");
        // Flow stops: after a full window the flow is zero.
        for s in 181..=260u64 {
            w.push(s * 1_000_000, 180 * 2_000_000);
        }
        assert_eq!(w.flow_l_s(), Some(0.0));
    }
}
