//! Shared sessions across Causeway instances through a real Redis (DESIGN.md §3): a write
//! through one instance is seen by a read with the same session key through another, for
//! every way of carrying the key, with one server and with a Redis Cluster; monotonic reads
//! hold across instances; keys expire after `session_ttl`.
//!
//! To make stale reads observable without evicting replicas, the replicas replay with a
//! long `recovery_min_apply_delay` (a paused replica would be evicted, and then no read
//! could be stale): a read routed without the floor lands on a replica that has not seen
//! the write, and the tests show that such reads happen.

use std::time::Duration;

use integration_tests::redis::command;
use integration_tests::Cluster;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::routing::{node_of, wait_in_pool};
use crate::support::{counter, eventually, prepared_cluster, wait_store_up, Proxy};

/// Config for an instance sharing floors through Redis at `address` (a `url = ...` or
/// `cluster_nodes = [...]` line). Thresholds are loose so the delayed replicas stay in.
fn shared_config(address: &str) -> String {
    format!(
        "[session_store]\nkind = \"redis\"\n{address}\nsession_ttl = \"200s\"\ntimeout = \"50ms\"\n\n\
         [lag]\nmax_seconds = \"120s\"\nmax_bytes = 1073741824\n\n\
         [consistency]\nmax_wait = \"0ms\"\n"
    )
}

fn url_line(url: &str) -> String {
    format!("url = \"{url}\"")
}

/// A cluster whose replicas apply WAL `delay` late, and a table `name` on all nodes.
async fn delayed_cluster(delay: Duration, table: &str) -> Cluster {
    let (cluster, _) = prepared_cluster(
        true,
        &format!("CREATE TABLE {table} (id int primary key); GRANT ALL ON {table} TO PUBLIC"),
        None,
    )
    .await;
    for replica in ["replica1", "replica2"] {
        cluster.node(replica).set_apply_delay(delay).await.unwrap();
    }
    cluster
}

/// The port a statement ran on and whether it saw row `id`, via the simple protocol.
async fn simple_check(client: &Client, prefix: &str, table: &str, id: i32) -> (i32, bool) {
    let rows = client
        .simple_query(&format!(
            "{prefix}SELECT inet_server_port(), count(*) FROM {table} WHERE id = {id}"
        ))
        .await
        .unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((
                r.get(0).unwrap().parse::<i32>().unwrap(),
                r.get(1).unwrap() == "1",
            )),
            _ => None,
        })
        .unwrap();
    row
}

