//! Memory per client is bounded in bytes whatever the client sends (DESIGN.md §7), measured
//! as the peak resident set (VmHWM in `/proc/<pid>/status`) of Causeway running as its own
//! process (the `causeway` binary, built by `cargo build` first): a million-message request
//! without Sync streams to the primary; a client that sends Syncs and never reads stops
//! being read; named statements past `max_client_prepared_bytes` are refused with 53400.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use integration_tests::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::merge_toml;

/// Growth of the peak resident set allowed over the idle process's.
const PEAK_GROWTH: u64 = 64 << 20;

/// A `causeway` process with its own config; killed when dropped.
struct Process {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Process {
    async fn start(extra: &str) -> Process {
        let binary = causeway_binary();
        let dir = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        let cluster = Cluster::shared();
        let toml = merge_toml(
            &cluster.causeway_config_toml(
                &format!("127.0.0.1:{port}"),
                &format!("127.0.0.1:{admin}"),
                "",
            ),
            &format!("[auth]\nmethod = \"trust\"\n{extra}"),
        );
        let config = dir.path().join("causeway.toml");
        std::fs::write(&config, toml).unwrap();
        let log = std::fs::File::create(dir.path().join("causeway.log")).unwrap();
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the causeway binary");
        let process = Process {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "causeway did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process
    }

    /// A `/proc/<pid>/status` field in bytes (`VmHWM`, `VmRSS`).
    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in /proc status"));
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    /// Peak resident set after `work`, compared with the peak before it.
    async fn peak_growth<F: std::future::Future<Output = ()>>(&self, work: F) -> u64 {
        let before = self.status_bytes("VmHWM");
        work.await;
        let after = self.status_bytes("VmHWM");
        eprintln!("VmHWM {} KiB -> {} KiB", before >> 10, after >> 10);
        after.saturating_sub(before)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds (or finds up to date) the `causeway` binary beside this test binary.
fn causeway_binary() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "causeway", "--bin", "causeway"])
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build of the causeway binary failed"
        );
    });
    // target/debug/deps/e2e-* → target/debug/causeway
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("causeway");
    assert!(binary.exists(), "{} not found", binary.display());
    binary
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// === a raw protocol client ===

fn message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(i32::try_from(body.len() + 4).unwrap());
    out.put_slice(body);
}

/// Connects and logs in (trust) as app; returns the stream after ReadyForQuery.
async fn login(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut body = BytesMut::new();
    body.put_i32(196_608);
    for part in ["user", "app", "database", "app", ""] {
        body.put_slice(part.as_bytes());
        body.put_u8(0);
    }
    let mut packet = BytesMut::new();
    packet.put_i32(i32::try_from(body.len() + 4).unwrap());
    packet.put_slice(&body);
    stream.write_all(&packet).await.unwrap();
    let mut reader = Reader::default();
    while reader.next(&mut stream).await.0 != b'Z' {}
    stream
}

#[derive(Default)]
struct Reader {
    buf: BytesMut,
}

impl Reader {
    /// The next message's tag and body.
    async fn next(&mut self, stream: &mut (impl AsyncReadExt + Unpin)) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 5 {
                let len = usize::try_from(i32::from_be_bytes(self.buf[1..5].try_into().unwrap()))
                    .unwrap();
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    let body = self.buf.split_to(len - 4).to_vec();
                    return (tag, body);
                }
            }
            let n = stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "causeway closed the connection");
        }
    }
}

fn sqlstate_of(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .map(|code| String::from_utf8_lossy(code).into_owned())
        .unwrap_or_default()
}

// === the tests ===

