//! The primary's pool for one client, following [`crate::monitor::PrimaryView`]: switched
//! when the primary changes (the old node's idle connections are closed), and waited for
//! up to `failover.query_wait_timeout` while there is no primary or it cannot be reached
//! (DESIGN.md §9).

use std::time::Duration;

use tokio::time::Instant;

use super::{timed_checkout, Link};
use crate::backend::{BackendError, PoolError, ServerConn};
use crate::context::Context;
use crate::router::Node;
use crate::session::SessionError;

impl Link {
    /// Whether the held primary pool is the current primary's (one atomic load and a
    /// name comparison).
    pub(in crate::session) fn primary_current(&self, ctx: &Context) -> bool {
        let current = ctx.topology.primary().current().node;
        current
            .and_then(|i| ctx.nodes.get(i))
            .is_some_and(|addr| addr.name == self.pool.node().name)
    }

    /// A connection from the current primary's pool. While there is no primary, or it
    /// refuses connections (down, restarting), waits up to `failover.query_wait_timeout`
    /// for one, then fails with `08006`.
    pub(super) async fn checkout_primary(
        &mut self,
        ctx: &Context,
    ) -> Result<Box<ServerConn>, SessionError> {
        let view = ctx.topology.primary();
        let wait = ctx.config.failover.query_wait_timeout;
        // The clock is read only once waiting starts (not on the usual path).
        let mut window: Option<(Instant, Instant)> = None;
        let mut start_window = || {
            *window.get_or_insert_with(|| {
                let now = Instant::now();
                (now, now + wait)
            })
        };
        loop {
            let current = view.current();
            let Some(node) = current.node else {
                let (started, deadline) = start_window();
                if Instant::now() >= deadline {
                    return Err(no_primary(started.elapsed(), wait, None));
                }
                view.changed_since(current.generation, deadline).await;
                continue;
            };
            self.use_primary(ctx, node);
            let err = match timed_checkout(ctx, &self.pool, Node::Primary).await {
                Ok(conn) => return Ok(conn),
                Err(err) if unavailable(&err) => err,
                Err(err) => return Err(err.into()),
            };
            let (started, deadline) = start_window();
            let now = Instant::now();
            if now < deadline {
                tracing::debug!(%err, "primary unavailable; waiting for it");
                let retry = (now + ctx.config.lag.poll_interval).min(deadline);
                view.changed_since(current.generation, retry).await;
            } else if wait.is_zero() {
                return Err(err.into());
            } else {
                return Err(no_primary(started.elapsed(), wait, Some(err)));
            }
        }
    }

    /// Makes `self.pool` the pool of node `node`, the primary now.
    fn use_primary(&mut self, ctx: &Context, node: usize) {
        let Some(addr) = ctx.nodes.get(node) else {
            return;
        };
        if self.pool.node().name == addr.name {
            return;
        }
        let pool = ctx.pools.get(addr, &self.login, self.pool_size);
        let old = std::mem::replace(&mut self.pool, pool);
        // Connections to a node that is no longer the primary are never written to again.
        old.close_idle();
        tracing::info!(from = %old.node().name, to = %addr.name, "writes follow the new primary");
    }
}

/// A failure that waiting may cure: the server is down, restarting or shutting down.
pub(in crate::session) fn unavailable(err: &PoolError) -> bool {
    match err {
        PoolError::Backend(
            BackendError::Connect { .. }
            | BackendError::Timeout { .. }
            | BackendError::Closed { .. }
            | BackendError::Io(_),
        ) => true,
        // cannot_connect_now (starting up, shutting down), admin or crash shutdown.
        PoolError::Backend(BackendError::Refused(refusal)) => {
            matches!(refusal.fields.code.as_str(), "57P01" | "57P02" | "57P03")
        }
        _ => false,
    }
}

fn no_primary(waited: Duration, timeout: Duration, last: Option<PoolError>) -> SessionError {
    SessionError::NoPrimary {
        waited,
        timeout,
        last: last.map(|err| err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_server_that_is_down_or_restarting_is_waited_for() {
        let node = || "primary".to_owned();
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let down = [
            BackendError::Connect {
                node: node(),
                source: refused,
            },
            BackendError::Timeout { node: node() },
            BackendError::Closed { node: node() },
        ];
        for err in down {
            assert!(unavailable(&PoolError::Backend(err)));
        }
        let busy = PoolError::CheckoutTimeout(Duration::from_secs(1), node());
        assert!(!unavailable(&busy), "a busy pool is not a missing primary");
        let auth = BackendError::NoPassword { node: node() };
        assert!(!unavailable(&PoolError::Backend(auth)));
    }
}
