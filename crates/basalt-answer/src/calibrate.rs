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
//!
//! Off-topic probes only say how low the threshold may go. Over a manual they score so low
//! (0.1–0.3) that the threshold falls to its floor, and a question on the manual's subject
//! that the manual does not answer is then answered with whatever sentence is nearest. So
//! the knowledge base's own topics are asked too: "What is {title}?" for its documents'
//! titles and the section headings retrieval finds for them (five words at most). Those it can answer, and the
//! threshold is raised to the score [`TOPIC_QUANTILE`] of them stay under — the level of a
//! question squarely about one of its topics.

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

/// The share of the knowledge base's own topic questions the threshold may leave below it.
pub const TOPIC_QUANTILE: f32 = 0.1;

/// Most topic questions asked (spread evenly over the sorted titles and headings).
const MAX_TOPICS: usize = 40;

/// Longest title or heading asked about, in words.
const MAX_TOPIC_WORDS: usize = 5;

/// Fewer topic questions than this say nothing about the knowledge base: they are not used.
const MIN_TOPICS: usize = 5;

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
    /// The knowledge base's own topics asked as questions, and the relevance [`TOPIC_QUANTILE`]
    /// of them score under (`None` when there were too few topics to ask).
    pub topics: Vec<ProbeScore>,
    pub topic_floor: Option<f32>,
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
    let mut topics = Vec::new();
    for question in topic_questions(kb, embedder)? {
        let score = relevance(kb, embedder, &question, &options)?.unwrap_or(0.0);
        topics.push(ProbeScore {
            question,
            relevance: score,
        });
    }
    topics.sort_by(|left, right| left.relevance.total_cmp(&right.relevance));
    Ok(from_scores(scores, topics))
}

/// "What is {topic}?" for the knowledge base's document titles and the section headings a
/// search for each title finds, sorted, at most [`MAX_TOPICS`] spread evenly over them.
fn topic_questions(kb: &KnowledgeBase, embedder: &dyn Embedder) -> Result<Vec<String>> {
    let mut topics = std::collections::BTreeSet::new();
    // A topic is a short name ("Refunds", "Parental leave"), not a paper's title: a long
    // title asked back scores like a quotation of the text.
    let fits = |text: &str| {
        (2..=60).contains(&text.chars().count())
            && text.split_whitespace().count() <= MAX_TOPIC_WORDS
    };
    let titles: Vec<String> = kb
        .documents()?
        .into_iter()
        .filter_map(|document| document.title)
        .map(|title| topic_name(&title))
        .filter(|title| fits(title))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let search = basalt_kb::SearchOptions {
        k: 5,
        ..basalt_kb::SearchOptions::default()
    };
    for title in spread(&titles, MAX_TOPICS) {
        for hit in kb.search(Some(embedder), title, &search)?.hits {
            if let Some(heading) = hit.heading_path.last() {
                let heading = topic_name(heading);
                if fits(&heading) {
                    topics.insert(heading);
                }
            }
        }
        topics.insert(title.clone());
    }
    let topics: Vec<String> = topics.into_iter().collect();
    Ok(spread(&topics, MAX_TOPICS)
        .into_iter()
        .map(|topic| format!("What is {topic}?"))
        .collect())
}

/// The name a title or heading gives its topic: without a site's name after a dash or bar
/// ("Files — Debian Policy Manual v4.6.2.0", "Refunds | Acme Help"), a section number
/// ("9.2.2. UID and GID classes") or Markdown marks, whitespace collapsed.
fn topic_name(text: &str) -> String {
    let own = [" — ", " – ", " | ", " - "]
        .iter()
        .filter_map(|separator| text.find(separator))
        .min()
        .map_or(text, |end| &text[..end]);
    let words: Vec<&str> = own
        .split_whitespace()
        .map(|word| word.trim_matches(|c: char| "#*`_".contains(c)))
        .filter(|word| !word.is_empty())
        .collect();
    let numbered = words.first().is_some_and(|first| {
        first.starts_with(|c: char| c.is_ascii_digit())
            && first.contains('.')
            && first.chars().all(|c| c.is_ascii_digit() || c == '.')
    });
    words[usize::from(numbered)..].join(" ")
}

