//! The gateway's fault suite (issue 4): the gateway binary with its durable
//! spool between a real mosquitto (with the project's ACL pattern file) and
//! the real server (its library and SQLite store, in process, stopped and
//! started again on the same port for the outage), fed by site-twin devices
//! whose outboxes resend what the gateway never acknowledged.
//!
//! Every test ends with exact counts: each device's readings are all in the
//! store and none twice (the API returns exactly as many points as were
//! published), and every device's outbox is empty.
//!
//! - the gateway killed with SIGKILL at random moments under load, 20 times;
//! - the server down for a while and back: devices are acknowledged from the
//!   spool meanwhile, and the backlog drains;
//! - mosquitto restarted under load, then killed with SIGKILL under load;
//! - the spool's disk filling up (a 256 KiB tmpfs, root only), with each
//!   `when_full` policy: `drop_oldest` counts every dropped reading
//!   (stored + dropped = published), `block` drops nothing.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apr_firmware::{Sample, SampleValue};
use apr_twin::device::{DeviceCounters, DeviceOptions, SimDevice};
use apr_wire::Metric;
use rand::Rng;
use support::{free_addr, get_json, prom_value, Mosquitto, MqttUser};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const GATEWAY: &str = env!("CARGO_BIN_EXE_apr-site-gateway");
const GATEWAY_USER: &str = "gw-site";
const GATEWAY_PASSWORD: &str = "gateway-secret";
/// One metric per device, so each device's readings are one series.
const METRICS: [(Metric, &str, f64); 4] = [
    (Metric::Chlorine, "chlorine", 0.5),
    (Metric::Turbidity, "turbidity", 1.5),
    (Metric::Ph, "ph", 7.2),
    (Metric::Pressure, "pressure", 31.0),
];

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

fn rfc3339(t: f64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The real server (library and SQLite store) on a fixed address.
struct Server {
    addr: SocketAddr,
    config: apr_server::Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    async fn start(
        config: apr_server::Config,
        state: apr_server::AppState,
        addr: SocketAddr,
    ) -> Server {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 100, "cannot bind the server on {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            apr_server::serve(listener, state, async move {
                let _ = stopped.await;
            })
            .await
            .expect("server");
        });
        Server {
            addr,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving (the listener closes: connections are refused).
    async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    /// Opens the store again and serves on the same address.
    async fn restart(&mut self) {
        self.stop().await;
        let state = apr_server::open(&self.config).expect("reopen the store");
        *self = Server::start(self.config.clone(), state, self.addr).await;
    }
}

/// The gateway binary, configured by a TOML file.
struct GatewayProcess {
    child: Child,
}

