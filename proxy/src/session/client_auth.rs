//! Connection startup as the client sees it: TLS/GSS refusal, the startup packet, protocol
//! negotiation, client authentication (trust, md5, scram-sha-256, against plaintext
//! passwords, SCRAM secrets, md5 hashes or `auth_query` results), and the parameters that
//! become the client's session defaults.

use bytes::{Buf, BytesMut};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::sync::Arc;

use super::{ClientStream, SessionError};
use crate::auth::challenge::{self, Challenge};
use crate::auth::lookup;
use crate::auth::scram::ScramExchange;
use crate::auth::secret::Secret;
use crate::backend::{Credential, Login};
use crate::config::AuthMethod;
use crate::context::Context;
use crate::protocol::encode::{self, PgError};
use crate::protocol::startup::{self, StartupMessage, StartupPacket};
use crate::protocol::{cstr, tag, try_split, Message, SqlState, Untrusted};

/// Longest password or SASL message accepted (PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH).
const MAX_AUTH_MESSAGE: usize = 65_535;

/// What the first packets of a connection asked for.
#[derive(Debug)]
pub(super) enum Opening {
    Startup(StartupMessage),
    Cancel {
        pid: i32,
        key: bytes::Bytes,
    },
    /// The client went away before sending a startup packet.
    Gone,
}

/// Read packets until a StartupMessage or CancelRequest, refusing TLS and GSS encryption.
/// `pending` keeps whatever the client sent after them.
///
/// # Errors
/// Malformed packets (08P01 and friends) and I/O errors.
pub(super) async fn read_opening<S: ClientStream>(
    stream: &mut S,
    pending: &mut BytesMut,
) -> Result<Opening, SessionError> {
    let mut refused_ssl = false;
    let mut refused_gss = false;
    loop {
        let Some(packet) = startup::read_packet(stream, pending).await? else {
            return Ok(Opening::Gone);
        };
        match packet.map_err(SessionError::Startup)? {
            StartupPacket::SslRequest if !refused_ssl => {
                refused_ssl = true;
                stream.write_all(b"N").await?;
            }
            StartupPacket::GssEncRequest if !refused_gss => {
                refused_gss = true;
                stream.write_all(b"N").await?;
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                return Err(SessionError::Protocol(
                    "encryption was requested twice".into(),
                ))
            }
            StartupPacket::Cancel { pid, key } => return Ok(Opening::Cancel { pid, key }),
            StartupPacket::Startup(message) => return Ok(Opening::Startup(message)),
        }
    }
}

/// Tell a client asking for protocol 3.x (x > 0) or `_pq_.` options what we speak.
pub(super) fn negotiate(message: &StartupMessage, out: &mut BytesMut) {
    let options = message.protocol_options();
    if message.minor_version > 0 || !options.is_empty() {
        encode::negotiate_protocol_version(out, options);
    }
}

/// Authenticate the client with the configured method and its stored secret (from
/// `[[users]]`, else looked up with `[auth] auth_query`). `pending` holds what the client
/// sent after its startup packet, and keeps what it sent after its last password message
/// (a client may pipeline its first query behind it). Returns the credential Causeway logs
/// in to the nodes with for this client.
///
/// # Errors
/// 28P01 for a wrong password or unknown user (alike, so names cannot be probed), 08P01
/// for protocol violations (such as a second StartupMessage during authentication), 08006
/// when `auth_query` could not be run.
pub(super) async fn authenticate<S: ClientStream>(
    ctx: &Context,
    stream: &mut S,
    user: &str,
    out: &mut BytesMut,
    pending: &mut BytesMut,
) -> Result<Credential, SessionError> {
    let failed = || SessionError::Auth(crate::auth::AuthError::BadPassword(user.to_owned()));
    let secret = stored_secret(ctx, user).await?;
    let secret = secret.as_deref();
    let method = ctx.config.auth.method;
    if method == AuthMethod::Trust {
        let anyone = ctx.config.users.is_empty() && ctx.config.auth.auth_user.is_none();
        if !anyone && ctx.config.user(user).is_none() && secret.is_none() {
            return Err(failed());
        }
        encode::auth_ok(out);
        return Ok(challenge::credential(secret, None));
    }
    let client_key = match challenge::challenge(method, user, secret, &ctx.mock_secret) {
        Challenge::Md5(hash) => {
            let salt: [u8; 4] = rand::rng().random();
            encode::auth_md5(out, salt);
            flush(stream, out).await?;
            let response = password_message(stream, pending).await?;
            let response = cstr(response.body()).map(|(r, _)| r).unwrap_or_default();
            if !hash.is_some_and(|hash| hash.response_matches(salt, response)) {
                return Err(failed());
            }
            None
        }
        Challenge::Scram { keys, known } => {
            // Unknown users run the exchange against mock keys and fail at the proof, so
            // a client cannot tell which user names exist.
            let mut exchange = ScramExchange::new(keys);
            encode::auth_sasl(out, &["SCRAM-SHA-256"]);
            flush(stream, out).await?;
            let first = password_message(stream, pending).await?;
            let (mechanism, data) = sasl_initial(first.body())
                .ok_or_else(|| SessionError::Protocol("malformed SASLInitialResponse".into()))?;
            let server_first = exchange
                .client_first(mechanism, data)
                .map_err(SessionError::Auth)?;
            encode::auth_sasl_continue(out, server_first);
            flush(stream, out).await?;
            let last = password_message(stream, pending).await?;
            let server_final = exchange.client_final(last.body()).map_err(|e| match e {
                crate::auth::AuthError::BadPassword(_) => failed(),
                other => SessionError::Auth(other),
            })?;
            if !known {
                return Err(failed());
            }
            encode::auth_sasl_final(out, server_final);
            exchange.client_key().cloned()
        }
    };
    encode::auth_ok(out);
    Ok(challenge::credential(secret, client_key.as_ref()))
}

