//! Client-to-server direction: frame the client's messages and dispatch each one. It is
//! answered by Causeway (`causeway.*` commands, messages that need no server), collected
//! into a request to route (`dispatch`), or forwarded on the held server connection with a
//! [`Pending`] entry so its reply can be matched. Statement messages are in `prepared`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::link::Held;
use super::probe::ProbeKind;
use super::relay::Pending;
use super::state::{ClientState, Effect, StatementDef};
use super::{ClientStream, Session, SessionError};
use crate::protocol::encode;
use crate::protocol::extended::{self, Parse};
use crate::protocol::{tag, try_split, Message, TxStatus};
use crate::router::{FloorBook, Node};
use crate::sql::{StatementInfo, StatementKind};

/// What the client has made of its session, as the protocol sees it.
#[derive(Debug)]
pub(super) struct Frontend {
    /// Session state replayed on every server connection the client gets.
    pub state: ClientState,
    /// The transaction status of the client's last ReadyForQuery.
    pub tx: TxStatus,
    /// The client's unnamed statement.
    pub unnamed: Option<Arc<StatementDef>>,
    /// Portals bound in the current transaction: name → statement.
    pub portals: HashMap<Bytes, Arc<StatementDef>>,
    /// Drop client messages until Sync (after an error Causeway raised without a server).
    pub skip_until_sync: bool,
    /// `max_client_prepared_statements`.
    pub max_prepared: usize,
    /// `max_client_prepared_bytes`.
    pub max_prepared_bytes: usize,
    /// Named statements keep the client's names on the server (session mode: one server
    /// connection is the client's for good, so nothing needs renaming).
    pub keep_names: bool,
    /// `causeway.*` commands prepared through the extended protocol.
    pub commands: super::extended_command::Commands,
    /// The Query forwarded next was classified session-plain (`plan::Plan::plain_query`):
    /// its session-state scan is skipped. Set only around sending that one request.
    pub plain_query: bool,
}

impl Frontend {
    pub(super) fn new(
        state: ClientState,
        max_prepared: usize,
        max_prepared_bytes: usize,
        keep_names: bool,
    ) -> Frontend {
        Frontend {
            state,
            tx: TxStatus::Idle,
            unnamed: None,
            portals: HashMap::new(),
            skip_until_sync: false,
            max_prepared,
            max_prepared_bytes,
            keep_names,
            commands: Default::default(),
            plain_query: false,
        }
    }

    /// Forward one message on `held`, with its pending entry (and the causal probe behind a
    /// request that ends outside a transaction).
    pub(super) fn forward(
        &mut self,
        held: &mut Held,
        floors: &mut FloorBook,
        msg: Message,
    ) -> Result<(), SessionError> {
        if let Some(sent) = held.retry.as_mut() {
            if held.relay.guarding() || held.relay.conflicted() {
                super::io::push_kept(sent, msg.clone());
            } else {
                // A result reached the client: this read can no longer move, so nothing
                // more is kept (a long pipeline would otherwise keep every message).
                held.retry = None;
            }
        }
        match msg.tag {
            tag::QUERY => self.on_query(held, floors, msg),
            tag::PARSE => self.on_parse(held, msg),
            tag::BIND => self.on_bind(held, msg),
            tag::DESCRIBE => self.on_describe(held, msg),
            tag::CLOSE => self.on_close(held, msg),
            tag::EXECUTE => self.on_execute(held, msg),
            tag::SYNC => {
                held.started.get_or_insert_with(std::time::Instant::now);
                held.out.extend_from_slice(&msg.raw);
                if held.relay.sync_is_answered() {
                    held.relay.push(Pending::Sync);
                    held.unsynced = false;
                    append_probe(held, floors, self.tx);
                }
                Ok(())
            }
            tag::FLUSH => {
                held.out.extend_from_slice(&msg.raw);
                held.unsynced = true;
                Ok(())
            }
            tag::FUNCTION_CALL => {
                held.out.extend_from_slice(&msg.raw);
                held.relay.push(Pending::FunctionCall);
                append_probe(held, floors, self.tx);
                Ok(())
            }
            tag::COPY_DATA => {
                held.out.extend_from_slice(&msg.raw);
                Ok(())
            }
            tag::COPY_DONE | tag::COPY_FAIL => {
                held.out.extend_from_slice(&msg.raw);
                held.relay.copy_ended();
                Ok(())
            }
            other => Err(SessionError::invalid_message(other)),
        }
    }

