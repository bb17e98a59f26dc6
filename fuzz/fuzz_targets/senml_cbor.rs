//! SenML CBOR packs (RFC 8428 §6) as a device publishes them on `apr/{apr}/{device}/up`:
//! `apr_wire::decode::decode_pack` and the gateway's `validate_pack` on the
//! same bytes. Inputs that do not start with a CBOR array header are left to `senml_json`.
#![no_main]

use apr_wire::decode::decode_pack;
use apr_wire::validate::{validate_pack, PackContext};
use libfuzzer_sys::fuzz_target;

const CTX: PackContext<'static> = PackContext {
    apr: "los-aromos",
    device: "caseta",
    received_ms: 1_764_100_000_000,
    max_future_ms: 300_000,
};

fuzz_target!(|data: &[u8]| {
    if data.first().is_none_or(|b| b >> 5 != 4) {
        return;
    }
    let decoded = decode_pack(data);
    let outcome = validate_pack(data, &CTX);
    check(decoded.is_ok(), data.len(), &outcome);
});

/// What must hold for any input: a pack that does not decode is refused
/// whole, and every accepted reading is one the server can store.
fn check(decoded: bool, len: usize, outcome: &apr_wire::validate::PackOutcome) {
    if !decoded || len > apr_wire::MAX_PACK_BYTES {
        assert!(outcome.readings.is_empty());
        assert_eq!(outcome.refusals.len(), 1);
    }
    for r in &outcome.readings {
        assert!(r.metric.in_range(r.value), "{r:?} accepted out of range");
        assert!(
            r.t_ms <= CTX.received_ms + CTX.max_future_ms,
            "{r:?} from the future"
        );
    }
}
