//! Citation markers: filtering them out of the model's text as it streams (a marker that points
//! to no source never reaches the user), then turning the answer into cited spans.

use serde::Serialize;

use crate::text::{content_words, sentences};

/// The longest marker the filter holds back, e.g. `[Source 12, Source 13]`.
const MAX_MARKER_CHARS: usize = 40;

/// A marker kept in the answer: its character range and the sources (1-based) it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub start: usize,
    pub end: usize,
    pub sources: Vec<usize>,
}

/// Streams text through, holding back anything that may be a citation marker until it is
/// complete. Markers are normalised to `[n]` (or `[n][m]` for several); numbers outside
/// `1..=sources` are dropped and counted.
#[derive(Debug)]
pub(crate) struct MarkerFilter {
    sources: usize,
    held: String,
    /// Characters emitted so far.
    emitted_chars: usize,
    pub markers: Vec<Marker>,
    pub removed: usize,
}

impl MarkerFilter {
    pub(crate) fn new(sources: usize) -> Self {
        MarkerFilter {
            sources,
            held: String::new(),
            emitted_chars: 0,
            markers: Vec::new(),
            removed: 0,
        }
    }

    /// Feeds a piece of model text; returns what may be shown now.
    pub(crate) fn push(&mut self, text: &str) -> String {
        let mut out = String::new();
        for character in text.chars() {
            if self.held.is_empty() {
                if character == '[' {
                    self.held.push(character);
                } else {
                    self.emit(&mut out, character);
                }
                continue;
            }
            self.held.push(character);
            match classify(&self.held) {
                Shape::Partial if self.held.chars().count() <= MAX_MARKER_CHARS => {}
                Shape::Complete(numbers) => {
                    self.held.clear();
                    self.resolve(&mut out, numbers);
                }
                _ => {
                    // Not a marker: release it, re-examining from the second character (it may
                    // hold the start of a real marker, as in `[[1]`).
                    let held = std::mem::take(&mut self.held);
                    let mut characters = held.chars();
                    if let Some(first) = characters.next() {
                        self.emit(&mut out, first);
                    }
                    let rest: String = characters.collect();
                    out.push_str(&self.push(&rest));
                }
            }
        }
        out
    }

    /// The end of the stream: whatever is held is plain text.
    pub(crate) fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        let mut out = String::new();
        for character in held.chars() {
            self.emit(&mut out, character);
        }
        out
    }

    fn emit(&mut self, out: &mut String, character: char) {
        out.push(character);
        self.emitted_chars += 1;
    }

    fn resolve(&mut self, out: &mut String, numbers: Vec<usize>) {
        let mut valid: Vec<usize> = Vec::new();
        for number in numbers {
            if (1..=self.sources).contains(&number) {
                if !valid.contains(&number) {
                    valid.push(number);
                }
            } else {
                self.removed += 1;
            }
        }
        if valid.is_empty() {
            return;
        }
        let start = self.emitted_chars;
        for number in &valid {
            for character in format!("[{number}]").chars() {
                self.emit(out, character);
            }
        }
        self.markers.push(Marker {
            start,
            end: self.emitted_chars,
            sources: valid,
        });
    }
}

enum Shape {
    Partial,
    Complete(Vec<usize>),
    NotMarker,
}

