//! Authentication, authorization and the audit record of every request, in one middleware for
//! every route: the route table gives each route its action and resource, so no handler can
//! forget the check.
//!
//! A request presents `Authorization: Bearer bsk_…` (what the OpenAI SDK sends, and boto3 with
//! `AWS_BEARER_TOKEN_BEDROCK`), `X-Api-Key: bsk_…`, or an AWS SigV4 signature made with an
//! access key from `basalt keys create --aws` (boto3, the AWS CLI). The key names a principal; the principal's policies (its own and its
//! groups') decide whether it may do the route's action on the route's resource,
//! `basalt:<tenant>:<path>`. No key or a bad key is `401`, a denied action `403`; both are
//! audited, as is every allowed request with its final status.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use basalt_security::audit::{AuditLog, AuditTrail, Event, Outcome};
use basalt_security::{Directory, DirectoryFile, Identities, Identity, sigv4};

use crate::AppState;
use crate::error::{ApiError, Code};
use crate::ratelimit::{RateLimit, RateLimiter};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Health checks and the API description: no key.
    Public,
    /// A key whose principal may do `action` on the resource `path` (path parameters filled
    /// in, like `kb/{kb}`).
    Action {
        action: &'static str,
        resource: &'static str,
    },
    /// Any valid key: for the caller's questions about itself (`GET /v1/me`). Audited under
    /// `action` like every other request, but no policy is consulted.
    Caller { action: &'static str },
}

/// How the server authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Every route but the public ones needs a valid API key.
    #[default]
    Keys,
    /// No key needed: every request acts as the principal `local-demo` with every permission.
    /// Only allowed when listening on a loopback address.
    LocalDemo,
}

/// The principal of requests in [`AuthMode::LocalDemo`].
pub const DEMO_PRINCIPAL: &str = "local-demo";

/// The caller of a request, for handlers that check more than the route's own action (a
/// `kb:NAME` chat checks `kb:Answer` on that knowledge base) or own what they create.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) principal: String,
    pub(crate) tenant: String,
    pub(crate) groups: Vec<String>,
    /// Present in key mode.
    pub(crate) key_id: Option<String>,
    pub(crate) request_id: String,
    /// The guardrail the caller's key is bound to.
    pub(crate) guardrail: Option<String>,
    /// The chat model the caller's key answers with when a request names none.
    pub(crate) model: Option<String>,
}

impl Caller {
    /// Whose turn a request waits for in the scheduler: its API key (the principal, without
    /// keys), so one key's requests are served in turn with everyone else's.
    pub(crate) fn queue_key(&self) -> &str {
        self.key_id.as_deref().unwrap_or(&self.principal)
    }

    /// Whose documents the caller may read: `None` (everything) only in local demo mode, where
    /// the one principal holds every permission.
    pub(crate) fn reader(&self) -> Option<basalt_index::Reader> {
        self.key_id.as_ref().map(|_| {
            basalt_index::Reader::new(&self.principal, self.groups.iter().map(String::as_str))
        })
    }
}

/// The identity directory, the audit trail, and each route's access.
#[derive(Debug)]
pub(crate) struct Security {
    mode: AuthMode,
    identities: Box<dyn Identities>,
    pub(crate) audit: Box<dyn AuditTrail>,
    routes: HashMap<(Method, String), Access>,
    rate_limiter: Option<RateLimiter>,
    /// Largest body a SigV4-signed request may have: its body is read whole to check the
    /// signature's payload hash.
    signed_body_limit: usize,
}

impl Security {
    /// Security over `data_dir`: its identity directory and audit trail — the database's
    /// when it has one (replicas share them).
    pub(crate) fn open(
        data_dir: &basalt_kb::DataDir,
        mode: AuthMode,
        routes: HashMap<(Method, String), Access>,
        rate_limit: Option<RateLimit>,
        signed_body_limit: usize,
    ) -> basalt_security::Result<Self> {
        let (identities, audit): (Box<dyn Identities>, Box<dyn AuditTrail>) =
            match data_dir.database_connection() {
                Some(connection) => (
                    Box::new(basalt_shared::PgIdentities::new(connection.clone())),
                    Box::new(basalt_shared::PgAudit::new(connection)),
                ),
                None => (
                    Box::new(DirectoryFile::new(data_dir.root())),
                    Box::new(AuditLog::open(data_dir.root())),
                ),
            };
        // A damaged directory is said at start, not at the first request.
        identities.current()?;
        Ok(Security {
            mode,
            identities,
            audit,
            routes,
            // With a database the buckets are its, so replicas enforce one rate together.
            rate_limiter: rate_limit.map(|limit| {
                RateLimiter::new(
                    limit,
                    data_dir
                        .database_connection()
                        .map(basalt_shared::PgRateLimits::new),
                )
            }),
            signed_body_limit,
        })
    }

