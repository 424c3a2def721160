//! Malformed and hostile input: each bad connection gets an ErrorResponse with a real SQLSTATE
//! and is closed, while other clients keep working.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{counter, eventually, sqlstate, Proxy};

fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", "app")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// Read everything until the server closes; return (message type, SQLSTATE) of each error
/// and whether the connection was closed within the timeout.
async fn errors_until_close(stream: &mut TcpStream) -> (Vec<String>, bool) {
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok();
    let mut codes = Vec::new();
    let mut rest = &buf[..];
    while rest.len() >= 5 {
        let tag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(body) = rest.get(5..1 + len) else {
            break;
        };
        if tag == b'E' {
            let fields = causeway::protocol::ErrorFields::parse(body);
            codes.push(format!("{} {}", fields.severity, fields.code));
        }
        rest = &rest[1 + len..];
    }
    (codes, closed)
}

async fn connect(proxy: &Proxy) -> TcpStream {
    TcpStream::connect(proxy.addr).await.unwrap()
}

/// Start up as `app` under trust auth and read until ReadyForQuery.
async fn started(proxy: &Proxy) -> TcpStream {
    let mut s = connect(proxy).await;
    s.write_all(&startup_packet("app")).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !seen.windows(6).any(|w| w == b"Z\0\0\0\x05I") {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed during startup");
        seen.extend_from_slice(&chunk[..n]);
    }
    s
}

#[tokio::test]
async fn bad_frames_get_errors_and_close_only_their_connection() {
    let proxy = Proxy::start("[auth]\nmethod = \"trust\"\n[proxy]\nstartup_timeout = \"1s\"\nmax_message_bytes = 1048576\n").await;
    let bystander = proxy.client_as("app").await.unwrap();
    let keep_busy = tokio::spawn(async move {
        for i in 0..200i32 {
            let v: i32 = bystander
                .query_one("SELECT $1::int", &[&i])
                .await
                .unwrap()
                .get(0);
            assert_eq!(v, i);
            // Pacing the bystander's load, not waiting for anything.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    // Garbage instead of a startup packet (an HTTP request).
    let mut s = connect(&proxy).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        errors_until_close(&mut s).await,
        (vec!["FATAL 08P01".into()], true)
    );

    // A startup length over 2^31.
    let mut s = connect(&proxy).await;
    s.write_all(&[0x80, 0, 0, 0, 0, 3, 0, 0]).await.unwrap();
    assert_eq!(
        errors_until_close(&mut s).await,
        (vec!["FATAL 08P01".into()], true)
    );

    // A truncated startup packet: the startup timeout ends it.
    let mut s = connect(&proxy).await;
    s.write_all(&startup_packet("app")[..10]).await.unwrap();
    assert_eq!(
        errors_until_close(&mut s).await,
        (vec!["FATAL 08P01".into()], true)
    );

    // After startup: a message length over 2^31, an oversized frame, an unknown type.
    for frame in [
        vec![b'Q', 0x80, 0, 0, 1],
        vec![b'Q', 0x7f, 0xff, 0xff, 0xff],
        vec![b'Q', 0, 0x20, 0, 0],
        vec![b'!', 0, 0, 0, 4],
        vec![b'Q', 0, 0, 0, 2],
    ] {
        let mut s = started(&proxy).await;
        s.write_all(&frame).await.unwrap();
        assert_eq!(
            errors_until_close(&mut s).await,
            (vec!["FATAL 08P01".into()], true),
            "frame {frame:?}"
        );
    }

    // A truncated frame followed by EOF closes quietly.
    let mut s = started(&proxy).await;
    s.write_all(&[b'Q', 0, 0, 0, 50, b'S']).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(errors_until_close(&mut s).await.1);

    // Malformed Parse and Bind bodies.
    for frame in [b"P\0\0\0\x08ab\0\0".to_vec(), b"B\0\0\0\x05x".to_vec()] {
        let mut s = started(&proxy).await;
        s.write_all(&frame).await.unwrap();
        assert_eq!(
            errors_until_close(&mut s).await,
            (vec!["FATAL 08P01".into()], true)
        );
    }
    keep_busy.await.unwrap();
    // Each was counted by who broke the protocol and how.
    let text = proxy.metrics.encode();
    let count = |kind| counter(&text, "causeway_protocol_errors_total", &[("kind", kind)]);
    assert!(count("client_startup") >= 2.0, "{text}");
    assert!(
        count("client_frame") + count("client_message") >= 5.0,
        "{text}"
    );
    assert_eq!(count("server_desync"), 0.0);
}

#[tokio::test]
async fn second_startup_during_authentication_is_refused() {
    let proxy = Proxy::start("").await;
    let mut s = connect(&proxy).await;
    s.write_all(&startup_packet("app")).await.unwrap();
    let mut chunk = [0u8; 256];
    let n = s.read(&mut chunk).await.unwrap();
    assert_eq!(
        chunk[0],
        b'R',
        "expected an authentication request, got {:?}",
        &chunk[..n]
    );
    s.write_all(&startup_packet("postgres")).await.unwrap();
    assert_eq!(
        errors_until_close(&mut s).await,
        (vec!["FATAL 08P01".into()], true)
    );
    // And the proxy still serves others.
    let client = proxy.client().await;
    client.query_one("SELECT 1", &[]).await.unwrap();
}

#[tokio::test]
async fn ssl_and_gss_requests_are_declined_then_startup_proceeds() {
    let proxy = Proxy::start("").await;
    let mut s = connect(&proxy).await;
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])
        .await
        .unwrap();
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    s.write_all(&startup_packet("app")).await.unwrap();
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"R");
    // A third encryption request is a protocol violation.
    let mut s = connect(&proxy).await;
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let (codes, closed) = errors_until_close(&mut s).await;
    assert!(closed);
    assert_eq!(codes, vec!["FATAL 08P01".to_owned()]);
}

