//! Unit tests of reply matching: synthetic replies, injected messages, errors that skip the
//! rest of an extended batch, COPY, and desync detection.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{Outcome, Pending, Relay};
use crate::backend::ServerState;
use crate::protocol::encode::{self, PgError};
use crate::protocol::{frame, Message, SqlState, TxStatus};
use crate::session::probe::ProbeKind;
use crate::session::state::{ClientState, Effect, StatementDef};

fn msg(tag: u8, body: &[u8]) -> Message {
    Message {
        tag,
        raw: frame::build(tag, body),
    }
}

fn ready(status: u8) -> Message {
    msg(b'Z', &[status])
}

fn error(code: &str) -> Message {
    let body = format!("SERROR\0VERROR\0C{code}\0Mboom\0\0");
    msg(b'E', body.as_bytes())
}

/// The FATAL a backend sends when the server shuts down (or the backend is terminated).
fn shutdown_fatal() -> Message {
    msg(b'E', b"SFATAL\0VFATAL\0C57P01\0Mshutting down\0\0")
}

struct Fixture {
    relay: Relay,
    state: ClientState,
    server: ServerState,
    out: BytesMut,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            relay: Relay::default(),
            state: ClientState::new(vec![]),
            server: ServerState::new(8, crate::backend::empty_fingerprint()),
            out: BytesMut::new(),
        }
    }

    fn feed(&mut self, messages: &[Message]) -> Vec<Outcome> {
        messages
            .iter()
            .map(|m| {
                self.relay
                    .on_message(m.as_ref(), &mut self.state, &mut self.server, &mut self.out)
                    .unwrap()
            })
            .collect()
    }

    /// Message types the client received, in order.
    fn client_saw(&mut self) -> String {
        let mut buf = std::mem::take(&mut self.out);
        let mut tags = String::new();
        while let Some(m) = crate::protocol::try_split(&mut buf, 1 << 20).unwrap() {
            tags.push(m.tag as char);
        }
        tags
    }
}

fn synthetic_parse_complete() -> Pending {
    let mut b = BytesMut::new();
    encode::parse_complete(&mut b);
    Pending::Synthetic(b.freeze())
}

#[test]
fn synthetic_replies_keep_their_place_in_order() {
    let mut f = Fixture::new();
    f.relay.push(Pending::Parse {
        server_name: None,
        client_name: None,
        forward: true,
    });
    f.relay.push(synthetic_parse_complete());
    f.relay.push(Pending::Sync);
    f.relay.emit_ready_synthetic(&mut f.out);
    assert_eq!(f.client_saw(), "", "nothing before the first reply");
    let outcomes = f.feed(&[msg(b'1', b""), ready(b'I')]);
    assert_eq!(f.client_saw(), "11Z");
    assert_eq!(
        outcomes,
        vec![Outcome::Continue, Outcome::Ready(TxStatus::Idle)]
    );
    assert!(f.relay.is_idle());
}

#[test]
fn injected_parse_replies_are_hidden() {
    let mut f = Fixture::new();
    f.relay.push(Pending::Parse {
        server_name: Some(Bytes::from_static(b"_cw_a")),
        client_name: None,
        forward: false,
    });
    f.relay.push(Pending::Bind { renamed: false });
    f.relay.push(Pending::Execute {
        effect: Effect::None,
    });
    f.relay.push(Pending::Sync);
    f.feed(&[
        msg(b'1', b""),
        msg(b'2', b""),
        msg(b'D', b"\0\0"),
        msg(b'C', b"SELECT 1\0"),
        ready(b'I'),
    ]);
    assert_eq!(f.client_saw(), "2DCZ");
    assert!(f.relay.is_idle());
}

#[test]
fn an_error_skips_to_sync_and_undoes_optimistic_bookkeeping() {
    let mut f = Fixture::new();
    let name = Bytes::from_static(b"_cw_b");
    let evicted = Bytes::from_static(b"_cw_old");
    f.server.prepared.insert(name.clone());
    f.state.statements.insert(
        Bytes::from_static(b"s1"),
        std::sync::Arc::new(StatementDef::new(b"SELEC 1", b"\0\0")),
    );
    f.relay.push(Pending::Bind { renamed: false });
    f.relay.push(Pending::Close {
        forward: false,
        restore: Some(evicted.clone()),
    });
    f.relay.push(Pending::Parse {
        server_name: Some(name.clone()),
        client_name: Some(Bytes::from_static(b"s1")),
        forward: true,
    });
    f.relay.push(synthetic_parse_complete());
    f.relay.push(Pending::Execute {
        effect: Effect::None,
    });
    f.relay.push(Pending::Sync);
    f.feed(&[msg(b'2', b""), error("42601"), ready(b'I')]);
    assert_eq!(f.client_saw(), "2EZ", "the skipped requests get no replies");
    assert!(
        !f.server.prepared.touch(&name),
        "failed Parse is not cached"
    );
    assert!(
        f.server.prepared.touch(&evicted),
        "skipped Close leaves it prepared"
    );
    assert!(
        f.state.statements.is_empty(),
        "failed Parse is not the client's either"
    );
    assert!(f.relay.is_idle());
}