    /// The directory as stored now (a key or policy changed by another process applies at
    /// once).
    fn directory(&self) -> Result<Arc<Directory>, ApiError> {
        self.identities.current().map_err(|error| {
            ApiError::internal(format!("cannot read the identity directory: {error}"))
        })
    }

    /// The reader a principal is now (its current groups; none when it is gone).
    pub(crate) fn reader_of(&self, principal: &str) -> basalt_index::Reader {
        let groups: Vec<String> = self
            .directory()
            .ok()
            .and_then(|directory| {
                directory
                    .principals
                    .get(principal)
                    .map(|found| found.groups.iter().cloned().collect())
            })
            .unwrap_or_default();
        basalt_index::Reader::new(principal, groups.iter().map(String::as_str))
    }

    /// Checks `action` on `resource` (a path like `kb/handbook`) for `caller`; a denial is
    /// audited and returned as `403`.
    pub(crate) fn require(
        &self,
        caller: &Caller,
        action: &str,
        path: &str,
    ) -> Result<(), ApiError> {
        if self.mode == AuthMode::LocalDemo {
            return Ok(());
        }
        let resource = basalt_security::resource_name(&caller.tenant, path);
        let decision = self
            .directory()?
            .authorize(&caller.principal, action, &resource);
        if decision.allowed {
            return Ok(());
        }
        self.record(Event {
            request_id: caller.request_id.clone(),
            principal: Some(caller.principal.clone()),
            key_id: caller.key_id.clone(),
            action: action.to_owned(),
            resource: resource.clone(),
            outcome: Some(Outcome::Denied),
            status: Some(403),
            detail: Some(decision.explain()),
        });
        Err(ApiError::new(
            Code::AccessDenied,
            format!(
                "{} may not {action} on {resource}: {}",
                caller.principal,
                decision.explain()
            ),
        ))
    }

