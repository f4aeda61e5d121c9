//! fpush as a library: the daemon's parts, exposed so integration tests and benchmarks can drive
//! them directly. The binary (`src/main.rs`) is a thin command line over these.

pub mod access;
pub mod component;
pub mod config;
pub mod daemon;
pub mod dispatcher;
pub mod doors;
pub mod markup;
pub mod metrics;
pub mod modules;
pub mod outcome;
pub mod panics;
pub mod ratelimit;
pub mod request;
pub mod store;
pub mod systemd;
#[cfg(test)]
mod test_log;
