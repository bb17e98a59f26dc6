//! The fleet registry file: which APRs exist, where, and what was invested.
//!
//! # Format
//! UTF-8 text, one record a line, fields separated by commas, no quoting (no
//! field contains a comma). Lines starting with `#` and blank lines are
//! ignored. The first other line is the header and must name exactly these
//! columns in this order:
//!
//! `id,name,comuna,region,region_name,beneficiaries,connections,source,capacity_l_s,storage_m3,gore_contribution_clp,public_investment_clp`
//!
//! `id` and `region` follow the id rule of CONTRACT §2; counts and CLP amounts
//! are non-negative integers; capacity and storage non-negative decimals. A
//! region's name must be the same on every line. Errors name the line and the
//! column.
//!
//! Importing is an upsert: importing the same file twice changes nothing.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use apr_wire::id::is_valid_id;

use crate::error::{Error, FleetError, Result};
use crate::store::{AprRecord, Region, Registry};

/// The columns, in order.
pub const COLUMNS: [&str; 12] = [
    "id",
    "name",
    "comuna",
    "region",
    "region_name",
    "beneficiaries",
    "connections",
    "source",
    "capacity_l_s",
    "storage_m3",
    "gore_contribution_clp",
    "public_investment_clp",
];

/// A parsed fleet file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fleet {
    /// Regions, by id.
    pub regions: Vec<Region>,
    /// APRs, in file order.
    pub aprs: Vec<AprRecord>,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    /// Regions in the file.
    pub regions: usize,
    /// APRs in the file.
    pub aprs: usize,
    /// Registry rows created or changed (0 on a repeated import).
    pub changed: usize,
}

/// Parses fleet text; `origin` names it in errors (a file name).
pub fn parse(text: &str, origin: &str) -> Result<Fleet, FleetError> {
    let err = |line: usize, column: Option<usize>, message: String| FleetError {
        origin: origin.to_owned(),
        line,
        column: column.map(|c| (c + 1, COLUMNS[c])),
        message,
    };
    let mut header_seen = false;
    let mut regions: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut ids = HashSet::new();
    let mut aprs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if !header_seen {
            for (c, want) in COLUMNS.iter().enumerate() {
                match fields.get(c) {
                    Some(got) if got.trim() == *want => {}
                    Some(got) => {
                        return Err(err(
                            line_no,
                            Some(c),
                            format!("header names '{}' where '{want}' is expected", got.trim()),
                        ))
                    }
                    None => {
                        return Err(err(
                            line_no,
                            Some(c),
                            format!("header ends before column '{want}'"),
                        ))
                    }
                }
            }
            if fields.len() > COLUMNS.len() {
                return Err(err(
                    line_no,
                    None,
                    format!(
                        "header has {} columns; expected {}",
                        fields.len(),
                        COLUMNS.len()
                    ),
                ));
            }
            header_seen = true;
            continue;
        }
        if fields.len() != COLUMNS.len() {
            return Err(err(
                line_no,
                None,
                format!(
                    "{} fields; expected {} ({})",
                    fields.len(),
                    COLUMNS.len(),
                    COLUMNS.join(",")
                ),
            ));
        }
        let f: Vec<&str> = fields.iter().map(|s| s.trim()).collect();
        if let Some(c) = f.iter().position(|v| v.is_empty()) {
            return Err(err(line_no, Some(c), "empty".into()));
        }
        let id_col = |c: usize| -> Result<String, FleetError> {
            if is_valid_id(f[c]) {
                Ok(f[c].to_owned())
            } else {
                Err(err(
                    line_no,
                    Some(c),
                    format!("'{}' does not match ^[a-z0-9][a-z0-9-]{{0,63}}$", f[c]),
                ))
            }
        };
        let int_col = |c: usize| -> Result<u64, FleetError> {
            f[c].parse::<u64>()
                .ok()
                .filter(|v| i64::try_from(*v).is_ok())
                .ok_or_else(|| {
                    err(
                        line_no,
                        Some(c),
                        format!("'{}' is not a non-negative integer", f[c]),
                    )
                })
        };
        let dec_col = |c: usize| -> Result<f64, FleetError> {
            f[c].parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    err(
                        line_no,
                        Some(c),
                        format!("'{}' is not a non-negative number", f[c]),
                    )
                })
        };
        let apr = AprRecord {
            id: id_col(0)?,
            name: f[1].to_owned(),
            comuna: f[2].to_owned(),
            region: id_col(3)?,
            beneficiaries: int_col(5)?,
            connections: int_col(6)?,
            source: f[7].to_owned(),
            capacity_l_s: dec_col(8)?,
            storage_m3: dec_col(9)?,
            gore_contribution_clp: int_col(10)?,
            public_investment_clp: int_col(11)?,
        };
        if !ids.insert(apr.id.clone()) {
            return Err(err(
                line_no,
                Some(0),
                format!("APR '{}' appears twice", apr.id),
            ));
        }
        match regions.get(&apr.region) {
            Some((name, first)) if name != f[4] => {
                return Err(err(
                    line_no,
                    Some(4),
                    format!(
                        "region '{}' is named '{}' here but '{name}' on line {first}",
                        apr.region, f[4]
                    ),
                ))
            }
            Some(_) => {}
            None => {
                regions.insert(apr.region.clone(), (f[4].to_owned(), line_no));
            }
        }
        aprs.push(apr);
    }
    if !header_seen {
        return Err(FleetError {
            origin: origin.to_owned(),
            line: text.lines().count().max(1),
            column: None,
            message: "no header line; the file has no records".into(),
        });
    }
    Ok(Fleet {
        regions: regions
            .into_iter()
            .map(|(id, (name, _))| Region { id, name })
            .collect(),
        aprs,
    })
}

