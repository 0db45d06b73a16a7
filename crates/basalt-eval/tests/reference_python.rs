//! ROUGE and BLEU agree with the reference Python implementations — Google's `rouge-score`
//! and `sacrebleu`, installed from PyPI by `scripts/test.sh` — on real answer/reference pairs:
//! ClapNQ's gold answers against extractive answers made of its passages' sentences (what
//! Basalt's extractive fallback gives) and against another question's answer.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use basalt_eval::metrics::{corpus_bleu, rouge_l, rouge_n};

fn shared_data() -> PathBuf {
    std::env::var_os("BASALT_SHARED_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
        PathBuf::from,
    )
}

const SCRIPT: &str = r#"
import json, sys
from rouge_score import rouge_scorer
import sacrebleu
pairs = json.load(sys.stdin)
scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
rouge = []
for hypothesis, reference in pairs:
    s = scorer.score(reference, hypothesis)
    rouge.append([s["rouge1"].fmeasure, s["rouge2"].fmeasure, s["rougeL"].fmeasure])
bleu = sacrebleu.corpus_bleu([h for h, _ in pairs], [[r for _, r in pairs]]).score
print(json.dumps({"rouge": rouge, "bleu": bleu}))
"#;

/// Up to `count` (hypothesis, reference) pairs from ClapNQ's answerable questions.
fn pairs(count: usize) -> Vec<(String, String)> {
    let path = shared_data().join("clapnq-dev/answerable.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{} (BASALT_SHARED_DATA): {error}", path.display()));
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a ClapNQ record"))
        .collect();
    let answer = |record: &serde_json::Value| {
        record["output"][0]["answer"]
            .as_str()
            .expect("a gold answer")
            .to_owned()
    };
    let mut pairs = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let sentences = record["passages"][0]["sentences"]
            .as_array()
            .expect("passage sentences");
        let extractive: Vec<&str> = sentences
            .iter()
            .take(1 + index % 3)
            .filter_map(serde_json::Value::as_str)
            .collect();
        pairs.push((extractive.join(" "), answer(record)));
        let other = &records[(index + 7) % records.len()];
        if index % 4 == 0 {
            pairs.push((answer(other), answer(record)));
        }
        if pairs.len() >= count {
            break;
        }
    }
    pairs.truncate(count);
    pairs
}

#[test]
fn rouge_and_bleu_agree_with_rouge_score_and_sacrebleu() {
    let pairs = pairs(120);
    assert_eq!(pairs.len(), 120);
    let python = std::env::var("BASALT_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{python} runs: {error}"));
    let input = serde_json::to_vec(&pairs).expect("json");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write the pairs");
    let output = child.wait_with_output().expect("python finishes");
    assert!(
        output.status.success(),
        "the reference scorers (pip install rouge-score sacrebleu; scripts/test.sh does): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let mut worst: f64 = 0.0;
    for ((hypothesis, gold), expected) in pairs
        .iter()
        .zip(reference["rouge"].as_array().expect("rouge"))
    {
        let ours = [
            rouge_n(hypothesis, gold, 1).f,
            rouge_n(hypothesis, gold, 2).f,
            rouge_l(hypothesis, gold).f,
        ];
        for (ours, theirs) in ours.iter().zip(expected.as_array().expect("three scores")) {
            let theirs = theirs.as_f64().expect("a score");
            worst = worst.max((ours - theirs).abs());
            assert!(
                (ours - theirs).abs() < 0.01,
                "{ours} vs rouge-score {theirs}: {hypothesis:?} / {gold:?}"
            );
        }
    }
    let theirs = reference["bleu"].as_f64().expect("bleu");
    let bleu_pairs: Vec<(String, Vec<String>)> = pairs
        .iter()
        .map(|(hypothesis, gold)| (hypothesis.clone(), vec![gold.clone()]))
        .collect();
    let ours = corpus_bleu(&bleu_pairs);
    eprintln!("largest ROUGE difference {worst:e}; BLEU {ours} vs sacreBLEU {theirs}");
    // BLEU is on sacreBLEU's 0–100 scale: 0.01 of it is a hundredth of a point.
    assert!((ours - theirs).abs() < 0.01, "{ours} vs sacreBLEU {theirs}");
    assert!(theirs > 1.0, "the sample is not degenerate: {theirs}");
}
