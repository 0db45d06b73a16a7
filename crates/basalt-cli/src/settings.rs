//! Settings shared by every command, resolved once from flags and the environment.

use std::path::PathBuf;

use anyhow::Context;
use basalt_kb::DataDir;
use basalt_model::ModelsDir;
use basalt_security::crypto::MasterKey;

/// Options that apply to every subcommand.
#[derive(Debug, clap::Args)]
pub(crate) struct GlobalArgs {
    /// Directory holding the models [default: ~/.local/share/basalt/models]
    #[arg(long, global = true, env = "BASALT_MODELS_DIR", value_name = "DIR")]
    pub(crate) models_dir: Option<PathBuf>,

    /// Directory holding the knowledge bases [default: ~/.local/share/basalt]
    #[arg(long, global = true, env = "BASALT_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// PostgreSQL with pgvector (`postgres://user:password@host/database`): the knowledge
    /// bases and their indexes, ingestion jobs, keys and policies, guardrails and the audit
    /// trail are the database's, shared by every replica (`basalt db migrate` first;
    /// docs/deployment.md)
    #[arg(long, global = true, env = "BASALT_DATABASE_URL", value_name = "URL")]
    pub(crate) database: Option<String>,

    /// S3-compatible storage for uploads (`s3://bucket/prefix`), reached with the AWS
    /// variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL): an
    /// upload waits there for its job, sealed when its knowledge base is encrypted, so any
    /// replica can run it (docs/deployment.md)
    #[arg(long, global = true, env = "BASALT_OBJECTS_URL", value_name = "S3_URL")]
    pub(crate) objects: Option<String>,

    /// Tenant whose knowledge bases the command works on [default: default]
    #[arg(long, global = true, env = "BASALT_TENANT", value_name = "NAME")]
    pub(crate) tenant: Option<String>,

    /// File holding the master key (64 hex digits) that encrypts knowledge bases at rest; also
    /// BASALT_MASTER_KEY with the digits themselves [default: ~/.config/basalt/master.key,
    /// created by the first `kb create` or `serve`]
    #[arg(
        long,
        global = true,
        env = "BASALT_MASTER_KEY_FILE",
        value_name = "FILE"
    )]
    pub(crate) master_key_file: Option<PathBuf>,

    /// CPU threads for inference [default: all cores]
    #[arg(long, global = true, env = "BASALT_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) threads: Option<u16>,

    /// CPU threads that decode generated tokens one at a time [default: 1 for models under
    /// 500M parameters, such as the default SmolLM2-135M; else --threads]
    #[arg(long, global = true, env = "BASALT_DECODE_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) decode_threads: Option<u16>,

    /// Log more (-v: debug, -vv: trace, including llama.cpp's own logs)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
}

/// Everything a command needs to know about its environment.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) models_dir: ModelsDir,
    pub(crate) data_dir: DataDir,
    pub(crate) threads: usize,
    /// Threads that decode tokens one at a time (`None`: by model size).
    pub(crate) decode_threads: Option<usize>,
}

impl Settings {
    /// The data directory with a master key for creating knowledge bases: the configured one,
    /// else the default key file, made now if this is the first time (and said so on stderr).
    pub(crate) fn data_dir_with_key(&self) -> anyhow::Result<DataDir> {
        if self.data_dir.master_key().is_some() {
            return Ok(self.data_dir.clone());
        }
        let path = basalt_security::crypto::default_master_key_path();
        let (key, created) = MasterKey::load_or_create(&path).with_context(|| {
            format!(
                "no master key is configured and the default one cannot be made at {}: set \
                 BASALT_MASTER_KEY_FILE to a key file (`basalt keys generate-master --out FILE`), \
                 or use `kb create --unencrypted`",
                path.display()
            )
        })?;
        if created {
            use basalt_security::crypto::KeyProvider;
            eprintln!(
                "created master key {} in {} (mode 0600): knowledge bases are encrypted with it. \
                 Back it up; without it they cannot be read",
                key.key_id(),
                path.display()
            );
        }
        Ok(self
            .data_dir
            .clone()
            .with_master_key(std::sync::Arc::new(key)))
    }
}

impl Settings {
    pub(crate) fn resolve(args: &GlobalArgs) -> anyhow::Result<Self> {
        let models_dir = args
            .models_dir
            .clone()
            .map(ModelsDir::new)
            .unwrap_or_else(ModelsDir::from_env);
        let threads = args.threads.map(usize::from).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(std::num::NonZeroUsize::get)
                .unwrap_or(1)
        });
        let data_dir = args
            .data_dir
            .clone()
            .map(DataDir::new)
            .unwrap_or_else(DataDir::from_env);
        let default_key = basalt_security::crypto::default_master_key_path();
        let master_key = match (&args.master_key_file, std::env::var("BASALT_MASTER_KEY")) {
            (Some(path), _) => Some(MasterKey::from_file(path).with_context(|| {
                format!(
                    "cannot read the master key file {} (--master-key-file or \
                     BASALT_MASTER_KEY_FILE); make one with `basalt keys generate-master --out \
                     {}`, or unset it to use the default key",
                    path.display(),
                    path.display()
                )
            })?),
            (None, Ok(hex)) if !hex.trim().is_empty() => Some(
                MasterKey::from_hex(&hex)
                    .map_err(|error| anyhow::anyhow!("BASALT_MASTER_KEY: {error}"))?,
            ),
            _ if default_key.is_file() => Some(MasterKey::from_file(&default_key)?),
            _ => None,
        };
        let data_dir = match master_key {
            Some(key) => data_dir.with_master_key(std::sync::Arc::new(key)),
            None => data_dir,
        };
        let data_dir = match args.database.as_deref().filter(|url| !url.is_empty()) {
            Some(url) => data_dir.with_database(url),
            None => data_dir,
        };
        let data_dir = match args.objects.as_deref().filter(|url| !url.is_empty()) {
            Some(url) => data_dir.with_objects(std::sync::Arc::new(
                basalt_objects::Objects::open(url).context("--objects")?,
            )),
            None => data_dir,
        };
        let data_dir = match &args.tenant {
            Some(tenant) => data_dir.for_tenant(tenant)?,
            None => data_dir,
        };
        Ok(Settings {
            models_dir,
            data_dir,
            threads,
            decode_threads: args.decode_threads.map(usize::from),
        })
    }
}

/// Logs go to stderr so stdout stays clean for answers and JSON. `RUST_LOG` overrides.
pub(crate) fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn,llama-cpp-2=error",
        1 => "info,llama-cpp-2=warn",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
