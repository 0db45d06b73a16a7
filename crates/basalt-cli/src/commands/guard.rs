//! `basalt guard`: named, versioned guardrail configurations, and checking text against them
//! (like Bedrock's ApplyGuardrail). `basalt eval guardrails` scores the detectors on labelled
//! data.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use basalt_guard::attacks::{AttackClassifier, TrainOptions};
use basalt_guard::eval::{Dataset, PromptRecord, evaluate_prompts, evaluate_spans, read_dataset};
use basalt_guard::{GuardModels, Guardrail, GuardrailConfig, GuardrailConfigs, Source};
use basalt_model::{Embedder, LocalEmbedder, LocalEmbedderOptions};

use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum GuardCommand {
    /// Store a configuration (JSON) under a name; storing a name again adds a version
    #[command(
        after_help = "Example:\n  basalt guard create support --file support.json\n\n\
                            The configuration format is in docs/guardrails.md."
    )]
    Create {
        name: String,
        /// The configuration, JSON
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// List the guardrails with their latest version
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print a guardrail's configuration
    Show {
        name: String,
        /// A version other than the latest
        #[arg(long)]
        version: Option<u32>,
    },
    /// Delete a guardrail and all its versions
    Delete { name: String },
    /// Check text against a guardrail: anonymized text, or blocked, with what acted and why
    #[command(after_help = "Examples:\n  \
        basalt guard check --guardrail support 'Mail me at ana@example.com'\n  \
        echo 'Card 4716424521511864' | basalt guard check --guardrail support:2 --source output --json -")]
    Check(CheckArgs),
    /// Train the prompt-attack classifier from labelled prompts, calibrated by cross-validation
    #[command(after_help = "Example:\n  \
        basalt guard train-attacks --dataset guardrails/prompt-attacks.jsonl\n\n\
        Lines are {\"text\", \"label\": \"attack\" | \"benign\"}. The classifier is written to \
        <models dir>/prompt-attack/classifier.bin, where guardrails with a prompt_attacks \
        policy find it.")]
    TrainAttacks(TrainAttacksArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct TrainAttacksArgs {
    /// Labelled prompts, JSONL: {"text", "label": "attack" | "benign"}
    #[arg(long, value_name = "FILE.jsonl")]
    dataset: PathBuf,
    /// Where to write the classifier [default: <models dir>/prompt-attack/classifier.bin]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Do nothing when the classifier file exists and was trained as asked on this dataset
    /// (otherwise it is trained again)
    #[arg(long)]
    if_missing: bool,
    /// Cross-validation folds for the calibration
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=20))]
    folds: u16,
    /// Hash bits per n-gram block: the file holds 2^(bits+3) floats (18: 4 MB, 16: 1 MB)
    #[arg(long, default_value_t = 18, value_parser = clap::value_parser!(u32).range(10..=24))]
    bits: u32,
    /// Also fine-tune the embedding model on the prompts and stack it on the n-gram classifier
    /// (about 5 minutes per fold on 2 cores for the shared set; docs/guardrails.md)
    #[arg(long)]
    encoder: bool,
    /// Cross-validation folds the stacked encoder is measured and calibrated on, one encoder
    /// fine-tuned per fold [default: all of them, so every prompt counts]. 1 is that many times
    /// faster, with thresholds read off one fold's prompts
    #[arg(long, value_name = "N", requires = "encoder",
          value_parser = clap::value_parser!(u16).range(1..=20))]
    encoder_folds: Option<u16>,
    /// Write every held-out prompt's scores, JSONL {"text", "label", "fold" (from 1), "svm",
    /// "encoder", "score"}, to check the calibration independently
    #[arg(long, value_name = "FILE.jsonl", requires = "encoder")]
    held_out_scores: Option<PathBuf>,
    /// Embedding model to fine-tune with --encoder [default: the installed all-MiniLM-L6-v2]
    #[arg(long, value_name = "DIR", requires = "encoder")]
    base_model: Option<PathBuf>,
    /// Print the training report as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// A stored guardrail, NAME or NAME:VERSION
    #[arg(
        long,
        value_name = "NAME[:VERSION]",
        conflicts_with = "config",
        required_unless_present = "config"
    )]
    guardrail: Option<String>,
    /// A configuration file instead of a stored guardrail
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Which way the text goes: input (to the model) or output (from the model)
    #[arg(long, default_value = "input", value_parser = parse_source)]
    source: Source,
    /// Print JSON: {"outcome", "text", "assessments": [...]}
    #[arg(long)]
    json: bool,
    /// The text to check; `-` reads standard input
    text: String,
}

