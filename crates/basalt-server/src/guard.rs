//! Guardrails over HTTP: each tenant's configurations (create, list, get, delete), the
//! standalone check (`POST /v1/guardrails/{name}/apply`, like Bedrock's ApplyGuardrail), and
//! which guardrail a request runs through (`basalt_answer::GuardedTurn` runs it), loaded once
//! per version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use basalt_guard::config::Assessment;
use basalt_guard::{
    AttackClassifier, Checked, GuardModels, Guardrail, GuardrailConfig, GuardrailConfigs,
    GuardrailStore, Outcome, Source, StoreError,
};
use basalt_security::audit::Event;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::kbs::Deleted;
use crate::{ApiJson, AppState, blocking};

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::NotFound(_) | StoreError::NoVersion { .. } => {
                ApiError::new(Code::GuardrailNotFound, error.to_string())
            }
            StoreError::InvalidName(_) | StoreError::Invalid(_) => {
                ApiError::new(Code::InvalidGuardrail, error.to_string())
            }
            StoreError::InvalidReference(_) => ApiError::invalid(error.to_string()),
            StoreError::Io { .. } => ApiError::internal(error.to_string()),
            StoreError::Unavailable(_) => ApiError::database_unavailable(error.to_string()),
        }
    }
}

impl From<basalt_guard::config::ConfigError> for ApiError {
    fn from(error: basalt_guard::config::ConfigError) -> Self {
        ApiError::new(Code::InvalidGuardrail, error.to_string())
    }
}

/// The prompt-attack classifier, read from its file when first needed (the built-in one when
/// there is no file).
#[derive(Debug)]
pub(crate) struct ClassifierSlot {
    path: Option<std::path::PathBuf>,
    loaded: Mutex<Option<Arc<AttackClassifier>>>,
}

impl ClassifierSlot {
    pub(crate) fn new(path: Option<std::path::PathBuf>) -> Self {
        ClassifierSlot {
            path,
            loaded: Mutex::new(None),
        }
    }
}

impl AppState {
    /// The prompt-attack classifier: the trained one installed in the models directory, else
    /// the built-in one (a 503 that says what to do when the installed file is damaged).
    async fn attack_classifier(&self) -> Result<Arc<AttackClassifier>, ApiError> {
        let slot = self.attack_classifier.clone();
        if let Some(classifier) = crate::lock(&slot.loaded).as_ref() {
            return Ok(classifier.clone());
        }
        let unavailable = |message: String| {
            ApiError::new(
                Code::ClassifierUnavailable,
                format!("the prompt_attacks policy needs the prompt-attack classifier: {message}"),
            )
        };
        // Without a trained classifier at the path, the built-in one serves; a file that is
        // there but unreadable is an error to fix, not a reason to fall back silently.
        let classifier = match slot.path.clone() {
            None => AttackClassifier::builtin(),
            Some(path) => {
                blocking(move || Ok::<_, ApiError>(AttackClassifier::load_or_builtin(&path)))
                    .await?
                    .map_err(|error| unavailable(error.to_string()))?
            }
        };
        let classifier = Arc::new(classifier);
        *crate::lock(&slot.loaded) = Some(classifier.clone());
        Ok(classifier)
    }

