//! The routing corpus: statements and where they may run (DESIGN.md §2; user-asks.md B.4
//! item 20). Run under `super::test_policy()`: volatile user functions `public.touch`,
//! `public.safe_volatile` (read_only), `app.cached_lookup` (read_only), `app.touch_app`,
//! `public."NextVal"`; writes `app.do_write`, `send_mail`.

use super::super::{Access, AccessReason, Classification, ParsedKind};
use super::K;

/// One expectation.
pub(super) struct Case {
    pub(super) sql: &'static str,
    access: Access,
    reason: Option<AccessReason>,
    kind: Option<ParsedKind>,
}

impl Case {
    fn kind(mut self, kind: ParsedKind) -> Case {
        self.kind = Some(kind);
        self
    }

    /// What is wrong with `got`, if anything.
    pub(super) fn check(&self, got: &Classification) -> Option<String> {
        if got.access != self.access {
            return Some(format!("expected {:?}", self.access));
        }
        if self.reason.is_some_and(|r| r != got.reason) {
            return Some(format!("expected reason {:?}", self.reason));
        }
        if self.kind.is_some_and(|k| k != got.kind) {
            return Some(format!("expected kind {:?}", self.kind));
        }
        None
    }
}

/// Read-only with reason ReadOnly.
fn r(sql: &'static str) -> Case {
    Case {
        sql,
        access: Access::ReadOnly,
        reason: Some(AccessReason::ReadOnly),
        kind: None,
    }
}

/// Read-only with reason `reason`.
fn rr(sql: &'static str, reason: AccessReason) -> Case {
    Case {
        sql,
        access: Access::ReadOnly,
        reason: Some(reason),
        kind: None,
    }
}

/// A write for `reason`.
fn w(sql: &'static str, reason: AccessReason) -> Case {
    Case {
        sql,
        access: Access::Write,
        reason: Some(reason),
        kind: None,
    }
}

