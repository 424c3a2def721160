//! Tests of the statement splitter and classifier.

#![allow(clippy::unwrap_used)]

use super::*;
use PinReason as P;
use StatementKind as K;

fn set(name: &str) -> K {
    K::Set {
        name: name.into(),
        local: false,
    }
}
fn set_local(name: &str) -> K {
    K::Set {
        name: name.into(),
        local: true,
    }
}
fn reset(name: &str) -> K {
    K::Reset { name: name.into() }
}
fn prepare(name: &str) -> K {
    K::Prepare { name: name.into() }
}
fn execute(name: &str) -> K {
    K::Execute { name: name.into() }
}

#[rustfmt::skip]
fn cases() -> Vec<(&'static str, K, Option<P>)> {
    vec![
        // Transactions.
        ("BEGIN", K::Begin { read_only: false }, None),
        ("begin work;", K::Begin { read_only: false }, None),
        ("BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE", K::Begin { read_only: true }, None),
        ("START TRANSACTION READ ONLY", K::Begin { read_only: true }, None),
        ("START TRANSACTION READ ONLY, READ WRITE", K::Begin { read_only: false }, None),
        ("BEGIN ISOLATION LEVEL READ COMMITTED", K::Begin { read_only: false }, None),
        ("BEGIN READ WRITE READ ONLY", K::Begin { read_only: true }, None),
        ("START", K::Other, None),
        ("COMMIT", K::Commit { chain: false }, None),
        ("END TRANSACTION", K::Commit { chain: false }, None),
        ("COMMIT AND CHAIN", K::Commit { chain: true }, None),
        ("commit work and no chain", K::Commit { chain: false }, None),
        ("ROLLBACK", K::Rollback { chain: false }, None),
        ("ABORT AND CHAIN", K::Rollback { chain: true }, None),
        ("ROLLBACK TO SAVEPOINT s1", K::RollbackToSavepoint, None),
        ("ROLLBACK WORK TO s1", K::RollbackToSavepoint, None),
        ("ABORT TO s1", K::Other, None),
        ("SAVEPOINT s1", K::Savepoint, None),
        ("RELEASE SAVEPOINT s1", K::ReleaseSavepoint, None),
        ("release s1", K::ReleaseSavepoint, None),
        ("PREPARE TRANSACTION 'gx'", K::PrepareTransaction, None),
        ("COMMIT PREPARED 'gx'", K::PrepareTransaction, None),
        ("ROLLBACK PREPARED 'gx'", K::PrepareTransaction, None),
        // SET.
        ("SET statement_timeout = '5s'", set("statement_timeout"), None),
        ("set search_path to \"My Schema\", public", set("search_path"), None),
        ("SET LOCAL work_mem = '64MB'", set_local("work_mem"), None),
        ("SET SESSION work_mem = '64MB'", set("work_mem"), None),
        ("set \"TimeZone\" = 'UTC'", set("timezone"), None),
        ("SET causeway.session = 'abc';", set("causeway.session"), None),
        ("SET MyApp . \"X\" TO 1", set("myapp.x"), None),
        ("SET x=-1", set("x"), None),
        ("SET application_name = DEFAULT", set("application_name"), None),
        ("SET TIME ZONE 'UTC'", set("timezone"), None),
        ("SET LOCAL TIME ZONE LOCAL", set_local("timezone"), None),
        ("SET NAMES 'UTF8'", set("client_encoding"), None),
        ("SET SCHEMA 'app'", set("search_path"), None),
        ("SET ROLE admin", set("role"), None),
        ("SET role = 'admin'", set("role"), None),
        ("SET SESSION AUTHORIZATION DEFAULT", set("session_authorization"), None),
        ("SET SESSION SESSION AUTHORIZATION bob", set("session_authorization"), None),
        ("SET LOCAL SESSION AUTHORIZATION bob", set_local("session_authorization"), None),
        ("SET XML OPTION DOCUMENT", set("xmloption"), None),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", set("default_transaction_characteristics"), None),
        ("SET SESSION characteristics = 1", set("characteristics"), None),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", K::SetTransaction, None),
        ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", K::SetTransaction, None),
        ("SET LOCAL TRANSACTION READ ONLY", K::SetTransaction, None),
        ("SET transaction_isolation = 'serializable'", set("transaction_isolation"), None),
        ("SET CONSTRAINTS ALL DEFERRED", K::SetConstraints, None),
        ("SET work_mem FROM CURRENT", K::Other, Some(P::UnrecognizedSet)),
        ("SET", K::Other, Some(P::UnrecognizedSet)),
        ("SET 'x' = 1", K::Other, Some(P::UnrecognizedSet)),
        ("SET TIME ZONE", K::Other, Some(P::UnrecognizedSet)),
        ("SET search_path TO", K::Other, Some(P::UnrecognizedSet)),
        ("SET U&\"d!0061ta\" UESCAPE '!' = 1", set("data"), None),
        ("SET U&\"a\" UESCAPE 'ab' = 1", K::Other, Some(P::UnrecognizedSet)),
        // RESET.
        ("RESET ALL", K::ResetAll, None),
        ("RESET search_path", reset("search_path"), None),
        ("RESET ROLE", reset("role"), None),
        ("RESET SESSION AUTHORIZATION", reset("session_authorization"), None),
        ("RESET TIME ZONE", reset("timezone"), None),
        ("RESET TRANSACTION ISOLATION LEVEL", reset("transaction_isolation"), None),
        ("RESET \"Causeway\".Session", reset("causeway.session"), None),
        ("RESET ALL x", K::Other, Some(P::UnrecognizedSet)),
        ("RESET", K::Other, Some(P::UnrecognizedSet)),
        // Prepared statements.
        ("PREPARE q1 (int, text) AS SELECT $1, $2", prepare("q1"), None),
        ("PREPARE \"Q1\" AS SELECT 1", prepare("Q1"), None),
        ("PREPARE transaction AS SELECT 1", prepare("transaction"), None),
        ("PREPARE p AS SELECT pg_advisory_lock(1)", prepare("p"), Some(P::AdvisoryLock)),
        ("PREPARE p", K::Other, None),
        ("EXECUTE q1 (1, 'a')", execute("q1"), None),
        ("EXPLAIN EXECUTE q1(1)", execute("q1"), None),
        ("EXPLAIN ANALYZE VERBOSE EXECUTE Q1", execute("q1"), None),
        ("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE q1", execute("q1"), None),
        ("EXPLAIN SELECT 1", K::Other, None),
        ("CREATE TABLE t AS EXECUTE q1(2)", execute("q1"), None),
        ("CREATE TEMP TABLE t (a) WITH (fillfactor = 70) AS EXECUTE q1", execute("q1"), Some(P::TemporaryObject)),
        ("CREATE TABLE t AS SELECT 1 AS execute", K::Other, None),
        ("DEALLOCATE q1", K::Deallocate { name: Some("q1".into()) }, None),
        ("DEALLOCATE PREPARE \"Q1\"", K::Deallocate { name: Some("Q1".into()) }, None),
        ("DEALLOCATE ALL", K::Deallocate { name: None }, None),
        ("deallocate prepare all", K::Deallocate { name: None }, None),
        ("DEALLOCATE prepare", K::Deallocate { name: Some("prepare".into()) }, None),
        ("DEALLOCATE a b", K::Other, None),
        // DISCARD.
        ("DISCARD ALL", K::Discard { what: Discard::All }, None),
        ("discard plans", K::Discard { what: Discard::Plans }, None),
        ("DISCARD SEQUENCES", K::Discard { what: Discard::Sequences }, None),
        ("DISCARD TEMP", K::Discard { what: Discard::Temp }, None),
        ("DISCARD TEMPORARY", K::Discard { what: Discard::Temp }, None),
        ("DISCARD stuff", K::Other, None),
        // LISTEN / NOTIFY.
        ("LISTEN Chan", K::Listen { channel: "chan".into() }, Some(P::Listen)),
        ("LISTEN \"Chan\"", K::Listen { channel: "Chan".into() }, Some(P::Listen)),
        ("LISTEN", K::Other, Some(P::Listen)),
        ("UNLISTEN *", K::Unlisten { channel: None }, None),
        ("UNLISTEN chan", K::Unlisten { channel: Some("chan".into()) }, None),
        ("NOTIFY chan, 'payload'", K::Notify, None),
        ("SELECT pg_notify('c', 'LISTEN')", K::Other, None),
        // COPY.
        ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", K::Copy { from_stdin: true }, None),
        ("copy t from stdin", K::Copy { from_stdin: true }, None),
        ("COPY t FROM '/tmp/x'", K::Copy { from_stdin: false }, None),
        ("COPY (SELECT * FROM stdin) TO STDOUT", K::Copy { from_stdin: false }, None),
        ("COPY t TO STDOUT", K::Copy { from_stdin: false }, None),
        // Advisory locks.
        ("SELECT pg_advisory_lock(42)", K::Other, Some(P::AdvisoryLock)),
        ("SELECT pg_catalog.pg_try_advisory_lock_shared(1, 2)", K::Other, Some(P::AdvisoryLock)),
        ("select PG_ADVISORY_LOCK (1)", K::Other, Some(P::AdvisoryLock)),
        ("SELECT \"pg_advisory_lock_shared\"(1)", K::Other, Some(P::AdvisoryLock)),
        ("SELECT x FROM t WHERE pg_try_advisory_lock(t.id)", K::Other, Some(P::AdvisoryLock)),
        ("SELECT pg_advisory_xact_lock(1)", K::Other, None),
        ("SELECT pg_try_advisory_xact_lock_shared(1)", K::Other, None),
        ("SELECT myschema.pg_advisory_lock(1)", K::Other, None),
        ("SELECT pg_advisory_lock FROM t", K::Other, None),
        ("SELECT 'pg_advisory_lock(1)'", K::Other, None),
        ("SELECT $$pg_advisory_lock(1)$$", K::Other, None),
        ("SELECT $x$ $$ pg_advisory_lock(1) $$ $x$", K::Other, None),
        ("SELECT 1 /* pg_advisory_lock(1) */", K::Other, None),
        ("SELECT 1 -- pg_advisory_lock(1)", K::Other, None),
        ("SELECT E'\\'', pg_advisory_lock(1)", K::Other, Some(P::AdvisoryLock)),
        ("SELECT E'\\', pg_advisory_lock(1) --'", K::Other, None),
        ("SELECT '\\', pg_advisory_lock(1) --'", K::Other, Some(P::AdvisoryLock)),
        ("EXPLAIN ANALYZE SELECT pg_advisory_lock(1)", K::Other, Some(P::AdvisoryLock)),
        // Temporary objects.
        ("CREATE TEMP TABLE t (a int)", K::Other, Some(P::TemporaryObject)),
        ("CREATE GLOBAL TEMPORARY TABLE t (a int)", K::Other, Some(P::TemporaryObject)),
        ("CREATE LOCAL TEMP SEQUENCE s", K::Other, Some(P::TemporaryObject)),
        ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", K::Other, Some(P::TemporaryObject)),
        ("CREATE TEMPORARY RECURSIVE VIEW v (n) AS SELECT 1", K::Other, Some(P::TemporaryObject)),
        ("create temp table t as select 1", K::Other, Some(P::TemporaryObject)),
        ("CREATE UNLOGGED TABLE t (a int)", K::Other, None),
        ("CREATE TABLE temp (a int)", K::Other, None),
        ("CREATE TABLE pg_temp.t (a int)", K::Other, Some(P::TemporaryObject)),
        ("CREATE INDEX ON \"pg_temp\".t (a)", K::Other, Some(P::TemporaryObject)),
        ("CREATE FUNCTION pg_temp.f() RETURNS int AS 'select 1' LANGUAGE sql", K::Other, Some(P::TemporaryObject)),
        ("SELECT * INTO TEMP TABLE t FROM x", K::Other, Some(P::TemporaryObject)),
        ("SELECT * INTO TEMPORARY t FROM x", K::Other, Some(P::TemporaryObject)),
        ("SELECT a INTO LOCAL TEMP \"T\" FROM x", K::Other, Some(P::TemporaryObject)),
        ("WITH x AS (SELECT 1) SELECT * INTO TEMP t FROM x", K::Other, Some(P::TemporaryObject)),
        ("SELECT 1 INTO pg_temp.t", K::Other, Some(P::TemporaryObject)),
        ("SELECT * INTO temp FROM x", K::Other, None),
        ("SELECT * INTO t FROM x", K::Other, None),
        ("INSERT INTO temp VALUES (1)", K::Other, None),
        ("INSERT INTO temp SELECT 1", K::Other, None),
        ("MERGE INTO temp t USING s ON true WHEN MATCHED THEN DO NOTHING", K::Other, None),
        // Cursors.
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", K::Other, Some(P::HoldCursor)),
        ("DECLARE c BINARY INSENSITIVE NO SCROLL CURSOR WITH HOLD FOR SELECT 1", K::Other, Some(P::HoldCursor)),
        ("declare cursor cursor with hold for select 1", K::Other, Some(P::HoldCursor)),
        ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", K::Other, None),
        ("DECLARE c SCROLL CURSOR FOR SELECT 1", K::Other, None),
        // set_config.
        // A whole `SELECT set_config('name', 'value', false)` is the SET it amounts to.
        ("SELECT set_config('search_path', 'x', false)", set("search_path"), None),
        ("select pg_catalog.set_config('TimeZone', 'UTC', FALSE);", set("timezone"), None),
        ("SELECT pg_catalog . set_config ( 'a.b' , '' , false )", set("a.b"), None),
        // Anything more is an ordinary call that pins.
        ("SELECT set_config('search_path', 'x', false), 1", K::Other, Some(P::SetConfig)),
        ("SELECT set_config('search_path', 'x', false) FROM t", K::Other, Some(P::SetConfig)),
        ("SELECT set_config('', 'x', false)", K::Other, Some(P::SetConfig)),
        ("SELECT set_config(E'a', 'x', false)", K::Other, Some(P::SetConfig)),
        ("SELECT set_config('a', $1, false)", K::Other, Some(P::SetConfig)),
        ("SELECT set_config('a', 'b', 'off')", K::Other, Some(P::SetConfig)),
        ("SELECT myschema.set_config('a', 'b', false)", K::Other, None),
        ("SELECT pg_catalog.now()", K::Other, None),
        ("SELECT set_config('search_path', 'x', true)", K::Other, None),
        ("SELECT pg_catalog.set_config('a', 'b', TRUE)", K::Other, None),
        ("SELECT set_config('a', 'b', 'on')", K::Other, None),
        ("SELECT set_config('a', 'b', $1)", K::Other, Some(P::SetConfig)),
        ("SELECT set_config('a', lower('B'), true)", K::Other, None),
        ("SELECT set_config('a', 'b', true OR false)", K::Other, Some(P::SetConfig)),
        ("SELECT set_config('a', 'b')", K::Other, Some(P::SetConfig)),
        ("SELECT set_config('a', set_config('b', 'c', false), true)", K::Other, Some(P::SetConfig)),
        ("SELECT app.set_config('a', 'b', false)", K::Other, None),
        // LOAD.
        ("LOAD 'auto_explain'", K::Other, Some(P::Load)),
        // DO blocks run their body now.
        ("DO $$BEGIN PERFORM pg_advisory_lock(1); END$$", K::Other, Some(P::AdvisoryLock)),
        ("DO $$BEGIN SET search_path = x; END$$", K::Other, Some(P::UnrecognizedSet)),
        ("DO $$DECLARE n int; BEGIN IF true THEN RESET ALL; END IF; END$$", K::Other, Some(P::UnrecognizedSet)),
        ("DO $$BEGIN SET LOCAL search_path = x; END$$", K::Other, None),
        ("DO $$BEGIN EXECUTE 'LISTEN ' || quote_ident(ch); END$$", K::Other, Some(P::Listen)),
        ("DO LANGUAGE plpgsql $$ BEGIN CREATE TEMP TABLE t(a int); END $$", K::Other, Some(P::TemporaryObject)),
        ("DO 'BEGIN PERFORM pg_advisory_lock(1); END'", K::Other, Some(P::AdvisoryLock)),
        ("DO $$BEGIN RAISE NOTICE 'LISTEN x'; UPDATE t SET a = 1; END$$", K::Other, None),
        ("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ SELECT pg_advisory_lock(1) $$", K::Other, None),
        // Lexical traps.
        ("SELECT 'LISTEN x'", K::Other, None),
        ("SELECT \"SET\" FROM t", K::Other, None),
        ("\"SET\" x = 1", K::Other, None),
        ("(SELECT 1)", K::Other, None),
        ("/* LISTEN x */ SELECT 1", K::Other, None),
        ("/* a /* nested */ LISTEN x */ SELECT 1", K::Other, None),
        ("-- comment\n  /* c */ LISTEN x -- trailing", K::Listen { channel: "x".into() }, Some(P::Listen)),
        ("SELECT $a$ ; LISTEN x; $a$", K::Other, None),
        ("SELECT 1; LISTEN x", K::Other, None),
        ("  ;; select 1 ;  ", K::Other, None),
        ("", K::Other, None),
        ("SHOW search_path", K::Other, None),
        ("UPDATE t SET a = 1", K::Other, None),
        ("ALTER ROLE r SET search_path = x", K::Other, None),
        ("VALUES (1)", K::Other, None),
    ]
}

