//! `basalt embed`: embed texts with the local embedding model.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use basalt_model::{Embedder, LocalEmbedder, LocalEmbedderOptions};
use serde::Serialize;

use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  basalt embed \"first text\" \"second text\"\n  \
                        basalt embed --json \"What is basalt?\" | jq '.embedding | length'"
)]
pub(crate) struct EmbedArgs {
    /// Texts to embed; each is truncated to the model's 256 word pieces
    #[arg(required = true)]
    texts: Vec<String>,
    /// Print one JSON object per text: {"text", "embedding"}
    #[arg(long)]
    json: bool,
    /// Embedding model directory or GGUF [default: the installed all-MiniLM-L6-v2]
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
}

#[derive(Serialize)]
struct EmbeddingJson<'a> {
    text: &'a str,
    embedding: &'a [f32],
}

pub(crate) fn run(args: &EmbedArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let path = args
        .model
        .clone()
        .unwrap_or_else(|| settings.models_dir.default_embedding_model());
    let options = LocalEmbedderOptions {
        threads: settings.threads,
        ..LocalEmbedderOptions::default()
    };
    let embedder = LocalEmbedder::load(&path, &options)
        .with_context(|| format!("while loading the embedding model {}", path.display()))?;
    let vectors = if args.texts.len() == 1 {
        vec![embedder.embed_query(&args.texts[0])?]
    } else {
        embedder.embed_batch(&args.texts)?
    };
    for (text, vector) in args.texts.iter().zip(&vectors) {
        if args.json {
            let line = serde_json::to_string(&EmbeddingJson {
                text,
                embedding: vector,
            })?;
            print_line(&line)?;
        } else {
            let head: Vec<String> = vector.iter().take(6).map(|v| format!("{v:+.4}")).collect();
            print_line(&format!(
                "{} dims [{} …]  {}",
                vector.len(),
                head.join(", "),
                preview(text)
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn preview(text: &str) -> String {
    let mut preview: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        preview.push('…');
    }
    preview
}
