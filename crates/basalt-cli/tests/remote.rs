//! Chat models served elsewhere (`basalt models add`): answers written by a model behind an
//! OpenAI-compatible HTTP API. The model server here is a second, real `basalt serve` on
//! 127.0.0.1 with its own data directory and API key.

mod common;

use common::{Workspace, assert_clean_failure, raw_request, start_server_when, stderr};
use serde_json::Value;

/// `method path` on 127.0.0.1:`port` with `key` and a JSON `body`; the status and the body.
fn http(port: u16, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    let authorization = format!("Authorization: Bearer {key}");
    raw_request(
        port,
        method,
        path,
        &[authorization.as_str(), "Content-Type: application/json"],
        body.as_bytes(),
    )
}

fn get(port: u16, path: &str, key: &str) -> (u16, String) {
    http(port, "GET", path, key, "")
}

/// The JSON object in an HTTP body (a chunked body has its sizes around it).
fn json_in(body: &str) -> Value {
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |end| end + 1);
    serde_json::from_str(&body[start..end]).unwrap_or_else(|error| panic!("{error}: {body}"))
}

/// Knowledge base `leave` in `ws`, holding one leave policy.
fn leave_kb(ws: &Workspace) {
    let docs = ws.docs();
    std::fs::create_dir_all(&docs).expect("docs dir");
    std::fs::write(
        docs.join("leave.md"),
        "# Leave policy\n\nParental leave is 16 weeks, fully paid, for every parent. Vacation \
         is 25 days a year; unused days carry over, up to 5 days.\n",
    )
    .expect("write");
    ws.ok(&["kb", "create", "leave"]);
    ws.ok(&["ingest", "--kb", "leave", &docs.display().to_string()]);
}

