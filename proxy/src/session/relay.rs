//! Server-to-client relay for one held server connection: every message the pooler sent to
//! the server has a [`Pending`] entry, so each reply can be matched to its request. That is
//! how Causeway hides the Parse/Close messages it injects, answers for statements it skipped,
//! applies completed session-state effects, and knows when the connection is idle again.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::probe::ProbeKind;
use super::state::{ClientState, Effect, ServerImpact};
use crate::backend::ServerState;
use crate::lsn::Position;
use crate::protocol::{extended, tag, ErrorFields, MessageRef, SqlState, TxStatus};

/// One request sent to the server (or answered by Causeway), awaiting its reply.
#[derive(Debug)]
pub enum Pending {
    /// A Parse. `server_name` was recorded in the server's cache when it was sent and is
    /// forgotten if the Parse fails or is skipped; `client_name` likewise for the client's map.
    Parse {
        server_name: Option<Bytes>,
        client_name: Option<Bytes>,
        forward: bool,
    },
    /// A Bind; `renamed` when it names one of Causeway's own statement names.
    Bind {
        renamed: bool,
    },
    /// A Describe; `renamed` when it names one of Causeway's own statement names.
    Describe {
        renamed: bool,
    },
    Execute {
        effect: Effect,
    },
    /// A Close; `restore` names a cache eviction to undo if the server skipped it.
    Close {
        forward: bool,
        restore: Option<Bytes>,
    },
    Sync,
    Query {
        effects: VecDeque<Effect>,
    },
    FunctionCall,
    /// A reply Causeway makes itself, sent when everything before it has been answered.
    Synthetic(Bytes),
    /// The client ended a COPY (CopyDone or CopyFail); no reply of its own.
    CopyEnd,
    /// Causeway's causal probe; its replies are consumed, and the client's ReadyForQuery
    /// before it is held back until it completes.
    Probe(ProbeKind),
    /// Causeway sent a message that fails on purpose so the server aborts the extended
    /// batch exactly as PostgreSQL would; the client sees this error instead of the server's.
    ReplaceError(Bytes),
}

impl Pending {
    fn ends_extended_skip(&self) -> bool {
        matches!(
            self,
            Pending::Sync | Pending::Query { .. } | Pending::FunctionCall
        )
    }
}

/// What a server message meant for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// ReadyForQuery with this transaction status.
    Ready(TxStatus),
    /// A probe finished (with the position it read, if it succeeded); the client's
    /// ReadyForQuery is held until [`Relay::release_ready`].
    Probed(Option<Position>),
    /// The server sent FATAL: the connection is going away.
    Fatal,
}

/// A reply that matches no request: the server broke the protocol.
#[derive(Debug, thiserror::Error)]
#[error("server sent {message:?} where Causeway expected a reply to {expected}")]
pub struct Desync {
    pub message: char,
    pub expected: &'static str,
}

/// The largest guard buffer kept for the next replica read (an idle session keeps it).
const SPARE_GUARD_MAX: usize = 512;

/// Most requests awaiting replies on one connection before the client is read no further:
/// a pipeline of a million messages without Sync would otherwise keep an entry for each
/// while the kernel's socket buffers hold them in flight (tens of MB, and more the faster
/// Causeway forwards).
const MAX_IN_FLIGHT: usize = 1 << 16;

