//! Guardrail configurations: what to look for, and what to do with it on the way into the model
//! (input) and on the way out (output). JSON, validated with errors that name the field.
//!
//! ```json
//! {
//!   "description": "Customer support",
//!   "sensitive_information": {
//!     "entities": [
//!       {"type": "EMAIL", "input": "anonymize", "output": "anonymize"},
//!       {"type": "CREDIT_CARD", "input": "block", "output": "anonymize"}
//!     ],
//!     "regexes": [
//!       {"name": "EMPLOYEE_ID", "pattern": "EMP-\\d{6}", "input": "none", "output": "anonymize"}
//!     ]
//!   },
//!   "word_filters": {"words": ["project falcon"], "profanity": true},
//!   "messages": {"blocked_input": "…", "blocked_output": "…"}
//! }
//! ```

use std::collections::BTreeSet;

use std::sync::Arc;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::attacks::AttackClassifier;
use crate::pii::{CustomPattern, Detector, EntityType, Finding};
use crate::words::{WordFilter, WordMatch};

/// What a policy does with what it found.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Nothing (the finding is still reported in the trace).
    #[default]
    None,
    /// Replace each finding with its placeholder, `{EMAIL}`.
    Anonymize,
    /// Refuse the whole request or response.
    Block,
}

/// Which way the text is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// From the user, before the model sees it.
    Input,
    /// From the model, before the user sees it.
    Output,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Input => "input",
            Source::Output => "output",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub sensitive_information: SensitiveInformation,
    #[serde(default, skip_serializing_if = "is_default")]
    pub word_filters: WordFilters,
    /// Subjects the conversation must stay away from, recognised by meaning (the embedding
    /// model), not by words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_topics: Vec<DeniedTopic>,
    /// Instruction overrides, jailbreaks and injected instructions, recognised by the
    /// prompt-attack classifier (`basalt guard train-attacks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_attacks: Option<PromptAttackPolicy>,
    /// The hallucination filter for answers from a knowledge base (it needs the passages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contextual_grounding: Option<GroundingPolicy>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub messages: Messages,
}

/// Fields equal to their default are left out when written, so a configuration reads and
/// writes with one shape (and one schema in the OpenAPI document).
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// A denied topic: a name, a definition in plain words, and example phrases. A sentence whose
/// embedding is at least `threshold` similar (cosine) to the definition or an example is on
/// the topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeniedTopic {
    pub name: String,
    pub definition: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    /// 0–0.99 (default [`DEFAULT_TOPIC_THRESHOLD`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// `block` (the default) or `none` (only reported).
    #[serde(default = "default_topic_action", skip_serializing_if = "is_block")]
    pub input: Action,
    #[serde(default = "default_topic_action", skip_serializing_if = "is_block")]
    pub output: Action,
}

/// Cosine similarity from which a sentence is on a denied topic, with all-MiniLM-L6-v2: for a
/// topic with a definition and three examples, questions on it in other words scored
/// 0.46–0.62, questions on neighbouring matters 0.34–0.43, unrelated ones about 0.12
/// (docs/guardrails.md).
pub const DEFAULT_TOPIC_THRESHOLD: f32 = 0.45;

fn default_topic_action() -> Action {
    Action::Block
}

fn is_block(action: &Action) -> bool {
    *action == Action::Block
}

/// What to do about prompt attacks: in the user's input (a direct attack) and in passages
/// retrieved for an answer (an indirect one: instructions planted in a document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptAttackPolicy {
    /// `block` (the default) or `none` (only reported).
    #[serde(default = "default_topic_action", skip_serializing_if = "is_block")]
    pub input: Action,
    /// `drop` (the default: the passage is left out of the prompt) or `none` (only reported).
    #[serde(default, skip_serializing_if = "is_default")]
    pub documents: DocumentAction,
    /// The share of benign prompts the threshold lets be flagged, as calibrated when the
    /// classifier was trained: 0.01–0.2 (default 0.05 with a trained classifier, 0.01 with the
    /// built-in one). Lower flags fewer prompts of both kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_positive_rate: Option<f32>,
}

/// What happens to a retrieved passage that carries instructions for the model.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DocumentAction {
    #[default]
    Drop,
    None,
}

