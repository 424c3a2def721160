//! Tests for the SCRAM-SHA-256 server: real client exchanges, a known answer, bad input.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::*;

/// Runs a whole exchange against the rust-postgres client and checks the server
/// signature on the client side as well.
fn authenticate(
    keys: &Arc<ScramKeys>,
    password: &str,
    binding: ChannelBinding,
) -> Result<(), AuthError> {
    let mut client = ScramSha256::new(password.as_bytes(), binding);
    let mut server = ScramExchange::new(Arc::clone(keys));
    let server_first = server.client_first(SCRAM_SHA_256, client.message())?;
    client.update(&server_first).unwrap();
    let server_final = server.client_final(client.message())?;
    client.finish(&server_final).unwrap();
    Ok(())
}

/// Server nonce used where a test replays messages against several servers.
const SERVER_NONCE: &str = "c2VydmVyIG5vbmNl";

fn fixed_server(keys: &Arc<ScramKeys>) -> ScramExchange {
    ScramExchange::with_server_nonce(Arc::clone(keys), SERVER_NONCE.to_owned())
}

/// A valid (client-first, client-final) pair for `keys`, the password `"secret"` and the
/// fixed server nonce.
fn valid_messages(keys: &Arc<ScramKeys>) -> (Vec<u8>, Vec<u8>) {
    let mut client = ScramSha256::new(b"secret", ChannelBinding::unsupported());
    let first = client.message().to_vec();
    let server_first = fixed_server(keys)
        .client_first(SCRAM_SHA_256, &first)
        .unwrap();
    client.update(&server_first).unwrap();
    (first, client.message().to_vec())
}

/// A server (with the fixed nonce) that has accepted `first`.
fn server_after(keys: &Arc<ScramKeys>, first: &[u8]) -> ScramExchange {
    let mut server = fixed_server(keys);
    server.client_first(SCRAM_SHA_256, first).unwrap();
    server
}

fn secret_keys() -> Arc<ScramKeys> {
    Arc::new(ScramKeys::derive("secret", b"0123456789abcdef", 64))
}

fn reason(error: AuthError) -> &'static str {
    match error {
        AuthError::Malformed { reason } => reason,
        other => panic!("expected a malformed-message error, got {other:?}"),
    }
}

#[test]
fn client_with_the_right_password_authenticates() {
    let keys = Arc::new(ScramKeys::generate("secret"));
    assert_eq!(keys.iterations(), DEFAULT_ITERATIONS);
    assert_eq!(keys.salt().len(), SALT_BYTES);
    authenticate(&keys, "secret", ChannelBinding::unsupported()).unwrap();
    authenticate(&keys, "secret", ChannelBinding::unrequested()).unwrap();
}

#[test]
fn client_with_a_wrong_password_fails_with_28p01() {
    let keys = Arc::new(ScramKeys::generate("secret"));
    let error = authenticate(&keys, "Secret", ChannelBinding::unsupported()).unwrap_err();
    assert_eq!(error, AuthError::BadPassword(String::new()));
    assert_eq!(error.sqlstate().code(), "28P01");
}

#[test]
fn generated_keys_normalize_like_libpq() {
    // U+00A0 (no-break space) becomes a plain space under SASLprep, on both sides.
    let keys = Arc::new(ScramKeys::generate("pass\u{a0}word"));
    authenticate(&keys, "pass\u{a0}word", ChannelBinding::unsupported()).unwrap();
}

#[test]
fn postgres_verifier_parses_and_authenticates() {
    let verifier = postgres_protocol::password::scram_sha_256(b"hunter2");
    let keys = Arc::new(ScramKeys::parse_verifier(&verifier).unwrap());
    assert_eq!(keys.iterations(), 4096);
    assert_eq!(keys.to_verifier(), verifier);
    authenticate(&keys, "hunter2", ChannelBinding::unsupported()).unwrap();
    let error = authenticate(&keys, "hunter3", ChannelBinding::unsupported()).unwrap_err();
    assert_eq!(error.sqlstate().code(), "28P01");
}

#[test]
fn derived_keys_round_trip_through_the_verifier_format() {
    let keys = ScramKeys::derive("secret", b"salt", 100);
    let parsed = ScramKeys::parse_verifier(&keys.to_verifier()).unwrap();
    assert_eq!(parsed.to_verifier(), keys.to_verifier());
    assert_eq!(parsed.salt(), b"salt");
    assert_eq!(ScramKeys::derive("x", b"s", 0).iterations(), 1);
}

