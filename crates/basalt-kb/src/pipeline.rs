//! Ingestion: files and directories → documents → chunks → vectors → one atomic index commit
//! per batch.
//!
//! A document is *acknowledged* once the commit holding it returns; only acknowledged documents
//! are counted as added or replaced, and a crash before that leaves the previous version (or
//! nothing) visible. Re-ingesting unchanged content (same hash, tags, metadata and readers) is
//! a no-op; changed content replaces the old chunks in the same commit that adds the new ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use basalt_index::{ChunkRecord, DocumentRecord, DocumentWrite, Sealer};
use basalt_ingest::{
    ChunkerOptions, ExtractedRecord, Format, TokenCounter, chunk_sections, extract,
};
use basalt_model::Embedder;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{KbError, Result};
use crate::knowledge_base::KnowledgeBase;
use basalt_core::clock::now_rfc3339;
use basalt_core::hex::sha256 as sha256_hex;

/// Files larger than this are refused unless the caller raises the limit.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 100 << 20;

/// Suffix of the optional sidecar next to a file: `report.pdf.meta.json`.
pub const SIDECAR_SUFFIX: &str = ".meta.json";

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Tags given to every document of this run (added to the sidecar's).
    pub tags: Vec<String>,
    /// Metadata given to every document of this run (the sidecar's wins on conflicts).
    pub metadata: BTreeMap<String, Value>,
    pub max_file_bytes: u64,
    /// Chunks embedded and committed together; smaller batches acknowledge sooner.
    pub batch_chunks: usize,
    /// Source names for given files, used instead of their paths (an upload keeps the name the
    /// client gave it, not the path of its spooled copy). Document ids derive from the source.
    pub sources: BTreeMap<PathBuf, String>,
    /// Who may read the documents of this run (`principal:NAME`, `group:NAME`); empty: everyone
    /// who may read the knowledge base. A directory in `access_map` or a sidecar's `readers`
    /// overrides it.
    pub readers: Vec<String>,
    /// Readers by directory: a file takes the readers of the deepest directory holding it.
    pub access_map: AccessMap,
    /// When set, a document this reader may not read is never replaced: the file fails with
    /// a message instead (an upload cannot overwrite a private document of someone else).
    pub replacer: Option<basalt_index::Reader>,
    /// The files were sealed with the knowledge base's data key (an encrypted knowledge base's
    /// spooled uploads); they are opened with it when read.
    pub sealed_files: bool,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// Readers by directory (`basalt ingest --access-map FILE`): a JSON object from directory paths
/// (relative to the file's own directory, or absolute) to reader lists, such as
/// `{"hr": ["group:hr"], "hr/public": []}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessMap {
    /// Canonical directories and their readers, deepest first.
    rules: Vec<(PathBuf, Vec<String>)>,
}

impl AccessMap {
    /// Reads a map file; every directory must exist and every reader be valid.
    pub fn load(path: &Path) -> Result<AccessMap> {
        Self::load_under(path, path.parent().unwrap_or(Path::new(".")))
    }

    /// Reads a map file whose relative directories are below `base` (an S3 prefix's copy).
    pub fn load_under(path: &Path, base: &Path) -> Result<AccessMap> {
        let bad = |message: String| KbError::BadAccessMap {
            path: path.to_owned(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|error| bad(error.to_string()))?;
        let entries: BTreeMap<String, Vec<String>> = serde_json::from_slice(&bytes).map_err(|error| {
            bad(format!(
                "{error} (expected an object of directory → [\"principal:NAME\" | \"group:NAME\", …])"
            ))
        })?;
        let mut rules = Vec::new();
        for (directory, readers) in entries {
            let full = base.join(&directory);
            let canonical = std::fs::canonicalize(&full)
                .map_err(|error| bad(format!("directory {directory:?}: {error}")))?;
            for reader in &readers {
                basalt_index::validate_reader(reader).map_err(bad)?;
            }
            rules.push((canonical, readers));
        }
        rules.sort_by_key(|(directory, _)| std::cmp::Reverse(directory.components().count()));
        Ok(AccessMap { rules })
    }

    /// The readers of the deepest mapped directory holding `file`.
    fn readers_of(&self, file: &Path) -> Option<&[String]> {
        if self.rules.is_empty() {
            return None;
        }
        let canonical = std::fs::canonicalize(file).ok()?;
        self.rules
            .iter()
            .find(|(directory, _)| canonical.starts_with(directory))
            .map(|(_, readers)| readers.as_slice())
    }
}

impl IngestOptions {
    /// The name a file is known by: its given source name, else its canonical path.
    fn source_of(&self, path: &Path) -> String {
        match self.sources.get(path) {
            Some(name) => name.clone(),
            None => std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.to_owned())
                .display()
                .to_string(),
        }
    }
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            batch_chunks: 128,
            sources: BTreeMap::new(),
            readers: Vec::new(),
            access_map: AccessMap::default(),
            replacer: None,
            sealed_files: false,
        }
    }
}