    /// The guardrail configurations of the caller's tenant (the one place the server picks
    /// their store).
    fn guardrails(&self, caller: &Caller) -> Result<Box<dyn GuardrailConfigs>, ApiError> {
        let data = self.tenant_data(&caller.tenant)?;
        Ok(match data.database_connection() {
            Some(connection) => {
                Box::new(basalt_shared::PgGuardrails::new(connection, &caller.tenant))
            }
            None => Box::new(GuardrailStore::new(&data.tenant_dir())),
        })
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct GuardrailList {
    guardrails: Vec<GuardrailSummaryView>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct GuardrailSummaryView {
    name: String,
    latest_version: u32,
    description: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct GuardrailView {
    name: String,
    version: u32,
    config: GuardrailConfig,
}

impl From<basalt_guard::store::StoredGuardrail> for GuardrailView {
    fn from(stored: basalt_guard::store::StoredGuardrail) -> Self {
        GuardrailView {
            name: stored.name,
            version: stored.version,
            config: stored.config,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateGuardrail {
    /// 1–50 letters, digits, `-` or `_`. Creating a name that exists adds a version.
    name: String,
    config: GuardrailConfig,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionQuery {
    /// A version other than the latest.
    #[serde(default)]
    version: Option<u32>,
}

pub(crate) async fn list_guardrails(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<GuardrailList>, ApiError> {
    let store = state.guardrails(&caller)?;
    let listed = blocking(move || store.list()).await?;
    Ok(Json(GuardrailList {
        guardrails: listed
            .into_iter()
            .map(|summary| GuardrailSummaryView {
                name: summary.name,
                latest_version: summary.latest_version,
                description: summary.description,
            })
            .collect(),
    }))
}

pub(crate) async fn create_guardrail(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<CreateGuardrail>,
) -> Result<(StatusCode, Json<GuardrailView>), ApiError> {
    if request.config.prompt_attacks.is_some() {
        // Said now rather than at the first request that uses it.
        state.attack_classifier().await?;
    }
    let store = state.guardrails(&caller)?;
    let stored = blocking(move || store.save(&request.name, &request.config)).await?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

pub(crate) async fn get_guardrail(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<GuardrailView>, ApiError> {
    let store = state.guardrails(&caller)?;
    let stored = blocking(move || store.load(&name, query.version)).await?;
    Ok(Json(stored.into()))
}

pub(crate) async fn delete_guardrail(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let store = state.guardrails(&caller)?;
    let deleted = name.clone();
    blocking(move || store.delete(&name)).await?;
    Ok(Json(Deleted { deleted }))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyRequest {
    /// `input` (text on its way to a model) or `output` (text from one).
    source: Source,
    /// The text to check.
    text: String,
    /// A version other than the latest.
    #[serde(default)]
    version: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ApplyResponse {
    /// `none` when the text passes unchanged, `intervened` when it was anonymized or blocked.
    action: &'static str,
    guardrail: String,
    version: u32,
    #[serde(flatten)]
    checked: Checked,
}

pub(crate) async fn apply_guardrail(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<ApplyRequest>,
) -> Result<Json<ApplyResponse>, ApiError> {
    let reference = match request.version {
        Some(version) => format!("{name}:{version}"),
        None => name,
    };
    let active = resolve(&state, &caller, &reference).await?;
    let checked = active.guardrail.check(&request.text, request.source);
    if checked.outcome == Outcome::Blocked {
        active.audit_block(&state, &caller, request.source, &checked.assessments);
    }
    Ok(Json(ApplyResponse {
        action: if checked.outcome == Outcome::Passed {
            "none"
        } else {
            "intervened"
        },
        guardrail: active.name,
        version: active.version,
        checked,
    }))
}

/// A loaded guardrail a request runs through.
#[derive(Debug, Clone)]
pub(crate) struct ActiveGuardrail {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) guardrail: Arc<Guardrail>,
}

/// Loads `NAME` or `NAME:VERSION` from the caller's tenant.
pub(crate) async fn resolve(
    state: &AppState,
    caller: &Caller,
    reference: &str,
) -> Result<ActiveGuardrail, ApiError> {
    let store = state.guardrails(caller)?;
    let reference = reference.to_owned();
    let stored = blocking(move || store.load_reference(&reference)).await?;
    let key = (caller.tenant.clone(), stored.name.clone(), stored.version);
    if let Some((config, guardrail)) = crate::lock(&state.loaded_guardrails).get(&key)
        && *config == stored.config
    {
        return Ok(ActiveGuardrail {
            name: stored.name,
            version: stored.version,
            guardrail: guardrail.clone(),
        });
    }
    // Denied topics embed their phrases as the guardrail loads: once per version, then reused.
    let models = GuardModels {
        embedder: Some(state.embedder.clone()),
        attacks: match stored.config.prompt_attacks {
            Some(_) => Some(state.attack_classifier().await?),
            None => None,
        },
    };
    let config = stored.config.clone();
    let guardrail = blocking(move || Guardrail::with_models(config, models)).await?;
    let guardrail = Arc::new(guardrail);
    crate::lock(&state.loaded_guardrails).insert(key, (stored.config, guardrail.clone()));
    Ok(ActiveGuardrail {
        name: stored.name,
        version: stored.version,
        guardrail,
    })
}

/// Guardrails as loaded, by tenant, name and version, with the configuration they were
/// loaded from (a name deleted and created again starts its versions over).
pub(crate) type LoadedGuardrails =
    HashMap<(String, String, u32), (GuardrailConfig, Arc<Guardrail>)>;

/// The guardrail of a request: the caller's key's when it is bound to one (a request may not
/// choose another), else the one the request names, else the knowledge base's, else none.
pub(crate) async fn choose(
    state: &AppState,
    caller: &Caller,
    requested: Option<&str>,
    kb_default: Option<&str>,
) -> Result<Option<ActiveGuardrail>, ApiError> {
    if let (Some(bound), Some(requested)) = (&caller.guardrail, requested)
        && bound != requested
    {
        return Err(ApiError::new(
            Code::GuardrailBound,
            format!(
                "this API key is bound to guardrail {bound:?}; requests made with it cannot choose {requested:?}"
            ),
        ));
    }
    match caller.guardrail.as_deref().or(requested).or(kb_default) {
        Some(reference) => Ok(Some(resolve(state, caller, reference).await?)),
        None => Ok(None),
    }
}

impl ActiveGuardrail {
    /// Records a blocked request in the audit trail (which policies acted; never the text).
    pub(crate) fn audit_block(
        &self,
        state: &AppState,
        caller: &Caller,
        source: Source,
        assessments: &[Assessment],
    ) {
        let mut policies: Vec<String> = assessments
            .iter()
            .filter(|assessment| assessment.action == basalt_guard::Action::Block)
            .map(|assessment| format!("{}:{}", assessment.policy, assessment.name))
            .collect();
        policies.dedup();
        state.security.record(Event {
            request_id: caller.request_id.clone(),
            principal: Some(caller.principal.clone()),
            key_id: caller.key_id.clone(),
            action: "guardrail:Block".to_owned(),
            resource: basalt_security::resource_name(
                &caller.tenant,
                &format!("guardrail/{}", self.name),
            ),
            outcome: Some(basalt_security::audit::Outcome::Blocked),
            status: Some(200),
            detail: Some(format!(
                "{} blocked by version {} ({})",
                source.as_str(),
                self.version,
                policies.join(", ")
            )),
        });
    }

    /// `text` as output may show it: anonymized, or the blocked message.
    pub(crate) fn output_text(&self, text: &str) -> String {
        self.guardrail.check(text, Source::Output).text
    }
}
