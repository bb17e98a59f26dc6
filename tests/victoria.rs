//! The external series engine (issue 5, acceptance 6): with VictoriaMetrics
//! selected (a real one, started on loopback by the test), the demo runs,
//! its views show the same figures as with the embedded store, and the
//! readings written are read back exactly, none twice.
//!
//! Needs Debian's `victoria-metrics` (`bash tests/setup.sh` installs it).

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apr::demo::{start, Demo, DemoOptions};
use apr_wire::ingest::{IngestAck, IngestBatch, IngestPack};
use apr_wire::validate::Reading;
use apr_wire::Metric;
use serde_json::Value;
use support::{eventually, get_json, VictoriaMetrics};

fn any_port() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

async fn demo(history_days: u32, series_url: Option<String>) -> Demo {
    start(DemoOptions {
        http: any_port(),
        mqtt: any_port(),
        history_days,
        // Live readings every hour: the comparisons below read windows the
        // live fleet does not write into.
        report_interval: Duration::from_secs(3600),
        series_url,
        ..DemoOptions::default()
    })
    .await
    .expect("demo starts")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ms_of(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .expect("RFC 3339 time")
        .timestamp_millis()
}

fn token(demo: &Demo, role: &str) -> String {
    demo.credentials.user(role).expect("role").token.clone()
}

/// The readings API's points as (ms, value).
async fn readings(
    http: &reqwest::Client,
    demo: &Demo,
    apr: &str,
    metric: &str,
    from_ms: i64,
    to_ms: i64,
    step_s: Option<u64>,
) -> Vec<(i64, f64)> {
    let mut url = format!(
        "http://{}/api/v1/aprs/{apr}/readings?metric={metric}&from={}&to={}",
        demo.http_addr,
        rfc3339(from_ms),
        rfc3339(to_ms)
    );
    if let Some(s) = step_s {
        url.push_str(&format!("&step={s}"));
    }
    let (status, body) = get_json(http, &url, Some(&token(demo, "admin"))).await;
    assert_eq!(status, 200, "{url}: {body}");
    body["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| {
            (
                ms_of(p["t"].as_str().expect("t")),
                p["v"].as_f64().expect("v"),
            )
        })
        .collect()
}

