//! The Redis session store (DESIGN.md §3): one key per session holding its floor, raised by
//! an atomic max in one round trip (a Lua script) and read with one GET. Every call has a
//! time limit; after an error the store backs off (calls fail at once and route to the
//! primary) and a background task reconnects and re-stores floors that could not be stored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backoff::Backoff;
use super::connection::{connect, server_id, Conn, CONNECT_TIMEOUT};
use super::floor_value::{self, RAISE_SCRIPT};
use super::outage::Outage;
use super::{SessionStore, StoreError, StoreFuture, StoreHealth};
use crate::config::{SessionStoreConfig, StoreEndpoint};
use crate::lsn::Position;

/// Prefix of every key Causeway writes.
pub const KEY_PREFIX: &str = "causeway:floor:";
/// How often the background task looks for work, and checks the server's identity, when
/// nothing wakes it.
const MAINTAIN_EVERY: Duration = Duration::from_millis(250);
/// After this many consecutive failures the connection is rebuilt (a Sentinel failover
/// leaves the old primary answering READONLY; a cluster may have moved).
const REBUILD_AFTER: u32 = 3;
/// Most floors kept for re-storing while the store is down.
const MAX_PENDING: usize = 100_000;
/// Floors re-stored per round of the background task.
const FLUSH_BATCH: usize = 256;

/// Session floors in Redis, shared by every Causeway instance that uses the same Redis.
#[derive(Debug)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: StoreEndpoint,
    /// `[session_store] ca_file`, for `rediss://`.
    tls_roots: Option<redis::TlsCertificates>,
    ttl: Duration,
    timeout: Duration,
    /// Whether stored floors can be trusted after a failure.
    outage: Outage,
    /// The live connection, once the background task has made one.
    conn: watch::Sender<Option<Conn>>,
    backoff: Backoff,
    /// Floors whose store failed, by key: merged into reads here and re-stored later.
    pending: DashMap<String, (Position, Instant)>,
    script: redis::Script,
    last_error: Mutex<Option<String>>,
    wake: Notify,
    started: AtomicBool,
    stop: CancellationToken,
}

