//! Water quality in the storage tank, where the pump-house instruments
//! sample it.
//!
//! - **Chlorine**: a dosing pump tied to the well pump adds `dose_mg_l` to
//!   the water it pumps, less the raw water's chlorine demand (which grows
//!   with turbidity); the tank is a well-mixed reactor with first-order bulk
//!   decay: `dC/dt = Q_in/V·(C_in − C) − k·C`. A chlorinator that runs empty
//!   stops dosing. An operator who doses by hand pours a batch into the tank
//!   now and then (and sometimes forgets): the residual swings from far above
//!   2 mg/l to nothing (NCh 409: 0.2–2.0 mg/l).
//! - **Turbidity**: the raw water's, raised by rain events (see
//!   [`crate::events`]), mixed into the tank like chlorine but without decay.
//! - **pH and conductivity**: the source's, diluted by rain (conductivity
//!   falls, pH drops a little), with a faint daily swing.

use serde::Deserialize;

/// Chlorination parameters of a scenario (`[chlorination]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChlorinationParams {
    /// Dose added to the pumped water while the pump runs, mg/l.
    pub dose_mg_l: f64,
    /// Chlorine the raw water consumes at once, mg/l.
    pub chlorine_demand_mg_l: f64,
    /// Extra instant demand per NTU of turbidity, mg/l.
    pub demand_per_ntu_mg_l: f64,
    /// First-order bulk decay in the tank, per hour.
    pub decay_per_h: f64,
    /// The hypochlorite reservoir runs dry this many days after the start.
    pub empty_after_days: Option<f64>,
    /// The empty reservoir is refilled (dosing resumes) this many days after
    /// the start: an intervention's effect.
    pub refilled_after_days: Option<f64>,
    /// Manual dosing: each batch raises a full tank by this much, mg/l (0: none).
    pub manual_batch_mg_l: f64,
    /// Mean hours between manual batches.
    pub manual_every_h: f64,
    /// Chance that the operator skips a batch.
    pub manual_skip_probability: f64,
}

impl Default for ChlorinationParams {
    fn default() -> Self {
        ChlorinationParams {
            dose_mg_l: 1.0,
            chlorine_demand_mg_l: 0.3,
            demand_per_ntu_mg_l: 0.04,
            decay_per_h: 0.03,
            empty_after_days: None,
            refilled_after_days: None,
            manual_batch_mg_l: 0.0,
            manual_every_h: 24.0,
            manual_skip_probability: 0.0,
        }
    }
}

/// The source water of a scenario (`[water]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WaterParams {
    /// Turbidity in dry weather, NTU.
    pub turbidity_ntu: f64,
    /// pH.
    pub ph: f64,
    /// Electrical conductivity, µS/cm.
    pub conductivity_us_cm: f64,
}

impl Default for WaterParams {
    fn default() -> Self {
        WaterParams {
            turbidity_ntu: 0.3,
            ph: 7.3,
            conductivity_us_cm: 420.0,
        }
    }
}

/// The water quality state of the tank.
#[derive(Debug, Clone)]
pub struct Quality {
    chl: ChlorinationParams,
    water: WaterParams,
    chlorine: f64,
    turbidity: f64,
    ph: f64,
    conductivity: f64,
    next_batch_s: f64,
}

impl Quality {
    /// A tank in steady dry-weather state.
    pub fn new(chl: ChlorinationParams, water: WaterParams) -> Self {
        let chlorine = if chl.manual_batch_mg_l > 0.0 {
            chl.manual_batch_mg_l * 0.5
        } else {
            (chl.dose_mg_l - chl.chlorine_demand_mg_l).max(0.0) * 0.85
        };
        Quality {
            chlorine,
            turbidity: water.turbidity_ntu,
            ph: water.ph,
            conductivity: water.conductivity_us_cm,
            next_batch_s: 3.0 * 3600.0,
            chl,
            water,
        }
    }

