//! Node and user sections: `[primary]`, `[[replicas]]`, `[[users]]` and `[auth]`.

use std::fmt;

use serde::Deserialize;

use super::keyword::keyword_enum;

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
    /// Plaintext password, used both to authenticate the client and to log in to the
    /// nodes. Required unless `auth.method = "trust"`. Default: none.
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

keyword_enum! {
    /// How clients prove who they are (`auth.method`).
    pub enum AuthMethod {
        /// SCRAM-SHA-256 (RFC 5802/7677), without channel binding.
        ScramSha256 = "scram-sha-256",
        /// PostgreSQL's salted MD5 challenge; only for old clients.
        Md5 = "md5",
        /// No password is checked.
        Trust = "trust",
    }
    default = ScramSha256;
}

impl AuthMethod {
    /// Whether this method checks a password (and so every user needs one).
    pub fn needs_password(self) -> bool {
        !matches!(self, AuthMethod::Trust)
    }
}

/// `[auth]`: client authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Authentication method for clients. Default: `scram-sha-256`.
    pub method: AuthMethod,
}
