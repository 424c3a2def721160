//! Handles shared by every connection: configuration, pools, cancel keys, shutdown signals,
//! metrics. Cheap to clone; no process-wide globals.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::auth::scram::ScramKeys;
use crate::backend::{NodeAddr, PoolSettings, Pools};
use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// What every session and task needs.
#[derive(Debug, Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub pools: Pools,
    pub cancels: CancelRegistry,
    pub primary: NodeAddr,
    /// SCRAM keys per user, derived once at startup (PBKDF2 is deliberately slow).
    pub scram: Arc<HashMap<String, Arc<ScramKeys>>>,
    /// Secret for the stand-in SCRAM keys of unknown users (so they look like real ones).
    pub mock_secret: [u8; 32],
    /// Clients connected now (for `max_client_connections`).
    pub clients: Arc<AtomicUsize>,
    pub shutdown: Shutdown,
    /// Prometheus metrics, exported by the admin server.
    pub metrics: Metrics,
}

impl Context {
    /// Build the shared handles from a validated configuration.
    pub fn new(config: Config, shutdown: Shutdown) -> Context {
        let proxy = &config.proxy;
        let pools = Pools::new(PoolSettings {
            pool_size: proxy.pool_size,
            connect_timeout: proxy.connect_timeout,
            checkout_timeout: proxy.checkout_timeout,
            idle_timeout: proxy.server_idle_timeout,
            lifetime: proxy.server_lifetime,
            max_message: proxy.max_message_bytes,
            max_prepared: proxy.max_prepared_statements,
            empty_fingerprint: crate::session::state::ClientState::empty_fingerprint(),
        });
        let primary = NodeAddr {
            name: Arc::from("primary"),
            host: Arc::from(config.primary.host.as_str()),
            port: config.primary.port,
        };
        let scram = config
            .users
            .iter()
            .filter_map(|u| {
                let password = u.password.as_deref()?;
                Some((u.name.clone(), Arc::new(ScramKeys::generate(password))))
            })
            .collect();
        Context {
            config: Arc::new(config),
            pools,
            cancels: CancelRegistry::default(),
            primary,
            scram: Arc::new(scram),
            mock_secret: rand::random(),
            clients: Arc::new(AtomicUsize::new(0)),
            shutdown,
            metrics: Metrics::new(),
        }
    }
}
