//! Protocol behaviour a driver relies on, checked message by message against a real
//! PostgreSQL through a routed Causeway in both pool modes: the unnamed statement across
//! requests (binary formats too), an error in the middle of a pipeline, and a server that
//! ends the session itself (`idle_session_timeout`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Proxy;

const MODES: [&str; 2] = ["transaction", "session"];

/// A client speaking raw protocol (trust auth as `app`).
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A backend message: its type and body.
#[derive(Debug)]
struct Reply {
    tag: u8,
    body: Vec<u8>,
}

impl Reply {
    fn code(&self) -> String {
        causeway::protocol::ErrorFields::parse(&self.body).code
    }
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn parse(sql: &str, types: &[u32]) -> Vec<u8> {
    let mut body = format!("\0{sql}\0").into_bytes();
    body.extend_from_slice(&(types.len() as i16).to_be_bytes());
    for oid in types {
        body.extend_from_slice(&oid.to_be_bytes());
    }
    frame(b'P', &body)
}

/// Bind the unnamed statement with binary int4 parameters, results in binary.
fn bind_binary(params: &[i32]) -> Vec<u8> {
    let mut body = b"\0\0".to_vec();
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        body.extend_from_slice(&4i32.to_be_bytes());
        body.extend_from_slice(&p.to_be_bytes());
    }
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    frame(b'B', &body)
}

fn execute() -> Vec<u8> {
    frame(b'E', b"\0\0\0\0\0")
}

fn sync() -> Vec<u8> {
    frame(b'S', b"")
}

fn flush() -> Vec<u8> {
    frame(b'H', b"")
}

fn tags(replies: &[Reply]) -> String {
    replies.iter().map(|r| r.tag as char).collect()
}

impl Raw {
    async fn connect(proxy: &Proxy) -> Raw {
        let stream = TcpStream::connect(proxy.addr).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let mut body = 196_608u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0app\0database\0app\0\0");
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        raw.send(&packet).await;
        raw.until_ready().await;
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next message, or `None` once the connection is closed.
    async fn next(&mut self) -> Option<Reply> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let end = 1 + len as usize;
                if self.buf.len() >= end {
                    let reply = Reply {
                        tag: self.buf[0],
                        body: self.buf[5..end].to_vec(),
                    };
                    self.buf.drain(..end);
                    return Some(reply);
                }
            }
            let mut chunk = [0u8; 8192];
            let read = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk));
            match read.await.expect("a reply in time") {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn until_ready(&mut self) -> Vec<Reply> {
        let mut out = Vec::new();
        while let Some(reply) = self.next().await {
            let done = reply.tag == b'Z';
            out.push(reply);
            if done {
                return out;
            }
        }
        panic!("closed before ReadyForQuery after {}", tags(&out));
    }
}

async fn proxy(mode: &str) -> Proxy {
    Proxy::start_routed(&format!(
        "[auth]\nmethod = \"trust\"\n[proxy]\npool_mode = \"{mode}\"\n"
    ))
    .await
}

/// `PQprepare(conn, "", ...)` then `PQexecPrepared(conn, "", ...)`: two requests, each
/// ending in Sync, binary parameters and results, and a Describe of the statement.
#[tokio::test]
async fn the_unnamed_statement_lives_across_requests() {
    for mode in MODES {
        let proxy = proxy(mode).await;
        let mut client = Raw::connect(&proxy).await;
        let mut prepare = parse("SELECT $1::int4 + 1", &[23]);
        prepare.extend(sync());
        client.send(&prepare).await;
        assert_eq!(tags(&client.until_ready().await), "1Z", "{mode}");
        for n in [41, 99] {
            let mut run = frame(b'D', b"S\0");
            run.extend(bind_binary(&[n]));
            run.extend(execute());
            run.extend(sync());
            client.send(&run).await;
            let replies = client.until_ready().await;
            assert_eq!(tags(&replies), "tT2DCZ", "{mode}: {replies:?}");
            let row = &replies[3].body;
            assert_eq!(&row[row.len() - 4..], &(n + 1).to_be_bytes(), "{mode}");
        }
    }
}

