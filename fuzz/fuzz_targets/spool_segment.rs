//! The gateway's disk spool read back after a crash or a disk fault:
//! `apr_gateway::spool::disk::read_segment` (segment records and their
//! packs) and `scan_ledger` on arbitrary bytes. The first input byte's low
//! seven bits are the segment's first id (from its file name), the rest is
//! the file's content. When the byte's top bit is set, the target first
//! writes correct checksums into every record header it can walk, so the
//! fuzzer also reaches what lies behind the checksum (ids, lengths, the
//! packs' JSON) instead of stopping at "checksum mismatch".
//! Corruption must be reported as a problem at a valid prefix, never panic,
//! and the prefix must read back clean.
#![no_main]

use apr_gateway::spool::disk::{read_segment, scan_ledger, scan_segment, RECORD_HEADER};
use apr_wire::checksum::crc32;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&head, file)) = data.split_first() else {
        return;
    };
    let first = u64::from(head & 0x7f);
    let mut fixed;
    let file = if head & 0x80 != 0 {
        fixed = file.to_vec();
        fix_checksums(&mut fixed);
        &fixed[..]
    } else {
        file
    };
    let (scan, packs) = read_segment(first, file);
    let valid = usize::try_from(scan.valid_len).expect("valid_len fits");
    assert!(valid <= file.len());
    // Every byte is read or the reason it is not is given.
    assert!(scan.problem.is_some() || valid == file.len(), "{scan:?}");
    assert!(
        scan.problem.is_none() || valid < file.len() || file.len() < 8,
        "{scan:?}"
    );
    assert_eq!(packs.len(), scan.records.len());
    let mut end = if scan.records.is_empty() { valid } else { 8 };
    let mut prev = None;
    for r in &scan.records {
        assert_eq!(r.offset as usize, end, "records are contiguous");
        assert!(r.id >= first && prev.is_none_or(|p| r.id > p));
        prev = Some(r.id);
        end += RECORD_HEADER + r.len as usize;
    }
    assert_eq!(end, valid);
    assert_eq!(scan.max_id, prev);
    // The valid prefix (what open() truncates the file to) reads back clean.
    let again = scan_segment(first, &file[..valid]);
    if valid > 0 {
        assert_eq!(again.problem, None);
        assert_eq!(again.records, scan.records);
    }

    let (ids, ledger_valid, problem) = scan_ledger(file);
    let ledger_valid = usize::try_from(ledger_valid).expect("valid prefix fits");
    assert!(ledger_valid <= file.len());
    assert_eq!(problem.is_none(), ledger_valid == file.len(), "{problem:?}");
    let (again, _, problem) = scan_ledger(&file[..ledger_valid]);
    assert_eq!(problem, None);
    assert_eq!(again, ids);
});

/// Writes the right CRC into each record header after the 8-byte magic, as
/// far as the lengths lead through the bytes.
fn fix_checksums(file: &mut [u8]) {
    let mut pos = 8;
    while pos + RECORD_HEADER <= file.len() {
        let len = u32::from_le_bytes([file[pos], file[pos + 1], file[pos + 2], file[pos + 3]]);
        let end = pos + RECORD_HEADER + len as usize;
        if end > file.len() {
            return;
        }
        let crc = crc32(&file[pos + 8..end]);
        file[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}
