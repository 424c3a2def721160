//! The `[monitor]` section: how Causeway's own control connections log in.

use serde::Deserialize;

/// Default of `monitor.database`: the maintenance database every cluster has.
pub const DEFAULT_MONITOR_DATABASE: &str = "postgres";

/// `[monitor]`: the control connections of the replica monitor (DESIGN.md §5).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Database the monitor's control connections log in to, on every node. The login
    /// user is the first `[[users]]` entry with a password; it needs the `CONNECT`
    /// privilege on this database (PUBLIC has it on `postgres` by default). Not the
    /// database clients use: the samples read only server-wide functions and views.
    /// Default: `"postgres"`.
    pub database: String,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            database: DEFAULT_MONITOR_DATABASE.to_owned(),
        }
    }
}
