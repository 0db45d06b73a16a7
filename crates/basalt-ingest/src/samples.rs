//! Small, valid PDF and DOCX files built from text, for tests, fuzz seeds and demos, so the
//! repository carries no binary fixtures of unknown origin.

use std::io::Write;

/// A PDF with one page per entry, each line of a page drawn in Helvetica. An empty page has no
/// text at all (like a scanned page).
pub fn pdf(pages: &[&[&str]]) -> Vec<u8> {
    let page_count = pages.len();
    // Objects: 1 catalog, 2 page tree, 3 font, then per page: page, contents.
    let mut objects: Vec<Vec<u8>> = Vec::new();
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    let kids: Vec<String> = (0..page_count)
        .map(|index| format!("{} 0 R", 4 + index * 2))
        .collect();
    objects.push(
        format!(
            "<< /Type /Pages /Kids [{}] /Count {page_count} >>",
            kids.join(" ")
        )
        .into_bytes(),
    );
    objects.push(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    );
    for (index, lines) in pages.iter().enumerate() {
        let contents_id = 5 + index * 2;
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
                 /Resources << /Font << /F1 3 0 R >> >> /Contents {contents_id} 0 R >>"
            )
            .into_bytes(),
        );
        let mut stream = String::new();
        if !lines.is_empty() {
            stream.push_str("BT /F1 11 Tf 14 TL 72 720 Td\n");
            for line in *lines {
                let escaped = line
                    .replace('\\', "\\\\")
                    .replace('(', "\\(")
                    .replace(')', "\\)");
                stream.push_str(&format!("({escaped}) Tj T*\n"));
            }
            stream.push_str("ET\n");
        }
        objects.push(
            format!("<< /Length {} >>\nstream\n{stream}endstream", stream.len()).into_bytes(),
        );
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (index, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", index + 1).as_bytes());
        out.extend_from_slice(object);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// One DOCX paragraph or table.
#[derive(Debug, Clone)]
pub enum Block<'a> {
    Title(&'a str),
    Heading(u8, &'a str),
    Paragraph(&'a str),
    Table(&'a [&'a [&'a str]]),
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn paragraph(style: Option<&str>, text: &str) -> String {
    let style = style
        .map(|style| format!("<w:pPr><w:pStyle w:val=\"{style}\"/></w:pPr>"))
        .unwrap_or_default();
    format!(
        "<w:p>{style}<w:r><w:t xml:space=\"preserve\">{}</w:t></w:r></w:p>",
        escape(text)
    )
}

/// The `word/document.xml` of a DOCX holding `blocks`.
pub fn docx_body(blocks: &[Block<'_>]) -> String {
    let mut body = String::new();
    for block in blocks {
        match block {
            Block::Title(text) => body.push_str(&paragraph(Some("Title"), text)),
            Block::Heading(level, text) => {
                body.push_str(&paragraph(Some(&format!("Heading{level}")), text));
            }
            Block::Paragraph(text) => body.push_str(&paragraph(None, text)),
            Block::Table(rows) => {
                body.push_str("<w:tbl>");
                for row in *rows {
                    body.push_str("<w:tr>");
                    for cell in *row {
                        body.push_str(&format!("<w:tc>{}</w:tc>", paragraph(None, cell)));
                    }
                    body.push_str("</w:tr>");
                }
                body.push_str("</w:tbl>");
            }
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\
         <w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\">\
         <w:body>{body}</w:body></w:document>"
    )
}

/// A DOCX file whose document part is `document_xml`.
pub fn docx_with_body(document_xml: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let parts: [(&str, &[u8]); 2] = [
        (
            "[Content_Types].xml",
            b"<?xml version=\"1.0\"?><Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\
              <Override PartName=\"/word/document.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml\"/></Types>",
        ),
        ("word/document.xml", document_xml),
    ];
    for (name, bytes) in parts {
        // Writing to memory cannot fail.
        let _ = zip.start_file(name, options);
        let _ = zip.write_all(bytes);
    }
    zip.finish()
        .map(std::io::Cursor::into_inner)
        .unwrap_or_default()
}

/// A DOCX holding `blocks`.
pub fn docx(blocks: &[Block<'_>]) -> Vec<u8> {
    docx_with_body(docx_body(blocks).as_bytes())
}
