//! `SET`/`RESET`/`SHOW causeway.*` sent through the extended protocol (pgJDBC,
//! node-postgres with parameters, any driver's prepared path): Causeway answers Parse,
//! Bind, Describe, Execute and Close of such a statement itself, in order with the server's
//! replies, and never forwards them. A value may come as a bind parameter
//! (`SET causeway.session = $1`), so applications never splice end-user ids into SQL.

use std::collections::HashMap;

use bytes::{Buf, Bytes, BytesMut};

use super::error::command_error;
use super::relay::Pending;
use super::{ClientStream, Session, SessionError};
use crate::hints::{CausewayCommand, CommandError};
use crate::protocol::encode::{self, PgError};
use crate::protocol::extended::{self, Bind, Parse, Target as Named};
use crate::protocol::{tag, Message, SqlState};

/// Statements and portals whose text is a `causeway.*` command (boxed: most sessions
/// never have one, and every session carries this).
#[derive(Debug, Default)]
pub(super) struct Commands(Option<Box<CommandMaps>>);

#[derive(Debug, Default)]
struct CommandMaps {
    /// Statement name (empty: the unnamed one) → its text, with `$n` placeholders.
    statements: HashMap<Bytes, Box<str>>,
    /// Portal name → the text with its parameters filled in.
    portals: HashMap<Bytes, Box<str>>,
}

impl Commands {
    fn statement(&self, name: &[u8]) -> Option<&str> {
        self.0.as_ref()?.statements.get(name).map(|t| &**t)
    }

    fn portal(&self, name: &[u8]) -> Option<&str> {
        self.0.as_ref()?.portals.get(name).map(|t| &**t)
    }

    fn maps(&mut self) -> &mut CommandMaps {
        self.0.get_or_insert_with(Box::default)
    }

    fn remove_statement(&mut self, name: &[u8]) {
        if let Some(maps) = self.0.as_mut() {
            maps.statements.remove(name);
        }
    }

    fn remove_portal(&mut self, name: &[u8]) {
        if let Some(maps) = self.0.as_mut() {
            maps.portals.remove(name);
        }
    }

    /// Whether no `causeway.*` statement or portal exists.
    pub(super) fn is_empty(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|m| m.statements.is_empty() && m.portals.is_empty())
    }

    /// Whether `msg` is about a `causeway.*` statement (a Parse of one, or a Bind,
    /// Describe, Execute or Close naming one). Cheap when none exists.
    pub(super) fn claims(&self, msg: &Message) -> bool {
        match msg.tag {
            tag::PARSE => {
                Parse::decode(msg.body()).is_some_and(|p| crate::hints::mentions_parameter(p.query))
            }
            _ if self.is_empty() => false,
            tag::BIND => {
                Bind::decode(msg.body()).is_some_and(|b| self.statement(b.statement).is_some())
            }
            tag::DESCRIBE | tag::CLOSE => match Named::decode(msg.body()) {
                Some(Named::Statement(name)) => self.statement(name).is_some(),
                Some(Named::Portal(name)) => self.portal(name).is_some(),
                None => false,
            },
            tag::EXECUTE => extended::execute_portal(msg.body())
                .is_some_and(|portal| self.portal(portal).is_some()),
            _ => false,
        }
    }

    /// The unnamed statement or an unnamed portal was replaced by a server's one.
    pub(super) fn forget_replaced(&mut self, msg: &Message) {
        match msg.tag {
            tag::PARSE if Parse::decode(msg.body()).is_some_and(|p| p.name.is_empty()) => {
                self.remove_statement(b"");
            }
            tag::BIND if Bind::decode(msg.body()).is_some_and(|b| b.portal.is_empty()) => {
                self.remove_portal(b"");
            }
            tag::QUERY => {
                self.remove_statement(b"");
                self.remove_portal(b"");
            }
            _ => {}
        }
    }
}

impl<C: ClientStream> Session<C> {
    /// Answer one extended-protocol message about a `causeway.*` statement (see
    /// [`Commands::claims`]).
    pub(super) async fn answer_extended_command(
        &mut self,
        msg: &Message,
    ) -> Result<(), SessionError> {
        let mut reply = BytesMut::new();
        let outcome = match msg.tag {
            tag::PARSE => self.command_parse(msg, &mut reply),
            tag::BIND => self.command_bind(msg, &mut reply),
            tag::DESCRIBE => self.command_describe(msg, &mut reply),
            tag::EXECUTE => self.command_execute(msg, &mut reply).await,
            tag::CLOSE => self.command_close(msg, &mut reply),
            other => Err(SessionError::invalid_message(other).into()),
        };
        match outcome {
            Ok(()) => self.reply_in_order(reply.freeze()),
            Err(Refused::Client(error)) => self.fail_request(error),
            Err(Refused::Session(error)) => return Err(error),
        }
        Ok(())
    }

