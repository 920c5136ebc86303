//! What `courier-api` and `courier-worker` must agree on: configuration, the
//! client protocol, broker job formats and topology, database queries and JWT.

pub mod asyncapi;
pub mod auth;
pub mod broker;
pub mod config;
pub mod db;
pub mod error;
pub mod job;
pub mod metrics;
pub mod protocol;
pub mod retry;
pub mod telemetry;
pub mod webhook;

pub use error::{ClientError, ErrorCode};
