//! Bounded pools of server connections, one per (node, database, user). A connection is
//! handed out exclusively and comes back only when the caller knows it is idle and clean;
//! broken connections are dropped, never reused.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::conn::{BackendError, ServerConn};
use super::login::Login;
use super::NodeAddr;

/// ParameterStatus values a server reported at startup.
pub type ServerParams = Arc<Vec<(String, String)>>;

/// Identifies one pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub node: Arc<str>,
    pub database: String,
    pub user: String,
}

/// Pool limits and timeouts (from `[proxy]`).
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub checkout_timeout: Duration,
    pub idle_timeout: Duration,
    pub lifetime: Duration,
    pub max_message: usize,
    pub max_prepared: usize,
    /// Session-state fingerprint of a fresh connection (a client with no settings).
    pub empty_fingerprint: u64,
    /// `[server_tls]`: how connections to the nodes are encrypted.
    pub tls: crate::tls::ServerTls,
}

/// Why no server connection could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("timed out after {0:?} waiting for a server connection to {1}")]
    CheckoutTimeout(Duration, String),
    /// `PAUSE` on the admin console held the checkout longer than this.
    #[error("Causeway is paused (PAUSE on the admin console) and was not resumed within {0:?}")]
    Paused(Duration),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// One pool. Each connection in use holds a permit of a semaphore of `pool_size`; a new
/// connection is opened only when no idle one is left, so open connections never exceed it.
#[derive(Debug)]
pub struct Pool {
    pub key: PoolKey,
    node: NodeAddr,
    /// Who connections log in as: the first client's login, replaced when a later client
    /// of the user brings another credential (its secret changed, see [`Pool::refresh_login`]).
    login: Mutex<Login>,
    settings: PoolSettings,
    /// Most connections open at once (`settings.pool_size` at first; a reload resizes).
    size: AtomicUsize,
    permits: Arc<Semaphore>,
    // Locked only for push/pop, never across an await.
    // Boxed: a connection moves between the pool and a session on every transaction, and
    // moving a pointer is cheaper than moving the connection.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<ServerConn>>>,
    startup_params: Mutex<Option<ServerParams>>,
    /// Fingerprints of client startup parameters a server connection of this pool has
    /// accepted (see [`Pool::accepted_startup`]).
    accepted: Mutex<HashSet<u64>>,
    next_id: Arc<AtomicU64>,
    /// Clients waiting for a connection of this pool (the admin console's `cl_waiting`).
    waiters: super::waiters::Waiters,
    /// Its node was removed by a reload: no new connections, returned ones are closed.
    retired: std::sync::atomic::AtomicBool,
}

/// An idle server connection as the admin console lists it.
#[derive(Debug, Clone, Copy)]
pub struct IdleConn {
    /// The server's process id.
    pub pid: i32,
    pub created: Instant,
    pub last_used: Instant,
}

mod reconfigure;
mod retire;

/// How many accepted startup-parameter fingerprints a pool remembers before it starts
/// over (each is 8 bytes; clients of one application share one).
const MAX_ACCEPTED_STARTUPS: usize = 4096;

impl Pool {
    /// Hand out a connection: a healthy idle one, else a new one, waiting for capacity up to
    /// the checkout timeout.
    ///
    /// # Errors
    /// Timeout waiting for capacity, or the failure to open a new connection.
    pub async fn checkout(&self) -> Result<Box<ServerConn>, PoolError> {
        if self.is_retired() {
            return Err(self.retired_error());
        }
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => self.wait_for_permit().await?,
        };
        if let Some(mut conn) = self.pop_idle(Instant::now()) {
            conn.set_permit(permit);
            return Ok(conn);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Box::new(
            ServerConn::connect(id, &self.node, &self.login(), &self.settings, Some(permit))
                .await?,
        );
        tracing::debug!(node = %self.node.name, server.pid = conn.pid, "opened server connection");
        self.remember_params(&conn);
        Ok(conn)
    }

