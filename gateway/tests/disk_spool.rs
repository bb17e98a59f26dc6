//! The durable spool: a model-based property test against a plain in-memory
//! model (append, next batch, release, crash, reopen), torn and corrupted
//! records, and a full disk under both `when_full` policies.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use apr_gateway::config::WhenFull;
use apr_gateway::spool::fs::{MemFs, SpoolFs, StdFs};
use apr_gateway::spool::{take_live_first, DiskSpool, DiskSpoolOptions, Spool, SpoolId};
use apr_wire::ingest::IngestPack;
use apr_wire::validate::Reading;
use apr_wire::Metric;
use proptest::prelude::*;

fn pack(n: u64, readings: usize) -> IngestPack {
    IngestPack {
        apr: "a1".into(),
        device: format!("d{}", n % 3),
        bt: Some(1_764_064_800.0 + n as f64),
        received_ms: 1_764_064_800_000 + n as i64,
        readings: (0..readings)
            .map(|i| Reading {
                metric: Metric::Chlorine,
                t_ms: i as i64 * 1000,
                value: 0.1 * (n % 50) as f64 + i as f64 / 100.0,
            })
            .collect(),
        refusals: vec![],
        raw: None,
    }
}

fn opts(dir: &Path, max_bytes: u64, when_full: WhenFull) -> DiskSpoolOptions {
    DiskSpoolOptions {
        dir: dir.to_path_buf(),
        max_bytes,
        segment_bytes: 4096,
        when_full,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn segments(fs: &dyn SpoolFs, dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs
        .list(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("seg-"))
        .map(|n| dir.join(n))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- model

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    NextBatch(usize),
    Release(Vec<usize>),
    ReleaseUnknown,
    /// Power cut while a write was in flight: `garbage` bytes reach the
    /// newest segment unsynced, and the cut keeps `keep`/255 of them.
    Crash {
        garbage: usize,
        keep: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0usize..6, 1..5).prop_map(Op::Append),
        3 => (1usize..25).prop_map(Op::NextBatch),
        3 => prop::collection::vec(0usize..64, 0..6).prop_map(Op::Release),
        1 => Just(Op::ReleaseUnknown),
        1 => (0usize..80, any::<u8>()).prop_map(|(garbage, keep)| Op::Crash { garbage, keep }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    held: BTreeMap<SpoolId, IngestPack>,
    waiting: BTreeSet<SpoolId>,
    out: Vec<SpoolId>,
    max_id: Option<SpoolId>,
}

fn weight(p: &IngestPack) -> u64 {
    p.readings.len().max(1) as u64
}

fn check_depth(spool: &DiskSpool, model: &Model) {
    let d = spool.depth();
    assert_eq!(d.packs, model.held.len() as u64, "held packs");
    assert_eq!(
        d.readings,
        model
            .held
            .values()
            .map(|p| p.readings.len() as u64)
            .sum::<u64>(),
        "held readings"
    );
    assert_eq!(
        spool.waiting_readings(),
        model
            .waiting
            .iter()
            .map(|id| weight(&model.held[id]))
            .sum::<u64>(),
        "waiting readings"
    );
}

fn run_model(ops: Vec<Op>) {
    let rt = rt();
    let fs = MemFs::new();
    let dir = PathBuf::from("/spool");
    let open = |fs: &MemFs| {
        DiskSpool::open_with(Arc::new(fs.clone()), opts(&dir, 1 << 30, WhenFull::Block)).unwrap()
    };
    let mut spool = open(&fs);
    let mut model = Model::default();
    let mut n = 0u64;
    let spool = rt.block_on(async {
        for op in ops {
            match op {
                Op::Append(sizes) => {
                    let packs: Vec<IngestPack> = sizes
                        .iter()
                        .map(|r| {
                            n += 1;
                            pack(n, *r)
                        })
                        .collect();
                    let ids = spool.append_batch(packs.clone()).await.unwrap();
                    assert_eq!(ids.len(), packs.len());
                    for (id, p) in ids.into_iter().zip(packs) {
                        assert!(model.max_id.is_none_or(|m| id > m), "ids are never reused");
                        model.max_id = Some(id);
                        model.held.insert(id, p);
                        model.waiting.insert(id);
                    }
                }
                Op::NextBatch(max) => {
                    let mut q: VecDeque<SpoolId> = model.waiting.iter().copied().collect();
                    let expected =
                        take_live_first(&mut q, max as u64, |id| weight(&model.held[id]));
                    let got = spool.next_batch(max).await.unwrap();
                    let got_ids: Vec<SpoolId> = got.iter().map(|(id, _)| *id).collect();
                    assert_eq!(got_ids, expected, "live first, in id order");
                    for (id, p) in got {
                        assert_eq!(p, model.held[&id], "pack {id} reads back as written");
                        model.waiting.remove(&id);
                        model.out.push(id);
                    }
                }
                Op::Release(picks) => {
                    if model.out.is_empty() {
                        continue;
                    }
                    let mut ids: Vec<SpoolId> = picks
                        .iter()
                        .map(|i| model.out[i % model.out.len()])
                        .collect();
                    ids.dedup();
                    spool.release(&ids).await.unwrap();
                    for id in ids {
                        model.out.retain(|o| *o != id);
                        model.held.remove(&id);
                    }
                }
                Op::ReleaseUnknown => {
                    spool.release(&[u64::MAX - 1]).await.unwrap();
                    // A waiting (not handed out) pack is not released either.
                    if let Some(w) = model.waiting.iter().next().copied() {
                        spool.release(&[w]).await.unwrap();
                    }
                }
                Op::Crash { garbage, keep } => {
                    drop(spool);
                    if let Some(last) = segments(&fs, &dir).last() {
                        let mut f = fs.open(last).unwrap();
                        f.append(&vec![0xA5; garbage]).unwrap();
                    }
                    fs.crash(|_, unsynced| unsynced * keep as usize / 255);
                    spool = open(&fs);
                    model.waiting.extend(model.out.drain(..));
                }
                Op::Reopen => {
                    drop(spool);
                    spool = open(&fs);
                    model.waiting.extend(model.out.drain(..));
                }
            }
            check_depth(&spool, &model);
        }
        // Everything held reads back, and after a drain nothing is left on
        // disk but the empty segment being written and the ledger.
        let mut seen = BTreeMap::new();
        loop {
            let b = spool.next_batch(1000).await.unwrap();
            if b.is_empty() {
                break;
            }
            let ids: Vec<SpoolId> = b.iter().map(|(id, _)| *id).collect();
            seen.extend(b);
            spool.release(&ids).await.unwrap();
        }
        for id in &model.out {
            seen.insert(*id, model.held[id].clone());
        }
        assert_eq!(seen, model.held);
        spool
    });
    drop(spool);
    let spool = open(&fs);
    assert_eq!(spool.depth().packs, model.out.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_disk_spool_behaves_like_the_model_through_crashes_and_reopens(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        run_model(ops);
    }
}

// ------------------------------------------------------- torn and corrupt

/// Ten packs in one segment on the real filesystem; returns the segment.
fn ten_packs(dir: &Path) -> PathBuf {
    let rt = rt();
    let s = DiskSpool::open(opts(dir, 1 << 30, WhenFull::Block)).unwrap();
    rt.block_on(async {
        let packs: Vec<_> = (0..10).map(|i| pack(i, 3)).collect();
        s.append_batch(packs).await.unwrap();
    });
    let segs = segments(&StdFs, dir);
    let seg = segs
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().len() > 8)
        .unwrap();
    drop(s);
    seg
}

fn reopen_and_read(dir: &Path) -> (DiskSpool, Vec<IngestPack>) {
    let rt = rt();
    let s = DiskSpool::open(opts(dir, 1 << 30, WhenFull::Block)).unwrap();
    let packs = rt
        .block_on(s.next_batch(10_000))
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    (s, packs)
}

#[test]
fn a_torn_tail_record_is_detected_reported_and_the_records_before_it_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ten_packs(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);
    let (s, packs) = reopen_and_read(dir.path());
    assert_eq!(packs, (0..9).map(|i| pack(i, 3)).collect::<Vec<_>>());
    let h = s.health();
    assert_eq!(h.corrupt_records, 1);
    assert!(h.discarded_bytes > 0);
    // The tail was cut off: a second reopen finds nothing wrong.
    drop(s);
    let (s, packs) = reopen_and_read(dir.path());
    assert_eq!(packs.len(), 9);
    assert_eq!(s.health().corrupt_records, 0);
}

#[test]
fn a_flipped_byte_is_detected_and_the_records_before_it_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ten_packs(dir.path());
    let mut data = std::fs::read(&seg).unwrap();
    // Somewhere in the last record's payload.
    let at = data.len() - 20;
    data[at] ^= 0x40;
    std::fs::write(&seg, &data).unwrap();
    let (s, packs) = reopen_and_read(dir.path());
    assert_eq!(packs, (0..9).map(|i| pack(i, 3)).collect::<Vec<_>>());
    assert_eq!(s.health().corrupt_records, 1);

    // A flipped byte in the header of the fourth record keeps the first three.
    let dir = tempfile::tempdir().unwrap();
    let seg = ten_packs(dir.path());
    let mut data = std::fs::read(&seg).unwrap();
    let mut pos = 8usize;
    for _ in 0..3 {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 32 + len;
    }
    data[pos + 10] ^= 0x01; // inside the id
    std::fs::write(&seg, &data).unwrap();
    let (s, packs) = reopen_and_read(dir.path());
    assert_eq!(packs, (0..3).map(|i| pack(i, 3)).collect::<Vec<_>>());
    assert_eq!(s.health().corrupt_records, 1);
}

#[test]
fn a_torn_ledger_tail_only_brings_back_the_packs_it_named() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = DiskSpool::open(opts(dir.path(), 1 << 30, WhenFull::Block)).unwrap();
    rt.block_on(async {
        s.append_batch((0..10).map(|i| pack(i, 2)).collect())
            .await
            .unwrap();
        let b = s.next_batch(6).await.unwrap(); // the newest three
        let ids: Vec<_> = b.iter().map(|(id, _)| *id).collect();
        s.release(&ids[..1]).await.unwrap();
        s.release(&ids[1..]).await.unwrap();
    });
    drop(s);
    let ledger = dir.path().join("ledger.log");
    let len = std::fs::metadata(&ledger).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&ledger)
        .unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let (s, packs) = reopen_and_read(dir.path());
    // The second release record is torn: its two packs come back.
    assert_eq!(packs.len(), 9);
    assert_eq!(s.health().corrupt_records, 1);
}

