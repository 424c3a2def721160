//! Hint parsing: every form and key, malformed input, comments that are not comments, and
//! garbage that must not panic; plus an ignored micro-benchmark.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use super::*;
use crate::config::ConsistencyLevel::{Bounded, Eventual, Session, Strong};
use crate::config::RouteTarget::{Primary, Replica};

/// Builders for expected values.
trait Expect {
    fn route(self, route: RouteTarget) -> Self;
    fn level(self, level: ConsistencyLevel) -> Self;
    fn lag(self, ms: u64) -> Self;
    fn session(self, key: &str) -> Self;
    fn tag(self, tag: &str) -> Self;
    fn lsn(self, lsn: u64) -> Self;
    fn errors(self, n: u32) -> Self;
}

impl Expect for Hints {
    fn route(mut self, route: RouteTarget) -> Self {
        self.route = Some(route);
        self
    }
    fn level(mut self, level: ConsistencyLevel) -> Self {
        self.consistency = Some(level);
        self
    }
    fn lag(mut self, ms: u64) -> Self {
        self.max_lag = Some(Duration::from_millis(ms));
        self
    }
    fn session(mut self, key: &str) -> Self {
        self.session = Some(key.to_owned());
        self
    }
    fn tag(mut self, tag: &str) -> Self {
        self.tag = Some(tag.to_owned());
        self
    }
    fn lsn(mut self, lsn: u64) -> Self {
        self.after_lsn = Some(lsn);
        self
    }
    fn errors(mut self, n: u32) -> Self {
        self.errors = n;
        self
    }
}

fn none() -> Hints {
    Hints::default()
}

fn check(cases: &[(&str, Hints)]) {
    for (sql, expected) in cases {
        assert_eq!(&parse(sql), expected, "{sql:?}");
    }
}

#[test]
fn causeway_form_every_key() {
    check(&[
        ("", none()),
        ("SELECT 1", none()),
        (
            "/* causeway: route=primary */ SELECT 1",
            none().route(Primary),
        ),
        (
            "/* causeway: route=replica */ SELECT 1",
            none().route(Replica),
        ),
        (
            "/* causeway: consistency=strong */ SELECT 1",
            none().level(Strong),
        ),
        (
            "/* causeway: consistency=session */ SELECT 1",
            none().level(Session),
        ),
        (
            "/* causeway: consistency=eventual */ SELECT 1",
            none().level(Eventual),
        ),
        (
            "/* causeway: consistency=bounded, max_lag=250ms */ SELECT 1",
            none().level(Bounded).lag(250),
        ),
        (
            "/* causeway: consistency=bounded max_lag=1.5s */ SELECT 1",
            none().level(Bounded).lag(1500),
        ),
        (
            "/* causeway: session=user-42 */ SELECT 1",
            none().session("user-42"),
        ),
        (
            "/* causeway: tag=checkout */ SELECT 1",
            none().tag("checkout"),
        ),
        (
            "/* causeway: after_lsn=0/16B3748 */ SELECT 1",
            none().lsn(0x16B_3748),
        ),
        (
            "/* causeway: after_lsn=16/b374d848 */ SELECT 1",
            none().lsn(0x16_b374_d848),
        ),
        (
            "/* causeway: after_lsn=FFFFFFFF/FFFFFFFF */ SELECT 1",
            none().lsn(u64::MAX),
        ),
        (
            "/* causeway: route=replica, consistency=bounded, max_lag=2s, session=s1, \
             tag=t1, after_lsn=1/0 */ SELECT 1",
            none()
                .route(Replica)
                .level(Bounded)
                .lag(2000)
                .session("s1")
                .tag("t1")
                .lsn(1 << 32),
        ),
    ]);
}

#[test]
fn causeway_form_spelling() {
    check(&[
        ("/*causeway:route=primary*/SELECT 1", none().route(Primary)),
        (
            "/* CAUSEWAY : ROUTE = PRIMARY */ SELECT 1",
            none().route(Primary),
        ),
        (
            "/* Causeway:\n  Consistency = Eventual\n */ SELECT 1",
            none().level(Eventual),
        ),
        ("/* causeway: ,, route=primary ,, */", none().route(Primary)),
        (
            "/* causeway: route=primary; tag=x; */",
            none().route(Primary).tag("x"),
        ),
        (
            "SELECT 1 -- causeway: route=replica;",
            none().route(Replica),
        ),
        ("/* causeway: route='primary' */", none().route(Primary)),
        ("/* causeway: route=\"replica\" */", none().route(Replica)),
        (
            "/* causeway: session='user 42', tag=\"a,b\" */",
            none().session("user 42").tag("a,b"),
        ),
        ("/* causeway: session='it''s' */", none().session("it's")),
        (
            r#"/* causeway: tag="say \"hi\"" */"#,
            none().tag("say \"hi\""),
        ),
        ("/* causeway: max_lag='1m 30s' */", none().lag(90_000)),
        (
            "/* causeway: session=ユーザー */",
            none().session("ユーザー"),
        ),
        ("/* causeway: */ SELECT 1", none()),
        // Comment inside the hint comment: whitespace.
        (
            "/* causeway: route=primary /* why: fresh */ tag=x */ SELECT 1",
            none().route(Primary).tag("x"),
        ),
    ]);
}

