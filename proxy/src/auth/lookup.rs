//! `[auth] auth_user` + `auth_query`: the secrets of users not listed in `[[users]]`,
//! looked up on the primary, or while it cannot be reached on an admitted replica
//! ([`nodes`], [`query`]), and cached here.
//!
//! A found secret is kept for `auth_cache_ttl`; a user the query does not know (or who has
//! no password) is remembered for [`MISSING_TTL`], so a flood of logins under random names
//! costs the primary one query per name and few seconds, not one per attempt. Concurrent
//! lookups of one name share one query. The cache holds at most [`MAX_ENTRIES`] names; a
//! full cache drops expired entries, then the ones closest to expiry. At most
//! [`MAX_CONCURRENT`] lookups run at once, and names longer than PostgreSQL allows are
//! unknown without a lookup. Failed lookups (the
//! primary down) are not cached: the next login tries again.

pub mod nodes;
pub mod query;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, Semaphore};

use super::secret::Secret;

/// How long a user the query does not know is remembered.
pub const MISSING_TTL: Duration = Duration::from_secs(5);
/// Most names the cache holds.
pub const MAX_ENTRIES: usize = 10_000;
/// Most lookups running on the primary at once (each is a login and a query there).
pub const MAX_CONCURRENT: usize = 8;
/// Longest user name PostgreSQL accepts (NAMEDATALEN - 1): longer names cannot exist, so
/// they are not looked up (or cached).
pub const MAX_NAME_BYTES: usize = 63;

/// Why a lookup could not say whether the user exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth_query failed: {0}")]
pub struct LookupError(pub String);

/// What a lookup found: the user's secret, or nothing (unknown user, or no password).
pub type Found = Option<Arc<Secret>>;

/// One lookup's result, shared by every caller waiting for it.
type InFlightCell = Arc<OnceCell<Result<Found, LookupError>>>;

/// The cache of looked-up secrets. A cheap clonable handle.
#[derive(Debug, Clone)]
pub struct SecretCache {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<String, Entry>>,
    /// Lookups in progress, by name: later callers wait for the first one's result.
    in_flight: Mutex<HashMap<String, InFlightCell>>,
    /// Bounds the lookups running at once, so a flood of new names queues here instead
    /// of opening connections to the primary.
    running: Semaphore,
}

#[derive(Debug, Clone)]
struct Entry {
    found: Found,
    expires: Instant,
}

impl SecretCache {
    /// An empty cache keeping found secrets for `ttl`.
    pub fn new(ttl: Duration) -> SecretCache {
        SecretCache::with_capacity(ttl, MAX_ENTRIES)
    }

    fn with_capacity(ttl: Duration, max_entries: usize) -> SecretCache {
        SecretCache {
            shared: Arc::new(Shared {
                ttl,
                max_entries: max_entries.max(1),
                entries: Mutex::new(HashMap::new()),
                in_flight: Mutex::new(HashMap::new()),
                running: Semaphore::new(MAX_CONCURRENT),
            }),
        }
    }

    /// The secret of `user`: from the cache while fresh, else from `fetch` (which returns
    /// the stored password text, or `None` for an unknown user). Concurrent calls for one
    /// name run `fetch` once.
    ///
    /// # Errors
    /// The lookup's failure, or a secret the query returned that cannot be parsed.
    pub async fn get<F, Fut>(&self, user: &str, fetch: F) -> Result<Found, LookupError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<String>, LookupError>>,
    {
        if user.len() > MAX_NAME_BYTES {
            return Ok(None);
        }
        if let Some(found) = self.cached(user, Instant::now()) {
            return Ok(found);
        }
        let cell = {
            let Ok(mut in_flight) = self.shared.in_flight.lock() else {
                return Err(LookupError("the lookup table is unusable".into()));
            };
            Arc::clone(in_flight.entry(user.to_owned()).or_default())
        };
        // Forgets the name's entry once nobody waits on it, even if this caller is dropped
        // (its client went away) mid-lookup.
        let _guard = InFlight {
            shared: &self.shared,
            user,
            cell: Arc::clone(&cell),
        };
        cell.get_or_init(|| async {
            let Ok(_permit) = self.shared.running.acquire().await else {
                return Err(LookupError("the lookup limiter is closed".into()));
            };
            let result = fetch().await.and_then(|text| match text {
                None => Ok(None),
                Some(text) => Secret::parse(&text)
                    .map(|s| Some(Arc::new(s)))
                    .map_err(|e| LookupError(format!("the secret it returned is unusable: {e}"))),
            });
            if let Ok(found) = &result {
                self.insert(user, found.clone(), Instant::now());
            }
            result
        })
        .await
        .clone()
    }

    fn cached(&self, user: &str, now: Instant) -> Option<Found> {
        let entries = self.shared.entries.lock().ok()?;
        entries
            .get(user)
            .filter(|entry| entry.expires > now)
            .map(|entry| entry.found.clone())
    }