/// The queue of requests awaiting replies on one server connection.
#[derive(Debug, Default)]
pub struct Relay {
    pending: VecDeque<Pending>,
    /// The server is in COPY FROM STDIN mode and the client has not ended it yet: Syncs
    /// the server reads now are ignored by it, so they get no entry.
    copy_in: bool,
    /// The client's ReadyForQuery, held while a probe runs.
    held_ready: Option<[u8; 6]>,
    /// What the running probe reported so far.
    probed: Option<Position>,
    /// Replies of a replica read held back while a recovery conflict could still send it
    /// elsewhere (DESIGN.md §5: no retry once the client has seen part of a result).
    /// Kept emptied between guarded reads (a replica read would otherwise allocate one per
    /// request).
    guard: BytesMut,
    /// The request sent last is guarded: its replies go to `guard`.
    guarding: bool,
    /// A recovery conflict cancelled the guarded read: its replies are dropped and the
    /// session runs it again on another node.
    conflicted: bool,
    /// The guarded read must move because its server connection is going away (a FATAL
    /// other than a conflict, or the connection was lost), not because of a conflict.
    lost: bool,
    /// The guarded read was refused for what a standby cannot do (an unlogged table, a
    /// write the classifier did not see): it runs again on the primary.
    refused: bool,
    /// An extended-protocol message failed before its Sync was sent (a pipeline with
    /// Flush): the server discards what follows up to the Sync, so those entries get no
    /// reply, Causeway's own included.
    skipping: bool,
    /// A FATAL the server sent while no request was pending (a shutdown, a timeout), for
    /// the session to relay if the connection was the client's session (boxed: rare, and
    /// every idle client keeps a relay).
    unsolicited: Option<Box<bytes::Bytes>>,
    /// A Flush went to the server when [`MAX_IN_FLIGHT`] was reached.
    flushed: bool,
}

impl Relay {
    /// Record a request.
    pub fn push(&mut self, entry: Pending) {
        super::io::push_back_kept(&mut self.pending, entry);
    }

    /// Whether a Sync sent now will be answered (PostgreSQL ignores Sync during COPY FROM STDIN).
    pub fn sync_is_answered(&self) -> bool {
        !self.copy_in
    }

    /// The client sent CopyDone or CopyFail.
    pub fn copy_ended(&mut self) {
        self.copy_in = false;
        self.pending.push_back(Pending::CopyEnd);
    }

    /// Whether the client must wait for replies before more of its requests are read: as
    /// many await replies as are kept ([`MAX_IN_FLIGHT`]). The first time, a Flush goes to
    /// `out`: PostgreSQL holds pipelined replies until a Sync or Flush, so without it the
    /// last replies (an error among them) could wait for requests that are not read. Not
    /// while the server skips to the next Sync or copies in (no reply comes before it).
    pub fn saturated(&mut self, out: &mut BytesMut) -> bool {
        if self.pending.len() < MAX_IN_FLIGHT || self.skipping || self.copy_in {
            self.flushed = false;
            return false;
        }
        if !std::mem::replace(&mut self.flushed, true) {
            out.extend_from_slice(&[tag::FLUSH, 0, 0, 0, 4]);
        }
        true
    }

    /// Whether every request has been answered.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// Send Causeway's own replies that are now at the front of the queue.
    pub fn emit_ready_synthetic(&mut self, out: &mut BytesMut) {
        if self.skipping {
            return;
        }
        loop {
            match self.pending.front() {
                Some(Pending::Synthetic(bytes)) => out.extend_from_slice(bytes),
                Some(Pending::CopyEnd) => {}
                _ => break,
            }
            self.pending.pop_front();
        }
    }

    /// Hold back the replies of the request about to be sent until its first result.
    pub fn guard(&mut self) {
        self.guarding = true;
    }

    /// End the guard: its replies are dropped (or were passed on), and its buffer is kept
    /// emptied for the next guarded read if it is small.
    fn end_guard(&mut self) {
        self.guarding = false;
        if self.guard.capacity() <= SPARE_GUARD_MAX {
            self.guard.clear();
        } else {
            self.guard = BytesMut::new();
        }
    }

    /// Whether a recovery conflict cancelled the guarded request.
    pub fn conflicted(&self) -> bool {
        self.conflicted
    }

    /// Whether the read is still guarded: nothing of its replies reached the client.
    pub fn guarding(&self) -> bool {
        self.guarding
    }

    /// Whether the read moves because its connection is going away (see `lost`).
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// The server connection was lost. Returns whether the guarded read can run elsewhere
    /// (nothing of it reached the client); its held replies are dropped.
    pub fn connection_lost(&mut self) -> bool {
        if !self.guarding {
            return false;
        }
        self.end_guard();
        self.conflicted = true;
        self.lost = true;
        true
    }

