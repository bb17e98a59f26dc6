//! `HttpSink` against a minimal in-process HTTP server: the request it makes
//! and how it reads the answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apr_gateway::{HttpSink, Sink, SinkError};
use apr_wire::ingest::{IngestAck, IngestBatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves one canned answer per connection and records each request.
async fn server(status: &'static str, body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if req.len() >= head_end + 4 + len {
                        break;
                    }
                }
            }
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&req).to_string());
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    (url, seen)
}

fn batch() -> IngestBatch {
    IngestBatch {
        gateway: "gw".into(),
        seq: 1,
        packs: vec![],
        statuses: vec![],
    }
}

#[tokio::test]
async fn a_batch_is_posted_with_the_bearer_token_and_the_ack_is_read() {
    let (url, seen) = server("200 OK", r#"{"stored":3,"duplicates":1,"quarantined":0}"#).await;
    let sink = HttpSink::new(&url, "tok-1", Duration::from_secs(5)).unwrap();
    let ack = sink.send(&batch()).await.unwrap();
    assert_eq!(
        ack,
        IngestAck {
            stored: 3,
            duplicates: 1,
            quarantined: 0
        }
    );
    let req = seen.lock().unwrap()[0].clone();
    assert!(req.starts_with("POST /api/v1/ingest HTTP/1.1"), "{req}");
    assert!(
        req.to_ascii_lowercase()
            .contains("authorization: bearer tok-1"),
        "{req}"
    );
    assert!(req.contains(r#""gateway":"gw""#), "{req}");
}

#[tokio::test]
async fn a_client_error_is_a_refusal_carrying_the_servers_message() {
    let (url, _) = server("400 Bad Request", r#"{"error":"unknown apr"}"#).await;
    let sink = HttpSink::new(&url, "tok", Duration::from_secs(5)).unwrap();
    let e = sink.send(&batch()).await.unwrap_err();
    assert!(e.is_refusal());
    assert_eq!(
        e,
        SinkError::Status {
            status: 400,
            message: r#"{"error":"unknown apr"}"#.into()
        }
    );
}

#[tokio::test]
async fn a_server_error_or_no_server_is_retryable() {
    let (url, _) = server("503 Service Unavailable", "busy").await;
    let sink = HttpSink::new(&url, "tok", Duration::from_secs(5)).unwrap();
    let e = sink.send(&batch()).await.unwrap_err();
    assert!(!e.is_refusal(), "{e}");
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let sink = HttpSink::new(&format!("http://{closed}"), "tok", Duration::from_secs(5)).unwrap();
    let e = sink.send(&batch()).await.unwrap_err();
    assert!(matches!(e, SinkError::Transport(_)), "{e}");
}

#[tokio::test]
async fn the_device_list_is_fetched_with_the_token() {
    let (url, seen) = server(
        "200 OK",
        r#"[{"apr":"a1","device":"d1","mqtt_username":"u1","mqtt_password_sha256":"00","report_interval_s":60,"config":{}}]"#,
    )
    .await;
    let sink = HttpSink::new(&url, "tok-2", Duration::from_secs(5)).unwrap();
    let devices = sink.fetch_devices().await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].mqtt_username, "u1");
    let req = seen.lock().unwrap()[0].clone();
    assert!(
        req.starts_with("GET /api/v1/gateway/devices HTTP/1.1"),
        "{req}"
    );
    assert!(
        req.to_ascii_lowercase()
            .contains("authorization: bearer tok-2"),
        "{req}"
    );
}