    fn command_parse(&mut self, msg: &Message, reply: &mut BytesMut) -> Result<(), Refused> {
        let parse = Parse::decode(msg.body()).ok_or_else(|| SessionError::malformed("Parse"))?;
        let text = crate::protocol::text(parse.query);
        let taken = self.front.state.statements.contains_key(parse.name)
            || self.front.commands.statement(parse.name).is_some();
        if !parse.name.is_empty() && taken {
            return Err(Refused::Client(super::error::duplicate_statement(
                parse.name,
            )));
        }
        // Checked now, as PostgreSQL checks syntax at Parse; values come at Bind.
        if let Some(Err(error)) = crate::hints::parse_command(&fill(&text, &[])?) {
            if !matches!(error, CommandError::InvalidValue { .. }) {
                return Err(Refused::Client(command_error(&error)));
            }
        }
        let name = Bytes::copy_from_slice(parse.name);
        if name.is_empty() {
            // The client's unnamed statement is this one now, not a server's.
            self.front.unnamed = None;
        }
        self.front
            .commands
            .maps()
            .statements
            .insert(name, text.into());
        encode::empty(reply, tag::PARSE_COMPLETE);
        Ok(())
    }

    fn command_bind(&mut self, msg: &Message, reply: &mut BytesMut) -> Result<(), Refused> {
        let bind = Bind::decode(msg.body()).ok_or_else(|| SessionError::malformed("Bind"))?;
        let values = bind_values(bind.rest).ok_or_else(|| SessionError::malformed("Bind"))?;
        let template = self
            .front
            .commands
            .statement(bind.statement)
            .ok_or_else(SessionError::no_server)?;
        let filled = fill(template, &values)?;
        let portal = Bytes::copy_from_slice(bind.portal);
        self.front.portals.remove(&portal);
        self.front
            .commands
            .maps()
            .portals
            .insert(portal, filled.into());
        encode::empty(reply, tag::BIND_COMPLETE);
        Ok(())
    }

    fn command_describe(&mut self, msg: &Message, reply: &mut BytesMut) -> Result<(), Refused> {
        let target =
            Named::decode(msg.body()).ok_or_else(|| SessionError::malformed("Describe"))?;
        let commands = &self.front.commands;
        let text = match target {
            Named::Statement(name) => {
                let text = commands
                    .statement(name)
                    .ok_or_else(SessionError::no_server)?;
                encode::text_parameter_description(reply, parameters(text));
                fill(text, &[])?
            }
            Named::Portal(name) => commands
                .portal(name)
                .ok_or_else(SessionError::no_server)?
                .to_owned(),
        };
        match crate::hints::parse_command(&text) {
            Some(Ok(CausewayCommand::Show { name })) => {
                encode::text_row_description(reply, name.name())
            }
            _ => encode::empty(reply, tag::NO_DATA),
        }
        Ok(())
    }

    async fn command_execute(
        &mut self,
        msg: &Message,
        reply: &mut BytesMut,
    ) -> Result<(), Refused> {
        let portal = extended::execute_portal(msg.body())
            .ok_or_else(|| SessionError::malformed("Execute"))?;
        let text = self
            .front
            .commands
            .portal(portal)
            .ok_or_else(SessionError::no_server)?
            .to_owned();
        match crate::hints::parse_command(&text) {
            Some(Ok(command)) => {
                // Describe sent the row description, if the client asked for it.
                let mut full = BytesMut::new();
                self.run_command(command, &mut full).await;
                strip_row_description(&mut full);
                reply.extend_from_slice(&full);
                Ok(())
            }
            Some(Err(error)) => Err(Refused::Client(command_error(&error))),
            None => Err(SessionError::no_server().into()),
        }
    }

    fn command_close(&mut self, msg: &Message, reply: &mut BytesMut) -> Result<(), Refused> {
        let target = Named::decode(msg.body()).ok_or_else(|| SessionError::malformed("Close"))?;
        match target {
            Named::Statement(name) => self.front.commands.remove_statement(name),
            Named::Portal(name) => self.front.commands.remove_portal(name),
        }
        encode::empty(reply, tag::CLOSE_COMPLETE);
        Ok(())
    }

    /// Send Causeway's reply after everything the held server connection still owes.
    fn reply_in_order(&mut self, reply: Bytes) {
        match self.link.server.as_mut() {
            Some(held) => {
                held.relay.push(Pending::Synthetic(reply));
                held.relay.emit_ready_synthetic(&mut self.to_client);
            }
            None => self.to_client.extend_from_slice(&reply),
        }
    }

    /// End the extended-protocol request with `error`, as PostgreSQL would: the rest of it,
    /// up to Sync, is discarded.
    fn fail_request(&mut self, error: PgError) {
        match self.link.server.as_mut() {
            Some(held) => super::prepared::fail_in_batch(held, error),
            None => {
                error.encode(&mut self.to_client);
                self.front.skip_until_sync = true;
            }
        }
    }
}

