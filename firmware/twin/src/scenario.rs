//! The scenario library: named APR conditions as TOML data files under
//! `firmware/twin/scenarios/`, each documenting what it models and the
//! physical signature it must leave in the series (the acceptance tests in
//! `tests/scenarios.rs` assert those signatures).
//!
//! A scenario file has `name`, `title`, `models` (what it models) and
//! `signature` (what the series must show), then optional sections, each
//! overriding the healthy defaults: `[site]` ([`SiteParams`]), `[demand]`
//! ([`DemandParams`]), `[chlorination]` ([`ChlorinationParams`]), `[water]`
//! ([`WaterParams`]), `[instruments.<name>]` ([`InstrumentsParams`]), and
//! event arrays `[[rain]]`, `[[power_cut]]`, `[[link_outage]]`,
//! `[[device_silent]]`, `[[instrument_fault]]` ([`crate::events`]). Unknown
//! keys are refused; errors name the file and the key.
//!
//! The built-in library is compiled in ([`Scenario::library`]); any other
//! file loads with [`Scenario::load`].

use std::path::Path;

use serde::Deserialize;

use crate::demand::DemandParams;
use crate::events::{DeviceWindow, Events, InstrumentFault, Rain, Window};
use crate::instruments::InstrumentsParams;
use crate::quality::{ChlorinationParams, WaterParams};
use crate::site::SiteParams;
use crate::TwinError;

/// A named APR condition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short id (the file's stem), e.g. `leak`.
    pub name: String,
    /// One line for people.
    pub title: String,
    /// What it models.
    pub models: String,
    /// The physical signature it leaves in the series.
    pub signature: String,
    /// Hydraulics.
    #[serde(default)]
    pub site: SiteParams,
    /// Demand.
    #[serde(default)]
    pub demand: DemandParams,
    /// Chlorination.
    #[serde(default)]
    pub chlorination: ChlorinationParams,
    /// Source water.
    #[serde(default)]
    pub water: WaterParams,
    /// Instrument errors.
    #[serde(default)]
    pub instruments: InstrumentsParams,
    /// Rain events.
    #[serde(default)]
    pub rain: Vec<Rain>,
    /// Mains power cuts.
    #[serde(default)]
    pub power_cut: Vec<Window>,
    /// Link outages.
    #[serde(default)]
    pub link_outage: Vec<Window>,
    /// Silent devices.
    #[serde(default)]
    pub device_silent: Vec<DeviceWindow>,
    /// Instrument faults.
    #[serde(default)]
    pub instrument_fault: Vec<InstrumentFault>,
}

/// The built-in library: (file name, contents).
const LIBRARY: [(&str, &str); 11] = [
    ("healthy.toml", include_str!("../scenarios/healthy.toml")),
    ("leak.toml", include_str!("../scenarios/leak.toml")),
    (
        "production-below-peak-demand.toml",
        include_str!("../scenarios/production-below-peak-demand.toml"),
    ),
    (
        "storage-too-small.toml",
        include_str!("../scenarios/storage-too-small.toml"),
    ),
    (
        "chlorinator-empty.toml",
        include_str!("../scenarios/chlorinator-empty.toml"),
    ),
    (
        "chlorine-dosing-erratic.toml",
        include_str!("../scenarios/chlorine-dosing-erratic.toml"),
    ),
    (
        "turbidity-event.toml",
        include_str!("../scenarios/turbidity-event.toml"),
    ),
    (
        "chlorine-probe-drift.toml",
        include_str!("../scenarios/chlorine-probe-drift.toml"),
    ),
    (
        "low-pressure-peak-hour.toml",
        include_str!("../scenarios/low-pressure-peak-hour.toml"),
    ),
    (
        "device-silent.toml",
        include_str!("../scenarios/device-silent.toml"),
    ),
    (
        "link-outage-backlog.toml",
        include_str!("../scenarios/link-outage-backlog.toml"),
    ),
];

fn invalid(file: &str, reason: String) -> TwinError {
    TwinError::Scenario {
        file: file.to_string(),
        reason,
    }
}

impl Default for Scenario {
    /// The healthy site.
    fn default() -> Self {
        Scenario::builtin("healthy").unwrap_or_else(|e| unreachable!("built-in healthy: {e}"))
    }
}

