//! Two `basalt serve` replicas over one PostgreSQL (a throwaway cluster with pgvector), each
//! with a data directory of its own and the same master key, keeping uploads in one S3 store
//! (a throwaway SeaweedFS): `basalt db migrate` makes the schema; a knowledge base created
//! through one is served by the other; an upload through A is searchable through B; a
//! conversation begun through A continues through B; and when A is killed with `kill -9` in
//! the middle of an ingestion job, B resumes the job once A's lease runs out and finishes it,
//! with every acknowledged file present exactly once. Keys and guardrails made through one
//! machine's CLI apply on a replica that checks keys, and a key revoked there stops at once.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use basalt_objects::testing::{TempS3, files_containing};
use common::{
    Server, Workspace, cpu_turn, json_of, multipart, raw_request, start_server_when,
    start_server_with,
};
use serde_json::Value;

fn get(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = raw_request(port, "GET", path, &[], b"");
    (status, json_of(&body))
}

fn post_json(port: u16, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = raw_request(
        port,
        "POST",
        path,
        &["Content-Type: application/json"],
        body.as_bytes(),
    );
    (status, json_of(&text))
}

fn upload(port: u16, files: &[(String, String)]) -> Value {
    let parts: Vec<(&str, Option<&str>, &[u8])> = files
        .iter()
        .map(|(name, text)| ("file", Some(name.as_str()), text.as_bytes()))
        .collect();
    let (content_type, body) = multipart(&parts);
    let (status, text) = raw_request(
        port,
        "POST",
        "/v1/kbs/handbook/documents",
        &[&content_type],
        &body,
    );
    assert_eq!(status, 202, "{text}");
    json_of(&text)
}

