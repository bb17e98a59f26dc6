//! The outbox against a RAM flash that behaves as NOR flash and can lose
//! power at any write or erase step.

use super::*;
use crate::ram_flash::RamFlash;
use std::collections::BTreeMap;
use std::vec::Vec;

type Small<const W: usize> = RamFlash<2048, 256, W>;

fn bt(i: u32) -> f64 {
    1_764_064_800.0 + f64::from(i) * 60.0 + f64::from(i % 7) * 0.001
}

fn payload(i: u32) -> Vec<u8> {
    let len = 1 + (i * 13 % 60) as usize;
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

/// Every pending pack, oldest first, as (bt in ms, payload).
fn drain<F: NorFlash>(ob: &mut Outbox<F>) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    let mut it = ob.pending();
    while let Some(p) = it.next(&mut buf).unwrap() {
        out.push((bt_to_ms(p.bt), buf[..p.len].to_vec()));
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Append(u32),
    Release(u32),
}

/// Appends and releases interleaved; with `late_release`, the first pack is
/// released only halfway through.
fn script(appends: u32, late_release: bool) -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..appends {
        ops.push(Op::Append(i));
        if i % 3 == 2 {
            ops.push(Op::Release(i - 1));
        }
        if late_release && i == appends / 2 {
            ops.push(Op::Release(0));
        }
    }
    ops
}

/// What the device was told: packs appended with `Ok`, packs whose append
/// failed (may or may not be there), packs released with `Ok` or tried.
#[derive(Default, Debug)]
struct Model {
    ok: BTreeMap<i64, (u32, Vec<u8>)>,
    attempted: BTreeMap<i64, Vec<u8>>,
    released: Vec<i64>,
    /// Releases asked for, whatever they returned (a torn one may or may
    /// not have taken).
    release_tried: Vec<i64>,
}

/// Runs `ops` on a fresh region, cutting the power at step `cut`. Returns
/// the flash and the model of what returned `Ok`.
fn run_with_cut<const W: usize>(ops: &[Op], sectors: u32, cut: Option<u32>) -> (Small<W>, Model) {
    let mut flash = Small::<W>::new();
    if let Some(c) = cut {
        flash.cut_power_at(c);
    }
    let mut model = Model::default();
    let Ok((mut ob, _)) = Outbox::mount(flash.clone(), 0, sectors) else {
        unreachable!("mount of a blank region writes nothing");
    };
    for op in ops {
        match *op {
            Op::Append(i) => {
                let p = payload(i);
                model.attempted.insert(bt_to_ms(bt(i)), p.clone());
                match ob.append(bt(i), &p) {
                    Ok(seq) => {
                        model.ok.insert(bt_to_ms(bt(i)), (seq, p));
                    }
                    Err(Error::Bus(_)) => break,
                    Err(e) => panic!("append {i}: {e:?}"),
                }
            }
            Op::Release(i) => {
                model.release_tried.push(bt_to_ms(bt(i)));
                match ob.release(bt(i)) {
                    Ok(_) => model.released.push(bt_to_ms(bt(i))),
                    Err(Error::Bus(_)) => break,
                    Err(e) => panic!("release {i}: {e:?}"),
                }
            }
        }
    }
    let mut flash = ob.unmount();
    flash.restore_power();
    (flash, model)
}

/// After remount: nothing returned that was not appended, byte for byte;
/// nothing twice; oldest first. Returns the packs found.
fn check_sound<const W: usize>(ob: &mut Outbox<Small<W>>, model: &Model) -> Vec<(i64, Vec<u8>)> {
    let found = drain(ob);
    let mut seen = std::collections::BTreeSet::new();
    for (b, p) in &found {
        assert!(seen.insert(*b), "pack {b} returned twice");
        assert_eq!(
            model.attempted.get(b),
            Some(p),
            "pack {b} was never appended as returned"
        );
    }
    assert_eq!(ob.pending_count() as usize, found.len());
    let order: Vec<i64> = found.iter().map(|(b, _)| *b).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "not oldest first");
    found
}

fn pending_expected(model: &Model) -> Vec<i64> {
    model
        .ok
        .keys()
        .copied()
        .filter(|b| !model.release_tried.contains(b))
        .collect()
}

