//! Torii: a self-hosted AI gateway appliance compatible with Cloudflare AI Gateway.

// The library has no `unsafe` at all; the package's lint is `deny` only so that the binary can
// make its one allocator call (`main.rs`).
#![forbid(unsafe_code)]

/// Per-minute rollups of requests, tokens and cost.
pub mod analytics;
/// Application wiring: state, listener, server lifecycle.
pub mod app;
/// API tokens: generation, hashing, checks.
pub mod auth;
/// The response cache.
pub mod cache;
/// Command-line definitions and the non-serve commands.
pub mod cli;
/// Cluster mode: the state nodes share through Redis (rate-limit windows).
pub mod cluster;
/// Layered, validated configuration.
pub mod config;
/// The control service: every admin operation (one write transaction, validated once, the
/// snapshot reloaded, change hooks fired) and the in-memory snapshot the data plane reads.
pub mod control;
/// The local control socket (`torii backup` against a running server).
pub mod control_socket;
/// The egress proxy: `CONNECT` tunnels and `NO_PROXY` rules.
pub mod egress;
/// The domain error and its status/code mapping.
pub mod error;
/// The data-plane request pipeline.
pub mod gateway;
/// actix-web handlers.
pub mod http;
/// Rate limits (fixed and sliding windows).
pub mod limits;
/// Request logs: record, writer, indexes, queries.
pub mod logs;
/// Memory the allocator keeps after a burst, given back once the process is idle.
pub mod memory;
/// Process counters for `/metrics`.
pub mod metrics;
/// DLP and guardrails: what happens to a request and its answer.
pub mod policy;
/// The provider registry and URL mapping.
pub mod providers;
/// Secrets at rest (sealed provider keys).
pub mod secrets;
/// The redb store.
pub mod store;
/// Bytes as text.
pub mod text;
/// Time helpers (RFC 3339, Unix seconds).
pub mod time;
/// The TLS listener's certificate (reloaded without a restart).
pub mod tls;
