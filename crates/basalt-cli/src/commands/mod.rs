//! One module per subcommand; each exposes its clap arguments and a `run` function.

mod ask;
mod bench;
mod bench_answer;
mod bench_guard;
mod bench_kb;
mod bench_remote;
mod bench_scale;
mod bench_share;
mod bench_vectors;
mod db;
mod embed;
mod eval;
mod eval_answers;
mod eval_selector;
mod generate;
mod guard;
mod ingest;
mod kb;
mod migrate;
mod models;
mod search;
pub(crate) mod security;
mod serve;

use std::process::ExitCode;
use std::sync::Arc;

use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Install, list and check the local models
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Embed texts with the local embedding model
    Embed(embed::EmbedArgs),
    /// Generate text with the local chat model
    Generate(generate::GenerateArgs),
    /// Measure Basalt's engines (and, with --peers, the reference engines)
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Create, list and delete knowledge bases
    #[command(subcommand)]
    Kb(kb::KbCommand),
    /// Add files and directories to a knowledge base
    Ingest(ingest::IngestArgs),
    /// List and delete the documents of a knowledge base
    #[command(subcommand)]
    Docs(kb::DocsCommand),
    /// Search a knowledge base
    Search(search::SearchArgs),
    /// Measure retrieval, answer and guardrail quality on labelled data
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Answer a question from a knowledge base, with cited sources
    Ask(ask::AskArgs),
    /// Ask questions in a conversation (follow-ups may refer to earlier turns)
    Chat(ask::ChatArgs),
    /// Serve the HTTP API (OpenAI-compatible) on the local models
    Serve(serve::ServeArgs),
    /// Create, list and revoke API keys (and the principals they name)
    #[command(subcommand)]
    Keys(security::KeysCommand),
    /// Store, attach and simulate IAM-style policies
    #[command(subcommand)]
    Policy(security::PolicyCommand),
    /// Verify, tail and search the audit trail
    #[command(subcommand)]
    Audit(security::AuditCommand),
    /// Store guardrail configurations and check text against them (PII, secrets, words)
    #[command(subcommand)]
    Guard(guard::GuardCommand),
    /// Migrate the PostgreSQL schema that replicas share (--database)
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Copy this data directory (every tenant, knowledge base, vector, key, guardrail and the
    /// audit trail) into PostgreSQL for replicas, and compare searches before and after
    Migrate(migrate::MigrateArgs),
}

pub(crate) fn run(command: Command, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Models(command) => models::run(command, settings),
        Command::Embed(args) => embed::run(&args, settings),
        Command::Generate(args) => generate::run(&args, settings),
        Command::Bench(command) => bench::run(command, settings),
        Command::Kb(command) => kb::run(command, settings),
        Command::Ingest(args) => ingest::run(&args, settings),
        Command::Docs(command) => kb::run_docs(command, settings),
        Command::Search(args) => search::run(&args, settings),
        Command::Eval(command) => eval::run(command, settings),
        Command::Ask(args) => ask::ask(&args, settings),
        Command::Chat(args) => ask::chat(&args, settings),
        Command::Serve(args) => serve::run(&args, settings),
        Command::Keys(command) => security::run_keys(command, settings),
        Command::Policy(command) => security::run_policy(command, settings),
        Command::Audit(command) => security::run_audit(command, settings),
        Command::Guard(command) => guard::run(command, settings),
        Command::Db(command) => db::run(command, settings),
        Command::Migrate(args) => migrate::run(&args, settings),
    }
}

/// Loads the embedding model a knowledge base was built with.
pub(crate) fn load_kb_embedder(
    kb: &basalt_kb::KnowledgeBase,
    settings: &Settings,
) -> anyhow::Result<Box<dyn basalt_model::Embedder>> {
    kb_embedder(kb, settings, basalt_model::InferenceGate::new())
}

/// The embedding model a knowledge base was built with, taking turns at `gate` when local;
/// an error when it no longer makes vectors of the knowledge base's dimension.
fn kb_embedder(
    kb: &basalt_kb::KnowledgeBase,
    settings: &Settings,
    gate: basalt_model::InferenceGate,
) -> anyhow::Result<Box<dyn basalt_model::Embedder>> {
    let embedding = &kb.settings.embedding;
    let embedder = open_embedder(settings, &embedding.model, Some(embedding.dimension), gate)?;
    let found = embedder.info().dimension;
    if found != embedding.dimension {
        anyhow::bail!(
            "knowledge base {} holds vectors of {} dimensions, but its embedding model {} makes \
             {found}; re-embed it with `basalt kb reembed {} --embedding-model …`",
            kb.settings.name,
            embedding.dimension,
            embedding.model,
            kb.settings.name
        );
    }
    Ok(embedder)
}