/// What a sidecar file may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    metadata: BTreeMap<String, Value>,
    /// Replaces the readers given on the command line or by the access map.
    #[serde(default)]
    readers: Option<Vec<String>>,
}

/// Where ingestion stands, reported after every document and commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestProgress {
    pub files_total: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub bytes_done: u64,
    pub documents_done: u64,
    pub chunks_done: u64,
    /// Every document is committed; merging segments and building vector graphs.
    pub finishing: bool,
}

/// Time spent per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StageTimings {
    pub parse_seconds: f64,
    pub chunk_seconds: f64,
    pub embed_seconds: f64,
    pub index_seconds: f64,
    /// Waiting for segment merges and building HNSW graphs, once at the end.
    pub finish_seconds: f64,
}

/// A file or record that could not be ingested, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Failure {
    pub path: String,
    pub reason: String,
}

/// The outcome of one ingestion run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IngestReport {
    pub added: u64,
    pub replaced: u64,
    pub unchanged: u64,
    /// Documents removed because their source is gone (a sync from an S3 prefix).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub removed: u64,
    pub failed: Vec<Failure>,
    /// Files of a type Basalt does not read (not an error).
    pub skipped: Vec<Failure>,
    pub chunks: u64,
    pub files: u64,
    pub source_bytes: u64,
    pub text_bytes: u64,
    pub timings: StageTimings,
    pub elapsed_seconds: f64,
}

/// A file name without the scheme of a source like `upload:policy.pdf` (the server's uploads):
/// the title of that document is `policy`, not `upload:policy`.
fn without_scheme(stem: &str) -> &str {
    match stem.split_once(':') {
        Some((scheme, rest))
            if scheme.len() > 1 && scheme.chars().all(|c| c.is_ascii_alphabetic()) =>
        {
            rest
        }
        _ => stem,
    }
}

/// Counts tokens with the embedding model's tokenizer.
struct ModelTokens<'a>(&'a dyn Embedder);

impl TokenCounter for ModelTokens<'_> {
    fn count_tokens(&self, text: &str) -> usize {
        // The tokenizer does not fail on valid UTF-8; if it ever does, over-estimate so the
        // chunk stays inside the model's limit.
        self.0.count_tokens(text).unwrap_or(text.len() + 2)
    }
}

struct Pending {
    write: DocumentWrite,
    embed_texts: Vec<String>,
    replaces: bool,
}

