//! One connection to a PostgreSQL server: connect, start up and authenticate (trust,
//! cleartext, md5, scram-sha-256) with configured credentials, and the per-connection state
//! the pooler tracks (prepared statements, applied session state).

use std::time::Instant;

use bytes::{Buf, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::login::{Login, LoginAuth};
use super::pool::PoolSettings;
use super::server_state::ServerState;
use super::NodeAddr;
use crate::protocol::{self, tag, try_split, ErrorFields, FrameError, Message};

/// Why a server connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("could not connect to {node}: {source}")]
    Connect {
        node: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out connecting to {node}")]
    Timeout { node: String },
    /// The server refused the login; its error is relayed to the client.
    #[error("server {} refused the connection: {} ({})", .0.node, .0.fields.message, .0.fields.code)]
    Refused(Box<Refusal>),
    #[error("server {node} asked for an authentication method Causeway does not support ({code})")]
    UnsupportedAuth { node: String, code: i32 },
    #[error("server {node} asked for a password but none is configured for this user")]
    NoPassword { node: String },
    /// The server asked for a method the user's credential cannot answer (md5 with only a
    /// SCRAM secret, SCRAM with only an md5 hash, cleartext with a secret), or the SCRAM
    /// exchange failed on Causeway's side; says which and what to change.
    #[error("cannot log in to server {node}: {message}")]
    Credential { node: String, message: String },
    /// The server asked for the password in cleartext over an unencrypted connection.
    #[error(
        "server {node} asked for the password in cleartext over an unencrypted connection; \
         Causeway refuses to send it"
    )]
    CleartextRefused { node: String },
    #[error("server {node} broke the protocol: {message}")]
    Protocol { node: String, message: String },
    #[error("server connection to {node} closed unexpectedly")]
    Closed { node: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A server's refusal of a login.
#[derive(Debug)]
pub struct Refusal {
    pub node: String,
    pub fields: ErrorFields,
    pub raw: Message,
}

impl BackendError {
    pub(super) fn protocol(node: &NodeAddr, message: impl Into<String>) -> BackendError {
        BackendError::Protocol {
            node: node.name.to_string(),
            message: message.into(),
        }
    }
}

/// A started, authenticated server connection and what the pooler knows about its state.
pub struct ServerConn {
    pub id: u64,
    pub node: NodeAddr,
    pub stream: TcpStream,
    /// Bytes read from the server and not yet processed.
    pub read_buf: BytesMut,
    /// The server's process id and cancel key (from BackendKeyData).
    pub pid: i32,
    pub secret: i32,
    /// ParameterStatus values reported at startup.
    pub params: Vec<(String, String)>,
    /// Prepared statements and applied session state.
    pub session: ServerState,
    pub created: Instant,
    pub last_used: Instant,
    permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn")
            .field("id", &self.id)
            .field("node", &self.node.name)
            .field("pid", &self.pid)
            .finish()
    }
}

/// Application name servers see for Causeway's connections before a client sets its own.
const APPLICATION_NAME: &str = "causeway";

