//! Prepared statements across pooled server connections: a client's named statements are
//! renamed to content-derived names and prepared lazily, once per server connection (in
//! session mode, where the client keeps one server connection, they pass unchanged); a
//! named Parse without a server is acknowledged by Causeway; the unnamed statement is
//! parsed again on a connection that lacks it; errors Causeway raises inside an
//! extended-protocol batch abort it as PostgreSQL would.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::error::{
    duplicate_statement, missing_statement, too_many_statement_bytes, too_many_statements,
};
use super::frontend::{forward_as, Frontend};
use super::link::Held;
use super::relay::Pending;
use super::state::StatementDef;
use super::SessionError;
use crate::protocol::encode::{self, PgError};
use crate::protocol::extended::{Bind, Parse, Target as Named};
use crate::protocol::{tag, Message};

/// What a statement name in Bind or Describe refers to.
enum Resolved {
    Unnamed(Option<Arc<StatementDef>>),
    Named(Arc<StatementDef>),
    /// A statement made by SQL `PREPARE`: the server knows it by the client's name.
    Sql,
    Missing(String),
}

impl Frontend {
    pub(super) fn on_parse(&mut self, held: &mut Held, msg: Message) -> Result<(), SessionError> {
        let parse = Parse::decode(msg.body()).ok_or_else(|| SessionError::malformed("Parse"))?;
        if parse.name.is_empty() {
            let def = match self.unnamed.take() {
                // Drivers parse the same unnamed statement request after request: keep its
                // definition (and its routing memo) instead of scanning the text again.
                Some(def) if def.query == parse.query && def.param_types == parse.param_types => {
                    def
                }
                _ => Arc::new(StatementDef::unnamed(parse.query, parse.param_types)),
            };
            self.unnamed = Some(def);
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
        if let Some(error) = self.refuse_new_statement(&name, parse.query.len()) {
            fail_in_batch(held, error);
            return Ok(());
        }
        let def = Arc::new(StatementDef::new(parse.query, parse.param_types));
        self.state.statements.insert(name.clone(), def.clone());
        held.unsynced = true;
        if self.keep_names {
            held.out.extend_from_slice(&msg.raw);
            held.relay.push(Pending::Parse {
                server_name: None,
                client_name: Some(name),
                forward: true,
            });
        } else {
            ensure_prepared(held, &def, Some(name));
        }
        Ok(())
    }

    pub(super) fn on_bind(&mut self, held: &mut Held, msg: Message) -> Result<(), SessionError> {
        let bind = Bind::decode(msg.body()).ok_or_else(|| SessionError::malformed("Bind"))?;
        let portal = Bytes::copy_from_slice(bind.portal);
        held.unsynced = true;
        let mut renamed = false;
        match self.resolve(held, bind.statement) {
            Resolved::Unnamed(def) => {
                if let Some(def) = def {
                    self.portals.insert(portal, def);
                }
                held.out.extend_from_slice(&msg.raw);
            }
            Resolved::Named(def) if self.keep_names => {
                held.out.extend_from_slice(&msg.raw);
                self.portals.insert(portal, def);
            }
            Resolved::Named(def) => {
                ensure_prepared(held, &def, None);
                bind.encode_as(&mut held.out, &def.server_name);
                self.portals.insert(portal, def);
                renamed = true;
            }
            Resolved::Sql => {
                self.portals.remove(&portal);
                held.out.extend_from_slice(&msg.raw);
            }
            Resolved::Missing(name) => {
                fail_in_batch(held, missing_statement(&name));
                return Ok(());
            }
        }
        held.relay.push(Pending::Bind { renamed });
        Ok(())
    }

    pub(super) fn on_describe(
        &mut self,
        held: &mut Held,
        msg: Message,
    ) -> Result<(), SessionError> {
        let target =
            Named::decode(msg.body()).ok_or_else(|| SessionError::malformed("Describe"))?;
        let Named::Statement(name) = target else {
            forward_as(held, msg, Pending::Describe { renamed: false });
            return Ok(());
        };
        match self.resolve(held, name) {
            Resolved::Unnamed(_) | Resolved::Sql => {
                forward_as(held, msg, Pending::Describe { renamed: false })
            }
            Resolved::Named(_) if self.keep_names => {
                forward_as(held, msg, Pending::Describe { renamed: false })
            }
            Resolved::Named(def) => {
                held.unsynced = true;
                ensure_prepared(held, &def, None);
                Named::Statement(&def.server_name).encode(&mut held.out, tag::DESCRIBE);
                held.relay.push(Pending::Describe { renamed: true });
            }
            Resolved::Missing(name) => fail_in_batch(held, missing_statement(&name)),
        }
        Ok(())
    }

    pub(super) fn on_close(&mut self, held: &mut Held, msg: Message) -> Result<(), SessionError> {
        let target = Named::decode(msg.body()).ok_or_else(|| SessionError::malformed("Close"))?;
        let forwarded = Pending::Close {
            forward: true,
            restore: None,
        };
        match target {
            Named::Statement(name) if !name.is_empty() => {
                let text = String::from_utf8_lossy(name).into_owned();
                if self.state.sql_prepared.remove(&text).is_some() {
                    held.conn.session.sql_prepared.remove(&text);
                    forward_as(held, msg, forwarded);
                    return Ok(());
                }
                self.state.statements.remove(name);
                if self.keep_names {
                    forward_as(held, msg, forwarded);
                    return Ok(());
                }
                // The statement stays prepared on the server for whoever needs it next.
                let mut reply = BytesMut::new();
                encode::close_complete(&mut reply);
                held.relay.push(Pending::Synthetic(reply.freeze()));
            }
            _ => forward_as(held, msg, forwarded),
        }
        Ok(())
    }

    /// A named Parse while no server connection is held is recorded and acknowledged
    /// without one: the statement is prepared lazily on whichever server connection first
    /// runs it. (Waiting for a server here would deadlock clients such as pgbench, which
    /// prepare synchronously while their other connections hold servers in transactions.)
    pub(super) fn parse_without_server(
        &mut self,
        msg: &Message,
        out: &mut BytesMut,
    ) -> Result<bool, SessionError> {
        let parse = Parse::decode(msg.body()).ok_or_else(|| SessionError::malformed("Parse"))?;
        if parse.name.is_empty() {
            return Ok(false);
        }
        let name = Bytes::copy_from_slice(parse.name);
        if let Some(error) = self.refuse_new_statement(&name, parse.query.len()) {
            error.encode(out);
            self.skip_until_sync = true;
            return Ok(true);
        }
        let def = Arc::new(StatementDef::new(parse.query, parse.param_types));
        self.state.statements.insert(name, def);
        encode::parse_complete(out);
        Ok(true)
    }

    /// Close of a protocol-level named statement while no server connection is held.
    pub(super) fn close_without_server(
        &mut self,
        msg: &Message,
        out: &mut BytesMut,
    ) -> Result<bool, SessionError> {
        match Named::decode(msg.body()) {
            Some(Named::Statement(name)) if !name.is_empty() && !self.is_sql_prepared(name) => {
                self.state.statements.remove(name);
                encode::close_complete(out);
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(SessionError::malformed("Close")),
        }
    }

    /// The named statements a retried attempt created never reached the client.
    pub(super) fn forget_parsed(&mut self, sent: &[Message]) {
        for msg in sent.iter().filter(|m| m.tag == tag::PARSE) {
            if let Some(parse) = Parse::decode(msg.body()).filter(|p| !p.name.is_empty()) {
                self.state.statements.remove(parse.name);
            }
        }
    }

    /// Why a new named statement of `text_len` bytes cannot be created, if it cannot.
    fn refuse_new_statement(&self, name: &[u8], text_len: usize) -> Option<PgError> {
        if self.state.statements.contains_key(name) || self.is_sql_prepared(name) {
            return Some(duplicate_statement(name));
        }
        if self.state.statements.len() >= self.max_prepared {
            return Some(too_many_statements());
        }
        let kept: usize = self.state.statements.values().map(|d| d.query.len()).sum();
        if kept.saturating_add(text_len) > self.max_prepared_bytes {
            return Some(too_many_statement_bytes());
        }
        None
    }

    fn is_sql_prepared(&self, name: &[u8]) -> bool {
        self.state
            .sql_prepared
            .contains_key(&*String::from_utf8_lossy(name))
    }

    fn resolve(&mut self, held: &mut Held, name: &[u8]) -> Resolved {
        if name.is_empty() {
            let def = self.unnamed.clone();
            if let (false, Some(def)) = (held.has_unnamed, &def) {
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
            return Resolved::Unnamed(def);
        }
        if let Some(def) = self.state.statements.get(name) {
            return Resolved::Named(def.clone());
        }
        if self.is_sql_prepared(name) {
            return Resolved::Sql;
        }
        Resolved::Missing(String::from_utf8_lossy(name).into_owned())
    }
}

/// Make the server fail this extended-protocol batch at this point, as PostgreSQL would
/// for `error`: send a Bind that cannot succeed, and show the client `error` instead.
pub(super) fn fail_in_batch(held: &mut Held, error: PgError) {
    held.unsynced = true;
    let body = b"\0_cw_missing_statement\0\0\0\0\0\0\0";
    crate::protocol::frame::append(&mut held.out, tag::BIND, body);
    held.relay.push(Pending::ReplaceError(error.to_bytes()));
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
    if held.conn.session.prepared.unsure() {
        // The server lost statements behind Causeway's back; this one may still exist
        // there (a Close of a missing statement is no error).
        Named::Statement(&def.server_name).encode(&mut held.out, tag::CLOSE);
        held.relay.push(Pending::Close {
            forward: false,
            restore: None,
        });
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
