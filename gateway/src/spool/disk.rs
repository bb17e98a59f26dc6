//! The durable spool: packs in CRC-checked segment files on disk, released
//! through a ledger once the server has stored them.
//!
//! # Design constraints
//! - **A pack named on `ack` survives any crash.** The gateway tells a device
//!   that a pack is safe (CONTRACT §2) as soon as [`Spool::append_batch`]
//!   returns, and the device then forgets it, so by then the pack's record is
//!   written *and* `fdatasync`ed. Appends are group-committed: the uplink
//!   hands over every pack that arrived while the previous commit was
//!   syncing, and one write plus one sync covers them all.
//! - **A pack leaves the spool only after the server stored it** (or when the
//!   `drop_oldest` policy drops it, which is counted per reading).
//! - **Bounded by bytes on disk**, segments and ledger together, with an
//!   explicit policy when full ([`WhenFull`]): `block` stops taking packs
//!   (the MQTT side waits, devices keep their outboxes), `drop_oldest` drops
//!   the oldest packs waiting to be forwarded (not those in flight, which
//!   the server may be storing) and counts every dropped reading.
//! - **A full disk (`ENOSPC`) never corrupts the spool**: a failed write is
//!   cut back to the last good record, reported (error log, counter,
//!   [`SpoolHealth::disk_full`]) and handled by the same policy.
//! - **Corruption is detected, reported and contained**: on open, a torn or
//!   corrupted record ends its segment; the records before it are kept, the
//!   file is truncated there, and the loss is logged and counted.
//! - Memory holds an index of ~48 bytes per held pack, not the packs: a
//!   week-long backlog stays on disk and is read back batch by batch.
//!
//! # On-disk format
//! A spool directory holds segment files and one ledger:
//!
//! ```text
//! seg-00000000000000000042.log   packs with ids >= 42, in increasing id order
//! seg-00000000000000001377.log
//! ledger.log                     ids released (stored by the server, or dropped)
//! ```
//!
//! A segment starts with the 8-byte magic `APRSEG\0\x01`, then records:
//!
//! ```text
//! offset  size  field
//!      0     4  len          payload length, u32 little-endian (<= 4 MiB)
//!      4     4  crc          CRC-32 (IEEE) of bytes 8 .. 32 + len
//!      8     8  id           SpoolId, u64 LE, strictly increasing in the file
//!     16     4  readings     readings in the pack, u32 LE
//!     20     4  reserved     0
//!     24     8  received_ms  when the gateway received the pack, i64 LE
//!     32   len  payload      the IngestPack as JSON
//! ```
//!
//! The ledger starts with `APRLDG\0\x01`, then records of released ids:
//! `len` (u32 LE, bytes of ids), `crc` (CRC-32 of the ids), then `len / 8`
//! ids (u64 LE). It is appended and synced on every release, and rewritten
//! (write `ledger.tmp`, sync, rename, sync the directory) when it has
//! doubled since the last rewrite (and exceeds 256 KiB), and on open,
//! keeping only ids that still have a record in some segment.
//!
//! # Invariants
//! 1. A record is visible to the forwarder, and acknowledged to its device,
//!    only after the write that holds it has been synced.
//! 2. Ids are never reused, across restarts too: on open the next id is
//!    above every id in any segment name, record or ledger entry, and a new
//!    segment is started for it.
//! 3. A segment file is deleted only when every record in it is released,
//!    and never while it is the segment being written (unless a failed write
//!    has retired it).
//! 4. Held packs = records in the segments − ids in the ledger. A lost ledger
//!    entry (crash between a server's ack and the ledger sync) only makes the
//!    pack go to the server once more, and the server's ingest is idempotent.
//! 5. After a failed write or sync the file is truncated back to its length
//!    before the write and the writer moves to a new segment; nothing of that
//!    write is acknowledged.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use apr_wire::ingest::IngestPack;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::fs::{crc32, SpoolFile, SpoolFs, StdFs};
use super::{take_live_first, Spool, SpoolDepth, SpoolError, SpoolHealth, SpoolId};
use crate::config::{SpoolConfig, WhenFull};

const SEGMENT_MAGIC: &[u8; 8] = b"APRSEG\0\x01";
const LEDGER_MAGIC: &[u8; 8] = b"APRLDG\0\x01";
/// Record header bytes.
pub const RECORD_HEADER: usize = 32;
/// Largest record payload accepted on read (a sanity bound: packs are
/// at most 16 KiB of SenML, well under this as JSON).
pub const MAX_RECORD_PAYLOAD: usize = 4 << 20;
const LEDGER_NAME: &str = "ledger.log";
const LEDGER_TMP: &str = "ledger.tmp";
/// The ledger is rewritten once it is larger than this and than twice its
/// size after the last rewrite.
const LEDGER_COMPACT_BYTES: u64 = 256 << 10;
/// Retry interval of a blocked append when nothing else wakes it.
const RETRY: Duration = Duration::from_millis(500);

/// Options of a [`DiskSpool`].
#[derive(Debug, Clone)]
pub struct DiskSpoolOptions {
    /// The spool directory.
    pub dir: PathBuf,
    /// Most bytes on disk (segments and ledger).
    pub max_bytes: u64,
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// What to do when full.
    pub when_full: WhenFull,
}

impl DiskSpoolOptions {
    /// Options as configured in `[spool]` (`dir` must be set).
    pub fn from_config(config: &SpoolConfig) -> DiskSpoolOptions {
        DiskSpoolOptions {
            dir: PathBuf::from(&config.dir),
            max_bytes: config.max_bytes,
            segment_bytes: config.segment_bytes,
            when_full: config.when_full,
        }
    }
}

