//! The body of `POST /api/v1/ingest` as the server decodes it:
//! `apr_wire::ingest::decode_batch` (JSON into the batch, then readings the
//! store cannot hold moved to the quarantine), the function the server's
//! handler calls before its scope check.
#![no_main]

use apr_wire::ingest::{decode_batch, IngestBatch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = decode_batch(data) else {
        return;
    };
    for p in &batch.packs {
        for r in &p.readings {
            assert!(r.metric.in_range(r.value), "{r:?} kept out of range");
        }
    }
    // What the server accepts, re-encoded, decodes to the same batch.
    let again = serde_json::to_vec(&batch).expect("a decoded batch encodes");
    let back: IngestBatch = decode_batch(&again).expect("an encoded batch decodes");
    assert_eq!(back, batch);
});
