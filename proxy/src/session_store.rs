//! Where shared session floors live (DESIGN.md §3): a floor per session key, raised by an
//! atomic max, forgotten after `session_ttl` without activity. Connection-scoped sessions
//! keep their floor in the session itself and never touch a store. `memory` is the
//! embedded store (one Causeway instance); `redis` shares floors among instances.

pub mod backoff;
mod connection;
pub mod floor_value;
pub mod memory;
pub mod outage;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{LagConfig, SessionStoreConfig, SessionStoreKind};
use crate::lsn::Position;

pub use self::redis::RedisStore;
pub use memory::MemoryStore;

/// A boxed store operation (the trait is used as `dyn SessionStore`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store operation failed; the caller routes as if the floor were unknown.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("session store timed out")]
    Timeout,
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session store holds a value that is not a floor")]
    Corrupt,
    /// Not tried: the store is backing off after errors, or recovering from an outage.
    #[error("session store not used now: {0}")]
    Refused(&'static str),
}

impl StoreError {
    /// Short label for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Corrupt => "corrupt",
            StoreError::Refused(_) => "refused",
        }
    }
}

/// A store's health, for `/status` and `causeway_session_store_up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreHealth {
    pub kind: &'static str,
    /// Connected and the last call succeeded.
    pub up: bool,
    /// Back after an outage: stored floors are not trusted yet (reads go to the primary).
    pub recovering: bool,
    pub consecutive_failures: u32,
    /// Floors that failed to store and wait to be stored again.
    pub pending_floors: usize,
    pub last_error: Option<String>,
}

/// Shared session floors. Implementations enforce `session_store.timeout` themselves.
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// The floor stored for `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Position>>;

    /// Raise the floor of `key` to at least `floor` (an atomic max) and restart its TTL.
    /// Returns the floor now stored.
    fn advance<'a>(&'a self, key: &'a str, floor: Position) -> StoreFuture<'a, Position>;

    /// Whether the store works now.
    fn health(&self) -> StoreHealth;
}

/// The store `config` asks for; background work stops with `stop`. `lag` bounds how far
/// behind a replica in the pool can be, which is how long floors lost in a Redis outage
/// can matter.
pub fn open(
    config: &SessionStoreConfig,
    lag: &LagConfig,
    stop: CancellationToken,
) -> Result<Arc<dyn SessionStore>, String> {
    Ok(match config.kind {
        SessionStoreKind::Memory => MemoryStore::open(config.session_ttl, stop),
        SessionStoreKind::Redis => Arc::new(RedisStore::new(config, lost_floor_window(lag), stop)?),
    })
}

/// How long a floor that did not reach the store can matter: after this, every replica
/// still in any instance's pool has replayed what it covered (`lag.max_seconds` + a poll
/// interval + a margin). Stored floors are distrusted this long after an outage, and a
/// request whose floor could not be stored waits at most this long for the replicas.
pub fn lost_floor_window(lag: &LagConfig) -> Duration {
    lag.max_seconds
        .saturating_add(lag.poll_interval)
        .saturating_add(LOST_FLOOR_MARGIN)
}

/// Added to the eviction lag bound to get [`lost_floor_window`].
const LOST_FLOOR_MARGIN: Duration = Duration::from_secs(1);
