//! `basalt bench scale`: knowledge bases of a given number of chunks built on each backend
//! (the embedded index, PostgreSQL with `--database`), and what size costs — write rate, index
//! size, memory, and BM25 / vector / hybrid search latency (the index part: queries come with
//! their vectors, nothing is embedded) at 1 and 16 concurrent clients.
//!
//! Text: real abstracts (the SciFact corpus in the shared data) cut into windows of words,
//! repeated as often as the size needs, each repetition marked by a word of its own. Vectors:
//! synthetic, from the same seeded generator as `bench vectors` (clustered in a low-dimension
//! latent space, as sentence embeddings are); embedding a million chunks with the real model
//! would take this machine a day. Queries: the SciFact training claims, with vectors from the
//! same generator.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use basalt_index::{SearchMode, VectorIndex};
use basalt_kb::{DataDir, KbSettings, KnowledgeBase, SearchOptions};
use serde::Serialize;

use super::bench::{ReportArgs, SharedDataArgs};
use super::bench_vectors::{Generator, write_synthetic};
use super::print_line;
use crate::settings::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    /// The embedded tantivy index in a temporary directory
    Embedded,
    /// PostgreSQL with pgvector (--database), in a scratch knowledge base dropped afterwards
    Postgres,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ScaleBenchArgs {
    /// Sizes to build, in chunks, smallest first (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    chunks: Vec<usize>,
    /// Backends to build on (comma-separated); postgres needs --database
    #[arg(long, value_delimiter = ',', default_value = "embedded")]
    backends: Vec<Backend>,
    /// Queries timed per mode and client count
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Results per query
    #[arg(long, default_value_t = 10)]
    k: usize,
    #[command(flatten)]
    data: SharedDataArgs,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Debug, Serialize)]
struct ScaleBench {
    cpu: String,
    vectors: &'static str,
    text: &'static str,
    runs: Vec<Run>,
    /// The floors, judged on the runs above.
    floors: Vec<Floor>,
}

#[derive(Debug, Serialize)]
struct Run {
    backend: Backend,
    chunks: usize,
    /// Writing every chunk (commits of 10,000 chunks on the embedded index, 1,000 on the
    /// database), then `finish_writes` (merges, vector graphs).
    write_seconds: f64,
    finish_seconds: f64,
    chunks_per_second: f64,
    index_bytes: u64,
    /// This process's resident memory after the searches, and its peak; the database's own
    /// memory is not in it.
    rss_bytes: u64,
    peak_rss_bytes: u64,
    latencies: Vec<Latency>,
}

#[derive(Debug, Serialize)]
struct Latency {
    mode: SearchMode,
    clients: usize,
    queries: usize,
    p50_ms: f64,
    p99_ms: f64,
    queries_per_second: f64,
}

#[derive(Debug, Serialize)]
struct Floor {
    backend: Backend,
    what: String,
    value: f64,
    limit: f64,
    met: bool,
}

/// The p99 of hybrid search at one client must stay under this at the largest size.
const HYBRID_P99_MS: f64 = 50.0;
/// Ten times the chunks may cost at most this factor of p99.
const GROWTH: f64 = 2.0;