/// Thresholds of the contextual grounding check: an answer whose least-supported sentence
/// scores below `grounding_threshold`, or whose relevance to the question is below
/// `relevance_threshold`, is blocked or flagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroundingPolicy {
    /// 0–0.99: the least support every sentence of the answer must have from the passages.
    pub grounding_threshold: f32,
    /// 0–0.99: the least similarity of the answer to the question (default 0: not checked).
    #[serde(default, skip_serializing_if = "is_default")]
    pub relevance_threshold: f32,
    /// `block` (the default: the answer is replaced by the blocked message) or `flag` (it is
    /// kept, and the trace says it fell short).
    #[serde(
        default = "default_grounding_action",
        skip_serializing_if = "is_grounding_block"
    )]
    pub action: GroundingAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroundingAction {
    Block,
    Flag,
}

fn default_grounding_action() -> GroundingAction {
    GroundingAction::Block
}

fn is_grounding_block(action: &GroundingAction) -> bool {
    *action == GroundingAction::Block
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SensitiveInformation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<EntityPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regexes: Vec<RegexPolicy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityPolicy {
    #[serde(rename = "type")]
    pub entity: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub input: Action,
    #[serde(default, skip_serializing_if = "is_default")]
    pub output: Action,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexPolicy {
    /// Upper-case letters, digits and `_`; the placeholder is `{NAME}`.
    pub name: String,
    pub pattern: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub input: Action,
    #[serde(default, skip_serializing_if = "is_default")]
    pub output: Action,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WordFilters {
    /// Words and phrases that block (case-insensitive, whole words).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<String>,
    /// Also block the profanity of the `rustrict` list.
    #[serde(default, skip_serializing_if = "is_default")]
    pub profanity: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Messages {
    #[serde(
        default = "default_blocked_input",
        skip_serializing_if = "is_default_blocked_input"
    )]
    pub blocked_input: String,
    #[serde(
        default = "default_blocked_output",
        skip_serializing_if = "is_default_blocked_output"
    )]
    pub blocked_output: String,
}

fn default_blocked_input() -> String {
    "Sorry, this request can't be processed: it was blocked by a guardrail.".into()
}

fn default_blocked_output() -> String {
    "Sorry, the answer was withheld: it was blocked by a guardrail.".into()
}

fn is_default_blocked_input(message: &str) -> bool {
    message == default_blocked_input()
}

fn is_default_blocked_output(message: &str) -> bool {
    message == default_blocked_output()
}

impl Default for Messages {
    fn default() -> Self {
        Messages {
            blocked_input: default_blocked_input(),
            blocked_output: default_blocked_output(),
        }
    }
}

/// A configuration that cannot be used, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

