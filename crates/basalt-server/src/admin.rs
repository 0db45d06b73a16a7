//! The audit trail over HTTP (`audit:Read`): search its records and verify its chain.

use axum::Json;
use axum::extract::{Query, State};
use basalt_security::audit::{Outcome, Query as RecordQuery, Record, Verification};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::{AppState, blocking};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Only this principal's records.
    #[serde(default)]
    principal: Option<String>,
    /// An action or a pattern like `kb:*`.
    #[serde(default)]
    action: Option<String>,
    /// `allowed`, `denied` or `unauthenticated`.
    #[serde(default)]
    outcome: Option<String>,
    /// Records at or after this RFC 3339 time.
    #[serde(default)]
    since: Option<String>,
    /// The newest this many (default 100, at most 10,000).
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct AuditRecords {
    /// Oldest first.
    #[schemars(with = "Vec<serde_json::Value>")]
    records: Vec<Record>,
}

pub(crate) async fn search_audit(
    State(state): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditRecords>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::invalid("limit must be between 1 and 10000"));
    }
    let outcome: Option<Outcome> = query
        .outcome
        .as_deref()
        .map(|outcome| serde_json::from_value(serde_json::Value::String(outcome.into())))
        .transpose()
        .map_err(|_| ApiError::invalid("outcome must be allowed, denied or unauthenticated"))?;
    let query = RecordQuery {
        principal: query.principal,
        action: query.action,
        outcome,
        since: query.since,
    };
    let root = state.data_dir.root().to_owned();
    let records = blocking(move || basalt_security::audit::search(&root, &query, limit)).await?;
    Ok(Json(AuditRecords { records }))
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct AuditVerification {
    #[serde(flatten)]
    #[schemars(with = "serde_json::Value")]
    verification: Verification,
    /// True when the whole chain checks out.
    intact: bool,
}

pub(crate) async fn verify_audit(
    State(state): State<AppState>,
) -> Result<Json<AuditVerification>, ApiError> {
    let root = state.data_dir.root().to_owned();
    let verification = blocking(move || basalt_security::audit::verify(&root)).await?;
    Ok(Json(AuditVerification {
        intact: verification.first_bad.is_none(),
        verification,
    }))
}
