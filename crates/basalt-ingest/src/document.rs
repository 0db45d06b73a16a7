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

/// Builds an [`ExtractedDocument`] from structure a parser walks (HTML, DOCX, PDF): paragraphs
/// are separated by blank lines, headings open sections (their text included) whose heading path
/// follows the heading levels, and a page change opens a section with the new page number.
#[derive(Debug, Default)]
pub(crate) struct DocumentBuilder {
    text: String,
    title: Option<String>,
    sections: Vec<Section>,
    path: Vec<(u8, String)>,
    section_start: usize,
    page: Option<u32>,
}

impl DocumentBuilder {
    fn close_section(&mut self) {
        if self.text.len() > self.section_start {
            self.sections.push(Section {
                range: self.section_start..self.text.len(),
                heading_path: self
                    .path
                    .iter()
                    .map(|(_, heading)| heading.clone())
                    .collect(),
                page: self.page,
            });
        }
        self.section_start = self.text.len();
    }

    /// Appends a paragraph (trimmed; nothing happens when it is blank).
    pub(crate) fn paragraph(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.text.push_str(text);
        self.text.push_str("\n\n");
    }

    /// Opens a section under a heading of `level` (1 = outermost).
    pub(crate) fn heading(&mut self, level: u8, text: &str) {
        let text = collapse_whitespace(text);
        if text.is_empty() {
            return;
        }
        self.close_section();
        self.path.retain(|(outer, _)| *outer < level);
        self.path.push((level, text.clone()));
        self.paragraph(&text);
    }

    /// Everything from here on is on `page`.
    pub(crate) fn page(&mut self, page: u32) {
        self.close_section();
        self.page = Some(page);
    }

    /// Sets the title unless one is set already.
    pub(crate) fn title(&mut self, title: &str) {
        let title = collapse_whitespace(title);
        if self.title.is_none() && !title.is_empty() {
            self.title = Some(title);
        }
    }

    pub(crate) fn finish(mut self) -> ExtractedDocument {
        let length = self.text.trim_end().len();
        self.text.truncate(length);
        for section in &mut self.sections {
            section.range.start = section.range.start.min(length);
            section.range.end = section.range.end.min(length);
        }
        self.section_start = self.section_start.min(length);
        self.close_section();
        self.sections.retain(|section| !section.range.is_empty());
        ExtractedDocument {
            text: self.text,
            title: self.title,
            sections: self.sections,
        }
    }
}

/// Runs of whitespace become one space; the ends are trimmed.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
