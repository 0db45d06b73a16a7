//! The `basalt` binary as a user runs it: real models, real processes, exit codes and messages.
//!
//! Each test starts processes that load models; a lock makes them take turns so two processes
//! never fight over the 2 CPU cores.

mod common;

use common::{assert_clean_failure, basalt, basalt_with, shared_data, stderr, stdout};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    completions: Vec<Completion>,
}

#[derive(Deserialize)]
struct Completion {
    prompt: String,
    greedy_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct GenerateJson {
    text: String,
    token_ids: Vec<u32>,
    prompt_tokens: usize,
    completion_tokens: usize,
    finish_reason: String,
}

#[test]
fn generate_raw_greedy_json_matches_llama_cpp() {
    let path = shared_data().join("reference/smollm2-llamacpp.json");
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(path).expect("reference")).expect("json");
    let completion = &reference.completions[1];
    let output = basalt(&[
        "generate",
        "--raw",
        "--temperature",
        "0",
        "--max-tokens",
        "20",
        "--json",
        &completion.prompt,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: GenerateJson = serde_json::from_str(stdout(&output).trim()).expect("one JSON object");
    assert_eq!(json.token_ids[..16], completion.greedy_ids[..16]);
    assert_eq!(json.completion_tokens, 20);
    assert_eq!(json.finish_reason, "length");
    assert!(json.prompt_tokens > 20);
    assert!(
        json.text.starts_with("In the depths of the earth"),
        "{}",
        json.text
    );
}

#[test]
fn generate_streams_plain_text() {
    let output = basalt(&[
        "generate",
        "--max-tokens",
        "16",
        "What is the capital of France?",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("Paris"), "{}", stdout(&output));
}

#[test]
fn embed_json_prints_one_object_per_text() {
    let output = basalt(&["embed", "--json", "first text", "second text", "third"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["text"], "first text");
    assert_eq!(lines[2]["embedding"].as_array().map(Vec::len), Some(384));
}

#[test]
fn embed_single_text_matches_the_reference() {
    #[derive(Deserialize)]
    struct Line {
        text: String,
        embedding: Vec<f32>,
    }
    let text = std::fs::read_to_string(shared_data().join("reference/minilm-embeddings.jsonl"))
        .expect("reference");
    let reference: Line = serde_json::from_str(text.lines().nth(100).expect("line")).expect("json");
    let output = basalt(&["embed", "--json", &reference.text]);
    assert!(output.status.success(), "{}", stderr(&output));
    let line: Line = serde_json::from_str(stdout(&output).trim()).expect("JSON");
    let dot: f32 = line
        .embedding
        .iter()
        .zip(&reference.embedding)
        .map(|(a, b)| a * b)
        .sum();
    assert!(dot >= 0.999, "cosine {dot}");
}

#[test]
fn max_tokens_zero_is_a_clear_error() {
    let output = basalt(&["generate", "--max-tokens", "0", "hello"]);
    assert_clean_failure(&output, "max_tokens must be at least 1");
}

#[test]
fn prompt_over_the_context_window_is_a_clear_error() {
    let prompt = "rock ".repeat(400);
    let output = basalt(&["generate", "--context-size", "128", &prompt]);
    assert_clean_failure(&output, "context window is 128");
}

#[test]
fn missing_models_directory_says_how_to_fix_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let models = dir.path().join("nothing-here");
    let models = models.to_str().expect("utf-8 path");
    let output = basalt(&["--models-dir", models, "generate", "hi"]);
    assert_clean_failure(&output, "basalt models fetch");
    let output = basalt(&["--models-dir", models, "embed", "hi"]);
    assert_clean_failure(&output, "basalt models fetch");
    let output = basalt(&["--models-dir", models, "models", "list"]);
    assert_clean_failure(&output, "basalt models fetch");
    assert!(stdout(&output).contains("missing"));
}

#[test]
fn truncated_model_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = basalt_model::ModelsDir::from_env().default_generation_model();
    let bytes = std::fs::read(&source).expect("installed model");
    let target = dir.path().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    std::fs::write(&target, &bytes[..bytes.len() - 1000]).expect("write");
    let target = target.to_str().expect("utf-8 path");
    let output = basalt(&["generate", "--model", target, "hi"]);
    assert_clean_failure(&output, "SmolLM2-135M-Instruct.Q4_1.gguf is corrupt");
}

#[test]
fn models_list_reports_installed_models() {
    let output = basalt(&["models", "list", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let models: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let names: Vec<&str> = models
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|model| model["name"].as_str())
        .collect();
    assert_eq!(names, ["smollm2-135m-instruct", "all-minilm-l6-v2"]);
    assert!(
        models
            .as_array()
            .expect("array")
            .iter()
            .all(|m| m["ready"] == true)
    );
}

#[test]
fn models_fetch_is_a_no_op_when_installed() {
    let output = basalt(&["models", "fetch"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).matches("already installed").count(),
        2,
        "{}",
        stdout(&output)
    );
}

#[cfg(unix)]
#[test]
fn invalid_utf8_argument_is_rejected_without_panic() {
    use std::os::unix::ffi::OsStrExt;
    let output = basalt_with(&["embed"], |command| {
        command.arg(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    });
    assert_clean_failure(&output, "UTF-8");
}

#[test]
fn help_has_examples() {
    let output = basalt(&["--help"]);
    assert!(output.status.success());
    let help = stdout(&output);
    for needle in ["Examples:", "models", "embed", "generate", "bench"] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    let output = basalt(&["generate", "--help"]);
    assert!(stdout(&output).contains("--max-tokens"));
}

/// Issue 20: the binary runs on a CPU without AVX-512, whatever CPU built it. Under
/// `qemu-x86_64 -cpu Haswell-v4` (AVX2, FMA, BMI2, no AVX-512; installed by scripts/test.sh),
/// `embed` gives the vector the host gives and `generate` the same greedy tokens. (The
/// x86-64-v3 baseline needs AVX2, so no CPU without it is tried: there the binary stops with
/// SIGILL before `main`, as docs/models.md says.)
#[test]
fn the_binary_runs_on_a_cpu_without_avx512_issue_20() {
    let text = "Basalt is a fine-grained volcanic rock.";
    let embed = ["embed", "--json", text];
    let generate = [
        "generate",
        "--raw",
        "--max-tokens",
        "4",
        "--json",
        "The capital of France is",
    ];
    let host_embedding = basalt(&embed);
    let host_generation = basalt(&generate);
    let emulated = |args: &[&str]| {
        let _turn = common::cpu_turn();
        let output = std::process::Command::new("qemu-x86_64")
            .args(["-cpu", "Haswell-v4", env!("CARGO_BIN_EXE_basalt")])
            .args(args)
            // Set, so the binary does not start itself again to set it: the new process would
            // run on the host CPU, outside the emulator.
            .env("GOMP_SPINCOUNT", "1000")
            .output()
            .expect("qemu-x86_64 runs (scripts/test.sh installs Debian's qemu-user)");
        assert!(output.status.success(), "under qemu: {}", stderr(&output));
        output
    };
    let vector = |output: &std::process::Output| -> Vec<f32> {
        let json: serde_json::Value =
            serde_json::from_str(stdout(output).trim()).expect("one JSON object");
        serde_json::from_value(json["embedding"].clone()).expect("an embedding")
    };
    let (host, guest) = (vector(&host_embedding), vector(&emulated(&embed)));
    assert_eq!(host.len(), 384);
    let cosine: f32 = host.iter().zip(&guest).map(|(a, b)| a * b).sum();
    assert!(
        cosine > 0.999,
        "cosine {cosine} between host and emulated embeddings"
    );

    let tokens = |output: &std::process::Output| -> GenerateJson {
        serde_json::from_str(stdout(output).trim()).expect("one JSON object")
    };
    let guest_generation = emulated(&generate);
    let (host, guest) = (tokens(&host_generation), tokens(&guest_generation));
    assert_eq!(guest.completion_tokens, 4);
    assert_eq!(
        host.token_ids, guest.token_ids,
        "{} / {}",
        host.text, guest.text
    );
}
