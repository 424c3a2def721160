//! Who Causeway logs in to a server as ([`Login`], [`Credential`]) and the authentication
//! exchange of that login, as a state machine without I/O: each Authentication message the
//! server sends goes in, the reply to send (if any) comes out; [`super::conn`] does the
//! reading and writing.
//!
//! A credential is a plaintext password, an md5 hash (answers md5 challenges), or a SCRAM
//! ClientKey recovered from the client's own proof (answers SCRAM challenges from a node
//! holding the same secret). AuthenticationOk after a SCRAM exchange is trusted only once
//! the server's final message has proved it holds the secret; a cleartext password is sent
//! only over an encrypted connection unless `[auth] allow_server_cleartext` allows it.

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;

use super::conn::BackendError;
use super::NodeAddr;
use crate::auth::scram::client::PassThroughClient;
use crate::auth::scram::{ClientKey, ScramKeys, SCRAM_SHA_256};
use crate::auth::secret::Md5Hash;
use crate::protocol;

/// Authentication request codes (AuthenticationXxx message bodies).
const AUTH_OK: i32 = 0;
const AUTH_CLEARTEXT: i32 = 3;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

/// Credentials and parameters for a server login.
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub database: String,
    /// Shared (a login is copied into each pool, and kept by every session).
    pub credential: Arc<Credential>,
    /// Whether a server may be sent the password in cleartext over an unencrypted
    /// connection (`[auth] allow_server_cleartext = true`).
    pub allow_cleartext: bool,
    /// The configuration generation the credential comes from (0 at start, one more per
    /// reload): a pool never takes a credential older than the one it has, so a session
    /// that began before a password change cannot switch its pool back.
    pub generation: u64,
}

impl Login {
    /// A login with a plaintext password, or none.
    pub fn with_password(user: &str, database: &str, password: Option<&str>) -> Login {
        Login {
            user: user.to_owned(),
            database: database.to_owned(),
            credential: Arc::new(
                password.map_or(Credential::None, |p| Credential::Password(p.to_owned())),
            ),
            allow_cleartext: false,
            generation: 0,
        }
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("database", &self.database)
            .field("credential", &self.credential)
            .finish()
    }
}

/// What Causeway answers a server's authentication request with.
#[derive(Clone, Default)]
pub enum Credential {
    /// Nothing: only `trust` servers accept the login.
    #[default]
    None,
    /// A plaintext password from the config: answers every method.
    Password(String),
    /// An md5 hash from the config or `auth_query`: answers md5 challenges.
    Md5Hash(Md5Hash),
    /// The user's SCRAM secret and the ClientKey recovered from this client's proof:
    /// answers SCRAM from a node that keeps the same secret.
    ScramKey {
        keys: Arc<ScramKeys>,
        client_key: ClientKey,
    },
}

impl Credential {
    /// Whether this is a credential at all.
    pub fn is_some(&self) -> bool {
        !matches!(self, Credential::None)
    }

    /// Whether both are the same credential (the same Arc, or equal contents).
    pub fn same_as(self: &Arc<Self>, other: &Arc<Credential>) -> bool {
        if Arc::ptr_eq(self, other) {
            return true;
        }
        match (&**self, &**other) {
            (Credential::None, Credential::None) => true,
            (Credential::Password(a), Credential::Password(b)) => a == b,
            (Credential::Md5Hash(a), Credential::Md5Hash(b)) => a == b,
            (
                Credential::ScramKey { keys, client_key },
                Credential::ScramKey {
                    keys: other_keys,
                    client_key: other_key,
                },
            ) => client_key == other_key && keys == other_keys,
            _ => false,
        }
    }

    /// The plaintext password, if that is what this is.
    pub fn password(&self) -> Option<&str> {
        match self {
            Credential::Password(password) => Some(password),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Credential::None => "none",
            Credential::Password(_) => "password",
            Credential::Md5Hash(_) => "md5 hash",
            Credential::ScramKey { .. } => "SCRAM secret",
        }
    }
}

/// Shows which kind of credential, never its value.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({})", self.kind())
    }
}

/// Authentication of one server login, driven by the server's Authentication messages.
pub(super) struct LoginAuth<'a> {
    node: &'a NodeAddr,
    login: &'a Login,
    encrypted: bool,
    sasl: Sasl,
}

/// Where a SASL exchange is.
enum Sasl {
    NotStarted,
    Password(Box<ScramSha256>),
    PassThrough(Box<PassThroughClient>),
    /// The server's final message verified.
    Verified,
}

