//! Embedding models served elsewhere (`basalt models add --embedding`): a knowledge base built
//! with one, and one moved to one (`basalt kb reembed`). The model server is a second, real
//! `basalt serve` on 127.0.0.1 that speaks both OpenAI's `/v1/embeddings` and Bedrock's
//! `InvokeModel` (SigV4-signed) over the same local MiniLM, so the vectors that come back must
//! be the ones the local model makes: searches through the remote model rank as the local one
//! does, with the same scores up to the last bits of the encoder's two matrix kernels.

mod common;

use common::{Workspace, raw_request, start_server_when, stderr, stdout};
use serde_json::Value;

fn get(port: u16, path: &str, key: &str) -> (u16, String) {
    let authorization = format!("Authorization: Bearer {key}");
    raw_request(port, "GET", path, &[authorization.as_str()], b"")
}

/// Two short policies, each one chunk (so chunking by the remote model's estimated tokens and
/// by MiniLM's own tokenizer cut the same chunks).
fn policies(ws: &Workspace) -> String {
    let docs = ws.docs();
    std::fs::create_dir_all(&docs).expect("docs dir");
    std::fs::write(
        docs.join("leave.md"),
        "# Leave policy\n\nParental leave is 16 weeks, fully paid, for every parent.\n",
    )
    .expect("write");
    std::fs::write(
        docs.join("travel.md"),
        "# Travel policy\n\nTrain tickets are booked in second class; flights need approval.\n",
    )
    .expect("write");
    std::fs::write(
        docs.join("security.md"),
        "# Security\n\nLaptops lock after five minutes; report a lost badge at once.\n",
    )
    .expect("write");
    docs.display().to_string()
}

/// Chunk ids and scores of a vector search.
fn ranked(output: &Value) -> Vec<(String, f64)> {
    output["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|hit| {
            (
                hit["chunk_id"].as_str().expect("id").to_owned(),
                hit["score"].as_f64().expect("score"),
            )
        })
        .collect()
}

fn assert_same_ranking(left: &[(String, f64)], right: &[(String, f64)]) {
    assert_eq!(left.len(), right.len(), "{left:?} vs {right:?}");
    for ((left_id, left_score), (right_id, right_score)) in left.iter().zip(right) {
        assert_eq!(left_id, right_id, "{left:?} vs {right:?}");
        // The server embeds a few texts on its query path, ingestion embeds on the bulk path:
        // their matrix kernels differ in the last bits (cosines move by about 4e-4).
        assert!(
            (left_score - right_score).abs() < 2e-3,
            "{left:?} vs {right:?}"
        );
    }
}

const QUESTION: &str = "How long is parental leave?";