    /// Whether everything was answered but a replica read's position probe, the client's
    /// ReadyForQuery being held for it: the read itself is complete.
    pub fn awaits_only_replica_probe(&self) -> bool {
        self.held_ready.is_some()
            && self.pending.len() == 1
            && matches!(
                self.pending.front(),
                Some(Pending::Probe(ProbeKind::Replica { .. }))
            )
    }

    /// The FATAL the server sent between requests, if it did.
    pub fn take_unsolicited(&mut self) -> Option<bytes::Bytes> {
        self.unsolicited.take().map(|fatal| *fatal)
    }

    /// Whether the guarded read was refused by the standby (see `refused`).
    pub fn standby_refused(&self) -> bool {
        self.refused
    }

    /// The retried request has been handed on: forget the conflict.
    pub fn end_conflict(&mut self) {
        self.conflicted = false;
        self.lost = false;
        self.refused = false;
        self.end_guard();
        self.held_ready = None;
    }

    /// Handle one server message, writing what the client should see to `out` (or holding
    /// it back while a guarded replica read may still be retried).
    ///
    /// # Errors
    /// A reply that matches no outstanding request.
    pub fn on_message(
        &mut self,
        msg: MessageRef<'_>,
        state: &mut ClientState,
        server: &mut ServerState,
        out: &mut BytesMut,
    ) -> Result<Outcome, Desync> {
        if !self.guarding && !self.conflicted {
            return self.handle(msg, state, server, out);
        }
        if self.guarding && msg.tag == tag::ERROR_RESPONSE {
            // A conflict, or the server ending the connection (a shutdown, a terminated
            // backend), before any result: the read can run elsewhere.
            let fields = ErrorFields::parse(msg.body());
            let conflict = is_recovery_conflict(&fields);
            let refused = is_standby_refusal(&fields);
            if conflict || refused || fields.is_fatal() {
                self.conflicted = true;
                self.lost = !conflict && !refused;
                self.refused = refused;
                self.end_guard();
            }
        }
        if self.conflicted {
            let mut discard = BytesMut::new();
            return self.handle(msg, state, server, &mut discard);
        }
        let mut held = std::mem::take(&mut self.guard);
        let outcome = self.handle(msg, state, server, &mut held);
        let first_result = matches!(
            msg.tag,
            tag::DATA_ROW
                | tag::COMMAND_COMPLETE
                | tag::COPY_IN_RESPONSE
                | tag::COPY_OUT_RESPONSE
                | tag::EMPTY_QUERY_RESPONSE
                | tag::PORTAL_SUSPENDED
                | tag::ERROR_RESPONSE
                | tag::READY_FOR_QUERY
                | tag::NOTIFICATION_RESPONSE
        );
        if first_result || outcome.is_err() {
            out.extend_from_slice(&held);
            self.guard = held;
            self.end_guard();
        } else {
            self.guard = held;
        }
        outcome
    }

    fn handle(
        &mut self,
        msg: MessageRef<'_>,
        state: &mut ClientState,
        server: &mut ServerState,
        out: &mut BytesMut,
    ) -> Result<Outcome, Desync> {
        self.emit_ready_synthetic(out);
        if let Some(Pending::Probe(kind)) = self.pending.front() {
            return Ok(self.on_probe_reply(*kind, msg, out));
        }
        match msg.tag {
            tag::READY_FOR_QUERY => return self.on_ready(msg, state, server, out),
            tag::ERROR_RESPONSE => return Ok(self.on_error(msg, state, server, out)),
            tag::PARSE_COMPLETE => self.on_completion(msg, out, "Parse", |p| match p {
                Pending::Parse { forward, .. } => Some(*forward),
                _ => None,
            })?,
            tag::BIND_COMPLETE => self.on_completion(msg, out, "Bind", |p| {
                matches!(p, Pending::Bind { .. }).then_some(true)
            })?,
            tag::CLOSE_COMPLETE => self.on_completion(msg, out, "Close", |p| match p {
                Pending::Close { forward, .. } => Some(*forward),
                _ => None,
            })?,
            tag::ROW_DESCRIPTION | tag::NO_DATA => {
                if matches!(self.pending.front(), Some(Pending::Describe { .. })) {
                    self.pending.pop_front();
                }
                out.extend_from_slice(msg.raw);
            }
            tag::COMMAND_COMPLETE => {
                self.copy_in = false;
                self.on_command_complete(msg, state, server, out);
            }
            tag::COPY_IN_RESPONSE => {
                self.on_copy_in();
                out.extend_from_slice(msg.raw);
            }
            tag::EMPTY_QUERY_RESPONSE | tag::PORTAL_SUSPENDED => {
                if matches!(self.pending.front(), Some(Pending::Execute { .. })) {
                    self.pending.pop_front();
                }
                out.extend_from_slice(msg.raw);
            }
            _ => out.extend_from_slice(msg.raw),
        }
        self.emit_ready_synthetic(out);
        Ok(Outcome::Continue)
    }

