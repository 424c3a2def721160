//! Causeway: a PostgreSQL wire-protocol proxy that pools server connections and routes reads
//! to streaming replicas without breaking read-your-writes or monotonic reads.
//!
//! # Layout
//! - [`config`]: typed TOML configuration with defaults and validation.
//! - [`protocol`]: framing, startup packets, extended-query views, encoders.
//! - [`auth`]: client authentication (md5, SCRAM-SHA-256 server side).
//! - [`sql`]: a lexical scanner that finds statements with session effects.
//! - [`classify`]: read/write classification of SQL with PostgreSQL's parser (pg_query).
//! - [`hints`]: query hints in SQL comments and `SET`/`SHOW`/`RESET causeway.*` commands.
//! - [`rules`]: `[[rules]]` from config turned into a per-statement routing policy.
//! - [`backend`]: server connections and bounded pools per (node, database, user).
//! - [`session`]: one client connection: startup, then the request/reply relay.
//! - [`cancel`]: Causeway's cancel keys mapped to server connections.
//! - [`lsn`]: WAL positions (`X/Y`), timeline positions, page-header normalization.
//! - [`monitor`]: per-node monitor tasks, replica lag and eviction, the shared `Topology`.
//! - [`server`]: accept loop and graceful shutdown.
//! - [`shutdown`]: two-stage shutdown signals (drain, then terminate).
//! - [`context`]: shared handles passed to every task.
//! - [`router`]: the pure routing decision (node and cause) from a request's class, the
//!   session's consistency requirement and the replicas' states; `policy` and `floor`.
//! - [`session_store`]: shared session floors (`memory` embedded store).
//! - [`functions`]: background refresh of volatile user functions from `pg_proc`.
//! - [`metrics`]: Prometheus metrics in an owned registry, with enum label values.
//! - [`admin`]: the admin HTTP server (`/metrics`, `/healthz`, `/readyz`, `/status`).
//! - [`status`]: what the admin server reports about this proxy (nodes, pools, readiness).
//! - [`tls`]: TLS towards clients (`[client_tls]`) and towards the nodes (`[server_tls]`).
//!
//! Data path, in order: `server::run` accepts → `session::serve` (with `[client_tls]`,
//! [`tls::serve`] first answers SSLRequest and shakes hands): `handshake` (startup,
//! authentication, first reply) → `frontend` (frame each client message: answer it,
//! collect it into a request, or forward it; statement renaming in `prepared`) →
//! `dispatch` (classify the request with [`classify`], work out its requirement with
//! [`router::policy`], pick a node with [`router::route`]) → `link` (acquire a server
//! connection there, restored to the client's state by `session::reset`) → `replies`
//! (match each reply to its request with `session::relay`, relay it; probe answers raise
//! the floor in `causal`) → `link` again (release the connection when the server is idle).
//! `failover` retries a replica read elsewhere when its server is lost before any result.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod cancel;
pub mod classify;
pub mod config;
pub mod console;
pub mod context;
pub mod functions;
pub mod hints;
pub mod lsn;
pub mod metrics;
pub mod monitor;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod rules;
pub mod server;
pub mod session;
pub mod session_store;
pub mod shutdown;
pub mod sql;
pub mod status;
pub mod tls;

pub use context::Context;
pub use shutdown::Shutdown;
