//! The OpenAI-compatible routes: `POST /v1/chat/completions` (plain and SSE streaming),
//! `POST /v1/embeddings`, `GET /v1/models`. A knowledge base is a model named `kb:NAME`: its
//! answers carry citations and sources as extra fields of the message.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use basalt_answer::{AnswerOptions, Ask, GuardedTurn, HistoryTurn, Reply, TurnEvent};
use basalt_model::{ChatMessage, ChatRole, DEFAULT_MAX_TOKENS, SamplingOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::guard::ActiveGuardrail;
use crate::turn::{CancelOnDrop, GuardrailTrace, Progress, Running};
use crate::{ApiJson, AppState, KB_MODEL_PREFIX};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

fn completion_id() -> String {
    basalt_core::id::new_id("chatcmpl-", 12)
}

// ---------------------------------------------------------------------------------------------
// /v1/models

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ModelCard {
    id: String,
    /// Always `model`.
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    /// For a model served elsewhere (`basalt models add`): the API it speaks (`openai`,
    /// `bedrock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    /// For a model served elsewhere: `chat` or `embedding`.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    /// For a chat model served elsewhere: false while its circuit breaker is open (its
    /// requests failed three times in a row lately and fail at once for 30 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    available: Option<bool>,
}

impl ModelCard {
    fn new(id: String) -> Self {
        ModelCard {
            id,
            object: "model",
            created: 0,
            owned_by: "basalt",
            provider: None,
            kind: None,
            available: None,
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ModelList {
    /// Always `list`.
    object: &'static str,
    data: Vec<ModelCard>,
}

pub(crate) async fn models(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ModelList>, ApiError> {
    let mut data = vec![
        ModelCard::new(state.chat_model.clone()),
        ModelCard::new(state.embedding_model.clone()),
    ];
    for listed in state.chat_models.listed()? {
        let mut card = ModelCard::new(listed.name);
        card.provider = Some(listed.provider);
        card.kind = Some(listed.kind.as_str());
        card.available = Some(listed.available);
        data.push(card);
    }
    let kbs = state.with_catalog(&caller, |data| data.list()).await?;
    for kb in kbs {
        data.push(ModelCard::new(format!("{KB_MODEL_PREFIX}{}", kb.name)));
    }
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}

// ---------------------------------------------------------------------------------------------
// /v1/embeddings

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub(crate) enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct EmbeddingsRequest {
    input: Value,
    model: String,
    #[serde(default)]
    encoding_format: Option<String>,
}

/// Most inputs in one embeddings request (OpenAI's limit).
const MAX_EMBEDDING_INPUTS: usize = 2048;

pub(crate) async fn embeddings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<EmbeddingsRequest>,
) -> Result<Json<EmbeddingList>, ApiError> {
    if request.model != state.embedding_model {
        return Err(ApiError::new(
            Code::ModelNotFound,
            format!(
                "no embedding model {:?}; this server embeds with {:?}",
                request.model, state.embedding_model
            ),
        ));
    }
    let texts = match serde_json::from_value::<EmbeddingInput>(request.input) {
        Ok(EmbeddingInput::One(text)) => vec![text],
        Ok(EmbeddingInput::Many(texts)) => texts,
        Err(_) => {
            return Err(ApiError::invalid(
                "input must be a string or an array of strings (token arrays are not supported)",
            ));
        }
    };
    if texts.is_empty() || texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::invalid(format!(
            "input must hold 1 to {MAX_EMBEDDING_INPUTS} strings"
        )));
    }
    if let Some(index) = texts.iter().position(|text| text.is_empty()) {
        return Err(ApiError::invalid(format!("input[{index}] is empty")));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "encoding_format {other:?} is not supported: use \"float\" or \"base64\""
            )));
        }
    };
    // An embedding batch takes its turn like a generation: the CPU runs one job at a time.
    let slot = state.scheduler.admit(caller.queue_key()).await?;
    let embedder = state.embedder.clone();
    let (vectors, tokens) = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let tokens: usize = texts
            .iter()
            .map(|text| embedder.count_tokens(text))
            .sum::<Result<usize, _>>()?;
        let vectors = if texts.len() <= 16 {
            embedder.embed_queries(&texts)?
        } else {
            embedder.embed_batch(&texts)?
        };
        Ok::<_, basalt_model::ModelError>((vectors, tokens))
    })
    .await
    .map_err(|error| ApiError::internal(error.to_string()))??;
    let data = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingOut {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = vector
                    .iter()
                    .flat_map(|value| value.to_le_bytes())
                    .collect();
                Vector::Base64(crate::base64_encode(&bytes))
            } else {
                Vector::Float(vector.clone())
            },
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list",
        data,
        model: state.embedding_model.clone(),
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

