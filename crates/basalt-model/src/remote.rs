//! Chat models served elsewhere: any server with an OpenAI-compatible `POST
//! {base_url}/chat/completions` (vLLM, Ollama, llama.cpp's server, an OpenAI-compatible gateway,
//! another Basalt) or Amazon Bedrock's ConverseStream (Bedrock itself, another Basalt; see
//! [`crate::bedrock`]), behind the same [`Generator`] trait as the local engine, so retrieval,
//! the grounding check, citations, guardrails and the audit trail stay Basalt's.
//!
//! The answer streams (`"stream": true`, server-sent events) and is cut off when the caller
//! drops the [`GenerationStream`]: the reading thread stops and closes the connection, so the
//! server sees the client go. A request that fails before any text arrived (a refused
//! connection, 429, a 5xx, a timeout) is retried with exponential backoff; once text has been
//! streamed nothing is retried, since it has been shown. The API key is read from an
//! environment variable or a file when the request is made, sent only in the `Authorization`
//! header, and replaced by `***` in every error message.

use std::io::{BufRead, BufReader};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use crate::chat::{ChatMessage, ChatRole, Prompt};
use crate::error::{ModelError, Result};
use crate::generator::{
    FinishReason, GenerationEvent, GenerationRequest, GenerationStream, GenerationSummary,
    Generator, GeneratorInfo,
};

/// Where a remote model's API key comes from. The key itself is never stored by Basalt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeySource {
    /// No key (a server on the local network that asks for none).
    None,
    /// The environment variable of this name, read at each request.
    Env(String),
    /// The first line of this file, read at each request.
    File(std::path::PathBuf),
}

impl ApiKeySource {
    pub(crate) fn read(&self) -> Result<Option<String>> {
        match self {
            ApiKeySource::None => Ok(None),
            ApiKeySource::Env(name) => std::env::var(name).map(Some).map_err(|_| {
                ModelError::InvalidRequest(format!(
                    "the API key variable {name} is not set; export it or point the model at \
                     another key (`basalt models add … --api-key-env VAR`)"
                ))
            }),
            ApiKeySource::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|error| ModelError::io(path, error))?;
                let key = text.lines().next().unwrap_or_default().trim().to_string();
                if key.is_empty() {
                    return Err(ModelError::InvalidRequest(format!(
                        "the API key file {} is empty",
                        path.display()
                    )));
                }
                Ok(Some(key))
            }
        }
    }
}

/// The API a remote chat model speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI-compatible chat completions: `POST {base_url}/chat/completions`, server-sent events.
    OpenAi,
    /// Amazon Bedrock's ConverseStream (or any server speaking it, such as another Basalt):
    /// `POST {base_url}/model/{id}/converse-stream`, AWS event stream, signed with SigV4 unless
    /// a Bedrock API key is configured as the API key.
    Bedrock(crate::bedrock::BedrockAccess),
}

/// How to reach a remote chat model.
#[derive(Debug, Clone)]
pub struct RemoteChatOptions {
    /// The name Basalt knows the model by (`basalt models add NAME …`).
    pub name: String,
    /// The API's base URL: up to and including the version for OpenAI's
    /// (`http://gpu-box:8000/v1`), the endpoint for Bedrock's
    /// (`https://bedrock-runtime.us-east-1.amazonaws.com`).
    pub base_url: String,
    pub protocol: Protocol,
    /// The model id the server expects in `"model"`.
    pub model: String,
    pub api_key: ApiKeySource,
    /// The model's context window in tokens, as its server configures it.
    pub context_window: usize,
    /// Longest wait for the connection and the response headers of one attempt.
    pub timeout: Duration,
    /// Longest pause between two pieces of a streaming answer.
    pub read_timeout: Duration,
    /// Attempts after the first when it fails before any text arrived.
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one.
    pub backoff: Duration,
    /// PEM certificates to trust for an `https://` URL instead of the public roots (a server
    /// with a company's own certificate authority, or a self-signed one).
    pub ca_file: Option<std::path::PathBuf>,
}

impl RemoteChatOptions {
    pub fn new(name: &str, base_url: &str, model: &str) -> Self {
        RemoteChatOptions {
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            protocol: Protocol::OpenAi,
            api_key: ApiKeySource::None,
            context_window: 8192,
            timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retries: 2,
            backoff: Duration::from_millis(500),
            ca_file: None,
        }
    }
}

/// A chat model behind an OpenAI-compatible HTTP API.
#[derive(Debug)]
pub struct RemoteGenerator {
    info: GeneratorInfo,
    options: RemoteChatOptions,
    agent: ureq::Agent,
    breaker: std::sync::Arc<std::sync::Mutex<Breaker>>,
}

/// Requests that fail in a row (each after its retries) before the model is not called for
/// [`BREAKER_PAUSE`]: a server that is down fails every request at once instead of holding
/// each for its timeouts and retries.
const BREAKER_FAILURES: u32 = 3;
const BREAKER_PAUSE: Duration = Duration::from_secs(30);

/// A circuit breaker: closed while calls succeed, open for a while after
/// [`BREAKER_FAILURES`] failures in a row, then half open (one call decides).
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// Why no call may be made at `now`, if none may.
    pub(crate) fn refuses(&self, now: Instant) -> Option<String> {
        let until = self.open_until?;
        (now < until).then(|| {
            format!(
                "{} requests in a row failed, so it is not called for another {} s; check it \
                 with `basalt models list`",
                self.failures,
                until.duration_since(now).as_secs().max(1)
            )
        })
    }

    pub(crate) fn record(&mut self, succeeded: bool, now: Instant) {
        if succeeded {
            *self = Breaker::default();
        } else {
            self.failures += 1;
            if self.failures >= BREAKER_FAILURES {
                self.open_until = Some(now + BREAKER_PAUSE);
            }
        }
    }
}

impl RemoteGenerator {
    pub fn new(options: RemoteChatOptions) -> Result<Self> {
        let agent = http_agent(&options)?;
        Ok(RemoteGenerator {
            info: GeneratorInfo {
                model_name: options.name.clone(),
                context_window: options.context_window,
                stop_token_ids: Vec::new(),
            },
            options,
            agent,
            breaker: std::sync::Arc::default(),
        })
    }

