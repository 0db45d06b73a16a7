//! Output guarding for streamed text: tokens are held back and released a window at a time,
//! each window checked before it leaves, so that an entity split across tokens
//! ("ana@ex" + "ample.com") is anonymized whole and a blocked word never reaches the client.
//!
//! A window ends at a sentence boundary (`.`, `!` or `?` followed by whitespace, or a line
//! break) — no entity spans one — or, in a long run without one, at least [`MAX_HELD`] bytes
//! back from the end at a space between two words of letters only: entities are shorter than
//! that, and the spaces inside them (a spaced card number or IBAN) have digits around them. Each release is what checking the whole
//! text so far gives, minus what was already released, so the concatenated releases equal
//! checking the complete text whenever no finding crosses a window boundary.

use crate::config::{Assessment, Guardrail, Outcome, Source};

/// Most bytes held back while no sentence ends: longer than any entity the detectors find.
pub const MAX_HELD: usize = 256;

/// Bytes of the previous window checked again with the next one for word-filter phrases.
const SEAM: usize = 128;

/// What one step of a guarded stream lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Text that may be shown (possibly empty: still held back).
    Text(String),
    /// The output is blocked: show this message instead, and stop generating.
    Blocked(String),
}

/// Guards one streamed output.
#[derive(Debug)]
pub struct StreamGuard<'a> {
    guardrail: &'a Guardrail,
    /// Everything received, raw.
    received: String,
    /// Bytes of `received` already checked and released.
    checked: usize,
    /// Every finding so far, with offsets into `received`.
    assessments: Vec<Assessment>,
    blocked: bool,
    /// Release nothing (windows are still checked, so a block still stops the stream): the
    /// caller shows the whole text once it has passed a check of its own.
    hold_all: bool,
}

impl<'a> StreamGuard<'a> {
    pub fn new(guardrail: &'a Guardrail) -> Self {
        StreamGuard {
            guardrail,
            received: String::new(),
            checked: 0,
            assessments: Vec::new(),
            blocked: false,
            hold_all: false,
        }
    }

    /// For an answer from a knowledge base: when the guardrail blocks ungrounded answers,
    /// nothing is released while it streams (grounding is judged on the whole answer).
    pub fn for_answer(guardrail: &'a Guardrail) -> Self {
        StreamGuard {
            hold_all: guardrail.blocks_ungrounded(),
            ..StreamGuard::new(guardrail)
        }
    }

    /// Whether this stream releases nothing, leaving the caller to show the checked whole.
    pub fn holds_all(&self) -> bool {
        self.hold_all
    }

    /// Takes the next piece of generated text.
    pub fn push(&mut self, piece: &str) -> Release {
        if self.blocked {
            return Release::Text(String::new());
        }
        self.received.push_str(piece);
        let end = self.window_end();
        let release = self.release_to(end);
        self.held(release)
    }

    /// The stream ended: checks and releases what was held back.
    pub fn finish(&mut self) -> Release {
        if self.blocked {
            return Release::Text(String::new());
        }
        let release = self.release_to(self.received.len());
        self.held(release)
    }

    /// `release`, or nothing of its text when the stream holds everything back.
    fn held(&self, release: Release) -> Release {
        match release {
            Release::Text(_) if self.hold_all => Release::Text(String::new()),
            release => release,
        }
    }

    /// Whether the output was blocked.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Every finding of the output so far (offsets into the raw text).
    pub fn assessments(&self) -> &[Assessment] {
        &self.assessments
    }