    /// The login new connections are made with.
    pub fn login(&self) -> Login {
        match self.login.lock() {
            Ok(login) => login.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The pool's own credential when it is the same as `credential`: sessions keep it
    /// instead of a copy each (issue 11: memory per idle client).
    pub fn same_credential(
        &self,
        credential: &Arc<super::Credential>,
    ) -> Option<Arc<super::Credential>> {
        let login = self
            .login
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        login
            .credential
            .same_as(credential)
            .then(|| login.credential.clone())
    }

    /// Logs new connections in with `login`'s credential from now on if it differs from
    /// the pool's (an `auth_query` user whose secret changed brings a new SCRAM key; the
    /// old one no longer logs in). A login without a credential never replaces one, nor
    /// does one from an older configuration generation (a session that began before a
    /// reload changed the password).
    pub fn refresh_login(&self, login: &Login) {
        if let Ok(mut current) = self.login.lock() {
            let newer = login.generation >= current.generation;
            if newer && login.credential.is_some() && !current.credential.same_as(&login.credential)
            {
                current.credential = Arc::clone(&login.credential);
                current.generation = login.generation;
            }
        }
    }

    /// An idle connection if one can be handed out at once (no waiting, no connecting).
    /// `now` is the caller's clock reading (one per request is enough).
    pub fn try_checkout(&self, now: Instant) -> Option<Box<ServerConn>> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let mut conn = self.pop_idle(now)?;
        conn.set_permit(permit);
        Some(conn)
    }

    async fn wait_for_permit(&self) -> Result<OwnedSemaphorePermit, PoolError> {
        let _waiting = self.waiters.enter();
        let timeout = self.settings.checkout_timeout;
        let timed_out = || PoolError::CheckoutTimeout(timeout, self.node.to_string());
        tokio::time::timeout(timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| timed_out())
    }

    /// Return an idle, clean connection for reuse (or close it if it is past its lifetime).
    pub fn checkin(&self, conn: Box<ServerConn>) {
        self.checkin_at(conn, Instant::now());
    }

    /// [`Pool::checkin`] with the caller's clock reading.
    pub fn checkin_at(&self, mut conn: Box<ServerConn>, now: Instant) {
        if now.duration_since(conn.created) >= self.settings.lifetime {
            conn.close();
            return;
        }
        conn.last_used = now;
        // Park the connection before releasing its permit, so the waiter that the permit
        // wakes finds it.
        let permit = conn.take_permit();
        if let Ok(mut idle) = self.idle.lock() {
            // Checked under the lock that `retire` drains the idle list with.
            if self.is_retired() {
                drop(idle);
                conn.close();
                return;
            }
            idle.push(conn);
        }
        drop(permit);
    }

    /// ParameterStatus values the server reported at startup (from any connection so far).
    pub fn startup_params(&self) -> Option<ServerParams> {
        self.startup_params.lock().ok().and_then(|p| p.clone())
    }

    /// Whether a server connection of this pool has accepted client startup parameters
    /// with this fingerprint (so a new client with the same ones needs no check).
    pub fn accepted_startup(&self, fingerprint: u64) -> bool {
        self.accepted
            .lock()
            .is_ok_and(|accepted| accepted.contains(&fingerprint))
    }

    /// Remember that a server connection accepted startup parameters with this fingerprint.
    pub fn accept_startup(&self, fingerprint: u64) {
        if let Ok(mut accepted) = self.accepted.lock() {
            if accepted.len() >= MAX_ACCEPTED_STARTUPS {
                accepted.clear();
            }
            accepted.insert(fingerprint);
        }
    }

    /// Close idle connections past the idle timeout or lifetime.
    pub fn prune(&self) {
        let now = Instant::now();
        let expired: Vec<Box<ServerConn>> = match self.idle.lock() {
            Ok(mut idle) => {
                let (keep, expired) = std::mem::take(&mut *idle)
                    .into_iter()
                    .partition(|c| !self.is_expired(c, now));
                *idle = keep;
                expired
            }
            Err(_) => Vec::new(),
        };
        expired.into_iter().for_each(|conn| conn.close());
    }

    /// Close every idle connection (its node stopped being the primary).
    pub fn close_idle(&self) {
        let idle = match self.idle.lock() {
            Ok(mut idle) => std::mem::take(&mut *idle),
            Err(_) => Vec::new(),
        };
        idle.into_iter().for_each(|conn| conn.close());
    }

    /// Counts of (idle, in use) connections.
    pub fn counts(&self) -> (usize, usize) {
        let idle = self.idle.lock().map(|i| i.len()).unwrap_or(0);
        let in_use = self
            .size
            .load(Ordering::Relaxed)
            .saturating_sub(self.permits.available_permits());
        (idle, in_use)
    }

    /// Clients waiting for a connection of this pool.
    pub fn waiters(&self) -> &super::waiters::Waiters {
        &self.waiters
    }

    /// The idle connections now (for the admin console; takes the idle list's lock).
    pub fn idle_conns(&self) -> Vec<IdleConn> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.iter()
            .map(|conn| IdleConn {
                pid: conn.pid,
                created: conn.created,
                last_used: conn.last_used,
            })
            .collect()
    }

