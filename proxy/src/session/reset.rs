//! Bringing a server connection to a client's session state before the client uses it:
//! one simple-query round trip that resets the connection and replays startup parameters,
//! committed `SET`s and SQL prepared statements. Skipped when the fingerprints match.

use super::state::ClientState;
use crate::backend::{BackendError, ServerConn, ServerState};
use crate::protocol::ErrorFields;

/// Whether `server` already matches `state` (no statements to run).
pub fn in_sync(state: &ClientState, server: &ServerState) -> bool {
    params_match(state, server) && prepared_match(state, server)
}

fn params_match(state: &ClientState, server: &ServerState) -> bool {
    server.fingerprint == Some(state.fingerprint())
}

fn prepared_match(state: &ClientState, server: &ServerState) -> bool {
    server.sql_prepared.len() == state.sql_prepared.len()
        && state
            .sql_prepared
            .iter()
            .all(|(name, (hash, _))| server.sql_prepared.get(name) == Some(hash))
}

/// The statements that make `server` match `state`, or `None` when it already does.
pub fn sync_sql(state: &ClientState, server: &ServerState) -> Option<String> {
    let params_match = params_match(state, server);
    let prepared_match = prepared_match(state, server);
    if params_match && prepared_match {
        return None;
    }
    let mut sql = String::new();
    if !params_match {
        sql.push_str("SET SESSION AUTHORIZATION DEFAULT;RESET ROLE;RESET ALL;");
        if !state.startup.is_empty() {
            sql.push_str("SELECT ");
            for (i, (name, value)) in state.startup.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "pg_catalog.set_config({},{},false)",
                    literal(name),
                    literal(value)
                ));
            }
            sql.push(';');
        }
        for set in state.sets() {
            sql.push_str(set);
            sql.push(';');
        }
    }
    if !prepared_match {
        for name in server.sql_prepared.keys() {
            if state.sql_prepared.get(name).map(|(h, _)| h) != server.sql_prepared.get(name) {
                sql.push_str(&format!("DEALLOCATE {};", identifier(name)));
            }
        }
        for (name, (hash, text)) in &state.sql_prepared {
            if server.sql_prepared.get(name) != Some(hash) {
                sql.push_str(text);
                sql.push(';');
            }
        }
    }
    Some(sql)
}

/// Run the sync statements on `server` and record the new state.
///
/// # Errors
/// I/O errors, or the server's error if a statement failed (the connection's state is then
/// unknown and the caller must not use it).
pub async fn apply(
    state: &ClientState,
    server: &mut ServerConn,
    max_message: usize,
) -> Result<(), SyncError> {
    let Some(sql) = sync_sql(state, &server.session) else {
        return Ok(());
    };
    let failure = server.simple_query(&sql, max_message).await?;
    if let Some(fields) = failure {
        server.session.fingerprint = None;
        return Err(SyncError::Refused(Box::new(fields)));
    }
    server.session.fingerprint = Some(state.fingerprint());
    server.session.sql_prepared = state
        .sql_prepared
        .iter()
        .map(|(name, (hash, _))| (name.clone(), *hash))
        .collect();
    Ok(())
}

/// Why a server connection could not be brought to the client's state.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("could not restore session state on the server connection: {} ({})", .0.message, .0.code)]
    Refused(Box<ErrorFields>),
}

/// An escape-string literal, correct whatever `standard_conforming_strings` says.
fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(literal(r"a'b\c"), r"E'a''b\\c'");
        assert_eq!(identifier("a\"b"), "\"a\"\"b\"");
    }
}
