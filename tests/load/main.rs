//! The end-to-end load tool: N simulated APR sites publish through a real
//! broker (the embedded one, or mosquitto) to site gateways and the real
//! server; reports sustained readings/s stored and publish → queryable
//! latency (p50/p99).
//!
//! Each site is a twin device: packs encoded by the firmware core, kept in
//! its outbox until the gateway acknowledges them end to end, at most
//! `--window` unacknowledged at a time (the flow control a real device has).
//! A probe device publishes one reading every 100 ms and polls the HTTP API
//! until it is returned, for the latency figures.
//!
//! `cargo test --release --test load` runs a short smoke run (and fails on
//! any loss); pass arguments for real runs, e.g.
//! `cargo test --release --test load -- --broker mosquitto --sites 2422 --seconds 60`.

#[path = "../support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apr_firmware::{Sample, SampleValue};
use apr_gateway::{DeviceDirectory, EmbeddedBroker, Gateway, GatewayConfig, GatewayHandle};
use apr_server::auth::{self, NewUser, Role};
use apr_server::store::{AprRecord, Region};
use apr_twin::device::{DeviceCounters, DeviceOptions, SimDevice};
use apr_wire::ingest::GatewayDevice;
use apr_wire::Metric;
use clap::Parser;
use rumqttc::{AsyncClient, MqttOptions, QoS};

#[derive(Parser, Debug, Clone)]
#[command(about = "End-to-end ingest load through a real broker")]
struct Args {
    /// `embedded` (rumqttd behind the device gate) or `mosquitto`.
    #[arg(long, default_value = "embedded")]
    broker: String,
    /// Simulated APR sites (one device each).
    #[arg(long, default_value_t = 56)]
    sites: usize,
    /// How long the sites publish.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Target readings/s over all sites (0: as fast as acknowledgments allow).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Site gateways, each serving an equal share of the sites.
    #[arg(long, default_value_t = 2)]
    gateways: usize,
    /// Report times per pack (10 readings each).
    #[arg(long, default_value_t = 1)]
    reports_per_pack: usize,
    /// Unacknowledged packs a site may have in flight.
    #[arg(long, default_value_t = 32)]
    window: usize,
    // `cargo test` passes these to every test binary; accepted and ignored.
    #[arg(long, hide = true)]
    nocapture: bool,
    #[arg(long, hide = true)]
    test_threads: Option<usize>,
}

/// The ten numeric metrics of the table: one report of a site.
fn metrics() -> Vec<Metric> {
    Metric::ALL
        .into_iter()
        .filter(|m| m.kind() == apr_wire::metric::ValueKind::Number)
        .collect()
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((ut + st) / 100.0)
        })
        .unwrap_or(0.0)
}

