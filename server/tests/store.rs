//! The SQLite store directly: group commit under concurrency, reopening,
//! fleet import, users and tokens, devices, latest and coverage.

mod common;

use std::sync::Arc;

use apr_server::auth::{self, NewUser, Role, Scope};
use apr_server::error::Error;
use apr_server::fleet;
use apr_server::store::{
    AccountStore, RecentLog, Registry, SeriesQuery, SeriesStore, SqliteStore, TokenCacheSettings,
};
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

/// A store with the demo fleet that moves readings out of
/// `readings_recent` above `merge_above_rows`, in chunks of `chunk_rows`;
/// answers the temp dir, the file and the store.
fn store_with_log(
    merge_above_rows: u64,
    chunk_rows: u64,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    SqliteStore,
    RecentLog,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    let log = RecentLog {
        merge_above_rows,
        chunk_rows,
        direct_per_series: 4,
        ..RecentLog::default()
    };
    let s = SqliteStore::open_with(&path, 1, log).unwrap();
    fleet::import_file(&s, &fleet_csv()).unwrap();
    (dir, path, s, log)
}

/// Rows of `table` in the store file, read beside the store.
fn rows_in(path: &std::path::Path, table: &str) -> Vec<(i64, i64)> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut stmt = c
        .prepare(&format!("SELECT series, t FROM {table} ORDER BY series, t"))
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    rows
}

#[test]
fn readings_move_from_the_recent_table_in_chunks_and_every_query_reads_both() {
    let (_dir, path, s, log) = store_with_log(10, 7);
    // 30 rounds of three readings for each of three devices, in time order.
    let value = |j: i64, k: i64| (j * 10 + k) as f64;
    for j in 0..30i64 {
        for d in ["d1", "d2", "d3"] {
            let points: Vec<(i64, f64)> = (0..3)
                .map(|k| (T0 + j * 1000 + k * 10, value(j, k)))
                .collect();
            let ack = s
                .write_batch(batch(OP_APR, d, Metric::Flow, &points))
                .unwrap();
            assert_eq!((ack.stored, ack.duplicates), (3, 0));
        }
    }
    // The writer moves a chunk after answering a write: let it finish.
    s.wait_for_writer().unwrap();
    let main = rows_in(&path, "readings");
    let recent = rows_in(&path, "readings_recent");
    assert_eq!(main.len() + recent.len(), 270);
    assert!(
        recent.len() <= 10 + 7,
        "the recent table stays near its limit: {}",
        recent.len()
    );
    assert!(main.iter().all(|k| !recent.contains(k)), "a row in both");

    // Raw, bucketed, latest and coverage read both tables.
    let raw = s.readings(&query(OP_APR, Metric::Flow, None)).unwrap();
    assert_eq!(raw.len(), 270);
    assert!(
        raw.windows(2).all(|w| w[0].t_ms <= w[1].t_ms),
        "in time order"
    );
    let buckets = s
        .readings(&query(OP_APR, Metric::Flow, Some(1000)))
        .unwrap();
    assert_eq!(buckets.len(), 30);
    for (j, b) in buckets.iter().enumerate() {
        // Each second holds readings k = 0, 1, 2 of three devices.
        assert_eq!(b.t_ms, T0 + j as i64 * 1000);
        assert!((b.v - value(j as i64, 1)).abs() < 1e-9, "{b:?}");
    }
    let latest = s.latest(OP_APR).unwrap();
    assert_eq!(latest.len(), 3);
    assert!(latest
        .iter()
        .all(|l| l.t_ms == T0 + 29 * 1000 + 20 && l.v == value(29, 2)));
    let cov = s.coverage(OP_APR).unwrap();
    assert_eq!(
        (cov[0].count, cov[0].first_ms, cov[0].last_ms),
        (270, T0, T0 + 29 * 1000 + 20)
    );

    // A reading sent again is a duplicate in either table; a reading older
    // than the newest but new (a backfilled gap) is stored.
    let (sd, td) = (main[0].0, main[0].1);
    let in_recent = *recent.last().unwrap();
    let device_of = |series: i64| {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.query_row("SELECT device FROM series WHERE id = ?1", [series], |r| {
            r.get::<_, String>(0)
        })
        .unwrap()
    };
    let again = s
        .write_batch(batch(OP_APR, &device_of(sd), Metric::Flow, &[(td, -1.0)]))
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1));
    let again = s
        .write_batch(batch(
            OP_APR,
            &device_of(in_recent.0),
            Metric::Flow,
            &[(in_recent.1, -1.0), (T0 + 5, 42.0)],
        ))
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (1, 1));
    assert_eq!(s.readings_stored(), 271);
    let raw = s.readings(&query(OP_APR, Metric::Flow, None)).unwrap();
    assert_eq!(raw.len(), 271);
    assert!(
        raw.iter().all(|p| p.v != -1.0),
        "the first value of a key wins"
    );
    drop(s);

    // Reopened: the count, the consistency check and duplicates still hold.
    let report = apr_server::backup::check(&path).unwrap();
    assert_eq!(report.readings, 271);
    let s = SqliteStore::open_with(&path, 1, log).unwrap();
    assert_eq!(s.readings_stored(), 271);
    let again = s
        .write_batch(batch(OP_APR, &device_of(sd), Metric::Flow, &[(td, -1.0)]))
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1));
}