    /// False while its circuit breaker is open (requests failed [`BREAKER_FAILURES`] times in
    /// a row lately), when requests fail at once without calling the server.
    pub fn available(&self) -> bool {
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .refuses(Instant::now())
            .is_none()
    }

    /// Whether the server answers `GET {base_url}/models` (Bedrock: a signed `CountTokens`)
    /// with success, and how fast.
    pub fn health(&self) -> std::result::Result<Duration, String> {
        let started = Instant::now();
        let key = self
            .options
            .api_key
            .read()
            .map_err(|error| error.to_string())?;
        if let Protocol::Bedrock(access) = &self.options.protocol {
            let url = format!(
                "{}{}",
                self.options.base_url,
                crate::bedrock::operation_path(&self.options.model, "count-tokens")
            );
            let body = r#"{"input": {"converse": {"messages": [{"role": "user", "content": [{"text": "Hi"}]}]}}}"#;
            let credentials = access
                .credentials_unless(key.as_deref())
                .map_err(|error| error.to_string())?;
            let request = crate::bedrock::post(
                &self.agent,
                &url,
                body,
                &access.region,
                credentials.as_ref(),
                key.as_deref(),
            );
            let secret = credentials.as_ref().map(|found| found.secret.as_str());
            return match request.send(body) {
                // A model that cannot count tokens still answers, with a ValidationException.
                Ok(response) if response.status().is_success() || response.status() == 400 => {
                    Ok(started.elapsed())
                }
                Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
                Err(error) => Err(redact(&redact(&error.to_string(), key.as_deref()), secret)),
            };
        }
        let mut request = self.agent.get(format!("{}/models", self.options.base_url));
        if let Some(key) = &key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        match request.call() {
            Ok(response) if response.status().is_success() => Ok(started.elapsed()),
            Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
            Err(error) => Err(redact(&error.to_string(), key.as_deref())),
        }
    }

    fn body(&self, messages: &[ChatMessage], request: &GenerationRequest) -> String {
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|message| {
                serde_json::json!({"role": message.role.as_str(), "content": message.content})
            })
            .collect();
        let mut body = serde_json::json!({
            "model": self.options.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": request.sampling.max_tokens,
            "temperature": request.sampling.temperature,
            "top_p": request.sampling.top_p,
        });
        if let Some(seed) = request.sampling.seed {
            body["seed"] = seed.into();
        }
        if !request.sampling.stop.is_empty() {
            body["stop"] = request.sampling.stop.clone().into();
        }
        body.to_string()
    }
}

/// The HTTP client for a remote model: its URL checked, its timeouts, and the certificates it
/// trusts.
pub(crate) fn http_agent(options: &RemoteChatOptions) -> Result<ureq::Agent> {
    if !(options.base_url.starts_with("http://") || options.base_url.starts_with("https://")) {
        return Err(ModelError::InvalidRequest(format!(
            "the base URL of model {} must start with http:// or https://, got {}",
            options.name, options.base_url
        )));
    }
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(options.timeout))
        .timeout_recv_response(Some(options.timeout))
        .timeout_per_read(Some(options.read_timeout))
        .http_status_as_error(false);
    if let Some(path) = &options.ca_file {
        let roots = trusted_certificates(path)?;
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                .build(),
        );
    }
    Ok(config.build().into())
}

/// The wait a server asks for in `Retry-After` (seconds).
pub(crate) fn retry_after<B>(response: &ureq::http::Response<B>) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The certificates of the PEM file at `path`.
fn trusted_certificates(path: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path).map_err(|error| ModelError::io(path, error))?;
    let certificates: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(certificate)) => Some(certificate),
            _ => None,
        })
        .collect();
    if certificates.is_empty() {
        return Err(ModelError::InvalidRequest(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the certificate \
             of the authority that signed the model server's",
            path.display()
        )));
    }
    Ok(certificates)
}

/// A rough count of the tokens `text` makes for a model whose tokenizer Basalt does not have:
/// one per three bytes, which overestimates English for the BPE vocabularies of current models
/// (about four bytes a token), so passages chosen to fit the window do fit.
pub(crate) fn estimated_tokens(text: &str) -> usize {
    text.len().div_ceil(3)
}

impl Generator for RemoteGenerator {
    fn info(&self) -> &GeneratorInfo {
        &self.info
    }

    /// An estimate: the server tokenizes, Basalt only needs the length to fit passages into
    /// the window (see [`estimated_tokens`]). The ids are all 0.
    fn tokenize_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let count = match prompt {
            // Each message costs a few tokens of its template.
            Prompt::Chat(messages) => messages
                .iter()
                .map(|message| estimated_tokens(&message.content) + 4)
                .sum(),
            Prompt::Raw(text) => estimated_tokens(text),
            Prompt::Tokens(_) => return Err(tokens_refused(&self.options.name)),
        };
        Ok(vec![0; count])
    }

    fn generate(&self, request: GenerationRequest) -> Result<GenerationStream> {
        if request.sampling.max_tokens == 0 {
            return Err(ModelError::InvalidRequest(
                "max_tokens must be at least 1".to_string(),
            ));
        }
        let messages = match &request.prompt {
            Prompt::Chat(messages) => messages.clone(),
            Prompt::Raw(text) => vec![ChatMessage::new(ChatRole::User, text.clone())],
            Prompt::Tokens(_) => return Err(tokens_refused(&self.options.name)),
        };
        let prompt_tokens = self.tokenize_prompt(&request.prompt)?.len();
        let refused = self
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .refuses(Instant::now());
        if let Some(reason) = refused {
            return Err(ModelError::Remote {
                model: self.options.name.clone(),
                reason,
            });
        }
        let key = self.options.api_key.read()?;
        let (url, body, bedrock) = match &self.options.protocol {
            Protocol::OpenAi => (
                format!("{}/chat/completions", self.options.base_url),
                self.body(&messages, &request),
                None,
            ),
            Protocol::Bedrock(access) => (
                format!(
                    "{}{}",
                    self.options.base_url,
                    crate::bedrock::operation_path(&self.options.model, "converse-stream")
                ),
                crate::bedrock::converse_body(&messages, &request),
                Some(BedrockCall {
                    region: access.region.clone(),
                    credentials: access.credentials_unless(key.as_deref())?,
                }),
            ),
        };
        let (events, receiver) = std::sync::mpsc::channel();
        let call = Call {
            agent: self.agent.clone(),
            url,
            name: self.options.name.clone(),
            key,
            body,
            bedrock,
            retries: self.options.retries,
            backoff: self.options.backoff,
            estimated_prompt_tokens: prompt_tokens,
        };
        let breaker = self.breaker.clone();
        std::thread::Builder::new()
            .name("basalt-remote".to_string())
            .spawn(move || {
                let outcome = call.run(&events);
                breaker
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .record(outcome.is_ok(), Instant::now());
                if let Err(error) = outcome {
                    let _ = events.send(Err(error));
                }
            })
            .map_err(|error| ModelError::Inference(format!("could not start a thread: {error}")))?;
        Ok(GenerationStream::new(receiver))
    }
}