// ------------------------------------------------------------ full disk

#[test]
fn a_full_disk_with_drop_oldest_drops_and_counts_the_oldest_and_never_corrupts() {
    let rt = rt();
    let fs = MemFs::new();
    fs.set_capacity(Some(24 * 1024));
    let dir = PathBuf::from("/spool");
    let s = DiskSpool::open_with(
        Arc::new(fs.clone()),
        opts(&dir, 1 << 30, WhenFull::DropOldest),
    )
    .unwrap();
    let mut appended = 0u64;
    rt.block_on(async {
        for i in 0..400u64 {
            let p = pack(i, 4);
            appended += p.readings.len() as u64;
            tokio::time::timeout(Duration::from_secs(5), s.append(p))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "drop_oldest never blocks: {i} {:?} {:?} used {}",
                        s.health(),
                        s.depth(),
                        fs.used()
                    )
                })
                .unwrap();
        }
    });
    let h = s.health();
    assert!(h.disk_full_errors > 0, "{h:?}");
    assert!(h.dropped_readings > 0);
    assert_eq!(h.dropped_readings + s.depth().readings, appended);
    assert!(fs.used() <= 24 * 1024);
    // What is held is intact after a reopen, and the newest packs are there.
    let held = s.depth();
    drop(s);
    fs.set_capacity(None);
    let s = DiskSpool::open_with(
        Arc::new(fs.clone()),
        opts(&dir, 1 << 30, WhenFull::DropOldest),
    )
    .unwrap();
    assert_eq!(s.depth(), held);
    assert_eq!(s.health().corrupt_records, 0);
    let newest = rt.block_on(s.next_batch(4)).unwrap();
    assert_eq!(newest[0].1, pack(399, 4));
}

