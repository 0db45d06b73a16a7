//! The native API for knowledge bases, their documents and ingestion jobs: create, read,
//! change and delete KBs; upload files (multipart, ingested asynchronously by a job); list,
//! read and delete documents; follow jobs.

use std::collections::BTreeMap;
use std::path::Path as FsPath;

use std::sync::Arc;

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::{Extension, Json};
use basalt_index::{Bm25Params, DocumentRecord, Fusion, SearchMode, VectorIndex};
use basalt_ingest::Format;
use basalt_kb::{AnswerSettings, KbSettings, KnowledgeBase};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::{ApiJson, AppState, blocking};
use basalt_kb::{Job, UploadedFile};

/// A knowledge base with its size.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct KbView {
    #[serde(flatten)]
    settings: KbSettings,
    documents: u64,
    chunks: u64,
    /// Encrypted at rest with its own data key.
    encrypted: bool,
    /// The id Bedrock clients use for it (`knowledgeBaseId` of Retrieve and
    /// RetrieveAndGenerate): ten capitals and digits derived from the name.
    bedrock_id: String,
    /// What the caller's policies let it do with this knowledge base (`kb:Search`,
    /// `kb:Ingest`, …), so a client can offer only those. Each request is still checked.
    actions: Vec<&'static str>,
}

/// The actions on one knowledge base a client may want to offer, each with the resource it is
/// checked on (`{kb}` is the knowledge base's name).
const KB_ACTIONS: [(&str, &str); 9] = [
    ("kb:Get", "kb/{kb}"),
    ("kb:Update", "kb/{kb}"),
    ("kb:Delete", "kb/{kb}"),
    ("kb:ListDocuments", "kb/{kb}"),
    ("kb:Ingest", "kb/{kb}"),
    ("kb:Search", "kb/{kb}"),
    ("kb:Answer", "kb/{kb}"),
    ("kb:GetDocument", "kb/{kb}/document/*"),
    ("kb:DeleteDocument", "kb/{kb}/document/*"),
];

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct KbList {
    knowledge_bases: Vec<KbView>,
}

/// A knowledge base as `caller` sees it: the documents and chunks it may read.
async fn view(state: &AppState, caller: &Caller, settings: KbSettings) -> Result<KbView, ApiError> {
    let kb = state.knowledge_base(caller, &settings.name).await?;
    let encrypted = kb.sealer.is_some();
    let reader = caller.reader();
    let (documents, chunks) = blocking(move || {
        let counts = match reader {
            None => {
                let stats = kb.stats()?;
                (stats.documents, stats.chunks)
            }
            Some(reader) => kb
                .documents()?
                .iter()
                .filter(|doc| doc.readable_by(&reader))
                .fold((0, 0), |(documents, chunks), doc| {
                    (documents + 1, chunks + u64::from(doc.chunk_count))
                }),
        };
        Ok::<_, basalt_kb::KbError>(counts)
    })
    .await?;
    let actions = state
        .security
        .permitted(caller, &KB_ACTIONS, &settings.name);
    Ok(KbView {
        bedrock_id: basalt_kb::bedrock_id(&settings.name),
        settings,
        documents,
        chunks,
        encrypted,
        actions,
    })
}

pub(crate) async fn list_kbs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<KbList>, ApiError> {
    let all = state.with_catalog(&caller, |data| data.list()).await?;
    let mut knowledge_bases = Vec::with_capacity(all.len());
    for settings in all {
        knowledge_bases.push(view(&state, &caller, settings).await?);
    }
    Ok(Json(KbList { knowledge_bases }))
}

/// A new knowledge base; unset fields take the defaults of `basalt kb create`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKb {
    name: String,
    /// The embedding model: the server's own (default), or a remote embedding model
    /// registered with `basalt models add --embedding`, called once to learn its dimension.
    #[serde(default)]
    embedding_model: Option<String>,
    /// Most model tokens per chunk (at most the embedding model's limit, 256 for MiniLM).
    #[serde(default)]
    chunk_tokens: Option<usize>,
    /// Tokens a chunk repeats from the previous one (default 32).
    #[serde(default)]
    overlap_tokens: Option<usize>,
    /// BM25 analyzer: english (default), english_keep_stopwords, standard, french, …
    #[serde(default)]
    analyzer: Option<String>,
    #[serde(default)]
    mode: Option<SearchMode>,
    #[serde(default)]
    fusion: Option<Fusion>,
    #[serde(default)]
    vector_index: Option<VectorIndex>,
    #[serde(default)]
    bm25: Option<Bm25Params>,
    #[serde(default)]
    answer: Option<AnswerSettings>,
    /// Encrypt it at rest with the server's master key (default true).
    #[serde(default)]
    encrypted: Option<bool>,
}

