//! Typed configuration: the TOML file (DESIGN.md §6) parsed into structs and checked once.
//!
//! Every key has a default except the node addresses (`[primary]` and each `[[replicas]]`).
//! Durations are strings such as `"50ms"` ([`parse_duration`]). Unknown keys are rejected
//! with their name and line, and [`Config::validate`] names the field, the bad value and
//! what to do about it, so a bad file fails at startup (or `--check-config`), not later.

mod auth;
mod consistency;
mod duration;
mod failover;
mod keyword;
mod monitor;
mod nodes;
mod peers;
mod proxy;
mod routing;
pub mod secret;
mod session;
mod store_endpoint;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use auth::{AuthConfig, AuthMethod, DEFAULT_AUTH_QUERY};
pub use consistency::{ConsistencyConfig, ConsistencyLevel, LagConfig};
pub use duration::{parse_duration, DurationError};
pub use failover::{FailoverConfig, FailoverMode};
pub use keyword::UnknownKeyword;
pub use monitor::{MonitorConfig, DEFAULT_MONITOR_DATABASE};
pub use nodes::{PrimaryConfig, ReplicaConfig, UserConfig};
pub use peers::PeerConfig;
pub use proxy::{PoolMode, ProxyConfig};
pub use routing::{FunctionsConfig, RouteTarget, RuleConfig, RuleMatcher};
pub use session::{
    SessionConfig, SessionKeyMode, SessionScope, SessionStoreConfig, SessionStoreKind,
    REDIS_URL_SCHEMES,
};
pub use store_endpoint::{SentinelEndpoint, StoreEndpoint};

/// The primary's node name in metrics, logs and `/status`; no replica may use it.
pub const PRIMARY_NODE_NAME: &str = "primary";

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Io {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The text is not valid TOML, has an unknown key, or a value of the wrong type; the
    /// message carries the line and column.
    #[error(transparent)]
    Parse(#[from] toml::de::Error),
    /// A value is out of range or inconsistent with another one.
    #[error("{field}: {message}")]
    Invalid {
        /// Path of the offending key, such as `replicas[1].name`.
        field: String,
        /// The bad value and what to do about it.
        message: String,
    },
    /// A parse or validation error in a named file (returned by [`Config::load`]).
    #[error("in config file {}", path.display())]
    InFile {
        /// The file that was loaded.
        path: PathBuf,
        /// The error found in it.
        source: Box<ConfigError>,
    },
}

impl ConfigError {
    /// Builds an [`ConfigError::Invalid`].
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field path of a validation error, looking through [`ConfigError::InFile`].
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::InFile { source, .. } => source.field(),
            ConfigError::Io { .. } | ConfigError::Parse(_) => None,
        }
    }
}

/// The whole configuration file. Sections other than `[primary]` may be omitted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[proxy]`: listeners, pooling, limits and timeouts.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// `[primary]`: the node that takes writes. Required.
    pub primary: PrimaryConfig,
    /// `[[replicas]]`: streaming replicas that may serve reads. Default: none.
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
    /// `[[users]]`: database users and their passwords. Default: none.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// `[auth]`: client authentication.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[consistency]`: default read guarantee.
    #[serde(default)]
    pub consistency: ConsistencyConfig,
    /// `[lag]`: replica monitoring and eviction.
    #[serde(default)]
    pub lag: LagConfig,
    /// `[monitor]`: how the replica monitor's control connections log in.
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// `[session]`: how sessions are keyed.
    #[serde(default)]
    pub session: SessionConfig,
    /// `[session_store]`: where session floors are kept.
    #[serde(default)]
    pub session_store: SessionStoreConfig,
    /// `[[rules]]`: routing policy by tag, table or application name. Default: none.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// `[functions]`: read-only / writing function overrides.
    #[serde(default)]
    pub functions: FunctionsConfig,
    /// `[[peers]]`: other Causeway instances cancels are forwarded to. Default: none.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// `[failover]`: following a promotion, and waiting for a primary.
    #[serde(default)]
    pub failover: FailoverConfig,
}

impl Config {
    /// Parses TOML text and validates it.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML, unknown keys or wrongly typed values;
    /// [`ConfigError::Invalid`] when [`Config::validate`] rejects a value.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the file at `path`.
    ///
    /// # Errors
    /// [`ConfigError::Io`] if the file cannot be read; otherwise the error of
    /// [`Config::from_toml`] wrapped in [`ConfigError::InFile`] so it names the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|error| ConfigError::InFile {
            path: path.to_owned(),
            source: Box::new(error),
        })
    }

    /// Checks ranges and cross-field rules that serde cannot express.
    ///
    /// # Errors
    /// The first [`ConfigError::Invalid`] found, naming the field and the bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }

    /// The `[[users]]` entry named `name`, if any.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|user| user.name == name)
    }

    /// The login of the replica monitor's control connections (to `monitor.database`): the
    /// first `[[users]]` entry with a plaintext password (a SCRAM secret or md5 hash cannot
    /// log in without a client), else the first entry, else `postgres`.
    pub fn control_login(&self) -> (&str, Option<&str>) {
        let plaintext = |p: &str| {
            !p.is_empty()
                && crate::auth::secret::SecretForm::of(p)
                    == Ok(crate::auth::secret::SecretForm::Plain)
        };
        let with_password = self
            .users
            .iter()
            .find(|u| u.password.as_deref().is_some_and(plaintext));
        match with_password.or_else(|| self.users.first()) {
            Some(user) => (
                user.name.as_str(),
                user.password.as_deref().filter(|p| plaintext(p)),
            ),
            None => ("postgres", None),
        }
    }

    /// `proxy.peer_id` and `[[peers]]` as the cancel registry takes them.
    pub fn cancel_peers(&self) -> (u8, Vec<(u8, crate::cancel::Peer)>) {
        let peers = self
            .peers
            .iter()
            .map(|p| {
                let peer = crate::cancel::Peer {
                    host: std::sync::Arc::from(p.host.as_str()),
                    port: p.port,
                };
                (peers::peer_byte(p.id), peer)
            })
            .collect();
        (peers::peer_byte(self.proxy.peer_id), peers)
    }

    /// The `[[replicas]]` entry named `name`, if any.
    pub fn replica(&self, name: &str) -> Option<&ReplicaConfig> {
        self.replicas.iter().find(|replica| replica.name == name)
    }

    /// Server connections per (node, database) for `user`: the user's `pool_size` if set,
    /// else `proxy.pool_size`.
    pub fn pool_size_for(&self, user: &str) -> usize {
        self.user(user)
            .and_then(|user| user.pool_size)
            .unwrap_or(self.proxy.pool_size)
    }
}