impl RedisStore {
    /// A store for `config` (already validated); connects in the background, so Causeway
    /// starts (reading from the primary) while Redis is down. After an outage, stored
    /// floors are not trusted for `grace` (floors may have been lost with a restart; after
    /// `grace` every replica still in the pool has replayed what they covered). Its task
    /// ends with `stop`.
    pub fn new(
        config: &SessionStoreConfig,
        grace: Duration,
        stop: CancellationToken,
    ) -> Result<Self, String> {
        let endpoint = StoreEndpoint::parse(config)?;
        let tls_roots = super::connection::tls_roots(config.ca_file.as_deref())?;
        let store = RedisStore {
            inner: Arc::new(Inner {
                endpoint,
                tls_roots,
                ttl: config.session_ttl,
                timeout: config.timeout,
                outage: Outage::new(grace),
                conn: watch::Sender::new(None),
                backoff: Backoff::default(),
                pending: DashMap::new(),
                script: redis::Script::new(RAISE_SCRIPT),
                last_error: Mutex::new(None),
                wake: Notify::new(),
                started: AtomicBool::new(false),
                stop,
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            store.ensure_started();
        }
        Ok(store)
    }

    /// Start the background task once (on the first call when built outside a runtime).
    fn ensure_started(&self) {
        // A plain load first: every store call passes here.
        if !self.inner.started.load(Ordering::Acquire)
            && !self.inner.started.swap(true, Ordering::AcqRel)
        {
            let weak = Arc::downgrade(&self.inner);
            let stop = self.inner.stop.clone();
            tokio::spawn(maintain(weak, stop).instrument(tracing::info_span!("session-store")));
        }
    }

    async fn get_floor(&self, key: &str) -> Result<Option<Position>, StoreError> {
        let inner = &self.inner;
        let mut conn = inner.usable_connection().await?;
        inner.floors_trusted()?;
        let full_key = format!("{KEY_PREFIX}{key}");
        let reply: Option<Vec<u8>> = inner
            .call(redis::cmd("GET").arg(&full_key).query_async(&mut conn))
            .await?;
        // Again: this may have been the first answer after a broken connection, from a
        // server that restarted empty, which only its identity can rule out.
        inner.floors_trusted()?;
        let stored = match reply {
            None => None,
            Some(bytes) => match floor_value::decode(&bytes) {
                Some(floor) => Some(floor),
                None => return Err(StoreError::Corrupt),
            },
        };
        Ok(max_floor(stored, inner.pending_floor(key)))
    }

    async fn raise_floor(&self, key: &str, floor: Position) -> Result<Position, StoreError> {
        let inner = &self.inner;
        let mut result = match inner.usable_connection().await {
            Ok(mut conn) => inner.raise_on(&mut conn, key, floor).await,
            Err(e) => Err(e),
        };
        if matches!(result, Err(StoreError::Unavailable(_))) {
            // The connection broke (a server-side close, a network blip) and reconnects by
            // itself: one more try, as a request whose floor is not stored must wait until
            // the replicas have replayed it.
            if let Some(mut conn) = inner.current() {
                result = inner.raise_on(&mut conn, key, floor).await;
            }
        }
        match result {
            Ok(stored) => {
                inner
                    .pending
                    .remove_if(key, |_, (pending, _)| *pending <= stored);
                Ok(stored)
            }
            Err(e) => {
                inner.keep_pending(key, floor);
                Err(e)
            }
        }
    }
}

impl Inner {
    /// A connection, unless the store is backing off. While the background task is
    /// connecting (at startup, or after a rebuild), waits for it up to the time limit.
    async fn usable_connection(&self) -> Result<Conn, StoreError> {
        if !self.backoff.permits(Instant::now()) {
            return Err(StoreError::Refused("backing off after errors"));
        }
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        self.wake.notify_one();
        let mut connected = self.conn.subscribe();
        let waited = tokio::time::timeout(self.timeout, async {
            connected
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|conn| conn.clone())
        })
        .await;
        match waited {
            Ok(Some(conn)) => Ok(conn),
            _ => Err(StoreError::Unavailable(
                self.describe_last_error("not connected"),
            )),
        }
    }

    /// Refuses while stored floors are distrusted after an outage (see [`Outage`]).
    fn floors_trusted(&self) -> Result<(), StoreError> {
        if self.outage.distrusted(Instant::now()) {
            return Err(StoreError::Refused(
                "recovering from an outage: floors stored before it may be lost",
            ));
        }
        Ok(())
    }

    fn current(&self) -> Option<Conn> {
        self.conn.borrow().clone()
    }

    /// Run one store command under the time limit, recording the outcome: a timeout or a
    /// broken connection backs the store off (a break may also have lost floors, see
    /// [`Outage`]); an error about one key's value fails only this call.
    async fn call<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(value)) => {
                if self.backoff.failures() > 0 {
                    self.backoff.succeeded();
                    self.outage.recovered(Instant::now());
                    self.wake.notify_one();
                }
                Ok(value)
            }
            Ok(Err(e)) if about_the_value(&e) => Err(StoreError::Unavailable(e.to_string())),
            Ok(Err(e)) => {
                let message = e.to_string();
                self.outage.connection_broke();
                self.failed(&message);
                Err(StoreError::Unavailable(message))
            }
            Err(_) => {
                self.failed("timed out");
                Err(StoreError::Timeout)
            }
        }
    }

    async fn raise_on(
        &self,
        conn: &mut Conn,
        key: &str,
        floor: Position,
    ) -> Result<Position, StoreError> {
        let full_key = format!("{KEY_PREFIX}{key}");
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = self.script.key(full_key);
        invocation.arg(floor_value::encode(floor)).arg(ttl_ms);
        let reply: Vec<u8> = self.call(invocation.invoke_async(conn)).await?;
        // The script returns what is stored now: at least `floor`.
        Ok(floor_value::decode(&reply).map_or(floor, |stored| stored.max(floor)))
    }

    fn failed(&self, message: &str) {
        self.backoff.failed(Instant::now());
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_owned());
        if self.backoff.failures() >= REBUILD_AFTER {
            self.conn.send_replace(None);
            self.wake.notify_one();
        }
    }

    fn describe_last_error(&self, state: &str) -> String {
        match &*self.last_error.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => format!("{state}: {e}"),
            None => state.to_owned(),
        }
    }

    fn pending_floor(&self, key: &str) -> Option<Position> {
        if self.pending.is_empty() {
            return None;
        }
        let entry = self.pending.get(key)?;
        (entry.1.elapsed() < self.ttl).then_some(entry.0)
    }

    /// Remember a floor that could not be stored, to merge into reads and store later.
    fn keep_pending(&self, key: &str, floor: Position) {
        if let Some(mut entry) = self.pending.get_mut(key) {
            entry.0 = entry.0.max(floor);
            entry.1 = Instant::now();
        } else if self.pending.len() < MAX_PENDING {
            self.pending.insert(key.to_owned(), (floor, Instant::now()));
        }
    }

    /// One round of background work: connect if needed, re-store pending floors.
    async fn maintain_once(&self) {
        let now = Instant::now();
        self.pending
            .retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
        if !self.backoff.permits(now) {
            return;
        }
        let Some(mut conn) = self.current() else {
            match tokio::time::timeout(
                CONNECT_TIMEOUT,
                connect(&self.endpoint, self.tls_roots.as_ref()),
            )
            .await
            {
                Ok(Ok(mut conn)) => {
                    if self.identify(&mut conn).await {
                        self.conn.send_replace(Some(conn));
                        tracing::info!(target = ?self.endpoint, "session store connected");
                    }
                }
                Ok(Err(e)) => self.connect_failed(&e.to_string()),
                Err(_) => self.connect_failed("connecting timed out"),
            }
            return;
        };
        // After a noticed break, and every round anyway: a connection can also be
        // re-established without a failed call (a RESP3 disconnect push), and the server
        // behind it may have restarted empty.
        if !self.identify(&mut conn).await {
            return;
        }
        let batch: Vec<(String, Position)> = self
            .pending
            .iter()
            .take(FLUSH_BATCH)
            .map(|e| (e.key().clone(), e.value().0))
            .collect();
        for (key, floor) in batch {
            match self.raise_on(&mut conn, &key, floor).await {
                Ok(stored) => {
                    self.pending.remove_if(&key, |_, (p, _)| *p <= stored);
                }
                Err(_) => return,
            }
        }
    }

    /// Tell the outage bookkeeping which server answers (its `run_id`; unknown for a
    /// cluster, whose nodes each have one). Returns false if the connection is unusable
    /// (broken, or to a replica): it is then dropped, and the next round connects again
    /// (through the Sentinels, if configured).
    async fn identify(&self, conn: &mut Conn) -> bool {
        match server_id(conn).await {
            Ok(id) => {
                self.outage.identified(id, Instant::now());
                true
            }
            // As for any other call: the next success must not be trusted blindly.
            Err(message) => {
                self.outage.connection_broke();
                self.failed(&message);
                self.conn.send_replace(None);
                false
            }
        }
    }

    fn connect_failed(&self, message: &str) {
        tracing::warn!(target = ?self.endpoint, error = message, "session store connect failed");
        self.outage.connection_broke();
        self.backoff.failed(Instant::now());
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_owned());
    }
}

