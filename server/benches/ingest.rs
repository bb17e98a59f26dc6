//! The server's ingest path in-process (issue 7's micro-benchmarks and its
//! profile): a gateway batch body of 100 packs × 10 readings, as the site twin
//! sends them, decoded and range-checked (`apr_wire::ingest::decode_batch`,
//! what `POST /api/v1/ingest` runs) and written through the store's
//! group-commit writer into a temporary SQLite file.
//!
//! `cargo bench -p apr-server --bench ingest` (divan). For callgrind, a fixed
//! workload without divan's sampling: `APR_PROFILE_BATCHES=50 valgrind
//! --tool=callgrind target/release/deps/ingest-<hash>` (see docs/profiles/).

use std::sync::atomic::{AtomicI64, Ordering};

use apr_server::store::{RecentLog, SeriesStore, SqliteStore};
use apr_wire::ingest::{decode_batch, IngestBatch, IngestPack};
use apr_wire::validate::Reading;
use apr_wire::Metric;

const PACKS: usize = 100;
const READINGS_PER_PACK: usize = 10;
const T0_MS: i64 = 1_764_064_800_000;

/// Every batch gets fresh times, so each stores 1,000 new readings (no duplicates).
static NEXT_MINUTE: AtomicI64 = AtomicI64::new(0);

/// A batch body: 100 APRs with one device each, ten numeric metrics at one time.
fn body() -> Vec<u8> {
    let minute = NEXT_MINUTE.fetch_add(1, Ordering::Relaxed);
    let t_ms = T0_MS + minute * 60_000;
    let metrics: Vec<Metric> = Metric::ALL
        .iter()
        .copied()
        .filter(|m| *m != Metric::Pump)
        .take(READINGS_PER_PACK)
        .collect();
    let packs = (0..PACKS)
        .map(|p| IngestPack {
            apr: format!("apr-{p:04}"),
            device: "caseta".into(),
            bt: Some(t_ms as f64 / 1000.0),
            received_ms: t_ms + 1_500,
            readings: metrics
                .iter()
                .enumerate()
                .map(|(k, m)| {
                    let (lo, hi) = m.range();
                    let hi = hi.min(lo + 1000.0);
                    Reading {
                        metric: *m,
                        t_ms,
                        value: lo + (hi - lo) * ((k + p) % 7) as f64 / 9.0,
                    }
                })
                .collect(),
            refusals: Vec::new(),
            raw: None,
        })
        .collect();
    let batch = IngestBatch {
        gateway: "gw-bench".into(),
        seq: minute as u64,
        packs,
        statuses: Vec::new(),
    };
    serde_json::to_vec(&batch).expect("a batch serialises")
}

fn readings_in(batch: &IngestBatch) -> usize {
    batch.packs.iter().map(|p| p.readings.len()).sum()
}

fn main() {
    if let Some(n) = std::env::var("APR_PROFILE_BATCHES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        profile(n);
        return;
    }
    divan::main();
}

/// The fixed workload profiled under callgrind: `n` batches decoded and stored.
fn profile(n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("store.db"), 1).expect("store");
    let bodies: Vec<Vec<u8>> = (0..n).map(|_| body()).collect();
    let mut stored = 0;
    for b in &bodies {
        let batch = decode_batch(b).expect("decodes");
        assert_eq!(readings_in(&batch), PACKS * READINGS_PER_PACK);
        stored += store.write_batch(batch).expect("stored").stored;
    }
    assert_eq!(stored as usize, n * PACKS * READINGS_PER_PACK);
    println!("{n} batches, {stored} readings stored");
}

/// JSON decode and range check of one batch body (no store).
#[divan::bench]
fn decode_batch_of_1000_readings(b: divan::Bencher) {
    let body = body();
    b.counter(divan::counter::ItemsCount::new(PACKS * READINGS_PER_PACK))
        .bench(|| decode_batch(divan::black_box(&body)).expect("decodes"));
}

/// Decode plus the store's durable write (one commit, fsync included).
#[divan::bench(sample_count = 30, sample_size = 1)]
fn decode_and_store_batch_of_1000_readings(b: divan::Bencher) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("store.db"), 1).expect("store");
    b.counter(divan::counter::ItemsCount::new(PACKS * READINGS_PER_PACK))
        .with_inputs(body)
        .bench_local_values(|body| {
            let batch = decode_batch(&body).expect("decodes");
            store.write_batch(batch).expect("stored")
        });
}

/// APRs of the paced-store benchmark (one device, ten metrics each): 2,000
/// series, as a fleet whose every series reports between two commits.
const PACED_APRS: usize = 200;

/// A store holding 200 readings of each of the 2,000 series, written in
/// large batches (so straight to `readings`), opened with `log`.
fn store_with_history(dir: &std::path::Path, log: RecentLog) -> SqliteStore {
    let store = SqliteStore::open_with(&dir.join("store.db"), 1, log).expect("store");
    for apr in 0..PACED_APRS {
        let readings = (0..200)
            .flat_map(|i| {
                paced_metrics().into_iter().map(move |m| Reading {
                    metric: m,
                    t_ms: T0_MS - 86_400_000 + i * 60_000,
                    value: m.range().0.max(0.0),
                })
            })
            .collect();
        let batch = IngestBatch {
            gateway: "gw-bench".into(),
            seq: apr as u64,
            packs: vec![IngestPack {
                apr: format!("apr-{apr:04}"),
                device: "caseta".into(),
                bt: None,
                received_ms: T0_MS,
                readings,
                refusals: Vec::new(),
                raw: None,
            }],
            statuses: Vec::new(),
        };
        store.write_batch(batch).expect("history stored");
    }
    store
}

fn paced_metrics() -> Vec<Metric> {
    Metric::ALL
        .iter()
        .copied()
        .filter(|m| *m != Metric::Pump)
        .take(READINGS_PER_PACK)
        .collect()
}

/// One paced commit: one reading of each of the 2,000 series (200 packs of
/// ten), new times every call.
fn paced_batch() -> IngestBatch {
    let minute = NEXT_MINUTE.fetch_add(1, Ordering::Relaxed);
    let t_ms = T0_MS + minute * 60_000;
    let packs = (0..PACED_APRS)
        .map(|apr| IngestPack {
            apr: format!("apr-{apr:04}"),
            device: "caseta".into(),
            bt: Some(t_ms as f64 / 1000.0),
            received_ms: t_ms,
            readings: paced_metrics()
                .into_iter()
                .map(|m| Reading {
                    metric: m,
                    t_ms,
                    value: m.range().0.max(0.0),
                })
                .collect(),
            refusals: Vec::new(),
            raw: None,
        })
        .collect();
    IngestBatch {
        gateway: "gw-bench".into(),
        seq: minute as u64,
        packs,
        statuses: Vec::new(),
    }
}

/// Paced commits (one reading per series, 2,000 series with history) with
/// the store's policy (`recent`: into `readings_recent`, moved in chunks)
/// against every reading straight into `readings` (`direct`, the layout
/// before schema v5), in the same run.
#[divan::bench(args = ["recent", "direct"], sample_count = 40, sample_size = 1)]
fn paced_commit_of_2000_series(b: divan::Bencher, layout: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = match layout {
        "direct" => RecentLog {
            direct_per_series: 0,
            ..RecentLog::default()
        },
        _ => RecentLog::default(),
    };
    let store = store_with_history(dir.path(), log);
    b.counter(divan::counter::ItemsCount::new(
        PACED_APRS * READINGS_PER_PACK,
    ))
    .with_inputs(paced_batch)
    .bench_local_values(|batch| store.write_batch(batch).expect("stored"));
}
