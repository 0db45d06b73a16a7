//! Knowledge bases: the data directory that holds them ([`DataDir`]), ingestion from files into
//! a knowledge base's index ([`ingest`]), search over it ([`KnowledgeBase::search`]), and retrieval
//! evaluation on BEIR-format datasets ([`eval`]), and encryption at rest of the knowledge bases
//! created under a master key ([`DataDir::with_master_key`], [`rotate_master`]).

mod encryption;
mod error;
pub mod eval;
mod knowledge_base;
mod pipeline;
mod search;

pub use encryption::{Rotation, rotate_master};
pub use error::{KbError, Result};
pub use knowledge_base::{
    AnswerSettings, ChunkingSettings, DEFAULT_TENANT, DataDir, EmbeddingSettings, KbSettings,
    KnowledgeBase, PromptTemplate, validate_name, write_atomically,
};
pub use pipeline::{
    AccessMap, DEFAULT_MAX_FILE_BYTES, Failure, IngestOptions, IngestProgress, IngestReport,
    SIDECAR_SUFFIX, StageTimings, ingest,
};
pub use search::{SearchOptions, SearchResults, SearchTimings};

/// The current time as RFC 3339 UTC, to the second.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&format)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
