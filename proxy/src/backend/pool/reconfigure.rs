//! A reload's changes to pools in place: every pool's size follows the new `[proxy]
//! pool_size` and the users' `pool_size`. A smaller pool shrinks as connections in use come
//! back. (A changed password reaches a pool with the first client that logs in with it:
//! [`Pool::refresh_login`].)

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Pool, Pools};
use crate::config::UserConfig;

impl Pools {
    /// Apply `default_size` (`[proxy] pool_size`) and `users` to every pool and to pools
    /// made from now on. Pools of users no longer listed keep their settings (their
    /// sessions run until they end). Must run inside the tokio runtime (a shrink waits for
    /// connections in use in a task).
    pub fn reconfigure(&self, default_size: usize, users: &[UserConfig]) {
        self.shared
            .default_size
            .store(default_size.max(1), Ordering::Relaxed);
        for entry in self.shared.pools.iter() {
            let pool = entry.value();
            let Some(user) = users.iter().find(|u| u.name == pool.key.user) else {
                continue;
            };
            pool.resize(user.pool_size.unwrap_or(default_size).max(1));
        }
    }
}

impl Pool {
    /// Allow `size` connections at once from now on.
    pub(super) fn resize(self: &Arc<Pool>, size: usize) {
        let before = self.size.swap(size, Ordering::Relaxed);
        if size > before {
            self.permits.add_permits(size - before);
        } else if size < before {
            let excess = before - size;
            let forgotten = self.permits.forget_permits(excess);
            let rest = excess - forgotten;
            if rest > 0 {
                // Connections in use hold the rest: take their permits as they come back.
                let permits = Arc::clone(&self.permits);
                let count = u32::try_from(rest).unwrap_or(u32::MAX);
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(async move {
                            if let Ok(taken) = permits.acquire_many_owned(count).await {
                                taken.forget();
                            }
                        });
                    }
                    Err(_) => tracing::warn!(node = %self.key.node, rest,
                        "pool shrinks only by its idle share: no runtime to wait on"),
                }
            }
        }
        if size != before {
            tracing::info!(node = %self.key.node, user = ?self.key.user,
                database = ?self.key.database, before, size, "pool resized");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::{Login, NodeAddr};

    fn user(name: &str, password: &str, pool_size: Option<usize>) -> UserConfig {
        UserConfig {
            name: name.to_owned(),
            password: Some(password.to_owned()),
            pool_size,
        }
    }

    #[tokio::test]
    async fn pools_follow_new_sizes() {
        let pools = super::super::tests::pools_of(4);
        let node = NodeAddr {
            name: Arc::from("primary"),
            host: Arc::from("127.0.0.1"),
            port: 1,
        };
        let login = Login::with_password("app", "app", Some("old"));
        let pool = pools.get(&node, &login, None);
        // Two permits in use, as two checked-out connections would hold.
        let held = Arc::clone(&pool.permits)
            .acquire_many_owned(2)
            .await
            .unwrap();
        pools.reconfigure(4, &[user("app", "new", Some(1))]);
        assert_eq!(pool.pool_size(), 1);
        // Two free permits were forgotten at once; one more when the held ones return.
        assert_eq!(pool.permits.available_permits(), 0);
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), async {
            while pool.permits.available_permits() != 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the pool shrinks to 1 as permits come back");
        pools.reconfigure(3, &[user("app", "new", None)]);
        assert_eq!(pool.pool_size(), 3);
        assert_eq!(pool.permits.available_permits(), 3);
        // New pools get the new default.
        let other = Login::with_password("app", "other", Some("new"));
        assert_eq!(pools.get(&node, &other, None).pool_size(), 3);
    }
}
