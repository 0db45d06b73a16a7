//! `basalt serve`: the HTTP API on the local models.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use basalt_server::{AppState, AuthMode, RateLimit, ServerOptions};

use crate::settings::Settings;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  basalt serve\n  basalt serve --addr 127.0.0.1:9000 --max-queue 32\n  \
    basalt serve --addr 0.0.0.0:8443 --tls-cert server.pem --tls-key server.key\n\n\
    Then: curl -H \"Authorization: Bearer $KEY\" http://127.0.0.1:8080/v1/models"
)]
pub(crate) struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080", env = "BASALT_ADDR")]
    addr: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (the server's certificate first)
    #[arg(
        long,
        env = "BASALT_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)
    #[arg(
        long,
        env = "BASALT_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Requests that may wait for the model; more get 429 with Retry-After
    #[arg(long, default_value_t = 16, value_name = "N")]
    max_queue: usize,
    /// Requests one API key may have running or waiting at once; more get 429 with
    /// Retry-After, so one key cannot keep the model from the others
    #[arg(long, default_value_t = 4, value_name = "N")]
    max_requests_per_key: usize,
    /// Most completion tokens one request may ask for (max_tokens); more get 400
    #[arg(long, default_value_t = 2048, value_name = "N")]
    max_completion_tokens: usize,
    /// Longest request (an answer, a stream, an upload's body), in seconds; then 504
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    request_timeout: u64,
    /// Largest JSON request body, in MB
    #[arg(long, default_value_t = 4, value_name = "MB")]
    body_limit: usize,
    /// Largest upload (all files of one multipart request), in MB; each file may be 100 MB
    #[arg(long, default_value_t = 256, value_name = "MB")]
    upload_limit: usize,
    /// Minutes of inactivity after which a conversation session is forgotten
    #[arg(long, default_value_t = 30, value_name = "MINUTES")]
    session_ttl: u64,
    /// Keep each session turn's full prompt (off: prompts hold document text)
    #[arg(long)]
    retain_prompts: bool,
    /// Serve without API keys, every request acting as the principal `local-demo` with every
    /// permission (audited as such). Refused unless --addr is a loopback address
    #[arg(long)]
    local_demo: bool,
    /// Requests per second each API key may send (a token bucket; more get 429 with
    /// Retry-After) [default: unlimited]
    #[arg(long, value_name = "PER_SECOND")]
    rate_limit: Option<f64>,
    /// Requests a key may send at once before the rate applies [default: twice the rate, at
    /// least 1]
    #[arg(long, value_name = "N", requires = "rate_limit")]
    rate_burst: Option<f64>,
    /// Seconds a claimed ingestion job stays this process's without a heartbeat; after a
    /// crash, another replica on the same --database resumes it once they run out
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    job_lease: u64,
}

pub(crate) fn run(args: &ServeArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    if args.local_demo && !args.addr.ip().is_loopback() {
        anyhow::bail!(
            "--local-demo serves without API keys, so it only listens on a loopback address \
             (127.0.0.1 or ::1), not {}; create keys with `basalt keys create` to serve beyond \
             this machine",
            args.addr
        );
    }
    // Certificate problems are found before the models load.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(basalt_server::TlsConfig::load(cert, key).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let embedding = settings.models_dir.default_embedding_model();
    let (embedder, generator) = super::load_engines(settings, &embedding, None, None)?;
    if args
        .rate_limit
        .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
        || args
            .rate_burst
            .is_some_and(|burst| !(burst >= 1.0 && burst.is_finite()))
    {
        anyhow::bail!("--rate-limit must be above 0 and --rate-burst at least 1");
    }
    let options = ServerOptions {
        max_queue: args.max_queue,
        max_requests_per_key: args.max_requests_per_key.max(1),
        max_completion_tokens: args.max_completion_tokens.max(1),
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        body_limit: args.body_limit.max(1) << 20,
        upload_limit: args.upload_limit.max(1) << 20,
        sessions: basalt_answer::SessionPolicy {
            ttl: Duration::from_secs(args.session_ttl.max(1) * 60),
            retain_prompts: args.retain_prompts,
            ..basalt_answer::SessionPolicy::default()
        },
        auth: if args.local_demo {
            AuthMode::LocalDemo
        } else {
            AuthMode::Keys
        },
        rate_limit: args.rate_limit.map(|per_second| RateLimit {
            per_second,
            burst: args.rate_burst.unwrap_or((per_second * 2.0).max(1.0)),
        }),
        prompt_attack_classifier: Some(settings.models_dir.prompt_attack_classifier()),
        job_lease: Duration::from_secs(args.job_lease.max(2)),
        ..ServerOptions::default()
    };
    // Knowledge bases created over the API are encrypted: make sure there is a key.
    let data_dir = settings.data_dir_with_key()?;
    let state = AppState::new(Arc::new(embedder), Arc::new(generator), data_dir, &options)
        .with_context(|| match settings.data_dir.has_database() {
            true => "cannot keep ingestion jobs in the database (--database)".to_owned(),
            false => format!(
                "cannot keep ingestion jobs in {}",
                settings.data_dir.root().display()
            ),
        })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("while starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {} (in use? try --addr)", args.addr))?;
        eprintln!(
            "basalt listening on {}://{} (OpenAI-compatible API under /v1; Ctrl-C stops)",
            if tls.is_some() { "https" } else { "http" },
            listener.local_addr().unwrap_or(args.addr)
        );
        if args.local_demo {
            eprintln!(
                "LOCAL DEMO: no API keys are checked; every request acts as `{}` with every permission",
                basalt_server::DEMO_PRINCIPAL
            );
        }
        match &tls {
            Some(tls) => basalt_server::serve_tls(listener, tls, state, &options).await,
            None => basalt_server::serve(listener, state, &options).await,
        }
        .context("the server stopped")
    })?;
    Ok(ExitCode::SUCCESS)
}
