//! Reload in place (`SIGHUP`, `POST /reload`, the console's `RELOAD`): reread the config
//! file, keep what needs a restart as it is ([`plan`]), and publish the rest as a new
//! [`Live`] generation. The accept loop hands each new connection a [`Context`] built from
//! the latest generation, so client connections that start after a reload authenticate,
//! route and wait by the new file; established connections keep the settings they started
//! with (nothing is dropped). Pool sizes and the passwords of pool logins change for every
//! pool at once. Replicas added or removed and `[lag]` reach the running monitor and pools
//! at once ([`nodes`]): routing asks the monitor's topology by node name, so a removed
//! replica serves no new read on any connection, and an added one none until it has been
//! sampled and admitted. An invalid file changes nothing.
//!
//! The swap: [`Reloader`] holds `RwLock<Arc<Live>>` plus a generation counter; readers
//! (one per accepted connection) load the counter and take the lock only when it moved.

pub mod nodes;
pub mod plan;

use crate::tls::ClientTls;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::auth::secret::Secret;
use crate::classify::FunctionPolicy;
use crate::config::{Config, ConfigError};
use crate::context::Context;
use crate::metrics::ReloadResult;
use crate::rules::Rules;

/// `[[users]]` secrets per user name.
pub type SecretMap = HashMap<String, Arc<Secret>>;

/// The settings that change in place, one generation of them.
#[derive(Debug)]
pub struct Live {
    pub generation: u64,
    pub config: Arc<Config>,
    pub rules: Arc<Rules>,
    pub secrets: Arc<SecretMap>,
    /// The `[client_tls]` acceptor, its certificate and key read again at every reload
    /// (a rotated certificate at the same path is picked up).
    pub client_tls: Option<ClientTls>,
    /// The nodes (a reload may add and remove replicas).
    pub nodes: nodes::NodeHandles,
}

/// The reload handle shared by every clone of a [`Context`].
#[derive(Debug, Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The file to reread; `None` when the configuration did not come from a file.
    path: Mutex<Option<PathBuf>>,
    live: RwLock<Arc<Live>>,
    generation: AtomicU64,
    /// One reload at a time.
    serial: Mutex<()>,
    /// Wakes the task that waits in [`Reloader::reloaded`] (one stored wake-up).
    reloaded: tokio::sync::Notify,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub generation: u64,
    pub applied: Vec<&'static str>,
    pub restart: Vec<&'static str>,
    /// Replicas added (an address change counts as removed and added).
    pub added: Vec<String>,
    /// Replicas removed: no new reads, monitor stopped, pools drained.
    pub removed: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |keys: &[&str]| match keys {
            [] => "none".to_owned(),
            keys => keys.join(", "),
        };
        write!(
            f,
            "configuration reloaded (generation {}): applied in place: {}; \
             changed but need a restart (left as they were): {}",
            self.generation,
            list(&self.applied),
            list(&self.restart)
        )?;
        let names = |names: &[String]| names.join(", ");
        if !self.added.is_empty() {
            write!(f, "; replicas added: {}", names(&self.added))?;
        }
        if !self.removed.is_empty() {
            write!(f, "; replicas removed: {}", names(&self.removed))?;
        }
        Ok(())
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload needs a config file: this instance was not started with --config")]
    NoFile,
    #[error("reload failed, nothing changed: {0}")]
    Invalid(#[from] ConfigError),
    #[error("reload failed, nothing changed: {0}")]
    Secret(String),
    /// A `[client_tls]` or `[server_tls]` file that cannot be read or parsed.
    #[error("reload failed, nothing changed: {section}.{}: {source}", source.field())]
    Tls {
        section: &'static str,
        source: crate::tls::TlsError,
    },
}

