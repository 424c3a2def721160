//! Handles shared by every connection: configuration, pools, cancel keys, shutdown signals,
//! metrics. Cheap to clone; no process-wide globals.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::auth::lookup::SecretCache;
use crate::auth::secret::Secret;
use crate::backend::ReplicaNode;
use crate::backend::{NodeAddr, PoolSettings, Pools};
use crate::cancel::CancelRegistry;
use crate::classify::{Classifier, FunctionPolicy};
use crate::config::Config;
use crate::metrics::{Metrics, NodeTimers};
use crate::monitor::Topology;
use crate::rules::Rules;
use crate::session_store::SessionStore;
use crate::shutdown::Shutdown;

/// Bytes of statement text and results the classifier cache may hold.
const CLASSIFIER_CACHE_BYTES: usize = 16 << 20;

/// What every session and task needs.
#[derive(Debug, Clone)]
pub struct Context {
    pub config: Arc<Config>,
    /// The configuration generation `config` is (0 at start, one more per reload).
    pub generation: u64,
    pub pools: Pools,
    pub cancels: CancelRegistry,
    /// `[primary]`: the primary unless `failover.mode = "follow"` elects another node
    /// (`topology.primary()` says which is the primary now).
    pub primary: NodeAddr,
    /// Every configured node: `[primary]`, then the replicas in config order (the indices
    /// of [`crate::monitor::PrimaryView`]).
    pub nodes: Arc<[NodeAddr]>,
    /// Stored secret per `[[users]]` entry, parsed once at startup (the SCRAM keys of a
    /// plaintext password are derived then: PBKDF2 is deliberately slow).
    pub secrets: Arc<HashMap<String, Arc<Secret>>>,
    /// Secrets of users not in `[[users]]`, looked up with `[auth] auth_query`.
    pub looked_up: SecretCache,
    /// Secret for the stand-in SCRAM keys of unknown users (so they look like real ones).
    pub mock_secret: [u8; 32],
    /// Clients connected now (for `max_client_connections`).
    pub clients: Arc<AtomicUsize>,
    /// Connections still in startup and authentication (capped like clients, so silent
    /// connections cannot take every descriptor).
    pub starting: Arc<AtomicUsize>,
    pub shutdown: Shutdown,
    /// Prometheus metrics, exported by the admin server.
    pub metrics: Metrics,
    /// Configured replicas with their load counters, in config order; with
    /// `failover.mode = "follow"` also `[primary]`, last (it serves reads while it is a
    /// replica of an elected primary).
    pub replicas: Arc<[ReplicaNode]>,
    /// The replica monitor's view (every node unknown until [`crate::server::run`] starts
    /// the monitor tasks that fill it in).
    pub topology: Topology,
    /// Statement classification (cached).
    pub classifier: Classifier,
    /// `[[rules]]`.
    pub rules: Arc<Rules>,
    /// Shared session floors.
    pub store: Arc<dyn SessionStore>,
    /// Per-node metric handles: the primary's, then each of `replicas`.
    pub timers: Arc<[NodeTimers]>,
    /// The `[client_tls]` acceptor; `None` when `sslmode = disable`.
    pub client_tls: Option<crate::tls::ClientTls>,
    /// The admin console's client list and pause gate.
    pub console: crate::console::ConsoleState,
    /// Reload in place: the latest generation of the settings that change without a
    /// restart (new connections get a context built from it, see [`crate::reload`]).
    pub reload: crate::reload::Reloader,
}

impl Context {
    /// The primary now: `[primary]` unless failover following elected another node (the
    /// last one elected while there is none).
    pub fn primary_now(&self) -> &NodeAddr {
        let index = self.topology.primary().node_or_last();
        self.nodes.get(index).unwrap_or(&self.primary)
    }

    /// The metric handles of the node `node` stands for now: a replica's own, and for
    /// [`crate::router::Node::Primary`] the elected primary's (one atomic load), so that
    /// requests are labelled by the node that served them after a failover too. `timers`
    /// and `nodes` share their indices for every configured node.
    pub fn timers_of(&self, node: crate::router::Node) -> Option<&NodeTimers> {
        let index = match node {
            crate::router::Node::Primary => {
                let view = self.topology.primary();
                view.current().node.unwrap_or_else(|| view.last_elected())
            }
            crate::router::Node::Replica(i) => i + 1,
        };
        self.timers.get(index)
    }

    /// Build the shared handles from a validated configuration. Fails only when the
    /// session store cannot be set up (an address the config check let through).
    pub fn new(config: Config, shutdown: Shutdown) -> Result<Context, String> {
        let proxy = &config.proxy;
        let client_tls = crate::tls::ClientTls::new(&config.client_tls)
            .map_err(|err| format!("client_tls.{}: {err}", err.field()))?;
        let server_tls = crate::tls::ServerTls::new(&config.server_tls)
            .map_err(|err| format!("server_tls.{}: {err}", err.field()))?;
        let pools = Pools::new(PoolSettings {
            pool_size: proxy.pool_size,
            connect_timeout: proxy.connect_timeout,
            checkout_timeout: proxy.checkout_timeout,
            idle_timeout: proxy.server_idle_timeout,
            lifetime: proxy.server_lifetime,
            max_message: proxy.max_message_bytes,
            max_prepared: proxy.max_prepared_statements,
            empty_fingerprint: crate::backend::empty_fingerprint(),
            tls: server_tls,
        });
        let secrets = Arc::new(crate::reload::secrets(&config)?);
        let classifier = Classifier::new(CLASSIFIER_CACHE_BYTES);
        classifier.set_functions(FunctionPolicy::new(
            &config.functions.read_only,
            &config.functions.writes,
        ));
        let rules = Arc::new(Rules::new(&config.rules));
        let store = crate::session_store::open(
            &config.session_store,
            &config.lag,
            shutdown.terminate.clone(),
        )?;
        let metrics = Metrics::new();
        let replica_names: Vec<&str> = config.replicas.iter().map(|r| r.name.as_str()).collect();
        metrics.start_at_zero("primary", &replica_names, config.failover.follows());
        // A Redis store connects in the background: down until it has.
        metrics.set_store_up(store.health().up);
        let handles = crate::reload::nodes::NodeHandles::new(&config, &metrics);
        let topology = crate::monitor::Monitor::topology(&config);
        let looked_up = SecretCache::new(config.auth.auth_cache_ttl);
        let (peer_id, peers) = config.cancel_peers();
        let config = Arc::new(config);
        let reload = crate::reload::Reloader::new(
            config.clone(),
            rules.clone(),
            secrets.clone(),
            client_tls.clone(),
            handles.clone(),
        );
        let crate::reload::nodes::NodeHandles {
            primary,
            nodes,
            replicas,
            timers,
        } = handles;
        Ok(Context {
            config,
            generation: 0,
            pools,
            cancels: CancelRegistry::new(peer_id, peers),
            primary,
            nodes,
            secrets,
            looked_up,
            mock_secret: rand::random(),
            clients: Arc::new(AtomicUsize::new(0)),
            starting: Arc::new(AtomicUsize::new(0)),
            shutdown,
            metrics,
            timers,
            replicas,
            topology,
            classifier,
            rules,
            store,
            client_tls,
            console: crate::console::ConsoleState::default(),
            reload,
        })
    }
}
