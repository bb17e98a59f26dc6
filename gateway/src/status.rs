//! `apr-gateway status`: tells an operator at the site, in Spanish (or
//! English), whether data is flowing and how far behind it is, from the
//! gateway's `/metrics`. [`Status::from_metrics`] and [`message`] are pure.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the operator needs from `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Status {
    /// Readings held in the spool.
    pub pending_readings: u64,
    /// Age of the oldest held pack, seconds.
    pub oldest_age_s: f64,
    /// Seconds since the server last stored a batch (`None`: never).
    pub since_delivery_s: Option<f64>,
    /// Forwarding mode: 0 live, 1 catch-up, 2 offline.
    pub mode: u64,
    /// Readings dropped so far.
    pub dropped_readings: u64,
    /// Whether the spool's disk is full.
    pub disk_full: bool,
    /// Whether the spool is on disk.
    pub durable: bool,
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

impl Status {
    /// Reads a `/metrics` page of the gateway.
    pub fn from_metrics(text: &str) -> Option<Status> {
        let now = sample(text, "apr_gateway_time_seconds")?;
        let g = |n: &str| sample(text, n).unwrap_or(0.0);
        let last = g("apr_gateway_last_delivery_timestamp_seconds");
        Some(Status {
            pending_readings: g("apr_gateway_spool_readings") as u64,
            oldest_age_s: g("apr_gateway_spool_oldest_age_seconds"),
            since_delivery_s: (last > 0.0).then(|| (now - last).max(0.0)),
            mode: g("apr_gateway_mode") as u64,
            dropped_readings: g("apr_gateway_spool_dropped_readings_total") as u64,
            disk_full: g("apr_gateway_spool_disk_full") > 0.0,
            durable: g("apr_gateway_spool_durable") > 0.0,
        })
    }
}

/// The operator's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Spanish (Chile), the default.
    Es,
    /// English.
    En,
}

/// `120000` → `120.000` (es) / `120,000` (en).
fn thousands(n: u64, lang: Lang) -> String {
    let sep = if lang == Lang::Es { '.' } else { ',' };
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

/// `7505` s → `2 h 5 min`; `42` → `42 s`; `3 d 4 h` past a day.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Whether data is flowing and how far behind it is, in one or two lines.
pub fn message(s: &Status, lang: Lang) -> String {
    let es = lang == Lang::Es;
    let n = thousands(s.pending_readings, lang);
    let mut lines = Vec::new();
    let where_ = if s.durable {
        if es {
            "guardadas en disco"
        } else {
            "kept on disk"
        }
    } else if es {
        "en memoria"
    } else {
        "held in memory"
    };
    if s.mode == 2 {
        let since = s.since_delivery_s.map(duration);
        lines.push(match (es, since) {
            (true, Some(d)) => format!(
                "Sin conexión con el servidor hace {d}: {n} lecturas {where_}, la más antigua de hace {}",
                duration(s.oldest_age_s)
            ),
            (true, None) => format!(
                "Sin conexión con el servidor: {n} lecturas {where_}, la más antigua de hace {}",
                duration(s.oldest_age_s)
            ),
            (false, Some(d)) => format!(
                "No connection to the server for {d}: {n} readings {where_}, the oldest from {} ago",
                duration(s.oldest_age_s)
            ),
            (false, None) => format!(
                "No connection to the server: {n} readings {where_}, the oldest from {} ago",
                duration(s.oldest_age_s)
            ),
        });
    } else {
        let last = s.since_delivery_s.map(duration);
        let catching_up = s.mode == 1;
        lines.push(match (es, last) {
            (true, Some(d)) => format!(
                "Datos fluyendo{}: {n} lecturas pendientes, última entrega hace {d}",
                if catching_up {
                    " (poniéndose al día)"
                } else {
                    ""
                }
            ),
            (true, None) => format!("Sin entregas al servidor todavía: {n} lecturas pendientes"),
            (false, Some(d)) => format!(
                "Data flowing{}: {n} readings pending, last delivery {d} ago",
                if catching_up { " (catching up)" } else { "" }
            ),
            (false, None) => format!("No deliveries to the server yet: {n} readings pending"),
        });
        if s.pending_readings > 0 && s.oldest_age_s >= 60.0 {
            lines.push(if es {
                format!(
                    "La lectura pendiente más antigua es de hace {}",
                    duration(s.oldest_age_s)
                )
            } else {
                format!(
                    "The oldest pending reading is from {} ago",
                    duration(s.oldest_age_s)
                )
            });
        }
    }
    if s.disk_full {
        lines.push(if es {
            "ATENCIÓN: el disco del gateway está lleno".to_string()
        } else {
            "WARNING: the gateway's disk is full".to_string()
        });
    }
    if s.dropped_readings > 0 {
        let d = thousands(s.dropped_readings, lang);
        lines.push(if es {
            format!("ATENCIÓN: {d} lecturas descartadas por falta de espacio")
        } else {
            format!("WARNING: {d} readings dropped for lack of space")
        });
    }
    lines.join("\n")
}

/// Fetches `http://{addr}/metrics` (plain HTTP/1.1, no dependency).
pub async fn fetch_metrics(addr: &str) -> std::io::Result<String> {
    let run = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(format!(
                "the gateway answered {}",
                head.lines().next().unwrap_or("")
            )));
        }
        Ok(body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("no answer within 5 s")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flowing_data_says_how_much_is_pending_and_when_it_was_delivered() {
        let s = Status {
            since_delivery_s: Some(3.0),
            durable: true,
            ..Status::default()
        };
        assert_eq!(
            message(&s, Lang::Es),
            "Datos fluyendo: 0 lecturas pendientes, última entrega hace 3 s"
        );
        assert_eq!(
            message(&s, Lang::En),
            "Data flowing: 0 readings pending, last delivery 3 s ago"
        );
    }

    #[test]
    fn an_outage_says_how_long_how_much_and_how_old() {
        let s = Status {
            pending_readings: 120_000,
            oldest_age_s: 2.0 * 3600.0 + 4.0 * 60.0,
            since_delivery_s: Some(2.0 * 3600.0 + 5.0 * 60.0),
            mode: 2,
            durable: true,
            ..Status::default()
        };
        assert_eq!(
            message(&s, Lang::Es),
            "Sin conexión con el servidor hace 2 h 5 min: 120.000 lecturas guardadas en disco, la más antigua de hace 2 h 4 min"
        );
    }

    #[test]
    fn the_status_is_read_from_the_metrics_page() {
        let page = "# HELP x\napr_gateway_spool_readings 42\napr_gateway_mode 2\n\
                    apr_gateway_last_delivery_timestamp_seconds 1000\napr_gateway_time_seconds 1010.5\n\
                    apr_gateway_spool_dropped_readings_total 7\n";
        let s = Status::from_metrics(page).unwrap();
        assert_eq!(s.pending_readings, 42);
        assert_eq!(s.mode, 2);
        assert_eq!(s.since_delivery_s, Some(10.5));
        assert_eq!(s.dropped_readings, 7);
        assert!(Status::from_metrics("nothing").is_none());
    }
}