/// Why a command message got no normal reply.
enum Refused {
    /// The request fails with this error; the session goes on.
    Client(PgError),
    /// The session ends.
    Session(SessionError),
}

impl From<SessionError> for Refused {
    fn from(error: SessionError) -> Refused {
        Refused::Session(error)
    }
}

/// The number of `$n` parameters `text` uses (the highest `n`).
fn parameters(text: &str) -> usize {
    let mut most = 0;
    placeholders(text, |n| most = most.max(n));
    most
}

/// `text` with each `$n` outside quotes replaced by parameter `n` as a string literal
/// (`''` doubled inside). A missing parameter, or a NULL one, is an error the client sees.
fn fill(text: &str, values: &[Option<String>]) -> Result<String, Refused> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut missing = None;
    let mut spans = Vec::new();
    placeholders_at(text, |start, end, n| spans.push((start, end, n)));
    for (start, end, n) in spans {
        out.push_str(text.get(last..start).unwrap_or_default());
        match values.get(n.wrapping_sub(1)) {
            Some(Some(value)) => {
                out.push('\'');
                out.push_str(&value.replace('\'', "''"));
                out.push('\'');
            }
            // A statement checked at Parse has no values yet: an empty string stands in.
            None if values.is_empty() => out.push_str("''"),
            _ => missing = Some(n),
        }
        last = end;
    }
    out.push_str(text.get(last..).unwrap_or_default());
    match missing {
        Some(n) => Err(Refused::Client(PgError::error(
            SqlState::INVALID_PARAMETER_VALUE,
            format!("parameter ${n} of a causeway.* command must be a non-null text value"),
        ))),
        None => Ok(out),
    }
}

fn placeholders(text: &str, mut each: impl FnMut(usize)) {
    placeholders_at(text, |_, _, n| each(n));
}

/// Call `each(start, end, n)` for every `$n` outside single or double quotes.
fn placeholders_at(text: &str, mut each: impl FnMut(usize, usize, usize)) {
    let bytes = text.as_bytes();
    let mut quote = None;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(b),
            (None, b'$') => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                if let Some(n) = text.get(i + 1..i + 1 + digits).and_then(|d| d.parse().ok()) {
                    each(i, i + 1 + digits, n);
                    i += digits;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// The parameter values of a Bind (after its names), as text; `None` when malformed or a
/// value is not UTF-8.
fn bind_values(mut rest: &[u8]) -> Option<Vec<Option<String>>> {
    let formats = usize::try_from(take_i16(&mut rest)?).ok()?;
    rest = rest.get(formats * 2..)?;
    let count = usize::try_from(take_i16(&mut rest)?).ok()?;
    let mut values = Vec::with_capacity(count.min(16));
    for _ in 0..count {
        if rest.len() < 4 {
            return None;
        }
        let len = rest.get_i32();
        let Ok(len) = usize::try_from(len) else {
            values.push(None);
            continue;
        };
        let value = std::str::from_utf8(rest.get(..len)?).ok()?;
        values.push(Some(value.to_owned()));
        rest = rest.get(len..)?;
    }
    Some(values)
}

fn take_i16(rest: &mut &[u8]) -> Option<i16> {
    (rest.len() >= 2).then(|| rest.get_i16())
}

/// A simple-query SHOW reply carries its RowDescription; Execute's must not.
fn strip_row_description(reply: &mut BytesMut) {
    if reply.first() == Some(&tag::ROW_DESCRIPTION) {
        if let Ok(Some((_, len))) = crate::protocol::frame::peek(reply, usize::MAX) {
            reply.advance(len.min(reply.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_outside_quotes_are_filled_as_literals() {
        let text = "SET causeway.session = $1";
        assert_eq!(parameters(text), 1);
        let filled = fill(text, &[Some("it's-42".into())]).ok();
        assert_eq!(filled.as_deref(), Some("SET causeway.session = 'it''s-42'"));
        assert_eq!(parameters("SHOW causeway.session"), 0);
        assert_eq!(parameters("SET causeway.session = '$1'"), 0);
        assert!(fill(text, &[None]).is_err());
        assert!(fill("SET causeway.session = $2", &[Some("a".into())]).is_err());
        assert_eq!(
            fill(text, &[]).ok().as_deref(),
            Some("SET causeway.session = ''")
        );
    }

    #[test]
    fn bind_values_are_decoded_defensively() {
        let mut rest = vec![0, 0, 0, 2];
        rest.extend_from_slice(&3i32.to_be_bytes());
        rest.extend_from_slice(b"abc");
        rest.extend_from_slice(&(-1i32).to_be_bytes());
        rest.extend_from_slice(&[0, 0]);
        assert_eq!(bind_values(&rest), Some(vec![Some("abc".into()), None]));
        for cut in 0..rest.len() - 6 {
            assert!(bind_values(&rest[..cut]).is_none(), "cut {cut}");
        }
    }
}
