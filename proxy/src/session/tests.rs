//! Unit tests of a whole session without sockets on the client side: the client is an
//! in-memory duplex stream speaking raw protocol, the servers are scripted fakes on
//! loopback (`fake_server`). Pipelining, transactions across requests, a retry after a
//! recovery conflict, a server lost mid-read, a client gone mid-result, and timeouts under
//! paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_server;
mod primary_wait;

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::context::Context;
use crate::protocol::{frame, tag, try_split, ErrorFields, Message};
use fake_server::{Answer, FakeServer, Script};

/// How long a test waits for any one reply (real time).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

fn script(f: impl Fn(&str) -> Option<Answer> + Send + Sync + 'static) -> Script {
    Arc::new(f)
}

fn plain() -> Script {
    script(|_| None)
}

/// A context for a primary at `primary` and replicas at `replicas`, with `extra` TOML
/// under `[proxy]`.
fn context(primary: &FakeServer, replicas: &[&FakeServer], proxy: &str) -> Arc<Context> {
    let mut toml = format!(
        "[proxy]\n{proxy}\n[auth]\nmethod = \"trust\"\n[primary]\nhost = \"127.0.0.1\"\nport = {}\n",
        primary.addr.port()
    );
    for (i, replica) in replicas.iter().enumerate() {
        toml.push_str(&format!(
            "[[replicas]]\nname = \"replica{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
            i + 1,
            replica.addr.port()
        ));
    }
    let config = crate::config::Config::from_toml(&toml).expect("config");
    Arc::new(Context::new(config, crate::shutdown::Shutdown::default()).expect("context"))
}

/// Put every node in the pool as if the monitor had sampled it: replicas replayed
/// `0/3000060`, the primary on timeline 1.
fn all_in_pool(ctx: &Context) {
    let nodes = 1 + ctx.replicas.len();
    for index in 0..nodes {
        ctx.topology.update(index, |status| {
            status.set_state(crate::monitor::State::InPool);
            status.sampled_at = Some(tokio::time::Instant::now());
            status.in_recovery = Some(index > 0);
            status.timeline = Some(1);
            status.lag_seconds = Some(Duration::ZERO);
            status.insert_lsn = Some(crate::lsn::Lsn::new(0x300_0060));
            status.replay_lsn = Some(crate::lsn::Lsn::new(0x300_0060));
        });
    }
}

/// The client end of a session, speaking raw protocol.
struct Client {
    io: DuplexStream,
    buf: BytesMut,
}

impl Client {
    /// Start a session on `ctx` and log in as `app` (trust).
    async fn connect(ctx: &Arc<Context>) -> Client {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer = "127.0.0.1:1".parse().expect("address");
        tokio::spawn(super::serve_connection(ctx.clone(), server, peer));
        let mut client = Client {
            io: client,
            buf: BytesMut::new(),
        };
        let mut startup = BytesMut::new();
        let params = [("user", "app"), ("database", "app")];
        postgres_protocol::message::frontend::startup_message(params, &mut startup).unwrap();
        client.send(&startup).await;
        let replies = client.until_ready().await;
        assert_eq!(replies.first().map(|m| m.tag), Some(tag::AUTHENTICATION));
        client
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("send");
    }

    /// The next message, or `None` when the session closed the connection.
    async fn recv(&mut self) -> Option<Message> {
        tokio::time::timeout(REPLY_TIMEOUT, self.recv_whenever())
            .await
            .expect("a reply in time")
    }

    /// [`Client::recv`] without a deadline (for tests of timers under paused time).
    async fn recv_whenever(&mut self) -> Option<Message> {
        loop {
            if let Some(msg) = try_split(&mut self.buf, 1 << 30).expect("framing") {
                return Some(msg);
            }
            if self.io.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    async fn until_ready(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(msg) = self.recv().await {
            let done = msg.tag == tag::READY_FOR_QUERY;
            out.push(msg);
            if done {
                return out;
            }
        }
        panic!("the session closed before ReadyForQuery: {:?}", tags(&out));
    }

    /// Run a simple query and return its replies' tags up to ReadyForQuery.
    async fn query(&mut self, sql: &str) -> Vec<Message> {
        self.send(&query(sql)).await;
        self.until_ready().await
    }
}

fn query(sql: &str) -> BytesMut {
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::query(sql, &mut out).unwrap();
    out
}

fn parse(name: &str, sql: &str) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_slice(format!("{name}\0{sql}\0").as_bytes());
    body.put_i16(0);
    let mut out = BytesMut::new();
    frame::append(&mut out, tag::PARSE, &body);
    out
}

fn bind_execute_sync(statement: &str) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_slice(format!("\0{statement}\0").as_bytes());
    body.put_i16(0);
    body.put_i16(0);
    body.put_i16(0);
    let mut out = BytesMut::new();
    frame::append(&mut out, tag::BIND, &body);
    frame::append(&mut out, tag::EXECUTE, b"\0\0\0\0\0");
    frame::append(&mut out, tag::SYNC, b"");
    out
}

