//! What a parser hands to the chunker: a document's extracted text and its sections.

use std::ops::Range;

/// The text Basalt extracted from one source file, and where its structure lies in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtractedDocument {
    /// The extracted text; every offset in Basalt's provenance points into it.
    pub text: String,
    /// The document's title when the format has one (first top-level heading, `<title>`, …).
    pub title: Option<String>,
    /// Consecutive, non-overlapping parts of `text`, in order.
    pub sections: Vec<Section>,
}

/// A part of a document's extracted text that sits under one heading path (and page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Byte range in the document's extracted text.
    pub range: Range<usize>,
    /// Headings from the outermost to the innermost, e.g. `["Install", "On Debian"]`.
    pub heading_path: Vec<String>,
    /// Page number (from 1) for paged formats.
    pub page: Option<u32>,
}

impl Section {
    /// A section with no heading and no page.
    pub fn new(range: Range<usize>) -> Self {
        Section {
            range,
            heading_path: Vec::new(),
            page: None,
        }
    }
}
