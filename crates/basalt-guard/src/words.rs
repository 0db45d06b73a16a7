//! Word filters: a configuration's own words and phrases (whole words, case-insensitive) and the
//! profanity list of the `rustrict` crate, which also catches the usual evasions ("f u c k",
//! "fcuk", look-alike characters) and knows the usual false positives ("assassin").

use rustrict::{Censor, Type};
use serde::Serialize;

/// One match of a word filter: byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WordMatch {
    /// The configured word or phrase, or `profanity`.
    pub word: String,
    pub start: usize,
    pub end: usize,
}

/// Custom words and phrases, and optionally the profanity list.
#[derive(Debug, Clone, Default)]
pub struct WordFilter {
    words: Vec<String>,
    profanity: bool,
}

impl WordFilter {
    pub fn new(words: &[String], profanity: bool) -> Self {
        WordFilter {
            words: words
                .iter()
                .map(|word| word.trim().to_lowercase())
                .filter(|word| !word.is_empty())
                .collect(),
            profanity,
        }
    }

    /// Every match in `text`.
    pub fn find(&self, text: &str) -> Vec<WordMatch> {
        let mut matches = Vec::new();
        let lower = text.to_lowercase();
        // Lower-casing can change byte lengths (a few Unicode letters); match on the original
        // offsets only when it did not.
        let aligned = lower.len() == text.len();
        for word in &self.words {
            let haystack = if aligned { lower.as_str() } else { text };
            let mut from = 0;
            while let Some(position) = haystack[from..].find(word.as_str()) {
                let start = from + position;
                let end = start + word.len();
                let before = haystack[..start].chars().next_back();
                let after = haystack[end..].chars().next();
                if !before.is_some_and(char::is_alphanumeric)
                    && !after.is_some_and(char::is_alphanumeric)
                {
                    matches.push(WordMatch {
                        word: word.clone(),
                        start,
                        end,
                    });
                }
                from = end;
            }
        }
        // rustrict reads digits as letters ("4" as "a"), which turns card numbers, phone
        // numbers and dates into profanity: words with more digits than letters are left out of
        // the check ("f4ck" stays in).
        let wordy: Vec<(usize, &str)> = words_with_offsets(text)
            .filter(|(_, word)| {
                let letters = word.chars().filter(|c| c.is_alphabetic()).count();
                let digits = word.chars().filter(char::is_ascii_digit).count();
                letters > 0 && letters >= digits
            })
            .collect();
        let lettered = wordy
            .iter()
            .map(|(_, word)| *word)
            .collect::<Vec<_>>()
            .join(" ");
        if self.profanity && is_profane(&lettered) {
            // Name the words that are profane on their own; an evasion spread over several
            // words ("f u c k") is reported as the whole text.
            let mut found = false;
            for &(start, word) in &wordy {
                if is_profane(word) {
                    found = true;
                    matches.push(WordMatch {
                        word: "profanity".into(),
                        start,
                        end: start + word.len(),
                    });
                }
            }
            if !found {
                matches.push(WordMatch {
                    word: "profanity".into(),
                    start: 0,
                    end: text.len(),
                });
            }
        }
        matches.sort_by_key(|found| found.start);
        matches
    }
}

/// Profane, offensive, sexual or mean at moderate severity or worse. (rustrict's own
/// `INAPPROPRIATE` also takes mild findings, such as "damn" and the "ass" in "the assassin".)
fn is_profane(text: &str) -> bool {
    Censor::from_str(text).analyze().is((Type::PROFANE
        | Type::OFFENSIVE
        | Type::SEXUAL
        | Type::MEAN)
        & Type::MODERATE_OR_HIGHER)
}

fn words_with_offsets(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_whitespace()
        .map(move |word| (word.as_ptr() as usize - text.as_ptr() as usize, word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_words_match_whole_words_case_insensitively() {
        let filter = WordFilter::new(&["Project Falcon".into(), "acme".into()], false);
        let text = "About project falcon and ACME, not acmeville.";
        let found = filter.find(text);
        let words: Vec<&str> = found.iter().map(|m| &text[m.start..m.end]).collect();
        assert_eq!(words, ["project falcon", "ACME"]);
    }

    #[test]
    fn profanity_comes_from_the_maintained_list() {
        let filter = WordFilter::new(&[], true);
        assert!(
            filter
                .find("what the fuck is this")
                .iter()
                .any(|m| m.word == "profanity")
        );
        assert!(!filter.find("f u c k").is_empty(), "spaced-out evasion");
        assert!(filter.find("the assassin passed the class").is_empty());
        assert!(filter.find("Quarterly revenue grew by 4%.").is_empty());
        assert!(
            filter
                .find("My card is 4716424521511864, charge it")
                .is_empty()
        );
        assert!(
            filter
                .find("call (978)645-9740x11144 or 001-748-088-2851x818")
                .is_empty()
        );
        assert!(!filter.find("what the f4ck").is_empty());
    }
}
