//! Statement-level analysis: parse with PostgreSQL's own grammar (pg_query), decide each
//! statement's kind and verdict, and combine the statements of a string. The result is an
//! [`Analysis`], independent of the function policy; [`Analysis::finish`] applies one.

use std::sync::Arc;

use pg_query::protobuf::{self, TransactionStmtKind, VariableSetKind};
use pg_query::{NodeEnum, ParserOptions};
use serde::Serialize;

use super::deep;
use super::policy::{builtin_writer, FuncName, FunctionPolicy};
use super::types::{Access, AccessReason, Classification, ParsedKind};
use super::walk::{Facts, Walk};

/// `CURSOR_OPT_HOLD` from PostgreSQL's parsenodes.h.
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// A string's classification before the function policy is applied.
#[derive(Debug, Clone)]
pub(crate) struct Analysis {
    /// The classification if no user function writes.
    pub(crate) base: Classification,
    /// The user-function calls the policy must check; `None` when the policy cannot
    /// change the result (no such calls, or a write anyway).
    pub(crate) recheck: Option<Arc<Recheck>>,
}

/// What the function policy needs to (re)decide a classification.
#[derive(Debug)]
pub(crate) struct Recheck {
    /// Calls that run, deduplicated; none of them a built-in writer.
    pub(crate) calls: Box<[FuncName]>,
    /// The reason when no call writes (the access is then read-only).
    pub(crate) read_reason: AccessReason,
}

impl Recheck {
    /// Bytes held, for cache accounting.
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of::<Recheck>()
            + 16
            + self.calls.iter().map(FuncName::heap_bytes).sum::<usize>()
    }

    /// `current` (a classification of the same text) under `policy`. Reuses `current`
    /// when nothing changes.
    pub(crate) fn apply(
        &self,
        current: &Arc<Classification>,
        policy: &FunctionPolicy,
    ) -> Arc<Classification> {
        let (access, reason) = match policy.check(&self.calls) {
            Some(reason) => (Access::Write, reason),
            None => (Access::ReadOnly, self.read_reason),
        };
        if current.access == access && current.reason == reason {
            return Arc::clone(current);
        }
        Arc::new(Classification {
            access,
            reason,
            ..Classification::clone(current)
        })
    }
}

impl Analysis {
    /// The final classification under `policy`.
    pub(crate) fn finish(&self, policy: &FunctionPolicy) -> Arc<Classification> {
        let base = Arc::new(self.base.clone());
        match &self.recheck {
            Some(recheck) => recheck.apply(&base, policy),
            None => base,
        }
    }

    fn unparseable() -> Analysis {
        Analysis {
            base: Classification::unparseable(AccessReason::Unparseable),
            recheck: None,
        }
    }
}

/// Analyses `sql` (any number of statements).
///
/// Text containing a backslash is parsed twice: as PostgreSQL does by default
/// (`standard_conforming_strings = on`) and as a session with it off would, where `\'`
/// escapes a quote and can move statement boundaries. The result is the more cautious of
/// the two, so no setting of that parameter can hide a write inside a string literal.
pub(crate) fn analyze(sql: &str) -> Analysis {
    let mut analysis = analyze_parsed(sql);
    analysis.base.session_plain = super::types::session_plain(sql);
    analysis
}

/// [`analyze`] without [`Classification::session_plain`], which is not parsed: PostgreSQL's
/// parser, once per `standard_conforming_strings` setting the text may need.
fn analyze_parsed(sql: &str) -> Analysis {
    let main = analyze_with(sql, ParserOptions::DEFAULT);
    if !sql.contains('\\') {
        return main.unwrap_or_else(|()| Analysis::unparseable());
    }
    let alternative = analyze_with(sql, ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS);
    match (main, alternative) {
        (Ok(main), Ok(alternative)) => merge(main, alternative),
        // Text only one setting accepts fails under the other, wherever it runs.
        (Ok(one), Err(())) | (Err(()), Ok(one)) => one,
        (Err(()), Err(())) => Analysis::unparseable(),
    }
}

