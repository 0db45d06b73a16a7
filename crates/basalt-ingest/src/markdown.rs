//! Markdown and plain text: the text is kept as written; ATX headings (`#` … `######`) open
//! sections whose heading path follows the heading levels. `#` lines inside fenced code blocks
//! are code, not headings.

use crate::document::{ExtractedDocument, Section};

/// Plain text: one section holding everything.
pub fn extract_plain_text(source: &str) -> ExtractedDocument {
    ExtractedDocument {
        text: source.to_string(),
        title: None,
        sections: vec![Section::new(0..source.len())],
    }
}

/// Markdown: one section per heading (plus the text before the first heading, if any).
pub fn extract_markdown(source: &str) -> ExtractedDocument {
    let mut sections = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut section_start = 0;
    let mut title = None;
    let mut fence: Option<&str> = None;
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent < 4 {
            for marker in ["```", "~~~"] {
                if trimmed.starts_with(marker) {
                    fence = match fence {
                        None => Some(marker),
                        Some(open) if open == marker => None,
                        other => other,
                    };
                }
            }
        }
        if fence.is_none()
            && indent < 4
            && let Some((level, heading)) = atx_heading(trimmed)
        {
            if offset > section_start {
                sections.push(section(section_start..offset, &path));
            }
            section_start = offset;
            path.retain(|(outer, _)| *outer < level);
            if level == 1 && title.is_none() {
                title = Some(heading.clone());
            }
            path.push((level, heading));
        }
        offset += line.len();
    }
    if source.len() > section_start || sections.is_empty() {
        sections.push(section(section_start..source.len(), &path));
    }
    ExtractedDocument {
        text: source.to_string(),
        title,
        sections,
    }
}

fn section(range: std::ops::Range<usize>, path: &[(usize, String)]) -> Section {
    Section {
        range,
        heading_path: path.iter().map(|(_, heading)| heading.clone()).collect(),
        page: None,
    }
}

/// `## Title ##` → `(2, "Title")`; `#hashtag` and `####### x` are not headings.
fn atx_heading(line: &str) -> Option<(usize, String)> {
    let level = line.bytes().take_while(|&byte| byte == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t', '\n', '\r'])) {
        return None;
    }
    let heading = rest.trim().trim_end_matches('#').trim_end().to_string();
    Some((level, heading))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(source: &str, expected: &[(&[&str], &str)]) {
        let document = extract_markdown(source);
        let got: Vec<(Vec<String>, &str)> = document
            .sections
            .iter()
            .map(|section| (section.heading_path.clone(), &source[section.range.clone()]))
            .collect();
        let want: Vec<(Vec<String>, &str)> = expected
            .iter()
            .map(|(path, text)| (path.iter().map(|s| s.to_string()).collect(), *text))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn headings_open_sections_with_nested_paths() {
        check(
            "intro\n# Guide\nhello\n## Install ##\nrun it\n### On Debian\napt\n## Use\ngo\n",
            &[
                (&[], "intro\n"),
                (&["Guide"], "# Guide\nhello\n"),
                (&["Guide", "Install"], "## Install ##\nrun it\n"),
                (&["Guide", "Install", "On Debian"], "### On Debian\napt\n"),
                (&["Guide", "Use"], "## Use\ngo\n"),
            ],
        );
        assert_eq!(
            extract_markdown("# Guide\n").title.as_deref(),
            Some("Guide")
        );
    }

    #[test]
    fn code_fences_and_hashtags_are_not_headings() {
        check(
            "# A\n```sh\n# a comment\n```\n#hashtag\n    # indented code\n",
            &[(
                &["A"],
                "# A\n```sh\n# a comment\n```\n#hashtag\n    # indented code\n",
            )],
        );
    }

    #[test]
    fn sections_tile_the_text() {
        for source in [
            "",
            "plain",
            "# Only\n",
            "a\n# b\n\n## c\nd",
            "# x\n```\n# y\n",
        ] {
            let document = extract_markdown(source);
            let mut next = 0;
            for section in &document.sections {
                assert_eq!(section.range.start, next, "{source:?}");
                next = section.range.end;
            }
            assert_eq!(next, source.len(), "{source:?}");
        }
        assert_eq!(extract_plain_text("x y").sections, vec![Section::new(0..3)]);
    }
}
