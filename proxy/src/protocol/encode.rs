//! Encoders for the backend messages Causeway sends on its own behalf (authentication,
//! parameter status, key data, errors, ready-for-query, results of `SHOW causeway.*`),
//! built with `pgwire`'s message types.

use bytes::{BufMut, Bytes, BytesMut};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::extendedquery::{CloseComplete, ParseComplete};
use pgwire::messages::response::{
    CommandComplete, ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, SecretKey,
};

use super::SqlState;

/// Severity of an error Causeway raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the connection stays usable.
    Error,
    /// The connection is closed after this message.
    Fatal,
}

/// An error Causeway sends to a client as an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: SqlState,
    pub message: String,
    pub hint: Option<String>,
}

impl PgError {
    /// A statement-level error.
    pub fn error(code: SqlState, message: impl Into<String>) -> PgError {
        PgError {
            severity: Severity::Error,
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// A connection-ending error.
    pub fn fatal(code: SqlState, message: impl Into<String>) -> PgError {
        PgError {
            severity: Severity::Fatal,
            ..PgError::error(code, message)
        }
    }

    /// Add a hint that tells the user what to do.
    pub fn with_hint(mut self, hint: impl Into<String>) -> PgError {
        self.hint = Some(hint.into());
        self
    }

    /// Encode as an ErrorResponse.
    pub fn encode(&self, out: &mut BytesMut) {
        let severity = match self.severity {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        };
        let mut fields = vec![
            (b'S', severity.to_owned()),
            (b'V', severity.to_owned()),
            (b'C', self.code.code().to_owned()),
            (b'M', self.message.clone()),
        ];
        if let Some(hint) = &self.hint {
            fields.push((b'H', hint.clone()));
        }
        put(out, &ErrorResponse::new(fields));
    }

    /// Encode as a standalone buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code.code())
    }
}

fn put<M: pgwire::messages::Message>(out: &mut BytesMut, message: &M) {
    // Encoding fails only for messages over pgwire's size limits; Causeway's own messages
    // are tiny, so a failure here is a bug worth logging rather than a reason to panic.
    if let Err(err) = message.encode(out) {
        tracing::error!(%err, "could not encode a protocol message");
    }
}

/// AuthenticationOk.
pub fn auth_ok(out: &mut BytesMut) {
    put(out, &Authentication::Ok);
}

/// AuthenticationCleartextPassword.
pub fn auth_cleartext(out: &mut BytesMut) {
    put(out, &Authentication::CleartextPassword);
}

/// AuthenticationMD5Password with its salt.
pub fn auth_md5(out: &mut BytesMut, salt: [u8; 4]) {
    put(out, &Authentication::MD5Password(salt.to_vec()));
}

/// AuthenticationSASL listing the mechanisms offered.
pub fn auth_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    let mechanisms = mechanisms.iter().map(|m| (*m).to_owned()).collect();
    put(out, &Authentication::SASL(mechanisms));
}

/// AuthenticationSASLContinue.
pub fn auth_sasl_continue(out: &mut BytesMut, data: Vec<u8>) {
    put(out, &Authentication::SASLContinue(Bytes::from(data)));
}

/// AuthenticationSASLFinal.
pub fn auth_sasl_final(out: &mut BytesMut, data: Vec<u8>) {
    put(out, &Authentication::SASLFinal(Bytes::from(data)));
}

/// ParameterStatus.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    // Written in place: every new client gets one per server parameter (about fifteen),
    // and pgwire's message type would allocate two owned strings for each.
    let len = 4 + name.len() + 1 + value.len() + 1;
    out.reserve(1 + len);
    out.put_u8(b'S');
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(value.as_bytes());
    out.put_u8(0);
}

/// BackendKeyData with a Causeway-generated process id and key.
pub fn backend_key_data(out: &mut BytesMut, pid: i32, key: i32) {
    put(out, &BackendKeyData::new(pid, SecretKey::I32(key)));
}

/// NegotiateProtocolVersion: we speak 3.0 and none of the `_pq_.` options.
pub fn negotiate_protocol_version(out: &mut BytesMut, unsupported: Vec<String>) {
    put(out, &NegotiateProtocolVersion::new(0, unsupported));
}

/// ReadyForQuery with the client's transaction status.
pub fn ready_for_query(out: &mut BytesMut, status: super::TxStatus) {
    let status = match status {
        super::TxStatus::InBlock => TransactionStatus::Transaction,
        super::TxStatus::Failed => TransactionStatus::Error,
        super::TxStatus::Idle => TransactionStatus::Idle,
    };
    put(out, &ReadyForQuery::new(status));
}

