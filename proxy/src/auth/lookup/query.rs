//! Runs `auth_query` on the primary as `auth_user`: one server connection, logged in like
//! any other (so it gets whatever the backend login supports), one query with the user
//! name as its text parameter, the first row's second column read as the secret. The
//! connection is closed after the query.

use super::LookupError;
use crate::backend::rows::Row;
use crate::backend::{Login, NodeAddr, PoolSettings, ServerConn};

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
) -> Result<Option<String>, LookupError> {
    let mut conn = ServerConn::connect(0, node, login, settings, None)
        .await
        .map_err(|e| {
            LookupError(format!(
                "could not log in as auth_user {:?}: {e}",
                login.user
            ))
        })?;
    let rows = tokio::time::timeout(
        settings.connect_timeout,
        conn.query_rows(query, &[user], settings.max_message),
    )
    .await;
    conn.close();
    let rows = rows
        .map_err(|_| LookupError(format!("timed out on {}", node.name)))?
        .map_err(|e| LookupError(e.to_string()))?;
    secret_of(rows.first())
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