/// The embedding model `model` names: a catalogued local model, a remote embedding model
/// registered with `basalt models add --embedding` (for vectors of `dimension` numbers, or of
/// the dimension one call finds), else a local model directory.
pub(crate) fn open_embedder(
    settings: &Settings,
    model: &str,
    dimension: Option<usize>,
    gate: basalt_model::InferenceGate,
) -> anyhow::Result<Box<dyn basalt_model::Embedder>> {
    use anyhow::Context;
    let catalogued = basalt_model::catalog()
        .iter()
        .any(|spec| spec.name == model);
    if !catalogued
        && let Some(remote) = basalt_shared::remote_models(&settings.data_dir).get(model)?
    {
        let embedder = remote
            .embedder(dimension)
            .with_context(|| format!("while reaching the embedding model {model}"))?;
        return Ok(Box::new(embedder));
    }
    let path = if catalogued {
        settings.models_dir.model_dir(model)
    } else {
        std::path::PathBuf::from(model)
    };
    Ok(Box::new(load_embedder(settings, &path, gate)?))
}

/// The identity directory a command works on: the database's with `--database` (what every
/// replica reads), else the data directory's.
pub(crate) fn identities(settings: &Settings) -> Box<dyn basalt_security::Identities> {
    match settings.data_dir.database_connection() {
        Some(connection) => Box::new(basalt_shared::PgIdentities::new(connection)),
        None => Box::new(basalt_security::DirectoryFile::new(
            settings.data_dir.root(),
        )),
    }
}

/// The audit trail commands append to and read: the database's with `--database` (one chain
/// for every replica), else the data directory's.
pub(crate) fn audit_trail(settings: &Settings) -> Box<dyn basalt_security::audit::AuditTrail> {
    match settings.data_dir.database_connection() {
        Some(connection) => Box::new(basalt_shared::PgAudit::new(connection)),
        None => Box::new(basalt_security::audit::AuditLog::open(
            settings.data_dir.root(),
        )),
    }
}

/// The guardrail configurations of `data`'s tenant: the database's with `--database`, else the
/// data directory's.
pub(crate) fn guardrails(data: &basalt_kb::DataDir) -> Box<dyn basalt_guard::GuardrailConfigs> {
    match data.database_connection() {
        Some(connection) => Box::new(basalt_shared::PgGuardrails::new(connection, data.tenant())),
        None => Box::new(basalt_guard::GuardrailStore::new(&data.tenant_dir())),
    }
}

/// Parses `--filter`, naming the flag in the error.
pub(crate) fn parse_filter(filter: Option<&str>) -> anyhow::Result<Option<basalt_index::Filter>> {
    filter
        .map(basalt_index::Filter::parse)
        .transpose()
        .map_err(|error| anyhow::anyhow!("--filter: {error}"))
}

/// Opens knowledge base `name` as `principal` would see it over the API (`--as`): in the
/// principal's tenant, reading only its documents. Without `--as`, the tenant of `--tenant` and
/// every document (the CLI owns the data directory).
pub(crate) fn open_kb_as(
    settings: &Settings,
    name: &str,
    principal: Option<&str>,
) -> anyhow::Result<(basalt_kb::KnowledgeBase, Option<basalt_index::Reader>)> {
    let (data, reader) = tenant_data_as(settings, principal)?;
    Ok((data.open(name)?, reader))
}

/// The data directory as `principal` sees it over the API (its tenant) and its reader; without
/// a principal, the tenant of `--tenant` and no reader.
pub(crate) fn tenant_data_as(
    settings: &Settings,
    principal: Option<&str>,
) -> anyhow::Result<(basalt_kb::DataDir, Option<basalt_index::Reader>)> {
    let Some(principal) = principal else {
        return Ok((settings.data_dir.clone(), None));
    };
    let directory = identities(settings).current()?;
    let found = directory.principals.get(principal).ok_or_else(|| {
        anyhow::anyhow!("--as: no principal {principal:?}; `basalt keys list` shows them")
    })?;
    let tenant = settings.data_dir.tenant();
    if tenant != basalt_kb::DEFAULT_TENANT && tenant != found.tenant {
        anyhow::bail!(
            "--as: {principal:?} belongs to tenant {:?}, not {tenant:?}",
            found.tenant
        );
    }
    let data = settings.data_dir.for_tenant(&found.tenant)?;
    let reader = basalt_index::Reader::new(principal, found.groups.iter().map(String::as_str));
    Ok((data, Some(reader)))
}

/// The engines an answer needs: the KB's embedding model and a chat model (`model`, else the
/// installed default), taking turns at one inference gate.
pub(crate) fn load_answer_engines(
    kb: &basalt_kb::KnowledgeBase,
    settings: &Settings,
    model: Option<&std::path::Path>,
    context_size: Option<usize>,
) -> anyhow::Result<(
    Box<dyn basalt_model::Embedder>,
    basalt_model::LocalGenerator,
)> {
    let gate = basalt_model::InferenceGate::new();
    let embedder = kb_embedder(kb, settings, gate.clone())?;
    let generator = load_generator(settings, model, context_size, gate)?;
    Ok((embedder, generator))
}

