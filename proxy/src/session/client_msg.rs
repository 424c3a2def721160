//! Client-to-server direction: each client message is forwarded, rewritten or answered by
//! Causeway, and gets a [`Pending`] entry so its reply can be matched. Named prepared
//! statements are renamed to content-derived names and prepared lazily, once per server
//! connection; SQL statements with session effects are classified here.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::relay::Pending;
use super::route::Target;
use super::state::{Effect, StatementDef};
use super::{Held, Session, SessionError};
use crate::protocol::encode::{self, PgError};
use crate::protocol::extended::{self, Bind, Parse, Target as Named};
use crate::protocol::{tag, Message, SqlState};
use crate::router::Floor;

impl Session {
    /// Handle one complete client message.
    pub(super) async fn on_client_message(&mut self, msg: Message) -> Result<(), SessionError> {
        let was_pinned = self.state.pin.is_some();
        let result = self.route_client_message(msg).await;
        if let (false, Some(reason)) = (was_pinned, self.state.pin) {
            self.ctx.metrics.pinned(pin_label(reason));
            tracing::debug!(?reason, "client pinned to its server connection");
        }
        result
    }

    /// Handle a client message at once when nothing on its way has to wait: it is no
    /// `causeway.*` command, there is no routing decision to make, and a server connection
    /// is held, or idle in the pool and already in the client's state. Gives the message
    /// back for [`Session::on_client_message`] otherwise. Most messages take this path,
    /// which skips the nested futures of the general one.
    pub(super) fn handle_now(&mut self, msg: Message) -> Result<Option<Message>, SessionError> {
        let command = msg.tag == tag::QUERY
            && extended::query_text(msg.body()).is_none_or(crate::hints::mentions_parameter);
        if command || self.skip_until_sync || (self.routing_enabled() && !self.keeps_server()) {
            return Ok(Some(msg));
        }
        if self.server.is_none() && !self.acquire_now(&msg) {
            return Ok(Some(msg));
        }
        let was_pinned = self.state.pin.is_some();
        self.forward_message(msg)?;
        if let (false, Some(reason)) = (was_pinned, self.state.pin) {
            self.ctx.metrics.pinned(pin_label(reason));
            tracing::debug!(?reason, "client pinned to its server connection");
        }
        Ok(None)
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
        if !needs_server {
            return false;
        }
        // One clock reading for the checkout and the request's start.
        let now = std::time::Instant::now();
        let Some(conn) = self.pool.try_checkout(now) else {
            return false;
        };
        if !super::reset::in_sync(&self.state, &conn.session) {
            // The general path syncs it (and may get this same connection back).
            self.pool.checkin(conn);
            return false;
        }
        if let Some(timers) = self.ctx.timers.first() {
            timers.checkout(std::time::Duration::ZERO);
        }
        let pool = self.pool.clone();
        self.hold(conn, Target::Primary, pool);
        if let Some(held) = self.server.as_mut() {
            held.started = Some(now);
        }
        true
    }

    async fn route_client_message(&mut self, msg: Message) -> Result<(), SessionError> {
        if self.answer_causeway_command(&msg).await? {
            return Ok(());
        }
        if self.routing_enabled() && !self.keeps_server() {
            // Collect the whole request, then route it as one.
            let ends = super::route::ends_request(msg.tag);
            self.routing.batch.push(msg);
            if ends {
                self.dispatch_batch().await?;
            }
            return Ok(());
        }
        self.handle_message(msg, Target::Primary).await
    }

    /// Whether the next request must use the held server connection: inside a transaction,
    /// when pinned, in session mode, or while it is the primary (which can run anything).
    fn keeps_server(&self) -> bool {
        if self.session_mode || self.state.pin.is_some() {
            return true;
        }
        // An extended-protocol sequence not yet ended by Sync (e.g. Parse/Describe/Flush,
        // then Bind/Execute/Sync) is one implicit transaction: it stays on its server.
        self.server.as_ref().is_some_and(|held| {
            self.tx_status != b'I' || held.unsynced || held.target == Target::Primary
        })
    }

