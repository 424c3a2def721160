//! Query cancellation under abuse and across instances: a client repeating CancelRequest
//! makes Causeway open one cancel connection to the server, not one per request; and a
//! CancelRequest that reaches another (peered) Causeway instance is forwarded to the one
//! running the query.

use std::time::{Duration, Instant};

use integration_tests::{Cluster, Relay};
use tokio::net::TcpListener;
use tokio_postgres::NoTls;

use crate::support::{sqlstate, wait_active, Proxy};

#[tokio::test]
async fn repeated_cancels_open_one_server_connection() {
    let cluster = Cluster::shared();
    // Causeway reaches the primary through a relay that counts the connections it sees.
    let relay = Relay::start(cluster.primary.port).await.unwrap();
    let proxy = Proxy::start(&format!("[primary]\nport = {}\n", relay.port)).await;
    let client = proxy.client().await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(31.25)").await });
    let direct = cluster.primary.client().await.unwrap();
    wait_active(
        &direct,
        "SELECT pg_sleep(31.25)%",
        "the query to cancel runs",
    )
    .await;
    let before = relay.accepted();
    let floods = (0..200).map(|_| {
        let token = token.clone();
        tokio::spawn(async move { token.cancel_query(NoTls).await })
    });
    for flood in floods {
        flood.await.unwrap().unwrap();
    }
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // Time for any late cancel connection to be opened (nothing to poll for).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let opened = relay.accepted() - before;
    assert!(
        opened <= 2,
        "200 CancelRequests opened {opened} connections to the primary"
    );
}

#[tokio::test]
async fn a_cancel_sent_to_a_peer_reaches_the_query() {
    let cluster = Cluster::shared();
    let a_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a_port, b_port) = (
        a_listener.local_addr().unwrap().port(),
        b_listener.local_addr().unwrap().port(),
    );
    // Both instances share one peer list (each skips its own entry).
    let peers = format!(
        "[[peers]]\nid = 1\nhost = \"127.0.0.1\"\nport = {a_port}\n\n\
         [[peers]]\nid = 2\nhost = \"127.0.0.1\"\nport = {b_port}\n"
    );
    let a = Proxy::launch_on(
        cluster,
        a_listener,
        &format!("[proxy]\npeer_id = 1\n{peers}"),
        false,
    )
    .await;
    let _b = Proxy::launch_on(
        cluster,
        b_listener,
        &format!("[proxy]\npeer_id = 2\n{peers}"),
        false,
    )
    .await;
    let client = a.client().await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(32.5)").await });
    let direct = cluster.primary.client().await.unwrap();
    wait_active(
        &direct,
        "SELECT pg_sleep(32.5)%",
        "the query to cancel runs",
    )
    .await;
    // The load balancer sends the CancelRequest to the other instance.
    let to_b = tokio::net::TcpStream::connect(("127.0.0.1", b_port))
        .await
        .unwrap();
    token.cancel_query_raw(to_b, NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(15), sleeper)
        .await
        .expect("the query was cancelled through the peer")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
}