/// A frontend message: tag, length, body.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Reads until a ReadyForQuery has arrived after `after` bytes of `seen`.
async fn read_until_ready(s: &mut TcpStream, seen: &mut Vec<u8>, after: usize) {
    let mut chunk = [0u8; 4096];
    let wait = tokio::time::timeout(Duration::from_secs(10), async {
        while !seen[after..].windows(6).any(|w| w == b"Z\0\0\0\x05I") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(seen));
            seen.extend_from_slice(&chunk[..n]);
        }
    });
    wait.await
        .unwrap_or_else(|_| panic!("no ReadyForQuery: {:?}", String::from_utf8_lossy(seen)));
}

/// Reads the startup's ReadyForQuery, then the pipelined query's answer and its own.
async fn answered_after_startup(s: &mut TcpStream) {
    let mut seen = Vec::new();
    read_until_ready(s, &mut seen, 0).await;
    let first_ready = seen.windows(6).position(|w| w == b"Z\0\0\0\x05I").unwrap();
    read_until_ready(s, &mut seen, first_ready + 6).await;
    assert!(
        seen.windows(10).any(|w| w == b"pipelined1"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
}

/// Messages a client sends right behind its startup packet or its password, without
/// waiting for the answer, are kept and answered in order (PostgreSQL reads them from its
/// buffer the same way).
#[tokio::test]
async fn messages_pipelined_behind_startup_and_password_are_answered() {
    let query = message(b'Q', b"SELECT 'pipelined' || 1\0");
    // Trust: the startup packet, a query and Terminate in one write.
    let proxy = Proxy::start("[auth]\nmethod = \"trust\"\n").await;
    let mut s = connect(&proxy).await;
    let mut sent = startup_packet("app");
    sent.extend_from_slice(&query);
    s.write_all(&sent).await.unwrap();
    answered_after_startup(&mut s).await;
    // md5: the password message and a query in one write.
    let proxy = Proxy::start("[auth]\nmethod = \"md5\"\n").await;
    let mut s = connect(&proxy).await;
    s.write_all(&startup_packet("app")).await.unwrap();
    let mut request = [0u8; 13];
    s.read_exact(&mut request).await.unwrap();
    assert_eq!(&request[..9], b"R\0\0\0\x0c\0\0\0\x05", "an MD5 request");
    let salt = [request[9], request[10], request[11], request[12]];
    let hash = postgres_protocol::authentication::md5_hash(b"app", b"secret", salt);
    let mut sent = message(b'p', format!("{hash}\0").as_bytes());
    sent.extend_from_slice(&query);
    s.write_all(&sent).await.unwrap();
    answered_after_startup(&mut s).await;
}

#[tokio::test]
async fn client_limit_gives_53300() {
    let proxy = Proxy::start("[proxy]\nmax_client_connections = 2\n").await;
    let _a = proxy.client().await;
    let _b = proxy.client().await;
    let err = proxy.client_as("app").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"));
    drop(_a);
    // The slot is free once Causeway has seen the first client leave.
    eventually(
        Duration::from_secs(10),
        "a client admitted after one left",
        || proxy.client_as("app"),
    )
    .await;
}
