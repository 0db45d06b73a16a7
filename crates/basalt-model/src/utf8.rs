//! Turns a stream of token byte pieces into text. A token can end in the middle of a multi-byte
//! character (emoji, CJK); those bytes wait for the next piece instead of becoming U+FFFD.

/// Accumulates bytes and releases the longest complete UTF-8 prefix.
#[derive(Debug, Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes and returns the text that is now complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    text.push_str(valid);
                    self.pending.clear();
                    return text;
                }
                Err(error) => {
                    let valid_up_to = error.valid_up_to();
                    text.push_str(
                        std::str::from_utf8(&self.pending[..valid_up_to]).unwrap_or_default(),
                    );
                    match error.error_len() {
                        // An incomplete character at the end: keep it for the next piece.
                        None => {
                            self.pending.drain(..valid_up_to);
                            return text;
                        }
                        // Bytes that can never become valid: replace them and go on.
                        Some(invalid) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid_up_to + invalid);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of the stream, lossily.
    pub(crate) fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_split_of_valid_text_round_trips(text in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            points.push(0);
            points.push(bytes.len());
            points.sort_unstable();
            let mut stream = Utf8Stream::default();
            let mut out = String::new();
            for window in points.windows(2) {
                out.push_str(&stream.push(&bytes[window[0]..window[1]]));
            }
            out.push_str(&stream.finish());
            prop_assert_eq!(out, text);
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(stream.push(&[0xF0, 0x9F]), "");
        assert_eq!(stream.push(&[0x99, 0x82]), "🙂");
        assert_eq!(stream.push(&[0xE6]), "");
        assert_eq!(stream.finish(), "\u{fffd}");
    }
}
