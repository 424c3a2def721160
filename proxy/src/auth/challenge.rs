//! Which challenge a client gets for its stored secret, and which credential Causeway then
//! logs in to the nodes with. Pure decisions; the session sends the messages.
//!
//! | stored secret  | `method = scram-sha-256` | `method = md5` | node login with   |
//! |----------------|--------------------------|----------------|-------------------|
//! | plaintext      | SCRAM                    | md5            | the password      |
//! | SCRAM secret   | SCRAM                    | SCRAM          | client's ClientKey|
//! | md5 hash       | md5                      | md5            | the hash (md5)    |
//! | none (unknown) | SCRAM, mock keys         | md5, fails     | —                 |
//!
//! As in PostgreSQL, a SCRAM secret cannot answer md5 and an md5 hash cannot answer SCRAM,
//! so the stored form decides where it must.

use std::sync::Arc;

use super::scram::{ClientKey, ScramKeys};
use super::secret::{Md5Hash, Secret};
use crate::backend::Credential;
use crate::config::AuthMethod;

/// What to ask the client for.
#[derive(Debug, Clone)]
pub enum Challenge {
    /// SCRAM-SHA-256 with these keys; `known` is false for an unknown user's mock keys,
    /// whose exchange must fail even if the proof somehow verified.
    Scram { keys: Arc<ScramKeys>, known: bool },
    /// An md5 challenge, checked against this hash (`None`: unknown user, always fails).
    Md5(Option<Md5Hash>),
}

/// The challenge for `user` with its stored secret under `method` (not `trust`).
/// `mock_secret` makes an unknown user's SCRAM salt stable, like a real user's.
pub fn challenge(
    method: AuthMethod,
    user: &str,
    secret: Option<&Secret>,
    mock_secret: &[u8],
) -> Challenge {
    match (secret, method) {
        (Some(Secret::Scram(keys)), _) => Challenge::Scram {
            keys: Arc::clone(keys),
            known: true,
        },
        (Some(Secret::Md5(hash)), _) => Challenge::Md5(Some(hash.clone())),
        (Some(Secret::Plain { password, .. }), AuthMethod::Md5) => {
            Challenge::Md5(Some(Md5Hash::of_password(user, password)))
        }
        (Some(Secret::Plain { scram, .. }), _) => Challenge::Scram {
            keys: Arc::clone(scram),
            known: true,
        },
        (None, AuthMethod::Md5) => Challenge::Md5(None),
        (None, _) => Challenge::Scram {
            keys: Arc::new(ScramKeys::mock(user, mock_secret)),
            known: false,
        },
    }
}

/// How Causeway logs in to the nodes for a client that authenticated against `secret`
/// (with `client_key` recovered if that was SCRAM).
pub fn credential(secret: Option<&Secret>, client_key: Option<&ClientKey>) -> Credential {
    match (secret, client_key) {
        (Some(Secret::Plain { password, .. }), _) => Credential::Password(password.clone()),
        (Some(Secret::Md5(hash)), _) => Credential::Md5Hash(hash.clone()),
        (Some(Secret::Scram(keys)), Some(key)) if keys.matches_client_key(key) => {
            Credential::ScramKey {
                keys: Arc::clone(keys),
                client_key: key.clone(),
            }
        }
        _ => Credential::None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn secrets() -> [Secret; 3] {
        let scram = postgres_protocol::password::scram_sha_256(b"pw");
        [
            Secret::parse("pw").unwrap(),
            Secret::parse(&scram).unwrap(),
            Secret::parse("md56a422f785c9e20873908ce25d1736ae2").unwrap(),
        ]
    }

    #[test]
    fn the_stored_form_decides_where_it_must() {
        let [plain, scram, md5] = secrets();
        let kind = |c: Challenge| match c {
            Challenge::Scram { known: true, .. } => "scram",
            Challenge::Scram { known: false, .. } => "mock scram",
            Challenge::Md5(Some(_)) => "md5",
            Challenge::Md5(None) => "mock md5",
        };
        let scram_method = AuthMethod::ScramSha256;
        let md5_method = AuthMethod::Md5;
        assert_eq!(
            kind(challenge(scram_method, "u", Some(&plain), b"m")),
            "scram"
        );
        assert_eq!(kind(challenge(md5_method, "u", Some(&plain), b"m")), "md5");
        assert_eq!(
            kind(challenge(scram_method, "u", Some(&scram), b"m")),
            "scram"
        );
        assert_eq!(
            kind(challenge(md5_method, "u", Some(&scram), b"m")),
            "scram"
        );
        assert_eq!(kind(challenge(scram_method, "u", Some(&md5), b"m")), "md5");
        assert_eq!(kind(challenge(md5_method, "u", Some(&md5), b"m")), "md5");
        assert_eq!(kind(challenge(scram_method, "u", None, b"m")), "mock scram");
        assert_eq!(kind(challenge(md5_method, "u", None, b"m")), "mock md5");
    }

    #[test]
    fn md5_of_a_plaintext_password_is_salted_with_the_user_name() {
        let [plain, ..] = secrets();
        let Challenge::Md5(Some(hash)) = challenge(AuthMethod::Md5, "app", Some(&plain), b"m")
        else {
            panic!("expected md5");
        };
        assert_eq!(hash, Md5Hash::of_password("app", "pw"));
    }

    #[test]
    fn node_credentials_follow_the_secret() {
        let [plain, scram, md5] = secrets();
        assert_eq!(credential(Some(&plain), None).password(), Some("pw"));
        assert!(matches!(
            credential(Some(&md5), None),
            Credential::Md5Hash(_)
        ));
        assert!(matches!(credential(Some(&scram), None), Credential::None));
        assert!(matches!(credential(None, None), Credential::None));
    }
}
