//! Encrypted links, end to end (issue 8, acceptance 4): devices reach the
//! site's broker with MQTT over TLS, the gateway reaches the server with
//! HTTPS and mutual TLS. Certificates are made here, at test time, with
//! `rcgen` (a CA for the servers, a CA for the gateways' client
//! certificates, and a rogue CA nobody should trust).
//!
//! With the embedded broker (rumqttd behind the device gate, started by
//! `apr_gateway::run` from `[broker]`) and with Debian's mosquitto (TLS
//! listener, the project's ACL pattern file): a device over TLS gets its
//! readings stored; no login, a wrong password, a client that does not trust
//! the broker's certificate, a client without TLS, and a device publishing
//! under another device's topic change nothing that is stored.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apr_firmware::{Sample, SampleValue};
use apr_gateway::{EmbeddedBroker, Gateway, GatewayConfig, HttpSink, Sink};
use apr_server::listener::HttpListener;
use apr_twin::device::{DeviceCounters, DeviceOptions, SimDevice};
use apr_wire::Metric;
use support::{Mosquitto, MqttUser};

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// The test's certificates, as PEM files in a temp dir.
struct Pki {
    _dir: tempfile::TempDir,
    /// CA of the servers' certificates (broker, mosquitto, HTTPS).
    ca: PathBuf,
    /// A CA that signed nothing anyone here presents.
    rogue_ca: PathBuf,
    /// Server certificate for `localhost` and 127.0.0.1, signed by `ca`.
    server_cert: PathBuf,
    server_key: PathBuf,
    /// CA of the gateways' client certificates.
    client_ca: PathBuf,
    /// A gateway's client certificate, signed by `client_ca`.
    gateway_cert: PathBuf,
    gateway_key: PathBuf,
    /// A client certificate signed by the rogue CA.
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    (p.self_signed(&key).expect("self-signed CA"), key)
}

fn leaf(
    names: &[&str],
    issuer: &(rcgen::Certificate, rcgen::KeyPair),
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("key");
    let p = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params");
    (
        p.signed_by(&key, &issuer.0, &issuer.1).expect("signed"),
        key,
    )
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write PEM");
        p
    };
    let server_ca = ca("APR test server CA");
    let rogue = ca("rogue CA");
    let client_ca = ca("APR test gateway CA");
    let server = leaf(&["localhost", "127.0.0.1"], &server_ca);
    let gateway = leaf(&["gw-site"], &client_ca);
    let outsider = leaf(&["gw-site"], &rogue);
    Pki {
        ca: write("ca.pem", server_ca.0.pem()),
        rogue_ca: write("rogue-ca.pem", rogue.0.pem()),
        server_cert: write("server.pem", server.0.pem()),
        server_key: write("server-key.pem", server.1.serialize_pem()),
        client_ca: write("client-ca.pem", client_ca.0.pem()),
        gateway_cert: write("gateway.pem", gateway.0.pem()),
        gateway_key: write("gateway-key.pem", gateway.1.serialize_pem()),
        rogue_cert: write("rogue.pem", outsider.0.pem()),
        rogue_key: write("rogue-key.pem", outsider.1.serialize_pem()),
        _dir: dir,
    }
}

/// A server over HTTPS (mutual TLS when `mtls`) with the demo fleet, a
/// gateway login for two APRs and their `caseta` devices.
struct Site {
    _dir: tempfile::TempDir,
    db: PathBuf,
    addr: SocketAddr,
    apr: String,
    other: String,
    gateway_token: String,
    reader_token: String,
    /// (username, password) of `{apr}/caseta` and `{other}/caseta`.
    device: (String, String),
    victim: (String, String),
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<apr_server::Result<()>>>,
}