/// Every raw sample of an export, merged over its series, by time.
fn samples(export: &[Value]) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, String, f64)> = Vec::new();
    for s in export {
        let device = s["metric"]["device"].as_str().unwrap_or("").to_string();
        let ts = s["timestamps"].as_array().expect("timestamps");
        let vs = s["values"].as_array().expect("values");
        assert_eq!(ts.len(), vs.len());
        for (t, v) in ts.iter().zip(vs) {
            out.push((
                t.as_i64().expect("t"),
                device.clone(),
                v.as_f64().expect("v"),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    out.into_iter().map(|(t, _, v)| (t, v)).collect()
}

/// Bucket means as CONTRACT §3 defines them: buckets start at
/// `floor(t / step) * step`, each the mean of its raw points, summed as
/// SQLite's `AVG` does (Kahan-Babuska-Neumaier), the embedded store's
/// reference.
fn bucket_means(points: &[(i64, f64)], step_ms: i64) -> Vec<(i64, f64)> {
    // (bucket, sum, compensation, count)
    let mut out: Vec<(i64, f64, f64, u32)> = Vec::new();
    for &(t, v) in points {
        let b = t.div_euclid(step_ms) * step_ms;
        if out.last().is_none_or(|l| l.0 != b) {
            out.push((b, 0.0, 0.0, 0));
        }
        let (_, sum, err, n) = out.last_mut().expect("a bucket");
        let t = *sum + v;
        if sum.abs() > v.abs() {
            *err += (*sum - t) + v;
        } else {
            *err += (v - t) + *sum;
        }
        *sum = t;
        *n += 1;
    }
    out.into_iter()
        .map(|(b, sum, err, n)| (b, (sum + err) / f64::from(n)))
        .collect()
}

async fn summary(http: &reqwest::Client, demo: &Demo) -> Value {
    let (status, s) = get_json(
        http,
        &format!("http://{}/api/v1/summary", demo.http_addr),
        Some(&token(demo, "admin")),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    s
}

async fn wait_history(demo: &Demo) {
    eventually(
        Duration::from_secs(240),
        "history at the server",
        || async { demo.history_stored().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_on_victoriametrics_and_its_views_are_the_engines_samples() {
    let vm = VictoriaMetrics::start();
    let http = reqwest::Client::new();
    let started_ms = now_ms();
    let demo = demo(1, Some(vm.url())).await;
    wait_history(&demo).await;
    vm.flush(&http).await;

    // The programme figures (registry: SQLite) are the contract's.
    let s = summary(&http, &demo).await;
    assert_eq!(s["aprs"], 56);
    assert_eq!(s["comunas"], 48);
    assert_eq!(s["regions"], 4);
    assert_eq!(s["beneficiaries"], 21092);
    assert_eq!(s["gore_contribution_clp"], 5_071_159_500u64);
    assert_eq!(s["public_investment_clp"], 52_740_058_800u64);

    // The history window, which the live fleet (hourly) does not write into.
    let from = started_ms - 2 * 86_400_000;
    let to = started_ms - 1;
    let aprs: Vec<String> = demo
        .credentials
        .gateways
        .iter()
        .map(|g| g.apr.clone())
        .collect();
    let picked = [&aprs[0], &aprs[aprs.len() / 2], &aprs[aprs.len() - 1]];
    let mut compared = 0usize;
    for apr in picked {
        for metric in [
            "chlorine",
            "turbidity",
            "flow",
            "pressure",
            "tank_level",
            "ph",
        ] {
            let selector = format!("{{__name__=\"apr_{metric}\",apr=\"{apr}\"}}");
            let exported = samples(&vm.export(&http, &selector, from, to).await);
            assert!(
                exported.len() >= 90,
                "{apr}/{metric}: a day of 15-minute history is in VictoriaMetrics, got {}",
                exported.len()
            );
            let raw = readings(&http, &demo, apr, metric, from, to, None).await;
            assert_eq!(
                raw, exported,
                "{apr}/{metric}: raw readings = the engine's samples"
            );
            for step_s in [900u64, 3600] {
                let means = readings(&http, &demo, apr, metric, from, to, Some(step_s)).await;
                assert_eq!(
                    means,
                    bucket_means(&exported, step_s as i64 * 1000),
                    "{apr}/{metric}: step={step_s} = bucket means of the engine's samples"
                );
            }
            compared += raw.len();
        }
    }
    eprintln!("compared {compared} readings of 3 APRs × 6 metrics with the engine's samples");

    // The readings reached the engine, and none of them the SQLite file.
    let stored = demo.state.series().readings_stored();
    assert!(
        stored > 56 * 90,
        "readings accepted by the engine: {stored}"
    );
    demo.shutdown().await.expect("shutdown");
}

/// A known set: three hours of one-minute chlorine, turbidity and pressure
/// readings of one device, at odd milliseconds, values with three decimals.
fn known_set(apr: &str, device: &str, t0: i64) -> Vec<IngestPack> {
    (0..180i64)
        .map(|i| {
            let t_ms = t0 + i * 60_000 + (i * 37) % 1000;
            let x = i as f64;
            IngestPack {
                apr: apr.into(),
                device: device.into(),
                bt: Some(t_ms as f64 / 1000.0),
                received_ms: t_ms + 200,
                readings: vec![
                    Reading {
                        metric: Metric::Chlorine,
                        t_ms,
                        value: ((0.35 + 0.3 * (x / 17.0).sin()) * 1000.0).round() / 1000.0,
                    },
                    Reading {
                        metric: Metric::Turbidity,
                        t_ms,
                        value: ((0.8 + 0.5 * (x / 23.0).cos()) * 1000.0).round() / 1000.0,
                    },
                    Reading {
                        metric: Metric::Pressure,
                        t_ms,
                        value: ((24.0 + 9.0 * (x / 31.0).sin()) * 1000.0).round() / 1000.0,
                    },
                ],
                refusals: Vec::new(),
                raw: None,
            }
        })
        .collect()
}

async fn post_batch(http: &reqwest::Client, demo: &Demo, batch: &IngestBatch) -> IngestAck {
    let gw = demo
        .credentials
        .gateways
        .iter()
        .find(|g| g.gateway == batch.gateway)
        .expect("gateway");
    let resp = http
        .post(format!("http://{}/api/v1/ingest", demo.http_addr))
        .bearer_auth(&gw.token)
        .json(batch)
        .send()
        .await
        .expect("ingest");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert!(status.is_success(), "ingest: {status} {text}");
    serde_json::from_str(&text).expect("an IngestAck")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_readings_show_the_same_figures_on_both_engines_and_are_stored_once() {
    let vm = VictoriaMetrics::start();
    let http = reqwest::Client::new();
    let on_vm = demo(0, Some(vm.url())).await;
    let on_sqlite = demo(0, None).await;

    let gw = on_vm.credentials.gateways[3].clone();
    let device = on_vm
        .credentials
        .devices
        .iter()
        .find(|d| d.apr == gw.apr)
        .expect("a device of the gateway's APR")
        .device
        .clone();
    // Six hours ago, a window the live fleet does not write into.
    let t0 = (now_ms() - 6 * 3_600_000).div_euclid(60_000) * 60_000;
    let packs = known_set(&gw.apr, &device, t0);
    let written: usize = packs.iter().map(|p| p.readings.len()).sum();
    let batch = |seq| IngestBatch {
        gateway: gw.gateway.clone(),
        seq,
        packs: packs.clone(),
        statuses: Vec::new(),
    };

    // The same batch twice through the ingest path of each demo.
    let first = post_batch(&http, &on_vm, &batch(1)).await;
    // Read-your-writes: what the ack covers is searchable when it arrives,
    // series the engine had not seen before included (no flush, no wait).
    for metric in ["chlorine", "turbidity", "pressure"] {
        let now = readings(
            &http,
            &on_vm,
            &gw.apr,
            metric,
            t0 - 1,
            t0 + 4 * 3_600_000,
            None,
        )
        .await;
        assert_eq!(
            now.len(),
            180,
            "{metric}: every acknowledged reading is readable at once"
        );
    }
    let again = post_batch(&http, &on_vm, &batch(2)).await;
    assert_eq!(first.stored, written as u64);
    assert_eq!(
        again.stored, written as u64,
        "the engine does not tell a re-sent reading apart; it stores it once (below)"
    );
    let sq_first = post_batch(&http, &on_sqlite, &batch(1)).await;
    let sq_again = post_batch(&http, &on_sqlite, &batch(2)).await;
    assert_eq!((sq_first.stored, sq_first.duplicates), (written as u64, 0));
    assert_eq!((sq_again.stored, sq_again.duplicates), (0, written as u64));

    // VictoriaMetrics holds exactly the readings written, none twice.
    vm.flush(&http).await;
    let from = t0 - 1;
    let to = t0 + 4 * 3_600_000;
    let selector = format!(
        "{{__name__=~\"apr_.+\",apr=\"{}\",device=\"{device}\"}}",
        gw.apr
    );
    let mut want: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for p in &packs {
        for r in &p.readings {
            want.insert((format!("apr_{}", r.metric.name()), r.t_ms), r.value);
        }
    }
    let got = eventually(
        Duration::from_secs(10),
        "the known set in the engine",
        || {
            let (vm, http, selector) = (&vm, &http, selector.clone());
            async move {
                let export = vm.export(http, &selector, from, to).await;
                let n: usize = export
                    .iter()
                    .map(|s| s["timestamps"].as_array().map_or(0, Vec::len))
                    .sum();
                (n >= written).then_some(export)
            }
        },
    )
    .await;
    let mut have: Vec<((String, i64), f64)> = Vec::new();
    for s in &got {
        let name = s["metric"]["__name__"].as_str().expect("name").to_string();
        for (t, v) in s["timestamps"]
            .as_array()
            .expect("timestamps")
            .iter()
            .zip(s["values"].as_array().expect("values"))
        {
            have.push((
                (name.clone(), t.as_i64().expect("t")),
                v.as_f64().expect("v"),
            ));
        }
    }
    assert_eq!(have.len(), written, "every reading once, none twice");
    let have: BTreeMap<(String, i64), f64> = have.into_iter().collect();
    assert_eq!(have, want, "the engine holds exactly the values written");

    // The views show the same figures on both engines: raw and bucket means.
    for metric in ["chlorine", "turbidity", "pressure"] {
        for step in [None, Some(60u64), Some(900), Some(3600)] {
            let a = readings(&http, &on_vm, &gw.apr, metric, from, to, step).await;
            let b = readings(&http, &on_sqlite, &gw.apr, metric, from, to, step).await;
            assert!(!a.is_empty());
            assert_eq!(a, b, "{metric} step={step:?}: VictoriaMetrics = SQLite");
        }
    }
    // The summary's flags come from assessments each demo computes on its
    // own schedule: its first pass may have assessed an APR before the known
    // set arrived, or (slow over HTTP on VictoriaMetrics) after. Once both
    // have assessed the same readings, the same figures.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut refreshed = false;
    loop {
        let (sv, ss) = (
            summary(&http, &on_vm).await,
            summary(&http, &on_sqlite).await,
        );
        if sv == ss {
            eprintln!("summary on both engines: {sv}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the summary differs between engines (refreshed: {refreshed}):\n  \
             VictoriaMetrics: {sv}\n  SQLite: {ss}"
        );
        for demo in [&on_vm, &on_sqlite] {
            let state = demo.state.clone();
            tokio::task::spawn_blocking(move || apr_server::api::refresh_analysis(&state))
                .await
                .expect("analysis task")
                .expect("analysis pass");
        }
        refreshed = true;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    on_vm.shutdown().await.expect("shutdown");
    on_sqlite.shutdown().await.expect("shutdown");
}

/// What the fault proxy does with `/api/v1/series`.
const PASS: u8 = 0;
/// Answers an empty list: the engine has not indexed anything yet.
const NOT_LISTED: u8 = 1;
/// Answers 500.
const FAIL: u8 = 2;

/// A proxy in front of the real engine that passes every request through
/// but `/api/v1/series`, which it answers as `mode` says.
async fn fault_proxy(
    upstream: String,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
) -> String {
    use axum::body::{to_bytes, Body};
    use axum::extract::Request;
    use axum::response::Response;
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (http, upstream, mode) = (http.clone(), upstream.clone(), mode.clone());
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            if path.starts_with("/api/v1/series") {
                match mode.load(Ordering::Relaxed) {
                    NOT_LISTED => {
                        return Response::new(Body::from(r#"{"status":"success","data":[]}"#))
                    }
                    FAIL => {
                        let mut r = Response::new(Body::from("injected failure"));
                        *r.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        return r;
                    }
                    _ => {}
                }
            }
            let method = req.method().clone();
            let headers = req.headers().clone();
            let body = to_bytes(req.into_body(), usize::MAX).await.expect("body");
            let mut up = http.request(method, format!("{upstream}{path}")).body(body);
            if let Some(ct) = headers.get("content-type") {
                up = up.header("content-type", ct);
            }
            let resp = up.send().await.expect("upstream");
            let status = resp.status();
            let mut r = Response::new(Body::from(resp.bytes().await.expect("upstream body")));
            *r.status_mut() = status;
            r
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("proxy") });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_new_series_delays_the_ack_to_the_timeout_and_a_failing_list_fails_the_write_losing_nothing(
) {
    use apr_server::store::{SeriesStore, SqliteStore, VictoriaSeries, VictoriaSettings};
    use std::sync::atomic::AtomicU8;
    use std::sync::Arc;

    let vm = VictoriaMetrics::start();
    let http = reqwest::Client::new();
    let mode = Arc::new(AtomicU8::new(NOT_LISTED));
    let proxy = fault_proxy(vm.url(), mode.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(&dir.path().join("s.sqlite3"), 1).expect("sqlite");
    let timeout = Duration::from_secs(1);
    let store = Arc::new(
        VictoriaSeries::open(
            Arc::new(sqlite),
            VictoriaSettings {
                url: proxy,
                org: "apr".into(),
                bucket: "apr".into(),
                token: None,
                timeout,
                flush_after_write: true,
            },
        )
        .expect("engine answers"),
    );
    let t0 = (now_ms() - 6 * 3_600_000).div_euclid(60_000) * 60_000;
    let batch = |device: &str| IngestBatch {
        gateway: "gw-fault".into(),
        seq: 1,
        packs: known_set("fault-apr", device, t0)
            .into_iter()
            .take(20)
            .collect(),
        statuses: Vec::new(),
    };
    let write = |b: IngestBatch| {
        let store = store.clone();
        async move {
            let started = std::time::Instant::now();
            let r = tokio::task::spawn_blocking(move || store.write_batch(b))
                .await
                .expect("write task");
            (r, started.elapsed())
        }
    };
    let in_engine = |device: &'static str| {
        let (vm, http) = (&vm, &http);
        async move {
            vm.flush(http).await;
            let selector =
                format!("{{__name__=~\"apr_.+\",apr=\"fault-apr\",device=\"{device}\"}}");
            let export = vm.export(http, &selector, t0 - 1, t0 + 3_600_000).await;
            export
                .iter()
                .map(|s| s["timestamps"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        }
    };

    // Never listed: the ack waits for the request timeout, then goes out
    // (the engine holds the readings).
    let (r, took) = write(batch("dev-a")).await;
    let ack = r.expect("acknowledged after the timeout");
    assert_eq!(ack.stored, 60);
    assert!(took >= timeout, "the ack waited for the listing: {took:?}");
    assert!(took < timeout * 10, "and not much longer: {took:?}");
    assert_eq!(in_engine("dev-a").await, 60);

    // The listing fails: the write fails, saying where; what was written is
    // in the engine, and the gateway's retry stores each reading once.
    mode.store(FAIL, Ordering::Relaxed);
    let (r, _) = write(batch("dev-b")).await;
    let err = r.expect_err("a failing series list fails the write");
    assert!(err.to_string().contains("time-series engine"), "{err}");
    assert_eq!(
        in_engine("dev-b").await,
        60,
        "nothing already written is lost"
    );
    mode.store(PASS, Ordering::Relaxed);
    let (r, took) = write(batch("dev-b")).await;
    assert_eq!(r.expect("the retry is acknowledged").stored, 60);
    assert!(took < timeout, "listed at once: {took:?}");
    assert_eq!(in_engine("dev-b").await, 60, "each reading once");
}
