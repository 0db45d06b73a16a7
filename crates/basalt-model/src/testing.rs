//! A deterministic generator for tests of logic that needs one (answer pipelines, guarded
//! turns, the HTTP contract): it replies with text a function makes from the prompt, a word a
//! token. Never a stand-in for the real model where a user would run it.

use std::sync::mpsc;
use std::time::Duration;

use crate::chat::{ChatRole, Prompt};
use crate::error::ModelError;
use crate::generator::{
    FinishReason, GenerationEvent, GenerationRequest, GenerationStream, GenerationSummary,
    Generator, GeneratorInfo,
};

/// Replies with `reply(prompt)`, one whitespace-separated word (and the space after it) a
/// token, up to `max_tokens`; a prompt counts one token a word of its user messages.
pub struct Scripted {
    info: GeneratorInfo,
    reply: Box<dyn Fn(&Prompt) -> String + Send + Sync>,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Scripted")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Scripted {
    /// Replies with `reply(prompt)`; a 512-token context window.
    pub fn new(reply: impl Fn(&Prompt) -> String + Send + Sync + 'static) -> Self {
        Scripted {
            info: GeneratorInfo {
                model_name: "scripted".into(),
                context_window: 512,
                stop_token_ids: Vec::new(),
            },
            reply: Box::new(reply),
        }
    }

    /// The same, with a context window of `tokens`.
    pub fn with_context_window(mut self, tokens: usize) -> Self {
        self.info.context_window = tokens;
        self
    }

    /// Always replies with `text`.
    pub fn saying(text: &str) -> Self {
        let text = text.to_owned();
        Scripted::new(move |_| text.clone())
    }

    /// Says back the last user message.
    pub fn echo() -> Self {
        Scripted::new(|prompt| last_user(prompt).to_owned())
    }
}

/// The prompt's text as a user wrote it: the last user message of a chat.
pub fn last_user(prompt: &Prompt) -> &str {
    match prompt {
        Prompt::Chat(messages) => messages
            .iter()
            .rev()
            .find(|message| message.role == ChatRole::User)
            .map_or("", |message| message.content.as_str()),
        Prompt::Raw(text) => text,
        Prompt::Tokens(_) => "",
    }
}

impl Generator for Scripted {
    fn info(&self) -> &GeneratorInfo {
        &self.info
    }

    fn tokenize_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>, ModelError> {
        let words = match prompt {
            Prompt::Chat(messages) => messages
                .iter()
                .map(|message| message.content.split_whitespace().count())
                .sum(),
            Prompt::Raw(text) => text.split_whitespace().count(),
            Prompt::Tokens(tokens) => tokens.len(),
        };
        Ok(vec![1; words])
    }

    fn generate(&self, request: GenerationRequest) -> Result<GenerationStream, ModelError> {
        let prompt_tokens = self.tokenize_prompt(&request.prompt)?.len();
        let reply = (self.reply)(&request.prompt);
        let words: Vec<&str> = reply.split_whitespace().collect();
        let max_tokens = request.sampling.max_tokens;
        let (sender, receiver) = mpsc::channel();
        for word in words.iter().take(max_tokens) {
            let _ = sender.send(Ok(GenerationEvent::Token {
                id: 1,
                text: format!("{word} "),
            }));
        }
        let _ = sender.send(Ok(GenerationEvent::Done(GenerationSummary {
            prompt_tokens,
            completion_tokens: words.len().min(max_tokens),
            finish_reason: if words.len() > max_tokens {
                FinishReason::Length
            } else {
                FinishReason::Stop
            },
            prompt_duration: Duration::ZERO,
            decode_duration: Duration::ZERO,
            fallback_model: None,
        })));
        Ok(GenerationStream::new(receiver))
    }
}

/// An embedder for tests of logic that needs vectors (re-embedding, stores): each text's
/// letter counts folded into `dimension` numbers and scaled to unit length, so texts with the
/// same letters embed alike. Never a stand-in for a real model where a user would run one.
#[derive(Debug)]
pub struct Letters {
    info: crate::EmbedderInfo,
    /// The dimension of the vectors it makes, which may differ from the one it claims.
    makes: usize,
}

impl Letters {
    /// Vectors of `dimension` numbers, a 512-token limit.
    pub fn new(dimension: usize) -> Self {
        Letters::misreporting(dimension, dimension)
    }

    /// Claims `claimed` dimensions and makes vectors of `makes` (a server whose model changed
    /// behind its name).
    pub fn misreporting(claimed: usize, makes: usize) -> Self {
        Letters {
            info: crate::EmbedderInfo {
                model_name: format!("letters-{claimed}"),
                dimension: claimed,
                max_tokens: 512,
            },
            makes,
        }
    }

    /// The vector of `text`.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0.0; self.makes.max(1)];
        for byte in text.to_lowercase().bytes().filter(u8::is_ascii_lowercase) {
            let slot = usize::from(byte - b'a') % vector.len();
            vector[slot] += 1.0;
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        vector.iter().map(|x| x / norm).collect()
    }
}

impl crate::Embedder for Letters {
    fn info(&self) -> &crate::EmbedderInfo {
        &self.info
    }

    fn embed_batch(&self, texts: &[String]) -> crate::error::Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|text| self.vector(text)).collect())
    }

    fn embed_query(&self, text: &str) -> crate::error::Result<Vec<f32>> {
        Ok(self.vector(text))
    }

    fn count_tokens(&self, text: &str) -> crate::error::Result<usize> {
        Ok(text.split_whitespace().count() + 2)
    }
}
