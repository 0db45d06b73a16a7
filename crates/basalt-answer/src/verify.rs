//! Verified release: a generated answer is shown a sentence at a time, and a sentence only once
//! it passes a check against the passages — its words come from them, its numbers and dates
//! from the passage sentence it rests on (a number the passage holds for something else is not
//! support), its names from that sentence, its neighbours or the passage's title. A sentence
//! that fails is never shown; the answer is the sentences that passed, with their citation
//! markers.

use std::collections::HashSet;

use crate::citations::{Marker, Reference, matched_source};
use crate::pipeline::{MIN_GROUNDING, grounding, is_vacuous, says_not_found, strip_markers};
use crate::text::{content_words, sentences};

/// A sentence of a passage: its words (numbers aside) and its numbers.
#[derive(Debug)]
struct Evidence {
    source: usize,
    words: HashSet<String>,
    numbers: HashSet<String>,
}

/// Holds generated text back and releases the sentences that pass.
#[derive(Debug)]
pub(crate) struct Gate<'a> {
    sources: &'a [Reference],
    /// Each source's content words.
    passage_words: Vec<HashSet<String>>,
    evidence: Vec<Evidence>,
    /// Sentences of the generated text judged so far.
    judged: usize,
    /// What was released, and its markers (offsets into it).
    pub(crate) released: String,
    pub(crate) markers: Vec<Marker>,
    /// Generated sentences that failed the check.
    pub(crate) dropped: usize,
    seen: HashSet<String>,
}

impl<'a> Gate<'a> {
    pub(crate) fn new(sources: &'a [Reference]) -> Self {
        let mut evidence = Vec::new();
        for source in sources {
            for span in sentences(&source.text) {
                let text = span.of(&source.text);
                evidence.push(Evidence {
                    source: source.number,
                    words: plain_words(&text),
                    numbers: numbers(&text),
                });
            }
        }
        Gate {
            sources,
            passage_words: sources
                .iter()
                .map(|source| content_words(&source.text).into_iter().collect())
                .collect(),
            evidence,
            judged: 0,
            released: String::new(),
            markers: Vec::new(),
            dropped: 0,
            seen: HashSet::new(),
        }
    }

    /// Judges the sentences of `text` (the generation so far, markers filtered) that are
    /// complete — a sentence is complete once the next one has begun, or at the `end` — and
    /// returns the text released by those that pass.
    pub(crate) fn advance(&mut self, text: &str, markers: &[Marker], end: bool) -> String {
        let characters: Vec<char> = text.chars().collect();
        let spans = sentences(text);
        // A marker opening a sentence cites the one before it: each unit runs from after its
        // own opening markers to the end of the next one's.
        let starts: Vec<usize> = spans
            .iter()
            .enumerate()
            .map(|(index, span)| {
                if index == 0 {
                    span.start
                } else {
                    after_markers(&characters, span.start, span.end)
                }
            })
            .collect();
        let mut out = String::new();
        while self.judged < spans.len() {
            let index = self.judged;
            let next = starts.get(index + 1).copied();
            let complete = end || next.is_some_and(|start| start < spans[index + 1].end);
            if !complete {
                break;
            }
            self.judged += 1;
            let (mut from, mut to) = (starts[index], next.unwrap_or(characters.len()));
            let filler = filler_lead(&characters[from..to]);
            from += filler;
            while from < to && characters[from].is_whitespace() {
                from += 1;
            }
            while to > from && characters[to - 1].is_whitespace() {
                to -= 1;
            }
            let mut unit: String = characters[from..to].iter().collect();
            if filler > 0 {
                // What followed the filler starts the sentence now (one character for one, so
                // the markers' offsets hold).
                let mut rest = unit.chars();
                if let Some(letter) = rest.next() {
                    let upper: Vec<char> = letter.to_uppercase().collect();
                    if upper.len() == 1 {
                        unit = upper.into_iter().chain(rest).collect();
                    }
                }
            }
            let own: Vec<&Marker> = markers
                .iter()
                .filter(|marker| marker.start >= from && marker.start < to)
                .collect();
            let cited: Vec<usize> = own
                .iter()
                .flat_map(|marker| marker.sources.iter().copied())
                .collect();
            if content_words(&strip_markers(&unit)).is_empty() {
                continue;
            }
            if let Err(reason) = self.supported(&unit, &cited) {
                // `RUST_LOG=basalt_answer=debug` shows what was not shown, and why.
                tracing::debug!(sentence = %unit, reason, "a generated sentence was not shown");
                self.dropped += 1;
                continue;
            }
            let separator = if self.released.is_empty() { "" } else { " " };
            let offset = self.released.chars().count() + separator.len();
            for marker in own {
                self.markers.push(Marker {
                    start: offset + marker.start - from,
                    end: offset + marker.end - from,
                    sources: marker.sources.clone(),
                });
            }
            self.released.push_str(separator);
            self.released.push_str(&unit);
            out.push_str(separator);
            out.push_str(&unit);
        }
        out
    }

