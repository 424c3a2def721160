//! The cache key with literals normalised: statements that differ only in their values
//! share an entry, and no literal changes a classification (every pair below, in both
//! orders, classifies through the cache exactly as without it).

use std::sync::Arc;

use super::super::key::key;
use super::super::{Access, AccessReason, Classifier};
use super::{classify, corpus, test_policy};

fn normalised(sql: &str) -> Option<String> {
    key(sql, &mut String::new()).map(str::to_owned)
}

fn classifier() -> Classifier {
    let classifier = Classifier::new(1 << 20);
    classifier.set_functions(test_policy());
    classifier
}

#[test]
fn statements_differing_in_literals_share_one_entry() {
    let classifier = classifier();
    let first = classifier.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;");
    for aid in [1, 7, 99_999, 2_147_483_647] {
        let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
        assert!(Arc::ptr_eq(&first, &classifier.classify(&sql)), "{sql}");
    }
    classifier.classify("INSERT INTO t (a, b, c) VALUES (1, 'x', 2.5)");
    classifier.classify("INSERT INTO t (a, b, c) VALUES (42, 'it''s', 1e9)");
    classifier.classify("INSERT INTO t (a, b, c) VALUES (42, $$x$$, 1e9)");
    assert_eq!(classifier.cached_statements(), 3);
    assert_eq!((classifier.cache_hits(), classifier.cache_misses()), (5, 3));
    assert_eq!(first.tables, vec!["pgbench_accounts".to_owned()]);
}

#[test]
fn key_keeps_everything_but_literal_values() {
    let same = [
        ("SELECT a FROM t WHERE b = 1", "SELECT a FROM t WHERE b = 2"),
        ("SELECT 'x', 1.5", "SELECT 'it''s', 0.25e-3"),
        ("SELECT 'a'\n'b'", "SELECT 'ab'"),
        ("/* causeway:route=primary */ SELECT 1", "  SELECT 2"),
        ("SELECT 1 /* x */\tFROM t -- z", "SELECT 2  \tFROM t  "),
        ("SELECT 2147483647", "SELECT 1_000"),
        ("SELECT 2147483648", "SELECT 1.0"),
        ("SELECT B'0101', X'1F'", "SELECT B'1', X'FFFF'"),
        ("SELECT 1; SELECT 'a'", "SELECT 2; SELECT 'b'"),
    ];
    for (a, b) in same {
        assert_eq!(normalised(a), normalised(b), "{a:?} vs {b:?}");
        assert!(normalised(a).is_some(), "{a:?}");
    }
    let different = [
        ("SELECT a FROM t", "SELECT b FROM t"),
        ("SELECT a FROM t", "select a from t"),
        ("SELECT 1 FROM t", "SELECT 1  FROM t"),
        ("SELECT $1", "SELECT $2"),
        ("SELECT 1", "SELECT 1.0"),
        ("SELECT 2147483647", "SELECT 2147483648"),
        ("SELECT 'a'", "SELECT $$a$$"),
        ("SELECT 'a'", "SELECT E'a'"),
        ("SELECT B'1'", "SELECT X'1'"),
        ("SELECT 123abc", "SELECT 123 abc"),
        ("SELECT 'a' 'b'", "SELECT 'a'\n'b'"),
        ("SELECT \"a\"", "SELECT a"),
        ("SELECT 1 FROM t", "SELECT 1 FROM t FOR UPDATE"),
    ];
    // What the cache compares: the normalised form, or the exact text (flagged apart).
    let cache_key = |sql: &str| normalised(sql).map_or((false, sql.to_owned()), |k| (true, k));
    for (a, b) in different {
        assert_ne!(cache_key(a), cache_key(b), "{a:?} vs {b:?}");
    }
}

#[test]
fn texts_where_a_literal_could_matter_keep_their_exact_key() {
    for sql in [
        "EXPLAIN (ANALYZE 0) DELETE FROM t",
        "COPY t TO ''",
        "COPY (SELECT 1) TO STDOUT",
        "SELECT 1; COPY t TO '/tmp/x'",
        "SET search_path = 'a'",
        "SHOW work_mem",
        "BEGIN",
        "FETCH 5 FROM c",
        "CALL p(1)",
        "PREPARE p AS SELECT 1",
        "SELECT 'a\\'; DELETE FROM t; --'",
        "SELECT E'\\''",
        "SELECT 'a\0b'",
        "SELECT U&'d!0061t' UESCAPE '!'",
        "SELECT 1::float(0)",
        "SELECT 1::FLOAT(5)",
        "SELECT 0x1F",
        "SELECT 1._5",
        "SELECT 'abc",
        "SELECT $$abc",
        "SELECT 1 /* unterminated",
        "SELECT \"a\u{2}b\"",
        "SELECT 1 \u{1} 2",
    ] {
        assert_eq!(normalised(sql), None, "{sql:?}");
    }
    assert!(normalised("DECLARE c CURSOR FOR SELECT 1").is_some());
    assert!(normalised("(SELECT 1) UNION (SELECT 2)").is_some());
    assert!(normalised(";; SELECT 1;").is_some());
    // Nothing to replace (found by a byte scan, without lexing): the exact text is the key.
    assert!(normalised("").is_none());
    assert!(normalised("SELECT a1 FROM t_2 WHERE c = $12").is_none());
    assert!(normalised("SELECT .5").is_some());
    assert!(normalised("SELECT a -- note").is_some());
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
    assert_eq!(normalised(sql), None);
}