#[test]
fn classification_table() {
    let cases = cases();
    assert!(cases.len() >= 80);
    for (sql, kind, pin) in cases {
        let expected = StatementInfo { kind, pin };
        assert_eq!(classify(sql), expected, "classify({sql:?})");
    }
}

#[test]
fn splitting_agrees_with_classify() {
    let single: Vec<_> = cases()
        .into_iter()
        .filter(|(sql, _, _)| split_statements(sql).len() == 1)
        .collect();
    assert!(single.len() > 150);
    let joined: Vec<_> = single.iter().map(|(sql, _, _)| *sql).collect();
    let joined = joined.join("\n;\n");
    let split = split_statements(&joined);
    assert_eq!(split.len(), single.len());
    for (stmt, (sql, kind, pin)) in split.iter().zip(single) {
        assert_eq!(stmt.text, sql.trim_matches(|c| c == ';' || c == ' '));
        assert_eq!(stmt.info, StatementInfo { kind, pin }, "{sql:?}");
    }
}

#[test]
fn splits_on_top_level_semicolons() {
    let stmts = split_statements("SELECT 1; SET x = 1;; LISTEN y");
    let texts: Vec<_> = stmts.iter().map(|s| s.text).collect();
    assert_eq!(texts, ["SELECT 1", "SET x = 1", "LISTEN y"]);
    assert_eq!(stmts[1].info.kind, set("x"));
    assert_eq!(stmts[2].info.pin, Some(P::Listen));

    let texts: Vec<_> =
        split_statements("SELECT 'a;b'; SELECT \"c;d\"; SELECT $x$;$x$; SELECT 1 /* ; */ -- ;")
            .into_iter()
            .map(|s| s.text)
            .collect();
    assert_eq!(
        texts,
        [
            "SELECT 'a;b'",
            "SELECT \"c;d\"",
            "SELECT $x$;$x$",
            "SELECT 1 /* ; */ -- ;"
        ]
    );

    assert!(split_statements(" ; ;\n -- nothing\n /* here */ ;").is_empty());
    assert_eq!(split_statements("SELECT 1; -- done").len(), 1);
    let hinted = split_statements("/* causeway: route=primary */ SELECT 1 ;\n");
    assert_eq!(hinted[0].text, "/* causeway: route=primary */ SELECT 1");
}

