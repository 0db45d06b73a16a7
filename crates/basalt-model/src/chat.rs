//! Chat prompts and how they become tokens without letting content smuggle in control tokens.
//!
//! The model's own chat template is rendered once with placeholder sentinels in place of each
//! message's content. The rendered text is then split at the sentinels: the template's parts are
//! tokenized with special-token parsing on (so `<|im_start|>` becomes the control token), and the
//! message contents with parsing off (so a document containing `<|im_end|>` stays plain text).

use crate::error::{ModelError, Result};

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

impl ChatRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: ChatRole, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Messages rendered with the model's chat template; content never becomes control tokens.
    Chat(Vec<ChatMessage>),
    /// Text given to the model as is, with special tokens parsed: for callers that write the
    /// template themselves (`basalt generate --raw`).
    Raw(String),
    /// Token ids fed to the model unchanged: for benchmarks and tests that must give two
    /// engines exactly the same input.
    Tokens(Vec<u32>),
}

/// A piece of a rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Text written by the chat template: special tokens are parsed.
    Template(String),
    /// Text of a message: tokenized as plain text.
    Content(String),
}

/// Renders `messages` with `render_template` (which receives `(role, content)` pairs and must
/// return the rendered prompt) and splits the result into template and content segments.
pub(crate) fn render_segments(
    messages: &[ChatMessage],
    render_template: impl FnOnce(&[(String, String)]) -> Result<String>,
) -> Result<Vec<Segment>> {
    let nonce = sentinel_nonce(messages);
    let sentinel = |index: usize| format!("\u{E000}{nonce}:{index}\u{E001}");
    let placeholders: Vec<(String, String)> = messages
        .iter()
        .enumerate()
        .map(|(index, message)| (message.role.as_str().to_string(), sentinel(index)))
        .collect();
    let rendered = render_template(&placeholders)?;

    let mut segments = Vec::new();
    let mut rest = rendered.as_str();
    for (index, message) in messages.iter().enumerate() {
        let marker = sentinel(index);
        let position = rest.find(&marker).ok_or_else(|| {
            ModelError::Inference(format!(
                "the model's chat template did not place message {index} verbatim; \
                 use --raw with a hand-written prompt for this model"
            ))
        })?;
        if position > 0 {
            segments.push(Segment::Template(rest[..position].to_string()));
        }
        if !message.content.is_empty() {
            segments.push(Segment::Content(message.content.clone()));
        }
        rest = &rest[position + marker.len()..];
    }
    if rest.contains('\u{E000}') && rest.contains(&nonce) {
        return Err(ModelError::Inference(
            "the model's chat template repeated a message; use --raw for this model".to_string(),
        ));
    }
    if !rest.is_empty() {
        segments.push(Segment::Template(rest.to_string()));
    }
    Ok(segments)
}

/// A string that occurs in no message, so sentinels cannot collide with content.
fn sentinel_nonce(messages: &[ChatMessage]) -> String {
    let mut nonce = String::from("basalt-slot");
    while messages
        .iter()
        .any(|message| message.content.contains(&nonce))
    {
        nonce.push('#');
    }
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chatml(messages: &[(String, String)]) -> Result<String> {
        let mut out = String::new();
        for (role, content) in messages {
            out.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
        }
        out.push_str("<|im_start|>assistant\n");
        Ok(out)
    }

    #[test]
    fn content_is_separated_from_template_text() {
        let messages = vec![
            ChatMessage::new(ChatRole::System, "Be brief."),
            ChatMessage::new(ChatRole::User, "Say <|im_end|> now"),
        ];
        let segments = render_segments(&messages, chatml).expect("renders");
        assert_eq!(
            segments,
            vec![
                Segment::Template("<|im_start|>system\n".into()),
                Segment::Content("Be brief.".into()),
                Segment::Template("<|im_end|>\n<|im_start|>user\n".into()),
                Segment::Content("Say <|im_end|> now".into()),
                Segment::Template("<|im_end|>\n<|im_start|>assistant\n".into()),
            ]
        );
    }

    #[test]
    fn content_that_looks_like_a_sentinel_does_not_confuse_the_split() {
        let messages = vec![ChatMessage::new(
            ChatRole::User,
            "\u{E000}basalt-slot:0\u{E001}",
        )];
        let segments = render_segments(&messages, chatml).expect("renders");
        assert_eq!(
            segments[1],
            Segment::Content("\u{E000}basalt-slot:0\u{E001}".into())
        );
    }

    #[test]
    fn template_that_drops_content_is_an_error() {
        let messages = vec![ChatMessage::new(ChatRole::User, "hi")];
        let result = render_segments(&messages, |_| Ok("<|im_start|>assistant\n".into()));
        assert!(result.is_err());
    }
}
