//! The store's single writer: a thread that owns the write connection and
//! group-commits ingest batches.
//!
//! Callers send jobs on a channel and block on a reply. The thread takes one
//! job, then every ingest job already waiting (up to a bound), applies them in
//! one `IMMEDIATE` transaction and commits once with `synchronous=FULL`, so a
//! burst of batches costs one fsync, not one each. Each batch is answered only
//! after that commit. When a group fails, the series-id cache is dropped (ids
//! created inside the rolled-back transaction are gone) and each batch of the
//! group is retried alone, so one bad batch cannot fail its neighbours.
//!
//! Registry writes travel the same channel as closures and run in their own
//! transaction, so the file has exactly one writer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use apr_wire::ingest::{IngestAck, IngestBatch};
use apr_wire::Metric;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{Error, Result};

/// Most batches committed in one transaction.
const MAX_GROUP_BATCHES: usize = 512;
/// Most readings committed in one transaction (bounds the reply latency of the
/// first batch of a group).
const MAX_GROUP_READINGS: usize = 2_000_000;

/// Work for the writer thread.
pub(super) enum Job {
    /// Store an ingest batch and answer once committed.
    Ingest {
        batch: IngestBatch,
        reply: SyncSender<Result<IngestAck>>,
    },
    /// Run a registry write; the closure answers its caller itself.
    Exec(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// Series ids by APR, device and metric index.
type SeriesCache = HashMap<String, HashMap<String, [Option<i64>; Metric::ALL.len()]>>;

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) series: SeriesCache,
    /// Running count of stored readings, shared with the store.
    pub(super) readings_total: Arc<AtomicU64>,
    /// Cleared when the thread ends.
    pub(super) alive: Arc<AtomicBool>,
}

/// Most readings bound to one multi-row `INSERT` (3 parameters each, far below
/// SQLite's 32,766). One statement per reading spent a sixth of the store's
/// instructions on per-statement work (bind, step, reset); see
/// docs/profiles/README.md.
const ROWS_PER_INSERT: usize = 64;

/// `INSERT OR IGNORE INTO readings` of `rows` readings (1 ..= ROWS_PER_INSERT).
fn insert_readings_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=ROWS_PER_INSERT)
            .map(|n| {
                let values = vec!["(?, ?, ?)"; n].join(", ");
                format!("INSERT OR IGNORE INTO readings(series, t, v) VALUES {values}")
            })
            .collect()
    });
    &all[rows.min(ROWS_PER_INSERT)]
}

