//! Which function calls make a statement a write: PostgreSQL's own side-effecting
//! functions (fixed, [`builtin_writer`]) and the configurable [`FunctionPolicy`]
//! (`[functions] writes`, `[functions] read_only`, and the volatile user functions listed
//! in `pg_proc`).
//!
//! Names are compared as PostgreSQL folds identifiers: unquoted names are lowercased by the
//! parser, quoted names keep their case (`"NextVal"` is not `nextval`). Names from config
//! and from [`VOLATILE_FUNCTIONS_SQL`](super::VOLATILE_FUNCTIONS_SQL) are folded the same
//! way (see [`is_valid_function_name`]).
//!
//! A call without a schema may resolve to a function in any schema on the search path, so
//! it matches every listed function of that name (fail closed); a qualified call matches
//! only its own schema.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use super::types::AccessReason;

/// A function name as PostgreSQL folds it, with its schema when the call names one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FuncName {
    pub(crate) schema: Option<Box<str>>,
    pub(crate) name: Box<str>,
}

impl FuncName {
    /// From a qualified name's parts (`[catalog.][schema.]name`); `None` if empty.
    pub(crate) fn from_parts(mut parts: Vec<String>) -> Option<FuncName> {
        let name = parts.pop()?;
        let schema = parts.pop().map(String::into_boxed_str);
        Some(FuncName {
            schema,
            name: name.into_boxed_str(),
        })
    }

    /// `schema.name` or `name`.
    pub(crate) fn display(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.to_string(),
        }
    }

    /// Bytes held, for cache accounting.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<FuncName>()
            + self.name.len()
            + self.schema.as_ref().map_or(0, |s| s.len())
    }
}

/// Parses a function name written as SQL would name it: `fn`, `schema.fn`, `"Schema"."Fn"`,
/// optionally followed by an argument list, which is ignored (`audit.log(text)`): overloads
/// are not told apart. Unquoted parts are lowercased (ASCII, as PostgreSQL does), quoted
/// parts keep their case. `None` for an empty or malformed name.
pub(crate) fn parse_function_name(text: &str) -> Option<FuncName> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    loop {
        let (part, after) = identifier(rest)?;
        parts.push(part);
        let after = after.trim_start();
        match after.chars().next() {
            Some('.') => rest = after[1..].trim_start(),
            Some('(') | None => break,
            Some(_) => return None,
        }
    }
    if parts.len() > 3 {
        return None;
    }
    FuncName::from_parts(parts)
}

/// One identifier at the start of `text`: the folded name and the text after it.
fn identifier(text: &str) -> Option<(String, &str)> {
    if let Some(quoted) = text.strip_prefix('"') {
        return quoted_identifier(quoted);
    }
    let end = text
        .find(|c: char| c == '.' || c == '(' || c == '"' || c.is_whitespace())
        .unwrap_or(text.len());
    let word = &text[..end];
    if word.is_empty() {
        return None;
    }
    Some((word.to_ascii_lowercase(), &text[end..]))
}

/// The rest of a quoted identifier (after its opening quote): `""` is a quote.
fn quoted_identifier(text: &str) -> Option<(String, &str)> {
    let mut name = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            name.push(c);
            continue;
        }
        if text[i + 1..].starts_with('"') {
            name.push('"');
            chars.next();
            continue;
        }
        return (!name.is_empty()).then(|| (name, &text[i + 1..]));
    }
    None
}

/// Whether `text` names a function the way `[functions]` lists must (see
/// [`FunctionPolicy`]): `fn`, `schema.fn`, `"Quoted"."Name"`, optionally `(argument types)`,
/// which are ignored. For config validation.
pub fn is_valid_function_name(text: &str) -> bool {
    parse_function_name(text).is_some()
}

/// Whether a call to `f` writes or needs the primary, whatever the configuration:
/// PostgreSQL's side-effecting built-ins (called bare or as `pg_catalog.fn`), and a few
/// extension functions (in whatever schema the extension lives).
pub(crate) fn builtin_writer(f: &FuncName) -> bool {
    let name = &*f.name;
    let catalog = f.schema.as_deref().is_none_or(|s| s == "pg_catalog");
    (catalog && catalog_writer(name)) || extension_writer(name)
}

