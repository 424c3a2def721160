//! Table names in `tables = [...]` rules and how they match a statement's tables.

use std::borrow::Cow;

use crate::sql::lexer::{Lexer, TokenKind};

/// One part of a name in a rule: unquoted parts are lower-cased, quoted parts kept.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    text: String,
    quoted: bool,
}

impl Part {
    /// Whether a statement's name part matches. Two unquoted parts compare ignoring ASCII
    /// case (the statement's may or may not be folded already); if either was quoted the
    /// comparison is exact, against the rule's folded form.
    fn matches(&self, name: &NamePart<'_>) -> bool {
        if self.quoted || name.quoted {
            self.text == name.text
        } else {
            self.text.eq_ignore_ascii_case(&name.text)
        }
    }
}

/// One part of a statement's table name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamePart<'a> {
    text: Cow<'a, str>,
    quoted: bool,
}

impl<'a> NamePart<'a> {
    fn plain(text: &'a str) -> Self {
        NamePart {
            text: Cow::Borrowed(text),
            quoted: false,
        }
    }
}

/// A table named in a rule: `accounts` matches a table `accounts` in any schema;
/// `public.accounts` only that schema's. Written as SQL names: unquoted parts ignore ASCII
/// case, `"Quoted"` parts are exact; a leading `catalog.` is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    schema: Option<Part>,
    name: Part,
}

impl TablePattern {
    /// Parses `name`, `schema.name` or `catalog.schema.name`; `None` if `text` is not such
    /// a name (config validation can use this to reject typos).
    pub fn parse(text: &str) -> Option<TablePattern> {
        let mut parts = Vec::new();
        let mut lexer = Lexer::new(text);
        loop {
            let token = lexer.next()?;
            let quoted = match token.kind {
                TokenKind::Word => false,
                TokenKind::QuotedIdent { .. } => true,
                _ => return None,
            };
            let ident = token.ident()?;
            if ident.is_empty() {
                return None;
            }
            parts.push(Part {
                text: ident.into_owned(),
                quoted,
            });
            match lexer.next() {
                None => break,
                Some(t) if t.kind == TokenKind::Dot => {}
                Some(_) => return None,
            }
        }
        if parts.len() > 3 {
            return None;
        }
        let name = parts.pop()?;
        Some(TablePattern {
            schema: parts.pop(),
            name,
        })
    }

    /// [`TablePattern::parse`], or else the trimmed text as one unquoted name.
    pub fn lenient(text: &str) -> TablePattern {
        TablePattern::parse(text).unwrap_or_else(|| TablePattern {
            schema: None,
            name: Part {
                text: text.trim().to_owned(),
                quoted: false,
            },
        })
    }

    /// Whether the statement's table `table` (`name` or `schema.name`, a leading
    /// `catalog.` ignored, parts possibly `"quoted"`) may be this one. The names must
    /// match; a qualified pattern also needs the same schema, except that an unqualified
    /// `table` matches it too: the schema it resolves to depends on the `search_path`,
    /// which is not known here, and a rule applied once too often only costs a primary
    /// read, while a missed `strong` rule breaks a guarantee.
    pub fn matches(&self, table: &str) -> bool {
        let (schema, name) = split_qualified(table);
        if !self.name.matches(&name) {
            return false;
        }
        match (&self.schema, schema) {
            (Some(want), Some(schema)) => want.matches(&schema),
            (None, _) | (Some(_), None) => true,
        }
    }
}

/// Splits `a.b.c` into the last two parts, honouring (and removing) double quotes.
fn split_qualified(table: &str) -> (Option<NamePart<'_>>, NamePart<'_>) {
    if !table.contains('"') {
        let mut parts = table.rsplitn(3, '.');
        let name = NamePart::plain(parts.next().unwrap_or(""));
        return (parts.next().map(NamePart::plain), name);
    }
    let mut parts = quoted_parts(table);
    let name = parts.pop().unwrap_or(NamePart::plain(""));
    (parts.pop(), name)
}

/// The `.`-separated parts of a name with `"quoted"` parts unquoted (`""` is `"`).
fn quoted_parts(table: &str) -> Vec<NamePart<'_>> {
    let mut parts = Vec::new();
    let mut rest = table;
    loop {
        let (part, after) = match rest.strip_prefix('"') {
            Some(body) => {
                let (text, after) = unquote(body);
                (NamePart { text, quoted: true }, after)
            }
            None => {
                let end = rest.find('.').unwrap_or(rest.len());
                let (text, after) = rest.split_at(end);
                (NamePart::plain(text), after)
            }
        };
        parts.push(part);
        match after.strip_prefix('.') {
            Some(next) => rest = next,
            None => return parts,
        }
    }
}

/// A quoted part's value and the text after its closing quote.
fn unquote(body: &str) -> (Cow<'_, str>, &str) {
    let mut value = String::new();
    let mut rest = body;
    loop {
        match rest.find('"') {
            None => {
                value.push_str(rest);
                return (Cow::Owned(value), "");
            }
            Some(q) => {
                value.push_str(rest.get(..q).unwrap_or(""));
                let after = rest.get(q + 1..).unwrap_or("");
                match after.strip_prefix('"') {
                    Some(more) => {
                        value.push('"');
                        rest = more;
                    }
                    None => return (Cow::Owned(value), after),
                }
            }
        }
    }
}
