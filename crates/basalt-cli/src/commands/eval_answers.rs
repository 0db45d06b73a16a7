//! `basalt eval answers`: answer the questions of a QA dataset from a knowledge base (built
//! from the dataset's own passages when none is named) and measure what a team needs to know —
//! lexical agreement with the gold answers, faithfulness and citation support (the grounding
//! scorer of `basalt-answer`), answering and abstaining, gold-passage recall and cost — with
//! reports in JSON, Markdown and HTML and a gate for CI.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use basalt_answer::{Answer, AnswerOptions, Engines, score_grounding};
use basalt_eval::gate::{self, Bound};
use basalt_eval::metrics::{BleuStats, exact_match, rouge, token_f1};
use basalt_eval::report::{CitationRecord, CitedPassage, RunInfo};
use basalt_eval::{AnswerReport, QuestionRecord};
use basalt_kb::{IngestOptions, KbError, KbSettings, KnowledgeBase, PromptTemplate, SearchOptions};
use basalt_model::Embedder;
use serde::Deserialize;

use super::print_line;
use crate::settings::Settings;

/// The grounding scorer's support (0–1) from which a passage counts as supporting a sentence:
/// the middle of the scale. The scorer separates ClapNQ's gold answers scored against their own
/// passage from the same answers against another record's (AUC 1.0, docs/guardrails.md); this
/// exact cut was not tuned, and the HTML report shows each citation's support to judge it by.
const SUPPORTED: f32 = 0.5;

#[derive(Debug, clap::Args)]
pub(crate) struct AnswersArgs {
    /// Questions, JSONL (repeatable): {"id", "question" or "input", "answers": [...] or
    /// ClapNQ's "output": [{"answer"}], "answerable"?, "gold_passages"?, "passages"?}
    #[arg(long, value_name = "FILE", required = true)]
    dataset: Vec<PathBuf>,
    /// Knowledge base to answer from [default: one built from the datasets' passages]
    #[arg(long)]
    kb: Option<String>,
    /// Questions taken from each dataset (the first N)
    #[arg(long)]
    limit: Option<usize>,
    /// Passages per answer [default: the KB's, else 5]
    #[arg(long)]
    passages: Option<usize>,
    /// Chat model: a name registered with `basalt models add`, a GGUF file, or
    /// smollm2-135m-instruct [default: the knowledge base's answer.model, else the installed
    /// SmolLM2-135M-Instruct]
    #[arg(long, value_name = "NAME|PATH")]
    model: Option<String>,
    /// Least relevance before the model is asked [default: the KB's, else the built-in]
    #[arg(long)]
    min_relevance: Option<f32>,
    /// extractive or generative [default: the KB's answer.style, else extractive]
    #[arg(long, value_name = "STYLE")]
    style: Option<basalt_kb::AnswerStyle>,
    /// Most tokens per answer
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Another prompt template, JSON {"version", "system", "passage", "user"}, to compare
    /// prompts on numbers
    #[arg(long, value_name = "FILE")]
    prompt_template: Option<PathBuf>,
    /// Write report.json, report.md and report.html into this directory
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// Fail (exit status 1) when METRIC is below VALUE; repeatable
    #[arg(long, value_name = "METRIC=VALUE", value_parser = gate::parse_bound)]
    fail_under: Vec<Bound>,
    /// Fail when METRIC is above VALUE (latencies, token counts); repeatable
    #[arg(long, value_name = "METRIC=VALUE", value_parser = gate::parse_bound)]
    fail_over: Vec<Bound>,
}

/// One question as read from a dataset.
#[derive(Debug, Clone)]
pub(crate) struct Question {
    pub(crate) id: String,
    pub(crate) text: String,
    pub(crate) answers: Vec<String>,
    pub(crate) answerable: bool,
    /// Short strings, one of which an answer must hold to state the gold fact ("two weeks",
    /// "14 days"); empty when the dataset gives none.
    facts: Vec<String>,
    gold_passages: Vec<String>,
    passages: Vec<Passage>,
}

#[derive(Debug, Clone, Deserialize)]
struct Passage {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    text: String,
}

#[derive(Debug, Deserialize)]
struct RawQuestion {
    id: serde_json::Value,
    #[serde(default)]
    question: Option<String>,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    answers: Option<Vec<String>>,
    #[serde(default)]
    output: Option<Vec<RawOutput>>,
    #[serde(default)]
    answerable: Option<bool>,
    #[serde(default, alias = "accept")]
    facts: Vec<String>,
    #[serde(default)]
    gold_passages: Option<Vec<String>>,
    #[serde(default)]
    passages: Vec<Passage>,
}