/// Name prefixes of built-in functions that write or administer the server.
const CATALOG_WRITER_PREFIXES: &[&str] = &[
    "pg_advisory_",     // advisory locks, session and transaction level, lock and unlock
    "pg_try_advisory_", // ditto, non-blocking
    "pg_create_",       // replication slots, restore points
    "pg_drop_",         // replication slots
    "pg_copy_",         // replication slots
    "pg_replication_origin_", // replication origins
    "pg_logical_slot_", // consuming (and peeking) logical slots
    "pg_stat_reset",    // statistics resets
    "pg_set_",          // planner statistics (pg_set_relation_stats, ...)
    "pg_clear_",        // ditto
    "pg_restore_",      // ditto
];

/// Built-in functions that write, act on the server, or only make sense in the primary
/// session (sequence state, large-object descriptors, transaction ids).
fn catalog_writer(name: &str) -> bool {
    CATALOG_WRITER_PREFIXES.iter().any(|p| name.starts_with(p))
        || matches!(
            name,
            // sequences (currval/lastval read the primary session's sequence state)
            "nextval" | "setval" | "currval" | "lastval"
            // configuration and session state
            | "set_config" | "setseed"
            // large objects (descriptors live in the session and the transaction)
            | "lo_create" | "lo_creat" | "lo_import" | "lo_export" | "lo_unlink" | "lo_open"
            | "lo_close" | "lo_put" | "lo_from_bytea" | "lowrite" | "loread" | "lo_truncate"
            | "lo_truncate64" | "lo_lseek" | "lo_lseek64" | "lo_tell" | "lo_tell64"
            // notifications
            | "pg_notify"
            // transaction ids and snapshots of the primary session
            | "txid_current" | "pg_current_xact_id" | "txid_current_if_assigned"
            | "pg_current_xact_id_if_assigned" | "pg_export_snapshot"
            // WAL positions and control (error on a standby, or act on the primary)
            | "pg_current_wal_lsn" | "pg_current_wal_insert_lsn" | "pg_current_wal_flush_lsn"
            | "pg_switch_wal" | "pg_logical_emit_message" | "pg_walfile_name"
            | "pg_walfile_name_offset" | "pg_backup_start" | "pg_backup_stop"
            | "pg_log_standby_snapshot" | "pg_wal_replay_pause" | "pg_wal_replay_resume"
            | "pg_replication_slot_advance" | "pg_sync_replication_slots"
            // server administration
            | "pg_promote" | "pg_reload_conf" | "pg_rotate_logfile" | "pg_cancel_backend"
            | "pg_terminate_backend" | "pg_log_backend_memory_contexts"
            | "pg_import_system_collations"
            // index maintenance
            | "brin_summarize_new_values" | "brin_summarize_range" | "brin_desummarize_range"
            | "gin_clean_pending_list"
        )
}

/// Extension functions that write or keep session state, in any schema.
fn extension_writer(name: &str) -> bool {
    matches!(
        name,
        // dblink: remote commands and named connections (session state)
        "dblink_exec" | "dblink_connect" | "dblink_connect_u" | "dblink_disconnect"
        | "dblink_open" | "dblink_fetch" | "dblink_close" | "dblink_send_query"
        | "dblink_get_result"
        // pg_stat_statements, adminpack, pg_visibility
        | "pg_stat_statements_reset" | "pg_file_write" | "pg_file_rename" | "pg_file_unlink"
        | "pg_file_sync" | "pg_truncate_visibility_map"
    )
}

/// A set of function names, some bare (any schema), some qualified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NameSet {
    bare: HashSet<Box<str>>,
    /// name → the schemas it is listed in.
    qualified: HashMap<Box<str>, Vec<Box<str>>>,
}

impl NameSet {
    fn parse<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> NameSet {
        let mut set = NameSet::default();
        names
            .into_iter()
            .filter_map(|n| parse_function_name(n.as_ref()))
            .for_each(|f| set.insert(f));
        set
    }

