//! Read/write classification of SQL text for routing (DESIGN.md §2), with PostgreSQL's own
//! parser (libpg_query through the `pg_query` crate). Pure: no I/O.
//!
//! [`Classifier::classify`] answers where a string may run ([`Access`]), why
//! ([`AccessReason`]), what its first statement is ([`ParsedKind`]), and which tables and
//! functions it names. When in doubt the answer is [`Access::Write`]: the primary can run anything.
//!
//! Read-only means: SELECT / VALUES / TABLE / SHOW, EXPLAIN (unless ANALYZE of a statement
//! that writes), `COPY ... TO STDOUT`, WITH queries without data-modifying parts, FETCH,
//! CLOSE, SAVEPOINT/RELEASE/COMMIT/ROLLBACK, `BEGIN READ ONLY`, and PREPARE / non-holdable
//! DECLARE of a read-only query; with no locking clause anywhere, no `SELECT INTO`, and no
//! call to a function that can write: PostgreSQL's side-effecting built-ins (nextval,
//! advisory locks, set_config, large objects, pg_notify, txid_current, WAL and slot
//! functions, ...), `[functions] writes`, and user functions that are volatile in
//! `pg_proc` ([`VOLATILE_FUNCTIONS_SQL`]) unless listed in `[functions] read_only`
//! ([`FunctionPolicy`]). A string of several statements writes if any of them does.
//!
//! Comments (hints included) and string literals never change the answer: they are
//! tokens to the parser. Text that does not parse is a write ([`AccessReason::Unparseable`]).
//!
//! Known limits, all outside what a parser can see: a view, rule or `SELECT`-able function
//! that writes internally (mark such functions volatile, or list them in
//! `[functions] writes`); functions reached through operators, type input functions or
//! attribute notation (`t.fn`); a STABLE function that calls a volatile one. A SELECT from
//! a temporary table is read-only by syntax, yet the table exists only in the session
//! that created it: creating it pins the client to its primary backend (DESIGN.md §2), so
//! no special case is needed here.
//!
//! Results are cached ([`Classifier::new`] takes a byte budget) under the text with its
//! literals normalised, so statements that differ only in their values share an entry
//! (`key`: which texts are normalised, and why a literal cannot change a result), or
//! under the exact text; they also serve protocol-level Parse texts.

mod analyze;
mod cache;
mod deep;
mod key;
mod policy;
mod types;
mod walk;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

pub use policy::{is_valid_function_name, FunctionPolicy};
pub use types::{Access, AccessReason, Classification, ParsedKind};

use cache::{Cache, Key, Lookup};

/// A key buffer larger than this is not kept for the next statement.
const KEY_BUFFER_KEEP: usize = 64 * 1024;

