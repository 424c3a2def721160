//! The `[proxy]` section: listeners, pooling, limits and timeouts.

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::keyword::keyword_enum;

keyword_enum! {
    /// When a server connection goes back to the pool (`proxy.pool_mode`).
    pub enum PoolMode {
        /// After each transaction (and each statement outside one): many clients share a
        /// few server connections.
        Transaction = "transaction",
        /// When the client disconnects: one server connection per client connection.
        Session = "session",
    }
    default = Transaction;
}

/// `[proxy]`: how Causeway listens, pools server connections and limits clients.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address for PostgreSQL clients. Default: `"127.0.0.1:6432"`.
    pub listen: String,
    /// Address of the admin HTTP server (`/metrics`, `/healthz`, `/readyz`, `/status`).
    /// Default: `"127.0.0.1:9930"`.
    pub admin_listen: String,
    /// When server connections return to the pool. Default: `transaction`.
    pub pool_mode: PoolMode,
    /// Maximum server connections per (node, database, user); a user's `pool_size`
    /// overrides it. Default: `20`.
    pub pool_size: usize,
    /// Maximum concurrent client connections; more are refused with SQLSTATE 53300.
    /// Default: `1000`.
    pub max_client_connections: usize,
    /// Time allowed to open a TCP connection to a node and log in. Default: `5s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub connect_timeout: Duration,
    /// A client must finish its startup and authentication within this time. Default: `15s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub startup_timeout: Duration,
    /// How long a client waits for a pooled server connection before it gets an error.
    /// Default: `30s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub checkout_timeout: Duration,
    /// Close client connections idle (outside a transaction) this long; `"0"` disables.
    /// Default: `"0"` (disabled).
    #[serde(deserialize_with = "duration::deserialize")]
    pub client_idle_timeout: Duration,
    /// Close pooled server connections unused this long; `"0"` disables. Default: `600s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub server_idle_timeout: Duration,
    /// A client that holds a server connection inside a transaction (or an unsynced
    /// extended-protocol request) and says nothing this long gets FATAL `25P03`, and the
    /// server connection is closed (its transaction rolls back); `"0"` disables.
    /// Default: `"0"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub idle_transaction_timeout: Duration,
    /// Close server connections older than this when they return to the pool; `"0"`
    /// disables. Default: `3600s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub server_lifetime: Duration,
    /// Largest protocol message accepted from a client or a server, in bytes: a longer
    /// one closes that connection with `08P01`. Default: `67108864` (64 MiB; PostgreSQL's
    /// own limit on a query is 1 GiB, but drivers and ORMs stay far below).
    pub max_message_bytes: usize,
    /// On shutdown, how long to wait for clients to finish before closing them.
    /// Default: `30s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub shutdown_timeout: Duration,
    /// Prepared statements kept per server connection (least recently used are closed).
    /// Default: `500`.
    pub max_prepared_statements: usize,
    /// Prepared statements a single client may hold. Default: `10000`.
    pub max_client_prepared_statements: usize,
    /// Bytes of statement text a single client may keep prepared (Causeway keeps every
    /// named statement's text to prepare it on any server connection); past it a Parse
    /// fails with `53400`. Default: `16777216` (16 MiB).
    pub max_client_prepared_bytes: usize,
    /// Runtime worker threads; `0` means half the CPUs, at least one (one on a 2-CPU host,
    /// where a single-threaded runtime was fastest, see [`ProxyConfig::worker_threads`]).
    /// Default: `0`.
    pub workers: usize,
    /// File holding the admin bearer token: when set, every admin endpoint but `/healthz`
    /// and `/readyz` wants `Authorization: Bearer <token>`. Default: none (open).
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Users who may open the admin console (database `causeway`); they authenticate as
    /// any client does. Default: none (the console is closed).
    pub admin_users: Vec<String>,
    /// `/readyz` also answers ready while the primary is unreachable if a replica is in
    /// the read pool (reads and logins go on; writes wait for a primary). Default: `false`
    /// (ready only when the primary is reachable).
    pub ready_without_primary: bool,
    /// This instance's id among peered Causeway instances (1 to 255; see `[[peers]]`): the
    /// cancel keys it hands out name it, so another instance that receives a CancelRequest
    /// for one of its clients forwards it here. Default: `0` (no peering).
    pub peer_id: u16,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:6432".to_owned(),
            admin_listen: "127.0.0.1:9930".to_owned(),
            pool_mode: PoolMode::Transaction,
            pool_size: 20,
            max_client_connections: 1000,
            connect_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(15),
            checkout_timeout: Duration::from_secs(30),
            client_idle_timeout: Duration::ZERO,
            server_idle_timeout: Duration::from_secs(600),
            idle_transaction_timeout: Duration::ZERO,
            server_lifetime: Duration::from_secs(3600),
            max_message_bytes: 67_108_864,
            shutdown_timeout: Duration::from_secs(30),
            max_prepared_statements: 500,
            max_client_prepared_statements: 10_000,
            max_client_prepared_bytes: 16 << 20,
            workers: 0,
            admin_token_file: None,
            admin_users: Vec::new(),
            ready_without_primary: false,
            peer_id: 0,
        }
    }
}

impl ProxyConfig {
    /// Number of runtime worker threads: `workers`, or when it is 0 half the CPUs this
    /// process may use (cgroup quotas included), at least one.
    ///
    /// A proxy shares its host with its clients or its database: on the 2-CPU benchmark VM
    /// one worker (a single-threaded runtime, PgBouncer's model) gave 8–12 % more
    /// throughput than two, which paid for work stealing and cross-thread wake-ups while
    /// PostgreSQL and pgbench wanted the same CPUs (docs/benchmarks.md).
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        auto_workers(std::thread::available_parallelism().map_or(1, usize::from))
    }
}

/// Worker threads for `cpus` CPUs when `workers = 0`: half of them, at least one.
pub(super) fn auto_workers(cpus: usize) -> usize {
    (cpus / 2).max(1)
}
