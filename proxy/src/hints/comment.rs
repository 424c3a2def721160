//! One comment: which hint form it is (if any) and what it sets.
//!
//! - `causeway:` form: the body starts with `causeway` and a colon (any case, spaces
//!   allowed around the colon), followed by `key=value` items.
//! - sqlcommenter form: the whole body is a list of `key='value'` items (URL-encoded values)
//!   and at least one key starts with `causeway_`; the rest of the key is the hint key.
//!   Keys without the prefix belong to other tools and are ignored.
//! - pgpool-II form: the body is exactly `NO LOAD BALANCE` (any case, surrounding
//!   whitespace allowed), meaning `route=primary`.
//!
//! Any other comment is not a hint. A body that starts with `causeway_` but is not a
//! well-formed list counts one error, since it was clearly meant as a hint.

use crate::config::RouteTarget;
use crate::sql::lexer::is_space;

use super::items::{url_decode, Items};
use super::value::apply;
use super::Hints;

/// The pgpool-II hint that keeps a statement on the primary.
const NO_LOAD_BALANCE: &str = "no load balance";

/// Prefix of sqlcommenter keys that are Causeway hints.
const SQLCOMMENTER_PREFIX: &str = "causeway_";

/// Reads the comment token `text` (delimiters included) into `hints`.
pub(super) fn read(text: &str, block: bool, hints: &mut Hints) {
    let body = trim(strip_delimiters(text, block));
    if body.eq_ignore_ascii_case(NO_LOAD_BALANCE) {
        hints.route = Some(RouteTarget::Primary);
    } else if let Some(list) = causeway_prefix(body) {
        read_native(list, hints);
    } else if contains_ignore_case(body, SQLCOMMENTER_PREFIX) {
        read_sqlcommenter(body, hints);
    }
}

/// The comment's body: without `/*` and `*/`, or without `--`.
fn strip_delimiters(text: &str, block: bool) -> &str {
    if block {
        let body = text.get(2..).unwrap_or("");
        body.strip_suffix("*/").unwrap_or(body)
    } else {
        text.get(2..).unwrap_or("")
    }
}

fn trim(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_ascii() && is_space(c as u8))
}

/// After `causeway:` (any case; spaces allowed before the colon), if the body starts so.
fn causeway_prefix(body: &str) -> Option<&str> {
    let head = body.get(..8)?;
    if !head.eq_ignore_ascii_case("causeway") {
        return None;
    }
    trim(body.get(8..)?).strip_prefix(':')
}

/// `causeway: key=value, ...`.
fn read_native(list: &str, hints: &mut Hints) {
    for item in Items::new(list) {
        let ok = item.is_ok_and(|item| apply(hints, item.key, &item.value));
        if !ok {
            hints.add_error();
        }
    }
}

/// `causeway_key='value',other='x'`: applied only if the whole body is well-formed.
fn read_sqlcommenter(body: &str, hints: &mut Hints) {
    let Some(items) = Items::new(body).collect::<Result<Vec<_>, _>>().ok() else {
        if starts_with_ignore_case(body, SQLCOMMENTER_PREFIX) {
            hints.add_error();
        }
        return;
    };
    for item in items {
        let Some(key) = strip_prefix_ignore_case(item.key, SQLCOMMENTER_PREFIX) else {
            continue;
        };
        let ok = url_decode(&item.value).is_some_and(|value| apply(hints, key, &value));
        if !ok {
            hints.add_error();
        }
    }
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    strip_prefix_ignore_case(text, prefix).is_some()
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text.get(prefix.len()..))
        .flatten()
}

/// Whether `needle` (ASCII) occurs in `hay`, ignoring ASCII case.
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    hay.as_bytes()
        .windows(needle.len().max(1))
        .any(|w| w.eq_ignore_ascii_case(needle))
}
