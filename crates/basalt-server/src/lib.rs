//! The HTTP server (`basalt serve`): OpenAI-compatible routes and the native API over the local
//! engines, the knowledge bases and the answer pipeline. Handlers are thin: they validate, admit
//! the job through the [`Scheduler`], run the library call on a blocking thread, and shape the
//! response; a second API shape (Bedrock's) is another small layer over the same calls.
//!
//! Every route is declared once in [`router`]'s table, which also produces the OpenAPI document
//! at `/openapi.json`. Every error is JSON `{"error": {"code", "message", "type"}}` with the
//! right status — malformed JSON, a wrong content type, a body over the limit, an unknown route
//! or method included.

mod admin;
mod auth;
mod bedrock;
mod bedrock_agent;
mod error;
mod guard;
mod jobs;
mod kbs;
mod models;
mod native;
mod openai;
mod openapi;
mod ratelimit;
mod scheduler;
mod tls;
mod turn;
mod ui;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{Method, StatusCode};
use axum::{Json, Router};
use basalt_answer::{SessionPolicy, SessionStore, Sessions};
use basalt_kb::{DataDir, KbCatalog, KnowledgeBase};
use basalt_model::{Embedder, Generator};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use auth::{AuthMode, DEMO_PRINCIPAL};
pub use basalt_kb::{Job, JobStatus};
pub use error::{ApiError, Code, ErrorBody};
pub use jobs::Jobs;
pub use ratelimit::RateLimit;
pub use scheduler::{Scheduler, Slot};
pub use tls::TlsConfig;

use auth::{Access, Caller, Security};
use openapi::{Api, Body, Operation, Reply, inline, schema};

/// Models named `kb:NAME` answer from knowledge base NAME.
pub const KB_MODEL_PREFIX: &str = "kb:";

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Generations running at once (1: the CPU serves one at full speed).
    pub concurrent: usize,
    /// Requests that may wait for a turn; more get 429.
    pub max_queue: usize,
    /// Requests one API key may have running or waiting at once; more get 429.
    pub max_requests_per_key: usize,
    /// Longest wait for a turn before 503.
    pub max_queue_wait: Duration,
    /// Longest request: a non-streamed answer, a stream, an upload's body.
    pub request_timeout: Duration,
    /// Most completion tokens one request may ask for (`max_tokens`); more is refused with 400.
    /// Bounds how long one request holds the model: at the embedded model's ~90 tokens/s,
    /// 2,048 tokens is about 25 s.
    pub max_completion_tokens: usize,
    /// Largest JSON request body in bytes.
    pub body_limit: usize,
    /// Largest upload (all files of one multipart request) in bytes.
    pub upload_limit: usize,
    /// How conversation sessions are kept.
    pub sessions: SessionPolicy,
    /// API keys (the default), or the loopback-only local demo without them.
    pub auth: AuthMode,
    /// Requests each API key may send (none: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// The trained prompt-attack classifier guardrails with a `prompt_attacks` policy use (read
    /// when first needed; none, or no file there: the built-in one).
    pub prompt_attack_classifier: Option<std::path::PathBuf>,
    /// How long a claimed ingestion job stays this process's without a heartbeat: after a
    /// crash, another replica (or this one, restarted) resumes it once this runs out.
    pub job_lease: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            concurrent: 1,
            max_queue: 16,
            max_requests_per_key: 4,
            max_queue_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(300),
            max_completion_tokens: 2048,
            body_limit: 4 << 20,
            upload_limit: 256 << 20,
            job_lease: Duration::from_secs(60),
            sessions: SessionPolicy::default(),
            auth: AuthMode::Keys,
            rate_limit: None,
            prompt_attack_classifier: None,
        }
    }
}

