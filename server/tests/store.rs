//! The SQLite store directly: group commit under concurrency, reopening,
//! fleet import, users and tokens, devices, latest and coverage.

mod common;

use std::sync::Arc;

use apr_server::auth::{self, NewUser, Role, Scope};
use apr_server::error::Error;
use apr_server::fleet;
use apr_server::store::{Registry, SeriesQuery, SeriesStore, SqliteStore};
use apr_wire::Metric;
use common::{batch, fleet_csv, OP_APR, RM_APR, T0};

fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("s.sqlite3"), 2).unwrap();
    fleet::import_file(&s, &fleet_csv()).unwrap();
    (dir, Arc::new(s))
}

fn query(apr: &str, metric: Metric, step_ms: Option<i64>) -> SeriesQuery<'_> {
    SeriesQuery {
        apr,
        metric,
        device: None,
        from_ms: i64::MIN / 2,
        to_ms: i64::MAX / 2,
        step_ms,
        limit: 1_000_000,
    }
}

#[test]
fn importing_the_fleet_twice_changes_nothing() {
    let (_dir, s) = store();
    let again = fleet::import_file(&*s, &fleet_csv()).unwrap();
    assert_eq!((again.regions, again.aprs, again.changed), (4, 56, 0));
    assert_eq!(s.aprs().unwrap().len(), 56);
    let mut f = fleet::parse(&std::fs::read_to_string(fleet_csv()).unwrap(), "fleet").unwrap();
    f.aprs[0].beneficiaries += 1;
    assert_eq!(fleet::import(&*s, &f).unwrap().changed, 1);
    assert_eq!(
        s.apr(&f.aprs[0].id).unwrap().unwrap().beneficiaries,
        f.aprs[0].beneficiaries
    );
}

#[test]
fn concurrent_batches_are_each_answered_and_all_stored() {
    let (_dir, s) = store();
    let threads: Vec<_> = (0..8i64)
        .map(|k| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut stored = 0;
                for j in 0..40i64 {
                    let points: Vec<(i64, f64)> = (0..50)
                        .map(|i| (T0 + (k * 40 + j) * 1000 * 50 + i * 1000, 1.0))
                        .collect();
                    let device = format!("d{}", k % 3);
                    let ack = s
                        .write_batch(batch(OP_APR, &device, Metric::Flow, &points))
                        .unwrap();
                    stored += ack.stored;
                }
                stored
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 8 * 40 * 50);
    assert_eq!(s.readings_stored(), total);
    let cov = s.coverage(OP_APR).unwrap();
    assert_eq!(cov.len(), 1);
    assert_eq!((cov[0].metric, cov[0].count), (Metric::Flow, total));
}

#[test]
fn a_reopened_store_keeps_its_readings_and_their_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    {
        let s = SqliteStore::open(&path, 1).unwrap();
        fleet::import_file(&s, &fleet_csv()).unwrap();
        s.write_batch(batch(OP_APR, "d1", Metric::Ph, &[(T0, 7.0), (T0 + 1, 7.2)]))
            .unwrap();
    }
    let s = SqliteStore::open(&path, 1).unwrap();
    assert_eq!(s.readings_stored(), 2);
    assert_eq!(
        s.readings(&query(OP_APR, Metric::Ph, None)).unwrap().len(),
        2
    );
    let ack = s
        .write_batch(batch(OP_APR, "d1", Metric::Ph, &[(T0, 7.0)]))
        .unwrap();
    assert_eq!((ack.stored, ack.duplicates), (0, 1));
}

#[test]
fn multi_row_inserts_count_each_reading_once_whatever_the_chunk() {
    // Readings go to SQLite in chunks of 64 rows and then power-of-two
    // chunks (writer.rs): 203 = 3 × 64 + 8 + 2 + 1 exercises every size,
    // with repeats inside one chunk, across chunks, and of stored readings.
    let (_dir, s) = store();
    let first = s
        .write_batch(batch(OP_APR, "d1", Metric::Flow, &[(T0 + 5_000, 9.0)]))
        .unwrap();
    assert_eq!((first.stored, first.duplicates), (1, 0));
    let mut points: Vec<(i64, f64)> = (0..200).map(|i| (T0 + i * 1000, i as f64)).collect();
    points.push((T0 + 3_000, 99.0)); // repeats reading 3 of this batch
    points.push((T0 + 199_000, 99.0)); // repeats the last reading, in another chunk
    points.push((T0 + 1_000, 99.0)); // repeats reading 1, in the last one-row chunk
    assert_eq!(points.len(), 203);
    let ack = s
        .write_batch(batch(OP_APR, "d1", Metric::Flow, &points))
        .unwrap();
    // Reading 5 was stored before; the three repeats are ignored.
    assert_eq!((ack.stored, ack.duplicates), (199, 4));
    assert_eq!(s.readings_stored(), 200);
    let stored = s.readings(&query(OP_APR, Metric::Flow, None)).unwrap();
    assert_eq!(stored.len(), 200);
    // The first value of a key wins: the earlier batch's, then the batch's first.
    let value_at = |t: i64| stored.iter().find(|p| p.t_ms == t).map(|p| p.v);
    assert_eq!(value_at(T0 + 5_000), Some(9.0));
    assert_eq!(value_at(T0 + 3_000), Some(3.0));
    assert_eq!(value_at(T0 + 1_000), Some(1.0));
    assert_eq!(value_at(T0 + 199_000), Some(199.0));
}

