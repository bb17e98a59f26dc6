//! The real uplink (embedded broker + gateway) with a recording sink: what
//! reaches the server, and what the device hears back on `ack`.

mod common;

use std::time::Duration;

use apr_gateway::config::GatewayConfig;
use apr_gateway::{EmbeddedBroker, Gateway, GatewayHandle, MemorySpool};
use apr_wire::ingest::IngestPack;
use apr_wire::validate::RefusalReason;
use common::device as registered;
use common::{broker, connect, Client, RecordingSink, WAIT};
use rumqttc::QoS;

const PACK: &str = r#"[{"bn":"urn:apr:a1:d1:","bt":1764064800,"n":"chlorine","u":"mg/l","v":0.12},
 {"n":"turbidity","u":"NTU","v":0.8},{"n":"flow","u":"l/s","v":2.4}]"#;

fn config(b: &EmbeddedBroker) -> GatewayConfig {
    let mut c = GatewayConfig {
        id: "gw-test".into(),
        aprs: vec!["a1".into()],
        mqtt: b.gateway_mqtt_config("gw-test"),
        ..GatewayConfig::default()
    };
    c.forward.backoff_min_ms = 20;
    c.forward.backoff_max_ms = 200;
    c.forward.shutdown_flush_ms = 1_000;
    c
}

async fn gateway(b: &EmbeddedBroker, sink: RecordingSink) -> GatewayHandle {
    gateway_with(config(b), sink).await
}

async fn gateway_with(c: GatewayConfig, sink: RecordingSink) -> GatewayHandle {
    let g = Gateway::start(c, sink, MemorySpool::new(10_000, 64 << 20))
        .await
        .unwrap();
    assert!(g.wait_ready(WAIT).await, "the gateway subscribes");
    g
}

/// Device u1 (a1/d1), connected and subscribed to its `ack`.
async fn device(b: &EmbeddedBroker) -> Client {
    let mut d = connect(b.public_addr(), "dev-1", Some(("u1", "p1")));
    d.connected().await.unwrap();
    d.subscribed("apr/a1/d1/ack").await;
    d
}

async fn up(d: &Client, payload: impl Into<Vec<u8>>) {
    d.client
        .publish("apr/a1/d1/up", QoS::AtLeastOnce, false, payload.into())
        .await
        .unwrap();
}

/// The next `ack` payload the device receives, parsed.
async fn next_ack(d: &mut Client) -> Vec<f64> {
    let p = d.next_publish(WAIT).await.expect("an ack");
    assert_eq!(p.topic, "apr/a1/d1/ack");
    serde_json::from_slice(&p.payload).unwrap()
}

fn packs(sink: &RecordingSink) -> Vec<IngestPack> {
    sink.batches().into_iter().flat_map(|b| b.packs).collect()
}

#[tokio::test]
async fn a_published_pack_is_forwarded_once_and_the_device_receives_its_bt_on_ack() {
    forwarded_once_and_acknowledged(true).await;
}

#[tokio::test]
async fn over_tcp_to_the_internal_port_too() {
    forwarded_once_and_acknowledged(false).await;
}

