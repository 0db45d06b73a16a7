//! Question → retrieval → context selection → prompt → generation → citations, streaming.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use basalt_index::{Filter, Fusion, Hit, Reader, SearchMode};
use basalt_kb::{AnswerStyle, KnowledgeBase, SearchOptions};
use basalt_model::{
    Embedder, GenerationEvent, GenerationRequest, Generator, Prompt, SamplingOptions,
};
use serde::Serialize;

use crate::citations::{Citation, Marker, MarkerFilter, Reference, cite};
use crate::error::{AnswerError, Result};
use crate::prompt::{HistoryTurn, default_template, messages};
use crate::select::{self, Candidate, Selector};
use crate::text::content_words;
use crate::verify::Gate;

/// The answer given when the documents do not hold one; always exactly this text.
pub const NOT_FOUND_ANSWER: &str = "I could not find the answer to this question in the documents.";

/// Passages given to the model by default.
pub const DEFAULT_PASSAGES: usize = 5;

/// Default least relevance of the retrieved passages to the question (the mean of the
/// question's cosine with the best sentence and with the best passage). Calibrated with MiniLM
/// on ClapNQ (see docs/answers.md); a KB can set its own (`answer.min_relevance`).
pub const DEFAULT_MIN_RELEVANCE: f32 = 0.59;

/// Default budget for passage text in the prompt, in embedding-model tokens: the sentences most
/// similar to the question, so that a small model reads what matters and the prompt stays
/// short (prompt evaluation dominates the time to first token on a CPU).
pub const DEFAULT_CONTEXT_TOKENS: usize = 128;

/// Below this share of its content words found in the passages, a generated sentence is not
/// shown; when no sentence of a generation passes, the answer is the passage sentence that best
/// matches the question.
pub const MIN_GROUNDING: f64 = 0.5;

/// Per-question choices; `None` takes the knowledge base's setting or Basalt's default.
#[derive(Debug, Clone, Default)]
pub struct AnswerOptions {
    pub passages: Option<usize>,
    pub mode: Option<SearchMode>,
    pub fusion: Option<Fusion>,
    pub filter: Option<Filter>,
    /// Answer only from documents this reader may read (`None`: every document).
    pub reader: Option<Reader>,
    pub min_relevance: Option<f32>,
    /// Quote the passages or let the model write (default: the KB's, else extractive).
    pub style: Option<AnswerStyle>,
    /// Passage text budget in embedding-model tokens (default [`DEFAULT_CONTEXT_TOKENS`]).
    pub context_tokens: Option<usize>,
    /// Most tokens to generate (default 256).
    pub max_tokens: Option<usize>,
    pub temperature: f32,
    pub seed: Option<u32>,
    /// Set by the caller to stop generating (a client that went away).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// A guardrail whose prompt-attack policy screens the retrieved passages: those that
    /// carry instructions for the model (indirect prompt injection) are left out.
    pub screen: Option<std::sync::Arc<basalt_guard::Guardrail>>,
}

/// Why an answer is "not found in the documents".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AbstainReason {
    /// Retrieval found no passage, or none similar enough to the question.
    NoRelevantPassages,
    /// The model said the passages do not hold the answer.
    ModelFoundNoAnswer,
    /// The question asks for a number, an amount or a date, and none of the sentences that
    /// best answer it states one.
    NoNumberStated,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct AnswerTimings {
    /// Query embedding and both searches.
    pub retrieval_ms: f64,
    /// From the start until the first token of the answer was generated.
    pub first_token_ms: f64,
    /// From the start until the first verified text was shown (a checked sentence, the
    /// extractive answer, or "not found").
    pub first_shown_ms: f64,
    pub generation_ms: f64,
    pub total_ms: f64,
}

/// A finished answer.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Answer {
    pub answer: String,
    pub abstained: bool,
    /// No generated sentence passed the check against the passages: the answer is the passage
    /// sentence that best matches the question.
    pub extractive: bool,
    /// Generated sentences that failed the check against the passages; none was shown.
    pub unverified_sentences: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abstain_reason: Option<AbstainReason>,
    pub citations: Vec<Citation>,
    /// The passages the model was given, numbered as in the prompt.
    pub sources: Vec<Reference>,
    /// Chunks retrieval found but the guardrail left out of the prompt, because they read as
    /// instructions to the model (indirect prompt injection).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld_passages: Vec<String>,
    /// Markers the model wrote that named no source; removed from the answer.
    pub removed_markers: usize,
    /// How well the retrieved passages match the question: the mean of the question's cosine
    /// similarity with their best sentence and with the best passage as a whole.
    pub relevance: Option<f32>,
    /// Share of the answer's content words found in the passages (1.0 when abstained).
    pub grounding: f64,
    /// The query retrieval ran (a follow-up is rewritten to stand alone).
    pub query: String,
    pub template_version: String,
    /// The chat model that was asked to write the answer — the fallback when the knowledge
    /// base's model failed (absent when none was asked: a quote or a "not found" decided
    /// before generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub usage: Usage,
    pub timings: AnswerTimings,
    /// The messages the model was given, as text (empty when it was not asked). Never
    /// serialized: sessions keep it only when configured to retain prompts.
    #[serde(skip)]
    pub prompt_text: String,
}

