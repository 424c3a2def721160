//! PostgreSQL lexical scanner: turns SQL text into tokens with byte spans, following the
//! server's own rules (`src/backend/parser/scan.l`) for quoting, comments and operators.
//!
//! The scanner never allocates and never panics: unterminated strings, quoted identifiers,
//! dollar quotes and comments simply extend to the end of the input. Values (unescaped
//! strings, normalized identifiers) are decoded on demand by [`Token::ident`] and
//! [`Token::string_value`], which borrow from the input whenever they can.

use std::borrow::Cow;
use std::ops::Range;

/// Longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`); longer ones are truncated.
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// What a [`Token`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Unquoted identifier or keyword (`select`, `Foo`, `a$b`); case-insensitive.
    Word,
    /// Quoted identifier `"a""b"`; `unicode` for `U&"..."` (including any `UESCAPE 'c'`).
    QuotedIdent {
        /// The `U&"..."` form with Unicode escapes.
        unicode: bool,
    },
    /// String constant of the given flavour.
    String(StringKind),
    /// Dollar-quoted string `$tag$ ... $tag$` or `$$ ... $$`.
    DollarString,
    /// Numeric constant (`42`, `1.5e3`, `.5`, `0x1F`, `1_000`).
    Number,
    /// Positional parameter `$1`.
    Param,
    /// Operator or other punctuation (`+`, `<>`, `::`, `[`, `:=`, `*`).
    Operator,
    /// `;`
    Semicolon,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `,`
    Comma,
    /// `.`
    Dot,
    /// A lone `=` operator.
    Eq,
    /// A comment, delimiters included: `/* ... */` (nested comments inside it are part of
    /// it; an unterminated one runs to the end of the input) or `-- ...` up to, not
    /// including, the line end. Only produced by a lexer built
    /// [`with_comments(true)`](Lexer::with_comments); by default comments are skipped.
    Comment {
        /// `/* ... */` rather than `-- ...`.
        block: bool,
    },
    /// Any other single character (a `$` that starts neither a quote nor a parameter, `\`,
    /// control characters).
    Other,
}

/// Flavours of string constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringKind {
    /// `'it''s'`; `N'...'` lexes as the word `N` followed by a standard string.
    Standard,
    /// `E'\''` with backslash escapes; also plain strings when `standard_conforming_strings`
    /// is off.
    Escape,
    /// `U&'d\0061t\+000061'`, including any trailing `UESCAPE 'c'` clause.
    Unicode,
    /// Bit string `B'0101'`.
    Bit,
    /// Hexadecimal bit string `X'1F'`.
    Hex,
}

/// One token: its kind, its exact source text and where that text starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// What the token is.
    pub kind: TokenKind,
    /// The token's source text, quotes and prefixes included.
    pub text: &'a str,
    /// Byte offset of `text` in the scanned input.
    pub start: usize,
}

impl<'a> Token<'a> {
    /// Byte offset just past the token.
    pub fn end(&self) -> usize {
        self.start + self.text.len()
    }

    /// Byte range of the token in the scanned input.
    pub fn span(&self) -> Range<usize> {
        self.start..self.end()
    }

    /// Whether the token's text equals `s`, ignoring ASCII case (any kind of token).
    pub fn eq_ignore_ascii_case(&self, s: &str) -> bool {
        self.text.eq_ignore_ascii_case(s)
    }

    /// Whether the token is the unquoted word `kw` (ASCII case-insensitive).
    pub fn is_keyword(&self, kw: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(kw)
    }

