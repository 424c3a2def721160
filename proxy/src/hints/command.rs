//! `SET`, `RESET` and `SHOW` of `causeway.*` parameters, which Causeway answers itself and
//! never forwards.
//!
//! Accepted forms (keywords and parameter names ignore case, names may be quoted, as in
//! PostgreSQL):
//!
//! ```sql
//! SET [SESSION] causeway.consistency { = | TO } { 'eventual' | eventual | DEFAULT };
//! RESET causeway.consistency;
//! SHOW causeway.session_lsn;
//! ```
//!
//! `SET causeway.x TO DEFAULT` is `RESET causeway.x`. `RESET ALL` and `SHOW ALL` are not
//! Causeway's and are forwarded. A command must be the only statement of its query (a
//! trailing `;`, whitespace and comments are fine).

#[cfg(test)]
mod tests;

use crate::config::{parse_duration, ConsistencyLevel, RouteTarget};
use crate::protocol::SqlState;
use crate::sql::lexer::{Lexer, Token, TokenKind};
use crate::sql::split_statements_with;

use super::value::valid_session_key;

/// A `causeway.*` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CausewaySetting {
    /// `causeway.consistency`: the connection's read guarantee (`strong`, `session`,
    /// `bounded`, `eventual`); hints and rules may still override it per statement.
    Consistency,
    /// `causeway.session`: the session key whose floor this connection shares.
    Session,
    /// `causeway.session_lsn`: the session's floor as `X/Y`, a causal token to hand to
    /// another service. Read-only (`SHOW` only).
    SessionLsn,
    /// `causeway.max_lag`: lag limit for `bounded` reads (a duration such as `250ms`).
    MaxLag,
    /// `causeway.route`: forced destination (`primary` or `replica`) for this connection.
    Route,
}

impl CausewaySetting {
    /// Every parameter, in documentation order.
    pub const ALL: &'static [CausewaySetting] = &[
        CausewaySetting::Consistency,
        CausewaySetting::Session,
        CausewaySetting::SessionLsn,
        CausewaySetting::MaxLag,
        CausewaySetting::Route,
    ];

    /// The full parameter name, such as `causeway.consistency` (also the column name of a
    /// `SHOW` result).
    pub fn name(self) -> &'static str {
        match self {
            CausewaySetting::Consistency => "causeway.consistency",
            CausewaySetting::Session => "causeway.session",
            CausewaySetting::SessionLsn => "causeway.session_lsn",
            CausewaySetting::MaxLag => "causeway.max_lag",
            CausewaySetting::Route => "causeway.route",
        }
    }

    /// The parameter with full name `name` (`causeway.` included), ignoring ASCII case, as
    /// PostgreSQL does for parameter names; for example from startup
    /// `options=-c causeway.session=...`.
    pub fn from_name(name: &str) -> Option<CausewaySetting> {
        Self::ALL
            .iter()
            .copied()
            .find(|setting| setting.name().eq_ignore_ascii_case(name))
    }

    /// Whether `SET` and `RESET` may change it (all but `causeway.session_lsn`).
    pub fn settable(self) -> bool {
        self != CausewaySetting::SessionLsn
    }

    /// Checks `value` for this parameter and returns it in canonical form: keywords in
    /// lower case, durations and session keys as given.
    ///
    /// # Errors
    /// [`CommandError::ReadOnly`] for `causeway.session_lsn`; [`CommandError::InvalidValue`]
    /// when the value is not one the parameter accepts.
    pub fn check_value(self, value: &str) -> Result<String, CommandError> {
        let invalid = |reason: String| CommandError::InvalidValue {
            name: self.name(),
            value: value.to_owned(),
            reason,
        };
        match self {
            CausewaySetting::Consistency => value
                .parse::<ConsistencyLevel>()
                .map(|level| level.as_str().to_owned())
                .map_err(|_| invalid("expected strong, session, bounded or eventual".into())),
            CausewaySetting::Route => value
                .parse::<RouteTarget>()
                .map(|route| route.as_str().to_owned())
                .map_err(|_| invalid("expected primary or replica".into())),
            CausewaySetting::MaxLag => parse_duration(value)
                .map(|_| value.trim().to_owned())
                .map_err(|error| invalid(error.to_string())),
            CausewaySetting::Session if valid_session_key(value) => Ok(value.to_owned()),
            CausewaySetting::Session => Err(invalid(format!(
                "a session key is 1 to {} bytes without control characters or surrounding \
                 spaces",
                super::MAX_SESSION_KEY_LEN
            ))),
            CausewaySetting::SessionLsn => Err(CommandError::ReadOnly { name: self.name() }),
        }
    }
}