fn tokens_refused(name: &str) -> ModelError {
    ModelError::InvalidRequest(format!(
        "model {name} is served remotely and takes text, not token ids"
    ))
}

/// `text` with the API key, if it occurs, replaced by `***`.
pub(crate) fn redact(text: &str, key: Option<&str>) -> String {
    match key {
        Some(key) if !key.is_empty() => text.replace(key, "***"),
        _ => text.to_string(),
    }
}

/// Most of a non-streamed answer body that is read.
const MAX_PLAIN_BODY: usize = 4 << 20;

/// One streaming request, run on its own thread.
struct Call {
    agent: ureq::Agent,
    url: String,
    name: String,
    key: Option<String>,
    body: String,
    /// How to sign for Bedrock's protocol (none: OpenAI's).
    bedrock: Option<BedrockCall>,
    retries: u32,
    backoff: Duration,
    estimated_prompt_tokens: usize,
}

/// A Bedrock call's signing: the region, and the credentials unless a bearer key is used.
struct BedrockCall {
    region: String,
    credentials: Option<crate::bedrock::Credentials>,
}

/// What one attempt came to.
enum Attempt {
    /// The answer streamed to its end, or the caller went away.
    Done,
    /// Failed before any text was sent: worth another try.
    Retry(String, Option<Duration>),
}

impl Call {
    fn run(&self, events: &Sender<Result<GenerationEvent>>) -> Result<()> {
        let mut wait = self.backoff;
        let mut attempt = 0;
        loop {
            match self.attempt(events)? {
                Attempt::Done => return Ok(()),
                Attempt::Retry(reason, retry_after) => {
                    if attempt >= self.retries {
                        return Err(self.error(&format!(
                            "{reason} (after {} attempts); check that the server is up with \
                             `basalt models list`",
                            attempt + 1
                        )));
                    }
                    attempt += 1;
                    // A server's Retry-After is honoured up to 30 s.
                    let pause =
                        retry_after.map_or(wait, |after| after.min(Duration::from_secs(30)));
                    tracing::warn!(model = %self.name, %reason, ?pause, "retrying the model server");
                    std::thread::sleep(pause);
                    wait *= 2;
                }
            }
        }
    }

    /// The text of a completion chunk (`part` "delta") or a whole completion (`part`
    /// "message"), noting its usage and finish reason; a server's error object is an error.
    fn read_chunk(
        &self,
        chunk: &serde_json::Value,
        part: &str,
        usage: &mut Option<(usize, usize)>,
        finish_reason: &mut FinishReason,
    ) -> Result<Option<String>> {
        if let Some(message) = chunk["error"]["message"].as_str() {
            return Err(self.error(message));
        }
        if let (Some(prompt), Some(completion)) = (
            chunk["usage"]["prompt_tokens"].as_u64(),
            chunk["usage"]["completion_tokens"].as_u64(),
        ) {
            *usage = Some((prompt as usize, completion as usize));
        }
        let choice = &chunk["choices"][0];
        match choice["finish_reason"].as_str() {
            Some("stop") => *finish_reason = FinishReason::Stop,
            Some(_) => *finish_reason = FinishReason::Length,
            None => {}
        }
        Ok(choice[part]["content"].as_str().map(str::to_string))
    }

    fn error(&self, reason: &str) -> ModelError {
        let secret = self
            .bedrock
            .as_ref()
            .and_then(|bedrock| bedrock.credentials.as_ref())
            .map(|found| found.secret.as_str());
        ModelError::Remote {
            model: self.name.clone(),
            reason: redact(&redact(reason, self.key.as_deref()), secret),
        }
    }

