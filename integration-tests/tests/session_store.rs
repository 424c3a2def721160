//! The session-store contract, run against the memory store and against the Redis store on
//! a real redis-server: an exact atomic max (LSNs above 2^53, timeline changes), TTL expiry,
//! values that are not floors, and an unreachable server failing fast.

use std::time::Duration;

use causeway::config::{SessionStoreConfig, SessionStoreKind};
use causeway::lsn::{Lsn, Position};
use causeway::session_store::{MemoryStore, RedisStore, SessionStore, StoreError};
use integration_tests::redis::command;
use integration_tests::Cluster;
use tokio_util::sync::CancellationToken;

fn pos(timeline: u32, lsn: u64) -> Position {
    Position {
        timeline,
        lsn: Lsn::new(lsn),
    }
}

fn redis_store(url: &str, ttl: Duration, timeout: Duration) -> RedisStore {
    let config = SessionStoreConfig {
        kind: SessionStoreKind::Redis,
        url: url.to_owned(),
        session_ttl: ttl,
        timeout,
        cluster_nodes: Vec::new(),
        ca_file: None,
    };
    RedisStore::new(&config, Duration::from_secs(1), CancellationToken::new()).unwrap()
}

/// What every store must do; `prefix` keeps runs apart.
async fn contract(store: &dyn SessionStore, prefix: &str) {
    let key = format!("{prefix}-max");
    assert_eq!(store.get(&key).await.unwrap(), None);
    let big = 1u64 << 53;
    // As doubles, 2^53 and 2^53 + 1 are equal: only an exact comparison keeps the max.
    assert_eq!(
        store.advance(&key, pos(1, big + 1)).await.unwrap(),
        pos(1, big + 1)
    );
    assert_eq!(
        store.advance(&key, pos(1, big)).await.unwrap(),
        pos(1, big + 1)
    );
    assert_eq!(store.get(&key).await.unwrap(), Some(pos(1, big + 1)));
    assert_eq!(
        store.advance(&key, pos(1, big + 2)).await.unwrap(),
        pos(1, big + 2)
    );
    assert_eq!(
        store.advance(&key, pos(1, u64::MAX - 1)).await.unwrap(),
        pos(1, u64::MAX - 1)
    );
    assert_eq!(
        store.advance(&key, pos(1, u64::MAX - 2)).await.unwrap(),
        pos(1, u64::MAX - 1)
    );
    // A later timeline wins whatever its LSN; an older one never goes back.
    assert_eq!(store.advance(&key, pos(2, 5)).await.unwrap(), pos(2, 5));
    assert_eq!(
        store.advance(&key, pos(1, u64::MAX)).await.unwrap(),
        pos(2, 5)
    );
    assert_eq!(
        store.advance(&key, pos(2, 0xFFFF_FFFF)).await.unwrap(),
        pos(2, 0xFFFF_FFFF)
    );
    assert_eq!(
        store.advance(&key, pos(2, 0x1_0000_0000)).await.unwrap(),
        pos(2, 0x1_0000_0000)
    );
    assert_eq!(store.get(&key).await.unwrap(), Some(pos(2, 0x1_0000_0000)));
    assert_eq!(store.get(&format!("{prefix}-other")).await.unwrap(), None);
    assert!(store.health().up);
}

/// Floors are forgotten `ttl` after their last raise.
async fn expiry(store: &dyn SessionStore, prefix: &str) {
    let key = format!("{prefix}-ttl");
    store.advance(&key, pos(1, 100)).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(pos(1, 100)));
    // Past the 400 ms TTL (the scenario); then the floor must be gone at the first look.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.get(&key).await.unwrap(), None, "expired");
    assert_eq!(store.advance(&key, pos(1, 7)).await.unwrap(), pos(1, 7));
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    contract(&MemoryStore::new(Duration::from_secs(60)), "mem").await;
    expiry(&MemoryStore::new(Duration::from_millis(400)), "mem").await;
}

