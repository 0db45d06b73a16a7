//! One conversation turn, guarded, whoever asks: the guardrail's input check, then an answer
//! from a knowledge base (retrieval, prompt, generation, citations) or a plain chat completion,
//! streamed through the guardrail's windowed output check, then the final check of the answer
//! and of the passages shown with it. What the turn shows comes out as [`TurnEvent`]s and what
//! it made of the guardrail as a [`GuardReport`]: the server's routes turn them into SSE frames
//! or JSON, the CLI into terminal output, and none of them conducts the guardrail itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use basalt_guard::config::Assessment;
use basalt_guard::{Guardrail, Outcome, Release, Source, StreamGuard};
use basalt_kb::KnowledgeBase;
use basalt_model::{
    ChatMessage, ChatRole, FinishReason, GenerationEvent, GenerationRequest, Generator, Prompt,
    SamplingOptions,
};
use serde::Serialize;

use crate::citations::Reference;
use crate::error::{AnswerError, Result};
use crate::grounding::GroundingReport;
use crate::guarded::check_answer_grounded;
use crate::pipeline::{Answer, AnswerEvent, AnswerOptions, Engines, Usage};
use crate::prompt::HistoryTurn;

/// What a turn is asked.
#[derive(Debug, Clone)]
pub enum Ask {
    /// An answer from a knowledge base, with the conversation's earlier turns.
    Kb {
        kb: Arc<KnowledgeBase>,
        question: String,
        history: Vec<HistoryTurn>,
        options: Box<AnswerOptions>,
    },
    /// A plain chat completion: the messages as given, no retrieval.
    Chat {
        messages: Vec<ChatMessage>,
        sampling: SamplingOptions,
        /// As the request gave it: absent, the completion gets what the context window leaves.
        max_tokens: Option<usize>,
    },
}

impl Ask {
    /// The question: a knowledge-base question, or the last user message of a chat.
    fn question(&self) -> &str {
        match self {
            Ask::Kb { question, .. } => question,
            Ask::Chat { messages, .. } => messages
                .iter()
                .rev()
                .find(|message| message.role == ChatRole::User)
                .map_or("", |message| message.content.as_str()),
        }
    }
}

/// What a turn shows, in order: its sources once, then text. Text is only added — each piece
/// a sentence checked against the passages and by the guardrail — unless the guardrail blocks
/// the turn, whose message then replaces it.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// The passages the answer is drawn from, as output may show them (knowledge bases only).
    Sources(Vec<Reference>),
    /// More of the answer.
    Delta(String),
    /// The guardrail blocked the turn: what was shown is withdrawn, and this is its message.
    /// Nothing follows.
    Blocked(String),
}

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// The answer is complete.
    Stop,
    /// A chat completion reached `max_tokens` or the end of the context window.
    Length,
    /// The guardrail blocked the input or the output: the answer is its message.
    Blocked,
}

impl Finish {
    /// The OpenAI `finish_reason`.
    pub fn openai(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Blocked => "content_filter",
        }
    }
}

/// What the guardrail did to a turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Nothing was changed or found short.
    #[default]
    None,
    /// Something was anonymized, blocked, or withheld from the prompt.
    Intervened,
    /// The grounding check fell short, with its action set to flag.
    Flagged,
}

/// What a guardrail found in a turn and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct GuardReport {
    /// `none`, `intervened` (anonymized, blocked or withheld), or `flagged` (the grounding check
    /// fell short with its action set to flag).
    pub action: GuardAction,
    /// Findings in the input, with what was done (byte offsets into each checked text).
    pub input: Vec<Assessment>,
    pub output: Vec<Assessment>,
    /// The contextual grounding scores of a knowledge-base answer, when the guardrail has a
    /// grounding policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grounding: Option<GroundingReport>,
    /// Chunks retrieval found but the prompt-attack policy left out of the prompt: they read
    /// as instructions to the model (indirect prompt injection).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld_passages: Vec<String>,
}

impl GuardReport {
    /// Adds output findings; any that acted (grounding aside) makes the turn `intervened`.
    fn record_output(&mut self, assessments: &[Assessment]) {
        if assessments.iter().any(|assessment| {
            assessment.action != basalt_guard::Action::None
                && assessment.policy != "contextual_grounding"
        }) {
            self.action = GuardAction::Intervened;
        }
        self.output.extend_from_slice(assessments);
    }
}

/// A finished turn.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The answer; when blocked, the guardrail's message (without citations or sources).
    pub answer: Answer,
    pub finish: Finish,
    /// Which side the guardrail blocked, if it did.
    pub blocked: Option<Source>,
    /// What the guardrail found and did (`None` without one).
    pub guard: Option<GuardReport>,
}

/// A turn whose input the guardrail has checked, ready to run.
#[derive(Debug)]
pub struct GuardedTurn {
    ask: Ask,
    guardrail: Option<Arc<Guardrail>>,
    report: GuardReport,
    /// The guardrail's message when it blocked the input.
    blocked: Option<String>,
}