/// Runs one ingestion into `kb`, reporting progress through `observe`.
pub fn ingest(
    kb: &KnowledgeBase,
    embedder: &dyn Embedder,
    paths: &[PathBuf],
    options: &IngestOptions,
    observe: &mut dyn FnMut(&IngestProgress),
) -> Result<IngestReport> {
    let info = embedder.info();
    if info.dimension != kb.settings.embedding.dimension {
        return Err(KbError::ModelMismatch {
            expected: kb.settings.embedding.dimension,
            found: info.dimension,
        });
    }
    let started = Instant::now();
    let (mut failed, mut skipped) = (Vec::new(), Vec::new());
    let files = collect_files(paths, &mut failed, &mut skipped);
    let mut run = Run {
        kb,
        embedder,
        options,
        observe,
        report: IngestReport {
            failed,
            skipped,
            ..IngestReport::default()
        },
        progress: IngestProgress {
            files_total: files.len() as u64,
            bytes_total: files.iter().map(|(_, size)| size).sum(),
            ..IngestProgress::default()
        },
        pending: Vec::new(),
        pending_chunks: 0,
        fatal: None,
    };
    (run.observe)(&run.progress);
    for (path, size) in files {
        let before = run.progress.bytes_done;
        if let Err(reason) = run.file(&path, size) {
            if let Some(error) = run.fatal.take() {
                return Err(error);
            }
            let path = match options.sources.get(&path) {
                Some(name) => name.clone(),
                None => path.display().to_string(),
            };
            run.report.failed.push(Failure { path, reason });
        }
        run.progress.files_done += 1;
        run.progress.bytes_done = before + size;
        run.notify();
    }
    run.flush()?;
    run.progress.finishing = true;
    run.notify();
    let finishing = Instant::now();
    kb.store.finish_writes()?;
    run.report.timings.finish_seconds = finishing.elapsed().as_secs_f64();
    let mut report = run.report;
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The state of one ingestion run.
struct Run<'a> {
    kb: &'a KnowledgeBase,
    embedder: &'a dyn Embedder,
    options: &'a IngestOptions,
    observe: &'a mut dyn FnMut(&IngestProgress),
    report: IngestReport,
    progress: IngestProgress,
    /// Documents chunked but not yet embedded and committed.
    pending: Vec<Pending>,
    pending_chunks: usize,
    /// A commit failed: the run stops (the index itself stays consistent).
    fatal: Option<KbError>,
}

