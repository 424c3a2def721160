//! Whether waiting for a replica to reach a read's floor can succeed within `max_wait`
//! (pure): a replica replays what the primary wrote about its lag ago, so it reaches a floor
//! written at `t` around `t + lag`. Both figures are taken as lower bounds, so a wait is
//! skipped only when even the most hopeful estimate misses the deadline.

use std::time::Duration;

use crate::lsn::Position;

use super::ReplicaView;

/// Whether some replica in the pool may reach `floor` within `max_wait`.
///
/// `floor_age` is how long ago the primary was last seen short of the floor (an upper
/// bound of the floor's real age); `None` when unknown, which never skips a wait. A
/// replica's `lag_seconds` is measured at the monitor's granularity: `slack` (a poll
/// interval or so) is given on top, for replicas that are catching up.
pub fn can_catch_up(
    views: &[ReplicaView],
    floor: Position,
    floor_age: Option<Duration>,
    max_wait: Duration,
    slack: Duration,
) -> bool {
    let Some(age) = floor_age else {
        return true;
    };
    views
        .iter()
        .filter(|v| v.in_pool && v.timeline == floor.timeline)
        .any(|v| {
            if !v.lag_seconds.is_finite() {
                return true;
            }
            let lag = Duration::from_secs_f64(v.lag_seconds.max(0.0));
            lag.saturating_sub(age).saturating_sub(slack) <= max_wait
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    const FLOOR: Position = Position {
        timeline: 1,
        lsn: Lsn::new(100),
    };

    fn delayed(ms: u64) -> ReplicaView {
        ReplicaView {
            in_pool: true,
            timeline: 1,
            replay: Some(Lsn::new(50)),
            lag_seconds: ms as f64 / 1000.0,
            weight: 1,
            outstanding: 0,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_fresh_floor_behind_delayed_replicas_is_not_waited_for() {
        let views = [delayed(1000), delayed(300)];
        assert!(!can_catch_up(&views, FLOOR, Some(ms(0)), ms(20), ms(50)));
        assert!(!can_catch_up(&views, FLOOR, Some(ms(0)), ms(100), ms(50)));
        assert!(can_catch_up(&views, FLOOR, Some(ms(0)), ms(400), ms(50)));
        // The same floor 200 ms later: the 300 ms replica is about to reach it.
        assert!(can_catch_up(&views, FLOOR, Some(ms(200)), ms(100), ms(50)));
    }

    #[test]
    fn unknown_figures_never_skip_a_wait() {
        let views = [delayed(1000)];
        assert!(can_catch_up(&views, FLOOR, None, ms(20), ms(50)));
        let unknown = [ReplicaView {
            lag_seconds: f64::INFINITY,
            ..delayed(0)
        }];
        assert!(can_catch_up(&unknown, FLOOR, Some(ms(0)), ms(20), ms(50)));
        // A replica streaming normally (lag below the poll interval) is always waited for.
        assert!(can_catch_up(
            &[delayed(40)],
            FLOOR,
            Some(ms(0)),
            ms(20),
            ms(50)
        ));
    }

    #[test]
    fn replicas_out_of_the_pool_or_on_another_timeline_do_not_count() {
        let out = ReplicaView {
            in_pool: false,
            ..delayed(0)
        };
        let other = ReplicaView {
            timeline: 2,
            ..delayed(0)
        };
        assert!(!can_catch_up(
            &[out, other, delayed(1000)],
            FLOOR,
            Some(ms(0)),
            ms(20),
            ms(50)
        ));
    }
}
