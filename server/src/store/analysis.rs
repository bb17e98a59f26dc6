//! [`AnalysisStore`]: what the server derives and what people enter beside
//! the series (schema version 3): daily KPIs (`kpi_daily`), imported
//! billing (`billing`), manual field records (`field_records`), the
//! assessments kept over time (`assessments`) and interventions
//! (`interventions`).
//!
//! `kpi_daily` is keyed by (APR, local day, KPI): recomputing a day replaces
//! its rows. `assessments` is append-only: one row per component per
//! computation, so a reviewer sees when a flag was raised and cleared.

use rusqlite::{params, Row};
use serde::{Deserialize, Serialize};

use super::sqlite::SqliteStore;
use crate::error::{Error, Result};

/// One KPI value of one APR and local day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiRow {
    /// APR id.
    pub apr: String,
    /// Local day (America/Santiago), `YYYY-MM-DD`.
    pub day: String,
    /// KPI name (`crate::kpi::Kpi`).
    pub kpi: String,
    /// Value, in the KPI's unit.
    pub value: f64,
    /// The span the value covers: `P1D` for a local day.
    pub window: String,
    /// When it was computed, ms.
    pub computed_at_ms: i64,
}

/// The kind of a manual field record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// A free-chlorine check with a DPD kit, mg/L.
    DpdChlorine,
    /// A laboratory result (`parameter`: `total_coliforms`, `e_coli`,
    /// `arsenic`, `nitrate`).
    Lab,
    /// An operator's visit (a note).
    Visit,
}

impl FieldKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::DpdChlorine => "dpd_chlorine",
            FieldKind::Lab => "lab",
            FieldKind::Visit => "visit",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<FieldKind> {
        [FieldKind::DpdChlorine, FieldKind::Lab, FieldKind::Visit]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A manual field record.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRecord {
    /// Row id (0 before it is stored).
    pub id: i64,
    /// APR id.
    pub apr: String,
    /// Kind.
    pub kind: FieldKind,
    /// When the check or sample was taken, ms.
    pub taken_at_ms: i64,
    /// The measured value (DPD: mg/L; lab: in the parameter's unit).
    pub value: Option<f64>,
    /// The lab parameter.
    pub parameter: Option<String>,
    /// Free text (a visit's note, a place).
    pub note: Option<String>,
    /// Who took it.
    pub recorded_by: String,
    /// When it was entered, ms.
    pub recorded_at_ms: i64,
}

/// One component of one stored assessment.
#[derive(Debug, Clone, PartialEq)]
pub struct AssessmentRow {
    /// APR id.
    pub apr: String,
    /// When it was computed, ms.
    pub computed_at_ms: i64,
    /// `diagnosis`, `technology`, `engineering` or `training`.
    pub component: String,
    /// Whether the component is flagged.
    pub flagged: bool,
    /// The reasons, as CONTRACT §3 writes them.
    pub reasons: serde_json::Value,
}

/// An intervention at an APR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterventionRecord {
    /// Row id (0 before it is stored).
    #[serde(default)]
    pub id: i64,
    /// APR id.
    #[serde(default)]
    pub apr: String,
    /// The component it answers.
    pub component: String,
    /// What was done.
    pub description: String,
    /// Cost, CLP.
    pub cost_clp: u64,
    /// Who paid.
    pub funder: String,
    /// First day, `YYYY-MM-DD`.
    pub started: String,
    /// Last day, `YYYY-MM-DD`.
    pub finished: String,
}

