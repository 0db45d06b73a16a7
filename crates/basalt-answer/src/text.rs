//! Small text helpers: sentences with character offsets, and content words.

use crate::citations::Span;

/// English function words, ignored when comparing an answer with its passages.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been",
    "before", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has",
    "have", "he", "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "may", "might",
    "more", "most", "must", "no", "not", "of", "on", "one", "or", "other", "our", "shall", "she",
    "should", "so", "such", "than", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "those", "to", "too", "up", "was", "we", "were", "what", "when", "where",
    "which", "while", "who", "why", "will", "with", "would", "you", "your",
];

/// Lower-cased, lightly stemmed words and numbers of `text` that carry meaning (no function
/// words), so "averages" in an answer meets "average" in a passage.
pub(crate) fn content_words(text: &str) -> Vec<String> {
    unstemmed_content_words(text)
        .into_iter()
        .map(|word| stem(&word).to_owned())
        .collect()
}

/// [`content_words`] of `text`'s prose: words inside inline code (`` `api_key` ``,
/// `` `X-Api-Key: <key>` ``) are identifiers, and a sentence that holds a question's words only
/// there ("… as their `api_key`") seldom says what the question asks. An unclosed backtick
/// leaves the rest of the text as it is.
pub(crate) fn prose_words(text: &str) -> Vec<String> {
    let mut prose = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('`') {
        let Some(close) = rest[open + 1..].find('`') else {
            break;
        };
        prose.push_str(&rest[..open]);
        prose.push(' ');
        rest = &rest[open + 1 + close + 1..];
    }
    prose.push_str(rest);
    content_words(&prose)
}

/// [`content_words`] as they are written (lower-cased), for a search to analyze itself.
pub(crate) fn unstemmed_content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .filter(|word| !STOP_WORDS.contains(&word.as_str()))
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
/// or `?` followed by whitespace (or the end), and at a line break that is not a soft wrap.
/// Hard-wrapped prose (Markdown, plain text at 80 or 100 columns) keeps its sentences whole;
/// a blank line, a list item, a heading, a table row, a quote or a code fence on either side
/// of the break ends one, and a fenced code block is one unit from fence to fence.
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
    let mut line_start = 0;
    let mut in_fence = false;
    for (index, &character) in characters.iter().enumerate() {
        let next_is_space = characters
            .get(index + 1)
            .is_none_or(|next| next.is_whitespace());
        let ends = if character == '\n' {
            let line = &characters[line_start..index];
            let next = next_line(&characters, index + 1);
            let hard = if starts_fence(line) {
                // A fence opens or closes: a code block is one unit, ended by its closing fence.
                in_fence = !in_fence;
                !in_fence
            } else if in_fence {
                false
            } else {
                is_block_line(line) || is_structural(next)
            };
            line_start = index + 1;
            hard
        } else {
            next_is_space && ends_sentence(&characters[line_start..=index])
        };
        if ends {
            push(start, index + 1, &mut spans);
            start = index + 1;
        }
    }
    push(start, characters.len(), &mut spans);
    with_labels_joined(&characters, spans)
}

/// Most words in a label ("65534:", "Sabbatical:", "Notice period:") that opens the sentence
/// after it.
const MAX_LABEL_WORDS: usize = 4;

/// Whether `text` is a label and its definition ("65534: User nobody.", "The format is:
/// [epoch:]upstream_version."), three words or more: a statement, however short, not a scrap.
pub(crate) fn is_definition(text: &str) -> bool {
    let Some((label, definition)) = text.split_once(':') else {
        return false;
    };
    let definition = definition.trim();
    let label_words = label.split_whitespace().count();
    let definition_words = definition.split_whitespace().count();
    (1..=MAX_LABEL_WORDS).contains(&label_words)
        && definition_words >= 1
        && label_words + definition_words >= 3
        && definition.ends_with(['.', '!', '?'])
}