#[test]
fn begin_atomic_bodies_do_not_split() {
    let sql = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; \
               SELECT CASE WHEN true THEN 1 END; END; COMMIT";
    let stmts = split_statements(sql);
    assert_eq!(stmts.len(), 2, "{stmts:?}");
    assert!(stmts[0].text.ends_with("END"));
    assert_eq!(stmts[1].info.kind, K::Commit { chain: false });
    // A function named "begin" or a BEGIN without ATOMIC does not open a block.
    assert_eq!(
        split_statements("CREATE FUNCTION f(begin int) RETURNS int AS 'x'; BEGIN; END").len(),
        3
    );
}

#[test]
fn standard_conforming_strings_off_changes_splitting() {
    let sql = r"SELECT 'a\'; LISTEN x; '; SELECT 2";
    let off = split_statements_with(sql, false);
    assert_eq!(off.len(), 2);
    assert!(off.iter().all(|s| s.info.pin.is_none()));
    let on = split_statements(sql);
    assert_eq!(on.len(), 3);
    assert_eq!(on[1].info.pin, Some(P::Listen));
    assert_eq!(
        classify_with(r"SELECT 'x\', pg_advisory_lock(1) --'", false),
        StatementInfo::other()
    );
}

const TRICKY: &[&str] = &[
    "SELECT 1; SET x = 1;; LISTEN y; SET LOCAL a.b TO 'c'; RESET ALL; DEALLOCATE PREPARE ALL",
    "/* a /* b */ c */ BEGIN READ ONLY; SELECT E'\\'', $a$ ; $a$, \"SET\"; COMMIT AND CHAIN",
    "DO $$BEGIN EXECUTE 'LISTEN ' || x; SET a = 1; END$$; CREATE FUNCTION f() BEGIN ATOMIC SELECT 1; END; END",
    "SELECT set_config('a', 'b', (true)), pg_catalog.pg_advisory_lock(1) INTO TEMP t; DECLARE c CURSOR WITH HOLD FOR",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; RESET TIME ZONE; EXPLAIN (a) EXECUTE p(1); COPY t FROM STDIN",
    "PREPARE p (int) AS SELECT $1; EXECUTE p(1); CREATE TEMP TABLE t AS EXECUTE p; DISCARD TEMP; UNLISTEN *; LOAD 'x'",
    "DO 'BEGIN EXECUTE ''DO $q$ BEGIN EXECUTE ''''LISTEN x''''; END $q$''; END'; SELECT 1 INTO pg_temp.t",
];