fn parse_source(value: &str) -> Result<Source, String> {
    match value {
        "input" => Ok(Source::Input),
        "output" => Ok(Source::Output),
        other => Err(format!("{other:?}: expected input or output")),
    }
}

fn read_config(path: &Path) -> anyhow::Result<GuardrailConfig> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "while reading the guardrail configuration {}",
            path.display()
        )
    })?;
    GuardrailConfig::from_json(&text)
        .with_context(|| format!("invalid guardrail configuration {}", path.display()))
}

pub(crate) fn run(command: GuardCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let store = super::guardrails(&settings.data_dir);
    match command {
        GuardCommand::Create { name, file } => {
            let stored = store.save(&name, &read_config(&file)?)?;
            print_line(&format!(
                "stored guardrail {} version {}",
                stored.name, stored.version
            ))?;
        }
        GuardCommand::List { json } => {
            let listed = store.list()?;
            if json {
                print_line(&serde_json::to_string_pretty(&listed)?)?;
            } else if listed.is_empty() {
                print_line(
                    "no guardrails (store one with `basalt guard create NAME --file CONFIG.json`)",
                )?;
            } else {
                print_line(&format!("{:<24} {:>7}  description", "name", "version"))?;
                for summary in listed {
                    print_line(&format!(
                        "{:<24} {:>7}  {}",
                        summary.name, summary.latest_version, summary.description
                    ))?;
                }
            }
        }
        GuardCommand::Show { name, version } => {
            let stored = store.load(&name, version)?;
            print_line(&serde_json::to_string_pretty(&stored)?)?;
        }
        GuardCommand::Delete { name } => {
            store.delete(&name)?;
            print_line(&format!("deleted guardrail {name}"))?;
        }
        GuardCommand::Check(args) => return check(&args, store.as_ref(), settings),
        GuardCommand::TrainAttacks(args) => return train_attacks(&args, settings),
    }
    Ok(ExitCode::SUCCESS)
}