/// The engines an answer needs, with the chat model `model` names: a model registered with
/// `basalt models add` (served elsewhere), else a GGUF path; without one, the knowledge base's
/// `answer.model` (which must be registered), else the installed default.
pub(crate) fn load_chosen_engines(
    kb: &basalt_kb::KnowledgeBase,
    settings: &Settings,
    model: Option<&str>,
    context_size: Option<usize>,
) -> anyhow::Result<(
    Box<dyn basalt_model::Embedder>,
    Box<dyn basalt_model::Generator>,
)> {
    use basalt_model::ChatModel;
    let registry = basalt_shared::remote_models(&settings.data_dir);
    let remote = match (model, kb.settings.answer.model.as_deref()) {
        (Some(name), _) => registry.get(name)?,
        (None, Some(name)) => Some(registry.get(name)?.ok_or_else(|| {
            anyhow::anyhow!(
                "knowledge base {}'s answer.model is {name}, which is not a registered model; \
                 register it with `basalt models add {name} …` or change the setting",
                kb.settings.name
            )
        })?),
        (None, None) => None,
    };
    let Some(remote) = remote else {
        // The embedded model's own name picks it, over a knowledge base's answer.model too.
        let path = model
            .filter(|name| *name != basalt_model::DEFAULT_GENERATION_MODEL)
            .map(std::path::Path::new);
        let (embedder, generator) = load_answer_engines(kb, settings, path, context_size)?;
        return Ok((embedder, Box::new(generator)));
    };
    let primary = remote.generator()?;
    let embedder_alone = || load_kb_embedder(kb, settings);
    let Some(name) = kb.settings.answer.fallback_model.as_deref() else {
        return Ok((embedder_alone()?, Box::new(primary)));
    };
    match registry.resolve(name)? {
        Some(ChatModel::Embedded) => {
            let (embedder, local) = load_answer_engines(kb, settings, None, context_size)?;
            let fallback = basalt_model::FallbackGenerator::new(Arc::new(primary), Arc::new(local));
            Ok((embedder, Box::new(fallback)))
        }
        Some(ChatModel::Remote(other)) => {
            let fallback = basalt_model::FallbackGenerator::new(
                Arc::new(primary),
                Arc::new(other.generator()?),
            );
            Ok((embedder_alone()?, Box::new(fallback)))
        }
        None => anyhow::bail!(
            "knowledge base {}'s answer.fallback_model is {name}, which is neither a registered \
             model nor {}; register it or change the setting",
            kb.settings.name,
            basalt_model::DEFAULT_GENERATION_MODEL
        ),
    }
}

/// The embedding model at `embedding`, taking turns at `gate`.
fn load_embedder(
    settings: &Settings,
    embedding: &std::path::Path,
    gate: basalt_model::InferenceGate,
) -> anyhow::Result<basalt_model::LocalEmbedder> {
    use anyhow::Context;
    basalt_model::LocalEmbedder::load(
        embedding,
        &basalt_model::LocalEmbedderOptions {
            threads: settings.threads,
            gate,
            ..basalt_model::LocalEmbedderOptions::default()
        },
    )
    .with_context(|| format!("while loading the embedding model {}", embedding.display()))
}

/// An embedding model (at `embedding`) and a chat model sharing one inference gate.
pub(crate) fn load_engines(
    settings: &Settings,
    embedding: &std::path::Path,
    model: Option<&std::path::Path>,
    context_size: Option<usize>,
) -> anyhow::Result<(basalt_model::LocalEmbedder, basalt_model::LocalGenerator)> {
    let gate = basalt_model::InferenceGate::new();
    let embedder = load_embedder(settings, embedding, gate.clone())?;
    let generator = load_generator(settings, model, context_size, gate)?;
    Ok((embedder, generator))
}

/// The chat model at `model` (else the installed default), taking turns at `gate`.
fn load_generator(
    settings: &Settings,
    model: Option<&std::path::Path>,
    context_size: Option<usize>,
    gate: basalt_model::InferenceGate,
) -> anyhow::Result<basalt_model::LocalGenerator> {
    use anyhow::Context;
    let path = model.map_or_else(
        || settings.models_dir.default_generation_model(),
        std::path::Path::to_path_buf,
    );
    // The default model goes by the name the API lists it under.
    let name = (path == settings.models_dir.default_generation_model())
        .then(|| basalt_model::DEFAULT_GENERATION_MODEL.to_owned());
    basalt_model::LocalGenerator::load(
        &path,
        &basalt_model::LocalGeneratorOptions {
            threads: settings.threads,
            decode_threads: settings.decode_threads,
            context_size,
            gate,
            name,
            ..basalt_model::LocalGeneratorOptions::default()
        },
    )
    .with_context(|| format!("while loading the chat model {}", path.display()))
}

/// Prints a line to stdout, where answers and JSON go. A closed pipe (`basalt … | head`) ends the
/// program quietly instead of panicking.
pub(crate) fn print_line(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

/// A progress bar for a fine-tuning run (steps, smoothed loss as the message); drawn nowhere
/// when `hidden` (the output is JSON).
pub(crate) fn fine_tuning_progress(hidden: bool) -> indicatif::ProgressBar {
    let progress = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "fine-tuning {bar:30} {pos}/{len} steps, loss {msg}, {elapsed} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if hidden {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    progress
}
