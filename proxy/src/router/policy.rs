//! A request's consistency requirement (pure): hints in its SQL, the operator's
//! `[[rules]]`, the connection's `SET causeway.*` settings and the config's defaults,
//! combined in that order of precedence (DESIGN.md §4), and the metric labels of the
//! route that follows.

use std::time::Duration;

use crate::config::{
    ConsistencyConfig, ConsistencyLevel, RouteTarget, SessionKeyMode, SessionScope,
};
use crate::hints::Hints;
use crate::metrics::{FallbackReason, RouteReason};
use crate::rules::Policy;

use super::{Cause, Unknown};

/// What `SET causeway.*` (or the startup option `-c causeway.session=`) set on a connection.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `SET causeway.consistency`.
    pub level: Option<ConsistencyLevel>,
    /// `SET causeway.route`.
    pub route: Option<RouteTarget>,
    /// `SET causeway.max_lag`.
    pub max_lag: Option<Duration>,
    /// `SET causeway.session`.
    pub session_key: Option<String>,
}

/// What a request asks of the node that runs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Requirement {
    pub level: ConsistencyLevel,
    /// `route=` from a hint, rule or setting.
    pub route: Option<RouteTarget>,
    /// Largest lag a `bounded` read accepts.
    pub max_lag: Duration,
    /// A hint or rule decided: the route is labelled so in metrics.
    pub chosen_by: Option<RouteReason>,
}

/// Combine, first match wins: the request's hints, the rules' policy, the connection's
/// settings, the config; except that an operator's rule for `strong` consistency or
/// `route = "primary"` is a floor no hint or setting lowers (money, inventory and
/// permissions stay on the primary whatever the application says).
pub fn requirement(
    hints: &Hints,
    policy: &Policy,
    settings: &Settings,
    config: &ConsistencyConfig,
) -> Requirement {
    let ruled_strong = policy.consistency == Some(ConsistencyLevel::Strong);
    let ruled_primary = policy.route == Some(RouteTarget::Primary);
    let route = if ruled_primary {
        policy.route
    } else {
        hints.route.or(policy.route).or(settings.route)
    };
    let hint_decides =
        !ruled_strong && !ruled_primary && (hints.route.is_some() || hints.consistency.is_some());
    let chosen_by = if hint_decides {
        Some(RouteReason::Hint)
    } else if route.is_some() || policy.consistency.is_some() {
        Some(RouteReason::Rule)
    } else {
        None
    };
    let level = if ruled_strong {
        ConsistencyLevel::Strong
    } else {
        hints
            .consistency
            .or(policy.consistency)
            .or(settings.level)
            .unwrap_or(config.default)
    };
    Requirement {
        level,
        route,
        max_lag: hints
            .max_lag
            .or(policy.max_lag)
            .or(settings.max_lag)
            .unwrap_or(config.max_lag),
        chosen_by,
    }
}

/// Who is asking: the scope a session key lives in (DESIGN.md §3).
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub mode: SessionKeyMode,
    pub scope: SessionScope,
    pub database: &'a str,
    pub user: &'a str,
}

/// The key of the shared session a request belongs to, if it is shared (DESIGN.md §3):
/// a `session=` hint, then `SET causeway.session`, then `[session] key = "user"`. Keys are
/// scoped to the database and user unless `[session] scope = "global"`; the database and
/// user are escaped so that no two owners share a key.
pub fn shared_key(hinted: Option<&str>, settings: &Settings, owner: Owner<'_>) -> Option<String> {
    if let Some(key) = hinted.or(settings.session_key.as_deref()) {
        return Some(match owner.scope {
            SessionScope::Global => format!("g:{key}"),
            SessionScope::User => {
                format!("s:{}/{}/{key}", escape(owner.database), escape(owner.user))
            }
        });
    }
    match owner.mode {
        SessionKeyMode::User => Some(format!(
            "u:{}/{}",
            escape(owner.database),
            escape(owner.user)
        )),
        SessionKeyMode::Connection => None,
    }
}

/// `%` and `/` as `%25` and `%2F`, so `/` separates the parts of a key unambiguously.
fn escape(part: &str) -> std::borrow::Cow<'_, str> {
    if !part.contains(['%', '/']) {
        return std::borrow::Cow::Borrowed(part);
    }
    std::borrow::Cow::Owned(part.replace('%', "%25").replace('/', "%2F"))
}

