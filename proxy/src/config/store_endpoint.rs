//! Where the Redis session store connects: one server (`redis://`, `rediss://` for TLS), a
//! Sentinel-managed primary (`redis+sentinel://`, `rediss+sentinel://` for TLS to the
//! Sentinels and the primary), or a Redis Cluster (`cluster_nodes`, `rediss://` URLs for TLS).
//! Parsing only, no I/O: [`Config::validate`](super::Config::validate) checks the address
//! with it and the session store connects to what it returns.

use redis::IntoConnectionInfo;

use super::SessionStoreConfig;

/// A parsed `[session_store]` address.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreEndpoint {
    /// One Redis server.
    Server(String),
    /// The primary that Sentinels name for `service`.
    Sentinel(SentinelEndpoint),
    /// Seed nodes of a Redis Cluster (as `redis://host:port` URLs).
    Cluster(Vec<String>),
}

/// `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelEndpoint {
    /// Sentinel addresses as `redis://host:port` (`rediss://` with TLS).
    pub sentinels: Vec<String>,
    /// The monitored primary's name (`sentinel monitor <name> ...`).
    pub service: String,
    /// Credentials and database for the primary itself (Sentinels are reached without).
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
    /// TLS to the Sentinels and the primary (`rediss+sentinel://`).
    pub tls: bool,
}

impl std::fmt::Debug for StoreEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use super::secret::redact_url;
        match self {
            StoreEndpoint::Server(url) => f.debug_tuple("Server").field(&redact_url(url)).finish(),
            StoreEndpoint::Sentinel(sentinel) => f.debug_tuple("Sentinel").field(sentinel).finish(),
            StoreEndpoint::Cluster(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|n| redact_url(n)).collect();
                f.debug_tuple("Cluster").field(&nodes).finish()
            }
        }
    }
}

impl std::fmt::Debug for SentinelEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelEndpoint")
            .field("sentinels", &self.sentinels)
            .field("service", &self.service)
            .field("username", &self.username)
            .field("password", &super::secret::redact(&self.password))
            .field("db", &self.db)
            .field("tls", &self.tls)
            .finish()
    }
}

// === impl StoreEndpoint ===

impl StoreEndpoint {
    /// Parse the store address of `config`; the error says what to write instead.
    pub fn parse(config: &SessionStoreConfig) -> Result<StoreEndpoint, String> {
        if !config.cluster_nodes.is_empty() {
            let nodes = config
                .cluster_nodes
                .iter()
                .map(|node| node_url(node))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(StoreEndpoint::Cluster(nodes));
        }
        if let Some(rest) = config.url.strip_prefix("redis+sentinel://") {
            return parse_sentinel(rest, false).map(StoreEndpoint::Sentinel);
        }
        if let Some(rest) = config.url.strip_prefix("rediss+sentinel://") {
            return parse_sentinel(rest, true).map(StoreEndpoint::Sentinel);
        }
        config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("{:?} is not a valid Redis URL ({e})", config.url))?;
        Ok(StoreEndpoint::Server(config.url.clone()))
    }
}

/// `host:port` or a URL, as a URL.
fn node_url(node: &str) -> Result<String, String> {
    let url = if node.contains("://") {
        node.to_owned()
    } else {
        format!("redis://{node}")
    };
    url.as_str()
        .into_connection_info()
        .map_err(|e| format!("{node:?} is not a node address ({e}); write \"host:port\""))?;
    Ok(url)
}

