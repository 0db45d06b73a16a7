//! Text generation: the [`Generator`] trait and the local llama.cpp implementation for chat
//! GGUF models.
//!
//! The model and its context live on a dedicated worker thread; a request is tokenized on the
//! caller's thread (so "prompt too long" comes back at once), then the worker streams tokens back
//! through a channel. Dropping the [`GenerationStream`] cancels the generation at the next token.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use crate::chat::{Prompt, Segment, render_segments};
use crate::error::{ModelError, Result};
use crate::gate::{InferenceGate, Priority};
use crate::stop::StopMatcher;
use crate::utf8::Utf8Stream;
use crate::worker::Worker;

/// Generates text from a prompt, streaming tokens as they come.
pub trait Generator: Send + Sync + std::fmt::Debug {
    fn info(&self) -> &GeneratorInfo;

    /// The prompt's token ids exactly as they would be fed to the model.
    fn tokenize_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>>;

    /// Starts generating. Errors in the request (a prompt longer than the context window,
    /// `max_tokens` 0, a bad temperature) are returned here, before any token.
    fn generate(&self, request: GenerationRequest) -> Result<GenerationStream>;

    /// The `max_tokens` a request for `prompt` gets: what it asked for, else
    /// [`DEFAULT_MAX_TOKENS`] or what the context window leaves after the prompt, if less. A
    /// prompt that fills the window alone gets 1, which [`Generator::generate`] then refuses
    /// with the numbers.
    fn max_tokens_for(&self, prompt: &Prompt, requested: Option<usize>) -> Result<usize> {
        match requested {
            Some(requested) => Ok(requested),
            None => {
                let prompt_tokens = self.tokenize_prompt(prompt)?.len();
                let room = self.info().context_window.saturating_sub(prompt_tokens);
                Ok(DEFAULT_MAX_TOKENS.min(room).max(1))
            }
        }
    }
}

/// Completion tokens a request gets when it names no `max_tokens`, if the context window
/// leaves room for them.
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// What callers need to know about a generation model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorInfo {
    pub model_name: String,
    /// Prompt plus completion tokens the loaded context holds.
    pub context_window: usize,
    /// Token ids that end generation (end-of-generation tokens of the model).
    pub stop_token_ids: Vec<u32>,
}

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// Most tokens to generate; at least 1.
    pub max_tokens: usize,
    /// 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability adds up to this.
    pub top_p: f32,
    /// Seed for sampling; the same seed and prompt give the same text.
    pub seed: Option<u32>,
    /// Generation ends before any of these strings; they are not part of the output.
    pub stop: Vec<String>,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: None,
            stop: Vec::new(),
        }
    }
}