/// Combine the hints of several statements of one request: the first value of each key
/// wins; errors add up.
pub fn merge_hints(into: &mut Hints, more: Hints) {
    into.route = into.route.or(more.route);
    into.consistency = into.consistency.or(more.consistency);
    into.max_lag = into.max_lag.or(more.max_lag);
    into.after_lsn = into.after_lsn.or(more.after_lsn);
    if into.session.is_none() {
        into.session = more.session;
    }
    if into.tag.is_none() {
        into.tag = more.tag;
    }
    into.errors = into.errors.saturating_add(more.errors);
}

/// `reason` of `causeway_queries_total` for a route with this cause.
pub fn route_label(cause: Cause, chosen_by: Option<RouteReason>) -> RouteReason {
    chosen_by.unwrap_or(match cause {
        Cause::Write => RouteReason::Write,
        Cause::Pinned => RouteReason::Pinned,
        Cause::Strong => RouteReason::ConsistencyStrong,
        Cause::HintPrimary => RouteReason::Hint,
        Cause::Eventual | Cause::Bounded => RouteReason::ReadOnly,
        Cause::FreshReplica => RouteReason::FreshReplica,
        Cause::NoReplica => RouteReason::NoReplica,
        Cause::FloorAhead | Cause::FloorUnknown | Cause::LagTooHigh => {
            RouteReason::ConsistencyFallback
        }
    })
}

/// What a fallback to the primary was about, beyond the router's cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FallbackContext {
    /// The request waited for a replica to catch up.
    pub waited: bool,
    /// Why the floor was unknown, when it was.
    pub unknown: Option<Unknown>,
    /// The floor is on a timeline no replica in the pool is on.
    pub other_timeline: bool,
}

