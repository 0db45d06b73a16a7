//! Embedding models served elsewhere, behind the same [`Embedder`] trait as the local encoder:
//! an OpenAI-compatible `POST {base_url}/embeddings` (OpenAI, vLLM, Ollama, llama.cpp's server,
//! another Basalt) or Bedrock's `InvokeModel` with Amazon Titan Text Embeddings' body (Bedrock
//! itself, another Basalt), signed with SigV4 as the chat client signs.
//!
//! Every vector that comes back is checked before anything stores it: the dimension the
//! knowledge base was built with, finite numbers, not all zero; then scaled to unit length (the
//! index compares by cosine). A request that fails with a refused connection, 429 or a 5xx is
//! retried with exponential backoff, and requests that fail in a row open the same circuit
//! breaker as the chat client's. The key is read at each request and never appears in an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::embedder::{Embedder, EmbedderInfo};
use crate::error::{ModelError, Result};
use crate::remote::{Breaker, Protocol, RemoteChatOptions, estimated_tokens, http_agent, redact};

/// Texts in one OpenAI-compatible request (OpenAI takes up to 2,048; servers with small
/// batches take fewer, and 32 keeps one request's body small).
const OPENAI_BATCH: usize = 32;

/// Tokens per chunk by default for a knowledge base on an embedding model served elsewhere:
/// about as much text as MiniLM's 256 word pieces, since Basalt estimates a token as three
/// bytes.
pub const REMOTE_CHUNK_TOKENS: usize = 256;

/// The text Basalt embeds to learn a model's dimension.
const PROBE: &str = "What dimension are these vectors?";

/// An embedding model behind an HTTP API.
#[derive(Debug)]
pub struct RemoteEmbedder {
    info: EmbedderInfo,
    options: RemoteChatOptions,
    agent: ureq::Agent,
    breaker: Arc<Mutex<Breaker>>,
    /// Input tokens the server reported (or Basalt estimated, where it reports none).
    tokens: AtomicU64,
}

impl RemoteEmbedder {
    /// A client for vectors of `dimension` numbers; with `None`, one call to the server learns
    /// the dimension (so a server that does not answer is an error here). The model's input
    /// limit is `options.context_window` tokens: longer texts are cut to it, by Basalt's
    /// estimate of tokens (a token per three bytes), before they are sent.
    pub fn new(options: RemoteChatOptions, dimension: Option<usize>) -> Result<Self> {
        let agent = http_agent(&options)?;
        let mut embedder = RemoteEmbedder {
            info: EmbedderInfo {
                model_name: options.name.clone(),
                dimension: dimension.unwrap_or(0),
                max_tokens: options.context_window,
            },
            options,
            agent,
            breaker: Arc::default(),
            tokens: AtomicU64::new(0),
        };
        if dimension.is_none() {
            let found = embedder.embed(&[PROBE.to_string()])?;
            embedder.info.dimension = found.first().map_or(0, Vec::len);
        }
        Ok(embedder)
    }

