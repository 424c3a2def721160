//! Two-stage shutdown. `drain` stops accepting and lets transactions finish; `terminate`
//! (the deadline) closes everything. Background tasks wait on cancellation tokens; each
//! client session holds a pair of one-shot receivers, which cost a few atomic operations to
//! poll in its request loop (a token's waiter list takes a lock on every poll).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The shutdown signals of one proxy. A cheap clonable handle.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    pub drain: CancellationToken,
    pub terminate: CancellationToken,
    sessions: Arc<Mutex<Subscribers>>,
}

#[derive(Debug, Default)]
struct Subscribers {
    next_id: u64,
    by_id: HashMap<u64, Senders>,
}

#[derive(Debug, Default)]
struct Senders {
    drain: Option<oneshot::Sender<()>>,
    terminate: Option<oneshot::Sender<()>>,
}

/// One session's view of the shutdown: each receiver completes when its stage begins.
#[derive(Debug)]
pub struct Signals {
    pub drain: oneshot::Receiver<()>,
    pub terminate: oneshot::Receiver<()>,
    id: u64,
    shutdown: Shutdown,
}

impl Drop for Signals {
    fn drop(&mut self) {
        if let Ok(mut subs) = self.shutdown.sessions.lock() {
            subs.by_id.remove(&self.id);
        }
    }
}

impl Shutdown {
    /// Signals for a new session; stages that already began are signalled at once.
    pub fn subscribe(&self) -> Signals {
        let (drain_tx, drain) = oneshot::channel();
        let (terminate_tx, terminate) = oneshot::channel();
        let mut senders = Senders {
            drain: Some(drain_tx),
            terminate: Some(terminate_tx),
        };
        if self.drain.is_cancelled() {
            fire(&mut senders.drain);
        }
        if self.terminate.is_cancelled() {
            fire(&mut senders.terminate);
        }
        let id = match self.sessions.lock() {
            Ok(mut subs) => {
                subs.next_id += 1;
                let id = subs.next_id;
                subs.by_id.insert(id, senders);
                id
            }
            Err(_) => 0,
        };
        Signals {
            drain,
            terminate,
            id,
            shutdown: self.clone(),
        }
    }

    /// Begin draining.
    pub fn start_drain(&self) {
        self.drain.cancel();
        self.notify(|s| &mut s.drain);
    }

    /// The deadline passed: close everything. Implies draining (sessions wait for the
    /// terminate signal only once they drain).
    pub fn start_terminate(&self) {
        self.start_drain();
        self.terminate.cancel();
        self.notify(|s| &mut s.terminate);
    }

    fn notify(&self, pick: impl Fn(&mut Senders) -> &mut Option<oneshot::Sender<()>>) {
        if let Ok(mut subs) = self.sessions.lock() {
            for senders in subs.by_id.values_mut() {
                fire(pick(senders));
            }
        }
    }
}

fn fire(sender: &mut Option<oneshot::Sender<()>>) {
    if let Some(tx) = sender.take() {
        let _ = tx.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_hear_both_stages_even_when_they_subscribe_late() {
        let shutdown = Shutdown::default();
        let mut early = shutdown.subscribe();
        assert!(early.drain.try_recv().is_err());
        shutdown.start_drain();
        assert!((&mut early.drain).await.is_ok());
        let mut late = shutdown.subscribe();
        assert!(late.drain.try_recv().is_ok());
        assert!(late.terminate.try_recv().is_err());
        shutdown.start_terminate();
        assert!((&mut late.terminate).await.is_ok());
        assert!((&mut early.terminate).await.is_ok());
    }
}
