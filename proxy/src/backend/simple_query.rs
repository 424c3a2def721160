//! One simple-query round trip on a held server connection, for Causeway's own statements
//! (restoring a client's session state, `DISCARD ALL` before reuse): send the SQL, read
//! until ReadyForQuery, and report the first error.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BackendError, ServerConn};
use crate::protocol::{tag, try_split, ErrorFields};

impl ServerConn {
    /// Run `sql` (one or more statements) as one simple Query and read every reply up to
    /// its ReadyForQuery. Returns the first ErrorResponse, if a statement failed; the
    /// connection is then still in sync with the protocol.
    ///
    /// # Errors
    /// I/O errors, the connection closing, or a malformed reply (the connection is then
    /// unusable).
    pub async fn simple_query(
        &mut self,
        sql: &str,
        max_message: usize,
    ) -> Result<Option<ErrorFields>, BackendError> {
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut out).map_err(BackendError::Io)?;
        self.stream.write_all(&out).await?;
        let mut failure = None;
        loop {
            let msg = match try_split(&mut self.read_buf, max_message) {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                        return Err(BackendError::Closed {
                            node: self.node.to_string(),
                        });
                    }
                    continue;
                }
                Err(e) => {
                    return Err(BackendError::Protocol {
                        node: self.node.to_string(),
                        message: e.to_string(),
                    })
                }
            };
            match msg.tag {
                tag::ERROR_RESPONSE if failure.is_none() => {
                    failure = Some(ErrorFields::parse(msg.body()));
                }
                tag::READY_FOR_QUERY => return Ok(failure),
                _ => {}
            }
        }
    }
}
