//! What a collected request runs, as far as routing is concerned: every Query text, every
//! Parse text and the statement behind every Bind, classified (long texts on a blocking
//! thread), with their hints and tables.

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::classify::Classification;
use crate::context::Context;
use crate::hints::Hints;
use crate::protocol::extended::{Bind, Parse};
use crate::protocol::{extended, tag, Message};
use crate::router::policy::merge_hints;

use super::frontend::Frontend;
use super::state::StatementDef;

/// Statements at least this long are classified on a blocking thread: a megabyte of SQL
/// takes long enough to stall every session (and the replica monitor, whose samples would
/// then look stale) sharing this runtime thread.
const CLASSIFY_OFF_THREAD: usize = 64 * 1024;

/// What a collected request runs.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub read_only: bool,
    /// Runs or describes a statement (Query, Describe, Execute, FunctionCall); a batch of
    /// only Parse/Bind/Close reads no data, so its floor need not be read or raised.
    pub reads: bool,
    pub hints: Hints,
    pub tables: Vec<String>,
    /// Reads a node's own state (`pg_stat_activity`, `pg_backend_pid()`, ...): the primary
    /// answers for the client's session, unless a hint says otherwise.
    pub node_local: bool,
    /// Every statement only changes session settings (`SET`, `RESET`, `DISCARD`): it reads
    /// and writes no data, so its request neither needs nor moves a causal floor.
    pub state_only: bool,
    /// Some text did not parse (it goes to the primary, counted as `unparseable`).
    pub unparseable: bool,
    /// It begins a read-write transaction block (counted as `transaction`: the block stays
    /// on the primary).
    pub begins: bool,
    /// The request is one Query whose text leaves session state alone
    /// ([`Classification::session_plain`]): forwarding it needs no session-state scan.
    pub plain_query: bool,
}

/// Classify what `batch` runs.
pub(super) async fn plan(ctx: &Context, front: &Frontend, batch: &[Message]) -> Plan {
    if let Some(plan) = plan_now(ctx, front, batch) {
        return plan;
    }
    let (mut plan, texts) = start(front, batch);
    let collect_tables = ctx.rules.match_tables();
    for text in texts {
        let class = if text.sql.len() >= CLASSIFY_OFF_THREAD {
            let classifier = ctx.classifier.clone();
            let owned = text.sql.clone().into_owned();
            match tokio::task::spawn_blocking(move || classifier.classify(&owned)).await {
                Ok(class) => class,
                Err(_) => ctx.classifier.classify(&text.sql),
            }
        } else {
            text.classify(ctx)
        };
        note(&mut plan, &class, &text.sql, collect_tables);
    }
    finish(plan, batch)
}

/// [`plan`] on this thread, when no text is long enough to be classified on a blocking
/// one (`None` then).
pub(super) fn plan_now(ctx: &Context, front: &Frontend, batch: &[Message]) -> Option<Plan> {
    let (mut plan, texts) = start(front, batch);
    if texts.iter().any(|t| t.sql.len() >= CLASSIFY_OFF_THREAD) {
        return None;
    }
    let collect_tables = ctx.rules.match_tables();
    for text in texts {
        let class = text.classify(ctx);
        note(&mut plan, &class, &text.sql, collect_tables);
    }
    Some(finish(plan, batch))
}

/// The plan before any text is classified, and the texts.
fn start<'a>(front: &'a Frontend, batch: &'a [Message]) -> (Plan, Texts<'a>) {
    let mut plan = Plan {
        read_only: true,
        plain_query: true,
        ..Plan::default()
    };
    let texts = texts(front, batch, &mut plan);
    plan.state_only = !texts.is_empty() && !batch.iter().any(|m| m.tag == tag::FUNCTION_CALL);
    (plan, texts)
}

/// Adds what one classified text runs to `plan`.
fn note(plan: &mut Plan, class: &Classification, text: &str, collect_tables: bool) {
    // `BEGIN READ ONLY` classifies as read-only: its whole transaction runs on one
    // replica (DESIGN.md §2).
    if !class.is_read_only() {
        plan.read_only = false;
    }
    plan.state_only &= only_settings(class);
    plan.plain_query &= class.session_plain;
    plan.unparseable |= class.reason == crate::classify::AccessReason::Unparseable;
    plan.begins |= matches!(
        class.kind,
        crate::classify::ParsedKind::Begin { read_only: false }
    );
    let reads_setting = class.kind == crate::classify::ParsedKind::Show
        || class
            .functions
            .iter()
            .any(|f| f.ends_with("current_setting"));
    plan.node_local |= crate::router::node_local::reads_node_state(&class.tables, &class.functions)
        || (reads_setting && crate::router::node_local::names_standby_setting(text));
    if collect_tables {
        plan.tables.extend(class.tables.iter().cloned());
    }
    merge_hints(&mut plan.hints, crate::hints::parse(text));
}

/// The plan once every text is classified.
fn finish(mut plan: Plan, batch: &[Message]) -> Plan {
    plan.plain_query &= matches!(batch, [only] if only.tag == tag::QUERY);
    if batch.last().is_some_and(|m| m.tag == tag::FLUSH) {
        // The rest of this sequence (up to its Sync) must run on the same server
        // connection and could write: only the primary can take whatever comes.
        plan.read_only = false;
    }
    plan
}

