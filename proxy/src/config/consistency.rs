//! The `[consistency]` and `[lag]` sections: what reads may see, and when replicas are evicted.

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::keyword::keyword_enum;

keyword_enum! {
    /// Where a read may run (`consistency.default`, rules, hints and `SET causeway.consistency`).
    pub enum ConsistencyLevel {
        /// The primary only.
        Strong = "strong",
        /// A replica that has replayed the session's floor, else the primary.
        Session = "session",
        /// As `session`, and the replica's lag must also be within `max_lag`.
        Bounded = "bounded",
        /// Any replica in the pool; the floor is ignored.
        Eventual = "eventual",
    }
    default = Session;
}

/// `[consistency]`: the default read guarantee.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsistencyConfig {
    /// Level for reads without a hint, rule or `SET causeway.consistency`.
    /// Default: `session`.
    pub default: ConsistencyLevel,
    /// How long a read may wait for a replica to reach the session's floor before it
    /// falls back to the primary; `"0"` never waits. Default: `20ms`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_wait: Duration,
    /// Largest replica lag a `bounded` read accepts, unless a hint or rule sets
    /// `max_lag`. Default: `1s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_lag: Duration,
}

impl Default for ConsistencyConfig {
    fn default() -> Self {
        ConsistencyConfig {
            default: ConsistencyLevel::Session,
            max_wait: Duration::from_millis(20),
            max_lag: Duration::from_secs(1),
        }
    }
}

/// `[lag]`: replica monitoring, eviction and readmission.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LagConfig {
    /// How often each node is sampled. Default: `50ms`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub poll_interval: Duration,
    /// Evict a replica whose replay position is more than this many WAL bytes behind the
    /// primary. Default: `16777216` (16 MiB).
    pub max_bytes: u64,
    /// Evict a replica that is more than this far behind in time. Default: `5s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_seconds: Duration,
    /// An evicted replica is readmitted once its lag stays below this fraction of both
    /// limits, in (0, 1]. Default: `0.5`.
    pub readmit_fraction: f64,
    /// ...for this long without interruption. Default: `1s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub readmit_after: Duration,
    /// A node that could not be sampled for this long is unknown, and treated as evicted.
    /// Default: `1s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub stale_after: Duration,
    /// Time limit for one sample of one node. Default: `1s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub probe_timeout: Duration,
}

impl Default for LagConfig {
    fn default() -> Self {
        LagConfig {
            poll_interval: Duration::from_millis(50),
            max_bytes: 16_777_216,
            max_seconds: Duration::from_secs(5),
            readmit_fraction: 0.5,
            readmit_after: Duration::from_secs(1),
            stale_after: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
        }
    }
}
