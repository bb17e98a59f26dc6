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
//!
//! # Two tables for readings
//! New readings go into `readings_recent`, a small table with the same key
//! as `readings`, and move to `readings` in sorted chunks once it holds more
//! than [`RecentLog::merge_above_rows`] (see [`merge_plan`]). A commit into
//! the big table rewrites one B-tree leaf per series it touches: at paced
//! rates (every commit one or two readings of each of thousands of series)
//! that was a 4 KiB page per reading, 2–4 KB of WAL and 4–9 µs of the writer.
//! The small table has few leaves, so a commit writes few pages, and a chunk
//! moved to the big table carries many readings per series and leaf.
//!
//! A group that carries many readings per series (a backlog, or full-speed
//! ingest) is already cheap to insert into `readings` and goes there
//! directly ([`write_target`]), instead of being written twice.
//!
//! Duplicates are still told apart by key. The series cache keeps, per
//! series and table, the span of times the table may hold; a reading
//! inside the other table's span is looked up there first (a backfill older
//! than everything stored, or live readings newer than it, need no lookup),
//! and `INSERT OR IGNORE` into the target catches the rest. A row is never
//! in both tables.

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

/// The times `lo ..= hi` a table may hold for one series: exact when
/// loaded, then only widened (rows moved out of `readings_recent` leave its
/// span as it was), so a time outside it is certainly not in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    lo: i64,
    hi: i64,
}

fn span_has(span: Option<Span>, t: i64) -> bool {
    span.is_some_and(|s| s.lo <= t && t <= s.hi)
}

/// A series' id and, per table (indexed by [`Target`]), the span of times
/// it may hold.
#[derive(Debug, Clone, Copy)]
pub(super) struct SeriesSlot {
    id: i64,
    spans: [Option<Span>; 2],
}

impl SeriesSlot {
    /// Whether a reading at `t`, written to `target`, may already be in the
    /// other table: then it must be looked up there. Rows that moved from
    /// `readings_recent` to `readings` are within the former's span.
    fn may_be_in_other(&self, target: Target, t: i64) -> bool {
        let recent = span_has(self.spans[Target::Recent.index()], t);
        match target {
            Target::Recent => recent || span_has(self.spans[Target::Readings.index()], t),
            Target::Readings => recent,
        }
    }

    /// Notes a reading at `t` written to `target`.
    fn record(&mut self, target: Target, t: i64) {
        let span = &mut self.spans[target.index()];
        *span = Some(match *span {
            Some(s) => Span {
                lo: s.lo.min(t),
                hi: s.hi.max(t),
            },
            None => Span { lo: t, hi: t },
        });
    }
}

/// Series ids by APR, device and metric index.
type SeriesCache = HashMap<String, HashMap<String, [Option<SeriesSlot>; Metric::ALL.len()]>>;

/// How the writer keeps its writes few: when readings move from
/// `readings_recent` to `readings`, and how much WAL collects before it is
/// copied back into the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentLog {
    /// Rows `readings_recent` may hold before chunks move on.
    pub merge_above_rows: u64,
    /// Rows moved at least per chunk, one chunk after each write.
    pub chunk_rows: u64,
    /// Readings per series from which a group goes straight to `readings`.
    pub direct_per_series: u64,
    /// WAL pages after which a commit checkpoints (SQLite's
    /// `wal_autocheckpoint`). A page rewritten by many commits between two
    /// checkpoints is copied to the database file once, so a longer WAL
    /// writes fewer bytes; it also makes the WAL file that large (4 KiB a
    /// page) and a restart after a crash replays that much.
    pub checkpoint_pages: u32,
}

/// Which table a group of readings is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `readings_recent`: few readings per series (paced, live ingest).
    Recent,
    /// `readings`: many readings per series (a backlog, full speed).
    Readings,
}

impl Target {
    fn index(self) -> usize {
        match self {
            Target::Recent => 0,
            Target::Readings => 1,
        }
    }
}

/// Where a group of `readings` readings over `series` series goes: straight
/// to `readings` once it carries [`RecentLog::direct_per_series`] or more per
/// series (each leaf the commit rewrites then takes several readings).
pub fn write_target(readings: u64, series: u64, log: RecentLog) -> Target {
    if series > 0 && readings >= log.direct_per_series.saturating_mul(series) {
        Target::Readings
    } else {
        Target::Recent
    }
}