#[derive(Debug, Deserialize)]
struct RawOutput {
    #[serde(default)]
    answer: String,
}

pub(crate) fn load(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<Question>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("while reading the questions {}", path.display()))?;
    let mut questions = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if limit.is_some_and(|limit| questions.len() >= limit) {
            break;
        }
        let at = || format!("{} line {}", path.display(), index + 1);
        let raw: RawQuestion = serde_json::from_str(line).with_context(at)?;
        let id = match raw.id {
            serde_json::Value::String(id) => id,
            other => other.to_string(),
        };
        let text = raw.question.or(raw.input).filter(|q| !q.trim().is_empty());
        let Some(text) = text else {
            anyhow::bail!("{}: no \"question\" (or ClapNQ's \"input\")", at());
        };
        let answers: Vec<String> = raw
            .answers
            .unwrap_or_else(|| {
                raw.output
                    .unwrap_or_default()
                    .into_iter()
                    .map(|output| output.answer)
                    .collect()
            })
            .into_iter()
            .filter(|answer| !answer.trim().is_empty())
            .collect();
        let answerable = raw.answerable.unwrap_or(!answers.is_empty());
        if answerable && answers.is_empty() {
            anyhow::bail!("{}: an answerable question needs gold \"answers\"", at());
        }
        let passage_ids: Vec<String> = raw
            .passages
            .iter()
            .enumerate()
            .map(|(number, passage)| passage_id(&id, number, passage))
            .collect();
        let gold_passages = raw
            .gold_passages
            .unwrap_or_else(|| if answerable { passage_ids } else { Vec::new() });
        questions.push(Question {
            id,
            text,
            answers,
            answerable,
            facts: raw.facts,
            gold_passages,
            passages: raw.passages,
        });
    }
    Ok(questions)
}

/// The document id a dataset passage gets in the knowledge base built from it.
fn passage_id(question: &str, number: usize, passage: &Passage) -> String {
    passage.id.clone().unwrap_or_else(|| {
        if number == 0 {
            format!("p{question}")
        } else {
            format!("p{question}-{number}")
        }
    })
}

/// A knowledge base of the questions' passages, named after their hash, built once and reused.
pub(crate) fn build_kb(settings: &Settings, questions: &[Question]) -> anyhow::Result<String> {
    let mut seen = HashSet::new();
    let mut lines = Vec::new();
    for question in questions {
        for (number, passage) in question.passages.iter().enumerate() {
            let id = passage_id(&question.id, number, passage);
            if seen.insert(id.clone()) {
                lines.push(
                    serde_json::json!({"_id": id, "title": passage.title, "text": passage.text})
                        .to_string(),
                );
            }
        }
    }
    anyhow::ensure!(
        !lines.is_empty(),
        "the datasets carry no passages to build a knowledge base from: name one with --kb"
    );
    let corpus = lines.join("\n") + "\n";
    let name = format!(
        "eval-{}",
        &basalt_core::hex::sha256(corpus.as_bytes())[..12]
    );
    let data = &settings.data_dir;
    let directory = data.tenant_dir().join("eval-corpora");
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("while creating {}", directory.display()))?;
    let path = directory.join(format!("{name}.jsonl"));
    std::fs::write(&path, corpus).with_context(|| format!("while writing {}", path.display()))?;
    match data.create(&KbSettings::new(&name)) {
        Ok(()) | Err(KbError::Exists { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    let kb = data.open(&name)?;
    let embedder = super::load_kb_embedder(&kb, settings)?;
    let report = super::ingest::run_with_progress(
        &kb,
        &embedder,
        std::slice::from_ref(&path),
        &IngestOptions::default(),
    )?;
    if let Some(failed) = report.failed.first() {
        anyhow::bail!(
            "the passages did not ingest: {}: {}",
            failed.path,
            failed.reason
        );
    }
    Ok(name)
}

fn read_template(path: &Path) -> anyhow::Result<PromptTemplate> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("while reading the prompt template {}", path.display()))?;
    let template: PromptTemplate = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected {{\"version\", \"system\", \"passage\", \"user\"}}",
            path.display()
        )
    })?;
    for (field, value, needed) in [
        ("user", &template.user, &["{passages}", "{question}"][..]),
        ("passage", &template.passage, &["{n}", "{text}"][..]),
    ] {
        for placeholder in needed {
            anyhow::ensure!(
                value.contains(placeholder),
                "{}: \"{field}\" must contain {placeholder}",
                path.display()
            );
        }
    }
    anyhow::ensure!(
        !template.version.trim().is_empty(),
        "{}: give the template a \"version\", so reports tell runs apart",
        path.display()
    );
    Ok(template)
}

