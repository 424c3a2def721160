//! What a reload changes (pure): the new file's settings that apply in place, and the keys
//! that differ but need a restart, which keep their running values.

use crate::config::Config;

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
    keep!(replicas, "replicas");
    keep!(lag, "lag");
    keep!(monitor, "monitor");
    keep!(session_store, "session_store");
    keep!(failover.mode, "failover.mode");
    keep!(proxy.peer_id, "proxy.peer_id");
    keep!(peers, "peers");
    keep!(server_tls, "server_tls");
    // In place: for connections that start from now on, and for pools (sizes and the
    // passwords of their logins, see `Pools::reconfigure`).
    macro_rules! apply {
        ($($field:ident).+, $name:literal) => {
            if running.$($field).+ != next.$($field).+ {
                applied.push($name);
            }
        };
    }
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
    apply!(failover.query_wait_timeout, "failover.query_wait_timeout");
    apply!(client_tls, "client_tls");
    Plan {
        config: next,
        applied,
        restart,
    }
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
    fn users_rules_and_consistency_apply_and_listeners_and_nodes_wait_for_a_restart() {
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
        assert_eq!(plan.applied, ["users", "consistency", "rules"]);
        assert_eq!(plan.restart, ["proxy.listen", "replicas", "lag"]);
        assert_eq!(plan.config.proxy.listen, "127.0.0.1:6432");
        assert_eq!(plan.config.replicas, running.replicas);
        assert_eq!(plan.config.lag, running.lag);
        assert_eq!(plan.config.users[0].password.as_deref(), Some("two"));
        assert_eq!(plan.config.rules.len(), 1);
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
