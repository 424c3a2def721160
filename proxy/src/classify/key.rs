//! The classification cache's key: a statement with its literals normalised, so that
//! `... WHERE aid = 48213` and `... WHERE aid = 7` share one entry (pgbench, psycopg2,
//! PHP, Ruby and psql put their values in the text).
//!
//! One pass of Causeway's lexer ([`crate::sql::lexer`]) finds the literals: numeric,
//! string, bit-string and dollar-quoted ones become markers (one per kind of token
//! PostgreSQL's grammar tells apart: an integer that fits `int4` is an `ICONST`, other
//! numbers are `FCONST`s), comments become a space (query hints are read from the original
//! text, not from the classification), and everything else — keywords, identifiers,
//! operators, `$n` parameters, whitespace — is kept byte for byte. Text without literals
//! or comments (found by a byte scan, without lexing) keeps its exact-text key. Markers are a control byte and a letter;
//! no kept byte is that control byte, so the key spells exactly one token sequence.
//!
//! A literal's value never changes the classification of what is normalised: the raw parse
//! tree of such text differs only in constants, which the analysis reads only in EXPLAIN
//! options and COPY file names (not normalised) — never in function or table names,
//! locking clauses or statement kinds. Everything else is keyed by its exact text, as
//! before ([`key`] returns `None`):
//! - statements other than SELECT / INSERT / UPDATE / DELETE / MERGE / WITH / VALUES /
//!   TABLE / DECLARE / `(`: EXPLAIN reads its option values (`ANALYZE 0`), COPY's file
//!   name `''` reads as STDOUT, and SET, DDL and the rest gain little;
//! - text with a backslash (a `standard_conforming_strings = off` session may see other
//!   statement boundaries; the analysis parses it both ways) or a NUL (unparseable);
//! - literals the lexer cannot vouch for: `U&'...'` (escapes PostgreSQL may reject),
//!   radix or malformed numbers (`0x1G`, `1._5`), and unclosed strings or comments;
//! - the word `float`: `float(0)` and `float(54)` are the grammar's only checks on a
//!   literal's value inside a query, which would make one spelling unparseable;
//! - any other character the lexer does not know (`TokenKind::Other`), and quoted
//!   identifiers containing the markers' control byte.

use crate::sql::lexer::{Lexer, StringKind, Token, TokenKind};

mod sparse;

/// Markers: a control byte and the kind of literal.
const MARK: u8 = 0x02;
const INTEGER: &str = "\u{2}i";
const NUMERIC: &str = "\u{2}n";
const STRING: &str = "\u{2}s";
const ESCAPE_STRING: &str = "\u{2}e";
const DOLLAR_STRING: &str = "\u{2}d";
const BIT_STRING: &str = "\u{2}b";
const HEX_STRING: &str = "\u{2}x";
/// What a comment becomes: the whitespace it is to PostgreSQL.
const COMMENT: &str = " ";

/// First words of the statements whose literals are normalised.
const NORMALISED: &[&str] = &[
    "select", "insert", "update", "delete", "merge", "with", "values", "table", "declare",
];

/// The normalised form of `sql`: `sql` itself if it has no literal or comment, else
/// written to `out` (cleared first). `None` if `sql` must be keyed by its exact text.
pub(super) fn key<'a>(sql: &'a str, out: &'a mut String) -> Option<&'a str> {
    out.clear();
    if memchr::memchr2(b'\\', 0, sql.as_bytes()).is_some() {
        return None;
    }
    // The sparse pass first: a text it normalised has a literal, so the prescan would have
    // found one (the usual literal-laden statement reads its text once). The prescan
    // decides the rest, as it would have before the sparse pass.
    match sparse::key(sql, out) {
        sparse::Sparse::Normalised => Some(out),
        sparse::Sparse::Exact => None,
        sparse::Sparse::Same => may_hold_literal(sql.as_bytes()).then_some(sql),
        sparse::Sparse::Lexer if may_hold_literal(sql.as_bytes()) => {
            out.clear();
            lexed(sql, out)
        }
        sparse::Sparse::Lexer => None,
    }
}