    /// Handle one message of a request whose node is decided.
    pub(super) async fn handle_message(
        &mut self,
        msg: Message,
        target: Target,
    ) -> Result<(), SessionError> {
        if self.skip_until_sync {
            // An error Causeway raised itself ended this extended-protocol batch.
            if msg.tag != tag::SYNC {
                return Ok(());
            }
            self.skip_until_sync = false;
        }
        if self.server.is_none() && self.answer_without_server(&msg)? {
            return Ok(());
        }
        self.acquire(target).await?;
        self.forward_message(msg)
    }

    fn forward_message(&mut self, msg: Message) -> Result<(), SessionError> {
        let Some(held) = self.server.as_mut() else {
            return Ok(());
        };
        if let Some(sent) = held.retry.as_mut() {
            if held.relay.guarding() || held.relay.conflicted() {
                sent.push(msg.clone());
            } else {
                // A result reached the client: this read can no longer move, so nothing
                // more is kept (a long pipeline would otherwise keep every message).
                held.retry = None;
            }
        }
        match msg.tag {
            tag::QUERY => self.on_query(msg),
            tag::PARSE => self.on_parse(msg),
            tag::BIND => self.on_bind(msg),
            tag::DESCRIBE => self.on_describe(msg),
            tag::CLOSE => self.on_close(msg),
            tag::EXECUTE => self.on_execute(msg),
            tag::SYNC => {
                held.started.get_or_insert_with(std::time::Instant::now);
                held.out.extend_from_slice(&msg.raw);
                if held.relay.sync_is_answered() {
                    held.relay.push(Pending::Sync);
                    held.unsynced = false;
                    append_probe(held, &mut self.routing.floor, self.tx_status);
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
                append_probe(held, &mut self.routing.floor, self.tx_status);
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
            other => Err(invalid_message(other)),
        }
    }

    /// Messages that need no server connection when none is held. Returns whether handled.
    fn answer_without_server(&mut self, msg: &Message) -> Result<bool, SessionError> {
        match msg.tag {
            tag::TERMINATE => Err(SessionError::ClientGone),
            tag::SYNC => {
                encode::ready_for_query(&mut self.to_client, self.tx_status);
                Ok(true)
            }
            tag::FLUSH | tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => Ok(true),
            tag::PARSE => self.parse_without_server(msg),
            tag::CLOSE => match Named::decode(msg.body()) {
                Some(Named::Statement(name))
                    if !name.is_empty()
                        && !self
                            .state
                            .sql_prepared
                            .contains_key(&*String::from_utf8_lossy(name)) =>
                {
                    self.state.statements.remove(name);
                    encode::close_complete(&mut self.to_client);
                    Ok(true)
                }
                Some(_) => Ok(false),
                None => Err(malformed("Close")),
            },
            _ => Ok(false),
        }
    }

    /// A named Parse while no server connection is held is recorded and acknowledged
    /// without one: the statement is prepared lazily on whichever server connection first
    /// runs it. (Waiting for a server here would deadlock clients such as pgbench, which
    /// prepare synchronously while their other connections hold servers in transactions.)
    fn parse_without_server(&mut self, msg: &Message) -> Result<bool, SessionError> {
        let parse = Parse::decode(msg.body()).ok_or_else(|| malformed("Parse"))?;
        if parse.name.is_empty() {
            return Ok(false);
        }
        let name = Bytes::copy_from_slice(parse.name);
        if let Some(error) = self.refuse_new_statement(&name) {
            error.encode(&mut self.to_client);
            self.skip_until_sync = true;
            return Ok(true);
        }
        let def = Arc::new(StatementDef::new(parse.query, parse.param_types));
        self.state.statements.insert(name, def);
        encode::parse_complete(&mut self.to_client);
        Ok(true)
    }

    /// Why a new named statement cannot be created, if it cannot.
    fn refuse_new_statement(&self, name: &[u8]) -> Option<PgError> {
        if self.state.statements.contains_key(name) || self.is_sql_prepared(name) {
            return Some(PgError::error(
                SqlState::DUPLICATE_PSTATEMENT,
                format!(
                    "prepared statement \"{}\" already exists",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
        if self.state.statements.len() >= self.ctx.config.proxy.max_client_prepared_statements {
            return Some(
                PgError::error(
                    SqlState::CONFIGURATION_LIMIT_EXCEEDED,
                    "too many prepared statements on this connection",
                )
                .with_hint(
                    "close unused statements, or raise [proxy] max_client_prepared_statements",
                ),
            );
        }
        None
    }

    fn held(&mut self) -> Result<&mut Held, SessionError> {
        self.server
            .as_mut()
            .ok_or_else(|| SessionError::ServerLost("no server connection".into()))
    }

    fn on_query(&mut self, msg: Message) -> Result<(), SessionError> {
        let text = extended::query_text(msg.body()).ok_or_else(|| malformed("Query"))?;
        let text = crate::protocol::text(text);
        // One effect per statement, in order; allocated only if some statement has one.
        let mut effects = VecDeque::new();
        let mut copy_in = false;
        let (mut begins_tx, mut ends_tx) = (false, false);
        for (i, statement) in crate::sql::statements_with(&text, true).enumerate() {
            if let Some(reason) = statement.info.pin {
                self.state.pin(reason);
            }
            copy_in |= is_copy_in(&statement.info);
            let (begins, ends) = transaction_bounds(&statement.info);
            begins_tx |= begins;
            ends_tx |= ends;
            let effect = Effect::of(&statement.info, statement.text);
            if effect != Effect::None {
                effects.resize(i, Effect::None);
                effects.push_back(effect);
            }
        }
        // A simple Query destroys the unnamed statement.
        self.unnamed = None;
        let held = self
            .server
            .as_mut()
            .ok_or_else(|| SessionError::ServerLost("no server connection".into()))?;
        held.has_unnamed = false;
        held.skip_probe |= copy_in;
        held.begins_tx |= begins_tx;
        held.ends_tx |= ends_tx;
        held.started.get_or_insert_with(std::time::Instant::now);
        held.out.extend_from_slice(&msg.raw);
        held.relay.push(Pending::Query { effects });
        append_probe(held, &mut self.routing.floor, self.tx_status);
        Ok(())
    }

    fn on_parse(&mut self, msg: Message) -> Result<(), SessionError> {
        let parse = Parse::decode(msg.body()).ok_or_else(|| malformed("Parse"))?;
        let def = Arc::new(StatementDef::new(parse.query, parse.param_types));
        if parse.name.is_empty() {
            self.unnamed = Some(def);
            let held = self.held()?;
            held.has_unnamed = true;
            held.unsynced = true;
            held.out.extend_from_slice(&msg.raw);
            held.relay.push(Pending::Parse {
                server_name: None,
                client_name: None,
                forward: true,
            });
            return Ok(());
        }
        let name = Bytes::copy_from_slice(parse.name);
        if let Some(error) = self.refuse_new_statement(&name) {
            return self.fail_in_batch(error);
        }
        self.state.statements.insert(name.clone(), def.clone());
        let held = self.held()?;
        held.unsynced = true;
        ensure_prepared(held, &def, Some(name));
        Ok(())
    }

    fn on_bind(&mut self, msg: Message) -> Result<(), SessionError> {
        let bind = Bind::decode(msg.body()).ok_or_else(|| malformed("Bind"))?;
        let portal = Bytes::copy_from_slice(bind.portal);
        match self.resolve(bind.statement)? {
            Resolved::Unnamed(def) => {
                if let Some(def) = def {
                    self.portals.insert(portal, def);
                }
                let held = self.held()?;
                held.unsynced = true;
                held.out.extend_from_slice(&msg.raw);
            }
            Resolved::Named(def) => {
                let held = self.held()?;
                held.unsynced = true;
                ensure_prepared(held, &def, None);
                bind.encode_as(&mut held.out, &def.server_name);
                self.portals.insert(portal, def);
            }
            Resolved::Sql => {
                self.portals.remove(&portal);
                let held = self.held()?;
                held.unsynced = true;
                held.out.extend_from_slice(&msg.raw);
            }
            Resolved::Missing(name) => return self.fail_in_batch(missing_statement(&name)),
        }
        self.held()?.relay.push(Pending::Bind);
        Ok(())
    }

    fn on_describe(&mut self, msg: Message) -> Result<(), SessionError> {
        let target = Named::decode(msg.body()).ok_or_else(|| malformed("Describe"))?;
        let Named::Statement(name) = target else {
            return self.forward(msg, Pending::Describe);
        };
        match self.resolve(name)? {
            Resolved::Unnamed(_) | Resolved::Sql => self.forward(msg, Pending::Describe),
            Resolved::Named(def) => {
                let held = self.held()?;
                held.unsynced = true;
                ensure_prepared(held, &def, None);
                Named::Statement(&def.server_name).encode(&mut held.out, tag::DESCRIBE);
                held.relay.push(Pending::Describe);
                Ok(())
            }
            Resolved::Missing(name) => self.fail_in_batch(missing_statement(&name)),
        }
    }

    fn on_close(&mut self, msg: Message) -> Result<(), SessionError> {
        let target = Named::decode(msg.body()).ok_or_else(|| malformed("Close"))?;
        match target {
            Named::Statement(name) if !name.is_empty() => {
                let text = String::from_utf8_lossy(name).into_owned();
                if self.state.sql_prepared.remove(&text).is_some() {
                    self.held()?.conn.session.sql_prepared.remove(&text);
                    return self.forward(
                        msg,
                        Pending::Close {
                            forward: true,
                            restore: None,
                        },
                    );
                }
                // The statement stays prepared on the server for whoever needs it next.
                self.state.statements.remove(name);
                let mut reply = BytesMut::new();
                encode::close_complete(&mut reply);
                let held = self.held()?;
                held.relay.push(Pending::Synthetic(reply.freeze()));
                Ok(())
            }
            _ => self.forward(
                msg,
                Pending::Close {
                    forward: true,
                    restore: None,
                },
            ),
        }
    }

    fn on_execute(&mut self, msg: Message) -> Result<(), SessionError> {
        let portal = extended::execute_portal(msg.body()).ok_or_else(|| malformed("Execute"))?;
        let mut copy_in = false;
        let mut bounds = (false, false);
        let effect = match self.portals.get(portal) {
            Some(def) => {
                if let Some(reason) = def.info.pin {
                    self.state.pin(reason);
                }
                copy_in = is_copy_in(&def.info);
                bounds = transaction_bounds(&def.info);
                def.effect.clone()
            }
            None => Effect::None,
        };
        let held = self.held()?;
        held.skip_probe |= copy_in;
        held.begins_tx |= bounds.0;
        held.ends_tx |= bounds.1;
        self.forward(msg, Pending::Execute { effect })
    }

    fn forward(&mut self, msg: Message, pending: Pending) -> Result<(), SessionError> {
        let held = self.held()?;
        held.unsynced = true;
        held.out.extend_from_slice(&msg.raw);
        held.relay.push(pending);
        Ok(())
    }

    fn is_sql_prepared(&self, name: &[u8]) -> bool {
        self.state
            .sql_prepared
            .contains_key(&*String::from_utf8_lossy(name))
    }

    fn resolve(&mut self, name: &[u8]) -> Result<Resolved, SessionError> {
        if name.is_empty() {
            let def = self.unnamed.clone();
            let held = self.held()?;
            if !held.has_unnamed {
                if let Some(def) = &def {
                    // The client's unnamed statement was parsed on another server connection.
                    Parse {
                        name: b"",
                        query: &def.query,
                        param_types: &def.param_types,
                    }
                    .encode_as(&mut held.out, b"");
                    held.relay.push(Pending::Parse {
                        server_name: None,
                        client_name: None,
                        forward: false,
                    });
                    held.has_unnamed = true;
                }
            }
            return Ok(Resolved::Unnamed(def));
        }
        if let Some(def) = self.state.statements.get(name) {
            return Ok(Resolved::Named(def.clone()));
        }
        if self.is_sql_prepared(name) {
            return Ok(Resolved::Sql);
        }
        Ok(Resolved::Missing(
            String::from_utf8_lossy(name).into_owned(),
        ))
    }

    /// Make the server fail this extended-protocol batch at this point, as PostgreSQL would
    /// for `error`: send a Bind that cannot succeed, and show the client `error` instead.
    fn fail_in_batch(&mut self, error: PgError) -> Result<(), SessionError> {
        let held = self.held()?;
        held.unsynced = true;
        let body = b"\0_cw_missing_statement\0\0\0\0\0\0\0";
        crate::protocol::frame::append(&mut held.out, tag::BIND, body);
        held.relay.push(Pending::ReplaceError(error.to_bytes()));
        Ok(())
    }
}

enum Resolved {
    Unnamed(Option<Arc<StatementDef>>),
    Named(Arc<StatementDef>),
    Sql,
    Missing(String),
}

/// Make sure `def` is prepared on the held server connection, injecting a Parse (and a Close
/// of the least recently used statement when the cache is full) if it is not. `client_name`
/// is set when this answers the client's own Parse, whose reply the client expects.
fn ensure_prepared(held: &mut Held, def: &StatementDef, client_name: Option<Bytes>) {
    if held.conn.session.prepared.touch(&def.server_name) {
        if client_name.is_some() {
            let mut reply = BytesMut::new();
            encode::parse_complete(&mut reply);
            held.relay.push(Pending::Synthetic(reply.freeze()));
        }
        return;
    }
    if let Some(evicted) = held.conn.session.prepared.insert(def.server_name.clone()) {
        Named::Statement(&evicted).encode(&mut held.out, tag::CLOSE);
        held.relay.push(Pending::Close {
            forward: false,
            restore: Some(evicted),
        });
    }
    Parse {
        name: b"",
        query: &def.query,
        param_types: &def.param_types,
    }
    .encode_as(&mut held.out, &def.server_name);
    held.relay.push(Pending::Parse {
        server_name: Some(def.server_name.clone()),
        forward: client_name.is_some(),
        client_name,
    });
}

fn malformed(what: &str) -> SessionError {
    SessionError::Protocol(format!("malformed {what} message"))
}

fn invalid_message(tag: u8) -> SessionError {
    SessionError::Protocol(format!("invalid frontend message type {tag}"))
}

fn missing_statement(name: &str) -> PgError {
    PgError::error(
        SqlState::INVALID_SQL_STATEMENT_NAME,
        format!("prepared statement \"{name}\" does not exist"),
    )
}

/// A statement that puts the server in COPY FROM STDIN mode.
fn is_copy_in(info: &crate::sql::StatementInfo) -> bool {
    matches!(
        info.kind,
        crate::sql::StatementKind::Copy { from_stdin: true }
    )
}

/// Append the causal probe behind the request just sent (DESIGN.md §1). After a COPY FROM
/// STDIN nothing may follow until the copy ends, so the floor becomes unknown instead and
/// the next request on the primary re-establishes it.
///
/// Inside a transaction block the probe waits for the request that ends it: a query of
/// its own right after BEGIN would count as the transaction's first statement (and break
/// a following `SET TRANSACTION`). `tx_status` is the status before this request.
fn append_probe(held: &mut Held, floor: &mut Floor, tx_status: u8) {
    let begins = std::mem::take(&mut held.begins_tx);
    let ends = std::mem::take(&mut held.ends_tx);
    let Some(kind) = held.probe else {
        return;
    };
    if std::mem::take(&mut held.skip_probe) {
        *floor = Floor::Unknown;
        return;
    }
    let ends_outside = (tx_status == b'I' && !begins) || ends;
    if !ends_outside {
        return;
    }
    kind.encode(&mut held.out);
    held.relay.push(Pending::Probe(kind));
}

/// Whether a statement begins or ends a transaction block.
fn transaction_bounds(info: &crate::sql::StatementInfo) -> (bool, bool) {
    use crate::sql::StatementKind as K;
    match info.kind {
        K::Begin { .. } => (true, false),
        K::Commit { chain } | K::Rollback { chain } => (chain, !chain),
        K::PrepareTransaction => (false, true),
        _ => (false, false),
    }
}

/// Label of a pin reason for `causeway_pins_total{reason}`.
fn pin_label(reason: crate::sql::PinReason) -> &'static str {
    use crate::sql::PinReason;
    match reason {
        PinReason::Listen => "listen",
        PinReason::AdvisoryLock => "advisory_lock",
        PinReason::TemporaryObject => "temporary_object",
        PinReason::HoldCursor => "hold_cursor",
        PinReason::SetConfig => "set_config",
        PinReason::UnrecognizedSet => "unrecognized_set",
        PinReason::Load => "load",
    }
}
