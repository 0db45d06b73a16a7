//! Knowledge bases as a user drives them: `kb`, `ingest`, `search`, `docs` and `eval` on real
//! files in every format, with the real embedding model and a real index on disk.

mod common;

use std::path::Path;

use basalt_ingest::samples::{Block, docx, pdf};
use common::{Workspace, assert_clean_failure, basalt_now, shared_data};
use serde_json::Value;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fn sources(hits: &[Value]) -> Vec<String> {
    hits.iter()
        .map(|hit| {
            let source = hit["source"].as_str().unwrap_or_default();
            Path::new(source)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn every_format_ingests_searches_updates_and_deletes() {
    let ws = Workspace::new();
    let docs = ws.docs();
    write(&docs.join("guide.md"), b"# Field Guide\n\nIntro to rocks.\n\n## Volcanic rocks\n\nObsidian is volcanic glass that forms when lava cools quickly.\n");
    write(
        &docs.join("guide.md.meta.json"),
        br#"{"tags": ["handbook"], "metadata": {"year": 2024}}"#,
    );
    write(&docs.join("web/page.html"), b"<html><head><title>Quarry Safety</title><script>track()</script></head><body><nav>Home</nav><h1>Quarry Safety</h1><p>Wear a helmet near the quarry face.</p><ul><li>Steel boots</li></ul></body></html>");
    write(
        &docs.join("notes.txt"),
        b"Granite countertops need sealing every year.\n",
    );
    write(
        &docs.join("manual.pdf"),
        &pdf(&[
            &["Basalt Manual"],
            &["Basalt columns form as thick lava flows cool and contract."],
        ]),
    );
    write(
        &docs.join("policy.docx"),
        &docx(&[
            Block::Title("Sampling Policy"),
            Block::Heading(1, "Labels"),
            Block::Paragraph("Every rock sample gets a barcode label."),
            Block::Table(&[&["Rock", "Shelf"], &["Marble", "B7"]]),
        ]),
    );
    write(&docs.join("data/minerals.csv"), b"id,title,text,hardness\nm1,Quartz,Quartz is a hard mineral used in glassmaking.,7\nm2,Talc,Talc is the softest mineral on the Mohs scale.,1\n");
    write(&docs.join("data/faq.json"), br#"[{"id": "q1", "title": "Shipping", "text": "Samples ship in padded crates."}, {"id": "q2", "title": "Returns", "text": "Returns are accepted within thirty days."}]"#);
    write(&docs.join("data/corpus.jsonl"), b"{\"_id\": \"beir-1\", \"title\": \"Pumice\", \"text\": \"Pumice floats on water because of trapped gas bubbles.\"}\n{\"_id\": \"beir-2\", \"title\": \"Slate\", \"text\": \"Slate splits into thin sheets used for roofing.\"}\n");
    // Bad input: each fails with a reason naming the file; the batch goes on.
    write(
        &docs.join("bad/binary.txt"),
        b"MZ\x90\x00\x03\x00\x00\x00\x04\x00",
    );
    write(&docs.join("bad/empty.txt"), b"");
    write(
        &docs.join("bad/broken.pdf"),
        b"%PDF-1.4\n1 0 obj << /Type /Catalog",
    );
    write(&docs.join("bad/latin1.md"), b"caf\xE9 au lait");
    write(&docs.join("bad/scanned.pdf"), &pdf(&[&[]]));
    write(
        &docs.join("bad/locked.docx"),
        &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0, 0, 0],
    );
    write(&docs.join("image.xyz"), b"not a supported type");
    // Broken links: to a type Basalt skips anyway (not a failure), and to a document (a failure).
    std::os::unix::fs::symlink(docs.join("gone.js"), docs.join("lib.js")).expect("symlink");
    std::os::unix::fs::symlink(docs.join("gone.md"), docs.join("bad/link.md")).expect("symlink");

    ws.ok(&["kb", "create", "rocks"]);
    let output = ws.run(&[
        "ingest",
        "--kb",
        "rocks",
        "--json",
        &docs.display().to_string(),
    ]);
    assert!(
        !output.status.success(),
        "failures make the exit code non-zero"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(report["added"], 11, "{report:#}");
    let failed = report["failed"].as_array().expect("failed list");
    let reasons: Vec<String> = failed
        .iter()
        .map(|failure| format!("{} {}", failure["path"], failure["reason"]))
        .collect();
    assert_eq!(failed.len(), 7, "{reasons:#?}");
    for (file, reason) in [
        ("binary.txt", "binary"),
        ("empty.txt", "empty"),
        ("broken.pdf", "PDF"),
        ("latin1.md", "UTF-8"),
        ("scanned.pdf", "no extractable text"),
        ("locked.docx", "password"),
        ("link.md", "broken symbolic link"),
    ] {
        assert!(
            reasons
                .iter()
                .any(|line| line.contains(file) && line.contains(reason)),
            "{file}: {reasons:#?}"
        );
    }
    let skipped = report["skipped"].to_string();
    assert!(
        skipped.contains("image.xyz") && skipped.contains("lib.js"),
        "{skipped}"
    );

    // Each format is searchable, with provenance.
    for (query, file) in [
        ("obsidian volcanic glass", "guide.md"),
        ("helmet quarry face", "page.html"),
        ("basalt columns lava", "manual.pdf"),
        ("barcode label", "policy.docx"),
        ("softest mineral Mohs", "minerals.csv"),
        ("padded crates", "faq.json"),
        ("pumice floats", "corpus.jsonl"),
    ] {
        let hits = ws.search("rocks", &["--k", "1"], query);
        assert_eq!(sources(&hits), [file], "{query}");
    }
    let hit = &ws.search("rocks", &["--mode", "bm25", "--k", "1"], "columns contract")[0];
    assert_eq!(hit["page"], 2);
    assert_eq!(hit["title"], "manual");
    for field in [
        "chunk_id",
        "doc_id",
        "score",
        "text",
        "content_hash",
        "ingested_at",
        "char_start",
        "char_end",
    ] {
        assert!(!hit[field].is_null(), "{field} missing: {hit:#}");
    }
    let hit = &ws.search("rocks", &["--k", "1"], "pumice")[0];
    assert_eq!(hit["doc_id"], "beir-1", "BEIR ids are kept");
    let hit = &ws.search("rocks", &["--k", "1"], "obsidian")[0];
    assert_eq!(
        hit["heading_path"],
        serde_json::json!(["Field Guide", "Volcanic rocks"])
    );
    assert_eq!(hit["tags"], serde_json::json!(["handbook"]));

    // Filters apply inside the search: only tagged chunks, even for a query that fits others better.
    let hits = ws.search(
        "rocks",
        &["--filter", "tag = handbook and year >= 2024"],
        "granite countertops",
    );
    assert!(!hits.is_empty());
    assert!(
        sources(&hits).iter().all(|file| file == "guide.md"),
        "{:?}",
        sources(&hits)
    );
    let hits = ws.search(
        "rocks",
        &["--filter", "hardness > 5", "--k", "5"],
        "mineral",
    );
    assert_eq!(sources(&hits), ["minerals.csv"]);
    assert_eq!(hits[0]["doc_id"], "m1");

    // Re-ingesting unchanged files is a no-op; a changed file replaces its chunks.
    let report = ws.json(&[
        "ingest",
        "--kb",
        "rocks",
        "--json",
        &docs.display().to_string(),
    ]);
    assert_eq!(
        (report["added"].as_u64(), report["unchanged"].as_u64()),
        (Some(0), Some(11)),
        "{report:#}"
    );
    write(
        &docs.join("notes.txt"),
        b"Marble floors need polishing every spring.\n",
    );
    let report = ws.json(&[
        "ingest",
        "--kb",
        "rocks",
        "--json",
        &docs.join("notes.txt").display().to_string(),
    ]);
    assert_eq!(report["replaced"], 1, "{report:#}");
    assert!(
        ws.search("rocks", &["--mode", "bm25"], "countertops sealing")
            .is_empty(),
        "old chunks are gone"
    );
    assert_eq!(
        sources(&ws.search("rocks", &["--mode", "bm25", "--k", "1"], "polishing spring")),
        ["notes.txt"]
    );

    // Deleting by source removes the document from every index.
    let deleted = ws.ok(&[
        "docs",
        "delete",
        "--kb",
        "rocks",
        "--source",
        &docs.join("notes.txt").display().to_string(),
    ]);
    assert!(deleted.contains("deleted 1"), "{deleted}");
    assert!(
        ws.search("rocks", &["--mode", "bm25"], "polishing spring")
            .is_empty()
    );
    let vector_hits = ws.search(
        "rocks",
        &["--mode", "vector", "--k", "20"],
        "marble floors polishing",
    );
    assert!(
        !sources(&vector_hits).contains(&"notes.txt".to_string()),
        "gone from the vector index too"
    );
    let listed = ws.json(&["docs", "list", "--kb", "rocks", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(10));
    let doc_id = listed[0]["doc_id"].as_str().expect("id").to_string();
    ws.ok(&["docs", "delete", "--kb", "rocks", &doc_id]);
    assert_clean_failure(
        &ws.run(&["docs", "delete", "--kb", "rocks", &doc_id]),
        "no document matched",
    );

    let kbs = ws.json(&["kb", "list", "--json"]);
    assert_eq!(kbs[0]["name"], "rocks");
    assert_eq!(kbs[0]["documents"], 9);
    ws.ok(&["kb", "delete", "rocks"]);
    assert_clean_failure(
        &ws.run(&["search", "--kb", "rocks", "x"]),
        "no knowledge base named \"rocks\"",
    );
}

#[test]
fn bad_arguments_get_clear_errors() {
    let ws = Workspace::new();
    assert_clean_failure(
        &ws.run(&["ingest", "--kb", "nope", "."]),
        "basalt kb create nope",
    );
    ws.ok(&["kb", "create", "k"]);
    assert_clean_failure(&ws.run(&["kb", "create", "k"]), "exists already");
    assert_clean_failure(
        &ws.run(&["kb", "create", "a/b"]),
        "invalid knowledge base name",
    );
    assert_clean_failure(
        &ws.run(&["kb", "create", "c", "--chunk-tokens", "999"]),
        "model's limit",
    );
    assert_clean_failure(
        &ws.run(&["search", "--kb", "k", "--filter", "tag =", "x"]),
        "invalid filter at character 5",
    );
    assert_clean_failure(
        &ws.run(&["search", "--kb", "k", "--fusion", "magic", "x"]),
        "unknown fusion",
    );
    assert_clean_failure(
        &ws.run(&["kb", "create", "v", "--vector-index", "fast"]),
        "unknown vector index",
    );
    let missing = ws.dir.path().join("missing.txt");
    let output = ws.run(&["ingest", "--kb", "k", &missing.display().to_string()]);
    assert_clean_failure(&output, "missing.txt: cannot read");
    let small = ws.docs().join("small.txt");
    write(&small, b"a few words");
    let output = ws.run(&[
        "ingest",
        "--kb",
        "k",
        "--max-file-size",
        "0",
        &small.display().to_string(),
    ]);
    assert_clean_failure(&output, "file limit");
}

#[test]
fn a_killed_ingest_leaves_only_whole_documents_and_resumes() {
    let ws = Workspace::new();
    let docs = ws.docs();
    let files = 120;
    for file in 0..files {
        let paragraphs: Vec<String> = (0..12)
            .map(|paragraph| format!("Zebra report {file} part {paragraph}: the herd moved north past the river, grazing on tall grass near marker {}.", file * 100 + paragraph))
            .collect();
        write(
            &docs.join(format!("report-{file:02}.txt")),
            paragraphs.join("\n\n").as_bytes(),
        );
    }
    ws.ok(&[
        "kb",
        "create",
        "herd",
        "--chunk-tokens",
        "64",
        "--overlap",
        "8",
    ]);
    let data = ws.data();
    let docs_arg = docs.display().to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args([
            "--data-dir",
            &data,
            "ingest",
            "--kb",
            "herd",
            "--batch-chunks",
            "8",
            &docs_arg,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    // Wait for the first acknowledged commit, then kill -9 mid-run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        // Not `ws.json`: polling must not wait for the CPU turn another test may hold.
        let output = basalt_now(&[
            "--data-dir",
            &data,
            "docs",
            "list",
            "--kb",
            "herd",
            "--json",
        ]);
        let listed: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if listed.as_array().is_some_and(|docs| docs.len() >= 3) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no commit within 5 minutes"
        );
        assert!(
            child.try_wait().expect("poll").is_none(),
            "ingest finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    let listed = ws.json(&["docs", "list", "--kb", "herd", "--json"]);
    let visible = listed.as_array().expect("array").clone();
    assert!(
        visible.len() < files,
        "killed before the end ({} visible)",
        visible.len()
    );
    for doc in &visible {
        let doc_id = doc["doc_id"].as_str().expect("id");
        let filter = format!("doc_id = \"{doc_id}\"");
        let hits = ws.search(
            "herd",
            &["--mode", "bm25", "--k", "100", "--filter", &filter],
            "zebra herd",
        );
        assert_eq!(
            hits.len() as u64,
            doc["chunk_count"].as_u64().expect("count"),
            "{doc_id} is whole"
        );
    }
    // A second run picks up where the first stopped.
    let report = ws.json(&["ingest", "--kb", "herd", "--json", &docs_arg]);
    assert_eq!(
        report["unchanged"].as_u64(),
        Some(visible.len() as u64),
        "{report:#}"
    );
    assert_eq!(
        report["added"].as_u64(),
        Some((files - visible.len()) as u64),
        "{report:#}"
    );
    let listed = ws.json(&["docs", "list", "--kb", "herd", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(files));
}

#[test]
fn eval_retrieval_scores_a_scifact_sample() {
    // 300 SciFact documents and the training queries judged against them.
    let scifact = shared_data().join("scifact-train");
    let ws = Workspace::new();
    let dir = ws.dir.path();
    let corpus: Vec<String> = std::fs::read_to_string(scifact.join("corpus.jsonl"))
        .expect("corpus")
        .lines()
        .take(300)
        .map(str::to_owned)
        .collect();
    let ids: std::collections::HashSet<String> = corpus
        .iter()
        .map(|line| {
            serde_json::from_str::<Value>(line).expect("json")["_id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    let qrels: Vec<String> = std::fs::read_to_string(scifact.join("qrels/train.tsv"))
        .expect("qrels")
        .lines()
        .skip(1)
        .filter(|line| line.split('\t').nth(1).is_some_and(|doc| ids.contains(doc)))
        .map(str::to_owned)
        .collect();
    assert!(qrels.len() >= 20, "enough judged queries ({})", qrels.len());
    std::fs::write(dir.join("corpus.jsonl"), corpus.join("\n")).expect("write");
    std::fs::write(
        dir.join("qrels.tsv"),
        format!("query-id\tcorpus-id\tscore\n{}\n", qrels.join("\n")),
    )
    .expect("write");
    let path = |name: &str| dir.join(name).display().to_string();
    let queries = scifact.join("queries.jsonl").display().to_string();
    let args = [
        "eval",
        "retrieval",
        "--json",
        "--corpus",
        &path("corpus.jsonl"),
        "--queries",
        &queries,
        "--qrels",
        &path("qrels.tsv"),
    ];
    let report = ws.json(&args);
    assert_eq!(report["documents"], 300);
    assert_eq!(
        report["queries"].as_u64(),
        Some(
            qrels
                .iter()
                .map(|line| line.split('\t').next())
                .collect::<std::collections::HashSet<_>>()
                .len() as u64
        )
    );
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    for result in results {
        let ndcg = result["ndcg_at_10"].as_f64().expect("ndcg");
        // On 300 documents the task is easier than on 5,183; all three modes must do well.
        assert!(ndcg > 0.7, "{}: nDCG@10 {ndcg}", result["mode"]);
        assert!(
            result["recall_at_100"].as_f64().expect("recall")
                >= result["recall_at_10"].as_f64().expect("recall")
        );
    }
    // A second run reuses the knowledge base: nothing is embedded again.
    let again = ws.json(&args);
    for (first, second) in results
        .iter()
        .zip(again["results"].as_array().expect("results"))
    {
        assert_eq!(
            first["ndcg_at_10"], second["ndcg_at_10"],
            "same index, same scores"
        );
    }
    assert!(
        again["ingest_seconds"].as_f64().expect("seconds")
            < report["ingest_seconds"].as_f64().expect("seconds")
    );
    // HNSW graphs on the same KB: built before the queries, and agreeing with the exact scan.
    let mut graph_args = args.to_vec();
    graph_args.extend(["--vector-index", "hnsw", "--compare-exact"]);
    let graphs = ws.json(&graph_args);
    assert_eq!(graphs["vector_index"], "hnsw");
    let rows = graphs["results"].as_array().expect("results");
    let names: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "{}{}",
                row["mode"].as_str().unwrap_or_default(),
                if row["exact"] == true { " exact" } else { "" }
            )
        })
        .collect();
    assert_eq!(
        names,
        ["bm25", "vector", "vector exact", "hybrid", "hybrid exact"]
    );
    for pair in [(1, 2), (3, 4)] {
        let (approximate, exact) = (&rows[pair.0], &rows[pair.1]);
        let overlap = approximate["top10_overlap_with_exact"]
            .as_f64()
            .expect("overlap");
        assert!(
            overlap >= 0.95,
            "{}: top-10 overlap {overlap}",
            approximate["mode"]
        );
        let difference = approximate["ndcg_at_10"].as_f64().expect("ndcg")
            - exact["ndcg_at_10"].as_f64().expect("ndcg");
        assert!(
            difference.abs() < 0.02,
            "{}: nDCG differs by {difference}",
            approximate["mode"]
        );
    }
    let kb_dir = ws.dir.path().join("data/kb");
    let kb = std::fs::read_dir(&kb_dir)
        .expect("kb dir")
        .flatten()
        .find(|entry| entry.file_name().to_string_lossy().starts_with("eval-"))
        .expect("the eval KB");
    let files: Vec<_> = std::fs::read_dir(kb.path().join("index/ann"))
        .expect("graph directory")
        .flatten()
        .collect();
    assert!(!files.is_empty(), "graph files were written");
}
