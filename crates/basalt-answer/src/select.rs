//! The answer-sentence selector: which sentence of the retrieved passages answers the question.
//!
//! One MiniLM cosine scores a sentence alone, out of its context, and prefers a sentence that
//! names the question's subject over the one that answers it ("An API key acts as one
//! principal." over "Only a salted SHA-256 of the secret is stored."; docs/answers.md). The
//! selector scores each candidate with a
//! linear model over [`FEATURES`]: the cosine, the cosine of its neighbours, where its passage
//! ranked, how many of the question's words the sentence, its neighbours and its passage's
//! title and headings hold, whether it is prose or a fragment, and whether it holds a number
//! when the question asks for one. The weights are fitted by [`fit`] (a listwise softmax over
//! each question's candidates, by gradient descent) with `basalt eval selector` on data the
//! team may train on (ClapNQ's dev questions and SciFact's training rationales, at even
//! positions); the built-in ones ([`Selector::builtin`]) and how they were made are in
//! docs/answers.md.

use std::collections::HashSet;

use crate::citations::Reference;
pub(crate) use crate::quantity::states_number;
use crate::text::{content_words, prose_words};

/// The features of a candidate sentence, in [`Selector`] weight order.
pub const FEATURES: [&str; 15] = [
    "cosine",
    "cosine_gap",
    "passage_rank",
    "passage_best_cosine",
    "neighbour_cosine",
    "question_words",
    "question_words_context",
    "question_words_heading",
    "fragment",
    "first_in_passage",
    "number_asked_and_held",
    "number_asked_not_held",
    "question_words_rare",
    "question_bigrams",
    "cosine_rank",
];

/// How many features a candidate has.
pub const DIMENSIONS: usize = FEATURES.len();

/// A sentence of a retrieved passage, as the selector sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Index of its passage in retrieval order.
    pub chunk: usize,
    /// Its position among its passage's sentences.
    pub position: usize,
    pub text: String,
    /// Cosine of its embedding with the question's.
    pub cosine: f32,
}

/// The features of every candidate, in the order given. `chunks` are the passages the
/// candidates come from, in retrieval order.
pub fn features(
    question: &str,
    candidates: &[Candidate],
    chunks: &[Reference],
) -> Vec<[f32; DIMENSIONS]> {
    let asked: HashSet<String> = content_words(question).into_iter().collect();
    let wants_number = asks_for_number(question);
    let best = candidates
        .iter()
        .map(|candidate| candidate.cosine)
        .fold(f32::MIN, f32::max);
    // Each candidate's content words outside inline code, found once.
    let sets: Vec<HashSet<String>> = candidates
        .iter()
        .map(|candidate| prose_words(&candidate.text).into_iter().collect())
        .collect();
    // The share of the question's words that any of `held` holds.
    let coverage = |held: &[&HashSet<String>]| -> f32 {
        if asked.is_empty() {
            return 0.0;
        }
        let found = asked
            .iter()
            .filter(|word| held.iter().any(|set| set.contains(*word)))
            .count();
        found as f32 / asked.len() as f32
    };
    // A question word most candidates hold (the subject) says less about which one answers
    // than a word few hold: weights from the candidates' own document frequencies.
    let rarity: Vec<(&String, f32)> = asked
        .iter()
        .map(|word| {
            let holding = sets.iter().filter(|set| set.contains(word)).count();
            let weight = (1.0 + candidates.len() as f32 / (1.0 + holding as f32)).ln();
            (word, weight)
        })
        .collect();
    let rarity_total: f32 = rarity.iter().map(|(_, weight)| weight).sum();
    let question_pairs = bigrams(&content_words(question));
    let mut by_cosine: Vec<usize> = (0..candidates.len()).collect();
    by_cosine.sort_by(|&a, &b| candidates[b].cosine.total_cmp(&candidates[a].cosine));
    let mut cosine_rank = vec![0; candidates.len()];
    for (rank, index) in by_cosine.into_iter().enumerate() {
        cosine_rank[index] = rank;
    }
    let at = |chunk: usize, position: usize| {
        candidates
            .iter()
            .position(|other| other.chunk == chunk && other.position == position)
    };
    candidates
        .iter()
        .enumerate()
        .map(|(index, candidate)| {
            let passage_best = candidates
                .iter()
                .filter(|other| other.chunk == candidate.chunk)
                .map(|other| other.cosine)
                .fold(f32::MIN, f32::max);
            let neighbours: Vec<usize> = [
                candidate.position.checked_sub(1),
                Some(candidate.position + 1),
            ]
            .into_iter()
            .flatten()
            .filter_map(|position| at(candidate.chunk, position))
            .collect();
            let neighbour_cosine = if neighbours.is_empty() {
                candidate.cosine
            } else {
                neighbours
                    .iter()
                    .map(|&n| candidates[n].cosine)
                    .sum::<f32>()
                    / neighbours.len() as f32
            };
            let context: Vec<&HashSet<String>> = neighbours
                .iter()
                .map(|&n| &sets[n])
                .chain([&sets[index]])
                .collect();
            let heading: HashSet<String> =
                chunks
                    .get(candidate.chunk)
                    .map_or_else(HashSet::new, |chunk| {
                        let mut parts: Vec<&str> = chunk.title.iter().map(String::as_str).collect();
                        parts.extend(chunk.heading_path.iter().map(String::as_str));
                        content_words(&parts.join(" ")).into_iter().collect()
                    });
            let holds_number = states_number(&candidate.text, question);
            let rare = if rarity_total > 0.0 {
                rarity
                    .iter()
                    .filter(|(word, _)| sets[index].contains(*word))
                    .map(|(_, weight)| weight)
                    .sum::<f32>()
                    / rarity_total
            } else {
                0.0
            };
            let pairs = if question_pairs.is_empty() {
                0.0
            } else {
                let own = bigrams(&prose_words(&candidate.text));
                question_pairs.intersection(&own).count() as f32 / question_pairs.len() as f32
            };
            [
                candidate.cosine,
                candidate.cosine - best,
                1.0 / (1.0 + candidate.chunk as f32),
                passage_best,
                neighbour_cosine,
                coverage(&[&sets[index]]),
                coverage(&context),
                coverage(&[&heading]),
                f32::from(u8::from(crate::pipeline::is_fragment(&candidate.text))),
                f32::from(u8::from(candidate.position == 0)),
                f32::from(u8::from(wants_number && holds_number)),
                f32::from(u8::from(wants_number && !holds_number)),
                rare,
                pairs,
                1.0 / (1.0 + cosine_rank[index] as f32),
            ]
        })
        .collect()
}