impl Run<'_> {
    fn notify(&mut self) {
        self.progress.documents_done =
            self.report.added + self.report.replaced + self.report.unchanged;
        (self.observe)(&self.progress);
    }

    /// Embeds and commits what is pending; the documents are acknowledged when this returns.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending);
        self.pending_chunks = 0;
        let texts: Vec<String> = pending
            .iter()
            .flat_map(|doc| doc.embed_texts.iter().cloned())
            .collect();
        let started = Instant::now();
        let vectors = if texts.is_empty() {
            Vec::new()
        } else {
            self.embedder.embed_batch(&texts)?
        };
        self.report.timings.embed_seconds += started.elapsed().as_secs_f64();
        let mut vectors = vectors.into_iter();
        for doc in &mut pending {
            for chunk in &mut doc.write.chunks {
                chunk.vector = vectors.next().unwrap_or_default();
            }
        }
        let started = Instant::now();
        let (replaced, chunks) = pending.iter().fold((0, 0), |(replaced, chunks), doc| {
            (
                replaced + u64::from(doc.replaces),
                chunks + doc.write.chunks.len() as u64,
            )
        });
        let count = pending.len() as u64;
        self.kb
            .store
            .write(pending.into_iter().map(|doc| doc.write).collect())?;
        self.report.timings.index_seconds += started.elapsed().as_secs_f64();
        self.report.replaced += replaced;
        self.report.added += count - replaced;
        self.report.chunks += chunks;
        self.progress.chunks_done += chunks;
        self.notify();
        Ok(())
    }

    /// Reads, extracts and chunks one file, committing whenever a batch fills up. A returned
    /// error is this file's failure, unless `fatal` is set (a commit failed).
    fn file(&mut self, path: &Path, size: u64) -> std::result::Result<(), String> {
        let Some(format) = Format::from_path(path) else {
            self.report.skipped.push(Failure {
                path: path.display().to_string(),
                reason: "not a supported file type".into(),
            });
            return Ok(());
        };
        if size > self.options.max_file_bytes {
            return Err(format!(
                "{} MB is over the {} MB file limit; raise it with --max-file-size",
                size.div_ceil(1 << 20),
                self.options.max_file_bytes >> 20
            ));
        }
        self.report.files += 1;
        let started = Instant::now();
        let mut bytes = std::fs::read(path).map_err(|error| format!("cannot read: {error}"))?;
        if self.options.sealed_files {
            let sealer =
                self.kb.sealer.as_ref().ok_or(
                    "the file is encrypted but the knowledge base is not: it cannot be read",
                )?;
            bytes = sealer
                .open(&bytes)
                .map_err(|error| format!("cannot decrypt the spooled file: {error}"))?;
        }
        self.report.source_bytes += bytes.len() as u64;
        let sidecar = read_sidecar(
            path,
            self.kb
                .sealer
                .as_deref()
                .filter(|_| self.options.sealed_files),
        )?;
        let file_hash = sha256_hex(&bytes);
        let records = extract(format, &bytes).map_err(|error| error.to_string())?;
        drop(bytes);
        self.report.timings.parse_seconds += started.elapsed().as_secs_f64();
        let source = self.options.source_of(path);
        let mut tags = self.options.tags.clone();
        tags.extend(sidecar.tags.iter().cloned());
        tags.sort();
        tags.dedup();
        let mut readers = match (&sidecar.readers, self.options.access_map.readers_of(path)) {
            (Some(readers), _) => readers.clone(),
            (None, Some(readers)) => readers.to_vec(),
            (None, None) => self.options.readers.clone(),
        };
        for reader in &readers {
            basalt_index::validate_reader(reader)?;
        }
        readers.sort();
        readers.dedup();
        let single = records.len() == 1 && records[0].locator.is_none();
        // A record file (one corpus.jsonl of thousands of documents) moves the bar per record.
        let (before, count) = (self.progress.bytes_done, records.len() as u64);
        for (index, record) in records.into_iter().enumerate() {
            self.progress.bytes_done = before + size * index as u64 / count.max(1);
            let mut metadata = self.options.metadata.clone();
            metadata.extend(record.metadata.clone());
            metadata.extend(sidecar.metadata.clone());
            let content_hash = if single {
                format!("sha256:{file_hash}")
            } else {
                let canonical = serde_json::json!({
                    "id": record.id, "title": record.document.title, "text": record.document.text,
                });
                format!("sha256:{}", sha256_hex(canonical.to_string().as_bytes()))
            };
            let doc_id = match (&record.id, &record.locator) {
                (Some(id), _) => id.clone(),
                (None, Some(locator)) => format!(
                    "r-{}",
                    &sha256_hex(format!("{source}#{locator}").as_bytes())[..16]
                ),
                (None, None) => format!("f-{}", &sha256_hex(source.as_bytes())[..16]),
            };
            let existing = self
                .kb
                .store
                .document(&doc_id)
                .map_err(|error| error.to_string())?;
            if let (Some(existing), Some(replacer)) = (&existing, &self.options.replacer)
                && !existing.readable_by(replacer)
            {
                return Err(format!(
                    "a document from {source:?} exists that you may not read, so it cannot be replaced; upload under another name"
                ));
            }
            if let Some(existing) = &existing
                && existing.content_hash == content_hash
                && existing.tags == tags
                && existing.metadata == metadata
                && existing.readers == readers
            {
                self.report.unchanged += 1;
                continue;
            }
            let title = sidecar
                .title
                .clone()
                .or_else(|| record.document.title.clone())
                .or_else(|| {
                    single
                        .then(|| {
                            Path::new(&source)
                                .file_stem()
                                .map(|stem| without_scheme(&stem.to_string_lossy()).to_owned())
                        })
                        .flatten()
                });
            let started = Instant::now();
            let (chunks, embed_texts) =
                chunk_record(self.kb, self.embedder, &record, title.as_deref());
            self.report.timings.chunk_seconds += started.elapsed().as_secs_f64();
            self.report.text_bytes += record.document.text.len() as u64;
            if chunks.is_empty() {
                continue;
            }
            let document = DocumentRecord {
                doc_id: doc_id.clone(),
                source: source.clone(),
                title,
                format: format.as_str().into(),
                content_hash,
                ingested_at: now_rfc3339(),
                text_chars: record.document.text.chars().count() as u64,
                pages: record
                    .document
                    .sections
                    .iter()
                    .filter_map(|section| section.page)
                    .max(),
                chunk_count: chunks.len() as u32,
                tags: tags.clone(),
                metadata,
                readers: readers.clone(),
            };
            // A later record with the same id wins, as it would in a later run.
            if let Some(position) = self
                .pending
                .iter()
                .position(|doc| doc.write.document.doc_id == doc_id)
            {
                let old = self.pending.remove(position);
                self.pending_chunks -= old.write.chunks.len();
            }
            self.pending_chunks += chunks.len();
            self.pending.push(Pending {
                write: DocumentWrite { document, chunks },
                embed_texts,
                replaces: existing.is_some(),
            });
            if self.pending_chunks >= self.options.batch_chunks
                && let Err(error) = self.flush()
            {
                let reason = error.to_string();
                self.fatal = Some(error);
                return Err(reason);
            }
        }
        Ok(())
    }
}