    fn attempt(&self, events: &Sender<Result<GenerationEvent>>) -> Result<Attempt> {
        let started = Instant::now();
        let request = match &self.bedrock {
            None => {
                let mut request = self
                    .agent
                    .post(&self.url)
                    .header("Content-Type", "application/json")
                    .header("Accept", "text/event-stream");
                if let Some(key) = &self.key {
                    request = request.header("Authorization", format!("Bearer {key}"));
                }
                request
            }
            // Signed at each attempt: a signature is good for five minutes.
            Some(bedrock) => crate::bedrock::post(
                &self.agent,
                &self.url,
                &self.body,
                &bedrock.region,
                bedrock.credentials.as_ref(),
                self.key.as_deref(),
            )
            .header("Accept", "application/vnd.amazon.eventstream"),
        };
        let response = match request.send(self.body.as_str()) {
            Ok(response) => response,
            Err(error) => return Ok(Attempt::Retry(error.to_string(), None)),
        };
        let status = response.status().as_u16();
        if status != 200 {
            let retry_after = retry_after(&response);
            let text = response
                .into_body()
                .read_to_string()
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect::<String>();
            let reason = format!("HTTP {status}: {}", text.trim());
            if status == 429 || status >= 500 {
                return Ok(Attempt::Retry(reason, retry_after));
            }
            return Err(self.error(&reason));
        }
        if self.bedrock.is_some() {
            return self.read_converse_stream(response.into_body().into_reader(), events, started);
        }
        let reader = BufReader::new(response.into_body().into_reader());
        let mut first_token = None;
        let mut completion_tokens = 0;
        let mut usage: Option<(usize, usize)> = None;
        let mut finish_reason = FinishReason::Length;
        // A server that ignores `"stream": true` answers with one JSON body instead of events.
        let mut plain = String::new();
        let mut streamed = false;
        for line in reader.lines() {
            let line = match line {
                Ok(line) => line,
                Err(error) if first_token.is_none() => {
                    return Ok(Attempt::Retry(error.to_string(), None));
                }
                Err(error) => return Err(self.error(&format!("the answer broke off: {error}"))),
            };
            let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                if !streamed && plain.len() < MAX_PLAIN_BODY {
                    plain.push_str(&line);
                    plain.push('\n');
                }
                continue;
            };
            streamed = true;
            if data == "[DONE]" {
                break;
            }
            let chunk: serde_json::Value = serde_json::from_str(data).map_err(|error| {
                self.error(&format!(
                    "the server sent an event that is not JSON: {error}"
                ))
            })?;
            let text = self.read_chunk(&chunk, "delta", &mut usage, &mut finish_reason)?;
            let Some(text) = text.filter(|text| !text.is_empty()) else {
                continue;
            };
            first_token.get_or_insert_with(|| started.elapsed());
            completion_tokens += 1;
            let event = GenerationEvent::Token { id: 0, text };
            if events.send(Ok(event)).is_err() {
                // The caller dropped the stream: returning drops the reader, which closes the
                // connection, and the server stops generating.
                return Ok(Attempt::Done);
            }
        }
        if !streamed && !plain.trim().is_empty() {
            let body: serde_json::Value = serde_json::from_str(&plain).map_err(|error| {
                self.error(&format!(
                    "the answer is neither server-sent events nor JSON: {error}"
                ))
            })?;
            if let Some(text) = self.read_chunk(&body, "message", &mut usage, &mut finish_reason)? {
                first_token.get_or_insert_with(|| started.elapsed());
                completion_tokens += 1;
                let _ = events.send(Ok(GenerationEvent::Token { id: 0, text }));
            }
        }
        self.finish(
            events,
            started,
            first_token,
            usage,
            completion_tokens,
            finish_reason,
        )
    }
}

impl Call {
    /// Sends the summary of an answer that streamed to its end: the server's token counts
    /// when it gave them, else the estimate and the pieces counted.
    fn finish(
        &self,
        events: &Sender<Result<GenerationEvent>>,
        started: Instant,
        first_token: Option<Duration>,
        usage: Option<(usize, usize)>,
        pieces: usize,
        finish_reason: FinishReason,
    ) -> Result<Attempt> {
        let prompt_duration = first_token.unwrap_or_else(|| started.elapsed());
        let (prompt_tokens, completion_tokens) =
            usage.unwrap_or((self.estimated_prompt_tokens, pieces));
        let summary = GenerationSummary {
            prompt_tokens,
            completion_tokens,
            finish_reason,
            prompt_duration,
            decode_duration: started.elapsed().saturating_sub(prompt_duration),
            fallback_model: None,
        };
        let _ = events.send(Ok(GenerationEvent::Done(summary)));
        Ok(Attempt::Done)
    }

    /// Relays a ConverseStream answer (Bedrock's protocol).
    fn read_converse_stream(
        &self,
        reader: impl std::io::Read,
        events: &Sender<Result<GenerationEvent>>,
        started: Instant,
    ) -> Result<Attempt> {
        use crate::bedrock::StreamEvent;
        let mut first_token = None;
        let mut completion_tokens = 0;
        let mut usage: Option<(usize, usize)> = None;
        let mut finish_reason = FinishReason::Length;
        let mut retry = None;
        let mut gone = false;
        let read = crate::bedrock::read_stream(reader, &mut |event| {
            match event {
                StreamEvent::Text(text) if !text.is_empty() => {
                    first_token.get_or_insert_with(|| started.elapsed());
                    completion_tokens += 1;
                    if events
                        .send(Ok(GenerationEvent::Token { id: 0, text }))
                        .is_err()
                    {
                        // The caller dropped the stream: the connection closes with the reader.
                        gone = true;
                        return Ok(false);
                    }
                }
                StreamEvent::Stop(reason) => finish_reason = reason,
                StreamEvent::Usage { input, output } => usage = Some((input, output)),
                StreamEvent::Exception { kind, message } => {
                    let reason = format!("{kind}: {message}");
                    if first_token.is_none() && crate::bedrock::retryable(&kind) {
                        retry = Some(reason);
                        return Ok(false);
                    }
                    return Err(self.error(&reason));
                }
                StreamEvent::Text(_) | StreamEvent::Other => {}
            }
            Ok(true)
        });
        if gone {
            return Ok(Attempt::Done);
        }
        if let Some(reason) = retry {
            return Ok(Attempt::Retry(reason, None));
        }
        if let Err(reason) = read {
            if first_token.is_none() {
                return Ok(Attempt::Retry(reason, None));
            }
            return Err(self.error(&format!("the answer broke off: {reason}")));
        }
        self.finish(
            events,
            started,
            first_token,
            usage,
            completion_tokens,
            finish_reason,
        )
    }
}

/// A model and the one that writes when it fails: a request the first model fails before it
/// produced any text (a server down, a refused key, a timeout after the retries, an open
/// circuit breaker) goes to the second, and the summary names it
/// ([`GenerationSummary::fallback_model`]). Once text has streamed nothing is switched.
#[derive(Debug)]
pub struct FallbackGenerator {
    primary: std::sync::Arc<dyn Generator>,
    fallback: std::sync::Arc<dyn Generator>,
    info: GeneratorInfo,
}

impl FallbackGenerator {
    pub fn new(
        primary: std::sync::Arc<dyn Generator>,
        fallback: std::sync::Arc<dyn Generator>,
    ) -> Self {
        let mut info = primary.info().clone();
        // A prompt must fit whichever model writes.
        info.context_window = info.context_window.min(fallback.info().context_window);
        FallbackGenerator {
            primary,
            fallback,
            info,
        }
    }
}

