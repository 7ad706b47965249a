//! Text from outside the gateway as it goes into a log line: request data (event ids and
//! types, field names, header values, paths), what a plugin says (log lines, retry and trap
//! reasons) and what a remote server answers (delivery errors). Such text is escaped like
//! `{:?}` (so CR/LF cannot forge a line) and cut to a fixed number of characters, so no input
//! can make one log line large; lists are cut to a number of items too. The cut is said in the
//! line (`…(+N bytes)`, `… (+N more)`), so a reader knows there was more.
//!
//! This module only formats; which field gets which bound is the telemetry events' business.

use std::fmt::{self, Write as _};

/// Field names and other short names (Ledig payload keys).
pub const NAME: usize = 64;
/// Event ids, `webhook-id`s, event types.
pub const ID: usize = 200;
/// Request paths and query strings, header values.
pub const PATH: usize = 256;
/// Error messages and reasons (a plugin's `retry`/`fatal` text, a trap, a destination's
/// answer, a store error).
pub const REASON: usize = 512;
/// One line a plugin logged through `host.log` (the plugin host already cuts them to 4 KiB).
pub const PLUGIN_LINE: usize = 4096;
/// Names shown from one list (unknown field names); the count says how many there were.
pub const LIST_ITEMS: usize = 16;

/// `text` as a quoted, escaped string of at most `max` characters (quotes and the cut note
/// not counted).
pub fn bounded(text: &str, max: usize) -> Bounded<'_> {
    Bounded { text, max }
}

/// See [`bounded`]. `Debug` and `Display` write the same.
#[derive(Clone, Copy)]
pub struct Bounded<'a> {
    text: &'a str,
    max: usize,
}

impl fmt::Debug for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut written = 0usize;
        for (at, c) in self.text.char_indices() {
            // Double quotes, backslashes and control characters escaped as `{:?}` escapes
            // them in a string (which leaves a single quote alone); the rest as is.
            let escaped = c.escape_debug();
            let len = if c == '\'' { 1 } else { escaped.len() };
            if written + len > self.max {
                let cut = self.text.len() - at;
                return write!(f, "\"…(+{cut} bytes)");
            }
            written += len;
            if len == 1 {
                f.write_char(c)?;
            } else {
                write!(f, "{escaped}")?;
            }
        }
        f.write_str("\"")
    }
}

impl fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The first [`LIST_ITEMS`] of `items`, each bounded to `max_each` characters, and how many
/// more there were.
pub fn bounded_list<S: AsRef<str>>(items: &[S], max_each: usize) -> BoundedList<'_, S> {
    BoundedList { items, max_each }
}

/// See [`bounded_list`].
pub struct BoundedList<'a, S> {
    items: &'a [S],
    max_each: usize,
}

impl<S: AsRef<str>> fmt::Debug for BoundedList<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.items[..self.items.len().min(LIST_ITEMS)];
        f.debug_list()
            .entries(shown.iter().map(|s| bounded(s.as_ref(), self.max_each)))
            .finish()?;
        match self.items.len() - shown.len() {
            0 => Ok(()),
            more => write!(f, " (+{more} more)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_written_as_debug_writes_it() {
        for text in ["", "evt_1", "tab\there", "quote \" and \\ and '", "é ✓ 😀"] {
            assert_eq!(format!("{:?}", bounded(text, 100)), format!("{text:?}"));
            assert_eq!(format!("{}", bounded(text, 100)), format!("{text:?}"));
        }
    }

    #[test]
    fn control_characters_cannot_break_the_line() {
        let forged = "x\r\nFORGED level=ERROR\u{1b}[31m\0";
        let out = format!("{:?}", bounded(forged, 1000));
        assert!(!out.contains(['\r', '\n', '\u{1b}', '\0']), "{out}");
        assert_eq!(out, format!("{forged:?}"));
    }

    #[test]
    fn long_text_is_cut_and_says_how_much_was_cut() {
        let long = "a".repeat(1_000_000);
        let out = format!("{:?}", bounded(&long, 64));
        assert_eq!(out, format!("\"{}\"…(+999936 bytes)", "a".repeat(64)));
        // The bound counts escaped output, so escapes cannot multiply the size.
        let nasty = "\n".repeat(10_000);
        let out = format!("{:?}", bounded(&nasty, 64));
        assert!(out.len() < 64 + 30, "{} bytes: {out}", out.len());
        assert!(
            out.starts_with(&format!("\"{}\"", "\\n".repeat(32))),
            "{out}"
        );
        // Never a cut inside a character or an escape.
        let out = format!("{:?}", bounded("ab😀cd", 3));
        assert_eq!(out, "\"ab😀\"…(+2 bytes)");
        let out = format!("{:?}", bounded("a\nb", 2));
        assert_eq!(out, "\"a\"…(+2 bytes)");
    }

    #[test]
    fn lists_are_cut_in_length_and_in_each_item() {
        let names: Vec<String> = (0..40).map(|i| format!("{i}{}", "x".repeat(100))).collect();
        let out = format!("{:?}", bounded_list(&names, 8));
        assert!(out.ends_with(" (+24 more)"), "{out}");
        assert_eq!(out.matches("…(+").count(), LIST_ITEMS, "{out}");
        assert!(out.len() < 40 * LIST_ITEMS, "{} bytes", out.len());
        assert_eq!(
            format!("{:?}", bounded_list(&["a", "b"], 8)),
            r#"["a", "b"]"#
        );
    }
}