#[test]
fn knowledge_bases_embed_through_remote_models_as_the_local_model_does() {
    // The model server, with a bearer key and an AWS access key.
    let remote = Workspace::new();
    let (master, access_key, secret) = remote.aws_admin_key();
    let bearer = remote.admin_key();
    let server = start_server_when(&remote, &["--master-key-file", &master], |port| {
        get(port, "/healthz", "").0 == 200
    });
    let url = format!("http://127.0.0.1:{}", server.port);

    let ws = Workspace::new();
    let docs = policies(&ws);
    let data = ws.data();
    let run = |args: &[&str]| {
        let mut all = vec!["--data-dir", data.as_str()];
        all.extend_from_slice(args);
        common::basalt_with(&all, |command| {
            command
                .env("EMBED_KEY", &bearer)
                .env("TITAN_ID", &access_key)
                .env("TITAN_SECRET", &secret);
        })
    };
    let ok = |args: &[&str]| {
        let output = run(args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        stdout(&output)
    };
    let json = |args: &[&str]| -> Value {
        serde_json::from_str(&ok(args)).unwrap_or_else(|error| panic!("{args:?}: {error}"))
    };

    let added = ok(&[
        "models",
        "add",
        "minilm-http",
        "--embedding",
        "--openai-url",
        &format!("{url}/v1"),
        "--remote-model",
        "all-minilm-l6-v2",
        "--api-key-env",
        "EMBED_KEY",
    ]);
    assert!(
        added.contains("embedding model") && added.contains("answers"),
        "{added}"
    );
    let added = ok(&[
        "models",
        "add",
        "titan",
        "--embedding",
        "--bedrock-url",
        &url,
        "--region",
        "eu-west-1",
        "--remote-model",
        "amazon.titan-embed-text-v2:0",
        "--aws-access-key-env",
        "TITAN_ID",
        "--aws-secret-key-env",
        "TITAN_SECRET",
    ]);
    assert!(added.contains("answers"), "{added}");
    let listed = json(&["models", "list", "--json"]);
    let kinds: Vec<&str> = listed
        .as_array()
        .expect("models")
        .iter()
        .filter(|model| model["kind"] == "remote embedding")
        .map(|model| model["health"]["Ok"].as_u64().map_or("down", |_| "up"))
        .collect();
    assert_eq!(kinds, ["up", "up"], "{listed}");
    let registry = std::fs::read_to_string(format!("{data}/models.json")).expect("models.json");
    assert!(
        !registry.contains(&secret) && !registry.contains(&bearer),
        "{registry}"
    );

    // One knowledge base on the local model, one built through the OpenAI-compatible API.
    ok(&["kb", "create", "local"]);
    ok(&["ingest", "--kb", "local", &docs]);
    ok(&["kb", "create", "remote", "--embedding-model", "minilm-http"]);
    let kbs = json(&["kb", "list", "--json"]);
    let remote_kb = kbs
        .as_array()
        .expect("kbs")
        .iter()
        .find(|kb| kb["name"] == "remote")
        .expect("remote kb");
    assert_eq!(remote_kb["embedding"]["model"], "minilm-http");
    assert_eq!(
        remote_kb["embedding"]["dimension"], 384,
        "learned from the server"
    );
    ok(&["ingest", "--kb", "remote", &docs]);
    let search = |kb: &str| json(&["search", "--kb", kb, "--mode", "vector", "--json", QUESTION]);
    let first = search("local");
    let source = first["hits"][0]["source"].as_str().unwrap_or_default();
    assert!(source.ends_with("leave.md"), "{first}");
    let local = ranked(&first);
    assert_same_ranking(&local, &ranked(&search("remote")));

    // The local knowledge base moves to Bedrock's protocol (Titan's id names the same MiniLM
    // there): the same ranking and scores from the new index.
    let report = json(&[
        "kb",
        "reembed",
        "local",
        "--embedding-model",
        "titan",
        "--json",
    ]);
    assert_eq!(report["from_model"], "all-minilm-l6-v2", "{report}");
    assert_eq!(report["to_model"], "titan", "{report}");
    assert_eq!(
        (report["documents"].as_u64(), report["chunks"].as_u64()),
        (Some(3), Some(3))
    );
    assert_same_ranking(&local, &ranked(&search("local")));

    // The server behind `serve` searches and answers each knowledge base with its own model.
    let admin = ws.admin_key();
    let front = common::start_server_with(
        &ws,
        &[],
        |command| {
            command
                .env("EMBED_KEY", &bearer)
                .env("TITAN_ID", &access_key)
                .env("TITAN_SECRET", &secret);
        },
        |port| get(port, "/healthz", "").0 == 200,
    );
    let body = serde_json::json!({"query": QUESTION, "mode": "vector"}).to_string();
    for kb in ["local", "remote"] {
        let authorization = format!("Authorization: Bearer {admin}");
        let (status, answer) = raw_request(
            front.port,
            "POST",
            &format!("/v1/kbs/{kb}/search"),
            &[authorization.as_str(), "Content-Type: application/json"],
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{kb}: {answer}");
        let start = answer.find('{').unwrap_or(0);
        let end = answer.rfind('}').map_or(answer.len(), |end| end + 1);
        let found: Value = serde_json::from_str(&answer[start..end]).expect("JSON");
        assert_same_ranking(&local, &ranked(&found["results"]));
    }
    let authorization = format!("Authorization: Bearer {admin}");
    let create = |body: &str| {
        raw_request(
            front.port,
            "POST",
            "/v1/kbs",
            &[authorization.as_str(), "Content-Type: application/json"],
            body.as_bytes(),
        )
    };
    let (status, created) = create(r#"{"name": "api", "embedding_model": "minilm-http"}"#);
    assert_eq!(status, 201, "{created}");
    assert!(
        created.contains(r#""model":"minilm-http""#) && created.contains(r#""dimension":384"#),
        "{created}"
    );
    let (status, refused) = create(r#"{"name": "nope", "embedding_model": "unheard-of"}"#);
    assert_eq!(status, 404, "{refused}");
    assert!(refused.contains("model_not_found"), "{refused}");
    let (status, models) = get(front.port, "/v1/models", &admin);
    assert_eq!(status, 200, "{models}");
    assert!(models.contains("\"kind\":\"embedding\""), "{models}");
    drop(front);

    // The model server goes away: vector searches fail with what to do, BM25 still works.
    drop(server);
    let down = run(&["search", "--kb", "remote", "--mode", "vector", QUESTION]);
    assert!(!down.status.success());
    let message = stderr(&down);
    assert!(
        message.contains("minilm-http") && message.contains("models list"),
        "{message}"
    );
    assert!(
        !message.contains("panicked") && !message.contains(&bearer),
        "{message}"
    );
    ok(&["search", "--kb", "remote", "--mode", "bm25", QUESTION]);
}
