//! DOCX (Office Open XML): paragraphs in order, `Heading N` / outline-level paragraphs as
//! sections, tables as `cell | cell` rows, the title from the document properties (or a
//! `Title`-styled paragraph, or the first top-level heading). The zip is read with a cap on
//! expanded size, so a zip bomb is refused instead of filling memory.

use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::document::{DocumentBuilder, ExtractedDocument, collapse_whitespace};
use crate::error::ExtractError;

/// Most bytes one XML part of a DOCX may expand to.
pub const MAX_DOCX_PART_BYTES: u64 = 256 << 20;

const OLE_MAGIC: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

pub fn extract_docx(bytes: &[u8]) -> Result<ExtractedDocument, ExtractError> {
    if bytes.starts_with(OLE_MAGIC) {
        // Office stores password-protected OOXML in an OLE container (as it does legacy .doc).
        return Err(ExtractError::Encrypted);
    }
    let corrupt = |message: String| ExtractError::Corrupt {
        format: "DOCX",
        message,
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|error| corrupt(format!("not a readable zip archive: {error}")))?;
    let body = read_part(&mut archive, "word/document.xml")?
        .ok_or_else(|| corrupt("no word/document.xml inside".into()))?;
    let core_title = read_part(&mut archive, "docProps/core.xml")
        .ok()
        .flatten()
        .and_then(|core| core_title(&core));
    let mut document = parse_body(&body).map_err(corrupt)?;
    if let Some(title) = core_title {
        document.title = Some(title);
    }
    Ok(document)
}

fn read_part(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
) -> Result<Option<String>, ExtractError> {
    let corrupt = |message: String| ExtractError::Corrupt {
        format: "DOCX",
        message,
    };
    let file = match archive.by_name(name) {
        Ok(file) => file,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(error) => return Err(corrupt(format!("{name}: {error}"))),
    };
    let limit = MAX_DOCX_PART_BYTES;
    if file.size() > limit {
        return Err(ExtractError::TooLarge {
            format: "DOCX",
            limit,
        });
    }
    let mut text = Vec::new();
    // The declared size can lie; the cap on what is actually read cannot.
    file.take(limit + 1)
        .read_to_end(&mut text)
        .map_err(|error| corrupt(format!("{name}: {error}")))?;
    if text.len() as u64 > limit {
        return Err(ExtractError::TooLarge {
            format: "DOCX",
            limit,
        });
    }
    String::from_utf8(text)
        .map(Some)
        .map_err(|error| corrupt(format!("{name} is not UTF-8: {error}")))
}

fn attribute(element: &BytesStart<'_>, local: &str) -> Option<String> {
    element.attributes().flatten().find_map(|attribute| {
        let key = attribute.key.local_name();
        (key.as_ref() == local)
            .then(|| {
                attribute
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .ok()
                    .map(|value| value.into_owned())
            })
            .flatten()
    })
}

/// `Heading2`, `heading 2` → 2; `Title` → 0 (the title).
fn heading_level_of_style(style: &str) -> Option<u8> {
    let lower = style.to_ascii_lowercase().replace(' ', "");
    if lower == "title" {
        return Some(0);
    }
    let digits = lower.strip_prefix("heading")?;
    digits
        .parse::<u8>()
        .ok()
        .filter(|level| (1..=9).contains(level))
}

#[derive(Default)]
struct Paragraph {
    text: String,
    level: Option<u8>,
}