impl Reloader {
    /// The first generation, from the configuration Causeway started with.
    pub fn new(
        config: Arc<Config>,
        rules: Arc<Rules>,
        secrets: Arc<SecretMap>,
        client_tls: Option<ClientTls>,
        nodes: nodes::NodeHandles,
    ) -> Reloader {
        let live = Live {
            generation: 0,
            config,
            rules,
            secrets,
            client_tls,
            nodes,
        };
        Reloader {
            shared: Arc::new(Shared {
                path: Mutex::new(None),
                live: RwLock::new(Arc::new(live)),
                generation: AtomicU64::new(0),
                serial: Mutex::new(()),
                reloaded: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Remember the file a reload rereads.
    pub fn set_path(&self, path: PathBuf) {
        *self
            .shared
            .path
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(path);
    }

    /// The latest generation number (one atomic load).
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// The latest generation.
    pub fn live(&self) -> Arc<Live> {
        let live = self
            .shared
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&live)
    }

    fn publish(&self, live: Live) {
        let generation = live.generation;
        *self
            .shared
            .live
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(live);
        self.shared.generation.store(generation, Ordering::Release);
        self.shared.reloaded.notify_one();
    }

    /// Waits until a reload publishes a generation (returns at once if one did since the
    /// last call). For one background task: the volatile-function refresh.
    pub async fn reloaded(&self) {
        self.shared.reloaded.notified().await;
    }
}

/// The secret of every `[[users]]` entry with a password.
///
/// # Errors
/// A password that is a malformed SCRAM secret, naming the user.
pub fn secrets(config: &Config) -> Result<SecretMap, String> {
    reuse_secrets(config, None)
}

/// [`secrets`], reusing `previous` secrets whose password did not change (deriving SCRAM
/// keys from a password is deliberately slow).
fn reuse_secrets(
    config: &Config,
    previous: Option<(&Config, &SecretMap)>,
) -> Result<SecretMap, String> {
    let mut secrets = HashMap::new();
    for user in &config.users {
        let Some(password) = user.password.as_deref() else {
            continue;
        };
        let kept = previous.and_then(|(old, map)| {
            let same = old.user(&user.name)?.password.as_deref() == Some(password);
            same.then(|| map.get(&user.name).cloned()).flatten()
        });
        let secret = match kept {
            Some(secret) => secret,
            None => Arc::new(
                Secret::parse(password)
                    .map_err(|e| format!("users {:?} password: {e}", user.name))?,
            ),
        };
        secrets.insert(user.name.clone(), secret);
    }
    Ok(secrets)
}

/// Reread the config file and apply what can change in place. Blocking (file read, key
/// derivation): call it off the async workers. Logs and counts the outcome.
///
/// # Errors
/// No file to reread, or the file is unreadable or invalid; nothing changed then.
pub fn reload(ctx: &Context) -> Result<Report, ReloadError> {
    let result = try_reload(ctx);
    match &result {
        Ok(report) => {
            ctx.metrics.config_reload(ReloadResult::Success);
            tracing::info!(
                generation = report.generation,
                applied = ?report.applied,
                restart_needed = ?report.restart,
                replicas_added = ?report.added,
                replicas_removed = ?report.removed,
                "configuration reloaded; new connections use it"
            );
            if !report.restart.is_empty() {
                tracing::warn!(keys = ?report.restart,
                    "changed settings that need a restart were left as they were");
            }
        }
        Err(err) => {
            ctx.metrics.config_reload(ReloadResult::Failure);
            tracing::error!(%err, "configuration reload failed; the running settings stay");
        }
    }
    result
}

fn try_reload(ctx: &Context) -> Result<Report, ReloadError> {
    let reloader = &ctx.reload;
    let _serial = reloader
        .shared
        .serial
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let path = reloader
        .shared
        .path
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .ok_or(ReloadError::NoFile)?;
    let new = Config::load(&path)?;
    let current = reloader.live();
    let plan = plan::plan(&current.config, new);
    let config = plan.config;
    let mut applied = plan.applied;
    let secrets = reuse_secrets(&config, Some((&current.config, &current.secrets)))
        .map_err(ReloadError::Secret)?;
    let client_tls = ClientTls::new(&config.client_tls).map_err(|source| ReloadError::Tls {
        section: "client_tls",
        source,
    })?;
    if client_tls.is_some() && !applied.contains(&"client_tls") {
        applied.push("client_tls");
    }
    // Read again at every reload too (certificates rotated at the same paths); used by
    // the server connections opened from now on.
    let server_tls =
        crate::tls::ServerTls::new(&config.server_tls).map_err(|source| ReloadError::Tls {
            section: "server_tls",
            source,
        })?;
    let reads_files = config.server_tls.ca_file.is_some() || config.server_tls.cert_file.is_some();
    if config.server_tls.sslmode != crate::config::ServerSslMode::Disable
        && reads_files
        && !applied.contains(&"server_tls")
    {
        applied.push("server_tls");
    }
    // The volatile user functions read from the catalog stay (the refresh task rereads
    // them): without them a call to one would go to a replica until then.
    ctx.classifier.set_functions(
        FunctionPolicy::new(&config.functions.read_only, &config.functions.writes)
            .keeping_volatile(&ctx.classifier.functions()),
    );
    ctx.pools.reconfigure(config.proxy.pool_size, &config.users);
    // Nodes and `[lag]` reach the running monitor and pools before new connections see
    // the new node list: a removed replica takes no new reads from here on, an added one
    // none until the monitor admits it.
    let changes = nodes::apply(ctx, &current.config, &config);
    if config.lag != current.config.lag {
        ctx.metrics
            .set_lag_limits(config.lag.max_bytes, config.lag.max_seconds);
    }
    let handles = if config.replicas == current.config.replicas {
        current.nodes.clone()
    } else {
        nodes::NodeHandles::new(&config, &ctx.metrics)
    };
    let generation = current.generation + 1;
    ctx.pools.settings().tls.replace(&server_tls);
    reloader.publish(Live {
        generation,
        rules: Arc::new(Rules::new(&config.rules)),
        secrets: Arc::new(secrets),
        client_tls,
        config: Arc::new(config),
        nodes: handles,
    });
    Ok(Report {
        generation,
        applied,
        restart: plan.restart,
        added: changes.added,
        removed: changes.removed,
    })
}

impl Context {
    /// This context with the settings of `live` (the handles stay shared).
    pub fn with_live(&self, live: &Live) -> Context {
        Context {
            config: Arc::clone(&live.config),
            generation: live.generation,
            rules: Arc::clone(&live.rules),
            secrets: Arc::clone(&live.secrets),
            client_tls: live.client_tls.clone(),
            primary: live.nodes.primary.clone(),
            nodes: Arc::clone(&live.nodes.nodes),
            replicas: Arc::clone(&live.nodes.replicas),
            timers: Arc::clone(&live.nodes.timers),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Report;

    #[test]
    fn the_report_names_what_applied_what_needs_a_restart_and_the_replicas_moved() {
        let report = Report {
            generation: 3,
            applied: vec!["replicas", "lag"],
            restart: vec!["primary"],
            added: vec!["r3".into()],
            removed: vec!["r1".into(), "r2".into()],
        };
        assert_eq!(
            report.to_string(),
            "configuration reloaded (generation 3): applied in place: replicas, lag; changed but \
             need a restart (left as they were): primary; replicas added: r3; replicas removed: \
             r1, r2"
        );
        let quiet = Report {
            applied: vec![],
            restart: vec![],
            added: vec![],
            removed: vec![],
            ..report
        };
        assert_eq!(
            quiet.to_string(),
            "configuration reloaded (generation 3): applied in place: none; changed but need a \
             restart (left as they were): none"
        );
    }
}