/// `sentences` (in their order) with each Markdown table row read with its header, as
/// [`table_statement`] says it: a row says something only with its header ("| Vacation | 25
/// days |" under "| Leave type | Length |"). A header and its rule are `None`: they are not
/// sentences. A row whose header is not among `sentences` stays as it is.
pub(crate) fn with_table_headers(sentences: &[String]) -> Vec<Option<String>> {
    let mut header: Option<Vec<String>> = None;
    let opens_table = |next: Option<&String>| {
        next.and_then(|next| table_row(next))
            .is_some_and(|cells| is_table_rule(&cells))
    };
    sentences
        .iter()
        .enumerate()
        .map(|(position, text)| match table_row(text) {
            Some(cells) if is_table_rule(&cells) => None,
            Some(cells) if opens_table(sentences.get(position + 1)) => {
                header = Some(cells);
                None
            }
            Some(cells) => Some(
                header
                    .as_deref()
                    .and_then(|header| table_statement(header, &cells))
                    .unwrap_or_else(|| text.clone()),
            ),
            None => {
                header = None;
                Some(text.clone())
            }
        })
        .collect()
}

/// The cells of a Markdown table row ("| a | b |"), trimmed; `None` for any other text.
fn table_row(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('|')?;
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    Some(
        inner
            .split('|')
            .map(|cell| cell.trim().to_owned())
            .collect(),
    )
}

/// Whether `cells` are a table's header rule (`|---|:--:|`).
fn is_table_rule(cells: &[String]) -> bool {
    cells.iter().all(|cell| {
        let dashes = cell.trim_matches(':');
        !dashes.is_empty() && dashes.chars().all(|c| c == '-')
    })
}

/// A table row as a statement, each cell after its column's header: "Leave type: Vacation;
/// Length: 25 days a year." `None` when the row and the header do not line up.
fn table_statement(header: &[String], cells: &[String]) -> Option<String> {
    if header.len() != cells.len() {
        return None;
    }
    let parts: Vec<String> = header
        .iter()
        .zip(cells)
        .filter(|(_, cell)| !cell.is_empty())
        .map(|(name, cell)| {
            let cell = cell.trim_end_matches(['.', ';']);
            if name.is_empty() {
                cell.to_owned()
            } else {
                format!("{name}: {cell}")
            }
        })
        .collect();
    (!parts.is_empty()).then(|| format!("{}.", parts.join("; ")))
}

/// Joins a label — a few words ending in `:`, a definition list's term or a run-in heading
/// on a line of its own — to the sentence after it: "65534: User nobody." says what neither
/// part says alone.
///
/// A heading is not a label, and a label before a code block, a table, a heading or a list
/// ("For example:", then a fence) stays a sentence of its own: joined, the code would read as
/// prose.
fn with_labels_joined(characters: &[char], spans: Vec<Span>) -> Vec<Span> {
    let mut joined: Vec<Span> = Vec::with_capacity(spans.len());
    // The label waiting for its sentence: where it starts and ends.
    let mut label: Option<Span> = None;
    for span in spans {
        let text = &characters[span.start..span.end];
        let start = match label.take() {
            Some(pending) if !is_structural(text) => pending.start,
            Some(pending) => {
                joined.push(pending);
                span.start
            }
            None => span.start,
        };
        let words = text
            .split(|c| c.is_whitespace())
            .filter(|word| !word.is_empty())
            .count();
        if text.last() == Some(&':') && words <= MAX_LABEL_WORDS && !is_structural(text) {
            label = Some(Span {
                start,
                end: span.end,
            });
            continue;
        }
        joined.push(Span {
            start,
            end: span.end,
        });
    }
    // A label with nothing after it stays a sentence of its own.
    joined.extend(label);
    joined
}