pub(crate) async fn create_kb(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<CreateKb>,
) -> Result<(StatusCode, HeaderMap, Json<KbView>), ApiError> {
    let mut settings = KbSettings::new(&request.name);
    let (model, info, default_chunk) = match request.embedding_model {
        Some(name) if name != state.embedding_model => {
            let models = state.chat_models.clone();
            let info = crate::blocking(move || models.probe_embedding(&name)).await?;
            let chunk = basalt_model::REMOTE_CHUNK_TOKENS.min(info.max_tokens);
            (info.model_name.clone(), info, chunk)
        }
        _ => {
            let info = basalt_model::Embedder::info(state.embedder.as_ref()).clone();
            (state.embedding_model.clone(), info.clone(), info.max_tokens)
        }
    };
    settings.embedding.model = model;
    settings.embedding.dimension = info.dimension;
    settings.embedding.max_tokens = info.max_tokens;
    settings.chunking.max_tokens = request.chunk_tokens.unwrap_or(default_chunk);
    if let Some(overlap) = request.overlap_tokens {
        settings.chunking.overlap_tokens = overlap;
    }
    if let Some(analyzer) = request.analyzer {
        settings.analyzer = analyzer;
    }
    apply_search_settings(
        &mut settings,
        SearchSettings {
            mode: request.mode,
            fusion: request.fusion,
            vector_index: request.vector_index,
            bm25: request.bm25,
            answer: request.answer,
        },
    );
    let created = settings.clone();
    let encrypted = request.encrypted.unwrap_or(true);
    state
        .with_catalog(&caller, move |data| data.create_with(&created, encrypted))
        .await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/kbs/{}", settings.name)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        Json(view(&state, &caller, settings).await?),
    ))
}

pub(crate) async fn get_kb(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<KbView>, ApiError> {
    let settings = state
        .with_catalog(&caller, move |data| data.settings(&name))
        .await?;
    Ok(Json(view(&state, &caller, settings).await?))
}

/// Settings that may change after creation; a field left out keeps its value. `answer`
/// replaces the KB's answer settings as a whole.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchSettings {
    #[serde(default)]
    mode: Option<SearchMode>,
    #[serde(default)]
    fusion: Option<Fusion>,
    #[serde(default)]
    vector_index: Option<VectorIndex>,
    #[serde(default)]
    bm25: Option<Bm25Params>,
    #[serde(default)]
    answer: Option<AnswerSettings>,
}

fn apply_search_settings(settings: &mut KbSettings, change: SearchSettings) {
    if let Some(mode) = change.mode {
        settings.mode = mode;
    }
    if let Some(fusion) = change.fusion {
        settings.fusion = fusion;
    }
    if let Some(vector_index) = change.vector_index {
        settings.vector_index = vector_index;
    }
    if let Some(bm25) = change.bm25 {
        settings.bm25 = bm25;
    }
    if let Some(answer) = change.answer {
        settings.answer = answer;
    }
}

async fn refuse_if_busy(state: &AppState, caller: &Caller, name: &str) -> Result<(), ApiError> {
    if state.jobs.busy(&caller.tenant, name).await? {
        return Err(ApiError::retry_later(
            Code::KnowledgeBaseBusy,
            format!(
                "an ingestion job for {name:?} is queued or running; retry when it ends (GET /v1/jobs?kb={name})"
            ),
        ));
    }
    Ok(())
}

