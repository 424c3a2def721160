//! The login state machine against a scripted server: Causeway's own SCRAM server
//! ([`ScramExchange`]) playing PostgreSQL, and hand-made messages playing a broken or
//! hostile one.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::auth::scram::ScramExchange;
use crate::protocol::{try_split, Message};

fn node() -> NodeAddr {
    NodeAddr {
        name: Arc::from("primary"),
        host: Arc::from("127.0.0.1"),
        port: 5432,
    }
}

fn login(credential: Credential) -> Login {
    Login {
        user: "app".into(),
        database: "app".into(),
        credential: Arc::new(credential),
        allow_cleartext: false,
        generation: 0,
    }
}

fn auth(code: i32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    body
}

fn sasl_offer() -> Vec<u8> {
    auth(AUTH_SASL, b"SCRAM-SHA-256\0\0")
}

/// The one frontend message in `out`.
fn sent(out: BytesMut) -> Message {
    let mut buf = out;
    try_split(&mut buf, 1 << 20).unwrap().unwrap()
}

/// SASLInitialResponse body: mechanism, length, data.
fn initial_data(msg: &Message) -> Vec<u8> {
    let body = msg.body();
    let (_, rest) = protocol::cstr(body).unwrap();
    rest[4..].to_vec()
}

/// A client's login to Causeway with `password`: the ClientKey Causeway recovers.
fn client_key(keys: &Arc<ScramKeys>, password: &str) -> ClientKey {
    let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let mut server = ScramExchange::new(Arc::clone(keys));
    let first = server
        .client_first(SCRAM_SHA_256, client.message())
        .unwrap();
    client.update(&first).unwrap();
    server.client_final(client.message()).unwrap();
    server.client_key().unwrap().clone()
}

/// Runs a SCRAM login against a server holding `server_keys`, up to AuthenticationOk;
/// `skip_final` makes the server leave out its final message.
fn scram_login(
    credential: Credential,
    server_keys: &Arc<ScramKeys>,
    skip_final: bool,
) -> Result<(), BackendError> {
    let node = node();
    let login = login(credential);
    let mut machine = LoginAuth::new(&node, &login, false);
    let mut server = ScramExchange::new(Arc::clone(server_keys));
    let first = sent(machine.on_message(&sasl_offer())?);
    let server_first = server
        .client_first(SCRAM_SHA_256, &initial_data(&first))
        .unwrap();
    let last = sent(machine.on_message(&auth(AUTH_SASL_CONTINUE, &server_first))?);
    let server_final = server.client_final(last.body()).unwrap();
    if !skip_final {
        assert!(machine
            .on_message(&auth(AUTH_SASL_FINAL, &server_final))?
            .is_empty());
    }
    machine.on_message(&auth(AUTH_OK, b"")).map(|_| ())
}

#[test]
fn scram_with_a_password_or_a_pass_through_key_logs_in() {
    let verifier = postgres_protocol::password::scram_sha_256(b"hunter2");
    let keys = Arc::new(ScramKeys::parse_verifier(&verifier).unwrap());
    scram_login(Credential::Password("hunter2".into()), &keys, false).unwrap();
    let key = client_key(&keys, "hunter2");
    let credential = Credential::ScramKey {
        keys: Arc::clone(&keys),
        client_key: key,
    };
    scram_login(credential, &keys, false).unwrap();
}

#[test]
fn authentication_ok_before_the_scram_final_message_is_refused() {
    let keys = Arc::new(ScramKeys::derive("secret", b"salt", 64));
    for credential in [
        Credential::Password("secret".into()),
        Credential::ScramKey {
            keys: Arc::clone(&keys),
            client_key: client_key(&keys, "secret"),
        },
    ] {
        let error = scram_login(credential, &keys, true).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("before the SCRAM exchange finished"),
            "{error}"
        );
    }
    // Straight after the SASL offer, too.
    let node = node();
    let login = login(Credential::Password("secret".into()));
    let mut machine = LoginAuth::new(&node, &login, false);
    machine.on_message(&sasl_offer()).unwrap();
    assert!(machine.on_message(&auth(AUTH_OK, b"")).is_err());
}

#[test]
fn a_forged_server_final_message_is_refused() {
    let keys = Arc::new(ScramKeys::derive("secret", b"salt", 64));
    for credential in [
        Credential::Password("secret".into()),
        Credential::ScramKey {
            keys: Arc::clone(&keys),
            client_key: client_key(&keys, "secret"),
        },
    ] {
        let node = node();
        let login = login(credential);
        let mut machine = LoginAuth::new(&node, &login, false);
        let mut server = ScramExchange::new(Arc::clone(&keys));
        let first = sent(machine.on_message(&sasl_offer()).unwrap());
        let server_first = server
            .client_first(SCRAM_SHA_256, &initial_data(&first))
            .unwrap();
        machine
            .on_message(&auth(AUTH_SASL_CONTINUE, &server_first))
            .unwrap();
        let forged = b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert!(machine.on_message(&auth(AUTH_SASL_FINAL, forged)).is_err());
        assert!(machine.on_message(&auth(AUTH_OK, b"")).is_err());
    }
}