impl<'a> LoginAuth<'a> {
    /// A login that has not been asked for anything yet; `encrypted` says whether the
    /// connection is TLS (cleartext passwords are then sent).
    pub(super) fn new(node: &'a NodeAddr, login: &'a Login, encrypted: bool) -> LoginAuth<'a> {
        LoginAuth {
            node,
            login,
            encrypted,
            sasl: Sasl::NotStarted,
        }
    }

    /// Handles the body of one Authentication message; returns what to send back (empty
    /// when nothing is to be sent).
    ///
    /// # Errors
    /// A malformed message, a method the credential cannot answer, a SCRAM server that
    /// does not prove it holds the secret, or AuthenticationOk before SCRAM finished.
    pub(super) fn on_message(&mut self, mut body: &[u8]) -> Result<BytesMut, BackendError> {
        if body.len() < 4 {
            return Err(self.protocol("short Authentication message"));
        }
        let code = body.get_i32();
        let mut out = BytesMut::new();
        match code {
            AUTH_OK => self.check_finished()?,
            AUTH_CLEARTEXT => self.cleartext(&mut out)?,
            AUTH_MD5 => {
                let salt: [u8; 4] = body
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| self.protocol("short md5 salt"))?;
                self.md5(salt, &mut out)?;
            }
            AUTH_SASL => self.sasl_start(code, body, &mut out)?,
            AUTH_SASL_CONTINUE => self.sasl_continue(body, &mut out)?,
            AUTH_SASL_FINAL => self.sasl_final(body)?,
            _ => return Err(self.unsupported(code)),
        }
        Ok(out)
    }

    /// AuthenticationOk: accepted unless a SASL exchange started and the server has not
    /// proved itself with its final message.
    fn check_finished(&self) -> Result<(), BackendError> {
        match self.sasl {
            Sasl::NotStarted | Sasl::Verified => Ok(()),
            Sasl::Password(_) | Sasl::PassThrough(_) => Err(self.protocol(
                "AuthenticationOk before the SCRAM exchange finished (no verified server \
                 signature); the server is not trusted",
            )),
        }
    }

    fn cleartext(&self, out: &mut BytesMut) -> Result<(), BackendError> {
        let password = match &*self.login.credential {
            Credential::Password(password) => password,
            Credential::None => return Err(self.no_password()),
            other => return Err(self.cannot_answer("a cleartext password", other)),
        };
        if !self.encrypted && !self.login.allow_cleartext {
            return Err(BackendError::CleartextRefused {
                node: self.node.to_string(),
            });
        }
        frontend::password_message(password.as_bytes(), out)?;
        Ok(())
    }

    fn md5(&self, salt: [u8; 4], out: &mut BytesMut) -> Result<(), BackendError> {
        let response = match &*self.login.credential {
            Credential::Password(password) => postgres_protocol::authentication::md5_hash(
                self.login.user.as_bytes(),
                password.as_bytes(),
                salt,
            ),
            Credential::Md5Hash(hash) => hash.response(salt),
            Credential::None => return Err(self.no_password()),
            other => return Err(self.cannot_answer("md5", other)),
        };
        frontend::password_message(response.as_bytes(), out)?;
        Ok(())
    }

    fn sasl_start(
        &mut self,
        code: i32,
        body: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), BackendError> {
        if !matches!(self.sasl, Sasl::NotStarted) {
            return Err(self.protocol("a second AuthenticationSASL"));
        }
        if !sasl_mechanisms(body).any(|m| m == SCRAM_SHA_256.as_bytes()) {
            return Err(self.unsupported(code));
        }
        let first = match &*self.login.credential {
            Credential::Password(password) => {
                let client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                let first = client.message().to_vec();
                self.sasl = Sasl::Password(Box::new(client));
                first
            }
            Credential::ScramKey { keys, client_key } => {
                let client = PassThroughClient::new(Arc::clone(keys), client_key.clone());
                let first = client.client_first();
                self.sasl = Sasl::PassThrough(Box::new(client));
                first
            }
            Credential::None => return Err(self.no_password()),
            other => return Err(self.cannot_answer("SCRAM-SHA-256", other)),
        };
        frontend::sasl_initial_response(SCRAM_SHA_256, &first, out)?;
        Ok(())
    }

    fn sasl_continue(&mut self, body: &[u8], out: &mut BytesMut) -> Result<(), BackendError> {
        let node = self.node;
        let reply = match &mut self.sasl {
            Sasl::Password(client) => {
                client
                    .update(body)
                    .map_err(|e| protocol(node, e.to_string()))?;
                client.message().to_vec()
            }
            Sasl::PassThrough(client) => client
                .server_first(body)
                .map_err(|e| credential_error(node, e.to_string()))?,
            Sasl::NotStarted | Sasl::Verified => {
                return Err(self.protocol("AuthenticationSASLContinue out of order"))
            }
        };
        frontend::sasl_response(&reply, out)?;
        Ok(())
    }

    fn sasl_final(&mut self, body: &[u8]) -> Result<(), BackendError> {
        let node = self.node;
        match &mut self.sasl {
            Sasl::Password(client) => client
                .finish(body)
                .map_err(|e| protocol(node, format!("SCRAM server signature: {e}")))?,
            Sasl::PassThrough(client) => client
                .server_final(body)
                .map_err(|e| credential_error(node, e.to_string()))?,
            Sasl::NotStarted | Sasl::Verified => {
                return Err(self.protocol("AuthenticationSASLFinal out of order"))
            }
        }
        self.sasl = Sasl::Verified;
        Ok(())
    }

    fn protocol(&self, message: &str) -> BackendError {
        protocol(self.node, message)
    }

    fn unsupported(&self, code: i32) -> BackendError {
        BackendError::UnsupportedAuth {
            node: self.node.to_string(),
            code,
        }
    }

    fn no_password(&self) -> BackendError {
        BackendError::NoPassword {
            node: self.node.to_string(),
        }
    }

    fn cannot_answer(&self, method: &str, credential: &Credential) -> BackendError {
        credential_error(
            self.node,
            format!(
                "the server asks for {method}, which the {} configured for user {:?} cannot \
                 answer; store the password in the form the server uses (pg_authid), or \
                 configure the server's pg_hba.conf to ask for the matching method",
                credential.kind(),
                self.login.user
            ),
        )
    }
}

fn protocol(node: &NodeAddr, message: impl Into<String>) -> BackendError {
    BackendError::protocol(node, message)
}

fn credential_error(node: &NodeAddr, message: String) -> BackendError {
    BackendError::Credential {
        node: node.to_string(),
        message,
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