fn total_steps<const W: usize>(ops: &[Op], sectors: u32) -> u32 {
    let (flash, _) = run_with_cut::<W>(ops, sectors, None);
    flash.steps()
}

/// The power-cut property without overflow, at every write/erase step.
fn survives_a_power_cut_at_every_step<const W: usize>() {
    let ops = script(12, true);
    let steps = total_steps::<W>(&ops, 8);
    assert!(
        steps > 20,
        "the script should exercise many steps ({steps})"
    );
    for cut in 0..=steps {
        let (flash, model) = run_with_cut::<W>(&ops, 8, Some(cut));
        let (mut ob, _) = Outbox::mount(flash, 0, 8).unwrap();
        let found = check_sound(&mut ob, &model);
        let found_bts: Vec<i64> = found.iter().map(|(b, _)| *b).collect();
        for b in pending_expected(&model) {
            assert!(
                found_bts.contains(&b),
                "cut at {cut}: pending pack {b} lost"
            );
        }
        for b in &model.released {
            assert!(
                !found_bts.contains(b),
                "cut at {cut}: released pack {b} came back"
            );
        }
        assert_eq!(ob.dropped(), 0);

        // The remounted outbox keeps working: more packs, a release, and
        // another remount find exactly the expected state.
        let mut model = model;
        for i in 100..103 {
            let p = payload(i);
            let seq = ob.append(bt(i), &p).unwrap();
            model.attempted.insert(bt_to_ms(bt(i)), p.clone());
            model.ok.insert(bt_to_ms(bt(i)), (seq, p));
        }
        ob.release(bt(101)).unwrap();
        model.released.push(bt_to_ms(bt(101)));
        let want: Vec<i64> = found_bts
            .iter()
            .copied()
            .chain([bt_to_ms(bt(100)), bt_to_ms(bt(102))])
            .collect();
        let (mut ob, _) = Outbox::mount(ob.unmount(), 0, 8).unwrap();
        let again: Vec<i64> = check_sound(&mut ob, &model)
            .iter()
            .map(|(b, _)| *b)
            .collect();
        assert_eq!(again, want, "cut at {cut}: state after a further remount");
    }
}

#[test]
fn a_power_cut_at_any_step_loses_no_pending_pack_and_returns_nothing_corrupt() {
    survives_a_power_cut_at_every_step::<4>();
}

#[test]
fn the_same_holds_for_flash_written_in_8_byte_units() {
    survives_a_power_cut_at_every_step::<8>();
}

#[test]
fn the_same_holds_for_byte_writable_flash() {
    survives_a_power_cut_at_every_step::<1>();
}

#[test]
fn a_power_cut_while_full_drops_only_the_oldest_packs() {
    // 4 sectors of 256 bytes hold about 9 packs; 30 appends overflow. (No
    // late release: a release after the pack was dropped would blur the
    // count of drops.)
    let ops = script(30, false);
    let steps = total_steps::<4>(&ops, 4);
    for cut in 0..=steps {
        let (flash, model) = run_with_cut::<4>(&ops, 4, Some(cut));
        let (mut ob, _) = Outbox::mount(flash, 0, 4).unwrap();
        let found: Vec<i64> = check_sound(&mut ob, &model)
            .iter()
            .map(|(b, _)| *b)
            .collect();
        let expected = pending_expected(&model);
        // What is missing of the expected packs is the oldest of them.
        let missing: Vec<i64> = expected
            .iter()
            .copied()
            .filter(|b| !found.contains(b))
            .collect();
        assert_eq!(
            missing,
            expected[..missing.len()],
            "cut at {cut}: a pack other than the oldest was lost"
        );
        // Every drop is counted, except those of a sector whose erase, or
        // the header written right after it, the cut tore (documented).
        let dropped = ob.dropped();
        let last_erase = ob.unmount().last_erase_step();
        let in_window = last_erase.is_some_and(|e| cut == e || cut == e + 1);
        if in_window {
            assert!(
                dropped as usize <= missing.len(),
                "cut at {cut}: over-counted"
            );
        } else {
            assert_eq!(
                dropped as usize,
                missing.len(),
                "cut at {cut}: drops miscounted"
            );
        }
    }
}

