//! Test harness for Causeway: starts a real PostgreSQL 15 primary, streaming replicas,
//! Redis and Prometheus on free loopback ports in a temporary directory, and tears them
//! down again (on Drop, and via a watchdog process when the test process exits without
//! Drop).

mod cluster;
mod pg;
mod pg_failover;
mod pg_init;
mod pg_sql;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod redis;
mod redis_cluster;
pub mod relay;
mod watchdog;

/// Guards a scratch directory of servers that is not a [`Cluster`] with the cluster watchdog.
pub use watchdog::spawn as spawn_watchdog;

pub use cluster::{normalize_lsn, Cluster, ClusterOptions, KEEP_ENV};
pub use pg::{PgNode, HOST};
pub use pg_sql::NodeLsns;
pub use redis::RedisNode;
pub use redis_cluster::RedisCluster;
pub use relay::Relay;
pub use tokio_postgres::types::PgLsn;
