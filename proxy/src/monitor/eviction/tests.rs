//! Table tests for `judge` and scripted runs of the eviction state machine with synthetic
//! samples and explicit instants.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::lsn::Lsn;
use crate::monitor::sample::PauseState;

const MB: u64 = 1024 * 1024;

fn limits() -> Limits {
    Limits {
        max_bytes: 16 * MB,
        max_seconds: Duration::from_secs(5),
        readmit_fraction: 0.5,
        readmit_after: Duration::from_secs(1),
        stale_after: Duration::from_secs(1),
    }
}

fn healthy_sample() -> ReplicaSample {
    ReplicaSample {
        in_recovery: true,
        replay_lsn: Some(Lsn::new(1000)),
        receive_lsn: Some(Lsn::new(1000)),
        pause: PauseState::NotPaused,
        wal_receiver: true,
        received_tli: Some(1),
    }
}

fn lag(bytes: u64, millis: u64) -> Lag {
    Lag {
        bytes,
        seconds: Duration::from_millis(millis),
    }
}

#[test]
fn judge_table() {
    let ok = healthy_sample();
    let zero = Some(lag(0, 0));
    /// (name, sample, primary timeline, lag, expected verdict)
    type Case = (
        &'static str,
        ReplicaSample,
        Option<u32>,
        Option<Lag>,
        Verdict,
    );
    let cases: Vec<Case> = vec![
        ("caught up", ok, Some(1), zero, Verdict::Healthy(lag(0, 0))),
        (
            "at the limits",
            ok,
            Some(1),
            Some(lag(16 * MB, 5000)),
            Verdict::Healthy(lag(16 * MB, 5000)),
        ),
        (
            "one byte over",
            ok,
            Some(1),
            Some(lag(16 * MB + 1, 0)),
            Verdict::Unhealthy(EvictionReason::LagBytes),
        ),
        (
            "too old",
            ok,
            Some(1),
            Some(lag(10, 5001)),
            Verdict::Unhealthy(EvictionReason::LagSeconds),
        ),
        (
            "both over: bytes reported",
            ok,
            Some(1),
            Some(lag(17 * MB, 9000)),
            Verdict::Unhealthy(EvictionReason::LagBytes),
        ),
        (
            "no primary sample yet",
            ok,
            None,
            None,
            Verdict::Undetermined,
        ),
        (
            "promoted wins over everything",
            ReplicaSample {
                in_recovery: false,
                wal_receiver: false,
                ..ok
            },
            Some(1),
            Some(lag(17 * MB, 0)),
            Verdict::Unhealthy(EvictionReason::Promoted),
        ),
        (
            "other timeline",
            ReplicaSample {
                received_tli: Some(2),
                ..ok
            },
            Some(1),
            zero,
            Verdict::Unhealthy(EvictionReason::TimelineMismatch),
        ),
        (
            "hidden received_tli is not a mismatch",
            ReplicaSample {
                received_tli: None,
                ..ok
            },
            Some(2),
            zero,
            Verdict::Healthy(lag(0, 0)),
        ),
        (
            "paused even with no lag",
            ReplicaSample {
                pause: PauseState::Paused,
                ..ok
            },
            Some(1),
            zero,
            Verdict::Unhealthy(EvictionReason::Paused),
        ),
        (
            "pause requested",
            ReplicaSample {
                pause: PauseState::PauseRequested,
                ..ok
            },
            Some(1),
            zero,
            Verdict::Unhealthy(EvictionReason::Paused),
        ),
        (
            "receiver gone",
            ReplicaSample {
                wal_receiver: false,
                received_tli: None,
                ..ok
            },
            Some(1),
            zero,
            Verdict::Unhealthy(EvictionReason::NoWalReceiver),
        ),
        (
            "no replay position",
            ReplicaSample {
                replay_lsn: None,
                ..ok
            },
            Some(1),
            zero,
            Verdict::Unhealthy(EvictionReason::Stale),
        ),
    ];
    for (name, sample, timeline, lag, expected) in cases {
        assert_eq!(judge(&sample, timeline, lag, &limits()), expected, "{name}");
    }
}

/// One step of a script: at `ms` after the start, feed `input`, expect `state` after it.
struct Step {
    ms: u64,
    input: Input,
    state: State,
}

#[derive(Clone, Copy)]
enum Input {
    Sample(Verdict),
    Failure,
    Tick,
}

fn step(ms: u64, input: Input, state: State) -> Step {
    Step { ms, input, state }
}

fn good(bytes: u64, millis: u64) -> Input {
    Input::Sample(Verdict::Healthy(lag(bytes, millis)))
}

fn bad(reason: EvictionReason) -> Input {
    Input::Sample(Verdict::Unhealthy(reason))
}

/// Runs `steps` against a fresh machine; returns the transitions seen.
fn run(limits: Limits, steps: &[Step]) -> Vec<Transition> {
    let t0 = Instant::now();
    let mut machine = Eviction::new(limits);
    let mut transitions = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let at = t0 + Duration::from_millis(s.ms);
        let transition = match s.input {
            Input::Sample(verdict) => machine.on_sample(at, verdict),
            Input::Failure => machine.on_failure(at),
            Input::Tick => machine.on_tick(at),
        };
        transitions.extend(transition);
        assert_eq!(machine.state(), s.state, "step {i} at {} ms", s.ms);
    }
    transitions
}

use State::{Evicted, InPool, Unknown};

#[test]
fn unknown_until_the_first_good_sample() {
    let steps = [
        step(0, Input::Sample(Verdict::Undetermined), Unknown),
        step(50, Input::Tick, Unknown),
        step(5000, Input::Tick, Unknown),
        step(5050, good(0, 0), InPool),
    ];
    let transitions = run(limits(), &steps);
    assert_eq!(
        transitions,
        [Transition {
            from: Unknown,
            to: InPool
        }]
    );
}