fn check(sql: &str) {
    for stmt in split_statements(sql)
        .into_iter()
        .chain(split_statements_with(sql, false))
    {
        // Every statement's text is a slice of the input.
        let offset = stmt.text.as_ptr() as usize - sql.as_ptr() as usize;
        assert!(offset + stmt.text.len() <= sql.len());
    }
    let _ = (classify(sql), classify_with(sql, false));
}

#[test]
fn every_prefix_and_suffix_is_safe() {
    for sql in TRICKY {
        for (i, _) in sql.char_indices() {
            check(&sql[..i]);
            check(&sql[i..]);
        }
    }
}

#[test]
fn nested_dynamic_sql_is_followed() {
    assert_eq!(classify(TRICKY[6]).pin, Some(P::Listen));
}

#[test]
fn deep_nesting_does_not_overflow() {
    let explain = "EXPLAIN ".repeat(10_000) + "EXECUTE p";
    assert_eq!(classify(&explain).kind, K::Other);
    let mut body = String::from("LISTEN x");
    for _ in 0..12 {
        body = format!("DO '{}'", body.replace('\'', "''"));
    }
    assert_eq!(classify(&body).pin, None);
    let unicode = "U&'' ".repeat(50_000);
    assert_eq!(classify(&unicode).kind, K::Other);
}

