//! The embedded broker with real MQTT clients: who gets in, and where they may publish.

mod common;

use std::time::Duration;

use common::{broker, connect, WAIT};
use rumqttc::{Incoming, QoS, SubscribeReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_device_with_correct_credentials_reaches_an_internal_subscriber() {
    let b = broker().await;
    let internal = (
        b.internal_username().to_string(),
        b.internal_password().to_string(),
    );
    let mut sub = connect(b.internal_addr(), "sub", Some((&internal.0, &internal.1)));
    sub.connected().await.unwrap();
    assert_eq!(
        sub.subscribed("apr/+/+/up").await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    let mut dev = connect(b.public_addr(), "dev-1", Some(("u1", "p1")));
    dev.connected().await.unwrap();
    dev.client
        .publish("apr/a1/d1/up", QoS::AtLeastOnce, false, b"[]".to_vec())
        .await
        .unwrap();
    let got = sub
        .next_publish(WAIT)
        .await
        .expect("the publish reaches rumqttd");
    assert_eq!(got.topic, "apr/a1/d1/up");
    assert_eq!(&got.payload[..], b"[]");
    assert_eq!(b.stats().connections_accepted, 1);
}

#[tokio::test]
async fn a_wrong_password_is_refused() {
    let b = broker().await;
    let mut dev = connect(b.public_addr(), "dev-1", Some(("u1", "p2")));
    let e = dev.connected().await.unwrap_err();
    assert!(e.contains("BadUserNamePassword"), "{e}");
    let mut unknown = connect(b.public_addr(), "dev-x", Some(("nobody", "p1")));
    assert!(unknown
        .connected()
        .await
        .unwrap_err()
        .contains("BadUserNamePassword"));
    assert_eq!(b.stats().connections_refused, 2);
    assert_eq!(b.stats().connections_accepted, 0);
}

#[tokio::test]
async fn an_anonymous_client_is_refused() {
    let b = broker().await;
    let mut anon = connect(b.public_addr(), "anon", None);
    let e = anon.connected().await.unwrap_err();
    assert!(e.contains("NotAuthorized"), "{e}");
    assert_eq!(b.stats().connections_refused, 1);
}

#[tokio::test]
async fn a_will_on_another_devices_topic_is_refused() {
    let b = broker().await;
    let addr = b.public_addr();
    let mut o = rumqttc::MqttOptions::new("dev-1", addr.ip().to_string(), addr.port());
    o.set_credentials("u1", "p1");
    o.set_last_will(rumqttc::LastWill::new(
        "apr/a1/d2/status",
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(o, 10);
    let e = eventloop.poll().await.unwrap_err();
    assert!(format!("{e:?}").contains("NotAuthorized"), "{e:?}");
}

#[tokio::test]
async fn publishing_to_another_devices_topic_is_not_delivered_and_is_counted() {
    let b = broker().await;
    let internal = (
        b.internal_username().to_string(),
        b.internal_password().to_string(),
    );
    let mut sub = connect(b.internal_addr(), "sub", Some((&internal.0, &internal.1)));
    sub.connected().await.unwrap();
    sub.subscribed("apr/#").await;

    let mut dev = connect(b.public_addr(), "dev-1", Some(("u1", "p1")));
    dev.connected().await.unwrap();
    dev.client
        .publish("apr/a1/d2/up", QoS::AtLeastOnce, false, b"spoof".to_vec())
        .await
        .unwrap();
    let acked = dev
        .wait_for(WAIT, |i| matches!(i, Incoming::PubAck(_)).then_some(()))
        .await;
    assert!(
        acked.is_some(),
        "the gate answers a denied QoS 1 publish so the client is not stuck"
    );
    dev.client
        .publish(
            "apr/a1/d1/status",
            QoS::AtLeastOnce,
            false,
            b"online".to_vec(),
        )
        .await
        .unwrap();
    let got = sub
        .next_publish(WAIT)
        .await
        .expect("the allowed publish arrives");
    assert_eq!(
        got.topic, "apr/a1/d1/status",
        "the denied publish must not be delivered"
    );
    assert_eq!(b.stats().publishes_denied, 1);
}

#[tokio::test]
async fn subscribing_to_another_devices_ack_is_denied() {
    let b = broker().await;
    let mut dev = connect(b.public_addr(), "dev-1", Some(("u1", "p1")));
    dev.connected().await.unwrap();
    assert_eq!(
        dev.subscribed("apr/a1/d2/ack").await,
        [SubscribeReasonCode::Failure]
    );
    assert_eq!(b.stats().subscribes_denied, 1);
    assert_eq!(
        dev.subscribed("apr/a1/d1/ack").await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    let internal = (
        b.internal_username().to_string(),
        b.internal_password().to_string(),
    );
    let mut gw = connect(b.internal_addr(), "gw", Some((&internal.0, &internal.1)));
    gw.connected().await.unwrap();
    for t in ["apr/a1/d2/ack", "apr/a1/d1/ack"] {
        gw.client
            .publish(t, QoS::AtLeastOnce, false, b"[1]".to_vec())
            .await
            .unwrap();
    }
    let got = dev.next_publish(WAIT).await.expect("its own ack arrives");
    assert_eq!(got.topic, "apr/a1/d1/ack");
    assert!(dev.next_publish(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn an_mqtt5_connect_is_refused_with_unsupported_protocol_version() {
    let b = broker().await;
    let mut s = tokio::net::TcpStream::connect(b.public_addr())
        .await
        .unwrap();
    // CONNECT, MQTT level 5, clean start, keep-alive 60, no properties, client id "c".
    let connect = [
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'c',
    ];
    s.write_all(&connect).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, [0x20, 0x03, 0x00, 0x84, 0x00]);
    assert_eq!(b.stats().connections_refused, 1);
}
