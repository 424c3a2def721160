//! `[[rules]]` from the config, compiled once and matched per statement into a [`Policy`]
//! (DESIGN.md §4). Pure: no I/O, and no allocation per statement.
//!
//! A rule matches on a hint tag, on the tables a statement touches, or on the client's
//! `application_name`, and sets `consistency`, `route` and/or `max_lag`.

mod table;

#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::config::{ConsistencyLevel, RouteTarget, RuleConfig};
use crate::hints::Hints;

pub use table::TablePattern;

/// What rules (and hints) ask of one statement; `None` means "not set here, use the next
/// source": hint, then rules, then `SET causeway.*`/config defaults as the caller decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Read guarantee.
    pub consistency: Option<ConsistencyLevel>,
    /// Forced destination.
    pub route: Option<RouteTarget>,
    /// Lag limit for `bounded` reads.
    pub max_lag: Option<Duration>,
}

impl Policy {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// Combines two requirements field by field, keeping the stronger of each: the stronger
    /// consistency ([`strongest`]), `primary` over `replica`, the smaller `max_lag`.
    pub fn strongest(self, other: Policy) -> Policy {
        Policy {
            consistency: pick(self.consistency, other.consistency, strongest),
            route: pick(self.route, other.route, |a, b| {
                if a == RouteTarget::Primary || b == RouteTarget::Primary {
                    RouteTarget::Primary
                } else {
                    RouteTarget::Replica
                }
            }),
            max_lag: pick(self.max_lag, other.max_lag, Duration::min),
        }
    }

    /// This policy overridden by a statement's hints: each field the hints set replaces
    /// the rule's, whether stronger or weaker (a hint is the most specific instruction).
    pub fn with_hints(self, hints: &Hints) -> Policy {
        Policy {
            consistency: hints.consistency.or(self.consistency),
            route: hints.route.or(self.route),
            max_lag: hints.max_lag.or(self.max_lag),
        }
    }
}

/// Both set: `both(a, b)`; otherwise whichever is set.
fn pick<T>(a: Option<T>, b: Option<T>, both: impl FnOnce(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(both(a, b)),
        (a, b) => a.or(b),
    }
}

/// How much a level promises: `strong` > `bounded` > `session` > `eventual`.
fn rank(level: ConsistencyLevel) -> u8 {
    match level {
        ConsistencyLevel::Eventual => 0,
        ConsistencyLevel::Session => 1,
        ConsistencyLevel::Bounded => 2,
        ConsistencyLevel::Strong => 3,
    }
}

/// The stronger of two levels: `strong` > `bounded` > `session` > `eventual` (`bounded` is
/// `session` plus a lag limit).
pub fn strongest(a: ConsistencyLevel, b: ConsistencyLevel) -> ConsistencyLevel {
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// One compiled rule: it matches when every matcher it has matches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    tag: Option<String>,
    tables: Vec<TablePattern>,
    application_name: Option<String>,
    policy: Policy,
}

impl Rule {
    fn new(config: &RuleConfig) -> Rule {
        Rule {
            tag: config.tag.clone(),
            tables: config
                .tables
                .iter()
                .map(|t| TablePattern::lenient(t))
                .collect(),
            application_name: config.application_name.clone(),
            policy: Policy {
                consistency: config.consistency,
                route: config.route,
                max_lag: config.max_lag,
            },
        }
    }

    fn has_matcher(&self) -> bool {
        self.tag.is_some() || !self.tables.is_empty() || self.application_name.is_some()
    }

    fn matches(
        &self,
        tag: Option<&str>,
        tables: &[String],
        application_name: Option<&str>,
    ) -> bool {
        let tag_ok = self.tag.as_deref().is_none_or(|want| tag == Some(want));
        let app_ok = self
            .application_name
            .as_deref()
            .is_none_or(|want| application_name == Some(want));
        let tables_ok = self.tables.is_empty()
            || self
                .tables
                .iter()
                .any(|pattern| tables.iter().any(|table| pattern.matches(table)));
        tag_ok && app_ok && tables_ok
    }
}

/// The `[[rules]]` of a config, ready to match statements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Whether some rule matches on table names: if none does, a request's tables need not
    /// be collected to route it.
    pub fn match_tables(&self) -> bool {
        self.rules.iter().any(|rule| !rule.tables.is_empty())
    }

    /// Compiles the rules. Never fails: a table name that is not a valid SQL name is
    /// matched as written, ignoring case; a rule without a matcher never matches (config
    /// validation rejects both, and rules with several matchers).
    pub fn new(configs: &[RuleConfig]) -> Rules {
        Rules {
            rules: configs
                .iter()
                .map(Rule::new)
                .filter(Rule::has_matcher)
                .collect(),
        }
    }

    /// Whether there are no rules (every [`Rules::policy`] is empty).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of rules that can match.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The combined policy of every rule that matches a statement.
    ///
    /// - A rule matches on `tag` (the statement's `tag=` hint, compared exactly), on
    ///   `tables` (the statement touches at least one of them, see [`TablePattern`]) or on
    ///   `application_name` (the client's, compared exactly).
    /// - When several rules match, of any kind and in any order, each field takes the
    ///   strongest value among them ([`Policy::strongest`]): consistency
    ///   `strong` > `bounded` > `session` > `eventual`, route `primary` > `replica`, the
    ///   smallest `max_lag`. A rule can therefore only make a statement safer than another
    ///   matching rule does, never weaker, so the order of `[[rules]]` does not matter; an
    ///   `application_name = "reporting"` rule asking for `eventual` does not weaken a
    ///   `tables = ["accounts"]` rule asking for `strong`.
    /// - Overall precedence, per field: hint > rules > `SET causeway.*` > config default.
    ///   Apply hints with [`Policy::with_hints`]; fields left `None` fall through.
    ///
    /// `tables` lists the statement's tables as `name` or `schema.name` (a leading
    /// `catalog.` is ignored; `"quoted"` parts are unquoted).
    pub fn policy(
        &self,
        tag: Option<&str>,
        tables: &[String],
        application_name: Option<&str>,
    ) -> Policy {
        if self.rules.is_empty() {
            return Policy::default();
        }
        self.rules
            .iter()
            .filter(|rule| rule.matches(tag, tables, application_name))
            .fold(Policy::default(), |acc, rule| acc.strongest(rule.policy))
    }
}