#[test]
fn packs_come_back_oldest_first_until_released() {
    let (mut ob, report) = Outbox::mount(Small::<4>::new(), 0, 8).unwrap();
    assert_eq!(report, MountReport::default());
    for i in 0..5 {
        ob.append(bt(i), &payload(i)).unwrap();
    }
    let bts: Vec<i64> = drain(&mut ob).iter().map(|(b, _)| *b).collect();
    assert_eq!(bts, (0..5).map(|i| bt_to_ms(bt(i))).collect::<Vec<_>>());
    assert!(ob.release(bt(0)).unwrap());
    assert!(ob.release(bt(3)).unwrap());
    let left: Vec<(i64, Vec<u8>)> = drain(&mut ob);
    assert_eq!(
        left,
        [1, 2, 4].map(|i| (bt_to_ms(bt(i)), payload(i))).to_vec()
    );
    assert_eq!(ob.pending_count(), 3);
}

#[test]
fn a_release_survives_a_remount() {
    let (mut ob, _) = Outbox::mount(Small::<4>::new(), 0, 8).unwrap();
    for i in 0..3 {
        ob.append(bt(i), &payload(i)).unwrap();
    }
    ob.release(bt(1)).unwrap();
    let (mut ob, report) = Outbox::mount(ob.unmount(), 0, 8).unwrap();
    assert_eq!(report.pending, 2);
    let bts: Vec<i64> = drain(&mut ob).iter().map(|(b, _)| *b).collect();
    assert_eq!(bts, [bt_to_ms(bt(0)), bt_to_ms(bt(2))]);
}

#[test]
fn an_ack_for_a_pack_not_pending_releases_nothing() {
    let (mut ob, _) = Outbox::mount(Small::<4>::new(), 0, 8).unwrap();
    ob.append(bt(0), &payload(0)).unwrap();
    assert!(!ob.release(bt(9)).unwrap());
    assert!(ob.release(bt(0)).unwrap());
    // Acked twice (a resend raced the first ack): nothing more to do, and
    // the marker is not programmed twice (the strict flash would refuse).
    assert!(!ob.release(bt(0)).unwrap());
    assert_eq!(ob.pending_count(), 0);
}

#[test]
fn an_ack_matches_the_bt_to_the_millisecond() {
    let (mut ob, _) = Outbox::mount(Small::<4>::new(), 0, 8).unwrap();
    ob.append(1_764_064_800.123, b"[]").unwrap();
    // As the gateway prints it back after a float round trip.
    assert!(ob.release(1_764_064_800.123_000_1).unwrap());
}

#[test]
fn when_full_the_oldest_are_dropped_and_the_count_survives_a_remount() {
    let (mut ob, _) = Outbox::mount(Small::<4>::new(), 0, 4).unwrap();
    let mut n = 0;
    while ob.dropped() == 0 {
        ob.append(bt(n), &payload(n)).unwrap();
        n += 1;
        assert!(n < 100);
    }
    let dropped = ob.dropped();
    let bts: Vec<i64> = drain(&mut ob).iter().map(|(b, _)| *b).collect();
    // The survivors are the newest, in order, and with the dropped ones
    // account for every append.
    assert_eq!(bts.len() as u32 + dropped, n);
    let newest: Vec<i64> = (n - bts.len() as u32..n).map(|i| bt_to_ms(bt(i))).collect();
    assert_eq!(bts, newest);
    let (ob, _) = Outbox::mount(ob.unmount(), 0, 4).unwrap();
    assert_eq!(ob.dropped(), dropped);
}

#[test]
fn released_packs_are_not_counted_as_dropped() {
    let (mut ob, _) = Outbox::mount(Small::<4>::new(), 0, 4).unwrap();
    for i in 0..40 {
        ob.append(bt(i), &payload(i)).unwrap();
        ob.release(bt(i)).unwrap();
    }
    assert_eq!(ob.dropped(), 0);
    assert_eq!(ob.pending_count(), 0);
}

