//! Range and cross-field checks run after parsing; each error names the field and the value.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::secret::SecretForm;

use super::{
    Config, ConfigError, ConsistencyLevel, FunctionsConfig, LagConfig, MonitorConfig, ProxyConfig,
    RuleConfig, SessionStoreConfig, SessionStoreKind, StoreEndpoint, PRIMARY_NODE_NAME,
    REDIS_URL_SCHEMES,
};

/// Smallest accepted `proxy.max_message_bytes`.
const MIN_MESSAGE_BYTES: usize = 1024;
/// Largest accepted `proxy.max_message_bytes` (PostgreSQL's own 1 GiB limit).
const MAX_MESSAGE_BYTES: usize = 1 << 30;
/// Safety margin between replica eviction and a session floor expiring.
const SESSION_TTL_MARGIN: Duration = Duration::from_secs(1);

type Checked = Result<(), ConfigError>;

/// Runs every check in file order and returns the first failure.
pub(super) fn validate(config: &Config) -> Checked {
    check_proxy(&config.proxy)?;
    check_nodes(config)?;
    check_users(config)?;
    check_lag(&config.lag)?;
    check_monitor(&config.monitor)?;
    check_session_store(&config.session_store, &config.lag)?;
    for (index, rule) in config.rules.iter().enumerate() {
        check_rule(&format!("rules[{index}]"), rule)?;
    }
    check_functions(&config.functions)?;
    super::peers::check(config)?;
    config.failover.check()
}

// === [proxy] ===

fn check_proxy(proxy: &ProxyConfig) -> Checked {
    let listen = check_socket_addr("proxy.listen", &proxy.listen)?;
    let admin = check_socket_addr("proxy.admin_listen", &proxy.admin_listen)?;
    if listen == admin && listen.port() != 0 {
        return Err(ConfigError::invalid(
            "proxy.admin_listen",
            format!(
                "{:?} is also proxy.listen; give the admin server its own port",
                proxy.admin_listen
            ),
        ));
    }
    check_at_least("proxy.pool_size", proxy.pool_size, 1)?;
    check_at_least(
        "proxy.max_client_connections",
        proxy.max_client_connections,
        1,
    )?;
    check_message_bytes(proxy.max_message_bytes)?;
    check_at_least(
        "proxy.max_prepared_statements",
        proxy.max_prepared_statements,
        1,
    )?;
    check_at_least(
        "proxy.max_client_prepared_statements",
        proxy.max_client_prepared_statements,
        1,
    )?;
    check_positive("proxy.connect_timeout", proxy.connect_timeout)?;
    check_positive("proxy.startup_timeout", proxy.startup_timeout)?;
    check_positive("proxy.checkout_timeout", proxy.checkout_timeout)
}

fn check_socket_addr(field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::invalid(
            field,
            format!(
                "{value:?} is not a socket address; write an IP and a port such as \
                 \"127.0.0.1:6432\" or \"[::1]:6432\" (host names are not resolved here)"
            ),
        )
    })
}

fn check_message_bytes(value: usize) -> Checked {
    if (MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        "proxy.max_message_bytes",
        format!("{value} is out of range; use a value between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES} (1 GiB)"),
    ))
}

// === [primary], [[replicas]] ===

fn check_nodes(config: &Config) -> Checked {
    check_host("primary.host", &config.primary.host)?;
    check_port("primary.port", config.primary.port)?;
    let mut names = HashSet::new();
    for (index, replica) in config.replicas.iter().enumerate() {
        let path = format!("replicas[{index}]");
        check_replica_name(&path, &replica.name, &mut names)?;
        check_host(&format!("{path}.host"), &replica.host)?;
        check_port(&format!("{path}.port"), replica.port)?;
        if replica.weight == 0 {
            return Err(ConfigError::invalid(
                format!("{path}.weight"),
                format!(
                    "0 for replica {:?}; use 1 or more, or remove the replica to stop sending it reads",
                    replica.name
                ),
            ));
        }
    }
    Ok(())
}

fn check_replica_name<'a>(path: &str, name: &'a str, seen: &mut HashSet<&'a str>) -> Checked {
    let field = format!("{path}.name");
    if name.trim().is_empty() {
        return Err(ConfigError::invalid(
            field,
            "is empty; every replica needs a name (used in metrics and logs)",
        ));
    }
    if name == PRIMARY_NODE_NAME {
        return Err(ConfigError::invalid(
            field,
            format!("{name:?} is reserved for the primary; choose another replica name"),
        ));
    }
    if !seen.insert(name) {
        return Err(ConfigError::invalid(
            field,
            format!("{name:?} is used by more than one replica; replica names must be unique"),
        ));
    }
    Ok(())
}

fn check_host(field: &str, host: &str) -> Checked {
    if host.trim().is_empty() {
        return Err(ConfigError::invalid(
            field,
            "is empty; give a host name or IP address",
        ));
    }
    Ok(())
}

