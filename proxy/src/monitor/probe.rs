//! The control connection of one node and the one-statement samples taken on it.
//!
//! Each node gets its own tokio-postgres connection (no TLS), logged in as the monitor's
//! [`Login`]. A sample is one prepared statement, so one round trip per poll.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, NoTls, Row, Statement};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::sample::{PauseState, PrimarySample, ReplicaSample};
use crate::config::Config;
use crate::lsn::{normalize_insert_lsn, Lsn};

/// `application_name` of the control connections, so operators can spot them in
/// `pg_stat_activity`.
pub(crate) const APPLICATION_NAME: &str = "causeway-monitor";

/// Login user when the config has no `[[users]]` at all.
const FALLBACK_USER: &str = "postgres";

/// Sizes used when the server's settings cannot be read (PostgreSQL's defaults).
const DEFAULT_WAL_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;
const DEFAULT_WAL_BLOCK_SIZE: u64 = 8192;

/// The primary's sample. Guarded so that a "primary" in recovery answers instead of
/// failing: the WAL position functions raise 55000 there.
const PRIMARY_SQL: &str = "SELECT pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn() END,
  CASE WHEN pg_is_in_recovery() THEN NULL
       ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END";

/// WAL geometry, read once per primary connection (`pg_settings` gives bytes where
/// `SHOW wal_segment_size` gives `16MB`).
const WAL_SIZES_SQL: &str = "SELECT
  (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
  (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_block_size')";

/// A replica's sample, in one statement. `pg_stat_wal_receiver` has a row only while a
/// WAL receiver runs; its `received_tli` is NULL for users without `pg_read_all_stats`.
const REPLICA_SQL: &str = "SELECT pg_is_in_recovery(),
  pg_last_wal_replay_lsn(),
  pg_last_wal_receive_lsn(),
  CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END,
  r.pid IS NOT NULL,
  r.received_tli
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true";

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Connecting, preparing or running the statement failed.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// No answer within `lag.probe_timeout`.
    #[error("no answer within {0:?} (lag.probe_timeout)")]
    Timeout(Duration),
    /// The server answered with something unexpected.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// Who the monitor logs in as: the first `[[users]]` entry with a non-empty password
/// (else the first entry, else `postgres`), to the database named like the user (libpq's
/// default).
#[derive(Clone)]
pub(crate) struct Login {
    user: Arc<str>,
    password: Option<Arc<str>>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("user", &self.user).finish()
    }
}

impl Login {
    /// Picks the monitor's login from the config.
    pub(crate) fn from_config(config: &Config) -> Login {
        let with_password = config
            .users
            .iter()
            .find(|u| u.password.as_deref().is_some_and(|p| !p.is_empty()));
        match with_password.or_else(|| config.users.first()) {
            Some(user) => Login {
                user: Arc::from(user.name.as_str()),
                password: user.password.as_deref().map(Arc::from),
            },
            None => Login {
                user: Arc::from(FALLBACK_USER),
                password: None,
            },
        }
    }

    /// The user name.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }
}

/// Where and how to connect to one node.
#[derive(Debug, Clone)]
pub(crate) struct ProbeTarget {
    pub(crate) host: Arc<str>,
    pub(crate) port: u16,
    pub(crate) login: Login,
    pub(crate) timeout: Duration,
}

/// What a node is probed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Primary,
    Replica,
}

/// An open control connection with its prepared statement.
#[derive(Debug)]
pub(crate) struct Session {
    client: Client,
    statement: Statement,
    wal_sizes: (u64, u64),
}

/// One sample of either kind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sample {
    Primary(PrimarySample),
    Replica(ReplicaSample),
}

impl ProbeTarget {
    /// Opens a control connection and prepares the sample statement. The connection is
    /// driven by a tracked task that ends when the session is dropped or on `terminate`.
    pub(crate) async fn connect(
        &self,
        kind: Kind,
        tracker: &TaskTracker,
        terminate: &CancellationToken,
    ) -> Result<Session, ProbeError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&*self.host)
            .port(self.port)
            .user(self.login.user())
            .dbname(self.login.user())
            .application_name(APPLICATION_NAME)
            .connect_timeout(self.timeout);
        if let Some(password) = &self.login.password {
            config.password(password.as_bytes());
        }
        let (client, connection) = config.connect(NoTls).await?;
        let terminate = terminate.clone();
        tracker.spawn(tracing::Instrument::in_current_span(async move {
            tokio::select! {
                result = connection => if let Err(err) = result {
                    tracing::debug!(%err, "control connection ended");
                },
                () = terminate.cancelled() => {}
            }
        }));
        let (sql, wal_sizes) = match kind {
            Kind::Primary => (PRIMARY_SQL, read_wal_sizes(&client).await?),
            Kind::Replica => (REPLICA_SQL, (0, 0)),
        };
        let statement = client.prepare(sql).await?;
        Ok(Session {
            client,
            statement,
            wal_sizes,
        })
    }
}

