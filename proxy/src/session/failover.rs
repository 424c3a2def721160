//! When a server connection goes away or a replica read is cancelled: a read none of whose
//! replies reached the client runs again elsewhere (DESIGN.md §5); a read answered in full
//! whose position probe was lost still completes; anything else ends the session with
//! `08006`, as the client's transaction, if any, is gone.

use super::link::Held;
use super::replies::Deferred;
use super::{ClientStream, Session, SessionError};
use crate::metrics::FallbackReason;

impl<C: ClientStream> Session<C> {
    /// A recovery conflict cancelled a replica read, or its connection went away, before
    /// any result reached the client: run the same messages again, avoiding that replica.
    pub(super) async fn retry_elsewhere(
        &mut self,
        mut held: Held,
        reusable: bool,
    ) -> Result<(), SessionError> {
        let sent = held.retry.take().unwrap_or_default();
        let reason = if held.relay.standby_refused() {
            // Another replica would refuse it too: the primary runs it.
            self.routing.force_primary = true;
            FallbackReason::StandbyRefused
        } else if held.relay.lost() {
            FallbackReason::ReplicaLost
        } else {
            FallbackReason::RecoveryConflict
        };
        held.relay.end_conflict();
        self.routing.exclude = held.node.replica();
        self.link.discard(held, reusable);
        // The cancelled attempt's named statements never reached the client.
        self.front.forget_parsed(&sent);
        self.ctx.metrics.fallback(reason);
        for msg in sent {
            self.routing.collect(msg);
        }
        self.dispatch_batch().await
    }

    /// The server connection broke. A replica read none of whose replies reached the
    /// client is returned, to run elsewhere; otherwise the client is told (08006).
    pub(super) fn on_server_lost(&mut self) -> Result<Option<Held>, SessionError> {
        let Some(mut held) = self.link.take(&self.ctx.replicas) else {
            return Ok(None);
        };
        self.link.cancel.detach();
        let name = held.conn.node.name.clone();
        if self.front.tx.is_idle() && held.is_idle() && !self.link.session_mode {
            tracing::debug!(node = %name, "idle server connection closed");
            return Ok(None);
        }
        if self.read_done_position_lost(&mut held) {
            return Ok(None);
        }
        if held.retry.is_some() && held.relay.connection_lost() {
            tracing::info!(
                client.addr = %self.peer(),
                user = ?self.link.login.user,
                database = ?self.link.login.database,
                node = %name,
                "replica connection lost before any result; the read will run elsewhere"
            );
            return Ok(Some(held));
        }
        Err(SessionError::ServerLost(format!(
            "connection to {name} closed"
        )))
    }

    /// The server sent FATAL and is closing the connection; whatever it said in answer to
    /// a request was relayed.
    pub(super) fn on_fatal(&mut self) -> Result<Option<Deferred>, SessionError> {
        let held = self.link.take(&self.ctx.replicas);
        self.link.cancel.detach();
        if let Some(mut held) = held {
            if held.relay.conflicted() {
                return Ok(Some(Deferred::Retry(Box::new(held), false)));
            }
            let unsolicited = held.relay.take_unsolicited();
            let between_requests = self.front.tx.is_idle() && held.is_idle();
            if between_requests && !self.link.session_mode {
                tracing::debug!(
                    node = %held.conn.node.name,
                    "the server ended a connection between requests"
                );
                return Ok(None);
            }
            if !between_requests && self.read_done_position_lost(&mut held) {
                return Ok(None);
            }
            if let Some(fatal) = unsolicited {
                // The connection was the client's session (session mode, or a transaction
                // open there): it ends as PostgreSQL ended it, e.g. idle_session_timeout.
                self.to_client.extend_from_slice(&fatal);
                return Err(SessionError::ServerEnded);
            }
        }
        Err(SessionError::ServerLost(
            "the server ended the connection".into(),
        ))
    }

    /// A replica read was answered in full but its connection went away before the
    /// position probe behind it did: the client gets its ReadyForQuery, and the session's
    /// floor becomes unknown (its reads go to the primary until a write sets it again).
    /// Returns false, doing nothing, for anything else.
    fn read_done_position_lost(&mut self, held: &mut Held) -> bool {
        if !self.front.tx.is_idle() || !held.relay.awaits_only_replica_probe() {
            return false;
        }
        tracing::info!(
            client.addr = %self.peer(),
            node = %held.conn.node.name,
            "replica connection lost after a read's result, before its position; \
             this session reads from the primary until its next write"
        );
        self.routing.floors.forget(crate::router::Unknown::Position);
        held.relay.release_ready(&mut self.to_client);
        true
    }
}