/// Derived and manually entered data of the APRs.
pub trait AnalysisStore: Send + Sync {
    /// Replaces the rows of each (APR, day, KPI) given.
    fn put_kpis(&self, rows: Vec<KpiRow>) -> Result<()>;
    /// KPI rows of an APR for days in `[from_day, to_day]`, by day and KPI.
    fn kpis(
        &self,
        apr: &str,
        from_day: &str,
        to_day: &str,
        kpi: Option<&str>,
    ) -> Result<Vec<KpiRow>>;
    /// Replaces the billed volume of the months given.
    fn put_billing(
        &self,
        apr: &str,
        months: Vec<(String, f64)>,
        by: &str,
        at_ms: i64,
    ) -> Result<()>;
    /// Billed volume per month of an APR, by month.
    fn billing(&self, apr: &str) -> Result<Vec<(String, f64)>>;
    /// Stores a field record; answers its id.
    fn insert_field_record(&self, record: FieldRecord) -> Result<i64>;
    /// Field records of an APR taken in `[from_ms, to_ms]`, by time.
    fn field_records(&self, apr: &str, from_ms: i64, to_ms: i64) -> Result<Vec<FieldRecord>>;
    /// Stores one assessment (its components) in one transaction.
    fn insert_assessment(&self, rows: Vec<AssessmentRow>) -> Result<()>;
    /// Assessment rows of an APR (every APR when `None`), newest first, at
    /// most `limit` computations.
    fn assessments(&self, apr: Option<&str>, limit: usize) -> Result<Vec<AssessmentRow>>;
    /// The latest assessment row of each APR and component.
    fn latest_assessments(&self) -> Result<Vec<AssessmentRow>>;
    /// Stores an intervention; answers its id.
    fn insert_intervention(&self, record: InterventionRecord) -> Result<i64>;
    /// Interventions of an APR, by start.
    fn interventions(&self, apr: &str) -> Result<Vec<InterventionRecord>>;
}

fn field_from_row(r: &Row<'_>) -> rusqlite::Result<FieldRecord> {
    let kind: String = r.get(2)?;
    Ok(FieldRecord {
        id: r.get(0)?,
        apr: r.get(1)?,
        kind: FieldKind::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                format!("unknown field record kind '{kind}'").into(),
            )
        })?,
        taken_at_ms: r.get(3)?,
        value: r.get(4)?,
        parameter: r.get(5)?,
        note: r.get(6)?,
        recorded_by: r.get(7)?,
        recorded_at_ms: r.get(8)?,
    })
}

fn assessment_from_row(r: &Row<'_>) -> rusqlite::Result<AssessmentRow> {
    let reasons: String = r.get(4)?;
    Ok(AssessmentRow {
        apr: r.get(0)?,
        computed_at_ms: r.get(1)?,
        component: r.get(2)?,
        flagged: r.get(3)?,
        reasons: serde_json::from_str(&reasons).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
        })?,
    })
}

impl AnalysisStore for SqliteStore {
    fn put_kpis(&self, rows: Vec<KpiRow>) -> Result<()> {
        self.write(move |tx| {
            let mut st = tx.prepare_cached(
                "INSERT INTO kpi_daily(apr, day, kpi, value, \"window\", computed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(apr, day, kpi) DO UPDATE SET \
                 value = excluded.value, \"window\" = excluded.\"window\", \
                 computed_at = excluded.computed_at",
            )?;
            for r in &rows {
                st.execute(params![
                    r.apr,
                    r.day,
                    r.kpi,
                    r.value,
                    r.window,
                    r.computed_at_ms
                ])?;
            }
            Ok(())
        })
    }