/// `reason` of `causeway_consistency_fallbacks_total`, if this route is a fallback.
pub fn fallback_label(cause: Cause, context: FallbackContext) -> Option<FallbackReason> {
    match cause {
        Cause::NoReplica => Some(FallbackReason::NoEligibleReplica),
        Cause::FloorUnknown if context.other_timeline => Some(FallbackReason::TimelineChange),
        Cause::FloorUnknown => Some(match context.unknown {
            Some(Unknown::Monitor) => FallbackReason::MonitorStale,
            Some(Unknown::Position) => FallbackReason::PositionUnknown,
            Some(Unknown::Store) | None => FallbackReason::StoreError,
        }),
        _ if !cause.is_fallback() => None,
        _ if context.other_timeline => Some(FallbackReason::TimelineChange),
        _ if context.waited => Some(FallbackReason::WaitTimeout),
        _ => Some(FallbackReason::FloorAhead),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_beat_rules_beat_settings_beat_config() {
        let config = ConsistencyConfig::default();
        let settings = Settings {
            level: Some(ConsistencyLevel::Eventual),
            max_lag: Some(Duration::from_secs(3)),
            ..Settings::default()
        };
        let none = requirement(&Hints::default(), &Policy::default(), &settings, &config);
        assert_eq!(none.level, ConsistencyLevel::Eventual);
        assert_eq!(none.max_lag, Duration::from_secs(3));
        assert_eq!(none.chosen_by, None);
        let policy = Policy {
            consistency: Some(ConsistencyLevel::Strong),
            ..Policy::default()
        };
        let ruled = requirement(&Hints::default(), &policy, &settings, &config);
        assert_eq!(ruled.level, ConsistencyLevel::Strong);
        assert_eq!(ruled.chosen_by, Some(RouteReason::Rule));
        let hints = Hints {
            consistency: Some(ConsistencyLevel::Bounded),
            ..Hints::default()
        };
        let session_rule = Policy {
            consistency: Some(ConsistencyLevel::Session),
            ..Policy::default()
        };
        let hinted = requirement(&hints, &session_rule, &settings, &config);
        assert_eq!(hinted.level, ConsistencyLevel::Bounded);
        assert_eq!(hinted.chosen_by, Some(RouteReason::Hint));
        let plain = requirement(
            &Hints::default(),
            &Policy::default(),
            &Settings::default(),
            &config,
        );
        assert_eq!(plain.level, config.default);
        assert_eq!(plain.max_lag, config.max_lag);
    }

    fn owner(mode: SessionKeyMode, scope: SessionScope, user: &str) -> Owner<'_> {
        Owner {
            mode,
            scope,
            database: "shop",
            user,
        }
    }

    #[test]
    fn no_hint_lowers_an_operators_strong_or_primary_rule() {
        let config = ConsistencyConfig::default();
        let eventual = Hints {
            consistency: Some(ConsistencyLevel::Eventual),
            route: Some(RouteTarget::Replica),
            ..Hints::default()
        };
        let strong = Policy {
            consistency: Some(ConsistencyLevel::Strong),
            ..Policy::default()
        };
        let need = requirement(&eventual, &strong, &Settings::default(), &config);
        assert_eq!(need.level, ConsistencyLevel::Strong);
        assert_eq!(need.chosen_by, Some(RouteReason::Rule));
        let primary = Policy {
            route: Some(RouteTarget::Primary),
            ..Policy::default()
        };
        let need = requirement(&eventual, &primary, &Settings::default(), &config);
        assert_eq!(need.route, Some(RouteTarget::Primary));
        // A weaker rule is the application's to override.
        let relaxed = Policy {
            consistency: Some(ConsistencyLevel::Session),
            ..Policy::default()
        };
        let need = requirement(&eventual, &relaxed, &Settings::default(), &config);
        assert_eq!(need.level, ConsistencyLevel::Eventual);
        assert_eq!(need.route, Some(RouteTarget::Replica));
    }

    #[test]
    fn shared_keys_come_from_hint_then_set_then_user_mode() {
        let set = Settings {
            session_key: Some("k".into()),
            ..Settings::default()
        };
        let user = owner(SessionKeyMode::User, SessionScope::User, "app");
        let conn = owner(SessionKeyMode::Connection, SessionScope::User, "app");
        let key = |hint, settings: &Settings, o| shared_key(hint, settings, o);
        assert_eq!(key(Some("h"), &set, user).as_deref(), Some("s:shop/app/h"));
        assert_eq!(key(None, &set, conn).as_deref(), Some("s:shop/app/k"));
        let unset = Settings::default();
        assert_eq!(key(None, &unset, user).as_deref(), Some("u:shop/app"));
        assert_eq!(key(None, &unset, conn), None);
        let global = owner(SessionKeyMode::Connection, SessionScope::Global, "app");
        assert_eq!(key(Some("h"), &unset, global).as_deref(), Some("g:h"));
    }

    #[test]
    fn keys_of_different_owners_never_collide() {
        let unset = Settings::default();
        let hinted = |database, user| {
            let o = Owner {
                mode: SessionKeyMode::Connection,
                scope: SessionScope::User,
                database,
                user,
            };
            shared_key(Some("k/1"), &unset, o)
        };
        assert_ne!(hinted("a", "b"), hinted("b", "a"));
        assert_ne!(hinted("a/b", "c"), hinted("a", "b/c"));
        assert_ne!(hinted("a%2Fb", "c"), hinted("a/b", "c"));
        assert_eq!(hinted("a/b", "c").as_deref(), Some("s:a%2Fb/c/k/1"));
    }

    #[test]
    fn fallbacks_are_labelled_by_what_happened() {
        let plain = FallbackContext::default();
        let waited = FallbackContext {
            waited: true,
            ..plain
        };
        assert_eq!(fallback_label(Cause::FreshReplica, plain), None);
        assert_eq!(fallback_label(Cause::Write, waited), None);
        assert_eq!(
            fallback_label(Cause::NoReplica, plain),
            Some(FallbackReason::NoEligibleReplica)
        );
        assert_eq!(
            fallback_label(Cause::FloorAhead, waited),
            Some(FallbackReason::WaitTimeout)
        );
        assert_eq!(
            fallback_label(Cause::LagTooHigh, plain),
            Some(FallbackReason::FloorAhead)
        );
        let failover = FallbackContext {
            other_timeline: true,
            ..waited
        };
        assert_eq!(
            fallback_label(Cause::FloorAhead, failover),
            Some(FallbackReason::TimelineChange)
        );
        for (why, label) in [
            (Some(Unknown::Store), FallbackReason::StoreError),
            (Some(Unknown::Monitor), FallbackReason::MonitorStale),
            (Some(Unknown::Position), FallbackReason::PositionUnknown),
        ] {
            let context = FallbackContext {
                unknown: why,
                ..plain
            };
            assert_eq!(fallback_label(Cause::FloorUnknown, context), Some(label));
        }
        assert_eq!(
            route_label(Cause::FloorAhead, None),
            RouteReason::ConsistencyFallback
        );
        assert_eq!(
            route_label(Cause::Write, Some(RouteReason::Rule)),
            RouteReason::Rule
        );
    }

    #[test]
    fn merged_hints_keep_the_first_value() {
        let mut into = Hints {
            tag: Some("a".into()),
            errors: 1,
            ..Hints::default()
        };
        merge_hints(
            &mut into,
            Hints {
                tag: Some("b".into()),
                session: Some("s".into()),
                errors: 2,
                ..Hints::default()
            },
        );
        assert_eq!(into.tag.as_deref(), Some("a"));
        assert_eq!(into.session.as_deref(), Some("s"));
        assert_eq!(into.errors, 3);
    }
}
