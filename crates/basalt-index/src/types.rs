//! What goes into a knowledge-base index and what comes out of a search.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::filter::Filter;

/// One source document as the index knows it: identity, provenance and user metadata. Its
/// chunks carry their own text, position and vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DocumentRecord {
    /// Stable id: a BEIR `_id`, a record's `id` column, or derived from the source path.
    pub doc_id: String,
    /// Where the text came from: a path, or `path#record` for one record of a CSV/JSON file.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The parser that produced the text: `text`, `markdown`, `html`, `pdf`, `docx`, `csv`, `json`.
    pub format: String,
    /// `sha256:<hex>` of the source bytes (or of the record): unchanged content is not re-ingested.
    pub content_hash: String,
    /// RFC 3339 UTC time at which this version was ingested.
    pub ingested_at: String,
    /// Characters of extracted text.
    pub text_chars: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<u32>,
    pub chunk_count: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// User metadata: strings, numbers and booleans.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Who may read the document through the API: `principal:NAME` and `group:NAME` entries.
    /// Empty: everyone who may read the knowledge base.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readers: Vec<String>,
}

pub use basalt_core::access::{Reader, validate_reader};

impl Hit {
    /// The hit of `chunk` of `record`, scored `score`.
    pub fn new(record: &DocumentRecord, chunk: ChunkRecord, score: f32) -> Self {
        Hit {
            chunk_id: ChunkRecord::chunk_id(&record.doc_id, chunk.ordinal),
            doc_id: record.doc_id.clone(),
            score,
            text: chunk.text,
            source: record.source.clone(),
            title: record.title.clone(),
            heading_path: chunk.heading_path,
            page: chunk.page,
            char_start: chunk.char_start,
            char_end: chunk.char_end,
            content_hash: record.content_hash.clone(),
            ingested_at: record.ingested_at.clone(),
            tags: record.tags.clone(),
            metadata: record.metadata.clone(),
        }
    }
}

impl SearchRequest<'_> {
    /// The query vector the mode needs, checked against the store's `dimension`: `None` for
    /// BM25; an error when a vector mode has none or one of another dimension.
    pub fn query_vector_for(&self, dimension: usize) -> crate::Result<Option<&[f32]>> {
        match (self.mode.uses_vector(), self.query_vector) {
            (false, _) => Ok(None),
            (true, Some(vector)) if vector.len() == dimension => Ok(Some(vector)),
            (true, Some(vector)) => Err(crate::IndexError::Dimension {
                expected: dimension,
                found: vector.len(),
            }),
            (true, None) => Err(crate::IndexError::MissingQueryVector {
                mode: self.mode.as_str(),
            }),
        }
    }
}

impl DocumentRecord {
    /// Whether `reader` may read this document: one with no readers is shared with everyone
    /// who may read its knowledge base; otherwise one of its readers must be the principal or
    /// one of its groups.
    pub fn readable_by(&self, reader: &Reader) -> bool {
        reader.admits(&self.readers)
    }
}

/// One chunk of a document: the unit that is embedded, indexed and returned by search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// Position of the chunk within its document, from 0.
    pub ordinal: u32,
    pub text: String,
    /// Headings enclosing the chunk, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heading_path: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// Character (not byte) offsets of the chunk in the document's extracted text.
    pub char_start: u64,
    pub char_end: u64,
    /// Unit-length embedding of the chunk; the index checks its dimension.
    #[serde(skip)]
    pub vector: Vec<f32>,
}

impl ChunkRecord {
    pub fn chunk_id(doc_id: &str, ordinal: u32) -> String {
        format!("{doc_id}#{ordinal}")
    }

    /// What BM25 indexes for this chunk of a document titled `title`: the title, the headings
    /// and the text, a line each (every backend the same, so they score alike).
    pub fn search_text(&self, title: Option<&str>) -> String {
        let mut search = String::new();
        for line in title
            .into_iter()
            .chain(self.heading_path.iter().map(String::as_str))
        {
            search.push_str(line);
            search.push('\n');
        }
        search.push_str(&self.text);
        search
    }
}

/// A document with all its chunks: the unit of an atomic write.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentWrite {
    pub document: DocumentRecord,
    pub chunks: Vec<ChunkRecord>,
}

impl DocumentWrite {
    /// A document `doc_id` (source `<doc_id>.md`, no title, shared with everyone) of one chunk,
    /// `text` with `vector`: what tests of stores and their callers write.
    pub fn one_chunk(doc_id: &str, text: &str, vector: Vec<f32>) -> Self {
        DocumentWrite {
            document: DocumentRecord {
                doc_id: doc_id.into(),
                source: format!("{doc_id}.md"),
                title: None,
                format: "markdown".into(),
                content_hash: format!("sha256:{}", basalt_core::hex::sha256(text.as_bytes())),
                ingested_at: "2026-12-07T00:00:00Z".into(),
                text_chars: text.chars().count() as u64,
                pages: None,
                chunk_count: 1,
                tags: Vec::new(),
                metadata: BTreeMap::new(),
                readers: Vec::new(),
            },
            chunks: vec![ChunkRecord {
                ordinal: 0,
                text: text.into(),
                heading_path: Vec::new(),
                page: None,
                char_start: 0,
                char_end: text.chars().count() as u64,
                vector,
            }],
        }
    }
}

