//! Helpers shared by the process-level tests: run `basalt`, read its output.
//!
//! Each test starts processes that load models; a lock makes them take turns so two processes
//! never fight over the 2 CPU cores.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use std::sync::Mutex;

static CPU: Mutex<()> = Mutex::new(());

pub fn basalt(args: &[&str]) -> Output {
    basalt_with(args, |_| {})
}

/// Waits for this test's turn on the CPU (held until the guard drops): for tests that run a
/// long-lived `basalt` process such as the server.
pub fn cpu_turn() -> std::sync::MutexGuard<'static, ()> {
    CPU.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn basalt_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Output {
    let _turn = cpu_turn();
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

/// A data directory of its own for each test, passed with `--data-dir`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn docs(&self) -> PathBuf {
        self.dir.path().join("docs")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let data = self.data();
        let mut all = vec!["--data-dir", &data];
        all.extend_from_slice(args);
        basalt(&all)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            stderr(&output)
        );
        stdout(&output)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let output = self.run(args);
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{args:?}: {error}: {} / {}",
                stdout(&output),
                stderr(&output)
            )
        })
    }

    pub fn search(&self, kb: &str, extra: &[&str], query: &str) -> Vec<Value> {
        let mut args = vec!["search", "--kb", kb, "--json"];
        args.extend_from_slice(extra);
        args.push(query);
        let results = self.json(&args);
        results["hits"].as_array().cloned().unwrap_or_default()
    }
}