    /// The identifier as PostgreSQL sees it: unquoted words lowercased (ASCII only, as in
    /// UTF-8 databases), quoted identifiers unescaped and kept as written, both truncated
    /// to [`MAX_IDENTIFIER_LEN`] bytes. `None` for other tokens or a malformed `U&"..."`.
    pub fn ident(&self) -> Option<Cow<'a, str>> {
        let name = match self.kind {
            TokenKind::Word => ascii_lowercase(self.text),
            TokenKind::QuotedIdent { unicode: false } => undouble(self.text.get(1..)?, b'"').0,
            TokenKind::QuotedIdent { unicode: true } => Cow::Owned(unicode_value(self.text, b'"')?),
            _ => return None,
        };
        Some(truncate_ident(name))
    }

    /// The value of a string constant or dollar-quoted string, unescaped. `None` for other
    /// tokens and for escapes PostgreSQL would reject (invalid UTF-8, NUL, bad `\u`).
    pub fn string_value(&self) -> Option<Cow<'a, str>> {
        match self.kind {
            TokenKind::String(StringKind::Standard) => Some(undouble(self.text.get(1..)?, b'\'').0),
            TokenKind::String(StringKind::Bit | StringKind::Hex) => {
                Some(undouble(self.text.get(2..)?, b'\'').0)
            }
            TokenKind::String(StringKind::Escape) => {
                let body = self.text.get(self.text.find('\'')? + 1..)?;
                let bytes = decode_escape_string(body.as_bytes())?;
                String::from_utf8(bytes).ok().map(Cow::Owned)
            }
            TokenKind::String(StringKind::Unicode) => {
                unicode_value(self.text, b'\'').map(Cow::Owned)
            }
            TokenKind::DollarString => dollar_body(self.text).map(Cow::Borrowed),
            _ => None,
        }
    }

    /// Whether the token is complete: false for a string, quoted identifier, dollar quote
    /// or block comment that runs unclosed to the end of the input (PostgreSQL rejects
    /// those). Other tokens are always complete.
    pub fn is_terminated(&self) -> bool {
        let b = self.text.as_bytes();
        let closed = |end: Option<usize>| end == Some(b.len());
        match self.kind {
            TokenKind::String(StringKind::Standard) => closed(string_close(b, 1, false)),
            TokenKind::String(StringKind::Escape) => {
                let open = if b.first() == Some(&b'\'') { 1 } else { 2 };
                closed(string_close(b, open, true))
            }
            TokenKind::String(StringKind::Bit | StringKind::Hex) => closed(bit_string_close(b, 2)),
            TokenKind::String(StringKind::Unicode) => uescape_closed(b, string_close(b, 3, false)),
            TokenKind::QuotedIdent { unicode: false } => closed(quoted_ident_close(b, 1)),
            TokenKind::QuotedIdent { unicode: true } => uescape_closed(b, quoted_ident_close(b, 3)),
            TokenKind::DollarString => dollar_closed(self.text),
            TokenKind::Comment { block: true } => closed(block_comment_close(b, 0)),
            _ => true,
        }
    }
}

/// Whether a `U&` token `b` whose quoted part closes at `end` is complete, with any
/// `UESCAPE 'c'` clause after it.
fn uescape_closed(b: &[u8], end: Option<usize>) -> bool {
    let Some(end) = end else {
        return false;
    };
    if end == b.len() {
        return true;
    }
    let quote = b
        .get(end..)
        .and_then(|rest| rest.iter().position(|&c| c == b'\''));
    quote.is_some_and(|q| string_close(b, end + q + 1, false) == Some(b.len()))
}

/// Whether a dollar-quoted token's text ends with its opening delimiter.
fn dollar_closed(text: &str) -> bool {
    let tag_len = text.get(1..).and_then(|t| t.find('$')).map(|p| p + 2);
    match tag_len.and_then(|n| text.get(..n)) {
        Some(tag) => text.len() >= 2 * tag.len() && text.ends_with(tag),
        None => false,
    }
}

/// Tokenizer over a SQL string; an [`Iterator`] of [`Token`]s that skips whitespace and
/// (unless built [`with_comments(true)`](Lexer::with_comments)) comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    standard_strings: bool,
    comments: bool,
}

impl<'a> Lexer<'a> {
    /// A lexer with `standard_conforming_strings = on` (the default since PostgreSQL 9.1).
    pub fn new(src: &'a str) -> Self {
        Self::with_standard_conforming_strings(src, true)
    }

    /// A lexer for a session whose `standard_conforming_strings` is `on`; when off, plain
    /// `'...'` strings treat backslash as an escape, as `E'...'` strings always do.
    pub fn with_standard_conforming_strings(src: &'a str, on: bool) -> Self {
        Self {
            src,
            pos: 0,
            standard_strings: on,
            comments: false,
        }
    }

    /// With `on`, comments are returned as [`TokenKind::Comment`] tokens instead of being
    /// skipped (for reading query hints); nothing else changes.
    pub fn with_comments(mut self, on: bool) -> Self {
        self.comments = on;
        self
    }

    /// Whether comments are returned as tokens.
    pub fn comments(&self) -> bool {
        self.comments
    }