    /// The actions of `candidates` (each with the resource path it is checked on, `{kb}` filled
    /// with `kb`) that `caller` may do, without recording anything: what a client uses to offer
    /// only what a key may do. Each request is still checked when made.
    pub(crate) fn permitted(
        &self,
        caller: &Caller,
        candidates: &[(&'static str, &str)],
        kb: &str,
    ) -> Vec<&'static str> {
        let directory = match self.mode {
            AuthMode::LocalDemo => None,
            AuthMode::Keys => match self.directory() {
                Ok(directory) => Some(directory),
                Err(_) => return Vec::new(),
            },
        };
        candidates
            .iter()
            .filter(|(action, path)| {
                directory.as_ref().is_none_or(|directory| {
                    let path = path.replace("{kb}", kb);
                    let resource = basalt_security::resource_name(&caller.tenant, &path);
                    directory
                        .authorize(&caller.principal, action, &resource)
                        .allowed
                })
            })
            .map(|(action, _)| *action)
            .collect()
    }

    pub(crate) fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Appends to the audit log; false (and an error in the server log) when it cannot.
    pub(crate) fn record(&self, event: Event) -> bool {
        match self.audit.append(event) {
            Ok(_) => true,
            Err(error) => {
                tracing::error!(%error, "cannot write the audit log");
                false
            }
        }
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        return Some(
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .unwrap_or(value)
                .trim(),
        );
    }
    headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

fn unauthenticated(message: &str) -> Response {
    let mut response = ApiError::new(Code::Unauthenticated, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"basalt\""),
    );
    response
}

/// The middleware of every matched route.
pub(crate) async fn guard(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let security = state.security.clone();
    let request_id = basalt_core::id::new_id("req-", 8);
    let path = matched
        .as_ref()
        .map(MatchedPath::as_str)
        .unwrap_or_default();
    // A route without an entry is refused: the table is the only way in. HEAD is answered by
    // the GET handler, so it needs what GET needs.
    let method = if request.method() == Method::HEAD {
        Method::GET
    } else {
        request.method().clone()
    };
    let access = security.routes.get(&(method, path.to_owned())).copied();
    let (action, template) = match access {
        Some(Access::Public) => return with_request_id(next.run(request).await, &request_id),
        Some(Access::Action { action, resource }) => (action, resource),
        Some(Access::Caller { action }) => (action, "caller"),
        None => {
            return ApiError::new(Code::AccessDenied, "this route has no access rule")
                .into_response();
        }
    };
    let values: HashMap<&str, &str> = params
        .as_ref()
        .map(|params| params.iter().collect())
        .unwrap_or_default();
    let resource_path = fill(template, &values);

    let caller = match security.mode {
        AuthMode::LocalDemo => Caller {
            principal: DEMO_PRINCIPAL.to_owned(),
            tenant: basalt_security::DEFAULT_TENANT.to_owned(),
            groups: Vec::new(),
            key_id: None,
            request_id: request_id.clone(),
            guardrail: None,
            model: None,
        },
        AuthMode::Keys => {
            let directory = match security.directory() {
                Ok(directory) => directory,
                Err(error) => return error.into_response(),
            };
            let signed = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(sigv4::Authorization::parse);
            let identity = match signed {
                Some(authorization) => {
                    let (checked, rebuilt) =
                        check_signature(&state, &directory, authorization, request).await;
                    request = rebuilt;
                    checked
                }
                None => match presented_key(request.headers()) {
                    None => Err((None, "no_key", None)),
                    Some(key) => directory
                        .authenticate(key, &basalt_core::clock::now_rfc3339())
                        .map_err(|(reason, key_id)| (key_id, reason.as_str(), None)),
                },
            };
            match identity {
                Ok(Identity {
                    principal,
                    tenant,
                    groups,
                    key_id,
                    guardrail,
                    model,
                }) => Caller {
                    principal,
                    tenant,
                    groups: groups.into_iter().collect(),
                    key_id: Some(key_id),
                    request_id: request_id.clone(),
                    guardrail,
                    model,
                },
                Err((key_id, reason, error)) => {
                    let resource = basalt_security::resource_name("-", &resource_path);
                    security.record(Event {
                        request_id: request_id.clone(),
                        principal: None,
                        key_id,
                        action: action.to_owned(),
                        resource,
                        outcome: Some(Outcome::Unauthenticated),
                        status: Some(401),
                        detail: Some(reason.to_owned()),
                    });
                    if let Some(error) = error {
                        return with_request_id(error.into_response(), &request_id);
                    }
                    let message = if directory.keys.is_empty() {
                        "this server has no API keys yet: create one with `basalt keys create --principal admin --policy AdministratorAccess` and send it as `Authorization: Bearer <key>`"
                    } else if reason == "no_key" {
                        "send an API key as `Authorization: Bearer <key>` (or `X-Api-Key`)"
                    } else {
                        "the API key is not valid (unknown, revoked or expired)"
                    };
                    return with_request_id(unauthenticated(message), &request_id);
                }
            }
        }
    };
    if let Some(limiter) = &security.rate_limiter {
        let bucket = caller.key_id.as_deref().unwrap_or(&caller.principal);
        let taken = match limiter.check(bucket, std::time::Instant::now()) {
            Ok(taken) => taken,
            Err(error) => return with_request_id(error.into_response(), &request_id),
        };
        if let Err(wait) = taken {
            security.record(Event {
                request_id: request_id.clone(),
                principal: Some(caller.principal.clone()),
                key_id: caller.key_id.clone(),
                action: action.to_owned(),
                resource: basalt_security::resource_name(&caller.tenant, &resource_path),
                outcome: Some(Outcome::Denied),
                status: Some(429),
                detail: Some("rate_limited".into()),
            });
            let mut error = ApiError::new(
                Code::RateLimited,
                format!(
                    "this key sent more requests than its rate limit allows; retry in {wait} s"
                ),
            );
            error.retry_after = Some(wait);
            return with_request_id(error.into_response(), &request_id);
        }
    }
    let needs_policy = !matches!(access, Some(Access::Caller { .. }));
    if needs_policy && let Err(error) = security.require(&caller, action, &resource_path) {
        return with_request_id(error.into_response(), &request_id);
    }
    // Recorded before the work runs, so nothing happens unaccounted for: if the log cannot be
    // written, the request is refused.
    let recorded = security.record(Event {
        request_id: request_id.clone(),
        principal: Some(caller.principal.clone()),
        key_id: caller.key_id.clone(),
        action: action.to_owned(),
        resource: basalt_security::resource_name(&caller.tenant, &resource_path),
        outcome: Some(Outcome::Allowed),
        status: None,
        detail: None,
    });
    if !recorded {
        return with_request_id(
            ApiError::new(
                Code::AuditUnavailable,
                "the audit log cannot be written, so the request is refused; see the server log",
            )
            .into_response(),
            &request_id,
        );
    }
    request.extensions_mut().insert(caller);
    with_request_id(next.run(request).await, &request_id)
}

/// Why a request was not authenticated: the key id (when known), the reason for the audit
/// record, and the error to answer with (`None`: the generic 401).
type Refusal = (Option<String>, &'static str, Option<ApiError>);

/// Checks a SigV4-signed request: finds the access key and unseals its secret (before any of
/// the body is read, so a request without a valid key costs nothing), reads the body (at most
/// the JSON body limit) to hash it, and compares signatures. Returns the request with its body
/// restored.
async fn check_signature(
    state: &AppState,
    directory: &Directory,
    authorization: Result<sigv4::Authorization, sigv4::Refusal>,
    request: Request,
) -> (Result<Identity, Refusal>, Request) {
    let (authorization, identity, secret) = match identify(state, directory, authorization) {
        Ok(found) => found,
        Err(refusal) => return (Err(refusal), request),
    };
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.security.signed_body_limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let error = ApiError::new(
                Code::BodyTooLarge,
                format!(
                    "a SigV4-signed request's body is read whole to check its signature, and \
                     this one is over the server's limit of {} bytes (--body-limit)",
                    state.security.signed_body_limit
                ),
            );
            let refusal = (Some(identity.key_id), "body_too_large", Some(error));
            return (
                Err(refusal),
                Request::from_parts(parts, axum::body::Body::empty()),
            );
        }
    };
    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    let payload = basalt_core::hex::sha256(&bytes);
    let received = sigv4::Received {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        headers: &headers,
        payload_sha256: &payload,
    };
    let checked = verified(&authorization, &received, secret.expose()).map(|()| identity);
    drop(headers);
    (
        checked,
        Request::from_parts(parts, axum::body::Body::from(bytes)),
    )
}

