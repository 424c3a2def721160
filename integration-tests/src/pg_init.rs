//! Creating cluster nodes: initdb + roles for the primary, pg_basebackup for replicas.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

use crate::pg::{PgNode, HOST};
use crate::ports::free_port;
use crate::process::{self, chown_for_postgres, pg_command};

/// How many ports a node start tries before giving up on "address already in use".
const PORT_ATTEMPTS: usize = 5;

/// Settings shared by all nodes, appended to the primary's postgresql.conf (replicas get
/// them through pg_basebackup). Per-node settings live in the included `node.conf`.
const COMMON_CONF: &str = "
# --- causeway integration-tests harness ---
listen_addresses = '127.0.0.1'
fsync = off
max_connections = 300
wal_level = replica
max_wal_senders = 10
wal_keep_size = '512MB'
hot_standby = on
hot_standby_feedback = on
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
wal_receiver_status_interval = '1s'
include 'node.conf'
";

/// Client authentication for every node.
const PG_HBA: &str = "\
local all all trust
local replication all trust
host replication all 127.0.0.1/32 trust
host all postgres 127.0.0.1/32 trust
host all app_trust 127.0.0.1/32 trust
host all app_md5 127.0.0.1/32 md5
host all all 127.0.0.1/32 scram-sha-256
";

/// Roles, database and extensions created on the primary before any basebackup.
const SETUP_SQL: &str = "
CREATE ROLE app LOGIN PASSWORD 'secret' CREATEDB;
SET password_encryption = 'md5';
CREATE ROLE app_md5 LOGIN PASSWORD 'secret';
RESET password_encryption;
CREATE ROLE app_trust LOGIN;
CREATE ROLE app_reader NOLOGIN;
GRANT app_reader TO app;
CREATE DATABASE app OWNER app;
GRANT ALL ON DATABASE app TO app, app_md5, app_trust;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
\\connect app
GRANT ALL ON SCHEMA public TO app, app_md5, app_trust;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
";

/// Creates, configures and starts the primary in `cluster_dir/primary`, with roles.
pub(crate) fn create_primary(cluster_dir: &Path) -> anyhow::Result<PgNode> {
    let node = PgNode::new("primary", cluster_dir, 0);
    fs::create_dir_all(&node.node_dir).context("creating primary directory")?;
    chown_for_postgres(&node.node_dir)?;
    process::run(
        pg_command("initdb", &node.node_dir)
            .args([
                "--no-sync",
                "--no-instructions",
                "-U",
                "postgres",
                "-A",
                "trust",
            ])
            .args(["-E", "UTF8", "--locale=C", "-D"])
            .arg(&node.data_dir),
        "initdb of the primary",
    )?;
    append(&node.data_dir.join("postgresql.conf"), COMMON_CONF)?;
    fs::write(node.data_dir.join("pg_hba.conf"), PG_HBA).context("writing pg_hba.conf")?;
    let node = start_on_free_port(node)?;
    run_setup_sql(&node)?;
    Ok(node)
}

/// Clones `primary` with pg_basebackup into `cluster_dir/name` and starts it as a hot
/// standby streaming from the primary with `application_name=name`.
pub(crate) fn create_replica(
    cluster_dir: &Path,
    name: &str,
    primary: &PgNode,
) -> anyhow::Result<PgNode> {
    let node = PgNode::new(name, cluster_dir, 0);
    fs::create_dir_all(&node.node_dir).with_context(|| format!("creating {name} directory"))?;
    chown_for_postgres(&node.node_dir)?;
    process::run(
        pg_command("pg_basebackup", &node.node_dir)
            .args([
                "-h",
                HOST,
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-D"])
            .arg(&node.data_dir),
        &format!(
            "pg_basebackup for {name} from primary port {}",
            primary.port
        ),
    )?;
    let conninfo = format!(
        "host={HOST} port={} user=postgres application_name={name}",
        primary.port
    );
    fs::write(
        node.data_dir.join("postgresql.auto.conf"),
        format!("# written by the causeway test harness\nprimary_conninfo = '{conninfo}'\n"),
    )
    .with_context(|| format!("writing {name} postgresql.auto.conf"))?;
    start_on_free_port(node)
}

/// Turns the stopped `node` into a hot standby of `primary` in place (same directory and
/// port): its data directory is replaced by a fresh pg_basebackup, as an operator does
/// with an old primary that cannot be rewound. Starts it.
pub(crate) fn rebuild_as_replica(node: &PgNode, primary: &PgNode) -> anyhow::Result<()> {
    if node.data_dir.exists() {
        fs::remove_dir_all(&node.data_dir)
            .with_context(|| format!("removing {}", node.data_dir.display()))?;
    }
    process::run(
        pg_command("pg_basebackup", &node.node_dir)
            .args([
                "-h",
                HOST,
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-D"])
            .arg(&node.data_dir),
        &format!("pg_basebackup for {} from port {}", node.name, primary.port),
    )?;
    let conninfo = format!(
        "host={HOST} port={} user=postgres application_name={}",
        primary.port, node.name
    );
    fs::write(
        node.data_dir.join("postgresql.auto.conf"),
        format!("# written by the causeway test harness\nprimary_conninfo = '{conninfo}'\n"),
    )
    .with_context(|| format!("writing {} postgresql.auto.conf", node.name))?;
    // The copied node.conf names the source's port.
    write_node_conf(node)?;
    node.start()
}

/// Starts `node` on a fresh free port, writing `node.conf`; retries with another port
/// when the chosen one was taken in the meantime.
fn start_on_free_port(mut node: PgNode) -> anyhow::Result<PgNode> {
    let mut last_err = None;
    for _ in 0..PORT_ATTEMPTS {
        node.port = free_port()?;
        write_node_conf(&node)?;
        let log_len = fs::metadata(&node.log_file).map(|m| m.len()).unwrap_or(0);
        match node.start() {
            Ok(()) => return Ok(node),
            Err(e) if new_log_mentions(&node, log_len, "already in use") => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    match last_err {
        Some(e) => Err(e.context(format!("{}: no free port after retries", node.name))),
        None => bail!("{}: no port attempts made", node.name),
    }
}

/// Writes the per-node settings: port and socket directory.
fn write_node_conf(node: &PgNode) -> anyhow::Result<()> {
    let text = format!(
        "port = {}\nunix_socket_directories = '{}'\n",
        node.port,
        node.node_dir.display()
    );
    let path = node.data_dir.join("node.conf");
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    chown_for_postgres(&node.node_dir)
}

/// Whether the part of the node's log written after byte `from` contains `needle`.
fn new_log_mentions(node: &PgNode, from: u64, needle: &str) -> bool {
    let Ok(bytes) = fs::read(&node.log_file) else {
        return false;
    };
    let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).contains(needle)
}

/// Appends `text` to the file at `path`.
fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("appending to {}", path.display()))
}

/// Creates roles, the `app` database and extensions with psql (no async runtime needed).
fn run_setup_sql(primary: &PgNode) -> anyhow::Result<()> {
    let file = primary.node_dir.join("setup.sql");
    fs::write(&file, SETUP_SQL).context("writing setup.sql")?;
    process::run(
        std::process::Command::new(process::pg_bin("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST])
            .args([
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-f")
            .arg(&file),
        "creating roles and database app on the primary",
    )?;
    Ok(())
}