fn segment_name(first: SpoolId) -> String {
    format!("seg-{first:020}.log")
}

fn parse_segment_name(name: &str) -> Option<SpoolId> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// A held pack: where its record is.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: SpoolId,
    segment: SpoolId,
    /// Offset of the record header in the segment file.
    offset: u64,
    len: u32,
    readings: u32,
    received_ms: i64,
}

impl Entry {
    fn weight(&self) -> u64 {
        u64::from(self.readings.max(1))
    }
    fn record_bytes(&self) -> u64 {
        RECORD_HEADER as u64 + u64::from(self.len)
    }
}

struct Segment {
    path: PathBuf,
    reader: Arc<dyn SpoolFile>,
    bytes: u64,
    /// Held records in it.
    live: u64,
}

struct State {
    segments: BTreeMap<SpoolId, Segment>,
    /// The segment being written.
    active: SpoolId,
    /// A failed write retired the active segment: it may be deleted.
    active_retired: bool,
    waiting: VecDeque<Entry>,
    waiting_weight: u64,
    out: BTreeMap<SpoolId, Entry>,
    held: SpoolDepth,
    disk_bytes: u64,
    reserved: u64,
}

struct Writer {
    file: Box<dyn SpoolFile>,
    segment: SpoolId,
    size: u64,
    next_id: SpoolId,
    /// Start a new segment before the next write (after a failure).
    roll: bool,
}

struct Ledger {
    file: Box<dyn SpoolFile>,
    size: u64,
    /// Its size after the last rewrite.
    base: u64,
}

#[derive(Default)]
struct Counters {
    dropped_packs: AtomicU64,
    dropped_readings: AtomicU64,
    disk_full_errors: AtomicU64,
    storage_errors: AtomicU64,
    corrupt_records: AtomicU64,
    discarded_bytes: AtomicU64,
}

struct Shared {
    fs: Arc<dyn SpoolFs>,
    opts: DiskSpoolOptions,
    writer: Mutex<Writer>,
    state: Mutex<State>,
    ledger: Mutex<Ledger>,
    counters: Counters,
    disk_full: AtomicBool,
    space: Notify,
    appended: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent before anything
    // that can panic, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The id after `id`. Appends never get near 2^64 ids; only a crafted or
/// corrupted file names the last one, and the spool then refuses to open
/// (saying which file) rather than wrap around and reuse ids.
fn id_after(id: SpoolId, named_by: &dyn Fn() -> String) -> Result<SpoolId, SpoolError> {
    id.checked_add(1).ok_or_else(|| {
        SpoolError::Storage(format!(
            "{} names spool id {id}, the last possible one: the spool cannot go on; move its directory aside",
            named_by()
        ))
    })
}

fn storage(context: &str, e: &io::Error) -> SpoolError {
    SpoolError::Storage(format!("{context}: {e}"))
}

/// The durable spool (see the module doc).
#[derive(Clone)]
pub struct DiskSpool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DiskSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskSpool")
            .field("dir", &self.shared.opts.dir)
            .field("depth", &self.depth())
            .finish_non_exhaustive()
    }
}

/// One record found in a segment: its header fields. The payload is the
/// `len` bytes at `offset + RECORD_HEADER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef {
    /// The pack's spool id.
    pub id: SpoolId,
    /// Offset of the record header in the segment.
    pub offset: u64,
    /// Payload length.
    pub len: u32,
    /// Readings in the pack.
    pub readings: u32,
    /// When the gateway received the pack, ms since the Unix epoch.
    pub received_ms: i64,
}

/// What reading a segment's bytes found: the valid records before the first
/// bad one, and what was wrong there (a torn or corrupted tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The valid records, in file order (ids strictly increasing).
    pub records: Vec<RecordRef>,
    /// Length of the valid prefix (header and whole records); the file is
    /// cut back to this on open when `problem` is set.
    pub valid_len: u64,
    /// The largest id among the valid records.
    pub max_id: Option<SpoolId>,
    /// Why the bytes after `valid_len` were not read (`None`: all were).
    pub problem: Option<String>,
}

