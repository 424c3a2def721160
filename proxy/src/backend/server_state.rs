//! What the pooler knows about one server connection's session state: the prepared
//! statements that exist on it and the fingerprint of the client state last applied.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::prepared::PreparedCache;

/// Session-state bookkeeping for one server connection.
#[derive(Debug)]
pub struct ServerState {
    /// Protocol-level statements prepared under Causeway's names.
    pub prepared: PreparedCache,
    /// SQL-level (`PREPARE name`) statements: name → definition hash.
    pub sql_prepared: HashMap<String, u64>,
    /// Fingerprint of the client session state last applied; `None` = unknown, reset first.
    pub fingerprint: Option<u64>,
}

impl ServerState {
    /// A fresh connection: nothing prepared, the state of a client with no settings.
    pub fn new(prepared_capacity: usize, fingerprint: u64) -> ServerState {
        ServerState {
            prepared: PreparedCache::new(prepared_capacity),
            sql_prepared: HashMap::new(),
            fingerprint: Some(fingerprint),
        }
    }

    /// After `DISCARD ALL` or anything else that wipes the server session.
    pub fn forget_everything(&mut self) {
        self.prepared.clear();
        self.sql_prepared.clear();
        self.fingerprint = None;
    }
}

/// Fingerprint of replayable client session state: startup parameters and committed
/// `SET`s, in order. A server connection whose recorded fingerprint matches a client's
/// needs no reset.
pub fn state_fingerprint(startup: &[(String, String)], sets: &[(String, String)]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    startup.hash(&mut hasher);
    sets.hash(&mut hasher);
    hasher.finish()
}

/// The fingerprint of a fresh server connection (no parameters, no SETs).
pub fn empty_fingerprint() -> u64 {
    state_fingerprint(&[], &[])
}