    /// The input being scanned.
    pub fn source(&self) -> &'a str {
        self.src
    }

    /// Byte offset of the next unread character (before any whitespace or comments).
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Whether plain strings follow `standard_conforming_strings = on`.
    pub fn standard_conforming_strings(&self) -> bool {
        self.standard_strings
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn byte(&self, i: usize) -> Option<u8> {
        self.bytes().get(i).copied()
    }

    /// Skips whitespace, and unless comments are tokens, `--` comments and nested `/* */`
    /// comments.
    #[inline]
    fn skip_trivia(&mut self) {
        self.pos = if self.comments {
            skip_space(self.bytes(), self.pos)
        } else {
            skip_trivia(self.bytes(), self.pos)
        };
    }

    /// Moves past whitespace (and skipped comments) to the next token; its offset and first
    /// byte. A single space, the usual separator, is stepped over inline.
    #[inline(always)]
    fn token_start(&mut self) -> Option<(usize, u8)> {
        let bytes = self.bytes();
        let mut start = self.pos;
        let mut b = *bytes.get(start)?;
        if b == b' ' {
            start += 1;
            self.pos = start;
            b = *bytes.get(start)?;
        }
        if has_class(b, TRIVIA) {
            self.skip_trivia();
            start = self.pos;
            b = *bytes.get(start)?;
        }
        Some((start, b))
    }

    /// Scans the token starting with byte `b` at `start`: plain words, integers, one-byte
    /// punctuation and operators inline, everything else by [`Lexer::scan_token`] (which gives the same
    /// result for those too, as a test checks).
    #[inline(always)]
    fn scan_at(&self, start: usize, b: u8) -> (TokenKind, usize) {
        let bytes = self.bytes();
        // `E'`, `B'`, `X'` and `U&` start strings or quoted identifiers instead.
        let prefixed =
            || has_class(b, PREFIX) && matches!(bytes.get(start + 1), Some(b'\'' | b'&'));
        if is_ident_start(b) && !prefixed() {
            return (TokenKind::Word, ident_end(bytes, start + 1));
        }
        let next = bytes.get(start + 1).copied();
        match b {
            b'0'..=b'9' => (TokenKind::Number, number_end_fast(bytes, start)),
            b',' => (TokenKind::Comma, start + 1),
            b'(' => (TokenKind::LParen, start + 1),
            b')' => (TokenKind::RParen, start + 1),
            b';' => (TokenKind::Semicolon, start + 1),
            b'.' if !next.is_some_and(|c| c == b'.' || c.is_ascii_digit()) => {
                (TokenKind::Dot, start + 1)
            }
            // A one-character operator: nothing to trim, no comment inside it.
            b'=' if !next.is_some_and(is_op_char) => (TokenKind::Eq, start + 1),
            _ if is_op_char(b) && !next.is_some_and(is_op_char) => (TokenKind::Operator, start + 1),
            _ => self.scan_other(start, b),
        }
    }

    /// Scans a comment (when comments are tokens) or any other token at `start`.
    fn scan_other(&self, start: usize, b: u8) -> (TokenKind, usize) {
        match self.scan_comment(start) {
            Some(comment) => comment,
            None => self.scan_token(start, b),
        }
    }

    /// The comment starting at `start`, if one does and comments are tokens.
    #[inline]
    fn scan_comment(&self, start: usize) -> Option<(TokenKind, usize)> {
        if !self.comments {
            return None;
        }
        let bytes = self.bytes();
        match (bytes.get(start), bytes.get(start + 1)) {
            (Some(b'-'), Some(b'-')) => {
                Some((TokenKind::Comment { block: false }, line_end(bytes, start)))
            }
            (Some(b'/'), Some(b'*')) => Some((
                TokenKind::Comment { block: true },
                block_comment_end(bytes, start),
            )),
            _ => None,
        }
    }

    /// Scans the token starting with byte `b` at `start`; returns its kind and end.
    fn scan_token(&self, start: usize, b: u8) -> (TokenKind, usize) {
        let bytes = self.bytes();
        let next = self.byte(start + 1);
        match b {
            b'\'' => {
                let kind = if self.standard_strings {
                    StringKind::Standard
                } else {
                    StringKind::Escape
                };
                (
                    TokenKind::String(kind),
                    string_end(bytes, start + 1, !self.standard_strings),
                )
            }
            b'"' => (
                TokenKind::QuotedIdent { unicode: false },
                quoted_ident_end(bytes, start + 1),
            ),
            b'$' => dollar(self.src, start),
            b'0'..=b'9' => (TokenKind::Number, number_end(bytes, start)),
            b'.' => dot(bytes, start),
            b';' => (TokenKind::Semicolon, start + 1),
            b'(' => (TokenKind::LParen, start + 1),
            b')' => (TokenKind::RParen, start + 1),
            b',' => (TokenKind::Comma, start + 1),
            b'[' | b']' => (TokenKind::Operator, start + 1),
            b':' if matches!(next, Some(b':' | b'=')) => (TokenKind::Operator, start + 2),
            b':' => (TokenKind::Operator, start + 1),
            b'e' | b'E' if next == Some(b'\'') => (
                TokenKind::String(StringKind::Escape),
                string_end(bytes, start + 2, true),
            ),
            b'b' | b'B' if next == Some(b'\'') => (
                TokenKind::String(StringKind::Bit),
                bit_string_end(bytes, start + 2),
            ),
            b'x' | b'X' if next == Some(b'\'') => (
                TokenKind::String(StringKind::Hex),
                bit_string_end(bytes, start + 2),
            ),
            b'u' | b'U' if next == Some(b'&') => self.unicode(start),
            _ if is_ident_start(b) => (TokenKind::Word, ident_end(bytes, start + 1)),
            _ if is_op_char(b) => operator(bytes, start),
            _ => (TokenKind::Other, start + 1),
        }
    }

    /// `U&'...'` or `U&"..."` with an optional `UESCAPE 'c'`; otherwise the word `U`.
    fn unicode(&self, start: usize) -> (TokenKind, usize) {
        let bytes = self.bytes();
        let (kind, end) = match self.byte(start + 2) {
            Some(b'\'') => (
                TokenKind::String(StringKind::Unicode),
                string_end(bytes, start + 3, false),
            ),
            Some(b'"') => (
                TokenKind::QuotedIdent { unicode: true },
                quoted_ident_end(bytes, start + 3),
            ),
            _ => return (TokenKind::Word, ident_end(bytes, start + 1)),
        };
        (kind, self.uescape_end(end))
    }

    /// End of a `UESCAPE 'c'` clause following a Unicode literal ending at `end`, or `end`.
    fn uescape_end(&self, end: usize) -> usize {
        let bytes = self.bytes();
        let word = skip_trivia(bytes, end);
        let word_end = ident_end(bytes, word);
        let is_uescape = self
            .src
            .get(word..word_end)
            .is_some_and(|w| w.eq_ignore_ascii_case("uescape"));
        if !is_uescape {
            return end;
        }
        let quote = skip_trivia(bytes, word_end);
        match bytes.get(quote) {
            Some(b'\'') => string_end(bytes, quote + 1, !self.standard_strings),
            _ => end,
        }
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    #[inline(always)]
    fn next(&mut self) -> Option<Token<'a>> {
        let (start, b) = self.token_start()?;
        let (kind, end) = self.scan_at(start, b);
        // Every scanner consumes at least one byte and stops at the end of the input.
        let end = end.clamp(start + 1, self.src.len().max(start + 1));
        self.pos = end;
        let text = self.src.get(start..end).unwrap_or("");
        Some(Token { kind, text, start })
    }
}

