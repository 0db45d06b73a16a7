//! `basalt eval selector`: fit the answer-sentence selector on one part of a QA dataset (and,
//! optionally, SciFact's sentence-level rationales) and measure it on the part it did not see,
//! against cosine alone and the built-in weights.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use basalt_answer::AnswerOptions;
use basalt_answer::select::{self, FEATURES, Group, Selector};
use basalt_eval::metrics::{rouge, rouge_l};
use serde::{Deserialize, Serialize};

use super::eval_answers::{build_kb, load};
use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct SelectorArgs {
    /// Questions with gold answers, JSONL as for `eval answers` (repeatable); a candidate's
    /// gain is the share of its words in the gold answer (ROUGE-L precision; 0 under six
    /// words), so a sentence is judged by whether it is part of the answer, not by its length
    #[arg(long, value_name = "FILE")]
    dataset: Vec<PathBuf>,
    /// Knowledge base for --dataset [default: one built from the datasets' passages]
    #[arg(long)]
    kb: Option<String>,
    /// SciFact's training directory (queries.jsonl, rationales.jsonl): a candidate's gain is
    /// 1 when it is an annotated evidence sentence
    #[arg(long, value_name = "DIR")]
    scifact: Option<PathBuf>,
    /// Knowledge base holding SciFact's corpus (built by `eval retrieval`)
    #[arg(long, default_value = "scifact")]
    scifact_kb: String,
    /// Every N-th question (the 2nd, 4th, … with N = 2) of each source is held out: fitted
    /// on the others, measured on these
    #[arg(long, default_value_t = 2)]
    hold_out_every: usize,
    /// L2 penalty of the fit
    #[arg(long, default_value_t = 1e-3)]
    l2: f32,
    /// Gradient steps of the fit
    #[arg(long, default_value_t = 500)]
    steps: usize,
    /// Fit on every question (nothing held out) — for the weights to ship, once held-out
    /// figures are known
    #[arg(long)]
    fit_all: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// Also fine-tune all-MiniLM-L6-v2 as a cross-encoder (question and sentence read together)
    /// on the fitting questions' candidates, measure it on the held-out ones, and write it here
    #[arg(long, value_name = "FILE")]
    cross_encoder: Option<PathBuf>,
    /// Epochs of the cross-encoder's fine-tuning
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Times each --dataset pair is repeated in the cross-encoder's training (SciFact's
    /// claims outnumber them)
    #[arg(long, default_value_t = 1)]
    dataset_weight: usize,
    /// Write every question's candidates (text, features, gains) as JSON Lines, for analysis
    #[arg(long, value_name = "FILE")]
    dump: Option<PathBuf>,
}

/// One question's candidates, from one source.
#[derive(Serialize)]
struct Example {
    source: &'static str,
    held_out: bool,
    answerable: bool,
    relevance: Option<f32>,
    /// The relevance's parts: best sentence cosine, nearest passage cosine, unknown words.
    relevance_parts: (Option<f32>, Option<f32>, f32),
    question: String,
    texts: Vec<String>,
    /// Each candidate's ROUGE-L F against the gold answer (for SciFact, its gain).
    rouge_l: Vec<f32>,
    #[serde(serialize_with = "group_fields")]
    group: Group,
}

fn group_fields<S: serde::Serializer>(group: &Group, serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut out = serializer.serialize_struct("Group", 2)?;
    out.serialize_field("features", &group.features)?;
    out.serialize_field("gains", &group.gains)?;
    out.end()
}

#[derive(Serialize)]
struct Report {
    features: Vec<&'static str>,
    fitted_weights: Vec<f32>,
    fitted_on: usize,
    /// Per source, on the held-out questions: the mean gain of the candidate each selector
    /// puts first.
    held_out: Vec<SourceResult>,
}

#[derive(Serialize)]
struct SourceResult {
    source: &'static str,
    questions: usize,
    cosine: f64,
    builtin: f64,
    fitted: f64,
    /// The best any selector could do: the best candidate's gain.
    oracle: f64,
    /// The ROUGE-L F against the gold answer of the sentence each selector puts first (what
    /// an extractive answer scores).
    cosine_rouge_l: f64,
    builtin_rouge_l: f64,
    fitted_rouge_l: f64,
}

#[derive(Deserialize)]
struct Rationale {
    query_id: String,
    rationale: Vec<String>,
}