/// A `causeway.*` command that Causeway answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CausewayCommand {
    /// `SET [SESSION] causeway.<name> {= | TO} <value>`: reply `CommandComplete "SET"`.
    Set {
        /// The parameter; never [`CausewaySetting::SessionLsn`].
        name: CausewaySetting,
        /// The value, unquoted, unescaped and checked by [`CausewaySetting::check_value`].
        value: String,
    },
    /// `RESET causeway.<name>` or `SET causeway.<name> TO DEFAULT`: back to the value from
    /// the startup packet or config; reply `CommandComplete "RESET"` (or `"SET"` for the
    /// `SET ... DEFAULT` form, as PostgreSQL does).
    Reset {
        /// The parameter; never [`CausewaySetting::SessionLsn`].
        name: CausewaySetting,
    },
    /// `SHOW causeway.<name>`: reply with a one-row, one-column result named
    /// [`CausewaySetting::name`] and `CommandComplete "SHOW"`.
    Show {
        /// The parameter.
        name: CausewaySetting,
    },
}

/// A `causeway.*` command that Causeway must reject; reply with an ErrorResponse carrying
/// [`CommandError::sqlstate`] and this message, and keep the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// `SET LOCAL causeway.*` (SQLSTATE `0A000`).
    #[error(
        "SET LOCAL {name} is not supported; use SET {name} (lasts until RESET or the end of \
         the connection) or a /* causeway: ... */ hint on the statements that need it"
    )]
    Local {
        /// The parameter's full name.
        name: &'static str,
    },
    /// A `causeway.*` command inside a multi-statement query (SQLSTATE `0A000`).
    #[error(
        "SET, RESET and SHOW of causeway.* parameters must be sent as their own statement; \
         send \"{statement}\" as a separate query"
    )]
    NotAlone {
        /// The offending statement's text.
        statement: String,
    },
    /// A `causeway.` parameter that does not exist (SQLSTATE `42704`).
    #[error(
        "unrecognized configuration parameter \"{name}\"; Causeway's parameters are \
         causeway.consistency, causeway.session, causeway.max_lag, causeway.route and \
         causeway.session_lsn (SHOW only)"
    )]
    Unrecognized {
        /// The name as written (lower-cased).
        name: String,
    },
    /// `SET` or `RESET` of `causeway.session_lsn` (SQLSTATE `55P02`).
    #[error(
        "parameter \"{name}\" cannot be changed; to make one statement see a position, add \
         the hint /* causeway: after_lsn=X/Y */ to it"
    )]
    ReadOnly {
        /// The parameter's full name.
        name: &'static str,
    },
    /// A value the parameter does not accept (SQLSTATE `22023`).
    #[error("invalid value for parameter \"{name}\": \"{value}\"; {reason}")]
    InvalidValue {
        /// The parameter's full name.
        name: &'static str,
        /// The value as given.
        value: String,
        /// What is accepted.
        reason: String,
    },
    /// `SET`/`RESET causeway.session` inside a transaction that runs on a replica, chosen
    /// for the floor the transaction began with (SQLSTATE `0A000`).
    #[error(
        "{name} cannot change inside a transaction that runs on a replica; set it before \
         BEGIN (in autocommit mode), or name the session with a /* causeway: session=... */ \
         hint on BEGIN"
    )]
    InReplicaTransaction {
        /// The parameter's full name.
        name: &'static str,
    },
    /// Not a well-formed command (SQLSTATE `42601`).
    #[error("syntax error in {command} {name}: {detail}")]
    Syntax {
        /// `SET`, `RESET` or `SHOW`.
        command: &'static str,
        /// The parameter's full name.
        name: &'static str,
        /// What is wrong and what to write instead.
        detail: &'static str,
    },
}

impl CommandError {
    /// The SQLSTATE for the ErrorResponse.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            CommandError::Local { .. }
            | CommandError::NotAlone { .. }
            | CommandError::InReplicaTransaction { .. } => SqlState::FEATURE_NOT_SUPPORTED,
            CommandError::Unrecognized { .. } => SqlState::UNDEFINED_OBJECT,
            CommandError::ReadOnly { .. } => SqlState::CANT_CHANGE_RUNTIME_PARAM,
            CommandError::InvalidValue { .. } => SqlState::INVALID_PARAMETER_VALUE,
            CommandError::Syntax { .. } => SqlState::SYNTAX_ERROR,
        }
    }
}