/// `ask` with the leave question, written by `model` (default: the knowledge base's choice).
fn leave_question(model: Option<&'static str>) -> Vec<&'static str> {
    let mut args = vec![
        "ask",
        "--kb",
        "leave",
        "--style",
        "generative",
        "--min-relevance",
        "0.2",
        "--max-tokens",
        "48",
        "--json",
        "How long is parental leave?",
    ];
    if let Some(model) = model {
        args.extend(["--model", model]);
    }
    args
}

/// The model server: a second Basalt on 127.0.0.1 that asks for its own API key.
struct ModelServer {
    server: common::Server,
    key: String,
    /// The id of its chat model.
    id: String,
    _data: Workspace,
}

fn start_model_server() -> ModelServer {
    let data = Workspace::new();
    let key = data.admin_key();
    let server = start_server_when(&data, &[], |port| get(port, "/healthz", "").0 == 200);
    let (status, body) = get(server.port, "/v1/models", &key);
    assert_eq!(status, 200, "{body}");
    let id = json_in(&body)["data"]
        .as_array()
        .and_then(|models| {
            models
                .iter()
                .filter_map(|model| model["id"].as_str())
                .find(|id| !id.starts_with("kb:") && !id.to_lowercase().contains("minilm"))
        })
        .expect("a chat model")
        .to_owned();
    ModelServer {
        server,
        key,
        id,
        _data: data,
    }
}

/// Registers the model server's chat model in `ws` as `big`, its key in a file (Basalt stores
/// only where the key is); returns the key file and what `models add` printed.
fn register(ws: &Workspace, port: u16, id: &str, key: &str) -> (std::path::PathBuf, String) {
    let key_file = ws.dir.path().join("remote.key");
    std::fs::write(&key_file, format!("{key}\n")).expect("key file");
    let added = ws.ok(&[
        "models",
        "add",
        "big",
        "--openai-url",
        &format!("http://127.0.0.1:{port}/v1"),
        "--remote-model",
        id,
        "--api-key-file",
        &key_file.display().to_string(),
    ]);
    (key_file, added)
}

#[test]
fn a_registered_remote_model_writes_answers_the_same_checks_apply_to() {
    // `_data` first: bindings drop in reverse, so the server is killed before its directory goes.
    let ModelServer {
        _data,
        server,
        key,
        id: remote_id,
    } = start_model_server();

    // Basalt with a knowledge base, answering with the model served elsewhere. The key is in
    // a file; Basalt stores only where it is.
    let ws = Workspace::new();
    leave_kb(&ws);
    let (key_file, added) = register(&ws, server.port, &remote_id, &key);
    assert!(added.contains("answers"), "{added}");
    let url = format!("http://127.0.0.1:{}/v1", server.port);
    let registry =
        std::fs::read_to_string(ws.dir.path().join("data/models.json")).expect("models.json");
    assert!(
        !registry.contains(&key),
        "the key is never stored: {registry}"
    );
    let listed = ws.json(&["models", "list", "--json"]);
    let big = listed
        .as_array()
        .and_then(|models| models.iter().find(|model| model["name"] == "big"))
        .unwrap_or_else(|| panic!("big is listed: {listed}"));
    assert_eq!(big["kind"], "remote chat", "{big}");
    assert_eq!(big["ready"], true, "{big}");

    let check = |answer: &Value| {
        assert_eq!(answer["model"], "big", "{answer}");
        assert_eq!(answer["abstained"], false, "{answer}");
        assert!(
            answer["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0,
            "the remote's own count: {answer}"
        );
        let text = answer["answer"].as_str().unwrap_or_default();
        assert!(text.contains("16 weeks"), "{answer}");
        assert!(
            answer["citations"]
                .as_array()
                .is_some_and(|citations| !citations.is_empty()),
            "{answer}"
        );
    };
    check(&ws.json(&leave_question(Some("big"))));

    // The knowledge base's answer.model chooses it when the request does not.
    let settings_path = ws.dir.path().join("data/kb/leave/kb.json");
    let mut settings: Value =
        serde_json::from_str(&std::fs::read_to_string(&settings_path).expect("kb.json"))
            .expect("JSON settings");
    settings["answer"]["model"] = "big".into();
    std::fs::write(&settings_path, settings.to_string()).expect("kb.json");
    check(&ws.json(&leave_question(None)));
    // The embedded model's name still picks the embedded model.
    let local = ws.json(&leave_question(Some("smollm2-135m-instruct")));
    assert_eq!(local["model"], "smollm2-135m-instruct", "{local}");

    // Over HTTP: the model by name, and a knowledge base whose answer.model it is.
    let admin = ws.admin_key();
    let policy = ws.dir.path().join("small-only.json");
    std::fs::write(
        &policy,
        r#"{"Statement": [
            {"Effect": "Allow", "Action": "model:*", "Resource": "basalt:*:model/*"},
            {"Effect": "Deny", "Action": "model:Chat", "Resource": "basalt:*:model/big"}]}"#,
    )
    .expect("policy");
    ws.ok(&["policy", "put", "small-only", &policy.display().to_string()]);
    let limited = ws.json(&[
        "keys",
        "create",
        "--json",
        "--principal",
        "intern",
        "--policy",
        "small-only",
    ])["key"]
        .as_str()
        .expect("key")
        .to_owned();
    // A key whose answers the embedded model writes unless a request names another.
    let embedded = ws.json(&[
        "keys",
        "create",
        "--json",
        "--principal",
        "frugal",
        "--policy",
        "AdministratorAccess",
        "--model",
        "smollm2-135m-instruct",
    ])["key"]
        .as_str()
        .expect("key")
        .to_owned();
    assert_clean_failure(
        &ws.run(&["keys", "create", "--principal", "x", "--model", "nowhere"]),
        "no model of that name",
    );
    let front = start_server_when(&ws, &[], |port| get(port, "/healthz", "").0 == 200);
    let chat = |key: &str, body: &str| http(front.port, "POST", "/v1/chat/completions", key, body);
    let (status, body) = get(front.port, "/v1/models", &admin);
    assert_eq!(status, 200, "{body}");
    let card = |listing: &Value| {
        listing["data"]
            .as_array()
            .and_then(|models| models.iter().find(|model| model["id"] == "big"))
            .cloned()
            .unwrap_or_else(|| panic!("big is listed: {listing}"))
    };
    let big = card(&json_in(&body));
    assert!(
        big["provider"] == "openai" && big["available"] == true,
        "{big}"
    );
    let (status, body) = chat(
        &admin,
        r#"{"model": "big", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello."}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let reply = json_in(&body);
    assert!(
        reply["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0,
        "{reply}"
    );
    // A policy keeps the remote model from a principal that may chat with the embedded one.
    let (status, body) = chat(
        &limited,
        r#"{"model": "big", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello."}]}"#,
    );
    assert!(status == 403 && body.contains("access_denied"), "{body}");
    let (status, body) = chat(
        &limited,
        r#"{"model": "smollm2-135m-instruct", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        front.port,
        "POST",
        "/v1/kbs/leave/answer",
        &admin,
        r#"{"question": "How long is parental leave?", "style": "generative", "min_relevance": 0.2, "max_tokens": 48}"#,
    );
    assert_eq!(status, 200, "{body}");
    check(&json_in(&body));
    // The key's model comes before the knowledge base's; the request's before both.
    let question = r#""question": "How long is parental leave?", "style": "generative", "min_relevance": 0.2, "max_tokens": 48"#;
    for (body, model) in [
        (format!("{{{question}}}"), "smollm2-135m-instruct"),
        (format!(r#"{{{question}, "model": "big"}}"#), "big"),
    ] {
        let (status, answer) = http(front.port, "POST", "/v1/kbs/leave/answer", &embedded, &body);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(json_in(&answer)["model"], model, "{answer}");
    }
    let (status, body) = chat(
        &admin,
        r#"{"model": "nobody", "messages": [{"role": "user", "content": "Hi"}]}"#,
    );
    assert!(status == 404 && body.contains("model_not_found"), "{body}");

    // A wrong key is the server's 401, said plainly, and the key is not repeated back.
    std::fs::write(&key_file, "bsk_wrong_key_for_the_test\n").expect("key file");
    let wrong = ws.run(&leave_question(Some("big")));
    assert_clean_failure(&wrong, "model server of big: HTTP 401");
    assert!(!stderr(&wrong).contains("bsk_wrong_key_for_the_test"));
    std::fs::write(&key_file, format!("{key}\n")).expect("key file");
    // A key variable that is not set is named.
    ws.ok(&[
        "models",
        "add",
        "unset",
        "--openai-url",
        &url,
        "--remote-model",
        &remote_id,
        "--api-key-env",
        "BASALT_TEST_SURELY_UNSET_KEY",
    ]);
    assert_clean_failure(
        &ws.run(&leave_question(Some("unset"))),
        "BASALT_TEST_SURELY_UNSET_KEY",
    );
    drop(server);
    // Over HTTP the server gone is 502 model_server_unavailable. After three failures in a row
    // the circuit breaker opens: /v1/models says so, and the next request fails at once.
    let hello =
        r#"{"model": "big", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}"#;
    for _ in 0..3 {
        let (status, body) = chat(&admin, hello);
        assert!(
            status == 502 && body.contains("model_server_unavailable"),
            "{body}"
        );
    }
    let big = card(&json_in(&get(front.port, "/v1/models", &admin).1));
    assert_eq!(big["available"], false, "{big}");
    let started = std::time::Instant::now();
    let (status, body) = chat(&admin, hello);
    assert!(
        status == 502 && body.contains("not called for another"),
        "{body}"
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    drop(front);
    // The server gone: a clear error once the retries are spent, not a hang or a panic.
    assert_clean_failure(&ws.run(&leave_question(Some("big"))), "model server of big");
    // Unless the knowledge base has a fallback: the embedded model writes, and says so.
    settings["answer"]["fallback_model"] = "smollm2-135m-instruct".into();
    std::fs::write(&settings_path, settings.to_string()).expect("kb.json");
    let answer = ws.json(&leave_question(None));
    assert_eq!(answer["model"], "smollm2-135m-instruct", "{answer}");
    assert_eq!(answer["abstained"], false, "{answer}");
    assert!(
        answer["answer"]
            .as_str()
            .is_some_and(|text| text.contains("16 weeks")),
        "{answer}"
    );

    ws.ok(&["models", "remove", "big"]);
    let trail = ws.ok(&["audit", "tail"]);
    assert!(
        trail.contains("admin:RegisterModel") && trail.contains("admin:RemoveModel"),
        "{trail}"
    );
    assert_clean_failure(
        &ws.run(&["models", "remove", "big"]),
        "no remote model is named big",
    );
}

/// A client that hangs up stops the model served elsewhere, not only Basalt's side of it: the
/// model server (which runs one request at a time) is free for the next request at once
/// instead of finishing a long answer nobody reads.
#[test]
fn a_client_that_goes_away_stops_the_remote_model() {
    let ModelServer {
        _data,
        server,
        key,
        id,
    } = start_model_server();
    let ws = Workspace::new();
    register(&ws, server.port, &id, &key);
    let admin = ws.admin_key();
    let front = start_server_when(&ws, &[], |port| get(port, "/healthz", "").0 == 200);

    // A long answer, streamed through Basalt; the client reads its first piece and hangs up.
    let body = r#"{"model": "big", "stream": true, "max_tokens": 2000, "temperature": 0.8,
        "seed": 7, "messages": [{"role": "user",
        "content": "Write a very long story about a lighthouse keeper, chapter after chapter."}]}"#;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", front.port)).expect("connects");
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut stream, request.as_bytes()).expect("sends");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("\"content\"") {
        let read = std::io::Read::read(&mut stream, &mut buffer).expect("reads");
        assert!(read > 0, "{}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..read]);
    }
    let hung_up = std::time::Instant::now();
    drop(stream);

    // The model server answers a short request soon: the long one stopped.
    let (status, answer) = http(
        server.port,
        "POST",
        "/v1/chat/completions",
        &key,
        &format!(
            r#"{{"model": "{id}", "max_tokens": 4, "messages": [{{"role": "user", "content": "Hi"}}]}}"#
        ),
    );
    assert_eq!(status, 200, "{answer}");
    let waited = hung_up.elapsed();
    // 2,000 tokens take about 15 s here; a stopped answer frees the server within a second or
    // two (the hang-up is noticed at the next token on each side).
    assert!(
        waited < std::time::Duration::from_secs(5),
        "the model server was busy for {waited:?} after the client left"
    );
    drop(front);
}

/// A model server with a certificate signed by the company's own authority (made here with
/// openssl): refused until the authority is trusted with `--ca-file`.
#[test]
fn a_remote_model_over_https_is_trusted_through_its_ca_file() {
    let data = Workspace::new();
    let [cert, tls_key, authority] = common::tls_files(data.dir.path());
    let key = data.admin_key();
    let tls = ["--tls-cert", cert.as_str(), "--tls-key", tls_key.as_str()];
    let server = start_server_when(&data, &tls, |port| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert", &authority])
            .arg(format!("https://127.0.0.1:{port}/healthz"))
            .output()
            .is_ok_and(|output| output.status.success())
    });

    let ws = Workspace::new();
    let docs = ws.docs();
    std::fs::create_dir_all(&docs).expect("docs dir");
    std::fs::write(
        docs.join("leave.md"),
        "# Leave\n\nParental leave is 16 weeks, fully paid, for every parent.\n",
    )
    .expect("write");
    ws.ok(&["kb", "create", "leave"]);
    ws.ok(&["ingest", "--kb", "leave", &docs.display().to_string()]);
    let key_file = ws.dir.path().join("remote.key");
    std::fs::write(&key_file, &key).expect("key file");
    let url = format!("https://127.0.0.1:{}/v1", server.port);
    let key_path = key_file.display().to_string();
    let add = |extra: &[&str]| {
        let mut args = vec![
            "models",
            "add",
            "secure",
            "--openai-url",
            &url,
            "--remote-model",
            "smollm2-135m-instruct",
            "--api-key-file",
            &key_path,
        ];
        args.extend_from_slice(extra);
        ws.ok(&args)
    };
    let ask = [
        "ask",
        "--kb",
        "leave",
        "--model",
        "secure",
        "--style",
        "generative",
        "--min-relevance",
        "0.2",
        "--max-tokens",
        "24",
        "--json",
        "How long is parental leave?",
    ];
    // Without the authority the certificate is not trusted: registering says the server is
    // not reachable, and a question fails with the reason instead of talking to it.
    let untrusted = add(&[]);
    assert!(untrusted.contains("not reachable now"), "{untrusted}");
    assert_clean_failure(&ws.run(&ask), "model server of secure");
    let trusted = add(&["--ca-file", &authority]);
    assert!(trusted.contains("answers"), "{trusted}");
    let answer = ws.json(&ask);
    assert_eq!(answer["model"], "secure", "{answer}");
    assert!(
        answer["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0,
        "{answer}"
    );
    // A file with no certificate in it is refused when the model is registered.
    assert_clean_failure(
        &ws.run(&[
            "models",
            "add",
            "broken",
            "--openai-url",
            &url,
            "--remote-model",
            "x",
            "--ca-file",
            &key_path,
        ]),
        "holds no PEM certificate",
    );
}

/// Bedrock as the provider: a second Basalt speaks Bedrock's API, and this one calls its
/// ConverseStream signed with SigV4 (an AWS key the remote made with `keys create --aws`, read
/// from variables this one names). Greedy decoding gives the embedded model's own answer, word
/// for word; a wrong secret is a clear error that never shows the secret.
#[test]
fn a_second_basalt_serves_as_bedrock_and_writes_the_embedded_models_answer() {
    let remote = Workspace::new();
    let (master, access_key, secret) = remote.aws_admin_key();
    let server = start_server_when(&remote, &["--master-key-file", &master], |port| {
        get(port, "/healthz", "").0 == 200
    });

    let ws = Workspace::new();
    leave_kb(&ws);
    let data = ws.data();
    let with_credentials = |args: &[&str], secret: &str| {
        let mut all = vec!["--data-dir", data.as_str()];
        all.extend_from_slice(args);
        common::basalt_with(&all, |command| {
            command
                .env("BSMOL_ID", &access_key)
                .env("BSMOL_SECRET", secret);
        })
    };
    let url = format!("http://127.0.0.1:{}", server.port);
    let added = with_credentials(
        &[
            "models",
            "add",
            "bsmol",
            "--bedrock-url",
            &url,
            "--region",
            "eu-west-1",
            "--remote-model",
            "smollm2-135m-instruct",
            "--aws-access-key-env",
            "BSMOL_ID",
            "--aws-secret-key-env",
            "BSMOL_SECRET",
        ],
        &secret,
    );
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(
        common::stdout(&added).contains("answers"),
        "{}",
        common::stdout(&added)
    );
    let registry =
        std::fs::read_to_string(ws.dir.path().join("data/models.json")).expect("models.json");
    assert!(
        registry.contains("\"bedrock\"") && !registry.contains(&secret),
        "{registry}"
    );

    let local = ws.json(&leave_question(None));
    let through = leave_question(Some("bsmol"));
    let output = with_credentials(&through, &secret);
    assert!(output.status.success(), "{}", stderr(&output));
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(answer["model"], "bsmol", "{answer}");
    assert_eq!(answer["abstained"], false, "{answer}");
    assert_eq!(
        answer["answer"], local["answer"],
        "greedy decoding through Bedrock's API gives the embedded model's answer"
    );
    assert!(
        answer["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0,
        "the remote's own count: {answer}"
    );

    let wrong = "0".repeat(64);
    let refused = with_credentials(&through, &wrong);
    assert_clean_failure(&refused, "403");
    assert!(!stderr(&refused).contains(&wrong), "{}", stderr(&refused));
    drop(server);
}
