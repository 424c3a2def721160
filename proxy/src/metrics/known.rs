//! Series whose label values are known before any traffic (the configured nodes, and the
//! enums behind every reason, op and outcome), created at zero at startup: a fresh instance
//! exports them, dashboards show 0 instead of "No data", and `increase()` sees each
//! series' first event. Only label combinations that can occur are created.

use super::labels::{ConnState, ProtocolKind, RouteReason, StoreOp};
use super::Metrics;
use crate::monitor::EvictionReason;
use crate::sql::PinReason;

/// Reasons a query goes to the primary (`router::policy::route_label` of a primary route,
/// plus hints, rules, node-local statements, unparseable text and `BEGIN`).
pub(super) const PRIMARY_ROUTES: &[RouteReason] = &[
    RouteReason::Write,
    RouteReason::Pinned,
    RouteReason::ConsistencyStrong,
    RouteReason::Hint,
    RouteReason::Rule,
    RouteReason::NoReplica,
    RouteReason::ConsistencyFallback,
    RouteReason::NodeLocal,
    RouteReason::Transaction,
    RouteReason::Unparseable,
];

/// Reasons a query goes to a replica.
pub(super) const REPLICA_ROUTES: &[RouteReason] = &[
    RouteReason::ReadOnly,
    RouteReason::FreshReplica,
    RouteReason::Hint,
    RouteReason::Rule,
];

/// Whether a replica can be evicted for `reason` (`InRecovery` is the primary's).
pub(super) fn replica_can_be_evicted_for(reason: EvictionReason) -> bool {
    reason != EvictionReason::InRecovery
}

impl Metrics {
    /// Creates at zero every series whose labels are known from the configured nodes:
    /// `primary` is the primary's node name, `replicas` the replicas' in config order.
    /// With `follows` (`[failover] mode = "follow"`) any node may be the primary or a
    /// replica, so every node gets the series of both roles. Calling it again changes
    /// nothing.
    pub fn start_at_zero(&self, primary: &str, replicas: &[&str], follows: bool) {
        let nodes: Vec<&str> = std::iter::once(primary)
            .chain(replicas.iter().copied())
            .collect();
        let (primaries, readers): (&[&str], &[&str]) = if follows {
            (&nodes, &nodes)
        } else {
            (&nodes[..1], replicas)
        };
        let s = &self.shared;
        for node in primaries {
            for reason in PRIMARY_ROUTES {
                s.queries.with_label_values(&[node, reason.as_str()]);
            }
        }
        for replica in readers {
            for reason in REPLICA_ROUTES {
                s.queries.with_label_values(&[replica, reason.as_str()]);
            }
            for reason in EvictionReason::ALL {
                if replica_can_be_evicted_for(reason) {
                    s.replica_evictions
                        .with_label_values(&[replica, reason.label()]);
                }
            }
            s.replica_lag_bytes.with_label_values(&[replica]);
            s.replica_lag_seconds.with_label_values(&[replica]);
            s.replica_in_pool.with_label_values(&[replica]);
        }
        for node in &nodes {
            s.query_duration.with_label_values(&[node]);
            s.checkout_wait.with_label_values(&[node]);
            for state in ConnState::ALL {
                s.server_connections
                    .with_label_values(&[node, state.as_str()]);
            }
        }
        for op in StoreOp::ALL {
            s.session_store_duration.with_label_values(&[op.as_str()]);
        }
        for reason in PinReason::ALL {
            s.pins.with_label_values(&[reason.label()]);
        }
        for kind in ProtocolKind::ALL {
            s.protocol_errors.with_label_values(&[kind.as_str()]);
        }
    }
}
