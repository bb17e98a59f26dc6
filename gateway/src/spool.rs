//! The spool: the store at the seam between the MQTT side and the forwarder.
//!
//! # Contract
//! - [`Spool::append`] stores a validated pack and returns its [`SpoolId`]. Ids
//!   are monotonic `u64`s, never reused, so a durable implementation can keep
//!   them in segment files and a ledger of released ids.
//! - When the spool is full, `append` waits (backpressure: the MQTT side stops
//!   reading, the broker queues, the devices keep their outboxes). Nothing is
//!   dropped silently.
//! - [`Spool::next_batch`] hands packs out to the forwarder, **live data
//!   first**: the newest packs that fit in the batch, so that after an outage
//!   the dashboards show the present while the backlog drains behind it (the
//!   backlog then goes newest-first, interleaved with live data). A pack handed
//!   out is still held, and counted in [`Spool::depth`], until
//!   [`Spool::release`]d — which the forwarder does only once the server has
//!   acknowledged the batch. A durable spool hands unreleased packs out again
//!   after a restart; the server's ingest is idempotent, so that is harmless.
//!
//! Two implementations:
//! - [`MemorySpool`], in memory (lost on restart). It is not
//!   [`durable`](Spool::durable), so the gateway names a pack on the device's
//!   `ack` topic only after the *server* stored it; the devices' outboxes
//!   keep everything else and resend it.
//! - [`DiskSpool`], durable (segment files with fsync'd, CRC-checked records
//!   and a ledger of released ids; see [`disk`]). The gateway acknowledges a
//!   pack to its device as soon as [`Spool::append_batch`] returns, so
//!   devices free their outboxes during long server outages, and the pack
//!   leaves the spool only once the server stored it.
//!
//! [`AnySpool`] picks one as configured (`[spool] dir`).

pub mod disk;
pub mod fs;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;

use apr_wire::ingest::IngestPack;
use serde::Serialize;
use tokio::sync::Notify;

use crate::config::SpoolConfig;

pub use disk::{DiskSpool, DiskSpoolOptions};

/// A pack's id in the spool: monotonic, never reused.
pub type SpoolId = u64;

/// What a spool holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpoolDepth {
    /// Packs held (waiting or handed out and not yet released).
    pub packs: u64,
    /// Readings in those packs.
    pub readings: u64,
    /// Bytes (of the implementation's representation).
    pub bytes: u64,
}

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool was closed.
    #[error("spool closed")]
    Closed,
    /// Storage failed (durable implementations).
    #[error("spool storage: {0}")]
    Storage(String),
    /// A file operation failed (durable implementations).
    #[error("spool file: {0}")]
    Io(#[from] std::io::Error),
}

/// The state of a spool beyond its depth: durability, disk use, losses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpoolHealth {
    /// Whether appended packs survive a crash (the ack point, see [`Spool::durable`]).
    pub durable: bool,
    /// Bytes on disk (segments and ledger; 0 in memory).
    pub disk_bytes: u64,
    /// The configured bound of `disk_bytes`.
    pub max_bytes: u64,
    /// When the oldest held pack was received, ms since the Unix epoch.
    pub oldest_received_ms: Option<i64>,
    /// Packs dropped (`when_full = drop_oldest`, or unreadable on disk).
    pub dropped_packs: u64,
    /// Readings in those packs.
    pub dropped_readings: u64,
    /// Whether the last write found the disk full.
    pub disk_full: bool,
    /// Writes that failed with a full disk.
    pub disk_full_errors: u64,
    /// Other failed file operations.
    pub storage_errors: u64,
    /// Torn or corrupted records found (on open or on reading back).
    pub corrupt_records: u64,
    /// Bytes discarded with them.
    pub discarded_bytes: u64,
}

