//! Benchmarks of the gateway (issue 4), ignored by default; run in release:
//! `cargo test --release --test gateway_bench -- --ignored --nocapture --test-threads 1`.
//! Each prints the median of several runs.
//!
//! - backlog replay: one site's 7-day outage (10 metrics at 1/min, 100,800
//!   readings) already in the durable spool, forwarded to the real server
//!   (library and SQLite store in process) until stored (goal <= 2 s);
//! - the gateway binary's resident memory at 1,000 readings/s from 10
//!   twin devices through mosquitto (VmRSS from /proc, goal <= 16 MiB);
//! - spool appends with group commit (one fdatasync per group).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apr_firmware::{Sample, SampleValue};
use apr_gateway::config::{GatewayConfig, WhenFull};
use apr_gateway::spool::{DiskSpool, DiskSpoolOptions, Spool};
use apr_gateway::{Gateway, HttpSink};
use apr_twin::device::{DeviceCounters, DeviceOptions, SimDevice};
use apr_wire::ingest::IngestPack;
use apr_wire::validate::Reading;
use apr_wire::Metric;
use support::{free_addr, Mosquitto, MqttUser};

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const TEN: [(Metric, f64); 10] = [
    (Metric::Flow, 2.4),
    (Metric::Volume, 1234.5),
    (Metric::Chlorine, 0.6),
    (Metric::Turbidity, 0.8),
    (Metric::Ph, 7.1),
    (Metric::Conductivity, 450.0),
    (Metric::Pressure, 32.0),
    (Metric::TankLevel, 71.0),
    (Metric::Battery, 12.6),
    (Metric::Rssi, -71.0),
];

/// A server with the demo fleet and a gateway user; returns its state,
/// config, the APR and the gateway's token.
fn server_state(dir: &std::path::Path) -> (apr_server::AppState, String, String) {
    let mut config = apr_server::Config::default();
    config.store.path = dir.join("server.sqlite3");
    let state = apr_server::open(&config).expect("open store");
    let fleet = apr_server::fleet::parse(apr::demo::FLEET_CSV, "fleet.csv").expect("fleet");
    apr_server::fleet::import(state.registry(), &fleet).expect("import");
    let apr = fleet.aprs[0].id.clone();
    let token = support::gateway_token(state.registry(), "gw-bench", vec![apr.clone()]);
    (state, apr, token)
}

