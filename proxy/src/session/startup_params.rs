//! The server parameters of a new client's startup reply when no cached ones fit: from a
//! primary connection, which also proves the login and the client's startup parameters;
//! or, while the primary cannot be reached, from what its pool reported before, else from
//! a replica's connection, so that logins and replica reads go on without a primary
//! (DESIGN.md §9). Requests that need the primary then wait for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::link::unavailable;
use super::state::ClientState;
use super::{reset, SessionError};
use crate::backend::pool::ServerParams;
use crate::backend::{Login, Pool, PoolError, ServerConn};
use crate::context::Context;

/// The parameters for the reply, and the server connection a session-mode client keeps.
pub(super) type First = (ServerParams, Option<Box<ServerConn>>);

/// Checks out a connection of the primary's `pool` for the client's first reply; see the
/// module documentation for what happens when the primary cannot be reached.
pub(super) async fn first_server(
    ctx: &Context,
    pool: &Arc<Pool>,
    login: &Login,
    pool_size: Option<usize>,
    state: &ClientState,
    session_mode: bool,
    waiting_for_server: &AtomicBool,
) -> Result<First, SessionError> {
    waiting_for_server.store(true, Ordering::Relaxed);
    // PAUSE holds a login's first checkout too (its own error when not resumed in time).
    let held = crate::console::pause::hold_checkout(ctx, pool).await?;
    ctx.console.stats.waited(&pool.key.database, held);
    let max_message = ctx.config.proxy.max_message_bytes;
    let result = match pool.checkout().await {
        Ok(mut server) => {
            reset::apply(state, &mut server, max_message).await?;
            pool.accept_startup(state.fingerprint());
            let params = Arc::new(server.params.clone());
            if session_mode {
                Ok((params, Some(server)))
            } else {
                pool.checkin(server);
                Ok((params, None))
            }
        }
        Err(err) if unavailable(&err) => without_primary(ctx, pool, login, pool_size, state, err)
            .await
            .map(|params| (params, None)),
        Err(err) => Err(err.into()),
    };
    waiting_for_server.store(false, Ordering::Relaxed);
    result
}

/// Parameters for a client while the primary cannot be reached: those its pool reported
/// before, else a usable replica's (whose connection also checks the startup parameters).
async fn without_primary(
    ctx: &Context,
    pool: &Pool,
    login: &Login,
    pool_size: Option<usize>,
    state: &ClientState,
    primary_error: PoolError,
) -> Result<ServerParams, SessionError> {
    if let Some(params) = pool.startup_params() {
        tracing::info!(err = %primary_error,
            "primary unreachable; the client logs in with the parameters it reported before");
        return Ok(params);
    }
    let snapshot = ctx.topology.snapshot();
    let usable = ctx
        .replicas
        .iter()
        .filter(|r| snapshot.node(&r.addr.name).is_some_and(|n| n.is_usable()));
    for replica in usable {
        let replica_pool = ctx.pools.get(&replica.addr, login, pool_size);
        let mut server = match replica_pool.checkout().await {
            Ok(server) => server,
            Err(err) => {
                tracing::debug!(replica = %replica.addr.name, %err, "replica unavailable for a login");
                continue;
            }
        };
        if let Err(err) = reset::apply(state, &mut server, ctx.config.proxy.max_message_bytes).await
        {
            server.close();
            return Err(err.into());
        }
        replica_pool.accept_startup(state.fingerprint());
        let params = as_primary(&server.params);
        replica_pool.checkin(server);
        tracing::info!(err = %primary_error, replica = %replica.addr.name,
            "primary unreachable; the client logs in with a replica's parameters");
        return Ok(params);
    }
    Err(primary_error.into())
}

/// A replica's parameters as the primary would report them: Causeway stands for the
/// primary, so `in_hot_standby` says off (libpq's `target_session_attrs` reads it).
fn as_primary(params: &[(String, String)]) -> ServerParams {
    let params = params
        .iter()
        .map(|(name, value)| match name.as_str() {
            "in_hot_standby" => (name.clone(), "off".to_owned()),
            _ => (name.clone(), value.clone()),
        })
        .collect();
    Arc::new(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicas_parameters_are_reported_as_the_primarys() {
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        let replica = [pair("in_hot_standby", "on"), pair("server_version", "15.4")];
        let params = as_primary(&replica);
        assert_eq!(
            *params,
            [
                pair("in_hot_standby", "off"),
                pair("server_version", "15.4")
            ]
        );
    }
}
