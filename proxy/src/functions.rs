//! Named background task: keep the classifier's list of volatile user functions current by
//! reading `pg_proc` on the primary (DESIGN.md §2: a call to a volatile user function may
//! write, so it goes to the primary unless `[functions] read_only` lists it).
//!
//! Functions live in a database, so the catalog is read in every database clients use:
//! the databases of the pools ([`crate::backend::Pools::database_logins`]), each logged in
//! as a user that clients use there. It is read every [`REFRESH_EVERY`], and at once when
//! clients start using a database no pool had yet.
//!
//! The classifier has one [`FunctionPolicy`] (its cache is shared by every database), so
//! the lists are merged, failing closed: a function volatile in any database counts as
//! volatile in all of them. A function of the same schema-qualified name that is stable in
//! another database is then sent to the primary there: slower, never wrong. A database
//! whose catalog cannot be read keeps its last known list. Until a new database's catalog
//! has been read (the first refresh right after its first client connects), its volatile
//! functions are known only if `[functions] writes` lists them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::backend::Login;
use crate::classify::{FunctionPolicy, VOLATILE_FUNCTIONS_SQL};
use crate::context::Context;

/// How often the list is refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// Time limit for one database's refresh (connect and query).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// Refresh the function policy until the drain starts (also after each reload: its
/// `[functions]` lists and its replicas).
pub async fn refresh_volatile_functions(ctx: Context) {
    let mut interval = tokio::time::interval(REFRESH_EVERY);
    // Volatile functions by database, as last read.
    let mut known: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = ctx.pools.database_added() => {}
            () = ctx.reload.reloaded() => {}
            () = ctx.shutdown.drain.cancelled() => return,
        }
        if ctx.reload.live().nodes.replicas.is_empty() {
            // Every statement goes to the primary: no list is needed until a reload adds
            // a replica (which wakes this task).
            continue;
        }
        // PAUSE: no new server connections, this task's included; it reads after RESUME.
        if ctx.console.pause.is_paused() {
            tokio::select! {
                () = ctx.console.pause.pass() => {}
                () = ctx.shutdown.drain.cancelled() => return,
            }
        }
        for login in ctx.pools.database_logins() {
            let database = login.database.clone();
            match tokio::time::timeout(REFRESH_TIMEOUT, load(&ctx, &login)).await {
                Ok(Ok(functions)) => {
                    tracing::debug!(%database, count = functions.len(),
                        "refreshed volatile user functions");
                    known.insert(database, functions);
                }
                Ok(Err(err)) => tracing::warn!(%database, user = %login.user, %err,
                    "could not read volatile functions from the primary; keeping the last list"),
                Err(_) => tracing::warn!(%database, user = %login.user,
                    "timed out reading volatile functions from the primary; keeping the last list"),
            }
        }
        // The lists of the latest reload, not those Causeway started with.
        let live = ctx.reload.live();
        let config = &live.config.functions;
        let policy =
            FunctionPolicy::new(&config.read_only, &config.writes).with_volatile(merge(&known));
        ctx.classifier.set_functions(policy);
    }
}

/// Every database's volatile functions in one list (sorted, without duplicates): volatile
/// in any database means volatile.
fn merge(known: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut all: Vec<String> = known.values().flatten().cloned().collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Why a database's volatile functions could not be read.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error(transparent)]
    Driver(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Pool(#[from] crate::backend::PoolError),
    #[error(transparent)]
    Rows(#[from] crate::backend::rows::RowsError),
}

/// Reads the volatile user functions of `login.database` on the primary: with a driver
/// connection when the login has a plaintext password (or none), else (a SCRAM
/// pass-through key or an md5 hash, which only Causeway's own login can use) on a
/// connection of the login's pool.
async fn load(ctx: &Context, login: &Login) -> Result<Vec<String>, LoadError> {
    if login.credential.password().is_none()
        && !matches!(*login.credential, crate::backend::Credential::None)
    {
        return load_pooled(ctx, login).await;
    }
    Ok(load_with_driver(ctx, login).await?)
}

/// [`load`] on a pooled server connection (returned to the pool if the query ran).
async fn load_pooled(ctx: &Context, login: &Login) -> Result<Vec<String>, LoadError> {
    let pool = ctx.pools.get(ctx.primary_now(), login, None);
    let mut conn = pool.checkout().await?;
    let rows = conn
        .query_rows(
            VOLATILE_FUNCTIONS_SQL,
            &[],
            ctx.config.proxy.max_message_bytes,
        )
        .await;
    if !matches!(rows, Err(crate::backend::rows::RowsError::Backend(_))) {
        pool.checkin(conn);
    }
    Ok(rows?
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect())
}

/// [`load`] over a tokio-postgres connection.
async fn load_with_driver(
    ctx: &Context,
    login: &Login,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let primary = ctx.primary_now();
    let mut config = tokio_postgres::Config::new();
    config
        .host(&*primary.host)
        .port(primary.port)
        .user(&login.user)
        .dbname(&login.database)
        .application_name("causeway-functions")
        .connect_timeout(REFRESH_TIMEOUT);
    if let Some(password) = login.credential.password() {
        config.password(password);
    }
    let (client, connection) = ctx
        .pools
        .settings()
        .tls
        .connect_postgres(&mut config)
        .await?;
    let connection = tokio::spawn(connection);
    let rows = client.query(VOLATILE_FUNCTIONS_SQL, &[]).await;
    drop(client);
    let _ = connection.await;
    Ok(rows?
        .iter()
        .filter_map(|row| row.try_get::<_, String>(0).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_merge_fail_closed() {
        let mut known = BTreeMap::new();
        known.insert(
            "mysite".to_owned(),
            vec!["public.touch".to_owned(), "app.log".to_owned()],
        );
        known.insert(
            "other".to_owned(),
            vec!["public.touch".to_owned(), "public.bump".to_owned()],
        );
        assert_eq!(
            merge(&known),
            ["app.log", "public.bump", "public.touch"].map(String::from)
        );
        assert!(merge(&BTreeMap::new()).is_empty());
    }
}
