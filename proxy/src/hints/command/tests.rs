//! `SET`/`RESET`/`SHOW causeway.*` recognition, errors and SQLSTATEs.

#![allow(clippy::unwrap_used)]

use super::*;

use CausewaySetting::{Consistency, MaxLag, Route, Session, SessionLsn};

fn set(name: CausewaySetting, value: &str) -> Option<Result<CausewayCommand, CommandError>> {
    Some(Ok(CausewayCommand::Set {
        name,
        value: value.to_owned(),
    }))
}

fn reset(name: CausewaySetting) -> Option<Result<CausewayCommand, CommandError>> {
    Some(Ok(CausewayCommand::Reset { name }))
}

fn show(name: CausewaySetting) -> Option<Result<CausewayCommand, CommandError>> {
    Some(Ok(CausewayCommand::Show { name }))
}

#[test]
fn recognized_commands() {
    let cases = [
        (
            "SET causeway.consistency = 'eventual'",
            set(Consistency, "eventual"),
        ),
        (
            "SET causeway.consistency TO eventual",
            set(Consistency, "eventual"),
        ),
        (
            "set Causeway.Consistency to 'EVENTUAL';",
            set(Consistency, "eventual"),
        ),
        (
            "SET SESSION causeway.consistency = strong",
            set(Consistency, "strong"),
        ),
        (
            "SET \"causeway.consistency\" = 'bounded'",
            set(Consistency, "bounded"),
        ),
        (
            "SET \"causeway\".\"consistency\" = session",
            set(Consistency, "session"),
        ),
        (
            "SET causeway . consistency = strong",
            set(Consistency, "strong"),
        ),
        ("SET causeway.session = 'user-42'", set(Session, "user-42")),
        ("SET causeway.session TO \"User42\"", set(Session, "User42")),
        ("SET causeway.session TO User42", set(Session, "user42")),
        ("SET causeway.session = E'it\\'s'", set(Session, "it's")),
        ("SET causeway.session = $$a b$$", set(Session, "a b")),
        ("SET causeway.session = 42", set(Session, "42")),
        ("SET causeway.max_lag = '250ms'", set(MaxLag, "250ms")),
        ("SET causeway.max_lag TO ' 1s '", set(MaxLag, "1s")),
        ("SET causeway.route = primary", set(Route, "primary")),
        ("SET causeway.route = 'Replica'", set(Route, "replica")),
        ("SET causeway.consistency TO DEFAULT", reset(Consistency)),
        ("SET causeway.session = default;", reset(Session)),
        ("RESET causeway.consistency", reset(Consistency)),
        ("RESET causeway.session;  -- done", reset(Session)),
        ("reset CAUSEWAY.MAX_LAG", reset(MaxLag)),
        ("SHOW causeway.session_lsn", show(SessionLsn)),
        ("show causeway.consistency;", show(Consistency)),
        ("SHOW \"causeway.session\"", show(Session)),
        ("SHOW causeway.route", show(Route)),
        ("SHOW causeway.max_lag", show(MaxLag)),
        (
            "/* causeway: route=primary */ SET causeway.consistency = strong -- why\n",
            set(Consistency, "strong"),
        ),
        (
            ";; SET causeway.consistency = strong ;;",
            set(Consistency, "strong"),
        ),
        ("\n\tSHOW causeway.session_lsn ;\n", show(SessionLsn)),
    ];
    for (sql, expected) in cases {
        assert_eq!(parse_command(sql), expected, "{sql:?}");
    }
}

#[test]
fn not_ours() {
    let cases = [
        "",
        "SELECT 1",
        "RESET ALL",
        "SHOW ALL",
        "SET search_path = app, public",
        "SET application_name = 'causeway.x'",
        "SHOW server_version",
        "SET causeway = 1",
        "SELECT 'SET causeway.consistency = strong'",
        "SELECT $$SET causeway.consistency = strong$$",
        "/* SET causeway.consistency = strong */ SELECT 1",
        "-- SHOW causeway.session_lsn\nSELECT 1",
        "/* causeway: route=primary */ SELECT t.a FROM s.t",
        "SELECT 1 /*causeway_route='primary'*/",
        "SELECT causeway.consistency FROM causeway",
        "DO $$BEGIN SET causeway.consistency = strong; END$$",
        "SET TIME ZONE 'UTC'",
        "SET LOCAL search_path = x",
    ];
    for sql in cases {
        assert_eq!(parse_command(sql), None, "{sql:?}");
    }
}

/// The error's SQLSTATE, and a piece of its message.
fn error_of(sql: &str) -> (String, String) {
    match parse_command(sql) {
        Some(Err(error)) => (error.sqlstate().code().to_owned(), error.to_string()),
        other => panic!("{sql:?}: {other:?}"),
    }
}