/// The same through the extended protocol (a statement prepared on the fly).
async fn extended_check(client: &Client, prefix: &str, table: &str, id: i32) -> (i32, bool) {
    let row = client
        .query_one(
            &format!("{prefix}SELECT inet_server_port(), count(*)::int FROM {table} WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get::<_, i32>(1) == 1)
}

/// Reads that a replica served without having the row: proof that routing, not luck,
/// kept the keyed reads fresh.
#[derive(Debug, Default)]
struct Stale {
    reads: usize,
    stale: usize,
}

impl Stale {
    /// Records a control read; returns whether the primary served it. A store call over its
    /// time limit on a loaded machine sends a read to the primary, which raises the control
    /// session's floor (the connection's own, and the stored one of its key) past the
    /// delayed replicas for good: the caller then takes a fresh connection and key, or
    /// every later control read would be fresh too.
    fn record(&mut self, cluster: &Cluster, (port, seen): (i32, bool)) -> bool {
        self.reads += 1;
        if !seen {
            assert_ne!(
                node_of(cluster, port),
                "primary",
                "the primary missed a row"
            );
            self.stale += 1;
        }
        node_of(cluster, port) == "primary"
    }
}

#[tokio::test]
async fn a_write_through_one_instance_is_read_through_another() {
    let cluster = delayed_cluster(Duration::from_secs(60), "shared_ryw").await;
    let redis = cluster.redis.as_ref().unwrap();
    let config = shared_config(&url_line(&redis.url()));
    let a = Proxy::start_with(&cluster, &config).await;
    let b = Proxy::start_with(&cluster, &config).await;
    wait_in_pool(&b, &["replica1", "replica2"]).await;
    let writer = a.client().await;
    let keyed = b.client().await;
    let mut other_key = b.client().await;
    let mut no_key = b.client().await;
    let (mut other, mut none) = (Stale::default(), Stale::default());
    let mut other_generation = 0;
    let key = "/* causeway: session=user-42 */ ";
    for id in 0..1000i32 {
        let insert = format!("{key}INSERT INTO shared_ryw VALUES ({id})");
        let simple = id % 2 == 0;
        if simple {
            writer.simple_query(&insert).await.unwrap();
        } else {
            let insert = format!("{key}INSERT INTO shared_ryw VALUES ($1)");
            writer.execute(&insert, &[&id]).await.unwrap();
        }
        let check = |c, prefix| async move {
            if simple {
                simple_check(c, prefix, "shared_ryw", id).await
            } else {
                extended_check(c, prefix, "shared_ryw", id).await
            }
        };
        let (port, seen) = check(&keyed, key).await;
        assert!(
            seen,
            "read {id} with the writer's session key missed the write (on {}, {})",
            node_of(&cluster, port),
            if simple { "simple" } else { "extended" }
        );
        let other_hint = format!("/* causeway: session=user-7-{other_generation} */ ");
        let other_read = check(&other_key, &other_hint).await;
        let none_read = check(&no_key, "").await;
        if other.record(&cluster, other_read) {
            other_key = b.client().await;
            other_generation += 1;
        }
        if none.record(&cluster, none_read) {
            no_key = b.client().await;
        }
    }
    println!(
        "cross-instance RYW: 1000/1000 keyed reads fresh; stale: other key {}/{}, no key {}/{}",
        other.stale, other.reads, none.stale, none.reads
    );
    assert!(other.stale > 0, "reads with another key were never stale");
    assert!(none.stale > 0, "reads without a key were never stale");
    for proxy in [&a, &b] {
        // A store call over its time limit (a loaded machine) only sends a read to the
        // primary; it must stay rare.
        let text = proxy.metrics.encode();
        let errors = counter(&text, "causeway_session_store_errors_total", &[]);
        let ops = counter(&text, "causeway_session_store_duration_seconds_count", &[]);
        assert!(
            ops > 0.0 && errors * 10.0 < ops,
            "{errors} store errors in {ops} calls"
        );
    }
    let stored = command(redis.port, "GET causeway:floor:s:app/app/user-42").unwrap();
    assert!(
        stored.starts_with("$26\r\n00000001/"),
        "stored floor: {stored:?}"
    );
}

/// How a connection names its session.
#[derive(Debug, Clone, Copy)]
enum Carrier {
    /// `SET causeway.session = '<key>'`.
    Set(&'static str),
    /// The startup option `-c causeway.session=<key>`.
    StartupOption(&'static str),
    /// Nothing: `[session] key = "user"` keys it by the login.
    User,
}

async fn connect(proxy: &Proxy, carrier: Carrier) -> Client {
    let mut config: tokio_postgres::Config = proxy.conn_string("app").parse().unwrap();
    if let Carrier::StartupOption(key) = carrier {
        config.options(format!("-c causeway.session={key}"));
    }
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    if let Carrier::Set(key) = carrier {
        client
            .batch_execute(&format!("SET causeway.session = '{key}'"))
            .await
            .unwrap();
    }
    client
}

/// Write through instance A, read through instance B, both with the key carried by
/// `carrier`, `iterations` times; reads with another key are shown stale.
async fn ryw_across(
    cluster: &Cluster,
    a: &Proxy,
    b: &Proxy,
    carrier: Carrier,
    table: &str,
    ids: std::ops::Range<i32>,
) {
    let writer = connect(a, carrier).await;
    let reader = connect(b, carrier).await;
    let mut other_key = b.client().await;
    let mut other = Stale::default();
    let mut other_generation = 0;
    for id in ids {
        writer
            .simple_query(&format!("INSERT INTO {table} VALUES ({id})"))
            .await
            .unwrap();
        let (port, seen) = if id % 2 == 0 {
            simple_check(&reader, "", table, id).await
        } else {
            extended_check(&reader, "", table, id).await
        };
        assert!(
            seen,
            "{carrier:?}: read {id} missed its write (on {})",
            node_of(cluster, port)
        );
        let hint = format!("/* causeway: session=someone-else-{other_generation} */ ");
        if other.record(cluster, simple_check(&other_key, &hint, table, id).await) {
            other_key = b.client().await;
            other_generation += 1;
        }
    }
    assert!(
        other.stale > 0,
        "{carrier:?}: reads with another key were never stale"
    );
}

#[tokio::test]
async fn the_key_can_come_from_set_the_startup_option_or_the_user() {
    let cluster = delayed_cluster(Duration::from_secs(60), "shared_carriers").await;
    let redis = cluster.redis.as_ref().unwrap();
    let config = shared_config(&url_line(&redis.url()));
    let a = Proxy::start_with(&cluster, &config).await;
    let b = Proxy::start_with(&cluster, &config).await;
    wait_in_pool(&b, &["replica1", "replica2"]).await;
    // Distinct rows per carrier: a TRUNCATE would hold a lock on the delayed replicas
    // until its commit replays there, blocking their reads.
    let carriers = [Carrier::Set("cart-9"), Carrier::StartupOption("cart-10")];
    for (n, carrier) in (0..).zip(carriers) {
        ryw_across(
            &cluster,
            &a,
            &b,
            carrier,
            "shared_carriers",
            n * 200..n * 200 + 200,
        )
        .await;
    }

    // [session] key = "user": every connection of the user shares one session.
    let user_config = format!("{config}\n[session]\nkey = \"user\"\n");
    let a = Proxy::start_with(&cluster, &user_config).await;
    let b = Proxy::start_with(&cluster, &user_config).await;
    wait_in_pool(&b, &["replica1", "replica2"]).await;
    ryw_across(&cluster, &a, &b, Carrier::User, "shared_carriers", 400..600).await;
    let stored = command(redis.port, "EXISTS causeway:floor:u:app/app").unwrap();
    assert_eq!(stored.trim(), ":1", "the user's floor is in Redis");
}

#[tokio::test]
async fn monotonic_reads_across_instances_with_a_lagging_replica() {
    let (cluster, setup) = prepared_cluster(
        true,
        "CREATE TABLE shared_mr (id int primary key, v bigint); INSERT INTO shared_mr VALUES (1, 0); GRANT ALL ON shared_mr TO PUBLIC",
        Some(("replica1", Duration::from_millis(1500))),
    )
    .await;
    let url = cluster.redis.as_ref().unwrap().url();
    let config =
        format!("[session_store]\nkind = \"redis\"\nurl = \"{url}\"\ntimeout = \"50ms\"\n");
    let a = Proxy::start_with(&cluster, &config).await;
    let b = Proxy::start_with(&cluster, &config).await;
    wait_in_pool(&a, &["replica1", "replica2"]).await;
    wait_in_pool(&b, &["replica1", "replica2"]).await;
    let writer = tokio::spawn(async move {
        for _ in 0..200 {
            setup
                .batch_execute("UPDATE shared_mr SET v = v + 1 WHERE id = 1")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut readers = Vec::new();
    for proxy in [&a, &b] {
        let client = proxy.client().await;
        client
            .batch_execute("SET causeway.session = 'mr-1'")
            .await
            .unwrap();
        readers.push(client);
    }
    let (mut last, mut reads, mut on_replicas) = (-1i64, 0usize, 0usize);
    while !writer.is_finished() || reads < 1000 {
        let reader = &readers[reads % 2];
        let row = reader
            .query_one(
                "SELECT inet_server_port(), v FROM shared_mr WHERE id = 1",
                &[],
            )
            .await
            .unwrap();
        let (port, v): (i32, i64) = (row.get(0), row.get(1));
        assert!(
            v >= last,
            "read {reads} (instance {}) went back in time: {v} after {last} (on {})",
            reads % 2,
            node_of(&cluster, port)
        );
        last = v;
        reads += 1;
        if port != i32::from(cluster.primary.port) {
            on_replicas += 1;
        }
        if reads > 20_000 {
            break;
        }
    }
    writer.await.unwrap();
    let ops = |op: &str| -> f64 {
        [&a, &b]
            .iter()
            .map(|p| {
                counter(
                    &p.metrics.encode(),
                    "causeway_session_store_duration_seconds_count",
                    &[("op", op)],
                )
            })
            .sum()
    };
    let (gets, advances) = (ops("get"), ops("advance"));
    println!(
        "cross-instance monotonic reads: {on_replicas}/{reads} on replicas; store operations per read: {:.2} get + {:.2} advance",
        gets / reads as f64,
        advances / reads as f64
    );
    assert!(on_replicas > 0, "no read reached a replica");
}

#[tokio::test]
async fn a_redis_cluster_shares_floors_too() {
    let cluster = delayed_cluster(Duration::from_secs(60), "shared_cluster").await;
    let redis_cluster = cluster.start_redis_cluster(3).unwrap();
    let nodes = redis_cluster
        .addresses()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = shared_config(&format!("cluster_nodes = [{nodes}]"));
    let a = Proxy::start_with(&cluster, &config).await;
    let b = Proxy::start_with(&cluster, &config).await;
    wait_in_pool(&b, &["replica1", "replica2"]).await;
    let writer = a.client().await;
    let reader = b.client().await;
    let mut unkeyed = b.client().await;
    let mut other = Stale::default();
    let mut other_generation = 0;
    let mut id = 0i32;
    let mut fresh = 0;
    while fresh < 1000 {
        // Many keys, so the floors spread over the cluster's slots (and nodes).
        let key = format!("/* causeway: session=cluster-user-{} */ ", id % 17);
        writer
            .simple_query(&format!("{key}INSERT INTO shared_cluster VALUES ({id})"))
            .await
            .unwrap();
        let (port, seen) = simple_check(&reader, &key, "shared_cluster", id).await;
        assert!(
            seen,
            "read {id} missed its write (on {})",
            node_of(&cluster, port)
        );
        fresh += 1;
        let hint = format!("/* causeway: session=nobody-{other_generation} */ ");
        if other.record(
            &cluster,
            simple_check(&unkeyed, &hint, "shared_cluster", id).await,
        ) {
            unkeyed = b.client().await;
            other_generation += 1;
        }
        id += 1;
    }
    assert!(other.stale > 0, "reads with another key were never stale");
    let mut keys_per_node = Vec::new();
    for node in &redis_cluster.nodes {
        let reply = command(node.port, "DBSIZE").unwrap();
        keys_per_node.push(reply.trim().trim_start_matches(':').parse::<u32>().unwrap());
    }
    println!("redis cluster: keys per node {keys_per_node:?}");
    assert!(
        keys_per_node.iter().filter(|n| **n > 0).count() >= 2,
        "floors spread over the cluster: {keys_per_node:?}"
    );
}

#[tokio::test]
async fn floors_expire_after_the_session_ttl() {
    let cluster = Cluster::shared();
    let redis = cluster.start_redis("ttl").unwrap();
    // session_ttl must outlast eviction: max_seconds + poll_interval + 1s.
    let config = format!(
        "[session_store]\nkind = \"redis\"\nurl = \"{}\"\nsession_ttl = \"3s\"\ntimeout = \"500ms\"\n\n\
         [lag]\nmax_seconds = \"500ms\"\npoll_interval = \"50ms\"\nstale_after = \"500ms\"\n",
        redis.url()
    );
    let a = Proxy::start_with(cluster, &config).await;
    let b = Proxy::start_with(cluster, &config).await;
    // Both connect to Redis in the background; until then store calls fail (0/0 below).
    wait_store_up(&a).await;
    wait_store_up(&b).await;
    let writer = a.client().await;
    writer
        .batch_execute("CREATE TABLE IF NOT EXISTS shared_ttl (id int)")
        .await
        .unwrap();
    writer
        .batch_execute("SET causeway.session = 'ttl-1'")
        .await
        .unwrap();
    // The reader is ready before the write: only the TTL may pass between them.
    let reader = b.client().await;
    reader
        .batch_execute("SET causeway.session = 'ttl-1'")
        .await
        .unwrap();
    writer
        .batch_execute("INSERT INTO shared_ttl VALUES (1)")
        .await
        .unwrap();
    let pttl = command(redis.port, "PTTL causeway:floor:s:app/app/ttl-1").unwrap();
    let pttl: i64 = pttl.trim().trim_start_matches(':').parse().unwrap();
    assert!((1..=3000).contains(&pttl), "PTTL {pttl}");
    let lsn = |c: Client| async move {
        let rows = c.simple_query("SHOW causeway.session_lsn").await.unwrap();
        let value = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        (c, value.unwrap())
    };
    let (reader, before) = lsn(reader).await;
    assert_ne!(before, "0/0", "instance B sees the floor stored by A");
    // The key expires when its PTTL (read above, at most the 3 s session_ttl) runs out:
    // nothing since (B's read of the floor included) may have extended it. 1 s of slack
    // for a loaded machine, instead of a fixed 3.3 s sleep.
    let expiry = Duration::from_millis(pttl.unsigned_abs()) + Duration::from_secs(1);
    eventually(expiry, "the floor key expires after its TTL", || async {
        let exists = command(redis.port, "EXISTS causeway:floor:s:app/app/ttl-1").unwrap();
        (exists.trim() == ":0")
            .then_some(())
            .ok_or_else(|| format!("EXISTS says {:?}", exists.trim()))
    })
    .await;
    // A fresh connection on B (its own floor is empty): the session starts over.
    let fresh = b.client().await;
    fresh
        .batch_execute("SET causeway.session = 'ttl-1'")
        .await
        .unwrap();
    let (_, after) = lsn(fresh).await;
    assert_eq!(after, "0/0", "an expired session is new");
    drop(reader);
}

#[tokio::test]
async fn a_sentinel_url_finds_the_redis_primary() {
    let cluster = delayed_cluster(Duration::from_secs(60), "shared_sentinel").await;
    let primary = cluster.start_redis("sentinel-primary").unwrap();
    let sentinel = cluster
        .start_sentinel("sentinel", "floors", &primary)
        .unwrap();
    let config = shared_config(&url_line(&format!(
        "redis+sentinel://127.0.0.1:{}/floors",
        sentinel.port
    )));
    let a = Proxy::start_with(&cluster, &config).await;
    let b = Proxy::start_with(&cluster, &config).await;
    wait_in_pool(&b, &["replica1", "replica2"]).await;
    ryw_across(
        &cluster,
        &a,
        &b,
        Carrier::Set("sentinel-1"),
        "shared_sentinel",
        0..100,
    )
    .await;
    let stored = command(primary.port, "EXISTS causeway:floor:s:app/app/sentinel-1").unwrap();
    assert_eq!(
        stored.trim(),
        ":1",
        "the floor is on the primary the Sentinel named"
    );
}
