//! The `[[rules]]` and `[functions]` sections: routing policy without code changes.

use std::time::Duration;

use serde::Deserialize;

use super::consistency::ConsistencyLevel;
use super::duration;
use super::keyword::keyword_enum;

keyword_enum! {
    /// Forced destination of a statement (rules and the `route=` hint).
    pub enum RouteTarget {
        /// Always the primary.
        Primary = "primary",
        /// A replica, still subject to the session's floor.
        Replica = "replica",
    }
    default = Primary;
}

/// One `[[rules]]` entry: exactly one matcher and at least one action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Matcher: statements carrying the hint `tag=<tag>`. Default: none.
    pub tag: Option<String>,
    /// Matcher: statements touching any of these tables. Default: empty.
    pub tables: Vec<String>,
    /// Matcher: clients whose `application_name` equals this. Default: none.
    pub application_name: Option<String>,
    /// Action: consistency level for matching reads. Default: none.
    pub consistency: Option<ConsistencyLevel>,
    /// Action: forced destination for matching statements. Default: none.
    pub route: Option<RouteTarget>,
    /// Lag limit for `consistency = "bounded"`; overrides `consistency.max_lag`.
    /// Default: none.
    #[serde(deserialize_with = "duration::deserialize_option")]
    pub max_lag: Option<Duration>,
}

/// What a rule matches on, borrowed from a [`RuleConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMatcher<'a> {
    /// The statement carries the hint `tag=<tag>`.
    Tag(&'a str),
    /// The statement touches one of these tables.
    Tables(&'a [String]),
    /// The client's `application_name` equals this.
    ApplicationName(&'a str),
}

impl RuleConfig {
    /// The rule's matcher, or `None` unless exactly one is set (validation rejects that).
    pub fn matcher(&self) -> Option<RuleMatcher<'_>> {
        let mut matchers = self.matchers();
        let first = matchers.next()?;
        matchers.next().is_none().then_some(first)
    }

    /// Every matcher that is set.
    pub(crate) fn matchers(&self) -> impl Iterator<Item = RuleMatcher<'_>> {
        let tag = self.tag.as_deref().map(RuleMatcher::Tag);
        let tables = (!self.tables.is_empty()).then_some(RuleMatcher::Tables(&self.tables));
        let app = self
            .application_name
            .as_deref()
            .map(RuleMatcher::ApplicationName);
        tag.into_iter().chain(tables).chain(app)
    }
}

/// `[functions]`: overrides for the read-only function classifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionsConfig {
    /// Functions that never write, even if `pg_proc` says volatile; statements calling
    /// them may still go to a replica. Default: empty.
    pub read_only: Vec<String>,
    /// Functions that write; statements calling them always go to the primary.
    /// Default: empty.
    pub writes: Vec<String>,
}
