//! Moving a knowledge base to another embedding model without ingesting its files again: every
//! chunk's text is read from the index and embedded with the new model into a second index
//! beside the first (`index-N`), with the same documents, chunks, metadata and readers. The
//! settings then switch to it in one atomic write, so a crash at any moment leaves the
//! knowledge base on the old model or on the new one, never on half of each; searches keep
//! using the old index until the switch.

use std::time::Instant;

use basalt_index::DocumentWrite;
use basalt_model::Embedder;
use serde::Serialize;

use crate::error::{KbError, Result};
use crate::knowledge_base::{DataDir, EmbeddingSettings, KbSettings};

/// Chunks embedded per call to the model.
const BATCH_CHUNKS: usize = 64;

/// What a re-embedding did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ReembedReport {
    pub knowledge_base: String,
    /// The embedding model before and after.
    pub from_model: String,
    pub to_model: String,
    /// The vectors' dimension before and after.
    pub from_dimension: usize,
    pub to_dimension: usize,
    pub documents: usize,
    pub chunks: usize,
    pub elapsed_seconds: f64,
}

/// How far a re-embedding is: chunks done of all.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReembedProgress {
    pub chunks_done: usize,
    pub chunks_total: usize,
}

/// The directory of a knowledge base's index for embedding generation `generation`.
pub(crate) fn index_dir_name(generation: u32) -> String {
    if generation == 0 {
        "index".to_string()
    } else {
        format!("index-{generation}")
    }
}