impl SamplingOptions {
    fn validate(&self) -> Result<()> {
        if self.max_tokens == 0 {
            return Err(ModelError::InvalidRequest(
                "max_tokens must be at least 1".to_string(),
            ));
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(ModelError::InvalidRequest(format!(
                "temperature must be 0 or more, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::InvalidRequest(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// A prompt and how to sample its continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    pub sampling: SamplingOptions,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced a stop token or a stop sequence matched.
    Stop,
    /// `max_tokens` was reached or the context window filled up.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Counts and timings of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationSummary {
    pub prompt_tokens: usize,
    /// Sampled tokens, the final stop token included.
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
    /// Time to evaluate the prompt (until the first token could be sampled).
    pub prompt_duration: Duration,
    /// Time spent decoding the completion tokens after the first.
    pub decode_duration: Duration,
    /// The model that generated, when it is not the one the request went to: the fallback of
    /// a model that failed ([`crate::FallbackGenerator`]).
    pub fallback_model: Option<String>,
}

/// One step of a generation.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// A sampled token and the text it releases. The text can be empty (half a UTF-8
    /// character, text held back while it may start a stop sequence, or a stop token).
    Token { id: u32, text: String },
    /// The last event.
    Done(GenerationSummary),
}

/// The tokens of a running generation. Dropping it cancels the generation.
#[derive(Debug)]
pub struct GenerationStream {
    events: Receiver<Result<GenerationEvent>>,
    finished: bool,
}

impl GenerationStream {
    /// A stream of the events an engine sends; the engine stops when the receiver is dropped.
    /// Other [`Generator`] implementations (a remote server, a test double) build theirs here.
    pub fn new(events: Receiver<Result<GenerationEvent>>) -> Self {
        GenerationStream {
            events,
            finished: false,
        }
    }
}

impl Iterator for GenerationStream {
    type Item = Result<GenerationEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let event = self.events.recv().unwrap_or(Err(ModelError::WorkerGone));
        if matches!(event, Ok(GenerationEvent::Done(_)) | Err(_)) {
            self.finished = true;
        }
        Some(event)
    }
}

/// Settings of the local generator.
#[derive(Debug, Clone)]
pub struct LocalGeneratorOptions {
    /// Threads for prompt processing, and for decoding unless `decode_threads` says otherwise.
    pub threads: usize,
    /// Threads for decoding one token at a time; `None` picks by model size (see
    /// [`decode_threads_for`]).
    pub decode_threads: Option<usize>,
    /// Context window in tokens; `None` uses the model's training context, capped at 8192.
    pub context_size: Option<usize>,
    /// Tokens evaluated per prompt-processing step.
    pub batch_size: usize,
    /// Flash attention: `None` lets llama.cpp decide (on for the CPU backend). Off by default:
    /// it changes the floating-point order of attention, and greedy output then drifts from
    /// llama.cpp's default (non-flash) output after a dozen tokens.
    pub flash_attention: Option<bool>,
    /// Shared with the other engines of the process.
    pub gate: InferenceGate,
    /// The name answers and the API give the model [default: the GGUF's `general.name`].
    pub name: Option<String>,
}

impl Default for LocalGeneratorOptions {
    fn default() -> Self {
        LocalGeneratorOptions {
            threads: crate::worker::default_threads(),
            decode_threads: None,
            context_size: None,
            batch_size: 512,
            flash_attention: Some(false),
            gate: InferenceGate::new(),
            name: None,
        }
    }
}

struct GenerateJob {
    prompt_tokens: Vec<LlamaToken>,
    sampling: SamplingOptions,
    events: Sender<Result<GenerationEvent>>,
}

/// A chat GGUF (default SmolLM2-135M-Instruct Q4_1) on llama.cpp.
#[derive(Debug)]
pub struct LocalGenerator {
    info: GeneratorInfo,
    model: Arc<LlamaModel>,
    jobs: Worker<GenerateJob>,
}

impl std::fmt::Debug for GenerateJob {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "GenerateJob({} tokens)",
            self.prompt_tokens.len()
        )
    }
}

impl LocalGenerator {
    pub fn load(path: &Path, options: &LocalGeneratorOptions) -> Result<Self> {
        let model = Arc::new(crate::llama::load_model(
            path,
            "chat (decoder) GGUF",
            |architecture| !matches!(architecture, "bert" | "nomic-bert" | "jina-bert-v2" | ""),
        )?);
        if model.chat_template(None).is_err() {
            return Err(ModelError::WrongModel {
                path: path.to_path_buf(),
                expected: "chat model with a chat template".to_string(),
                reason: "it has no tokenizer.chat_template".to_string(),
            });
        }
        let trained = usize::try_from(model.n_ctx_train()).unwrap_or(2048);
        let context_window = options.context_size.unwrap_or(trained.min(8192)).max(16);
        let stop_token_ids = model
            .tokens(true)
            .map(|(token, _)| token)
            .filter(|&token| model.vocab().is_eog(token))
            .filter_map(|token| u32::try_from(token.0).ok())
            .collect();
        let model_name = match &options.name {
            Some(name) => name.clone(),
            None => model
                .meta_val_str("general.name")
                .unwrap_or_else(|_| path.display().to_string()),
        };
        let decode_threads = options
            .decode_threads
            .unwrap_or_else(|| decode_threads_for(model.n_params(), options.threads));
        let jobs = spawn_generation_worker(model.clone(), options, decode_threads, context_window)?;
        Ok(LocalGenerator {
            info: GeneratorInfo {
                model_name,
                context_window,
                stop_token_ids,
            },
            model,
            jobs,
        })
    }

