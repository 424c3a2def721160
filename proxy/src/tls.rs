//! TLS on both legs (DESIGN.md §8), with rustls and the `ring` provider: the acceptor for
//! clients (`client`), the connector for PostgreSQL nodes (`server`), PEM loading (`pem`) and
//! the certificate verifiers libpq's `sslmode` values call for (`verify`).

mod client;
mod pem;
mod server;
mod stream;
mod verify;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use client::{check_client_transport, serve, ClientTls, Encryption, Opened};
pub use server::{PostgresConnection, ServerStream, ServerTls, TlsConnectError};
pub use stream::Flushing;

/// Why a TLS configuration could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// Key name in the config (`cert_file`, `key_file`, `ca_file`).
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind wanted.
    #[error("{}: {what}", path.display())]
    Pem {
        field: &'static str,
        path: PathBuf,
        what: String,
    },
    /// rustls refused the combination (e.g. a key that does not match the certificate).
    #[error("{}: {source}", path.display())]
    Rustls {
        field: &'static str,
        path: PathBuf,
        source: rustls::Error,
    },
}

impl TlsError {
    /// rustls refused what `field` (the file at `path`, if any) set up.
    fn rustls<'a>(
        field: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(rustls::Error) -> TlsError + 'a {
        move |source| TlsError::Rustls {
            field,
            path: path.to_owned(),
            source,
        }
    }

    /// The config key the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            TlsError::Read { field, .. }
            | TlsError::Pem { field, .. }
            | TlsError::Rustls { field, .. } => field,
        }
    }
}

/// The one crypto provider Causeway uses: ring, which builds with a C compiler alone
/// (aws-lc needs cmake and clang). rustls 0.23.48 marks it deprecated for lacking
/// post-quantum key exchange; its classical suites are what PostgreSQL speaks.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The path of an optional file key, or an error naming the key.
fn required<'a>(field: &'static str, path: Option<&'a Path>) -> Result<&'a Path, TlsError> {
    path.ok_or_else(|| TlsError::Pem {
        field,
        path: PathBuf::new(),
        what: format!("{field} is not set"),
    })
}