/// Chunks a record; returns the chunks (vectors still empty) and the texts to embed. The
/// embedded text is the title, a line break, and the chunk, so the title's tokens come out of
/// the chunk budget (unless the title would take more than a quarter of it).
/// The title that starts every chunk's embedded text (the chunk's own text follows on the next
/// line), and its tokens: a document's title when it takes at most a quarter of `max_tokens`.
pub(crate) fn title_prefix<'t>(
    embedder: &dyn Embedder,
    title: Option<&'t str>,
    max_tokens: usize,
) -> (Option<&'t str>, usize) {
    let counter = ModelTokens(embedder);
    let specials = counter.count_tokens("");
    let title_tokens = title.map_or(0, |title| {
        counter.count_tokens(title).saturating_sub(specials)
    });
    match title {
        Some(title) if title_tokens > 0 && title_tokens * 4 <= max_tokens => {
            (Some(title), title_tokens)
        }
        _ => (None, 0),
    }
}

fn chunk_record(
    kb: &KnowledgeBase,
    embedder: &dyn Embedder,
    record: &ExtractedRecord,
    title: Option<&str>,
) -> (Vec<ChunkRecord>, Vec<String>) {
    let counter = ModelTokens(embedder);
    let settings = kb.settings.chunking;
    let (prefix, title_tokens) = title_prefix(embedder, title, settings.max_tokens);
    let budget = settings.max_tokens - title_tokens;
    let options = ChunkerOptions {
        max_tokens: budget,
        overlap_tokens: settings.overlap_tokens.min(budget / 2),
    };
    let document = &record.document;
    let spans = chunk_sections(&document.text, &document.sections, &counter, &options);
    let mut chunks = Vec::with_capacity(spans.len());
    let mut texts = Vec::with_capacity(spans.len());
    // Character offsets. Starts and ends each only move forward (overlap puts a start before
    // the previous end), so each gets its own cursor and the text is walked twice, not once per
    // chunk.
    let mut starts = CharCursor::default();
    let mut ends = CharCursor::default();
    for span in spans {
        let text = document.text[span.range.clone()].to_string();
        if text.trim().is_empty() {
            continue;
        }
        let section = &document.sections[span.section];
        let char_start = starts.advance(&document.text, span.range.start);
        let char_end = ends.advance(&document.text, span.range.end);
        texts.push(match prefix {
            Some(title) => format!("{title}\n{text}"),
            None => text.clone(),
        });
        chunks.push(ChunkRecord {
            ordinal: chunks.len() as u32,
            text,
            heading_path: section.heading_path.clone(),
            page: section.page,
            char_start,
            char_end,
            vector: Vec::new(),
        });
    }
    (chunks, texts)
}

/// Converts increasing byte offsets of one text into character offsets incrementally.
#[derive(Default)]
struct CharCursor {
    byte: usize,
    chars: u64,
}