#[test]
fn random_soup_is_safe() {
    const WORDS: &[&str] = &[
        "'",
        "\"",
        "$",
        "$$",
        "$a$",
        ";",
        "/*",
        "*/",
        "--",
        "\n",
        "\\",
        "E'",
        "U&",
        "(",
        ")",
        ",",
        ".",
        "=",
        " ",
        "SET",
        "RESET",
        "LISTEN",
        "INTO",
        "TEMP",
        "DO",
        "BEGIN",
        "ATOMIC",
        "END",
        "CREATE",
        "FUNCTION",
        "EXECUTE",
        "pg_advisory_lock",
        "set_config",
        "pg_temp",
        "TO",
        "SESSION",
        "LOCAL",
        "CURSOR",
        "WITH",
        "HOLD",
        "é",
        "1",
        "true",
        "EXPLAIN",
        "DECLARE",
        "COPY",
        "FROM",
        "STDIN",
        "TIME",
        "ZONE",
        "DEALLOCATE",
        "PREPARE",
        "ALL",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        let mut sql = String::new();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        for i in 0..(seed % 24) {
            let r = seed.rotate_left(i as u32 * 7) as usize;
            sql.push_str(WORDS[r % WORDS.len()]);
            if r % 3 == 0 {
                sql.push(' ');
            }
        }
        check(&sql);
    }
}