impl GuardedTurn {
    /// Checks the input — every question the user asked, earlier ones included — with
    /// `guardrail`: what it anonymizes is what the model reads; what it blocks never reaches
    /// a model. The guardrail also screens a knowledge base's passages for planted instructions.
    pub fn new(mut ask: Ask, guardrail: Option<Arc<Guardrail>>) -> Self {
        let mut report = GuardReport::default();
        let mut blocked = None;
        if let Some(guardrail) = &guardrail {
            let texts: Vec<&mut String> = match &mut ask {
                Ask::Kb {
                    question,
                    history,
                    options,
                    ..
                } => {
                    options.screen = Some(guardrail.clone());
                    history
                        .iter_mut()
                        .map(|turn| &mut turn.question)
                        .chain(std::iter::once(question))
                        .collect()
                }
                Ask::Chat { messages, .. } => messages
                    .iter_mut()
                    .filter(|message| message.role == ChatRole::User)
                    .map(|message| &mut message.content)
                    .collect(),
            };
            for text in texts {
                let checked = guardrail.check(text, Source::Input);
                report.input.extend(checked.assessments);
                match checked.outcome {
                    Outcome::Passed => {}
                    Outcome::Anonymized => {
                        report.action = GuardAction::Intervened;
                        *text = checked.text;
                    }
                    Outcome::Blocked => {
                        report.action = GuardAction::Intervened;
                        blocked = Some(checked.text);
                        break;
                    }
                }
            }
        }
        GuardedTurn {
            ask,
            guardrail,
            report,
            blocked,
        }
    }

    /// The knowledge base the turn answers from, if it is a knowledge-base question.
    pub fn knowledge_base(&self) -> Option<&KnowledgeBase> {
        match &self.ask {
            Ask::Kb { kb, .. } => Some(kb),
            Ask::Chat { .. } => None,
        }
    }

    /// The guardrail's message when it blocked the input: the turn will run no model.
    pub fn blocked_input(&self) -> Option<&str> {
        self.blocked.as_deref()
    }

    /// What the guardrail found in the input.
    pub fn input_findings(&self) -> &[Assessment] {
        &self.report.input
    }

    /// The question as the model reads it (anonymized where the guardrail said so).
    pub fn question(&self) -> &str {
        self.ask.question()
    }

    /// Runs the turn, showing what it may through `emit` as it streams. Setting `cancel` stops
    /// the generation at its next token (the turn sets it itself when the output is blocked).
    pub fn run(
        self,
        engines: Engines<'_>,
        cancel: &Arc<AtomicBool>,
        emit: &mut dyn FnMut(TurnEvent),
    ) -> Result<Reply> {
        let GuardedTurn {
            ask,
            guardrail,
            mut report,
            blocked,
        } = self;
        let question = ask.question().to_owned();
        if let Some(message) = blocked {
            emit(TurnEvent::Blocked(message.clone()));
            return Ok(Reply {
                answer: Answer::plain(message, question),
                finish: Finish::Blocked,
                blocked: Some(Source::Input),
                guard: Some(report),
            });
        }
        let knowledge = matches!(ask, Ask::Kb { .. });
        let mut shown = Shown::new(guardrail.as_deref(), knowledge, cancel, emit);
        let result = match ask {
            Ask::Chat {
                messages,
                sampling,
                max_tokens,
            } => chat(
                engines.generator,
                messages,
                question.clone(),
                sampling,
                max_tokens,
                &mut shown,
            ),
            Ask::Kb {
                kb,
                question,
                history,
                mut options,
            } => {
                options.cancel = Some(cancel.clone());
                crate::pipeline::answer(&kb, engines, &question, &history, &options, &mut |event| {
                    shown.observe(&event);
                })
                .map(|answer| (answer, Finish::Stop))
            }
        };
        if result.is_ok() && shown.blocked.is_none() {
            shown.finish();
        }
        // A block stops the generation (its error, a cancellation, is the block's doing).
        if let Some(message) = shown.blocked.take() {
            report.record_output(&shown.findings());
            report.action = GuardAction::Intervened;
            return Ok(Reply {
                answer: Answer::plain(message, question),
                finish: Finish::Blocked,
                blocked: Some(Source::Output),
                guard: Some(report),
            });
        }
        let (answer, finish) = result?;
        let holds_all = shown.holds_all();
        let Some(guardrail) = shown.guardrail else {
            return Ok(Reply {
                answer,
                finish,
                blocked: None,
                guard: None,
            });
        };
        if !knowledge {
            // A chat completion is what its checked windows released.
            report.record_output(&shown.findings());
            return Ok(Reply {
                answer: Answer {
                    answer: std::mem::take(&mut shown.released),
                    ..answer
                },
                finish,
                blocked: None,
                guard: Some(report),
            });
        }
        // The whole answer and its passages, checked once more as one output.
        let mut answer = answer;
        let check = check_answer_grounded(guardrail, engines.embedder, &question, &mut answer)?;
        report.record_output(&check.assessments);
        if !answer.withheld_passages.is_empty() {
            report.withheld_passages = answer.withheld_passages.clone();
            report.action = GuardAction::Intervened;
        }
        report.grounding = check.grounding;
        if check.blocked {
            report.action = GuardAction::Intervened;
            (shown.emit)(TurnEvent::Blocked(answer.answer.clone()));
            return Ok(Reply {
                answer,
                finish: Finish::Blocked,
                blocked: Some(Source::Output),
                guard: Some(report),
            });
        }
        if check.ungrounded && report.action == GuardAction::None {
            report.action = GuardAction::Flagged;
        }
        if holds_all {
            // Held back for the grounding check: the checked answer is shown now.
            (shown.emit)(TurnEvent::Delta(answer.answer.clone()));
        }
        Ok(Reply {
            answer,
            finish,
            blocked: None,
            guard: Some(report),
        })
    }
}