    /// Input tokens embedded so far, as the server counted them.
    pub fn tokens_used(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if let Some(reason) = self.breaker().refuses(Instant::now()) {
            return Err(self.error(&reason, None));
        }
        self.embed_all(texts)
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn embed_all(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let limit = self.info.max_tokens.saturating_mul(3);
        let cut: Vec<&str> = texts.iter().map(|text| cut(text, limit)).collect();
        let mut out = Vec::with_capacity(texts.len());
        match &self.options.protocol {
            Protocol::OpenAi => {
                let url = format!("{}/embeddings", self.options.base_url);
                for batch in cut.chunks(OPENAI_BATCH) {
                    let body = serde_json::json!({"model": self.options.model, "input": batch});
                    let answer = self.post(&url, &body.to_string())?;
                    let used = answer["usage"]["prompt_tokens"].as_u64();
                    self.count(used, batch);
                    out.extend(self.openai_vectors(&answer, batch.len())?);
                }
            }
            Protocol::Bedrock(_) => {
                // Titan embeds one text per request.
                let url = format!(
                    "{}{}",
                    self.options.base_url,
                    crate::bedrock::operation_path(&self.options.model, "invoke")
                );
                for text in cut {
                    let body = serde_json::json!({"inputText": text});
                    let answer = self.post(&url, &body.to_string())?;
                    self.count(answer["inputTextTokenCount"].as_u64(), &[text]);
                    out.push(self.vector(&answer["embedding"])?);
                }
            }
        }
        Ok(out)
    }

    fn count(&self, reported: Option<u64>, texts: &[&str]) {
        let tokens = reported
            .unwrap_or_else(|| texts.iter().map(|text| estimated_tokens(text) as u64).sum());
        self.tokens.fetch_add(tokens, Ordering::Relaxed);
    }

    /// The vectors of an OpenAI-compatible answer, in the order of the inputs.
    fn openai_vectors(&self, answer: &serde_json::Value, expected: usize) -> Result<Vec<Vec<f32>>> {
        let data = answer["data"]
            .as_array()
            .ok_or_else(|| self.error("the answer has no \"data\" list of embeddings", None))?;
        if data.len() != expected {
            return Err(self.error(
                &format!("asked for {expected} embeddings, got {}", data.len()),
                None,
            ));
        }
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
        for (position, item) in data.iter().enumerate() {
            let index = item["index"]
                .as_u64()
                .map_or(position, |index| index as usize);
            let slot = vectors.get_mut(index).ok_or_else(|| {
                self.error(&format!("embedding index {index} is out of range"), None)
            })?;
            *slot = Some(self.vector(&item["embedding"])?);
        }
        vectors
            .into_iter()
            .map(|vector| vector.ok_or_else(|| self.error("an embedding index repeats", None)))
            .collect()
    }

    /// One vector from the server, checked and scaled to unit length.
    fn vector(&self, value: &serde_json::Value) -> Result<Vec<f32>> {
        let numbers = value.as_array().ok_or_else(|| {
            self.error(
                "an embedding is not a list of numbers (base64 answers are not read)",
                None,
            )
        })?;
        let mut vector = numbers
            .iter()
            .map(|number| number.as_f64().map(|number| number as f32))
            .collect::<Option<Vec<f32>>>()
            .filter(|vector| vector.iter().all(|number| number.is_finite()))
            .ok_or_else(|| self.error("an embedding holds something that is not a number", None))?;
        let expected = self.info.dimension;
        if expected != 0 && vector.len() != expected {
            return Err(self.error(
                &format!(
                    "it returned vectors of {} dimensions where {expected} are expected (the \
                     dimension the knowledge base was built with); was the model behind this \
                     name changed? Re-embed the knowledge base with `basalt kb reembed`",
                    vector.len()
                ),
                None,
            ));
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 || vector.is_empty() {
            return Err(self.error("it returned an empty or all-zero vector", None));
        }
        // Most servers answer unit vectors already; they are kept bit for bit.
        if (norm - 1.0).abs() > 1e-4 {
            vector.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(vector)
    }

    /// POSTs `body` and reads the JSON answer, retrying before giving up on a refused
    /// connection, 429 and 5xx.
    fn post(&self, url: &str, body: &str) -> Result<serde_json::Value> {
        let key = self.options.api_key.read()?;
        let credentials = match &self.options.protocol {
            Protocol::Bedrock(access) => access.credentials_unless(key.as_deref())?,
            Protocol::OpenAi => None,
        };
        let secret = credentials.as_ref().map(|found| found.secret.clone());
        let fail = |reason: &str| self.error(&redact(reason, secret.as_deref()), key.as_deref());
        let mut wait = self.options.backoff;
        let mut attempt = 0;
        loop {
            let request = match &self.options.protocol {
                Protocol::Bedrock(access) => crate::bedrock::post(
                    &self.agent,
                    url,
                    body,
                    &access.region,
                    credentials.as_ref(),
                    key.as_deref(),
                ),
                Protocol::OpenAi => {
                    let mut request = self
                        .agent
                        .post(url)
                        .header("Content-Type", "application/json");
                    if let Some(key) = &key {
                        request = request.header("Authorization", format!("Bearer {key}"));
                    }
                    request
                }
            };
            let (reason, retry_after) = match request.send(body) {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = crate::remote::retry_after(&response);
                    let text = response
                        .into_body()
                        .with_config()
                        .limit(64 << 20)
                        .read_to_string()
                        .map_err(|error| fail(&format!("the answer could not be read: {error}")))?;
                    if status == 200 {
                        self.breaker().record(true, Instant::now());
                        return serde_json::from_str(&text)
                            .map_err(|error| fail(&format!("the answer is not JSON: {error}")));
                    }
                    let shown: String = text.trim().chars().take(300).collect();
                    let reason = format!("HTTP {status}: {shown}");
                    if status != 429 && status < 500 {
                        return Err(fail(&reason));
                    }
                    (reason, retry_after)
                }
                Err(error) => (error.to_string(), None),
            };
            if attempt >= self.options.retries {
                // Only a server that keeps failing opens the breaker: a refused key or a
                // text the model rejects says nothing about its health.
                self.breaker().record(false, Instant::now());
                return Err(fail(&format!(
                    "{reason} (after {} attempts); check that the server is up with `basalt \
                     models list`",
                    attempt + 1
                )));
            }
            attempt += 1;
            let pause = retry_after.map_or(wait, |after| after.min(Duration::from_secs(30)));
            tracing::warn!(model = %self.options.name, %reason, ?pause, "retrying the embedding server");
            std::thread::sleep(pause);
            wait *= 2;
        }
    }

    fn error(&self, reason: &str, key: Option<&str>) -> ModelError {
        ModelError::Remote {
            model: self.options.name.clone(),
            reason: redact(reason, key),
        }
    }
}

/// `text` cut to at most `limit` bytes, at a character boundary.
fn cut(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Embedder for RemoteEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.embed(texts)
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let mut vectors = self.embed(&[text.to_string()])?;
        vectors
            .pop()
            .ok_or_else(|| self.error("the server returned no embedding", None))
    }

    fn embed_queries(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.embed(texts)
    }

    /// An estimate (a token per three bytes, see [`estimated_tokens`]): the server tokenizes.
    /// It overestimates English, so a chunk cut to fit the limit does fit.
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(estimated_tokens(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }
}