#[test]
fn a_group_with_many_readings_per_series_goes_straight_to_readings_and_duplicates_still_count() {
    let (_dir, path, s, _) = store_with_log(1_000, 100);
    // Three readings of one series: the recent table.
    let few: Vec<(i64, f64)> = (0..3).map(|k| (T0 + k * 1000, 1.0)).collect();
    s.write_batch(batch(OP_APR, "d1", Metric::Ph, &few))
        .unwrap();
    assert_eq!(rows_in(&path, "readings_recent").len(), 3);
    assert_eq!(rows_in(&path, "readings").len(), 0);
    // Twenty of the same series, two of them already in the recent table and
    // one repeated inside the batch: straight to `readings`.
    let mut many: Vec<(i64, f64)> = (1..20).map(|k| (T0 + k * 1000, 2.0)).collect();
    many.push((T0 + 7_000, 3.0));
    let ack = s
        .write_batch(batch(OP_APR, "d1", Metric::Ph, &many))
        .unwrap();
    assert_eq!((ack.stored, ack.duplicates), (17, 3));
    let main = rows_in(&path, "readings");
    let recent = rows_in(&path, "readings_recent");
    assert_eq!((main.len(), recent.len()), (17, 3));
    assert!(main.iter().all(|k| !recent.contains(k)), "a row in both");
    // A few again, one in each table: the recent table, both duplicates.
    let again = s
        .write_batch(batch(
            OP_APR,
            "d1",
            Metric::Ph,
            &[(T0 + 1000, 9.0), (T0 + 15_000, 9.0), (T0 + 30_000, 4.0)],
        ))
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (1, 2));
    let points = s.readings(&query(OP_APR, Metric::Ph, None)).unwrap();
    assert_eq!(points.len(), 21);
    let value_at = |t: i64| points.iter().find(|p| p.t_ms == t).map(|p| p.v);
    // The first value of a key wins, whichever table holds it.
    assert_eq!(value_at(T0 + 1000), Some(1.0));
    assert_eq!(value_at(T0 + 7_000), Some(2.0));
    assert_eq!(value_at(T0 + 15_000), Some(2.0));
    assert_eq!(s.readings_stored(), 21);
}

#[test]
fn a_failing_move_keeps_the_readings_in_the_recent_table_and_ingest_going() {
    let (_dir, path, s, _) = store_with_log(10, 7);
    // Only the move writes to `readings`: make every such insert fail.
    let side = rusqlite::Connection::open(&path).unwrap();
    side.execute_batch(
        "CREATE TRIGGER no_moves BEFORE INSERT ON readings \
         BEGIN SELECT RAISE(ABORT, 'moves refused by the test'); END;",
    )
    .unwrap();
    for j in 0..20i64 {
        let points: Vec<(i64, f64)> = (0..3).map(|k| (T0 + j * 100 + k, 1.0)).collect();
        let ack = s
            .write_batch(batch(OP_APR, "d1", Metric::Ph, &points))
            .unwrap();
        assert_eq!(ack.stored, 3);
    }
    assert_eq!(rows_in(&path, "readings").len(), 0);
    assert_eq!(rows_in(&path, "readings_recent").len(), 60);
    assert_eq!(
        s.readings(&query(OP_APR, Metric::Ph, None)).unwrap().len(),
        60
    );
    // Once moves work again, the next write moves a chunk.
    side.execute_batch("DROP TRIGGER no_moves").unwrap();
    s.write_batch(batch(OP_APR, "d1", Metric::Ph, &[(T0 + 10_000, 7.0)]))
        .unwrap();
    s.wait_for_writer().unwrap();
    let moved = rows_in(&path, "readings").len();
    assert!(moved >= 7, "moved {moved}");
    assert_eq!(moved + rows_in(&path, "readings_recent").len(), 61);
    assert_eq!(
        s.readings(&query(OP_APR, Metric::Ph, None)).unwrap().len(),
        61
    );
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
fn a_token_is_answered_from_memory_until_any_process_changes_the_registry() {
    let (dir, s) = store();
    let user = NewUser {
        username: "gw-1".into(),
        role: Role::Gateway,
        password: None,
        aprs: vec![OP_APR.into()],
        region: None,
    };
    auth::create_user(&*s, &user).unwrap();
    let token = auth::create_token(&*s, "gw-1", None).unwrap();
    assert!(auth::resolve_token(&*s, &token).unwrap().is_some());
    let before = s.token_cache_hits();
    for _ in 0..3 {
        assert!(auth::resolve_token(&*s, &token).unwrap().is_some());
    }
    assert_eq!(s.token_cache_hits(), before + 3, "answered from memory");
    // A registry write that changes no account (the fleet, as alerts, KPIs
    // and devices do) leaves the cache as it was.
    fleet::import_file(&*s, &fleet_csv()).unwrap();
    assert!(auth::resolve_token(&*s, &token).unwrap().is_some());
    assert_eq!(s.token_cache_hits(), before + 4, "still from memory");

    // Another process on the same file (the CLI): its revocation is seen by
    // the next lookup of this one.
    let cli = SqliteStore::open(&dir.path().join("s.sqlite3"), 1).unwrap();
    let id = auth::token_id(&token);
    cli.revoke_token(&id, T0).unwrap();
    assert!(
        auth::resolve_token(&*s, &token).unwrap().is_none(),
        "revoked by another process, refused at once"
    );

    // With the cache off every lookup reads the database.
    let token = auth::create_token(&*s, "gw-1", None).unwrap();
    drop(cli);
    let off = SqliteStore::open(&dir.path().join("s.sqlite3"), 1)
        .unwrap()
        .with_token_cache(TokenCacheSettings {
            entries: 0,
            ..TokenCacheSettings::default()
        });
    for _ in 0..3 {
        assert!(auth::resolve_token(&off, &token).unwrap().is_some());
    }
    assert_eq!(off.token_cache_hits(), 0);
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