#[test]
fn pass_through_to_a_node_with_another_secret_names_pg_authid() {
    let keys = Arc::new(ScramKeys::derive("secret", b"salt", 64));
    let key = client_key(&keys, "secret");
    let other = Arc::new(ScramKeys::derive("secret", b"other salt", 64));
    let credential = Credential::ScramKey {
        keys: Arc::clone(&keys),
        client_key: key,
    };
    let node = node();
    let login = login(credential);
    let mut machine = LoginAuth::new(&node, &login, false);
    let mut server = ScramExchange::new(other);
    let first = sent(machine.on_message(&sasl_offer()).unwrap());
    let server_first = server
        .client_first(SCRAM_SHA_256, &initial_data(&first))
        .unwrap();
    let error = machine
        .on_message(&auth(AUTH_SASL_CONTINUE, &server_first))
        .unwrap_err();
    assert!(matches!(error, BackendError::Credential { .. }), "{error}");
    assert!(error.to_string().contains("pg_authid"), "{error}");
}

#[test]
fn md5_is_answered_from_a_password_or_a_hash() {
    let salt = [0xde, 0xad, 0xbe, 0xef];
    let expected = "md5293b6595e2bc31835e11a0b106258764";
    let hash = Md5Hash::parse("md56a422f785c9e20873908ce25d1736ae2").unwrap();
    for credential in [
        Credential::Password("secret".into()),
        Credential::Md5Hash(hash),
    ] {
        let node = node();
        let login = login(credential);
        let mut machine = LoginAuth::new(&node, &login, false);
        let reply = sent(machine.on_message(&auth(AUTH_MD5, &salt)).unwrap());
        assert_eq!(reply.body(), format!("{expected}\0").as_bytes());
        machine.on_message(&auth(AUTH_OK, b"")).unwrap();
    }
}

#[test]
fn methods_a_credential_cannot_answer_are_explained() {
    let keys = Arc::new(ScramKeys::derive("secret", b"salt", 64));
    let scram = Credential::ScramKey {
        keys: Arc::clone(&keys),
        client_key: client_key(&keys, "secret"),
    };
    let md5 = Credential::Md5Hash(Md5Hash::of_password("app", "secret"));
    let cases = [
        (scram.clone(), auth(AUTH_MD5, &[1, 2, 3, 4])),
        (scram, auth(AUTH_CLEARTEXT, b"")),
        (md5.clone(), sasl_offer()),
        (md5, auth(AUTH_CLEARTEXT, b"")),
    ];
    for (credential, request) in cases {
        let node = node();
        let login = login(credential);
        let error = LoginAuth::new(&node, &login, false)
            .on_message(&request)
            .unwrap_err();
        assert!(matches!(error, BackendError::Credential { .. }), "{error}");
        assert!(error.to_string().contains("pg_hba.conf"), "{error}");
    }
    let node = node();
    let none = login(Credential::None);
    let error = LoginAuth::new(&node, &none, false)
        .on_message(&sasl_offer())
        .unwrap_err();
    assert!(matches!(error, BackendError::NoPassword { .. }));
}

#[test]
fn cleartext_only_over_tls_unless_allowed() {
    let node = node();
    let mut login = login(Credential::Password("secret".into()));
    let request = auth(AUTH_CLEARTEXT, b"");
    let error = LoginAuth::new(&node, &login, false)
        .on_message(&request)
        .unwrap_err();
    assert!(matches!(error, BackendError::CleartextRefused { .. }));
    assert!(!error.to_string().contains("secret"));
    let reply = sent(
        LoginAuth::new(&node, &login, true)
            .on_message(&request)
            .unwrap(),
    );
    assert_eq!(reply.body(), b"secret\0");
    login.allow_cleartext = true;
    let reply = sent(
        LoginAuth::new(&node, &login, false)
            .on_message(&request)
            .unwrap(),
    );
    assert_eq!(reply.body(), b"secret\0");
}

#[test]
fn malformed_and_out_of_order_requests_fail_without_panicking() {
    let node = node();
    let login = login(Credential::Password("secret".into()));
    for body in [
        &b""[..],
        &[0, 0, 0][..],
        &auth(AUTH_MD5, &[1, 2])[..],
        &auth(AUTH_SASL_CONTINUE, b"r=x")[..],
        &auth(AUTH_SASL_FINAL, b"v=x")[..],
        &auth(AUTH_SASL, b"PLAIN\0\0")[..],
        &auth(7, b"")[..],
    ] {
        assert!(LoginAuth::new(&node, &login, false)
            .on_message(body)
            .is_err());
    }
    let mut machine = LoginAuth::new(&node, &login, false);
    machine.on_message(&sasl_offer()).unwrap();
    assert!(machine.on_message(&sasl_offer()).is_err());
    let mut machine = LoginAuth::new(&node, &login, false);
    machine.on_message(&sasl_offer()).unwrap();
    assert!(machine
        .on_message(&auth(AUTH_SASL_CONTINUE, b"garbage"))
        .is_err());
}