#[tokio::test]
async fn the_redis_store_keeps_the_contract() {
    let cluster = Cluster::shared();
    let redis = cluster.redis.as_ref().unwrap();
    let store = redis_store(
        &redis.url(),
        Duration::from_secs(60),
        Duration::from_millis(500),
    );
    contract(&store, "contract").await;
    let stored = command(redis.port, "GET causeway:floor:contract-max").unwrap();
    assert!(stored.contains("00000002/00000001/00000000"), "{stored:?}");
    let short = redis_store(
        &redis.url(),
        Duration::from_millis(400),
        Duration::from_millis(500),
    );
    expiry(&short, "contract").await;
}

/// A Redis user without the right to run `INFO` (the store asks it for the server's
/// `run_id` every 250 ms): the refusal only leaves the identity unknown; the store stays up.
#[tokio::test]
async fn a_user_without_info_rights_keeps_the_store_up() {
    let cluster = Cluster::shared();
    let redis = cluster.redis.as_ref().unwrap();
    command(
        redis.port,
        "ACL SETUSER noinfo on >secret ~causeway:* +@all -info",
    )
    .unwrap();
    let url = format!("redis://noinfo:secret@127.0.0.1:{}", redis.port);
    let store = redis_store(&url, Duration::from_secs(60), Duration::from_millis(500));
    contract(&store, "noinfo").await;
    // Several maintenance rounds, each with a refused INFO: time passing to show the store
    // does not go down, nothing to poll for.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let health = store.health();
    assert!(health.up && !health.recovering, "{health:?}");
    assert_eq!(
        store.advance("noinfo-late", pos(1, 5)).await.unwrap(),
        pos(1, 5)
    );
    assert_eq!(store.get("noinfo-late").await.unwrap(), Some(pos(1, 5)));
}

/// A store whose server is a Redis replica (as an old primary is after a Sentinel
/// failover: same `run_id`, data copied from a primary that may have missed floors) is not
/// used: reads go to the primary, and the store says why.
#[tokio::test]
async fn a_replica_is_not_used_as_the_store() {
    let cluster = Cluster::shared();
    let primary = cluster.start_redis("store-primary").unwrap();
    let replica = cluster
        .start_redis_replica("store-replica", &primary)
        .unwrap();
    command(
        primary.port,
        "SET causeway:floor:on-replica 00000001/00000000/00000009",
    )
    .unwrap();
    let store = redis_store(
        &replica.url(),
        Duration::from_secs(60),
        Duration::from_millis(200),
    );
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(800) {
        assert!(
            store.get("on-replica").await.is_err(),
            "a replica's floor was used"
        );
        assert!(
            store.get("missing").await.is_err(),
            "a replica's floor was used"
        );
        // Checking throughout a fixed 800 ms window that the replica is never used.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = store.health();
    assert!(!health.up, "{health:?}");
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("replica")),
        "{health:?}"
    );
}

#[tokio::test]
async fn a_value_that_is_not_a_floor_is_an_error_then_replaced() {
    let cluster = Cluster::shared();
    let redis = cluster.redis.as_ref().unwrap();
    let store = redis_store(
        &redis.url(),
        Duration::from_secs(60),
        Duration::from_millis(500),
    );
    for junk in ["garbage", "1/0/3000060", "00000001/00000000/0300006Z"] {
        command(redis.port, &format!("SET causeway:floor:junk {junk}")).unwrap();
        assert_eq!(store.get("junk").await, Err(StoreError::Corrupt), "{junk}");
        assert_eq!(store.advance("junk", pos(1, 9)).await.unwrap(), pos(1, 9));
        assert_eq!(store.get("junk").await.unwrap(), Some(pos(1, 9)));
    }
    // A key of another type: the store call fails, nothing panics.
    command(redis.port, "DEL causeway:floor:list").unwrap();
    command(redis.port, "LPUSH causeway:floor:list x").unwrap();
    assert!(store.get("list").await.is_err());
}

#[tokio::test]
async fn an_unreachable_store_fails_within_its_time_limit() {
    let port = integration_tests::ports::free_port().unwrap();
    let store = redis_store(
        &format!("redis://127.0.0.1:{port}"),
        Duration::from_secs(60),
        Duration::from_millis(20),
    );
    for _ in 0..20 {
        let started = std::time::Instant::now();
        assert!(store.get("k").await.is_err());
        assert!(store.advance("k", pos(1, 1)).await.is_err());
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
    }
    let health = store.health();
    assert!(!health.up);
    assert_eq!(health.pending_floors, 1, "the floor waits to be stored");
}
