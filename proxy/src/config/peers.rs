//! `[proxy] peer_id` and `[[peers]]`: other Causeway instances behind the same load
//! balancer, to which a CancelRequest for one of their clients is forwarded (the instance
//! is encoded in the cancel key Causeway hands out).

use std::collections::HashSet;

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::cancel::MAX_PEER_ID;

/// One `[[peers]]` entry: another instance's id and its client address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's `[proxy] peer_id` (1 to 255). An entry with this instance's own id is
    /// skipped, so every instance can share one list.
    pub id: u16,
    /// Host of the peer's client listener (`[proxy] listen`).
    pub host: String,
    /// Port of the peer's client listener.
    pub port: u16,
}

/// Checks `proxy.peer_id` and `[[peers]]`.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    let own = config.proxy.peer_id;
    check_id("proxy.peer_id", own, 0)?;
    if own == 0 && !config.peers.is_empty() {
        return Err(ConfigError::invalid(
            "proxy.peer_id",
            "is 0 (no peering) but [[peers]] are listed; give this instance its own id \
             (1 to 255, distinct from every other instance's) so its cancel keys name it",
        ));
    }
    let mut seen = HashSet::new();
    for (index, peer) in config.peers.iter().enumerate() {
        let path = format!("peers[{index}]");
        check_id(&format!("{path}.id"), peer.id, 1)?;
        if !seen.insert(peer.id) {
            return Err(ConfigError::invalid(
                format!("{path}.id"),
                format!(
                    "{} is listed twice; each instance needs its own id",
                    peer.id
                ),
            ));
        }
        if peer.host.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{path}.host"),
                "is empty; give the peer's host name or IP address",
            ));
        }
        if peer.port == 0 {
            return Err(ConfigError::invalid(
                format!("{path}.port"),
                "0 is not a usable port; give the port of the peer's [proxy] listen",
            ));
        }
    }
    Ok(())
}

fn check_id(field: &str, id: u16, minimum: u16) -> Result<(), ConfigError> {
    if (minimum..=u16::from(MAX_PEER_ID)).contains(&id) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        field,
        format!("{id} is out of range; use {minimum} to {MAX_PEER_ID}"),
    ))
}

/// The peer id as the cancel registry takes it (validated to fit).
pub(crate) fn peer_byte(id: u16) -> u8 {
    u8::try_from(id).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MINIMAL: &str = include_str!("../../../config/minimal.toml");

    const PEERS: &str = "[[peers]]\nid = 1\nhost = \"10.0.0.1\"\nport = 6432\n\n\
                         [[peers]]\nid = 2\nhost = \"10.0.0.2\"\nport = 6432\n";

    /// The minimal config with `peer_id` under `[proxy]` and `peers` appended.
    fn config_with(peer_id: u16, peers: &str) -> Result<Config, ConfigError> {
        let text = MINIMAL.replacen("[proxy]\n", &format!("[proxy]\npeer_id = {peer_id}\n"), 1);
        Config::from_toml(&format!("{text}\n{peers}"))
    }

    fn peer(id: u16, host: &str, port: u16) -> String {
        format!("[[peers]]\nid = {id}\nhost = \"{host}\"\nport = {port}\n")
    }

    #[test]
    fn peering_parses_and_defaults_off() {
        let config = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(config.proxy.peer_id, 0);
        assert!(config.peers.is_empty());
        let config = config_with(2, PEERS).unwrap();
        assert_eq!(config.proxy.peer_id, 2);
        assert_eq!(
            config.peers[1],
            PeerConfig {
                id: 2,
                host: "10.0.0.2".into(),
                port: 6432
            }
        );
        assert!(config_with(MAX_PEER_ID.into(), "").is_ok());
    }

    #[test]
    fn bad_peering_is_refused_with_the_field() {
        let cases = [
            (256, String::new(), "proxy.peer_id"),
            (0, PEERS.to_owned(), "proxy.peer_id"),
            (1, peer(0, "h", 1), "peers[0].id"),
            (1, peer(300, "h", 1), "peers[0].id"),
            (1, peer(2, "h", 1) + &peer(2, "i", 1), "peers[1].id"),
            (1, peer(2, " ", 1), "peers[0].host"),
            (1, peer(2, "h", 0), "peers[0].port"),
        ];
        for (own, peers, field) in cases {
            let err = config_with(own, &peers).unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
        }
    }

    #[test]
    fn unknown_peer_keys_are_refused() {
        let text = format!("{}weight = 3\n", peer(2, "h", 1));
        assert!(matches!(config_with(1, &text), Err(ConfigError::Parse(_))));
    }
}