#[test]
fn a_deliberate_failure_shows_causeway_error_instead() {
    let mut f = Fixture::new();
    let ours = PgError::error(
        SqlState::INVALID_SQL_STATEMENT_NAME,
        "prepared statement \"x\" does not exist",
    )
    .to_bytes();
    f.relay.push(Pending::ReplaceError(ours));
    f.relay.push(Pending::Execute {
        effect: Effect::None,
    });
    f.relay.push(Pending::Sync);
    f.feed(&[error("26000"), ready(b'I')]);
    let mut buf = std::mem::take(&mut f.out);
    let first = crate::protocol::try_split(&mut buf, 1 << 20)
        .unwrap()
        .unwrap();
    let fields = crate::protocol::ErrorFields::parse(first.body());
    assert_eq!(fields.message, "prepared statement \"x\" does not exist");
    assert!(f.relay.is_idle());
}

#[test]
fn syncs_read_during_extended_copy_in_are_not_answered() {
    let mut f = Fixture::new();
    f.relay.push(Pending::Bind { renamed: false });
    f.relay.push(Pending::Execute {
        effect: Effect::None,
    });
    f.relay.push(Pending::Sync);
    f.feed(&[msg(b'2', b""), msg(b'G', b"\0\0\0")]);
    assert!(
        !f.relay.sync_is_answered(),
        "Syncs during COPY IN are ignored"
    );
    f.relay.copy_ended();
    assert!(f.relay.sync_is_answered());
    f.relay.push(Pending::Sync);
    f.feed(&[msg(b'C', b"COPY 3\0"), ready(b'I')]);
    assert_eq!(f.client_saw(), "2GCZ");
    assert!(f.relay.is_idle());
}

#[test]
fn completed_sets_move_the_server_fingerprint() {
    let mut f = Fixture::new();
    let before = f.state.fingerprint();
    let effects: VecDeque<Effect> = [
        Effect::None,
        Effect::Set {
            name: "search_path".into(),
            text: "SET search_path TO x".into(),
        },
    ]
    .into();
    f.relay.push(Pending::Query { effects });
    f.feed(&[msg(b'C', b"SELECT 1\0"), msg(b'C', b"SET\0"), ready(b'I')]);
    assert_ne!(f.state.fingerprint(), before);
    assert_eq!(f.server.fingerprint, Some(f.state.fingerprint()));
}

#[test]
fn unexpected_replies_are_desync_and_fatal_errors_end_the_connection() {
    let mut f = Fixture::new();
    assert!(f
        .relay
        .on_message(
            msg(b'1', b"").as_ref(),
            &mut f.state,
            &mut f.server,
            &mut f.out
        )
        .is_err());
    assert!(f
        .relay
        .on_message(
            ready(b'I').as_ref(),
            &mut f.state,
            &mut f.server,
            &mut f.out
        )
        .is_err());
    let fatal = msg(b'E', b"SFATAL\0VFATAL\0C57P01\0Mbye\0\0");
    let outcome = f
        .relay
        .on_message(fatal.as_ref(), &mut f.state, &mut f.server, &mut f.out)
        .unwrap();
    assert_eq!(outcome, Outcome::Fatal);
}

/// A guarded replica read: Bind, Execute, Sync sent, nothing answered yet.
fn guarded_bind_execute_sync() -> Fixture {
    let mut f = Fixture::new();
    f.relay.guard();
    f.relay.push(Pending::Bind { renamed: false });
    f.relay.push(Pending::Execute {
        effect: Effect::None,
    });
    f.relay.push(Pending::Sync);
    f
}

#[test]
fn a_recovery_conflict_before_any_result_is_hidden_for_a_retry() {
    let mut f = guarded_bind_execute_sync();
    f.feed(&[msg(b'2', b""), error("40001"), ready(b'I')]);
    assert!(f.relay.conflicted());
    assert!(f.relay.is_idle());
    assert_eq!(
        f.client_saw(),
        "",
        "nothing of the cancelled attempt reaches the client"
    );
    f.relay.end_conflict();
    assert!(!f.relay.conflicted());
}

#[test]
fn guarded_replies_flow_once_a_result_arrives_and_later_conflicts_are_relayed() {
    let mut f = guarded_bind_execute_sync();
    f.feed(&[msg(b'2', b"")]);
    assert_eq!(f.client_saw(), "", "held back until the first result");
    f.feed(&[msg(b'D', b"\0\0"), error("40001"), ready(b'I')]);
    assert!(!f.relay.conflicted(), "rows were sent: no retry");
    assert_eq!(f.client_saw(), "2DEZ");
}

#[test]
fn a_fatal_before_any_result_is_hidden_for_a_retry_as_lost() {
    let mut f = guarded_bind_execute_sync();
    let outcomes = f.feed(&[msg(b'2', b""), shutdown_fatal()]);
    assert_eq!(outcomes.last(), Some(&Outcome::Fatal));
    assert!(f.relay.conflicted() && f.relay.lost());
    assert_eq!(
        f.client_saw(),
        "",
        "the client sees neither reply nor FATAL"
    );
    f.relay.end_conflict();
    assert!(!f.relay.conflicted() && !f.relay.lost());
}

