//! SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, as PostgreSQL speaks it.
//!
//! Causeway advertises only `SCRAM-SHA-256`, never the `-PLUS` variant, so it accepts the
//! GS2 headers `n,,` (client cannot bind) and `y,,` (client could, but we did not offer it)
//! and refuses `p=...` (client insists on channel binding). PostgreSQL clients send an
//! empty user name (`n=,`) because the user is in the startup message; any `n=` is accepted.
//!
//! ```text
//! client-first  n,,n=,r=<cnonce>
//! server-first  r=<cnonce><snonce>,s=<salt>,i=<iterations>
//! client-final  c=biws,r=<cnonce><snonce>,p=<proof>
//! server-final  v=<server signature>
//! ```

pub mod client;
mod message;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::digest::Key;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use self::message::{decode_key, ClientFinal, ClientFirst};
use crate::auth::{constant_time_eq, AuthError};

/// The only SASL mechanism Causeway offers.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The channel-binding variant, which Causeway does not offer.
const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// Iterations used by [`ScramKeys::generate`] (PostgreSQL's default).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Random bytes in a server nonce (as PostgreSQL).
const SERVER_NONCE_BYTES: usize = 18;
/// Random bytes in a salt.
const SALT_BYTES: usize = 16;
/// Length of SHA-256 output, and so of every SCRAM key and proof.
const KEY_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// What a server keeps about one user's password: enough to check a proof, not enough to
/// log in as the user (RFC 5802 §3).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: [u8; KEY_BYTES],
    server_key: [u8; KEY_BYTES],
}

// === impl ScramKeys ===

impl ScramKeys {
    /// Derives the keys from a password, exactly as given (callers wanting SASLprep
    /// normalization should use [`ScramKeys::generate`]). `iterations` below 1 count as 1.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
        let iterations = iterations.max(1);
        let mut salted_password = [0u8; KEY_BYTES];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted_password);
        let client_key = hmac_sha256(&salted_password, &[b"Client Key"]);
        ScramKeys {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac_sha256(&salted_password, &[b"Server Key"]),
        }
    }

    /// Derives keys with a fresh random 16-byte salt and 4096 iterations. This costs a few
    /// milliseconds, so do it once per user when the config is loaded, not per connection.
    ///
    /// The password is SASLprep-normalized the way libpq and PostgreSQL do it, so clients
    /// that normalize (libpq, rust-postgres) authenticate with non-ASCII passwords too.
    pub fn generate(password: &str) -> ScramKeys {
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        ScramKeys::parse_verifier(&verifier).unwrap_or_else(|| {
            let salt: [u8; SALT_BYTES] = rand::random();
            ScramKeys::derive(password, &salt, DEFAULT_ITERATIONS)
        })
    }

    /// Keys for a user that does not exist, so the exchange runs to the end (and fails
    /// with [`AuthError::BadPassword`]) instead of revealing that the user is unknown. The
    /// salt is derived from `secret` and the user name, so it is the same on every
    /// attempt, like a real user's; `secret` should be random and kept for the process.
    pub fn mock(user: &str, secret: &[u8]) -> ScramKeys {
        let secret_key: [u8; KEY_BYTES] = Sha256::digest(secret).into();
        let salt = hmac_sha256(&secret_key, &[b"mock salt", user.as_bytes()]);
        ScramKeys {
            salt: salt[..SALT_BYTES].to_vec(),
            iterations: DEFAULT_ITERATIONS,
            stored_key: rand::random(),
            server_key: rand::random(),
        }
    }

    /// Parses a verifier as stored in `pg_authid.rolpassword`:
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).
    /// Returns `None` if it is not one.
    pub fn parse_verifier(verifier: &str) -> Option<ScramKeys> {
        let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
        let (parameters, keys) = rest.split_once('$')?;
        let (iterations, salt) = parameters.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok().filter(|&n| n > 0)?;
        Some(ScramKeys {
            salt: BASE64.decode(salt).ok().filter(|salt| !salt.is_empty())?,
            iterations,
            stored_key: decode_key(stored_key)?,
            server_key: decode_key(server_key)?,
        })
    }

    /// The verifier string, in the format [`ScramKeys::parse_verifier`] reads.
    pub fn to_verifier(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }

    /// The salt sent to clients.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The PBKDF2 iteration count sent to clients.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Whether `client_key` is this user's ClientKey (its hash is StoredKey).
    pub fn matches_client_key(&self, client_key: &ClientKey) -> bool {
        constant_time_eq(&Sha256::digest(client_key.0), &self.stored_key)
    }
}

/// A user's SCRAM ClientKey (HMAC(SaltedPassword, "Client Key")), recovered from a
/// client's proof. Whoever holds it can log in as the user to any server keeping the same
/// secret, so it is kept in memory only and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey([u8; KEY_BYTES]);

impl ClientKey {
    /// The key's bytes.
    pub(crate) fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

/// Never prints the key.
impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientKey(<redacted>)")
    }
}

/// Shows the salt and iteration count, never the keys.
impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramKeys")
            .field("salt", &BASE64.encode(&self.salt))
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// One SCRAM-SHA-256 authentication attempt: call [`ScramExchange::client_first`] with the
/// SASLInitialResponse, then [`ScramExchange::client_final`] with the SASLResponse. Any
/// error ends the exchange; later calls fail with [`AuthError::OutOfOrder`].
pub struct ScramExchange {
    keys: Arc<ScramKeys>,
    server_nonce: String,
    state: State,
    /// The client's ClientKey, recovered from its proof once the proof has verified.
    client_key: Option<ClientKey>,
}