#[test]
fn buckets_start_at_the_floor_of_time_over_step_even_before_1970() {
    let (_dir, s) = store();
    s.write_batch(batch(
        RM_APR,
        "d1",
        Metric::Pressure,
        &[(-1, 10.0), (-60_000, 20.0), (0, 30.0), (59_999, 50.0)],
    ))
    .unwrap();
    let pts = s
        .readings(&query(RM_APR, Metric::Pressure, Some(60_000)))
        .unwrap();
    let got: Vec<(i64, f64)> = pts.iter().map(|p| (p.t_ms, p.v)).collect();
    assert_eq!(got, [(-60_000, 15.0), (0, 40.0)]);
}

#[test]
fn latest_gives_the_newest_reading_of_each_device_and_metric() {
    let (_dir, s) = store();
    s.write_batch(batch(
        OP_APR,
        "d1",
        Metric::Chlorine,
        &[(T0, 0.4), (T0 + 5, 0.6)],
    ))
    .unwrap();
    s.write_batch(batch(OP_APR, "d2", Metric::Chlorine, &[(T0 + 1, 0.9)]))
        .unwrap();
    s.write_batch(batch(OP_APR, "d1", Metric::Flow, &[(T0 + 2, 3.0)]))
        .unwrap();
    let latest: Vec<(String, Metric, i64, f64)> = s
        .latest(OP_APR)
        .unwrap()
        .into_iter()
        .map(|l| (l.device, l.metric, l.t_ms, l.v))
        .collect();
    assert_eq!(
        latest,
        [
            ("d1".to_owned(), Metric::Flow, T0 + 2, 3.0),
            ("d1".to_owned(), Metric::Chlorine, T0 + 5, 0.6),
            ("d2".to_owned(), Metric::Chlorine, T0 + 1, 0.9),
        ]
    );
    assert!(s.latest(RM_APR).unwrap().is_empty());
}

#[test]
fn users_log_in_with_their_password_and_tokens_resolve_to_their_scope() {
    let (_dir, s) = store();
    let weak = auth::create_user(
        &*s,
        &NewUser {
            username: "olga".into(),
            role: Role::Operator,
            password: Some("short".into()),
            aprs: vec![OP_APR.into()],
            region: None,
        },
    );
    assert!(matches!(weak, Err(Error::WeakPassword(_))));
    auth::create_user(
        &*s,
        &NewUser {
            username: "olga".into(),
            role: Role::Operator,
            password: Some("a long enough password".into()),
            aprs: vec![OP_APR.into()],
            region: None,
        },
    )
    .unwrap();
    let dup = auth::create_user(
        &*s,
        &NewUser {
            username: "olga".into(),
            role: Role::Engineer,
            password: Some("a long enough password".into()),
            aprs: vec![],
            region: None,
        },
    );
    assert!(matches!(dup, Err(Error::Conflict(_))));
    assert!(auth::login(&*s, "olga", "a long enough password")
        .unwrap()
        .is_some());
    assert!(auth::login(&*s, "olga", "a wrong password!")
        .unwrap()
        .is_none());
    assert!(auth::login(&*s, "nobody", "a long enough password")
        .unwrap()
        .is_none());

    let token = auth::create_token(&*s, "olga", Some("laptop")).unwrap();
    let p = auth::resolve_token(&*s, &token).unwrap().unwrap();
    assert_eq!((p.user.as_str(), p.role), ("olga", Role::Operator));
    assert_eq!(p.scope, Scope::Aprs([OP_APR.to_owned()].into()));
    assert!(auth::resolve_token(&*s, &auth::generate_token())
        .unwrap()
        .is_none());

    auth::set_scope(&*s, "olga", &[RM_APR.into()], None).unwrap();
    let p = auth::resolve_token(&*s, &token).unwrap().unwrap();
    assert_eq!(p.scope, Scope::Aprs([RM_APR.to_owned()].into()));
    let unknown = auth::set_scope(&*s, "olga", &["no-such-apr".into()], None);
    assert!(matches!(unknown, Err(Error::NotFound(m)) if m.contains("no-such-apr")));
    assert!(matches!(
        auth::create_token(&*s, "nobody", None),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn a_gore_user_needs_a_known_region() {
    let (_dir, s) = store();
    let r = auth::create_user(
        &*s,
        &NewUser {
            username: "gabo".into(),
            role: Role::Gore,
            password: Some("a long enough password".into()),
            aprs: vec![],
            region: Some("narnia".into()),
        },
    );
    assert!(matches!(r, Err(Error::NotFound(m)) if m.contains("narnia")));
}

#[test]
fn devices_get_credentials_and_usernames_stay_unique() {
    let (_dir, s) = store();
    let c = apr_server::device::add_device(&*s, OP_APR, "macro-1", 30).unwrap();
    assert_eq!(c.mqtt_username, "los-cerrillos/macro-1");
    assert_eq!(c.mqtt_password.len(), 32);
    let d = s.devices(Some(&[OP_APR.to_owned()])).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].mqtt_password_sha256,
        auth::sha256_hex(&c.mqtt_password)
    );
    assert_eq!(d[0].report_interval_s, 30);
    let taken = apr_server::device::upsert_device(
        &*s,
        RM_APR,
        "d9",
        "los-cerrillos/macro-1",
        "pw-pw-pw-pw",
        60,
        serde_json::json!({}),
    );
    assert!(matches!(taken, Err(Error::Conflict(_))));
    let unknown = apr_server::device::add_device(&*s, "no-such-apr", "d1", 60);
    assert!(matches!(unknown, Err(Error::NotFound(_))));
    let bad = apr_server::device::add_device(&*s, OP_APR, "Bad Id", 60);
    assert!(matches!(bad, Err(Error::Invalid(_))));
    // Re-adding re-keys the same device.
    let c2 = apr_server::device::add_device(&*s, OP_APR, "macro-1", 30).unwrap();
    assert_ne!(c2.mqtt_password, c.mqtt_password);
    assert_eq!(s.devices(None).unwrap().len(), 1);
}
