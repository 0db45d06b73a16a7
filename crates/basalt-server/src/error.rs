//! Every error the server returns: JSON `{"error": {"code", "message", "type"}}` with the right
//! status, never an HTML page or an empty 500.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

/// Declares [`Code`]: one line per error code with its HTTP status and when it is returned.
macro_rules! codes {
    ($($variant:ident = $name:literal, $status:ident, $when:literal;)*) => {
        /// Every error code the API returns, with its status and meaning: the one table that
        /// error responses and docs/server.md's table of errors come from.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable, machine-readable name clients match on.
            pub fn name(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(Code::$variant => StatusCode::$status,)*
                }
            }

            /// When the code is returned (docs/server.md).
            pub fn description(self) -> &'static str {
                match self {
                    $(Code::$variant => $when,)*
                }
            }
        }
    };
}

codes! {
    InvalidJson = "invalid_json", BAD_REQUEST,
        "malformed JSON, or a field of the wrong type";
    InvalidRequest = "invalid_request", BAD_REQUEST,
        "a value Basalt cannot honour (`n` > 1, empty `messages`, an unknown role, token-array embedding input, an empty input string, an unknown `encoding_format`)";
    ContextLengthExceeded = "context_length_exceeded", BAD_REQUEST,
        "the prompt, or the prompt plus `max_tokens`, does not fit the model's context window (8,192 tokens for SmolLM2); the message gives the window, the prompt's tokens and what fits";
    MaxTokensOverLimit = "max_tokens_over_limit", BAD_REQUEST,
        "`max_tokens` above `--max-completion-tokens`; the message names the limit";
    InvalidGuardrail = "invalid_guardrail", BAD_REQUEST,
        "a guardrail configuration that does not validate; the message names the field";
    Unauthenticated = "unauthenticated", UNAUTHORIZED,
        "no API key, or one that is unknown, revoked or expired (`WWW-Authenticate: Bearer`)";
    InvalidSignature = "invalid_signature", FORBIDDEN,
        "an AWS SigV4 request (`keys create --aws`) whose signature does not match, or whose `Authorization` header cannot be read; the message says which";
    SignatureExpired = "signature_expired", FORBIDDEN,
        "an AWS SigV4 request dated more than 5 minutes from the server's clock";
    AccessDenied = "access_denied", FORBIDDEN,
        "the key's principal may not do the route's action on its resource; the message says why";
    GuardrailBound = "guardrail_bound", FORBIDDEN,
        "the key is bound to a guardrail and the request names another one";
    ModelNotFound = "model_not_found", NOT_FOUND,
        "no model of that id (`GET /v1/models` lists them)";
    KnowledgeBaseNotFound = "knowledge_base_not_found", NOT_FOUND,
        "no knowledge base of that name in the caller's tenant";
    DocumentNotFound = "document_not_found", NOT_FOUND,
        "no document of that id the caller may read";
    JobNotFound = "job_not_found", NOT_FOUND,
        "no ingestion job of that id";
    SessionNotFound = "session_not_found", NOT_FOUND,
        "no conversation session of that id (sessions expire)";
    GuardrailNotFound = "guardrail_not_found", NOT_FOUND,
        "no guardrail of that name (or version)";
    NotFound = "not_found", NOT_FOUND,
        "no route at that path";
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED,
        "the route does not take that method, e.g. `GET /v1/chat/completions`";
    Cancelled = "cancelled", REQUEST_TIMEOUT,
        "the client went away and the answer was stopped";
    KnowledgeBaseExists = "knowledge_base_exists", CONFLICT,
        "the knowledge base name is taken";
    KnowledgeBaseBusy = "knowledge_base_busy", CONFLICT,
        "an ingestion job for the knowledge base is queued or running (`Retry-After`)";
    BodyTooLarge = "body_too_large", PAYLOAD_TOO_LARGE,
        "the body is over `--body-limit` (JSON) or `--upload-limit` (uploads)";
    FileTooLarge = "file_too_large", PAYLOAD_TOO_LARGE,
        "one uploaded file is over 100 MB";
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE,
        "a JSON route without `Content-Type: application/json`, or an upload that is not `multipart/form-data`";
    UnsupportedFileType = "unsupported_file_type", UNSUPPORTED_MEDIA_TYPE,
        "an uploaded file of a type Basalt does not read";
    QueueFull = "queue_full", TOO_MANY_REQUESTS,
        "more than `--max-queue` requests are waiting (`Retry-After`)";
    TooManyConcurrentRequests = "too_many_concurrent_requests", TOO_MANY_REQUESTS,
        "the key already has `--max-requests-per-key` requests running or waiting (`Retry-After`)";
    RateLimited = "rate_limited", TOO_MANY_REQUESTS,
        "the key is over its `--rate-limit` (`Retry-After`)";
    InternalError = "internal_error", INTERNAL_SERVER_ERROR,
        "a fault of the server's; the message says what failed, and the log has more";
    ModelServerUnavailable = "model_server_unavailable", BAD_GATEWAY,
        "a chat model served elsewhere (`basalt models add`) refused the request or did not answer after its retries; the message says which model and why";
    QueueTimeout = "queue_timeout", SERVICE_UNAVAILABLE,
        "no turn for the request within 60 s (`Retry-After`)";
    Busy = "busy", SERVICE_UNAVAILABLE,
        "the knowledge base's index is being written by another process (`Retry-After`)";
    NotReady = "not_ready", SERVICE_UNAVAILABLE,
        "the data directory is unreadable";
    AuditUnavailable = "audit_unavailable", SERVICE_UNAVAILABLE,
        "the audit log cannot be written, so nothing that must be audited is done";
    DatabaseUnavailable = "database_unavailable", SERVICE_UNAVAILABLE,
        "PostgreSQL (`--database`) cannot be reached, refused a query, or is not migrated (`Retry-After`); the message says which";
    ObjectStoreUnavailable = "object_store_unavailable", SERVICE_UNAVAILABLE,
        "the S3-compatible store (`--objects`) cannot be reached or refused the request (`Retry-After`); the message says which";
    SessionStoreUnavailable = "session_store_unavailable", SERVICE_UNAVAILABLE,
        "the store that keeps conversation sessions cannot be reached (`Retry-After`)";
    ClassifierUnavailable = "classifier_unavailable", SERVICE_UNAVAILABLE,
        "the installed prompt-attack classifier is damaged; the message says what to do";
    Timeout = "timeout", GATEWAY_TIMEOUT,
        "the response did not begin within `--request-timeout` (a slow answer, a body that never arrives; streams end with the same error as their last event)";
}

