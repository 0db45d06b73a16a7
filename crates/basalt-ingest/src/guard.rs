//! Third-party parsers run behind a panic boundary: a crash on one hostile file becomes that
//! file's error, and the batch goes on. [`quiet_parser_panics`] keeps such caught panics from
//! printing a backtrace banner in the middle of a progress bar.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::ExtractError;

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn guarded<T>(
    format: &'static str,
    parse: impl FnOnce() -> T,
) -> Result<T, ExtractError> {
    let outer = GUARDED.with(|flag| flag.replace(true));
    let result = catch_unwind(AssertUnwindSafe(parse));
    GUARDED.with(|flag| flag.set(outer));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        ExtractError::ParserPanic { format, message }
    })
}

/// Installs a panic hook that stays silent for panics inside a parser's panic boundary (they
/// become that file's error) and defers to the previous hook for every other panic.
pub fn quiet_parser_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !GUARDED.with(Cell::get) {
            previous(info);
        }
    }));
}
