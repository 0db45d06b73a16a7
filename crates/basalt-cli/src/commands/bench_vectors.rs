//! `basalt bench vectors`: exact scan against HNSW graphs at a size where the difference shows,
//! on seeded synthetic vectors written through a real knowledge base (tantivy index, graph
//! files).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use basalt_index::{ChunkRecord, DocumentRecord, DocumentWrite, SearchMode, VectorIndex};
use basalt_kb::{DataDir, KbSettings, KnowledgeBase, SearchOptions};
use serde::Serialize;

use super::bench::ReportArgs;
use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct VectorBenchArgs {
    /// Chunks in the synthetic knowledge base
    #[arg(long, default_value_t = 100_000)]
    chunks: usize,
    /// Vector dimension (384: all-MiniLM-L6-v2)
    #[arg(long, default_value_t = 384)]
    dimension: usize,
    /// Queries timed per method
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Neighbours per query
    #[arg(long, default_value_t = 10)]
    k: usize,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Serialize)]
struct VectorBench {
    chunks: usize,
    dimension: usize,
    queries: usize,
    k: usize,
    /// Writing the chunks (tantivy commits, 10,000 chunks each).
    write_seconds: f64,
    /// `finish_writes`: segment merges and HNSW graph builds.
    graph_build_seconds: f64,
    graph_files: usize,
    graph_bytes: u64,
    exact_p50_ms: f64,
    exact_p99_ms: f64,
    hnsw_p50_ms: f64,
    hnsw_p99_ms: f64,
    /// `exact_p50_ms / hnsw_p50_ms`.
    speedup_p50: f64,
    /// Share of the exact top-k that the graph search also returned.
    recall_at_k: f64,
}

/// SplitMix64, so the same arguments always give the same vectors.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1_u64 << 24) as f32 - 0.5
    }
}

/// Sentence embeddings have a low intrinsic dimension: they vary along a few dozen directions,
/// grouped by topic. Vectors here are a topic centre plus noise in a 24-dimensional latent
/// space, projected into the full dimension, plus a little isotropic noise, then normalised.
/// (Uniform noise in all 384 dimensions would make every neighbour equally far, a worst case
/// no text collection shows.)
pub(crate) struct Generator {
    random: Seeded,
    centres: Vec<Vec<f32>>,
    projection: Vec<Vec<f32>>,
    dimension: usize,
}

const LATENT: usize = 24;

impl Generator {
    pub(crate) fn new(dimension: usize, topics: usize) -> Self {
        let mut random = Seeded(42);
        let centres = (0..topics)
            .map(|_| (0..LATENT).map(|_| random.next()).collect())
            .collect();
        let projection = (0..dimension)
            .map(|_| (0..LATENT).map(|_| random.next()).collect())
            .collect();
        Generator {
            random,
            centres,
            projection,
            dimension,
        }
    }

    pub(crate) fn vector(&mut self) -> Vec<f32> {
        let topic =
            ((self.random.next() + 0.5) * self.centres.len() as f32) as usize % self.centres.len();
        let latent: Vec<f32> = (0..LATENT)
            .map(|axis| self.centres[topic][axis] + 0.5 * self.random.next())
            .collect();
        let mut vector: Vec<f32> = (0..self.dimension)
            .map(|row| {
                let projected: f32 = self.projection[row]
                    .iter()
                    .zip(&latent)
                    .map(|(weight, value)| weight * value)
                    .sum();
                projected + 0.05 * self.random.next()
            })
            .collect();
        let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
        vector.iter_mut().for_each(|value| *value /= norm);
        vector
    }
}

/// Writes `chunks` synthetic chunks into `kb`, in documents of ten and writes of `per_commit`
/// chunks, each chunk's text `text(its number)` and its vector the generator's next; returns
/// the seconds the writes took.
pub(crate) fn write_synthetic(
    kb: &KnowledgeBase,
    chunks: usize,
    per_commit: usize,
    generator: &mut Generator,
    text: impl Fn(usize) -> String,
) -> anyhow::Result<f64> {
    const CHUNKS_PER_DOCUMENT: usize = 10;
    let started = Instant::now();
    let mut batch = Vec::new();
    let mut batch_chunks = 0;
    for first in (0..chunks).step_by(CHUNKS_PER_DOCUMENT) {
        let count = CHUNKS_PER_DOCUMENT.min(chunks - first);
        let records: Vec<ChunkRecord> = (first..first + count)
            .map(|number| ChunkRecord {
                ordinal: (number - first) as u32,
                text: text(number),
                heading_path: Vec::new(),
                page: None,
                char_start: 0,
                char_end: 0,
                vector: generator.vector(),
            })
            .collect();
        batch.push(DocumentWrite {
            document: DocumentRecord {
                doc_id: format!("doc{first}"),
                source: format!("synthetic/{first}"),
                title: None,
                format: "text".into(),
                content_hash: format!("synthetic:{first}"),
                ingested_at: String::new(),
                text_chars: 0,
                pages: None,
                chunk_count: count as u32,
                tags: Vec::new(),
                metadata: BTreeMap::new(),
                readers: Vec::new(),
            },
            chunks: records,
        });
        batch_chunks += count;
        if batch_chunks >= per_commit {
            kb.write(std::mem::take(&mut batch))?;
            batch_chunks = 0;
        }
    }
    kb.write(batch)?;
    Ok(started.elapsed().as_secs_f64())
}

