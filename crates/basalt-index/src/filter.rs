//! Metadata filters: a small expression language (`--filter`) and its JSON form, evaluated per
//! chunk *inside* the search, before the top k are chosen, so k matching chunks come back
//! whenever k exist. Document-level access control uses the same path as a pre-filter.
//!
//! Syntax: `tag = "q3" and (year >= 2020 or source prefix "docs/") and not format in (pdf, docx)`.
//! Fields: `doc_id`, `source`, `title`, `format`, `tag` (any of the document's tags), `page`,
//! `ingested_at`, and any user metadata key (also written `meta.KEY`). Values are quoted
//! strings, numbers, `true`/`false`, or bare words. Ranges compare numbers numerically and
//! everything else as text, so ISO dates (`2024-05-01`) order correctly.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::DocumentRecord;

/// A filter expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    Eq {
        field: String,
        value: Value,
    },
    In {
        field: String,
        values: Vec<Value>,
    },
    Prefix {
        field: String,
        prefix: String,
    },
    Range {
        field: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gt: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gte: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lt: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lte: Option<Value>,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
}

/// A filter that could not be parsed, with the position it failed at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at character {position}: {message}")]
pub struct FilterError {
    pub position: usize,
    pub message: String,
}

impl Filter {
    /// Parses the text syntax described in the module documentation.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens,
            next: 0,
            end: text.chars().count(),
        };
        let filter = parser.or()?;
        match parser.tokens.get(parser.next) {
            None => Ok(filter),
            Some((position, token)) => Err(FilterError {
                position: *position,
                message: format!("unexpected {token} after a complete expression"),
            }),
        }
    }

    /// Whether a chunk of `document` on `page` passes.
    pub fn matches(&self, document: &DocumentRecord, page: Option<u32>) -> bool {
        match self {
            Filter::Eq { field, value } => {
                field_values(document, page, field).any(|candidate| equal(&candidate, value))
            }
            Filter::In { field, values } => field_values(document, page, field)
                .any(|candidate| values.iter().any(|value| equal(&candidate, value))),
            Filter::Prefix { field, prefix } => {
                field_values(document, page, field).any(|candidate| match candidate {
                    Value::String(text) => text.starts_with(prefix.as_str()),
                    _ => false,
                })
            }
            Filter::Range {
                field,
                gt,
                gte,
                lt,
                lte,
            } => field_values(document, page, field).any(|candidate| {
                let holds = |bound: &Option<Value>, accept: fn(Ordering) -> bool| {
                    bound
                        .as_ref()
                        .is_none_or(|bound| compare(&candidate, bound).is_some_and(accept))
                };
                holds(gt, Ordering::is_gt)
                    && holds(gte, Ordering::is_ge)
                    && holds(lt, Ordering::is_lt)
                    && holds(lte, Ordering::is_le)
            }),
            Filter::And(parts) => parts.iter().all(|part| part.matches(document, page)),
            Filter::Or(parts) => parts.iter().any(|part| part.matches(document, page)),
            Filter::Not(inner) => !inner.matches(document, page),
        }
    }
}

/// The values a field has for one chunk (tags have several; a missing field has none).
fn field_values<'a>(
    document: &'a DocumentRecord,
    page: Option<u32>,
    field: &str,
) -> Box<dyn Iterator<Item = Value> + 'a> {
    let text = |value: &str| std::iter::once(Value::String(value.to_owned()));
    match field {
        "doc_id" => Box::new(text(&document.doc_id)),
        "source" => Box::new(text(&document.source)),
        "format" => Box::new(text(&document.format)),
        "ingested_at" => Box::new(text(&document.ingested_at)),
        "title" => Box::new(
            document
                .title
                .iter()
                .map(|title| Value::String(title.clone())),
        ),
        "tag" | "tags" => Box::new(document.tags.iter().map(|tag| Value::String(tag.clone()))),
        "page" => Box::new(page.into_iter().map(Value::from)),
        other => {
            let key = other.strip_prefix("meta.").unwrap_or(other);
            Box::new(
                document
                    .metadata
                    .get(key)
                    .into_iter()
                    .flat_map(|value| match value {
                        Value::Array(items) => items.clone(),
                        other => vec![other.clone()],
                    }),
            )
        }
    }
}

fn equal(candidate: &Value, wanted: &Value) -> bool {
    compare(candidate, wanted) == Some(Ordering::Equal)
}

