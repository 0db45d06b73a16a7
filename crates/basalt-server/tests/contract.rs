//! The HTTP contract in-process: routes, authorization and errors, through `router()` with
//! engine doubles (a bag-of-words embedder and a generator that says back the question), in
//! milliseconds each. What needs the real models — answers, streaming from llama.cpp, the
//! clients — is tested end to end in `crates/basalt-cli/tests/server.rs`.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use basalt_kb::DataDir;
use basalt_model::testing::Scripted;
use basalt_security::{Directory, PrincipalKind};
use basalt_server::{AppState, Code, RateLimit, ServerOptions, router};
use serde_json::{Value, json};
use tower::ServiceExt;

type Response = (StatusCode, HeaderMap, Value);

/// A server over a fresh data directory, with keys: an administrator's, a reader's, one of a
/// principal with no policy, and a revoked one.
struct Api {
    _dir: tempfile::TempDir,
    router: axum::Router,
    admin: String,
    reader: String,
    nobody: String,
    revoked: String,
}

impl Api {
    fn new(options: &ServerOptions) -> Self {
        let dir = tempfile::tempdir().expect("data dir");
        let mut keys = Vec::new();
        Directory::update(dir.path(), |directory| {
            for (principal, policy) in [
                ("admin", Some("AdministratorAccess")),
                ("reader", Some("ReadOnlyAccess")),
                ("nobody", None),
                ("gone", Some("AdministratorAccess")),
            ] {
                directory.upsert_principal(principal, PrincipalKind::User, None, &[])?;
                if let Some(policy) = policy {
                    directory.attach(policy, principal, false)?;
                }
                let (record, secret) = directory.create_key(principal, None)?;
                if principal == "gone" {
                    directory.revoke_key(&record.id);
                }
                keys.push(secret.expose().to_owned());
            }
            Ok(())
        })
        .expect("keys");
        let generator = Scripted::echo();
        let state = AppState::new(
            Arc::new(basalt_guard::testing::BagOfWords::default()),
            Arc::new(generator),
            DataDir::new(dir.path()),
            options,
        )
        .expect("state");
        let router = router(state, options);
        let revoked = keys.pop().expect("revoked");
        let nobody = keys.pop().expect("nobody");
        let reader = keys.pop().expect("reader");
        let admin = keys.pop().expect("admin");
        Api {
            _dir: dir,
            router,
            admin,
            reader,
            nobody,
            revoked,
        }
    }

    /// Sends a request; returns the status, the headers and the body as JSON (null if empty).
    async fn send(&self, request: Request<Body>) -> Response {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, headers, body)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Response {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_owned())),
            None => builder.body(Body::empty()),
        };
        self.send(request.expect("request")).await
    }
}

