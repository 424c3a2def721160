//! Per-database traffic totals for `SHOW STATS` (PgBouncer's columns): transactions,
//! requests, bytes from and to clients, and the time spent in them and waiting for a
//! server connection. Cheap on the request path: a session counts in plain integers
//! ([`SessionStats`]) and adds them to the shared atomics ([`DbStats`]) once per
//! transaction and when it ends; the per-database handle is looked up once per session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The shared totals of one database since Causeway started.
#[derive(Debug, Default)]
pub struct DbStats {
    xacts: AtomicU64,
    queries: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    xact_us: AtomicU64,
    query_us: AtomicU64,
    wait_us: AtomicU64,
}

/// A copy of one database's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Transactions ended (a request outside a transaction block counts as one).
    pub xacts: u64,
    /// Requests answered by a server (each simple Query, each extended batch up to Sync).
    pub queries: u64,
    /// Bytes read from clients.
    pub received: u64,
    /// Bytes written to clients.
    pub sent: u64,
    /// Microseconds from a transaction's first request to its end.
    pub xact_us: u64,
    /// Microseconds from each request to its ReadyForQuery.
    pub query_us: u64,
    /// Microseconds clients waited for a server connection (PAUSE included).
    pub wait_us: u64,
}

impl DbStats {
    /// A copy of the totals now.
    pub fn totals(&self) -> Totals {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            xacts: get(&self.xacts),
            queries: get(&self.queries),
            received: get(&self.received),
            sent: get(&self.sent),
            xact_us: get(&self.xact_us),
            query_us: get(&self.query_us),
            wait_us: get(&self.wait_us),
        }
    }
}

/// Every database's totals, and when counting began. Shared through
/// [`super::ConsoleState`].
#[derive(Debug)]
pub struct StatsRegistry {
    started: Instant,
    databases: Mutex<HashMap<String, Arc<DbStats>>>,
}

impl Default for StatsRegistry {
    fn default() -> Self {
        StatsRegistry {
            started: Instant::now(),
            databases: Mutex::default(),
        }
    }
}

impl StatsRegistry {
    /// The totals of `database`, created at zero on first use (once per session).
    pub fn database(&self, database: &str) -> Arc<DbStats> {
        let mut map = self
            .databases
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(stats) = map.get(database) {
            return Arc::clone(stats);
        }
        let stats = Arc::new(DbStats::default());
        map.insert(database.to_owned(), Arc::clone(&stats));
        stats
    }

    /// A client of `database` waited `waited` for a server connection (called only when
    /// a checkout had to wait, so the lookup is off the usual path).
    pub fn waited(&self, database: &str, waited: Duration) {
        if waited.is_zero() {
            return;
        }
        self.database(database)
            .wait_us
            .fetch_add(micros(waited), Ordering::Relaxed);
    }

