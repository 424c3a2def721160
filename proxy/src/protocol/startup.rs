//! The untyped first packet of a connection: StartupMessage, SSLRequest, GSSENCRequest or
//! CancelRequest, parsed strictly (lengths, terminators, required parameters).

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::SqlState;

/// PostgreSQL's own limit on a startup packet (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// Bytes asked for before a packet's length is known: a typical startup packet fits.
const READ_AHEAD: usize = 512;
const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;
const PROTOCOL_MAJOR: u16 = 3;

/// A parsed first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    Startup(StartupMessage),
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, key: Bytes },
}

/// A StartupMessage: the protocol version and the connection parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub minor_version: u16,
    /// Parameters in the order sent, `user` and `database` included; later duplicates win.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of a parameter (the last one if sent twice).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `_pq_.` protocol options, which this proxy does not support.
    pub fn protocol_options(&self) -> Vec<String> {
        self.params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Why a first packet was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("invalid length of startup packet: {0} bytes")]
    BadLength(i64),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout: {0}")]
    Malformed(&'static str),
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
}

impl StartupError {
    /// SQLSTATE for the client.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            StartupError::NoUser => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            StartupError::UnsupportedProtocol { .. } => SqlState::FEATURE_NOT_SUPPORTED,
            _ => SqlState::PROTOCOL_VIOLATION,
        }
    }
}

/// Splits one first packet off the front of `buf`; `None` until all of it is there. A bad
/// length word is an error as soon as its four bytes are.
pub fn split_packet(buf: &mut BytesMut) -> Option<Result<StartupPacket, StartupError>> {
    let len = u32::from_be_bytes(*buf.first_chunk::<4>()?);
    if !(8..=MAX_STARTUP_LEN as u32).contains(&len) {
        return Some(Err(StartupError::BadLength(i64::from(len as i32))));
    }
    if buf.len() < len as usize {
        return None;
    }
    let packet = buf.split_to(len as usize);
    Some(parse(&packet[4..]))
}

/// Read one first packet from `stream` through `buf`, which keeps whatever the client sent
/// after it (one read usually brings a whole packet, where exact reads took two).
/// `Ok(None)` is a clean EOF before any byte.
///
/// # Errors
/// I/O errors; an EOF inside a packet is `UnexpectedEof`.
pub async fn read_packet<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<Option<Result<StartupPacket, StartupError>>> {
    loop {
        if let Some(packet) = split_packet(buf) {
            return Ok(Some(packet));
        }
        // The length word is known to be in bounds once there; until then, room for a
        // typical startup packet.
        let wanted = buf
            .first_chunk::<4>()
            .map_or(READ_AHEAD, |len| u32::from_be_bytes(*len) as usize);
        buf.reserve(wanted.saturating_sub(buf.len()));
        if stream.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

/// Parse the body of a first packet (everything after its length word).
///
/// # Errors
/// A packet PostgreSQL would refuse.
pub fn parse(body: &[u8]) -> Result<StartupPacket, StartupError> {
    let (code, rest) = body
        .split_first_chunk::<4>()
        .ok_or(StartupError::Malformed("too short"))?;
    let code = u32::from_be_bytes(*code);
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => parse_cancel(rest),
        _ => parse_startup(code, rest).map(StartupPacket::Startup),
    }
}

fn parse_cancel(rest: &[u8]) -> Result<StartupPacket, StartupError> {
    let (pid, key) = rest
        .split_first_chunk::<4>()
        .ok_or(StartupError::Malformed("cancel request too short"))?;
    if key.len() < 4 || key.len() > 256 {
        return Err(StartupError::Malformed("cancel key must be 4 to 256 bytes"));
    }
    Ok(StartupPacket::Cancel {
        pid: i32::from_be_bytes(*pid),
        key: Bytes::copy_from_slice(key),
    })
}

fn parse_startup(code: u32, mut rest: &[u8]) -> Result<StartupMessage, StartupError> {
    let (major, minor) = ((code >> 16) as u16, code as u16);
    if major != PROTOCOL_MAJOR {
        return Err(StartupError::UnsupportedProtocol { major, minor });
    }
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        let (key, tail) = super::cstr(rest).ok_or(StartupError::Malformed("missing terminator"))?;
        if key.is_empty() {
            if !tail.is_empty() {
                return Err(StartupError::Malformed("data after the final terminator"));
            }
            break;
        }
        let (value, tail) =
            super::cstr(tail).ok_or(StartupError::Malformed("parameter without a value"))?;
        params.push((utf8(key)?, utf8(value)?));
        rest = tail;
    }
    let message = StartupMessage {
        minor_version: minor,
        params,
    };
    match message.param("user") {
        Some(user) if !user.is_empty() => Ok(message),
        _ => Err(StartupError::NoUser),
    }
}