    /// The server entered COPY FROM STDIN. For an extended-protocol COPY, Syncs it reads
    /// before the client's CopyDone/CopyFail are ignored, so drop their entries.
    fn on_copy_in(&mut self) {
        let extended = matches!(self.pending.front(), Some(Pending::Execute { .. }));
        let ended = self.pending.iter().any(|p| matches!(p, Pending::CopyEnd));
        self.copy_in = !ended;
        if !extended {
            return;
        }
        let mut index = 1;
        while let Some(entry) = self.pending.get(index) {
            match entry {
                Pending::CopyEnd => break,
                Pending::Sync => {
                    self.pending.remove(index);
                }
                _ => index += 1,
            }
        }
    }

    /// ParseComplete, BindComplete or CloseComplete: the reply to the entry at the front.
    /// `forward_of` says whether that entry is the expected kind, and if so whether the
    /// client sees the reply (not for the Parse and Close messages Causeway injects).
    fn on_completion(
        &mut self,
        msg: MessageRef<'_>,
        out: &mut BytesMut,
        expected: &'static str,
        forward_of: fn(&Pending) -> Option<bool>,
    ) -> Result<(), Desync> {
        let Some(forward) = self.pending.front().and_then(forward_of) else {
            return Err(Desync {
                message: msg.tag as char,
                expected,
            });
        };
        self.pending.pop_front();
        if forward {
            out.extend_from_slice(msg.raw);
        }
        Ok(())
    }

    fn desync(
        &mut self,
        popped: Option<Pending>,
        msg: MessageRef<'_>,
        expected: &'static str,
    ) -> Result<(), Desync> {
        if let Some(p) = popped {
            self.pending.push_front(p);
        }
        Err(Desync {
            message: msg.tag as char,
            expected,
        })
    }

    fn on_command_complete(
        &mut self,
        msg: MessageRef<'_>,
        state: &mut ClientState,
        server: &mut ServerState,
        out: &mut BytesMut,
    ) {
        let effect = match self.pending.front_mut() {
            Some(Pending::Execute { .. }) => match self.pending.pop_front() {
                Some(Pending::Execute { effect }) => effect,
                _ => Effect::None,
            },
            Some(Pending::Query { effects }) => effects.pop_front().unwrap_or(Effect::None),
            _ => Effect::None,
        };
        let effect = confirm_effect(effect, extended::command_tag(msg.body()));
        apply_server_impact(state.on_complete(effect.clone()), server);
        apply_server_effect(&effect, server);
        out.extend_from_slice(msg.raw);
    }

    fn on_probe_reply(
        &mut self,
        kind: ProbeKind,
        msg: MessageRef<'_>,
        out: &mut BytesMut,
    ) -> Outcome {
        match msg.tag {
            tag::DATA_ROW => self.probed = kind.position(msg.body()),
            tag::READY_FOR_QUERY => {
                self.pending.pop_front();
                return Outcome::Probed(self.probed.take());
            }
            // Asynchronous messages still belong to the client.
            tag::NOTIFICATION_RESPONSE | tag::PARAMETER_STATUS => out.extend_from_slice(msg.raw),
            tag::ERROR_RESPONSE => {
                self.probed = None;
                if ErrorFields::parse(msg.body()).is_fatal() {
                    // After a complete replica read the session lets the client go on
                    // without the position; otherwise it is told.
                    if !matches!(kind, ProbeKind::Replica { .. }) {
                        out.extend_from_slice(msg.raw);
                    }
                    return Outcome::Fatal;
                }
            }
            _ => {}
        }
        Outcome::Continue
    }