impl Answer {
    /// An answer that is just `text`: no citations, no sources, nothing generated (the
    /// starting point of the pipeline, and what a caller gives in place of one it refused).
    pub fn plain(text: String, query: String) -> Self {
        Answer {
            answer: text,
            abstained: false,
            extractive: false,
            unverified_sentences: 0,
            abstain_reason: None,
            citations: Vec::new(),
            sources: Vec::new(),
            withheld_passages: Vec::new(),
            removed_markers: 0,
            relevance: None,
            grounding: 1.0,
            query,
            template_version: String::new(),
            model: None,
            usage: Usage::default(),
            timings: AnswerTimings::default(),
            prompt_text: String::new(),
        }
    }
}

/// What an answer stream reports, in order: the sources once, then text. Text is only ever
/// added: each piece is a sentence that passed the check against the passages (or the
/// extractive answer, or "not found"), and nothing shown is taken back.
#[derive(Debug)]
pub enum AnswerEvent<'a> {
    Sources(&'a [Reference]),
    Delta(&'a str),
}

/// The engines an answer needs.
#[derive(Debug, Clone, Copy)]
pub struct Engines<'a> {
    pub embedder: &'a dyn Embedder,
    pub generator: &'a dyn Generator,
}

/// Answers `question` from `kb`, streaming through `observe`.
pub fn answer(
    kb: &KnowledgeBase,
    engines: Engines<'_>,
    question: &str,
    history: &[HistoryTurn],
    options: &AnswerOptions,
    observe: &mut dyn FnMut(AnswerEvent<'_>),
) -> Result<Answer> {
    let started = Instant::now();
    if question.trim().is_empty() {
        return Err(AnswerError::EmptyQuestion);
    }
    let settings = &kb.settings.answer;
    let template = settings.template.clone().unwrap_or_else(default_template);
    let min_relevance = options
        .min_relevance
        .or(settings.min_relevance)
        .unwrap_or(DEFAULT_MIN_RELEVANCE);
    let budget = options
        .context_tokens
        .unwrap_or(DEFAULT_CONTEXT_TOKENS)
        .max(16);
    let query = crate::session::standalone_query(question, history);
    // A follow-up retrieves with the earlier question too, but its sentences are chosen for
    // what it asks itself: "Who do the requests go to?" after a question about vacation days.
    let focus = Some(question.trim()).filter(|focus| *focus != query);
    let retrieved = retrieve(kb, engines.embedder, &query, focus, options)?;
    let relevance = retrieved.relevance();
    let (chunks, mut ranked) = (retrieved.chunks, retrieved.ranked);
    let retrieval_ms = elapsed_ms(started);

    let mut result = Answer::plain(String::new(), query.clone());
    result.withheld_passages = retrieved.withheld;
    result.relevance = relevance;
    result.template_version = template.version.clone();
    result.timings.retrieval_ms = retrieval_ms;
    if relevance.is_none_or(|score| score < min_relevance) {
        let reason = AbstainReason::NoRelevantPassages;
        return Ok(abstain(result, reason, started, observe));
    }
    // A question that asks for a quantity is answered by a sentence that states one, or not.
    // A follow-up asks what its own words ask: "Who approves them?" after "How many vacation
    // days do I get?" does not ask for a number.
    let asking = focus.unwrap_or(&query);
    let quantity = crate::quantity::asked(asking);
    if let Some(kind) = quantity
        && !prefer_quantity(&mut ranked, asking, kind, quantity_bonus())
    {
        let reason = AbstainReason::NoNumberStated;
        return Ok(abstain(result, reason, started, observe));
    }

    // Context: the best sentences within the budget, grouped by passage, best passage first,
    // as many passages as fit the model's window.
    let max_tokens = options.max_tokens.unwrap_or(256).max(1);
    let margin = extractive_margin();
    let floor = Floor {
        cosine: best_cosine(&ranked).map_or(f32::MIN, |best| best - SENTENCE_SPREAD),
        merit: ranked.first().map_or(f32::MIN, |best| best.merit - margin),
    };
    let mut sources = compose_passages(engines.embedder, &chunks, &ranked, budget, floor)?;
    let quoted = match quantity {
        Some(kind) => {
            let stating: Vec<Sentence> = ranked
                .iter()
                .filter(|sentence| crate::quantity::states(&sentence.text, asking, kind))
                .cloned()
                .collect();
            extractive_choice(&stating, &sources, margin)
        }
        None => extractive_choice(&ranked, &sources, margin),
    };
    if options.style.or(settings.style).unwrap_or_default() == AnswerStyle::Extractive {
        observe(AnswerEvent::Sources(&sources));
        result.sources = sources;
        let (answer, markers) = quote(&quoted, &result.sources);
        result.extractive = true;
        show(&answer, &mut result, started, observe);
        result.timings.first_token_ms = result.timings.first_shown_ms;
        return Ok(finish(result, answer, &markers, started));
    }
    let window = engines.generator.info().context_window;
    let (prompt, prompt_tokens) = loop {
        let prompt = Prompt::Chat(messages(&template, &sources, question, history));
        let tokens = engines.generator.tokenize_prompt(&prompt)?.len();
        if tokens + max_tokens <= window {
            break (prompt, tokens);
        }
        if sources.len() > 1 {
            sources.pop();
            continue;
        }
        // One passage too long for the window: keep its beginning.
        let Some(only) = sources.first_mut() else {
            return Err(AnswerError::ContextTooSmall { window, max_tokens });
        };
        let keep = only.text.chars().count() * window.saturating_sub(max_tokens) / (tokens + 1);
        if keep < 16 {
            return Err(AnswerError::ContextTooSmall { window, max_tokens });
        }
        only.text = only.text.chars().take(keep * 9 / 10).collect();
    };
    if let Prompt::Chat(messages) = &prompt {
        result.prompt_text = messages
            .iter()
            .map(|message| format!("{}: {}", message.role.as_str(), message.content))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
    observe(AnswerEvent::Sources(&sources));
    result.model = Some(engines.generator.info().model_name.clone());

    // Generation, with markers filtered as the text streams.
    let stream = engines.generator.generate(GenerationRequest {
        prompt,
        sampling: SamplingOptions {
            max_tokens,
            temperature: options.temperature,
            seed: options.seed,
            ..SamplingOptions::default()
        },
    })?;
    let generation_started = Instant::now();
    let mut filter = MarkerFilter::new(sources.len());
    let mut gate = Gate::new(&sources);
    let mut text = String::new();
    let mut first_token_ms = None;
    let mut summary = None;
    let mut generated = 0;
    for event in stream {
        match event? {
            GenerationEvent::Token { text: piece, .. } => {
                if options
                    .cancel
                    .as_ref()
                    .is_some_and(|cancel| cancel.load(std::sync::atomic::Ordering::Relaxed))
                {
                    return Err(AnswerError::Cancelled);
                }
                generated += 1;
                first_token_ms.get_or_insert_with(|| elapsed_ms(started));
                text.push_str(&filter.push(&piece));
                if (gate.released.is_empty() && says_not_found(&text)) || is_degenerate(&text) {
                    // Dropping the stream stops the generation.
                    break;
                }
                let released = gate.advance(&text, &filter.markers, false);
                show(&released, &mut result, started, observe);
            }
            GenerationEvent::Done(done) => summary = Some(done),
        }
    }
    text.push_str(&filter.finish());
    result.timings.first_token_ms = first_token_ms.unwrap_or_else(|| elapsed_ms(started));
    result.timings.generation_ms = elapsed_ms(generation_started);
    if let Some(summary) = summary {
        if let Some(fallback) = &summary.fallback_model {
            result.model = Some(fallback.clone());
        }
        result.usage = Usage {
            prompt_tokens: summary.prompt_tokens,
            completion_tokens: summary.completion_tokens,
        };
    } else {
        // Stopped early: count what was fed and produced.
        result.usage = Usage {
            prompt_tokens,
            completion_tokens: generated,
        };
    }
    result.removed_markers = filter.removed;
    let said_not_found = gate.released.is_empty() && says_not_found(&text);
    if !said_not_found {
        let released = gate.advance(&text, &filter.markers, true);
        show(&released, &mut result, started, observe);
    }
    result.unverified_sentences = gate.dropped;
    let (mut answer, mut markers) = (
        std::mem::take(&mut gate.released),
        std::mem::take(&mut gate.markers),
    );
    drop(gate);
    result.sources = sources;
    if said_not_found || (answer.is_empty() && text.trim().is_empty()) {
        let reason = AbstainReason::ModelFoundNoAnswer;
        return Ok(abstain(result, reason, started, observe));
    }
    if answer.is_empty() {
        // No generated sentence held up: answer with the passage sentence the selector
        // judges to answer, cited.
        (answer, markers) = quote(&quoted, &result.sources);
        result.extractive = true;
        show(&answer, &mut result, started, observe);
    }
    Ok(finish(result, answer, &markers, started))
}

/// The answer as shown: its grounding, its citations, the total time.
fn finish(mut result: Answer, answer: String, markers: &[Marker], started: Instant) -> Answer {
    result.grounding = grounding(&answer, &result.sources);
    result.citations = cite(&answer, markers, &result.sources);
    result.answer = answer;
    result.timings.total_ms = elapsed_ms(started);
    result
}

/// What retrieval found for an answer.
struct Retrieved {
    chunks: Vec<Reference>,
    ranked: Vec<Sentence>,
    /// The selector's features of each of `ranked`.
    features: Vec<[f32; select::DIMENSIONS]>,
    /// Chunk ids the screen left out.
    withheld: Vec<String>,
    /// Cosine of the query with its most similar sentence of the passages (with the whole
    /// query, also when `ranked` is ranked for a follow-up's own question).
    best_sentence: Option<f32>,
    /// Cosine of the query with the most similar chunk, as a whole.
    best_passage: Option<f32>,
    /// Share of the query's content words no passage holds.
    unknown_words: f32,
}

impl Retrieved {
    /// How well the passages match the question: the mean of the question's cosine with the
    /// best sentence and with the best passage as a whole. The sentence says whether one
    /// statement is about the question; the passage, whether the text as a whole is about it
    /// rather than merely on its topic. Together they separate answerable from unanswerable
    /// ClapNQ questions better than either (ROC AUC 0.879 against 0.852 and 0.859; see
    /// docs/answers.md).
    ///
    /// Less [`UNKNOWN_WORD_PENALTY`] times the share of the question's content words that no
    /// passage of the knowledge base holds: a question about "Kubernetes" or a "sabbatical"
    /// embeds close to a manual on deployment or leave, but a manual that never names them
    /// does not answer it.
    fn relevance(&self) -> Option<f32> {
        let sentence = self.best_sentence?;
        let similarity = self
            .best_passage
            .map_or(sentence, |passage| (sentence + passage) / 2.0);
        Some(similarity - UNKNOWN_WORD_PENALTY * self.unknown_words)
    }
}

/// How much a question loses in relevance for each share of its content words the knowledge
/// base never uses (chosen on questions about Basalt's own docs, where it separates questions
/// the docs cannot answer; on ClapNQ's halves it changes the ROC AUC by under 0.003).
const UNKNOWN_WORD_PENALTY: f32 = 0.2;

/// Most of a question's words looked up for [`unknown_words`].
const MAX_LOOKUPS: usize = 24;

/// The share of `query`'s content words that no passage `options` lets the reader see holds
/// (a keyword search for each finds nothing).
fn unknown_words(
    kb: &KnowledgeBase,
    query: &str,
    vector: &[f32],
    options: &AnswerOptions,
) -> Result<f32> {
    let mut words = crate::text::unstemmed_content_words(query);
    // A pasted paragraph is not looked up word by word: its first words say enough.
    words.truncate(MAX_LOOKUPS);
    words.sort();
    words.dedup();
    if words.is_empty() {
        return Ok(0.0);
    }
    let lookup = SearchOptions {
        mode: Some(SearchMode::Bm25),
        k: 1,
        filter: options.filter.clone(),
        reader: options.reader.clone(),
        ..SearchOptions::default()
    };
    let mut unknown = 0;
    for word in &words {
        if kb.search_vector(word, vector, &lookup)?.is_empty() {
            unknown += 1;
        }
    }
    Ok(unknown as f32 / words.len() as f32)
}

/// Retrieval, the first half of an answer: the KB's search for passages, less those the
/// screen withholds, then the sentences of the distinct best ones ranked against the query
/// (against `focus` instead when given: a follow-up's own question).
fn retrieve(
    kb: &KnowledgeBase,
    embedder: &dyn Embedder,
    query: &str,
    focus: Option<&str>,
    options: &AnswerOptions,
) -> Result<Retrieved> {
    let passages_wanted = options
        .passages
        .or(kb.settings.answer.passages)
        .unwrap_or(DEFAULT_PASSAGES)
        .max(1);
    let vector = embedder.embed_query(query)?;
    let search = SearchOptions {
        mode: options.mode,
        k: passages_wanted * 3,
        filter: options.filter.clone(),
        reader: options.reader.clone(),
        fusion: options.fusion,
        ..SearchOptions::default()
    };
    let mut hits = kb.search_vector(query, &vector, &search)?;
    let mut withheld = Vec::new();
    if let Some(screen) = &options.screen {
        hits.retain(|hit| {
            let dropped = screen.drops_passage(&hit.text);
            if dropped {
                withheld.push(hit.chunk_id.clone());
            }
            !dropped
        });
    }
    let chunks = select_passages(&hits, passages_wanted);
    let (mut ranked, mut features) = rank_sentences(embedder, query, &vector, &chunks)?;
    let best_sentence = best_cosine(&ranked);
    if let Some(focus) = focus {
        let focus_vector = embedder.embed_query(focus)?;
        (ranked, features) = rank_sentences(embedder, focus, &focus_vector, &chunks)?;
    }
    // The most similar chunk by vector alone (hybrid ranks need not put it first), among those
    // the screen let through.
    let nearest = kb.search_vector(
        query,
        &vector,
        &SearchOptions {
            mode: Some(SearchMode::Vector),
            k: 1 + withheld.len(),
            ..search
        },
    )?;
    let best_passage = nearest
        .iter()
        .find(|hit| !withheld.contains(&hit.chunk_id))
        .map(|hit| hit.score);
    let unknown_words = unknown_words(kb, query, &vector, options)?;
    tracing::debug!(
        sentence = best_sentence,
        passage = best_passage,
        unknown_words,
        "relevance parts"
    );
    Ok(Retrieved {
        chunks,
        ranked,
        features,
        withheld,
        best_sentence,
        best_passage,
        unknown_words,
    })
}

/// The relevance an answer to `question` would be judged by (the mean of the question's cosine
/// with the best sentence of the passages retrieved for it and with the best passage), without
/// asking the model; `None` when retrieval finds nothing.
pub fn relevance(
    kb: &KnowledgeBase,
    embedder: &dyn Embedder,
    question: &str,
    options: &AnswerOptions,
) -> Result<Option<f32>> {
    Ok(retrieve(kb, embedder, question, None, options)?.relevance())
}

/// What an answer to a question would choose from: the sentences as the selector sees them.
#[derive(Debug, Clone)]
pub struct SelectorInput {
    /// The relevance the answer would be judged by ([`relevance`]).
    pub relevance: Option<f32>,
    /// Its parts: the question's cosine with the best sentence and with the nearest passage,
    /// and the share of its content words no passage holds.
    pub relevance_parts: (Option<f32>, Option<f32>, f32),
    /// Each sentence's text and features, best first by the built-in selector.
    pub candidates: Vec<(String, [f32; select::DIMENSIONS])>,
}

/// The sentences an answer to `question` would choose from, as the selector sees them.
/// `basalt eval selector` fits and measures selectors on these.
pub fn selector_candidates(
    kb: &KnowledgeBase,
    embedder: &dyn Embedder,
    question: &str,
    options: &AnswerOptions,
) -> Result<SelectorInput> {
    let retrieved = retrieve(kb, embedder, question, None, options)?;
    Ok(SelectorInput {
        relevance: retrieved.relevance(),
        relevance_parts: (
            retrieved.best_sentence,
            retrieved.best_passage,
            retrieved.unknown_words,
        ),
        candidates: retrieved
            .ranked
            .into_iter()
            .map(|sentence| sentence.text)
            .zip(retrieved.features)
            .collect(),
    })
}

/// An extractive answer: `sentences` quoted, each cited to the passage that holds it.
fn quote(sentences: &[String], sources: &[Reference]) -> (String, Vec<Marker>) {
    let mut answer = String::new();
    let mut markers = Vec::new();
    for sentence in sentences {
        let number = sources
            .iter()
            .find(|source| source.text.contains(sentence.as_str()))
            .map_or(1, |source| source.number);
        if !answer.is_empty() {
            answer.push(' ');
        }
        answer.push_str(sentence.trim());
        let start = answer.chars().count() + 1;
        answer.push_str(&format!(" [{number}]"));
        markers.push(Marker {
            start,
            end: answer.chars().count(),
            sources: vec![number],
        });
    }
    (answer, markers)
}

/// Shows verified text (nothing when `piece` is empty), noting when the first was shown.
fn show(
    piece: &str,
    result: &mut Answer,
    started: Instant,
    observe: &mut dyn FnMut(AnswerEvent<'_>),
) {
    if piece.is_empty() {
        return;
    }
    if result.timings.first_shown_ms == 0.0 {
        result.timings.first_shown_ms = elapsed_ms(started);
    }
    observe(AnswerEvent::Delta(piece));
}

fn abstain(
    mut result: Answer,
    reason: AbstainReason,
    started: Instant,
    observe: &mut dyn FnMut(AnswerEvent<'_>),
) -> Answer {
    result.answer = NOT_FOUND_ANSWER.into();
    result.abstained = true;
    result.abstain_reason = Some(reason);
    result.citations.clear();
    result.timings.first_shown_ms = elapsed_ms(started);
    observe(AnswerEvent::Delta(NOT_FOUND_ANSWER));
    result.timings.total_ms = elapsed_ms(started);
    result
}

/// A sentence of a retrieved chunk, its similarity to the question and the selector's score.
#[derive(Debug, Clone)]
struct Sentence {
    chunk: usize,
    position: usize,
    text: String,
    /// Cosine with the question.
    score: f32,
    /// How likely it is the sentence that answers ([`Selector`]).
    merit: f32,
}

/// The highest cosine among `sentences`.
fn best_cosine(sentences: &[Sentence]) -> Option<f32> {
    sentences
        .iter()
        .map(|sentence| sentence.score)
        .reduce(f32::max)
}

/// Longest sentence considered, in characters (a table row run together can be enormous).
const MAX_SENTENCE_CHARS: usize = 600;

/// Sentences scoring more than this below the best one are left out of the prompt: a small
/// model mixes unrelated passages into its answer.
const SENTENCE_SPREAD: f32 = 0.25;

/// Most sentences embedded per answer, taken from the best chunks first: embedding them is most
/// of the retrieval time.
const MAX_RANKED_SENTENCES: usize = 12;

/// Every sentence of `chunks` (up to [`MAX_RANKED_SENTENCES`]), scored by cosine with the
/// question (one batched embedding at interactive priority) and by the selector, best merit
/// first; and each one's selector features, in the same order.
fn rank_sentences(
    embedder: &dyn Embedder,
    question: &str,
    query: &[f32],
    chunks: &[Reference],
) -> Result<(Vec<Sentence>, Vec<[f32; select::DIMENSIONS]>)> {
    let mut candidates = Vec::new();
    for (chunk, reference) in chunks.iter().enumerate() {
        let texts: Vec<String> = crate::text::sentences(&reference.text)
            .into_iter()
            .map(|span| {
                let text: String = reference
                    .text
                    .chars()
                    .skip(span.start)
                    .take((span.end - span.start).min(MAX_SENTENCE_CHARS))
                    .collect();
                // A hard-wrapped sentence reads as one line in the prompt.
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect();
        // A table row is read with its header; the header and its rule are not sentences.
        for (position, text) in crate::text::with_table_headers(&texts)
            .into_iter()
            .enumerate()
        {
            let Some(text) = text else {
                continue;
            };
            if content_words(&text).is_empty() || candidates.len() == MAX_RANKED_SENTENCES {
                continue;
            }
            candidates.push(Candidate {
                chunk,
                position,
                text,
                cosine: 0.0,
            });
        }
    }
    let texts: Vec<String> = candidates.iter().map(|c| c.text.clone()).collect();
    let vectors = embedder.embed_queries(&texts)?;
    for (candidate, vector) in candidates.iter_mut().zip(vectors) {
        candidate.cosine = vector.iter().zip(query).map(|(a, b)| a * b).sum();
    }
    let features = select::features(question, &candidates, chunks);
    let selector = Selector::builtin();
    let mut ranked: Vec<(Sentence, [f32; select::DIMENSIONS])> = candidates
        .into_iter()
        .zip(features)
        .map(|(candidate, row)| {
            let sentence = Sentence {
                chunk: candidate.chunk,
                position: candidate.position,
                text: candidate.text,
                score: candidate.cosine,
                merit: selector.score(&row),
            };
            (sentence, row)
        })
        .collect();
    ranked.sort_by(|left, right| right.0.merit.total_cmp(&left.0.merit));
    for (sentence, _) in ranked.iter().take(5) {
        tracing::debug!(
            merit = sentence.merit,
            cosine = sentence.score,
            passage = sentence.chunk,
            text = %sentence.text.chars().take(100).collect::<String>(),
            "candidate sentence"
        );
    }
    Ok(ranked.into_iter().unzip())
}

/// Which sentences may enter the passages the model reads.
#[derive(Debug, Clone, Copy)]
struct Floor {
    /// Cosines below this are too far from the best one.
    cosine: f32,
    /// A sentence whose selector score is at least this is kept whatever its cosine: it may be
    /// quoted as the answer ("Only a salted SHA-256 of the secret is stored." answers "How is
    /// an API key stored?" at cosine 0.32, where the best cosine is 0.65).
    merit: f32,
}

/// The passages the model reads: the best sentences above `floor`, within `budget` tokens (the
/// best one always), each chunk's kept sentences in their original order (`…` where some were
/// left out), chunks ordered by their best sentence and numbered from 1.
fn compose_passages(
    embedder: &dyn Embedder,
    chunks: &[Reference],
    ranked: &[Sentence],
    budget: usize,
    floor: Floor,
) -> Result<Vec<Reference>> {
    let mut kept: Vec<&Sentence> = Vec::new();
    let mut used = 0;
    for sentence in ranked {
        if !kept.is_empty() && sentence.score < floor.cosine && sentence.merit < floor.merit {
            continue;
        }
        let tokens = embedder.count_tokens(&sentence.text)?.saturating_sub(2);
        if !kept.is_empty() && used + tokens > budget {
            continue;
        }
        used += tokens;
        kept.push(sentence);
    }
    let mut order: Vec<usize> = Vec::new();
    for sentence in &kept {
        if !order.contains(&sentence.chunk) {
            order.push(sentence.chunk);
        }
    }
    Ok(order
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            let mut parts: Vec<&Sentence> =
                kept.iter().copied().filter(|s| s.chunk == chunk).collect();
            parts.sort_by_key(|sentence| sentence.position);
            let mut text = String::new();
            let mut last: Option<usize> = None;
            for part in parts {
                match last {
                    Some(previous) if part.position == previous + 1 => text.push(' '),
                    Some(_) => text.push_str(" … "),
                    None if part.position > 0 => text.push_str("… "),
                    None => {}
                }
                text.push_str(&part.text);
                last = Some(part.position);
            }
            Reference {
                number: index + 1,
                text,
                ..chunks[chunk].clone()
            }
        })
        .collect())
}

/// How far below the best sentence's selector score the next may be and still be quoted with
/// it (`BASALT_EXTRACTIVE_MARGIN` overrides, for fitting it).
const EXTRACTIVE_MARGIN: f32 = 1.0;

fn extractive_margin() -> f32 {
    fitting_override("BASALT_EXTRACTIVE_MARGIN", EXTRACTIVE_MARGIN)
}

/// A constant read from the environment variable `name` when it holds a number: for fitting
/// it again on labelled questions.
fn fitting_override(name: &str, default: f32) -> f32 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// How far the selector's score of a sentence that states the quantity a question asks for is
/// raised over those that do not (`BASALT_QUANTITY_BONUS` overrides, for fitting it): the
/// sentence that states it may rank below one that only names the question's subject
/// ("Each pay period, you'll see a payroll deduction for medical insurance:" over
/// "Employee-family medical coverage: $254.61").
const QUANTITY_BONUS: f32 = 1.5;

fn quantity_bonus() -> f32 {
    fitting_override("BASALT_QUANTITY_BONUS", QUANTITY_BONUS)
}

/// Raises the score of the sentences that state the `kind` of quantity `question` asks for by
/// `bonus` and ranks them again; false when none ranks first even so (none within `bonus` of
/// the best states it): "What's the annual deductible?" over a handbook that only names the
/// insurer is not answered by "Medical insurance is provided via Blue Cross Blue Shield PPO."
fn prefer_quantity(
    ranked: &mut [Sentence],
    question: &str,
    kind: crate::quantity::Quantity,
    bonus: f32,
) -> bool {
    let stating: Vec<bool> = ranked
        .iter()
        .map(|sentence| crate::quantity::states(&sentence.text, question, kind))
        .collect();
    for (sentence, stated) in ranked.iter_mut().zip(&stating) {
        if *stated {
            sentence.merit += bonus;
        }
    }
    ranked.sort_by(|left, right| right.merit.total_cmp(&left.merit));
    ranked
        .first()
        .is_some_and(|best| crate::quantity::states(&best.text, question, kind))
}

/// The sentences an extractive answer quotes: the selector's best among the sentences the
/// model was shown, and the next best with it when its score is within `margin` of the
/// best's, in the order they come in their passages. A fragment (a heading, a command, a few
/// words) is quoted only when the passages hold nothing else: it does not answer anything.
fn extractive_choice(ranked: &[Sentence], sources: &[Reference], margin: f32) -> Vec<String> {
    let mut shown: Vec<&Sentence> = ranked
        .iter()
        .filter(|sentence| {
            sources
                .iter()
                .any(|s| s.text.contains(sentence.text.as_str()))
        })
        .collect();
    if shown.iter().any(|sentence| is_prose(&sentence.text)) {
        shown.retain(|sentence| is_prose(&sentence.text));
    }
    let Some(best) = shown.first().or(ranked.first().as_ref()).copied() else {
        return Vec::new();
    };
    let mut chosen = vec![best];
    // The next best that says something else: overlapping chunks hold the same sentence twice.
    if let Some(next) = shown
        .iter()
        .skip(1)
        .find(|sentence| sentence.text != best.text)
        && next.merit >= best.merit - margin
    {
        chosen.push(next);
    }
    chosen.sort_by_key(|sentence| (sentence.chunk, sentence.position));
    chosen
        .into_iter()
        .map(|sentence| sentence.text.clone())
        .collect()
}

/// Whether a sentence reads as prose that can be quoted as an answer: not a heading, table
/// row, shell line, code fence or markup, and at least five words (or a label and its
/// definition, "65534: User nobody."), most of them words. (A
/// sentence opening with inline code, "`basalt serve` serves …", is prose.)
fn is_prose(text: &str) -> bool {
    let trimmed = text.trim();
    if trimmed.starts_with(['#', '|', '$', '{', '<']) || trimmed.starts_with("```") {
        return false;
    }
    let (words, wordy) = word_counts(trimmed);
    (words >= 5 || crate::text::is_definition(trimmed)) && wordy * 2 >= words
}

/// Text that is not a sentence of prose: under six words (unless it is a label and its
/// definition), a heading, table row, command or code line, or mostly symbols.
pub(crate) fn is_fragment(text: &str) -> bool {
    let trimmed = text.trim();
    if trimmed.starts_with(['#', '|', '$', '`', '{', '<']) {
        return true;
    }
    let (words, wordy) = word_counts(trimmed);
    (words < 6 && !crate::text::is_definition(trimmed)) || wordy * 3 < words * 2
}

/// How many whitespace-separated words `text` has, and how many of them are mostly letters.
fn word_counts(text: &str) -> (usize, usize) {
    let words: Vec<&str> = text.split_whitespace().collect();
    let wordy = words
        .iter()
        .filter(|word| word.chars().filter(|c| c.is_alphabetic()).count() * 2 > word.len())
        .count();
    (words.len(), wordy)
}

/// Words that say nothing about the documents: an answer made only of them ("The answer to
/// this question is:") is no answer.
const FILLER: &str = "answer answers question questions context passage passages document documents \
                      information provided based given following source sources text here below";

/// An answer with no content beyond [`FILLER`] words.
pub(crate) fn is_vacuous(text: &str) -> bool {
    let filler: HashSet<String> = content_words(FILLER).into_iter().collect();
    content_words(&strip_markers(text))
        .iter()
        .all(|word| filler.contains(word))
}

/// Text without its `[n]` markers (their digits are not content).
pub fn strip_markers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close)
                if after[..close]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == ' ') =>
            {
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text that loops: the same sentence three times or more.
fn is_degenerate(text: &str) -> bool {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for span in crate::text::sentences(text) {
        let sentence: String = text
            .chars()
            .skip(span.start)
            .take(span.end - span.start)
            .collect::<String>()
            .to_lowercase();
        let count = counts.entry(sentence).or_default();
        *count += 1;
        if *count >= 3 {
            return true;
        }
    }
    false
}

fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Whether the model's reply (so far) is the "not found" phrase or a plain refusal.
pub(crate) fn says_not_found(text: &str) -> bool {
    let normalized: String = text
        .trim()
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    if text.contains("NOT FOUND") || normalized.starts_with("not found") {
        return true;
    }
    [
        "the sources do not contain",
        "the sources don't contain",
        "the sources do not provide",
        "the sources do not mention",
        "the provided sources do not",
        "there is no information",
        "i could not find",
        "i cannot find",
        "i don't know",
    ]
    .iter()
    .any(|phrase| normalized.starts_with(phrase))
}

/// Distinct passages in rank order, numbered from 1: a chunk that mostly overlaps one already
/// chosen (chunk overlap, the same text in two documents) is skipped.
fn select_passages(hits: &[Hit], wanted: usize) -> Vec<Reference> {
    let mut chosen: Vec<&Hit> = Vec::new();
    let mut texts: HashSet<String> = HashSet::new();
    for hit in hits {
        if chosen.len() == wanted {
            break;
        }
        let normalized: String = hit
            .text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        if !texts.insert(normalized) {
            continue;
        }
        let overlaps = chosen.iter().any(|kept| {
            kept.doc_id == hit.doc_id && {
                let shared = kept.char_end.min(hit.char_end) as i64
                    - kept.char_start.max(hit.char_start) as i64;
                let shorter = (hit.char_end - hit.char_start)
                    .min(kept.char_end - kept.char_start)
                    .max(1) as i64;
                shared * 2 > shorter
            }
        });
        if !overlaps {
            chosen.push(hit);
        }
    }
    chosen
        .into_iter()
        .enumerate()
        .map(|(index, hit)| Reference {
            number: index + 1,
            chunk_id: hit.chunk_id.clone(),
            doc_id: hit.doc_id.clone(),
            title: hit.title.clone(),
            source: hit.source.clone(),
            page: hit.page,
            heading_path: hit.heading_path.clone(),
            text: hit.text.clone(),
            score: hit.score,
        })
        .collect()
}

/// Share of the answer's content words (markers aside) that occur in the passages.
pub(crate) fn grounding(answer: &str, sources: &[Reference]) -> f64 {
    let words = content_words(answer);
    let words: Vec<&String> = words
        .iter()
        .filter(|word| !word.chars().all(|c| c.is_ascii_digit()) || word.len() > 2)
        .collect();
    if words.is_empty() {
        return 1.0;
    }
    let known: HashSet<String> = sources
        .iter()
        .flat_map(|source| content_words(&source.text))
        .collect();
    words.iter().filter(|word| known.contains(**word)).count() as f64 / words.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(doc: &str, ordinal: u32, start: u64, end: u64, text: &str) -> Hit {
        Hit {
            chunk_id: format!("{doc}#{ordinal}"),
            doc_id: doc.into(),
            score: 1.0,
            text: text.into(),
            source: format!("{doc}.txt"),
            title: None,
            heading_path: Vec::new(),
            page: None,
            char_start: start,
            char_end: end,
            content_hash: String::new(),
            ingested_at: String::new(),
            tags: Vec::new(),
            metadata: Default::default(),
        }
    }

    #[test]
    fn overlapping_and_duplicate_passages_are_skipped() {
        let hits = [
            hit("a", 0, 0, 100, "alpha text"),
            hit("a", 1, 80, 180, "alpha more"),
            hit("a", 2, 40, 140, "alpha overlap"),
            hit("b", 0, 0, 100, "Alpha  TEXT"),
            hit("c", 0, 0, 100, "gamma"),
        ];
        let chosen = select_passages(&hits, 5);
        let ids: Vec<&str> = chosen.iter().map(|r| r.chunk_id.as_str()).collect();
        assert_eq!(ids, ["a#0", "a#1", "c#0"]);
        assert_eq!(chosen[2].number, 3);
        assert_eq!(select_passages(&hits, 1).len(), 1);
    }

    #[test]
    fn a_quote_does_not_repeat_a_sentence_two_chunks_hold() {
        let said = "Plain text documentation is compressed with gzip unless it is small.";
        let other = "Large documentation goes into a separate documentation package.";
        let sentence = |chunk: usize, text: &str, merit: f32| Sentence {
            chunk,
            position: 0,
            text: text.into(),
            score: merit,
            merit,
        };
        let ranked = [
            sentence(0, said, 3.0),
            sentence(1, said, 2.9),
            sentence(1, other, 2.5),
        ];
        let sources = [Reference {
            number: 1,
            chunk_id: "d#0".into(),
            doc_id: "d".into(),
            title: None,
            source: "d.txt".into(),
            page: None,
            heading_path: Vec::new(),
            text: format!("{said} {other}"),
            score: 1.0,
        }];
        assert_eq!(extractive_choice(&ranked, &sources, 1.0), [said, other]);
        assert_eq!(extractive_choice(&ranked, &sources, 0.2), [said]);
    }

    #[test]
    fn a_sentence_stating_the_quantity_asked_for_is_preferred_within_the_bonus() {
        use crate::quantity::Quantity;
        let sentence = |text: &str, merit: f32| Sentence {
            chunk: 0,
            position: 0,
            text: text.into(),
            score: merit,
            merit,
        };
        let question = "What is the annual deductible on the medical plan?";
        let ranked = || {
            vec![
                sentence("Medical insurance is provided via Blue Cross.", 3.0),
                sentence("Limit yourself to 1 meet-up per year.", 2.9),
                sentence("Employee-only medical coverage costs $50.43.", 2.0),
            ]
        };
        let mut near = ranked();
        assert!(prefer_quantity(&mut near, question, Quantity::Amount, 1.5));
        assert_eq!(near[0].text, "Employee-only medical coverage costs $50.43.");
        assert!((near[0].merit - 3.5).abs() < 1e-6);
        let mut far = ranked();
        assert!(!prefer_quantity(&mut far, question, Quantity::Amount, 0.5));
        assert!(!prefer_quantity(&mut [], question, Quantity::Amount, 1.5));
    }

    #[test]
    fn not_found_phrases_are_recognised() {
        for text in [
            "NOT FOUND",
            "  Not found.",
            "The sources do not contain it",
            "x NOT FOUND",
        ] {
            assert!(says_not_found(text), "{text}");
        }
        for text in ["Granite is igneous [1].", "Not all rocks are found here"] {
            assert!(!says_not_found(text), "{text}");
        }
    }

    #[test]
    fn headings_commands_and_scraps_are_not_quoted_as_prose() {
        assert!(is_prose(
            "`basalt serve --local-demo` serves without keys for a local trial."
        ));
        assert!(is_prose("Only a salted SHA-256 of the secret is stored."));
        for scrap in [
            "# The web UI",
            "$ basalt ingest --kb handbook ./handbook --tag internal",
            "| key | value | meaning |",
            "Keys and principals",
            "--- 0x1f 0x2a 0x3b ---- ####",
        ] {
            assert!(!is_prose(scrap), "{scrap}");
        }
    }

    #[test]
    fn vacuous_answers_are_recognised() {
        assert!(is_vacuous("The answer to this question is:"));
        assert!(is_vacuous(
            "Based on the provided passages, the answer is [1]."
        ));
        assert!(!is_vacuous("Granite is an igneous rock [1]."));
        assert!(!is_vacuous("It opened in 1998 [2]."));
        assert_eq!(strip_markers("a [1] b [2, 3] c [x]"), "a  b  c [x]");
    }

    #[test]
    fn grounding_counts_passage_words() {
        let sources = [Reference {
            number: 1,
            chunk_id: "a#0".into(),
            doc_id: "a".into(),
            title: None,
            source: "a".into(),
            page: None,
            heading_path: Vec::new(),
            text: "Granite is an igneous rock.".into(),
            score: 1.0,
        }];
        assert_eq!(grounding("Granite is igneous [1].", &sources), 1.0);
        assert_eq!(grounding("Granite tastes sweet.", &sources), 1.0 / 3.0);
    }
}
