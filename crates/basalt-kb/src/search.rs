//! Searching a knowledge base: embed the query (when the mode needs it), then search the index.

use std::time::Instant;

use basalt_index::{Bm25Params, Filter, Fusion, Hit, Reader, SearchMode, SearchRequest};
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
    /// BM25's parameters for this search (an evaluation's sweep).
    pub bm25: Option<Bm25Params>,
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

impl KnowledgeBase {
    /// Searches for `query`, embedding it with `embedder` when the mode needs a vector (which
    /// must be of the knowledge base's dimension).
    pub fn search(
        &self,
        embedder: Option<&dyn Embedder>,
        query: &str,
        options: &SearchOptions,
    ) -> Result<SearchResults> {
        let mode = options.mode.unwrap_or(self.settings.mode);
        let mut timings = SearchTimings::default();
        let vector = if mode.uses_vector() {
            let embedder = embedder.ok_or(basalt_index::IndexError::MissingQueryVector {
                mode: mode.as_str(),
            })?;
            let started = Instant::now();
            self.check_dimension(embedder.info().dimension)?;
            let vector = embedder.embed_query(query)?;
            timings.embed_ms = started.elapsed().as_secs_f64() * 1e3;
            Some(vector)
        } else {
            None
        };
        let started = Instant::now();
        let hits = self.search_with(query, vector.as_deref(), options)?;
        timings.search_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(SearchResults {
            mode,
            hits,
            timings,
        })
    }

    /// Searches for `query` whose embedding the caller already has (`vector`, of the knowledge
    /// base's dimension).
    pub fn search_vector(
        &self,
        query: &str,
        vector: &[f32],
        options: &SearchOptions,
    ) -> Result<Vec<Hit>> {
        self.check_dimension(vector.len())?;
        self.search_with(query, Some(vector), options)
    }

    fn search_with(
        &self,
        query: &str,
        vector: Option<&[f32]>,
        options: &SearchOptions,
    ) -> Result<Vec<Hit>> {
        Ok(self.store.search(&SearchRequest {
            text: query,
            query_vector: vector,
            mode: options.mode.unwrap_or(self.settings.mode),
            k: options.k,
            filter: options.filter.as_ref(),
            reader: options.reader.as_ref(),
            fusion: options.fusion.unwrap_or(self.settings.fusion),
            bm25: options.bm25.unwrap_or(self.settings.bm25),
            exact: options.exact,
        })?)
    }

    fn check_dimension(&self, found: usize) -> Result<()> {
        let expected = self.settings.embedding.dimension;
        if found == expected {
            Ok(())
        } else {
            Err(KbError::ModelMismatch { expected, found })
        }
    }
}