/// Numbers compare numerically (a numeric string counts as a number when the other side is
/// one), booleans as booleans, everything else as text.
fn compare(candidate: &Value, bound: &Value) -> Option<Ordering> {
    let number = |value: &Value| match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    match (candidate, bound) {
        (Value::Number(_), _) | (_, Value::Number(_)) => {
            number(candidate)?.partial_cmp(&number(bound)?)
        }
        (Value::Bool(left), Value::Bool(right)) => Some(left.cmp(right)),
        (Value::String(left), Value::String(right)) => Some(left.as_str().cmp(right.as_str())),
        (Value::Bool(left), Value::String(right)) => Some(left.to_string().as_str().cmp(right)),
        (Value::String(left), Value::Bool(right)) => Some(left.as_str().cmp(&right.to_string())),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Number(f64, String),
    Op(&'static str),
    Open,
    Close,
    Comma,
}

impl std::fmt::Display for Token {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Word(word) => write!(formatter, "{word:?}"),
            Token::Quoted(text) => write!(formatter, "string {text:?}"),
            Token::Number(_, text) => write!(formatter, "number {text}"),
            Token::Op(op) => write!(formatter, "{op:?}"),
            Token::Open => formatter.write_str("\"(\""),
            Token::Close => formatter.write_str("\")\""),
            Token::Comma => formatter.write_str("\",\""),
        }
    }
}

