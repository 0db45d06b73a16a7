//! The embedded index: one tantivy index per knowledge base holding document records, chunks,
//! BM25 postings and vectors, so that one commit changes all of them at once.
//!
//! Layout of a tantivy document (one per chunk, plus one record per source document):
//! `kind` (`chunk` | `doc`), `doc_id`, `source` (records only), `search` (analyzed title,
//! headings and text of a chunk; not stored), `payload` (the JSON of a [`ChunkRecord`] or
//! [`DocumentRecord`]) and `vector` (little-endian f32, chunks only).
//!
//! Readers keep a per-segment cache of what every search needs (which docs are chunks, their
//! document and page, their vectors), filled from the document store the first time a segment is
//! seen. Segments never change once written, so the cache only grows with new segments and is
//! pruned when merges retire old ones.
//!
//! Vector search scans small segments exactly and walks an HNSW graph ([`crate::hnsw`]) of large
//! ones. A segment's graph is built once — by [`KnowledgeStore::finish_writes`] at the end of an
//! ingestion, or in the background by the first search that needs it — and kept in
//! `ann/<segment id>.hnsw` next to the index; until it exists, searches scan that segment
//! exactly, so results never wait for a build.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use tantivy::directory::error::LockError;
use tantivy::index::SegmentId;
use tantivy::postings::Postings;
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    DocId, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, SegmentReader, TERMINATED,
    TantivyDocument, TantivyError, Term,
};

use crate::KnowledgeStore;
use crate::analyzer::{self, ANALYZERS};
use crate::error::{IndexError, Result};
use crate::fusion::{fuse, top_k};
use crate::hnsw::{Hnsw, HnswParams, dot};
use crate::sealed::{SealedDirectory, Sealer};
use crate::types::{
    Bm25Params, ChunkRecord, DocumentRecord, DocumentWrite, Hit, IndexStats, SearchMode,
    SearchRequest, VectorIndex,
};

const KIND_CHUNK: &str = "chunk";
const KIND_DOC: &str = "doc";
/// Memory the single indexing thread may buffer before it flushes a segment.
const WRITER_MEMORY: usize = 64 << 20;
/// Where segment graphs live, inside the index directory (tantivy ignores subdirectories).
const ANN_DIR: &str = "ann";
/// How deep the vector ranking goes when graphs answer: the candidates that hybrid fusion
/// rescores exactly, together with as many from BM25.
pub const VECTOR_DEPTH: usize = 100;
/// The least breadth of a graph walk on the bottom layer (hnswlib's `ef`): vector-only
/// searches walk `max(k, SEARCH_EF)` candidates per segment, hybrid ones [`VECTOR_DEPTH`].
const SEARCH_EF: usize = 64;
/// A filter that keeps fewer than one chunk in this many of a segment makes the graph walk
/// wander; those few chunks are scanned exactly instead.
const SELECTIVE_FILTER: usize = 20;

/// How to open or create a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Dimension of every chunk vector.
    pub dimension: usize,
    /// BM25 analyzer, fixed when the index is created (see [`ANALYZERS`]).
    pub analyzer: String,
    /// Exact scans or HNSW graphs for vector search.
    pub vector_index: VectorIndex,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    kind: Field,
    doc_id: Field,
    source: Field,
    search: Field,
    payload: Field,
    vector: Field,
}

impl Fields {
    fn schema(analyzer: &str) -> Schema {
        let mut builder = Schema::builder();
        builder.add_text_field("kind", STRING | STORED);
        builder.add_text_field("doc_id", STRING | STORED);
        builder.add_text_field("source", STRING);
        let search = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        builder.add_text_field("search", search);
        builder.add_text_field("payload", STORED);
        builder.add_bytes_field("vector", STORED);
        builder.build()
    }

    fn from_schema(schema: &Schema) -> std::result::Result<Self, String> {
        let field = |name: &str| {
            schema
                .get_field(name)
                .map_err(|_| format!("no field {name:?}"))
        };
        Ok(Fields {
            kind: field("kind")?,
            doc_id: field("doc_id")?,
            source: field("source")?,
            search: field("search")?,
            payload: field("payload")?,
            vector: field("vector")?,
        })
    }
}

/// A knowledge base's index in a directory of its own. Many readers, one writer: the writer
/// (and tantivy's lock file) is taken at the first write, so searching processes never block
/// an ingesting one.
pub struct TantivyStore {
    path: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    dimension: usize,
    vector_index: VectorIndex,
    analyzer: TextAnalyzer,
    writer: Mutex<Option<IndexWriter>>,
    cache: Mutex<Cache>,
    /// Encrypts every index and graph file, when the knowledge base is encrypted.
    sealer: Option<Arc<dyn Sealer>>,
    /// `meta.json` as the reader last loaded it; held while reloading, so reloads are
    /// serialized and each publishes a view at least as new as the one before.
    loaded: Mutex<Option<MetaStamp>>,
}

/// Identifies a version of `meta.json` (replaced by rename at every commit).
type MetaStamp = (std::time::SystemTime, u64, u64);

fn meta_stamp(index_dir: &Path) -> Option<MetaStamp> {
    let metadata = std::fs::metadata(index_dir.join("meta.json")).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some((metadata.modified().ok()?, metadata.len(), inode))
}

impl std::fmt::Debug for TantivyStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TantivyStore")
            .field("path", &self.path)
            .field("dimension", &self.dimension)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Cache {
    segments: HashMap<SegmentId, Arc<SegmentData>>,
    snapshot: Option<(u64, Arc<Snapshot>)>,
}

