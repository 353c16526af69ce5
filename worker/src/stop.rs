//! Stop sequences on streamed text.
//!
//! Generation produces text a token at a time, and a stop sequence (`"\nUser:"`) usually spans
//! several tokens. [`StopMatcher`] sits between the stream decoder and the user: every piece
//! goes through [`StopMatcher::push`], which releases only text that can no longer turn out to
//! be part of a stop sequence, and holds back the longest tail that is still a prefix of one.
//! When a stop sequence completes, the text before it is released and the stop sequence itself
//! never is; [`StopMatcher::finish`] releases the held tail at the end of generation.
//!
//! *Why the longest held tail is enough:* a stop sequence that completes later must start
//! inside the text not yet released, and the part of it already seen is then a suffix of that
//! text and a prefix of the stop. Everything before the longest such suffix can be shown.
//!
//! Everything is `&str`, and cut positions are either match positions (char boundaries, since
//! stops are `str`) or checked with `is_char_boundary`, so a multibyte character is never split.
//! Pieces must already be whole characters (`tokenizer::TokenStreamDecoder` guarantees that).

/// What [`StopMatcher::push`] releases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// Text that is safe to show now (never any part of a stop sequence that matched).
    pub emit: String,
    /// A stop sequence completed: generation should end; `emit` is the text before it.
    pub stopped: bool,
}

/// Finds stop sequences across streamed pieces of text.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    /// Non-empty stop sequences.
    stops: Vec<String>,
    /// Byte length of the longest stop; a held tail is always shorter than this.
    max_len: usize,
    /// Text received but not yet released (a possible start of a stop sequence).
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// Empty strings are dropped: they would match everywhere and stop before the first token.
    pub fn new(stops: Vec<String>) -> Self {
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        let max_len = stops.iter().map(String::len).max().unwrap_or(0);
        StopMatcher { stops, max_len, held: String::new(), stopped: false }
    }

    /// Whether a stop sequence has matched (after which every push releases nothing).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds the newly decoded piece; returns what may be shown now.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stopped {
            return StopOutcome { emit: String::new(), stopped: true };
        }
        if self.stops.is_empty() {
            return StopOutcome { emit: text.to_owned(), stopped: false };
        }
        self.held.push_str(text);

        // The earliest match wins: the text before it is what the model said before stopping.
        // (Two stops matching at the same position cut at the same place.)
        let first_match = self.stops.iter().filter_map(|stop| self.held.find(stop.as_str())).min();
        if let Some(pos) = first_match {
            self.held.truncate(pos);
            self.stopped = true;
            return StopOutcome { emit: std::mem::take(&mut self.held), stopped: true };
        }

        let hold_from = self.held_tail_start();
        let tail = self.held.split_off(hold_from);
        let emit = std::mem::replace(&mut self.held, tail);
        StopOutcome { emit, stopped: false }
    }

    /// Releases the held tail at the end of generation (empty after a stop).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            self.held.clear();
            return String::new();
        }
        std::mem::take(&mut self.held)
    }

    /// Start of the longest suffix of `held` that is a proper prefix of some stop sequence
    /// (`held.len()` if none). Only suffixes shorter than the longest stop can qualify.
    fn held_tail_start(&self) -> usize {
        let len = self.held.len();
        let earliest = len.saturating_sub(self.max_len.saturating_sub(1));
        (earliest..len)
            .filter(|&start| self.held.is_char_boundary(start))
            .find(|&start| {
                let tail = &self.held[start..];
                self.stops.iter().any(|stop| stop.starts_with(tail))
            })
            .unwrap_or(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|s| s.to_string()).collect())
    }

    fn out(emit: &str, stopped: bool) -> StopOutcome {
        StopOutcome { emit: emit.to_owned(), stopped }
    }

    #[test]
    fn stop_split_across_pushes() {
        let mut m = matcher(&["\nUser:"]);
        assert_eq!(m.push("Hel"), out("Hel", false));
        assert_eq!(m.push("lo\nUser:"), out("lo", true));
        assert!(m.is_stopped());
        assert_eq!(m.push("more"), out("", true));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn stop_spread_over_many_pieces() {
        let mut m = matcher(&["\nUser:"]);
        assert_eq!(m.push("Hi.\n"), out("Hi.", false));
        assert_eq!(m.push("Us"), out("", false));
        assert_eq!(m.push("er"), out("", false));
        assert_eq!(m.push(": ask"), out("", true));
    }

    #[test]
    fn false_prefix_is_released_later() {
        let mut m = matcher(&["\nUser:"]);
        assert_eq!(m.push("a\nUs"), out("a", false));
        // "\nUsa" is no stop prefix, but nothing in it starts one either: all released.
        assert_eq!(m.push("a"), out("\nUsa", false));
        assert_eq!(m.push("b\n"), out("b", false));
        assert_eq!(m.push("\nU"), out("\n", false));
        assert_eq!(m.finish(), "\nU");
    }

    #[test]
    fn multiple_stops_earliest_wins() {
        let mut m = matcher(&["</s>", "\n\n", "END"]);
        assert_eq!(m.push("one\n"), out("one", false));
        assert_eq!(m.push("two END</s>"), out("\ntwo ", true));
        let mut m = matcher(&["</s>", "\n\n"]);
        assert_eq!(m.push("x</"), out("x", false));
        assert_eq!(m.push("s>"), out("", true));
        // Overlapping stops: the longer tail is held for whichever may still complete.
        let mut m = matcher(&["abc", "bcd"]);
        assert_eq!(m.push("zab"), out("z", false));
        assert_eq!(m.push("cd"), out("", true));
    }

    #[test]
    fn stop_at_the_very_start() {
        let mut m = matcher(&["User:"]);
        assert_eq!(m.push("User:"), out("", true));
        let mut m = matcher(&["User:"]);
        assert_eq!(m.push("Us"), out("", false));
        assert_eq!(m.push("er: hi"), out("", true));
    }

    #[test]
    fn multibyte_characters() {
        let mut m = matcher(&["🙂🙂", "終わり"]);
        assert_eq!(m.push("héllo 🙂"), out("héllo ", false));
        assert_eq!(m.push("é"), out("🙂é", false));
        assert_eq!(m.push("終わ"), out("", false));
        assert_eq!(m.push("る"), out("終わる", false));
        assert_eq!(m.push("🙂"), out("", false));
        assert_eq!(m.push("🙂!"), out("", true));
        // A stop that shares a leading byte with other text (é = C3 A9, à = C3 A0) only
        // matches whole characters.
        let mut m = matcher(&["à"]);
        assert_eq!(m.push("éé"), out("éé", false));
        assert_eq!(m.push("xà"), out("x", true));
    }

    #[test]
    fn finish_flushes_and_empty_stops_are_ignored() {
        let mut m = matcher(&["\nUser:"]);
        assert_eq!(m.push("bye\nUse"), out("bye", false));
        assert_eq!(m.finish(), "\nUse");
        assert_eq!(m.finish(), "");

        let mut m = matcher(&["", ""]);
        assert_eq!(m.push("anything"), out("anything", false));
        assert_eq!(m.finish(), "");
        let mut m = matcher(&["", "X"]);
        assert_eq!(m.push("aX"), out("a", true));
    }
}
