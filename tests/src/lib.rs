//! The shared harness of Courier's end-to-end tests: a private database and
//! broker prefix per test, api and worker started in-process on port 0 (or as
//! real processes to kill), private PostgreSQL and RabbitMQ instances for
//! faults, and clients that wait for events with a deadline instead of sleeping.

mod env;
pub mod ops;
mod private;
mod process;
mod rest;
pub mod watermarks;
mod ws;

pub use env::{JWT_SECRET, Services, TestEnv, deadline, eventually, test_retry};
pub use private::{PrivatePostgres, PrivateRabbit, PrivateRabbitCluster};
pub use process::{ServerProcess, free_port, rss_kib};
pub use rest::Rest;
pub use ws::{FrameSchemas, WsClient, WsError};
