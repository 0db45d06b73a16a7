//! Amazon Bedrock as a model provider: `ConverseStream` (`POST {url}/model/{id}/converse-stream`)
//! signed with SigV4 (service `bedrock`) or sent with a Bedrock API key as a bearer token, and
//! its AWS event-stream answer read as it arrives. The same [`crate::remote::RemoteGenerator`]
//! drives it — retries, circuit breaker, cancellation and fallback are shared with the
//! OpenAI-compatible protocol; only the request and the stream differ.

use std::io::Read;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use basalt_core::sigv4;

use crate::chat::{ChatMessage, ChatRole};
use crate::error::{ModelError, Result};
use crate::generator::{FinishReason, GenerationRequest};

/// How to sign requests to Bedrock when no bearer key is configured: the environment variables
/// holding the access key id and the secret access key, read at each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockAccess {
    pub region: String,
    pub access_key_env: String,
    pub secret_key_env: String,
}

impl BedrockAccess {
    pub fn new(region: &str) -> Self {
        BedrockAccess {
            region: region.to_string(),
            access_key_env: "AWS_ACCESS_KEY_ID".to_string(),
            secret_key_env: "AWS_SECRET_ACCESS_KEY".to_string(),
        }
    }

    /// The access key id and the secret (and a session token when `AWS_SESSION_TOKEN` is set
    /// beside the default variables: temporary credentials), from the environment.
    pub(crate) fn credentials(&self) -> Result<Credentials> {
        let read = |name: &str| {
            std::env::var(name).map_err(|_| {
                ModelError::InvalidRequest(format!(
                    "the AWS credential variable {name} is not set; export it, or register the \
                     model with other variables (`basalt models add … --aws-access-key-env VAR \
                     --aws-secret-key-env VAR`) or a Bedrock API key (`--api-key-env VAR`)"
                ))
            })
        };
        let session_token = (self.access_key_env == "AWS_ACCESS_KEY_ID")
            .then(|| std::env::var("AWS_SESSION_TOKEN").ok())
            .flatten()
            .filter(|token| !token.is_empty());
        Ok(Credentials {
            access_key_id: read(&self.access_key_env)?,
            secret: read(&self.secret_key_env)?,
            session_token,
        })
    }
}

impl BedrockAccess {
    /// The credentials to sign with, unless a bearer key (a Bedrock API key) is used instead.
    pub(crate) fn credentials_unless(&self, bearer: Option<&str>) -> Result<Option<Credentials>> {
        bearer.is_none().then(|| self.credentials()).transpose()
    }
}

/// A POST of `body` to `url` with Bedrock's headers: signed with `credentials`, or carrying
/// `bearer` as a Bedrock API key.
pub(crate) fn post(
    agent: &ureq::Agent,
    url: &str,
    body: &str,
    region: &str,
    credentials: Option<&Credentials>,
    bearer: Option<&str>,
) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
    let mut request = agent.post(url);
    for (name, value) in signed_headers(url, body, region, credentials) {
        request = request.header(name, value);
    }
    if let Some(key) = bearer {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    request
}

/// AWS credentials as read for one request.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) access_key_id: String,
    pub(crate) secret: String,
    pub(crate) session_token: Option<String>,
}

/// The URL path of an operation on `model` (the id encoded once, as the AWS SDKs do).
pub(crate) fn operation_path(model: &str, operation: &str) -> String {
    format!("/model/{}/{operation}", sigv4::encode(model, false))
}

/// A Converse request's body: system messages as `system` blocks, the rest as turns.
pub(crate) fn converse_body(messages: &[ChatMessage], request: &GenerationRequest) -> String {
    let system: Vec<serde_json::Value> = messages
        .iter()
        .filter(|message| message.role == ChatRole::System)
        .map(|message| serde_json::json!({ "text": message.content }))
        .collect();
    let turns: Vec<serde_json::Value> = messages
        .iter()
        .filter(|message| message.role != ChatRole::System)
        .map(|message| {
            serde_json::json!({
                "role": message.role.as_str(),
                "content": [{ "text": message.content }],
            })
        })
        .collect();
    let mut inference = serde_json::json!({
        "maxTokens": request.sampling.max_tokens,
        "temperature": request.sampling.temperature,
        "topP": request.sampling.top_p,
    });
    if !request.sampling.stop.is_empty() {
        inference["stopSequences"] = request.sampling.stop.clone().into();
    }
    let mut body = serde_json::json!({ "messages": turns, "inferenceConfig": inference });
    if !system.is_empty() {
        body["system"] = system.into();
    }
    body.to_string()
}

