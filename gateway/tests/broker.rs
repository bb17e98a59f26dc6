//! The embedded broker with real MQTT clients: who gets in, and where they may publish.

mod common;

use std::time::Duration;

use apr_gateway::{EmbeddedBroker, GateHop};
use bytes::BytesMut;
use common::{broker, broker_via, connect, Client, WAIT};
use rumqttc::mqttbytes::v4::{Connect, LastWill, Packet};
use rumqttc::{Incoming, QoS, SubscribeReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

const HOPS: [GateHop; 2] = [GateHop::InProcess, GateHop::Tcp];

/// An internal client subscribed to every device's status.
async fn status_watcher(b: &EmbeddedBroker) -> Client {
    let (u, p) = (b.internal_username(), b.internal_password());
    let mut sub = connect(b.internal_addr(), "status-watcher", Some((u, p)));
    sub.connected().await.unwrap();
    assert_eq!(
        sub.subscribed("apr/+/+/status").await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    sub
}

/// A device connection by hand (so it can vanish without a DISCONNECT):
/// u1's CONNECT with `client_id`, `keep_alive_s` and a will of "offline" on
/// its status topic; returns the socket and the CONNACK's return code.
async fn raw_device(
    b: &EmbeddedBroker,
    client_id: &str,
    clean: bool,
    keep_alive_s: u16,
) -> (TcpStream, u8) {
    let mut c = Connect::new(client_id);
    c.clean_session = clean;
    c.keep_alive = keep_alive_s;
    c.set_login("u1", "p1");
    c.last_will = Some(LastWill::new(
        "apr/a1/d1/status",
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    raw_connect(b, c).await
}

/// Sends `c` to the gate; returns the socket and the CONNACK's return code.
async fn raw_connect(b: &EmbeddedBroker, c: Connect) -> (TcpStream, u8) {
    let mut frame = BytesMut::new();
    Packet::Connect(c).write(&mut frame, 1 << 20).unwrap();
    let mut s = TcpStream::connect(b.public_addr()).await.unwrap();
    s.write_all(&frame).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, s.read_exact(&mut connack))
        .await
        .expect("a CONNACK in time")
        .unwrap();
    assert_eq!(connack[..2], [0x20, 0x02], "a CONNACK: {connack:?}");
    (s, connack[3])
}

/// Whether the gate closed `s` within `within` (reading to its end).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(within, s.read_to_end(&mut rest)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn a_device_lost_without_disconnect_has_its_will_published_on_both_hops() {
    for hop in HOPS {
        let b = broker_via(hop).await;
        let mut sub = status_watcher(&b).await;
        let (s, code) = raw_device(&b, "a1.d1", true, 30).await;
        assert_eq!(code, 0, "{hop:?}");
        drop(s);
        let will = sub.next_publish(WAIT).await.expect("the will");
        assert_eq!(will.topic, "apr/a1/d1/status", "{hop:?}");
        assert_eq!(&will.payload[..], b"offline", "{hop:?}");
    }
}

/// Sends PINGREQ and waits for the PINGRESP.
async fn ping(s: &mut TcpStream) {
    s.write_all(&[0xC0, 0x00]).await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut pong))
        .await
        .expect("PINGRESP in time")
        .expect("PINGRESP read");
    assert_eq!(pong, [0xD0, 0x00], "PINGRESP");
}

#[tokio::test]
async fn a_device_that_says_disconnect_leaves_no_will_on_both_hops() {
    for hop in HOPS {
        let b = broker_via(hop).await;
        let mut sub = status_watcher(&b).await;
        let (mut s, _) = raw_device(&b, "a1.d1", true, 30).await;
        s.write_all(&[0xE0, 0x00]).await.unwrap();
        assert!(
            closed_within(&mut s, WAIT).await,
            "{hop:?}: closed after DISCONNECT"
        );
        assert!(
            sub.next_publish(Duration::from_millis(500)).await.is_none(),
            "{hop:?}: no will after DISCONNECT"
        );
        // The watcher does see a will when there is one.
        let (s, _) = raw_device(&b, "a1.d1", true, 30).await;
        drop(s);
        assert!(sub.next_publish(WAIT).await.is_some(), "{hop:?}");
    }
}