/// Character classes, one bit each, looked up per byte.
const SPACE: u8 = 1;
const IDENT_START: u8 = 2;
const IDENT_CONT: u8 = 4;
const OP_CHAR: u8 = 8;
/// Bytes that may start whitespace or a comment: [`SPACE`], `-` and `/`.
const TRIVIA: u8 = 16;
/// Letters that start a string or identifier when a quote or `&` follows (`E'`, `U&"`).
const PREFIX: u8 = 32;

/// Class bits for every byte value; bytes >= 0x80 (non-ASCII UTF-8) are identifier bytes.
static CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut class = 0;
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            class |= SPACE | TRIVIA;
        }
        if matches!(b, b'-' | b'/') {
            class |= TRIVIA;
        }
        if matches!(b, b'e' | b'E' | b'b' | b'B' | b'x' | b'X' | b'u' | b'U') {
            class |= PREFIX;
        }
        if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            class |= IDENT_START | IDENT_CONT;
        }
        if b.is_ascii_digit() || b == b'$' {
            class |= IDENT_CONT;
        }
        if matches!(
            b,
            b'~' | b'!'
                | b'@'
                | b'#'
                | b'^'
                | b'&'
                | b'|'
                | b'`'
                | b'?'
                | b'+'
                | b'-'
                | b'*'
                | b'/'
                | b'%'
                | b'<'
                | b'>'
                | b'='
        ) {
            class |= OP_CHAR;
        }
        table[i] = class;
        i += 1;
    }
    table
};

fn has_class(b: u8, class: u8) -> bool {
    CLASSES[usize::from(b)] & class != 0
}

/// PostgreSQL whitespace: space, tab, newline, carriage return, form feed, vertical tab.
#[inline]
pub fn is_space(b: u8) -> bool {
    has_class(b, SPACE)
}

fn is_ident_start(b: u8) -> bool {
    has_class(b, IDENT_START)
}

/// Whether `b` continues an unquoted identifier (letters, digits, `_`, `$`, non-ASCII).
#[inline]
pub(crate) fn is_ident_cont(b: u8) -> bool {
    has_class(b, IDENT_CONT)
}

fn is_op_char(b: u8) -> bool {
    has_class(b, OP_CHAR)
}

#[inline]
fn skip_trivia(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if is_space(c) {
            i += 1;
            continue;
        }
        match (c, b.get(i + 1)) {
            (b'-', Some(b'-')) => i = line_end(b, i),
            (b'/', Some(b'*')) => i = block_comment_end(b, i),
            _ => return i,
        }
    }
    i
}

#[inline]
fn skip_space(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|&c| is_space(c)) {
        i += 1;
    }
    i
}

/// Index of the newline ending the line that contains `i` (or the input length).
fn line_end(b: &[u8], i: usize) -> usize {
    let rest = b.get(i..).unwrap_or(&[]);
    rest.iter()
        .position(|&c| c == b'\n' || c == b'\r')
        .map_or(b.len(), |p| i + p)
}

/// End of the (nested) block comment starting at `i`.
fn block_comment_end(b: &[u8], i: usize) -> usize {
    block_comment_close(b, i).unwrap_or(b.len())
}