/// An error response has the status, the JSON body and the OpenAI type its code says.
fn assert_error(response: &Response, code: Code) {
    let (status, _, body) = response;
    assert_eq!(*status, code.status(), "{body}");
    assert_eq!(body["error"]["code"], code.name(), "{body}");
    assert_eq!(body["error"]["type"], code.kind(), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn keys_decide_who_may_do_what() {
    let api = Api::new(&ServerOptions::default());
    // Public routes need no key.
    let (status, _, body) = api.call("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Every other route does; the challenge says how to give one.
    let response = api.call("GET", "/v1/models", None, None).await;
    assert_error(&response, Code::Unauthenticated);
    assert_eq!(
        response.1[header::WWW_AUTHENTICATE],
        r#"Bearer realm="basalt""#
    );
    let response = api
        .call("GET", "/v1/models", Some("bsk_nope_nope"), None)
        .await;
    assert_error(&response, Code::Unauthenticated);
    // A read-only principal reads, and may not create.
    let (status, _, body) = api.call("GET", "/v1/models", Some(&api.reader), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["data"]
            .as_array()
            .is_some_and(|models| !models.is_empty()),
        "{body}"
    );
    let create = Some(r#"{"name": "handbook", "encrypted": false}"#);
    let response = api.call("POST", "/v1/kbs", Some(&api.reader), create).await;
    assert_error(&response, Code::AccessDenied);
    let (status, _, body) = api.call("POST", "/v1/kbs", Some(&api.admin), create).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let response = api.call("POST", "/v1/kbs", Some(&api.admin), create).await;
    assert_error(&response, Code::KnowledgeBaseExists);
    let response = api
        .call("GET", "/v1/kbs/ghost", Some(&api.admin), None)
        .await;
    assert_error(&response, Code::KnowledgeBaseNotFound);
}

/// An error of a Bedrock route: Bedrock's status and exception name for the code, as botocore
/// reads them (`x-amzn-ErrorType`, `{"message"}`).
fn assert_bedrock_error(response: &Response, code: Code) {
    let (status, headers, body) = response;
    let (name, expected) = code.bedrock();
    assert_eq!(*status, expected, "{body}");
    assert_eq!(headers["x-amzn-errortype"], name, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{body}"
    );
}

/// A valid body for each Bedrock operation (a denial must not hide behind a 400).
fn bedrock_body(operation: &str) -> &'static str {
    match operation {
        "bedrockConverse" | "bedrockConverseStream" => {
            r#"{"messages": [{"role": "user", "content": [{"text": "Hi"}]}]}"#
        }
        "bedrockInvokeModel" => r#"{"inputText": "Hi"}"#,
        "bedrockCountTokens" => {
            r#"{"input": {"converse": {"messages": [{"role": "user", "content": [{"text": "Hi"}]}]}}}"#
        }
        "bedrockApplyGuardrail" => r#"{"source": "INPUT", "content": [{"text": {"text": "Hi"}}]}"#,
        "bedrockRetrieve" => r#"{"retrievalQuery": {"text": "Hi"}}"#,
        "bedrockListFoundationModels" | "bedrockListKnowledgeBases" => "{}",
        _ => {
            r#"{"input": {"text": "Hi"}, "retrieveAndGenerateConfiguration": {"type": "KNOWLEDGE_BASE",
                "knowledgeBaseConfiguration": {"knowledgeBaseId": "payroll", "modelArn": "m"}}}"#
        }
    }
}

/// Every protected route of the OpenAPI document: no key, an unknown key or a revoked one is
/// 401; a key whose principal has no policy is 403 on every route with a resource (never a
/// 500, never the handler's own answer), and may still ask who it is.
#[tokio::test]
async fn every_protected_route_refuses_missing_keys_and_missing_permissions() {
    let api = Api::new(&ServerOptions::default());
    let (status, _, document) = api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK, "the API description is public");
    let mut protected = 0;
    for (path, operations) in document["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            if operation.get("security").is_none() {
                continue;
            }
            protected += 1;
            let concrete = path
                .replace("{kb}", "payroll")
                .replace("{knowledgeBaseId}", "payroll")
                .replace("{modelId}", "zz-missing")
                .replace("{guardrailIdentifier}", "zz-missing")
                .replace("{guardrailVersion}", "DRAFT")
                .replace("{id}", "zz-missing")
                .replace("{name}", "zz-missing");
            let method = method.to_uppercase();
            // Bedrock's routes answer in Bedrock's error shape; a refusal comes first all the same.
            let bedrock = operation["tags"] == json!(["bedrock"]);
            let (body, check): (&str, fn(&Response, Code)) = if bedrock {
                let id = operation["operationId"].as_str().unwrap_or_default();
                (bedrock_body(id), assert_bedrock_error)
            } else {
                ("{}", assert_error)
            };
            for key in [
                None,
                Some("bsk_000000000000_nope"),
                Some(api.revoked.as_str()),
            ] {
                let response = api.call(&method, &concrete, key, Some(body)).await;
                check(&response, Code::Unauthenticated);
            }
            let response = api
                .call(&method, &concrete, Some(&api.nobody), Some(body))
                .await;
            if bedrock {
                check(&response, Code::AccessDenied);
            } else if operation.get("x-basalt-resource").is_none() {
                // Any valid key may ask who it is, and is told it may do nothing.
                assert_eq!(
                    response.0,
                    StatusCode::OK,
                    "{method} {path}: {}",
                    response.2
                );
                assert_eq!(response.2["principal"], "nobody", "{}", response.2);
                assert_eq!(response.2["actions"], json!([]), "{}", response.2);
            } else {
                assert_error(&response, Code::AccessDenied);
            }
        }
    }
    assert!(protected >= 19, "{protected} protected routes");

    // Every refusal is in the audit trail, and the trail is intact.
    let audit = |query: &str| format!("/v1/audit?{query}&limit=10000");
    let admin = Some(api.admin.as_str());
    let query = audit("outcome=unauthenticated");
    let (status, _, records) = api.call("GET", &query, admin, None).await;
    assert_eq!(status, StatusCode::OK, "{records}");
    let count = |records: &Value| records["records"].as_array().map_or(0, Vec::len);
    assert!(count(&records) >= protected * 3, "{records}");
    let query = audit("outcome=denied&principal=nobody");
    let (_, _, records) = api.call("GET", &query, admin, None).await;
    assert!(count(&records) >= protected - 1, "{records}");
    let (status, _, verified) = api
        .call("GET", "/v1/audit/verify", Some(&api.admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{verified}");
    assert_eq!(verified["intact"], true, "{verified}");
}

#[tokio::test]
async fn malformed_requests_get_the_code_that_says_why() {
    let api = Api::new(&ServerOptions {
        max_completion_tokens: 64,
        body_limit: 1 << 10,
        ..ServerOptions::default()
    });
    let admin = Some(api.admin.as_str());
    let chat = "/v1/chat/completions";
    let response = api.call("GET", "/v1/nowhere", admin, None).await;
    assert_error(&response, Code::NotFound);
    assert_error(
        &api.call("GET", chat, admin, None).await,
        Code::MethodNotAllowed,
    );
    for malformed in ["{not json", r#"{"model": 7, "messages": []}"#] {
        let response = api.call("POST", chat, admin, Some(malformed)).await;
        assert_error(&response, Code::InvalidJson);
    }
    let plain_text = Request::builder()
        .method("POST")
        .uri(chat)
        .header(header::AUTHORIZATION, format!("Bearer {}", api.admin))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{}"))
        .expect("request");
    assert_error(&api.send(plain_text).await, Code::UnsupportedMediaType);
    let ask = |content: String, extra: Value| {
        let mut request = json!({"model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": content}]});
        if let (Some(request), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
            request.extend(extra.clone());
        }
        request.to_string()
    };
    let big = ask("x".repeat(2 << 10), json!({}));
    assert_error(
        &api.call("POST", chat, admin, Some(&big)).await,
        Code::BodyTooLarge,
    );
    let too_many = ask("hello".into(), json!({"max_tokens": 65}));
    let response = api.call("POST", chat, admin, Some(&too_many)).await;
    assert_error(&response, Code::MaxTokensOverLimit);
    assert!(
        response.2["error"]["message"].to_string().contains("64"),
        "{}",
        response.2
    );
    let unknown = ask("hi".into(), json!({"model": "gpt-9"}));
    let response = api.call("POST", chat, admin, Some(&unknown)).await;
    assert_error(&response, Code::ModelNotFound);
    let missing = ask("hi".into(), json!({"model": "kb:missing"}));
    let response = api.call("POST", chat, admin, Some(&missing)).await;
    assert_error(&response, Code::KnowledgeBaseNotFound);
    let style = ask(
        "hi".into(),
        json!({"model": "kb:missing", "style": "poetic"}),
    );
    let response = api.call("POST", chat, admin, Some(&style)).await;
    assert_error(&response, Code::InvalidJson);
    assert!(
        response.2["error"]["message"]
            .to_string()
            .contains("extractive"),
        "the message names the styles there are: {}",
        response.2
    );
    let two = ask("hi".into(), json!({"n": 2}));
    let response = api.call("POST", chat, admin, Some(&two)).await;
    assert_error(&response, Code::InvalidRequest);
    for embeddings in [
        r#"{"model": "all-minilm-l6-v2", "input": [1, 2]}"#,
        r#"{"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "int8"}"#,
    ] {
        let response = api
            .call("POST", "/v1/embeddings", admin, Some(embeddings))
            .await;
        assert_error(&response, Code::InvalidRequest);
    }
}

