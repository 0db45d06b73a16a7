//! Text embeddings: the [`Embedder`] trait and the local implementation for BERT-family
//! sentence-transformers models (mean pooling, L2 normalisation), on one of two engines: the
//! native encoder (`bert.rs`, from `model.safetensors`, the default) or llama.cpp (a BERT GGUF).
//!
//! The local embedder has two paths over one loaded model. Bulk batches (ingestion) are sorted by
//! length and packed into sub-batches on a bulk worker; single queries run on their own small
//! context on a query worker and go through the [`InferenceGate`] ahead of bulk work, so a search
//! stays fast while an ingestion runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::bert::BertEncoder;
use crate::error::{ModelError, Result};
use crate::gate::{InferenceGate, Priority};
use crate::wordpiece::WordPieceTokenizer;
use crate::worker::Worker;

/// Turns text into unit-length vectors whose dot product is cosine similarity.
pub trait Embedder: Send + Sync + std::fmt::Debug {
    fn info(&self) -> &EmbedderInfo;

    /// Embeds many passages at once, for ingestion. Throughput matters more than latency.
    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;

    /// Embeds one search query with interactive priority. Latency matters.
    fn embed_query(&self, text: &str) -> Result<Vec<f32>>;

    /// Embeds a few texts with interactive priority (the sentences an answer ranks).
    fn embed_queries(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        texts.iter().map(|text| self.embed_query(text)).collect()
    }

    /// Model tokens in `text` before truncation, special tokens included: what a chunker needs
    /// to keep chunks inside [`EmbedderInfo::max_tokens`].
    fn count_tokens(&self, text: &str) -> Result<usize>;
}

/// An embedder behind a pointer is an embedder: callers that choose a model at run time (a
/// local one or one served elsewhere) hold `Box<dyn Embedder>` or `Arc<dyn Embedder>`.
macro_rules! forward_embedder {
    ($($pointer:ident),*) => {$(
        impl<E: Embedder + ?Sized> Embedder for $pointer<E> {
            fn info(&self) -> &EmbedderInfo {
                (**self).info()
            }

            fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
                (**self).embed_batch(texts)
            }

            fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
                (**self).embed_query(text)
            }

            fn embed_queries(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
                (**self).embed_queries(texts)
            }

            fn count_tokens(&self, text: &str) -> Result<usize> {
                (**self).count_tokens(text)
            }
        }
    )*};
}

forward_embedder!(Box, Arc);

/// What callers need to know about an embedding model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderInfo {
    pub model_name: String,
    pub dimension: usize,
    /// Longest input in model tokens; longer texts are truncated to it.
    pub max_tokens: usize,
}

/// Which engine runs a local embedding model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingEngine {
    /// Basalt's own BERT encoder on `model.safetensors` (fastest here; see ARCHITECTURE.md).
    Native,
    /// llama.cpp on a BERT GGUF (Basalt's converter writes one for MiniLM at install time).
    Llama,
}

impl EmbeddingEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            EmbeddingEngine::Native => "native",
            EmbeddingEngine::Llama => "llama.cpp",
        }
    }
}

/// Settings of the local embedder.
#[derive(Debug, Clone)]
pub struct LocalEmbedderOptions {
    /// `None` picks the native engine when the model directory holds `model.safetensors` and
    /// llama.cpp for a GGUF.
    pub engine: Option<EmbeddingEngine>,
    /// Threads each batch may use.
    pub threads: usize,
    /// Truncation limit in word pieces (256 for all-MiniLM-L6-v2, like sentence-transformers).
    pub max_tokens: usize,
    /// Most tokens in one bulk sub-batch. Larger sub-batches multiply bigger matrices, and a
    /// waiting query waits for at most one sub-batch; on llama.cpp, attention across a
    /// sub-batch also grows with its square (`basalt bench models --embed-batch-tokens N`).
    pub batch_tokens: usize,
    /// Most sequences in one bulk sub-batch.
    pub batch_sequences: usize,
    /// Flash attention for the llama.cpp engine: `None` lets llama.cpp decide.
    pub flash_attention: Option<bool>,
    /// Shared with the other engines of the process.
    pub gate: InferenceGate,
}

impl Default for LocalEmbedderOptions {
    fn default() -> Self {
        LocalEmbedderOptions {
            engine: None,
            threads: crate::worker::default_threads(),
            max_tokens: 256,
            batch_tokens: 2048,
            batch_sequences: 64,
            flash_attention: None,
            gate: InferenceGate::new(),
        }
    }
}

struct EmbedJob {
    sequences: Vec<Vec<u32>>,
    reply: Sender<Result<Vec<Vec<f32>>>>,
}