#[test]
fn a_connection_lost_moves_only_a_read_still_guarded() {
    let mut f = Fixture::new();
    assert!(
        !f.relay.connection_lost(),
        "nothing guarded: the client is told"
    );
    f.relay.guard();
    f.relay.push(Pending::Sync);
    assert!(f.relay.guarding());
    assert!(f.relay.connection_lost());
    assert!(f.relay.conflicted() && f.relay.lost() && !f.relay.guarding());
    let mut f = Fixture::new();
    f.relay.guard();
    f.relay.push(Pending::Execute {
        effect: Effect::None,
    });
    f.relay.push(Pending::Sync);
    f.feed(&[msg(b'D', b"\0\0")]);
    assert!(
        !f.relay.connection_lost(),
        "a row reached the client: no retry"
    );
    assert!(!f.relay.conflicted());
}

#[test]
fn a_recovery_conflict_is_not_counted_as_lost() {
    let mut f = Fixture::new();
    f.relay.guard();
    f.relay.push(Pending::Sync);
    f.feed(&[error("40001")]);
    assert!(f.relay.conflicted() && !f.relay.lost());
}

#[test]
fn a_fatal_between_requests_is_not_relayed() {
    let mut f = Fixture::new();
    assert_eq!(f.feed(&[shutdown_fatal()]), vec![Outcome::Fatal]);
    assert_eq!(
        f.client_saw(),
        "",
        "nothing awaited it: the session decides"
    );
    assert!(f.relay.is_idle());
}

#[test]
fn a_replica_probe_lost_after_a_complete_read_holds_only_the_ready() {
    let mut f = Fixture::new();
    f.relay.push(Pending::Sync);
    f.relay
        .push(Pending::Probe(ProbeKind::Replica { timeline: 1 }));
    f.feed(&[msg(b'D', b"\0\0"), ready(b'I')]);
    assert_eq!(f.client_saw(), "D", "the ReadyForQuery waits for the probe");
    assert!(f.relay.awaits_only_replica_probe());
    assert_eq!(f.feed(&[shutdown_fatal()]), vec![Outcome::Fatal]);
    assert_eq!(f.client_saw(), "", "the probe's FATAL is not the client's");
    f.relay.release_ready(&mut f.out);
    assert_eq!(f.client_saw(), "Z");
    // A primary probe (a write's commit position) is not skipped that way.
    let mut f = Fixture::new();
    f.relay.push(Pending::Sync);
    f.relay.push(Pending::Probe(ProbeKind::Primary));
    f.feed(&[ready(b'I')]);
    assert!(!f.relay.awaits_only_replica_probe());
}

#[test]
fn a_missing_renamed_statement_makes_the_connection_prepare_again() {
    let mut f = Fixture::new();
    let name = Bytes::from_static(b"_cw_gone");
    f.server.prepared.insert(name.clone());
    f.server.prepared.insert(Bytes::from_static(b"_cw_other"));
    f.relay.push(Pending::Bind { renamed: true });
    f.relay.push(Pending::Execute {
        effect: Effect::None,
    });
    f.relay.push(Pending::Sync);
    f.feed(&[error("26000"), ready(b'I')]);
    assert_eq!(f.client_saw(), "EZ");
    assert!(!f.server.prepared.touch(&name), "the record was dropped");
    assert!(f.server.prepared.is_empty());
    assert!(f.server.prepared.unsure());

    // A 26000 for a statement the client named itself (session mode, SQL PREPARE) leaves
    // Causeway's records alone.
    let mut f = Fixture::new();
    f.server.prepared.insert(name.clone());
    f.relay.push(Pending::Bind { renamed: false });
    f.relay.push(Pending::Sync);
    f.feed(&[error("26000"), ready(b'I')]);
    assert!(f.server.prepared.touch(&name));
    assert!(!f.server.prepared.unsure());
}

#[test]
fn a_full_pipeline_stops_reading_the_client_after_one_flush() {
    let mut relay = Relay::default();
    let mut out = BytesMut::new();
    for _ in 0..super::MAX_IN_FLIGHT - 1 {
        relay.push(Pending::Bind { renamed: false });
    }
    assert!(!relay.saturated(&mut out));
    relay.push(Pending::Execute {
        effect: Effect::None,
    });
    assert!(relay.saturated(&mut out));
    assert_eq!(&out[..], &[b'H', 0, 0, 0, 4], "one Flush drains the server");
    assert!(relay.saturated(&mut out));
    assert_eq!(out.len(), 5, "no second Flush while saturated");
    // Past an error the server answers nothing before the Sync: the client must be read.
    relay.skipping = true;
    assert!(!relay.saturated(&mut out));
    relay.skipping = false;
    assert!(relay.saturated(&mut out));
    assert_eq!(out.len(), 10, "a new episode flushes again");
}