fn tags(messages: &[Message]) -> String {
    messages.iter().map(|m| m.tag as char).collect()
}

fn error_code(messages: &[Message]) -> Option<String> {
    messages
        .iter()
        .find(|m| m.tag == tag::ERROR_RESPONSE)
        .map(|m| ErrorFields::parse(m.body()).code)
}

#[tokio::test]
async fn pipelined_extended_requests_are_answered_in_order() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "");
    let mut client = Client::connect(&ctx).await;
    let mut pipeline = parse("s1", "SELECT 1");
    pipeline.extend_from_slice(&bind_execute_sync("s1"));
    pipeline.extend_from_slice(&bind_execute_sync("s1"));
    pipeline.extend_from_slice(&bind_execute_sync("missing"));
    client.send(&pipeline).await;
    assert_eq!(tags(&client.until_ready().await), "12DCZ");
    assert_eq!(tags(&client.until_ready().await), "2DCZ");
    let failed = client.until_ready().await;
    assert_eq!(tags(&failed), "EZ");
    assert_eq!(error_code(&failed).as_deref(), Some("26000"));
    // The statement was prepared once on the server, under Causeway's name.
    let parses: Vec<_> = primary
        .texts()
        .into_iter()
        .filter(|(_, t)| t.starts_with("_cw_") && t.ends_with(": SELECT 1"))
        .collect();
    assert_eq!(parses.len(), 1, "{parses:?}");
    // The connection stays usable.
    assert_eq!(tags(&client.query("SELECT 2").await), "TDCZ");
}

#[tokio::test]
async fn a_transaction_keeps_its_server_connection_across_requests() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "pool_size = 2");
    let mut first = Client::connect(&ctx).await;
    let mut second = Client::connect(&ctx).await;
    let begin = first.query("BEGIN").await;
    assert_eq!(begin.last().map(|m| m.body()), Some(&b"T"[..]));
    // Another client runs meanwhile: it cannot get the connection held in the transaction.
    second.query("SELECT 'other'").await;
    first.query("INSERT INTO t VALUES (1)").await;
    let commit = first.query("COMMIT").await;
    assert_eq!(commit.last().map(|m| m.body()), Some(&b"I"[..]));
    let texts = primary.texts();
    let conn_of = |sql: &str| {
        texts
            .iter()
            .find(|(_, t)| t == sql)
            .map(|(c, _)| *c)
            .unwrap_or_else(|| panic!("{sql} not seen: {texts:?}"))
    };
    let tx = conn_of("BEGIN");
    assert_eq!(conn_of("INSERT INTO t VALUES (1)"), tx);
    assert_eq!(conn_of("COMMIT"), tx);
    assert_ne!(conn_of("SELECT 'other'"), tx);
}

