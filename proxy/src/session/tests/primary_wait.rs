//! Requests that need the primary while there is none (DESIGN.md §9): they wait up to
//! `failover.query_wait_timeout`, then fail with 08006; a primary back in time serves them.

use std::time::Duration;

use super::fake_server::FakeServer;
use super::{context, plain, query, tags, Client, ErrorFields};
use crate::context::Context;

/// Marks the configured primary as the monitor does after a failed / successful probe.
fn primary_probe(ctx: &Context, up: bool) {
    ctx.topology.update(0, |status| {
        if up {
            status.last_error = None;
            status.sampled_at = Some(tokio::time::Instant::now());
            status.in_recovery = Some(false);
            status.timeline = Some(1);
        } else {
            status.last_error = Some("connection refused".into());
        }
    });
}

#[tokio::test]
async fn a_write_without_a_primary_fails_after_the_wait() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "[failover]\nquery_wait_timeout = \"300ms\"");
    let mut client = Client::connect(&ctx).await;
    primary_probe(&ctx, false);
    assert_eq!(ctx.topology.primary().current().node, None);
    let started = std::time::Instant::now();
    client.send(&query("INSERT INTO t VALUES (1)")).await;
    let mut replies = Vec::new();
    while let Some(msg) = client.recv().await {
        replies.push(msg);
    }
    let waited = started.elapsed();
    assert_eq!(tags(&replies), "E");
    let fields = ErrorFields::parse(replies[0].body());
    assert_eq!(fields.code, "08006");
    assert!(fields.is_fatal());
    assert!(
        fields.message.contains("query_wait_timeout"),
        "{}",
        fields.message
    );
    assert!(waited >= Duration::from_millis(290), "{waited:?}");
    assert!(primary
        .texts()
        .iter()
        .all(|(_, t)| t != "INSERT INTO t VALUES (1)"));
}

#[tokio::test]
async fn a_write_waiting_for_the_primary_runs_when_it_returns() {
    let primary = FakeServer::start(plain()).await;
    let ctx = context(&primary, &[], "[failover]\nquery_wait_timeout = \"10s\"");
    let mut client = Client::connect(&ctx).await;
    primary_probe(&ctx, false);
    let back = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            primary_probe(&ctx, true);
        })
    };
    let replies = client.query("INSERT INTO t VALUES (2)").await;
    back.await.unwrap();
    assert_eq!(
        tags(&replies).chars().last(),
        Some('Z'),
        "answered: {}",
        tags(&replies)
    );
    assert!(primary
        .texts()
        .iter()
        .any(|(_, t)| t == "INSERT INTO t VALUES (2)"));
}
