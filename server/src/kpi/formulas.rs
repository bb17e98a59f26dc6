//! Every KPI formula, each a pure function over points (time in ms, value)
//! with its source. Series are sorted by time; times are device times.
//!
//! | KPI | formula | source |
//! | --- | --- | --- |
//! | produced volume | Σ positive steps of the `volume` totaliser (a step down is a reset: the new register counts from 0), else ∫ flow dt | IWA water balance: system input volume |
//! | consumption | produced − Δ storage (tank level × storage volume) | IWA water balance (authorised consumption + losses) |
//! | minimum night flow | min `flow` in 02:00–04:00 local | IWA practice (MNF) |
//! | night consumption | (produced − Δ storage) over the night window ÷ its duration | IWA practice; the macro-meter measures production and the pump cycles |
//! | leakage | night consumption − legitimate night use (a share of it) | IWA practice (MNF − legitimate night use, 10–30 %) |
//! | non-revenue water | system input − billed authorised consumption, also L/connection/day | IWA water balance |
//! | continuity | hours with data in which the mean pressure ≥ the minimum and the mean tank level ≥ its low level, counted as 24 − failed hours | NCh 691 (15 m.c.a.), IWA continuity of service |
//! | chlorine compliance | share of readings within 0.2–2.0 mg/L; days without a valid reading | NCh 409/1 Of.2005 |
//! | peak-day factor | max daily consumption ÷ mean daily consumption over the window | DOH design practice (coefficients per APR) |
//! | peak-hour factor | max hourly consumption ÷ mean hourly consumption of the day | DOH design practice |
//! | capacity utilisation | peak-day mean consumption flow ÷ production capacity | programme |
//! | storage hours | storage ÷ peak-day mean hourly consumption | DOH design practice (tank sizing) |
//! | pump hours | time with the pump running (state held until the next reading, at most 15 min) | programme |

use crate::store::Point;

/// The longest a state or a flow is held between two readings, ms: a gap
/// beyond it counts only this much (a device silent is not a pump running).
pub const MAX_HOLD_MS: i64 = 15 * 60 * 1000;

/// Produced volume, m³, from a totaliser's readings: the sum of the steps
/// between consecutive readings whose later reading is at or after
/// `from_ms` (so the first step may start before, giving the volume since
/// the previous reading) and before `to_ms`. A step down is a reset or a
/// wrap of the register: the new value is counted as the volume since 0.
/// `None` without at least two readings. **IWA water balance** (system input
/// volume).
pub fn produced_volume_m3(volume: &[Point], from_ms: i64, to_ms: i64) -> Option<f64> {
    let mut total = 0.0;
    let mut steps = 0;
    for w in volume.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.t_ms < from_ms || b.t_ms >= to_ms {
            continue;
        }
        let d = b.v - a.v;
        total += if d >= 0.0 { d } else { b.v.max(0.0) };
        steps += 1;
    }
    (steps > 0).then_some(total)
}

/// Produced volume, m³, as ∫ flow dt (l/s) over `[from_ms, to_ms)`, each
/// reading held until the next (at most [`MAX_HOLD_MS`]). The fallback when
/// there is no totaliser. **IWA water balance.**
pub fn integrated_flow_m3(flow: &[Point], from_ms: i64, to_ms: i64) -> Option<f64> {
    let held = held_intervals(flow, from_ms, to_ms);
    if held.is_empty() {
        return None;
    }
    Some(
        held.iter()
            .map(|(v, ms)| v * *ms as f64 / 1000.0)
            .sum::<f64>()
            / 1000.0,
    )
}

/// Each reading with the time it holds inside `[from_ms, to_ms)`, ms.
fn held_intervals(points: &[Point], from_ms: i64, to_ms: i64) -> Vec<(f64, i64)> {
    let mut out = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let next = points.get(i + 1).map_or(to_ms, |n| n.t_ms);
        let start = p.t_ms.max(from_ms);
        let end = next.min(p.t_ms + MAX_HOLD_MS).min(to_ms);
        if end > start {
            out.push((p.v, end - start));
        }
    }
    out
}

/// The mean of the readings within `half_ms` of `t_ms`; `None` without any.
pub fn level_at(points: &[Point], t_ms: i64, half_ms: i64) -> Option<f64> {
    mean(
        points
            .iter()
            .filter(|p| (p.t_ms - t_ms).abs() <= half_ms)
            .map(|p| p.v),
    )
}