/// Polls job `id` through `port` until `done` says so (or ten minutes pass).
fn job_until(port: u16, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (status, job) = get(port, &format!("/v1/jobs/{id}"));
        assert_eq!(status, 200, "{job}");
        if done(&job) {
            return job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the job never got there: {job}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn finished(job: &Value) -> bool {
    job["status"] != "queued" && job["status"] != "running"
}

/// Real abstracts as Markdown files, each with a word of its own (`zqmarkNNN`).
fn abstracts(count: usize, offset: usize) -> Vec<(String, String)> {
    let corpus = std::fs::read_to_string(common::shared_data().join("scifact-train/corpus.jsonl"))
        .expect("the SciFact corpus in ../shared/data");
    corpus
        .lines()
        .skip(offset)
        .take(count)
        .enumerate()
        .map(|(index, line)| {
            let record: Value = serde_json::from_str(line).expect("a corpus line");
            let number = offset + index;
            (
                format!("paper-{number:04}.md"),
                format!(
                    "# {}\n\nFile zqmark{number:04}.\n\n{}\n",
                    record["title"].as_str().unwrap_or_default(),
                    record["text"].as_str().unwrap_or_default()
                ),
            )
        })
        .collect()
}

/// Where the replicas keep uploads in the S3 store.
const OBJECTS: &str = "s3://basalt-store/replicas";

fn replica(ws: &Workspace, database: &str, master_key: &str, s3: &TempS3) -> Server {
    start_server_with(
        ws,
        &[
            "--database",
            database,
            "--objects",
            OBJECTS,
            "--master-key-file",
            master_key,
            "--local-demo",
            "--job-lease",
            "3",
        ],
        |command| {
            command.envs(s3.env());
        },
        |port| raw_request(port, "GET", "/healthz", &[], b"").0 == 200,
    )
}

#[test]
fn two_replicas_share_knowledge_bases_and_finish_each_others_jobs() {
    let cluster = basalt_pg::testing::TempCluster::start().expect("a PostgreSQL cluster");
    let s3 = TempS3::start().expect("SeaweedFS starts");
    let store = s3.objects(OBJECTS).expect("the replicas' store");
    let url = cluster.url();
    let (a_ws, b_ws) = (Workspace::new(), Workspace::new());

    // Not migrated: the replica says what to run; then `db migrate` makes the schema once.
    let status = a_ws.run(&["--database", url, "db", "status"]);
    assert_eq!(status.status.code(), Some(1), "{status:?}");
    let migrated = a_ws.json(&["--database", url, "db", "migrate", "--json"]);
    assert_eq!(migrated["from"], 0, "{migrated}");
    let again = b_ws.json(&["--database", url, "db", "migrate", "--json"]);
    assert_eq!(again["applied"], serde_json::json!([]), "{again}");
    a_ws.ok(&["--database", url, "db", "status"]);

    // One master key for both (as from a secrets mount).
    let key = a_ws.dir.path().join("master.key").display().to_string();
    a_ws.ok(&["keys", "generate-master", "--out", &key]);
    let turn = cpu_turn(); // after the CLI commands above, which take their own turns
    let a = replica(&a_ws, url, &key, &s3);
    let b = replica(&b_ws, url, &key, &s3);

    let (status, created) = post_json(a.port, "/v1/kbs", r#"{"name": "handbook"}"#);
    assert_eq!(status, 201, "{created}");
    let (status, seen) = get(b.port, "/v1/kbs/handbook");
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["encrypted"], true, "{seen}");

    // An upload through A, followed and searched through B.
    let memo = vec![(
        "leave.md".to_owned(),
        "# Parental leave\n\nParental leave at Basalt is sixteen weeks, fully paid.\n".to_owned(),
    )];
    let job = upload(a.port, &memo);
    let id = job["id"].as_str().expect("a job id").to_owned();
    let done = job_until(b.port, &id, finished);
    assert_eq!(done["status"], "completed", "{done}");
    let (status, found) = post_json(
        b.port,
        "/v1/kbs/handbook/search",
        r#"{"query": "how long is parental leave", "k": 1}"#,
    );
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        found["results"]["hits"][0]["source"], "upload:leave.md",
        "{found}"
    );

    // A conversation started and asked through A continues through B: the follow-up is
    // retrieved with A's question, and both turns are the session's on either replica.
    let (status, session) = post_json(a.port, "/v1/sessions", r#"{"kb": "handbook"}"#);
    assert_eq!(status, 201, "{session}");
    let session_id = session["id"].as_str().expect("a session id").to_owned();
    let ask = |port: u16, question: &str| {
        post_json(
            port,
            "/v1/kbs/handbook/answer",
            &serde_json::json!({"question": question, "session_id": session_id, "max_tokens": 16})
                .to_string(),
        )
    };
    let (status, answer) = ask(a.port, "How long is parental leave?");
    assert_eq!(status, 200, "{answer}");
    let (status, follow_up) = ask(b.port, "and is it paid?");
    assert_eq!(status, 200, "{follow_up}");
    assert!(
        follow_up["query"]
            .as_str()
            .is_some_and(|query| query.contains("parental leave")),
        "B retrieves the follow-up with A's question: {follow_up}"
    );
    let (status, kept) = get(a.port, &format!("/v1/sessions/{session_id}"));
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["turns"].as_array().map(Vec::len), Some(2), "{kept}");

    // A long job through A; A is killed with SIGKILL while it runs; B finishes it.
    let papers = abstracts(400, 0);
    let job = upload(a.port, &papers);
    let id = job["id"].as_str().expect("a job id").to_owned();
    let running = job_until(b.port, &id, |job| {
        finished(job) || job["progress"]["files_done"].as_u64().unwrap_or(0) >= 5
    });
    assert_eq!(
        running["status"], "running",
        "the job must still run when A is killed (a test that kills after the end proves \
         nothing): {running}"
    );
    let first_worker = running["lease"]["worker"].clone();
    // The upload waits in the object store (where B fetches it), sealed: none of its words are
    // in the store's files (volumes, the filer's metadata).
    let waiting = store.list(&format!("uploads/{id}")).expect("lists").len();
    assert_eq!(waiting, papers.len(), "the upload's files in the store");
    for word in ["zqmark0399", "zqmark0000"] {
        let found = files_containing(&s3.data_dir(), word.as_bytes());
        assert!(found.is_empty(), "{word} in {found:?}");
    }
    let mut a = a;
    a.child.kill().expect("kill -9"); // SIGKILL: no shutdown, no last write
    a.child.wait().expect("reaped");
    let killed_at = Instant::now();
    let done = job_until(b.port, &id, finished);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempts"], 2, "claimed again after A died: {done}");
    assert!(
        done["report"]["failed"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{done}"
    );
    eprintln!(
        "B finished the job {:.1} s after A was killed (A had done {} of {} files)",
        killed_at.elapsed().as_secs_f64(),
        running["progress"]["files_done"],
        papers.len()
    );
    assert_ne!(first_worker, Value::Null);
    // B removes the job's upload from the store once it has recorded the end.
    let ended = Instant::now();
    let mut left = usize::MAX;
    while left > 0 && ended.elapsed() < Duration::from_secs(30) {
        left = store.list("uploads").expect("lists").len();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        left, 0,
        "objects of a finished job's upload left in the store"
    );

    // Every acknowledged file is there exactly once, and searchable through B.
    let (status, listed) = get(b.port, "/v1/kbs/handbook/documents?limit=1000");
    assert_eq!(status, 200, "{listed}");
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    for document in listed["documents"].as_array().expect("documents") {
        *sources
            .entry(document["source"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(sources.len(), papers.len() + 1, "{sources:?}");
    for (name, _) in papers.iter().chain(&memo) {
        assert_eq!(
            sources.get(&format!("upload:{name}")),
            Some(&1),
            "{name} once"
        );
    }
    let (status, found) = post_json(
        b.port,
        "/v1/kbs/handbook/search",
        r#"{"query": "zqmark0399", "k": 1, "mode": "bm25"}"#,
    );
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        found["results"]["hits"][0]["source"], "upload:paper-0399.md",
        "{found}"
    );
    drop(b);

    // Keys and guardrails made on another machine's CLI (A's data directory) apply on a
    // replica that checks keys (C), and a revoked key stops there at its next request.
    // C and D check keys and allow each key 5 requests, then one every 5 seconds.
    let limited = [
        "--database",
        url,
        "--master-key-file",
        &key,
        "--rate-limit",
        "0.2",
        "--rate-burst",
        "5",
    ];
    let (c_ws, d_ws) = (Workspace::new(), Workspace::new());
    let healthy = |port| raw_request(port, "GET", "/healthz", &[], b"").0 == 200;
    let c = start_server_when(&c_ws, &limited, healthy);
    let d = start_server_when(&d_ws, &limited, healthy);
    drop(turn);
    let created = a_ws.admin_key_with(&["--database", url]);
    let secret = created["key"].as_str().expect("a key").to_owned();
    let bearer = format!("Authorization: Bearer {secret}");
    let config = a_ws.dir.path().join("shared.json");
    std::fs::write(&config, r#"{"description": "made on A"}"#).expect("writes");
    a_ws.ok(&[
        "--database",
        url,
        "guard",
        "create",
        "shared",
        "--file",
        &config.display().to_string(),
    ]);
    let (status, body) = raw_request(c.port, "GET", "/v1/guardrails/shared", &[&bearer], b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("made on A"), "{body}");
    let (status, body) = raw_request(c.port, "GET", "/v1/kbs/handbook", &[&bearer], b"");
    assert_eq!(status, 200, "{body}");
    // A remote model registered from A's machine is listed by C (the registry is the
    // database's, not a data directory's models.json).
    a_ws.ok(&[
        "--database",
        url,
        "models",
        "add",
        "gpu-box",
        "--openai-url",
        "http://127.0.0.1:9/v1",
        "--remote-model",
        "llama-70b",
        "--api-key-env",
        "GPU_BOX_KEY",
    ]);
    assert!(!a_ws.dir.path().join("data/models.json").exists());
    let (status, body) = raw_request(c.port, "GET", "/v1/models", &[&bearer], b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("gpu-box"), "{body}");
    let id = created["id"].as_str().expect("a key id");
    a_ws.ok(&["--database", url, "keys", "revoke", id]);
    let (status, body) = raw_request(c.port, "GET", "/v1/kbs/handbook", &[&bearer], b"");
    assert_eq!(status, 401, "revoked through another process: {body}");

    // The rate holds across replicas: a key's 5 requests are spent through C and D together.
    let other = a_ws.admin_key_with(&["--database", url]);
    let other = format!(
        "Authorization: Bearer {}",
        other["key"].as_str().expect("a key")
    );
    for (index, port) in [c.port, d.port, c.port, d.port, c.port]
        .into_iter()
        .enumerate()
    {
        let (status, body) = raw_request(port, "GET", "/v1/kbs/handbook", &[&other], b"");
        assert_eq!(status, 200, "request {index}: {body}");
    }
    let (status, body) = raw_request(d.port, "GET", "/v1/kbs/handbook", &[&other], b"");
    assert_eq!(status, 429, "the sixth, through D: {body}");
    assert!(body.contains("rate_limited"), "{body}");
    drop((c, d));

    // Every replica and the CLI appended to one audit chain, intact.
    let verified = a_ws.json(&["--database", url, "audit", "verify", "--json"]);
    assert_eq!(verified["first_bad"], Value::Null, "{verified}");
    let tail = a_ws.ok(&["--database", url, "audit", "tail", "--lines", "1000"]);
    let records: Vec<Value> = tail
        .lines()
        .map(|line| serde_json::from_str(line).expect("a record"))
        .collect();
    assert_eq!(Some(records.len() as u64), verified["records"].as_u64());
    let seen = |action: &str, outcome: &str| {
        records
            .iter()
            .any(|record| record["action"] == action && record["outcome"] == outcome)
    };
    assert!(seen("kb:Create", "allowed"), "A's create");
    assert!(seen("kb:Search", "allowed"), "B's searches");
    assert!(
        seen("kb:Get", "unauthenticated"),
        "C's refusal of the revoked key"
    );
}
