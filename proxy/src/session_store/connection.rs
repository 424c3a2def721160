//! Connections of the Redis store: one server or a Sentinel-named primary (a
//! `ConnectionManager`, which reconnects by itself), or a Redis Cluster; and the identity
//! (`run_id`) of the server behind a connection.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{IntoConnectionInfo, TlsCertificates, TlsMode};

use crate::config::{SentinelEndpoint, StoreEndpoint};

/// Time limit for connecting (and for asking Sentinels where the primary is).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A live connection; clones share it.
#[derive(Clone)]
pub(super) enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Server(_) => "Conn::Server",
            Conn::Cluster(_) => "Conn::Cluster",
        })
    }
}

/// The private CA of `[session_store] ca_file`, for `rediss://` servers.
pub(super) fn tls_roots(
    ca_file: Option<&std::path::Path>,
) -> Result<Option<TlsCertificates>, String> {
    let Some(path) = ca_file else {
        return Ok(None);
    };
    let root = std::fs::read(path)
        .map_err(|e| format!("session_store.ca_file: cannot read {}: {e}", path.display()))?;
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(root),
    }))
}

/// Connect to `endpoint` (a Sentinel endpoint asks the Sentinels first); `roots` is the
/// private CA for TLS URLs, if one is configured.
pub(super) async fn connect(
    endpoint: &StoreEndpoint,
    roots: Option<&TlsCertificates>,
) -> redis::RedisResult<Conn> {
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    match endpoint {
        StoreEndpoint::Server(url) => {
            let client = match roots {
                Some(roots) if url.starts_with("rediss://") => {
                    redis::Client::build_with_tls(url.as_str(), roots.clone())?
                }
                _ => redis::Client::open(url.as_str())?,
            };
            ConnectionManager::new_with_config(client, manager_config)
                .await
                .map(Conn::Server)
        }
        StoreEndpoint::Sentinel(sentinel) => {
            let client = sentinel_primary(sentinel, roots).await?;
            ConnectionManager::new_with_config(client, manager_config)
                .await
                .map(Conn::Server)
        }
        StoreEndpoint::Cluster(nodes) => {
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .retries(1);
            if let Some(roots) = roots {
                builder = builder.certs(roots.clone());
            }
            builder
                .build()?
                .get_async_connection()
                .await
                .map(Conn::Cluster)
        }
    }
}

/// The `run_id` of the server behind `conn` (`None` for a cluster, or when it does not
/// answer in time or refuses `INFO`, e.g. for lack of ACL rights). A broken connection is
/// an error: the `ConnectionManager` then reconnects by itself, maybe to a server that
/// restarted empty. So is a server that is a replica: after a Sentinel failover the old
/// primary comes back as one (same `run_id`, but its data now copies the new primary's,
/// which may have missed floors), and the connection must be made again.
pub(super) async fn server_id(conn: &mut Conn) -> Result<Option<String>, String> {
    let Conn::Server(manager) = conn else {
        return Ok(None);
    };
    // Two sections in one round trip (Redis 6 takes one section per INFO).
    let mut pipe = redis::pipe();
    pipe.cmd("INFO")
        .arg("server")
        .cmd("INFO")
        .arg("replication");
    let info = pipe.query_async::<Vec<String>>(manager);
    match tokio::time::timeout(CONNECT_TIMEOUT, info).await {
        Ok(Ok(sections)) if sections.iter().any(|text| is_replica(text)) => {
            Err("the session store's server is a replica (role:slave): connecting again".into())
        }
        Ok(Ok(sections)) => Ok(sections.iter().find_map(|text| run_id(text))),
        // A slow answer loses nothing (the client's own response timeout is an I/O error).
        Ok(Err(e)) if e.is_timeout() => Ok(None),
        Ok(Err(e)) if e.is_unrecoverable_error() || e.is_io_error() => Err(e.to_string()),
        Ok(Err(_)) | Err(_) => Ok(None),
    }
}

/// Ask the Sentinels where the primary of `endpoint.service` is.
async fn sentinel_primary(
    endpoint: &SentinelEndpoint,
    roots: Option<&TlsCertificates>,
) -> redis::RedisResult<redis::Client> {
    let addrs = endpoint
        .sentinels
        .iter()
        .map(|url| {
            url.as_str()
                .into_connection_info()
                .map(|i| i.addr().clone())
        })
        .collect::<redis::RedisResult<Vec<_>>>()?;
    let mut builder =
        SentinelClientBuilder::new(addrs, &endpoint.service, SentinelServerType::Master)?
            .set_client_to_redis_db(endpoint.db);
    if let Some(user) = &endpoint.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &endpoint.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if endpoint.tls {
        builder = builder
            .set_client_to_sentinel_tls_mode(TlsMode::Secure)
            .set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(roots) = roots {
            builder = builder
                .set_client_to_sentinel_certificates(roots.clone())
                .set_client_to_redis_certificates(roots.clone());
        }
    }
    builder.build()?.async_get_client().await
}

/// Whether the text of `INFO replication` says the server replicates another.
fn is_replica(info: &str) -> bool {
    info.lines().any(|line| line.trim_end() == "role:slave")
}

/// `run_id` from the text of `INFO server`.
fn run_id(info: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Server(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_replica, run_id};

    #[test]
    fn a_replica_says_so_in_its_replication_section() {
        assert!(is_replica(
            "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\n"
        ));
        assert!(!is_replica(
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
        ));
        assert!(!is_replica("# Server\r\nrun_id:4f1c2a\r\n"));
    }

    #[test]
    fn run_id_comes_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:4f1c2a\r\ntcp_port:6379\r\n";
        assert_eq!(run_id(info).as_deref(), Some("4f1c2a"));
        assert_eq!(run_id("# Server\r\nrun_id:\r\n"), None);
        assert_eq!(run_id(""), None);
    }
}
