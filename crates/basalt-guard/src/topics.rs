//! Denied topics, recognised by meaning: each sentence of a text is embedded and compared
//! (cosine) with every topic's definition and examples, embedded once when the guardrail loads.

use std::sync::Arc;

use basalt_model::Embedder;

use crate::config::{Action, Assessment, DEFAULT_TOPIC_THRESHOLD, DeniedTopic, Score, Source};

/// Most sentences of one text compared with the topics (the first ones).
const MAX_SENTENCES: usize = 16;

#[derive(Debug, Clone)]
struct TopicVectors {
    name: String,
    threshold: f32,
    input: Action,
    output: Action,
    vectors: Vec<Vec<f32>>,
}

/// The topics of a guardrail with their embedded phrases.
#[derive(Debug, Clone)]
pub struct TopicMatcher {
    embedder: Arc<dyn Embedder>,
    topics: Vec<TopicVectors>,
}

impl TopicMatcher {
    pub fn new(topics: &[DeniedTopic], embedder: Arc<dyn Embedder>) -> Result<Self, String> {
        let mut embedded = Vec::with_capacity(topics.len());
        for topic in topics {
            let mut phrases = vec![topic.definition.clone()];
            phrases.extend(topic.examples.iter().cloned());
            let vectors = embedder
                .embed_queries(&phrases)
                .map_err(|error| format!("could not embed topic {:?}: {error}", topic.name))?;
            embedded.push(TopicVectors {
                name: topic.name.clone(),
                threshold: topic.threshold.unwrap_or(DEFAULT_TOPIC_THRESHOLD),
                input: topic.input,
                output: topic.output,
                vectors,
            });
        }
        Ok(TopicMatcher {
            embedder,
            topics: embedded,
        })
    }

    /// The topics `text` is on, each once, at the sentence that matched best. When the text
    /// cannot be embedded, every blocking topic blocks it: a guardrail fails closed.
    pub fn assess(&self, text: &str, source: Source) -> Vec<Assessment> {
        let action = |topic: &TopicVectors| match source {
            Source::Input => topic.input,
            Source::Output => topic.output,
        };
        let spans = sentence_spans(text);
        if spans.is_empty() {
            return Vec::new();
        }
        let sentences: Vec<String> = spans
            .iter()
            .map(|&(start, end)| text[start..end].to_owned())
            .collect();
        let vectors = match self.embedder.embed_queries(&sentences) {
            Ok(vectors) => vectors,
            Err(_) => {
                return self
                    .topics
                    .iter()
                    .filter(|topic| action(topic) == Action::Block)
                    .map(|topic| Assessment {
                        policy: "denied_topics",
                        name: topic.name.clone(),
                        action: Action::Block,
                        start: 0,
                        end: text.len(),
                        score: None,
                    })
                    .collect();
            }
        };
        let cosine = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let mut found = Vec::new();
        for topic in &self.topics {
            let best = spans
                .iter()
                .zip(&vectors)
                .map(|(&span, vector)| {
                    let score = topic
                        .vectors
                        .iter()
                        .map(|phrase| cosine(vector, phrase))
                        .fold(f32::MIN, f32::max);
                    (span, score)
                })
                .max_by(|left, right| left.1.total_cmp(&right.1));
            if let Some(((start, end), score)) = best
                && score >= topic.threshold
            {
                found.push(Assessment {
                    policy: "denied_topics",
                    name: topic.name.clone(),
                    action: action(topic),
                    start,
                    end,
                    score: Some(Score {
                        score,
                        threshold: topic.threshold,
                    }),
                });
            }
        }
        found
    }
}

/// Byte spans of the first [`MAX_SENTENCES`] sentences of `text` (ended by `.`, `!` or `?`
/// and whitespace, or a line break), trimmed, those without a letter left out.
fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut push = |from: usize, to: usize| {
        let piece = &text[from..to];
        let trimmed_start = from + (piece.len() - piece.trim_start().len());
        let trimmed_end = to - (piece.len() - piece.trim_end().len());
        if trimmed_start < trimmed_end
            && text[trimmed_start..trimmed_end]
                .chars()
                .any(char::is_alphabetic)
        {
            spans.push((trimmed_start, trimmed_end));
        }
    };
    for (index, &byte) in bytes.iter().enumerate() {
        let ends = byte == b'\n'
            || (matches!(byte, b'.' | b'!' | b'?')
                && bytes.get(index + 1).is_none_or(u8::is_ascii_whitespace));
        if ends {
            push(start, index + 1);
            start = index + 1;
        }
    }
    push(start, text.len());
    spans.truncate(MAX_SENTENCES);
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Guardrail;
    use crate::config::{GuardrailConfig, Outcome};

    fn guardrail() -> Guardrail {
        let config = GuardrailConfig::from_json(
            r#"{"denied_topics": [{"name": "investment advice",
                "definition": "Advice on which stocks or funds to buy.",
                "examples": ["Which stocks should I buy?"], "output": "none"}]}"#,
        )
        .expect("config");
        let embedder = Arc::new(crate::testing::BagOfWords::default());
        Guardrail::with_embedder(config, embedder).expect("guardrail")
    }

    #[test]
    fn a_sentence_on_a_denied_topic_blocks_input_and_is_reported_on_output() {
        let guard = guardrail();
        let text = "Hello. Which stocks should I buy this week?";
        let checked = guard.check(text, Source::Input);
        assert_eq!(checked.outcome, Outcome::Blocked);
        let topic = &checked.assessments[0];
        assert_eq!(
            (topic.policy, topic.name.as_str()),
            ("denied_topics", "investment advice")
        );
        assert_eq!(
            &text[topic.start..topic.end],
            "Which stocks should I buy this week?"
        );
        // Output action none: found and reported, not blocked.
        let checked = guard.check(text, Source::Output);
        assert_eq!(checked.outcome, Outcome::Passed);
        assert_eq!(checked.assessments.len(), 1);
        assert_eq!(
            guard
                .check("How many vacation days remain?", Source::Input)
                .outcome,
            Outcome::Passed
        );
    }

    #[test]
    fn topics_need_the_embedding_model() {
        let config =
            GuardrailConfig::from_json(r#"{"denied_topics": [{"name": "x", "definition": "y"}]}"#)
                .expect("config");
        let error = Guardrail::new(config).expect_err("no embedder");
        assert!(error.to_string().contains("embedding model"), "{error}");
        let error = GuardrailConfig::from_json(
            r#"{"denied_topics": [{"name": "x", "definition": "y", "input": "anonymize"}]}"#,
        )
        .expect_err("anonymize");
        assert!(error.to_string().contains("not anonymized"), "{error}");
    }

    #[test]
    fn sentences_are_split_and_trimmed() {
        let text = "Hello there. Which stocks?\n  123. ok!";
        let spans: Vec<&str> = sentence_spans(text)
            .into_iter()
            .map(|(start, end)| &text[start..end])
            .collect();
        assert_eq!(spans, ["Hello there.", "Which stocks?", "ok!"]);
    }
}
