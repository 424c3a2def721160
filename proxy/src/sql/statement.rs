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
            pin: head.pin.or(pin),
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
}

impl Head {
    fn of(kind: StatementKind) -> Self {
        Self {
            kind,
            pin: None,
            flavor: Flavor::Plain,
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use PinReason as P;
    use StatementKind as K;

    fn set(name: &str) -> K {
        K::Set {
            name: name.into(),
            local: false,
        }
    }
    fn set_local(name: &str) -> K {
        K::Set {
            name: name.into(),
            local: true,
        }
    }
    fn reset(name: &str) -> K {
        K::Reset { name: name.into() }
    }
    fn prepare(name: &str) -> K {
        K::Prepare { name: name.into() }
    }
    fn execute(name: &str) -> K {
        K::Execute { name: name.into() }
    }

    #[rustfmt::skip]
    fn cases() -> Vec<(&'static str, K, Option<P>)> {
        vec![
            // Transactions.
            ("BEGIN", K::Begin { read_only: false }, None),
            ("begin work;", K::Begin { read_only: false }, None),
            ("BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE", K::Begin { read_only: true }, None),
            ("START TRANSACTION READ ONLY", K::Begin { read_only: true }, None),
            ("START TRANSACTION READ ONLY, READ WRITE", K::Begin { read_only: false }, None),
            ("BEGIN ISOLATION LEVEL READ COMMITTED", K::Begin { read_only: false }, None),
            ("BEGIN READ WRITE READ ONLY", K::Begin { read_only: true }, None),
            ("START", K::Other, None),
            ("COMMIT", K::Commit { chain: false }, None),
            ("END TRANSACTION", K::Commit { chain: false }, None),
            ("COMMIT AND CHAIN", K::Commit { chain: true }, None),
            ("commit work and no chain", K::Commit { chain: false }, None),
            ("ROLLBACK", K::Rollback { chain: false }, None),
            ("ABORT AND CHAIN", K::Rollback { chain: true }, None),
            ("ROLLBACK TO SAVEPOINT s1", K::RollbackToSavepoint, None),
            ("ROLLBACK WORK TO s1", K::RollbackToSavepoint, None),
            ("ABORT TO s1", K::Other, None),
            ("SAVEPOINT s1", K::Savepoint, None),
            ("RELEASE SAVEPOINT s1", K::ReleaseSavepoint, None),
            ("release s1", K::ReleaseSavepoint, None),
            ("PREPARE TRANSACTION 'gx'", K::PrepareTransaction, None),
            ("COMMIT PREPARED 'gx'", K::PrepareTransaction, None),
            ("ROLLBACK PREPARED 'gx'", K::PrepareTransaction, None),
            // SET.
            ("SET statement_timeout = '5s'", set("statement_timeout"), None),
            ("set search_path to \"My Schema\", public", set("search_path"), None),
            ("SET LOCAL work_mem = '64MB'", set_local("work_mem"), None),
            ("SET SESSION work_mem = '64MB'", set("work_mem"), None),
            ("set \"TimeZone\" = 'UTC'", set("timezone"), None),
            ("SET causeway.session = 'abc';", set("causeway.session"), None),
            ("SET MyApp . \"X\" TO 1", set("myapp.x"), None),
            ("SET x=-1", set("x"), None),
            ("SET application_name = DEFAULT", set("application_name"), None),
            ("SET TIME ZONE 'UTC'", set("timezone"), None),
            ("SET LOCAL TIME ZONE LOCAL", set_local("timezone"), None),
            ("SET NAMES 'UTF8'", set("client_encoding"), None),
            ("SET SCHEMA 'app'", set("search_path"), None),
            ("SET ROLE admin", set("role"), None),
            ("SET role = 'admin'", set("role"), None),
            ("SET SESSION AUTHORIZATION DEFAULT", set("session_authorization"), None),
            ("SET SESSION SESSION AUTHORIZATION bob", set("session_authorization"), None),
            ("SET LOCAL SESSION AUTHORIZATION bob", set_local("session_authorization"), None),
            ("SET XML OPTION DOCUMENT", set("xmloption"), None),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", set("default_transaction_characteristics"), None),
            ("SET SESSION characteristics = 1", set("characteristics"), None),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", K::SetTransaction, None),
            ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", K::SetTransaction, None),
            ("SET LOCAL TRANSACTION READ ONLY", K::SetTransaction, None),
            ("SET transaction_isolation = 'serializable'", set("transaction_isolation"), None),
            ("SET CONSTRAINTS ALL DEFERRED", K::SetConstraints, None),
            ("SET work_mem FROM CURRENT", K::Other, Some(P::UnrecognizedSet)),
            ("SET", K::Other, Some(P::UnrecognizedSet)),
            ("SET 'x' = 1", K::Other, Some(P::UnrecognizedSet)),
            ("SET TIME ZONE", K::Other, Some(P::UnrecognizedSet)),
            ("SET search_path TO", K::Other, Some(P::UnrecognizedSet)),
            ("SET U&\"d!0061ta\" UESCAPE '!' = 1", set("data"), None),
            ("SET U&\"a\" UESCAPE 'ab' = 1", K::Other, Some(P::UnrecognizedSet)),
            // RESET.
            ("RESET ALL", K::ResetAll, None),
            ("RESET search_path", reset("search_path"), None),
            ("RESET ROLE", reset("role"), None),
            ("RESET SESSION AUTHORIZATION", reset("session_authorization"), None),
            ("RESET TIME ZONE", reset("timezone"), None),
            ("RESET TRANSACTION ISOLATION LEVEL", reset("transaction_isolation"), None),
            ("RESET \"Causeway\".Session", reset("causeway.session"), None),
            ("RESET ALL x", K::Other, Some(P::UnrecognizedSet)),
            ("RESET", K::Other, Some(P::UnrecognizedSet)),
            // Prepared statements.
            ("PREPARE q1 (int, text) AS SELECT $1, $2", prepare("q1"), None),
            ("PREPARE \"Q1\" AS SELECT 1", prepare("Q1"), None),
            ("PREPARE transaction AS SELECT 1", prepare("transaction"), None),
            ("PREPARE p AS SELECT pg_advisory_lock(1)", prepare("p"), Some(P::AdvisoryLock)),
            ("PREPARE p", K::Other, None),
            ("EXECUTE q1 (1, 'a')", execute("q1"), None),
            ("EXPLAIN EXECUTE q1(1)", execute("q1"), None),
            ("EXPLAIN ANALYZE VERBOSE EXECUTE Q1", execute("q1"), None),
            ("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE q1", execute("q1"), None),
            ("EXPLAIN SELECT 1", K::Other, None),
            ("CREATE TABLE t AS EXECUTE q1(2)", execute("q1"), None),
            ("CREATE TEMP TABLE t (a) WITH (fillfactor = 70) AS EXECUTE q1", execute("q1"), Some(P::TemporaryObject)),
            ("CREATE TABLE t AS SELECT 1 AS execute", K::Other, None),
            ("DEALLOCATE q1", K::Deallocate { name: Some("q1".into()) }, None),
            ("DEALLOCATE PREPARE \"Q1\"", K::Deallocate { name: Some("Q1".into()) }, None),
            ("DEALLOCATE ALL", K::Deallocate { name: None }, None),
            ("deallocate prepare all", K::Deallocate { name: None }, None),
            ("DEALLOCATE prepare", K::Deallocate { name: Some("prepare".into()) }, None),
            ("DEALLOCATE a b", K::Other, None),
            // DISCARD.
            ("DISCARD ALL", K::Discard { what: Discard::All }, None),
            ("discard plans", K::Discard { what: Discard::Plans }, None),
            ("DISCARD SEQUENCES", K::Discard { what: Discard::Sequences }, None),
            ("DISCARD TEMP", K::Discard { what: Discard::Temp }, None),
            ("DISCARD TEMPORARY", K::Discard { what: Discard::Temp }, None),
            ("DISCARD stuff", K::Other, None),
            // LISTEN / NOTIFY.
            ("LISTEN Chan", K::Listen { channel: "chan".into() }, Some(P::Listen)),
            ("LISTEN \"Chan\"", K::Listen { channel: "Chan".into() }, Some(P::Listen)),
            ("LISTEN", K::Other, Some(P::Listen)),
            ("UNLISTEN *", K::Unlisten { channel: None }, None),
            ("UNLISTEN chan", K::Unlisten { channel: Some("chan".into()) }, None),
            ("NOTIFY chan, 'payload'", K::Notify, None),
            ("SELECT pg_notify('c', 'LISTEN')", K::Other, None),
            // COPY.
            ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", K::Copy { from_stdin: true }, None),
            ("copy t from stdin", K::Copy { from_stdin: true }, None),
            ("COPY t FROM '/tmp/x'", K::Copy { from_stdin: false }, None),
            ("COPY (SELECT * FROM stdin) TO STDOUT", K::Copy { from_stdin: false }, None),
            ("COPY t TO STDOUT", K::Copy { from_stdin: false }, None),
            // Advisory locks.
            ("SELECT pg_advisory_lock(42)", K::Other, Some(P::AdvisoryLock)),
            ("SELECT pg_catalog.pg_try_advisory_lock_shared(1, 2)", K::Other, Some(P::AdvisoryLock)),
            ("select PG_ADVISORY_LOCK (1)", K::Other, Some(P::AdvisoryLock)),
            ("SELECT \"pg_advisory_lock_shared\"(1)", K::Other, Some(P::AdvisoryLock)),
            ("SELECT x FROM t WHERE pg_try_advisory_lock(t.id)", K::Other, Some(P::AdvisoryLock)),
            ("SELECT pg_advisory_xact_lock(1)", K::Other, None),
            ("SELECT pg_try_advisory_xact_lock_shared(1)", K::Other, None),
            ("SELECT myschema.pg_advisory_lock(1)", K::Other, None),
            ("SELECT pg_advisory_lock FROM t", K::Other, None),
            ("SELECT 'pg_advisory_lock(1)'", K::Other, None),
            ("SELECT $$pg_advisory_lock(1)$$", K::Other, None),
            ("SELECT $x$ $$ pg_advisory_lock(1) $$ $x$", K::Other, None),
            ("SELECT 1 /* pg_advisory_lock(1) */", K::Other, None),
            ("SELECT 1 -- pg_advisory_lock(1)", K::Other, None),
            ("SELECT E'\\'', pg_advisory_lock(1)", K::Other, Some(P::AdvisoryLock)),
            ("SELECT E'\\', pg_advisory_lock(1) --'", K::Other, None),
            ("SELECT '\\', pg_advisory_lock(1) --'", K::Other, Some(P::AdvisoryLock)),
            ("EXPLAIN ANALYZE SELECT pg_advisory_lock(1)", K::Other, Some(P::AdvisoryLock)),
            // Temporary objects.
            ("CREATE TEMP TABLE t (a int)", K::Other, Some(P::TemporaryObject)),
            ("CREATE GLOBAL TEMPORARY TABLE t (a int)", K::Other, Some(P::TemporaryObject)),
            ("CREATE LOCAL TEMP SEQUENCE s", K::Other, Some(P::TemporaryObject)),
            ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", K::Other, Some(P::TemporaryObject)),
            ("CREATE TEMPORARY RECURSIVE VIEW v (n) AS SELECT 1", K::Other, Some(P::TemporaryObject)),
            ("create temp table t as select 1", K::Other, Some(P::TemporaryObject)),
            ("CREATE UNLOGGED TABLE t (a int)", K::Other, None),
            ("CREATE TABLE temp (a int)", K::Other, None),
            ("CREATE TABLE pg_temp.t (a int)", K::Other, Some(P::TemporaryObject)),
            ("CREATE INDEX ON \"pg_temp\".t (a)", K::Other, Some(P::TemporaryObject)),
            ("CREATE FUNCTION pg_temp.f() RETURNS int AS 'select 1' LANGUAGE sql", K::Other, Some(P::TemporaryObject)),
            ("SELECT * INTO TEMP TABLE t FROM x", K::Other, Some(P::TemporaryObject)),
            ("SELECT * INTO TEMPORARY t FROM x", K::Other, Some(P::TemporaryObject)),
            ("SELECT a INTO LOCAL TEMP \"T\" FROM x", K::Other, Some(P::TemporaryObject)),
            ("WITH x AS (SELECT 1) SELECT * INTO TEMP t FROM x", K::Other, Some(P::TemporaryObject)),
            ("SELECT 1 INTO pg_temp.t", K::Other, Some(P::TemporaryObject)),
            ("SELECT * INTO temp FROM x", K::Other, None),
            ("SELECT * INTO t FROM x", K::Other, None),
            ("INSERT INTO temp VALUES (1)", K::Other, None),
            ("INSERT INTO temp SELECT 1", K::Other, None),
            ("MERGE INTO temp t USING s ON true WHEN MATCHED THEN DO NOTHING", K::Other, None),
            // Cursors.
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", K::Other, Some(P::HoldCursor)),
            ("DECLARE c BINARY INSENSITIVE NO SCROLL CURSOR WITH HOLD FOR SELECT 1", K::Other, Some(P::HoldCursor)),
            ("declare cursor cursor with hold for select 1", K::Other, Some(P::HoldCursor)),
            ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", K::Other, None),
            ("DECLARE c SCROLL CURSOR FOR SELECT 1", K::Other, None),
            // set_config.
            ("SELECT set_config('search_path', 'x', false)", K::Other, Some(P::SetConfig)),
            ("SELECT set_config('search_path', 'x', true)", K::Other, None),
            ("SELECT pg_catalog.set_config('a', 'b', TRUE)", K::Other, None),
            ("SELECT set_config('a', 'b', 'on')", K::Other, None),
            ("SELECT set_config('a', 'b', $1)", K::Other, Some(P::SetConfig)),
            ("SELECT set_config('a', lower('B'), true)", K::Other, None),
            ("SELECT set_config('a', 'b', true OR false)", K::Other, Some(P::SetConfig)),
            ("SELECT set_config('a', 'b')", K::Other, Some(P::SetConfig)),
            ("SELECT set_config('a', set_config('b', 'c', false), true)", K::Other, Some(P::SetConfig)),
            ("SELECT app.set_config('a', 'b', false)", K::Other, None),
            // LOAD.
            ("LOAD 'auto_explain'", K::Other, Some(P::Load)),
            // DO blocks run their body now.
            ("DO $$BEGIN PERFORM pg_advisory_lock(1); END$$", K::Other, Some(P::AdvisoryLock)),
            ("DO $$BEGIN SET search_path = x; END$$", K::Other, Some(P::UnrecognizedSet)),
            ("DO $$DECLARE n int; BEGIN IF true THEN RESET ALL; END IF; END$$", K::Other, Some(P::UnrecognizedSet)),
            ("DO $$BEGIN SET LOCAL search_path = x; END$$", K::Other, None),
            ("DO $$BEGIN EXECUTE 'LISTEN ' || quote_ident(ch); END$$", K::Other, Some(P::Listen)),
            ("DO LANGUAGE plpgsql $$ BEGIN CREATE TEMP TABLE t(a int); END $$", K::Other, Some(P::TemporaryObject)),
            ("DO 'BEGIN PERFORM pg_advisory_lock(1); END'", K::Other, Some(P::AdvisoryLock)),
            ("DO $$BEGIN RAISE NOTICE 'LISTEN x'; UPDATE t SET a = 1; END$$", K::Other, None),
            ("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ SELECT pg_advisory_lock(1) $$", K::Other, None),
            // Lexical traps.
            ("SELECT 'LISTEN x'", K::Other, None),
            ("SELECT \"SET\" FROM t", K::Other, None),
            ("\"SET\" x = 1", K::Other, None),
            ("(SELECT 1)", K::Other, None),
            ("/* LISTEN x */ SELECT 1", K::Other, None),
            ("/* a /* nested */ LISTEN x */ SELECT 1", K::Other, None),
            ("-- comment\n  /* c */ LISTEN x -- trailing", K::Listen { channel: "x".into() }, Some(P::Listen)),
            ("SELECT $a$ ; LISTEN x; $a$", K::Other, None),
            ("SELECT 1; LISTEN x", K::Other, None),
            ("  ;; select 1 ;  ", K::Other, None),
            ("", K::Other, None),
            ("SHOW search_path", K::Other, None),
            ("UPDATE t SET a = 1", K::Other, None),
            ("ALTER ROLE r SET search_path = x", K::Other, None),
            ("VALUES (1)", K::Other, None),
        ]
    }

    #[test]
    fn classification_table() {
        let cases = cases();
        assert!(cases.len() >= 80);
        for (sql, kind, pin) in cases {
            let expected = StatementInfo { kind, pin };
            assert_eq!(classify(sql), expected, "classify({sql:?})");
        }
    }

    #[test]
    fn splitting_agrees_with_classify() {
        let single: Vec<_> = cases()
            .into_iter()
            .filter(|(sql, _, _)| split_statements(sql).len() == 1)
            .collect();
        assert!(single.len() > 150);
        let joined: Vec<_> = single.iter().map(|(sql, _, _)| *sql).collect();
        let joined = joined.join("\n;\n");
        let split = split_statements(&joined);
        assert_eq!(split.len(), single.len());
        for (stmt, (sql, kind, pin)) in split.iter().zip(single) {
            assert_eq!(stmt.text, sql.trim_matches(|c| c == ';' || c == ' '));
            assert_eq!(stmt.info, StatementInfo { kind, pin }, "{sql:?}");
        }
    }

    #[test]
    fn splits_on_top_level_semicolons() {
        let stmts = split_statements("SELECT 1; SET x = 1;; LISTEN y");
        let texts: Vec<_> = stmts.iter().map(|s| s.text).collect();
        assert_eq!(texts, ["SELECT 1", "SET x = 1", "LISTEN y"]);
        assert_eq!(stmts[1].info.kind, set("x"));
        assert_eq!(stmts[2].info.pin, Some(P::Listen));

        let texts: Vec<_> =
            split_statements("SELECT 'a;b'; SELECT \"c;d\"; SELECT $x$;$x$; SELECT 1 /* ; */ -- ;")
                .into_iter()
                .map(|s| s.text)
                .collect();
        assert_eq!(
            texts,
            [
                "SELECT 'a;b'",
                "SELECT \"c;d\"",
                "SELECT $x$;$x$",
                "SELECT 1 /* ; */ -- ;"
            ]
        );

        assert!(split_statements(" ; ;\n -- nothing\n /* here */ ;").is_empty());
        assert_eq!(split_statements("SELECT 1; -- done").len(), 1);
        let hinted = split_statements("/* causeway: route=primary */ SELECT 1 ;\n");
        assert_eq!(hinted[0].text, "/* causeway: route=primary */ SELECT 1");
    }

    #[test]
    fn begin_atomic_bodies_do_not_split() {
        let sql = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; \
                   SELECT CASE WHEN true THEN 1 END; END; COMMIT";
        let stmts = split_statements(sql);
        assert_eq!(stmts.len(), 2, "{stmts:?}");
        assert!(stmts[0].text.ends_with("END"));
        assert_eq!(stmts[1].info.kind, K::Commit { chain: false });
        // A function named "begin" or a BEGIN without ATOMIC does not open a block.
        assert_eq!(
            split_statements("CREATE FUNCTION f(begin int) RETURNS int AS 'x'; BEGIN; END").len(),
            3
        );
    }

    #[test]
    fn standard_conforming_strings_off_changes_splitting() {
        let sql = r"SELECT 'a\'; LISTEN x; '; SELECT 2";
        let off = split_statements_with(sql, false);
        assert_eq!(off.len(), 2);
        assert!(off.iter().all(|s| s.info.pin.is_none()));
        let on = split_statements(sql);
        assert_eq!(on.len(), 3);
        assert_eq!(on[1].info.pin, Some(P::Listen));
        assert_eq!(
            classify_with(r"SELECT 'x\', pg_advisory_lock(1) --'", false),
            StatementInfo::other()
        );
    }

    const TRICKY: &[&str] = &[
        "SELECT 1; SET x = 1;; LISTEN y; SET LOCAL a.b TO 'c'; RESET ALL; DEALLOCATE PREPARE ALL",
        "/* a /* b */ c */ BEGIN READ ONLY; SELECT E'\\'', $a$ ; $a$, \"SET\"; COMMIT AND CHAIN",
        "DO $$BEGIN EXECUTE 'LISTEN ' || x; SET a = 1; END$$; CREATE FUNCTION f() BEGIN ATOMIC SELECT 1; END; END",
        "SELECT set_config('a', 'b', (true)), pg_catalog.pg_advisory_lock(1) INTO TEMP t; DECLARE c CURSOR WITH HOLD FOR",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; RESET TIME ZONE; EXPLAIN (a) EXECUTE p(1); COPY t FROM STDIN",
        "PREPARE p (int) AS SELECT $1; EXECUTE p(1); CREATE TEMP TABLE t AS EXECUTE p; DISCARD TEMP; UNLISTEN *; LOAD 'x'",
        "DO 'BEGIN EXECUTE ''DO $q$ BEGIN EXECUTE ''''LISTEN x''''; END $q$''; END'; SELECT 1 INTO pg_temp.t",
    ];

    fn check(sql: &str) {
        for stmt in split_statements(sql)
            .into_iter()
            .chain(split_statements_with(sql, false))
        {
            // Every statement's text is a slice of the input.
            let offset = stmt.text.as_ptr() as usize - sql.as_ptr() as usize;
            assert!(offset + stmt.text.len() <= sql.len());
        }
        let _ = (classify(sql), classify_with(sql, false));
    }

    #[test]
    fn every_prefix_and_suffix_is_safe() {
        for sql in TRICKY {
            for (i, _) in sql.char_indices() {
                check(&sql[..i]);
                check(&sql[i..]);
            }
        }
    }

    #[test]
    fn nested_dynamic_sql_is_followed() {
        assert_eq!(classify(TRICKY[6]).pin, Some(P::Listen));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let explain = "EXPLAIN ".repeat(10_000) + "EXECUTE p";
        assert_eq!(classify(&explain).kind, K::Other);
        let mut body = String::from("LISTEN x");
        for _ in 0..12 {
            body = format!("DO '{}'", body.replace('\'', "''"));
        }
        assert_eq!(classify(&body).pin, None);
        let unicode = "U&'' ".repeat(50_000);
        assert_eq!(classify(&unicode).kind, K::Other);
    }

    #[test]
    fn random_soup_is_safe() {
        const WORDS: &[&str] = &[
            "'",
            "\"",
            "$",
            "$$",
            "$a$",
            ";",
            "/*",
            "*/",
            "--",
            "\n",
            "\\",
            "E'",
            "U&",
            "(",
            ")",
            ",",
            ".",
            "=",
            " ",
            "SET",
            "RESET",
            "LISTEN",
            "INTO",
            "TEMP",
            "DO",
            "BEGIN",
            "ATOMIC",
            "END",
            "CREATE",
            "FUNCTION",
            "EXECUTE",
            "pg_advisory_lock",
            "set_config",
            "pg_temp",
            "TO",
            "SESSION",
            "LOCAL",
            "CURSOR",
            "WITH",
            "HOLD",
            "é",
            "1",
            "true",
            "EXPLAIN",
            "DECLARE",
            "COPY",
            "FROM",
            "STDIN",
            "TIME",
            "ZONE",
            "DEALLOCATE",
            "PREPARE",
            "ALL",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut sql = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for i in 0..(seed % 24) {
                let r = seed.rotate_left(i as u32 * 7) as usize;
                sql.push_str(WORDS[r % WORDS.len()]);
                if r % 3 == 0 {
                    sql.push(' ');
                }
            }
            check(&sql);
        }
    }

    /// Splitting as it was before the single pass: the head parsed from a cursor of its own,
    /// then all of the statement's tokens read again by the scanning pass from its start.
    fn two_pass_split(sql: &str, standard_strings: bool) -> Vec<Statement<'_>> {
        let mut lex = Lexer::with_standard_conforming_strings(sql, standard_strings);
        let mut out = Vec::new();
        loop {
            let start = lex.offset();
            let mut cursor = Cursor::new(lex.clone());
            let Some(first) = cursor.next() else {
                if lex.next().is_none() {
                    return out;
                }
                continue;
            };
            let head = parse_head(first, || cursor, 0);
            let again = lex.next().unwrap();
            assert_eq!(again, first);
            let (pin, end) = Scanner::new(head.flavor, 0, standard_strings).run(again, &mut lex);
            let text = sql[start..end].trim_matches(|c: char| c.is_ascii() && is_space(c as u8));
            let info = StatementInfo {
                kind: head.kind,
                pin: head.pin.or(pin),
            };
            out.push(Statement { text, info });
        }
    }

    /// Inputs for comparing implementations: the classification table, every prefix and
    /// suffix of the tricky inputs, and random soup.
    fn corpus() -> Vec<String> {
        let mut all: Vec<String> = cases().iter().map(|(sql, _, _)| sql.to_string()).collect();
        for sql in TRICKY {
            for (i, _) in sql.char_indices() {
                all.push(sql[..i].to_owned());
                all.push(sql[i..].to_owned());
            }
        }
        const WORDS: &[&str] = &[
            "'",
            "\"",
            "$",
            "$$",
            "$a$",
            ";",
            "/*",
            "*/",
            "--",
            "\n",
            "\\",
            "E'",
            "U&",
            "(",
            ")",
            ",",
            ".",
            "=",
            " ",
            "SET",
            "LISTEN",
            "INTO",
            "TEMP",
            "DO",
            "BEGIN",
            "ATOMIC",
            "END",
            "CASE",
            "CREATE",
            "FUNCTION",
            "EXECUTE",
            "pg_advisory_lock",
            "set_config",
            "pg_temp",
            "pg_catalog",
            "TO",
            "LOCAL",
            "CURSOR",
            "HOLD",
            "é",
            "1",
            "1.5e3",
            "true",
            "EXPLAIN",
            "COPY",
            "FROM",
            "STDIN",
            "INSERT",
            "x",
            "SELECT",
            "THEN",
            ">>",
            "<<",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut sql = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for i in 0..(seed % 24) {
                let r = seed.rotate_left(i as u32 * 7) as usize;
                sql.push_str(WORDS[r % WORDS.len()]);
                if r % 3 == 0 {
                    sql.push(' ');
                }
            }
            all.push(sql);
        }
        all
    }

    /// `word_kind` as it was: a comparison with every keyword of the word's length.
    fn reference_word_kind(t: &Token<'_>) -> Word {
        let is = |kw: &str| t.text.eq_ignore_ascii_case(kw);
        match t.text.len() {
            3 if is("end") => Word::End,
            4 if is("into") => Word::Into,
            4 if is("then") || is("else") || is("loop") => Word::StatementStart,
            4 if is("case") => Word::Case,
            5 if is("begin") => Word::Begin,
            5 if is("merge") => Word::InsertOrMerge,
            6 if is("insert") => Word::InsertOrMerge,
            6 if is("atomic") => Word::Atomic,
            7 if is("execute") => Word::Execute,
            10 if is("pg_catalog") => Word::PgCatalog,
            10 if is("set_config") => Word::SetConfig,
            16 | 20 | 23 | 27 if ADVISORY_LOCKS.iter().any(|f| is(f)) => Word::AdvisoryLock,
            _ => Word::Plain,
        }
    }

    #[test]
    fn word_kinds_match_comparing_every_keyword() {
        let mut words: Vec<String> = [
            "end",
            "into",
            "then",
            "else",
            "loop",
            "case",
            "begin",
            "merge",
            "insert",
            "atomic",
            "execute",
            "pg_catalog",
            "set_config",
            "pg_advisory_lock",
            "pg_advisory_lock_shared",
            "pg_try_advisory_lock",
            "pg_try_advisory_lock_shared",
            "pg_advisory_xact_lock",
            "ent",
            "Into",
            "thEn",
            "ELSE",
            "lOOp",
            "cast",
            "begins",
            "merges",
            "inserT",
            "x",
            "pg_catalog_",
            "set_confiG",
            "PG_ADVISORY_LOCK",
            "pg_advisory_locks",
            "é",
            "éend",
        ]
        .iter()
        .map(|w| w.to_string())
        .collect();
        for sql in corpus() {
            words.extend(
                Lexer::new(&sql)
                    .filter(|t| t.kind == TokenKind::Word)
                    .map(|t| t.text.to_owned()),
            );
        }
        for w in &words {
            for w in [w.clone(), w.to_ascii_uppercase(), w.to_ascii_lowercase()] {
                let t = Lexer::new(&w).next().unwrap_or(Token {
                    kind: TokenKind::Word,
                    text: &w,
                    start: 0,
                });
                let t = Token {
                    kind: TokenKind::Word,
                    ..t
                };
                assert_eq!(word_kind(&t), reference_word_kind(&t), "{w:?}");
            }
        }
    }

    #[test]
    fn inert_plain_words_change_nothing() {
        let recents = [
            Recent::Other,
            Recent::Dot { catalog: false },
            Recent::Dot { catalog: true },
            Recent::Word(Word::Plain),
            Recent::Word(Word::PgCatalog),
            Recent::Word(Word::Into),
            Recent::Word(Word::InsertOrMerge),
            Recent::Word(Word::Execute),
            Recent::Word(Word::StatementStart),
            Recent::Word(Word::Begin),
            Recent::Word(Word::Atomic),
            Recent::Word(Word::Case),
            Recent::Word(Word::End),
            Recent::Word(Word::AdvisoryLock),
            Recent::Word(Word::SetConfig),
        ];
        let mut checked = 0;
        for sql in corpus().iter().step_by(7) {
            let mut lex = Lexer::new(sql);
            while let Some(t) = lex.next() {
                if t.kind != TokenKind::Word || word_kind(&t) != Word::Plain {
                    continue;
                }
                for flavor in [Flavor::Plain, Flavor::Create, Flavor::Routine, Flavor::Do] {
                    for depth in [0, 1] {
                        for recent in recents {
                            let mut s = Scanner::new(flavor, depth, true);
                            s.recent = recent;
                            s.parens = 1;
                            s.blocks = 1;
                            if !s.plain_words_inert() {
                                continue;
                            }
                            let kept = s.on_word(&t, Word::Plain, &lex);
                            assert_eq!(kept, Recent::Word(Word::Plain), "{sql:?} {t:?}");
                            assert_eq!((s.parens, s.blocks, s.pin), (1, 1, None), "{sql:?} {t:?}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn single_pass_agrees_with_two_passes() {
        for sql in corpus() {
            for standard_strings in [true, false] {
                assert_eq!(
                    split_statements_with(&sql, standard_strings),
                    two_pass_split(&sql, standard_strings),
                    "{sql:?}"
                );
            }
        }
    }

    /// `cargo test --release -- --ignored --nocapture bench_classify`
    #[test]
    #[ignore]
    fn bench_classify() {
        use std::hint::black_box;
        use std::time::Instant;
        let inputs = [
            ("select", "SELECT id, name, email FROM users WHERE account_id = $1 AND status = 'active' LIMIT 50"),
            ("set", "SET statement_timeout = '5s'"),
            ("begin", "BEGIN"),
            ("insert", "INSERT INTO events (kind, payload, created_at) VALUES ($1, $2, now()) RETURNING id"),
        ];
        for (label, sql) in inputs {
            let n = 2_000_000u32;
            for _ in 0..n / 10 {
                black_box(classify(black_box(sql)));
            }
            let t = Instant::now();
            for _ in 0..n {
                black_box(classify(black_box(sql)));
            }
            let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
            println!("classify {label:7} ({:3} bytes): {ns:7.1} ns", sql.len());
        }
        let multi = "SET search_path = app; SELECT 1; SELECT pg_advisory_xact_lock(7); COMMIT";
        let n = 1_000_000u32;
        let t = Instant::now();
        for _ in 0..n {
            black_box(split_statements(black_box(multi)));
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
        println!(
            "split_statements ({} bytes, 4 statements): {ns:7.1} ns",
            multi.len()
        );
    }
}