fn week_of_packs(apr: &str) -> Vec<IngestPack> {
    let start = ((now_s() - 8.0 * 86_400.0) / 60.0).floor() as i64 * 60_000;
    (0..7 * 24 * 60)
        .map(|m| {
            let t_ms = start + m * 60_000;
            IngestPack {
                apr: apr.into(),
                device: "caseta".into(),
                bt: Some(t_ms as f64 / 1000.0),
                received_ms: t_ms,
                readings: TEN
                    .iter()
                    .map(|(metric, v)| Reading {
                        metric: *metric,
                        t_ms,
                        value: *v,
                    })
                    .collect(),
                refusals: vec![],
                raw: None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release"]
async fn bench_backlog_replay_of_a_7_day_outage() {
    let mut times = Vec::new();
    for run in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (state, apr, token) = server_state(dir.path());
        let spool_opts = DiskSpoolOptions {
            dir: dir.path().join("spool"),
            max_bytes: 1 << 30,
            segment_bytes: 4 << 20,
            when_full: WhenFull::Block,
        };
        {
            let spool = DiskSpool::open(spool_opts.clone()).expect("spool");
            for group in week_of_packs(&apr).chunks(512) {
                spool.append_batch(group.to_vec()).await.expect("append");
            }
            assert_eq!(spool.depth().readings, 100_800);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(apr_server::serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        let mut config = GatewayConfig {
            id: "gw-bench".into(),
            aprs: vec![apr.clone()],
            ..GatewayConfig::default()
        };
        config.server.url = format!("http://{addr}");
        config.server.token = token;
        config.mqtt.port = free_addr().port(); // nothing there: MQTT is not measured
        config.devices.refresh_s = 0;
        let sink = HttpSink::from_config(&config).expect("sink");
        let t0 = Instant::now();
        let spool = DiskSpool::open(spool_opts).expect("reopen");
        let g = Gateway::start(config, sink, spool).await.expect("gateway");
        while g.stats().spool.readings > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        assert_eq!(g.stats().readings_forwarded, 100_800);
        println!("replay run {run}: 100,800 readings stored in {elapsed:.3} s (open + forward)");
        times.push(elapsed);
        g.shutdown().await.expect("shutdown");
        let _ = stop.send(());
        let _ = server.await;
    }
    println!(
        "MEDIAN backlog replay (7 days, 100,800 readings): {:.3} s",
        median(times)
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release"]
async fn bench_gateway_rss_at_1000_readings_per_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, apr, token) = server_state(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(apr_server::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    let devices = 10;
    let mut users: Vec<MqttUser> = (0..devices)
        .map(|i| MqttUser {
            username: format!("{apr}/d{i}"),
            password: format!("secret-{i}"),
        })
        .collect();
    users.push(MqttUser {
        username: "gw-bench".into(),
        password: "gw-secret".into(),
    });
    let mosquitto = Mosquitto::start(&users, "gw-bench", false);
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "id = \"gw-bench\"\naprs = [\"{apr}\"]\n[server]\nurl = \"http://{addr}\"\ntoken = \"{token}\"\n\
             [mqtt]\nport = {port}\nusername = \"gw-bench\"\npassword = \"gw-secret\"\n\
             [spool]\ndir = \"{spool}\"\n[devices]\nrefresh_s = 0\n[metrics]\nlisten = \"\"\n",
            port = mosquitto.addr.port(),
            spool = dir.path().join("spool").display()
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_apr-site-gateway"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("gateway");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counters = Arc::new(DeviceCounters::default());
    let seconds = 20;
    let start = (now_s() - 86_400.0).floor();
    let mut tasks = Vec::new();
    for i in 0..devices {
        let mut opts = DeviceOptions::new(
            &apr,
            &format!("d{i}"),
            "127.0.0.1",
            mosquitto.addr.port(),
            &format!("{apr}/d{i}"),
            &format!("secret-{i}"),
        );
        opts.resend_after = Duration::from_secs(5);
        let mut device = SimDevice::connect(opts, counters.clone()).expect("device");
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for k in 0..seconds * 10 {
                tick.tick().await;
                // 10 readings per 100 ms per device: 1,000 readings/s in all.
                let samples: Vec<Sample> = TEN
                    .iter()
                    .map(|(metric, v)| Sample {
                        metric: *metric,
                        time: start + (k as f64) * 0.1 + (i as f64) * 0.001,
                        value: SampleValue::Number(*v),
                    })
                    .collect();
                device.publish(&samples).await.expect("publish");
            }
            device
        }));
    }
    let pid = child.id();
    let mut samples = Vec::new();
    for s in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if s >= 5 {
            samples.push(rss_kib(pid) as f64 / 1024.0);
        }
    }
    for t in tasks {
        let d = t.await.expect("device");
        d.drain(Duration::from_secs(10)).await;
    }
    let acked = counters
        .readings_acked
        .load(std::sync::atomic::Ordering::Relaxed);
    let _ = child.kill();
    let _ = child.wait();
    println!("RSS samples (MiB): {samples:.1?}");
    println!(
        "MEDIAN gateway RSS at 1,000 readings/s: {:.1} MiB (max {:.1}); {acked} readings acknowledged",
        median(samples.clone()),
        samples.iter().copied().fold(0.0, f64::max)
    );
    let _ = stop.send(());
    let _ = server.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release"]
async fn bench_spool_append_throughput_with_group_commit() {
    for group in [1usize, 16, 128, 1024] {
        let total = if group == 1 { 1_000 } else { 40_000 };
        let mut rates = Vec::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
            let spool = DiskSpool::open(DiskSpoolOptions {
                dir: dir.path().join("spool"),
                max_bytes: 1 << 30,
                segment_bytes: 4 << 20,
                when_full: WhenFull::Block,
            })
            .expect("spool");
            let packs: Vec<IngestPack> = week_of_packs("a1")
                .into_iter()
                .cycle()
                .take(total)
                .collect();
            let t0 = Instant::now();
            for g in packs.chunks(group) {
                spool.append_batch(g.to_vec()).await.expect("append");
            }
            rates.push(total as f64 / t0.elapsed().as_secs_f64());
        }
        let m = median(rates);
        println!(
            "MEDIAN spool append, {group} packs per fdatasync: {m:.0} packs/s = {:.0} readings/s (10 per pack)",
            m * 10.0
        );
    }
}
