//! The retained `config` topic as the firmware core reads it, without an
//! allocator: `apr_firmware::config::Settings::with_json` / `apply`. A
//! refused configuration changes nothing; an accepted one is within the
//! documented limits and applying it twice changes nothing more.
#![no_main]

use apr_firmware::config::Settings;
use apr_firmware::domain::{REPORT_INTERVAL_MAX_S, REPORT_INTERVAL_MIN_S};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut s = Settings::default();
    match s.apply(data) {
        Err(_) => assert_eq!(s, Settings::default()),
        Ok(_) => {
            assert!((REPORT_INTERVAL_MIN_S..=REPORT_INTERVAL_MAX_S).contains(&s.report_interval_s));
            assert!(s.k_factor.litres() > 0.0);
            assert_eq!(s.apply(data), Ok(false));
        }
    }
});
