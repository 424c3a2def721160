//! The `[client_tls]` and `[server_tls]` sections (DESIGN.md §8): libpq's `sslmode` values and
//! the PEM files, checked once at startup (files readable, key matching its certificate,
//! `verify-*` given a CA) by building the TLS configurations they describe.

use std::path::PathBuf;

use serde::Deserialize;

use super::keyword::keyword_enum;
use super::ConfigError;

keyword_enum! {
    /// What Causeway asks of its clients' connections (`client_tls.sslmode`).
    pub enum ClientSslMode {
        /// SSLRequest is answered `N`: every client connects in plaintext.
        Disable = "disable",
        /// TLS when the client asks for it, plaintext otherwise.
        Allow = "allow",
        /// Same as `allow` on the accepting side (libpq's spelling, as PgBouncer has it).
        Prefer = "prefer",
        /// TLS only: a plaintext client gets FATAL 28000.
        Require = "require",
        /// TLS with a client certificate signed by `ca_file`.
        VerifyCa = "verify-ca",
        /// As `verify-ca`, and the certificate's CN must be the user name.
        VerifyFull = "verify-full",
    }
    default = Disable;
}

impl ClientSslMode {
    /// Whether SSLRequest is answered `S` (a certificate is then required).
    pub fn offers_tls(self) -> bool {
        self != ClientSslMode::Disable
    }

    /// Whether a plaintext client is refused.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            ClientSslMode::Require | ClientSslMode::VerifyCa | ClientSslMode::VerifyFull
        )
    }

    /// Whether clients must present a certificate signed by `ca_file`.
    pub fn verifies_client(self) -> bool {
        matches!(self, ClientSslMode::VerifyCa | ClientSslMode::VerifyFull)
    }
}

keyword_enum! {
    /// How Causeway connects to PostgreSQL nodes (`server_tls.sslmode`), as libpq does.
    pub enum ServerSslMode {
        /// Plaintext only.
        Disable = "disable",
        /// TLS if the server offers it (any certificate), else plaintext.
        Prefer = "prefer",
        /// TLS or no connection; any certificate is accepted (libpq semantics).
        Require = "require",
        /// TLS with a certificate chain that verifies against `ca_file`.
        VerifyCa = "verify-ca",
        /// As `verify-ca`, and the certificate must name the node's host (DNS or IP SAN).
        VerifyFull = "verify-full",
    }
    default = Prefer;
}

impl ServerSslMode {
    /// Whether a server that does not offer TLS is refused.
    pub fn requires_tls(self) -> bool {
        !matches!(self, ServerSslMode::Disable | ServerSslMode::Prefer)
    }

    /// Whether the server's certificate chain is checked against `ca_file`.
    pub fn verifies_server(self) -> bool {
        matches!(self, ServerSslMode::VerifyCa | ServerSslMode::VerifyFull)
    }
}

/// `[client_tls]`: TLS between clients and Causeway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// Default: `disable`.
    pub sslmode: ClientSslMode,
    /// Causeway's certificate chain (PEM), required unless `sslmode = "disable"`.
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CAs that sign client certificates (PEM), required by `verify-ca` and `verify-full`.
    pub ca_file: Option<PathBuf>,
}

/// `[server_tls]`: TLS between Causeway and the PostgreSQL nodes (pooled connections, the
/// monitor's control connections, the function catalogue refresh).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// Default: `prefer`.
    pub sslmode: ServerSslMode,
    /// CAs that sign the servers' certificates (PEM), required by `verify-ca`/`verify-full`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate presented to the servers (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
}

/// Checks `[client_tls]`: the files exist, parse and match, as the mode needs them.
pub(super) fn check_client(config: &ClientTlsConfig) -> Result<(), ConfigError> {
    let field = |name: &str| format!("client_tls.{name}");
    if config.sslmode.offers_tls() {
        for (name, value) in [
            ("cert_file", &config.cert_file),
            ("key_file", &config.key_file),
        ] {
            if value.is_none() {
                return Err(ConfigError::invalid(
                    field(name),
                    format!(
                        "sslmode = \"{}\" needs a certificate and key; set cert_file and \
                         key_file, or sslmode = \"disable\"",
                        config.sslmode
                    ),
                ));
            }
        }
    }
    if config.sslmode.verifies_client() && config.ca_file.is_none() {
        return Err(ConfigError::invalid(
            field("ca_file"),
            format!(
                "sslmode = \"{}\" checks client certificates; set ca_file to the CA that signs them",
                config.sslmode
            ),
        ));
    }
    crate::tls::ClientTls::new(config)
        .map(drop)
        .map_err(|err| ConfigError::invalid(field(err.field()), err.to_string()))
}

/// Checks that an optional file (such as `session_store.ca_file`) can be read.
pub(super) fn check_readable(field: &str, path: &Option<PathBuf>) -> Result<(), ConfigError> {
    match path {
        Some(path) => std::fs::metadata(path).map(drop).map_err(|err| {
            ConfigError::invalid(field, format!("cannot read {}: {err}", path.display()))
        }),
        None => Ok(()),
    }
}

/// Checks `[server_tls]`: a CA for the verifying modes, a client certificate with its key.
pub(super) fn check_server(config: &ServerTlsConfig) -> Result<(), ConfigError> {
    let field = |name: &str| format!("server_tls.{name}");
    if config.sslmode.verifies_server() && config.ca_file.is_none() {
        return Err(ConfigError::invalid(
            field("ca_file"),
            format!(
                "sslmode = \"{}\" checks the servers' certificates; set ca_file to the CA that \
                 signs them, or use sslmode = \"require\"",
                config.sslmode
            ),
        ));
    }
    if config.cert_file.is_some() != config.key_file.is_some() {
        let missing = if config.cert_file.is_none() {
            "cert_file"
        } else {
            "key_file"
        };
        return Err(ConfigError::invalid(
            field(missing),
            "a client certificate needs both cert_file and key_file",
        ));
    }
    crate::tls::ServerTls::new(config)
        .map(drop)
        .map_err(|err| ConfigError::invalid(field(err.field()), err.to_string()))
}
