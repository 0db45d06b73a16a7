//! `basalt migrate --to postgres://… --objects s3://…`: an embedded data directory with two
//! tenants, an encrypted and a clear knowledge base (real documents, real embeddings), API and
//! AWS keys, a guardrail with two versions, a remote model and an audit trail, copied into a
//! throwaway PostgreSQL; then read back through `--database` — the same searches give the
//! same chunks with the same scores, the trail verifies with the migration's own record at its
//! end, the old API key opens a replica — and a second run changes nothing. The database's
//! files hold no word of the encrypted knowledge base. A database holding another data
//! directory's state is refused before anything is written.

mod common;

use basalt_objects::testing::TempS3;
use basalt_pg::testing::{TempCluster, plaintext_hits};
use common::{
    Workspace, assert_clean_failure, basalt_with, cpu_turn, json_of, raw_request,
    start_server_when, stderr, stdout,
};
use serde_json::Value;

/// Real abstracts as Markdown files, each with a word of its own (`zqmigNNN`).
fn write_abstracts(dir: &std::path::Path, count: usize) {
    std::fs::create_dir_all(dir).expect("creates the docs directory");
    let corpus = std::fs::read_to_string(common::shared_data().join("scifact-train/corpus.jsonl"))
        .expect("the SciFact corpus in ../shared/data");
    for (number, line) in corpus.lines().take(count).enumerate() {
        let record: Value = serde_json::from_str(line).expect("a corpus line");
        std::fs::write(
            dir.join(format!("paper-{number:03}.md")),
            format!(
                "# {}\n\nFile zqmig{number:03}.\n\n{}\n",
                record["title"].as_str().unwrap_or_default(),
                record["text"].as_str().unwrap_or_default()
            ),
        )
        .expect("writes a document");
    }
}

/// `basalt migrate` with the store's AWS environment.
fn migrate(ws: &Workspace, key: &str, url: &str, s3: &TempS3, extra: &[&str]) -> (bool, String) {
    let data = ws.data();
    let mut args = vec![
        "--data-dir",
        &data,
        "--master-key-file",
        key,
        "migrate",
        "--to",
        url,
        "--objects",
        "s3://basalt-store/migrated",
    ];
    args.extend_from_slice(extra);
    let output = basalt_with(&args, |command| {
        command.envs(s3.env());
    });
    (
        output.status.success(),
        format!("{}{}", stdout(&output), stderr(&output)),
    )
}

/// Chunk ids and scores of a search, for comparing backends.
fn ranked(hits: &[Value]) -> Vec<(String, f64)> {
    hits.iter()
        .map(|hit| {
            (
                hit["chunk_id"].as_str().unwrap_or_default().to_owned(),
                hit["score"].as_f64().unwrap_or_default(),
            )
        })
        .collect()
}

/// The handbook's rankings for `queries` in each mode (BM25, vector, hybrid, in that order),
/// every vector scanned, with `options` (a database, the master key).
fn rankings(ws: &Workspace, options: &[&str], queries: &[&str]) -> Vec<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for mode in ["bm25", "vector", "hybrid"] {
        for query in queries {
            let mut extra = options.to_vec();
            extra.extend(["--mode", mode, "--exact"]);
            out.push(ranked(&ws.search("handbook", &extra, query)));
        }
    }
    out
}

