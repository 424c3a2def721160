//! Why a session ended or a request failed, and the one place where those reasons become
//! the ErrorResponse (severity, SQLSTATE, message, hint) a client receives.

use crate::backend::{BackendError, PoolError};
use crate::protocol::encode::PgError;
use crate::protocol::startup::StartupError;
use crate::protocol::{FrameError, SqlState};

use super::relay::Desync;
use super::reset::SyncError;

/// Why a session ended or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client disconnected")]
    ClientGone,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Startup(StartupError),
    #[error(transparent)]
    Auth(crate::auth::AuthError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("server connection lost: {0}")]
    ServerLost(String),
    #[error("server sent a message that matches no request: {0}")]
    Desync(#[from] Desync),
    /// The server ended the client's session and its ErrorResponse was relayed.
    #[error("the server ended the session")]
    ServerEnded,
    /// No primary within `failover.query_wait_timeout` (DESIGN.md §9).
    #[error("no primary server available after waiting {waited:?} (failover.query_wait_timeout = {timeout:?}){}", last.as_deref().map(|l| format!(": {l}")).unwrap_or_default())]
    NoPrimary {
        waited: std::time::Duration,
        timeout: std::time::Duration,
        last: Option<String>,
    },
    #[error("timed out waiting for startup and authentication")]
    StartupTimeout,
    #[error("Causeway is shutting down")]
    ShuttingDown,
    #[error("sorry, too many clients already")]
    TooManyClients,
    #[error("terminating connection due to administrator command")]
    AdminShutdown,
    #[error("terminating connection due to idle-session timeout")]
    IdleTimeout,
    #[error("terminating connection due to idle-in-transaction timeout")]
    IdleInTransaction,
    /// An error already described by a ready-made ErrorResponse.
    #[error("{0}")]
    Client(PgError),
}

impl SessionError {
    /// A message of the client's that could not be decoded.
    pub fn malformed(what: &str) -> SessionError {
        SessionError::Protocol(format!("malformed {what} message"))
    }

    /// A message type no client may send after startup.
    pub fn invalid_message(tag: u8) -> SessionError {
        SessionError::Protocol(format!("invalid frontend message type {tag}"))
    }

    /// The request needs a server connection and none is held (a bug, reported safely).
    pub fn no_server() -> SessionError {
        SessionError::ServerLost("no server connection".into())
    }

    /// The ErrorResponse the client gets, if it can still receive one.
    pub fn to_client(&self) -> Option<PgError> {
        let text = self.to_string();
        let err = match self {
            SessionError::ClientGone | SessionError::Io(_) | SessionError::ServerEnded => {
                return None
            }
            SessionError::Frame(e) => PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string()).with_hint(
                "the client sent a malformed or oversized message; max_message_bytes sets the limit",
            ),
            SessionError::Startup(e) => PgError::fatal(e.sqlstate(), text),
            SessionError::Auth(e) => PgError::fatal(e.sqlstate(), text),
            SessionError::Protocol(m) => PgError::fatal(SqlState::PROTOCOL_VIOLATION, m.clone()),
            SessionError::Pool(e) => pool_error(e, text),
            SessionError::Sync(_) => PgError::fatal(SqlState::CONNECTION_FAILURE, text)
                .with_hint("reconnect; the session state could not be restored on a server connection"),
            SessionError::ServerLost(_) | SessionError::Desync(_) => PgError::fatal(SqlState::CONNECTION_FAILURE, text)
                .with_hint("the transaction in progress, if any, was not committed by Causeway; reconnect and retry"),
            SessionError::NoPrimary { .. } => PgError::fatal(SqlState::CONNECTION_FAILURE, text)
                .with_hint("the primary is down or being replaced and nothing was sent to it; retry \
                            later, or raise [failover] query_wait_timeout"),
            SessionError::StartupTimeout => PgError::fatal(SqlState::PROTOCOL_VIOLATION, text)
                .with_hint("raise [proxy] startup_timeout if clients authenticate slowly"),
            SessionError::ShuttingDown => PgError::fatal(SqlState::CANNOT_CONNECT_NOW, text),
            SessionError::TooManyClients => PgError::fatal(SqlState::TOO_MANY_CONNECTIONS, text)
                .with_hint("raise [proxy] max_client_connections or use fewer connections"),
            SessionError::AdminShutdown => PgError::fatal(SqlState::ADMIN_SHUTDOWN, text),
            SessionError::IdleTimeout => PgError::fatal(SqlState::IDLE_SESSION_TIMEOUT, text),
            SessionError::IdleInTransaction => PgError::fatal(
                SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
                text,
            )
            .with_hint(
                "the transaction was rolled back; [proxy] idle_transaction_timeout sets the limit",
            ),
            SessionError::Client(e) => e.clone(),
        };
        Some(err)
    }

    /// Whether this is an ordinary disconnect not worth a log line above debug.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, SessionError::ClientGone | SessionError::Io(_))
    }

    /// The protocol violation this error is, if it is one (`causeway_protocol_errors_total`).
    pub fn protocol_kind(&self) -> Option<crate::metrics::ProtocolKind> {
        use crate::metrics::ProtocolKind as K;
        match self {
            SessionError::Frame(_) => Some(K::ClientFrame),
            SessionError::Startup(_) => Some(K::ClientStartup),
            SessionError::Protocol(_) => Some(K::ClientMessage),
            SessionError::Desync(_) => Some(K::ServerDesync),
            _ => None,
        }
    }
}

