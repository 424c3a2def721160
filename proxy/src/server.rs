//! The listener: accepts client connections, spawns a session for each, prunes idle server
//! connections in the background, and drains on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::context::Context;
use crate::status::ProxyStatus;

/// Run the proxy on `listener` until `shutdown` resolves, then drain: stop accepting, let
/// transactions finish for up to `shutdown_timeout`, then close everything with 57P01.
pub async fn run(
    ctx: Context,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let tasks = TaskTracker::new();
    // Replica monitoring (DESIGN.md §5); sessions route reads with its view.
    // (From the latest configuration: a reload may have come first.)
    let latest = ctx.reload.live();
    crate::monitor::Monitor::spawn_with_tls(
        &latest.config,
        &ctx.topology,
        &ctx.shutdown,
        &tasks,
        ctx.pools.settings().tls.clone(),
    );
    // The eviction thresholds, so dashboards can draw them next to the replicas' lag.
    let lag = &ctx.config.lag;
    ctx.metrics.set_lag_limits(lag.max_bytes, lag.max_seconds);
    tasks.spawn(prune_pools(ctx.clone()));
    tasks.spawn(publish_replica_metrics(ctx.clone()));
    // Always: a reload may add the first replica (it reads nothing while there is none).
    tasks.spawn(crate::functions::refresh_volatile_functions(ctx.clone()));
    spawn_admin(&ctx, &tasks).await;
    // Sessions share one copy: cloning the context per connection cost an atomic
    // increment and decrement per handle in it.
    let mut shared = Arc::new(ctx.clone());
    let mut generation = ctx.reload.generation();
    // The accept loop waits on a token, which is cheap to poll once per connection; the
    // shutdown future (signal streams) is awaited by a task of its own.
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // After a reload, new connections get the new settings (one atomic
                    // load per connection otherwise).
                    if ctx.reload.generation() != generation {
                        let live = ctx.reload.live();
                        generation = live.generation;
                        shared = Arc::new(ctx.with_live(&live));
                    }
                    tasks.spawn(crate::session::serve(shared.clone(), stream, peer));
                }
                Err(err) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut stopped => break,
        }
    }
    watcher.abort();
    drop(listener);
    tracing::info!("shutting down: no new connections, waiting for transactions to finish");
    ctx.shutdown.start_drain();
    tasks.close();
    let deadline = ctx.config.proxy.shutdown_timeout;
    if tokio::time::timeout(deadline, tasks.wait()).await.is_err() {
        tracing::info!(
            ?deadline,
            "shutdown deadline reached, closing remaining connections"
        );
        ctx.shutdown.start_terminate();
        let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    }
    tracing::info!("shutdown complete");
}

/// Named background task: close idle server connections past their timeouts.
async fn prune_pools(ctx: Context) {
    let every = (ctx.config.proxy.server_idle_timeout / 2)
        .clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = interval.tick() => ctx.pools.prune(),
            () = ctx.shutdown.drain.cancelled() => return,
        }
    }
}

/// Named background task: the admin HTTP server on `admin_listen`, until the drain begins.
/// If the address cannot be bound, log an error and carry on serving clients without it:
/// losing `/metrics` must not take the database path down.
async fn spawn_admin(ctx: &Context, tasks: &TaskTracker) {
    let addr = ctx.config.proxy.admin_listen.as_str();
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%err, addr, "admin server cannot listen; serving clients without it");
            return;
        }
    };
    if let Ok(local) = listener.local_addr() {
        tracing::info!(addr = %local, "admin server listening");
    }
    // A token that cannot be read leaves the admin server off rather than open.
    let token = match &ctx.config.proxy.admin_token_file {
        Some(path) => match crate::admin::AdminToken::load(path) {
            Ok(token) => Some(token),
            Err(err) => {
                tracing::error!(%err, "proxy.admin_token_file: admin server not started");
                return;
            }
        },
        None => None,
    };
    let source = Arc::new(ProxyStatus::new(ctx.clone()));
    let metrics = ctx.metrics.clone();
    let drain = ctx.shutdown.drain.clone();
    tasks.spawn(async move {
        let stopped = async move { drain.cancelled().await };
        if let Err(err) =
            crate::admin::serve_protected(listener, metrics, source, token, stopped).await
        {
            tracing::error!(%err, "admin server failed");
        }
    });
}

/// Named background task: publish the monitor's view as replica gauges and eviction counts.
async fn publish_replica_metrics(ctx: Context) {
    let mut seen = std::collections::HashMap::new();
    let every = ctx.config.lag.poll_interval.max(Duration::from_millis(50));
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                crate::status::publish_topology(&ctx.topology, &ctx.metrics, &mut seen);
                ctx.metrics.set_store_up(ctx.store.health().up);
            }
            () = ctx.shutdown.drain.cancelled() => return,
        }
    }
}
