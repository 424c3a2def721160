//! The console's message loop over an in-memory stream: simple queries, the extended
//! protocol refused until Sync, and malformed input ending only that connection.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::protocol::{frame, ErrorFields};

fn context() -> Arc<Context> {
    let config = Config::from_toml(
        "[proxy]\nadmin_users = [\"ops\"]\n\n[primary]\nhost = \"127.0.0.1\"\nport = 1\n",
    )
    .unwrap();
    Arc::new(Context::new(config, crate::Shutdown::default()).unwrap())
}

fn query(text: &str) -> Vec<u8> {
    let mut body = text.as_bytes().to_vec();
    body.push(0);
    frame::build(b'Q', &body).to_vec()
}

/// Sends `input` (then closes the client's side) and returns every message's tag, with
/// the SQLSTATE of each error.
async fn exchange(input: Vec<u8>) -> Vec<(u8, Option<String>)> {
    let (mut client, mut server) = tokio::io::duplex(1 << 16);
    let ctx = context();
    let served = tokio::spawn(async move {
        let _ = serve(ctx, &mut server, BytesMut::new(), BytesMut::new()).await;
    });
    client.write_all(&input).await.unwrap();
    client.shutdown().await.unwrap();
    let mut raw = Vec::new();
    client.read_to_end(&mut raw).await.unwrap();
    served.await.unwrap();
    let mut buf = BytesMut::from(&raw[..]);
    let mut tags = Vec::new();
    while let Ok(Some(message)) = try_split(&mut buf, 1 << 20) {
        let code = (message.tag == b'E').then(|| ErrorFields::parse(message.body()).code);
        tags.push((message.tag, code));
    }
    tags
}

fn tags(messages: &[(u8, Option<String>)]) -> String {
    messages.iter().map(|(t, _)| char::from(*t)).collect()
}

#[tokio::test]
async fn simple_queries_are_answered_and_sql_is_refused_42601() {
    let mut input = query("SHOW HELP");
    input.extend(query("SELECT 1"));
    input.extend(query(";"));
    input.extend(frame::build(b'X', b""));
    let got = exchange(input).await;
    // RowDescription, a row per command, CommandComplete, ReadyForQuery; the error; empty
    // query.
    assert_eq!(
        tags(&got),
        format!("T{}CZEZIZ", "D".repeat(command::COMMANDS.len()))
    );
    assert_eq!(got[command::COMMANDS.len() + 3].1.as_deref(), Some("42601"));
}

#[tokio::test]
async fn the_extended_protocol_gets_one_error_until_sync() {
    let mut input = frame::build(b'P', b"\0SHOW POOLS\0\0\0").to_vec();
    input.extend(frame::build(b'B', b"\0\0\0\0\0\0\0\0"));
    input.extend(frame::build(b'E', b"\0\0\0\0\0"));
    input.extend(frame::build(b'S', b""));
    input.extend(query("SHOW HELP"));
    let got = exchange(input).await;
    assert_eq!(got[0], (b'E', Some("0A000".into())));
    assert_eq!(got[1].0, b'Z');
    assert_eq!(got[2].0, b'T');
}

#[tokio::test]
async fn malformed_input_ends_the_connection_with_08p01() {
    // A Query without its terminator, then an unknown message type.
    let got = exchange(frame::build(b'Q', b"SHOW HELP").to_vec()).await;
    assert_eq!(got, [(b'E', Some("08P01".into()))]);
    let got = exchange(frame::build(b'?', b"").to_vec()).await;
    assert_eq!(got, [(b'E', Some("08P01".into()))]);
    let mut oversized = vec![b'Q'];
    oversized.extend_from_slice(&(1u32 << 30).to_be_bytes());
    let got = exchange(oversized).await;
    assert_eq!(got, [(b'E', Some("08P01".into()))]);
}
