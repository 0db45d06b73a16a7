//! Lexical answer metrics, written to agree with the reference implementations:
//! - ROUGE-1/2/L F-measure as Google's `rouge-score` computes them (its default tokenizer:
//!   lower case, runs of anything but `a-z0-9` are separators, no stemming); with several
//!   references, the best F-measure;
//! - corpus BLEU as sacreBLEU computes it by default (the `13a` tokenizer, 4-grams,
//!   `exp` smoothing, the closest reference length for the brevity penalty);
//! - token F1 and exact match as the SQuAD script does (lower case, punctuation and articles
//!   removed), best over the references.
//!
//! The agreement is checked against the Python packages by a test on real answer/reference
//! pairs (`tests/reference_python.rs`).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

/// Precision, recall and F-measure of one comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f: f64,
}

impl Prf {
    fn from_counts(overlap: usize, predicted: usize, reference: usize) -> Prf {
        let precision = overlap as f64 / predicted.max(1) as f64;
        let recall = overlap as f64 / reference.max(1) as f64;
        let f = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Prf {
            precision,
            recall,
            f,
        }
    }
}

/// `rouge-score`'s default tokenization.
pub fn rouge_tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .collect()
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if n > 0 && tokens.len() >= n {
        for window in tokens.windows(n) {
            *counts.entry(window).or_default() += 1;
        }
    }
    counts
}

/// ROUGE-N of `prediction` against one `reference`.
pub fn rouge_n(prediction: &str, reference: &str, n: usize) -> Prf {
    let predicted = rouge_tokens(prediction);
    let target = rouge_tokens(reference);
    let predicted_counts = ngram_counts(&predicted, n);
    let target_counts = ngram_counts(&target, n);
    let overlap: usize = target_counts
        .iter()
        .map(|(gram, count)| (*count).min(predicted_counts.get(gram).copied().unwrap_or(0)))
        .sum();
    Prf::from_counts(
        overlap,
        predicted_counts.values().sum(),
        target_counts.values().sum(),
    )
}

