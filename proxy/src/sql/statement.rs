//! Statement splitting and classification for the transaction pooler: which statements
//! change session state (to record, replay or clean up), which bound transactions, and which
//! have effects that cannot be replayed and so pin a client to one server connection.
//!
//! Only the first few keywords of a statement are parsed (from a copy of the lexer, and only
//! when the first keyword is one that matters); a single pass over all of its tokens finds
//! its end and looks for pinning calls (session advisory locks, `set_config(..., false)`)
//! and `SELECT ... INTO TEMP`. Nothing allocates except the names returned.

use std::ops::Range;

use crate::sql::lexer::{is_space, Lexer, StringKind, Token, TokenKind};

/// One top-level statement of a simple-Query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    /// The statement's source, without its `;` and trimmed of whitespace (comments, and so
    /// hints, are kept). A trailing `--` comment runs to the end of the text.
    pub text: &'a str,
    /// What the statement does to session state.
    pub info: StatementInfo,
}

/// Classification of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInfo {
    /// What kind of statement it is, as far as session state is concerned.
    pub kind: StatementKind,
    /// Why the client must stay on its current server connection, if it must.
    pub pin: Option<PinReason>,
}

impl StatementInfo {
    fn other() -> Self {
        Self {
            kind: StatementKind::Other,
            pin: None,
        }
    }
}

/// Statement kinds the pooler cares about; everything else is [`StatementKind::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// `BEGIN [WORK | TRANSACTION] [modes]` or `START TRANSACTION [modes]`; `read_only` when
    /// the last `READ ONLY` / `READ WRITE` mode is `READ ONLY`.
    Begin {
        /// The transaction was started `READ ONLY`.
        read_only: bool,
    },
    /// `COMMIT` / `END [WORK | TRANSACTION] [AND [NO] CHAIN]`.
    Commit {
        /// `AND CHAIN`: a new transaction starts at once.
        chain: bool,
    },
    /// `ROLLBACK` / `ABORT [WORK | TRANSACTION] [AND [NO] CHAIN]`.
    Rollback {
        /// `AND CHAIN`: a new transaction starts at once.
        chain: bool,
    },
    /// `SAVEPOINT name`.
    Savepoint,
    /// `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name`.
    RollbackToSavepoint,
    /// `RELEASE [SAVEPOINT] name`.
    ReleaseSavepoint,
    /// Two-phase commit: `PREPARE TRANSACTION 'id'`, `COMMIT PREPARED 'id'`,
    /// `ROLLBACK PREPARED 'id'`.
    PrepareTransaction,
    /// `SET [SESSION | LOCAL] name {TO | =} ...` and the special forms (`SET TIME ZONE` is
    /// `timezone`, `NAMES` is `client_encoding`, `SCHEMA` is `search_path`, `ROLE` is `role`,
    /// `SESSION AUTHORIZATION` is `session_authorization`, `XML OPTION` is `xmloption`,
    /// `SESSION CHARACTERISTICS AS TRANSACTION` is `default_transaction_characteristics`).
    Set {
        /// Parameter name, ASCII-lowercased even when quoted; dotted names kept whole.
        name: String,
        /// `SET LOCAL`: lasts until the end of the transaction only.
        local: bool,
    },
    /// `SET TRANSACTION ...` (transaction-local).
    SetTransaction,
    /// `SET CONSTRAINTS ...` (transaction-local).
    SetConstraints,
    /// `RESET name`, with the same names as [`StatementKind::Set`]
    /// (`RESET TRANSACTION ISOLATION LEVEL` is `transaction_isolation`).
    Reset {
        /// Parameter name, normalized as for `Set`.
        name: String,
    },
    /// `RESET ALL`.
    ResetAll,
    /// `PREPARE name [(types)] AS statement` (SQL-level prepared statement).
    Prepare {
        /// Prepared statement name (identifier rules: lowercased unless quoted).
        name: String,
    },
    /// `EXECUTE name [(args)]`, also inside `EXPLAIN` and `CREATE TABLE ... AS EXECUTE`.
    Execute {
        /// Prepared statement name.
        name: String,
    },
    /// `DEALLOCATE [PREPARE] {name | ALL}`.
    Deallocate {
        /// The statement deallocated; `None` for `ALL`.
        name: Option<String>,
    },
    /// `DISCARD {ALL | PLANS | SEQUENCES | TEMP | TEMPORARY}`.
    Discard {
        /// What is discarded.
        what: Discard,
    },
    /// `LISTEN channel` (also pins).
    Listen {
        /// Channel name (identifier rules).
        channel: String,
    },
    /// `UNLISTEN {channel | *}`.
    Unlisten {
        /// Channel name; `None` for `*`.
        channel: Option<String>,
    },
    /// `NOTIFY channel [, payload]`.
    Notify,
    /// `COPY ...`.
    Copy {
        /// `COPY ... FROM STDIN`: the client streams CopyData next.
        from_stdin: bool,
    },
    /// Anything else.
    Other,
}

/// What a `DISCARD` statement throws away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// `DISCARD ALL`.
    All,
    /// `DISCARD PLANS`.
    Plans,
    /// `DISCARD SEQUENCES`.
    Sequences,
    /// `DISCARD TEMP` / `DISCARD TEMPORARY`.
    Temp,
}