/// Adjacent pairs of `words`, as "first second".
fn bigrams(words: &[String]) -> HashSet<String> {
    words
        .windows(2)
        .map(|pair| format!("{} {}", pair[0], pair[1]))
        .collect()
}

/// Whether a question asks for a number, a quantity, a frequency, a date or a time: "How many
/// days …", "How often …", "Until what date …", or "When is …" (a "when" that opens the
/// question or a clause of it, not the conditional "… get tracked when a customer sees …").
pub(crate) fn asks_for_number(question: &str) -> bool {
    let words = question_words(question);
    asks_for_quantity(question)
        || words.iter().enumerate().any(|(index, word)| {
            const AUXILIARIES: [&str; 12] = [
                "is", "are", "was", "were", "do", "does", "did", "will", "can", "should", "must",
                "would",
            ];
            word == "when"
                && (index == 0
                    || words
                        .get(index + 1)
                        .is_some_and(|next| AUXILIARIES.contains(&next.as_str())))
        })
}

/// Whether a question asks for a quantity, a frequency or a date in words that admit nothing
/// else: "How many …", "How long …", "What year …" ([`crate::quantity::asked`]).
pub(crate) fn asks_for_quantity(question: &str) -> bool {
    crate::quantity::asked(question).is_some()
}

/// A question's words, lower-cased, apostrophes kept ("what's").
fn question_words(question: &str) -> Vec<String> {
    question
        .split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '\u{2019}')
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A linear scorer over [`FEATURES`]: higher is more likely the sentence that answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selector {
    pub weights: [f32; DIMENSIONS],
}

impl Selector {
    /// The weights Basalt ships: fitted with `basalt eval selector` on the ClapNQ dev
    /// questions and SciFact training claims at even positions (the odd ones held out); see
    /// docs/answers.md for the command and the held-out figures.
    pub const fn builtin() -> Self {
        Self {
            weights: BUILTIN_WEIGHTS,
        }
    }

    /// Cosine alone: the ranking before the selector, kept as the baseline it is measured
    /// against.
    pub const fn cosine() -> Self {
        let mut weights = [0.0; DIMENSIONS];
        weights[0] = 1.0;
        Self { weights }
    }

    pub fn score(&self, features: &[f32; DIMENSIONS]) -> f32 {
        self.weights
            .iter()
            .zip(features)
            .map(|(weight, value)| weight * value)
            .sum()
    }
}