    /// Messages that need no server connection when none is held. Returns whether handled.
    pub(super) fn answer_without_server(
        &mut self,
        msg: &Message,
        out: &mut BytesMut,
    ) -> Result<bool, SessionError> {
        match msg.tag {
            tag::TERMINATE => Err(SessionError::ClientGone),
            tag::SYNC => {
                encode::ready_for_query(out, self.tx);
                Ok(true)
            }
            tag::FLUSH | tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => Ok(true),
            tag::PARSE => self.parse_without_server(msg, out),
            tag::CLOSE => self.close_without_server(msg, out),
            _ => Ok(false),
        }
    }

    fn on_query(
        &mut self,
        held: &mut Held,
        floors: &mut FloorBook,
        msg: Message,
    ) -> Result<(), SessionError> {
        let text =
            extended::query_text(msg.body()).ok_or_else(|| SessionError::malformed("Query"))?;
        let text = crate::protocol::text(text);
        if let Some(error) = refuse_reserved_names(&text) {
            answer_query(held, self.tx, |reply| error.encode(reply));
            return Ok(());
        }
        if self.deallocate_renamed(&text) {
            answer_query(held, self.tx, |reply| {
                encode::command_complete(reply, "DEALLOCATE")
            });
            return Ok(());
        }
        // One effect per statement, in order; allocated only if some statement has one.
        let mut effects = VecDeque::new();
        // A text the classifier found session-plain has neither effects nor pins.
        if !std::mem::take(&mut self.plain_query) {
            for (i, statement) in crate::sql::statements_with(&text, true).enumerate() {
                note_statement(&mut self.state, held, &statement.info);
                let effect = Effect::of(&statement.info, statement.text);
                if effect != Effect::None {
                    effects.resize(i, Effect::None);
                    effects.push_back(effect);
                }
            }
        }
        // A simple Query destroys the unnamed statement.
        self.unnamed = None;
        held.has_unnamed = false;
        held.started.get_or_insert_with(std::time::Instant::now);
        held.out.extend_from_slice(&msg.raw);
        held.relay.push(Pending::Query { effects });
        append_probe(held, floors, self.tx);
        Ok(())
    }

    /// SQL `DEALLOCATE name` alone in its query, for a statement the client prepared through
    /// the protocol (libpq before 17 and psycopg close statements this way): the server
    /// knows it under Causeway's name, so Causeway forgets it and answers itself.
    fn deallocate_renamed(&mut self, text: &str) -> bool {
        if self.keep_names
            || !text
                .trim_start()
                .get(..10)
                .is_some_and(|w| w.eq_ignore_ascii_case("deallocate"))
        {
            return false;
        }
        let mut statements = crate::sql::statements_with(text, true);
        let (Some(only), None) = (statements.next(), statements.next()) else {
            return false;
        };
        let Effect::Deallocate { name } = Effect::of(&only.info, only.text) else {
            return false;
        };
        let protocol_level = self.state.statements.contains_key(name.as_bytes())
            && !self.state.sql_prepared.contains_key(&name);
        if protocol_level {
            self.state.statements.remove(name.as_bytes());
        }
        protocol_level
    }

    fn on_execute(&mut self, held: &mut Held, msg: Message) -> Result<(), SessionError> {
        let portal = extended::execute_portal(msg.body())
            .ok_or_else(|| SessionError::malformed("Execute"))?;
        let effect = match self.portals.get(portal) {
            Some(def) => {
                note_statement(&mut self.state, held, &def.info);
                def.effect.clone()
            }
            None => Effect::None,
        };
        forward_as(held, msg, Pending::Execute { effect });
        Ok(())
    }
}

