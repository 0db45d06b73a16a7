//! The docx parser on arbitrary bytes: it must return a document or an error, never panic, hang
//! or exhaust memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // libFuzzer's panic hook aborts on every panic, even one the parser boundary catches and
    // turns into an error; Basalt's hook stays silent for those and defers to it otherwise.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(basalt_ingest::quiet_parser_panics);
    let _ = basalt_ingest::extract(basalt_ingest::Format::Docx, bytes);
});
