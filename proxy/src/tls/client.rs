//! TLS towards clients (`[client_tls]`): the opening of a TCP connection before its startup
//! packet (SSLRequest answered `S`, GSSENCRequest `N`, PostgreSQL 17's direct TLS), the
//! rustls handshake, and the check of the transport against `sslmode` once the user is known.
//! With `sslmode = disable` none of this runs: connections go straight to the session.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::stream::Flushing;
use super::{pem, provider, required, TlsError};
use crate::config::{ClientSslMode, ClientTlsConfig};
use crate::context::Context;
use crate::protocol::encode::PgError;
use crate::protocol::SqlState;

const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// The first byte of a TLS handshake record: a client using direct TLS (PostgreSQL 17's
/// `sslnegotiation=direct`). A startup packet starts with its length's high byte, 0.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The `[client_tls]` acceptor, built once at startup.
#[derive(Clone)]
pub struct ClientTls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// The acceptor `[client_tls]` describes, or `None` for `sslmode = disable`.
    ///
    /// # Errors
    /// Missing or unreadable files, a key that does not match the certificate.
    pub fn new(settings: &ClientTlsConfig) -> Result<Option<ClientTls>, TlsError> {
        if !settings.sslmode.offers_tls() {
            return Ok(None);
        }
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::rustls("sslmode", Path::new("")))?;
        let builder = if settings.sslmode.verifies_client() {
            let verifier = pem::verifier(settings.ca_file.as_deref(), |roots| {
                WebPkiClientVerifier::builder_with_provider(roots, provider).build()
            })?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let cert = required("cert_file", settings.cert_file.as_deref())?;
        let key = required("key_file", settings.key_file.as_deref())?;
        let mut config = builder
            .with_single_cert(pem::certs("cert_file", cert)?, pem::key("key_file", key)?)
            .map_err(TlsError::rustls("key_file", key))?;
        config.alpn_protocols = vec![super::server::ALPN.to_vec()];
        Ok(Some(ClientTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }))
    }
}

/// How a client connection is carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Encryption {
    /// Plaintext.
    #[default]
    None,
    /// TLS; `common_name` is the CN of the client's certificate, when it sent one.
    Tls { common_name: Option<String> },
}

/// What the opening of a connection settled before its startup packet.
#[derive(Debug, Default)]
pub struct Opened {
    /// Bytes already read that belong to the startup packet.
    pub pending: BytesMut,
    pub encryption: Encryption,
}

/// A client stream after the opening: plaintext, or TLS.
type TlsClient = Flushing<TlsStream<TcpStream>>;

pub(super) enum Negotiated {
    Plain(TcpStream, Opened),
    Tls(Box<TlsClient>, Opened),
    Gone,
}

/// Serve one accepted TCP connection: negotiate TLS when `[client_tls]` offers it (within
/// `startup_timeout`), then run the session on the resulting stream.
pub async fn serve(ctx: Arc<Context>, tcp: TcpStream, peer: SocketAddr) {
    let Some(tls) = ctx.client_tls.clone() else {
        crate::session::serve_opened(ctx, tcp, peer, Opened::default()).await;
        return;
    };
    // Counted with the connections in startup, so silent TLS clients cannot take every
    // descriptor either (the session counts the connection again once it starts).
    let Some(starting) = Starting::take(&ctx) else {
        tracing::debug!(client.addr = %peer, "too many connections in startup; closed");
        return;
    };
    let timeout = ctx.config.proxy.startup_timeout;
    let negotiated = tokio::time::timeout(timeout, negotiate(&tls, tcp)).await;
    drop(starting);
    match negotiated {
        Ok(Ok(Negotiated::Plain(tcp, opened))) => {
            Box::pin(crate::session::serve_opened(ctx, tcp, peer, opened)).await
        }
        Ok(Ok(Negotiated::Tls(stream, opened))) => {
            Box::pin(crate::session::serve_opened(ctx, *stream, peer, opened)).await
        }
        Ok(Ok(Negotiated::Gone)) => {}
        Ok(Err(err)) => tracing::info!(client.addr = %peer, %err, "client TLS handshake failed"),
        Err(_) => tracing::debug!(client.addr = %peer, "client TLS negotiation timed out"),
    }
}

