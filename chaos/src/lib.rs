//! `courier-chaos`: seeded fault schedules against a private Courier
//! deployment, judged by a checker over what the simulated clients recorded.
//!
//! - `history`: what the clients record (the checker's only input).
//! - `checker`: the verdict, a pure function of the history.
//! - `schedule`: the faults of a seed, a pure function of it.
//! - `client`: the simulated users.
//! - `view`: a device's view of the messages it has seen (content, deleted,
//!   reactions), kept by the clients and rebuilt by the checker.
//! - `deployment`: the private services and server processes a run may break.

pub mod checker;
pub mod client;
pub mod deployment;
pub mod history;
pub mod schedule;
pub mod view;