    /// Most connections this pool opens.
    pub fn pool_size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// The node this pool connects to.
    pub fn node(&self) -> &NodeAddr {
        &self.node
    }

    fn pop_idle(&self, now: Instant) -> Option<Box<ServerConn>> {
        loop {
            let mut conn = self.idle.lock().ok()?.pop()?;
            // Like PgBouncer's server_check_delay: probe only connections idle for a while
            // (the probe costs a syscall per checkout otherwise).
            let recent = now.duration_since(conn.last_used) < Duration::from_secs(1);
            if !self.is_expired(&conn, now) && (recent || conn.is_idle_healthy()) {
                return Some(conn);
            }
            conn.close();
        }
    }

    fn is_expired(&self, conn: &ServerConn, now: Instant) -> bool {
        now.duration_since(conn.last_used) >= self.settings.idle_timeout
            || now.duration_since(conn.created) >= self.settings.lifetime
    }

    fn remember_params(&self, conn: &ServerConn) {
        if let Ok(mut params) = self.startup_params.lock() {
            if params.is_none() {
                *params = Some(Arc::new(conn.params.clone()));
            }
        }
    }
}

/// All pools, created on first use. A cheap clonable handle.
#[derive(Debug, Clone)]
pub struct Pools {
    shared: Arc<PoolsShared>,
}

#[derive(Debug)]
struct PoolsShared {
    settings: PoolSettings,
    /// `pool_size` of new pools without a per-user size (a reload may change it).
    default_size: AtomicUsize,
    pools: DashMap<PoolKey, Arc<Pool>>,
    next_id: Arc<AtomicU64>,
    /// Woken when a pool for a database no other pool uses is created.
    new_database: Notify,
    /// Nodes a reload removed (name and address): a pool made for one now is retired
    /// from the start (a session from before the reload asked for it).
    gone: Mutex<Vec<NodeAddr>>,
}