/// The stored secret of `user`: its `[[users]]` password, else (for users not listed, when
/// `[auth] auth_user` is set) the secret `auth_query` returns on the primary (on an
/// admitted replica while the primary cannot be reached), cached.
///
/// # Errors
/// 08006 when the lookup could not be run (no node reachable, `auth_user` refused...):
/// not a password failure, so the client and the operator know to look elsewhere.
async fn stored_secret(ctx: &Context, user: &str) -> Result<Option<Arc<Secret>>, SessionError> {
    if let Some(secret) = ctx.secrets.get(user) {
        return Ok(Some(Arc::clone(secret)));
    }
    let auth = &ctx.config.auth;
    let Some(auth_user) = auth.auth_user.as_deref() else {
        return Ok(None);
    };
    if ctx.config.user(user).is_some() || user.is_empty() {
        return Ok(None);
    }
    let login = Login {
        user: auth_user.to_owned(),
        database: auth.auth_database.clone(),
        credential: Arc::new(challenge::credential(
            ctx.secrets.get(auth_user).map(|s| &**s),
            None,
        )),
        allow_cleartext: auth.allow_server_cleartext,
        generation: ctx.generation,
    };
    let fetch = || lookup::nodes::run(ctx, &login, user);
    ctx.looked_up.get(user, fetch).await.map_err(|err| {
        // The detail (auth_user's name, the primary's address, its error) is for the
        // operator's log, not for a client that has not authenticated.
        tracing::warn!(user = ?user, %err, "auth_query lookup failed; login refused");
        SessionError::Client(
            PgError::fatal(
                SqlState::CONNECTION_FAILURE,
                "auth_query failed: the user could not be looked up on the primary or a replica",
            )
            .with_hint(
                "Causeway looks up users not in [[users]] on the primary (on a replica while \
                 the primary is down) as [auth] auth_user; check that the nodes are up and \
                 that auth_user can log in and run auth_query",
            ),
        )
    })
}

fn sasl_initial(body: &[u8]) -> Option<(&str, &[u8])> {
    let (mechanism, mut rest) = cstr(body)?;
    if rest.len() < 4 {
        return None;
    }
    let len = rest.get_i32();
    let data = if len < 0 {
        &[][..]
    } else {
        rest.get(..len as usize)?
    };
    Some((std::str::from_utf8(mechanism).ok()?, data))
}

async fn flush<S: ClientStream>(stream: &mut S, out: &mut BytesMut) -> Result<(), SessionError> {
    stream.write_all(out).await?;
    stream.flush().await?;
    out.clear();
    Ok(())
}

/// The next message, which must be a password message (PasswordMessage, SASLInitialResponse
/// or SASLResponse: all tagged `p`), from `buf` topped up from `stream`.
async fn password_message<S: ClientStream>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Message, SessionError> {
    loop {
        if let Some(&first) = buf.first() {
            if first != tag::PASSWORD {
                return Err(SessionError::Protocol(format!(
                    "expected password response, got message type {first}"
                )));
            }
        }
        if let Some(msg) = try_split(buf, MAX_AUTH_MESSAGE)? {
            return Ok(msg);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(SessionError::ClientGone);
        }
    }
}

