//! Storage and search for a knowledge base: what is indexed, and which chunks match a query.
//!
//! [`KnowledgeStore`] is the seam: the embedded implementation ([`TantivyStore`]) keeps
//! everything in one tantivy index on disk (BM25 postings, stored chunks, vectors, document
//! records), so a document and all its chunks become visible, or are replaced or deleted, in one
//! atomic commit. A PostgreSQL + pgvector backend is meant to implement the same trait and pass
//! the same tests.
//!
//! BM25 with configurable `k1`/`b` is scored term-at-a-time over the postings; vector search is
//! an exact cosine scan of small segments and an HNSW graph walk ([`VectorIndex`]) of large ones;
//! both are restricted by the filter before the top k are chosen. Hybrid search fuses the two
//! rankings (reciprocal rank or weighted scores).

mod analyzer;
pub mod conformance;
mod error;
mod filter;
mod fusion;
mod hnsw;
mod sealed;
mod store;
mod types;

pub use analyzer::{ANALYZERS, DEFAULT_ANALYZER, analyzer, terms};
pub use error::{IndexError, Result};
pub use filter::{Filter, FilterError};
pub use fusion::{fuse, top_k};
pub use sealed::Sealer;
pub use store::{StoreOptions, TantivyStore, VECTOR_DEPTH};
pub use types::{
    Bm25Params, ChunkRecord, DocumentRecord, DocumentWrite, Fusion, Hit, IndexStats, Reader,
    SearchMode, SearchRequest, VectorIndex, validate_reader,
};

/// A knowledge base's index. Writes are atomic per call: after `write` returns, every document
/// in it is searchable with all its chunks (replacing any older version with the same id) and
/// survives a crash; before, none of it is visible.
pub trait KnowledgeStore: Send + Sync + std::fmt::Debug {
    /// Adds or replaces documents, all in one atomic, durable commit.
    fn write(&self, documents: Vec<DocumentWrite>) -> Result<()>;

    /// Removes documents and all their chunks in one commit; returns how many existed.
    fn delete(&self, doc_ids: &[String]) -> Result<usize>;

    /// The current record of a document.
    fn document(&self, doc_id: &str) -> Result<Option<DocumentRecord>>;

    /// Every document, ordered by id.
    fn documents(&self) -> Result<Vec<DocumentRecord>>;

    /// A document's chunks in order, with their vectors (empty for an unknown document):
    /// what re-embedding a knowledge base reads, and what moving it to another backend
    /// copies.
    fn chunks(&self, doc_id: &str) -> Result<Vec<ChunkRecord>>;

    /// The best `k` chunks for a request, best first.
    fn search(&self, request: &SearchRequest<'_>) -> Result<Vec<Hit>>;

    fn stats(&self) -> Result<IndexStats>;

    /// Bytes the index takes where it is stored (files, or the database's tables and indexes).
    fn size_bytes(&self) -> Result<u64>;

    /// Finishes the background work of earlier writes (segment merges) and builds the derived
    /// search structures they need (approximate vector graphs), so the next search is fast.
    /// Searches are correct without it; ingestion calls it once at the end.
    fn finish_writes(&self) -> Result<()> {
        Ok(())
    }
}
