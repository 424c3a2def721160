//! The `causeway` binary: parse arguments, load and check the configuration, set up logging,
//! bind the listener and run until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;

/// mimalloc instead of the system allocator: every client connection allocates its
/// buffers and session state and frees them when it leaves, and glibc's malloc/free were
/// a quarter of the instructions spent per new connection (measured with callgrind).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// PostgreSQL wire-protocol proxy with connection pooling and consistent read routing.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE", conflicts_with = "check_config")]
    config: Option<PathBuf>,
    /// Validate a configuration file and exit (status 0 when valid).
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(path) = args.check_config {
        causeway::config::Config::load(&path)?;
        println!("{}: configuration is valid", path.display());
        return Ok(());
    }
    let path = args
        .config
        .context("missing --config FILE (or --check-config FILE)")?;
    let config = causeway::config::Config::load(&path)?;
    let workers = config.proxy.worker_threads();
    // One worker runs on a single-threaded runtime: no work-stealing overhead, the same
    // model as PgBouncer. More workers use tokio's multi-threaded scheduler.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder
        .enable_all()
        .build()
        .context("could not start the async runtime")?
        .block_on(serve(config, path))
}

async fn serve(config: causeway::config::Config, path: PathBuf) -> anyhow::Result<()> {
    // Signal handlers first: a SIGTERM that arrives once the port accepts connections must
    // already start a graceful shutdown, not kill the process; a SIGHUP (`systemctl
    // reload`) must reload, not kill it either.
    let shutdown = shutdown_signal()?;
    let hangups = hangup_signal()?;
    raise_open_file_limit();
    let listener = TcpListener::bind(&config.proxy.listen)
        .await
        .with_context(|| format!("could not listen on {}", config.proxy.listen))?;
    tracing::info!(listen = %config.proxy.listen, "causeway listening");
    let ctx = causeway::Context::new(config, causeway::Shutdown::default())
        .map_err(|e| anyhow::anyhow!("could not set up the session store: {e}"))?;
    ctx.reload.set_path(path);
    tokio::spawn(reload_on_hangup(ctx.clone(), hangups));
    causeway::server::run(ctx, listener, shutdown).await;
    Ok(())
}

/// Named background task: each SIGHUP rereads the configuration (logged and counted by
/// the reload itself), until the drain begins.
async fn reload_on_hangup(ctx: causeway::Context, mut hangups: Hangups) {
    loop {
        tokio::select! {
            () = next_hangup(&mut hangups) => {
                tracing::info!("SIGHUP: reloading the configuration");
                let ctx = ctx.clone();
                // The outcome is logged by the reload.
                let _ = tokio::task::spawn_blocking(move || causeway::reload::reload(&ctx)).await;
            }
            () = ctx.shutdown.drain.cancelled() => return,
        }
    }
}

#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;

/// Listens for SIGHUP from now on (its default action would end the process).
#[cfg(unix)]
fn hangup_signal() -> anyhow::Result<Hangups> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup()).context("cannot listen for SIGHUP")
}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) {
    if hangups.recv().await.is_none() {
        std::future::pending::<()>().await;
    }
}

#[cfg(not(unix))]
type Hangups = ();

#[cfg(not(unix))]
fn hangup_signal() -> anyhow::Result<Hangups> {
    Ok(())
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) {
    std::future::pending::<()>().await;
}

/// Raise the open-file soft limit to the hard limit: every client and server connection is a
/// descriptor, and the common soft limit of 1,024 runs out long before
/// `max_client_connections` does.
#[cfg(unix)]
fn raise_open_file_limit() {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE);
    match (before, rlimit::increase_nofile_limit(u64::MAX)) {
        (Ok((soft, hard)), Ok(now)) => {
            tracing::info!(soft, hard, now, "open-file limit raised to the hard limit")
        }
        (_, Err(err)) => tracing::warn!(%err, "could not raise the open-file limit"),
        (Err(err), Ok(now)) => tracing::info!(now, %err, "open-file limit raised"),
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit() {}

/// Completes on SIGINT (Ctrl-C) or SIGTERM; the handlers are installed when this is called.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