/// One pack and a retained status, through the embedded broker, with the
/// gateway in-process or over TCP to the internal port.
async fn forwarded_once_and_acknowledged(in_process: bool) {
    let b = broker().await;
    let sink = RecordingSink::default();
    let mut c = config(&b);
    c.mqtt.in_process = in_process;
    let g = gateway_with(c, sink.clone()).await;
    assert_eq!(g.stats().mqtt_in_process, in_process);
    let mut d = device(&b).await;
    d.client
        .publish(
            "apr/a1/d1/status",
            QoS::AtLeastOnce,
            true,
            b"online".to_vec(),
        )
        .await
        .unwrap();
    up(&d, PACK).await;

    assert_eq!(next_ack(&mut d).await, [1_764_064_800.0]);
    let p = d.next_publish(Duration::from_millis(300)).await;
    assert!(p.is_none(), "one ack only: {p:?}");
    let packs = packs(&sink);
    assert_eq!(packs.len(), 1, "forwarded once");
    assert_eq!(
        (packs[0].apr.as_str(), packs[0].device.as_str()),
        ("a1", "d1")
    );
    assert_eq!(packs[0].bt, Some(1_764_064_800.0));
    assert_eq!(packs[0].readings.len(), 3);
    assert!(packs[0].refusals.is_empty() && packs[0].raw.is_none());
    let statuses: Vec<_> = sink
        .batches()
        .into_iter()
        .flat_map(|b| b.statuses)
        .collect();
    assert_eq!(statuses.len(), 1);
    assert!(statuses[0].online && statuses[0].device == "d1");

    let s = g.stats();
    assert_eq!(
        (s.packs_received, s.readings_accepted, s.acks_published),
        (1, 3, 1)
    );
    assert_eq!(s.spool.packs, 0, "released after the server's ack");
    g.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pack_with_refused_records_keeps_the_good_records_and_carries_the_refusals() {
    let b = broker().await;
    let sink = RecordingSink::default();
    let g = gateway(&b, sink.clone()).await;
    let mut d = device(&b).await;
    up(
        &d,
        r#"[{"bt":1764064900,"n":"chlorine","u":"mg/L","v":0.5},{"n":"ph","u":"pH","v":7.1},{"n":"ph","u":"pH","v":15}]"#,
    )
    .await;

    assert_eq!(next_ack(&mut d).await, [1_764_064_900.0]);
    let packs = packs(&sink);
    assert_eq!(packs.len(), 1);
    assert_eq!(packs[0].readings.len(), 1);
    let reasons: Vec<_> = packs[0].refusals.iter().map(|r| r.reason).collect();
    assert_eq!(
        reasons,
        [RefusalReason::WrongUnit, RefusalReason::OutOfRange]
    );
    assert!(packs[0].raw.as_deref().is_some_and(|r| r.contains("mg/L")));
    let s = g.stats();
    assert_eq!(s.refused(RefusalReason::WrongUnit), 1);
    assert_eq!(s.refused(RefusalReason::OutOfRange), 1);
    g.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_sink_that_fails_twice_then_succeeds_is_retried_and_acks_only_after_success() {
    let b = broker().await;
    let sink = RecordingSink::failing_first(2);
    let g = gateway(&b, sink.clone()).await;
    let mut d = device(&b).await;
    up(&d, PACK).await;

    assert_eq!(next_ack(&mut d).await, [1_764_064_800.0]);
    assert_eq!(
        sink.attempts(),
        3,
        "the ack comes after the third, successful attempt"
    );
    assert_eq!(sink.batches().len(), 1);
    let s = g.stats();
    assert_eq!((s.forward_errors, s.batches_forwarded), (2, 1));
    g.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_and_oversized_payloads_are_refused_with_a_raw_excerpt() {
    let b = broker().await;
    let sink = RecordingSink::default();
    let g = gateway(&b, sink.clone()).await;
    let mut d = device(&b).await;
    up(&d, "{not json").await;
    let mut big = br#"[{"bt":1764065000,"n":"flow","u":"l/s","v":1}"#.to_vec();
    while big.len() <= 20 * 1024 {
        big.extend_from_slice(br#",{"n":"flow","u":"l/s","v":1}"#);
    }
    big.push(b']');
    up(&d, big).await;

    assert_eq!(
        next_ack(&mut d).await,
        [1_764_065_000.0],
        "the oversized pack's bt is acked"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while packs(&sink).len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let packs = packs(&sink);
    assert_eq!(packs.len(), 2);
    let malformed = packs
        .iter()
        .find(|p| p.refusals[0].reason == RefusalReason::Malformed)
        .unwrap();
    assert_eq!(malformed.raw.as_deref(), Some("{not json"));
    assert_eq!(malformed.bt, None);
    let oversized = packs
        .iter()
        .find(|p| p.refusals[0].reason == RefusalReason::Oversized)
        .unwrap();
    assert!(oversized.readings.is_empty());
    assert_eq!(oversized.raw.as_ref().map(String::len), Some(2048));
    let s = g.stats();
    assert_eq!(s.refused(RefusalReason::Malformed), 1);
    assert_eq!(s.refused(RefusalReason::Oversized), 1);
    assert_eq!(
        b.stats().connections_accepted,
        1,
        "the device was never disconnected"
    );
    g.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_flushes_the_spool_and_publishes_the_last_acks() {
    let b = broker().await;
    let sink = RecordingSink::default();
    let mut c = config(&b);
    c.forward.max_batch_delay_ms = 300;
    let g = Gateway::start(c, sink.clone(), MemorySpool::new(10_000, 64 << 20))
        .await
        .unwrap();
    assert!(g.wait_ready(WAIT).await);
    let mut d = device(&b).await;
    up(&d, PACK).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while g.stats().packs_received == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(sink.batches().is_empty(), "still filling the batch");
    g.shutdown().await.unwrap();
    assert_eq!(packs(&sink).len(), 1);
    assert_eq!(next_ack(&mut d).await, [1_764_064_800.0]);
}

#[tokio::test]
async fn an_in_process_link_taken_over_by_another_client_id_is_made_again() {
    let b = broker().await;
    let sink = RecordingSink::default();
    let g = gateway(&b, sink.clone()).await;
    assert!(g.stats().mqtt_in_process);
    let mut d = device(&b).await;
    up(&d, PACK).await;
    assert_eq!(next_ack(&mut d).await, [1_764_064_800.0]);

    // Another link with the gateway's client id: the router closes the
    // gateway's link (as it would a duplicate TCP client).
    let links = b.local_links().expect("in-process links");
    let intruder = tokio::task::spawn_blocking(move || links.link("gw-test"))
        .await
        .unwrap()
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while g.stats().mqtt_connections < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway makes its link again: {:?}",
            g.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(g.wait_ready(WAIT).await, "and subscribes again");
    drop(intruder);

    // The device resends whatever was not acknowledged; here a new pack
    // goes through the new link.
    up(
        &d,
        r#"[{"bn":"urn:apr:a1:d1:","bt":1764064860,"n":"flow","u":"l/s","v":2.5}]"#,
    )
    .await;
    assert_eq!(next_ack(&mut d).await, [1_764_064_860.0]);
    assert_eq!(packs(&sink).len(), 2);
    g.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_device_config_from_the_server_reaches_the_device_retained_in_process_and_over_tcp() {
    for in_process in [true, false] {
        let b = broker().await;
        let sink = RecordingSink::default();
        let mut d1 = registered("u1", "a1", "d1", "p1");
        d1.config = serde_json::json!({"report_interval_s": 30});
        *sink.devices.lock().unwrap() = Some(vec![d1]);
        let mut c = config(&b);
        c.mqtt.in_process = in_process;
        c.devices.refresh_s = 1;
        let g = gateway_with(c, sink.clone()).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while g.stats().configs_published < 1 {
            assert!(tokio::time::Instant::now() < deadline, "config published");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Subscribed after the publish: the broker kept it (retained).
        let mut d = connect(b.public_addr(), "dev-1", Some(("u1", "p1")));
        d.connected().await.unwrap();
        d.subscribed("apr/a1/d1/config").await;
        let p = d.next_publish(WAIT).await.expect("the retained config");
        assert_eq!(p.topic, "apr/a1/d1/config");
        assert!(p.retain, "in_process={in_process}");
        assert_eq!(p.qos, QoS::AtLeastOnce, "in_process={in_process}");
        let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(v["report_interval_s"], 30);
        g.shutdown().await.unwrap();
    }
}