/// all-MiniLM-L6-v2, or another BERT sentence-transformers model, on the CPU.
#[derive(Debug)]
pub struct LocalEmbedder {
    info: EmbedderInfo,
    engine: EmbeddingEngine,
    tokenizer: WordPieceTokenizer,
    bulk_jobs: Worker<EmbedJob>,
    query_jobs: Worker<EmbedJob>,
}

impl std::fmt::Debug for EmbedJob {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "EmbedJob({} sequences)", self.sequences.len())
    }
}

impl LocalEmbedder {
    /// Loads an embedding model: a directory holding `tokenizer.json` and `model.safetensors`
    /// (+ `config.json`) or a BERT GGUF (the layout `basalt models fetch` writes has both), or
    /// the path of a GGUF whose directory holds `tokenizer.json`.
    pub fn load(path: &Path, options: &LocalEmbedderOptions) -> Result<Self> {
        if options.batch_tokens < options.max_tokens || options.batch_sequences == 0 {
            return Err(ModelError::InvalidRequest(format!(
                "batch_tokens ({}) must be at least max_tokens ({}) and batch_sequences positive",
                options.batch_tokens, options.max_tokens
            )));
        }
        let (engine, directory) = choose_engine(path, options.engine)?;
        let tokenizer =
            WordPieceTokenizer::load(&directory.join("tokenizer.json"), options.max_tokens)?;
        let (backend, dimension, model_name) = match engine {
            EmbeddingEngine::Native => {
                let encoder = Arc::new(BertEncoder::load(&directory)?);
                let name = directory.file_name().map_or_else(
                    || directory.display().to_string(),
                    |name| name.to_string_lossy().into_owned(),
                );
                let dimension = encoder.dimension();
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(options.threads.max(1))
                    .thread_name(|index| format!("basalt-embed-{index}"))
                    .build()
                    .map_err(|error| {
                        ModelError::Inference(format!("could not start embedding threads: {error}"))
                    })?;
                (Backend::Native(encoder, Arc::new(pool)), dimension, name)
            }
            EmbeddingEngine::Llama => {
                let gguf_path = find_gguf(path)?;
                let model = Arc::new(crate::llama::load_model(
                    &gguf_path,
                    "BERT embedding (GGUF from `basalt models fetch`)",
                    |architecture| architecture == "bert",
                )?);
                let dimension = usize::try_from(model.n_embd()).unwrap_or_default();
                let name = model
                    .meta_val_str("general.name")
                    .unwrap_or_else(|_| gguf_path.display().to_string());
                (Backend::Llama(model), dimension, name)
            }
        };

        let bulk_jobs = spawn_embedding_worker(
            "basalt-embed-bulk",
            backend.clone(),
            options,
            options.batch_tokens,
            options.batch_sequences,
            Priority::Bulk,
        )?;
        // Queries come alone or as a few sentences to rank (answers): batches like bulk work,
        // but ahead of it at the gate.
        let query_jobs = spawn_embedding_worker(
            "basalt-embed-query",
            backend,
            options,
            options.batch_tokens,
            options.batch_sequences,
            Priority::Interactive,
        )?;
        Ok(LocalEmbedder {
            info: EmbedderInfo {
                model_name,
                dimension,
                max_tokens: options.max_tokens,
            },
            engine,
            tokenizer,
            bulk_jobs,
            query_jobs,
        })
    }

    /// The engine this embedder runs on.
    pub fn engine(&self) -> EmbeddingEngine {
        self.engine
    }

    /// Tokenizes `texts` and embeds them on the worker behind `jobs`.
    fn run_texts(&self, jobs: &Worker<EmbedJob>, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let sequences = texts
            .iter()
            .map(|text| self.tokenizer.encode(text))
            .collect::<Result<Vec<_>>>()?;
        self.run(jobs, sequences)
    }

    fn run(&self, jobs: &Worker<EmbedJob>, sequences: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>> {
        let (reply, answer) = std::sync::mpsc::channel();
        jobs.send(EmbedJob { sequences, reply })?;
        answer.recv().map_err(|_| ModelError::WorkerGone)?
    }
}

impl Embedder for LocalEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.run_texts(&self.bulk_jobs, texts)
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let sequence = self.tokenizer.encode(text)?;
        self.run(&self.query_jobs, vec![sequence])?
            .pop()
            .ok_or(ModelError::WorkerGone)
    }

    fn embed_queries(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.run_texts(&self.query_jobs, texts)
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        self.tokenizer.count(text)
    }
}

/// A loaded model, shared by the bulk and query workers.
#[derive(Debug, Clone)]
enum Backend {
    Native(Arc<BertEncoder>, Arc<rayon::ThreadPool>),
    Llama(Arc<LlamaModel>),
}

