//! Table tests of the routing decision.

use std::time::Duration;

use super::*;

fn pos(lsn: u64) -> Position {
    Position {
        timeline: 1,
        lsn: Lsn::new(lsn),
    }
}

fn replica(in_pool: bool, replay: u64, lag: f64) -> ReplicaView {
    ReplicaView {
        in_pool,
        timeline: 1,
        replay: Some(Lsn::new(replay)),
        lag_seconds: lag,
        weight: 1,
        outstanding: 0,
    }
}

fn read(level: ConsistencyLevel, floor: Floor) -> Request {
    Request {
        read_only: true,
        pinned: false,
        level,
        route: None,
        max_lag: Duration::from_secs(1),
        floor,
    }
}

use ConsistencyLevel::{Bounded, Eventual, Session, Strong};

#[test]
fn routing_table() {
    let fresh = replica(true, 100, 0.0);
    let behind = replica(true, 50, 0.0);
    let evicted = replica(false, 1000, 0.0);
    let laggy = replica(true, 100, 3.0);
    let other_timeline = ReplicaView {
        timeline: 2,
        ..fresh
    };
    let cases: Vec<(&str, Request, Vec<ReplicaView>, Route)> = vec![
        (
            "write",
            Request {
                read_only: false,
                ..read(Session, Floor::None)
            },
            vec![fresh],
            Route::Primary(Cause::Write),
        ),
        (
            "pinned",
            Request {
                pinned: true,
                ..read(Session, Floor::None)
            },
            vec![fresh],
            Route::Primary(Cause::Pinned),
        ),
        (
            "hint primary",
            Request {
                route: Some(RouteTarget::Primary),
                ..read(Eventual, Floor::None)
            },
            vec![fresh],
            Route::Primary(Cause::HintPrimary),
        ),
        (
            "strong",
            read(Strong, Floor::None),
            vec![fresh],
            Route::Primary(Cause::Strong),
        ),
        (
            "no replicas",
            read(Session, Floor::None),
            vec![],
            Route::Primary(Cause::NoReplica),
        ),
        (
            "all evicted",
            read(Eventual, Floor::None),
            vec![evicted],
            Route::Primary(Cause::NoReplica),
        ),
        (
            "eventual ignores floor",
            read(Eventual, Floor::At(pos(500))),
            vec![behind],
            Route::Replica(0, Cause::Eventual),
        ),
        (
            "eventual never evicted",
            read(Eventual, Floor::None),
            vec![evicted, behind],
            Route::Replica(1, Cause::Eventual),
        ),
        (
            "session no floor",
            read(Session, Floor::None),
            vec![behind],
            Route::Replica(0, Cause::FreshReplica),
        ),
        (
            "session floor met",
            read(Session, Floor::At(pos(100))),
            vec![fresh],
            Route::Replica(0, Cause::FreshReplica),
        ),
        (
            "session floor ahead",
            read(Session, Floor::At(pos(101))),
            vec![fresh],
            Route::Primary(Cause::FloorAhead),
        ),
        (
            "session picks the fresh one",
            read(Session, Floor::At(pos(80))),
            vec![behind, fresh],
            Route::Replica(1, Cause::FreshReplica),
        ),
        (
            "session skips evicted fresh",
            read(Session, Floor::At(pos(80))),
            vec![evicted, behind],
            Route::Primary(Cause::FloorAhead),
        ),
        (
            "unknown floor",
            read(Session, Floor::Unknown),
            vec![fresh],
            Route::Primary(Cause::FloorUnknown),
        ),
        (
            "timeline differs",
            read(Session, Floor::At(pos(10))),
            vec![other_timeline],
            Route::Primary(Cause::FloorAhead),
        ),
        (
            "hint replica respects floor",
            Request {
                route: Some(RouteTarget::Replica),
                ..read(Session, Floor::At(pos(500)))
            },
            vec![fresh],
            Route::Primary(Cause::FloorAhead),
        ),
        (
            "bounded ok",
            read(Bounded, Floor::At(pos(90))),
            vec![fresh],
            Route::Replica(0, Cause::Bounded),
        ),
        (
            "bounded lag",
            read(Bounded, Floor::At(pos(90))),
            vec![laggy],
            Route::Primary(Cause::LagTooHigh),
        ),
        (
            "bounded floor",
            read(Bounded, Floor::At(pos(200))),
            vec![fresh],
            Route::Primary(Cause::FloorAhead),
        ),
        (
            "bounded unknown",
            read(Bounded, Floor::Unknown),
            vec![fresh],
            Route::Primary(Cause::FloorUnknown),
        ),
        (
            "missing replay",
            read(Session, Floor::At(pos(1))),
            vec![ReplicaView {
                replay: None,
                ..fresh
            }],
            Route::Primary(Cause::FloorAhead),
        ),
    ];
    for (name, request, replicas, expected) in cases {
        assert_eq!(route(&request, &replicas, 0), expected, "{name}");
    }
}

