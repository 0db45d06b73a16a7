//! `basalt bench answer`: time to first token and total time of grounded answers.

use std::path::PathBuf;
use std::process::ExitCode;

use basalt_answer::{AnswerOptions, Engines};
use serde::Serialize;

use super::bench::{ReportArgs, SharedDataArgs};
use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct AnswerBenchArgs {
    /// Knowledge base to answer from (build one with `basalt eval retrieval --kb scifact …`)
    #[arg(long)]
    kb: String,
    /// Questions ({"_id", "text"} per line) [default: the SciFact training queries]
    #[arg(long)]
    queries: Option<PathBuf>,
    #[command(flatten)]
    data: SharedDataArgs,
    /// Questions answered
    #[arg(long, default_value_t = 20)]
    count: usize,
    /// Passages per answer
    #[arg(long, default_value_t = 5)]
    passages: usize,
    /// Most tokens per answer
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// generative (the model writes: what this bench is for) or extractive (quoted answers,
    /// the default style of `ask`)
    #[arg(long, default_value = "generative", value_name = "STYLE")]
    style: basalt_kb::AnswerStyle,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Serialize)]
struct AnswerBench {
    questions: usize,
    passages: usize,
    threads: usize,
    /// From the question to the first generated token: query embedding, retrieval, prompt
    /// evaluation.
    first_token_p50_ms: f64,
    first_token_p95_ms: f64,
    /// From the question to the first text shown: a sentence that passed the check against
    /// the passages, the extractive answer, or "not found" (the user waits this long).
    first_shown_p50_ms: f64,
    first_shown_p95_ms: f64,
    /// How much later the first verified text shows than the first token (same answers).
    shown_over_token_p50: f64,
    retrieval_p50_ms: f64,
    total_p50_ms: f64,
    prompt_tokens_p50: f64,
    completion_tokens_mean: f64,
    /// Answers that cite at least one passage, and markers removed for naming no passage.
    answers_with_citations: usize,
    removed_markers: usize,
    /// Generated sentences never shown (they failed the check), and answers where none passed
    /// (extractive).
    unverified_sentences: usize,
    extractive_answers: usize,
}

pub(crate) fn run(args: &AnswerBenchArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let kb = settings.data_dir.open(&args.kb)?;
    let (embedder, generator) = super::load_answer_engines(&kb, settings, None, None)?;
    let questions = args.data.query_texts(args.queries.as_deref(), args.count)?;
    let options = AnswerOptions {
        passages: Some(args.passages),
        // Every question goes to the model: this measures generation, not abstention.
        min_relevance: Some(-1.0),
        style: Some(args.style),
        max_tokens: Some(args.max_tokens),
        ..AnswerOptions::default()
    };
    let engines = Engines {
        embedder: &embedder,
        generator: &generator,
    };
    // Warm up: the first answer of a process pays for cache fills.
    basalt_answer::answer(&kb, engines, &questions[0], &[], &options, &mut |_| {})?;
    let mut first = Vec::new();
    let mut shown = Vec::new();
    let (mut unverified, mut extractive) = (0, 0);
    let mut retrieval = Vec::new();
    let mut total = Vec::new();
    let mut prompt_tokens = Vec::new();
    let (mut completion, mut cited, mut removed) = (0, 0, 0);
    for question in &questions {
        let answer = basalt_answer::answer(&kb, engines, question, &[], &options, &mut |_| {})?;
        first.push(answer.timings.first_token_ms);
        shown.push(answer.timings.first_shown_ms);
        unverified += answer.unverified_sentences;
        extractive += usize::from(answer.extractive);
        retrieval.push(answer.timings.retrieval_ms);
        total.push(answer.timings.total_ms);
        prompt_tokens.push(answer.usage.prompt_tokens as f64);
        completion += answer.usage.completion_tokens;
        cited += usize::from(!answer.citations.is_empty());
        removed += answer.removed_markers;
    }
    let percentile = |values: &mut Vec<f64>, p: f64| {
        values.sort_by(f64::total_cmp);
        super::bench::percentile(values, p)
    };
    let first_token_p50_ms = percentile(&mut first, 0.5);
    let first_shown_p50_ms = percentile(&mut shown, 0.5);
    let bench = AnswerBench {
        questions: questions.len(),
        passages: args.passages,
        threads: settings.threads,
        first_token_p50_ms,
        first_shown_p50_ms,
        first_shown_p95_ms: percentile(&mut shown, 0.95),
        shown_over_token_p50: first_shown_p50_ms / first_token_p50_ms.max(1e-9),
        first_token_p95_ms: percentile(&mut first, 0.95),
        retrieval_p50_ms: percentile(&mut retrieval, 0.5),
        total_p50_ms: percentile(&mut total, 0.5),
        prompt_tokens_p50: percentile(&mut prompt_tokens, 0.5),
        completion_tokens_mean: completion as f64 / questions.len() as f64,
        answers_with_citations: cited,
        removed_markers: removed,
        unverified_sentences: unverified,
        extractive_answers: extractive,
    };
    let json = serde_json::to_string_pretty(&bench)?;
    args.report.emit(&json, || {
        print_line(&format!(
            "{} answers, {} passages, {} threads: first token p50 {:.0} ms, p95 {:.0} ms \
             (retrieval p50 {:.1} ms, prompt p50 {:.0} tokens); total p50 {:.0} ms",
            bench.questions,
            bench.passages,
            bench.threads,
            bench.first_token_p50_ms,
            bench.first_token_p95_ms,
            bench.retrieval_p50_ms,
            bench.prompt_tokens_p50,
            bench.total_p50_ms
        ))?;
        print_line(&format!(
            "first verified text p50 {:.0} ms, p95 {:.0} ms ({:.2}× the first token)",
            bench.first_shown_p50_ms, bench.first_shown_p95_ms, bench.shown_over_token_p50
        ))?;
        print_line(&format!(
            "{} of {} answers cite a passage; {} markers naming no passage were removed; \
             {} generated sentences failed the check and were not shown; {} answers extractive",
            bench.answers_with_citations,
            bench.questions,
            bench.removed_markers,
            bench.unverified_sentences,
            bench.extractive_answers
        ))
    })?;
    Ok(ExitCode::SUCCESS)
}
