//! `basalt bench models`: measure the local engines on real data and, with `--peers`, the
//! reference engines (llama-cpp-python, sentence-transformers) on the same inputs in the same
//! run, reporting ratios so a noisy shared machine still gives comparable numbers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use basalt_model::{
    Embedder, EmbeddingEngine, GenerationEvent, GenerationRequest, GenerationSummary, Generator,
    InferenceGate, LocalEmbedder, LocalEmbedderOptions, LocalGenerator, LocalGeneratorOptions,
    Prompt, SamplingOptions,
};
use serde::{Deserialize, Serialize};

use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// Decode and prompt tokens/s, embedding passages/s and query latency
    #[command(after_help = "Examples:\n  basalt bench models\n  \
        basalt bench models --peers --json --out target/bench-models.json")]
    Models(ModelsBenchArgs),
    /// Ingestion throughput (documents/s, MB/s) split into parse, chunk, embed and index time
    #[command(
        after_help = "Examples:\n  basalt bench ingest --json\n  basalt bench ingest ./handbook"
    )]
    Ingest(super::bench_kb::IngestBenchArgs),
    /// Search latency p50/p95/p99 per mode, 1 and 16 concurrent clients, query embedding included
    #[command(after_help = "Example:\n  basalt bench search --kb papers --json")]
    Search(super::bench_kb::SearchBenchArgs),
    /// Exact vector scan against HNSW graphs on synthetic vectors: build time, latency, recall
    #[command(after_help = "Examples:\n  basalt bench vectors\n  \
        basalt bench vectors --chunks 300000 --json --out target/bench-vectors.json")]
    Vectors(super::bench_vectors::VectorBenchArgs),
    /// Time to first token and total time of grounded answers over a knowledge base
    #[command(after_help = "Example:\n  basalt bench answer --kb scifact --json")]
    Answer(super::bench_answer::AnswerBenchArgs),
    /// What a guardrail adds to a request: the input check and the streamed output checks
    #[command(after_help = "Example:\n  basalt bench guardrails --json")]
    Guardrails(super::bench_guard::GuardBenchArgs),
    /// A serving server and a command-line ingestion beside it: each alone, then together
    #[command(
        after_help = "Example:\n  basalt bench sharing --json --out target/bench-sharing.json"
    )]
    Sharing(super::bench_share::SharingBenchArgs),
    /// Knowledge bases of 10 k to 1 M chunks on each backend: write rate, index size, memory,
    /// and search latency (index part) at 1 and 16 clients, against the floors
    #[command(
        after_help = "Examples:\n  basalt bench scale --chunks 100000,1000000 --json --out target/bench-scale.json\n  \
                      basalt --database postgres://… bench scale --backends embedded,postgres"
    )]
    Scale(super::bench_scale::ScaleBenchArgs),
    /// Time to first token through a chat model served elsewhere against the remote's own
    #[command(after_help = "Example:\n  basalt bench remote --json --out target/bench-remote.json")]
    Remote(super::bench_remote::RemoteBenchArgs),
}

/// Where a benchmark's report goes.
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

impl ReportArgs {
    /// Writes the JSON to `--out` if given, then prints it (`--json`) or the table.
    pub(crate) fn emit(
        &self,
        json: &str,
        table: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if let Some(out) = &self.out {
            std::fs::write(out, json)
                .with_context(|| format!("while writing {}", out.display()))?;
        }
        if self.json { print_line(json) } else { table() }
    }
}

/// The shared evaluation data the benchmarks read by default.
#[derive(Debug, clap::Args)]
pub(crate) struct SharedDataArgs {
    /// Shared evaluation data (needs scifact-train/)
    #[arg(
        long = "data",
        env = "BASALT_SHARED_DATA",
        default_value = "../shared/data",
        value_name = "DIR"
    )]
    pub(crate) path: PathBuf,
}