#[test]
fn a_flipped_bit_in_a_stored_pack_is_skipped_and_the_rest_still_returned() {
    let (mut ob, _) = Outbox::mount(Small::<4>::new(), 0, 8).unwrap();
    for i in 0..3 {
        ob.append(bt(i), &payload(i)).unwrap();
    }
    let mut flash = ob.unmount();
    // Pack 1's payload starts after the sector header (16), pack 0's record
    // (24 + 4 + 4) and pack 1's header (24).
    flash.bytes_mut()[16 + 32 + 24 + 2] ^= 0x04;
    let (mut ob, report) = Outbox::mount(flash, 0, 8).unwrap();
    assert_eq!(report.damaged_packs, 1);
    let bts: Vec<i64> = drain(&mut ob).iter().map(|(b, _)| *b).collect();
    assert_eq!(bts, [bt_to_ms(bt(0)), bt_to_ms(bt(2))]);
}

#[test]
fn a_corrupt_record_header_seals_its_sector_and_appends_go_elsewhere() {
    let (mut ob, _) = Outbox::mount(Small::<4>::new(), 0, 8).unwrap();
    ob.append(bt(0), &payload(0)).unwrap();
    ob.append(bt(1), &payload(1)).unwrap();
    let mut flash = ob.unmount();
    flash.bytes_mut()[16 + 32 + 5] ^= 0x01;
    let (mut ob, report) = Outbox::mount(flash, 0, 8).unwrap();
    assert_eq!(report.torn_sectors, 1);
    ob.append(bt(2), &payload(2)).unwrap();
    let (mut ob, _) = Outbox::mount(ob.unmount(), 0, 8).unwrap();
    let bts: Vec<i64> = drain(&mut ob).iter().map(|(b, _)| *b).collect();
    assert_eq!(bts, [bt_to_ms(bt(0)), bt_to_ms(bt(2))]);
}

#[test]
fn last_bt_is_restored_so_base_times_stay_unique_after_a_restart() {
    let (mut ob, _) = Outbox::mount(Small::<4>::new(), 0, 8).unwrap();
    assert_eq!(ob.last_bt(), 0.0);
    ob.append(bt(5), b"[]").unwrap();
    ob.append(bt(3), b"[]").unwrap();
    ob.release(bt(5)).unwrap();
    let (ob, _) = Outbox::mount(ob.unmount(), 0, 8).unwrap();
    assert_eq!(bt_to_ms(ob.last_bt()), bt_to_ms(bt(5)));
}

#[test]
fn a_pack_too_large_for_a_record_is_refused_before_writing() {
    let (mut ob, _) = Outbox::mount(Small::<4>::new(), 0, 8).unwrap();
    let big = [b'x'; 300];
    assert_eq!(
        ob.append(1.0, &big[..ob.max_payload() + 1]),
        Err(Error::PackTooLarge)
    );
    assert!(ob.append(1.0, &big[..ob.max_payload()]).is_ok());
    let mut small = [0u8; 8];
    assert_eq!(ob.pending().next(&mut small), Err(Error::PackTooLarge));
}

#[test]
fn a_region_that_does_not_fit_the_flash_is_refused() {
    assert!(matches!(
        Outbox::mount(Small::<4>::new(), 0, 1),
        Err(Error::FlashLayout)
    ));
    assert!(matches!(
        Outbox::mount(Small::<4>::new(), 100, 2),
        Err(Error::FlashLayout)
    ));
    assert!(matches!(
        Outbox::mount(Small::<4>::new(), 256, 8),
        Err(Error::FlashLayout)
    ));
    assert!(matches!(
        Outbox::mount(RamFlash::<2048, 256, 64>::new(), 0, 8),
        Err(Error::FlashLayout)
    ));
}

#[test]
fn stray_programmed_bytes_past_the_end_make_appends_open_a_new_sector() {
    // A write torn so that its first bytes stayed erased and later ones
    // did not (flash may program a page in any order).
    let (mut ob, _) = Outbox::mount(Small::<4>::new(), 0, 8).unwrap();
    ob.append(bt(0), &payload(0)).unwrap();
    let mut flash = ob.unmount();
    flash.bytes_mut()[16 + 32 + 26] = 0x00;
    let (mut ob, report) = Outbox::mount(flash, 0, 8).unwrap();
    assert_eq!(report.pending, 1);
    ob.append(bt(1), &payload(1)).unwrap();
    let (mut ob, _) = Outbox::mount(ob.unmount(), 0, 8).unwrap();
    assert_eq!(
        drain(&mut ob),
        [0, 1].map(|i| (bt_to_ms(bt(i)), payload(i))).to_vec()
    );
}