/// `basalt eval selector --dataset clapnq-dev/answerable.jsonl --dataset
/// clapnq-dev/unanswerable.jsonl --scifact scifact-train`: fitted on the even positions (the
/// odd ones are held out), in [`FEATURES`] order.
const BUILTIN_WEIGHTS: [f32; DIMENSIONS] = [
    2.3784, 0.7812, 1.0925, 0.5658, 1.0736, 0.3348, -0.4828, 2.6231, -0.7358, -0.5322, 0.1297,
    -0.0787, 4.2098, -1.0755, -0.1601,
];

/// One question's candidates for fitting: their features and how good an answer each is
/// (ROUGE-L against the gold answer, or 1 for an annotated evidence sentence).
#[derive(Debug, Clone)]
pub struct Group {
    pub features: Vec<[f32; DIMENSIONS]>,
    pub gains: Vec<f32>,
}

impl Group {
    /// The candidates the model should learn to pick: those within 0.05 of the best gain,
    /// weighted equally; `None` when no candidate is any good (nothing to learn from).
    fn targets(&self) -> Option<Vec<f32>> {
        let best = self.gains.iter().copied().fold(0.0_f32, f32::max);
        if best <= 0.0 {
            return None;
        }
        let chosen: Vec<f32> = self
            .gains
            .iter()
            .map(|gain| f32::from(u8::from(*gain > 0.0 && *gain >= best - 0.05)))
            .collect();
        let total: f32 = chosen.iter().sum();
        Some(chosen.into_iter().map(|c| c / total).collect())
    }
}

