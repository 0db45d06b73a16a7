//! Ingestion for Basalt: turning source files into extracted text with structure, and that
//! text into chunks that fit the embedding model. So far: the document model (`document.rs`),
//! Markdown and plain-text extraction (`markdown.rs`) and the structure-aware chunker
//! (`chunker.rs`); the other formats, provenance and the pipeline come with the knowledge-base
//! issue.
//!
//! Pure logic: no I/O, no model. Token counts come from the caller through [`TokenCounter`], so
//! this crate does not depend on the model crate.

mod chunker;
mod document;
mod markdown;

pub use chunker::{ChunkSpan, ChunkerOptions, TokenCounter, chunk_sections};
pub use document::{ExtractedDocument, Section};
pub use markdown::{extract_markdown, extract_plain_text};
