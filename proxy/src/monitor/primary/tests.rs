//! Tests of the primary election.
#![allow(clippy::unwrap_used)]

use super::*;

fn primary(timeline: u32, lsn: u64) -> Candidate {
    Candidate {
        up: true,
        unprobed: false,
        in_recovery: Some(false),
        timeline: Some(timeline),
        insert_lsn: Some(Lsn::new(lsn)),
    }
}

fn replica() -> Candidate {
    Candidate {
        up: true,
        unprobed: false,
        in_recovery: Some(true),
        timeline: Some(1),
        insert_lsn: None,
    }
}

fn down() -> Candidate {
    Candidate::default()
}

fn unprobed() -> Candidate {
    Candidate {
        unprobed: true,
        ..Candidate::default()
    }
}

#[test]
fn off_mode_assumes_the_configured_primary_until_probed() {
    let mut e = Election::new(false, 3);
    assert_eq!(e.current(), Some(0));
    let (change, _) = e.observe(&[unprobed(), unprobed(), unprobed()]);
    assert_eq!((change, e.current()), (None, Some(0)));
}

#[test]
fn follow_mode_elects_only_once_every_node_answered() {
    let mut e = Election::new(true, 3);
    assert_eq!(e.current(), None);
    // The old primary, standalone on timeline 1, answers first: not elected yet.
    let (change, _) = e.observe(&[primary(1, 50), unprobed(), unprobed()]);
    assert_eq!((change, e.current()), (None, None));
    let (change, _) = e.observe(&[primary(1, 50), primary(2, 90), unprobed()]);
    assert_eq!((change, e.current()), (None, None));
    // Every node answered (one with a failure): the newest timeline wins.
    let (change, rejected) = e.observe(&[primary(1, 50), primary(2, 90), down()]);
    assert!(matches!(
        change,
        Some(Change::Elected {
            node: 1,
            previous: Some(0),
            ..
        })
    ));
    assert_eq!(rejected, [0]);
}

#[test]
fn off_mode_has_no_primary_while_it_is_down() {
    let mut e = Election::new(false, 2);
    let (change, _) = e.observe(&[down(), replica()]);
    assert_eq!(change, Some(Change::Lost { previous: 0 }));
    assert_eq!(e.current(), None);
    // A promoted replica is never the primary in mode off.
    let (change, rejected) = e.observe(&[down(), primary(2, 100)]);
    assert_eq!((change, e.current()), (None, None));
    assert!(rejected.is_empty());
    let (change, _) = e.observe(&[primary(1, 50), primary(2, 100)]);
    assert!(matches!(
        change,
        Some(Change::Elected {
            node: 0,
            previous: None,
            ..
        })
    ));
    assert_eq!(e.current(), Some(0));
}

#[test]
fn follow_mode_elects_the_promoted_node_on_the_newer_timeline() {
    let mut e = Election::new(true, 3);
    e.observe(&[primary(1, 100), replica(), replica()]);
    assert_eq!(e.current(), Some(0));
    let before = e.packed();
    // The primary stops: no primary, the generation moves.
    let (change, _) = e.observe(&[down(), replica(), replica()]);
    assert_eq!(change, Some(Change::Lost { previous: 0 }));
    assert_eq!(e.current(), None);
    assert_ne!(e.packed() >> NODE_BITS, before >> NODE_BITS);
    // replica1 (node 1) is promoted.
    let (change, _) = e.observe(&[down(), primary(2, 200), replica()]);
    assert_eq!(
        change,
        Some(Change::Elected {
            node: 1,
            timeline: Some(2),
            previous: Some(0)
        })
    );
    assert_eq!(e.current(), Some(1));
    assert_eq!(
        (e.max_timeline, e.switched),
        (
            2,
            Some(Position {
                timeline: 2,
                lsn: Lsn::new(200)
            })
        )
    );
}

