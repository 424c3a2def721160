//! The `causeway` binary: parse arguments, load and check the configuration, set up logging,
//! bind the listener and run until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;

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
    let workers = match config.proxy.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
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
        .block_on(serve(config))
}

async fn serve(config: causeway::config::Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&config.proxy.listen)
        .await
        .with_context(|| format!("could not listen on {}", config.proxy.listen))?;
    tracing::info!(listen = %config.proxy.listen, "causeway listening");
    let ctx = causeway::Context::new(config, causeway::Shutdown::default())
        .map_err(|e| anyhow::anyhow!("could not set up the session store: {e}"))?;
    causeway::server::run(ctx, listener, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!(%err, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
