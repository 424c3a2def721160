//! Views of the extended-query messages the pooler inspects and rewrites (Parse, Bind,
//! Describe, Close, Execute), and builders for their rewritten forms.

use bytes::BytesMut;

use super::{cstr, frame, tag};

/// The fields of a Parse message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a [u8],
    pub query: &'a [u8],
    /// Parameter type count and OIDs, exactly as sent.
    pub param_types: &'a [u8],
}

impl<'a> Parse<'a> {
    /// Decode a Parse body; `None` when it is malformed.
    pub fn decode(body: &'a [u8]) -> Option<Parse<'a>> {
        let (name, rest) = cstr(body)?;
        let (query, param_types) = cstr(rest)?;
        let (count, oids) = param_types.split_first_chunk::<2>()?;
        let count = i16::from_be_bytes(*count);
        if count < 0 || oids.len() != count as usize * 4 {
            return None;
        }
        Some(Parse {
            name,
            query,
            param_types,
        })
    }

    /// Append this Parse under another statement name.
    pub fn encode_as(&self, out: &mut BytesMut, name: &[u8]) {
        let mut body =
            Vec::with_capacity(name.len() + self.query.len() + self.param_types.len() + 2);
        body.extend_from_slice(name);
        body.push(0);
        body.extend_from_slice(self.query);
        body.push(0);
        body.extend_from_slice(self.param_types);
        frame::append(out, tag::PARSE, &body);
    }
}

/// The fields of a Bind message that name things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// Formats, parameters and result formats, exactly as sent.
    pub rest: &'a [u8],
}

impl<'a> Bind<'a> {
    /// Decode a Bind body; `None` when the names are malformed.
    pub fn decode(body: &'a [u8]) -> Option<Bind<'a>> {
        let (portal, rest) = cstr(body)?;
        let (statement, rest) = cstr(rest)?;
        Some(Bind {
            portal,
            statement,
            rest,
        })
    }

    /// Append this Bind referring to another statement name.
    pub fn encode_as(&self, out: &mut BytesMut, statement: &[u8]) {
        let mut body =
            Vec::with_capacity(self.portal.len() + statement.len() + self.rest.len() + 2);
        body.extend_from_slice(self.portal);
        body.push(0);
        body.extend_from_slice(statement);
        body.push(0);
        body.extend_from_slice(self.rest);
        frame::append(out, tag::BIND, &body);
    }
}

/// What a Describe or Close targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Statement(&'a [u8]),
    Portal(&'a [u8]),
}

impl<'a> Target<'a> {
    /// Decode a Describe or Close body; `None` when malformed.
    pub fn decode(body: &'a [u8]) -> Option<Target<'a>> {
        let (&kind, rest) = body.split_first()?;
        let (name, tail) = cstr(rest)?;
        if !tail.is_empty() {
            return None;
        }
        match kind {
            b'S' => Some(Target::Statement(name)),
            b'P' => Some(Target::Portal(name)),
            _ => None,
        }
    }

    /// Append a Describe (`tag::DESCRIBE`) or Close (`tag::CLOSE`) of this target.
    pub fn encode(&self, out: &mut BytesMut, message_tag: u8) {
        let (kind, name) = match self {
            Target::Statement(n) => (b'S', n),
            Target::Portal(n) => (b'P', n),
        };
        let mut body = Vec::with_capacity(name.len() + 2);
        body.push(kind);
        body.extend_from_slice(name);
        body.push(0);
        frame::append(out, message_tag, &body);
    }
}

/// The portal name of an Execute body; `None` when malformed.
pub fn execute_portal(body: &[u8]) -> Option<&[u8]> {
    let (portal, rest) = cstr(body)?;
    (rest.len() == 4).then_some(portal)
}

/// The SQL text of a simple Query body (without its terminator); `None` when malformed.
pub fn query_text(body: &[u8]) -> Option<&[u8]> {
    let (text, rest) = cstr(body)?;
    rest.is_empty().then_some(text)
}

/// The command tag of a CommandComplete body.
pub fn command_tag(body: &[u8]) -> &[u8] {
    cstr(body).map(|(t, _)| t).unwrap_or(body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::try_split;

    #[test]
    fn parse_round_trips_under_a_new_name() {
        let body = b"s1\0SELECT $1\0\0\x01\0\0\0\x17";
        let parse = Parse::decode(body).unwrap();
        assert_eq!(parse.name, b"s1");
        let mut out = BytesMut::new();
        parse.encode_as(&mut out, b"_cw_x");
        let msg = try_split(&mut out, 1024).unwrap().unwrap();
        let again = Parse::decode(msg.body()).unwrap();
        assert_eq!(again.name, b"_cw_x");
        assert_eq!(again.query, b"SELECT $1");
        assert_eq!(again.param_types, parse.param_types);
    }

    #[test]
    fn malformed_bodies_are_rejected_not_panicked_on() {
        let body = b"s1\0SELECT $1\0\0\x02\0\0\0\x17";
        for cut in 0..body.len() {
            assert!(Parse::decode(&body[..cut]).is_none());
        }
        assert!(
            Parse::decode(body).is_none(),
            "count says 2 types, one sent"
        );
        assert!(Target::decode(b"Xname\0").is_none());
        assert!(Target::decode(b"S").is_none());
        assert!(execute_portal(b"p\0\0\0").is_none());
        assert_eq!(execute_portal(b"p\0\0\0\0\0"), Some(&b"p"[..]));
        assert!(Bind::decode(b"portal").is_none());
    }
}