#[tokio::test]
async fn a_read_cancelled_by_a_recovery_conflict_runs_on_another_node() {
    let replica = FakeServer::start(script(|sql| {
        (sql == "SELECT balance").then_some(Answer::Error("40001"))
    }))
    .await;
    let primary = FakeServer::start(script(|sql| {
        (sql == "SELECT balance").then(|| Answer::Rows(vec!["42".into()]))
    }))
    .await;
    let ctx = context(&primary, &[&replica], "");
    all_in_pool(&ctx);
    let mut client = Client::connect(&ctx).await;
    let replies = client.query("SELECT balance").await;
    assert_eq!(tags(&replies), "TDCZ", "no error reaches the client");
    assert!(replies
        .iter()
        .any(|m| m.tag == tag::DATA_ROW && m.body().ends_with(b"42")));
    assert!(replica.texts().iter().any(|(_, t)| t == "SELECT balance"));
    assert!(primary.texts().iter().any(|(_, t)| t == "SELECT balance"));
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains("causeway_consistency_fallbacks_total{reason=\"recovery_conflict\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_server_lost_mid_read_ends_the_session_with_08006() {
    let primary = FakeServer::start(script(|sql| {
        (sql == "SELECT many").then_some(Answer::RowsThenClose(2))
    }))
    .await;
    let ctx = context(&primary, &[], "");
    let mut client = Client::connect(&ctx).await;
    client.send(&query("SELECT many")).await;
    let mut seen = Vec::new();
    while let Some(msg) = client.recv().await {
        seen.push(msg);
    }
    assert_eq!(
        tags(&seen),
        "TDDE",
        "rows relayed, then the error, then EOF"
    );
    let fields = ErrorFields::parse(seen[3].body());
    assert_eq!(fields.code, "08006");
    assert!(fields.is_fatal());
}

#[tokio::test]
async fn a_client_gone_mid_result_does_not_return_its_server_dirty() {
    let big = "x".repeat(1024);
    let rows: Vec<String> = (0..4096).map(|_| big.clone()).collect();
    let primary = FakeServer::start(script(move |sql| {
        (sql == "SELECT big").then(|| Answer::Rows(rows.clone()))
    }))
    .await;
    let ctx = context(&primary, &[], "pool_size = 1");
    let mut first = Client::connect(&ctx).await;
    first.send(&query("SELECT big")).await;
    let row = first.recv().await.expect("a first reply");
    assert_eq!(row.tag, tag::ROW_DESCRIPTION);
    drop(first);
    let mut second = Client::connect(&ctx).await;
    let replies = second.query("SELECT 1").await;
    assert_eq!(tags(&replies), "TDCZ");
    let texts = primary.texts();
    let big_conn = texts
        .iter()
        .find(|(_, t)| t == "SELECT big")
        .map(|(c, _)| *c);
    let next_conn = texts
        .iter()
        .rev()
        .find(|(_, t)| t == "SELECT 1")
        .map(|(c, _)| *c);
    assert_ne!(
        big_conn, next_conn,
        "the half-read connection was reused: {texts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_times_out_at_startup_with_08p01() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "startup_timeout = \"5s\"");
    let (mut client, server) = tokio::io::duplex(1024);
    let peer = "127.0.0.1:1".parse().expect("address");
    let session = tokio::spawn(super::serve_connection(ctx, server, peer));
    let mut buf = BytesMut::new();
    while client.read_buf(&mut buf).await.unwrap_or(0) > 0 {}
    let msg = try_split(&mut buf, 1 << 20)
        .unwrap()
        .expect("an ErrorResponse");
    assert_eq!(ErrorFields::parse(msg.body()).code, "08P01");
    session.await.expect("the session ends");
}

#[tokio::test]
async fn an_idle_client_is_disconnected_with_57p05_under_paused_time() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "client_idle_timeout = \"600s\"");
    let mut client = Client::connect(&ctx).await;
    client.query("SELECT 1").await;
    // Nothing runs now but the idle timer: paused time jumps straight to it.
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let msg = client.recv_whenever().await.expect("an ErrorResponse");
    assert_eq!(ErrorFields::parse(msg.body()).code, "57P05");
    assert!(started.elapsed() >= Duration::from_secs(600));
    assert!(
        client.recv_whenever().await.is_none(),
        "then the connection closes"
    );
}

/// An idle client's task holds the session and the request loop's future: rare paths
/// (failover, stalled dispatch, routed requests, shared-floor writes) are boxed out of the
/// loop, which was 3.3 KB when they were inline, and 720 bytes while a lost connection and
/// the `?` around it stayed in its frame across the retry (issue 11: memory per idle
/// client).
#[tokio::test]
async fn an_idle_session_keeps_its_task_small() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "");
    let peer = "127.0.0.1:1".parse().expect("address");
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let mut startup = BytesMut::new();
    let params = [("user", "app"), ("database", "app")];
    postgres_protocol::message::frontend::startup_message(params, &mut startup).unwrap();
    client.write_all(&startup).await.unwrap();
    let Ok(Some(super::handshake::Opened::Session(mut session))) =
        super::handshake::handshake(&ctx, server, peer, Default::default()).await
    else {
        panic!("no session");
    };
    let run = std::mem::size_of_val(&session.run());
    let state = std::mem::size_of_val(&*session);
    let tcp = std::mem::size_of::<super::Session<tokio::net::TcpStream>>();
    let serve = super::serve_connection(ctx.clone(), tokio::io::duplex(1).0, peer);
    let serve = std::mem::size_of_val(&serve);
    eprintln!(
        "request loop {run} B, session {state} B ({tcp} B over TCP), connection future {serve} B"
    );
    assert!(run <= 320, "the request loop's future is {run} bytes");
    // 1,312: the per-session cache of replica pools (24 bytes) saves a keyed pool lookup
    // per routed request. 1,392: the emptied guard buffer, retry list and request list
    // kept for the next replica read save four allocations per routed read (-9% of its
    // instructions under callgrind). 1,400: the boxed SHOW STATS counters (8 bytes).
    // 1,424: the connection's last request on the primary awaiting a monitor sample (24
    // bytes), which replaced a probe statement after every write. Then 1,280 over TCP, the
    // allocator's size class below 1,536: one shutdown flag instead of two channels and a
    // shared handle, one guard buffer instead of two, the rare unsolicited FATAL boxed, and
    // the client's address kept in its cancel slot only.
    assert!(tcp <= 1280, "a TCP client's session is {tcp} bytes");
    assert!(state <= 1256, "the session is {state} bytes");
    assert!(serve <= 192, "the connection's future is {serve} bytes");
}

