//! Manual field records (DPD chlorine checks, lab results, operator visits)
//! and what they tell about the instruments.
//!
//! # Probe drift
//! Amperometric free-chlorine probes drift and foul and are calibrated
//! against field DPD checks (DOMAIN.md, Instruments). [`probe_drift`]
//! compares each DPD check with the probe reading nearest in time (within
//! ±[`AssessmentLimits::probe_match_minutes`]); when the last
//! [`AssessmentLimits::probe_drift_checks`] matched checks all differ by
//! more than max(0.1 mg/L, 20 % of the DPD value) in the same direction,
//! the probe needs recalibration. A pure function: the assessment calls it.

use serde::Serialize;

use crate::limits::{
    AssessmentLimits, ARSENIC_MAX_MG_L, COLIFORMS_MAX_PER_100ML, NITRATE_MAX_MG_L,
};
use crate::store::{FieldKind, FieldRecord, Point};

/// The lab parameters accepted, with their NCh 409/1 limit and unit.
pub const LAB_PARAMETERS: [(&str, f64, &str); 4] = [
    ("total_coliforms", COLIFORMS_MAX_PER_100ML, "NMP/100 mL"),
    ("e_coli", COLIFORMS_MAX_PER_100ML, "NMP/100 mL"),
    ("arsenic", ARSENIC_MAX_MG_L, "mg/L"),
    ("nitrate", NITRATE_MAX_MG_L, "mg NO3/L"),
];

/// The NCh 409/1 limit of a lab parameter.
pub fn lab_limit(parameter: &str) -> Option<f64> {
    LAB_PARAMETERS
        .iter()
        .find(|(p, _, _)| *p == parameter)
        .map(|(_, l, _)| *l)
}

/// Checks a record before it is stored; answers what is wrong.
pub fn validate(record: &FieldRecord) -> Result<(), String> {
    if record.kind != FieldKind::Lab && record.parameter.is_some() {
        return Err(format!(
            "'parameter' only goes with a lab result, not with kind '{}'",
            record.kind.as_str()
        ));
    }
    match record.kind {
        FieldKind::DpdChlorine => match record.value {
            Some(v) if v.is_finite() && (0.0..=20.0).contains(&v) => Ok(()),
            Some(v) => Err(format!("a DPD value must be 0–20 mg/L, not {v}")),
            None => Err("a DPD check needs 'value' (mg/L)".into()),
        },
        FieldKind::Lab => {
            let p = record
                .parameter
                .as_deref()
                .ok_or("a lab result needs 'parameter'")?;
            if lab_limit(p).is_none() {
                return Err(format!(
                    "unknown lab parameter '{p}'; known: {}",
                    LAB_PARAMETERS.map(|x| x.0).join(", ")
                ));
            }
            match record.value {
                Some(v) if v.is_finite() && v >= 0.0 => Ok(()),
                _ => Err("a lab result needs a 'value' ≥ 0".into()),
            }
        }
        FieldKind::Visit => match record.note.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => Ok(()),
            _ => Err("a visit needs a 'note'".into()),
        },
    }
}

/// One DPD check next to the probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DpdComparison {
    /// When the check was taken, ms.
    pub taken_at_ms: i64,
    /// DPD value, mg/L.
    pub dpd_mg_l: f64,
    /// The probe's nearest reading, mg/L.
    pub probe_mg_l: f64,
    /// Probe − DPD, mg/L.
    pub difference_mg_l: f64,
    /// The tolerance, max(abs, rel × DPD), mg/L.
    pub tolerance_mg_l: f64,
}

/// The result of the drift check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeDrift {
    /// `low` (the probe reads less than DPD) or `high`.
    pub direction: &'static str,
    /// The checks that show it, oldest first.
    pub checks: Vec<DpdComparison>,
}

/// Every DPD check matched with the probe reading nearest in time (within
/// the match window), oldest first. `probe` is sorted by time.
pub fn compare_dpd(
    dpd: &[(i64, f64)],
    probe: &[Point],
    a: &AssessmentLimits,
) -> Vec<DpdComparison> {
    let window = a.probe_match_minutes * 60_000;
    let mut out = Vec::new();
    for &(t, v) in dpd {
        let i = probe.partition_point(|p| p.t_ms < t);
        let nearest = [i.checked_sub(1), Some(i)]
            .into_iter()
            .flatten()
            .filter_map(|j| probe.get(j))
            .filter(|p| (p.t_ms - t).abs() <= window)
            .min_by_key(|p| (p.t_ms - t).abs());
        if let Some(p) = nearest {
            out.push(DpdComparison {
                taken_at_ms: t,
                dpd_mg_l: v,
                probe_mg_l: p.v,
                difference_mg_l: p.v - v,
                tolerance_mg_l: a.probe_drift_abs_mg_l.max(a.probe_drift_rel * v),
            });
        }
    }
    out
}

