//! Puts `memory.x` where cortex-m-rt's `link.x` finds it and links with it,
//! and rebuilds when the provisioning variables change (src/provision.rs).

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "APR_ID",
        "APR_DEVICE",
        "APR_MQTT_BROKER",
        "APR_MQTT_PORT",
        "APR_MQTT_USER",
        "APR_MQTT_PASSWORD",
        "APR_NTP_SERVER",
        "APR_K_FACTOR_ML_PER_PULSE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
}
