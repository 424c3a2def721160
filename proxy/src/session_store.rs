//! Where shared session floors live (DESIGN.md §3): a floor per session key, raised by an
//! atomic max, forgotten after `session_ttl` without activity. Connection-scoped sessions
//! keep their floor in the session itself and never touch a store. `memory` is the
//! embedded store (one Causeway instance); a Redis store implements the same trait.

pub mod memory;

use std::future::Future;
use std::pin::Pin;

use crate::lsn::Position;

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
}

impl StoreError {
    /// Label for `causeway_session_store_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Unavailable(_) => "unavailable",
        }
    }
}

/// Shared session floors.
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// The floor stored for `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Position>>;

    /// Raise the floor of `key` to at least `floor` (an atomic max) and restart its TTL.
    /// Returns the floor now stored.
    fn advance<'a>(&'a self, key: &'a str, floor: Position) -> StoreFuture<'a, Position>;
}
