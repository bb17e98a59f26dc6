//! Configuration loading shared by every deployable part: a TOML file (or
//! none, for the defaults) overlaid with environment variables.
//!
//! An override names a key path with double underscores after a prefix:
//! `APR_SERVER__HTTP__LISTEN=0.0.0.0:8080` sets `[http] listen`. The value is
//! read as a TOML value when it parses as one (`42`, `true`, `["a"]`) and as a
//! string otherwise. Unknown keys are refused by the config structs
//! (`deny_unknown_fields`), so a typo in a file or a variable is an error that
//! names the key, not a silently ignored setting.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

/// Why a configuration could not be loaded.
#[derive(Debug)]
pub struct SettingsError(pub String);

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingsError {}

/// Loads `T` from an optional TOML file and the environment variables that
/// start with `prefix` (e.g. `APR_SERVER`).
pub fn load<T: DeserializeOwned>(file: Option<&Path>, prefix: &str) -> Result<T, SettingsError> {
    let text = match file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| SettingsError(format!("cannot read config file {}: {e}", p.display())))?,
        None => String::new(),
    };
    let origin = file.map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
    load_from(&text, &origin, prefix, std::env::vars())
}

/// Like [`load`], from text and an explicit set of variables (for tests).
pub fn load_from<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    prefix: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, SettingsError> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| SettingsError(format!("{origin}: invalid TOML: {e}")))?;
    let head = format!("{prefix}__");
    for (key, value) in vars {
        let Some(path) = key.strip_prefix(&head) else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if parts.iter().any(String::is_empty) {
            return Err(SettingsError(format!(
                "environment variable {key}: empty key part"
            )));
        }
        set_path(&mut table, &parts, parse_value(&value))
            .map_err(|e| SettingsError(format!("environment variable {key}: {e}")))?;
    }
    T::deserialize(toml::Value::Table(table))
        .map_err(|e| SettingsError(format!("{origin} (with environment overrides): {e}")))
}

fn parse_value(raw: &str) -> toml::Value {
    let probe = format!("x = {raw}");
    match probe.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("x")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, parts: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = parts.split_last().ok_or("empty key")?;
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("{p} is not a section"))?;
    }
    cur.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default)]
        http: Http,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Http {
        listen: String,
        workers: u32,
    }

    impl Default for Http {
        fn default() -> Self {
            Http {
                listen: "127.0.0.1:8080".into(),
                workers: 2,
            }
        }
    }

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
    }

    #[test]
    fn environment_overrides_the_file_and_the_defaults() {
        let c: Cfg = load_from(
            "[http]\nlisten = \"0.0.0.0:1\"\n",
            "f.toml",
            "APR_X",
            vars(&[("APR_X__HTTP__WORKERS", "8"), ("OTHER", "1")]),
        )
        .unwrap();
        assert_eq!(c.http.listen, "0.0.0.0:1");
        assert_eq!(c.http.workers, 8);
        let c: Cfg = load_from("", "defaults", "APR_X", vars(&[])).unwrap();
        assert_eq!(c.http, Http::default());
    }

    #[test]
    fn typos_are_errors_that_name_the_key() {
        let e = load_from::<Cfg>("[http]\nlisen = 1\n", "f.toml", "APR_X", vars(&[])).unwrap_err();
        assert!(e.0.contains("lisen") && e.0.contains("f.toml"), "{e}");
        let e = load_from::<Cfg>("", "defaults", "APR_X", vars(&[("APR_X__HTTP__PORT", "1")]))
            .unwrap_err();
        assert!(e.0.contains("port"), "{e}");
        let e = load_from::<Cfg>("[http", "f.toml", "APR_X", vars(&[])).unwrap_err();
        assert!(e.0.contains("invalid TOML"), "{e}");
    }
}
