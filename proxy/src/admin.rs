//! The admin HTTP server on its own port (`[proxy] admin_listen`): `GET /metrics`,
//! `/healthz`, `/readyz` and `/status`; with `[proxy] admin_token_file`, everything but
//! `/healthz` and `/readyz` wants `Authorization: Bearer <token>` (`token`).
//!
//! Built on hyper 1 directly rather than axum: four fixed GET routes need no router, and
//! hyper's connection builder exposes what keeps a slow or hostile client from holding
//! resources (a header-read timeout, a small read buffer, no keep-alive), with fewer crates to
//! build. The server knows the rest of the proxy only through [`StatusSource`].

mod routes;
mod token;

pub use token::AdminToken;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use routes::State;

/// What the admin server reports about the proxy.
pub trait StatusSource: Send + Sync + 'static {
    /// A JSON snapshot for `/status`: nodes, LSNs, lag, state, pools, session-store health.
    fn status(&self) -> serde_json::Value;

    /// `Ok` when the proxy can serve (the primary is reachable), else the reason it cannot.
    /// Runs on the blocking thread pool, so it may block briefly (a connect with a timeout).
    ///
    /// # Errors
    /// The reason the proxy is not ready, shown in the `/readyz` body.
    fn ready(&self) -> Result<(), String>;

    /// Update sampled gauges (pool sizes, client counts) just before a `/metrics` scrape.
    fn collect(&self, _metrics: &Metrics) {}

    /// `POST /reload`: reread the configuration. Runs on the blocking thread pool.
    ///
    /// # Errors
    /// Why nothing changed (no file, an unreadable or invalid file).
    fn reload(&self) -> Result<String, String> {
        Err("reload is not available here".to_owned())
    }
}

/// Bounds on what one admin client can hold.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// The request head must arrive within this time.
    header_read_timeout: Duration,
    /// A connection is closed after this long, whatever it is doing.
    connection_deadline: Duration,
    /// Concurrent admin connections; more are closed at once.
    max_connections: usize,
    /// Read buffer per connection, which caps the request head (hyper's minimum is 8 KiB).
    max_buf_bytes: usize,
    /// On shutdown, how long in-flight requests may take to finish.
    shutdown_grace: Duration,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        connection_deadline: Duration::from_secs(30),
        max_connections: 64,
        max_buf_bytes: 16 * 1024,
        shutdown_grace: Duration::from_secs(2),
    };
}

/// Serve the admin endpoints on `listener` until `shutdown` resolves, then let in-flight
/// requests finish for a moment and return.
///
/// # Errors
/// None today: accept errors are logged and retried; the `Result` leaves room for setup
/// failures.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    source: Arc<dyn StatusSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_protected(listener, metrics, source, None, shutdown).await
}

/// [`serve`], with every endpoint but `/healthz` and `/readyz` behind `token` when set.
///
/// # Errors
/// As [`serve`].
pub async fn serve_protected(
    listener: TcpListener,
    metrics: Metrics,
    source: Arc<dyn StatusSource>,
    token: Option<AdminToken>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(State {
        metrics,
        source,
        token,
    });
    serve_with(listener, state, shutdown, Limits::DEFAULT).await
}

async fn serve_with(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let conn = serve_connection(stream, state.clone(), stop.clone(), limits);
                        connections.spawn(hold(permit, conn));
                    }
                    Err(_) => tracing::debug!(%peer, "admin: too many connections, closing"),
                },
                Err(err) => {
                    tracing::warn!(%err, "admin: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    stop.cancel();
    connections.close();
    let _ = tokio::time::timeout(limits.shutdown_grace, connections.wait()).await;
    Ok(())
}

/// Run `task` while holding a connection permit.
async fn hold(_permit: OwnedSemaphorePermit, task: impl Future<Output = ()>) {
    task.await;
}

/// One HTTP/1.1 connection: a single request (no keep-alive), within the limits.
async fn serve_connection(
    stream: TcpStream,
    state: Arc<State>,
    stop: CancellationToken,
    limits: Limits,
) {
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(routes::handle(&state, request).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .max_buf_size(limits.max_buf_bytes)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let finished = tokio::time::timeout(limits.connection_deadline, async {
        tokio::select! {
            result = conn.as_mut() => result,
            () = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await
            }
        }
    })
    .await;
    match finished {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(%err, "admin: connection error"),
        Err(_) => tracing::debug!("admin: connection deadline reached, closing"),
    }
}

#[cfg(test)]
mod tests;