#[test]
fn a_data_directory_moves_into_postgres_and_answers_the_same() {
    let cluster = TempCluster::start().expect("a PostgreSQL cluster with pgvector");
    let s3 = TempS3::start().expect("SeaweedFS starts");
    s3.objects("s3://basalt-store")
        .expect("the bucket")
        .put("probe", b"made".to_vec())
        .expect("the bucket exists");
    let url = cluster.url();

    // The embedded data directory, as one machine would have it.
    let ws = Workspace::new();
    let (key, aws_id, _aws_secret) = ws.aws_admin_key();
    let with_key = |args: &[&str]| {
        let mut all = vec!["--master-key-file", key.as_str()];
        all.extend_from_slice(args);
        all.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>()
    };
    let ok = |args: &[&str]| {
        let all = with_key(args);
        ws.ok(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let json = |args: &[&str]| {
        let all = with_key(args);
        ws.json(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let api_key = ws.admin_key_with(&["--master-key-file", &key])["key"]
        .as_str()
        .expect("an API key")
        .to_owned();
    let docs = ws.docs();
    write_abstracts(&docs.join("papers"), 40);
    let notes = ws.dir.path().join("notes");
    std::fs::create_dir_all(&notes).expect("creates");
    std::fs::write(
        notes.join("plan.md"),
        "# Plan\n\nThe acme tenant's quarterly plan names the vorpalith initiative.\n",
    )
    .expect("writes");
    {
        ok(&["kb", "create", "handbook"]);
        ok(&[
            "ingest",
            "--kb",
            "handbook",
            &docs.join("papers").display().to_string(),
        ]);
        ok(&["--tenant", "acme", "kb", "create", "notes", "--unencrypted"]);
        ok(&[
            "--tenant",
            "acme",
            "ingest",
            "--kb",
            "notes",
            &notes.display().to_string(),
        ]);
    }
    let guardrail = ws.dir.path().join("guardrail.json");
    for description in ["first", "second"] {
        std::fs::write(&guardrail, format!(r#"{{"description": "{description}"}}"#))
            .expect("writes");
        ok(&[
            "guard",
            "create",
            "desk",
            "--file",
            &guardrail.display().to_string(),
        ]);
    }
    ok(&[
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
    let queries = [
        "zqmig007",
        "cell differentiation in embryonic development",
        "risk of mortality",
    ];
    let before = rankings(&ws, &["--master-key-file", &key], &queries);
    let audit_before = json(&["audit", "verify", "--json"]);
    let records = audit_before["records"].as_u64().expect("a record count");
    assert!(records >= 3, "keys and a model were made: {audit_before}");

    // The database is the target, not a second source.
    let refused = ws.run(&["--database", url, "migrate", "--to", url]);
    assert_clean_failure(&refused, "--to");

    let (copied, report) = migrate(&ws, &key, url, &s3, &["--json"]);
    assert!(copied, "{report}");
    let report: Value = serde_json::from_str(&report).expect("a JSON report");
    assert_eq!(report["tenants"], serde_json::json!(["acme", "default"]));
    assert_eq!(report["keys"], 2, "an API key and an AWS key: {report}");
    assert_eq!(report["models"], 1);
    assert_eq!(
        (
            &report["guardrail_versions"],
            &report["guardrail_versions_added"]
        ),
        (&Value::from(2), &Value::from(2))
    );
    assert_eq!(
        report["audit_records_added"],
        records + 1,
        "the trail, and the migration's own record: {report}"
    );
    let kbs = report["knowledge_bases"].as_array().expect("copies");
    assert_eq!(kbs.len(), 2, "{report}");
    let handbook = kbs
        .iter()
        .find(|kb| kb["name"] == "handbook")
        .expect("handbook");
    assert_eq!(
        (
            &handbook["documents"],
            &handbook["copied"],
            &handbook["encrypted"]
        ),
        (&Value::from(40), &Value::from(40), &Value::Bool(true))
    );
    for mode in handbook["comparison"]["modes"].as_array().expect("modes") {
        assert!(
            mode["overlap"].as_f64().unwrap_or_default() >= 0.95,
            "{mode}"
        );
    }

    // Read back through the database: the same searches, the same chunks and scores.
    let db = ["--database", url];
    let after = rankings(
        &ws,
        &["--database", url, "--master-key-file", &key],
        &queries,
    );
    // Vector scores are the same numbers; BM25's differ a little, as the embedded index keeps
    // each chunk's length in one byte (Lucene's norms) and the database keeps it exact.
    for (search, (expected, found)) in before.iter().zip(&after).enumerate() {
        let ids = |ranking: &[(String, f64)]| -> Vec<String> {
            ranking.iter().map(|(id, _)| id.clone()).collect()
        };
        assert_eq!(
            ids(expected),
            ids(found),
            "the same chunks in the same order"
        );
        let vector = (queries.len()..2 * queries.len()).contains(&search);
        for ((_, left), (_, right)) in expected.iter().zip(found) {
            let tolerance = if vector { 1e-5 } else { 0.02 * left.abs() };
            assert!((left - right).abs() <= tolerance, "{left} vs {right}");
        }
    }
    assert!(!before[0].is_empty(), "the searches find something");
    let listed = json(&[
        "--database",
        url,
        "--tenant",
        "acme",
        "kb",
        "list",
        "--json",
    ]);
    assert!(listed.to_string().contains("\"notes\""), "{listed}");
    let guard = json(&["--database", url, "guard", "list", "--json"]);
    assert_eq!(guard[0]["latest_version"], 2, "{guard}");
    let models = json(&["--database", url, "models", "list", "--json"]);
    assert!(models.to_string().contains("gpu-box"), "{models}");
    let verified = json(&["--database", url, "audit", "verify", "--json"]);
    assert_eq!(
        verified["records"].as_u64(),
        Some(records + 1),
        "the data directory's records, the migration's last: {verified}"
    );
    assert!(verified["first_bad"].is_null(), "{verified}");
    let migrated = ok(&[
        "--database",
        url,
        "audit",
        "search",
        "--action",
        "admin:Migrate",
    ]);
    assert!(migrated.contains("admin:Migrate"), "{migrated}");
    let keys = ws.ok(&[&db[..], &["keys", "list"]].concat());
    assert!(keys.contains(&aws_id), "{keys}");

    // The data directory goes on (one document changed, one deleted); a second run copies
    // what changed, removes what went, and adds the trail's new records after the first
    // run's.
    let gone = ws.search(
        "handbook",
        &["--master-key-file", &key, "--mode", "bm25"],
        "zqmig010",
    );
    let gone = gone[0]["doc_id"]
        .as_str()
        .expect("a document id")
        .to_owned();
    ok(&["docs", "delete", "--kb", "handbook", &gone]);
    std::fs::remove_file(docs.join("papers/paper-010.md")).expect("removes");
    let changed = docs.join("papers/paper-005.md");
    let text = std::fs::read_to_string(&changed).expect("reads");
    std::fs::write(&changed, format!("{text}\nAddendum: zqlate005.\n")).expect("writes");
    ok(&[
        "ingest",
        "--kb",
        "handbook",
        &docs.join("papers").display().to_string(),
    ]);
    let (again, second) = migrate(&ws, &key, url, &s3, &["--json"]);
    assert!(again, "{second}");
    let second: Value = serde_json::from_str(&second).expect("a JSON report");
    assert_eq!(second["guardrail_versions_added"], 0, "{second}");
    for kb in second["knowledge_bases"].as_array().expect("copies") {
        let expected = if kb["name"] == "handbook" {
            (1, 1, 38)
        } else {
            (0, 0, 1)
        };
        assert_eq!(
            (&kb["copied"], &kb["removed"], &kb["unchanged"]),
            (
                &Value::from(expected.0),
                &Value::from(expected.1),
                &Value::from(expected.2)
            ),
            "{kb}"
        );
    }
    let source = json(&["audit", "verify", "--json"]);
    let verified = json(&["--database", url, "audit", "verify", "--json"]);
    assert_eq!(
        verified["records"], source["records"],
        "{verified} {source}"
    );
    assert_eq!(
        verified["last_hash"], source["last_hash"],
        "one chain: {verified}"
    );
    assert!(verified["first_bad"].is_null(), "{verified}");
    let copy = [
        "--database",
        url,
        "--master-key-file",
        &key,
        "--mode",
        "bm25",
    ];
    let late = ws.search("handbook", &copy, "zqlate005");
    assert_eq!(late.len(), 1, "the changed document: {late:?}");
    assert!(
        ws.search("handbook", &copy, "zqmig010").is_empty(),
        "the deleted document is gone from the copy"
    );

    // The old API key opens a replica on the database, which finds the clear tenant's word.
    let replica_ws = Workspace::new();
    let replica = {
        let _turn = cpu_turn();
        start_server_when(
            &replica_ws,
            &["--database", url, "--master-key-file", &key],
            |port| raw_request(port, "GET", "/healthz", &[], b"").0 == 200,
        )
    };
    let bearer = format!("Authorization: Bearer {api_key}");
    let (status, body) = raw_request(replica.port, "GET", "/v1/kbs", &[&bearer], b"");
    assert_eq!(status, 200, "{body}");
    assert!(json_of(&body).to_string().contains("handbook"), "{body}");
    drop(replica);

    // Once replicas have appended to the database's trail, the histories have parted: a
    // further run is refused before it writes anything.
    let (refused, message) = migrate(&ws, &key, url, &s3, &[]);
    assert!(!refused, "{message}");
    assert!(message.contains("replicas appended"), "{message}");
    assert_eq!(
        json(&["audit", "verify", "--json"])["records"],
        source["records"],
        "the refused run recorded nothing"
    );

    // The database's files: no word of the encrypted knowledge base; the clear one's is there
    // (the grep can find what is there).
    cluster.execute("CHECKPOINT").expect("flushes to disk");
    let words = ["zqmig007", "zqmig021", "zqmig033"];
    assert_eq!(
        plaintext_hits(cluster.data_dir(), &words),
        Vec::<String>::new()
    );
    assert!(!plaintext_hits(cluster.data_dir(), &["vorpalith"]).is_empty());

    // Another data directory's state is refused before anything of it is written.
    let other = Workspace::new();
    let (other_key, _, _) = other.aws_admin_key();
    let (refused, message) = migrate(&other, &other_key, url, &s3, &[]);
    assert!(!refused, "{message}");
    assert!(
        message.contains("migrate into a database without them"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    let keys_after = ws.ok(&[&db[..], &["keys", "list"]].concat());
    assert_eq!(
        keys, keys_after,
        "nothing of the other directory was written"
    );
}

/// `basalt bench scale` builds and times both backends (small sizes here; the note's are
/// 100 k and 1 M) and judges the floors on what it measured.
#[test]
fn bench_scale_measures_both_backends() {
    let cluster = TempCluster::start_migrated().expect("a migrated PostgreSQL cluster");
    let ws = Workspace::new();
    let data = common::shared_data().display().to_string();
    let report = ws.json(&[
        "--database",
        cluster.url(),
        "bench",
        "scale",
        "--backends",
        "embedded,postgres",
        "--chunks",
        "3000,300",
        "--queries",
        "12",
        "--data",
        &data,
        "--json",
    ]);
    let runs = report["runs"].as_array().expect("runs");
    let sizes: Vec<(&str, u64)> = runs
        .iter()
        .map(|run| {
            (
                run["backend"].as_str().unwrap_or_default(),
                run["chunks"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        sizes,
        [
            ("embedded", 300),
            ("embedded", 3000),
            ("postgres", 300),
            ("postgres", 3000)
        ],
        "smallest first, on each backend"
    );
    for run in runs {
        assert!(run["index_bytes"].as_u64() > Some(0), "{run}");
        assert!(run["chunks_per_second"].as_f64() > Some(0.0), "{run}");
        let latencies = run["latencies"].as_array().expect("latencies");
        assert_eq!(latencies.len(), 6, "three modes at 1 and 16 clients: {run}");
        for latency in latencies {
            assert_eq!(latency["queries"], 12, "{latency}");
            let (p50, p99) = (latency["p50_ms"].as_f64(), latency["p99_ms"].as_f64());
            assert!(p50 > Some(0.0) && p99 >= p50, "{latency}");
        }
    }
    let floors = report["floors"].as_array().expect("floors");
    assert_eq!(floors.len(), 4, "two floors per backend: {report}");
    let listed = ws.json(&["--database", cluster.url(), "kb", "list", "--json"]);
    assert_eq!(
        listed,
        serde_json::json!([]),
        "the scratch knowledge bases are gone"
    );
}
