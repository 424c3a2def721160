//! The classification key of the usual statement without running the lexer: a table
//! lookup per byte finds the few bytes that matter (quotes, digits, `;`, and anything
//! unusual), everything between them is kept as it is, and the literals found are
//! replaced by the same markers [`super::key`]'s lexer pass writes. Text this pass cannot
//! vouch for (comments, dollar quotes, quoted identifiers, prefixed strings, unusual
//! numbers or characters, the word `float`) is left to the lexer pass: the result is then
//! exactly the lexer's, which a differential test checks.

use crate::sql::lexer;

use super::{number, starts_normalised_word, STRING};

/// What the sparse pass made of a text: the key the lexer pass would give.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sparse {
    /// The text itself (nothing to normalise).
    Same,
    /// The normalised text, written to `out`.
    Normalised,
    /// None: the text is keyed by its exact text.
    Exact,
    /// Only the lexer pass can tell.
    Lexer,
}

/// Byte classes for the scan: bytes to look at, and bytes that send the text to the
/// lexer pass.
const LOOK: u8 = 1;
const LEXER: u8 = 2;

static CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = match b {
            b'\'' | b'-' | b'/' | b'0'..=b'9' | b';' | b'f' | b'F' => LOOK,
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => 0,
            0..=0x1f | 0x7f | b'"' | b'$' | b'\\' | b'`' | b'{' | b'}' => LEXER,
            _ => 0,
        };
        i += 1;
    }
    table
};

/// The key of `sql` (see [`Sparse`]), normalised into `out` (empty when called).
pub(super) fn key(sql: &str, out: &mut String) -> Sparse {
    let b = sql.as_bytes();
    let mut i = match statement_start(b, 0) {
        Start::At(i) => i,
        Start::Exact => return Sparse::Exact,
        Start::Lexer => return Sparse::Lexer,
    };
    // `sql[..copied]` is in `out`, normalised.
    let mut copied = 0;
    while let Some(offset) = b
        .get(i..)
        .and_then(|rest| rest.iter().position(|&c| CLASSES[usize::from(c)] != 0))
    {
        i += offset;
        let c = b[i];
        if CLASSES[usize::from(c)] == LEXER {
            return Sparse::Lexer;
        }
        let prev = i.checked_sub(1).map(|p| b[p]);
        let ident_before = prev.is_some_and(lexer::is_ident_cont);
        match c {
            b'\'' => {
                // `E'`, `B'`, `X'`, `N'`, `U&'`, and a type name's literal (`date'...'`).
                if ident_before || prev == Some(b'&') {
                    return Sparse::Lexer;
                }
                let Some(end) = lexer::standard_string_close(b, i + 1) else {
                    return Sparse::Lexer;
                };
                push(out, sql, copied, i, STRING);
                copied = end;
                i = end;
            }
            b'-' | b'/' => {
                let comment = if c == b'-' { b'-' } else { b'*' };
                if b.get(i + 1) == Some(&comment) {
                    return Sparse::Lexer;
                }
                i += 1;
            }
            b';' => match statement_start(b, i + 1) {
                Start::At(next) => i = next,
                Start::Exact => return Sparse::Exact,
                Start::Lexer => return Sparse::Lexer,
            },
            b'f' | b'F' => {
                if b.get(i..i + 5)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"float"))
                {
                    return Sparse::Lexer;
                }
                i += 1;
            }
            _ if ident_before => i += 1,
            _ => {
                // A number (a digit no identifier continues).
                if prev == Some(b'.') {
                    return Sparse::Lexer;
                }
                let end = lexer::number_end(b, i);
                if b.get(end)
                    .is_some_and(|&n| lexer::is_ident_cont(n) || n == b'.')
                {
                    return Sparse::Lexer;
                }
                let Some(marker) = sql.get(i..end).and_then(number) else {
                    return Sparse::Exact;
                };
                push(out, sql, copied, i, marker);
                copied = end;
                i = end;
            }
        }
    }
    if copied == 0 {
        return Sparse::Same;
    }
    out.push_str(sql.get(copied..).unwrap_or_default());
    Sparse::Normalised
}

/// Appends `sql[copied..at]` and `marker` to `out`.
fn push(out: &mut String, sql: &str, copied: usize, at: usize, marker: &str) {
    out.push_str(sql.get(copied..at).unwrap_or_default());
    out.push_str(marker);
}

/// How a statement starts.
enum Start {
    /// Normalised: scan on from here (past its first word, or at its `(` or `;`, or the
    /// end).
    At(usize),
    /// Not normalised: the text is keyed by its exact text.
    Exact,
    /// Only the lexer can tell (a comment, an unusual first character).
    Lexer,
}

/// How the statement starting at `i` (after whitespace) starts.
fn statement_start(b: &[u8], i: usize) -> Start {
    let start = b
        .get(i..)
        .and_then(|rest| rest.iter().position(|&c| !lexer::is_space(c)))
        .map_or(b.len(), |p| i + p);
    match b.get(start) {
        None | Some(b'(' | b';') => Start::At(start),
        Some(&c) if c.is_ascii_alphabetic() => {
            let end = b
                .get(start..)
                .and_then(|rest| rest.iter().position(|&c| !lexer::is_ident_cont(c)))
                .map_or(b.len(), |p| start + p);
            match b.get(start..end) {
                Some(word) if word.is_ascii() && starts_normalised_word(word) => Start::At(end),
                Some(word) if word.is_ascii() => Start::Exact,
                _ => Start::Lexer,
            }
        }
        Some(_) => Start::Lexer,
    }
}
