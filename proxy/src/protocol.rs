//! The PostgreSQL wire protocol as Causeway needs it: framing with length limits, the startup
//! packet, views of the few extended-protocol messages the pooler rewrites, and encoders for the
//! messages Causeway itself sends.

pub mod encode;
pub mod encoding;
pub mod extended;
pub mod frame;
pub mod startup;
pub mod tx_status;
pub mod untrusted;

pub use frame::{next_ref, try_split, FrameError, Message, MessageRef};
/// A SQLSTATE error code, with named constants (`SqlState::PROTOCOL_VIOLATION`, ...).
pub use tokio_postgres::error::SqlState;
pub use tx_status::TxStatus;
pub use untrusted::Untrusted;

/// Message type bytes used by the proxy (frontend and backend share some letters).
pub mod tag {
    // Frontend.
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const TERMINATE: u8 = b'X';
    pub const PASSWORD: u8 = b'p';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    // Backend.
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const NO_DATA: u8 = b'n';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const DATA_ROW: u8 = b'D';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// Whether `t` is a message type a client may send after startup.
pub fn is_frontend_tag(t: u8) -> bool {
    matches!(
        t,
        tag::QUERY
            | tag::PARSE
            | tag::BIND
            | tag::DESCRIBE
            | tag::EXECUTE
            | tag::CLOSE
            | tag::SYNC
            | tag::FLUSH
            | tag::TERMINATE
            | tag::FUNCTION_CALL
            | tag::COPY_DATA
            | tag::COPY_DONE
            | tag::COPY_FAIL
    )
}

/// SQL text as `str`: borrowed when it is valid UTF-8 (the usual case), else lossily
/// converted (the server will reject it; Causeway only needs to classify it).
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Read a NUL-terminated string from the front of `buf`, returning it and the rest.
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, buf)?;
    Some((&buf[..end], &buf[end + 1..]))
}

/// Fields of an ErrorResponse or NoticeResponse body, decoded leniently (a backend is
/// untrusted: a missing SQLSTATE or terminator must not panic anything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl ErrorFields {
    /// Decode the fields Causeway looks at; unknown fields are skipped.
    pub fn parse(body: &[u8]) -> ErrorFields {
        let mut out = ErrorFields::default();
        let mut rest = body;
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let Some((value, tail)) = cstr(tail) else {
                break;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'V' => out.severity = value,
                b'S' if out.severity.is_empty() => out.severity = value,
                b'C' => out.code = value,
                b'M' => out.message = value,
                _ => {}
            }
            rest = tail;
        }
        out
    }

    /// FATAL and PANIC end the server connection.
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity.as_str(), "FATAL" | "PANIC")
    }
}
