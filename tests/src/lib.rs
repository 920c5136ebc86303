//! The shared harness of Courier's end-to-end tests: a private database and
//! broker prefix per test, api and worker started in-process on port 0, and
//! clients that wait for events with a deadline instead of sleeping.

mod env;
mod rest;
mod ws;

pub use env::{JWT_SECRET, TestEnv, deadline, eventually};
pub use rest::Rest;
pub use ws::{WsClient, WsError};
