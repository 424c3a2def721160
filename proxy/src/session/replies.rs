//! Server-to-client direction: each buffered server reply is matched to its request by the
//! [`Relay`](super::relay::Relay) and copied to the client; what needs waiting (a causal
//! probe's answer, a read that must run elsewhere) is handed back as [`Deferred`].

use bytes::Buf;

use super::link::Held;
use super::probe::ProbeKind;
use super::relay::Outcome;
use super::{ClientStream, Session, SessionError};
use crate::lsn::Position;
use crate::protocol::TxStatus;
use crate::router::{Node, Sticky, Unprobed};

/// What relaying replies left to do that has to wait.
pub(super) enum Deferred {
    /// A causal probe answered: record the position (may write to the session store).
    Probed(ProbeKind, Node, Option<Position>),
    /// A recovery conflict cancelled a replica read, or its server went away: run it
    /// elsewhere (`reusable`: the connection itself is fine).
    Retry(Box<Held>, bool),
}

impl<C: ClientStream> Session<C> {
    /// Do what relaying replies left to do that has to wait, then relay the rest.
    pub(super) async fn on_deferred(&mut self, mut deferred: Deferred) -> Result<(), SessionError> {
        loop {
            match deferred {
                Deferred::Probed(kind, node, position) => {
                    self.on_probed(kind, node, position).await;
                }
                Deferred::Retry(held, reusable) => {
                    return Box::pin(self.retry_elsewhere(*held, reusable)).await
                }
            }
            match self.relay_replies()? {
                Some(next) => deferred = next,
                None => return Ok(()),
            }
        }
    }

    /// Inspect the buffered replies in place and copy what the client should see, until
    /// they run out or one needs [`Session::on_deferred`]. Plain functions all the way:
    /// this runs for every reply.
    pub(super) fn relay_replies(&mut self) -> Result<Option<Deferred>, SessionError> {
        loop {
            let Some(held) = self.link.server.as_mut() else {
                return Ok(None);
            };
            let conn = &mut held.conn;
            let msg = match crate::protocol::next_ref(&conn.read_buf, self.max_message) {
                Ok(Some(msg)) => msg,
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(SessionError::ServerLost(format!(
                        "{} sent a malformed message: {e}",
                        conn.node.name
                    )))
                }
            };
            let consumed = msg.raw.len();
            let was_conflicted = held.relay.conflicted();
            let outcome = held.relay.on_message(
                msg,
                &mut self.front.state,
                &mut conn.session,
                &mut self.to_client,
            );
            conn.read_buf.advance(consumed);
            if !was_conflicted && held.relay.conflicted() {
                tracing::info!(
                    client.addr = %self.link.cancel.info().addr,
                    user = ?self.link.login.user,
                    database = ?self.link.login.database,
                    node = %conn.node.name,
                    lost = held.relay.lost(),
                    "a replica read was cancelled or its connection is ending before any \
                     result; it will run elsewhere"
                );
            }
            match outcome? {
                Outcome::Continue => {}
                Outcome::Probed(position) => {
                    let kind = held.probe.unwrap_or(ProbeKind::Primary);
                    return Ok(Some(Deferred::Probed(kind, held.node, position)));
                }
                Outcome::Ready(status) => self.on_ready(status),
                Outcome::Fatal => return self.on_fatal(),
            }
            let conflicted = self
                .link
                .server
                .as_ref()
                .is_some_and(|held| held.relay.conflicted() && held.relay.is_idle());
            if conflicted {
                if let Some(held) = self.link.take(&self.ctx.replicas) {
                    return Ok(Some(Deferred::Retry(Box::new(held), true)));
                }
            }
        }
    }

    /// A request ended with ReadyForQuery: time it, and remember a replica read that ran
    /// without a probe (later reads stick to that replica).
    fn on_ready(&mut self, status: TxStatus) {
        let Some(held) = self.link.server.as_mut() else {
            return;
        };
        if let Some(started) = held.started.take() {
            let now = std::time::Instant::now();
            let took = now.saturating_duration_since(started);
            if let Some(timers) = self.ctx.timers_of(held.node) {
                timers.query(took);
            }
            self.stats.request(started, took, status.is_idle());
            held.answered = Some(now);
        }
        if held.node == Node::Primary && held.probe.is_some() && !held.keyed {
            // The request is covered once the monitor samples the primary after now. A
            // setting changed outside a transaction (SET, RESET) read and wrote nothing.
            if status.is_idle() && !(held.state_only && self.front.tx.is_idle()) {
                let view = self.ctx.topology.primary();
                let primary = view.current();
                self.routing.floors.primary_unprobed(Unprobed {
                    done: std::time::Instant::now(),
                    generation: primary.generation,
                });
                // Sampled right after it, the floor is as tight as a probe's would be.
                let name = primary.node.and_then(|i| view.name(i));
                if let Some(name) = name.filter(|_| self.routing.replica_reader) {
                    self.ctx.topology.sample_soon(name);
                }
            }
        } else if let (Node::Replica(replica), None, true) =
            (held.node, held.probe, self.routing.request.monotonic)
        {
            let connection = self
                .ctx
                .replicas
                .get(replica)
                .map_or(0, |r| self.ctx.topology.replica_connection(&r.addr.name));
            self.routing.floors.read_unprobed(Sticky {
                replica,
                done: std::time::Instant::now(),
                connection,
            });
        }
        self.front.tx = status;
        if status.is_idle() {
            self.front.portals.clear();
        }
    }
}
