//! Rule matching: tags, tables (qualification, case, quoting), application names, and how
//! several matching rules and hints combine.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::config::ConsistencyLevel::{Bounded, Eventual, Session, Strong};
use crate::config::RouteTarget::{Primary, Replica};

fn tag_rule(tag: &str) -> RuleConfig {
    RuleConfig {
        tag: Some(tag.to_owned()),
        ..RuleConfig::default()
    }
}

fn table_rule(tables: &[&str]) -> RuleConfig {
    RuleConfig {
        tables: tables.iter().map(|t| (*t).to_owned()).collect(),
        ..RuleConfig::default()
    }
}

fn app_rule(app: &str) -> RuleConfig {
    RuleConfig {
        application_name: Some(app.to_owned()),
        ..RuleConfig::default()
    }
}

fn level(mut rule: RuleConfig, level: ConsistencyLevel) -> RuleConfig {
    rule.consistency = Some(level);
    rule
}

fn route(mut rule: RuleConfig, route: RouteTarget) -> RuleConfig {
    rule.route = Some(route);
    rule
}

fn lag(mut rule: RuleConfig, ms: u64) -> RuleConfig {
    rule.max_lag = Some(Duration::from_millis(ms));
    rule
}

fn tables(names: &[&str]) -> Vec<String> {
    names.iter().map(|t| (*t).to_owned()).collect()
}

fn policy(c: Option<ConsistencyLevel>, r: Option<RouteTarget>, ms: Option<u64>) -> Policy {
    Policy {
        consistency: c,
        route: r,
        max_lag: ms.map(Duration::from_millis),
    }
}

/// The example from DESIGN.md §4, plus a route rule.
fn design_rules() -> Rules {
    Rules::new(&[
        level(tag_rule("checkout"), Strong),
        level(table_rule(&["accounts", "inventory"]), Strong),
        level(app_rule("reporting"), Eventual),
        route(tag_rule("admin"), Primary),
    ])
}

#[test]
fn no_rules_no_policy() {
    let rules = Rules::new(&[]);
    assert!(rules.is_empty());
    assert_eq!(rules.len(), 0);
    let p = rules.policy(Some("x"), &tables(&["accounts"]), Some("app"));
    assert!(p.is_empty());
}

/// Tag, tables and application name of a statement, and the policy it should get.
type Case<'a> = (Option<&'a str>, &'a [&'a str], Option<&'a str>, Policy);

#[test]
fn each_matcher_kind() {
    let rules = design_rules();
    assert_eq!(rules.len(), 4);
    let cases: [Case<'_>; 10] = [
        (
            Some("checkout"),
            &[],
            None,
            policy(Some(Strong), None, None),
        ),
        (Some("Checkout"), &[], None, Policy::default()),
        (Some("other"), &[], None, Policy::default()),
        (None, &["accounts"], None, policy(Some(Strong), None, None)),
        (
            None,
            &["users", "inventory"],
            None,
            policy(Some(Strong), None, None),
        ),
        (None, &["users"], None, Policy::default()),
        (
            None,
            &[],
            Some("reporting"),
            policy(Some(Eventual), None, None),
        ),
        (None, &[], Some("Reporting"), Policy::default()),
        (Some("admin"), &[], None, policy(None, Some(Primary), None)),
        (None, &[], None, Policy::default()),
    ];
    for (tag, names, app, expected) in cases {
        assert_eq!(
            rules.policy(tag, &tables(names), app),
            expected,
            "{tag:?} {names:?} {app:?}"
        );
    }
}

#[test]
fn unqualified_rule_names_match_any_schema() {
    let rules = Rules::new(&[level(table_rule(&["accounts"]), Strong)]);
    for name in [
        "accounts",
        "public.accounts",
        "billing.accounts",
        "ACCOUNTS",
        "Public.Accounts",
        "\"accounts\"",
        "\"public\".\"accounts\"",
        "mydb.public.accounts",
    ] {
        let p = rules.policy(None, &tables(&[name]), None);
        assert_eq!(p.consistency, Some(Strong), "{name}");
    }
    for name in [
        "account",
        "accounts_archive",
        "accounts.id",
        "public",
        "",
        "\"Accounts\"",
    ] {
        let p = rules.policy(None, &tables(&[name]), None);
        assert_eq!(p.consistency, None, "{name}");
    }
}

#[test]
fn qualified_rule_names_need_that_schema() {
    let rules = Rules::new(&[level(table_rule(&["public.inventory"]), Strong)]);
    for name in [
        "public.inventory",
        "PUBLIC.INVENTORY",
        "db.public.inventory",
        // Unqualified: may resolve to public via search_path, so the rule applies.
        "inventory",
    ] {
        let p = rules.policy(None, &tables(&[name]), None);
        assert_eq!(p.consistency, Some(Strong), "{name}");
    }
    for name in [
        "archive.inventory",
        "public.inventory_log",
        "\"public\".\"Inventory\"",
    ] {
        let p = rules.policy(None, &tables(&[name]), None);
        assert_eq!(p.consistency, None, "{name}");
    }
}

#[test]
fn quoted_rule_names_are_exact() {
    let rules = Rules::new(&[level(
        table_rule(&["\"Sales\".\"Orders\"", "\"a.b\""]),
        Strong,
    )]);
    for (name, hit) in [
        ("Sales.Orders", true),
        ("\"Sales\".\"Orders\"", true),
        ("sales.orders", false),
        ("Sales.orders", false),
        ("Orders", true),
        ("\"a.b\"", true),
        ("x.\"a.b\"", true),
        ("a.b", false),
    ] {
        let p = rules.policy(None, &tables(&[name]), None);
        assert_eq!(p.consistency.is_some(), hit, "{name}");
    }
}

