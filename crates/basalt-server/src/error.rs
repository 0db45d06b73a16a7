//! Every error the server returns: JSON `{"error": {"code", "message", "type"}}` with the right
//! status, never an HTML page or an empty 500.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable: `invalid_request`, `model_not_found`, `queue_full`, …
    pub code: &'static str,
    pub message: String,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// `504 timeout`: no answer within the request timeout.
    pub fn timed_out(timeout: std::time::Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "no answer within {} s (the server's --request-timeout)",
                timeout.as_secs()
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// The JSON body: `{"error": {"code", "message", "type"}}`.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                kind: self.kind().to_owned(),
            },
        }
    }

    /// OpenAI's `type` field, derived from the status.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 405 | 409 | 413 | 415 | 422 => "invalid_request_error",
            401 | 403 => "authentication_error",
            429 => "rate_limit_error",
            _ => "server_error",
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
        let mut response = (self.status, Json(self.body())).into_response();
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
            KbError::NotFound { .. } => {
                Self::not_found("knowledge_base_not_found", error.to_string())
            }
            KbError::BadName { .. } | KbError::BadSettingsValue { .. } => {
                Self::invalid(error.to_string())
            }
            KbError::Exists { .. } => Self::new(
                StatusCode::CONFLICT,
                "knowledge_base_exists",
                error.to_string(),
            ),
            KbError::Index(basalt_index::IndexError::Locked { .. }) => {
                let mut locked =
                    Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", error.to_string());
                locked.retry_after = Some(5);
                locked
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
            | basalt_model::ModelError::CompletionTooLong { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "context_length_exceeded",
                error.to_string(),
            ),
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
            AnswerError::Cancelled => Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "cancelled",
                "the request was cancelled",
            ),
            AnswerError::Kb(error) => error.into(),
            AnswerError::Model(error) => error.into(),
        }
    }
}

impl From<basalt_security::SecurityError> for ApiError {
    fn from(error: basalt_security::SecurityError) -> Self {
        Self::internal(error.to_string())
    }
}