/// [`key`] by the lexer, for any text.
fn lexed<'a>(sql: &'a str, out: &'a mut String) -> Option<&'a str> {
    // `sql[..copied]` is in `out`, normalised.
    let mut copied = 0;
    let mut statement_start = true;
    for token in Lexer::new(sql).with_comments(true) {
        if token.end() == sql.len() && !token.is_terminated() {
            return None;
        }
        let replacement = match token.kind {
            TokenKind::Comment { .. } => COMMENT,
            _ => {
                if statement_start && !starts_normalised(&token) {
                    return None;
                }
                statement_start = token.kind == TokenKind::Semicolon;
                match piece(&token)? {
                    Some(marker) => marker,
                    None => continue,
                }
            }
        };
        out.push_str(sql.get(copied..token.start)?);
        out.push_str(replacement);
        copied = token.end();
    }
    if copied == 0 {
        return Some(sql);
    }
    out.push_str(sql.get(copied..)?);
    Some(out)
}

/// Whether `sql` may hold a literal or a comment, by a byte scan much cheaper than lexing:
/// a quote, `$` not followed by a digit (a dollar quote), `--`, `/*`, or a digit that does
/// not continue an identifier or a `$n` parameter. Text without any is keyed by its exact
/// text, which is always correct (it is also what normalising it would give).
///
/// Eight bytes are tested at a time for the bytes that may start one (`'`, `-`, `/`, `$`,
/// digits); only those are looked at one by one, with their neighbours.
fn may_hold_literal(sql: &[u8]) -> bool {
    let mut i = 0;
    while let Some(chunk) = sql.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let mut found = candidates(u64::from_le_bytes(*chunk));
        while found != 0 {
            if literal_at(sql, i + (found.trailing_zeros() / 8) as usize) {
                return true;
            }
            found &= found - 1;
        }
        i += 8;
    }
    (i..sql.len()).any(|j| literal_at(sql, j))
}

/// Whether the byte at `i` starts a literal or a comment (see [`may_hold_literal`]).
fn literal_at(sql: &[u8], i: usize) -> bool {
    let next = sql.get(i + 1).copied();
    let prev = i.checked_sub(1).and_then(|p| sql.get(p)).copied();
    match sql.get(i) {
        Some(b'\'') => true,
        Some(b'-') => next == Some(b'-'),
        Some(b'/') => next == Some(b'*'),
        Some(b'$') => !next.is_some_and(|n| n.is_ascii_digit()),
        Some(b'0'..=b'9') => {
            !prev.is_some_and(|p| p.is_ascii_alphanumeric() || p == b'_' || p == b'$')
        }
        _ => false,
    }
}

/// Eight copies of byte `b`.
const fn splat(b: u8) -> u64 {
    b as u64 * 0x0101_0101_0101_0101
}

/// Bit 7 of each of eight bytes.
const HIGH: u64 = splat(0x80);

/// Bit 7 set in each byte of `w` that is in `lo..=hi` (both ASCII), others clear: no
/// byte's sum carries into the next, and bytes of 0x80 and above never match.
fn in_range(w: u64, lo: u8, hi: u8) -> u64 {
    let ascii = w & !HIGH;
    ascii.wrapping_add(splat(0x80 - lo)) & !ascii.wrapping_add(splat(0x7f - hi)) & !w & HIGH
}

/// Bit 7 set in each byte of `w` that may start a literal or comment: `'`, `-`, `/`, `$`
/// or a digit.
fn candidates(w: u64) -> u64 {
    in_range(w, b'\'', b'\'')
        | in_range(w, b'-', b'-')
        | in_range(w, b'/', b'9')
        | in_range(w, b'$', b'$')
}

