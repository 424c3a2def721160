//! SCRAM message parsing (RFC 5802 §7): client-first and client-final, checked field by
//! field so that no input, however truncated or garbled, can make the server panic.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::KEY_BYTES;
use crate::auth::AuthError;

/// The parts of a client-first message the server needs.
pub(super) struct ClientFirst<'a> {
    /// `n,,` or `y,,`, echoed back (base64) in client-final.
    pub(super) gs2_header: &'a str,
    /// The message without the GS2 header; part of the signed AuthMessage.
    pub(super) bare: &'a str,
    pub(super) client_nonce: &'a str,
}

impl<'a> ClientFirst<'a> {
    /// Parses `gs2-cbind-flag "," [authzid] "," ["m=" ext ","] "n=" user "," "r=" nonce ["," ext]*`.
    pub(super) fn parse(data: &'a [u8]) -> Result<Self, AuthError> {
        let text = as_text(data)?;
        let (flag, rest) = text
            .split_once(',')
            .ok_or(malformed("missing GS2 header"))?;
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(malformed("missing GS2 header"))?;
        check_channel_binding_flag(flag)?;
        if !authzid.is_empty() {
            return Err(malformed("authorization identity (a=) is not supported"));
        }
        let gs2_header = text
            .get(..flag.len() + authzid.len() + 2)
            .ok_or(malformed("missing GS2 header"))?;
        let mut attributes = bare.split(',');
        let user = attributes.next().unwrap_or_default();
        if user.starts_with("m=") {
            return Err(malformed("mandatory extensions (m=) are not supported"));
        }
        attribute(user, 'n').ok_or(malformed("expected the user name attribute n="))?;
        let client_nonce = attributes
            .next()
            .and_then(|part| attribute(part, 'r'))
            .ok_or(malformed("expected the nonce attribute r="))?;
        check_nonce(client_nonce)?;
        check_extensions(attributes)?;
        Ok(ClientFirst {
            gs2_header,
            bare,
            client_nonce,
        })
    }
}

/// The parts of a client-final message the server needs.
pub(super) struct ClientFinal<'a> {
    /// Base64 of the GS2 header (and channel binding data, which we never use).
    pub(super) channel_binding: &'a str,
    pub(super) nonce: &'a str,
    /// Everything before `,p=`; part of the signed AuthMessage.
    pub(super) without_proof: &'a str,
    pub(super) proof: [u8; KEY_BYTES],
}

impl<'a> ClientFinal<'a> {
    /// Parses `"c=" cbind "," "r=" nonce ["," ext]* "," "p=" proof`.
    pub(super) fn parse(data: &'a [u8]) -> Result<Self, AuthError> {
        let text = as_text(data)?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(malformed("expected the proof attribute p= at the end"))?;
        let proof = decode_key(proof).ok_or(malformed("the proof is not 32 bytes of base64"))?;
        let mut attributes = without_proof.split(',');
        let channel_binding = attributes
            .next()
            .and_then(|part| attribute(part, 'c'))
            .ok_or(malformed("expected the channel binding attribute c="))?;
        let nonce = attributes
            .next()
            .and_then(|part| attribute(part, 'r'))
            .ok_or(malformed("expected the nonce attribute r="))?;
        check_extensions(attributes)?;
        Ok(ClientFinal {
            channel_binding,
            nonce,
            without_proof,
            proof,
        })
    }

    /// The client must echo the GS2 header it sent first and the combined nonce.
    pub(super) fn check_echo(&self, gs2_header: &str, nonce: &str) -> Result<(), AuthError> {
        let echoed = BASE64
            .decode(self.channel_binding)
            .map_err(|_| malformed("the channel binding attribute c= is not base64"))?;
        if echoed != gs2_header.as_bytes() {
            return Err(malformed(
                "the channel binding attribute c= does not match the GS2 header",
            ));
        }
        if self.nonce != nonce {
            return Err(malformed("the nonce does not match"));
        }
        Ok(())
    }
}

fn check_channel_binding_flag(flag: &str) -> Result<(), AuthError> {
    match flag {
        "n" | "y" => Ok(()),
        _ if flag.starts_with("p=") => Err(AuthError::ChannelBindingUnsupported),
        _ => Err(malformed("the GS2 header must start with n, y or p=")),
    }
}

/// A nonce is one or more printable ASCII characters other than `,`.
fn check_nonce(nonce: &str) -> Result<(), AuthError> {
    let printable = |b: u8| (0x21..=0x7e).contains(&b) && b != b',';
    if nonce.is_empty() || !nonce.bytes().all(printable) {
        return Err(malformed("the nonce must be printable ASCII"));
    }
    Ok(())
}

/// Optional extensions must at least look like `x=value`; their content is ignored.
fn check_extensions<'a>(mut attributes: impl Iterator<Item = &'a str>) -> Result<(), AuthError> {
    let well_formed = |part: &str| {
        let mut chars = part.chars();
        matches!((chars.next(), chars.next()), (Some(name), Some('=')) if name.is_ascii_alphabetic())
    };
    if attributes.all(well_formed) {
        Ok(())
    } else {
        Err(malformed("an attribute is not of the form x=value"))
    }
}

/// The value of `part` if it is the attribute `name=value`.
fn attribute(part: &str, name: char) -> Option<&str> {
    part.strip_prefix(name)?.strip_prefix('=')
}

fn as_text(data: &[u8]) -> Result<&str, AuthError> {
    std::str::from_utf8(data).map_err(|_| malformed("the message is not UTF-8"))
}

fn malformed(reason: &'static str) -> AuthError {
    AuthError::Malformed { reason }
}

/// Decodes base64 that must hold exactly one SHA-256-sized key.
pub(super) fn decode_key(text: &str) -> Option<[u8; KEY_BYTES]> {
    BASE64.decode(text).ok()?.try_into().ok()
}