/// Writes a parsed fleet into the registry.
pub fn import<R: Registry + ?Sized>(registry: &R, fleet: &Fleet) -> Result<ImportReport> {
    let changed = registry.upsert_fleet(&fleet.regions, &fleet.aprs)?;
    Ok(ImportReport {
        regions: fleet.regions.len(),
        aprs: fleet.aprs.len(),
        changed,
    })
}

/// Reads, parses and imports a fleet file.
pub fn import_file<R: Registry + ?Sized>(registry: &R, path: &Path) -> Result<ImportReport> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: format!("cannot read the fleet file {}", path.display()),
        source,
    })?;
    let fleet = parse(&text, &path.display().to_string())?;
    import(registry, &fleet)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "id,name,comuna,region,region_name,beneficiaries,connections,source,capacity_l_s,storage_m3,gore_contribution_clp,public_investment_clp";

    fn with(lines: &[&str]) -> String {
        let mut s = format!("# comment\n{HEADER}\n");
        for l in lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    const GOOD: &str = "a1,APR Uno,Yumbel,biobio,Biobío,438,137,pozo,1.4,20,130317500,883172700";

    #[test]
    fn parses_records_and_collects_regions() {
        let f = parse(
            &with(&[
                GOOD,
                "a2,APR Dos,Colina,rm,Metropolitana,10,3,vertiente,0.5,10,1,2",
            ]),
            "t.csv",
        )
        .unwrap();
        assert_eq!(f.aprs.len(), 2);
        assert_eq!(f.aprs[0].beneficiaries, 438);
        assert_eq!(f.aprs[0].capacity_l_s, 1.4);
        assert_eq!(f.regions.len(), 2);
        assert_eq!(f.regions[0].name, "Biobío");
    }

    #[test]
    fn a_bad_number_names_its_line_and_column() {
        let e = parse(
            &with(&[
                GOOD,
                "a2,APR Dos,Colina,rm,Metropolitana,many,3,pozo,0.5,10,1,2",
            ]),
            "t.csv",
        )
        .unwrap_err();
        assert_eq!(e.line, 4);
        assert_eq!(e.column, Some((6, "beneficiaries")));
        assert_eq!(
            e.to_string(),
            "t.csv line 4, column 6 (beneficiaries): 'many' is not a non-negative integer"
        );
    }

    #[test]
    fn a_missing_field_names_its_line() {
        let e = parse(
            &with(&["a2,APR Dos,Colina,rm,Metropolitana,1,3,pozo,0.5,10,1"]),
            "t.csv",
        )
        .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("11 fields; expected 12"), "{e}");
    }

    #[test]
    fn a_bad_id_a_duplicate_and_a_negative_amount_are_refused() {
        let e = parse(&with(&["A 1,x,c,r,R,1,1,pozo,1,1,1,1"]), "t.csv").unwrap_err();
        assert_eq!(e.column, Some((1, "id")));
        let e = parse(&with(&[GOOD, GOOD]), "t.csv").unwrap_err();
        assert_eq!((e.line, e.column), (4, Some((1, "id"))));
        let e = parse(&with(&["a1,x,c,r,R,1,1,pozo,1,1,-5,1"]), "t.csv").unwrap_err();
        assert_eq!(e.column, Some((11, "gore_contribution_clp")));
        let e = parse(&with(&["a1,x,c,r,R,1,1,pozo,NaN,1,5,1"]), "t.csv").unwrap_err();
        assert_eq!(e.column, Some((9, "capacity_l_s")));
    }

    #[test]
    fn a_region_must_keep_its_name() {
        let e = parse(
            &with(&[GOOD, "a2,x,c,biobio,Bio Bio,1,1,pozo,1,1,1,1"]),
            "t.csv",
        )
        .unwrap_err();
        assert_eq!(e.column, Some((5, "region_name")));
        assert!(e.message.contains("line 3"), "{e}");
    }

    #[test]
    fn a_wrong_header_is_refused() {
        let e = parse("id,name\n", "t.csv").unwrap_err();
        assert_eq!(e.line, 1);
        assert_eq!(e.column, Some((3, "comuna")));
        let e = parse(&HEADER.replace("comuna", "commune"), "t.csv").unwrap_err();
        assert!(e.message.contains("'commune'"), "{e}");
        let e = parse("# only a comment\n", "t.csv").unwrap_err();
        assert!(e.message.contains("no header"), "{e}");
    }

    #[test]
    fn the_demo_fleet_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/fleet.csv");
        let f = parse(&std::fs::read_to_string(path).unwrap(), path).unwrap();
        assert_eq!(f.aprs.len(), 56);
        assert_eq!(f.regions.len(), 4);
    }
}
