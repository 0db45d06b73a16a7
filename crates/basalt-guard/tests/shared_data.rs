//! The guardrail floors, measured on the shared labelled data (`../shared/data/guardrails`).

use std::path::PathBuf;

use basalt_guard::eval::{Dataset, evaluate_spans, read_dataset};
use basalt_guard::pii::Detector;

fn shared_data() -> PathBuf {
    std::env::var_os("BASALT_SHARED_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
        PathBuf::from,
    )
}

fn dataset(name: &str) -> Dataset {
    let path = shared_data().join("guardrails").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "{} must exist (BASALT_SHARED_DATA): {error}",
            path.display()
        )
    });
    read_dataset(&text).expect("a valid dataset")
}

/// Structured PII (checksummed and formatted types): recall ≥ 0.95 and precision ≥ 0.90.
#[test]
fn structured_pii_meets_the_recall_and_precision_floors() {
    let Dataset::Spans(records) = dataset("pii-spans.jsonl") else {
        panic!("entity spans expected");
    };
    let report = evaluate_spans(&Detector::default(), &records);
    eprintln!("{}", serde_json::to_string_pretty(&report).expect("json"));
    assert!(report.records > 2000);
    for (name, score) in &report.per_type {
        eprintln!(
            "{name:<16} tp {:>4} fp {:>4} fn {:>4}  precision {:.3} recall {:.3}",
            score.true_positives,
            score.false_positives,
            score.false_negatives,
            score.precision,
            score.recall
        );
    }
    let overall = &report.overall;
    assert!(overall.recall >= 0.95, "recall {}", overall.recall);
    assert!(overall.precision >= 0.90, "precision {}", overall.precision);
}