    fn insert(&self, user: &str, found: Found, now: Instant) {
        let ttl = if found.is_some() {
            self.shared.ttl
        } else {
            MISSING_TTL.min(self.shared.ttl)
        };
        let Ok(mut entries) = self.shared.entries.lock() else {
            return;
        };
        if entries.len() >= self.shared.max_entries && !entries.contains_key(user) {
            entries.retain(|_, entry| entry.expires > now);
            while entries.len() >= self.shared.max_entries {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires)
                    .map(|(name, _)| name.clone());
                match oldest {
                    Some(name) => entries.remove(&name),
                    None => break,
                };
            }
        }
        entries.insert(
            user.to_owned(),
            Entry {
                found,
                expires: now + ttl,
            },
        );
    }

    /// Names cached now (for tests and status).
    pub fn len(&self) -> usize {
        self.shared.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One caller's share of an in-flight lookup.
struct InFlight<'a> {
    shared: &'a Shared,
    user: &'a str,
    cell: InFlightCell,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.shared.in_flight.lock() {
            // The map's reference, this caller's two (cell and the caller's copy): nobody else.
            let alone = Arc::strong_count(&self.cell) <= 3;
            let ours = in_flight
                .get(self.user)
                .is_some_and(|cell| Arc::ptr_eq(cell, &self.cell));
            if ours && (alone || self.cell.initialized()) {
                in_flight.remove(self.user);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting(
        calls: &Arc<AtomicUsize>,
        answer: Result<Option<String>, LookupError>,
    ) -> impl FnOnce() -> std::future::Ready<Result<Option<String>, LookupError>> {
        let calls = Arc::clone(calls);
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(answer)
        }
    }

    #[tokio::test]
    async fn found_and_missing_users_are_cached_failures_are_not() {
        let cache = SecretCache::new(Duration::from_secs(60));
        let calls = Arc::new(AtomicUsize::new(0));
        let found = cache
            .get(
                "app",
                counting(
                    &calls,
                    Ok(Some("md56a422f785c9e20873908ce25d1736ae2".into())),
                ),
            )
            .await
            .unwrap();
        assert!(matches!(found.as_deref(), Some(Secret::Md5(_))));
        let again = cache.get("app", counting(&calls, Ok(None))).await.unwrap();
        assert!(again.is_some());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(cache
            .get("ghost", counting(&calls, Ok(None)))
            .await
            .unwrap()
            .is_none());
        assert!(cache
            .get("ghost", counting(&calls, Ok(None)))
            .await
            .unwrap()
            .is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let failure = Err(LookupError("primary down".into()));
        assert!(cache.get("bob", counting(&calls, failure)).await.is_err());
        assert!(cache
            .get("bob", counting(&calls, Ok(None)))
            .await
            .unwrap()
            .is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let bad = Ok(Some("SCRAM-SHA-256$broken".into()));
        let error = cache.get("carol", counting(&calls, bad)).await.unwrap_err();
        assert!(!error.to_string().contains("broken"), "{error}");
    }

    #[tokio::test]
    async fn lookups_of_many_names_run_a_few_at_a_time() {
        let cache = SecretCache::new(Duration::from_secs(60));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..(MAX_CONCURRENT * 3) {
            let cache = cache.clone();
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            tasks.push(tokio::spawn(async move {
                cache
                    .get(&format!("user{i}"), || async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(None)
                    })
                    .await
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap().unwrap().is_none());
        }
        assert_eq!(most.load(Ordering::SeqCst), MAX_CONCURRENT);
        assert_eq!(cache.len(), MAX_CONCURRENT * 3);
    }

    #[tokio::test]
    async fn names_longer_than_postgres_allows_are_not_looked_up() {
        let cache = SecretCache::new(Duration::from_secs(60));
        let calls = Arc::new(AtomicUsize::new(0));
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let found = cache
            .get(&long, counting(&calls, Ok(Some("pw".into()))))
            .await;
        assert!(found.unwrap().is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn entries_expire() {
        let cache = SecretCache::new(Duration::from_millis(1));
        let calls = Arc::new(AtomicUsize::new(0));
        cache
            .get("app", counting(&calls, Ok(Some("pw".into()))))
            .await
            .unwrap();
        assert!(cache
            .cached("app", Instant::now() + Duration::from_millis(5))
            .is_none());
        let cache = SecretCache::new(Duration::from_secs(60));
        cache.insert("ghost", None, Instant::now());
        assert!(cache.cached("ghost", Instant::now()).is_some());
        assert!(cache
            .cached(
                "ghost",
                Instant::now() + MISSING_TTL + Duration::from_millis(1)
            )
            .is_none());
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_name_share_one_query() {
        let cache = SecretCache::new(Duration::from_secs(60));
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let cache = cache.clone();
            let calls = Arc::clone(&calls);
            let gate = Arc::clone(&gate);
            tasks.push(tokio::spawn(async move {
                cache
                    .get("app", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Ok(Some("pw".to_owned()))
                    })
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.notify_one();
        for task in tasks {
            assert!(task.await.unwrap().unwrap().is_some());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(cache.shared.in_flight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_abandoned_lookup_leaves_nothing_behind() {
        let cache = SecretCache::new(Duration::from_secs(60));
        let lookup = cache.get("app", std::future::pending);
        assert!(tokio::time::timeout(Duration::from_millis(10), lookup)
            .await
            .is_err());
        assert!(cache.shared.in_flight.lock().unwrap().is_empty());
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = SecretCache::with_capacity(Duration::from_secs(60), 3);
        let now = Instant::now();
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            cache.insert(name, None, now + Duration::from_millis(i as u64));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.cached("e", now).is_some());
        assert!(cache.cached("a", now).is_none());
    }
}