/// Why a statement's effect cannot be replayed on another server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    /// `LISTEN`.
    Listen,
    /// A session-level advisory lock function (`pg_advisory_lock` and friends).
    AdvisoryLock,
    /// A temporary table, sequence or view (`CREATE TEMP ...`, `SELECT ... INTO TEMP`,
    /// objects created in `pg_temp`).
    TemporaryObject,
    /// `DECLARE ... CURSOR WITH HOLD`.
    HoldCursor,
    /// `set_config(name, value, is_local)` whose `is_local` is not literally true.
    SetConfig,
    /// A `SET`/`RESET` form that could not be understood, or one inside a `DO` block.
    UnrecognizedSet,
    /// `LOAD 'library'`.
    Load,
}

impl PinReason {
    /// Every reason, in declaration order (for metrics that start every series at zero).
    pub const ALL: [PinReason; 7] = [
        PinReason::Listen,
        PinReason::AdvisoryLock,
        PinReason::TemporaryObject,
        PinReason::HoldCursor,
        PinReason::SetConfig,
        PinReason::UnrecognizedSet,
        PinReason::Load,
    ];

    /// Stable snake_case label: the `reason` of `causeway_pins_total`.
    pub const fn label(self) -> &'static str {
        match self {
            PinReason::Listen => "listen",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::TemporaryObject => "temporary_object",
            PinReason::HoldCursor => "hold_cursor",
            PinReason::SetConfig => "set_config",
            PinReason::UnrecognizedSet => "unrecognized_set",
            PinReason::Load => "load",
        }
    }
}

/// How deep `EXPLAIN` nesting and `DO` bodies (and dynamic SQL in them) are followed.
const MAX_DEPTH: u8 = 4;

/// Session advisory lock functions; the `_xact_` variants are released at transaction end.
const ADVISORY_LOCKS: [&str; 4] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Splits a simple-Query string into its top-level statements (on `;` outside strings,
/// quoted identifiers, comments and dollar quotes, and outside `BEGIN ATOMIC ... END`
/// function bodies), skips empty ones, and classifies each. Assumes
/// `standard_conforming_strings = on`.
pub fn split_statements(sql: &str) -> Vec<Statement<'_>> {
    split_statements_with(sql, true)
}

/// [`split_statements`] for a session with the given `standard_conforming_strings`.
pub fn split_statements_with(sql: &str, standard_conforming_strings: bool) -> Vec<Statement<'_>> {
    let mut statements = statements_with(sql, standard_conforming_strings);
    let Some(first) = statements.next() else {
        return Vec::new();
    };
    // Most queries are one statement: room for exactly that, grown only for more.
    let mut out = Vec::with_capacity(1);
    out.push(first);
    out.extend(statements);
    out
}

/// The statements of [`split_statements_with`], one at a time and without allocating
/// (for the per-query path).
pub fn statements_with(
    sql: &str,
    standard_conforming_strings: bool,
) -> impl Iterator<Item = Statement<'_>> {
    let mut lex = Lexer::with_standard_conforming_strings(sql, standard_conforming_strings);
    std::iter::from_fn(move || {
        let (range, info) = next_statement(&mut lex, 0)?;
        Some(Statement {
            text: trimmed(sql, range),
            info,
        })
    })
}

/// `sql[range]` without leading and trailing whitespace (all ASCII, so any cut between
/// whitespace and other bytes is a character boundary).
fn trimmed(sql: &str, range: Range<usize>) -> &str {
    let bytes = sql.as_bytes();
    let (mut start, mut end) = (range.start, range.end);
    while start < end && bytes.get(start).is_some_and(|&b| is_space(b)) {
        start += 1;
    }
    while end > start && bytes.get(end - 1).is_some_and(|&b| is_space(b)) {
        end -= 1;
    }
    sql.get(start..end).unwrap_or("")
}

/// Classifies one statement, such as the query of a protocol-level Parse; a trailing `;` is
/// allowed (anything after it is ignored). Empty input is [`StatementKind::Other`].
pub fn classify(sql: &str) -> StatementInfo {
    classify_with(sql, true)
}

/// [`classify`] for a session with the given `standard_conforming_strings`.
pub fn classify_with(sql: &str, standard_conforming_strings: bool) -> StatementInfo {
    let mut lex = Lexer::with_standard_conforming_strings(sql, standard_conforming_strings);
    next_statement(&mut lex, 0).map_or_else(StatementInfo::other, |(_, info)| info)
}

/// Classifies the next non-empty statement and moves `lex` past its `;`. Returns the byte
/// range of the statement (without the `;`). `depth > 0` means the text is a `DO` body.
fn next_statement(lex: &mut Lexer<'_>, depth: u8) -> Option<(Range<usize>, StatementInfo)> {
    loop {
        let start = lex.offset();
        let first = lex.next()?; // `None` at the end of the input
        if first.kind == TokenKind::Semicolon {
            continue; // an empty statement
        }
        // The head is parsed from a copy of the lexer (only as far as it needs); the scanning
        // pass then goes on from the first token, so no token is read twice by either.
        let head = parse_head(first, || Cursor::new(lex.clone()), depth);
        let (pin, end) =
            Scanner::new(head.flavor, depth, lex.standard_conforming_strings()).run(first, lex);
        let info = StatementInfo {
            kind: head.kind,
            pin: if head.whole {
                head.pin
            } else {
                head.pin.or(pin)
            },
        };
        return Some((start..end, info));
    }
}

