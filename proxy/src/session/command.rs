//! `SET`, `RESET` and `SHOW` of `causeway.*` parameters, answered by Causeway itself and
//! never forwarded (DESIGN.md §4).

use bytes::BytesMut;

use crate::config::{parse_duration, ConsistencyConfig, ConsistencyLevel, RouteTarget};
use crate::hints::{CausewayCommand, CausewaySetting, CommandError};
use crate::protocol::encode;
use crate::protocol::{extended, tag, Message, TxStatus};
use crate::router::policy::Settings;
use crate::router::{Floor, Node};

use super::error::command_error;
use super::relay::Pending;
use super::{ClientStream, Session, SessionError};

impl<C: ClientStream> Session<C> {
    /// If `msg` is a simple Query with a `causeway.*` command, answer it and return true.
    pub(super) async fn answer_causeway_command(
        &mut self,
        msg: &Message,
    ) -> Result<bool, SessionError> {
        if msg.tag != tag::QUERY {
            return Ok(false);
        }
        let Some(text) = extended::query_text(msg.body()) else {
            return Ok(false);
        };
        // Most queries are passed over here, without the UTF-8 check that forwarding does.
        if !crate::hints::mentions_parameter(text) {
            return Ok(false);
        }
        let Some(command) = crate::hints::parse_command(&crate::protocol::text(text)) else {
            return Ok(false);
        };
        let mut reply = BytesMut::new();
        match command {
            Ok(command) => self.run_command(command, &mut reply).await,
            Err(error) => command_error(&error).encode(&mut reply),
        }
        encode::ready_for_query(&mut reply, self.front.tx);
        match self.link.server.as_mut() {
            // Keep the reply in order behind replies still owed by the server connection.
            Some(held) => {
                held.relay.push(Pending::Synthetic(reply.freeze()));
                held.relay.emit_ready_synthetic(&mut self.to_client);
            }
            None => self.to_client.extend_from_slice(&reply),
        }
        Ok(true)
    }

    pub(super) async fn run_command(&mut self, command: CausewayCommand, reply: &mut BytesMut) {
        match command {
            CausewayCommand::Set { name, value } => {
                if let Err(e) = self.may_change(name) {
                    return command_error(&e).encode(reply);
                }
                apply(&mut self.routing.settings, name, Some(&value));
                self.adopt_key_in_transaction(name);
                encode::command_complete(reply, "SET");
            }
            CausewayCommand::Reset { name } => {
                if let Err(e) = self.may_change(name) {
                    return command_error(&e).encode(reply);
                }
                apply(&mut self.routing.settings, name, None);
                self.adopt_key_in_transaction(name);
                encode::command_complete(reply, "RESET");
            }
            CausewayCommand::Show { name } => {
                let value = match name {
                    CausewaySetting::SessionLsn => {
                        // The token must cover the connection's last write: settle a floor
                        // that awaits a sample of the primary, within one probe's time.
                        self.resolve_unprobed();
                        let deadline =
                            std::time::Instant::now() + self.ctx.config.lag.probe_timeout;
                        self.refresh_unprobed(deadline).await;
                        match self.session_floor(self.shared_key(None).as_deref()).await.0 {
                            Floor::None => Some("0/0".to_owned()),
                            Floor::At(position) => Some(position.lsn.to_string()),
                            Floor::Unknown => None,
                        }
                    }
                    other => Some(show(
                        &self.routing.settings,
                        &self.ctx.config.consistency,
                        other,
                    )),
                };
                encode::text_rows(reply, name.name(), &[value.as_deref()]);
                encode::command_complete(reply, "SHOW");
            }
        }
    }
}

impl<C: ClientStream> Session<C> {
    /// The session key may not change inside a transaction on a replica: that replica was
    /// chosen for the floor the transaction began with, and may miss the new key's writes.
    fn may_change(&self, name: CausewaySetting) -> Result<(), CommandError> {
        let on_replica = self
            .link
            .server
            .as_ref()
            .is_some_and(|held| matches!(held.node, Node::Replica(_)));
        if name == CausewaySetting::Session && self.front.tx != TxStatus::Idle && on_replica {
            return Err(CommandError::InReplicaTransaction { name: name.name() });
        }
        Ok(())
    }

    /// A key named inside a transaction (psycopg2 and other drivers send `BEGIN` before the
    /// first statement, so a `SET causeway.session` there lands inside it) is the
    /// transaction's: its commit raises that session's floor, not the connection's.
    fn adopt_key_in_transaction(&mut self, name: CausewaySetting) {
        if name == CausewaySetting::Session && self.front.tx != TxStatus::Idle {
            self.routing.request.key = self.shared_key(None);
        }
    }
}

/// `SET causeway.<name> = value` (or `RESET` with `None`).
fn apply(settings: &mut Settings, name: CausewaySetting, value: Option<&str>) {
    match name {
        CausewaySetting::Consistency => {
            settings.level = value.and_then(|v| v.parse::<ConsistencyLevel>().ok());
        }
        CausewaySetting::Session => settings.session_key = value.map(str::to_owned),
        CausewaySetting::Route => {
            settings.route = value.and_then(|v| v.parse::<RouteTarget>().ok())
        }
        CausewaySetting::MaxLag => settings.max_lag = value.and_then(|v| parse_duration(v).ok()),
        CausewaySetting::SessionLsn => {}
    }
}

/// `SHOW causeway.<name>` of a setting (not the session's position).
fn show(settings: &Settings, defaults: &ConsistencyConfig, name: CausewaySetting) -> String {
    match name {
        CausewaySetting::Consistency => settings
            .level
            .unwrap_or(defaults.default)
            .as_str()
            .to_owned(),
        CausewaySetting::Session => settings.session_key.clone().unwrap_or_default(),
        CausewaySetting::Route => settings.route.map_or("", |r| r.as_str()).to_owned(),
        CausewaySetting::MaxLag => format!(
            "{}ms",
            settings.max_lag.unwrap_or(defaults.max_lag).as_millis()
        ),
        CausewaySetting::SessionLsn => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_show_and_reset_round_trip() {
        let defaults = ConsistencyConfig::default();
        let mut settings = Settings::default();
        assert_eq!(
            show(&settings, &defaults, CausewaySetting::Consistency),
            "session"
        );
        apply(
            &mut settings,
            CausewaySetting::Consistency,
            Some("eventual"),
        );
        apply(&mut settings, CausewaySetting::MaxLag, Some("250ms"));
        apply(&mut settings, CausewaySetting::Session, Some("user-42"));
        assert_eq!(
            show(&settings, &defaults, CausewaySetting::Consistency),
            "eventual"
        );
        assert_eq!(show(&settings, &defaults, CausewaySetting::MaxLag), "250ms");
        assert_eq!(
            show(&settings, &defaults, CausewaySetting::Session),
            "user-42"
        );
        apply(&mut settings, CausewaySetting::Consistency, None);
        assert_eq!(
            show(&settings, &defaults, CausewaySetting::Consistency),
            "session"
        );
    }
}
