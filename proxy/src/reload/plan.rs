//! What a reload changes (pure): the new file's settings that apply in place, and the keys
//! that differ but need a restart, which keep their running values.
//!
//! Nodes: `[[replicas]]` are added, removed, moved and reweighted in place, except when
//! following failovers (`failover.mode = "follow"`): the election knows the nodes by their
//! position (sessions map an elected index to an address by their own node list), and
//! every node is a primary candidate.
//!
//! `[monitor]` applies in place: control connections open again to the new database.
//!
//! `[primary]` always needs a restart: every open session holds a pool of it, and moving
//! writes to another server is a failover (`failover.mode = "follow"` does that safely).
//! `[lag]` applies in place (the monitor judges the next sample by it), unless the new
//! limits would make a floor matter longer ([`crate::session_store::lost_floor_window`])
//! than the running store keeps floors (`session_store.session_ttl`, restart-only), or,
//! with a Redis store, longer than the lost-floor window it was opened with.

use crate::config::{Config, SessionStoreKind};
use crate::session_store::lost_floor_window;

/// The outcome of comparing the running configuration with a new file.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The configuration to run from now on: the new file, with every restart-only key
    /// kept at its running value.
    pub config: Config,
    /// Keys (or sections) whose new values apply in place.
    pub applied: Vec<&'static str>,
    /// Keys (or sections) that differ but need a restart; left as they were.
    pub restart: Vec<&'static str>,
}

