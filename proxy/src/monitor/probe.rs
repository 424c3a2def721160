//! The control connection of one node and the one-statement samples taken on it.
//!
//! Each node gets its own tokio-postgres connection (TLS as `[server_tls]` says), logged in as the monitor's
//! [`Login`]. A sample is one prepared statement, so one round trip per poll.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, Row, Statement};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::sample::{PauseState, PrimarySample, ReplicaSample};
use crate::config::Config;
use crate::lsn::{normalize_insert_lsn, Lsn};

/// `application_name` of the control connections, so operators can spot them in
/// `pg_stat_activity`.
pub(crate) const APPLICATION_NAME: &str = "causeway-monitor";

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

/// A replica's sample, in one statement (PostgreSQL 14 and later). `pg_stat_wal_receiver`
/// has a row only while a WAL receiver runs; its `received_tli` is NULL for users without
/// `pg_read_all_stats`.
const REPLICA_SQL: &str = "SELECT pg_is_in_recovery(),
  pg_last_wal_replay_lsn(),
  pg_last_wal_receive_lsn(),
  CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END,
  r.pid IS NOT NULL,
  r.received_tli
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true";

/// [`REPLICA_SQL`] for PostgreSQL 10 to 13, which lack `pg_get_wal_replay_pause_state()`
/// (added in 14): `pg_is_wal_replay_paused()` answers whether a pause was requested,
/// mapped to the same texts (`pause requested` and `paused` both evict anyway).
const REPLICA_SQL_BEFORE_14: &str = "SELECT pg_is_in_recovery(),
  pg_last_wal_replay_lsn(),
  pg_last_wal_receive_lsn(),
  CASE WHEN pg_is_in_recovery() THEN
    CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE 'not paused' END END,
  r.pid IS NOT NULL,
  r.received_tli
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true";

/// The server's version, read once per control connection.
const VERSION_SQL: &str = "SELECT current_setting('server_version_num')::integer";

/// Oldest supported PostgreSQL (`server_version_num`): the `pg_*_wal_*` function names
/// and `pg_current_wal_insert_lsn()` are from 10.
pub(crate) const MIN_SERVER_VERSION: u32 = 100_000;
/// First version with `pg_get_wal_replay_pause_state()`.
const PAUSE_STATE_VERSION: u32 = 140_000;

/// The sample statement for a node of `kind` running `server_version_num` `version`, or
/// why the node cannot be monitored. Pure: the version-dependent choice, in one place.
pub(crate) fn sample_sql(kind: Kind, version: u32) -> Result<&'static str, ProbeError> {
    if version < MIN_SERVER_VERSION {
        return Err(ProbeError::UnsupportedVersion { version });
    }
    Ok(match kind {
        Kind::Primary => PRIMARY_SQL,
        Kind::Replica if version >= PAUSE_STATE_VERSION => REPLICA_SQL,
        Kind::Replica => REPLICA_SQL_BEFORE_14,
    })
}

/// `server_version_num` as people write it: `150004` is 15.4, `90624` is 9.6.24.
pub(crate) fn version_text(version: u32) -> String {
    let major = version / 10_000;
    if major >= 10 {
        format!("{major}.{}", version % 10_000)
    } else {
        format!("{major}.{}.{}", version / 100 % 100, version % 100)
    }
}

/// What the log says about a node's version, once per node (and again if it changes):
/// `None` for a fully supported one.
pub(crate) fn version_note(version: u32) -> Option<&'static str> {
    if version < MIN_SERVER_VERSION {
        Some(
            "unsupported: the monitor needs PostgreSQL 10 or later; the node stays out of the pool",
        )
    } else if version < PAUSE_STATE_VERSION {
        Some(
            "before PostgreSQL 14: replay pause read with pg_is_wal_replay_paused() instead of \
             pg_get_wal_replay_pause_state()",
        )
    } else {
        None
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Connecting, preparing or running the statement failed.
    #[error("{}", postgres_text(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No answer within `lag.probe_timeout`.
    #[error("no answer within {0:?} (lag.probe_timeout)")]
    Timeout(Duration),
    /// The server answered with something unexpected.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// The node runs a PostgreSQL older than 10 (`server_version_num`).
    #[error(
        "PostgreSQL {} (server_version_num {version}) is not supported: the monitor needs \
         PostgreSQL 10 or later, so the node stays out of the pool",
        version_text(*version)
    )]
    UnsupportedVersion {
        /// `server_version_num`.
        version: u32,
    },
}

/// Who the monitor logs in as, and where: [`Config::control_login`] (the first
/// `[[users]]` entry with a non-empty password, else the first entry, else `postgres`), to
/// `monitor.database` (default `postgres`; not the database named like the user, which
/// often does not exist: user `mysite_user`, database `mysite`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Login {
    user: Arc<str>,
    password: Option<Arc<str>>,
    database: Arc<str>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("database", &self.database)
            .finish()
    }
}

impl Login {
    /// Picks the monitor's login from the config.
    pub(crate) fn from_config(config: &Config) -> Login {
        let (user, password) = config.control_login();
        Login {
            user: Arc::from(user),
            password: password.map(Arc::from),
            database: Arc::from(config.monitor.database.as_str()),
        }
    }