    fn tokenize(&self, prompt: &Prompt) -> Result<Vec<LlamaToken>> {
        let vocab = self.model.vocab();
        match prompt {
            Prompt::Raw(text) => Ok(vocab.tokenize(text.as_bytes(), false, true)),
            Prompt::Tokens(ids) => {
                let vocabulary_size = u32::try_from(vocab.n_tokens()).unwrap_or(0);
                ids.iter()
                    .map(|&id| {
                        if id < vocabulary_size {
                            Ok(LlamaToken::new(i32::try_from(id).unwrap_or_default()))
                        } else {
                            Err(ModelError::InvalidRequest(format!(
                                "token id {id} is outside the vocabulary of {vocabulary_size}"
                            )))
                        }
                    })
                    .collect()
            }
            Prompt::Chat(messages) => {
                let template = self.model.chat_template(None).map_err(|error| {
                    ModelError::Inference(format!("the model has no chat template: {error}"))
                })?;
                let segments = render_segments(messages, |placeholders| {
                    let chat = placeholders
                        .iter()
                        .map(|(role, content)| LlamaChatMessage::new(role.clone(), content.clone()))
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(|error| ModelError::InvalidRequest(error.to_string()))?;
                    self.model
                        .apply_chat_template(&template, &chat, true)
                        .map_err(|error| {
                            ModelError::Inference(format!("chat template failed: {error}"))
                        })
                })?;
                let mut tokens = Vec::new();
                for segment in segments {
                    match segment {
                        Segment::Template(text) => {
                            tokens.extend(vocab.tokenize(text.as_bytes(), false, true));
                        }
                        Segment::Content(text) => {
                            tokens.extend(vocab.tokenize(text.as_bytes(), false, false));
                        }
                    }
                }
                Ok(tokens)
            }
        }
    }
}

impl Generator for LocalGenerator {
    fn info(&self) -> &GeneratorInfo {
        &self.info
    }

    fn tokenize_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        Ok(self
            .tokenize(prompt)?
            .into_iter()
            .filter_map(|token| u32::try_from(token.0).ok())
            .collect())
    }

    fn generate(&self, request: GenerationRequest) -> Result<GenerationStream> {
        request.sampling.validate()?;
        let prompt_tokens = self.tokenize(&request.prompt)?;
        if prompt_tokens.is_empty() {
            return Err(ModelError::InvalidRequest(
                "the prompt is empty".to_string(),
            ));
        }
        // At least one token must fit after the prompt, and every token asked for: a request
        // that cannot finish is refused before it takes the model's time.
        if prompt_tokens.len() >= self.info.context_window {
            return Err(ModelError::PromptTooLong {
                prompt_tokens: prompt_tokens.len(),
                context_window: self.info.context_window,
            });
        }
        if prompt_tokens.len() + request.sampling.max_tokens > self.info.context_window {
            return Err(ModelError::CompletionTooLong {
                prompt_tokens: prompt_tokens.len(),
                max_tokens: request.sampling.max_tokens,
                context_window: self.info.context_window,
            });
        }
        let (events, receiver) = std::sync::mpsc::channel();
        self.jobs.send(GenerateJob {
            prompt_tokens,
            sampling: request.sampling,
            events,
        })?;
        Ok(GenerationStream::new(receiver))
    }
}

/// Threads that decode one token at a time for a model of `parameters`, given `threads` for
/// prompts. A token of a small model is too little work to split: on 2 cores, SmolLM2-135M
/// decodes 120 tokens/s on one thread against about 135 on two, and the two wait for each
/// other at every operation — which, when another process holds a core, costs far more than
/// the split gains (docs/models.md, "Sharing a machine"). Larger models are bound by memory
/// bandwidth, which more threads do use.
pub(crate) fn decode_threads_for(parameters: u64, threads: usize) -> usize {
    const SMALL_MODEL: u64 = 500_000_000;
    if parameters < SMALL_MODEL {
        1
    } else {
        threads.max(1)
    }
}

fn spawn_generation_worker(
    model: Arc<LlamaModel>,
    options: &LocalGeneratorOptions,
    decode_threads: usize,
    context_window: usize,
) -> Result<Worker<GenerateJob>> {
    let threads = i32::try_from(options.threads.max(1)).unwrap_or(1);
    let decode_threads = i32::try_from(decode_threads.max(1)).unwrap_or(1);
    let batch_size = options.batch_size.clamp(1, context_window);
    let gate = options.gate.clone();
    let context_u32 = u32::try_from(context_window).unwrap_or(u32::MAX);
    // llama.cpp's LLAMA_FLASH_ATTN_TYPE_{AUTO,DISABLED,ENABLED}.
    let flash_attention = match options.flash_attention {
        None => -1,
        Some(false) => 0,
        Some(true) => 1,
    };
    crate::worker::spawn_worker(
        "basalt-generate",
        move |ready, jobs: Receiver<GenerateJob>| {
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(context_u32))
                .with_n_batch(u32::try_from(batch_size).unwrap_or(512))
                .with_n_ubatch(u32::try_from(batch_size).unwrap_or(512))
                .with_n_seq_max(1)
                .with_flash_attention_policy(flash_attention)
                .with_n_threads(decode_threads)
                .with_n_threads_batch(threads);
            let backend = match crate::llama::backend() {
                Ok(backend) => backend,
                Err(error) => return ready(Err(error)),
            };
            let mut context = match model.new_context(backend, params) {
                Ok(context) => context,
                Err(error) => {
                    return ready(Err(ModelError::Inference(format!(
                        "could not create a generation context of {context_window} tokens: {error}"
                    ))));
                }
            };
            ready(Ok(()));
            let mut batch = LlamaBatch::new(batch_size, 1);
            for job in jobs {
                let events = job.events.clone();
                let outcome =
                    run_generation(&model, &mut context, &mut batch, batch_size, &gate, &job);
                if let Err(error) = outcome {
                    let _ = events.send(Err(error));
                }
            }
        },
    )
}

