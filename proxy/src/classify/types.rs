//! The classifier's answer: where a statement may run ([`Access`]), why
//! ([`AccessReason`]), what it is ([`ParsedKind`]) and what it touches.

/// Where a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Provably read-only: a replica may run it.
    ReadOnly,
    /// Writes, or is not known to be read-only: the primary must run it.
    Write,
}

/// Why a statement got its [`Access`]. [`AccessReason::as_str`] gives stable snake_case
/// labels for metrics (`causeway_queries_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessReason {
    /// A query that reads only (SELECT, VALUES, TABLE, SHOW, EXPLAIN, COPY ... TO STDOUT).
    ReadOnly,
    /// A data-modifying statement: INSERT, UPDATE, DELETE, MERGE, TRUNCATE, NOTIFY.
    Write,
    /// Schema or object definition: CREATE, ALTER, DROP, GRANT, COMMENT, CREATE TABLE AS ...
    Ddl,
    /// `FOR UPDATE` / `FOR NO KEY UPDATE` / `FOR SHARE` / `FOR KEY SHARE` anywhere.
    LockingRead,
    /// `SELECT ... INTO new_table`.
    SelectInto,
    /// A `WITH` query with a data-modifying part (INSERT/UPDATE/DELETE/MERGE).
    WritingCte,
    /// Calls a function that writes or needs the primary's session (nextval, advisory
    /// locks, set_config, large objects, `[functions] writes`, ...).
    WriteFunction,
    /// Calls a user function that is volatile in `pg_proc` and not listed in
    /// `[functions] read_only`.
    VolatileFunction,
    /// `EXPLAIN ANALYZE` executes its statement, and that statement writes.
    ExplainAnalyzeWrite,
    /// `COPY ... FROM`.
    CopyFrom,
    /// `COPY ... TO 'file'` or `TO PROGRAM`: writes on the server's file system.
    CopyToFile,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, SET TRANSACTION, PREPARE TRANSACTION ...
    TransactionControl,
    /// SET, RESET, DISCARD, DEALLOCATE, LISTEN, UNLISTEN, LOAD, `DECLARE ... WITH HOLD`.
    SessionState,
    /// SQL `EXECUTE` of a prepared statement this classifier has not seen.
    Execute,
    /// Other commands that need the primary: CALL, DO, LOCK, VACUUM, ANALYZE, CLUSTER,
    /// REINDEX, CHECKPOINT, ALTER SYSTEM ...
    Utility,
    /// The parser accepted the text, but its tree is too deep to analyse in full, and a
    /// shallow look could not prove it read-only.
    TooComplex,
    /// PostgreSQL's parser rejects the text (the server will too), or it contains NUL.
    Unparseable,
}

impl AccessReason {
    /// Every reason, in declaration order (to pre-register metric label values).
    pub const ALL: [AccessReason; 17] = [
        AccessReason::ReadOnly,
        AccessReason::Write,
        AccessReason::Ddl,
        AccessReason::LockingRead,
        AccessReason::SelectInto,
        AccessReason::WritingCte,
        AccessReason::WriteFunction,
        AccessReason::VolatileFunction,
        AccessReason::ExplainAnalyzeWrite,
        AccessReason::CopyFrom,
        AccessReason::CopyToFile,
        AccessReason::TransactionControl,
        AccessReason::SessionState,
        AccessReason::Execute,
        AccessReason::Utility,
        AccessReason::TooComplex,
        AccessReason::Unparseable,
    ];

    /// The stable snake_case label of this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessReason::ReadOnly => "read_only",
            AccessReason::Write => "write",
            AccessReason::Ddl => "ddl",
            AccessReason::LockingRead => "locking_read",
            AccessReason::SelectInto => "select_into",
            AccessReason::WritingCte => "writing_cte",
            AccessReason::WriteFunction => "write_function",
            AccessReason::VolatileFunction => "volatile_function",
            AccessReason::ExplainAnalyzeWrite => "explain_analyze_write",
            AccessReason::CopyFrom => "copy_from",
            AccessReason::CopyToFile => "copy_to_file",
            AccessReason::TransactionControl => "transaction_control",
            AccessReason::SessionState => "session_state",
            AccessReason::Execute => "execute",
            AccessReason::Utility => "utility",
            AccessReason::TooComplex => "too_complex",
            AccessReason::Unparseable => "unparseable",
        }
    }
}