/// The answer without its citation markers, for the lexical metrics.
fn without_markers(text: &str) -> String {
    basalt_answer::strip_markers(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Characters `start..end` of `text`.
fn chars(text: &str, start: usize, end: usize) -> String {
    text.chars()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect()
}

/// Faithfulness and citation support of one answer: the share of its sentences supported by
/// the passages it cites (0 when it cites none), each citation with the support of each
/// passage it names, and the number of sentences (for citation coverage).
fn support(
    embedder: &dyn Embedder,
    question: &str,
    answer: &Answer,
) -> anyhow::Result<(Option<f64>, Vec<CitationRecord>, usize)> {
    if answer.abstained {
        return Ok((None, Vec::new(), 0));
    }
    let mut records = Vec::new();
    let mut cited: Vec<basalt_answer::Reference> = Vec::new();
    for citation in &answer.citations {
        let text = without_markers(&chars(
            &answer.answer,
            citation.span.start,
            citation.span.end,
        ));
        let mut passages = Vec::new();
        for reference in &citation.references {
            let report =
                score_grounding(embedder, question, &text, std::slice::from_ref(reference))?;
            passages.push(CitedPassage {
                number: reference.number,
                doc_id: reference.doc_id.clone(),
                title: reference.title.clone(),
                support: report.grounding,
                supported: report.grounding >= SUPPORTED,
            });
            if !cited
                .iter()
                .any(|known| known.chunk_id == reference.chunk_id)
            {
                cited.push(reference.clone());
            }
        }
        let kind = serde_json::to_value(citation.kind)?
            .as_str()
            .unwrap_or("cited")
            .to_owned();
        records.push(CitationRecord {
            text,
            passages,
            kind,
        });
    }
    // Sentences are counted as the scorer splits them (those with content words).
    let report = score_grounding(embedder, question, &answer.answer, &cited)?;
    let sentences = report.sentences.len();
    let faithfulness = if sentences == 0 {
        1.0
    } else if cited.is_empty() {
        0.0
    } else {
        report
            .sentences
            .iter()
            .filter(|sentence| sentence.support >= SUPPORTED)
            .count() as f64
            / sentences as f64
    };
    Ok((Some(faithfulness), records, sentences))
}

/// The share of `gold` documents among the first `depth` distinct documents retrieved.
fn gold_recall(
    kb: &KnowledgeBase,
    embedder: &dyn Embedder,
    question: &str,
    gold: &[String],
    depth: usize,
) -> anyhow::Result<Option<f64>> {
    if gold.is_empty() {
        return Ok(None);
    }
    let vector = embedder.embed_query(question)?;
    let options = SearchOptions {
        k: depth * 4,
        ..SearchOptions::default()
    };
    let hits = kb.search_vector(question, &vector, &options)?;
    let ranked = basalt_kb::eval::rank_documents(&hits, depth);
    let found = gold.iter().filter(|id| ranked.contains(id)).count();
    Ok(Some(found as f64 / gold.len() as f64))
}

pub(crate) fn run(args: &AnswersArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let mut questions = Vec::new();
    let mut all = Vec::new();
    for path in &args.dataset {
        let loaded = load(path, None)?;
        questions.extend(
            loaded
                .iter()
                .take(args.limit.unwrap_or(usize::MAX))
                .cloned(),
        );
        all.extend(loaded);
    }
    anyhow::ensure!(!questions.is_empty(), "the datasets hold no questions");
    // Built from every question's passages, not only the ones asked: the others are the
    // distractors retrieval must see past, and the same datasets give the same knowledge base.
    let name = match &args.kb {
        Some(name) => name.clone(),
        None => build_kb(settings, &all)?,
    };
    drop(all);
    let mut kb = settings.data_dir.open(&name)?;
    if let Some(path) = &args.prompt_template {
        kb.settings.answer.template = Some(read_template(path)?);
    }
    let (embedder, generator) =
        super::load_chosen_engines(&kb, settings, args.model.as_deref(), None)?;
    let engines = Engines {
        embedder: &embedder,
        generator: generator.as_ref(),
    };
    let options = AnswerOptions {
        passages: args.passages,
        min_relevance: args.min_relevance,
        style: args.style,
        max_tokens: Some(args.max_tokens),
        ..AnswerOptions::default()
    };
    let depth = args.passages.or(kb.settings.answer.passages).unwrap_or(5);
    let started = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let progress = indicatif::ProgressBar::new(questions.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} questions, {elapsed} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if args.json {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut records = Vec::new();
    let mut bleu = BleuStats::default();
    let mut template_version = String::new();
    for question in questions {
        let answer =
            basalt_answer::answer(&kb, engines, &question.text, &[], &options, &mut |_| {})
                .with_context(|| format!("while answering question {}", question.id))?;
        template_version.clone_from(&answer.template_version);
        let plain = without_markers(&answer.answer);
        let lexical = question.answerable;
        if lexical {
            bleu.add(&BleuStats::of(&plain, &question.answers));
        }
        let (faithfulness, citations, sentences) = support(&embedder, &question.text, &answer)?;
        let (facts_checked, unsupported_facts) = if answer.abstained {
            (0, Vec::new())
        } else {
            // A cited passage is shown with its title ("Toby Flenderson" names the page whose
            // passage says only "Toby"): both count as what the citation holds.
            let mut cited: Vec<&str> = Vec::new();
            for reference in answer.citations.iter().flat_map(|c| &c.references) {
                for held in reference.title.iter().chain([&reference.text]) {
                    if !cited.contains(&held.as_str()) {
                        cited.push(held);
                    }
                }
            }
            basalt_eval::metrics::unsupported_facts(&plain, &cited)
        };
        let recall = gold_recall(
            &kb,
            &embedder,
            &question.text,
            &question.gold_passages,
            depth,
        )?;
        records.push(QuestionRecord {
            rouge: lexical.then(|| rouge(&plain, &question.answers)),
            token_f1: lexical.then(|| token_f1(&plain, &question.answers)),
            exact_match: lexical.then(|| exact_match(&plain, &question.answers)),
            fact_right: (lexical && !question.facts.is_empty()).then(|| {
                let said = plain.to_lowercase();
                !answer.abstained
                    && question
                        .facts
                        .iter()
                        .any(|fact| said.contains(&fact.to_lowercase()))
            }),
            faithfulness,
            citations,
            sentences,
            gold_recall: recall.filter(|_| question.answerable),
            id: question.id,
            question: question.text,
            answerable: question.answerable,
            gold_answers: question.answers,
            answer: answer.answer,
            abstained: answer.abstained,
            extractive: answer.extractive,
            unverified_sentences: answer.unverified_sentences,
            facts_checked,
            unsupported_facts,
            abstain_reason: answer
                .abstain_reason
                .and_then(|reason| serde_json::to_value(reason).ok())
                .and_then(|value| value.as_str().map(str::to_owned)),
            relevance: answer.relevance,
            first_token_ms: answer.timings.first_token_ms,
            first_shown_ms: answer.timings.first_shown_ms,
            total_ms: answer.timings.total_ms,
            generation_ms: answer.timings.generation_ms,
            prompt_tokens: answer.usage.prompt_tokens,
            completion_tokens: answer.usage.completion_tokens,
        });
        progress.inc(1);
    }
    progress.finish_and_clear();
    let run = RunInfo {
        knowledge_base: name,
        datasets: args
            .dataset
            .iter()
            .map(|path| path.display().to_string())
            .collect(),
        template_version,
        generation_model: generator.info().model_name.clone(),
        max_tokens: args.max_tokens,
        passages: args.passages,
        min_relevance: args.min_relevance,
        support_threshold: SUPPORTED,
        started,
    };
    let report = AnswerReport::new(run, records, bleu.score());
    if let Some(directory) = &args.out {
        let files = [
            ("report.json", serde_json::to_string_pretty(&report)?),
            ("report.md", report.markdown()),
            ("report.html", report.html()),
        ];
        write_files(directory, &files)?;
    }
    if args.json {
        print_line(&serde_json::to_string_pretty(&report)?)?;
    } else {
        print_summary(&report, args.out.as_deref())?;
    }
    let values = report
        .metrics
        .iter()
        .map(|(name, metric)| (name.clone(), metric.value))
        .collect();
    enforce_gate(&values, &args.fail_under, &args.fail_over)
}

/// Checks the gate's bounds: an error naming every metric that broke one.
pub(crate) fn enforce_gate(
    values: &std::collections::BTreeMap<String, f64>,
    under: &[Bound],
    over: &[Bound],
) -> anyhow::Result<ExitCode> {
    let failures = gate::check(values, under, over).map_err(anyhow::Error::msg)?;
    if !failures.is_empty() {
        anyhow::bail!("evaluation gate failed: {}", failures.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `files` (name, contents) into `directory`, made if missing.
fn write_files(directory: &Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("while creating {}", directory.display()))?;
    for (file, text) in files {
        let path = directory.join(file);
        std::fs::write(&path, text.as_bytes())
            .with_context(|| format!("while writing {}", path.display()))?;
    }
    Ok(())
}

fn print_summary(report: &AnswerReport, out: Option<&Path>) -> anyhow::Result<()> {
    let answerable = report.records.iter().filter(|r| r.answerable).count();
    print_line(&format!(
        "{} questions ({answerable} answerable) on knowledge base {}, template {}",
        report.records.len(),
        report.run.knowledge_base,
        report.run.template_version
    ))?;
    print_line(&format!(
        "{:<24} {:>10} {:>8} {:>6}",
        "metric", "value", "±", "over"
    ))?;
    for (name, _) in basalt_eval::report::METRICS {
        if let Some(metric) = report.metrics.get(*name) {
            print_line(&format!(
                "{name:<24} {:>10.4} {:>8.4} {:>6}",
                metric.value, metric.standard_error, metric.count
            ))?;
        }
    }
    if let Some(directory) = out {
        print_line(&format!(
            "wrote report.json, report.md and report.html to {}",
            directory.display()
        ))?;
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    /// Reports written by `eval answers --out` (report.json, or its directory); the first is
    /// the baseline
    #[arg(required = true, num_args = 2.., value_name = "REPORT")]
    reports: Vec<PathBuf>,
    /// Also write compare.md and compare.html (with the chart) into this directory
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the comparison as JSON
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when a metric got worse beyond noise
    #[arg(long)]
    fail_on_regression: bool,
}

pub(crate) fn compare(args: &CompareArgs) -> anyhow::Result<ExitCode> {
    let mut runs = Vec::new();
    for path in &args.reports {
        let file = if path.is_dir() {
            path.join("report.json")
        } else {
            path.clone()
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("while reading the report {}", file.display()))?;
        let report: AnswerReport = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a report of `basalt eval answers --out`",
                file.display()
            )
        })?;
        runs.push((file.display().to_string(), report));
    }
    let comparison = gate::compare(&runs);
    if let Some(directory) = &args.out {
        let files = [
            ("compare.md", comparison.markdown()),
            ("compare.html", comparison.html()),
        ];
        write_files(directory, &files)?;
    }
    if args.json {
        print_line(&serde_json::to_string_pretty(&comparison)?)?;
    } else {
        print_line(comparison.table().trim_end())?;
    }
    if args.fail_on_regression && !comparison.regressions.is_empty() {
        anyhow::bail!("worse beyond noise: {}", comparison.regressions.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_removed_for_the_lexical_metrics() {
        assert_eq!(
            without_markers("Paris [1]. It is big [2, 3]."),
            "Paris . It is big ."
        );
        assert_eq!(without_markers("an [aside] stays"), "an [aside] stays");
    }

    #[test]
    fn clapnq_and_plain_records_are_read() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("q.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"id": 7, "input": "where?", "output": [{"answer": "here"}], "passages": [{"title": "T", "text": "here it is"}]}"#,
                "\n",
                r#"{"id": "u1", "input": "why?", "output": [{"answer": ""}], "passages": [{"title": "U", "text": "no"}]}"#,
                "\n",
                r#"{"id": "q3", "question": "who?", "answers": ["me"], "gold_passages": ["d9"]}"#,
                "\n",
            ),
        )
        .expect("write");
        let questions = load(&path, None).expect("loads");
        assert_eq!(questions.len(), 3);
        assert_eq!(questions[0].id, "7");
        assert!(questions[0].answerable);
        assert_eq!(questions[0].gold_passages, ["p7"]);
        assert!(!questions[1].answerable);
        assert!(questions[1].gold_passages.is_empty());
        assert_eq!(questions[2].gold_passages, ["d9"]);
        assert_eq!(load(&path, Some(1)).expect("loads").len(), 1);
        std::fs::write(&path, r#"{"id": 1, "answers": ["x"]}"#).expect("write");
        let error = load(&path, None).expect_err("no question");
        assert!(error.to_string().contains("line 1"), "{error}");
    }
}
