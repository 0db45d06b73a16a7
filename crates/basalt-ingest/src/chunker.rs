//! Structure-aware chunking: a document's sections (text under one heading path, as a parser
//! found them) are cut at paragraphs, then sentences, then words where a piece is too long, and
//! the pieces are packed into windows of at most `max_tokens` model tokens with an overlap of
//! up to `overlap_tokens` between neighbours. A chunk never crosses a section boundary, never
//! exceeds the limit, and every non-blank character of a section lands in at least one chunk.

use std::ops::Range;

use crate::document::Section;

/// Counts model tokens the way the embedding model will see the text, special tokens
/// included (for MiniLM: `[CLS] … [SEP]`, so an empty text counts 2).
pub trait TokenCounter {
    fn count_tokens(&self, text: &str) -> usize;
}

/// How large chunks are and how much neighbours share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkerOptions {
    /// Most model tokens in one chunk, special tokens included. 256 fits all-MiniLM-L6-v2 the
    /// way sentence-transformers truncates it.
    pub max_tokens: usize,
    /// Most tokens a chunk repeats from the end of the previous one (0: no overlap).
    pub overlap_tokens: usize,
}

impl Default for ChunkerOptions {
    fn default() -> Self {
        ChunkerOptions {
            max_tokens: 256,
            overlap_tokens: 32,
        }
    }
}

/// A chunk: a byte range of the document's extracted text inside one section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpan {
    pub range: Range<usize>,
    /// Index of the section the chunk belongs to.
    pub section: usize,
}

/// Cuts every section of `text` into chunks, in document order.
///
/// # Panics
/// If a section's range is not inside `text` on character boundaries, or if `max_tokens` leaves
/// no room for text (it must exceed the counter's count of the empty string).
pub fn chunk_sections(
    text: &str,
    sections: &[Section],
    counter: &dyn TokenCounter,
    options: &ChunkerOptions,
) -> Vec<ChunkSpan> {
    let special_tokens = counter.count_tokens("");
    assert!(
        options.max_tokens > special_tokens,
        "max_tokens ({}) must leave room for text beyond {special_tokens} special tokens",
        options.max_tokens
    );
    let mut chunks = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        assert!(
            text.get(section.range.clone()).is_some(),
            "section {index} ({:?}) is not a character range of the text",
            section.range
        );
        let mut pieces = Vec::new();
        split_into(
            text,
            section.range.clone(),
            Level::Paragraph,
            counter,
            options.max_tokens,
            special_tokens,
            &mut pieces,
        );
        for range in pack(text, &pieces, counter, options, special_tokens) {
            chunks.push(ChunkSpan {
                range,
                section: index,
            });
        }
    }
    chunks
}

/// A piece of text that fits a chunk on its own, with its token count (specials excluded).
#[derive(Debug, Clone)]
struct Piece {
    range: Range<usize>,
    tokens: usize,
}

/// How a too-long piece is cut next: paragraphs, then sentences, then words, then characters.
#[derive(Debug, Clone, Copy)]
enum Level {
    Paragraph,
    Sentence,
    Word,
    Character,
}

fn split_into(
    text: &str,
    range: Range<usize>,
    level: Level,
    counter: &dyn TokenCounter,
    max_tokens: usize,
    special_tokens: usize,
    out: &mut Vec<Piece>,
) {
    for part in split(text, range, level) {
        let tokens = counter.count_tokens(&text[part.clone()]);
        // A single character over the limit cannot happen with a sane counter; it is kept
        // rather than lose text.
        if tokens <= max_tokens || text[part.clone()].chars().nth(1).is_none() {
            out.push(Piece {
                range: part,
                tokens: tokens.saturating_sub(special_tokens),
            });
            continue;
        }
        let next = match level {
            Level::Paragraph => Level::Sentence,
            Level::Sentence => Level::Word,
            Level::Word | Level::Character => Level::Character,
        };
        split_into(text, part, next, counter, max_tokens, special_tokens, out);
    }
}