/// Picks the engine for `path` and the directory that holds `tokenizer.json`.
fn choose_engine(
    path: &Path,
    requested: Option<EmbeddingEngine>,
) -> Result<(EmbeddingEngine, PathBuf)> {
    if !path.exists() {
        return Err(ModelError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    if !path.is_dir() {
        // A file: only llama.cpp loads single files.
        if requested == Some(EmbeddingEngine::Native) {
            return Err(ModelError::InvalidRequest(format!(
                "the native engine loads a model directory (model.safetensors, config.json, \
                 tokenizer.json), not the file {}",
                path.display()
            )));
        }
        let directory = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        return Ok((EmbeddingEngine::Llama, directory));
    }
    let engine = requested.unwrap_or(if path.join("model.safetensors").exists() {
        EmbeddingEngine::Native
    } else {
        EmbeddingEngine::Llama
    });
    if engine == EmbeddingEngine::Native && !path.join("model.safetensors").exists() {
        return Err(ModelError::MissingFile {
            path: path.join("model.safetensors"),
        });
    }
    Ok((engine, path.to_path_buf()))
}

/// The GGUF to load: `path` itself, or the converter's file (else the first GGUF) inside it.
fn find_gguf(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let gguf = path.join(crate::catalog::MINILM_GGUF);
    if gguf.exists() {
        return Ok(gguf);
    }
    let mut ggufs: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|error| ModelError::io(path, error))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|candidate| candidate.extension().is_some_and(|ext| ext == "gguf"))
        .collect();
    ggufs.sort();
    ggufs
        .into_iter()
        .next()
        .ok_or(ModelError::MissingFile { path: gguf })
}

fn spawn_embedding_worker(
    name: &str,
    backend: Backend,
    options: &LocalEmbedderOptions,
    context_tokens: usize,
    max_sequences: usize,
    priority: Priority,
) -> Result<Worker<EmbedJob>> {
    match backend {
        Backend::Native(encoder, pool) => {
            let gate = options.gate.clone();
            let threads = options.threads.max(1);
            crate::worker::spawn_worker(name, move |ready, jobs: Receiver<EmbedJob>| {
                ready(Ok(()));
                serve_jobs(
                    &jobs,
                    context_tokens,
                    max_sequences,
                    &gate,
                    priority,
                    |group| pool.install(|| encoder.encode(group, threads)),
                );
            })
        }
        Backend::Llama(model) => spawn_llama_worker(
            name,
            model,
            options,
            context_tokens,
            max_sequences,
            priority,
        ),
    }
}

fn spawn_llama_worker(
    name: &str,
    model: Arc<LlamaModel>,
    options: &LocalEmbedderOptions,
    context_tokens: usize,
    max_sequences: usize,
    priority: Priority,
) -> Result<Worker<EmbedJob>> {
    let threads = i32::try_from(options.threads.max(1)).unwrap_or(1);
    let gate = options.gate.clone();
    let context_tokens_u32 = u32::try_from(context_tokens).unwrap_or(u32::MAX);
    let max_sequences_u32 = u32::try_from(max_sequences).unwrap_or(1);
    // llama.cpp's LLAMA_FLASH_ATTN_TYPE_{AUTO,DISABLED,ENABLED}.
    let flash_attention = match options.flash_attention {
        None => -1,
        Some(false) => 0,
        Some(true) => 1,
    };
    crate::worker::spawn_worker(name, move |ready, jobs: Receiver<EmbedJob>| {
        let params = LlamaContextParams::default()
            .with_n_ctx(std::num::NonZeroU32::new(context_tokens_u32))
            .with_n_batch(context_tokens_u32)
            .with_n_ubatch(context_tokens_u32)
            .with_n_seq_max(max_sequences_u32)
            // Encoder models keep no KV cache; a unified context stops llama.cpp from splitting
            // n_ctx into per-sequence slices.
            .with_kv_unified(true)
            .with_flash_attention_policy(flash_attention)
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let backend = match crate::llama::backend() {
            Ok(backend) => backend,
            Err(error) => return ready(Err(error)),
        };
        let mut context = match model.new_context(backend, params) {
            Ok(context) => context,
            Err(error) => {
                return ready(Err(ModelError::Inference(format!(
                    "could not create an embedding context: {error}"
                ))));
            }
        };
        ready(Ok(()));
        let mut batch = LlamaBatch::new(context_tokens, i32::try_from(max_sequences).unwrap_or(1));
        serve_jobs(
            &jobs,
            context_tokens,
            max_sequences,
            &gate,
            priority,
            |group| llama_encode_group(&mut context, &mut batch, group),
        );
    })
}

