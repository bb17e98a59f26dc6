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

mod central;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apr_firmware::{Sample, SampleValue};
use apr_gateway::{
    DeviceDirectory, EmbeddedBroker, GateHop, Gateway, GatewayConfig, GatewayHandle,
};
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
    /// The gateways' spool: `disk` (fsync before the device's ack, as
    /// deployed) or `memory` (the ack waits for the server's commit).
    #[arg(long, default_value = "disk")]
    spool: String,
    /// The gateways' `[forward] max_batch_delay_ms`: how long a batch may
    /// wait to fill in live mode (0, the default: not at all).
    #[arg(long, default_value_t = 0)]
    batch_delay_ms: u64,
    /// Run each gateway as its own `apr-site-gateway` process (mosquitto
    /// only), so the gateways' CPU and RSS are reported apart.
    #[arg(long)]
    gateway_process: bool,
    /// After the run, write the same readings (shifted 40 days back, so they
    /// are new to the store) to the server's ingest API and, as InfluxDB line
    /// protocol, to VictoriaMetrics (Debian's `victoria-metrics`, started on
    /// loopback), each with two concurrent writers; report both rates and
    /// their ratio.
    #[arg(long)]
    victoria: bool,
    /// The central server as deployed: no broker and no devices here, each
    /// of `--sites` APRs its own site gateway posting one pack per request
    /// to the server's ingest API (one request in flight each; `--rate`
    /// paces them). See `central.rs`.
    #[arg(long)]
    central: bool,
    /// In-process gateways reach the embedded broker in-process (`[mqtt]
    /// in_process`, the default); `--in-process false`: over its internal
    /// TCP port, as before that link existed.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    in_process: bool,
    /// The embedded broker's device gate hands packets to rumqttd's router
    /// in-process (`[broker] gate_in_process`, the default); `--gate-in-process
    /// false`: a TCP connection per device to rumqttd, as before.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    gate_in_process: bool,
    /// The server's `[store] token_cache_entries` (0: every request reads
    /// its token's user from SQLite, as before the cache).
    #[arg(long, default_value_t = apr_server::store::TokenCacheSettings::default().entries)]
    token_cache: usize,
    /// The server's `[store] wal_checkpoint_pages`.
    #[arg(long, default_value_t = apr_server::store::RecentLog::default().checkpoint_pages)]
    wal_checkpoint_pages: u32,
    /// The server's `[store] direct_per_series`.
    #[arg(long, default_value_t = apr_server::store::RecentLog::default().direct_per_series)]
    direct_per_series: u64,
    /// The server's `[store] recent_rows_max`.
    #[arg(long, default_value_t = apr_server::store::RecentLog::default().merge_above_rows)]
    recent_rows_max: u64,
    /// The server's `[store] recent_chunk_rows`.
    #[arg(long, default_value_t = apr_server::store::RecentLog::default().chunk_rows)]
    recent_chunk_rows: u64,
    /// Worker threads of a runtime of the simulated devices' own (0: they
    /// share the harness's two with the gateways, the server and the probe).
    /// Real devices are other machines: on their own threads the OS, not
    /// one tokio queue, shares the cores between them and the system.
    #[arg(long, default_value_t = 0)]
    device_threads: usize,
    /// The nice value of those threads (Linux; with `--device-threads`):
    /// above 0 the simulated devices yield the cores to the system under
    /// test, as devices on their own machines would not take them.
    #[arg(long, default_value_t = 0)]
    device_nice: i32,
    // `cargo test` passes these to every test binary; accepted and ignored.
    #[arg(long, hide = true)]
    nocapture: bool,
    #[arg(long, hide = true)]
    test_threads: Option<usize>,
}

/// The name of the simulated devices' threads (with `--device-threads`).
const DEVICE_THREAD: &str = "sim-device";

