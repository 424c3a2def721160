//! Label values for Causeway's metrics: small enums, so every label has a bounded, documented
//! set of values (never SQL text, session keys or client addresses).
//!
//! To add a value, add a variant with its lowercase snake_case spelling; dashboards and alerts
//! match on the spelling, so never rename one that has shipped.

/// Declares a fieldless enum whose variants are spelled as the given label values.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

label_enum! {
    /// Why a query went to the node it went to: `reason` of `causeway_queries_total`.
    pub enum RouteReason {
        /// The statement writes (DML, DDL, a function listed under `[functions] writes`).
        Write = "write",
        /// A read with no freshness requirement (eventual consistency, or the session has not
        /// written yet), sent to a replica.
        ReadOnly = "read_only",
        /// `BEGIN` of a read-write transaction block: the block runs on the primary (its
        /// later statements stay on that connection and are not routed again).
        Transaction = "transaction",
        /// A `causeway:` hint comment chose the node.
        Hint = "hint",
        /// A `[[rules]]` entry chose the node.
        Rule = "rule",
        /// The session asked for strong consistency, so reads go to the primary.
        ConsistencyStrong = "consistency_strong",
        /// A read that must see the session's writes, sent to a replica that has replayed them.
        FreshReplica = "fresh_replica",
        /// A read sent to the primary because no replica is configured or in the pool.
        NoReplica = "no_replica",
        /// A read sent to the primary because no replica was fresh enough in time;
        /// `causeway_consistency_fallbacks_total` says why.
        ConsistencyFallback = "consistency_fallback",
        /// The client is pinned to one server connection (session pool mode, or session
        /// state such as temporary tables or advisory locks).
        Pinned = "pinned",
        /// The statement could not be classified, so it went to the primary to be safe.
        Unparseable = "unparseable",
        /// The statement reads a node's own state (`pg_stat_activity`, `pg_locks`,
        /// `pg_backend_pid()`, ...), which the primary answers for the client's session.
        NodeLocal = "node_local",
    }
}

label_enum! {
    /// Why a read that could have gone to a replica went to the primary instead:
    /// `reason` of `causeway_consistency_fallbacks_total`.
    pub enum FallbackReason {
        /// The session's floor is ahead of every replica, and waiting is disabled or could
        /// not succeed within `max_wait` (`causeway_consistency_waits_total{outcome="skipped"}`).
        FloorAhead = "floor_ahead",
        /// No replica is in the pool (all evicted, lagging or unreachable).
        NoEligibleReplica = "no_eligible_replica",
        /// Waited `consistency.max_wait` and no replica caught up.
        WaitTimeout = "wait_timeout",
        /// The session store failed (or holds a floor this connection could not store), so
        /// the session's floor is unknown.
        StoreError = "store_error",
        /// The session's position after its last request could not be read (a named
        /// session's COPY FROM STDIN, a probe lost with its connection), or no sample of the
        /// primary came within `max_wait` after the connection's last request there: reads
        /// go to the primary until the next request there re-establishes it.
        PositionUnknown = "position_unknown",
        /// The replica monitor's view cannot bound what an earlier read saw (it reconnected
        /// to that replica, which may have restarted behind it).
        MonitorStale = "monitor_stale",
        /// The session's floor is on another timeline than every replica in the pool
        /// (a failover): only the primary satisfies it until the next write replaces it.
        TimelineChange = "timeline_change",
        /// A replica read was cancelled by a recovery conflict before any result reached the
        /// client, and ran again on another node.
        RecoveryConflict = "recovery_conflict",
        /// A replica read's connection was lost or ended by the server (shutdown, crash,
        /// terminated backend) before any result reached the client, and it ran again on
        /// another node.
        ReplicaLost = "replica_lost",
        /// A replica refused a read a standby cannot run (an unlogged table, a write the
        /// classifier did not see: 0A000 during recovery, 25006) before any result reached
        /// the client, and it ran again on the primary.
        StandbyRefused = "standby_refused",
    }
}

label_enum! {
    /// What waiting for a replica to reach a read's floor did: `outcome` of
    /// `causeway_consistency_waits_total`.
    pub enum WaitOutcome {
        /// A replica caught up within `consistency.max_wait`: the read ran there.
        CaughtUp = "caught_up",
        /// `consistency.max_wait` passed (or no fresh position could be had): the primary.
        TimedOut = "timed_out",
        /// No replica could reach the floor within `consistency.max_wait` by its measured
        /// lag: the read went to the primary without waiting.
        Skipped = "skipped",
    }
}

label_enum! {
    /// A session-store operation: `op` of `causeway_session_store_*`.
    pub enum StoreOp {
        /// Read a session's last write LSN.
        Get = "get",
        /// Raise a session's last write LSN (max-merge).
        Advance = "advance",
    }
}

label_enum! {
    /// Whether the classification cache answered: `result` of
    /// `causeway_classify_cache_total`.
    pub enum CacheResult {
        /// Answered from the cache (the statement, or one differing only in literals, was
        /// classified before), without parsing.
        Hit = "hit",
        /// Parsed with PostgreSQL's parser.
        Miss = "miss",
    }
}

label_enum! {
    /// What a server connection is doing: `state` of `causeway_server_connections`.
    pub enum ConnState {
        /// Pooled, waiting to be checked out.
        Idle = "idle",
        /// Checked out by a client.
        Active = "active",
    }
}

label_enum! {
    /// How a configuration reload ended: `result` of `causeway_config_reloads_total`.
    pub enum ReloadResult {
        /// The file was valid; what can change in place did.
        Success = "success",
        /// The file could not be read or is invalid; nothing changed.
        Failure = "failure",
    }
}

label_enum! {
    /// Who broke the protocol, and how: `kind` of `causeway_protocol_errors_total`.
    pub enum ProtocolKind {
        /// A client's frame was malformed or over `max_message_bytes` (08P01, connection
        /// closed).
        ClientFrame = "client_frame",
        /// A client's opening packets were malformed (bad startup packet, unknown protocol
        /// version, a second StartupMessage).
        ClientStartup = "client_startup",
        /// A client sent a message that is not allowed where it came.
        ClientMessage = "client_message",
        /// A server sent a message that matches no request (the connection is dropped).
        ServerDesync = "server_desync",
    }
}

/// Whether `value` is a lowercase snake_case label value (the rule for free-form reasons).
pub(crate) fn is_snake_case(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
