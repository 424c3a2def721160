//! A scripted PostgreSQL server for the session's unit tests: it accepts Causeway's server
//! connections on a loopback port (trust login), answers the protocol generically and lets
//! each test script what a query's answer is, including errors and lost connections.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::protocol::{frame, tag, try_split};

/// What the server answers to a statement.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// One text column, these rows.
    Rows(Vec<String>),
    /// A CommandComplete with this tag and nothing else.
    Command(&'static str),
    /// An ERROR with this SQLSTATE.
    Error(&'static str),
    /// A row description and this many rows, then the connection closes.
    RowsThenClose(usize),
    /// One row of several text columns (a probe's answer).
    Row(Vec<&'static str>),
}

/// What the script gets to decide: `None` for the default answer.
pub(crate) type Script = Arc<dyn Fn(&str) -> Option<Answer> + Send + Sync>;

/// One message the server received: the server connection's number, its type and its
/// statement text or name, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub conn: usize,
    pub tag: char,
    pub text: String,
}

/// A running fake server.
pub(crate) struct FakeServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl FakeServer {
    pub(crate) async fn start(script: Script) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut n = 0;
            while let Ok((stream, _)) = listener.accept().await {
                n += 1;
                tokio::spawn(serve(stream, n, script.clone(), log.clone()));
            }
        });
        FakeServer {
            addr,
            seen,
            _task: tokio_util::task::AbortOnDropHandle::new(task),
        }
    }

    /// The messages received so far that carried text, as (connection, text).
    pub(crate) fn texts(&self) -> Vec<(usize, String)> {
        self.seen
            .lock()
            .expect("log")
            .iter()
            .filter(|s| !s.text.is_empty())
            .map(|s| (s.conn, s.text.clone()))
            .collect()
    }
}

/// Per-connection protocol state.
#[derive(Default)]
struct Conn {
    statements: std::collections::HashMap<String, String>,
    portals: std::collections::HashMap<String, String>,
    in_tx: bool,
    skipping: bool,
}

async fn serve(mut stream: TcpStream, n: usize, script: Script, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = BytesMut::new();
    // The startup packet: length, then the body. An SSLRequest first gets `N`, as from a
    // server without TLS.
    loop {
        while buf.len() < 4 || buf.len() < be32(&buf) {
            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        }
        let len = be32(&buf);
        let packet = buf.split_to(len);
        if packet[..] != [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f] {
            break;
        }
        if stream.write_all(b"N").await.is_err() {
            return;
        }
    }
    let mut out = BytesMut::new();
    frame::append(&mut out, tag::AUTHENTICATION, &0i32.to_be_bytes());
    for (name, value) in [("server_version", "15.0"), ("client_encoding", "UTF8")] {
        frame::append(
            &mut out,
            tag::PARAMETER_STATUS,
            format!("{name}\0{value}\0").as_bytes(),
        );
    }
    let mut key = (n as i32).to_be_bytes().to_vec();
    key.extend_from_slice(&7i32.to_be_bytes());
    frame::append(&mut out, tag::BACKEND_KEY_DATA, &key);
    let mut conn = Conn::default();
    ready(&mut out, &conn);
    loop {
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        let msg = loop {
            match try_split(&mut buf, 1 << 30) {
                Ok(Some(msg)) => break msg,
                Ok(None) => {}
                Err(_) => return,
            }
            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        };
        let body = msg.body();
        let text = match msg.tag {
            tag::QUERY | tag::PARSE | tag::BIND | tag::EXECUTE => describe(msg.tag, body),
            _ => String::new(),
        };
        seen.lock().expect("log").push(Seen {
            conn: n,
            tag: msg.tag as char,
            text: text.clone(),
        });
        if conn.skipping && msg.tag != tag::SYNC {
            continue;
        }
        let close = match msg.tag {
            tag::QUERY => {
                let close = answer(&mut out, &script, &mut conn, &text, true);
                if !close {
                    ready(&mut out, &conn);
                }
                close
            }
            tag::PARSE => {
                let (name, query) = two_strings(body);
                conn.statements.insert(name, query);
                frame::append(&mut out, tag::PARSE_COMPLETE, b"");
                false
            }
            tag::BIND => {
                let (portal, statement) = two_strings(body);
                match conn.statements.get(&statement).cloned() {
                    Some(query) => {
                        conn.portals.insert(portal, query);
                        frame::append(&mut out, tag::BIND_COMPLETE, b"");
                    }
                    None => {
                        error(&mut out, "ERROR", "26000");
                        conn.skipping = true;
                    }
                }
                false
            }
            tag::DESCRIBE => {
                frame::append(&mut out, tag::NO_DATA, b"");
                false
            }
            tag::EXECUTE => {
                let (portal, _) = two_strings(body);
                let query = conn.portals.get(&portal).cloned().unwrap_or_default();
                answer(&mut out, &script, &mut conn, &query, false)
            }
            tag::CLOSE => {
                frame::append(&mut out, tag::CLOSE_COMPLETE, b"");
                false
            }
            tag::SYNC => {
                conn.skipping = false;
                ready(&mut out, &conn);
                false
            }
            tag::TERMINATE => true,
            _ => false,
        };
        if close {
            let _ = stream.write_all(&out).await;
            return;
        }
    }
}