/// Open knowledge bases by tenant and name.
type OpenKnowledgeBases = HashMap<(String, String), Arc<KnowledgeBase>>;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    embedder: Arc<dyn Embedder>,
    generator: Arc<dyn Generator>,
    chat_model: String,
    embedding_model: String,
    data_dir: DataDir,
    knowledge_bases: Arc<Mutex<OpenKnowledgeBases>>,
    scheduler: Scheduler,
    request_timeout: Duration,
    max_completion_tokens: usize,
    jobs: Arc<Jobs>,
    sessions: Arc<dyn Sessions>,
    /// The OpenAPI document, built once.
    openapi: Arc<Value>,
    security: Arc<Security>,
    loaded_guardrails: Arc<Mutex<guard::LoadedGuardrails>>,
    attack_classifier: Arc<guard::ClassifierSlot>,
    /// Chat models served elsewhere (`basalt models add`).
    chat_models: Arc<models::ChatModels>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AppState")
            .field("chat_model", &self.chat_model)
            .field("embedding_model", &self.embedding_model)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The shared state over the engines (the local models, or test doubles); starts the
    /// ingestion worker, which first resumes the jobs an earlier run left unfinished. Fails when
    /// the data directory cannot hold the job records.
    pub fn new(
        embedder: Arc<dyn Embedder>,
        generator: Arc<dyn Generator>,
        data_dir: DataDir,
        options: &ServerOptions,
    ) -> std::io::Result<Self> {
        let jobs = Arc::new(Jobs::open(&data_dir, options.job_lease)?);
        let (_, operations) = routes(options).finish();
        let security = Security::open(
            &data_dir,
            options.auth,
            Api::access_table(&operations),
            options.rate_limit,
            options.body_limit,
        )
        .map_err(|error| std::io::Error::other(error.to_string()))?;
        let chat_models = Arc::new(models::ChatModels::new(&data_dir));
        // With a database, conversations are its, so a follow-up may reach any replica.
        let sessions: Arc<dyn Sessions> = match data_dir.database_connection() {
            Some(connection) => Arc::new(
                basalt_shared::PgSessions::open(
                    connection,
                    options.sessions,
                    data_dir.master_key(),
                )
                .map_err(|error| std::io::Error::other(error.to_string()))?,
            ),
            None => Arc::new(SessionStore::new(options.sessions)),
        };
        let state = AppState {
            embedder,
            generator,
            chat_model: basalt_model::DEFAULT_GENERATION_MODEL.to_owned(),
            embedding_model: basalt_model::DEFAULT_EMBEDDING_MODEL.to_owned(),
            data_dir,
            knowledge_bases: Arc::new(Mutex::new(HashMap::new())),
            scheduler: Scheduler::new(
                options.concurrent,
                options.max_queue,
                options.max_requests_per_key,
                options.max_queue_wait,
            ),
            request_timeout: options.request_timeout,
            max_completion_tokens: options.max_completion_tokens,
            jobs,
            sessions,
            openapi: Arc::new(openapi::document(&operations)),
            security: Arc::new(security),
            loaded_guardrails: Arc::new(Mutex::new(HashMap::new())),
            attack_classifier: Arc::new(guard::ClassifierSlot::new(
                options.prompt_attack_classifier.clone(),
            )),
            chat_models,
        };
        Jobs::start(&state);
        Ok(state)
    }

    /// Stops the ingestion worker when it is next idle (a job it runs finishes first): its
    /// thread ends and lets go of the state, so the engines and open knowledge bases are freed
    /// once the last router holding the state is dropped. For a process that makes many
    /// states (tests); a server's state lives as long as its process.
    pub fn stop_jobs(&self) {
        self.jobs.stop();
    }

    /// The chat model `name` names for a turn: `None` for the embedded model (its own name),
    /// else the registered remote model, which `caller` needs `model:Chat` on `model/NAME` for
    /// (a policy can keep an expensive model to some principals); an unknown name is
    /// `model_not_found`.
    fn chat_model_named(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<Option<Arc<dyn Generator>>, ApiError> {
        if name == self.chat_model {
            return Ok(None);
        }
        let remote = self.chat_models.remote(name)?;
        if remote.is_some() {
            self.security
                .require(caller, "model:Chat", &format!("model/{name}"))?;
        }
        remote.map(Some).ok_or_else(|| {
            ApiError::new(
                Code::ModelNotFound,
                format!(
                    "no model {name:?}: use {:?}, a registered model, or {}NAME for a \
                     knowledge base (GET /v1/models lists them)",
                    self.chat_model, KB_MODEL_PREFIX
                ),
            )
        })
    }

    /// The chat model that writes a knowledge base's answer: the one the request names, else
    /// the caller's key's, else the knowledge base's `answer.model`, else the embedded model
    /// (`None`); with the knowledge base's fallback around a remote one.
    fn answer_model(
        &self,
        caller: &Caller,
        kb: &KnowledgeBase,
        requested: Option<&str>,
    ) -> Result<Option<Arc<dyn Generator>>, ApiError> {
        match requested.or(caller.model.as_deref()) {
            Some(model) => self.chat_model_named(caller, model)?,
            None => self.chat_models.for_knowledge_base(kb)?,
        }
        .map(|primary| self.chat_models.with_fallback(kb, primary, &self.generator))
        .transpose()
    }

    /// Refuses a `max_tokens` above the server's per-request budget (`--max-completion-tokens`).
    fn check_max_tokens(&self, requested: Option<usize>) -> Result<(), ApiError> {
        match requested {
            Some(requested) if requested > self.max_completion_tokens => Err(ApiError::new(
                Code::MaxTokensOverLimit,
                format!(
                    "max_tokens is {requested}, and this server gives one request at most {} \
                     completion tokens (its --max-completion-tokens); ask for fewer",
                    self.max_completion_tokens
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The embedding model the knowledge base `kb` was built with (see
    /// [`models::ChatModels::embedder_for`]).
    fn embedder_for(&self, kb: &KnowledgeBase) -> Result<Arc<dyn Embedder>, ApiError> {
        self.chat_models
            .embedder_for(&kb.settings, &self.embedding_model, &self.embedder)
    }

    /// The data directory as `tenant` sees it: only its knowledge bases exist.
    fn tenant_data(&self, tenant: &str) -> basalt_kb::Result<DataDir> {
        self.data_dir.for_tenant(tenant)
    }

    /// The knowledge bases of `tenant` (the one place the server picks their catalog).
    fn catalog(&self, tenant: &str) -> basalt_kb::Result<Box<dyn KbCatalog>> {
        Ok(Box::new(self.tenant_data(tenant)?))
    }

    /// An open knowledge base of `tenant`, kept open between requests (its search caches stay
    /// warm, and ingestion jobs and requests share its one index writer).
    /// The settings are read again each time (a small file), so a knowledge base deleted or
    /// changed by another process (`basalt kb delete`) is not served from a stale handle.
    fn open_knowledge_base(
        &self,
        tenant: &str,
        name: &str,
    ) -> basalt_kb::Result<Arc<KnowledgeBase>> {
        let catalog = self.catalog(tenant)?;
        let key = (tenant.to_owned(), name.to_owned());
        let settings = match catalog.settings(name) {
            Ok(settings) => settings,
            Err(error) => {
                lock(&self.knowledge_bases).remove(&key);
                return Err(error);
            }
        };
        let mut open = lock(&self.knowledge_bases);
        if let Some(kb) = open.get(&key)
            && kb.settings == settings
        {
            return Ok(kb.clone());
        }
        let kb = Arc::new(catalog.open_settings(settings)?);
        open.insert(key, kb.clone());
        Ok(kb)
    }

    /// A knowledge base of the caller's tenant.
    async fn knowledge_base(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<Arc<KnowledgeBase>, ApiError> {
        let state = self.clone();
        let (tenant, name) = (caller.tenant.clone(), name.to_owned());
        blocking(move || state.open_knowledge_base(&tenant, &name)).await
    }

    /// Runs `work` on the caller's tenant's knowledge-base catalog, off the async threads.
    async fn with_catalog<T: Send + 'static>(
        &self,
        caller: &Caller,
        work: impl FnOnce(&dyn KbCatalog) -> basalt_kb::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let catalog = self.catalog(&caller.tenant)?;
        blocking(move || work(catalog.as_ref())).await
    }

    /// Closes a knowledge base (after its settings changed, or before it is deleted).
    fn forget_knowledge_base(&self, tenant: &str, name: &str) {
        lock(&self.knowledge_bases).remove(&(tenant.to_owned(), name.to_owned()));
    }
}

/// Runs blocking library work off the async threads.
async fn blocking<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::internal(error.to_string()))?
        .map_err(Into::into)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A JSON body whose rejections are [`ApiError`]s: 400 for malformed or mistyped JSON, 415 for
/// a missing `Content-Type: application/json`, 413 for a body over the limit.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    let message = rejection.body_text();
    match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            Code::UnsupportedMediaType,
            "send the body as JSON with Content-Type: application/json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            Code::BodyTooLarge,
            format!("the request body is over the server's limit: {message}"),
        ),
        _ => ApiError::new(Code::InvalidJson, message),
    }
}

/// Every route of the server, each declared once: the router and the OpenAPI document are built
/// from this table.
fn routes(options: &ServerOptions) -> Api {
    use Method as M;
    let json = |f| Reply::Json(f);
    Api::new()
        .add(
            Operation::new(M::GET, "/healthz", "healthz", "service", "Liveness: the process answers", Access::Public, json(schema::<Health>)),
            healthz,
        )
        .add(
            Operation::new(M::GET, "/readyz", "readyz", "service", "Readiness: models loaded, data directory readable", Access::Public, json(schema::<Readiness>)),
            readyz,
        )
        .add(
            Operation::new(M::GET, "/openapi.json", "openapi", "service", "This document", Access::Public, json(schema::<Value>)),
            openapi_document,
        )
        .add(
            Operation::new(M::GET, "/v1/me", "getCaller", "service", "Who the key is and what its policies allow across the tenant (any valid key)", Access::Caller { action: "iam:GetCaller" }, json(schema::<admin::Me>)),
            admin::me,
        )
        .add(
            Operation::new(M::GET, "/v1/models", "listModels", "openai", "OpenAI-compatible: the chat and embedding models, and one kb:NAME model per knowledge base", Access::Action { action: "model:List", resource: "model/*" }, json(schema::<openai::ModelList>)),
            openai::models,
        )
        .add(
            Operation::new(M::POST, "/v1/embeddings", "createEmbeddings", "openai", "OpenAI-compatible embeddings: a string or a list of strings, float or base64", Access::Action { action: "model:Embed", resource: "model/*" }, json(schema::<openai::EmbeddingList>))
                .body(Body::Json(schema::<openai::EmbeddingsRequest>)),
            openai::embeddings,
        )
        .add(
            Operation::new(M::POST, "/v1/chat/completions", "createChatCompletion", "openai", "OpenAI-compatible chat completions; model kb:NAME answers from a knowledge base with citations", Access::Action { action: "model:Chat", resource: "model/*" }, Reply::JsonOrEvents(schema::<openai::ChatCompletion>, "with stream: true, chat.completion.chunk events (the last delta of a kb: answer carries its citations and sources), then [DONE]"))
                .body(Body::Json(schema::<openai::ChatRequest>)),
            openai::chat_completions,
        )
        .add(
            Operation::new(M::GET, "/v1/kbs", "listKnowledgeBases", "knowledge bases", "Knowledge bases with their settings and sizes", Access::Action { action: "kb:List", resource: "kb/*" }, json(schema::<kbs::KbList>)),
            kbs::list_kbs,
        )
        .add(
            Operation::new(M::POST, "/v1/kbs", "createKnowledgeBase", "knowledge bases", "Create a knowledge base (409 if the name is taken)", Access::Action { action: "kb:Create", resource: "kb/*" }, json(schema::<kbs::KbView>))
                .body(Body::Json(schema::<kbs::CreateKb>))
                .status(201),
            kbs::create_kb,
        )
        .add(
            Operation::new(M::GET, "/v1/kbs/{kb}", "getKnowledgeBase", "knowledge bases", "A knowledge base's settings and size", Access::Action { action: "kb:Get", resource: "kb/{kb}" }, json(schema::<kbs::KbView>)),
            kbs::get_kb,
        )
        .add(
            Operation::new(M::PATCH, "/v1/kbs/{kb}", "updateKnowledgeBase", "knowledge bases", "Change search and answer settings (chunking, analyzer and model are fixed at creation)", Access::Action { action: "kb:Update", resource: "kb/{kb}" }, json(schema::<kbs::KbView>))
                .body(Body::Json(schema::<kbs::SearchSettings>)),
            kbs::update_kb,
        )
        .add(
            Operation::new(M::DELETE, "/v1/kbs/{kb}", "deleteKnowledgeBase", "knowledge bases", "Delete a knowledge base and everything in it (409 while an ingestion job for it runs)", Access::Action { action: "kb:Delete", resource: "kb/{kb}" }, json(schema::<kbs::Deleted>)),
            kbs::delete_kb,
        )
        .add(
            Operation::new(M::GET, "/v1/kbs/{kb}/documents", "listDocuments", "documents", "The documents of a knowledge base, by id", Access::Action { action: "kb:ListDocuments", resource: "kb/{kb}" }, json(schema::<kbs::DocumentList>))
                .query(inline::<kbs::DocumentsQuery>),
            kbs::list_documents,
        )
        .add(
            Operation::new(M::POST, "/v1/kbs/{kb}/documents", "uploadDocuments", "documents", "Upload files (multipart); answers 202 with an ingestion job to follow at /v1/jobs/{id}", Access::Action { action: "kb:Ingest", resource: "kb/{kb}" }, json(schema::<Job>))
                .body(Body::Multipart(schema::<kbs::UploadForm>))
                .status(202)
                .body_limit(options.upload_limit),
            kbs::upload_documents,
        )
        .add(
            Operation::new(M::GET, "/v1/kbs/{kb}/documents/{id}", "getDocument", "documents", "A document's record", Access::Action { action: "kb:GetDocument", resource: "kb/{kb}/document/{id}" }, json(schema::<basalt_index::DocumentRecord>)),
            kbs::get_document,
        )
        .add(
            Operation::new(M::DELETE, "/v1/kbs/{kb}/documents/{id}", "deleteDocument", "documents", "Delete a document and its chunks from every index at once", Access::Action { action: "kb:DeleteDocument", resource: "kb/{kb}/document/{id}" }, json(schema::<kbs::Deleted>)),
            kbs::delete_document,
        )
        .add(
            Operation::new(M::GET, "/v1/jobs", "listJobs", "documents", "Ingestion jobs, newest first", Access::Action { action: "kb:ListJobs", resource: "job/*" }, json(schema::<kbs::JobList>))
                .query(inline::<kbs::JobsQuery>),
            kbs::list_jobs,
        )
        .add(
            Operation::new(M::GET, "/v1/jobs/{id}", "getJob", "documents", "An ingestion job: status, progress, per-file failures", Access::Action { action: "kb:GetJob", resource: "job/{id}" }, json(schema::<Job>)),
            kbs::get_job,
        )
        .add(
            Operation::new(M::POST, "/v1/kbs/{kb}/search", "search", "answers", "Hybrid, BM25 or vector search with filters", Access::Action { action: "kb:Search", resource: "kb/{kb}" }, json(schema::<native::SearchResponse>))
                .body(Body::Json(schema::<native::SearchRequest>)),
            native::search,
        )
        .add(
            Operation::new(M::POST, "/v1/kbs/{kb}/answer", "answer", "answers", "A grounded answer with span citations, or the fixed not-found answer", Access::Action { action: "kb:Answer", resource: "kb/{kb}" }, Reply::JsonOrEvents(schema::<native::AnswerResponse>, "with stream: true, events `sources`, `delta` and `replace` ({\"text\"}), then `answer` (the JSON body) or `error`"))
                .body(Body::Json(schema::<native::AnswerRequest>)),
            native::answer,
        )
        .add(
            Operation::new(M::POST, "/v1/sessions", "createSession", "answers", "Start a conversation over a knowledge base", Access::Action { action: "session:Create", resource: "session/*" }, json(schema::<native::SessionView>))
                .body(Body::Json(schema::<native::CreateSession>))
                .status(201),
            native::create_session,
        )
        .add(
            Operation::new(M::GET, "/v1/sessions", "listSessions", "answers", "The caller's live conversations, most recently used first", Access::Action { action: "session:List", resource: "session/*" }, json(schema::<native::SessionList>)),
            native::list_sessions,
        )
        .add(
            Operation::new(M::GET, "/v1/sessions/{id}", "getSession", "answers", "A conversation's turns (prompts only when retained)", Access::Action { action: "session:Get", resource: "session/{id}" }, json(schema::<native::SessionView>)),
            native::get_session,
        )
        .add(
            Operation::new(M::DELETE, "/v1/sessions/{id}", "deleteSession", "answers", "Forget a conversation", Access::Action { action: "session:Delete", resource: "session/{id}" }, json(schema::<kbs::Deleted>)),
            native::delete_session,
        )
        .add(
            Operation::new(M::GET, "/v1/guardrails", "listGuardrails", "guardrails", "The tenant's guardrails with their latest version", Access::Action { action: "guardrail:List", resource: "guardrail/*" }, json(schema::<guard::GuardrailList>)),
            guard::list_guardrails,
        )
        .add(
            Operation::new(M::POST, "/v1/guardrails", "createGuardrail", "guardrails", "Store a guardrail configuration; a name that exists gets a new version", Access::Action { action: "guardrail:Create", resource: "guardrail/*" }, json(schema::<guard::GuardrailView>))
                .body(Body::Json(schema::<guard::CreateGuardrail>))
                .status(201),
            guard::create_guardrail,
        )
        .add(
            Operation::new(M::GET, "/v1/guardrails/{name}", "getGuardrail", "guardrails", "A guardrail's configuration (its latest version, or ?version=N)", Access::Action { action: "guardrail:Get", resource: "guardrail/{name}" }, json(schema::<guard::GuardrailView>))
                .query(inline::<guard::VersionQuery>),
            guard::get_guardrail,
        )
        .add(
            Operation::new(M::DELETE, "/v1/guardrails/{name}", "deleteGuardrail", "guardrails", "Delete a guardrail and all its versions", Access::Action { action: "guardrail:Delete", resource: "guardrail/{name}" }, json(schema::<kbs::Deleted>)),
            guard::delete_guardrail,
        )
        .add(
            Operation::new(M::POST, "/v1/guardrails/{name}/apply", "applyGuardrail", "guardrails", "Check a text as input or output (like Bedrock's ApplyGuardrail): the text to pass on and what acted", Access::Action { action: "guardrail:Apply", resource: "guardrail/{name}" }, json(schema::<guard::ApplyResponse>))
                .body(Body::Json(schema::<guard::ApplyRequest>)),
            guard::apply_guardrail,
        )
        .add(
            Operation::new(M::POST, "/model/{modelId}/converse", "bedrockConverse", "bedrock", "Bedrock Runtime Converse: a chat turn with the embedded model, a registered one, or kb:NAME; guardrailConfig applies a Basalt guardrail", Access::Action { action: "model:Chat", resource: "model/{modelId}" }, json(schema::<Value>))
                .body(Body::Json(schema::<bedrock::ConverseRequest>)),
            bedrock::converse,
        )
        .add(
            Operation::new(M::POST, "/model/{modelId}/converse-stream", "bedrockConverseStream", "bedrock", "Bedrock Runtime ConverseStream: Converse as AWS event-stream messages", Access::Action { action: "model:Chat", resource: "model/{modelId}" }, Reply::EventStream("messageStart, contentBlockDelta…, contentBlockStop, messageStop, metadata; an exception message on failure"))
                .body(Body::Json(schema::<bedrock::ConverseRequest>)),
            bedrock::converse_stream,
        )
        .add(
            Operation::new(M::POST, "/model/{modelId}/invoke", "bedrockInvokeModel", "bedrock", "Bedrock Runtime InvokeModel for the embedding model, with Amazon Titan Text Embeddings' request and response", Access::Action { action: "model:Embed", resource: "model/{modelId}" }, json(schema::<Value>))
                .body(Body::Json(schema::<bedrock::TitanEmbeddingRequest>)),
            bedrock::invoke_model,
        )
        .add(
            Operation::new(M::POST, "/model/{modelId}/count-tokens", "bedrockCountTokens", "bedrock", "Bedrock Runtime CountTokens: the tokens a Converse request's messages are for the model", Access::Action { action: "model:CountTokens", resource: "model/{modelId}" }, json(schema::<Value>))
                .body(Body::Json(schema::<bedrock::CountTokensRequest>)),
            bedrock::count_tokens,
        )
        .add(
            Operation::new(M::POST, "/guardrail/{guardrailIdentifier}/version/{guardrailVersion}/apply", "bedrockApplyGuardrail", "bedrock", "Bedrock Runtime ApplyGuardrail: a Basalt guardrail's verdict in Bedrock's assessment shape (version DRAFT is the latest)", Access::Action { action: "guardrail:Apply", resource: "guardrail/{guardrailIdentifier}" }, json(schema::<Value>))
                .body(Body::Json(schema::<bedrock::ApplyGuardrailRequest>)),
            bedrock::apply_guardrail,
        )
        .add(
            Operation::new(M::GET, "/foundation-models", "bedrockListFoundationModels", "bedrock", "Bedrock ListFoundationModels: the chat and embedding models, registered models and kb:NAME models (byOutputModality filters)", Access::Action { action: "model:List", resource: "model/*" }, json(schema::<Value>)),
            bedrock::list_foundation_models,
        )
        .add(
            Operation::new(M::POST, "/knowledgebases/", "bedrockListKnowledgeBases", "bedrock", "Bedrock Agent ListKnowledgeBases: the caller's knowledge bases with their Bedrock ids", Access::Action { action: "kb:List", resource: "kb/*" }, json(schema::<Value>)),
            bedrock::list_knowledge_bases,
        )
        .add(
            Operation::new(M::POST, "/knowledgebases/{knowledgeBaseId}/retrieve", "bedrockRetrieve", "bedrock", "Bedrock Agent Runtime Retrieve: search a knowledge base (by its bedrock_id or name; kb:Search on it) with Bedrock's filters and paging", Access::Caller { action: "kb:Search" }, json(schema::<Value>))
                .body(Body::Json(schema::<bedrock_agent::RetrieveRequest>)),
            bedrock_agent::retrieve,
        )
        .add(
            Operation::new(M::POST, "/retrieveAndGenerate", "bedrockRetrieveAndGenerate", "bedrock", "Bedrock Agent Runtime RetrieveAndGenerate: a grounded answer with citations (kb:Answer on the knowledge base); sessionId continues a conversation", Access::Caller { action: "kb:Answer" }, json(schema::<Value>))
                .body(Body::Json(schema::<bedrock_agent::RagRequest>)),
            bedrock_agent::retrieve_and_generate,
        )
        .add(
            Operation::new(M::POST, "/retrieveAndGenerateStream", "bedrockRetrieveAndGenerateStream", "bedrock", "Bedrock Agent Runtime RetrieveAndGenerateStream: the answer as AWS event-stream messages", Access::Caller { action: "kb:Answer" }, Reply::EventStream("output…, then citation… and guardrail; the session id in x-amzn-bedrock-knowledge-base-session-id"))
                .body(Body::Json(schema::<bedrock_agent::RagRequest>)),
            bedrock_agent::retrieve_and_generate_stream,
        )
        .add(
            Operation::new(M::GET, "/v1/audit", "searchAudit", "audit", "Audit records matching a principal, action pattern, outcome and start time", Access::Action { action: "audit:Read", resource: "audit" }, json(schema::<admin::AuditRecords>))
                .query(inline::<admin::AuditQuery>),
            admin::search_audit,
        )
        .add(
            Operation::new(M::GET, "/v1/audit/verify", "verifyAudit", "audit", "Check the audit trail's hash chain; names the first bad record", Access::Action { action: "audit:Read", resource: "audit" }, json(schema::<admin::AuditVerification>)),
            admin::verify_audit,
        )
}

async fn openapi_document(State(state): State<AppState>) -> Json<Value> {
    Json(state.openapi.as_ref().clone())
}

/// The routes, with their body limit and JSON fallbacks.
pub fn router(state: AppState, options: &ServerOptions) -> Router {
    let (router, _) = routes(options).finish();
    router
        // After routing (so the matched route is known), before every handler.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        // The UI's files hold no data: outside the guard and the API's route table.
        .merge(ui::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(options.body_limit))
        // Bedrock's routes answer errors in Bedrock's shape, whoever raised them.
        .layer(axum::middleware::from_fn(bedrock::errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            time_budget,
        ))
        .with_state(state)
}

/// Every request's time budget (`--request-timeout`): a handler that has not produced its
/// response by then — one still reading a body that trickles in, say — gets 504, and its work
/// is dropped. A streamed response has produced its head by then; its stream keeps the same
/// budget on its own.
async fn time_budget(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timed_out(state.request_timeout).into_response(),
    }
}

#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
struct Readiness {
    /// Always `ready` (otherwise the status is 503).
    status: &'static str,
    /// The chat and embedding models, loaded.
    models: [String; 2],
    /// Requests waiting for the model now.
    waiting: usize,
}

/// Ready when the models are loaded (they are before the server listens) and the data
/// directory can be read; the number of requests waiting is reported.
async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    // Readable, not listed: an unauthenticated probe learns nothing about any tenant.
    let data_dir = state.data_dir.clone();
    tokio::task::spawn_blocking(move || data_dir.list().map(|_| ()))
        .await
        .map_err(|error| ApiError::internal(error.to_string()))?
        .map_err(|error| ApiError::new(Code::NotReady, error.to_string()))?;
    Ok(Json(Readiness {
        status: "ready",
        models: [state.chat_model.clone(), state.embedding_model.clone()],
        waiting: state.scheduler.waiting(),
    }))
}

async fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "no such route; see the API documentation")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        "this route does not accept that method",
    )
}

/// Serves until Ctrl-C (or SIGTERM), then lets running requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    options: &ServerOptions,
) -> std::io::Result<()> {
    let app = router(state, options);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
}

/// Serves HTTPS on `listener` with `tls`; otherwise as [`serve`].
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: &TlsConfig,
    state: AppState,
    options: &ServerOptions,
) -> std::io::Result<()> {
    let app = router(state, options);
    axum::serve(
        tls::TlsListener::new(listener, tls)?,
        app.into_make_service(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// Standard base64 with padding (RFC 4648), for `encoding_format: "base64"`.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let value = (u32::from(group[0]) << 16)
            | (u32::from(group.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(group.get(2).copied().unwrap_or(0));
        for index in 0..4 {
            if index <= group.len() {
                out.push(char::from(
                    ALPHABET[(value >> (18 - 6 * index)) as usize & 63],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), expected);
        }
    }
}