/// Whether a classified string is one statement that only changes session settings: a
/// `SET`/`RESET`/`DISCARD`, or a `SELECT` of nothing but `set_config` calls (no table, no
/// other function).
fn only_settings(class: &crate::classify::Classification) -> bool {
    use crate::classify::{AccessReason, ParsedKind};
    let set_config = |f: &String| f == "set_config" || f == "pg_catalog.set_config";
    class.statements == 1
        && match class.kind {
            ParsedKind::Set => class.reason == AccessReason::SessionState,
            ParsedKind::Select => {
                class.tables.is_empty()
                    && !class.functions.is_empty()
                    && class.functions.iter().all(set_config)
            }
            _ => false,
        }
}

/// The statement texts a batch runs, borrowed from it and from the client's statements
/// (most requests run one: no allocation); notes in `plan` whether it reads (or calls a
/// function, which is never read-only).
fn texts<'a>(front: &'a Frontend, batch: &'a [Message], plan: &mut Plan) -> Texts<'a> {
    let mut texts = Texts::new();
    // A Parse of the unnamed statement in this batch replaces the client's (its text is
    // already among `texts`).
    let mut unnamed = front.unnamed.as_ref();
    let mut bound: SmallVec<[&'a Arc<StatementDef>; 2]> = SmallVec::new();
    for msg in batch {
        plan.reads |= matches!(
            msg.tag,
            tag::QUERY | tag::DESCRIBE | tag::EXECUTE | tag::FUNCTION_CALL
        );
        let text = match msg.tag {
            tag::QUERY => extended::query_text(msg.body()).map(Text::of),
            tag::PARSE => Parse::decode(msg.body()).map(|p| {
                if !p.name.is_empty() {
                    return Text::of(p.query);
                }
                // The same text parsed again keeps the client's unnamed statement
                // (`Frontend::on_parse`), and with it the statement's memo.
                match std::mem::take(&mut unnamed).filter(|def| def.query == p.query) {
                    Some(def) => Text::prepared(def),
                    None => Text::of(p.query),
                }
            }),
            tag::BIND => Bind::decode(msg.body()).and_then(|b| {
                let def = if b.statement.is_empty() {
                    unnamed
                } else {
                    front.state.statements.get(b.statement)
                }?;
                // Each distinct statement once per request, however often it is bound
                // (a pipeline may bind a large statement thousands of times).
                if bound.iter().any(|d| Arc::ptr_eq(d, def)) {
                    return None;
                }
                bound.push(def);
                Some(Text::prepared(def))
            }),
            tag::FUNCTION_CALL => {
                plan.read_only = false;
                None
            }
            _ => None,
        };
        if let Some(text) = text {
            texts.push(text);
        }
    }
    texts
}

/// The texts of one request.
type Texts<'a> = SmallVec<[Text<'a>; 2]>;

/// A statement text a request runs, and the prepared statement it comes from, if any.
struct Text<'a> {
    sql: Cow<'a, str>,
    def: Option<&'a Arc<StatementDef>>,
}

impl<'a> Text<'a> {
    fn of(bytes: &'a [u8]) -> Text<'a> {
        Text {
            sql: crate::protocol::text(bytes),
            def: None,
        }
    }

    /// The text of a prepared statement, classified through its memo.
    fn prepared(def: &'a Arc<StatementDef>) -> Text<'a> {
        Text {
            sql: crate::protocol::text(&def.query),
            def: Some(def),
        }
    }

    /// Its classification: through the prepared statement's memo, else the cache.
    fn classify(&self, ctx: &Context) -> Arc<Classification> {
        match self.def {
            Some(def) => ctx.classifier.classify_memo(&self.sql, &def.class),
            None => ctx.classifier.classify(&self.sql),
        }
    }
}

/// Whether a batch needs a server at all: one made only of messages Causeway answers
/// itself (Sync, Flush, Terminate, named Parse) needs no routing decision.
pub(super) fn needs_server(batch: &[Message]) -> bool {
    batch.iter().any(|m| match m.tag {
        tag::SYNC | tag::FLUSH | tag::TERMINATE => false,
        tag::PARSE => Parse::decode(m.body()).is_none_or(|p| p.name.is_empty()),
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::frame;
    use crate::session::state::{ClientState, StatementDef};

    fn bind(statement: &str) -> Message {
        let body = format!("\0{statement}\0\0\0\0\0\0\0");
        Message {
            tag: tag::BIND,
            raw: frame::build(tag::BIND, body.as_bytes()),
        }
    }

    #[test]
    fn a_statement_bound_many_times_is_classified_once() {
        let mut front = Frontend::new(ClientState::new(Vec::new()), 10, 1 << 20, false);
        let big = Arc::new(StatementDef::new(b"SELECT 1", b"\0\0"));
        front.state.statements.insert(Bytes::from_static(b"s"), big);
        let batch: Vec<Message> = (0..5000).map(|_| bind("s")).collect();
        let mut plan = Plan::default();
        let texts = texts(&front, &batch, &mut plan);
        let sql: Vec<&str> = texts.iter().map(|t| &*t.sql).collect();
        assert_eq!(sql, ["SELECT 1"]);
        assert!(
            texts[0].def.is_some(),
            "classified through the statement's memo"
        );
    }
}
