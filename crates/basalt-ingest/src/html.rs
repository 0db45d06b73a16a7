//! HTML: the visible text of the page body, with headings as sections, list items as `- ` lines
//! and table rows as `cell | cell` lines. Scripts, styles, navigation, headers, footers, forms
//! and other boilerplate are dropped. Parsing is html5ever's (the browsers' algorithm), so any
//! byte sequence gives a tree; the walk is iterative, so nesting depth cannot overflow the stack.

use ego_tree::iter::Edge;
use scraper::{Html, Node};

use crate::document::{DocumentBuilder, ExtractedDocument, collapse_whitespace};
use crate::error::ExtractError;

/// Elements whose content is never body text.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form",
    "button", "select", "textarea", "svg", "math", "iframe", "object", "canvas", "head", "menu",
    "dialog",
];

/// Elements that end the current paragraph when they open or close.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "blockquote",
    "pre",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "tr",
    "caption",
    "figure",
    "figcaption",
    "address",
    "details",
    "summary",
    "hr",
    "br",
    "body",
    "center",
    "fieldset",
    "legend",
];

/// Deepest element nesting accepted. html5ever's tree builder slows down quadratically with
/// depth (100,000 nested `<div>`s take half a minute); real pages stay far below this.
pub const MAX_HTML_DEPTH: usize = 2048;

pub fn extract_html(source: &str) -> Result<ExtractedDocument, ExtractError> {
    if let Some(depth) = nesting_beyond(source, MAX_HTML_DEPTH) {
        return Err(ExtractError::Corrupt {
            format: "HTML",
            message: format!("elements nested over {depth} deep; refusing a page this malformed"),
        });
    }
    let html = Html::parse_document(source);
    let mut walker = Walker::default();
    for edge in html.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(element) => {
                    let boilerplate = boilerplate_role(element.attr("role"))
                        || boilerplate_class(element.attr("class"), element.attr("id"));
                    walker.open(element.name(), boilerplate);
                }
                Node::Text(text) => walker.text(text),
                _ => {}
            },
            Edge::Close(node) => {
                if let Node::Element(element) = node.value() {
                    walker.close(element.name());
                }
            }
        }
    }
    Ok(walker.finish())
}

/// Elements that need no end tag, or whose end tag is implied by the next sibling: they do not
/// deepen the nesting in a quick scan.
const NOT_NESTING: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "thead", "tbody",
    "tfoot", "colgroup", "rb", "rt", "rp", "html", "head", "body",
];

/// A quick scan of start and end tags: `Some(limit)` when the nesting goes past `limit`.
fn nesting_beyond(source: &str, limit: usize) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut depth = 0_usize;
    let mut at = 0;
    while let Some(offset) = bytes[at..].iter().position(|&byte| byte == b'<') {
        at += offset + 1;
        let closing = bytes.get(at) == Some(&b'/');
        let start = if closing { at + 1 } else { at };
        let end = bytes[start..]
            .iter()
            .position(|byte| !byte.is_ascii_alphanumeric())
            .map_or(bytes.len(), |length| start + length);
        if end == start {
            continue;
        }
        let name = source[start..end].to_ascii_lowercase();
        if NOT_NESTING.contains(&name.as_str()) {
            continue;
        }
        let self_closing = bytes[end..]
            .iter()
            .position(|&byte| byte == b'>')
            .is_some_and(|close| close > 0 && bytes[end + close - 1] == b'/');
        if closing {
            depth = depth.saturating_sub(1);
        } else if !self_closing {
            depth += 1;
            if depth > limit {
                return Some(limit);
            }
        }
    }
    None
}

