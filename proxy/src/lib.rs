//! Causeway: a PostgreSQL wire-protocol proxy that pools server connections and (in later
//! stages) routes reads to replicas without breaking read-your-writes.
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
//! - [`router`]: the pure routing decision (node and reason) from a request's class, the
//!   session's consistency requirement and the replicas' states.
//! - [`session_store`]: shared session floors (`memory` embedded store).
//! - [`functions`]: background refresh of volatile user functions from `pg_proc`.
//! - [`metrics`]: Prometheus metrics in an owned registry, with enum label values.
//! - [`admin`]: the admin HTTP server (`/metrics`, `/healthz`, `/readyz`, `/status`).
//! - [`status`]: what the admin server reports about this proxy (nodes, pools, readiness).
//!
//! Data path: `server::run` accepts → `session::serve` authenticates the client, then for
//! each request checks out a server connection from the pool, brings it to the client's
//! session state (`session::reset`), forwards the request (rewriting prepared-statement
//! names, `session::client_msg`) and relays replies (`session::relay`) until the server is
//! idle again, when the connection goes back to the pool.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod cancel;
pub mod classify;
pub mod config;
pub mod context;
pub mod functions;
pub mod hints;
pub mod lsn;
pub mod metrics;
pub mod monitor;
pub mod protocol;
pub mod router;
pub mod rules;
pub mod server;
pub mod session;
pub mod session_store;
pub mod shutdown;
pub mod sql;
pub mod status;

pub use context::Context;
pub use shutdown::Shutdown;