pub(crate) fn run(args: &ScaleBenchArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.chunks.is_empty() && args.chunks.iter().all(|&chunks| chunks > 0),
        "--chunks takes positive sizes"
    );
    anyhow::ensure!(
        args.queries > 0 && args.k > 0,
        "--queries and --k must be positive"
    );
    let database = settings.data_dir.database_url();
    if args.backends.contains(&Backend::Postgres) && database.is_none() {
        anyhow::bail!(
            "--backends postgres needs --database postgres://… (a scratch knowledge base is made and dropped there)"
        );
    }
    let windows = text_windows(&args.data.path.join("scifact-train/corpus.jsonl"))?;
    let claims = args.data.query_texts(None, args.queries)?;
    let mut sizes = args.chunks.clone();
    sizes.sort_unstable();
    let mut runs = Vec::new();
    for &backend in &args.backends {
        for &chunks in &sizes {
            eprintln!("bench scale: {chunks} chunks on {backend:?}");
            let scratch = tempfile::tempdir().context("a temporary directory")?;
            let data = match backend {
                Backend::Embedded => DataDir::new(scratch.path()),
                Backend::Postgres => {
                    DataDir::new(scratch.path()).with_database(database.unwrap_or_default())
                }
            };
            let name = format!("bench-scale-{}-{chunks}", std::process::id());
            let mut kb_settings = KbSettings::new(&name);
            kb_settings.embedding.model = "synthetic".into();
            kb_settings.vector_index = VectorIndex::Auto;
            data.create_with(&kb_settings, false)?;
            let measured = measure(&data, &name, backend, chunks, &windows, &claims, args.k);
            let removed = data.delete(&name);
            runs.push(measured?);
            removed?;
        }
    }
    let floors = floors(&runs);
    let bench = ScaleBench {
        cpu: {
            let cpu = basalt_model::cpu::CpuInfo::detect();
            format!("{} ({})", cpu.model_name, cpu.features.join(", "))
        },
        vectors: "synthetic (seeded, clustered; as bench vectors)",
        text: "SciFact abstracts in windows of 48 words, repeated with a marker word per repetition",
        runs,
        floors,
    };
    let json = serde_json::to_string_pretty(&bench)?;
    args.report.emit(&json, || print_table(&bench))?;
    Ok(ExitCode::SUCCESS)
}

/// Windows of 48 words over the corpus's abstracts, in order.
fn text_windows(corpus: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(corpus)
        .with_context(|| format!("while reading {} (--data)", corpus.display()))?;
    let mut words = Vec::new();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("a line of {}", corpus.display()))?;
        words.extend(
            record["text"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned),
        );
    }
    let windows: Vec<String> = words.chunks(48).map(|window| window.join(" ")).collect();
    anyhow::ensure!(!windows.is_empty(), "no text in {}", corpus.display());
    Ok(windows)
}

fn measure(
    data: &DataDir,
    name: &str,
    backend: Backend,
    chunks: usize,
    windows: &[String],
    claims: &[String],
    k: usize,
) -> anyhow::Result<Run> {
    let kb = data.open(name)?;
    let mut generator = Generator::new(kb.settings.embedding.dimension, 1000);
    let per_commit = match backend {
        Backend::Embedded => 10_000,
        Backend::Postgres => 1_000,
    };
    let write_seconds = write_synthetic(&kb, chunks, per_commit, &mut generator, |number| {
        format!(
            "{} rep{}",
            windows[number % windows.len()],
            number / windows.len()
        )
    })?;
    let started = Instant::now();
    kb.finish_writes()?;
    let finish_seconds = started.elapsed().as_secs_f64();
    let queries: Vec<(String, Vec<f32>)> = claims
        .iter()
        .map(|claim| (claim.clone(), generator.vector()))
        .collect();
    let latencies = latencies(&kb, &queries, k)?;
    let (rss_bytes, peak_rss_bytes) = memory();
    Ok(Run {
        backend,
        chunks,
        write_seconds,
        finish_seconds,
        chunks_per_second: chunks as f64 / (write_seconds + finish_seconds).max(1e-9),
        index_bytes: kb.index_bytes()?,
        rss_bytes,
        peak_rss_bytes,
        latencies,
    })
}