/// Splitting as it was before the single pass: the head parsed from a cursor of its own,
/// then all of the statement's tokens read again by the scanning pass from its start.
fn two_pass_split(sql: &str, standard_strings: bool) -> Vec<Statement<'_>> {
    let mut lex = Lexer::with_standard_conforming_strings(sql, standard_strings);
    let mut out = Vec::new();
    loop {
        let start = lex.offset();
        let mut cursor = Cursor::new(lex.clone());
        let Some(first) = cursor.next() else {
            if lex.next().is_none() {
                return out;
            }
            continue;
        };
        let head = parse_head(first, || cursor, 0);
        let again = lex.next().unwrap();
        assert_eq!(again, first);
        let (pin, end) = Scanner::new(head.flavor, 0, standard_strings).run(again, &mut lex);
        let text = sql[start..end].trim_matches(|c: char| c.is_ascii() && is_space(c as u8));
        let info = StatementInfo {
            kind: head.kind,
            pin: if head.whole {
                head.pin
            } else {
                head.pin.or(pin)
            },
        };
        out.push(Statement { text, info });
    }
}

/// Inputs for comparing implementations: the classification table, every prefix and
/// suffix of the tricky inputs, and random soup.
fn corpus() -> Vec<String> {
    let mut all: Vec<String> = cases().iter().map(|(sql, _, _)| sql.to_string()).collect();
    for sql in TRICKY {
        for (i, _) in sql.char_indices() {
            all.push(sql[..i].to_owned());
            all.push(sql[i..].to_owned());
        }
    }
    const WORDS: &[&str] = &[
        "'",
        "\"",
        "$",
        "$$",
        "$a$",
        ";",
        "/*",
        "*/",
        "--",
        "\n",
        "\\",
        "E'",
        "U&",
        "(",
        ")",
        ",",
        ".",
        "=",
        " ",
        "SET",
        "LISTEN",
        "INTO",
        "TEMP",
        "DO",
        "BEGIN",
        "ATOMIC",
        "END",
        "CASE",
        "CREATE",
        "FUNCTION",
        "EXECUTE",
        "pg_advisory_lock",
        "set_config",
        "pg_temp",
        "pg_catalog",
        "TO",
        "LOCAL",
        "CURSOR",
        "HOLD",
        "é",
        "1",
        "1.5e3",
        "true",
        "EXPLAIN",
        "COPY",
        "FROM",
        "STDIN",
        "INSERT",
        "x",
        "SELECT",
        "THEN",
        ">>",
        "<<",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        let mut sql = String::new();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        for i in 0..(seed % 24) {
            let r = seed.rotate_left(i as u32 * 7) as usize;
            sql.push_str(WORDS[r % WORDS.len()]);
            if r % 3 == 0 {
                sql.push(' ');
            }
        }
        all.push(sql);
    }
    all
}

