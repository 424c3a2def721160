//! The monitor task of one node: sample every `lag.poll_interval` (or early, when a waiting
//! read asks), feed the eviction state machine, publish the node's status, and reconnect
//! with backoff when the control connection breaks. Stops on the drain signal.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::eviction::{judge, Eviction, Limits, Transition, Verdict};
use super::history::Lag;
use super::probe::{within, Kind, ProbeError, ProbeTarget, Sample, Session};
use super::reason::State;
use super::sample::{PrimarySample, ReplicaSample};
use super::topology::{NodeStatus, ProbeMark, Probes, Role, Topology};
use crate::config::LagConfig;

/// Shortest time between the starts of two probes when early wake-ups keep coming and
/// nobody waits for them (connections' requests on the primary ask for a sample, DESIGN.md
/// §1 rule 1): one probe then covers every request that ended in the meantime, and a
/// write-heavy load costs at most 500 probes a second, not one per write. A read waiting
/// for a refresh is not held back by it.
const EARLY_PROBE_SPACING: Duration = Duration::from_millis(2);

/// Longest wait between reconnection attempts (at least `lag.poll_interval`). Not a config
/// key: a node that is down is already evicted, this only bounds how soon it can return.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a node task needs.
#[derive(Debug)]
pub(crate) struct TaskContext {
    /// The node's id in the topology (see [`Topology::update_node`]).
    pub(crate) id: u64,
    /// The node's plumbing; its `removed` token stops the task.
    pub(crate) probes: Arc<Probes>,
    pub(crate) name: Arc<str>,
    pub(crate) kind: Kind,
    pub(crate) target: ProbeTarget,
    /// `[lag]` and the login, replaced by a reload: read at every poll.
    pub(crate) settings: tokio::sync::watch::Receiver<super::control::Settings>,
    /// The configured primary when failovers are not followed: judged without lag limits
    /// or hysteresis ([`Limits::primary`]).
    pub(crate) primary_limits: bool,
    pub(crate) poll_interval: Duration,
    pub(crate) topology: Topology,
    pub(crate) tracker: TaskTracker,
    pub(crate) drain: CancellationToken,
    pub(crate) terminate: CancellationToken,
    /// The node's `server_version_num` at its last connection (0: not connected yet).
    pub(crate) server_version: AtomicU32,
    /// `failover.mode = "follow"`: the node is probed as what it is now (a primary or a
    /// replica), whatever its configured role.
    pub(crate) follow: bool,
}

/// The monitor task of one node.
#[derive(Debug)]
pub(crate) struct NodeTask {
    ctx: TaskContext,
    machine: Eviction,
    /// Whether the last probe failed (to log a failure streak once).
    failing: bool,
    /// What the node is probed as now: its configured role, or in follow mode what its
    /// last sample showed.
    kind: Kind,
}

impl NodeTask {
    /// A task for the node described by `ctx`, starting in state unknown.
    pub(crate) fn new(mut ctx: TaskContext) -> NodeTask {
        let lag = ctx.settings.borrow_and_update().lag.clone();
        ctx.poll_interval = lag.poll_interval;
        ctx.target.timeout = lag.probe_timeout;
        let machine = Eviction::new(ctx.limits_for(&lag));
        let kind = ctx.kind;
        NodeTask {
            ctx,
            machine,
            failing: false,
            kind,
        }
    }

