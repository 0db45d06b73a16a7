//! `basalt guard`: named, versioned guardrail configurations, and checking text against them
//! (like Bedrock's ApplyGuardrail). `basalt eval guardrails` scores the detectors on labelled
//! data.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use basalt_guard::eval::{Dataset, evaluate_spans, read_dataset};
use basalt_guard::{Guardrail, GuardrailConfig, GuardrailStore, Source};
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

fn store(settings: &Settings) -> GuardrailStore {
    GuardrailStore::new(&settings.data_dir.tenant_dir())
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
    let store = store(settings);
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
        GuardCommand::Check(args) => return check(&args, &store, settings),
    }
    Ok(ExitCode::SUCCESS)
}

/// The stored guardrail `NAME` or `NAME:VERSION`; `embedder` recognises its denied topics
/// (loaded from `settings` when it has some and none is given).
pub(crate) fn load(
    store: &GuardrailStore,
    reference: &str,
    settings: &Settings,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<Guardrail> {
    build(store.load_reference(reference)?.config, settings, embedder)
}

/// A guardrail from its configuration, with the embedding model when it has denied topics.
fn build(
    config: GuardrailConfig,
    settings: &Settings,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<Guardrail> {
    if config.denied_topics.is_empty() {
        return Ok(Guardrail::new(config)?);
    }
    let embedder = match embedder {
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
    };
    Ok(Guardrail::with_embedder(config, embedder)?)
}

fn check(
    args: &CheckArgs,
    store: &GuardrailStore,
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
    /// (character offsets; Presidio's type names are understood)
    #[arg(long, value_name = "FILE.jsonl")]
    dataset: PathBuf,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub(crate) fn eval(args: &EvalGuardrailsArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.dataset)
        .with_context(|| format!("while reading the dataset {}", args.dataset.display()))?;
    let dataset = read_dataset(&text)
        .with_context(|| format!("invalid dataset {}", args.dataset.display()))?;
    let records = match dataset {
        Dataset::Spans(records) => records,
        Dataset::Prompts(_) => anyhow::bail!(
            "{} holds attack/benign prompts; prompt-attack detection is not part of Basalt's \
             guardrails yet (docs/guardrails.md), so there is nothing to score on it",
            args.dataset.display()
        ),
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