impl GuardrailConfig {
    /// Parses and validates JSON.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let config: GuardrailConfig = serde_json::from_str(text)
            .map_err(|error| invalid("configuration", error.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = BTreeSet::new();
        for (index, policy) in self.sensitive_information.entities.iter().enumerate() {
            let field = format!("sensitive_information.entities[{index}].type");
            if EntityType::built_in(&policy.entity).is_none() {
                let known: Vec<&str> = EntityType::BUILT_IN.iter().map(EntityType::name).collect();
                return Err(invalid(
                    field,
                    format!(
                        "unknown type {:?}; the types are {} (custom patterns go in \"regexes\")",
                        policy.entity,
                        known.join(", ")
                    ),
                ));
            }
            if !seen.insert(policy.entity.clone()) {
                return Err(invalid(field, format!("{} is listed twice", policy.entity)));
            }
        }
        for (index, policy) in self.sensitive_information.regexes.iter().enumerate() {
            let field = format!("sensitive_information.regexes[{index}]");
            let name_ok = !policy.name.is_empty()
                && policy.name.len() <= 40
                && policy
                    .name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !name_ok {
                return Err(invalid(
                    format!("{field}.name"),
                    format!(
                        "{:?}: use 1–40 upper-case letters, digits or '_' (it becomes the placeholder {{NAME}})",
                        policy.name
                    ),
                ));
            }
            if EntityType::built_in(&policy.name).is_some() || !seen.insert(policy.name.clone()) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("{} is already a type of this configuration", policy.name),
                ));
            }
            compile(&policy.pattern)
                .map_err(|message| invalid(format!("{field}.pattern"), message))?;
        }
        let mut topic_names = BTreeSet::new();
        for (index, topic) in self.denied_topics.iter().enumerate() {
            let field = format!("denied_topics[{index}]");
            if topic.name.trim().is_empty() || !topic_names.insert(topic.name.clone()) {
                return Err(invalid(
                    format!("{field}.name"),
                    "each topic needs a name of its own",
                ));
            }
            if topic.definition.trim().is_empty() {
                return Err(invalid(
                    format!("{field}.definition"),
                    "describe the topic in a sentence",
                ));
            }
            if topic
                .threshold
                .is_some_and(|value| !(0.0..=0.99).contains(&value))
            {
                return Err(invalid(format!("{field}.threshold"), "outside 0–0.99"));
            }
            if topic.input == Action::Anonymize || topic.output == Action::Anonymize {
                return Err(invalid(
                    field,
                    "a topic can be blocked or reported (none), not anonymized",
                ));
            }
        }
        if let Some(policy) = &self.prompt_attacks {
            if policy
                .false_positive_rate
                .is_some_and(|rate| !(0.01..=0.2).contains(&rate))
            {
                return Err(invalid(
                    "prompt_attacks.false_positive_rate",
                    "outside 0.01–0.2",
                ));
            }
            if policy.input == Action::Anonymize {
                return Err(invalid(
                    "prompt_attacks.input",
                    "an attack can be blocked or reported (none), not anonymized",
                ));
            }
        }
        if let Some(policy) = &self.contextual_grounding {
            for (field, value) in [
                ("grounding_threshold", policy.grounding_threshold),
                ("relevance_threshold", policy.relevance_threshold),
            ] {
                if !(0.0..=0.99).contains(&value) {
                    return Err(invalid(
                        format!("contextual_grounding.{field}"),
                        format!("{value} is outside 0–0.99"),
                    ));
                }
            }
        }
        for (index, word) in self.word_filters.words.iter().enumerate() {
            if word.trim().is_empty() {
                return Err(invalid(
                    format!("word_filters.words[{index}]"),
                    "empty word",
                ));
            }
        }
        Ok(())
    }
}

/// Compiles a custom pattern with a bounded automaton, so a hostile pattern cannot exhaust
/// memory.
fn compile(pattern: &str) -> Result<Regex, String> {
    if pattern.is_empty() {
        return Err("empty pattern".into());
    }
    let regex = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|error| error.to_string())?;
    if regex.is_match("") {
        return Err(format!("{pattern:?} matches the empty string"));
    }
    Ok(regex)
}

/// What a guardrail did to one text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Nothing to act on.
    Passed,
    /// Entities were replaced by placeholders.
    Anonymized,
    /// The text must not go on; `text` is the configured message.
    Blocked,
}

/// One policy's finding, for the trace.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Assessment {
    /// `sensitive_information`, `word_filters`, `denied_topics` or `prompt_attacks`.
    pub policy: &'static str,
    /// The entity type, or the matched word (`profanity` for the list).
    pub name: String,
    pub action: Action,
    /// Byte offsets into the checked text.
    pub start: usize,
    pub end: usize,
    /// The classifier's score and the threshold it exceeded (prompt attacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
}

/// A model's score for a finding, with the threshold it was held against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Score {
    pub score: f32,
    pub threshold: f32,
}

/// The result of applying a guardrail to a text.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Checked {
    pub outcome: Outcome,
    /// The text to pass on: the original, anonymized, or the blocked message.
    pub text: String,
    /// Every finding, with what was done about it.
    pub assessments: Vec<Assessment>,
    /// Anonymizations as (start, end) in the checked text and the placeholder's length.
    #[serde(skip)]
    #[schemars(skip)]
    edits: Vec<(usize, usize, usize)>,
}

impl Checked {
    /// Where byte `offset` of the checked text is in [`Checked::text`] (after anonymization):
    /// an entity's start stays at its placeholder's start, an offset inside it moves to the
    /// placeholder's end.
    pub fn map_offset(&self, offset: usize) -> usize {
        let mut shift: isize = 0;
        for &(start, end, replacement) in &self.edits {
            if offset <= start {
                break;
            }
            if offset < end {
                return start.saturating_add_signed(shift) + replacement;
            }
            shift += replacement as isize - (end - start) as isize;
        }
        offset.saturating_add_signed(shift)
    }
}