fn parse_sentinel(rest: &str, tls: bool) -> Result<SentinelEndpoint, String> {
    let usage = "write redis+sentinel://[user:password@]host:port[,host:port...]/service[/db] \
                 (rediss+sentinel:// for TLS)";
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("the Sentinel URL names no service; {usage}"))?;
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, authority),
    };
    let (username, password) = match credentials.map(|c| c.split_once(':')) {
        None => (None, None),
        Some(Some((user, password))) => (
            Some(user.to_owned()).filter(|u| !u.is_empty()),
            Some(password.to_owned()),
        ),
        Some(None) => return Err(format!("Sentinel URL credentials need a ':'; {usage}")),
    };
    let sentinels = hosts
        .split(',')
        .map(|host| {
            if host.is_empty() || host.contains('/') {
                return Err(format!("{host:?} is not a Sentinel address; {usage}"));
            }
            match tls {
                true => node_url(&format!("rediss://{host}")),
                false => node_url(host),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (service, db) = match path.split_once('/') {
        Some((service, db)) => (
            service,
            db.parse::<i64>()
                .map_err(|_| format!("{db:?} is not a database number; {usage}"))?,
        ),
        None => (path, 0),
    };
    if service.is_empty() {
        return Err(format!("the Sentinel URL names no service; {usage}"));
    }
    Ok(SentinelEndpoint {
        sentinels,
        service: service.to_owned(),
        username,
        password,
        db,
        tls,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(config: &SessionStoreConfig) -> Result<StoreEndpoint, String> {
        StoreEndpoint::parse(config)
    }

    fn config(url: &str, nodes: &[&str]) -> SessionStoreConfig {
        SessionStoreConfig {
            url: url.to_owned(),
            cluster_nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            ..SessionStoreConfig::default()
        }
    }

    #[test]
    fn plain_urls_are_one_server() {
        for url in ["redis://127.0.0.1:6379", "redis://:pw@cache:6380/2"] {
            assert_eq!(
                parse(&config(url, &[])),
                Ok(StoreEndpoint::Server(url.to_owned()))
            );
        }
        assert!(parse(&config("redis://host:notaport", &[])).is_err());
    }

    #[test]
    fn tls_urls_are_accepted_for_every_kind() {
        let url = "rediss://app:pw@cache:6380/1";
        assert_eq!(
            parse(&config(url, &[])),
            Ok(StoreEndpoint::Server(url.to_owned()))
        );
        let sentinel = parse(&config("rediss+sentinel://s1:26379,s2:26380/m", &[])).unwrap();
        let StoreEndpoint::Sentinel(sentinel) = sentinel else {
            panic!("not a Sentinel endpoint");
        };
        assert!(sentinel.tls);
        assert_eq!(
            sentinel.sentinels,
            ["rediss://s1:26379", "rediss://s2:26380"]
        );
        let cluster = parse(&config("", &["rediss://a:7000", "rediss://b:7001"])).unwrap();
        assert_eq!(
            cluster,
            StoreEndpoint::Cluster(vec!["rediss://a:7000".into(), "rediss://b:7001".into()])
        );
    }

    #[test]
    fn cluster_nodes_win_and_become_urls() {
        let target = parse(&config("ignored", &["a:7000", "redis://b:7001"])).unwrap();
        assert_eq!(
            target,
            StoreEndpoint::Cluster(vec!["redis://a:7000".into(), "redis://b:7001".into()])
        );
        assert!(parse(&config("", &["a:x"])).is_err());
    }

    #[test]
    fn sentinel_urls() {
        let target = parse(&config(
            "redis+sentinel://app:s3cret@s1:26379,s2:26380/mymaster/3",
            &[],
        ))
        .unwrap();
        assert_eq!(
            target,
            StoreEndpoint::Sentinel(SentinelEndpoint {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26380".into()],
                service: "mymaster".into(),
                username: Some("app".into()),
                password: Some("s3cret".into()),
                db: 3,
                tls: false,
            })
        );
        let plain = parse(&config("redis+sentinel://s1:26379/m", &[])).unwrap();
        assert!(matches!(plain, StoreEndpoint::Sentinel(s) if s.db == 0 && s.password.is_none()));
        for bad in [
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1:26379/",
            "redis+sentinel://s1:26379,/m",
            "redis+sentinel://s1:26379/m/x",
            "redis+sentinel://user@s1:26379/m",
        ] {
            let err = parse(&config(bad, &[])).unwrap_err();
            assert!(err.contains("redis+sentinel://"), "{bad}: {err}");
        }
    }
}