/// [`block_comment_end`], or `None` if the comment is not closed.
fn block_comment_close(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match (b.get(i).copied(), b.get(i + 1).copied()) {
            (Some(b'/'), Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (Some(b'*'), Some(b'/')) => {
                depth = depth.saturating_sub(1);
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            (Some(_), _) => i += 1,
            (None, _) => return None,
        }
    }
}

#[inline]
fn ident_end(b: &[u8], i: usize) -> usize {
    run_end(b, i, ident_bytes, is_ident_cont)
}

/// Eight copies of byte `b`.
const fn splat(b: u8) -> u64 {
    b as u64 * 0x0101_0101_0101_0101
}

/// Bit 7 of each of eight bytes.
const HIGH: u64 = splat(0x80);

/// Bit 7 set in each byte of `w` (all bytes below 0x80) that is in `lo..=hi`, others
/// clear. No byte's sum carries into the next, so the bytes are tested independently.
#[inline(always)]
fn in_range(w: u64, lo: u8, hi: u8) -> u64 {
    w.wrapping_add(splat(0x80 - lo)) & !w.wrapping_add(splat(0x7f - hi)) & HIGH
}

/// Bit 7 set in each byte of `w` that [`is_ident_cont`] accepts (letters, digits, `_`,
/// `$`, non-ASCII).
#[inline(always)]
fn ident_bytes(w: u64) -> u64 {
    let ascii = w & !HIGH;
    (w & HIGH)
        | in_range(ascii | splat(0x20), b'a', b'z')
        | in_range(ascii, b'0', b'9')
        | in_range(ascii, b'_', b'_')
        | in_range(ascii, b'$', b'$')
}

/// Bit 7 set in each byte of `w` that is an ASCII digit.
#[inline(always)]
fn digit_bytes(w: u64) -> u64 {
    in_range(w & !HIGH, b'0', b'9') & !w
}

/// End of the run of bytes from `i` that `member` accepts. Eight bytes are tested at a
/// time by `members` (the same test, see [`ident_bytes`]), without a branch per byte: most
/// runs end within the first eight, and one branch on where is easier to predict than a
/// loop's exit.
#[inline(always)]
fn run_end(b: &[u8], mut i: usize, members: fn(u64) -> u64, member: fn(u8) -> bool) -> usize {
    while let Some(chunk) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let stops = !members(u64::from_le_bytes(*chunk)) & HIGH;
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let rest = b.get(i..).unwrap_or(&[]);
    rest.iter()
        .position(|&c| !member(c))
        .map_or(b.len(), |p| i + p)
}

/// If a closing quote at `i - 1` is followed by whitespace containing a newline and another
/// quote (SQL's string continuation), the index of that quote.
fn quote_continue(b: &[u8], mut i: usize) -> Option<usize> {
    let mut newline = false;
    loop {
        match (b.get(i).copied()?, b.get(i + 1).copied()) {
            (b' ' | b'\t' | 0x0c, _) => i += 1,
            (0x0b, _) if newline => i += 1,
            (b'\n' | b'\r', _) => {
                newline = true;
                i += 1;
            }
            (b'-', Some(b'-')) => i = line_end(b, i),
            (b'\'', _) if newline => return Some(i),
            _ => return None,
        }
    }
}

/// End of a `'...'` string whose body starts at `i`; `backslash` for escape strings.
fn string_end(b: &[u8], i: usize, backslash: bool) -> usize {
    string_close(b, i, backslash).unwrap_or(b.len())
}

/// End of a standard `'...'` string (`standard_conforming_strings` on) whose body starts
/// at `i`, SQL continuation included; `None` if it is not closed.
pub(crate) fn standard_string_close(b: &[u8], i: usize) -> Option<usize> {
    string_close(b, i, false)
}

/// [`string_end`], or `None` if the string is not closed.
fn string_close(b: &[u8], mut i: usize, backslash: bool) -> Option<usize> {
    loop {
        match b.get(i) {
            None => return None,
            Some(b'\\') if backslash => i += 2,
            Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
            Some(b'\'') => match quote_continue(b, i + 1) {
                Some(q) => i = q + 1,
                None => return Some(i + 1),
            },
            Some(_) => i += 1,
        }
    }
}

/// End of a `B'...'` / `X'...'` string whose body starts at `i` (no `''` escape).
fn bit_string_end(b: &[u8], i: usize) -> usize {
    bit_string_close(b, i).unwrap_or(b.len())
}

/// [`bit_string_end`], or `None` if the string is not closed.
fn bit_string_close(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match b.get(i) {
            None => return None,
            Some(b'\'') => match quote_continue(b, i + 1) {
                Some(q) => i = q + 1,
                None => return Some(i + 1),
            },
            Some(_) => i += 1,
        }
    }
}

