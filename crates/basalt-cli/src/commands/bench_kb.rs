//! `basalt bench ingest` and `basalt bench search`: ingestion throughput split by stage, and
//! search latency per mode for 1 and 16 concurrent clients, query embedding included.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use basalt_index::SearchMode;
use basalt_kb::{DataDir, IngestOptions, KbSettings, SearchOptions, StageTimings};
use serde::Serialize;

use super::bench::{ReportArgs, SharedDataArgs};
use super::{load_kb_embedder, print_line};
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct IngestBenchArgs {
    /// Files or directories to ingest [default: the SciFact corpus in the shared data]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    data: SharedDataArgs,
    /// Knowledge base to ingest into [default: a fresh one in a temporary directory]
    #[arg(long)]
    kb: Option<String>,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Serialize)]
struct IngestBench {
    documents: u64,
    chunks: u64,
    failed: usize,
    source_megabytes: f64,
    text_megabytes: f64,
    seconds: f64,
    documents_per_second: f64,
    chunks_per_second: f64,
    text_megabytes_per_second: f64,
    stages: StageTimings,
    /// Everything that is not embedding (parse, chunk, index, hashing, file reads), as a
    /// fraction of the total time.
    non_embedding_fraction: f64,
}

pub(crate) fn ingest(args: &IngestBenchArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let temporary = tempfile_dir()?;
    let (data, name) = match &args.kb {
        Some(name) => (settings.data_dir.clone(), name.clone()),
        None => {
            let data = DataDir::new(temporary.join("data"));
            data.create(&KbSettings::new("bench"))?;
            (data, "bench".to_string())
        }
    };
    let kb = data.open(&name)?;
    let paths = if args.paths.is_empty() {
        vec![args.data.path.join("scifact-train/corpus.jsonl")]
    } else {
        args.paths.clone()
    };
    let embedder = load_kb_embedder(&kb, settings)?;
    let report =
        super::ingest::run_with_progress(&kb, &embedder, &paths, &IngestOptions::default())?;
    let _ = std::fs::remove_dir_all(&temporary);
    let seconds = report.elapsed_seconds.max(1e-9);
    let documents = report.added + report.replaced;
    let megabytes = |bytes: u64| bytes as f64 / 1e6;
    let bench = IngestBench {
        documents,
        chunks: report.chunks,
        failed: report.failed.len(),
        source_megabytes: megabytes(report.source_bytes),
        text_megabytes: megabytes(report.text_bytes),
        seconds,
        documents_per_second: documents as f64 / seconds,
        chunks_per_second: report.chunks as f64 / seconds,
        text_megabytes_per_second: megabytes(report.text_bytes) / seconds,
        stages: report.timings,
        non_embedding_fraction: (seconds - report.timings.embed_seconds).max(0.0) / seconds,
    };
    let json = serde_json::to_string_pretty(&bench)?;
    args.report.emit(&json, || {
        print_line(&format!(
            "{} documents, {} chunks, {:.2} MB of text in {:.1} s: {:.1} docs/s, {:.1} chunks/s, {:.3} MB/s",
            bench.documents,
            bench.chunks,
            bench.text_megabytes,
            bench.seconds,
            bench.documents_per_second,
            bench.chunks_per_second,
            bench.text_megabytes_per_second
        ))?;
        let stages = bench.stages;
        print_line(&format!(
            "parse {:.1} s, chunk {:.1} s, embed {:.1} s, index {:.1} s, merges and vector graphs \
             {:.1} s; non-embedding {:.1}% of the total",
            stages.parse_seconds,
            stages.chunk_seconds,
            stages.embed_seconds,
            stages.index_seconds,
            stages.finish_seconds,
            bench.non_embedding_fraction * 100.0
        ))
    })?;
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("basalt-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("while creating {}", dir.display()))?;
    Ok(dir)
}

#[derive(Debug, clap::Args)]
pub(crate) struct SearchBenchArgs {
    /// Knowledge base to search (build one with `basalt ingest` or `basalt eval retrieval`)
    #[arg(long)]
    kb: String,
    /// Queries ({"_id", "text"} per line) [default: the SciFact training queries]
    #[arg(long)]
    queries: Option<PathBuf>,
    #[command(flatten)]
    data: SharedDataArgs,
    /// Queries timed per mode and concurrency
    #[arg(long, default_value_t = 300)]
    count: usize,
    /// Chunks per search
    #[arg(long, default_value_t = 10)]
    k: usize,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Serialize)]