/// ROUGE-L (longest common subsequence) of `prediction` against one `reference`.
pub fn rouge_l(prediction: &str, reference: &str) -> Prf {
    let predicted = rouge_tokens(prediction);
    let target = rouge_tokens(reference);
    if predicted.is_empty() || target.is_empty() {
        return Prf::default();
    }
    let mut previous = vec![0usize; predicted.len() + 1];
    let mut current = vec![0usize; predicted.len() + 1];
    for reference_token in &target {
        for (j, predicted_token) in predicted.iter().enumerate() {
            current[j + 1] = if reference_token == predicted_token {
                previous[j] + 1
            } else {
                current[j].max(previous[j + 1])
            };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    let lcs = previous[predicted.len()];
    Prf::from_counts(lcs, predicted.len(), target.len())
}

/// ROUGE-1, ROUGE-2 and ROUGE-L F-measures of one answer, each the best over `references`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rouge {
    pub rouge1: f64,
    pub rouge2: f64,
    pub rouge_l: f64,
}

pub fn rouge(prediction: &str, references: &[String]) -> Rouge {
    let best = |score: &dyn Fn(&str) -> f64| {
        references
            .iter()
            .map(|reference| score(reference))
            .fold(0.0, f64::max)
    };
    Rouge {
        rouge1: best(&|reference| rouge_n(prediction, reference, 1).f),
        rouge2: best(&|reference| rouge_n(prediction, reference, 2).f),
        rouge_l: best(&|reference| rouge_l(prediction, reference).f),
    }
}

/// sacreBLEU's `13a` tokenizer (the one of mteval-v13a.pl).
pub fn tokenize_13a(text: &str) -> String {
    static RULES: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        [
            (r"([\{-~\[-` -&\(-\+:-@/])", " $1 "),
            (r"([^0-9])([\.,])", "$1 $2 "),
            (r"([\.,])([^0-9])", " $1 $2"),
            (r"([0-9])(-)", "$1 $2 "),
        ]
        .into_iter()
        .map(|(pattern, replacement)| {
            (
                Regex::new(pattern).expect("the 13a patterns compile"),
                replacement,
            )
        })
        .collect()
    });
    let mut line = text
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    for (pattern, replacement) in rules {
        line = pattern.replace_all(&line, *replacement).into_owned();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Corpus-level BLEU statistics, summed over sentences.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BleuStats {
    pub correct: [usize; 4],
    pub total: [usize; 4],
    pub hypothesis_length: usize,
    pub reference_length: usize,
}

impl BleuStats {
    /// The statistics of one hypothesis against its references (at least one).
    pub fn of(hypothesis: &str, references: &[String]) -> BleuStats {
        let tokens: Vec<String> = tokenize_13a(hypothesis)
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        let reference_tokens: Vec<Vec<String>> = references
            .iter()
            .map(|reference| {
                tokenize_13a(reference)
                    .split(' ')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        // The closest reference length; on a tie, the shorter.
        let reference_length = reference_tokens
            .iter()
            .map(Vec::len)
            .min_by_key(|&length| (length.abs_diff(tokens.len()), length))
            .unwrap_or(0);
        let mut stats = BleuStats {
            hypothesis_length: tokens.len(),
            reference_length,
            ..BleuStats::default()
        };
        for n in 1..=4 {
            let hypothesis_counts = ngram_counts(&tokens, n);
            let mut most: HashMap<&[String], usize> = HashMap::new();
            for reference in &reference_tokens {
                for (gram, count) in ngram_counts(reference, n) {
                    let entry = most.entry(gram).or_default();
                    *entry = (*entry).max(count);
                }
            }
            stats.total[n - 1] = tokens.len().saturating_sub(n - 1);
            stats.correct[n - 1] = hypothesis_counts
                .iter()
                .map(|(gram, count)| (*count).min(most.get(gram).copied().unwrap_or(0)))
                .sum();
        }
        stats
    }

    pub fn add(&mut self, other: &BleuStats) {
        for n in 0..4 {
            self.correct[n] += other.correct[n];
            self.total[n] += other.total[n];
        }
        self.hypothesis_length += other.hypothesis_length;
        self.reference_length += other.reference_length;
    }

    /// BLEU on sacreBLEU's 0–100 scale, with its default `exp` smoothing.
    pub fn score(&self) -> f64 {
        let mut precisions = [0.0f64; 4];
        let mut smooth = 1.0;
        for ((precision, &correct), &total) in
            precisions.iter_mut().zip(&self.correct).zip(&self.total)
        {
            if total == 0 {
                break;
            }
            *precision = if correct == 0 {
                smooth *= 2.0;
                100.0 / (smooth * total as f64)
            } else {
                100.0 * correct as f64 / total as f64
            };
        }
        let brevity = if self.hypothesis_length < self.reference_length {
            if self.hypothesis_length == 0 {
                0.0
            } else {
                (1.0 - self.reference_length as f64 / self.hypothesis_length as f64).exp()
            }
        } else {
            1.0
        };
        let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
        brevity * (precisions.iter().map(|&p| log(p)).sum::<f64>() / 4.0).exp()
    }
}

/// Corpus BLEU (0–100) of `hypotheses`, each with its references.
pub fn corpus_bleu(pairs: &[(String, Vec<String>)]) -> f64 {
    let mut total = BleuStats::default();
    for (hypothesis, references) in pairs {
        total.add(&BleuStats::of(hypothesis, references));
    }
    total.score()
}

/// The SQuAD normalization: lower case, punctuation and the articles a/an/the removed,
/// whitespace collapsed.
pub fn squad_tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let without_punctuation: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    without_punctuation
        .split_whitespace()
        .filter(|word| !matches!(*word, "a" | "an" | "the"))
        .map(str::to_owned)
        .collect()
}

/// Token F1, best over `references`.
pub fn token_f1(prediction: &str, references: &[String]) -> f64 {
    let predicted = squad_tokens(prediction);
    references
        .iter()
        .map(|reference| {
            let target = squad_tokens(reference);
            if predicted.is_empty() || target.is_empty() {
                return f64::from(u8::from(predicted == target));
            }
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for token in &target {
                *counts.entry(token).or_default() += 1;
            }
            let mut overlap = 0;
            for token in &predicted {
                if let Some(count) = counts.get_mut(token.as_str())
                    && *count > 0
                {
                    *count -= 1;
                    overlap += 1;
                }
            }
            Prf::from_counts(overlap, predicted.len(), target.len()).f
        })
        .fold(0.0, f64::max)
}

/// Exact match after SQuAD normalization, against any reference.
pub fn exact_match(prediction: &str, references: &[String]) -> bool {
    let predicted = squad_tokens(prediction);
    references
        .iter()
        .any(|reference| squad_tokens(reference) == predicted)
}

/// The numbers and names of an answer, as an outside check sees them — written apart from the
/// answer pipeline's own check, so the pipeline does not grade itself: every run of digits
/// (with its `,` or `.` separators, trailing `%` dropped) and every capitalised word that does
/// not open a sentence. A list's enumerator ("1." or "2)" opening a sentence) is not a fact.
pub fn facts(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut opens_sentence = true;
    for raw in text.split_whitespace() {
        let word = bare(raw);
        let enumerator = opens_sentence
            && raw.ends_with(['.', ')'])
            && !word.is_empty()
            && word.chars().all(|c| c.is_ascii_digit());
        if enumerator {
            continue;
        }
        if let Some(number) = number(word) {
            if !found.contains(&number) {
                found.push(number);
            }
        } else if !opens_sentence
            && word.chars().next().is_some_and(char::is_uppercase)
            && word.chars().count() > 1
            && !found.iter().any(|known| known == word)
        {
            found.push(word.to_owned());
        }
        opens_sentence = raw.ends_with(['.', '!', '?', ':']) || raw.starts_with('[');
    }
    found
}

/// The number a word holds, if it has a digit: its digits and decimal points ("1,000" is
/// "1000", "3.5%" is "3.5").
fn number(word: &str) -> Option<String> {
    if !word.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits: String = word
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    Some(digits.trim_matches('.').to_owned())
}

/// A word without the punctuation around it or a possessive `'s`.
fn bare(raw: &str) -> &str {
    let word = raw.trim_matches(|c: char| !c.is_alphanumeric());
    word.strip_suffix("'s")
        .or_else(|| word.strip_suffix("\u{2019}s"))
        .unwrap_or(word)
}

/// The facts of `answer` ([`facts`]) that none of `passages` holds: a number is looked for
/// among the passages' numbers (separators ignored), a name as a word of the passages.
pub fn unsupported_facts(answer: &str, passages: &[&str]) -> (usize, Vec<String>) {
    let mut numbers = std::collections::HashSet::new();
    let mut words = std::collections::HashSet::new();
    for passage in passages {
        for raw in passage.split_whitespace() {
            let word = bare(raw);
            if let Some(number) = number(word) {
                numbers.insert(number.replace('.', ""));
            }
            for part in word.split(|c: char| !c.is_alphanumeric()) {
                words.insert(part.to_owned());
            }
            words.insert(word.to_owned());
        }
    }
    let found = facts(answer);
    let missing = found
        .iter()
        .filter(|fact| {
            if fact.chars().any(|c| c.is_ascii_digit()) {
                !numbers.contains(&fact.replace('.', ""))
            } else {
                // "Port-au-Prince" is held by a passage tokenized as "Port - au - Prince".
                !words.contains(fact.as_str())
                    && !fact
                        .split(|c: char| !c.is_alphanumeric())
                        .filter(|part| !part.is_empty())
                        .all(|part| words.contains(part))
            }
        })
        .cloned()
        .collect();
    (found.len(), missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_not_in_the_cited_passages_are_found() {
        let passage = "The sabbatical lasts 6 weeks after 5 years. Severance is at most 4 months, \
                       paid by Acme Payroll.";
        let (checked, missing) = unsupported_facts(
            "A sabbatical lasts 3 months. Severance is paid by Acme Payroll within 1,000 days.",
            &[passage],
        );
        // 3, Acme, Payroll, 1000 ("Severance" opens a sentence).
        assert_eq!(checked, 4);
        assert_eq!(missing, ["3", "1000"]);
        let (_, missing) = unsupported_facts("It took 4 months, said Acme's team.", &[passage]);
        assert!(missing.is_empty(), "{missing:?}");
        let (_, missing) = unsupported_facts(
            "It hit Port-au-Prince and Petit-Goâve.",
            &["Port - au - Prince was hit."],
        );
        assert_eq!(missing, ["Petit-Goâve"]);
        assert_eq!(
            facts("In 2019 Marie Curie won."),
            ["2019", "Marie", "Curie"]
        );
        assert_eq!(facts("1. Paris is big. 2) It has 3 airports."), ["3"]);
    }

    fn refs(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn rouge_counts_clipped_ngrams_and_the_longest_common_subsequence() {
        let score = rouge_n("the cat sat on the mat", "the cat is on the mat", 1);
        assert!((score.precision - 5.0 / 6.0).abs() < 1e-12);
        assert!((score.recall - 5.0 / 6.0).abs() < 1e-12);
        let score = rouge_n("the cat sat on the mat", "the cat is on the mat", 2);
        assert!((score.f - 3.0 / 5.0).abs() < 1e-12);
        // LCS "the cat on the mat" = 5 of 6.
        assert!(
            (rouge_l("the cat sat on the mat", "the cat is on the mat").f - 5.0 / 6.0).abs()
                < 1e-12
        );
        assert_eq!(
            rouge_tokens("Hello, World-2024!"),
            ["hello", "world", "2024"]
        );
        assert_eq!(rouge("", &refs(&["x"])), Rouge::default());
    }

    #[test]
    fn the_13a_tokenizer_splits_punctuation_but_not_numbers() {
        assert_eq!(
            tokenize_13a("Hello, world. It costs $3.50 (approx)."),
            "Hello , world . It costs $ 3.50 ( approx ) ."
        );
        assert_eq!(tokenize_13a("1,000 people"), "1,000 people");
        assert_eq!(tokenize_13a("2019-2020 &amp; don't"), "2019 - 2020 & don't");
    }

    #[test]
    fn bleu_is_100_for_a_perfect_match_and_smoothed_otherwise() {
        let same = vec![(
            "the quick brown fox jumps".to_owned(),
            refs(&["the quick brown fox jumps"]),
        )];
        assert!((corpus_bleu(&same) - 100.0).abs() < 1e-9);
        // sacreBLEU 2.6.0 gives 27.403115968356843 (no 4-gram matches: smoothed).
        let short = vec![(
            "the quick fox jumps".to_owned(),
            refs(&["the quick brown fox jumps over"]),
        )];
        assert!((corpus_bleu(&short) - 27.403115968356843).abs() < 1e-9);
        // Shorter than four tokens: no 3-grams, and BLEU is 0, as sacreBLEU says.
        let tiny = vec![(
            "the fox".to_owned(),
            refs(&["the quick brown fox jumps over"]),
        )];
        assert_eq!(corpus_bleu(&tiny), 0.0);
        assert_eq!(corpus_bleu(&[("".to_owned(), refs(&["a b"]))]), 0.0);
    }

    #[test]
    fn token_f1_and_exact_match_normalize_like_squad() {
        assert!(exact_match("The Eiffel Tower!", &refs(&["eiffel tower"])));
        assert!(
            (token_f1("in Paris France", &refs(&["Paris", "Paris, France"])) - 0.8).abs() < 1e-12
        );
        assert_eq!(token_f1("", &refs(&[""])), 1.0);
    }
}