    /// Whether the chlorinator still doses `elapsed_s` after the start.
    pub fn chlorinator_dosing(&self, elapsed_s: f64) -> bool {
        let empty = self
            .chl
            .empty_after_days
            .is_some_and(|d| elapsed_s >= d * 86_400.0);
        let refilled = self
            .chl
            .refilled_after_days
            .is_some_and(|d| elapsed_s >= d * 86_400.0);
        self.chl.dose_mg_l > 0.0 && (!empty || refilled)
    }

    /// Advances `dt` seconds. `pumped_l_s` enters a tank holding `tank_m3`
    /// of `storage_m3`; the raw water carries `rain_ntu` of rain turbidity,
    /// `rain_share` (0–1) says how much rain water is in it; `local_hour`
    /// for the daily swing; `draws` are two uniform draws in 0..1.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        dt: f64,
        elapsed_s: f64,
        pumped_l_s: f64,
        tank_m3: f64,
        storage_m3: f64,
        rain_ntu: f64,
        rain_share: f64,
        local_hour: f64,
        draws: (f64, f64),
    ) {
        let c = &self.chl;
        let raw_turbidity = self.water.turbidity_ntu + rain_ntu;
        let dose = if self.chlorinator_dosing(elapsed_s) {
            c.dose_mg_l
        } else {
            0.0
        };
        let c_in = (dose - c.chlorine_demand_mg_l - c.demand_per_ntu_mg_l * raw_turbidity).max(0.0);
        // Exchange rate through the tank (1/s), kept stable near empty.
        let v = tank_m3.max(0.05 * storage_m3).max(0.2);
        let exchange = (pumped_l_s / 1000.0 / v * dt).min(1.0);
        let decay = c.decay_per_h / 3600.0 * dt;
        self.chlorine += exchange * (c_in - self.chlorine) - decay * self.chlorine;
        self.turbidity += exchange * (raw_turbidity - self.turbidity);
        if c.manual_batch_mg_l > 0.0 && elapsed_s >= self.next_batch_s {
            if draws.0 >= c.manual_skip_probability {
                let rise = c.manual_batch_mg_l * storage_m3 / v;
                self.chlorine += rise.min(3.0 * c.manual_batch_mg_l);
            }
            self.next_batch_s += c.manual_every_h * 3600.0 * (0.6 + 0.8 * draws.1);
        }
        self.chlorine = self.chlorine.clamp(0.0, 19.0);
        let swing = (std::f64::consts::TAU * (local_hour - 15.0) / 24.0).cos();
        self.ph = self.water.ph - 0.35 * rain_share + 0.04 * swing;
        self.conductivity = self.water.conductivity_us_cm * (1.0 - 0.35 * rain_share)
            + 0.01 * self.water.conductivity_us_cm * swing;
    }

    /// Free residual chlorine in the tank, mg/l.
    pub fn chlorine_mg_l(&self) -> f64 {
        self.chlorine
    }

    /// Turbidity in the tank, NTU.
    pub fn turbidity_ntu(&self) -> f64 {
        self.turbidity
    }

    /// pH.
    pub fn ph(&self) -> f64 {
        self.ph
    }

    /// Conductivity, µS/cm.
    pub fn conductivity_us_cm(&self) -> f64 {
        self.conductivity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(q: &mut Quality, hours: f64, pumped: f64) {
        let steps = (hours * 60.0) as usize;
        for i in 0..steps {
            let t = i as f64 * 60.0;
            q.step(60.0, t, pumped, 10.0, 20.0, 0.0, 0.0, 12.0, (0.5, 0.5));
        }
    }

    #[test]
    fn continuous_dosing_settles_below_the_dose_minus_the_demand() {
        let mut q = Quality::new(ChlorinationParams::default(), WaterParams::default());
        run(&mut q, 72.0, 0.5);
        let c = q.chlorine_mg_l();
        assert!((0.4..0.7).contains(&c), "{c}");
    }

    #[test]
    fn without_dosing_the_residual_decays_towards_zero() {
        let chl = ChlorinationParams {
            empty_after_days: Some(0.0),
            ..ChlorinationParams::default()
        };
        let mut q = Quality::new(chl, WaterParams::default());
        run(&mut q, 48.0, 0.5);
        assert!(q.chlorine_mg_l() < 0.02, "{}", q.chlorine_mg_l());
    }
}