#[test]
fn debug_output_never_shows_a_credential() {
    let keys = Arc::new(ScramKeys::derive("secret", b"salt", 64));
    let logins = [
        login(Credential::Password("s3cret".into())),
        login(Credential::Md5Hash(Md5Hash::of_password("app", "s3cret"))),
        login(Credential::ScramKey {
            keys: Arc::clone(&keys),
            client_key: client_key(&keys, "secret"),
        }),
    ];
    for login in logins {
        let shown = format!("{login:?}");
        let hash = format!(
            "{:?}",
            Md5Hash::of_password("app", "s3cret").response([0; 4])
        );
        assert!(
            !shown.contains("s3cret") && !shown.contains(&hash[4..12]),
            "{shown}"
        );
        assert!(
            !shown.contains("ClientKey") && !shown.contains("salt"),
            "{shown}"
        );
    }
}

/// A one-connection server on loopback that asks for SCRAM with `keys`, leaves out its
/// final message when `skip_final`, then sends AuthenticationOk and ReadyForQuery.
async fn scram_server(keys: Arc<ScramKeys>, skip_final: bool) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let read = |buf: &mut BytesMut| {
            if buf.len() < 4 {
                return None;
            }
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            (buf.len() >= len).then(|| buf.split_to(len))
        };
        // Startup packet (untagged).
        let _startup = loop {
            if let Some(packet) = read(&mut buf) {
                break packet;
            }
            stream.read_buf(&mut buf).await.unwrap();
        };
        let next = async |buf: &mut BytesMut, stream: &mut tokio::net::TcpStream| loop {
            if let Some(msg) = try_split(buf, 1 << 20).unwrap() {
                return msg;
            }
            if stream.read_buf(buf).await.unwrap() == 0 {
                panic!("client went away");
            }
        };
        let mut out = BytesMut::new();
        let send = |out: &mut BytesMut, code: i32, data: &[u8]| {
            crate::protocol::frame::append(out, b'R', &auth(code, data));
        };
        send(&mut out, AUTH_SASL, b"SCRAM-SHA-256\0\0");
        stream.write_all(&out).await.unwrap();
        out.clear();
        let mut server = ScramExchange::new(keys);
        let first = next(&mut buf, &mut stream).await;
        let server_first = server
            .client_first(SCRAM_SHA_256, &initial_data(&first))
            .unwrap();
        send(&mut out, AUTH_SASL_CONTINUE, &server_first);
        stream.write_all(&out).await.unwrap();
        out.clear();
        let last = next(&mut buf, &mut stream).await;
        let server_final = server.client_final(last.body()).unwrap();
        if !skip_final {
            send(&mut out, AUTH_SASL_FINAL, &server_final);
        }
        send(&mut out, AUTH_OK, b"");
        crate::protocol::frame::append(&mut out, b'Z', b"I");
        let _ = stream.write_all(&out).await;
        let _ = stream.read_buf(&mut buf).await;
    });
    addr
}

fn settings() -> super::super::PoolSettings {
    super::super::PoolSettings {
        pool_size: 1,
        connect_timeout: std::time::Duration::from_secs(5),
        checkout_timeout: std::time::Duration::from_secs(5),
        idle_timeout: std::time::Duration::from_secs(60),
        lifetime: std::time::Duration::from_secs(60),
        max_message: 1 << 20,
        max_prepared: 10,
        empty_fingerprint: 0,
        // The scripted server speaks no SSLRequest.
        tls: crate::tls::ServerTls::disabled(),
    }
}

#[tokio::test]
async fn a_server_connection_logs_in_by_pass_through_only_after_the_final_message() {
    let verifier = postgres_protocol::password::scram_sha_256(b"hunter2");
    let keys = Arc::new(ScramKeys::parse_verifier(&verifier).unwrap());
    let login = login(Credential::ScramKey {
        keys: Arc::clone(&keys),
        client_key: client_key(&keys, "hunter2"),
    });
    for skip_final in [false, true] {
        let addr = scram_server(Arc::clone(&keys), skip_final).await;
        let node = NodeAddr {
            name: Arc::from("primary"),
            host: Arc::from("127.0.0.1"),
            port: addr.port(),
        };
        let result = super::super::ServerConn::connect(1, &node, &login, &settings(), None).await;
        match (skip_final, result) {
            (false, Ok(conn)) => conn.close(),
            (true, Err(BackendError::Protocol { message, .. })) => {
                assert!(
                    message.contains("before the SCRAM exchange finished"),
                    "{message}"
                );
            }
            (skip, other) => panic!("skip_final = {skip}: {other:?}"),
        }
    }
}
