//! The server's own counters, exported on `/metrics` in the Prometheus text
//! format. Counters are atomics bumped on the request path; gauges are read
//! when scraped. Every refusal reason is exported, zeros included, so a
//! scraper (or a test) can read a counter before anything was refused.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use apr_wire::ingest::IngestAck;
use apr_wire::validate::RefusalReason;

/// Counters of ingest and HTTP traffic.
#[derive(Debug, Default)]
pub struct Counters {
    readings_stored: AtomicU64,
    readings_duplicate: AtomicU64,
    ingest_batches: AtomicU64,
    refused: [AtomicU64; RefusalReason::ALL.len()],
    http: Mutex<BTreeMap<(String, u16), u64>>,
    notifications: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

/// Channels and results of `apr_notifications_total`, exported at zero too.
const NOTIFICATION_SERIES: [(&str, &str); 5] = [
    ("webhook", "sent"),
    ("webhook", "failed"),
    ("email", "sent"),
    ("email", "failed"),
    ("queue", "dropped"),
];

/// Values read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Readings in the store.
    pub store_readings: u64,
    /// Devices counted as online.
    pub devices_online: u64,
    /// Alerts open or acknowledged.
    pub open_alerts: u64,
}

/// Refusals of a batch, by reason (indexed like [`RefusalReason::ALL`]).
pub type RefusalCounts = [u64; RefusalReason::ALL.len()];

/// The index of a reason in [`RefusalReason::ALL`].
pub fn reason_index(reason: RefusalReason) -> usize {
    RefusalReason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(0)
}

impl Counters {
    /// Counts a stored batch.
    pub fn record_ingest(&self, ack: &IngestAck, refused: &RefusalCounts) {
        self.ingest_batches.fetch_add(1, Ordering::Relaxed);
        self.readings_stored
            .fetch_add(ack.stored, Ordering::Relaxed);
        self.readings_duplicate
            .fetch_add(ack.duplicates, Ordering::Relaxed);
        for (counter, n) in self.refused.iter().zip(refused) {
            if *n > 0 {
                counter.fetch_add(*n, Ordering::Relaxed);
            }
        }
    }

    /// Counts an answered request by route template and status.
    pub fn record_http(&self, route: &str, status: u16) {
        let mut map = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(&(route.to_owned(), status)) {
            Some(n) => *n += 1,
            None => {
                map.insert((route.to_owned(), status), 1);
            }
        }
    }

    /// Counts a notification outcome: `channel` is `webhook`, `email` or
    /// `queue`; `result` is `sent`, `failed` or `dropped`.
    pub fn record_notification(&self, channel: &'static str, result: &'static str) {
        let mut map = self
            .notifications
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *map.entry((channel, result)).or_insert(0) += 1;
    }

    /// Notifications counted for a channel and result.
    pub fn notifications(&self, channel: &str, result: &str) -> u64 {
        let map = self
            .notifications
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .filter(|((c, r), _)| *c == channel && *r == result)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Readings stored since start.
    pub fn readings_stored(&self) -> u64 {
        self.readings_stored.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "apr_readings_stored_total",
            "Readings newly stored by ingest.",
            self.readings_stored.load(Ordering::Relaxed),
        );
        counter(
            "apr_readings_duplicate_total",
            "Readings ingested again that were stored already.",
            self.readings_duplicate.load(Ordering::Relaxed),
        );
        counter(
            "apr_ingest_batches_total",
            "Ingest batches durably stored.",
            self.ingest_batches.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP apr_refused_total Packs or records refused and quarantined, by reason.\n\
             # TYPE apr_refused_total counter"
        );
        for (reason, n) in RefusalReason::ALL.iter().zip(&self.refused) {
            let _ = writeln!(
                out,
                "apr_refused_total{{reason=\"{}\"}} {}",
                reason.code(),
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP apr_http_requests_total HTTP requests answered, by route and status.\n\
             # TYPE apr_http_requests_total counter"
        );
        {
            let map = self.http.lock().unwrap_or_else(PoisonError::into_inner);
            for ((route, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "apr_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    escape_label(route)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP apr_notifications_total Alert notifications by channel and result.\n\
             # TYPE apr_notifications_total counter"
        );
        {
            let map = self
                .notifications
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut all: BTreeMap<(&str, &str), u64> =
                NOTIFICATION_SERIES.iter().map(|k| (*k, 0)).collect();
            for (k, n) in map.iter() {
                *all.entry(*k).or_insert(0) += n;
            }
            for ((channel, result), n) in all {
                let _ = writeln!(
                    out,
                    "apr_notifications_total{{channel=\"{channel}\",result=\"{result}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP apr_open_alerts Alerts open or acknowledged.\n# TYPE apr_open_alerts gauge\n\
             apr_open_alerts {}",
            gauges.open_alerts
        );
        let _ = writeln!(
            out,
            "# HELP apr_store_readings Readings in the store.\n# TYPE apr_store_readings gauge\n\
             apr_store_readings {}\n\
             # HELP apr_devices_online Devices counted as online.\n# TYPE apr_devices_online gauge\n\
             apr_devices_online {}",
            gauges.store_readings, gauges.devices_online
        );
        out
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_reason_is_exported_even_at_zero() {
        let c = Counters::default();
        let mut refused = [0; RefusalReason::ALL.len()];
        refused[reason_index(RefusalReason::WrongUnit)] = 2;
        c.record_ingest(
            &IngestAck {
                stored: 5,
                duplicates: 1,
                quarantined: 2,
            },
            &refused,
        );
        c.record_http("/api/v1/aprs/{id}", 200);
        c.record_http("/api/v1/aprs/{id}", 200);
        let text = c.render(Gauges {
            store_readings: 7,
            devices_online: 3,
            open_alerts: 2,
        });
        for r in RefusalReason::ALL {
            assert!(text.contains(&format!("apr_refused_total{{reason=\"{}\"}}", r.code())));
        }
        assert!(
            text.contains("apr_refused_total{reason=\"wrong_unit\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("apr_refused_total{reason=\"malformed\"} 0\n"));
        assert!(text.contains("apr_readings_stored_total 5\n"));
        assert!(text
            .contains("apr_http_requests_total{route=\"/api/v1/aprs/{id}\",status=\"200\"} 2\n"));
        assert!(text.contains("apr_store_readings 7\n"));
        assert!(text.contains("apr_devices_online 3"));
        assert!(text.contains("apr_open_alerts 2\n"));
        assert!(text.contains("apr_notifications_total{channel=\"email\",result=\"failed\"} 0\n"));
    }
}