#[derive(Default)]
struct Walker {
    builder: DocumentBuilder,
    /// Depth inside skipped elements (0: emitting).
    skipping: usize,
    pre: usize,
    in_title: bool,
    title: String,
    heading: Option<(u8, String)>,
    /// The paragraph being collected.
    line: String,
    /// Lines of the current table or list, emitted as one paragraph.
    block: Vec<String>,
    list_depth: usize,
    table_depth: usize,
    cells: Vec<String>,
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

fn boilerplate_role(role: Option<&str>) -> bool {
    matches!(
        role,
        Some("navigation" | "banner" | "contentinfo" | "search" | "complementary")
    )
}

/// Generated documentation marks its navigation with classes rather than `<nav>`: DocBook's
/// `navheader`/`navfooter`, Sphinx's `related`, `sphinxsidebar`, `footer` and `headerlink`
/// (the ¶ after each heading), breadcrumbs, skip links.
fn boilerplate_class(class: Option<&str>, id: Option<&str>) -> bool {
    let words = class.into_iter().chain(id).flat_map(str::split_whitespace);
    words.map(str::to_ascii_lowercase).any(|word| {
        word.starts_with("nav")
            || word.contains("breadcrumb")
            || word.contains("sidebar")
            || word.contains("skip-link")
            || word == "headerlink"
            || matches!(
                word.as_str(),
                "related" | "footer" | "site-footer" | "site-header"
            )
    })
}

impl Walker {
    fn open(&mut self, name: &str, boilerplate: bool) {
        if name == "title" {
            self.in_title = true;
        }
        if self.skipping > 0 || SKIPPED.contains(&name) || boilerplate {
            self.skipping += 1;
            return;
        }
        if let Some(level) = heading_level(name) {
            self.flush_line();
            self.flush_block();
            self.heading = Some((level, String::new()));
            return;
        }
        match name {
            "pre" => {
                self.flush_line();
                self.pre += 1;
            }
            "ul" | "ol" => {
                self.flush_line();
                self.list_depth += 1;
            }
            "li" => {
                self.flush_line();
                self.line
                    .push_str(&"  ".repeat(self.list_depth.saturating_sub(1)));
                self.line.push_str("- ");
            }
            "table" => {
                self.flush_line();
                self.table_depth += 1;
            }
            "tr" => {
                self.flush_line();
                self.cells.clear();
            }
            "td" | "th" => self.line.clear(),
            _ if BLOCKS.contains(&name) => self.flush_line(),
            _ => {}
        }
    }

    fn close(&mut self, name: &str) {
        if name == "title" {
            self.in_title = false;
        }
        if self.skipping > 0 {
            self.skipping -= 1;
            return;
        }
        if let Some(level) = heading_level(name) {
            if let Some((_, text)) = self.heading.take() {
                if level == 1 {
                    self.builder.title(&text);
                }
                self.builder.heading(level, &text);
            }
            return;
        }
        match name {
            "pre" => {
                self.flush_line();
                self.pre = self.pre.saturating_sub(1);
            }
            "ul" | "ol" => {
                self.flush_line();
                self.list_depth = self.list_depth.saturating_sub(1);
                if self.list_depth == 0 && self.table_depth == 0 {
                    self.flush_block();
                }
            }
            "td" | "th" => {
                let cell = collapse_whitespace(&std::mem::take(&mut self.line));
                self.cells.push(cell);
            }
            "tr" => {
                let row = std::mem::take(&mut self.cells);
                if row.iter().any(|cell| !cell.is_empty()) {
                    self.block.push(row.join(" | "));
                }
            }
            "table" => {
                self.flush_line();
                self.table_depth = self.table_depth.saturating_sub(1);
                if self.table_depth == 0 && self.list_depth == 0 {
                    self.flush_block();
                }
            }
            "li" => self.flush_line(),
            "br" => {
                if self.pre > 0 {
                    self.line.push('\n');
                } else {
                    self.flush_line();
                }
            }
            _ if BLOCKS.contains(&name) => self.flush_line(),
            _ => {}
        }
    }

    fn text(&mut self, text: &str) {
        if self.in_title {
            self.title.push_str(text);
            return;
        }
        if self.skipping > 0 {
            return;
        }
        if let Some((_, heading)) = &mut self.heading {
            heading.push_str(text);
            return;
        }
        if self.pre > 0 {
            self.line.push_str(text);
            return;
        }
        // Inline text: whitespace collapses, but a space between words survives element edges.
        let starts_with_space = text.starts_with(char::is_whitespace);
        let ends_with_space = text.ends_with(char::is_whitespace);
        let words = collapse_whitespace(text);
        if (starts_with_space || words.is_empty())
            && !self.line.is_empty()
            && !self.line.ends_with([' ', '\n'])
        {
            self.line.push(' ');
        }
        self.line.push_str(&words);
        if ends_with_space && !words.is_empty() {
            self.line.push(' ');
        }
    }