struct Latency {
    mode: SearchMode,
    /// Every vector scanned, ignoring the HNSW graphs: the baseline for the approximate rows.
    exact: bool,
    clients: usize,
    queries: usize,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    queries_per_second: f64,
    /// Medians and 99th percentiles of the two parts of a search: embedding the query, and
    /// the index search (which part the tail comes from).
    embed_p50_ms: f64,
    index_p50_ms: f64,
    embed_p99_ms: f64,
    index_p99_ms: f64,
}

pub(crate) fn search(args: &SearchBenchArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let kb = settings.data_dir.open(&args.kb)?;
    let embedder = load_kb_embedder(&kb, settings)?;
    let queries = args.data.query_texts(args.queries.as_deref(), args.count)?;
    // Warm up: the first search of a process loads the index caches.
    kb.search(
        Some(&embedder),
        &queries[0],
        &SearchOptions {
            k: args.k,
            ..SearchOptions::default()
        },
    )?;
    let mut results = Vec::new();
    let variants = [
        (SearchMode::Bm25, false),
        (SearchMode::Vector, false),
        (SearchMode::Vector, true),
        (SearchMode::Hybrid, false),
        (SearchMode::Hybrid, true),
    ];
    for (mode, exact) in variants {
        for clients in [1, 16] {
            let options = SearchOptions {
                mode: Some(mode),
                k: args.k,
                exact,
                ..SearchOptions::default()
            };
            let (latencies, wall) =
                super::bench::with_clients(clients, &queries, |query| -> anyhow::Result<_> {
                    let begun = Instant::now();
                    let results = kb.search(Some(&embedder), query, &options)?;
                    let total = begun.elapsed().as_secs_f64() * 1e3;
                    Ok((total, results.timings.embed_ms, results.timings.search_ms))
                })?;
            let sorted_part = |part: fn(&(f64, f64, f64)) -> f64| {
                let mut values: Vec<f64> = latencies.iter().map(part).collect();
                values.sort_by(f64::total_cmp);
                values
            };
            let embed = sorted_part(|parts| parts.1);
            let index = sorted_part(|parts| parts.2);
            let part_percentile = super::bench::percentile;
            let mut sorted: Vec<f64> = latencies.into_iter().map(|parts| parts.0).collect();
            sorted.sort_by(f64::total_cmp);
            let percentile = |p: f64| super::bench::percentile(&sorted, p);
            results.push(Latency {
                mode,
                exact,
                clients,
                queries: sorted.len(),
                p50_ms: percentile(0.50),
                p95_ms: percentile(0.95),
                p99_ms: percentile(0.99),
                queries_per_second: sorted.len() as f64 / wall,
                embed_p50_ms: part_percentile(&embed, 0.50),
                index_p50_ms: part_percentile(&index, 0.50),
                embed_p99_ms: part_percentile(&embed, 0.99),
                index_p99_ms: part_percentile(&index, 0.99),
            });
        }
    }
    let json = serde_json::to_string_pretty(&results)?;
    args.report.emit(&json, || {
        print_line(&format!(
            "{:<14} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "mode",
            "clients",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "q/s",
            "embed p50",
            "embed p99",
            "index p50",
            "index p99"
        ))?;
        for row in &results {
            print_line(&format!(
                "{:<14} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                if row.exact {
                    format!("{} exact", row.mode.as_str())
                } else {
                    row.mode.as_str().to_owned()
                },
                row.clients,
                row.p50_ms,
                row.p95_ms,
                row.p99_ms,
                row.queries_per_second,
                row.embed_p50_ms,
                row.embed_p99_ms,
                row.index_p50_ms,
                row.index_p99_ms
            ))?;
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