impl Code {
    /// The exception Bedrock's API returns for this error, with its status: what botocore
    /// turns into the exception class (`client.exceptions.ValidationException`, …).
    pub fn bedrock(self) -> (&'static str, StatusCode) {
        use Code as C;
        let (name, status) = match self {
            C::Unauthenticated => ("UnrecognizedClientException", 403),
            C::InvalidSignature | C::SignatureExpired => ("InvalidSignatureException", 403),
            C::AccessDenied | C::GuardrailBound => ("AccessDeniedException", 403),
            C::ModelNotFound
            | C::KnowledgeBaseNotFound
            | C::DocumentNotFound
            | C::JobNotFound
            | C::SessionNotFound
            | C::GuardrailNotFound
            | C::NotFound => ("ResourceNotFoundException", 404),
            C::KnowledgeBaseExists | C::KnowledgeBaseBusy => ("ConflictException", 409),
            C::QueueFull | C::TooManyConcurrentRequests | C::RateLimited => {
                ("ThrottlingException", 429)
            }
            C::Cancelled | C::Timeout => ("ModelTimeoutException", 408),
            C::InternalError => ("InternalServerException", 500),
            C::ModelServerUnavailable
            | C::QueueTimeout
            | C::Busy
            | C::NotReady
            | C::AuditUnavailable
            | C::SessionStoreUnavailable
            | C::DatabaseUnavailable
            | C::ObjectStoreUnavailable
            | C::ClassifierUnavailable => ("ServiceUnavailableException", 503),
            C::InvalidJson
            | C::InvalidRequest
            | C::ContextLengthExceeded
            | C::MaxTokensOverLimit
            | C::InvalidGuardrail
            | C::MethodNotAllowed
            | C::BodyTooLarge
            | C::FileTooLarge
            | C::UnsupportedMediaType
            | C::UnsupportedFileType => ("ValidationException", 400),
        };
        (
            name,
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        )
    }

