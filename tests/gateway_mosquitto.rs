//! End-to-end against an external broker: a real mosquitto (Debian's, started
//! on a free loopback port with the project's ACL pattern file), the gateway
//! library, the real server and store, and a device running the firmware
//! core's reporting with its outbox (the site twin's device).

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apr_firmware::{Sample, SampleValue};
use apr_gateway::{Gateway, GatewayConfig};
use apr_twin::device::{DeviceCounters, DeviceOptions, SimDevice};
use apr_wire::Metric;
use support::{get_json, Mosquitto, MqttUser};

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_forwards_and_acknowledges_through_an_external_mosquitto() {
    // Server with the demo fleet, a gateway user and a reader.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = apr_server::Config::default();
    config.store.path = dir.path().join("server.sqlite3");
    let state = apr_server::open(&config).expect("open store");
    let fleet = apr_server::fleet::parse(apr::demo::FLEET_CSV, "fleet.csv").expect("fleet");
    apr_server::fleet::import(state.registry(), &fleet).expect("import");
    let apr = fleet.aprs[0].id.clone();
    let other = fleet.aprs[1].id.clone();
    let reg = state.registry();
    let gw_token = support::gateway_token(reg, "gw-site", vec![apr.clone(), other.clone()]);
    let reader = support::reader_token(reg, "eng");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http_addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(apr_server::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));

    // mosquitto with the ACL pattern file: devices are "{apr}/{device}".
    let device_user = format!("{apr}/caseta");
    let mosquitto = Mosquitto::start(
        &[
            MqttUser {
                username: device_user.clone(),
                password: "device-secret".into(),
            },
            MqttUser {
                username: "gw-site".into(),
                password: "gateway-secret".into(),
            },
        ],
        "gw-site",
        false,
    );

    let mut gw = GatewayConfig {
        id: "gw-site".into(),
        aprs: vec![apr.clone(), other.clone()],
        ..GatewayConfig::default()
    };
    gw.server.url = format!("http://{http_addr}");
    gw.server.token = gw_token;
    gw.mqtt.host = "127.0.0.1".into();
    gw.mqtt.port = mosquitto.addr.port();
    gw.mqtt.username = "gw-site".into();
    gw.mqtt.password = "gateway-secret".into();
    gw.mqtt.client_id = "gw-site".into();
    let gateway = Gateway::start_http(gw).await.expect("gateway starts");
    assert!(
        gateway.wait_ready(Duration::from_secs(10)).await,
        "gateway subscribed"
    );

    // A device with the firmware core's reporting and an outbox.
    let counters = Arc::new(DeviceCounters::default());
    let mut opts = DeviceOptions::new(
        &apr,
        "caseta",
        "127.0.0.1",
        mosquitto.addr.port(),
        &device_user,
        "device-secret",
    );
    opts.resend_after = Duration::from_secs(2);
    let mut device = SimDevice::connect(opts, counters.clone()).expect("device");
    let start = now_s().floor() - 3600.0;
    let samples: Vec<Sample> = (0..60)
        .flat_map(|i| {
            let t = start + f64::from(i) * 60.0;
            [
                Sample {
                    metric: Metric::Chlorine,
                    time: t,
                    value: SampleValue::Number(0.4 + f64::from(i) / 1000.0),
                },
                Sample {
                    metric: Metric::Pump,
                    time: t,
                    value: SampleValue::Boolean(i % 2 == 0),
                },
            ]
        })
        .collect();
    let packs = device.publish(&samples).await.expect("publish");
    assert!(packs >= 1);
    assert_eq!(
        device.drain(Duration::from_secs(15)).await,
        0,
        "every pack acknowledged"
    );
    assert_eq!(counters.readings_acked.load(Ordering::Relaxed), 120);

    // Every reading is in the store, once.
    let http = reqwest::Client::new();
    let url = |metric: &str| {
        format!(
            "http://{http_addr}/api/v1/aprs/{apr}/readings?metric={metric}&from={}&to={}",
            chrono::DateTime::from_timestamp(start as i64, 0)
                .expect("t")
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            chrono::DateTime::from_timestamp(start as i64 + 3600, 0)
                .expect("t")
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    };
    let (s, body) = get_json(&http, &url("chlorine"), Some(&reader)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["points"].as_array().map(Vec::len), Some(60));
    let (_, body) = get_json(&http, &url("pump"), Some(&reader)).await;
    assert_eq!(body["points"].as_array().map(Vec::len), Some(60));

    // The ACL pattern confines the device to its own subtree: a publish under
    // another APR is dropped by mosquitto and stores nothing.
    let received_before = gateway.stats().packs_received;
    let bt = now_s().floor() - 5.0;
    let out = std::process::Command::new(support::which("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &mosquitto.addr.port().to_string()])
        .args(["-u", &device_user, "-P", "device-secret", "-q", "1"])
        .args(["-t", &format!("apr/{other}/caseta/up")])
        .args([
            "-m",
            &format!(
                r#"[{{"bn":"urn:apr:{other}:caseta:","bt":{bt},"n":"ph","u":"pH","v":7.77}}]"#
            ),
        ])
        .output()
        .expect("mosquitto_pub");
    assert!(out.status.success());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = gateway.stats();
    assert_eq!(
        stats.packs_received, received_before,
        "the foreign publish never reached the gateway"
    );
    let (_, body) = get_json(
        &http,
        &format!("http://{http_addr}/api/v1/aprs/{other}/readings?metric=ph"),
        Some(&reader),
    )
    .await;
    assert_eq!(body["points"].as_array().map(Vec::len), Some(0), "{body}");

    gateway.shutdown().await.expect("gateway shutdown");
    device.disconnect().await;
    let _ = stop.send(());
    server.await.expect("server task").expect("server");
}
