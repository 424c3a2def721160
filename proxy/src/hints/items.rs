//! The `key=value` lists inside hint comments: a small scanner shared by the
//! `causeway:` form and the sqlcommenter form, plus sqlcommenter's URL decoding.
//!
//! Items are separated by commas, semicolons and/or whitespace (nested `/* */` comments
//! count as whitespace). A key is a run of characters other than those, `=` and quotes;
//! spaces may surround the `=`. A value is either bare (up to the next separator)
//! or quoted with `'` or `"`; inside quotes a doubled quote or a backslash escapes the next
//! character. A malformed item is reported and scanning resumes at the next separator.

use std::borrow::Cow;

use crate::sql::lexer::is_space;

/// One `key=value` item; `value` is unquoted and unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Item<'a> {
    pub(super) key: &'a str,
    pub(super) value: Cow<'a, str>,
}

/// Why an item could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ItemError {
    /// Text that is not `key=value` (a bare word, a stray `=` or quote).
    NotAnItem,
    /// `key=` with nothing after it, or an empty quoted value.
    EmptyValue,
    /// A quoted value without its closing quote.
    Unterminated,
}

/// Iterator over the items of a hint body.
#[derive(Debug, Clone)]
pub(super) struct Items<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Items<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Items { src, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    /// Skips whitespace, commas and semicolons (if `commas`) and nested comments.
    fn skip_separators(&mut self, commas: bool) {
        let b = self.bytes();
        while let Some(&c) = b.get(self.pos) {
            if is_space(c) || (commas && is_list_separator(c)) {
                self.pos += 1;
            } else if c == b'/' && b.get(self.pos + 1) == Some(&b'*') {
                self.pos = comment_end(b, self.pos);
            } else {
                return;
            }
        }
    }

    /// Moves past the rest of a malformed item, to the next separator.
    fn recover(&mut self) {
        let b = self.bytes();
        while let Some(&c) = b.get(self.pos) {
            if is_space(c) || is_list_separator(c) {
                return;
            }
            self.pos += 1;
        }
    }

    /// Text up to (not including) the first byte for which `stop` is true.
    fn run(&mut self, stop: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        let rest = self.bytes().get(start..).unwrap_or(&[]);
        let len = rest.iter().position(|&c| stop(c)).unwrap_or(rest.len());
        self.pos = start + len;
        // Stop bytes are ASCII, so both ends are character boundaries.
        self.src.get(start..self.pos).unwrap_or("")
    }

    fn item(&mut self) -> Result<Item<'a>, ItemError> {
        let key =
            self.run(|c| is_space(c) || is_list_separator(c) || matches!(c, b'=' | b'\'' | b'"'));
        if key.is_empty() {
            return Err(ItemError::NotAnItem);
        }
        let after_key = self.pos;
        self.skip_separators(false);
        if self.peek() != Some(b'=') {
            // A bare word: the next word starts a new item.
            self.pos = after_key;
            return Err(ItemError::NotAnItem);
        }
        self.pos += 1;
        self.skip_separators(false);
        let value = match self.peek() {
            Some(q @ (b'\'' | b'"')) => self.quoted(q)?,
            _ => Cow::Borrowed(self.run(|c| is_space(c) || is_list_separator(c))),
        };
        if value.is_empty() {
            return Err(ItemError::EmptyValue);
        }
        Ok(Item { key, value })
    }

    /// A quote that never closes: the rest of the body is inside it.
    fn unterminated(&mut self) -> ItemError {
        self.pos = self.src.len();
        ItemError::Unterminated
    }

    /// A value quoted with `q`, starting at the opening quote.
    fn quoted(&mut self, q: u8) -> Result<Cow<'a, str>, ItemError> {
        let body_start = self.pos + 1;
        let b = self.bytes();
        let mut i = body_start;
        let mut out: Option<Vec<u8>> = None;
        let mut from = body_start;
        loop {
            let (Some(&c), next) = (b.get(i), b.get(i + 1).copied()) else {
                return Err(self.unterminated());
            };
            let escaped = c == b'\\' || (c == q && next == Some(q));
            if escaped {
                let Some(next) = next else {
                    return Err(self.unterminated());
                };
                let buf = out.get_or_insert_with(Vec::new);
                buf.extend_from_slice(b.get(from..i).unwrap_or(&[]));
                buf.push(next);
                i += 2;
                from = i;
            } else if c == q {
                self.pos = i + 1;
                return Ok(finish(self.src, out, from, i));
            } else {
                i += 1;
            }
        }
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<Item<'a>, ItemError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.skip_separators(true);
        self.peek()?;
        let item = self.item();
        if item.is_err() {
            self.recover();
        }
        Some(item)
    }
}

/// `,` or `;` between items.
fn is_list_separator(c: u8) -> bool {
    matches!(c, b',' | b';')
}

/// The unescaped value: borrowed when nothing was escaped. Escapes only ever drop ASCII
/// bytes in front of a character, so the result is valid UTF-8.
fn finish<'a>(src: &'a str, out: Option<Vec<u8>>, from: usize, to: usize) -> Cow<'a, str> {
    let tail = src.get(from..to).unwrap_or("");
    match out {
        None => Cow::Borrowed(tail),
        Some(mut buf) => {
            buf.extend_from_slice(tail.as_bytes());
            Cow::Owned(String::from_utf8_lossy(&buf).into_owned())
        }
    }
}

/// End of the nested `/* */` comment starting at `i` (or the end of the input).
fn comment_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        match (b.get(i), b.get(i + 1)) {
            (Some(b'/'), Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (Some(b'*'), Some(b'/')) => {
                depth = depth.saturating_sub(1);
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    b.len()
}

/// Decodes `%XX` escapes (sqlcommenter URL-encodes values); `None` for a bad escape or a
/// result that is not UTF-8. `+` stays `+`.
pub(super) fn url_decode(text: &str) -> Option<Cow<'_, str>> {
    if !text.contains('%') {
        return Some(Cow::Borrowed(text));
    }
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            out.push(hex_byte(b.get(i + 1..i + 3)?)?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex_byte(digits: &[u8]) -> Option<u8> {
    let hi = char::from(*digits.first()?).to_digit(16)?;
    let lo = char::from(*digits.get(1)?).to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}