/// Whether a statement whose first word is `word` is normalised.
fn starts_normalised_word(word: &[u8]) -> bool {
    NORMALISED
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
}

/// Whether a statement starting with `token` may be normalised (an empty one may).
fn starts_normalised(token: &Token<'_>) -> bool {
    match token.kind {
        TokenKind::Word => starts_normalised_word(token.text.as_bytes()),
        TokenKind::LParen | TokenKind::Semicolon => true,
        _ => false,
    }
}

/// What becomes of a token that is not a comment: `Some(None)` kept, `Some(Some(marker))`
/// replaced; `None` if the text must be keyed exactly.
fn piece(token: &Token<'_>) -> Option<Option<&'static str>> {
    use TokenKind as T;
    let text = token.text;
    let marker = match token.kind {
        T::Word if text.eq_ignore_ascii_case("float") => return None,
        T::Word | T::Param | T::Operator | T::Semicolon => return Some(None),
        T::LParen | T::RParen | T::Comma | T::Dot | T::Eq => return Some(None),
        T::QuotedIdent { .. } => return (!text.bytes().any(|b| b == MARK)).then_some(None),
        T::Number => number(text)?,
        T::String(StringKind::Standard) => STRING,
        T::String(StringKind::Escape) => ESCAPE_STRING,
        T::String(StringKind::Bit) => BIT_STRING,
        T::String(StringKind::Hex) => HEX_STRING,
        T::DollarString => DOLLAR_STRING,
        T::String(StringKind::Unicode) | T::Comment { .. } | T::Other => return None,
    };
    Some(Some(marker))
}

/// The marker of a numeric literal as PostgreSQL's scanner reads it: [`INTEGER`] for a
/// decimal integer that fits `int4` (an `ICONST`), [`NUMERIC`] for other decimal
/// integers, decimals and reals (`FCONST`); `None` for radix integers (`0x1F`) and
/// anything PostgreSQL would reject.
fn number(text: &str) -> Option<&'static str> {
    let b = text.as_bytes();
    let (end, value) = match b.first() {
        Some(b'.') => (0, None),
        _ => {
            let (end, value) = decimal_integer(b, 0)?;
            (end, Some(value))
        }
    };
    if end == b.len() {
        let fits = value.is_some_and(|v| v <= u64::from(i32::MAX.unsigned_abs()));
        return Some(if fits { INTEGER } else { NUMERIC });
    }
    let mut i = end;
    if b.get(i) == Some(&b'.') {
        i += 1;
        if b.get(i).is_some_and(u8::is_ascii_digit) {
            i = decimal_integer(b, i)?.0;
        } else if value.is_none() {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = decimal_integer(b, i)?.0;
    }
    (i == b.len()).then_some(NUMERIC)
}

/// Digits from `i`, single underscores allowed between them (`1_000`): the end and the
/// value (saturating). `None` if no digit is at `i`.
fn decimal_integer(b: &[u8], mut i: usize) -> Option<(usize, u64)> {
    let mut value = u64::from(b.get(i).filter(|c| c.is_ascii_digit())? - b'0');
    i += 1;
    loop {
        match (b.get(i).copied(), b.get(i + 1).copied()) {
            (Some(c), _) if c.is_ascii_digit() => i += 1,
            (Some(b'_'), Some(c)) if c.is_ascii_digit() => i += 2,
            _ => return Some((i, value)),
        }
        let digit = b.get(i - 1).map_or(0, |c| c.wrapping_sub(b'0'));
        value = value.saturating_mul(10).saturating_add(u64::from(digit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time scan the chunked one must agree with.
    fn may_hold_literal_bytewise(sql: &[u8]) -> bool {
        (0..sql.len()).any(|i| literal_at(sql, i))
    }

    #[test]
    fn the_chunked_prescan_agrees_with_the_bytewise_one() {
        let pieces: [&[u8]; 18] = [
            b"a",
            b"1",
            b" ",
            b"'",
            b"-",
            b"--",
            b"/",
            b"/*",
            b"$",
            b"$1",
            b"_",
            b"\xc3\xa9",
            b"\x7f",
            b".",
            b"9",
            b"0",
            b"z",
            b"\xff",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            let mut sql = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut s = seed;
            for _ in 0..(s % 24) {
                s = s.rotate_right(5).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                sql.extend_from_slice(pieces[(s >> 40) as usize % pieces.len()]);
            }
            assert_eq!(
                may_hold_literal(&sql),
                may_hold_literal_bytewise(&sql),
                "{:?}",
                String::from_utf8_lossy(&sql)
            );
        }
    }

    #[test]
    fn the_prescan_finds_literals_and_skips_parameters() {
        assert!(!may_hold_literal(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"
        ));
        assert!(!may_hold_literal(b"SELECT t1.a2 FROM t1"));
        assert!(may_hold_literal(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 48213"
        ));
        assert!(may_hold_literal(b"SELECT 'x'"));
        assert!(may_hold_literal(b"SELECT a -- x"));
        assert!(may_hold_literal(b"SELECT a /* x */"));
        assert!(may_hold_literal(b"SELECT $$x$$"));
        assert!(!may_hold_literal(b"SELECT a - b / c"));
    }

    /// The key by the lexer alone, to check the sparse pass against.
    fn lexed_key(sql: &str) -> Option<String> {
        let mut out = String::new();
        if sql.contains('\\') || !may_hold_literal(sql.as_bytes()) {
            return None;
        }
        lexed(sql, &mut out).map(str::to_owned)
    }

    /// Every text gets the key the lexer pass gives, whichever pass made it: random
    /// sequences of the pieces either pass treats specially (literals of every kind,
    /// comments, prefixes, quoted identifiers, statement starts, `float`, controls).
    #[test]
    fn the_sparse_pass_agrees_with_the_lexer() {
        let pieces: [&str; 58] = [
            "SELECT ",
            "select",
            "INSERT ",
            "update",
            "WITH ",
            "values",
            "SET ",
            "show ",
            "explain ",
            "(",
            ")",
            ";",
            "; ",
            ",",
            ".",
            "=",
            "-",
            "/",
            "*",
            "::",
            "->",
            " ",
            "\n",
            "\t",
            "a",
            "t1",
            "E",
            "e",
            "B",
            "x",
            "N",
            "U&",
            "u",
            "float",
            "Floaty",
            "1",
            "42",
            "2147483648",
            "1.5",
            ".5",
            "1e5",
            "1e",
            "0x1F",
            "1_000",
            "1.",
            "..",
            "'a'",
            "'it''s'",
            "''",
            "'x",
            "'a'\n'b'",
            "$$d$$",
            "$1",
            "\"q\"",
            "-- c\n",
            "/* c */",
            "\u{2}",
            "\u{e9}",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut sparse_hits = 0;
        for _ in 0..60_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut s = seed;
            let mut sql = String::new();
            for _ in 0..(s % 16) {
                s = s.rotate_right(7).wrapping_mul(0x2545_f491_4f6c_dd1d);
                sql.push_str(pieces[(s >> 40) as usize % pieces.len()]);
            }
            let mut out = String::new();
            if !sql.contains('\\') && may_hold_literal(sql.as_bytes()) {
                let mut probe = String::new();
                if sparse::key(&sql, &mut probe) != sparse::Sparse::Lexer {
                    sparse_hits += 1;
                }
            }
            assert_eq!(
                key(&sql, &mut out).map(str::to_owned),
                lexed_key(&sql),
                "{sql:?}"
            );
        }
        assert!(
            sparse_hits > 5_000,
            "the sparse pass decided only {sparse_hits}"
        );
        let pgbench = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
        assert_eq!(
            sparse::key(pgbench, &mut String::new()),
            sparse::Sparse::Normalised,
            "the usual statement is the sparse pass's"
        );
    }
}