/// At most `most` of `items`, spread evenly over them.
fn spread<T>(items: &[T], most: usize) -> Vec<&T> {
    if items.len() <= most {
        return items.iter().collect();
    }
    (0..most)
        .map(|index| &items[index * items.len() / most])
        .collect()
}

/// The threshold from the off-topic probes' scores (highest first) and the topic questions'
/// (lowest first): a margin above the third-highest probe, raised to the topics' quantile,
/// within the bounds.
fn from_scores(scores: Vec<ProbeScore>, topics: Vec<ProbeScore>) -> Calibration {
    let at = |index: usize| scores.get(index).map_or(0.0, |score| score.relevance);
    let (highest, third_highest) = (at(0), at(2));
    let median = at(scores.len() / 2);
    let topic_floor = (topics.len() >= MIN_TOPICS).then(|| {
        let index = ((topics.len() as f32 * TOPIC_QUANTILE) as usize).min(topics.len() - 1);
        topics[index].relevance
    });
    let threshold = (third_highest + MARGIN).max(topic_floor.unwrap_or(f32::MIN));
    Calibration {
        threshold: threshold.clamp(MIN_THRESHOLD, MAX_THRESHOLD),
        probes: scores.len(),
        highest,
        third_highest,
        median,
        scores,
        topics,
        topic_floor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_drop_site_names_section_numbers_and_marks() {
        assert_eq!(
            topic_name("10. Files — Debian Policy Manual v4.6.2.0"),
            "Files"
        );
        assert_eq!(
            topic_name("9.2.2. UID and GID classes"),
            "UID and GID classes"
        );
        assert_eq!(topic_name("Refunds | Acme  Help"), "Refunds");
        assert_eq!(topic_name("## **Parental leave**"), "Parental leave");
        assert_eq!(topic_name("2024 goals"), "2024 goals");
        assert_eq!(topic_name("Follow-up rules"), "Follow-up rules");
    }

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
        let none = || scores(&[]);
        let calibration = from_scores(scores(&[0.92, 0.9, 0.41, 0.3, 0.2, 0.1]), none());
        assert!((calibration.threshold - 0.46).abs() < 1e-6);
        assert_eq!(calibration.median, 0.3);
        let threshold = |probes: &[f32]| from_scores(scores(probes), none()).threshold;
        assert!((threshold(&[0.2, 0.1, 0.1]) - MIN_THRESHOLD).abs() < 1e-6);
        assert!((threshold(&[0.9, 0.8, 0.8]) - MAX_THRESHOLD).abs() < 1e-6);
        assert!((threshold(&[]) - MIN_THRESHOLD).abs() < 1e-6);
    }

    #[test]
    fn the_knowledge_bases_own_topics_raise_the_threshold_to_their_low_quantile() {
        let probes = || scores(&[0.3, 0.25, 0.2, 0.1]);
        // Ten topics, lowest first: the 10% quantile is the second lowest.
        let topics: Vec<f32> = (0..10).map(|i| 0.4 + 0.02 * i as f32).collect();
        let calibration = from_scores(probes(), scores(&topics));
        assert!((calibration.topic_floor.expect("topics") - 0.42).abs() < 1e-6);
        assert!((calibration.threshold - 0.42).abs() < 1e-6);
        // Too few topics: the probes alone decide.
        let calibration = from_scores(probes(), scores(&[0.6, 0.7]));
        assert_eq!(calibration.topic_floor, None);
        assert!((calibration.threshold - MIN_THRESHOLD).abs() < 1e-6);
        // Topics scoring under the probes do not lower it.
        let low: Vec<f32> = (0..10).map(|_| 0.1).collect();
        let calibration = from_scores(scores(&[0.6, 0.55, 0.5]), scores(&low));
        assert!((calibration.threshold - 0.55).abs() < 1e-6);
        assert_eq!(spread(&[1, 2, 3, 4], 2), [&1, &3]);
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