/// The value at fraction `p` of `sorted` (nearest rank); 0 when there is none.
/// Runs `work` on every item, `clients` threads each taking the next item in turn (as that
/// many concurrent clients would); returns what each call returned, and the wall time in
/// seconds.
pub(crate) fn with_clients<T: Sync, R: Send>(
    clients: usize,
    items: &[T],
    work: impl Fn(&T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<(Vec<R>, f64)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<Vec<R>> {
                    let mut mine = Vec::new();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(index) else {
                            return Ok(mine);
                        };
                        mine.push(work(item)?);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for worker in workers {
            match worker.join() {
                Ok(Ok(mine)) => all.extend(mine),
                Ok(Err(error)) => return Err(error),
                Err(_) => anyhow::bail!("a benchmark thread panicked"),
            }
        }
        Ok(all)
    })?;
    Ok((results, started.elapsed().as_secs_f64()))
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

impl SharedDataArgs {
    /// The first `count` query texts of `queries` ({"_id", "text"} per line), else of the
    /// SciFact training queries.
    pub(crate) fn query_texts(
        &self,
        queries: Option<&std::path::Path>,
        count: usize,
    ) -> anyhow::Result<Vec<String>> {
        let path = queries.map_or_else(
            || self.path.join("scifact-train/queries.jsonl"),
            std::path::Path::to_path_buf,
        );
        let texts: Vec<String> = basalt_kb::eval::load_queries(&path)?
            .into_iter()
            .map(|query| query.text)
            .take(count)
            .collect();
        anyhow::ensure!(!texts.is_empty(), "no queries in {}", path.display());
        Ok(texts)
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ModelsBenchArgs {
    #[command(flatten)]
    report: ReportArgs,
    /// Also run llama-cpp-python and sentence-transformers (in a throw-away virtualenv)
    #[arg(long)]
    peers: bool,
    /// Script that runs the peers
    #[arg(long, value_name = "FILE", default_value = "scripts/bench-peers.sh")]
    peers_script: PathBuf,
    #[command(flatten)]
    data: SharedDataArgs,
    /// Runs of each measurement; the best run counts
    #[arg(long, default_value_t = 5, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    repeats: u32,
    /// Passages to embed, in batches of 32
    #[arg(long, default_value_t = 256, value_name = "N")]
    passages: usize,
    /// Single queries to time
    #[arg(long, default_value_t = 50, value_name = "N")]
    queries: usize,
    /// Most tokens the bulk embedder packs into one llama.cpp batch
    #[arg(long, value_name = "N")]
    embed_batch_tokens: Option<usize>,
    /// With --peers: alternate Basalt and the peers this many times; each keeps its best
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Embedding engine [default: native]
    #[arg(long, value_name = "ENGINE", value_parser = ["native", "llama"])]
    embed_engine: Option<String>,
    /// Flash attention for generation
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set)]
    flash_attention: bool,
    /// Another basalt binary to measure in the same run (a native build, say), alternating
    /// with this one round by round; reports this one's rates as ratios of the other's
    #[arg(long, value_name = "BINARY", conflicts_with = "peers")]
    against: Option<PathBuf>,
}

const PROMPT_TOKENS: usize = 500;
const MAX_NEW_TOKENS: usize = 128;
const EMBED_BATCH: usize = 32;

#[derive(Debug, Serialize, Deserialize, Default, Clone)]
struct GenerationNumbers {
    prompt_tokens: usize,
    prompt_tokens_per_second: f64,
    completion_tokens: usize,
    decode_tokens_per_second: f64,
    #[serde(default)]
    generated_ids: Vec<u32>,
}

#[derive(Debug, Serialize, Deserialize, Default, Clone)]
struct EmbeddingNumbers {
    passages: usize,
    passages_per_second: f64,
    query_latency_ms_median: f64,
    query_latency_ms_p90: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PeerReport {
    llama_cpp_python: PeerGeneration,
    sentence_transformers: PeerEmbedding,
}

#[derive(Debug, Serialize, Deserialize)]
struct PeerGeneration {
    version: String,
    #[serde(flatten)]
    numbers: GenerationNumbers,
}

#[derive(Debug, Serialize, Deserialize)]
struct PeerEmbedding {
    version: String,
    #[serde(default)]
    torch_version: String,
    #[serde(flatten)]
    numbers: EmbeddingNumbers,
}

/// This binary's numbers over another engine's: rates (above 1 is faster) and the median query
/// latency (below 1 is faster).
#[derive(Debug, Serialize)]
struct RateRatios {
    decode_tokens_per_second: f64,
    prompt_tokens_per_second: f64,
    passages_per_second: f64,
    query_latency_median: f64,
}

impl RateRatios {
    fn of(
        ours: &Measurements,
        generation: &GenerationNumbers,
        embedding: &EmbeddingNumbers,
    ) -> Self {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        RateRatios {
            decode_tokens_per_second: ratio(
                ours.generation.decode_tokens_per_second,
                generation.decode_tokens_per_second,
            ),
            prompt_tokens_per_second: ratio(
                ours.generation.prompt_tokens_per_second,
                generation.prompt_tokens_per_second,
            ),
            passages_per_second: ratio(
                ours.embedding.passages_per_second,
                embedding.passages_per_second,
            ),
            query_latency_median: ratio(
                ours.embedding.query_latency_ms_median,
                embedding.query_latency_ms_median,
            ),
        }
    }
}

#[derive(Debug, Serialize)]
struct Ratios {
    #[serde(flatten)]
    rates: RateRatios,
    /// Greedy ids of both engines agree up to here (of the shorter completion).
    matching_generated_tokens: usize,
    floors: Vec<Floor>,
}

/// A measured ratio against the bound it must keep.
#[derive(Debug, Serialize)]
pub(crate) struct Floor {
    pub(crate) metric: &'static str,
    pub(crate) ratio: f64,
    pub(crate) floor: String,
    pub(crate) met: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    basalt: Measurements,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<PeerReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratios: Option<Ratios>,
    /// With `--against`: the other binary's build and numbers, and this one's as ratios of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    against: Option<Against>,
}

#[derive(Debug, Serialize)]
struct Machine {
    threads: usize,
    cpus: usize,
    embedding_engine: &'static str,
    /// Rounds of Basalt-then-peers measurements; each side reports its best.
    rounds: u32,
    #[serde(flatten)]
    build: Build,
}

/// Which CPU measured, and what the binary was built to use on it.
#[derive(Debug, Serialize, Deserialize, Clone)]
struct Build {
    cpu: String,
    /// Vector extensions this CPU has (run-time detection).
    cpu_features: Vec<String>,
    /// The instruction-set level the binary was compiled for ("x86-64-v3", or "native").
    build_baseline: String,
    /// The copy of the native encoder's own loops that runs on this CPU ("avx512", "avx2").
    encoder_kernels: String,
    /// llama.cpp's own report of the CPU features it was compiled with.
    llama_cpp: String,
    /// `GOMP_SPINCOUNT` as the process runs with it (llama.cpp's OpenMP threads).
    openmp_spin_count: Option<String>,
}

impl Build {
    fn this_process() -> Self {
        let cpu = basalt_model::cpu::CpuInfo::detect();
        Build {
            cpu: cpu.model_name,
            cpu_features: cpu.features.iter().map(|&f| f.to_owned()).collect(),
            build_baseline: basalt_model::cpu::build_baseline().to_owned(),
            encoder_kernels: cpu.encoder_kernels.to_owned(),
            llama_cpp: basalt_model::llama_system_info().trim().to_owned(),
            openmp_spin_count: std::env::var("GOMP_SPINCOUNT").ok(),
        }
    }
}

/// The other binary of `--against`, measured in the same run.
#[derive(Debug, Serialize)]
struct Against {
    binary: PathBuf,
    build: Option<Build>,
    basalt: Measurements,
    /// This binary's numbers over the other's.
    #[serde(flatten)]
    rates: RateRatios,
    floors: Vec<Floor>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Measurements {
    generation: GenerationNumbers,
    embedding: EmbeddingNumbers,
}

#[derive(Serialize)]
struct PeerRequest<'a> {
    gguf: String,
    threads: usize,
    prompt_token_ids: &'a [u32],
    max_tokens: usize,
    passages: &'a [String],
    batch_size: usize,
    queries: &'a [String],
    repeats: u32,
    flash_attention: bool,
}

pub(crate) fn run(command: BenchCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Models(args) => bench_models(&args, settings),
        BenchCommand::Ingest(args) => super::bench_kb::ingest(&args, settings),
        BenchCommand::Search(args) => super::bench_kb::search(&args, settings),
        BenchCommand::Vectors(args) => super::bench_vectors::run(&args, settings),
        BenchCommand::Answer(args) => super::bench_answer::run(&args, settings),
        BenchCommand::Guardrails(args) => super::bench_guard::run(&args, settings),
        BenchCommand::Sharing(args) => super::bench_share::run(&args, settings),
        BenchCommand::Remote(args) => super::bench_remote::run(&args, settings),
        BenchCommand::Scale(args) => super::bench_scale::run(&args, settings),
    }
}

fn bench_models(args: &ModelsBenchArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let (passages, queries) = load_scifact(&args.data.path, args.passages, args.queries)?;
    let generator_path = settings.models_dir.default_generation_model();
    // A shared machine drifts over minutes; alternating the engines and keeping each side's
    // best run keeps the drift from favouring whichever side runs first.
    let rounds = if args.peers || args.against.is_some() {
        args.rounds
    } else {
        1
    };
    let mut basalt: Option<Measurements> = None;
    let mut peers: Option<PeerReport> = None;
    let mut prompt_ids = Vec::new();
    let mut embedding_engine = EmbeddingEngine::Native.as_str();
    let mut other: Option<(Option<Build>, Measurements)> = None;
    for round in 1..=rounds {
        if rounds > 1 {
            eprintln!("basalt: round {round} of {rounds}");
        }
        let measured = measure_basalt(
            args,
            settings,
            &generator_path,
            &passages,
            &queries,
            &mut prompt_ids,
        )?;
        embedding_engine = measured.1;
        basalt = Some(match basalt {
            None => measured.0,
            Some(best) => best.best_with(&measured.0),
        });
        if args.peers {
            let request = PeerRequest {
                gguf: generator_path.display().to_string(),
                threads: settings.threads,
                prompt_token_ids: &prompt_ids,
                max_tokens: MAX_NEW_TOKENS,
                passages: &passages,
                batch_size: EMBED_BATCH,
                queries: &queries,
                repeats: args.repeats,
                flash_attention: args.flash_attention,
            };
            let measured = run_peers(&args.peers_script, &request)?;
            peers = Some(match peers {
                None => measured,
                Some(best) => best.best_with(&measured),
            });
        }
        if let Some(binary) = &args.against {
            let (build, measured) = run_against(binary, args, settings)?;
            other = Some(match other {
                None => (build, measured),
                Some((build, best)) => (build, best.best_with(&measured)),
            });
        }
    }
    let basalt = basalt.context("no measurement was taken")?;
    let mut report = Report {
        machine: Machine {
            threads: settings.threads,
            cpus: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
            embedding_engine,
            rounds,
            build: Build::this_process(),
        },
        ratios: peers.as_ref().map(|peers| ratios(&basalt, peers)),
        against: match (&args.against, other) {
            (Some(binary), Some((build, measured))) => {
                Some(against_ratios(binary, build, measured, &basalt))
            }
            _ => None,
        },
        basalt,
        peers: None,
    };
    report.peers = peers;

    let json = serde_json::to_string_pretty(&report)?;
    args.report.emit(&json, || print_table(&report))?;
    Ok(ExitCode::SUCCESS)
}

/// Passages as `title + " " + text` and query texts from the SciFact training set.
fn load_scifact(
    data: &Path,
    passages: usize,
    queries: usize,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let passages = read_scifact(data, "corpus.jsonl", passages)?
        .into_iter()
        .map(|(title, text)| format!("{title} {text}"))
        .collect();
    let queries = read_scifact(data, "queries.jsonl", queries)?
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    Ok((passages, queries))
}

/// The first `limit` records of `scifact-train/NAME` under the shared data, as (title, text).
pub(crate) fn read_scifact(
    data: &Path,
    name: &str,
    limit: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        title: String,
        text: String,
    }
    let path = data.join("scifact-train").join(name);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "while reading {} (set --data to the shared data directory)",
            path.display()
        )
    })?;
    text.lines()
        .take(limit)
        .map(|line| {
            let record: Line = serde_json::from_str(line)
                .with_context(|| format!("while parsing {}", path.display()))?;
            Ok((record.title, record.text))
        })
        .collect()
}

