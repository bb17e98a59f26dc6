//! The gateway with the durable spool: devices are acknowledged as soon as a
//! pack is on disk, while the server is unreachable; the pack reaches the
//! server after a restart of the gateway; `/metrics` tells it all.

mod common;

use std::time::Duration;

use apr_gateway::config::{GatewayConfig, WhenFull};
use apr_gateway::spool::DiskSpoolOptions;
use apr_gateway::{DiskSpool, EmbeddedBroker, Gateway};
use common::{broker, connect, RecordingSink, WAIT};
use rumqttc::QoS;

fn config(b: &EmbeddedBroker) -> GatewayConfig {
    let mut c = GatewayConfig {
        id: "gw-test".into(),
        aprs: vec!["a1".into()],
        mqtt: b.gateway_mqtt_config("gw-test"),
        ..GatewayConfig::default()
    };
    c.forward.backoff_min_ms = 20;
    c.forward.backoff_max_ms = 100;
    c.forward.shutdown_flush_ms = 200;
    c
}

fn spool(dir: &std::path::Path) -> DiskSpool {
    DiskSpool::open(DiskSpoolOptions {
        dir: dir.to_path_buf(),
        max_bytes: 64 << 20,
        segment_bytes: 1 << 20,
        when_full: WhenFull::Block,
    })
    .unwrap()
}

fn pack(bt: u64) -> Vec<u8> {
    format!(r#"[{{"bn":"urn:apr:a1:d1:","bt":{bt},"n":"chlorine","u":"mg/l","v":0.12}},{{"n":"ph","u":"pH","v":7.1}}]"#)
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_spool_acknowledges_devices_while_the_server_is_down_and_forwards_after_a_restart(
) {
    let dir = tempfile::tempdir().unwrap();
    let b = broker().await;
    // The server refuses everything for now.
    let down = RecordingSink::failing_first(u32::MAX);
    let g = Gateway::start(config(&b), down.clone(), spool(dir.path()))
        .await
        .unwrap();
    assert!(g.wait_ready(WAIT).await);
    let mut d = connect(b.public_addr(), "dev-1", Some(("u1", "p1")));
    d.connected().await.unwrap();
    d.subscribed("apr/a1/d1/ack").await;
    for bt in [1_764_064_800u64, 1_764_064_860] {
        d.client
            .publish("apr/a1/d1/up", QoS::AtLeastOnce, false, pack(bt))
            .await
            .unwrap();
    }
    let mut acked: Vec<f64> = Vec::new();
    while acked.len() < 2 {
        let p = d
            .next_publish(WAIT)
            .await
            .expect("an ack while the server is down");
        acked.extend(serde_json::from_slice::<Vec<f64>>(&p.payload).unwrap());
    }
    assert_eq!(acked, [1_764_064_800.0, 1_764_064_860.0]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = g.stats();
    assert!(down.attempts() > 0 && down.batches().is_empty());
    assert_eq!((s.spool.packs, s.spool.readings), (2, 4));
    assert!(s.spool_health.durable);
    assert_eq!(s.mode, apr_gateway::forward::Mode::Offline);
    let page = g.metrics_page()();
    assert!(page.contains("apr_gateway_spool_readings 4\n"), "{page}");
    assert!(page.contains("apr_gateway_mode 2\n"), "{page}");
    g.shutdown().await.unwrap();

    // A new gateway on the same spool, the server back: both packs arrive once.
    let up = RecordingSink::default();
    let g = Gateway::start(config(&b), up.clone(), spool(dir.path()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while g.stats().spool.packs > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the backlog drains");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut bts: Vec<f64> = up
        .batches()
        .into_iter()
        .flat_map(|b| b.packs)
        .filter_map(|p| p.bt)
        .collect();
    bts.sort_by(f64::total_cmp);
    assert_eq!(bts, [1_764_064_800.0, 1_764_064_860.0]);
    assert!(
        d.next_publish(Duration::from_millis(300)).await.is_none(),
        "no second ack"
    );
    g.shutdown().await.unwrap();
}
