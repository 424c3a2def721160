//! Micro-benchmark of the SQL statement splitter and classifier on typical short statements
//! (pgbench, ORMs) and one long one.
//!
//! `cargo run --release --example sql_speed -p causeway [-- FILTER [MILLIS]]`
//!
//! Prints nanoseconds per call (and, for comparison, for just lexing the statement with
//! [`Lexer`]), the best of several rounds (the least disturbed by other
//! load). FILTER keeps only the statements whose label contains it; MILLIS is the time per
//! round (default 100).

use std::hint::black_box;
use std::time::{Duration, Instant};

use causeway::sql::{classify, split_statements, split_statements_with, Lexer};

const ROUNDS: usize = 7;

/// A SELECT of many columns with an IN list of 100 integer literals (about 2 KB).
fn long_select() -> String {
    let columns: Vec<String> = (0..40)
        .map(|i| format!("t.column_number_{i} AS c{i}"))
        .collect();
    let values: Vec<String> = (0..100)
        .map(|i| (1_000_000 + i * 7919).to_string())
        .collect();
    format!(
        "SELECT {} FROM some_schema.some_table t WHERE t.id IN ({}) AND t.deleted_at IS NULL \
         ORDER BY t.id",
        columns.join(", "),
        values.join(", ")
    )
}

fn inputs() -> Vec<(&'static str, String)> {
    let fixed = [
        ("select_pgbench", "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;"),
        ("begin", "BEGIN;"),
        ("end", "END;"),
        ("commit", "COMMIT"),
        ("rollback", "ROLLBACK"),
        ("update_accounts", "UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 98765;"),
        ("update_tellers", "UPDATE pgbench_tellers SET tbalance = tbalance + 55 WHERE tid = 7;"),
        ("insert_history", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 98765, -1234, CURRENT_TIMESTAMP);"),
        ("orm_join", "SELECT u.id, u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.email = 'a@b.c' AND o.created_at > now() - interval '1 day' ORDER BY o.total DESC LIMIT 10"),
        ("set_search_path", "SET search_path TO app, public"),
        ("set_local", "SET LOCAL statement_timeout = '5s'"),
        ("multi_4", "SET search_path = app; SELECT 1; SELECT pg_advisory_xact_lock(7); COMMIT"),
    ];
    let mut all: Vec<(&'static str, String)> =
        fixed.iter().map(|&(l, s)| (l, s.to_owned())).collect();
    all.push(("long_in_list", long_select()));
    all
}

/// Best nanoseconds per call of `f` over [`ROUNDS`] rounds of about `round` each.
fn time(round: Duration, mut f: impl FnMut()) -> f64 {
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        if t.elapsed() >= round / 10 {
            break;
        }
        batch *= 2;
    }
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < round {
            for _ in 0..batch {
                f();
            }
            n += batch;
        }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn main() {
    let mut args = std::env::args().skip(1);
    let filter = args.next().unwrap_or_default();
    let millis = args.next().and_then(|m| m.parse().ok()).unwrap_or(100);
    let round = Duration::from_millis(millis);
    println!(
        "{:16} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "statement", "bytes", "split ns", "split off", "classify", "lex only"
    );
    for (label, sql) in inputs() {
        if !label.contains(filter.as_str()) {
            continue;
        }
        let split = time(round, || {
            black_box(split_statements(black_box(&sql)));
        });
        let split_off = time(round, || {
            black_box(split_statements_with(black_box(&sql), false));
        });
        let classified = time(round, || {
            black_box(classify(black_box(&sql)));
        });
        let lexed = time(round, || {
            black_box(Lexer::new(black_box(&sql)).count());
        });
        println!(
            "{label:16} {:>6} {split:>10.1} {split_off:>10.1} {classified:>10.1} {lexed:>10.1}",
            sql.len()
        );
    }
}
