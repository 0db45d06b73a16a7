//! The pdf parser on arbitrary bytes: it must return a document or an error, never panic, hang
//! or exhaust memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = basalt_ingest::extract(basalt_ingest::Format::Pdf, bytes);
});
