//! What a `[[users]] password` (or an `auth_query` result) may hold: a plaintext password,
//! a SCRAM secret as in `pg_authid.rolpassword`
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), or an md5 hash
//! (`md5` + 32 hex digits, md5(password || user)). Parsing and the md5 computations on a
//! hash; no I/O. Like PostgreSQL, a value of one of the two hashed forms is taken as the
//! hash, never as a password that happens to look like one.

use std::fmt;
use std::sync::Arc;

use md5::{Digest, Md5};

use super::constant_time_eq;
use super::scram::ScramKeys;

/// Why a value cannot be used as a password or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// It starts like a SCRAM secret but is not a well-formed one.
    #[error(
        "looks like a SCRAM secret (starts with \"SCRAM-SHA-256$\") but is not one; copy \
         it whole from pg_authid.rolpassword: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
    )]
    MalformedScram,
}

/// Which form a stored password has, without the (slow) SCRAM key derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretForm {
    Plain,
    Scram,
    Md5,
}

impl SecretForm {
    /// The form of `text`.
    ///
    /// # Errors
    /// [`SecretError::MalformedScram`] for a broken SCRAM secret.
    pub fn of(text: &str) -> Result<SecretForm, SecretError> {
        if text.starts_with("SCRAM-SHA-256$") {
            ScramKeys::parse_verifier(text)
                .map(|_| SecretForm::Scram)
                .ok_or(SecretError::MalformedScram)
        } else if Md5Hash::parse(text).is_some() {
            Ok(SecretForm::Md5)
        } else {
            Ok(SecretForm::Plain)
        }
    }
}

/// A user's stored password in one of its three forms, ready for authentication.
#[derive(Clone)]
pub enum Secret {
    /// A plaintext password, and the SCRAM keys derived from it once.
    Plain {
        password: String,
        scram: Arc<ScramKeys>,
    },
    /// A SCRAM secret: clients authenticate with SCRAM, nodes are logged in to by passing
    /// the client's ClientKey through.
    Scram(Arc<ScramKeys>),
    /// An md5 hash: clients authenticate with md5, nodes asking for md5 get the hash.
    Md5(Md5Hash),
}

impl Secret {
    /// Parses a stored password, deriving SCRAM keys for a plaintext one (a few
    /// milliseconds: do it once per user, not per connection).
    ///
    /// # Errors
    /// [`SecretError::MalformedScram`] for a broken SCRAM secret.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        Ok(match SecretForm::of(text)? {
            SecretForm::Scram => Secret::Scram(Arc::new(
                ScramKeys::parse_verifier(text).ok_or(SecretError::MalformedScram)?,
            )),
            SecretForm::Md5 => match Md5Hash::parse(text) {
                Some(hash) => Secret::Md5(hash),
                None => plain(text),
            },
            SecretForm::Plain => plain(text),
        })
    }
}

fn plain(text: &str) -> Secret {
    Secret::Plain {
        password: text.to_owned(),
        scram: Arc::new(ScramKeys::generate(text)),
    }
}

/// Never prints a password, hash or key: only the form.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let form = match self {
            Secret::Plain { .. } => "Plain",
            Secret::Scram(_) => "Scram",
            Secret::Md5(_) => "Md5",
        };
        write!(f, "Secret::{form}(<redacted>)")
    }
}

/// An md5 password hash: the 32 lowercase hex digits of md5(password || user).
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Hash(String);

impl Md5Hash {
    /// `md5` followed by 32 lowercase hex digits (as in pg_authid, and as PostgreSQL
    /// tells a hash from a password), else `None`.
    pub fn parse(text: &str) -> Option<Md5Hash> {
        let hex = text.strip_prefix("md5")?;
        (hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Md5Hash(hex.to_owned()))
    }

    /// The hash of a plaintext password, as PostgreSQL stores it.
    pub fn of_password(user: &str, password: &str) -> Md5Hash {
        Md5Hash(md5_hex(&[password.as_bytes(), user.as_bytes()]))
    }