    /// Every database's totals, sorted by name.
    pub fn all(&self) -> Vec<(String, Totals)> {
        let map = self
            .databases
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = map.iter().map(|(k, v)| (k.clone(), v.totals())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Time since counting began.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// One session's counts not yet added to its database's totals.
#[derive(Debug)]
pub struct SessionStats {
    db: Arc<DbStats>,
    /// Bytes read from the client (added by the session's read path).
    pub received: u64,
    /// Bytes written to the client (added by the session's write paths).
    pub sent: u64,
    queries: u64,
    query_us: u64,
    xacts: u64,
    xact_us: u64,
    /// When the open transaction's first request started.
    xact_start: Option<Instant>,
    /// The client buffer's and the output's lengths before the session's latest event.
    marks: (usize, usize),
}

impl SessionStats {
    /// Counts for a session of the database `db` stands for.
    pub fn new(db: Arc<DbStats>) -> SessionStats {
        SessionStats {
            db,
            received: 0,
            sent: 0,
            queries: 0,
            query_us: 0,
            xacts: 0,
            xact_us: 0,
            xact_start: None,
            marks: (0, 0),
        }
    }

    /// Notes the lengths of the client buffer and the output before an event that only
    /// reads into the one or writes from the other.
    pub fn mark(&mut self, unread: usize, unsent: usize) {
        self.marks = (unread, unsent);
    }

    /// The event read into the client buffer, which is `unread` bytes long now.
    pub fn read_to(&mut self, unread: usize) {
        self.received += unread.saturating_sub(self.marks.0) as u64;
    }

    /// The event wrote from the output, which is `unsent` bytes long now.
    pub fn wrote_to(&mut self, unsent: usize) {
        self.sent += self.marks.1.saturating_sub(unsent) as u64;
    }

    /// A request that started at `started` got its ReadyForQuery `took` later; `idle`: no
    /// transaction is open after it, so the transaction ended and the counts are added to
    /// the shared totals. No clock reads, and a request that is a transaction of its own
    /// (the usual case) computes no second duration.
    pub fn request(&mut self, started: Instant, took: Duration, idle: bool) {
        let took_us = micros(took);
        self.queries += 1;
        self.query_us += took_us;
        match (idle, self.xact_start) {
            (false, None) => self.xact_start = Some(started),
            (false, Some(_)) => {}
            (true, None) => {
                self.xacts += 1;
                self.xact_us += took_us;
                self.flush();
            }
            (true, Some(first)) => {
                self.xacts += 1;
                let end = started.checked_add(took).unwrap_or(started);
                self.xact_us += micros(end.saturating_duration_since(first));
                self.xact_start = None;
                self.flush();
            }
        }
    }

    /// Adds the counts to the shared totals and starts again from zero.
    pub fn flush(&mut self) {
        let db = &self.db;
        db.xacts
            .fetch_add(std::mem::take(&mut self.xacts), Ordering::Relaxed);
        db.queries
            .fetch_add(std::mem::take(&mut self.queries), Ordering::Relaxed);
        db.received
            .fetch_add(std::mem::take(&mut self.received), Ordering::Relaxed);
        db.sent
            .fetch_add(std::mem::take(&mut self.sent), Ordering::Relaxed);
        db.xact_us
            .fetch_add(std::mem::take(&mut self.xact_us), Ordering::Relaxed);
        db.query_us
            .fetch_add(std::mem::take(&mut self.query_us), Ordering::Relaxed);
    }
}

impl Drop for SessionStats {
    fn drop(&mut self) {
        self.flush();
    }
}

fn micros(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_adds_its_counts_at_each_transaction_end_and_when_it_ends() {
        let registry = StatsRegistry::default();
        let mut session = SessionStats::new(registry.database("app"));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // BEGIN, a statement: the transaction is open, nothing shared yet.
        session.mark(10, 100);
        session.read_to(40);
        session.wrote_to(100);
        session.request(ms(0), Duration::from_millis(1), false);
        session.request(ms(2), Duration::from_millis(2), false);
        assert_eq!(registry.database("app").totals(), Totals::default());
        // COMMIT ends it.
        session.sent += 50;
        session.request(ms(5), Duration::from_millis(1), true);
        let after_commit = registry.database("app").totals();
        assert_eq!(
            after_commit,
            Totals {
                xacts: 1,
                queries: 3,
                received: 30,
                sent: 50,
                xact_us: 6_000,
                query_us: 4_000,
                wait_us: 0,
            }
        );
        // A lone statement is a transaction of its own.
        session.request(ms(10), Duration::from_millis(3), true);
        session.sent += 7;
        drop(session);
        let totals = registry.database("app").totals();
        assert_eq!((totals.xacts, totals.queries), (2, 4));
        assert_eq!((totals.xact_us, totals.query_us), (9_000, 7_000));
        assert_eq!(totals.sent, 57, "counts left at the end are added too");
    }

    #[test]
    fn waits_are_added_per_database_and_listed_by_name() {
        let registry = StatsRegistry::default();
        registry.waited("zeta", Duration::from_millis(3));
        registry.waited("alpha", Duration::ZERO);
        registry.waited("alpha", Duration::from_micros(5));
        let all = registry.all();
        let names: Vec<_> = all.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(all[0].1.wait_us, 5);
        assert_eq!(all[1].1.wait_us, 3_000);
    }
}