/// An embedding: floats, or with `encoding_format: "base64"` the little-endian f32 bytes.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub(crate) enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct EmbeddingOut {
    /// Always `embedding`.
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct EmbeddingUsage {
    prompt_tokens: usize,
    total_tokens: usize,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct EmbeddingList {
    /// Always `list`.
    object: &'static str,
    data: Vec<EmbeddingOut>,
    model: String,
    usage: EmbeddingUsage,
}

// ---------------------------------------------------------------------------------------------
// /v1/chat/completions

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct MessageIn {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct ChatRequest {
    model: String,
    messages: Vec<MessageIn>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    n: Option<u32>,
    /// Basalt: a guardrail (`NAME` or `NAME:VERSION`) for the input and the output; a
    /// `kb:NAME` model uses its knowledge base's guardrail when none is given.
    #[serde(default)]
    guardrail: Option<String>,
    /// Basalt: add what the guardrail found and did to the message (`guardrail`).
    #[serde(default)]
    guardrail_trace: bool,
    /// Basalt, for a `kb:NAME` model: `extractive` (quote the sentences that answer) or
    /// `generative` (the model writes); default: the knowledge base's `answer.style`, else
    /// extractive.
    #[serde(default)]
    style: Option<basalt_kb::AnswerStyle>,
}

/// A validated chat request.
struct Chat {
    turn: ChatTurn,
    stream: bool,
    include_usage: bool,
    guardrail_trace: bool,
}

fn text_of(content: Option<Content>, index: usize) -> Result<String, ApiError> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(text)) => Ok(text),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for part in parts {
                if part.kind != "text" {
                    return Err(ApiError::invalid(format!(
                        "messages[{index}]: content parts of type {:?} are not supported (text only)",
                        part.kind
                    )));
                }
                text.push_str(part.text.as_deref().unwrap_or_default());
            }
            Ok(text)
        }
    }
}

fn validate(request: ChatRequest) -> Result<Chat, ApiError> {
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n must be 1: one completion per request"));
    }
    if request.messages.is_empty() {
        return Err(ApiError::invalid("messages must not be empty"));
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    for (index, message) in request.messages.into_iter().enumerate() {
        let role = match message.role.as_str() {
            "system" | "developer" => ChatRole::System,
            "user" => ChatRole::User,
            "assistant" => ChatRole::Assistant,
            other => {
                return Err(ApiError::invalid(format!(
                    "messages[{index}].role {other:?} is not supported: use system, user or assistant"
                )));
            }
        };
        messages.push(ChatMessage::new(role, text_of(message.content, index)?));
    }
    let max_tokens = request.max_completion_tokens.or(request.max_tokens);
    let stop = match request.stop {
        None => Vec::new(),
        Some(Stop::One(stop)) => vec![stop],
        Some(Stop::Many(stops)) => stops,
    };
    let seed = request
        .seed
        .map(|seed| u32::try_from(seed.rem_euclid(1 << 32)).unwrap_or_default());
    Ok(Chat {
        turn: ChatTurn {
            model: request.model,
            messages,
            max_tokens,
            sampling: SamplingOptions {
                max_tokens: max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
                temperature: request.temperature.unwrap_or(0.0),
                top_p: request.top_p.unwrap_or(1.0),
                seed,
                stop,
            },
            guardrail: request.guardrail,
            style: request.style,
        },
        stream: request.stream,
        include_usage: request
            .stream_options
            .is_some_and(|options| options.include_usage),
        guardrail_trace: request.guardrail_trace,
    })
}