fn latencies(
    kb: &KnowledgeBase,
    queries: &[(String, Vec<f32>)],
    k: usize,
) -> anyhow::Result<Vec<Latency>> {
    let mut out = Vec::new();
    for mode in SearchMode::ALL {
        let options = SearchOptions {
            mode: Some(mode),
            k,
            ..SearchOptions::default()
        };
        // Warm up: the first searches load the index's caches (and graphs).
        for (text, vector) in queries.iter().take(3) {
            kb.search_vector(text, vector, &options)?;
        }
        for clients in [1, 16] {
            let (mut times, wall) =
                super::bench::with_clients(clients, queries, |(text, vector)| {
                    let begun = Instant::now();
                    kb.search_vector(text, vector, &options)?;
                    Ok(begun.elapsed().as_secs_f64() * 1e3)
                })?;
            times.sort_by(f64::total_cmp);
            out.push(Latency {
                mode,
                clients,
                queries: times.len(),
                p50_ms: super::bench::percentile(&times, 0.50),
                p99_ms: super::bench::percentile(&times, 0.99),
                queries_per_second: times.len() as f64 / wall.max(1e-9),
            });
        }
    }
    Ok(out)
}

/// This process's resident and peak resident memory (`/proc/self/status`), in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kilobytes| kilobytes.parse::<u64>().ok())
            .map_or(0, |kilobytes| kilobytes * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn hybrid_p99(run: &Run) -> Option<f64> {
    run.latencies
        .iter()
        .find(|latency| latency.mode == SearchMode::Hybrid && latency.clients == 1)
        .map(|latency| latency.p99_ms)
}

/// Per backend: hybrid p99 at one client at its largest size, and how p99 grew per tenfold
/// chunks between its smallest and largest sizes.
fn floors(runs: &[Run]) -> Vec<Floor> {
    let mut floors = Vec::new();
    for backend in [Backend::Embedded, Backend::Postgres] {
        let mine: Vec<&Run> = runs.iter().filter(|run| run.backend == backend).collect();
        let (Some(smallest), Some(largest)) = (mine.first(), mine.last()) else {
            continue;
        };
        let Some(p99) = hybrid_p99(largest) else {
            continue;
        };
        floors.push(Floor {
            backend,
            what: format!("hybrid p99 ms at 1 client, {} chunks", largest.chunks),
            value: p99,
            limit: HYBRID_P99_MS,
            met: p99 <= HYBRID_P99_MS,
        });
        if largest.chunks > smallest.chunks
            && let Some(base) = hybrid_p99(smallest)
        {
            let tenfolds = (largest.chunks as f64 / smallest.chunks as f64).log10();
            let growth = (p99 / base.max(1e-9)).powf(1.0 / tenfolds);
            floors.push(Floor {
                backend,
                what: format!(
                    "hybrid p99 growth per 10× chunks ({} → {})",
                    smallest.chunks, largest.chunks
                ),
                value: growth,
                limit: GROWTH,
                met: growth <= GROWTH,
            });
        }
    }
    floors
}

fn print_table(bench: &ScaleBench) -> anyhow::Result<()> {
    print_line(&format!("{} — vectors {}", bench.cpu, bench.vectors))?;
    for run in &bench.runs {
        print_line(&format!(
            "{:?} {} chunks: written at {:.0} chunks/s ({:.1} s + {:.1} s finishing), index \
             {:.1} MB, RSS {:.0} MB (peak {:.0} MB)",
            run.backend,
            run.chunks,
            run.chunks_per_second,
            run.write_seconds,
            run.finish_seconds,
            run.index_bytes as f64 / 1e6,
            run.rss_bytes as f64 / 1e6,
            run.peak_rss_bytes as f64 / 1e6
        ))?;
        for latency in &run.latencies {
            print_line(&format!(
                "  {:<7} {:>2} clients: p50 {:>8.2} ms  p99 {:>8.2} ms  {:>8.1} q/s",
                latency.mode.as_str(),
                latency.clients,
                latency.p50_ms,
                latency.p99_ms,
                latency.queries_per_second
            ))?;
        }
    }
    for floor in &bench.floors {
        print_line(&format!(
            "{:?}: {} = {:.2} (limit {:.2}): {}",
            floor.backend,
            floor.what,
            floor.value,
            floor.limit,
            if floor.met { "met" } else { "NOT met" }
        ))?;
    }
    Ok(())
}