/// Bind (with one 1 KB text parameter) and Execute, no Sync.
fn bind_execute(statement: &str) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_slice(format!("\0{statement}\0").as_bytes());
    body.put_i16(0);
    body.put_i16(1);
    body.put_i32(1024);
    body.put_slice(&[b'p'; 1024]);
    body.put_i16(0);
    let mut out = BytesMut::new();
    frame::append(&mut out, tag::BIND, &body);
    frame::append(&mut out, tag::EXECUTE, b"\0\0\0\0\0");
    out
}

/// A request longer than Causeway keeps for routing (Bind/Execute pairs without a Sync,
/// like a JDBC batch) goes to the primary and streams there as it arrives: the primary
/// receives messages before the Sync is sent, and every statement is answered.
#[tokio::test]
async fn a_request_past_the_buffer_streams_to_the_primary() {
    let replica = FakeServer::start(plain()).await;
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[&replica], "");
    all_in_pool(&ctx);
    let mut client = Client::connect(&ctx).await;
    let mut first = parse("big", "SELECT $1::text");
    first.extend_from_slice(&frame_sync());
    client.send(&first).await;
    assert_eq!(tags(&client.until_ready().await), "1Z");
    let count = 1200;
    let pair = bind_execute("big");
    for _ in 0..count {
        client.send(&pair).await;
    }
    let started = std::time::Instant::now();
    let binds = || {
        primary
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.tag == 'B')
            .count()
    };
    while binds() == 0 {
        assert!(
            started.elapsed() < REPLY_TIMEOUT,
            "nothing reached the primary before Sync"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.send(&frame_sync()).await;
    let replies = client.until_ready().await;
    let rows = replies.iter().filter(|m| m.tag == tag::DATA_ROW).count();
    assert_eq!(rows, count);
    assert!(replica.texts().is_empty(), "{:?}", replica.texts());
}

fn frame_sync() -> BytesMut {
    let mut out = BytesMut::new();
    frame::append(&mut out, tag::SYNC, b"");
    out
}

/// A client that sends Syncs and never reads its replies is not read either once its
/// pending replies pass the high-water mark: its writes block instead of Causeway's
/// buffer growing.
#[tokio::test]
async fn a_client_that_does_not_read_is_not_read() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "");
    let mut client = Client::connect(&ctx).await;
    let syncs: BytesMut = (0..100_000).flat_map(|_| frame_sync()).collect();
    let mut written = 0usize;
    let flood = async {
        for _ in 0..40 {
            client.io.write_all(&syncs).await.unwrap();
            written += syncs.len();
        }
    };
    let blocked = tokio::time::timeout(Duration::from_secs(2), flood)
        .await
        .is_err();
    assert!(blocked, "all {written} bytes of Syncs were taken");
    assert!(
        written < 8 << 20,
        "{written} bytes taken before the client was paused"
    );
}

/// `max_client_prepared_bytes` bounds the text a client keeps prepared (53400).
#[tokio::test]
async fn prepared_statement_text_is_bounded_in_bytes() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "max_client_prepared_bytes = 1500");
    let mut client = Client::connect(&ctx).await;
    let text = format!("SELECT 1 -- {}", "y".repeat(1000));
    let mut first = parse("a", &text);
    first.extend_from_slice(&frame_sync());
    client.send(&first).await;
    assert_eq!(tags(&client.until_ready().await), "1Z");
    let mut second = parse("b", &text);
    second.extend_from_slice(&frame_sync());
    client.send(&second).await;
    let refused = client.until_ready().await;
    assert_eq!(error_code(&refused).as_deref(), Some("53400"));
    assert_eq!(tags(&client.query("SELECT 2").await), "TDCZ");
}