#[test]
fn rfc7677_known_answer() {
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let keys = Arc::new(ScramKeys::derive("pencil", &salt, 4096));
    let mut server =
        ScramExchange::with_server_nonce(keys, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned());
    let server_first = server
        .client_first(SCRAM_SHA_256, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .unwrap();
    assert_eq!(
        server_first,
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let server_final = server
        .client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .unwrap();
    assert_eq!(
        server_final,
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

#[test]
fn mock_keys_fail_like_a_wrong_password_with_a_stable_salt() {
    let mock = Arc::new(ScramKeys::mock("ghost", b"process secret"));
    let error = authenticate(&mock, "anything", ChannelBinding::unsupported()).unwrap_err();
    assert_eq!(error, AuthError::BadPassword(String::new()));
    let again = ScramKeys::mock("ghost", b"process secret");
    assert_eq!(mock.salt(), again.salt());
    assert_eq!(mock.salt().len(), SALT_BYTES);
    assert_ne!(
        mock.salt(),
        ScramKeys::mock("ghost2", b"process secret").salt()
    );
    assert_ne!(
        mock.salt(),
        ScramKeys::mock("ghost", b"other secret").salt()
    );
}

#[test]
fn channel_binding_and_other_mechanisms_are_refused_with_28000() {
    let keys = secret_keys();
    let tls = ScramSha256::new(
        b"secret",
        ChannelBinding::tls_server_end_point(vec![1, 2, 3]),
    );
    let mut server = ScramExchange::new(Arc::clone(&keys));
    let error = server
        .client_first(SCRAM_SHA_256, tls.message())
        .unwrap_err();
    assert_eq!(error, AuthError::ChannelBindingUnsupported);
    assert_eq!(error.sqlstate().code(), "28000");

    let mut server = ScramExchange::new(Arc::clone(&keys));
    let error = server
        .client_first("SCRAM-SHA-256-PLUS", b"n,,n=,r=abc")
        .unwrap_err();
    assert_eq!(error, AuthError::ChannelBindingUnsupported);

    let mut server = ScramExchange::new(keys);
    let error = server.client_first("PLAIN", b"n,,n=,r=abc").unwrap_err();
    assert_eq!(error.sqlstate().code(), "28000");
    assert!(error.to_string().contains("\"PLAIN\""), "{error}");

    // A name chosen to forge log lines is escaped and cut.
    let mut server = ScramExchange::new(secret_keys());
    let forged = format!("X\nERROR forged{}", "y".repeat(5000));
    let error = server.client_first(&forged, b"n,,n=,r=abc").unwrap_err();
    let text = error.to_string();
    assert!(
        !text.contains('\n') && text.contains("X\\nERROR forged"),
        "{text}"
    );
    assert!(text.len() < 200, "{text}");
}

#[test]
fn malformed_client_first_messages_are_rejected() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "GS2 header"),
        (b"n", "GS2 header"),
        (b"n,", "GS2 header"),
        (b"x,,n=,r=abc", "n, y or p="),
        (b"n,a=admin,n=,r=abc", "authorization identity"),
        (b"n,,m=ext,n=,r=abc", "mandatory extensions"),
        (b"n,,r=abc", "n="),
        (b"n,,n=", "r="),
        (b"n,,n=,", "r="),
        (b"n,,n=,x=abc", "r="),
        (b"n,,n=,r=", "printable"),
        (b"n,,n=,r=ab c", "printable"),
        (b"n,,n=,r=abc,garbage", "x=value"),
        (b"n,,n=,r=abc,", "x=value"),
        (b"n,,n=,r=\xff", "UTF-8"),
    ];
    for (message, expected) in cases {
        let mut server = ScramExchange::new(secret_keys());
        let error = server.client_first(SCRAM_SHA_256, message).unwrap_err();
        assert_eq!(error.sqlstate().code(), "08P01", "{message:?}");
        let reason = reason(error);
        assert!(reason.contains(expected), "{message:?}: {reason}");
    }
    let mut server = ScramExchange::new(secret_keys());
    server
        .client_first(SCRAM_SHA_256, b"y,,n=user=2Cname,r=abc,x=ext")
        .unwrap();
}

#[test]
fn malformed_client_final_messages_are_rejected() {
    let keys = secret_keys();
    let (first, valid) = valid_messages(&keys);
    let valid = String::from_utf8(valid).unwrap();
    let (rest, proof) = valid.rsplit_once(",p=").unwrap();
    let nonce = rest.strip_prefix("c=biws,r=").unwrap();
    let cases = [
        (format!("c=biws,r={nonce}"), "p="),
        (format!("c=biws,r={nonce},p=!!!"), "32 bytes"),
        (format!("c=biws,r={nonce},p=AAAA"), "32 bytes"),
        (format!("c=eSws,r={nonce},p={proof}"), "GS2 header"),
        (format!("c=b@ws,r={nonce},p={proof}"), "not base64"),
        (
            format!("c=biws,r={nonce}x,p={proof}"),
            "nonce does not match",
        ),
        (format!("c=biws,r=,p={proof}"), "nonce does not match"),
        (format!("r={nonce},c=biws,p={proof}"), "c="),
        (format!("c=biws,p={proof}"), "r="),
        (format!("c=biws,r={nonce},junk,p={proof}"), "x=value"),
    ];
    for (message, expected) in cases {
        let mut server = server_after(&keys, &first);
        let error = server.client_final(message.as_bytes()).unwrap_err();
        assert_eq!(error.sqlstate().code(), "08P01", "{message}");
        let reason = reason(error);
        assert!(reason.contains(expected), "{message}: {reason}");
    }
    // Extensions before the proof are allowed and signed like everything else.
    let mut server = server_after(&keys, &first);
    let error = server
        .client_final(format!("c=biws,r={nonce},x=1,p={proof}").as_bytes())
        .unwrap_err();
    assert_eq!(error, AuthError::BadPassword(String::new()));
}

#[test]
fn every_truncation_fails_without_panicking() {
    let keys = secret_keys();
    let (first, last) = valid_messages(&keys);
    for len in 0..first.len() {
        let mut server = ScramExchange::new(Arc::clone(&keys));
        let result = server.client_first(SCRAM_SHA_256, &first[..len]);
        // A shorter nonce is still a valid nonce; anything shorter than "n,,n=,r=x" is not.
        assert_eq!(result.is_ok(), len > "n,,n=,r=".len(), "{len}");
    }
    for len in 0..last.len() {
        let mut server = server_after(&keys, &first);
        assert!(server.client_final(&last[..len]).is_err(), "{len}");
    }
    server_after(&keys, &first).client_final(&last).unwrap();
}

#[test]
fn mutated_messages_never_panic() {
    let keys = secret_keys();
    let (first, last) = valid_messages(&keys);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |below: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % below as u64).unwrap()
    };
    for _ in 0..2000 {
        let mut bad_first = first.clone();
        let index = next(bad_first.len());
        bad_first[index] = next(256) as u8;
        let mut server = fixed_server(&keys);
        if server.client_first(SCRAM_SHA_256, &bad_first).is_ok() {
            let _ = server.client_final(&last);
        }

        let mut bad_last = last.clone();
        let index = next(bad_last.len());
        bad_last[index] = next(256) as u8;
        let result = server_after(&keys, &first).client_final(&bad_last);
        assert_eq!(result.is_ok(), bad_last == last, "{bad_last:?}");
    }
}

