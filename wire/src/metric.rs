//! The metric table of CONTRACT §2: each metric's SenML name, unit and the
//! physically possible range. A value outside the range is refused, never
//! clamped: it is a broken instrument or a forged message, not a reading.

use core::fmt;

/// A quantity a device reports. The order is the table's order and is stable:
/// it is used as a compact index on the wire between gateway and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "snake_case"))]
pub enum Metric {
    /// Production flow at the macro-meter, l/s.
    Flow,
    /// Macro-meter totaliser, m³ (monotonic, may wrap or reset).
    Volume,
    /// Free residual chlorine, mg/l.
    Chlorine,
    /// Turbidity, NTU.
    Turbidity,
    /// pH.
    Ph,
    /// Electrical conductivity, µS/cm.
    Conductivity,
    /// Network pressure, metres of water column.
    Pressure,
    /// Storage tank level, %.
    TankLevel,
    /// Pump running (SenML `vb`); stored as 1.0 / 0.0.
    Pump,
    /// Supply or battery voltage, V.
    Battery,
    /// Radio signal strength, dBm.
    Rssi,
}

/// How a metric's value travels in SenML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Numeric value in `v`.
    Number,
    /// Boolean value in `vb`.
    Boolean,
}

impl Metric {
    /// Every metric, in table order.
    pub const ALL: [Metric; 11] = [
        Metric::Flow,
        Metric::Volume,
        Metric::Chlorine,
        Metric::Turbidity,
        Metric::Ph,
        Metric::Conductivity,
        Metric::Pressure,
        Metric::TankLevel,
        Metric::Pump,
        Metric::Battery,
        Metric::Rssi,
    ];

    /// The SenML name `n`.
    pub const fn name(self) -> &'static str {
        match self {
            Metric::Flow => "flow",
            Metric::Volume => "volume",
            Metric::Chlorine => "chlorine",
            Metric::Turbidity => "turbidity",
            Metric::Ph => "ph",
            Metric::Conductivity => "conductivity",
            Metric::Pressure => "pressure",
            Metric::TankLevel => "tank_level",
            Metric::Pump => "pump",
            Metric::Battery => "battery",
            Metric::Rssi => "rssi",
        }
    }

    /// The SenML unit `u`, exactly as CONTRACT §2 writes it; `None` for the
    /// boolean pump state, which carries no unit.
    pub const fn unit(self) -> Option<&'static str> {
        match self {
            Metric::Flow => Some("l/s"),
            Metric::Volume => Some("m3"),
            Metric::Chlorine => Some("mg/l"),
            Metric::Turbidity => Some("NTU"),
            Metric::Ph => Some("pH"),
            Metric::Conductivity => Some("uS/cm"),
            Metric::Pressure => Some("mca"),
            Metric::TankLevel => Some("%"),
            Metric::Pump => None,
            Metric::Battery => Some("V"),
            Metric::Rssi => Some("dBm"),
        }
    }

    /// Whether the value travels as `v` or `vb`.
    pub const fn kind(self) -> ValueKind {
        match self {
            Metric::Pump => ValueKind::Boolean,
            _ => ValueKind::Number,
        }
    }

    /// The physically possible range, inclusive (CONTRACT §2).
    pub const fn range(self) -> (f64, f64) {
        match self {
            Metric::Flow => (0.0, 1000.0),
            Metric::Volume => (0.0, f64::MAX),
            Metric::Chlorine => (0.0, 20.0),
            Metric::Turbidity => (0.0, 4000.0),
            Metric::Ph => (0.0, 14.0),
            Metric::Conductivity => (0.0, 100_000.0),
            Metric::Pressure => (-10.0, 250.0),
            Metric::TankLevel => (0.0, 100.0),
            Metric::Pump => (0.0, 1.0),
            Metric::Battery => (0.0, 60.0),
            Metric::Rssi => (-150.0, 0.0),
        }
    }

    /// Whether `v` is a finite value inside [`Metric::range`].
    pub fn in_range(self, v: f64) -> bool {
        let (lo, hi) = self.range();
        v.is_finite() && v >= lo && v <= hi
    }

    /// Looks a metric up by its SenML name.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Stable index in table order (used as a compact key in stores).
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// The metric at a table index.
    pub fn from_index(i: u8) -> Option<Metric> {
        Metric::ALL.get(usize::from(i)).copied()
    }

    /// The unit as shown to people and in the API (`""` for the pump state).
    pub const fn display_unit(self) -> &'static str {
        match self.unit() {
            Some(u) => u,
            None => "",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_indices_are_table_order() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(Metric::from_name(m.name()), Some(*m));
            assert_eq!(usize::from(m.index()), i);
            assert_eq!(Metric::from_index(m.index()), Some(*m));
        }
        assert_eq!(Metric::from_name("temperature"), None);
        assert_eq!(Metric::from_index(11), None);
    }

    #[test]
    fn ranges_refuse_impossible_values() {
        assert!(Metric::Chlorine.in_range(0.5));
        assert!(!Metric::Chlorine.in_range(25.0));
        assert!(!Metric::Chlorine.in_range(-0.1));
        assert!(!Metric::Flow.in_range(f64::NAN));
        assert!(Metric::Pressure.in_range(-10.0));
        assert!(!Metric::Rssi.in_range(1.0));
        assert!(!Metric::Volume.in_range(f64::INFINITY));
    }
}