/// Exactly `PROMPT_TOKENS` token ids of real text.
/// One round of Basalt's measurements: generation, then embeddings. Fills `prompt_ids` on
/// the first round (the same prompt is then given to the peers).
fn measure_basalt(
    args: &ModelsBenchArgs,
    settings: &Settings,
    generator_path: &Path,
    passages: &[String],
    queries: &[String],
    prompt_ids: &mut Vec<u32>,
) -> anyhow::Result<(Measurements, &'static str)> {
    let gate = InferenceGate::new();
    let generator = LocalGenerator::load(
        generator_path,
        &LocalGeneratorOptions {
            threads: settings.threads,
            decode_threads: settings.decode_threads,
            context_size: Some(2048),
            flash_attention: Some(args.flash_attention),
            gate: gate.clone(),
            ..LocalGeneratorOptions::default()
        },
    )
    .with_context(|| format!("while loading {}", generator_path.display()))?;
    if prompt_ids.is_empty() {
        *prompt_ids = bench_prompt(&generator, passages)?;
    }
    eprintln!(
        "basalt: generation: {PROMPT_TOKENS}-token prompt, {MAX_NEW_TOKENS} new tokens, best of {}",
        args.repeats
    );
    let generation = bench_generation(&generator, prompt_ids, args.repeats)?;
    drop(generator);

    let embedder_path = settings.models_dir.default_embedding_model();
    let mut embedder_options = LocalEmbedderOptions {
        threads: settings.threads,
        gate,
        ..LocalEmbedderOptions::default()
    };
    if let Some(tokens) = args.embed_batch_tokens {
        embedder_options.batch_tokens = tokens;
    }
    embedder_options.engine = match args.embed_engine.as_deref() {
        Some("llama") => Some(EmbeddingEngine::Llama),
        Some(_) => Some(EmbeddingEngine::Native),
        None => None,
    };
    let embedder = LocalEmbedder::load(&embedder_path, &embedder_options)
        .with_context(|| format!("while loading {}", embedder_path.display()))?;
    eprintln!(
        "basalt: embedding: {} passages in batches of {EMBED_BATCH}, {} single queries",
        passages.len(),
        queries.len()
    );
    let embedding = bench_embedding(&embedder, passages, queries, args.repeats)?;
    Ok((
        Measurements {
            generation,
            embedding,
        },
        embedder.engine().as_str(),
    ))
}

