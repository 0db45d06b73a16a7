//! Grounded answers over a knowledge base: retrieval (hybrid, filters) → distinct passages that
//! fit the model's context window → a versioned prompt template → streamed generation →
//! citation markers resolved to passages (a marker naming no passage is removed and counted) →
//! span-level citations. When retrieval finds nothing similar enough, or the model says the
//! passages do not hold the answer, the answer is the fixed [`NOT_FOUND_ANSWER`], flagged as
//! abstained. Sessions keep conversations in memory and rewrite follow-ups before retrieval.
//!
//! No HTTP here: the CLI and the server are thin layers over [`GuardedTurn`], which runs one
//! conversation turn — a knowledge-base answer or a plain chat completion — through a guardrail
//! and reports what it shows as [`TurnEvent`]s.

pub mod calibrate;
mod citations;
mod error;
mod grounding;
mod guarded;
mod pipeline;
mod prompt;
mod quantity;
pub mod select;
mod session;
mod text;
mod turn;
mod verify;

pub use citations::{Citation, CitationKind, Reference, Span, Support};
pub use error::{AnswerError, Result};
pub use grounding::{GroundingReport, SentenceSupport, score_grounding};
pub use guarded::{AnswerCheck, check_answer, check_answer_grounded};
pub use pipeline::{
    AbstainReason, Answer, AnswerEvent, AnswerOptions, AnswerTimings, DEFAULT_CONTEXT_TOKENS,
    DEFAULT_MIN_RELEVANCE, DEFAULT_PASSAGES, Engines, MIN_GROUNDING, NOT_FOUND_ANSWER,
    SelectorInput, Usage, answer, relevance, selector_candidates, strip_markers,
};
pub use prompt::{DEFAULT_TEMPLATE_VERSION, HistoryTurn, default_template, location};
pub use session::conformance as session_conformance;
pub use session::{
    HISTORY_TURNS, Session, SessionError, SessionOverview, SessionPolicy, SessionStore, Sessions,
    Turn, standalone_query,
};
pub use turn::{Ask, Finish, GuardAction, GuardReport, GuardedTurn, Reply, TurnEvent};