/// What a segment holds, decoded once.
struct SegmentData {
    /// Document records in this segment (deleted ones included; liveness is checked per search).
    records: Vec<(DocId, Arc<DocumentRecord>)>,
    /// Filled on the first search that touches the segment.
    chunks: OnceLock<std::result::Result<Arc<ChunkColumns>, String>>,
    /// The segment's HNSW graph, when its size calls for one.
    graph: Mutex<GraphSlot>,
}

/// Where a segment's graph stands in this process.
#[derive(Default)]
enum GraphSlot {
    /// The graph file has not been looked for yet.
    #[default]
    Unchecked,
    /// No usable file; nobody is building one.
    Missing,
    Building,
    Ready(Arc<Hnsw>),
}

/// Per tantivy doc of a segment: whether it is a chunk, of which document, on which page, and
/// its vector (zeros for records).
struct ChunkColumns {
    is_chunk: Vec<bool>,
    doc_ids: Vec<Arc<str>>,
    pages: Vec<Option<u32>>,
    vectors: Vec<f32>,
    /// The docs that are chunks, in order: the nodes of the segment's graph.
    chunk_docs: Vec<u32>,
}

/// The live documents of one searcher generation.
struct Snapshot {
    documents: BTreeMap<String, Arc<DocumentRecord>>,
    segments: Vec<Arc<SegmentData>>,
    /// Every live chunk, resolved on the first search of the generation.
    live: OnceLock<std::result::Result<Arc<LiveChunks>, String>>,
}

/// The chunks a search may return (not deleted, document live), with what filters need.
struct LiveChunks {
    chunks: Vec<LiveChunk>,
    columns: Vec<Arc<ChunkColumns>>,
    /// Live chunks per segment.
    per_segment: Vec<usize>,
    /// Per segment, a bitset of its live chunk docs: what an unfiltered graph walk accepts.
    live_bits: Vec<Vec<u64>>,
}

fn bitset(max_doc: usize, docs: impl Iterator<Item = DocId>) -> Vec<u64> {
    let mut bits = vec![0_u64; max_doc.div_ceil(64)];
    for doc in docs {
        bits[(doc >> 6) as usize] |= 1 << (doc & 63);
    }
    bits
}

fn contains(bits: &[u64], doc: DocId) -> bool {
    bits[(doc >> 6) as usize] & (1 << (doc & 63)) != 0
}

struct LiveChunk {
    segment: u32,
    doc: DocId,
    record: Arc<DocumentRecord>,
    page: Option<u32>,
}

