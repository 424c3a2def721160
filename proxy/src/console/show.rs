//! The `SHOW` results, gathered from the running instance: pools, clients, servers, nodes
//! and totals. Column names follow PgBouncer's where the concept is the same.

use std::time::{Duration, Instant, SystemTime};

use super::command::{Show, COMMANDS};
use super::registry::{self, ClientRow};
use super::table::{text, Table};
use crate::backend::NodeAddr;
use crate::cancel::CancelTarget;
use crate::context::Context;

/// How long an idle server connection may rest before its next checkout probes it first
/// (the pool's check delay): `sv_idle` below it, `sv_used` past it.
const CHECK_DELAY: Duration = Duration::from_secs(1);

const POOLS: &[&str] = &[
    "database",
    "user",
    "node",
    "cl_active",
    "cl_waiting",
    "sv_active",
    "sv_idle",
    "sv_used",
    "maxwait",
    "maxwait_us",
    "pool_mode",
    "pool_size",
];
const CLIENTS: &[&str] = &[
    "type",
    "user",
    "database",
    "state",
    "addr",
    "port",
    "connect_time",
    "node",
    "remote_pid",
    "pid",
];
const SERVERS: &[&str] = &[
    "type",
    "user",
    "database",
    "node",
    "state",
    "addr",
    "port",
    "connect_time",
    "remote_pid",
    "link",
];
const NODES: &[&str] = &[
    "name",
    "role",
    "host",
    "port",
    "state",
    "lag_bytes",
    "lag_seconds",
    "reason",
    "detail",
    "timeline",
    "last_error",
];
const STATS: &[&str] = &[
    "database",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
];
const NODE_STATS: &[&str] = &[
    "node",
    "total_query_count",
    "total_query_time",
    "avg_query_time",
    "total_checkout_count",
    "total_wait_time",
    "total_evictions",
];
const HELP: &[&str] = &["command"];

/// The result of `SHOW <what>` on `ctx` (`SHOW CONFIG` included).
pub fn table(ctx: &Context, what: Show) -> Table {
    match what {
        Show::Pools => pools(ctx),
        Show::Clients => clients(ctx),
        Show::Servers => servers(ctx),
        Show::Nodes => nodes(ctx),
        Show::Stats => stats(ctx),
        Show::NodeStats => node_stats(ctx),
        Show::Config => super::config_rows::table(&ctx.reload.live().config),
        Show::Help => help(),
    }
}

/// Every command, one per row.
pub fn help() -> Table {
    let mut table = Table::new(HELP);
    for command in COMMANDS {
        table.push(vec![text(command)]);
    }
    table
}

/// The configured nodes, `[primary]` first.
fn node_addrs(ctx: &Context) -> Vec<&NodeAddr> {
    ctx.nodes.iter().collect()
}

/// The node a client's server connection is on.
fn node_of<'a>(nodes: &[&'a NodeAddr], target: &CancelTarget) -> Option<&'a str> {
    nodes
        .iter()
        .find(|n| n.host == target.host && n.port == target.port)
        .map(|n| &*n.name)
}

fn pools(ctx: &Context) -> Table {
    let mut table = Table::new(POOLS);
    let clients = registry::list(&ctx.cancels);
    let now = Instant::now();
    let mut pools = ctx.pools.all();
    let nodes = node_addrs(ctx);
    let order = |name: &str| nodes.iter().position(|n| &*n.name == name);
    pools.sort_by(|a, b| {
        (&a.key.database, &a.key.user, order(&a.key.node)).cmp(&(
            &b.key.database,
            &b.key.user,
            order(&b.key.node),
        ))
    });
    let mode = ctx.config.proxy.pool_mode.as_str();
    for pool in pools {
        let key = &pool.key;
        let linked = clients
            .iter()
            .filter(|c| *c.info.user == *key.user && *c.info.database == *key.database)
            .filter(|c| {
                c.server
                    .as_ref()
                    .is_some_and(|t| node_of(&nodes, t) == Some(&*key.node))
            })
            .count();
        let (waiting, maxwait) = pool.waiters().snapshot(now);
        let (_, in_use) = pool.counts();
        let idle = pool.idle_conns();
        let used = idle
            .iter()
            .filter(|c| now.saturating_duration_since(c.last_used) >= CHECK_DELAY)
            .count();
        table.push(vec![
            text(&key.database),
            text(&key.user),
            text(&key.node),
            text(linked),
            text(waiting),
            text(in_use),
            text(idle.len() - used),
            text(used),
            text(maxwait.as_secs()),
            text(maxwait.subsec_micros()),
            text(mode),
            text(pool.pool_size()),
        ]);
    }
    table
}

fn clients(ctx: &Context) -> Table {
    let mut table = Table::new(CLIENTS);
    let nodes = node_addrs(ctx);
    for ClientRow { pid, info, server } in registry::list(&ctx.cancels) {
        let node = server.as_ref().and_then(|t| node_of(&nodes, t));
        table.push(vec![
            text("C"),
            text(&info.user),
            text(&info.database),
            text(if server.is_some() { "active" } else { "idle" }),
            text(info.addr.ip()),
            text(info.addr.port()),
            text(timestamp(info.connected_at)),
            node.and_then(text),
            server.as_ref().and_then(|t| text(t.pid)),
            text(pid),
        ]);
    }
    table
}