/// [`parse_command_with`] for `standard_conforming_strings = on`.
pub fn parse_command(sql: &str) -> Option<Result<CausewayCommand, CommandError>> {
    parse_command_with(sql, true)
}

/// Recognizes a `SET`/`RESET`/`SHOW` of a `causeway.*` parameter in a simple-Query string
/// (or a Parse message's query).
///
/// `None`: not Causeway's, forward it. `Some(Ok(_))`: answer it. `Some(Err(_))`: it is
/// Causeway's but invalid (or shares its query with other statements); reply with the
/// error. Queries that never mention `causeway.` return `None` after one quick scan.
pub fn parse_command_with(
    sql: &str,
    standard_conforming_strings: bool,
) -> Option<Result<CausewayCommand, CommandError>> {
    if !mentions_parameter(sql.as_bytes()) {
        return None;
    }
    let statements = split_statements_with(sql, standard_conforming_strings);
    if let [single] = statements.as_slice() {
        return parse_statement(single.text, standard_conforming_strings);
    }
    statements.iter().find_map(|statement| {
        parse_statement(statement.text, standard_conforming_strings).map(|_| {
            Err(CommandError::NotAlone {
                statement: statement.text.to_owned(),
            })
        })
    })
}

/// Whether some `.` in `sql` follows `causeway` (any case; spaces or quotes between) or a
/// comment (which could hide it): a quick test every `causeway.*` command passes and hints
/// (`causeway:`, `causeway_`) do not.
///
/// It works on bytes, so a query can be passed over before it is checked to be UTF-8.
pub fn mentions_parameter(sql: &[u8]) -> bool {
    memchr::memchr_iter(b'.', sql).any(|dot| names_parameter_prefix(sql.get(..dot).unwrap_or(&[])))
}

/// Whether `before` ends with `causeway` or `*/`, ignoring trailing spaces and quotes.
fn names_parameter_prefix(before: &[u8]) -> bool {
    const WORD: &[u8] = b"causeway";
    let end = before
        .iter()
        .rposition(|&c| !(c == b'"' || crate::sql::lexer::is_space(c)))
        .map_or(0, |p| p + 1);
    let before = before.get(..end).unwrap_or(&[]);
    before.ends_with(b"*/")
        || before
            .len()
            .checked_sub(WORD.len())
            .and_then(|start| before.get(start..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(WORD))
}

/// Tokens of one statement (comments skipped), with one token of lookahead.
struct Cursor<'a> {
    lex: std::iter::Peekable<Lexer<'a>>,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str, standard_conforming_strings: bool) -> Self {
        Cursor {
            lex: Lexer::with_standard_conforming_strings(text, standard_conforming_strings)
                .peekable(),
        }
    }

    /// The next token; a `;` ends the statement.
    fn next(&mut self) -> Option<Token<'a>> {
        self.lex.next_if(|t| t.kind != TokenKind::Semicolon)
    }

    fn peek(&mut self) -> Option<Token<'a>> {
        self.lex
            .peek()
            .copied()
            .filter(|t| t.kind != TokenKind::Semicolon)
    }

    fn eat(&mut self, keyword: &str) -> bool {
        self.lex.next_if(|t| t.is_keyword(keyword)).is_some()
    }

    fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// A parameter name: identifiers joined by `.`, lower-cased (parameter names ignore
    /// case even when quoted).
    fn name(&mut self) -> Option<String> {
        let mut name = self.next()?.ident()?.into_owned();
        while self.lex.next_if(|t| t.kind == TokenKind::Dot).is_some() {
            name.push('.');
            name.push_str(&self.next()?.ident()?);
        }
        name.make_ascii_lowercase();
        Some(name)
    }
}

/// Which command a statement starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Set,
    Reset,
    Show,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Set => "SET",
            Verb::Reset => "RESET",
            Verb::Show => "SHOW",
        }
    }
}

