//! `basalt serve` on 127.0.0.1 with the real models: raw HTTP for the error contract, and the
//! official `openai` Python package for what clients do (installed by scripts/setup.sh).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Workspace, cpu_turn};
use serde_json::Value;

/// Stops the server when the test ends, however it ends.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// One request on a fresh connection; returns the status and the body.
fn request(port: u16, method: &str, path: &str, headers: &[&str], body: &[u8]) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        // Not listening (yet): status 0.
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("writes");
    // A server may answer (413) before reading a large body; a reset while writing is fine.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn post_json(port: u16, path: &str, body: &str) -> (u16, String) {
    request(
        port,
        "POST",
        path,
        &["Content-Type: application/json"],
        body.as_bytes(),
    )
}

/// The JSON of a (possibly chunked) body: from the first `{` to the last `}`.
fn json_of(body: &str) -> Value {
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |end| end + 1);
    serde_json::from_str(&body[start..end]).unwrap_or_else(|error| panic!("{error}: {body}"))
}

fn assert_error((actual, text): (u16, String), status: u16, code: &str) {
    assert_eq!(actual, status, "{text}");
    let body = json_of(&text);
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[test]
fn serve_speaks_openai_to_raw_http_and_the_python_sdk() {
    let ws = Workspace::new();
    let docs = ws.docs();
    std::fs::create_dir_all(&docs).expect("docs dir");
    std::fs::write(
        docs.join("handbook.md"),
        "# Travel policy\n\nEconomy class is required for flights shorter than six hours; \
         business class is allowed for longer flights.\n\n# Vacation\n\nEvery employee receives \
         27 days of paid vacation per year.\n",
    )
    .expect("write");
    ws.ok(&["kb", "create", "handbook"]);
    ws.ok(&["ingest", "--kb", "handbook", &docs.display().to_string()]);

    let _turn = cpu_turn();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args([
            "--data-dir",
            &ws.data(),
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--body-limit",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts the server");
    let server = Server { child, port };
    let started = Instant::now();
    while request(port, "GET", "/healthz", &[], b"").0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "server never came up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, body) = request(port, "GET", "/readyz", &[], b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["knowledge_bases"], 1);

    // The error contract: JSON errors with the right status, never a panic or an HTML page.
    assert_error(
        post_json(port, "/v1/chat/completions", "{not json"),
        400,
        "invalid_json",
    );
    assert_error(
        post_json(
            port,
            "/v1/chat/completions",
            r#"{"model": 7, "messages": []}"#,
        ),
        400,
        "invalid_json",
    );
    assert_error(
        request(
            port,
            "POST",
            "/v1/chat/completions",
            &["Content-Type: text/plain"],
            b"{}",
        ),
        415,
        "unsupported_media_type",
    );
    let huge = format!(
        r#"{{"model": "smollm2-135m-instruct", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(2 << 20)
    );
    assert_error(
        post_json(port, "/v1/chat/completions", &huge),
        413,
        "body_too_large",
    );
    assert_error(
        request(port, "GET", "/v1/chat/completions", &[], b""),
        405,
        "method_not_allowed",
    );
    assert_error(
        request(port, "GET", "/v2/nothing", &[], b""),
        404,
        "not_found",
    );
    assert_error(
        post_json(
            port,
            "/v1/chat/completions",
            r#"{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
        404,
        "model_not_found",
    );
    assert_error(
        post_json(
            port,
            "/v1/chat/completions",
            r#"{"model": "kb:missing", "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
        404,
        "knowledge_base_not_found",
    );
    assert_error(
        post_json(
            port,
            "/v1/chat/completions",
            r#"{"model": "smollm2-135m-instruct", "n": 2, "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
        400,
        "invalid_request",
    );
    assert_error(
        post_json(
            port,
            "/v1/embeddings",
            r#"{"model": "all-minilm-l6-v2", "input": [1, 2]}"#,
        ),
        400,
        "invalid_request",
    );
    assert_error(
        post_json(
            port,
            "/v1/embeddings",
            r#"{"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "int8"}"#,
        ),
        400,
        "invalid_request",
    );

    // The native routes: strict bodies, KB search and answers.
    let (status, body) = request(port, "GET", "/v1/kbs", &[], b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["knowledge_bases"][0]["name"], "handbook");
    let (status, body) = post_json(
        port,
        "/v1/kbs/handbook/search",
        r#"{"query": "paid vacation days per year", "k": 2, "mode": "hybrid"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let hits = json_of(&body)["results"]["hits"].clone();
    assert!(
        hits.as_array()
            .is_some_and(|hits| !hits.is_empty() && hits.len() <= 2),
        "{body}"
    );
    assert!(
        hits[0]["text"]
            .as_str()
            .is_some_and(|text| text.contains("27 days")),
        "{body}"
    );
    assert_error(
        post_json(
            port,
            "/v1/kbs/handbook/search",
            r#"{"query": "x", "limit": 3}"#,
        ),
        400,
        "invalid_json",
    );
    assert_error(
        post_json(
            port,
            "/v1/kbs/handbook/search",
            r#"{"query": "x", "filter": "tag ="}"#,
        ),
        400,
        "invalid_request",
    );
    assert_error(
        post_json(port, "/v1/kbs/nope/search", r#"{"query": "x"}"#),
        404,
        "knowledge_base_not_found",
    );
    let (status, body) = post_json(
        port,
        "/v1/kbs/handbook/answer",
        r#"{"question": "How many days of paid vacation does every employee receive per year?",
            "max_tokens": 32}"#,
    );
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    assert_eq!(answer["abstained"], false, "{answer}");
    assert!(
        answer["sources"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("27 days")),
        "{answer}"
    );

    // Streaming by hand: chunks, a final finish_reason, then [DONE].
    let (status, body) = post_json(
        port,
        "/v1/chat/completions",
        r#"{"model": "smollm2-135m-instruct", "stream": true, "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hello."}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"object\":\"chat.completion.chunk\""),
        "{body}"
    );
    assert!(
        body.contains("\"finish_reason\":\"length\"")
            || body.contains("\"finish_reason\":\"stop\""),
        "{body}"
    );
    assert!(body.contains("data: [DONE]"), "{body}");

    // The official SDK.
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/openai_sdk.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg("handbook")
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the openai SDK checks failed (scripts/setup.sh installs the `openai` package):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