pub(crate) fn run(args: &VectorBenchArgs, _settings: &Settings) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.chunks > 0 && args.queries > 0 && args.k > 0 && args.dimension > 0,
        "--chunks, --queries, --k and --dimension must be positive"
    );
    let dir = std::env::temp_dir().join(format!("basalt-bench-vectors-{}", std::process::id()));
    let result = measure(args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let bench = result?;
    let json = serde_json::to_string_pretty(&bench)?;
    args.report.emit(&json, || {
        print_line(&format!(
            "{} chunks × {} dimensions: graphs built in {:.1} s ({} files, {:.1} MB)",
            bench.chunks,
            bench.dimension,
            bench.graph_build_seconds,
            bench.graph_files,
            bench.graph_bytes as f64 / 1e6
        ))?;
        print_line(&format!(
            "exact p50 {:.2} ms p99 {:.2} ms; hnsw p50 {:.2} ms p99 {:.2} ms ({:.1}× faster); \
             recall@{} {:.4}",
            bench.exact_p50_ms,
            bench.exact_p99_ms,
            bench.hnsw_p50_ms,
            bench.hnsw_p99_ms,
            bench.speedup_p50,
            bench.k,
            bench.recall_at_k
        ))
    })?;
    Ok(ExitCode::SUCCESS)
}

fn measure(args: &VectorBenchArgs, dir: &std::path::Path) -> anyhow::Result<VectorBench> {
    let data = DataDir::new(dir);
    let mut settings = KbSettings::new("vectors");
    settings.embedding.model = "synthetic".into();
    settings.embedding.dimension = args.dimension;
    settings.vector_index = VectorIndex::Auto;
    let context = || {
        format!(
            "while creating a scratch knowledge base in {}",
            dir.display()
        )
    };
    data.create_with(&settings, false).with_context(context)?;
    let store = data.open("vectors").with_context(context)?;
    let index_dir = data.kb_path("vectors").join("index");
    let mut generator = Generator::new(args.dimension, (args.chunks / 100).max(1));
    let write_seconds = write_synthetic(&store, args.chunks, 10_000, &mut generator, |number| {
        format!("synthetic chunk {number}")
    })?;
    let started = Instant::now();
    store.finish_writes()?;
    let graph_build_seconds = started.elapsed().as_secs_f64();
    let (mut graph_files, mut graph_bytes) = (0, 0);
    if let Ok(entries) = std::fs::read_dir(index_dir.join("ann")) {
        for entry in entries.flatten() {
            graph_files += 1;
            graph_bytes += entry.metadata().map(|meta| meta.len()).unwrap_or(0);
        }
    }
    let queries: Vec<Vec<f32>> = (0..args.queries).map(|_| generator.vector()).collect();
    let search = |vector: &[f32], exact: bool| -> anyhow::Result<(f64, Vec<String>)> {
        let begun = Instant::now();
        let options = SearchOptions {
            mode: Some(SearchMode::Vector),
            k: args.k,
            exact,
            ..SearchOptions::default()
        };
        let hits = store.search_vector("", vector, &options)?;
        let elapsed = begun.elapsed().as_secs_f64() * 1e3;
        Ok((elapsed, hits.into_iter().map(|hit| hit.chunk_id).collect()))
    };
    // Warm the caches (the first search decodes every segment's vectors).
    search(&queries[0], true)?;
    search(&queries[0], false)?;
    let (mut exact_ms, mut hnsw_ms) = (Vec::new(), Vec::new());
    let (mut found, mut wanted) = (0, 0);
    for query in &queries {
        let (elapsed, truth) = search(query, true)?;
        exact_ms.push(elapsed);
        let (elapsed, approximate) = search(query, false)?;
        hnsw_ms.push(elapsed);
        wanted += truth.len();
        found += truth.iter().filter(|id| approximate.contains(id)).count();
    }
    let percentile = |values: &mut Vec<f64>, p: f64| {
        values.sort_by(f64::total_cmp);
        super::bench::percentile(values, p)
    };
    let exact_p50_ms = percentile(&mut exact_ms, 0.5);
    let hnsw_p50_ms = percentile(&mut hnsw_ms, 0.5);
    Ok(VectorBench {
        chunks: args.chunks,
        dimension: args.dimension,
        queries: args.queries,
        k: args.k,
        write_seconds,
        graph_build_seconds,
        graph_files,
        graph_bytes,
        exact_p50_ms,
        exact_p99_ms: percentile(&mut exact_ms, 0.99),
        hnsw_p50_ms,
        hnsw_p99_ms: percentile(&mut hnsw_ms, 0.99),
        speedup_p50: exact_p50_ms / hnsw_p50_ms.max(1e-9),
        recall_at_k: found as f64 / wanted.max(1) as f64,
    })
}
