//! Text, Markdown, CSV, JSON and JSON Lines on arbitrary bytes, and the chunker on whatever
//! they extract: no panic, and chunks stay inside their document.
#![no_main]

use basalt_ingest::{ChunkerOptions, Format, TokenCounter, chunk_sections, extract};
use libfuzzer_sys::fuzz_target;

/// One token per whitespace-separated word, plus two special tokens.
struct Words;

impl TokenCounter for Words {
    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count() + 2
    }
}

fuzz_target!(|bytes: &[u8]| {
    // libFuzzer's panic hook aborts on every panic, even one the parser boundary catches and
    // turns into an error; Basalt's hook stays silent for those and defers to it otherwise.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(basalt_ingest::quiet_parser_panics);
    for format in [Format::Text, Format::Markdown, Format::Csv, Format::Json, Format::Jsonl] {
        if let Ok(records) = extract(format, bytes) {
            for record in records {
                let document = record.document;
                let options = ChunkerOptions { max_tokens: 16, overlap_tokens: 4 };
                for chunk in chunk_sections(&document.text, &document.sections, &Words, &options) {
                    assert!(chunk.range.end <= document.text.len());
                }
            }
        }
    }
});