/// The store between the MQTT side and the forwarder (see the module doc).
pub trait Spool: Send + Sync + 'static {
    /// Stores a pack, waiting while the spool is full.
    fn append(&self, pack: IngestPack) -> impl Future<Output = Result<SpoolId, SpoolError>> + Send;

    /// Stores packs as one group (one write and one sync for a durable
    /// spool); when it returns, they are all stored. Ids ascend.
    fn append_batch(
        &self,
        packs: Vec<IngestPack>,
    ) -> impl Future<Output = Result<Vec<SpoolId>, SpoolError>> + Send {
        async move {
            let mut ids = Vec::with_capacity(packs.len());
            for p in packs {
                ids.push(self.append(p).await?);
            }
            Ok(ids)
        }
    }

    /// Whether a stored pack survives a crash of the gateway. A durable
    /// spool is the ack point: devices are acknowledged once
    /// [`Spool::append_batch`] returns; otherwise once the server stored
    /// the pack.
    fn durable(&self) -> bool {
        false
    }

    /// Durability, disk use and losses.
    fn health(&self) -> SpoolHealth {
        SpoolHealth::default()
    }

    /// Hands out up to `max_readings` readings' worth of packs not handed out
    /// yet, newest first (always at least one pack if any is waiting), in id
    /// order within the batch.
    fn next_batch(
        &self,
        max_readings: usize,
    ) -> impl Future<Output = Result<Vec<(SpoolId, IngestPack)>, SpoolError>> + Send;

    /// Forgets packs the server has acknowledged. Unknown ids are ignored.
    fn release(&self, ids: &[SpoolId]) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// Readings (at least one per pack) waiting to be handed out.
    fn waiting_readings(&self) -> u64;

    /// Resolves once something may have been appended since the last call
    /// (spurious wake-ups allowed; the forwarder re-checks).
    fn appended(&self) -> impl Future<Output = ()> + Send;

    /// What the spool holds (waiting and handed out).
    fn depth(&self) -> SpoolDepth;

    /// Packs held.
    fn len(&self) -> u64 {
        self.depth().packs
    }

    /// Whether nothing is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held.
    fn bytes(&self) -> u64 {
        self.depth().bytes
    }
}

/// The batch weight of a pack: its readings, at least one (a pack of refusals
/// only still costs a slot).
pub fn pack_weight(pack: &IngestPack) -> u64 {
    pack.readings.len().max(1) as u64
}

/// Approximate in-memory size of a pack.
pub fn pack_bytes(pack: &IngestPack) -> u64 {
    let refusals: usize = pack
        .refusals
        .iter()
        .map(|r| std::mem::size_of_val(r) + r.detail.len())
        .sum();
    (std::mem::size_of::<IngestPack>()
        + pack.apr.len()
        + pack.device.len()
        + std::mem::size_of_val(pack.readings.as_slice())
        + refusals
        + pack.raw.as_ref().map_or(0, String::len)) as u64
}

/// Splits the live-first batch off the waiting queue (ordered by id): the
/// longest run of newest entries whose weights fit in `max_weight`, at least
/// one entry. The batch keeps id order; older entries stay waiting.
pub fn take_live_first<T>(
    waiting: &mut VecDeque<T>,
    max_weight: u64,
    weight: impl Fn(&T) -> u64,
) -> Vec<T> {
    let mut total = 0u64;
    let mut start = waiting.len();
    while start > 0 {
        let w = weight(&waiting[start - 1]);
        if start < waiting.len() && total + w > max_weight {
            break;
        }
        total += w;
        start -= 1;
    }
    waiting.split_off(start).into()
}

struct Waiting {
    id: SpoolId,
    weight: u64,
    bytes: u64,
    pack: IngestPack,
}

#[derive(Default)]
struct Inner {
    next_id: SpoolId,
    waiting: VecDeque<Waiting>,
    waiting_weight: u64,
    /// Handed out, not yet released: id → (readings, bytes).
    out: HashMap<SpoolId, (u64, u64)>,
    held: SpoolDepth,
}

/// The in-memory spool, bounded in packs and bytes.
pub struct MemorySpool {
    inner: Mutex<Inner>,
    max_packs: u64,
    max_bytes: u64,
    space: Notify,
    appended: Notify,
}