#[test]
fn messages_out_of_order_are_protocol_errors() {
    let keys = secret_keys();
    let mut server = ScramExchange::new(Arc::clone(&keys));
    let error = server.client_final(b"c=biws,r=x,p=x").unwrap_err();
    assert!(matches!(error, AuthError::OutOfOrder { .. }), "{error:?}");
    assert_eq!(error.sqlstate().code(), "08P01");

    let (first, last) = valid_messages(&keys);
    let mut server = server_after(&keys, &first);
    let error = server.client_first(SCRAM_SHA_256, &first).unwrap_err();
    assert!(matches!(error, AuthError::OutOfOrder { .. }), "{error:?}");
    // The exchange is over after an error: even a valid final message is refused.
    assert!(matches!(
        server.client_final(&last),
        Err(AuthError::OutOfOrder { .. })
    ));

    let mut server = server_after(&keys, &first);
    server.client_final(&last).unwrap();
    assert!(matches!(
        server.client_final(&last),
        Err(AuthError::OutOfOrder { .. })
    ));
}

#[test]
fn bad_verifiers_are_rejected() {
    let good = ScramKeys::derive("secret", b"salt", 4096).to_verifier();
    let (head, keys) = good.rsplit_once('$').unwrap();
    let (stored, server) = keys.split_once(':').unwrap();
    let cases = [
        String::new(),
        "md5abcdef".to_owned(),
        good.replace("SCRAM-SHA-256$", "SCRAM-SHA-1$"),
        good.replace("$4096:", "$0:"),
        good.replace("$4096:", "$-1:"),
        good.replace("$4096:", "$many:"),
        good.replace("$4096:", "$4096"),
        good.replace("$4096:c2FsdA==", "$4096:"),
        good.replace("$4096:c2FsdA==", "$4096:%%%"),
        format!("{head}${stored}"),
        format!("{head}${stored}:"),
        format!("{head}${stored}:{}", &server[4..]),
        format!("{head}${stored}:{server}:extra"),
        good[..good.len() - 1].to_owned(),
    ];
    for verifier in cases {
        assert!(ScramKeys::parse_verifier(&verifier).is_none(), "{verifier}");
    }
    assert!(ScramKeys::parse_verifier(&good).is_some());
}

#[test]
fn debug_output_hides_keys() {
    let keys = ScramKeys::derive("secret", b"salt", 10);
    let text = format!("{keys:?}");
    assert!(text.contains("iterations: 10"), "{text}");
    assert!(!text.contains(&BASE64.encode(keys.stored_key)), "{text}");
    let exchange = ScramExchange::new(Arc::new(keys));
    assert_eq!(
        format!("{exchange:?}"),
        "ScramExchange { step: \"initial\", .. }"
    );
}