#[test]
fn errors_carry_sqlstate_and_advice() {
    let cases = [
        (
            "SET LOCAL causeway.consistency = strong",
            "0A000",
            "SET LOCAL",
        ),
        ("SET LOCAL causeway.consistency = strong", "0A000", "hint"),
        (
            "SET causeway.consistency = strong; SELECT 1",
            "0A000",
            "own statement",
        ),
        (
            "SELECT 1; SHOW causeway.session_lsn",
            "0A000",
            "SHOW causeway.session_lsn",
        ),
        (
            "BEGIN; RESET causeway.session; COMMIT",
            "0A000",
            "separate query",
        ),
        ("SET causeway.foo = 1", "42704", "\"causeway.foo\""),
        ("SHOW causeway.foo", "42704", "causeway.consistency"),
        ("RESET causeway.consistency.extra", "42704", "unrecognized"),
        ("SET causeway.session_lsn = '0/1'", "55P02", "after_lsn"),
        ("RESET causeway.session_lsn", "55P02", "cannot be changed"),
        (
            "SET causeway.session_lsn TO DEFAULT",
            "55P02",
            "cannot be changed",
        ),
        (
            "SET causeway.consistency = 'sometimes'",
            "22023",
            "strong, session, bounded",
        ),
        (
            "SET causeway.consistency = 'sometimes'",
            "22023",
            "\"sometimes\"",
        ),
        (
            "SET causeway.route = 'standby'",
            "22023",
            "primary or replica",
        ),
        ("SET causeway.max_lag = 250", "22023", "needs a unit"),
        ("SET causeway.max_lag = -5", "22023", "causeway.max_lag"),
        ("SET causeway.session = ''", "22023", "session key"),
        ("SET causeway.session = E'\\0'", "22023", "string constant"),
        ("SET causeway.consistency = a, b", "42601", "only one value"),
        ("SET causeway.consistency", "42601", "= or TO"),
        ("SET causeway.consistency =", "42601", "value"),
        ("SET causeway.consistency strong", "42601", "= or TO"),
        (
            "SET causeway.consistency = strong please",
            "42601",
            "after the value",
        ),
        ("SET causeway.consistency = (strong)", "42601", "value"),
        (
            "SHOW causeway.consistency extra",
            "42601",
            "after the parameter",
        ),
        ("RESET causeway.session now", "42601", "after the parameter"),
        (
            "SET causeway.consistency TO DEFAULT now",
            "42601",
            "after the parameter",
        ),
    ];
    for (sql, state, text) in cases {
        let (got_state, message) = error_of(sql);
        assert_eq!(got_state, state, "{sql:?}: {message}");
        assert!(
            message.contains(text),
            "{sql:?}: {message:?} lacks {text:?}"
        );
    }
}

#[test]
fn session_key_bounds() {
    let ok = "k".repeat(crate::hints::MAX_SESSION_KEY_LEN);
    let sql = format!("SET causeway.session = '{ok}'");
    assert_eq!(parse_command(&sql), set(Session, &ok));
    let sql = format!("SET causeway.session = '{ok}x'");
    assert_eq!(error_of(&sql).0, "22023");
}

#[test]
fn settings_by_name() {
    for &setting in CausewaySetting::ALL {
        assert_eq!(CausewaySetting::from_name(setting.name()), Some(setting));
        let upper = setting.name().to_ascii_uppercase();
        assert_eq!(CausewaySetting::from_name(&upper), Some(setting));
        assert_eq!(setting.settable(), setting != SessionLsn);
    }
    assert_eq!(CausewaySetting::from_name("consistency"), None);
    assert_eq!(CausewaySetting::from_name("causeway.nope"), None);
    assert_eq!(Consistency.check_value(" Strong "), Ok("strong".to_owned()));
    assert!(SessionLsn.check_value("0/1").is_err());
}

#[test]
fn every_prefix_is_safe() {
    let inputs = [
        "SET SESSION \"causeway\".consistency TO E'eventual\\''; SHOW causeway.session_lsn;",
        "RESET causeway.max_lag /* x */ ; SET LOCAL causeway.session = $q$a;b$q$ -- c",
        "SET causeway.max_lag = -5, 'x', \"y\", U&'\\0041' UESCAPE '!', DEFAULT;;",
    ];
    for src in inputs {
        for (i, _) in src.char_indices() {
            let _ = parse_command(&src[..i]);
            let _ = parse_command(&src[i..]);
            let _ = parse_command_with(&src[..i], false);
        }
    }
}

#[test]
fn quick_test_admits_every_command_spelling() {
    for sql in [
        "SET causeway.session = 'a'",
        "SET \"causeway\".session = 'a'",
        "SET \"CAUSEWAY\" . session = 'a'",
        "SET causeway/* c */.session = 'a'",
    ] {
        assert!(mentions_parameter(sql.as_bytes()), "{sql:?}");
        assert!(parse_command(sql).is_some(), "{sql:?}");
    }
    for sql in [
        "/* causeway: tag=a.b */",
        "SELECT a.b",
        "/*causeway_x='.'*/",
    ] {
        assert!(!mentions_parameter(sql.as_bytes()), "{sql:?}");
    }
}

#[test]
fn a_key_change_inside_a_replica_transaction_is_0a000_and_says_what_to_do() {
    let error = CommandError::InReplicaTransaction {
        name: Session.name(),
    };
    assert_eq!(error.sqlstate().code(), "0A000");
    let message = error.to_string();
    assert!(message.contains("causeway.session"), "{message}");
    assert!(message.contains("before BEGIN"), "{message}");
}