/// A place among the connections in startup (`Context::starting`), given back on drop.
struct Starting(Arc<std::sync::atomic::AtomicUsize>);

impl Starting {
    fn take(ctx: &Context) -> Option<Starting> {
        use std::sync::atomic::Ordering;
        let max = ctx.config.proxy.max_client_connections;
        if ctx.starting.fetch_add(1, Ordering::AcqRel) >= max {
            ctx.starting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Starting(ctx.starting.clone()))
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Reads the opening packets: answers GSSENCRequest `N`, SSLRequest `S` (then shakes hands),
/// and takes a ClientHello as the first bytes as direct TLS. Anything else is the startup
/// or cancel packet of a plaintext client, handed on in `pending`.
pub(super) async fn negotiate(tls: &ClientTls, mut tcp: TcpStream) -> std::io::Result<Negotiated> {
    let mut refused_gss = false;
    loop {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await? == 0 {
            return Ok(Negotiated::Gone);
        }
        if first[0] == TLS_HANDSHAKE_RECORD {
            let stream = tls.acceptor.accept(tcp).await?;
            // PostgreSQL 17 requires ALPN for direct TLS, so that no other protocol's TLS
            // client is taken for a PostgreSQL one.
            if stream.get_ref().1.alpn_protocol() != Some(super::server::ALPN) {
                return Err(std::io::Error::other(
                    "direct TLS connection without ALPN \"postgresql\"",
                ));
            }
            return Ok(accepted(stream));
        }
        let mut head = [0u8; 8];
        match tcp.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Negotiated::Gone),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        match (len, code) {
            (8, SSL_REQUEST_CODE) => {
                tcp.write_all(b"S").await?;
                // Read exactly 8 bytes: plaintext sent behind the SSLRequest goes into the
                // handshake (and fails it) instead of being taken as the client's.
                let stream = tls.acceptor.accept(tcp).await?;
                return Ok(accepted(stream));
            }
            (8, GSSENC_REQUEST_CODE) if !refused_gss => {
                refused_gss = true;
                tcp.write_all(b"N").await?;
            }
            _ => {
                let opened = Opened {
                    pending: BytesMut::from(&head[..]),
                    encryption: Encryption::None,
                };
                return Ok(Negotiated::Plain(tcp, opened));
            }
        }
    }
}

fn accepted(stream: TlsStream<TcpStream>) -> Negotiated {
    let common_name = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| common_name(cert));
    let opened = Opened {
        pending: BytesMut::new(),
        encryption: Encryption::Tls { common_name },
    };
    Negotiated::Tls(Box::new(Flushing(stream)), opened)
}

/// The subject CN of a DER certificate (the first, if several).
pub(super) fn common_name(der: &[u8]) -> Option<String> {
    use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let cn = x509_cert::der::oid::db::rfc4519::CN;
    let value = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == cn)?
        .value
        .clone();
    Utf8StringRef::try_from(&value)
        .map(|s| s.as_str().to_owned())
        .or_else(|_| PrintableStringRef::try_from(&value).map(|s| s.as_str().to_owned()))
        .ok()
}

/// Whether a client carried by `encryption` may log in as `user` under `mode`: plaintext is
/// refused from `require` on, and `verify-full` wants the certificate's CN to be the user.
///
/// # Errors
/// FATAL 28000 saying what to change.
pub fn check_client_transport(
    mode: ClientSslMode,
    encryption: &Encryption,
    user: &str,
) -> Result<(), PgError> {
    match encryption {
        Encryption::None if mode.requires_tls() => Err(PgError::fatal(
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            format!("connection without TLS refused: Causeway requires TLS (client_tls.sslmode = \"{mode}\")"),
        )
        .with_hint("connect with sslmode=require (or verify-ca/verify-full)")),
        Encryption::Tls { common_name } if mode == ClientSslMode::VerifyFull => {
            if common_name.as_deref() == Some(user) {
                return Ok(());
            }
            Err(PgError::fatal(
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                format!(
                    "certificate authentication failed for user {user:?}: the client certificate's CN is {:?}",
                    common_name.as_deref().unwrap_or("")
                ),
            )
            .with_hint("connect with a client certificate whose CN is the user name"))
        }
        _ => Ok(()),
    }
}
