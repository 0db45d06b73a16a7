//! Moving a knowledge base from a data directory's embedded index into PostgreSQL (`basalt
//! migrate`): its settings and wrapped data key into the database's catalog, every document
//! with its chunks and vectors as they are (nothing is embedded again; an encrypted one is
//! sealed again with the same data key), and then the same searches run on both, so the copy
//! is shown to answer as the original does.
//!
//! A second run resumes or refreshes a copy: documents already there unchanged are skipped,
//! changed ones replaced, and ones no longer in the data directory removed.

use basalt_index::{DocumentWrite, SearchMode};
use serde::Serialize;

use crate::error::{KbError, Result};
use crate::knowledge_base::{Backend, DataDir, KbSettings, KnowledgeBase};
use crate::search::SearchOptions;

/// How many of each mode's results the comparison looks at.
pub const COMPARED_HITS: usize = 10;
/// How many searches the comparison runs per mode (one per sampled chunk).
pub const COMPARED_QUERIES: usize = 20;
/// The least share of the original's top results a copy's must hold, per mode, on average.
/// Both backends score with the same analyzer, BM25 formula and fusion, and the comparison
/// scans vectors exactly, so only ties ordered differently may differ.
pub const AGREEMENT: f64 = 0.95;
/// Chunks written to the database per commit.
const BATCH_CHUNKS: usize = 512;

/// What copying one knowledge base did.
#[derive(Debug, Clone, Serialize)]
pub struct KbCopy {
    pub tenant: String,
    pub name: String,
    pub encrypted: bool,
    /// Documents in the data directory's knowledge base.
    pub documents: usize,
    pub chunks: u64,
    /// Documents written to the database by this run.
    pub copied: usize,
    /// Documents an earlier run had copied, unchanged since.
    pub unchanged: usize,
    /// Documents an earlier run had copied that the data directory no longer has.
    pub removed: usize,
    pub comparison: Comparison,
}

/// The same searches on the original and on the copy.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub queries: usize,
    pub k: usize,
    pub modes: Vec<ModeAgreement>,
}

/// How one search mode's results agree.
#[derive(Debug, Clone, Serialize)]
pub struct ModeAgreement {
    pub mode: SearchMode,
    /// The mean share of the original's top `k` chunks that are in the copy's top `k`.
    pub overlap: f64,
    /// Searches whose best chunk is the same on both.
    pub same_first: usize,
}

impl Comparison {
    /// The modes whose results agree less than [`AGREEMENT`].
    pub fn disagreeing(&self) -> Vec<&ModeAgreement> {
        self.modes
            .iter()
            .filter(|mode| mode.overlap < AGREEMENT)
            .collect()
    }
}

/// Copies the knowledge base `name` of `from` (an embedded data directory) into `to` (the same
/// tenant, with a database), then compares searches on both; `observe` hears (documents done,
/// documents in all) as it goes. The copy is an error when its counts or searches differ.
pub fn copy_kb(
    from: &DataDir,
    to: &DataDir,
    name: &str,
    observe: &mut dyn FnMut(usize, usize),
) -> Result<KbCopy> {
    let database = to.database().ok_or_else(|| KbError::BadSettingsValue {
        message: "the copy's target needs a database (--to postgres://…)".into(),
    })?;
    if from.has_database() || from.tenant() != to.tenant() {
        return Err(KbError::BadSettingsValue {
            message: "a knowledge base is copied from a data directory to the same tenant in a \
                      database"
                .into(),
        });
    }
    let settings = from.settings(name)?;
    if settings.backend != Backend::Embedded {
        return Err(KbError::BadSettingsValue {
            message: format!(
                "knowledge base {name:?} keeps its index in PostgreSQL already (made by an \
                 earlier Basalt); create it again with --database and ingest its documents"
            ),
        });
    }
    let envelope = crate::encryption::read_key(&from.kb_path(name))?;
    let tenant = to.tenant();
    match database.kb(tenant, name)? {
        None => {
            let mut copied = settings.clone();
            copied.backend = Backend::Postgres;
            copied.store_id = Some(basalt_core::id::new_id("", 8));
            database.insert_kb(tenant, &copied, envelope.as_ref())?;
        }
        Some((existing, key)) => {
            // An earlier run's copy, resumed: the same knowledge base, same key.
            let same = existing.created_at == settings.created_at
                && existing.backend == Backend::Postgres
                && key == envelope;
            if !same {
                return Err(KbError::BadSettingsValue {
                    message: format!(
                        "the database already has a knowledge base {name:?} in tenant \
                         {tenant:?} that is not this one (created {}): delete it there \
                         (`basalt --database … kb delete {name}`) or migrate into another \
                         database",
                        existing.created_at
                    ),
                });
            }
            // Search- and answer-time settings may have changed since.
            to.store_settings(&KbSettings {
                backend: existing.backend,
                store_id: existing.store_id,
                ..settings.clone()
            })?;
        }
    }
    let source = from.open(name)?;
    let target = to.open(name)?;
    let (copied, unchanged, removed, documents) = copy_documents(&source, &target, observe)?;
    target.finish_writes()?;
    let (before, after) = (source.stats()?, target.stats()?);
    if (before.documents, before.chunks) != (after.documents, after.chunks) {
        return Err(KbError::BadSettingsValue {
            message: format!(
                "the copy of {name:?} holds {} documents and {} chunks where the data directory \
                 holds {} and {}; run `basalt migrate` again",
                after.documents, after.chunks, before.documents, before.chunks
            ),
        });
    }
    let comparison = compare_searches(&source, &target)?;
    if let Some(mode) = comparison.disagreeing().first() {
        return Err(KbError::BadSettingsValue {
            message: format!(
                "the copy of {name:?} answers {} searches differently: {:.3} of the original's \
                 top {} on average where at least {AGREEMENT} was expected",
                mode.mode.as_str(),
                mode.overlap,
                comparison.k
            ),
        });
    }
    Ok(KbCopy {
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        encrypted: envelope.is_some(),
        documents,
        chunks: before.chunks,
        copied,
        unchanged,
        removed,
        comparison,
    })
}