/// Consumption, m³: produced volume minus the change in storage, with the
/// tank level in % of `storage_m3`. **IWA water balance** (what left the
/// tank for the network = input − Δ storage).
pub fn consumption_m3(
    produced_m3: f64,
    level_start_pct: f64,
    level_end_pct: f64,
    storage_m3: f64,
) -> f64 {
    produced_m3 - (level_end_pct - level_start_pct) / 100.0 * storage_m3
}

/// Mean flow over a duration, l/s, from a volume in m³.
pub fn mean_flow_l_s(volume_m3: f64, duration_ms: i64) -> f64 {
    if duration_ms <= 0 {
        return 0.0;
    }
    volume_m3 * 1000.0 / (duration_ms as f64 / 1000.0)
}

/// Minimum night flow, l/s: the lowest reading in `[from_ms, to_ms)` (the
/// night window 02:00–04:00 local), provided there are at least
/// `min_readings` (night-flow analysis needs readings at ≤ 15 min).
/// **IWA practice** (MNF).
pub fn minimum_night_flow_l_s(
    flow: &[Point],
    from_ms: i64,
    to_ms: i64,
    min_readings: usize,
) -> Option<f64> {
    let inside: Vec<f64> = flow
        .iter()
        .filter(|p| (from_ms..to_ms).contains(&p.t_ms))
        .map(|p| p.v)
        .collect();
    if inside.len() < min_readings.max(1) {
        return None;
    }
    inside.into_iter().reduce(f64::min)
}

/// Estimated leakage, l/s: night consumption minus legitimate night use,
/// taken as `legitimate_share` of it. **IWA practice**: leakage ≈ MNF −
/// legitimate night use, first estimate 10–30 % of MNF.
pub fn leakage_l_s(night_consumption_l_s: f64, legitimate_share: f64) -> f64 {
    (night_consumption_l_s * (1.0 - legitimate_share.clamp(0.0, 1.0))).max(0.0)
}

/// Non-revenue water, m³: system input minus billed authorised consumption.
/// **IWA water balance.**
pub fn non_revenue_water_m3(input_m3: f64, billed_m3: f64) -> f64 {
    input_m3 - billed_m3
}

/// Non-revenue water per connection and day, litres. **IWA** (preferred to
/// a percentage of input). `None` without connections or days.
pub fn nrw_l_per_connection_day(nrw_m3: f64, connections: u64, days: f64) -> Option<f64> {
    (connections > 0 && days > 0.0).then(|| nrw_m3 * 1000.0 / connections as f64 / days)
}

/// Hourly means of a series over `hours` consecutive hours from `from_ms`;
/// `None` for an hour without a reading.
pub fn hourly_means(points: &[Point], from_ms: i64, hours: usize) -> Vec<Option<f64>> {
    let mut sums = vec![(0.0, 0u32); hours];
    for p in points {
        let h = (p.t_ms - from_ms).div_euclid(3_600_000);
        if let Some(s) = usize::try_from(h).ok().and_then(|h| sums.get_mut(h)) {
            s.0 += p.v;
            s.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(s, n)| (n > 0).then(|| s / f64::from(n)))
        .collect()
}

/// Continuity of service, hours: 24 − the hours (with data) whose mean
/// pressure is below `pressure_min` or whose mean tank level is below
/// `tank_low`. Hours without data are not counted as interrupted (a silent
/// device is a diagnosis matter, not an outage). **NCh 691** (15 m.c.a.)
/// and IWA continuity of service.
pub fn continuity_h(
    pressure_hourly: &[Option<f64>],
    tank_hourly: &[Option<f64>],
    pressure_min: f64,
    tank_low: f64,
) -> f64 {
    let failed = pressure_hourly
        .iter()
        .zip(tank_hourly)
        .filter(|(p, t)| p.is_some_and(|p| p < pressure_min) || t.is_some_and(|t| t < tank_low))
        .count();
    pressure_hourly.len() as f64 - failed as f64
}

/// Chlorine compliance, %: the share of readings within `[min, max]`.
/// `None` without readings. **NCh 409/1 Of.2005** (0.2–2.0 mg/L).
pub fn chlorine_compliance_pct(chlorine: &[Point], min: f64, max: f64) -> Option<f64> {
    if chlorine.is_empty() {
        return None;
    }
    let ok = chlorine
        .iter()
        .filter(|p| (min..=max).contains(&p.v))
        .count();
    Some(100.0 * ok as f64 / chlorine.len() as f64)
}

/// Days without a valid reading: days whose count of valid readings is 0.
/// **NCh 409/1**: the sanitary authority counts them as non-compliance.
pub fn days_without_reading(readings_per_day: &[f64]) -> u32 {
    readings_per_day.iter().filter(|n| **n <= 0.0).count() as u32
}

/// The mean of values; `None` when empty.
pub fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (s, n) = values
        .into_iter()
        .fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| s / f64::from(n))
}

