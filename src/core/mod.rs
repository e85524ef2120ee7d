//! The balancer core: pure Rust, no Python types, testable on its own.
//!
//! One module per concern, as in tower: configuration, node state and
//! health, the selection policy, the admission queue, the outcome table, the
//! retry policy, the transport, active probes, and the cluster that ties them
//! together for one request.

pub mod adaptive;
pub mod admission;
pub mod budget;
pub mod charts;
pub mod cluster;
pub mod config;
pub mod control;
pub mod discovery;
pub mod drain;
pub mod error;
pub mod fleet;
pub mod fleet_slots;
pub mod fleet_status;
pub mod fleet_sync;
pub mod health;
pub mod history;
pub mod http;
pub mod node;
pub mod outcome;
pub mod pool;
pub mod prober;
pub mod render_budget;
pub mod report;
pub mod retry;
pub mod sampler;
pub mod selection;
pub mod stats_server;
pub mod transport;