#[tokio::test]
async fn a_device_silent_past_its_keep_alive_is_dropped_and_its_will_published() {
    let b = broker().await;
    let mut sub = status_watcher(&b).await;
    let (mut s, _) = raw_device(&b, "a1.d1", true, 1).await;
    // PINGREQ is answered by the gate and keeps the connection alive.
    ping(&mut s).await;
    let t0 = tokio::time::Instant::now();
    assert!(
        closed_within(&mut s, WAIT).await,
        "dropped after 1.5 s of silence"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1_200),
        "{:?}",
        t0.elapsed()
    );
    let will = sub.next_publish(WAIT).await.expect("the will");
    assert_eq!(&will.payload[..], b"offline");
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over_without_firing_the_will() {
    let b = broker().await;
    let mut sub = status_watcher(&b).await;
    let (mut first, _) = raw_device(&b, "a1.d1", true, 30).await;
    let (mut second, code) = raw_device(&b, "a1.d1", true, 30).await;
    assert_eq!(code, 0);
    assert!(
        closed_within(&mut first, WAIT).await,
        "the first connection is closed"
    );
    assert!(
        sub.next_publish(Duration::from_millis(500)).await.is_none(),
        "the device is connected: no will"
    );
    // The second connection carries the session: it publishes and pings.
    ping(&mut second).await;
}

#[tokio::test]
async fn an_empty_client_id_is_refused_for_a_persistent_session_and_named_for_a_clean_one() {
    for hop in HOPS {
        let b = broker_via(hop).await;
        let (mut s, code) = raw_device(&b, "", false, 30).await;
        assert_eq!(code, 2, "{hop:?}: identifier rejected");
        assert!(closed_within(&mut s, WAIT).await);
        let mut sub = status_watcher(&b).await;
        let (s, code) = raw_device(&b, "", true, 30).await;
        assert_eq!(code, 0, "{hop:?}");
        drop(s);
        assert!(
            sub.next_publish(WAIT).await.is_some(),
            "{hop:?}: it was connected"
        );
    }
}

#[tokio::test]
async fn a_client_id_the_broker_cannot_take_is_refused_and_one_is_assigned_without_a_slash() {
    for hop in HOPS {
        let b = broker_via(hop).await;
        let mut c = Connect::new("a1/d3");
        c.set_login("a1/d3", "p3");
        let (mut s, code) = raw_connect(&b, c.clone()).await;
        assert_eq!(code, 2, "{hop:?}: identifier rejected");
        assert!(closed_within(&mut s, WAIT).await);
        // No client id: the gate assigns gate-a1_d3-N, which the broker takes.
        c.client_id = String::new();
        let (mut s, code) = raw_connect(&b, c).await;
        assert_eq!(code, 0, "{hop:?}");
        ping(&mut s).await;
    }
}

#[tokio::test]
async fn a_persistent_session_receives_what_arrived_while_the_device_was_away() {
    for hop in HOPS {
        let b = broker_via(hop).await;
        let session = |b: &EmbeddedBroker| {
            let addr = b.public_addr();
            let mut o = rumqttc::MqttOptions::new("a1.d1", addr.ip().to_string(), addr.port());
            o.set_credentials("u1", "p1");
            o.set_clean_session(false);
            o
        };
        let (client, mut eventloop) = rumqttc::AsyncClient::new(session(&b), 10);
        client
            .subscribe("apr/a1/d1/ack", QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            match tokio::time::timeout(WAIT, eventloop.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(Incoming::SubAck(_)))) => break,
                Ok(Ok(_)) => {}
                other => panic!("{hop:?}: {other:?}"),
            }
        }
        client.disconnect().await.unwrap();
        while let Ok(Ok(_)) = tokio::time::timeout(WAIT, eventloop.poll()).await {}

        let (u, p) = (b.internal_username(), b.internal_password());
        let mut gw = connect(b.internal_addr(), "gw", Some((u, p)));
        gw.connected().await.unwrap();
        gw.client
            .publish("apr/a1/d1/ack", QoS::AtLeastOnce, false, b"[7]".to_vec())
            .await
            .unwrap();
        gw.wait_for(WAIT, |i| matches!(i, Incoming::PubAck(_)).then_some(()))
            .await
            .expect("the broker took the ack");

        let (_client, mut eventloop) = rumqttc::AsyncClient::new(session(&b), 10);
        let mut present = None;
        let got = loop {
            match tokio::time::timeout(WAIT, eventloop.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(Incoming::ConnAck(c)))) => {
                    present = Some(c.session_present)
                }
                Ok(Ok(rumqttc::Event::Incoming(Incoming::Publish(p)))) => break p,
                Ok(Ok(_)) => {}
                other => panic!("{hop:?}: {other:?}"),
            }
        };
        assert_eq!(present, Some(true), "{hop:?}");
        assert_eq!(got.topic, "apr/a1/d1/ack", "{hop:?}");
        assert_eq!(&got.payload[..], b"[7]", "{hop:?}");
    }
}
