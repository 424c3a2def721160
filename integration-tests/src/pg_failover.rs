//! Failover helpers on [`PgNode`]: point a replica at a new primary after a promotion and
//! wait until it streams the new timeline from it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::pg::{PgNode, HOST};

impl PgNode {
    /// Makes this replica stream from `primary`: `ALTER SYSTEM SET primary_conninfo` and a
    /// reload (PostgreSQL 13+ restarts the WAL receiver on reload). It then follows the
    /// new primary's timeline (`recovery_target_timeline = 'latest'`, the default).
    pub async fn follow(&self, primary: &PgNode) -> anyhow::Result<()> {
        let conninfo = format!(
            "host={HOST} port={} user=postgres application_name={}",
            primary.port, self.name
        );
        let client = self.client().await?;
        client
            .batch_execute(&format!("ALTER SYSTEM SET primary_conninfo = '{conninfo}'"))
            .await
            .with_context(|| format!("{}: setting primary_conninfo", self.name))?;
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .with_context(|| format!("{}: reloading", self.name))?;
        Ok(())
    }

    /// Stops this node (an old primary) and makes it a hot standby of `primary` on the
    /// same port, from a fresh base backup (what `pg_rewind` achieves faster). Blocking.
    pub fn rebuild_as_replica(&self, primary: &PgNode) -> anyhow::Result<()> {
        if self.is_running() {
            self.stop()?;
        }
        crate::pg_init::rebuild_as_replica(self, primary)
    }

    /// Waits until this replica's WAL receiver streams timeline `timeline`.
    pub async fn wait_streaming(&self, timeline: u32, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no sample");
        while Instant::now() < deadline {
            if let Ok(client) = self.client().await {
                let row = client
                    .query_opt("SELECT status, received_tli FROM pg_stat_wal_receiver", &[])
                    .await;
                match row {
                    Ok(Some(row)) => {
                        let status: String = row.try_get(0)?;
                        let tli: Option<i32> = row.try_get(1)?;
                        if status == "streaming" && tli == i32::try_from(timeline).ok() {
                            return Ok(());
                        }
                        last = format!("{status} on timeline {tli:?}");
                    }
                    Ok(None) => last = "no WAL receiver".to_owned(),
                    Err(err) => last = err.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{} does not stream timeline {timeline} after {timeout:?}: {last}",
            self.name
        )
    }
}