/// End of a `"..."` identifier whose body starts at `i`.
fn quoted_ident_end(b: &[u8], i: usize) -> usize {
    quoted_ident_close(b, i).unwrap_or(b.len())
}

/// [`quoted_ident_end`], or `None` if the identifier is not closed.
fn quoted_ident_close(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match b.get(i) {
            None => return None,
            Some(b'"') if b.get(i + 1) == Some(&b'"') => i += 2,
            Some(b'"') => return Some(i + 1),
            Some(_) => i += 1,
        }
    }
}

/// `$1`, `$tag$...$tag$`, `$$...$$`, or a lone `$`.
fn dollar(src: &str, start: usize) -> (TokenKind, usize) {
    let b = src.as_bytes();
    match b.get(start + 1).copied() {
        Some(d) if d.is_ascii_digit() => {
            let rest = b.get(start + 1..).unwrap_or(&[]);
            let end = rest
                .iter()
                .position(|c| !c.is_ascii_digit())
                .map_or(b.len(), |p| start + 1 + p);
            (TokenKind::Param, end)
        }
        Some(b'$') => dollar_quote_end(src, start, start + 2),
        Some(c) if is_ident_start(c) => {
            let rest = b.get(start + 1..).unwrap_or(&[]);
            let tag_end = rest
                .iter()
                .position(|&c| !(is_ident_start(c) || c.is_ascii_digit()))
                .map_or(b.len(), |p| start + 1 + p);
            match b.get(tag_end) {
                Some(b'$') => dollar_quote_end(src, start, tag_end + 1),
                _ => (TokenKind::Other, start + 1),
            }
        }
        _ => (TokenKind::Other, start + 1),
    }
}

/// End of a dollar quote whose delimiter is `src[start..body]`.
fn dollar_quote_end(src: &str, start: usize, body: usize) -> (TokenKind, usize) {
    let end = match (src.get(start..body), src.get(body..)) {
        (Some(tag), Some(rest)) => rest.find(tag).map_or(src.len(), |p| body + p + tag.len()),
        _ => src.len(),
    };
    (TokenKind::DollarString, end)
}

/// Body of a dollar-quoted token's text, without its delimiters.
fn dollar_body(text: &str) -> Option<&str> {
    let tag_len = text.get(1..)?.find('$')? + 2;
    let tag = text.get(..tag_len)?;
    let body = text.get(tag_len..)?;
    Some(body.strip_suffix(tag).unwrap_or(body))
}

fn digits_end(b: &[u8], mut i: usize) -> usize {
    loop {
        match (b.get(i).copied(), b.get(i + 1).copied()) {
            (Some(c), _) if c.is_ascii_digit() => i += 1,
            (Some(b'_'), Some(c)) if c.is_ascii_digit() => i += 2,
            _ => return i,
        }
    }
}

/// [`number_end`] for the usual plain integer, stepping over its digits eight at a time;
/// anything that may continue a number in another way (`_`, `.`, an exponent, a radix
/// prefix) is left to `number_end`.
#[inline]
fn number_end_fast(b: &[u8], start: usize) -> usize {
    let i = run_end(b, start + 1, digit_bytes, |c| c.is_ascii_digit());
    match b.get(i) {
        Some(b'_' | b'.' | b'e' | b'E' | b'x' | b'X' | b'o' | b'O' | b'b' | b'B') => {
            number_end(b, start)
        }
        _ => i,
    }
}

/// End of the number starting with a digit at `start`.
pub(crate) fn number_end(b: &[u8], start: usize) -> usize {
    let radix = match (
        b.get(start).copied(),
        b.get(start + 1).copied(),
        b.get(start + 2).copied(),
    ) {
        (Some(b'0'), Some(b'x' | b'X'), Some(c)) => c.is_ascii_hexdigit() || c == b'_',
        (Some(b'0'), Some(b'o' | b'O' | b'b' | b'B'), Some(c)) => c.is_ascii_digit() || c == b'_',
        _ => false,
    };
    if radix {
        let rest = b.get(start + 2..).unwrap_or(&[]);
        return rest
            .iter()
            .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
            .map_or(b.len(), |p| start + 2 + p);
    }
    let i = digits_end(b, start);
    match (b.get(i).copied(), b.get(i + 1).copied()) {
        (Some(b'.'), Some(b'.')) => i,
        (Some(b'.'), _) => exponent_end(b, digits_end(b, i + 1)),
        _ => exponent_end(b, i),
    }
}

/// Extends a number ending at `i` by an exponent `e[+-]digits`, if one follows.
fn exponent_end(b: &[u8], i: usize) -> usize {
    match (
        b.get(i).copied(),
        b.get(i + 1).copied(),
        b.get(i + 2).copied(),
    ) {
        (Some(b'e' | b'E'), Some(d), _) if d.is_ascii_digit() => digits_end(b, i + 1),
        (Some(b'e' | b'E'), Some(b'+' | b'-'), Some(d)) if d.is_ascii_digit() => {
            digits_end(b, i + 2)
        }
        _ => i,
    }
}

