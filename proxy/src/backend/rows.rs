//! One extended-protocol query with text parameters on a held server connection, its rows
//! read as text: for Causeway's own catalog reads over its own logins (an `auth_query`
//! lookup, the volatile-function list), which work with every credential form where a
//! driver would need a plaintext password.

use bytes::{Buf, BytesMut};
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BackendError, ServerConn};
use crate::protocol::{tag, try_split, ErrorFields};

/// One row, each column as text (`None` for NULL).
pub type Row = Vec<Option<String>>;

/// Why a query's rows could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    /// The server refused the statement; the connection is still in sync.
    #[error("{} ({})", .0.message, .0.code)]
    Server(ErrorFields),
    /// The connection failed or the reply was malformed; it is unusable.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl ServerConn {
    /// Runs `sql` with `params` (text, `$1`...) through the unnamed statement and portal,
    /// and returns every row. The connection is idle again afterwards unless this fails
    /// with [`RowsError::Backend`].
    ///
    /// # Errors
    /// The server's ErrorResponse, an I/O error, or a malformed reply.
    pub async fn query_rows(
        &mut self,
        sql: &str,
        params: &[&str],
        max_message: usize,
    ) -> Result<Vec<Row>, RowsError> {
        let mut out = BytesMut::new();
        frontend::parse("", sql, [], &mut out).map_err(BackendError::Io)?;
        frontend::bind(
            "",
            "",
            [0],
            params.iter().copied(),
            |value, buf| {
                buf.extend_from_slice(value.as_bytes());
                Ok(IsNull::No)
            },
            [0],
            &mut out,
        )
        .map_err(|_| self.malformed("a parameter cannot be sent"))?;
        frontend::execute("", 0, &mut out).map_err(BackendError::Io)?;
        frontend::sync(&mut out);
        self.stream
            .write_all(&out)
            .await
            .map_err(BackendError::Io)?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let msg = match try_split(&mut self.read_buf, max_message) {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    let read = self.stream.read_buf(&mut self.read_buf).await;
                    if read.map_err(BackendError::Io)? == 0 {
                        return Err(RowsError::Backend(BackendError::Closed {
                            node: self.node.to_string(),
                        }));
                    }
                    continue;
                }
                Err(e) => return Err(self.malformed(&e.to_string())),
            };
            match msg.tag {
                tag::DATA_ROW => {
                    rows.push(parse_row(msg.body()).ok_or_else(|| self.malformed("bad DataRow"))?)
                }
                tag::ERROR_RESPONSE if failure.is_none() => {
                    failure = Some(ErrorFields::parse(msg.body()));
                }
                tag::READY_FOR_QUERY => break,
                _ => {}
            }
        }
        match failure {
            Some(fields) => Err(RowsError::Server(fields)),
            None => Ok(rows),
        }
    }

    fn malformed(&self, message: &str) -> RowsError {
        RowsError::Backend(BackendError::protocol(&self.node, message))
    }
}

/// The columns of a DataRow body as text, or `None` if it is malformed or not UTF-8.
fn parse_row(mut body: &[u8]) -> Option<Row> {
    if body.len() < 2 {
        return None;
    }
    let count = usize::try_from(body.get_i16()).ok()?;
    let mut row = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        if body.len() < 4 {
            return None;
        }
        let len = body.get_i32();
        if len < 0 {
            row.push(None);
            continue;
        }
        let len = usize::try_from(len).ok()?;
        let value = body.get(..len)?;
        row.push(Some(String::from_utf8(value.to_vec()).ok()?));
        body.advance(len);
    }
    Some(row)
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
        let good = row(&[Some(b"app"), None, Some(b"")]);
        assert_eq!(
            parse_row(&good).unwrap(),
            vec![Some("app".to_owned()), None, Some(String::new())]
        );
        for cut in 0..good.len() {
            assert!(parse_row(&good[..cut]).is_none(), "{cut}");
        }
        assert!(parse_row(&row(&[Some(b"\xff")])).is_none());
        assert!(parse_row(&(-1i16).to_be_bytes()).is_none());
    }
}
