//! The gateway's disk spool read back after a crash or a disk fault:
//! `apr_gateway::spool::disk::read_segment` (segment records and their
//! packs) and `scan_ledger` on arbitrary bytes. The first input byte is the
//! segment's first id (from its file name), the rest the file's content.
//! Corruption must be reported as a problem at a valid prefix, never panic,
//! and the prefix must read back clean.
#![no_main]

use apr_gateway::spool::disk::{read_segment, scan_ledger, scan_segment, RECORD_HEADER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, file)) = data.split_first() else {
        return;
    };
    let first = u64::from(first);
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