impl Default for RecentLog {
    /// 32,768 rows (~1 MiB, a few hundred leaves), chunks of 4,096, straight
    /// to `readings` from 4 readings per series: measured with the load
    /// tool's paced and full-speed runs (docs/SCALING.md, M3 and M5); a
    /// checkpoint every 4,000 WAL pages (16 MiB). 32,000 wrote 40 % fewer
    /// bytes per reading in the all-in-one paced run but cost the central
    /// server 9 % of its sustained rate (SCALING, "A longer WAL"), so it is a
    /// choice for storage that wears, not the default.
    fn default() -> Self {
        RecentLog {
            merge_above_rows: 32_768,
            chunk_rows: 4_096,
            direct_per_series: 4,
            checkpoint_pages: 4_000,
        }
    }
}

/// How many rows to move from `readings_recent` now, holding `recent_rows`:
/// none up to the limit, then a chunk, or the whole excess when ingest ran
/// ahead of the chunks, so the table stays near its limit at any rate.
pub fn merge_plan(recent_rows: u64, log: RecentLog) -> Option<u64> {
    if recent_rows <= log.merge_above_rows {
        return None;
    }
    Some(
        log.chunk_rows
            .max(recent_rows - log.merge_above_rows)
            .max(1)
            .min(recent_rows),
    )
}

/// The first key of all (chunks start at their cursor, inclusive).
pub(super) const BEFORE_ALL: (i64, i64) = (i64::MIN, i64::MIN);

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) series: SeriesCache,
    /// Running count of stored readings, shared with the store.
    pub(super) readings_total: Arc<AtomicU64>,
    /// Cleared when the thread ends.
    pub(super) alive: Arc<AtomicBool>,
    /// The merge policy.
    pub(super) log: RecentLog,
    /// Rows in `readings_recent` (as committed).
    pub(super) recent_rows: u64,
    /// Where the next chunk starts: chunks sweep the key order and wrap.
    pub(super) cursor: (i64, i64),
}

/// Most readings bound to one multi-row `INSERT` (3 parameters each, far below
/// SQLite's 32,766). One statement per reading spent a sixth of the store's
/// instructions on per-statement work (bind, step, reset); see
/// docs/profiles/README.md.
const ROWS_PER_INSERT: usize = 64;

/// `INSERT OR IGNORE` of `rows` readings (1 ..= ROWS_PER_INSERT) into the
/// target table.
fn insert_readings_sql(target: Target, rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<[Vec<String>; 2]> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        ["readings_recent", "readings"].map(|table| {
            (0..=ROWS_PER_INSERT)
                .map(|n| {
                    let values = vec!["(?, ?, ?)"; n].join(", ");
                    format!("INSERT OR IGNORE INTO {table}(series, t, v) VALUES {values}")
                })
                .collect()
        })
    });
    &all[target.index()][rows.min(ROWS_PER_INSERT)]
}

