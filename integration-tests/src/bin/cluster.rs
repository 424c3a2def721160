//! `cluster up`: starts a local test cluster (PostgreSQL primary, replicas, Redis) for
//! trying Causeway by hand, prints how to reach it, and tears it down on Ctrl-C/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use integration_tests::{Cluster, ClusterOptions};

/// Local PostgreSQL + Redis cluster for Causeway development.
#[derive(Parser, Debug)]
#[command(name = "cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a cluster and keep it running until Ctrl-C or SIGTERM.
    Up {
        /// Number of streaming replicas.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// Do not start redis-server.
        #[arg(long)]
        no_redis: bool,
        /// Write a Causeway config for this cluster (listen 127.0.0.1:6432, admin
        /// 127.0.0.1:9930) to this path.
        #[arg(long)]
        causeway_config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let Cmd::Up {
        replicas,
        no_redis,
        causeway_config,
    } = Cli::parse().command;
    let started = std::time::Instant::now();
    let cluster = Cluster::start(ClusterOptions {
        replicas,
        redis: !no_redis,
    })?;
    print_summary(&cluster, started.elapsed());
    if let Some(path) = causeway_config {
        // With Redis, the local Causeway shares session floors through it, as several
        // instances would (`[session] key = "user"` or a session= hint makes them shared).
        let store = cluster.redis.as_ref().map_or(String::new(), |redis| {
            format!(
                "[session_store]\nkind = \"redis\"\nurl = \"{}\"\n",
                redis.url()
            )
        });
        let toml = cluster.causeway_config_toml("127.0.0.1:6432", "127.0.0.1:9930", &store);
        std::fs::write(&path, toml).with_context(|| format!("writing {}", path.display()))?;
        println!("causeway config: {}", path.display());
        println!("  run: causeway --config {}", path.display());
    }
    println!("ready; press Ctrl-C to stop");
    wait_for_shutdown_signal()?;
    println!("stopping cluster");
    drop(cluster);
    Ok(())
}

/// Prints the directory, each node's port and a psql command line.
fn print_summary(cluster: &Cluster, took: std::time::Duration) {
    println!("cluster started in {:.1}s", took.as_secs_f64());
    println!("directory: {}", cluster.dir().display());
    for node in std::iter::once(&cluster.primary).chain(&cluster.replicas) {
        println!(
            "{:<9} port {:<5} {}",
            node.name,
            node.port,
            node.psql_command("app", "app")
        );
        println!("{:<9} log {}", "", node.log_file.display());
    }
    if let Some(redis) = &cluster.redis {
        println!(
            "{:<9} port {:<5} redis-cli -p {}",
            "redis", redis.port, redis.port
        );
    }
}

/// Blocks until SIGINT or SIGTERM arrives.
fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C"),
            _ = term.recv() => Ok(()),
        }
    })
}