impl CharCursor {
    fn advance(&mut self, text: &str, byte: usize) -> u64 {
        if byte < self.byte {
            // Not expected (callers pass increasing offsets); stay correct anyway.
            *self = CharCursor::default();
        }
        self.chars += text[self.byte..byte].chars().count() as u64;
        self.byte = byte;
        self.chars
    }
}

fn read_sidecar(path: &Path, sealer: Option<&dyn Sealer>) -> std::result::Result<Sidecar, String> {
    let mut name = path.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    let sidecar = PathBuf::from(name);
    let bytes = std::fs::read(&sidecar).and_then(|bytes| match sealer {
        Some(sealer) => sealer.open(&bytes).map_err(std::io::Error::other),
        None => Ok(bytes),
    });
    match bytes {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
            format!(
                "bad sidecar {}: {error} (expected {{\"title\", \"tags\", \"metadata\", \"readers\"}})",
                sidecar.display()
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Sidecar::default()),
        Err(error) => Err(format!(
            "cannot read sidecar {}: {error}",
            sidecar.display()
        )),
    }
}

/// Expands directories (recursively, in name order, skipping hidden entries and sidecars);
/// unreadable paths become failures.
fn collect_files(
    paths: &[PathBuf],
    failed: &mut Vec<Failure>,
    skipped: &mut Vec<Failure>,
) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.iter().rev().cloned().collect();
    let fail = |failed: &mut Vec<Failure>, path: &Path, reason: String| {
        failed.push(Failure {
            path: path.display().to_string(),
            reason,
        });
    };
    while let Some(path) = stack.pop() {
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) => {
                let dangling = std::fs::symlink_metadata(&path).is_ok_and(|link| link.is_symlink());
                match (dangling, Format::from_path(&path)) {
                    // A broken link to a file Basalt would not read anyway is no failure.
                    (true, None) => skipped.push(Failure {
                        path: path.display().to_string(),
                        reason: "broken symbolic link".into(),
                    }),
                    (true, Some(_)) => fail(
                        failed,
                        &path,
                        "broken symbolic link (its target is missing)".into(),
                    ),
                    (false, _) => fail(failed, &path, format!("cannot read: {error}")),
                }
                continue;
            }
        };
        if metadata.is_file() {
            out.push((path, metadata.len()));
            continue;
        }
        if !metadata.is_dir() {
            fail(failed, &path, "not a regular file or directory".into());
            continue;
        }
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(error) => {
                fail(failed, &path, format!("cannot list: {error}"));
                continue;
            }
        };
        let mut children: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                // Symlinked directories are not followed (no cycles); symlinked files are.
                let is_dir_link =
                    entry.file_type().is_ok_and(|kind| kind.is_symlink()) && entry.path().is_dir();
                !name.starts_with('.') && !name.ends_with(SIDECAR_SUFFIX) && !is_dir_link
            })
            .map(|entry| entry.path())
            .collect();
        children.sort();
        stack.extend(children.into_iter().rev());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{CharCursor, without_scheme};

    #[test]
    fn titles_leave_out_a_source_scheme() {
        assert_eq!(without_scheme("upload:travel-policy"), "travel-policy");
        assert_eq!(without_scheme("notes"), "notes");
        assert_eq!(
            without_scheme("C:report"),
            "C:report",
            "one letter is a drive"
        );
        assert_eq!(without_scheme("meeting 10:30"), "meeting 10:30");
    }

    #[test]
    fn char_cursor_counts_characters_not_bytes() {
        let text = "héllo wörld ✓ end";
        let mut cursor = CharCursor::default();
        let byte_of = |needle: &str| text.find(needle).expect("present");
        assert_eq!(cursor.advance(text, byte_of("wörld")), 6);
        assert_eq!(cursor.advance(text, byte_of("end")), 14);
        // A step back (never done by the pipeline) still gives the right answer.
        assert_eq!(cursor.advance(text, byte_of("llo")), 2);
        assert_eq!(
            cursor.advance(text, text.len()),
            text.chars().count() as u64
        );
    }
}