/// CommandComplete with a tag such as `SET` or `SHOW`.
pub fn command_complete(out: &mut BytesMut, tag: &str) {
    put(out, &CommandComplete::new(tag.to_owned()));
}

/// ParseComplete.
pub fn parse_complete(out: &mut BytesMut) {
    put(out, &ParseComplete::new());
}

/// CloseComplete.
pub fn close_complete(out: &mut BytesMut) {
    put(out, &CloseComplete::new());
}

/// NoticeResponse with a severity, code and message.
pub fn notice(out: &mut BytesMut, code: &SqlState, message: &str) {
    let fields = vec![
        (b'S', "NOTICE".to_owned()),
        (b'V', "NOTICE".to_owned()),
        (b'C', code.code().to_owned()),
        (b'M', message.to_owned()),
    ];
    put(out, &NoticeResponse::new(fields));
}

/// A one-column text result: RowDescription and one DataRow per value (NULL for `None`).
pub fn text_rows(out: &mut BytesMut, column: &str, values: &[Option<&str>]) {
    text_row_description(out, column);
    for value in values {
        text_data_row(out, *value);
    }
}

/// RowDescription of one text column named `column`.
pub fn text_row_description(out: &mut BytesMut, column: &str) {
    const TEXT_OID: u32 = 25;
    let field = FieldDescription::new(column.to_owned(), 0, 0, TEXT_OID, -1, -1, 0);
    put(out, &RowDescription::new(vec![field]));
}

/// DataRow of one text value (`None` is SQL NULL).
pub fn text_data_row(out: &mut BytesMut, value: Option<&str>) {
    let mut data = BytesMut::new();
    match value {
        Some(v) => {
            data.put_i32(v.len() as i32);
            data.put_slice(v.as_bytes());
        }
        None => data.put_i32(-1),
    }
    put(out, &DataRow::new(data, 1));
}

/// RowDescription of text columns named `columns`.
pub fn text_row_description_of(out: &mut BytesMut, columns: &[&str]) {
    const TEXT_OID: u32 = 25;
    let fields = columns
        .iter()
        .map(|name| FieldDescription::new((*name).to_owned(), 0, 0, TEXT_OID, -1, -1, 0))
        .collect();
    put(out, &RowDescription::new(fields));
}

/// DataRow of text values (`None` is SQL NULL).
pub fn text_data_row_of(out: &mut BytesMut, values: &[Option<&str>]) {
    let mut data = BytesMut::new();
    for value in values {
        match value {
            Some(v) => {
                data.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                data.put_slice(v.as_bytes());
            }
            None => data.put_i32(-1),
        }
    }
    let count = i16::try_from(values.len()).unwrap_or(i16::MAX);
    put(out, &DataRow::new(data, count));
}

/// ParameterDescription of `count` text parameters.
pub fn text_parameter_description(out: &mut BytesMut, count: usize) {
    let mut body = BytesMut::new();
    body.put_i16(i16::try_from(count).unwrap_or(i16::MAX));
    for _ in 0..count {
        body.put_u32(25);
    }
    super::frame::append(out, super::tag::PARAMETER_DESCRIPTION, &body);
}

/// BindComplete, NoData or CloseComplete: a message with no body.
pub fn empty(out: &mut BytesMut, tag: u8) {
    super::frame::append(out, tag, b"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{try_split, ErrorFields};

    #[test]
    fn error_response_round_trips_through_our_decoder() {
        let err = PgError::fatal(SqlState::PROTOCOL_VIOLATION, "bad frame").with_hint("reconnect");
        let mut buf = BytesMut::from(&err.to_bytes()[..]);
        let msg = try_split(&mut buf, 1 << 20).ok().flatten();
        let msg = msg.as_ref().map(|m| (m.tag, ErrorFields::parse(m.body())));
        let (tag, fields) = msg.unwrap_or_default();
        assert_eq!(tag, b'E');
        assert_eq!(fields.code, "08P01");
        assert!(fields.is_fatal());
        assert_eq!(fields.message, "bad frame");
    }

    #[test]
    fn parameter_status_matches_pgwire() {
        let mut ours = BytesMut::new();
        parameter_status(&mut ours, "TimeZone", "Europe/Zürich");
        let mut theirs = BytesMut::new();
        put(
            &mut theirs,
            &pgwire::messages::startup::ParameterStatus::new(
                "TimeZone".into(),
                "Europe/Zürich".into(),
            ),
        );
        assert_eq!(ours, theirs);
        assert_eq!(&ours[..5], b"S\0\0\0\x1c");
    }

    #[test]
    fn ready_for_query_carries_the_status() {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, super::super::TxStatus::InBlock);
        assert_eq!(&buf[..], b"Z\0\0\0\x05T");
    }
}
