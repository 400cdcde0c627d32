//! Integration tests: the real server on port 0, a temp data dir, in-process mock upstreams.

#![expect(clippy::unwrap_used, reason = "test helpers fail the test on any error")]

mod helpers;
mod mock;
mod mock_native;

mod auth;
mod browser;
mod byok;
mod cache;
pub mod cli;
mod cluster;
mod disk;
mod egress;
mod errors;
mod export;
mod keepalive;
mod layering;
mod limits;
mod logs;
pub mod management;
mod metrics;
mod packaging;
mod passthrough;
mod policy;
mod postgres;
mod realtime;
mod routing;
mod sdk;
mod security;
mod spend;
mod streaming;
pub mod tls;
mod traces;
mod ui;
mod unified;
mod universal;