/// A client silent inside a transaction past `idle_transaction_timeout` gets FATAL 25P03,
/// and its server connection is closed, not returned with the transaction open.
#[tokio::test]
async fn a_client_idle_in_a_transaction_is_ended_with_25p03() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(
        &primary,
        &[],
        "pool_size = 1\nidle_transaction_timeout = \"30s\"",
    );
    let mut client = Client::connect(&ctx).await;
    let begin = client.query("BEGIN").await;
    assert_eq!(begin.last().map(|m| m.body()), Some(&b"T"[..]));
    tokio::time::pause();
    let msg = client.recv_whenever().await.expect("an ErrorResponse");
    assert_eq!(ErrorFields::parse(msg.body()).code, "25P03");
    assert!(
        client.recv_whenever().await.is_none(),
        "then the connection closes"
    );
    tokio::time::resume();
    let mut next = Client::connect(&ctx).await;
    assert_eq!(tags(&next.query("SELECT 'next'").await), "TDCZ");
    let texts = primary.texts();
    let conn_of = |sql: &str| texts.iter().find(|(_, t)| t == sql).map(|(c, _)| *c);
    assert_ne!(conn_of("BEGIN"), conn_of("SELECT 'next'"), "{texts:?}");
}

/// SQL `PREPARE`/`DEALLOCATE` of a `_cw_` name is refused (42939) and never reaches the
/// server, where it could drop a statement Causeway prepared for another client.
#[tokio::test]
async fn causeways_statement_names_are_reserved() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "");
    let mut client = Client::connect(&ctx).await;
    for sql in [
        "DEALLOCATE _cw_0123",
        "PREPARE \"_CW_x\" AS SELECT 1",
        "deallocate _Cw_9",
    ] {
        let refused = client.query(sql).await;
        assert_eq!(error_code(&refused).as_deref(), Some("42939"), "{sql}");
    }
    client.query("PREPARE mine AS SELECT 1").await;
    let texts = primary.texts();
    assert!(texts.iter().any(|(_, t)| t == "PREPARE mine AS SELECT 1"));
    assert!(texts
        .iter()
        .all(|(_, t)| !t.to_ascii_lowercase().contains("_cw_")));
}

/// A client whose startup waits for a busy pool past `startup_timeout` is told the real
/// cause (53300, all server connections busy), not a startup protocol timeout.
#[tokio::test]
async fn a_startup_that_waits_for_a_busy_pool_says_so() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "pool_size = 1\nstartup_timeout = \"1s\"");
    let mut holder = Client::connect(&ctx).await;
    holder.query("BEGIN").await;
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let peer = "127.0.0.1:1".parse().expect("address");
    tokio::spawn(super::serve_connection(ctx.clone(), server, peer));
    let mut startup = BytesMut::new();
    let params = [
        ("user", "app"),
        ("database", "app"),
        ("application_name", "other"),
    ];
    postgres_protocol::message::frontend::startup_message(params, &mut startup).unwrap();
    client.write_all(&startup).await.unwrap();
    let mut buf = BytesMut::new();
    while client.read_buf(&mut buf).await.unwrap_or(0) > 0 {}
    let msg = try_split(&mut buf, 1 << 20)
        .unwrap()
        .expect("an ErrorResponse");
    assert_eq!(ErrorFields::parse(msg.body()).code, "53300");
}

/// Connections still in startup count against `max_client_connections`: past it, a new
/// connection is closed at once, so silent connections cannot take every descriptor.
#[tokio::test]
async fn silent_connections_in_startup_are_capped() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "max_client_connections = 2");
    let peer: std::net::SocketAddr = "127.0.0.1:1".parse().expect("address");
    let mut silent = Vec::new();
    for _ in 0..2 {
        let (client, server) = tokio::io::duplex(1024);
        tokio::spawn(super::serve_connection(ctx.clone(), server, peer));
        silent.push(client);
    }
    tokio::task::yield_now().await;
    let (mut third, server) = tokio::io::duplex(1024);
    tokio::spawn(super::serve_connection(ctx.clone(), server, peer));
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(REPLY_TIMEOUT, third.read(&mut byte)).await;
    assert_eq!(read.expect("closed at once").unwrap_or(0), 0);
    drop(silent);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut client = Client::connect(&ctx).await;
    assert_eq!(tags(&client.query("SELECT 1").await), "TDCZ");
}

