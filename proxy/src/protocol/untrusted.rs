//! Names an unauthenticated peer chose (startup parameter names, SASL mechanisms, options),
//! made safe for a log line or an error message: quoted, control and non-printing
//! characters escaped (as Rust's `{:?}` does), and cut to a length a log can carry.

use std::fmt;

/// Characters of an untrusted name kept in a log line or message; the rest is elided.
pub const MAX_SHOWN_CHARS: usize = 64;

/// Displays `self.0` quoted, escaped and cut to [`MAX_SHOWN_CHARS`] characters (with the
/// full length in bytes when it was cut).
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_SHOWN_CHARS) {
            write!(f, "{}", c.escape_debug())?;
        }
        f.write_str("\"")?;
        if chars.next().is_some() {
            write!(f, "... ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// [`Untrusted`] of bytes that may not be UTF-8 (invalid sequences shown as U+FFFD).
pub fn untrusted_bytes(bytes: &[u8]) -> String {
    Untrusted(&String::from_utf8_lossy(bytes)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let shown = Untrusted("evil\nINFO forged line\r\u{1b}[31m\0").to_string();
        assert_eq!(shown, "\"evil\\nINFO forged line\\r\\u{1b}[31m\\0\"");
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(Untrusted("say \"hi\"").to_string(), "\"say \\\"hi\\\"\"");
    }

    #[test]
    fn long_names_are_cut() {
        let long = "x".repeat(10_000);
        let shown = Untrusted(&long).to_string();
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.ends_with("... (10000 bytes)"), "{shown}");
        let exact = "é".repeat(MAX_SHOWN_CHARS);
        assert_eq!(Untrusted(&exact).to_string(), format!("\"{exact}\""));
        assert_eq!(untrusted_bytes(b"a\xffb\n"), "\"a\u{fffd}b\\n\"");
    }
}
