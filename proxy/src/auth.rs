//! Client authentication, server side: SCRAM-SHA-256 ([`scram`]), MD5, stored secrets
//! ([`secret`]), which challenge a user gets ([`challenge`]), `auth_query` lookups
//! ([`lookup`]), and their errors.
//!
//! Causeway is the server its clients authenticate to, so these are the checks PostgreSQL
//! itself would run. Everything here is pure computation over bytes; the session code sends
//! and receives the protocol messages.

pub mod challenge;
pub mod lookup;
pub mod scram;
pub mod secret;

use crate::protocol::SqlState;

/// Why a client failed to authenticate; [`AuthError::sqlstate`] gives the SQLSTATE to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The password check failed: a wrong SCRAM proof or MD5 response, or no such user.
    /// Both read the same to the client, as in PostgreSQL, so user names cannot be probed.
    /// Holds the user name; [`scram::ScramExchange`] leaves it empty because it is not
    /// told the user (PostgreSQL clients send it in the startup message, not in SCRAM).
    #[error("password authentication failed{}", for_user(.0))]
    BadPassword(String),
    /// A SASL message does not follow RFC 5802 (bad attribute, bad base64, wrong nonce...).
    #[error("malformed SCRAM message: {reason}")]
    Malformed {
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A message arrived at the wrong point of the exchange.
    #[error("unexpected authentication message: {reason}")]
    OutOfOrder {
        /// What was expected instead.
        reason: &'static str,
    },
    /// The client chose a SASL mechanism other than SCRAM-SHA-256.
    #[error("SASL authentication mechanism {mechanism} is not supported; use SCRAM-SHA-256")]
    UnsupportedMechanism {
        /// The mechanism name the client sent, quoted, escaped and cut
        /// ([`crate::protocol::Untrusted`]): it goes into logs before login.
        mechanism: String,
    },
    /// The client requires channel binding, which Causeway does not offer.
    #[error(
        "channel binding is not supported by this server; \
         connect with channel_binding=prefer or channel_binding=disable"
    )]
    ChannelBindingUnsupported,
}

impl AuthError {
    /// The SQLSTATE for the ErrorResponse: `28P01` for a failed password check, `08P01` for
    /// a protocol violation, `28000` for an authentication method Causeway does not offer.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            AuthError::BadPassword(_) => SqlState::INVALID_PASSWORD,
            AuthError::Malformed { .. } | AuthError::OutOfOrder { .. } => {
                SqlState::PROTOCOL_VIOLATION
            }
            AuthError::UnsupportedMechanism { .. } | AuthError::ChannelBindingUnsupported => {
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            }
        }
    }
}

/// `for user "name"`, or nothing when the name is unknown.
fn for_user(user: &str) -> String {
    if user.is_empty() {
        String::new()
    } else {
        format!(" for user \"{user}\"")
    }
}

/// Compares two byte strings in time that depends only on their lengths, so a secret
/// cannot be guessed byte by byte from response times.
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        let cases = [
            (AuthError::BadPassword("app".into()), "28P01"),
            (AuthError::BadPassword(String::new()), "28P01"),
            (AuthError::Malformed { reason: "r" }, "08P01"),
            (AuthError::OutOfOrder { reason: "r" }, "08P01"),
            (
                AuthError::UnsupportedMechanism {
                    mechanism: "PLAIN".into(),
                },
                "28000",
            ),
            (AuthError::ChannelBindingUnsupported, "28000"),
        ];
        for (error, code) in cases {
            assert_eq!(error.sqlstate().code(), code, "{error}");
        }
    }

    #[test]
    fn bad_password_messages() {
        assert_eq!(
            AuthError::BadPassword("bob".into()).to_string(),
            "password authentication failed for user \"bob\""
        );
        assert_eq!(
            AuthError::BadPassword(String::new()).to_string(),
            "password authentication failed"
        );
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