/// The more cautious combination of two analyses of the same text.
fn merge(mut main: Analysis, other: Analysis) -> Analysis {
    let base = &mut main.base;
    base.tables.extend(other.base.tables);
    sort_dedup(&mut base.tables);
    base.functions.extend(other.base.functions);
    sort_dedup(&mut base.functions);
    if base.access == Access::Write {
        return main;
    }
    if other.base.access == Access::Write {
        base.access = Access::Write;
        base.reason = other.base.reason;
        main.recheck = None;
        return main;
    }
    let calls = [&main.recheck, &other.recheck]
        .into_iter()
        .flatten()
        .flat_map(|r| r.calls.iter().cloned())
        .collect();
    main.recheck = recheck(calls, base.reason);
    main
}

/// Parses and analyses `sql` with `options`; `Err` if the parser rejects it.
fn analyze_with(sql: &str, options: ParserOptions) -> Result<Analysis, ()> {
    // pg_query's own tree summary may panic on trees it does not expect: fail closed.
    let parsed = std::panic::catch_unwind(|| pg_query::parse(sql, options)).map_err(|_| ())?;
    match parsed {
        Ok(result) => Ok(analyze_tree(&result.protobuf)),
        // The C parser accepted the text but the tree is too deep for the protobuf
        // decoder (nesting limit 100): look at it without a tree.
        Err(pg_query::Error::Decode(_)) => Ok(deep::analyze(sql, options)),
        Err(_) => Err(()),
    }
}

/// Analyses a parsed string.
fn analyze_tree(tree: &protobuf::ParseResult) -> Analysis {
    let mut analyzer = Analyzer {
        walk: Walk::new(),
        user_calls: Vec::new(),
    };
    let parts: Vec<Part> = tree
        .stmts
        .iter()
        .map(
            |raw| match raw.stmt.as_deref().and_then(|n| n.node.as_ref()) {
                Some(node) => analyzer.statement(node, true),
                None => Part::write(ParsedKind::Unknown, AccessReason::Unparseable),
            },
        )
        .collect();
    analyzer.finish(&parts)
}

/// The verdict on one statement before the function policy.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Read-only unless a user function it calls writes.
    Read(AccessReason),
    /// Writes (or must run on the primary) whatever the policy.
    Write(AccessReason),
}

/// One statement's kind and verdict.
#[derive(Debug, Clone, Copy)]
struct Part {
    kind: ParsedKind,
    verdict: Verdict,
}

impl Part {
    fn read(kind: ParsedKind, reason: AccessReason) -> Part {
        Part {
            kind,
            verdict: Verdict::Read(reason),
        }
    }

    fn write(kind: ParsedKind, reason: AccessReason) -> Part {
        Part {
            kind,
            verdict: Verdict::Write(reason),
        }
    }
}

/// What a walk of an executed subtree found.
#[derive(Debug, Clone, Copy)]
struct Scanned {
    facts: Facts,
    /// It calls a built-in function that writes.
    write_function: bool,
}

impl Scanned {
    /// The verdict on a query (SELECT, VALUES, a COPY or EXPLAIN ANALYZE subject).
    fn query_verdict(self) -> Verdict {
        let reason = if self.facts.modifying {
            AccessReason::WritingCte
        } else if self.facts.into {
            AccessReason::SelectInto
        } else if self.facts.locking {
            AccessReason::LockingRead
        } else if self.write_function {
            AccessReason::WriteFunction
        } else {
            return Verdict::Read(AccessReason::ReadOnly);
        };
        Verdict::Write(reason)
    }
}

/// Walks statements, collecting names as it goes.
struct Analyzer {
    walk: Walk,
    /// Calls of non-built-in functions in code that runs.
    user_calls: Vec<FuncName>,
}

impl Analyzer {
    /// Walks `node`. When `runs`, its function calls execute: built-in writers are
    /// flagged and other calls kept for the policy; otherwise only names are collected.
    fn scan<T: Serialize + ?Sized>(&mut self, node: &T, runs: bool) -> Scanned {
        let start = self.walk.calls.len();
        self.walk.visit(node);
        let facts = self.walk.take_facts();
        let mut write_function = false;
        if runs {
            for call in &self.walk.calls[start..] {
                if builtin_writer(call) {
                    write_function = true;
                } else {
                    self.user_calls.push(call.clone());
                }
            }
        }
        Scanned {
            facts,
            write_function,
        }
    }