/// `.5`, `..`, or `.`.
fn dot(b: &[u8], start: usize) -> (TokenKind, usize) {
    match b.get(start + 1).copied() {
        Some(c) if c.is_ascii_digit() => {
            (TokenKind::Number, exponent_end(b, digits_end(b, start + 1)))
        }
        Some(b'.') => (TokenKind::Operator, start + 2),
        _ => (TokenKind::Dot, start + 1),
    }
}

/// Operator starting at `start`, with PostgreSQL's rules: it stops before an embedded `--`
/// or `/*`, and a trailing `+`/`-` is dropped unless the operator contains one of
/// ``~!@#^&|`?%`` (so `=-1` is `=` then `-1`).
fn operator(b: &[u8], start: usize) -> (TokenKind, usize) {
    let rest = b.get(start..).unwrap_or(&[]);
    let mut len = rest
        .iter()
        .position(|&c| !is_op_char(c))
        .unwrap_or(rest.len());
    let run = rest.get(..len).unwrap_or(&[]);
    if let Some(p) = run.windows(2).position(|w| w == b"/*" || w == b"--") {
        len = p.max(1);
    }
    let run = rest.get(..len).unwrap_or(&[]);
    let trims = len > 1 && matches!(run.last(), Some(b'+' | b'-'));
    if trims && !run.iter().any(|c| b"~!@#^&|`?%".contains(c)) {
        while len > 1 && matches!(run.get(len - 1), Some(b'+' | b'-')) {
            len -= 1;
        }
    }
    let kind = if run.get(..len) == Some(b"=") {
        TokenKind::Eq
    } else {
        TokenKind::Operator
    };
    (kind, start + len)
}

fn ascii_lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// Truncates an identifier to [`MAX_IDENTIFIER_LEN`] bytes on a character boundary.
fn truncate_ident(name: Cow<'_, str>) -> Cow<'_, str> {
    if name.len() <= MAX_IDENTIFIER_LEN {
        return name;
    }
    let cut = (0..=MAX_IDENTIFIER_LEN)
        .rev()
        .find(|&i| name.is_char_boundary(i))
        .unwrap_or(0);
    match name {
        Cow::Borrowed(s) => Cow::Borrowed(s.get(..cut).unwrap_or("")),
        Cow::Owned(mut s) => {
            s.truncate(cut);
            Cow::Owned(s)
        }
    }
}

/// Decodes the body of a quoted item (opening quote already stripped) in which a doubled
/// `q` stands for `q` and, for strings, SQL continuation joins literals across newlines.
/// Returns the value and the offset just past the closing quote.
fn undouble(body: &str, q: u8) -> (Cow<'_, str>, usize) {
    let bytes = body.as_bytes();
    let mut out: Option<String> = None;
    let mut from = 0;
    loop {
        let Some(p) = bytes
            .get(from..)
            .and_then(|r| r.iter().position(|&c| c == q))
            .map(|p| from + p)
        else {
            return (finish(body, out, from, body.len()), body.len());
        };
        let next = if bytes.get(p + 1) == Some(&q) {
            Some((p + 1, p + 2))
        } else if q == b'\'' {
            quote_continue(bytes, p + 1).map(|n| (p, n + 1))
        } else {
            None
        };
        let Some((keep_to, resume)) = next else {
            return (finish(body, out, from, p), p + 1);
        };
        let buf = out.get_or_insert_with(String::new);
        buf.push_str(body.get(from..keep_to).unwrap_or(""));
        from = resume;
    }
}

/// Completes [`undouble`]: borrows when nothing had to be rewritten.
fn finish<'a>(body: &'a str, out: Option<String>, from: usize, to: usize) -> Cow<'a, str> {
    let tail = body.get(from..to).unwrap_or("");
    match out {
        None => Cow::Borrowed(tail),
        Some(mut s) => {
            s.push_str(tail);
            Cow::Owned(s)
        }
    }
}