#[test]
fn line_comments_and_positions() {
    check(&[
        (
            "-- causeway: route=primary\nSELECT 1",
            none().route(Primary),
        ),
        (
            "--causeway:route=replica\r\nSELECT 1",
            none().route(Replica),
        ),
        (
            "SELECT 1 -- causeway: consistency=strong",
            none().level(Strong),
        ),
        (
            "SELECT 1 /* causeway: route=primary */",
            none().route(Primary),
        ),
        (
            "SELECT 1 /* causeway: route=primary */;",
            none().route(Primary),
        ),
        (
            "SELECT a, /* causeway: tag=mid */ b FROM t",
            none().tag("mid"),
        ),
        ("SELECT 1 /* causeway: route=primary", none().route(Primary)),
        (
            "SELECT 1 -- causeway: tag=a\n-- causeway: session=b\n",
            none().tag("a").session("b"),
        ),
        ("SELECT 2-1", none()),
        ("SELECT a--b\n", none()),
        ("SELECT 4/2", none()),
    ]);
}

#[test]
fn sqlcommenter_form() {
    check(&[
        (
            "SELECT 1 /*causeway_route='primary',controller='cart'*/",
            none().route(Primary),
        ),
        (
            "SELECT 1 /*action='index',causeway_after_lsn='0%2F16B3748',\
             causeway_session='user%2042',framework='django%3A4.2'*/",
            none().lsn(0x16B_3748).session("user 42"),
        ),
        (
            "SELECT 1 /*causeway_consistency='bounded', causeway_max_lag='100ms'*/",
            none().level(Bounded).lag(100),
        ),
        (
            "SELECT 1 /*causeway_session='it\\'s'*/",
            none().session("it's"),
        ),
        ("SELECT 1 /*CAUSEWAY_TAG='x'*/", none().tag("x")),
        ("SELECT 1 /*controller='cart',action='show'*/", none()),
        ("SELECT 1 /*controller='causeway_route'*/", none()),
        ("SELECT 1 /*causeway_session='a%zz'*/", none().errors(1)),
        ("SELECT 1 /*causeway_session='%ff'*/", none().errors(1)),
        (
            "SELECT 1 /*causeway_foo='x',controller='c'*/",
            none().errors(1),
        ),
        ("SELECT 1 /*causeway_route='sideways'*/", none().errors(1)),
        ("SELECT 1 /*causeway_route='primary*/", none().errors(1)),
        ("SELECT 1 /*causeway_route*/", none().errors(1)),
        // Prose that mentions a key is not a hint.
        ("SELECT 1 /* TODO: causeway_route=primary */", none()),
        ("SELECT 1 -- set causeway_route='primary' later\n", none()),
    ]);
}

#[test]
fn pgpool_form() {
    check(&[
        ("/*NO LOAD BALANCE*/ SELECT 1", none().route(Primary)),
        ("/* no load balance */ SELECT 1", none().route(Primary)),
        ("/*\tNo Load Balance\n*/ SELECT 1", none().route(Primary)),
        ("-- NO LOAD BALANCE\nSELECT 1", none().route(Primary)),
        ("SELECT 1 /*NO LOAD BALANCE*/", none().route(Primary)),
        ("/*NO  LOAD BALANCE*/ SELECT 1", none()),
        ("/*NO LOAD BALANCE please*/ SELECT 1", none()),
        ("/*NOLOADBALANCE*/ SELECT 1", none()),
        (
            "/*NO LOAD BALANCE*/ SELECT 1 /* causeway: route=replica */",
            none().route(Replica),
        ),
    ]);
}

