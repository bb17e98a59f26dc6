//! Throughput of broker + gate + gateway with a sink that acknowledges at
//! once. Ignored by default; run it in release:
//! `cargo test -p apr-gateway --release --test throughput -- --ignored --nocapture`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apr_gateway::config::GatewayConfig;
use apr_gateway::{DeviceDirectory, EmbeddedBroker, Gateway, MemorySpool, Sink, SinkError};
use apr_wire::ingest::{IngestAck, IngestBatch};
use common::{connect, device};
use rumqttc::QoS;

#[derive(Clone, Default)]
struct CountingSink {
    readings: Arc<AtomicU64>,
}

impl Sink for CountingSink {
    async fn send(&self, batch: &IngestBatch) -> Result<IngestAck, SinkError> {
        let n: u64 = batch.packs.iter().map(|p| p.readings.len() as u64).sum();
        self.readings.fetch_add(n, Relaxed);
        Ok(IngestAck {
            stored: n,
            ..IngestAck::default()
        })
    }
}

const DEVICES: usize = 40;
const PACKS_PER_DEVICE: usize = 500;
const READINGS_PER_PACK: usize = 25;

fn pack(device: &str, bt: u64) -> Vec<u8> {
    let mut s =
        format!(r#"[{{"bn":"urn:apr:a1:{device}:","bt":{bt},"n":"flow","u":"l/s","v":1.5}}"#);
    for t in 1..READINGS_PER_PACK {
        s.push_str(&format!(r#",{{"n":"flow","u":"l/s","t":{t},"v":1.5}}"#));
    }
    s.push(']');
    s.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test; run in release"]
async fn broker_and_gateway_forward_tens_of_thousands_of_readings_per_second() {
    let devices: Vec<_> = (0..DEVICES)
        .map(|i| device(&format!("u{i}"), "a1", &format!("d{i}"), "pw"))
        .collect();
    let b = EmbeddedBroker::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(DeviceDirectory::new(devices)),
    )
    .await
    .unwrap();
    let sink = CountingSink::default();
    let config = GatewayConfig {
        aprs: vec!["a1".into()],
        mqtt: b.gateway_mqtt_config("gw-load"),
        ..GatewayConfig::default()
    };
    let g = Gateway::start(config, sink.clone(), MemorySpool::new(100_000, 256 << 20))
        .await
        .unwrap();
    assert!(g.wait_ready(Duration::from_secs(10)).await);

    let mut clients = Vec::new();
    for i in 0..DEVICES {
        let mut c = connect(
            b.public_addr(),
            &format!("dev-{i}"),
            Some((&format!("u{i}"), "pw")),
        );
        c.connected().await.unwrap();
        clients.push(c);
    }
    let start = Instant::now();
    let mut publishers = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let client = c.client.clone();
        publishers.push(tokio::spawn(async move {
            let name = format!("d{i}");
            for k in 0..PACKS_PER_DEVICE {
                client
                    .publish(
                        format!("apr/a1/{name}/up"),
                        QoS::AtLeastOnce,
                        false,
                        pack(&name, 1_764_000_000 + k as u64 * 100),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    let total = (DEVICES * PACKS_PER_DEVICE * READINGS_PER_PACK) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.readings.load(Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed();
    let done = sink.readings.load(Relaxed);
    let rate = done as f64 / elapsed.as_secs_f64();
    println!(
        "{done} readings in {elapsed:?}: {rate:.0} readings/s; stats {:?}",
        g.stats()
    );
    assert_eq!(done, total, "every reading forwarded");
    if !cfg!(debug_assertions) {
        assert!(
            rate >= 50_000.0,
            "{rate:.0} readings/s is below the 50,000 floor"
        );
    }
    for p in publishers {
        p.await.unwrap();
    }
    g.shutdown().await.unwrap();
}
