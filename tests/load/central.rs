//! `--central`: the central server as deployed. Every APR has its own site
//! gateway (with its own broker, at the site), so what reaches the server's
//! box is HTTP: one gateway per APR posting its batches to
//! `POST /api/v1/ingest`. Here each of the `--sites` APRs is such a gateway
//! with its own token, posting one pack (`--reports-per-pack` reports of ten
//! readings) per request and keeping one request in flight, as the
//! gateway's forwarder does: at full speed (`--rate 0`) the next request
//! leaves as soon as the last is answered; with `--rate` each gateway posts
//! on its own timer, phases spread over the interval.
//!
//! The server answers a batch only after its commit, so a request's
//! answer time is its post → queryable time; a probe APR also posts one
//! reading every 100 ms and polls the readings API until it is returned, as
//! the end-to-end harness's probe does. No broker and no devices run in this
//! process: the CPU reported is the server's plus the HTTP clients'.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apr_wire::ingest::{IngestAck, IngestBatch, IngestPack};
use apr_wire::validate::Reading;

use super::{
    cpu_seconds, latency_text, metrics, now_s, probe_latency_ms, rss_mib, sample_value, site_id,
    thread_cpu_seconds, PROBE_TIMEOUT,
};

/// What the central run needs from the harness's setup.
pub struct Central<'a> {
    pub state: &'a apr_server::AppState,
    pub http_addr: std::net::SocketAddr,
    /// `(gateway name, token)` of APR `i` at index `i`; the last is the probe's.
    pub tokens: &'a [(String, String)],
    pub reader: &'a str,
    pub sites: usize,
    pub seconds: u64,
    pub rate: u64,
    pub per_pack: usize,
}

/// Counts shared by the gateways' tasks.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    readings_acked: AtomicU64,
    failures: AtomicU64,
}

/// How long a failed request waits before it is sent again.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// One pack of APR `i`: reports `seq0..seq0 + per_pack` (counted from 0).
fn pack(i: usize, n: usize, seq0: u64, per_pack: usize, base: f64, step: f64) -> IngestPack {
    let metrics = metrics();
    let mut readings = Vec::with_capacity(per_pack * metrics.len());
    for s in seq0..seq0 + per_pack as u64 {
        let t = base + step * (s as f64 + i as f64 / n as f64);
        for (k, m) in metrics.iter().enumerate() {
            readings.push(Reading {
                metric: *m,
                t_ms: (t * 1000.0).round() as i64,
                value: sample_value(*m, k, s + 1),
            });
        }
    }
    let t_ms = readings.first().map_or(0, |r| r.t_ms);
    IngestPack {
        apr: site_id(i),
        device: "d".into(),
        bt: Some(t_ms as f64 / 1000.0),
        received_ms: t_ms,
        readings,
        refusals: vec![],
        raw: None,
    }
}