    /// Scans `node` for names and returns a write verdict.
    fn write<T: Serialize + ?Sized>(
        &mut self,
        node: &T,
        kind: ParsedKind,
        reason: AccessReason,
    ) -> Part {
        self.scan(node, false);
        Part::write(kind, reason)
    }

    /// One statement. `runs`: it executes (false under a plain EXPLAIN).
    fn statement(&mut self, node: &NodeEnum, runs: bool) -> Part {
        use ParsedKind as K;
        match node {
            NodeEnum::SelectStmt(s) => Part {
                kind: K::Select,
                verdict: self.scan(s, runs).query_verdict(),
            },
            NodeEnum::InsertStmt(s) => self.write(s, K::Insert, AccessReason::Write),
            NodeEnum::UpdateStmt(s) => self.write(s, K::Update, AccessReason::Write),
            NodeEnum::DeleteStmt(s) => self.write(s, K::Delete, AccessReason::Write),
            NodeEnum::MergeStmt(s) => self.write(s, K::Merge, AccessReason::Write),
            NodeEnum::ExplainStmt(e) => self.explain(e, runs),
            NodeEnum::CopyStmt(c) => self.copy(c, runs),
            NodeEnum::TransactionStmt(t) => transaction(t),
            NodeEnum::VariableSetStmt(v) => set(v),
            NodeEnum::VariableShowStmt(_) => Part::read(K::Show, AccessReason::ReadOnly),
            NodeEnum::DiscardStmt(_) | NodeEnum::ConstraintsSetStmt(_) => {
                Part::write(K::Set, AccessReason::SessionState)
            }
            NodeEnum::ListenStmt(_) => Part::write(K::Listen, AccessReason::SessionState),
            NodeEnum::UnlistenStmt(_) => Part::write(K::Unlisten, AccessReason::SessionState),
            NodeEnum::NotifyStmt(_) => Part::write(K::Notify, AccessReason::Write),
            NodeEnum::PrepareStmt(p) => Part {
                kind: K::Prepare,
                ..self.inner(p.query.as_deref(), runs)
            },
            NodeEnum::ExecuteStmt(e) => self.write(e, K::Execute, AccessReason::Execute),
            NodeEnum::DeallocateStmt(_) => Part::write(K::Deallocate, AccessReason::SessionState),
            NodeEnum::DeclareCursorStmt(d) => self.declare(d, runs),
            NodeEnum::FetchStmt(_) => Part::read(K::Fetch, AccessReason::ReadOnly),
            NodeEnum::ClosePortalStmt(_) => Part::read(K::Close, AccessReason::ReadOnly),
            NodeEnum::CallStmt(c) => self.write(c, K::Call, AccessReason::Utility),
            NodeEnum::DoStmt(d) => self.write(d, K::Do, AccessReason::Utility),
            NodeEnum::LockStmt(l) => self.write(l, K::Lock, AccessReason::Utility),
            NodeEnum::TruncateStmt(t) => self.write(t, K::Ddl, AccessReason::Write),
            NodeEnum::LoadStmt(_) => Part::write(K::Utility, AccessReason::SessionState),
            other if is_utility(other) => self.write(other, K::Utility, AccessReason::Utility),
            other => self.write(other, K::Ddl, AccessReason::Ddl),
        }
    }

    /// The statement inside PREPARE, EXPLAIN, DECLARE or COPY.
    fn inner(&mut self, node: Option<&protobuf::Node>, runs: bool) -> Part {
        match node.and_then(|n| n.node.as_ref()) {
            Some(node) => self.statement(node, runs),
            None => Part::write(ParsedKind::Unknown, AccessReason::Unparseable),
        }
    }

    /// EXPLAIN runs its statement only with ANALYZE.
    fn explain(&mut self, e: &protobuf::ExplainStmt, runs: bool) -> Part {
        let analyze = e.options.iter().any(|o| option_enabled(o, "analyze"));
        let inner = self.inner(e.query.as_deref(), runs && analyze);
        let verdict = match inner.verdict {
            Verdict::Write(_) if analyze => Verdict::Write(AccessReason::ExplainAnalyzeWrite),
            _ => Verdict::Read(AccessReason::ReadOnly),
        };
        Part {
            kind: ParsedKind::Explain,
            verdict,
        }
    }