#[test]
fn unknown_keys_and_malformed_values_are_counted() {
    check(&[
        ("/* causeway: foo=bar */ SELECT 1", none().errors(1)),
        ("/* causeway: route=sideways */ SELECT 1", none().errors(1)),
        ("/* causeway: route */ SELECT 1", none().errors(1)),
        ("/* causeway: route= */ SELECT 1", none().errors(1)),
        ("/* causeway: route='' */ SELECT 1", none().errors(1)),
        ("/* causeway: =primary */ SELECT 1", none().errors(1)),
        (
            "/* causeway: session='unterminated */ SELECT 1",
            none().errors(1),
        ),
        (
            "/* causeway: consistency=bogus, max_lag=fast, after_lsn=xyz, session= */",
            none().errors(4),
        ),
        ("/* causeway: max_lag=10 */", none().errors(1)),
        ("/* causeway: max_lag=-5s */", none().errors(1)),
        ("/* causeway: after_lsn=0/123456789 */", none().errors(1)),
        ("/* causeway: after_lsn=0/ */", none().errors(1)),
        ("/* causeway: after_lsn=/1 */", none().errors(1)),
        ("/* causeway: after_lsn=0x1/0 */", none().errors(1)),
        ("/* causeway: session='a\tb' */", none().errors(1)),
        ("/* causeway: session=' padded' */", none().errors(1)),
        ("/* causeway: tag='' */", none().errors(1)),
        (
            "/* causeway: route=primary, colour=blue, tag=ok */",
            none().route(Primary).tag("ok").errors(1),
        ),
        ("/* causeway: route primary */", none().errors(2)),
    ]);
}

#[test]
fn session_key_length_is_bounded() {
    let ok = "k".repeat(MAX_SESSION_KEY_LEN);
    let long = "k".repeat(MAX_SESSION_KEY_LEN + 1);
    check(&[
        (
            &format!("/* causeway: session={ok} */"),
            none().session(&ok),
        ),
        (&format!("/* causeway: session={long} */"), none().errors(1)),
        (&format!("/* causeway: tag={long} */"), none().errors(1)),
    ]);
}

#[test]
fn duplicates_last_valid_value_wins() {
    check(&[
        (
            "/* causeway: route=primary, route=replica */",
            none().route(Replica),
        ),
        (
            "/* causeway: route=replica */ SELECT /* causeway: route=primary */ 1",
            none().route(Primary),
        ),
        (
            "-- causeway: tag=a\nSELECT 1 /*causeway_tag='b'*/",
            none().tag("b"),
        ),
        (
            "/* causeway: route=primary, route=nope */",
            none().route(Primary).errors(1),
        ),
        (
            "/*NO LOAD BALANCE*/ /* causeway: route=replica */",
            none().route(Replica),
        ),
        (
            "/* causeway: consistency=eventual */ /* causeway: consistency=strong */",
            none().level(Strong),
        ),
    ]);
}

#[test]
fn hints_in_literals_and_identifiers_do_not_count() {
    check(&[
        ("SELECT '/* causeway: route=primary */'", none()),
        ("SELECT '-- causeway: route=primary'", none()),
        ("SELECT 'it''s /* causeway: route=primary */'", none()),
        ("SELECT E'\\' /* causeway: route=primary */'", none()),
        ("SELECT $$/* causeway: route=primary */$$", none()),
        ("SELECT $x$ -- causeway: route=primary\n $x$", none()),
        ("SELECT 1 AS \"/* causeway: route=primary */\"", none()),
        ("SELECT U&'/* causeway: route=primary */'", none()),
        ("SELECT '/*NO LOAD BALANCE*/'", none()),
        ("SELECT '/*causeway_route=''primary''*/'", none()),
        // A comment nested in another comment is commented out.
        ("/* old: /* causeway: route=primary */ */ SELECT 1", none()),
        ("/* SELECT /*NO LOAD BALANCE*/ 1 */ SELECT 2", none()),
        // A real hint after a literal that looks like one still counts.
        (
            "SELECT '/* causeway: route=replica */' /* causeway: route=primary */",
            none().route(Primary),
        ),
        // Not hints: no `causeway:` prefix.
        ("/* just a comment */ SELECT 1", none()),
        ("/* causeway route=primary */ SELECT 1", none()),
        ("/* causewayx: route=primary */ SELECT 1", none()),
        ("/* see causeway: route=primary */ SELECT 1", none()),
    ]);
}

#[test]
fn standard_conforming_strings_decides_where_comments_are() {
    let sql = "SELECT '\\' /* causeway: route=primary */'";
    // On: `'\'` is a whole string, then a comment, then an unterminated string.
    assert_eq!(parse_with(sql, true), none().route(Primary));
    // Off: the backslash escapes the quote; the "comment" is inside the string.
    assert_eq!(parse_with(sql, false), none());
}

#[test]
fn very_long_comments() {
    let filler = "x ".repeat(50_000);
    let sql = format!("SELECT 1 /* {filler} */ /* causeway: route=primary */");
    assert_eq!(parse(&sql), none().route(Primary));
    let sql = format!("/* causeway: {} tag=end */", "tag=a, ".repeat(10_000));
    assert_eq!(parse(&sql), none().tag("end"));
    let sql = format!("/* causeway: {} */", "bad ".repeat(10_000));
    assert_eq!(parse(&sql).errors, 10_000);
    let long_value = "v".repeat(100_000);
    let sql = format!("/* causeway: session='{long_value}' */");
    assert_eq!(parse(&sql), none().errors(1));
    let sql = format!("SELECT '{}' -- causeway: tag=t", "/*".repeat(10_000));
    assert_eq!(parse(&sql), none().tag("t"));
}

