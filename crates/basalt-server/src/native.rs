//! The native API (first routes): list knowledge bases, search one, answer from one. Request
//! bodies are strict: an unknown field is a 400, so a typo never silently changes a query.

use axum::Json;
use axum::extract::{Path, State};
use basalt_answer::{AnswerOptions, Engines};
use basalt_index::{Filter, Fusion, SearchMode};
use basalt_kb::SearchOptions;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{ApiJson, AppState};

pub(crate) async fn list_kbs(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let data_dir = state.data_dir.clone();
    let kbs = tokio::task::spawn_blocking(move || data_dir.list())
        .await
        .map_err(|error| ApiError::internal(error.to_string()))??;
    Ok(Json(json!({"knowledge_bases": kbs})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchRequest {
    query: String,
    #[serde(default)]
    mode: Option<SearchMode>,
    #[serde(default)]
    k: Option<usize>,
    /// The filter expression of `basalt search --filter`.
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

pub(crate) async fn search(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
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
    };
    let kb = state.knowledge_base(&name).await?;
    let embedder = state.embedder.clone();
    let results = tokio::task::spawn_blocking(move || {
        basalt_kb::search(&kb, Some(embedder.as_ref()), &request.query, &options)
    })
    .await
    .map_err(|error| ApiError::internal(error.to_string()))??;
    Ok(Json(json!({"knowledge_base": name, "results": results})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnswerRequest {
    question: String,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    passages: Option<usize>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    min_relevance: Option<f32>,
}

pub(crate) async fn answer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<AnswerRequest>,
) -> Result<Json<Value>, ApiError> {
    if request
        .passages
        .is_some_and(|passages| passages == 0 || passages > 50)
    {
        return Err(ApiError::invalid("passages must be between 1 and 50"));
    }
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let options = AnswerOptions {
        passages: request.passages,
        filter: parse_filter(request.filter.as_deref())?,
        min_relevance: request.min_relevance,
        max_tokens: request.max_tokens,
        cancel: Some(cancel.clone()),
        ..AnswerOptions::default()
    };
    let kb = state.knowledge_base(&name).await?;
    let slot = state.scheduler.admit().await?;
    let worker_state = state.clone();
    let job = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let engines = Engines {
            embedder: worker_state.embedder.as_ref(),
            generator: worker_state.generator.as_ref(),
        };
        basalt_answer::answer(&kb, engines, &request.question, &[], &options, &mut |_| {})
    });
    let guard = crate::openai::CancelOnDrop(cancel);
    let answer = match tokio::time::timeout(state.request_timeout, job).await {
        Ok(joined) => joined.map_err(|error| ApiError::internal(error.to_string()))??,
        Err(_) => {
            return Err(ApiError::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("no answer within {} s", state.request_timeout.as_secs()),
            ));
        }
    };
    drop(guard);
    Ok(Json(
        serde_json::to_value(&answer).map_err(|error| ApiError::internal(error.to_string()))?,
    ))
}