#[test]
fn an_old_primary_back_on_its_old_timeline_is_never_elected() {
    let mut e = Election::new(true, 3);
    e.observe(&[primary(1, 100), replica(), replica()]);
    e.observe(&[down(), primary(2, 200), replica()]);
    // Split brain: the old primary restarted standalone on timeline 1.
    let (change, rejected) = e.observe(&[primary(1, 150), primary(2, 210), replica()]);
    assert_eq!((change, e.current()), (None, Some(1)));
    assert_eq!(rejected, [0]);
    // Reported once while it lasts.
    let (_, rejected) = e.observe(&[primary(1, 150), primary(2, 220), replica()]);
    assert!(rejected.is_empty());
    // Even with the new primary down, the old one is not taken back.
    let (change, _) = e.observe(&[primary(1, 150), down(), replica()]);
    assert_eq!(change, Some(Change::Lost { previous: 1 }));
    assert_eq!(e.current(), None);
    // The new primary returns.
    e.observe(&[primary(1, 150), primary(2, 230), replica()]);
    assert_eq!(e.current(), Some(1));
    // The old primary, rewound as a replica, is no longer reported.
    let (change, rejected) = e.observe(&[replica(), primary(2, 240), replica()]);
    assert_eq!((change, rejected.len()), (None, 0));
}

#[test]
fn two_new_primaries_on_one_timeline_are_both_refused() {
    let mut e = Election::new(true, 3);
    e.observe(&[primary(1, 100), replica(), replica()]);
    let (change, rejected) = e.observe(&[down(), primary(2, 200), primary(2, 300)]);
    assert_eq!(change, Some(Change::Lost { previous: 0 }));
    assert_eq!(e.current(), None);
    // Both are reported: neither is trusted.
    assert_eq!(rejected, [1, 2]);
    // One of them is demoted: the other is elected.
    e.observe(&[down(), replica(), primary(2, 300)]);
    assert_eq!(e.current(), Some(2));
}

#[test]
fn the_primary_restarting_in_place_is_the_primary_again() {
    let mut e = Election::new(true, 2);
    e.observe(&[primary(1, 100), replica()]);
    e.observe(&[down(), replica()]);
    assert_eq!(e.current(), None);
    let (change, _) = e.observe(&[primary(1, 120), replica()]);
    assert!(matches!(
        change,
        Some(Change::Elected {
            node: 0,
            previous: None,
            ..
        })
    ));
}

#[test]
fn a_cluster_that_failed_over_before_startup_is_found() {
    let mut e = Election::new(true, 3);
    // [primary] is a replica now; replica2 is the primary on timeline 3.
    let (change, _) = e.observe(&[replica(), replica(), primary(3, 500)]);
    assert!(matches!(change, Some(Change::Elected { node: 2, .. })));
    // Nothing was seen on an older timeline: no switch point is claimed.
    assert_eq!(e.switched, None);
}

#[tokio::test]
async fn the_view_packs_node_and_generation_and_wakes_waiters() {
    let names: Vec<Arc<str>> = vec![Arc::from("primary"), Arc::from("replica1")];
    let view = PrimaryView::new(true, names);
    let first = view.current();
    assert_eq!(
        first.node, None,
        "follow mode: none until every node answered"
    );
    let waiter = {
        let view = view.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            view.changed_since(first.generation, deadline).await;
            view.current()
        })
    };
    tokio::task::yield_now().await;
    let stale = std::time::Duration::from_secs(1);
    let mut p = NodeStatus::new(Arc::from("primary"), super::super::Role::Primary, stale);
    let mut r = NodeStatus::new(Arc::from("replica1"), super::super::Role::Replica, stale);
    p.last_error = Some(Arc::from("down"));
    r.sampled_at = Some(Instant::now());
    r.in_recovery = Some(false);
    r.timeline = Some(2);
    r.insert_lsn = Some(Lsn::new(9));
    view.observe(&[p, r]);
    let now = waiter.await.unwrap();
    assert_eq!(now.node, Some(1));
    assert!(now.generation > first.generation);
    assert_eq!(view.changes(), 1);
    assert_eq!(view.name(1).map(|n| &**n), Some("replica1"));
}