/// A validated configuration, ready to check text.
#[derive(Debug, Clone)]
pub struct Guardrail {
    config: GuardrailConfig,
    detector: Detector,
    words: WordFilter,
    topics: Option<crate::topics::TopicMatcher>,
    attacks: Option<Arc<AttackClassifier>>,
}

/// The models some policies need: the embedding model for denied topics, the prompt-attack
/// classifier for prompt attacks.
#[derive(Debug, Clone, Default)]
pub struct GuardModels {
    pub embedder: Option<Arc<dyn basalt_model::Embedder>>,
    pub attacks: Option<Arc<AttackClassifier>>,
}

impl Guardrail {
    /// A guardrail that needs no model (no denied topics, no prompt attacks: see
    /// [`Guardrail::with_models`]).
    pub fn new(config: GuardrailConfig) -> Result<Self, ConfigError> {
        Self::with_models(config, GuardModels::default())
    }

    /// A guardrail whose denied topics (if any) are recognised with `embedder`; the topics'
    /// definitions and examples are embedded now.
    pub fn with_embedder(
        config: GuardrailConfig,
        embedder: Arc<dyn basalt_model::Embedder>,
    ) -> Result<Self, ConfigError> {
        let models = GuardModels {
            embedder: Some(embedder),
            attacks: None,
        };
        Self::with_models(config, models)
    }

