//! Hot path of the gateway: decode + validate one SenML pack (issue 7's
//! micro-benchmarks), and the spool's record checksum.
//! `cargo bench -p apr-wire --bench validate`.

use apr_wire::encode::PackEncoder;
use apr_wire::validate::{validate_pack, PackContext};
use apr_wire::Metric;

fn main() {
    divan::main();
}

const BT: f64 = 1_764_064_800.0;

/// A live report: ten numeric metrics at one time, as a site sends each minute.
fn live_pack() -> Vec<u8> {
    pack(1)
}

fn pack(reports: usize) -> Vec<u8> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut p = PackEncoder::new(&mut buf, "los-aromos", "caseta", BT).expect("encoder");
    for r in 0..reports {
        for (k, m) in Metric::ALL.iter().enumerate() {
            if *m == Metric::Pump {
                p.boolean(*m, 60.0 * r as f64, r % 2 == 0).expect("fits");
            } else {
                let (lo, _) = m.range();
                p.number(*m, 60.0 * r as f64, lo.max(0.0) + k as f64 * 0.37)
                    .expect("fits");
            }
        }
    }
    let n = p.finish().expect("finish");
    buf.truncate(n);
    buf
}

fn ctx() -> PackContext<'static> {
    PackContext {
        apr: "los-aromos",
        device: "caseta",
        received_ms: (BT * 1000.0) as i64 + 60_000,
        max_future_ms: 300_000,
    }
}

#[divan::bench]
fn live_pack_of_11_readings(b: divan::Bencher) {
    let p = live_pack();
    b.counter(divan::counter::ItemsCount::new(11usize))
        .bench(|| validate_pack(divan::black_box(&p), &ctx()));
}

#[divan::bench]
fn backlog_pack_of_44_readings(b: divan::Bencher) {
    let p = pack(4);
    b.counter(divan::counter::ItemsCount::new(44usize))
        .bench(|| validate_pack(divan::black_box(&p), &ctx()));
}

#[divan::bench]
fn encode_a_live_pack(b: divan::Bencher) {
    let mut buf = vec![0u8; 2048];
    b.bench_local(|| {
        let mut p = PackEncoder::new(&mut buf, "los-aromos", "caseta", BT).expect("encoder");
        for m in Metric::ALL {
            if m == Metric::Pump {
                let _ = p.boolean(m, 0.0, true);
            } else {
                let _ = p.number(m, 0.0, 1.25);
            }
        }
        p.finish()
    });
}

/// CRC-32 of one spool record's size (a live pack's record is ~600 bytes; a
/// segment is scanned in records like this at start-up): the slice-by-8
/// table the gateway uses against the firmware's nibble table as the
/// baseline, in the same run.
const CRC_SIZES: [usize; 2] = [600, 16 * 1024];

#[divan::bench(args = CRC_SIZES)]
fn crc32_slice_by_8(b: divan::Bencher, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    b.counter(divan::counter::BytesCount::new(len))
        .bench(|| apr_wire::checksum::crc32(divan::black_box(&data)));
}

#[divan::bench(args = CRC_SIZES)]
fn crc32_nibble_table_baseline(b: divan::Bencher, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    b.counter(divan::counter::BytesCount::new(len))
        .bench(|| apr_wire::checksum::crc32_nibble_table(divan::black_box(&data)));
}