/// Answers embedding jobs until every sender is gone, encoding each in packed groups.
fn serve_jobs(
    jobs: &Receiver<EmbedJob>,
    context_tokens: usize,
    max_sequences: usize,
    gate: &InferenceGate,
    priority: Priority,
    mut encode_group: impl FnMut(&[Vec<u32>]) -> Result<Vec<Vec<f32>>>,
) {
    for job in jobs {
        let result = embed_in_groups(
            &job.sequences,
            context_tokens,
            max_sequences,
            gate,
            priority,
            &mut encode_group,
        );
        // The caller may have given up; the result is then simply dropped.
        let _ = job.reply.send(result);
    }
}

/// Embeds token sequences, longest first, packed into groups that fit `context_tokens` and
/// `max_sequences`; `encode_group` returns the pooled vectors of one group, in order.
fn embed_in_groups(
    sequences: &[Vec<u32>],
    context_tokens: usize,
    max_sequences: usize,
    gate: &InferenceGate,
    priority: Priority,
    mut encode_group: impl FnMut(&[Vec<u32>]) -> Result<Vec<Vec<f32>>>,
) -> Result<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&index| std::cmp::Reverse(sequences[index].len()));
    let mut results: Vec<Option<Vec<f32>>> = vec![None; sequences.len()];

    for group in pack(&order, sequences, context_tokens, max_sequences) {
        let members: Vec<Vec<u32>> = group
            .iter()
            .map(|&index| sequences[index].clone())
            .collect();
        let pooled = {
            let _pass = gate.enter(priority);
            encode_group(&members)?
        };
        if pooled.len() != group.len() {
            return Err(ModelError::Inference("the engine skipped a text".into()));
        }
        for (&index, vector) in group.iter().zip(pooled) {
            results[index] = Some(normalized(&vector));
        }
    }
    results
        .into_iter()
        .map(|vector| vector.ok_or_else(|| ModelError::Inference("a text was skipped".into())))
        .collect()
}

/// One llama.cpp encode of a group of sequences, each in its own sequence slot.
fn llama_encode_group(
    context: &mut llama_cpp_2::context::LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    group: &[Vec<u32>],
) -> Result<Vec<Vec<f32>>> {
    batch.clear();
    for (seq_id, tokens) in group.iter().enumerate() {
        let seq_id = i32::try_from(seq_id).unwrap_or_default();
        for (position, &token) in tokens.iter().enumerate() {
            let token = LlamaToken::new(i32::try_from(token).unwrap_or_default());
            batch
                .add(
                    token,
                    i32::try_from(position).unwrap_or_default(),
                    &[seq_id],
                    true,
                )
                .map_err(|error| ModelError::Inference(format!("batch: {error}")))?;
        }
    }
    context
        .encode(batch)
        .map_err(|error| ModelError::Inference(format!("embedding failed: {error}")))?;
    (0..group.len())
        .map(|seq_id| {
            context
                .embeddings_seq_ith(i32::try_from(seq_id).unwrap_or_default())
                .map(<[f32]>::to_vec)
                .map_err(|_| ModelError::Inference("no pooled embedding returned".to_string()))
        })
        .collect()
}

/// Greedy packing of length-sorted sequences into groups of at most `max_tokens` tokens and
/// `max_sequences` sequences.
fn pack(
    order: &[usize],
    sequences: &[Vec<u32>],
    max_tokens: usize,
    max_sequences: usize,
) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_tokens = 0;
    for &index in order {
        let length = sequences[index].len();
        if !current.is_empty()
            && (current_tokens + length > max_tokens || current.len() == max_sequences)
        {
            groups.push(std::mem::take(&mut current));
            current_tokens = 0;
        }
        current.push(index);
        current_tokens += length;
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

fn normalized(vector: &[f32]) -> Vec<f32> {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm == 0.0 {
        return vector.to_vec();
    }
    vector.iter().map(|v| v / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn packing_keeps_every_sequence_once_within_limits(
            lengths in proptest::collection::vec(1usize..=256, 0..80),
            max_sequences in 1usize..70,
        ) {
            let sequences: Vec<Vec<u32>> = lengths.iter().map(|&n| vec![0; n]).collect();
            let order: Vec<usize> = (0..sequences.len()).collect();
            let groups = pack(&order, &sequences, 512, max_sequences);
            let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, order);
            for group in &groups {
                prop_assert!(!group.is_empty() && group.len() <= max_sequences);
                prop_assert!(group.iter().map(|&i| lengths[i]).sum::<usize>() <= 512);
            }
        }
    }

    #[test]
    fn normalized_has_unit_length() {
        let vector = normalized(&[3.0, 4.0]);
        assert!((vector[0] - 0.6).abs() < 1e-6 && (vector[1] - 0.8).abs() < 1e-6);
        assert_eq!(normalized(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
