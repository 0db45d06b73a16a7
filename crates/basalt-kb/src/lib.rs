//! Knowledge bases: the data directory that holds them ([`DataDir`]), ingestion from files into
//! a knowledge base's index ([`ingest`]), search over it ([`KnowledgeBase::search`]), and retrieval
//! evaluation on BEIR-format datasets ([`eval`]), and encryption at rest of the knowledge bases
//! created under a master key ([`DataDir::with_master_key`], [`rotate_master`]).

mod catalog;
mod database;
mod encryption;
mod error;
pub mod eval;
pub mod jobs;
mod knowledge_base;
pub mod migrate;
mod objects;
mod pg_jobs;
mod pipeline;
mod reembed;
mod search;

pub use catalog::conformance as catalog_conformance;
pub use catalog::{KbCatalog, bedrock_id};
pub use encryption::{Rotation, rotate_master};
pub use error::{KbError, Result};
pub use jobs::conformance as job_queue_conformance;
pub use jobs::{FileJobQueue, Job, JobProgress, JobQueue, JobStatus, Lease, UploadedFile};
pub use knowledge_base::{
    AnswerSettings, AnswerStyle, Backend, ChunkingSettings, DEFAULT_TENANT, DataDir,
    EmbeddingSettings, KbSettings, KnowledgeBase, PromptTemplate, validate_name,
};
pub use objects::{ObjectUploads, ingest_objects};
pub use pg_jobs::PgJobQueue;
pub use pipeline::{
    AccessMap, DEFAULT_MAX_FILE_BYTES, Failure, IngestOptions, IngestProgress, IngestReport,
    SIDECAR_SUFFIX, StageTimings, ingest,
};
pub use reembed::{ReembedProgress, ReembedReport};
pub use search::{SearchOptions, SearchResults, SearchTimings};
