//! Spike-rejecting aggregation of one metric's readings over a report
//! interval, in a fixed-capacity buffer (no allocator).
//!
//! A probe's single wild reading (a bubble past a turbidity window, a
//! relay switching next to a loop) must not become the interval's value: the
//! interval reports the median, or a trimmed mean that drops the highest and
//! lowest share of readings before averaging. Sensor faults (NAMUR) are
//! counted, never averaged in.

/// How an interval's readings become its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The middle reading (mean of the two middle ones for an even count).
    Median,
    /// The mean after dropping `percent` % of the readings at each end
    /// (rounded down; 0–49). 0 is the plain mean.
    TrimmedMean {
        /// Share trimmed from each end, percent.
        percent: u8,
    },
}

/// An interval's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The aggregated value.
    pub value: f32,
    /// Readings it was made from.
    pub samples: u16,
    /// Readings refused in the interval: sensor faults and non-finite values.
    pub faults: u16,
    /// Readings that did not fit the buffer (the oldest were overwritten).
    pub overwritten: u16,
}

/// Readings of one metric for the current interval, at most `N`.
#[derive(Debug, Clone)]
pub struct Aggregate<const N: usize> {
    values: [f32; N],
    len: usize,
    next: usize,
    faults: u16,
    overwritten: u16,
}

impl<const N: usize> Default for Aggregate<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Aggregate<N> {
    /// An empty interval.
    pub const fn new() -> Self {
        Aggregate {
            values: [0.0; N],
            len: 0,
            next: 0,
            faults: 0,
            overwritten: 0,
        }
    }

    /// Adds a reading. A non-finite value is counted as a fault. When full,
    /// the oldest reading makes room.
    pub fn push(&mut self, v: f32) {
        if !v.is_finite() {
            self.push_fault();
            return;
        }
        if N == 0 {
            self.overwritten = self.overwritten.saturating_add(1);
            return;
        }
        if self.len == N {
            self.overwritten = self.overwritten.saturating_add(1);
        } else {
            self.len += 1;
        }
        self.values[self.next] = v;
        self.next = (self.next + 1) % N;
    }

    /// Counts a reading the instrument could not give (a sensor fault).
    pub fn push_fault(&mut self) {
        self.faults = self.faults.saturating_add(1);
    }

    /// Readings held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no reading is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The interval's value so far; `None` without a reading.
    pub fn summary(&self, method: Method) -> Option<Summary> {
        if self.len == 0 {
            return None;
        }
        let mut sorted = self.values;
        let sorted = &mut sorted[..self.len];
        // Insertion sort: N is small and every value is finite.
        for i in 1..sorted.len() {
            let mut j = i;
            while j > 0 && sorted[j - 1] > sorted[j] {
                sorted.swap(j - 1, j);
                j -= 1;
            }
        }
        let n = sorted.len();
        let value = match method {
            Method::Median if n % 2 == 1 => sorted[n / 2],
            Method::Median => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
            Method::TrimmedMean { percent } => {
                let k = n * usize::from(percent.min(49)) / 100;
                let kept = &sorted[k..n - k];
                kept.iter().sum::<f32>() / kept.len() as f32
            }
        };
        Some(Summary {
            value,
            samples: n as u16,
            faults: self.faults,
            overwritten: self.overwritten,
        })
    }

    /// The interval's value, and a fresh interval.
    pub fn take(&mut self, method: Method) -> Option<Summary> {
        let s = self.summary(method);
        *self = Self::new();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_ignores_a_single_spike() {
        let mut a: Aggregate<16> = Aggregate::new();
        for v in [0.51, 0.49, 0.50, 9.9, 0.52, 0.48, 0.50] {
            a.push(v);
        }
        let s = a.summary(Method::Median).unwrap();
        assert_eq!(s.value, 0.50);
        assert_eq!(s.samples, 7);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let mut a: Aggregate<8> = Aggregate::new();
        for v in [4.0, 1.0, 3.0, 2.0] {
            a.push(v);
        }
        assert_eq!(a.summary(Method::Median).unwrap().value, 2.5);
    }

    #[test]
    fn a_trimmed_mean_drops_the_extremes_at_both_ends() {
        let mut a: Aggregate<16> = Aggregate::new();
        for v in [
            10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 500.0, -400.0,
        ] {
            a.push(v);
        }
        // 10 % of 10 readings: one dropped at each end.
        let s = a.summary(Method::TrimmedMean { percent: 10 }).unwrap();
        assert_eq!(s.value, 10.0);
        // The plain mean is pulled by the spikes.
        let plain = a.summary(Method::TrimmedMean { percent: 0 }).unwrap();
        assert_eq!(plain.value, 18.0);
    }

    #[test]
    fn faults_are_counted_and_never_averaged_in() {
        let mut a: Aggregate<4> = Aggregate::new();
        a.push(1.0);
        a.push_fault();
        a.push(f32::NAN);
        a.push(3.0);
        let s = a.summary(Method::TrimmedMean { percent: 0 }).unwrap();
        assert_eq!((s.value, s.samples, s.faults), (2.0, 2, 2));
    }

    #[test]
    fn a_full_buffer_keeps_the_newest_readings() {
        let mut a: Aggregate<3> = Aggregate::new();
        for v in [100.0, 1.0, 2.0, 3.0] {
            a.push(v);
        }
        let s = a.summary(Method::TrimmedMean { percent: 0 }).unwrap();
        assert_eq!((s.value, s.samples, s.overwritten), (2.0, 3, 1));
    }

    #[test]
    fn taking_the_summary_starts_a_new_interval() {
        let mut a: Aggregate<4> = Aggregate::new();
        assert_eq!(a.take(Method::Median), None);
        a.push(5.0);
        a.push_fault();
        assert_eq!(a.take(Method::Median).unwrap().value, 5.0);
        assert!(a.is_empty());
        assert_eq!(a.summary(Method::Median), None);
        a.push(6.0);
        assert_eq!(a.summary(Method::Median).unwrap().faults, 0);
    }
}