/// The population standard deviation of values; `None` when empty.
pub fn std_dev(values: &[f64]) -> Option<f64> {
    let m = mean(values.iter().copied())?;
    mean(values.iter().map(|v| (v - m) * (v - m))).map(f64::sqrt)
}

/// Peak factor: the largest value over the mean (peak-day factor over
/// daily consumption, peak-hour factor over hourly consumption). `None`
/// when empty or the mean is not positive. **DOH design practice.**
pub fn peak_factor(values: &[f64]) -> Option<f64> {
    let m = mean(values.iter().copied())?;
    let max = values.iter().copied().reduce(f64::max)?;
    (m > 0.0).then(|| max / m)
}

/// Production capacity utilisation on the peak day, %: the peak day's mean
/// consumption flow over the capacity. `None` without a capacity.
pub fn capacity_utilisation_pct(peak_day_m3: f64, capacity_l_s: f64) -> Option<f64> {
    (capacity_l_s > 0.0).then(|| 100.0 * mean_flow_l_s(peak_day_m3, 86_400_000) / capacity_l_s)
}

/// Storage as hours of peak-day demand: storage over the peak day's mean
/// hourly consumption. `None` without consumption. **DOH design practice**
/// (tank sizing).
pub fn storage_hours(storage_m3: f64, peak_day_m3: f64) -> Option<f64> {
    (peak_day_m3 > 0.0).then(|| storage_m3 / (peak_day_m3 / 24.0))
}

/// Pump hours in `[from_ms, to_ms)`: each pump reading (1 running, 0
/// stopped) held until the next, at most [`MAX_HOLD_MS`].
pub fn pump_hours(pump: &[Point], from_ms: i64, to_ms: i64) -> f64 {
    held_intervals(pump, from_ms, to_ms)
        .iter()
        .filter(|(v, _)| *v >= 0.5)
        .map(|(_, ms)| *ms as f64 / 3_600_000.0)
        .sum()
}