pub(crate) fn run(args: &SelectorArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.dataset.is_empty() || args.scifact.is_some(),
        "nothing to fit on: give --dataset, --scifact or both"
    );
    anyhow::ensure!(
        args.hold_out_every >= 2,
        "--hold-out-every must be at least 2"
    );
    let options = AnswerOptions::default();
    let held = |index: usize| !args.fit_all && index % args.hold_out_every == 1;
    let mut examples = Vec::new();
    if !args.dataset.is_empty() {
        let mut questions = Vec::new();
        for path in &args.dataset {
            // Held out by position in its own file.
            questions.extend(load(path, None)?.into_iter().enumerate());
        }
        let name = match &args.kb {
            Some(name) => name.clone(),
            None => {
                let all: Vec<_> = questions.iter().map(|(_, q)| q.clone()).collect();
                build_kb(settings, &all)?
            }
        };
        let kb = settings.data_dir.open(&name)?;
        let embedder = super::load_kb_embedder(&kb, settings)?;
        for (index, question) in &questions {
            let candidates =
                basalt_answer::selector_candidates(&kb, &embedder, &question.text, &options)
                    .with_context(|| format!("while retrieving for question {}", question.id))?;
            let (texts, features): (Vec<String>, Vec<_>) =
                candidates.candidates.iter().cloned().unzip();
            let gains = texts
                .iter()
                .map(|text| part_of(text, &question.answers))
                .collect();
            let rouge_l = texts
                .iter()
                .map(|text| rouge(text, &question.answers).rouge_l as f32)
                .collect();
            examples.push(Example {
                source: "dataset",
                held_out: held(*index),
                answerable: question.answerable,
                relevance: candidates.relevance,
                relevance_parts: candidates.relevance_parts,
                question: question.text.clone(),
                texts,
                rouge_l,
                group: Group { features, gains },
            });
        }
    }
    if let Some(directory) = &args.scifact {
        let kb = settings.data_dir.open(&args.scifact_kb).with_context(|| {
            format!(
                "SciFact's corpus is read from the knowledge base {:?}: build it with `basalt \
                 eval retrieval --kb {} --corpus …/corpus.jsonl …`",
                args.scifact_kb, args.scifact_kb
            )
        })?;
        let embedder = super::load_kb_embedder(&kb, settings)?;
        let claims: HashMap<String, String> =
            basalt_kb::eval::load_queries(&directory.join("queries.jsonl"))?
                .into_iter()
                .map(|query| (query.id, query.text))
                .collect();
        let mut evidence: Vec<(String, Vec<String>)> = Vec::new();
        for row in read_lines::<Rationale>(&directory.join("rationales.jsonl"))? {
            match evidence.iter_mut().find(|(id, _)| *id == row.query_id) {
                Some((_, sentences)) => sentences.extend(row.rationale),
                None => evidence.push((row.query_id, row.rationale)),
            }
        }
        for (index, (id, sentences)) in evidence.iter().enumerate() {
            let Some(claim) = claims.get(id) else {
                anyhow::bail!("rationales.jsonl names claim {id}, which queries.jsonl lacks");
            };
            let candidates = basalt_answer::selector_candidates(&kb, &embedder, claim, &options)
                .with_context(|| format!("while retrieving for claim {id}"))?;
            let (texts, features): (Vec<String>, Vec<_>) =
                candidates.candidates.iter().cloned().unzip();
            // The chunker may cut a sentence where SciFact's annotators did not: near-equal
            // text counts.
            let gains: Vec<f32> = texts
                .iter()
                .map(|text| {
                    let matched = sentences
                        .iter()
                        .any(|sentence| rouge_l(text, sentence).f >= 0.8);
                    f32::from(u8::from(matched))
                })
                .collect();
            examples.push(Example {
                source: "scifact",
                held_out: held(index),
                answerable: true,
                relevance: candidates.relevance,
                relevance_parts: candidates.relevance_parts,
                question: claim.clone(),
                rouge_l: gains.clone(),
                texts,
                group: Group { features, gains },
            });
        }
    }
    if let Some(path) = &args.dump {
        let mut lines = String::new();
        for example in &examples {
            lines.push_str(&serde_json::to_string(example)?);
            lines.push('\n');
        }
        std::fs::write(path, lines).with_context(|| format!("while writing {}", path.display()))?;
    }
    let training: Vec<Group> = examples
        .iter()
        .filter(|example| !example.held_out)
        .map(|example| example.group.clone())
        .collect();
    let fitted = select::fit(&training, args.l2, args.steps);
    let mut held_out = Vec::new();
    for source in ["dataset", "scifact"] {
        let chosen: Vec<&Example> = examples
            .iter()
            .filter(|example| example.source == source && example.held_out && example.answerable)
            .collect();
        if chosen.is_empty() {
            continue;
        }
        let gain = |selector: &Selector| mean_at_top(&chosen, selector, |e| &e.group.gains);
        let rouge_l = |selector: &Selector| mean_at_top(&chosen, selector, |e| &e.rouge_l);
        held_out.push(SourceResult {
            source,
            questions: chosen.len(),
            cosine: gain(&Selector::cosine()),
            builtin: gain(&Selector::builtin()),
            fitted: gain(&fitted),
            oracle: chosen
                .iter()
                .map(|e| f64::from(e.group.gains.iter().copied().fold(0.0, f32::max)))
                .sum::<f64>()
                / chosen.len() as f64,
            cosine_rouge_l: rouge_l(&Selector::cosine()),
            builtin_rouge_l: rouge_l(&Selector::builtin()),
            fitted_rouge_l: rouge_l(&fitted),
        });
    }
    if let Some(path) = &args.cross_encoder {
        cross_encoder(&examples, path, args, settings)?;
    }
    let report = Report {
        features: FEATURES.to_vec(),
        fitted_weights: fitted.weights.to_vec(),
        fitted_on: training.len(),
        held_out,
    };
    if args.json {
        print_line(&serde_json::to_string_pretty(&report)?)?;
    } else {
        print_line(&format!(
            "fitted on {} questions; weights:",
            report.fitted_on
        ))?;
        for (name, weight) in FEATURES.iter().zip(&report.fitted_weights) {
            print_line(&format!("  {name:<24} {weight:>9.4}"))?;
        }
        print_line("held out: mean gain of the sentence put first (ROUGE-L F in brackets)")?;
        print_line(&format!(
            "  {:<8} {:>9} {:>7} {:>8} {:>7} {:>7}",
            "source", "questions", "cosine", "built-in", "fitted", "oracle"
        ))?;
        for result in &report.held_out {
            print_line(&format!(
                "  {:<8} {:>9} {:>7.3} {:>8.3} {:>7.3} {:>7.3}",
                result.source,
                result.questions,
                result.cosine,
                result.builtin,
                result.fitted,
                result.oracle
            ))?;
            print_line(&format!(
                "  {:<8} {:>9} {:>7} {:>8} {:>7}",
                "",
                "",
                format!("({:.3})", result.cosine_rouge_l),
                format!("({:.3})", result.builtin_rouge_l),
                format!("({:.3})", result.fitted_rouge_l),
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The text a cross-encoder reads for a question and a candidate sentence.
fn pair(question: &str, sentence: &str) -> String {
    format!("{question} [SEP] {sentence}")
}

/// Fine-tunes the cross-encoder on the fitting questions (a candidate is positive when its gain
/// is at least 0.7; every candidate of an unanswerable question is negative), prints its
/// held-out results — the mean gain of the sentence it puts first, and how well its best
/// logit separates answerable from unanswerable questions (ROC AUC) next to the relevance
/// score's — and writes it to `path`.
fn cross_encoder(
    examples: &[Example],
    path: &std::path::Path,
    args: &SelectorArgs,
    settings: &Settings,
) -> anyhow::Result<()> {
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for example in examples.iter().filter(|example| !example.held_out) {
        let repeat = if example.source == "dataset" {
            args.dataset_weight.max(1)
        } else {
            1
        };
        for _ in 0..repeat {
            for (text, gain) in example.texts.iter().zip(&example.group.gains) {
                texts.push(pair(&example.question, text));
                labels.push(example.answerable && *gain >= 0.7);
            }
        }
    }
    let positives = labels.iter().filter(|label| **label).count();
    print_line(&format!(
        "cross-encoder: {} pairs, {positives} positive",
        texts.len()
    ))?;
    let options = basalt_model::FineTuneOptions {
        epochs: args.epochs,
        ..basalt_model::FineTuneOptions::default()
    };
    let base = settings.models_dir.default_embedding_model();
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let started = std::time::Instant::now();
    let progress = super::fine_tuning_progress(args.json);
    let borrowed: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoder = basalt_model::FineTunedClassifier::train(
        &base,
        &borrowed,
        &labels,
        CROSS_ENCODER_TOKENS,
        threads,
        &options,
        &mut |step, steps, loss| {
            progress.set_length(steps as u64);
            progress.set_position(step as u64);
            progress.set_message(format!("{loss:.4}"));
        },
    )?;
    progress.finish_and_clear();
    print_line(&format!(
        "fine-tuned in {:.0} s",
        started.elapsed().as_secs_f64()
    ))?;
    std::fs::write(path, encoder.to_bytes())
        .with_context(|| format!("while writing {}", path.display()))?;
    let mut by_source: HashMap<&str, (f64, f64, usize)> = HashMap::new();
    let mut answerability: Vec<(f32, f32, bool)> = Vec::new();
    let scoring = std::time::Instant::now();
    let mut scored = 0;
    for example in examples.iter().filter(|example| example.held_out) {
        if example.texts.is_empty() {
            continue;
        }
        let pairs: Vec<String> = example
            .texts
            .iter()
            .map(|text| pair(&example.question, text))
            .collect();
        let borrowed: Vec<&str> = pairs.iter().map(String::as_str).collect();
        let logits = encoder.logits(&borrowed)?;
        scored += logits.len();
        let (best, top) = logits
            .iter()
            .enumerate()
            .max_by(|left, right| left.1.total_cmp(right.1))
            .map_or((0, f32::MIN), |(index, logit)| (index, *logit));
        if example.source == "dataset" {
            answerability.push((top, example.relevance.unwrap_or(0.0), example.answerable));
        }
        if example.answerable {
            let entry = by_source.entry(example.source).or_default();
            entry.0 += f64::from(example.group.gains[best]);
            entry.1 += f64::from(example.rouge_l[best]);
            entry.2 += 1;
        }
    }
    print_line(&format!(
        "cross-encoder scoring: {:.1} ms a sentence",
        scoring.elapsed().as_secs_f64() * 1000.0 / scored.max(1) as f64
    ))?;
    for (source, (gain, rouge_l, count)) in &by_source {
        let count = (*count).max(1) as f64;
        print_line(&format!(
            "cross-encoder held out {source}: gain {:.3} (ROUGE-L {:.3})",
            gain / count,
            rouge_l / count
        ))?;
    }
    let auc = |score: &dyn Fn(&(f32, f32, bool)) -> f32| {
        let positives: Vec<f32> = answerability.iter().filter(|a| a.2).map(score).collect();
        let negatives: Vec<f32> = answerability.iter().filter(|a| !a.2).map(score).collect();
        let mut wins = 0.0;
        for p in &positives {
            for n in &negatives {
                wins += if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                };
            }
        }
        wins / (positives.len() * negatives.len()).max(1) as f64
    };
    print_line(&format!(
        "answerable vs unanswerable, held out: ROC AUC cross-encoder {:.3}, relevance {:.3}",
        auc(&|a| a.0),
        auc(&|a| a.1)
    ))?;
    Ok(())
}

/// Word pieces the cross-encoder reads of a question and a sentence.
const CROSS_ENCODER_TOKENS: usize = 96;

/// How much of `text` is part of one of the `answers`: its ROUGE-L precision, 0 for a text
/// under six words (a heading, a name) that any answer might contain.
fn part_of(text: &str, answers: &[String]) -> f32 {
    if basalt_eval::metrics::rouge_tokens(text).len() < 6 {
        return 0.0;
    }
    answers
        .iter()
        .map(|answer| rouge_l(text, answer).precision as f32)
        .fold(0.0, f32::max)
}

/// The mean over `chosen` of `value` (a number per candidate: its gain, its ROUGE-L) at the
/// candidate `selector` puts first.
fn mean_at_top(
    chosen: &[&Example],
    selector: &Selector,
    value: impl Fn(&Example) -> &[f32],
) -> f64 {
    let total: f64 = chosen
        .iter()
        .map(|example| {
            example
                .group
                .features
                .iter()
                .zip(value(example))
                .max_by(|left, right| selector.score(left.0).total_cmp(&selector.score(right.0)))
                .map_or(0.0, |(_, value)| f64::from(*value))
        })
        .sum();
    total / chosen.len().max(1) as f64
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<Vec<T>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("while reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}", path.display(), index + 1))
        })
        .collect()
}
