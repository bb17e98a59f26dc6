//! Configuration files and environment overrides as every deployable part
//! loads them: `apr_wire::settings::load_from` into the gateway's real
//! `GatewayConfig`. The input is the file's text, then optionally a NUL and
//! `KEY=value` lines taken as environment variables.
#![no_main]

use apr_gateway::config::{GatewayConfig, ENV_PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, env) = input.split_once('\0').unwrap_or((input, ""));
    let vars: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let Ok(config) =
        apr_wire::settings::load_from::<GatewayConfig>(text, "fuzz.toml", ENV_PREFIX, vars)
    else {
        return;
    };
    // A loaded configuration survives a write and a read of its own TOML.
    let written = toml::to_string(&config).expect("a loaded configuration writes as TOML");
    let back: GatewayConfig =
        apr_wire::settings::load_from(&written, "written", ENV_PREFIX, Vec::new())
            .expect("a written configuration loads");
    assert_eq!(back, config);
});