pub(crate) async fn update_kb(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(change): ApiJson<SearchSettings>,
) -> Result<Json<KbView>, ApiError> {
    refuse_if_busy(&state, &caller, &name).await?;
    let lookup = name.clone();
    let mut settings = state
        .with_catalog(&caller, move |data| data.settings(&lookup))
        .await?;
    apply_search_settings(&mut settings, change);
    let updated = settings.clone();
    state
        .with_catalog(&caller, move |data| data.update(&updated))
        .await?;
    state.forget_knowledge_base(&caller.tenant, &name);
    Ok(Json(view(&state, &caller, settings).await?))
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Deleted {
    /// The name or id of what was deleted.
    pub(crate) deleted: String,
}

pub(crate) async fn delete_kb(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    refuse_if_busy(&state, &caller, &name).await?;
    state.forget_knowledge_base(&caller.tenant, &name);
    let doomed = name.clone();
    state
        .with_catalog(&caller, move |data| data.delete(&doomed))
        .await?;
    Ok(Json(Deleted { deleted: name }))
}

// ---------------------------------------------------------------------------------------------
// Documents

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DocumentsQuery {
    /// Most documents to return (default 100, at most 1000).
    #[serde(default)]
    limit: Option<usize>,
    /// Documents to skip, in id order.
    #[serde(default)]
    offset: Option<usize>,
    /// Only documents whose source starts with this.
    #[serde(default)]
    source_prefix: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct DocumentList {
    /// Documents matching the query, before `limit` and `offset`.
    total: usize,
    documents: Vec<DocumentRecord>,
}

pub(crate) async fn list_documents(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<DocumentsQuery>,
) -> Result<Json<DocumentList>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let kb = state.knowledge_base(&caller, &name).await?;
    let all = blocking(move || kb.documents()).await?;
    let reader = caller.reader();
    let matching: Vec<DocumentRecord> = all
        .into_iter()
        .filter(|doc| reader.as_ref().is_none_or(|reader| doc.readable_by(reader)))
        .filter(|doc| {
            query
                .source_prefix
                .as_deref()
                .is_none_or(|prefix| doc.source.starts_with(prefix))
        })
        .collect();
    let total = matching.len();
    let documents = matching
        .into_iter()
        .skip(query.offset.unwrap_or(0))
        .take(limit)
        .collect();
    Ok(Json(DocumentList { total, documents }))
}

/// Also the answer for a document the caller may not read: it cannot tell the two apart.
fn document_not_found(kb: &str, id: &str) -> ApiError {
    ApiError::new(
        Code::DocumentNotFound,
        format!("no document {id:?} in {kb:?}; GET /v1/kbs/{kb}/documents lists them"),
    )
}

/// The document `id` of `name` if the caller may read it.
async fn readable_document(
    state: &AppState,
    caller: &Caller,
    name: &str,
    id: &str,
) -> Result<(Arc<KnowledgeBase>, DocumentRecord), ApiError> {
    let kb = state.knowledge_base(caller, name).await?;
    let (lookup, store) = (id.to_owned(), kb.clone());
    let found = blocking(move || store.document(&lookup)).await?;
    let reader = caller.reader();
    found
        .filter(|doc| reader.is_none_or(|reader| doc.readable_by(&reader)))
        .map(|doc| (kb, doc))
        .ok_or_else(|| document_not_found(name, id))
}

pub(crate) async fn get_document(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<DocumentRecord>, ApiError> {
    let (_, document) = readable_document(&state, &caller, &name, &id).await?;
    Ok(Json(document))
}

/// Deletes a document and all its chunks from every index at once; it is gone from search
/// when the response arrives.
pub(crate) async fn delete_document(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    let (kb, _) = readable_document(&state, &caller, &name, &id).await?;
    // Settling merges and rebuilding vector graphs takes the CPU: take a turn.
    let slot = state.scheduler.admit(caller.queue_key()).await?;
    let doomed = id.clone();
    let deleted = blocking(move || {
        let _slot = slot;
        let deleted = kb.delete(std::slice::from_ref(&doomed))?;
        kb.finish_writes()?;
        Ok::<_, basalt_kb::KbError>(deleted)
    })
    .await?;
    if deleted == 0 {
        return Err(document_not_found(&name, &id));
    }
    Ok(Json(Deleted { deleted: id }))
}

// ---------------------------------------------------------------------------------------------
// Uploads and jobs

/// The multipart form of `POST /v1/kbs/{kb}/documents` (for the OpenAPI document).
#[derive(Debug, JsonSchema)]
#[allow(dead_code)]
pub(crate) struct UploadForm {
    /// One or more files (repeat the field). Each file's name (folders allowed, like
    /// `hr/policy.pdf`) becomes its source `upload:hr/policy.pdf`.
    #[schemars(with = "Vec<String>", extend("items" = {"type": "string", "format": "binary"}))]
    file: Vec<Vec<u8>>,
    /// Tags for every file, comma-separated (the field may repeat).
    tags: Option<String>,
    /// A JSON object of metadata for every file, like `{"team": "hr", "year": 2024}`.
    metadata: Option<String>,
    /// Who may read the files' documents: `principal:NAME` and `group:NAME`, comma-separated
    /// (the field may repeat). Left out: everyone who may read the knowledge base.
    readers: Option<String>,
}

/// Turns a client's file name into a safe relative path: no absolute paths, no `..`, no
/// empty parts, forward slashes.
fn clean_name(raw: &str) -> Option<String> {
    let parts: Vec<&str> = raw
        .split(['/', '\\'])
        .filter(|part| !part.is_empty() && *part != "." && *part != "..")
        .collect();
    let name = parts.join("/");
    (!name.is_empty() && name.len() <= 1024 && !name.chars().any(char::is_control)).then_some(name)
}

fn multipart_error(error: &MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            Code::BodyTooLarge,
            format!(
                "the upload is over the server's limit ({}); send fewer or smaller files per request, or raise `basalt serve --upload-limit`",
                error.body_text()
            ),
        )
    } else {
        ApiError::invalid(format!("malformed multipart upload: {}", error.body_text()))
    }
}

