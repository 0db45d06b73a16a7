//! Ingestion for Basalt: turning extracted document text into chunks that fit the embedding
//! model. So far the structure-aware chunker (`chunker.rs`); the format parsers, provenance and
//! the ingestion pipeline come with the knowledge-base issue.
//!
//! Pure logic: no I/O, no model. Token counts come from the caller through [`TokenCounter`], so
//! this crate does not depend on the model crate.

mod chunker;

pub use chunker::{ChunkSpan, ChunkerOptions, Section, TokenCounter, chunk_sections};
