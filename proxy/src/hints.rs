//! Query hints and Causeway's own `SET`/`SHOW`/`RESET causeway.*` commands (DESIGN.md §4).
//! Pure functions over SQL text: no I/O, and nothing allocated unless a hint is found.
//!
//! Hints ride in SQL comments anywhere in a statement; the statement reaches PostgreSQL
//! unchanged. Three forms are understood:
//!
//! ```sql
//! /* causeway: consistency=bounded, max_lag=250ms */ SELECT ...;   -- also `-- causeway: ...`
//! SELECT ... /*causeway_route='primary',controller='cart'*/        -- sqlcommenter
//! /*NO LOAD BALANCE*/ SELECT ...;                                   -- pgpool-II: route=primary
//! ```
//!
//! Keys: `route` (`primary` | `replica`), `consistency` (`strong` | `session` | `bounded` |
//! `eventual`), `max_lag` (a duration such as `250ms`), `session` (a session key, see
//! [`valid_session_key`]), `tag` (matched by `[[rules]]`), `after_lsn` (`X/Y`). Keys and
//! keyword values ignore case. In the `causeway:` form items are separated by commas,
//! semicolons and/or spaces, and values may be quoted `'x'` or `"x"`. An unknown key or a
//! malformed value is ignored and counted in [`Hints::errors`]; hints never fail a query.
//! Comments inside string constants, dollar quotes and quoted identifiers are not
//! comments; a comment nested in another comment is commented out, and is not read. When a
//! key is given more than once, in one comment or several, the last valid value wins.
//!
//! [`parse_command`] recognizes `SET [SESSION] causeway.<name> {= | TO} <value>`,
//! `RESET causeway.<name>` and `SHOW causeway.<name>`, which Causeway answers itself.

mod command;
mod comment;
mod items;
mod value;

#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::config::{ConsistencyLevel, RouteTarget};
use crate::sql::lexer::{Lexer, TokenKind};

pub use command::{
    mentions_parameter, parse_command, parse_command_with, CausewayCommand, CausewaySetting,
    CommandError,
};
pub use value::{valid_session_key, valid_tag, MAX_SESSION_KEY_LEN, MAX_TAG_LEN};

/// What a statement's hint comments ask for. `None` means "not hinted".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints {
    /// `route=primary|replica` (also `/*NO LOAD BALANCE*/`): forced destination.
    pub route: Option<RouteTarget>,
    /// `consistency=...`: the read guarantee for this statement.
    pub consistency: Option<ConsistencyLevel>,
    /// `max_lag=250ms`: lag limit for `bounded` reads.
    pub max_lag: Option<Duration>,
    /// `session=<key>`: the session whose floor applies (at most
    /// [`MAX_SESSION_KEY_LEN`] bytes, no control characters).
    pub session: Option<String>,
    /// `tag=<name>`: selects `[[rules]]` with this tag.
    pub tag: Option<String>,
    /// `after_lsn=X/Y`: raise the floor to this WAL position for this statement.
    pub after_lsn: Option<u64>,
    /// Unknown keys and malformed values seen (and ignored); the caller adds them to
    /// `causeway_hint_errors_total`.
    pub errors: u32,
}

impl Hints {
    /// Whether no hint was found and nothing was malformed.
    pub fn is_empty(&self) -> bool {
        *self == Hints::default()
    }

    fn add_error(&mut self) {
        self.errors = self.errors.saturating_add(1);
    }
}

/// Reads the hints in every comment of `sql`, assuming `standard_conforming_strings = on`.
/// Never fails; see the [module documentation](self) for the forms and keys.
pub fn parse(sql: &str) -> Hints {
    parse_with(sql, true)
}

/// [`parse`] for a session with the given `standard_conforming_strings` (which decides
/// whether a backslash can hide a quote, and so where comments are).
pub fn parse_with(sql: &str, standard_conforming_strings: bool) -> Hints {
    let mut hints = Hints::default();
    if !may_contain_comment(sql.as_bytes()) {
        return hints;
    }
    let lexer = Lexer::with_standard_conforming_strings(sql, standard_conforming_strings)
        .with_comments(true);
    for token in lexer {
        if let TokenKind::Comment { block } = token.kind {
            comment::read(token.text, block, &mut hints);
        }
    }
    hints
}

/// Whether `sql` contains `/*` or `--` anywhere (in a comment or not): a quick test (a
/// vectorised search for `/` and `-`) that lets hint-free statements skip the lexer.
fn may_contain_comment(sql: &[u8]) -> bool {
    memchr::memchr2_iter(b'/', b'-', sql).any(|i| pair_at(sql, i..i + 1))
}

/// Whether a `/*` or `--` starts at one of the positions in `range`.
fn pair_at(sql: &[u8], range: std::ops::Range<usize>) -> bool {
    range.into_iter().any(|i| {
        matches!(
            (sql.get(i), sql.get(i + 1)),
            (Some(b'/'), Some(b'*')) | (Some(b'-'), Some(b'-'))
        )
    })
}
