//! Message framing: peek the type byte and length, enforce limits, split complete messages
//! off a buffer without copying, and report an incomplete message as `Ok(None)`.

use bytes::{Bytes, BytesMut};

/// Bytes of a regular message header: one type byte and a 4-byte length.
pub const HEADER_LEN: usize = 5;

/// One complete protocol message. `raw` includes the header, so it can be forwarded as is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub tag: u8,
    pub raw: Bytes,
}

impl Message {
    /// The message body after the header.
    pub fn body(&self) -> &[u8] {
        self.raw.get(HEADER_LEN..).unwrap_or_default()
    }
}

impl Message {
    /// A borrowed view of this message.
    pub fn as_ref(&self) -> MessageRef<'_> {
        MessageRef {
            tag: self.tag,
            raw: &self.raw,
        }
    }
}

/// A complete message still in the read buffer (header included), inspected in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    pub tag: u8,
    pub raw: &'a [u8],
}

impl<'a> MessageRef<'a> {
    /// The message body after the header.
    pub fn body(&self) -> &'a [u8] {
        self.raw.get(HEADER_LEN..).unwrap_or_default()
    }
}

/// The next complete message at the front of `buf`, as a view; `Ok(None)` if incomplete.
///
/// # Errors
/// See [`peek`].
pub fn next_ref(buf: &[u8], max: usize) -> Result<Option<MessageRef<'_>>, FrameError> {
    match peek(buf, max)? {
        Some((tag, total)) => Ok(buf.get(..total).map(|raw| MessageRef { tag, raw })),
        None => Ok(None),
    }
}

/// A frame that cannot be valid PostgreSQL protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {len} in a message of type {tag:?}")]
    BadLength { tag: char, len: i64 },
    #[error("message of type {tag:?} is {len} bytes, more than the limit of {max} bytes")]
    TooLarge { tag: char, len: usize, max: usize },
}

/// Peek at the header at the front of `buf`: the type byte and the total size of the message
/// (header included), once at least a header is buffered.
///
/// # Errors
/// A length below 4, above `i32::MAX`, or above `max` bytes.
pub fn peek(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let tag = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if !(4..=i32::MAX as u32).contains(&len) {
        return Err(FrameError::BadLength {
            tag: tag as char,
            len: i64::from(len as i32),
        });
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge {
            tag: tag as char,
            len,
            max,
        });
    }
    Ok(Some((tag, len + 1)))
}

/// Split one complete message off the front of `buf`.
///
/// # Errors
/// See [`peek`]; the buffer is left untouched on error.
pub fn try_split(buf: &mut BytesMut, max: usize) -> Result<Option<Message>, FrameError> {
    match peek(buf, max)? {
        Some((tag, total)) if buf.len() >= total => {
            let raw = buf.split_to(total).freeze();
            Ok(Some(Message { tag, raw }))
        }
        _ => Ok(None),
    }
}

/// Build a message from a type byte and a body.
pub fn build(tag: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    append(&mut out, tag, body);
    out.freeze()
}

/// Append a message with the given type byte and body to `out`.
pub fn append(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.reserve(HEADER_LEN + body.len());
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn splits_complete_messages_and_waits_for_partial_ones() {
        let mut buf = BytesMut::new();
        append(&mut buf, b'Q', b"SELECT 1\0");
        append(&mut buf, b'S', b"");
        let mut partial = buf.clone();
        partial.truncate(buf.len() - 2);
        let first = try_split(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(first.tag, b'Q');
        assert_eq!(first.body(), b"SELECT 1\0");
        assert_eq!(try_split(&mut buf, 1 << 20).unwrap().unwrap().tag, b'S');
        assert!(buf.is_empty());
        assert!(try_split(&mut partial, 1 << 20).unwrap().is_some());
        assert_eq!(try_split(&mut partial, 1 << 20).unwrap(), None);
    }

    #[test]
    fn rejects_bad_and_oversized_lengths() {
        for len in [0u32, 3, 0x8000_0000, u32::MAX] {
            let mut buf = BytesMut::from(&[b'Q'][..]);
            buf.extend_from_slice(&len.to_be_bytes());
            assert!(matches!(
                try_split(&mut buf, 1 << 30),
                Err(FrameError::BadLength { .. })
            ));
        }
        let mut buf = BytesMut::from(&b"Q\0\x10\0\0"[..]);
        assert!(matches!(
            try_split(&mut buf, 1024),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