#[test]
fn evicts_at_once_and_readmits_after_hysteresis() {
    let steps = [
        step(0, good(0, 0), InPool),
        step(
            50,
            bad(EvictionReason::Paused),
            Evicted(EvictionReason::Paused),
        ),
        step(
            100,
            bad(EvictionReason::LagBytes),
            Evicted(EvictionReason::LagBytes),
        ),
        // Back under the eviction limit but above half of it: stays out.
        step(150, good(9 * MB, 0), Evicted(EvictionReason::LagBytes)),
        // Under half of both limits from 200 ms on...
        step(200, good(MB, 100), Evicted(EvictionReason::LagBytes)),
        step(700, good(0, 0), Evicted(EvictionReason::LagBytes)),
        step(1150, good(0, 0), Evicted(EvictionReason::LagBytes)),
        // ...for readmit_after (1 s): back in.
        step(1200, good(0, 0), InPool),
    ];
    let transitions = run(limits(), &steps);
    let evictions: Vec<_> = transitions.iter().filter(|t| t.is_eviction()).collect();
    assert_eq!(evictions.len(), 1, "a reason change is not a new eviction");
    assert_eq!(transitions.len(), 4);
}

#[test]
fn any_interruption_restarts_the_readmit_clock() {
    let steps = [
        step(
            0,
            bad(EvictionReason::LagSeconds),
            Evicted(EvictionReason::LagSeconds),
        ),
        step(100, good(0, 0), Evicted(EvictionReason::LagSeconds)),
        step(900, good(0, 2600), Evicted(EvictionReason::LagSeconds)), // above half of 5 s
        step(1000, good(0, 0), Evicted(EvictionReason::LagSeconds)),
        step(1500, Input::Failure, Evicted(EvictionReason::Unreachable)),
        step(1600, good(0, 0), Evicted(EvictionReason::Unreachable)),
        step(
            2000,
            bad(EvictionReason::NoWalReceiver),
            Evicted(EvictionReason::NoWalReceiver),
        ),
        step(2100, good(0, 0), Evicted(EvictionReason::NoWalReceiver)),
        step(3050, good(0, 0), Evicted(EvictionReason::NoWalReceiver)),
        step(3100, good(0, 0), InPool),
    ];
    run(limits(), &steps);
}

#[test]
fn a_lagging_replica_is_evicted_on_first_contact() {
    let steps = [
        step(
            0,
            bad(EvictionReason::LagBytes),
            Evicted(EvictionReason::LagBytes),
        ),
        step(50, good(0, 0), Evicted(EvictionReason::LagBytes)),
        step(1050, good(0, 0), InPool),
    ];
    let transitions = run(limits(), &steps);
    assert!(transitions[0].is_eviction(), "counted: unknown -> evicted");
}

#[test]
fn goes_stale_without_successful_samples() {
    let steps = [
        step(0, good(0, 0), InPool),
        step(999, Input::Tick, InPool),
        step(1000, Input::Tick, Evicted(EvictionReason::Stale)),
        step(1100, good(0, 0), Evicted(EvictionReason::Stale)),
        step(2100, good(0, 0), InPool),
    ];
    run(limits(), &steps);
    // Unknown and evicted nodes have no stale deadline: they are out already.
    let machine = Eviction::new(limits());
    assert_eq!(machine.stale_deadline(), None);
}

#[test]
fn zero_readmit_after_readmits_on_the_first_clean_sample() {
    let limits = Limits {
        readmit_after: Duration::ZERO,
        ..limits()
    };
    let steps = [
        step(0, Input::Failure, Evicted(EvictionReason::Unreachable)),
        step(50, good(0, 0), InPool),
    ];
    run(limits, &steps);
}

#[test]
fn the_primary_has_no_hysteresis() {
    let lag_config = crate::config::LagConfig::default();
    let steps = [
        step(0, good(0, 0), InPool),
        step(50, Input::Failure, Evicted(EvictionReason::Unreachable)),
        step(100, good(0, 0), InPool),
        step(
            150,
            bad(EvictionReason::InRecovery),
            Evicted(EvictionReason::InRecovery),
        ),
        step(200, good(u64::MAX, 1_000_000), InPool),
    ];
    run(Limits::primary(&lag_config), &steps);
}

#[test]
fn reloaded_limits_evict_on_the_next_sample_and_readmit_with_hysteresis() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut machine = Eviction::new(limits());
    let lagging = lag(4 * MB, 0);
    let sample = healthy_sample();
    let verdict = |limits: &Limits| judge(&sample, Some(1), Some(lagging), limits);
    assert!(machine.on_sample(at(0), verdict(&limits())).is_some());
    assert_eq!(machine.state(), InPool, "4 MiB is under 16 MiB");
    // A reload lowers max_bytes to 1 MiB: the next sample evicts.
    let lower = Limits {
        max_bytes: MB,
        ..limits()
    };
    machine.set_limits(lower);
    machine.on_sample(at(50), verdict(&lower));
    assert_eq!(machine.state(), Evicted(EvictionReason::LagBytes));
    // Raised again to 16 MiB: 4 MiB is under half of it, but readmission still waits
    // readmit_after (1 s) of clean samples.
    machine.set_limits(limits());
    machine.on_sample(at(100), verdict(&limits()));
    machine.on_sample(at(600), verdict(&limits()));
    assert_eq!(machine.state(), Evicted(EvictionReason::LagBytes));
    machine.on_sample(at(1100), verdict(&limits()));
    assert_eq!(machine.state(), InPool);
}