impl Pools {
    /// No pools yet; they are created on first checkout.
    pub fn new(settings: PoolSettings) -> Pools {
        Pools {
            shared: Arc::new(PoolsShared {
                default_size: AtomicUsize::new(settings.pool_size),
                settings,
                pools: DashMap::new(),
                next_id: Arc::new(AtomicU64::new(1)),
                new_database: Notify::new(),
                gone: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The settings every pool's connections are made with.
    pub fn settings(&self) -> &PoolSettings {
        &self.shared.settings
    }

    /// The pool for `node`, `database` and the login, created if needed.
    pub fn get(&self, node: &NodeAddr, login: &Login, pool_size: Option<usize>) -> Arc<Pool> {
        let key = PoolKey {
            node: node.name.clone(),
            database: login.database.clone(),
            user: login.user.clone(),
        };
        if let Some(pool) = self.shared.pools.get(&key) {
            pool.refresh_login(login);
            return pool.clone();
        }
        if self.is_gone(node) {
            return self.retired_pool(key, node, login);
        }
        let mut settings = self.shared.settings.clone();
        settings.pool_size = self.shared.default_size.load(Ordering::Relaxed);
        if let Some(size) = pool_size {
            settings.pool_size = size.max(1);
        }
        // Pools are made once per (node, database, user), so this scan is rare.
        let new_database = !self
            .shared
            .pools
            .iter()
            .any(|pool| pool.key().database == key.database);
        let pool = self
            .shared
            .pools
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Pool {
                    key,
                    node: node.clone(),
                    login: Mutex::new(login.clone()),
                    size: AtomicUsize::new(settings.pool_size),
                    permits: Arc::new(Semaphore::new(settings.pool_size)),
                    settings,
                    idle: Mutex::new(Vec::new()),
                    startup_params: Mutex::new(None),
                    accepted: Mutex::new(HashSet::new()),
                    next_id: self.shared.next_id.clone(),
                    waiters: super::waiters::Waiters::default(),
                    retired: std::sync::atomic::AtomicBool::new(false),
                })
            })
            .clone();
        if new_database {
            self.shared.new_database.notify_one();
        }
        pool
    }

    /// Close expired idle connections in every pool, and forget pools left with no
    /// connection that no client holds (a login to a database that does not exist, or a
    /// database nobody has used for `server_idle_timeout`): a client could otherwise grow
    /// the map with one pool per database name it tries.
    pub fn prune(&self) {
        self.shared.pools.retain(|_, pool| {
            pool.prune();
            Arc::strong_count(pool) > 1 || pool.counts() != (0, 0)
        });
    }

    /// One login per database that clients use (the databases of the pools), preferring
    /// a user with a password: who the function catalog is read as, in each database.
    pub fn database_logins(&self) -> Vec<Login> {
        let mut logins: Vec<Login> = Vec::new();
        for pool in self.shared.pools.iter() {
            let login = &pool.login();
            let has_password = |l: &Login| l.credential.password().is_some_and(|p| !p.is_empty());
            match logins.iter_mut().find(|l| l.database == login.database) {
                Some(known) if !has_password(known) && has_password(login) => {
                    *known = login.clone();
                }
                Some(_) => {}
                None => logins.push(login.clone()),
            }
        }
        logins.sort_by(|a, b| a.database.cmp(&b.database));
        logins
    }

    /// Waits until a pool for a database no other pool used is created (returns at once
    /// if that happened since the last call).
    pub async fn database_added(&self) {
        self.shared.new_database.notified().await;
    }

    /// Every pool, for status and metrics.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.shared
            .pools
            .iter()
            .map(|p| p.value().clone())
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub(super) fn pools() -> Pools {
        pools_of(2)
    }

    /// Pools of `pool_size` connections each, with test timeouts and no TLS.
    pub(super) fn pools_of(pool_size: usize) -> Pools {
        Pools::new(PoolSettings {
            pool_size,
            connect_timeout: Duration::from_secs(1),
            checkout_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            lifetime: Duration::from_secs(60),
            max_message: 1 << 20,
            max_prepared: 10,
            empty_fingerprint: 0,
            tls: crate::tls::ServerTls::disabled(),
        })
    }

    pub(super) fn node(name: &str) -> NodeAddr {
        NodeAddr {
            name: Arc::from(name),
            host: Arc::from("127.0.0.1"),
            port: 1,
        }
    }

    pub(super) fn login(user: &str, database: &str, password: Option<&str>) -> Login {
        Login::with_password(user, database, password)
    }

    #[tokio::test]
    async fn pools_nobody_uses_are_forgotten() {
        let pools = pools();
        let held = pools.get(&node("primary"), &login("app", "app", None), None);
        for i in 0..100 {
            // Logins to databases that do not exist: the session drops its pool at once.
            drop(pools.get(
                &node("primary"),
                &login("app", &format!("rand{i}"), None),
                None,
            ));
        }
        assert_eq!(pools.all().len(), 101);
        pools.prune();
        assert_eq!(pools.all().len(), 1, "only the pool a client holds is kept");
        drop(held);
        pools.prune();
        assert!(pools.all().is_empty());
    }

    #[tokio::test]
    async fn sessions_with_the_pools_credential_share_it() {
        let pools = pools();
        let first = login("app", "app", Some("pw"));
        let pool = pools.get(&node("primary"), &first, None);
        let again = login("app", "app", Some("pw"));
        let shared = pool
            .same_credential(&again.credential)
            .expect("the same password");
        assert!(
            Arc::ptr_eq(&shared, &first.credential),
            "one copy for every session"
        );
        let other = login("app", "app", Some("other"));
        assert!(pool.same_credential(&other.credential).is_none());
    }

    #[tokio::test]
    async fn a_credential_from_before_a_reload_never_replaces_a_newer_one() {
        let pools = pools();
        let generation = |password: &str, generation| Login {
            generation,
            ..login("app", "app", Some(password))
        };
        let pool = pools.get(&node("primary"), &generation("old", 0), None);
        // A reload changed the password: the first client after it brings the new one.
        pools.get(&node("primary"), &generation("new", 1), None);
        assert_eq!(pool.login().credential.password(), Some("new"));
        // A session that began before the reload still holds the old one.
        pools.get(&node("primary"), &generation("old", 0), None);
        assert_eq!(pool.login().credential.password(), Some("new"));
        // Within one generation a changed credential still wins (an auth_query secret).
        pools.get(&node("primary"), &generation("newer", 1), None);
        assert_eq!(pool.login().credential.password(), Some("newer"));
    }

    #[tokio::test]
    async fn a_new_credential_replaces_the_pools_but_none_never_does() {
        let pools = pools();
        let pool = pools.get(&node("primary"), &login("app", "app", Some("old")), None);
        pools.get(&node("primary"), &login("app", "app", Some("new")), None);
        assert_eq!(pool.login().credential.password(), Some("new"));
        pools.get(&node("primary"), &login("app", "app", None), None);
        assert_eq!(pool.login().credential.password(), Some("new"));
    }

    #[tokio::test]
    async fn one_login_per_client_database_preferring_a_password() {
        let pools = pools();
        assert!(pools.database_logins().is_empty());
        pools.get(&node("primary"), &login("t", "mysite", None), None);
        // A new database wakes the function refresh (the wake-up is kept until awaited).
        tokio::time::timeout(Duration::from_secs(1), pools.database_added())
            .await
            .unwrap();
        pools.get(&node("replica1"), &login("t", "mysite", None), None);
        pools.get(
            &node("primary"),
            &login("mysite_user", "mysite", Some("pw")),
            None,
        );
        pools.get(&node("primary"), &login("app", "app", Some("")), None);
        let logins: Vec<_> = pools
            .database_logins()
            .into_iter()
            .map(|l| (l.database, l.user))
            .collect();
        assert_eq!(
            logins,
            [
                ("app".to_owned(), "app".to_owned()),
                ("mysite".to_owned(), "mysite_user".to_owned())
            ]
        );
        // One wake-up for "app"; none for the second and third "mysite" pools.
        tokio::time::timeout(Duration::from_secs(1), pools.database_added())
            .await
            .unwrap();
        let again = tokio::time::timeout(Duration::from_millis(50), pools.database_added()).await;
        assert!(again.is_err());
    }
}
