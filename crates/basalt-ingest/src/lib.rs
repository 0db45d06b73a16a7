//! Ingestion for Basalt: source bytes → extracted text with structure ([`extract`]), and that
//! text → chunks that fit the embedding model ([`chunk_sections`]).
//!
//! Formats: plain text, Markdown, HTML, PDF, DOCX, CSV, JSON and JSON Lines. A file gives one
//! document, except record formats (CSV, JSON, JSONL), which give one per record. Every parser
//! returns an [`ExtractError`] rather than panicking, whatever the bytes; third-party parsers
//! run behind a panic boundary as well.
//!
//! Pure logic: no file system, no model. Token counts come from the caller through
//! [`TokenCounter`], so this crate does not depend on the model crate.

mod chunker;
mod document;
mod docx;
mod error;
mod guard;
mod html;
mod markdown;
mod pdf;
mod records;
pub mod samples;

use std::collections::BTreeMap;
use std::path::Path;

pub use chunker::{ChunkSpan, ChunkerOptions, TokenCounter, chunk_sections};
pub use document::{ExtractedDocument, Section};
pub use docx::{MAX_DOCX_PART_BYTES, extract_docx};
pub use error::ExtractError;
pub use guard::quiet_parser_panics;
pub use html::{MAX_HTML_DEPTH, extract_html};
pub use markdown::{extract_markdown, extract_plain_text};
pub use pdf::extract_pdf;
pub use records::{extract_csv, extract_json, extract_jsonl};

/// A source format Basalt can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
    Csv,
    Json,
    Jsonl,
}

impl Format {
    pub const ALL: [Format; 8] = [
        Format::Text,
        Format::Markdown,
        Format::Html,
        Format::Pdf,
        Format::Docx,
        Format::Csv,
        Format::Json,
        Format::Jsonl,
    ];

    /// The format a file name's extension names, if Basalt reads it.
    pub fn from_path(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match extension.as_str() {
            "txt" | "text" => Format::Text,
            "md" | "markdown" => Format::Markdown,
            "html" | "htm" | "xhtml" => Format::Html,
            "pdf" => Format::Pdf,
            "docx" => Format::Docx,
            "csv" => Format::Csv,
            "json" => Format::Json,
            "jsonl" | "ndjson" => Format::Jsonl,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Jsonl => "jsonl",
        }
    }

    /// Whether one file holds many documents (one per record).
    pub fn has_records(self) -> bool {
        matches!(self, Format::Csv | Format::Json | Format::Jsonl)
    }
}

/// One document extracted from a source: the whole file, or one record of a record file.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractedRecord {
    /// The record's own id (`_id`, `id`), when it has one.
    pub id: Option<String>,
    /// Where in the file the record is (`line 7`, `row 3`, `item 2`); `None` for whole files.
    pub locator: Option<String>,
    pub document: ExtractedDocument,
    /// Fields of the record that become filterable metadata.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

impl ExtractedRecord {
    fn whole(document: ExtractedDocument) -> Self {
        ExtractedRecord {
            id: None,
            locator: None,
            document,
            metadata: BTreeMap::new(),
        }
    }
}

/// Extracts the documents in `bytes`, read as `format`.
pub fn extract(format: Format, bytes: &[u8]) -> Result<Vec<ExtractedRecord>, ExtractError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ExtractError::Empty);
    }
    let records = match format {
        Format::Pdf => vec![ExtractedRecord::whole(extract_pdf(bytes)?)],
        Format::Docx => vec![ExtractedRecord::whole(extract_docx(bytes)?)],
        Format::Text => vec![ExtractedRecord::whole(extract_plain_text(decode_text(
            bytes,
        )?))],
        Format::Markdown => vec![ExtractedRecord::whole(extract_markdown(decode_text(
            bytes,
        )?))],
        Format::Html => vec![ExtractedRecord::whole(extract_html(&decode_html(bytes)?)?)],
        Format::Csv => extract_csv(decode_text(bytes)?.as_bytes())?,
        Format::Json => extract_json(decode_text(bytes)?)?,
        Format::Jsonl => extract_jsonl(decode_text(bytes)?)?,
    };
    if records
        .iter()
        .all(|record| record.document.text.trim().is_empty())
    {
        return Err(ExtractError::Empty);
    }
    Ok(records)
}

/// Text files must be UTF-8 (a byte-order mark is dropped) and must not be binary.
pub fn decode_text(bytes: &[u8]) -> Result<&str, ExtractError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Some(offset) = bytes.iter().take(64 << 10).position(|&byte| byte == 0) {
        return Err(ExtractError::Binary { offset });
    }
    let text = std::str::from_utf8(bytes).map_err(|error| ExtractError::InvalidUtf8 {
        offset: error.valid_up_to(),
    })?;
    if text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(text)
}

/// HTML declares its own encoding; pages that are not UTF-8 are decoded lossily rather than
/// refused (browsers do the same), but binary content is still refused.
fn decode_html(bytes: &[u8]) -> Result<String, ExtractError> {
    match decode_text(bytes) {
        Ok(text) => Ok(text.to_string()),
        Err(ExtractError::InvalidUtf8 { .. }) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_extensions() {
        assert_eq!(Format::from_path(Path::new("a/B.HTM")), Some(Format::Html));
        assert_eq!(
            Format::from_path(Path::new("corpus.jsonl")),
            Some(Format::Jsonl)
        );
        assert_eq!(Format::from_path(Path::new("Makefile")), None);
        assert_eq!(Format::from_path(Path::new("x.gz")), None);
    }

    #[test]
    fn bad_text_is_refused_with_a_reason() {
        assert_eq!(extract(Format::Text, b""), Err(ExtractError::Empty));
        assert_eq!(extract(Format::Text, b" \n\t"), Err(ExtractError::Empty));
        assert_eq!(
            extract(Format::Text, b"ab\0cd"),
            Err(ExtractError::Binary { offset: 2 })
        );
        assert_eq!(
            extract(Format::Markdown, b"ok \xFF"),
            Err(ExtractError::InvalidUtf8 { offset: 3 })
        );
        let records = extract(Format::Text, b"\xEF\xBB\xBFhello").expect("BOM dropped");
        assert_eq!(records[0].document.text, "hello");
        let latin1 = extract(Format::Html, b"<p>caf\xE9</p>").expect("lossy HTML");
        assert!(latin1[0].document.text.starts_with("caf"));
    }
}
