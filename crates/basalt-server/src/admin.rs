//! The caller's own identity (`GET /v1/me`), and the audit trail over HTTP (`audit:Read`):
//! search its records and verify its chain.

use axum::extract::{Query, State};
use axum::{Extension, Json};
use basalt_security::audit::{Outcome, Query as RecordQuery, Record, Verification};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::{AuthMode, Caller};
use crate::error::{ApiError, Code};
use crate::{AppState, blocking};

/// Who a key is, and what it may do across the tenant.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Me {
    principal: String,
    tenant: String,
    groups: Vec<String>,
    /// `keys`, or `local_demo` when the server runs without keys (loopback only).
    auth: &'static str,
    /// The guardrail the key is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    guardrail: Option<String>,
    /// The model plain chat uses (`POST /v1/chat/completions`), when the key may chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_model: Option<String>,
    /// Tenant-wide actions its policies allow (`kb:List`, `kb:Create`, `model:Chat`, …); what
    /// it may do with each knowledge base is in that knowledge base's `actions`.
    actions: Vec<&'static str>,
}

/// The tenant-wide actions `GET /v1/me` reports, each with the resource it is checked on.
const TENANT_ACTIONS: [(&str, &str); 9] = [
    ("kb:List", "kb/*"),
    ("kb:Create", "kb/*"),
    ("kb:ListJobs", "job/*"),
    ("model:Chat", "model/*"),
    ("session:Create", "session/*"),
    ("session:List", "session/*"),
    ("guardrail:List", "guardrail/*"),
    ("guardrail:Create", "guardrail/*"),
    ("audit:Read", "audit"),
];

pub(crate) async fn me(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<Me> {
    let actions = state.security.permitted(&caller, &TENANT_ACTIONS, "");
    Json(Me {
        chat_model: actions
            .contains(&"model:Chat")
            .then(|| state.chat_model.clone()),
        auth: match state.security.mode() {
            AuthMode::Keys => "keys",
            AuthMode::LocalDemo => "local_demo",
        },
        principal: caller.principal,
        tenant: caller.tenant,
        groups: caller.groups,
        guardrail: caller.guardrail,
        actions,
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Only this principal's records.
    #[serde(default)]
    principal: Option<String>,
    /// An action or a pattern like `kb:*`.
    #[serde(default)]
    action: Option<String>,
    /// `allowed`, `denied`, `unauthenticated` or `blocked` (by a guardrail).
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

/// The audit records a caller may read: its own tenant's; the default tenant (the operator's)
/// also reads the failed authentications, which belong to no tenant.
fn tenant_prefixes(caller: &Caller) -> Vec<String> {
    let mut prefixes = vec![basalt_security::resource_name(&caller.tenant, "")];
    if caller.tenant == basalt_security::DEFAULT_TENANT {
        prefixes.push(basalt_security::resource_name("-", ""));
    }
    prefixes
}

pub(crate) async fn search_audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
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
        .map_err(|_| {
            ApiError::invalid("outcome must be allowed, denied, unauthenticated or blocked")
        })?;
    let query = RecordQuery {
        principal: query.principal,
        action: query.action,
        outcome,
        since: query.since,
        resource_prefixes: tenant_prefixes(&caller),
    };
    let records = blocking(move || state.security.audit.search(&query, limit)).await?;
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

/// Verifying reads the whole chain, every tenant's records, so only the default tenant (the
/// operator's) may.
pub(crate) async fn verify_audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<AuditVerification>, ApiError> {
    if caller.tenant != basalt_security::DEFAULT_TENANT {
        return Err(ApiError::new(
            Code::AccessDenied,
            "the audit chain holds every tenant's records, so only principals of the default tenant verify it (`basalt audit verify` on the server)",
        ));
    }
    let verification = blocking(move || state.security.audit.verify()).await?;
    Ok(Json(AuditVerification {
        intact: verification.first_bad.is_none(),
        verification,
    }))
}