impl TantivyStore {
    /// Opens the index in `path`, creating it (and the directory) when there is none.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self> {
        Self::open_with(path, options, None)
    }

    /// Opens an index whose files are encrypted with `sealer` (creating it when there is
    /// none): nothing of it is readable on disk without the key.
    pub fn open_sealed(
        path: &Path,
        options: &StoreOptions,
        sealer: Arc<dyn Sealer>,
    ) -> Result<Self> {
        Self::open_with(path, options, Some(sealer))
    }

    fn open_with(
        path: &Path,
        options: &StoreOptions,
        sealer: Option<Arc<dyn Sealer>>,
    ) -> Result<Self> {
        let engine = |error: &dyn std::fmt::Display| IndexError::Engine {
            path: path.to_owned(),
            message: error.to_string(),
        };
        let mut analyzer =
            analyzer::analyzer(&options.analyzer).ok_or_else(|| IndexError::UnknownAnalyzer {
                name: options.analyzer.clone(),
                choices: ANALYZERS.join(", "),
            })?;
        std::fs::create_dir_all(path).map_err(|error| engine(&error))?;
        let exists = path.join("meta.json").exists();
        let corrupt = |error: tantivy::TantivyError| IndexError::Corrupt {
            path: path.to_owned(),
            message: error.to_string(),
        };
        let index = match (&sealer, exists) {
            (None, true) => Index::open_in_dir(path).map_err(corrupt)?,
            (None, false) => Index::create_in_dir(path, Fields::schema(&options.analyzer))
                .map_err(|error| engine(&error))?,
            (Some(sealer), exists) => {
                let directory =
                    SealedDirectory::open(path, sealer.clone()).map_err(|error| engine(&error))?;
                if exists {
                    Index::open(directory).map_err(corrupt)?
                } else {
                    Index::create(
                        directory,
                        Fields::schema(&options.analyzer),
                        tantivy::IndexSettings::default(),
                    )
                    .map_err(|error| engine(&error))?
                }
            }
        };
        analyzer::register_all(index.tokenizers());
        let fields =
            Fields::from_schema(&index.schema()).map_err(|message| IndexError::Corrupt {
                path: path.to_owned(),
                message,
            })?;
        let reader = index
            .reader_builder()
            // Reloads happen here only, one at a time (see `searcher`): tantivy's own watcher
            // reloads on another thread and can publish an older view after a newer one.
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|error| engine(&error))?;
        // Warm the analyzer once so a broken stemmer setup fails here, not mid-search.
        let _ = analyzer::terms(&mut analyzer, "warm up");
        Ok(TantivyStore {
            path: path.to_owned(),
            index,
            reader,
            fields,
            dimension: options.dimension,
            vector_index: options.vector_index,
            analyzer,
            writer: Mutex::new(None),
            cache: Mutex::new(Cache::default()),
            sealer,
            loaded: Mutex::new(meta_stamp(path)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn engine_error(&self, error: &dyn std::fmt::Display) -> IndexError {
        IndexError::Engine {
            path: self.path.clone(),
            message: error.to_string(),
        }
    }

    fn writer(&self) -> Result<MutexGuard<'_, Option<IndexWriter>>> {
        let mut guard = lock(&self.writer);
        if guard.is_none() {
            let writer = self
                .index
                .writer_with_num_threads(1, WRITER_MEMORY)
                .map_err(|error| match error {
                    TantivyError::LockFailure(LockError::LockBusy, _) => IndexError::Locked {
                        path: self.path.clone(),
                    },
                    other => self.engine_error(&other),
                })?;
            *guard = Some(writer);
        }
        Ok(guard)
    }

    fn commit(&self, writer: &mut IndexWriter) -> Result<()> {
        if let Err(error) = writer.commit() {
            // A failed commit leaves nothing half-visible; roll the writer back so the next
            // write starts clean.
            let _ = writer.rollback();
            return Err(self.engine_error(&error));
        }
        self.reload(true)
    }

    /// Loads the index as on disk now: always after a commit of ours (`force`), else when
    /// `meta.json` changed since the last load (another process committed).
    fn reload(&self, force: bool) -> Result<()> {
        let mut loaded = lock(&self.loaded);
        // Stamped before loading: a commit landing meanwhile is loaded by the next call.
        let now = meta_stamp(&self.path);
        if force || *loaded != now {
            self.reader
                .reload()
                .map_err(|error| self.engine_error(&error))?;
            *loaded = now;
        }
        Ok(())
    }

    /// A searcher over everything committed so far, by this process or another.
    fn searcher(&self) -> Result<tantivy::Searcher> {
        self.reload(false)?;
        Ok(self.reader.searcher())
    }

    fn doc_term(&self, doc_id: &str) -> Term {
        Term::from_field_text(self.fields.doc_id, doc_id)
    }

    fn chunk_document(
        &self,
        doc_id: &str,
        record: &DocumentRecord,
        chunk: &ChunkRecord,
    ) -> Result<TantivyDocument> {
        if chunk.vector.len() != self.dimension {
            return Err(IndexError::Dimension {
                expected: self.dimension,
                found: chunk.vector.len(),
            });
        }
        let search = chunk.search_text(record.title.as_deref());
        let mut vector = Vec::with_capacity(chunk.vector.len() * 4);
        for value in &chunk.vector {
            vector.extend_from_slice(&value.to_le_bytes());
        }
        let payload = serde_json::to_string(chunk).map_err(|error| self.engine_error(&error))?;
        let mut document = TantivyDocument::new();
        document.add_text(self.fields.kind, KIND_CHUNK);
        document.add_text(self.fields.doc_id, doc_id);
        document.add_text(self.fields.search, &search);
        document.add_text(self.fields.payload, &payload);
        document.add_bytes(self.fields.vector, &vector);
        Ok(document)
    }

    /// The live documents and per-segment data of the current searcher, cached per generation.
    fn snapshot(&self, searcher: &tantivy::Searcher) -> Result<Arc<Snapshot>> {
        let generation = searcher.generation().generation_id();
        {
            let cache = lock(&self.cache);
            if let Some((cached, snapshot)) = &cache.snapshot
                && *cached == generation
            {
                return Ok(snapshot.clone());
            }
        }
        let mut segments = Vec::with_capacity(searcher.segment_readers().len());
        for reader in searcher.segment_readers() {
            let id = reader.segment_id();
            let known = lock(&self.cache).segments.get(&id).cloned();
            let data = match known {
                Some(data) => data,
                None => Arc::new(self.load_records(reader)?),
            };
            segments.push(data);
        }
        let mut documents = BTreeMap::new();
        for (reader, data) in searcher.segment_readers().iter().zip(&segments) {
            for (doc, record) in &data.records {
                if !reader.is_deleted(*doc) {
                    documents.insert(record.doc_id.clone(), record.clone());
                }
            }
        }
        let snapshot = Arc::new(Snapshot {
            documents,
            segments,
            live: OnceLock::new(),
        });
        let mut cache = lock(&self.cache);
        cache.segments = searcher
            .segment_readers()
            .iter()
            .zip(&snapshot.segments)
            .map(|(reader, data)| (reader.segment_id(), data.clone()))
            .collect();
        cache.snapshot = Some((generation, snapshot.clone()));
        Ok(snapshot)
    }

    fn load_records(&self, reader: &SegmentReader) -> Result<SegmentData> {
        let corrupt = |message: String| IndexError::Corrupt {
            path: self.path.clone(),
            message,
        };
        let store = reader
            .get_store_reader(4)
            .map_err(|error| self.engine_error(&error))?;
        let kind_term = Term::from_field_text(self.fields.kind, KIND_DOC);
        let mut records = Vec::new();
        if let Some(mut postings) = reader
            .inverted_index(self.fields.kind)
            .map_err(|error| self.engine_error(&error))?
            .read_postings(&kind_term, IndexRecordOption::Basic)
            .map_err(|error| self.engine_error(&error))?
        {
            while postings.doc() != TERMINATED {
                let doc = postings.doc();
                let stored: TantivyDocument =
                    store.get(doc).map_err(|error| self.engine_error(&error))?;
                let payload = stored
                    .get_first(self.fields.payload)
                    .and_then(|value| value.as_str())
                    .ok_or_else(|| corrupt(format!("document record {doc} has no payload")))?;
                let record: DocumentRecord = serde_json::from_str(payload)
                    .map_err(|error| corrupt(format!("document record {doc}: {error}")))?;
                records.push((doc, Arc::new(record)));
                postings.advance();
            }
        }
        Ok(SegmentData {
            records,
            chunks: OnceLock::new(),
            graph: Mutex::new(GraphSlot::Unchecked),
        })
    }

    fn chunk_columns(
        &self,
        reader: &SegmentReader,
        data: &SegmentData,
    ) -> Result<Arc<ChunkColumns>> {
        data.chunks
            .get_or_init(|| self.load_chunk_columns(reader).map(Arc::new))
            .clone()
            .map_err(|message| IndexError::Corrupt {
                path: self.path.clone(),
                message,
            })
    }

    fn load_chunk_columns(
        &self,
        reader: &SegmentReader,
    ) -> std::result::Result<ChunkColumns, String> {
        let max_doc = reader.max_doc() as usize;
        let store = reader
            .get_store_reader(16)
            .map_err(|error| error.to_string())?;
        let mut columns = ChunkColumns {
            is_chunk: vec![false; max_doc],
            doc_ids: Vec::with_capacity(max_doc),
            pages: vec![None; max_doc],
            vectors: vec![0.0; max_doc * self.dimension],
            chunk_docs: Vec::new(),
        };
        let empty: Arc<str> = Arc::from("");
        let mut last: Arc<str> = empty.clone();
        for doc in 0..max_doc {
            let stored: TantivyDocument =
                store.get(doc as DocId).map_err(|error| error.to_string())?;
            let text = |field: Field| stored.get_first(field).and_then(|value| value.as_str());
            if text(self.fields.kind) != Some(KIND_CHUNK) {
                columns.doc_ids.push(empty.clone());
                continue;
            }
            let doc_id = text(self.fields.doc_id).unwrap_or_default();
            if &*last != doc_id {
                last = Arc::from(doc_id);
            }
            columns.doc_ids.push(last.clone());
            columns.is_chunk[doc] = true;
            columns.chunk_docs.push(doc as u32);
            #[derive(serde::Deserialize)]
            struct Page {
                page: Option<u32>,
            }
            let page: Page = serde_json::from_str(text(self.fields.payload).unwrap_or("{}"))
                .map_err(|error| format!("chunk {doc}: {error}"))?;
            columns.pages[doc] = page.page;
            let bytes = stored
                .get_first(self.fields.vector)
                .and_then(|value| value.as_bytes())
                .unwrap_or_default();
            if bytes.len() != self.dimension * 4 {
                return Err(format!(
                    "chunk {doc} has a {}-byte vector; expected {} dimensions",
                    bytes.len(),
                    self.dimension
                ));
            }
            decode_vector(
                bytes,
                &mut columns.vectors[doc * self.dimension..(doc + 1) * self.dimension],
            );
        }
        Ok(columns)
    }

    /// BM25 over the `search` field: one dense score array per segment (0: no term matched).
    fn bm25_scores(
        &self,
        searcher: &tantivy::Searcher,
        text: &str,
        params: Bm25Params,
    ) -> Result<Vec<Vec<f32>>> {
        let mut analyzer = self.analyzer.clone();
        let mut query_terms: BTreeMap<String, f32> = BTreeMap::new();
        for term in analyzer::terms(&mut analyzer, text) {
            *query_terms.entry(term).or_default() += 1.0;
        }
        let error = |error: &dyn std::fmt::Display| self.engine_error(error);
        let mut chunks = 0_f64;
        let mut tokens = 0_f64;
        let kind = Term::from_field_text(self.fields.kind, KIND_CHUNK);
        for reader in searcher.segment_readers() {
            let inverted = reader
                .inverted_index(self.fields.search)
                .map_err(|e| error(&e))?;
            tokens += inverted.total_num_tokens() as f64;
            let kinds = reader
                .inverted_index(self.fields.kind)
                .map_err(|e| error(&e))?;
            chunks += kinds.doc_freq(&kind).map_err(|e| error(&e))? as f64;
        }
        let mut out: Vec<Vec<f32>> = Vec::with_capacity(searcher.segment_readers().len());
        if chunks == 0.0 || query_terms.is_empty() {
            for reader in searcher.segment_readers() {
                out.push(vec![0.0; reader.max_doc() as usize]);
            }
            return Ok(out);
        }
        let average_length = (tokens / chunks).max(1.0) as f32;
        let mut weighted_terms = Vec::with_capacity(query_terms.len());
        for (text, count) in query_terms {
            let term = Term::from_field_text(self.fields.search, &text);
            let doc_freq = searcher.doc_freq(&term).map_err(|e| error(&e))? as f64;
            if doc_freq == 0.0 {
                continue;
            }
            let idf = (1.0 + (chunks - doc_freq + 0.5) / (doc_freq + 0.5)).ln() as f32;
            weighted_terms.push((term, count * idf));
        }
        let Bm25Params { k1, b } = params;
        for reader in searcher.segment_readers() {
            let inverted = reader
                .inverted_index(self.fields.search)
                .map_err(|e| error(&e))?;
            let norms = reader
                .get_fieldnorms_reader(self.fields.search)
                .map_err(|e| error(&e))?;
            let mut scores = vec![0.0_f32; reader.max_doc() as usize];
            for (term, weight) in &weighted_terms {
                let Some(mut postings) = inverted
                    .read_postings(term, IndexRecordOption::WithFreqs)
                    .map_err(|e| error(&e))?
                else {
                    continue;
                };
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    let frequency = postings.term_freq() as f32;
                    let length = norms.fieldnorm(doc) as f32;
                    let saturation = k1 * (1.0 - b + b * length / average_length);
                    scores[doc as usize] +=
                        weight * frequency * (k1 + 1.0) / (frequency + saturation);
                    doc = postings.advance();
                }
            }
            out.push(scores);
        }
        Ok(out)
    }

    /// The live chunks of a generation, resolved once.
    fn live_chunks(
        &self,
        searcher: &tantivy::Searcher,
        snapshot: &Snapshot,
    ) -> Result<Arc<LiveChunks>> {
        snapshot
            .live
            .get_or_init(|| {
                let mut chunks = Vec::new();
                let mut columns = Vec::with_capacity(snapshot.segments.len());
                let mut per_segment = Vec::with_capacity(snapshot.segments.len());
                let mut live_bits = Vec::with_capacity(snapshot.segments.len());
                for (ordinal, (reader, data)) in searcher
                    .segment_readers()
                    .iter()
                    .zip(&snapshot.segments)
                    .enumerate()
                {
                    let segment = self
                        .chunk_columns(reader, data)
                        .map_err(|error| error.to_string())?;
                    let mut last: Option<(&str, Option<Arc<DocumentRecord>>)> = None;
                    let before = chunks.len();
                    for doc in 0..reader.max_doc() {
                        if !segment.is_chunk[doc as usize] || reader.is_deleted(doc) {
                            continue;
                        }
                        let doc_id = &*segment.doc_ids[doc as usize];
                        // Chunks of a document are stored together: look each document up once.
                        let record = match &last {
                            Some((id, record)) if *id == doc_id => record.clone(),
                            _ => {
                                let record = snapshot.documents.get(doc_id).cloned();
                                last = Some((doc_id, record.clone()));
                                record
                            }
                        };
                        if let Some(record) = record {
                            chunks.push(LiveChunk {
                                segment: ordinal as u32,
                                doc,
                                record,
                                page: segment.pages[doc as usize],
                            });
                        }
                    }
                    live_bits.push(bitset(
                        reader.max_doc() as usize,
                        chunks[before..].iter().map(|chunk| chunk.doc),
                    ));
                    columns.push(segment);
                    per_segment.push(chunks.len() - before);
                }
                Ok(Arc::new(LiveChunks {
                    chunks,
                    columns,
                    per_segment,
                    live_bits,
                }))
            })
            .clone()
            .map_err(|message| IndexError::Corrupt {
                path: self.path.clone(),
                message,
            })
    }

    /// Ranks every selected chunk: BM25 over all of them, cosine over all of their vectors.
    fn exhaustive(
        &self,
        searcher: &tantivy::Searcher,
        request: &SearchRequest<'_>,
        query_vector: Option<&[f32]>,
        live: &LiveChunks,
        selected: &[&LiveChunk],
    ) -> Result<Vec<((u32, DocId), f32)>> {
        let bm25 = match request.mode {
            SearchMode::Vector => None,
            _ => {
                let per_segment = self.bm25_scores(searcher, request.text, request.bm25)?;
                Some(
                    selected
                        .iter()
                        .map(|chunk| per_segment[chunk.segment as usize][chunk.doc as usize])
                        .collect::<Vec<f32>>(),
                )
            }
        };
        let vector = query_vector.map(|query| {
            let dimension = self.dimension;
            selected
                .iter()
                .map(|chunk| {
                    let start = chunk.doc as usize * dimension;
                    dot(
                        &live.columns[chunk.segment as usize].vectors[start..start + dimension],
                        query,
                    )
                })
                .collect::<Vec<f32>>()
        });
        let ranked = match (bm25, vector) {
            (Some(bm25), Some(vector)) => fuse(&bm25, &vector, request.fusion, request.k),
            (Some(bm25), None) => top_k(
                bm25.into_iter()
                    .enumerate()
                    .filter(|(_, score)| *score > 0.0)
                    .collect(),
                request.k,
            ),
            (None, Some(vector)) => top_k(vector.into_iter().enumerate().collect(), request.k),
            (None, None) => Vec::new(),
        };
        Ok(ranked
            .into_iter()
            .map(|(index, score)| ((selected[index].segment, selected[index].doc), score))
            .collect())
    }

    /// Ranks with the segment graphs: the best `k` chunks by vector (graph walks for segments
    /// that have one, exact scans for the rest) or, in hybrid mode, the best [`VECTOR_DEPTH`] by
    /// vector and as many by BM25, rescored exactly on both sides and fused. Weighted fusion of the union is
    /// what the exhaustive path would compute for those candidates.
    fn approximate(
        &self,
        searcher: &tantivy::Searcher,
        request: &SearchRequest<'_>,
        query: &[f32],
        live: &LiveChunks,
        selected: &[&LiveChunk],
        graphs: &[Option<Arc<Hnsw>>],
    ) -> Result<Vec<((u32, DocId), f32)>> {
        let depth = match request.mode {
            SearchMode::Vector => request.k,
            _ => request.k.max(VECTOR_DEPTH),
        };
        let ef = depth.max(SEARCH_EF);
        // Without a filter, graph walks accept the live chunks (a bitset kept per generation),
        // so only segments scanned exactly need their chunks listed.
        let filtered = restricted(request);
        let listed: Vec<bool> = graphs
            .iter()
            .map(|graph| filtered || graph.is_none())
            .collect();
        let mut chosen: Vec<Vec<DocId>> = vec![Vec::new(); live.columns.len()];
        for chunk in selected {
            if listed[chunk.segment as usize] {
                chosen[chunk.segment as usize].push(chunk.doc);
            }
        }
        let vector_of = |segment: u32, doc: DocId| {
            let start = doc as usize * self.dimension;
            &live.columns[segment as usize].vectors[start..start + self.dimension]
        };
        let mut vector_hits: Vec<((u32, DocId), f32)> = Vec::new();
        for (segment, docs) in chosen.iter().enumerate() {
            let columns = &live.columns[segment];
            let graph = graphs[segment].as_ref().filter(|_| {
                !filtered || docs.len() * SELECTIVE_FILTER >= live.per_segment[segment]
            });
            let found = match graph {
                Some(graph) if !filtered => {
                    let bits = &live.live_bits[segment];
                    graph.search(query, &columns.vectors, depth, ef, &|doc| {
                        contains(bits, doc)
                    })
                }
                Some(graph) => {
                    let bits = bitset(columns.is_chunk.len(), docs.iter().copied());
                    graph.search(query, &columns.vectors, depth, ef, &|doc| {
                        contains(&bits, doc)
                    })
                }
                None => {
                    let scored = docs
                        .iter()
                        .map(|&doc| (doc, dot(vector_of(segment as u32, doc), query)))
                        .collect();
                    top_k(scored, depth)
                }
            };
            vector_hits.extend(
                found
                    .into_iter()
                    .map(|(doc, score)| ((segment as u32, doc), score)),
            );
        }
        let vector_top = top_k(vector_hits, depth);
        if request.mode == SearchMode::Vector {
            return Ok(top_k(vector_top, request.k));
        }
        let per_segment = self.bm25_scores(searcher, request.text, request.bm25)?;
        let lexical = selected
            .iter()
            .map(|chunk| {
                let key = (chunk.segment, chunk.doc);
                (key, per_segment[key.0 as usize][key.1 as usize])
            })
            .filter(|(_, score)| *score > 0.0)
            .collect();
        let mut candidates: Vec<(u32, DocId)> = top_k(lexical, depth)
            .into_iter()
            .chain(vector_top)
            .map(|(key, _)| key)
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let bm25: Vec<f32> = candidates
            .iter()
            .map(|&(segment, doc)| per_segment[segment as usize][doc as usize])
            .collect();
        let vector: Vec<f32> = candidates
            .iter()
            .map(|&(segment, doc)| dot(vector_of(segment, doc), query))
            .collect();
        Ok(fuse(&bm25, &vector, request.fusion, request.k)
            .into_iter()
            .map(|(index, score)| (candidates[index], score))
            .collect())
    }

    /// The graph of each segment that should have one and has it (see [`Self::segment_graph`]).
    fn segment_graphs(
        &self,
        searcher: &tantivy::Searcher,
        snapshot: &Snapshot,
        live: &LiveChunks,
    ) -> Vec<Option<Arc<Hnsw>>> {
        searcher
            .segment_readers()
            .iter()
            .zip(&snapshot.segments)
            .zip(&live.columns)
            .map(|((reader, data), columns)| {
                if self.vector_index.wants_graph(columns.chunk_docs.len()) {
                    self.segment_graph(reader, data, columns)
                } else {
                    None
                }
            })
            .collect()
    }

    fn graph_file(&self, segment: SegmentId) -> PathBuf {
        self.path
            .join(ANN_DIR)
            .join(format!("{}.hnsw", segment.uuid_string()))
    }

    fn unseal_graph(&self, bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match &self.sealer {
            None => Ok(bytes),
            Some(sealer) => sealer
                .open(&bytes)
                .map_err(|message| std::io::Error::new(std::io::ErrorKind::InvalidData, message)),
        }
    }

    /// A segment's graph from its file, if there is a usable one.
    fn load_graph(&self, reader: &SegmentReader) -> Option<Arc<Hnsw>> {
        let file = self.graph_file(reader.segment_id());
        let bytes = match std::fs::read(&file).and_then(|bytes| self.unseal_graph(bytes)) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "cannot read a vector graph; scanning exactly until it is rebuilt");
                return None;
            }
        };
        match Hnsw::from_bytes(&bytes, self.dimension, reader.max_doc()) {
            Ok(graph) => Some(Arc::new(graph)),
            Err(message) => {
                tracing::warn!(file = %file.display(), %message, "ignoring a damaged vector graph; it will be rebuilt");
                None
            }
        }
    }

    /// The graph of a segment that should have one: from memory, else from its file. While
    /// there is none, returns `None` (the segment is scanned exactly) and builds it in the
    /// background, once per process.
    fn segment_graph(
        &self,
        reader: &SegmentReader,
        data: &Arc<SegmentData>,
        columns: &Arc<ChunkColumns>,
    ) -> Option<Arc<Hnsw>> {
        let mut slot = lock(&data.graph);
        match &*slot {
            GraphSlot::Ready(graph) => return Some(graph.clone()),
            GraphSlot::Building => return None,
            GraphSlot::Missing => {}
            GraphSlot::Unchecked => {
                if let Some(graph) = self.load_graph(reader) {
                    *slot = GraphSlot::Ready(graph.clone());
                    return Some(graph);
                }
            }
        }
        *slot = GraphSlot::Building;
        drop(slot);
        let (data, columns) = (data.clone(), columns.clone());
        let file = self.graph_file(reader.segment_id());
        let dimension = self.dimension;
        let background = data.clone();
        let sealer = self.sealer.clone();
        let spawned = std::thread::Builder::new()
            .name("basalt-hnsw".into())
            .spawn(move || {
                let graph = build_graph(&columns, dimension, &file, sealer.as_deref());
                *lock(&background.graph) = GraphSlot::Ready(graph);
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a vector graph build; scanning exactly");
            *lock(&data.graph) = GraphSlot::Missing;
        }
        None
    }

    /// Removes graph files of segments that merges retired, and temporary files of builds that
    /// were interrupted.
    fn prune_graphs(&self, searcher: &tantivy::Searcher) {
        let live: std::collections::HashSet<String> = searcher
            .segment_readers()
            .iter()
            .map(|reader| format!("{}.hnsw", reader.segment_id().uuid_string()))
            .collect();
        let Ok(entries) = std::fs::read_dir(self.path.join(ANN_DIR)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn hit(
        &self,
        searcher: &tantivy::Searcher,
        snapshot: &Snapshot,
        key: (u32, DocId),
        score: f32,
    ) -> Result<Option<Hit>> {
        let corrupt = |message: String| IndexError::Corrupt {
            path: self.path.clone(),
            message,
        };
        let stored: TantivyDocument = searcher
            .doc(tantivy::DocAddress::new(key.0, key.1))
            .map_err(|error| self.engine_error(&error))?;
        let text = |field: Field| stored.get_first(field).and_then(|value| value.as_str());
        let doc_id = text(self.fields.doc_id).unwrap_or_default();
        let Some(record) = snapshot.documents.get(doc_id) else {
            return Ok(None);
        };
        let chunk: ChunkRecord =
            serde_json::from_str(text(self.fields.payload).unwrap_or_default())
                .map_err(|error| corrupt(format!("chunk of {doc_id}: {error}")))?;
        Ok(Some(Hit::new(record, chunk, score)))
    }
}

/// Whether a search sees fewer chunks than all the live ones.
fn restricted(request: &SearchRequest<'_>) -> bool {
    request.filter.is_some() || request.reader.is_some()
}

/// Builds a segment's graph and persists it (atomically: a temporary file renamed into place).
/// A graph that cannot be saved still serves this process.
fn build_graph(
    columns: &ChunkColumns,
    dimension: usize,
    file: &Path,
    sealer: Option<&dyn Sealer>,
) -> Arc<Hnsw> {
    let started = Instant::now();
    let graph = Hnsw::build(
        columns.chunk_docs.clone(),
        &columns.vectors,
        dimension,
        HnswParams::default(),
    );
    let saved = (|| -> std::io::Result<()> {
        use std::io::Write;
        let directory = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(directory)?;
        let temporary = file.with_extension(format!("tmp-{}", std::process::id()));
        let mut out = std::fs::File::create(&temporary)?;
        let bytes = graph.to_bytes();
        match sealer {
            Some(sealer) => out.write_all(&sealer.seal(&bytes))?,
            None => out.write_all(&bytes)?,
        }
        out.sync_all()?;
        std::fs::rename(&temporary, file)?;
        std::fs::File::open(directory)?.sync_all()
    })();
    match saved {
        Ok(()) => tracing::info!(
            file = %file.display(),
            nodes = graph.len(),
            seconds = started.elapsed().as_secs_f64(),
            "built vector graph"
        ),
        Err(error) => tracing::warn!(
            file = %file.display(),
            %error,
            "built a vector graph but cannot save it; it will be rebuilt next time"
        ),
    }
    Arc::new(graph)
}

/// A stored vector's little-endian bytes into `target` (as many numbers as it holds).
fn decode_vector(bytes: &[u8], target: &mut [f32]) {
    for (value, bytes) in target.iter_mut().zip(bytes.chunks_exact(4)) {
        *value = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state stays consistent between statements, so a panic elsewhere is no reason
    // to stop serving.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KnowledgeStore for TantivyStore {
    fn write(&self, documents: Vec<DocumentWrite>) -> Result<()> {
        if documents.is_empty() {
            return Ok(());
        }
        let mut prepared = Vec::with_capacity(documents.len());
        for DocumentWrite { document, chunks } in &documents {
            let mut record = TantivyDocument::new();
            record.add_text(self.fields.kind, KIND_DOC);
            record.add_text(self.fields.doc_id, &document.doc_id);
            record.add_text(self.fields.source, &document.source);
            let payload =
                serde_json::to_string(document).map_err(|error| self.engine_error(&error))?;
            record.add_text(self.fields.payload, &payload);
            let mut docs = vec![record];
            for chunk in chunks {
                docs.push(self.chunk_document(&document.doc_id, document, chunk)?);
            }
            prepared.push((document.doc_id.as_str(), docs));
        }
        let mut guard = self.writer()?;
        let writer = guard
            .as_mut()
            .ok_or_else(|| self.engine_error(&"writer missing"))?;
        for (doc_id, docs) in prepared {
            writer.delete_term(self.doc_term(doc_id));
            for doc in docs {
                if let Err(error) = writer.add_document(doc) {
                    let _ = writer.rollback();
                    return Err(self.engine_error(&error));
                }
            }
        }
        self.commit(writer)
    }

    fn delete(&self, doc_ids: &[String]) -> Result<usize> {
        let existing = doc_ids
            .iter()
            .map(|id| self.document(id).map(|found| found.is_some()))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|found| *found)
            .count();
        if existing == 0 {
            return Ok(0);
        }
        let mut guard = self.writer()?;
        let writer = guard
            .as_mut()
            .ok_or_else(|| self.engine_error(&"writer missing"))?;
        for id in doc_ids {
            writer.delete_term(self.doc_term(id));
        }
        self.commit(writer)?;
        Ok(existing)
    }

    fn document(&self, doc_id: &str) -> Result<Option<DocumentRecord>> {
        let searcher = self.searcher()?;
        let snapshot = self.snapshot(&searcher)?;
        Ok(snapshot
            .documents
            .get(doc_id)
            .map(|record| (**record).clone()))
    }

    fn documents(&self) -> Result<Vec<DocumentRecord>> {
        let searcher = self.searcher()?;
        let snapshot = self.snapshot(&searcher)?;
        Ok(snapshot
            .documents
            .values()
            .map(|record| (**record).clone())
            .collect())
    }

    fn chunks(&self, doc_id: &str) -> Result<Vec<ChunkRecord>> {
        let searcher = self.searcher()?;
        let query = tantivy::query::TermQuery::new(self.doc_term(doc_id), IndexRecordOption::Basic);
        let found = searcher
            .search(&query, &tantivy::collector::DocSetCollector)
            .map_err(|error| self.engine_error(&error))?;
        let mut chunks = Vec::new();
        for address in found {
            let stored: TantivyDocument = searcher
                .doc(address)
                .map_err(|error| self.engine_error(&error))?;
            let text = |field: Field| stored.get_first(field).and_then(|value| value.as_str());
            if text(self.fields.kind) != Some(KIND_CHUNK) {
                continue;
            }
            let corrupt = |message: String| IndexError::Corrupt {
                path: self.path.clone(),
                message: format!("chunk of {doc_id}: {message}"),
            };
            let mut chunk: ChunkRecord =
                serde_json::from_str(text(self.fields.payload).unwrap_or_default())
                    .map_err(|error| corrupt(error.to_string()))?;
            let bytes = stored
                .get_first(self.fields.vector)
                .and_then(|value| value.as_bytes())
                .unwrap_or_default();
            if bytes.len() != self.dimension * 4 {
                return Err(corrupt(format!(
                    "a {}-byte vector; expected {} dimensions",
                    bytes.len(),
                    self.dimension
                )));
            }
            chunk.vector = vec![0.0; self.dimension];
            decode_vector(bytes, &mut chunk.vector);
            chunks.push(chunk);
        }
        chunks.sort_by_key(|chunk| chunk.ordinal);
        Ok(chunks)
    }

    fn search(&self, request: &SearchRequest<'_>) -> Result<Vec<Hit>> {
        let query_vector = request.query_vector_for(self.dimension)?;
        if request.k == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.searcher()?;
        let snapshot = self.snapshot(&searcher)?;
        let live = self.live_chunks(&searcher, &snapshot)?;
        // Candidates: live chunks the reader may read that pass the filter (one verdict per
        // document and page).
        let selected: Vec<&LiveChunk> = if restricted(request) {
            let mut verdicts: HashMap<(*const DocumentRecord, Option<u32>), bool> = HashMap::new();
            live.chunks
                .iter()
                .filter(|chunk| {
                    *verdicts
                        .entry((Arc::as_ptr(&chunk.record), chunk.page))
                        .or_insert_with(|| {
                            request
                                .reader
                                .is_none_or(|reader| chunk.record.readable_by(reader))
                                && request
                                    .filter
                                    .is_none_or(|filter| filter.matches(&chunk.record, chunk.page))
                        })
                })
                .collect()
        } else {
            live.chunks.iter().collect()
        };
        let graphs = match query_vector {
            Some(_) if !request.exact => self.segment_graphs(&searcher, &snapshot, &live),
            _ => Vec::new(),
        };
        let ranked = match query_vector {
            Some(query) if graphs.iter().any(Option::is_some) => {
                self.approximate(&searcher, request, query, &live, &selected, &graphs)?
            }
            _ => self.exhaustive(&searcher, request, query_vector, &live, &selected)?,
        };
        let mut hits = Vec::with_capacity(ranked.len());
        for (key, score) in ranked {
            if let Some(hit) = self.hit(&searcher, &snapshot, key, score)? {
                hits.push(hit);
            }
        }
        Ok(hits)
    }

    fn finish_writes(&self) -> Result<()> {
        let writer = lock(&self.writer).take();
        if let Some(writer) = writer {
            writer
                .wait_merging_threads()
                .map_err(|error| self.engine_error(&error))?;
            self.reader
                .reload()
                .map_err(|error| self.engine_error(&error))?;
        }
        let searcher = self.searcher()?;
        let snapshot = self.snapshot(&searcher)?;
        for (reader, data) in searcher.segment_readers().iter().zip(&snapshot.segments) {
            let columns = self.chunk_columns(reader, data)?;
            if !self.vector_index.wants_graph(columns.chunk_docs.len()) {
                continue;
            }
            {
                let mut slot = lock(&data.graph);
                match &*slot {
                    GraphSlot::Ready(_) => continue,
                    GraphSlot::Unchecked => {
                        if let Some(graph) = self.load_graph(reader) {
                            *slot = GraphSlot::Ready(graph);
                            continue;
                        }
                    }
                    GraphSlot::Missing | GraphSlot::Building => {}
                }
                *slot = GraphSlot::Building;
            }
            let graph = build_graph(
                &columns,
                self.dimension,
                &self.graph_file(reader.segment_id()),
                self.sealer.as_deref(),
            );
            *lock(&data.graph) = GraphSlot::Ready(graph);
        }
        self.prune_graphs(&searcher);
        Ok(())
    }

    fn size_bytes(&self) -> Result<u64> {
        fn walk(dir: &Path) -> std::io::Result<u64> {
            let mut total = 0;
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                total += if meta.is_dir() {
                    walk(&entry.path())?
                } else {
                    meta.len()
                };
            }
            Ok(total)
        }
        walk(&self.path).map_err(|error| self.engine_error(&error))
    }

    fn stats(&self) -> Result<IndexStats> {
        let searcher = self.searcher()?;
        let snapshot = self.snapshot(&searcher)?;
        Ok(IndexStats {
            documents: snapshot.documents.len() as u64,
            chunks: snapshot
                .documents
                .values()
                .map(|record| u64::from(record.chunk_count))
                .sum(),
        })
    }
}
