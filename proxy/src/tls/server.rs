//! TLS towards the PostgreSQL nodes (`[server_tls]`): the SSLRequest exchange and the rustls
//! handshake for pooled connections ([`ServerTls::connect`]), the same policy for
//! tokio-postgres connections ([`ServerTls::postgres`]), and [`ServerStream`], what a pooled
//! connection reads and writes. A certificate that does not verify fails the connection; it is
//! never retried in plaintext.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::config::SslMode;

use super::stream::Flushing;
use super::verify::{AnyCertificate, ChainOnly};
use super::{pem, provider, TlsError};
use crate::config::{ServerSslMode, ServerTlsConfig};

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The protocol name PostgreSQL 17 registers for ALPN.
pub(super) const ALPN: &[u8] = b"postgresql";

/// Why TLS to a node could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    #[error("the server does not accept TLS (it answered the SSLRequest with N) and [server_tls] sslmode = \"{0}\" requires it")]
    NotOffered(ServerSslMode),
    #[error("the server answered the SSLRequest with {0:?} instead of S or N")]
    BadAnswer(u8),
    #[error("host {0:?} is not a valid name for certificate verification")]
    BadName(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The `[server_tls]` policy every connection to the nodes uses (pools, the monitor, the
/// catalogue reads): cheap to clone, and every clone sees a [`ServerTls::replace`], so a
/// reload's files apply to each connection opened after it (open ones keep theirs).
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<RwLock<Policy>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode())
            .finish()
    }
}

impl ServerTls {
    /// Builds the policy of `[server_tls]`, reading its files.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or a key that does not match its certificate.
    pub fn new(settings: &ServerTlsConfig) -> Result<ServerTls, TlsError> {
        Ok(ServerTls::of(Policy::new(settings)?))
    }

    /// Plaintext only (`sslmode = disable`), for tests and tools.
    pub fn disabled() -> ServerTls {
        ServerTls::of(Policy::disabled())
    }

    fn of(policy: Policy) -> ServerTls {
        ServerTls {
            current: Arc::new(RwLock::new(policy)),
        }
    }

    /// The policy now (a connection uses one policy from start to end).
    fn policy(&self) -> Policy {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every clone of this handle uses `new`'s policy from now on (a reload).
    pub fn replace(&self, new: &ServerTls) {
        let policy = new.policy();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = policy;
    }

    /// The configured `sslmode`.
    pub fn mode(&self) -> ServerSslMode {
        self.policy().mode()
    }

    /// Asks the server at the other end of `tcp` for TLS as the mode says, and shakes hands.
    ///
    /// # Errors
    /// A server without TLS where TLS is required, a certificate that does not verify, I/O.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<ServerStream, TlsConnectError> {
        self.policy().connect(host, tcp).await
    }

    /// Opens a tokio-postgres connection (the monitor's, the function catalogue's) with
    /// this policy. The connection future must be driven (spawned) by the caller.
    ///
    /// # Errors
    /// What tokio-postgres reports: refused TLS, a certificate that does not verify, login.
    pub async fn connect_postgres(
        &self,
        config: &mut tokio_postgres::Config,
    ) -> Result<(tokio_postgres::Client, PostgresConnection), tokio_postgres::Error> {
        self.policy().connect_postgres(config).await
    }
}

/// The `[server_tls]` policy and its rustls configuration.
#[derive(Clone)]
struct Policy {
    mode: ServerSslMode,
    /// `None` for `sslmode = disable`.
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("mode", &self.mode).finish()
    }
}

impl Policy {
    /// Builds the policy of `[server_tls]`, reading its files.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or a key that does not match its certificate.
    fn new(settings: &ServerTlsConfig) -> Result<Policy, TlsError> {
        let config = match settings.sslmode {
            ServerSslMode::Disable => None,
            _ => Some(Arc::new(client_config(settings)?)),
        };
        Ok(Policy {
            mode: settings.sslmode,
            config,
        })
    }

    /// Plaintext only (`sslmode = disable`), for tests and tools.
    fn disabled() -> Policy {
        Policy {
            mode: ServerSslMode::Disable,
            config: None,
        }
    }

    /// The configured `sslmode`.
    fn mode(&self) -> ServerSslMode {
        self.mode
    }

