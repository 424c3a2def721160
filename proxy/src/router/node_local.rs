//! Statements that read one node's own state (pure): its sessions, locks, statistics,
//! prepared transactions, WAL position or recovery state. Each node answers them for
//! itself, so a replica's answer says nothing about the client's session on the primary
//! (a monitor polling `pg_stat_activity` for the query it wants to cancel never sees it
//! there). They go to the primary unless a hint routes them (pgpool-II does not balance
//! system-catalog queries either).

/// Relations whose rows are the answering node's own.
const RELATIONS: &[&str] = &[
    "pg_stat_activity",
    "pg_locks",
    "pg_prepared_xacts",
    "pg_replication_slots",
    "pg_backend_memory_contexts",
    "pg_stat_replication",
    "pg_stat_wal_receiver",
    "pg_stat_ssl",
    "pg_stat_gssapi",
    "pg_stat_progress_vacuum",
    "pg_cursors",
    "pg_prepared_statements",
];

/// Relation name prefixes likewise (statistics views).
const RELATION_PREFIXES: &[&str] = &["pg_stat_", "pg_statio_"];

/// Functions whose result is the answering node's own.
const FUNCTIONS: &[&str] = &[
    "pg_backend_pid",
    "pg_is_in_recovery",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_get_wal_replay_pause_state",
    "pg_is_wal_replay_paused",
    "pg_postmaster_start_time",
    "pg_conf_load_time",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
    "pg_current_snapshot",
    "txid_current_snapshot",
    "pg_current_logfile",
];

/// Function name prefixes likewise.
const FUNCTION_PREFIXES: &[&str] = &["pg_stat_get_"];

/// A catalog name without its `pg_catalog.` schema.
fn bare(name: &str) -> &str {
    name.strip_prefix("pg_catalog.").unwrap_or(name)
}

/// Whether a statement naming these relations and functions (as the classifier lists them:
/// folded, bare or `schema.name`) reads a node's own state.
pub fn reads_node_state(tables: &[String], functions: &[String]) -> bool {
    // Every name listed above starts with `pg_`: most names fail this first test.
    let node_relation = |name: &String| {
        let name = bare(name);
        name.starts_with("pg_") && RELATIONS.contains(&name)
            || (RELATION_PREFIXES.iter().any(|p| name.starts_with(p))
                && name != "pg_stat_statements"
                && name != "pg_stat_statements_info")
    };
    let node_function = |name: &String| {
        let name = bare(name);
        name.starts_with("pg_") && FUNCTIONS.contains(&name)
            || FUNCTION_PREFIXES.iter().any(|p| name.starts_with(p))
    };
    tables.iter().any(node_relation) || functions.iter().any(node_function)
}

/// Settings whose value is the node's own on a standby (`transaction_read_only` is always
/// on there, whatever the session asked for).
const STANDBY_SETTINGS: &[&[u8]] = &[
    b"transaction_read_only",
    b"default_transaction_read_only",
    b"in_hot_standby",
];

/// Whether statement text names a setting a standby answers for itself (`SHOW
/// transaction_read_only`, `current_setting('in_hot_standby')`), or may (`current_setting`
/// of a parameter).
pub fn names_standby_setting(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    // `current_setting($1)`: the name comes with the parameters, so it may be one of them.
    if memchr::memmem::find(bytes, b"current_setting").is_some() && bytes.contains(&b'$') {
        return true;
    }
    memchr::memmem::find(bytes, b"_read_only").is_some()
        && STANDBY_SETTINGS
            .iter()
            .any(|name| memchr::memmem::find(bytes, name).is_some())
        || memchr::memmem::find(bytes, b"in_hot_standby").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn node_state_is_told_from_shared_catalogs_and_data() {
        let yes = |t: &[&str], f: &[&str]| reads_node_state(&names(t), &names(f));
        assert!(yes(&["pg_stat_activity"], &[]));
        assert!(yes(&["pg_catalog.pg_locks", "pg_locks"], &[]));
        assert!(yes(&["pg_stat_user_tables"], &[]));
        assert!(yes(&[], &["pg_backend_pid"]));
        assert!(yes(&[], &["pg_catalog.pg_is_in_recovery"]));
        assert!(!yes(
            &["accounts", "pg_class"],
            &["now", "inet_server_port"]
        ));
        assert!(
            !yes(&["pg_stat_statements"], &[]),
            "shared in practice, and used by tests"
        );
        assert!(!yes(&["app.pg_stat_activity_copy"], &[]));
    }

    #[test]
    fn settings_a_standby_answers_for_itself_are_found() {
        assert!(names_standby_setting("SHOW transaction_read_only"));
        assert!(names_standby_setting(
            "SELECT current_setting('IN_HOT_STANDBY')"
        ));
        assert!(!names_standby_setting("SHOW work_mem"));
        assert!(!names_standby_setting("SELECT read_only FROM t"));
        assert!(names_standby_setting(
            "select current_setting($1), current_setting($2)"
        ));
        assert!(!names_standby_setting(
            "SELECT current_setting('app.user_id')"
        ));
    }
}
