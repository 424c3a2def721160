//! `[auth]`: how clients authenticate, how users not listed in `[[users]]` are looked up
//! (`auth_user` + `auth_query`), and whether a server may be sent a cleartext password.

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::keyword::keyword_enum;

/// PgBouncer's and DESIGN.md §8's default lookup: name and secret from `pg_shadow`.
pub const DEFAULT_AUTH_QUERY: &str =
    "SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = $1";

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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Authentication method for clients. Default: `scram-sha-256`. A user whose stored
    /// password is a SCRAM secret always authenticates with SCRAM, one whose password is
    /// an md5 hash with md5 (as PostgreSQL does; the secret cannot answer otherwise).
    pub method: AuthMethod,
    /// The `[[users]]` entry whose login looks up users not listed there, on the
    /// primary, with `auth_query`. Default: none (unlisted users are refused).
    pub auth_user: Option<String>,
    /// The lookup: one parameter (`$1`, the user name), one row of (name, secret) or none.
    /// Default: `SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = $1`.
    pub auth_query: String,
    /// Database `auth_user` logs in to for lookups. Default: `postgres`.
    pub auth_database: String,
    /// How long a looked-up secret is reused before it is looked up again. Default: `"60s"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub auth_cache_ttl: Duration,
    /// Whether Causeway may send a plaintext password to a server that asks for one
    /// (pg_hba `password`) over an unencrypted connection. Default: `false` (only over TLS).
    pub allow_server_cleartext: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            method: AuthMethod::default(),
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.to_owned(),
            auth_database: "postgres".to_owned(),
            auth_cache_ttl: Duration::from_secs(60),
            allow_server_cleartext: false,
        }
    }
}
