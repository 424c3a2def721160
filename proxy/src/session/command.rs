//! `SET`, `RESET` and `SHOW` of `causeway.*` parameters, answered by Causeway itself and
//! never forwarded (DESIGN.md §4).

use bytes::BytesMut;

use crate::config::{parse_duration, ConsistencyLevel, RouteTarget};
use crate::hints::{CausewayCommand, CausewaySetting, CommandError};
use crate::protocol::encode::{self, PgError};
use crate::protocol::{extended, tag, Message};
use crate::router::Floor;

use super::relay::Pending;
use super::{Session, SessionError};

impl Session {
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
        encode::ready_for_query(&mut reply, self.tx_status);
        match self.server.as_mut() {
            // Keep the reply in order behind replies still owed by the server connection.
            Some(held) => {
                held.relay.push(Pending::Synthetic(reply.freeze()));
                held.relay.emit_ready_synthetic(&mut self.to_client);
            }
            None => self.to_client.extend_from_slice(&reply),
        }
        Ok(true)
    }

    async fn run_command(&mut self, command: CausewayCommand, reply: &mut BytesMut) {
        match command {
            CausewayCommand::Set { name, value } => {
                self.set_causeway(name, Some(&value));
                encode::command_complete(reply, "SET");
            }
            CausewayCommand::Reset { name } => {
                self.set_causeway(name, None);
                encode::command_complete(reply, "RESET");
            }
            CausewayCommand::Show { name } => {
                let value = self.show_causeway(name).await;
                encode::text_rows(reply, name.name(), &[value.as_deref()]);
                encode::command_complete(reply, "SHOW");
            }
        }
    }

    fn set_causeway(&mut self, name: CausewaySetting, value: Option<&str>) {
        let routing = &mut self.routing;
        match name {
            CausewaySetting::Consistency => {
                routing.level = value.and_then(|v| v.parse::<ConsistencyLevel>().ok());
            }
            CausewaySetting::Session => routing.session_key = value.map(str::to_owned),
            CausewaySetting::Route => {
                routing.route = value.and_then(|v| v.parse::<RouteTarget>().ok())
            }
            CausewaySetting::MaxLag => routing.max_lag = value.and_then(|v| parse_duration(v).ok()),
            CausewaySetting::SessionLsn => {}
        }
    }

    async fn show_causeway(&mut self, name: CausewaySetting) -> Option<String> {
        match name {
            CausewaySetting::Consistency => Some(
                self.routing
                    .level
                    .unwrap_or(self.ctx.config.consistency.default)
                    .as_str()
                    .to_owned(),
            ),
            CausewaySetting::Session => Some(self.routing.session_key.clone().unwrap_or_default()),
            CausewaySetting::Route => {
                Some(self.routing.route.map_or("", |r| r.as_str()).to_owned())
            }
            CausewaySetting::MaxLag => Some(format!(
                "{}ms",
                self.routing
                    .max_lag
                    .unwrap_or(self.ctx.config.consistency.max_lag)
                    .as_millis()
            )),
            CausewaySetting::SessionLsn => match self.session_floor().await {
                Floor::None => Some("0/0".to_owned()),
                Floor::At(position) => Some(position.lsn.to_string()),
                Floor::Unknown => None,
            },
        }
    }
}

fn command_error(error: &CommandError) -> PgError {
    PgError::error(error.sqlstate(), error.to_string())
}
