//! `basalt ingest --kb NAME s3://bucket/prefix/` against a real S3 store (a throwaway
//! SeaweedFS with signature checks): the prefix is ingested as a directory would be (sidecars
//! included), and a second run is a sync — new and changed objects ingested, unchanged ones
//! skipped, the documents of deleted objects removed — while other prefixes stay out.

mod common;

use std::process::Output;

use basalt_objects::testing::TempS3;
use common::{Workspace, assert_clean_failure, basalt_with, stderr, stdout};
use serde_json::Value;

/// `basalt --data-dir … --master-key-file … ARGS` with the store's AWS environment.
fn run(ws: &Workspace, env: &[(&'static str, String)], args: &[&str]) -> Output {
    let (data, key) = (ws.data(), master_key(ws));
    let mut all = vec!["--data-dir", &data, "--master-key-file", &key];
    all.extend_from_slice(args);
    basalt_with(&all, |command| {
        command.envs(env.iter().cloned());
    })
}

fn master_key(ws: &Workspace) -> String {
    ws.dir.path().join("master.key").display().to_string()
}

fn sync(ws: &Workspace, s3: &TempS3) -> Value {
    let output = run(
        ws,
        &s3.env(),
        &[
            "ingest",
            "--kb",
            "handbook",
            "--json",
            "s3://basalt-docs/handbook/",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).expect("a JSON report")
}

fn hits(ws: &Workspace, query: &str) -> Vec<Value> {
    let output = run(
        ws,
        &[],
        &[
            "search", "--kb", "handbook", "--json", "--mode", "bm25", query,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let results: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    results["hits"].as_array().cloned().unwrap_or_default()
}

#[test]
fn an_s3_prefix_is_ingested_and_synced() {
    let s3 = TempS3::start().expect("SeaweedFS starts");
    let bucket = s3.objects("s3://basalt-docs").expect("the bucket");
    let put = |key: &str, text: &str| {
        bucket
            .put(key, text.as_bytes().to_vec())
            .expect("stores the object");
    };
    put(
        "handbook/leave.md",
        "# Sabbatical\n\nAfter three years, anyone may take a zephyrine sabbatical of six weeks.\n",
    );
    put(
        "handbook/pay.md",
        "# Pay\n\nSalaries are paid by the quillfeather run on the last business day.\n",
    );
    put(
        "handbook/hr/conduct.md",
        "# Conduct\n\nComplaints go to the marlowind committee within ten days.\n",
    );
    put(
        "handbook/hr/conduct.md.meta.json",
        r#"{"title": "Code of conduct", "tags": ["hr"]}"#,
    );
    put(
        "other/stray.md",
        "# Stray\n\nThe outsidery memo is not in the handbook.\n",
    );

    let ws = Workspace::new();
    ws.ok(&["keys", "generate-master", "--out", &master_key(&ws)]);
    let created = run(&ws, &[], &["kb", "create", "handbook"]);
    assert!(created.status.success(), "{}", stderr(&created));

    let first = sync(&ws, &s3);
    assert_eq!(first["added"], 3, "{first}");
    assert_eq!(first["failed"], serde_json::json!([]), "{first}");
    let found = hits(&ws, "zephyrine");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["source"], "s3://basalt-docs/handbook/leave.md");
    let conduct = hits(&ws, "marlowind");
    assert_eq!(
        conduct[0]["title"], "Code of conduct",
        "the sidecar applies"
    );
    assert!(
        hits(&ws, "outsidery").is_empty(),
        "another prefix stays out"
    );

    // Nothing changed: nothing is ingested again.
    let again = sync(&ws, &s3);
    assert_eq!(
        (&again["added"], &again["replaced"], &again["unchanged"]),
        (&Value::from(0), &Value::from(0), &Value::from(3)),
        "{again}"
    );

    // One object changed, one deleted, one new.
    put(
        "handbook/leave.md",
        "# Sabbatical\n\nAfter three years, anyone may take a zephyrine sabbatical of eight weeks.\n",
    );
    bucket.delete("handbook/pay.md").expect("deletes");
    put(
        "handbook/benefits.md",
        "# Benefits\n\nThe dental plan is called marigoldia.\n",
    );
    let synced = sync(&ws, &s3);
    assert_eq!(synced["added"], 1, "{synced}");
    assert_eq!(synced["replaced"], 1, "{synced}");
    assert_eq!(synced["unchanged"], 1, "{synced}");
    assert_eq!(synced["removed"], 1, "{synced}");
    assert!(
        hits(&ws, "quillfeather").is_empty(),
        "the deleted object's document is gone"
    );
    assert_eq!(hits(&ws, "marigoldia").len(), 1);
    let changed = hits(&ws, "zephyrine");
    assert!(
        changed[0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("eight weeks"),
        "{changed:?}"
    );

    // The wrong secret is a clear error that says what to set, not a panic.
    let mut wrong = s3.env();
    for (name, value) in &mut wrong {
        if *name == "AWS_SECRET_ACCESS_KEY" {
            *value = "not-the-secret".into();
        }
    }
    let refused = run(
        &ws,
        &wrong,
        &["ingest", "--kb", "handbook", "s3://basalt-docs/handbook/"],
    );
    assert_clean_failure(&refused, "AWS_SECRET_ACCESS_KEY");
    assert!(!stderr(&refused).contains("not-the-secret"));
    assert_eq!(
        hits(&ws, "marigoldia").len(),
        1,
        "a refused sync removes nothing"
    );

    // A prefix and a directory together are refused with the reason.
    let mixed = run(
        &ws,
        &s3.env(),
        &[
            "ingest",
            "--kb",
            "handbook",
            "s3://basalt-docs/handbook/",
            ".",
        ],
    );
    assert_clean_failure(&mixed, "on its own");
}
