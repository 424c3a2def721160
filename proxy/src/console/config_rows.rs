//! `SHOW CONFIG`: every setting in force as (key, value) text, with passwords and the
//! credentials inside URLs redacted (DESIGN.md §8). Pure.

use std::time::Duration;

use super::table::{text, Table};
use crate::config::secret::{redact, redact_url};
use crate::config::Config;

/// Columns of `SHOW CONFIG`.
pub(super) const COLUMNS: &[&str] = &["key", "value"];

/// The configuration as rows.
pub(super) fn table(config: &Config) -> Table {
    let mut table = Table::new(COLUMNS);
    for (key, value) in rows(config) {
        table.push(vec![Some(key), value]);
    }
    table
}

/// A duration as the config file spells it (`"50ms"`, `"5s"`).
fn dur(d: Duration) -> Option<String> {
    if d.subsec_nanos() == 0 {
        return text(format!("{}s", d.as_secs()));
    }
    if d.subsec_nanos() % 1_000_000 == 0 {
        return text(format!("{}ms", d.as_millis()));
    }
    text(format!("{}us", d.as_micros()))
}

fn rows(c: &Config) -> Vec<(String, Option<String>)> {
    let p = &c.proxy;
    let mut rows: Vec<(String, Option<String>)> = vec![
        ("proxy.listen".into(), text(&p.listen)),
        ("proxy.admin_listen".into(), text(&p.admin_listen)),
        ("proxy.admin_users".into(), text(p.admin_users.join(","))),
        (
            "proxy.ready_without_primary".into(),
            text(p.ready_without_primary),
        ),
        ("proxy.pool_mode".into(), text(p.pool_mode.as_str())),
        ("proxy.pool_size".into(), text(p.pool_size)),
        (
            "proxy.max_client_connections".into(),
            text(p.max_client_connections),
        ),
        ("proxy.connect_timeout".into(), dur(p.connect_timeout)),
        ("proxy.startup_timeout".into(), dur(p.startup_timeout)),
        ("proxy.checkout_timeout".into(), dur(p.checkout_timeout)),
        (
            "proxy.client_idle_timeout".into(),
            dur(p.client_idle_timeout),
        ),
        (
            "proxy.server_idle_timeout".into(),
            dur(p.server_idle_timeout),
        ),
        (
            "proxy.idle_transaction_timeout".into(),
            dur(p.idle_transaction_timeout),
        ),
        ("proxy.server_lifetime".into(), dur(p.server_lifetime)),
        ("proxy.max_message_bytes".into(), text(p.max_message_bytes)),
        ("proxy.shutdown_timeout".into(), dur(p.shutdown_timeout)),
        (
            "proxy.max_prepared_statements".into(),
            text(p.max_prepared_statements),
        ),
        (
            "proxy.max_client_prepared_statements".into(),
            text(p.max_client_prepared_statements),
        ),
        (
            "proxy.max_client_prepared_bytes".into(),
            text(p.max_client_prepared_bytes),
        ),
        ("proxy.workers".into(), text(p.workers)),
        ("proxy.peer_id".into(), text(p.peer_id)),
        ("primary.host".into(), text(&c.primary.host)),
        ("primary.port".into(), text(c.primary.port)),
    ];
    for (i, r) in c.replicas.iter().enumerate() {
        rows.push((format!("replicas.{i}.name"), text(&r.name)));
        rows.push((format!("replicas.{i}.host"), text(&r.host)));
        rows.push((format!("replicas.{i}.port"), text(r.port)));
        rows.push((format!("replicas.{i}.weight"), text(r.weight)));
    }
    for (i, u) in c.users.iter().enumerate() {
        rows.push((format!("users.{i}.name"), text(&u.name)));
        rows.push((
            format!("users.{i}.password"),
            redact(&u.password).map(str::to_owned),
        ));
        rows.push((format!("users.{i}.pool_size"), u.pool_size.and_then(text)));
    }
    let (cs, lag, store) = (&c.consistency, &c.lag, &c.session_store);
    rows.extend([
        ("auth.method".into(), text(c.auth.method.as_str())),
        ("consistency.default".into(), text(cs.default.as_str())),
        ("consistency.max_wait".into(), dur(cs.max_wait)),
        ("consistency.max_lag".into(), dur(cs.max_lag)),
        ("lag.poll_interval".into(), dur(lag.poll_interval)),
        ("lag.max_bytes".into(), text(lag.max_bytes)),
        ("lag.max_seconds".into(), dur(lag.max_seconds)),
        ("lag.readmit_fraction".into(), text(lag.readmit_fraction)),
        ("lag.readmit_after".into(), dur(lag.readmit_after)),
        ("lag.stale_after".into(), dur(lag.stale_after)),
        ("lag.probe_timeout".into(), dur(lag.probe_timeout)),
        ("monitor.database".into(), text(&c.monitor.database)),
        ("session.key".into(), text(c.session.key.as_str())),
        ("session.scope".into(), text(c.session.scope.as_str())),
        ("session_store.kind".into(), text(store.kind.as_str())),
        ("session_store.url".into(), text(redact_url(&store.url))),
        ("session_store.session_ttl".into(), dur(store.session_ttl)),
        ("session_store.timeout".into(), dur(store.timeout)),
        (
            "session_store.cluster_nodes".into(),
            text(
                store
                    .cluster_nodes
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ),
        (
            "functions.read_only".into(),
            text(c.functions.read_only.join(",")),
        ),
        (
            "functions.writes".into(),
            text(c.functions.writes.join(",")),
        ),
    ]);
    rows.push(("failover.mode".into(), text(c.failover.mode.as_str())));
    rows.push((
        "failover.query_wait_timeout".into(),
        dur(c.failover.query_wait_timeout),
    ));
    for (i, peer) in c.peers.iter().enumerate() {
        rows.push((
            format!("peers.{i}"),
            text(format!("{} {}:{}", peer.id, peer.host, peer.port)),
        ));
    }
    for (i, rule) in c.rules.iter().enumerate() {
        rows.push((format!("rules.{i}"), text(format!("{rule:?}"))));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_settings_listed() {
        let config = Config::from_toml(
            "[proxy]\nadmin_users = [\"ops\"]\n\n[primary]\nhost = \"db\"\nport = 5432\n\n\
             [[replicas]]\nname = \"r1\"\nhost = \"db2\"\nport = 5433\n\n\
             [[users]]\nname = \"app\"\npassword = \"s3cret\"\n\n\
             [lag]\npoll_interval = \"50ms\"\n\n\
             [session_store]\nkind = \"redis\"\nurl = \"redis://u:hunter2@redis:6379/0\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let table = table(&config);
        let all = format!("{:?}", table.rows);
        assert!(!all.contains("s3cret") && !all.contains("hunter2"), "{all}");
        let value = |key: &str| {
            table
                .rows
                .iter()
                .find(|row| row[0].as_deref() == Some(key))
                .and_then(|row| row[1].clone())
        };
        assert_eq!(value("users.0.password").as_deref(), Some("***"));
        assert_eq!(
            value("session_store.url").as_deref(),
            Some("redis://u:***@redis:6379/0")
        );
        assert_eq!(value("lag.poll_interval").as_deref(), Some("50ms"));
        assert_eq!(value("replicas.0.name").as_deref(), Some("r1"));
        assert_eq!(value("proxy.admin_users").as_deref(), Some("ops"));
        assert_eq!(value("proxy.connect_timeout").as_deref(), Some("5s"));
    }
}
