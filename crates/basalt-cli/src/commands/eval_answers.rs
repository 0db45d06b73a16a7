//! `basalt eval answers`: answer ClapNQ-format questions from a knowledge base and count what
//! a user would notice — real answers to answerable questions, "not found" for unanswerable
//! ones, and citation markers that name no source.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use basalt_answer::{AbstainReason, AnswerOptions, Engines};
use serde::Serialize;

use super::bench::ReportArgs;
use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct AnswersArgs {
    /// Knowledge base holding the passages
    #[arg(long)]
    kb: String,
    /// Questions the documents answer (JSONL: {"id", "input", "output": [{"answer"}]})
    #[arg(long, value_name = "FILE")]
    answerable: PathBuf,
    /// Questions the documents do not answer (same format)
    #[arg(long, value_name = "FILE")]
    unanswerable: PathBuf,
    /// Questions taken from each file (the first N)
    #[arg(long, default_value_t = 25)]
    limit: usize,
    /// Passages per answer [default: the KB's, else 5]
    #[arg(long)]
    passages: Option<usize>,
    /// Least relevance before the model is asked [default: the KB's, else the built-in]
    #[arg(long)]
    min_relevance: Option<f32>,
    /// Most tokens per answer
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Include every question's answer in the JSON
    #[arg(long)]
    details: bool,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Serialize)]
struct Record {
    id: String,
    answerable: bool,
    question: String,
    answer: String,
    abstained: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    abstain_reason: Option<AbstainReason>,
    relevance: Option<f32>,
    grounding: f64,
    citations: usize,
    removed_markers: usize,
    /// Citation references to a passage the model was not given (must be 0).
    invalid_references: usize,
}

#[derive(Serialize)]
struct Report {
    knowledge_base: String,
    answerable: usize,
    unanswerable: usize,
    /// Share of answerable questions that got a real answer.
    answered_rate: f64,
    /// Share of unanswerable questions that got the "not found" answer.
    abstained_rate: f64,
    abstained_by_retrieval: usize,
    abstained_by_model: usize,
    removed_markers: usize,
    invalid_references: usize,
    answers_with_citations: usize,
    first_token_p50_ms: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    records: Vec<Record>,
}

#[derive(serde::Deserialize)]
struct Question {
    id: String,
    input: String,
}

fn load(path: &Path, limit: usize) -> anyhow::Result<Vec<Question>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("while reading the questions {}", path.display()))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .take(limit)
        .enumerate()
        .map(|(index, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}: line {}", path.display(), index + 1))
        })
        .collect()
}

pub(crate) fn run(args: &AnswersArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let kb = settings.data_dir.open(&args.kb)?;
    let (embedder, generator) = super::load_answer_engines(&kb, settings, None, None)?;
    let engines = Engines {
        embedder: &embedder,
        generator: &generator,
    };
    let options = AnswerOptions {
        passages: args.passages,
        min_relevance: args.min_relevance,
        max_tokens: Some(args.max_tokens),
        ..AnswerOptions::default()
    };
    let mut questions: Vec<(bool, Question)> = Vec::new();
    questions.extend(
        load(&args.answerable, args.limit)?
            .into_iter()
            .map(|q| (true, q)),
    );
    questions.extend(
        load(&args.unanswerable, args.limit)?
            .into_iter()
            .map(|q| (false, q)),
    );
    let mut records = Vec::new();
    let mut first_tokens = Vec::new();
    for (answerable, question) in questions {
        let answer =
            basalt_answer::answer(&kb, engines, &question.input, &[], &options, &mut |_| {})
                .with_context(|| format!("while answering question {}", question.id))?;
        if !answer.abstained || answer.abstain_reason == Some(AbstainReason::ModelFoundNoAnswer) {
            first_tokens.push(answer.timings.first_token_ms);
        }
        let invalid_references = answer
            .citations
            .iter()
            .flat_map(|citation| &citation.references)
            .filter(|reference| {
                !answer.sources.iter().any(|source| {
                    source.number == reference.number && source.chunk_id == reference.chunk_id
                })
            })
            .count();
        records.push(Record {
            id: question.id,
            answerable,
            question: question.input,
            answer: answer.answer,
            abstained: answer.abstained,
            abstain_reason: answer.abstain_reason,
            relevance: answer.relevance,
            grounding: answer.grounding,
            citations: answer.citations.len(),
            removed_markers: answer.removed_markers,
            invalid_references,
        });
    }
    let count = |answerable: bool| {
        records
            .iter()
            .filter(|r| r.answerable == answerable)
            .count()
    };
    let rate = |answerable: bool, abstained: bool| {
        let total = count(answerable).max(1);
        records
            .iter()
            .filter(|r| r.answerable == answerable && r.abstained == abstained)
            .count() as f64
            / total as f64
    };
    first_tokens.sort_by(f64::total_cmp);
    let report = Report {
        knowledge_base: args.kb.clone(),
        answerable: count(true),
        unanswerable: count(false),
        answered_rate: rate(true, false),
        abstained_rate: rate(false, true),
        abstained_by_retrieval: records
            .iter()
            .filter(|r| r.abstain_reason == Some(AbstainReason::NoRelevantPassages))
            .count(),
        abstained_by_model: records
            .iter()
            .filter(|r| r.abstain_reason == Some(AbstainReason::ModelFoundNoAnswer))
            .count(),
        removed_markers: records.iter().map(|r| r.removed_markers).sum(),
        invalid_references: records.iter().map(|r| r.invalid_references).sum(),
        answers_with_citations: records.iter().filter(|r| r.citations > 0).count(),
        first_token_p50_ms: first_tokens
            .get(first_tokens.len() / 2)
            .copied()
            .unwrap_or(0.0),
        records: if args.details { records } else { Vec::new() },
    };
    let json = serde_json::to_string_pretty(&report)?;
    args.report.emit(&json, || {
        print_line(&format!(
            "{} answerable: {:.0}% answered; {} unanswerable: {:.0}% \"not found\" \
             ({} by retrieval, {} by the model)",
            report.answerable,
            report.answered_rate * 100.0,
            report.unanswerable,
            report.abstained_rate * 100.0,
            report.abstained_by_retrieval,
            report.abstained_by_model
        ))?;
        print_line(&format!(
            "citations: {} answers cite passages; {} markers naming no passage removed; \
             {} references to passages not given (must be 0)",
            report.answers_with_citations, report.removed_markers, report.invalid_references
        ))
    })?;
    Ok(ExitCode::SUCCESS)
}
