//! Where an `auth_query` lookup runs: on the primary now; when it cannot be reached (down,
//! restarting, being replaced), on each replica the monitor has admitted to the read pool,
//! in config order, until one answers. `pg_authid` is replicated, so a replica knows the
//! same users; its copy may be as old as its lag, so a password changed within that window
//! may still be accepted by the old value until the replica replays the change (the cache
//! rules are the same whichever node answered). A primary that answers with an error
//! (auth_user refused, a bad query) is not retried elsewhere. While Causeway is paused
//! (`PAUSE`), a lookup waits for `RESUME` like any other new server connection.

use super::query::{self, Failure};
use super::LookupError;
use crate::backend::{Login, NodeAddr};
use crate::context::Context;

/// Looks up `user` (see the module documentation for which node answers). Returns the
/// stored password text, or `None` for an unknown user.
///
/// # Errors
/// Causeway stayed paused past the wait limit; the primary refused; or neither the primary
/// nor any admitted replica could be reached (the primary's error).
pub async fn run(ctx: &Context, login: &Login, user: &str) -> Result<Option<String>, LookupError> {
    if ctx.console.pause.is_paused() {
        let limit = crate::console::pause::limit(&ctx.config);
        if tokio::time::timeout(limit, ctx.console.pause.pass())
            .await
            .is_err()
        {
            return Err(LookupError(format!(
                "Causeway is paused (PAUSE) and was not resumed within {limit:?}"
            )));
        }
    }
    let settings = ctx.pools.settings();
    let auth_query = &ctx.config.auth.auth_query;
    let primary = ctx.primary_now();
    let primary_error = match query::run(primary, login, settings, auth_query, user).await {
        Ok(found) => return Ok(found),
        Err(Failure::Failed(err)) => return Err(err),
        Err(Failure::Unreachable(err)) => err,
    };
    for replica in admitted_replicas(ctx, primary) {
        match query::run(&replica, login, settings, auth_query, user).await {
            Ok(found) => {
                tracing::info!(user = ?user, replica = %replica.name, err = %primary_error,
                    "primary unreachable; auth_query answered by a replica");
                return Ok(found);
            }
            Err(failure) => {
                let err = failure.into_error();
                tracing::debug!(replica = %replica.name, %err, "auth_query on a replica failed");
            }
        }
    }
    Err(primary_error)
}

/// The replicas usable for reads now, in config order, without the node that was just
/// tried as the primary.
fn admitted_replicas(ctx: &Context, primary: &NodeAddr) -> Vec<NodeAddr> {
    let snapshot = ctx.topology.snapshot();
    ctx.replicas
        .iter()
        .map(|r| &r.addr)
        .filter(|addr| addr.name != primary.name)
        .filter(|addr| snapshot.node(&addr.name).is_some_and(|n| n.is_usable()))
        .cloned()
        .collect()
}