    /// Ends the current line: into the open list/table block, or as its own paragraph.
    fn flush_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let line = line.trim_end();
        if line.trim().is_empty() || line.trim() == "-" {
            return;
        }
        if self.list_depth > 0 || self.table_depth > 0 {
            self.block.push(line.to_string());
        } else {
            self.builder.paragraph(line);
        }
    }

    fn flush_block(&mut self) {
        if !self.block.is_empty() {
            let block = std::mem::take(&mut self.block).join("\n");
            self.builder.paragraph(&block);
        }
    }

    fn finish(mut self) -> ExtractedDocument {
        self.flush_line();
        self.flush_block();
        let mut document = self.builder.finish();
        // `<title>` wins over the first `<h1>`.
        let title = collapse_whitespace(&self.title);
        if !title.is_empty() {
            document.title = Some(title);
        }
        document
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_body_structure_and_drops_boilerplate() {
        let page = r#"<!doctype html><html><head><title>Install Guide</title>
            <style>body { color: red }</style><script>var x = "hidden";</script></head>
            <body><nav><a href="/">Home</a> | <a href="/docs">Docs</a></nav>
            <div role="navigation">Skip me</div>
            <div class="navheader"><a href="a.html">Prev</a> Up Next</div>
            <div class="sphinxsidebar">Quick search</div>
            <h1>Installing<a class="headerlink" href='#i'>¶</a></h1><p>Run the   <b>installer</b>, then
            reboot.</p>
            <h2>Requirements</h2>
            <ul><li>2 GB RAM</li><li>Disk:<ul><li>10 GB</li></ul></li></ul>
            <table><tr><th>OS</th><th>Status</th></tr><tr><td>Debian</td><td>supported</td></tr></table>
            <pre>apt install basalt
  --yes</pre>
            <footer>Copyright</footer></body></html>"#;
        let document = extract_html(page).expect("parses");
        assert_eq!(document.title.as_deref(), Some("Install Guide"));
        assert_eq!(
            document.text,
            "Installing\n\nRun the installer, then reboot.\n\nRequirements\n\n- 2 GB RAM\n- Disk:\n  - 10 GB\n\n\
             OS | Status\nDebian | supported\n\napt install basalt\n  --yes"
        );
        for hidden in [
            "hidden",
            "color",
            "Home",
            "Skip me",
            "Copyright",
            "Prev",
            "Quick search",
        ] {
            assert!(!document.text.contains(hidden), "{hidden} leaked");
        }
        let paths: Vec<Vec<String>> = document
            .sections
            .iter()
            .map(|s| s.heading_path.clone())
            .collect();
        assert_eq!(
            paths,
            [
                vec!["Installing".to_string()],
                vec!["Installing".into(), "Requirements".into()]
            ]
        );
    }

    #[test]
    fn first_h1_is_the_title_without_a_title_element() {
        let document = extract_html("<h1>Hello <i>world</i></h1><p>x</p>").expect("parses");
        assert_eq!(document.title.as_deref(), Some("Hello world"));
    }

    #[test]
    fn deeply_nested_and_broken_markup_does_not_crash() {
        let deep = "<div>".repeat(1_000) + "deep text" + &"</div>".repeat(10);
        assert!(
            extract_html(&deep)
                .expect("parses")
                .text
                .contains("deep text")
        );
        let hostile = "<div>".repeat(100_000) + "deep text";
        let error = extract_html(&hostile).expect_err("refused");
        assert!(error.to_string().contains("nested over 2048"), "{error}");
        // Unclosed paragraphs and list items do not count as nesting.
        let flat = "<p>para".repeat(10_000) + &"<li>item".repeat(10_000);
        assert!(extract_html(&flat).is_ok());
        let broken = extract_html("<p>unclosed <b>bold <table><td>cell</p></b>").expect("parses");
        assert!(broken.text.contains("cell"));
        assert!(extract_html("").expect("parses").text.is_empty());
    }
}
