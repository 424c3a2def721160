//! Tests of the classifier: a routing corpus (DESIGN.md §2, user-asks.md B.4 item 20), the
//! function policy, the byte-bounded cache, and an ignored micro-benchmark.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use super::{
    classify_uncached, is_valid_function_name, Access, AccessReason, Classification, Classifier,
    FunctionPolicy, ParsedKind,
};

mod corpus;
mod normalise;

use ParsedKind as K;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The policy the corpus runs under.
fn test_policy() -> FunctionPolicy {
    FunctionPolicy::new(
        &strings(&["safe_volatile", "app.cached_lookup"]),
        &strings(&["app.do_write", "send_mail"]),
    )
    .with_volatile(strings(&[
        "public.touch",
        "public.safe_volatile",
        "app.cached_lookup",
        "app.touch_app",
        "public.\"NextVal\"",
    ]))
}

fn classify(sql: &str) -> Classification {
    classify_uncached(sql, &test_policy())
}

#[test]
fn corpus_matches_expectations() {
    let policy = test_policy();
    let cases = corpus::cases();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let got = classify_uncached(case.sql, &policy);
        if let Some(problem) = case.check(&got) {
            failures.push(format!(
                "{:?}: {problem}; got {:?} {:?} {:?}",
                case.sql, got.access, got.reason, got.kind
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_is_the_same_through_the_cache() {
    let classifier = Classifier::new(1 << 20);
    classifier.set_functions(test_policy());
    for case in corpus::cases() {
        let first = classifier.classify(case.sql);
        let second = classifier.classify(case.sql);
        assert_eq!(*first, classify(case.sql), "{}", case.sql);
        assert!(Arc::ptr_eq(&first, &second), "not cached: {}", case.sql);
    }
}

#[test]
fn tables_are_folded_and_qualified() {
    let c = classify("SELECT * FROM Accounts a JOIN app.\"Orders\" o ON o.id = a.id, s.t");
    assert_eq!(
        c.tables,
        strings(&["Orders", "accounts", "app.Orders", "s.t", "t"])
    );
    let c = classify("UPDATE inventory SET n = n - 1 WHERE id IN (SELECT id FROM public.items)");
    assert_eq!(c.tables, strings(&["inventory", "items", "public.items"]));
    let c = classify("WITH d AS (DELETE FROM q RETURNING *) SELECT * FROM d");
    assert_eq!(c.tables, strings(&["d", "q"]));
    assert_eq!(
        classify("COPY accounts TO STDOUT").tables,
        strings(&["accounts"])
    );
    assert_eq!(
        classify("LOCK TABLE accounts").tables,
        strings(&["accounts"])
    );
}

#[test]
fn functions_are_folded_and_qualified() {
    let c = classify(
        "SELECT NextVal('s'), \"NextVal\"('s'), pg_catalog.NOW(), app.\"F\"(1), count(*) FROM t",
    );
    assert_eq!(
        c.functions,
        strings(&["NextVal", "app.F", "count", "nextval", "pg_catalog.now"])
    );
    assert_eq!(c.reason, AccessReason::WriteFunction);
    // Functions under a plain EXPLAIN are named, though they do not run.
    let c = classify("EXPLAIN SELECT nextval('s')");
    assert_eq!(
        (c.access, c.functions),
        (Access::ReadOnly, strings(&["nextval"]))
    );
}

#[test]
fn statement_counts() {
    assert_eq!(classify("").statements, 0);
    assert_eq!(classify("SELECT 1").statements, 1);
    assert_eq!(classify("SELECT 1; SELECT 2;").statements, 2);
    assert_eq!(classify("BEGIN; UPDATE t SET a = 1; COMMIT").statements, 3);
}

#[test]
fn quoted_names_keep_their_case() {
    let none = FunctionPolicy::default();
    // "NextVal" is not the built-in nextval.
    assert_eq!(
        classify_uncached("SELECT \"NextVal\"('s')", &none).access,
        Access::ReadOnly
    );
    assert_eq!(
        classify_uncached("SELECT \"nextval\"('s')", &none).access,
        Access::Write
    );
    assert_eq!(
        classify_uncached("SELECT NEXTVAL('s')", &none).access,
        Access::Write
    );
    // ... but a volatile user function of that name is a write.
    let c = classify("SELECT \"NextVal\"('s')");
    assert_eq!(
        (c.access, c.reason),
        (Access::Write, AccessReason::VolatileFunction)
    );
}

#[test]
fn function_names_parse_like_sql() {
    for good in [
        "f",
        "s.f",
        "\"S\".\"F\"",
        " s . f ",
        "c.s.f",
        "s.f(int, text)",
        "\"a.b\"",
        "\"with \"\"quote\"\"\"",
    ] {
        assert!(is_valid_function_name(good), "{good}");
    }
    for bad in [
        "",
        ".",
        "s.",
        ".f",
        "a b",
        "\"unterminated",
        "a.b.c.d",
        "\"\"",
    ] {
        assert!(!is_valid_function_name(bad), "{bad}");
    }
    // Unquoted config names fold to lower case; quoted ones do not.
    let policy = FunctionPolicy::new(&[], &strings(&["App.Do_Write", "\"Keep\""]));
    assert_eq!(
        classify_uncached("SELECT app.do_write()", &policy).reason,
        AccessReason::WriteFunction
    );
    assert_eq!(
        classify_uncached("SELECT \"Keep\"()", &policy).reason,
        AccessReason::WriteFunction
    );
    assert_eq!(
        classify_uncached("SELECT keep()", &policy).access,
        Access::ReadOnly
    );
}

#[test]
fn volatile_resolution_is_fail_closed() {
    // Unqualified calls may reach any schema: read-only only if every volatile candidate
    // is listed read-only.
    let policy =
        FunctionPolicy::new(&strings(&["a.f"]), &[]).with_volatile(strings(&["a.f", "b.f"]));
    assert_eq!(
        classify_uncached("SELECT f()", &policy).reason,
        AccessReason::VolatileFunction
    );
    assert_eq!(
        classify_uncached("SELECT a.f()", &policy).access,
        Access::ReadOnly
    );
    assert_eq!(
        classify_uncached("SELECT b.f()", &policy).reason,
        AccessReason::VolatileFunction
    );
    assert_eq!(
        classify_uncached("SELECT c.f()", &policy).access,
        Access::ReadOnly
    );
    let policy = FunctionPolicy::new(&strings(&["f"]), &[]).with_volatile(strings(&["a.f", "b.f"]));
    assert_eq!(
        classify_uncached("SELECT f(), b.f()", &policy).access,
        Access::ReadOnly
    );
}

#[test]
fn huge_in_list_classifies_correctly() {
    let list: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    let sql = format!("SELECT * FROM t WHERE id IN ({})", list.join(", "));
    let c = classify(&sql);
    assert_eq!(
        (c.access, c.kind, c.tables),
        (Access::ReadOnly, K::Select, strings(&["t"]))
    );
    let sql = format!(
        "SELECT * FROM t WHERE id IN ({}, nextval('s'))",
        list.join(", ")
    );
    assert_eq!(classify(&sql).reason, AccessReason::WriteFunction);
    let sql = format!("DELETE FROM t WHERE id IN ({})", list.join(", "));
    assert_eq!(classify(&sql).reason, AccessReason::Write);
}

#[test]
fn megabyte_statement_is_classified_not_cached() {
    let list: Vec<String> = (0..150_000).map(|i| (1_000_000 + i).to_string()).collect();
    let sql = format!("SELECT * FROM t WHERE id IN ({})", list.join(","));
    assert!(sql.len() > 1_000_000);
    let classifier = Classifier::new(4 << 20);
    let c = classifier.classify(&sql);
    assert_eq!(c.access, Access::ReadOnly);
    assert_eq!(classifier.cached_statements(), 0);
    assert!(classifier.cached_bytes() <= classifier.cache_budget());
    let sql = format!(
        "SELECT * FROM t WHERE id IN ({}) FOR UPDATE",
        list.join(",")
    );
    assert_eq!(classifier.classify(&sql).reason, AccessReason::LockingRead);
}

fn chain(terms: usize, op: &str) -> String {
    let mut sql = String::from("a");
    for i in 0..terms {
        sql.push_str(&format!(" {op} c{i}"));
    }
    sql
}

#[test]
fn deep_trees_fall_back_to_a_shallow_look() {
    // 60 chained operators: too deep for the protobuf decoder, fine for PostgreSQL.
    let expr = chain(60, "||");
    let c = classify(&format!("SELECT {expr} FROM t"));
    assert_eq!(
        (c.access, c.reason, c.kind),
        (Access::ReadOnly, AccessReason::ReadOnly, K::Select),
        "{c:?}"
    );
    assert_eq!(c.tables, strings(&["t"]));
    let cases = [
        (
            format!("SELECT {expr} FROM t FOR UPDATE"),
            AccessReason::LockingRead,
        ),
        (
            format!("SELECT {expr} FROM t FOR NO KEY UPDATE SKIP LOCKED"),
            AccessReason::LockingRead,
        ),
        (
            format!("SELECT {expr} INTO x FROM t"),
            AccessReason::SelectInto,
        ),
        (
            format!("SELECT {expr}, nextval('s') FROM t"),
            AccessReason::WriteFunction,
        ),
        (
            format!("SELECT {expr}, touch(1) FROM t"),
            AccessReason::VolatileFunction,
        ),
        (
            format!("WITH d AS (DELETE FROM t RETURNING *) SELECT {expr} FROM d"),
            AccessReason::TooComplex,
        ),
        (format!("UPDATE t SET a = {expr}"), AccessReason::TooComplex),
        (
            format!("SELECT 1; DELETE FROM t WHERE a = {expr}"),
            AccessReason::TooComplex,
        ),
        (
            format!("EXPLAIN ANALYZE SELECT {expr}"),
            AccessReason::TooComplex,
        ),
    ];
    for (sql, reason) in cases {
        let c = classify(&sql);
        assert_eq!((c.access, c.reason), (Access::Write, reason), "{sql}");
    }
    // 30 nested subqueries.
    let sql = format!(
        "SELECT * FROM {} t {}",
        "(SELECT * FROM ".repeat(30),
        ") x".repeat(30)
    );
    assert_eq!(classify(&sql).access, Access::ReadOnly);
}

#[test]
fn pathological_nesting_is_unparseable_not_a_crash() {
    let sql = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(classify(&sql).reason, AccessReason::Unparseable);
    let sql = format!("SELECT {}", chain(5_000, "+"));
    let c = classify(&sql);
    assert_eq!(
        (c.access, c.reason),
        (Access::Write, AccessReason::Unparseable)
    );
    let sql = format!("SELECT {}", "ARRAY[".repeat(3_000) + &"]".repeat(3_000));
    assert_eq!(classify(&sql).access, Access::Write);
}

#[test]
fn replacement_characters_and_nul() {
    let c = classify("SELECT '\u{FFFD}\u{FFFD}' AS x");
    assert_eq!(c.access, Access::ReadOnly);
    let c = classify("SELECT 1\0; DELETE FROM t");
    assert_eq!(
        (c.access, c.reason),
        (Access::Write, AccessReason::Unparseable)
    );
}

#[test]
fn cache_returns_identical_results() {
    let classifier = Classifier::new(1 << 20);
    let a = classifier.classify("SELECT * FROM t WHERE id = $1");
    let b = classifier.classify("SELECT * FROM t WHERE id = $1");
    assert!(Arc::ptr_eq(&a, &b));
    let clone = classifier.clone();
    assert!(Arc::ptr_eq(
        &a,
        &clone.classify("SELECT * FROM t WHERE id = $1")
    ));
    assert_eq!(classifier.cached_statements(), 1);
    // Debug output summarizes; it does not dump cached texts.
    assert!(!format!("{classifier:?}").contains("SELECT"));
    // Same words, different text: a separate entry.
    let c = classifier.classify("select * from t where id = $1");
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(*a, *c);
}

#[test]
fn cache_respects_its_byte_budget_under_churn() {
    let budget = 256 * 1024;
    let classifier = Classifier::new(budget);
    for i in 0..100_000 {
        // Distinct names: values alone would share one normalised entry.
        let sql = format!("SELECT c{} FROM t{} WHERE id{i} = 1", i % 97, i % 13);
        let c = classifier.classify(&sql);
        assert_eq!(c.access, Access::ReadOnly);
        if i % 10_000 == 0 {
            assert!(
                classifier.cached_bytes() <= budget,
                "{} > {budget}",
                classifier.cached_bytes()
            );
        }
    }
    assert!(classifier.cached_bytes() <= classifier.cache_budget());
    assert!(classifier.cache_budget() <= budget);
    // The cache is in use (and full enough to have evicted).
    assert!(
        classifier.cached_statements() > 100,
        "{}",
        classifier.cached_statements()
    );
    assert!(
        classifier.cached_bytes() > budget / 2,
        "{}",
        classifier.cached_bytes()
    );
    // A hot statement survives the churn.
    let hot = "SELECT hot FROM t";
    let first = classifier.classify(hot);
    for i in 0..20_000 {
        classifier.classify(&format!("SELECT c{i}"));
        if i % 100 == 0 {
            classifier.classify(hot);
        }
    }
    assert!(Arc::ptr_eq(&first, &classifier.classify(hot)));
}

#[test]
fn zero_budget_disables_caching() {
    let classifier = Classifier::new(0);
    assert_eq!(
        classifier.classify("DELETE FROM t").reason,
        AccessReason::Write
    );
    assert_eq!(
        (classifier.cached_statements(), classifier.cached_bytes()),
        (0, 0)
    );
}

/// A prepared statement's memo answers while the function policy stays the same, and a
/// new policy is seen at the next bind.
#[test]
fn a_statements_memo_follows_the_function_policy() {
    let classifier = Classifier::new(1 << 20);
    let memo = super::Memo::default();
    let sql = "SELECT touch(id) FROM t WHERE id = $1";
    let first = classifier.classify_memo(sql, &memo);
    assert_eq!(first.access, Access::ReadOnly);
    let lookups = classifier.cache_hits() + classifier.cache_misses();
    assert!(Arc::ptr_eq(&first, &classifier.classify_memo(sql, &memo)));
    assert_eq!(
        classifier.cache_hits() + classifier.cache_misses(),
        lookups,
        "no cache lookup while the policy is the same"
    );
    classifier.set_functions(FunctionPolicy::default().with_volatile(strings(&["public.touch"])));
    let after = classifier.classify_memo(sql, &memo);
    assert_eq!(
        (after.access, after.reason),
        (Access::Write, AccessReason::VolatileFunction)
    );
    assert_eq!(*after, *classifier.classify(sql));
}

#[test]
fn set_functions_changes_cached_results() {
    let classifier = Classifier::new(1 << 20);
    let sql = "SELECT touch(id) FROM t";
    let unrelated = "SELECT id FROM t";
    assert_eq!(classifier.classify(sql).access, Access::ReadOnly);
    let plain = classifier.classify(unrelated);

    classifier.set_functions(FunctionPolicy::default().with_volatile(strings(&["public.touch"])));
    let c = classifier.classify(sql);
    assert_eq!(
        (c.access, c.reason),
        (Access::Write, AccessReason::VolatileFunction)
    );
    assert!(Arc::ptr_eq(&plain, &classifier.classify(unrelated)));

    // Listed read-only in config: back to the replica.
    classifier.set_functions(
        FunctionPolicy::new(&strings(&["touch"]), &[]).with_volatile(strings(&["public.touch"])),
    );
    assert_eq!(classifier.classify(sql).access, Access::ReadOnly);

    // Listed as a write in config.
    classifier.set_functions(FunctionPolicy::new(&[], &strings(&["touch"])));
    assert_eq!(classifier.classify(sql).reason, AccessReason::WriteFunction);

    // The same names again: nothing is invalidated.
    let before = classifier.classify(sql);
    let generation = classifier.functions().generation();
    classifier.set_functions(FunctionPolicy::new(&[], &strings(&["touch"])));
    assert_eq!(classifier.functions().generation(), generation);
    assert!(Arc::ptr_eq(&before, &classifier.classify(sql)));

    // Built-in writers do not depend on the policy.
    classifier.set_functions(FunctionPolicy::new(&strings(&["nextval"]), &[]));
    assert_eq!(
        classifier.classify("SELECT nextval('s')").reason,
        AccessReason::WriteFunction
    );
}

#[test]
fn classifier_is_shared_across_threads() {
    let classifier = Classifier::new(1 << 20);
    classifier.set_functions(test_policy());
    let cases = corpus::cases();
    std::thread::scope(|scope| {
        for offset in 0..4 {
            let classifier = classifier.clone();
            let cases = &cases;
            scope.spawn(move || {
                for round in 0..3 {
                    for case in cases.iter().skip((offset + round) % 3) {
                        let got = classifier.classify(case.sql);
                        assert!(case.check(&got).is_none(), "{}", case.sql);
                    }
                }
            });
        }
        for _ in 0..20 {
            classifier.set_functions(test_policy());
        }
    });
}

#[test]
fn reason_labels_are_stable_and_unique() {
    let labels: Vec<&str> = AccessReason::ALL.iter().map(|r| r.as_str()).collect();
    let mut unique = labels.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), labels.len());
    assert!(labels
        .iter()
        .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    assert_eq!(AccessReason::LockingRead.to_string(), "locking_read");
}

#[test]
fn volatile_functions_sql_is_valid_sql() {
    let c = classify(super::VOLATILE_FUNCTIONS_SQL);
    assert_eq!((c.access, c.kind), (Access::ReadOnly, K::Select));
}

/// Prints cold and cached costs: `cargo test --release -p causeway classify::tests::bench
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench() {
    let statements: Vec<String> = corpus::cases().iter().map(|c| c.sql.to_string()).collect();
    let typical = [
        "SELECT id, name, email FROM users WHERE id = $1",
        "SELECT o.id, o.total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.id = $1 ORDER BY o.created_at DESC LIMIT 20",
        "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
        "INSERT INTO events (kind, payload, created_at) VALUES ($1, $2, now())",
    ];
    for sql in typical {
        let rounds = 2_000;
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(classify_uncached(sql, &FunctionPolicy::default()));
        }
        let cold = start.elapsed().as_nanos() / rounds;
        let classifier = Classifier::new(64 << 20);
        classifier.classify(sql);
        let rounds = 2_000_000;
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(classifier.classify(std::hint::black_box(sql)));
        }
        let cached = start.elapsed().as_nanos() / rounds;
        println!(
            "cold {cold:>7} ns  cached {cached:>4} ns  {} bytes: {sql}",
            sql.len()
        );
    }
    let classifier = Classifier::new(64 << 20);
    let start = Instant::now();
    for sql in &statements {
        classifier.classify(sql);
    }
    let cold = start.elapsed().as_nanos() / statements.len() as u128;
    let rounds = 2_000;
    let start = Instant::now();
    for _ in 0..rounds {
        for sql in &statements {
            std::hint::black_box(classifier.classify(sql));
        }
    }
    let cached = start.elapsed().as_nanos() / (rounds * statements.len() as u128);
    println!(
        "corpus of {}: cold {cold} ns, cached {cached} ns per statement",
        statements.len()
    );
    for n in [1_000, 10_000, 150_000] {
        let list: Vec<String> = (0..n).map(|i| (1_000_000 + i).to_string()).collect();
        let huge = format!("SELECT * FROM t WHERE id IN ({})", list.join(","));
        let start = Instant::now();
        classifier.classify(&huge);
        println!(
            "IN list of {n} ({} bytes): cold {:?}",
            huge.len(),
            start.elapsed()
        );
    }
}

#[test]
fn a_reloaded_policy_keeps_the_volatile_functions_read_from_the_catalog() {
    let current = test_policy();
    let reloaded = FunctionPolicy::new(&[], &strings(&["send_mail"])).keeping_volatile(&current);
    assert_eq!(reloaded.counts(), (0, 1, current.counts().2));
    assert_eq!(
        classify_uncached("SELECT touch()", &reloaded).reason,
        AccessReason::VolatileFunction
    );
    assert_ne!(reloaded.generation(), current.generation());
}
