//! The bearer-token lookup every API request makes (`auth::resolve_token`,
//! 8.8 % of the central server's CPU before the token cache, see
//! docs/SCALING.md): answered from the cache against read from SQLite each
//! time (`[store] token_cache_entries = 0`), in the same run. Before each
//! lookup the store commits a registry-free write of readings, as under
//! ingest, so the uncached read starts on a page cache the writer has just
//! invalidated.
//!
//! `cargo bench -p apr-server --bench token` (divan).

use std::cell::Cell;

use apr_server::auth::{self, NewUser, Role};
use apr_server::store::{AprRecord, Region, SeriesStore, SqliteStore, TokenCacheSettings};
use apr_wire::ingest::{IngestBatch, IngestPack};
use apr_wire::validate::Reading;
use apr_wire::Metric;

fn main() {
    divan::main();
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    token: String,
}

fn fixture(entries: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("bench.sqlite3"), 2)
        .expect("open store")
        .with_token_cache(TokenCacheSettings {
            entries,
            ..TokenCacheSettings::default()
        });
    use apr_server::store::Registry;
    store
        .upsert_fleet(
            &[Region {
                id: "bench".into(),
                name: "Bench".into(),
            }],
            &[AprRecord {
                id: "apr-0001".into(),
                name: "APR".into(),
                comuna: "c".into(),
                region: "bench".into(),
                beneficiaries: 1,
                connections: 1,
                source: "pozo".into(),
                capacity_l_s: 1.0,
                storage_m3: 1.0,
                gore_contribution_clp: 1,
                public_investment_clp: 1,
            }],
        )
        .expect("fleet");
    auth::create_user(
        &store,
        &NewUser {
            username: "gw-bench".into(),
            role: Role::Gateway,
            password: None,
            aprs: vec!["apr-0001".into()],
            region: None,
        },
    )
    .expect("user");
    let token = auth::create_token(&store, "gw-bench", None).expect("token");
    Fixture {
        _dir: dir,
        store,
        token,
    }
}

/// One reading committed by the writer (what ingest does between requests).
fn commit_one(store: &SqliteStore, seq: &Cell<u64>) {
    seq.set(seq.get() + 1);
    let t_ms = 1_764_064_800_000 + seq.get() as i64 * 1000;
    let batch = IngestBatch {
        gateway: "gw-bench".into(),
        seq: seq.get(),
        packs: vec![IngestPack {
            apr: "apr-0001".into(),
            device: "caseta".into(),
            bt: None,
            received_ms: t_ms,
            readings: vec![Reading {
                metric: Metric::Flow,
                t_ms,
                value: 1.0,
            }],
            refusals: Vec::new(),
            raw: None,
        }],
        statuses: Vec::new(),
    };
    store.write_batch(batch).expect("ingest");
}

#[divan::bench(args = ["cached", "uncached"], sample_count = 200, sample_size = 1)]
fn resolve_token_after_a_commit(b: divan::Bencher, mode: &str) {
    let f = fixture(if mode == "cached" { 10_000 } else { 0 });
    let seq = Cell::new(0);
    b.with_inputs(|| commit_one(&f.store, &seq))
        .bench_local_values(|()| {
            auth::resolve_token(&f.store, divan::black_box(&f.token))
                .expect("lookup")
                .expect("known token")
        });
}
