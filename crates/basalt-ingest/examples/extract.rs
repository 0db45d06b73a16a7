//! Prints what Basalt extracts from files, one line each (format, records, characters,
//! sections, pages, milliseconds) or the reason it refuses them:
//! `cargo run --release -p basalt-ingest --example extract -- FILE...`

#![allow(clippy::print_stdout)] // A command-line tool: stdout is its output.

use std::time::Instant;

use basalt_ingest::{Format, extract};

fn main() {
    basalt_ingest::quiet_parser_panics();
    for path in std::env::args().skip(1) {
        let Some(format) = Format::from_path(std::path::Path::new(&path)) else {
            println!("{path}\tskipped: unsupported type");
            continue;
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) => {
                println!("{path}\tcannot read: {error}");
                continue;
            }
        };
        let started = Instant::now();
        let result = extract(format, &bytes);
        let milliseconds = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(records) => {
                let characters: usize = records
                    .iter()
                    .map(|record| record.document.text.chars().count())
                    .sum();
                let sections: usize = records
                    .iter()
                    .map(|record| record.document.sections.len())
                    .sum();
                let pages = records
                    .iter()
                    .flat_map(|record| {
                        record
                            .document
                            .sections
                            .iter()
                            .filter_map(|section| section.page)
                    })
                    .max();
                println!(
                    "{path}\t{}\trecords={}\tchars={characters}\tsections={sections}\tpages={pages:?}\tms={milliseconds:.1}",
                    format.as_str(),
                    records.len()
                );
            }
            Err(error) => println!("{path}\tFAILED ({milliseconds:.1} ms): {error}"),
        }
    }
}