impl Site {
    async fn start(pki: &Pki, mtls: bool) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = apr_server::Config::default();
        config.store.path = dir.path().join("server.sqlite3");
        config.http.listen = "127.0.0.1:0".into();
        config.http.tls_cert = pki.server_cert.display().to_string();
        config.http.tls_key = pki.server_key.display().to_string();
        if mtls {
            config.http.client_ca = pki.client_ca.display().to_string();
        }
        let state = apr_server::open(&config).expect("open store");
        let fleet = apr_server::fleet::parse(apr::demo::FLEET_CSV, "fleet.csv").expect("fleet");
        apr_server::fleet::import(state.registry(), &fleet).expect("import");
        let apr = fleet.aprs[0].id.clone();
        let other = fleet.aprs[1].id.clone();
        let reg = state.registry();
        let gateway_token =
            support::gateway_token(reg, "gw-site", vec![apr.clone(), other.clone()]);
        let reader_token = support::reader_token(reg, "eng");
        let d = apr_server::device::add_device(reg, &apr, "caseta", 60).expect("device");
        let v = apr_server::device::add_device(reg, &other, "caseta", 60).expect("device");
        let listener = HttpListener::bind(&config.http).await.expect("bind");
        assert!(listener.is_tls());
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(apr_server::listener::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Site {
            db: config.store.path.clone(),
            _dir: dir,
            addr,
            apr,
            other,
            gateway_token,
            reader_token,
            device: (d.mqtt_username, d.mqtt_password),
            victim: (v.mqtt_username, v.mqtt_password),
            stop: Some(stop),
            server: Some(server),
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Readings in the store (the consistency check's count).
    fn stored(&self) -> u64 {
        apr_server::backup::check(&self.db)
            .expect("store check")
            .readings
    }

    /// `[server]` of a gateway of this site, with its client certificate.
    fn gateway_config(&self, pki: &Pki) -> GatewayConfig {
        let mut gw = GatewayConfig {
            id: "gw-site".into(),
            aprs: vec![self.apr.clone(), self.other.clone()],
            ..GatewayConfig::default()
        };
        gw.server.url = self.url();
        gw.server.token = self.gateway_token.clone();
        gw.server.ca_file = pki.ca.display().to_string();
        gw.server.client_cert = pki.gateway_cert.display().to_string();
        gw.server.client_key = pki.gateway_key.display().to_string();
        gw.metrics.listen = String::new();
        gw
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(s) = self.server.take() {
            s.await.expect("server task").expect("server");
        }
    }
}

fn mqtt_tls(ca: &Path) -> rumqttc::TlsConfiguration {
    rumqttc::TlsConfiguration::Rustls(apr_tls::client_config(ca, None).expect("client TLS"))
}

/// A twin device over TLS publishes an hour of chlorine readings (60) and
/// waits until the gateway acknowledged every pack.
async fn valid_device_over_tls(site: &Site, port: u16, ca: &Path) -> f64 {
    let counters = Arc::new(DeviceCounters::default());
    let mut opts = DeviceOptions::new(
        &site.apr,
        "caseta",
        "127.0.0.1",
        port,
        &site.device.0,
        &site.device.1,
    );
    opts.resend_after = Duration::from_secs(2);
    opts.tls = Some(mqtt_tls(ca));
    let mut device = SimDevice::connect(opts, counters.clone()).expect("device");
    let start = now_s().floor() - 3600.0;
    let samples: Vec<Sample> = (0..60)
        .map(|i| Sample {
            metric: Metric::Chlorine,
            time: start + f64::from(i) * 60.0,
            value: SampleValue::Number(0.5 + f64::from(i) / 1000.0),
        })
        .collect();
    device.publish(&samples).await.expect("publish");
    assert_eq!(
        device.drain(Duration::from_secs(30)).await,
        0,
        "every pack of the device over TLS acknowledged"
    );
    device.disconnect().await;
    start
}

/// `mosquitto_pub` once; `tls` = CA file to trust (None: plain MQTT).
fn mosquitto_pub(
    port: u16,
    login: Option<(&str, &str)>,
    tls: Option<&Path>,
    topic: &str,
    payload: &str,
) -> bool {
    let mut c = Command::new(support::which("mosquitto_pub"));
    c.args(["-h", "localhost", "-p", &port.to_string(), "-q", "1"]);
    c.args(["-t", topic, "-m", payload]);
    if let Some(ca) = tls {
        c.arg("--cafile").arg(ca);
    }
    if let Some((u, p)) = login {
        c.args(["-u", u, "-P", p]);
    }
    c.output().expect("run mosquitto_pub").status.success()
}

/// Every way in that must fail, then a foreign publish by a valid device;
/// afterwards nothing in the store has changed.
async fn impostors_change_nothing(site: &Site, port: u16, pki: &Pki) {
    let before = site.stored();
    let topic = format!("apr/{}/caseta/up", site.other);
    let payload = format!(
        r#"[{{"bn":"urn:apr:{}:caseta:","bt":{},"n":"chlorine","u":"mg/l","v":1.999}}]"#,
        site.other,
        now_s().floor() - 7.0
    );
    let victim = (site.victim.0.as_str(), site.victim.1.as_str());
    let ca = Some(pki.ca.as_path());
    assert!(
        !mosquitto_pub(port, None, ca, &topic, &payload),
        "no login over TLS must be refused"
    );
    assert!(
        !mosquitto_pub(port, Some((victim.0, "wrong")), ca, &topic, &payload),
        "a wrong password over TLS must be refused"
    );
    assert!(
        !mosquitto_pub(port, Some(victim), Some(&pki.rogue_ca), &topic, &payload),
        "a client that does not trust the broker's certificate must not get through"
    );
    assert!(
        !mosquitto_pub(port, Some(victim), None, &topic, &payload),
        "plain MQTT on the TLS listener must not get through"
    );
    // A valid device over TLS, publishing as another device: the broker
    // drops it (the gate acknowledges and drops, mosquitto's ACL drops).
    let device = (site.device.0.as_str(), site.device.1.as_str());
    assert!(
        mosquitto_pub(port, Some(device), ca, &topic, &payload),
        "the valid device itself is let in"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        site.stored(),
        before,
        "nothing from an impostor or a foreign topic is stored"
    );
}

/// The readings the valid device sent are all stored, read back over HTTPS
/// with a client certificate.
async fn readings_stored(site: &Site, pki: &Pki, start: f64) {
    // An engineer reading the API, over the same (mutual) TLS.
    let tls = apr_tls::client_config(&pki.ca, Some((&pki.gateway_cert, &pki.gateway_key)))
        .expect("client TLS");
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(apr_tls::rustls::ClientConfig::clone(&tls))
        .build()
        .expect("client");
    let ts = |s: f64| {
        chrono::DateTime::from_timestamp(s as i64, 0)
            .expect("t")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let url = format!(
        "{}/api/v1/aprs/{}/readings?metric=chlorine&from={}&to={}",
        site.url(),
        site.apr,
        ts(start),
        ts(start + 3600.0)
    );
    let (status, body) = support::get_json(&http, &url, Some(&site.reader_token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["points"].as_array().map(Vec::len),
        Some(60),
        "every reading of the device over TLS stored: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_embedded_broker_stores_a_valid_device_and_nothing_from_impostors() {
    let pki = pki();
    let site = Site::start(&pki, true).await;
    // `apr-gateway run` as configured: the embedded broker on [broker] with
    // TLS, its device logins fetched from the server over mutual TLS.
    let broker_addr = support::free_addr();
    let mut gw = site.gateway_config(&pki);
    gw.broker.listen = broker_addr.to_string();
    gw.broker.tls_cert = pki.server_cert.display().to_string();
    gw.broker.tls_key = pki.server_key.display().to_string();
    let (stop_gw, gw_stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(apr_gateway::run(gw, async move {
        let _ = gw_stopped.await;
    }));

    let start = valid_device_over_tls(&site, broker_addr.port(), &pki.ca).await;
    readings_stored(&site, &pki, start).await;
    impostors_change_nothing(&site, broker_addr.port(), &pki).await;

    let _ = stop_gw.send(());
    gateway.await.expect("gateway task").expect("gateway");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_mosquitto_stores_a_valid_device_and_nothing_from_impostors() {
    let pki = pki();
    let site = Site::start(&pki, true).await;
    let mosquitto = Mosquitto::start_tls(
        &[
            MqttUser {
                username: site.device.0.clone(),
                password: site.device.1.clone(),
            },
            MqttUser {
                username: site.victim.0.clone(),
                password: site.victim.1.clone(),
            },
            MqttUser {
                username: "gw-site".into(),
                password: "gateway-secret".into(),
            },
        ],
        "gw-site",
        (&pki.server_cert, &pki.server_key),
    );
    // The gateway reads mosquitto over TLS too.
    let mut gw = site.gateway_config(&pki);
    gw.mqtt.host = "127.0.0.1".into();
    gw.mqtt.port = mosquitto.addr.port();
    gw.mqtt.username = "gw-site".into();
    gw.mqtt.password = "gateway-secret".into();
    gw.mqtt.ca_file = pki.ca.display().to_string();
    let gateway = Gateway::start_http(gw).await.expect("gateway starts");
    assert!(
        gateway.wait_ready(Duration::from_secs(10)).await,
        "gateway subscribed over TLS"
    );

    let start = valid_device_over_tls(&site, mosquitto.addr.port(), &pki.ca).await;
    readings_stored(&site, &pki, start).await;
    let received = gateway.stats().packs_received;
    impostors_change_nothing(&site, mosquitto.addr.port(), &pki).await;
    assert_eq!(
        gateway.stats().packs_received,
        received,
        "no impostor's publish reached the gateway"
    );

    gateway.shutdown().await.expect("gateway shutdown");
    site.stop().await;
}

/// One reading as the gateway would post it, for the HTTPS sink.
fn batch(site: &Site, value: f64) -> apr_wire::ingest::IngestBatch {
    let t_ms = (now_s() * 1000.0) as i64 - 60_000;
    serde_json::from_value(serde_json::json!({
        "gateway": "gw-site",
        "seq": 1,
        "packs": [{
            "apr": site.apr,
            "device": "caseta",
            "bt": t_ms as f64 / 1000.0,
            "received_ms": t_ms,
            "readings": [{"m": "chlorine", "t": t_ms, "v": value}],
        }],
    }))
    .expect("a batch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_the_server_needs_a_trusted_server_and_with_mutual_tls_a_client_certificate() {
    let pki = pki();
    let site = Site::start(&pki, true).await;
    let sink = |config: &GatewayConfig| HttpSink::from_config(config).expect("sink");
    let good = site.gateway_config(&pki);

    // Refused: no client certificate, one from another CA, a server
    // certificate the gateway does not trust, plain HTTP to the TLS port.
    let mut no_cert = good.clone();
    no_cert.server.client_cert.clear();
    no_cert.server.client_key.clear();
    let mut rogue_cert = good.clone();
    rogue_cert.server.client_cert = pki.rogue_cert.display().to_string();
    rogue_cert.server.client_key = pki.rogue_key.display().to_string();
    let mut distrusts = good.clone();
    distrusts.server.ca_file = pki.rogue_ca.display().to_string();
    let before = site.stored();
    for (what, config) in [
        ("no client certificate", &no_cert),
        ("a client certificate of another CA", &rogue_cert),
        (
            "a server certificate the gateway does not trust",
            &distrusts,
        ),
    ] {
        let s = sink(config);
        let e = s
            .send(&batch(&site, 0.77))
            .await
            .expect_err(&format!("{what}: the batch must not get through"));
        assert!(
            matches!(e, apr_gateway::SinkError::Transport(_)),
            "{what}: {e}"
        );
        assert!(s.fetch_devices().await.is_err(), "{what}: device list");
    }
    let mut plain = no_cert.clone();
    plain.server.url = format!("http://127.0.0.1:{}", site.addr.port());
    plain.server.ca_file.clear();
    assert!(
        sink(&plain).send(&batch(&site, 0.77)).await.is_err(),
        "plain HTTP to the HTTPS listener"
    );
    assert_eq!(site.stored(), before, "nothing refused was stored");

    // The gateway with its certificate gets through.
    let ack = sink(&good)
        .send(&batch(&site, 0.66))
        .await
        .expect("the gateway with its certificate is served");
    assert!(ack.stored >= 1, "{ack:?}");
    assert_eq!(site.stored(), before + 1);
    assert!(!sink(&good)
        .fetch_devices()
        .await
        .expect("devices")
        .is_empty());
    site.stop().await;
}

#[tokio::test]
async fn plain_listeners_off_loopback_are_refused_unless_the_config_allows_them() {
    let mut http = apr_server::config::Http {
        listen: "0.0.0.0:0".into(),
        ..apr_server::config::Http::default()
    };
    let e = HttpListener::bind(&http)
        .await
        .expect_err("plain HTTP on 0.0.0.0");
    assert!(e.to_string().contains("[http] allow_plaintext"), "{e}");
    http.allow_plaintext = true;
    assert!(HttpListener::bind(&http).await.is_ok());

    let mut broker = apr_gateway::config::BrokerConfig {
        listen: "0.0.0.0:0".into(),
        ..apr_gateway::config::BrokerConfig::default()
    };
    let e = EmbeddedBroker::from_config(&broker)
        .await
        .expect_err("plain MQTT on 0.0.0.0");
    assert!(e.to_string().contains("[broker] allow_plaintext"), "{e}");
    // On loopback it starts; so it does elsewhere when allowed.
    broker.listen = "127.0.0.1:0".into();
    let b = EmbeddedBroker::from_config(&broker)
        .await
        .expect("plain MQTT on loopback")
        .expect("a broker");
    b.shutdown().await;
    broker.listen = "0.0.0.0:0".into();
    broker.allow_plaintext = true;
    let b = EmbeddedBroker::from_config(&broker)
        .await
        .expect("allowed")
        .expect("a broker");
    b.shutdown().await;
    // And `apr-gateway run` refuses to start on it.
    let cfg = GatewayConfig {
        broker: apr_gateway::config::BrokerConfig {
            listen: "0.0.0.0:0".into(),
            ..Default::default()
        },
        ..GatewayConfig::default()
    };
    let e = apr_gateway::run(cfg, async {})
        .await
        .expect_err("run refuses a plain non-loopback broker");
    assert!(e.to_string().contains("allow_plaintext"), "{e}");
}
