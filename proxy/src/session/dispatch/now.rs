//! Routing a collected request without awaiting anything, when nothing about it has to
//! wait: it is classified on this thread, belongs to the connection's own session (no
//! floor to read from the store), needs no wait for a replica, and an idle server
//! connection already in the client's state is in the chosen node's pool. That is the
//! usual request, and it then costs what the primary-only path costs: no boxed future,
//! no pool timer. Whatever has to wait goes on the general path from where this one
//! stopped ([`Later`]), so nothing is decided twice.

use crate::protocol::{tag, Message};
use crate::router::Node;

use super::super::plan;
use super::{ends_request, Deciding};
use crate::session::{ClientStream, Session, SessionError};

/// What is left of a request after [`Session::dispatch_now`].
#[derive(Debug)]
pub(in crate::session) enum Later {
    /// Nothing: it was sent.
    Nothing,
    /// Route and run it on the general path (nothing about it was decided yet).
    Dispatch,
    /// Wait for a replica to catch up, then run it where the wait leads.
    Wait(Vec<Message>, Box<Deciding>),
    /// Run it on `node`: a server connection has to be waited for, or brought to the
    /// client's state.
    Run(Vec<Message>, Node),
}

impl<C: ClientStream> Session<C> {
    /// Route and send the collected request now if nothing about it has to wait.
    pub(in crate::session) fn dispatch_now(&mut self) -> Result<Later, SessionError> {
        let batch = &self.routing.batch;
        if self.link.server.is_some()
            || self.front.skip_until_sync
            || self.ctx.console.pause.is_paused()
            || !batch.last().is_some_and(|m| ends_request(m.tag))
            || batch.iter().any(|m| self.front.commands.claims(m))
        {
            return Ok(Later::Dispatch);
        }
        let Some(plan) = plan::plan_now(&self.ctx, &self.front, batch) else {
            return Ok(Later::Dispatch);
        };
        if self.shared_key(plan.hints.session.as_deref()).is_some() {
            return Ok(Later::Dispatch);
        }
        let needs_server = plan::needs_server(batch);
        let mut batch = self.routing.take_batch();
        self.routing.state_only = plan.state_only;
        let node = if needs_server {
            match self.choose_node_now(&plan) {
                Ok(node) => node,
                Err(deciding) => return Ok(Later::Wait(batch, deciding)),
            }
        } else {
            Node::Primary
        };
        tracing::debug!(?node, read_only = plan.read_only, "routing request");
        // For this request's Query only (see `Frontend::plain_query`).
        self.front.plain_query = plan.plain_query;
        let sent = self.send_now(&mut batch, node);
        self.front.plain_query = false;
        match sent {
            Ok(true) => {}
            Ok(false) => return Ok(Later::Run(batch, node)),
            Err(err) => {
                self.routing.state_only = false;
                return Err(err);
            }
        }
        self.routing.keep_batch_buffer(batch);
        self.routing.state_only = false;
        Ok(Later::Nothing)
    }

    /// Send a routed request's messages as `handle_message` would, as far as no server
    /// connection has to be waited for: true when all went; else `batch` keeps the rest.
    fn send_now(&mut self, batch: &mut Vec<Message>, node: Node) -> Result<bool, SessionError> {
        let mut done = 0;
        let mut result = Ok(true);
        for slot in batch.iter_mut() {
            let msg = &*slot;
            if self.front.skip_until_sync {
                // An error Causeway raised itself ended this extended-protocol batch.
                if msg.tag != tag::SYNC {
                    done += 1;
                    continue;
                }
                self.front.skip_until_sync = false;
            }
            if self.link.server.is_none() {
                match self.front.answer_without_server(msg, &mut self.to_client) {
                    Ok(true) => {
                        done += 1;
                        continue;
                    }
                    Ok(false) if !self.acquire_in_sync(node) => {
                        result = Ok(false);
                        break;
                    }
                    Ok(false) => {}
                    Err(err) => {
                        result = Err(err);
                        break;
                    }
                }
            }
            done += 1;
            // Moved out, not cloned: the sent part of `batch` is drained below.
            let msg = std::mem::take(slot);
            if let Err(err) = self.forward_message(msg) {
                result = Err(err);
                break;
            }
        }
        batch.drain(..done);
        result
    }

    /// Finish a request [`Session::dispatch_now`] could not.
    pub(in crate::session) async fn run_later(&mut self, later: Later) -> Result<(), SessionError> {
        match later {
            Later::Nothing => Ok(()),
            Later::Dispatch => self.dispatch_batch().await,
            Later::Wait(batch, deciding) => {
                let node = self.finish_choice(*deciding).await;
                self.run_batch(batch, node).await
            }
            Later::Run(batch, node) => self.run_batch(batch, node).await,
        }
    }
}
