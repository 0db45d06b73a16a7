//! Local inference for Basalt: the [`Embedder`] and [`Generator`] traits, the CPU engines that
//! implement them (llama.cpp for generation; a native BERT encoder, or llama.cpp, for
//! embeddings), and the provisioning that puts model files on disk.
//!
//! Callers depend on the traits only, so a remote provider (an OpenAI-compatible server, Bedrock)
//! can be added as another implementation without touching them.

pub mod bedrock;
mod bert;
mod catalog;
mod chat;
mod convert;
pub mod cpu;
mod embedder;
mod error;
mod finetune;
mod gate;
mod generator;
mod gguf;
mod llama;
mod matmul;
mod provision;
mod remote;
mod remote_embed;
mod safetensors;
mod simd;
mod stop;
pub mod testing;
mod utf8;
mod wordpiece;
mod worker;

pub use catalog::{
    DEFAULT_EMBEDDING_MODEL, DEFAULT_GENERATION_MODEL, ModelFile, ModelKind, ModelSpec, ModelsDir,
    basalt_data_home, catalog,
};
pub use chat::{ChatMessage, ChatRole, Prompt};
pub use convert::convert_bert_safetensors_to_gguf;
pub use embedder::{Embedder, EmbedderInfo, EmbeddingEngine, LocalEmbedder, LocalEmbedderOptions};
pub use error::ModelError;
pub use finetune::{FineTuneOptions, FineTunedClassifier};
pub use gate::InferenceGate;
pub use generator::{
    DEFAULT_MAX_TOKENS, FinishReason, GenerationEvent, GenerationRequest, GenerationStream,
    GenerationSummary, Generator, GeneratorInfo, LocalGenerator, LocalGeneratorOptions,
    SamplingOptions,
};
pub use llama::llama_system_info;
pub use provision::{FetchReport, FileStatus, InstalledModel, fetch_models, inspect_models};
pub use remote::conformance as registry_conformance;
pub use remote::{
    ApiKeySource, ChatModel, FallbackGenerator, Protocol, RegistryStore, RemoteChatOptions,
    RemoteGenerator, RemoteKind, RemoteModel, RemoteModels,
};
pub use remote_embed::{REMOTE_CHUNK_TOKENS, RemoteEmbedder};