/// Answer a statement; returns whether the connection closes.
fn answer(out: &mut BytesMut, script: &Script, conn: &mut Conn, text: &str, simple: bool) -> bool {
    let upper = text.trim_start().to_ascii_uppercase();
    let answer = script(text).unwrap_or_else(|| default_answer(&upper));
    if upper.starts_with("BEGIN") {
        conn.in_tx = true;
    } else if upper.starts_with("COMMIT") || upper.starts_with("ROLLBACK") {
        conn.in_tx = false;
    }
    match answer {
        Answer::Rows(rows) => {
            if simple {
                row_description(out);
            }
            for row in &rows {
                data_row(out, row);
            }
            let done = format!("SELECT {}\0", rows.len());
            frame::append(out, tag::COMMAND_COMPLETE, done.as_bytes());
            false
        }
        Answer::Command(done) => {
            frame::append(out, tag::COMMAND_COMPLETE, format!("{done}\0").as_bytes());
            false
        }
        Answer::Error(code) => {
            error(out, "ERROR", code);
            conn.skipping = !simple;
            false
        }
        Answer::Row(columns) => {
            let mut row = BytesMut::new();
            row.put_i16(columns.len() as i16);
            for value in &columns {
                row.put_i32(value.len() as i32);
                row.put_slice(value.as_bytes());
            }
            frame::append(out, tag::DATA_ROW, &row);
            frame::append(out, tag::COMMAND_COMPLETE, b"SELECT 1\0");
            false
        }
        Answer::RowsThenClose(n) => {
            if simple {
                row_description(out);
            }
            for i in 0..n {
                data_row(out, &format!("row {i}"));
            }
            true
        }
    }
}

/// What Causeway's own statements get: probes, state resets, transaction control.
fn default_answer(upper: &str) -> Answer {
    if upper.contains("PG_CURRENT_WAL_INSERT_LSN") {
        return Answer::Row(vec!["0/3000060", "00000001", "16MB", "8192"]);
    }
    if upper.contains("PG_LAST_WAL_REPLAY_LSN") {
        return Answer::Rows(vec!["0/3000060".into()]);
    }
    for word in [
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SET",
        "DISCARD ALL",
        "INSERT",
    ] {
        if upper.starts_with(word) {
            return Answer::Command(word);
        }
    }
    Answer::Rows(vec!["1".into()])
}

fn row_description(out: &mut BytesMut) {
    let mut desc = 1i16.to_be_bytes().to_vec();
    desc.extend_from_slice(b"c\0");
    desc.extend_from_slice(&[0; 6]);
    desc.extend_from_slice(&25i32.to_be_bytes());
    desc.extend_from_slice(&(-1i16).to_be_bytes());
    desc.extend_from_slice(&(-1i32).to_be_bytes());
    desc.extend_from_slice(&0i16.to_be_bytes());
    frame::append(out, tag::ROW_DESCRIPTION, &desc);
}

fn data_row(out: &mut BytesMut, value: &str) {
    let mut row = BytesMut::new();
    row.put_i16(1);
    row.put_i32(value.len() as i32);
    row.put_slice(value.as_bytes());
    frame::append(out, tag::DATA_ROW, &row);
}

fn error(out: &mut BytesMut, severity: &str, code: &str) {
    let body = format!("S{severity}\0V{severity}\0C{code}\0Mscripted error\0\0");
    frame::append(out, tag::ERROR_RESPONSE, body.as_bytes());
}

fn ready(out: &mut BytesMut, conn: &Conn) {
    let status = if conn.in_tx { b"T" } else { b"I" };
    frame::append(out, tag::READY_FOR_QUERY, status);
}

fn describe(t: u8, body: &[u8]) -> String {
    match t {
        tag::QUERY => cstring(body).0,
        tag::PARSE => {
            let (name, query) = two_strings(body);
            format!("{name}: {query}")
        }
        tag::BIND => two_strings(body).1,
        _ => cstring(body).0,
    }
}

fn two_strings(body: &[u8]) -> (String, String) {
    let (first, rest) = cstring(body);
    (first, cstring(rest).0)
}

fn cstring(body: &[u8]) -> (String, &[u8]) {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    let rest = body.get(end + 1..).unwrap_or_default();
    (String::from_utf8_lossy(&body[..end]).into_owned(), rest)
}

fn be32(buf: &[u8]) -> usize {
    buf.get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(usize::MAX, |b| u32::from_be_bytes(b) as usize)
}