/// Compares `running` with `new` and decides what changes.
pub fn plan(running: &Config, new: Config) -> Plan {
    let mut next = new;
    let mut restart = Vec::new();
    let mut applied = Vec::new();
    // Restart-only: listeners and the runtime; server connections, pools and the nodes
    // (pools and monitor tasks are built from them at start); the session store.
    macro_rules! keep {
        ($($field:ident).+, $name:literal) => {
            if running.$($field).+ != next.$($field).+ {
                restart.push($name);
                next.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!(proxy.listen, "proxy.listen");
    keep!(proxy.admin_listen, "proxy.admin_listen");
    keep!(proxy.workers, "proxy.workers");
    keep!(proxy.pool_mode, "proxy.pool_mode");
    keep!(proxy.connect_timeout, "proxy.connect_timeout");
    keep!(proxy.checkout_timeout, "proxy.checkout_timeout");
    keep!(proxy.server_idle_timeout, "proxy.server_idle_timeout");
    keep!(proxy.server_lifetime, "proxy.server_lifetime");
    keep!(proxy.max_message_bytes, "proxy.max_message_bytes");
    keep!(proxy.shutdown_timeout, "proxy.shutdown_timeout");
    keep!(
        proxy.max_prepared_statements,
        "proxy.max_prepared_statements"
    );
    keep!(primary, "primary");
    if running.replicas != next.replicas && !replicas_apply(running) {
        restart.push("replicas");
        next.replicas = running.replicas.clone();
    }
    if running.lag != next.lag && !lag_applies(running, &next) {
        restart.push("lag");
        next.lag = running.lag.clone();
    }
    keep!(session_store, "session_store");
    keep!(failover.mode, "failover.mode");
    keep!(proxy.peer_id, "proxy.peer_id");
    keep!(peers, "peers");
    // In place: for connections that start from now on, and for pools (sizes and the
    // passwords of their logins, see `Pools::reconfigure`).
    macro_rules! apply {
        ($($field:ident).+, $name:literal) => {
            if running.$($field).+ != next.$($field).+ {
                applied.push($name);
            }
        };
    }
    apply!(replicas, "replicas");
    apply!(lag, "lag");
    apply!(monitor, "monitor");
    apply!(users, "users");
    apply!(proxy.pool_size, "proxy.pool_size");
    apply!(auth, "auth");
    apply!(consistency, "consistency");
    apply!(session, "session");
    apply!(rules, "rules");
    apply!(functions, "functions");
    apply!(proxy.max_client_connections, "proxy.max_client_connections");
    apply!(proxy.startup_timeout, "proxy.startup_timeout");
    apply!(proxy.client_idle_timeout, "proxy.client_idle_timeout");
    apply!(
        proxy.idle_transaction_timeout,
        "proxy.idle_transaction_timeout"
    );
    apply!(
        proxy.max_client_prepared_statements,
        "proxy.max_client_prepared_statements"
    );
    apply!(
        proxy.max_client_prepared_bytes,
        "proxy.max_client_prepared_bytes"
    );
    apply!(proxy.admin_users, "proxy.admin_users");
    apply!(proxy.ready_without_primary, "proxy.ready_without_primary");
    apply!(failover.query_wait_timeout, "failover.query_wait_timeout");
    apply!(client_tls, "client_tls");
    apply!(server_tls, "server_tls");
    Plan {
        config: next,
        applied,
        restart,
    }
}

/// Whether the replicas may change in place (see the module documentation).
fn replicas_apply(running: &Config) -> bool {
    !running.failover.follows()
}

/// Whether `[lag]` may change in place (see the module documentation).
fn lag_applies(running: &Config, next: &Config) -> bool {
    let window = lost_floor_window(&next.lag);
    // The running store keeps floors for its session_ttl (restart-only), which must cover
    // the new limits as the config check requires of a file.
    let ttl_covers = window <= running.session_store.session_ttl;
    let redis_covers = running.session_store.kind != SessionStoreKind::Redis
        || window <= lost_floor_window(&running.lag);
    ttl_covers && redis_covers
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "[proxy]\nlisten = \"127.0.0.1:6432\"\n\n[primary]\nhost = \"db\"\nport = 5432\n\n\
        [[replicas]]\nname = \"r1\"\nhost = \"db2\"\nport = 5433\n\n\
        [[users]]\nname = \"app\"\npassword = \"one\"\n";

    fn parse(text: &str) -> Config {
        Config::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let running = parse(BASE);
        let plan = plan(&running, running.clone());
        assert_eq!(plan.config, running);
        assert!(
            plan.applied.is_empty() && plan.restart.is_empty(),
            "{plan:?}"
        );
    }

    #[test]
    fn users_rules_consistency_nodes_and_lag_apply_and_listeners_wait_for_a_restart() {
        let running = parse(BASE);
        let new = parse(
            &(BASE
                .replace("127.0.0.1:6432", "0.0.0.0:7000")
                .replace("password = \"one\"", "password = \"two\"")
                .replace("port = 5433", "port = 5434")
                + "\n[consistency]\ndefault = \"eventual\"\n\n[[rules]]\ntag = \"report\"\nconsistency = \"eventual\"\n\n\
                   [lag]\nmax_bytes = 1024\n"),
        );
        let plan = plan(&running, new);
        assert_eq!(
            plan.applied,
            ["replicas", "lag", "users", "consistency", "rules"]
        );
        assert_eq!(plan.restart, ["proxy.listen"]);
        assert_eq!(plan.config.proxy.listen, "127.0.0.1:6432");
        assert_eq!(plan.config.replicas[0].port, 5434);
        assert_eq!(plan.config.lag.max_bytes, 1024);
        assert_eq!(plan.config.users[0].password.as_deref(), Some("two"));
        assert_eq!(plan.config.rules.len(), 1);
    }

    #[test]
    fn replicas_are_added_and_removed_in_place_but_the_primary_needs_a_restart() {
        let running = parse(BASE);
        let two = format!("{BASE}\n[[replicas]]\nname = \"r2\"\nhost = \"db3\"\nport = 5435\n");
        let added = plan(&running, parse(&two));
        assert_eq!((added.applied, added.restart), (vec!["replicas"], vec![]));
        let removed = plan(&parse(&two), running.clone());
        assert_eq!(removed.applied, ["replicas"]);
        assert!(removed.config.replicas.iter().all(|r| r.name == "r1"));
        let moved = plan(
            &running,
            parse(&BASE.replace("host = \"db\"", "host = \"db9\"")),
        );
        assert_eq!((moved.applied, moved.restart), (vec![], vec!["primary"]));
        assert_eq!(moved.config.primary.host, "db");
    }

    #[test]
    fn replicas_need_a_restart_only_when_failovers_are_followed() {
        let follow = format!("{BASE}\n[failover]\nmode = \"follow\"\n");
        let running = parse(&follow);
        let new = parse(&follow.replace("port = 5433", "port = 5434"));
        let plan_follow = plan(&running, new);
        assert_eq!(plan_follow.restart, ["replicas"]);
        assert_eq!(plan_follow.config.replicas, running.replicas);
        let mut none = parse(BASE);
        none.replicas.clear();
        let from_none = plan(&none, parse(BASE));
        assert_eq!(
            (from_none.applied, from_none.restart),
            (vec!["replicas"], vec![])
        );
        assert_eq!(from_none.config.replicas.len(), 1);
    }

    #[test]
    fn lag_needs_a_restart_only_when_a_redis_store_would_forget_floors_too_early() {
        let redis = format!(
            "{BASE}\n[session_store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n\n[lag]\nmax_seconds = \"5s\"\n"
        );
        let running = parse(&redis);
        let lower = plan(&running, parse(&redis.replace("\"5s\"", "\"2s\"")));
        assert_eq!((lower.applied, lower.restart), (vec!["lag"], vec![]));
        let higher = plan(&running, parse(&redis.replace("\"5s\"", "\"9s\"")));
        assert_eq!((higher.applied, higher.restart), (vec![], vec!["lag"]));
        assert_eq!(higher.config.lag, running.lag);
        // The memory store keeps floors for session_ttl (60s by default): raising the limit
        // is fine while the running ttl covers it.
        let memory = parse(BASE);
        let mut raised = memory.clone();
        raised.lag.max_seconds *= 3;
        assert_eq!(plan(&memory, raised.clone()).applied, ["lag"]);
        raised.lag.max_seconds = std::time::Duration::from_secs(90);
        raised.session_store.session_ttl = std::time::Duration::from_secs(120);
        let beyond = plan(&memory, raised);
        assert_eq!(beyond.restart, ["lag", "session_store"]);
        assert_eq!(beyond.config.lag, memory.lag);
    }

    #[test]
    fn the_monitor_database_applies_in_place() {
        let running = parse(BASE);
        let new = parse(&format!("{BASE}\n[monitor]\ndatabase = \"app\"\n"));
        let plan = plan(&running, new);
        assert_eq!((plan.applied, plan.restart), (vec!["monitor"], vec![]));
        assert_eq!(plan.config.monitor.database, "app");
    }

    #[test]
    fn pool_sizes_apply_in_place() {
        let running = parse(&format!("{BASE}pool_size = 5\n"));
        let new = parse(&format!(
            "[proxy]\npool_size = 7\n{}pool_size = 9\n\n[[users]]\nname = \"new\"\npassword = \"x\"\n",
            BASE.replace("[proxy]\n", "")
        ));
        let plan = plan(&running, new);
        assert_eq!(plan.restart, Vec::<&str>::new());
        assert_eq!(plan.applied, ["users", "proxy.pool_size"]);
        assert_eq!(plan.config.users[0].pool_size, Some(9));
        assert_eq!(plan.config.proxy.pool_size, 7);
    }
}