impl GenerationNumbers {
    /// Each rate from the faster run; the generated ids of the first.
    fn best_with(mut self, other: &GenerationNumbers) -> Self {
        self.prompt_tokens_per_second = self
            .prompt_tokens_per_second
            .max(other.prompt_tokens_per_second);
        self.decode_tokens_per_second = self
            .decode_tokens_per_second
            .max(other.decode_tokens_per_second);
        self
    }
}

impl EmbeddingNumbers {
    fn best_with(mut self, other: &EmbeddingNumbers) -> Self {
        self.passages_per_second = self.passages_per_second.max(other.passages_per_second);
        self.query_latency_ms_median = self
            .query_latency_ms_median
            .min(other.query_latency_ms_median);
        self.query_latency_ms_p90 = self.query_latency_ms_p90.min(other.query_latency_ms_p90);
        self
    }
}

impl Measurements {
    fn best_with(self, other: &Measurements) -> Self {
        Measurements {
            generation: self.generation.best_with(&other.generation),
            embedding: self.embedding.best_with(&other.embedding),
        }
    }
}

impl PeerReport {
    fn best_with(mut self, other: &PeerReport) -> Self {
        self.llama_cpp_python.numbers = self
            .llama_cpp_python
            .numbers
            .best_with(&other.llama_cpp_python.numbers);
        self.sentence_transformers.numbers = self
            .sentence_transformers
            .numbers
            .best_with(&other.sentence_transformers.numbers);
        self
    }
}

