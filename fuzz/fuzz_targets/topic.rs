//! MQTT topic names as the broker gate and the gateway see them:
//! `apr_wire::topic::DeviceTopic::parse`. A topic that parses must be
//! written back, with and without an allocation, to exactly the same string.
#![no_main]

use apr_wire::topic::DeviceTopic;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = DeviceTopic::parse(text) else {
        return;
    };
    assert_eq!(t.to_topic_string(), text);
    let mut buf = [0u8; 160];
    assert_eq!(t.write(&mut buf), Some(text));
    assert_eq!(t.write(&mut buf[..text.len() - 1]), None);
});