    /// The user name.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// The database the control connections log in to.
    pub(crate) fn database(&self) -> &str {
        &self.database
    }

    /// Whether `other` logs in as another user or to another database (not just with
    /// another password).
    pub(crate) fn is_another_role_or_database(&self, other: &Login) -> bool {
        self.user != other.user || self.database != other.database
    }
}

/// Where and how to connect to one node.
#[derive(Debug, Clone)]
pub(crate) struct ProbeTarget {
    pub(crate) host: Arc<str>,
    pub(crate) port: u16,
    pub(crate) login: Login,
    pub(crate) timeout: Duration,
    /// `[server_tls]`.
    pub(crate) tls: crate::tls::ServerTls,
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
    /// The server's `server_version_num`.
    version: u32,
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
            .dbname(self.login.database())
            .application_name(APPLICATION_NAME)
            .connect_timeout(self.timeout);
        if let Some(password) = &self.login.password {
            config.password(password.as_bytes());
        }
        let (client, connection) = self.tls.connect_postgres(&mut config).await?;
        let terminate = terminate.clone();
        tracker.spawn(tracing::Instrument::in_current_span(async move {
            tokio::select! {
                result = connection => if let Err(err) = result {
                    tracing::debug!(%err, "control connection ended");
                },
                () = terminate.cancelled() => {}
            }
        }));
        let version = read_version(&client).await?;
        let sql = sample_sql(kind, version)?;
        let wal_sizes = match kind {
            Kind::Primary => read_wal_sizes(&client).await?,
            Kind::Replica => (0, 0),
        };
        let statement = client.prepare(sql).await?;
        Ok(Session {
            client,
            statement,
            wal_sizes,
            version,
        })
    }
}

impl Session {
    /// The server's `server_version_num`.
    pub(crate) fn version(&self) -> u32 {
        self.version
    }

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

/// Reads `server_version_num`.
async fn read_version(client: &Client) -> Result<u32, ProbeError> {
    let version: i32 = client.query_one(VERSION_SQL, &[]).await?.try_get(0)?;
    u32::try_from(version)
        .map_err(|_| ProbeError::Unexpected(format!("server_version_num {version}")))
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

/// A tokio-postgres error with the server's message: its `Display` says only "db error"
/// for an error the server sent (such as a login to a database that does not exist).
fn postgres_text(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => err.to_string(),
    }
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
    fn sample_sql_by_server_version() {
        for kind in [Kind::Primary, Kind::Replica] {
            for old in [90_624, 90_000, 0] {
                let err = sample_sql(kind, old).unwrap_err();
                assert!(
                    matches!(err, ProbeError::UnsupportedVersion { version } if version == old)
                );
            }
        }
        assert_eq!(sample_sql(Kind::Primary, 100_000).unwrap(), PRIMARY_SQL);
        assert_eq!(sample_sql(Kind::Primary, 170_002).unwrap(), PRIMARY_SQL);
        for version in [100_000, 100_023, 130_016, 139_999] {
            let sql = sample_sql(Kind::Replica, version).unwrap();
            assert_eq!(sql, REPLICA_SQL_BEFORE_14, "{version}");
            assert!(sql.contains("pg_is_wal_replay_paused()"));
            assert!(!sql.contains("pg_get_wal_replay_pause_state"));
        }
        for version in [140_000, 150_004, 170_002, 180_000] {
            let sql = sample_sql(Kind::Replica, version).unwrap();
            assert_eq!(sql, REPLICA_SQL, "{version}");
            assert!(sql.contains("pg_get_wal_replay_pause_state()"));
        }
    }

    #[test]
    fn version_texts_and_notes() {
        assert_eq!(version_text(150_004), "15.4");
        assert_eq!(version_text(100_023), "10.23");
        assert_eq!(version_text(90_624), "9.6.24");
        let err = ProbeError::UnsupportedVersion { version: 90_624 }.to_string();
        assert!(
            err.contains("PostgreSQL 9.6.24") && err.contains("10 or later"),
            "{err}"
        );
        assert!(version_note(90_624).unwrap().contains("unsupported"));
        assert!(version_note(130_000)
            .unwrap()
            .contains("pg_is_wal_replay_paused"));
        assert_eq!(version_note(140_000), None);
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

    #[test]
    fn login_uses_the_monitor_database_not_the_user_name() {
        let base = "[primary]\nhost = \"h\"\nport = 1\n\
                    [[users]]\nname = \"mysite_user\"\npassword = \"pw\"\n";
        let login = Login::from_config(&Config::from_toml(base).unwrap());
        assert_eq!(
            (login.user(), login.database()),
            ("mysite_user", "postgres")
        );
        let configured = format!("{base}[monitor]\ndatabase = \"mysite\"\n");
        let login = Login::from_config(&Config::from_toml(&configured).unwrap());
        assert_eq!(login.database(), "mysite");
        assert!(format!("{login:?}").contains("mysite"));
    }
}