    /// Send the client's ReadyForQuery held during a probe (after the floor was recorded).
    pub fn release_ready(&mut self, out: &mut BytesMut) {
        if let Some(ready) = self.held_ready.take() {
            if !self.conflicted {
                out.extend_from_slice(&ready);
            }
        }
        self.emit_ready_synthetic(out);
    }

    fn on_ready(
        &mut self,
        msg: MessageRef<'_>,
        state: &mut ClientState,
        server: &mut ServerState,
        out: &mut BytesMut,
    ) -> Result<Outcome, Desync> {
        if std::mem::take(&mut self.skipping) {
            // The server discarded every message up to this Sync: they get no reply.
            while self
                .pending
                .front()
                .is_some_and(|p| !p.ends_extended_skip())
            {
                if let Some(entry) = self.pending.pop_front() {
                    forget_skipped(entry, state, server);
                }
            }
        }
        match self.pending.pop_front() {
            Some(p) if p.ends_extended_skip() => {}
            other => {
                self.desync(other, msg, "Sync or Query")?;
            }
        }
        self.copy_in = false;
        let status = TxStatus::from_byte(msg.body().first().copied().unwrap_or(b'I'));
        match (self.pending.front(), <[u8; 6]>::try_from(msg.raw)) {
            (Some(Pending::Probe(_)), Ok(ready)) => self.held_ready = Some(ready),
            _ => out.extend_from_slice(msg.raw),
        }
        let impact = state.on_ready(status);
        if status.is_idle() && server.fingerprint.is_some() {
            server.fingerprint = Some(state.fingerprint());
        }
        apply_server_impact(impact, server);
        self.emit_ready_synthetic(out);
        Ok(Outcome::Ready(status))
    }

    fn on_error(
        &mut self,
        msg: MessageRef<'_>,
        state: &mut ClientState,
        server: &mut ServerState,
        out: &mut BytesMut,
    ) -> Outcome {
        let fields = ErrorFields::parse(msg.body());
        if self.pending.is_empty() && fields.is_fatal() {
            // Nothing awaited it (a shutdown, a timeout or a terminated backend between
            // requests): the session drops the connection, and relays this only if the
            // connection was the client's session (session mode, an open transaction).
            self.unsolicited = Some(Box::new(bytes::Bytes::copy_from_slice(msg.raw)));
            return Outcome::Fatal;
        }
        state.on_error();
        self.copy_in = false;
        if fields.code == SqlState::INVALID_SQL_STATEMENT_NAME.code() && self.names_renamed() {
            // One of Causeway's statements is gone from the server behind its back (a
            // DEALLOCATE inside a function, another client of the same user): what is
            // recorded for this connection cannot be trusted, so each statement is prepared
            // again on its next use.
            tracing::info!(
                "a statement Causeway prepared on this server connection no longer exists; \
                 it will be prepared again on its next use"
            );
            server.prepared.lost();
        }
        let mut replacement = None;
        match self.pending.front_mut() {
            Some(Pending::Query { effects }) => effects.clear(),
            Some(Pending::Sync | Pending::FunctionCall) | None => {}
            Some(_) => {
                // An extended-protocol message failed: the server skips everything up to
                // the next Sync, so those requests will get no reply.
                while let Some(entry) = self.pending.front() {
                    if entry.ends_extended_skip() {
                        break;
                    }
                    if let Some(entry) = self.pending.pop_front() {
                        if let Pending::ReplaceError(bytes) = &entry {
                            replacement.get_or_insert_with(|| bytes.clone());
                        }
                        forget_skipped(entry, state, server);
                    }
                }
                // No Sync sent yet (a pipeline ended by Flush so far): what the client
                // sends up to its Sync is discarded too.
                self.skipping = self.pending.is_empty();
            }
        }
        match replacement {
            Some(bytes) => out.extend_from_slice(&bytes),
            None => out.extend_from_slice(msg.raw),
        }
        if fields.is_fatal() {
            Outcome::Fatal
        } else {
            Outcome::Continue
        }
    }
}

