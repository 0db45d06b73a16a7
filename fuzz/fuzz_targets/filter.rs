//! The `--filter` parser on arbitrary text: a filter or a positioned error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Err(error) = basalt_index::Filter::parse(text) {
            assert!(error.position <= text.chars().count());
        }
    }
});