impl ServerConn {
    /// Connect to `node`, start up and authenticate, all within the connect timeout.
    ///
    /// # Errors
    /// Connection failures, timeouts, and the server's own refusal (relayed to the client).
    pub async fn connect(
        id: u64,
        node: &NodeAddr,
        login: &Login,
        settings: &PoolSettings,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<ServerConn, BackendError> {
        let max_message = settings.max_message;
        let started = tokio::time::timeout(settings.connect_timeout, async {
            let stream = TcpStream::connect((&*node.host, node.port))
                .await
                .map_err(|source| BackendError::Connect {
                    node: node.to_string(),
                    source,
                })?;
            stream.set_nodelay(true)?;
            startup(stream, node, login, max_message).await
        })
        .await
        .map_err(|_| BackendError::Timeout {
            node: node.to_string(),
        })??;
        let (stream, read_buf, key, params) = started;
        let now = Instant::now();
        Ok(ServerConn {
            id,
            node: node.clone(),
            stream,
            read_buf,
            pid: key.0,
            secret: key.1,
            params,
            session: ServerState::new(settings.max_prepared, settings.empty_fingerprint),
            created: now,
            last_used: now,
            permit,
        })
    }

    /// Whether the idle connection looks usable: no unexpected bytes and no EOF pending.
    pub fn is_idle_healthy(&self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Hold a pool permit while checked out.
    pub fn set_permit(&mut self, permit: OwnedSemaphorePermit) {
        self.permit = Some(permit);
    }

    /// Give up the pool permit (when parked idle).
    pub fn take_permit(&mut self) -> Option<OwnedSemaphorePermit> {
        self.permit.take()
    }

    /// Say goodbye politely (best effort) and drop the connection.
    pub fn close(self) {
        let mut buf = BytesMut::new();
        frontend::terminate(&mut buf);
        let _ = self.stream.try_write(&buf);
    }
}

type Started = (TcpStream, BytesMut, (i32, i32), Vec<(String, String)>);

async fn startup(
    mut stream: TcpStream,
    node: &NodeAddr,
    login: &Login,
    max_message: usize,
) -> Result<Started, BackendError> {
    let mut out = BytesMut::new();
    let params = [
        ("user", login.user.as_str()),
        ("database", login.database.as_str()),
        ("application_name", APPLICATION_NAME),
    ];
    frontend::startup_message(params.iter().copied(), &mut out)?;
    stream.write_all(&out).await?;
    let mut conn = StartupReader {
        stream,
        buf: BytesMut::with_capacity(8192),
        node,
        max_message,
    };
    // TLS: pass true once this stream is encrypted (cleartext passwords are then allowed).
    let mut auth = LoginAuth::new(node, login, false);
    let mut key = (0, 0);
    let mut server_params = Vec::new();
    loop {
        let msg = conn.next().await?;
        match msg.tag {
            tag::AUTHENTICATION => {
                let reply = auth.on_message(msg.body())?;
                if !reply.is_empty() {
                    conn.stream.write_all(&reply).await?;
                }
            }
            tag::PARAMETER_STATUS => {
                if let Some((name, rest)) = protocol::cstr(msg.body()) {
                    let value = protocol::cstr(rest).map(|(v, _)| v).unwrap_or_default();
                    server_params.push((
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    ));
                }
            }
            tag::BACKEND_KEY_DATA => {
                let mut body = msg.body();
                if body.len() < 8 {
                    return Err(BackendError::protocol(node, "short BackendKeyData"));
                }
                key = (body.get_i32(), body.get_i32());
            }
            tag::READY_FOR_QUERY => return Ok((conn.stream, conn.buf, key, server_params)),
            tag::ERROR_RESPONSE => {
                return Err(BackendError::Refused(Box::new(Refusal {
                    node: node.name.to_string(),
                    fields: ErrorFields::parse(msg.body()),
                    raw: msg,
                })))
            }
            tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {}
            other => {
                return Err(BackendError::protocol(
                    node,
                    format!("unexpected message {:?} during startup", other as char),
                ))
            }
        }
    }
}

struct StartupReader<'a> {
    stream: TcpStream,
    buf: BytesMut,
    node: &'a NodeAddr,
    max_message: usize,
}

impl StartupReader<'_> {
    async fn next(&mut self) -> Result<Message, BackendError> {
        loop {
            match try_split(&mut self.buf, self.max_message) {
                Ok(Some(msg)) => return Ok(msg),
                Ok(None) => {}
                Err(e @ (FrameError::BadLength { .. } | FrameError::TooLarge { .. })) => {
                    return Err(BackendError::protocol(self.node, e.to_string()))
                }
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(BackendError::Closed {
                    node: self.node.to_string(),
                });
            }
        }
    }
}