    /// A guardrail with the models its policies need; an error names the policy whose model
    /// is missing.
    pub fn with_models(config: GuardrailConfig, models: GuardModels) -> Result<Self, ConfigError> {
        config.validate()?;
        if !config.denied_topics.is_empty() && models.embedder.is_none() {
            return Err(invalid(
                "denied_topics",
                "denied topics need the embedding model; load the guardrail with it",
            ));
        }
        if config.prompt_attacks.is_some() && models.attacks.is_none() {
            return Err(invalid(
                "prompt_attacks",
                "prompt-attack detection needs the classifier, and none is installed: train it \
                 with `basalt guard train-attacks --dataset FILE.jsonl` (labelled prompts)",
            ));
        }
        let embedder = models.embedder;
        let topics = match embedder {
            Some(embedder) if !config.denied_topics.is_empty() => Some(
                crate::topics::TopicMatcher::new(&config.denied_topics, embedder)
                    .map_err(|message| invalid("denied_topics", message))?,
            ),
            _ => None,
        };
        let custom = config
            .sensitive_information
            .regexes
            .iter()
            .map(|policy| {
                Ok(CustomPattern {
                    name: policy.name.clone(),
                    regex: compile(&policy.pattern)
                        .map_err(|message| invalid(policy.name.clone(), message))?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let words = WordFilter::new(&config.word_filters.words, config.word_filters.profanity);
        let attacks = models.attacks.filter(|_| config.prompt_attacks.is_some());
        Ok(Guardrail {
            detector: Detector::new(custom),
            words,
            config,
            topics,
            attacks,
        })
    }

    /// The prompt-attack finding for `text` (a prompt, or a retrieved `passage` scored a
    /// window at a time), when the policy is on and the classifier flags it.
    fn attack(&self, text: &str, passage: bool) -> Option<Assessment> {
        let (policy, classifier) = self
            .config
            .prompt_attacks
            .as_ref()
            .zip(self.attacks.as_ref())?;
        let rate = policy
            .false_positive_rate
            .unwrap_or_else(|| classifier.default_rate());
        let judged = classifier.assess(text, rate, passage);
        judged.is_attack().then(|| Assessment {
            policy: "prompt_attacks",
            name: "prompt_attack".to_owned(),
            action: policy.input,
            start: 0,
            end: text.len(),
            score: Some(Score {
                score: judged.score,
                threshold: judged.threshold,
            }),
        })
    }

    /// Whether a retrieved passage must be left out of the prompt: it reads as instructions
    /// to the model (an indirect prompt injection) and the policy drops such passages.
    pub fn drops_passage(&self, text: &str) -> bool {
        self.config
            .prompt_attacks
            .as_ref()
            .is_some_and(|policy| policy.documents == DocumentAction::Drop)
            && self.attack(text, true).is_some()
    }

    pub fn config(&self) -> &GuardrailConfig {
        &self.config
    }

    /// Whether an answer that fails the grounding check is blocked (not just flagged): such an
    /// answer can be shown only once it is whole and has passed.
    pub fn blocks_ungrounded(&self) -> bool {
        self.config
            .contextual_grounding
            .as_ref()
            .is_some_and(|policy| policy.action == GroundingAction::Block)
    }

    /// The action configured for an entity type in one direction (`None` when not listed).
    fn action(&self, entity: &EntityType, source: Source) -> Action {
        let pick = |input: Action, output: Action| match source {
            Source::Input => input,
            Source::Output => output,
        };
        let info = &self.config.sensitive_information;
        info.entities
            .iter()
            .find(|policy| policy.entity == entity.name())
            .map(|policy| pick(policy.input, policy.output))
            .or_else(|| {
                info.regexes
                    .iter()
                    .find(|policy| policy.name == entity.name())
                    .map(|policy| pick(policy.input, policy.output))
            })
            .unwrap_or(Action::None)
    }

    /// Entities of the types this configuration lists, with their action for `source`.
    pub fn findings(&self, text: &str, source: Source) -> Vec<(Finding, Action)> {
        self.detector
            .detect(text)
            .into_iter()
            .filter(|finding| self.lists(&finding.entity))
            .map(|finding| {
                let action = self.action(&finding.entity, source);
                (finding, action)
            })
            .collect()
    }

    fn lists(&self, entity: &EntityType) -> bool {
        let info = &self.config.sensitive_information;
        info.entities
            .iter()
            .any(|policy| policy.entity == entity.name())
            || info
                .regexes
                .iter()
                .any(|policy| policy.name == entity.name())
    }

    /// Word-filter matches (they always block).
    pub fn word_matches(&self, text: &str) -> Vec<WordMatch> {
        self.words.find(text)
    }

    /// Checks `text` going in direction `source`.
    pub fn check(&self, text: &str, source: Source) -> Checked {
        let mut assessments = Vec::new();
        let findings = self.findings(text, source);
        for (finding, action) in &findings {
            assessments.push(Assessment {
                policy: "sensitive_information",
                name: finding.entity.name().to_owned(),
                action: *action,
                start: finding.start,
                end: finding.end,
                score: None,
            });
        }
        for found in self.word_matches(text) {
            assessments.push(Assessment {
                policy: "word_filters",
                name: found.word,
                action: Action::Block,
                start: found.start,
                end: found.end,
                score: None,
            });
        }
        if let Some(topics) = &self.topics {
            assessments.extend(topics.assess(text, source));
        }
        if source == Source::Input
            && let Some(found) = self.attack(text, false)
        {
            assessments.push(found);
        }
        assessments.sort_by_key(|assessment| assessment.start);
        if assessments.iter().any(|a| a.action == Action::Block) {
            let message = match source {
                Source::Input => &self.config.messages.blocked_input,
                Source::Output => &self.config.messages.blocked_output,
            };
            return Checked {
                outcome: Outcome::Blocked,
                text: message.clone(),
                assessments,
                edits: Vec::new(),
            };
        }
        let mut anonymized = String::with_capacity(text.len());
        let mut edits = Vec::new();
        let mut last = 0;
        for (finding, action) in &findings {
            if *action == Action::Anonymize {
                anonymized.push_str(&text[last..finding.start]);
                let placeholder = format!("{{{}}}", finding.entity.name());
                anonymized.push_str(&placeholder);
                edits.push((finding.start, finding.end, placeholder.len()));
                last = finding.end;
            }
        }
        if edits.is_empty() {
            return Checked {
                outcome: Outcome::Passed,
                text: text.to_owned(),
                assessments,
                edits,
            };
        }
        anonymized.push_str(&text[last..]);
        Checked {
            outcome: Outcome::Anonymized,
            text: anonymized,
            assessments,
            edits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUPPORT: &str = r#"{
        "description": "support desk",
        "sensitive_information": {
            "entities": [
                {"type": "EMAIL", "input": "anonymize", "output": "anonymize"},
                {"type": "CREDIT_CARD", "input": "block", "output": "anonymize"}
            ],
            "regexes": [{"name": "EMPLOYEE_ID", "pattern": "EMP-\\d{6}", "output": "anonymize"}]
        },
        "word_filters": {"words": ["project falcon"], "profanity": true}
    }"#;

    fn support() -> Guardrail {
        Guardrail::new(GuardrailConfig::from_json(SUPPORT).expect("valid")).expect("guardrail")
    }

    #[test]
    fn anonymizes_and_blocks_per_direction() {
        let guard = support();
        let checked = guard.check("Write to ana@example.com about EMP-123456.", Source::Output);
        assert_eq!(checked.outcome, Outcome::Anonymized);
        assert_eq!(checked.text, "Write to {EMAIL} about {EMPLOYEE_ID}.");
        // The employee id is left alone on input (its input action is the default, none).
        let checked = guard.check("Write to ana@example.com about EMP-123456.", Source::Input);
        assert_eq!(checked.text, "Write to {EMAIL} about EMP-123456.");
        assert_eq!(checked.assessments.len(), 2);

        let card = "My card is 4716424521511864, charge it";
        let checked = guard.check(card, Source::Input);
        assert_eq!(checked.outcome, Outcome::Blocked);
        assert!(checked.text.contains("blocked by a guardrail"));
        assert_eq!(
            guard.check(card, Source::Output).text,
            "My card is {CREDIT_CARD}, charge it"
        );
        // A phone number is found but not listed: it passes.
        assert_eq!(
            guard.check("call 166-684-7899", Source::Output).outcome,
            Outcome::Passed
        );
    }

    #[test]
    fn offsets_follow_the_anonymization() {
        let guard = support();
        let text = "Mail ana@example.com today, ana@example.org too.";
        let checked = guard.check(text, Source::Output);
        assert_eq!(checked.text, "Mail {EMAIL} today, {EMAIL} too.");
        assert_eq!(checked.map_offset(0), 0);
        assert_eq!(checked.map_offset(5), 5);
        assert_eq!(
            checked.map_offset(10),
            12,
            "inside the entity: the placeholder's end"
        );
        assert_eq!(
            &checked.text[checked.map_offset(20)..checked.map_offset(27)],
            " today,"
        );
        assert_eq!(checked.map_offset(text.len()), checked.text.len());
    }

    #[test]
    fn word_filters_block() {
        let guard = support();
        let checked = guard.check("Status of Project Falcon?", Source::Input);
        assert_eq!(checked.outcome, Outcome::Blocked);
        assert_eq!(checked.assessments[0].policy, "word_filters");
        assert_eq!(
            guard.check("what the fuck", Source::Output).outcome,
            Outcome::Blocked
        );
    }

    #[test]
    fn invalid_configurations_name_the_field() {
        let cases = [
            (
                r#"{"sensitive_information": {"entities": [{"type": "EMIAL"}]}}"#,
                "entities[0].type",
            ),
            (
                r#"{"sensitive_information": {"entities": [{"type": "EMAIL", "input": "mask"}]}}"#,
                "unknown variant",
            ),
            (
                r#"{"sensitive_information": {"regexes": [{"name": "id", "pattern": "x"}]}}"#,
                "regexes[0].name",
            ),
            (
                r#"{"sensitive_information": {"regexes": [{"name": "ID", "pattern": "("}]}}"#,
                "regexes[0].pattern",
            ),
            (
                r#"{"sensitive_information": {"regexes": [{"name": "ID", "pattern": "a*"}]}}"#,
                "empty string",
            ),
            (r#"{"word_filter": {}}"#, "unknown field"),
            (
                r#"{"contextual_grounding": {"grounding_threshold": 1.5}}"#,
                "grounding_threshold: 1.5 is outside",
            ),
            (
                r#"{"contextual_grounding": {"grounding_threshold": 0.5, "action": "warn"}}"#,
                "unknown variant",
            ),
            (
                r#"{"sensitive_information": {"entities": [{"type": "EMAIL"}, {"type": "EMAIL"}]}}"#,
                "twice",
            ),
        ];
        for (json, expected) in cases {
            let error = GuardrailConfig::from_json(json).expect_err(json);
            assert!(error.to_string().contains(expected), "{json}: {error}");
        }
    }
}