fn pool_error(err: &PoolError, text: String) -> PgError {
    match err {
        PoolError::CheckoutTimeout(..) => PgError::fatal(SqlState::TOO_MANY_CONNECTIONS, text).with_hint(
            "all server connections are busy; raise [proxy] pool_size or checkout_timeout, or reduce load",
        ),
        PoolError::Paused(..) => PgError::fatal(SqlState::CANNOT_CONNECT_NOW, text).with_hint(
            "an operator paused Causeway; retry after RESUME on the admin console, or raise \
             [failover] query_wait_timeout to wait longer",
        ),
        PoolError::Backend(BackendError::Refused(refusal)) => PgError::fatal(
            relayed_code(&refusal.fields.code),
            refusal.fields.message.clone(),
        ),
        PoolError::Backend(e @ BackendError::NoPassword { .. }) => {
            PgError::fatal(SqlState::INVALID_AUTHORIZATION_SPECIFICATION, e.to_string())
                .with_hint("set this user's password in a [[users]] entry of Causeway's config")
        }
        PoolError::Backend(e @ BackendError::Tls { .. }) => {
            PgError::fatal(SqlState::CONNECTION_FAILURE, e.to_string()).with_hint(
                "check [server_tls]: sslmode, and ca_file for verify-ca/verify-full (the certificate must name the host for verify-full)",
            )
        }
        PoolError::Backend(e @ BackendError::Credential { .. }) => {
            PgError::fatal(SqlState::INVALID_AUTHORIZATION_SPECIFICATION, e.to_string())
        }
        PoolError::Backend(e @ BackendError::CleartextRefused { .. }) => {
            PgError::fatal(SqlState::INVALID_AUTHORIZATION_SPECIFICATION, e.to_string()).with_hint(
                "use scram-sha-256 or md5 in the server's pg_hba.conf, connect to it over TLS \
                 ([server_tls] sslmode), or set [auth] allow_server_cleartext = true",
            )
        }
        PoolError::Backend(e @ BackendError::UnsupportedAuth { .. }) => {
            PgError::fatal(SqlState::INVALID_AUTHORIZATION_SPECIFICATION, e.to_string()).with_hint(
                "configure the server to use scram-sha-256, md5, password or trust for Causeway's logins",
            )
        }
        PoolError::Backend(e) => PgError::fatal(SqlState::CONNECTION_FAILURE, e.to_string())
            .with_hint("check that the PostgreSQL server is running and reachable from Causeway"),
    }
}

/// SQLSTATEs relayed from a server's refusal of a login keep their code when the client
/// can act on it; anything else is reported as a lost server connection.
fn relayed_code(code: &str) -> SqlState {
    const KEPT: [SqlState; 7] = [
        SqlState::INVALID_PASSWORD,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        SqlState::INVALID_CATALOG_NAME,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::INSUFFICIENT_PRIVILEGE,
        SqlState::ADMIN_SHUTDOWN,
    ];
    KEPT.into_iter()
        .find(|kept| kept.code() == code)
        .unwrap_or(SqlState::CONNECTION_FAILURE)
}

/// `42P05`: a named statement that exists already.
pub(super) fn duplicate_statement(name: &[u8]) -> PgError {
    PgError::error(
        SqlState::DUPLICATE_PSTATEMENT,
        format!(
            "prepared statement \"{}\" already exists",
            String::from_utf8_lossy(name)
        ),
    )
}

/// `53400`: past `max_client_prepared_statements`.
pub(super) fn too_many_statements() -> PgError {
    PgError::error(
        SqlState::CONFIGURATION_LIMIT_EXCEEDED,
        "too many prepared statements on this connection",
    )
    .with_hint("close unused statements, or raise [proxy] max_client_prepared_statements")
}

/// `53400`: past `max_client_prepared_bytes`.
pub(super) fn too_many_statement_bytes() -> PgError {
    PgError::error(
        SqlState::CONFIGURATION_LIMIT_EXCEEDED,
        "prepared statements on this connection hold too much text",
    )
    .with_hint("close unused statements, or raise [proxy] max_client_prepared_bytes")
}

/// `26000`: a statement the client never prepared.
pub(super) fn missing_statement(name: &str) -> PgError {
    PgError::error(
        SqlState::INVALID_SQL_STATEMENT_NAME,
        format!("prepared statement \"{name}\" does not exist"),
    )
}

/// A `causeway.*` command that could not be run.
pub(super) fn command_error(error: &crate::hints::CommandError) -> PgError {
    PgError::error(error.sqlstate(), error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_raised_error_has_a_sqlstate_and_disconnects_have_none() {
        assert!(SessionError::ClientGone.to_client().is_none());
        let cases = [
            (SessionError::AdminShutdown, "57P01"),
            (SessionError::IdleTimeout, "57P05"),
            (SessionError::IdleInTransaction, "25P03"),
            (SessionError::StartupTimeout, "08P01"),
            (SessionError::TooManyClients, "53300"),
            (SessionError::ShuttingDown, "57P03"),
            (SessionError::malformed("Bind"), "08P01"),
            (SessionError::no_server(), "08006"),
        ];
        for (err, code) in cases {
            let pg = err.to_client().expect("an ErrorResponse");
            assert_eq!(pg.code.code(), code, "{err}");
        }
        assert_eq!(relayed_code("3D000"), SqlState::INVALID_CATALOG_NAME);
        assert_eq!(relayed_code("XX000"), SqlState::CONNECTION_FAILURE);
    }
}
