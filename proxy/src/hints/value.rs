//! Hint values: applying one `key=value` pair to [`Hints`] and the bounds on session keys
//! and tags. WAL positions (`X/Y`) are parsed by [`Lsn`].

use crate::config::{parse_duration, ConsistencyLevel, RouteTarget};
use crate::lsn::Lsn;

use super::Hints;

/// Longest session key accepted from a hint or `SET causeway.session`, in bytes.
pub const MAX_SESSION_KEY_LEN: usize = 256;

/// Longest tag accepted from a hint, in bytes.
pub const MAX_TAG_LEN: usize = 256;

/// Whether `key` can name a session: 1 to [`MAX_SESSION_KEY_LEN`] bytes, no control
/// characters, no leading or trailing whitespace.
pub fn valid_session_key(key: &str) -> bool {
    bounded_label(key, MAX_SESSION_KEY_LEN)
}

/// Whether `tag` is a usable tag: 1 to [`MAX_TAG_LEN`] bytes, no control characters, no
/// leading or trailing whitespace.
pub fn valid_tag(tag: &str) -> bool {
    bounded_label(tag, MAX_TAG_LEN)
}

fn bounded_label(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text.trim() == text
        && !text.chars().any(char::is_control)
}

/// A hint key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Route,
    Consistency,
    MaxLag,
    Session,
    Tag,
    AfterLsn,
}

impl Key {
    /// The key spelled `name`, ignoring ASCII case.
    fn parse(name: &str) -> Option<Key> {
        const KEYS: [(&str, Key); 6] = [
            ("route", Key::Route),
            ("consistency", Key::Consistency),
            ("max_lag", Key::MaxLag),
            ("session", Key::Session),
            ("tag", Key::Tag),
            ("after_lsn", Key::AfterLsn),
        ];
        KEYS.iter()
            .find(|(spelling, _)| spelling.eq_ignore_ascii_case(name))
            .map(|&(_, key)| key)
    }
}

/// Applies `key=value` to `hints`; false (and `hints` unchanged) for an unknown key or a
/// malformed value.
pub(super) fn apply(hints: &mut Hints, key: &str, value: &str) -> bool {
    let Some(key) = Key::parse(key) else {
        return false;
    };
    match key {
        Key::Route => set(&mut hints.route, value.parse::<RouteTarget>().ok()),
        Key::Consistency => set(
            &mut hints.consistency,
            value.parse::<ConsistencyLevel>().ok(),
        ),
        Key::MaxLag => set(&mut hints.max_lag, parse_duration(value).ok()),
        Key::Session => set(
            &mut hints.session,
            valid_session_key(value).then(|| value.to_owned()),
        ),
        Key::Tag => set(&mut hints.tag, valid_tag(value).then(|| value.to_owned())),
        Key::AfterLsn => set(
            &mut hints.after_lsn,
            value.parse::<Lsn>().ok().map(Lsn::as_u64),
        ),
    }
}

/// Stores `value` if there is one; later hints overwrite earlier ones.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    match value {
        Some(value) => {
            *slot = Some(value);
            true
        }
        None => false,
    }
}