/// SQL `PREPARE`/`DEALLOCATE` of a name in Causeway's `_cw_` namespace: another client of
/// the same user could otherwise drop a statement Causeway prepared on a shared server
/// connection, and its owner would fail with 26000 there.
fn refuse_reserved_names(text: &str) -> Option<crate::protocol::encode::PgError> {
    // Runs on every Query: look only where an underscore is.
    let bytes = text.as_bytes();
    let mentions = memchr::memchr_iter(b'_', bytes).any(|i| {
        bytes
            .get(i..i + 4)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"_cw_"))
    });
    if !mentions {
        return None;
    }
    let reserved = crate::sql::statements_with(text, true).any(|statement| {
        match Effect::of(&statement.info, statement.text) {
            Effect::Prepare { name, .. } | Effect::Deallocate { name } => {
                name.to_ascii_lowercase().starts_with("_cw_")
            }
            _ => false,
        }
    });
    reserved.then(|| {
        crate::protocol::encode::PgError::error(
            crate::protocol::SqlState::RESERVED_NAME,
            "prepared statement names starting with \"_cw_\" are reserved for Causeway",
        )
        .with_hint("name the statement otherwise")
    })
}

/// Answer a Query in Causeway's place: what `write` writes, then ReadyForQuery, in order
/// with the replies owed before it.
fn answer_query(held: &mut Held, tx: TxStatus, write: impl FnOnce(&mut BytesMut)) {
    let mut reply = BytesMut::new();
    write(&mut reply);
    encode::ready_for_query(&mut reply, tx);
    held.relay.push(Pending::Synthetic(reply.freeze()));
}

/// What [`Session::handle_now`] left to do.
enum Now {
    Done,
    /// The message, for the general path.
    Message(Message),
    /// The rest of a routed request.
    Later(super::dispatch::Later),
}

/// Forward `msg` unchanged with its pending entry.
pub(super) fn forward_as(held: &mut Held, msg: Message, pending: Pending) {
    held.unsynced = true;
    held.out.extend_from_slice(&msg.raw);
    held.relay.push(pending);
}

impl<C: ClientStream> Session<C> {
    /// Frame and handle every complete message the client has sent.
    pub(super) async fn on_client_data(&mut self) -> Result<(), SessionError> {
        while !self.routing.stalled {
            // Refuse an unknown message type before waiting for a body it announces.
            if let Some(&first) = self.inbuf.first() {
                if !crate::protocol::is_frontend_tag(first) {
                    return Err(SessionError::invalid_message(first));
                }
            }
            let Some(msg) = try_split(&mut self.inbuf, self.max_message)? else {
                break;
            };
            match self.handle_now(msg)? {
                Now::Done => {}
                Now::Message(msg) => Box::pin(self.on_client_message(msg)).await?,
                Now::Later(later) => {
                    let was_pinned = self.front.state.pin.is_some();
                    Box::pin(self.run_later(later)).await?;
                    self.count_new_pin(was_pinned);
                }
            }
            if let Some(held) = self.link.server.as_mut() {
                held.relay.emit_ready_synthetic(&mut self.to_client);
            }
        }
        Ok(())
    }

