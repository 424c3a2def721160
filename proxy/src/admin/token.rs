//! The admin bearer token (`[proxy] admin_token_file`): read once at startup, compared in
//! constant time (digests of equal length, so neither content nor length leaks by timing).

use sha2::{Digest, Sha256};

/// A secret that requests must present as `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A token from the file's text (surrounding whitespace and newlines removed); `None`
    /// when nothing is left.
    pub fn from_text(text: &str) -> Option<AdminToken> {
        let token = text.trim();
        (!token.is_empty()).then(|| AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Reads the token file.
    ///
    /// # Errors
    /// The file cannot be read, or holds only whitespace.
    pub fn load(path: &std::path::Path) -> Result<AdminToken, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        AdminToken::from_text(&text).ok_or_else(|| format!("{} is empty", path.display()))
    }

    /// Whether an `Authorization` header value carries this token.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(presented) = authorization.and_then(|value| value.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.trim_ascii()).into();
        digest
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}