/// Tokens of the current statement, with one token of lookahead; ends at `;`.
#[derive(Clone)]
struct Cursor<'a> {
    lex: Lexer<'a>,
    ahead: Option<Token<'a>>,
}

impl<'a> Cursor<'a> {
    fn new(mut lex: Lexer<'a>) -> Self {
        let ahead = lex.next().filter(|t| t.kind != TokenKind::Semicolon);
        Self { lex, ahead }
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let t = self.ahead?;
        self.ahead = self.lex.next().filter(|t| t.kind != TokenKind::Semicolon);
        Some(t)
    }

    fn peek(&self) -> Option<Token<'a>> {
        self.ahead
    }

    fn peek_is(&self, kind: TokenKind) -> bool {
        self.peek().is_some_and(|t| t.kind == kind)
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        self.peek().is_some_and(|t| t.is_keyword(kw))
    }

    /// Consumes the next token if it is the word `kw`.
    fn eat(&mut self, kw: &str) -> bool {
        let hit = self.peek_keyword(kw);
        if hit {
            self.next();
        }
        hit
    }

    fn at_end(&self) -> bool {
        self.peek().is_none()
    }

    /// Skips a parenthesized group if one comes next.
    fn skip_parens(&mut self) {
        if !self.peek_is(TokenKind::LParen) {
            return;
        }
        let mut depth = 0usize;
        while let Some(t) = self.next() {
            match t.kind {
                TokenKind::LParen => depth += 1,
                TokenKind::RParen => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth == 0 {
                return;
            }
        }
    }

    /// Consumes tokens up to the first word `kw` outside parentheses; true if found.
    fn seek_top_level(&mut self, kw: &str) -> bool {
        let mut depth = 0usize;
        while let Some(t) = self.next() {
            match t.kind {
                TokenKind::LParen => depth += 1,
                TokenKind::RParen => depth = depth.saturating_sub(1),
                TokenKind::Word if depth == 0 && t.is_keyword(kw) => return true,
                _ => {}
            }
        }
        false
    }

    /// The next token as an identifier (lowercased unless quoted), consumed.
    fn ident(&mut self) -> Option<String> {
        let name = self.peek()?.ident()?.into_owned();
        self.next();
        Some(name)
    }

    /// A possibly dotted parameter name, ASCII-lowercased even where quoted.
    fn var_name(&mut self) -> Option<String> {
        let mut name = self.ident()?;
        while self.peek_is(TokenKind::Dot) {
            self.next();
            name.push('.');
            name.push_str(&self.ident()?);
        }
        name.make_ascii_lowercase();
        Some(name)
    }
}

/// What the scanning pass must watch for, decided by the statement's first keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Plain,
    /// `CREATE ...`: objects created in `pg_temp` are temporary.
    Create,
    /// `CREATE [OR REPLACE] {FUNCTION | PROCEDURE}`: `;` inside `BEGIN ATOMIC` does not split.
    Routine,
    /// `DO`: its string is code that runs now.
    Do,
}

/// Result of parsing a statement's first keywords.
struct Head {
    kind: StatementKind,
    pin: Option<PinReason>,
    flavor: Flavor,
    /// The whole statement is understood from its head (`SELECT set_config(...)` read as a
    /// `SET`): what the scanner would pin for does not apply.
    whole: bool,
}

impl Head {
    fn of(kind: StatementKind) -> Self {
        Self {
            kind,
            pin: None,
            flavor: Flavor::Plain,
            whole: false,
        }
    }

    fn other() -> Self {
        Self::of(StatementKind::Other)
    }

    fn pinned(pin: PinReason) -> Self {
        Self {
            pin: Some(pin),
            ..Self::other()
        }
    }

    fn flavored(flavor: Flavor) -> Self {
        Self {
            flavor,
            ..Self::other()
        }
    }
}

/// The word's text, ASCII-lowercased into `buf`; empty unless a short unquoted word.
fn lower_word<'b>(t: &Token<'_>, buf: &'b mut [u8; 12]) -> &'b [u8] {
    if t.kind != TokenKind::Word || t.text.len() > buf.len() {
        return &[];
    }
    for (d, s) in buf.iter_mut().zip(t.text.bytes()) {
        *d = s.to_ascii_lowercase();
    }
    buf.get(..t.text.len()).unwrap_or(&[])
}

