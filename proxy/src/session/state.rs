//! What one client has made of its session, independent of which server connection it is
//! on: startup parameters, committed `SET`s, SQL and protocol prepared statements, pins.
//! The pooler replays this state on every server connection the client gets.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::protocol::TxStatus;
use crate::sql::{PinReason, StatementInfo, StatementKind};

/// A protocol-level prepared statement as the client defined it.
#[derive(Debug)]
pub struct StatementDef {
    /// Name on every server connection: derived from the content, so clients share it.
    pub server_name: Bytes,
    pub query: Bytes,
    pub param_types: Bytes,
    /// Lexical classification of the query (session effects, pins).
    pub info: StatementInfo,
    /// What executing it does to session state.
    pub effect: Effect,
    /// Its routing classification (see [`crate::classify::Classifier::classify_memo`]):
    /// binding it again needs no cache lookup.
    pub class: crate::classify::Memo,
}

impl StatementDef {
    /// Define a named statement from the fields of its Parse message.
    pub fn new(query: &[u8], param_types: &[u8]) -> StatementDef {
        let mut hasher = Sha256::new();
        hasher.update(query);
        hasher.update([0]);
        hasher.update(param_types);
        let digest = hasher.finalize();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut name = Vec::with_capacity(36);
        name.extend_from_slice(b"_cw_");
        for byte in digest.iter().take(16) {
            name.push(HEX[usize::from(byte >> 4)]);
            name.push(HEX[usize::from(byte & 0xf)]);
        }
        StatementDef {
            server_name: Bytes::from(name),
            ..StatementDef::unnamed(query, param_types)
        }
    }

    /// Define the unnamed statement: it is never renamed, so it needs no server name (and
    /// no hash of its text, which a client sends with every request).
    pub fn unnamed(query: &[u8], param_types: &[u8]) -> StatementDef {
        let text = crate::protocol::text(query);
        let info = crate::sql::classify(&text);
        let effect = Effect::of(&info, &text);
        StatementDef {
            server_name: Bytes::new(),
            query: Bytes::copy_from_slice(query),
            param_types: Bytes::copy_from_slice(param_types),
            info,
            effect,
            class: Default::default(),
        }
    }
}

/// A change to session state carried by a statement, applied when it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Set { name: String, text: String },
    Reset { name: String },
    ResetAll,
    Prepare { name: String, text: String },
    Deallocate { name: String },
    DeallocateAll,
    DiscardAll,
    Rollback,
    RollbackToSavepoint,
    None,
}

impl Effect {
    /// The effect of one classified statement whose text is `text`.
    pub fn of(info: &StatementInfo, text: &str) -> Effect {
        match &info.kind {
            StatementKind::Set { name, local: false } => Effect::Set {
                name: name.clone(),
                text: text.to_owned(),
            },
            StatementKind::Reset { name } => Effect::Reset { name: name.clone() },
            StatementKind::ResetAll => Effect::ResetAll,
            StatementKind::Prepare { name } => Effect::Prepare {
                name: name.clone(),
                text: text.to_owned(),
            },
            StatementKind::Deallocate { name: Some(name) } => {
                Effect::Deallocate { name: name.clone() }
            }
            StatementKind::Deallocate { name: None } => Effect::DeallocateAll,
            StatementKind::Discard {
                what: crate::sql::Discard::All,
            } => Effect::DiscardAll,
            StatementKind::Rollback { .. } => Effect::Rollback,
            StatementKind::RollbackToSavepoint => Effect::RollbackToSavepoint,
            _ => Effect::None,
        }
    }
}

/// What the server connection must be told when an effect completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerImpact {
    /// Nothing beyond the usual fingerprint bookkeeping.
    None,
    /// Its session state no longer matches any fingerprint: reset it before reuse.
    Unknown,
    /// `DEALLOCATE ALL`: forget every prepared statement recorded for it.
    StatementsGone,
    /// `DISCARD ALL`: both.
    Everything,
}