#[test]
fn a_full_spool_with_block_waits_for_a_release_and_drops_nothing() {
    let rt = rt();
    let fs = MemFs::new();
    let dir = PathBuf::from("/spool");
    // max_bytes is at least two segments: 8 KiB.
    let s = DiskSpool::open_with(Arc::new(fs.clone()), opts(&dir, 8192, WhenFull::Block)).unwrap();
    rt.block_on(async {
        let mut i = 0;
        loop {
            let r = tokio::time::timeout(Duration::from_millis(300), s.append(pack(i, 4))).await;
            if r.is_err() {
                break;
            }
            i += 1;
            assert!(i < 1000, "the spool never filled up");
        }
        let held = s.depth().packs;
        assert_eq!(held, i);
        // Forward and release everything; the blocked pack then fits.
        loop {
            let b = s.next_batch(1000).await.unwrap();
            if b.is_empty() {
                break;
            }
            let ids: Vec<_> = b.iter().map(|(id, _)| *id).collect();
            s.release(&ids).await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(2), s.append(pack(i, 4)))
            .await
            .expect("room after the release")
            .unwrap();
    });
    assert_eq!(s.health().dropped_readings, 0);
}

#[test]
fn a_disk_that_fills_up_under_block_is_reported_and_recovers() {
    let rt = rt();
    let fs = MemFs::new();
    let dir = PathBuf::from("/spool");
    let s = Arc::new(
        DiskSpool::open_with(Arc::new(fs.clone()), opts(&dir, 1 << 30, WhenFull::Block)).unwrap(),
    );
    rt.block_on(async {
        s.append_batch((0..5).map(|i| pack(i, 2)).collect())
            .await
            .unwrap();
        fs.set_capacity(Some(fs.used() + 100));
        let s2 = s.clone();
        let blocked = tokio::spawn(async move { s2.append(pack(5, 2)).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!blocked.is_finished(), "a full disk blocks the append");
        let h = s.health();
        assert!(h.disk_full && h.disk_full_errors > 0, "{h:?}");
        fs.set_capacity(None);
        tokio::time::timeout(Duration::from_secs(3), blocked)
            .await
            .expect("the append goes through once there is room")
            .unwrap()
            .unwrap();
        assert!(!s.health().disk_full);
    });
    assert_eq!(s.depth().packs, 6);
    assert_eq!(s.health().dropped_readings, 0);
    drop(s);
    let s =
        DiskSpool::open_with(Arc::new(fs.clone()), opts(&dir, 1 << 30, WhenFull::Block)).unwrap();
    assert_eq!(s.depth().packs, 6);
    assert_eq!(s.health().corrupt_records, 0);
}

/// A segment named with the last possible id (crafted or corrupted: appends
/// never get there) makes the spool refuse to open, naming the file, instead
/// of wrapping its ids around to 0.
#[test]
fn a_segment_with_the_last_possible_id_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("seg-{:020}.log", u64::MAX);
    std::fs::write(dir.path().join(&name), b"").unwrap();
    let Err(e) = DiskSpool::open(opts(dir.path(), 1 << 30, WhenFull::Block)) else {
        panic!("a spool whose ids would wrap around opened");
    };
    let text = e.to_string();
    assert!(text.contains(&name), "{text}");
    assert!(text.contains("last possible"), "{text}");
}
