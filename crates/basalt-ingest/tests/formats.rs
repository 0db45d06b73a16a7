//! Every format through `extract`, on real files built by `samples` (PDF, DOCX) or written out.

use basalt_ingest::samples::{Block, docx, docx_with_body, pdf};
use basalt_ingest::{ExtractError, Format, MAX_DOCX_PART_BYTES, extract};

fn one(format: Format, bytes: &[u8]) -> basalt_ingest::ExtractedDocument {
    let mut records = extract(format, bytes).unwrap_or_else(|error| panic!("{format:?}: {error}"));
    assert_eq!(records.len(), 1);
    records.remove(0).document
}

#[test]
fn pdf_pages_keep_their_numbers() {
    let bytes = pdf(&[
        &["Basalt Handbook", "Basalt is an extrusive igneous rock."],
        &[],
        &["It forms from rapidly cooling lava (rich in iron)."],
    ]);
    let document = one(Format::Pdf, &bytes);
    assert!(
        document.text.contains("extrusive igneous rock"),
        "{:?}",
        document.text
    );
    let pages: Vec<(Option<u32>, &str)> = document
        .sections
        .iter()
        .map(|section| (section.page, &document.text[section.range.clone()]))
        .collect();
    assert_eq!(pages.len(), 2, "the empty page has no section: {pages:?}");
    assert_eq!(pages[0].0, Some(1));
    assert_eq!(pages[1].0, Some(3));
    assert!(
        pages[1].1.contains("rapidly cooling lava (rich in iron)"),
        "{pages:?}"
    );
}

#[test]
fn a_page_tree_that_loops_is_refused_not_followed_forever() {
    // Found by the fuzzer: a page that is its own parent, with no MediaBox of its own, sent
    // pdf-extract up the `/Parent` chain forever. Same-length edits keep the xref offsets valid.
    let bytes = pdf(&[&["Some text."], &["More text."]]);
    let text = String::from_utf8(bytes).expect("ASCII");
    let looped =
        text.replacen("/Parent 2 0 R", "/Parent 4 0 R", 1)
            .replacen("/MediaBox", "/MediaBoz", 1);
    let error = extract(Format::Pdf, looped.as_bytes()).expect_err("refused");
    assert!(
        error.to_string().contains("loops back on itself"),
        "{error}"
    );
}

#[test]
fn a_pdf_without_text_is_reported_as_such() {
    assert_eq!(
        extract(Format::Pdf, &pdf(&[&[], &[]])),
        Err(ExtractError::NoTextInPdf)
    );
}

#[test]
fn corrupt_and_truncated_pdfs_are_errors_not_panics() {
    let bytes = pdf(&[&["Some text on a page."]]);
    for cut in [10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 20] {
        let _ = extract(Format::Pdf, &bytes[..cut]);
    }
    let mut flipped = bytes.clone();
    for index in (40..flipped.len()).step_by(7) {
        flipped[index] ^= 0x5A;
    }
    let _ = extract(Format::Pdf, &flipped);
    assert!(matches!(
        extract(Format::Pdf, b"not a pdf at all"),
        Err(ExtractError::Corrupt { .. })
    ));
}

#[test]
fn docx_headings_paragraphs_and_tables() {
    let bytes = docx(&[
        Block::Title("Travel Policy"),
        Block::Paragraph("Applies to all staff & contractors."),
        Block::Heading(1, "Booking"),
        Block::Paragraph("Book through the portal."),
        Block::Heading(2, "Per diem"),
        Block::Table(&[&["City", "Rate"], &["Paris", "90 EUR"]]),
    ]);
    let document = one(Format::Docx, &bytes);
    assert_eq!(document.title.as_deref(), Some("Travel Policy"));
    assert!(
        document
            .text
            .contains("Applies to all staff & contractors.")
    );
    assert!(
        document.text.contains("City | Rate\nParis | 90 EUR"),
        "{:?}",
        document.text
    );
    let last = document.sections.last().expect("sections");
    assert_eq!(last.heading_path, ["Booking", "Per diem"]);
}

#[test]
fn bad_docx_files_are_refused_with_reasons() {
    let ole = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0, 0];
    assert_eq!(extract(Format::Docx, &ole), Err(ExtractError::Encrypted));
    assert!(matches!(
        extract(Format::Docx, b"PK\x03\x04 truncated"),
        Err(ExtractError::Corrupt { .. })
    ));
    let broken_xml = docx_with_body(b"<w:document><w:body><w:p><w:t>unclosed");
    let _ = extract(Format::Docx, &broken_xml);
    // A zip bomb: a document part that expands past the cap.
    let bomb = docx_with_body(&vec![b' '; MAX_DOCX_PART_BYTES as usize + 1]);
    assert!(
        bomb.len() < 2 << 20,
        "the bomb is small on disk ({} bytes)",
        bomb.len()
    );
    assert!(matches!(
        extract(Format::Docx, &bomb),
        Err(ExtractError::TooLarge { .. })
    ));
}

#[test]
fn html_markdown_text_and_records() {
    let html = one(Format::Html, b"<html><head><title>T</title><script>x()</script></head><body><h2>S</h2><p>Body text.</p></body></html>");
    assert_eq!(html.title.as_deref(), Some("T"));
    assert_eq!(html.text, "S\n\nBody text.");
    let markdown = one(
        Format::Markdown,
        b"# Guide\n\nIntro.\n\n## Step\n\nDo it.\n",
    );
    assert_eq!(markdown.sections.len(), 2);
    assert_eq!(one(Format::Text, b"plain words").text, "plain words");
    let csv = extract(
        Format::Csv,
        b"title,text,year\nA,alpha text,2020\nB,beta text,2021\n",
    )
    .expect("csv");
    assert_eq!(csv.len(), 2);
    assert_eq!(csv[1].document.title.as_deref(), Some("B"));
    let json = extract(
        Format::Json,
        br#"[{"id": "x1", "content": "first"}, {"id": "x2", "content": "second"}]"#,
    )
    .expect("json");
    assert_eq!(
        json.iter()
            .map(|record| record.id.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["x1", "x2"]
    );
    let jsonl = extract(
        Format::Jsonl,
        b"{\"_id\": \"d1\", \"title\": \"T\", \"text\": \"x\"}\n",
    )
    .expect("jsonl");
    assert_eq!(jsonl[0].id.as_deref(), Some("d1"));
}

#[test]
fn every_format_survives_arbitrary_bytes() {
    let seeds: Vec<Vec<u8>> = vec![
        pdf(&[&["a"]]),
        docx(&[Block::Paragraph("b")]),
        b"<p>c</p>".to_vec(),
        b"{\"text\": 1}".to_vec(),
        b"a,b\n1,2".to_vec(),
    ];
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    for seed in &seeds {
        for _ in 0..40 {
            let mut bytes = seed.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let index = (state as usize) % bytes.len();
                bytes[index] = (state >> 32) as u8;
            }
            for format in Format::ALL {
                let _ = extract(format, &bytes);
            }
        }
    }
}
