//! Per-KB calibration of the relevance threshold below which an answer is "not found".
//!
//! The default threshold was calibrated on labelled ClapNQ questions (Wikipedia prose). A
//! knowledge base of another kind (manuals, tables, code) scores every question differently:
//! on Basalt's own docs, questions the docs answer score around 0.5, under the ClapNQ
//! threshold of 0.59, while general-knowledge questions score around 0.1–0.3. With no labelled
//! questions for a KB, the threshold is set from questions it certainly cannot answer: a bank
//! of general-knowledge probes (cooking, sport, geography, …). The threshold sits a margin
//! above the third-highest of their scores, so that an off-topic question stays "not found",
//! and is never lowered below [`MIN_THRESHOLD`] or raised above [`MAX_THRESHOLD`].
//! On a KB that does cover general knowledge the probes score high and the threshold rises
//! with them, which is the cautious direction.

use basalt_kb::KnowledgeBase;
use basalt_model::Embedder;
use serde::Serialize;

use crate::error::Result;
use crate::pipeline::{AnswerOptions, relevance};

/// The built-in off-topic probes, one question per line.
pub const PROBES: &str = include_str!("probes.txt");

/// Distance kept above the probes' high-water mark: their third-highest score, so that a probe
/// or two that happen to be in the documents do not decide alone.
pub const MARGIN: f32 = 0.05;

/// The least threshold calibration sets: below it, a question shares little more than
/// its function words with the best sentence.
pub const MIN_THRESHOLD: f32 = 0.3;

/// The most threshold calibration sets: the ClapNQ-calibrated default is 0.59.
pub const MAX_THRESHOLD: f32 = 0.7;

/// The scores of the probes and the threshold they give.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// The relevance threshold to store as the KB's `answer.min_relevance`.
    pub threshold: f32,
    pub probes: usize,
    /// Highest and third-highest probe relevance.
    pub highest: f32,
    pub third_highest: f32,
    pub median: f32,
    /// Every probe with its relevance (0 when retrieval found nothing), highest first.
    pub scores: Vec<ProbeScore>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeScore {
    pub question: String,
    pub relevance: f32,
}

/// The built-in probes as a list.
pub fn default_probes() -> Vec<String> {
    PROBES
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Scores `probes` (questions `kb` cannot answer) against `kb` and derives its threshold.
pub fn calibrate(
    kb: &KnowledgeBase,
    embedder: &dyn Embedder,
    probes: &[String],
) -> Result<Calibration> {
    let options = AnswerOptions::default();
    let mut scores = Vec::with_capacity(probes.len());
    for question in probes {
        let score = relevance(kb, embedder, question, &options)?.unwrap_or(0.0);
        scores.push(ProbeScore {
            question: question.clone(),
            relevance: score,
        });
    }
    scores.sort_by(|left, right| right.relevance.total_cmp(&left.relevance));
    Ok(from_scores(scores))
}

fn from_scores(scores: Vec<ProbeScore>) -> Calibration {
    let at = |index: usize| scores.get(index).map_or(0.0, |score| score.relevance);
    let (highest, third_highest) = (at(0), at(2));
    let median = at(scores.len() / 2);
    Calibration {
        threshold: (third_highest + MARGIN).clamp(MIN_THRESHOLD, MAX_THRESHOLD),
        probes: scores.len(),
        highest,
        third_highest,
        median,
        scores,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(values: &[f32]) -> Vec<ProbeScore> {
        values
            .iter()
            .map(|&relevance| ProbeScore {
                question: String::new(),
                relevance,
            })
            .collect()
    }

    #[test]
    fn threshold_is_a_margin_above_the_third_highest_probe_within_bounds() {
        let calibration = from_scores(scores(&[0.92, 0.9, 0.41, 0.3, 0.2, 0.1]));
        assert!((calibration.threshold - 0.46).abs() < 1e-6);
        assert_eq!(calibration.median, 0.3);
        assert!((from_scores(scores(&[0.2, 0.1, 0.1])).threshold - MIN_THRESHOLD).abs() < 1e-6);
        assert!((from_scores(scores(&[0.9, 0.8, 0.8])).threshold - MAX_THRESHOLD).abs() < 1e-6);
        assert!((from_scores(scores(&[])).threshold - MIN_THRESHOLD).abs() < 1e-6);
    }

    #[test]
    fn the_built_in_probes_are_distinct_questions() {
        let probes = default_probes();
        assert!(probes.len() >= 40);
        let distinct: std::collections::HashSet<_> = probes.iter().collect();
        assert_eq!(distinct.len(), probes.len());
        assert!(probes.iter().all(|probe| probe.ends_with('?')));
    }
}