    fn kpis(
        &self,
        apr: &str,
        from_day: &str,
        to_day: &str,
        kpi: Option<&str>,
    ) -> Result<Vec<KpiRow>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT apr, day, kpi, value, \"window\", computed_at FROM kpi_daily \
                 WHERE apr = ?1 AND day >= ?2 AND day <= ?3 AND (?4 IS NULL OR kpi = ?4) \
                 ORDER BY day, kpi",
            )?;
            let rows = st
                .query_map(params![apr, from_day, to_day, kpi], |r| {
                    Ok(KpiRow {
                        apr: r.get(0)?,
                        day: r.get(1)?,
                        kpi: r.get(2)?,
                        value: r.get(3)?,
                        window: r.get(4)?,
                        computed_at_ms: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn put_billing(
        &self,
        apr: &str,
        months: Vec<(String, f64)>,
        by: &str,
        at_ms: i64,
    ) -> Result<()> {
        let (apr, by) = (apr.to_owned(), by.to_owned());
        self.write(move |tx| {
            let mut st = tx.prepare_cached(
                "INSERT INTO billing(apr, month, billed_m3, imported_by, imported_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(apr, month) DO UPDATE SET \
                 billed_m3 = excluded.billed_m3, imported_by = excluded.imported_by, \
                 imported_at = excluded.imported_at",
            )?;
            for (month, m3) in &months {
                st.execute(params![apr, month, m3, by, at_ms])?;
            }
            Ok(())
        })
    }

    fn billing(&self, apr: &str) -> Result<Vec<(String, f64)>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT month, billed_m3 FROM billing WHERE apr = ?1 ORDER BY month",
            )?;
            let rows = st
                .query_map(params![apr], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn insert_field_record(&self, f: FieldRecord) -> Result<i64> {
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO field_records(apr, kind, taken_at, value, parameter, note, \
                 recorded_by, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                f.apr,
                f.kind.as_str(),
                f.taken_at_ms,
                f.value,
                f.parameter,
                f.note,
                f.recorded_by,
                f.recorded_at_ms
            ])?;
            Ok(tx.last_insert_rowid())
        })
    }

    fn field_records(&self, apr: &str, from_ms: i64, to_ms: i64) -> Result<Vec<FieldRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, apr, kind, taken_at, value, parameter, note, recorded_by, recorded_at \
                 FROM field_records WHERE apr = ?1 AND taken_at >= ?2 AND taken_at <= ?3 \
                 ORDER BY taken_at, id",
            )?;
            let rows = st
                .query_map(params![apr, from_ms, to_ms], field_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn insert_assessment(&self, rows: Vec<AssessmentRow>) -> Result<()> {
        self.write(move |tx| {
            let mut st = tx.prepare_cached(
                "INSERT INTO assessments(apr, computed_at, component, flagged, reasons) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for r in &rows {
                let reasons = serde_json::to_string(&r.reasons)
                    .map_err(|e| Error::Invalid(format!("assessment reasons: {e}")))?;
                st.execute(params![
                    r.apr,
                    r.computed_at_ms,
                    r.component,
                    r.flagged,
                    reasons
                ])?;
            }
            Ok(())
        })
    }

    fn assessments(&self, apr: Option<&str>, limit: usize) -> Result<Vec<AssessmentRow>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT apr, computed_at, component, flagged, reasons FROM assessments \
                 WHERE (?1 IS NULL OR apr = ?1) AND computed_at IN \
                 (SELECT DISTINCT computed_at FROM assessments WHERE (?1 IS NULL OR apr = ?1) \
                  ORDER BY computed_at DESC LIMIT ?2) \
                 ORDER BY computed_at DESC, apr, id",
            )?;
            let rows = st
                .query_map(
                    params![apr, i64::try_from(limit).unwrap_or(i64::MAX)],
                    assessment_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn latest_assessments(&self) -> Result<Vec<AssessmentRow>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT a.apr, a.computed_at, a.component, a.flagged, a.reasons FROM assessments a \
                 JOIN (SELECT apr, MAX(computed_at) AS t FROM assessments GROUP BY apr) l \
                 ON a.apr = l.apr AND a.computed_at = l.t ORDER BY a.apr, a.id",
            )?;
            let rows = st
                .query_map([], assessment_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn insert_intervention(&self, i: InterventionRecord) -> Result<i64> {
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO interventions(apr, component, description, cost_clp, funder, \
                 started, finished) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                i.apr,
                i.component,
                i.description,
                i64::try_from(i.cost_clp).unwrap_or(i64::MAX),
                i.funder,
                i.started,
                i.finished
            ])?;
            Ok(tx.last_insert_rowid())
        })
    }

    fn interventions(&self, apr: &str) -> Result<Vec<InterventionRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, apr, component, description, cost_clp, funder, started, finished \
                 FROM interventions WHERE apr = ?1 ORDER BY started, id",
            )?;
            let rows = st
                .query_map(params![apr], |r| {
                    Ok(InterventionRecord {
                        id: r.get(0)?,
                        apr: r.get(1)?,
                        component: r.get(2)?,
                        description: r.get(3)?,
                        cost_clp: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                        funder: r.get(5)?,
                        started: r.get(6)?,
                        finished: r.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}