#[test]
fn strongest_consistency_wins() {
    let rules = Rules::new(&[
        level(app_rule("reporting"), Eventual),
        level(table_rule(&["accounts"]), Strong),
        level(table_rule(&["likes"]), Session),
        lag(level(tag_rule("feed"), Bounded), 500),
    ]);
    let p = |tag, names: &[&str], app| rules.policy(tag, &tables(names), app).consistency;
    assert_eq!(p(None, &["accounts"], Some("reporting")), Some(Strong));
    assert_eq!(p(None, &["likes"], Some("reporting")), Some(Session));
    assert_eq!(
        p(Some("feed"), &["likes"], Some("reporting")),
        Some(Bounded)
    );
    assert_eq!(p(Some("feed"), &["likes", "accounts"], None), Some(Strong));
    assert_eq!(p(None, &[], Some("reporting")), Some(Eventual));
}

#[test]
fn rule_order_does_not_matter() {
    let configs = [
        level(app_rule("reporting"), Eventual),
        route(level(table_rule(&["accounts"]), Strong), Primary),
        route(tag_rule("fast"), Replica),
        lag(level(tag_rule("fast"), Bounded), 100),
        lag(level(app_rule("reporting"), Bounded), 900),
    ];
    let forward = Rules::new(&configs);
    let mut reversed = configs.to_vec();
    reversed.reverse();
    let backward = Rules::new(&reversed);
    for (tag, names, app) in [
        (Some("fast"), &["accounts"][..], Some("reporting")),
        (Some("fast"), &[][..], Some("reporting")),
        (None, &["accounts"][..], None),
    ] {
        let names = tables(names);
        assert_eq!(
            forward.policy(tag, &names, app),
            backward.policy(tag, &names, app),
            "{tag:?} {names:?} {app:?}"
        );
    }
    let p = forward.policy(Some("fast"), &tables(&["accounts"]), Some("reporting"));
    assert_eq!(p, policy(Some(Strong), Some(Primary), Some(100)));
    let p = forward.policy(Some("fast"), &[], Some("reporting"));
    assert_eq!(p, policy(Some(Bounded), Some(Replica), Some(100)));
}

#[test]
fn primary_beats_replica_and_smallest_lag_wins() {
    let a = policy(Some(Eventual), Some(Replica), Some(300));
    let b = policy(Some(Bounded), Some(Primary), Some(200));
    assert_eq!(
        a.strongest(b),
        policy(Some(Bounded), Some(Primary), Some(200))
    );
    assert_eq!(b.strongest(a), a.strongest(b));
    let partial = policy(None, Some(Replica), None);
    assert_eq!(partial.strongest(Policy::default()), partial);
    assert_eq!(Policy::default().strongest(partial), partial);
}

#[test]
fn strongest_level_order() {
    let order = [Eventual, Session, Bounded, Strong];
    for (i, &a) in order.iter().enumerate() {
        for (j, &b) in order.iter().enumerate() {
            let expected = order[i.max(j)];
            assert_eq!(strongest(a, b), expected, "{a} {b}");
        }
    }
}

#[test]
fn hints_override_rules_field_by_field() {
    let rules = design_rules();
    let p = rules.policy(None, &tables(&["accounts"]), None);
    let hints = crate::hints::parse("/* causeway: consistency=eventual, max_lag=1s */ SELECT 1");
    assert_eq!(
        p.with_hints(&hints),
        policy(Some(Eventual), None, Some(1000))
    );
    let hints = crate::hints::parse("/*NO LOAD BALANCE*/ SELECT 1");
    assert_eq!(
        p.with_hints(&hints),
        policy(Some(Strong), Some(Primary), None)
    );
    assert_eq!(p.with_hints(&Hints::default()), p);
}

#[test]
fn rules_with_several_matchers_need_all_of_them() {
    let both = RuleConfig {
        tag: Some("t".to_owned()),
        application_name: Some("app".to_owned()),
        consistency: Some(Strong),
        ..RuleConfig::default()
    };
    let none = RuleConfig {
        consistency: Some(Strong),
        ..RuleConfig::default()
    };
    let rules = Rules::new(&[both, none]);
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules.policy(Some("t"), &[], Some("app")).consistency,
        Some(Strong)
    );
    assert_eq!(rules.policy(Some("t"), &[], None).consistency, None);
    assert_eq!(rules.policy(None, &[], Some("app")).consistency, None);
    assert_eq!(rules.policy(None, &[], None).consistency, None);
}

#[test]
fn table_patterns() {
    for good in [
        "t",
        "s.t",
        "c.s.t",
        "\"T\"",
        "\"s\".t",
        "  t  ",
        "Ünïcode",
        "s . t",
    ] {
        assert!(TablePattern::parse(good).is_some(), "{good:?}");
    }
    for bad in [
        "", "a.b.c.d", "1abc", "a..b", "a b", "a.", ".a", "\"\"", "a;b", "'a'",
    ] {
        assert!(TablePattern::parse(bad).is_none(), "{bad:?}");
    }
    // Unparseable config names still match as written, ignoring case.
    let rules = Rules::new(&[level(table_rule(&["my-table"]), Strong)]);
    assert_eq!(
        rules.policy(None, &tables(&["MY-TABLE"]), None).consistency,
        Some(Strong)
    );
}
