//! The native API for questions: search a knowledge base, answer from it (plain or streamed
//! as server-sent events), and conversation sessions. Request bodies are strict: an unknown
//! field is a 400, so a typo never silently changes a query.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use basalt_answer::{Answer, AnswerOptions, Ask, GuardedTurn, Reply, Session, Turn, TurnEvent};
use basalt_index::{Filter, Fusion, SearchMode};
use basalt_kb::{SearchOptions, SearchResults};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::kbs::Deleted;
use crate::turn::{CancelOnDrop, GuardrailTrace, Progress, Running};
use crate::{ApiJson, AppState, blocking};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchRequest {
    query: String,
    /// hybrid, bm25 or vector (default: the knowledge base's).
    #[serde(default)]
    mode: Option<SearchMode>,
    /// Hits to return (default 10, at most 1000).
    #[serde(default)]
    k: Option<usize>,
    /// A filter expression, as `basalt search --filter`: `tag = hr AND year >= 2020`.
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    fusion: Option<Fusion>,
}

fn parse_filter(filter: Option<&str>) -> Result<Option<Filter>, ApiError> {
    filter
        .map(Filter::parse)
        .transpose()
        .map_err(|error| ApiError::invalid(format!("filter: {error}")))
}

/// Most hits one search returns.
const MAX_K: usize = 1000;

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SearchResponse {
    knowledge_base: String,
    results: SearchResults,
}

pub(crate) async fn search(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<SearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    let k = request.k.unwrap_or(10);
    if k == 0 || k > MAX_K {
        return Err(ApiError::invalid(format!(
            "k must be between 1 and {MAX_K}"
        )));
    }
    if request.query.trim().is_empty() {
        return Err(ApiError::invalid("query must not be empty"));
    }
    let options = SearchOptions {
        mode: request.mode,
        k,
        filter: parse_filter(request.filter.as_deref())?,
        fusion: request.fusion,
        exact: false,
        reader: caller.reader(),
        bm25: None,
    };
    let kb = state.knowledge_base(&caller, &name).await?;
    // A key bound to a guardrail sees search hits as output of that guardrail: a search must not
    // show what an answer would anonymize or withhold.
    let bound = match &caller.guardrail {
        Some(reference) => Some(crate::guard::resolve(&state, &caller, reference).await?),
        None => None,
    };
    let embedder = state.embedder_for(&kb)?;
    let mut results =
        blocking(move || kb.search(Some(embedder.as_ref()), &request.query, &options)).await?;
    if let Some(active) = &bound {
        for hit in &mut results.hits {
            hit.text = active.output_text(&hit.text);
        }
    }
    Ok(Json(SearchResponse {
        knowledge_base: name,
        results,
    }))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnswerRequest {
    question: String,
    /// A filter expression limiting the passages, as in search.
    #[serde(default)]
    filter: Option<String>,
    /// Passages given to the model (1–50; default: the knowledge base's, else 5).
    #[serde(default)]
    passages: Option<usize>,
    /// Most tokens to generate (default 256).
    #[serde(default)]
    max_tokens: Option<usize>,
    /// Abstain below this question–passage similarity (default: the knowledge base's).
    #[serde(default)]
    min_relevance: Option<f32>,
    /// `extractive` (quote the sentence that answers) or `generative` (the model writes;
    /// default: the knowledge base's `answer.style`, else extractive).
    #[serde(default)]
    style: Option<basalt_kb::AnswerStyle>,
    /// Stream server-sent events: `sources`, `delta`, `replace` (a guardrail blocked the
    /// question or the answer), then `answer` (or `error`).
    #[serde(default)]
    stream: bool,
    /// Continue a conversation (`POST /v1/sessions`): earlier turns give follow-ups context,
    /// and this turn is recorded.
    #[serde(default)]
    session_id: Option<String>,
    /// A guardrail (`NAME` or `NAME:VERSION`) for the question and the answer (default: the
    /// knowledge base's `answer.guardrail`).
    #[serde(default)]
    guardrail: Option<String>,
    /// Add what the guardrail found and did (`guardrail`).
    #[serde(default)]
    guardrail_trace: bool,
    /// The chat model that writes a generative answer: a model registered with `basalt models
    /// add`, or the embedded one's name (default: the knowledge base's `answer.model`, else
    /// the embedded model).
    #[serde(default)]
    model: Option<String>,
}

/// An answer, with the session it was recorded in.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct AnswerResponse {
    #[serde(flatten)]
    answer: Answer,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    /// True when a guardrail blocked the question or the answer: `answer` is then its message.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    guardrail_blocked: bool,
    /// With `guardrail_trace`: what the guardrail found in the question and the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    guardrail: Option<GuardrailTrace>,
}

