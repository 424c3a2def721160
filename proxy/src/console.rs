//! The admin console: a client that connects to the database `causeway` as one of
//! `[proxy] admin_users` (authenticated like any client) gets PgBouncer-style commands over
//! the simple query protocol (`SHOW POOLS | CLIENTS | SERVERS | NODES | STATS | CONFIG |
//! HELP`, `PAUSE`, `RESUME`, `RELOAD`) instead of a server connection. Everyone else who
//! asks for that database is refused with `28000`.

pub mod command;
mod config_rows;
pub mod pause;
pub mod registry;
pub mod show;
pub mod stats;
pub mod table;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::Config;
use crate::context::Context;
use crate::protocol::encode::{self, PgError};
use crate::protocol::{try_split, SqlState, TxStatus};
use command::{Command, CommandError};

/// The database name that opens the console.
pub const DATABASE: &str = "causeway";

/// Largest message the console reads: its commands are a few words.
const MAX_MESSAGE: usize = 64 << 10;

/// The server version reported before any pool has connected (what psql reads to choose
/// its queries; the console runs none of them).
const FALLBACK_VERSION: &str = "15.0";

/// How often `PAUSE` looks whether the transactions in flight have finished.
const PAUSE_POLL: Duration = Duration::from_millis(20);

/// What the console needs beyond the rest of [`Context`]: the pause gate and the
/// per-database totals (the clients connected now are listed in their cancel slots, see
/// [`registry`]). A cheap clonable handle.
#[derive(Debug, Clone, Default)]
pub struct ConsoleState {
    pub pause: Arc<pause::PauseGate>,
    pub stats: Arc<stats::StatsRegistry>,
}

/// Whether `user` may open the console.
pub fn is_admin(config: &Config, user: &str) -> bool {
    config.proxy.admin_users.iter().any(|u| u == user)
}

/// The FATAL a client that is not an admin user gets for database `causeway`.
pub fn refusal(user: &str) -> PgError {
    PgError::fatal(
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        format!("user {user:?} may not open the Causeway admin console (database \"causeway\")"),
    )
    .with_hint("list the user in [proxy] admin_users, or connect to an application database")
}

/// Writes what the console client gets after authentication: parameters psql and drivers
/// expect (the server version of the nodes when a pool has seen it), a key (cancels to
/// the console do nothing) and ReadyForQuery.
pub fn startup_reply(ctx: &Context, out: &mut BytesMut, pid: i32, secret: i32) {
    let version = ctx
        .pools
        .all()
        .iter()
        .filter_map(|pool| pool.startup_params())
        .find_map(|params| {
            params
                .iter()
                .find(|(name, _)| name == "server_version")
                .map(|(_, value)| value.clone())
        })
        .unwrap_or_else(|| FALLBACK_VERSION.to_owned());
    encode::parameter_status(out, "server_version", &version);
    for (name, value) in [
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        encode::parameter_status(out, name, value);
    }
    encode::backend_key_data(out, pid, secret);
    encode::ready_for_query(out, TxStatus::Idle);
}

/// Why a console connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("protocol violation on the admin console: {0}")]
    Protocol(String),
}

/// What to do after one client message.
enum Step {
    Continue,
    Close,
    /// The message broke the protocol: FATAL `08P01` with this text, then close.
    Refuse(String),
}

/// Serves one console client until it leaves or Causeway shuts down. `out` holds the
/// startup reply, `pending` what the client sent after its startup.
pub async fn serve<C>(
    ctx: Arc<Context>,
    client: &mut C,
    mut out: BytesMut,
    mut pending: BytesMut,
) -> Result<(), ConsoleError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    // After an error in an extended-protocol message: drop messages until Sync.
    let mut skip_until_sync = false;
    loop {
        loop {
            let message = match try_split(&mut pending, MAX_MESSAGE) {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(err) => {
                    client.write_all(&out).await?;
                    return refuse(client, err.to_string()).await;
                }
            };
            if message.tag == b'Q' {
                // A command may wait (PAUSE): what is before it goes out first.
                client.write_all(&out).await?;
                out.clear();
            }
            match on_message(&ctx, &message, &mut out, &mut skip_until_sync).await {
                Step::Continue => {}
                Step::Close => return Ok(client.write_all(&out).await?),
                Step::Refuse(what) => {
                    client.write_all(&out).await?;
                    return refuse(client, what).await;
                }
            }
        }
        if !out.is_empty() {
            client.write_all(&out).await?;
            out.clear();
        }
        let read = tokio::select! {
            read = client.read_buf(&mut pending) => read?,
            () = ctx.shutdown.drain.cancelled() => {
                let bye = PgError::fatal(SqlState::ADMIN_SHUTDOWN, "Causeway is shutting down");
                client.write_all(&bye.to_bytes()).await?;
                return Ok(());
            }
        };
        if read == 0 {
            return Ok(());
        }
    }
}

