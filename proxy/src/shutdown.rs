//! Two-stage shutdown. `drain` stops accepting and lets transactions finish; `terminate`
//! (the deadline) closes everything. Background tasks wait on cancellation tokens; each
//! client session holds one flag of its own, a few atomic operations to poll in its request
//! loop (a token's waiter list takes a lock on every poll), and one small allocation while
//! it is idle (issue 11: memory per idle client).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use slab::Slab;
use tokio_util::sync::CancellationToken;

/// A shutdown stage, in the order they begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stage {
    Running = 0,
    Drain = 1,
    Terminate = 2,
}

/// The shutdown signals of one proxy. A cheap clonable handle.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    pub drain: CancellationToken,
    pub terminate: CancellationToken,
    sessions: Arc<Mutex<Slab<Arc<Flag>>>>,
}

/// One session's stage and the task to wake when it moves on.
#[derive(Debug, Default)]
struct Flag {
    stage: AtomicU8,
    waker: AtomicWaker,
}

/// One session's view of the shutdown.
#[derive(Debug)]
pub struct Signals {
    flag: Arc<Flag>,
    key: usize,
    sessions: Arc<Mutex<Slab<Arc<Flag>>>>,
}

impl Signals {
    /// Ready once `stage` (or a later one) has begun; otherwise the task is woken when it
    /// does.
    pub fn poll_stage(&self, stage: Stage, cx: &mut Context<'_>) -> Poll<()> {
        if self.reached(stage) {
            return Poll::Ready(());
        }
        self.flag.waker.register(cx.waker());
        // Again: the stage may have moved on before the waker was registered.
        if self.reached(stage) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether `stage` (or a later one) has begun.
    pub fn reached(&self, stage: Stage) -> bool {
        self.flag.stage.load(Ordering::Acquire) >= stage as u8
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.try_remove(self.key);
    }
}

impl Shutdown {
    /// Signals for a new session; stages that already began are signalled at once.
    pub fn subscribe(&self) -> Signals {
        let flag = Arc::new(Flag::default());
        // The stage is read under the lock the notifications take: a stage that begins
        // meanwhile either is seen here or finds the flag registered.
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        flag.stage.store(self.stage() as u8, Ordering::Release);
        let key = sessions.insert(flag.clone());
        drop(sessions);
        Signals {
            flag,
            key,
            sessions: self.sessions.clone(),
        }
    }

    /// Begin draining.
    pub fn start_drain(&self) {
        self.drain.cancel();
        self.notify(Stage::Drain);
    }

    /// The deadline passed: close everything. Implies draining (sessions wait for the
    /// terminate signal only once they drain).
    pub fn start_terminate(&self) {
        self.start_drain();
        self.terminate.cancel();
        self.notify(Stage::Terminate);
    }

    /// The stage that has begun.
    fn stage(&self) -> Stage {
        if self.terminate.is_cancelled() {
            Stage::Terminate
        } else if self.drain.is_cancelled() {
            Stage::Drain
        } else {
            Stage::Running
        }
    }

    fn notify(&self, stage: Stage) {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, flag) in sessions.iter() {
            flag.stage.fetch_max(stage as u8, Ordering::AcqRel);
            flag.waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until `signals` reaches `stage`.
    async fn reached(signals: &Signals, stage: Stage) {
        std::future::poll_fn(|cx| signals.poll_stage(stage, cx)).await
    }

    #[tokio::test]
    async fn sessions_hear_both_stages_even_when_they_subscribe_late() {
        let shutdown = Shutdown::default();
        let early = shutdown.subscribe();
        assert!(!early.reached(Stage::Drain));
        let waiting = tokio::spawn({
            let early = shutdown.subscribe();
            async move { reached(&early, Stage::Drain).await }
        });
        shutdown.start_drain();
        reached(&early, Stage::Drain).await;
        waiting.await.expect("woken by the drain");
        let late = shutdown.subscribe();
        assert!(late.reached(Stage::Drain));
        assert!(!late.reached(Stage::Terminate));
        shutdown.start_terminate();
        reached(&late, Stage::Terminate).await;
        reached(&early, Stage::Terminate).await;
    }

    #[test]
    fn a_session_that_ends_is_forgotten() {
        let shutdown = Shutdown::default();
        let first = shutdown.subscribe();
        let second = shutdown.subscribe();
        drop(first);
        let third = shutdown.subscribe();
        assert_eq!(shutdown.sessions.lock().expect("not poisoned").len(), 2);
        drop((second, third));
        assert!(shutdown.sessions.lock().expect("not poisoned").is_empty());
    }
}