/// A plain chat completion of `messages` (whose question is `asked`), streamed through
/// `shown`.
fn chat(
    generator: &dyn Generator,
    messages: Vec<ChatMessage>,
    asked: String,
    mut sampling: SamplingOptions,
    max_tokens: Option<usize>,
    shown: &mut Shown<'_, '_>,
) -> Result<(Answer, Finish)> {
    let prompt = Prompt::Chat(messages);
    sampling.max_tokens = generator.max_tokens_for(&prompt, max_tokens)?;
    let stream = generator.generate(GenerationRequest { prompt, sampling })?;
    let mut content = String::new();
    let mut completion_tokens = 0;
    let mut summary = None;
    for event in stream {
        if shown.cancel.load(Ordering::Relaxed) {
            // Dropping the stream stops the model.
            return Err(AnswerError::Cancelled);
        }
        match event? {
            GenerationEvent::Token { text, .. } => {
                completion_tokens += 1;
                if text.is_empty() {
                    continue;
                }
                content.push_str(&text);
                shown.delta(&text);
            }
            GenerationEvent::Done(done) => {
                summary = Some(done);
                break;
            }
        }
    }
    let mut answer = Answer::plain(content, asked);
    answer.usage = summary.as_ref().map_or(
        Usage {
            prompt_tokens: 0,
            completion_tokens,
        },
        |summary| Usage {
            prompt_tokens: summary.prompt_tokens,
            completion_tokens: summary.completion_tokens,
        },
    );
    let finish = match summary.map(|summary| summary.finish_reason) {
        Some(FinishReason::Length) => Finish::Length,
        _ => Finish::Stop,
    };
    Ok((answer, finish))
}

/// What a turn has shown: text goes out through the guardrail's window, if there is one.
struct Shown<'g, 'e> {
    guardrail: Option<&'g Guardrail>,
    window: Option<StreamGuard<'g>>,
    /// Text released so far.
    released: String,
    /// The guardrail's message once the output is blocked; nothing is shown after it.
    blocked: Option<String>,
    cancel: &'e Arc<AtomicBool>,
    emit: &'e mut dyn FnMut(TurnEvent),
}

impl<'g, 'e> Shown<'g, 'e> {
    fn new(
        guardrail: Option<&'g Guardrail>,
        knowledge: bool,
        cancel: &'e Arc<AtomicBool>,
        emit: &'e mut dyn FnMut(TurnEvent),
    ) -> Self {
        Shown {
            guardrail,
            window: guardrail.map(|guardrail| match knowledge {
                true => StreamGuard::for_answer(guardrail),
                false => StreamGuard::new(guardrail),
            }),
            released: String::new(),
            blocked: None,
            cancel,
            emit,
        }
    }

    fn holds_all(&self) -> bool {
        self.window.as_ref().is_some_and(StreamGuard::holds_all)
    }

    fn findings(&self) -> Vec<Assessment> {
        self.window
            .as_ref()
            .map(|window| window.assessments().to_vec())
            .unwrap_or_default()
    }

    fn observe(&mut self, event: &AnswerEvent<'_>) {
        match event {
            AnswerEvent::Sources(sources) => {
                let mut sources = sources.to_vec();
                if let Some(guardrail) = self.guardrail {
                    for source in &mut sources {
                        source.text = guardrail.check(&source.text, Source::Output).text;
                    }
                }
                if self.blocked.is_none() {
                    (self.emit)(TurnEvent::Sources(sources));
                }
            }
            AnswerEvent::Delta(text) => self.delta(text),
        }
    }

    fn delta(&mut self, text: &str) {
        if self.blocked.is_some() {
            return;
        }
        let release = match &mut self.window {
            Some(window) => window.push(text),
            None => Release::Text(text.to_owned()),
        };
        self.release(release);
    }

    /// The stream ended: what the window still holds goes out, or is blocked like the rest.
    fn finish(&mut self) {
        if let Some(window) = &mut self.window {
            let release = window.finish();
            self.release(release);
        }
    }

    fn release(&mut self, release: Release) {
        match release {
            Release::Text(text) if text.is_empty() => {}
            Release::Text(text) => {
                self.released.push_str(&text);
                (self.emit)(TurnEvent::Delta(text));
            }
            Release::Blocked(message) => self.block(message),
        }
    }

    fn block(&mut self, message: String) {
        // Stops the generation at its next token.
        self.cancel.store(true, Ordering::Relaxed);
        (self.emit)(TurnEvent::Blocked(message.clone()));
        self.blocked = Some(message);
    }
}