/// Pairs of statements that differ in literals only, some of which must classify
/// differently.
const PAIRS: &[(&str, &str)] = &[
    ("SELECT nextval('a')", "SELECT nextval('b')"),
    ("SELECT setval('s', 1)", "SELECT setval('s', 99)"),
    ("SELECT pg_advisory_lock(1)", "SELECT pg_advisory_lock(2)"),
    (
        "SELECT set_config('a', 'b', false)",
        "SELECT set_config('c', 'd', true)",
    ),
    ("SELECT touch(1)", "SELECT touch(2)"),
    ("SELECT app.do_write('x')", "SELECT app.do_write('y')"),
    ("SELECT 'nextval(1)'", "SELECT 'x'"),
    ("SELECT 'DELETE FROM t'", "SELECT 'x'"),
    ("SELECT $$ ; DELETE FROM t; $$", "SELECT $$x$$"),
    ("SELECT 'pg_class'::regclass", "SELECT 'accounts'::regclass"),
    (
        "SELECT * FROM t WHERE id = 1 FOR UPDATE",
        "SELECT * FROM t WHERE id = 2 FOR UPDATE",
    ),
    (
        "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d",
        "WITH d AS (DELETE FROM t WHERE id = 2 RETURNING *) SELECT * FROM d",
    ),
    ("SELECT 1 INTO x", "SELECT 2 INTO x"),
    (
        "SELECT 1; DELETE FROM t WHERE id = 2",
        "SELECT 1; DELETE FROM t WHERE id = 3",
    ),
    (
        "INSERT INTO t VALUES (1, 'a')",
        "INSERT INTO t VALUES (2, 'b')",
    ),
    (
        "UPDATE t SET a = 'x' WHERE id = 1",
        "UPDATE t SET a = 'y' WHERE id = 2",
    ),
    (
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 2",
    ),
    (
        "DECLARE c CURSOR FOR SELECT 1 FOR UPDATE",
        "DECLARE c CURSOR FOR SELECT 2 FOR UPDATE",
    ),
    (
        "SELECT * FROM t WHERE b = B'01'",
        "SELECT * FROM t WHERE b = B'1'",
    ),
    ("SELECT X'1F'", "SELECT X'FF'"),
    ("SELECT N'a'", "SELECT N'b'"),
    (
        "SELECT 1 FROM t LIMIT 2147483647",
        "SELECT 1 FROM t LIMIT 2147483648",
    ),
    ("SELECT 123abc", "SELECT 123 abc"),
    ("SELECT 1e", "SELECT 1e5"),
    ("SELECT 0x1F", "SELECT 0x1G"),
    ("SELECT 1._5", "SELECT 1.5"),
    ("SELECT 1::float(0)", "SELECT 1::float(5)"),
    ("SELECT 'a' 'b'", "SELECT 'a'\n'b'"),
    ("SELECT 'a' /* unterminated", "SELECT 'a' /* closed */"),
    ("SELECT 'abc", "SELECT 'abc'"),
    ("SELECT $a$x", "SELECT $a$x$a$"),
    (
        "SELECT 'a\\'; DELETE FROM t; --'",
        "SELECT 'a'; DELETE FROM t; --'",
    ),
    ("SELECT 'a\0b'", "SELECT 'ab'"),
    (
        "SELECT U&'d!0061t' UESCAPE '!'",
        "SELECT U&'d!0061t' UESCAPE '!!'",
    ),
    (
        "EXPLAIN (ANALYZE 0) DELETE FROM t",
        "EXPLAIN (ANALYZE 1) DELETE FROM t",
    ),
    (
        "EXPLAIN (ANALYZE 'off') INSERT INTO t VALUES (1)",
        "EXPLAIN (ANALYZE 'on') INSERT INTO t VALUES (1)",
    ),
    (
        "EXPLAIN ANALYZE SELECT 1",
        "EXPLAIN ANALYZE SELECT nextval('s')",
    ),
    ("COPY t TO ''", "COPY t TO '/tmp/x'"),
    ("COPY (SELECT 1) TO STDOUT", "COPY (SELECT 2) TO STDOUT"),
    ("SELECT 1; COPY t TO ''", "SELECT 1; COPY t TO '/tmp/x'"),
    ("SET search_path = 'a'", "SET search_path = 'b'"),
    (
        "SET TRANSACTION SNAPSHOT '0001'",
        "SET TRANSACTION SNAPSHOT '0002'",
    ),
    ("FETCH 5 FROM c", "FETCH 99999999999 FROM c"),
    ("PREPARE p AS SELECT nextval('x')", "PREPARE p AS SELECT 1"),
];