impl Relay {
    /// Whether the request the server is answering now names one of Causeway's statements.
    fn names_renamed(&self) -> bool {
        matches!(
            self.pending.front(),
            Some(Pending::Bind { renamed: true } | Pending::Describe { renamed: true })
        )
    }
}

/// SQLSTATE 40001 from a standby: a query cancelled (or a session ended) by a conflict
/// with WAL replay.
fn is_recovery_conflict(fields: &ErrorFields) -> bool {
    fields.code == SqlState::T_R_SERIALIZATION_FAILURE.code()
}

/// An error only a standby raises for a read that would run on the primary: a
/// read-only-transaction refusal (25006: something the classifier took for a read writes)
/// or a feature a standby lacks during recovery (0A000: unlogged or temporary tables).
/// Nothing was done, so the read can run on the primary.
fn is_standby_refusal(fields: &ErrorFields) -> bool {
    fields.code == SqlState::READ_ONLY_SQL_TRANSACTION.code()
        || (fields.code == SqlState::FEATURE_NOT_SUPPORTED.code()
            && fields.message.contains("during recovery"))
}

/// A statement's effect counts only if the server's command tag agrees (a `COMMIT` of a
/// failed transaction reports `ROLLBACK`; a `SET` inside a function call reports otherwise).
fn confirm_effect(effect: Effect, command_tag: &[u8]) -> Effect {
    let ok = match &effect {
        // A `SELECT set_config(...)` read as a SET answers with one row.
        Effect::Set { text, .. } => {
            command_tag == b"SET"
                || (command_tag == b"SELECT 1"
                    && text
                        .get(..6)
                        .is_some_and(|w| w.eq_ignore_ascii_case("select")))
        }
        Effect::Reset { .. } | Effect::ResetAll => command_tag == b"RESET",
        Effect::Prepare { .. } => command_tag == b"PREPARE",
        Effect::Deallocate { .. } => command_tag == b"DEALLOCATE",
        Effect::DeallocateAll => command_tag == b"DEALLOCATE ALL",
        Effect::DiscardAll => command_tag == b"DISCARD ALL",
        Effect::Rollback | Effect::RollbackToSavepoint => command_tag == b"ROLLBACK",
        Effect::None => true,
    };
    if ok {
        effect
    } else {
        Effect::None
    }
}

fn apply_server_effect(effect: &Effect, server: &mut ServerState) {
    match effect {
        Effect::Prepare { name, text } => {
            server
                .sql_prepared
                .insert(name.clone(), super::state::text_hash(text));
        }
        Effect::Deallocate { name } => {
            server.sql_prepared.remove(name);
        }
        _ => {}
    }
}

fn apply_server_impact(impact: ServerImpact, server: &mut ServerState) {
    match impact {
        ServerImpact::None => {}
        ServerImpact::Unknown => server.fingerprint = None,
        ServerImpact::StatementsGone => {
            server.prepared.clear();
            server.sql_prepared.clear();
        }
        ServerImpact::Everything => server.forget_everything(),
    }
}

/// Undo the optimistic bookkeeping of a request the server skipped or refused.
fn forget_skipped(entry: Pending, state: &mut ClientState, server: &mut ServerState) {
    match entry {
        Pending::Parse {
            server_name,
            client_name,
            ..
        } => {
            if let Some(name) = server_name {
                server.prepared.remove(&name);
            }
            if let Some(name) = client_name {
                state.statements.remove(&name);
            }
        }
        Pending::Close {
            restore: Some(name),
            ..
        } => server.prepared.restore(name),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