    /// OpenAI's `type` field, derived from the status.
    pub fn kind(self) -> &'static str {
        match self.status().as_u16() {
            400 | 404 | 405 | 409 | 413 | 415 | 422 => "invalid_request_error",
            401 | 403 => "authentication_error",
            429 => "rate_limit_error",
            _ => "server_error",
        }
    }

    /// The Markdown table of every code, as docs/server.md shows it.
    pub fn table() -> String {
        let mut table = String::from("| status | code | type | when |\n|---|---|---|---|\n");
        for code in Code::ALL {
            table.push_str(&format!(
                "| {} | `{}` | `{}` | {} |\n",
                code.status().as_u16(),
                code.name(),
                code.kind(),
                code.description()
            ));
        }
        table
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, message)
    }

    /// `504 timeout`: no answer within the request timeout.
    pub fn timed_out(timeout: std::time::Duration) -> Self {
        Self::new(
            Code::Timeout,
            format!(
                "no answer within {} s (the server's --request-timeout)",
                timeout.as_secs()
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::InternalError, message)
    }

    /// PostgreSQL (`--database`) cannot be reached or refused a query: 503, retry in 5 s.
    pub fn database_unavailable(message: impl Into<String>) -> Self {
        Self::retry_later(Code::DatabaseUnavailable, message)
    }

    /// An error worth retrying soon: `Retry-After: 5`.
    pub(crate) fn retry_later(code: Code, message: impl Into<String>) -> Self {
        let mut error = Self::new(code, message);
        error.retry_after = Some(5);
        error
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The JSON body: `{"error": {"code", "message", "type"}}`.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.name().to_owned(),
                message: self.message.clone(),
                kind: self.code.kind().to_owned(),
            },
        }
    }
}

/// Every error response's body.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `invalid_request`, `knowledge_base_not_found`, …
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// OpenAI's error type: `invalid_request_error`, `rate_limit_error`, …
    #[serde(rename = "type")]
    pub kind: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        // For the layer that answers Bedrock's routes in Bedrock's error shape.
        response.extensions_mut().insert(self.clone());
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<basalt_kb::KbError> for ApiError {
    fn from(error: basalt_kb::KbError) -> Self {
        use basalt_kb::KbError;
        match &error {
            KbError::NotFound { .. } => Self::new(Code::KnowledgeBaseNotFound, error.to_string()),
            KbError::BadName { .. } | KbError::BadSettingsValue { .. } => {
                Self::invalid(error.to_string())
            }
            KbError::Exists { .. } => Self::new(Code::KnowledgeBaseExists, error.to_string()),
            KbError::Database { .. } => Self::database_unavailable(error.to_string()),
            KbError::Objects(_) => {
                Self::retry_later(Code::ObjectStoreUnavailable, error.to_string())
            }
            KbError::Index(basalt_index::IndexError::Locked { .. }) => {
                Self::retry_later(Code::Busy, error.to_string())
            }
            _ => Self::internal(error.to_string()),
        }
    }
}

impl From<basalt_model::ModelError> for ApiError {
    fn from(error: basalt_model::ModelError) -> Self {
        match error {
            basalt_model::ModelError::InvalidRequest(message) => Self::invalid(message),
            basalt_model::ModelError::PromptTooLong { .. }
            | basalt_model::ModelError::CompletionTooLong { .. } => {
                Self::new(Code::ContextLengthExceeded, error.to_string())
            }
            basalt_model::ModelError::RegistryUnavailable(_) => {
                Self::database_unavailable(error.to_string())
            }
            basalt_model::ModelError::Remote { .. } => {
                Self::new(Code::ModelServerUnavailable, error.to_string())
            }
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<basalt_answer::AnswerError> for ApiError {
    fn from(error: basalt_answer::AnswerError) -> Self {
        use basalt_answer::AnswerError;
        match error {
            AnswerError::EmptyQuestion | AnswerError::ContextTooSmall { .. } => {
                Self::invalid(error.to_string())
            }
            AnswerError::Cancelled => Self::new(Code::Cancelled, "the request was cancelled"),
            AnswerError::Kb(error) => error.into(),
            AnswerError::Model(error) => error.into(),
        }
    }
}

impl From<basalt_answer::SessionError> for ApiError {
    fn from(error: basalt_answer::SessionError) -> Self {
        Self::retry_later(Code::SessionStoreUnavailable, error.to_string())
    }
}

impl From<basalt_security::SecurityError> for ApiError {
    fn from(error: basalt_security::SecurityError) -> Self {
        match error {
            basalt_security::SecurityError::Unavailable { .. } => {
                Self::database_unavailable(error.to_string())
            }
            other => Self::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/server.md's table of errors is rendered from [`Code`], so neither can drift.
    #[test]
    fn the_docs_list_every_error_code() {
        let docs = include_str!("../../../docs/server.md");
        let table = Code::table();
        assert!(
            docs.contains(&table),
            "docs/server.md's table of errors differs from Code::table():\n{table}"
        );
        let mut names: Vec<&str> = Code::ALL.iter().map(|code| code.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len(), "a name used twice");
        assert!(Code::ALL.iter().all(|code| {
            let status = code.status().as_u16();
            (400..600).contains(&status) && !code.description().is_empty()
        }));
    }
}
