//! `basalt ingest`: add files and directories to a knowledge base, with a progress bar and a
//! summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use basalt_kb::{AccessMap, IngestOptions, IngestProgress, IngestReport, KnowledgeBase};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::{load_kb_embedder, print_line};
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  basalt ingest --kb handbook ./handbook\n  \
                        basalt ingest --kb papers --tag 2024 --meta team=research corpus.jsonl\n\n\
                        basalt ingest --kb handbook --readers group:hr,principal:alice ./hr\n  \
                        basalt ingest --kb handbook --access-map access.json ./handbook\n  \
                        basalt ingest --kb handbook s3://company-docs/handbook/\n\n\
                        An s3:// prefix is synced: new and changed objects are ingested, and the documents of \
                        deleted ones removed. The store is reached the AWS way: AWS_ACCESS_KEY_ID, \
                        AWS_SECRET_ACCESS_KEY, AWS_REGION and, for a store other than Amazon S3, AWS_ENDPOINT_URL.\n\n\
                        A file `NAME.meta.json` next to a file sets its title, tags, metadata and readers:\n  \
                        {\"title\": \"Travel policy\", \"tags\": [\"hr\"], \"metadata\": {\"year\": 2024}, \"readers\": [\"group:hr\"]}\n\n\
                        Documents without readers are readable by everyone who may read the knowledge base.")]
pub(crate) struct IngestArgs {
    /// Knowledge base to add to
    #[arg(long)]
    kb: String,
    /// Files and directories (searched recursively), or one s3://BUCKET/PREFIX to sync with
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Tag every document (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Metadata KEY=VALUE for every document (repeatable; numbers stay numbers)
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    metadata: Vec<(String, Value)>,
    /// Who may read these documents over the API: `principal:NAME` and `group:NAME`, comma
    /// separated or repeated [default: everyone who may read the knowledge base]
    #[arg(long, value_name = "READER,...", value_delimiter = ',', value_parser = parse_reader)]
    readers: Vec<String>,
    /// JSON file mapping directories to readers, e.g. {"hr": ["group:hr"], "hr/public": []};
    /// a file takes the readers of its deepest mapped directory (over --readers; a sidecar's
    /// `readers` wins over both). With an s3:// prefix the directories are below the prefix
    #[arg(long, value_name = "FILE")]
    access_map: Option<PathBuf>,
    /// Largest file to read, in MB
    #[arg(long, value_name = "MB", default_value_t = 100)]
    max_file_size: u64,
    /// Chunks embedded and committed together; a smaller batch is acknowledged (crash-safe)
    /// sooner, a larger one commits less often
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    batch_chunks: u32,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
}

fn parse_reader(text: &str) -> Result<String, String> {
    basalt_index::validate_reader(text)?;
    Ok(text.to_owned())
}

fn parse_meta(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text.split_once('=').ok_or("expected KEY=VALUE")?;
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    let value = value
        .parse::<i64>()
        .map(Value::from)
        .or_else(|_| value.parse::<f64>().map(Value::from))
        .unwrap_or_else(|_| Value::from(value));
    Ok((key.to_string(), value))
}

pub(crate) fn run(args: &IngestArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let kb = settings.data_dir.open(&args.kb)?;
    let embedder = load_kb_embedder(&kb, settings)?;
    let s3: Vec<&str> = args
        .paths
        .iter()
        .filter_map(|path| path.to_str())
        .filter(|path| path.starts_with("s3://"))
        .collect();
    if !s3.is_empty() && args.paths.len() > 1 {
        anyhow::bail!(
            "an s3:// prefix is synced on its own: give it alone (run `basalt ingest` once per \
             prefix or directory)"
        );
    }
    let mut options = IngestOptions {
        tags: args.tags.clone(),
        metadata: args.metadata.iter().cloned().collect::<BTreeMap<_, _>>(),
        max_file_bytes: args.max_file_size.saturating_mul(1 << 20),
        batch_chunks: args.batch_chunks as usize,
        readers: args.readers.clone(),
        ..IngestOptions::default()
    };
    let report = match s3.first() {
        Some(url) => {
            let objects = basalt_objects::Objects::open(url)?;
            with_progress(|observe| {
                basalt_kb::ingest_objects(
                    &kb,
                    &embedder,
                    &objects,
                    &options,
                    args.access_map.as_deref(),
                    observe,
                )
            })?
        }
        None => {
            if let Some(path) = &args.access_map {
                options.access_map = AccessMap::load(path)?;
            }
            run_with_progress(&kb, &embedder, &args.paths, &options)?
        }
    };
    if args.json {
        print_line(&serde_json::to_string_pretty(&report)?)?;
    } else {
        print_summary(&report)?;
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Ingests with a progress bar on stderr (hidden when stderr is not a terminal).
pub(crate) fn run_with_progress(
    kb: &KnowledgeBase,
    embedder: &dyn basalt_model::Embedder,
    paths: &[PathBuf],
    options: &IngestOptions,
) -> anyhow::Result<IngestReport> {
    with_progress(|observe| basalt_kb::ingest(kb, embedder, paths, options, observe))
}

/// Runs an ingestion with a progress bar its observer moves.
fn with_progress(
    work: impl FnOnce(&mut dyn FnMut(&IngestProgress)) -> basalt_kb::Result<IngestReport>,
) -> anyhow::Result<IngestReport> {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {percent:>3}% {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut observe = |progress: &IngestProgress| {
        bar.set_length(progress.bytes_total.max(1));
        bar.set_position(progress.bytes_done);
        let seconds = started.elapsed().as_secs_f64().max(1e-3);
        if progress.finishing {
            bar.set_message("merging segments and building the vector index");
            return;
        }
        bar.set_message(format!(
            "{}/{} files, {} docs ({:.1}/s), {} chunks ({:.1}/s)",
            progress.files_done,
            progress.files_total,
            progress.documents_done,
            progress.documents_done as f64 / seconds,
            progress.chunks_done,
            progress.chunks_done as f64 / seconds,
        ));
    };
    let report = work(&mut observe);
    bar.finish_and_clear();
    Ok(report?)
}

fn print_summary(report: &IngestReport) -> anyhow::Result<()> {
    for failure in &report.failed {
        eprintln!("failed: {}: {}", failure.path, failure.reason);
    }
    if !report.skipped.is_empty() {
        eprintln!(
            "skipped {} file(s) of unsupported types (first: {})",
            report.skipped.len(),
            report.skipped[0].path
        );
    }
    let seconds = report.elapsed_seconds.max(1e-3);
    print_line(&format!(
        "documents: {} added, {} replaced, {} unchanged, {}{} failed; {} chunks in {:.1} s ({:.1} docs/s)",
        report.added,
        report.replaced,
        report.unchanged,
        match report.removed {
            0 => String::new(),
            removed => format!("{removed} removed, "),
        },
        report.failed.len(),
        report.chunks,
        report.elapsed_seconds,
        (report.added + report.replaced) as f64 / seconds,
    ))
}
