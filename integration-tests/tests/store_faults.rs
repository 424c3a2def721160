//! The Redis session store failing under load: killed, restarted, made slow with
//! `DEBUG SLEEP`, its connections closed by the server (`CLIENT KILL`), its primary killed
//! under a Sentinel that fails over to a replica. Clients see no error and no stale read (reads fall back to the primary,
//! counted), and replica reads resume by themselves once Redis answers again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::Cluster;
use tokio::task::JoinHandle;

use crate::routing::wait_in_pool;
use crate::support::{counter, eventually, prepared_cluster, wait_store_up, Proxy};

/// Replica reads, fallbacks and iterations seen by the workload so far.
#[derive(Debug, Default)]
struct Progress {
    iterations: AtomicUsize,
    replica_reads: AtomicUsize,
}

/// A client of `conn` (a connection string) in the shared session `key`.
async fn session_client(conn: String, key: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SET causeway.session = '{key}'"))
        .await
        .unwrap();
    client
}

/// Writes through `a` and reads them back through `b` with one session key until `stop`,
/// asserting every read sees its write; returns the number of iterations.
fn workload(
    cluster: &Cluster,
    a: &Proxy,
    b: &Proxy,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let primary = i32::from(cluster.primary.port);
    let names: Vec<(i32, String)> = cluster
        .replicas
        .iter()
        .map(|r| (i32::from(r.port), r.name.clone()))
        .chain([(primary, "primary".to_owned())])
        .collect();
    let (a_conn, b_conn) = (a.conn_string("app"), b.conn_string("app"));
    tokio::spawn(async move {
        let writer = session_client(a_conn, "fault-1").await;
        let reader = session_client(b_conn, "fault-1").await;
        let mut id = 0i32;
        while !stop.load(Ordering::Relaxed) {
            writer
                .execute("INSERT INTO store_faults VALUES ($1)", &[&id])
                .await
                .unwrap_or_else(|e| panic!("write {id} failed: {e}"));
            let row = reader
                .query_one(
                    "SELECT inet_server_port(), count(*)::int FROM store_faults WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap_or_else(|e| panic!("read {id} failed: {e}"));
            let port: i32 = row.get(0);
            let name = names
                .iter()
                .find(|(p, _)| *p == port)
                .map(|(_, n)| n.as_str());
            assert_eq!(
                row.get::<_, i32>(1),
                1,
                "read {id} missed its write (on {name:?})"
            );
            if port != primary {
                progress.replica_reads.fetch_add(1, Ordering::Relaxed);
            }
            progress.iterations.fetch_add(1, Ordering::Relaxed);
            id += 1;
        }
    })
}

/// Two instances sharing `redis`; after an outage stored floors are distrusted for
/// `max_seconds` + 50 ms + 1 s.
async fn setup(redis_url: &str, max_seconds: &str) -> (Cluster, Proxy, Proxy) {
    setup_each(redis_url, redis_url, max_seconds, "").await
}

/// Like [`setup`], with each instance reaching Redis at its own URL, and `extra` config.
async fn setup_each(
    url_a: &str,
    url_b: &str,
    max_seconds: &str,
    extra: &str,
) -> (Cluster, Proxy, Proxy) {
    // A replica that is always a little behind makes a read that ignored the floor stale.
    let (cluster, _) = prepared_cluster(
        false,
        "CREATE TABLE store_faults (id int primary key); GRANT ALL ON store_faults TO PUBLIC",
        Some(("replica1", Duration::from_millis(300))),
    )
    .await;
    // Every read follows its write at once, so a replica read needs a replay probe answered
    // within `max_wait`; the default 20 ms is often missed on two loaded cores (the first
    // replica reads once took over 10 s to show up). 200 ms keeps them coming.
    let config = |url: &str| {
        format!(
            "[session_store]\nkind = \"redis\"\nurl = \"{url}\"\ntimeout = \"20ms\"\n\n\
             [lag]\nmax_seconds = \"{max_seconds}\"\npoll_interval = \"50ms\"\n\n\
             [consistency]\nmax_wait = \"200ms\"\n\n{extra}"
        )
    };
    let a = Proxy::start_with(&cluster, &config(url_a)).await;
    let b = Proxy::start_with(&cluster, &config(url_b)).await;
    wait_in_pool(&b, &["replica1", "replica2"]).await;
    (cluster, a, b)
}

/// How long the first replica reads may take to show up, before any fault: generous, as
/// under the whole suite's load on two cores they once took over 10 s.
const SETUP_WAIT: Duration = Duration::from_secs(30);

/// Waits until the workload has made 5 more replica reads; returns how long that took.
async fn wait_replica_reads(progress: &Progress, within: Duration) -> Duration {
    let started = Instant::now();
    let base = progress.replica_reads.load(Ordering::Relaxed);
    eventually(within, "5 more replica reads", || async {
        let more = progress.replica_reads.load(Ordering::Relaxed) - base;
        (more >= 5)
            .then_some(())
            .ok_or_else(|| format!("{more} replica reads"))
    })
    .await;
    started.elapsed()
}

fn store_fallbacks(proxy: &Proxy) -> f64 {
    counter(
        &proxy.metrics.encode(),
        "causeway_consistency_fallbacks_total",
        &[("reason", "store_error")],
    )
}

#[tokio::test]
async fn redis_killed_and_restarted_under_load() {
    let scratch = Cluster::shared();
    let redis = scratch.start_redis("killed").unwrap();
    let (cluster, a, b) = setup(&redis.url(), "1s").await;
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let task = workload(&cluster, &a, &b, progress.clone(), stop.clone());
    wait_replica_reads(&progress, SETUP_WAIT).await;

    redis.kill().unwrap();
    let before = progress.iterations.load(Ordering::Relaxed);
    // Clients keep working while Redis is down (it stays down until restarted below), and
    // the reads falling back to the primary are counted. Each write waits until the
    // replicas have replayed it (its floor could not be stored): about replica1's 300 ms
    // apply delay, so 3 iterations take about 1 s; 10 s allows for a loaded machine.
    let outage = Instant::now();
    let during = eventually(
        Duration::from_secs(10),
        "clients keep working while Redis is down",
        || async {
            let during = progress.iterations.load(Ordering::Relaxed) - before;
            let fallbacks = store_fallbacks(&b);
            (during >= 3 && fallbacks > 0.0)
                .then_some(during)
                .ok_or_else(|| format!("{during} iterations, {fallbacks} fallbacks counted"))
        },
    )
    .await;
    let outage = outage.elapsed();

    redis.start().unwrap();
    let resumed = wait_replica_reads(&progress, Duration::from_secs(15)).await;
    println!("redis killed: {during} iterations in {outage:?} without Redis; replica reads resumed {resumed:?} after restart");
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    let text = b.metrics.encode();
    assert!(counter(&text, "causeway_session_store_errors_total", &[]) > 0.0);
}

#[tokio::test]
async fn a_slow_redis_is_routed_around() {
    let scratch = Cluster::shared();
    let redis = scratch.start_redis("slow").unwrap();
    let (cluster, a, b) = setup(&redis.url(), "1s").await;
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let task = workload(&cluster, &a, &b, progress.clone(), stop.clone());
    wait_replica_reads(&progress, SETUP_WAIT).await;

    let fallbacks = store_fallbacks(&b) + store_fallbacks(&a);
    let port = redis.port;
    let sleeper =
        std::thread::spawn(move || integration_tests::redis::command(port, "DEBUG SLEEP 1.5"));
    let before = progress.iterations.load(Ordering::Relaxed);
    // A fixed window inside Redis's 1.5 s sleep (the scenario): the clients' progress in
    // it is what is measured, so there is no condition to poll for.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let during = progress.iterations.load(Ordering::Relaxed) - before;
    assert!(
        during >= 2,
        "clients kept working while Redis was slow ({during})"
    );
    sleeper.join().unwrap().unwrap();
    assert!(
        store_fallbacks(&b) + store_fallbacks(&a) > fallbacks,
        "fallbacks counted"
    );
    let resumed = wait_replica_reads(&progress, Duration::from_secs(15)).await;
    println!("redis slow: {during} iterations in 1.2 s; replica reads resumed {resumed:?} after");
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
}

#[tokio::test]
async fn a_connection_broken_by_the_same_server_loses_no_time() {
    let scratch = Cluster::shared();
    let redis = scratch.start_redis("client-kill").unwrap();
    // A 6 s grace period: replica reads coming back well before it prove the store saw the
    // same server (run_id) and did not wait it out.
    let (cluster, a, b) = setup(&redis.url(), "5s").await;
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let task = workload(&cluster, &a, &b, progress.clone(), stop.clone());
    wait_replica_reads(&progress, SETUP_WAIT).await;
    let errors = |p: &Proxy| {
        counter(
            &p.metrics.encode(),
            "causeway_session_store_errors_total",
            &[],
        )
    };
    let before = errors(&a) + errors(&b);
    // Close every client connection on the server side, as a network blip would, until
    // an instance notices.
    let killed = std::cell::Cell::new(0);
    eventually(
        Duration::from_secs(10),
        "the broken connections are noticed",
        || async {
            let reply =
                integration_tests::redis::command(redis.port, "CLIENT KILL TYPE normal").unwrap();
            let closed = reply.trim().trim_start_matches(':').parse().unwrap_or(0);
            killed.set(killed.get() + closed);
            let now = errors(&a) + errors(&b);
            (now > before).then_some(()).ok_or_else(|| {
                format!(
                    "store errors still {now}, {} connections killed",
                    killed.get()
                )
            })
        },
    )
    .await;
    let killed = killed.get();
    let resumed = wait_replica_reads(&progress, Duration::from_secs(15)).await;
    println!("redis CLIENT KILL ({killed} connections): replica reads resumed {resumed:?} after");
    assert!(
        resumed < Duration::from_secs(4),
        "waited out the grace period: {resumed:?}"
    );
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
}

/// Only one instance loses Redis (a partition between it and Redis): the other keeps
/// reading floors from Redis, which lack the writes the first could not store. Those
/// writes are acknowledged only once the replicas have replayed them, so the other
/// instance's replica reads still see every one.
#[tokio::test]
async fn an_instance_cut_off_from_redis_holds_its_writes_until_replayed() {
    let scratch = Cluster::shared();
    let redis = scratch.start_redis("partition").unwrap();
    let relay = integration_tests::Relay::start(redis.port).await.unwrap();
    let relayed = format!("redis://127.0.0.1:{}", relay.port);
    // One server connection per pool: a held ReadyForQuery must not keep it.
    let (cluster, a, b) =
        setup_each(&relayed, &redis.url(), "5s", "[proxy]\npool_size = 1\n").await;
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let task = workload(&cluster, &a, &b, progress.clone(), stop.clone());
    wait_replica_reads(&progress, SETUP_WAIT).await;
    // replica2 a little behind too: reads stay there (the floor its reads raise keeps
    // replica1 out), and one that ignored a write's lost floor would miss that write.
    cluster
        .node("replica2")
        .set_apply_delay(Duration::from_millis(30))
        .await
        .unwrap();

    relay.cut();
    let before = (
        progress.iterations.load(Ordering::Relaxed),
        progress.replica_reads.load(Ordering::Relaxed),
    );
    // Meanwhile another client of the cut-off instance runs queries on the pool's one
    // server connection, which the held writes do not keep.
    let other = a.client().await;
    let mut latencies = Vec::new();
    // A fixed 3 s window of the partition (the scenario): progress and latency in it are
    // what is measured.
    let cut_at = Instant::now();
    while cut_at.elapsed() < Duration::from_secs(3) {
        let started = Instant::now();
        other.simple_query("SELECT 1").await.unwrap();
        latencies.push(started.elapsed());
        // Pacing, not waiting for anything.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let iterations = progress.iterations.load(Ordering::Relaxed) - before.0;
    let replica_reads = progress.replica_reads.load(Ordering::Relaxed) - before.1;
    println!(
        "partition: {iterations} iterations, {replica_reads} replica reads in 3 s; \
         another client's SELECT 1 on the same pool: median {median:?}"
    );
    assert!(
        median < Duration::from_millis(100),
        "held writes kept the server connection: median {median:?}"
    );
    assert!(
        iterations >= 4,
        "writes were held, not stalled ({iterations})"
    );
    assert!(
        replica_reads > 0,
        "the other instance kept reading from replicas"
    );
    assert!(store_fallbacks(&a) > 0.0 || errors(&a) > 0.0);

    relay.restore();
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
}

fn errors(proxy: &Proxy) -> f64 {
    counter(
        &proxy.metrics.encode(),
        "causeway_session_store_errors_total",
        &[],
    )
}

/// Redis restarts empty between a write and the reads after it, on an instance that made
/// no store call meanwhile: its first answer after the broken connection comes from the
/// new, empty server and must not be taken as "this session has no floor".
#[tokio::test]
async fn a_restarted_redis_is_not_trusted_by_an_idle_instance() {
    let scratch = Cluster::shared();
    let redis = scratch.start_redis("restart-idle").unwrap();
    let (cluster, a, b) = setup(&redis.url(), "5s").await;
    // Both replicas 2 s behind: a read there that ignores the session's floor misses a
    // write made less than 2 s before.
    crate::support::delay_replicas(&cluster, Duration::from_secs(2)).await;
    wait_store_up(&a).await;
    wait_store_up(&b).await;
    let connect = |proxy: &Proxy| session_client(proxy.conn_string("app"), "restart-1");
    let writer = connect(&a).await;
    let mut reads = 0;
    for id in 1000..1002 {
        writer
            .execute("INSERT INTO store_faults VALUES ($1)", &[&id])
            .await
            .unwrap();
        redis.kill().unwrap();
        redis.start().unwrap();
        if id == 1001 {
            // Let B's background task be the first to use the dead connection (its
            // run_id check every 250 ms), which reconnects it without a failed read.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        // Fresh connections (no floor of their own), as requests of a web app would be,
        // for a fixed 1.5 s (the scenario: no read in that time may be stale).
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            let reader = connect(&b).await;
            let row = reader
                .query_one(
                    "SELECT count(*)::int FROM store_faults WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            assert_eq!(row.get::<_, i32>(0), 1, "read of {id} missed its write");
            reads += 1;
        }
    }
    println!("redis restarted under an idle instance: {reads} reads, none stale");
}

#[tokio::test]
async fn a_sentinel_failover_is_followed() {
    let scratch = Cluster::shared();
    let primary = scratch.start_redis("failover-primary").unwrap();
    let replica = scratch
        .start_redis_replica("failover-replica", &primary)
        .unwrap();
    let sentinel = scratch
        .start_sentinel("failover-sentinel", "floors", &primary)
        .unwrap();
    let url = format!("redis+sentinel://127.0.0.1:{}/floors", sentinel.port);
    let (cluster, a, b) = setup(&url, "1s").await;
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let task = workload(&cluster, &a, &b, progress.clone(), stop.clone());
    wait_replica_reads(&progress, SETUP_WAIT).await;

    primary.kill().unwrap();
    let killed = Instant::now();
    // The Sentinel notices after down-after-milliseconds (1 s) and promotes the replica;
    // Causeway asks it again after repeated failures and distrusts the new server's floors
    // for its grace period (~2 s here). Clients meanwhile read from the primary.
    wait_replica_reads(&progress, Duration::from_secs(30)).await;
    let resumed = killed.elapsed();
    let role = integration_tests::redis::command(replica.port, "ROLE").unwrap();
    assert!(
        role.contains("master"),
        "the replica was promoted: {role:?}"
    );
    let stored =
        integration_tests::redis::command(replica.port, "EXISTS causeway:floor:s:app/app/fault-1")
            .unwrap();
    assert_eq!(stored.trim(), ":1", "floors are written to the new primary");
    println!("sentinel failover: replica reads resumed {resumed:?} after the primary was killed");
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
}