/// Non-blank parts of `text[range]` at `level`, trimmed of surrounding whitespace.
fn split(text: &str, range: Range<usize>, level: Level) -> Vec<Range<usize>> {
    let slice = &text[range.clone()];
    let mut parts = Vec::new();
    let mut start = 0;
    let push = |from: usize, to: usize, parts: &mut Vec<Range<usize>>| {
        let piece = &slice[from..to];
        let leading = piece.len() - piece.trim_start().len();
        let trimmed = piece.trim();
        if !trimmed.is_empty() {
            let begin = range.start + from + leading;
            parts.push(begin..begin + trimmed.len());
        }
    };
    match level {
        Level::Paragraph => {
            // A paragraph ends at a line that is blank.
            let mut offset = 0;
            let mut previous_blank = false;
            for line in slice.split_inclusive('\n') {
                let blank = line.trim().is_empty();
                if blank && !previous_blank {
                    push(start, offset, &mut parts);
                    start = offset;
                }
                previous_blank = blank;
                offset += line.len();
            }
            push(start, slice.len(), &mut parts);
        }
        Level::Sentence => {
            let bytes = slice.as_bytes();
            for (index, &byte) in bytes.iter().enumerate() {
                let ends_sentence = matches!(byte, b'.' | b'!' | b'?' | b';')
                    && bytes.get(index + 1).is_some_and(u8::is_ascii_whitespace);
                if ends_sentence {
                    push(start, index + 1, &mut parts);
                    start = index + 1;
                }
            }
            push(start, slice.len(), &mut parts);
        }
        Level::Word => {
            for (index, character) in slice.char_indices() {
                if character.is_whitespace() {
                    push(start, index, &mut parts);
                    start = index;
                }
            }
            push(start, slice.len(), &mut parts);
        }
        Level::Character => {
            // Halve at a character boundary; the caller halves again until each part fits.
            let half = slice.len() / 2;
            let middle = (half.max(1)..slice.len())
                .find(|&index| slice.is_char_boundary(index))
                .or_else(|| (1..half).rev().find(|&index| slice.is_char_boundary(index)));
            match middle {
                Some(middle) => {
                    parts.push(range.start..range.start + middle);
                    parts.push(range.start + middle..range.end);
                }
                None => parts.push(range),
            }
        }
    }
    parts
}

