//! The Grafana dashboards (`dashboards/grafana/`, issue 6): Grafana cannot
//! be installed here, so every panel's query runs against a real
//! VictoriaMetrics holding a day of demo data (the demo on the external
//! series engine) and must return at least one series.
//!
//! Needs Debian's `victoria-metrics` (`bash tests/setup.sh` installs it).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apr::demo::{start, DemoOptions};
use serde_json::Value;
use support::{eventually, VictoriaMetrics};

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/grafana")
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = grafana_dir().join("dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("dashboards/grafana/dashboards")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read dashboard");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten().cloned());
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// `label_values(metric, label)` of a template variable.
fn label_values_of(var: &Value) -> Option<(String, String)> {
    let q = var["query"]["query"]
        .as_str()
        .or_else(|| var["query"].as_str())?;
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (metric, label) = inner.rsplit_once(',')?;
    Some((metric.trim().to_string(), label.trim().to_string()))
}

fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut e = expr.to_string();
    // Longest names first, so `$apr` does not eat `$apr_x`.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        let v = &vars[n];
        e = e
            .replace(&format!("${{{n}}}"), v)
            .replace(&format!("[[{n}]]"), v)
            .replace(&format!("${n}"), v);
    }
    e
}

#[test]
fn the_dashboards_use_the_provisioned_datasource_and_every_panel_has_a_query() {
    let ds = std::fs::read_to_string(
        grafana_dir().join("provisioning/datasources/victoriametrics.yaml"),
    )
    .expect("datasource provisioning");
    assert!(ds.contains("type: prometheus") && ds.contains("uid: victoriametrics"));
    assert!(grafana_dir()
        .join("provisioning/dashboards/apr.yaml")
        .exists());
    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["gore.json", "ingenieria.json", "operador.json"]);
    for (name, d) in &all {
        assert!(
            d["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}: uid"
        );
        let ps = panels(d);
        assert!(!ps.is_empty(), "{name}: panels");
        for p in ps {
            let title = p["title"].as_str().unwrap_or("?");
            assert_eq!(p["datasource"]["uid"], "victoriametrics", "{name}: {title}");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: {title} has no query");
            for t in targets {
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                    "{name}: {title}: a target without expr"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_returns_series_from_victoriametrics_holding_demo_data() {
    let vm = VictoriaMetrics::start();
    let http = reqwest::Client::new();
    let demo = start(DemoOptions {
        http: "127.0.0.1:0".parse().expect("addr"),
        mqtt: "127.0.0.1:0".parse().expect("addr"),
        history_days: 1,
        series_url: Some(vm.url()),
        ..DemoOptions::default()
    })
    .await
    .expect("demo starts");
    eventually(
        Duration::from_secs(240),
        "history at the server",
        || async { demo.history_stored().then_some(()) },
    )
    .await;
    vm.flush(&http).await;

    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut ran = 0;
    let mut empty = Vec::new();
    for (name, d) in dashboards() {
        // Each template variable takes the first value VictoriaMetrics has
        // for its label (a demo APR id, a demo region).
        let mut vars = BTreeMap::new();
        for var in d["templating"]["list"].as_array().into_iter().flatten() {
            let vname = var["name"].as_str().expect("variable name").to_string();
            let (metric, label) = label_values_of(var)
                .unwrap_or_else(|| panic!("{name}: variable {vname} is not label_values(m, l)"));
            let values: Value = http
                .get(format!("{}/api/v1/label/{label}/values", vm.url()))
                .query(&[("match[]", metric.as_str())])
                .send()
                .await
                .expect("label values")
                .json()
                .await
                .expect("label values JSON");
            let first = values["data"][0]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no value of {label} for {metric}: {values}"))
                .to_string();
            vars.insert(vname, first);
        }
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = substitute(t["expr"].as_str().expect("expr"), &vars);
                assert!(
                    !expr.contains('$'),
                    "{name}: {title}: unresolved variable in {expr}"
                );
                let result = vm
                    .query_range(&http, &expr, now_s - 86_400, now_s, 900)
                    .await;
                let points: usize = result
                    .iter()
                    .map(|s| s["values"].as_array().map_or(0, Vec::len))
                    .sum();
                eprintln!("{name} · {title}: {} series, {points} points", result.len());
                if result.is_empty() || points == 0 {
                    empty.push(format!("{name} · {title}: {expr}"));
                }
                ran += 1;
            }
        }
    }
    assert!(ran >= 20, "only {ran} panel queries ran");
    assert!(
        empty.is_empty(),
        "panel queries without series:\n{}",
        empty.join("\n")
    );
    demo.shutdown().await.expect("shutdown");
}