/// Which retrievers a search runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Bm25,
    Vector,
    #[default]
    Hybrid,
}

impl SearchMode {
    pub const ALL: [SearchMode; 3] = [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid];

    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Bm25 => "bm25",
            SearchMode::Vector => "vector",
            SearchMode::Hybrid => "hybrid",
        }
    }

    pub fn uses_vector(self) -> bool {
        self != SearchMode::Bm25
    }
}

impl std::str::FromStr for SearchMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "bm25" => Ok(SearchMode::Bm25),
            "vector" => Ok(SearchMode::Vector),
            "hybrid" => Ok(SearchMode::Hybrid),
            other => Err(format!(
                "unknown search mode {other:?}: use bm25, vector or hybrid"
            )),
        }
    }
}

/// How hybrid search merges the BM25 and vector rankings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Fusion {
    /// Reciprocal-rank fusion: `Σ 1 / (k + rank)`, rank from 1.
    Rrf { k: f32 },
    /// `bm25_weight · bm25 / max(bm25) + (1 − bm25_weight) · cosine`.
    Weighted { bm25_weight: f32 },
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion::Weighted { bm25_weight: 0.3 }
    }
}

impl std::str::FromStr for Fusion {
    type Err = String;

    /// `rrf`, `rrf:K`, `weighted`, `weighted:W`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (name, value) = match text.split_once(':') {
            Some((name, value)) => (name, Some(value)),
            None => (text, None),
        };
        let number = |default: f32| -> Result<f32, String> {
            value.map_or(Ok(default), |value| {
                value
                    .parse::<f32>()
                    .map_err(|_| format!("fusion parameter {value:?} is not a number"))
            })
        };
        match name {
            "rrf" => {
                let k = number(60.0)?;
                if k < 0.0 {
                    return Err("rrf:K needs K ≥ 0".into());
                }
                Ok(Fusion::Rrf { k })
            }
            "weighted" => {
                let bm25_weight = number(0.3)?;
                if !(0.0..=1.0).contains(&bm25_weight) {
                    return Err("weighted:W needs 0 ≤ W ≤ 1 (the BM25 weight)".into());
                }
                Ok(Fusion::Weighted { bm25_weight })
            }
            other => Err(format!(
                "unknown fusion {other:?}: use rrf, rrf:K, weighted or weighted:W"
            )),
        }
    }
}

/// BM25 parameters. Defaults follow what scores best on BEIR-style data (Anserini's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Bm25Params {
    pub k1: f32,
    pub b: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Bm25Params { k1: 0.9, b: 0.4 }
    }
}

/// One search. `query_vector` is needed by the vector and hybrid modes.
#[derive(Debug, Clone)]
pub struct SearchRequest<'a> {
    pub text: &'a str,
    pub query_vector: Option<&'a [f32]>,
    pub mode: SearchMode,
    pub k: usize,
    pub filter: Option<&'a Filter>,
    /// Only documents this reader may read; `None` searches everything (the CLI, which owns
    /// the data directory).
    pub reader: Option<&'a Reader>,
    pub fusion: Fusion,
    pub bm25: Bm25Params,
    /// Scan every vector even where an approximate (HNSW) graph exists: the reference that
    /// approximate recall is measured against.
    pub exact: bool,
}

/// How vector search finds neighbours in a knowledge base.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum VectorIndex {
    /// HNSW graphs for index segments of at least [`VectorIndex::AUTO_MIN_CHUNKS`] chunks,
    /// an exact scan of smaller ones.
    #[default]
    Auto,
    /// Always scan every vector.
    Exact,
    /// A graph for every segment, however small.
    Hnsw,
}

impl VectorIndex {
    /// Below this many chunks a segment is scanned exactly: a scan of 4,096 384-dimensional
    /// vectors takes well under a millisecond, and exact is exact.
    pub const AUTO_MIN_CHUNKS: usize = 4096;

    pub fn as_str(self) -> &'static str {
        match self {
            VectorIndex::Auto => "auto",
            VectorIndex::Exact => "exact",
            VectorIndex::Hnsw => "hnsw",
        }
    }

    /// Whether a segment holding `chunks` chunks gets a graph.
    pub fn wants_graph(self, chunks: usize) -> bool {
        match self {
            VectorIndex::Auto => chunks >= Self::AUTO_MIN_CHUNKS,
            VectorIndex::Exact => false,
            VectorIndex::Hnsw => chunks > 0,
        }
    }
}

impl std::str::FromStr for VectorIndex {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(VectorIndex::Auto),
            "exact" => Ok(VectorIndex::Exact),
            "hnsw" => Ok(VectorIndex::Hnsw),
            other => Err(format!(
                "unknown vector index {other:?}: use auto, exact or hnsw"
            )),
        }
    }
}

/// One search result: a chunk with its score and provenance.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Hit {
    pub chunk_id: String,
    pub doc_id: String,
    pub score: f32,
    pub text: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heading_path: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub char_start: u64,
    pub char_end: u64,
    pub content_hash: String,
    pub ingested_at: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// Totals of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct IndexStats {
    pub documents: u64,
    pub chunks: u64,
}
