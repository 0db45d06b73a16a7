//! Small text helpers: sentences with character offsets, and content words.

use crate::citations::Span;

/// English function words, ignored when comparing an answer with its passages.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been",
    "before", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has",
    "have", "he", "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "more", "most",
    "no", "not", "of", "on", "one", "or", "other", "our", "she", "so", "such", "than", "that",
    "the", "their", "them", "then", "there", "these", "they", "this", "those", "to", "too", "up",
    "was", "we", "were", "what", "when", "where", "which", "while", "who", "why", "will", "with",
    "would", "you", "your",
];

/// Lower-cased, lightly stemmed words and numbers of `text` that carry meaning (no function
/// words), so "averages" in an answer meets "average" in a passage.
pub(crate) fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .filter(|word| !STOP_WORDS.contains(&word.as_str()))
        .map(|word| stem(&word).to_owned())
        .collect()
}

/// Strips the commonest English inflections: plural `s`, `ing`, `ed`.
fn stem(word: &str) -> &str {
    let length = word.chars().count();
    if length > 5
        && let Some(root) = word.strip_suffix("ing")
    {
        return root;
    }
    if length > 4
        && let Some(root) = word.strip_suffix("ed")
    {
        return root;
    }
    if length > 3 && !word.ends_with("ss") && !word.ends_with("us") && !word.ends_with("is") {
        return word.strip_suffix('s').unwrap_or(word);
    }
    word
}

/// Sentences of `text` as character spans, whitespace trimmed: a sentence ends after `.`, `!`
/// or `?` followed by whitespace (or the end), and at every line break.
pub(crate) fn sentences(text: &str) -> Vec<Span> {
    let characters: Vec<char> = text.chars().collect();
    let mut spans = Vec::new();
    let mut start = 0;
    let push = |from: usize, to: usize, spans: &mut Vec<Span>| {
        let mut from = from;
        let mut to = to;
        while from < to && characters[from].is_whitespace() {
            from += 1;
        }
        while to > from && characters[to - 1].is_whitespace() {
            to -= 1;
        }
        if to > from {
            spans.push(Span {
                start: from,
                end: to,
            });
        }
    };
    for (index, &character) in characters.iter().enumerate() {
        let next_is_space = characters
            .get(index + 1)
            .is_none_or(|next| next.is_whitespace());
        if character == '\n' || (matches!(character, '.' | '!' | '?') && next_is_space) {
            push(start, index + 1, &mut spans);
            start = index + 1;
        }
    }
    push(start, characters.len(), &mut spans);
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_at_terminal_punctuation_and_lines() {
        let text = "First one. Second, v1.2 here!\nThird ";
        let parts: Vec<String> = sentences(text)
            .iter()
            .map(|span| {
                text.chars()
                    .skip(span.start)
                    .take(span.end - span.start)
                    .collect()
            })
            .collect();
        assert_eq!(parts, ["First one.", "Second, v1.2 here!", "Third"]);
        assert!(sentences("  ").is_empty());
    }

    #[test]
    fn content_words_drop_function_words() {
        assert_eq!(
            content_words("The Granite is an igneous rock, 3 km."),
            ["granite", "igneous", "rock", "3", "km"]
        );
    }
}