/// Writes every document of `source` that `target` lacks or holds in another version, in
/// batches; removes what `target` holds that `source` does not. Returns (copied, unchanged,
/// removed, documents).
fn copy_documents(
    source: &KnowledgeBase,
    target: &KnowledgeBase,
    observe: &mut dyn FnMut(usize, usize),
) -> Result<(usize, usize, usize, usize)> {
    let records = source.documents()?;
    let mut there: std::collections::HashMap<String, basalt_index::DocumentRecord> = target
        .documents()?
        .into_iter()
        .map(|record| (record.doc_id.clone(), record))
        .collect();
    let (mut copied, mut unchanged) = (0, 0);
    let mut batch: Vec<DocumentWrite> = Vec::new();
    let mut batch_chunks = 0;
    for (done, record) in records.iter().enumerate() {
        if there.remove(&record.doc_id).as_ref() == Some(record) {
            unchanged += 1;
        } else {
            let chunks = source.chunks(&record.doc_id)?;
            batch_chunks += chunks.len();
            batch.push(DocumentWrite {
                document: record.clone(),
                chunks,
            });
            copied += 1;
        }
        if batch_chunks >= BATCH_CHUNKS || done + 1 == records.len() {
            target.write(std::mem::take(&mut batch))?;
            batch_chunks = 0;
            observe(done + 1, records.len());
        }
    }
    let stale: Vec<String> = there.into_keys().collect();
    let removed = if stale.is_empty() {
        0
    } else {
        target.delete(&stale)?
    };
    Ok((copied, unchanged, removed, records.len()))
}

/// Runs the same searches on `original` and `copy`: for [`COMPARED_QUERIES`] chunks spread
/// over the documents (or all, when there are fewer), the chunk's first words (BM25), its vector (vector search,
/// every vector scanned) and both (hybrid), and measures how the top [`COMPARED_HITS`] agree.
/// No model is needed: the queries come from the index itself.
pub fn compare_searches(original: &KnowledgeBase, copy: &KnowledgeBase) -> Result<Comparison> {
    let records = original.documents()?;
    let step = records.len().div_ceil(COMPARED_QUERIES).max(1);
    let sampled = records.len().div_ceil(step);
    // Chunks spread over the documents: several of each when there are few documents.
    let per_document = COMPARED_QUERIES.div_ceil(sampled.max(1));
    let mut queries = Vec::new();
    for record in records.iter().step_by(step) {
        let chunks = original.chunks(&record.doc_id)?;
        let stride = (chunks.len() / per_document).max(1);
        for chunk in chunks.into_iter().step_by(stride).take(per_document) {
            if queries.len() < COMPARED_QUERIES {
                let words: Vec<&str> = chunk.text.split_whitespace().take(8).collect();
                queries.push((words.join(" "), chunk.vector));
            }
        }
    }
    let mut modes = Vec::new();
    for mode in SearchMode::ALL {
        let options = SearchOptions {
            mode: Some(mode),
            k: COMPARED_HITS,
            exact: true,
            ..SearchOptions::default()
        };
        let (mut overlap, mut same_first) = (0.0, 0);
        for (text, vector) in &queries {
            let ids = |kb: &KnowledgeBase| -> Result<Vec<String>> {
                Ok(kb
                    .search_vector(text, vector, &options)?
                    .into_iter()
                    .map(|hit| hit.chunk_id)
                    .collect())
            };
            let (expected, found) = (ids(original)?, ids(copy)?);
            if expected.is_empty() {
                overlap += if found.is_empty() { 1.0 } else { 0.0 };
                same_first += usize::from(found.is_empty());
                continue;
            }
            let shared = expected.iter().filter(|id| found.contains(id)).count();
            overlap += shared as f64 / expected.len() as f64;
            same_first += usize::from(expected.first() == found.first());
        }
        modes.push(ModeAgreement {
            mode,
            overlap: if queries.is_empty() {
                1.0
            } else {
                overlap / queries.len() as f64
            },
            same_first,
        });
    }
    Ok(Comparison {
        queries: queries.len(),
        k: COMPARED_HITS,
        modes,
    })
}