/// Whether `line` (up to a character followed by whitespace) ends a sentence: it ends in `.`,
/// `!` or `?`, perhaps followed by closing emphasis, quotes or brackets ("**Sabbatical.** Staff
/// …", "He said "no." Then …", "(… guessed.) Next"), and is not a numbered list item's number.
fn ends_sentence(line: &[char]) -> bool {
    let closers = line.iter().rev().take_while(|&&c| is_closer(c)).count();
    let Some(mark) = line.len().checked_sub(closers + 1) else {
        return false;
    };
    matches!(line[mark], '.' | '!' | '?') && !is_list_number(&line[..mark])
}

/// A character that may follow a sentence's `.`, `!` or `?`: emphasis, a quote, a bracket.
fn is_closer(character: char) -> bool {
    matches!(
        character,
        '*' | '_' | '"' | '\'' | ')' | ']' | '\u{201d}' | '\u{2019}'
    )
}

/// The line that starts at `from` (without its line break).
fn next_line(characters: &[char], from: usize) -> &[char] {
    let rest = characters.get(from..).unwrap_or_default();
    let end = rest.iter().position(|&c| c == '\n').unwrap_or(rest.len());
    &rest[..end]
}

fn trimmed(line: &[char]) -> &[char] {
    let first = line
        .iter()
        .position(|c| !c.is_whitespace())
        .unwrap_or(line.len());
    &line[first..]
}

fn starts_fence(line: &[char]) -> bool {
    let line = trimmed(line);
    line.starts_with(&['`', '`', '`']) || line.starts_with(&['~', '~', '~'])
}

/// A line that never continues on the next one: a heading, a table row or a blank line.
fn is_block_line(line: &[char]) -> bool {
    let line = trimmed(line);
    line.first().is_none_or(|first| matches!(first, '#' | '|'))
}

/// Whether `before` (a line up to a `.` or `)`) is the number of a numbered list item.
fn is_list_number(before: &[char]) -> bool {
    let before = trimmed(before);
    !before.is_empty() && before.len() <= 3 && before.iter().all(char::is_ascii_digit)
}