fn site_id(i: usize) -> String {
    format!("load-{i:05}")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let ok = run(args).await;
    // The plain closing line test runners' readers understand.
    if ok {
        println!("load: 1 passed, 0 failed");
    } else {
        println!("load: 0 passed, 1 failed");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = args.sites.max(1);
    // Server with a synthetic fleet (one extra site for the latency probe).
    let mut config = apr_server::Config::default();
    config.store.path = dir.path().join("server.sqlite3");
    let state = apr_server::open(&config).expect("open store");
    let aprs: Vec<AprRecord> = (0..=n)
        .map(|i| AprRecord {
            id: site_id(i),
            name: format!("Load site {i}"),
            comuna: "Carga".into(),
            region: "load".into(),
            beneficiaries: 400,
            connections: 125,
            source: "pozo".into(),
            capacity_l_s: 2.0,
            storage_m3: 30.0,
            gore_contribution_clp: 0,
            public_investment_clp: 0,
        })
        .collect();
    state
        .registry()
        .upsert_fleet(
            &[Region {
                id: "load".into(),
                name: "Load".into(),
            }],
            &aprs,
        )
        .expect("fleet");
    let probe_site = site_id(n);
    let g = args.gateways.clamp(1, n);
    let mut shares: Vec<Vec<String>> = vec![Vec::new(); g];
    for i in 0..=n {
        shares[i % g].push(site_id(i));
    }
    let mut gw_tokens = Vec::new();
    for (k, share) in shares.iter().enumerate() {
        let name = format!("gw-load-{k}");
        auth::create_user(
            state.registry(),
            &NewUser {
                username: name.clone(),
                role: Role::Gateway,
                password: None,
                aprs: share.clone(),
                region: None,
            },
        )
        .expect("gateway user");
        gw_tokens.push((
            name.clone(),
            auth::create_token(state.registry(), &name, None).expect("token"),
        ));
    }
    auth::create_user(
        state.registry(),
        &NewUser {
            username: "reader".into(),
            role: Role::Engineer,
            password: Some("load test reader password".into()),
            aprs: vec![],
            region: None,
        },
    )
    .expect("reader");
    let reader = auth::create_token(state.registry(), "reader", None).expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http_addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(apr_server::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));

    // Broker.
    let password = |i: usize| format!("secret-{i}");
    let devices: Vec<GatewayDevice> = (0..=n)
        .map(|i| GatewayDevice {
            apr: site_id(i),
            device: "d".into(),
            mqtt_username: format!("{}/d", site_id(i)),
            mqtt_password_sha256: apr_gateway::password_sha256(&password(i)),
            report_interval_s: 60,
            config: serde_json::json!({}),
        })
        .collect();
    let mut embedded = None;
    let mut mosquitto = None;
    let (host, port) = match args.broker.as_str() {
        "embedded" => {
            let b = EmbeddedBroker::start(
                "127.0.0.1:0".parse().expect("addr"),
                Arc::new(DeviceDirectory::new(devices.clone())),
            )
            .await
            .expect("embedded broker");
            let a = b.public_addr();
            embedded = Some(b);
            ("127.0.0.1".to_string(), a.port())
        }
        "mosquitto" => {
            let mut users: Vec<support::MqttUser> = (0..=n)
                .map(|i| support::MqttUser {
                    username: format!("{}/d", site_id(i)),
                    password: password(i),
                })
                .collect();
            for (name, _) in &gw_tokens {
                users.push(support::MqttUser {
                    username: name.clone(),
                    password: "gateway-secret".into(),
                });
            }
            let m = support::Mosquitto::start(&users, "gw-load-0", false);
            // Every gateway user gets the gateway's ACL block.
            let acl = std::fs::read_to_string(m.dir().join("acl")).expect("acl");
            let block = acl
                .split_once("user gw-load-0")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
            let mut extra = String::new();
            for (name, _) in gw_tokens.iter().skip(1) {
                extra.push_str(&format!("\nuser {name}{block}"));
            }
            std::fs::write(m.dir().join("acl"), format!("{acl}{extra}")).expect("acl");
            // mosquitto reads the ACL at start: restart it with the full file.
            let m = m.restart_with_acl();
            let port = m.addr.port();
            mosquitto = Some(m);
            ("127.0.0.1".to_string(), port)
        }
        other => panic!("--broker {other}: expected embedded or mosquitto"),
    };

    // Gateways.
    let mut gateways: Vec<GatewayHandle> = Vec::new();
    for (k, (name, token)) in gw_tokens.iter().enumerate() {
        let mut c = GatewayConfig {
            id: name.clone(),
            aprs: shares[k].clone(),
            ..GatewayConfig::default()
        };
        c.server.url = format!("http://{http_addr}");
        c.server.token = token.clone();
        c.mqtt = match &embedded {
            Some(b) => b.gateway_mqtt_config(name),
            None => {
                let mut m = c.mqtt.clone();
                m.host = host.clone();
                m.port = port;
                m.username = name.clone();
                m.password = "gateway-secret".into();
                m.client_id = name.clone();
                m
            }
        };
        let h = Gateway::start_http(c).await.expect("gateway");
        assert!(
            h.wait_ready(Duration::from_secs(30)).await,
            "gateway {name} ready"
        );
        gateways.push(h);
    }

    // Sites.
    let counters = Arc::new(DeviceCounters::default());
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let base = now_s().floor() - 20.0 * 86_400.0;
    let per_pack = args.reports_per_pack.max(1);
    let pack_interval = if args.rate > 0 {
        Some(Duration::from_secs_f64(
            (n * per_pack * metrics().len()) as f64 / args.rate as f64,
        ))
    } else {
        None
    };
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let stored0 = state.series().readings_stored();
    let mut sites = Vec::new();
    for i in 0..n {
        let mut o = DeviceOptions::new(
            &site_id(i),
            "d",
            &host,
            port,
            &format!("{}/d", site_id(i)),
            &password(i),
        );
        o.max_unacked = args.window.max(1);
        o.resend_after = Duration::from_secs(15);
        let counters = counters.clone();
        let stop = stop_publishing.clone();
        sites.push(tokio::spawn(async move {
            let mut dev = SimDevice::connect(o, counters).expect("device");
            let mut seq: u64 = 0;
            let metrics = metrics();
            let mut samples = Vec::with_capacity(per_pack * metrics.len());
            let mut tick = pack_interval.map(|d| {
                let mut t = tokio::time::interval(d);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                samples.clear();
                for _ in 0..per_pack {
                    let t = base + seq as f64;
                    seq += 1;
                    for (k, m) in metrics.iter().enumerate() {
                        let (lo, hi) = m.range();
                        let v = lo.max(0.0)
                            + ((seq as f64 + k as f64) % 7.0) / 7.0
                                * (hi.min(100.0) - lo.max(0.0))
                                * 0.5;
                        let v = if *m == Metric::Rssi {
                            -70.0
                        } else if *m == Metric::Pressure {
                            20.0
                        } else {
                            v
                        };
                        samples.push(Sample {
                            metric: *m,
                            time: t,
                            value: SampleValue::Number(v),
                        });
                    }
                }
                if dev.publish(&samples).await.is_err() {
                    break;
                }
            }
            let left = dev.drain(Duration::from_secs(60)).await;
            dev.disconnect().await;
            left
        }));
    }

    // Latency probe.
    let probe = {
        let stop = stop_publishing.clone();
        let http = reqwest::Client::new();
        let (host, reader, probe_site) = (host.clone(), reader.clone(), probe_site.clone());
        let pw = password(n);
        tokio::spawn(async move {
            let mut o = MqttOptions::new("load-probe", host, port);
            o.set_credentials(format!("{probe_site}/d"), pw);
            let (client, mut el) = AsyncClient::new(o, 16);
            tokio::spawn(async move { while el.poll().await.is_ok() {} });
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut lat = Vec::new();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let bt = now_s().floor() - 10_000.0 + k as f64;
                let payload = format!(
                    r#"[{{"bn":"urn:apr:{probe_site}:d:","bt":{bt},"n":"chlorine","u":"mg/l","v":0.5}}]"#
                );
                let t0 = Instant::now();
                if client
                    .publish(
                        format!("apr/{probe_site}/d/up"),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .await
                    .is_err()
                {
                    break;
                }
                let ts = chrono::DateTime::from_timestamp(bt as i64, 0)
                    .expect("t")
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let url = format!("http://{http_addr}/api/v1/aprs/{probe_site}/readings?metric=chlorine&from={ts}&to={ts}");
                loop {
                    let (s, body) = support::get_json(&http, &url, Some(&reader)).await;
                    if s == 200 && body["points"].as_array().is_some_and(|p| !p.is_empty()) {
                        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                        break;
                    }
                    if t0.elapsed() > Duration::from_secs(10) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            lat
        })
    };

    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop_publishing.store(true, Ordering::Relaxed);
    let publish_end = started.elapsed();
    let mut unacked = 0;
    for s in sites {
        unacked += s.await.unwrap_or(usize::MAX);
    }
    let mut lat = probe.await.unwrap_or_default();
    lat.sort_by(f64::total_cmp);
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu0;
    let sent_packs = counters.packs_sent.load(Ordering::Relaxed);
    let acked_readings = counters.readings_acked.load(Ordering::Relaxed);
    let published_readings = sent_packs * (per_pack * metrics().len()) as u64;
    // Probe readings are stored too; count only the sites' own.
    let stored = state.series().readings_stored() - stored0 - lat.len() as u64;
    let rss = rss_mib();
    let resent = counters.packs_resent.load(Ordering::Relaxed);
    let rate = stored as f64 / elapsed.as_secs_f64();
    let store_bytes = std::fs::metadata(dir.path().join("server.sqlite3"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.path().join("server.sqlite3-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!("load: broker={} sites={} gateways={g} window={} reports_per_pack={per_pack} rate_target={}", args.broker, n, args.window, args.rate);
    println!("load: published {published_readings} readings in {:.1} s; stored {stored}; acknowledged {acked_readings}; unacknowledged packs {unacked}; resent packs {resent}", publish_end.as_secs_f64());
    println!(
        "load: sustained {rate:.0} readings/s stored (publish start → last ack, {:.1} s)",
        elapsed.as_secs_f64()
    );
    println!(
        "load: publish → queryable latency p50 {:.1} ms, p99 {:.1} ms over {} probes",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len()
    );
    println!("load: process CPU {cpu:.1} s ({:.0} % of one core), RSS {rss:.0} MiB (broker + gateways + server + load generator in one process)", 100.0 * cpu / elapsed.as_secs_f64());
    if stored > 0 {
        println!(
            "load: store {:.1} MiB, {:.0} bytes per reading",
            store_bytes as f64 / 1048576.0,
            store_bytes as f64 / (state.series().readings_stored() as f64)
        );
    }
    let mut ok = true;
    if stored != published_readings || unacked != 0 || acked_readings != published_readings {
        println!("load: LOSS: published {published_readings}, stored {stored}, acknowledged {acked_readings}");
        ok = false;
    }
    for gw in gateways {
        let _ = gw.shutdown().await;
    }
    if let Some(b) = embedded {
        b.shutdown().await;
    }
    drop(mosquitto);
    let _ = stop.send(());
    let _ = server.await;
    ok
}