fn check_port(field: &str, port: u16) -> Checked {
    if port == 0 {
        return Err(ConfigError::invalid(
            field,
            "0 is not a usable port; give the node's PostgreSQL port (usually 5432)",
        ));
    }
    Ok(())
}

// === [[users]], [auth] ===

fn check_users(config: &Config) -> Checked {
    let method = config.auth.method;
    let mut names = HashSet::new();
    for (index, user) in config.users.iter().enumerate() {
        let path = format!("users[{index}]");
        if user.name.is_empty() {
            return Err(ConfigError::invalid(
                format!("{path}.name"),
                "is empty; give the PostgreSQL user name",
            ));
        }
        if !names.insert(user.name.as_str()) {
            return Err(ConfigError::invalid(
                format!("{path}.name"),
                format!(
                    "{:?} is listed more than once; user names must be unique",
                    user.name
                ),
            ));
        }
        if method.needs_password() && user.password.is_none() {
            return Err(ConfigError::invalid(
                format!("{path}.password"),
                format!(
                    "user {:?} has no password, but auth.method = {:?} needs one; set \
                     password, or use auth.method = \"trust\"",
                    user.name,
                    method.as_str()
                ),
            ));
        }
        if let Some(pool_size) = user.pool_size {
            check_at_least(&format!("{path}.pool_size"), pool_size, 1)?;
        }
        if let Some(Err(error)) = user.password.as_deref().map(SecretForm::of) {
            return Err(ConfigError::invalid(
                format!("{path}.password"),
                format!("user {:?}: {error}", user.name),
            ));
        }
    }
    check_auth_lookup(config)
}

/// `[auth] auth_user`, `auth_query`, `auth_cache_ttl`.
fn check_auth_lookup(config: &Config) -> Checked {
    let auth = &config.auth;
    if auth.auth_cache_ttl.is_zero() {
        return Err(ConfigError::invalid(
            "auth.auth_cache_ttl",
            "must be more than 0 (every login would query the primary); use e.g. \"60s\"",
        ));
    }
    let Some(name) = auth.auth_user.as_deref() else {
        return Ok(());
    };
    if auth.auth_query.trim().is_empty() || !auth.auth_query.contains("$1") {
        return Err(ConfigError::invalid(
            "auth.auth_query",
            "must be a query taking the user name as $1 and returning (name, secret)",
        ));
    }
    let form = config
        .user(name)
        .and_then(|user| user.password.as_deref())
        .map(SecretForm::of);
    match form {
        Some(Ok(SecretForm::Plain | SecretForm::Md5)) => Ok(()),
        Some(Ok(SecretForm::Scram)) => Err(ConfigError::invalid(
            "auth.auth_user",
            format!(
                "user {name:?} has a SCRAM secret, which cannot log in without a client's \
                 proof; give auth_user a plaintext password or md5 hash in [[users]]"
            ),
        )),
        _ => Err(ConfigError::invalid(
            "auth.auth_user",
            format!(
                "{name:?} must be a [[users]] entry with a password (plaintext or md5 hash): \
                 Causeway logs in as it to run auth_query on the primary"
            ),
        )),
    }
}

// === [lag], [session_store] ===

fn check_lag(lag: &LagConfig) -> Checked {
    check_positive("lag.poll_interval", lag.poll_interval)?;
    check_positive("lag.probe_timeout", lag.probe_timeout)?;
    let fraction = lag.readmit_fraction;
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(ConfigError::invalid(
            "lag.readmit_fraction",
            format!("{fraction} is out of range; use a fraction greater than 0 and at most 1, such as 0.5"),
        ));
    }
    if lag.stale_after < lag.poll_interval {
        return Err(ConfigError::invalid(
            "lag.stale_after",
            format!(
                "{:?} is shorter than lag.poll_interval ({:?}), so every node would be \
                 marked unknown between two samples; make it at least the poll interval",
                lag.stale_after, lag.poll_interval
            ),
        ));
    }
    Ok(())
}

/// PostgreSQL truncates identifiers to this many bytes (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

fn check_monitor(monitor: &MonitorConfig) -> Checked {
    let database = &monitor.database;
    if database.is_empty() {
        return Err(ConfigError::invalid(
            "monitor.database",
            "is empty; name a database every node has, such as \"postgres\" (the default)",
        ));
    }
    if database.contains('\0') {
        return Err(ConfigError::invalid(
            "monitor.database",
            format!("{database:?} contains a NUL byte, which no database name can"),
        ));
    }
    if database.len() > MAX_IDENTIFIER_BYTES {
        return Err(ConfigError::invalid(
            "monitor.database",
            format!(
                "{database:?} is {} bytes long; PostgreSQL database names have at most \
                 {MAX_IDENTIFIER_BYTES}",
                database.len()
            ),
        ));
    }
    Ok(())
}