    /// The passage sentences (indices into `evidence`) a generated sentence with these `words`
    /// rests on: among those of the passages `allowed` admits (by number), the ones sharing
    /// most of the words.
    fn resting_sentences(
        &self,
        words: &HashSet<String>,
        allowed: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let candidates: Vec<usize> = (0..self.evidence.len())
            .filter(|&index| allowed(self.evidence[index].source))
            .collect();
        let overlap = |index: usize| words.intersection(&self.evidence[index].words).count();
        let best = candidates
            .iter()
            .map(|&index| overlap(index))
            .max()
            .unwrap_or(0);
        candidates
            .into_iter()
            .filter(|&index| overlap(index) == best)
            .collect()
    }

    /// Whether `unit` (with its markers, citing `cited`) may be shown; if not, why.
    fn supported(&mut self, unit: &str, cited: &[usize]) -> Result<(), &'static str> {
        let plain = without_list_number(&strip_markers(unit));
        let normalized = plain
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        if !self.seen.insert(normalized) {
            return Err("a repeat");
        }
        if is_vacuous(&plain) {
            return Err("says nothing about the documents");
        }
        if says_not_found(&plain) {
            // After an answer, "NOT FOUND" contradicts it rather than adding to it.
            return Err("says the passages do not hold the answer");
        }
        if grounding(&plain, self.sources) < MIN_GROUNDING {
            return Err("most of its words are not in the passages");
        }
        // Numbers and dates: in a passage sentence that is, by its other words, the one this
        // sentence rests on.
        let wanted = numbers(&plain);
        if !wanted.is_empty() {
            let held = self
                .resting_sentences(&plain_words(&plain), |source| {
                    cited.is_empty() || cited.contains(&source)
                })
                .into_iter()
                .any(|index| wanted.is_subset(&self.evidence[index].numbers));
            if !held {
                return Err("a number or date is not in the passage sentence it rests on");
            }
        }
        // Names: in the passages it cites, or, when it cites none, in the passage it rests on
        // (its "matched" citation; a sentence no passage can be matched to is not shown): a name
        // from another passage joined to this one's words is a new claim.
        let resting = if cited.is_empty() {
            Some(
                matched_source(&plain, &self.passage_words)
                    .ok_or("no passage holds enough of its words to cite")?,
            )
        } else {
            None
        };
        let allowed = |number: usize| match resting {
            Some(resting) => number == resting + 1,
            None => cited.is_empty() || cited.contains(&number),
        };
        let named: Vec<String> = names(&plain)
            .iter()
            .flat_map(|name| content_words(name))
            .collect();
        if named.is_empty() {
            return Ok(());
        }
        // In the passage sentences it rests on — those sharing most of its other words — or
        // their neighbours, or the passage's title: a name from elsewhere in the passage,
        // joined to this sentence's words, puts it in another relation.
        let others: HashSet<String> = plain_words(&plain)
            .into_iter()
            .filter(|word| !named.contains(word))
            .collect();
        let mut known: HashSet<&String> = HashSet::new();
        for index in self.resting_sentences(&others, allowed) {
            let source = self.evidence[index].source;
            for near in index.saturating_sub(1)..=index + 1 {
                if let Some(evidence) = self.evidence.get(near)
                    && evidence.source == source
                {
                    known.extend(&evidence.words);
                }
            }
        }
        let titles: HashSet<String> = self
            .sources
            .iter()
            .filter(|source| allowed(source.number))
            .flat_map(|source| source.title.iter().flat_map(|title| content_words(title)))
            .collect();
        if named
            .iter()
            .all(|word| known.contains(word) || titles.contains(word))
        {
            Ok(())
        } else {
            Err("a name is not in the passage sentence it rests on")
        }
    }
}

