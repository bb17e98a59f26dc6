//! The gateway's `/metrics`: its [`GatewayStats`] in the Prometheus text
//! format ([`render`], pure), served by a tiny HTTP/1.1 listener on tokio
//! ([`serve`]; `GET /metrics` and `GET /healthz`, nothing else), which the
//! `apr-gateway status` command reads.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::debug;

use crate::stats::GatewayStats;

/// The stats in the Prometheus text format, `now_ms` for the ages.
pub fn render(s: &GatewayStats, now_ms: i64) -> String {
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let h = &s.spool_health;
    let f = |v: u64| v as f64;
    metric(
        "apr_gateway_spool_readings",
        "gauge",
        "Readings held in the spool (waiting or being forwarded).",
        &[("", f(s.spool.readings))],
    );
    metric(
        "apr_gateway_spool_packs",
        "gauge",
        "Packs held in the spool.",
        &[("", f(s.spool.packs))],
    );
    metric(
        "apr_gateway_spool_bytes",
        "gauge",
        "Bytes of the held packs' records.",
        &[("", f(s.spool.bytes))],
    );
    metric(
        "apr_gateway_spool_disk_bytes",
        "gauge",
        "Bytes of the spool on disk (segments and ledger).",
        &[("", f(h.disk_bytes))],
    );
    metric(
        "apr_gateway_spool_max_bytes",
        "gauge",
        "The configured bound of the spool on disk.",
        &[("", f(h.max_bytes))],
    );
    metric(
        "apr_gateway_spool_durable",
        "gauge",
        "1 if the spool is on disk (devices are acknowledged once a pack is on disk).",
        &[("", f(u64::from(h.durable)))],
    );
    let oldest_age = h
        .oldest_received_ms
        .map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0);
    metric(
        "apr_gateway_spool_oldest_age_seconds",
        "gauge",
        "Age of the oldest pack held (0 when empty).",
        &[("", oldest_age)],
    );
    metric(
        "apr_gateway_spool_dropped_readings_total",
        "counter",
        "Readings dropped from the spool (when_full = drop_oldest, or unreadable).",
        &[("", f(h.dropped_readings))],
    );
    metric(
        "apr_gateway_spool_dropped_packs_total",
        "counter",
        "Packs dropped from the spool.",
        &[("", f(h.dropped_packs))],
    );
    metric(
        "apr_gateway_spool_disk_full",
        "gauge",
        "1 while the spool's disk is full.",
        &[("", f(u64::from(h.disk_full)))],
    );
    metric(
        "apr_gateway_spool_disk_full_errors_total",
        "counter",
        "Spool writes that failed with a full disk.",
        &[("", f(h.disk_full_errors))],
    );
    metric(
        "apr_gateway_spool_storage_errors_total",
        "counter",
        "Other failed spool file operations.",
        &[("", f(h.storage_errors))],
    );
    metric(
        "apr_gateway_spool_corrupt_records_total",
        "counter",
        "Torn or corrupted spool records found.",
        &[("", f(h.corrupt_records))],
    );
    metric(
        "apr_gateway_packs_received_total",
        "counter",
        "Publishes received on up topics.",
        &[("", f(s.packs_received))],
    );
    metric(
        "apr_gateway_readings_accepted_total",
        "counter",
        "Readings accepted by validation.",
        &[("", f(s.readings_accepted))],
    );
    metric(
        "apr_gateway_readings_forwarded_total",
        "counter",
        "Readings the server acknowledged as stored.",
        &[("", f(s.readings_forwarded))],
    );
    metric(
        "apr_gateway_batches_forwarded_total",
        "counter",
        "Batches the server acknowledged.",
        &[("", f(s.batches_forwarded))],
    );
    let refused: Vec<(String, f64)> = s
        .refused
        .iter()
        .map(|(r, n)| (format!("{{reason=\"{}\"}}", r.code()), f(*n)))
        .collect();
    let refused: Vec<(&str, f64)> = refused.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "apr_gateway_refused_total",
        "counter",
        "Refused packs or records, by reason.",
        &refused,
    );
    metric(
        "apr_gateway_forward_errors_total",
        "counter",
        "Failed attempts to forward a batch.",
        &[("", f(s.forward_errors))],
    );
    metric(
        "apr_gateway_acks_published_total",
        "counter",
        "ack messages published to devices.",
        &[("", f(s.acks_published))],
    );
    metric(
        "apr_gateway_last_delivery_timestamp_seconds",
        "gauge",
        "When the server last stored a batch (0: never).",
        &[("", s.last_delivery_ms.map_or(0.0, |t| t as f64 / 1000.0))],
    );
    metric(
        "apr_gateway_mode",
        "gauge",
        "Forwarding mode: 0 live, 1 catch-up, 2 offline.",
        &[("", f(s.mode.code()))],
    );
    metric(
        "apr_gateway_configs_published_total",
        "counter",
        "Retained device configs published.",
        &[("", f(s.configs_published))],
    );
    metric(
        "apr_gateway_devices_silent_total",
        "counter",
        "Times a device was reported offline for being silent.",
        &[("", f(s.devices_silent))],
    );
    metric(
        "apr_gateway_time_seconds",
        "gauge",
        "The gateway's clock when this page was made.",
        &[("", now_ms as f64 / 1000.0)],
    );
    out
}

/// Serves `GET /metrics` (the text of `page()`) and `GET /healthz` on
/// `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    page: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (mut stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let page = page.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut n = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    let got = stream.read(&mut buf[n..]).await?;
                    if got == 0 {
                        break;
                    }
                    n += got;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match (request.starts_with("GET "), path) {
                (true, "/metrics") => ("200 OK", page()),
                (true, "/healthz") => ("200 OK", "ok\n".to_string()),
                (true, _) => ("404 Not Found", "not found\n".to_string()),
                _ => ("405 Method Not Allowed", "GET only\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