/// Streams one file field to `path`, refusing it past `max_bytes`. With a `sealer` (an
/// encrypted knowledge base) the file is collected in memory and written sealed: an upload's
/// content never touches the disk in plain text.
async fn spool(
    field: &mut Field<'_>,
    path: &FsPath,
    max_bytes: u64,
    sealer: Option<&dyn basalt_index::Sealer>,
) -> Result<u64, ApiError> {
    let io =
        |error: std::io::Error| ApiError::internal(format!("cannot spool the upload: {error}"));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut plain = Vec::new();
    let mut written = 0_u64;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|error| multipart_error(&error))?
    {
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(ApiError::new(
                Code::FileTooLarge,
                format!(
                    "{:?} is over the {} MB file limit",
                    field.file_name().unwrap_or_default(),
                    max_bytes >> 20
                ),
            ));
        }
        match sealer {
            Some(_) => plain.extend_from_slice(&chunk),
            None => file.write_all(&chunk).await.map_err(io)?,
        }
    }
    if let Some(sealer) = sealer {
        file.write_all(&sealer.seal(&plain)).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    Ok(written)
}

/// What an upload's fields said.
#[derive(Default)]
struct Upload {
    files: Vec<UploadedFile>,
    tags: Vec<String>,
    metadata: BTreeMap<String, Value>,
    readers: Vec<String>,
}

/// The comma-separated entries of a form field.
fn entries(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::to_owned)
}

async fn read_upload(
    multipart: &mut Multipart,
    dir: &FsPath,
    sealer: Option<&dyn basalt_index::Sealer>,
) -> Result<Upload, ApiError> {
    let mut upload = Upload::default();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|error| multipart_error(&error))?
    {
        let field_name = field.name().unwrap_or_default().to_owned();
        match field_name.as_str() {
            "file" | "files" | "file[]" | "files[]" => {
                let raw = field.file_name().unwrap_or_default().to_owned();
                let name = clean_name(&raw).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "every file needs a file name (got {raw:?}) so its type and source are known"
                    ))
                })?;
                if Format::from_path(FsPath::new(&name)).is_none() {
                    return Err(ApiError::new(
                        Code::UnsupportedFileType,
                        format!(
                            "{name:?} is not a type Basalt reads: send .pdf, .docx, .html, .md, .txt, .csv, .json or .jsonl"
                        ),
                    ));
                }
                let spool_path = dir.join(UploadedFile::spool_name(upload.files.len(), &name));
                let bytes = spool(
                    &mut field,
                    &spool_path,
                    basalt_kb::DEFAULT_MAX_FILE_BYTES,
                    sealer,
                )
                .await?;
                upload.files.push(UploadedFile { name, bytes });
            }
            "tags" => {
                let text = field
                    .text()
                    .await
                    .map_err(|error| multipart_error(&error))?;
                upload.tags.extend(entries(&text));
            }
            "readers" => {
                let text = field
                    .text()
                    .await
                    .map_err(|error| multipart_error(&error))?;
                for reader in entries(&text) {
                    basalt_index::validate_reader(&reader).map_err(ApiError::invalid)?;
                    upload.readers.push(reader);
                }
            }
            "metadata" => {
                let text = field
                    .text()
                    .await
                    .map_err(|error| multipart_error(&error))?;
                let parsed: BTreeMap<String, Value> =
                    serde_json::from_str(&text).map_err(|error| {
                        ApiError::invalid(format!("metadata must be a JSON object: {error}"))
                    })?;
                upload.metadata.extend(parsed);
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown form field {other:?}: send `file` (repeatable), `tags`, `metadata` and `readers`"
                )));
            }
        }
    }
    if upload.files.is_empty() {
        return Err(ApiError::invalid(
            "the upload has no files: send them as multipart form fields named `file`",
        ));
    }
    upload.tags.sort();
    upload.tags.dedup();
    upload.readers.sort();
    upload.readers.dedup();
    Ok(upload)
}