    /// COPY FROM writes; COPY TO a file or program writes on the server; COPY TO STDOUT
    /// reads (its query decides).
    fn copy(&mut self, c: &protobuf::CopyStmt, runs: bool) -> Part {
        if c.is_from {
            return self.write(c, ParsedKind::CopyFrom, AccessReason::CopyFrom);
        }
        if c.is_program || !c.filename.is_empty() {
            return self.write(c, ParsedKind::CopyTo, AccessReason::CopyToFile);
        }
        if c.query.is_some() {
            return Part {
                kind: ParsedKind::CopyTo,
                ..self.inner(c.query.as_deref(), runs)
            };
        }
        Part {
            kind: ParsedKind::CopyTo,
            verdict: self.scan(c, runs).query_verdict(),
        }
    }

    /// DECLARE CURSOR reads as its query does, unless WITH HOLD (which pins the client).
    fn declare(&mut self, d: &protobuf::DeclareCursorStmt, runs: bool) -> Part {
        let hold = d.options & CURSOR_OPT_HOLD != 0;
        let inner = self.inner(d.query.as_deref(), runs);
        let verdict = if hold {
            Verdict::Write(AccessReason::SessionState)
        } else {
            inner.verdict
        };
        Part {
            kind: ParsedKind::DeclareCursor { hold },
            verdict,
        }
    }

    /// Combines the statements of a string.
    fn finish(self, parts: &[Part]) -> Analysis {
        let kind = parts.first().map_or(ParsedKind::Empty, |p| p.kind);
        let written = parts.iter().find_map(|p| match p.verdict {
            Verdict::Write(reason) => Some(reason),
            Verdict::Read(_) => None,
        });
        let read_reason = match parts.first().map(|p| p.verdict) {
            Some(Verdict::Read(reason)) => reason,
            _ => AccessReason::ReadOnly,
        };
        let mut tables = self.walk.tables;
        sort_dedup(&mut tables);
        let mut functions: Vec<String> = self.walk.calls.iter().map(FuncName::display).collect();
        sort_dedup(&mut functions);
        let (access, reason, recheck) = match written {
            Some(reason) => (Access::Write, reason, None),
            None => (
                Access::ReadOnly,
                read_reason,
                recheck(self.user_calls, read_reason),
            ),
        };
        let base = Classification {
            access,
            reason,
            kind,
            tables,
            functions,
            statements: parts.len(),
            session_plain: false,
        };
        Analysis { base, recheck }
    }
}

/// A recheck for `calls` (none if there are none).
pub(super) fn recheck(mut calls: Vec<FuncName>, read_reason: AccessReason) -> Option<Arc<Recheck>> {
    sort_dedup(&mut calls);
    (!calls.is_empty()).then(|| {
        Arc::new(Recheck {
            calls: calls.into_boxed_slice(),
            read_reason,
        })
    })
}

pub(super) fn sort_dedup<T: Ord>(items: &mut Vec<T>) {
    items.sort_unstable();
    items.dedup();
}

/// BEGIN / START TRANSACTION / COMMIT / ROLLBACK / SAVEPOINT / ... These do not write by
/// themselves; a transaction that is not READ ONLY must start on the primary.
fn transaction(t: &protobuf::TransactionStmt) -> Part {
    use ParsedKind as K;
    use TransactionStmtKind as T;
    let control = AccessReason::TransactionControl;
    match TransactionStmtKind::try_from(t.kind) {
        Ok(T::TransStmtBegin | T::TransStmtStart) => {
            let mode = TransactionMode::of(&t.options);
            let read_only = mode.read_only == Some(true) && !mode.serializable;
            let kind = K::Begin { read_only };
            if read_only {
                Part::read(kind, control)
            } else {
                Part::write(kind, control)
            }
        }
        Ok(T::TransStmtCommit) => Part::read(K::Commit { chain: t.chain }, control),
        Ok(T::TransStmtRollback) => Part::read(K::Rollback { chain: t.chain }, control),
        Ok(T::TransStmtSavepoint) => Part::read(K::Savepoint, control),
        Ok(T::TransStmtRelease) => Part::read(K::Release, control),
        Ok(T::TransStmtRollbackTo) => Part::read(K::RollbackTo, control),
        Ok(T::TransStmtPrepare) => Part::write(K::PrepareTransaction, control),
        Ok(T::TransStmtCommitPrepared) => Part::write(K::CommitPrepared, control),
        Ok(T::TransStmtRollbackPrepared) => Part::write(K::RollbackPrepared, control),
        Ok(T::Undefined) | Err(_) => Part::write(K::Unknown, control),
    }
}