/// The headers of a request to `url` with `body`, signed for `region` with the credentials
/// (or, with none, only the content type and date; a bearer key is added by the caller).
pub(crate) fn signed_headers(
    url: &str,
    body: &str,
    region: &str,
    credentials: Option<&Credentials>,
) -> Vec<(String, String)> {
    let amz_date = sigv4::now_amz_date();
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    // The HTTP client leaves a scheme's default port out of Host: so must the signature.
    let default_port = if url.starts_with("https://") {
        ":443"
    } else {
        ":80"
    };
    let host = host.strip_suffix(default_port).unwrap_or(host);
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("host".to_string(), host.to_string()),
        ("x-amz-date".to_string(), amz_date.clone()),
    ];
    if let Some(credentials) = credentials {
        if let Some(token) = &credentials.session_token {
            headers.push(("x-amz-security-token".to_string(), token.clone()));
        }
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let payload = basalt_core::hex::sha256(body.as_bytes());
        let received = sigv4::Received {
            method: "POST",
            path,
            query,
            headers: &pairs,
            payload_sha256: &payload,
        };
        let signer = sigv4::Signer {
            access_key_id: &credentials.access_key_id,
            secret: &credentials.secret,
            region,
            service: "bedrock",
        };
        let authorization = signer.authorization(&received, &amz_date);
        headers.push(("authorization".to_string(), authorization));
    }
    // Host is sent by the HTTP client from the URL, as signed.
    headers.retain(|(name, _)| name != "host");
    headers
}

/// What one event of a ConverseStream says.
#[derive(Debug, PartialEq)]
pub(crate) enum StreamEvent {
    Text(String),
    Stop(FinishReason),
    Usage {
        input: usize,
        output: usize,
    },
    /// An exception message: its type (`throttlingException`, …) and message.
    Exception {
        kind: String,
        message: String,
    },
    Other,
}

/// Reads ConverseStream's event-stream messages from `reader`, calling `on_event` for each
/// until it returns false or the stream ends.
pub(crate) fn read_stream(
    mut reader: impl Read,
    on_event: &mut dyn FnMut(StreamEvent) -> Result<bool>,
) -> std::result::Result<(), String> {
    let mut decoder = MessageFrameDecoder::new();
    let mut buffer = bytes::BytesMut::new();
    let mut chunk = [0_u8; 8192];
    loop {
        let read = reader.read(&mut chunk).map_err(|error| error.to_string())?;
        if read == 0 {
            return if buffer.is_empty() {
                Ok(())
            } else {
                Err("the event stream ended inside a message".to_string())
            };
        }
        buffer.extend_from_slice(&chunk[..read]);
        loop {
            match decoder.decode_frame(&mut buffer) {
                Ok(DecodedFrame::Complete(message)) => {
                    let keep_going =
                        on_event(event_of(&message)).map_err(|error| error.to_string())?;
                    if !keep_going {
                        return Ok(());
                    }
                }
                Ok(DecodedFrame::Incomplete) => break,
                Err(error) => return Err(format!("a damaged event-stream message: {error}")),
            }
        }
    }
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|header| header.name().as_str() == name)
        .and_then(|header| header.value().as_string().ok())
        .map(|value| value.as_str())
}

fn event_of(message: &Message) -> StreamEvent {
    let payload: serde_json::Value =
        serde_json::from_slice(message.payload()).unwrap_or(serde_json::Value::Null);
    if header(message, ":message-type") == Some("exception") {
        return StreamEvent::Exception {
            kind: header(message, ":exception-type")
                .unwrap_or("exception")
                .to_string(),
            message: payload["message"].as_str().unwrap_or_default().to_string(),
        };
    }
    match header(message, ":event-type") {
        Some("contentBlockDelta") => payload["delta"]["text"]
            .as_str()
            .map_or(StreamEvent::Other, |text| {
                StreamEvent::Text(text.to_string())
            }),
        Some("messageStop") => StreamEvent::Stop(match payload["stopReason"].as_str() {
            Some("max_tokens") => FinishReason::Length,
            _ => FinishReason::Stop,
        }),
        Some("metadata") => match (
            payload["usage"]["inputTokens"].as_u64(),
            payload["usage"]["outputTokens"].as_u64(),
        ) {
            (Some(input), Some(output)) => StreamEvent::Usage {
                input: input as usize,
                output: output as usize,
            },
            _ => StreamEvent::Other,
        },
        _ => StreamEvent::Other,
    }
}