/// Whether the last N matched checks all differ beyond tolerance in the
/// same direction.
pub fn probe_drift(comparisons: &[DpdComparison], a: &AssessmentLimits) -> Option<ProbeDrift> {
    let n = a.probe_drift_checks.max(1);
    if comparisons.len() < n {
        return None;
    }
    let last = &comparisons[comparisons.len() - n..];
    let off = |c: &DpdComparison| c.difference_mg_l.abs() > c.tolerance_mg_l;
    let direction = if last.iter().all(|c| off(c) && c.difference_mg_l < 0.0) {
        "low"
    } else if last.iter().all(|c| off(c) && c.difference_mg_l > 0.0) {
        "high"
    } else {
        return None;
    };
    Some(ProbeDrift {
        direction,
        checks: last.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;

    fn probe(values: &[(i64, f64)]) -> Vec<Point> {
        values.iter().map(|&(t_ms, v)| Point { t_ms, v }).collect()
    }

    #[test]
    fn three_checks_off_in_the_same_direction_call_for_recalibration() {
        let a = AssessmentLimits::default();
        let p = probe(&[(0, 0.5), (1000 * M, 0.4), (2000 * M, 0.3), (3000 * M, 0.9)]);
        // DPD 1.0 against 0.5, 0.4, 0.3 (each beyond max(0.1, 0.2)).
        let c = compare_dpd(&[(5 * M, 1.0), (1010 * M, 1.0), (2000 * M, 1.0)], &p, &a);
        assert_eq!(c.len(), 3);
        assert!((c[0].difference_mg_l + 0.5).abs() < 1e-12);
        assert!((c[0].tolerance_mg_l - 0.2).abs() < 1e-12);
        let d = probe_drift(&c, &a).expect("drift");
        assert_eq!(d.direction, "low");
        // The last check within tolerance (0.9 vs 1.0): no drift.
        let c = compare_dpd(
            &[
                (5 * M, 1.0),
                (1010 * M, 1.0),
                (2000 * M, 1.0),
                (3000 * M, 1.0),
            ],
            &p,
            &a,
        );
        assert_eq!(probe_drift(&c, &a), None);
    }

    #[test]
    fn a_check_without_a_probe_reading_within_fifteen_minutes_is_not_compared() {
        let a = AssessmentLimits::default();
        let p = probe(&[(0, 0.5)]);
        assert!(compare_dpd(&[(16 * M, 1.0)], &p, &a).is_empty());
        assert_eq!(compare_dpd(&[(15 * M, 1.0)], &p, &a).len(), 1);
    }

    #[test]
    fn mixed_directions_are_noise_not_drift() {
        let a = AssessmentLimits::default();
        let p = probe(&[(0, 0.5), (M, 1.5), (2 * M, 0.5)]);
        let c = compare_dpd(&[(0, 1.0), (M, 1.0), (2 * M, 1.0)], &p, &a);
        assert_eq!(probe_drift(&c, &a), None);
    }

    #[test]
    fn records_are_validated_by_kind() {
        let mut r = FieldRecord {
            id: 0,
            apr: "a".into(),
            kind: FieldKind::Lab,
            taken_at_ms: 0,
            value: Some(0.02),
            parameter: Some("arsenic".into()),
            note: None,
            recorded_by: "x".into(),
            recorded_at_ms: 0,
        };
        assert_eq!(validate(&r), Ok(()));
        assert_eq!(lab_limit("arsenic"), Some(0.01));
        r.parameter = Some("lead".into());
        assert!(validate(&r)
            .unwrap_err()
            .contains("unknown lab parameter 'lead'"));
        r.kind = FieldKind::DpdChlorine;
        r.value = None;
        assert!(validate(&r).is_err());
        r.kind = FieldKind::Visit;
        assert!(validate(&r).is_err());
    }
}
