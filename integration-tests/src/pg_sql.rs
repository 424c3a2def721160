//! SQL-level helpers on [`PgNode`]: connections, replay control, LSNs, promotion.
//!
//! Each helper connects afresh in the caller's tokio runtime, as superuser `postgres`
//! to database `app` (trust), so a [`PgNode`] holds no runtime-bound resources.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::pg::PgNode;

/// How long pause/resume/reload helpers wait for the server to confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// WAL positions of a node, as seen by [`PgNode::lsns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLsns {
    /// `pg_is_in_recovery()`: true on a replica.
    pub in_recovery: bool,
    /// `pg_current_wal_insert_lsn()`; `None` on a replica.
    pub insert: Option<PgLsn>,
    /// `pg_last_wal_replay_lsn()`; `None` on a primary.
    pub replay: Option<PgLsn>,
    /// `pg_last_wal_receive_lsn()`; `None` on a primary (or before streaming began).
    pub receive: Option<PgLsn>,
    /// Current timeline (primary: of its insert position; replica: received timeline,
    /// else its last checkpoint's).
    pub timeline: u32,
}

const LSNS_SQL: &str = "SELECT pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn() END,
  pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn(),
  CASE WHEN pg_is_in_recovery()
    THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver),
                  (SELECT timeline_id FROM pg_control_checkpoint()))
    ELSE ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int
  END";

impl PgNode {
    /// Connects as superuser `postgres` to database `app`; the connection task is
    /// spawned on the current tokio runtime.
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.connect("postgres", "app").await
    }

    /// Connects as `user` to `db` (see [`conn_string`](Self::conn_string)).
    pub async fn connect(&self, user: &str, db: &str) -> anyhow::Result<Client> {
        let (client, conn) = tokio_postgres::connect(&self.conn_string(user, db), NoTls)
            .await
            .with_context(|| {
                format!("connecting to {} (port {}) as {user}", self.name, self.port)
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Runs `sql` with the simple query protocol and returns the first column of the
    /// first row as text (`None` if there is no row or the value is NULL).
    pub async fn query_one_string(&self, sql: &str) -> anyhow::Result<Option<String>> {
        let client = self.client().await?;
        first_value(&client, sql)
            .await
            .with_context(|| format!("{}: {sql}", self.name))
    }

    /// Pauses WAL replay on this replica and waits until the pause is in effect.
    pub async fn pause_replay(&self) -> anyhow::Result<()> {
        let client = self.client().await?;
        client.simple_query("SELECT pg_wal_replay_pause()").await?;
        self.wait_pause_state(&client, "paused").await
    }

    /// Resumes WAL replay on this replica and waits until it is no longer paused.
    pub async fn resume_replay(&self) -> anyhow::Result<()> {
        let client = self.client().await?;
        client.simple_query("SELECT pg_wal_replay_resume()").await?;
        self.wait_pause_state(&client, "not paused").await
    }

    /// Whether replay is paused or a pause was requested on this replica.
    pub async fn is_replay_paused(&self) -> anyhow::Result<bool> {
        let state = self
            .query_one_string("SELECT pg_get_wal_replay_pause_state()")
            .await?;
        Ok(state.as_deref() != Some("not paused"))
    }

    async fn wait_pause_state(&self, client: &Client, want: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        loop {
            let state = first_value(client, "SELECT pg_get_wal_replay_pause_state()").await?;
            if state.as_deref() == Some(want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: replay pause state is {state:?}, wanted {want:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sets `recovery_min_apply_delay` with ALTER SYSTEM and reloads the configuration;
    /// `Duration::ZERO` resets it. Returns once the new value is visible to sessions.
    pub async fn set_apply_delay(&self, delay: Duration) -> anyhow::Result<()> {
        let client = self.client().await?;
        let ms = delay.as_millis();
        let stmt = if ms == 0 {
            "ALTER SYSTEM RESET recovery_min_apply_delay".to_string()
        } else {
            format!("ALTER SYSTEM SET recovery_min_apply_delay = '{ms}ms'")
        };
        client.simple_query(&stmt).await?;
        client.simple_query("SELECT pg_reload_conf()").await?;
        let sql = "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'";
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        loop {
            let fresh = self.client().await?;
            if first_value(&fresh, sql).await?.as_deref() == Some(ms.to_string().as_str()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: recovery_min_apply_delay did not become {ms}ms",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads the node's recovery state, WAL positions and timeline.
    pub async fn lsns(&self) -> anyhow::Result<NodeLsns> {
        let client = self.client().await?;
        let row = client
            .query_one(LSNS_SQL, &[])
            .await
            .with_context(|| format!("{}: reading LSNs", self.name))?;
        let timeline: i32 = row.try_get(4)?;
        Ok(NodeLsns {
            in_recovery: row.try_get(0)?,
            insert: row.try_get(1)?,
            replay: row.try_get(2)?,
            receive: row.try_get(3)?,
            timeline: u32::try_from(timeline).context("negative timeline")?,
        })
    }

    /// Promotes this replica (`pg_promote(true, 30)`) and fails if it did not finish.
    pub async fn promote(&self) -> anyhow::Result<()> {
        let done = self.query_one_string("SELECT pg_promote(true, 30)").await?;
        if done.as_deref() != Some("t") {
            bail!("{}: pg_promote did not complete within 30s", self.name);
        }
        Ok(())
    }
}

/// First column of the first row of a simple query, as text.
async fn first_value(client: &Client, sql: &str) -> anyhow::Result<Option<String>> {
    for msg in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = msg {
            return Ok(row.try_get(0)?.map(str::to_string));
        }
    }
    Ok(None)
}
