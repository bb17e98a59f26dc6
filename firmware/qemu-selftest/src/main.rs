//! The firmware core's self-test on a Cortex-M3: runs
//! [`apr_firmware::selftest::run`] (sample → aggregate → encode a pack →
//! outbox append on a RAM-backed NOR flash → release by `bt` → remount →
//! check), prints each check through semihosting and exits 0 when all pass,
//! 1 when any fails. A panic also exits 1.
//!
//! Built with `APR_SELFTEST_FAIL=1` in the environment, one check expects the
//! wrong thing, so CI can prove that a failing check fails the run
//! (`run.sh --expect-failure`).
#![no_std]
#![no_main]
#![deny(unsafe_code, missing_docs)]

use core::panic::PanicInfo;

use apr_firmware::selftest::{self, Options};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};

/// Set at build time (`APR_SELFTEST_FAIL=1`): make one check fail on purpose.
const SABOTAGE: bool = match option_env!("APR_SELFTEST_FAIL") {
    Some(v) => matches!(v.as_bytes(), b"1"),
    None => false,
};

#[entry]
fn main() -> ! {
    hprintln!(
        "apr-firmware self-test on thumbv7m (sabotage: {})",
        SABOTAGE
    );
    let mut passed = 0u32;
    let mut failed = 0u32;
    let ok = selftest::run(Options { sabotage: SABOTAGE }, |name, ok| {
        if ok {
            passed += 1;
            hprintln!("ok     {}", name);
        } else {
            failed += 1;
            hprintln!("FAILED {}", name);
        }
    });
    hprintln!("selftest: {} passed, {} failed", passed, failed);
    debug::exit(if ok && failed == 0 {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::bkpt();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    hprintln!("selftest panicked: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::bkpt();
    }
}