/// A line that starts a block of its own rather than continuing wrapped prose: blank, a heading, a list item,
/// a table row, a quote or a fence.
fn is_structural(line: &[char]) -> bool {
    let line = trimmed(line);
    let Some(&first) = line.first() else {
        return true;
    };
    let second = line.get(1).copied();
    if matches!(first, '#' | '|' | '>') || starts_fence(line) {
        return true;
    }
    if matches!(first, '-' | '*' | '+' | '•') && second.is_none_or(char::is_whitespace) {
        return true;
    }
    // "1. item", "12) item"
    let digits = line.iter().take_while(|c| c.is_ascii_digit()).count();
    digits > 0
        && matches!(line.get(digits), Some('.' | ')'))
        && line.get(digits + 1).is_none_or(|c| c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_at_terminal_punctuation_and_lines() {
        let text = "First one. Second, v1.2 here!\n\nThird ";
        assert_eq!(split(text), ["First one.", "Second, v1.2 here!", "Third"]);
        assert!(sentences("  ").is_empty());
    }

    #[test]
    fn table_rows_read_with_their_header() {
        let header = table_row("| Leave type | Length |").expect("a row");
        assert!(is_table_rule(&table_row("|---|:--:|").expect("a row")));
        assert!(!is_table_rule(&header));
        let row = table_row("| Vacation | 25 days. |").expect("a row");
        assert_eq!(
            table_statement(&header, &row).as_deref(),
            Some("Leave type: Vacation; Length: 25 days.")
        );
        assert_eq!(
            table_statement(&header, &table_row("| a |").expect("a row")),
            None
        );
        assert_eq!(table_row("Not a row"), None);
    }

    #[test]
    fn a_table_is_read_row_by_row_with_its_header() {
        let sentences: Vec<String> = [
            "Leave is accrued.",
            "| Leave type | Length |",
            "|---|---|",
            "| Vacation | 25 days |",
            "After the table.",
            "| Orphan | row |",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            with_table_headers(&sentences),
            [
                Some("Leave is accrued.".to_owned()),
                None,
                None,
                Some("Leave type: Vacation; Length: 25 days.".to_owned()),
                Some("After the table.".to_owned()),
                Some("| Orphan | row |".to_owned()),
            ]
        );
    }

    #[test]
    fn definitions_are_a_label_and_a_closed_statement() {
        assert!(is_definition("65534:\n\nUser nobody."));
        assert!(is_definition("Sabbatical: six weeks after five years."));
        assert!(!is_definition("65535:"));
        assert!(is_definition("The format is: [epoch:]version."));
        assert!(!is_definition("Note: this."));
        assert!(!is_definition("Run this: now"));
        assert!(!is_definition(
            "Keys are created on the command line and shown once: a b."
        ));
    }

    #[test]
    fn a_label_opens_the_sentence_after_it() {
        let text = "65534:\n\nUser nobody. The gid is nogroup.\n\nReserved ids:\n\n65535:";
        assert_eq!(
            split(text),
            [
                "65534:\n\nUser nobody.",
                "The gid is nogroup.",
                "Reserved ids:\n\n65535:"
            ]
        );
        // A long lead-in is a sentence of its own.
        assert_eq!(
            split("Keys are made on the command line:\n\nRun it."),
            ["Keys are made on the command line:", "Run it."]
        );
        // Nor is a label joined to code, a table or a list, and a heading is no label.
        assert_eq!(
            split("For example:\n\n```\nrun it\n```"),
            ["For example:", "```\nrun it\n```"]
        );
        assert_eq!(
            split("## Notes:\n\nIt works well."),
            ["## Notes:", "It works well."]
        );
    }

    #[test]
    fn sentences_end_after_closing_emphasis_quotes_and_brackets() {
        let text = "**Sabbatical.** Staff get six weeks. He said \"no.\" Then (it was late.) Next.";
        assert_eq!(
            split(text),
            [
                "**Sabbatical.**",
                "Staff get six weeks.",
                "He said \"no.\"",
                "Then (it was late.)",
                "Next."
            ]
        );
        // Closers with no mark before them end nothing; a list number stays with its item.
        assert_eq!(split("A *b* c (d) e."), ["A *b* c (d) e."]);
        assert_eq!(split("1. First step."), ["1. First step."]);
    }

    fn split(text: &str) -> Vec<String> {
        sentences(text)
            .iter()
            .map(|span| {
                text.chars()
                    .skip(span.start)
                    .take(span.end - span.start)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn hard_wrapped_prose_keeps_its_sentences_and_blocks_keep_their_lines() {
        let text = "Only a salted SHA-256 of the\nsecret is stored. It is compared\nin constant \
                    time.\n\n## Keys\n- first item\n- second\nitem\n1. numbered\n| a | b |\n\
                    | 1 | 2 |\n```console\n$ basalt keys list\nid  principal\n```\nAfter the fence";
        assert_eq!(
            split(text),
            [
                "Only a salted SHA-256 of the\nsecret is stored.",
                "It is compared\nin constant time.",
                "## Keys",
                "- first item",
                "- second\nitem",
                "1. numbered",
                "| a | b |",
                "| 1 | 2 |",
                "```console\n$ basalt keys list\nid  principal\n```",
                "After the fence",
            ]
        );
    }

    #[test]
    fn prose_words_skip_inline_code() {
        assert_eq!(
            prose_words("Keys go in `api_key` or `X-Api-Key` headers."),
            ["key", "go", "header"]
        );
        // An unclosed backtick is text, not code.
        assert_eq!(prose_words("a `b c"), ["b", "c"]);
    }

    #[test]
    fn content_words_drop_function_words() {
        assert_eq!(
            content_words("The Granite is an igneous rock, 3 km."),
            ["granite", "igneous", "rock", "3", "km"]
        );
    }
}
