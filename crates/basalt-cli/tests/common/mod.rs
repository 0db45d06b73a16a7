//! Helpers shared by the process-level tests: run `basalt`, read its output.
//!
//! Each test starts processes that load models; a lock makes them take turns so two processes
//! never fight over the 2 CPU cores.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;

static CPU: Mutex<()> = Mutex::new(());

pub fn basalt(args: &[&str]) -> Output {
    basalt_with(args, |_| {})
}

pub fn basalt_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Output {
    let _turn = CPU
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut command = Command::new(env!("CARGO_BIN_EXE_basalt"));
    command.args(args);
    configure(&mut command);
    command.output().expect("basalt runs")
}

/// Runs `basalt` without waiting for the CPU turn: for quick commands that must run while
/// another `basalt` process (started by the test itself) is busy.
pub fn basalt_now(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(args)
        .output()
        .expect("basalt runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn assert_clean_failure(output: &Output, expected: &str) {
    let err = stderr(output);
    assert!(!output.status.success(), "must fail: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
    assert!(
        err.contains(expected),
        "stderr should mention {expected:?}: {err}"
    );
}

pub fn shared_data() -> PathBuf {
    std::env::var_os("BASALT_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}
