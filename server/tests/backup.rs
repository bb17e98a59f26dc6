//! Backups taken while ingest goes on restore to a consistent store holding
//! every reading acknowledged before the backup began.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use apr_server::store::{SeriesQuery, SeriesStore, SqliteStore};
use apr_wire::ingest::{IngestBatch, IngestPack};
use apr_wire::validate::Reading;
use apr_wire::Metric;

fn batch(seq: u64) -> IngestBatch {
    IngestBatch {
        gateway: "gw".into(),
        seq,
        packs: vec![IngestPack {
            apr: "los-aromos".into(),
            device: "caseta".into(),
            bt: None,
            received_ms: 0,
            readings: (0..100)
                .map(|i| Reading {
                    metric: Metric::Chlorine,
                    t_ms: 1_700_000_000_000 + (seq as i64 * 100 + i) * 1000,
                    value: 0.5,
                })
                .collect(),
            refusals: vec![],
            raw: None,
        }],
        statuses: vec![],
    }
}

#[test]
fn a_backup_under_load_restores_to_a_consistent_store_with_every_acknowledged_reading() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.sqlite3");
    let store = Arc::new(SqliteStore::open(&db, 2).unwrap());
    // Writers keep ingesting while the backup runs; `acked` counts batches
    // the store acknowledged (durably committed).
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, acked, stop) = (store.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                store.write_batch(batch(seq)).unwrap();
                seq += 1;
                acked.store(seq, Ordering::SeqCst);
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 50 {
        std::thread::yield_now();
    }
    let acked_before = acked.load(Ordering::SeqCst);
    let out = dir.path().join("backup.sqlite3");
    let report = apr_server::backup::backup(&db, &out).unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let acked_after = acked.load(Ordering::SeqCst);
    assert!(
        acked_after > acked_before,
        "ingest went on during the backup"
    );
    assert!(report.consistency.readings >= acked_before * 100);
    assert!(report.consistency.readings <= acked_after * 100);
    assert_eq!(report.consistency.readings % 100, 0, "whole batches only");

    // Restore into a fresh place and read back every acknowledged reading.
    let restored = dir.path().join("restored.sqlite3");
    let c = apr_server::backup::restore(&out, &restored, false).unwrap();
    assert_eq!(c, report.consistency);
    let r = SqliteStore::open(&restored, 1).unwrap();
    let points = r
        .readings(&SeriesQuery {
            apr: "los-aromos",
            metric: Metric::Chlorine,
            device: None,
            from_ms: 0,
            to_ms: i64::MAX,
            step_ms: None,
            limit: 10_000_000,
        })
        .unwrap();
    assert_eq!(points.len() as u64, report.consistency.readings);
    for seq in 0..acked_before as i64 {
        let t = 1_700_000_000_000 + seq * 100 * 1000;
        assert!(
            points.binary_search_by_key(&t, |p| p.t_ms).is_ok(),
            "batch {seq} acknowledged before the backup is missing"
        );
    }
}

#[test]
fn a_damaged_backup_is_refused_by_the_check_and_by_restore() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.sqlite3");
    {
        let store = SqliteStore::open(&db, 1).unwrap();
        store.write_batch(batch(0)).unwrap();
    }
    let out = dir.path().join("backup.sqlite3");
    apr_server::backup::backup(&db, &out).unwrap();
    // Break the running count: the check names the disagreement.
    {
        let c = rusqlite::Connection::open(&out).unwrap();
        c.execute(
            "UPDATE counts SET value = value + 1 WHERE name = 'readings'",
            [],
        )
        .unwrap();
    }
    let e = apr_server::backup::check(&out).unwrap_err().to_string();
    assert!(e.contains("running readings count"), "{e}");
    let target = dir.path().join("restored.sqlite3");
    assert!(apr_server::backup::restore(&out, &target, false).is_err());
    assert!(!target.exists(), "nothing restored from a bad backup");
    // Garbage is refused too.
    std::fs::write(&out, b"not a database").unwrap();
    assert!(apr_server::backup::check(&out).is_err());
    // An existing store is not replaced without force.
    let good = dir.path().join("good.sqlite3");
    apr_server::backup::backup(&db, &good).unwrap();
    let e = apr_server::backup::restore(&good, &db, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--force"), "{e}");
}