/// Answers one client message into `out`.
async fn on_message(
    ctx: &Context,
    message: &crate::protocol::Message,
    out: &mut BytesMut,
    skip_until_sync: &mut bool,
) -> Step {
    match message.tag {
        b'Q' => {
            let Some((text, _)) = crate::protocol::cstr(message.body()) else {
                return Step::Refuse("malformed Query message".into());
            };
            run(ctx, &String::from_utf8_lossy(text), out).await;
            encode::ready_for_query(out, TxStatus::Idle);
        }
        b'X' => return Step::Close,
        b'S' => {
            *skip_until_sync = false;
            encode::ready_for_query(out, TxStatus::Idle);
        }
        b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'F' => {
            if !*skip_until_sync {
                *skip_until_sync = true;
                PgError::error(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "the Causeway admin console speaks the simple query protocol only",
                )
                .with_hint("send commands as simple queries (psql, or simple_query in a driver)")
                .encode(out);
            }
        }
        other => return Step::Refuse(format!("invalid frontend message type {other}")),
    }
    Step::Continue
}

/// Ends the connection with FATAL `08P01` for a message that breaks the protocol.
async fn refuse<C>(client: &mut C, what: String) -> Result<(), ConsoleError>
where
    C: AsyncWrite + Unpin,
{
    let err = PgError::fatal(SqlState::PROTOCOL_VIOLATION, what.clone());
    client.write_all(&err.to_bytes()).await?;
    Err(ConsoleError::Protocol(what))
}

/// Runs one query string and appends its reply (without ReadyForQuery).
async fn run(ctx: &Context, query: &str, out: &mut BytesMut) {
    let command = match command::parse(query) {
        Ok(command) => command,
        Err(err) => return not_a_command(&err).encode(out),
    };
    tracing::debug!(?command, "admin console command");
    match command {
        Command::Empty => encode::empty(out, b'I'),
        Command::Show(what) => show::table(ctx, what).encode(out),
        Command::Pause => {
            let was = ctx.console.pause.pause();
            if !was {
                tracing::info!("admin console: PAUSE; new requests wait until RESUME");
            }
            let left = wait_for_idle_servers(ctx).await;
            if left > 0 {
                let text = format!(
                    "{left} server connections are still in use (session pool mode, or long \
                     transactions); new requests wait until RESUME"
                );
                encode::notice(out, &SqlState::WARNING, &text);
            }
            encode::command_complete(out, "PAUSE");
        }
        Command::Resume => {
            if ctx.console.pause.resume() {
                tracing::info!("admin console: RESUME");
                encode::command_complete(out, "RESUME");
            } else {
                PgError::error(
                    SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    "Causeway is not paused",
                )
                .encode(out);
            }
        }
        Command::Reload => {
            let ctx = ctx.clone();
            match tokio::task::spawn_blocking(move || crate::reload::reload(&ctx)).await {
                Ok(Ok(report)) => {
                    encode::notice(out, &SqlState::SUCCESSFUL_COMPLETION, &report.to_string());
                    encode::command_complete(out, "RELOAD");
                }
                Ok(Err(err @ crate::reload::ReloadError::NoFile)) => {
                    PgError::error(SqlState::FEATURE_NOT_SUPPORTED, err.to_string()).encode(out)
                }
                Ok(Err(err)) => PgError::error(SqlState::CONFIG_FILE_ERROR, err.to_string())
                    .with_hint("fix the file and RELOAD again; the running settings stay")
                    .encode(out),
                Err(err) => {
                    PgError::error(SqlState::INTERNAL_ERROR, format!("reload failed: {err}"))
                        .encode(out)
                }
            }
        }
    }
}

fn not_a_command(err: &CommandError) -> PgError {
    PgError::error(
        SqlState::SYNTAX_ERROR,
        format!(
            "{err}; the admin console runs only these commands: {}",
            command::COMMANDS.join(", ")
        ),
    )
    .with_hint("connect to an application database to run SQL")
}

/// Waits until no server connection is in use (transactions in flight have finished), up
/// to `shutdown_timeout`; returns how many are still in use.
async fn wait_for_idle_servers(ctx: &Context) -> usize {
    let deadline = tokio::time::Instant::now() + ctx.config.proxy.shutdown_timeout;
    loop {
        let in_use: usize = ctx.pools.all().iter().map(|p| p.counts().1).sum();
        if in_use == 0 || tokio::time::Instant::now() >= deadline || !ctx.console.pause.is_paused()
        {
            return in_use;
        }
        tokio::time::sleep(PAUSE_POLL).await;
    }
}

#[cfg(test)]
mod tests;