#[tokio::test]
async fn a_million_message_request_without_sync_streams_in_bounded_memory() {
    let proxy = Process::start("").await;
    let stream = login(proxy.port).await;
    const PAIRS: i64 = 500_000;
    let growth = proxy
        .peak_growth(async {
            let (mut rd, mut wr) = stream.into_split();
            let reader = tokio::spawn(async move {
                let mut reader = Reader::default();
                let (mut rows, mut sum) = (0i64, 0i64);
                loop {
                    let (tag, body) = reader.next(&mut rd).await;
                    match tag {
                        b'D' => {
                            rows += 1;
                            let text = std::str::from_utf8(&body[6..]).unwrap();
                            sum += text.parse::<i64>().unwrap();
                        }
                        b'E' => panic!("error {}", sqlstate_of(&body)),
                        b'Z' => return (rows, sum),
                        _ => {}
                    }
                }
            });
            let mut out = BytesMut::new();
            message(&mut out, b'P', b"\0SELECT $1::int8\0\0\0");
            for i in 0..PAIRS {
                let value = i.to_string();
                let mut bind = BytesMut::new();
                bind.put_slice(b"\0\0");
                bind.put_i16(0);
                bind.put_i16(1);
                bind.put_i32(i32::try_from(value.len()).unwrap());
                bind.put_slice(value.as_bytes());
                bind.put_i16(0);
                message(&mut out, b'B', &bind);
                message(&mut out, b'E', b"\0\0\0\0\0");
                if out.len() > 1 << 16 {
                    wr.write_all(&out).await.unwrap();
                    out.clear();
                }
            }
            message(&mut out, b'S', b"");
            wr.write_all(&out).await.unwrap();
            let (rows, sum) = tokio::time::timeout(Duration::from_secs(60), reader)
                .await
                .expect("the request was answered")
                .unwrap();
            assert_eq!(rows, PAIRS);
            assert_eq!(sum, PAIRS * (PAIRS - 1) / 2);
        })
        .await;
    assert!(
        growth < PEAK_GROWTH,
        "peak resident set grew by {} MiB",
        growth >> 20
    );
}

#[tokio::test]
async fn a_client_that_sends_syncs_and_never_reads_is_not_buffered() {
    let proxy = Process::start("").await;
    let mut stream = login(proxy.port).await;
    let mut chunk = BytesMut::new();
    for _ in 0..100_000 {
        message(&mut chunk, b'S', b"");
    }
    let mut sent = 0usize;
    let growth = proxy
        .peak_growth(async {
            // Up to 200 chunks of 100,000 Syncs (100 MB, 120 MB of replies); writing stops
            // when Causeway stops reading, which it must do long before.
            let deadline = Instant::now() + Duration::from_secs(8);
            while sent < 200 && Instant::now() < deadline {
                let write = stream.write_all(&chunk);
                match tokio::time::timeout(Duration::from_secs(2), write).await {
                    Ok(result) => {
                        result.unwrap();
                        sent += 1;
                    }
                    Err(_) => break,
                }
            }
        })
        .await;
    eprintln!("{sent} chunks of 100,000 Syncs written before Causeway stopped reading");
    assert!(
        sent < 200,
        "Causeway read 20,000,000 Syncs without its replies being read"
    );
    assert!(
        growth < PEAK_GROWTH,
        "peak resident set grew by {} MiB after {sent}00,000 Syncs",
        growth >> 20
    );
}

#[tokio::test]
async fn named_statements_past_the_byte_limit_get_53400() {
    let proxy = Process::start("[proxy]\nmax_client_prepared_bytes = 16777216\n").await;
    let mut stream = login(proxy.port).await;
    let text = format!("SELECT 1 /* {} */", "x".repeat(1 << 20));
    let mut reader = Reader::default();
    let (mut ok, mut refused) = (0, 0);
    let growth = proxy
        .peak_growth(async {
            for i in 0..100 {
                let mut out = BytesMut::new();
                message(&mut out, b'P', format!("big{i}\0{text}\0\0\0").as_bytes());
                message(&mut out, b'S', b"");
                stream.write_all(&out).await.unwrap();
                loop {
                    let (tag, body) = reader.next(&mut stream).await;
                    match tag {
                        b'1' => ok += 1,
                        b'E' => {
                            assert_eq!(sqlstate_of(&body), "53400");
                            refused += 1;
                        }
                        b'Z' => break,
                        _ => {}
                    }
                }
            }
        })
        .await;
    assert_eq!(ok + refused, 100);
    assert!(
        (14..=16).contains(&ok),
        "{ok} statements of 1 MiB were kept"
    );
    assert!(
        growth < PEAK_GROWTH,
        "peak resident set grew by {} MiB",
        growth >> 20
    );
}
