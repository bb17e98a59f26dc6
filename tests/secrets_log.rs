//! No secret in the logs of a whole run: the demo (server, embedded broker
//! with its device gate, one gateway per APR, 112 simulated devices logging
//! in over MQTT with their passwords, gateways posting with their tokens)
//! runs with every log line at debug level captured, while a person signs in
//! to the UI (once wrong), every role's token is used on the API, a webhook
//! secret is stored and an MQTT client logs in with a device's password and
//! once with a wrong one. Then no password, token, device secret, webhook
//! secret or session id may appear in what was logged.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apr::demo::{start, DemoOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn mqtt_login(addr: std::net::SocketAddr, user: &str, password: &str) -> bool {
    let mut o = MqttOptions::new(
        format!("leak-probe-{}", rand_id()),
        addr.ip().to_string(),
        addr.port(),
    );
    o.set_credentials(user, password);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(o, 10);
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    let _ = client.disconnect().await;
    r
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[test]
fn a_debug_log_of_the_whole_demo_holds_no_secret() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let secrets = rt.block_on(async {
        let demo = start(DemoOptions {
            http: "127.0.0.1:0".parse().expect("addr"),
            mqtt: "127.0.0.1:0".parse().expect("addr"),
            history_days: 1,
            report_interval: Duration::from_secs(1),
            ..DemoOptions::default()
        })
        .await
        .expect("demo starts");
        let c = demo.credentials.clone();
        let mut secrets: Vec<String> = Vec::new();
        for u in &c.users {
            secrets.push(u.password.clone());
            secrets.push(u.token.clone());
        }
        secrets.extend(c.devices.iter().map(|d| d.mqtt_password.clone()));
        secrets.extend(c.gateways.iter().map(|g| g.token.clone()));
        let base = format!("http://{}", demo.http_addr);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        // Every role's token on the API.
        for u in &c.users {
            for path in ["/api/v1/aprs", "/api/v1/alerts?limit=5", "/api/v1/summary"] {
                let _ = http
                    .get(format!("{base}{path}"))
                    .bearer_auth(&u.token)
                    .send()
                    .await;
            }
        }
        // A webhook secret.
        let op = c.user("operator").expect("operator");
        let hook = "hook-secret-never-logged-42";
        secrets.push(hook.into());
        let r = http
            .put(format!("{base}/api/v1/users/{}/notifications", op.username))
            .bearer_auth(&op.token)
            .header("content-type", "application/json")
            .body(format!(
                r#"[{{"channel":"webhook","address":"http://127.0.0.1:9/h","secret":"{hook}"}}]"#
            ))
            .send()
            .await
            .expect("notifications");
        assert!(r.status().is_success(), "{}", r.status());
        // UI sign-in: once with a wrong password, once right.
        let pre = "ab".repeat(32);
        let wrong = format!("{}-wrong", op.password);
        secrets.push(wrong.clone());
        for pw in [wrong.as_str(), op.password.as_str()] {
            let r = http
                .post(format!("{base}/login"))
                .header("cookie", format!("apr_presession={pre}"))
                .form(&[
                    ("username", op.username.as_str()),
                    ("password", pw),
                    ("csrf_token", pre.as_str()),
                ])
                .send()
                .await
                .expect("login");
            if let Some(session) = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|c| c.strip_prefix("apr_session="))
                .and_then(|c| c.split(';').next())
            {
                secrets.push(session.to_owned());
            }
        }
        // MQTT logins with a device's password, and a wrong one.
        let d = &c.devices[0];
        assert!(mqtt_login(demo.mqtt_addr, &d.mqtt_username, &d.mqtt_password).await);
        let bad = format!("{}x", d.mqtt_password);
        secrets.push(bad.clone());
        assert!(!mqtt_login(demo.mqtt_addr, &d.mqtt_username, &bad).await);
        // Live reports for a moment (devices and gateways at work).
        tokio::time::sleep(Duration::from_secs(3)).await;
        demo.shutdown().await.expect("shutdown");
        secrets
    });
    let log = String::from_utf8_lossy(
        &captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(log.contains("DEBUG"), "debug lines captured");
    assert!(
        log.len() > 10_000,
        "the run was logged: {} bytes",
        log.len()
    );
    let secrets: Vec<&String> = secrets.iter().filter(|s| s.len() >= 8).collect();
    assert!(secrets.len() > 100, "{} secrets", secrets.len());
    let leaked: Vec<&&String> = secrets
        .iter()
        .filter(|s| log.contains(s.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "{} of {} secrets are in the log ({} bytes), e.g. {:?}",
        leaked.len(),
        secrets.len(),
        log.len(),
        leaked.first()
    );
}