impl DataDir {
    /// Re-embeds knowledge base `name` with `embedder`, which its settings will then name as
    /// `model` (a catalogued name, a registered remote model, or a path). Nothing may be
    /// ingested into the knowledge base meanwhile: what was written during the run is detected
    /// and the run fails, leaving the old index in use.
    pub fn reembed(
        &self,
        name: &str,
        model: &str,
        embedder: &dyn Embedder,
        observe: &mut dyn FnMut(ReembedProgress),
    ) -> Result<ReembedReport> {
        let started = Instant::now();
        let current = self.settings(name)?;
        let info = embedder.info();
        if info.dimension == 0 {
            return Err(KbError::BadSettingsValue {
                message: format!("the embedding model {model} reports no dimension"),
            });
        }
        if info.max_tokens < current.chunking.max_tokens {
            return Err(KbError::BadSettingsValue {
                message: format!(
                    "the embedding model {model} takes at most {} tokens, but the chunks of \
                     {name} are up to {}; create a new knowledge base with smaller chunks \
                     (`kb create --chunk-tokens`) and ingest into it",
                    info.max_tokens, current.chunking.max_tokens
                ),
            });
        }
        let old = self.open_settings(current.clone())?;
        let mut next: KbSettings = current.clone();
        next.embedding = EmbeddingSettings {
            model: model.to_string(),
            dimension: info.dimension,
            max_tokens: info.max_tokens,
            generation: current.embedding.generation + 1,
        };
        // What a run that crashed before its switch left behind.
        self.remove_index(&next)?;
        let built = self.fill(&old, &next, embedder, observe);
        let report = match built {
            Ok(report) => report,
            Err(error) => {
                let _ = self.remove_index(&next);
                return Err(error);
            }
        };
        // Written meanwhile (an ingestion the caller did not hold off): the new index misses it.
        let before: Vec<(String, String)> = report.1;
        let now: Vec<(String, String)> = old
            .documents()?
            .into_iter()
            .map(|record| (record.doc_id, record.content_hash))
            .collect();
        drop(old);
        if before != now {
            let _ = self.remove_index(&next);
            return Err(KbError::BadSettingsValue {
                message: format!(
                    "documents of {name} changed while it was re-embedded; it stays on {}; run \
                     the re-embedding again when no ingestion is running",
                    current.embedding.model
                ),
            });
        }
        self.switch(&next)?;
        if let Err(error) = self.remove_index(&current) {
            tracing::warn!(kb = name, %error, "cannot remove the old index");
        }
        Ok(ReembedReport {
            knowledge_base: name.to_string(),
            from_model: current.embedding.model,
            to_model: next.embedding.model,
            from_dimension: current.embedding.dimension,
            to_dimension: next.embedding.dimension,
            documents: before.len(),
            chunks: report.0,
            elapsed_seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Copies every document of `old` into the index of `next`, its chunks embedded with
    /// `embedder`; returns the chunks written and the documents copied (id, content hash).
    #[allow(clippy::type_complexity)]
    fn fill(
        &self,
        old: &crate::KnowledgeBase,
        next: &KbSettings,
        embedder: &dyn Embedder,
        observe: &mut dyn FnMut(ReembedProgress),
    ) -> Result<(usize, Vec<(String, String)>)> {
        let fresh = self.open_settings(next.clone())?;
        let documents = old.documents()?;
        let mut progress = ReembedProgress {
            chunks_done: 0,
            chunks_total: documents.iter().map(|doc| doc.chunk_count as usize).sum(),
        };
        observe(progress);
        let mut copied = Vec::with_capacity(documents.len());
        let mut pending: Vec<DocumentWrite> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        for record in documents {
            let chunks = old.chunks(&record.doc_id)?;
            let (prefix, _) = crate::pipeline::title_prefix(
                embedder,
                record.title.as_deref(),
                next.chunking.max_tokens,
            );
            texts.extend(chunks.iter().map(|chunk| match prefix {
                Some(title) => format!("{title}\n{}", chunk.text),
                None => chunk.text.clone(),
            }));
            copied.push((record.doc_id.clone(), record.content_hash.clone()));
            pending.push(DocumentWrite {
                document: record,
                chunks,
            });
            if texts.len() >= BATCH_CHUNKS {
                progress.chunks_done += write(&fresh, embedder, &mut pending, &mut texts)?;
                observe(progress);
            }
        }
        progress.chunks_done += write(&fresh, embedder, &mut pending, &mut texts)?;
        observe(progress);
        fresh.finish_writes()?;
        Ok((progress.chunks_done, copied))
    }

    /// Makes `settings` (naming the new index) the knowledge base's, atomically.
    fn switch(&self, settings: &KbSettings) -> Result<()> {
        self.store_settings(settings)
    }
}

/// Embeds the pending documents' chunks and writes them in one commit; returns the chunks.
fn write(
    kb: &crate::KnowledgeBase,
    embedder: &dyn Embedder,
    pending: &mut Vec<DocumentWrite>,
    texts: &mut Vec<String>,
) -> Result<usize> {
    if pending.is_empty() {
        return Ok(0);
    }
    let vectors = if texts.is_empty() {
        Vec::new()
    } else {
        embedder.embed_batch(texts)?
    };
    let expected = embedder.info().dimension;
    if vectors.len() != texts.len() {
        return Err(KbError::BadSettingsValue {
            message: format!(
                "the embedding model returned {} vectors for {} texts",
                vectors.len(),
                texts.len()
            ),
        });
    }
    if let Some(wrong) = vectors.iter().find(|vector| vector.len() != expected) {
        return Err(KbError::ModelMismatch {
            expected,
            found: wrong.len(),
        });
    }
    let mut vectors = vectors.into_iter();
    for document in pending.iter_mut() {
        for chunk in &mut document.chunks {
            chunk.vector = vectors.next().unwrap_or_default();
        }
    }
    let chunks = texts.len();
    kb.write(std::mem::take(pending))?;
    texts.clear();
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_index::{ChunkRecord, DocumentRecord, SearchMode};

    use basalt_model::testing::Letters;

    fn document(id: &str, texts: &[&str], embedder: &Letters) -> DocumentWrite {
        DocumentWrite {
            document: DocumentRecord {
                doc_id: id.into(),
                source: format!("{id}.md"),
                title: Some(id.to_uppercase()),
                format: "markdown".into(),
                content_hash: format!("sha256:{id}"),
                ingested_at: "2026-12-07T00:00:00Z".into(),
                text_chars: 10,
                pages: None,
                chunk_count: texts.len() as u32,
                tags: vec!["t".into()],
                metadata: [("year".to_string(), serde_json::json!(2024))].into(),
                readers: vec!["group:staff".into()],
            },
            chunks: texts
                .iter()
                .enumerate()
                .map(|(ordinal, text)| ChunkRecord {
                    ordinal: ordinal as u32,
                    text: (*text).into(),
                    heading_path: vec!["Intro".into()],
                    page: None,
                    char_start: 0,
                    char_end: text.len() as u64,
                    vector: embedder.vector(text),
                })
                .collect(),
        }
    }

    fn top(kb: &crate::KnowledgeBase, embedder: &Letters, query: &str) -> String {
        let options = SearchOptions {
            mode: Some(SearchMode::Vector),
            k: 1,
            ..SearchOptions::default()
        };
        kb.search(Some(embedder), query, &options)
            .expect("works")
            .hits[0]
            .chunk_id
            .clone()
    }

    use crate::SearchOptions;

    #[test]
    fn a_knowledge_base_moves_to_another_model_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("works");
        let data = DataDir::new(dir.path());
        let small = Letters::new(4);
        let mut settings = KbSettings::new("handbook");
        settings.embedding.model = small.info().model_name.clone();
        settings.embedding.dimension = 4;
        data.create(&settings).expect("works");
        let kb = data.open("handbook").expect("works");
        kb.write(vec![
            document(
                "leave",
                &[
                    "Parental leave is sixteen weeks.",
                    "Sabbatical after five years.",
                ],
                &small,
            ),
            document("pay", &["Salaries are paid monthly."], &small),
        ])
        .expect("works");
        drop(kb);

        // A model whose vectors do not have the dimension it claims: nothing changes.
        let wrong = Letters::misreporting(16, 15);
        let error = data
            .reembed("handbook", "wrong", &wrong, &mut |_| {})
            .expect_err("fails");
        assert!(error.to_string().contains("16"), "{error}");
        let kept = data.settings("handbook").expect("works");
        assert_eq!(
            (kept.embedding.generation, kept.embedding.dimension),
            (0, 4)
        );
        assert!(!data.kb_path("handbook").join("index-1").exists());
        assert_eq!(
            top(
                &data.open("handbook").expect("works"),
                &small,
                "salaries paid monthly"
            ),
            "pay#0"
        );

        let large = Letters::new(26);
        let mut seen = Vec::new();
        let report = data
            .reembed("handbook", "letters-26", &large, &mut |progress| {
                seen.push(progress.chunks_done);
            })
            .expect("works");
        assert_eq!((report.documents, report.chunks), (2, 3));
        assert_eq!((report.from_dimension, report.to_dimension), (4, 26));
        assert_eq!(seen.last(), Some(&3));
        let moved = data.settings("handbook").expect("works");
        assert_eq!(moved.embedding.model, "letters-26");
        assert_eq!(
            (moved.embedding.generation, moved.embedding.dimension),
            (1, 26)
        );
        let kb = data.open("handbook").expect("works");
        assert_eq!(top(&kb, &large, "sabbatical after five years"), "leave#1");
        // Everything but the vectors is as it was.
        let record = kb.document("leave").expect("works").expect("works");
        assert_eq!(record.readers, ["group:staff"]);
        assert_eq!(record.metadata["year"], 2024);
        let chunks = kb.chunks("leave").expect("works");
        assert_eq!(chunks[0].text, "Parental leave is sixteen weeks.");
        assert_eq!(chunks[0].heading_path, ["Intro"]);
        // The old model's queries no longer fit; the old index is gone.
        assert!(
            kb.search(
                Some(&small),
                "leave",
                &SearchOptions {
                    mode: Some(SearchMode::Vector),
                    k: 1,
                    ..SearchOptions::default()
                }
            )
            .is_err()
        );
        let kb_dir = data.kb_path("handbook");
        assert!(!kb_dir.join("index").exists());
        assert!(kb_dir.join("index-1").is_dir());
    }
}