    /// Handle a client message at once when nothing on its way has to wait: it is no
    /// `causeway.*` command, and a server connection is held, or idle in the pool and
    /// already in the client's state; a routed request is routed at once when its route
    /// needs no wait ([`Session::dispatch_now`]). Gives the message, or what is left of
    /// its request, back otherwise. Most messages take this path, which skips the nested
    /// futures of the general one.
    fn handle_now(&mut self, msg: Message) -> Result<Now, SessionError> {
        let command = msg.tag == tag::QUERY
            && extended::query_text(msg.body()).is_none_or(crate::hints::mentions_parameter);
        let routed = self.routing.enabled && !self.keeps_server(msg.tag);
        if routed && !command && !self.routing.over_budget(&msg) {
            // Collected for routing, as `route_client_message` would: only the message that
            // ends the request is routed.
            let ends = super::dispatch::ends_request(msg.tag);
            self.routing.collect(msg);
            if !ends {
                return Ok(Now::Done);
            }
            let was_pinned = self.front.state.pin.is_some();
            let later = self.dispatch_now()?;
            self.count_new_pin(was_pinned);
            return Ok(match later {
                super::dispatch::Later::Nothing => Now::Done,
                later => Now::Later(later),
            });
        }
        if command || self.front.skip_until_sync || routed {
            return Ok(Now::Message(msg));
        }
        if self.front.commands.claims(&msg)
            || (self.link.server.is_none() && !self.acquire_now(&msg))
        {
            return Ok(Now::Message(msg));
        }
        let was_pinned = self.front.state.pin.is_some();
        self.forward_message(msg)?;
        self.count_new_pin(was_pinned);
        Ok(Now::Done)
    }

    /// Handle one complete client message the fast path gave back.
    async fn on_client_message(&mut self, msg: Message) -> Result<(), SessionError> {
        let was_pinned = self.front.state.pin.is_some();
        let result = self.route_client_message(msg).await;
        self.count_new_pin(was_pinned);
        result
    }

    async fn route_client_message(&mut self, msg: Message) -> Result<(), SessionError> {
        if self.answer_causeway_command(&msg).await? {
            return Ok(());
        }
        if self.routing.enabled && !self.keeps_server(msg.tag) {
            // Collect the whole request, then route it as one; a request too large to keep
            // goes to the primary, and the rest of it follows there as it comes.
            let ends = super::dispatch::ends_request(msg.tag) || self.routing.over_budget(&msg);
            self.routing.collect(msg);
            if ends {
                self.dispatch_batch().await?;
            }
            return Ok(());
        }
        self.handle_message(msg, Node::Primary).await
    }

    /// Whether a message with tag `t` must use the held server connection: inside a
    /// transaction, when pinned, in session mode, within an extended-protocol sequence not
    /// yet ended by Sync, a Sync or Flush, or COPY data. Any other request is routed afresh, after the
    /// held connection is released: it may belong to another session (DESIGN.md §3).
    pub(super) fn keeps_server(&self, t: u8) -> bool {
        if self.link.session_mode || self.front.state.pin.is_some() {
            return true;
        }
        // An extended-protocol sequence not yet ended by Sync (e.g. Parse/Describe/Flush,
        // then Bind/Execute/Sync) is one implicit transaction: it stays on its server.
        // Sync and Flush on their own run nothing, and COPY data belongs to the COPY in
        // progress (an extended-protocol COPY's client sends Sync after CopyDone); when a
        // request is being collected, they are part of it.
        let bare = self.routing.batch.is_empty()
            && matches!(
                t,
                tag::SYNC | tag::FLUSH | tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL
            );
        self.link
            .server
            .as_ref()
            .is_some_and(|held| !self.front.tx.is_idle() || held.unsynced || bare)
    }

    /// Handle one message of a request whose node is decided.
    pub(super) async fn handle_message(
        &mut self,
        msg: Message,
        node: Node,
    ) -> Result<(), SessionError> {
        if self.front.skip_until_sync {
            // An error Causeway raised itself ended this extended-protocol batch.
            if msg.tag != tag::SYNC {
                return Ok(());
            }
            self.front.skip_until_sync = false;
        }
        if self.front.commands.claims(&msg) {
            return self.answer_extended_command(&msg).await;
        }
        if self.link.server.is_none()
            && self
                .front
                .answer_without_server(&msg, &mut self.to_client)?
        {
            return Ok(());
        }
        self.acquire(node).await?;
        self.forward_message(msg)
    }

    pub(super) fn forward_message(&mut self, msg: Message) -> Result<(), SessionError> {
        if !self.front.commands.is_empty() {
            self.front.commands.forget_replaced(&msg);
        }
        if matches!(msg.tag, tag::QUERY | tag::SYNC | tag::FUNCTION_CALL) {
            // A new request: one cancel may be forwarded for it.
            self.link.cancel.rearm();
        }
        match self.link.server.as_mut() {
            Some(held) => {
                held.state_only = self.routing.state_only;
                held.keyed = self.routing.request.key.is_some();
                self.front.forward(held, &mut self.routing.floors, msg)
            }
            None => Ok(()),
        }
    }

