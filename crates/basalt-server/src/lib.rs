//! The HTTP server (`basalt serve`): OpenAI-compatible routes over the local engines and the
//! answer pipeline. Handlers are thin: they validate, admit the job through the [`Scheduler`],
//! run the library call on a blocking thread, and shape the response; a second API shape
//! (Bedrock's) is another small layer over the same calls.
//!
//! Every error is JSON `{"error": {"code", "message", "type"}}` with the right status —
//! malformed JSON, a wrong content type, a body over the limit, an unknown route or method
//! included.

mod error;
mod native;
mod openai;
mod scheduler;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use basalt_kb::{DataDir, KnowledgeBase};
use basalt_model::{LocalEmbedder, LocalGenerator};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use error::ApiError;
pub use scheduler::{Scheduler, Slot};

/// Models named `kb:NAME` answer from knowledge base NAME.
pub const KB_MODEL_PREFIX: &str = "kb:";

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Generations running at once (1: the CPU serves one at full speed).
    pub concurrent: usize,
    /// Requests that may wait for a turn; more get 429.
    pub max_queue: usize,
    /// Longest wait for a turn before 503.
    pub max_queue_wait: Duration,
    /// Longest non-streamed request.
    pub request_timeout: Duration,
    /// Largest request body in bytes.
    pub body_limit: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            concurrent: 1,
            max_queue: 16,
            max_queue_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(300),
            body_limit: 4 << 20,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    embedder: Arc<LocalEmbedder>,
    generator: Arc<LocalGenerator>,
    chat_model: String,
    embedding_model: String,
    data_dir: DataDir,
    knowledge_bases: Arc<Mutex<HashMap<String, Arc<KnowledgeBase>>>>,
    scheduler: Scheduler,
    request_timeout: Duration,
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
    pub fn new(
        embedder: LocalEmbedder,
        generator: LocalGenerator,
        data_dir: DataDir,
        options: &ServerOptions,
    ) -> Self {
        AppState {
            embedder: Arc::new(embedder),
            generator: Arc::new(generator),
            chat_model: basalt_model::DEFAULT_GENERATION_MODEL.to_owned(),
            embedding_model: basalt_model::DEFAULT_EMBEDDING_MODEL.to_owned(),
            data_dir,
            knowledge_bases: Arc::new(Mutex::new(HashMap::new())),
            scheduler: Scheduler::new(
                options.concurrent,
                options.max_queue,
                options.max_queue_wait,
            ),
            request_timeout: options.request_timeout,
        }
    }

    /// An open knowledge base, kept open between requests (its search caches stay warm).
    async fn knowledge_base(&self, name: &str) -> Result<Arc<KnowledgeBase>, ApiError> {
        if let Some(kb) = lock(&self.knowledge_bases).get(name) {
            return Ok(kb.clone());
        }
        let data_dir = self.data_dir.clone();
        let owned = name.to_owned();
        let kb = tokio::task::spawn_blocking(move || data_dir.open(&owned))
            .await
            .map_err(|error| ApiError::internal(error.to_string()))??;
        let kb = Arc::new(kb);
        lock(&self.knowledge_bases).insert(name.to_owned(), kb.clone());
        Ok(kb)
    }
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
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over the server's limit: {message}"),
        ),
        _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", message),
    }
}

/// The routes, with their body limit and JSON fallbacks.
pub fn router(state: AppState, options: &ServerOptions) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/models", get(openai::models))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/kbs", get(native::list_kbs))
        .route("/v1/kbs/{kb}/search", post(native::search))
        .route("/v1/kbs/{kb}/answer", post(native::answer))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(options.body_limit))
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the models are loaded (they are before the server listens) and the data
/// directory can be read; the number of requests waiting is reported.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let data_dir = state.data_dir.clone();
    let kbs = tokio::task::spawn_blocking(move || data_dir.list())
        .await
        .map_err(|error| ApiError::internal(error.to_string()))?
        .map_err(|error| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                error.to_string(),
            )
        })?;
    Ok(Json(json!({
        "status": "ready",
        "models": [state.chat_model, state.embedding_model],
        "knowledge_bases": kbs.len(),
        "waiting": state.scheduler.waiting(),
    })))
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route; see the API documentation")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
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

/// `bytes` random bytes as hex, from the standard library's randomly keyed hasher.
pub(crate) fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(out.len());
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(bytes * 2);
    out
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

    #[test]
    fn random_ids_differ() {
        let (a, b) = (random_hex(12), random_hex(12));
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
    }
}
