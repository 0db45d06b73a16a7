//! Stop sequences on streamed text: text is released as soon as it can no longer be the start of
//! a stop sequence, and nothing from a stop sequence onwards is ever released.

/// Watches generated text for any of the stop sequences.
#[derive(Debug)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What the matcher decided about the text pushed so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StopStep {
    /// Text that is safe to show.
    pub(crate) release: String,
    /// A stop sequence was found; generation must end.
    pub(crate) stopped: bool,
}

impl StopMatcher {
    pub(crate) fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> StopStep {
        self.held.push_str(text);
        let earliest_stop = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min();
        if let Some(position) = earliest_stop {
            let release = self.held[..position].to_string();
            self.held.clear();
            return StopStep {
                release,
                stopped: true,
            };
        }
        // Hold back the longest suffix that is a proper prefix of some stop sequence.
        let mut keep_from = self.held.len();
        for (index, _) in self.held.char_indices() {
            let suffix = &self.held[index..];
            if self.stops.iter().any(|stop| stop.starts_with(suffix)) {
                keep_from = index;
                break;
            }
        }
        let release = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        StopStep {
            release,
            stopped: false,
        }
    }

    /// Text still held back when generation ends for another reason.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut matcher = StopMatcher::new(&stops);
        let mut out = String::new();
        for piece in pieces {
            let step = matcher.push(piece);
            out.push_str(&step.release);
            if step.stopped {
                return (out, true);
            }
        }
        out.push_str(&matcher.finish());
        (out, false)
    }

    #[test]
    fn stop_split_across_pieces() {
        assert_eq!(
            run(&["\n\n"], &["Hello", "\n", "\nmore"]),
            ("Hello".into(), true)
        );
        assert_eq!(run(&["END"], &["a E", "N", "x"]), ("a ENx".into(), false));
        assert_eq!(run(&["END", "ND"], &["aEN", "D"]), ("a".into(), true));
        assert_eq!(run(&["XEND", "ND"], &["aEN", "D"]), ("aE".into(), true));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&[""], &["a"]), ("a".into(), false));
    }

    proptest! {
        #[test]
        fn output_is_the_text_up_to_the_first_stop(
            text in "[ab\\n]{0,30}",
            stop in "[ab\\n]{1,3}",
            cuts in proptest::collection::vec(0usize..31, 0..5),
        ) {
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            points.push(0);
            points.push(text.len());
            points.sort_unstable();
            let pieces: Vec<&str> = points.windows(2).map(|w| &text[w[0]..w[1]]).collect();
            let (out, stopped) = run(&[stop.as_str()], &pieces);
            match text.find(&stop) {
                Some(position) => {
                    prop_assert!(stopped);
                    prop_assert_eq!(out, &text[..position]);
                }
                None => {
                    prop_assert!(!stopped);
                    prop_assert_eq!(out, text);
                }
            }
        }
    }
}