    /// Runs until the drain signal.
    pub(crate) async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.ctx.poll_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut backoff = Backoff::new(self.ctx.poll_interval);
        let mut session: Option<Session> = None;
        let mut last_started: Option<Instant> = None;
        loop {
            let pause = self.failing.then(|| backoff.next());
            if !self.wait(&mut ticker, pause).await {
                return;
            }
            if let Some(due) = last_started.map(|at| at + EARLY_PROBE_SPACING) {
                if !self.pause_until(due).await {
                    return;
                }
            }
            // A reload since the last probe applies to this one.
            let reloaded = self.reconfigure();
            if reloaded.interval {
                ticker = tokio::time::interval(self.ctx.poll_interval);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                backoff = Backoff::new(self.ctx.poll_interval);
            }
            if reloaded.reconnect {
                session = None;
            }
            // This probe serves whoever waits now: it starts after they asked.
            self.ctx.probes.urgent.store(false, Ordering::Relaxed);
            let started = Instant::now();
            last_started = Some(started);
            self.ctx.probes.count.fetch_add(1, Ordering::Relaxed);
            let Some(result) = self.probe(&mut session).await else {
                return;
            };
            match result {
                Ok(sample) => {
                    backoff.reset();
                    if self.on_sample(started, sample) {
                        // Probed as the other kind from the next poll on (a new statement).
                        session = None;
                    }
                }
                Err(err) => {
                    session = None;
                    self.on_failure(started, &err);
                }
            }
        }
    }

    /// Takes the settings a reload published: the limits apply from the next sample on,
    /// the probe timeout from the next probe, a login from the next connection (at once for
    /// another user or database; a new password waits for a reconnection, so a file
    /// updated before the server does not cost the node its connection).
    fn reconfigure(&mut self) -> Reloaded {
        if !self.ctx.settings.has_changed().unwrap_or(false) {
            return Reloaded::default();
        }
        let settings = self.ctx.settings.borrow_and_update().clone();
        let reconnect = self
            .ctx
            .target
            .login
            .is_another_role_or_database(&settings.login);
        self.ctx.target.login = settings.login;
        let lag = settings.lag;
        self.machine.set_limits(self.ctx.limits_for(&lag));
        self.ctx.target.timeout = lag.probe_timeout;
        self.ctx
            .topology
            .update_node(self.ctx.id, |node| node.set_stale_after(lag.stale_after));
        tracing::debug!(node = %self.ctx.name, "monitor settings reloaded");
        let interval = self.ctx.poll_interval != lag.poll_interval;
        self.ctx.poll_interval = lag.poll_interval;
        Reloaded {
            interval,
            reconnect,
        }
    }

    /// Waits for the next tick, an early wake-up or the end of `backoff`, watching for
    /// staleness meanwhile. Returns false on the drain signal or when the node is removed.
    async fn wait(&mut self, ticker: &mut Interval, backoff: Option<Duration>) -> bool {
        let probes = Arc::clone(&self.ctx.probes);
        let pause = tokio::time::sleep(backoff.unwrap_or_default());
        tokio::pin!(pause);
        loop {
            let stale_at = self.machine.stale_deadline();
            tokio::select! {
                () = self.ctx.drain.cancelled() => return false,
                () = probes.removed.cancelled() => return false,
                _ = ticker.tick(), if backoff.is_none() => return true,
                () = probes.wake.notified(), if backoff.is_none() => return true,
                () = &mut pause, if backoff.is_some() => return true,
                () = sleep_until(stale_at) => self.mark_stale(),
            }
        }
    }

    /// Sleeps until `due`, or until a caller waits for the next probe (at once if either
    /// is so already). Returns false on the drain signal or when the node is removed.
    async fn pause_until(&self, due: Instant) -> bool {
        let probes = &self.ctx.probes;
        let sleep = tokio::time::sleep_until(due);
        tokio::pin!(sleep);
        loop {
            if due <= Instant::now() || probes.urgent.load(Ordering::Relaxed) {
                return true;
            }
            tokio::select! {
                () = self.ctx.drain.cancelled() => return false,
                () = probes.removed.cancelled() => return false,
                () = &mut sleep => return true,
                // Looks at `urgent` again.
                () = probes.wake.notified() => {}
            }
        }
    }

    /// One probe (connecting first if needed) within `lag.probe_timeout`, watching for
    /// staleness meanwhile. `None` on the drain signal.
    async fn probe(&mut self, session: &mut Option<Session>) -> Option<Result<Sample, ProbeError>> {
        let ctx = &self.ctx;
        let probe = within(ctx.target.timeout, sample(ctx, self.kind, session));
        tokio::pin!(probe);
        loop {
            let stale_at = self.machine.stale_deadline();
            tokio::select! {
                result = &mut probe => return Some(result),
                () = ctx.drain.cancelled() => return None,
                () = ctx.probes.removed.cancelled() => return None,
                () = sleep_until(stale_at) => {
                    let transition = self.machine.on_tick(Instant::now());
                    ctx.publish(self.machine.state(), transition, None, |_| {});
                }
            }
        }
    }

    fn mark_stale(&mut self) {
        let transition = self.machine.on_tick(Instant::now());
        self.ctx
            .publish(self.machine.state(), transition, None, |_| {});
    }

    /// Returns true when, following failovers, the node must be probed as the other kind
    /// from now on (it was promoted, or became a replica).
    fn on_sample(&mut self, started: Instant, sample: Sample) -> bool {
        if self.failing {
            tracing::info!(node = %self.ctx.name, "probe succeeded again");
            self.failing = false;
        }
        let in_recovery = match sample {
            Sample::Primary(sample) => {
                self.on_primary_sample(started, sample);
                sample.in_recovery
            }
            Sample::Replica(sample) => {
                self.on_replica_sample(started, sample);
                sample.in_recovery
            }
        };
        let now = if in_recovery {
            Kind::Replica
        } else {
            Kind::Primary
        };
        if !self.ctx.follow || now == self.kind {
            return false;
        }
        tracing::info!(node = %self.ctx.name, in_recovery, "node changed role; probing it as {now:?}");
        self.kind = now;
        true
    }

    fn on_primary_sample(&mut self, started: Instant, sample: PrimarySample) {
        let now = Instant::now();
        // Only the primary's positions measure lag (in follow mode a second node out of
        // recovery, split brain, must not mix its WAL into the history).
        let elected = self.ctx.topology.index_of(self.ctx.id)
            == Some(self.ctx.topology.primary().last_elected());
        if !sample.in_recovery && elected {
            self.ctx.topology.with_history(|history| {
                if let Some(timeline) = sample.timeline {
                    history.set_timeline(timeline);
                }
                if let Some(lsn) = sample.insert_lsn {
                    if history.record(started, lsn) {
                        tracing::warn!(node = %self.ctx.name, %lsn,
                            "the primary's WAL position went backwards; lag history restarted");
                    }
                }
            });
        }
        let verdict = if sample.in_recovery {
            Verdict::Unhealthy(super::reason::EvictionReason::InRecovery)
        } else if self.ctx.kind == Kind::Replica || !elected {
            // A configured replica taking writes serves no replica reads, and a node out of
            // recovery that is not the elected primary (split brain) serves nothing.
            Verdict::Unhealthy(super::reason::EvictionReason::Promoted)
        } else {
            Verdict::Healthy(Lag::default())
        };
        let transition = self.machine.on_sample(now, verdict);
        self.ctx
            .publish(self.machine.state(), transition, None, |node| {
                node.in_recovery = Some(sample.in_recovery);
                node.insert_lsn = sample.insert_lsn;
                node.timeline = sample.timeline;
                node.replay_lsn = None;
                node.receive_lsn = None;
                node.lag_bytes = None;
                node.lag_seconds = None;
                node.sampled_at = Some(now);
                node.last_error = None;
            });
        let insert = match (sample.in_recovery, sample.timeline, sample.insert_lsn) {
            (false, Some(timeline), Some(lsn)) => Some(crate::lsn::Position { timeline, lsn }),
            _ => None,
        };
        self.ctx.mark(started, None, insert);
    }

    fn on_replica_sample(&mut self, started: Instant, sample: ReplicaSample) {
        let now = Instant::now();
        let (lag, primary_timeline) = self.ctx.topology.with_history(|history| {
            let lag = sample
                .replay_lsn
                .and_then(|replay| history.lag(replay, now));
            (lag, history.timeline())
        });
        let limits = self.machine.limits();
        let mut verdict = judge(&sample, primary_timeline, lag, &limits);
        if verdict == Verdict::Unhealthy(super::reason::EvictionReason::NoWalReceiver)
            && self.ctx.topology.primary().current().node.is_none()
        {
            // Without a primary no replica can stream: a missing WAL receiver says nothing
            // about staleness then, and replicas keep serving the reads they can (the lag
            // limits still apply).
            let streaming = ReplicaSample {
                wal_receiver: true,
                ..sample
            };
            verdict = judge(&streaming, primary_timeline, lag, &limits);
        }
        let transition = self.machine.on_sample(now, verdict);
        self.ctx
            .publish(self.machine.state(), transition, lag, |node| {
                node.in_recovery = Some(sample.in_recovery);
                node.insert_lsn = None;
                node.replay_lsn = sample.replay_lsn;
                node.receive_lsn = sample.receive_lsn;
                node.timeline = sample.received_tli;
                node.paused = sample.pause.is_paused();
                node.wal_receiver = Some(sample.wal_receiver);
                node.lag_bytes = lag.map(|l| l.bytes);
                node.lag_seconds = lag.map(|l| l.seconds);
                node.sampled_at = Some(now);
                node.last_error = None;
            });
        self.ctx.mark(started, sample.replay_lsn, None);
    }

    fn on_failure(&mut self, started: Instant, err: &ProbeError) {
        if self.failing {
            tracing::debug!(node = %self.ctx.name, %err, "probe failed again");
        } else {
            tracing::warn!(node = %self.ctx.name, %err, "probe failed");
        }
        self.failing = true;
        let transition = self.machine.on_failure(Instant::now());
        let message: Arc<str> = Arc::from(err.to_string());
        self.ctx
            .publish(self.machine.state(), transition, None, |node| {
                node.last_error = Some(message);
            });
        self.ctx.mark(started, None, None);
    }
}