/// Posts `body` until the server answers 2xx (a real forwarder keeps the
/// batch and retries); answers the readings the server acknowledged (stored
/// now or already held, after a retry) and the time from the first try.
async fn post_until_stored(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Vec<u8>,
    tally: &Tally,
) -> (u64, f64) {
    let t0 = Instant::now();
    loop {
        tally.requests.fetch_add(1, Ordering::Relaxed);
        let r = http
            .post(url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let why = match r {
            Ok(r) if r.status().is_success() => match r.json::<IngestAck>().await {
                Ok(ack) => {
                    return (
                        ack.stored + ack.duplicates,
                        t0.elapsed().as_secs_f64() * 1000.0,
                    )
                }
                Err(e) => format!("unreadable answer: {e}"),
            },
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => e.to_string(),
        };
        if tally.failures.fetch_add(1, Ordering::Relaxed) < 5 {
            println!("load: central: ingest {why}; retrying");
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Runs the central shape; prints the figures; `false` on loss.
pub async fn run(c: Central<'_>) -> bool {
    let n = c.sites.max(1);
    let per_pack = c.per_pack.max(1);
    let readings_per_pack = (per_pack * metrics().len()) as u64;
    let interval = (c.rate > 0)
        .then(|| Duration::from_secs_f64((n as u64 * readings_per_pack) as f64 / c.rate as f64));
    // As in the end-to-end run: paced runs carry wall-clock report times;
    // full speed starts 20 days back, one second per report.
    let (base, step) = match interval {
        Some(d) => (now_s().floor(), d.as_secs_f64() / per_pack as f64),
        None => (now_s().floor() - 20.0 * 86_400.0, 1.0),
    };
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/ingest", c.http_addr);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let stored0 = c.state.series().readings_stored();
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let writer_cpu0 = thread_cpu_seconds("store-writer");

    let mut gateways = Vec::with_capacity(n);
    for i in 0..n {
        let (name, token) = c.tokens[i].clone();
        let (http, url, tally, stop) = (http.clone(), url.clone(), tally.clone(), stop.clone());
        gateways.push(tokio::spawn(async move {
            let mut tick = interval.map(|d| {
                let phase = d.mul_f64(i as f64 / n as f64);
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + phase, d);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let mut latencies = Vec::new();
            let (mut seq, mut sent, mut stored) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let body = serde_json::to_vec(&IngestBatch {
                    gateway: name.clone(),
                    seq: seq / per_pack as u64,
                    packs: vec![pack(i, n, seq, per_pack, base, step)],
                    statuses: vec![],
                })
                .expect("encode a batch");
                seq += per_pack as u64;
                sent += readings_per_pack;
                let (s, ms) = post_until_stored(&http, &url, &token, body, &tally).await;
                stored += s;
                tally.readings_acked.fetch_add(s, Ordering::Relaxed);
                latencies.push(ms);
            }
            (sent, stored, latencies)
        }));
    }

    // The probe: posts one reading, then polls the readings API for it.
    let probe = {
        let (http, url, tally, stop) = (http.clone(), url.clone(), tally.clone(), stop.clone());
        let (name, token) = c.tokens[n].clone();
        let probe_site = site_id(n);
        let reader = c.reader.to_string();
        let http_addr = c.http_addr;
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let bt = now_s().floor() - 10_000.0 + k as f64;
                let t_ms = (bt * 1000.0) as i64;
                let body = serde_json::to_vec(&IngestBatch {
                    gateway: name.clone(),
                    seq: k,
                    packs: vec![IngestPack {
                        apr: probe_site.clone(),
                        device: "d".into(),
                        bt: Some(bt),
                        received_ms: t_ms,
                        readings: vec![Reading {
                            metric: apr_wire::Metric::Chlorine,
                            t_ms,
                            value: 0.5,
                        }],
                        refusals: vec![],
                        raw: None,
                    }],
                    statuses: vec![],
                })
                .expect("encode the probe");
                let t0 = Instant::now();
                post_until_stored(&http, &url, &token, body, &tally).await;
                lat.push(probe_latency_ms(&http, http_addr, &probe_site, &reader, bt, t0).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (lat, k)
        })
    };

    tokio::time::sleep(Duration::from_secs(c.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut lat_all = Vec::new();
    for g in gateways {
        if let Ok((s, a, l)) = g.await {
            sent += s;
            acked += a;
            lat_all.extend(l);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (mut lat_probe, probes) = probe.await.unwrap_or_default();
    let cpu = cpu_seconds() - cpu0;
    let writer_cpu = thread_cpu_seconds("store-writer") - writer_cpu0;
    let stored = c.state.series().readings_stored() - stored0 - probes;
    lat_all.sort_by(f64::total_cmp);
    lat_probe.sort_by(f64::total_cmp);
    let requests = tally.requests.load(Ordering::Relaxed);
    let failures = tally.failures.load(Ordering::Relaxed);
    println!(
        "load: central: {n} gateways (one per APR), one pack of {readings_per_pack} readings per request, rate_target={}",
        c.rate
    );
    println!("load: central: sent {sent} readings; stored {stored}; acknowledged {acked}; {requests} requests ({:.0}/s), {failures} failed and retried", requests as f64 / elapsed);
    println!(
        "load: central: sustained {:.0} readings/s stored (first request → last answer, {elapsed:.1} s)",
        stored as f64 / elapsed
    );
    println!(
        "load: central: request → stored (answered after the commit) p50 {} ms, p99 {} ms over {} requests",
        latency_text(&lat_all, 0.5),
        latency_text(&lat_all, 0.99),
        lat_all.len()
    );
    println!(
        "load: central: post → queryable (probe) p50 {} ms, p99 {} ms over {} probes ({} not queryable within {} s)",
        latency_text(&lat_probe, 0.5),
        latency_text(&lat_probe, 0.99),
        lat_probe.len(),
        lat_probe.iter().filter(|v| v.is_infinite()).count(),
        PROBE_TIMEOUT.as_secs()
    );
    println!(
        "load: central: process CPU {cpu:.1} s ({:.1} % of one core; server + {n} HTTP clients), store writer {writer_cpu:.1} s ({:.2} µs per reading), RSS {:.0} MiB",
        100.0 * cpu / elapsed,
        1e6 * writer_cpu / stored.max(1) as f64,
        rss_mib()
    );
    if stored != sent || acked != sent {
        println!("load: LOSS: central: sent {sent}, stored {stored}, acknowledged {acked}");
        return false;
    }
    true
}