fn parse_body(xml: &str) -> Result<ExtractedDocument, String> {
    let mut reader = Reader::from_str(xml);
    let mut builder = DocumentBuilder::default();
    let mut paragraph: Option<Paragraph> = None;
    let mut in_text = false;
    let mut in_run = false;
    let mut table_depth = 0_usize;
    let mut rows: Vec<String> = Vec::new();
    let mut cells: Vec<String> = Vec::new();
    let mut cell = String::new();
    let mut first_heading: Option<String> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|error| format!("XML error at byte {}: {error}", reader.error_position()))?;
        match event {
            // Empty structural elements (`<w:t/>`, `<w:p/>`) hold nothing and have no end tag.
            Event::Empty(element)
                if matches!(
                    element.local_name().as_ref(),
                    "p" | "r" | "t" | "tbl" | "tr" | "tc"
                ) => {}
            Event::Start(element) | Event::Empty(element) => {
                let name = element.local_name();
                match name.as_ref() {
                    "p" => paragraph = Some(Paragraph::default()),
                    "r" => in_run = true,
                    "t" => in_text = true,
                    "pStyle" => {
                        if let (Some(paragraph), Some(style)) =
                            (&mut paragraph, attribute(&element, "val"))
                        {
                            paragraph.level = paragraph.level.or(heading_level_of_style(&style));
                        }
                    }
                    "outlineLvl" => {
                        let level =
                            attribute(&element, "val").and_then(|value| value.parse::<u8>().ok());
                        if let (Some(paragraph), Some(level)) = (&mut paragraph, level)
                            && level < 9
                        {
                            paragraph.level = Some(level + 1);
                        }
                    }
                    "tab" if in_run => push(&mut paragraph, "\t"),
                    "br" | "cr" if in_run => push(&mut paragraph, "\n"),
                    "tbl" => table_depth += 1,
                    "tr" if table_depth == 1 => cells.clear(),
                    "tc" if table_depth == 1 => cell.clear(),
                    _ => {}
                }
            }
            Event::End(element) => match element.local_name().as_ref() {
                "t" => in_text = false,
                "r" => in_run = false,
                "p" => {
                    let Some(Paragraph { text, level }) = paragraph.take() else {
                        continue;
                    };
                    let text = text.trim().to_string();
                    if table_depth > 0 {
                        if !text.is_empty() {
                            if !cell.is_empty() {
                                cell.push(' ');
                            }
                            cell.push_str(&text);
                        }
                    } else {
                        match level {
                            Some(0) => {
                                builder.title(&text);
                                builder.heading(1, &text);
                            }
                            Some(level) => {
                                if level == 1 && first_heading.is_none() {
                                    first_heading = Some(collapse_whitespace(&text));
                                }
                                builder.heading(level, &text);
                            }
                            None => builder.paragraph(&text),
                        }
                    }
                }
                "tc" if table_depth == 1 => {
                    cells.push(collapse_whitespace(&std::mem::take(&mut cell)));
                }
                "tr" if table_depth == 1 => {
                    let row = std::mem::take(&mut cells);
                    if row.iter().any(|cell| !cell.is_empty()) {
                        rows.push(row.join(" | "));
                    }
                }
                "tbl" => {
                    table_depth = table_depth.saturating_sub(1);
                    if table_depth == 0 {
                        builder.paragraph(&std::mem::take(&mut rows).join("\n"));
                    }
                }
                _ => {}
            },
            Event::Text(text) if in_text => push(&mut paragraph, &text.xml10_content()),
            Event::CData(text) if in_text => {
                push(&mut paragraph, &text.into_inner());
            }
            Event::GeneralRef(reference) if in_text => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(character)) => Some(character.to_string()),
                    _ => match reference.xml10_content().as_ref() {
                        "amp" => Some("&".into()),
                        "lt" => Some("<".into()),
                        "gt" => Some(">".into()),
                        "quot" => Some("\"".into()),
                        "apos" => Some("'".into()),
                        _ => None,
                    },
                };
                if let Some(text) = resolved {
                    push(&mut paragraph, &text);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(title) = first_heading {
        builder.title(&title);
    }
    Ok(builder.finish())
}

fn push(paragraph: &mut Option<Paragraph>, text: &str) {
    if let Some(paragraph) = paragraph {
        paragraph.text.push_str(text);
    }
}

fn core_title(xml: &str) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    let mut in_title = false;
    let mut title = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(element) if element.local_name().as_ref() == "title" => in_title = true,
            Event::End(element) if element.local_name().as_ref() == "title" => break,
            Event::Text(text) if in_title => title.push_str(&text.xml10_content()),
            Event::Eof => break,
            _ => {}
        }
    }
    let title = collapse_whitespace(&title);
    (!title.is_empty()).then_some(title)
}