fn utf8(bytes: &[u8]) -> Result<String, StartupError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StartupError::Malformed("parameter is not valid UTF-8"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn startup_body(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        body
    }

    #[test]
    fn parses_startup_ssl_and_cancel() {
        let body = startup_body(&[("user", "app"), ("database", "db"), ("user", "x")]);
        let StartupPacket::Startup(m) = parse(&body).unwrap() else {
            panic!("not a startup")
        };
        assert_eq!(m.param("user"), Some("x"));
        assert_eq!(m.param("database"), Some("db"));
        assert_eq!(
            parse(&80_877_103u32.to_be_bytes()),
            Ok(StartupPacket::SslRequest)
        );
        let mut cancel = 80_877_102u32.to_be_bytes().to_vec();
        cancel.extend_from_slice(&7i32.to_be_bytes());
        cancel.extend_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(
            parse(&cancel),
            Ok(StartupPacket::Cancel { pid: 7, .. })
        ));
    }

    #[test]
    fn refuses_bad_packets() {
        assert_eq!(
            parse(&startup_body(&[("database", "db")])),
            Err(StartupError::NoUser)
        );
        assert_eq!(
            parse(&startup_body(&[("user", "")])),
            Err(StartupError::NoUser)
        );
        let mut v2 = startup_body(&[("user", "a")]);
        v2[1] = 2;
        assert!(matches!(
            parse(&v2),
            Err(StartupError::UnsupportedProtocol { .. })
        ));
        let body = startup_body(&[("user", "a")]);
        for cut in 0..body.len() - 1 {
            assert!(parse(&body[..cut]).is_err(), "prefix {cut} accepted");
        }
    }

    #[tokio::test]
    async fn read_packet_checks_the_length_word() {
        let mut buf = BytesMut::new();
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_packet(&mut input, &mut buf).await.unwrap(),
            Some(Err(StartupError::BadLength(-1)))
        ));
        let mut empty: &[u8] = &[];
        let mut buf = BytesMut::new();
        assert!(read_packet(&mut empty, &mut buf).await.unwrap().is_none());
        let mut cut: &[u8] = &[0, 0, 0, 8, 4];
        let err = read_packet(&mut cut, &mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn read_packet_keeps_what_follows_a_packet() {
        let mut sent = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        let startup = startup_body(&[("user", "a")]);
        sent.extend_from_slice(&(startup.len() as u32 + 4).to_be_bytes());
        sent.extend_from_slice(&startup);
        sent.extend_from_slice(b"Q\0\0\0\x0bSELECT\0");
        let mut input = &sent[..];
        let mut buf = BytesMut::new();
        assert_eq!(
            read_packet(&mut input, &mut buf).await.unwrap(),
            Some(Ok(StartupPacket::SslRequest))
        );
        assert!(matches!(
            read_packet(&mut input, &mut buf).await.unwrap(),
            Some(Ok(StartupPacket::Startup(_)))
        ));
        assert_eq!(&buf[..], b"Q\0\0\0\x0bSELECT\0");
    }

    #[test]
    fn split_packet_waits_for_the_whole_packet() {
        let startup = startup_body(&[("user", "a")]);
        let mut whole = (startup.len() as u32 + 4).to_be_bytes().to_vec();
        whole.extend_from_slice(&startup);
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert!(split_packet(&mut buf).is_none(), "prefix {cut} split");
            assert_eq!(buf.len(), cut);
        }
        let mut buf = BytesMut::from(&whole[..]);
        assert!(matches!(split_packet(&mut buf), Some(Ok(_))));
        assert!(buf.is_empty());
        let mut long = BytesMut::from(&[0u8, 0, 0x27, 0x11][..]);
        assert!(matches!(
            split_packet(&mut long),
            Some(Err(StartupError::BadLength(10_001)))
        ));
    }
}
