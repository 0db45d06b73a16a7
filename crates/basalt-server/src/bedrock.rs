//! Bedrock Runtime's API (`bedrock-runtime` in boto3 and the AWS CLI): `Converse`,
//! `ConverseStream`, `InvokeModel` (Titan-style embeddings), `CountTokens` and
//! `ApplyGuardrail`, over the same turns, models and guardrails as the OpenAI routes. A
//! knowledge base is the model `kb:NAME`, as there. Errors come in Bedrock's shape
//! (`{"message"}` with `x-amzn-ErrorType`), so botocore raises its own exception classes; streams
//! use AWS's event-stream framing.

use std::convert::Infallible;
use std::time::Instant;

use aws_smithy_types::event_stream::{Header, HeaderValue as EventHeaderValue, Message};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use basalt_answer::{Reply, TurnEvent};
use basalt_guard::{Action, Outcome, Source};
use basalt_model::{ChatMessage, ChatRole, DEFAULT_MAX_TOKENS, Prompt, SamplingOptions};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::openai::{ChatTurn, StartedChat, start_chat};
use crate::turn::{CancelOnDrop, Progress, Running};
use crate::{ApiJson, AppState, blocking};

// ---------------------------------------------------------------------------------------------
// Errors and event streams

/// Whether `path` is one of Bedrock's routes (answered in Bedrock's error shape).
fn is_bedrock_path(path: &str) -> bool {
    [
        "/model/",
        "/guardrail/",
        "/knowledgebases/",
        "/foundation-models",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
        || path == "/retrieveAndGenerate"
        || path == "/retrieveAndGenerateStream"
}

/// Answers every error of a Bedrock route as Bedrock does: the exception's status, its name in
/// `x-amzn-ErrorType`, and `{"message"}`; the request id also as `x-amzn-RequestId`.
pub(crate) async fn errors(request: Request, next: Next) -> Response {
    let bedrock = is_bedrock_path(request.uri().path());
    let response = next.run(request).await;
    if !bedrock {
        return response;
    }
    let Some(error) = response.extensions().get::<ApiError>().cloned() else {
        return response;
    };
    let (name, status) = error.code.bedrock();
    let mut out = (status, Json(json!({ "message": error.message }))).into_response();
    let headers = out.headers_mut();
    headers.insert("x-amzn-errortype", HeaderValue::from_static(name));
    for (from, to) in [
        ("x-request-id", "x-request-id"),
        ("x-request-id", "x-amzn-requestid"),
        ("retry-after", "retry-after"),
        ("www-authenticate", "www-authenticate"),
    ] {
        if let Some(value) = response.headers().get(from) {
            headers.insert(to, value.clone());
        }
    }
    out
}

/// One event-stream message: the AWS framing (prelude, headers, payload, both CRC32s).
fn frame(headers: Vec<Header>, payload: Vec<u8>) -> Bytes {
    let message = Message::new_from_parts(headers, payload);
    let mut buffer = Vec::new();
    if let Err(error) = aws_smithy_eventstream::frame::write_message_to(&message, &mut buffer) {
        tracing::error!(%error, "cannot frame an event-stream message");
    }
    Bytes::from(buffer)
}

fn string_header(name: &'static str, value: impl Into<String>) -> Header {
    Header::new(name, EventHeaderValue::String(value.into().into()))
}

/// An event of a Bedrock stream: `:event-type` names the union member, the payload is its JSON.
pub(crate) fn event(kind: &'static str, payload: &Value) -> Bytes {
    frame(
        vec![
            string_header(":event-type", kind),
            string_header(":content-type", "application/json"),
            string_header(":message-type", "event"),
        ],
        payload.to_string().into_bytes(),
    )
}

/// An error inside a Bedrock stream (botocore raises it as `EventStreamError`): the
/// exception's member name when the operation's stream models it, and `:error-code` and
/// `:error-message`, which botocore reads when it does not (a timeout, say).
pub(crate) fn exception(error: &ApiError) -> Bytes {
    let (name, _) = error.code.bedrock();
    let mut member = name.to_owned();
    if let Some(first) = member.get_mut(..1) {
        first.make_ascii_lowercase();
    }
    frame(
        vec![
            string_header(":exception-type", member),
            string_header(":error-code", name),
            string_header(":error-message", error.message.clone()),
            string_header(":content-type", "application/json"),
            string_header(":message-type", "exception"),
        ],
        json!({ "message": error.message }).to_string().into_bytes(),
    )
}

/// A response streaming event-stream messages as they are sent on `frames`.
pub(crate) fn event_stream(frames: mpsc::Receiver<Bytes>, headers: HeaderMap) -> Response {
    use tokio_stream::StreamExt;
    let body = Body::from_stream(ReceiverStream::new(frames).map(Ok::<_, Infallible>));
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    response.headers_mut().extend(headers);
    response
}

/// The model a Bedrock model id names: an ARN's last part (`…:foundation-model/ID`), else the
/// id itself.
pub(crate) fn model_name(model_id: &str) -> &str {
    if model_id.starts_with("arn:") {
        model_id.rsplit('/').next().unwrap_or(model_id)
    } else {
        model_id
    }
}

/// The route checked `action` on the id as sent (`model/{modelId}`); when that id names
/// something else (an ARN's last part, a Titan id for the embedding model), the caller needs
/// the action on what it names too, so a policy about a name cannot be stepped around.
fn require_named(
    state: &AppState,
    caller: &Caller,
    action: &str,
    sent: &str,
    named: &str,
) -> Result<(), ApiError> {
    if sent == named {
        return Ok(());
    }
    let kind = if action.starts_with("guardrail:") {
        "guardrail"
    } else {
        "model"
    };
    state
        .security
        .require(caller, action, &format!("{kind}/{named}"))
}

/// A guardrail reference from Bedrock's identifier and version (`DRAFT` or none: the latest).
pub(crate) fn guardrail_reference(identifier: &str, version: Option<&str>) -> String {
    let name = model_name(identifier);
    match version {
        Some(version)
            if version.bytes().all(|byte| byte.is_ascii_digit()) && !version.is_empty() =>
        {
            format!("{name}:{version}")
        }
        _ => name.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Converse and ConverseStream

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConverseRequest {
    #[serde(default)]
    messages: Vec<BedrockMessage>,
    #[serde(default)]
    system: Vec<Value>,
    #[serde(default)]
    inference_config: Option<InferenceConfig>,
    #[serde(default)]
    guardrail_config: Option<GuardrailConfig>,
    #[serde(default)]
    tool_config: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct BedrockMessage {
    role: String,
    content: Vec<Value>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InferenceConfig {
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    stop_sequences: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GuardrailConfig {
    guardrail_identifier: String,
    #[serde(default)]
    guardrail_version: Option<String>,
    /// `enabled`: the response's `trace.guardrail` says what the guardrail found.
    #[serde(default)]
    trace: Option<String>,
}

/// The text of content blocks: `text` blocks, and `guardContent` ones (text a guardrail checks,
/// which every Basalt guardrail does with the whole input anyway). Other kinds are refused.
fn block_text(blocks: &[Value], at: &str) -> Result<String, ApiError> {
    let mut text = String::new();
    for (index, block) in blocks.iter().enumerate() {
        let part = block.get("text").and_then(Value::as_str).or_else(|| {
            block
                .pointer("/guardContent/text/text")
                .and_then(Value::as_str)
        });
        match part {
            Some(part) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(part);
            }
            None => {
                let kind = block
                    .as_object()
                    .and_then(|block| block.keys().next())
                    .map_or("empty", String::as_str);
                if kind == "cachePoint" {
                    continue;
                }
                return Err(ApiError::invalid(format!(
                    "{at}[{index}]: content blocks of type {kind:?} are not supported (text and \
                     guardContent only)"
                )));
            }
        }
    }
    Ok(text)
}

/// The chat messages of a Converse request, system blocks first.
fn converse_messages(request: &ConverseRequest) -> Result<Vec<ChatMessage>, ApiError> {
    if request.messages.is_empty() {
        return Err(ApiError::invalid("messages must not be empty"));
    }
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    let system = block_text(&request.system, "system")?;
    if !system.is_empty() {
        messages.push(ChatMessage::new(ChatRole::System, system));
    }
    for (index, message) in request.messages.iter().enumerate() {
        let role = match message.role.as_str() {
            "user" => ChatRole::User,
            "assistant" => ChatRole::Assistant,
            other => {
                return Err(ApiError::invalid(format!(
                    "messages[{index}].role {other:?} is not a Converse role: use user or assistant"
                )));
            }
        };
        let text = block_text(&message.content, &format!("messages[{index}].content"))?;
        messages.push(ChatMessage::new(role, text));
    }
    Ok(messages)
}

/// The chat turn a Converse request asks for, once the caller may chat with the model its
/// id names.
fn converse_turn(
    state: &AppState,
    caller: &Caller,
    model_id: &str,
    request: ConverseRequest,
) -> Result<ChatTurn, ApiError> {
    require_named(state, caller, "model:Chat", model_id, model_name(model_id))?;
    if request.tool_config.is_some() {
        return Err(ApiError::invalid(
            "toolConfig is not supported: Basalt's models answer in text",
        ));
    }
    let messages = converse_messages(&request)?;
    let config = request.inference_config.unwrap_or_default();
    let guardrail = request.guardrail_config.map(|config| {
        guardrail_reference(
            &config.guardrail_identifier,
            config.guardrail_version.as_deref(),
        )
    });
    Ok(ChatTurn {
        model: model_name(model_id).to_owned(),
        messages,
        max_tokens: config.max_tokens,
        sampling: SamplingOptions {
            max_tokens: config.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            temperature: config.temperature.unwrap_or(0.0),
            top_p: config.top_p.unwrap_or(1.0),
            seed: None,
            stop: config.stop_sequences,
        },
        guardrail,
        style: None,
    })
}

fn stop_reason(reply: &Reply) -> &'static str {
    match reply.finish {
        basalt_answer::Finish::Stop => "end_turn",
        basalt_answer::Finish::Length => "max_tokens",
        basalt_answer::Finish::Blocked => "guardrail_intervened",
    }
}

fn usage(reply: &Reply) -> Value {
    let usage = &reply.answer.usage;
    json!({
        "inputTokens": usage.prompt_tokens,
        "outputTokens": usage.completion_tokens,
        "totalTokens": usage.prompt_tokens + usage.completion_tokens,
    })
}

fn latency_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

pub(crate) async fn converse(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(model_id): Path<String>,
    ApiJson(request): ApiJson<ConverseRequest>,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let traced = request
        .guardrail_config
        .as_ref()
        .is_some_and(|config| config.trace.as_deref() == Some("enabled"));
    let turn = converse_turn(&state, &caller, &model_id, request)?;
    let question = turn
        .messages
        .iter()
        .rev()
        .find(|message| message.role == ChatRole::User)
        .map(|message| message.content.clone())
        .unwrap_or_default();
    let StartedChat {
        running, active, ..
    } = start_chat(&state, &caller, turn).await?;
    let reply = running.reply(state.request_timeout).await?;
    let mut body = json!({
        "output": {"message": {"role": "assistant", "content": [{"text": reply.answer.answer}]}},
        "stopReason": stop_reason(&reply),
        "usage": usage(&reply),
        "metrics": {"latencyMs": latency_ms(started)},
    });
    if let (true, Some(active)) = (traced, &active)
        && let Some(trace) = guardrail_trace(active, &question, &reply)
    {
        body["trace"] = trace;
    }
    Ok(Json(body))
}

pub(crate) async fn converse_stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(model_id): Path<String>,
    ApiJson(request): ApiJson<ConverseRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let turn = converse_turn(&state, &caller, &model_id, request)?;
    let StartedChat { running, .. } = start_chat(&state, &caller, turn).await?;
    let frames = relay(
        running,
        state.request_timeout,
        vec![("messageStart", json!({"role": "assistant"}))],
        |text| {
            let delta = json!({"contentBlockIndex": 0, "delta": {"text": text}});
            ("contentBlockDelta", delta)
        },
        move |reply| {
            vec![
                ("contentBlockStop", json!({"contentBlockIndex": 0})),
                ("messageStop", json!({"stopReason": stop_reason(&reply)})),
                (
                    "metadata",
                    json!({
                        "usage": usage(&reply),
                        "metrics": {"latencyMs": latency_ms(started)},
                    }),
                ),
            ]
        },
    );
    Ok(event_stream(frames, HeaderMap::new()))
}

/// A stream's events: `(event type, payload)`.
pub(crate) type Events = Vec<(&'static str, Value)>;

/// Relays a running turn as event-stream messages: `first`, then `shown(text)` for each piece
/// of text shown (a guardrail's message after what was shown, as a stream cannot take text
/// back), then `last(reply)`'s events, or an exception message when the turn fails or the
/// request's time runs out. The turn stops when the client goes away.
pub(crate) fn relay(
    running: Running,
    timeout: std::time::Duration,
    first: Events,
    shown: impl Fn(String) -> (&'static str, Value) + Send + Sync + 'static,
    last: impl FnOnce(Reply) -> Events + Send + 'static,
) -> mpsc::Receiver<Bytes> {
    let Running {
        progress: mut receiver,
        cancel,
    } = running;
    let (frames, stream) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let _guard = CancelOnDrop(cancel);
        let relay = async {
            for (kind, payload) in first {
                if frames.send(event(kind, &payload)).await.is_err() {
                    return;
                }
            }
            let mut any = false;
            let mut last = Some(last);
            while let Some(progress) = receiver.recv().await {
                let text = match progress {
                    Progress::Event(TurnEvent::Sources(_)) => continue,
                    Progress::Event(TurnEvent::Delta(text)) => text,
                    Progress::Event(TurnEvent::Blocked(text)) if any => format!("\n\n{text}"),
                    Progress::Event(TurnEvent::Blocked(text)) => text,
                    Progress::Done(reply) => {
                        let closing = last.take().map(|last| last(*reply)).unwrap_or_default();
                        for (kind, payload) in closing {
                            if frames.send(event(kind, &payload)).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    Progress::Failed(error) => {
                        let _ = frames.send(exception(&error)).await;
                        return;
                    }
                };
                if text.is_empty() {
                    continue;
                }
                any = true;
                let (kind, payload) = shown(text);
                if frames.send(event(kind, &payload)).await.is_err() {
                    // The client went away: dropping the guard stops the generation.
                    return;
                }
            }
        };
        if tokio::time::timeout(timeout, relay).await.is_err() {
            let _ = frames.send(exception(&ApiError::timed_out(timeout))).await;
        }
    });
    stream
}

// ---------------------------------------------------------------------------------------------
// InvokeModel (embeddings) and CountTokens

/// Amazon Titan Text Embeddings' request, which InvokeModel takes for Basalt's embedding model.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TitanEmbeddingRequest {
    input_text: String,
    /// Must be the model's own dimension when given.
    #[serde(default)]
    dimensions: Option<usize>,
    /// Basalt's vectors are always unit length; `false` is refused.
    #[serde(default)]
    normalize: Option<bool>,
    /// `["float"]` (the default) is what Basalt returns.
    #[serde(default)]
    embedding_types: Option<Vec<String>>,
}

pub(crate) async fn invoke_model(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(model_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = model_name(&model_id);
    // Code written for Bedrock names Amazon Titan's embedding models: Basalt's own answers.
    let titan = name.starts_with("amazon.titan-embed-text");
    if titan {
        require_named(
            &state,
            &caller,
            "model:Embed",
            &model_id,
            &state.embedding_model,
        )?;
    }
    if name != state.embedding_model && !titan {
        return Err(ApiError::invalid(format!(
            "InvokeModel takes the embedding model {:?} with a Titan-style body \
             ({{\"inputText\": …}}); for chat, use Converse or ConverseStream with model {:?}, a \
             registered model or kb:NAME",
            state.embedding_model, state.chat_model
        )));
    }
    let request: TitanEmbeddingRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::new(
            Code::InvalidJson,
            format!(
                "the body is not a Titan embeddings request ({{\"inputText\": \"…\"}}): {error}"
            ),
        )
    })?;
    if request.input_text.trim().is_empty() {
        return Err(ApiError::invalid("inputText must not be empty"));
    }
    let dimension = state.embedder.info().dimension;
    if request.dimensions.is_some_and(|wanted| wanted != dimension) {
        return Err(ApiError::invalid(format!(
            "dimensions must be {dimension}, the dimension of {}",
            state.embedding_model
        )));
    }
    if request.normalize == Some(false) {
        return Err(ApiError::invalid(
            "normalize must be true: the model's vectors are unit length",
        ));
    }
    if let Some(kinds) = &request.embedding_types
        && kinds.iter().any(|kind| kind != "float")
    {
        return Err(ApiError::invalid("embeddingTypes may only hold \"float\""));
    }
    let embedder = state.embedder.clone();
    let text = request.input_text;
    let (vector, tokens) = blocking(move || {
        let tokens = embedder.count_tokens(&text)?;
        let vector = embedder.embed_query(&text)?;
        Ok::<_, basalt_model::ModelError>((vector, tokens))
    })
    .await?;
    let mut response = Json(json!({
        "embedding": vector,
        "embeddingsByType": {"float": vector},
        "inputTextTokenCount": tokens,
    }))
    .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct CountTokensRequest {
    input: CountTokensInput,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CountTokensInput {
    #[serde(default)]
    converse: Option<ConverseRequest>,
    #[serde(default)]
    invoke_model: Option<Value>,
}

/// The tokens the chat model would read for a Converse request (its chat template included).
pub(crate) async fn count_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(model_id): Path<String>,
    ApiJson(request): ApiJson<CountTokensRequest>,
) -> Result<Json<Value>, ApiError> {
    let Some(converse) = request.input.converse else {
        let why = if request.input.invoke_model.is_some() {
            "input.invokeModel is not supported: count a Converse request (input.converse)"
        } else {
            "input must hold converse"
        };
        return Err(ApiError::invalid(why));
    };
    let messages = converse_messages(&converse)?;
    let name = model_name(&model_id);
    require_named(&state, &caller, "model:CountTokens", &model_id, name)?;
    let generator = state
        .chat_model_named(&caller, name)?
        .unwrap_or_else(|| state.generator.clone());
    let tokens = blocking(move || generator.tokenize_prompt(&Prompt::Chat(messages))).await?;
    Ok(Json(json!({ "inputTokens": tokens.len() })))
}

// ---------------------------------------------------------------------------------------------
// Discovery: ListFoundationModels (bedrock) and ListKnowledgeBases (bedrock-agent)

/// A model as ListFoundationModels describes it.
fn model_summary(id: &str, provider: &str, output: &str, streaming: bool) -> Value {
    json!({
        "modelArn": format!("arn:basalt:bedrock:::foundation-model/{id}"),
        "modelId": id,
        "modelName": id,
        "providerName": provider,
        "inputModalities": ["TEXT"],
        "outputModalities": [output],
        "responseStreamingSupported": streaming,
        "customizationsSupported": [],
        "inferenceTypesSupported": ["ON_DEMAND"],
        "modelLifecycle": {"status": "ACTIVE"},
    })
}

/// The models a Bedrock client may name: the embedded chat and embedding models, the
/// registered ones, and each knowledge base as `kb:NAME` (`byOutputModality` filters).
pub(crate) async fn list_foundation_models(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut models = vec![
        model_summary(&state.chat_model, "Basalt", "TEXT", true),
        model_summary(&state.embedding_model, "Basalt", "EMBEDDING", false),
    ];
    for listed in state.chat_models.listed()? {
        let (output, streams) = match listed.kind {
            basalt_model::RemoteKind::Chat => ("TEXT", true),
            basalt_model::RemoteKind::Embedding => ("EMBEDDING", false),
        };
        models.push(model_summary(
            &listed.name,
            &listed.provider,
            output,
            streams,
        ));
    }
    for kb in state.with_catalog(&caller, |data| data.list()).await? {
        let id = format!("{}{}", crate::KB_MODEL_PREFIX, kb.name);
        models.push(model_summary(&id, "Basalt", "TEXT", true));
    }
    let wanted = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("byOutputModality=").map(str::to_owned));
    if let Some(wanted) = wanted {
        models.retain(|model| model["outputModalities"][0] == wanted.as_str());
    }
    Ok(Json(json!({ "modelSummaries": models })))
}

/// The caller's knowledge bases with the ids Bedrock clients address them by.
pub(crate) async fn list_knowledge_bases(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let kbs = state.with_catalog(&caller, |data| data.list()).await?;
    let summaries: Vec<Value> = kbs
        .iter()
        .map(|kb| {
            json!({
                "knowledgeBaseId": basalt_kb::bedrock_id(&kb.name),
                "name": kb.name,
                "status": "ACTIVE",
                "updatedAt": kb.created_at,
            })
        })
        .collect();
    Ok(Json(json!({ "knowledgeBaseSummaries": summaries })))
}

// ---------------------------------------------------------------------------------------------
// ApplyGuardrail

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApplyGuardrailRequest {
    /// `INPUT` or `OUTPUT`.
    source: String,
    content: Vec<Value>,
    #[serde(default)]
    output_scope: Option<String>,
}

/// Bedrock's names of Basalt's entity types.
fn pii_type(name: &str) -> &str {
    match name {
        "CREDIT_CARD" => "CREDIT_DEBIT_CARD_NUMBER",
        "IBAN" => "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
        "US_SSN" => "US_SOCIAL_SECURITY_NUMBER",
        "URL_CREDENTIALS" | "SECRET" => "PASSWORD",
        other => other,
    }
}

fn policy_action(action: Action) -> &'static str {
    match action {
        Action::None => "NONE",
        Action::Anonymize => "ANONYMIZED",
        Action::Block => "BLOCKED",
    }
}

/// Bedrock's assessment of one checked text.
fn assessment(
    text: &str,
    findings: &[basalt_guard::config::Assessment],
    pii_names: &[String],
) -> Value {
    let (mut topics, mut filters, mut custom_words, mut managed) = (vec![], vec![], vec![], vec![]);
    let (mut entities, mut regexes) = (vec![], vec![]);
    for found in findings {
        let matched = text.get(found.start..found.end).unwrap_or_default();
        let action = policy_action(found.action);
        let topic_action = if found.action == Action::Block {
            "BLOCKED"
        } else {
            "NONE"
        };
        match found.policy {
            "denied_topics" => topics.push(
                json!({"name": found.name, "type": "DENY", "action": topic_action, "detected": true}),
            ),
            "prompt_attacks" => filters.push(json!({
                "type": "PROMPT_ATTACK", "confidence": "HIGH", "action": topic_action,
                "detected": true,
            })),
            "word_filters" if found.name == "profanity" => managed.push(
                json!({"match": matched, "type": "PROFANITY", "action": topic_action, "detected": true}),
            ),
            "word_filters" => custom_words
                .push(json!({"match": matched, "action": topic_action, "detected": true})),
            _ if pii_names.contains(&found.name) => regexes.push(json!({
                "name": found.name, "match": matched, "action": action, "detected": true,
            })),
            _ => entities.push(json!({
                "match": matched, "type": pii_type(&found.name), "action": action,
                "detected": true,
            })),
        }
    }
    let mut out = Map::new();
    if !topics.is_empty() {
        out.insert("topicPolicy".into(), json!({ "topics": topics }));
    }
    if !filters.is_empty() {
        out.insert("contentPolicy".into(), json!({ "filters": filters }));
    }
    if !custom_words.is_empty() || !managed.is_empty() {
        out.insert(
            "wordPolicy".into(),
            json!({"customWords": custom_words, "managedWordLists": managed}),
        );
    }
    if !entities.is_empty() || !regexes.is_empty() {
        out.insert(
            "sensitiveInformationPolicy".into(),
            json!({"piiEntities": entities, "regexes": regexes}),
        );
    }
    Value::Object(out)
}

/// The names of a guardrail's own patterns (Bedrock reports them as `regexes`).
fn custom_patterns(active: &crate::guard::ActiveGuardrail) -> Vec<String> {
    active
        .guardrail
        .config()
        .sensitive_information
        .regexes
        .iter()
        .map(|regex| regex.name.clone())
        .collect()
}

/// Converse's `trace.guardrail`: what the guardrail found in the question and the answer.
fn guardrail_trace(
    active: &crate::guard::ActiveGuardrail,
    question: &str,
    reply: &Reply,
) -> Option<Value> {
    let report = reply.guard.as_ref()?;
    let names = custom_patterns(active);
    let mut trace = json!({
        "inputAssessment": {active.name.clone(): assessment(question, &report.input, &names)},
        "outputAssessments": {
            active.name.clone(): [assessment(&reply.answer.answer, &report.output, &names)],
        },
    });
    if let Some(source) = reply.blocked {
        trace["actionReason"] = json!(format!(
            "Guardrail {} version {} blocked the {}.",
            active.name,
            active.version,
            source.as_str()
        ));
    }
    Some(json!({ "guardrail": trace }))
}

pub(crate) async fn apply_guardrail(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((identifier, version)): Path<(String, String)>,
    ApiJson(request): ApiJson<ApplyGuardrailRequest>,
) -> Result<Json<Value>, ApiError> {
    let source = match request.source.as_str() {
        "INPUT" => Source::Input,
        "OUTPUT" => Source::Output,
        other => {
            return Err(ApiError::invalid(format!(
                "source {other:?} is not INPUT or OUTPUT"
            )));
        }
    };
    let texts: Vec<String> = request
        .content
        .iter()
        .enumerate()
        .map(|(index, block)| {
            block
                .pointer("/text/text")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "content[{index}]: only text blocks ({{\"text\": {{\"text\": …}}}}) are supported"
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    if texts.is_empty() {
        return Err(ApiError::invalid(
            "content must hold at least one text block",
        ));
    }
    let name = model_name(&identifier);
    require_named(&state, &caller, "guardrail:Apply", &identifier, name)?;
    let reference = guardrail_reference(&identifier, Some(&version));
    let active = crate::guard::resolve(&state, &caller, &reference).await?;
    let pii_names = custom_patterns(&active);
    let mut outputs = Vec::new();
    let mut assessments = Vec::new();
    let mut intervened = false;
    let mut blocked = None;
    let mut characters: usize = 0;
    for text in &texts {
        characters += text.chars().count();
        let checked = active.guardrail.check(text, source);
        if checked.outcome == Outcome::Blocked {
            active.audit_block(&state, &caller, source, &checked.assessments);
            blocked.get_or_insert_with(|| checked.text.clone());
        }
        intervened |= checked.outcome != Outcome::Passed;
        assessments.push(assessment(text, &checked.assessments, &pii_names));
        outputs.push(json!({ "text": checked.text }));
    }
    if let Some(message) = blocked {
        outputs = vec![json!({ "text": message })];
    } else if !intervened && request.output_scope.as_deref() != Some("FULL") {
        outputs.clear();
    }
    // One unit is up to 1,000 characters, as Bedrock counts them.
    let units = characters.div_ceil(1000);
    Ok(Json(json!({
        "usage": {
            "topicPolicyUnits": units, "contentPolicyUnits": units, "wordPolicyUnits": units,
            "sensitiveInformationPolicyUnits": units, "sensitiveInformationPolicyFreeUnits": 0,
            "contextualGroundingPolicyUnits": 0,
        },
        "action": if intervened { "GUARDRAIL_INTERVENED" } else { "NONE" },
        "actionReason": if intervened {
            format!("Guardrail {} version {} intervened.", active.name, active.version)
        } else {
            "No action.".to_owned()
        },
        "outputs": outputs,
        "assessments": assessments,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_and_guardrail_versions_map_to_names() {
        assert_eq!(
            model_name("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"),
            "amazon.titan-embed-text-v2:0"
        );
        assert_eq!(model_name("kb:handbook"), "kb:handbook");
        assert_eq!(guardrail_reference("pii", Some("DRAFT")), "pii");
        assert_eq!(guardrail_reference("pii", Some("2")), "pii:2");
        assert_eq!(guardrail_reference("pii", None), "pii");
        assert!(is_bedrock_path("/model/x/converse"));
        assert!(!is_bedrock_path("/v1/models"));
    }

    #[test]
    fn converse_content_is_text_only() {
        let request: ConverseRequest = serde_json::from_value(json!({
            "system": [{"text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"text": "Hi"}, {"guardContent": {"text": {"text": "there"}}}]}],
        }))
        .expect("parses");
        let messages = converse_messages(&request).expect("text");
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].content, "Hi\nthere");
        let image: ConverseRequest = serde_json::from_value(json!({
            "messages": [{"role": "user", "content": [{"image": {}}]}],
        }))
        .expect("parses");
        let error = converse_messages(&image).expect_err("images are refused");
        assert!(error.message.contains("\"image\""), "{}", error.message);
    }

    #[test]
    fn stream_frames_carry_the_event_type() {
        let bytes = event("messageStart", &json!({"role": "assistant"}));
        let message =
            aws_smithy_eventstream::frame::read_message_from(bytes.as_ref()).expect("a frame");
        let kind = message
            .headers()
            .iter()
            .find(|header| header.name().as_str() == ":event-type")
            .and_then(|header| header.value().as_string().ok())
            .map(|value| value.as_str().to_owned());
        assert_eq!(kind.as_deref(), Some("messageStart"));
        assert_eq!(message.payload().as_ref(), br#"{"role":"assistant"}"#);
    }
}