    /// The answer to an md5 challenge with this salt: `md5` + md5(hash || salt).
    pub fn response(&self, salt: [u8; 4]) -> String {
        format!("md5{}", md5_hex(&[self.0.as_bytes(), &salt]))
    }

    /// Whether a client's md5 response (optionally NUL-terminated) answers the challenge.
    pub fn response_matches(&self, salt: [u8; 4], client_response: &[u8]) -> bool {
        let response = client_response
            .strip_suffix(&[0])
            .unwrap_or(client_response);
        constant_time_eq(self.response(salt).as_bytes(), response)
    }
}

/// Never prints the hash.
impl fmt::Debug for Md5Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Md5Hash(<redacted>)")
    }
}

/// Lowercase hex of the md5 of the concatenated parts.
fn md5_hex(parts: &[&[u8]]) -> String {
    let mut md5 = Md5::new();
    for part in parts {
        md5.update(part);
    }
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_recognised() {
        let scram = postgres_protocol::password::scram_sha_256(b"pw");
        assert_eq!(SecretForm::of(&scram), Ok(SecretForm::Scram));
        assert_eq!(
            SecretForm::of("md5e5e28d3e2ec6f2e2e1b2fd4b1a6a1f3e"),
            Ok(SecretForm::Md5)
        );
        for plain in [
            "secret",
            "md5E5E28D3E2EC6F2E2E1B2FD4B1A6A1F3E",
            "md5",
            "md5abc",
            "md5e5e28d3e2ec6f2e2e1b2fd4b1a6a1f3z",
            "",
        ] {
            assert_eq!(SecretForm::of(plain), Ok(SecretForm::Plain), "{plain}");
        }
        let cut = &scram[..scram.len() - 3];
        assert_eq!(SecretForm::of(cut), Err(SecretError::MalformedScram));
        assert_eq!(
            SecretForm::of("SCRAM-SHA-256$x"),
            Err(SecretError::MalformedScram)
        );
        assert!(matches!(Secret::parse(&scram), Ok(Secret::Scram(_))));
        assert!(matches!(Secret::parse("pw"), Ok(Secret::Plain { .. })));
    }

    #[test]
    fn md5_hash_matches_postgres() {
        // pg_authid of `CREATE ROLE app PASSWORD 'secret'` with password_encryption = md5:
        // md5 of "secretapp".
        let hash = Md5Hash::of_password("app", "secret");
        assert_eq!(
            Md5Hash::parse("md56a422f785c9e20873908ce25d1736ae2"),
            Some(hash.clone())
        );
        // The challenge answer libpq computes from the password (see auth::tests).
        let salt = [0xde, 0xad, 0xbe, 0xef];
        assert_eq!(hash.response(salt), "md5293b6595e2bc31835e11a0b106258764");
        let libpq = postgres_protocol::authentication::md5_hash(b"app", b"secret", salt);
        assert!(hash.response_matches(salt, libpq.as_bytes()));
        let mut with_nul = libpq.clone().into_bytes();
        with_nul.push(0);
        assert!(hash.response_matches(salt, &with_nul));
        assert!(!hash.response_matches([0; 4], libpq.as_bytes()));
        let wrong = postgres_protocol::authentication::md5_hash(b"app", b"Secret", salt);
        assert!(!hash.response_matches(salt, wrong.as_bytes()));
        assert!(!hash.response_matches(salt, b""));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let scram = postgres_protocol::password::scram_sha_256(b"pw");
        for text in [
            "s3cret-text",
            scram.as_str(),
            "md56a422f785c9e20873908ce25d1736ae2",
        ] {
            let shown = format!("{:?}", Secret::parse(text).unwrap());
            assert!(
                !shown.contains(text) && !shown.contains("6a422f"),
                "{shown}"
            );
        }
    }
}