/// Decodes an `E'...'` body (opening quote stripped) to bytes; `None` if PostgreSQL would
/// reject it.
fn decode_escape_string(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while let Some(&c) = body.get(i) {
        match c {
            b'\\' => i = escape_sequence(body, i + 1, &mut out)?,
            b'\'' if body.get(i + 1) == Some(&b'\'') => {
                out.push(b'\'');
                i += 2;
            }
            b'\'' => match quote_continue(body, i + 1) {
                Some(q) => i = q + 1,
                None => break,
            },
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    (!out.contains(&0)).then_some(out)
}

/// Decodes the escape after a backslash at `i - 1`; returns the index after it.
fn escape_sequence(b: &[u8], i: usize, out: &mut Vec<u8>) -> Option<usize> {
    let c = *b.get(i)?;
    let simple = match c {
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        _ => None,
    };
    if let Some(s) = simple {
        out.push(s);
        return Some(i + 1);
    }
    match c {
        b'0'..=b'7' => {
            let (v, end) = radix_digits(b, i, 8, 3);
            out.push((v & 0xff) as u8);
            Some(end)
        }
        b'x' if b.get(i + 1).is_some_and(u8::is_ascii_hexdigit) => {
            let (v, end) = radix_digits(b, i + 1, 16, 2);
            out.push((v & 0xff) as u8);
            Some(end)
        }
        b'u' | b'U' => {
            let (ch, end) = escaped_code_point(b, i)?;
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            Some(end)
        }
        _ => {
            out.push(c);
            Some(i + 1)
        }
    }
}

/// Parses up to `max` digits of `radix` at `i`; returns the value and the end index.
fn radix_digits(b: &[u8], i: usize, radix: u32, max: usize) -> (u32, usize) {
    let mut v = 0u32;
    let mut end = i;
    while end < i + max {
        match b.get(end).and_then(|&c| char::from(c).to_digit(radix)) {
            Some(d) => v = v * radix + d,
            None => break,
        }
        end += 1;
    }
    (v, end)
}

/// Exactly `n` hex digits at `i`.
fn hex_exact(b: &[u8], i: usize, n: usize) -> Option<u32> {
    let (v, end) = radix_digits(b, i, 16, n);
    (end == i + n).then_some(v)
}

/// `uXXXX` / `UXXXXXXXX` at `i` (after the backslash), joining UTF-16 surrogate pairs.
fn escaped_code_point(b: &[u8], i: usize) -> Option<(char, usize)> {
    let width = if b.get(i) == Some(&b'u') { 4 } else { 8 };
    let cp = hex_exact(b, i + 1, width)?;
    let end = i + 1 + width;
    if !(0xd800..0xdc00).contains(&cp) {
        return char::from_u32(cp).map(|c| (c, end));
    }
    if b.get(end) != Some(&b'\\') {
        return None;
    }
    let (low, low_end) = match b.get(end + 1) {
        Some(b'u') => (hex_exact(b, end + 2, 4)?, end + 6),
        Some(b'U') => (hex_exact(b, end + 2, 8)?, end + 10),
        _ => return None,
    };
    combine_surrogates(cp, low).map(|c| (c, low_end))
}

fn combine_surrogates(high: u32, low: u32) -> Option<char> {
    if !(0xdc00..0xe000).contains(&low) {
        return None;
    }
    char::from_u32(0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00))
}

/// Value of a `U&'...'` / `U&"..."` token (`quote` says which), honouring `UESCAPE`.
fn unicode_value(text: &str, quote: u8) -> Option<String> {
    let (body, body_end) = undouble(text.get(3..)?, quote);
    let tail = text.get(3 + body_end..).unwrap_or("").as_bytes();
    let escape = if tail.iter().all(|&c| is_space(c)) {
        b'\\'
    } else {
        match tail {
            [.., b'\'', c, b'\'']
                if c.is_ascii()
                    && !(c.is_ascii_hexdigit() || b"+'\" \t\n\r\x0b\x0c".contains(c)) =>
            {
                *c
            }
            _ => return None,
        }
    };
    decode_unicode_escapes(&body, escape)
}

/// Applies `U&` escapes (`\XXXX`, `\+XXXXXX`, `\\`) with escape character `esc`.
fn decode_unicode_escapes(s: &str, esc: u8) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut from = 0;
    while let Some(p) = b
        .get(from..)
        .and_then(|r| r.iter().position(|&c| c == esc))
        .map(|p| from + p)
    {
        out.push_str(s.get(from..p)?);
        let (ch, end) = unicode_escape(b, p + 1, esc)?;
        out.push(ch);
        from = end;
    }
    out.push_str(s.get(from..)?);
    Some(out)
}

/// One `U&` escape after the escape character at `i - 1`.
fn unicode_escape(b: &[u8], i: usize, esc: u8) -> Option<(char, usize)> {
    let (cp, end) = match b.get(i) {
        Some(&c) if c == esc => return Some((char::from(esc), i + 1)),
        Some(b'+') => (hex_exact(b, i + 1, 6)?, i + 7),
        _ => (hex_exact(b, i, 4)?, i + 4),
    };
    if !(0xd800..0xdc00).contains(&cp) {
        return char::from_u32(cp).map(|c| (c, end));
    }
    if b.get(end) != Some(&esc) {
        return None;
    }
    let (low, low_end) = match b.get(end + 1) {
        Some(b'+') => (hex_exact(b, end + 2, 6)?, end + 8),
        _ => (hex_exact(b, end + 1, 4)?, end + 5),
    };
    combine_surrogates(cp, low).map(|c| (c, low_end))
}

#[cfg(test)]
mod tests;
