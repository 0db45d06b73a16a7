//! Retrieval evaluation on BEIR-format data: `queries.jsonl` (`_id`, `text`), a qrels TSV
//! (`query-id  corpus-id  score`, header optional) and a ranked list of document ids per query.
//! Metrics follow trec_eval: nDCG@10 with linear gain, Recall@10, Recall@100, MRR@10
//! (reciprocal rank of the first relevant document within the top 10). Only queries with at
//! least one relevant document (score > 0) count.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use basalt_index::Hit;
use serde::Serialize;

use crate::error::{KbError, Result};

/// Relevance grades per query: query id → document id → grade.
pub type Qrels = HashMap<String, HashMap<String, i64>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: String,
    pub text: String,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|error| KbError::io(path, error))
}

/// `queries.jsonl`: one `{"_id", "text"}` per line.
pub fn load_queries(path: &Path) -> Result<Vec<Query>> {
    #[derive(serde::Deserialize)]
    struct Line {
        #[serde(rename = "_id")]
        id: serde_json::Value,
        text: String,
    }
    let mut queries = Vec::new();
    for (number, line) in read(path)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(line).map_err(|error| {
            KbError::Dataset(format!(
                "{} line {}: {error} (expected {{\"_id\", \"text\"}})",
                path.display(),
                number + 1
            ))
        })?;
        let id = match parsed.id {
            serde_json::Value::String(id) => id,
            other => other.to_string(),
        };
        queries.push(Query {
            id,
            text: parsed.text,
        });
    }
    Ok(queries)
}

/// A qrels TSV (or whitespace-separated) file; a header line is skipped.
pub fn load_qrels(path: &Path) -> Result<Qrels> {
    let mut qrels = Qrels::new();
    for (number, line) in read(path)?.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        // BEIR: query, doc, score. TREC: query, 0, doc, score.
        let (query, doc, grade) = match fields.as_slice() {
            [query, doc, grade] => (query, doc, grade),
            [query, _, doc, grade] => (query, doc, grade),
            _ => {
                return Err(KbError::Dataset(format!(
                    "{} line {}: expected `query-id corpus-id score`",
                    path.display(),
                    number + 1
                )));
            }
        };
        let Ok(grade) = grade.parse::<i64>() else {
            if number == 0 {
                continue;
            }
            return Err(KbError::Dataset(format!(
                "{} line {}: score {grade:?} is not an integer",
                path.display(),
                number + 1
            )));
        };
        qrels
            .entry((*query).to_string())
            .or_default()
            .insert((*doc).to_string(), grade);
    }
    Ok(qrels)
}

/// Document ids in order of first appearance among chunk hits (a document ranks by its best
/// chunk), at most `depth`.
pub fn rank_documents(hits: &[Hit], depth: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    hits.iter()
        .filter(|hit| seen.insert(hit.doc_id.as_str()))
        .take(depth)
        .map(|hit| hit.doc_id.clone())
        .collect()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
    /// Queries evaluated (those with a relevant document).
    pub queries: usize,
}

/// Scores one query's ranking.
pub fn score_query(ranking: &[String], grades: &HashMap<String, i64>) -> Metrics {
    let relevant: usize = grades.values().filter(|grade| **grade > 0).count();
    if relevant == 0 {
        return Metrics::default();
    }
    let gain = |doc: &String| grades.get(doc).copied().unwrap_or(0).max(0) as f64;
    let dcg: f64 = ranking
        .iter()
        .take(10)
        .enumerate()
        .map(|(rank, doc)| gain(doc) / (rank as f64 + 2.0).log2())
        .sum();
    let mut ideal: Vec<f64> = grades
        .values()
        .map(|grade| (*grade).max(0) as f64)
        .collect();
    ideal.sort_by(|left, right| right.total_cmp(left));
    let idcg: f64 = ideal
        .iter()
        .take(10)
        .enumerate()
        .map(|(rank, gain)| gain / (rank as f64 + 2.0).log2())
        .sum();
    let found = |depth: usize| {
        ranking
            .iter()
            .take(depth)
            .filter(|doc| gain(doc) > 0.0)
            .count() as f64
    };
    let mrr = ranking
        .iter()
        .take(10)
        .position(|doc| gain(doc) > 0.0)
        .map_or(0.0, |rank| 1.0 / (rank as f64 + 1.0));
    Metrics {
        ndcg_at_10: if idcg > 0.0 { dcg / idcg } else { 0.0 },
        recall_at_10: found(10) / relevant as f64,
        recall_at_100: found(100) / relevant as f64,
        mrr_at_10: mrr,
        queries: 1,
    }
}