/// Exceptions worth another try when no text has been shown yet.
pub(crate) fn retryable(kind: &str) -> bool {
    matches!(
        kind,
        "throttlingException"
            | "serviceUnavailableException"
            | "internalServerException"
            | "modelStreamErrorException"
            | "modelNotReadyException"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::event_stream::{Header, HeaderValue};

    fn frame(headers: &[(&'static str, &str)], payload: &str) -> Vec<u8> {
        let headers = headers
            .iter()
            .map(|(name, value)| Header::new(*name, HeaderValue::String(value.to_string().into())))
            .collect();
        let mut out = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(
            &Message::new_from_parts(headers, payload.as_bytes().to_vec()),
            &mut out,
        )
        .expect("framed");
        out
    }

    #[test]
    fn a_converse_stream_is_read_across_arbitrary_chunk_boundaries() {
        let mut bytes = Vec::new();
        for (kind, payload) in [
            ("messageStart", r#"{"role":"assistant"}"#),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Hel"}}"#,
            ),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"lo"}}"#,
            ),
            ("messageStop", r#"{"stopReason":"max_tokens"}"#),
            (
                "metadata",
                r#"{"usage":{"inputTokens":7,"outputTokens":2,"totalTokens":9},"metrics":{"latencyMs":1}}"#,
            ),
        ] {
            bytes.extend(frame(
                &[(":event-type", kind), (":message-type", "event")],
                payload,
            ));
        }
        /// A reader that hands out three bytes at a time.
        struct Trickle(std::io::Cursor<Vec<u8>>);
        impl Read for Trickle {
            fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
                let end = buffer.len().min(3);
                self.0.read(&mut buffer[..end])
            }
        }
        let mut seen = Vec::new();
        read_stream(Trickle(std::io::Cursor::new(bytes)), &mut |event| {
            seen.push(event);
            Ok(true)
        })
        .expect("read");
        assert_eq!(
            seen,
            [
                StreamEvent::Other,
                StreamEvent::Text("Hel".into()),
                StreamEvent::Text("lo".into()),
                StreamEvent::Stop(FinishReason::Length),
                StreamEvent::Usage {
                    input: 7,
                    output: 2
                },
            ]
        );
        let exception = frame(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            r#"{"message":"slow down"}"#,
        );
        let mut seen = Vec::new();
        read_stream(&exception[..], &mut |event| {
            seen.push(event);
            Ok(true)
        })
        .expect("read");
        assert_eq!(
            seen,
            [StreamEvent::Exception {
                kind: "throttlingException".into(),
                message: "slow down".into()
            }]
        );
        assert!(read_stream(&exception[..exception.len() - 2], &mut |_| Ok(true)).is_err());
    }

    #[test]
    fn requests_are_converse_bodies_signed_for_bedrock() {
        assert_eq!(
            operation_path("kb:handbook", "converse-stream"),
            "/model/kb%3Ahandbook/converse-stream"
        );
        let headers = signed_headers(
            "http://127.0.0.1:9/model/m/converse-stream",
            "{}",
            "eu-west-1",
            Some(&Credentials {
                access_key_id: "BSKA0000000000000001".to_string(),
                secret: "secret".to_string(),
                session_token: None,
            }),
        );
        let authorization = &headers
            .iter()
            .find(|(name, _)| name == "authorization")
            .expect("signed")
            .1;
        assert!(
            authorization.contains(
                "/eu-west-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date,"
            ),
            "{authorization}"
        );
        // A default port is signed as the HTTP client sends Host: without it.
        let credentials = Credentials {
            access_key_id: "BSKA0000000000000001".to_string(),
            secret: "secret".to_string(),
            session_token: Some("token".to_string()),
        };
        let url = "https://bedrock.example:443/model/m/converse-stream";
        let headers = signed_headers(url, "{}", "eu-west-1", Some(&credentials));
        let value = |name: &str| {
            headers
                .iter()
                .find(|(header, _)| header == name)
                .map(|(_, value)| value.as_str())
                .expect("sent")
        };
        let sent = [
            ("host", "bedrock.example"),
            ("content-type", "application/json"),
            ("x-amz-date", value("x-amz-date")),
            ("x-amz-security-token", value("x-amz-security-token")),
        ];
        let payload = basalt_core::hex::sha256(b"{}");
        let received = sigv4::Received {
            method: "POST",
            path: "/model/m/converse-stream",
            query: "",
            headers: &sent,
            payload_sha256: &payload,
        };
        let parsed = sigv4::Authorization::parse(value("authorization"))
            .expect("SigV4")
            .expect("parses");
        assert_eq!(
            sigv4::verify(&parsed, &received, "secret", sigv4::now_unix()),
            Ok(())
        );
    }
}
