//! Reading certificates, keys and CA bundles from PEM files, with errors that name the file.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// The certificate chain in `path` (leaf first).
pub(super) fn certs(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(field, path, format!("not a PEM certificate file ({err})")))?;
    if certs.is_empty() {
        return Err(pem_error(field, path, "holds no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The private key in `path` (PKCS#8, PKCS#1 or SEC1).
pub(super) fn key(field: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(field, path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|err| pem_error(field, path, format!("holds no usable private key ({err})")))
}

/// A certificate verifier `build` makes from the trust anchors of `ca_file`, which must be
/// set; its refusal names that file.
pub(super) fn verifier<V, E: std::fmt::Display>(
    ca_file: Option<&Path>,
    build: impl FnOnce(std::sync::Arc<RootCertStore>) -> Result<V, E>,
) -> Result<V, TlsError> {
    let path = super::required("ca_file", ca_file)?;
    let roots = std::sync::Arc::new(roots("ca_file", path)?);
    build(roots).map_err(|err| pem_error("ca_file", path, err.to_string()))
}

/// The CA certificates in `path` as trust anchors.
pub(super) fn roots(field: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(field, path)? {
        store.add(cert).map_err(|source| TlsError::Rustls {
            field,
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(store)
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(field: &'static str, path: &Path, what: String) -> TlsError {
    TlsError::Pem {
        field,
        path: path.to_owned(),
        what,
    }
}