fn servers(ctx: &Context) -> Table {
    let mut table = Table::new(SERVERS);
    let nodes = node_addrs(ctx);
    for ClientRow { pid, info, server } in registry::list(&ctx.cancels) {
        let Some(target) = server else { continue };
        table.push(vec![
            text("S"),
            text(&info.user),
            text(&info.database),
            node_of(&nodes, &target).and_then(text),
            text("active"),
            text(&target.host),
            text(target.port),
            None,
            text(target.pid),
            text(pid),
        ]);
    }
    let (now, wall) = (Instant::now(), SystemTime::now());
    for pool in ctx.pools.all() {
        let node = pool.node();
        for conn in pool.idle_conns() {
            let rested = now.saturating_duration_since(conn.last_used);
            let age = now.saturating_duration_since(conn.created);
            table.push(vec![
                text("S"),
                text(&pool.key.user),
                text(&pool.key.database),
                text(&node.name),
                text(if rested >= CHECK_DELAY {
                    "used"
                } else {
                    "idle"
                }),
                text(&node.host),
                text(node.port),
                wall.checked_sub(age).map(timestamp).and_then(text),
                text(conn.pid),
                None,
            ]);
        }
    }
    table
}

fn nodes(ctx: &Context) -> Table {
    let mut table = Table::new(NODES);
    let snapshot = ctx.topology.snapshot();
    let nodes = node_addrs(ctx);
    for status in snapshot.nodes() {
        let addr = nodes.iter().find(|n| n.name == status.name);
        table.push(vec![
            text(&status.name),
            text(status.role.label()),
            addr.and_then(|a| text(&a.host)),
            addr.and_then(|a| text(a.port)),
            text(status.state.label()),
            status.lag_bytes.and_then(text),
            status.lag_seconds.and_then(|d| text(d.as_secs_f64())),
            status.reason.and_then(|r| text(r.label())),
            status.reason.and_then(text),
            status.timeline.and_then(text),
            status.last_error.as_deref().and_then(text),
        ]);
    }
    table
}

/// Per database since start, PgBouncer's columns: totals, then per-second rates and
/// per-transaction or per-request times (µs) averaged over the time since start.
fn stats(ctx: &Context) -> Table {
    let registry = &ctx.console.stats;
    stats_table(&registry.all(), registry.uptime())
}

fn stats_table(all: &[(String, super::stats::Totals)], uptime: Duration) -> Table {
    let mut table = Table::new(STATS);
    let seconds = uptime.as_secs().max(1);
    for (database, t) in all {
        table.push(vec![
            text(database),
            text(t.xacts),
            text(t.queries),
            text(t.received),
            text(t.sent),
            text(t.xact_us),
            text(t.query_us),
            text(t.wait_us),
            text(t.xacts / seconds),
            text(t.queries / seconds),
            text(t.received / seconds),
            text(t.sent / seconds),
            text(t.xact_us.checked_div(t.xacts).unwrap_or(0)),
            text(t.query_us.checked_div(t.queries).unwrap_or(0)),
            text(t.wait_us.checked_div(t.xacts).unwrap_or(0)),
        ]);
    }
    table
}

/// Per node since start: requests routed and timed there, checkouts, evictions.
fn node_stats(ctx: &Context) -> Table {
    let mut table = Table::new(NODE_STATS);
    for node in node_addrs(ctx) {
        let t = ctx.metrics.node_totals(&node.name);
        let micros = |seconds: f64| (seconds * 1e6).round() as u64;
        let avg = micros(t.query_seconds).checked_div(t.timed).unwrap_or(0);
        table.push(vec![
            text(&node.name),
            text(t.queries),
            text(micros(t.query_seconds)),
            text(avg),
            text(t.checkouts),
            text(micros(t.wait_seconds)),
            text(t.evictions),
        ]);
    }
    table
}

/// `2026-12-05 14:37:09 UTC` (seconds since the epoch when before it, which cannot be).
fn timestamp(at: SystemTime) -> String {
    let Ok(since) = at.duration_since(SystemTime::UNIX_EPOCH) else {
        return "1970-01-01 00:00:00 UTC".to_owned();
    };
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_481_429);
        assert_eq!(timestamp(at), "2026-12-05 14:37:09 UTC");
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn stats_rows_average_over_the_time_since_start() {
        let totals = crate::console::stats::Totals {
            xacts: 100,
            queries: 250,
            received: 10_000,
            sent: 40_000,
            xact_us: 50_000,
            query_us: 75_000,
            wait_us: 2_000,
        };
        let table = stats_table(&[("app".to_owned(), totals)], Duration::from_secs(10));
        let cell = |column| table.get(0, column);
        assert_eq!(cell("database"), Some("app"));
        assert_eq!(cell("total_xact_count"), Some("100"));
        assert_eq!(cell("total_sent"), Some("40000"));
        assert_eq!(cell("avg_xact_count"), Some("10"));
        assert_eq!(cell("avg_query_count"), Some("25"));
        assert_eq!(cell("avg_recv"), Some("1000"));
        assert_eq!(cell("avg_xact_time"), Some("500"));
        assert_eq!(cell("avg_query_time"), Some("300"));
        assert_eq!(cell("avg_wait_time"), Some("20"));
        let idle = stats_table(&[("idle".to_owned(), Default::default())], Duration::ZERO);
        assert_eq!(idle.get(0, "avg_xact_time"), Some("0"));
    }

    #[test]
    fn help_lists_the_commands() {
        let help = help();
        assert_eq!(help.rows.len(), COMMANDS.len());
        assert_eq!(help.get(1, "command"), Some("SHOW POOLS"));
    }
}