/// `word_kind` as it was: a comparison with every keyword of the word's length.
fn reference_word_kind(t: &Token<'_>) -> Word {
    let is = |kw: &str| t.text.eq_ignore_ascii_case(kw);
    match t.text.len() {
        3 if is("end") => Word::End,
        4 if is("into") => Word::Into,
        4 if is("then") || is("else") || is("loop") => Word::StatementStart,
        4 if is("case") => Word::Case,
        5 if is("begin") => Word::Begin,
        5 if is("merge") => Word::InsertOrMerge,
        6 if is("insert") => Word::InsertOrMerge,
        6 if is("atomic") => Word::Atomic,
        7 if is("execute") => Word::Execute,
        10 if is("pg_catalog") => Word::PgCatalog,
        10 if is("set_config") => Word::SetConfig,
        16 | 20 | 23 | 27 if ADVISORY_LOCKS.iter().any(|f| is(f)) => Word::AdvisoryLock,
        _ => Word::Plain,
    }
}

#[test]
fn word_kinds_match_comparing_every_keyword() {
    let mut words: Vec<String> = [
        "end",
        "into",
        "then",
        "else",
        "loop",
        "case",
        "begin",
        "merge",
        "insert",
        "atomic",
        "execute",
        "pg_catalog",
        "set_config",
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        "pg_advisory_xact_lock",
        "ent",
        "Into",
        "thEn",
        "ELSE",
        "lOOp",
        "cast",
        "begins",
        "merges",
        "inserT",
        "x",
        "pg_catalog_",
        "set_confiG",
        "PG_ADVISORY_LOCK",
        "pg_advisory_locks",
        "é",
        "éend",
    ]
    .iter()
    .map(|w| w.to_string())
    .collect();
    for sql in corpus() {
        words.extend(
            Lexer::new(&sql)
                .filter(|t| t.kind == TokenKind::Word)
                .map(|t| t.text.to_owned()),
        );
    }
    for w in &words {
        for w in [w.clone(), w.to_ascii_uppercase(), w.to_ascii_lowercase()] {
            let t = Lexer::new(&w).next().unwrap_or(Token {
                kind: TokenKind::Word,
                text: &w,
                start: 0,
            });
            let t = Token {
                kind: TokenKind::Word,
                ..t
            };
            assert_eq!(word_kind(&t), reference_word_kind(&t), "{w:?}");
        }
    }
}