fn run_generation(
    model: &LlamaModel,
    context: &mut llama_cpp_2::context::LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    batch_size: usize,
    gate: &InferenceGate,
    job: &GenerateJob,
) -> Result<()> {
    let decode_error = |error: llama_cpp_2::DecodeError| {
        ModelError::Inference(format!("llama.cpp decode failed: {error}"))
    };
    let context_window = usize::try_from(context.n_ctx()).unwrap_or(0);
    context.clear_kv_cache();

    let started = Instant::now();
    let prompt = &job.prompt_tokens;
    let mut position = 0i32;
    for (chunk_index, chunk) in prompt.chunks(batch_size).enumerate() {
        batch.clear();
        let last_chunk = (chunk_index + 1) * batch_size >= prompt.len();
        for (offset, &token) in chunk.iter().enumerate() {
            let wants_logits = last_chunk && offset + 1 == chunk.len();
            batch
                .add(token, position, &[0], wants_logits)
                .map_err(|error| ModelError::Inference(format!("batch: {error}")))?;
            position += 1;
        }
        let _pass = gate.enter(Priority::Interactive);
        context.decode(batch).map_err(decode_error)?;
    }
    let prompt_duration = started.elapsed();

    let sampling = &job.sampling;
    let mut sampler = if sampling.temperature <= 0.0 {
        LlamaSampler::greedy()
    } else {
        let seed = sampling.seed.unwrap_or_else(random_seed);
        LlamaSampler::chain_simple([
            LlamaSampler::top_p(sampling.top_p, 1),
            LlamaSampler::temp(sampling.temperature),
            LlamaSampler::dist(seed),
        ])
    };

    let vocab = model.vocab();
    let mut utf8 = Utf8Stream::default();
    let mut stops = StopMatcher::new(&sampling.stop);
    let mut completion_tokens = 0usize;
    let decode_started = Instant::now();
    let finish_reason = loop {
        let token = sampler.sample(context, batch.n_tokens() - 1);
        sampler.accept(token);
        completion_tokens += 1;
        let id = u32::try_from(token.0).unwrap_or_default();
        if vocab.is_eog(token) {
            let mut text = utf8.finish();
            text.push_str(&stops.finish());
            if job
                .events
                .send(Ok(GenerationEvent::Token { id, text }))
                .is_err()
            {
                return Ok(());
            }
            break FinishReason::Stop;
        }
        let piece = vocab.token_to_piece(token, false, None);
        let step = stops.push(&utf8.push(&piece));
        let mut text = step.release;
        let context_full = usize::try_from(position).unwrap_or(usize::MAX) + 1 >= context_window;
        let finish = if step.stopped {
            Some(FinishReason::Stop)
        } else if completion_tokens >= sampling.max_tokens || context_full {
            text.push_str(&utf8.finish());
            text.push_str(&stops.finish());
            Some(FinishReason::Length)
        } else {
            None
        };
        if job
            .events
            .send(Ok(GenerationEvent::Token { id, text }))
            .is_err()
        {
            // The caller dropped the stream: cancelled.
            return Ok(());
        }
        if let Some(reason) = finish {
            break reason;
        }
        batch.clear();
        batch
            .add(token, position, &[0], true)
            .map_err(|error| ModelError::Inference(format!("batch: {error}")))?;
        position += 1;
        let _pass = gate.enter(Priority::Interactive);
        context.decode(batch).map_err(decode_error)?;
    };
    let summary = GenerationSummary {
        prompt_tokens: prompt.len(),
        completion_tokens,
        finish_reason,
        prompt_duration,
        decode_duration: decode_started.elapsed(),
        fallback_model: None,
    };
    let _ = job.events.send(Ok(GenerationEvent::Done(summary)));
    Ok(())
}

fn random_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos() ^ (elapsed.as_secs() as u32))
        .unwrap_or(0);
    nanos.wrapping_mul(2_654_435_761)
}
