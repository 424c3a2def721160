//! Waits that can succeed (DESIGN.md §1): a read whose floor no replica can reach within
//! `max_wait`, by the replicas' measured lag, goes to the primary at once; one that a
//! replica can reach waits for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::routing::wait_in_pool;
use crate::support::{counter, eventually, prepared_cluster, Proxy};

fn waits(proxy: &Proxy, outcome: &str) -> f64 {
    counter(
        &proxy.metrics.encode(),
        "causeway_consistency_waits_total",
        &[("outcome", outcome)],
    )
}

/// Both replicas apply WAL 1 s late while the primary keeps writing (so their measured lag
/// is about 1 s): with `max_wait` 300 ms, a read right after the session's write cannot be
/// served by a replica in time and must not wait for one.
#[tokio::test]
async fn a_wait_that_cannot_succeed_is_not_started() {
    let (cluster, primary) = prepared_cluster(
        false,
        "CREATE TABLE waits_t (id int primary key); CREATE TABLE waits_noise (id serial); \
         GRANT ALL ON waits_t, waits_noise, waits_noise_id_seq TO PUBLIC",
        None,
    )
    .await;
    crate::support::delay_replicas(&cluster, Duration::from_secs(1)).await;
    let proxy = Proxy::start_with(&cluster, "[consistency]\nmax_wait = \"300ms\"\n").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let noise = tokio::spawn({
        let stop = stop.clone();
        async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = primary
                    .batch_execute("INSERT INTO waits_noise DEFAULT VALUES")
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    eventually(
        Duration::from_secs(20),
        "replicas measured ~1 s behind",
        || async {
            let text = proxy.metrics.encode();
            let lag = |r| counter(&text, "causeway_replica_lag_seconds", &[("replica", r)]);
            let (l1, l2) = (lag("replica1"), lag("replica2"));
            if l1 > 0.6 && l2 > 0.6 {
                Ok(())
            } else {
                Err(format!("lag_seconds {l1} / {l2}"))
            }
        },
    )
    .await;
    let client = proxy.client().await;
    let skipped = waits(&proxy, "skipped");
    let timed_out = waits(&proxy, "timed_out");
    let mut slowest = Duration::ZERO;
    for id in 0..10 {
        client
            .execute("INSERT INTO waits_t VALUES ($1)", &[&id])
            .await
            .unwrap();
        let started = Instant::now();
        let seen: i64 = client
            .query_one("SELECT count(*) FROM waits_t WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        slowest = slowest.max(started.elapsed());
        assert_eq!(seen, 1, "the read missed its write {id}");
    }
    stop.store(true, Ordering::Relaxed);
    noise.await.unwrap();
    assert!(
        waits(&proxy, "skipped") >= skipped + 8.0,
        "skipped waits: {} -> {}",
        skipped,
        waits(&proxy, "skipped")
    );
    assert!(
        waits(&proxy, "timed_out") <= timed_out + 2.0,
        "reads still waited in vain"
    );
    assert!(
        slowest < Duration::from_millis(250),
        "slowest read {slowest:?}"
    );
}