#[test]
fn inert_plain_words_change_nothing() {
    let recents = [
        Recent::Other,
        Recent::Dot { catalog: false },
        Recent::Dot { catalog: true },
        Recent::Word(Word::Plain),
        Recent::Word(Word::PgCatalog),
        Recent::Word(Word::Into),
        Recent::Word(Word::InsertOrMerge),
        Recent::Word(Word::Execute),
        Recent::Word(Word::StatementStart),
        Recent::Word(Word::Begin),
        Recent::Word(Word::Atomic),
        Recent::Word(Word::Case),
        Recent::Word(Word::End),
        Recent::Word(Word::AdvisoryLock),
        Recent::Word(Word::SetConfig),
    ];
    let mut checked = 0;
    for sql in corpus().iter().step_by(7) {
        let mut lex = Lexer::new(sql);
        while let Some(t) = lex.next() {
            if t.kind != TokenKind::Word || word_kind(&t) != Word::Plain {
                continue;
            }
            for flavor in [Flavor::Plain, Flavor::Create, Flavor::Routine, Flavor::Do] {
                for depth in [0, 1] {
                    for recent in recents {
                        let mut s = Scanner::new(flavor, depth, true);
                        s.recent = recent;
                        s.parens = 1;
                        s.blocks = 1;
                        if !s.plain_words_inert() {
                            continue;
                        }
                        let kept = s.on_word(&t, Word::Plain, &lex);
                        assert_eq!(kept, Recent::Word(Word::Plain), "{sql:?} {t:?}");
                        assert_eq!((s.parens, s.blocks, s.pin), (1, 1, None), "{sql:?} {t:?}");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

#[test]
fn single_pass_agrees_with_two_passes() {
    for sql in corpus() {
        for standard_strings in [true, false] {
            assert_eq!(
                split_statements_with(&sql, standard_strings),
                two_pass_split(&sql, standard_strings),
                "{sql:?}"
            );
        }
    }
}

/// `cargo test --release -- --ignored --nocapture bench_classify`
#[test]
#[ignore]
fn bench_classify() {
    use std::hint::black_box;
    use std::time::Instant;
    let inputs = [
        ("select", "SELECT id, name, email FROM users WHERE account_id = $1 AND status = 'active' LIMIT 50"),
        ("set", "SET statement_timeout = '5s'"),
        ("begin", "BEGIN"),
        ("insert", "INSERT INTO events (kind, payload, created_at) VALUES ($1, $2, now()) RETURNING id"),
    ];
    for (label, sql) in inputs {
        let n = 2_000_000u32;
        for _ in 0..n / 10 {
            black_box(classify(black_box(sql)));
        }
        let t = Instant::now();
        for _ in 0..n {
            black_box(classify(black_box(sql)));
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
        println!("classify {label:7} ({:3} bytes): {ns:7.1} ns", sql.len());
    }
    let multi = "SET search_path = app; SELECT 1; SELECT pg_advisory_xact_lock(7); COMMIT";
    let n = 1_000_000u32;
    let t = Instant::now();
    for _ in 0..n {
        black_box(split_statements(black_box(multi)));
    }
    let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    println!(
        "split_statements ({} bytes, 4 statements): {ns:7.1} ns",
        multi.len()
    );
}
