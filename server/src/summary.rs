//! Program figures over a set of APRs: how many APRs, comunas and regions,
//! how many people they serve and what was invested. A pure function of the
//! registry records, so the dashboards' totals and the published figures are
//! computed one way.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::store::AprRecord;

/// Totals over a set of APRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Summary {
    /// APRs.
    pub aprs: u64,
    /// Distinct comunas (by region and name).
    pub comunas: u64,
    /// Distinct regions.
    pub regions: u64,
    /// People served.
    pub beneficiaries: u64,
    /// GORE contributions, CLP.
    pub gore_contribution_clp: u64,
    /// Public investment, CLP.
    pub public_investment_clp: u64,
    /// Alerts open or acknowledged (not resolved) at these APRs; filled by
    /// the API from the alert store, 0 from [`summarize`].
    pub open_alerts: u64,
    /// APRs flagged per component in their latest assessment; filled by
    /// the API from the analysis store, zeros from [`summarize`].
    pub flagged: crate::assessment::Flagged,
}

/// Sums the figures of `aprs`.
pub fn summarize<'a>(aprs: impl IntoIterator<Item = &'a AprRecord>) -> Summary {
    let mut s = Summary::default();
    let mut comunas = BTreeSet::new();
    let mut regions = BTreeSet::new();
    for a in aprs {
        s.aprs += 1;
        s.beneficiaries += a.beneficiaries;
        s.gore_contribution_clp += a.gore_contribution_clp;
        s.public_investment_clp += a.public_investment_clp;
        comunas.insert((a.region.as_str(), a.comuna.as_str()));
        regions.insert(a.region.as_str());
    }
    s.comunas = comunas.len() as u64;
    s.regions = regions.len() as u64;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apr(id: &str, comuna: &str, region: &str, b: u64) -> AprRecord {
        AprRecord {
            id: id.into(),
            name: id.into(),
            comuna: comuna.into(),
            region: region.into(),
            beneficiaries: b,
            connections: 1,
            source: "pozo".into(),
            capacity_l_s: 1.0,
            storage_m3: 1.0,
            gore_contribution_clp: 10 * b,
            public_investment_clp: 100 * b,
        }
    }

    #[test]
    fn comunas_and_regions_are_counted_once() {
        let list = [
            apr("a", "Yumbel", "biobio", 1),
            apr("b", "Yumbel", "biobio", 2),
            apr("c", "Colina", "rm", 3),
        ];
        assert_eq!(
            summarize(&list),
            Summary {
                aprs: 3,
                comunas: 2,
                regions: 2,
                beneficiaries: 6,
                gore_contribution_clp: 60,
                public_investment_clp: 600,
                open_alerts: 0,
                flagged: Default::default(),
            }
        );
        assert_eq!(summarize(&[]), Summary::default());
    }
}