/// The background task `session-store`: reconnects with backoff and re-stores floors that
/// failed to store. Ends when the store is dropped or `stop` fires.
async fn maintain(inner: Weak<Inner>, stop: CancellationToken) {
    loop {
        let Some(store) = inner.upgrade() else { return };
        tokio::select! {
            () = stop.cancelled() => return,
            () = store.wake.notified() => {}
            () = tokio::time::sleep(MAINTAIN_EVERY) => {}
        }
        store.maintain_once().await;
    }
}

/// Errors about one key's value (a wrong type, a script error) say nothing about the
/// store's health: they fail the call without backing off.
fn about_the_value(error: &redis::RedisError) -> bool {
    matches!(
        error.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
            | redis::ErrorKind::UnexpectedReturnType
    )
}

fn max_floor(a: Option<Position>, b: Option<Position>) -> Option<Position> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl SessionStore for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Position>> {
        self.ensure_started();
        Box::pin(self.get_floor(key))
    }

    fn advance<'a>(&'a self, key: &'a str, floor: Position) -> StoreFuture<'a, Position> {
        self.ensure_started();
        Box::pin(self.raise_floor(key, floor))
    }

    fn health(&self) -> StoreHealth {
        let failures = self.inner.backoff.failures();
        let connected = self.inner.current().is_some();
        StoreHealth {
            kind: "redis",
            up: connected && failures == 0,
            recovering: self.inner.outage.distrusted(Instant::now()),
            consecutive_failures: failures,
            pending_floors: self.inner.pending.len(),
            last_error: self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
