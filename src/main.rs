//! Command line, logging set-up, start and shutdown.
fn main() {}