/// The stored guardrail `NAME` or `NAME:VERSION`; `embedder` recognises its denied topics
/// (loaded from `settings` when it has some and none is given).
pub(crate) fn load(
    store: &dyn GuardrailConfigs,
    reference: &str,
    settings: &Settings,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<Guardrail> {
    build(store.load_reference(reference)?.config, settings, embedder)
}

/// A guardrail from its configuration, with the models its policies need: the embedding
/// model for denied topics, the prompt-attack classifier for prompt attacks.
fn build(
    config: GuardrailConfig,
    settings: &Settings,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<Guardrail> {
    let mut models = GuardModels::default();
    if !config.denied_topics.is_empty() {
        models.embedder = Some(match embedder {
            Some(embedder) => embedder,
            None => {
                let path = settings.models_dir.default_embedding_model();
                let options = LocalEmbedderOptions {
                    threads: settings.threads,
                    ..LocalEmbedderOptions::default()
                };
                Arc::new(LocalEmbedder::load(&path, &options).with_context(|| {
                    format!(
                        "the guardrail's denied topics need the embedding model {}",
                        path.display()
                    )
                })?)
            }
        });
    }
    if config.prompt_attacks.is_some() {
        let path = settings.models_dir.prompt_attack_classifier();
        let classifier = AttackClassifier::load_or_builtin(&path)
            .context("the guardrail's prompt_attacks policy needs the prompt-attack classifier")?;
        models.attacks = Some(Arc::new(classifier));
    }
    Ok(Guardrail::with_models(config, models)?)
}

fn check(
    args: &CheckArgs,
    store: &dyn GuardrailConfigs,
    settings: &Settings,
) -> anyhow::Result<ExitCode> {
    let guardrail = match (&args.guardrail, &args.config) {
        (Some(reference), _) => load(store, reference, settings, None)?,
        (None, Some(path)) => build(read_config(path)?, settings, None)?,
        (None, None) => anyhow::bail!("give --guardrail NAME or --config FILE"),
    };
    let text = if args.text == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("while reading the text from standard input")?;
        text
    } else {
        args.text.clone()
    };
    let checked = guardrail.check(&text, args.source);
    if args.json {
        print_line(&serde_json::to_string_pretty(&checked)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_line(&format!(
        "{}: {}",
        args.source.as_str(),
        outcome_name(&checked.outcome)
    ))?;
    print_line(&checked.text)?;
    for assessment in &checked.assessments {
        print_line(&format!(
            "  {} {} at {}..{}: {:?}",
            assessment.policy, assessment.name, assessment.start, assessment.end, assessment.action
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The labelled prompts of a dataset file (an error naming the file otherwise).
fn read_prompts(path: &Path) -> anyhow::Result<Vec<PromptRecord>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("while reading the dataset {}", path.display()))?;
    match read_dataset(&text).with_context(|| format!("invalid dataset {}", path.display()))? {
        Dataset::Prompts(records) => Ok(records),
        Dataset::Spans(_) => anyhow::bail!(
            "{} holds entity spans; the prompt-attack classifier learns from lines \
             {{\"text\", \"label\": \"attack\" | \"benign\"}}",
            path.display()
        ),
    }
}

fn train_attacks(args: &TrainAttacksArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| settings.models_dir.prompt_attack_classifier());
    let records = read_prompts(&args.dataset)?;
    let options = TrainOptions {
        folds: usize::from(args.folds),
        bits: args.bits,
        ..TrainOptions::default()
    };
    let encoder_folds = args
        .encoder_folds
        .map_or(options.folds, usize::from)
        .min(options.folds);
    if args.if_missing && out.exists() {
        let wanted = |provenance: &basalt_guard::attacks::Provenance| {
            provenance.dataset_sha256 == basalt_guard::attacks::digest(&records)
                && provenance.folds == options.folds
                // Calibrated with the false-positive margin (files from before it are not).
                && provenance
                    .calibration
                    .iter()
                    .all(|point| point.false_positive_upper.is_some())
                && match (&provenance.encoder, args.encoder) {
                    (Some(stack), true) => stack.folds.len().max(1) == encoder_folds,
                    (None, false) => true,
                    _ => false,
                }
        };
        match AttackClassifier::load(&out) {
            Ok(existing) if wanted(existing.provenance()) => {
                print_line(&format!(
                    "the prompt-attack classifier {} exists",
                    out.display()
                ))?;
                return Ok(ExitCode::SUCCESS);
            }
            Ok(_) => eprintln!(
                "the prompt-attack classifier {} was trained differently or on other data; \
                 training it again",
                out.display()
            ),
            Err(error) => eprintln!("{error:#}\nso it is trained again"),
        }
    }
    let mut classifier = AttackClassifier::train(&records, &options)?;
    let mut held_out_scores = Vec::new();
    if args.encoder {
        let base_model = args
            .base_model
            .clone()
            .unwrap_or_else(|| settings.models_dir.default_embedding_model());
        let progress = super::fine_tuning_progress(args.json);
        let mut average = None::<f32>;
        let held_out = classifier
            .add_encoder(
                &records,
                &base_model,
                &basalt_model::FineTuneOptions::default(),
                encoder_folds,
                &mut |step, steps, loss| {
                    let smoothed = average.map_or(loss, |mean| 0.95 * mean + 0.05 * loss);
                    average = Some(smoothed);
                    progress.set_length(steps as u64);
                    progress.set_position(step as u64);
                    progress.set_message(format!("{smoothed:.3}"));
                },
            )
            .with_context(|| format!("while fine-tuning {}", base_model.display()))?;
        progress.finish_and_clear();
        held_out_scores = held_out;
    }
    classifier.save(&out)?;
    if let Some(path) = &args.held_out_scores {
        write_held_out_scores(path, &records, &held_out_scores)?;
    }
    let provenance = classifier.provenance();
    if args.json {
        print_line(&serde_json::to_string_pretty(&serde_json::json!({
            "classifier": out,
            "provenance": provenance,
        }))?)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_line(&format!(
        "trained on {} prompts ({} attacks); {}-fold cross-validation, held-out AUC {:.3}",
        provenance.records, provenance.attacks, provenance.folds, provenance.auc
    ))?;
    print_line(&format!(
        "{:>12} {:>10} {:>8} {:>20}",
        "target FPR", "threshold", "recall", "false-positive rate"
    ))?;
    for point in &provenance.calibration {
        print_line(&format!(
            "{:>12.2} {:>10.3} {:>8.3} {:>20.3}",
            point.target, point.threshold, point.recall, point.false_positive_rate
        ))?;
    }
    if let Some(stack) = &provenance.encoder {
        print_line(&format!(
            "fine-tuned encoder stacked on it, calibrated on {}: AUC {:.3} (n-grams alone {:.3})",
            held_out_prompts(stack),
            stack.auc,
            stack.svm_auc
        ))?;
        print_line(&format!(
            "{:>12} {:>10} {:>8} {:>20} {:>16}",
            "target FPR", "threshold", "recall", "false-positive rate", "n-grams recall"
        ))?;
        for (point, alone) in stack.calibration.iter().zip(&stack.svm_calibration) {
            print_line(&format!(
                "{:>12.2} {:>10.3} {:>8.3} {:>20.3} {:>16.3}",
                point.target,
                point.threshold,
                point.recall,
                point.false_positive_rate,
                alone.recall
            ))?;
        }
        if stack.folds.len() > 1 {
            print_line(&format!(
                "{:>12} {:>10} {:>8} {:>20} {:>16} {:>8}",
                "fold", "held out", "recall", "false-positive rate", "n-grams recall", "AUC"
            ))?;
            for (index, fold) in stack.folds.iter().enumerate() {
                print_line(&format!(
                    "{:>12} {:>10} {:>8.3} {:>20.3} {:>16.3} {:>8.3}",
                    index + 1,
                    fold.held_out,
                    fold.recall,
                    fold.false_positive_rate,
                    fold.svm_recall,
                    fold.auc
                ))?;
            }
            print_line(&format!(
                "(each fold at a {:.2} target false-positive rate read off its own scores; \
                 the encoder kept is fold 1's)",
                basalt_guard::attacks::DEFAULT_FALSE_POSITIVE_RATE
            ))?;
        }
        print_line(&format!(
            "wrote {}",
            basalt_guard::attacks::encoder_path(&out).display()
        ))?;
    }
    print_line(&format!("wrote {}", out.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the stack's held-out scores with their prompts, a JSON line each.
fn write_held_out_scores(
    path: &Path,
    records: &[PromptRecord],
    scores: &[basalt_guard::attacks::HeldOutScore],
) -> anyhow::Result<()> {
    let mut lines = String::new();
    for score in scores {
        let record = &records[score.record];
        lines.push_str(&serde_json::to_string(&serde_json::json!({
            "text": record.text,
            "label": record.label,
            "fold": score.fold + 1,
            "svm": score.svm,
            "encoder": score.encoder,
            "score": score.score,
        }))?);
        lines.push('\n');
    }
    std::fs::write(path, lines)
        .with_context(|| format!("while writing the held-out scores to {}", path.display()))
}

/// Which prompts a stacked encoder was calibrated on, for a sentence.
fn held_out_prompts(stack: &basalt_guard::attacks::EncoderStack) -> String {
    match stack.folds.len() {
        0 | 1 => format!(
            "the {} prompts of fold 1 it did not train on",
            stack.held_out
        ),
        folds => format!(
            "the {} prompts of folds 1-{folds}, each scored by an encoder that did not train on it",
            stack.held_out
        ),
    }
}

/// Scores the prompt-attack classifier on labelled prompts, overall and per source.
fn eval_prompts(
    args: &EvalGuardrailsArgs,
    settings: &Settings,
    records: &[PromptRecord],
) -> anyhow::Result<ExitCode> {
    let (path, classifier) = match &args.classifier {
        Some(path) => (path.clone(), AttackClassifier::load(path)?),
        None => {
            let path = settings.models_dir.prompt_attack_classifier();
            let classifier = AttackClassifier::load_or_builtin(&path)?;
            (path, classifier)
        }
    };
    let path = if classifier.is_builtin() {
        PathBuf::from("(built in)")
    } else {
        path
    };
    let rate = args
        .false_positive_rate
        .unwrap_or_else(|| classifier.default_rate());
    if !(0.0..=1.0).contains(&rate) {
        anyhow::bail!("--false-positive-rate must be between 0 and 1");
    }
    let threshold = if args.passages {
        classifier.passage_threshold(rate)
    } else {
        classifier.threshold(rate)
    };
    let trained_on_it =
        classifier.provenance().dataset_sha256 == basalt_guard::attacks::digest(records);
    // Each text is scored once; the overall and per-source counts read the verdicts.
    let judged: Vec<basalt_guard::attacks::AttackScore> = records
        .iter()
        .map(|record| classifier.assess(&record.text, rate, args.passages))
        .collect();
    let verdicts: std::collections::HashMap<&str, bool> = records
        .iter()
        .zip(&judged)
        .map(|(record, judged)| (record.text.as_str(), judged.is_attack()))
        .collect();
    let flagged = |text: &str| verdicts.get(text).copied().unwrap_or(false);
    let on_this_data = OnThisData::of(records, &judged);
    let mut sources: std::collections::BTreeMap<String, Vec<PromptRecord>> = Default::default();
    for record in records {
        let source = record
            .source
            .clone()
            .unwrap_or_else(|| "(no source)".into());
        sources.entry(source).or_default().push(record.clone());
    }
    let overall = evaluate_prompts(records, flagged);
    let per_source: std::collections::BTreeMap<String, basalt_guard::eval::Score> = sources
        .iter()
        .map(|(source, records)| (source.clone(), evaluate_prompts(records, flagged)))
        .collect();
    if args.json {
        print_line(&serde_json::to_string_pretty(&serde_json::json!({
            "records": records.len(),
            "classifier": path,
            "threshold": threshold,
            "false_positive_rate_target": rate,
            "training_data": trained_on_it,
            "scored_as": if args.passages { "passages" } else { "prompts" },
            "prompt_attacks": overall,
            "per_source": per_source,
            "cross_validation": classifier.provenance(),
            "on_this_data": on_this_data,
        }))?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let calibrated = if args.passages && classifier.is_builtin() {
        "; the built-in classifier judges passages at its 0.01 point at most"
    } else {
        ""
    };
    print_line(&format!(
        "prompt attacks, {} {}, classifier {} at threshold {threshold:.3} (calibrated for a \
         false-positive rate of {rate}{calibrated})",
        records.len(),
        if args.passages { "passages" } else { "prompts" },
        path.display(),
    ))?;
    print_line(&format!(
        "{:<20} {:>6} {:>6} {:>6} {:>6} {:>10} {:>8} {:>7} {:>7}",
        "source", "tp", "fp", "fn", "tn", "precision", "recall", "F1", "FPR"
    ))?;
    let row = |name: &str, score: &basalt_guard::eval::Score| {
        format!(
            "{:<20} {:>6} {:>6} {:>6} {:>6} {:>10.3} {:>8.3} {:>7.3} {:>7.3}",
            name,
            score.true_positives,
            score.false_positives,
            score.false_negatives,
            score.true_negatives,
            score.precision,
            score.recall,
            score.f1,
            score.false_positive_rate.unwrap_or(0.0)
        )
    };
    if per_source.len() > 1 {
        for (source, score) in &per_source {
            print_line(&row(source, score))?;
        }
    }
    print_line(&row("all", &overall))?;
    if let Some(on_this_data) = &on_this_data {
        print_line(&format!(
            "on this data: AUC {:.3}; with a threshold read off these prompts (in-sample, for \
             comparing classifiers, not a calibration):",
            on_this_data.auc
        ))?;
        for point in &on_this_data.operating_points {
            print_line(&format!(
                "  FPR at most {:.2}: recall {:.3} (threshold {:.3})",
                point.target, point.recall, point.threshold
            ))?;
        }
    }
    if trained_on_it {
        let provenance = classifier.provenance();
        print_line(&format!(
            "note: the classifier was trained on this dataset, so these are training-set numbers. \
             Held out in its {}-fold cross-validation it scored:",
            provenance.folds
        ))?;
        let print_points = |points: &[basalt_guard::attacks::Calibration]| {
            points.iter().try_for_each(|point| {
                print_line(&format!(
                    "  target FPR {:.2}: recall {:.3}, false-positive rate {:.3}",
                    point.target, point.recall, point.false_positive_rate
                ))
            })
        };
        print_points(&provenance.calibration)?;
        if let Some(stack) = &provenance.encoder {
            print_line(&format!(
                "and with the fine-tuned encoder, on {}:",
                held_out_prompts(stack)
            ))?;
            print_points(&stack.calibration)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How the classifier separates the attacks from the benign prompts of an evaluation set,
/// whatever threshold it was calibrated with: the ranking's AUC, and the recall at each
/// calibrated false-positive rate when the threshold is read off the set itself.
#[derive(Debug, serde::Serialize)]
struct OnThisData {
    auc: f32,
    operating_points: Vec<basalt_guard::attacks::Calibration>,
}

impl OnThisData {
    /// `None` unless the set holds prompts of both kinds.
    fn of(records: &[PromptRecord], judged: &[basalt_guard::attacks::AttackScore]) -> Option<Self> {
        let labels: Vec<bool> = records.iter().map(|r| r.label == "attack").collect();
        if !labels.contains(&true) || !labels.contains(&false) {
            return None;
        }
        let scores: Vec<f32> = judged.iter().map(|judged| judged.score).collect();
        Some(OnThisData {
            auc: basalt_guard::attacks::auc(&scores, &labels),
            operating_points: basalt_guard::attacks::calibrate(&scores, &labels),
        })
    }
}

fn outcome_name(outcome: &basalt_guard::Outcome) -> &'static str {
    match outcome {
        basalt_guard::Outcome::Passed => "passed",
        basalt_guard::Outcome::Anonymized => "anonymized",
        basalt_guard::Outcome::Blocked => "blocked",
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct EvalGuardrailsArgs {
    /// Labelled data, JSONL: entity spans {"text", "entities": [{"start", "end", "type"}]}
    /// (character offsets; Presidio's type names are understood), or labelled prompts
    /// {"text", "label": "attack" | "benign"} for the prompt-attack classifier
    #[arg(long, value_name = "FILE.jsonl")]
    dataset: PathBuf,
    /// The prompt-attack classifier to score [default: <models dir>/prompt-attack/classifier.bin]
    #[arg(long, value_name = "FILE")]
    classifier: Option<PathBuf>,
    /// The false-positive rate the classifier's threshold is calibrated for [default: what a
    /// guardrail uses: 0.05, or 0.01 with the built-in classifier]
    #[arg(long, value_name = "RATE")]
    false_positive_rate: Option<f32>,
    /// Score each labelled text as a retrieved passage (a window at a time, as the policy's
    /// `documents` side does) instead of as a prompt
    #[arg(long)]
    passages: bool,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub(crate) fn eval(args: &EvalGuardrailsArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.dataset)
        .with_context(|| format!("while reading the dataset {}", args.dataset.display()))?;
    let dataset = read_dataset(&text)
        .with_context(|| format!("invalid dataset {}", args.dataset.display()))?;
    let records = match dataset {
        Dataset::Spans(records) => records,
        Dataset::Prompts(records) => return eval_prompts(args, settings, &records),
    };
    let report = evaluate_spans(&basalt_guard::Detector::default(), &records);
    if args.json {
        print_line(&serde_json::to_string_pretty(&report)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_line(&format!(
        "sensitive information, {} records (a finding counts when it overlaps a labelled entity of its type)",
        report.records
    ))?;
    print_line(&format!(
        "{:<16} {:>6} {:>6} {:>6} {:>10} {:>8} {:>7}",
        "type", "tp", "fp", "fn", "precision", "recall", "F1"
    ))?;
    let row = |name: &str, score: &basalt_guard::eval::Score| {
        format!(
            "{:<16} {:>6} {:>6} {:>6} {:>10.3} {:>8.3} {:>7.3}",
            name,
            score.true_positives,
            score.false_positives,
            score.false_negatives,
            score.precision,
            score.recall,
            score.f1
        )
    };
    for (name, score) in &report.per_type {
        print_line(&row(name, score))?;
    }
    print_line(&row("all covered", &report.overall))?;
    if !report.not_covered.is_empty() {
        let listed: Vec<String> = report
            .not_covered
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        print_line(&format!(
            "labelled types no detector covers (need a model): {}",
            listed.join(", ")
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