/// Packs consecutive pieces into chunks under the limit, each chunk repeating up to
/// `overlap_tokens` of pieces from the end of the previous one.
fn pack(
    text: &str,
    pieces: &[Piece],
    counter: &dyn TokenCounter,
    options: &ChunkerOptions,
    special_tokens: usize,
) -> Vec<Range<usize>> {
    let budget = options.max_tokens - special_tokens;
    let mut chunks = Vec::new();
    let mut first = 0;
    while first < pieces.len() {
        // Grow by the pieces' own counts, then check the joined text exactly: tokenization is
        // nearly additive at whitespace, but not exactly.
        let mut end = first + 1;
        let mut tokens = pieces[first].tokens;
        while end < pieces.len() && tokens + pieces[end].tokens <= budget {
            tokens += pieces[end].tokens;
            end += 1;
        }
        while end > first + 1
            && counter.count_tokens(&text[pieces[first].range.start..pieces[end - 1].range.end])
                > options.max_tokens
        {
            end -= 1;
        }
        chunks.push(pieces[first].range.start..pieces[end - 1].range.end);
        if end == pieces.len() {
            break;
        }
        // The next chunk starts as far back as the overlap allows, but always after `first`.
        let mut next = end;
        let mut shared = 0;
        while next > first + 1 && shared + pieces[next - 1].tokens <= options.overlap_tokens {
            shared += pieces[next - 1].tokens;
            next -= 1;
        }
        first = next;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One token per whitespace-separated word, plus two specials — enough for packing logic.
    struct Words;

    impl TokenCounter for Words {
        fn count_tokens(&self, text: &str) -> usize {
            text.split_whitespace().count() + 2
        }
    }

    fn check(text: &str, options: &ChunkerOptions, expected: &[&str]) {
        let sections = [Section::new(0..text.len())];
        let chunks = chunk_sections(text, &sections, &Words, options);
        let got: Vec<&str> = chunks
            .iter()
            .map(|chunk| &text[chunk.range.clone()])
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn paragraphs_are_packed_whole_when_they_fit() {
        let options = ChunkerOptions {
            max_tokens: 8,
            overlap_tokens: 0,
        };
        check(
            "one two three\n\nfour five\n\n\nsix seven eight nine",
            &options,
            &["one two three\n\nfour five", "six seven eight nine"],
        );
    }

    #[test]
    fn long_paragraphs_split_at_sentences_then_words_with_overlap() {
        let options = ChunkerOptions {
            max_tokens: 6,
            overlap_tokens: 1,
        };
        check(
            "A b c. D e f. G h i j k l m n.",
            &options,
            &["A b c.", "D e f. G", "G h i j", "j k l m", "m n."],
        );
    }

    #[test]
    fn a_word_longer_than_a_chunk_is_cut_at_character_boundaries() {
        /// One token per character, so a long word must be cut inside.
        struct Characters;
        impl TokenCounter for Characters {
            fn count_tokens(&self, text: &str) -> usize {
                text.chars().filter(|c| !c.is_whitespace()).count() + 2
            }
        }
        let text = "abcdéfghij";
        let sections = [Section::new(0..text.len())];
        let options = ChunkerOptions {
            max_tokens: 5,
            overlap_tokens: 0,
        };
        let chunks = chunk_sections(text, &sections, &Characters, &options);
        let joined: String = chunks.iter().map(|c| &text[c.range.clone()]).collect();
        assert_eq!(joined, text);
        for chunk in &chunks {
            assert!(Characters.count_tokens(&text[chunk.range.clone()]) <= 5);
        }
    }

    #[test]
    fn blank_sections_give_no_chunks_and_sections_are_never_crossed() {
        let text = "alpha beta\n\n   \ngamma";
        let sections = [
            Section::new(0..10),
            Section::new(10..16),
            Section::new(16..21),
        ];
        let chunks = chunk_sections(text, &sections, &Words, &ChunkerOptions::default());
        assert_eq!(
            chunks,
            vec![
                ChunkSpan {
                    range: 0..10,
                    section: 0
                },
                ChunkSpan {
                    range: 16..21,
                    section: 2
                }
            ]
        );
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        let word = prop_oneof![
            "[a-z]{1,8}",
            "[a-z]{1,5}[.!?]",
            Just("\n\n".to_string()),
            Just("é".to_string()),
            Just("\n".to_string()),
        ];
        proptest::collection::vec(word, 0..200).prop_map(|words| words.join(" "))
    }

    proptest! {
        #[test]
        fn chunks_fit_cover_everything_and_overlap_only_by_the_allowance(
            text in text_strategy(),
            max_tokens in 3usize..40,
            overlap_tokens in 0usize..10,
            cut in 0usize..200,
        ) {
            // Two sections, split at a character boundary near `cut`.
            let mut split = cut.min(text.len());
            while !text.is_char_boundary(split) {
                split -= 1;
            }
            let sections = [Section::new(0..split), Section::new(split..text.len())];
            let options = ChunkerOptions { max_tokens, overlap_tokens };
            let chunks = chunk_sections(&text, &sections, &Words, &options);

            let mut covered = vec![false; text.len()];
            for (index, chunk) in chunks.iter().enumerate() {
                let section = &sections[chunk.section];
                prop_assert!(section.range.start <= chunk.range.start);
                prop_assert!(chunk.range.end <= section.range.end);
                prop_assert!(Words.count_tokens(&text[chunk.range.clone()]) <= max_tokens);
                covered[chunk.range.clone()].iter_mut().for_each(|byte| *byte = true);
                if let Some(next) = chunks.get(index + 1).filter(|next| next.section == chunk.section) {
                    // Forward progress, no gap, and at most the allowed overlap.
                    prop_assert!(next.range.start > chunk.range.start);
                    if next.range.start < chunk.range.end {
                        let shared = &text[next.range.start..chunk.range.end];
                        prop_assert!(shared.split_whitespace().count() <= overlap_tokens);
                    } else {
                        prop_assert!(text[chunk.range.end..next.range.start].trim().is_empty());
                    }
                }
            }
            for (offset, character) in text.char_indices() {
                if !character.is_whitespace() {
                    prop_assert!(covered[offset], "byte {} ({:?}) is in no chunk", offset, character);
                }
            }
        }
    }
}