/// One statement: `None` unless it is a `SET`/`RESET`/`SHOW` of a `causeway.` name.
fn parse_statement(text: &str, scs: bool) -> Option<Result<CausewayCommand, CommandError>> {
    let mut c = Cursor::new(text, scs);
    let first = c.next()?;
    let verb = [Verb::Set, Verb::Reset, Verb::Show]
        .into_iter()
        .find(|verb| first.is_keyword(verb.as_str()))?;
    let local = verb == Verb::Set && c.eat("local");
    if verb == Verb::Set && !local {
        c.eat("session");
    }
    let name = c.name()?;
    if !name.starts_with("causeway.") {
        return None;
    }
    Some(parse_rest(&mut c, verb, local, name))
}

/// After `SET [LOCAL] causeway.x`, `RESET causeway.x` or `SHOW causeway.x`.
fn parse_rest(
    c: &mut Cursor<'_>,
    verb: Verb,
    local: bool,
    name: String,
) -> Result<CausewayCommand, CommandError> {
    let Some(setting) = CausewaySetting::from_name(&name) else {
        return Err(CommandError::Unrecognized { name });
    };
    if local {
        return Err(CommandError::Local {
            name: setting.name(),
        });
    }
    if verb != Verb::Show && !setting.settable() {
        return Err(CommandError::ReadOnly {
            name: setting.name(),
        });
    }
    match verb {
        Verb::Set => parse_set(c, setting),
        Verb::Reset => {
            expect_end(c, verb, setting).map(|()| CausewayCommand::Reset { name: setting })
        }
        Verb::Show => {
            expect_end(c, verb, setting).map(|()| CausewayCommand::Show { name: setting })
        }
    }
}

/// `{= | TO} {value | DEFAULT}` after `SET causeway.x`.
fn parse_set(
    c: &mut Cursor<'_>,
    setting: CausewaySetting,
) -> Result<CausewayCommand, CommandError> {
    let syntax = |detail| CommandError::Syntax {
        command: Verb::Set.as_str(),
        name: setting.name(),
        detail,
    };
    let assigns = c
        .next()
        .is_some_and(|t| t.kind == TokenKind::Eq || t.is_keyword("to"));
    if !assigns {
        return Err(syntax("expected = or TO, then a value"));
    }
    let first = c
        .next()
        .ok_or_else(|| syntax("expected a value after = or TO"))?;
    if first.is_keyword("default") {
        return expect_end(c, Verb::Set, setting)
            .map(|()| CausewayCommand::Reset { name: setting });
    }
    let value = value_of(first, c, setting).ok_or_else(|| syntax("expected a value"))??;
    match c.peek() {
        None => {}
        Some(t) if t.kind == TokenKind::Comma => {
            return Err(syntax("it takes only one value"));
        }
        Some(_) => return Err(syntax("unexpected text after the value; quote the value")),
    }
    let value = setting.check_value(&value)?;
    Ok(CausewayCommand::Set {
        name: setting,
        value,
    })
}

/// The value starting with token `t`, as PostgreSQL reads a `SET` value: string constants
/// unescaped, unquoted words lower-cased, quoted identifiers as written, signed numbers.
/// `None` for a token that cannot be a value; an error for a string PostgreSQL rejects.
fn value_of(
    t: Token<'_>,
    c: &mut Cursor<'_>,
    setting: CausewaySetting,
) -> Option<Result<String, CommandError>> {
    let value = match t.kind {
        TokenKind::String(_) | TokenKind::DollarString => {
            return Some(t.string_value().map(|v| v.into_owned()).ok_or_else(|| {
                CommandError::InvalidValue {
                    name: setting.name(),
                    value: t.text.to_owned(),
                    reason: "it is not a valid string constant".to_owned(),
                }
            }));
        }
        TokenKind::Word | TokenKind::QuotedIdent { .. } => t.ident()?.into_owned(),
        TokenKind::Number => t.text.to_owned(),
        TokenKind::Operator if matches!(t.text, "-" | "+") => {
            let number = c.next().filter(|n| n.kind == TokenKind::Number)?;
            format!("{}{}", t.text, number.text)
        }
        _ => return None,
    };
    Some(Ok(value))
}

/// Nothing may follow the parameter name (or `DEFAULT`).
fn expect_end(
    c: &mut Cursor<'_>,
    verb: Verb,
    setting: CausewaySetting,
) -> Result<(), CommandError> {
    if c.at_end() {
        Ok(())
    } else {
        Err(CommandError::Syntax {
            command: verb.as_str(),
            name: setting.name(),
            detail: "unexpected text after the parameter name",
        })
    }
}