/// SQL `DEALLOCATE` of a statement the client prepared through the protocol (psycopg with
/// libpq before 17) is answered by Causeway, which renamed it on the server; the statement
/// is gone for the client, as it would be in PostgreSQL.
#[tokio::test]
async fn sql_deallocate_of_a_protocol_statement_is_answered() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "");
    let mut client = Client::connect(&ctx).await;
    let mut prepare = parse("_pg3_0", "SELECT 1");
    prepare.extend_from_slice(&frame_sync());
    client.send(&prepare).await;
    assert_eq!(tags(&client.until_ready().await), "1Z");
    for sql in ["DEALLOCATE _pg3_0", "deallocate _pg3_0;"] {
        let mut again = parse("_pg3_0", "SELECT 1");
        again.extend_from_slice(&frame_sync());
        if sql.ends_with(';') {
            client.send(&again).await;
            assert_eq!(tags(&client.until_ready().await), "1Z");
        }
        let replies = client.query(sql).await;
        assert_eq!(tags(&replies), "CZ", "{sql}");
        assert!(replies[0].body().starts_with(b"DEALLOCATE"));
    }
    client.send(&bind_execute_sync("_pg3_0")).await;
    let gone = client.until_ready().await;
    assert_eq!(error_code(&gone).as_deref(), Some("26000"));
    assert!(primary
        .texts()
        .iter()
        .all(|(_, t)| !t.to_ascii_lowercase().starts_with("deallocate")));
}

/// A read a standby refuses (25006: it writes after all; 0A000 during recovery: an unlogged
/// table) before any result runs again on the primary, not on another replica.
#[tokio::test]
async fn a_read_a_standby_refuses_runs_on_the_primary() {
    let refusing = || script(|sql| (sql == "SELECT bump()").then_some(Answer::Error("25006")));
    let replica1 = FakeServer::start(refusing()).await;
    let replica2 = FakeServer::start(refusing()).await;
    let primary = FakeServer::start(script(|sql| {
        (sql == "SELECT bump()").then(|| Answer::Rows(vec!["7".into()]))
    }))
    .await;
    let ctx = context(&primary, &[&replica1, &replica2], "");
    all_in_pool(&ctx);
    let mut client = Client::connect(&ctx).await;
    assert_eq!(tags(&client.query("SELECT bump()").await), "TDCZ");
    let tried = |server: &FakeServer| {
        server
            .texts()
            .iter()
            .filter(|(_, t)| t == "SELECT bump()")
            .count()
    };
    assert_eq!(tried(&replica1) + tried(&replica2), 1, "one replica tried");
    assert_eq!(tried(&primary), 1);
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains("causeway_consistency_fallbacks_total{reason=\"standby_refused\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unnamed_statement_parsed_again_keeps_its_classification() {
    let replica = FakeServer::start(plain()).await;
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[&replica], "");
    all_in_pool(&ctx);
    let mut client = Client::connect(&ctx).await;
    let lookups = |ctx: &Context| ctx.classifier.cache_hits() + ctx.classifier.cache_misses();
    let mut run = async |sql: &str| {
        let mut request = parse("", sql);
        request.extend_from_slice(&bind_execute_sync(""));
        client.send(&request).await;
        let replies = client.until_ready().await;
        assert_eq!(error_code(&replies), None, "{}", tags(&replies));
    };
    // The first request defines the statement after its plan, the second fills the
    // statement's memo; from then on no cache lookup.
    run("SELECT 1").await;
    run("SELECT 1").await;
    let before = lookups(&ctx);
    run("SELECT 1").await;
    run("SELECT 1").await;
    assert_eq!(
        lookups(&ctx),
        before,
        "parsed again, it is classified through the statement's memo"
    );
    run("SELECT 2").await;
    assert_eq!(lookups(&ctx) - before, 1, "a new text is classified");
    run("UPDATE t SET v = 1").await;
    let ran = |server: &FakeServer, sql: &str| {
        server
            .texts()
            .iter()
            .filter(|(_, t)| t.ends_with(sql))
            .count()
    };
    assert_eq!(ran(&replica, "SELECT 1"), 4);
    assert_eq!(ran(&replica, "SELECT 2"), 1);
    assert_eq!(
        ran(&primary, "UPDATE t SET v = 1"),
        1,
        "a write parsed in place of a read"
    );
    assert_eq!(ran(&replica, "UPDATE t SET v = 1"), 0);
}