/// Inserts readings in multi-row statements: full chunks of
/// [`ROWS_PER_INSERT`], the rest in power-of-two chunks, so at most eight
/// distinct statements stay in the prepared-statement cache. Answers how many
/// rows were new (`INSERT OR IGNORE` counts only those as changes).
fn insert_readings(tx: &Connection, target: Target, rows: &[(i64, i64, f64)]) -> Result<u64> {
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
            .prepare_cached(insert_readings_sql(target, n))?
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
/// Whether the table other than the target holds a key.
const IN_OTHER: [&str; 2] = [
    "SELECT 1 FROM readings WHERE series = ?1 AND t = ?2",
    "SELECT 1 FROM readings_recent WHERE series = ?1 AND t = ?2",
];
/// The first and last time of a series in each table, in [`Target`] order
/// (one aggregate per subquery, so each is a single B-tree descent).
const SPANS: &str = "SELECT (SELECT min(t) FROM readings_recent WHERE series = ?1), \
     (SELECT max(t) FROM readings_recent WHERE series = ?1), \
     (SELECT min(t) FROM readings WHERE series = ?1), \
     (SELECT max(t) FROM readings WHERE series = ?1)";
/// The key just past a chunk of `?3` rows from `(?1, ?2)` on, if any.
const CHUNK_END: &str = "SELECT series, t FROM readings_recent WHERE (series, t) >= (?1, ?2) \
     ORDER BY series, t LIMIT 1 OFFSET ?3";
const MOVE_CHUNK: &str = "INSERT OR IGNORE INTO readings(series, t, v) \
     SELECT series, t, v FROM readings_recent \
     WHERE (series, t) >= (?1, ?2) AND (series, t) < (?3, ?4) ORDER BY series, t";
const DROP_CHUNK: &str =
    "DELETE FROM readings_recent WHERE (series, t) >= (?1, ?2) AND (series, t) < (?3, ?4)";

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
                    self.merge_chunk();
                }
            }
        }
        self.alive.store(false, Ordering::SeqCst);
    }

    /// Moves one chunk from `readings_recent` to `readings` when the policy
    /// says so. A failure is logged and changes nothing (the rows stay where
    /// they were and the next write tries again).
    fn merge_chunk(&mut self) {
        let Some(rows) = merge_plan(self.recent_rows, self.log) else {
            return;
        };
        let span = tracing::debug_span!("merge_recent", rows);
        let _enter = span.enter();
        match move_chunk(&mut self.conn, self.cursor, rows) {
            Ok((moved, next)) => {
                self.recent_rows = self.recent_rows.saturating_sub(moved);
                self.cursor = next;
            }
            Err(e) => {
                tracing::warn!(error = %e, "moving recent readings failed; they stay in readings_recent");
                // Recount: the committed state is the truth.
                if let Ok(n) = count_recent(&self.conn) {
                    self.recent_rows = n;
                }
                self.cursor = BEFORE_ALL;
            }
        }
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
        match apply_batches(&mut self.conn, &mut self.series, batches, self.log) {
            Ok((acks, stored, target)) => {
                self.readings_total.fetch_add(stored, Ordering::Relaxed);
                if target == Target::Recent {
                    self.recent_rows += stored;
                }
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

/// How many readings a group carries and over how many series (APR,
/// device and metric), for [`write_target`].
fn group_shape(batches: &[&IngestBatch]) -> (u64, u64) {
    let mut metrics: HashMap<(&str, &str), u16> = HashMap::new();
    let mut readings = 0u64;
    for pack in batches.iter().flat_map(|b| &b.packs) {
        let seen = metrics
            .entry((pack.apr.as_str(), pack.device.as_str()))
            .or_insert(0);
        for r in &pack.readings {
            *seen |= 1 << r.metric.index();
        }
        readings += pack.readings.len() as u64;
    }
    let series = metrics.values().map(|m| u64::from(m.count_ones())).sum();
    (readings, series)
}

/// Applies batches in one transaction; answers one ack per batch, the
/// number of readings newly stored and the table they went to.
fn apply_batches(
    conn: &mut Connection,
    cache: &mut SeriesCache,
    batches: &[&IngestBatch],
    log: RecentLog,
) -> Result<(Vec<IngestAck>, u64, Target)> {
    let (readings, series) = group_shape(batches);
    let target = write_target(readings, series, log);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut acks = Vec::with_capacity(batches.len());
    let mut stored_total = 0u64;
    {
        let mut rows: Vec<(i64, i64, f64)> = Vec::new();
        let mut quarantine = tx.prepare_cached(INSERT_QUARANTINE)?;
        let mut status = tx.prepare_cached(UPDATE_STATUS)?;
        let mut in_other = tx.prepare_cached(IN_OTHER[target.index()])?;
        let mut last_seen: HashMap<(&str, &str), i64> = HashMap::new();
        for batch in batches {
            let mut ack = IngestAck::default();
            let mut old_duplicates = 0u64;
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
                    let cached = &mut slots[usize::from(r.metric.index())];
                    if cached.is_none() {
                        *cached = Some(series_slot(&tx, &pack.apr, &pack.device, r.metric)?);
                    }
                    let slot = cached
                        .as_mut()
                        .ok_or_else(|| Error::Unavailable("series cache lost an entry".into()))?;
                    // A duplicate if the other table has it (the target's
                    // own key catches the rest on insert); looked up only
                    // where that table may hold it.
                    if slot.may_be_in_other(target, r.t_ms)
                        && in_other.exists(params![slot.id, r.t_ms])?
                    {
                        old_duplicates += 1;
                        continue;
                    }
                    slot.record(target, r.t_ms);
                    rows.push((slot.id, r.t_ms, r.value));
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
            ack.stored = insert_readings(&tx, target, &rows)?;
            ack.duplicates = (rows.len() as u64).saturating_sub(ack.stored) + old_duplicates;
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
    Ok((acks, stored_total, target))
}

/// The id of a series, created when new, and the spans of its times.
fn series_slot(conn: &Connection, apr: &str, device: &str, metric: Metric) -> Result<SeriesSlot> {
    let metric = i64::from(metric.index());
    let found = conn
        .prepare_cached("SELECT id FROM series WHERE apr = ?1 AND device = ?2 AND metric = ?3")?
        .query_row(params![apr, device, metric], |r| r.get(0))
        .optional()?;
    if let Some(id) = found {
        let spans = conn.prepare_cached(SPANS)?.query_row([id], |r| {
            let span = |lo: Option<i64>, hi: Option<i64>| match (lo, hi) {
                (Some(lo), Some(hi)) => Some(Span { lo, hi }),
                _ => None,
            };
            Ok([span(r.get(0)?, r.get(1)?), span(r.get(2)?, r.get(3)?)])
        })?;
        return Ok(SeriesSlot { id, spans });
    }
    conn.prepare_cached("INSERT INTO series(apr, device, metric) VALUES (?1, ?2, ?3)")?
        .execute(params![apr, device, metric])?;
    Ok(SeriesSlot {
        id: conn.last_insert_rowid(),
        spans: [None, None],
    })
}

/// Rows in `readings_recent`.
pub(super) fn count_recent(conn: &Connection) -> Result<u64> {
    let n: i64 = conn.query_row("SELECT count(*) FROM readings_recent", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Moves up to `rows` rows from `cursor` on (in key order) from
/// `readings_recent` to `readings` in one transaction; answers how many
/// moved and where the next chunk starts (back at the start once the sweep
/// reached the end).
///
/// The transaction commits with `synchronous = NORMAL`: if a power cut
/// takes it back, the rows are still in `readings_recent`, and the next
/// ingest commit's fsync of the WAL makes it durable with it.
fn move_chunk(conn: &mut Connection, cursor: (i64, i64), rows: u64) -> Result<(u64, (i64, i64))> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let out = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let offset = i64::try_from(rows).unwrap_or(i64::MAX);
        let end: Option<(i64, i64)> = tx
            .prepare_cached(CHUNK_END)?
            .query_row(params![cursor.0, cursor.1, offset], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        // Short of the end: up to that key, the next chunk starts there.
        // Otherwise everything from the cursor on, and the sweep wraps (the
        // last possible key, (i64::MAX, i64::MAX), is no series' reading).
        let (upper, next) = match end {
            Some(key) => (key, key),
            None => ((i64::MAX, i64::MAX), BEFORE_ALL),
        };
        let bounds = params![cursor.0, cursor.1, upper.0, upper.1];
        let copied = tx.prepare_cached(MOVE_CHUNK)?.execute(bounds)?;
        let moved = tx.prepare_cached(DROP_CHUNK)?.execute(bounds)?;
        if copied != moved {
            // A row in both tables: ingest keeps them apart, so this is a
            // store written by something else. `readings` keeps its row.
            tracing::warn!(
                copied,
                moved,
                "readings_recent held rows already in readings"
            );
        }
        tx.commit()?;
        Ok((u64::try_from(moved).unwrap_or(0), next))
    })();
    conn.pragma_update(None, "synchronous", "FULL")?;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: RecentLog = RecentLog {
        merge_above_rows: 100,
        chunk_rows: 10,
        direct_per_series: 4,
        checkpoint_pages: 1_000,
    };

    #[test]
    fn groups_with_many_readings_per_series_go_straight_to_readings() {
        assert_eq!(write_target(0, 0, LOG), Target::Recent);
        assert_eq!(write_target(2_000, 2_000, LOG), Target::Recent);
        assert_eq!(write_target(7_999, 2_000, LOG), Target::Recent);
        assert_eq!(write_target(8_000, 2_000, LOG), Target::Readings);
        assert_eq!(write_target(u64::MAX, u64::MAX, LOG), Target::Readings);
    }

    #[test]
    fn a_reading_is_looked_up_only_where_the_other_table_may_hold_it() {
        let mut slot = SeriesSlot {
            id: 1,
            spans: [None, None],
        };
        assert!(!slot.may_be_in_other(Target::Recent, 10));
        slot.record(Target::Recent, 10);
        slot.record(Target::Recent, 20);
        // Written to `readings`: only the recent table's span counts.
        assert!(slot.may_be_in_other(Target::Readings, 15));
        assert!(!slot.may_be_in_other(Target::Readings, 25));
        assert!(!slot.may_be_in_other(Target::Readings, 5));
        slot.record(Target::Readings, 100);
        slot.record(Target::Readings, 200);
        // Written to the recent table: `readings` may hold its own span and
        // whatever moved there from the recent table.
        assert!(slot.may_be_in_other(Target::Recent, 150));
        assert!(slot.may_be_in_other(Target::Recent, 15));
        assert!(!slot.may_be_in_other(Target::Recent, 50));
        assert!(!slot.may_be_in_other(Target::Recent, 250));
    }

    #[test]
    fn nothing_moves_up_to_the_limit() {
        assert_eq!(merge_plan(0, LOG), None);
        assert_eq!(merge_plan(100, LOG), None);
    }

    #[test]
    fn over_the_limit_a_chunk_moves_or_the_whole_excess_when_larger() {
        assert_eq!(merge_plan(101, LOG), Some(10));
        assert_eq!(merge_plan(110, LOG), Some(10));
        assert_eq!(merge_plan(135, LOG), Some(35));
        // A zero limit moves everything, in chunks of at least one row.
        let eager = RecentLog {
            merge_above_rows: 0,
            chunk_rows: 0,
            direct_per_series: 4,
            ..LOG
        };
        assert_eq!(merge_plan(1, eager), Some(1));
        assert_eq!(merge_plan(5, eager), Some(5));
    }
}
