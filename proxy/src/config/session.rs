//! The `[session]` and `[session_store]` sections: what a session is and where floors live.

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::keyword::keyword_enum;

keyword_enum! {
    /// Default scope of a session when no hint or `SET causeway.session` names one
    /// (`session.key`).
    pub enum SessionKeyMode {
        /// Each client connection is its own session (no session store traffic).
        Connection = "connection",
        /// All connections of one database user share a session.
        User = "user",
    }
    default = Connection;
}

keyword_enum! {
    /// Whom a named session belongs to (`session.scope`, DESIGN.md §3).
    pub enum SessionScope {
        /// A key names a session of one database user in one database: user `a`'s
        /// `session=k` and user `b`'s are two sessions.
        User = "user",
        /// A key names one session whoever uses it, in any database.
        Global = "global",
    }
    default = User;
}

/// `[session]`: how sessions are keyed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Default session scope. Default: `connection`.
    pub key: SessionKeyMode,
    /// Whom a session key belongs to. Default: `user`.
    pub scope: SessionScope,
}

keyword_enum! {
    /// Where session floors are kept (`session_store.kind`).
    pub enum SessionStoreKind {
        /// In this process; sessions are not shared with other Causeway instances.
        Memory = "memory",
        /// In Redis (one server, Sentinel or Cluster), shared by every instance.
        Redis = "redis",
    }
    default = Memory;
}

/// URL schemes accepted in `session_store.url`.
pub const REDIS_URL_SCHEMES: &[&str] = &[
    "redis://",
    "rediss://",
    "redis+sentinel://",
    "rediss+sentinel://",
];

/// `[session_store]`: the store of session floors.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionStoreConfig {
    /// Store kind. Default: `memory`.
    pub kind: SessionStoreKind,
    /// Redis URL (`redis://`, `rediss://` or `redis+sentinel://`); used when `kind =
    /// "redis"` and `cluster_nodes` is empty. Default: `"redis://127.0.0.1:6379"`.
    pub url: String,
    /// A session's floor is forgotten after this long without activity. Must be at least
    /// `lag.max_seconds + lag.poll_interval + 1s`. Default: `60s`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub session_ttl: Duration,
    /// Time limit for one store operation; slower answers route as if the floor were
    /// unknown (to the primary). Default: `10ms`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// Redis Cluster seed nodes (`"host:port"` or URLs); when set, `url` is ignored.
    /// Default: empty.
    pub cluster_nodes: Vec<String>,
    /// CA certificates (PEM) that sign the Redis servers' certificates, for `rediss://`
    /// with a private CA; without it the system's trust store is used. Default: none.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for SessionStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use super::secret::redact_url;
        let nodes: Vec<String> = self.cluster_nodes.iter().map(|n| redact_url(n)).collect();
        f.debug_struct("SessionStoreConfig")
            .field("kind", &self.kind)
            .field("url", &redact_url(&self.url))
            .field("session_ttl", &self.session_ttl)
            .field("timeout", &self.timeout)
            .field("cluster_nodes", &nodes)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Default for SessionStoreConfig {
    fn default() -> Self {
        SessionStoreConfig {
            kind: SessionStoreKind::Memory,
            url: "redis://127.0.0.1:6379".to_owned(),
            session_ttl: Duration::from_secs(60),
            timeout: Duration::from_millis(10),
            cluster_nodes: Vec::new(),
            ca_file: None,
        }
    }
}
