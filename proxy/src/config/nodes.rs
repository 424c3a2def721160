//! Node and user sections: `[primary]`, `[[replicas]]` and `[[users]]`.

use std::fmt;

use serde::Deserialize;

/// `[primary]`: the node that takes writes. Its node name is always `primary`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimaryConfig {
    /// Host name or IP address. Required.
    pub host: String,
    /// TCP port. Required.
    pub port: u16,
}

/// One `[[replicas]]` entry: a streaming replica of the primary.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// Node name used in metrics, logs and `/status`; unique, and not `primary`. Required.
    pub name: String,
    /// Host name or IP address. Required.
    pub host: String,
    /// TCP port. Required.
    pub port: u16,
    /// Relative share of reads among eligible replicas. Default: `1`.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// One `[[users]]` entry: a database user that may connect through Causeway.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// PostgreSQL user name. Required.
    pub name: String,
    /// The user's password: plaintext, a SCRAM secret copied from `pg_authid.rolpassword`
    /// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), or an md5 hash
    /// (`md5` + 32 hex digits). It authenticates the client and logs in to the nodes (a
    /// SCRAM secret by passing the client's proof through; the nodes must hold the same
    /// secret). Required unless `auth.method = "trust"`. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// Server connections per (node, database) for this user; overrides
    /// `proxy.pool_size`. Default: none.
    #[serde(default)]
    pub pool_size: Option<usize>,
}

/// Never prints the password.
impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}
