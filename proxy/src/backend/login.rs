//! The authentication exchange of a server login, as a state machine without I/O: each
//! Authentication message the server sends goes in, the reply to send (if any) comes out.
//! [`super::conn`] does the reading and writing.

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;

use super::conn::{BackendError, Login};
use super::NodeAddr;
use crate::protocol;

/// Authentication of one server login, driven by the server's Authentication messages.
pub(super) struct LoginAuth<'a> {
    node: &'a NodeAddr,
    login: &'a Login,
    scram: Option<ScramSha256>,
}

impl<'a> LoginAuth<'a> {
    /// A login that has not been asked for anything yet.
    pub(super) fn new(node: &'a NodeAddr, login: &'a Login) -> LoginAuth<'a> {
        LoginAuth {
            node,
            login,
            scram: None,
        }
    }

    /// Handles the body of one Authentication message; returns what to send back (empty
    /// when nothing is to be sent).
    ///
    /// # Errors
    /// A malformed message, a method Causeway cannot answer, or no credential for it.
    pub(super) fn on_message(&mut self, mut body: &[u8]) -> Result<BytesMut, BackendError> {
        let node = self.node;
        let login = self.login;
        if body.len() < 4 {
            return Err(BackendError::protocol(node, "short Authentication message"));
        }
        let code = body.get_i32();
        let password = || {
            login.password.as_deref().ok_or(BackendError::NoPassword {
                node: node.to_string(),
            })
        };
        let mut out = BytesMut::new();
        match code {
            0 => {}
            3 => frontend::password_message(password()?.as_bytes(), &mut out)?,
            5 => {
                let salt: [u8; 4] = body
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| BackendError::protocol(node, "short md5 salt"))?;
                let hash = postgres_protocol::authentication::md5_hash(
                    login.user.as_bytes(),
                    password()?.as_bytes(),
                    salt,
                );
                frontend::password_message(hash.as_bytes(), &mut out)?;
            }
            10 => {
                if !sasl_mechanisms(body).any(|m| m == b"SCRAM-SHA-256") {
                    return Err(BackendError::UnsupportedAuth {
                        node: node.to_string(),
                        code,
                    });
                }
                let client =
                    ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response("SCRAM-SHA-256", client.message(), &mut out)?;
                self.scram = Some(client);
            }
            11 | 12 => {
                let client = self.scram.as_mut().ok_or_else(|| {
                    BackendError::protocol(node, "SASL message before SASL start")
                })?;
                if code == 11 {
                    client
                        .update(body)
                        .map_err(|e| BackendError::protocol(node, e.to_string()))?;
                    frontend::sasl_response(client.message(), &mut out)?;
                } else {
                    client
                        .finish(body)
                        .map_err(|e| BackendError::protocol(node, e.to_string()))?;
                }
            }
            _ => {
                return Err(BackendError::UnsupportedAuth {
                    node: node.to_string(),
                    code,
                })
            }
        }
        Ok(out)
    }
}

/// The mechanism names of an AuthenticationSASL message.
fn sasl_mechanisms(mut body: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (name, rest) = protocol::cstr(body)?;
        body = rest;
        (!name.is_empty()).then_some(name)
    })
}
