//! The `[failover]` section: whether Causeway follows a promotion to another configured
//! node, and how long requests that need the primary wait for one (DESIGN.md §9).

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::keyword::keyword_enum;
use super::ConfigError;

keyword_enum! {
    /// `failover.mode`.
    pub enum FailoverMode {
        /// `[primary]` is the primary, always; a promoted replica is only evicted.
        Off = "off",
        /// Every configured node is a candidate: the one not in recovery on the highest
        /// timeline is the primary.
        Follow = "follow",
    }
    default = Off;
}

/// Longest accepted `failover.query_wait_timeout` (a client waits this long at most).
const MAX_QUERY_WAIT: Duration = Duration::from_secs(3600);

/// `[failover]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverConfig {
    /// `off` (default) or `follow`.
    pub mode: FailoverMode,
    /// How long a request that needs the primary waits for one while there is none (down,
    /// restarting, not promoted yet) before it fails with `08006`; `"0"` fails at once.
    /// Applies in both modes. Default: `30s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub query_wait_timeout: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            mode: FailoverMode::Off,
            query_wait_timeout: Duration::from_secs(30),
        }
    }
}

impl FailoverConfig {
    /// Whether `mode = "follow"`.
    pub fn follows(&self) -> bool {
        self.mode == FailoverMode::Follow
    }

    /// Range checks.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.query_wait_timeout > MAX_QUERY_WAIT {
            return Err(ConfigError::invalid(
                "failover.query_wait_timeout",
                format!(
                    "{:?} is longer than the {MAX_QUERY_WAIT:?} a client can be kept waiting; \
                     use a shorter wait (default \"30s\")",
                    self.query_wait_timeout
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::Config;
    use super::*;

    const BASE: &str = "[primary]\nhost = \"db\"\nport = 5432\n";

    #[test]
    fn defaults_are_off_and_thirty_seconds() {
        let config = Config::from_toml(BASE).unwrap();
        assert_eq!(config.failover, FailoverConfig::default());
        assert_eq!(config.failover.mode, FailoverMode::Off);
        assert!(!config.failover.follows());
        assert_eq!(config.failover.query_wait_timeout, Duration::from_secs(30));
    }

    #[test]
    fn follow_mode_and_wait_parse() {
        let text = format!("{BASE}[failover]\nmode = \"follow\"\nquery_wait_timeout = \"2s\"\n");
        let config = Config::from_toml(&text).unwrap();
        assert!(config.failover.follows());
        assert_eq!(config.failover.query_wait_timeout, Duration::from_secs(2));
        let zero = format!("{BASE}[failover]\nquery_wait_timeout = \"0\"\n");
        assert_eq!(
            Config::from_toml(&zero)
                .unwrap()
                .failover
                .query_wait_timeout,
            Duration::ZERO
        );
    }

    #[test]
    fn bad_values_are_rejected_with_their_name() {
        let mode = format!("{BASE}[failover]\nmode = \"auto\"\n");
        let err = Config::from_toml(&mode).unwrap_err().to_string();
        assert!(err.contains("auto") && err.contains("follow"), "{err}");
        let unknown = format!("{BASE}[failover]\nmodes = \"off\"\n");
        assert!(Config::from_toml(&unknown).is_err());
        let long = format!("{BASE}[failover]\nquery_wait_timeout = \"2h\"\n");
        let err = Config::from_toml(&long).unwrap_err();
        assert_eq!(err.field(), Some("failover.query_wait_timeout"), "{err}");
        let bad = format!("{BASE}[failover]\nquery_wait_timeout = \"soon\"\n");
        assert!(Config::from_toml(&bad).is_err());
    }
}