fn bench_prompt(generator: &LocalGenerator, passages: &[String]) -> anyhow::Result<Vec<u32>> {
    let mut text = String::new();
    for passage in passages {
        text.push_str(passage);
        text.push('\n');
        let ids = generator.tokenize_prompt(&Prompt::Raw(text.clone()))?;
        if ids.len() >= PROMPT_TOKENS {
            return Ok(ids[..PROMPT_TOKENS].to_vec());
        }
    }
    bail!("the passages hold fewer than {PROMPT_TOKENS} tokens; use more --passages")
}

fn bench_generation(
    generator: &LocalGenerator,
    prompt_ids: &[u32],
    repeats: u32,
) -> anyhow::Result<GenerationNumbers> {
    let mut best = GenerationNumbers::default();
    // One warm-up run, then the measured ones.
    for run in 0..=repeats {
        let request = GenerationRequest {
            prompt: Prompt::Tokens(prompt_ids.to_vec()),
            sampling: SamplingOptions {
                max_tokens: MAX_NEW_TOKENS,
                ..SamplingOptions::default()
            },
        };
        let mut ids = Vec::new();
        let mut summary: Option<GenerationSummary> = None;
        for event in generator.generate(request)? {
            match event? {
                GenerationEvent::Token { id, .. } => ids.push(id),
                GenerationEvent::Done(done) => summary = Some(done),
            }
        }
        let summary = summary.context("generation ended without a summary")?;
        if run == 0 {
            continue;
        }
        let prompt_rate = summary.prompt_tokens as f64 / seconds(summary.prompt_duration);
        let decode_rate =
            summary.completion_tokens.saturating_sub(1) as f64 / seconds(summary.decode_duration);
        best.prompt_tokens = summary.prompt_tokens;
        best.completion_tokens = summary.completion_tokens;
        best.prompt_tokens_per_second = best.prompt_tokens_per_second.max(prompt_rate);
        best.decode_tokens_per_second = best.decode_tokens_per_second.max(decode_rate);
        best.generated_ids = ids;
    }
    Ok(best)
}