impl GatewayProcess {
    fn start(config: &Path, log: &Path) -> GatewayProcess {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("gateway log");
        let child = Command::new(GATEWAY)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the gateway binary");
        GatewayProcess { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no flush, no goodbye.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One site: server, mosquitto, gateway configuration, devices' logins.
struct Site {
    dir: tempfile::TempDir,
    server: Server,
    mosquitto: Mosquitto,
    apr: String,
    reader: String,
    config: PathBuf,
    metrics: SocketAddr,
    devices: usize,
}

struct SpoolSetup<'a> {
    dir: &'a Path,
    when_full: &'a str,
    max_bytes: u64,
    segment_bytes: u64,
}

impl Site {
    async fn new(devices: usize) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = apr_server::Config::default();
        config.store.path = dir.path().join("server.sqlite3");
        let state = apr_server::open(&config).expect("open store");
        let fleet = apr_server::fleet::parse(apr::demo::FLEET_CSV, "fleet.csv").expect("fleet");
        apr_server::fleet::import(state.registry(), &fleet).expect("import");
        let apr = fleet.aprs[0].id.clone();
        let reg = state.registry();
        let token = support::gateway_token(reg, GATEWAY_USER, vec![apr.clone()]);
        let reader = support::reader_token(reg, "eng");
        let server = Server::start(config, state, free_addr()).await;

        let mut users: Vec<MqttUser> = (0..devices)
            .map(|i| MqttUser {
                username: format!("{apr}/d{i}"),
                password: format!("secret-{i}"),
            })
            .collect();
        users.push(MqttUser {
            username: GATEWAY_USER.into(),
            password: GATEWAY_PASSWORD.into(),
        });
        let mosquitto = Mosquitto::start(&users, GATEWAY_USER, false);
        let metrics = free_addr();
        let config = dir.path().join("gateway.toml");
        let site = Site {
            dir,
            server,
            mosquitto,
            apr,
            reader,
            config,
            metrics,
            devices,
        };
        let spool = site.dir.path().join("spool");
        site.write_config(
            &token,
            SpoolSetup {
                dir: &spool,
                when_full: "block",
                max_bytes: 256 << 20,
                segment_bytes: 1 << 20,
            },
        );
        site
    }

    fn write_config(&self, token: &str, spool: SpoolSetup<'_>) {
        let text = format!(
            r#"id = "{GATEWAY_USER}"
aprs = ["{apr}"]

[server]
url = "http://{server}"
token = "{token}"

[mqtt]
host = "127.0.0.1"
port = {port}
username = "{GATEWAY_USER}"
password = "{GATEWAY_PASSWORD}"
client_id = "{GATEWAY_USER}"
keep_alive_s = 5

[forward]
max_batch_delay_ms = 20
backoff_min_ms = 50
backoff_max_ms = 400
request_timeout_ms = 3000
shutdown_flush_ms = 500

[spool]
dir = "{spool_dir}"
when_full = "{when_full}"
max_bytes = {max_bytes}
segment_bytes = {segment_bytes}

[devices]
refresh_s = 0

[metrics]
listen = "{metrics}"
"#,
            apr = self.apr,
            server = self.server.addr,
            port = self.mosquitto.addr.port(),
            spool_dir = spool.dir.display(),
            when_full = spool.when_full,
            max_bytes = spool.max_bytes,
            segment_bytes = spool.segment_bytes,
            metrics = self.metrics,
        );
        std::fs::write(&self.config, text).expect("write the gateway config");
    }

    fn token(&self) -> String {
        let text = std::fs::read_to_string(&self.config).expect("config");
        let line = text
            .lines()
            .find(|l| l.starts_with("token = "))
            .expect("token line");
        line.trim_start_matches("token = ")
            .trim_matches('"')
            .to_string()
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    fn gateway(&self) -> GatewayProcess {
        GatewayProcess::start(&self.config, &self.log())
    }

    fn device(&self, i: usize, counters: Arc<DeviceCounters>) -> SimDevice {
        let mut opts = DeviceOptions::new(
            &self.apr,
            &format!("d{i}"),
            "127.0.0.1",
            self.mosquitto.addr.port(),
            &format!("{}/d{i}", self.apr),
            &format!("secret-{i}"),
        );
        opts.resend_after = Duration::from_secs(1);
        opts.max_unacked = 4096;
        SimDevice::connect(opts, counters).expect("device")
    }

    /// Readings of device `i`'s metric stored in `[from, to]`.
    async fn stored(&self, i: usize, from: f64, to: f64) -> usize {
        let http = reqwest::Client::new();
        let url = format!(
            "http://{}/api/v1/aprs/{}/readings?metric={}&from={}&to={}",
            self.server.addr,
            self.apr,
            METRICS[i].1,
            rfc3339(from),
            rfc3339(to)
        );
        let (status, body) = get_json(&http, &url, Some(&self.reader)).await;
        if status != 200 {
            return 0;
        }
        body["points"].as_array().map_or(0, Vec::len)
    }

    async fn gateway_metrics(&self) -> String {
        apr_gateway::status::fetch_metrics(&self.metrics.to_string())
            .await
            .unwrap_or_default()
    }

    /// The operator's `status` message (the binary's subcommand).
    fn status(&self, lang: &str) -> String {
        let out = Command::new(GATEWAY)
            .args([
                "status",
                "--metrics",
                &self.metrics.to_string(),
                "--lang",
                lang,
            ])
            .output()
            .expect("apr-site-gateway status");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

/// What the devices published.
struct Load {
    start: f64,
    per_device: usize,
    tasks: Vec<JoinHandle<SimDevice>>,
    counters: Arc<DeviceCounters>,
}

impl Load {
    /// Each device publishes `per_device` readings of its metric, one second
    /// apart in time, `chunk` at a time every `pause`.
    fn start(site: &Site, per_device: usize, chunk: usize, pause: Duration) -> Load {
        let start = (now_s() / 60.0).floor() * 60.0 - 2.0 * 86_400.0;
        let counters = Arc::new(DeviceCounters::default());
        let tasks = (0..site.devices)
            .map(|i| {
                let mut device = site.device(i, counters.clone());
                let (metric, _, value) = METRICS[i];
                tokio::spawn(async move {
                    let samples: Vec<Sample> = (0..per_device)
                        .map(|k| Sample {
                            metric,
                            time: start + k as f64,
                            value: SampleValue::Number(value + (k % 10) as f64 / 100.0),
                        })
                        .collect();
                    for part in samples.chunks(chunk) {
                        device.publish(part).await.expect("publish");
                        tokio::time::sleep(pause).await;
                    }
                    device
                })
            })
            .collect();
        Load {
            start,
            per_device,
            tasks,
            counters,
        }
    }

    /// Waits for the devices to publish everything and to hear every ack.
    async fn finish(self, site: &Site, within: Duration) -> (f64, usize) {
        let mut devices = Vec::new();
        for t in self.tasks {
            devices.push(t.await.expect("device task"));
        }
        for (i, d) in devices.iter().enumerate() {
            let left = d.drain(within).await;
            if left > 0 {
                panic!(
                    "device d{i}: {left} packs never acknowledged; gateway log:\n{}\nmetrics:\n{}",
                    tail(&site.log()),
                    site.gateway_metrics().await
                );
            }
        }
        for d in &devices {
            d.disconnect().await;
        }
        let all = (self.per_device * site.devices) as u64;
        assert_eq!(self.counters.readings_acked.load(Ordering::Relaxed), all);
        // Counted per pack as the packs were made, whatever their size.
        assert_eq!(self.counters.readings_sent.load(Ordering::Relaxed), all);
        (self.start, self.per_device)
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Waits until every device's readings are stored exactly once.
async fn assert_all_stored_once(site: &Site, start: f64, per_device: usize, within: Duration) {
    let end = start + per_device as f64 + 10.0;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut counts = Vec::new();
        for i in 0..site.devices {
            counts.push(site.stored(i, start - 1.0, end).await);
        }
        if counts.iter().all(|c| *c == per_device) {
            break;
        }
        assert!(
            counts.iter().all(|c| *c <= per_device),
            "more readings stored than published: {counts:?} of {per_device}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "stored {counts:?} of {per_device} per device; gateway log:\n{}",
            tail(&site.log())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And nothing arrives twice later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..site.devices {
        assert_eq!(site.stored(i, start - 1.0, end).await, per_device);
    }
}

async fn wait_metrics(site: &Site) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while site.gateway_metrics().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway's /metrics never answered; log:\n{}",
            tail(&site.log())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn spool_readings(site: &Site) -> f64 {
    prom_value(&site.gateway_metrics().await, "apr_gateway_spool_readings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_with_sigkill_20_times_under_load_loses_and_duplicates_nothing() {
    let site = Site::new(4).await;
    let mut gateway = site.gateway();
    wait_metrics(&site).await;
    let load = Load::start(&site, 2_500, 25, Duration::from_millis(100));
    let mut rng = rand::thread_rng();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..600))).await;
        gateway.kill();
        gateway = site.gateway();
    }
    let (start, per_device) = load.finish(&site, Duration::from_secs(60)).await;
    assert_all_stored_once(&site, start, per_device, Duration::from_secs(60)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while spool_readings(&site).await > 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "the spool empties");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_server_down_devices_are_acknowledged_from_the_spool_and_the_backlog_drains() {
    let mut site = Site::new(4).await;
    let _gateway = site.gateway();
    wait_metrics(&site).await;
    site.server.stop().await;
    let load = Load::start(&site, 1_500, 50, Duration::from_millis(20));
    // Every pack is acknowledged while the server is down: it is on disk.
    let counters = load.counters.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while counters.readings_acked.load(Ordering::Relaxed) < 6_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "devices acknowledged while the server is down: {} of 6000",
            counters.readings_acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = site.gateway_metrics().await;
    assert_eq!(prom_value(&page, "apr_gateway_spool_readings"), 6_000.0);
    assert_eq!(prom_value(&page, "apr_gateway_mode"), 2.0, "offline");
    let status = site.status("es");
    assert!(
        status.contains("Sin conexión con el servidor")
            && status.contains("6.000 lecturas guardadas en disco"),
        "{status}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    site.server.restart().await;
    let (start, per_device) = load.finish(&site, Duration::from_secs(30)).await;
    assert_all_stored_once(&site, start, per_device, Duration::from_secs(60)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = site.status("es");
        if status.starts_with("Datos fluyendo: 0 lecturas pendientes") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(site
        .status("en")
        .starts_with("Data flowing: 0 readings pending"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_restarted_and_killed_under_load_loses_and_duplicates_nothing() {
    let mut site = Site::new(4).await;
    let _gateway = site.gateway();
    wait_metrics(&site).await;
    let load = Load::start(&site, 2_000, 25, Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    site.mosquitto.stop(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    site.mosquitto.start_again();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    site.mosquitto.stop(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    site.mosquitto.start_again();
    let (start, per_device) = load.finish(&site, Duration::from_secs(60)).await;
    assert_all_stored_once(&site, start, per_device, Duration::from_secs(60)).await;
}

/// A small tmpfs mounted for the spool, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The spool on a 256 KiB tmpfs, configured far larger, the server down
/// while the devices publish about 440 KB of spool records.
async fn disk_fills_up(when_full: &str) {
    if !is_root() {
        eprintln!("SKIPPED: the full-disk test mounts a tmpfs and needs root");
        return;
    }
    let mut site = Site::new(2).await;
    let Some(tmpfs) = Tmpfs::mount(site.dir.path().join("small"), "256k") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    };
    let token = site.token();
    site.write_config(
        &token,
        SpoolSetup {
            dir: &tmpfs.0.join("spool"),
            when_full,
            max_bytes: 64 << 20,
            segment_bytes: 32 << 10,
        },
    );
    let _gateway = site.gateway();
    wait_metrics(&site).await;
    site.server.stop().await;
    let per_device = 5_000;
    let load = Load::start(&site, per_device, 20, Duration::from_millis(2));
    let full_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = site.gateway_metrics().await;
        if prom_value(&page, "apr_gateway_spool_disk_full_errors_total") > 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < full_deadline,
            "the disk never filled up: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if when_full == "drop_oldest" {
        // Everything is acknowledged even though the disk is full: the
        // oldest packs make room.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while load.counters.readings_acked.load(Ordering::Relaxed) < (2 * per_device) as u64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "devices acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            load.counters.readings_acked.load(Ordering::Relaxed) < (2 * per_device) as u64,
            "with block, devices keep what the full spool cannot take"
        );
    }
    let status = site.status("es");
    assert!(
        status.contains("el disco del gateway está lleno") || when_full == "drop_oldest",
        "{status}"
    );
    site.server.restart().await;
    let (start, per_device) = load.finish(&site, Duration::from_secs(90)).await;
    let end = start + per_device as f64 + 10.0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = site.gateway_metrics().await;
        let dropped = prom_value(&page, "apr_gateway_spool_dropped_readings_total") as usize;
        let held = prom_value(&page, "apr_gateway_spool_readings") as usize;
        let mut stored = 0;
        for i in 0..site.devices {
            stored += site.stored(i, start - 1.0, end).await;
        }
        if held == 0 && stored + dropped == 2 * per_device {
            if when_full == "drop_oldest" {
                assert!(dropped > 0, "the policy dropped something");
            } else {
                assert_eq!(dropped, 0, "block drops nothing");
            }
            break;
        }
        assert!(
            stored + dropped <= 2 * per_device,
            "stored {stored} + dropped {dropped} > published {}",
            2 * per_device
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "stored {stored} + dropped {dropped} (held {held}) != published {}; log:\n{}",
            2 * per_device,
            tail(&site.log())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(_gateway);
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_with_drop_oldest_counts_every_dropped_reading() {
    disk_fills_up("drop_oldest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_with_block_keeps_the_packs_in_the_device_outboxes() {
    disk_fills_up("block").await;
}

#[test]
fn the_gateway_binary_is_the_one_under_test() {
    assert!(Path::new(GATEWAY).exists());
    let out = Command::new(GATEWAY)
        .arg("configfile")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("when_full = \"block\""), "{text}");
    let _ = GatewayProcess::pid;
}
