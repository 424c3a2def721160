//! End-to-end test binary: real PostgreSQL primary + replicas + Redis via the harness, real
//! clients through an in-process Causeway.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod admin;
mod auth;
mod backend_faults;
mod bad_input;
mod basic;
mod cancel;
mod clients;
mod commit_samples;
mod console;
mod credentials;
mod dashboards;
mod deploy_files;
mod docker;
mod failover;
mod fresh_metrics;
mod guides;
mod harness;
mod kubernetes;
mod lifecycle;
mod memory_bounds;
mod monitor;
mod named_sessions;
mod prepared_recovery;
mod protocol_compat;
mod reload;
mod reload_nodes;
mod routed_clients;
mod routing;
mod routing_corpus;
mod session_store;
mod shared_sessions;
mod state_bleed;
mod sticky_reads;
mod store_faults;
mod support;
mod tls;
mod waits;
