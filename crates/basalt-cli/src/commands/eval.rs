//! `basalt eval retrieval`: retrieval quality on a BEIR-format dataset.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use basalt_index::{Bm25Params, Fusion, SearchMode, VectorIndex};
use basalt_kb::eval::{Metrics, evaluate, load_qrels, load_queries, rank_documents};
use basalt_kb::{IngestOptions, KbError, KbSettings, SearchOptions};
use basalt_model::Embedder;
use serde::Serialize;

use super::{load_kb_embedder, print_line};
use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum EvalCommand {
    /// nDCG@10, Recall@10/100 and MRR@10 on a BEIR-format dataset, per search mode
    #[command(
        after_help = "Example:\n  basalt eval retrieval --corpus scifact/corpus.jsonl \
                            --queries scifact/queries.jsonl --qrels scifact/qrels/test.tsv\n\n\
                            The corpus is ingested into a knowledge base named after its hash (or --kb),\n\
                            which later runs reuse."
    )]
    Retrieval(RetrievalArgs),
    /// Answer a QA dataset: ROUGE, BLEU, token F1, faithfulness, citation precision and
    /// coverage, answer and abstention rates, gold-passage recall, latency and tokens
    #[command(after_help = "Examples:\n  \
        basalt eval answers --dataset clapnq-dev/answerable.jsonl \\\n    \
        --dataset clapnq-dev/unanswerable.jsonl --out eval/baseline\n  \
        basalt eval answers --kb handbook --dataset questions.jsonl \\\n    \
        --fail-under faithfulness=0.8 --fail-under abstention_rate=0.8\n\n\
        Without --kb the questions' own passages become a knowledge base (eval-<hash>), \
        reused by later runs. docs/evaluation.md lists the metrics.")]
    Answers(super::eval_answers::AnswersArgs),
    /// Compare reports of `eval answers --out`: the changes from the first, flagged beyond noise
    #[command(
        after_help = "Example:\n  basalt eval compare eval/baseline eval/new-prompt --out eval/compare"
    )]
    Compare(super::eval_answers::CompareArgs),
    /// Fit the answer-sentence selector on part of a QA dataset (and SciFact's rationales)
    /// and measure it on the rest, against cosine alone and the built-in weights
    #[command(
        after_help = "Example:\n  basalt eval selector --dataset clapnq-dev/answerable.jsonl \\\n    \
        --scifact scifact-train --scifact-kb scifact\n\n\
        docs/answers.md says how the built-in weights were made."
    )]
    Selector(super::eval_selector::SelectorArgs),
    /// Precision, recall and F1 of the sensitive-information detectors on labelled entity spans
    #[command(
        after_help = "Example:\n  basalt eval guardrails --dataset guardrails/pii-spans.jsonl"
    )]
    Guardrails(super::guard::EvalGuardrailsArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct RetrievalArgs {
    /// BEIR corpus.jsonl ({"_id", "title", "text"} per line)
    #[arg(long)]
    corpus: PathBuf,
    /// BEIR queries.jsonl ({"_id", "text"} per line)
    #[arg(long)]
    queries: PathBuf,
    /// Relevance judgements: query-id, corpus-id, score (TSV)
    #[arg(long)]
    qrels: PathBuf,
    /// Modes to evaluate (repeatable) [default: bm25, vector and hybrid]
    #[arg(long)]
    mode: Vec<SearchMode>,
    /// Knowledge base to build or reuse [default: eval-<corpus hash>]
    #[arg(long)]
    kb: Option<String>,
    /// Hybrid fusion [default: the knowledge base's]
    #[arg(long)]
    fusion: Option<Fusion>,
    /// Vector index for this run: auto, exact or hnsw [default: the knowledge base's]; graphs
    /// that are missing are built before the queries run
    #[arg(long)]
    vector_index: Option<VectorIndex>,
    /// Also run each vector-using mode with an exact scan and report how many of its top-10
    /// documents the approximate search found
    #[arg(long)]
    compare_exact: bool,
    /// BM25 k1 [default: the knowledge base's]
    #[arg(long)]
    bm25_k1: Option<f32>,
    /// BM25 b [default: the knowledge base's]
    #[arg(long)]
    bm25_b: Option<f32>,
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// Fail (exit status 1) when METRIC is below VALUE; METRIC is `ndcg_at_10`, `recall_at_10`,
    /// `recall_at_100` or `mrr_at_10` (the hybrid run's, else the first mode's) or
    /// `MODE.METRIC` (`bm25.ndcg_at_10`); repeatable
    #[arg(long, value_name = "METRIC=VALUE", value_parser = basalt_eval::gate::parse_bound)]
    fail_under: Vec<basalt_eval::gate::Bound>,
    /// Fail when METRIC is above VALUE (also `MODE.search_p50_ms`); repeatable
    #[arg(long, value_name = "METRIC=VALUE", value_parser = basalt_eval::gate::parse_bound)]
    fail_over: Vec<basalt_eval::gate::Bound>,
}

/// The values the gate checks: `MODE.METRIC` for every approximate run, and the plain metric
/// names for the hybrid run (else the first).
fn gate_values(results: &[ModeResult]) -> std::collections::BTreeMap<String, f64> {
    let mut values = std::collections::BTreeMap::new();
    let main = results
        .iter()
        .filter(|result| !result.exact)
        .find(|result| result.mode == SearchMode::Hybrid)
        .or_else(|| results.iter().find(|result| !result.exact));
    for result in results.iter().filter(|result| !result.exact) {
        let metrics = result.metrics;
        let named = [
            ("ndcg_at_10", metrics.ndcg_at_10),
            ("recall_at_10", metrics.recall_at_10),
            ("recall_at_100", metrics.recall_at_100),
            ("mrr_at_10", metrics.mrr_at_10),
            ("search_p50_ms", result.search_p50_ms),
            ("search_p99_ms", result.search_p99_ms),
        ];
        for (name, value) in named {
            values.insert(format!("{}.{name}", result.mode.as_str()), value);
            if main.is_some_and(|main| std::ptr::eq(main, result)) {
                values.insert(name.to_owned(), value);
            }
        }
    }
    values
}

#[derive(Serialize)]
struct ModeResult {
    mode: SearchMode,
    /// Every vector scanned (`--compare-exact`), not the HNSW graphs.
    exact: bool,
    #[serde(flatten)]
    metrics: Metrics,
    /// Search latency per query (the query embedding is computed once, before).
    search_p50_ms: f64,
    search_p99_ms: f64,
    /// With `--compare-exact`, on the approximate runs: the share of the exact run's top-10
    /// documents that this run also ranked in its top 10.
    #[serde(skip_serializing_if = "Option::is_none")]
    top10_overlap_with_exact: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    knowledge_base: String,
    documents: u64,
    chunks: u64,
    queries: usize,
    fusion: Fusion,
    bm25: Bm25Params,
    vector_index: VectorIndex,
    ingest_seconds: f64,
    results: Vec<ModeResult>,
}

/// Chunks fetched per query: enough for 100 distinct documents when documents have a few chunks.
const CHUNK_DEPTH: usize = 400;

pub(crate) fn run(command: EvalCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let args = match command {
        EvalCommand::Retrieval(args) => args,
        EvalCommand::Answers(args) => return super::eval_answers::run(&args, settings),
        EvalCommand::Guardrails(args) => return super::guard::eval(&args, settings),
        EvalCommand::Compare(args) => return super::eval_answers::compare(&args),
        EvalCommand::Selector(args) => return super::eval_selector::run(&args, settings),
    };
    let corpus_bytes = std::fs::read(&args.corpus)
        .with_context(|| format!("while reading the corpus {}", args.corpus.display()))?;
    let name = args
        .kb
        .clone()
        .unwrap_or_else(|| format!("eval-{}", &basalt_core::hex::sha256(&corpus_bytes)[..12]));
    drop(corpus_bytes);
    let queries = load_queries(&args.queries)?;
    let qrels = load_qrels(&args.qrels)?;
    let data = &settings.data_dir;
    match data.create(&KbSettings::new(&name)) {
        Ok(()) | Err(KbError::Exists { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    let mut kb_settings = data.settings(&name)?;
    if let Some(vector_index) = args.vector_index {
        kb_settings.vector_index = vector_index;
    }
    let kb = data.open_settings(kb_settings)?;
    let embedder = load_kb_embedder(&kb, settings)?;
    // Ingest (a no-op for every document already in the knowledge base).
    let report = super::ingest::run_with_progress(
        &kb,
        &embedder,
        std::slice::from_ref(&args.corpus),
        &IngestOptions::default(),
    )?;
    if !report.failed.is_empty() {
        anyhow::bail!(
            "the corpus did not ingest: {}: {}",
            report.failed[0].path,
            report.failed[0].reason
        );
    }
    let stats = kb.stats()?;
    let judged: Vec<_> = queries
        .iter()
        .filter(|query| qrels.contains_key(&query.id))
        .collect();
    let texts: Vec<String> = judged.iter().map(|query| query.text.clone()).collect();
    let modes = if args.mode.is_empty() {
        SearchMode::ALL.to_vec()
    } else {
        args.mode.clone()
    };
    let vectors = if modes.iter().any(|mode| mode.uses_vector()) && !texts.is_empty() {
        embedder.embed_batch(&texts)?
    } else {
        vec![Vec::new(); texts.len()]
    };
    let fusion = args.fusion.unwrap_or(kb.settings.fusion);
    let bm25 = Bm25Params {
        k1: args.bm25_k1.unwrap_or(kb.settings.bm25.k1),
        b: args.bm25_b.unwrap_or(kb.settings.bm25.b),
    };
    let mut results = Vec::new();
    for mode in modes {
        let mut runs = vec![false];
        if args.compare_exact && mode.uses_vector() {
            runs.push(true);
        }
        let mut approximate_rankings = None;
        for exact in runs {
            let mut rankings = HashMap::new();
            let mut latencies = Vec::with_capacity(judged.len());
            for (query, vector) in judged.iter().zip(&vectors) {
                let started = Instant::now();
                let options = SearchOptions {
                    mode: Some(mode),
                    k: CHUNK_DEPTH,
                    fusion: Some(fusion),
                    bm25: Some(bm25),
                    exact,
                    ..SearchOptions::default()
                };
                let hits = kb.search_vector(&query.text, vector, &options)?;
                latencies.push(started.elapsed().as_secs_f64() * 1e3);
                rankings.insert(query.id.clone(), rank_documents(&hits, 100));
            }
            latencies.sort_by(f64::total_cmp);
            let percentile = |p: f64| super::bench::percentile(&latencies, p);
            results.push(ModeResult {
                mode,
                exact,
                metrics: evaluate(&rankings, &qrels),
                search_p50_ms: percentile(0.5),
                search_p99_ms: percentile(0.99),
                top10_overlap_with_exact: None,
            });
            match approximate_rankings.take() {
                None => approximate_rankings = Some(rankings),
                Some(approximate) => {
                    let overlap = top10_overlap(&approximate, &rankings);
                    let index = results.len() - 2;
                    results[index].top10_overlap_with_exact = Some(overlap);
                }
            }
        }
    }
    let output = Report {
        knowledge_base: name,
        documents: stats.documents,
        chunks: stats.chunks,
        queries: judged.len(),
        fusion,
        bm25,
        vector_index: kb.settings.vector_index,
        ingest_seconds: report.elapsed_seconds,
        results,
    };
    let gate = gate_values(&output.results);
    if args.json {
        print_line(&serde_json::to_string_pretty(&output)?)?;
        return super::eval_answers::enforce_gate(&gate, &args.fail_under, &args.fail_over);
    }
    print_line(&format!(
        "knowledge base {}: {} documents, {} chunks; {} judged queries",
        output.knowledge_base, output.documents, output.chunks, output.queries
    ))?;
    print_line(&format!(
        "{:<14} {:>8} {:>10} {:>11} {:>8} {:>9} {:>12}",
        "mode", "nDCG@10", "Recall@10", "Recall@100", "MRR@10", "p50 ms", "top10 exact"
    ))?;
    for result in &output.results {
        let metrics = result.metrics;
        let name = if result.exact {
            format!("{} exact", result.mode.as_str())
        } else {
            result.mode.as_str().to_owned()
        };
        let overlap = result
            .top10_overlap_with_exact
            .map(|overlap| format!("{overlap:.4}"))
            .unwrap_or_default();
        print_line(&format!(
            "{:<14} {:>8.4} {:>10.4} {:>11.4} {:>8.4} {:>9.2} {:>12}",
            name,
            metrics.ndcg_at_10,
            metrics.recall_at_10,
            metrics.recall_at_100,
            metrics.mrr_at_10,
            result.search_p50_ms,
            overlap
        ))?;
    }
    super::eval_answers::enforce_gate(&gate, &args.fail_under, &args.fail_over)
}

/// Mean share of each query's exact top-10 documents that the approximate top 10 also holds.
fn top10_overlap(
    approximate: &HashMap<String, Vec<String>>,
    exact: &HashMap<String, Vec<String>>,
) -> f64 {
    let mut total = 0.0;
    let mut queries = 0;
    for (query, truth) in exact {
        let truth = &truth[..truth.len().min(10)];
        if truth.is_empty() {
            continue;
        }
        let found = approximate
            .get(query)
            .map_or(&[][..], |ranking| &ranking[..ranking.len().min(10)]);
        let shared = truth.iter().filter(|doc| found.contains(doc)).count();
        total += shared as f64 / truth.len() as f64;
        queries += 1;
    }
    if queries == 0 {
        1.0
    } else {
        total / queries as f64
    }
}