impl Session {
    /// Takes one sample (one round trip).
    pub(crate) async fn sample(&self, kind: Kind) -> Result<Sample, ProbeError> {
        let row = self.client.query_one(&self.statement, &[]).await?;
        match kind {
            Kind::Primary => self.primary_sample(&row).map(Sample::Primary),
            Kind::Replica => replica_sample(&row).map(Sample::Replica),
        }
    }

    fn primary_sample(&self, row: &Row) -> Result<PrimarySample, ProbeError> {
        let in_recovery: bool = row.try_get(0)?;
        let insert: Option<Lsn> = row.try_get(1)?;
        let wal_file: Option<&str> = row.try_get(2)?;
        let (segment, block) = self.wal_sizes;
        Ok(PrimarySample {
            in_recovery,
            insert_lsn: insert.map(|lsn| normalize_insert_lsn(lsn, segment, block)),
            timeline: wal_file.map(parse_timeline).transpose()?,
        })
    }
}

fn replica_sample(row: &Row) -> Result<ReplicaSample, ProbeError> {
    let pause: Option<&str> = row.try_get(3)?;
    let received_tli: Option<i32> = row.try_get(5)?;
    Ok(ReplicaSample {
        in_recovery: row.try_get(0)?,
        replay_lsn: row.try_get(1)?,
        receive_lsn: row.try_get(2)?,
        pause: pause.map(PauseState::parse).unwrap_or_default(),
        wal_receiver: row.try_get(4)?,
        received_tli: received_tli.and_then(|t| u32::try_from(t).ok()),
    })
}

/// Reads `wal_segment_size` and `wal_block_size`, falling back to the defaults.
async fn read_wal_sizes(client: &Client) -> Result<(u64, u64), ProbeError> {
    let row = client.query_one(WAL_SIZES_SQL, &[]).await?;
    let size = |i: usize, default: u64| -> Result<u64, ProbeError> {
        let value: Option<i64> = row.try_get(i)?;
        Ok(value
            .and_then(|v| u64::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(default))
    };
    Ok((
        size(0, DEFAULT_WAL_SEGMENT_SIZE)?,
        size(1, DEFAULT_WAL_BLOCK_SIZE)?,
    ))
}

/// The timeline from the first 8 hex digits of a WAL file name.
fn parse_timeline(wal_file: &str) -> Result<u32, ProbeError> {
    wal_file
        .get(..8)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| ProbeError::Unexpected(format!("WAL file name {wal_file:?}")))
}

/// Runs `future` with the probe time limit.
pub(crate) async fn within<T>(
    limit: Duration,
    future: impl std::future::Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or(Err(ProbeError::Timeout(limit)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timelines_from_wal_file_names() {
        assert_eq!(parse_timeline("00000001").unwrap(), 1);
        assert_eq!(parse_timeline("0000000A0000000000000003").unwrap(), 10);
        assert!(parse_timeline("0001").is_err());
        assert!(parse_timeline("zzzzzzzz").is_err());
    }

    #[test]
    fn login_prefers_a_user_with_a_password() {
        let config = |users: &str| {
            Config::from_toml(&format!(
                "[primary]\nhost = \"h\"\nport = 1\n[auth]\nmethod = \"trust\"\n{users}"
            ))
            .unwrap()
        };
        let users = "[[users]]\nname = \"t\"\npassword = \"\"\n\
                     [[users]]\nname = \"app\"\npassword = \"secret\"\n";
        let login = Login::from_config(&config(users));
        assert_eq!(login.user(), "app");
        assert_eq!(login.password.as_deref(), Some("secret"));
        assert!(!format!("{login:?}").contains("secret"));
        let login = Login::from_config(&config("[[users]]\nname = \"t\"\n"));
        assert_eq!((login.user(), login.password.is_none()), ("t", true));
        assert_eq!(Login::from_config(&config("")).user(), "postgres");
    }
}