impl Generator for FallbackGenerator {
    fn info(&self) -> &GeneratorInfo {
        &self.info
    }

    /// The longer of the two counts, so a prompt fitted to it fits both.
    fn tokenize_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let primary = self.primary.tokenize_prompt(prompt)?;
        match self.fallback.tokenize_prompt(prompt) {
            Ok(fallback) if fallback.len() > primary.len() => Ok(fallback),
            _ => Ok(primary),
        }
    }

    fn generate(&self, request: GenerationRequest) -> Result<GenerationStream> {
        let fall_back = |error: ModelError, request: GenerationRequest| {
            let name = self.fallback.info().model_name.clone();
            tracing::warn!(model = %self.info.model_name, %error, fallback = %name, "the model failed; its fallback writes");
            relay(self.fallback.generate(request)?, Some(name))
        };
        let mut primary = match self.primary.generate(request.clone()) {
            Ok(stream) => stream,
            Err(error) => return fall_back(error, request),
        };
        // The first event says whether the primary is answering.
        match primary.next() {
            Some(Err(error)) => fall_back(error, request),
            first => relay(first.into_iter().chain(primary), None),
        }
    }
}

/// `events` as a stream, relayed by a thread of its own; its summary names `fallback_model`
/// as the model that generated, when there is one.
fn relay(
    events: impl Iterator<Item = Result<GenerationEvent>> + Send + 'static,
    fallback_model: Option<String>,
) -> Result<GenerationStream> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("basalt-fallback".to_string())
        .spawn(move || {
            for event in events {
                let event = match event {
                    Ok(GenerationEvent::Done(mut summary)) if fallback_model.is_some() => {
                        summary.fallback_model.clone_from(&fallback_model);
                        Ok(GenerationEvent::Done(summary))
                    }
                    other => other,
                };
                if sender.send(event).is_err() {
                    return;
                }
            }
        })
        .map_err(|error| ModelError::Inference(format!("could not start a thread: {error}")))?;
    Ok(GenerationStream::new(receiver))
}

/// A model served elsewhere, as registered with `basalt models add`: everything needed to reach
/// it except the key, which stays in the environment or a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteModel {
    pub name: String,
    /// What it does: writes answers (`chat`, the default) or embeds text (`embedding`: a
    /// knowledge base's `--embedding-model`).
    #[serde(default, skip_serializing_if = "RemoteKind::is_chat")]
    pub kind: RemoteKind,
    /// The API it speaks: `openai` (an OpenAI-compatible chat completions API) or `bedrock`
    /// (Bedrock's ConverseStream).
    pub provider: String,
    pub base_url: String,
    /// The model id the server expects.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<std::path::PathBuf>,
    pub context_window: usize,
    /// PEM certificates to trust for its `https://` URL instead of the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// For `bedrock`: the region requests are signed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// For `bedrock`: the variables holding the access key id and the secret access key
    /// (default `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), unless an API key is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_access_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_key_env: Option<String>,
}

/// What a registered model does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteKind {
    /// A chat model: OpenAI's chat completions, Bedrock's ConverseStream.
    #[default]
    Chat,
    /// An embedding model: OpenAI's embeddings, Bedrock's InvokeModel with Amazon Titan Text
    /// Embeddings' body.
    Embedding,
}

impl RemoteKind {
    pub fn is_chat(&self) -> bool {
        *self == RemoteKind::Chat
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RemoteKind::Chat => "chat",
            RemoteKind::Embedding => "embedding",
        }
    }
}

impl RemoteModel {
    /// The generator that calls it; an error for an embedding model.
    pub fn generator(&self) -> Result<RemoteGenerator> {
        self.expect(RemoteKind::Chat)?;
        RemoteGenerator::new(self.options())
    }

    /// The embedder that calls it, for vectors of `dimension` numbers (a knowledge base's),
    /// or of the dimension one call finds when `None`; an error for a chat model.
    pub fn embedder(&self, dimension: Option<usize>) -> Result<crate::RemoteEmbedder> {
        self.expect(RemoteKind::Embedding)?;
        crate::RemoteEmbedder::new(self.options(), dimension)
    }

    /// Whether its server answers, and how fast: `GET {base_url}/models` or a signed
    /// CountTokens for a chat model, one embedding for an embedding model.
    pub fn health(&self) -> std::result::Result<Duration, String> {
        match self.kind {
            RemoteKind::Chat => self
                .generator()
                .map_err(|error| error.to_string())?
                .health(),
            RemoteKind::Embedding => {
                let started = Instant::now();
                self.embedder(None).map_err(|error| error.to_string())?;
                Ok(started.elapsed())
            }
        }
    }

    fn expect(&self, kind: RemoteKind) -> Result<()> {
        if self.kind == kind {
            return Ok(());
        }
        Err(ModelError::InvalidRequest(format!(
            "model {} is registered as a remote {} model, not a {} model; register the {} \
             model under another name",
            self.name,
            self.kind.as_str(),
            kind.as_str(),
            kind.as_str()
        )))
    }

    /// How to reach it.
    fn options(&self) -> RemoteChatOptions {
        let mut options = RemoteChatOptions::new(&self.name, &self.base_url, &self.model);
        if self.provider == "bedrock" {
            let mut access =
                crate::bedrock::BedrockAccess::new(self.region.as_deref().unwrap_or("us-east-1"));
            if let Some(name) = &self.aws_access_key_env {
                access.access_key_env.clone_from(name);
            }
            if let Some(name) = &self.aws_secret_key_env {
                access.secret_key_env.clone_from(name);
            }
            options.protocol = Protocol::Bedrock(access);
        }
        options.context_window = self.context_window;
        options.ca_file.clone_from(&self.ca_file);
        options.api_key = match (&self.api_key_env, &self.api_key_file) {
            (Some(name), _) => ApiKeySource::Env(name.clone()),
            (None, Some(path)) => ApiKeySource::File(path.clone()),
            (None, None) => ApiKeySource::None,
        };
        options
    }
}

/// What a chat model's name picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatModel {
    /// The embedded SmolLM2-135M-Instruct.
    Embedded,
    /// A model served elsewhere, registered with `basalt models add`.
    Remote(Box<RemoteModel>),
}