/// SET / RESET: session state, except `SET TRANSACTION` (transaction characteristics).
fn set(v: &protobuf::VariableSetStmt) -> Part {
    let multi = VariableSetKind::try_from(v.kind) == Ok(VariableSetKind::VarSetMulti);
    if !(multi && v.name == "TRANSACTION") {
        return Part::write(ParsedKind::Set, AccessReason::SessionState);
    }
    let mode = TransactionMode::of(&v.args);
    let read_only = if mode.serializable {
        Some(false)
    } else {
        mode.read_only
    };
    let kind = ParsedKind::SetTransaction { read_only };
    if read_only == Some(false) {
        Part::write(kind, AccessReason::TransactionControl)
    } else {
        Part::read(kind, AccessReason::TransactionControl)
    }
}

/// The transaction characteristics of BEGIN / START TRANSACTION / SET TRANSACTION.
#[derive(Debug, Default)]
struct TransactionMode {
    /// `Some(true)` if READ ONLY was given and READ WRITE never was.
    read_only: Option<bool>,
    /// ISOLATION LEVEL SERIALIZABLE (or a level not understood).
    serializable: bool,
}

impl TransactionMode {
    fn of(options: &[protobuf::Node]) -> TransactionMode {
        let mut mode = TransactionMode::default();
        for elem in options.iter().filter_map(def_elem) {
            let arg = elem.arg.as_deref().and_then(|a| a.node.as_ref());
            match elem.defname.as_str() {
                "transaction_read_only" => {
                    let read_only = constant_int(arg) == Some(1);
                    mode.read_only = Some(mode.read_only.unwrap_or(true) && read_only);
                }
                "transaction_isolation" => {
                    let level = constant_str(arg);
                    let standby_ok = matches!(
                        level,
                        Some("read committed" | "repeatable read" | "read uncommitted")
                    );
                    mode.serializable |= !standby_ok;
                }
                _ => {}
            }
        }
        mode
    }
}

fn def_elem(node: &protobuf::Node) -> Option<&protobuf::DefElem> {
    match node.node.as_ref() {
        Some(NodeEnum::DefElem(elem)) => Some(elem),
        _ => None,
    }
}

fn constant_int(arg: Option<&NodeEnum>) -> Option<i32> {
    match arg {
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(protobuf::a_const::Val::Ival(i)) => Some(i.ival),
            _ => None,
        },
        Some(NodeEnum::Integer(i)) => Some(i.ival),
        _ => None,
    }
}

fn constant_str(arg: Option<&NodeEnum>) -> Option<&str> {
    match arg {
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(protobuf::a_const::Val::Sval(s)) => Some(&s.sval),
            _ => None,
        },
        Some(NodeEnum::String(s)) => Some(&s.sval),
        _ => None,
    }
}

/// Whether the option `name` (e.g. EXPLAIN's `analyze`) is present and not explicitly
/// off. Values PostgreSQL would reject count as on (fail closed).
fn option_enabled(option: &protobuf::Node, name: &str) -> bool {
    let Some(elem) = def_elem(option) else {
        return false;
    };
    if !elem.defname.eq_ignore_ascii_case(name) {
        return false;
    }
    match elem.arg.as_deref().and_then(|a| a.node.as_ref()) {
        Some(NodeEnum::String(s)) => {
            !(s.sval.eq_ignore_ascii_case("false") || s.sval.eq_ignore_ascii_case("off"))
        }
        Some(NodeEnum::Integer(i)) => i.ival != 0,
        Some(NodeEnum::Boolean(b)) => b.boolval,
        arg => constant_int(arg) != Some(0),
    }
}

/// Utility commands (as opposed to DDL) that must run on the primary.
fn is_utility(node: &NodeEnum) -> bool {
    matches!(
        node,
        NodeEnum::VacuumStmt(_)
            | NodeEnum::ClusterStmt(_)
            | NodeEnum::ReindexStmt(_)
            | NodeEnum::CheckPointStmt(_)
            | NodeEnum::AlterSystemStmt(_)
    )
}