/// Split startup parameters into the ones replayed as session settings. `user`, `database`
/// and `replication` are connection properties; `options` carries `-c name=value` pairs.
///
/// # Errors
/// Parameter names that are not plain GUC names, malformed `options`, replication requests.
pub(super) fn session_params(message: &StartupMessage) -> Result<(Params, Params), PgError> {
    let mut params: Vec<(String, String)> = Vec::new();
    let mut ours: Vec<(String, String)> = Vec::new();
    let mut put = |name: &str, value: &str| -> Result<(), PgError> {
        if !is_guc_name(name) {
            return Err(PgError::fatal(
                SqlState::UNDEFINED_OBJECT,
                format!("unrecognized configuration parameter {}", Untrusted(name)),
            ));
        }
        let name = name.to_ascii_lowercase();
        // `causeway.*` settings are Causeway's own and never reach a server.
        let list = if name.starts_with("causeway.") {
            &mut ours
        } else {
            &mut params
        };
        list.retain(|(n, _)| *n != name);
        list.push((name, value.to_owned()));
        Ok(())
    };
    for (name, value) in &message.params {
        match name.as_str() {
            "user" | "database" => {}
            "replication" => {
                return Err(PgError::fatal(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "Causeway does not proxy replication connections",
                )
                .with_hint("connect replication clients to PostgreSQL directly"))
            }
            "options" => {
                for (n, v) in parse_options(value)? {
                    put(&n, &v)?;
                }
            }
            n if n.starts_with("_pq_.") => {}
            n => put(n, value)?,
        }
    }
    Ok((params, ours))
}

/// Name/value pairs from a startup packet.
pub(super) type Params = Vec<(String, String)>;

fn is_guc_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// Parse libpq `options`: `-c name=value` / `--name=value`, with backslash escapes.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, PgError> {
    let bad = || {
        PgError::fatal(
            SqlState::PROTOCOL_VIOLATION,
            format!(
                "invalid command-line argument in options: {}",
                Untrusted(options)
            ),
        )
        .with_hint("use options='-c name=value'")
    };
    let words = split_option_words(options);
    let mut out = Vec::new();
    let mut iter = words.into_iter();
    while let Some(word) = iter.next() {
        let pair = if word == "-c" {
            iter.next().ok_or_else(bad)?
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest.to_owned()
        } else if let Some(rest) = word.strip_prefix("--") {
            rest.to_owned()
        } else {
            return Err(bad());
        };
        let (name, value) = pair.split_once('=').ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        out.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(out)
}

fn split_option_words(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)]) -> StartupMessage {
        StartupMessage {
            minor_version: 0,
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn options_become_session_params() {
        let m = startup(&[
            ("user", "app"),
            ("application_name", "psql"),
            (
                "options",
                "-c search_path=a\\ b -csearch_path=c --work-mem=4MB",
            ),
        ]);
        let (params, _) = session_params(&m).unwrap();
        assert_eq!(
            params,
            vec![
                ("application_name".to_owned(), "psql".to_owned()),
                ("search_path".to_owned(), "c".to_owned()),
                ("work_mem".to_owned(), "4MB".to_owned()),
            ]
        );
    }

    #[test]
    fn bad_params_and_options_are_refused() {
        for options in ["-c=", "-c", "x", "-c =1", "--=1"] {
            let m = startup(&[("user", "a"), ("options", options)]);
            assert!(session_params(&m).is_err(), "{options}");
        }
        let m = startup(&[("user", "a"), ("search_path'; DROP", "x")]);
        assert_eq!(
            session_params(&m).unwrap_err().code,
            SqlState::UNDEFINED_OBJECT
        );
        let m = startup(&[("user", "a"), ("x\n2026 FAKE LOG LINE", "v")]);
        let message = session_params(&m).unwrap_err().message;
        assert!(
            !message.contains('\n'),
            "control characters are escaped: {message}"
        );
        // A huge name or options string is cut in the message (and so in the log).
        let huge = format!("{}\u{1b}[2J", "n".repeat(100_000));
        for m in [
            startup(&[("user", "a"), (huge.as_str(), "v")]),
            startup(&[("user", "a"), ("options", huge.as_str())]),
        ] {
            let message = session_params(&m).unwrap_err().message;
            assert!(message.len() < 200, "{message}");
            assert!(!message.contains('\u{1b}'), "{message}");
        }
        let m = startup(&[("user", "a"), ("replication", "true")]);
        assert_eq!(
            session_params(&m).unwrap_err().code,
            SqlState::FEATURE_NOT_SUPPORTED
        );
    }

    #[test]
    fn sasl_initial_response_is_parsed_defensively() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"abc");
        assert_eq!(sasl_initial(&body), Some(("SCRAM-SHA-256", &b"abc"[..])));
        for cut in 0..body.len() {
            assert!(sasl_initial(&body[..cut]).is_none());
        }
    }
}