fn invalid_signature<T>(
    key_id: Option<String>,
    reason: &'static str,
    code: Code,
    message: String,
) -> Result<T, Refusal> {
    Err((key_id, reason, Some(ApiError::new(code, message))))
}

/// The signing key's identity and secret, from the `Authorization` header alone.
fn identify(
    state: &AppState,
    directory: &Directory,
    authorization: Result<sigv4::Authorization, sigv4::Refusal>,
) -> Result<(sigv4::Authorization, Identity, basalt_security::Secret), Refusal> {
    let authorization = match authorization {
        Ok(authorization) => authorization,
        Err(refusal) => {
            let message = match refusal {
                sigv4::Refusal::Malformed(message) => message,
                _ => "the Authorization header cannot be read as AWS4-HMAC-SHA256".into(),
            };
            return invalid_signature(None, "malformed_signature", Code::InvalidSignature, message);
        }
    };
    if authorization.service != "bedrock" {
        return invalid_signature(
            Some(authorization.access_key_id.clone()),
            "wrong_service",
            Code::InvalidSignature,
            format!(
                "the credential is scoped to service {:?}; Basalt's AWS-compatible routes are \
                 signed for service \"bedrock\" (bedrock-runtime and bedrock-agent-runtime clients do \
                 this)",
                authorization.service
            ),
        );
    }
    let (identity, secret) = directory
        .authenticate_aws(
            &authorization.access_key_id,
            &basalt_core::clock::now_rfc3339(),
            state.data_dir.master_key(),
        )
        .map_err(|(reason, key_id)| {
            let message = format!(
                "The security token included in the request is invalid: access key {:?} is \
                 not a valid Basalt AWS key (unknown, revoked, expired, or sealed by another \
                 master key); make one with `basalt keys create --aws`",
                authorization.access_key_id
            );
            (
                key_id,
                reason.as_str(),
                Some(ApiError::new(Code::Unauthenticated, message)),
            )
        })?;
    Ok((authorization, identity, secret))
}

/// Whether `received` carries the signature `secret` gives it, within the clock window.
fn verified(
    authorization: &sigv4::Authorization,
    received: &sigv4::Received<'_>,
    secret: &str,
) -> Result<(), Refusal> {
    let key_id = Some(authorization.access_key_id.clone());
    match sigv4::verify(authorization, received, secret, sigv4::now_unix()) {
        Ok(()) => Ok(()),
        Err(sigv4::Refusal::Expired { request }) => invalid_signature(
            key_id,
            "signature_expired",
            Code::SignatureExpired,
            format!(
                "Signature expired: {request} is more than {} s from the server's time {}; \
                 check the client's clock",
                sigv4::MAX_SKEW_SECONDS,
                basalt_core::clock::now_rfc3339()
            ),
        ),
        Err(sigv4::Refusal::Malformed(message)) => invalid_signature(
            key_id,
            "malformed_signature",
            Code::InvalidSignature,
            message,
        ),
        Err(sigv4::Refusal::WrongSignature) => invalid_signature(
            key_id,
            "wrong_signature",
            Code::InvalidSignature,
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS secret access key and signing method."
                .into(),
        ),
    }
}

/// The resource path of a template like `kb/{kb}/document/{id}`, in one pass, so a value that
/// itself contains `{id}` is never substituted again.
fn fill(template: &str, values: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        out.push_str(values.get(name).copied().unwrap_or("*"));
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_templates_are_filled_once() {
        let values = HashMap::from([("kb", "{id}"), ("id", "x")]);
        assert_eq!(fill("kb/{kb}/document/{id}", &values), "kb/{id}/document/x");
        assert_eq!(fill("kb/*", &values), "kb/*");
        assert_eq!(fill("audit", &HashMap::new()), "audit");
        assert_eq!(
            fill("kb/{kb}", &HashMap::new()),
            "kb/*",
            "a missing value is no name"
        );
    }
}
