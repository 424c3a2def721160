//! Runs `auth_query` on one node as `auth_user`: one server connection, logged in like
//! any other (so it gets whatever the backend login supports), one query with the user
//! name as its text parameter, the first row's second column read as the secret. The
//! connection is closed after the query.

use super::LookupError;
use crate::backend::rows::Row;
use crate::backend::{BackendError, Login, NodeAddr, PoolSettings, ServerConn};

/// Why one node could not answer a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The node is down, restarting or out of reach: another node may answer.
    Unreachable(LookupError),
    /// The node answered, with an error (auth_user refused, a bad query...).
    Failed(LookupError),
}

impl Failure {
    /// The error, whichever it is.
    pub fn into_error(self) -> LookupError {
        match self {
            Failure::Unreachable(e) | Failure::Failed(e) => e,
        }
    }
}

/// Looks up `user` with `query` on `node`, logged in as `login`. Returns the stored
/// password text, or `None` when no row (or a NULL password) comes back.
///
/// # Errors
/// The login or the query failed, or the reply was malformed; each within the connect
/// timeout of `settings`.
pub async fn run(
    node: &NodeAddr,
    login: &Login,
    settings: &PoolSettings,
    query: &str,
    user: &str,
) -> Result<Option<String>, Failure> {
    let mut conn = ServerConn::connect(0, node, login, settings, None)
        .await
        .map_err(|e| {
            let err = LookupError(format!(
                "could not log in as auth_user {:?}: {e}",
                login.user
            ));
            if unreachable(&e) {
                Failure::Unreachable(err)
            } else {
                Failure::Failed(err)
            }
        })?;
    let rows = tokio::time::timeout(
        settings.connect_timeout,
        conn.query_rows(query, &[user], settings.max_message),
    )
    .await;
    conn.close();
    let rows = rows
        .map_err(|_| Failure::Unreachable(LookupError(format!("timed out on {}", node.name))))?
        .map_err(|e| Failure::Failed(LookupError(e.to_string())))?;
    secret_of(rows.first()).map_err(Failure::Failed)
}

/// A login failure that says the node is not there now (down, restarting, shutting
/// down), not that it refused.
fn unreachable(err: &BackendError) -> bool {
    match err {
        BackendError::Connect { .. }
        | BackendError::Timeout { .. }
        | BackendError::Closed { .. }
        | BackendError::Io(_) => true,
        // cannot_connect_now (starting up, shutting down), admin or crash shutdown.
        BackendError::Refused(refusal) => {
            matches!(refusal.fields.code.as_str(), "57P01" | "57P02" | "57P03")
        }
        _ => false,
    }
}

/// The secret in a result row: its second column.
fn secret_of(row: Option<&Row>) -> Result<Option<String>, LookupError> {
    match row {
        None => Ok(None),
        Some(row) if row.len() >= 2 => Ok(row[1].clone()),
        Some(_) => Err(LookupError(
            "auth_query must return two columns: name, secret".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_column_is_the_secret() {
        let row = |columns: &[Option<&str>]| -> Row {
            columns.iter().map(|c| c.map(str::to_owned)).collect()
        };
        assert_eq!(secret_of(None), Ok(None));
        assert_eq!(
            secret_of(Some(&row(&[Some("app"), Some("md5x")]))),
            Ok(Some("md5x".to_owned()))
        );
        assert_eq!(secret_of(Some(&row(&[Some("app"), None]))), Ok(None));
        assert!(secret_of(Some(&row(&[Some("app")]))).is_err());
    }
}