/// Mean metrics over every query that has a relevant document; a query with no ranking
/// (not run, or nothing found) scores zero.
pub fn evaluate(rankings: &HashMap<String, Vec<String>>, qrels: &Qrels) -> Metrics {
    let mut total = Metrics::default();
    let empty = Vec::new();
    // In id order, so the sums (and the printed means) are the same on every run.
    let mut queries: Vec<_> = qrels.iter().collect();
    queries.sort_by(|left, right| left.0.cmp(right.0));
    for (query, grades) in queries {
        if !grades.values().any(|grade| *grade > 0) {
            continue;
        }
        let metrics = score_query(rankings.get(query).unwrap_or(&empty), grades);
        total.ndcg_at_10 += metrics.ndcg_at_10;
        total.recall_at_10 += metrics.recall_at_10;
        total.recall_at_100 += metrics.recall_at_100;
        total.mrr_at_10 += metrics.mrr_at_10;
        total.queries += 1;
    }
    if total.queries > 0 {
        let count = total.queries as f64;
        total.ndcg_at_10 /= count;
        total.recall_at_10 /= count;
        total.recall_at_100 /= count;
        total.mrr_at_10 /= count;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grades(pairs: &[(&str, i64)]) -> HashMap<String, i64> {
        pairs
            .iter()
            .map(|(doc, grade)| ((*doc).to_string(), *grade))
            .collect()
    }

    fn ranking(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_string()).collect()
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        // Relevant: a (2), b (1). Ranking: x, a, b.
        let metrics = score_query(
            &ranking(&["x", "a", "b"]),
            &grades(&[("a", 2), ("b", 1), ("z", 0)]),
        );
        let dcg = 2.0 / 3f64.log2() + 1.0 / 4f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2();
        assert!((metrics.ndcg_at_10 - dcg / idcg).abs() < 1e-12);
        assert_eq!(metrics.recall_at_10, 1.0);
        assert_eq!(metrics.mrr_at_10, 0.5);
        let perfect = score_query(&ranking(&["a", "b"]), &grades(&[("a", 2), ("b", 1)]));
        assert!((perfect.ndcg_at_10 - 1.0).abs() < 1e-12);
        let late: Vec<String> = (0..50)
            .map(|i| format!("n{i}"))
            .chain(["a".to_string()])
            .collect();
        let metrics = score_query(&late, &grades(&[("a", 1), ("b", 1)]));
        assert_eq!(
            (
                metrics.recall_at_10,
                metrics.recall_at_100,
                metrics.mrr_at_10
            ),
            (0.0, 0.5, 0.0)
        );
    }

    #[test]
    fn queries_without_rankings_count_as_zero_and_unjudged_ones_are_skipped() {
        let mut qrels = Qrels::new();
        qrels.insert("q1".into(), grades(&[("a", 1)]));
        qrels.insert("q2".into(), grades(&[("b", 1)]));
        qrels.insert("q3".into(), grades(&[("c", 0)]));
        let mut rankings = HashMap::new();
        rankings.insert("q1".to_string(), ranking(&["a"]));
        let metrics = evaluate(&rankings, &qrels);
        assert_eq!(metrics.queries, 2);
        assert!((metrics.ndcg_at_10 - 0.5).abs() < 1e-12);
    }

    #[test]
    fn qrels_and_queries_load_from_beir_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let qrels_path = dir.path().join("qrels.tsv");
        std::fs::write(
            &qrels_path,
            "query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t0\n2 Q0 d3 2\n",
        )
        .expect("writes");
        let qrels = load_qrels(&qrels_path).expect("loads");
        assert_eq!(qrels["1"]["d1"], 1);
        assert_eq!(qrels["2"]["d3"], 2);
        std::fs::write(&qrels_path, "1\td1\tx\n1\td1\tbad\n").expect("writes");
        assert!(load_qrels(&qrels_path).is_err());
        let queries_path = dir.path().join("queries.jsonl");
        std::fs::write(&queries_path, "{\"_id\": 7, \"text\": \"why?\"}\n\n").expect("writes");
        assert_eq!(
            load_queries(&queries_path).expect("loads"),
            [Query {
                id: "7".into(),
                text: "why?".into()
            }]
        );
    }
}