/// Classifies a statement from its first token; `rest` makes the cursor after it, which
/// most statements (`SELECT`, `INSERT`, ...) never need.
fn parse_head<'a>(first: Token<'a>, rest: impl FnOnce() -> Cursor<'a>, depth: u8) -> Head {
    let mut buf = [0u8; 12];
    match lower_word(&first, &mut buf) {
        b"begin" => head_begin(rest()),
        b"start" => head_start(rest()),
        b"commit" => head_commit(rest()),
        b"end" => Head::of(StatementKind::Commit {
            chain: chain(rest()),
        }),
        b"rollback" | b"abort" => head_rollback(first, rest()),
        b"savepoint" => Head::of(StatementKind::Savepoint),
        b"release" => Head::of(StatementKind::ReleaseSavepoint),
        b"prepare" => head_prepare(rest()),
        b"execute" => rest().ident().map_or_else(Head::other, |name| {
            Head::of(StatementKind::Execute { name })
        }),
        b"deallocate" => head_deallocate(rest()),
        b"discard" => head_discard(rest()),
        b"set" => head_set(rest()),
        b"reset" => head_reset(rest()),
        b"listen" => head_listen(rest()),
        b"unlisten" => head_unlisten(rest()),
        b"notify" => Head::of(StatementKind::Notify),
        b"copy" => head_copy(rest()),
        b"declare" => head_declare(rest()),
        b"load" => Head::pinned(PinReason::Load),
        b"create" => head_create(rest()),
        b"explain" => head_explain(rest(), depth),
        b"do" => Head::flavored(Flavor::Do),
        b"select" => head_select(rest()),
        _ => Head::other(),
    }
}

/// After `SELECT`: exactly `[pg_catalog.]set_config('name', 'value', false)` is the `SET`
/// it amounts to (Django on psycopg 3 sets `TimeZone` so), tracked and replayed like one
/// instead of pinning the client. Anything else is an ordinary `SELECT`.
fn head_select(mut c: Cursor<'_>) -> Head {
    if !c.peek_keyword("set_config") && !c.peek_keyword("pg_catalog") {
        return Head::other();
    }
    if c.eat("pg_catalog") && c.next().is_none_or(|t| t.kind != TokenKind::Dot) {
        return Head::other();
    }
    let name = (|| {
        let string = |c: &mut Cursor<'_>| -> Option<String> {
            c.next()
                .filter(|t| t.kind == TokenKind::String(StringKind::Standard))
                .and_then(|t| t.string_value().map(std::borrow::Cow::into_owned))
        };
        let punct = |c: &mut Cursor<'_>, kind| c.next().is_some_and(|t| t.kind == kind);
        if !c.eat("set_config") || !punct(&mut c, TokenKind::LParen) {
            return None;
        }
        let name = string(&mut c)?;
        let value = punct(&mut c, TokenKind::Comma) && string(&mut c).is_some();
        let local = value && punct(&mut c, TokenKind::Comma) && c.eat("false");
        let ends = local && punct(&mut c, TokenKind::RParen) && c.peek().is_none();
        ends.then(|| name.to_ascii_lowercase())
    })();
    match name {
        Some(name) if !name.is_empty() => Head {
            whole: true,
            ..Head::of(StatementKind::Set { name, local: false })
        },
        _ => Head::other(),
    }
}

/// After `START`: only `START TRANSACTION` begins one.
fn head_start(mut c: Cursor<'_>) -> Head {
    if c.eat("transaction") {
        head_begin(c)
    } else {
        Head::other()
    }
}

/// After `COMMIT`: `PREPARED 'id'` or `[WORK | TRANSACTION] [AND [NO] CHAIN]`.
fn head_commit(mut c: Cursor<'_>) -> Head {
    if c.eat("prepared") {
        Head::of(StatementKind::PrepareTransaction)
    } else {
        Head::of(StatementKind::Commit { chain: chain(c) })
    }
}

/// After `COPY`: whether the data comes `FROM STDIN`.
fn head_copy(mut c: Cursor<'_>) -> Head {
    Head::of(StatementKind::Copy {
        from_stdin: c.seek_top_level("from") && c.peek_keyword("stdin"),
    })
}

/// After `BEGIN` / `START TRANSACTION`: the last of `READ ONLY` / `READ WRITE` wins.
fn head_begin(mut c: Cursor<'_>) -> Head {
    let mut read_only = false;
    while let Some(t) = c.next() {
        if t.is_keyword("read") {
            if c.eat("only") {
                read_only = true;
            } else if c.eat("write") {
                read_only = false;
            }
        }
    }
    Head::of(StatementKind::Begin { read_only })
}

/// `[WORK | TRANSACTION] [AND [NO] CHAIN]`: true for `AND CHAIN`.
fn chain(mut c: Cursor<'_>) -> bool {
    let _ = c.eat("work") || c.eat("transaction");
    c.eat("and") && !c.eat("no") && c.eat("chain")
}

/// After `ROLLBACK` / `ABORT`.
fn head_rollback(first: Token<'_>, mut c: Cursor<'_>) -> Head {
    let rollback = first.is_keyword("rollback");
    if rollback && c.eat("prepared") {
        return Head::of(StatementKind::PrepareTransaction);
    }
    let mut after = c.clone();
    let _ = after.eat("work") || after.eat("transaction");
    match (after.peek_keyword("to"), rollback) {
        (true, true) => Head::of(StatementKind::RollbackToSavepoint),
        (true, false) => Head::other(), // ABORT has no TO form
        (false, _) => Head::of(StatementKind::Rollback { chain: chain(c) }),
    }
}

/// After `PREPARE`: `TRANSACTION 'id'` or `name [(types)] AS ...`.
fn head_prepare(mut c: Cursor<'_>) -> Head {
    let mut after = c.clone();
    if after.eat("transaction")
        && after
            .peek()
            .is_some_and(|t| matches!(t.kind, TokenKind::String(_)))
    {
        return Head::of(StatementKind::PrepareTransaction);
    }
    let Some(name) = c.ident() else {
        return Head::other();
    };
    c.skip_parens();
    if c.eat("as") {
        Head::of(StatementKind::Prepare { name })
    } else {
        Head::other()
    }
}