    /// Where the next window may end: after the last sentence boundary, or at a space
    /// [`MAX_HELD`] bytes back when the held text has none.
    fn window_end(&self) -> usize {
        let held = &self.received[self.checked..];
        let bytes = held.as_bytes();
        let mut end = None;
        for (index, &byte) in bytes.iter().enumerate() {
            let boundary = byte == b'\n'
                || (matches!(byte, b'.' | b'!' | b'?')
                    && bytes.get(index + 1).is_some_and(u8::is_ascii_whitespace));
            if boundary {
                end = Some(index + 1);
            }
        }
        if let Some(end) = end {
            return self.checked + end;
        }
        if held.len() > MAX_HELD {
            let mut limit = held.len() - MAX_HELD;
            while !held.is_char_boundary(limit) {
                limit -= 1;
            }
            if let Some(space) = word_break(&held[..limit]) {
                return self.checked + space + 1;
            }
        }
        self.checked
    }

    fn release_to(&mut self, end: usize) -> Release {
        if end <= self.checked {
            return Release::Text(String::new());
        }
        let window = &self.received[self.checked..end];
        let checked = self.guardrail.check(window, Source::Output);
        let offset = self.checked;
        // A phrase of the word filters cut by a forced break ("project | falcon") is in
        // neither window alone: check the seam with the end of the window before.
        let mut seam = self.checked.saturating_sub(SEAM);
        while !self.received.is_char_boundary(seam) {
            seam -= 1;
        }
        let across = self
            .guardrail
            .word_matches(&self.received[seam..end])
            .into_iter()
            .any(|found| seam + found.start < offset && seam + found.end > offset);
        if across {
            self.checked = end;
            self.blocked = true;
            return Release::Blocked(self.guardrail.config().messages.blocked_output.clone());
        }
        self.assessments
            .extend(checked.assessments.into_iter().map(|mut assessment| {
                assessment.start += offset;
                assessment.end += offset;
                assessment
            }));
        self.checked = end;
        if checked.outcome == Outcome::Blocked {
            self.blocked = true;
            return Release::Blocked(checked.text);
        }
        Release::Text(checked.text)
    }
}

