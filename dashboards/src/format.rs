//! Chilean number, money and date formatting (es-CL conventions, used for
//! both languages: the figures are Chilean and read alongside Chilean
//! documents).
//!
//! - thousands separated by `.`, decimals by `,`: `21.092`, `0,35`;
//! - pesos without decimals, sign and a space before: `$ 5.071.159.500`;
//! - dates and times as `dd-mm-yyyy HH:MM` in the local time the caller
//!   supplies. The view models carry `DateTime<FixedOffset>`: the server
//!   converts from UTC to America/Santiago (it owns the time-zone database),
//!   so this crate needs none.

use chrono::{DateTime, FixedOffset};

/// An integer with `.` between thousands: `-1234567` → `-1.234.567`.
pub fn int(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if v < 0 {
        out.push('-');
    }
    group_into(&digits, &mut out);
    out
}

fn group_into(digits: &str, out: &mut String) {
    let n = digits.len();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (n - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
}

/// A decimal number with `decimals` places, `.` thousands and `,` decimals:
/// `dec(1234.567, 2)` → `1.234,57`. Not-a-number and infinities print as `—`.
pub fn dec(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "—".to_string();
    }
    // Half away from zero (what people expect: 97,25 → 97,3), not the
    // ties-to-even of `format!`.
    let scaled = (v.abs() * 10f64.powi(decimals as i32)).round();
    let mut digits = format!("{scaled:.0}");
    if digits.len() <= decimals {
        digits = format!("{}{digits}", "0".repeat(decimals + 1 - digits.len()));
    }
    let (int_part, frac) = digits.split_at(digits.len() - decimals);
    let frac = (decimals > 0).then_some(frac);
    let s = digits.as_str();
    let mut out = String::with_capacity(s.len() + 4);
    // "-0,00" reads oddly: only a value that rounds to non-zero keeps its sign.
    if v < 0.0 && s.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        out.push('-');
    }
    group_into(int_part, &mut out);
    if let Some(f) = frac {
        out.push(',');
        out.push_str(f);
    }
    out
}

/// Chilean pesos, no decimals: `5071159500` → `$ 5.071.159.500`.
pub fn clp(v: u64) -> String {
    let mut out = String::from("$ ");
    group_into(&v.to_string(), &mut out);
    out
}

/// A percentage with one decimal: `97.25` → `97,3 %`.
pub fn percent(v: f64) -> String {
    format!("{} %", dec(v, 1))
}

/// Local date and time, `dd-mm-yyyy HH:MM`.
pub fn datetime(t: &DateTime<FixedOffset>) -> String {
    t.format("%d-%m-%Y %H:%M").to_string()
}

/// Local date, `dd-mm-yyyy`.
pub fn date(t: &DateTime<FixedOffset>) -> String {
    t.format("%d-%m-%Y").to_string()
}

/// The value of an `<input type="datetime-local">`: `yyyy-mm-ddTHH:MM`.
pub fn datetime_input(t: &DateTime<FixedOffset>) -> String {
    t.format("%Y-%m-%dT%H:%M").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn integers_group_thousands_with_dots() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1000), "1.000");
        assert_eq!(int(21092), "21.092");
        assert_eq!(int(-1234567), "-1.234.567");
        assert_eq!(int(i64::MIN), "-9.223.372.036.854.775.808");
    }

    #[test]
    fn decimals_use_a_comma_and_round() {
        assert_eq!(dec(0.2, 1), "0,2");
        assert_eq!(dec(1234.567, 2), "1.234,57");
        assert_eq!(dec(-1234.5, 0), "-1.235");
        assert_eq!(dec(-0.001, 2), "0,00");
        assert_eq!(dec(1_000_000.0, 1), "1.000.000,0");
        assert_eq!(dec(f64::NAN, 1), "—");
    }

    #[test]
    fn pesos_have_no_decimals_and_a_dollar_sign() {
        assert_eq!(clp(5_071_159_500), "$ 5.071.159.500");
        assert_eq!(clp(52_740_058_800), "$ 52.740.058.800");
        assert_eq!(clp(0), "$ 0");
        assert_eq!(percent(97.25), "97,3 %");
    }

    #[test]
    fn dates_print_day_month_year_in_the_given_local_time() {
        let santiago_summer = FixedOffset::west_opt(3 * 3600).unwrap();
        let utc = chrono::Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 0).unwrap();
        let local = utc.with_timezone(&santiago_summer);
        assert_eq!(datetime(&local), "02-01-2025 00:04");
        assert_eq!(date(&local), "02-01-2025");
        assert_eq!(datetime_input(&local), "2025-01-02T00:04");
    }
}
