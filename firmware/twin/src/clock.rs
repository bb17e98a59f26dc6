//! Simulated time and the local time of a Chilean APR.
//!
//! The twin never sleeps: a model is stepped from one simulated instant to
//! the next (seconds since the Unix epoch, `f64`), as fast as the CPU goes.
//!
//! Local time is America/Santiago by a fixed rule instead of a time-zone
//! database (no `chrono-tz` in the tree): standard time UTC−4, summer time
//! UTC−3 from the first Sunday of September to the first Sunday of April,
//! switching at 04:00 UTC (midnight local, the rule in force since 2019). The
//! odd years the government moved a date (2022) are off by up to a week,
//! which shifts a demand curve by one hour on those days and nothing else.

/// Seconds in a day.
pub const DAY_S: f64 = 86_400.0;

/// A local calendar position, what demand curves depend on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalTime {
    /// Hour of the day with fraction, 0 ≤ h < 24.
    pub hour: f64,
    /// Day of the week, Monday = 0 … Sunday = 6.
    pub weekday: u8,
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Weekday (Monday = 0) of a day count since 1970-01-01 (a Thursday).
pub fn weekday(days: i64) -> u8 {
    (days + 3).rem_euclid(7) as u8
}

/// Day count of the first Sunday of a month.
fn first_sunday(y: i64, m: u32) -> i64 {
    let first = days_from_civil(y, m, 1);
    first + i64::from((6 + 7 - weekday(first)) % 7)
}

/// America/Santiago's offset from UTC at `t`, seconds (−3 h or −4 h).
pub fn santiago_offset_s(t: f64) -> f64 {
    let days = (t / DAY_S).floor() as i64;
    let (y, _, _) = civil_from_days(days);
    let switch = |d: i64| d as f64 * DAY_S + 4.0 * 3600.0;
    let summer_ends = switch(first_sunday(y, 4));
    let summer_starts = switch(first_sunday(y, 9));
    if t < summer_ends || t >= summer_starts {
        -3.0 * 3600.0
    } else {
        -4.0 * 3600.0
    }
}

/// The local time at `t`.
pub fn local_time(t: f64) -> LocalTime {
    let local = t + santiago_offset_s(t);
    let days = (local / DAY_S).floor();
    LocalTime {
        hour: (local - days * DAY_S) / 3600.0,
        weekday: weekday(days as i64),
    }
}

/// The UTC instant of local midnight starting the local day that holds `t`.
pub fn local_midnight(t: f64) -> f64 {
    let off = santiago_offset_s(t);
    let local = t + off;
    (local / DAY_S).floor() * DAY_S - off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn santiago_is_utc_minus_3_in_january_and_minus_4_in_july() {
        // 2025-01-15 12:00 UTC and 2025-07-15 12:00 UTC.
        let jan = days_from_civil(2025, 1, 15) as f64 * DAY_S + 43_200.0;
        let jul = days_from_civil(2025, 7, 15) as f64 * DAY_S + 43_200.0;
        assert_eq!(santiago_offset_s(jan), -3.0 * 3600.0);
        assert_eq!(santiago_offset_s(jul), -4.0 * 3600.0);
        assert!((local_time(jan).hour - 9.0).abs() < 1e-9);
        assert!((local_time(jul).hour - 8.0).abs() < 1e-9);
        // 2025-01-15 was a Wednesday.
        assert_eq!(local_time(jan).weekday, 2);
    }

    #[test]
    fn summer_time_switches_on_the_first_sundays_of_april_and_september() {
        // 2025: Sunday 6 April and Sunday 7 September.
        assert_eq!(first_sunday(2025, 4), days_from_civil(2025, 4, 6));
        assert_eq!(first_sunday(2025, 9), days_from_civil(2025, 9, 7));
        let apr6 = days_from_civil(2025, 4, 6) as f64 * DAY_S;
        assert_eq!(santiago_offset_s(apr6 + 3.0 * 3600.0), -3.0 * 3600.0);
        assert_eq!(santiago_offset_s(apr6 + 5.0 * 3600.0), -4.0 * 3600.0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn local_midnight_is_at_hour_zero_of_the_same_local_day() {
        let t = days_from_civil(2025, 3, 3) as f64 * DAY_S + 10.0 * 3600.0;
        let m = local_midnight(t);
        assert!(local_time(m).hour.abs() < 1e-9);
        assert!(t - m < DAY_S && t >= m);
    }
}