#[test]
fn is_empty() {
    assert!(parse("SELECT 1").is_empty());
    assert!(!parse("/* causeway: foo=1 */").is_empty());
    assert!(!parse("/*NO LOAD BALANCE*/").is_empty());
}

const GARBAGE: &[&str] = &[
    "/* causeway: route=primary, consistency=bounded max_lag='1m 30s' session=\"a\"\"b\" \
     tag='it''s' after_lsn=0/16B3748 */ SELECT '/* x */' -- causeway: tag=y\n",
    "SELECT 1 /*causeway_route='primary',controller='c%2Fd',causeway_session='a\\'b'*/",
    "/*NO LOAD BALANCE*/ SELECT $$ -- $$, E'\\'', \"/*\" /* a /* b */ c */ --",
    "/* causeway: ユーザー='é' session=ユ /* 😀 */ tag=\"é\\\"\" */ --causeway:route=",
    "-- causeway: a=b=c,,==,'x',\"y\" 'z'=w, =, after_lsn=ffffffff/ffffffff\r\n/*",
];

#[test]
fn every_prefix_and_suffix_is_safe() {
    for src in GARBAGE {
        for (i, _) in src.char_indices() {
            let _ = parse(&src[..i]);
            let _ = parse(&src[i..]);
            let _ = parse_with(&src[..i], false);
        }
    }
}

#[test]
fn random_soup_is_safe() {
    const PIECES: &[&str] = &[
        "/*",
        "*/",
        "--",
        "\n",
        "'",
        "\"",
        "$$",
        "$a$",
        "\\",
        ",",
        "=",
        " ",
        "%",
        "%2F",
        "%z",
        "causeway:",
        "causeway_",
        "route",
        "primary",
        "session",
        "after_lsn",
        "0/1",
        "é",
        "NO LOAD BALANCE",
        "max_lag",
        "5s",
        "E'",
        "x",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 24) as usize;
        let s: String = (0..len)
            .map(|i| PIECES[(seed.rotate_left(i as u32 * 7) as usize) % PIECES.len()])
            .collect();
        let hints = parse(&s);
        if !s.contains("/*") && !s.contains("--") {
            assert!(hints.is_empty(), "{s:?}");
        }
    }
}

#[test]
fn fast_path_agrees_with_a_plain_search() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..50_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 40) as usize;
        let s: Vec<u8> = (0..len)
            .map(|i| b"-/*ab\x80"[(seed.rotate_left(i as u32 * 3) % 6) as usize])
            .collect();
        let plain = s.windows(2).any(|w| w == b"/*" || w == b"--");
        assert_eq!(may_contain_comment(&s), plain, "{s:?}");
    }
}

/// Average time per call of `f`, after a warm-up.
fn time_per_call<T>(mut f: impl FnMut() -> T) -> Duration {
    const N: u32 = 200_000;
    for _ in 0..N / 10 {
        std::hint::black_box(f());
    }
    let start = Instant::now();
    for _ in 0..N {
        std::hint::black_box(f());
    }
    start.elapsed() / N
}

/// `cargo test --release -p causeway hints::tests::bench -- --ignored --nocapture`
#[test]
#[ignore = "micro-benchmark; run in release mode"]
fn bench() {
    let plain = "SELECT id, name, email, created_at FROM users WHERE id = $1 AND tenant_id = $2 \
                 ORDER BY created_at;\n";
    let hinted = "/* causeway: consistency=bounded, max_lag=250ms */ SELECT id, name FROM users \
                  WHERE id = $1 ORDER BY created_at";
    let commenter = "SELECT id, name FROM users WHERE id = $1 \
                     /*causeway_route='primary',controller='cart',action='show'*/";
    let dashes = "SELECT a - b, c / d, 'x-y' FROM t WHERE e - f > 0 AND g / h < 1 LIMIT 10 -1";
    for (name, sql) in [
        ("hint-free", plain),
        ("hinted", hinted),
        ("sqlcommenter", commenter),
        ("no comment, - and /", dashes),
    ] {
        let black = std::hint::black_box(sql);
        let t = time_per_call(|| parse(black));
        let c = time_per_call(|| parse_command(black));
        println!(
            "{name:>20} ({:>3} bytes): parse {t:>6?}, parse_command {c:>6?}",
            sql.len()
        );
    }
    let set = std::hint::black_box("SET causeway.consistency = 'eventual'");
    let c = time_per_call(|| parse_command(set));
    println!(
        "{:>20} ({:>3} bytes): parse_command {c:>6?}",
        "SET causeway.*",
        set.len()
    );
    assert_eq!(plain.len(), 100);
}