/// Whether `held` (starting with `[`) is, or may become, a marker such as `[1]`, `[1, 2]`,
/// `[Source 3]` or `[source 1; source 2]`.
fn classify(held: &str) -> Shape {
    let inner = &held[1..];
    let (body, closed) = match inner.strip_suffix(']') {
        Some(body) => (body, true),
        None => (inner, false),
    };
    let mut numbers = Vec::new();
    let mut word = String::new();
    let mut digits = String::new();
    for character in body.chars() {
        if character.is_ascii_digit() {
            if !word.is_empty() && !is_source_word_prefix(&word, true) {
                return Shape::NotMarker;
            }
            word.clear();
            digits.push(character);
        } else if character.is_alphabetic() {
            if !digits.is_empty() {
                return Shape::NotMarker;
            }
            word.push(character);
            if !is_source_word_prefix(&word, false) {
                return Shape::NotMarker;
            }
        } else if matches!(character, ',' | ';' | ' ' | '-') {
            if !word.is_empty() && !is_source_word_prefix(&word, true) {
                return Shape::NotMarker;
            }
            if character != ' ' {
                word.clear();
            }
            if let Ok(number) = digits.parse::<usize>() {
                numbers.push(number);
            }
            digits.clear();
        } else {
            return Shape::NotMarker;
        }
    }
    if !closed {
        return Shape::Partial;
    }
    if let Ok(number) = digits.parse::<usize>() {
        numbers.push(number);
    }
    if numbers.is_empty() || !word.is_empty() {
        Shape::NotMarker
    } else {
        Shape::Complete(numbers)
    }
}

/// `source`/`sources`/`doc`/`document`, case-insensitively; `complete` asks for a whole word.
fn is_source_word_prefix(word: &str, complete: bool) -> bool {
    let word = word.to_lowercase();
    ["source", "sources", "doc", "document", "passage", "ref"]
        .iter()
        .any(|candidate| {
            if complete {
                *candidate == word
            } else {
                candidate.starts_with(&word)
            }
        })
}

/// A passage given to the model, as a citation refers to it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Reference {
    /// The number the passage had in the prompt (`[n]`).
    pub number: usize,
    pub chunk_id: String,
    pub doc_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heading_path: Vec<String>,
    /// The passage text.
    pub text: String,
    /// Retrieval score of the passage.
    pub score: f32,
}

/// Character offsets into the answer text, end exclusive.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// The characters of `text` this span covers.
    pub fn of(&self, text: &str) -> String {
        text.chars()
            .skip(self.start)
            .take(self.end - self.start)
            .collect()
    }
}

/// The passage (index into `passages`, each its content words) holding the largest share of
/// `words`, the last of equals, and that share: the passage an uncited sentence rests on.
pub(crate) fn best_holder(
    words: &[String],
    passages: &[std::collections::HashSet<String>],
) -> Option<(usize, f64)> {
    if words.is_empty() {
        return None;
    }
    passages
        .iter()
        .enumerate()
        .map(|(index, passage)| {
            let held = words.iter().filter(|word| passage.contains(*word)).count();
            (index, held as f64 / words.len() as f64)
        })
        .max_by(|left, right| left.1.total_cmp(&right.1))
}

/// The passage an uncited sentence is matched to (index into `passages`, each its content
/// words): the one holding the largest share of its words, when that share is at least
/// [`MATCH_SUPPORT`].
pub(crate) fn matched_source(
    text: &str,
    passages: &[std::collections::HashSet<String>],
) -> Option<usize> {
    best_holder(&content_words(text), passages)
        .filter(|(_, share)| *share >= MATCH_SUPPORT)
        .map(|(index, _)| index)
}

/// How a span came to cite its references.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CitationKind {
    /// The model wrote the marker.
    Cited,
    /// No marker; Basalt found a passage holding most of the span's words.
    Matched,
}

/// A part of the answer and the passages that support it (Bedrock's RetrieveAndGenerate shape).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Citation {
    pub span: Span,
    pub kind: CitationKind,
    pub references: Vec<Reference>,
    /// Where in each reference's text the support is: the passage sentence sharing most of the
    /// span's words (a reference sharing none has no entry).
    pub support: Vec<Support>,
}

/// The sentence of passage `number` that supports a citation: character offsets into that
/// reference's `text`, end exclusive.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Support {
    pub number: usize,
    pub start: usize,
    pub end: usize,
}