/// After `DEALLOCATE`: `[PREPARE] {name | ALL}`.
fn head_deallocate(mut c: Cursor<'_>) -> Head {
    let mut after = c.clone();
    if after.eat("prepare") && !after.at_end() {
        c = after;
    }
    let name = if c.eat("all") { None } else { c.ident() };
    match (name, c.at_end()) {
        (None, true) => Head::of(StatementKind::Deallocate { name: None }),
        (Some(n), true) => Head::of(StatementKind::Deallocate { name: Some(n) }),
        _ => Head::other(),
    }
}

/// After `DISCARD`.
fn head_discard(mut c: Cursor<'_>) -> Head {
    let Some(t) = c.next() else {
        return Head::other();
    };
    let mut buf = [0u8; 12];
    let what = match lower_word(&t, &mut buf) {
        b"all" => Discard::All,
        b"plans" => Discard::Plans,
        b"sequences" => Discard::Sequences,
        b"temp" | b"temporary" => Discard::Temp,
        _ => return Head::other(),
    };
    if c.at_end() {
        Head::of(StatementKind::Discard { what })
    } else {
        Head::other()
    }
}

/// After `LISTEN`: pins even when malformed.
fn head_listen(mut c: Cursor<'_>) -> Head {
    match c.ident() {
        Some(channel) if c.at_end() => Head {
            kind: StatementKind::Listen { channel },
            ..Head::pinned(PinReason::Listen)
        },
        _ => Head::pinned(PinReason::Listen),
    }
}

/// After `UNLISTEN`: `channel` or `*`.
fn head_unlisten(mut c: Cursor<'_>) -> Head {
    let channel = match c.peek() {
        Some(t) if t.kind == TokenKind::Operator && t.text == "*" => {
            c.next();
            None
        }
        _ => match c.ident() {
            Some(name) => Some(name),
            None => return Head::other(),
        },
    };
    if c.at_end() {
        Head::of(StatementKind::Unlisten { channel })
    } else {
        Head::other()
    }
}

/// After `DECLARE name`: options, then `CURSOR [WITH HOLD | WITHOUT HOLD]`.
fn head_declare(mut c: Cursor<'_>) -> Head {
    c.next(); // the cursor's name, which may itself be a keyword
    for _ in 0..6 {
        match c.next() {
            Some(t) if t.is_keyword("cursor") => {
                return if c.eat("with") && c.eat("hold") {
                    Head::pinned(PinReason::HoldCursor)
                } else {
                    Head::other()
                };
            }
            Some(_) => {}
            None => break,
        }
    }
    Head::other()
}

/// After `CREATE`: temporary objects, routines, `CREATE TABLE ... AS EXECUTE name`.
fn head_create(mut c: Cursor<'_>) -> Head {
    if c.eat("or") {
        c.eat("replace");
    }
    if c.peek_keyword("function") || c.peek_keyword("procedure") {
        return Head::flavored(Flavor::Routine);
    }
    let mut head = Head::flavored(Flavor::Create);
    let _ = c.eat("global") || c.eat("local");
    if c.eat("temp") || c.eat("temporary") {
        head.pin = Some(PinReason::TemporaryObject);
    }
    c.eat("unlogged");
    // create_as_target has no top-level AS, so the first one starts the query.
    if c.eat("table") && c.seek_top_level("as") && c.eat("execute") {
        if let Some(name) = c.ident() {
            head.kind = StatementKind::Execute { name };
        }
    }
    head
}

/// After `EXPLAIN`: skips options and classifies the explained statement; only `EXECUTE`
/// keeps its kind, but pins are kept.
fn head_explain(mut c: Cursor<'_>, depth: u8) -> Head {
    if c.peek_is(TokenKind::LParen) {
        c.skip_parens();
    } else {
        while c.eat("analyze") || c.eat("analyse") || c.eat("verbose") {}
    }
    let Some(first) = c.next().filter(|_| depth < MAX_DEPTH) else {
        return Head::other();
    };
    let inner = parse_head(first, || c, depth + 1);
    match inner.kind {
        StatementKind::Execute { .. } => inner,
        _ => Head {
            kind: StatementKind::Other,
            ..inner
        },
    }
}

/// A `SET`/`RESET` that could not be understood: kind `Other`, pinned.
fn unrecognized_set() -> Head {
    Head::pinned(PinReason::UnrecognizedSet)
}

/// After `SET`.
fn head_set(mut c: Cursor<'_>) -> Head {
    let mut local = false;
    if c.eat("local") {
        local = true;
    } else if c.peek_keyword("session") && !session_special_form(&c) {
        c.next();
    }
    if let Some(name) = generic_set(c.clone()) {
        return Head::of(StatementKind::Set { name, local });
    }
    let Some(t) = c.next() else {
        return unrecognized_set();
    };
    let mut buf = [0u8; 12];
    let name = match lower_word(&t, &mut buf) {
        b"transaction" => return Head::of(StatementKind::SetTransaction),
        b"constraints" => return Head::of(StatementKind::SetConstraints),
        b"time" if c.eat("zone") => "timezone",
        b"names" => "client_encoding",
        b"schema" => "search_path",
        b"role" => "role",
        b"session" if c.eat("authorization") => "session_authorization",
        b"session" if c.eat("characteristics") && c.eat("as") && c.eat("transaction") => {
            "default_transaction_characteristics"
        }
        b"xml" if c.eat("option") => "xmloption",
        _ => return unrecognized_set(),
    };
    if c.at_end() {
        return unrecognized_set();
    }
    Head::of(StatementKind::Set {
        name: name.to_owned(),
        local,
    })
}