#[tokio::test]
async fn a_chat_completion_runs_through_the_engine_it_was_given() {
    let api = Api::new(&ServerOptions::default());
    let request = json!({"model": "smollm2-135m-instruct", "max_tokens": 3,
        "messages": [{"role": "user", "content": "one two three four"}]})
    .to_string();
    let (status, _, body) = api
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&api.admin),
            Some(&request),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "one two three ");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
}

/// A guardrail on a plain chat completion, as the turn runs it: a blocked question is
/// `content_filter` with nothing generated; what output anonymizes never leaves, streamed or
/// not; the trace says what was found.
#[tokio::test]
async fn a_guardrail_shapes_a_chat_completion_streamed_or_not() {
    let api = Api::new(&ServerOptions::default());
    let guardrail = json!({"name": "shield", "config": {
        "word_filters": {"words": ["falcon"]},
        "sensitive_information": {"entities": [{"type": "EMAIL", "input": "none", "output": "anonymize"}]}}})
    .to_string();
    let (status, _, body) = api
        .call("POST", "/v1/guardrails", Some(&api.admin), Some(&guardrail))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let complete = async |content: &str, stream: bool| {
        let request = json!({"model": "smollm2-135m-instruct", "guardrail": "shield",
            "guardrail_trace": true, "stream": stream,
            "messages": [{"role": "user", "content": content}]})
        .to_string();
        let response = api
            .call(
                "POST",
                "/v1/chat/completions",
                Some(&api.admin),
                Some(&request),
            )
            .await;
        assert_eq!(response.0, StatusCode::OK, "{}", response.2);
        response
    };

    let (_, _, body) = complete("Where does the falcon fly?", false).await;
    assert_eq!(
        body["choices"][0]["finish_reason"], "content_filter",
        "{body}"
    );
    assert_eq!(
        body["usage"]["completion_tokens"], 0,
        "no model ran: {body}"
    );
    let message = &body["choices"][0]["message"];
    assert!(
        !message["content"]
            .as_str()
            .unwrap_or_default()
            .contains("falcon")
    );
    assert_eq!(message["guardrail"]["action"], "intervened", "{body}");
    assert_eq!(message["guardrail"]["input"][0]["policy"], "word_filters");

    let (_, _, body) = complete("Write to ana@example.com today.", false).await;
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "Write to {EMAIL} today. ", "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(message["guardrail"]["output"][0]["name"], "EMAIL", "{body}");

    let (_, headers, body) = complete("Write to ana@example.com today.", true).await;
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|kind| kind.starts_with("text/event-stream"))
    );
    let text = body.as_str().expect("an event stream");
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).expect("a JSON chunk"))
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Write to {EMAIL} today. ", "{text}");
    assert!(!text.contains("ana@"), "{text}");
    let last = chunks.last().expect("chunks");
    assert_eq!(last["choices"][0]["finish_reason"], "stop", "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

/// A multipart body of `parts` (name, file name, bytes) and its content type.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    const BOUNDARY: &str = "basalt-contract-boundary";
    let mut body = Vec::new();
    for (name, file_name, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let disposition = match file_name {
            Some(file) => format!("form-data; name=\"{name}\"; filename=\"{file}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend_from_slice(format!("Content-Disposition: {disposition}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// The native routes' refusals, each with its status and code, before any model runs: every
/// documented route is served; bad knowledge-base settings, uploads, document queries,
/// sessions and settings changes are refused as the error table says.
#[tokio::test]
async fn the_native_routes_refuse_bad_requests_with_their_codes() {
    let api = Api::new(&ServerOptions {
        upload_limit: 1 << 20,
        ..ServerOptions::default()
    });
    let admin = Some(api.admin.as_str());

    // Every route the OpenAPI document lists exists, and its bodies are strict.
    let (_, _, document) = api.call("GET", "/openapi.json", None, None).await;
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{}", paths.len());
    for (path, operations) in paths {
        for method in operations.as_object().expect("operations").keys() {
            let concrete = path
                .replace("{kb}", "zz-missing")
                .replace("{id}", "zz-missing")
                .replace("{name}", "zz-missing");
            let method = method.to_uppercase();
            let (status, _, body) = api.call(&method, &concrete, admin, Some("{}")).await;
            let routed = !(status == StatusCode::NOT_FOUND && body["error"]["code"] == "not_found")
                && status != StatusCode::METHOD_NOT_ALLOWED;
            assert!(
                routed,
                "{method} {path} is documented but not served: {status} {body}"
            );
        }
    }
    assert_eq!(
        document["components"]["schemas"]["CreateKb"]["additionalProperties"],
        false
    );
    assert!(
        paths["/v1/kbs/{kb}/documents"]["post"]["requestBody"]["content"]
            .get("multipart/form-data")
            .is_some()
    );

    // Knowledge bases.
    let (status, _, created) = api
        .call(
            "POST",
            "/v1/kbs",
            admin,
            Some(r#"{"name": "api", "chunk_tokens": 128, "encrypted": false}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["chunking"]["max_tokens"], 128);
    assert_eq!(created["documents"], 0);
    for (body, code) in [
        (
            r#"{"name": "api", "encrypted": false}"#,
            Code::KnowledgeBaseExists,
        ),
        (
            r#"{"name": "../x", "encrypted": false}"#,
            Code::InvalidRequest,
        ),
        (
            r#"{"name": "y", "chunk_tokens": 9999, "encrypted": false}"#,
            Code::InvalidRequest,
        ),
        (r#"{"name": "y", "shards": 3}"#, Code::InvalidJson),
    ] {
        assert_error(&api.call("POST", "/v1/kbs", admin, Some(body)).await, code);
    }

    // Uploads.
    let upload = async |kb: &str, parts: &[(&str, Option<&str>, &[u8])]| {
        let (content_type, body) = multipart(parts);
        let request = Request::builder()
            .method("POST")
            .uri(format!("/v1/kbs/{kb}/documents"))
            .header(header::AUTHORIZATION, format!("Bearer {}", api.admin))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .expect("request");
        api.send(request).await
    };
    let big = vec![b'a'; 3 << 19];
    for (kb, parts, code) in [
        (
            "api",
            vec![("file", Some("tool.exe"), &b"MZ"[..])],
            Code::UnsupportedFileType,
        ),
        ("api", vec![("tags", None, &b"x"[..])], Code::InvalidRequest),
        (
            "api",
            vec![("colour", None, &b"x"[..])],
            Code::InvalidRequest,
        ),
        (
            "api",
            vec![("metadata", None, &b"[1]"[..])],
            Code::InvalidRequest,
        ),
        (
            "missing",
            vec![("file", Some("a.txt"), &b"x"[..])],
            Code::KnowledgeBaseNotFound,
        ),
        (
            "api",
            vec![("file", Some("big.txt"), &big[..])],
            Code::BodyTooLarge,
        ),
    ] {
        assert_error(&upload(kb, &parts).await, code);
    }
    let json_upload = api
        .call("POST", "/v1/kbs/api/documents", admin, Some("{}"))
        .await;
    assert_error(&json_upload, Code::UnsupportedMediaType);

    // Documents.
    for (path, code) in [
        ("/v1/kbs/api/documents/nope", Code::DocumentNotFound),
        ("/v1/kbs/api/documents?limit=0", Code::InvalidRequest),
    ] {
        assert_error(&api.call("GET", path, admin, None).await, code);
    }

    // Sessions: of a knowledge base that exists, used with that one only, gone once deleted.
    let missing = api
        .call("POST", "/v1/sessions", admin, Some(r#"{"kb": "missing"}"#))
        .await;
    assert_error(&missing, Code::KnowledgeBaseNotFound);
    let (status, _, other) = api
        .call(
            "POST",
            "/v1/kbs",
            admin,
            Some(r#"{"name": "other", "encrypted": false}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    let (status, _, session) = api
        .call("POST", "/v1/sessions", admin, Some(r#"{"kb": "api"}"#))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(session["retains_prompts"], false);
    let id = session["id"].as_str().expect("session id");
    let ask = json!({"question": "x?", "session_id": id}).to_string();
    let elsewhere = api
        .call("POST", "/v1/kbs/other/answer", admin, Some(&ask))
        .await;
    assert_error(&elsewhere, Code::InvalidRequest);
    let (status, _, _) = api
        .call("DELETE", &format!("/v1/sessions/{id}"), admin, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let gone = api
        .call("POST", "/v1/kbs/api/answer", admin, Some(&ask))
        .await;
    assert_error(&gone, Code::SessionNotFound);

    // Settings: search-time ones change, index-shaping ones are refused.
    let (status, _, changed) = api
        .call(
            "PATCH",
            "/v1/kbs/api",
            admin,
            Some(r#"{"mode": "bm25", "answer": {"passages": 3}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["mode"], "bm25");
    let reshaped = api
        .call(
            "PATCH",
            "/v1/kbs/api",
            admin,
            Some(r#"{"analyzer": "french"}"#),
        )
        .await;
    assert_error(&reshaped, Code::InvalidJson);

    // Deleted: gone from the catalog.
    let (status, _, _) = api.call("DELETE", "/v1/kbs/api", admin, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &api.call("GET", "/v1/kbs/api", admin, None).await,
        Code::KnowledgeBaseNotFound,
    );
}

/// Rate limits are per key: a key past its burst gets 429 with `Retry-After`, another key is
/// not held back, and health checks are never limited.
#[tokio::test]
async fn each_key_has_its_own_rate_limit() {
    let api = Api::new(&ServerOptions {
        rate_limit: Some(RateLimit {
            per_second: 0.2,
            burst: 2.0,
        }),
        ..ServerOptions::default()
    });
    let reader = Some(api.reader.as_str());
    for _ in 0..2 {
        let (status, _, body) = api.call("GET", "/v1/kbs", reader, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let limited = api.call("GET", "/v1/kbs", reader, None).await;
    assert_error(&limited, Code::RateLimited);
    assert!(
        limited.1.contains_key(header::RETRY_AFTER),
        "{:?}",
        limited.1
    );
    let (status, _, body) = api.call("GET", "/v1/kbs", Some(&api.admin), None).await;
    assert_eq!(status, StatusCode::OK, "another key is not limited: {body}");
    for _ in 0..5 {
        let (status, _, _) = api.call("GET", "/healthz", None, None).await;
        assert_eq!(status, StatusCode::OK);
    }
}

/// Guardrail configurations over HTTP: created in versions, refused with what is wrong, listed,
/// applied by a read-only principal (who may not create one), and unknown ones are 404.
#[tokio::test]
async fn guardrail_configurations_are_created_checked_and_applied() {
    let api = Api::new(&ServerOptions::default());
    let (admin, reader) = (Some(api.admin.as_str()), Some(api.reader.as_str()));
    let config = json!({"name": "pii", "config": {"description": "support",
        "sensitive_information": {"entities": [
            {"type": "EMAIL", "input": "anonymize", "output": "anonymize"}]}}})
    .to_string();
    for version in [1, 2] {
        let (status, _, body) = api
            .call("POST", "/v1/guardrails", admin, Some(&config))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["version"], version, "{body}");
    }
    for (body, code) in [
        (
            r#"{"name": "bad", "config": {"word_filter": {}}}"#,
            Code::InvalidJson,
        ),
        (
            r#"{"name": "bad", "config": {"sensitive_information": {"entities": [{"type": "EMIAL"}]}}}"#,
            Code::InvalidGuardrail,
        ),
    ] {
        assert_error(
            &api.call("POST", "/v1/guardrails", admin, Some(body)).await,
            code,
        );
    }
    let (status, _, listed) = api.call("GET", "/v1/guardrails", reader, None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["guardrails"][0]["name"], "pii");
    assert_eq!(listed["guardrails"][0]["latest_version"], 2);

    let apply = r#"{"source": "output", "text": "Write to ana@example.com"}"#;
    let (status, _, applied) = api
        .call("POST", "/v1/guardrails/pii/apply", reader, Some(apply))
        .await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["action"], "intervened");
    assert_eq!(applied["text"], "Write to {EMAIL}");
    assert_eq!(applied["assessments"][0]["name"], "EMAIL");
    assert_error(
        &api.call("POST", "/v1/guardrails", reader, Some(&config))
            .await,
        Code::AccessDenied,
    );
    assert_error(
        &api.call("POST", "/v1/guardrails/nope/apply", reader, Some(apply))
            .await,
        Code::GuardrailNotFound,
    );
}

/// Document-level access on the Bedrock routes, with the worst possible model (it says back its
/// whole prompt, passages included): a document the caller may not read reaches no result,
/// answer, citation or stream of Retrieve, RetrieveAndGenerate(Stream) or Converse(Stream) on
/// `kb:NAME`, while a caller who may read it sees it through the same calls.
#[tokio::test]
async fn bedrock_routes_never_show_a_document_its_caller_may_not_read() {
    let api = Api::new(&ServerOptions::default());
    let admin = Some(api.admin.as_str());
    let create = r#"{"name": "payroll", "encrypted": false,
        "answer": {"style": "generative", "min_relevance": -1.0}}"#;
    let (status, _, created) = api.call("POST", "/v1/kbs", admin, Some(create)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let kb_id = created["bedrock_id"]
        .as_str()
        .expect("bedrock_id")
        .to_owned();
    for (file, text, readers) in [
        (
            "holiday.md",
            "# Holiday\n\nHoliday travel policy granite river.\n",
            "",
        ),
        (
            "salary.md",
            "# Salary\n\nHoliday salary zanzibarsecret quartz budget.\n",
            "principal:admin",
        ),
    ] {
        let mut parts = vec![("file", Some(file), text.as_bytes())];
        if !readers.is_empty() {
            parts.push(("readers", None, readers.as_bytes()));
        }
        let (content_type, body) = multipart(&parts);
        let request = Request::builder()
            .method("POST")
            .uri("/v1/kbs/payroll/documents")
            .header(header::AUTHORIZATION, format!("Bearer {}", api.admin))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .expect("request");
        let (status, _, job) = api.send(request).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        let path = format!("/v1/jobs/{}", job["id"].as_str().expect("job id"));
        let mut waited = 0;
        loop {
            let (_, _, job) = api.call("GET", &path, admin, None).await;
            if job["status"] == "completed" {
                assert_eq!(job["report"]["failed"], json!([]), "{job}");
                break;
            }
            assert!(waited < 300 && job["status"] != "failed", "{job}");
            waited += 1;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let question = "holiday salary zanzibarsecret quartz budget";
    let calls = common::bedrock_kb_calls("payroll", &kb_id, question);
    for (path, body) in &calls {
        let (status, seen) = common::post_text(&api.router, path, &api.admin, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {seen}");
        assert!(
            seen.contains("zanzibarsecret"),
            "{path}: its reader sees it: {seen}"
        );
        let (status, seen) = common::post_text(&api.router, path, &api.reader, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {seen}");
        assert!(
            seen.contains("granite"),
            "{path}: the shared document shows: {seen}"
        );
        assert!(
            !seen.contains("zanzibarsecret") && !seen.contains("quartz budget"),
            "{path}: a document the reader may not read leaked: {seen}"
        );
    }

    // A knowledge base named after another's Bedrock id does not take its place.
    let squat = json!({"name": kb_id, "encrypted": false}).to_string();
    let (status, _, body) = api.call("POST", "/v1/kbs", admin, Some(&squat)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, found) = api
        .call("POST", &calls[0].0, admin, Some(&calls[0].1))
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert!(found.to_string().contains("granite"), "{found}");
}