thread_local! {
    /// Where [`key::key`] writes normalised keys, reused so a lookup does not allocate.
    static KEY_BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Lists the volatile user-defined functions on the primary, one `schema.name` per row
/// (quoted where needed), for [`FunctionPolicy::with_volatile`]. Run it periodically
/// (functions come and go with migrations).
pub const VOLATILE_FUNCTIONS_SQL: &str =
    "SELECT DISTINCT quote_ident(n.nspname) || '.' || quote_ident(p.proname) \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE p.provolatile = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%'";

/// A shared, cached classifier: cheap to clone, safe to use from any thread.
#[derive(Clone)]
pub struct Classifier {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Cache,
    policy: RwLock<Arc<FunctionPolicy>>,
    /// The current policy's generation, readable without the lock.
    generation: AtomicU64,
}

impl Classifier {
    /// A classifier whose cache holds at most `cache_bytes` bytes of statement text and
    /// results (0 disables caching). Statements larger than 1/16 of that are classified
    /// but not cached. The function policy starts empty ([`Classifier::set_functions`]).
    pub fn new(cache_bytes: usize) -> Classifier {
        let policy = FunctionPolicy::default();
        let inner = Inner {
            cache: Cache::new(cache_bytes),
            generation: AtomicU64::new(policy.generation()),
            policy: RwLock::new(Arc::new(policy)),
        };
        Classifier {
            inner: Arc::new(inner),
        }
    }

    /// Replaces the function policy. Cached results that depend on it are recomputed (from
    /// cached facts, without parsing again) when next asked for. A policy that lists the
    /// same names as the current one changes nothing, so refreshing from `pg_proc` is
    /// cheap when nothing changed.
    pub fn set_functions(&self, policy: FunctionPolicy) {
        let mut current = self
            .inner
            .policy
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current.same_names(&policy) {
            return;
        }
        let generation = policy.generation();
        *current = Arc::new(policy);
        self.inner.generation.store(generation, Ordering::Release);
    }

    /// Classifies a prepared statement's text through `memo`, which keeps the result while
    /// the function policy stays the same: a statement bound again needs no key, hash or
    /// cache lookup. (Such reuse is not counted among the cache's hits.)
    pub fn classify_memo(&self, sql: &str, memo: &Memo) -> Arc<Classification> {
        let generation = self.inner.generation.load(Ordering::Acquire);
        let mut memo = memo.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((kept, class)) = memo.as_ref() {
            if *kept == generation {
                return Arc::clone(class);
            }
        }
        let class = self.classify(sql);
        *memo = Some((generation, Arc::clone(&class)));
        class
    }

    /// The current function policy.
    pub fn functions(&self) -> Arc<FunctionPolicy> {
        Arc::clone(
            &self
                .inner
                .policy
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Classifies `sql` (one or more statements; also a protocol Parse text).
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        let keyed = KEY_BUFFER.try_with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut buffer) => {
                let result = self.classify_keyed(sql, &mut buffer);
                if buffer.capacity() > KEY_BUFFER_KEEP {
                    *buffer = String::new();
                }
                result
            }
            Err(_) => self.classify_keyed(sql, &mut String::new()),
        });
        // The thread is exiting and its buffer is gone.
        keyed.unwrap_or_else(|_| self.classify_keyed(sql, &mut String::new()))
    }

    /// Classifies `sql`, writing its normalised key (if it has one) to `buffer`.
    fn classify_keyed(&self, sql: &str, buffer: &mut String) -> Arc<Classification> {
        let key = match key::key(sql, buffer) {
            Some(text) => Key {
                text,
                normalised: true,
            },
            None => Key {
                text: sql,
                normalised: false,
            },
        };
        let cache = &self.inner.cache;
        let hash = cache.hash(key);
        let generation = self.inner.generation.load(Ordering::Acquire);
        match cache.get(hash, key, generation) {
            Lookup::Hit(result) => result,
            Lookup::Stale(old, recheck) => {
                let policy = self.functions();
                let result = recheck.apply(&old, &policy);
                cache.insert(
                    hash,
                    key,
                    Arc::clone(&result),
                    Some(recheck),
                    policy.generation(),
                );
                result
            }
            Lookup::Miss => {
                let analysis = analyze::analyze(sql);
                let policy = self.functions();
                let result = analysis.finish(&policy);
                cache.insert(
                    hash,
                    key,
                    Arc::clone(&result),
                    analysis.recheck,
                    policy.generation(),
                );
                result
            }
        }
    }

    /// Bytes accounted to the cache (always at most [`Classifier::cache_budget`]).
    pub fn cached_bytes(&self) -> usize {
        self.inner.cache.used()
    }

    /// Number of cached statements.
    pub fn cached_statements(&self) -> usize {
        self.inner.cache.len()
    }

    /// Classifications answered from the cache so far (including results recomputed from
    /// cached facts after [`Classifier::set_functions`], which do not parse again).
    pub fn cache_hits(&self) -> u64 {
        self.inner.cache.lookups().0
    }

    /// Classifications that had to parse the text (not cached, or evicted, or too large to
    /// cache).
    pub fn cache_misses(&self) -> u64 {
        self.inner.cache.lookups().1
    }

    /// The cache's byte budget (the `cache_bytes` given, rounded down to a multiple of 16).
    pub fn cache_budget(&self) -> usize {
        self.inner.cache.budget()
    }
}

/// A classification kept with a prepared statement, with the function policy generation
/// it was made under (see [`Classifier::classify_memo`]).
#[derive(Debug, Default)]
pub struct Memo(std::sync::Mutex<Option<(u64, Arc<Classification>)>>);

impl std::fmt::Debug for Classifier {
    /// A summary: the cached texts are not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("cached_statements", &self.cached_statements())
            .field("cached_bytes", &self.cached_bytes())
            .field("cache_budget", &self.cache_budget())
            .field("generation", &self.inner.generation.load(Ordering::Relaxed))
            .finish()
    }
}

/// Classifies `sql` without a cache, under `policy`.
pub fn classify_uncached(sql: &str, policy: &FunctionPolicy) -> Classification {
    Classification::clone(&analyze::analyze(sql).finish(policy))
}