impl MemorySpool {
    /// A spool holding at most `max_packs` packs and `max_bytes` bytes.
    pub fn new(max_packs: usize, max_bytes: u64) -> MemorySpool {
        MemorySpool {
            inner: Mutex::new(Inner::default()),
            max_packs: max_packs.max(1) as u64,
            max_bytes: max_bytes.max(1),
            space: Notify::new(),
            appended: Notify::new(),
        }
    }

    /// A spool with the configured bounds.
    pub fn from_config(config: &SpoolConfig) -> MemorySpool {
        MemorySpool::new(config.max_packs, config.max_bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent counters (every
        // update is a few integer operations), so a poisoned lock is usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends (taking the pack out of `slot`) if there is room; an oversize
    /// pack fits into an empty spool.
    fn try_append(&self, slot: &mut Option<IngestPack>, bytes: u64) -> Option<SpoolId> {
        let mut inner = self.lock();
        let fits = inner.held.packs == 0
            || (inner.held.packs < self.max_packs && inner.held.bytes + bytes <= self.max_bytes);
        if !fits {
            return None;
        }
        let pack = slot.take()?;
        let id = inner.next_id;
        inner.next_id += 1;
        let weight = pack_weight(&pack);
        inner.held.packs += 1;
        inner.held.readings += pack.readings.len() as u64;
        inner.held.bytes += bytes;
        inner.waiting_weight += weight;
        inner.waiting.push_back(Waiting {
            id,
            weight,
            bytes,
            pack,
        });
        Some(id)
    }
}

impl Spool for MemorySpool {
    async fn append(&self, pack: IngestPack) -> Result<SpoolId, SpoolError> {
        let bytes = pack_bytes(&pack);
        let mut slot = Some(pack);
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if let Some(id) = self.try_append(&mut slot, bytes) {
                self.appended.notify_one();
                return Ok(id);
            }
            space.await;
        }
    }

    async fn next_batch(
        &self,
        max_readings: usize,
    ) -> Result<Vec<(SpoolId, IngestPack)>, SpoolError> {
        let mut inner = self.lock();
        let taken = take_live_first(&mut inner.waiting, max_readings as u64, |w| w.weight);
        let mut batch = Vec::with_capacity(taken.len());
        for w in taken {
            inner.waiting_weight -= w.weight;
            inner
                .out
                .insert(w.id, (w.pack.readings.len() as u64, w.bytes));
            batch.push((w.id, w.pack));
        }
        Ok(batch)
    }

    async fn release(&self, ids: &[SpoolId]) -> Result<(), SpoolError> {
        {
            let mut inner = self.lock();
            for id in ids {
                if let Some((readings, bytes)) = inner.out.remove(id) {
                    inner.held.packs -= 1;
                    inner.held.readings -= readings;
                    inner.held.bytes -= bytes;
                }
            }
        }
        self.space.notify_waiters();
        Ok(())
    }

    fn waiting_readings(&self) -> u64 {
        self.lock().waiting_weight
    }

    fn appended(&self) -> impl Future<Output = ()> + Send {
        self.appended.notified()
    }

    fn depth(&self) -> SpoolDepth {
        self.lock().held
    }
}

/// The spool as configured: [`DiskSpool`] when `[spool] dir` is set,
/// [`MemorySpool`] otherwise.
#[derive(Debug)]
pub enum AnySpool {
    /// In memory.
    Memory(MemorySpool),
    /// On disk.
    Disk(DiskSpool),
}

impl AnySpool {
    /// Opens the configured spool.
    pub fn from_config(config: &SpoolConfig) -> Result<AnySpool, SpoolError> {
        if config.dir.is_empty() {
            Ok(AnySpool::Memory(MemorySpool::from_config(config)))
        } else {
            Ok(AnySpool::Disk(DiskSpool::from_config(config)?))
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnySpool::Memory($s) => $e,
            AnySpool::Disk($s) => $e,
        }
    };
}

impl Spool for AnySpool {
    async fn append(&self, pack: IngestPack) -> Result<SpoolId, SpoolError> {
        each!(self, s => s.append(pack).await)
    }
    async fn append_batch(&self, packs: Vec<IngestPack>) -> Result<Vec<SpoolId>, SpoolError> {
        each!(self, s => s.append_batch(packs).await)
    }
    fn durable(&self) -> bool {
        each!(self, s => s.durable())
    }
    fn health(&self) -> SpoolHealth {
        each!(self, s => s.health())
    }
    async fn next_batch(
        &self,
        max_readings: usize,
    ) -> Result<Vec<(SpoolId, IngestPack)>, SpoolError> {
        each!(self, s => s.next_batch(max_readings).await)
    }
    async fn release(&self, ids: &[SpoolId]) -> Result<(), SpoolError> {
        each!(self, s => s.release(ids).await)
    }
    fn waiting_readings(&self) -> u64 {
        each!(self, s => s.waiting_readings())
    }
    async fn appended(&self) {
        each!(self, s => s.appended().await)
    }
    fn depth(&self) -> SpoolDepth {
        each!(self, s => s.depth())
    }
}

impl std::fmt::Debug for MemorySpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySpool")
            .field("depth", &self.depth())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apr_wire::validate::Reading;
    use apr_wire::Metric;
    use std::time::Duration;

    fn pack(device: &str, readings: usize) -> IngestPack {
        IngestPack {
            apr: "a1".into(),
            device: device.into(),
            bt: Some(1.0),
            received_ms: 0,
            readings: vec![
                Reading {
                    metric: Metric::Flow,
                    t_ms: 0,
                    value: 1.0
                };
                readings
            ],
            refusals: vec![],
            raw: None,
        }
    }

    #[test]
    fn a_batch_takes_the_newest_entries_that_fit_and_keeps_their_order() {
        let mut q: VecDeque<u64> = [5, 5, 5, 5].into();
        assert_eq!(take_live_first(&mut q, 10, |w| *w), [5, 5]);
        assert_eq!(q.len(), 2);
        let mut q: VecDeque<(u8, u64)> = [(0, 3), (1, 3), (2, 3)].into();
        let b = take_live_first(&mut q, 7, |e| e.1);
        assert_eq!(b, [(1, 3), (2, 3)]);
        assert_eq!(q, [(0, 3)]);
    }

    #[test]
    fn a_batch_always_takes_one_entry_even_if_it_is_too_heavy() {
        let mut q: VecDeque<u64> = [1, 50].into();
        assert_eq!(take_live_first(&mut q, 10, |w| *w), [50]);
        assert_eq!(take_live_first(&mut q, 10, |w| *w), [1]);
        assert!(take_live_first(&mut q, 10, |w| *w).is_empty());
    }

    #[tokio::test]
    async fn packs_stay_held_until_released_and_ids_are_monotonic() {
        let s = MemorySpool::new(100, 1 << 20);
        let a = s.append(pack("d1", 2)).await.unwrap();
        let b = s.append(pack("d2", 0)).await.unwrap();
        assert!(b > a);
        assert_eq!(s.waiting_readings(), 3);
        let batch = s.next_batch(10).await.unwrap();
        assert_eq!(batch.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [a, b]);
        assert_eq!(s.waiting_readings(), 0);
        assert_eq!(s.depth().packs, 2);
        assert_eq!(s.depth().readings, 2);
        s.release(&[a]).await.unwrap();
        s.release(&[a]).await.unwrap();
        assert_eq!(s.depth().packs, 1);
        s.release(&[b]).await.unwrap();
        assert_eq!(s.depth(), SpoolDepth::default());
        let c = s.append(pack("d1", 1)).await.unwrap();
        assert!(c > b);
    }

    #[tokio::test]
    async fn a_full_spool_makes_append_wait_until_a_release() {
        let s = std::sync::Arc::new(MemorySpool::new(1, 1 << 20));
        let first = s.append(pack("d1", 1)).await.unwrap();
        let s2 = s.clone();
        let blocked = tokio::spawn(async move { s2.append(pack("d2", 1)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !blocked.is_finished(),
            "append must wait while the spool is full"
        );
        assert_eq!(s.next_batch(10).await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!blocked.is_finished(), "handed out is still held");
        s.release(&[first]).await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(2), blocked)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(second > first);
    }
}