    fn insert(&mut self, f: FuncName) {
        match f.schema {
            None => {
                self.bare.insert(f.name);
            }
            Some(schema) => {
                let schemas = self.qualified.entry(f.name).or_default();
                if !schemas.contains(&schema) {
                    schemas.push(schema);
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.bare.len() + self.qualified.values().map(Vec::len).sum::<usize>()
    }

    /// Whether a call may resolve to a listed function: a bare entry matches any call of
    /// that name; a qualified entry matches calls in its schema and unqualified calls.
    fn may_match(&self, f: &FuncName) -> bool {
        if self.bare.contains(&f.name) {
            return true;
        }
        let Some(schemas) = self.qualified.get(&f.name) else {
            return false;
        };
        match &f.schema {
            None => true,
            Some(schema) => schemas.contains(schema),
        }
    }

    /// Whether the function `schema.name` is listed (bare entries match every schema).
    fn lists(&self, schema: Option<&str>, name: &str) -> bool {
        self.bare.contains(name)
            || schema.is_some_and(|s| {
                self.qualified
                    .get(name)
                    .is_some_and(|v| v.iter().any(|x| &**x == s))
            })
    }
}

/// Generation numbers of function policies (0 is the default, empty policy).
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// The configurable part of the function check: `[functions] writes` (always writes),
/// `[functions] read_only` (volatile but safe on a replica), and the volatile user-defined
/// functions from `pg_proc` ([`VOLATILE_FUNCTIONS_SQL`](super::VOLATILE_FUNCTIONS_SQL)).
///
/// Built-in volatile functions (`random()`, `now()`, `clock_timestamp()`,
/// `gen_random_uuid()`, `pg_sleep()`) are not writes: `pg_catalog` is not in the pg_proc
/// list, and the built-ins that do write are a fixed list.
#[derive(Debug, Clone, Default)]
pub struct FunctionPolicy {
    generation: u64,
    read_only: NameSet,
    writes: NameSet,
    volatile: NameSet,
}

impl FunctionPolicy {
    /// The policy from `[functions] read_only` and `[functions] writes`. Malformed names
    /// are skipped (config validation should reject them first, with
    /// [`is_valid_function_name`]).
    pub fn new(read_only: &[String], writes: &[String]) -> FunctionPolicy {
        FunctionPolicy {
            generation: next_generation(),
            read_only: NameSet::parse(read_only),
            writes: NameSet::parse(writes),
            volatile: NameSet::default(),
        }
    }

    /// This policy with the volatile user functions replaced by `volatile_user_functions`
    /// (rows of [`VOLATILE_FUNCTIONS_SQL`](super::VOLATILE_FUNCTIONS_SQL): `schema.name`,
    /// quoted where needed).
    pub fn with_volatile(
        self,
        volatile_user_functions: impl IntoIterator<Item = String>,
    ) -> FunctionPolicy {
        FunctionPolicy {
            generation: next_generation(),
            volatile: NameSet::parse(volatile_user_functions),
            ..self
        }
    }

    /// This policy with the volatile user functions `current` knows (a reload changes the
    /// configured lists; the ones read from `pg_proc` stay until the next refresh).
    pub fn keeping_volatile(self, current: &FunctionPolicy) -> FunctionPolicy {
        FunctionPolicy {
            volatile: current.volatile.clone(),
            ..self
        }
    }

    /// Identifies this policy: every constructed policy gets a new one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of names known: (read_only, writes, volatile).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.read_only.len(), self.writes.len(), self.volatile.len())
    }

    /// Whether both policies list the same names (generations aside).
    pub(crate) fn same_names(&self, other: &FunctionPolicy) -> bool {
        self.read_only == other.read_only
            && self.writes == other.writes
            && self.volatile == other.volatile
    }

    /// Why calling `calls` makes a statement write, if it does.
    pub(crate) fn check(&self, calls: &[FuncName]) -> Option<AccessReason> {
        if calls.iter().any(|f| self.writes.may_match(f)) {
            return Some(AccessReason::WriteFunction);
        }
        calls
            .iter()
            .any(|f| self.volatile_write(f))
            .then_some(AccessReason::VolatileFunction)
    }

    /// Whether `f` may resolve to a volatile user function not listed as read-only.
    fn volatile_write(&self, f: &FuncName) -> bool {
        let name = &*f.name;
        let call_schema = f.schema.as_deref();
        if self.volatile.bare.contains(name) && !self.read_only.lists(call_schema, name) {
            return true;
        }
        let Some(schemas) = self.volatile.qualified.get(name) else {
            return false;
        };
        schemas
            .iter()
            .filter(|s| call_schema.is_none_or(|c| c == &***s))
            .any(|s| !self.read_only.lists(Some(s), name))
    }
}

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}