/// Whether `SESSION` (next) starts `SESSION AUTHORIZATION` or
/// `SESSION CHARACTERISTICS AS`, rather than being the scope of a generic `SET`.
fn session_special_form(c: &Cursor<'_>) -> bool {
    let mut after = c.clone();
    after.next();
    after.eat("authorization") || (after.eat("characteristics") && after.peek_keyword("as"))
}

/// `name {TO | =} value...`: the normalized name.
fn generic_set(mut c: Cursor<'_>) -> Option<String> {
    let name = c.var_name()?;
    let op = c.next()?;
    let assigns = op.kind == TokenKind::Eq || op.is_keyword("to");
    (assigns && !c.at_end()).then_some(name)
}

/// After `RESET`.
fn head_reset(mut c: Cursor<'_>) -> Head {
    if c.eat("all") {
        return if c.at_end() {
            Head::of(StatementKind::ResetAll)
        } else {
            unrecognized_set()
        };
    }
    let mut generic = c.clone();
    let name = match generic.var_name() {
        Some(name) if generic.at_end() => Some(name),
        _ => reset_special_form(&mut c)
            .filter(|_| c.at_end())
            .map(str::to_owned),
    };
    name.map_or_else(unrecognized_set, |name| {
        Head::of(StatementKind::Reset { name })
    })
}

/// `RESET TIME ZONE`, `RESET SESSION AUTHORIZATION`, `RESET TRANSACTION ISOLATION LEVEL`.
fn reset_special_form(c: &mut Cursor<'_>) -> Option<&'static str> {
    if c.eat("time") && c.eat("zone") {
        Some("timezone")
    } else if c.eat("session") && c.eat("authorization") {
        Some("session_authorization")
    } else if c.eat("transaction") && c.eat("isolation") && c.eat("level") {
        Some("transaction_isolation")
    } else {
        None
    }
}

/// What the scanning pass remembers about the previous token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recent {
    Other,
    /// A `.`; `catalog` when it follows `pg_catalog`.
    Dot {
        catalog: bool,
    },
    /// A word (or, for names, a quoted identifier) the scan cares about.
    Word(Word),
}

/// Words that matter to the scanning pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    Plain,
    PgCatalog,
    Into,
    InsertOrMerge,
    Execute,
    /// `THEN`, `ELSE`, `LOOP` or `<<label>>`: a PL/pgSQL statement may follow.
    StatementStart,
    Begin,
    Atomic,
    Case,
    End,
    /// A session advisory lock function, callable here.
    AdvisoryLock,
    /// `set_config`, callable here.
    SetConfig,
}

/// Classifies an unquoted word. Its length and first letter pick the one keyword it could
/// be, so at most one comparison is made.
fn word_kind(t: &Token<'_>) -> Word {
    let Some(&first) = t.text.as_bytes().first() else {
        return Word::Plain;
    };
    let (keyword, kind) = match (t.text.len(), first.to_ascii_lowercase()) {
        (3, b'e') => ("end", Word::End),
        (4, b'i') => ("into", Word::Into),
        (4, b't') => ("then", Word::StatementStart),
        (4, b'e') => ("else", Word::StatementStart),
        (4, b'l') => ("loop", Word::StatementStart),
        (4, b'c') => ("case", Word::Case),
        (5, b'b') => ("begin", Word::Begin),
        (5, b'm') => ("merge", Word::InsertOrMerge),
        (6, b'i') => ("insert", Word::InsertOrMerge),
        (6, b'a') => ("atomic", Word::Atomic),
        (7, b'e') => ("execute", Word::Execute),
        (10, b'p') => ("pg_catalog", Word::PgCatalog),
        (10, b's') => ("set_config", Word::SetConfig),
        (16, b'p') => (ADVISORY_LOCKS[0], Word::AdvisoryLock),
        (23, b'p') => (ADVISORY_LOCKS[1], Word::AdvisoryLock),
        (20, b'p') => (ADVISORY_LOCKS[2], Word::AdvisoryLock),
        (27, b'p') => (ADVISORY_LOCKS[3], Word::AdvisoryLock),
        _ => return Word::Plain,
    };
    if t.text.eq_ignore_ascii_case(keyword) {
        kind
    } else {
        Word::Plain
    }
}

/// Classifies a quoted identifier: only exact (case-sensitive) function and schema names.
fn quoted_kind(t: &Token<'_>) -> Word {
    if !matches!(t.text.len(), 12 | 18 | 22 | 25 | 29) {
        return Word::Plain;
    }
    match t.ident() {
        Some(name) if name == "pg_catalog" => Word::PgCatalog,
        Some(name) if name == "set_config" => Word::SetConfig,
        Some(name) if ADVISORY_LOCKS.contains(&&*name) => Word::AdvisoryLock,
        _ => Word::Plain,
    }
}