/// A pipeline (Flush between statements, one Sync at the end) whose second statement
/// fails: the first one's results, the error, nothing for the rest, ReadyForQuery, and a
/// connection that keeps working.
#[tokio::test]
async fn an_error_mid_pipeline_aborts_the_rest_and_keeps_the_connection() {
    for mode in MODES {
        let proxy = proxy(mode).await;
        let mut client = Raw::connect(&proxy).await;
        let mut first = parse("SELECT 1", &[]);
        first.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
        first.extend(execute());
        first.extend(flush());
        first.extend(parse("SELECT 1/0", &[]));
        first.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
        first.extend(execute());
        first.extend(flush());
        client.send(&first).await;
        let mut seen = Vec::new();
        while seen.last().is_none_or(|r: &Reply| r.tag != b'E') {
            seen.push(client.next().await.expect("replies before the error"));
        }
        // `1/0` is folded when the statement is planned, at Bind: its Bind fails.
        assert_eq!(tags(&seen), "12DC1E", "{mode}");
        assert_eq!(seen[5].code(), "22012", "{mode}");
        // The rest of the pipeline, sent after the error arrived, is discarded up to Sync.
        let mut rest = parse("SELECT 3", &[]);
        rest.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
        rest.extend(execute());
        rest.extend(sync());
        client.send(&rest).await;
        assert_eq!(tags(&client.until_ready().await), "Z", "{mode}");
        client.send(&frame(b'Q', b"SELECT 4\0")).await;
        assert_eq!(tags(&client.until_ready().await), "TDCZ", "{mode}");
    }
}

/// In session mode the server connection is the client's session: when PostgreSQL ends
/// it (here `idle_session_timeout`), the client gets the server's FATAL and is closed, as
/// it would be directly.
#[tokio::test]
async fn a_session_the_server_ends_ends_for_the_client() {
    let proxy = proxy("session").await;
    let mut client = Raw::connect(&proxy).await;
    client
        .send(&frame(b'Q', b"SET idle_session_timeout = '300ms'\0"))
        .await;
    assert_eq!(tags(&client.until_ready().await), "CZ");
    let fatal = client.next().await.expect("the server's FATAL");
    assert_eq!(fatal.tag, b'E');
    assert_eq!(fatal.code(), "57P05");
    assert!(client.next().await.is_none(), "then the connection closes");
}

/// In session mode the client's named statements keep their names on the server (as
/// `pg_prepared_statements` shows them), and Bind, Describe and Close use them as sent.
#[tokio::test]
async fn session_mode_keeps_statement_names() {
    let proxy = proxy("session").await;
    let mut client = Raw::connect(&proxy).await;
    let mut prepare = frame(b'P', b"s1\0SELECT 7\0\0\0");
    prepare.extend(frame(b'D', b"Ss1\0"));
    prepare.extend(frame(b'B', b"\0s1\0\0\0\0\0\0\0"));
    prepare.extend(execute());
    prepare.extend(sync());
    client.send(&prepare).await;
    assert_eq!(tags(&client.until_ready().await), "1tT2DCZ");
    client
        .send(&frame(b'Q', b"SELECT name FROM pg_prepared_statements\0"))
        .await;
    let rows = client.until_ready().await;
    let names: Vec<String> = rows
        .iter()
        .filter(|r| r.tag == b'D')
        .map(|r| String::from_utf8_lossy(&r.body[6..]).into_owned())
        .collect();
    assert_eq!(names, ["s1"]);
    let mut close = frame(b'C', b"Ss1\0");
    close.extend(sync());
    client.send(&close).await;
    assert_eq!(tags(&client.until_ready().await), "3Z");
    client
        .send(&frame(
            b'Q',
            b"SELECT count(*) FROM pg_prepared_statements\0",
        ))
        .await;
    let rows = client.until_ready().await;
    assert!(rows.iter().any(|r| r.tag == b'D' && r.body.ends_with(b"0")));
}

/// `SET`/`SHOW causeway.*` through the extended protocol, the value as a bind parameter
/// (tokio-postgres prepares every statement): answered by Causeway, and in effect.
#[tokio::test]
async fn causeway_settings_work_through_the_extended_protocol() {
    for mode in MODES {
        let proxy = proxy(mode).await;
        let client = proxy.client_as("app").await.unwrap();
        client
            .execute("SET causeway.session = $1", &[&"user-7"])
            .await
            .unwrap();
        let shown: String = client
            .query_one("SHOW causeway.session", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(shown, "user-7", "{mode}");
        client
            .execute("SET causeway.consistency = 'strong'", &[])
            .await
            .unwrap();
        let level: String = client
            .query_one("SHOW causeway.consistency", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(level, "strong", "{mode}");
        // A bad value is the client's error (22023), and the connection goes on.
        let err = client
            .execute("SET causeway.consistency = $1", &[&"sometimes"])
            .await
            .unwrap_err();
        assert_eq!(
            crate::support::sqlstate(&err).as_deref(),
            Some("22023"),
            "{mode}"
        );
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    }
}
