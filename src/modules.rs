//! modules (being written)