/// A client's session state.
#[derive(Debug, Default)]
pub struct ClientState {
    /// Startup parameters applied as session defaults (`application_name`, `TimeZone`...).
    pub startup: Vec<(String, String)>,
    /// Committed session-level `SET`s, in the order they were made: name → statement.
    sets: Vec<(String, String)>,
    /// `SET`s made in the current transaction, committed or dropped at its end.
    pending: Vec<Effect>,
    tx_failed: bool,
    savepoint_rollback_with_pending: bool,
    /// Protocol-level named statements: client name → definition.
    pub statements: HashMap<Bytes, Arc<StatementDef>>,
    /// SQL-level prepared statements: name → (hash, PREPARE text).
    pub sql_prepared: BTreeMap<String, (u64, String)>,
    /// Why the client must keep its server connection, if it must.
    pub pin: Option<PinReason>,
    fingerprint: u64,
}

impl ClientState {
    /// State for a client that sent these startup parameters.
    pub fn new(startup: Vec<(String, String)>) -> ClientState {
        let mut state = ClientState {
            startup,
            ..ClientState::default()
        };
        state.refresh_fingerprint();
        state
    }

    /// Fingerprint of the replayable state (startup parameters and committed SETs); a
    /// server connection whose recorded fingerprint matches needs no reset.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Committed SET statements in order.
    pub fn sets(&self) -> impl Iterator<Item = &str> {
        self.sets.iter().map(|(_, text)| text.as_str())
    }

    /// The client's `application_name` from its startup packet, unless a committed SET
    /// replaced it (rules match on the startup value only).
    pub fn application_name(&self) -> Option<&str> {
        if self.sets.iter().any(|(n, _)| n == "application_name") {
            return None;
        }
        self.startup
            .iter()
            .find(|(n, _)| n == "application_name")
            .map(|(_, v)| v.as_str())
    }

    /// Record a pin (the first reason is kept).
    pub fn pin(&mut self, reason: PinReason) {
        self.pin.get_or_insert(reason);
    }

    /// A statement completed successfully (CommandComplete).
    pub fn on_complete(&mut self, effect: Effect) -> ServerImpact {
        match effect {
            Effect::Set { .. } | Effect::Reset { .. } | Effect::ResetAll => {
                self.pending.push(effect);
                ServerImpact::None
            }
            Effect::Prepare { name, text } => {
                let hash = text_hash(&text);
                self.sql_prepared.insert(name, (hash, text));
                ServerImpact::None
            }
            Effect::Deallocate { name } => {
                self.sql_prepared.remove(&name);
                ServerImpact::None
            }
            Effect::DeallocateAll => {
                self.sql_prepared.clear();
                self.statements.clear();
                ServerImpact::StatementsGone
            }
            Effect::DiscardAll => {
                self.sql_prepared.clear();
                self.statements.clear();
                self.sets.clear();
                self.pending.clear();
                self.refresh_fingerprint();
                ServerImpact::Everything
            }
            Effect::Rollback => {
                self.tx_failed = true;
                ServerImpact::None
            }
            Effect::RollbackToSavepoint => {
                if !self.pending.is_empty() {
                    self.savepoint_rollback_with_pending = true;
                }
                ServerImpact::None
            }
            Effect::None => ServerImpact::None,
        }
    }

    /// An ErrorResponse arrived: the current transaction (explicit or implicit) will roll back.
    pub fn on_error(&mut self) {
        self.tx_failed = true;
    }

