//! `basalt generate`: stream text from the local chat model.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use basalt_model::{
    ChatMessage, ChatRole, GenerationEvent, GenerationRequest, Generator, LocalGenerator,
    LocalGeneratorOptions, Prompt, SamplingOptions,
};
use serde::Serialize;

use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  basalt generate \"Name three igneous rocks.\"\n  \
    basalt generate --temperature 0.7 --seed 42 --max-tokens 64 \"Write a haiku about rocks.\"\n  \
    basalt generate --raw --json \"<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n\""
)]
pub(crate) struct GenerateArgs {
    /// The user message (with --raw: the whole prompt, special tokens included)
    prompt: String,
    /// Skip the chat template and feed the prompt as is
    #[arg(long)]
    raw: bool,
    /// A system message to put before the prompt (ignored with --raw)
    #[arg(long, value_name = "TEXT", conflicts_with = "raw")]
    system: Option<String>,
    /// Most tokens to generate [default: 256, or what the context window leaves after the
    /// prompt]; more than the context window leaves is refused
    #[arg(long, value_name = "N")]
    max_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy and deterministic
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    temperature: f32,
    /// Nucleus sampling threshold in (0, 1]
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    top_p: f32,
    /// Seed for sampling (same seed, same text)
    #[arg(long, value_name = "N")]
    seed: Option<u32>,
    /// Stop before this string (repeatable)
    #[arg(long = "stop", value_name = "TEXT")]
    stops: Vec<String>,
    /// Print one JSON object: {"text","token_ids","prompt_tokens","completion_tokens",…}
    #[arg(long)]
    json: bool,
    /// Chat GGUF to load [default: the installed SmolLM2-135M-Instruct]
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Context window in tokens [default: the model's, at most 8192]
    #[arg(long, value_name = "N")]
    context_size: Option<usize>,
    /// Flash attention on or off (off matches llama.cpp's default numerics)
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set)]
    flash_attention: bool,
}

#[derive(Serialize)]
struct GenerationJson {
    text: String,
    token_ids: Vec<u32>,
    prompt_tokens: usize,
    completion_tokens: usize,
    finish_reason: &'static str,
    timings: TimingsJson,
}

#[derive(Serialize)]
struct TimingsJson {
    prompt_ms: f64,
    decode_ms: f64,
    prompt_tokens_per_second: f64,
    decode_tokens_per_second: f64,
}

pub(crate) fn run(args: &GenerateArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let path = args
        .model
        .clone()
        .unwrap_or_else(|| settings.models_dir.default_generation_model());
    let options = LocalGeneratorOptions {
        threads: settings.threads,
        decode_threads: settings.decode_threads,
        context_size: args.context_size,
        flash_attention: Some(args.flash_attention),
        ..LocalGeneratorOptions::default()
    };
    let generator = LocalGenerator::load(&path, &options)
        .with_context(|| format!("while loading the chat model {}", path.display()))?;
    let prompt = if args.raw {
        Prompt::Raw(args.prompt.clone())
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new(ChatRole::System, system.clone()));
        }
        messages.push(ChatMessage::new(ChatRole::User, args.prompt.clone()));
        Prompt::Chat(messages)
    };
    let max_tokens = generator.max_tokens_for(&prompt, args.max_tokens)?;
    let request = GenerationRequest {
        prompt,
        sampling: SamplingOptions {
            max_tokens,
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
            stop: args.stops.clone(),
        },
    };
    let stream = generator.generate(request)?;

    let mut text = String::new();
    let mut token_ids = Vec::new();
    let mut stdout = std::io::stdout();
    for event in stream {
        match event? {
            GenerationEvent::Token { id, text: piece } => {
                token_ids.push(id);
                if !args.json && !piece.is_empty() {
                    write_streamed(&mut stdout, &piece)?;
                }
                text.push_str(&piece);
            }
            GenerationEvent::Done(summary) => {
                if args.json {
                    let seconds = |d: std::time::Duration| d.as_secs_f64().max(1e-9);
                    let json = GenerationJson {
                        text: text.clone(),
                        token_ids: token_ids.clone(),
                        prompt_tokens: summary.prompt_tokens,
                        completion_tokens: summary.completion_tokens,
                        finish_reason: summary.finish_reason.as_str(),
                        timings: TimingsJson {
                            prompt_ms: summary.prompt_duration.as_secs_f64() * 1e3,
                            decode_ms: summary.decode_duration.as_secs_f64() * 1e3,
                            prompt_tokens_per_second: summary.prompt_tokens as f64
                                / seconds(summary.prompt_duration),
                            decode_tokens_per_second: summary.completion_tokens.saturating_sub(1)
                                as f64
                                / seconds(summary.decode_duration),
                        },
                    };
                    print_line(&serde_json::to_string(&json)?)?;
                } else {
                    print_line("")?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_streamed(stdout: &mut std::io::Stdout, piece: &str) -> anyhow::Result<()> {
    let mut lock = stdout.lock();
    match lock.write_all(piece.as_bytes()).and_then(|()| lock.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}