/// A multipart body whose rejection is a JSON 415 (not a plain-text one).
pub(crate) struct ApiMultipart(Multipart);

impl<S: Send + Sync> FromRequest<S> for ApiMultipart {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Multipart::from_request(request, state)
            .await
            .map(ApiMultipart)
            .map_err(|rejection| {
                ApiError::new(
                    Code::UnsupportedMediaType,
                    format!(
                        "upload files as multipart/form-data (curl -F file=@report.pdf): {}",
                        rejection.body_text()
                    ),
                )
            })
    }
}

/// Takes a multipart upload, spools it durably, and queues an ingestion job: `202` with the
/// job, `Location: /v1/jobs/{id}`.
pub(crate) async fn upload_documents(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiMultipart(mut multipart): ApiMultipart,
) -> Result<(StatusCode, HeaderMap, Json<Job>), ApiError> {
    // Opening it also proves the master key is at hand for an encrypted one.
    let kb = state.knowledge_base(&caller, &name).await?;
    let id = Job::new_id();
    let dir = state.jobs.upload_dir(&id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|error| ApiError::internal(format!("cannot spool the upload: {error}")))?;
    let upload = match read_upload(&mut multipart, &dir, kb.sealer.as_deref()).await {
        Ok(upload) => upload,
        Err(error) => {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(error);
        }
    };
    let job = Job {
        owner: caller.key_id.as_ref().map(|_| caller.principal.clone()),
        readers: upload.readers,
        encrypted: kb.sealer.is_some(),
        tags: upload.tags,
        metadata: upload.metadata,
        ..Job::new(id.clone(), &caller.tenant, &name, upload.files)
    };
    let jobs = state.jobs.clone();
    let submitted = job.clone();
    let spooled = dir.clone();
    let sealer = kb.sealer.clone();
    let result = tokio::task::spawn_blocking(move || {
        sync_dir(&spooled).map_err(|error| {
            ApiError::internal(format!("cannot record the ingestion job: {error}"))
        })?;
        jobs.submit(submitted, sealer).map_err(|error| match error {
            basalt_kb::KbError::Database { .. } => ApiError::from(error),
            other => ApiError::internal(format!("cannot record the ingestion job: {other}")),
        })
    })
    .await
    .map_err(|error| ApiError::internal(error.to_string()))?;
    if let Err(error) = result {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Err(error);
    }
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::ACCEPTED, headers, Json(job)))
}

fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    match dir.parent() {
        Some(parent) => std::fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobsQuery {
    /// Only this knowledge base's jobs.
    #[serde(default)]
    kb: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct JobList {
    /// Newest first.
    jobs: Vec<Job>,
}

pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<JobsQuery>,
) -> Result<Json<JobList>, ApiError> {
    Ok(Json(JobList {
        jobs: state.jobs.list(&caller, query.kb.as_deref()).await?,
    }))
}

pub(crate) async fn get_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let job = state.jobs.get(&caller, &id).await?;
    job.map(Json).ok_or_else(|| {
        ApiError::new(
            Code::JobNotFound,
            format!("no job {id:?} (finished jobs are kept for the last 1000)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_the_spool() {
        assert_eq!(clean_name("report.pdf").as_deref(), Some("report.pdf"));
        assert_eq!(
            clean_name("../../etc/passwd").as_deref(),
            Some("etc/passwd")
        );
        assert_eq!(
            clean_name("C:\\Users\\me\\notes.md").as_deref(),
            Some("C:/Users/me/notes.md")
        );
        assert_eq!(
            clean_name("/hr//./policy.txt").as_deref(),
            Some("hr/policy.txt")
        );
        assert_eq!(clean_name(".."), None);
        assert_eq!(clean_name(""), None);
        assert_eq!(clean_name("bad\nname.txt"), None);
    }

    #[test]
    fn only_search_settings_change() {
        let mut settings = KbSettings::new("x");
        let before = settings.clone();
        apply_search_settings(&mut settings, SearchSettings::default());
        assert_eq!(settings, before, "an empty change changes nothing");
        apply_search_settings(
            &mut settings,
            SearchSettings {
                mode: Some(SearchMode::Bm25),
                ..SearchSettings::default()
            },
        );
        assert_eq!(settings.mode, SearchMode::Bm25);
        assert_eq!(settings.fusion, before.fusion);
    }
}
