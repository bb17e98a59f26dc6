//! End-to-end: the demo's whole data path, real parts only (embedded broker
//! behind the device gate, one gateway per APR, the server and its SQLite
//! store, the simulated fleet), checked from outside through MQTT and HTTP.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apr::demo::{start, Demo, DemoOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use support::{eventually, get_json, get_text, prom_value};

fn any_port() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

async fn demo(history_days: u32) -> Demo {
    start(DemoOptions {
        http: any_port(),
        mqtt: any_port(),
        history_days,
        ..DemoOptions::default()
    })
    .await
    .expect("demo starts")
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

fn rfc3339(s: f64) -> String {
    chrono::DateTime::from_timestamp_millis((s * 1000.0) as i64)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn token(demo: &Demo, role: &str) -> String {
    demo.credentials.user(role).expect("role").token.clone()
}

/// A test device client with the credentials of `index`-th demo device.
async fn device_client(demo: &Demo, index: usize) -> (AsyncClient, String, String) {
    let d = &demo.credentials.devices[index];
    let mut o = MqttOptions::new(
        format!("test-{}-{}", d.device, rand_suffix()),
        demo.mqtt_addr.ip().to_string(),
        demo.mqtt_addr.port(),
    );
    o.set_credentials(d.mqtt_username.clone(), d.mqtt_password.clone());
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    (client, d.apr.clone(), d.device.clone())
}

fn rand_suffix() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Readings of `metric` at `apr` between two times (seconds), as (t, v).
async fn points(
    http: &reqwest::Client,
    demo: &Demo,
    apr: &str,
    metric: &str,
    from: f64,
    to: f64,
) -> Vec<(String, f64)> {
    let url = format!(
        "http://{}/api/v1/aprs/{apr}/readings?metric={metric}&from={}&to={}",
        demo.http_addr,
        rfc3339(from),
        rfc3339(to)
    );
    let (status, body) = get_json(http, &url, Some(&token(demo, "admin"))).await;
    assert_eq!(status, 200, "{url}: {body}");
    body["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| {
            (
                p["t"].as_str().expect("t").to_string(),
                p["v"].as_f64().expect("v"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_the_programme_figures_and_a_month_of_history_for_every_metric() {
    let started = Instant::now();
    let demo = demo(30).await;
    let http = reqwest::Client::new();
    let admin = token(&demo, "admin");
    let (status, summary) = get_json(
        &http,
        &format!("http://{}/api/v1/summary", demo.http_addr),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(summary["aprs"], 56);
    assert_eq!(summary["comunas"], 48);
    assert_eq!(summary["regions"], 4);
    assert_eq!(summary["beneficiaries"], 21092);
    assert_eq!(summary["gore_contribution_clp"], 5_071_159_500u64);
    assert_eq!(summary["public_investment_clp"], 52_740_058_800u64);
    let (_, aprs) = get_json(
        &http,
        &format!("http://{}/api/v1/aprs", demo.http_addr),
        Some(&admin),
    )
    .await;
    let aprs = aprs.as_array().expect("list").clone();
    assert_eq!(aprs.len(), 56);

    // The history backfill is acknowledged end to end within 60 s of start:
    // to the devices, and forwarded from the gateways' spools to the server.
    eventually(Duration::from_secs(60), "history acknowledged", || async {
        demo.history_stored().then_some(())
    })
    .await;
    eprintln!(
        "history of 56 APRs × 30 days acknowledged {:?} after start",
        started.elapsed()
    );

    // Every metric of every APR covers the window (15-minute history reports).
    let now = now_s();
    let from = now - 30.0 * 86_400.0;
    let metrics = [
        "flow",
        "volume",
        "chlorine",
        "turbidity",
        "ph",
        "conductivity",
        "pressure",
        "tank_level",
        "pump",
        "battery",
        "rssi",
    ];
    for apr in &aprs {
        let id = apr["id"].as_str().expect("id");
        for m in metrics {
            let url = format!(
                "http://{}/api/v1/aprs/{id}/readings?metric={m}&from={}&to={}&step=86400",
                demo.http_addr,
                rfc3339(from),
                rfc3339(now + 60.0),
            );
            // Acknowledged means on the gateway's disk; the spool reaches
            // the server moments later.
            let what = format!("{id} {m}: 30 daily buckets of 30 days");
            eventually(Duration::from_secs(60), &what, || {
                let (http, url, admin) = (http.clone(), url.clone(), admin.clone());
                async move {
                    let (status, body) = get_json(&http, &url, Some(&admin)).await;
                    assert_eq!(status, 200, "{url}: {body}");
                    let days = body["points"].as_array().expect("points").len();
                    (days >= 30).then_some(())
                }
            })
            .await;
        }
    }
    // The recorded intervention (the operator's APR had its empty
    // chlorinator refilled two weeks ago) shows chlorine compliance before
    // and after, as values, consistent with the scenario behind it.
    let url = format!(
        "http://{}/api/v1/aprs/{}/interventions",
        demo.http_addr,
        apr::demo::INTERVENTION_APR
    );
    let (before, after) = eventually(
        Duration::from_secs(120),
        "the intervention's outcome",
        || {
            let http = http.clone();
            let url = url.clone();
            let admin = admin.clone();
            async move {
                let (s, body) = get_json(&http, &url, Some(&admin)).await;
                if s != 200 {
                    return None;
                }
                let list = body
                    .as_array()
                    .cloned()
                    .or_else(|| body["interventions"].as_array().cloned())?;
                let kpis = list.first()?["outcome"]["kpis"].as_array()?.clone();
                let c = kpis
                    .iter()
                    .find(|k| k["kpi"] == "chlorine_compliance_pct")?;
                Some((c["before"].as_f64()?, c["after"].as_f64()?))
            }
        },
    )
    .await;
    eprintln!("chlorine compliance before the refill {before:.1} %, after {after:.1} %");
    assert!(
        before < 50.0,
        "an empty chlorinator: compliance {before} % before"
    );
    assert!(after > 90.0, "refilled: compliance {after} % after");
    demo.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_published_by_mosquitto_pub_is_returned_by_the_api_within_two_seconds() {
    let demo = demo(0).await;
    let http = reqwest::Client::new();
    let d = demo.credentials.devices[0].clone();
    let bt = now_s().floor();
    let value = 0.123;
    let payload = format!(
        r#"[{{"bn":"urn:apr:{a}:{dv}:","bt":{bt},"n":"chlorine","u":"mg/l","v":{value}}},
            {{"n":"turbidity","u":"NTU","v":0.8}},{{"n":"flow","u":"l/s","v":2.4}}]"#,
        a = d.apr,
        dv = d.device
    );
    let published = Instant::now();
    let st = std::process::Command::new(support::which("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &demo.mqtt_addr.port().to_string()])
        .args(["-u", &d.mqtt_username, "-P", &d.mqtt_password, "-q", "1"])
        .args([
            "-t",
            &format!("apr/{}/{}/up", d.apr, d.device),
            "-m",
            &payload,
        ])
        .status()
        .expect("run mosquitto_pub");
    assert!(st.success(), "mosquitto_pub failed");
    let found = eventually(Duration::from_secs(2), "the published reading", || {
        let http = http.clone();
        let demo = &demo;
        let apr = d.apr.clone();
        async move {
            let p = points(&http, demo, &apr, "chlorine", bt - 1.0, bt + 1.0).await;
            p.into_iter().find(|(_, v)| (*v - value).abs() < 1e-9)
        }
    })
    .await;
    eprintln!(
        "published → queryable in {:?}: {found:?}",
        published.elapsed()
    );
    assert!(found.0.starts_with(
        &chrono::DateTime::from_timestamp(bt as i64, 0)
            .expect("t")
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    ));
    demo.shutdown().await.expect("clean shutdown");
}

struct BadCase {
    reason: &'static str,
    /// Build the payload from (apr, device, bt); a good chlorine record with
    /// value `GOOD` at `bt` is part of the pack unless the pack is refused whole.
    payload: fn(&str, &str, f64) -> Vec<u8>,
    whole_pack: bool,
    detail: &'static str,
}

const GOOD: f64 = 0.777;

fn with_good(apr: &str, dev: &str, bt: f64, bad: &str) -> Vec<u8> {
    format!(
        r#"[{{"bn":"urn:apr:{apr}:{dev}:","bt":{bt},"n":"chlorine","u":"mg/l","v":{GOOD}}},{bad}]"#
    )
    .into_bytes()
}

const CASES: &[BadCase] = &[
    BadCase {
        reason: "malformed",
        payload: |_, _, _| b"[{\"n\":\"chlorine\",\"u\":\"mg/l\",\"v\":0.5".to_vec(),
        whole_pack: true,
        detail: "JSON",
    },
    BadCase {
        reason: "oversized",
        payload: |apr, dev, bt| {
            let mut p = with_good(apr, dev, bt, r#"{"n":"flow","u":"l/s","v":1}"#);
            p.pop();
            p.extend(std::iter::repeat_n(b' ', 17 * 1024));
            p.push(b']');
            p
        },
        whole_pack: true,
        detail: "exceeds",
    },
    BadCase {
        reason: "unknown_metric",
        payload: |a, d, bt| with_good(a, d, bt, r#"{"n":"temperature","u":"Cel","v":20}"#),
        whole_pack: false,
        detail: "temperature",
    },
    BadCase {
        reason: "wrong_unit",
        payload: |a, d, bt| with_good(a, d, bt, r#"{"n":"turbidity","u":"FNU","v":1}"#),
        whole_pack: false,
        detail: "FNU",
    },
    BadCase {
        reason: "out_of_range",
        payload: |a, d, bt| with_good(a, d, bt, r#"{"n":"ph","u":"pH","v":19}"#),
        whole_pack: false,
        detail: "range",
    },
    BadCase {
        reason: "spoofed_bn",
        payload: |_, d, bt| {
            format!(r#"[{{"bn":"urn:apr:someone-else:{d}:","bt":{bt},"n":"chlorine","u":"mg/l","v":{GOOD}}}]"#)
                .into_bytes()
        },
        whole_pack: true,
        detail: "someone-else",
    },
    BadCase {
        reason: "future_time",
        payload: |a, d, bt| with_good(a, d, bt, r#"{"n":"flow","u":"l/s","t":86400,"v":1}"#),
        whole_pack: false,
        detail: "after arrival",
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_reason_is_counted_quarantined_and_keeps_the_good_records() {
    let demo = demo(0).await;
    let http = reqwest::Client::new();
    let metrics_url = format!("http://{}/metrics", demo.http_addr);
    let (client, apr, dev) = device_client(&demo, 0).await;
    let topic = format!("apr/{apr}/{dev}/up");
    for (i, case) in CASES.iter().enumerate() {
        let before = get_text(&http, &metrics_url).await;
        let series = format!("apr_refused_total{{reason=\"{}\"}}", case.reason);
        let count_before = prom_value(&before, &series);
        let bt = now_s().floor() - 100.0 + i as f64;
        client
            .publish(
                &topic,
                QoS::AtLeastOnce,
                false,
                (case.payload)(&apr, &dev, bt),
            )
            .await
            .expect("publish");
        eventually(Duration::from_secs(5), case.reason, || {
            let http = http.clone();
            let url = metrics_url.clone();
            let series = series.clone();
            async move {
                let m = get_text(&http, &url).await;
                (prom_value(&m, &series) >= count_before + 1.0).then_some(())
            }
        })
        .await;
        let q = demo
            .state
            .series()
            .quarantine(&apr, 50)
            .expect("quarantine");
        let entry = q
            .iter()
            .find(|e| e.reason == case.reason)
            .unwrap_or_else(|| panic!("{} not in the quarantine: {q:?}", case.reason));
        assert!(
            entry.detail.contains(case.detail),
            "{}: detail {:?} should mention {:?}",
            case.reason,
            entry.detail,
            case.detail
        );
        let stored = points(&http, &demo, &apr, "chlorine", bt - 0.5, bt + 0.5).await;
        if case.whole_pack {
            assert!(
                stored.is_empty(),
                "{}: refused pack stored {stored:?}",
                case.reason
            );
        } else {
            assert_eq!(
                stored.len(),
                1,
                "{}: the good record of the pack",
                case.reason
            );
            assert_eq!(stored[0].1, GOOD);
        }
    }
    // The pipeline still runs: a good pack afterwards is stored.
    let bt = now_s().floor();
    client
        .publish(
            &topic,
            QoS::AtLeastOnce,
            false,
            with_good(&apr, &dev, bt, r#"{"n":"flow","u":"l/s","v":3}"#),
        )
        .await
        .expect("publish");
    eventually(
        Duration::from_secs(5),
        "a good pack after the bad ones",
        || {
            let http = http.clone();
            let demo = &demo;
            let apr = apr.clone();
            async move {
                (!points(&http, demo, &apr, "flow", bt - 0.5, bt + 0.5)
                    .await
                    .is_empty())
                .then_some(())
            }
        },
    )
    .await;
    demo.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_pack_published_twice_is_stored_once_and_acknowledged_both_times() {
    let demo = demo(0).await;
    let http = reqwest::Client::new();
    let d = demo.credentials.devices[1].clone();
    let mut o = MqttOptions::new(
        "dup-test",
        demo.mqtt_addr.ip().to_string(),
        demo.mqtt_addr.port(),
    );
    o.set_credentials(d.mqtt_username.clone(), d.mqtt_password.clone());
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let ack_topic = format!("apr/{}/{}/ack", d.apr, d.device);
    client
        .subscribe(&ack_topic, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                if let Ok(v) = serde_json::from_slice(&p.payload) {
                    let _ = ack_tx.send(v);
                }
            }
        }
    });
    let bt = now_s().floor() - 30.0;
    let pack = format!(
        r#"[{{"bn":"urn:apr:{}:{}:","bt":{bt},"n":"pressure","u":"mca","v":21.5}},{{"n":"tank_level","u":"%","v":64}}]"#,
        d.apr, d.device
    );
    let metrics_url = format!("http://{}/metrics", demo.http_addr);
    for round in 0..2 {
        let before = get_text(&http, &metrics_url).await;
        client
            .publish(
                format!("apr/{}/{}/up", d.apr, d.device),
                QoS::AtLeastOnce,
                false,
                pack.clone(),
            )
            .await
            .expect("publish");
        let acked = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let v = ack_rx.recv().await.expect("ack channel");
                if v.as_array()
                    .is_some_and(|a| a.iter().any(|x| x.as_f64() == Some(bt)))
                {
                    return;
                }
            }
        })
        .await;
        assert!(acked.is_ok(), "round {round}: no ack naming bt {bt}");
        // The ack comes once the gateway's spool holds the pack (fsync);
        // the server stores it right after: wait for its counters to move.
        let (stored, dups) = eventually(
            Duration::from_secs(10),
            "the pack reaches the store",
            || {
                let (http, url, before) = (&http, &metrics_url, &before);
                async move {
                    let after = get_text(http, url).await;
                    let stored = prom_value(&after, "apr_readings_stored_total")
                        - prom_value(before, "apr_readings_stored_total");
                    let dups = prom_value(&after, "apr_readings_duplicate_total")
                        - prom_value(before, "apr_readings_duplicate_total");
                    (stored + dups >= 2.0).then_some((stored, dups))
                }
            },
        )
        .await;
        if round == 1 {
            assert!(dups >= 2.0, "the repeat counts as duplicates (got {dups})");
        } else {
            assert!(
                stored >= 2.0,
                "the first delivery stores 2 readings (got {stored})"
            );
        }
    }
    let p = points(&http, &demo, &d.apr, "pressure", bt - 1.0, bt + 1.0).await;
    assert_eq!(p.len(), 1, "stored once: {p:?}");
    demo.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_hold_on_the_running_demo() {
    let demo = demo(0).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/api/v1", demo.http_addr);
    let op = demo.credentials.user("operator").expect("operator").clone();
    let own = op.aprs.clone().expect("aprs")[0].clone();
    let (_, all) = get_json(&http, &format!("{base}/aprs"), Some(&token(&demo, "admin"))).await;
    let all = all.as_array().expect("aprs").clone();
    let other_region = all
        .iter()
        .find(|a| a["region"] != "biobio")
        .expect("an APR outside Biobío")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let q = "readings?metric=chlorine";
    // Operator: its APR only.
    let (s, list) = get_json(&http, &format!("{base}/aprs"), Some(&op.token)).await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(
        get_json(&http, &format!("{base}/aprs/{own}/{q}"), Some(&op.token))
            .await
            .0,
        200
    );
    assert_eq!(
        get_json(
            &http,
            &format!("{base}/aprs/{other_region}/{q}"),
            Some(&op.token)
        )
        .await
        .0,
        403
    );
    // GORE: its region only.
    let gore = token(&demo, "gore");
    let (_, list) = get_json(&http, &format!("{base}/aprs"), Some(&gore)).await;
    let list = list.as_array().expect("list").clone();
    assert!(!list.is_empty() && list.iter().all(|a| a["region"] == "biobio"));
    assert_eq!(
        get_json(
            &http,
            &format!("{base}/aprs/{other_region}/{q}"),
            Some(&gore)
        )
        .await
        .0,
        403
    );
    let (s, sum) = get_json(&http, &format!("{base}/summary"), Some(&gore)).await;
    assert_eq!(s, 200);
    assert_eq!(sum["regions"], 1);
    assert_eq!(
        get_json(&http, &format!("{base}/summary?region=maule"), Some(&gore))
            .await
            .0,
        403
    );
    // No token, bad token.
    assert_eq!(get_json(&http, &format!("{base}/aprs"), None).await.0, 401);
    assert_eq!(
        get_json(&http, &format!("{base}/aprs"), Some("apr_nope"))
            .await
            .0,
        401
    );
    demo.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_refuses_anonymous_clients_wrong_passwords_and_foreign_topics() {
    let demo = demo(0).await;
    let http = reqwest::Client::new();
    let d = demo.credentials.devices[0].clone();
    let victim = demo.credentials.devices[2].clone();
    let port = demo.mqtt_addr.port().to_string();
    let pubcmd = |user: Option<(&str, &str)>, topic: &str| {
        let mut c = std::process::Command::new(support::which("mosquitto_pub"));
        c.args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic]);
        if let Some((u, p)) = user {
            c.args(["-u", u, "-P", p]);
        }
        let bt = now_s().floor() - 7.0;
        c.args([
            "-m",
            &format!(r#"[{{"bt":{bt},"n":"chlorine","u":"mg/l","v":1.999}}]"#),
        ]);
        c.output().expect("mosquitto_pub")
    };
    let victim_topic = format!("apr/{}/{}/up", victim.apr, victim.device);
    assert!(
        !pubcmd(None, &victim_topic).status.success(),
        "anonymous must be refused"
    );
    assert!(
        !pubcmd(Some((&victim.mqtt_username, "wrong")), &victim_topic)
            .status
            .success(),
        "a wrong password must be refused"
    );
    let denied_before = demo.gate_stats().publishes_denied;
    let out = pubcmd(Some((&d.mqtt_username, &d.mqtt_password)), &victim_topic);
    assert!(
        out.status.success(),
        "the gate acknowledges and drops a foreign publish: {out:?}"
    );
    eventually(Duration::from_secs(3), "the denied publish counted", || {
        let n = demo.gate_stats().publishes_denied;
        async move { (n > denied_before).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let now = now_s();
    let p = points(&http, &demo, &victim.apr, "chlorine", now - 60.0, now).await;
    assert!(
        p.iter().all(|(_, v)| *v != 1.999),
        "a foreign publish must store nothing: {p:?}"
    );
    demo.shutdown().await.expect("clean shutdown");
}