    /// Asks the server at the other end of `tcp` for TLS as the mode says, and shakes hands.
    ///
    /// # Errors
    /// A server without TLS where TLS is required, a certificate that does not verify, I/O.
    async fn connect(
        &self,
        host: &str,
        mut tcp: TcpStream,
    ) -> Result<ServerStream, TlsConnectError> {
        let Some(config) = &self.config else {
            return Ok(ServerStream::Plain(tcp));
        };
        tcp.write_all(&SSL_REQUEST).await?;
        // Exactly one byte: anything the server sent after it must not pass as encrypted.
        match tcp.read_u8().await? {
            b'S' => {}
            b'N' if !self.mode.requires_tls() => return Ok(ServerStream::Plain(tcp)),
            b'N' => return Err(TlsConnectError::NotOffered(self.mode)),
            other => return Err(TlsConnectError::BadAnswer(other)),
        }
        let name = self.server_name(host)?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(TlsConnectError::Handshake)?;
        Ok(ServerStream::Tls(Box::new(Flushing(stream))))
    }

    /// The name the certificate is checked against: the host (DNS name or IP address). Only
    /// `verify-full` needs it to be valid; the other modes use a stand-in.
    fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsConnectError> {
        match ServerName::try_from(host.to_owned()) {
            Ok(name) => Ok(name),
            Err(_) if self.mode != ServerSslMode::VerifyFull => {
                Ok(ServerName::from(std::net::Ipv4Addr::LOCALHOST))
            }
            Err(_) => Err(TlsConnectError::BadName(host.to_owned())),
        }
    }

    /// Opens a tokio-postgres connection (the monitor's, the function catalogue's) with
    /// this policy. The connection future must be driven (spawned) by the caller.
    ///
    /// # Errors
    /// What tokio-postgres reports: refused TLS, a certificate that does not verify, login.
    async fn connect_postgres(
        &self,
        config: &mut tokio_postgres::Config,
    ) -> Result<(tokio_postgres::Client, PostgresConnection), tokio_postgres::Error> {
        let Some(tls) = &self.config else {
            config.ssl_mode(SslMode::Disable);
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            return Ok((client, Box::pin(connection)));
        };
        config.ssl_mode(match self.mode {
            ServerSslMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
        let (client, connection) = config.connect(connector).await?;
        Ok((client, Box::pin(connection)))
    }
}

/// A tokio-postgres connection's I/O future, whatever its transport.
pub type PostgresConnection =
    Pin<Box<dyn std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// The rustls configuration for `settings` (not `disable`): the verifier the mode calls for,
/// the client certificate if one is set, ALPN `postgresql`.
fn client_config(settings: &ServerTlsConfig) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::rustls("sslmode", Path::new("")))?;
    let builder = if settings.sslmode.verifies_server() {
        let webpki = pem::verifier(settings.ca_file.as_deref(), |roots| {
            WebPkiServerVerifier::builder_with_provider(roots, provider).build()
        })?;
        match settings.sslmode {
            ServerSslMode::VerifyFull => builder.with_webpki_verifier(webpki),
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly { inner: webpki })),
        }
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
    };
    let mut config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(pem::certs("cert_file", cert)?, pem::key("key_file", key)?)
            .map_err(TlsError::rustls("key_file", key))?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A connection to a node: plaintext, or TLS.
pub enum ServerStream {
    Plain(TcpStream),
    Tls(Box<Flushing<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl std::fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerStream::Plain(_) => "ServerStream::Plain",
            ServerStream::Tls(_) => "ServerStream::Tls",
        })
    }
}

impl ServerStream {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, ServerStream::Tls(_))
    }

    /// Whether an idle connection has nothing to read and no EOF pending. A TLS connection
    /// is polled without waiting (its records are processed; session tickets are not data).
    pub fn is_idle_healthy(&mut self) -> bool {
        match self {
            ServerStream::Plain(tcp) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
            ServerStream::Tls(tls) => {
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                Pin::new(&mut **tls)
                    .poll_read(&mut cx, &mut buf)
                    .is_pending()
            }
        }
    }

    /// Writes `bytes` if the socket takes them now (best effort, for Terminate on close).
    pub fn try_write_now(&mut self, bytes: &[u8]) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = Pin::new(&mut *self).poll_write(&mut cx, bytes);
        let _ = Pin::new(&mut *self).poll_flush(&mut cx);
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            ServerStream::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            ServerStream::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            ServerStream::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            ServerStream::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}