pub(super) fn cases() -> Vec<Case> {
    [
        plain_reads(),
        locking_reads(),
        writing_ctes(),
        functions(),
        explain_copy_into(),
        commands(),
        transactions(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn plain_reads() -> Vec<Case> {
    use AccessReason::*;
    vec![
        r("SELECT 1").kind(K::Select),
        r("select * from t where id = 1"),
        r("SELECT a, b FROM s.t JOIN u USING (id)"),
        r("VALUES (1), (2)").kind(K::Select),
        r("TABLE t").kind(K::Select),
        r("SHOW search_path").kind(K::Show),
        r("SHOW ALL"),
        r("WITH x AS (SELECT 1) SELECT * FROM x"),
        r("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r"),
        r("SELECT a, count(*) FROM t GROUP BY a HAVING count(*) > 1 ORDER BY 1 LIMIT 10 OFFSET 5"),
        r("SELECT random(), now(), clock_timestamp(), gen_random_uuid(), statement_timestamp()"),
        r("SELECT pg_sleep(0.1)"),
        r("SELECT * FROM t WHERE id IN (SELECT id FROM u)"),
        r("SELECT EXISTS (SELECT 1 FROM u WHERE u.id = t.id) FROM t"),
        r("SELECT 1 UNION SELECT 2 INTERSECT SELECT 3 EXCEPT SELECT 4"),
        r("SELECT * FROM generate_series(1, 10) g"),
        r("SELECT lower(name), length(name) FROM users"),
        r("SELECT * FROM t TABLESAMPLE SYSTEM (10)"),
        r("SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (a int PATH '$')) j"),
        r("SELECT * FROM t FOR READ ONLY"),
        r("SELECT * FROM pg_stat_activity"),
        r("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), current_setting('work_mem')"),
        r("SELECT lo_get(1234)"),
        r("SELECT public.nextval('s')"),
        // Hints, comments and string literals never change the answer.
        r("SELECT '/* causeway: route=replica */ DELETE FROM t'"),
        r("SELECT 'DELETE FROM t; INSERT INTO t VALUES (1)'"),
        r("/* causeway: route=primary */ SELECT 1"),
        r("/*NO LOAD BALANCE*/ SELECT 1"),
        r("SELECT /*causeway_route='primary',controller='cart'*/ 1"),
        r("SELECT 1 -- DELETE FROM t"),
        r("SELECT $$ DELETE FROM t $$, $tag$ FOR UPDATE $tag$"),
        r("SELECT 'x' AS \"FOR UPDATE\", 'nextval(1)' AS \"nextval('s')\""),
        r(r"SELECT E'\'; DELETE FROM t; --'"),
        r(r"SELECT 'C:\'"),
        r(r"SELECT * FROM t WHERE name ~ '\d+'"),
        w("/* causeway: route=replica */ DELETE FROM t", Write),
        w("SELECT 1 /* causeway: route=replica */; DELETE FROM t", Write),
        // With standard_conforming_strings = off, \' ends nothing and DELETE runs.
        w(r"SELECT 'a\'' ; DELETE FROM t; --'", Write),
        // Temporary and unlogged tables: reads are reads (creating them pins the session).
        r("SELECT * FROM tmp"),
        r("SELECT * FROM pg_temp.tmp"),
        r("SELECT * FROM unlogged_table"),
        // Empty text.
        r("").kind(K::Empty),
        r("   ;  ; ").kind(K::Empty),
        r("-- only a comment").kind(K::Empty),
        // Multi-statement strings.
        r("SELECT 1; SELECT 2"),
        w("SELECT 1; DELETE FROM t", Write).kind(K::Select),
        w("DELETE FROM t; SELECT 1", Write).kind(K::Delete),
        w("SELECT 1; SELECT nextval('s')", WriteFunction),
        w("SELECT * FROM t; SELECT * FROM u FOR UPDATE", LockingRead),
        w("SELECT 1; SET work_mem = '1GB'", SessionState),
        w("SELECT 1; BEGIN", TransactionControl),
        w("BEGIN; INSERT INTO t VALUES (1); COMMIT", TransactionControl).kind(K::Begin { read_only: false }),
        rr("BEGIN READ ONLY; SELECT 1; COMMIT", TransactionControl).kind(K::Begin { read_only: true }),
        // Unparseable text goes to the primary.
        w("SELEC 1", Unparseable).kind(K::Unknown),
        w("SELECT * FROM", Unparseable),
        w("DELETE FROM", Unparseable),
        w("SELECT 1; SELEC 2", Unparseable),
        w("SELECT 'unterminated", Unparseable),
        w("SELECT 1 FROM t WHERE", Unparseable),
    ]
}

fn locking_reads() -> Vec<Case> {
    use AccessReason::*;
    vec![
        w("SELECT * FROM t FOR UPDATE", LockingRead).kind(K::Select),
        w("SELECT * FROM t FOR NO KEY UPDATE", LockingRead),
        w("SELECT * FROM t FOR SHARE", LockingRead),
        w("SELECT * FROM t FOR KEY SHARE", LockingRead),
        w("select * from t for update", LockingRead),
        w("SELECT * FROM t FOR UPDATE OF t", LockingRead),
        w("SELECT * FROM t FOR UPDATE SKIP LOCKED", LockingRead),
        w("SELECT * FROM t FOR UPDATE NOWAIT", LockingRead),
        w("SELECT * FROM t FOR NO KEY UPDATE OF t SKIP LOCKED", LockingRead),
        w("SELECT * FROM t FOR NO KEY UPDATE NOWAIT", LockingRead),
        w("SELECT * FROM t FOR SHARE OF t NOWAIT", LockingRead),
        w("SELECT * FROM t FOR SHARE SKIP LOCKED", LockingRead),
        w("SELECT * FROM t FOR KEY SHARE OF t SKIP LOCKED", LockingRead),
        w("SELECT * FROM t FOR KEY SHARE NOWAIT", LockingRead),
        w("SELECT * FROM jobs WHERE state = 'new' ORDER BY id LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED", LockingRead),
        w("SELECT * FROM t JOIN u ON t.id = u.id FOR UPDATE OF t FOR SHARE OF u", LockingRead),
        w("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", LockingRead),
        w("SELECT * FROM t WHERE id IN (SELECT id FROM u FOR UPDATE)", LockingRead),
        w("SELECT (SELECT id FROM u LIMIT 1 FOR SHARE)", LockingRead),
        w("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id FOR KEY SHARE)", LockingRead),
        w("WITH c AS (SELECT * FROM t FOR UPDATE) SELECT * FROM c", LockingRead),
        w("WITH c AS MATERIALIZED (SELECT id FROM t FOR NO KEY UPDATE SKIP LOCKED) SELECT * FROM c", LockingRead),
        w("WITH a AS (SELECT 1), b AS (SELECT * FROM t FOR SHARE NOWAIT) SELECT * FROM a, b", LockingRead),
        w("SELECT * FROM t FOR UPDATE; SELECT 1", LockingRead),
        w("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", LockingRead).kind(K::DeclareCursor { hold: false }),
    ]
}

fn writing_ctes() -> Vec<Case> {
    use AccessReason::*;
    vec![
        w("WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d", WritingCte).kind(K::Select),
        w("WITH u AS (UPDATE t SET a = 1 RETURNING id) SELECT count(*) FROM u", WritingCte),
        w("WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i", WritingCte),
        w("WITH i AS (INSERT INTO t VALUES (1)) SELECT 1", WritingCte),
        w("WITH x AS (SELECT 1), d AS (DELETE FROM t RETURNING 1) SELECT * FROM x", WritingCte),
        w(
            "WITH m AS (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING t.id) SELECT * FROM m",
            WritingCte,
        ),
        w("WITH moved AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM moved", Write).kind(K::Insert),
        w("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", Write).kind(K::Insert),
        w("WITH u AS (UPDATE t SET a = 1 RETURNING *) UPDATE o SET b = 2 FROM u WHERE o.id = u.id", Write)
            .kind(K::Update),
        w("with upd as (update jobs set state = 'taken' where id = 1 returning *) select * from upd", WritingCte),
    ]
}

fn functions() -> Vec<Case> {
    use AccessReason::*;
    vec![
        w("SELECT nextval('s')", WriteFunction),
        w("SELECT NEXTVAL('s')", WriteFunction),
        w("SELECT pg_catalog.nextval('s')", WriteFunction),
        w("SELECT PG_CATALOG.NEXTVAL('s')", WriteFunction),
        w("SELECT \"pg_catalog\".\"nextval\"('s')", WriteFunction),
        w("SELECT \"nextval\"('s')", WriteFunction),
        w("SELECT setval('s', 10)", WriteFunction),
        w("SELECT setval('s', 10, false)", WriteFunction),
        w("SELECT currval('s')", WriteFunction),
        w("SELECT lastval()", WriteFunction),
        w("SELECT * FROM nextval('s')", WriteFunction),
        w(
            "SELECT id, nextval('s') FROM t WHERE x IN (SELECT 1)",
            WriteFunction,
        ),
        w("SELECT coalesce((SELECT nextval('s')), 0)", WriteFunction),
        w(
            "SELECT CASE WHEN a THEN nextval('s') END FROM t",
            WriteFunction,
        ),
        w("SELECT ARRAY(SELECT nextval('s'))", WriteFunction),
        w("VALUES (nextval('s'))", WriteFunction),
        w(
            "WITH n AS (SELECT nextval('s') AS id) SELECT id FROM n",
            WriteFunction,
        ),
        w("SELECT pg_advisory_lock(1)", WriteFunction),
        w("SELECT pg_advisory_lock(1, 2)", WriteFunction),
        w("SELECT pg_advisory_lock_shared(1)", WriteFunction),
        w("SELECT pg_advisory_unlock(1)", WriteFunction),
        w("SELECT pg_advisory_unlock_shared(1)", WriteFunction),
        w("SELECT pg_advisory_unlock_all()", WriteFunction),
        w("SELECT pg_advisory_xact_lock(1)", WriteFunction),
        w("SELECT pg_advisory_xact_lock_shared(1)", WriteFunction),
        w("SELECT pg_try_advisory_lock(1)", WriteFunction),
        w("SELECT pg_try_advisory_lock_shared(1)", WriteFunction),
        w("SELECT pg_try_advisory_xact_lock(1)", WriteFunction),
        w("SELECT pg_try_advisory_xact_lock_shared(1)", WriteFunction),
        w(
            "SELECT * FROM jobs WHERE pg_try_advisory_xact_lock(id) LIMIT 1",
            WriteFunction,
        ),
        w(
            "SELECT set_config('search_path', 'app', false)",
            WriteFunction,
        ),
        w("SELECT lo_import('/tmp/x')", WriteFunction),
        w("SELECT lo_export(1, '/tmp/x')", WriteFunction),
        w("SELECT lo_create(0), lo_creat(-1)", WriteFunction),
        w("SELECT lo_unlink(1)", WriteFunction),
        w("SELECT lo_open(1, 262144)", WriteFunction),
        w("SELECT loread(0, 10), lowrite(0, 'x')", WriteFunction),
        w(
            "SELECT lo_put(1, 0, 'x'), lo_from_bytea(0, 'x'), lo_truncate(0, 1)",
            WriteFunction,
        ),
        w("SELECT pg_notify('ch', 'payload')", WriteFunction),
        w("SELECT txid_current()", WriteFunction),
        w("SELECT pg_current_xact_id()", WriteFunction),
        w(
            "SELECT pg_current_wal_lsn(), pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn()",
            WriteFunction,
        ),
        w("SELECT pg_switch_wal()", WriteFunction),
        w("SELECT pg_create_restore_point('x')", WriteFunction),
        w(
            "SELECT pg_logical_emit_message(true, 'p', 'x')",
            WriteFunction,
        ),
        w(
            "SELECT pg_create_physical_replication_slot('s')",
            WriteFunction,
        ),
        w(
            "SELECT * FROM pg_create_logical_replication_slot('s', 'pgoutput')",
            WriteFunction,
        ),
        w("SELECT pg_drop_replication_slot('s')", WriteFunction),
        w("SELECT pg_promote()", WriteFunction),
        w("SELECT pg_reload_conf()", WriteFunction),
        w("SELECT pg_terminate_backend(123)", WriteFunction),
        w("SELECT pg_stat_reset()", WriteFunction),
        w("SELECT dblink_exec('conn', 'DELETE FROM t')", WriteFunction),
        w(
            "SELECT ext.dblink_exec('conn', 'DELETE FROM t')",
            WriteFunction,
        ),
        // User functions: volatile per pg_proc unless listed read-only; config writes.
        w("SELECT touch(1)", VolatileFunction),
        w("SELECT public.touch(1)", VolatileFunction),
        r("SELECT other.touch(1)"),
        r("SELECT safe_volatile()"),
        r("SELECT public.safe_volatile()"),
        r("SELECT app.cached_lookup(1)"),
        r("SELECT cached_lookup(1)"),
        w("SELECT touch_app()", VolatileFunction),
        w("SELECT app.touch_app()", VolatileFunction),
        w("SELECT \"NextVal\"('s')", VolatileFunction),
        r("SELECT \"NEXTVAL\"('s')"),
        w("SELECT app.do_write()", WriteFunction),
        w("SELECT do_write()", WriteFunction),
        r("SELECT other.do_write()"),
        w("SELECT send_mail('x')", WriteFunction),
        w("SELECT x.send_mail('x')", WriteFunction),
        w("SELECT upper(touch(1)::text)", VolatileFunction),
        w("SELECT * FROM t WHERE id = touch(1)", VolatileFunction),
        w(
            "SELECT count(*) FILTER (WHERE touch(a) > 0) FROM t",
            VolatileFunction,
        ),
        w(
            "SELECT sum(a) OVER (ORDER BY touch(a)) FROM t",
            VolatileFunction,
        ),
        w(
            "SELECT * FROM ROWS FROM (generate_series(1, 2), touch(1)) r",
            VolatileFunction,
        ),
        w("SELECT * FROM t ORDER BY touch(a)", VolatileFunction),
        w(
            "SELECT * FROM t WHERE a = ANY (SELECT touch(b) FROM u)",
            VolatileFunction,
        ),
        w("SELECT nextval('s'), touch(1)", WriteFunction),
    ]
}

fn explain_copy_into() -> Vec<Case> {
    use AccessReason::*;
    vec![
        r("EXPLAIN SELECT 1").kind(K::Explain),
        r("EXPLAIN DELETE FROM t"),
        r("EXPLAIN INSERT INTO t VALUES (1)"),
        r("EXPLAIN UPDATE t SET a = 1"),
        r("EXPLAIN VERBOSE SELECT 1"),
        r("EXPLAIN (FORMAT JSON) DELETE FROM t"),
        r("EXPLAIN SELECT nextval('s')"),
        r("EXPLAIN SELECT * FROM t FOR UPDATE"),
        r("EXPLAIN CREATE TABLE x AS SELECT 1"),
        r("EXPLAIN EXECUTE p"),
        r("EXPLAIN ANALYZE SELECT * FROM t"),
        r("EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM t"),
        r("EXPLAIN (ANALYZE false) DELETE FROM t"),
        r("EXPLAIN (ANALYZE off, COSTS off) DELETE FROM t"),
        r("EXPLAIN (analyze FALSE) UPDATE t SET a = 1"),
        r("EXPLAIN (ANALYZE 0) DELETE FROM t"),
        w("EXPLAIN ANALYZE DELETE FROM t", ExplainAnalyzeWrite).kind(K::Explain),
        w(
            "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
            ExplainAnalyzeWrite,
        ),
        w("EXPLAIN ANALYZE UPDATE t SET a = 1", ExplainAnalyzeWrite),
        w(
            "EXPLAIN ANALYZE MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            ExplainAnalyzeWrite,
        ),
        w(
            "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1",
            ExplainAnalyzeWrite,
        ),
        w("EXPLAIN ANALYZE VERBOSE DELETE FROM t", ExplainAnalyzeWrite),
        w("EXPLAIN (ANALYZE) DELETE FROM t", ExplainAnalyzeWrite),
        w(
            "EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1",
            ExplainAnalyzeWrite,
        ),
        w("EXPLAIN (ANALYZE true) DELETE FROM t", ExplainAnalyzeWrite),
        w("EXPLAIN (ANALYZE on) DELETE FROM t", ExplainAnalyzeWrite),
        w("EXPLAIN (ANALYZE 1) DELETE FROM t", ExplainAnalyzeWrite),
        w(
            "EXPLAIN (COSTS off, ANALYZE) INSERT INTO t VALUES (1)",
            ExplainAnalyzeWrite,
        ),
        w("EXPLAIN ANALYZE SELECT nextval('s')", ExplainAnalyzeWrite),
        w(
            "EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE",
            ExplainAnalyzeWrite,
        ),
        w(
            "EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            ExplainAnalyzeWrite,
        ),
        w("EXPLAIN ANALYZE EXECUTE p", ExplainAnalyzeWrite),
        w("EXPLAIN ANALYZE SELECT touch(1)", VolatileFunction),
        r("COPY t TO STDOUT").kind(K::CopyTo),
        r("copy t to stdout"),
        r("COPY t (a, b) TO STDOUT WITH (FORMAT csv, HEADER)"),
        r("COPY (SELECT * FROM t WHERE a > 1) TO STDOUT").kind(K::CopyTo),
        w("COPY (SELECT nextval('s')) TO STDOUT", WriteFunction).kind(K::CopyTo),
        w("COPY (SELECT * FROM t FOR UPDATE) TO STDOUT", LockingRead),
        w("COPY (DELETE FROM t RETURNING *) TO STDOUT", Write),
        w(
            "COPY (INSERT INTO t VALUES (1) RETURNING id) TO STDOUT",
            Write,
        ),
        w("COPY t TO '/tmp/t.csv'", CopyToFile).kind(K::CopyTo),
        w("COPY t TO PROGRAM 'gzip > /tmp/t.gz'", CopyToFile),
        w("COPY (SELECT 1) TO '/tmp/one'", CopyToFile),
        w("COPY t FROM STDIN", CopyFrom).kind(K::CopyFrom),
        w("COPY t (a) FROM STDIN WITH (FORMAT csv)", CopyFrom),
        w("COPY t FROM '/tmp/t.csv'", CopyFrom),
        w("COPY t FROM PROGRAM 'cat /tmp/t.csv'", CopyFrom),
        w("SELECT * INTO new_t FROM t", SelectInto).kind(K::Select),
        w("SELECT * INTO TEMP tmp FROM t", SelectInto),
        w("SELECT * INTO UNLOGGED ul FROM t", SelectInto),
        w("SELECT a INTO TABLE x FROM t WHERE false", SelectInto),
        w("CREATE TABLE x AS SELECT * FROM t", Ddl).kind(K::Ddl),
        w("CREATE TEMP TABLE x AS SELECT 1", Ddl),
        w("CREATE MATERIALIZED VIEW mv AS SELECT 1", Ddl),
        w("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", Ddl),
    ]
}

fn commands() -> Vec<Case> {
    use AccessReason::*;
    vec![
        w("INSERT INTO t VALUES (1)", Write).kind(K::Insert),
        w("INSERT INTO t SELECT * FROM u", Write),
        w(
            "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = excluded.a",
            Write,
        ),
        w("UPDATE t SET a = 1 WHERE id = 2", Write).kind(K::Update),
        w(
            "UPDATE t SET a = u.a FROM u WHERE t.id = u.id RETURNING t.*",
            Write,
        ),
        w("DELETE FROM t WHERE id = 1", Write).kind(K::Delete),
        w("DELETE FROM t USING u WHERE t.id = u.id", Write),
        w(
            "MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id)",
            Write,
        )
        .kind(K::Merge),
        w("TRUNCATE t", Write).kind(K::Ddl),
        w("CREATE TABLE t (id int)", Ddl).kind(K::Ddl),
        w("CREATE TEMP TABLE tmp (id int)", Ddl),
        w("CREATE TEMPORARY TABLE tmp (id int) ON COMMIT DROP", Ddl),
        w("CREATE UNLOGGED TABLE ul (id int)", Ddl),
        w("CREATE TEMP VIEW v AS SELECT 1", Ddl),
        w("INSERT INTO tmp VALUES (1)", Write),
        w("ALTER TABLE ul SET LOGGED", Ddl),
        w("ALTER TABLE t ADD COLUMN b int", Ddl),
        w("DROP TABLE t", Ddl),
        w("CREATE INDEX CONCURRENTLY i ON t (a)", Ddl),
        w("GRANT SELECT ON t TO app", Ddl),
        w("REVOKE ALL ON t FROM app", Ddl),
        w("COMMENT ON TABLE t IS 'x'", Ddl),
        w(
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            Ddl,
        ),
        w("CREATE SEQUENCE s", Ddl),
        w("CREATE EXTENSION pgcrypto", Ddl),
        w("CREATE SCHEMA app", Ddl),
        w("CREATE VIEW v AS SELECT 1", Ddl),
        w("CREATE ROLE r", Ddl),
        w("CREATE DATABASE d", Ddl),
        w("DO $$ BEGIN PERFORM 1; END $$", Utility).kind(K::Do),
        w("CALL my_proc(1)", Utility).kind(K::Call),
        w("LOCK TABLE t IN ACCESS SHARE MODE", Utility).kind(K::Lock),
        w("LOCK t", Utility),
        w("VACUUM t", Utility).kind(K::Utility),
        w("VACUUM (ANALYZE) t", Utility),
        w("ANALYZE t", Utility),
        w("CLUSTER t USING i", Utility),
        w("REINDEX TABLE t", Utility),
        w("CHECKPOINT", Utility),
        w("ALTER SYSTEM SET work_mem = '1MB'", Utility),
        w("LOAD 'auto_explain'", SessionState),
        w("LISTEN ch", SessionState).kind(K::Listen),
        w("UNLISTEN ch", SessionState).kind(K::Unlisten),
        w("UNLISTEN *", SessionState),
        w("NOTIFY ch", Write).kind(K::Notify),
        w("NOTIFY ch, 'payload'", Write),
        r("PREPARE p AS SELECT 1").kind(K::Prepare),
        r("PREPARE p (int) AS SELECT * FROM t WHERE id = $1"),
        w("PREPARE p AS INSERT INTO t VALUES (1)", Write).kind(K::Prepare),
        w("PREPARE p (int) AS UPDATE t SET a = $1", Write),
        w("PREPARE p AS DELETE FROM t", Write),
        w("PREPARE p AS SELECT nextval('s')", WriteFunction),
        w("PREPARE p AS SELECT * FROM t FOR UPDATE", LockingRead),
        w("PREPARE p AS SELECT touch(1)", VolatileFunction),
        w("EXECUTE p", Execute).kind(K::Execute),
        w("EXECUTE p(1, 'x')", Execute),
        w("DEALLOCATE p", SessionState).kind(K::Deallocate),
        w("DEALLOCATE ALL", SessionState),
        r("DECLARE c CURSOR FOR SELECT * FROM t").kind(K::DeclareCursor { hold: false }),
        r("DECLARE c SCROLL CURSOR WITHOUT HOLD FOR SELECT 1"),
        w(
            "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t",
            SessionState,
        )
        .kind(K::DeclareCursor { hold: true }),
        w(
            "DECLARE c BINARY CURSOR FOR SELECT nextval('s')",
            WriteFunction,
        ),
        r("FETCH 10 FROM c").kind(K::Fetch),
        r("FETCH ALL c"),
        r("MOVE NEXT IN c").kind(K::Fetch),
        r("CLOSE c").kind(K::Close),
        r("CLOSE ALL"),
        w("SET search_path = app", SessionState).kind(K::Set),
        w("SET LOCAL statement_timeout = '1s'", SessionState).kind(K::Set),
        w("SET ROLE app", SessionState),
        w("SET SESSION AUTHORIZATION app", SessionState),
        w("SET default_transaction_read_only = on", SessionState),
        w(
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            SessionState,
        )
        .kind(K::Set),
        w("SET TRANSACTION SNAPSHOT '000003A1-1'", SessionState).kind(K::Set),
        w("SET CONSTRAINTS ALL DEFERRED", SessionState).kind(K::Set),
        w("RESET search_path", SessionState).kind(K::Set),
        w("RESET ALL", SessionState),
        w("DISCARD ALL", SessionState).kind(K::Set),
    ]
}

fn transactions() -> Vec<Case> {
    use AccessReason::*;
    let ro = K::Begin { read_only: true };
    let rw = K::Begin { read_only: false };
    let control = TransactionControl;
    vec![
        w("BEGIN", control).kind(rw),
        w("BEGIN TRANSACTION", control).kind(rw),
        w("BEGIN WORK", control).kind(rw),
        w("START TRANSACTION", control).kind(rw),
        w("BEGIN READ WRITE", control).kind(rw),
        w("BEGIN READ ONLY, READ WRITE", control).kind(rw),
        w("BEGIN ISOLATION LEVEL SERIALIZABLE", control).kind(rw),
        w("BEGIN DEFERRABLE", control).kind(rw),
        // A hot standby refuses SERIALIZABLE, even READ ONLY DEFERRABLE.
        w(
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
            control,
        )
        .kind(rw),
        w(
            "START TRANSACTION READ ONLY ISOLATION LEVEL SERIALIZABLE",
            control,
        )
        .kind(rw),
        rr("BEGIN READ ONLY", control).kind(ro),
        rr("begin read only", control).kind(ro),
        rr("BEGIN TRANSACTION READ ONLY", control).kind(ro),
        rr("START TRANSACTION READ ONLY", control).kind(ro),
        rr("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", control).kind(ro),
        rr("BEGIN READ ONLY ISOLATION LEVEL READ COMMITTED", control).kind(ro),
        rr(
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY DEFERRABLE",
            control,
        )
        .kind(ro),
        rr("COMMIT", control).kind(K::Commit { chain: false }),
        rr("END", control).kind(K::Commit { chain: false }),
        rr("COMMIT AND CHAIN", control).kind(K::Commit { chain: true }),
        rr("ROLLBACK", control).kind(K::Rollback { chain: false }),
        rr("ABORT", control).kind(K::Rollback { chain: false }),
        rr("ROLLBACK AND CHAIN", control).kind(K::Rollback { chain: true }),
        rr("SAVEPOINT s", control).kind(K::Savepoint),
        rr("RELEASE SAVEPOINT s", control).kind(K::Release),
        rr("RELEASE s", control).kind(K::Release),
        rr("ROLLBACK TO SAVEPOINT s", control).kind(K::RollbackTo),
        rr("ROLLBACK TO s", control).kind(K::RollbackTo),
        w("PREPARE TRANSACTION 'x'", control).kind(K::PrepareTransaction),
        w("COMMIT PREPARED 'x'", control).kind(K::CommitPrepared),
        w("ROLLBACK PREPARED 'x'", control).kind(K::RollbackPrepared),
        rr("SET TRANSACTION READ ONLY", control).kind(K::SetTransaction {
            read_only: Some(true),
        }),
        w("SET TRANSACTION READ WRITE", control).kind(K::SetTransaction {
            read_only: Some(false),
        }),
        rr("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", control)
            .kind(K::SetTransaction { read_only: None }),
        w("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", control).kind(K::SetTransaction {
            read_only: Some(false),
        }),
        rr(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            control,
        )
        .kind(K::SetTransaction {
            read_only: Some(true),
        }),
    ]
}