/// Inserts readings in multi-row statements: full chunks of
/// [`ROWS_PER_INSERT`], the rest in power-of-two chunks, so at most eight
/// distinct statements stay in the prepared-statement cache. Answers how many
/// rows were new (`INSERT OR IGNORE` counts only those as changes).
fn insert_readings(tx: &Connection, rows: &[(i64, i64, f64)]) -> Result<u64> {
    let mut stored = 0u64;
    let mut rest = rows;
    while !rest.is_empty() {
        let n = if rest.len() >= ROWS_PER_INSERT {
            ROWS_PER_INSERT
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(n);
        let params = chunk.iter().flat_map(|(series, t, v)| {
            [
                rusqlite::types::Value::Integer(*series),
                rusqlite::types::Value::Integer(*t),
                rusqlite::types::Value::Real(*v),
            ]
        });
        let changed = tx
            .prepare_cached(insert_readings_sql(n))?
            .execute(rusqlite::params_from_iter(params))?;
        stored += u64::try_from(changed).unwrap_or(0);
        rest = tail;
    }
    Ok(stored)
}
const INSERT_QUARANTINE: &str =
    "INSERT INTO quarantine(apr, device, received_ms, reason, record, detail, raw) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const UPDATE_STATUS: &str = "UPDATE devices SET last_status = ?3, last_status_ms = ?4 \
     WHERE apr = ?1 AND device = ?2 AND (last_status_ms IS NULL OR last_status_ms <= ?4)";
const UPDATE_LAST_SEEN: &str = "UPDATE devices SET last_seen_ms = ?3 \
     WHERE apr = ?1 AND device = ?2 AND (last_seen_ms IS NULL OR last_seen_ms < ?3)";
const ADD_READINGS: &str = "UPDATE counts SET value = value + ?1 WHERE name = 'readings'";

impl Writer {
    /// Serves jobs until every sender is gone.
    pub(super) fn run(mut self, jobs: Receiver<Job>) {
        let mut next: Option<Job> = None;
        loop {
            let job = match next.take() {
                Some(j) => j,
                None => match jobs.recv() {
                    Ok(j) => j,
                    Err(_) => break,
                },
            };
            match job {
                Job::Exec(f) => f(&mut self.conn),
                Job::Ingest { batch, reply } => {
                    let mut readings = count_readings(&batch);
                    let mut group = vec![(batch, reply)];
                    while group.len() < MAX_GROUP_BATCHES && readings < MAX_GROUP_READINGS {
                        match jobs.try_recv() {
                            Ok(Job::Ingest { batch, reply }) => {
                                readings += count_readings(&batch);
                                group.push((batch, reply));
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_group(group);
                }
            }
        }
        self.alive.store(false, Ordering::SeqCst);
    }

    fn commit_group(&mut self, group: Vec<(IngestBatch, SyncSender<Result<IngestAck>>)>) {
        let batches: Vec<&IngestBatch> = group.iter().map(|(b, _)| b).collect();
        let span = tracing::debug_span!("group_commit", batches = batches.len());
        let _enter = span.enter();
        match self.apply(&batches) {
            Ok(acks) => {
                for ((_, reply), ack) in group.iter().zip(acks) {
                    let _ = reply.send(Ok(ack));
                }
            }
            Err(e) if group.len() == 1 => {
                let _ = group[0].1.send(Err(e));
            }
            Err(e) => {
                tracing::warn!(error = %e, batches = group.len(), "group commit failed; retrying each batch alone");
                for (batch, reply) in &group {
                    let r = self.apply(&[batch]).and_then(|acks| {
                        acks.into_iter()
                            .next()
                            .ok_or_else(|| Error::Unavailable("no answer for a batch".into()))
                    });
                    let _ = reply.send(r);
                }
            }
        }
    }

    fn apply(&mut self, batches: &[&IngestBatch]) -> Result<Vec<IngestAck>> {
        match apply_batches(&mut self.conn, &mut self.series, batches) {
            Ok((acks, stored)) => {
                self.readings_total.fetch_add(stored, Ordering::Relaxed);
                Ok(acks)
            }
            Err(e) => {
                self.series.clear();
                Err(e)
            }
        }
    }
}

fn count_readings(batch: &IngestBatch) -> usize {
    batch.packs.iter().map(|p| p.readings.len()).sum()
}

/// Applies batches in one transaction; answers one ack per batch and the
/// number of readings newly stored.
fn apply_batches(
    conn: &mut Connection,
    cache: &mut SeriesCache,
    batches: &[&IngestBatch],
) -> Result<(Vec<IngestAck>, u64)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut acks = Vec::with_capacity(batches.len());
    let mut stored_total = 0u64;
    {
        let mut rows: Vec<(i64, i64, f64)> = Vec::new();
        let mut quarantine = tx.prepare_cached(INSERT_QUARANTINE)?;
        let mut status = tx.prepare_cached(UPDATE_STATUS)?;
        let mut last_seen: HashMap<(&str, &str), i64> = HashMap::new();
        for batch in batches {
            let mut ack = IngestAck::default();
            rows.clear();
            for pack in &batch.packs {
                if !cache.contains_key(pack.apr.as_str()) {
                    cache.insert(pack.apr.clone(), HashMap::new());
                }
                let per_apr = cache
                    .get_mut(pack.apr.as_str())
                    .ok_or_else(|| Error::Unavailable("series cache lost an entry".into()))?;
                if !per_apr.contains_key(pack.device.as_str()) {
                    per_apr.insert(pack.device.clone(), [None; Metric::ALL.len()]);
                }
                let slots = per_apr
                    .get_mut(pack.device.as_str())
                    .ok_or_else(|| Error::Unavailable("series cache lost an entry".into()))?;
                for r in &pack.readings {
                    let slot = &mut slots[usize::from(r.metric.index())];
                    let series = match *slot {
                        Some(id) => id,
                        None => {
                            let id = series_id(&tx, &pack.apr, &pack.device, r.metric)?;
                            *slot = Some(id);
                            id
                        }
                    };
                    rows.push((series, r.t_ms, r.value));
                }
                for refusal in &pack.refusals {
                    quarantine.execute(params![
                        pack.apr,
                        pack.device,
                        pack.received_ms,
                        refusal.reason.code(),
                        refusal.record.and_then(|i| i64::try_from(i).ok()),
                        refusal.detail,
                        pack.raw,
                    ])?;
                    ack.quarantined += 1;
                }
                let seen = last_seen
                    .entry((pack.apr.as_str(), pack.device.as_str()))
                    .or_insert(pack.received_ms);
                *seen = (*seen).max(pack.received_ms);
            }
            // A batch may repeat a (series, time) key; the first one wins, as
            // with one statement per reading (`OR IGNORE` skips the rest).
            ack.stored = insert_readings(&tx, &rows)?;
            ack.duplicates = (rows.len() as u64).saturating_sub(ack.stored);
            for s in &batch.statuses {
                let state = if s.online { "online" } else { "offline" };
                status.execute(params![s.apr, s.device, state, s.at_ms])?;
            }
            stored_total += ack.stored;
            acks.push(ack);
        }
        let mut seen = tx.prepare_cached(UPDATE_LAST_SEEN)?;
        for ((apr, device), at) in last_seen {
            seen.execute(params![apr, device, at])?;
        }
        if stored_total > 0 {
            tx.prepare_cached(ADD_READINGS)?.execute([stored_total])?;
        }
    }
    tx.commit()?;
    Ok((acks, stored_total))
}

/// The id of a series, created when new.
fn series_id(conn: &Connection, apr: &str, device: &str, metric: Metric) -> Result<i64> {
    let metric = i64::from(metric.index());
    let found = conn
        .prepare_cached("SELECT id FROM series WHERE apr = ?1 AND device = ?2 AND metric = ?3")?
        .query_row(params![apr, device, metric], |r| r.get(0))
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO series(apr, device, metric) VALUES (?1, ?2, ?3)")?
        .execute(params![apr, device, metric])?;
    Ok(conn.last_insert_rowid())
}