/// A runtime of the simulated devices' own, `threads` workers at `nice`
/// (None for 0 threads: the devices share the harness's runtime).
fn device_runtime(threads: usize, nice: i32) -> Option<tokio::runtime::Runtime> {
    if threads == 0 {
        return None;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(DEVICE_THREAD)
        .enable_all()
        .on_thread_start(move || {
            if nice != 0 {
                // On Linux a nice value is per thread; who = 0 is this one.
                // SAFETY: setpriority reads only its integer arguments.
                let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
                assert_eq!(r, 0, "cannot set the simulated devices' nice to {nice}");
            }
        })
        .build()
        .expect("the simulated devices' runtime");
    Some(rt)
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
    rss_mib_of("self")
}

/// VmRSS of a process (`self` or a pid), MiB.
fn rss_mib_of(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
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
    cpu_seconds_of("self")
}

/// utime + stime of a process (`self` or a pid), seconds (100 Hz ticks).
fn cpu_seconds_of(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
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

/// The value site reports carry for metric `m` (index `k`) in report `seq`
/// (counted from 1): deterministic, so the side-by-side comparison can write
/// exactly the readings the sites published.
fn sample_value(m: Metric, k: usize, seq: u64) -> f64 {
    let (lo, hi) = m.range();
    match m {
        Metric::Rssi => -70.0,
        Metric::Pressure => 20.0,
        _ => {
            lo.max(0.0)
                + ((seq as f64 + k as f64) % 7.0) / 7.0 * (hi.min(100.0) - lo.max(0.0)) * 0.5
        }
    }
}

fn site_id(i: usize) -> String {
    format!("load-{i:05}")
}

/// How long the latency probe waits for its reading to be queryable; a
/// probe still missing then counts as slower than this in the percentiles.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A latency percentile as printed: `> 10000` when it falls among the probes
/// that timed out (their latency is only known to exceed the timeout), `n/a`
/// without probes.
fn latency_text(sorted: &[f64], p: f64) -> String {
    let v = percentile(sorted, p);
    if v.is_nan() {
        "n/a".into()
    } else if v.is_infinite() {
        format!("> {:.0}", PROBE_TIMEOUT.as_secs_f64() * 1000.0)
    } else {
        format!("{v:.1}")
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Polls the readings API until the probe's chlorine reading at `bt` is
/// returned; answers the milliseconds since `t0`, or infinity past
/// [`PROBE_TIMEOUT`] (slower than the timeout: counted, as such).
async fn probe_latency_ms(
    http: &reqwest::Client,
    http_addr: std::net::SocketAddr,
    probe_site: &str,
    reader: &str,
    bt: f64,
    t0: Instant,
) -> f64 {
    let ts = chrono::DateTime::from_timestamp(bt as i64, 0)
        .expect("t")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let url = format!(
        "http://{http_addr}/api/v1/aprs/{probe_site}/readings?metric=chlorine&from={ts}&to={ts}"
    );
    loop {
        let (s, body) = support::get_json(http, &url, Some(reader)).await;
        if s == 200 && body["points"].as_array().is_some_and(|p| !p.is_empty()) {
            return t0.elapsed().as_secs_f64() * 1000.0;
        }
        if t0.elapsed() > PROBE_TIMEOUT {
            return f64::INFINITY;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
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
    config.store.token_cache_entries = args.token_cache;
    config.store.wal_checkpoint_pages = args.wal_checkpoint_pages;
    config.store.direct_per_series = args.direct_per_series;
    config.store.recent_rows_max = args.recent_rows_max;
    config.store.recent_chunk_rows = args.recent_chunk_rows;
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
    // Central: one gateway per APR (the probe's too), as deployed.
    let g = if args.central {
        n + 1
    } else {
        args.gateways.clamp(1, n)
    };
    let mut shares: Vec<Vec<String>> = vec![Vec::new(); g];
    for i in 0..=n {
        shares[i % g].push(site_id(i));
    }
    let mut gw_tokens = Vec::new();
    for (k, share) in shares.iter().enumerate() {
        let name = format!("gw-load-{k}");
        let token = support::gateway_token(state.registry(), &name, share.clone());
        gw_tokens.push((name, token));
    }
    let reader = support::reader_token(state.registry(), "reader");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http_addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(apr_server::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));

    if args.central {
        let ok = central::run(central::Central {
            state: &state,
            http_addr,
            tokens: &gw_tokens,
            reader: &reader,
            sites: n,
            seconds: args.seconds,
            rate: args.rate,
            per_pack: args.reports_per_pack,
        })
        .await;
        let _ = stop.send(());
        let _ = server.await;
        return ok;
    }

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
            let b = EmbeddedBroker::start_with(
                "127.0.0.1:0".parse().expect("addr"),
                Arc::new(DeviceDirectory::new(devices.clone())),
                None,
                if args.gate_in_process {
                    GateHop::InProcess
                } else {
                    GateHop::Tcp
                },
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
    let disk_spool = match args.spool.as_str() {
        "disk" => true,
        "memory" => false,
        other => panic!("--spool {other}: expected disk or memory"),
    };
    let mut gateways: Vec<GatewayHandle> = Vec::new();
    let mut gateway_processes: Vec<GatewayProcess> = Vec::new();
    for (k, (name, token)) in gw_tokens.iter().enumerate() {
        let spool_dir = dir.path().join(format!("spool-{k}"));
        if args.gateway_process {
            assert!(
                embedded.is_none(),
                "--gateway-process needs --broker mosquitto (the embedded broker lives in this process)"
            );
            gateway_processes.push(GatewayProcess::start(
                dir.path(),
                k,
                &GatewayToml {
                    name,
                    aprs: &shares[k],
                    server: http_addr,
                    token,
                    mqtt_port: port,
                    spool_dir: disk_spool.then_some(spool_dir.as_path()),
                },
            ));
            continue;
        }
        let mut c = GatewayConfig {
            id: name.clone(),
            aprs: shares[k].clone(),
            ..GatewayConfig::default()
        };
        c.forward.max_batch_delay_ms = args.batch_delay_ms;
        if disk_spool {
            c.spool.dir = spool_dir.display().to_string();
        }
        c.server.url = format!("http://{http_addr}");
        c.server.token = token.clone();
        c.mqtt = match &embedded {
            Some(b) => {
                let mut m = b.gateway_mqtt_config(name);
                m.in_process = args.in_process;
                m
            }
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
    for (k, p) in gateway_processes.iter_mut().enumerate() {
        assert!(
            p.wait_ready(Duration::from_secs(30)).await,
            "gateway process {k} ready"
        );
    }

    // Sites.
    let counters = Arc::new(DeviceCounters::default());
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let per_pack = args.reports_per_pack.max(1);
    let pack_interval = if args.rate > 0 {
        Some(Duration::from_secs_f64(
            (n * per_pack * metrics().len()) as f64 / args.rate as f64,
        ))
    } else {
        None
    };
    // Rate-limited runs are real time: each site reports every
    // `pack_interval`, stamped with the wall clock's report times (what real
    // devices send), and the sites' phases are spread evenly over the
    // interval, as a fleet of independently started devices is (none aligned
    // to the others). At full speed the report times are one second apart,
    // starting 20 days back, so no time is in the future.
    let (base, step) = match pack_interval {
        Some(d) => (now_s().floor(), d.as_secs_f64() / per_pack as f64),
        None => (now_s().floor() - 20.0 * 86_400.0, 1.0),
    };
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let writer_cpu0 = thread_cpu_seconds("store-writer");
    let writer_bytes0 = thread_write_bytes("store-writer");
    let alert_cpu0 = thread_cpu_seconds("alert-engine");
    let gw_cpu0: Vec<f64> = gateway_processes
        .iter()
        .map(|p| cpu_seconds_of(&p.pid()))
        .collect();
    let stored0 = state.series().readings_stored();
    let device_runtime = device_runtime(args.device_threads, args.device_nice);
    let device_cpu0 = thread_cpu_seconds(DEVICE_THREAD);
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
        let site = async move {
            let mut dev = SimDevice::connect(o, counters).expect("device");
            let mut seq: u64 = 0;
            let metrics = metrics();
            let mut samples = Vec::with_capacity(per_pack * metrics.len());
            let mut tick = pack_interval.map(|d| {
                let phase = d.mul_f64(i as f64 / n as f64);
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + phase, d);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                samples.clear();
                for _ in 0..per_pack {
                    let t = base + step * (seq as f64 + i as f64 / n as f64);
                    seq += 1;
                    for (k, m) in metrics.iter().enumerate() {
                        samples.push(Sample {
                            metric: *m,
                            time: t,
                            value: SampleValue::Number(sample_value(*m, k, seq)),
                        });
                    }
                }
                if dev.publish(&samples).await.is_err() {
                    break;
                }
            }
            let left = dev.drain(Duration::from_secs(60)).await;
            dev.disconnect().await;
            (left, seq)
        };
        sites.push(match &device_runtime {
            Some(rt) => rt.spawn(site),
            None => tokio::spawn(site),
        });
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
            let mut net = rumqttc::NetworkOptions::new();
            net.set_tcp_nodelay(true);
            el.set_network_options(net);
            // The gateway's acks (the `bt`s of packs on its disk), as they
            // arrive: the first half of each probe's way.
            let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
            tokio::spawn(async move {
                loop {
                    match el.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                            let at = Instant::now();
                            let bts: Vec<f64> =
                                serde_json::from_slice(&p.payload).unwrap_or_default();
                            for bt in bts {
                                let _ = acks_tx.send((bt as i64, at));
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
            let ack_topic = format!("apr/{probe_site}/d/ack");
            let _ = client.subscribe(ack_topic, QoS::AtLeastOnce).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut lat = Vec::new();
            let mut ack_lat = Vec::new();
            // Probes published (a probe that timed out may still be stored).
            let mut probes = 0u64;
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
                probes += 1;
                lat.push(probe_latency_ms(&http, http_addr, &probe_site, &reader, bt, t0).await);
                // Its ack came before it was queryable (the gateway acks
                // once the pack is on its disk, then forwards it).
                let acked = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some((b, at)) = acks.recv().await {
                        if b == bt as i64 {
                            return Some(at);
                        }
                    }
                    None
                })
                .await
                .ok()
                .flatten();
                ack_lat.push(acked.map_or(f64::INFINITY, |at| (at - t0).as_secs_f64() * 1000.0));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (lat, ack_lat, probes)
        })
    };

    // Progress every 10 s: what a stuck run needs to be read.
    let progress = {
        let counters = counters.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(10));
            t.tick().await;
            loop {
                t.tick().await;
                let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
                println!(
                    "load: t={:.0}s sent {} packs, acked {}, resent {}, stored {} readings, connection errors {}, reconnects {}, fds {fds}, RSS {:.0} MiB",
                    started.elapsed().as_secs_f64(),
                    counters.packs_sent.load(Ordering::Relaxed),
                    counters.packs_acked.load(Ordering::Relaxed),
                    counters.packs_resent.load(Ordering::Relaxed),
                    state.series().readings_stored() - stored0,
                    counters.connection_errors.load(Ordering::Relaxed),
                    counters.reconnects.load(Ordering::Relaxed),
                    rss_mib(),
                );
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop_publishing.store(true, Ordering::Relaxed);
    let publish_end = started.elapsed();
    let mut unacked = 0;
    let mut site_reports: Vec<u64> = Vec::with_capacity(n);
    for s in sites {
        let (left, reports) = s.await.unwrap_or((usize::MAX, 0));
        unacked += left;
        site_reports.push(reports);
    }
    let device_cpu = thread_cpu_seconds(DEVICE_THREAD) - device_cpu0;
    if let Some(rt) = device_runtime {
        rt.shutdown_background();
    }
    let (mut lat, mut ack_lat, probes) = probe.await.unwrap_or_default();
    progress.abort();
    lat.sort_by(f64::total_cmp);
    ack_lat.sort_by(f64::total_cmp);
    // With a disk spool the devices are acknowledged once their packs are on
    // the gateway's disk, before the server has them: the run ends when the
    // server has stored every published reading (or after two minutes).
    // A report set larger than the devices' pack buffer goes out as several
    // packs, so readings are counted as the devices sent them (all sites
    // have finished, so the count is final).
    let published_readings = counters.readings_sent.load(Ordering::Relaxed);
    let expected = stored0 + published_readings + probes;
    let wait_until = Instant::now() + Duration::from_secs(120);
    while state.series().readings_stored() < expected && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu0;
    let writer_cpu = thread_cpu_seconds("store-writer") - writer_cpu0;
    let writer_bytes = thread_write_bytes("store-writer").saturating_sub(writer_bytes0);
    let alert_cpu = thread_cpu_seconds("alert-engine") - alert_cpu0;
    let gw_figures: Vec<(f64, f64)> = gateway_processes
        .iter()
        .zip(&gw_cpu0)
        .map(|(p, c0)| (cpu_seconds_of(&p.pid()) - c0, rss_mib_of(&p.pid())))
        .collect();
    let acked_readings = counters.readings_acked.load(Ordering::Relaxed);
    // Probe readings are stored too; count only the sites' own.
    let stored = state.series().readings_stored() - stored0 - probes;
    let rss = rss_mib();
    let resent = counters.packs_resent.load(Ordering::Relaxed);
    let rate = stored as f64 / elapsed.as_secs_f64();
    let store_bytes = std::fs::metadata(dir.path().join("server.sqlite3"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.path().join("server.sqlite3-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!("load: broker={} sites={} gateways={g} window={} reports_per_pack={per_pack} rate_target={} in_process={} gate_in_process={}", args.broker, n, args.window, args.rate, args.in_process && embedded.is_some(), args.gate_in_process && embedded.is_some());
    println!("load: published {published_readings} readings in {:.1} s; stored {stored}; acknowledged {acked_readings}; unacknowledged packs {unacked}; resent packs {resent}", publish_end.as_secs_f64());
    println!(
        "load: sustained {rate:.0} readings/s stored (publish start → last reading stored, {:.1} s)",
        elapsed.as_secs_f64()
    );
    println!(
        "load: publish → queryable latency p50 {} ms, p99 {} ms over {} probes ({} not queryable within {} s)",
        latency_text(&lat, 0.5),
        latency_text(&lat, 0.99),
        lat.len(),
        lat.iter().filter(|v| v.is_infinite()).count(),
        PROBE_TIMEOUT.as_secs()
    );
    println!(
        "load: of which publish → on the gateway's disk (the device's ack back) p50 {} ms, p99 {} ms ({} acks not seen)",
        latency_text(&ack_lat, 0.5),
        latency_text(&ack_lat, 0.99),
        ack_lat.iter().filter(|v| v.is_infinite()).count(),
    );
    let secs = elapsed.as_secs_f64();
    if gw_figures.is_empty() {
        println!("load: process CPU {cpu:.1} s ({:.1} % of one core), RSS {rss:.0} MiB (broker + gateways + server + load generator in one process)", 100.0 * cpu / secs);
    } else {
        println!("load: server + load generator process CPU {cpu:.1} s ({:.1} % of one core), RSS {rss:.0} MiB", 100.0 * cpu / secs);
        for (k, (c, r)) in gw_figures.iter().enumerate() {
            println!(
                "load: gateway process {k}: CPU {c:.1} s ({:.1} % of one core), RSS {r:.1} MiB",
                100.0 * c / secs
            );
        }
    }
    if args.device_threads > 0 {
        println!(
            "load: simulated devices on {} threads of their own at nice {}: CPU {device_cpu:.1} s ({:.1} % of one core, included in the process CPU above)",
            args.device_threads,
            args.device_nice,
            100.0 * device_cpu / publish_end.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "load: server threads: store writer CPU {writer_cpu:.1} s ({:.1} % of one core, {:.2} µs and {:.0} bytes written per stored reading), alert engine {alert_cpu:.1} s",
        100.0 * writer_cpu / secs,
        1e6 * writer_cpu / (stored.max(1) as f64),
        writer_bytes as f64 / (stored.max(1) as f64),
    );
    if stored > 0 {
        let per_reading = store_bytes as f64 / (state.series().readings_stored() as f64);
        println!(
            "load: store {:.1} MiB, {per_reading:.0} bytes per reading ({:.1} MiB per million readings)",
            store_bytes as f64 / 1048576.0,
            per_reading * 1e6 / 1048576.0
        );
    }
    let mut ok = true;
    if args.victoria {
        ok &= side_by_side(&SideBySide {
            http_addr,
            tokens: &gw_tokens,
            g,
            n,
            reports: &site_reports,
            per_pack,
            base,
            step,
        })
        .await;
    }
    if stored != published_readings || unacked != 0 || acked_readings != published_readings {
        println!("load: LOSS: published {published_readings}, stored {stored}, acknowledged {acked_readings}");
        ok = false;
    }
    for gw in gateways {
        let _ = gw.shutdown().await;
    }
    for p in gateway_processes {
        p.stop();
    }
    if let Some(b) = embedded {
        b.shutdown().await;
    }
    drop(mosquitto);
    let _ = stop.send(());
    let _ = server.await;
    ok
}

/// What a gateway process's TOML file says.
struct GatewayToml<'a> {
    name: &'a str,
    aprs: &'a [String],
    server: std::net::SocketAddr,
    token: &'a str,
    mqtt_port: u16,
    spool_dir: Option<&'a std::path::Path>,
}

/// One `apr-site-gateway run` process (killed on drop).
struct GatewayProcess {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl GatewayProcess {
    fn start(dir: &std::path::Path, k: usize, t: &GatewayToml<'_>) -> GatewayProcess {
        let aprs: Vec<String> = t.aprs.iter().map(|a| format!("\"{a}\"")).collect();
        let spool = t
            .spool_dir
            .map_or(String::new(), |d| format!("dir = \"{}\"\n", d.display()));
        let text = format!(
            "id = \"{name}\"\naprs = [{aprs}]\n\n[server]\nurl = \"http://{server}\"\ntoken = \"{token}\"\n\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"{name}\"\npassword = \"gateway-secret\"\n\
             client_id = \"{name}\"\n\n[spool]\n{spool}\n[devices]\nrefresh_s = 0\n\n[metrics]\nlisten = \"\"\n",
            name = t.name,
            aprs = aprs.join(", "),
            server = t.server,
            token = t.token,
            port = t.mqtt_port,
        );
        let config = dir.join(format!("gateway-{k}.toml"));
        std::fs::write(&config, text).expect("write the gateway config");
        let log = dir.join(format!("gateway-{k}.log"));
        let out = std::fs::File::create(&log).expect("gateway log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_apr-site-gateway"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn,apr_gateway::uplink=info")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start apr-site-gateway");
        GatewayProcess { child, log }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Waits for the gateway's MQTT connection (and a moment for its
    /// subscriptions); `false` on timeout or if it exited.
    async fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("connected to the MQTT broker") {
                tokio::time::sleep(Duration::from_millis(500)).await;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// SIGTERM, then wait (the gateway flushes and stops).
    fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds of this process's threads named `name` (e.g. the store's
/// writer), from /proc/self/task.
/// Bytes the threads named `name` passed to write calls (`wchar` of
/// /proc/self/task/*/io): for the store writer, what each commit costs in
/// file writes (SQLite's WAL frames and checkpoints).
fn thread_write_bytes(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| {
            let s = std::fs::read_to_string(t.path().join("io")).ok()?;
            s.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

fn thread_cpu_seconds(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| {
            let s = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((ut + st) / 100.0)
        })
        .sum()
}

/// What the side-by-side comparison needs from the run.
struct SideBySide<'a> {
    http_addr: std::net::SocketAddr,
    tokens: &'a [(String, String)],
    g: usize,
    n: usize,
    reports: &'a [u64],
    per_pack: usize,
    base: f64,
    step: f64,
}

/// The readings of site `i` (report times and values as the site sent
/// them), shifted `shift_s` back.
fn site_readings(c: &SideBySide<'_>, i: usize, shift_s: f64) -> Vec<apr_wire::validate::Reading> {
    let metrics = metrics();
    let reports = c.reports.get(i).copied().unwrap_or(0);
    let mut out = Vec::with_capacity(reports as usize * metrics.len());
    for s in 0..reports {
        let t = c.base + c.step * (s as f64 + i as f64 / c.n as f64) - shift_s;
        for (k, m) in metrics.iter().enumerate() {
            out.push(apr_wire::validate::Reading {
                metric: *m,
                t_ms: (t * 1000.0).round() as i64,
                value: sample_value(*m, k, s + 1),
            });
        }
    }
    out
}

/// Writes the run's readings to the server's ingest API (as the gateways'
/// batches) and to VictoriaMetrics (line protocol), two writers each; prints
/// both rates and the ratio. `false` if a write failed or a count differs.
async fn side_by_side(c: &SideBySide<'_>) -> bool {
    const SHIFT_S: f64 = 40.0 * 86_400.0;
    const PACKS_PER_BATCH: usize = 2_000;
    let http = reqwest::Client::new();
    // Server: one pack per site report, batched per gateway, prepared
    // before the clock starts (encoding is the gateway's work).
    let mut bodies: Vec<(String, Vec<u8>, u64)> = Vec::new();
    let mut total: u64 = 0;
    for k in 0..c.g {
        let mut packs = Vec::new();
        for i in (k..c.n).step_by(c.g) {
            let readings = site_readings(c, i, SHIFT_S);
            for chunk in readings.chunks(c.per_pack * metrics().len()) {
                packs.push(apr_wire::ingest::IngestPack {
                    apr: site_id(i),
                    device: "d".into(),
                    bt: Some(chunk[0].t_ms as f64 / 1000.0),
                    received_ms: chunk[0].t_ms,
                    readings: chunk.to_vec(),
                    refusals: vec![],
                    raw: None,
                });
            }
        }
        for (seq, batch) in packs.chunks(PACKS_PER_BATCH).enumerate() {
            let readings: u64 = batch.iter().map(|p| p.readings.len() as u64).sum();
            total += readings;
            let body = serde_json::to_vec(&apr_wire::ingest::IngestBatch {
                gateway: c.tokens[k].0.clone(),
                seq: 1_000_000 + seq as u64,
                packs: batch.to_vec(),
                statuses: vec![],
            })
            .expect("encode a batch");
            bodies.push((c.tokens[k].1.clone(), body, readings));
        }
    }
    let url = format!("http://{}/api/v1/ingest", c.http_addr);
    let t0 = Instant::now();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let mine: Vec<_> = bodies.iter().skip(w).step_by(2).cloned().collect();
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut stored = 0u64;
                for (token, body, _) in mine {
                    let r = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let ack: apr_wire::ingest::IngestAck =
                                r.json().await.unwrap_or(apr_wire::ingest::IngestAck {
                                    stored: 0,
                                    duplicates: 0,
                                    quarantined: 0,
                                });
                            stored += ack.stored;
                        }
                        Ok(r) => {
                            println!("load: side-by-side: ingest answered {}", r.status());
                            return stored;
                        }
                        Err(e) => {
                            println!("load: side-by-side: ingest failed: {e}");
                            return stored;
                        }
                    }
                }
                stored
            })
        })
        .collect();
    let mut server_stored = 0;
    for w in writers {
        server_stored += w.await.unwrap_or(0);
    }
    let server_s = t0.elapsed().as_secs_f64();

    // VictoriaMetrics: the same readings, one line per site report with ten
    // fields, millisecond timestamps, chunks of 2,000 lines.
    let vm = support::VictoriaMetrics::start();
    let mut chunks: Vec<String> = Vec::new();
    let mut lines = String::new();
    let mut in_chunk = 0;
    for i in 0..c.n {
        let readings = site_readings(c, i, SHIFT_S);
        for report in readings.chunks(metrics().len()) {
            lines.push_str(&format!("apr,apr={},device=d ", site_id(i)));
            for (j, r) in report.iter().enumerate() {
                if j > 0 {
                    lines.push(',');
                }
                lines.push_str(&format!("{}={}", r.metric.name(), r.value));
            }
            lines.push_str(&format!(" {}\n", report[0].t_ms));
            in_chunk += 1;
            if in_chunk == PACKS_PER_BATCH {
                chunks.push(std::mem::take(&mut lines));
                in_chunk = 0;
            }
        }
    }
    if !lines.is_empty() {
        chunks.push(lines);
    }
    let vm_url = format!("{}/write?precision=ms", vm.url());
    let t0 = Instant::now();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let mine: Vec<String> = chunks.iter().skip(w).step_by(2).cloned().collect();
            let (http, url) = (http.clone(), vm_url.clone());
            tokio::spawn(async move {
                for body in mine {
                    match http.post(&url).body(body).send().await {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => {
                            println!(
                                "load: side-by-side: VictoriaMetrics answered {}",
                                r.status()
                            );
                            return false;
                        }
                        Err(e) => {
                            println!("load: side-by-side: VictoriaMetrics write failed: {e}");
                            return false;
                        }
                    }
                }
                true
            })
        })
        .collect();
    let mut vm_ok = true;
    for w in writers {
        vm_ok &= w.await.unwrap_or(false);
    }
    vm.flush(&http).await;
    let vm_s = t0.elapsed().as_secs_f64();
    let server_rate = total as f64 / server_s;
    let vm_rate = total as f64 / vm_s;
    println!(
        "load: side-by-side, {total} readings, two writers each: server ingest (gateway batches -> stored, queryable) {server_rate:.0} readings/s ({server_s:.2} s); VictoriaMetrics (line protocol, ten fields a line, -> flushed) {vm_rate:.0} readings/s ({vm_s:.2} s); ratio {:.2}",
        server_rate / vm_rate
    );
    if server_stored != total || !vm_ok {
        println!("load: side-by-side: server stored {server_stored} of {total}; VictoriaMetrics writes ok: {vm_ok}");
        return false;
    }
    true
}