fn sse(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_else(|_| "{}".into()))
}

pub(crate) async fn answer(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<AnswerRequest>,
) -> Result<Response, ApiError> {
    if request
        .passages
        .is_some_and(|passages| passages == 0 || passages > 50)
    {
        return Err(ApiError::invalid("passages must be between 1 and 50"));
    }
    let history = match &request.session_id {
        Some(id) => session_history(&state, &caller, id, &name)?,
        None => Vec::new(),
    };
    state.check_max_tokens(request.max_tokens)?;
    let options = AnswerOptions {
        passages: request.passages,
        filter: parse_filter(request.filter.as_deref())?,
        min_relevance: request.min_relevance,
        style: request.style,
        max_tokens: request.max_tokens,
        reader: caller.reader(),
        ..AnswerOptions::default()
    };
    let kb = state.knowledge_base(&caller, &name).await?;
    let generator = state.answer_model(&caller, &kb, request.model.as_deref())?;
    let active = crate::guard::choose(
        &state,
        &caller,
        request.guardrail.as_deref(),
        kb.settings.answer.guardrail.as_deref(),
    )
    .await?;
    let ask = Ask::Kb {
        kb,
        question: request.question,
        history,
        options: Box::new(options),
    };
    let turn = GuardedTurn::new(ask, active.as_ref().map(|active| active.guardrail.clone()));
    let asked = turn.question().to_owned();
    let running = crate::turn::start(&state, &caller, turn, active.clone(), generator).await?;
    let session_id = request.session_id;
    let trace_wanted = request.guardrail_trace;
    let respond = move |state: &AppState, reply: Reply| {
        if let Some(id) = &session_id {
            record_turn(state, id, &asked, &reply.answer);
        }
        AnswerResponse {
            guardrail: GuardrailTrace::of(trace_wanted, active.as_ref(), &reply),
            guardrail_blocked: reply.blocked.is_some(),
            answer: reply.answer,
            session_id: session_id.clone(),
        }
    };

    if !request.stream {
        let reply = running.reply(state.request_timeout).await?;
        return Ok(Json(respond(&state, reply)).into_response());
    }

    let Running {
        progress: mut receiver,
        cancel,
    } = running;
    let (events, stream) = mpsc::channel::<Result<Event, Infallible>>(64);
    let timeout = state.request_timeout;
    tokio::spawn(async move {
        let _guard = CancelOnDrop(cancel);
        let relay = async {
            while let Some(progress) = receiver.recv().await {
                let (event, last) = match progress {
                    Progress::Event(TurnEvent::Sources(sources)) => {
                        (sse("sources", &json!({"sources": sources})), false)
                    }
                    Progress::Event(TurnEvent::Delta(text)) => {
                        (sse("delta", &json!({"text": text})), false)
                    }
                    Progress::Event(TurnEvent::Blocked(text)) => {
                        (sse("replace", &json!({"text": text})), false)
                    }
                    Progress::Done(reply) => (sse("answer", &respond(&state, *reply)), true),
                    Progress::Failed(error) => (sse("error", &error.body()), true),
                };
                if events.send(Ok(event)).await.is_err() || last {
                    // Gone: dropping the guard stops the generation.
                    return;
                }
            }
        };
        if tokio::time::timeout(timeout, relay).await.is_err() {
            let _ = events
                .send(Ok(sse("error", &ApiError::timed_out(timeout).body())))
                .await;
        }
    });
    Ok(Sse::new(ReceiverStream::new(stream))
        .keep_alive(KeepAlive::default())
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Sessions

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSession {
    /// The knowledge base the conversation is about.
    kb: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SessionView {
    #[serde(flatten)]
    session: Session,
    /// Seconds of inactivity after which the session is forgotten.
    ttl_seconds: u64,
    /// Whether turns keep the full prompt (`basalt serve --retain-prompts`).
    retains_prompts: bool,
}

fn session_view(state: &AppState, session: Session) -> SessionView {
    let policy = state.sessions.policy();
    SessionView {
        session,
        ttl_seconds: policy.ttl.as_secs(),
        retains_prompts: policy.retain_prompts,
    }
}

/// A live session the caller started; anyone else's is as unknown as a missing one.
/// The earlier turns of the caller's session `id`, which must be about knowledge base `kb`.
pub(crate) fn session_history(
    state: &AppState,
    caller: &Caller,
    id: &str,
    kb: &str,
) -> Result<Vec<basalt_answer::HistoryTurn>, ApiError> {
    let session = own_session(state, caller, id)?;
    if session.kb != kb {
        return Err(ApiError::invalid(format!(
            "session {id:?} belongs to knowledge base {:?}, not {kb:?}",
            session.kb
        )));
    }
    Ok(session.history())
}

/// Records a turn in its session, as the model saw it: what the guardrail anonymized stays out
/// of the history later turns send to the model. A store that fails loses the turn, not the
/// answer.
pub(crate) fn record_turn(state: &AppState, id: &str, question: &str, answer: &Answer) {
    if let Err(error) = state.sessions.record(id, Turn::new(question, answer)) {
        tracing::warn!(%error, session = %id, "the turn was not recorded");
    }
}

pub(crate) fn own_session(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Session, ApiError> {
    state
        .sessions
        .get(id)
        .map_err(ApiError::from)?
        .filter(|session| session.owner == caller.principal)
        .ok_or_else(|| session_not_found(id))
}

fn session_not_found(id: &str) -> ApiError {
    ApiError::new(
        Code::SessionNotFound,
        format!("no session {id:?}: it never existed or expired; start one with POST /v1/sessions"),
    )
}

pub(crate) async fn create_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<CreateSession>,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    state
        .security
        .require(&caller, "kb:Answer", &format!("kb/{}", request.kb))?;
    let kb = request.kb.clone();
    state
        .with_catalog(&caller, move |data| data.settings(&kb))
        .await?;
    let session = state.sessions.create(&request.kb, &caller.principal)?;
    Ok((StatusCode::CREATED, Json(session_view(&state, session))))
}

/// A conversation in a list: enough to pick it again.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SessionSummary {
    id: String,
    kb: String,
    /// Seconds since the Unix epoch.
    started: u64,
    turns: usize,
    /// Its first question (empty before the first turn).
    title: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SessionList {
    sessions: Vec<SessionSummary>,
}

pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<SessionList>, ApiError> {
    let sessions = state
        .sessions
        .list(&caller.principal)?
        .into_iter()
        .map(|overview| SessionSummary {
            id: overview.id,
            kb: overview.kb,
            started: overview.started,
            turns: overview.turns,
            title: overview.title,
        })
        .collect();
    Ok(Json(SessionList { sessions }))
}

pub(crate) async fn get_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let session = own_session(&state, &caller, &id)?;
    Ok(Json(session_view(&state, session)))
}

pub(crate) async fn delete_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    own_session(&state, &caller, &id)?;
    if state.sessions.delete(&id)? {
        Ok(Json(Deleted { deleted: id }))
    } else {
        Err(session_not_found(&id))
    }
}
