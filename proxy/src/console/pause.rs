//! `PAUSE` / `RESUME`: a gate checked wherever a session takes a server connection (a
//! request's checkout, and a login's first one). While paused, transactions that hold a
//! connection run to their end; new checkouts wait until `RESUME`, as in PgBouncer, up to
//! [`limit`], then fail with `57P03`. One atomic load when open.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend::{Pool, PoolError};
use crate::config::Config;
use crate::context::Context;

/// How long a checkout waits at a paused gate before it fails: `[failover]
/// query_wait_timeout` (PgBouncer's `query_wait_timeout`), or `[proxy] checkout_timeout`
/// when that is 0 (a request is never failed at once for a PAUSE).
pub fn limit(config: &Config) -> Duration {
    let wait = config.failover.query_wait_timeout;
    if wait.is_zero() {
        config.proxy.checkout_timeout
    } else {
        wait
    }
}

/// Holds a checkout from `pool` while Causeway is paused, counted as waiting (the pool's
/// `cl_waiting`, `causeway_clients_waiting`); a shutdown lets it go on, so it ends like the
/// rest. Returns how long it waited (zero at once when open).
///
/// # Errors
/// [`PoolError::Paused`] when [`limit`] passed before `RESUME`.
pub async fn hold_checkout(ctx: &Context, pool: &Pool) -> Result<Duration, PoolError> {
    if !ctx.console.pause.is_paused() {
        return Ok(Duration::ZERO);
    }
    let started = Instant::now();
    let _waiting = (pool.waiters().enter(), ctx.metrics.waiting_for_server());
    let limit = limit(&ctx.config);
    tokio::select! {
        passed = tokio::time::timeout(limit, ctx.console.pause.pass()) => {
            if passed.is_err() {
                return Err(PoolError::Paused(limit));
            }
        }
        () = ctx.shutdown.drain.cancelled() => {}
    }
    Ok(started.elapsed())
}

/// The pause gate. Shared through [`super::ConsoleState`].
#[derive(Debug, Default)]
pub struct PauseGate {
    paused: AtomicBool,
    resumed: Notify,
    waiting: AtomicUsize,
}

impl PauseGate {
    /// Whether new requests are held now.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Holds new requests from now on. Returns whether it was paused already.
    pub fn pause(&self) -> bool {
        self.paused.swap(true, Ordering::AcqRel)
    }

    /// Lets held and new requests go on. Returns whether it was paused.
    pub fn resume(&self) -> bool {
        let was = self.paused.swap(false, Ordering::AcqRel);
        self.resumed.notify_waiters();
        was
    }

    /// Requests held by the gate now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Returns at once when open; else waits until [`PauseGate::resume`].
    pub async fn pass(&self) {
        if !self.is_paused() {
            return;
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _counted = Counted(&self.waiting);
        loop {
            let notified = self.resumed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a resume between the check and the await
            // is not missed.
            notified.as_mut().enable();
            if !self.is_paused() {
                return;
            }
            notified.await;
        }
    }
}

/// Gives back one unit of a counter when dropped (a waiter that is cancelled too).
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_open_gate_passes_and_a_paused_one_holds_until_resume() {
        let gate = Arc::new(PauseGate::default());
        gate.pass().await;
        assert!(!gate.pause());
        assert!(gate.pause());
        let held = tokio::spawn({
            let gate = gate.clone();
            async move { gate.pass().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!held.is_finished());
        assert_eq!(gate.waiting(), 1);
        assert!(gate.resume());
        tokio::time::timeout(Duration::from_secs(5), held)
            .await
            .expect("released by resume")
            .expect("no panic");
        assert_eq!(gate.waiting(), 0);
        assert!(!gate.resume());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_is_not_counted() {
        let gate = PauseGate::default();
        gate.pause();
        let gave_up = tokio::time::timeout(Duration::from_millis(20), gate.pass()).await;
        assert!(gave_up.is_err());
        assert_eq!(gate.waiting(), 0);
    }
}