impl TaskContext {
    /// The limits this node is judged by under `lag`.
    fn limits_for(&self, lag: &LagConfig) -> Limits {
        if self.primary_limits {
            Limits::primary(lag)
        } else {
            Limits::replica(lag)
        }
    }

    /// Updates this node's status with `fill` and `state`, publishes it, then logs and
    /// counts `transition`.
    fn publish(
        &self,
        state: State,
        transition: Option<Transition>,
        lag: Option<Lag>,
        fill: impl FnOnce(&mut NodeStatus),
    ) {
        self.topology.update_node(self.id, |node| {
            fill(node);
            node.set_state(state);
        });
        if let Some(transition) = transition {
            self.report(transition, lag);
        }
    }

    /// Logs a transition (info) and counts evictions of replicas.
    fn report(&self, transition: Transition, lag: Option<Lag>) {
        let role = match self.kind {
            Kind::Primary => Role::Primary,
            Kind::Replica => Role::Replica,
        };
        let name = &self.name;
        let from = transition.from.label();
        let lag_bytes = lag.map(|l| l.bytes);
        let lag_seconds = lag.map(|l| l.seconds.as_secs_f64());
        match transition.to {
            State::Evicted(reason) if transition.is_eviction() => {
                if role == Role::Replica {
                    self.topology.count_eviction(name, reason);
                }
                tracing::info!(node = %name, role = role.label(), reason = reason.label(), from,
                    lag_bytes, lag_seconds, "node out of the pool: {reason}");
            }
            State::Evicted(reason) => {
                tracing::info!(node = %name, role = role.label(), reason = reason.label(),
                    previous = ?transition.from.reason().map(|r| r.label()),
                    lag_bytes, lag_seconds, "node still out of the pool, now because {reason}");
            }
            State::InPool => {
                tracing::info!(node = %name, role = role.label(), from, lag_bytes, lag_seconds,
                    "node in the pool");
            }
            State::Unknown => {}
        }
    }

