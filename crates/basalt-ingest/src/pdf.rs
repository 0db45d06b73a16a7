//! PDF: the text of each page (pdf-extract on lopdf), one section per page with its page
//! number. Lines inside a paragraph are joined and words hyphenated across a line break are
//! rejoined, so sentences survive for the chunker. A PDF that yields no text at all (scanned
//! pages) is reported as such rather than indexed empty.

use crate::document::{DocumentBuilder, ExtractedDocument};
use crate::error::ExtractError;
use crate::guard::guarded;

pub fn extract_pdf(bytes: &[u8]) -> Result<ExtractedDocument, ExtractError> {
    let header = &bytes[..bytes.len().min(1024)];
    if !header.windows(5).any(|window| window == b"%PDF-") {
        return Err(ExtractError::Corrupt {
            format: "PDF",
            message: "no %PDF- header".into(),
        });
    }
    let pages = match guarded("PDF", || pdf_extract_pages(bytes)) {
        Ok(pages) => pages,
        // pdf-extract gives up on some real-world files (bad hex strings, odd fonts) by
        // panicking; lopdf's simpler text extraction often still reads them.
        Err(crash) => lopdf_pages(bytes).ok_or(crash)?,
    }
    .map_err(|error| {
        let message = error.to_string();
        let lower = message.to_lowercase();
        if ["encrypt", "decrypt", "password"]
            .iter()
            .any(|word| lower.contains(word))
        {
            ExtractError::Encrypted
        } else {
            ExtractError::Corrupt {
                format: "PDF",
                message,
            }
        }
    })?;
    let mut builder = DocumentBuilder::default();
    for (index, page) in pages.iter().enumerate() {
        builder.page(index as u32 + 1);
        for paragraph in paragraphs(page) {
            builder.paragraph(&paragraph);
        }
    }
    let document = builder.finish();
    if document.text.trim().is_empty() {
        return Err(ExtractError::NoTextInPdf);
    }
    Ok(document)
}

/// Text per page with pdf-extract, over exactly the pages the page tree lists.
/// (`pdf_extract::extract_text_from_mem_by_pages` asks for page 1, 2, … until one fails, which
/// never happens for some damaged files: the fuzzer found a 927-byte one that looped forever.)
fn pdf_extract_pages(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut document = lopdf::Document::load_mem(bytes).map_err(|error| error.to_string())?;
    if document.is_encrypted() {
        document.decrypt("").map_err(|error| error.to_string())?;
    }
    let pages = document.get_pages();
    // pdf-extract follows `/Parent` links for inherited attributes without a visited set; a
    // page that is its own ancestor (found by the fuzzer) would make it loop forever.
    for id in pages.values() {
        check_parent_chain(&document, *id)?;
    }
    let numbers: Vec<u32> = pages.keys().copied().collect();
    let mut pages = Vec::with_capacity(numbers.len());
    for number in numbers {
        let mut text = String::new();
        let mut output = pdf_extract::PlainTextOutput::new(&mut text);
        // A page that fails keeps its number, empty, so later pages keep theirs.
        if pdf_extract::output_doc_page(&document, &mut output, number).is_err() {
            text.clear();
        }
        pages.push(text);
    }
    Ok(pages)
}

/// Fails when following `/Parent` from a page revisits an object or goes implausibly deep.
fn check_parent_chain(document: &lopdf::Document, page: lopdf::ObjectId) -> Result<(), String> {
    let mut seen = vec![page];
    let mut current = page;
    while let Ok(parent) = document
        .get_object(current)
        .and_then(lopdf::Object::as_dict)
        .and_then(|dictionary| dictionary.get(b"Parent"))
        .and_then(lopdf::Object::as_reference)
    {
        if seen.contains(&parent) || seen.len() > 256 {
            return Err(format!(
                "the page tree loops back on itself at object {} {}",
                parent.0, parent.1
            ));
        }
        seen.push(parent);
        current = parent;
    }
    Ok(())
}

/// Text per page with lopdf alone, or `None` when that fails too.
fn lopdf_pages(bytes: &[u8]) -> Option<Result<Vec<String>, String>> {
    let pages = guarded("PDF", || {
        let document = lopdf::Document::load_mem(bytes).ok()?;
        let numbers: Vec<u32> = document.get_pages().keys().copied().collect();
        let pages: Vec<String> = numbers
            .iter()
            .map(|number| document.extract_text(&[*number]).unwrap_or_default())
            .collect();
        pages
            .iter()
            .any(|page| !page.trim().is_empty())
            .then_some(pages)
    })
    .ok()
    .flatten()?;
    Some(Ok(pages))
}

/// Blank-line-separated paragraphs of a page, each on one line.
fn paragraphs(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in page.lines() {
        let line = line.trim();
        if line.is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if current.is_empty() {
            current.push_str(line);
        } else if current.ends_with('-')
            && current[..current.len() - 1].ends_with(char::is_alphabetic)
            && line.starts_with(char::is_lowercase)
        {
            current.pop();
            current.push_str(line);
        } else {
            current.push(' ');
            current.push_str(line);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_join_into_paragraphs_and_hyphenation_is_undone() {
        assert_eq!(
            paragraphs("An exam-\nple of a\nparagraph.\n\n\nNext one.\nSelf-\nService"),
            ["An example of a paragraph.", "Next one. Self- Service"]
        );
    }

    #[test]
    fn non_pdf_bytes_are_refused_cleanly() {
        assert!(matches!(
            extract_pdf(b"hello"),
            Err(ExtractError::Corrupt { .. })
        ));
        let truncated = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nendobj\n";
        assert!(extract_pdf(truncated).is_err());
    }
}