#[derive(Debug, Clone, Copy, Default, Serialize, schemars::JsonSchema)]
pub(crate) struct UsageOut {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

impl UsageOut {
    fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        UsageOut {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// What a `kb:NAME` answer adds to the assistant message (and to the last streamed delta).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct KbFields {
    /// The answer text (the same as `content`).
    answer: String,
    abstained: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    abstain_reason: Option<basalt_answer::AbstainReason>,
    extractive: bool,
    citations: Vec<basalt_answer::Citation>,
    sources: Vec<basalt_answer::Reference>,
    removed_markers: usize,
    template_version: String,
}

impl KbFields {
    fn of(answer: &basalt_answer::Answer) -> Self {
        KbFields {
            answer: answer.answer.clone(),
            abstained: answer.abstained,
            abstain_reason: answer.abstain_reason,
            extractive: answer.extractive,
            citations: answer.citations.clone(),
            sources: answer.sources.clone(),
            removed_markers: answer.removed_markers,
            template_version: answer.template_version.clone(),
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct MessageOut {
    /// Always `assistant`.
    role: &'static str,
    content: String,
    #[serde(flatten)]
    kb: Option<KbFields>,
    /// With `guardrail_trace`: what the guardrail found in the input and the output.
    #[serde(skip_serializing_if = "Option::is_none")]
    guardrail: Option<GuardrailTrace>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Choice {
    index: usize,
    message: MessageOut,
    /// `stop`, `length`, or `content_filter` when a guardrail blocked the input or output.
    finish_reason: &'static str,
}

/// A chat completion (not streamed).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ChatCompletion {
    id: String,
    /// Always `chat.completion`.
    object: &'static str,
    created: u64,
    model: String,
    choices: Vec<Choice>,
    usage: UsageOut,
}

/// The last message of a chat as a knowledge-base question, and the user–assistant pairs
/// before it as the conversation's earlier turns. A client's system messages are ignored: the
/// KB's own template holds the instructions, and a request may not replace them.
fn kb_question(messages: Vec<ChatMessage>) -> (String, Vec<HistoryTurn>) {
    let mut history = Vec::new();
    let mut pending: Option<String> = None;
    let mut question = String::new();
    let last = messages.len() - 1;
    for (index, message) in messages.into_iter().enumerate() {
        match message.role {
            ChatRole::User if index == last => question = message.content,
            ChatRole::User => pending = Some(message.content),
            ChatRole::Assistant => {
                if let Some(asked) = pending.take() {
                    history.push(HistoryTurn {
                        question: asked,
                        answer: message.content,
                    });
                }
            }
            ChatRole::System => {}
        }
    }
    (question, history)
}

/// A chat turn as the OpenAI and Bedrock routes both ask for it.
pub(crate) struct ChatTurn {
    /// The embedded model's name, a registered model, or `kb:NAME`.
    pub(crate) model: String,
    pub(crate) messages: Vec<ChatMessage>,
    /// As asked; absent, a plain chat gets what the context window leaves, up to
    /// [`DEFAULT_MAX_TOKENS`], and a knowledge-base answer its pipeline's default.
    pub(crate) max_tokens: Option<usize>,
    pub(crate) sampling: SamplingOptions,
    pub(crate) guardrail: Option<String>,
    pub(crate) style: Option<basalt_kb::AnswerStyle>,
}

/// A started chat turn: its progress, the guardrail it runs through, and whether it answers
/// from a knowledge base.
pub(crate) struct StartedChat {
    pub(crate) running: Running,
    pub(crate) active: Option<ActiveGuardrail>,
    pub(crate) knowledge: bool,
}

/// Starts a chat turn: a plain chat with the named model, or a `kb:NAME` answer (which needs
/// `kb:Answer` on it), through the guardrail the key, the request or the knowledge base names.
pub(crate) async fn start_chat(
    state: &AppState,
    caller: &Caller,
    chat: ChatTurn,
) -> Result<StartedChat, ApiError> {
    state.check_max_tokens(chat.max_tokens)?;
    let (kb, generator) = if let Some(name) = chat.model.strip_prefix(KB_MODEL_PREFIX) {
        // Answering from a knowledge base is reading it: the caller needs kb:Answer on it,
        // checked before its existence is revealed.
        state
            .security
            .require(caller, "kb:Answer", &format!("kb/{name}"))?;
        let kb = state.knowledge_base(caller, name).await?;
        let generator = state.answer_model(caller, &kb, None)?;
        (Some(kb), generator)
    } else {
        (None, state.chat_model_named(caller, &chat.model)?)
    };
    if kb.is_some()
        && chat
            .messages
            .last()
            .is_none_or(|message| message.role != ChatRole::User)
    {
        return Err(ApiError::invalid(
            "a knowledge-base answer needs the last message to be the user's question",
        ));
    }
    let kb_guardrail = kb
        .as_ref()
        .and_then(|kb| kb.settings.answer.guardrail.clone());
    let active = crate::guard::choose(
        state,
        caller,
        chat.guardrail.as_deref(),
        kb_guardrail.as_deref(),
    )
    .await?;
    let knowledge = kb.is_some();
    let ask = match kb {
        Some(kb) => {
            let (question, history) = kb_question(chat.messages);
            Ask::Kb {
                kb,
                question,
                history,
                options: Box::new(AnswerOptions {
                    max_tokens: chat.max_tokens,
                    temperature: chat.sampling.temperature,
                    seed: chat.sampling.seed,
                    reader: caller.reader(),
                    style: chat.style,
                    ..AnswerOptions::default()
                }),
            }
        }
        None => Ask::Chat {
            messages: chat.messages,
            sampling: chat.sampling,
            max_tokens: chat.max_tokens,
        },
    };
    let turn = GuardedTurn::new(ask, active.as_ref().map(|active| active.guardrail.clone()));
    let running = crate::turn::start(state, caller, turn, active.clone(), generator).await?;
    Ok(StartedChat {
        running,
        active,
        knowledge,
    })
}

pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let chat = validate(request)?;
    let trace_wanted = chat.guardrail_trace;
    let (model, stream, include_usage) = (chat.turn.model.clone(), chat.stream, chat.include_usage);
    let StartedChat {
        running,
        active,
        knowledge,
    } = start_chat(&state, &caller, chat.turn).await?;
    // The assistant message's content, its extra fields, the finish reason and the usage.
    let finished = move |reply: Reply| {
        let trace = GuardrailTrace::of(trace_wanted, active.as_ref(), &reply);
        let extra = (knowledge && reply.blocked.is_none()).then(|| KbFields::of(&reply.answer));
        let usage = UsageOut::new(
            reply.answer.usage.prompt_tokens,
            reply.answer.usage.completion_tokens,
        );
        (
            reply.answer.answer,
            extra,
            trace,
            reply.finish.openai(),
            usage,
        )
    };
    let id = completion_id();
    let created = now();
    if !stream {
        let reply = running.reply(state.request_timeout).await?;
        let (content, kb, guardrail, finish_reason, usage) = finished(reply);
        return Ok(Json(ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model,
            choices: vec![Choice {
                index: 0,
                message: MessageOut {
                    role: "assistant",
                    content,
                    kb,
                    guardrail,
                },
                finish_reason,
            }],
            usage,
        })
        .into_response());
    }

    // Streaming: OpenAI's chat.completion.chunk events, then [DONE].
    let Running {
        progress: mut receiver,
        cancel,
    } = running;
    let (events, stream) = mpsc::channel::<Result<Event, Infallible>>(64);
    let timeout = state.request_timeout;
    tokio::spawn(async move {
        let _guard = CancelOnDrop(cancel);
        let chunk = |delta: Value, finish: Option<&str>| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            })
        };
        let send = |value: Value| Ok(Event::default().data(value.to_string()));
        if events
            .send(send(chunk(
                json!({"role": "assistant", "content": ""}),
                None,
            )))
            .await
            .is_err()
        {
            return;
        }
        // True when the stream ended normally, false when the client went away.
        let relay = async {
            // An OpenAI stream cannot take text back: the guardrail's message follows what was
            // shown, after a blank line.
            let mut shown = false;
            while let Some(progress) = receiver.recv().await {
                let text = match progress {
                    Progress::Event(TurnEvent::Sources(_)) => continue,
                    Progress::Event(TurnEvent::Delta(text)) => text,
                    Progress::Event(TurnEvent::Blocked(text)) => {
                        if shown {
                            format!("\n\n{text}")
                        } else {
                            text
                        }
                    }
                    Progress::Done(reply) => {
                        let (_, extra, trace, finish_reason, usage) = finished(*reply);
                        let mut delta = extra
                            .and_then(|extra| serde_json::to_value(extra).ok())
                            .unwrap_or_else(|| json!({}));
                        if let (Some(trace), Some(fields)) = (trace, delta.as_object_mut()) {
                            fields.insert("guardrail".into(), json!(trace));
                        }
                        if events
                            .send(send(chunk(delta, Some(finish_reason))))
                            .await
                            .is_err()
                        {
                            return false;
                        }
                        if include_usage {
                            let usage = json!({
                                "id": id, "object": "chat.completion.chunk", "created": created,
                                "model": model, "choices": [], "usage": usage,
                            });
                            let _ = events.send(send(usage)).await;
                        }
                        break;
                    }
                    Progress::Failed(error) => {
                        let _ = events.send(send(json!(error.body()))).await;
                        break;
                    }
                };
                if text.is_empty() {
                    continue;
                }
                shown = true;
                if events
                    .send(send(chunk(json!({"content": text}), None)))
                    .await
                    .is_err()
                {
                    // The client went away: dropping the guard cancels the generation.
                    return false;
                }
            }
            true
        };
        match tokio::time::timeout(timeout, relay).await {
            Ok(true) => {}
            // The client went away: dropping the guard cancels the generation.
            Ok(false) => return,
            Err(_) => {
                let _ = events
                    .send(send(json!(ApiError::timed_out(timeout).body())))
                    .await;
            }
        }
        let _ = events.send(Ok(Event::default().data("[DONE]"))).await;
    });
    Ok(Sse::new(ReceiverStream::new(stream))
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<Chat, ApiError> {
        validate(serde_json::from_value(body).expect("deserializes"))
    }

    #[test]
    fn chat_requests_are_validated_like_openai_does() {
        let chat = request(json!({
            "model": "m",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
            ],
            "max_completion_tokens": 7, "max_tokens": 99, "stop": "END", "seed": -1,
            "stream": true, "stream_options": {"include_usage": true},
        }))
        .expect("valid");
        assert_eq!(chat.turn.messages[0].role, ChatRole::System);
        assert_eq!(chat.turn.messages[1].content, "Hi there");
        assert_eq!(
            chat.turn.sampling.max_tokens, 7,
            "max_completion_tokens wins"
        );
        assert_eq!(chat.turn.sampling.stop, ["END"]);
        assert_eq!(chat.turn.sampling.seed, Some(u32::MAX));
        assert!(chat.stream && chat.include_usage);

        for (body, expected) in [
            (json!({"model": "m", "messages": []}), "must not be empty"),
            (
                json!({"model": "m", "n": 3, "messages": [{"role": "user", "content": "x"}]}),
                "n must be 1",
            ),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
                "\"tool\"",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "image_url",
            ),
        ] {
            let Err(error) = request(body) else {
                panic!("must be refused: {expected}");
            };
            assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST);
            assert!(error.message.contains(expected), "{}", error.message);
        }
    }
}