/// The sentence of `reference` that shares most content words with `text`, if any does.
fn support_in(text: &str, reference: &Reference) -> Option<Support> {
    let wanted: std::collections::HashSet<String> = content_words(text).into_iter().collect();
    sentences(&reference.text)
        .into_iter()
        .map(|span| {
            let shared = content_words(&span.of(&reference.text))
                .into_iter()
                .collect::<std::collections::HashSet<_>>()
                .intersection(&wanted)
                .count();
            (span, shared)
        })
        .filter(|(_, shared)| *shared > 0)
        .max_by_key(|(span, shared)| (*shared, std::cmp::Reverse(span.start)))
        .map(|(span, _)| Support {
            number: reference.number,
            start: span.start,
            end: span.end,
        })
}

/// Share of a sentence's content words a passage must hold to be matched to it.
const MATCH_SUPPORT: f64 = 0.6;

/// Splits `answer` into sentences and cites each: the markers in it (a marker opening a
/// sentence belongs to the one before), else the passage holding most of its words.
pub(crate) fn cite(answer: &str, markers: &[Marker], sources: &[Reference]) -> Vec<Citation> {
    let spans = sentences(answer);
    let mut cited: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    for marker in markers {
        let Some(mut index) = spans
            .iter()
            .position(|span| marker.start >= span.start && marker.start < span.end)
        else {
            continue;
        };
        let before: String = answer
            .chars()
            .skip(spans[index].start)
            .take(marker.start - spans[index].start)
            .collect();
        if index > 0
            && before
                .chars()
                .all(|c| c.is_whitespace() || c == ']' || c == '[' || c.is_ascii_digit())
        {
            index -= 1;
        }
        for &number in &marker.sources {
            if !cited[index].contains(&number) {
                cited[index].push(number);
            }
        }
    }
    let source_words: Vec<std::collections::HashSet<String>> = sources
        .iter()
        .map(|source| content_words(&source.text).into_iter().collect())
        .collect();
    let mut citations = Vec::new();
    for (span, numbers) in spans.iter().zip(cited) {
        let text: String = answer
            .chars()
            .skip(span.start)
            .take(span.end - span.start)
            .collect();
        let (kind, numbers) = if numbers.is_empty() {
            match matched_source(&text, &source_words) {
                Some(index) => (CitationKind::Matched, vec![index + 1]),
                None => continue,
            }
        } else {
            (CitationKind::Cited, numbers)
        };
        let references: Vec<Reference> = numbers
            .iter()
            .filter_map(|number| sources.get(number - 1).cloned())
            .collect();
        let plain = crate::pipeline::strip_markers(&text);
        let support = references
            .iter()
            .filter_map(|reference| support_in(&plain, reference))
            .collect();
        citations.push(Citation {
            span: *span,
            kind,
            references,
            support,
        });
    }
    citations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_citation_says_which_passage_sentence_supports_it() {
        let passage = Reference {
            number: 1,
            chunk_id: "c".into(),
            doc_id: "d".into(),
            title: None,
            source: "handbook.md".into(),
            page: None,
            heading_path: Vec::new(),
            text: "Sabbaticals last six weeks. The waiting period for the dental plan is 7 days."
                .into(),
            score: 1.0,
        };
        let answer = "The dental plan's waiting period is 7 days [1].";
        let marker = Marker {
            start: 43,
            end: 46,
            sources: vec![1],
        };
        let citations = cite(answer, &[marker], std::slice::from_ref(&passage));
        let support = citations[0].support[0];
        assert_eq!(support.number, 1);
        let held: String = passage
            .text
            .chars()
            .skip(support.start)
            .take(support.end - support.start)
            .collect();
        assert_eq!(held, "The waiting period for the dental plan is 7 days.");
    }

    fn run(sources: usize, pieces: &[&str]) -> (String, MarkerFilter) {
        let mut filter = MarkerFilter::new(sources);
        let mut out = String::new();
        for piece in pieces {
            out.push_str(&filter.push(piece));
        }
        out.push_str(&filter.finish());
        (out, filter)
    }

    #[test]
    fn valid_markers_stay_and_invalid_ones_vanish() {
        let (out, filter) = run(
            4,
            &["Granite is igneous [1]. Basalt too [", "5]. Both [2, 9]."],
        );
        assert_eq!(out, "Granite is igneous [1]. Basalt too . Both [2].");
        assert_eq!(filter.removed, 2);
        assert_eq!(filter.markers.len(), 2);
        assert_eq!(filter.markers[0].sources, [1]);
        let marker = &filter.markers[1];
        let text: String = out
            .chars()
            .skip(marker.start)
            .take(marker.end - marker.start)
            .collect();
        assert_eq!(text, "[2]");
    }

    #[test]
    fn source_words_are_normalised_and_other_brackets_pass() {
        let (out, filter) = run(
            3,
            &["A [Source 2]. B [source 1; source 3]. C [citation needed] [x] [[1]"],
        );
        assert_eq!(out, "A [2]. B [1][3]. C [citation needed] [x] [[1]");
        assert_eq!(filter.removed, 0);
        assert_eq!(filter.markers.len(), 3);
    }

    #[test]
    fn a_marker_split_across_tokens_and_an_unclosed_one() {
        let (out, _) = run(2, &["Yes [", "2", "]", " and [1"]);
        assert_eq!(out, "Yes [2] and [1");
        let (out, filter) = run(0, &["No sources [1]."]);
        assert_eq!(out, "No sources .");
        assert_eq!(filter.removed, 1);
    }

    fn reference(number: usize, text: &str) -> Reference {
        Reference {
            number,
            chunk_id: format!("d{number}#0"),
            doc_id: format!("d{number}"),
            title: None,
            source: format!("d{number}.txt"),
            page: None,
            heading_path: Vec::new(),
            text: text.into(),
            score: 1.0,
        }
    }

    #[test]
    fn spans_carry_their_markers_or_a_matching_passage() {
        let sources = [
            reference(1, "Granite is an intrusive igneous rock rich in quartz."),
            reference(2, "Basalt forms from rapidly cooling lava flows."),
        ];
        let (answer, filter) = run(
            2,
            &["Granite is igneous [1]. Basalt forms from cooling lava flows. The moon is cheese."],
        );
        let citations = cite(&answer, &filter.markers, &sources);
        assert_eq!(citations.len(), 2, "{citations:?}");
        assert_eq!(citations[0].kind, CitationKind::Cited);
        assert_eq!(citations[0].references[0].number, 1);
        let first: String = answer.chars().take(citations[0].span.end).collect();
        assert_eq!(first, "Granite is igneous [1].");
        assert_eq!(citations[1].kind, CitationKind::Matched);
        assert_eq!(citations[1].references[0].number, 2);
    }

    #[test]
    fn a_marker_after_the_full_stop_cites_the_sentence_before() {
        let sources = [reference(1, "x"), reference(2, "y")];
        let (answer, filter) = run(2, &["Granite is igneous. [2] Basalt is too."]);
        let citations = cite(&answer, &filter.markers, &sources);
        assert_eq!(citations.len(), 1);
        assert_eq!(citations[0].span.start, 0);
        assert_eq!(citations[0].references[0].number, 2);
    }

    proptest::proptest! {
        #[test]
        fn every_kept_marker_is_valid_and_text_without_brackets_is_untouched(
            text in "[a-z \\[\\],0-9.]{0,80}",
            sources in 0usize..5,
            cut in 0usize..80,
        ) {
            let cut = text.char_indices().map(|(i, _)| i).find(|&i| i >= cut).unwrap_or(text.len());
            let (out, filter) = run(sources, &[&text[..cut], &text[cut..]]);
            for marker in &filter.markers {
                proptest::prop_assert!(marker.sources.iter().all(|n| (1..=sources).contains(n)));
                let shown: String = out.chars().skip(marker.start).take(marker.end - marker.start).collect();
                proptest::prop_assert!(shown.starts_with('[') && shown.ends_with(']'));
            }
            if !text.contains('[') {
                proptest::prop_assert_eq!(out, text);
            }
        }
    }
}
