//! Writes seed inputs for the fuzz targets: `cargo run -p basalt-ingest --example fuzz_seeds -- fuzz/corpus`.

use std::path::Path;

use basalt_ingest::samples::{Block, docx, pdf};

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let root = Path::new(&root);
    let seeds: [(&str, &str, Vec<u8>); 8] = [
        ("pdf", "two-pages.pdf", pdf(&[&["Title", "Body text (with parentheses)."], &["Page two."]])),
        ("pdf", "no-text.pdf", pdf(&[&[]])),
        ("docx", "policy.docx", docx(&[Block::Title("T"), Block::Heading(1, "H"), Block::Paragraph("P & Q"), Block::Table(&[&["a", "b"]])])),
        ("html", "page.html", b"<html><head><title>T</title><style>x</style></head><body><nav>n</nav><h1>H</h1><p>p <b>b</b></p><ul><li>i</li></ul><table><tr><td>c</td></tr></table><pre>x\n y</pre></body></html>".to_vec()),
        ("text_formats", "guide.md", b"# A\n\npara one.\n\n## B\n\n```\n# code\n```\n".to_vec()),
        ("text_formats", "rows.csv", b"id,title,text,n\n1,T,hello,2\n".to_vec()),
        ("text_formats", "corpus.jsonl", b"{\"_id\": \"1\", \"title\": \"T\", \"text\": \"x\", \"metadata\": {\"y\": 1}}\n".to_vec()),
        ("filter", "filter.txt", b"tag = q3 and (year >= 2020 or source prefix \"docs/\") and not format in (pdf, docx)".to_vec()),
    ];
    for (target, name, bytes) in seeds {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