#[test]
fn load_balancing_prefers_idle_and_weighted_replicas() {
    let idle = replica(true, 100, 0.0);
    let busy = ReplicaView {
        outstanding: 5,
        ..idle
    };
    let heavy = ReplicaView {
        weight: 10,
        outstanding: 5,
        ..idle
    };
    let r = read(Session, Floor::None);
    assert_eq!(
        route(&r, &[busy, idle], 0),
        Route::Replica(1, Cause::FreshReplica)
    );
    assert_eq!(
        route(&r, &[busy, heavy], 0),
        Route::Replica(1, Cause::FreshReplica)
    );
    let picks: std::collections::HashSet<_> = (0..4).map(|t| route(&r, &[idle, idle], t)).collect();
    assert_eq!(picks.len(), 2, "ties rotate");
}

#[test]
fn weight_is_a_share_of_serial_reads() {
    // Serial traffic: nothing outstanding anywhere, so every choice is a tie.
    let light = replica(true, 100, 0.0);
    let heavy = ReplicaView { weight: 3, ..light };
    let r = read(Session, Floor::None);
    let mut counts = [0usize; 2];
    for t in 0..400 {
        match route(&r, &[light, heavy], t) {
            Route::Replica(i, _) => counts[i] += 1,
            other => panic!("expected a replica, got {other:?}"),
        }
    }
    assert_eq!(counts, [100, 300], "reads split 1:3 like the weights");
}

#[test]
fn weight_scales_the_load_each_replica_takes() {
    let light = replica(true, 100, 0.0);
    let heavy = ReplicaView { weight: 3, ..light };
    let r = read(Session, Floor::None);
    // Two requests on the heavy one (2/3 per unit) still beat one on the light one (1/1).
    let busy_heavy = ReplicaView {
        outstanding: 2,
        ..heavy
    };
    let busy_light = ReplicaView {
        outstanding: 1,
        ..light
    };
    assert_eq!(
        route(&r, &[busy_light, busy_heavy], 0),
        Route::Replica(1, Cause::FreshReplica)
    );
    // Three on the heavy one (1 per unit) tie with one on the light one: shared by weight.
    let busier_heavy = ReplicaView {
        outstanding: 3,
        ..heavy
    };
    let picks: Vec<_> = (0..4)
        .map(|t| route(&r, &[busy_light, busier_heavy], t))
        .collect();
    assert_eq!(
        picks
            .iter()
            .filter(|p| **p == Route::Replica(0, Cause::FreshReplica))
            .count(),
        1
    );
}

#[test]
fn floors_only_rise() {
    let mut floor = Floor::None;
    floor.raise(pos(10));
    floor.raise(pos(5));
    assert_eq!(floor, Floor::At(pos(10)));
    floor.raise(Position {
        timeline: 2,
        lsn: Lsn::new(1),
    });
    assert_eq!(
        floor,
        Floor::At(Position {
            timeline: 2,
            lsn: Lsn::new(1)
        })
    );
    let mut unknown = Floor::Unknown;
    unknown.raise(pos(3));
    assert_eq!(unknown, Floor::Unknown);
    unknown.reset_to(pos(3));
    assert_eq!(unknown, Floor::At(pos(3)));
}

#[test]
fn fallback_reasons() {
    assert!(Cause::FloorAhead.is_fallback() && Cause::FloorAhead.worth_waiting());
    assert!(Cause::NoReplica.is_fallback() && !Cause::NoReplica.worth_waiting());
    assert!(!Cause::Write.is_fallback());
}

/// `cargo test --release -p causeway --lib router::tests::bench_route -- --ignored --nocapture`
#[test]
#[ignore = "micro-benchmark; run explicitly"]
fn bench_route() {
    let replicas = [
        replica(true, 100, 0.1),
        replica(true, 90, 0.2),
        replica(false, 100, 9.0),
    ];
    let request = read(Session, Floor::At(pos(95)));
    let rounds = 2_000_000;
    let started = std::time::Instant::now();
    let mut hits = 0usize;
    for i in 0..rounds {
        if matches!(
            route(std::hint::black_box(&request), &replicas, i),
            Route::Replica(..)
        ) {
            hits += 1;
        }
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(rounds as u32);
    println!("route(): {ns:.1} ns per decision ({hits} to replicas)");
    assert_eq!(hits, rounds);
}
