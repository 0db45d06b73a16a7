//! Searching a knowledge base: embed the query (when the mode needs it), then search the index.

use std::time::Instant;

use basalt_index::{Filter, Fusion, Hit, Reader, SearchMode, SearchRequest};
use basalt_model::Embedder;
use serde::Serialize;

use crate::error::{KbError, Result};
use crate::knowledge_base::KnowledgeBase;

/// Per-query choices; `None` takes the knowledge base's setting.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    pub mode: Option<SearchMode>,
    pub k: usize,
    pub filter: Option<Filter>,
    /// Only documents this reader may read (`None`: every document).
    pub reader: Option<Reader>,
    pub fusion: Option<Fusion>,
    /// Scan every vector even where the KB has HNSW graphs.
    pub exact: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, schemars::JsonSchema)]
pub struct SearchTimings {
    pub embed_ms: f64,
    pub search_ms: f64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SearchResults {
    pub mode: SearchMode,
    pub hits: Vec<Hit>,
    pub timings: SearchTimings,
}

pub fn search(
    kb: &KnowledgeBase,
    embedder: Option<&dyn Embedder>,
    query: &str,
    options: &SearchOptions,
) -> Result<SearchResults> {
    let mode = options.mode.unwrap_or(kb.settings.mode);
    let mut timings = SearchTimings::default();
    let vector = if mode.uses_vector() {
        let embedder = embedder.ok_or(basalt_index::IndexError::MissingQueryVector {
            mode: mode.as_str(),
        })?;
        if embedder.info().dimension != kb.settings.embedding.dimension {
            return Err(KbError::ModelMismatch {
                expected: kb.settings.embedding.dimension,
                found: embedder.info().dimension,
            });
        }
        let started = Instant::now();
        let vector = embedder.embed_query(query)?;
        timings.embed_ms = started.elapsed().as_secs_f64() * 1e3;
        Some(vector)
    } else {
        None
    };
    let started = Instant::now();
    let hits = kb.store.search(&SearchRequest {
        text: query,
        query_vector: vector.as_deref(),
        mode,
        k: options.k,
        filter: options.filter.as_ref(),
        reader: options.reader.as_ref(),
        fusion: options.fusion.unwrap_or(kb.settings.fusion),
        bm25: kb.settings.bm25,
        exact: options.exact,
    })?;
    timings.search_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(SearchResults {
        mode,
        hits,
        timings,
    })
}
