//! The prompt: a versioned template filled with numbered passages and the question.

use basalt_kb::PromptTemplate;
use basalt_model::{ChatMessage, ChatRole};

use crate::citations::Reference;

/// The default template's version; a KB may set its own template (kb.json, `answer.template`).
pub const DEFAULT_TEMPLATE_VERSION: &str = "basalt-rag-1";

/// The default template, written for small instruction-tuned models: the passages first, the
/// instruction right before the answer, and one fixed phrase for "not in the sources".
pub fn default_template() -> PromptTemplate {
    PromptTemplate {
        version: DEFAULT_TEMPLATE_VERSION.into(),
        system: "Answer the question using only the numbered sources. Cite sources like [1]. \
                 If the sources do not contain the answer, reply exactly: NOT FOUND"
            .into(),
        passage: "[{n}] {title}: {text}".into(),
        user: "Sources:\n{passages}\n\nQuestion: {question}".into(),
    }
}

/// Fills `{name}` placeholders in one pass, so text put in never gets substituted again.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let replaced = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value, close))
        });
        match replaced {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Where a passage comes from, for the prompt and the CLI: path, page, section.
pub fn location(reference: &Reference) -> String {
    let mut parts = vec![reference.source.clone()];
    if let Some(page) = reference.page {
        parts.push(format!("page {page}"));
    }
    if !reference.heading_path.is_empty() {
        parts.push(reference.heading_path.join(" › "));
    }
    parts.join(", ")
}

/// One conversation turn given to the model as history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryTurn {
    pub question: String,
    pub answer: String,
}

/// The chat messages for `question` over `passages`, after `history`.
pub(crate) fn messages(
    template: &PromptTemplate,
    passages: &[Reference],
    question: &str,
    history: &[HistoryTurn],
) -> Vec<ChatMessage> {
    let rendered: Vec<String> = passages
        .iter()
        .map(|passage| {
            let n = passage.number.to_string();
            let location = location(passage);
            fill(
                &template.passage,
                &[
                    ("n", &n),
                    ("title", passage.title.as_deref().unwrap_or("Untitled")),
                    ("location", &location),
                    ("text", passage.text.trim()),
                ],
            )
        })
        .collect();
    let passages = rendered.join("\n\n");
    let mut messages = vec![ChatMessage::new(ChatRole::System, template.system.clone())];
    for turn in history {
        messages.push(ChatMessage::new(ChatRole::User, turn.question.clone()));
        messages.push(ChatMessage::new(ChatRole::Assistant, turn.answer.clone()));
    }
    messages.push(ChatMessage::new(
        ChatRole::User,
        fill(
            &template.user,
            &[("passages", &passages), ("question", question.trim())],
        ),
    ));
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_once_and_unknown_braces_stay() {
        assert_eq!(
            fill("{a} and {b} {c} {", &[("a", "{b}"), ("b", "x")]),
            "{b} and x {c} {"
        );
    }

    #[test]
    fn passages_are_numbered_with_their_location() {
        let passage = Reference {
            number: 2,
            chunk_id: "d#0".into(),
            doc_id: "d".into(),
            title: Some("Rocks".into()),
            source: "rocks.pdf".into(),
            page: Some(3),
            heading_path: vec!["Igneous".into()],
            text: " Granite is igneous. ".into(),
            score: 0.5,
        };
        let history = [HistoryTurn {
            question: "q1".into(),
            answer: "a1".into(),
        }];
        let messages = messages(
            &default_template(),
            &[passage],
            "What is granite?",
            &history,
        );
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[1].content, "q1");
        let user = &messages[3].content;
        assert!(user.contains("[2] Rocks: Granite is igneous.\n"), "{user}");
        assert!(user.contains("Question: What is granite?"));
    }
}