#[test]
fn no_literal_changes_a_classification_in_either_order() {
    for &(a, b) in PAIRS {
        for (first, second) in [(a, b), (b, a)] {
            let classifier = classifier();
            for sql in [first, second, first] {
                assert_eq!(
                    *classifier.classify(sql),
                    classify(sql),
                    "{first:?} then {second:?}"
                );
            }
        }
    }
    // Pairs whose classes differ exist, or the test proves little.
    let differ = PAIRS
        .iter()
        .filter(|(a, b)| classify(a).access != classify(b).access)
        .count();
    assert!(differ >= 8, "{differ}");
}

#[test]
fn corpus_is_the_same_through_the_cache_in_reverse() {
    let classifier = classifier();
    for case in corpus::cases().iter().rev() {
        assert_eq!(
            *classifier.classify(case.sql),
            classify(case.sql),
            "{}",
            case.sql
        );
    }
}

#[test]
fn every_prefix_falls_back_or_shares_safely() {
    let statements = [
        "SELECT a, 'it''s', $$x$$, B'01', 1.5e3 FROM t /* c */ WHERE b = 'q' -- z\n",
        "INSERT INTO t VALUES (E'x', U&'y', 0x1F, \"q\"\"r\", $1)",
        "SELECT 'a' /* x /* y */ */; DELETE FROM t WHERE id = 1",
    ];
    let classifier = classifier();
    for sql in statements {
        for end in (0..=sql.len()).filter(|&i| sql.is_char_boundary(i)) {
            let prefix = &sql[..end];
            assert_eq!(*classifier.classify(prefix), classify(prefix), "{prefix:?}");
        }
    }
}

#[test]
fn hits_and_misses_are_counted() {
    let classifier = Classifier::new(1 << 20);
    assert_eq!((classifier.cache_hits(), classifier.cache_misses()), (0, 0));
    classifier.classify("SELECT * FROM t WHERE id = 1");
    classifier.classify("SELECT * FROM t WHERE id = 2");
    classifier.classify("COPY t TO STDOUT");
    classifier.classify("COPY t TO STDOUT");
    assert_eq!((classifier.cache_hits(), classifier.cache_misses()), (2, 2));
    let uncached = Classifier::new(0);
    uncached.classify("SELECT 1");
    uncached.classify("SELECT 1");
    assert_eq!((uncached.cache_hits(), uncached.cache_misses()), (0, 2));
    assert_eq!(
        classifier
            .classify("SELECT * FROM t WHERE id = 3 FOR UPDATE")
            .reason,
        AccessReason::LockingRead
    );
    assert_eq!(
        classifier.classify("SELECT 4 FROM t").access,
        Access::ReadOnly
    );
}

/// The session-state scan a forwarded Query skips when its text is session-plain must not
/// matter for any text sharing the entry: literals never change it, and every statement
/// that changes or pins session state (or could, through a literal) is not plain.
#[test]
fn session_plainness_is_the_same_for_every_text_of_an_entry() {
    let classifier = classifier();
    let plain = [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 7;",
        "UPDATE t SET v = v + 1 WHERE id = 'x'",
        "SELECT 'BEGIN', 'LISTEN x'",
        "SELECT 1; SELECT 2",
        "",
    ];
    for sql in plain {
        assert!(classifier.classify(sql).session_plain, "{sql:?}");
        assert!(classify(sql).session_plain, "{sql:?} uncached");
    }
    let not_plain = [
        "BEGIN",
        "COMMIT",
        "SELECT 1; BEGIN",
        "SET search_path = 'a'",
        "SELECT pg_advisory_lock(1)",
        "SELECT set_config('a', 'b', false)",
        "SELECT set_config('a', 'b', true)",
        "SELECT pg_catalog.SET_CONFIG('a', 'b', 'on')",
        "LISTEN x",
        "CREATE TEMP TABLE t (a int)",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "COPY t FROM STDIN",
        "PREPARE p AS SELECT 1",
        "DISCARD ALL",
        "DO $$ BEGIN PERFORM set_config('a', 'b', false); END $$",
    ];
    for sql in not_plain {
        assert!(!classifier.classify(sql).session_plain, "{sql:?}");
    }
    // `set_config`'s third argument is the one literal the scan reads: the first text
    // decides the entry, so neither may be plain.
    for (first, second) in [
        (
            "SELECT set_config('a', 'b', 'true')",
            "SELECT set_config('a', 'b', 'false')",
        ),
        (
            "SELECT set_config('a', 'b', 'false')",
            "SELECT set_config('a', 'b', 'true')",
        ),
    ] {
        let classifier = self::classifier();
        assert!(!classifier.classify(first).session_plain);
        assert!(!classifier.classify(second).session_plain);
    }
}