/// Where an exchange is.
enum State {
    /// Waiting for the client-first message.
    Initial,
    /// Server-first sent; waiting for client-final. Keeps what the proof is computed over.
    SentServerFirst {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    /// Succeeded or failed; no more messages are accepted.
    Finished,
}

// === impl ScramExchange ===

impl ScramExchange {
    /// Starts an exchange for a user with these keys, with a fresh random server nonce.
    pub fn new(keys: Arc<ScramKeys>) -> ScramExchange {
        let nonce: [u8; SERVER_NONCE_BYTES] = rand::random();
        ScramExchange::with_server_nonce(keys, BASE64.encode(nonce))
    }

    /// Starts an exchange with a fixed server nonce (for known-answer tests).
    fn with_server_nonce(keys: Arc<ScramKeys>, server_nonce: String) -> ScramExchange {
        ScramExchange {
            keys,
            server_nonce,
            state: State::Initial,
            client_key: None,
        }
    }

    /// Handles the SASLInitialResponse: the chosen `mechanism` and the client-first
    /// message. Returns the server-first message for AuthenticationSASLContinue.
    ///
    /// # Errors
    /// [`AuthError::UnsupportedMechanism`] or [`AuthError::ChannelBindingUnsupported`] for
    /// what Causeway does not offer; [`AuthError::Malformed`] for a bad message;
    /// [`AuthError::OutOfOrder`] if the exchange is already past this step.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::Initial) {
            self.state = State::Finished;
            return Err(AuthError::OutOfOrder {
                reason: "SASLInitialResponse was already received",
            });
        }
        self.state = State::Finished;
        check_mechanism(mechanism)?;
        let client_first = ClientFirst::parse(data)?;
        let nonce = format!("{}{}", client_first.client_nonce, self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&self.keys.salt),
            self.keys.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::SentServerFirst {
            gs2_header: client_first.gs2_header.to_owned(),
            client_first_bare: client_first.bare.to_owned(),
            server_first,
            nonce,
        };
        Ok(reply)
    }

    /// Handles the SASLResponse carrying the client-final message: checks the channel
    /// binding echo, the nonce and the proof. Returns the server-final message for
    /// AuthenticationSASLFinal, which lets the client verify the server in turn.
    ///
    /// # Errors
    /// [`AuthError::BadPassword`] (with an empty user name) if the proof does not match; [`AuthError::Malformed`]
    /// for a bad message, a wrong nonce or channel binding echo;
    /// [`AuthError::OutOfOrder`] unless [`ScramExchange::client_first`] succeeded before.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::SentServerFirst {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(AuthError::OutOfOrder {
                reason: "expected a SASLInitialResponse before this SASLResponse",
            });
        };
        let client_final = ClientFinal::parse(data)?;
        client_final.check_echo(&gs2_header, &nonce)?;
        let auth_message = format!(
            "{client_first_bare},{server_first},{}",
            client_final.without_proof
        );
        self.client_key = Some(self.verify_proof(&auth_message, &client_final.proof)?);
        let signature = hmac_sha256(&self.keys.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", BASE64.encode(signature)).into_bytes())
    }

    /// The client's ClientKey once [`ScramExchange::client_final`] has verified its proof:
    /// what lets Causeway log in to a node holding the same secret (pass-through).
    pub fn client_key(&self) -> Option<&ClientKey> {
        self.client_key.as_ref()
    }

    /// Recovers ClientKey from the proof and checks that it hashes to StoredKey.
    fn verify_proof(
        &self,
        auth_message: &str,
        proof: &[u8; KEY_BYTES],
    ) -> Result<ClientKey, AuthError> {
        let signature = hmac_sha256(&self.keys.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = [0u8; KEY_BYTES];
        for ((key, p), s) in client_key.iter_mut().zip(proof).zip(&signature) {
            *key = p ^ s;
        }
        let stored_key = Sha256::digest(client_key);
        if constant_time_eq(&stored_key, &self.keys.stored_key) {
            Ok(ClientKey(client_key))
        } else {
            Err(AuthError::BadPassword(String::new()))
        }
    }
}

/// Shows the step the exchange is at, never keys or nonces.
impl fmt::Debug for ScramExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = match self.state {
            State::Initial => "initial",
            State::SentServerFirst { .. } => "sent-server-first",
            State::Finished => "finished",
        };
        f.debug_struct("ScramExchange")
            .field("step", &step)
            .finish_non_exhaustive()
    }
}

// === helpers ===

fn check_mechanism(mechanism: &str) -> Result<(), AuthError> {
    match mechanism {
        SCRAM_SHA_256 => Ok(()),
        SCRAM_SHA_256_PLUS => Err(AuthError::ChannelBindingUnsupported),
        other => Err(AuthError::UnsupportedMechanism {
            mechanism: crate::protocol::Untrusted(other).to_string(),
        }),
    }
}

/// HMAC-SHA-256 over the concatenation of `parts`.
///
/// HMAC zero-pads keys shorter than the hash's 64-byte block, so a 32-byte key placed at
/// the start of a zeroed block is the same key; building it this way cannot fail.
pub(crate) fn hmac_sha256(key: &[u8; KEY_BYTES], parts: &[&[u8]]) -> [u8; KEY_BYTES] {
    let mut block = Key::<HmacSha256>::default();
    block[..KEY_BYTES].copy_from_slice(key);
    let mut mac = <HmacSha256 as hmac::digest::KeyInit>::new(&block);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}