/// Reads the records of a segment whose name says its first id is `first`,
/// out of the file's bytes, stopping at the first torn, oversized, corrupted
/// or out-of-order record. Pure and total: any bytes give a scan, never a
/// panic (fuzzed in `fuzz/`, target `spool_segment`).
pub fn scan_segment(first: SpoolId, data: &[u8]) -> SegmentScan {
    let mut scan = SegmentScan {
        records: Vec::new(),
        valid_len: 0,
        max_id: None,
        problem: None,
    };
    if data.len() < SEGMENT_MAGIC.len() || &data[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        scan.problem = Some("missing or wrong segment header".into());
        return scan;
    }
    let mut pos = SEGMENT_MAGIC.len();
    let mut prev: Option<SpoolId> = None;
    loop {
        scan.valid_len = pos as u64;
        let rest = data.len() - pos;
        if rest == 0 {
            break;
        }
        if rest < RECORD_HEADER {
            scan.problem = Some(format!("torn record header ({rest} bytes)"));
            break;
        }
        let h = &data[pos..pos + RECORD_HEADER];
        let len = u32::from_le_bytes(h[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(h[4..8].try_into().unwrap_or_default());
        let id = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        let readings = u32::from_le_bytes(h[16..20].try_into().unwrap_or_default());
        let received_ms = i64::from_le_bytes(h[24..32].try_into().unwrap_or_default());
        if len > MAX_RECORD_PAYLOAD {
            scan.problem = Some(format!("record length {len} is impossible"));
            break;
        }
        if rest < RECORD_HEADER + len {
            scan.problem = Some(format!(
                "torn record: {} of {} bytes",
                rest,
                RECORD_HEADER + len
            ));
            break;
        }
        if crc32(&data[pos + 8..pos + RECORD_HEADER + len]) != crc {
            scan.problem = Some("checksum mismatch".into());
            break;
        }
        if id < first || prev.is_some_and(|p| id <= p) {
            scan.problem = Some(format!("record id {id} out of order"));
            break;
        }
        prev = Some(id);
        scan.max_id = Some(id);
        scan.records.push(RecordRef {
            id,
            offset: pos as u64,
            len: len as u32,
            readings,
            received_ms,
        });
        pos += RECORD_HEADER + len;
    }
    scan
}

/// Decodes one whole record (header and payload, as read from its offset)
/// into its pack: the length must match, the checksum must hold and the
/// payload must be an [`IngestPack`]; otherwise an error says which failed.
pub fn decode_record(record: &[u8]) -> Result<IngestPack, String> {
    let Some((header, payload)) = record.split_first_chunk::<RECORD_HEADER>() else {
        return Err(format!("torn record header ({} bytes)", record.len()));
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len != payload.len() {
        return Err(format!(
            "record length {len} but {} payload bytes",
            payload.len()
        ));
    }
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if crc32(&record[8..]) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(payload).map_err(|err| format!("decode: {err}"))
}

/// The packs of a segment's valid records, each with its id: the pack, or
/// why its record does not hold one.
pub type SegmentPacks = Vec<(SpoolId, Result<IngestPack, String>)>;

/// Every pack in a segment's bytes, as the forwarder would read them: the
/// scan (valid prefix and what ended it) and each valid record's pack or why
/// its payload is not one.
pub fn read_segment(first: SpoolId, data: &[u8]) -> (SegmentScan, SegmentPacks) {
    let scan = scan_segment(first, data);
    let packs = scan
        .records
        .iter()
        .map(|r| {
            let start = usize::try_from(r.offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(RECORD_HEADER + r.len as usize);
            let pack = data
                .get(start..end)
                .ok_or_else(|| "record outside the segment".to_string())
                .and_then(decode_record);
            (r.id, pack)
        })
        .collect();
    (scan, packs)
}

/// [`read_segment`] on a segment file (named `seg-{first id}.log`), e.g. to
/// inspect a spool directory offline.
pub fn read_segment_file(path: &Path) -> Result<(SegmentScan, SegmentPacks), SpoolError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let first = parse_segment_name(name).ok_or_else(|| {
        SpoolError::Storage(format!(
            "{} is not a segment file (seg-<first id>.log)",
            path.display()
        ))
    })?;
    let data =
        std::fs::read(path).map_err(|e| storage(&format!("reading {}", path.display()), &e))?;
    Ok(read_segment(first, &data))
}

/// The ids in a ledger's content, the length of its valid prefix, and what
/// was wrong after it. Pure and total like [`scan_segment`].
pub fn scan_ledger(data: &[u8]) -> (Vec<SpoolId>, u64, Option<String>) {
    let mut ids = Vec::new();
    if data.is_empty() {
        return (ids, 0, None);
    }
    if data.len() < LEDGER_MAGIC.len() || &data[..LEDGER_MAGIC.len()] != LEDGER_MAGIC {
        return (ids, 0, Some("missing or wrong ledger header".into()));
    }
    let mut pos = LEDGER_MAGIC.len();
    loop {
        let rest = data.len() - pos;
        if rest == 0 {
            return (ids, pos as u64, None);
        }
        if rest < 8 {
            return (ids, pos as u64, Some("torn ledger record header".into()));
        }
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap_or_default());
        if !len.is_multiple_of(8) || rest < 8 + len {
            return (ids, pos as u64, Some("torn ledger record".into()));
        }
        let body = &data[pos + 8..pos + 8 + len];
        if crc32(body) != crc {
            return (ids, pos as u64, Some("ledger checksum mismatch".into()));
        }
        ids.extend(
            body.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
        );
        pos += 8 + len;
    }
}

fn ledger_record(ids: &[SpoolId]) -> Vec<u8> {
    let mut body = Vec::with_capacity(ids.len() * 8);
    for id in ids {
        body.extend_from_slice(&id.to_le_bytes());
    }
    let mut rec = Vec::with_capacity(8 + body.len());
    rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
    rec.extend_from_slice(&crc32(&body).to_le_bytes());
    rec.extend_from_slice(&body);
    rec
}

/// Appends one record (header and payload) to `buf`.
fn encode_record(buf: &mut Vec<u8>, id: SpoolId, readings: u32, received_ms: i64, payload: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&readings.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&received_ms.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

impl DiskSpool {
    /// Opens (or creates) the spool in `opts.dir` on the real filesystem.
    pub fn open(opts: DiskSpoolOptions) -> Result<DiskSpool, SpoolError> {
        DiskSpool::open_with(Arc::new(StdFs), opts)
    }

    /// Opens a spool as configured in `[spool]`.
    pub fn from_config(config: &SpoolConfig) -> Result<DiskSpool, SpoolError> {
        DiskSpool::open(DiskSpoolOptions::from_config(config))
    }

    /// Opens (or creates) the spool on the given filesystem: recovers the
    /// held packs, truncates torn or corrupted tails (reporting them), and
    /// starts a new segment.
    pub fn open_with(
        fs: Arc<dyn SpoolFs>,
        opts: DiskSpoolOptions,
    ) -> Result<DiskSpool, SpoolError> {
        let mut opts = opts;
        opts.segment_bytes = opts.segment_bytes.max(4096);
        opts.max_bytes = opts.max_bytes.max(2 * opts.segment_bytes);
        let dir = opts.dir.clone();
        fs.create_dir_all(&dir)
            .map_err(|e| storage(&format!("creating {}", dir.display()), &e))?;
        let names = fs
            .list(&dir)
            .map_err(|e| storage(&format!("listing {}", dir.display()), &e))?;
        let counters = Counters::default();
        let mut next_id: SpoolId = 0;
        let mut firsts: Vec<SpoolId> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        firsts.sort_unstable();

        // Segments: every valid record, truncating at the first bad one.
        let mut scans: Vec<(SpoolId, SegmentScan)> = Vec::new();
        for first in firsts {
            let path = dir.join(segment_name(first));
            let data = fs
                .read(&path)
                .map_err(|e| storage(&format!("reading {}", path.display()), &e))?;
            let scan = scan_segment(first, &data);
            let named_by = || format!("segment {}", path.display());
            next_id = next_id.max(id_after(first, &named_by)?);
            if let Some(max) = scan.max_id {
                next_id = next_id.max(id_after(max, &named_by)?);
            }
            if let Some(problem) = &scan.problem {
                let discarded = data.len() as u64 - scan.valid_len;
                counters.corrupt_records.fetch_add(1, Relaxed);
                counters.discarded_bytes.fetch_add(discarded, Relaxed);
                error!(
                    segment = %path.display(),
                    offset = scan.valid_len,
                    kept = scan.records.len(),
                    discarded_bytes = discarded,
                    %problem,
                    "spool: torn or corrupted record; keeping the records before it"
                );
                let mut f = fs
                    .open(&path)
                    .map_err(|e| storage(&format!("opening {}", path.display()), &e))?;
                let keep = scan.valid_len.max(SEGMENT_MAGIC.len() as u64);
                if scan.valid_len < SEGMENT_MAGIC.len() as u64 {
                    // No usable header: rewrite it so the file stays a segment.
                    f.truncate(0)
                        .and_then(|()| f.append(SEGMENT_MAGIC))
                        .and_then(|()| f.sync())
                        .map_err(|e| storage(&format!("repairing {}", path.display()), &e))?;
                } else {
                    f.truncate(keep)
                        .and_then(|()| f.sync())
                        .map_err(|e| storage(&format!("truncating {}", path.display()), &e))?;
                }
            }
            scans.push((first, scan));
        }

        // Ledger: released ids.
        let ledger_path = dir.join(LEDGER_NAME);
        let _ = fs.remove(&dir.join(LEDGER_TMP));
        let ledger_data = if names.iter().any(|n| n == LEDGER_NAME) {
            fs.read(&ledger_path)
                .map_err(|e| storage("reading the ledger", &e))?
        } else {
            Vec::new()
        };
        let (released_ids, ledger_valid, ledger_problem) = scan_ledger(&ledger_data);
        if let Some(problem) = ledger_problem {
            counters.corrupt_records.fetch_add(1, Relaxed);
            counters
                .discarded_bytes
                .fetch_add(ledger_data.len() as u64 - ledger_valid, Relaxed);
            warn!(%problem, offset = ledger_valid, "spool ledger: torn or corrupted tail; the packs it named will be forwarded again (the server drops duplicates)");
        }
        if let Some(&max) = released_ids.iter().max() {
            next_id = next_id.max(id_after(max, &|| {
                format!("the ledger {}", ledger_path.display())
            })?);
        }
        let released: HashSet<SpoolId> = released_ids.into_iter().collect();

        // The index of held packs; fully released segments go.
        let mut state = State {
            segments: BTreeMap::new(),
            active: next_id,
            active_retired: false,
            waiting: VecDeque::new(),
            waiting_weight: 0,
            out: BTreeMap::new(),
            held: SpoolDepth::default(),
            disk_bytes: 0,
            reserved: 0,
        };
        let mut still_released: Vec<SpoolId> = Vec::new();
        let mut removed_any = false;
        for (first, scan) in scans {
            let path = dir.join(segment_name(first));
            let mut live = 0;
            for r in scan.records {
                let e = Entry {
                    id: r.id,
                    segment: first,
                    offset: r.offset,
                    len: r.len,
                    readings: r.readings,
                    received_ms: r.received_ms,
                };
                if released.contains(&e.id) {
                    still_released.push(e.id);
                    continue;
                }
                live += 1;
                state.held.packs += 1;
                state.held.readings += u64::from(e.readings);
                state.held.bytes += e.record_bytes();
                state.waiting_weight += e.weight();
                state.waiting.push_back(e);
            }
            if live == 0 {
                fs.remove(&path)
                    .map_err(|e| storage(&format!("removing {}", path.display()), &e))?;
                removed_any = true;
                still_released.retain(|id| *id < first);
                continue;
            }
            let bytes = scan.valid_len.max(SEGMENT_MAGIC.len() as u64);
            let reader: Arc<dyn SpoolFile> = Arc::from(
                fs.open(&path)
                    .map_err(|e| storage(&format!("opening {}", path.display()), &e))?,
            );
            state.disk_bytes += bytes;
            state.segments.insert(
                first,
                Segment {
                    path,
                    reader,
                    bytes,
                    live,
                },
            );
        }
        if removed_any {
            fs.sync_dir(&dir)
                .map_err(|e| storage("syncing the spool directory", &e))?;
        }

        // A fresh ledger with only the ids that still matter.
        let ledger = write_ledger(fs.as_ref(), &dir, &still_released)?;
        state.disk_bytes += ledger.size;

        // A new segment to write.
        let (file, size) = create_segment(fs.as_ref(), &dir, next_id)?;
        let reader: Arc<dyn SpoolFile> = Arc::from(
            fs.open(&dir.join(segment_name(next_id)))
                .map_err(|e| storage("opening the new segment", &e))?,
        );
        state.disk_bytes += size;
        state.segments.insert(
            next_id,
            Segment {
                path: dir.join(segment_name(next_id)),
                reader,
                bytes: size,
                live: 0,
            },
        );
        if state.held.packs > 0 {
            info!(
                dir = %dir.display(),
                packs = state.held.packs,
                readings = state.held.readings,
                "spool reopened with packs to forward"
            );
        }
        let writer = Writer {
            file,
            segment: next_id,
            size,
            next_id,
            roll: false,
        };
        Ok(DiskSpool {
            shared: Arc::new(Shared {
                fs,
                opts,
                writer: Mutex::new(writer),
                state: Mutex::new(state),
                ledger: Mutex::new(ledger),
                counters,
                disk_full: AtomicBool::new(false),
                space: Notify::new(),
                appended: Notify::new(),
            }),
        })
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.opts.dir
    }
}

fn create_segment(
    fs: &dyn SpoolFs,
    dir: &Path,
    first: SpoolId,
) -> Result<(Box<dyn SpoolFile>, u64), SpoolError> {
    let path = dir.join(segment_name(first));
    let made = (|| {
        let mut f = fs.open(&path)?;
        f.truncate(0)?;
        f.append(SEGMENT_MAGIC)?;
        f.sync()?;
        fs.sync_dir(dir)?;
        Ok::<_, io::Error>(f)
    })();
    match made {
        Ok(f) => Ok((f, SEGMENT_MAGIC.len() as u64)),
        Err(e) => {
            let _ = fs.remove(&path);
            Err(SpoolError::Io(e))
        }
    }
}

fn write_ledger(fs: &dyn SpoolFs, dir: &Path, ids: &[SpoolId]) -> Result<Ledger, SpoolError> {
    let tmp = dir.join(LEDGER_TMP);
    let path = dir.join(LEDGER_NAME);
    let mut content = LEDGER_MAGIC.to_vec();
    if !ids.is_empty() {
        content.extend_from_slice(&ledger_record(ids));
    }
    let written = (|| {
        let mut f = fs.open(&tmp)?;
        f.truncate(0)?;
        f.append(&content)?;
        f.sync()?;
        fs.rename(&tmp, &path)?;
        fs.sync_dir(dir)?;
        fs.open(&path)
    })();
    match written {
        Ok(file) => Ok(Ledger {
            file,
            size: content.len() as u64,
            base: content.len() as u64,
        }),
        Err(e) => {
            let _ = fs.remove(&tmp);
            Err(SpoolError::Io(e))
        }
    }
}

impl Shared {
    fn fits(&self, state: &State, bytes: u64) -> bool {
        state.held.packs == 0 || state.disk_bytes + state.reserved + bytes <= self.opts.max_bytes
    }

    /// Removes a held entry (released or dropped) from the index and deletes
    /// its segment once empty. Returns whether space was freed.
    fn forget(&self, state: &mut State, e: &Entry) -> bool {
        state.held.packs -= 1;
        state.held.readings -= u64::from(e.readings);
        state.held.bytes -= e.record_bytes();
        let Some(seg) = state.segments.get_mut(&e.segment) else {
            return false;
        };
        seg.live -= 1;
        if seg.live == 0 && (e.segment != state.active || state.active_retired) {
            self.delete_segment(state, e.segment)
        } else {
            false
        }
    }

    fn delete_segment(&self, state: &mut State, first: SpoolId) -> bool {
        let Some(seg) = state.segments.remove(&first) else {
            return false;
        };
        if let Err(e) = self.fs.remove(&seg.path) {
            self.counters.storage_errors.fetch_add(1, Relaxed);
            error!(segment = %seg.path.display(), error = %e, "spool: cannot delete a released segment");
        }
        state.disk_bytes -= seg.bytes;
        true
    }

    /// Drops the oldest waiting packs until a segment is freed (or none is
    /// waiting), counting them; returns the dropped ids for the ledger.
    /// Packs being forwarded are not dropped: the server may store them at
    /// any moment, and a dropped reading must never also be stored.
    fn drop_oldest(&self, state: &mut State) -> Vec<SpoolId> {
        let mut dropped = Vec::new();
        while let Some(e) = state.waiting.pop_front() {
            state.waiting_weight -= e.weight();
            self.counters.dropped_packs.fetch_add(1, Relaxed);
            self.counters
                .dropped_readings
                .fetch_add(u64::from(e.readings), Relaxed);
            dropped.push(e.id);
            if self.forget(state, &e) {
                break;
            }
        }
        if !dropped.is_empty() {
            warn!(
                packs = dropped.len(),
                held_packs = state.held.packs,
                "spool full (when_full = drop_oldest): dropped the oldest packs"
            );
        }
        dropped
    }

    /// Appends released ids to the ledger (synced). Failures are reported,
    /// not returned: the packs are forgotten in memory anyway, and at worst
    /// go to the server once more after a restart.
    fn record_released(&self, ids: &[SpoolId]) {
        if ids.is_empty() {
            return;
        }
        let mut ledger = lock(&self.ledger);
        let rec = ledger_record(ids);
        let result = ledger.file.append(&rec).and_then(|()| ledger.file.sync());
        match result {
            Ok(()) => {
                ledger.size += rec.len() as u64;
                lock(&self.state).disk_bytes += rec.len() as u64;
            }
            Err(e) => {
                let len = ledger.size;
                let _ = ledger.file.truncate(len);
                self.report_io("writing the ledger", &e);
                return;
            }
        }
        let limit = LEDGER_COMPACT_BYTES.max(2 * ledger.base);
        if ledger.size > limit {
            self.compact_ledger(&mut ledger);
        }
    }

    /// Rewrites the ledger with the released ids that still have a record.
    fn compact_ledger(&self, ledger: &mut Ledger) {
        let dir = &self.opts.dir;
        let data = match self.fs.read(&dir.join(LEDGER_NAME)) {
            Ok(d) => d,
            Err(e) => return self.report_io("reading the ledger", &e),
        };
        let (ids, _, _) = scan_ledger(&data);
        let keep: Vec<SpoolId> = {
            let state = lock(&self.state);
            let oldest = state
                .segments
                .keys()
                .next()
                .copied()
                .unwrap_or(SpoolId::MAX);
            ids.into_iter().filter(|id| *id >= oldest).collect()
        };
        match write_ledger(self.fs.as_ref(), dir, &keep) {
            Ok(new) => {
                let mut state = lock(&self.state);
                state.disk_bytes = state.disk_bytes - ledger.size + new.size;
                *ledger = new;
                drop(state);
                self.space.notify_waiters();
            }
            Err(SpoolError::Io(e)) => self.report_io("rewriting the ledger", &e),
            Err(e) => warn!(error = %e, "spool: cannot rewrite the ledger"),
        }
    }

    fn report_io(&self, context: &str, e: &io::Error) {
        if e.kind() == io::ErrorKind::StorageFull {
            self.counters.disk_full_errors.fetch_add(1, Relaxed);
            if !self.disk_full.swap(true, Relaxed) {
                error!(dir = %self.opts.dir.display(), "spool: the disk is full ({context}); applying the when_full policy");
            }
        } else {
            self.counters.storage_errors.fetch_add(1, Relaxed);
            error!(dir = %self.opts.dir.display(), error = %e, "spool: {context} failed");
        }
    }

    /// Writes and syncs one group of encoded records; registers them.
    fn commit(&self, packs: &[(u32, i64, Vec<u8>)], total: u64) -> io::Result<Vec<SpoolId>> {
        let mut w = lock(&self.writer);
        if w.roll
            || (w.size > SEGMENT_MAGIC.len() as u64 && w.size + total > self.opts.segment_bytes)
        {
            let first = w.next_id;
            let (file, size) = match create_segment(self.fs.as_ref(), &self.opts.dir, first) {
                Ok(made) => made,
                Err(SpoolError::Io(e)) => return Err(e),
                Err(e) => return Err(io::Error::other(e.to_string())),
            };
            let path = self.opts.dir.join(segment_name(first));
            let reader: Arc<dyn SpoolFile> = Arc::from(self.fs.open(&path)?);
            let mut state = lock(&self.state);
            let old = state.active;
            // A retired segment that never got a record has the same first
            // id as its successor: the file was just recreated in its place.
            if old != first && state.segments.get(&old).is_some_and(|s| s.live == 0) {
                self.delete_segment(&mut state, old);
            }
            if let Some(replaced) = state.segments.remove(&first) {
                state.disk_bytes -= replaced.bytes;
            }
            state.active = first;
            state.active_retired = false;
            state.disk_bytes += size;
            state.segments.insert(
                first,
                Segment {
                    path,
                    reader,
                    bytes: size,
                    live: 0,
                },
            );
            drop(state);
            w.file = file;
            w.segment = first;
            w.size = size;
            w.roll = false;
        }
        let mut buf = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        let first_id = w.next_id;
        let mut entries = Vec::with_capacity(packs.len());
        for (i, (readings, received_ms, payload)) in packs.iter().enumerate() {
            let id = first_id + i as u64;
            let offset = w.size + buf.len() as u64;
            encode_record(&mut buf, id, *readings, *received_ms, payload);
            entries.push(Entry {
                id,
                segment: w.segment,
                offset,
                len: payload.len() as u32,
                readings: *readings,
                received_ms: *received_ms,
            });
        }
        let before = w.size;
        if let Err(e) = w.file.append(&buf).and_then(|()| w.file.sync()) {
            // Cut the failed write off; it is not acknowledged, and the next
            // write goes to a new segment.
            let _ = w.file.truncate(before).and_then(|()| w.file.sync());
            w.roll = true;
            lock(&self.state).active_retired = true;
            return Err(e);
        }
        w.size += buf.len() as u64;
        w.next_id += packs.len() as u64;
        let ids = entries.iter().map(|e| e.id).collect();
        let mut state = lock(&self.state);
        let segment = w.segment;
        drop(w);
        if let Some(seg) = state.segments.get_mut(&segment) {
            seg.live += entries.len() as u64;
            seg.bytes += buf.len() as u64;
        }
        state.disk_bytes += buf.len() as u64;
        for e in entries {
            state.held.packs += 1;
            state.held.readings += u64::from(e.readings);
            state.held.bytes += e.record_bytes();
            state.waiting_weight += e.weight();
            state.waiting.push_back(e);
        }
        Ok(ids)
    }

    fn read_pack(&self, reader: &dyn SpoolFile, e: &Entry) -> Result<IngestPack, String> {
        let mut buf = vec![0u8; RECORD_HEADER + e.len as usize];
        reader
            .read_at(&mut buf, e.offset)
            .map_err(|err| format!("read: {err}"))?;
        decode_record(&buf)
    }
}

impl DiskSpool {
    /// Commits one chunk of encoded records, applying the `when_full`
    /// policy until it is on disk.
    async fn append_group(
        &self,
        encoded: Vec<(u32, i64, Vec<u8>)>,
        total: u64,
    ) -> Result<Vec<SpoolId>, SpoolError> {
        let s = &self.shared;
        let encoded = Arc::new(encoded);
        loop {
            // Room within max_bytes (reserved until the write is done).
            loop {
                let space = s.space.notified();
                tokio::pin!(space);
                space.as_mut().enable();
                let dropped = {
                    let mut state = lock(&s.state);
                    if s.fits(&state, total) {
                        state.reserved += total;
                        break;
                    }
                    match s.opts.when_full {
                        WhenFull::DropOldest => s.drop_oldest(&mut state),
                        WhenFull::Block => Vec::new(),
                    }
                };
                if dropped.is_empty() {
                    let _ = tokio::time::timeout(RETRY, space).await;
                } else {
                    let shared = self.shared.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || shared.record_released(&dropped)).await;
                }
            }
            let shared = self.shared.clone();
            let group = encoded.clone();
            let committed = tokio::task::spawn_blocking(move || shared.commit(&group, total))
                .await
                .map_err(|e| SpoolError::Storage(format!("spool writer: {e}")))?;
            lock(&s.state).reserved -= total;
            match committed {
                Ok(ids) => {
                    if s.disk_full.swap(false, Relaxed) {
                        info!("spool: writing again after the disk was full");
                    }
                    s.appended.notify_one();
                    return Ok(ids);
                }
                Err(e) => {
                    s.report_io("writing packs", &e);
                    let dropped = match s.opts.when_full {
                        WhenFull::DropOldest if e.kind() == io::ErrorKind::StorageFull => {
                            s.drop_oldest(&mut lock(&s.state))
                        }
                        _ => Vec::new(),
                    };
                    if dropped.is_empty() {
                        // Block: wait for a release to free a segment.
                        let space = s.space.notified();
                        let _ = tokio::time::timeout(RETRY, space).await;
                    } else {
                        let shared = self.shared.clone();
                        let _ =
                            tokio::task::spawn_blocking(move || shared.record_released(&dropped))
                                .await;
                    }
                }
            }
        }
    }
}

impl Spool for DiskSpool {
    async fn append(&self, pack: IngestPack) -> Result<SpoolId, SpoolError> {
        let ids = self.append_batch(vec![pack]).await?;
        ids.into_iter().next().ok_or(SpoolError::Closed)
    }

    async fn append_batch(&self, packs: Vec<IngestPack>) -> Result<Vec<SpoolId>, SpoolError> {
        if packs.is_empty() {
            return Ok(Vec::new());
        }
        // Groups are committed in chunks of at most half a segment, so that a
        // large group still gets in piece by piece on a nearly full disk.
        let budget = (self.shared.opts.segment_bytes / 2).max(1);
        let mut ids = Vec::with_capacity(packs.len());
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0u64;
        for p in &packs {
            let payload = serde_json::to_vec(p).map_err(|e| SpoolError::Storage(e.to_string()))?;
            let bytes = (RECORD_HEADER + payload.len()) as u64;
            if !chunk.is_empty() && chunk_bytes + bytes > budget {
                ids.extend(
                    self.append_group(std::mem::take(&mut chunk), chunk_bytes)
                        .await?,
                );
                chunk_bytes = 0;
            }
            chunk_bytes += bytes;
            chunk.push((p.readings.len() as u32, p.received_ms, payload));
        }
        ids.extend(self.append_group(chunk, chunk_bytes).await?);
        Ok(ids)
    }
    async fn next_batch(
        &self,
        max_readings: usize,
    ) -> Result<Vec<(SpoolId, IngestPack)>, SpoolError> {
        let picked: Vec<(Entry, Arc<dyn SpoolFile>)> = {
            let mut state = lock(&self.shared.state);
            let taken = take_live_first(&mut state.waiting, max_readings as u64, Entry::weight);
            let mut picked = Vec::with_capacity(taken.len());
            for e in taken {
                state.waiting_weight -= e.weight();
                state.out.insert(e.id, e);
                if let Some(seg) = state.segments.get(&e.segment) {
                    picked.push((e, seg.reader.clone()));
                }
            }
            picked
        };
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut batch = Vec::with_capacity(picked.len());
            let mut lost = Vec::new();
            for (e, reader) in picked {
                match shared.read_pack(reader.as_ref(), &e) {
                    Ok(p) => batch.push((e.id, p)),
                    Err(problem) => {
                        shared.counters.corrupt_records.fetch_add(1, Relaxed);
                        shared.counters.dropped_packs.fetch_add(1, Relaxed);
                        shared
                            .counters
                            .dropped_readings
                            .fetch_add(u64::from(e.readings), Relaxed);
                        error!(id = e.id, segment = e.segment, %problem, "spool: a held pack cannot be read back; dropped");
                        lost.push(e.id);
                    }
                }
            }
            if !lost.is_empty() {
                let mut state = lock(&shared.state);
                for id in &lost {
                    if let Some(e) = state.out.remove(id) {
                        shared.forget(&mut state, &e);
                    }
                }
                drop(state);
                shared.record_released(&lost);
            }
            batch
        })
        .await
        .map_err(|e| SpoolError::Storage(format!("spool reader: {e}")))
    }

    async fn release(&self, ids: &[SpoolId]) -> Result<(), SpoolError> {
        let released: Vec<SpoolId> = {
            let s = &self.shared;
            let mut state = lock(&s.state);
            let mut released = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(e) = state.out.remove(id) {
                    s.forget(&mut state, &e);
                    released.push(*id);
                }
            }
            released
        };
        if !released.is_empty() {
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || shared.record_released(&released))
                .await
                .map_err(|e| SpoolError::Storage(format!("spool ledger: {e}")))?;
        }
        self.shared.space.notify_waiters();
        Ok(())
    }

    fn waiting_readings(&self) -> u64 {
        lock(&self.shared.state).waiting_weight
    }

    fn appended(&self) -> impl Future<Output = ()> + Send {
        self.shared.appended.notified()
    }

    fn depth(&self) -> SpoolDepth {
        lock(&self.shared.state).held
    }

    fn durable(&self) -> bool {
        true
    }

    fn health(&self) -> SpoolHealth {
        let s = &self.shared;
        let state = lock(&s.state);
        let oldest = match (state.waiting.front(), state.out.first_key_value()) {
            (Some(w), Some((_, o))) => Some(if w.id < o.id { w } else { o }),
            (Some(w), None) => Some(w),
            (None, Some((_, o))) => Some(o),
            (None, None) => None,
        };
        SpoolHealth {
            durable: true,
            disk_bytes: state.disk_bytes,
            max_bytes: s.opts.max_bytes,
            oldest_received_ms: oldest.map(|e| e.received_ms),
            dropped_packs: s.counters.dropped_packs.load(Relaxed),
            dropped_readings: s.counters.dropped_readings.load(Relaxed),
            disk_full: s.disk_full.load(Relaxed),
            disk_full_errors: s.counters.disk_full_errors.load(Relaxed),
            storage_errors: s.counters.storage_errors.load(Relaxed),
            corrupt_records: s.counters.corrupt_records.load(Relaxed),
            discarded_bytes: s.counters.discarded_bytes.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(device: &str) -> IngestPack {
        IngestPack {
            apr: "a1".into(),
            device: device.into(),
            bt: Some(1.0),
            received_ms: 5,
            readings: vec![],
            refusals: vec![],
            raw: None,
        }
    }

    fn segment(first: SpoolId, packs: &[IngestPack]) -> Vec<u8> {
        let mut data = SEGMENT_MAGIC.to_vec();
        for (i, p) in packs.iter().enumerate() {
            let payload = serde_json::to_vec(p).unwrap();
            encode_record(&mut data, first + i as u64, 0, 5, &payload);
        }
        data
    }

    #[test]
    fn a_whole_segment_reads_back_every_pack() {
        let data = segment(7, &[pack("d1"), pack("d2")]);
        let (scan, packs) = read_segment(7, &data);
        assert_eq!(scan.problem, None);
        assert_eq!(scan.valid_len, data.len() as u64);
        assert_eq!(scan.max_id, Some(8));
        let got: Vec<_> = packs.into_iter().map(|(id, p)| (id, p.unwrap())).collect();
        assert_eq!(got, [(7, pack("d1")), (8, pack("d2"))]);
    }

    #[test]
    fn a_torn_or_corrupted_tail_is_reported_and_the_records_before_it_kept() {
        let data = segment(0, &[pack("d1"), pack("d2")]);
        let first_end = scan_segment(0, &data).records[1].offset as usize;
        for cut in [first_end + 1, first_end + RECORD_HEADER, data.len() - 1] {
            let (scan, packs) = read_segment(0, &data[..cut]);
            assert!(
                scan.problem.as_deref().unwrap().contains("torn"),
                "{scan:?}"
            );
            assert_eq!(scan.valid_len, first_end as u64);
            assert_eq!(packs.len(), 1);
        }
        let mut bad = data.clone();
        *bad.last_mut().unwrap() ^= 1;
        let scan = scan_segment(0, &bad);
        assert_eq!(scan.problem.as_deref(), Some("checksum mismatch"));
        assert_eq!(scan.records.len(), 1);
        let scan = scan_segment(1, &data);
        assert!(scan.problem.unwrap().contains("out of order"));
        let scan = scan_segment(0, b"APRSEG");
        assert_eq!(scan.valid_len, 0);
        assert!(scan.problem.unwrap().contains("header"));
    }

    #[test]
    fn a_record_whose_payload_is_not_a_pack_is_an_error_for_that_record() {
        let mut data = SEGMENT_MAGIC.to_vec();
        encode_record(&mut data, 0, 0, 0, b"{\"apr\":1}");
        let (scan, packs) = read_segment(0, &data);
        assert_eq!(scan.problem, None);
        assert!(packs[0].1.as_ref().unwrap_err().starts_with("decode"));
        assert!(decode_record(&data[8..20]).unwrap_err().contains("torn"));
        assert!(decode_record(&data[8..data.len() - 1])
            .unwrap_err()
            .contains("length"));
    }
}