/// How many characters of `unit` open it with filler ending in a colon ("The answer to the
/// question is:", even twice over), which is not shown: it says nothing about the documents.
fn filler_lead(unit: &[char]) -> usize {
    let mut skipped = 0;
    while let Some(colon) = unit[skipped..].iter().position(|&c| c == ':') {
        let lead: String = unit[skipped..skipped + colon].iter().collect();
        let rest: String = unit[skipped + colon + 1..].iter().collect();
        if lead.trim().is_empty() || !is_vacuous(&lead) || is_vacuous(&rest) {
            break;
        }
        skipped += colon + 1;
    }
    skipped
}

/// `text` without a list item's number (`2. `, `3) `), which is not a claim.
fn without_list_number(text: &str) -> String {
    let trimmed = text.trim_start();
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    let rest = &trimmed[digits..];
    match rest.strip_prefix(['.', ')']) {
        Some(after) if digits > 0 && after.starts_with(char::is_whitespace) => after.to_owned(),
        _ => text.to_owned(),
    }
}

/// Where the markers (and spaces) opening `characters[start..end]` end.
fn after_markers(characters: &[char], start: usize, end: usize) -> usize {
    let mut index = start;
    loop {
        while index < end && characters[index].is_whitespace() {
            index += 1;
        }
        if index < end && characters[index] == '[' {
            let close = (index..end).find(|&at| characters[at] == ']');
            match close {
                Some(close)
                    if characters[index + 1..close]
                        .iter()
                        .all(|c| c.is_ascii_digit() || matches!(c, ',' | ' ')) =>
                {
                    index = close + 1;
                }
                _ => return index,
            }
        } else {
            return index;
        }
    }
}

/// Content words that are not numbers.
fn plain_words(text: &str) -> HashSet<String> {
    content_words(text)
        .into_iter()
        .filter(|word| !word.chars().all(|c| c.is_ascii_digit()))
        .collect()
}

/// Whether `word` (lower case) is a number word up to ninety: "four", "twenty", "sixty".
pub(crate) fn is_number_word(word: &str) -> bool {
    NUMBER_WORDS.contains(&word) || TENS.iter().any(|(name, _)| *name == word)
}

const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

const TENS: [(&str, u32); 7] = [
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
];

/// The numbers of `text`, normalised: digits with their thousands separators dropped and a
/// decimal part kept (`1,000` → `1000`, `2.5%` → `2.5`), number words up to ninety as digits
/// (`six` → `6`).
pub(crate) fn numbers(text: &str) -> HashSet<String> {
    let mut found = HashSet::new();
    let characters: Vec<char> = text.chars().collect();
    let mut index = 0;
    while index < characters.len() {
        if characters[index].is_ascii_digit() {
            let mut number = String::new();
            while index < characters.len() {
                let character = characters[index];
                let inside = matches!(character, ',' | '.')
                    && characters.get(index + 1).is_some_and(char::is_ascii_digit)
                    && !number.is_empty();
                if character.is_ascii_digit() {
                    number.push(character);
                } else if inside && character == '.' {
                    number.push('.');
                } else if !inside {
                    break;
                }
                index += 1;
            }
            found.insert(number);
        } else {
            index += 1;
        }
    }
    for word in text
        .split(|c: char| !c.is_alphabetic())
        .map(str::to_lowercase)
    {
        if let Some(value) = NUMBER_WORDS.iter().position(|w| *w == word) {
            found.insert(value.to_string());
        } else if let Some((_, value)) = TENS.iter().find(|(w, _)| *w == word) {
            found.insert(value.to_string());
        }
    }
    found
}