/// Where a registry of remote models is kept when it is not a data directory's file: a store
/// every replica shares (PostgreSQL). It holds the same JSON as `models.json`.
pub trait RegistryStore: Send + Sync + std::fmt::Debug {
    /// The registry's JSON; `None` when nothing was ever registered.
    fn load(&self) -> Result<Option<String>>;

    /// Replaces the registry's JSON with what `change` makes of it, atomically: changes from
    /// several processes take turns.
    fn change(
        &self,
        change: &mut (dyn FnMut(Option<String>) -> Result<String> + Send),
    ) -> Result<()>;
}

/// The models registered in a data directory (`models.json`), or in a shared store: names a
/// request, a knowledge base (`answer.model`) or `basalt ask --model` can choose.
#[derive(Debug, Clone)]
pub struct RemoteModels {
    storage: Storage,
}

#[derive(Debug, Clone)]
enum Storage {
    File(std::path::PathBuf),
    Shared(std::sync::Arc<dyn RegistryStore>),
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct RemoteModelsFile {
    models: Vec<RemoteModel>,
}

impl RemoteModels {
    /// The registry of the data directory `data_dir`.
    pub fn new(data_dir: &std::path::Path) -> Self {
        RemoteModels {
            storage: Storage::File(data_dir.join("models.json")),
        }
    }

    /// The registry kept in `store` (replicas share it).
    pub fn shared(store: std::sync::Arc<dyn RegistryStore>) -> Self {
        RemoteModels {
            storage: Storage::Shared(store),
        }
    }

    pub fn list(&self) -> Result<Vec<RemoteModel>> {
        Ok(self.read()?.models)
    }

    pub fn get(&self, name: &str) -> Result<Option<RemoteModel>> {
        Ok(self.list()?.into_iter().find(|model| model.name == name))
    }

    /// The chat model `name` picks: the embedded one by its name
    /// ([`crate::DEFAULT_GENERATION_MODEL`]), else the one registered under it; `None` when
    /// neither.
    pub fn resolve(&self, name: &str) -> Result<Option<ChatModel>> {
        if name == crate::DEFAULT_GENERATION_MODEL {
            return Ok(Some(ChatModel::Embedded));
        }
        Ok(self
            .get(name)?
            .map(|model| ChatModel::Remote(Box::new(model))))
    }

    /// Adds `model`, or replaces the one of the same name.
    pub fn add(&self, model: &RemoteModel) -> Result<()> {
        if model.name.is_empty()
            || !model
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ModelError::InvalidRequest(format!(
                "a model name is letters, digits, '-', '_' and '.', got {:?}",
                model.name
            )));
        }
        if model.provider != "openai" && model.provider != "bedrock" {
            return Err(ModelError::InvalidRequest(format!(
                "provider {:?} is not one Basalt speaks; use \"openai\" (an OpenAI-compatible \
                 chat completions API) or \"bedrock\" (Bedrock's ConverseStream)",
                model.provider
            )));
        }
        if crate::catalog().iter().any(|spec| spec.name == model.name) {
            return Err(ModelError::InvalidRequest(format!(
                "{} is the name of a model Basalt runs itself; register the remote one under \
                 another name",
                model.name
            )));
        }
        http_agent(&model.options())?;
        self.update(&mut |file| {
            file.models.retain(|other| other.name != model.name);
            file.models.push(model.clone());
            file.models.sort_by(|a, b| a.name.cmp(&b.name));
            true
        })
        .map(drop)
    }

    /// Removes the model `name`; false when there was none.
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.update(&mut |file| {
            let before = file.models.len();
            file.models.retain(|model| model.name != name);
            file.models.len() != before
        })
    }

    fn read(&self) -> Result<RemoteModelsFile> {
        let (text, place) = match &self.storage {
            Storage::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => (Some(text), path.display().to_string()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => (None, String::new()),
                Err(error) => return Err(ModelError::io(path, error)),
            },
            Storage::Shared(store) => (store.load()?, "the shared registry".to_owned()),
        };
        match text {
            Some(text) => parse_registry(&text, &place),
            None => Ok(RemoteModelsFile::default()),
        }
    }

    /// Applies `change` to the registry and keeps the result when it says it changed
    /// anything; returns what it said. A file is written whole and renamed into place, so a
    /// crash leaves the old or the new; a shared store changes in one transaction.
    fn update(
        &self,
        change: &mut (dyn FnMut(&mut RemoteModelsFile) -> bool + Send),
    ) -> Result<bool> {
        let render = |file: &RemoteModelsFile| {
            serde_json::to_string_pretty(file)
                .map_err(|error| ModelError::Inference(error.to_string()))
        };
        match &self.storage {
            Storage::File(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|error| ModelError::io(parent, error))?;
                }
                // Changes take turns on a lock file (two `basalt models add` at once keep both).
                let lock_path = path.with_extension("json.lock");
                let lock = std::fs::File::create(&lock_path)
                    .and_then(|lock| lock.lock().map(|()| lock))
                    .map_err(|error| ModelError::io(&lock_path, error))?;
                let mut file = self.read()?;
                if !change(&mut file) {
                    return Ok(false);
                }
                let temporary = path.with_extension("json.tmp");
                std::fs::write(&temporary, render(&file)?)
                    .map_err(|error| ModelError::io(&temporary, error))?;
                std::fs::rename(&temporary, path).map_err(|error| ModelError::io(path, error))?;
                drop(lock);
                Ok(true)
            }
            Storage::Shared(store) => {
                let mut changed = false;
                store.change(&mut |text| {
                    let mut file = match text {
                        Some(text) => parse_registry(&text, "the shared registry")?,
                        None => RemoteModelsFile::default(),
                    };
                    changed = change(&mut file);
                    render(&file)
                })?;
                Ok(changed)
            }
        }
    }
}

