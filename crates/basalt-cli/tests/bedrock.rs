//! The Bedrock-compatible API on a real `basalt serve` with the real models, driven by boto3
//! and the AWS CLI exactly as code written for Amazon Bedrock drives them (scripts/test.sh
//! installs both, pinned): SigV4 keys from `basalt keys create --aws`, every bedrock-runtime
//! and bedrock-agent-runtime operation, streams, errors, and document-level access.

mod common;

use std::process::Command;

use common::{Workspace, cpu_turn, start_server_when};
use serde_json::{Value, json};

/// An AWS access key made with the CLI: [access key id, secret access key].
fn aws_key(ws: &Workspace, master: &str, args: &[&str]) -> [String; 2] {
    let mut all = vec![
        "--master-key-file",
        master,
        "keys",
        "create",
        "--aws",
        "--json",
    ];
    all.extend_from_slice(args);
    let created = ws.json(&all);
    ["aws_access_key_id", "aws_secret_access_key"].map(|field| {
        created[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {created}"))
            .to_owned()
    })
}

#[test]
fn boto3_and_the_aws_cli_call_every_bedrock_operation_unchanged() {
    let ws = Workspace::new();
    let docs = ws.docs();
    std::fs::create_dir_all(&docs).expect("docs");
    std::fs::write(
        docs.join("vacation.md"),
        "# Vacation\n\nEvery employee receives 27 days of paid vacation per year. Vacation \
         requests go to the line manager at least two weeks in advance.\n",
    )
    .expect("write");
    std::fs::write(
        docs.join("salaries.md"),
        "# Salaries\n\nThe salary band for senior engineers is 91,000 to 118,000 euros.\n",
    )
    .expect("write");
    std::fs::write(
        docs.join("salaries.md.meta.json"),
        r#"{"readers": ["group:hr"]}"#,
    )
    .expect("write");
    let master = ws.dir.path().join("master.key").display().to_string();
    ws.ok(&["keys", "generate-master", "--out", &master]);
    let docs_arg = docs.display().to_string();
    ws.ok(&["--master-key-file", &master, "kb", "create", "handbook"]);
    ws.ok(&[
        "--master-key-file",
        &master,
        "ingest",
        "--kb",
        "handbook",
        &docs_arg,
    ]);
    let guardrail = ws.dir.path().join("pii.json");
    std::fs::write(
        &guardrail,
        r#"{"sensitive_information": {"entities": [{"type": "EMAIL", "input": "anonymize", "output": "anonymize"}]},
            "word_filters": {"words": ["project falcon"]}}"#,
    )
    .expect("write");
    let guardrail_arg = guardrail.display().to_string();
    ws.ok(&["guard", "create", "pii", "--file", &guardrail_arg]);
    let api_key = ws.json(&["keys", "create", "--principal", "admin", "--json"])["key"]
        .as_str()
        .expect("an API key")
        .to_owned();
    let keys = json!({
        "admin": aws_key(&ws, &master, &["--principal", "admin", "--groups", "hr", "--policy", "AdministratorAccess"]),
        "bob": aws_key(&ws, &master, &["--principal", "bob", "--policy", "ReadOnlyAccess"]),
        "nobody": aws_key(&ws, &master, &["--principal", "nobody"]),
        "admin_api_key": api_key,
    });
    let keys_file = ws.dir.path().join("keys.json");
    std::fs::write(&keys_file, keys.to_string()).expect("write");
    // A key's secret is sealed: the identity directory holds no secret access key.
    let directory = std::fs::read_to_string(ws.dir.path().join("data/security/iam.json"))
        .expect("the identity directory");
    for name in ["admin", "bob", "nobody"] {
        let secret = keys[name][1].as_str().expect("secret");
        assert!(!directory.contains(secret), "{name}'s secret in the clear");
    }

    // Over HTTPS, as boto3 sends a Bedrock API key (a bearer token) only there.
    let [cert, tls_key, authority] = common::tls_files(ws.dir.path());
    let _turn = cpu_turn();
    let server = start_server_when(
        &ws,
        &[
            "--master-key-file",
            &master,
            "--tls-cert",
            &cert,
            "--tls-key",
            &tls_key,
        ],
        |port| {
            Command::new("curl")
                .args(["-sS", "--max-time", "5", "--cacert", &authority])
                .arg(format!("https://127.0.0.1:{port}/healthz"))
                .output()
                .is_ok_and(|output| output.status.success())
        },
    );
    let base_url = format!("https://127.0.0.1:{}", server.port);

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/bedrock_boto3.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(&base_url)
        .arg(&keys_file)
        .env("AWS_CA_BUNDLE", &authority)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the boto3 checks failed (scripts/test.sh installs boto3):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The AWS CLI, every operation it offers (it has no event-stream commands, so neither
    // ConverseStream nor RetrieveAndGenerateStream), with the key in the environment as the
    // CLI reads it.
    let admin = &keys["admin"];
    let aws = |args: &[&str]| -> Value {
        let output = Command::new("python3")
            .args(["-m", "awscli"])
            .args(args)
            .args([
                "--endpoint-url",
                &base_url,
                "--region",
                "us-west-2",
                "--output",
                "json",
            ])
            .env("AWS_ACCESS_KEY_ID", admin[0].as_str().expect("id"))
            .env("AWS_SECRET_ACCESS_KEY", admin[1].as_str().expect("secret"))
            .env("AWS_CA_BUNDLE", &authority)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .expect("the aws CLI runs (scripts/test.sh installs awscli)");
        assert!(
            output.status.success(),
            "aws {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    };
    let reply = aws(&[
        "bedrock-runtime",
        "converse",
        "--model-id",
        "smollm2-135m-instruct",
        "--messages",
        r#"[{"role": "user", "content": [{"text": "Name one primary colour."}]}]"#,
        "--inference-config",
        "maxTokens=8,temperature=0",
    ]);
    assert!(
        reply["output"]["message"]["content"][0]["text"]
            .as_str()
            .is_some_and(|text| !text.trim().is_empty()),
        "{reply}"
    );
    assert_eq!(reply["usage"]["outputTokens"], 8, "{reply}");
    let vector_file = ws.dir.path().join("titan.json");
    let vector_arg = vector_file.display().to_string();
    aws(&[
        "bedrock-runtime",
        "invoke-model",
        "--model-id",
        "amazon.titan-embed-text-v2:0",
        "--body",
        r#"{"inputText": "vacation days"}"#,
        &vector_arg,
    ]);
    let embedded: Value =
        serde_json::from_str(&std::fs::read_to_string(&vector_file).expect("the body file"))
            .expect("JSON");
    assert_eq!(embedded["embedding"].as_array().map(Vec::len), Some(384));
    let counted = aws(&[
        "bedrock-runtime",
        "count-tokens",
        "--model-id",
        "smollm2-135m-instruct",
        "--input",
        r#"{"converse": {"messages": [{"role": "user", "content": [{"text": "Hello there"}]}]}}"#,
    ]);
    assert!(
        counted["inputTokens"].as_u64().unwrap_or(0) > 0,
        "{counted}"
    );
    let checked = aws(&[
        "bedrock-runtime",
        "apply-guardrail",
        "--guardrail-identifier",
        "pii",
        "--guardrail-version",
        "DRAFT",
        "--source",
        "INPUT",
        "--content",
        r#"[{"text": {"text": "Write to ana@example.com"}}]"#,
    ]);
    assert_eq!(checked["action"], "GUARDRAIL_INTERVENED", "{checked}");
    let listed = aws(&["bedrock", "list-foundation-models"]);
    assert!(listed.to_string().contains("kb:handbook"), "{listed}");
    let kbs = aws(&["bedrock-agent", "list-knowledge-bases"]);
    let kb_id = kbs["knowledgeBaseSummaries"][0]["knowledgeBaseId"]
        .as_str()
        .expect("the knowledge base's id")
        .to_owned();
    let retrieved = aws(&[
        "bedrock-agent-runtime",
        "retrieve",
        "--knowledge-base-id",
        &kb_id,
        "--retrieval-query",
        "text=How many vacation days?",
    ]);
    assert!(
        retrieved["retrievalResults"][0]["content"]["text"]
            .as_str()
            .is_some_and(|text| text.contains("27 days")),
        "{retrieved}"
    );
    let configuration = json!({
        "type": "KNOWLEDGE_BASE",
        "knowledgeBaseConfiguration": {"knowledgeBaseId": kb_id, "modelArn": "smollm2-135m-instruct"}
    })
    .to_string();
    let answered = aws(&[
        "bedrock-agent-runtime",
        "retrieve-and-generate",
        "--input",
        "text=How many vacation days does an employee get?",
        "--retrieve-and-generate-configuration",
        &configuration,
    ]);
    assert!(
        answered["output"]["text"]
            .as_str()
            .is_some_and(|text| text.contains("27")),
        "{answered}"
    );
    assert!(answered["sessionId"].is_string(), "{answered}");
    drop(server);
}
