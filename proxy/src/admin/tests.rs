//! Admin server tests: each route against a fake status source, then real HTTP over loopback,
#![allow(clippy::unwrap_used)]
//! including clients that are slow, oversized or not speaking HTTP at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;

/// A source whose readiness a test can flip.
struct Fake {
    ready: AtomicBool,
}

impl StatusSource for Fake {
    fn status(&self) -> serde_json::Value {
        serde_json::json!({ "nodes": [{ "name": "primary" }] })
    }

    fn ready(&self) -> Result<(), String> {
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("primary unreachable".to_owned())
        }
    }

    fn collect(&self, metrics: &Metrics) {
        metrics.set_server_connections("primary", 3, 0);
    }
}

fn state(ready: bool) -> (Arc<State>, Arc<Fake>) {
    let fake = Arc::new(Fake {
        ready: AtomicBool::new(ready),
    });
    let state = Arc::new(State {
        metrics: Metrics::new(),
        source: fake.clone(),
        token: None,
    });
    (state, fake)
}

async fn call(state: &State, method: &str, path: &str) -> (u16, String, String) {
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .unwrap();
    let response = routes::handle(state, request).await;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn routes_answer_with_the_right_status_type_and_body() {
    let (state, fake) = state(true);
    let (code, ctype, body) = call(&state, "GET", "/metrics").await;
    assert_eq!((code, ctype.as_str()), (200, "text/plain; version=0.0.4"));
    assert!(body.contains("causeway_server_connections{node=\"primary\",state=\"idle\"} 3"));
    assert_eq!(call(&state, "GET", "/healthz").await.2, "ok\n");
    assert_eq!(call(&state, "GET", "/readyz").await.0, 200);
    fake.ready.store(false, Ordering::Relaxed);
    let (code, _, body) = call(&state, "GET", "/readyz").await;
    assert_eq!(code, 503);
    assert!(body.contains("primary unreachable"), "{body}");
    let (code, ctype, body) = call(&state, "GET", "/status?verbose=1").await;
    assert_eq!((code, ctype.as_str()), (200, "application/json"));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["nodes"][0]["name"], "primary");
}

#[tokio::test]
async fn unknown_paths_and_other_methods_are_refused() {
    let (state, _) = state(true);
    for path in ["/", "/metricsx", "/metrics/", "/../etc/passwd", "/%00"] {
        assert_eq!(call(&state, "GET", path).await.0, 404, "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "HEAD"] {
        let request = hyper::Request::builder()
            .method(method)
            .uri("/metrics")
            .body(())
            .unwrap();
        let response = routes::handle(&state, request).await;
        assert_eq!(response.status().as_u16(), 405, "{method}");
        assert_eq!(response.headers()[hyper::header::ALLOW], "GET");
    }
}

async fn call_with(state: &State, path: &str, authorization: Option<&str>) -> u16 {
    let mut request = hyper::Request::builder().method("GET").uri(path);
    if let Some(value) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, value);
    }
    let response = routes::handle(state, request.body(()).unwrap()).await;
    response.status().as_u16()
}

#[tokio::test]
async fn a_token_guards_everything_but_health_and_readiness() {
    let fake = Arc::new(Fake {
        ready: AtomicBool::new(true),
    });
    let state = State {
        metrics: Metrics::new(),
        source: fake,
        token: AdminToken::from_text("s3cret-token\n"),
    };
    for path in ["/metrics", "/status"] {
        assert_eq!(call_with(&state, path, None).await, 401, "{path}");
        for wrong in [
            "Bearer wrong",
            "Bearer s3cret-toke",
            "Basic s3cret-token",
            "s3cret-token",
            "Bearer ",
        ] {
            assert_eq!(
                call_with(&state, path, Some(wrong)).await,
                401,
                "{path} {wrong}"
            );
        }
        assert_eq!(
            call_with(&state, path, Some("Bearer s3cret-token")).await,
            200,
            "{path}"
        );
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(call_with(&state, path, None).await, 200, "{path}");
    }
    let request = hyper::Request::builder().uri("/metrics").body(()).unwrap();
    let response = routes::handle(&state, request).await;
    assert_eq!(
        response.headers()[hyper::header::WWW_AUTHENTICATE],
        "Bearer"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        !String::from_utf8_lossy(&body).contains("s3cret"),
        "the token is never echoed"
    );
}

#[test]
fn a_token_file_of_whitespace_is_refused_and_debug_hides_the_token() {
    assert!(AdminToken::from_text(" \n\t").is_none());
    let token = AdminToken::from_text("abc").unwrap();
    assert!(!format!("{token:?}").contains("abc"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "\n").unwrap();
    assert!(AdminToken::load(&path).unwrap_err().contains("empty"));
    assert!(AdminToken::load(&dir.path().join("missing")).is_err());
}

#[tokio::test]
async fn reload_takes_post_only_and_reports_the_sources_answer() {
    let (state, _) = state(true);
    let (code, _, body) = call(&state, "POST", "/reload").await;
    assert_eq!(
        (code, body.as_str()),
        (400, "reload is not available here\n")
    );
    let request = hyper::Request::builder()
        .method("GET")
        .uri("/reload")
        .body(())
        .unwrap();
    let response = routes::handle(&state, request).await;
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()[hyper::header::ALLOW], "POST");
}

/// An admin server on a loopback port with short limits; stops when the sender is dropped.
async fn start(limits: Limits) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (state, _) = state(true);
    tokio::spawn(serve_with(
        listener,
        state,
        async move {
            let _ = stopped.await;
        },
        limits,
    ));
    (addr, stop)
}

const SHORT: Limits = Limits {
    header_read_timeout: Duration::from_millis(200),
    connection_deadline: Duration::from_secs(2),
    max_connections: 4,
    max_buf_bytes: 8192,
    shutdown_grace: Duration::from_millis(200),
};

/// Send `request` bytes and read the reply until the server closes (or 5 s pass).
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .expect("server closed the connection")
        .ok();
    String::from_utf8_lossy(&reply).into_owned()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn serves_http_and_closes_after_each_reply() {
    let (addr, _stop) = start(SHORT).await;
    let reply = exchange(addr, &get("/healthz")).await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nok\n"), "{reply}");
    let reply = exchange(addr, &get("/nope")).await;
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
}

#[tokio::test]
async fn bad_clients_are_closed_and_the_server_keeps_working() {
    let (addr, _stop) = start(SHORT).await;
    // Slow: half a request head, then silence past the header timeout.
    let reply = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost:").await;
    assert_eq!(reply, "", "closed without a reply");
    // Not HTTP at all.
    let reply = exchange(addr, b"\x00\x01\x02 garbage\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    // A request head larger than the read buffer.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let reply = exchange(addr, huge.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    // A body on a GET is ignored.
    let reply = exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    let reply = exchange(addr, &get("/healthz")).await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_without_a_reply() {
    let (addr, _stop) = start(SHORT).await;
    let mut idle = Vec::new();
    for _ in 0..SHORT.max_connections {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(exchange(addr, &get("/healthz")).await, "");
    drop(idle);
    // The header timeout frees the permits of the silent connections too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = exchange(addr, &get("/healthz")).await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (state, _) = state(true);
    let server = tokio::spawn(serve(
        listener,
        state.metrics.clone(),
        state.source.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    // An idle connection does not hold the shutdown up.
    let _idle = TcpStream::connect(addr).await.unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("admin server stopped in time")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}