/// What every registry must do, run on the data directory's file here and on a shared store
/// in its own tests: `make` opens a handle on one empty registry (each call another handle).
pub fn conformance(make: &(dyn Fn() -> RemoteModels + Sync)) {
    let (models, other) = (make(), make());
    assert!(models.list().expect("empty").is_empty());
    let mut model = RemoteModel {
        kind: RemoteKind::Chat,
        name: "big".to_string(),
        provider: "openai".to_string(),
        base_url: "http://127.0.0.1:8000/v1".to_string(),
        model: "llama-70b".to_string(),
        api_key_env: Some("BIG_KEY".to_string()),
        api_key_file: None,
        context_window: 8192,
        ca_file: None,
        region: None,
        aws_access_key_env: None,
        aws_secret_key_env: None,
    };
    models.add(&model).expect("added");
    model.context_window = 4096;
    models.add(&model).expect("replaced");
    assert_eq!(models.list().expect("one"), [model.clone()]);
    assert_eq!(
        other.get("big").expect("read"),
        Some(model.clone()),
        "seen by another handle"
    );
    let mut bad = model.clone();
    bad.name = "no spaces allowed".to_string();
    assert!(models.add(&bad).is_err());
    // Registrations at once through several handles are all kept.
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let model = model.clone();
            scope.spawn(move || {
                let handle = make();
                for index in 0..3 {
                    let mut added = model.clone();
                    added.name = format!("model-{worker}-{index}");
                    handle.add(&added).expect("added");
                }
            });
        }
    });
    assert_eq!(other.list().expect("lists").len(), 13);
    assert!(other.remove("big").expect("removed"));
    assert!(!models.remove("big").expect("gone"));
    assert_eq!(models.get("big").expect("read"), None);
}