fn lex(text: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let start = at;
        let current = chars[at];
        let next = chars.get(at + 1).copied();
        let token = match current {
            c if c.is_whitespace() => {
                at += 1;
                continue;
            }
            '(' => {
                at += 1;
                Token::Open
            }
            ')' => {
                at += 1;
                Token::Close
            }
            ',' => {
                at += 1;
                Token::Comma
            }
            '=' => {
                at += if next == Some('=') { 2 } else { 1 };
                Token::Op("=")
            }
            '!' if next == Some('=') => {
                at += 2;
                Token::Op("!=")
            }
            '<' | '>' => {
                let or_equal = next == Some('=');
                at += if or_equal { 2 } else { 1 };
                Token::Op(match (current, or_equal) {
                    ('<', false) => "<",
                    ('<', true) => "<=",
                    ('>', false) => ">",
                    _ => ">=",
                })
            }
            '^' if next == Some('=') => {
                at += 2;
                Token::Op("prefix")
            }
            '"' | '\'' => {
                at += 1;
                let mut value = String::new();
                loop {
                    match chars.get(at) {
                        None => {
                            return Err(FilterError {
                                position: start,
                                message: "unterminated string".into(),
                            });
                        }
                        Some('\\') if chars.get(at + 1).is_some() => {
                            value.push(chars[at + 1]);
                            at += 2;
                        }
                        Some(&c) if c == current => {
                            at += 1;
                            break;
                        }
                        Some(&c) => {
                            value.push(c);
                            at += 1;
                        }
                    }
                }
                Token::Quoted(value)
            }
            _ => {
                while at < chars.len()
                    && !chars[at].is_whitespace()
                    && !"()=,!<>^\"'".contains(chars[at])
                {
                    at += 1;
                }
                if at == start {
                    return Err(FilterError {
                        position: start,
                        message: format!("unexpected character {current:?}"),
                    });
                }
                let word: String = chars[start..at].iter().collect();
                match word.parse::<f64>() {
                    Ok(number) if number.is_finite() => Token::Number(number, word),
                    _ => Token::Word(word),
                }
            }
        };
        tokens.push((start, token));
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, token)| token)
    }

    fn position(&self) -> usize {
        self.tokens
            .get(self.next)
            .map_or(self.end, |(position, _)| *position)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError {
            position: self.position(),
            message: message.into(),
        })
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(found)) if found.eq_ignore_ascii_case(word)) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut parts = vec![self.and()?];
        while self.keyword("or") {
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut parts = vec![self.unary()?];
        while self.keyword("and") {
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.keyword("not") {
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Token::Open) {
            self.next += 1;
            let inner = self.or()?;
            if self.peek() != Some(&Token::Close) {
                return self.error("expected \")\"");
            }
            self.next += 1;
            return Ok(inner);
        }
        self.condition()
    }

    fn condition(&mut self) -> Result<Filter, FilterError> {
        let field = match self.peek() {
            Some(Token::Word(word)) => word.clone(),
            Some(other) => return self.error(format!("expected a field name, found {other}")),
            None => return self.error("expected a field name, found the end"),
        };
        self.next += 1;
        if self.keyword("in") {
            return self.in_list(field);
        }
        if self.keyword("prefix") {
            return match self.value()? {
                Value::String(prefix) => Ok(Filter::Prefix { field, prefix }),
                _ => self.error("prefix needs a string"),
            };
        }
        let op = match self.peek() {
            Some(Token::Op(op)) => *op,
            _ => {
                return self.error(format!(
                    "expected =, !=, <, <=, >, >=, in or prefix after {field:?}"
                ));
            }
        };
        self.next += 1;
        let value = self.value()?;
        let range = |gt, gte, lt, lte| Filter::Range {
            field: field.clone(),
            gt,
            gte,
            lt,
            lte,
        };
        Ok(match op {
            "=" => Filter::Eq { field, value },
            "!=" => Filter::Not(Box::new(Filter::Eq { field, value })),
            "prefix" => match value {
                Value::String(prefix) => Filter::Prefix { field, prefix },
                _ => return self.error("^= needs a string"),
            },
            "<" => range(None, None, Some(value), None),
            "<=" => range(None, None, None, Some(value)),
            ">" => range(Some(value), None, None, None),
            _ => range(None, Some(value), None, None),
        })
    }

    fn in_list(&mut self, field: String) -> Result<Filter, FilterError> {
        if self.peek() != Some(&Token::Open) {
            return self.error("expected \"(\" after in");
        }
        self.next += 1;
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            match self.peek() {
                Some(Token::Comma) => self.next += 1,
                Some(Token::Close) => {
                    self.next += 1;
                    return Ok(Filter::In { field, values });
                }
                _ => return self.error("expected \",\" or \")\" in the list"),
            }
        }
    }

    fn value(&mut self) -> Result<Value, FilterError> {
        let value = match self.peek() {
            Some(Token::Quoted(text)) => Value::String(text.clone()),
            Some(Token::Number(number, text)) => {
                // Keep integers exact; `1e3`-style literals become floats.
                text.parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(*number))
            }
            Some(Token::Word(word)) if word == "true" => Value::Bool(true),
            Some(Token::Word(word)) if word == "false" => Value::Bool(false),
            Some(Token::Word(word)) => Value::String(word.clone()),
            Some(other) => return self.error(format!("expected a value, found {other}")),
            None => return self.error("expected a value, found the end"),
        };
        self.next += 1;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn document() -> DocumentRecord {
        let mut metadata = BTreeMap::new();
        metadata.insert("year".to_owned(), Value::from(2021));
        metadata.insert("team".to_owned(), Value::from("platform"));
        metadata.insert("published".to_owned(), Value::from("2021-06-30"));
        DocumentRecord {
            doc_id: "d1".into(),
            source: "docs/guide/setup.md".into(),
            title: Some("Setup".into()),
            format: "markdown".into(),
            content_hash: "sha256:00".into(),
            ingested_at: "2026-11-29T10:00:00Z".into(),
            text_chars: 10,
            pages: None,
            chunk_count: 1,
            tags: vec!["ops".into(), "q3".into()],
            metadata,
            readers: Vec::new(),
        }
    }

    fn check(expression: &str, page: Option<u32>) -> bool {
        let filter =
            Filter::parse(expression).unwrap_or_else(|error| panic!("{expression}: {error}"));
        filter.matches(&document(), page)
    }

    #[test]
    fn conditions_match_like_a_user_expects() {
        assert!(check("tag = q3", None));
        assert!(check("tags in (x, ops)", None));
        assert!(!check("tag = q4", None));
        assert!(check("source prefix \"docs/\"", None));
        assert!(check("source ^= 'docs/guide'", None));
        assert!(!check("source prefix \"src/\"", None));
        assert!(check("year >= 2020 and year < 2022", None));
        assert!(!check("year > 2021", None));
        assert!(check("meta.team = platform", None));
        assert!(check(
            "published >= \"2021-01-01\" and published <= \"2021-12-31\"",
            None
        ));
        assert!(check("ingested_at >= 2026-11-01", None));
        assert!(check("page >= 3", Some(3)));
        assert!(
            !check("page >= 3", None),
            "a chunk without a page has no page to compare"
        );
        assert!(check("not format in (pdf, docx)", None));
        assert!(check("format != pdf", None));
        assert!(check("(tag = nope or title = Setup) and doc_id = d1", None));
        assert!(!check("missing = 1", None));
        assert!(check("not missing = 1", None));
    }

    #[test]
    fn operators_bind_and_tighter_than_or() {
        let filter = Filter::parse("a = 1 or b = 2 and c = 3").expect("parses");
        assert!(matches!(&filter, Filter::Or(parts) if matches!(parts[1], Filter::And(_))));
    }

    #[test]
    fn bad_filters_say_where_and_why() {
        for (text, position) in [
            ("tag =", 5),
            ("tag = q3 and", 12),
            ("(tag = q3", 9),
            ("tag q3", 4),
            ("tag in q3", 7),
            ("tag = \"open", 6),
            ("= 3", 0),
            ("tag = q3)", 8),
        ] {
            let error = Filter::parse(text).expect_err(text);
            assert_eq!(error.position, position, "{text}: {error}");
        }
    }

    #[test]
    fn the_json_form_round_trips() {
        let filter = Filter::parse("tag in (a, b) and not year < 2020").expect("parses");
        let json = serde_json::to_string(&filter).expect("serializes");
        let back: Filter = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, filter);
    }

    proptest::proptest! {
        #[test]
        fn any_input_parses_or_errors_without_panicking(text in ".{0,40}") {
            let _ = Filter::parse(&text);
        }
    }
}
