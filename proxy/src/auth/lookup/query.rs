//! Runs `auth_query` on the primary as `auth_user`: one server connection, logged in like
//! any other (so it gets whatever the backend login supports), one extended-protocol
//! query with the user name as its text parameter, the first row's second column read as
//! the secret. The connection is closed after the query.

use bytes::{Buf, BytesMut};
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::LookupError;
use crate::backend::{Login, NodeAddr, PoolSettings, ServerConn};
use crate::protocol::{tag, try_split, ErrorFields};

/// Looks up `user` with `query` on `node`, logged in as `login`. Returns the stored
/// password text, or `None` when no row (or a NULL password) comes back.
///
/// # Errors
/// The login or the query failed, or the reply was malformed; all within the connect
/// timeout of `settings` (twice: login, then query).
pub async fn run(
    node: &NodeAddr,
    login: &Login,
    settings: &PoolSettings,
    query: &str,
    user: &str,
) -> Result<Option<String>, LookupError> {
    let failed = |what: String| LookupError(what);
    let mut conn = ServerConn::connect(0, node, login, settings, None)
        .await
        .map_err(|e| {
            failed(format!(
                "could not log in as auth_user {:?}: {e}",
                login.user
            ))
        })?;
    let result = tokio::time::timeout(
        settings.connect_timeout,
        exchange(&mut conn, query, user, settings.max_message),
    )
    .await
    .unwrap_or_else(|_| Err(failed(format!("timed out on {}", node.name))));
    conn.close();
    result
}

async fn exchange(
    conn: &mut ServerConn,
    query: &str,
    user: &str,
    max_message: usize,
) -> Result<Option<String>, LookupError> {
    let mut out = BytesMut::new();
    let io = |e: std::io::Error| LookupError(e.to_string());
    frontend::parse("", query, [], &mut out).map_err(io)?;
    frontend::bind(
        "",
        "",
        [0],
        [user],
        |value, buf| {
            buf.extend_from_slice(value.as_bytes());
            Ok(IsNull::No)
        },
        [0],
        &mut out,
    )
    .map_err(|_| LookupError("the user name cannot be sent".into()))?;
    frontend::execute("", 1, &mut out).map_err(io)?;
    frontend::sync(&mut out);
    conn.stream.write_all(&out).await.map_err(io)?;
    let mut secret = None;
    let mut failure = None;
    loop {
        let msg = match try_split(&mut conn.read_buf, max_message) {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                if conn.stream.read_buf(&mut conn.read_buf).await.map_err(io)? == 0 {
                    return Err(LookupError("the server closed the connection".into()));
                }
                continue;
            }
            Err(e) => return Err(LookupError(e.to_string())),
        };
        match msg.tag {
            tag::DATA_ROW if secret.is_none() => secret = Some(second_column(msg.body())?),
            tag::ERROR_RESPONSE if failure.is_none() => {
                let fields = ErrorFields::parse(msg.body());
                failure = Some(format!("{} ({})", fields.message, fields.code));
            }
            tag::READY_FOR_QUERY => break,
            _ => {}
        }
    }
    match failure {
        Some(failure) => Err(LookupError(failure)),
        None => Ok(secret.flatten()),
    }
}

/// The second column of a DataRow as text (`None` for NULL).
fn second_column(mut body: &[u8]) -> Result<Option<String>, LookupError> {
    let malformed = || LookupError("auth_query must return two columns: name, secret".into());
    if body.len() < 2 || body.get_i16() < 2 {
        return Err(malformed());
    }
    for column in 0..2 {
        if body.len() < 4 {
            return Err(malformed());
        }
        let len = body.get_i32();
        if len < 0 {
            if column == 1 {
                return Ok(None);
            }
            continue;
        }
        let value = body.get(..len as usize).ok_or_else(malformed)?;
        if column == 1 {
            return String::from_utf8(value.to_vec())
                .map(Some)
                .map_err(|_| LookupError("the secret is not UTF-8".into()));
        }
        body.advance(len as usize);
    }
    Err(malformed())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(columns: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = (columns.len() as i16).to_be_bytes().to_vec();
        for column in columns {
            match column {
                Some(value) => {
                    body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                    body.extend_from_slice(value);
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        body
    }

    #[test]
    fn rows_are_read_defensively() {
        let good = row(&[Some(b"app"), Some(b"md5abc")]);
        assert_eq!(second_column(&good).unwrap().as_deref(), Some("md5abc"));
        assert_eq!(second_column(&row(&[Some(b"app"), None])).unwrap(), None);
        assert_eq!(
            second_column(&row(&[None, Some(b"x")])).unwrap().as_deref(),
            Some("x")
        );
        assert!(second_column(&row(&[Some(b"app")])).is_err());
        for cut in 0..good.len() {
            assert!(second_column(&good[..cut]).is_err(), "{cut}");
        }
        assert!(second_column(&row(&[Some(b"a"), Some(b"\xff")])).is_err());
    }
}