fn parse_registry(text: &str, place: &str) -> Result<RemoteModelsFile> {
    serde_json::from_str(text).map_err(|error| {
        ModelError::InvalidRequest(format!(
            "{place} is not a valid models file: {error}; fix or delete it"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer on 127.0.0.1 that answers each connection with the next of `responses` (raw
    /// HTTP) and records the requests: for the client's handling of what servers send.
    fn peer(responses: Vec<String>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let port = listener.local_addr().expect("address").port();
        let handle = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for response in responses {
                let (mut stream, _) = listener.accept().expect("accepts");
                let mut request = Vec::new();
                let mut buffer = [0u8; 8192];
                // The head, then the body its Content-Length announces.
                while let Ok(read) = std::io::Read::read(&mut stream, &mut buffer) {
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|line| {
                                line.to_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                    if read == 0 {
                        break;
                    }
                }
                requests.push(String::from_utf8_lossy(&request).to_string());
                let _ = std::io::Write::write_all(&mut stream, response.as_bytes());
            }
            requests
        });
        (port, handle)
    }

    fn response(status: &str, content_type: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn remote_embeddings_are_retried_ordered_normalized_and_checked() {
        use crate::Embedder;
        let busy = response("503 Service Unavailable", "application/json", "{}");
        // Out of order, and not unit length: put in order and scaled.
        let two = r#"{"data": [{"index": 1, "embedding": [0.0, 2.0]}, {"index": 0, "embedding": [3.0, 4.0]}], "usage": {"prompt_tokens": 7}}"#;
        let three = r#"{"data": [{"index": 0, "embedding": [1.0, 0.0, 0.0]}]}"#;
        let refused = response(
            "401 Unauthorized",
            "application/json",
            r#"{"error": {"message": "bad key sk-secret"}}"#,
        );
        let (port, handle) = peer(vec![
            busy,
            response("200 OK", "application/json", two),
            response("200 OK", "application/json", three),
            refused,
        ]);
        let url = format!("http://127.0.0.1:{port}/v1");
        let mut options = RemoteChatOptions::new("embed", &url, "e");
        options.backoff = Duration::from_millis(10);
        let dir = tempfile::tempdir().expect("temp dir");
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "sk-secret\n").expect("key file");
        options.api_key = ApiKeySource::File(key_file);
        let embedder = crate::RemoteEmbedder::new(options, Some(2)).expect("client");
        let vectors = embedder
            .embed_batch(&["a".to_string(), "b".to_string()])
            .expect("embeds after one retry");
        assert_eq!(vectors, [vec![0.6, 0.8], vec![0.0, 1.0]]);
        assert_eq!(embedder.tokens_used(), 7);
        let wrong = embedder.embed_query("c").expect_err("three dimensions");
        assert!(
            wrong.to_string().contains("3 dimensions where 2"),
            "{wrong}"
        );
        let refused = embedder.embed_query("d").expect_err("refused");
        let message = refused.to_string();
        assert!(
            message.contains("401") && !message.contains("sk-secret"),
            "{message}"
        );
        let requests = handle.join().expect("peer");
        assert!(
            requests[1].contains("POST /v1/embeddings"),
            "{}",
            requests[1]
        );
        assert!(requests[1].contains("Bearer sk-secret"), "{}", requests[1]);
        assert!(
            requests[1].contains(r#""input":["a","b"]"#),
            "{}",
            requests[1]
        );
    }

    /// A client of the peer at `port` whose key (if any) is in a file of `dir`.
    fn client(port: u16, key: &str, dir: &tempfile::TempDir) -> RemoteGenerator {
        let url = format!("http://127.0.0.1:{port}/v1");
        let mut options = RemoteChatOptions::new("big", &url, "m");
        options.backoff = Duration::from_millis(10);
        let file = dir.path().join("key");
        std::fs::write(&file, key).expect("key file");
        options.api_key = ApiKeySource::File(file);
        RemoteGenerator::new(options).expect("client")
    }

    fn collect(generator: &RemoteGenerator) -> Result<(String, GenerationSummary)> {
        let request = GenerationRequest {
            prompt: Prompt::Chat(vec![ChatMessage::new(ChatRole::User, "hello")]),
            sampling: crate::SamplingOptions::default(),
        };
        let mut text = String::new();
        for event in generator.generate(request)? {
            match event? {
                GenerationEvent::Token { text: piece, .. } => text.push_str(&piece),
                GenerationEvent::Done(summary) => return Ok((text, summary)),
            }
        }
        Err(ModelError::WorkerGone)
    }

    #[test]
    fn a_server_that_answers_busy_then_with_plain_json_is_read() {
        let plain = r#"{"choices": [{"message": {"role": "assistant", "content": "Plain answer."},
            "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}"#;
        let (port, requests) = peer(vec![
            response("503 Service Unavailable", "application/json", "{}"),
            response("200 OK", "application/json", plain),
        ]);
        let dir = tempfile::tempdir().expect("temp dir");
        let (text, summary) = collect(&client(port, "sk-test-123", &dir)).expect("answered");
        assert_eq!(text, "Plain answer.");
        assert_eq!((summary.prompt_tokens, summary.completion_tokens), (5, 3));
        assert_eq!(summary.finish_reason, FinishReason::Stop);
        let requests = requests.join().expect("peer");
        assert_eq!(requests.len(), 2, "retried once after the 503");
        assert!(
            requests[1].contains("authorization: Bearer sk-test-123"),
            "{}",
            requests[1]
        );
        assert!(requests[1].contains("\"stream\":true"), "{}", requests[1]);
    }

    #[test]
    fn a_refused_key_is_not_retried_and_not_repeated() {
        let (port, requests) = peer(vec![response(
            "401 Unauthorized",
            "application/json",
            r#"{"error": {"message": "bad key sk-test-456"}}"#,
        )]);
        let dir = tempfile::tempdir().expect("temp dir");
        let error = collect(&client(port, "sk-test-456", &dir))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("model server of big: HTTP 401"), "{error}");
        assert!(!error.contains("sk-test-456"), "{error}");
        assert_eq!(requests.join().expect("peer").len(), 1);
    }

    #[test]
    fn keys_are_redacted_and_token_counts_estimated() {
        assert_eq!(
            redact("401 for key sk-secret-123", Some("sk-secret-123")),
            "401 for key ***"
        );
        assert_eq!(redact("no key here", None), "no key here");
        assert_eq!(estimated_tokens("abcdefg"), 3);
        let generator = RemoteGenerator::new(RemoteChatOptions::new(
            "big",
            "http://127.0.0.1:9/v1/",
            "llama-70b",
        ))
        .expect("a valid URL");
        assert_eq!(generator.options.base_url, "http://127.0.0.1:9/v1");
        let prompt = Prompt::Chat(vec![ChatMessage::new(ChatRole::User, "abcdef")]);
        assert_eq!(generator.tokenize_prompt(&prompt).expect("counts").len(), 6);
        assert!(generator.tokenize_prompt(&Prompt::Tokens(vec![1])).is_err());
        assert!(RemoteGenerator::new(RemoteChatOptions::new("x", "ftp://host", "m")).is_err());
    }

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_and_closes_on_success() {
        let start = Instant::now();
        let mut breaker = Breaker::default();
        breaker.record(false, start);
        breaker.record(false, start);
        assert!(
            breaker.refuses(start).is_none(),
            "two failures leave it closed"
        );
        breaker.record(false, start);
        let reason = breaker.refuses(start).expect("open after three");
        assert!(reason.contains("3 requests in a row failed"), "{reason}");
        assert!(
            breaker.refuses(start + BREAKER_PAUSE).is_none(),
            "half open later"
        );
        breaker.record(true, start + BREAKER_PAUSE);
        breaker.record(false, start + BREAKER_PAUSE);
        assert!(
            breaker.refuses(start + BREAKER_PAUSE).is_none(),
            "a success resets it"
        );
    }

    /// A model whose server is down: its stream fails before any text.
    #[derive(Debug)]
    struct Down(GeneratorInfo);

    impl Generator for Down {
        fn info(&self) -> &GeneratorInfo {
            &self.0
        }

        fn tokenize_prompt(&self, _: &Prompt) -> Result<Vec<u32>> {
            Ok(vec![0; 3])
        }

        fn generate(&self, _: GenerationRequest) -> Result<GenerationStream> {
            let (events, receiver) = std::sync::mpsc::channel();
            let down = ModelError::Remote {
                model: "big".into(),
                reason: "connection refused".into(),
            };
            events.send(Err(down)).expect("sent");
            Ok(GenerationStream::new(receiver))
        }
    }

    fn run(generator: &dyn Generator) -> (String, Option<String>) {
        let request = GenerationRequest {
            prompt: Prompt::Chat(vec![ChatMessage::new(ChatRole::User, "hello there")]),
            sampling: crate::SamplingOptions::default(),
        };
        let (mut text, mut fallback) = (String::new(), None);
        for event in generator.generate(request).expect("starts") {
            match event.expect("no error reaches the caller") {
                GenerationEvent::Token { text: piece, .. } => text.push_str(&piece),
                GenerationEvent::Done(summary) => fallback = summary.fallback_model,
            }
        }
        (text, fallback)
    }

    #[test]
    fn a_fallback_writes_when_the_model_fails_before_any_text() {
        let info = |name: &str, window| GeneratorInfo {
            model_name: name.into(),
            context_window: window,
            stop_token_ids: Vec::new(),
        };
        let backup: std::sync::Arc<dyn Generator> =
            std::sync::Arc::new(crate::testing::Scripted::saying("from the backup"));
        let down =
            FallbackGenerator::new(std::sync::Arc::new(Down(info("big", 8192))), backup.clone());
        assert_eq!(down.info().model_name, "big");
        assert_eq!(down.info().context_window, 512, "the smaller window");
        assert_eq!(
            run(&down),
            ("from the backup ".to_string(), Some("scripted".to_string()))
        );
        // A model that answers keeps the answer, and no fallback is named.
        let up = FallbackGenerator::new(
            std::sync::Arc::new(crate::testing::Scripted::saying("from the model")),
            backup,
        );
        assert_eq!(run(&up), ("from the model ".to_string(), None));
    }

    #[test]
    fn the_registry_adds_replaces_and_removes() {
        let dir = tempfile::tempdir().expect("temp dir");
        super::conformance(&|| RemoteModels::new(dir.path()));
    }

    #[test]
    fn a_missing_key_variable_is_a_clear_error() {
        let source = ApiKeySource::Env("BASALT_TEST_SURELY_UNSET_KEY".to_string());
        let error = source.read().expect_err("unset").to_string();
        assert!(error.contains("BASALT_TEST_SURELY_UNSET_KEY"), "{error}");
    }
}
