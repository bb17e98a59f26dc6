//! End-to-end: a chlorine reading published over MQTT by a device raises an
//! alert that the API shows and that a signed webhook delivers, through the
//! demo's real parts (embedded broker and device gate, site gateway, server,
//! alert engine, notification task). Prints the latency figures.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apr::demo::{start, DemoOptions};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const SECRET: &str = "webhook-secret-0123456789";
const ROUNDS: usize = 50;

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// One webhook delivery: when it arrived, its signature header and raw body.
struct Delivery {
    at: Instant,
    signature: String,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 receiver on loopback: answers 200 to every request
/// (keep-alive included) and hands each one over the channel.
async fn webhook_receiver() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Delivery>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // Headers.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let header = |name: &str| {
                        head.lines().find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case(name)
                                .then(|| v.trim().to_string())
                        })
                    };
                    let len: usize = header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[end..end + len].to_vec();
                    buf.drain(..end + len);
                    let _ = tx.send(Delivery {
                        at: Instant::now(),
                        signature: header("x-apr-signature").unwrap_or_default(),
                        body,
                    });
                    if sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn send_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let r = http
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("HTTP");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chlorine_reading_published_over_mqtt_raises_an_alert_seen_in_the_api_and_sent_by_a_signed_webhook(
) {
    let demo = start(DemoOptions {
        http: "127.0.0.1:0".parse().unwrap(),
        mqtt: "127.0.0.1:0".parse().unwrap(),
        history_days: 0,
        ..DemoOptions::default()
    })
    .await
    .expect("demo starts");
    let http = reqwest::Client::new();
    let base = format!("http://{}", demo.http_addr);
    let admin = demo.credentials.user("admin").expect("admin").token.clone();
    let operator = demo.credentials.user("operator").expect("operator");
    let apr = operator.aprs.as_ref().expect("operator APRs")[0].clone();
    // The network device does not measure chlorine, so the simulated site
    // never sends a chlorine reading that would clear ours.
    let dev = demo
        .credentials
        .devices
        .iter()
        .find(|d| d.apr == apr && d.device == "red")
        .expect("a network device at the operator's APR")
        .clone();

    let (hook_addr, mut hooks) = webhook_receiver().await;
    let (s, body) = send_json(
        &http,
        reqwest::Method::PUT,
        &format!("{base}/api/v1/users/{}/notifications", operator.username),
        &admin,
        json!([{"channel": "webhook", "address": format!("http://{hook_addr}/alertas"),
                "secret": SECRET, "min_severity": "warning"}]),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = send_json(
        &http,
        reqwest::Method::PUT,
        &format!("{base}/api/v1/aprs/{apr}/limits"),
        &admin,
        json!({"min_duration_s": 0}),
    )
    .await;
    assert_eq!(s, 200, "{body}");

    let mut o = MqttOptions::new(
        format!("alert-test-{}", std::process::id()),
        demo.mqtt_addr.ip().to_string(),
        demo.mqtt_addr.port(),
    );
    o.set_credentials(dev.mqtt_username.clone(), dev.mqtt_password.clone());
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    // The clock of each round starts at the publish, so the client must be
    // connected first (its connection setup is not the alert path's latency).
    let (connected_tx, connected) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut connected_tx = Some(connected_tx);
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), connected)
        .await
        .expect("the device connects within 10 s")
        .expect("event loop running");
    let topic = format!("apr/{apr}/{}/up", dev.device);
    let publish = |v: f64| {
        let pack = json!([{"bn": format!("urn:apr:{apr}:{}:", dev.device), "bt": now_s(),
            "n": "chlorine", "u": "mg/l", "v": v}]);
        let client = client.clone();
        let topic = topic.clone();
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, pack.to_string())
                .await
                .expect("publish");
        }
    };
    let alerts_url = format!("{base}/api/v1/alerts?apr={apr}&kind=chlorine_low");
    let open_alert = |state: &'static str| {
        let http = http.clone();
        let url = format!("{alerts_url}&state={state}");
        let token = operator.token.clone();
        let device = dev.device.clone();
        async move {
            let (s, body) = support::get_json(&http, &url, Some(&token)).await;
            assert_eq!(s, 200, "{body}");
            body.as_array()
                .and_then(|l| l.iter().find(|a| a["device"] == device.as_str()).cloned())
        }
    };

    let mut visible = Vec::new();
    let mut published_at: HashMap<i64, Instant> = HashMap::new();
    for round in 0..ROUNDS {
        let t0 = Instant::now();
        publish(0.05).await;
        let alert = loop {
            if let Some(a) = open_alert("open").await {
                break a;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "round {round}: no open alert 5 s after publishing"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        visible.push(t0.elapsed());
        assert_eq!(alert["kind"], "chlorine_low");
        assert_eq!(alert["severity"], "warning");
        assert_eq!(alert["value"], 0.05);
        assert_eq!(alert["threshold"], 0.2);
        published_at.insert(alert["id"].as_i64().expect("id"), t0);
        // Back to normal: the engine clears it.
        publish(0.5).await;
        let cleared = Instant::now();
        while open_alert("open").await.is_some() {
            assert!(
                cleared.elapsed() < Duration::from_secs(5),
                "round {round}: the alert did not clear"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    let mut webhook = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while webhook.len() < ROUNDS {
        let d = tokio::time::timeout(deadline - Instant::now(), hooks.recv())
            .await
            .expect("every raise reaches the webhook")
            .expect("receiver running");
        assert_eq!(
            d.signature,
            apr_server::notify::signature(SECRET, &d.body),
            "the signature covers the raw body"
        );
        let v: Value = serde_json::from_slice(&d.body).expect("JSON body");
        assert_eq!(v["event"], "raised");
        assert_eq!(v["alert"]["apr"], Value::String(apr.clone()));
        assert_eq!(v["alert"]["kind"], "chlorine_low");
        let id = v["alert"]["id"].as_i64().expect("id");
        let t0 = published_at
            .get(&id)
            .expect("a webhook for an alert we raised");
        let latency = d.at - *t0;
        // Every delivery within 1 s. (The first one was once seen at ~1.05 s:
        // its clock had started before the test's MQTT client was connected,
        // so it counted the connection setup; the rounds now start only after
        // the CONNACK.)
        assert!(
            latency <= Duration::from_secs(1),
            "alert {id}: webhook {latency:?} after publishing"
        );
        webhook.push(latency);
    }
    visible.sort();
    webhook.sort();
    println!(
        "publish -> alert visible in the API over {ROUNDS} alerts: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&visible, 0.5).as_secs_f64() * 1000.0,
        percentile(&visible, 0.99).as_secs_f64() * 1000.0,
        visible[visible.len() - 1].as_secs_f64() * 1000.0,
    );
    println!(
        "publish -> webhook received over {ROUNDS} alerts: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&webhook, 0.5).as_secs_f64() * 1000.0,
        percentile(&webhook, 0.99).as_secs_f64() * 1000.0,
        webhook[webhook.len() - 1].as_secs_f64() * 1000.0,
    );
    let (_, resolved) = support::get_json(
        &http,
        &format!("{alerts_url}&state=resolved"),
        Some(&operator.token),
    )
    .await;
    assert_eq!(
        resolved.as_array().map(Vec::len),
        Some(ROUNDS),
        "history kept"
    );
    demo.shutdown().await.expect("demo stops");
}
