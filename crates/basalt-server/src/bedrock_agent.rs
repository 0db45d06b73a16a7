//! Bedrock Agent Runtime's knowledge-base API (`bedrock-agent-runtime` in boto3): `Retrieve`,
//! `RetrieveAndGenerate` and `RetrieveAndGenerateStream`, over the same search, answer pipeline,
//! sessions and document-level access control as the native routes. A knowledge base is
//! addressed by its Bedrock id ([`basalt_kb::bedrock_id`], shown by `GET /v1/kbs`) or its name.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::{Extension, Json};
use basalt_answer::{Answer, AnswerOptions, Ask, GuardedTurn, Reference, Reply};
use basalt_index::{Filter, Hit, SearchMode};
use basalt_kb::{KnowledgeBase, SearchOptions};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::bedrock::{Events, event_stream, guardrail_reference, model_name, relay};
use crate::error::ApiError;
use crate::guard::ActiveGuardrail;
use crate::native::record_turn;
use crate::turn::Running;
use crate::{ApiJson, AppState, blocking};

/// The knowledge base `id` names in the caller's tenant, once the caller may do `action` on
/// it. A principal that may not is refused before it learns whether the id exists.
async fn knowledge_base(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: &str,
) -> Result<Arc<KnowledgeBase>, ApiError> {
    let wanted = id.to_owned();
    let name = state
        .with_catalog(caller, move |catalog| catalog.name_of(&wanted))
        .await;
    let name = match name {
        Ok(name) => name,
        Err(error) => {
            state
                .security
                .require(caller, action, &format!("kb/{id}"))?;
            return Err(error);
        }
    };
    if state
        .security
        .require(caller, action, &format!("kb/{name}"))
        .is_err()
    {
        // Denied (and audited): answered as for an id no knowledge base has, so the answer
        // does not say whether one does.
        state
            .security
            .require(caller, action, &format!("kb/{id}"))?;
        return Err(basalt_kb::KbError::NotFound {
            name: id.to_owned(),
        }
        .into());
    }
    // The route is audited under the caller; this names the knowledge base read.
    state.security.record(basalt_security::audit::Event {
        request_id: caller.request_id.clone(),
        principal: Some(caller.principal.clone()),
        key_id: caller.key_id.clone(),
        action: action.to_owned(),
        resource: basalt_security::resource_name(&caller.tenant, &format!("kb/{name}")),
        outcome: Some(basalt_security::audit::Outcome::Allowed),
        status: None,
        detail: None,
    });
    state.knowledge_base(caller, &name).await
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RetrievalConfiguration {
    vector_search_configuration: VectorSearchConfiguration,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VectorSearchConfiguration {
    #[serde(default)]
    number_of_results: Option<usize>,
    /// `HYBRID` or `SEMANTIC` (default: the knowledge base's own mode).
    #[serde(default)]
    override_search_type: Option<String>,
    /// Bedrock's filter language: equals, notEquals, greaterThan(OrEquals), lessThan(OrEquals),
    /// in, notIn, startsWith, listContains, andAll, orAll.
    #[serde(default)]
    filter: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GuardrailConfiguration {
    guardrail_id: String,
    guardrail_version: String,
}

impl GuardrailConfiguration {
    fn reference(&self) -> String {
        guardrail_reference(&self.guardrail_id, Some(&self.guardrail_version))
    }
}

/// Most results one Retrieve returns (Bedrock's own limit).
const MAX_RESULTS: usize = 100;

impl VectorSearchConfiguration {
    fn results(&self, default: usize) -> Result<usize, ApiError> {
        let wanted = self.number_of_results.unwrap_or(default);
        if wanted == 0 || wanted > MAX_RESULTS {
            return Err(ApiError::invalid(format!(
                "numberOfResults must be between 1 and {MAX_RESULTS}"
            )));
        }
        Ok(wanted)
    }

    fn mode(&self) -> Result<Option<SearchMode>, ApiError> {
        match self.override_search_type.as_deref() {
            None => Ok(None),
            Some("HYBRID") => Ok(Some(SearchMode::Hybrid)),
            Some("SEMANTIC") => Ok(Some(SearchMode::Vector)),
            Some(other) => Err(ApiError::invalid(format!(
                "overrideSearchType {other:?} is not HYBRID or SEMANTIC"
            ))),
        }
    }

    fn filter(&self) -> Result<Option<Filter>, ApiError> {
        self.filter.as_ref().map(filter_from).transpose()
    }
}

/// A metadata key as Basalt's filters name it: Bedrock's own keys for the source and page.
fn field(key: &str) -> String {
    match key {
        "x-amz-bedrock-kb-source-uri" => "source".to_owned(),
        "x-amz-bedrock-kb-document-page-number" => "page".to_owned(),
        other => other.to_owned(),
    }
}

/// A Bedrock `RetrievalFilter` as a Basalt filter.
pub(crate) fn filter_from(value: &Value) -> Result<Filter, ApiError> {
    let invalid = |message: String| ApiError::invalid(format!("filter: {message}"));
    let object = value
        .as_object()
        .filter(|object| object.len() == 1)
        .ok_or_else(|| invalid("each filter is an object with exactly one operator".into()))?;
    let (operator, operand) = object
        .iter()
        .next()
        .ok_or_else(|| invalid("empty".into()))?;
    if let "andAll" | "orAll" = operator.as_str() {
        let parts = operand
            .as_array()
            .filter(|parts| parts.len() >= 2)
            .ok_or_else(|| invalid(format!("{operator} takes a list of at least two filters")))?
            .iter()
            .map(filter_from)
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(if operator == "andAll" {
            Filter::And(parts)
        } else {
            Filter::Or(parts)
        });
    }
    let key = operand
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{operator} needs a key")))?;
    let value = operand
        .get("value")
        .cloned()
        .ok_or_else(|| invalid(format!("{operator} needs a value")))?;
    let field = field(key);
    let range = |gt, gte, lt, lte| Filter::Range {
        field: field.clone(),
        gt,
        gte,
        lt,
        lte,
    };
    let list = |value: Value| match value {
        Value::Array(values) => Ok(values),
        _ => Err(invalid(format!("{operator} takes a list value"))),
    };
    Ok(match operator.as_str() {
        "equals" | "listContains" => Filter::Eq { field, value },
        "notEquals" => Filter::Not(Box::new(Filter::Eq { field, value })),
        "greaterThan" => range(Some(value), None, None, None),
        "greaterThanOrEquals" => range(None, Some(value), None, None),
        "lessThan" => range(None, None, Some(value), None),
        "lessThanOrEquals" => range(None, None, None, Some(value)),
        "in" => Filter::In {
            field,
            values: list(value)?,
        },
        "notIn" => Filter::Not(Box::new(Filter::In {
            field,
            values: list(value)?,
        })),
        "startsWith" => Filter::Prefix {
            field,
            prefix: value
                .as_str()
                .ok_or_else(|| invalid("startsWith takes a string".into()))?
                .to_owned(),
        },
        other => {
            return Err(invalid(format!(
                "operator {other:?} is not supported (equals, notEquals, greaterThan, \
                 greaterThanOrEquals, lessThan, lessThanOrEquals, in, notIn, startsWith, \
                 listContains, andAll, orAll)"
            )));
        }
    })
}

/// Where a passage comes from, as Bedrock says it: an S3 or web address when the source is
/// one, else a custom document by id.
fn location(source: &str, doc_id: &str) -> Value {
    if source.starts_with("s3://") {
        json!({"type": "S3", "s3Location": {"uri": source}})
    } else if source.starts_with("http://") || source.starts_with("https://") {
        json!({"type": "WEB", "webLocation": {"url": source}})
    } else {
        json!({"type": "CUSTOM", "customDocumentLocation": {"id": doc_id}})
    }
}

/// A passage's metadata: Bedrock's own keys, then the document's metadata fields.
fn metadata(
    source: &str,
    chunk_id: &str,
    doc_id: &str,
    title: Option<&str>,
    page: Option<u32>,
    extra: impl IntoIterator<Item = (String, Value)>,
) -> Value {
    let mut out = Map::new();
    out.insert("x-amz-bedrock-kb-source-uri".into(), json!(source));
    out.insert("x-amz-bedrock-kb-chunk-id".into(), json!(chunk_id));
    out.insert("doc_id".into(), json!(doc_id));
    if let Some(title) = title {
        out.insert("title".into(), json!(title));
    }
    if let Some(page) = page {
        out.insert("x-amz-bedrock-kb-document-page-number".into(), json!(page));
    }
    for (key, value) in extra {
        out.entry(key).or_insert(value);
    }
    Value::Object(out)
}

fn retrieval_result(hit: &Hit) -> Value {
    let mut extra: Vec<(String, Value)> = hit
        .metadata
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if !hit.tags.is_empty() {
        extra.push(("tags".into(), json!(hit.tags)));
    }
    json!({
        "content": {"text": hit.text, "type": "TEXT"},
        "location": location(&hit.source, &hit.doc_id),
        "metadata": metadata(&hit.source, &hit.chunk_id, &hit.doc_id, hit.title.as_deref(), hit.page, extra),
        "score": hit.score,
    })
}

fn retrieved_reference(reference: &Reference) -> Value {
    json!({
        "content": {"text": reference.text, "type": "TEXT"},
        "location": location(&reference.source, &reference.doc_id),
        "metadata": metadata(
            &reference.source, &reference.chunk_id, &reference.doc_id,
            reference.title.as_deref(), reference.page, [],
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// Retrieve

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct RetrievalQuery {
    text: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RetrieveRequest {
    retrieval_query: RetrievalQuery,
    #[serde(default)]
    retrieval_configuration: Option<RetrievalConfiguration>,
    /// Where the previous page ended.
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    guardrail_configuration: Option<GuardrailConfiguration>,
}

/// Most passages reachable by paging through one query.
const MAX_PAGED: usize = 1000;

pub(crate) async fn retrieve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<RetrieveRequest>,
) -> Result<Json<Value>, ApiError> {
    let configuration = request
        .retrieval_configuration
        .map(|config| config.vector_search_configuration)
        .unwrap_or_default();
    let page = configuration.results(5)?;
    let offset = match &request.next_token {
        None => 0,
        Some(token) => token
            .parse::<usize>()
            .ok()
            .filter(|offset| *offset < MAX_PAGED)
            .ok_or_else(|| ApiError::invalid("nextToken is not one this server gave"))?,
    };
    if request.retrieval_query.text.trim().is_empty() {
        return Err(ApiError::invalid("retrievalQuery.text must not be empty"));
    }
    let k = (offset + page).min(MAX_PAGED);
    let options = SearchOptions {
        mode: configuration.mode()?,
        k,
        filter: configuration.filter()?,
        fusion: None,
        exact: false,
        reader: caller.reader(),
        bm25: None,
    };
    let kb = knowledge_base(&state, &caller, &id, "kb:Search").await?;
    let requested = request
        .guardrail_configuration
        .as_ref()
        .map(GuardrailConfiguration::reference);
    let active = crate::guard::choose(&state, &caller, requested.as_deref(), None).await?;
    let embedder = state.embedder_for(&kb)?;
    let query = request.retrieval_query.text;
    let results = blocking(move || kb.search(Some(embedder.as_ref()), &query, &options)).await?;
    let mut intervened = false;
    let mut out = Vec::new();
    for mut hit in results.hits.into_iter().skip(offset) {
        if let Some(active) = &active {
            let shown = active.output_text(&hit.text);
            intervened |= shown != hit.text;
            hit.text = shown;
        }
        out.push(retrieval_result(&hit));
    }
    let full_page = out.len() == page;
    let mut body = json!({ "retrievalResults": out });
    if full_page && k < MAX_PAGED {
        body["nextToken"] = json!(k.to_string());
    }
    if active.is_some() {
        body["guardrailAction"] = json!(if intervened { "INTERVENED" } else { "NONE" });
    }
    Ok(Json(body))
}

// ---------------------------------------------------------------------------------------------
// RetrieveAndGenerate and RetrieveAndGenerateStream

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct RagInput {
    text: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RagConfiguration {
    /// `KNOWLEDGE_BASE` (`EXTERNAL_SOURCES` is not supported).
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    knowledge_base_configuration: Option<KbConfiguration>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KbConfiguration {
    knowledge_base_id: String,
    /// A model Basalt knows (the embedded one's name or a registered one) writes the answer;
    /// any other (an AWS foundation model's ARN) leaves the choice to the knowledge base.
    model_arn: String,
    #[serde(default)]
    retrieval_configuration: Option<RetrievalConfiguration>,
    #[serde(default)]
    generation_configuration: Option<GenerationConfiguration>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerationConfiguration {
    #[serde(default)]
    guardrail_configuration: Option<GuardrailConfiguration>,
    #[serde(default)]
    inference_config: Option<GenerationInference>,
    /// Refused: a knowledge base's prompt template is its own setting.
    #[serde(default)]
    prompt_template: Option<Value>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerationInference {
    #[serde(default)]
    text_inference_config: Option<TextInference>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TextInference {
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RagRequest {
    input: RagInput,
    retrieve_and_generate_configuration: RagConfiguration,
    /// A conversation this server started (its earlier turns give follow-ups context).
    #[serde(default)]
    session_id: Option<String>,
}

/// A started RetrieveAndGenerate turn, with the session it is recorded in.
struct StartedRag {
    running: Running,
    session_id: String,
    question: String,
    active: Option<ActiveGuardrail>,
}

async fn start_rag(
    state: &AppState,
    caller: &Caller,
    request: RagRequest,
) -> Result<StartedRag, ApiError> {
    let configuration = request.retrieve_and_generate_configuration;
    if configuration.kind != "KNOWLEDGE_BASE" {
        return Err(ApiError::invalid(format!(
            "retrieveAndGenerateConfiguration.type {:?} is not supported: use KNOWLEDGE_BASE",
            configuration.kind
        )));
    }
    let config = configuration.knowledge_base_configuration.ok_or_else(|| {
        ApiError::invalid("retrieveAndGenerateConfiguration.knowledgeBaseConfiguration is required")
    })?;
    let search = config
        .retrieval_configuration
        .map(|config| config.vector_search_configuration)
        .unwrap_or_default();
    let generation = config.generation_configuration.unwrap_or_default();
    if generation.prompt_template.is_some() {
        return Err(ApiError::invalid(
            "generationConfiguration.promptTemplate is not supported: a knowledge base's prompt \
             template is one of its settings (answer.template, docs/answers.md), so every \
             client gets the same grounding instructions",
        ));
    }
    let inference = generation
        .inference_config
        .and_then(|config| config.text_inference_config)
        .unwrap_or_default();
    state.check_max_tokens(inference.max_tokens)?;
    let kb = knowledge_base(state, caller, &config.knowledge_base_id, "kb:Answer").await?;
    let name = kb.settings.name.clone();
    let (session_id, history) = match request.session_id {
        Some(id) => {
            let history = crate::native::session_history(state, caller, &id, &name)?;
            (id, history)
        }
        None => (
            state.sessions.create(&name, &caller.principal)?.id,
            Vec::new(),
        ),
    };
    let model = model_name(&config.model_arn);
    let known = model == state.chat_model || state.chat_models.remote(model)?.is_some();
    let generator = state.answer_model(caller, &kb, known.then_some(model))?;
    let requested = generation
        .guardrail_configuration
        .as_ref()
        .map(GuardrailConfiguration::reference);
    let active = crate::guard::choose(
        state,
        caller,
        requested.as_deref(),
        kb.settings.answer.guardrail.as_deref(),
    )
    .await?;
    let options = AnswerOptions {
        passages: search.number_of_results.map(|wanted| wanted.clamp(1, 50)),
        mode: search.mode()?,
        filter: search.filter()?,
        max_tokens: inference.max_tokens,
        temperature: inference.temperature.unwrap_or(0.0),
        reader: caller.reader(),
        ..AnswerOptions::default()
    };
    let ask = Ask::Kb {
        kb,
        question: request.input.text,
        history,
        options: Box::new(options),
    };
    let turn = GuardedTurn::new(ask, active.as_ref().map(|active| active.guardrail.clone()));
    let question = turn.question().to_owned();
    let running = crate::turn::start(state, caller, turn, active.clone(), generator).await?;
    Ok(StartedRag {
        running,
        session_id,
        question,
        active,
    })
}

/// Bedrock's citations of an answer: each cited span of the text with the passages behind it.
fn citations(answer: &Answer) -> Vec<Value> {
    answer
        .citations
        .iter()
        .map(|citation| {
            let text = citation.span.of(&answer.answer);
            json!({
                "generatedResponsePart": {"textResponsePart": {
                    "text": text,
                    "span": {"start": citation.span.start, "end": citation.span.end},
                }},
                "retrievedReferences": citation.references.iter().map(retrieved_reference).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn guardrail_action(reply: &Reply) -> &'static str {
    if reply.blocked.is_some() {
        "INTERVENED"
    } else {
        "NONE"
    }
}

pub(crate) async fn retrieve_and_generate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<RagRequest>,
) -> Result<Json<Value>, ApiError> {
    let started = start_rag(&state, &caller, request).await?;
    let reply = started.running.reply(state.request_timeout).await?;
    record_turn(
        &state,
        &started.session_id,
        &started.question,
        &reply.answer,
    );
    let mut body = json!({
        "sessionId": started.session_id,
        "output": {"text": reply.answer.answer},
        "citations": citations(&reply.answer),
    });
    if started.active.is_some() {
        body["guardrailAction"] = json!(guardrail_action(&reply));
    }
    Ok(Json(body))
}

pub(crate) async fn retrieve_and_generate_stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<RagRequest>,
) -> Result<Response, ApiError> {
    let StartedRag {
        running,
        session_id,
        question,
        active,
    } = start_rag(&state, &caller, request).await?;
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&session_id) {
        headers.insert("x-amzn-bedrock-knowledge-base-session-id", value);
    }
    let timeout = state.request_timeout;
    let frames = relay(
        running,
        timeout,
        Vec::new(),
        |text| ("output", json!({ "text": text })),
        move |reply| {
            record_turn(&state, &session_id, &question, &reply.answer);
            let mut last: Events = citations(&reply.answer)
                .into_iter()
                .map(|citation| {
                    let mut payload = citation.clone();
                    payload["citation"] = citation;
                    ("citation", payload)
                })
                .collect();
            if active.is_some() {
                last.push(("guardrail", json!({"action": guardrail_action(&reply)})));
            }
            last
        },
    );
    Ok(event_stream(frames, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bedrock_filters_become_basalt_filters() {
        let filter = filter_from(&json!({"andAll": [
            {"equals": {"key": "department", "value": "hr"}},
            {"orAll": [
                {"greaterThanOrEquals": {"key": "year", "value": 2020}},
                {"startsWith": {"key": "x-amz-bedrock-kb-source-uri", "value": "docs/"}},
            ]},
            {"notIn": {"key": "tags", "value": ["draft", "old"]}},
        ]}))
        .expect("valid");
        let Filter::And(parts) = filter else {
            panic!("an and: {filter:?}")
        };
        assert_eq!(
            parts[0],
            Filter::Eq {
                field: "department".into(),
                value: json!("hr")
            }
        );
        let Filter::Or(alternatives) = &parts[1] else {
            panic!("an or")
        };
        assert_eq!(
            alternatives[1],
            Filter::Prefix {
                field: "source".into(),
                prefix: "docs/".into()
            }
        );
        assert!(matches!(&parts[2], Filter::Not(inner) if matches!(**inner, Filter::In { .. })));
        for bad in [
            json!({"stringContains": {"key": "a", "value": "b"}}),
            json!({"andAll": [{"equals": {"key": "a", "value": 1}}]}),
            json!({"equals": {"key": "a"}}),
            json!({"in": {"key": "a", "value": "not a list"}}),
            json!({}),
        ] {
            assert!(filter_from(&bad).is_err(), "{bad}");
        }
    }
}
