//! `basalt kb create|list|delete` and `basalt docs list|delete`: knowledge bases and the
//! documents in them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use basalt_index::{Fusion, SearchMode, VectorIndex};
use basalt_kb::{DataDir, KbSettings};
use basalt_model::Embedder;
use serde::Serialize;

use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum KbCommand {
    /// Create a knowledge base
    #[command(after_help = "Examples:\n  basalt kb create handbook\n  \
                            basalt kb create papers --chunk-tokens 200 --overlap 40 --fusion rrf")]
    Create(CreateArgs),
    /// List knowledge bases with their sizes
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Delete a knowledge base and everything in it
    Delete { name: String },
    /// Set the relevance threshold below which answers are "not found", from questions the
    /// knowledge base cannot answer
    #[command(
        after_help = "Scores general-knowledge probe questions (built in, or --probes FILE \
                            with one question per line) against the knowledge base, and stores a \
                            threshold a margin above the third-highest of them as its \
                            answer.min_relevance. Run it again after large ingests.\n\n\
                            Examples:\n  basalt kb calibrate handbook\n  \
                            basalt kb calibrate handbook --dry-run --json"
    )]
    Calibrate(CalibrateArgs),
    /// Move a knowledge base to another embedding model: every chunk embedded again from the
    /// index (no file is read again), into a new index that replaces the old one at the end
    #[command(
        after_help = "Searches keep working on the old index until the new one is complete; a \
                      crash or a failed model leaves the knowledge base on its old model. Run it \
                      while nothing ingests into the knowledge base.\n\n\
                      Examples:\n  basalt models add embed3 --embedding --openai-url \
                      https://api.openai.com/v1 \\\n    --remote-model text-embedding-3-small \
                      --api-key-env OPENAI_API_KEY\n  basalt kb reembed handbook \
                      --embedding-model embed3\n  basalt kb reembed handbook --embedding-model \
                      all-MiniLM-L6-v2"
    )]
    Reembed(ReembedArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReembedArgs {
    name: String,
    /// The embedding model to move to: a registered remote embedding model (`basalt models
    /// add --embedding`), all-MiniLM-L6-v2, or a model directory
    #[arg(long, value_name = "MODEL")]
    embedding_model: String,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CalibrateArgs {
    name: String,
    /// Off-topic questions, one per line, instead of the built-in ones
    #[arg(long, value_name = "FILE")]
    probes: Option<PathBuf>,
    /// Print the result without storing it
    #[arg(long)]
    dry_run: bool,
    /// Print JSON (the threshold and every probe's score)
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// Name: letters, digits, '-', '_' or '.'
    name: String,
    /// Most model tokens per chunk [default: the model's limit, 256 for MiniLM; 256 for a model
    /// served elsewhere, whose tokens Basalt estimates]
    #[arg(long, value_name = "N")]
    chunk_tokens: Option<usize>,
    /// Tokens a chunk repeats from the previous one
    #[arg(long, value_name = "N", default_value_t = 32)]
    overlap: usize,
    /// BM25 analyzer: english, english_keep_stopwords, standard, french, german, spanish, …
    #[arg(long, default_value = basalt_index::DEFAULT_ANALYZER)]
    analyzer: String,
    /// Default search mode: hybrid, bm25 or vector
    #[arg(long, default_value = "hybrid")]
    mode: SearchMode,
    /// Default hybrid fusion: weighted[:BM25_WEIGHT] or rrf[:K]
    #[arg(long, default_value = "weighted:0.3")]
    fusion: Fusion,
    /// Vector search: auto (HNSW graphs for large index segments, exact scans of small ones),
    /// exact or hnsw (graphs for every segment)
    #[arg(long, default_value = "auto")]
    vector_index: VectorIndex,
    /// BM25 term saturation
    #[arg(long, default_value_t = 0.9)]
    bm25_k1: f32,
    /// BM25 length normalisation
    #[arg(long, default_value_t = 0.4)]
    bm25_b: f32,
    /// Embedding model: a remote embedding model registered with `basalt models add
    /// --embedding`, or a model directory or GGUF [default: the installed all-MiniLM-L6-v2]
    #[arg(long, value_name = "MODEL")]
    embedding_model: Option<String>,
    /// Store this knowledge base unencrypted (by default it is encrypted at rest with the
    /// master key; see `basalt keys generate-master --help`)
    #[arg(long)]
    unencrypted: bool,
}

pub(crate) fn run(command: KbCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let data = &settings.data_dir;
    match command {
        KbCommand::Create(args) => create(&args, settings),
        KbCommand::List { json } => list(data, json),
        KbCommand::Delete { name } => {
            data.delete(&name)?;
            print_line(&format!("deleted knowledge base {name}"))?;
            Ok(ExitCode::SUCCESS)
        }
        KbCommand::Calibrate(args) => calibrate(&args, settings),
        KbCommand::Reembed(args) => reembed(&args, settings),
    }
}

/// The embedding model `model` names, loaded (a remote one called once to learn its
/// dimension), and the name a knowledge base's settings record for it.
fn choose_embedder(
    settings: &Settings,
    model: &str,
) -> anyhow::Result<(String, Box<dyn Embedder>, bool)> {
    let registered = basalt_shared::remote_models(&settings.data_dir).get(model)?;
    let catalogued = basalt_model::catalog()
        .iter()
        .any(|spec| spec.name == model);
    let stored = if registered.is_some() || catalogued {
        model.to_owned()
    } else {
        // A path: stored absolute, so the knowledge base works from any directory.
        let path = std::path::Path::new(model);
        std::fs::canonicalize(path)
            .with_context(|| {
                format!(
                    "no embedding model {model}: not a registered remote model (`basalt models \
                     list`), not {}, and not a model directory",
                    basalt_model::DEFAULT_EMBEDDING_MODEL
                )
            })?
            .display()
            .to_string()
    };
    let embedder =
        super::open_embedder(settings, &stored, None, basalt_model::InferenceGate::new())?;
    Ok((stored, embedder, registered.is_some() && !catalogued))
}

fn reembed(args: &ReembedArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let data = &settings.data_dir;
    let before = data.settings(&args.name)?;
    let (model, embedder, _) = choose_embedder(settings, &args.embedding_model)?;
    let progress = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "re-embedding {bar:30} {pos}/{len} chunks, {elapsed} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if args.json {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report = data.reembed(&args.name, &model, embedder.as_ref(), &mut |step| {
        progress.set_length(step.chunks_total as u64);
        progress.set_position(step.chunks_done as u64);
    });
    progress.finish_and_clear();
    let report = report?;
    super::security::audit(
        settings,
        "kb:Reembed",
        &format!("kb/{}", args.name),
        format!("{} → {}", before.embedding.model, report.to_model),
    )?;
    if args.json {
        print_line(&serde_json::to_string_pretty(&report)?)?;
    } else {
        print_line(&format!(
            "re-embedded {}: {} documents, {} chunks, {} ({} dimensions) → {} ({} dimensions) in {:.1} s",
            report.knowledge_base,
            report.documents,
            report.chunks,
            report.from_model,
            report.from_dimension,
            report.to_model,
            report.to_dimension,
            report.elapsed_seconds
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn calibrate(args: &CalibrateArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    use basalt_answer::calibrate;
    let probes = match &args.probes {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("while reading the probes {}", path.display()))?;
            let probes: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect();
            anyhow::ensure!(
                probes.len() >= 2,
                "{} holds {} question(s); calibration needs at least 2, one per line",
                path.display(),
                probes.len()
            );
            probes
        }
        None => calibrate::default_probes(),
    };
    let (kb, _) = super::open_kb_as(settings, &args.name, None)?;
    let embedder = super::load_kb_embedder(&kb, settings)?;
    let result = calibrate::calibrate(&kb, &embedder, &probes)?;
    let previous = kb.settings.answer.min_relevance;
    if !args.dry_run {
        let mut updated = kb.settings.clone();
        updated.answer.min_relevance = Some(result.threshold);
        settings.data_dir.update(&updated)?;
    }
    if args.json {
        print_line(&serde_json::to_string_pretty(&result)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    for probe in result.scores.iter().take(3) {
        print_line(&format!("{:.3}  {}", probe.relevance, probe.question))?;
    }
    print_line(&format!(
        "{} off-topic probes: highest {:.3}, third {:.3}, median {:.3}",
        result.probes, result.highest, result.third_highest, result.median
    ))?;
    match result.topic_floor {
        Some(floor) => print_line(&format!(
            "{} questions on its own topics (\"{}\", …): {:.0}% score under {floor:.3}",
            result.topics.len(),
            result
                .topics
                .first()
                .map_or("", |topic| topic.question.as_str()),
            calibrate::TOPIC_QUANTILE * 100.0
        ))?,
        None => print_line("too few titles and headings to ask about its own topics")?,
    }
    let before = previous.map_or_else(
        || format!("the default {}", basalt_answer::DEFAULT_MIN_RELEVANCE),
        |value| format!("{value:.3}"),
    );
    print_line(&format!(
        "{} {}: answer.min_relevance {:.3} (was {before})",
        if args.dry_run { "would set" } else { "set" },
        args.name,
        result.threshold
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn create(args: &CreateArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let mut kb = KbSettings::new(&args.name);
    let mut default_chunk = kb.embedding.max_tokens;
    if let Some(model) = &args.embedding_model {
        // Another model: loaded (or called) once to learn its dimension and input limit.
        let (stored, embedder, remote) = choose_embedder(settings, model)?;
        let info = embedder.info();
        kb.embedding.model = stored;
        kb.embedding.dimension = info.dimension;
        kb.embedding.max_tokens = info.max_tokens;
        default_chunk = if remote {
            basalt_model::REMOTE_CHUNK_TOKENS.min(info.max_tokens)
        } else {
            info.max_tokens
        };
    }
    kb.chunking.max_tokens = args.chunk_tokens.unwrap_or(default_chunk);
    kb.chunking.overlap_tokens = args.overlap;
    kb.analyzer = args.analyzer.clone();
    kb.mode = args.mode;
    kb.fusion = args.fusion;
    kb.vector_index = args.vector_index;
    kb.bm25 = basalt_index::Bm25Params {
        k1: args.bm25_k1,
        b: args.bm25_b,
    };
    let data = if args.unencrypted {
        settings.data_dir.clone()
    } else {
        settings.data_dir_with_key()?
    };
    data.create_with(&kb, !args.unencrypted)?;
    let place = match data.has_database() {
        true => "the database (--database)".to_owned(),
        false => data.kb_path(&kb.name).display().to_string(),
    };
    print_line(&format!(
        "created knowledge base {} in {place} ({})",
        kb.name,
        if args.unencrypted {
            "unencrypted"
        } else {
            "encrypted"
        }
    ))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct KbJson {
    #[serde(flatten)]
    settings: KbSettings,
    /// Unknown (null) for an encrypted knowledge base when no master key is given.
    documents: Option<u64>,
    chunks: Option<u64>,
    encrypted: bool,
    /// The id Bedrock clients address it by (docs/bedrock.md).
    bedrock_id: String,
}

fn list(data: &DataDir, json: bool) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for settings in data.list()? {
        let encrypted = data.is_encrypted(&settings.name);
        let stats = match data.open(&settings.name) {
            Ok(kb) => Some(kb.stats()?),
            // Listed without its key: it exists, its content stays unread.
            Err(
                basalt_kb::KbError::MasterKeyRequired { .. }
                | basalt_kb::KbError::Security(basalt_security::SecurityError::WrongMasterKey {
                    ..
                }),
            ) => None,
            Err(error) => return Err(error.into()),
        };
        rows.push(KbJson {
            bedrock_id: basalt_kb::bedrock_id(&settings.name),
            settings,
            documents: stats.map(|stats| stats.documents),
            chunks: stats.map(|stats| stats.chunks),
            encrypted,
        });
    }
    if json {
        print_line(&serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        print_line(&format!(
            "no knowledge bases in {} (create one with `basalt kb create NAME`)",
            data.root().display()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    print_line(&format!(
        "{:<24} {:<10} {:>9} {:>9}  {:<8} {:<20} {:<9} created",
        "name", "bedrock id", "documents", "chunks", "mode", "model", "encrypted"
    ))?;
    let count = |value: Option<u64>| value.map_or("?".to_owned(), |value| value.to_string());
    for row in rows {
        let model = std::path::Path::new(&row.settings.embedding.model)
            .file_name()
            .map_or(row.settings.embedding.model.clone(), |name| {
                name.to_string_lossy().into_owned()
            });
        print_line(&format!(
            "{:<24} {:<10} {:>9} {:>9}  {:<8} {:<20} {:<9} {}",
            row.settings.name,
            row.bedrock_id,
            count(row.documents),
            count(row.chunks),
            row.settings.mode.as_str(),
            model,
            if row.encrypted { "yes" } else { "no" },
            row.settings.created_at
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum DocsCommand {
    /// List the documents of a knowledge base
    List {
        #[arg(long)]
        kb: String,
        /// Print JSON (one array of document records)
        #[arg(long)]
        json: bool,
    },
    /// Delete documents (by id, or every document from a source path) from every index at once
    #[command(
        after_help = "Examples:\n  basalt docs delete --kb handbook f-3a1c9e0b2d4f6a81\n  \
                            basalt docs delete --kb handbook --source ./handbook/old-policy.pdf"
    )]
    Delete {
        #[arg(long)]
        kb: String,
        /// Document ids (see `basalt docs list`)
        ids: Vec<String>,
        /// Delete every document ingested from this file (or from files under this directory)
        #[arg(long, value_name = "PATH")]
        source: Option<PathBuf>,
    },
}

pub(crate) fn run_docs(command: DocsCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        DocsCommand::List { kb, json } => {
            let kb = settings.data_dir.open(&kb)?;
            let documents = kb.documents()?;
            if json {
                print_line(&serde_json::to_string_pretty(&documents)?)?;
            } else {
                print_line(&format!(
                    "{:<20} {:<8} {:>6} {:<20}  source",
                    "id", "format", "chunks", "ingested"
                ))?;
                for doc in &documents {
                    print_line(&format!(
                        "{:<20} {:<8} {:>6} {:<20}  {}",
                        doc.doc_id, doc.format, doc.chunk_count, doc.ingested_at, doc.source
                    ))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DocsCommand::Delete { kb, ids, source } => {
            if ids.is_empty() && source.is_none() {
                anyhow::bail!("name document ids or --source PATH to delete");
            }
            let kb = settings.data_dir.open(&kb)?;
            let mut doomed = ids.clone();
            if let Some(source) = &source {
                let wanted = std::fs::canonicalize(source).unwrap_or_else(|_| source.clone());
                let wanted = wanted.display().to_string();
                let under = format!("{}/", wanted.trim_end_matches('/'));
                doomed.extend(
                    kb.documents()?
                        .into_iter()
                        .filter(|doc| doc.source == wanted || doc.source.starts_with(&under))
                        .map(|doc| doc.doc_id),
                );
            }
            let deleted = kb.delete(&doomed)?;
            // Settle merges and rebuild the vector graphs of merged segments now, not during a
            // later search.
            kb.finish_writes()?;
            if deleted == 0 {
                eprintln!(
                    "error: no document matched; see `basalt docs list --kb {}`",
                    kb.settings.name
                );
                return Ok(ExitCode::FAILURE);
            }
            print_line(&format!("deleted {deleted} document(s)"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