/// The longest time between consecutive readings in `[from_ms, to_ms)`,
/// including from `from_ms` to the first and from the last to `to_ms`,
/// hours.
pub fn longest_gap_h(points: &[Point], from_ms: i64, to_ms: i64) -> f64 {
    let mut last = from_ms;
    let mut gap = 0;
    for p in points.iter().filter(|p| (from_ms..to_ms).contains(&p.t_ms)) {
        gap = gap.max(p.t_ms - last);
        last = p.t_ms;
    }
    gap = gap.max(to_ms - last);
    gap as f64 / 3_600_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const M: i64 = 60_000;

    fn pts(v: &[(i64, f64)]) -> Vec<Point> {
        v.iter().map(|&(t_ms, v)| Point { t_ms, v }).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn produced_volume_sums_steps_and_counts_a_reset_from_zero() {
        // 100 → 103 (3) → 110 (7) → reset to 2 (2) → 5 (3): 15 m³; the step
        // ending before `from` is not counted.
        let v = pts(&[
            (-H, 90.0),
            (0, 100.0),
            (H, 103.0),
            (2 * H, 110.0),
            (3 * H, 2.0),
            (4 * H, 5.0),
        ]);
        close(produced_volume_m3(&v, 1, 5 * H).unwrap(), 15.0);
        // From 0 the step 90 → 100 (ending at 0) counts too.
        close(produced_volume_m3(&v, 0, 5 * H).unwrap(), 25.0);
        assert_eq!(produced_volume_m3(&v[..1], 0, H), None);
    }

    #[test]
    fn integrated_flow_holds_each_reading_at_most_fifteen_minutes() {
        // 2 l/s for 10 min = 1.2 m³, then 1 l/s held 15 min (gap of an hour)
        // = 0.9 m³.
        let f = pts(&[(0, 2.0), (10 * M, 1.0), (70 * M, 0.0)]);
        close(integrated_flow_m3(&f, 0, 80 * M).unwrap(), 2.1);
    }

    #[test]
    fn consumption_is_production_minus_the_change_in_storage() {
        // 10 m³ produced, tank 50 % → 40 % of 20 m³ (−2 m³): 12 m³ consumed.
        close(consumption_m3(10.0, 50.0, 40.0, 20.0), 12.0);
        // 12 m³ over 2 h = 1.6667 l/s.
        close(mean_flow_l_s(12.0, 2 * H), 12_000.0 / 7200.0);
    }

    #[test]
    fn minimum_night_flow_needs_enough_readings() {
        let f = pts(&[
            (2 * H, 0.5),
            (2 * H + 15 * M, 0.3),
            (3 * H, 0.4),
            (4 * H, 0.1),
        ]);
        close(minimum_night_flow_l_s(&f, 2 * H, 4 * H, 3).unwrap(), 0.3);
        assert_eq!(minimum_night_flow_l_s(&f, 2 * H, 4 * H, 4), None);
    }

    #[test]
    fn leakage_is_night_use_minus_its_legitimate_share() {
        close(leakage_l_s(0.5, 0.2), 0.4);
        close(leakage_l_s(0.5, 1.5), 0.0);
    }

    #[test]
    fn non_revenue_water_per_connection_and_day() {
        // 3,100 m³ in, 2,480 m³ billed: 620 m³ over 31 days and 100
        // connections = 200 L/connection/day.
        let nrw = non_revenue_water_m3(3100.0, 2480.0);
        close(nrw, 620.0);
        close(nrw_l_per_connection_day(nrw, 100, 31.0).unwrap(), 200.0);
        assert_eq!(nrw_l_per_connection_day(nrw, 0, 31.0), None);
    }

    #[test]
    fn continuity_counts_failed_hours_with_data_only() {
        let p = [Some(20.0), Some(14.0), None, Some(18.0)];
        let t = [Some(50.0), Some(50.0), Some(10.0), None];
        // Hour 1 fails on pressure; hour 2 has no pressure but its tank is
        // low (fails); hour 3 passes.
        close(continuity_h(&p, &t, 15.0, 20.0), 2.0);
    }

    #[test]
    fn hourly_means_bucket_by_hour() {
        let p = pts(&[(0, 1.0), (30 * M, 3.0), (2 * H, 5.0)]);
        assert_eq!(hourly_means(&p, 0, 3), vec![Some(2.0), None, Some(5.0)]);
    }

    #[test]
    fn chlorine_compliance_counts_readings_within_the_range() {
        let c = pts(&[(0, 0.1), (1, 0.2), (2, 1.0), (3, 2.0), (4, 2.5)]);
        close(chlorine_compliance_pct(&c, 0.2, 2.0).unwrap(), 60.0);
        assert_eq!(chlorine_compliance_pct(&[], 0.2, 2.0), None);
        assert_eq!(days_without_reading(&[96.0, 0.0, 3.0, 0.0]), 2);
    }

    #[test]
    fn spread_and_peak_factors() {
        close(std_dev(&[1.0, 3.0]).unwrap(), 1.0);
        // Days of 60, 80, 100 m³: mean 80, peak-day factor 1.25.
        close(peak_factor(&[60.0, 80.0, 100.0]).unwrap(), 1.25);
        assert_eq!(peak_factor(&[0.0, 0.0]), None);
    }

    #[test]
    fn capacity_utilisation_and_storage_hours_on_the_peak_day() {
        // 86.4 m³ in a day = 1 l/s mean; capacity 1.25 l/s: 80 %.
        close(capacity_utilisation_pct(86.4, 1.25).unwrap(), 80.0);
        // 20 m³ of storage, 96 m³ a day = 4 m³/h: 5 hours.
        close(storage_hours(20.0, 96.0).unwrap(), 5.0);
        assert_eq!(storage_hours(20.0, 0.0), None);
    }

    #[test]
    fn pump_hours_hold_each_state_until_the_next_reading() {
        // On every 15 min from 0 to 45 min (1 h), off at 1 h, on at 2 h with
        // the next reading 3 h later: held 15 min only. 1.25 h.
        let p = pts(&[
            (0, 1.0),
            (15 * M, 1.0),
            (30 * M, 1.0),
            (45 * M, 1.0),
            (H, 0.0),
            (2 * H, 1.0),
            (5 * H, 0.0),
        ]);
        close(pump_hours(&p, 0, 6 * H), 1.25);
    }

    #[test]
    fn the_longest_gap_includes_the_window_edges() {
        let p = pts(&[(H, 1.0), (2 * H, 1.0), (12 * H, 1.0)]);
        close(longest_gap_h(&p, 0, 24 * H), 12.0);
        close(longest_gap_h(&[], 0, 24 * H), 24.0);
        close(level_at(&p, 2 * H, 10 * M).unwrap(), 1.0);
    }
}