/// The pass over all of a statement's tokens: finds its end and the pins that can hide
/// anywhere in it. Keeps only a little state per token so that it stays fast.
struct Scanner {
    flavor: Flavor,
    depth: u8,
    standard_strings: bool,
    recent: Recent,
    parens: usize,
    /// Open `BEGIN ATOMIC` / `CASE` blocks of a routine body.
    blocks: usize,
    pin: Option<PinReason>,
}

impl Scanner {
    fn new(flavor: Flavor, depth: u8, standard_strings: bool) -> Self {
        Self {
            flavor,
            depth,
            standard_strings,
            recent: Recent::Other,
            parens: 0,
            blocks: 0,
            pin: None,
        }
    }

    /// Consumes the statement, whose `first` token `lex` has just read, and its `;`; returns
    /// the pin found and where the text ends.
    fn run(mut self, first: Token<'_>, lex: &mut Lexer<'_>) -> (Option<PinReason>, usize) {
        let mut t = first;
        loop {
            if let Some(end) = self.step(&t, lex) {
                return (self.pin, end);
            }
            match lex.next() {
                Some(next) => t = next,
                None => return (self.pin, lex.source().len()),
            }
        }
    }

    /// Takes in token `t` (`lex` is just past it); the statement's end if `t` ends it.
    #[inline(always)]
    fn step(&mut self, t: &Token<'_>, lex: &Lexer<'_>) -> Option<usize> {
        self.recent = match t.kind {
            TokenKind::Semicolon if self.blocks == 0 => return Some(t.start),
            TokenKind::LParen => {
                self.on_call(lex);
                self.parens += 1;
                Recent::Other
            }
            TokenKind::RParen => {
                self.parens = self.parens.saturating_sub(1);
                Recent::Other
            }
            TokenKind::Dot => Recent::Dot {
                catalog: self.recent == Recent::Word(Word::PgCatalog),
            },
            TokenKind::Word => match word_kind(t) {
                Word::Plain if self.plain_words_inert() => Recent::Word(Word::Plain),
                kind => self.on_word(t, kind, lex),
            },
            TokenKind::QuotedIdent { .. } => self.on_word(t, quoted_kind(t), lex),
            TokenKind::String(_) | TokenKind::DollarString => {
                self.on_string(t);
                Recent::Other
            }
            TokenKind::Operator if t.text == ">>" => Recent::Word(Word::StatementStart),
            _ => Recent::Other,
        };
        None
    }

    /// Whether [`Scanner::on_word`] would only remember a [`Word::Plain`] word: outside
    /// code bodies and routines no block is tracked and outside `CREATE` no plain word pins
    /// (`pg_temp`), so the usual word needs no more than its kind.
    #[inline(always)]
    fn plain_words_inert(&self) -> bool {
        self.depth == 0 && matches!(self.flavor, Flavor::Plain | Flavor::Do)
    }

    /// At `(` after a pinning function's name: a call.
    fn on_call(&mut self, lex: &Lexer<'_>) {
        match self.recent {
            Recent::Word(Word::AdvisoryLock) => self.set_pin(PinReason::AdvisoryLock),
            Recent::Word(Word::SetConfig) if !third_arg_is_true(lex.clone()) => {
                self.set_pin(PinReason::SetConfig)
            }
            _ => {}
        }
    }

    fn set_pin(&mut self, pin: PinReason) {
        self.pin = self.pin.or(Some(pin));
    }

    /// A word or quoted identifier of kind `kind`; returns what to remember about it.
    fn on_word(&mut self, t: &Token<'_>, kind: Word, lex: &Lexer<'_>) -> Recent {
        if self.flavor == Flavor::Routine && self.parens == 0 {
            self.track_block(kind);
        }
        if self.pin.is_none() {
            self.pin = self.word_pin(t, kind, lex);
        }
        let foreign = self.recent == Recent::Dot { catalog: false };
        match kind {
            // `myschema.pg_advisory_lock(...)` is somebody else's function.
            Word::AdvisoryLock | Word::SetConfig if foreign => Recent::Word(Word::Plain),
            _ => Recent::Word(kind),
        }
    }

    /// Follows `BEGIN ATOMIC ... END` (and `CASE ... END` inside it) in a routine body.
    fn track_block(&mut self, kind: Word) {
        match kind {
            Word::Atomic if self.recent == Recent::Word(Word::Begin) => self.blocks += 1,
            Word::Case if self.blocks > 0 => self.blocks += 1,
            Word::End => self.blocks = self.blocks.saturating_sub(1),
            _ => {}
        }
    }

    /// Pins revealed by a word: `INTO TEMP`, `pg_temp.`, and statements inside code bodies.
    fn word_pin(&self, t: &Token<'_>, kind: Word, lex: &Lexer<'_>) -> Option<PinReason> {
        let statement_start = matches!(
            self.recent,
            Recent::Word(Word::Begin | Word::StatementStart)
        );
        if self.depth > 0 && statement_start {
            if let Some(pin) = body_word_pin(*t, lex, self.depth) {
                return Some(pin);
            }
        }
        if kind == Word::Into
            && self.recent != Recent::Word(Word::InsertOrMerge)
            && into_temp(Cursor::new(lex.clone()))
        {
            return Some(PinReason::TemporaryObject);
        }
        if matches!(self.flavor, Flavor::Create | Flavor::Routine) {
            let temp =
                is_temp_schema(t) && lex.clone().next().is_some_and(|n| n.kind == TokenKind::Dot);
            return temp.then_some(PinReason::TemporaryObject);
        }
        None
    }