/// Capitalised words after the first word of a sentence: the names it mentions.
fn names(sentence: &str) -> Vec<String> {
    sentence
        .split_whitespace()
        .skip(1)
        .map(|word| word.trim_matches(|c: char| !c.is_alphanumeric()))
        // A possessive is the name ("Canada's" → "Canada").
        .map(|word| {
            word.strip_suffix("'s")
                .or_else(|| word.strip_suffix("’s"))
                .unwrap_or(word)
        })
        .filter(|word| {
            let mut characters = word.chars();
            characters.next().is_some_and(char::is_uppercase)
                && word.chars().count() > 1
                && word.chars().any(char::is_lowercase)
        })
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::citations::MarkerFilter;

    fn source(number: usize, text: &str) -> Reference {
        Reference {
            number,
            chunk_id: format!("c{number}"),
            doc_id: format!("d{number}"),
            title: Some("Leave policy".into()),
            source: "handbook.md".into(),
            page: None,
            heading_path: Vec::new(),
            text: text.into(),
            score: 1.0,
        }
    }

    /// Streams `pieces` through the marker filter and the gate; returns what was released as
    /// it streamed, and the gate.
    fn stream<'a>(sources: &'a [Reference], pieces: &[&str]) -> (Vec<String>, Gate<'a>) {
        let mut filter = MarkerFilter::new(sources.len());
        let mut gate = Gate::new(sources);
        let mut text = String::new();
        let mut shown = Vec::new();
        for piece in pieces {
            text.push_str(&filter.push(piece));
            let out = gate.advance(&text, &filter.markers, false);
            if !out.is_empty() {
                shown.push(out);
            }
        }
        text.push_str(&filter.finish());
        let out = gate.advance(&text, &filter.markers, true);
        if !out.is_empty() {
            shown.push(out);
        }
        (shown, gate)
    }

    fn handbook() -> Vec<Reference> {
        vec![
            source(
                1,
                "Employees may take a sabbatical of six weeks after five years of service. \
                 The waiting period for the dental plan is 7 days.",
            ),
            source(
                2,
                "Coverage under the dental plan ends 90 days after leaving the company.",
            ),
        ]
    }

    #[test]
    fn a_sentence_is_shown_only_once_it_is_complete_and_supported() {
        let sources = handbook();
        let (shown, gate) = stream(
            &sources,
            &[
                "The sabbatical ",
                "lasts six weeks ",
                "[1]. ",
                "It is ",
                "paid by ",
                "the moon. ",
                "The dental waiting ",
                "period is 7 days [1].",
            ],
        );
        assert_eq!(
            shown,
            [
                "The sabbatical lasts six weeks [1].",
                " The dental waiting period is 7 days [1]."
            ]
        );
        assert_eq!(gate.dropped, 1, "the unsupported sentence");
        assert_eq!(
            gate.released,
            "The sabbatical lasts six weeks [1]. The dental waiting period is 7 days [1]."
        );
        let marked: Vec<String> = gate
            .markers
            .iter()
            .map(|marker| {
                gate.released
                    .chars()
                    .skip(marker.start)
                    .take(marker.end - marker.start)
                    .collect()
            })
            .collect();
        assert_eq!(marked, ["[1]", "[1]"]);
    }

    #[test]
    fn a_number_the_passage_holds_for_something_else_is_not_support() {
        let sources = handbook();
        for wrong in [
            "The sabbatical lasts 3 months [1].",
            "The waiting period for the dental plan is 90 days [1].",
            "The waiting period for the dental plan is 90 days.",
        ] {
            let (shown, gate) = stream(&sources, &[wrong]);
            assert!(shown.is_empty(), "{wrong}: {shown:?}");
            assert_eq!(gate.dropped, 1);
        }
        // "NOT FOUND" after an answer is not shown as part of it.
        let (shown, gate) = stream(&sources, &["A sabbatical is six weeks [1]. NOT FOUND."]);
        assert_eq!(shown, ["A sabbatical is six weeks [1]."]);
        assert_eq!(gate.dropped, 1);
        // Written out or in digits, the same number.
        let (shown, _) = stream(&sources, &["A sabbatical is 6 weeks long [1]."]);
        assert_eq!(shown.len(), 1);
    }

    #[test]
    fn a_marker_after_the_full_stop_stays_with_its_sentence() {
        let sources = handbook();
        let (shown, gate) = stream(
            &sources,
            &[
                "The dental plan waits 7 days.",
                " [1] ",
                "Coverage ends 90 days after leaving [2].",
            ],
        );
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert_eq!(gate.markers.len(), 2);
        assert!(
            gate.released
                .starts_with("The dental plan waits 7 days. [1]"),
            "{}",
            gate.released
        );
    }

    #[test]
    fn names_must_come_from_the_cited_passages() {
        let sources = handbook();
        let (shown, _) = stream(
            &sources,
            &["Employees at Initech may take a sabbatical [1]."],
        );
        assert!(shown.is_empty(), "{shown:?}");
        // Uncited, a sentence rests on the passage holding most of its words: a name only
        // another passage holds is not support.
        let sources = vec![
            source(1, "Toby leaves for Costa Rica at the end of the season."),
            source(2, "Kevin Flenderson and Dwight run the office."),
        ];
        let (shown, _) = stream(&sources, &["Toby Flenderson leaves for Costa Rica."]);
        assert!(shown.is_empty(), "{shown:?}");
        let (shown, _) = stream(&sources, &["Toby leaves for Costa Rica."]);
        assert_eq!(shown, ["Toby leaves for Costa Rica."]);
        // A name from a sentence of the same passage that this one does not rest on puts it
        // in another relation; the sentence it rests on, or its neighbour, is support.
        let sources = vec![source(
            1,
            "Dental claims go to Acme Insurance. The cafeteria serves lunch at noon. \
             Staff meals are cheap. Vision claims are handled by Orbit Health.",
        )];
        let (shown, _) = stream(&sources, &["Dental claims go to Orbit Health [1]."]);
        assert!(shown.is_empty(), "{shown:?}");
        let (shown, _) = stream(&sources, &["Dental claims go to Acme Insurance [1]."]);
        assert_eq!(shown.len(), 1);
        assert_eq!(
            names("The Dental Plan's waiting period"),
            ["Dental", "Plan"]
        );
    }

    #[test]
    fn filler_before_a_colon_is_not_shown() {
        let sources = handbook();
        let (shown, gate) = stream(
            &sources,
            &["The answer to the question is: The answer is: the sabbatical lasts six weeks [1]."],
        );
        assert_eq!(shown, ["The sabbatical lasts six weeks [1]."]);
        assert_eq!(gate.markers.len(), 1);
        // Filler with nothing after it is still dropped, and a label that says something stays.
        let (shown, _) = stream(&sources, &["The answer is: [1]."]);
        assert!(shown.is_empty(), "{shown:?}");
        assert_eq!(
            filler_lead(&"Sabbatical: six weeks".chars().collect::<Vec<_>>()),
            0
        );
    }

    #[test]
    fn numbers_are_normalised() {
        let found = numbers("It cost 1,000 euros, 2.5% more, in 2024; six or twenty of them.");
        for number in ["1000", "2.5", "2024", "6", "20"] {
            assert!(found.contains(number), "{number}: {found:?}");
        }
        assert!(!found.contains("1"), "{found:?}");
    }
}