/// The last space of `text` between two words made only of letters: entities with spaces in
/// them (a spaced card number, IBAN or phone number) have digits on both sides of theirs.
fn word_break(text: &str) -> Option<usize> {
    let lettered = |word: &str| !word.is_empty() && word.chars().all(char::is_alphabetic);
    text.rmatch_indices(' ')
        .map(|(index, _)| index)
        .find(|&index| {
            let before = text[..index].rsplit(' ').next().unwrap_or_default();
            let after = text[index + 1..].split(' ').next().unwrap_or_default();
            lettered(before) && lettered(after)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GuardrailConfig;
    use proptest::prelude::*;

    fn guardrail() -> Guardrail {
        let config = GuardrailConfig::from_json(
            r#"{"sensitive_information": {"entities": [
                {"type": "EMAIL", "output": "anonymize"},
                {"type": "PHONE", "output": "anonymize"},
                {"type": "CREDIT_CARD", "output": "anonymize"},
                {"type": "IBAN", "output": "anonymize"}
            ]}, "word_filters": {"words": ["project falcon"]}}"#,
        )
        .expect("config");
        Guardrail::new(config).expect("guardrail")
    }

    const ENTITIES: [&str; 5] = [
        "ana.lopez@example.com",
        "(978) 645-9740",
        "4716 4245 2151 1864",
        "DE89 3704 0044 0532 0130 00",
        "089 72 63 41",
    ];

    fn run(guard: &Guardrail, pieces: &[String]) -> (Vec<String>, bool) {
        let mut stream = StreamGuard::new(guard);
        let mut released = Vec::new();
        let mut blocked = false;
        for piece in pieces.iter().map(String::as_str).chain([""]) {
            let release = if piece.is_empty() {
                stream.finish()
            } else {
                stream.push(piece)
            };
            match release {
                Release::Text(text) => released.push(text),
                Release::Blocked(message) => {
                    released.push(message);
                    blocked = true;
                    break;
                }
            }
        }
        (released, blocked)
    }

    /// Splits `text` into pieces at the given cut points (as a tokenizer would).
    fn split(text: &str, cuts: &[usize]) -> Vec<String> {
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|cut| cut % (text.len() + 1))
            .filter(|&cut| text.is_char_boundary(cut))
            .collect();
        points.push(0);
        points.push(text.len());
        points.sort_unstable();
        points.dedup();
        points
            .windows(2)
            .map(|pair| text[pair[0]..pair[1]].to_owned())
            .filter(|piece| !piece.is_empty())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// However the text is cut into tokens, no release contains a raw entity, and the
        /// releases put together are the anonymized text.
        #[test]
        fn no_raw_entity_is_ever_released(
            words in proptest::collection::vec("[a-z]{1,8}", 3..40),
            entity_slots in proptest::collection::vec((0usize..40, 0usize..ENTITIES.len()), 1..4),
            stops in proptest::collection::vec(0usize..40, 0..4),
            cuts in proptest::collection::vec(0usize..10_000, 0..60),
        ) {
            // Entities between words, as in prose (two numbers side by side with only a space
            // between them are ambiguous even to a reader).
            let mut parts: Vec<String> = words;
            for (slot, entity) in entity_slots {
                let at = slot.min(parts.len());
                parts.insert(at, format!("{} and", ENTITIES[entity]));
            }
            for stop in stops {
                let at = stop.min(parts.len().saturating_sub(1));
                parts[at].push('.');
            }
            let text = parts.join(" ");
            let guard = guardrail();
            let (released, blocked) = run(&guard, &split(&text, &cuts));
            prop_assert!(!blocked);
            for piece in &released {
                for entity in ENTITIES {
                    prop_assert!(!piece.contains(entity), "{entity} in {piece:?}");
                }
            }
            let whole: String = released.concat();
            for entity in ENTITIES {
                prop_assert!(!whole.contains(entity));
            }
            prop_assert_eq!(whole, guard.check(&text, Source::Output).text);
        }
    }

    #[test]
    fn a_blocked_phrase_is_never_released_even_split() {
        let guard = guardrail();
        let pieces: Vec<String> = ["Sure. The plan for Pro", "ject Fal", "con is secret. More."]
            .map(str::to_owned)
            .to_vec();
        let (released, blocked) = run(&guard, &pieces);
        assert!(blocked);
        let shown = released.concat();
        assert!(shown.starts_with("Sure."), "{shown}");
        assert!(!shown.to_lowercase().contains("falcon"), "{shown}");
        assert!(shown.ends_with("blocked by a guardrail."), "{shown}");
    }

    #[test]
    fn a_blocked_phrase_cut_by_a_forced_break_is_still_blocked() {
        let guard = guardrail();
        let mut stream = StreamGuard::new(&guard);
        // No sentence ends: windows are cut at word breaks; put the phrase on every break.
        let text = format!(
            "{} project falcon {}",
            "word ".repeat(60),
            "word ".repeat(120)
        );
        let mut shown = String::new();
        let mut blocked = false;
        for piece in text.as_bytes().chunks(3) {
            match stream.push(std::str::from_utf8(piece).expect("ascii")) {
                Release::Text(released) => shown.push_str(&released),
                Release::Blocked(_) => {
                    blocked = true;
                    break;
                }
            }
        }
        if !blocked {
            blocked = matches!(stream.finish(), Release::Blocked(_));
        }
        assert!(blocked);
        assert!(!shown.contains("falcon"), "{shown}");
    }

    #[test]
    fn long_runs_without_a_sentence_end_are_released_in_windows() {
        let guard = guardrail();
        let mut stream = StreamGuard::new(&guard);
        let text = "word ".repeat(200);
        let Release::Text(first) = stream.push(&text) else {
            panic!("not blocked")
        };
        assert!(!first.is_empty() && first.len() <= text.len() - MAX_HELD);
        let Release::Text(rest) = stream.finish() else {
            panic!("not blocked")
        };
        assert_eq!(first + &rest, text);
    }
}