fn check_session_store(store: &SessionStoreConfig, lag: &LagConfig) -> Checked {
    check_positive("session_store.timeout", store.timeout)?;
    check_session_ttl(store.session_ttl, lag)?;
    if store.kind != SessionStoreKind::Redis {
        return Ok(());
    }
    let field = if store.cluster_nodes.is_empty() {
        check_redis_url(&store.url)?;
        "session_store.url"
    } else {
        for (index, node) in store.cluster_nodes.iter().enumerate() {
            if node.trim().is_empty() || node.contains(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    format!("session_store.cluster_nodes[{index}]"),
                    format!(
                        "{node:?} is not a node address; write \"host:port\" or \"redis://host:port\""
                    ),
                ));
            }
        }
        "session_store.cluster_nodes"
    };
    StoreEndpoint::parse(store)
        .map(drop)
        .map_err(|e| ConfigError::invalid(field, e))
}

fn check_session_ttl(ttl: Duration, lag: &LagConfig) -> Checked {
    let minimum = lag
        .max_seconds
        .saturating_add(lag.poll_interval)
        .saturating_add(SESSION_TTL_MARGIN);
    if ttl >= minimum {
        return Ok(());
    }
    Err(ConfigError::invalid(
        "session_store.session_ttl",
        format!(
            "{ttl:?} is too short: it must be at least lag.max_seconds + lag.poll_interval + 1s \
             = {minimum:?}. A floor that expires before a lagging replica is evicted would let \
             that replica serve a stale read; raise session_ttl or lower lag.max_seconds"
        ),
    ))
}

fn check_redis_url(url: &str) -> Checked {
    if REDIS_URL_SCHEMES
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        return Ok(());
    }
    Err(ConfigError::invalid(
        "session_store.url",
        format!(
            "{url:?} is not a Redis URL; with kind = \"redis\" write one starting with {} \
             (or list session_store.cluster_nodes)",
            REDIS_URL_SCHEMES.join(", ")
        ),
    ))
}

// === [[rules]], [functions] ===

fn check_rule(path: &str, rule: &RuleConfig) -> Checked {
    let matchers = rule.matchers().count();
    if matchers != 1 {
        return Err(ConfigError::invalid(
            path,
            format!(
                "has {matchers} matchers; give exactly one of tag, tables or application_name \
                 (write several [[rules]] to match on several)"
            ),
        ));
    }
    if rule.consistency.is_none() && rule.route.is_none() {
        return Err(ConfigError::invalid(
            path,
            "has no action; set consistency and/or route",
        ));
    }
    check_rule_values(path, rule)
}

fn check_rule_values(path: &str, rule: &RuleConfig) -> Checked {
    if rule.tag.as_deref().is_some_and(|tag| tag.trim().is_empty()) {
        return Err(ConfigError::invalid(
            format!("{path}.tag"),
            "is empty; give the tag name",
        ));
    }
    if let Some(index) = rule.tables.iter().position(|t| t.trim().is_empty()) {
        return Err(ConfigError::invalid(
            format!("{path}.tables[{index}]"),
            "is empty; give a table name",
        ));
    }
    if rule.application_name.as_deref() == Some("") {
        return Err(ConfigError::invalid(
            format!("{path}.application_name"),
            "is empty; give the application_name to match",
        ));
    }
    if rule.max_lag.is_some() && rule.consistency != Some(ConsistencyLevel::Bounded) {
        return Err(ConfigError::invalid(
            format!("{path}.max_lag"),
            "only applies with consistency = \"bounded\"; add that or remove max_lag",
        ));
    }
    Ok(())
}

fn check_functions(functions: &FunctionsConfig) -> Checked {
    let lists = [
        ("functions.read_only", &functions.read_only),
        ("functions.writes", &functions.writes),
    ];
    for (field, names) in lists {
        if let Some(index) = names.iter().position(|name| name.trim().is_empty()) {
            return Err(ConfigError::invalid(
                format!("{field}[{index}]"),
                "is empty; give a function name",
            ));
        }
    }
    let writes: HashSet<String> = functions.writes.iter().map(|n| n.to_lowercase()).collect();
    if let Some(name) = functions
        .read_only
        .iter()
        .find(|name| writes.contains(&name.to_lowercase()))
    {
        return Err(ConfigError::invalid(
            "functions.read_only",
            format!("{name:?} is also listed in functions.writes; keep it in only one list"),
        ));
    }
    Ok(())
}

// === shared helpers ===

fn check_at_least(field: &str, value: usize, minimum: usize) -> Checked {
    if value >= minimum {
        return Ok(());
    }
    Err(ConfigError::invalid(
        field,
        format!("{value} is too small; use at least {minimum}"),
    ))
}

fn check_positive(field: &str, value: Duration) -> Checked {
    if !value.is_zero() {
        return Ok(());
    }
    Err(ConfigError::invalid(
        field,
        "is zero; give a positive duration such as \"1s\"",
    ))
}
