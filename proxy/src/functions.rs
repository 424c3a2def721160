//! Named background task: keep the classifier's list of volatile user functions current by
//! reading `pg_proc` on the primary (DESIGN.md §2: a call to a volatile user function may
//! write, so it goes to the primary unless `[functions] read_only` lists it).

use std::time::Duration;

use tokio_postgres::NoTls;

use crate::classify::{FunctionPolicy, VOLATILE_FUNCTIONS_SQL};
use crate::context::Context;

/// How often the list is refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// Time limit for one refresh (connect and query).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// Refresh the function policy until the drain starts.
pub async fn refresh_volatile_functions(ctx: Context) {
    let mut interval = tokio::time::interval(REFRESH_EVERY);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = ctx.shutdown.drain.cancelled() => return,
        }
        match tokio::time::timeout(REFRESH_TIMEOUT, load(&ctx)).await {
            Ok(Ok(functions)) => {
                tracing::debug!(count = functions.len(), "refreshed volatile user functions");
                let config = &ctx.config.functions;
                let policy =
                    FunctionPolicy::new(&config.read_only, &config.writes).with_volatile(functions);
                ctx.classifier.set_functions(policy);
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, "could not read volatile functions from the primary")
            }
            Err(_) => tracing::warn!("timed out reading volatile functions from the primary"),
        }
    }
}

async fn load(ctx: &Context) -> Result<Vec<String>, tokio_postgres::Error> {
    let (user, password) = ctx.config.control_login();
    let mut config = tokio_postgres::Config::new();
    config
        .host(&*ctx.primary.host)
        .port(ctx.primary.port)
        .user(user)
        .dbname(user)
        .application_name("causeway-functions")
        .connect_timeout(REFRESH_TIMEOUT);
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(NoTls).await?;
    let connection = tokio::spawn(connection);
    let rows = client.query(VOLATILE_FUNCTIONS_SQL, &[]).await;
    drop(client);
    let _ = connection.await;
    Ok(rows?
        .iter()
        .filter_map(|row| row.try_get::<_, String>(0).ok())
        .collect())
}