    /// Logs the node's PostgreSQL version on its first connection, and again if it
    /// changes (an upgrade behind the same address).
    fn note_version(&self, version: u32) {
        if self.server_version.swap(version, Ordering::Relaxed) == version {
            return;
        }
        let text = super::probe::version_text(version);
        match super::probe::version_note(version) {
            None => {
                tracing::info!(node = %self.name, version = %text, "node runs PostgreSQL {text}")
            }
            Some(note) => tracing::warn!(node = %self.name, version = %text,
                "node runs PostgreSQL {text}: {note}"),
        }
    }

    /// Tells waiting refreshes that a probe which started at `started` finished, with the
    /// replay LSN of a replica or the insert position of a node out of recovery.
    fn mark(
        &self,
        started: Instant,
        replay_lsn: Option<crate::lsn::Lsn>,
        insert: Option<crate::lsn::Position>,
    ) {
        let probes = &self.probes;
        if let Some(insert) = insert {
            probes.note_insert(started, insert);
        }
        probes.latest.send_replace(ProbeMark {
            started: Some(started),
            replay_lsn,
            insert,
            connection: probes.connections.load(Ordering::Relaxed),
        });
    }
}

/// What a reload changed for a node task.
#[derive(Debug, Default, Clone, Copy)]
struct Reloaded {
    /// The poll interval (the ticker starts over).
    interval: bool,
    /// The login's user or database (the control connection is opened again).
    reconnect: bool,
}

/// Connects if needed, then takes one sample.
async fn sample(
    ctx: &TaskContext,
    kind: Kind,
    session: &mut Option<Session>,
) -> Result<Sample, ProbeError> {
    if session.is_none() {
        let opened = ctx
            .target
            .connect(kind, &ctx.tracker, &ctx.terminate)
            .await?;
        tracing::debug!(node = %ctx.name, "control connection open");
        ctx.note_version(opened.version());
        ctx.probes.connections.fetch_add(1, Ordering::Relaxed);
        *session = Some(opened);
    }
    match session {
        Some(open) => open.sample(kind).await,
        None => Err(ProbeError::Unexpected("no control connection".into())),
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Exponential reconnection backoff from `lag.poll_interval` up to
/// [`RECONNECT_BACKOFF_MAX`].
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration) -> Backoff {
        Backoff {
            min,
            max: RECONNECT_BACKOFF_MAX.max(min),
            next: min,
        }
    }

    /// The wait before the next attempt; doubles each time.
    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100));
        let waits: Vec<_> = (0..6).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(100));
        let mut slow = Backoff::new(Duration::from_secs(3));
        assert_eq!(
            (slow.next(), slow.next()),
            (Duration::from_secs(3), Duration::from_secs(3))
        );
    }
}