    /// Count a pin that the message just handled made (`causeway_pins_total`).
    fn count_new_pin(&self, was_pinned: bool) {
        if let (false, Some(reason)) = (was_pinned, self.front.state.pin) {
            self.ctx.metrics.pinned(reason.label());
            tracing::debug!(?reason, "client pinned to its server connection");
        }
    }

    /// Hold an idle primary connection that needs no state sync, if `msg` needs a server
    /// connection and one is available at once.
    fn acquire_now(&mut self, msg: &Message) -> bool {
        let needs_server = match msg.tag {
            tag::QUERY | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::FUNCTION_CALL => true,
            // Only the unnamed statement needs a server now (see parse_without_server).
            tag::PARSE => Parse::decode(msg.body()).is_some_and(|p| p.name.is_empty()),
            _ => false,
        };
        // While paused, the general path waits at the pause gate.
        needs_server && !self.ctx.console.pause.is_paused() && self.acquire_in_sync(Node::Primary)
    }
}

/// Note what a statement about to run does beyond its result: a pin, COPY FROM STDIN (no
/// probe may follow), the bounds of a transaction block (where the probe goes).
fn note_statement(state: &mut ClientState, held: &mut Held, info: &StatementInfo) {
    if let Some(reason) = info.pin {
        state.pin(reason);
    }
    held.skip_probe |= is_copy_in(info);
    let (begins, ends) = transaction_bounds(info);
    held.begins_tx |= begins;
    held.ends_tx |= ends;
}

/// A statement that puts the server in COPY FROM STDIN mode.
fn is_copy_in(info: &StatementInfo) -> bool {
    matches!(info.kind, StatementKind::Copy { from_stdin: true })
}

/// Append the causal probe behind the request just sent (DESIGN.md §1). After a COPY FROM
/// STDIN nothing may follow until the copy ends, so the floor becomes unknown instead and
/// the next request on the primary re-establishes it.
///
/// Inside a transaction block the probe waits for the request that ends it: a query of
/// its own right after BEGIN would count as the transaction's first statement (and break
/// a following `SET TRANSACTION`). `tx` is the status before this request.
fn append_probe(held: &mut Held, floors: &mut FloorBook, tx: TxStatus) {
    let begins = std::mem::take(&mut held.begins_tx);
    let ends = std::mem::take(&mut held.ends_tx);
    let Some(kind) = held.probe else {
        return;
    };
    if kind == ProbeKind::Primary && !held.keyed {
        // The connection's own request: a monitor sample of the primary taken after its
        // ReadyForQuery covers it (`Session::on_ready`).
        held.skip_probe = false;
        return;
    }
    if held.state_only && !begins && !ends {
        // SET, RESET, DISCARD: no data read or written, nothing for a floor to cover.
        return;
    }
    if std::mem::take(&mut held.skip_probe) {
        floors.forget(crate::router::Unknown::Position);
        return;
    }
    let ends_outside = (tx.is_idle() && !begins) || ends;
    if !ends_outside {
        return;
    }
    kind.encode(&mut held.out);
    held.relay.push(Pending::Probe(kind));
    // The probe is a simple Query, which destroys the unnamed statement: the client's is
    // parsed again before its next use (PQprepare "" then PQexecPrepared "" in two requests).
    held.has_unnamed = false;
}

/// Whether a statement begins or ends a transaction block.
fn transaction_bounds(info: &StatementInfo) -> (bool, bool) {
    match info.kind {
        StatementKind::Begin { .. } => (true, false),
        StatementKind::Commit { chain } | StatementKind::Rollback { chain } => (chain, !chain),
        StatementKind::PrepareTransaction => (false, true),
        _ => (false, false),
    }
}