    /// A string that is code run now: a `DO` body, or dynamic SQL after `EXECUTE` in one.
    fn on_string(&mut self, t: &Token<'_>) {
        let dynamic = self.depth > 0 && self.recent == Recent::Word(Word::Execute);
        if self.pin.is_some() || !(self.flavor == Flavor::Do || dynamic) || self.depth >= MAX_DEPTH
        {
            return;
        }
        if let Some(body) = t.string_value() {
            self.pin = body_pin(&body, self.standard_strings, self.depth + 1);
        }
    }
}

/// A PL/pgSQL statement starting with word `t` inside a code body: its pin, or a pin for
/// session state it changes.
fn body_word_pin(t: Token<'_>, lex: &Lexer<'_>, depth: u8) -> Option<PinReason> {
    let head = parse_head(t, || Cursor::new(lex.clone()), depth);
    head.pin.or_else(|| body_state_change(&head.kind))
}

/// Whether `set_config`'s argument list (after its `(`) has a third argument that is
/// literally true: `true` or a string PostgreSQL reads as true.
fn third_arg_is_true(lex: Lexer<'_>) -> bool {
    let (mut depth, mut commas, mut count) = (0usize, 0usize, 0usize);
    let mut third = None;
    for t in lex {
        match t.kind {
            TokenKind::RParen if depth == 0 => {
                return commas == 2 && count == 1 && third.is_some_and(|t| is_true_literal(&t));
            }
            TokenKind::Comma if depth == 0 => {
                commas += 1;
                continue;
            }
            TokenKind::Semicolon => return false,
            TokenKind::LParen => depth += 1,
            TokenKind::RParen => depth -= 1,
            _ => {}
        }
        if commas == 2 {
            count += 1;
            third = Some(t);
        }
    }
    false
}

fn is_true_literal(t: &Token<'_>) -> bool {
    match t.kind {
        TokenKind::Word => t.text.eq_ignore_ascii_case("true"),
        TokenKind::String(StringKind::Standard | StringKind::Escape) => {
            t.string_value().is_some_and(|v| {
                let v = v.trim_matches(|c: char| c.is_ascii_whitespace());
                ["t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"]
                    .iter()
                    .any(|s| v.eq_ignore_ascii_case(s))
            })
        }
        _ => false,
    }
}

/// After a (non-`INSERT`) `INTO`: `[GLOBAL | LOCAL] {TEMP | TEMPORARY} [TABLE] name`, or
/// `[UNLOGGED] [TABLE] pg_temp.name`.
fn into_temp(mut c: Cursor<'_>) -> bool {
    let _ = c.eat("global") || c.eat("local");
    if c.eat("temp") || c.eat("temporary") {
        // `SELECT ... INTO temp FROM t` creates a table named "temp".
        return c.peek().is_some_and(|t| match t.kind {
            TokenKind::Word => !CLAUSE_AFTER_INTO.iter().any(|k| t.is_keyword(k)),
            TokenKind::QuotedIdent { .. } => true,
            _ => false,
        });
    }
    c.eat("unlogged");
    c.eat("table");
    let Some(t) = c.next() else {
        return false;
    };
    is_temp_schema(&t) && c.peek_is(TokenKind::Dot)
}

/// Reserved words that can follow the target of `SELECT ... INTO target`.
const CLAUSE_AFTER_INTO: [&str; 13] = [
    "from",
    "where",
    "group",
    "having",
    "window",
    "order",
    "limit",
    "offset",
    "fetch",
    "for",
    "union",
    "intersect",
    "except",
];

/// Whether `t` names the temporary schema (`pg_temp` or `pg_temp_N`).
fn is_temp_schema(t: &Token<'_>) -> bool {
    let prefix = t.text.trim_start_matches('"').get(..7);
    prefix.is_some_and(|p| p.eq_ignore_ascii_case("pg_temp"))
        && t.ident()
            .is_some_and(|s| s == "pg_temp" || s.starts_with("pg_temp_"))
}

/// A statement inside a code body that changes session state we could not replay.
fn body_state_change(kind: &StatementKind) -> Option<PinReason> {
    match kind {
        StatementKind::Set { local: false, .. }
        | StatementKind::Reset { .. }
        | StatementKind::ResetAll => Some(PinReason::UnrecognizedSet),
        _ => None,
    }
}

/// The first pin of any statement in a code body (`DO` block or dynamic SQL).
fn body_pin(body: &str, standard_strings: bool, depth: u8) -> Option<PinReason> {
    let mut lex = Lexer::with_standard_conforming_strings(body, standard_strings);
    while let Some((_, info)) = next_statement(&mut lex, depth) {
        if let Some(pin) = info.pin.or_else(|| body_state_change(&info.kind)) {
            return Some(pin);
        }
    }
    None
}

#[cfg(test)]
mod tests;