impl std::fmt::Display for AccessReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a statement is according to PostgreSQL's parser, as far as the router cares. For a
/// string of several statements, [`Classification::kind`] is the first one's. Not to be
/// confused with [`crate::sql::StatementKind`], the lexical scanner's answer (with the names
/// the session tracks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParsedKind {
    /// No statement at all (empty text, only comments or semicolons).
    Empty,
    /// SELECT, VALUES, TABLE, WITH ... SELECT (also SELECT INTO and locking reads).
    Select,
    /// INSERT (also WITH ... INSERT).
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// MERGE.
    Merge,
    /// EXPLAIN, with or without ANALYZE.
    Explain,
    /// SHOW.
    Show,
    /// `COPY ... TO` (STDOUT, a file or a program).
    CopyTo,
    /// `COPY ... FROM`.
    CopyFrom,
    /// BEGIN or START TRANSACTION. `read_only`: declared READ ONLY (and never READ WRITE)
    /// and not ISOLATION LEVEL SERIALIZABLE, which a hot standby refuses; i.e. the
    /// transaction may run on a replica.
    Begin {
        /// The transaction may run on a replica.
        read_only: bool,
    },
    /// COMMIT / END; `chain` for `AND CHAIN` (a new transaction starts at once).
    Commit {
        /// `AND CHAIN`.
        chain: bool,
    },
    /// ROLLBACK / ABORT; `chain` for `AND CHAIN`.
    Rollback {
        /// `AND CHAIN`.
        chain: bool,
    },
    /// SAVEPOINT.
    Savepoint,
    /// `RELEASE [SAVEPOINT]`.
    Release,
    /// `ROLLBACK TO [SAVEPOINT]`.
    RollbackTo,
    /// PREPARE TRANSACTION.
    PrepareTransaction,
    /// COMMIT PREPARED.
    CommitPrepared,
    /// ROLLBACK PREPARED.
    RollbackPrepared,
    /// `SET TRANSACTION ...`. `read_only`: `Some(true)` for READ ONLY, `Some(false)` for
    /// READ WRITE or ISOLATION LEVEL SERIALIZABLE (which a standby refuses), `None` when
    /// neither is given.
    SetTransaction {
        /// Whether the transaction may (still) run on a replica, if the statement says.
        read_only: Option<bool>,
    },
    /// SET, SET LOCAL, RESET, DISCARD, SET CONSTRAINTS, SET SESSION CHARACTERISTICS, SET
    /// TRANSACTION SNAPSHOT: session state the session module tracks.
    Set,
    /// LISTEN.
    Listen,
    /// UNLISTEN.
    Unlisten,
    /// NOTIFY.
    Notify,
    /// SQL PREPARE (access follows the prepared statement).
    Prepare,
    /// SQL EXECUTE.
    Execute,
    /// DEALLOCATE.
    Deallocate,
    /// DECLARE CURSOR; `hold` for `WITH HOLD`.
    DeclareCursor {
        /// `WITH HOLD`: the cursor outlives its transaction, so the client is pinned.
        hold: bool,
    },
    /// FETCH or MOVE.
    Fetch,
    /// CLOSE (a cursor).
    Close,
    /// CALL.
    Call,
    /// DO.
    Do,
    /// LOCK TABLE.
    Lock,
    /// CREATE / ALTER / DROP / GRANT / COMMENT ..., CREATE TABLE AS, REFRESH MATERIALIZED
    /// VIEW, TRUNCATE.
    Ddl,
    /// Any other command (VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT, LOAD, ...).
    Utility,
    /// Text the parser rejects.
    Unknown,
}

/// The classification of one SQL string (one or several statements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Where the string may run.
    pub access: Access,
    /// Why.
    pub reason: AccessReason,
    /// The first statement's kind.
    pub kind: ParsedKind,
    /// Relations named anywhere in the string, as PostgreSQL folds them (unquoted names
    /// lowercased, quoted names as written), sorted and deduplicated: the bare name always,
    /// plus `schema.name` when qualified. CTE names referenced in FROM are included too
    /// (an over-approximation, harmless for `[[rules]] tables`).
    pub tables: Vec<String>,
    /// Functions named anywhere in the string (folded like tables; `schema.fn` when
    /// qualified), sorted and deduplicated.
    pub functions: Vec<String>,
    /// Number of statements in the string.
    pub statements: usize,
    /// No statement in the string changes or pins the client's session state (each is
    /// [`crate::sql::StatementKind::Other`] without a pin), for every text with the same
    /// cache key: a Query of such text needs no session-state scan when it is forwarded.
    /// Set when the text is analysed (`types::session_plain`).
    pub session_plain: bool,
}

impl Classification {
    /// A classification for text that is not analysed further.
    pub(crate) fn unparseable(reason: AccessReason) -> Classification {
        Classification {
            access: Access::Write,
            reason,
            kind: ParsedKind::Unknown,
            tables: Vec::new(),
            functions: Vec::new(),
            statements: 0,
            session_plain: false,
        }
    }

    /// Whether a replica may run it.
    pub fn is_read_only(&self) -> bool {
        self.access == Access::ReadOnly
    }

    /// Heap bytes held by the name lists (for cache accounting).
    pub(crate) fn heap_bytes(&self) -> usize {
        let strings = |v: &[String]| -> usize {
            v.iter()
                .map(|s| s.capacity() + std::mem::size_of::<String>())
                .sum::<usize>()
        };
        strings(&self.tables) + strings(&self.functions)
    }
}

/// Whether every statement of `sql` leaves the client's session state alone (see
/// [`Classification::session_plain`]), whatever the values of its literals. The session
/// scan reads a literal's value only in `set_config` calls (its third argument): text that
/// names `set_config` anywhere is never plain, so texts sharing a normalised key agree.
pub(crate) fn session_plain(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    let names_set_config = memchr::memchr_iter(b'_', bytes).any(|i| {
        let word = |range: std::ops::Range<usize>, expected: &[u8]| {
            bytes
                .get(range)
                .is_some_and(|w| w.eq_ignore_ascii_case(expected))
        };
        i >= 3 && word(i - 3..i, b"set") && word(i + 1..i + 7, b"config")
    });
    !names_set_config
        && crate::sql::statements_with(sql, true).all(|statement| {
            statement.info.kind == crate::sql::StatementKind::Other && statement.info.pin.is_none()
        })
}