impl Scenario {
    /// Parses a scenario from TOML; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, TwinError> {
        let s: Scenario = toml::from_str(text).map_err(|e| invalid(file, e.to_string()))?;
        s.validate().map_err(|reason| invalid(file, reason))?;
        Ok(s)
    }

    /// Loads a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, TwinError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| invalid(&file, e.to_string()))?;
        Scenario::parse(&file, &text)
    }

    /// Every built-in scenario, healthy first.
    pub fn library() -> Result<Vec<Scenario>, TwinError> {
        LIBRARY
            .iter()
            .map(|(file, text)| Scenario::parse(&format!("scenarios/{file}"), text))
            .collect()
    }

    /// The built-in scenario called `name`.
    pub fn builtin(name: &str) -> Result<Scenario, TwinError> {
        let (file, text) = LIBRARY
            .iter()
            .find(|(f, _)| f.strip_suffix(".toml") == Some(name))
            .ok_or_else(|| invalid(name, "no built-in scenario of that name".into()))?;
        Scenario::parse(&format!("scenarios/{file}"), text)
    }

    /// The names of the built-in scenarios.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        LIBRARY
            .iter()
            .map(|(f, _)| f.strip_suffix(".toml").unwrap_or(f))
    }

    /// The scenario's events.
    pub fn events(&self) -> Events {
        Events {
            rain: self.rain.clone(),
            power_cut: self.power_cut.clone(),
            link_outage: self.link_outage.clone(),
            device_silent: self.device_silent.clone(),
            instrument_fault: self.instrument_fault.clone(),
        }
    }

    /// Checks every number against its sensible range, naming the key.
    fn validate(&self) -> Result<(), String> {
        let mut checks: Vec<(String, f64, f64, f64)> = vec![
            (
                "site.capacity_factor".into(),
                self.site.capacity_factor,
                0.0,
                100.0,
            ),
            (
                "site.tank_elevation_m".into(),
                self.site.tank_elevation_m,
                -10.0,
                200.0,
            ),
            (
                "site.tank_height_m".into(),
                self.site.tank_height_m,
                0.0,
                50.0,
            ),
            (
                "site.friction_m_at_peak".into(),
                self.site.friction_m_at_peak,
                0.0,
                200.0,
            ),
            ("site.pump_on_pct".into(), self.site.pump_on_pct, 0.0, 100.0),
            (
                "site.pump_off_pct".into(),
                self.site.pump_off_pct,
                0.0,
                100.0,
            ),
            (
                "site.k_factor_l_per_pulse".into(),
                self.site.k_factor_l_per_pulse,
                0.001,
                4000.0,
            ),
            (
                "site.initial_level_pct".into(),
                self.site.initial_level_pct,
                0.0,
                100.0,
            ),
            (
                "demand.litres_per_person_day".into(),
                self.demand.litres_per_person_day,
                0.0,
                2000.0,
            ),
            (
                "demand.seasonal_factor".into(),
                self.demand.seasonal_factor,
                0.0,
                10.0,
            ),
            (
                "demand.weekend_factor".into(),
                self.demand.weekend_factor,
                0.0,
                10.0,
            ),
            ("demand.leak_l_s".into(), self.demand.leak_l_s, 0.0, 1000.0),
            ("demand.variation".into(), self.demand.variation, 0.0, 1.0),
            (
                "chlorination.dose_mg_l".into(),
                self.chlorination.dose_mg_l,
                0.0,
                20.0,
            ),
            (
                "chlorination.chlorine_demand_mg_l".into(),
                self.chlorination.chlorine_demand_mg_l,
                0.0,
                20.0,
            ),
            (
                "chlorination.demand_per_ntu_mg_l".into(),
                self.chlorination.demand_per_ntu_mg_l,
                0.0,
                5.0,
            ),
            (
                "chlorination.decay_per_h".into(),
                self.chlorination.decay_per_h,
                0.0,
                10.0,
            ),
            (
                "chlorination.manual_batch_mg_l".into(),
                self.chlorination.manual_batch_mg_l,
                0.0,
                20.0,
            ),
            (
                "chlorination.manual_every_h".into(),
                self.chlorination.manual_every_h,
                0.1,
                1000.0,
            ),
            (
                "chlorination.manual_skip_probability".into(),
                self.chlorination.manual_skip_probability,
                0.0,
                1.0,
            ),
            (
                "water.turbidity_ntu".into(),
                self.water.turbidity_ntu,
                0.0,
                4000.0,
            ),
            ("water.ph".into(), self.water.ph, 0.0, 14.0),
            (
                "water.conductivity_us_cm".into(),
                self.water.conductivity_us_cm,
                0.0,
                100_000.0,
            ),
        ];
        if let Some(v) = self.site.capacity_vs_mean_demand {
            checks.push(("site.capacity_vs_mean_demand".into(), v, 0.0, 100.0));
        }
        if let Some(v) = self.site.storage_hours_of_mean_demand {
            checks.push(("site.storage_hours_of_mean_demand".into(), v, 0.01, 1000.0));
        }
        if let Some(v) = self.chlorination.empty_after_days {
            checks.push(("chlorination.empty_after_days".into(), v, 0.0, 10_000.0));
        }
        if let Some(v) = self.chlorination.refilled_after_days {
            checks.push(("chlorination.refilled_after_days".into(), v, 0.0, 10_000.0));
        }
        let windows =
            |key: &str, ws: Vec<(f64, f64)>, checks: &mut Vec<(String, f64, f64, f64)>| {
                for (i, (day, hours)) in ws.into_iter().enumerate() {
                    checks.push((format!("{key}[{i}].day"), day, 0.0, 10_000.0));
                    checks.push((format!("{key}[{i}].hours"), hours, 0.0, 24.0 * 10_000.0));
                }
            };
        windows(
            "rain",
            self.rain.iter().map(|r| (r.day, r.hours)).collect(),
            &mut checks,
        );
        for (i, r) in self.rain.iter().enumerate() {
            checks.push((
                format!("rain[{i}].turbidity_peak_ntu"),
                r.turbidity_peak_ntu,
                0.0,
                3000.0,
            ));
            checks.push((format!("rain[{i}].recovery_h"), r.recovery_h, 0.1, 1000.0));
        }
        windows(
            "power_cut",
            self.power_cut.iter().map(|w| (w.day, w.hours)).collect(),
            &mut checks,
        );
        windows(
            "link_outage",
            self.link_outage.iter().map(|w| (w.day, w.hours)).collect(),
            &mut checks,
        );
        windows(
            "device_silent",
            self.device_silent
                .iter()
                .map(|w| (w.day, w.hours))
                .collect(),
            &mut checks,
        );
        windows(
            "instrument_fault",
            self.instrument_fault
                .iter()
                .map(|w| (w.day, w.hours))
                .collect(),
            &mut checks,
        );
        for (key, v, lo, hi) in checks {
            if !(v.is_finite() && v >= lo && v <= hi) {
                return Err(format!("{key} = {v} is outside {lo}..={hi}"));
            }
        }
        if self.site.pump_on_pct >= self.site.pump_off_pct {
            return Err(format!(
                "site.pump_on_pct = {} must be below site.pump_off_pct = {}",
                self.site.pump_on_pct, self.site.pump_off_pct
            ));
        }
        if self.name.is_empty() {
            return Err("name is empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name = \"x\"\ntitle = \"t\"\nmodels = \"m\"\nsignature = \"s\"\n";

    #[test]
    fn every_built_in_scenario_parses_and_is_named_after_its_file() {
        let lib = Scenario::library().unwrap();
        assert_eq!(lib.len(), 11);
        for (s, name) in lib.iter().zip(Scenario::builtin_names()) {
            assert_eq!(s.name, name);
            assert!(!s.models.trim().is_empty() && !s.signature.trim().is_empty());
        }
    }

    #[test]
    fn an_unknown_key_is_refused_naming_the_file_and_the_key() {
        let text = format!("{MINIMAL}[demand]\nleak_ls = 0.4\n");
        let err = Scenario::parse("scenarios/bad.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("scenarios/bad.toml"), "{err}");
        assert!(err.contains("leak_ls"), "{err}");
    }

    #[test]
    fn a_value_out_of_range_is_refused_naming_the_key() {
        let text = format!("{MINIMAL}[demand]\nleak_l_s = -0.4\n");
        let err = Scenario::parse("f.toml", &text).unwrap_err().to_string();
        assert!(
            err.contains("f.toml") && err.contains("demand.leak_l_s"),
            "{err}"
        );
        let text = format!("{MINIMAL}[[rain]]\nday = 1\nhours = 2\nturbidity_peak_ntu = -3\n");
        let err = Scenario::parse("f.toml", &text).unwrap_err().to_string();
        assert!(err.contains("rain[0].turbidity_peak_ntu"), "{err}");
    }

    #[test]
    fn a_minimal_file_is_the_healthy_defaults() {
        let s = Scenario::parse("m.toml", MINIMAL).unwrap();
        let h = Scenario::builtin("healthy").unwrap();
        assert_eq!(s.site, h.site);
        assert_eq!(s.demand, h.demand);
        assert_eq!(s.chlorination, h.chlorination);
    }
}