/// Fits a [`Selector`] to `groups`: a listwise softmax cross-entropy over each question's
/// candidates against [`Group::targets`], with an L2 penalty `l2`, by full-batch gradient
/// descent with Adam on standardized features. Deterministic.
pub fn fit(groups: &[Group], l2: f32, steps: usize) -> Selector {
    let usable: Vec<(&Group, Vec<f32>)> = groups
        .iter()
        .filter(|group| group.features.len() > 1)
        .filter_map(|group| group.targets().map(|targets| (group, targets)))
        .collect();
    // Standardize so one step size suits every feature.
    let rows: Vec<&[f32; DIMENSIONS]> = usable
        .iter()
        .flat_map(|(group, _)| group.features.iter())
        .collect();
    let count = rows.len().max(1) as f32;
    let mut mean = [0.0_f32; DIMENSIONS];
    for row in &rows {
        for (m, value) in mean.iter_mut().zip(row.iter()) {
            *m += value / count;
        }
    }
    let mut scale = [0.0_f32; DIMENSIONS];
    for row in &rows {
        for ((s, value), m) in scale.iter_mut().zip(row.iter()).zip(&mean) {
            *s += (value - m).powi(2) / count;
        }
    }
    for s in &mut scale {
        *s = if *s > 1e-12 { s.sqrt() } else { 1.0 };
    }
    let standard = |row: &[f32; DIMENSIONS]| {
        let mut out = [0.0_f32; DIMENSIONS];
        for (j, value) in out.iter_mut().enumerate() {
            *value = (row[j] - mean[j]) / scale[j];
        }
        out
    };
    let data: Vec<(Vec<[f32; DIMENSIONS]>, &Vec<f32>)> = usable
        .iter()
        .map(|(group, targets)| (group.features.iter().map(standard).collect(), targets))
        .collect();
    let mut weights = [0.0_f32; DIMENSIONS];
    weights[0] = 1.0;
    let (mut first, mut second) = ([0.0_f32; DIMENSIONS], [0.0_f32; DIMENSIONS]);
    let (rate, beta1, beta2) = (0.05_f32, 0.9_f32, 0.999_f32);
    let questions = data.len().max(1) as f32;
    for step in 1..=steps {
        let mut gradient = [0.0_f32; DIMENSIONS];
        for (rows, targets) in &data {
            let scores: Vec<f32> = rows
                .iter()
                .map(|row| weights.iter().zip(row).map(|(w, x)| w * x).sum())
                .collect();
            let top = scores.iter().copied().fold(f32::MIN, f32::max);
            let exps: Vec<f32> = scores.iter().map(|s| (s - top).exp()).collect();
            let total: f32 = exps.iter().sum();
            for ((row, e), target) in rows.iter().zip(&exps).zip(targets.iter()) {
                let difference = e / total - target;
                for (g, x) in gradient.iter_mut().zip(row) {
                    *g += difference * x / questions;
                }
            }
        }
        for j in 0..DIMENSIONS {
            let g = gradient[j] + l2 * weights[j];
            first[j] = beta1 * first[j] + (1.0 - beta1) * g;
            second[j] = beta2 * second[j] + (1.0 - beta2) * g * g;
            let corrected_first = first[j] / (1.0 - beta1.powi(step as i32));
            let corrected_second = second[j] / (1.0 - beta2.powi(step as i32));
            weights[j] -= rate * corrected_first / (corrected_second.sqrt() + 1e-8);
        }
    }
    // Back to raw features: the constant the means add is the same for every candidate of a
    // question, so it changes no ranking and is dropped.
    let mut raw = [0.0_f32; DIMENSIONS];
    for j in 0..DIMENSIONS {
        raw[j] = weights[j] / scale[j];
    }
    Selector { weights: raw }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(chunk: usize, position: usize, text: &str, cosine: f32) -> Candidate {
        Candidate {
            chunk,
            position,
            text: text.into(),
            cosine,
        }
    }

    #[test]
    fn features_see_context_words_and_numbers() {
        let candidates = [
            candidate(0, 0, "API keys are described here in this section.", 0.6),
            candidate(
                0,
                1,
                "Only a salted SHA-256 of the secret is stored, 32 bytes.",
                0.4,
            ),
        ];
        let rows = features("How many bytes of a key are stored?", &candidates, &[]);
        assert_eq!(rows.len(), 2);
        let index = |name: &str| FEATURES.iter().position(|f| *f == name).expect("a feature");
        assert_eq!(rows[1][index("number_asked_and_held")], 1.0);
        assert_eq!(rows[0][index("number_asked_not_held")], 1.0);
        assert!((rows[1][index("cosine_gap")] + 0.2).abs() < 1e-6);
        assert!((rows[1][index("neighbour_cosine")] - 0.6).abs() < 1e-6);
        assert!(rows[1][index("question_words")] > rows[0][index("question_words")]);
        assert_eq!(rows[0][index("first_in_passage")], 1.0);
    }

    #[test]
    fn questions_asking_for_numbers_and_sentences_stating_them() {
        for question in [
            "How often am I required to answer the daily question?",
            "Until what date do summer hours last?",
            "When is open enrollment?",
            "I'm leaving. When do I get my last paycheck?",
            "How many days is the paid sabbatical?",
        ] {
            assert!(asks_for_number(question), "{question}");
        }
        for question in [
            "Where do exceptions get tracked when a customer sees an error?",
            "Who should I tag when I log a bug?",
            "What daycare does the company use?",
        ] {
            assert!(!asks_for_number(question), "{question}");
        }
        // A "when" question may be answered by a condition: it asks for a number only as a
        // feature, never as a reason to decline.
        assert!(!asks_for_quantity("When do you need to blind bake pastry?"));
        assert!(asks_for_quantity("How long is the cooldown?"));

        let question = "How often must I answer the daily question?";
        assert!(states_number(
            "You must answer it at least twice a week.",
            question
        ));
        assert!(states_number("It pays $200/month.", question));
        assert!(states_number("Reviews happen in March.", question));
        // Words the question holds are no answer to it.
        assert!(!states_number(
            "First, there is the daily question of what you did.",
            question
        ));
        assert!(!states_number(
            "After 8 months you may ask again.",
            "What happens after 8 months?"
        ));
    }

    #[test]
    fn fitting_learns_which_feature_marks_the_answer() {
        // The answer is never the most similar sentence but always holds more question words:
        // cosine alone picks wrong, the fitted selector picks right.
        let mut groups = Vec::new();
        for index in 0..40 {
            let noise = (index % 7) as f32 * 0.01;
            let mut answer = [0.0; DIMENSIONS];
            answer[0] = 0.5 + noise;
            answer[5] = 0.8;
            let mut distractor = [0.0; DIMENSIONS];
            distractor[0] = 0.6 + noise;
            distractor[5] = 0.2 + noise;
            groups.push(Group {
                features: vec![distractor, answer],
                gains: vec![0.1, 0.9],
            });
        }
        let fitted = fit(&groups, 1e-3, 300);
        for group in &groups {
            let cosine = Selector::cosine();
            assert!(cosine.score(&group.features[0]) > cosine.score(&group.features[1]));
            assert!(fitted.score(&group.features[1]) > fitted.score(&group.features[0]));
        }
    }

    #[test]
    fn a_question_with_no_good_candidate_teaches_nothing() {
        let group = Group {
            features: vec![[0.0; DIMENSIONS]; 3],
            gains: vec![0.0; 3],
        };
        assert!(group.targets().is_none());
        assert_eq!(fit(&[group], 0.0, 10), Selector::cosine());
    }
}