    /// ReadyForQuery with `status` arrived. At the end of a transaction, pending SETs are
    /// committed or dropped. Returns what the server connection must be told.
    pub fn on_ready(&mut self, status: TxStatus) -> ServerImpact {
        if !status.is_idle() {
            return ServerImpact::None;
        }
        let pending = std::mem::take(&mut self.pending);
        let failed = std::mem::take(&mut self.tx_failed);
        if std::mem::take(&mut self.savepoint_rollback_with_pending) {
            // Which SETs a ROLLBACK TO undid is not tracked: keep this server connection.
            self.pin(PinReason::UnrecognizedSet);
            return ServerImpact::Unknown;
        }
        if failed || pending.is_empty() {
            return ServerImpact::None;
        }
        let mut impact = ServerImpact::None;
        for effect in pending {
            match effect {
                Effect::Set { name, text } => {
                    self.sets.retain(|(n, _)| *n != name);
                    self.sets.push((name, text));
                }
                Effect::Reset { name } => {
                    self.sets.retain(|(n, _)| *n != name);
                    // The server's reset value is Causeway's, not the client's startup value.
                    impact = ServerImpact::Unknown;
                }
                Effect::ResetAll => {
                    self.sets.clear();
                    impact = ServerImpact::Unknown;
                }
                _ => {}
            }
        }
        self.refresh_fingerprint();
        impact
    }

    fn refresh_fingerprint(&mut self) {
        self.fingerprint = self.compute_fingerprint();
    }

    fn compute_fingerprint(&self) -> u64 {
        crate::backend::state_fingerprint(&self.startup, &self.sets)
    }
}

/// Stable hash of a PREPARE text, to compare a server's SQL statements with a client's.
pub fn text_hash(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &str) -> Effect {
        Effect::Set {
            name: name.into(),
            text: format!("SET {name} = {value}"),
        }
    }

    #[test]
    fn sets_commit_at_the_end_of_a_successful_transaction() {
        let mut state = ClientState::new(vec![]);
        let before = state.fingerprint();
        state.on_complete(set("search_path", "a"));
        assert_eq!(state.on_ready(TxStatus::InBlock), ServerImpact::None);
        assert_eq!(state.fingerprint(), before);
        state.on_ready(TxStatus::Idle);
        assert_ne!(state.fingerprint(), before);
        assert_eq!(
            state.sets().collect::<Vec<_>>(),
            vec!["SET search_path = a"]
        );
        state.on_complete(set("search_path", "b"));
        state.on_ready(TxStatus::Idle);
        assert_eq!(
            state.sets().collect::<Vec<_>>(),
            vec!["SET search_path = b"]
        );
    }

    #[test]
    fn rolled_back_and_failed_sets_do_not_stick() {
        let mut state = ClientState::new(vec![]);
        let before = state.fingerprint();
        state.on_complete(set("work_mem", "'1MB'"));
        state.on_complete(Effect::Rollback);
        state.on_ready(TxStatus::Idle);
        state.on_complete(set("work_mem", "'2MB'"));
        state.on_error();
        state.on_ready(TxStatus::Failed);
        state.on_ready(TxStatus::Idle);
        assert_eq!(state.fingerprint(), before);
        assert_eq!(state.sets().count(), 0);
    }

    #[test]
    fn rollback_to_savepoint_after_a_set_pins() {
        let mut state = ClientState::new(vec![]);
        state.on_complete(set("work_mem", "'1MB'"));
        state.on_complete(Effect::RollbackToSavepoint);
        assert_eq!(state.on_ready(TxStatus::Idle), ServerImpact::Unknown);
        assert!(state.pin.is_some());
    }

    #[test]
    fn statement_names_depend_on_content_only() {
        let a = StatementDef::new(b"SELECT 1", b"\0\0");
        let b = StatementDef::new(b"SELECT 1", b"\0\0");
        let c = StatementDef::new(b"SELECT 2", b"\0\0");
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
        assert_eq!(a.server_name.len(), 36);
    }

    #[test]
    fn discard_all_forgets_everything() {
        let mut state = ClientState::new(vec![("application_name".into(), "x".into())]);
        let start = state.fingerprint();
        state.on_complete(set("search_path", "a"));
        state.on_ready(TxStatus::Idle);
        state.on_complete(Effect::Prepare {
            name: "p".into(),
            text: "PREPARE p AS SELECT 1".into(),
        });
        assert_eq!(
            state.on_complete(Effect::DiscardAll),
            ServerImpact::Everything
        );
        assert_eq!(state.fingerprint(), start);
        assert!(state.sql_prepared.is_empty());
    }
}