fn bench_embedding(
    embedder: &LocalEmbedder,
    passages: &[String],
    queries: &[String],
    repeats: u32,
) -> anyhow::Result<EmbeddingNumbers> {
    embedder.embed_batch(&passages[..passages.len().min(EMBED_BATCH)])?;
    let mut best_rate: f64 = 0.0;
    for _ in 0..repeats {
        let started = Instant::now();
        for batch in passages.chunks(EMBED_BATCH) {
            embedder.embed_batch(batch)?;
        }
        best_rate = best_rate.max(passages.len() as f64 / seconds(started.elapsed()));
    }
    for query in queries.iter().take(3) {
        embedder.embed_query(query)?;
    }
    let mut latencies = Vec::new();
    for query in queries {
        let started = Instant::now();
        embedder.embed_query(query)?;
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| percentile(&latencies, p);
    Ok(EmbeddingNumbers {
        passages: passages.len(),
        passages_per_second: best_rate,
        query_latency_ms_median: percentile(0.5),
        query_latency_ms_p90: percentile(0.9),
    })
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64().max(1e-9)
}

fn run_peers(script: &Path, request: &PeerRequest<'_>) -> anyhow::Result<PeerReport> {
    if !script.exists() {
        bail!(
            "the peer script {} does not exist; run from the repository root or pass --peers-script",
            script.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("basalt-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let request_path = dir.join("request.json");
    let result_path = dir.join("result.json");
    std::fs::write(&request_path, serde_json::to_vec(request)?)?;
    eprintln!(
        "basalt: running the peers with {} (the first run installs them)",
        script.display()
    );
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(&request_path)
        .arg(&result_path)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("while running {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); see its output above",
            script.display()
        );
    }
    let text = std::fs::read_to_string(&result_path)
        .with_context(|| format!("while reading {}", result_path.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str(&text).context("while parsing the peers' report")
}

/// Runs `binary bench models --json` with this run's settings and reads its build and numbers.
fn run_against(
    binary: &Path,
    args: &ModelsBenchArgs,
    settings: &Settings,
) -> anyhow::Result<(Option<Build>, Measurements)> {
    eprintln!("basalt: measuring {}", binary.display());
    let output = std::process::Command::new(binary)
        .args(["bench", "models", "--json"])
        .arg("--repeats")
        .arg(args.repeats.to_string())
        .arg("--passages")
        .arg(args.passages.to_string())
        .arg("--queries")
        .arg(args.queries.to_string())
        .arg("--data")
        .arg(&args.data.path)
        .arg("--flash-attention")
        .arg(args.flash_attention.to_string())
        .arg("--threads")
        .arg(settings.threads.to_string())
        .args(
            settings
                .decode_threads
                .map(|threads| ["--decode-threads".to_owned(), threads.to_string()])
                .into_iter()
                .flatten(),
        )
        .arg("--models-dir")
        .arg(settings.models_dir.root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("while running {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "{} bench models failed ({})",
            binary.display(),
            output.status
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("while reading the report of {}", binary.display()))?;
    let measured = serde_json::from_value(report["basalt"].clone())
        .with_context(|| format!("{} printed no measurements", binary.display()))?;
    // A binary older than the build report has none; its numbers still compare.
    let build = serde_json::from_value(report["machine"].clone()).ok();
    Ok((build, measured))
}

fn against_ratios(
    binary: &Path,
    build: Option<Build>,
    other: Measurements,
    basalt: &Measurements,
) -> Against {
    let rates = RateRatios::of(basalt, &other.generation, &other.embedding);
    let at_least = |metric, ratio: f64| Floor {
        metric,
        ratio,
        floor: ">= 0.95".to_string(),
        met: ratio >= 0.95,
    };
    Against {
        binary: binary.to_path_buf(),
        build,
        floors: vec![
            at_least(
                "decode tokens/s vs the other build",
                rates.decode_tokens_per_second,
            ),
            at_least(
                "prompt tokens/s vs the other build",
                rates.prompt_tokens_per_second,
            ),
            at_least("passages/s vs the other build", rates.passages_per_second),
        ],
        basalt: other,
        rates,
    }
}

fn ratios(basalt: &Measurements, peers: &PeerReport) -> Ratios {
    let peer_generation = &peers.llama_cpp_python.numbers;
    let rates = RateRatios::of(
        basalt,
        peer_generation,
        &peers.sentence_transformers.numbers,
    );
    let matching = basalt
        .generation
        .generated_ids
        .iter()
        .zip(&peer_generation.generated_ids)
        .take_while(|(a, b)| a == b)
        .count();
    let at_least = |metric, ratio: f64, floor: f64| Floor {
        metric,
        ratio,
        floor: format!(">= {floor}"),
        met: ratio >= floor,
    };
    let latency = rates.query_latency_median;
    let floors = vec![
        at_least(
            "decode tokens/s vs llama-cpp-python",
            rates.decode_tokens_per_second,
            0.9,
        ),
        at_least(
            "prompt tokens/s vs llama-cpp-python",
            rates.prompt_tokens_per_second,
            0.9,
        ),
        at_least(
            "passages/s vs sentence-transformers",
            rates.passages_per_second,
            0.7,
        ),
        Floor {
            metric: "query latency vs sentence-transformers",
            ratio: latency,
            floor: "<= 0.5".to_string(),
            met: latency <= 0.5,
        },
    ];
    Ratios {
        rates,
        matching_generated_tokens: matching,
        floors,
    }
}

fn print_table(report: &Report) -> anyhow::Result<()> {
    let generation = &report.basalt.generation;
    let embedding = &report.basalt.embedding;
    let build = &report.machine.build;
    print_line(&format!(
        "threads: {} of {} CPUs; embedding engine: {}",
        report.machine.threads, report.machine.cpus, report.machine.embedding_engine
    ))?;
    print_line(&format!(
        "cpu: {} ({}); build: {}, encoder kernels: {}",
        build.cpu,
        build.cpu_features.join(" "),
        build.build_baseline,
        build.encoder_kernels
    ))?;
    print_line(&format!("llama.cpp: {}", build.llama_cpp))?;
    if let Some(against) = &report.against {
        let other = against
            .build
            .as_ref()
            .map_or("?", |b| b.build_baseline.as_str());
        print_line(&format!(
            "peer: {} (build: {other})",
            against.binary.display()
        ))?;
    }
    print_line(&format!(
        "{:<34} {:>12} {:>14} {:>8}",
        "metric", "basalt", "peer", "ratio"
    ))?;
    let peer_generation = report
        .peers
        .as_ref()
        .map(|p| &p.llama_cpp_python.numbers)
        .or(report.against.as_ref().map(|a| &a.basalt.generation));
    let peer_embedding = report
        .peers
        .as_ref()
        .map(|p| &p.sentence_transformers.numbers)
        .or(report.against.as_ref().map(|a| &a.basalt.embedding));
    let row = |name: &str, ours: f64, theirs: Option<f64>| -> anyhow::Result<()> {
        let (peer, ratio) = match theirs {
            Some(value) if value > 0.0 => (format!("{value:.2}"), format!("{:.2}", ours / value)),
            _ => ("-".to_string(), "-".to_string()),
        };
        print_line(&format!("{name:<34} {ours:>12.2} {peer:>14} {ratio:>8}"))
    };
    row(
        "decode tokens/s",
        generation.decode_tokens_per_second,
        peer_generation.map(|p| p.decode_tokens_per_second),
    )?;
    row(
        "prompt tokens/s (500-token prompt)",
        generation.prompt_tokens_per_second,
        peer_generation.map(|p| p.prompt_tokens_per_second),
    )?;
    row(
        "embedding passages/s (batch 32)",
        embedding.passages_per_second,
        peer_embedding.map(|p| p.passages_per_second),
    )?;
    row(
        "query latency ms (median)",
        embedding.query_latency_ms_median,
        peer_embedding.map(|p| p.query_latency_ms_median),
    )?;
    row(
        "query latency ms (p90)",
        embedding.query_latency_ms_p90,
        peer_embedding.map(|p| p.query_latency_ms_p90),
    )?;
    if let Some(ratios) = &report.ratios {
        print_line(&format!(
            "greedy tokens identical to llama-cpp-python: {} of {}",
            ratios.matching_generated_tokens,
            generation.generated_ids.len()
        ))?;
        print_floors(&ratios.floors)?;
    }
    if let Some(against) = &report.against {
        print_floors(&against.floors)?;
    }
    Ok(())
}

/// One line per floor: the metric, its ratio, the floor and whether it was met.
pub(crate) fn print_floors(floors: &[Floor]) -> anyhow::Result<()> {
    for floor in floors {
        let verdict = if floor.met { "met" } else { "MISSED" };
        print_line(&format!(
            "floor {:<42} {:>6.2} {:<8} {verdict}",
            floor.metric, floor.ratio, floor.floor
        ))?;
    }
    Ok(())
}
